//! The ship stage: documents to Elasticsearch/OpenSearch, nothing lost and nothing silent.
//!
//! Sits beside evaluate, fed by collect (metrics), evaluate (decisions) and stress. A
//! [`Shipper`] appends every document to the on-disk [`spool::Spool`] first (atomically per
//! batch; a full or read-only disk waits or drops the oldest, as `on_full` says, counted); a
//! background sender seals segments by size (`bulk_max_size`) or age (`flush_interval`) and sends
//! them, `max_in_flight` at a time, each as one bulk request, deleting a segment only when every
//! document in it was delivered or dead-lettered.
//!
//! The sender never gives up while it runs: every failure is logged when it starts and when it
//! ends, counted by kind ([`Stats`]), retried with backoff, and reported as the shipper's current
//! trouble (the worker's `/healthz`). Only a document Elasticsearch refuses on its own (a mapping
//! or parse error, per item) is dead-lettered, with its reason; a request refused as a whole for
//! a reason that may pass (unreachable, 401/403, 404, 429, 5xx) is retried, one too large (413)
//! is split, one that is malformed (400) is split until the bad document is found. With no
//! Elasticsearch configured the spool only fills; `ecscale ship replay DIR --es URL` sends it.
//!
//! Deterministic ids and daily indices chosen by each document's timestamp make sending twice
//! harmless: a retry, a replay after a crash, never duplicates.

pub mod docs;
pub mod elasticsearch;
pub mod sender;
pub mod spool;
pub mod templates;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

pub use docs::{Doc, Stream};
use elasticsearch::{Es, EsError};
use spool::{count_docs, Spool, SpoolError};
use templates::TemplateOptions;

use crate::config::{OnFull, SinkSettings};

/// A shipping failure.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Es(#[from] EsError),
    #[error("{0}")]
    GaveUp(String),
}

/// How the sender behaves.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub prefix: String,
    pub max_in_flight: usize,
    pub flush_interval: Duration,
    pub templates: TemplateOptions,
    /// Stop (the documents stay on disk) after this long without any progress; `None`: never
    /// (the worker's sender).
    pub give_up_after: Option<Duration>,
}

/// What is going wrong now, and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct Trouble {
    /// As counted in the errors: `auth`, `unreachable`, `no_space`, ...
    pub kind: &'static str,
    pub message: String,
    pub since: SystemTime,
}

/// Counters of a shipper (or a replay), and its current trouble. Shared with whoever reports
/// them (the worker's `/metrics`, `/healthz` and shutdown summary).
#[derive(Debug, Default)]
pub struct Stats {
    pub queued: AtomicU64,
    pub spooled: AtomicU64,
    pub not_spooled: AtomicU64,
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dead_letter_file: AtomicU64,
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// What is going wrong on each side: writing the spool, and sending it. Each side's own
    /// progress ends its trouble (documents spooled say nothing of Elasticsearch).
    trouble: Mutex<[Option<Trouble>; 2]>,
    last_progress: Mutex<Option<SystemTime>>,
}

/// How long documents dropped by `drop_oldest` keep the ship stage degraded.
pub const DROP_LINGER: Duration = Duration::from_secs(300);

/// The two halves of the ship stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Writing documents to the spool.
    Spool = 0,
    /// Sending the spool to Elasticsearch.
    Send = 1,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Documents handed to the ship stage.
    pub queued: u64,
    /// Of those, the ones written to the spool.
    pub spooled: u64,
    /// ... and the ones that never reached it (the ship stage's queue was full, or the disk
    /// refused them until the end). Metric samples among them are read again from CloudWatch.
    pub not_spooled: u64,
    /// Handed over, neither spooled nor given up yet (in memory).
    pub pending: u64,
    /// Documents Elasticsearch took.
    pub delivered: u64,
    /// Document retries (429 and 5xx items).
    pub retried: u64,
    /// Documents refused (mapping, parse errors), kept with their reason in the dead-letter
    /// index or file.
    pub dead_lettered: u64,
    /// Of those, the ones only the dead-letter file holds (the index refused them too).
    pub dead_letter_file: u64,
    /// Documents deleted from the spool by `on_full: drop_oldest`.
    pub dropped: u64,
    /// Documents that vanished from the spool's disk before they were sent (its folder or a
    /// segment removed by someone else), and the segments they were in.
    pub lost: u64,
    pub lost_segments: u64,
    pub requests: u64,
    pub failed_requests: u64,
    /// Bytes on disk: documents waiting, and dead letters.
    pub spool_bytes: u64,
    /// Failures by kind (each one counted when it happens).
    pub errors: BTreeMap<String, u64>,
    /// What is going wrong now (none: documents move).
    pub trouble: Option<String>,
    pub trouble_since: Option<DateTime<Utc>>,
}

impl Stats {
    /// Documents handed to the ship stage.
    pub fn handed(&self, n: u64) {
        self.queued.fetch_add(n, Ordering::Relaxed);
    }

    /// Documents that will not reach the spool: counted, and logged with why.
    pub fn not_spooled(&self, n: u64, why: &str) {
        self.not_spooled.fetch_add(n, Ordering::Relaxed);
        self.failed_on(
            Side::Spool,
            "not_spooled",
            format!("{n} documents not spooled: {why}"),
        );
    }

    /// A failure of `kind` sending the spool: counted; logged when this kind of trouble starts.
    pub fn failed(&self, kind: &'static str, message: String) {
        self.failed_on(Side::Send, kind, message);
    }

    /// A failure of `kind` on `side`: counted; logged when this kind of trouble starts.
    pub fn failed_on(&self, side: Side, kind: &'static str, message: String) {
        *self.lock_errors().entry(kind).or_default() += 1;
        let mut all = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        let t = &mut all[side as usize];
        let since = match &*t {
            Some(old) if old.kind == kind => old.since,
            _ => {
                tracing::error!("ship stage: {message}");
                SystemTime::now()
            }
        };
        *t = Some(Trouble { kind, message, since });
    }

    /// Documents moved on `side` (spooled, or delivered): what went wrong there is over.
    pub fn progressed(&self, side: Side) {
        if side == Side::Send {
            *self.last_progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(SystemTime::now());
        }
        if let Some(t) = self.trouble.lock().unwrap_or_else(|p| p.into_inner())[side as usize].take() {
            let took = t.since.elapsed().unwrap_or_default();
            tracing::info!(
                "ship stage: recovered after {} ({})",
                humantime::format_duration(Duration::from_secs(took.as_secs())),
                t.message
            );
        }
    }

    fn lock_errors(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, u64>> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time since documents were last delivered, `None` before they ever were.
    pub fn since_progress(&self) -> Option<Duration> {
        let last = *self.last_progress.lock().unwrap_or_else(|p| p.into_inner());
        last.map(|t| t.elapsed().unwrap_or_default())
    }

    pub fn snapshot(&self, spool: &Spool) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (queued, spooled, not_spooled) = (get(&self.queued), get(&self.spooled), get(&self.not_spooled));
        let trouble = self.trouble(spool);
        StatsSnapshot {
            queued,
            spooled,
            not_spooled,
            pending: queued.saturating_sub(spooled + not_spooled),
            delivered: get(&self.delivered),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            dead_letter_file: get(&self.dead_letter_file),
            dropped: spool.dropped_docs(),
            lost: spool.lost_docs(),
            lost_segments: spool.lost_segments(),
            requests: get(&self.requests),
            failed_requests: get(&self.failed_requests),
            spool_bytes: spool.size(),
            errors: self.errors(spool),
            trouble_since: trouble.as_ref().map(|t| DateTime::<Utc>::from(t.since)),
            trouble: trouble.map(|t| t.message),
        }
    }

    /// The failures by kind, the spool's included.
    fn errors(&self, spool: &Spool) -> BTreeMap<String, u64> {
        let mut e: BTreeMap<String, u64> = self
            .lock_errors()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        for (k, v) in spool.failures() {
            *e.entry(k.to_string()).or_default() += v;
        }
        e
    }

    /// What is wrong now, most pressing first: the spool waiting for room; else documents lost
    /// or dropped lately (degraded for a while after, though appends go on), before what the
    /// spooling and sending sides say (both in trouble: the spool's first, the other said).
    fn trouble(&self, spool: &Spool) -> Option<Trouble> {
        if let Some(b) = spool.blocked() {
            return Some(Trouble {
                kind: b.kind,
                message: b.message,
                since: b.since,
            });
        }
        let [spooling, sending] = self.trouble.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut trouble = match (spooling, sending) {
            (Some(mut a), Some(b)) => {
                a.message = format!("{}; and {}", a.message, b.message);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        let lately = |t: Option<SystemTime>| t.filter(|t| t.elapsed().unwrap_or_default() < DROP_LINGER);
        if let Some(at) = lately(spool.last_drop()) {
            let dropped = format!(
                "the spool is full: {} documents dropped so far (sink.spool.on_full: drop_oldest), the last at {}",
                spool.dropped_docs(),
                DateTime::<Utc>::from(at).format("%H:%M:%S")
            );
            trouble = Some(before(trouble, "dropped", dropped, at));
        }
        if let Some(at) = lately(spool.last_loss()) {
            let lost = format!(
                "{} documents in {} spool segments vanished from the disk before they were sent (the folder or its files removed), the last at {}",
                spool.lost_docs(),
                spool.lost_segments(),
                DateTime::<Utc>::from(at).format("%H:%M:%S")
            );
            trouble = Some(before(trouble, "lost", lost, at));
        }
        trouble
    }
}

/// A trouble of `kind` since `at`, said before the one there was.
fn before(was: Option<Trouble>, kind: &'static str, text: String, at: SystemTime) -> Trouble {
    let message = match &was {
        Some(t) => format!("{text}; and {}", t.message),
        None => text,
    };
    Trouble {
        kind,
        message,
        since: at,
    }
}

impl StatsSnapshot {
    /// Why shipping is degraded, if it is: documents are not moving.
    pub fn degraded(&self) -> Option<String> {
        let trouble = self.trouble.as_ref()?;
        let since = self
            .trouble_since
            .map(|t| format!(" since {}", t.format("%H:%M:%S")))
            .unwrap_or_default();
        Some(format!(
            "shipping: {trouble}{since}; {} bytes waiting in the spool, {} documents not on disk yet",
            self.spool_bytes, self.pending
        ))
    }
}

/// A shipper's counters, readable while it runs.
#[derive(Clone)]
pub struct StatsHandle {
    stats: Arc<Stats>,
    spool: Arc<Spool>,
}

impl StatsHandle {
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot(&self.spool)
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// Ships documents: to the spool at once, to Elasticsearch in the background.
pub struct Shipper {
    spool: Arc<Spool>,
    prefix: String,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    sender: Option<tokio::task::JoinHandle<Result<(), ShipError>>>,
    /// Batches are written in chunks of at most this (a segment's size).
    chunk: u64,
}

/// Spool segments are sealed at the bulk size: one segment, one bulk request.
fn segment_bytes(sink: &SinkSettings) -> u64 {
    let bulk = sink.elasticsearch.as_ref().map_or(5 << 20, |e| e.bulk_max_bytes);
    bulk.min(sink.spool.max_bytes / 4).max(1)
}

impl Shipper {
    /// Opens the spool and, when Elasticsearch is configured, starts sending. Must run inside a
    /// tokio runtime.
    pub fn start(sink: &SinkSettings) -> Result<Shipper, ShipError> {
        let chunk = segment_bytes(sink);
        let spool = Arc::new(Spool::open(
            &sink.spool.dir,
            sink.spool.max_bytes,
            sink.spool.on_full,
            chunk,
        )?);
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = watch::channel(false);
        let prefix = sink.index_prefix.clone();
        let sender = match &sink.elasticsearch {
            Some(es_settings) => {
                let es = Es::connect(es_settings, es_settings.timeout)?;
                let opts = SendOptions {
                    prefix: prefix.clone(),
                    max_in_flight: es_settings.max_in_flight,
                    flush_interval: es_settings.flush_interval,
                    templates: TemplateOptions {
                        prefix: prefix.clone(),
                        replicas: es_settings.replicas,
                        ilm_policy: es_settings.ilm_policy.clone(),
                    },
                    give_up_after: None,
                };
                Some(tokio::spawn(sender::run(
                    es,
                    spool.clone(),
                    opts,
                    stats.clone(),
                    stop_rx,
                    false,
                )))
            }
            None => None,
        };
        Ok(Shipper {
            spool,
            prefix,
            stats,
            stop,
            sender,
            chunk,
        })
    }

    /// Hands documents over and writes them to the spool. Once this returns `Ok` they are on
    /// disk: a crash does not lose them.
    pub async fn ship(&self, docs: &[Doc]) -> Result<(), ShipError> {
        self.stats.handed(docs.len() as u64);
        self.spool_batch(docs).await
    }

    /// Writes documents already counted as handed over to the spool, in whole-document chunks
    /// of at most a segment (each one atomic). Waits while there is no room (as `on_full`
    /// says); what another failure keeps off the disk is counted as not spooled.
    pub async fn spool_batch(&self, docs: &[Doc]) -> Result<(), ShipError> {
        let mut buf = Vec::with_capacity((self.chunk as usize).min(docs.len() * 1024 + 64));
        let mut start = 0;
        for (i, d) in docs.iter().enumerate() {
            d.write_bulk(&self.prefix, &mut buf);
            let last = i + 1 == docs.len();
            if buf.len() as u64 >= self.chunk || last {
                if let Err(e) = self.spool.append(&buf).await {
                    let left = (docs.len() - start) as u64;
                    self.stats.not_spooled(left, &format!("{e}"));
                    return Err(e.into());
                }
                self.stats
                    .spooled
                    .fetch_add((i + 1 - start) as u64, Ordering::Relaxed);
                self.stats.progressed(Side::Spool);
                start = i + 1;
                buf.clear();
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot(&self.spool)
    }

    /// The counters, to read while the shipper runs.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            stats: self.stats.clone(),
            spool: self.spool.clone(),
        }
    }

    /// Whether everything handed over has been delivered or dead-lettered.
    pub fn idle(&self) -> Result<bool, ShipError> {
        Ok(self.spool.is_empty()?)
    }

    /// Seals what is pending and sends it, waiting at most `drain` for the spool to empty;
    /// what is left stays on disk for the next start.
    pub async fn close(mut self, drain: Duration) -> StatsSnapshot {
        if let Err(e) = self.spool.seal() {
            self.stats
                .failed_on(Side::Spool, e.kind(), format!("sealing the last segment: {e}"));
        }
        let _ = self.stop.send(true);
        if let Some(sender) = self.sender.take() {
            match tokio::time::timeout(drain, sender).await {
                Ok(Ok(Err(e))) => tracing::error!("{e}"),
                Ok(_) => {}
                Err(_) => tracing::warn!(
                    "{} bytes still in the spool after {}: they are sent at the next start",
                    self.spool.size(),
                    humantime::format_duration(drain)
                ),
            }
        }
        self.stats.snapshot(&self.spool)
    }
}

/// The index prefix a spool's documents were named with (from the first one's `_index`).
pub fn spool_prefix(dir: &Path) -> Option<String> {
    let spool = Spool::open(dir, u64::MAX, OnFull::Block, u64::MAX).ok()?;
    let first = spool.sealed().ok()?.into_iter().next()?;
    let text = std::fs::read_to_string(&first.path).ok()?;
    let action: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    let index = action["index"]["_index"].as_str()?;
    // PREFIX-STREAM-YYYY.MM.DD
    let (rest, _date) = index.rsplit_once('-')?;
    let (prefix, stream) = rest.rsplit_once('-')?;
    Stream::ALL
        .iter()
        .any(|s| s.name() == stream)
        .then(|| prefix.to_string())
}

/// Sends a spool directory (written by a worker without Elasticsearch, or left by one that
/// stopped) until it is empty. Documents a replay already sent are sent again harmlessly.
pub async fn replay(dir: &Path, es: Es, opts: SendOptions) -> Result<StatsSnapshot, ShipError> {
    let spool = Arc::new(Spool::open(dir, u64::MAX, OnFull::Block, u64::MAX)?);
    let queued: u64 = spool
        .sealed()?
        .iter()
        .map(|s| std::fs::read(&s.path).map(|b| count_docs(&b)).unwrap_or(0))
        .sum();
    let stats = Arc::new(Stats::default());
    stats.queued.store(queued, Ordering::Relaxed);
    stats.spooled.store(queued, Ordering::Relaxed);
    let (_stop, stop_rx) = watch::channel(false);
    let result = sender::run(es, spool.clone(), opts, stats.clone(), stop_rx, true).await;
    let snap = stats.snapshot(&spool);
    result.map(|_| snap)
}

/// Sends the documents of a spool's dead-letter file again (their cause fixed); those refused
/// again stay in it, with their new reason.
pub async fn replay_dead_letters(dir: &Path, es: Es, opts: SendOptions) -> Result<StatsSnapshot, ShipError> {
    let spool = Spool::open(dir, u64::MAX, OnFull::Block, u64::MAX)?;
    let stats = Stats::default();
    sender::resend_dead_letters(&es, &spool, &opts, &stats).await?;
    Ok(stats.snapshot(&spool))
}

/// About how large a bulk line pair of a document is (a sample with its dimensions, ~0.6 KB;
/// decisions with their votes, more): an upper estimate.
const DOC_BYTES: u64 = 1100;

/// About how many documents, and bytes, a worker's first tick hands to the ship stage (the
/// whole `lookback` of every metric of the named services, their service documents, the
/// clusters' capacity documents, a decision and target documents per service and group).
/// Services found by discovery are not counted (they are not known before the worker runs).
pub fn first_tick(config: &crate::config::Config) -> (u64, u64) {
    let lookback = config.collect.lookback.as_secs().max(1);
    let samples = |period: Duration| lookback / period.as_secs().max(1);
    let mut docs = 0u64;
    for c in &config.clusters {
        for s in &c.services {
            let metrics = c.metrics_of(Some(s), &config.collect, s.target_group.is_some());
            docs += metrics.iter().map(|m| samples(m.period)).sum::<u64>();
            // The service document, its decision, a few target documents.
            docs += 1 + 1 + 3;
        }
        docs += 1;
    }
    for _ in &config.capacity {
        let metrics = crate::config::capacity_metrics(&config.collect);
        docs += metrics.iter().map(|m| samples(m.period)).sum::<u64>() + 1;
    }
    (docs, docs * DOC_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_ends_only_its_own_trouble() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20, OnFull::Block, 1 << 10).unwrap();
        let stats = Stats::default();
        stats.failed("connect", "Elasticsearch is down".into());
        // Documents still reach the disk: that says nothing of Elasticsearch.
        stats.progressed(Side::Spool);
        let s = stats.snapshot(&spool);
        assert_eq!(s.trouble.as_deref(), Some("Elasticsearch is down"));
        stats.not_spooled(3, "the queue was full");
        let s = stats.snapshot(&spool);
        assert_eq!(
            s.trouble.as_deref(),
            Some("3 documents not spooled: the queue was full; and Elasticsearch is down")
        );
        stats.progressed(Side::Send);
        stats.progressed(Side::Spool);
        let s = stats.snapshot(&spool);
        assert_eq!((s.trouble, s.errors.len()), (None, 2));
    }
}
