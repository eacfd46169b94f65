//! The peers on the virtual clock: each behaves as its documentation says.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::sim::metrics::StatSet;
use crate::sim::run::{self, closed_loop, LoopOptions, Outcome, Scaler};
use crate::sim::{Clock, Spec};

const SLO_MS: f64 = 250.0;

fn t0() -> DateTime<Utc> {
    "2026-11-23T00:00:00Z".parse().unwrap() // a Monday
}

fn at(min: f64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds((min * 60_000.0) as i64)
}

/// Runs `peer` from `t0` for `minutes` under `load`, the instances sized by the capacity policy.
async fn run_peer(peer: &Peer, load: &dyn Fn(DateTime<Utc>) -> f64, minutes: f64, initial: u32) -> Outcome {
    let mut spec = Spec::example();
    spec.initial_tasks = initial;
    spec.initial_instances = initial.div_ceil(3).max(3);
    let sim = Sim::new(spec.clone(), t0(), Clock::Manual);
    let config = run::config(&spec, Duration::from_secs(15)).unwrap();
    let capacity = run::worker(
        config,
        run::policies(&[run::CAPACITY_POLICY]).unwrap(),
        &sim,
        None,
    )
    .await
    .unwrap();
    let opts = LoopOptions {
        until: at(minutes),
        tick: Duration::from_secs(15),
        step: Duration::from_secs(5),
        slo_p95_ms: SLO_MS,
        faults: Vec::new(),
    };
    let scaler = Scaler::Baseline {
        baseline: Box::new(Baseline::new(peer)),
        bounds: (3, 40),
        capacity: Box::new(capacity),
    };
    closed_loop(&sim, scaler, load, &opts).await
}

fn service_actions(o: &Outcome) -> Vec<&run::ActionRow> {
    o.actions
        .iter()
        .filter(|a| a.target == "production/web")
        .collect()
}

fn first_out_after(o: &Outcome, t: DateTime<Utc>) -> Option<f64> {
    service_actions(o)
        .into_iter()
        .find(|a| a.at >= t && a.to > a.from)
        .map(|a| (a.at - t).num_milliseconds() as f64 / 1000.0)
}

/// 100 requests/s, then 200 from minute 20 (mid-minute, as a load test would start).
fn step(t: DateTime<Utc>) -> f64 {
    if t < at(20.5) {
        100.0
    } else {
        200.0
    }
}

#[tokio::test]
async fn high_resolution_target_tracking_triggers_sooner_by_about_the_ratio_aws_measured() {
    // 5 tasks: 50 % CPU before the step, 100 % after.
    let slow = run_peer(&Peer::defaults(Kind::Aws, 60.0, 40.0), &step, 35.0, 5).await;
    let fast = run_peer(&Peer::defaults(Kind::AwsHires, 60.0, 40.0), &step, 35.0, 5).await;
    let (slow_s, fast_s) = (
        first_out_after(&slow, at(20.5)).expect("aws scales out"),
        first_out_after(&fast, at(20.5)).expect("aws-hires scales out"),
    );
    // AWS measured 363 s and 86 s from the load increase to the trigger: 4.2 times faster.
    let ratio = slow_s / fast_s;
    assert!(
        (363.0 / 86.0 * 0.7..=363.0 / 86.0 * 1.3).contains(&ratio),
        "aws {slow_s} s, aws-hires {fast_s} s, ratio {ratio:.2}"
    );
    assert!((60.0..=120.0).contains(&fast_s), "aws-hires {fast_s} s");
    assert!((300.0..=420.0).contains(&slow_s), "aws {slow_s} s");
    let reason = &service_actions(&fast)[0].reason;
    assert!(reason.contains("3/3 datapoints of 20 s"), "{reason}");
}

#[tokio::test]
async fn the_hpa_holds_within_its_tolerance_and_waits_its_stabilization_before_scaling_down() {
    // 6 tasks at 148 requests/s run at about 64 % CPU: within 10 % of a 60 % target.
    let load = |t: DateTime<Utc>| if t < at(30.0) { 148.0 } else { 60.0 };
    let out = run_peer(&Peer::defaults(Kind::Hpa, 60.0, 40.0), &load, 45.0, 6).await;
    let acts = service_actions(&out);
    assert!(
        acts.iter().all(|a| a.at >= at(30.0)),
        "no action within the tolerance: {acts:?}"
    );
    let down = acts.iter().find(|a| a.to < a.from).expect("a scale-down");
    // The drop shows in the datapoints from about minute 30.7; the window is 300 s.
    assert!(
        down.at >= at(35.0),
        "scale-down at {}, before the stabilization window",
        down.at
    );
    assert!(down.at <= at(37.0), "scale-down at {}", down.at);
    assert!(down.reason.starts_with("HPA:"), "{}", down.reason);
    // once stabilized, it goes to the count the low load needs in one step
    assert!(down.to <= 3, "{down:?}");
}

#[tokio::test]
async fn the_hpa_scales_up_by_at_most_double_or_four_tasks_a_sync() {
    let load = |t: DateTime<Utc>| if t < at(5.0) { 60.0 } else { 900.0 };
    let out = run_peer(&Peer::defaults(Kind::Hpa, 60.0, 40.0), &load, 12.0, 3).await;
    let ups: Vec<_> = service_actions(&out)
        .into_iter()
        .filter(|a| a.to > a.from)
        .collect();
    assert!(ups.len() >= 2, "{ups:?}");
    for a in &ups {
        assert!(a.to <= (a.from * 2).max(a.from + 4), "{a:?}");
    }
}

/// Fills the simulated CloudWatch with `days` of ALB RequestCount: 600 a minute, with a spike of
/// 6,000 a minute from 09:00 to 10:00 each day.
fn history(sim: &Sim, days: i64) {
    let mut g = sim.lock();
    let tg = sim.spec.target_group();
    for m in 0..days * 1440 {
        let t = t0() + TimeDelta::minutes(m);
        let v = if (540..600).contains(&(m % 1440)) {
            6000.0
        } else {
            600.0
        };
        g.store.put(
            "AWS/ApplicationELB",
            "RequestCount",
            &[("TargetGroup", tg.as_str())],
            t,
            StatSet::one(v),
            t,
        );
    }
}

#[test]
fn the_predictive_forecast_needs_a_day_and_raises_capacity_a_buffer_ahead_of_the_hour() {
    let spec = Spec::example();
    let sim = Sim::new(spec, t0(), Clock::Manual);
    history(&sim, 14);
    let settings = predictive::Settings::aws(60.0, 40.0); // 1440 requests a minute per task
    let day =
        |d: i64, h: i64, m: i64| t0() + TimeDelta::days(d) + TimeDelta::hours(h) + TimeDelta::minutes(m);
    // half a day of history: no forecast
    let mut f = predictive::Forecaster::new(settings.clone());
    assert_eq!(f.floor(&sim, day(0, 12, 0)), None);
    // fourteen days: the spike's hour needs ceil(6000 / 1440) = 5 tasks, the others 1
    let mut f = predictive::Forecaster::new(settings.clone());
    assert_eq!(f.floor(&sim, day(14, 8, 0)), Some(1));
    assert_eq!(f.floor(&sim, day(14, 8, 54)), Some(1), "before the buffer");
    assert_eq!(f.floor(&sim, day(14, 8, 56)), Some(5), "within 300 s of 09:00");
    assert_eq!(f.floor(&sim, day(14, 9, 30)), Some(5));
    assert_eq!(f.floor(&sim, day(14, 10, 30)), Some(1));
}

#[tokio::test]
async fn aws_predictive_scales_ahead_of_a_daily_spike_once_it_has_a_day() {
    // Two days: a quiet 100 requests/s, and 600 from 09:00 to 10:00.
    let load = |t: DateTime<Utc>| {
        let m = (t - t0()).num_minutes() % 1440;
        if (540..600).contains(&m) {
            600.0
        } else {
            100.0
        }
    };
    let hires = run_peer(
        &Peer::defaults(Kind::AwsHires, 60.0, 40.0),
        &load,
        2.0 * 1440.0,
        5,
    )
    .await;
    let pred = run_peer(
        &Peer::defaults(Kind::AwsPredictive, 60.0, 40.0),
        &load,
        2.0 * 1440.0,
        5,
    )
    .await;
    let spike = t0() + TimeDelta::days(1) + TimeDelta::hours(9);
    let count_at =
        |o: &Outcome, t: DateTime<Utc>| o.rows.iter().find(|r| r.t == t).map(|r| r.desired).unwrap();
    // The second day: capacity is raised before the spike, at most the buffer ahead.
    let before = count_at(&pred, spike - TimeDelta::minutes(1));
    assert!(
        before >= 14,
        "predictive had {before} tasks a minute before the spike"
    );
    assert!(count_at(&pred, spike - TimeDelta::minutes(7)) < 14);
    assert!(count_at(&hires, spike - TimeDelta::minutes(1)) < 14);
    // The first day (no history yet) it reacts like target tracking alone.
    let first = spike - TimeDelta::days(1);
    assert_eq!(count_at(&pred, first), count_at(&hires, first));
    let slo = |o: &Outcome| {
        o.rows
            .iter()
            .filter(|r| r.t >= spike && r.t < spike + TimeDelta::hours(1))
            .filter(|r| run::violates(r, SLO_MS))
            .count()
    };
    assert!(slo(&pred) < slo(&hires), "{} vs {}", slo(&pred), slo(&hires));
}

#[test]
fn a_peer_is_read_with_its_settings_and_a_wrong_one_is_named() {
    let p = Peer::parse("aws-hires:target=55,cooldown-in=120s,in=5", 60.0, 40.0).unwrap();
    let Peer::AwsHires(s) = &p else { panic!("{p:?}") };
    assert_eq!((s.target, s.scale_in_datapoints, s.period_secs), (55.0, 5, 20));
    assert_eq!(s.scale_in_cooldown, Duration::from_secs(120));
    assert_eq!(Peer::parse("hpa", 70.0, 40.0).unwrap().target(), 70.0);
    let swept = Peer::parse("aws-predictive", 60.0, 40.0)
        .unwrap()
        .with_target(30.0);
    let Peer::AwsPredictive { forecast, .. } = &swept else {
        panic!()
    };
    assert!(
        (forecast.per_task - 720.0).abs() < 1e-9,
        "the load per task follows the target"
    );
    for (text, says) in [
        (
            "k8s",
            "`k8s` is not a peer: one of aws, aws-hires, aws-predictive, hpa",
        ),
        ("hpa:tolerance=0.1,lead=3", "`lead` is not a setting of hpa"),
        ("aws:out", "`out`: settings are key=value"),
        ("aws:out=x", "out=x: not a whole number"),
        ("aws:target=120", "target 120: a CPU percentage"),
        ("hpa:tolerance=1.5", "tolerance 1.5"),
        ("aws-predictive:buffer=2h", "buffer: under an hour"),
    ] {
        let e = Peer::parse(text, 60.0, 40.0).unwrap_err();
        assert!(e.contains(says), "{text}: {e}");
    }
}
