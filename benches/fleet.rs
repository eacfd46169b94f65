//! Fleet benchmark: SERVICES services in moto, in clusters spread over two accounts (the
//! worker's own and one whose role it assumes through STS) and two regions, read every 20 s by
//! the collector with ECS's events (an SQS queue of ECS events, `reconcile: 10m`, within
//! `aws.budget.ecs_reads: 25%`).
//!
//! Each tick, 1 % of the services change their desired count with an event in the queue (and
//! change back, with another, two ticks later), and one more changes with its event lost.
//!
//!     scripts/bench/fleet [SERVICES (1000)] [TICKS (40)]
//!     scripts/bench/fleet --hour [SERVICES (5000)] [TICKS (180)]
//!
//! - By default the ticks run on a virtual clock, back to back, interleaved tick by tick with
//!   the collector without events (**every pass**: every service described every pass).
//! - `--hour`: on the real clock, a tick every 20 s, through a proxy in front of moto that
//!   throttles as AWS's token buckets do, per account and region (ECS reads 20 a second, 100
//!   at once; GetMetricData 50 a second); the collector with events alone. A tick overruns when
//!   its pass has not finished by the next tick.
//!
//! Prints per tick the ECS calls, their share of ECS's read bucket (calls ÷ 20 s ÷ 20 calls/s,
//! over the four places' buckets), the metrics GetMetricData asked for, the pass's wall time
//! and the process's RSS; then the summary, and checks, each failing the run (exit 1) when not
//! met:
//! - with events, ECS reads after the first pass average at most 25 % of each place's bucket;
//! - every change with an event is seen in the next tick;
//! - every change whose event was lost is seen within `reconcile`;
//! - every service is described at least once every `reconcile`;
//! - `--hour`: no tick overran, and RSS stayed under 300 MiB.

// A measuring program: its fixed inputs are known good, and failing loudly is right.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/it/support/moto.rs"]
mod moto;
#[path = "../tests/it/support/proxy.rs"]
mod proxy;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use ecscale::aws::AwsContext;
use ecscale::collect::events::{Changes, Poller};
use ecscale::collect::Collector;
use ecscale::config::env::Vars;
use ecscale::usage::{ApiMeter, ApiUsage};

const TICK_SECS: i64 = 20;
const RECONCILE_SECS: i64 = 600;
const OWN_REGION: &str = "ap-southeast-3";
const OTHER_REGION: &str = "ap-northeast-3";
const OWN_ACCOUNT: &str = "123456789012";
const ROLE: &str = "arn:aws:iam::222222222222:role/ecscale-fleet";
/// Where the fleet's clusters are, (role assumed, region): the worker's own place first.
const PLACES: [(Option<&str>, &str); 4] = [
    (None, OWN_REGION),
    (None, OTHER_REGION),
    (Some(ROLE), OWN_REGION),
    (Some(ROLE), OTHER_REGION),
];
/// ECS's read bucket refills at 20 calls a second, per account and region.
const BUCKET_PER_SEC: f64 = 20.0;
const RSS_LIMIT_MIB: f64 = 300.0;

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

/// Per cent of the places' read buckets over one tick that `calls` a tick take.
fn share(calls: f64) -> f64 {
    100.0 * calls / (TICK_SECS as f64 * BUCKET_PER_SEC * PLACES.len() as f64)
}

/// The fleet in moto.
struct Fleet {
    /// (cluster, service, place).
    services: Vec<(String, String, usize)>,
    /// (cluster, place).
    clusters: Vec<(String, usize)>,
    /// Clients of each place, straight to moto.
    places: Vec<moto::Moto>,
    queue: String,
}

/// Clients straight to moto for each place, the other account's through its assumed role.
async fn places(url: &str) -> Vec<moto::Moto> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("setup.yaml");
    std::fs::write(
        &path,
        format!("aws: {{region: {OWN_REGION}, endpoint_url: {url}}}\nschedule: {{interval: 20s}}\nclusters: [{{name: x, services: [y]}}]\n"),
    )
    .unwrap();
    let config = ecscale::config::load(&path, &Vars::from_pairs([])).unwrap();
    let aws = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    for (role, region) in PLACES {
        let m = match role {
            None => moto::Moto::new(url, region),
            Some(_) => {
                let there = aws.place(Some(region), role).await.unwrap();
                moto::Moto::with_credentials(url, region, there.credentials.clone().unwrap())
            }
        };
        out.push(m);
    }
    out
}

/// SERVICES services in CLUSTERS clusters (cluster `c` in place `c % 4`), and the events queue
/// (in the worker's own place, where EventBridge's rules of every place send).
async fn fleet(url: &str, services: usize) -> Fleet {
    let places = places(url).await;
    let count = services.div_ceil(250).max(1).next_multiple_of(PLACES.len());
    let mut tds = Vec::new();
    for m in &places {
        tds.push(m.task_definition("fleet", 256, 512).await.unwrap());
    }
    let (mut all, mut clusters) = (Vec::new(), Vec::new());
    for c in 0..count {
        let (place, cluster) = (c % PLACES.len(), format!("fleet-{c}-{}", std::process::id()));
        places[place].cluster(&cluster).await.unwrap();
        for i in (c..services).step_by(count) {
            let name = format!("svc-{i:05}");
            places[place]
                .service(&cluster, &name, &tds[place], 0, &[])
                .await
                .unwrap();
            all.push((cluster.clone(), name, place));
        }
        clusters.push((cluster, place));
    }
    let q = places[0]
        .sqs
        .create_queue()
        .queue_name(format!("fleet-{}", std::process::id()));
    let queue = q.send().await.unwrap().queue_url.unwrap();
    Fleet {
        services: all,
        clusters,
        places,
        queue,
    }
}

/// The config of one side: with the events queue (and the budget), or without either.
fn config(dir: &std::path::Path, url: &str, fleet: &Fleet, events: bool) -> ecscale::config::Config {
    let list: String = fleet
        .clusters
        .iter()
        .map(|(c, p)| {
            let (role, region) = PLACES[*p];
            let role = role.map_or(String::new(), |r| format!(", role_arn: '{r}'"));
            format!("  - {{name: {c}, region: {region}{role}, discover: {{name_prefix: svc-}}}}\n")
        })
        .collect();
    let (budget, events, file) = if events {
        (
            ", budget: {ecs_reads: 25%}".to_string(),
            format!(
                ", events: {{queue_url: '{}', reconcile: {RECONCILE_SECS}s}}",
                fleet.queue
            ),
            "events.yaml",
        )
    } else {
        (String::new(), String::new(), "every.yaml")
    };
    let yaml = format!(
        "aws: {{region: {OWN_REGION}, endpoint_url: {url}{budget}}}\nschedule: {{interval: {TICK_SECS}s}}\ncollect: {{container_instances: false, pending_tasks: false{events}}}\nclusters:\n{list}"
    );
    let path = dir.join(file);
    std::fs::write(&path, yaml).unwrap();
    ecscale::config::load(&path, &Vars::from_pairs([])).unwrap()
}

/// One side: its collector and its meter.
struct Side {
    collector: Collector,
    meter: ApiMeter,
    /// Per tick: ECS calls, metrics requested, wall seconds.
    ticks: Vec<(u64, u64, f64)>,
}

impl Side {
    async fn pass(&mut self, now: DateTime<Utc>) -> (ecscale::model::Snapshot, ApiUsage, f64) {
        let before = self.meter.usage();
        let started = Instant::now();
        let snap = self.collector.collect(now).await;
        let took = started.elapsed().as_secs_f64();
        let used = self.meter.usage().since(&before);
        self.ticks
            .push((ecs_calls(&used), used.cloudwatch_metrics_requested, took));
        (snap, used, took)
    }
}

/// One side's collector, with the clients of every place its clusters are in.
async fn side(config: &ecscale::config::Config, changes: Option<Arc<Changes>>) -> (Side, AwsContext) {
    let meter = ApiMeter::default();
    let aws = AwsContext::connect(&config.aws, meter.clone()).await.unwrap();
    let clients = ecscale::worker::Clients::routed(&aws, config).await.unwrap();
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
        "{name:>10}: ECS {ecs:>4} calls ({:>5.1} % of the read buckets), {:>6} metrics, {:>6.2} s, RSS {:>4.0} MiB, {ops:?}",
        share(ecs as f64),
        u.cloudwatch_metrics_requested,
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

/// The ECS event EventBridge would route for a change of `service` in `place`.
fn event(cluster: &str, service: &str, place: usize) -> String {
    let (role, region) = PLACES[place];
    let account = role.and_then(|r| r.split(':').nth(4)).unwrap_or(OWN_ACCOUNT);
    serde_json::json!({"source": "aws.ecs", "detail-type": "ECS Service Action",
        "resources": [format!("arn:aws:ecs:{region}:{account}:service/{cluster}/{service}")],
        "detail": {"eventName": "SERVICE_STEADY_STATE"}})
    .to_string()
}

/// Tick `k`'s changes: 1 % of the fleet to 1 (and those of two ticks ago back to 0), with events;
/// one more to 1 with its event lost (once the last lost one was seen).
async fn change(fleet: &Fleet, k: usize, w: &mut Watch) {
    let all = &fleet.services;
    let n = (all.len() / 100).max(1);
    let pick = |tick: usize| (0..n).map(move |j| (tick * n + j) % all.len());
    let mut bodies = Vec::new();
    let back = k
        .checked_sub(2)
        .map(|t| pick(t).collect::<Vec<_>>())
        .unwrap_or_default();
    for (i, to) in pick(k).map(|i| (i, 1)).chain(back.into_iter().map(|i| (i, 0))) {
        let (c, s, p) = &all[i];
        if w.open.contains_key(&(c.clone(), s.clone())) {
            continue;
        }
        fleet.places[*p].set_desired(c, s, to).await.unwrap();
        bodies.push(event(c, s, *p));
        w.open.insert((c.clone(), s.clone()), (to as u32, k as i64, true));
    }
    send(&fleet.places[0], &fleet.queue, &bodies).await;
    if !w.open.values().any(|(_, _, evented)| !evented) {
        let (c, s, p) = &all[(k * 7919 + all.len() / 2) % all.len()];
        if let std::collections::hash_map::Entry::Vacant(e) = w.open.entry((c.clone(), s.clone())) {
            fleet.places[*p].set_desired(c, s, 2).await.unwrap();
            e.insert((2, k as i64, false));
        }
    }
}

/// Puts `bodies` in the queue, ten a batch.
async fn send(m: &moto::Moto, queue: &str, bodies: &[String]) {
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
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// What a run measured, for the summary and its checks.
#[derive(Default)]
struct Run {
    watch: Watch,
    /// The oldest state served at any pass, seconds.
    oldest_read: i64,
    /// Ticks whose pass finished after the next tick was due.
    overruns: Vec<usize>,
    peak_rss: f64,
}

/// The run's arguments.
struct Args {
    hour: bool,
    services: usize,
    ticks: usize,
}

fn args() -> Args {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let hour = all.iter().any(|a| a == "--hour");
    let n: Vec<usize> = all.iter().filter_map(|a| a.parse().ok()).collect();
    let (services, ticks) = if hour { (5000, 180) } else { (1000, 40) };
    Args {
        hour,
        services: n.first().copied().unwrap_or(services),
        ticks: n.get(1).copied().unwrap_or(ticks),
    }
}

/// Tick `k` of the collector with events, at `now`: the tick's changes and their events, the
/// queue drained, the pass; what it saw and how old its state was go in `run`.
async fn tick(
    fleet: &Fleet,
    events: &mut Side,
    poller: &Poller,
    run: &mut Run,
    k: usize,
    now: DateTime<Utc>,
) -> (ApiUsage, f64) {
    if k > 0 {
        change(fleet, k, &mut run.watch).await;
        while poller.once().await.unwrap() > 0 {}
    }
    let (snap, used, took) = events.pass(now).await;
    run.watch.look(&snap, k as i64);
    let (_, age) = events.collector.reads(now);
    run.oldest_read = run.oldest_read.max(age.map_or(0, |a| a.as_secs() as i64));
    run.peak_rss = run.peak_rss.max(rss_mib());
    (used, took)
}

/// Ticks on the virtual clock, back to back, the collector without events interleaved.
async fn virtual_ticks(
    fleet: &Fleet,
    events: &mut Side,
    peer: &mut Side,
    poller: &Poller,
    ticks: usize,
) -> Run {
    let t0 = Utc::now();
    let mut run = Run::default();
    for k in 0..ticks {
        let now = t0 + TimeDelta::seconds(TICK_SECS * k as i64);
        let (used, took) = tick(fleet, events, poller, &mut run, k, now).await;
        let (_, peer_used, peer_took) = peer.pass(now).await;
        println!(
            "tick {k:>3}\n{}\n{}",
            line("events", &used, took),
            line("every pass", &peer_used, peer_took)
        );
    }
    run
}

/// Ticks on the real clock, one every 20 s, the collector with events alone.
async fn real_ticks(fleet: &Fleet, events: &mut Side, poller: &Poller, ticks: usize) -> Run {
    let start = tokio::time::Instant::now();
    let mut run = Run::default();
    for k in 0..ticks {
        let due = start + Duration::from_secs(TICK_SECS as u64 * k as u64);
        tokio::time::sleep_until(due).await;
        let (used, took) = tick(fleet, events, poller, &mut run, k, Utc::now()).await;
        let late = due.elapsed().as_secs_f64();
        if late > TICK_SECS as f64 {
            run.overruns.push(k);
        }
        println!(
            "tick {k:>3}, done {late:>5.2} s after it was due\n{}",
            line("events", &used, took)
        );
    }
    run
}

/// One side's summary line, after the first pass.
fn summary(name: &str, side: &Side) {
    let ecs: Vec<f64> = side.ticks.iter().skip(1).map(|t| t.0 as f64).collect();
    let metrics: Vec<f64> = side.ticks.iter().skip(1).map(|t| t.1 as f64).collect();
    println!(
        "{name:>10}: ECS calls a tick mean {:.1} (max {:.0}) = {:.2} calls/s, {:.1} % of the four read buckets; metrics requested a tick mean {:.0} (max {:.0}); pass wall time median {:.2} s (max {:.2})",
        mean(&ecs),
        ecs.iter().copied().fold(0.0, f64::max),
        mean(&ecs) / TICK_SECS as f64,
        share(mean(&ecs)),
        mean(&metrics),
        metrics.iter().copied().fold(0.0, f64::max),
        median(side.ticks.iter().map(|t| t.2).collect()),
        side.ticks.iter().map(|t| t.2).fold(0.0, f64::max),
    );
}

/// The proxy's tally per bucket, with each bucket's calls a second over `seconds`.
fn buckets(proxy: &proxy::Proxy, seconds: f64) {
    for (bucket, t) in proxy.tally() {
        println!(
            "  {bucket}: {} answered ({:.2} a second), {} throttled",
            t.answered,
            t.answered as f64 / seconds,
            t.throttled
        );
    }
}

/// The checks a run must meet: what failed.
fn checks(args: &Args, events: &Side, run: &Run) -> Vec<&'static str> {
    let ev: Vec<f64> = events.ticks.iter().skip(1).map(|t| t.0 as f64).collect();
    let lag = |v: &[i64]| v.iter().copied().max().unwrap_or(0);
    let mut failed = Vec::new();
    if share(mean(&ev)) > 25.0 {
        failed.push("ECS reads above 25 % of the read buckets");
    }
    if lag(&run.watch.seen_evented) > TICK_SECS {
        failed.push("a change with an event was not seen in the next tick");
    }
    if lag(&run.watch.seen_lost) > RECONCILE_SECS + TICK_SECS {
        failed.push("a change whose event was lost was not seen within reconcile");
    }
    if run.oldest_read > RECONCILE_SECS {
        failed.push("a service was served older than reconcile");
    }
    let long = args.ticks as i64 * TICK_SECS > RECONCILE_SECS + 2 * TICK_SECS;
    if run.watch.seen_evented.is_empty() || (long && run.watch.seen_lost.is_empty()) {
        failed.push("too few changes seen to judge");
    }
    if args.hour && !run.overruns.is_empty() {
        failed.push("a tick overran");
    }
    if args.hour && run.peak_rss > RSS_LIMIT_MIB {
        failed.push("RSS above 300 MiB");
    }
    failed
}

/// The places whose ECS reads, over `seconds`, averaged more than 25 % of their bucket.
fn over_budget(proxy: &proxy::Proxy, seconds: f64) -> Vec<String> {
    proxy
        .tally()
        .into_iter()
        .filter(|(bucket, t)| {
            bucket.ends_with("ECS reads") && t.answered as f64 / seconds > BUCKET_PER_SEC / 4.0
        })
        .map(|(bucket, _)| bucket)
        .collect()
}

/// GetMetricData's bill at the run's mean metrics a tick, a month of 20 s ticks, per service.
fn cost(events: &Side, services: usize) {
    let metrics: Vec<f64> = events.ticks.iter().skip(1).map(|t| t.1 as f64).collect();
    let month = 30.0 * 86_400.0 / TICK_SECS as f64;
    let usd = mean(&metrics) * month * ecscale::usage::USD_PER_METRIC_REQUESTED;
    println!(
        "CloudWatch: {:.0} metrics a tick (mean) × {month:.0} ticks a month × $0.01 per 1,000 = ${usd:.0} a month, ${:.3} per service",
        mean(&metrics),
        usd / services.max(1) as f64
    );
}

#[tokio::main]
async fn main() {
    let args = args();
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let url =
        std::env::var("ECSCALE_TEST_MOTO_URL").expect("ECSCALE_TEST_MOTO_URL (run scripts/bench/fleet)");
    let made = Instant::now();
    let fleet = fleet(&url, args.services).await;
    println!(
        "fleet: {} services in {} clusters, in 2 accounts and 2 regions, made in moto in {:.0} s; a tick every {TICK_SECS} s ({}), {} ticks",
        fleet.services.len(),
        fleet.clusters.len(),
        made.elapsed().as_secs_f64(),
        if args.hour { "real clock, AWS's buckets enforced" } else { "virtual clock" },
        args.ticks
    );
    let proxy = if args.hour {
        Some(proxy::Proxy::start_enforcing(&url).await)
    } else {
        None
    };
    let endpoint = proxy.as_ref().map_or(url.clone(), |p| p.url.clone());
    let dir = tempfile::tempdir().unwrap();
    let changes = Arc::new(Changes::default());
    let (mut events, aws) = side(
        &config(dir.path(), &endpoint, &fleet, true),
        Some(changes.clone()),
    )
    .await;
    let poller = Poller {
        queue: Arc::new(aws.queue(&fleet.queue)),
        changes: changes.clone(),
        wait: Duration::ZERO,
    };
    let started = Instant::now();
    let (run, peer) = if args.hour {
        (real_ticks(&fleet, &mut events, &poller, args.ticks).await, None)
    } else {
        let (mut peer, _) = side(&config(dir.path(), &endpoint, &fleet, false), None).await;
        let run = virtual_ticks(&fleet, &mut events, &mut peer, &poller, args.ticks).await;
        (run, Some(peer))
    };
    println!(
        "\nsummary, after the first pass ({} ticks):",
        args.ticks.saturating_sub(1)
    );
    summary("events", &events);
    if let Some(peer) = &peer {
        summary("every pass", peer);
    }
    let (reads, _) = events.collector.reads(Utc::now());
    println!(
        "service reads with events: {reads:?}; events queue: {:?}",
        changes.counts()
    );
    if let Some(p) = &proxy {
        println!(
            "AWS's buckets, per account, region and family, over the run ({:.0} s):",
            started.elapsed().as_secs_f64()
        );
        buckets(p, started.elapsed().as_secs_f64());
    }
    let lag = |v: &[i64]| v.iter().copied().max().unwrap_or(0);
    let w = &run.watch;
    println!(
        "changes seen: {} with an event (longest from the change to the pass that saw it: {} s on the tick clock, 0 being the first pass after it), {} whose event was lost (longest {} s); still unseen: {}; oldest state served: {} s; ticks overrun: {:?}",
        w.seen_evented.len(),
        lag(&w.seen_evented),
        w.seen_lost.len(),
        lag(&w.seen_lost),
        w.open.len(),
        run.oldest_read,
        run.overruns
    );
    println!("peak RSS {:.0} MiB", run.peak_rss);
    cost(&events, fleet.services.len());
    let mut failed: Vec<String> = checks(&args, &events, &run)
        .into_iter()
        .map(str::to_string)
        .collect();
    if let Some(p) = &proxy {
        let over = over_budget(p, started.elapsed().as_secs_f64());
        failed.extend(over.into_iter().map(|b| format!("{b}: above 25 % of its bucket")));
    }
    if failed.is_empty() {
        println!("checks: all met");
    } else {
        println!("checks NOT met: {failed:?}");
        std::process::exit(1);
    }
}
