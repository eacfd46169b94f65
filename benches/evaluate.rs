//! One engine tick for 10,000 targets, 3 rules each (target tracking, step scaling, an
//! expression), each metric with a 1-hour window of 1-minute datapoints; one thread. Each
//! target's metrics are found in one snapshot's series as the worker finds them.
//! Goal: under 50 ms per tick and under 200 MB (a fleet of 10,000 services wants under 20 ms).
//!
//!     cargo bench --bench evaluate --no-run && taskset -c 0 cargo bench --bench evaluate
//!
//! Prints the tick time (median, p95, min over the ticks), the decisions, and the peak resident
//! memory of the process (VmHWM).

// A measuring program: its fixed inputs are known good, and failing loudly is right.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use ecscale::eval_io::{MetricSet, Observation};
use ecscale::evaluate::{decide, TargetState};
use ecscale::model::{Action, Sample, Series, SeriesIndex, ServiceKey, TargetKey};

const TARGETS: usize = 10_000;
const WINDOW: usize = 60;
const TICKS: usize = 30;

const POLICY: &str = "target: {cluster: bench, service: template}
min: 2
max: 100
rules:
  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, scale_out_datapoints: 3, scale_in_datapoints: 15}
  - name: queue
    kind: step_scaling
    metric: queue_depth
    datapoints: 3
    of: 5
    scale_out: [{above: 500, change: 2}, {above: 2000, percent: 50, min_magnitude: 3}]
    scale_in: [{below: 20, change: -1}]
  - {name: latency, kind: expression, expression: 'if(max_over(latency, 5) > 0.5, current + 1, current)'}
";

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A deterministic pseudo-random sequence (no dependency, reproducible figures).
fn noise(seed: u64) -> f64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % 10_000) as f64 / 10_000.0
}

fn main() {
    let template = ecscale::policy::load_str(POLICY, "bench.yaml", Path::new("."))
        .expect("bench policy")
        .remove(0);
    let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().expect("time");
    let policies: Vec<_> = (0..TARGETS)
        .map(|i| {
            let mut p = template.clone();
            p.target = TargetKey::service("bench", format!("svc-{i:05}"));
            p
        })
        .collect();
    // Per target: cpu around 30..90, queue 0..3000, latency 0.1..0.7 s; one hour of minutes.
    // Collected into one snapshot's series, as the worker reads them.
    let series: Vec<Series> = (0..TARGETS as u64)
        .flat_map(|i| {
            let make = |k: u64, id: &str, base: f64, spread: f64| Series {
                cluster: "bench".into(),
                service: format!("svc-{i:05}"),
                id: id.into(),
                period_secs: 60,
                status: "Complete".into(),
                complete_until: now,
                samples: (0..WINDOW as i64)
                    .map(|m| Sample {
                        timestamp: now - TimeDelta::minutes(WINDOW as i64 - m),
                        value: base + spread * noise(i * 1_000_003 + k * 7919 + m as u64),
                    })
                    .collect(),
                ..Series::default()
            };
            let level = noise(i);
            [
                make(1, "cpu", 30.0 + 60.0 * level, 10.0),
                make(2, "queue_depth", 3000.0 * level, 200.0),
                make(3, "latency", 0.1 + 0.6 * level, 0.05),
            ]
        })
        .collect();
    let mut states = vec![TargetState::default(); TARGETS];
    let mut counts: Vec<u32> = (0..TARGETS).map(|i| 2 + (i % 20) as u32).collect();
    let externals = BTreeMap::new();

    let mut times = Vec::with_capacity(TICKS);
    let mut mixes = Vec::with_capacity(TICKS);
    for tick in 0..TICKS {
        let at = now + TimeDelta::seconds(30 * tick as i64);
        let started = Instant::now();
        let mut by_action: BTreeMap<&'static str, usize> = BTreeMap::new();
        // As the worker: each service's series found through an index built once a tick.
        let index = SeriesIndex::new(&series);
        for i in 0..TARGETS {
            let TargetKey::Service { cluster, service } = &policies[i].target else {
                unreachable!("every bench target is a service")
            };
            let key = ServiceKey::new(&**cluster, &**service);
            let set = MetricSet::of_series(index.series_of(&key));
            let obs = Observation::settled(at, counts[i], &set);
            let d = decide(&policies[i], &obs, &states[i], &externals);
            states[i].record(&policies[i], &d, true);
            counts[i] = d.desired;
            *by_action
                .entry(match d.action {
                    Action::ScaleOut => "scale_out",
                    Action::ScaleIn => "scale_in",
                    Action::Hold => "hold",
                })
                .or_default() += 1;
        }
        times.push(started.elapsed());
        mixes.push(by_action);
    }
    let mut sorted = times.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(sorted[sorted.len() / 2]);
    let p95 = ms(sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)]);
    let rss = peak_rss_mib();
    println!("evaluate: {TARGETS} targets x 3 rules, {WINDOW} one-minute datapoints per metric, 1 thread, {TICKS} ticks");
    println!(
        "tick: median {median:.1} ms, p95 {p95:.1} ms, min {:.1} ms, first {:.1} ms",
        ms(sorted[0]),
        ms(times[0])
    );
    println!("per target: {:.2} us", median * 1000.0 / TARGETS as f64);
    println!(
        "decisions in the first tick: {:?}; in the last: {:?}",
        mixes[0],
        mixes[TICKS - 1]
    );
    println!("peak RSS: {rss:.0} MiB");
    let ok = median < 50.0 && rss < 200.0;
    println!(
        "goal: < 50 ms per tick and < 200 MB: {}",
        if ok { "met" } else { "NOT met" }
    );
}
