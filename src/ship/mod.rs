//! The ship stage: documents to Elasticsearch/OpenSearch, nothing lost.
//!
//! Sits beside evaluate, fed by collect (metrics), evaluate (decisions) and stress. A
//! [`Shipper`] appends every document to the on-disk [`spool::Spool`] first; a background
//! sender seals segments by size (`bulk_max_size`) or age (`flush_interval`) and sends them,
//! `max_in_flight` at a time, each as one bulk request, deleting a segment only when every
//! document in it was delivered or dead-lettered. Elasticsearch down or slow: segments wait on
//! disk (bounded, `on_full`) and go when it is back, also after a restart. With no
//! Elasticsearch configured the spool only fills; `ecscale ship replay DIR --es URL` sends it.
//!
//! Deterministic ids and daily indices chosen by each document's timestamp make sending twice
//! harmless: a retry, a replay after a crash, never duplicates.

pub mod docs;
pub mod elasticsearch;
pub mod spool;
pub mod templates;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use docs::{Doc, Stream};
use elasticsearch::{dead_letter_file, dead_letters, read_answer, Es, EsError};
use spool::{count_docs, Segment, Spool, SpoolError};
use templates::TemplateOptions;

use crate::config::{OnFull, SinkSettings};

/// A shipping failure.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Es(#[from] EsError),
}

/// How the sender behaves.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub prefix: String,
    pub max_in_flight: usize,
    pub flush_interval: Duration,
    pub templates: TemplateOptions,
}

/// Counters of a shipper (or a replay).
#[derive(Debug, Default)]
pub struct Stats {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dead_letter_file: AtomicU64,
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Documents handed to the shipper.
    pub queued: u64,
    /// Documents Elasticsearch took.
    pub delivered: u64,
    /// Document retries (429 and 5xx items).
    pub retried: u64,
    /// Documents refused (mapping, parse errors), written to the dead-letter index or file.
    pub dead_lettered: u64,
    /// Of those, the ones only the dead-letter file holds (the index refused them too).
    pub dead_letter_file: u64,
    /// Documents lost to `on_full: drop_oldest`.
    pub dropped: u64,
    pub requests: u64,
    pub failed_requests: u64,
    /// Bytes waiting in the spool.
    pub spool_bytes: u64,
}

impl Stats {
    fn snapshot(&self, spool: &Spool) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            queued: get(&self.queued),
            delivered: get(&self.delivered),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            dead_letter_file: get(&self.dead_letter_file),
            dropped: spool.dropped_docs(),
            requests: get(&self.requests),
            failed_requests: get(&self.failed_requests),
            spool_bytes: spool.size(),
        }
    }
}

/// Keeps refused documents with their reason: in the dead-letter index when `es` takes them,
/// else in `deadletter.ndjson` in the spool. Counts them either way.
async fn dead_letter(
    es: Option<&Es>,
    spool: &Spool,
    prefix: &str,
    refused: &[elasticsearch::Refused],
    stats: &Stats,
) -> Result<(), SpoolError> {
    let n = refused.len() as u64;
    let letters = Bytes::from(dead_letters(refused, prefix, chrono::Utc::now()));
    let indexed = match es {
        Some(es) => match es.bulk(letters.clone()).await {
            Ok(a) => read_answer(&letters, &a).is_ok_and(|x| x.delivered == n),
            Err(_) => false,
        },
        None => false,
    };
    if !indexed {
        dead_letter_file(spool.dir(), &letters).map_err(|source| SpoolError::Io {
            path: spool.dir().join("deadletter.ndjson"),
            source,
        })?;
        stats.dead_letter_file.fetch_add(n, Ordering::Relaxed);
    }
    stats.dead_lettered.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

/// Sends one claimed segment until every document in it is delivered or dead-lettered; `false`
/// when stopped first (the segment stays in the spool).
async fn deliver(
    es: &Es,
    spool: &Spool,
    seg: &Segment,
    opts: &SendOptions,
    stats: &Stats,
    stop: &watch::Receiver<bool>,
) -> Result<bool, SpoolError> {
    let mut body = Bytes::from(std::fs::read(&seg.path).map_err(|source| SpoolError::Io {
        path: seg.path.clone(),
        source,
    })?);
    let mut backoff = Duration::from_millis(100);
    let mut logged = false;
    loop {
        if body.is_empty() {
            return Ok(true);
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let answer = es.bulk(body.clone()).await;
        let outcome = match answer {
            Ok(a) => read_answer(&body, &a).map_err(|e| EsError::Request {
                url: es.url.clone(),
                message: e,
            }),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(o) => {
                stats.delivered.fetch_add(o.delivered, Ordering::Relaxed);
                if !o.refused.is_empty() {
                    for r in &o.refused {
                        tracing::warn!(
                            "Elasticsearch refused a document ({} {}): dead-lettered",
                            r.status,
                            r.error["reason"].as_str().unwrap_or("no reason given")
                        );
                    }
                    dead_letter(Some(es), spool, &opts.prefix, &o.refused, stats).await?;
                }
                if o.retry_docs == 0 {
                    return Ok(true);
                }
                stats.retried.fetch_add(o.retry_docs, Ordering::Relaxed);
                body = Bytes::from(o.retry);
            }
            Err(e) if !e.retryable() => {
                // Refused as a whole, and it will not change its mind: every document goes to
                // the dead-letter file with the reason, so none is lost and the spool moves on.
                stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                let status = match &e {
                    EsError::Status { status, .. } => *status,
                    _ => 0,
                };
                let refused: Vec<elasticsearch::Refused> = elasticsearch::pairs(&body)
                    .into_iter()
                    .map(|(a, s)| elasticsearch::Refused {
                        action: body.slice(a),
                        source: body.slice(s),
                        status,
                        error: serde_json::json!({"type": "request_refused", "reason": e.to_string()}),
                    })
                    .collect();
                tracing::error!(
                    "{e}: {} documents kept in {}",
                    refused.len(),
                    spool.dir().join("deadletter.ndjson").display()
                );
                dead_letter(None, spool, &opts.prefix, &refused, stats).await?;
                return Ok(true);
            }
            Err(e) => {
                stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                if !logged {
                    tracing::warn!("{e}; the documents wait in the spool and are retried");
                    logged = true;
                }
            }
        }
        if *stop.borrow() {
            return Ok(false);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Records a finished delivery task.
fn note(done: Result<Result<bool, SpoolError>, tokio::task::JoinError>, abandoned: &mut bool) {
    match done {
        Ok(Ok(sent)) => *abandoned |= !sent,
        Ok(Err(e)) => tracing::error!("{e}"),
        Err(e) => tracing::error!("a delivery task failed: {e}"),
    }
}

/// The sender loop: seals by age, keeps up to `max_in_flight` segments in flight. Returns once
/// the spool is empty, if `exit_when_empty` (a replay) or once stopped (a closing shipper, which
/// gives up on Elasticsearch failures: what is left stays on disk).
async fn run_sender(
    es: Es,
    spool: Arc<Spool>,
    opts: SendOptions,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    exit_when_empty: bool,
) -> Result<(), ShipError> {
    let slots = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
    // Each task answers whether its segment went out (false: abandoned at shutdown).
    let mut tasks: JoinSet<Result<bool, SpoolError>> = JoinSet::new();
    let mut abandoned = false;
    let mut templates_ok = false;
    let mut backoff = Duration::from_millis(200);
    loop {
        let stopping = *stop.borrow();
        spool.seal_if_older(if stopping {
            Duration::ZERO
        } else {
            opts.flush_interval
        })?;
        if !templates_ok {
            match templates::ensure(&es, &opts.templates).await {
                Ok(_) => templates_ok = true,
                Err(e) if e.retryable() => {
                    if stopping {
                        return Ok(());
                    }
                    tracing::warn!("cannot install the index templates yet: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            let Some(seg) = spool.claim()? else {
                drop(permit);
                break;
            };
            let (es, spool, opts, stats, stop) = (
                es.clone(),
                spool.clone(),
                opts.clone(),
                stats.clone(),
                stop.clone(),
            );
            tasks.spawn(async move {
                let _permit = permit;
                if deliver(&es, &spool, &seg, &opts, &stats, &stop).await? {
                    spool.remove(&seg)?;
                    Ok(true)
                } else {
                    spool.release(&seg);
                    Ok(false)
                }
            });
        }
        while let Some(done) = tasks.try_join_next() {
            note(done, &mut abandoned);
        }
        if stopping && abandoned && tasks.is_empty() {
            // Elasticsearch failed during shutdown: the rest waits on disk for the next start.
            return Ok(());
        }
        if (stopping || exit_when_empty) && tasks.is_empty() && spool.is_empty()? {
            return Ok(());
        }
        tokio::select! {
            _ = spool.changed.notified() => {}
            _ = stop.changed() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => note(done, &mut abandoned),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Ships documents: to the spool at once, to Elasticsearch in the background.
pub struct Shipper {
    spool: Arc<Spool>,
    prefix: String,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    sender: Option<tokio::task::JoinHandle<Result<(), ShipError>>>,
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
        let spool = Arc::new(Spool::open(
            &sink.spool.dir,
            sink.spool.max_bytes,
            sink.spool.on_full,
            segment_bytes(sink),
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
                };
                Some(tokio::spawn(run_sender(
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
        })
    }

    /// Hands documents over. Once this returns they are on disk: a crash does not lose them.
    pub async fn ship(&self, docs: &[Doc]) -> Result<(), ShipError> {
        if docs.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(docs.len() * 1024);
        docs::write_bulk_all(docs, &self.prefix, &mut buf);
        self.spool.append(&buf).await?;
        self.stats.queued.fetch_add(docs.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot(&self.spool)
    }

    /// Whether everything handed over has been delivered or dead-lettered.
    pub fn idle(&self) -> Result<bool, ShipError> {
        Ok(self.spool.is_empty()?)
    }

    /// Seals what is pending and sends it, waiting at most `drain` for the spool to empty;
    /// what is left stays on disk for the next start.
    pub async fn close(mut self, drain: Duration) -> StatsSnapshot {
        let _ = self.spool.seal();
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
    let (_stop, stop_rx) = watch::channel(false);
    run_sender(es, spool.clone(), opts, stats.clone(), stop_rx, true).await?;
    Ok(stats.snapshot(&spool))
}
