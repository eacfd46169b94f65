//! Fleet benchmark: SERVICES services in CLUSTERS clusters in moto, read every 20 s (on a
//! virtual clock) by two collectors, interleaved tick by tick:
//! - **events**: `collect.events` (an SQS queue of ECS events, `reconcile: 10m`) within
//!   `aws.budget.ecs_reads: 25%`;
//! - **every pass** (the collector without events): every service described every pass.
//!
//! Each tick, 1 % of the services change their desired count with an event in the queue (and
//! change back, with another, two ticks later), and one more changes with its event lost.
//!
//!     scripts/bench/fleet [SERVICES (1000)] [TICKS (40)]
//!
//! Prints per tick each collector's ECS calls, their share of ECS's read bucket (calls ÷ 20 s ÷
//! 20 calls/s), the pass's wall time and the process's RSS; then the summary, and checks, each
//! failing the run (exit 1) when not met:
//! - with events, ECS reads after the first pass average at most 25 % of the bucket;
//! - every change with an event is seen in the next tick;
//! - every change whose event was lost is seen within `reconcile`;
//! - every service is described at least once every `reconcile`.

// A measuring program: its fixed inputs are known good, and failing loudly is right.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/it/support/moto.rs"]
mod moto;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use ecscale::aws::AwsContext;
use ecscale::collect::events::{Changes, Poller};
use ecscale::collect::Collector;
use ecscale::config::env::Vars;
use ecscale::usage::{ApiMeter, ApiUsage};

const CLUSTERS: usize = 4;
const TICK_SECS: i64 = 20;
const RECONCILE_SECS: i64 = 600;
const REGION: &str = "ap-southeast-3";
/// ECS's read bucket refills at 20 calls a second.
const BUCKET_PER_SEC: f64 = 20.0;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn ecs_calls(u: &ApiUsage) -> u64 {
    u.operations
        .iter()
        .filter(|(op, _)| op.starts_with("ECS."))
        .map(|(_, c)| c.calls)
        .sum()
}

fn share(calls: u64) -> f64 {
    100.0 * calls as f64 / (TICK_SECS as f64 * BUCKET_PER_SEC)
}

/// The fleet in moto: (cluster, service) names, and the events queue's URL.
async fn fleet(m: &moto::Moto, services: usize) -> (Vec<(String, String)>, String) {
    let td = m.task_definition("fleet", 256, 512).await.unwrap();
    let mut all = Vec::new();
    for c in 0..CLUSTERS {
        let cluster = format!("fleet-{c}-{}", std::process::id());
        m.cluster(&cluster).await.unwrap();
        for i in (c..services).step_by(CLUSTERS) {
            let name = format!("svc-{i:05}");
            m.service(&cluster, &name, &td, 0, &[]).await.unwrap();
            all.push((cluster.clone(), name));
        }
    }
    let q = m
        .sqs
        .create_queue()
        .queue_name(format!("fleet-{}", std::process::id()));
    (all, q.send().await.unwrap().queue_url.unwrap())
}

/// The config of one side: with the events queue (and the budget), or without either.
fn config(dir: &std::path::Path, clusters: &[String], queue: Option<&str>) -> ecscale::config::Config {
    let url =
        std::env::var("ECSCALE_TEST_MOTO_URL").expect("ECSCALE_TEST_MOTO_URL (run scripts/bench/fleet)");
    let list: String = clusters
        .iter()
        .map(|c| format!("  - {{name: {c}, discover: {{name_prefix: svc-}}}}\n"))
        .collect();
    let (budget, events) = match queue {
        Some(q) => (
            ", budget: {ecs_reads: 25%}".to_string(),
            format!(", events: {{queue_url: '{q}', reconcile: {RECONCILE_SECS}s}}"),
        ),
        None => (String::new(), String::new()),
    };
    let yaml = format!(
        "aws: {{region: {REGION}, endpoint_url: {url}{budget}}}\nschedule: {{interval: {TICK_SECS}s}}\ncollect: {{container_instances: false, pending_tasks: false{events}}}\nclusters:\n{list}"
    );
    let path = dir.join(if queue.is_some() {
        "events.yaml"
    } else {
        "every.yaml"
    });
    std::fs::write(&path, yaml).unwrap();
    ecscale::config::load(&path, &Vars::from_pairs([])).unwrap()
}

/// One side: its collector and its meter.
struct Side {
    collector: Collector,
    meter: ApiMeter,
    /// Per tick: ECS calls, wall seconds.
    ticks: Vec<(u64, f64)>,
}

impl Side {
    async fn pass(&mut self, now: DateTime<Utc>) -> (ecscale::model::Snapshot, ApiUsage, f64) {
        let before = self.meter.usage();
        let started = Instant::now();
        let snap = self.collector.collect(now).await;
        let took = started.elapsed().as_secs_f64();
        let used = self.meter.usage().since(&before);
        self.ticks.push((ecs_calls(&used), took));
        (snap, used, took)
    }
}

async fn side(config: &ecscale::config::Config, changes: Option<Arc<Changes>>) -> (Side, AwsContext) {
    let meter = ApiMeter::default();
    let aws = AwsContext::connect(&config.aws, meter.clone()).await.unwrap();
    let clients = ecscale::worker::Clients::aws(&aws);
    let mut collector = Collector::new(
        config,
        clients.ecs.clone(),
        clients.cloudwatch.clone(),
        meter.clone(),
    );
    if let Some(c) = changes {
        collector = collector.with_changes(c);
    }
    (
        Side {
            collector,
            meter,
            ticks: Vec::new(),
        },
        aws,
    )
}

fn line(name: &str, u: &ApiUsage, took: f64) -> String {
    let ops: BTreeMap<&str, u64> = u
        .operations
        .iter()
        .filter(|(_, c)| c.calls > 0)
        .map(|(op, c)| (op.as_str(), c.calls))
        .collect();
    let ecs = ecs_calls(u);
    format!(
        "{name:>10}: ECS {ecs:>4} calls ({:>5.1} % of the read bucket), {:>6.2} s, RSS {:>4.0} MiB, {ops:?}",
        share(ecs),
        took,
        rss_mib()
    )
}

/// Seconds from each change to the tick that first saw it, and what is still unseen.
#[derive(Default)]
struct Watch {
    /// (cluster, service) → (desired it was set to, tick set, with an event).
    open: HashMap<(String, String), (u32, i64, bool)>,
    seen_evented: Vec<i64>,
    seen_lost: Vec<i64>,
}

impl Watch {
    fn look(&mut self, snap: &ecscale::model::Snapshot, tick: i64) {
        let mut done = Vec::new();
        for (key, (want, at, evented)) in &self.open {
            let s = snap.services().find(|s| s.cluster == key.0 && s.name == key.1);
            if s.is_some_and(|s| s.desired == *want) {
                let lag = (tick - at) * TICK_SECS;
                if *evented {
                    self.seen_evented.push(lag);
                } else {
                    self.seen_lost.push(lag);
                }
                done.push(key.clone());
            }
        }
        for k in done {
            self.open.remove(&k);
        }
    }
}

/// Tick `k`'s changes: 1 % of the fleet to 1 (and those of two ticks ago back to 0), with events;
/// one more to 1 with its event lost (once the last lost one was seen).
async fn change(m: &moto::Moto, queue: &str, all: &[(String, String)], k: usize, w: &mut Watch) {
    let n = (all.len() / 100).max(1);
    let pick = |tick: usize| (0..n).map(move |j| (tick * n + j) % all.len());
    let mut bodies = Vec::new();
    let back = k
        .checked_sub(2)
        .map(|t| pick(t).collect::<Vec<_>>())
        .unwrap_or_default();
    for (i, to) in pick(k).map(|i| (i, 1)).chain(back.into_iter().map(|i| (i, 0))) {
        let (c, s) = &all[i];
        if w.open.contains_key(&(c.clone(), s.clone())) {
            continue;
        }
        m.set_desired(c, s, to).await.unwrap();
        bodies.push(
            serde_json::json!({"source": "aws.ecs", "detail-type": "ECS Service Action",
            "resources": [format!("arn:aws:ecs:{REGION}:123456789012:service/{c}/{s}")],
            "detail": {"eventName": "SERVICE_STEADY_STATE"}})
            .to_string(),
        );
        w.open.insert((c.clone(), s.clone()), (to as u32, k as i64, true));
    }
    for chunk in bodies.chunks(10) {
        let mut batch = m.sqs.send_message_batch().queue_url(queue);
        for (j, b) in chunk.iter().enumerate() {
            batch = batch.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(j.to_string())
                    .message_body(b)
                    .build()
                    .unwrap(),
            );
        }
        batch.send().await.unwrap();
    }
    if !w.open.values().any(|(_, _, evented)| !evented) {
        let (c, s) = &all[(k * 7919 + all.len() / 2) % all.len()];
        if let std::collections::hash_map::Entry::Vacant(e) = w.open.entry((c.clone(), s.clone())) {
            m.set_desired(c, s, 2).await.unwrap();
            e.insert((2, k as i64, false));
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let services = args.first().copied().unwrap_or(1000);
    let ticks = args.get(1).copied().unwrap_or(40);
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let url =
        std::env::var("ECSCALE_TEST_MOTO_URL").expect("ECSCALE_TEST_MOTO_URL (run scripts/bench/fleet)");
    let m = moto::Moto::new(&url, REGION);
    let made = Instant::now();
    let (all, queue) = fleet(&m, services).await;
    let clusters: Vec<String> = {
        let mut c: Vec<String> = all.iter().map(|(c, _)| c.clone()).collect();
        c.dedup();
        c
    };
    println!(
        "fleet: {} services in {} clusters made in moto in {:.0} s; a tick every {TICK_SECS} s (virtual), {ticks} ticks",
        all.len(),
        clusters.len(),
        made.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let with = config(dir.path(), &clusters, Some(&queue));
    let every = config(dir.path(), &clusters, None);
    let changes = Arc::new(Changes::default());
    let (mut events, aws) = side(&with, Some(changes.clone())).await;
    let (mut peer, _) = side(&every, None).await;
    let poller = Poller {
        queue: Arc::new(aws.queue(&queue)),
        changes: changes.clone(),
        wait: Duration::ZERO,
    };
    let t0 = Utc::now();
    let mut watch = Watch::default();
    let mut oldest_read = 0i64;
    for k in 0..ticks {
        let now = t0 + TimeDelta::seconds(TICK_SECS * k as i64);
        if k > 0 {
            change(&m, &queue, &all, k, &mut watch).await;
            while poller.once().await.unwrap() > 0 {}
        }
        let (snap, used, took) = events.pass(now).await;
        watch.look(&snap, k as i64);
        let (_, peer_used, peer_took) = peer.pass(now).await;
        println!(
            "tick {k:>3}\n{}\n{}",
            line("events", &used, took),
            line("every pass", &peer_used, peer_took)
        );
        let (_, age) = events.collector.reads(now);
        oldest_read = oldest_read.max(age.map_or(0, |a| a.as_secs() as i64));
    }
    let steady = |s: &Side| -> Vec<f64> { s.ticks.iter().skip(1).map(|(c, _)| *c as f64).collect() };
    let (ev, pe) = (steady(&events), steady(&peer));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (reads, _) = events.collector.reads(t0);
    println!("\nsummary, after the first pass ({} ticks):", ev.len());
    for (name, v, side) in [("events", &ev, &events), ("every pass", &pe, &peer)] {
        println!(
            "{name:>10}: ECS calls a tick mean {:.1} (max {:.0}) = {:.2} calls/s, {:.1} % of the read bucket; pass wall time median {:.2} s",
            mean(v),
            v.iter().copied().fold(0.0, f64::max),
            mean(v) / TICK_SECS as f64,
            share(mean(v).round() as u64),
            median(side.ticks.iter().map(|(_, t)| *t).collect())
        );
    }
    println!(
        "service reads with events: {reads:?}; events queue: {:?}",
        changes.counts()
    );
    let lag = |v: &[i64]| v.iter().copied().max().unwrap_or(0);
    println!(
        "changes seen: {} with an event (longest from the change to the pass that saw it: {} s on the virtual clock, 0 being the first pass after it), {} whose event was lost (longest {} s); still unseen: {}; oldest state served: {} s",
        watch.seen_evented.len(),
        lag(&watch.seen_evented),
        watch.seen_lost.len(),
        lag(&watch.seen_lost),
        watch.open.len(),
        oldest_read
    );
    println!("peak RSS {:.0} MiB", rss_mib());
    let mut failed = Vec::new();
    if share(mean(&ev).ceil() as u64) > 25.0 {
        failed.push("ECS reads above 25 % of the read bucket");
    }
    if lag(&watch.seen_evented) > TICK_SECS {
        failed.push("a change with an event was not seen in the next tick");
    }
    if lag(&watch.seen_lost) > RECONCILE_SECS + TICK_SECS {
        failed.push("a change whose event was lost was not seen within reconcile");
    }
    if oldest_read > RECONCILE_SECS {
        failed.push("a service was served older than reconcile");
    }
    if watch.seen_evented.is_empty()
        || (ticks as i64 * TICK_SECS > RECONCILE_SECS + 2 * TICK_SECS && watch.seen_lost.is_empty())
    {
        failed.push("too few changes seen to judge");
    }
    if failed.is_empty() {
        println!("checks: all met");
    } else {
        println!("checks NOT met: {failed:?}");
        std::process::exit(1);
    }
}
