//! Targets whose policy file vanished: a reload that would drop a target because its file is
//! gone (removed from a glob's folder by a half-finished deploy, an `rsync --delete`) does not
//! un-manage a production service without a word. The target keeps its last good policy and its
//! state (cooldowns, stabilization, the last decision), is said as orphaned in the reload's log
//! line, on `/status` and `/healthz` (degraded), with a notification, and is removed only once
//! its file has stayed gone for [`GRACE`]. A target removed from a file that is still there is a
//! deliberate edit, and goes at once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::policy::TargetPolicy;

/// How long a target's file may stay gone before the target is removed.
pub const GRACE: Duration = Duration::from_secs(15 * 60);

/// A target kept after its file vanished.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub policy: TargetPolicy,
    pub since: DateTime<Utc>,
}

/// The orphaned targets, by target name.
#[derive(Debug, Clone, Default)]
pub struct Orphans(BTreeMap<String, Orphan>);

impl Orphans {
    /// Of `old`'s targets that `new` does not have, those whose file is gone are kept: appended
    /// to `new` (an orphan already kept keeps its first `since`). A target `new` has again (its
    /// file came back) is no longer an orphan. Returns the newly orphaned, as `target (file)`.
    pub fn keep(
        &mut self,
        old: &[TargetPolicy],
        new: &mut Vec<TargetPolicy>,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let present = |t: &TargetPolicy, list: &[TargetPolicy]| list.iter().any(|n| n.target == t.target);
        self.0.retain(|_, o| !present(&o.policy, new));
        let mut newly = Vec::new();
        let dropped: Vec<&TargetPolicy> = old.iter().filter(|t| !present(t, new)).collect();
        for t in dropped {
            if std::path::Path::new(&t.file).exists() {
                continue;
            }
            let name = t.target.to_string();
            if !self.0.contains_key(&name) {
                newly.push(format!("{name} ({})", t.file));
            }
            let since = self.0.get(&name).map_or(now, |o| o.since);
            self.0.insert(
                name,
                Orphan {
                    policy: t.clone(),
                    since,
                },
            );
            new.push(t.clone());
        }
        newly
    }

    /// The orphans whose file has stayed gone for [`GRACE`] by `now`: no longer kept.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<Orphan> {
        let grace = TimeDelta::from_std(GRACE).unwrap_or(TimeDelta::minutes(15));
        let (gone, kept): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(_, o)| now - o.since >= grace);
        self.0 = kept;
        gone.into_values().collect()
    }

    /// Each orphan as `/status` says it.
    pub fn list(&self) -> Vec<String> {
        let grace = TimeDelta::from_std(GRACE).unwrap_or(TimeDelta::minutes(15));
        self.0
            .iter()
            .map(|(name, o)| {
                format!(
                    "{name}: its policy file {} vanished at {}; its last good policy runs until {} unless the file comes back",
                    o.policy.file,
                    o.since.format("%H:%M:%S"),
                    (o.since + grace).format("%H:%M:%S")
                )
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &std::path::Path, name: &str, service: &str) -> TargetPolicy {
        let path = dir.join(name);
        let text = format!(
            "target: {{cluster: c, service: {service}}}\nmin: 1\nmax: 4\nrules:\n  - {{kind: target_tracking, metric: cpu, target: 60}}\n"
        );
        std::fs::write(&path, &text).unwrap();
        crate::policy::load_file(&path).unwrap().targets.remove(0)
    }

    #[test]
    fn a_target_whose_file_vanished_is_kept_until_the_grace_ends_and_an_edited_one_goes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            policy(dir.path(), "a.yaml", "a"),
            policy(dir.path(), "b.yaml", "b"),
        );
        let t0: DateTime<Utc> = "2026-12-05T10:00:00Z".parse().unwrap();
        let mut orphans = Orphans::default();
        // b.yaml removed: b is kept; a's file is there but no longer names a: a goes.
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        let mut new = Vec::new();
        let newly = orphans.keep(&[a.clone(), b.clone()], &mut new, t0);
        assert_eq!(newly, vec![format!("c/b ({})", b.file)]);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].target, b.target);
        // a later reload keeps it, with its first `since`
        let mut again = Vec::new();
        assert!(orphans
            .keep(&new, &mut again, t0 + TimeDelta::minutes(5))
            .is_empty());
        assert_eq!(again.len(), 1);
        assert!(
            orphans.list()[0].contains("until 10:15:00"),
            "{:?}",
            orphans.list()
        );
        assert!(orphans.expire(t0 + TimeDelta::minutes(14)).is_empty());
        let gone = orphans.expire(t0 + TimeDelta::minutes(15));
        assert_eq!(gone.len(), 1);
        assert!(orphans.is_empty());
        // the file coming back ends the orphan
        let mut o = Orphans::default();
        o.keep(std::slice::from_ref(&b), &mut Vec::new(), t0);
        let back = policy(dir.path(), "b.yaml", "b");
        o.keep(&[b], &mut vec![back], t0 + TimeDelta::minutes(1));
        assert!(o.is_empty());
    }
}
