//! ecscale's own health as CloudWatch metrics, without an API call: with `ECSCALE_EMF_STACK`,
//! one line in CloudWatch's Embedded Metric Format on stdout after every tick. In ECS the
//! `awslogs` driver sends it to the task's log group, and CloudWatch Logs turns it into metrics
//! (namespace `ecscale`, dimension `Stack`) that the stack's alarms read
//! (`deploy/ecscale.cfn.yaml`): no tick, no leader, the shipper degraded, a failed reload, AWS
//! attempts failing.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::metrics::Metrics;

/// The namespace of the metrics.
pub const NAMESPACE: &str = "ecscale";
/// The metrics each line carries.
pub const METRICS: [&str; 6] = [
    "Ticks",
    "Leading",
    "ShipDegraded",
    "ReloadFailed",
    "AwsAttempts",
    "AwsFailedAttempts",
];

/// Writes the lines: AWS attempts are counted since the line before.
#[derive(Debug)]
pub struct Emf {
    stack: String,
    attempts: (u64, u64),
}

impl Emf {
    pub fn new(stack: &str) -> Self {
        Emf {
            stack: stack.to_string(),
            attempts: (0, 0),
        }
    }

    /// The line for a tick that ended at `at`.
    pub fn line(&mut self, metrics: &Metrics, at: DateTime<Utc>) -> String {
        let (attempts, failed) = metrics.aws_attempts();
        let (a0, f0) = std::mem::replace(&mut self.attempts, (attempts, failed));
        let reload_failed = metrics.reload_status().is_some_and(|r| !r.mistakes.is_empty());
        let described: Vec<_> = METRICS
            .iter()
            .map(|m| json!({"Name": m, "Unit": "Count"}))
            .collect();
        json!({
            "_aws": {
                "Timestamp": at.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Stack"]],
                    "Metrics": described,
                }],
            },
            "Stack": self.stack,
            "Ticks": 1,
            "Leading": u8::from(metrics.leading()),
            "ShipDegraded": u8::from(metrics.ship_degraded()),
            "ReloadFailed": u8::from(reload_failed),
            "AwsAttempts": attempts.saturating_sub(a0),
            "AwsFailedAttempts": failed.saturating_sub(f0),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::ApiMeter;
    use std::time::Duration;

    #[test]
    fn a_line_is_embedded_metric_format_with_attempts_since_the_last() {
        let meter = ApiMeter::default();
        let metrics = Metrics::new(meter.clone(), Duration::from_secs(60));
        metrics.set_leader(true);
        let mut emf = Emf::new("prod");
        meter.call("ECS.DescribeServices");
        meter.attempt("ECS.DescribeServices", true);
        meter.attempt("ECS.DescribeServices", false);
        let at: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        let v: serde_json::Value = serde_json::from_str(&emf.line(&metrics, at)).unwrap();
        let spec = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_796_558_400_000i64);
        assert_eq!(spec["Namespace"], "ecscale");
        assert_eq!(spec["Dimensions"], json!([["Stack"]]));
        for m in METRICS {
            assert!(v[m].is_number(), "{m} in {v}");
            assert!(spec["Metrics"].as_array().unwrap().iter().any(|d| d["Name"] == m));
        }
        assert_eq!(
            (
                &v["Stack"],
                &v["Leading"],
                &v["AwsAttempts"],
                &v["AwsFailedAttempts"]
            ),
            (&json!("prod"), &json!(1), &json!(2), &json!(1))
        );
        meter.attempt("ECS.DescribeServices", false);
        let v: serde_json::Value = serde_json::from_str(&emf.line(&metrics, at)).unwrap();
        assert_eq!(
            (&v["AwsAttempts"], &v["AwsFailedAttempts"]),
            (&json!(1), &json!(0))
        );
        assert_eq!((&v["ShipDegraded"], &v["ReloadFailed"]), (&json!(0), &json!(0)));
    }
}
