//! Simulator speed per simulated minute at 1, 7 and 28 days of load: one closed-loop run each of
//! the example policy (`policies/web.yaml` with `policies/capacity.yaml`), the AWS-style
//! baseline and the oracle, on one thread, on a seeded diurnal load with noise. The cost of a
//! simulated minute must not grow with the trace's length (a forecast refitted over a growing
//! history, a history read again whole, a replay that rescans what it has seen).
//!
//!     cargo bench --bench sim                  (3 interleaved rounds)
//!     taskset -c 0 cargo bench --bench sim -- 5
//!
//! Prints, per round and length, CPU microseconds per simulated minute for each scaler and the
//! seconds the three together take; then the medians and spreads over the rounds.

// A measuring program: its fixed inputs are known good, and failing loudly is right.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use ecscale::model::Sample;
use ecscale::sim::baseline::{Kind, Peer};
use ecscale::sim::run::{policies, CAPACITY_POLICY, WEB_POLICY};
use ecscale::sim::suite::{run_one, split_targets, Contender, Setup, TraceLoad};
use ecscale::sim::Spec;
use support::cpu_seconds;

const LENGTHS: [i64; 3] = [1, 7, 28];

/// A day's pattern (quiet night, busy day, evening hump), weekends lower, noise a minute.
fn trace(days: i64) -> TraceLoad {
    let start = DateTime::parse_from_rfc3339("2026-11-05T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f64 / 10_000.0 - 0.5
    };
    let samples = (0..days * 1440)
        .map(|m| {
            let h = (m % 1440) as f64 / 60.0;
            let day = (((h - 6.0) / 16.0 * std::f64::consts::PI).sin())
                .max(0.0)
                .powf(1.5);
            let evening = (-((h - 20.5) / 1.2).powi(2)).exp();
            let weekend = if matches!((m / 1440 + 3) % 7, 5 | 6) {
                0.6
            } else {
                1.0
            };
            let rps = (40.0 + 300.0 * day + 90.0 * evening) * weekend * (1.0 + 0.08 * noise());
            Sample {
                timestamp: start + TimeDelta::minutes(m),
                value: rps * 60.0,
            }
        })
        .collect();
    TraceLoad {
        name: format!("{days}d"),
        period_secs: 60,
        samples: Arc::new(samples),
    }
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3);
    let targets = policies(&[WEB_POLICY, CAPACITY_POLICY]).unwrap();
    let spec = Spec::example();
    let (services, capacity) = split_targets(&targets, &spec.auto_scaling_group);
    let setup = Setup {
        spec,
        slo_ms: 250.0,
        min: services[0].min,
        max: services[0].max,
        initial: None,
        record: false,
    };
    let contenders = [
        Contender::Ecscale(targets.clone()),
        Contender::Baseline {
            peer: Peer::defaults(Kind::Aws, 60.0, 40.0),
            capacity,
        },
        Contender::Oracle,
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // ECSCALE_BENCH_ONLY=ecscale|baseline|oracle: one scaler only (for profiling).
    let only = std::env::var("ECSCALE_BENCH_ONLY").ok();
    // ECSCALE_BENCH_DAYS=1|7|28: one length only.
    let days = std::env::var("ECSCALE_BENCH_DAYS").ok();
    let traces: Vec<TraceLoad> = LENGTHS.iter().map(|d| trace(*d)).collect();
    // [length][contender] → µs per simulated minute, one per round.
    let mut per_minute = vec![vec![Vec::new(); contenders.len()]; LENGTHS.len()];
    let mut totals = vec![Vec::new(); LENGTHS.len()];
    println!("round  days  µs per simulated minute: ecscale / baseline / oracle   seconds, all three");
    for round in 1..=rounds {
        for (i, t) in traces.iter().enumerate() {
            if days.as_deref().is_some_and(|d| d != LENGTHS[i].to_string()) {
                continue;
            }
            let mut all = 0.0;
            for (k, c) in contenders.iter().enumerate() {
                if only.as_deref().is_some_and(|o| o != c.label()) {
                    per_minute[i][k].push(0.0);
                    continue;
                }
                let cpu = cpu_seconds();
                let out = rt.block_on(run_one(&setup, t, c)).unwrap();
                let spent = cpu_seconds() - cpu;
                assert_eq!(out.totals.minutes as f64, t.minutes());
                per_minute[i][k].push(spent * 1e6 / t.minutes());
                all += spent;
            }
            totals[i].push(all);
            let m: Vec<String> = per_minute[i]
                .iter()
                .map(|v| format!("{:.0}", v[round - 1]))
                .collect();
            println!("{round:>5}  {:>4}  {:>50}   {all:.1}", LENGTHS[i], m.join(" / "));
        }
    }
    println!("\nmedian (min–max) over {rounds} rounds");
    for (i, days) in LENGTHS.iter().enumerate() {
        if totals[i].is_empty() {
            continue;
        }
        let cells: Vec<String> = per_minute[i].iter().map(|v| spread(v, 0)).collect();
        println!(
            "{days:>3} days: µs per simulated minute {}; all three {} s",
            cells.join(" / "),
            spread(&totals[i], 1)
        );
    }
}

/// `median (min–max)`.
fn spread(v: &[f64], digits: usize) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "{:.digits$} ({:.digits$}–{:.digits$})",
        s[s.len() / 2],
        s[0],
        s[s.len() - 1]
    )
}
