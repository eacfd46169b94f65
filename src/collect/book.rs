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
//!
//! When the read budget cannot cover what is due within the pass (a burst of events, a family
//! throttled), the most pressing are read first: changed, then in motion, then new, then the
//! reconciliation's overdue and its turn; within each, the services nearest a rule's threshold
//! first (their margins, from the worker's last decisions). The rest wait for the next pass,
//! named: a changed one is read first then, and the worker holds every service whose known
//! change (or overdue state) was not read, rather than act on a count it knows is old.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::events::Changed;
use crate::api::{ReadAllowance, DESCRIBE_SERVICES_BATCH};
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
    /// Due, but left for the next pass: the read budget could not cover them.
    pub skipped: u64,
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
    /// How near each service is to a rule's threshold (the worker's last decisions).
    margins: HashMap<ServiceKey, f64>,
    /// Changed services the last pass could not read: changed still.
    carried: std::collections::HashSet<ServiceKey>,
    /// What the last pass left unread that the worker must not act on, and why.
    unread: Vec<ServiceKey>,
    skipped_note: Option<String>,
}

/// Why a service is due in a pass, most pressing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Why {
    Changed,
    InMotion,
    New,
    Overdue,
    Turn,
}

/// A service due in a pass.
struct Due<'a> {
    cluster: usize,
    name: &'a String,
    why: Why,
    /// Nearest a threshold first (unknown last); then the longest unread.
    margin: f64,
    read_at: Option<DateTime<Utc>>,
}

/// One cluster's services as the pass found them, and what its read budget affords.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub cluster: &'a str,
    pub names: &'a [String],
    pub allowance: Option<ReadAllowance>,
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

    /// Which services of each cluster in `found` the pass reads (the rest are served as last
    /// read): what is due, the most pressing first while the clusters' read budgets last.
    pub fn plan(&self, found: &[Found<'_>], pass: &Pass) -> Vec<Vec<String>> {
        let mut i = self.lock();
        let mut due = Vec::new();
        let mut quiet = 0;
        for (k, f) in found.iter().enumerate() {
            quiet += i.due_in(k, f, pass, &mut due);
        }
        due.sort_by(|a, b| {
            (a.why, a.margin, a.read_at, a.name)
                .partial_cmp(&(b.why, b.margin, b.read_at, b.name))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let (chosen, skipped) = choose(found, due);
        let mut c = ReadCounts {
            kept: quiet as u64,
            skipped: skipped.len() as u64,
            ..ReadCounts::default()
        };
        let mut read = vec![Vec::new(); found.len()];
        for d in chosen {
            *c.of(d.why) += 1;
            read[d.cluster].push(d.name.clone());
        }
        i.leave(found, &skipped);
        add(&mut i.counts, c);
        read
    }

    /// The worker's last view of how near each service is to a rule's threshold.
    pub fn rank(&self, margins: HashMap<ServiceKey, f64>) {
        self.lock().margins = margins;
    }

    /// The services the last pass left unread that the worker must hold.
    pub fn unread(&self) -> Vec<ServiceKey> {
        self.lock().unread.clone()
    }

    /// What the last pass says of the services it left, if it left any.
    pub fn skipped_note(&self) -> Option<String> {
        self.lock().skipped_note.clone()
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

impl Inner {
    /// [`Book::plan`] for the `k`th cluster: its due services onto `due`; the number of its
    /// quiet services not due.
    fn due_in<'a>(&mut self, k: usize, f: &Found<'a>, pass: &Pass, due: &mut Vec<Due<'a>>) -> usize {
        let mut quiet: Vec<(DateTime<Utc>, &'a String)> = Vec::new();
        for name in f.names {
            let key = ServiceKey::new(f.cluster, arn_name(name));
            let changed =
                pass.changed.all || pass.changed.services.contains(&key) || self.carried.contains(&key);
            let why = match self.entries.get(&key) {
                _ if changed => Why::Changed,
                None => Why::New,
                Some(e) if in_motion(&e.state) => Why::InMotion,
                Some(e) => {
                    quiet.push((e.read_at, name));
                    continue;
                }
            };
            due.push(self.due(k, name, key, why));
        }
        // The reconciliation's turn in this pass, oldest first: its share of the quiet ones,
        // and at least every one not read for `reconcile`.
        quiet.sort();
        let overdue = quiet
            .iter()
            .take_while(|(at, _)| since(*at, pass.now) >= pass.reconcile)
            .count();
        let owed = self.owed.entry(f.cluster.to_string()).or_default();
        let turn = share(owed, quiet.len(), pass.since_last, pass.reconcile).max(overdue);
        for (n, (_, name)) in quiet.iter().take(turn).enumerate() {
            let why = if n < overdue { Why::Overdue } else { Why::Turn };
            due.push(self.due(k, name, ServiceKey::new(f.cluster, arn_name(name)), why));
        }
        quiet.len() - turn
    }

    fn due<'a>(&self, cluster: usize, name: &'a String, key: ServiceKey, why: Why) -> Due<'a> {
        Due {
            cluster,
            name,
            why,
            margin: self.margins.get(&key).copied().unwrap_or(f64::INFINITY),
            read_at: self.entries.get(&key).map(|e| e.read_at),
        }
    }

    /// After a pass's choice: the changed ones skipped stay changed, and those whose known
    /// change (or overdue state) was not read are the worker's to hold.
    fn leave(&mut self, found: &[Found<'_>], skipped: &[Due<'_>]) {
        let key = |d: &Due<'_>| ServiceKey::new(found[d.cluster].cluster, arn_name(d.name));
        self.carried = skipped
            .iter()
            .filter(|d| d.why == Why::Changed)
            .map(key)
            .collect();
        self.unread = skipped
            .iter()
            .filter(|d| d.read_at.is_some() && matches!(d.why, Why::Changed | Why::InMotion | Why::Overdue))
            .map(key)
            .collect();
        self.skipped_note = (!skipped.is_empty()).then(|| skipped_note(found, skipped, self.unread.len()));
    }
}

/// Takes `due` (most pressing first) while each cluster's budget affords its calls (a call
/// describes up to 10 services of one cluster); (chosen, skipped).
fn choose<'a>(found: &[Found<'_>], due: Vec<Due<'a>>) -> (Vec<Due<'a>>, Vec<Due<'a>>) {
    let mut calls: HashMap<usize, usize> = HashMap::new();
    let mut per_cluster = vec![0usize; found.len()];
    let (mut chosen, mut skipped) = (Vec::new(), Vec::new());
    for d in due {
        let Some(a) = found[d.cluster].allowance else {
            per_cluster[d.cluster] += 1;
            chosen.push(d);
            continue;
        };
        let used = calls.entry(a.budget).or_default();
        let cost = usize::from(per_cluster[d.cluster] % DESCRIBE_SERVICES_BATCH == 0);
        if *used + cost > a.calls {
            skipped.push(d);
            continue;
        }
        *used += cost;
        per_cluster[d.cluster] += 1;
        chosen.push(d);
    }
    (chosen, skipped)
}

/// What a pass left for the next, named (the first few, most pressing first).
fn skipped_note(found: &[Found<'_>], skipped: &[Due<'_>], held: usize) -> String {
    const NAMED: usize = 10;
    let names: Vec<String> = skipped
        .iter()
        .take(NAMED)
        .map(|d| format!("{}/{}", found[d.cluster].cluster, arn_name(d.name)))
        .collect();
    let more = skipped.len().saturating_sub(NAMED);
    format!(
        "the ECS read budget did not cover this pass: {} services due were left for the next ({}{}), the most pressing and nearest a threshold read first; {held} with a known change or an overdue state are held until read",
        skipped.len(),
        names.join(", "),
        if more > 0 { format!(", and {more} more") } else { String::new() }
    )
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
    to.skipped += c.skipped;
}

impl ReadCounts {
    fn of(&mut self, why: Why) -> &mut u64 {
        match why {
            Why::Changed => &mut self.changed,
            Why::InMotion => &mut self.in_motion,
            Why::New => &mut self.new,
            Why::Overdue | Why::Turn => &mut self.reconciled,
        }
    }
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

    /// One cluster `c`, no budget.
    fn due(b: &Book, names: &[String], pass: &Pass) -> Vec<String> {
        let found = [Found {
            cluster: "c",
            names,
            allowance: None,
        }];
        b.plan(&found, pass).remove(0)
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
            let read = due(&b, &all, &pass);
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
        let read = due(&b, &all, &pass);
        assert!(read.contains(&"s7".to_string()));
        assert_eq!(read.len(), 3);
        let mut moving = ServiceState::steady("c", "s9", 3);
        moving.running = 1;
        b.record("c", &read, &states(&read), now);
        b.record("c", &["s9".into()], &[moving], now);
        let pass = b.pass(now + TimeDelta::seconds(20), Changed::default(), reconcile);
        assert!(due(&b, &all, &pass).contains(&"s9".to_string()));
        let c = b.counts();
        assert_eq!((c.new, c.changed, c.in_motion), (60, 1, 1));
    }

    #[test]
    fn a_service_asked_but_not_described_is_asked_again() {
        let b = Book::default();
        let all = names(3);
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let pass = b.pass(now, Changed::default(), Duration::from_secs(600));
        let read = due(&b, &all, &pass);
        b.record("c", &read, &states(&all[..2]), now);
        assert_eq!(b.states("c", &all).len(), 2);
        let pass = b.pass(
            now + TimeDelta::seconds(1),
            Changed::default(),
            Duration::from_secs(600),
        );
        assert_eq!(due(&b, &all, &pass), vec!["s2".to_string()]);
    }

    /// Two clusters sharing one budget of 3 calls, 26 changed services: the nearest a
    /// threshold are read (the 21st, 22nd… of cluster a wait), the skipped are named, counted,
    /// held (they had a known change) and read first in the next pass without a new event.
    #[test]
    fn a_pass_the_budget_cannot_cover_reads_the_nearest_first_and_leaves_the_rest_named() {
        let b = Book::default();
        let all = names(40);
        let reconcile = Duration::from_secs(600);
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let found = |allowance| {
            ["a", "b"].map(|cluster| Found {
                cluster,
                names: &all,
                allowance,
            })
        };
        let pass = b.pass(t0, Changed::default(), reconcile);
        for (k, read) in b.plan(&found(None), &pass).iter().enumerate() {
            assert_eq!(read.len(), 40);
            let cluster = ["a", "b"][k];
            let s: Vec<ServiceState> = read.iter().map(|n| ServiceState::steady(cluster, n, 2)).collect();
            b.record(cluster, read, &s, t0);
        }
        // a/s0..s24 changed, nearest first in reverse order of their number; b/s5 nearest of all.
        let mut changed = Changed::default();
        let mut margins = HashMap::new();
        for i in 0..25 {
            changed.services.insert(ServiceKey::new("a", format!("s{i}")));
            margins.insert(ServiceKey::new("a", format!("s{i}")), 0.5 - 0.01 * i as f64);
        }
        changed.services.insert(ServiceKey::new("b", "s5"));
        margins.insert(ServiceKey::new("b", "s5"), 0.0);
        b.rank(margins);
        let now = t0 + TimeDelta::seconds(20);
        let pass = b.pass(now, changed, reconcile);
        let budget = Some(ReadAllowance { budget: 1, calls: 3 });
        let read = b.plan(&found(budget), &pass);
        // b's one call also takes its reconciliation turn (a free place in the batch).
        assert_eq!(read[1][0], "s5");
        assert!(read[1].len() <= DESCRIBE_SERVICES_BATCH, "{:?}", read[1]);
        let want: Vec<String> = (5..25).rev().map(|i| format!("s{i}")).collect();
        assert_eq!(read[0], want, "the 20 nearest of a, nearest first");
        let (unread, note) = (b.unread(), b.skipped_note());
        let mut unread: Vec<String> = unread.iter().map(|k| k.to_string()).collect();
        unread.sort();
        assert_eq!(unread, ["a/s0", "a/s1", "a/s2", "a/s3", "a/s4"]);
        let note = note.unwrap();
        assert!(note.contains("a/s4, a/s3, a/s2, a/s1, a/s0"), "{note}");
        assert!(note.contains("5 with a known change"), "{note}");
        assert!(b.counts().skipped >= 5);
        // Next pass, no budget and no event: the five are changed still, read first.
        let pass = b.pass(now + TimeDelta::seconds(20), Changed::default(), reconcile);
        let read = b.plan(&found(None), &pass);
        for i in 0..5 {
            assert!(read[0].contains(&format!("s{i}")), "{:?}", read[0]);
        }
        assert!(b.unread().is_empty());
    }
}
