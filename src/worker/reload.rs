//! Live reload: the config and every policy file read again, on SIGHUP, on `POST /reload`, or
//! when a watched file changes, and swapped in between two ticks.
//!
//! A reload validates everything as `ecscale run` does at start. Any mistake, or a change to a
//! setting that cannot change while the worker runs, keeps the last good files running; the
//! mistakes (file:line) are logged, counted in `ecscale_config_reloads_total{result="failed"}`
//! and shown on `/healthz` and `/status` until a later reload succeeds. Targets that are still
//! there keep their state (cooldowns, stabilization windows, last action); removed ones lose it.
//!
//! Editors save in two ways, and neither is acted on half-done: an atomic rename is seen as a
//! new file at the path; a truncate-then-write is seen as a file that keeps changing. The
//! watcher waits until every file has kept the same size, time and inode for a settle period
//! (and is not empty), and a reload re-reads when a file changed while it was being read.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

pub use super::control::{Outcome, Trigger};

use super::notify::{retire, Event, Notifications, Notifier};
use super::status::ReloadStatus;
use super::Worker;
use crate::actuate::ecs_service::ServiceActuator;
use crate::config::Config;
use crate::config::EventKind;
use crate::model::TargetKey;
use crate::policy::TargetPolicy;

/// The config and its policies, read and checked.
pub struct Loaded {
    pub config: Config,
    pub policies: Vec<TargetPolicy>,
}

/// Reads the files again, checked as at start; the mistakes (file:line: …) otherwise.
pub type Loader = Arc<dyn Fn() -> Result<Loaded, Vec<String>> + Send + Sync>;

/// One file as the watcher sees it: (length, modification time, inode), or missing.
type Stamp = Option<(u64, SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|f| stamp(f)).collect()
}

/// The files a config runs from: itself, then its policy files.
pub fn files_of(config: &Config) -> Vec<PathBuf> {
    std::iter::once(config.file.clone())
        .chain(config.policy_files.iter().cloned())
        .collect()
}

/// A hash of the files' contents: equal means nothing to reload.
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(f).ok().hash(&mut h);
    }
    h.finish()
}

/// The settings that a running worker cannot take up, changed between `old` and `new`.
pub fn fixed_changes(old: &Config, new: &Config) -> Vec<String> {
    let file = new.file.display();
    let mut out = Vec::new();
    let mut check = |changed: bool, what: &str| {
        if changed {
            out.push(format!(
                "{file}: {what} cannot change while the worker runs (restart ecscale to apply it)"
            ));
        }
    };
    check(
        old.worker.metrics_addr != new.worker.metrics_addr,
        "worker.metrics_addr",
    );
    check(old.worker.state != new.worker.state, "worker.state");
    check(old.worker.leader != new.worker.leader, "worker.leader");
    check(old.aws != new.aws, "aws (the AWS clients are built once)");
    check(
        old.collect.events.as_ref().map(|e| &e.queue_url)
            != new.collect.events.as_ref().map(|e| &e.queue_url),
        "collect.events.queue_url (the queue is polled from the start)",
    );
    check(
        old.sink != new.sink,
        "sink (the shipper and its spool are opened once)",
    );
    out
}

/// Reads the files until they stay the same while being read (a file saved while it was
/// read is read again), at most a few times.
pub fn read_settled(load: &Loader, current: &[PathBuf]) -> Result<(Loaded, u64), Vec<String>> {
    let (loaded, print) = settled(current, || {
        let loaded = load();
        let files = loaded.as_ref().ok().map(|l| files_of(&l.config));
        (loaded, files)
    });
    loaded.map(|l| (l, print))
}

/// The fingerprint of files that did not settle: equal to no contents, so the next reload
/// reads them again whatever they hold then.
const UNSETTLED: u64 = 0;

/// Runs `read` (its value, and the files it read when it knows them) until no file changed
/// while it ran; its value and the fingerprint of the files it read. The fingerprint is taken
/// before the files' stamps are looked at again, so it is of what `read` saw: a save after that
/// is a change the next reload sees. A read that names files not watched yet (a policy file
/// added) is done again with them watched.
fn settled<T>(current: &[PathBuf], read: impl Fn() -> (T, Option<Vec<PathBuf>>)) -> (T, u64) {
    let mut watched = current.to_vec();
    let mut attempt = 0;
    loop {
        let before = stamps(&watched);
        let (value, files) = read();
        let files = files.unwrap_or_else(|| watched.clone());
        let print = fingerprint(&files);
        let same = files == watched && stamps(&watched) == before;
        attempt += 1;
        if same {
            return (value, print);
        }
        if attempt >= 5 {
            return (value, UNSETTLED);
        }
        watched = files;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Listens for SIGHUP: each one asks for a reload.
pub fn on_sighup(tx: mpsc::Sender<Trigger>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot listen for SIGHUP: reload with POST /reload");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config and policy files");
            if tx.send(Trigger::Signal).await.is_err() {
                return;
            }
        }
    });
}

/// How long files must stay unchanged before a change is acted on.
const SETTLE: Duration = Duration::from_millis(500);
/// How long an empty or missing file is waited for before it is read as it is.
const HOLD_EMPTY: Duration = Duration::from_secs(10);

/// What the worker runs from, shared with the watcher: the files read, and the `policies`
/// globs (a new file matching one is a change too).
#[derive(Debug, Clone)]
pub struct InUse {
    pub files: Vec<PathBuf>,
    pub globs: Vec<String>,
}

impl InUse {
    fn of(config: &Config) -> InUse {
        InUse {
            files: files_of(config),
            globs: config.policy_globs.clone(),
        }
    }

    /// The files to watch: those in use, and any other file its globs match now.
    fn watched(&self) -> Vec<PathBuf> {
        let mut all: BTreeSet<PathBuf> = self
            .globs
            .iter()
            .filter_map(|g| crate::config::glob_files(g).ok())
            .flatten()
            .collect();
        all.retain(|f| !self.files.contains(f));
        self.files.iter().cloned().chain(all).collect()
    }
}

/// Checks the files in use (and the policy globs' matches) every `every`; asks for a reload
/// once a change has settled.
pub fn watch_files(
    in_use: Arc<Mutex<InUse>>,
    every: Duration,
    tx: mpsc::Sender<Trigger>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let now = || in_use.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let look = |u: &InUse| {
            let w = u.watched();
            let s = stamps(&w);
            (u.files.clone(), w, s)
        };
        let mut seen = look(&now());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let current = look(&now());
            // A new list in use comes from a reload, which read the files as they are.
            if current.0 != seen.0 {
                seen = current;
                continue;
            }
            if current == seen {
                continue;
            }
            let settled = settle(&current.1).await;
            seen = look(&now());
            if settled && tx.send(Trigger::Watch).await.is_err() {
                return;
            }
        }
    })
}

/// Waits until the files have not changed for [`SETTLE`] and none is empty or missing (or
/// [`HOLD_EMPTY`] passed). False when the files changed back to what they were.
async fn settle(files: &[PathBuf]) -> bool {
    let started = tokio::time::Instant::now();
    let mut last = stamps(files);
    loop {
        tokio::time::sleep(SETTLE).await;
        let now = stamps(files);
        let incomplete = now.iter().any(|s| s.is_none_or(|(len, ..)| len == 0));
        if now == last && (!incomplete || started.elapsed() >= HOLD_EMPTY) {
            return true;
        }
        last = now;
    }
}

/// What a reload changed among the targets, in a few words.
fn target_changes(old: &[TargetPolicy], new: &[TargetPolicy]) -> String {
    let names =
        |ps: &[TargetPolicy]| -> BTreeSet<String> { ps.iter().map(|p| p.target.to_string()).collect() };
    let (a, b) = (names(old), names(new));
    let added: Vec<&String> = b.difference(&a).collect();
    let removed: Vec<&String> = a.difference(&b).collect();
    let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    let mut out = format!("{} target policies", b.len());
    if !added.is_empty() {
        out.push_str(&format!("; added: {}", list(&added)));
    }
    if !removed.is_empty() {
        out.push_str(&format!("; removed (their state dropped): {}", list(&removed)));
    }
    out
}

impl Worker {
    /// Removes the targets whose file has stayed gone for the grace, with their state: said in
    /// the log and notified.
    pub(super) fn expire_orphans(&mut self, now: DateTime<Utc>) {
        let gone = self.orphans.expire(now);
        if gone.is_empty() {
            return;
        }
        for o in &gone {
            let name = o.policy.target.to_string();
            self.policies.retain(|p| p.target != o.policy.target);
            self.state.targets.remove(&name);
            let text = format!(
                "{name} removed: its policy file {} has been gone since {} ({} ago)",
                o.policy.file,
                o.since.format("%H:%M:%S"),
                humantime::format_duration(super::orphans::GRACE)
            );
            tracing::warn!("{text}");
            self.notify
                .send(&Event::new(EventKind::Reload, now, Some(name), text));
        }
        self.metrics.set_orphans(self.orphans.list());
    }

    /// Puts a new config and policies in place between two ticks. Targets still there keep
    /// their state; removed ones lose it, but those whose file vanished are kept as orphans
    /// ([`super::orphans`]). Returns what changed.
    pub fn reload(&mut self, loaded: Loaded) -> String {
        let Loaded { config, mut policies } = loaded;
        let now = Utc::now();
        let newly = self.orphans.keep(&self.policies, &mut policies, now);
        let mut summary = target_changes(&self.policies, &policies);
        if !newly.is_empty() {
            let text = format!(
                "orphaned, their policy file vanished: {}; each keeps its last good policy and its state for {} unless its file comes back, then it is removed",
                newly.join(", "),
                humantime::format_duration(super::orphans::GRACE)
            );
            self.notify.send(
                &Event::new(EventKind::Reload, now, None, text.clone()).with("orphaned", newly.clone()),
            );
            summary.push_str("; ");
            summary.push_str(&text);
        }
        self.metrics.set_orphans(self.orphans.list());
        let mut keep: BTreeSet<String> = policies.iter().map(|p| p.target.to_string()).collect();
        keep.extend(config.capacity.iter().map(|c| {
            TargetKey::AutoScalingGroup {
                name: c.auto_scaling_group.as_str().into(),
            }
            .to_string()
        }));
        keep.extend(config.groups.iter().map(|g| {
            TargetKey::TaskGroup {
                cluster: g.cluster.as_str().into(),
                group: g.name.as_str().into(),
            }
            .to_string()
        }));
        self.state.targets.retain(|k, _| keep.contains(k));
        self.state
            .groups
            .retain(|g, _| config.capacity.iter().any(|c| &c.auto_scaling_group == g));
        let collector = super::collector(&config, &policies, &self.clients);
        collector.carry_history(&self.collector);
        self.collector = collector;
        let (old, new) = (&self.config.worker, &config.worker);
        if old.update_rate != new.update_rate || old.app_autoscaling != new.app_autoscaling {
            self.services = ServiceActuator::new(
                self.clients.ecs_write.clone(),
                self.clients.app_autoscaling.clone(),
                new.app_autoscaling,
                super::update_limiter(&config),
                self.dry_run,
            );
        }
        self.config = config;
        self.policies = policies;
        summary
    }
}

/// The reload side of a running worker: how to read the files, which ones are in use, and
/// what they held.
pub struct Reloading {
    loader: Loader,
    in_use: Arc<Mutex<InUse>>,
    fingerprint: u64,
    loaded_at: DateTime<Utc>,
}

/// The end of one reload, before it is reported.
enum Step {
    Ok(String),
    Unchanged,
    Failed(Vec<String>),
}

impl Reloading {
    pub fn new(loader: Loader, config: &Config) -> Self {
        let in_use = InUse::of(config);
        Reloading {
            loader,
            fingerprint: fingerprint(&in_use.files),
            in_use: Arc::new(Mutex::new(in_use)),
            loaded_at: Utc::now(),
        }
    }

    /// The files and globs in use (shared with the watcher).
    pub fn in_use(&self) -> Arc<Mutex<InUse>> {
        self.in_use.clone()
    }

    fn current(&self) -> Vec<PathBuf> {
        self.in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .files
            .clone()
    }

    /// What `/status` shows before any reload.
    pub fn status(&self) -> ReloadStatus {
        ReloadStatus {
            loaded_at: Some(self.loaded_at),
            files: self.current().iter().map(|f| f.display().to_string()).collect(),
            ..Default::default()
        }
    }

    /// Reads the files again and, when they are good, puts them in place; reports it
    /// everywhere (log, `/metrics`, `/healthz`, `/status`, notifications, the HTTP caller).
    pub async fn apply(
        &mut self,
        worker: &mut Worker,
        trigger: Trigger,
        notify: &Notifications,
        grace: Duration,
    ) {
        let name = trigger.name();
        let step = self.step(worker, notify, grace).await;
        let now = Utc::now();
        let (result, text, mistakes) = match step {
            Step::Ok(summary) => ("ok", summary, Vec::new()),
            Step::Unchanged => ("unchanged", "the files are as they were".to_string(), Vec::new()),
            Step::Failed(m) => ("failed", m.join("\n"), m),
        };
        match result {
            "failed" => {
                tracing::error!(
                    "reload ({name}) failed, the files read at {} keep running:\n{text}",
                    self.loaded_at.format("%H:%M:%S")
                );
                let summary = format!(
                    "reload ({name}) failed with {} mistake(s), the files read at {} keep running: {}",
                    mistakes.len(),
                    self.loaded_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    mistakes.first().map_or("", String::as_str)
                );
                notify.send(
                    &Event::new(EventKind::Reload, now, None, summary).with("mistakes", mistakes.clone()),
                );
            }
            _ => tracing::info!("reload ({name}): {result}: {text}"),
        }
        worker.metrics().reloaded(ReloadStatus {
            last_at: Some(now),
            last_trigger: Some(name.into()),
            last_result: Some(result.into()),
            mistakes,
            orphaned: worker.orphans.list(),
            ..self.status()
        });
        if let Trigger::Http(reply) = trigger {
            let _ = reply.send(Outcome { result, text });
        }
    }

    async fn step(&mut self, worker: &mut Worker, notify: &Notifications, grace: Duration) -> Step {
        let (load, files) = (self.loader.clone(), self.current());
        let read = tokio::task::spawn_blocking(move || read_settled(&load, &files)).await;
        let (loaded, print) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(mistakes)) => return Step::Failed(mistakes),
            Err(e) => return Step::Failed(vec![format!("reading the files: {e}")]),
        };
        if print == self.fingerprint {
            return Step::Unchanged;
        }
        let fixed = fixed_changes(&worker.config, &loaded.config);
        if !fixed.is_empty() {
            return Step::Failed(fixed);
        }
        if loaded.config.notify != worker.config.notify {
            let started = match loaded.config.notify.is_empty() {
                true => Ok(None),
                false => Notifier::start(&loaded.config.notify, notify.worker(), worker.metrics().clone())
                    .map(Some),
            };
            match started {
                Ok(n) => {
                    let old = notify.replace(n);
                    tokio::spawn(retire(old, tokio::time::Instant::now() + grace));
                }
                Err(e) => return Step::Failed(vec![e]),
            }
        }
        let in_use = InUse::of(&loaded.config);
        let summary = worker.reload(loaded);
        *self.in_use.lock().unwrap_or_else(|p| p.into_inner()) = in_use;
        self.fingerprint = print;
        self.loaded_at = Utc::now();
        Step::Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[tokio::test]
    async fn a_change_is_reported_once_it_has_settled_and_not_while_the_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "p.yaml", "a: 1\n");
        let (tx, mut rx) = mpsc::channel(4);
        let (_stop_tx, stop) = watch::channel(false);
        let files = Arc::new(Mutex::new(InUse {
            files: vec![f.clone()],
            globs: vec![],
        }));
        let task = watch_files(files, Duration::from_millis(50), tx, stop);
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Truncated, then written in two pieces with pauses shorter than the settle period.
        std::fs::write(&f, "").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "acted on an empty file");
        std::fs::write(&f, "a: 2\n").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err(), "acted before the file settled");
        std::fs::write(&f, "a: 2\nb: 3\n").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert!(matches!(got, Some(Trigger::Watch)));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a: 2\nb: 3\n");
        // Nothing more without a change.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(rx.try_recv().is_err());
        task.abort();
    }

    #[tokio::test]
    async fn a_file_replaced_by_rename_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "p.yaml", "a: 1\n");
        let (tx, mut rx) = mpsc::channel(4);
        let (_stop_tx, stop) = watch::channel(false);
        let task = watch_files(
            Arc::new(Mutex::new(InUse {
                files: vec![f.clone()],
                globs: vec![],
            })),
            Duration::from_millis(50),
            tx,
            stop,
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Same length, a new inode: what an editor's atomic save looks like.
        let tmp = write(dir.path(), ".p.yaml.swp", "a: 9\n");
        std::fs::rename(&tmp, &f).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert!(matches!(got, Some(Trigger::Watch)));
        task.abort();
    }

    #[tokio::test]
    async fn a_new_file_matching_a_policy_glob_is_a_change_and_watched_from_then_on() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.yaml", "a: 1\n");
        let (tx, mut rx) = mpsc::channel(4);
        let (_stop_tx, stop) = watch::channel(false);
        let in_use = Arc::new(Mutex::new(InUse {
            files: vec![a.clone()],
            globs: vec![dir.path().join("*.yaml").display().to_string()],
        }));
        let task = watch_files(in_use.clone(), Duration::from_millis(50), tx, stop);
        let next = |rx: &mut mpsc::Receiver<Trigger>| matches!(rx.try_recv(), Ok(Trigger::Watch));
        async fn arrives(rx: &mut mpsc::Receiver<Trigger>) -> bool {
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            matches!(got, Ok(Some(Trigger::Watch)))
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Another file that the glob does not match is nothing.
        write(dir.path(), "notes.txt", "x\n");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!next(&mut rx), "a file outside the glob");
        // A new policy file: a reload once it has settled.
        let b = write(dir.path(), "b.yaml", "b: 1\n");
        assert!(arrives(&mut rx).await, "the new file was not seen");
        // Its reload failed (the list in use is the same): nothing more until it changes...
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!next(&mut rx));
        // ...and its fix is seen, though it is not in use yet.
        std::fs::write(&b, "b: 22\n").unwrap();
        assert!(arrives(&mut rx).await, "the fix of the new file was not seen");
        // A reload that took it in is not a change.
        in_use.lock().unwrap().files.push(b);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!next(&mut rx));
        task.abort();
    }

    #[test]
    fn a_read_is_done_again_when_a_file_changes_under_it_or_a_new_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "ecscale.yaml", "policies: [p.yaml]\n");
        let p = write(dir.path(), "p.yaml", "a: 1\n");
        let reads = std::sync::atomic::AtomicU32::new(0);
        // The first read names only the config; it then names the policy file too, which is
        // saved while the second read runs.
        let (value, print) = settled(std::slice::from_ref(&f), || {
            let n = reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let text = std::fs::read_to_string(&p).unwrap();
            if n == 1 {
                std::thread::sleep(Duration::from_millis(20));
                write(dir.path(), "p.yaml", "a: 22\n");
            }
            (text, Some(vec![f.clone(), p.clone()]))
        });
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(value, "a: 22\n");
        assert_eq!(print, fingerprint(&[f.clone(), p.clone()]));
        // A file that never settles: the last read, and a fingerprint no contents have.
        let (_, print) = settled(std::slice::from_ref(&p), || {
            let n = reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            write(dir.path(), "p.yaml", &format!("a: {n}\n"));
            ((), None)
        });
        assert_eq!(print, UNSETTLED);
        assert_ne!(fingerprint(std::slice::from_ref(&p)), UNSETTLED);
    }

    #[test]
    fn the_fingerprint_follows_the_contents_not_the_times() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "p.yaml", "a: 1\n");
        let a = fingerprint(std::slice::from_ref(&f));
        write(dir.path(), "p.yaml", "a: 1\n");
        assert_eq!(fingerprint(std::slice::from_ref(&f)), a);
        write(dir.path(), "p.yaml", "a: 2\n");
        assert_ne!(fingerprint(std::slice::from_ref(&f)), a);
    }
}
