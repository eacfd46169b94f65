//! What a closed-loop run records and judges, shared by the worker's run and the oracle's: a
//! change of a desired count, the load over time, and the SLO test of a minute.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A change of a desired count, by whoever made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRow {
    pub at: DateTime<Utc>,
    /// `production/web`, `asg/NAME`.
    pub target: String,
    pub from: u32,
    pub to: u32,
    /// The rule (or `baseline`).
    pub rule: Option<String>,
    pub reason: String,
}

/// The load in requests per second at a simulated time.
pub type LoadFn<'a> = dyn Fn(DateTime<Utc>) -> f64 + 'a;

/// The SLO: p95 latency at most `slo_ms`, and at most 1 % of requests failed.
pub fn minute_violates(p95_ms: Option<f64>, failed_share: f64, slo_ms: f64) -> bool {
    failed_share > 0.01 || p95_ms.is_some_and(|p| p > slo_ms)
}
