//! The actuate stage: the engine decides, the actuators apply.
//!
//! Last in the data flow. [`ecs_service`] sets ECS service desired counts from the engine's
//! [`crate::model::Decision`]s; [`capacity`] sizes the Auto Scaling groups behind the clusters
//! from the tasks' reservations ([`binpack`]) and takes instances away safely (drain, then
//! terminate). Both say what they did as an [`Applied`], which the worker records, counts and
//! ships; neither retries a failed call on its own within a tick (the SDK already did): the next
//! tick decides again from fresh state, and every call sets an absolute number, so a retry can
//! never double an action.
//!
//! Every mutating call first asks the [`Fence`] whether this worker may still act (it is the
//! leader, and no shutdown forbids it); a dry run makes no mutating call at all.

pub mod binpack;
pub mod capacity;
pub mod ecs_service;
pub mod placement;
pub mod task_group;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::api::{ApiError, ErrorKind};

/// What an actuator did with one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Applied {
    /// The count was already right: no call made.
    Unchanged,
    /// Changed from one count to another.
    Updated { from: u32, to: u32 },
    /// A dry run: this is what would have been set.
    DryRun { from: u32, to: u32 },
    /// Not applied, on purpose (a rollout in progress, another autoscaler, no leadership).
    Refused { reason: String },
    /// The call failed; the next tick tries again from fresh state.
    Failed { kind: ErrorKind, error: String },
}

impl Applied {
    /// The name used in metrics and documents: `updated`, `refused`, ...
    pub fn result(&self) -> &'static str {
        match self {
            Applied::Unchanged => "unchanged",
            Applied::Updated { .. } => "updated",
            Applied::DryRun { .. } => "dry_run",
            Applied::Refused { .. } => "refused",
            Applied::Failed { .. } => "failed",
        }
    }

    /// Whether the change took effect (which starts the cooldowns).
    pub fn took_effect(&self) -> bool {
        matches!(self, Applied::Updated { .. })
    }

    pub fn failed(e: &ApiError) -> Self {
        Applied::Failed {
            kind: e.kind,
            error: e.to_string(),
        }
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Applied::Unchanged => f.write_str("unchanged"),
            Applied::Updated { from, to } => write!(f, "updated {from} → {to}"),
            Applied::DryRun { from, to } => write!(f, "dry run: would set {from} → {to}"),
            Applied::Refused { reason } => write!(f, "refused: {reason}"),
            Applied::Failed { error, .. } => write!(f, "failed: {error}"),
        }
    }
}

/// Whether this worker may make mutating calls right now.
pub trait Fence: Send + Sync {
    /// `Err(why)` when it may not: it is not (or no longer surely) the leader.
    fn check(&self) -> Result<(), String>;
}

/// A single worker: always allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Alone;

impl Fence for Alone {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A token bucket shared by every caller: at most `rate` calls per second sustained, with a
/// burst of `burst`. ECS's own bucket for UpdateService is 5 per second (burst 50), shared with
/// everything else in the account that updates services, so the default stays well inside it.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        let rate = rate.max(0.001);
        let burst = burst.max(1.0);
        RateLimiter {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// No limit at all (a simulator on a virtual clock, where real seconds mean nothing).
    pub fn unlimited() -> Self {
        RateLimiter {
            rate: f64::INFINITY,
            burst: f64::INFINITY,
            state: Mutex::new((f64::INFINITY, Instant::now())),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        if self.rate.is_infinite() {
            return;
        }
        let wait = {
            // A poisoned lock only means another caller panicked mid-update; the bucket's
            // numbers are still usable.
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (tokens, last) = *s;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
            // Take the token now (possibly going negative): later callers queue behind it.
            *s = (tokens - 1.0, now);
            if tokens >= 1.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64((1.0 - tokens) / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_allows_the_burst_then_the_rate() {
        let limiter = RateLimiter::new(5.0, 10.0);
        let start = Instant::now();
        for _ in 0..10 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        for _ in 0..10 {
            limiter.acquire().await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((took - 2.0).abs() < 0.01, "10 more at 5/s take 2 s, took {took}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_bucket() {
        let limiter = std::sync::Arc::new(RateLimiter::new(5.0, 5.0));
        let start = Instant::now();
        let calls = (0..25).map(|_| {
            let l = limiter.clone();
            async move {
                l.acquire().await;
                start.elapsed()
            }
        });
        let mut times = futures::future::join_all(calls).await;
        times.sort();
        // 5 at once, then one every 200 ms: the 25th at 4 s.
        let last = times.last().copied().unwrap_or_default().as_secs_f64();
        assert!((last - 4.0).abs() < 0.01, "{last}");
        let within_first_second = times.iter().filter(|t| t.as_secs_f64() <= 1.0).count();
        assert_eq!(within_first_second, 10);
    }

    #[test]
    fn applied_names() {
        assert_eq!(Applied::Updated { from: 1, to: 2 }.result(), "updated");
        assert!(Applied::Updated { from: 1, to: 2 }.took_effect());
        assert!(!Applied::DryRun { from: 1, to: 2 }.took_effect());
        assert_eq!(
            Applied::DryRun { from: 1, to: 2 }.to_string(),
            "dry run: would set 1 → 2"
        );
    }
}
