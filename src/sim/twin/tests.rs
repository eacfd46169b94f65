//! A twin fitted to the simulator's own history finds the simulator's parameters.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::sim::record::trace_of;
use crate::sim::run::{self, closed_loop, LoopOptions, Scaler};
use crate::sim::{Clock, Sim};

fn t0() -> DateTime<Utc> {
    "2026-11-23T00:00:00Z".parse().unwrap()
}

/// Levels held 45 minutes each: quiet, busy, quiet, busy again, as a day would bring them
/// (two rises, so the group launches enough instances to time their boot).
const LEVELS: [f64; 10] = [20.0, 60.0, 150.0, 300.0, 420.0, 200.0, 80.0, 30.0, 250.0, 440.0];

fn levels(t: DateTime<Utc>) -> f64 {
    let k = ((t - t0()).num_minutes() / 45) as usize;
    LEVELS[k.min(LEVELS.len() - 1)]
}

/// History made by the example policies on a simulated service with these parameters.
async fn history(spec: Spec) -> Trace {
    let minutes = LEVELS.len() as i64 * 45;
    let sim = Sim::new(spec.clone(), t0(), Clock::Manual);
    let config = run::config(&spec, Duration::from_secs(15)).unwrap();
    let policies = run::policies(&[run::WEB_POLICY, run::CAPACITY_POLICY]).unwrap();
    let worker = run::worker(config, policies, &sim, None).await.unwrap();
    let end = t0() + TimeDelta::minutes(minutes);
    let opts = LoopOptions {
        until: end,
        tick: Duration::from_secs(15),
        step: Duration::from_secs(5),
        slo_p95_ms: 250.0,
        faults: Vec::new(),
    };
    closed_loop(&sim, Scaler::Ecscale(Box::new(worker)), &levels, &opts).await;
    trace_of(&sim, (t0(), end))
}

fn within(e: &Estimate, want: f64, share: f64) {
    let v = e.value().unwrap_or_else(|| panic!("no estimate: {e:?}"));
    assert!((v - want).abs() <= want * share, "{v} for {want}: {e:?}");
}

#[tokio::test]
async fn a_twin_recovers_the_simulator_s_own_parameters_from_its_history() {
    let mut spec = Spec::example();
    spec.task_rps = 25.0;
    spec.task_start = Duration::from_secs(60);
    spec.instance_boot = Duration::from_secs(120);
    let t = history(spec).await;
    for c in [
        columns::LOAD,
        columns::CPU,
        columns::PENDING,
        columns::GROUP_DESIRED,
    ] {
        assert!(t.series.get(c).is_some_and(|s| !s.is_empty()), "{c}");
    }
    let f = fit(&t);
    within(&f.task_rps, 25.0, 0.10);
    within(&f.task_start, 60.0, 0.10);
    within(&f.instance_boot, 120.0, 0.10);
    within(&f.service_time, 1.0 / 25.0, 0.10);
    within(&f.queueing, QUEUEING_DEFAULT, 0.25);
    // the levels are steady: little noise a minute
    assert!(f.noise.value().unwrap() < 0.02, "{:?}", f.noise);
    // what the twin runs with is what was fitted
    let twin = Twin::of(&f);
    let mut spec = Spec::example();
    twin.apply(&mut spec);
    assert!((spec.task_rps - 25.0).abs() < 2.5 && spec.task_start.as_secs() >= 54);
    // and it survives its own file
    let text = file::render(&f, &twin);
    let back = file::load_str(&text, "twin.yaml").unwrap();
    assert!((back.task_rps - twin.task_rps).abs() < 1e-3, "{text}");
    assert_eq!(back.task_start.as_millis(), twin.task_start.as_millis(), "{text}");
    assert!(
        text.contains("steady minutes") && text.contains("tasks started"),
        "{text}"
    );
}

const QUEUEING_DEFAULT: f64 = crate::sim::cluster::QUEUEING;

#[test]
fn a_trace_without_the_columns_a_fit_needs_says_so_and_keeps_the_defaults() {
    let t = crate::evaluate::trace::parse_csv(
        "timestamp,request_count\n2026-11-23T00:00:00Z,600\n2026-11-23T00:01:00Z,660\n",
        "load.csv",
    )
    .unwrap();
    let f = fit(&t);
    for (name, e, says) in [
        ("task_rps", &f.task_rps, "no `cpu` column"),
        ("service_time", &f.service_time, "needs the requests per task"),
        ("task_start", &f.task_start, "no `pending` column"),
        ("instance_boot", &f.instance_boot, "no `instances_pending` column"),
        ("noise", &f.noise, "minute pairs with load"),
    ] {
        match e {
            Estimate::Missing { why } => assert!(why.contains(says), "{name}: {why}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    let twin = Twin::of(&f);
    assert_eq!(
        twin,
        Twin {
            noise: None,
            ..Twin::defaults()
        }
    );
    let text = file::render(&f, &twin);
    assert!(
        text.contains("task_rps: 40.000") && text.contains("the default: no `cpu` column"),
        "{text}"
    );
}

#[test]
fn a_twin_file_with_mistakes_names_each_with_its_place() {
    let e = file::load_str(
        "task_rps: -3\nqueueing: lots\ntask_start: 0s\nboot: 90s\n",
        "twin.yaml",
    )
    .unwrap_err()
    .to_string();
    for says in [
        "twin.yaml:1:11: task_rps: -3 is not a positive rate",
        "twin.yaml:2:11: queueing:",
        "twin.yaml:3:13: task_start: longer than 0",
        "twin.yaml:4:1: boot: unknown key `boot`",
    ] {
        assert!(e.contains(says), "{says}\n{e}");
    }
}
