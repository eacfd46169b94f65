//! The documents ecscale ships, and where each goes.
//!
//! Three kinds of index, daily (`PREFIX-STREAM-YYYY.MM.DD`, by the document's own `@timestamp`):
//! - `metrics`: `kind: sample` (a CloudWatch datapoint), `service` (counts per tick),
//!   `capacity` (a cluster's EC2 CPU/memory, registered and reserved), `usage` (API calls and
//!   CloudWatch cost per tick), `target` (a policy's target value, for "metric vs target");
//! - `decisions`: one per target per tick, with the reason, inputs and votes;
//! - `stress`: one per second of a load test.
//!
//! Every document has a deterministic `_id` made of what it describes (`sample:prod/web:cpu:
//! 1764068400`), and its index follows from its timestamp: sending it twice overwrites it, so a
//! retry or a replay never duplicates.
//!
//! A [`Doc`] holds its source already serialized: documents are written once, straight from the
//! borrowed data they describe (no intermediate JSON tree), which is most of the shipper's CPU.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::model::{
    ClusterSnapshot, Decision, Series, ServiceState, Snapshot, StressSample, TargetKey, Vote,
};
use crate::policy::{RuleSpec, TargetPolicy};

/// Which index family a document belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Metrics,
    Decisions,
    Stress,
    /// Documents Elasticsearch refused, with the reason.
    DeadLetter,
}

impl Stream {
    pub const ALL: [Stream; 4] = [
        Stream::Metrics,
        Stream::Decisions,
        Stream::Stress,
        Stream::DeadLetter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stream::Metrics => "metrics",
            Stream::Decisions => "decisions",
            Stream::Stress => "stress",
            Stream::DeadLetter => "deadletter",
        }
    }

    /// The daily index of a document of this stream.
    pub fn index(self, prefix: &str, at: DateTime<Utc>) -> String {
        format!("{prefix}-{}-{}", self.name(), at.format("%Y.%m.%d"))
    }
}

/// One document, ready for the bulk API.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub stream: Stream,
    pub id: String,
    pub at: DateTime<Utc>,
    /// The source, serialized, `@timestamp` included.
    pub source: Vec<u8>,
}

/// `{"@timestamp":"…",` followed by the fields of `body` (a JSON object).
fn with_timestamp(at: DateTime<Utc>, body: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"@timestamp\":\"");
    out.extend_from_slice(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).as_bytes());
    out.push(b'"');
    let start = out.len();
    // Serializing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, body);
    match out.get(start..start + 2) {
        // `{}`: nothing to add.
        Some(b"{}") => {
            out.truncate(start);
            out.push(b'}');
        }
        // `{…`: the timestamp comes first, then its fields.
        Some([b'{', _]) => out[start] = b',',
        // Not an object: keep it under `value` (never happens for ecscale's documents).
        _ => {
            let body = out.split_off(start);
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(&body);
            out.push(b'}');
        }
    }
    out
}

impl Doc {
    /// A document from a JSON value; its `@timestamp` is set from `at` (one the value carries
    /// is replaced).
    pub fn new(stream: Stream, id: String, at: DateTime<Utc>, mut source: Value) -> Self {
        if let Value::Object(m) = &mut source {
            m.remove("@timestamp");
        }
        Doc::serialized(stream, id, at, &source)
    }

    /// A document from anything that serializes as a JSON object.
    pub fn serialized(stream: Stream, id: String, at: DateTime<Utc>, body: &impl Serialize) -> Self {
        Doc {
            stream,
            id,
            at,
            source: with_timestamp(at, body),
        }
    }

    /// The source, parsed (for tests and inspection).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.source).unwrap_or(Value::Null)
    }

    /// The two bulk lines (`index` action, then the source), newline-terminated.
    pub fn write_bulk(&self, prefix: &str, out: &mut Vec<u8>) {
        write_bulk_all(std::slice::from_ref(self), prefix, out);
    }
}

/// The bulk lines of many documents. The index name is worked out once per stream and day, not
/// per document (this is the shipper's hot path).
pub fn write_bulk_all(docs: &[Doc], prefix: &str, out: &mut Vec<u8>) {
    let mut cache: Option<(Stream, i64, String)> = None;
    for d in docs {
        let day = d.at.timestamp().div_euclid(86_400);
        if !matches!(&cache, Some((s, dd, _)) if *s == d.stream && *dd == day) {
            cache = Some((d.stream, day, d.stream.index(prefix, d.at)));
        }
        let index = cache.as_ref().map_or("", |c| c.2.as_str());
        // Index names are lowercase letters, digits, `-`, `_`, `.`: nothing to escape.
        out.extend_from_slice(b"{\"index\":{\"_index\":\"");
        out.extend_from_slice(index.as_bytes());
        out.extend_from_slice(b"\",\"_id\":");
        let _ = serde_json::to_writer(&mut *out, &d.id);
        out.extend_from_slice(b"}}\n");
        out.extend_from_slice(&d.source);
        out.push(b'\n');
    }
}

/// Where a document's target is.
#[derive(Serialize)]
struct TargetFields<'a> {
    target: String,
    target_kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_scaling_group: Option<&'a str>,
}

fn target_fields(t: &TargetKey) -> TargetFields<'_> {
    match t {
        TargetKey::Service { cluster, service } => TargetFields {
            target: t.to_string(),
            target_kind: "service",
            cluster: Some(cluster),
            service: Some(service),
            auto_scaling_group: None,
        },
        TargetKey::AutoScalingGroup { name } => TargetFields {
            target: t.to_string(),
            target_kind: "auto_scaling_group",
            cluster: None,
            service: None,
            auto_scaling_group: Some(name),
        },
        TargetKey::TaskGroup { cluster, group } => TargetFields {
            target: t.to_string(),
            target_kind: "task_group",
            cluster: Some(cluster),
            service: Some(group),
            auto_scaling_group: None,
        },
    }
}

#[derive(Serialize)]
struct SampleDoc<'a> {
    kind: &'static str,
    target: &'a str,
    cluster: &'a str,
    service: &'a str,
    metric: &'a str,
    namespace: &'a str,
    metric_name: &'a str,
    stat: &'a str,
    unit: Option<&'a str>,
    period_secs: u64,
    dimensions: &'a BTreeMap<String, String>,
    value: f64,
}

#[derive(Serialize)]
struct ServiceDoc<'a> {
    kind: &'static str,
    target: &'a str,
    cluster: &'a str,
    service: &'a str,
    status: &'a str,
    desired: u32,
    running: u32,
    pending: u32,
    rollout: String,
    deployments: usize,
    task_cpu: Option<u32>,
    task_memory_mib: Option<u32>,
}

/// The `metrics` documents of one collection pass. Datapoints at or before `shipped_until` (per
/// series key `cluster/service:metric`, from earlier passes) are skipped: each pass re-reads the
/// whole lookback window.
pub fn snapshot_docs(s: &Snapshot, shipped_until: &dyn Fn(&str) -> Option<DateTime<Utc>>) -> Vec<Doc> {
    let mut out = Vec::new();
    for series in &s.series {
        sample_docs(series, shipped_until, &mut out);
    }
    for c in &s.clusters {
        for v in &c.services {
            out.push(service_doc(v, s.taken_at));
        }
        out.push(capacity_doc(c, s.taken_at));
    }
    out.push(usage_doc(s));
    out
}

/// The datapoints of one series not shipped yet.
fn sample_docs(series: &Series, shipped_until: &dyn Fn(&str) -> Option<DateTime<Utc>>, out: &mut Vec<Doc>) {
    let target = series.target();
    let key = format!("{target}:{}", series.id);
    let after = shipped_until(&key);
    for p in series
        .samples
        .iter()
        .filter(|p| after.is_none_or(|a| p.timestamp > a))
    {
        let body = SampleDoc {
            kind: "sample",
            target: &target,
            cluster: &series.cluster,
            service: &series.service,
            metric: &series.id,
            namespace: &series.namespace,
            metric_name: &series.metric_name,
            stat: &series.stat,
            unit: series.unit.as_deref(),
            period_secs: series.period_secs,
            dimensions: &series.dimensions,
            value: p.value,
        };
        out.push(Doc::serialized(
            Stream::Metrics,
            format!("sample:{key}:{}", p.timestamp.timestamp()),
            p.timestamp,
            &body,
        ));
    }
}

/// One service's counts at `at`.
fn service_doc(v: &ServiceState, at: DateTime<Utc>) -> Doc {
    let target = format!("{}/{}", v.cluster, v.name);
    let body = ServiceDoc {
        kind: "service",
        target: &target,
        cluster: &v.cluster,
        service: &v.name,
        status: &v.status,
        desired: v.desired,
        running: v.running,
        pending: v.pending,
        rollout: v.rollout.to_string(),
        deployments: v.deployments.len(),
        task_cpu: v.task_reservation.map(|r| r.cpu),
        task_memory_mib: v.task_reservation.map(|r| r.memory_mib),
    };
    Doc::serialized(
        Stream::Metrics,
        format!("service:{target}:{}", at.timestamp_millis()),
        at,
        &body,
    )
}

/// A cluster's EC2 CPU and memory, registered and reserved, at `at`.
fn capacity_doc(c: &ClusterSnapshot, at: DateTime<Utc>) -> Doc {
    let (reg_cpu, rem_cpu): (u64, u64) = c.container_instances.iter().fold((0, 0), |(a, b), i| {
        (a + u64::from(i.registered.cpu), b + u64::from(i.remaining.cpu))
    });
    let (reg_mem, rem_mem): (u64, u64) = c.container_instances.iter().fold((0, 0), |(a, b), i| {
        (
            a + u64::from(i.registered.memory_mib),
            b + u64::from(i.remaining.memory_mib),
        )
    });
    Doc::new(
        Stream::Metrics,
        format!("capacity:{}:{}", c.name, at.timestamp_millis()),
        at,
        json!({
            "kind": "capacity",
            "cluster": c.name,
            "instances": c.container_instances.len(),
            "instances_active": c.container_instances.iter().filter(|i| i.status == "ACTIVE").count(),
            "cpu_registered": reg_cpu,
            "cpu_reserved": reg_cpu - rem_cpu.min(reg_cpu),
            "memory_registered_mib": reg_mem,
            "memory_reserved_mib": reg_mem - rem_mem.min(reg_mem),
            "pending_tasks": c.pending_tasks.len(),
        }),
    )
}

/// The pass's API calls and CloudWatch cost.
fn usage_doc(s: &Snapshot) -> Doc {
    let u = &s.usage;
    Doc::new(
        Stream::Metrics,
        format!("usage:{}", s.taken_at.timestamp_millis()),
        s.taken_at,
        json!({
            "kind": "usage",
            "api_calls": u.total_calls(),
            "api_retries": u.total_retries(),
            "cloudwatch_metrics_requested": u.cloudwatch_metrics_requested,
            "cloudwatch_cost_usd": u.cloudwatch_cost_usd,
            "problems": s.problems.len(),
            "operations": u.operations.iter().map(|(k, v)| (k.clone(), v.calls)).collect::<BTreeMap<_, _>>(),
        }),
    )
}

#[derive(Serialize)]
struct TargetDoc<'a> {
    kind: &'static str,
    rule: &'a str,
    metric: &'a str,
    value: f64,
    tolerance: f64,
    #[serde(flatten)]
    target: TargetFields<'a>,
}

/// The target values of a policy's target-tracking rules at `at` (for "metric vs target").
pub fn target_docs(policy: &TargetPolicy, at: DateTime<Utc>) -> Vec<Doc> {
    policy
        .rules
        .iter()
        .filter_map(|r| match &r.spec {
            RuleSpec::TargetTracking(tt) => Some(Doc::serialized(
                Stream::Metrics,
                format!("target:{}:{}:{}", policy.target, r.name, at.timestamp_millis()),
                at,
                &TargetDoc {
                    kind: "target",
                    rule: &r.name,
                    metric: &tt.metric,
                    value: tt.target,
                    tolerance: tt.tolerance,
                    target: target_fields(&policy.target),
                },
            )),
            _ => None,
        })
        .collect()
}

#[derive(Serialize)]
struct DecisionDoc<'a> {
    action: crate::model::Action,
    current: u32,
    desired: u32,
    change: i64,
    min: u32,
    max: u32,
    recommendation: u32,
    rule: Option<&'a str>,
    reason: &'a str,
    inputs: &'a BTreeMap<std::sync::Arc<str>, f64>,
    votes: &'a [Vote],
    /// What the actuator did: `updated`, `unchanged`, `dry_run`, `refused`, `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_detail: Option<String>,
    #[serde(flatten)]
    target: TargetFields<'a>,
}

/// The `decisions` document of one decision, with what the actuator did of it (none for a
/// back-test or an evaluation without actuation).
pub fn decision_doc(d: &Decision, applied: Option<&crate::actuate::Applied>) -> Doc {
    let body = DecisionDoc {
        action: d.action,
        current: d.current,
        desired: d.desired,
        change: i64::from(d.desired) - i64::from(d.current),
        min: d.min,
        max: d.max,
        recommendation: d.recommendation,
        rule: d.rule.as_deref(),
        reason: &d.reason,
        inputs: &d.inputs,
        votes: &d.votes,
        applied: applied.map(|a| a.result()),
        applied_detail: applied.map(|a| a.to_string()),
        target: target_fields(&d.target),
    };
    Doc::serialized(
        Stream::Decisions,
        format!("decision:{}:{}", d.target, d.at.timestamp_millis()),
        d.at,
        &body,
    )
}

/// The `stress` document of one second of a load test.
pub fn stress_doc(s: &StressSample) -> Doc {
    Doc::serialized(
        Stream::Stress,
        format!("stress:{}:{}", s.run_id, s.at.timestamp()),
        s.at,
        s,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{ClusterSnapshot, Sample, Series};

    fn snapshot(at: DateTime<Utc>) -> Snapshot {
        Snapshot {
            taken_at: at,
            clusters: vec![ClusterSnapshot {
                name: "prod".into(),
                services: vec![],
                container_instances: vec![],
                pending_tasks: vec![],
            }],
            series: vec![Series {
                cluster: "prod".into(),
                service: "web".into(),
                id: "cpu".into(),
                namespace: "AWS/ECS".into(),
                metric_name: "CPUUtilization".into(),
                dimensions: BTreeMap::new(),
                stat: "Average".into(),
                period_secs: 60,
                unit: Some("Percent".into()),
                status: "Complete".into(),
                per_task: false,
                history: None,
                complete_until: at,
                samples: (1..=3)
                    .map(|k| Sample {
                        timestamp: at - chrono::TimeDelta::minutes(k),
                        value: k as f64,
                    })
                    .collect(),
            }],
            usage: Default::default(),
            problems: vec![],
        }
    }

    #[test]
    fn ids_are_deterministic_and_samples_are_shipped_once() {
        let at: DateTime<Utc> = "2026-11-25T23:59:30Z".parse().unwrap();
        let all = snapshot_docs(&snapshot(at), &|_| None);
        let kinds: Vec<String> = all
            .iter()
            .map(|d| d.value()["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["sample", "sample", "sample", "capacity", "usage"]);
        let three_min_ago = (at - chrono::TimeDelta::minutes(3)).timestamp();
        assert_eq!(all[2].id, format!("sample:prod/web:cpu:{three_min_ago}"));
        assert_eq!(all[2].value()["@timestamp"], "2026-11-25T23:56:30.000Z");
        assert_eq!(
            all,
            snapshot_docs(&snapshot(at), &|_| None),
            "the same pass gives the same documents"
        );
        // Samples up to the last shipped one are not sent again.
        let newest_shipped: DateTime<Utc> = "2026-11-25T23:57:30Z".parse().unwrap();
        let later = snapshot_docs(&snapshot(at), &|key| {
            (key == "prod/web:cpu").then_some(newest_shipped)
        });
        assert_eq!(later.iter().filter(|d| d.value()["kind"] == "sample").count(), 1);
        // The index follows the document's time: 23:58 and the next day's 00:00 differ.
        assert_eq!(
            Stream::Metrics.index("ecscale", all[0].at),
            "ecscale-metrics-2026.11.25"
        );
        let next_day: DateTime<Utc> = "2026-11-26T00:00:10Z".parse().unwrap();
        assert_eq!(Stream::Decisions.index("p", next_day), "p-decisions-2026.11.26");
        let mut bulk = Vec::new();
        all[0].write_bulk("ecscale", &mut bulk);
        let text = String::from_utf8(bulk).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                r#"{{"index":{{"_index":"ecscale-metrics-2026.11.25","_id":"sample:prod/web:cpu:{}"}}}}"#,
                (at - chrono::TimeDelta::minutes(1)).timestamp()
            )
        );
        let action: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            action["index"]["_id"],
            format!(
                "sample:prod/web:cpu:{}",
                (at - chrono::TimeDelta::minutes(1)).timestamp()
            )
        );
        assert_eq!(lines.len(), 2);
    }
}
