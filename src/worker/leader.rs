//! One leader among several workers: a lease in DynamoDB.
//!
//! The lease is one item (`key = "leader"`) holding the holder's id, when the lease expires
//! (wall clock, epoch milliseconds) and a fencing token that grows by one at every change of
//! holder. All writes are conditional:
//! - **acquire**: only if there is no holder or the lease expired; sets the holder and the
//!   expiry, increments the token;
//! - **renew** (every third of the lease): only if this worker still holds it with the same
//!   token;
//! - **release** (at shutdown): only if still held; expires it at once, so a follower takes over
//!   without waiting out the lease.
//!
//! Two leaders never act at once because the holder stops acting *before* anyone else can
//! acquire: it counts its lease from the moment it *sent* the renewal, on its monotonic clock,
//! and stops a safety margin (a fifth of the lease) before that runs out, whereas a follower
//! acquires only once the expiry written in the item has passed on its own clock. This holds as
//! long as the clocks of the workers disagree by less than the margin (3 s for the default 15 s
//! lease; NTP keeps EC2 clocks within milliseconds). The fencing token travels with every state
//! write, so a deposed leader that wakes up late cannot overwrite its successor's state either.
//! A follower tries every tenth of the lease, so it takes over within the lease (plus a tenth)
//! of the leader's last renewal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::Utc;
use tokio::time::Instant;

use super::state::is_conditional_failure;
use crate::actuate::Fence;

const LEASE_KEY: &str = "leader";

#[derive(Debug, Default)]
struct Held {
    /// The token of our current tenure.
    fencing: Option<u64>,
    /// We may act until then.
    until: Option<Instant>,
}

/// This worker's side of the lease.
pub struct Lease {
    client: aws_sdk_dynamodb::Client,
    table: String,
    pub id: String,
    lease: Duration,
    held: Mutex<Held>,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// We hold it (just acquired: `new` is true) with this fencing token.
    Leading { fencing: u64, new: bool },
    /// Someone else does.
    Following,
    /// Lost it: another worker took it over.
    Lost,
    /// DynamoDB did not answer; whatever we had runs out on its own.
    Error(String),
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl Lease {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, id: &str, lease: Duration) -> Self {
        Lease {
            client,
            table: table.to_string(),
            id: id.to_string(),
            lease,
            held: Mutex::new(Held::default()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn margin(&self) -> Duration {
        self.lease / 5
    }

    /// The fencing token, while leading.
    pub fn fencing(&self) -> Option<u64> {
        let h = self.held();
        h.until.filter(|u| *u > Instant::now()).and(h.fencing)
    }

    pub fn is_leader(&self) -> bool {
        self.fencing().is_some()
    }

    /// How often [`Lease::step`] should run: a third of the lease while leading (renewal), a
    /// tenth while following (takeover).
    pub fn period(&self) -> Duration {
        if self.is_leader() {
            self.lease / 3
        } else {
            (self.lease / 10).max(Duration::from_millis(100))
        }
    }

    /// Renews the lease if we hold it, else tries to acquire it.
    pub async fn step(&self) -> LeaseStep {
        let sent = Instant::now();
        let now_ms = Utc::now().timestamp_millis();
        let expires = now_ms + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let ours = self.held().fencing;
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(LEASE_KEY.into()));
        let result = match ours {
            Some(f) => {
                update
                    .update_expression("SET expires = :exp")
                    .condition_expression("holder = :me AND fencing = :f")
                    .expression_attribute_values(":me", AttributeValue::S(self.id.clone()))
                    .expression_attribute_values(":f", n(f))
                    .expression_attribute_values(":exp", n(expires))
                    .return_values(ReturnValue::AllNew)
                    .send()
                    .await
            }
            None => {
                update
                    .update_expression("SET holder = :me, expires = :exp ADD fencing :one")
                    .condition_expression("attribute_not_exists(holder) OR expires < :now")
                    .expression_attribute_values(":me", AttributeValue::S(self.id.clone()))
                    .expression_attribute_values(":exp", n(expires))
                    .expression_attribute_values(":now", n(now_ms))
                    .expression_attribute_values(":one", n(1))
                    .return_values(ReturnValue::AllNew)
                    .send()
                    .await
            }
        };
        match result {
            Ok(out) => {
                let fencing = out
                    .attributes()
                    .and_then(|a| a.get("fencing"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let mut h = self.held();
                h.fencing = Some(fencing);
                h.until = Some(sent + self.lease - self.margin());
                LeaseStep::Leading {
                    fencing,
                    new: ours.is_none(),
                }
            }
            Err(e) if is_conditional_failure(&e) => {
                let mut h = self.held();
                *h = Held::default();
                if ours.is_some() {
                    LeaseStep::Lost
                } else {
                    LeaseStep::Following
                }
            }
            Err(e) => LeaseStep::Error(format!(
                "DynamoDB.UpdateItem on lease table {}: {}",
                self.table,
                crate::aws::error_chain(&e)
            )),
        }
    }

    /// Gives the lease up (at shutdown), so a follower takes over at once.
    pub async fn release(&self) {
        let Some(f) = self.held().fencing else {
            return;
        };
        *self.held() = Held::default();
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(LEASE_KEY.into()))
            .update_expression("SET expires = :zero")
            .condition_expression("holder = :me AND fencing = :f")
            .expression_attribute_values(":me", AttributeValue::S(self.id.clone()))
            .expression_attribute_values(":f", n(f))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match r {
            Ok(_) => tracing::info!("released the leader lease (fencing token {f})"),
            Err(e) => tracing::warn!(
                "could not release the leader lease, a follower takes over when it expires: {}",
                crate::aws::error_chain(&e)
            ),
        }
    }

    /// Keeps the lease (or tries to get it) until `stop`; logs changes of leadership.
    pub async fn keep(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        on_change: impl Fn(bool) + Send,
    ) {
        let mut leading = false;
        loop {
            let step = self.step().await;
            match &step {
                LeaseStep::Leading { fencing, new: true } => {
                    tracing::warn!(id = %self.id, "leading: acquired the lease in {} (fencing token {fencing})", self.table);
                }
                LeaseStep::Lost => tracing::warn!(id = %self.id, "lost the lease: another worker leads now"),
                LeaseStep::Error(e) => tracing::warn!(id = %self.id, "lease: {e}"),
                _ => {}
            }
            let now_leading = self.is_leader();
            if now_leading != leading {
                leading = now_leading;
                on_change(leading);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.period()) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// The fence of a worker with a lease: it may act while its lease runs.
pub struct LeaseFence(pub Arc<Lease>);

impl Fence for LeaseFence {
    fn check(&self) -> Result<(), String> {
        if self.0.is_leader() {
            Ok(())
        } else {
            Err(format!(
                "{} is not the leader (or its lease is about to run out): no action",
                self.0.id
            ))
        }
    }
}
