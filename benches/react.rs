//! Reaction benchmark (issue 4): 100 services in moto, 20 of them with CPU over target. One
//! worker tick (collect → evaluate → actuate) against a hand-rolled boto3 script doing the same
//! rule service by service, alternating, five rounds each.
//!
//!     scripts/bench/react       (starts moto, runs this, stops moto)
//!
//! Measured per round: milliseconds from the start of the tick (the tick that first sees the
//! metric over target) to each UpdateService call, and the AWS calls the tick made, by operation.
//! Issue 4's goals: DescribeServices = 10, GetMetricData = 1 with at most 500 queries,
//! UpdateService only where the count changes (20).
//!
//! Needs ECSCALE_TEST_MOTO_URL (a moto server) and ECSCALE_BENCH_PYTHON (a Python with boto3)
//! for the peer; without the latter only ecscale runs.

// A measuring program: its fixed inputs are known good, and failing loudly is right.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/it/support/moto.rs"]
mod moto;
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::StandardUnit;
use chrono::{DateTime, TimeDelta, Utc};

use ecscale::api::{ApiError, EcsWriteApi, TaskInfo};
use ecscale::aws::AwsContext;
use ecscale::config::env::Vars;
use ecscale::usage::ApiMeter;
use ecscale::worker::metrics::Metrics;
use ecscale::worker::state::FileStore;
use ecscale::worker::{Clients, Parts, RunOptions, Worker};
use support::cpu_seconds;

const SERVICES: usize = 100;
const HOT: usize = 20;
const ROUNDS: usize = 5;
const REGION: &str = "us-east-2";

/// One round of one side: ms to the first and last UpdateService, ms of the whole tick, CPU ms.
type Round = (f64, f64, f64, f64);

/// Times UpdateService calls from the start of the tick.
struct Timed {
    inner: Arc<dyn EcsWriteApi>,
    start: Mutex<Instant>,
    updates: Mutex<Vec<f64>>,
}

#[async_trait]
impl EcsWriteApi for Timed {
    async fn update_service(&self, cluster: &str, service: &str, desired: u32) -> Result<(), ApiError> {
        let at = self.start.lock().unwrap().elapsed().as_secs_f64() * 1000.0;
        self.updates.lock().unwrap().push(at);
        self.inner.update_service(cluster, service, desired).await
    }
    async fn set_instances_state(&self, cluster: &str, arns: &[String], state: &str) -> Result<(), ApiError> {
        self.inner.set_instances_state(cluster, arns, state).await
    }
    async fn daemon_services(&self, cluster: &str) -> Result<Vec<String>, ApiError> {
        self.inner.daemon_services(cluster).await
    }
    async fn instance_tasks(&self, cluster: &str, ci: &str) -> Result<Vec<TaskInfo>, ApiError> {
        self.inner.instance_tasks(cluster, ci).await
    }
    async fn capacity_providers(
        &self,
        cluster: &str,
    ) -> Result<Vec<ecscale::api::CapacityProvider>, ApiError> {
        self.inner.capacity_providers(cluster).await
    }
    async fn disable_managed_scaling(&self, provider: &str) -> Result<(), ApiError> {
        self.inner.disable_managed_scaling(provider).await
    }
    async fn started_by(&self, cluster: &str, by: &str) -> Result<Vec<TaskInfo>, ApiError> {
        self.inner.started_by(cluster, by).await
    }
    async fn start_tasks(
        &self,
        cluster: &str,
        td: &str,
        on: &[String],
        by: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        self.inner.start_tasks(cluster, td, on, by).await
    }
    async fn stop_task(&self, cluster: &str, task: &str, reason: &str) -> Result<(), ApiError> {
        self.inner.stop_task(cluster, task, reason).await
    }
}

/// Every fifth service runs hot, spread over the list (so neither side finds them first).
fn hot(i: usize) -> bool {
    i % (SERVICES / HOT) == 2
}

fn name(i: usize) -> String {
    format!("svc-{i:03}")
}

fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(60), 0).unwrap()
}

async fn reset(m: &moto::Moto, cluster: &str) {
    for i in (0..SERVICES).filter(|i| hot(*i)) {
        m.set_desired(cluster, &name(i), 4).await.unwrap();
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("ECSCALE_TEST_MOTO_URL").expect("ECSCALE_TEST_MOTO_URL: run scripts/bench/react");
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let m = moto::Moto::new(&url, REGION);
    let cluster = format!("react-{}", std::process::id());
    m.cluster(&cluster).await.unwrap();
    let td = m.task_definition("react-web", 256, 512).await.unwrap();
    let now = minute(Utc::now());
    for i in 0..SERVICES {
        m.service(&cluster, &name(i), &td, 4, &[]).await.unwrap();
        let cpu = if hot(i) { 90.0 } else { 50.0 };
        let points: Vec<_> = (1..=10).map(|k| (now - TimeDelta::minutes(k), cpu)).collect();
        let svc = name(i);
        let dims = [("ClusterName", cluster.as_str()), ("ServiceName", svc.as_str())];
        m.put_points("AWS/ECS", "CPUUtilization", &dims, StandardUnit::Percent, &points)
            .await
            .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let policies: String = (0..SERVICES)
        .map(|i| {
            format!(
                "---\ntarget: {{cluster: {cluster}, service: {}}}\nmin: 1\nmax: 50\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 50}}\n",
                name(i)
            )
        })
        .collect();
    std::fs::write(dir.path().join("policies.yaml"), policies).unwrap();
    let list: Vec<String> = (0..SERVICES).map(name).collect();
    let yaml = format!(
        "aws: {{region: {REGION}, endpoint_url: '{url}'}}\nschedule: {{interval: 30s}}\nclusters:\n  - name: {cluster}\n    services: [{}]\npolicies: [policies.yaml]\nworker: {{metrics_addr: 'off'}}\n",
        list.join(", ")
    );
    let path = dir.path().join("ecscale.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = ecscale::config::load(&path, &Vars::from_pairs([])).unwrap();
    let policies: Vec<_> = ecscale::policy::load_for(&config)
        .unwrap()
        .into_iter()
        .flat_map(|f| f.targets)
        .collect();

    let python = std::env::var("ECSCALE_BENCH_PYTHON").ok();
    let mut ours: Vec<Round> = Vec::new();
    let mut peer: Vec<Round> = Vec::new();
    let mut calls = BTreeMap::new();
    let mut peer_calls = serde_json::Value::Null;
    let mut queries = 0;
    let mut stages: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..ROUNDS {
        // ecscale: a fresh worker (no cooldowns remembered), one tick.
        reset(&m, &cluster).await;
        let aws = AwsContext::connect(&config.aws, ApiMeter::default())
            .await
            .unwrap();
        let mut clients = Clients::aws(&aws);
        let timed = Arc::new(Timed {
            inner: clients.ecs_write.clone(),
            start: Mutex::new(Instant::now()),
            updates: Mutex::new(Vec::new()),
        });
        clients.ecs_write = timed.clone();
        let parts = Parts {
            store: Box::new(FileStore::new(&dir.path().join(format!("state-{round}.json")))),
            lease: None,
            metrics: Arc::new(Metrics::new(aws.meter.clone(), Duration::from_secs(60))),
            ship: None,
            notify: None,
        };
        let mut w = Worker::new(
            config.clone(),
            policies.clone(),
            clients,
            parts,
            &RunOptions::default(),
        )
        .await
        .unwrap();
        let before = aws.meter.usage();
        *timed.start.lock().unwrap() = Instant::now();
        let cpu0 = cpu_seconds();
        let report = w.tick(Utc::now()).await;
        let total = timed.start.lock().unwrap().elapsed().as_secs_f64() * 1000.0;
        let cpu = (cpu_seconds() - cpu0) * 1000.0;
        let usage = aws.meter.usage().since(&before);
        let updates = timed.updates.lock().unwrap().clone();
        assert_eq!(updates.len(), HOT, "{:?}", report.problems);
        ours.push((percentile(&updates, 0.0), percentile(&updates, 1.0), total, cpu));
        for (k, v) in &report.stage_ms {
            stages.entry(k).or_default().push(*v);
        }
        calls = usage
            .operations
            .iter()
            .map(|(k, v)| (k.clone(), v.calls))
            .collect();
        queries = usage.cloudwatch_metrics_requested;

        // The peer, on the same data.
        if let Some(py) = &python {
            reset(&m, &cluster).await;
            let out = std::process::Command::new(py)
                .arg("scripts/bench/naive_scaler.py")
                .args([
                    "--endpoint",
                    &url,
                    "--region",
                    REGION,
                    "--cluster",
                    &cluster,
                    "--services",
                    &list.join(","),
                ])
                .args(["--target", "50", "--now", &Utc::now().timestamp().to_string()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let u: Vec<f64> = v["updates_ms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(u.len(), HOT, "the peer made {} updates", u.len());
            peer.push((
                percentile(&u, 0.0),
                percentile(&u, 1.0),
                v["total_ms"].as_f64().unwrap(),
                v["cpu_ms"].as_f64().unwrap(),
            ));
            peer_calls = v["calls"].clone();
        }
    }

    let med = |v: &[Round], f: fn(&Round) -> f64| {
        let xs: Vec<f64> = v.iter().map(f).collect();
        percentile(&xs, 0.5)
    };
    println!("reaction benchmark: {SERVICES} services ({HOT} over target), moto on loopback, {ROUNDS} rounds, medians");
    println!("{:<44} {:>12} {:>16}", "", "ecscale", "boto3 script");
    for (label, f) in [
        (
            "tick start → first UpdateService (ms)",
            (|r: &Round| r.0) as fn(&Round) -> f64,
        ),
        ("tick start → last UpdateService (ms)", |r| r.1),
        ("whole tick (ms)", |r| r.2),
        ("CPU of the tick, client side (ms, 10 ms clock)", |r| r.3),
    ] {
        let p = if peer.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0}", med(&peer, f))
        };
        println!("{label:<44} {:>12.0} {p:>16}", med(&ours, f));
    }
    let stage_text: Vec<String> = stages
        .iter()
        .map(|(k, v)| format!("{k} {:.0}", percentile(v, 0.5)))
        .collect();
    println!("ecscale stages (ms): {}", stage_text.join(", "));
    println!("ecscale API calls in one tick: {calls:?}, CloudWatch metrics requested: {queries}");
    if !peer.is_empty() {
        println!("boto3 script API calls in one pass: {peer_calls}");
    }
    assert_eq!(calls.get("ECS.DescribeServices"), Some(&10));
    assert_eq!(calls.get("CloudWatch.GetMetricData"), Some(&1));
    assert_eq!(calls.get("ECS.UpdateService"), Some(&(HOT as u64)));
    assert!(queries <= 500);
}
