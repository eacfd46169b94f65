//! The on-disk spool: a durable queue of bulk-format NDJSON segments.
//!
//! Every shipped document is first appended to the current segment (`NNN.open`, one write per
//! batch, so a killed process loses nothing it had handed over); a segment is sealed
//! (`NNN.ndjson`) when it reaches its size or age, and deleted only once Elasticsearch took
//! every document in it. After a crash, an `.open` segment is cut back to its last complete
//! document and sealed. The files are plain `_bulk` bodies: `ecscale ship replay DIR` sends a
//! spool a worker wrote without Elasticsearch.
//!
//! The spool is bounded, by `max_size` and by the disk itself: when either is full, `block`
//! makes appends wait for room (freed by the sender, by a replay in another process, or by
//! whoever frees the disk), `drop_oldest` deletes the oldest sealed segments and counts the
//! documents it dropped. A read-only disk makes appends wait too.
//!
//! An append is atomic per batch: a write that fails (the disk filled, an I/O error) is cut back
//! to where it started, so the open segment never holds a partial document and later appends
//! land after whole ones. A cut that fails (a read-only disk) is repaired before the next write,
//! as a crash's leftovers are when the spool opens.
//!
//! Refused documents the dead-letter index did not take are kept in `deadletter.ndjson` here,
//! inside the same size bound; `ecscale ship replay --dead-letters` sends them again.
//!
//! The spool keeps a ledger of its segments and their documents. At most once a second (and
//! before every append, for the open segment) it looks at the disk: a folder someone removed is
//! made again, and a segment that vanished without being sent is counted as lost, by document,
//! so the accounting still adds up (spooled = delivered + dead-lettered + dropped + lost + on
//! disk). The size it reports is read from the disk, not remembered.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::OnFull;

/// A spool failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "spool {dir} is full ({size} of {max} bytes) and cannot take {need} bytes: nothing can be dropped"
    )]
    Full {
        dir: PathBuf,
        size: u64,
        max: u64,
        need: u64,
    },
}

impl SpoolError {
    /// What kind of failure: `no_space` (the disk or `max_size`), `read_only`, or `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            SpoolError::Full { .. } => "no_space",
            SpoolError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => "no_space",
                std::io::ErrorKind::ReadOnlyFilesystem => "read_only",
                _ => "io",
            },
        }
    }

    /// Whether waiting for room (or for the disk to come back) may help.
    pub fn no_room(&self) -> bool {
        matches!(self.kind(), "no_space" | "read_only")
    }
}

/// What keeps appends waiting right now, and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub kind: &'static str,
    pub message: String,
    pub since: std::time::SystemTime,
}

/// The dead-letter file of a spool.
pub const DEAD_LETTERS: &str = "deadletter.ndjson";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

struct Open {
    file: File,
    path: PathBuf,
    bytes: u64,
    /// Whole documents appended.
    docs: u64,
    opened: Instant,
}

struct Writer {
    open: Option<Open>,
    next_seq: u64,
    /// A segment a failed write may have left with a partial document (the cut failed too):
    /// repaired before anything else is written.
    dirty: Option<PathBuf>,
}

/// The spool of one worker (or one replay).
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    on_full: OnFull,
    writer: Mutex<Writer>,
    in_flight: Mutex<HashSet<u64>>,
    size: AtomicU64,
    dropped_docs: AtomicU64,
    /// When `drop_oldest` last deleted documents.
    last_drop: Mutex<Option<std::time::SystemTime>>,
    blocked: Mutex<Option<Blocked>>,
    /// Appends that found no room, by kind (`no_space`, `read_only`).
    failures: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Sealed segments and their documents, as this spool made or found them.
    ledger: Mutex<std::collections::BTreeMap<u64, u64>>,
    /// Documents and segments that vanished from the disk before they were sent, and when
    /// that was last seen.
    lost_docs: AtomicU64,
    lost_segments: AtomicU64,
    last_loss: Mutex<Option<std::time::SystemTime>>,
    /// When the disk was last looked at.
    audited: Mutex<Instant>,
    /// Signalled when a segment is sealed (work for the sender) or removed (room for writers).
    pub changed: Notify,
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// The length of the longest prefix made of complete document pairs (action line + source line).
pub(crate) fn complete_pairs_len(bytes: &[u8]) -> usize {
    let mut end_of_pair = 0usize;
    for (n, i) in memchr::memchr_iter(b'\n', bytes).enumerate() {
        if n % 2 == 1 {
            end_of_pair = i + 1;
        }
    }
    end_of_pair
}

/// Documents in a segment's bytes.
pub fn count_docs(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64 / 2
}

/// Cuts a segment back to its complete documents; removes it when none is left. Returns the
/// bytes kept.
fn repair(path: &Path) -> Result<u64, SpoolError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let keep = complete_pairs_len(&bytes);
    if keep == 0 {
        fs::remove_file(path).map_err(io(path))?;
        return Ok(0);
    }
    if keep < bytes.len() {
        let f = OpenOptions::new().write(true).open(path).map_err(io(path))?;
        f.set_len(keep as u64).map_err(io(path))?;
        tracing::warn!(
            "spool {}: cut {} bytes of an incomplete document",
            path.display(),
            bytes.len() - keep
        );
    }
    Ok(keep as u64)
}

impl Spool {
    /// Opens (creating) the spool in `dir`, sealing what a crashed writer left open.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        on_full: OnFull,
        segment_bytes: u64,
    ) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut next_seq = 0;
        let mut size = 0;
        let mut open = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let Some(seq) = seq_of(&path) else { continue };
            next_seq = next_seq.max(seq + 1);
            match path.extension().and_then(|e| e.to_str()) {
                Some("open") => open.push(path),
                Some("ndjson") => size += entry_len(&path)?,
                _ => {}
            }
        }
        for path in open {
            // Left by a crash (or a failed cut): whole documents only, then sealed, under a
            // new number when a sealed segment already holds its own (never over it).
            let keep = repair(&path)?;
            if keep == 0 {
                continue;
            }
            let mut sealed = path.with_extension("ndjson");
            if sealed.exists() {
                sealed = dir.join(format!("{next_seq:020}.ndjson"));
                next_seq += 1;
            }
            fs::rename(&path, &sealed).map_err(io(&path))?;
            size += keep;
        }
        size += fs::metadata(dir.join(DEAD_LETTERS)).map_or(0, |m| m.len());
        let mut ledger = std::collections::BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if let (Some(seq), true) = (seq_of(&path), path.extension().is_some_and(|e| e == "ndjson")) {
                ledger.insert(seq, count_docs(&fs::read(&path).map_err(io(&path))?));
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: segment_bytes.max(1),
            on_full,
            writer: Mutex::new(Writer {
                open: None,
                next_seq,
                dirty: None,
            }),
            in_flight: Mutex::new(HashSet::new()),
            size: AtomicU64::new(size),
            dropped_docs: AtomicU64::new(0),
            last_drop: Mutex::new(None),
            blocked: Mutex::new(None),
            failures: Mutex::new(Default::default()),
            ledger: Mutex::new(ledger),
            lost_docs: AtomicU64::new(0),
            lost_segments: AtomicU64::new(0),
            last_loss: Mutex::new(None),
            audited: Mutex::new(Instant::now()),
            changed: Notify::new(),
        })
    }

    /// Documents that vanished from the disk before they were sent.
    pub fn lost_docs(&self) -> u64 {
        self.lost_docs.load(Ordering::Relaxed)
    }

    /// Segments that vanished (sealed ones, and the open one).
    pub fn lost_segments(&self) -> u64 {
        self.lost_segments.load(Ordering::Relaxed)
    }

    /// When documents were last found lost, if ever.
    pub fn last_loss(&self) -> Option<std::time::SystemTime> {
        *self.last_loss.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, u64>> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lose(&self, docs: u64, what: &str) {
        self.lost_docs.fetch_add(docs, Ordering::Relaxed);
        self.lost_segments.fetch_add(1, Ordering::Relaxed);
        *self.last_loss.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::SystemTime::now());
        tracing::error!(
            "spool {}: {what} vanished before it was sent: {docs} documents lost (counted)",
            self.dir.display()
        );
    }

    /// Looks at the disk (under the writer's lock): the folder made again if it is gone, the
    /// open segment and every sealed one the ledger holds still there (each one that is not,
    /// and is not being sent, counted lost), and the size read again. The sealed segments are
    /// looked at once a second at most; `force` looks now.
    fn audit_locked(&self, w: &mut Writer, force: bool) -> Result<(), SpoolError> {
        if !self.dir.is_dir() {
            fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
            tracing::error!("spool {}: the folder was gone: made again", self.dir.display());
        }
        if w.open.as_ref().is_some_and(|o| !o.path.exists()) {
            if let Some(o) = w.open.take() {
                self.lose(o.docs, &format!("the open segment {}", o.path.display()));
            }
        }
        let mut last = self.audited.lock().unwrap_or_else(|e| e.into_inner());
        if !force && last.elapsed() < Duration::from_secs(1) {
            return Ok(());
        }
        *last = Instant::now();
        drop(last);
        let gone: Vec<(u64, u64)> = {
            let flights = self.flights();
            self.ledger()
                .iter()
                .filter(|(seq, _)| !flights.contains(seq))
                .filter(|(seq, _)| !self.dir.join(format!("{seq:020}.ndjson")).exists())
                .map(|(s, d)| (*s, *d))
                .collect()
        };
        for (seq, docs) in gone {
            self.ledger().remove(&seq);
            self.lose(docs, &format!("segment {seq:020}.ndjson"));
        }
        self.rescan_locked(w)
    }

    /// [`Self::audit_locked`], now.
    pub fn audit(&self) -> Result<(), SpoolError> {
        let mut w = self.writer();
        self.audit_locked(&mut w, true)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Documents deleted by `drop_oldest`.
    pub fn dropped_docs(&self) -> u64 {
        self.dropped_docs.load(Ordering::Relaxed)
    }

    /// When `drop_oldest` last deleted documents, if it ever did.
    pub fn last_drop(&self) -> Option<std::time::SystemTime> {
        *self.last_drop.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic mid-append leaves at worst an incomplete document, which `open` cuts off.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What keeps appends waiting now (a full or read-only disk, `max_size`), if anything.
    pub fn blocked(&self) -> Option<Blocked> {
        self.blocked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Appends that found no room so far, by kind.
    pub fn failures(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_blocked(&self, b: Option<Blocked>) {
        if let Some(b) = &b {
            *self
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(b.kind)
                .or_default() += 1;
        }
        let mut g = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match (&*g, &b) {
            (None, Some(b)) => tracing::warn!("spool {}: {}; documents wait", self.dir.display(), b.message),
            (Some(_), None) => tracing::info!("spool {}: writable again", self.dir.display()),
            _ => {}
        }
        // Keep the first `since` of an episode.
        *g = match (g.take(), b) {
            (Some(old), Some(new)) if old.kind == new.kind => Some(Blocked {
                since: old.since,
                ..new
            }),
            (_, b) => b,
        };
    }

    /// Appends whole documents (bulk lines), atomically. When there is no room (`max_size`, a
    /// full disk) or the disk is read-only, waits (`block`) or drops the oldest segments
    /// (`drop_oldest`, counted) until it can; other failures are returned, the spool unchanged.
    pub async fn append(&self, bytes: &[u8]) -> Result<(), SpoolError> {
        let need = bytes.len() as u64;
        loop {
            let result = if self.size() + need > self.max_bytes {
                Err(SpoolError::Full {
                    dir: self.dir.clone(),
                    size: self.size(),
                    max: self.max_bytes,
                    need,
                })
            } else {
                self.try_append(bytes)
            };
            match result {
                Ok(sealed) => {
                    self.set_blocked(None);
                    if sealed {
                        self.changed.notify_waiters();
                    }
                    return Ok(());
                }
                Err(e) if e.no_room() => {
                    self.set_blocked(Some(Blocked {
                        kind: e.kind(),
                        message: e.to_string(),
                        since: std::time::SystemTime::now(),
                    }));
                    if self.on_full == OnFull::DropOldest && e.kind() == "no_space" && self.drop_oldest()? {
                        continue;
                    }
                    // Room comes from the sender, a replay in another process, or whoever
                    // frees the disk: look again now and then.
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.changed.notified()).await;
                    let _ = self.rescan();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt: the bytes end up in the open segment whole, or not at all. `true` when the
    /// segment was sealed after.
    fn try_append(&self, bytes: &[u8]) -> Result<bool, SpoolError> {
        let need = bytes.len() as u64;
        let mut w = self.writer();
        self.audit_locked(&mut w, false)?;
        if let Some(path) = w.dirty.clone() {
            repair(&path)?;
            w.dirty = None;
            self.rescan_locked(&w)?;
        }
        let mut open = match w.open.take() {
            Some(o) => o,
            None => {
                let seq = w.next_seq;
                let path = self.dir.join(format!("{seq:020}.open"));
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)
                    .map_err(io(&path))?;
                w.next_seq += 1;
                Open {
                    file,
                    path,
                    bytes: 0,
                    docs: 0,
                    opened: Instant::now(),
                }
            }
        };
        if let Err(e) = open.file.write_all(bytes) {
            // Cut back to the last whole document; if even that fails, repair it later and
            // start a new segment meanwhile.
            if open.file.set_len(open.bytes).is_err() {
                w.dirty = Some(open.path.clone());
            } else {
                w.open = Some(open);
            }
            return Err(SpoolError::Io {
                path: self.dir.clone(),
                source: e,
            });
        }
        open.bytes += need;
        open.docs += count_docs(bytes);
        self.size.fetch_add(need, Ordering::Relaxed);
        let full = open.bytes >= self.segment_bytes;
        w.open = Some(open);
        if full {
            self.seal_locked(&mut w)
        } else {
            Ok(false)
        }
    }

    /// Keeps refused documents (`letters`: bulk pairs of dead-letter documents, whose source
    /// lines are written) in the dead-letter file, atomically, inside the size bound.
    pub fn write_dead_letters(&self, letters: &[u8]) -> Result<(), SpoolError> {
        let mut lines = Vec::with_capacity(letters.len());
        for (i, line) in letters.split(|b| *b == b'\n').enumerate() {
            if i % 2 == 1 && !line.is_empty() {
                lines.extend_from_slice(line);
                lines.push(b'\n');
            }
        }
        let need = lines.len() as u64;
        if self.size() + need > self.max_bytes {
            return Err(SpoolError::Full {
                dir: self.dir.clone(),
                size: self.size(),
                max: self.max_bytes,
                need,
            });
        }
        let path = self.dir.join(DEAD_LETTERS);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let before = f.metadata().map_err(io(&path))?.len();
        let written = f.write_all(&lines).and_then(|_| f.sync_data());
        if let Err(e) = written {
            let _ = f.set_len(before);
            return Err(io(&path)(e));
        }
        self.size.fetch_add(need, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the dead-letter file with `lines` (those still refused after a replay).
    pub fn rewrite_dead_letters(&self, lines: &[u8]) -> Result<(), SpoolError> {
        let path = self.dir.join(DEAD_LETTERS);
        if lines.is_empty() {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        } else {
            crate::files::write_atomically(&path, lines).map_err(io(&path))?;
        }
        self.rescan()?;
        self.changed.notify_waiters();
        Ok(())
    }

    fn seal_locked(&self, w: &mut Writer) -> Result<bool, SpoolError> {
        let Some(open) = w.open.take() else {
            return Ok(false);
        };
        open.file.sync_data().map_err(io(&open.path))?;
        let sealed = open.path.with_extension("ndjson");
        fs::rename(&open.path, &sealed).map_err(io(&open.path))?;
        if let Some(seq) = seq_of(&sealed) {
            self.ledger().insert(seq, open.docs);
        }
        Ok(true)
    }

    /// Seals the current segment if it holds anything and is at least `age` old.
    pub fn seal_if_older(&self, age: Duration) -> Result<bool, SpoolError> {
        let sealed = {
            let mut w = self.writer();
            self.audit_locked(&mut w, false)?;
            match &w.open {
                Some(o) if o.bytes > 0 && o.opened.elapsed() >= age => self.seal_locked(&mut w)?,
                _ => false,
            }
        };
        if sealed {
            self.changed.notify_waiters();
        }
        Ok(sealed)
    }

    /// Seals the current segment, whatever its age.
    pub fn seal(&self) -> Result<bool, SpoolError> {
        self.seal_if_older(Duration::ZERO)
    }

    /// Sealed segments, oldest first.
    pub fn sealed(&self) -> Result<Vec<Segment>, SpoolError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "ndjson") {
                if let Some(seq) = seq_of(&path) {
                    let bytes = entry_len(&path)?;
                    out.push(Segment { seq, path, bytes });
                }
            }
        }
        out.sort_by_key(|s| s.seq);
        Ok(out)
    }

    /// The oldest sealed segment nobody is sending, now marked as being sent.
    pub fn claim(&self) -> Result<Option<Segment>, SpoolError> {
        let sealed = self.sealed()?;
        let mut flights = self.flights();
        Ok(sealed.into_iter().find(|s| flights.insert(s.seq)))
    }

    /// A claimed segment that was not finished goes back to the queue.
    pub fn release(&self, seg: &Segment) {
        self.flights().remove(&seg.seq);
    }

    /// A claimed segment whose documents all reached Elasticsearch (or the dead letters).
    pub fn remove(&self, seg: &Segment) -> Result<(), SpoolError> {
        self.ledger().remove(&seg.seq);
        match fs::remove_file(&seg.path) {
            Ok(()) => {
                self.size.fetch_sub(seg.bytes.min(self.size()), Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&seg.path)(e)),
        }
        self.flights().remove(&seg.seq);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Whether nothing is left to send (sealed, open or in flight).
    pub fn is_empty(&self) -> Result<bool, SpoolError> {
        let open = self.writer().open.as_ref().is_some_and(|o| o.bytes > 0);
        Ok(!open && self.sealed()?.is_empty())
    }

    fn rescan(&self) -> Result<(), SpoolError> {
        let w = self.writer();
        self.rescan_locked(&w)
    }

    /// The size from the disk: sealed segments, the open one, the dead letters.
    fn rescan_locked(&self, w: &Writer) -> Result<(), SpoolError> {
        let mut total: u64 = self.sealed()?.iter().map(|s| s.bytes).sum();
        total += w.open.as_ref().map_or(0, |o| o.bytes);
        total += fs::metadata(self.dir.join(DEAD_LETTERS)).map_or(0, |m| m.len());
        self.size.store(total, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes the oldest sealed segment not being sent; false when there is none.
    fn drop_oldest(&self) -> Result<bool, SpoolError> {
        let candidate = {
            let sealed = self.sealed()?;
            let flights = self.flights();
            sealed.into_iter().find(|s| !flights.contains(&s.seq))
        };
        let Some(seg) = candidate else {
            // The open segment itself may be what fills the spool: seal it so it can go.
            return self.seal().map(|sealed| sealed && self.max_bytes > 0);
        };
        let bytes = fs::read(&seg.path).map_err(io(&seg.path))?;
        let docs = count_docs(&bytes);
        fs::remove_file(&seg.path).map_err(io(&seg.path))?;
        self.ledger().remove(&seg.seq);
        self.size.fetch_sub(seg.bytes.min(self.size()), Ordering::Relaxed);
        self.dropped_docs.fetch_add(docs, Ordering::Relaxed);
        *self.last_drop.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::SystemTime::now());
        tracing::warn!(
            "spool {} is full: dropped the oldest {docs} documents ({}; sink.spool.on_full: drop_oldest)",
            self.dir.display(),
            seg.path.display()
        );
        Ok(true)
    }
}

fn entry_len(path: &Path) -> Result<u64, SpoolError> {
    fs::metadata(path).map(|m| m.len()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(i: usize) -> String {
        format!("{{\"index\":{{\"_index\":\"t\",\"_id\":\"{i}\"}}}}\n{{\"n\":{i}}}\n")
    }

    /// Documents on disk now: sealed segments and the open one.
    fn on_disk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| seq_of(&e.path()).is_some())
                    .map(|e| count_docs(&std::fs::read(e.path()).unwrap_or_default()))
                    .sum()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_folder_or_a_segment_removed_is_made_again_and_counted_lost_so_the_accounting_adds_up() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("spool");
        let spool = Spool::open(&dir, 1 << 20, OnFull::Block, 200).unwrap();
        let mut appended = 0;
        for i in 0..10 {
            spool.append(doc(i).as_bytes()).await.unwrap();
            appended += 1;
        }
        let sent = spool.claim().unwrap().unwrap();
        let delivered = count_docs(&std::fs::read(&sent.path).unwrap());
        spool.remove(&sent).unwrap();
        // Someone removes one sealed segment, then the whole folder (the open segment too).
        let victim = spool.sealed().unwrap().remove(0);
        std::fs::remove_file(&victim.path).unwrap();
        spool.audit().unwrap();
        assert_eq!(spool.lost_segments(), 1);
        let before = on_disk(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        // The next append makes the folder again and counts what vanished.
        for i in 10..14 {
            spool.append(doc(i).as_bytes()).await.unwrap();
            appended += 1;
        }
        spool.audit().unwrap();
        assert!(dir.is_dir(), "the folder is made again");
        assert_eq!(
            appended,
            delivered + spool.lost_docs() + on_disk(&dir),
            "spooled = delivered + lost + on disk ({before} were on disk before the folder went)"
        );
        assert!(spool.lost_docs() >= before, "{} lost", spool.lost_docs());
        // The size is what the disk holds, not what was remembered.
        let files: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert_eq!(spool.size(), files);
    }

    #[tokio::test]
    async fn segments_seal_by_size_and_age_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20, OnFull::Block, 200).unwrap();
        for i in 0..10 {
            spool.append(doc(i).as_bytes()).await.unwrap();
        }
        let sealed = spool.sealed().unwrap();
        assert!(sealed.len() >= 2, "{sealed:?}");
        assert!(!spool.seal_if_older(Duration::from_secs(60)).unwrap());
        // A crash: an open segment with half a document at its end.
        let leftover = dir.path().join(format!("{:020}.open", 999));
        std::fs::write(
            &leftover,
            format!("{}{{\"index\":{{\"_id\":\"x\"}}}}\n{{\"n\":", doc(10)),
        )
        .unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20, OnFull::Block, 200).unwrap();
        let all: u64 = spool
            .sealed()
            .unwrap()
            .iter()
            .map(|s| count_docs(&std::fs::read(&s.path).unwrap()))
            .sum();
        assert_eq!(
            all, 11,
            "10 documents, plus the complete one of the crashed segment"
        );
        assert_eq!(
            spool.size(),
            spool.sealed().unwrap().iter().map(|s| s.bytes).sum::<u64>()
        );
        // New segments number after the crashed one.
        spool.append(doc(11).as_bytes()).await.unwrap();
        spool.seal().unwrap();
        assert_eq!(spool.sealed().unwrap().last().unwrap().seq, 1000);
    }

    #[tokio::test]
    async fn claims_are_exclusive_and_removal_frees_room() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20, OnFull::Block, 1).unwrap();
        spool.append(doc(0).as_bytes()).await.unwrap();
        spool.append(doc(1).as_bytes()).await.unwrap();
        let a = spool.claim().unwrap().unwrap();
        let b = spool.claim().unwrap().unwrap();
        assert_ne!(a.seq, b.seq);
        assert!(spool.claim().unwrap().is_none());
        spool.release(&a);
        assert_eq!(spool.claim().unwrap().unwrap().seq, a.seq);
        let before = spool.size();
        spool.remove(&b).unwrap();
        assert_eq!(spool.size(), before - b.bytes);
    }

    #[tokio::test]
    async fn full_drop_oldest_counts_what_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let one = doc(0).len() as u64;
        let spool = Spool::open(dir.path(), one * 3, OnFull::DropOldest, one).unwrap();
        for i in 0..5 {
            spool.append(doc(i).as_bytes()).await.unwrap();
        }
        assert_eq!(spool.dropped_docs(), 2);
        let kept: Vec<String> = spool
            .sealed()
            .unwrap()
            .iter()
            .map(|s| std::fs::read_to_string(&s.path).unwrap())
            .collect();
        assert_eq!(kept, [doc(2), doc(3), doc(4)]);
    }

    #[tokio::test]
    async fn full_block_waits_for_room() {
        let dir = tempfile::tempdir().unwrap();
        let one = doc(0).len() as u64;
        let spool = std::sync::Arc::new(Spool::open(dir.path(), one * 2, OnFull::Block, one).unwrap());
        spool.append(doc(0).as_bytes()).await.unwrap();
        spool.append(doc(1).as_bytes()).await.unwrap();
        let writer = {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(doc(2).as_bytes()).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!writer.is_finished(), "a full spool blocks");
        let seg = spool.claim().unwrap().unwrap();
        spool.remove(&seg).unwrap();
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(spool.dropped_docs(), 0);
    }
}
