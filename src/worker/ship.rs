//! The worker's ship stage: each tick's documents go through a bounded queue to a task that
//! writes them to the spool, so a full disk or a slow Elasticsearch never holds a tick up.
//!
//! What is promised, and counted ([`crate::ship::StatsSnapshot`]):
//! - every document handed over is spooled, or counted as not spooled (the queue was full, the
//!   disk refused it until shutdown), never dropped silently;
//! - a metric sample counts as shipped (`shipped_until`) only once it is on disk: a sample that
//!   was not spooled is read again from CloudWatch at the next tick (or the next start), which
//!   still holds it, and sent then (its id makes it the same document);
//! - at shutdown, what could not reach the disk within the grace is counted as not spooled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use crate::ship::docs::Doc;
use crate::ship::{Shipper, Stats, StatsHandle, StatsSnapshot};

/// Ticks of documents the queue holds while the spool cannot take them.
pub const SHIP_QUEUE_TICKS: usize = 16;

/// One tick's documents, and the newest sample of each series among them (`target:id`).
pub struct ShipBatch {
    pub docs: Vec<Doc>,
    pub marks: Vec<(String, DateTime<Utc>)>,
}

type Marks = Arc<Mutex<BTreeMap<String, DateTime<Utc>>>>;

/// The ticks' side of the ship stage.
#[derive(Clone)]
pub struct ShipQueue {
    tx: mpsc::Sender<ShipBatch>,
    stats: Arc<Stats>,
    /// Per series, the newest sample known to be on disk.
    durable: Marks,
}

impl ShipQueue {
    /// Queues a tick's documents; `false` when the ship stage is too far behind (the batch is
    /// counted as not spooled, its samples are sent again next tick).
    pub(crate) fn send(&self, batch: ShipBatch, metrics: &Metrics) -> bool {
        let n = batch.docs.len() as u64;
        self.stats.handed(n);
        match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(_) => {
                self.stats.not_spooled(
                    n,
                    &format!(
                        "the ship stage is {SHIP_QUEUE_TICKS} ticks behind (the spool cannot take them: see its trouble); this tick's metric samples are read again from CloudWatch next tick; scaling goes on"
                    ),
                );
                metrics.error("ship");
                false
            }
        }
    }

    /// Per series, the newest sample on disk.
    pub(crate) fn durable(&self) -> BTreeMap<String, DateTime<Utc>> {
        self.durable.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The task that spools the queued batches, and the shipper's counters.
pub struct ShipStage {
    task: JoinHandle<Shipper>,
    stats: StatsHandle,
}

impl ShipStage {
    /// Starts spooling what the returned queue receives.
    pub fn start(shipper: Shipper) -> (ShipStage, ShipQueue) {
        let stats = shipper.stats_handle();
        let (tx, mut rx) = mpsc::channel::<ShipBatch>(SHIP_QUEUE_TICKS);
        let durable: Marks = Arc::default();
        let marks = durable.clone();
        let task = tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                // Waits while the spool has no room; another failure is counted inside.
                if shipper.spool_batch(&batch.docs).await.is_ok() {
                    let mut m = marks.lock().unwrap_or_else(|p| p.into_inner());
                    for (k, t) in batch.marks {
                        let e = m.entry(k).or_insert(t);
                        *e = (*e).max(t);
                    }
                }
            }
            shipper
        });
        let queue = ShipQueue {
            tx,
            stats: stats.stats().clone(),
            durable,
        };
        (
            ShipStage {
                task,
                stats: stats.clone(),
            },
            queue,
        )
    }

    /// The counters, live.
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Once every queue is dropped: spools what is queued, then sends what it can, by
    /// `deadline`. What is not on disk then is counted as not spooled.
    pub async fn finish(mut self, deadline: tokio::time::Instant) -> StatsSnapshot {
        match tokio::time::timeout_at(deadline, &mut self.task).await {
            Ok(Ok(shipper)) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                shipper.close(left).await
            }
            Ok(Err(e)) => self.give_up(&format!("the ship stage failed: {e}")),
            Err(_) => {
                self.task.abort();
                self.give_up(
                    "the spool could not take them before the shutdown grace ended (their metric samples are read again from CloudWatch at the next start)",
                )
            }
        }
    }

    fn give_up(&self, why: &str) -> StatsSnapshot {
        let pending = self.stats.snapshot().pending;
        if pending > 0 {
            self.stats.stats().not_spooled(pending, why);
        }
        self.stats.snapshot()
    }
}
