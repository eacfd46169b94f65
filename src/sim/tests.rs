//! Closed-loop tests on the virtual clock: the real worker with the example policies against the
//! simulated cluster under a ramp, with a task and an instance killed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::baseline::{Baseline, Kind, Peer};
use super::run::{self, closed_loop, Fault, LoopOptions, Outcome, Scaler};
use super::{Clock, Row, Sim, Spec};

const SLO_MS: f64 = 250.0;

fn t0() -> DateTime<Utc> {
    "2026-11-25T10:00:00Z".parse().unwrap()
}

fn at(min: f64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds((min * 60_000.0) as i64)
}

/// 60 rps for 10 min, up to 400 over 10 min, 20 min at 400, down over 5 min, 60 rps after.
fn ramp(t: DateTime<Utc>) -> f64 {
    let m = (t - t0()).num_milliseconds() as f64 / 60_000.0;
    match m {
        m if m < 10.0 => 60.0,
        m if m < 20.0 => 60.0 + 340.0 * (m - 10.0) / 10.0,
        m if m < 40.0 => 400.0,
        m if m < 45.0 => 400.0 - 340.0 * (m - 40.0) / 5.0,
        _ => 60.0,
    }
}

/// A fresh simulated cluster and a worker on it with these policies.
async fn setup(policies: &[(&str, &str)]) -> (Arc<Sim>, crate::worker::Worker) {
    setup_spec(Spec::example(), policies).await
}

async fn setup_spec(spec: Spec, policies: &[(&str, &str)]) -> (Arc<Sim>, crate::worker::Worker) {
    let sim = Sim::new(spec.clone(), t0(), Clock::Manual);
    let config = run::config(&spec, Duration::from_secs(15));
    let worker = run::worker(config.unwrap(), run::policies(policies).unwrap(), &sim, None).await;
    (sim, worker.unwrap())
}

async fn run_ecscale(faults: Vec<(DateTime<Utc>, Fault)>, minutes: f64) -> (Arc<Sim>, Outcome) {
    let (sim, worker) = setup(&[run::WEB_POLICY, run::CAPACITY_POLICY]).await;
    let opts = LoopOptions {
        until: at(minutes),
        tick: Duration::from_secs(15),
        step: Duration::from_secs(5),
        slo_p95_ms: SLO_MS,
        faults,
    };
    let out = closed_loop(&sim, Scaler::Ecscale(Box::new(worker)), &ramp, &opts).await;
    (sim, out)
}

fn row(out: &Outcome, min: i64) -> &Row {
    out.rows
        .iter()
        .find(|r| r.t == t0() + TimeDelta::minutes(min))
        .unwrap()
}

fn table(out: &Outcome) -> String {
    out.rows.iter().map(|r| r.line() + "\n").collect::<String>()
        + &out
            .actions
            .iter()
            .map(|a| {
                format!(
                    "{} {} {}→{} {}\n",
                    a.at.format("%H:%M:%S"),
                    a.target,
                    a.from,
                    a.to,
                    a.reason
                )
            })
            .collect::<String>()
        + &format!("{:?}\n{:?}\n", out.totals, out.problems)
}

#[tokio::test]
async fn under_a_ramp_the_service_scales_out_recovers_and_scales_back_in_without_flapping() {
    let faults = vec![(at(28.0), Fault::KillTask), (at(32.0), Fault::KillInstance)];
    let (_sim, out) = run_ecscale(faults, 130.0).await;
    let t = table(&out);
    let web = "production/web";
    let svc: Vec<_> = out.actions.iter().filter(|a| a.target == web).collect();
    // scales out under the ramp
    let peak = out.rows.iter().map(|r| r.desired).max().unwrap();
    assert!(peak >= 15, "peak desired {peak}\n{t}");
    // p95 back under the SLO well before the hold ends, and over it for a few minutes at most
    for m in 24..40 {
        if m == 32 || m == 33 {
            continue; // the instance kill takes a third of the tasks away for a moment
        }
        let r = row(&out, m);
        assert!(r.p95_ms.unwrap() < SLO_MS, "minute {m}: {r:?}\n{t}");
    }
    assert!(out.totals.slo_violation_minutes <= 12, "{t}");
    // back to the minimum after the load ends
    let last = out.rows.last().unwrap();
    assert_eq!(last.desired, 3, "{t}");
    assert!(last.instances <= 4, "instances given back: {last:?}\n{t}");
    // no flapping: once scale-in started, no scale-out (the load only fell)
    let first_in = svc.iter().position(|a| a.to < a.from).expect("a scale-in");
    assert!(svc[first_in..].iter().all(|a| a.to < a.from), "{t}");
    assert!(svc[..first_in].iter().all(|a| a.to > a.from), "{t}");
    // a loss is not demand: no scale-out above the count set before each fault
    for fault in [28, 32] {
        let before = row(&out, fault - 1).desired;
        let after = (fault..fault + 5).map(|m| row(&out, m).desired).max().unwrap();
        assert!(
            after <= before,
            "minute {fault}: {before} before, {after} after\n{t}"
        );
    }
    // the killed task and instance were replaced: running = desired two minutes later
    for m in [30, 35] {
        let r = row(&out, m);
        assert_eq!(r.running, r.desired, "minute {m}: {r:?}\n{t}");
    }
    let kinds: Vec<&str> = out.events.iter().map(|e| e.kind).collect();
    for k in [
        "task_killed",
        "instance_killed",
        "instance_launched",
        "instance_in_service",
    ] {
        assert!(kinds.contains(&k), "{k}\n{t}");
    }
    // capacity grows before tasks wait long: never more than 3 minutes with a task unplaced
    let mut streak = 0;
    for r in &out.rows {
        streak = if r.provisioning > 0 { streak + 1 } else { 0 };
        assert!(streak <= 3, "{r:?}\n{t}");
    }
    // instances: no more than the tasks need (3 per m5.large with 10 % headroom, +1 for the
    // instance killed), and never launched again right after being given back
    assert!(out.totals.peak_instances <= 10, "{t}");
    let asg: Vec<_> = out
        .actions
        .iter()
        .filter(|a| a.target.starts_with("asg/"))
        .collect();
    for w in asg.windows(2) {
        let flip = (w[0].to < w[0].from) != (w[1].to < w[1].from);
        assert!(
            !flip || w[1].at - w[0].at > TimeDelta::minutes(10),
            "instance flapping: {w:?}\n{t}"
        );
    }
    assert!(out.problems.is_empty(), "{t}");
}

#[tokio::test]
async fn the_aws_style_baseline_reacts_later_on_the_same_ramp() {
    let (sim, capacity) = setup(&[run::CAPACITY_POLICY]).await;
    let baseline = Baseline::new(&Peer::defaults(Kind::Aws, 60.0, sim.spec.task_rps));
    let opts = LoopOptions {
        until: at(100.0),
        tick: Duration::from_secs(15),
        step: Duration::from_secs(5),
        slo_p95_ms: SLO_MS,
        faults: Vec::new(),
    };
    let base = closed_loop(
        &sim,
        Scaler::Baseline {
            baseline: Box::new(baseline),
            bounds: (3, 40),
            capacity: Box::new(capacity),
        },
        &ramp,
        &opts,
    )
    .await;
    let (_, ours) = run_ecscale(Vec::new(), 100.0).await;
    let first_out = |o: &Outcome| {
        o.actions
            .iter()
            .find(|a| a.target == "production/web")
            .map(|a| a.at)
            .unwrap()
    };
    assert!(
        first_out(&ours) < first_out(&base),
        "ours\n{}\nbaseline\n{}",
        table(&ours),
        table(&base)
    );
    assert!(
        ours.totals.slo_violation_minutes < base.totals.slo_violation_minutes,
        "ours\n{}\nbaseline\n{}",
        table(&ours),
        table(&base)
    );
    // the baseline's high alarm needs 3 datapoints above 60 %: its reasons say so
    assert!(
        base.actions.iter().any(|a| a.reason.contains("3/3 datapoints")),
        "{}",
        table(&base)
    );
}

/// The example policies, the AWS-style baseline and the oracle on every trace of the suite.
fn suite_jobs(policies: &[(&str, &str)], traces: &[super::suite::TraceLoad]) -> Vec<super::suite::Job> {
    use super::suite::{Contender, Job, Setup};
    let targets = run::policies(policies).unwrap();
    let (services, capacity) = super::suite::split_targets(&targets, &Spec::example().auto_scaling_group);
    let setup = Setup {
        spec: Spec::example(),
        slo_ms: SLO_MS,
        min: services[0].min,
        max: services[0].max,
        initial: None,
        record: false,
    };
    let mut jobs = Vec::new();
    for trace in traces {
        for contender in [
            Contender::Ecscale(targets.clone()),
            Contender::Baseline {
                peer: Peer::defaults(Kind::Aws, 60.0, 40.0),
                capacity: capacity.clone(),
            },
            Contender::Oracle,
        ] {
            jobs.push(Job {
                setup: setup.clone(),
                trace: trace.clone(),
                contender,
            });
        }
    }
    jobs
}

fn suite_traces(names: &[&str]) -> Vec<super::suite::TraceLoad> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/traces");
    names
        .iter()
        .map(|n| {
            super::suite::TraceLoad::read(&dir.join(format!("{n}.csv")), "request_count")
                .unwrap()
                .0
        })
        .collect()
}

/// SLO minutes after the first day of a run.
fn after_first_day(o: &Outcome) -> usize {
    after_first_day_over(o, SLO_MS)
}

/// Minutes after the first day of a run over an SLO of `slo_ms`.
fn after_first_day_over(o: &Outcome, slo_ms: f64) -> usize {
    let start = o.rows.first().map(|r| r.t).unwrap();
    o.rows
        .iter()
        .filter(|r| r.t >= start + TimeDelta::days(1) && run::violates(r, slo_ms))
        .count()
}

#[test]
fn on_every_load_shape_the_oracle_bounds_both_scalers_and_the_example_policy_meets_its_goals() {
    let names = [
        "diurnal-spike",
        "step",
        "herd",
        "sawtooth",
        "bursts",
        "slow-ramp",
        "multi-day",
    ];
    let traces = suite_traces(&names);
    let out: Vec<Outcome> = super::suite::run_all(
        suite_jobs(&[run::WEB_POLICY, run::CAPACITY_POLICY], &traces),
        super::suite::threads(),
    )
    .into_iter()
    .map(|r| r.unwrap())
    .collect();
    let mut report = String::new();
    let (mut ours_total, mut theirs_total) = (0, 0);
    for (name, o) in names.iter().zip(out.chunks(3)) {
        let (e, b, oracle) = (&o[0].totals, &o[1].totals, &o[2].totals);
        report += &format!(
            "{name}: SLO minutes {} / {} / {}, task-hours {:.1} / {:.1} / {:.1}\n",
            e.slo_violation_minutes,
            b.slo_violation_minutes,
            oracle.slo_violation_minutes,
            e.task_hours,
            b.task_hours,
            oracle.task_hours
        );
        ours_total += e.slo_violation_minutes;
        theirs_total += b.slo_violation_minutes;
        // The oracle is a bound: if a scaler beats it, the oracle is wrong.
        assert!(
            oracle.slo_violation_minutes <= e.slo_violation_minutes.min(b.slo_violation_minutes),
            "{report}"
        );
        assert!(oracle.task_hours <= e.task_hours.min(b.task_hours), "{report}");
        // The example policy: no more SLO minutes than the baseline, at most 1.3× the oracle's
        // task-hours.
        assert!(e.slo_violation_minutes <= b.slo_violation_minutes, "{report}");
        assert!(e.task_hours <= 1.3 * oracle.task_hours, "{report}");
    }
    assert!(
        2 * ours_total <= theirs_total,
        "at most half the baseline's SLO minutes\n{report}"
    );
    // The multi-day trace: within 1.15× the oracle, and after its first day every morning's
    // surge met ahead: no minute 10 % over the SLO (the forecast's 90 % bound may fall a few
    // requests a second short of a surge's busiest minute, at the SLO's edge).
    let md = &out[out.len() - 3..];
    assert!(
        md[0].totals.task_hours <= 1.15 * md[2].totals.task_hours,
        "{report}"
    );
    assert_eq!(after_first_day_over(&md[0], 1.1 * SLO_MS), 0, "{report}");
}

#[test]
fn predictive_beats_reactive_only_on_the_multi_day_trace() {
    // policies/web.yaml without its predictive rule (and the targets that follow its forecast).
    let web = run::WEB_POLICY.1;
    let reactive: String = web[..web.find("  - name: forecast").unwrap()]
        .lines()
        .filter(|l| !l.trim_start().starts_with("foreseen_target:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!reactive.contains("kind: predictive"));
    let traces = suite_traces(&["multi-day"]);
    let mut jobs = suite_jobs(&[run::WEB_POLICY, run::CAPACITY_POLICY], &traces);
    jobs.truncate(1);
    jobs.extend(
        suite_jobs(&[("reactive.yaml", &reactive), run::CAPACITY_POLICY], &traces)
            .into_iter()
            .take(1),
    );
    let out: Vec<Outcome> = super::suite::run_all(jobs, super::suite::threads())
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let (with, without) = (&out[0], &out[1]);
    assert!(
        after_first_day(with) < after_first_day(without)
            && with.totals.slo_violation_minutes < without.totals.slo_violation_minutes,
        "with the forecast {} ({} after day 1), reactive only {} ({} after day 1)",
        with.totals.slo_violation_minutes,
        after_first_day(with),
        without.totals.slo_violation_minutes,
        after_first_day(without)
    );
    // Its votes say what the model saw: a daily pattern, from the day of history the simulated
    // CloudWatch holds.
    assert!(
        with.actions
            .iter()
            .any(|a| a.rule.as_deref() == Some("forecast") && a.reason.contains("daily")),
        "{:?}",
        with.actions
            .iter()
            .filter(|a| a.rule.as_deref() == Some("forecast"))
            .take(3)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn high_resolution_cpu_is_published_collected_and_acted_on_within_a_minute() {
    // A step from 60 to 300 requests/s at minute 5.
    let step = |t: DateTime<Utc>| if t < at(5.0) { 60.0 } else { 300.0 };
    let (sim, worker) = setup(&[run::WEB_POLICY, run::CAPACITY_POLICY]).await;
    let opts = LoopOptions {
        until: at(8.0),
        tick: Duration::from_secs(15),
        step: Duration::from_secs(5),
        slo_p95_ms: SLO_MS,
        faults: Vec::new(),
    };
    let out = closed_loop(&sim, Scaler::Ecscale(Box::new(worker)), &step, &opts).await;
    // The simulated CloudWatch holds CPU per 20 s: three datapoints a minute.
    let q = crate::api::MetricDataRequest {
        via: None,
        queries: vec![crate::api::MetricQuery {
            id: "c".into(),
            namespace: "AWS/ECS".into(),
            metric_name: "CPUUtilization".into(),
            dimensions: vec![
                ("ClusterName".into(), "production".into()),
                ("ServiceName".into(), "web".into()),
            ],
            stat: "Average".into(),
            period_secs: 20,
            unit: None,
        }],
        start: at(5.0),
        end: at(6.0),
    };
    let points = sim.lock().store.query(&q, at(8.0)).remove(0).points;
    assert_eq!(points.len(), 3, "{points:?}");
    // The worker read them at 20 s and acted on the first hot one: with 1-minute CPU and its
    // 60 s delay the step's first datapoint would only be seen two minutes after it began.
    let first = out.actions.iter().find(|a| a.target == "production/web").unwrap();
    assert!(
        first.at - at(5.0) <= TimeDelta::seconds(60),
        "{first:?}\n{}",
        table(&out)
    );
    assert_eq!(first.rule.as_deref(), Some("cpu"), "{first:?}");
}

#[tokio::test]
async fn two_workloads_of_different_sizes_share_the_instances_under_a_ramp() {
    let spec = Spec::two_workloads();
    // The capacity stage alone sizes the instances, for the tasks (no reservation target:
    // that keeps room empty on purpose).
    let policies = [run::WEB_POLICY, run::QUEUE_WORKER_POLICY];
    let (sim, worker) = setup_spec(spec.clone(), &policies).await;
    let opts = LoopOptions {
        until: at(90.0),
        tick: Duration::from_secs(15),
        step: Duration::from_secs(5),
        slo_p95_ms: SLO_MS,
        faults: vec![(at(30.0), Fault::KillInstance)],
    };
    let out = closed_loop(&sim, Scaler::Ecscale(Box::new(worker)), &ramp, &opts).await;
    let t = table(&out)
        + &out
            .groups
            .iter()
            .map(|g| {
                format!(
                    "{} {} {}/{}\n",
                    g.at.format("%H:%M:%S"),
                    g.group,
                    g.placed,
                    g.desired
                )
            })
            .collect::<String>();
    assert!(out.problems.is_empty(), "{t}");
    // Both workloads scale out with the load and back in after it: at 400 requests/s the
    // queue receives 100 jobs/s, 7 tasks' work at 15 a second.
    let peak = |f: &dyn Fn(&Row) -> u32| out.rows.iter().map(f).max().unwrap();
    assert!(peak(&|r| r.desired) >= 15, "{t}");
    let group_peak = peak(&|r| r.groups[0].running);
    assert!((7..=12).contains(&group_peak), "group peak {group_peak}\n{t}");
    let last = out.rows.last().unwrap();
    assert_eq!(last.desired, 3, "{t}");
    assert!(last.groups[0].running <= 3, "{last:?}\n{t}");
    // The queue is worked off: no more than a minute of arrivals waits at the end.
    let sent: f64 = out.rows.iter().map(|r| r.groups[0].sent).sum();
    let done: f64 = out.rows.iter().map(|r| r.groups[0].done).sum();
    assert!(last.groups[0].queue <= 60.0 * 15.0, "{last:?}\n{t}");
    assert!(
        (sent - done - last.groups[0].queue).abs() < 1e-6 * sent,
        "jobs accounted"
    );
    // No task waits more than 3 minutes for an instance: service tasks PROVISIONING, and
    // group tasks decided but not placed.
    let c = &sim.lock().cluster;
    assert!(
        c.longest_wait() <= TimeDelta::minutes(3),
        "service {:?}\n{t}",
        c.longest_wait()
    );
    let short = super::report::longest_short(&out.groups, "queue-worker");
    assert!(short <= TimeDelta::minutes(3), "group {short:?}\n{t}");
    // Spread by zone holds at every minute: the group's counts per zone differ by at most 1,
    // except where the emptier zone has no room for one more of its tasks (then the task goes
    // where room is, and moves back once the zone has room: within a minute).
    let drift = super::report::spread_drift(&out.rows, 0);
    assert!(drift <= 1, "spread off for {drift} minutes\n{t}");
    // Every instance the capacity stage launched had a task within its scale-in cooldown
    // (5 minutes) of registering, unless the run ended first.
    let boot = TimeDelta::from_std(spec.instance_boot).unwrap();
    let cooldown = TimeDelta::minutes(5);
    for i in c.instances.iter().filter(|i| i.launched_at > t0()) {
        let due = i.launched_at + boot + cooldown;
        let used = i.first_task_at.is_some_and(|f| f <= due);
        assert!(
            used || due > c.now
                || i.status == super::cluster::InstanceStatus::Terminated && i.registered_at.is_none(),
            "instance {} launched {} never used by {due}\n{t}",
            i.id,
            i.launched_at
        );
    }
    // The kill took group tasks with it; they were replaced.
    let kinds: Vec<&str> = out.events.iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&"group_task_placed") && kinds.contains(&"group_task_stopped"),
        "{t}"
    );
}

#[test]
fn a_trace_too_long_to_simulate_or_with_a_negative_load_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, rows: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("timestamp,request_count\n{rows}")).unwrap();
        p
    };
    let read = |p: &std::path::Path| super::suite::TraceLoad::read(p, "request_count").map(|(l, _)| l);
    // Two rows a year apart: bounded as a trace (2 periods), but a year of simulated minutes.
    let far = write("far.csv", "2026-10-05T00:00:00Z,100\n2027-10-05T00:00:00Z,100\n");
    let e = read(&far).unwrap_err().to_string();
    assert!(
        e.contains("far.csv: --simulate runs the load minute by minute")
            && e.contains("at most 89280 (62 days)"),
        "{e}"
    );
    let minus = write(
        "minus.csv",
        "2026-10-05T00:00:00Z,100\n2026-10-05T00:01:00Z,-5\n2026-10-05T00:02:00Z,100\n",
    );
    let e = read(&minus).unwrap_err().to_string();
    assert!(
        e.contains("minus.csv:3: request_count: -5 at 2026-10-05T00:01:00Z: it is never negative"),
        "{e}"
    );
    // 62 days of 5-minute rows: the longest window accepted.
    let rows: String = (0..62 * 288)
        .map(|i| {
            let t = DateTime::<Utc>::from_timestamp(1_790_000_000 + i * 300, 0).unwrap();
            format!("{},500\n", t.format("%Y-%m-%dT%H:%M:%SZ"))
        })
        .collect();
    let longest = read(&write("longest.csv", &rows)).unwrap();
    assert_eq!(longest.minutes(), 62.0 * 1440.0);
}

/// 80 rps for 10 minutes, ×4 within a minute, held 25 minutes, then back.
fn jump(t: DateTime<Utc>) -> f64 {
    let m = (t - t0()).num_milliseconds() as f64 / 60_000.0;
    if (10.0..35.0).contains(&m) {
        320.0
    } else {
        80.0
    }
}

#[tokio::test]
async fn instances_launched_for_a_jump_are_not_asked_for_again_by_the_reservation_rule() {
    let (sim, worker) = setup(&[run::WEB_POLICY, run::CAPACITY_POLICY]).await;
    let opts = LoopOptions {
        until: at(50.0),
        tick: Duration::from_secs(15),
        step: Duration::from_secs(5),
        slo_p95_ms: SLO_MS,
        faults: vec![],
    };
    let out = closed_loop(&sim, Scaler::Ecscale(Box::new(worker)), &jump, &opts).await;
    let t = table(&out);
    assert!(out.problems.is_empty(), "{t}");
    // The bin-packing launches what the tasks need (3 of them per m5.large with 10 %
    // headroom). The reservation rule reads CPU reserved over the instances registered: while
    // the new ones boot it reads high, and against the grown group it would ask for them again.
    let peak_tasks = out.rows.iter().map(|r| r.desired).max().unwrap();
    assert!(peak_tasks >= 10, "{t}");
    let needed = peak_tasks.div_ceil(3);
    let peak_group = out.rows.iter().map(|r| r.group_desired).max().unwrap();
    assert!(
        peak_group <= needed,
        "group desired {peak_group} for at most {peak_tasks} tasks ({needed} instances)\n{t}"
    );
}
