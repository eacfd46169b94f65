//! The services as last read, when ECS's events decide which are read again
//! (`collect.events`).
//!
//! A pass reads a service when it is new, when an event (or the worker's own action) says it
//! changed, while it is in motion (tasks starting or stopping, a deployment rolling), and when
//! its turn in the rolling reconciliation comes: each pass reads the longest-unread share of the
//! quiet ones (their number × the time since the last pass ÷ `reconcile`), and any not read
//! for `reconcile` whatever the share. So no state the worker acts on is older than
//! `reconcile`, and the reads are spread evenly over it instead of coming all at once.
//! Every other service is served from here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::events::Changed;
use crate::model::{arn_name, Rollout, ServiceKey, ServiceState};

/// Why services were read, or not, in total since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadCounts {
    /// Not read before.
    pub new: u64,
    /// Named by an event or changed by the worker.
    pub changed: u64,
    /// Tasks starting or stopping, or a deployment rolling.
    pub in_motion: u64,
    /// Their turn in the reconciliation.
    pub reconciled: u64,
    /// Served as last read.
    pub kept: u64,
}

#[derive(Debug)]
struct Entry {
    state: ServiceState,
    read_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ServiceKey, Entry>,
    last_pass: Option<DateTime<Utc>>,
    counts: ReadCounts,
    /// Each discovering cluster's services as last listed, and when.
    lists: HashMap<String, (DateTime<Utc>, Vec<String>)>,
    /// Each cluster's reconciliation owed but not yet due a whole read (service-milliseconds).
    owed: HashMap<String, u128>,
}

/// The services as last read.
#[derive(Debug, Default)]
pub struct Book(Mutex<Inner>);

/// One pass's view of time and changes.
#[derive(Debug)]
pub struct Pass {
    pub now: DateTime<Utc>,
    /// Since the previous pass (zero for the first).
    pub since_last: Duration,
    pub changed: Changed,
    pub reconcile: Duration,
}

/// A service whose state is about to change on its own.
fn in_motion(s: &ServiceState) -> bool {
    s.status != "ACTIVE"
        || s.running != s.desired
        || s.pending > 0
        || s.deployments.len() > 1
        || s.rollout != Rollout::Completed
}

impl Book {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a pass at `now`.
    pub fn pass(&self, now: DateTime<Utc>, changed: Changed, reconcile: Duration) -> Pass {
        let mut i = self.lock();
        let since_last = i
            .last_pass
            .and_then(|t| (now - t).to_std().ok())
            .unwrap_or_default();
        i.last_pass = Some(now);
        Pass {
            now,
            since_last,
            changed,
            reconcile,
        }
    }

    /// Which of `cluster`'s `names` the pass reads (the rest are served as last read).
    pub fn due(&self, cluster: &str, names: &[String], pass: &Pass) -> Vec<String> {
        let mut i = self.lock();
        let mut read = Vec::new();
        let mut quiet: Vec<(DateTime<Utc>, &String)> = Vec::new();
        let mut c = ReadCounts::default();
        for name in names {
            let key = ServiceKey::new(cluster, arn_name(name));
            let why = match i.entries.get(&key) {
                _ if pass.changed.all => &mut c.changed,
                None => &mut c.new,
                Some(_) if pass.changed.services.contains(&key) => &mut c.changed,
                Some(e) if in_motion(&e.state) => &mut c.in_motion,
                Some(e) => {
                    quiet.push((e.read_at, name));
                    continue;
                }
            };
            *why += 1;
            read.push(name.clone());
        }
        // The reconciliation's turn in this pass, oldest first: its share of the quiet ones,
        // and at least every one not read for `reconcile`.
        quiet.sort();
        let overdue = quiet
            .iter()
            .take_while(|(at, _)| since(*at, pass.now) >= pass.reconcile)
            .count();
        let owed = i.owed.entry(cluster.to_string()).or_default();
        let turn = share(owed, quiet.len(), pass.since_last, pass.reconcile).max(overdue);
        c.reconciled += turn as u64;
        c.kept += (quiet.len() - turn) as u64;
        read.extend(quiet.into_iter().take(turn).map(|(_, n)| n.clone()));
        add(&mut i.counts, c);
        read
    }

    /// What the pass read of `cluster`: `asked` (names), of which `found` were described. The
    /// asked but not found are forgotten (the next pass asks again).
    pub fn record(&self, cluster: &str, asked: &[String], found: &[ServiceState], now: DateTime<Utc>) {
        let mut i = self.lock();
        for name in asked {
            i.entries.remove(&ServiceKey::new(cluster, arn_name(name)));
        }
        for s in found {
            i.entries.insert(
                s.key(),
                Entry {
                    state: s.clone(),
                    read_at: now,
                },
            );
        }
    }

    /// The states of `cluster`'s `names` as last read (those known).
    pub fn states(&self, cluster: &str, names: &[String]) -> Vec<ServiceState> {
        let i = self.lock();
        names
            .iter()
            .filter_map(|n| i.entries.get(&ServiceKey::new(cluster, arn_name(n))))
            .map(|e| e.state.clone())
            .collect()
    }

    /// Forgets every service not in `keep` (deleted, or no longer managed).
    pub fn retain(&self, keep: &std::collections::HashSet<ServiceKey>) {
        self.lock().entries.retain(|k, _| keep.contains(k));
    }

    /// `cluster`'s services as listed within `max_age` of `now`.
    pub fn listed(&self, cluster: &str, now: DateTime<Utc>, max_age: Duration) -> Option<Vec<String>> {
        let i = self.lock();
        let (at, arns) = i.lists.get(cluster)?;
        (since(*at, now) < max_age).then(|| arns.clone())
    }

    /// `cluster`'s services as listed at `now`.
    pub fn list(&self, cluster: &str, arns: &[String], now: DateTime<Utc>) {
        self.lock()
            .lists
            .insert(cluster.to_string(), (now, arns.to_vec()));
    }

    /// Takes over what `old` holds (a reload does not read every service again).
    pub fn carry_from(&self, old: &Book) {
        let taken = std::mem::take(&mut *old.lock());
        *self.lock() = taken;
    }

    pub fn counts(&self) -> ReadCounts {
        self.lock().counts
    }

    /// The oldest read among the services known, as an age at `now`.
    pub fn oldest(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.lock().entries.values().map(|e| age(e, now)).max()
    }
}

fn age(e: &Entry, now: DateTime<Utc>) -> Duration {
    since(e.read_at, now)
}

fn since(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - at).to_std().unwrap_or_default()
}

/// The reconciliation's share of n services over `since_last` (n × since_last ÷ reconcile),
/// in whole services, the fraction carried in `owed` to the next pass: over `reconcile`, n
/// reads, spread evenly.
fn share(owed: &mut u128, n: usize, since_last: Duration, reconcile: Duration) -> usize {
    let whole = reconcile.as_millis().max(1);
    *owed += n as u128 * since_last.as_millis();
    let turn = usize::try_from(*owed / whole).unwrap_or(n).min(n);
    *owed = (*owed - turn as u128 * whole).min(whole);
    turn
}

fn add(to: &mut ReadCounts, c: ReadCounts) {
    to.new += c.new;
    to.changed += c.changed;
    to.in_motion += c.in_motion;
    to.reconciled += c.reconciled;
    to.kept += c.kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    fn states(n: &[String]) -> Vec<ServiceState> {
        n.iter().map(|n| ServiceState::steady("c", n, 2)).collect()
    }

    /// 60 quiet services, 10-minute reconciliation, a pass every 20 s: after the first pass
    /// reads all, each pass reads 2 (60 × 20 s ÷ 600 s), every service is read again within
    /// 600 s, and a changed or moving one is read in the next pass.
    #[test]
    fn quiet_services_are_read_in_turn_within_the_bound_and_changed_ones_at_once() {
        let b = Book::default();
        let all = names(60);
        let reconcile = Duration::from_secs(600);
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut last_read: HashMap<String, DateTime<Utc>> = HashMap::new();
        for k in 0..90 {
            let now = t0 + TimeDelta::seconds(20 * k);
            let pass = b.pass(now, Changed::default(), reconcile);
            let read = b.due("c", &all, &pass);
            if k == 0 {
                assert_eq!(read.len(), 60);
            } else {
                assert_eq!(read.len(), 2, "pass {k}: {read:?}");
            }
            b.record("c", &read, &states(&read), now);
            for n in &read {
                last_read.insert(n.clone(), now);
            }
            for (n, at) in &last_read {
                assert!(now - *at <= TimeDelta::seconds(600), "{n} not read since {at}");
            }
        }
        let now = t0 + TimeDelta::seconds(20 * 90);
        let mut changed = Changed::default();
        changed.services.insert(ServiceKey::new("c", "s7"));
        let pass = b.pass(now, changed, reconcile);
        let read = b.due("c", &all, &pass);
        assert!(read.contains(&"s7".to_string()));
        assert_eq!(read.len(), 3);
        let mut moving = ServiceState::steady("c", "s9", 3);
        moving.running = 1;
        b.record("c", &read, &states(&read), now);
        b.record("c", &["s9".into()], &[moving], now);
        let pass = b.pass(now + TimeDelta::seconds(20), Changed::default(), reconcile);
        assert!(b.due("c", &all, &pass).contains(&"s9".to_string()));
        let c = b.counts();
        assert_eq!((c.new, c.changed, c.in_motion), (60, 1, 1));
    }

    #[test]
    fn a_service_asked_but_not_described_is_asked_again() {
        let b = Book::default();
        let all = names(3);
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let pass = b.pass(now, Changed::default(), Duration::from_secs(600));
        let read = b.due("c", &all, &pass);
        b.record("c", &read, &states(&all[..2]), now);
        assert_eq!(b.states("c", &all).len(), 2);
        let pass = b.pass(
            now + TimeDelta::seconds(1),
            Changed::default(),
            Duration::from_secs(600),
        );
        assert_eq!(b.due("c", &all, &pass), vec!["s2".to_string()]);
    }
}
