//! Counting what the worker asks of AWS: calls per operation, attempts (retries included), and
//! CloudWatch metrics requested, which is what GetMetricData is billed on.
//!
//! One [`ApiMeter`] is shared by every client (the AWS SDK clients feed it through an
//! interceptor; the simulator feeds it directly). A tick reads it before and after and reports
//! the difference as its [`ApiUsage`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// GetMetricData price: $0.01 per 1,000 metrics requested.
pub const USD_PER_METRIC_REQUESTED: f64 = 0.01 / 1000.0;

/// Counts for one operation, e.g. `ECS.DescribeServices`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCount {
    /// Calls made by ecscale.
    pub calls: u64,
    /// HTTP requests sent for them: `attempts - calls` were retries.
    pub attempts: u64,
    /// Attempts that got an error response or none at all.
    pub failed_attempts: u64,
}

/// What one tick (or one `collect --once`) asked of AWS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiUsage {
    /// By `Service.Operation`.
    pub operations: BTreeMap<String, OpCount>,
    pub cloudwatch_metrics_requested: u64,
    /// `cloudwatch_metrics_requested` at the GetMetricData price.
    pub cloudwatch_cost_usd: f64,
}

impl ApiUsage {
    /// Calls of one operation (`ECS.DescribeServices`).
    pub fn calls(&self, operation: &str) -> u64 {
        self.operations.get(operation).map_or(0, |c| c.calls)
    }

    pub fn total_calls(&self) -> u64 {
        self.operations.values().map(|c| c.calls).sum()
    }

    pub fn total_retries(&self) -> u64 {
        self.operations
            .values()
            .map(|c| c.attempts.saturating_sub(c.calls))
            .sum()
    }

    /// What was counted after `before`.
    pub fn since(&self, before: &ApiUsage) -> ApiUsage {
        difference(&self.operations, self.cloudwatch_metrics_requested, before)
    }
}

/// The counters `operations` and `metrics` hold beyond `before`'s.
fn difference(operations: &BTreeMap<String, OpCount>, metrics: u64, before: &ApiUsage) -> ApiUsage {
    let mut out = BTreeMap::new();
    for (op, now) in operations {
        let then = before.operations.get(op).copied().unwrap_or_default();
        let d = OpCount {
            calls: now.calls - then.calls.min(now.calls),
            attempts: now.attempts - then.attempts.min(now.attempts),
            failed_attempts: now.failed_attempts - then.failed_attempts.min(now.failed_attempts),
        };
        if d != OpCount::default() {
            out.insert(op.clone(), d);
        }
    }
    let metrics = metrics.saturating_sub(before.cloudwatch_metrics_requested);
    ApiUsage {
        operations: out,
        cloudwatch_metrics_requested: metrics,
        cloudwatch_cost_usd: metrics as f64 * USD_PER_METRIC_REQUESTED,
    }
}

#[derive(Default)]
struct Counts {
    operations: BTreeMap<String, OpCount>,
    metrics_requested: u64,
}

impl Counts {
    /// Counts on `operation`'s counters (its name copied only the first time it is counted).
    fn count(&mut self, operation: &str, f: impl FnOnce(&mut OpCount)) {
        match self.operations.get_mut(operation) {
            Some(c) => f(c),
            None => {
                let mut c = OpCount::default();
                f(&mut c);
                self.operations.insert(operation.to_string(), c);
            }
        }
    }
}

/// A shared, cheap-to-clone counter of API use.
#[derive(Clone, Default)]
pub struct ApiMeter(Arc<Mutex<Counts>>);

impl std::fmt::Debug for ApiMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ApiMeter").field(&self.usage()).finish()
    }
}

impl ApiMeter {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        // A panic while holding this lock cannot leave the counters inconsistent (each update
        // is one field), so a poisoned lock is still good to read.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A call of `operation` begins.
    pub fn call(&self, operation: &str) {
        self.lock().count(operation, |c| c.calls += 1);
    }

    /// One attempt of `operation` ended.
    pub fn attempt(&self, operation: &str, failed: bool) {
        self.lock().count(operation, |c| {
            c.attempts += 1;
            c.failed_attempts += u64::from(failed);
        });
    }

    /// A GetMetricData call asked for `n` metrics.
    pub fn metrics_requested(&self, n: u64) {
        self.lock().metrics_requested += n;
    }

    /// The metrics requested from CloudWatch since the meter was made (what [`ApiMeter::usage`]
    /// counts, without a copy of every operation's counters).
    pub fn metrics_requested_total(&self) -> u64 {
        self.lock().metrics_requested
    }

    /// What was counted after `before` (as `usage().since(before)`, without a copy of every
    /// operation's counters first).
    pub fn since(&self, before: &ApiUsage) -> ApiUsage {
        let c = self.lock();
        difference(&c.operations, c.metrics_requested, before)
    }

    /// Everything counted since the meter was made.
    pub fn usage(&self) -> ApiUsage {
        let c = self.lock();
        ApiUsage {
            operations: c.operations.clone(),
            cloudwatch_metrics_requested: c.metrics_requested,
            cloudwatch_cost_usd: c.metrics_requested as f64 * USD_PER_METRIC_REQUESTED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_since_is_the_difference_and_prices_metrics() {
        let meter = ApiMeter::default();
        meter.call("ECS.ListServices");
        meter.attempt("ECS.ListServices", false);
        let before = meter.usage();
        meter.call("ECS.DescribeServices");
        meter.attempt("ECS.DescribeServices", true);
        meter.attempt("ECS.DescribeServices", false);
        meter.call("CloudWatch.GetMetricData");
        meter.attempt("CloudWatch.GetMetricData", false);
        meter.metrics_requested(2500);
        assert_eq!(meter.metrics_requested_total(), 2500);
        assert_eq!(meter.usage().cloudwatch_metrics_requested, 2500);
        let d = meter.usage().since(&before);
        assert_eq!(
            meter.since(&before),
            d,
            "the meter's own difference is the copy's"
        );
        assert_eq!(d.calls("ECS.ListServices"), 0);
        assert!(!d.operations.contains_key("ECS.ListServices"));
        assert_eq!(
            d.operations["ECS.DescribeServices"],
            OpCount {
                calls: 1,
                attempts: 2,
                failed_attempts: 1
            }
        );
        assert_eq!(d.total_calls(), 2);
        assert_eq!(d.total_retries(), 1);
        assert_eq!(d.cloudwatch_metrics_requested, 2500);
        assert!((d.cloudwatch_cost_usd - 0.025).abs() < 1e-12);
    }
}
