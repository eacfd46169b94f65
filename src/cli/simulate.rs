//! `ecscale backtest --simulate`: a recorded load through the simulated cluster, closed loop,
//! with the policy (the ecscale worker) and with the AWS-style baseline, side by side.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::policy::{mistakes, BacktestArgs};
use super::{invalid, Failure, Format};
use crate::evaluate::trace;
use crate::model::TargetKey;
use crate::policy::{load_files, RuleSpec, TargetPolicy};
use crate::sim::baseline::{Baseline, Settings};
use crate::sim::report::{self, Run};
use crate::sim::run::{self, closed_loop, LoopOptions, Outcome, Scaler};
use crate::sim::{Clock, Sim, Spec};

/// The worker's tick in back-tests.
const TICK: Duration = Duration::from_secs(15);

#[derive(serde::Serialize)]
struct Comparison<'a> {
    policy: String,
    trace: String,
    slo_p95_ms: f64,
    ecscale: &'a Outcome,
    baseline: &'a Outcome,
}

pub(super) async fn backtest(args: BacktestArgs) -> Result<u8, Failure> {
    let files = load_files(std::slice::from_ref(&args.policy))
        .map_err(|d| mistakes(d, &args.policy.display().to_string()))?;
    let targets: Vec<TargetPolicy> = files.into_iter().flat_map(|f| f.targets).collect();
    let policy_file = args.policy.display().to_string();
    let services: Vec<&TargetPolicy> = targets
        .iter()
        .filter(|t| matches!(t.target, TargetKey::Service { .. }))
        .collect();
    let [service] = services.as_slice() else {
        return Err(invalid(anyhow::anyhow!(
            "{policy_file}: --simulate replays one service, and this file has {} service targets",
            services.len()
        )));
    };
    let TargetKey::Service {
        cluster,
        service: name,
    } = &service.target
    else {
        return Err(invalid(anyhow::anyhow!("{policy_file}: not a service target")));
    };
    let baseline_target = match args.baseline_target {
        Some(t) => t,
        None => service
            .rules
            .iter()
            .find_map(|r| match &r.spec {
                RuleSpec::TargetTracking(tt) if tt.metric == "cpu" => Some(tt.target),
                _ => None,
            })
            .ok_or_else(|| {
                invalid(anyhow::anyhow!(
                    "{policy_file}: the baseline tracks CPU like Application Auto Scaling, and the policy has no target_tracking rule on `cpu`: give --baseline-target PERCENT"
                ))
            })?,
    };
    if !(args.task_rps > 0.0 && args.task_rps.is_finite()) {
        return Err(invalid(anyhow::anyhow!(
            "--task-rps {}: must be a positive number",
            args.task_rps
        )));
    }
    let trace = trace::read(&args.metrics).map_err(invalid)?;
    let Some(samples) = trace.series.get(&args.load) else {
        return Err(invalid(anyhow::anyhow!(
            "{}: no `{}` column (the load, requests per period); columns: {}",
            args.metrics.display(),
            args.load,
            trace.series.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Err(invalid(anyhow::anyhow!(
            "{}: `{}` has no values",
            args.metrics.display(),
            args.load
        )));
    };
    let period = trace.period_secs.max(1) as f64;
    let start = first.timestamp;
    let end = last.timestamp + TimeDelta::seconds(trace.period_secs.max(1));
    let load = |t: DateTime<Utc>| -> f64 {
        let i = samples.partition_point(|s| s.timestamp <= t);
        if i == 0 {
            return 0.0;
        }
        samples[i - 1].value.max(0.0) / period
    };

    let mut spec = Spec::example();
    spec.cluster = cluster.clone();
    spec.service = name.clone();
    spec.task_rps = args.task_rps;
    spec.group_max = spec.group_max.max(service.max.div_ceil(3) + 2);
    let initial = args
        .initial
        .or_else(|| trace.recorded_count.values().next().copied())
        .unwrap_or(service.min)
        .clamp(service.min, service.max);
    spec.initial_tasks = initial;
    spec.initial_instances = initial.div_ceil(3).max(spec.group_min);
    let opts = LoopOptions {
        until: end,
        tick: TICK,
        step: Duration::from_secs(5),
        slo_p95_ms: args.slo_p95.as_secs_f64() * 1000.0,
        faults: Vec::new(),
    };
    let base = std::path::Path::new(".");
    let sink = "  index_prefix: ecscale\n";

    let sim = Sim::new(spec.clone(), start, Clock::Manual);
    let config = run::config(&spec, TICK, sink, base)?;
    let asg_policies: Vec<TargetPolicy> = targets
        .iter()
        .filter(
            |t| matches!(&t.target, TargetKey::AutoScalingGroup { name } if *name == spec.auto_scaling_group),
        )
        .cloned()
        .collect();
    let worker = run::worker(config, targets.clone(), &sim, None).await?;
    let ours = closed_loop(&sim, Scaler::Ecscale(Box::new(worker)), &load, &opts).await;

    let sim_b = Sim::new(spec.clone(), start, Clock::Manual);
    let config = run::config(&spec, TICK, sink, base)?;
    let capacity = run::worker(config, asg_policies, &sim_b, None).await?;
    let baseline = Baseline::new(Settings::cpu(&sim_b, baseline_target, service.min, service.max));
    let theirs = closed_loop(
        &sim_b,
        Scaler::Baseline {
            baseline: Box::new(baseline),
            capacity: Box::new(capacity),
        },
        &load,
        &opts,
    )
    .await;

    let (a, b) = (&ours.totals, &theirs.totals);
    let summary = format!(
        "{policy_file} on {} ({} minutes, {:.0}–{:.0} requests/s), simulated closed loop: {}/{} on m5.large, tasks of {} CPU units serving {} requests/s at full CPU\n\n\
ecscale ({policy_file}):\n{}\n\nAWS-style target tracking (CPU {baseline_target} %, 3/3 datapoints out, 15/15 in, 300 s cooldowns):\n{}\n\n\
SLO-violation minutes: {} vs {} ({}); task-hours: {:.2} vs {:.2} ({:+.1} %)\n",
        args.metrics.display(),
        samples.len() as f64 * period / 60.0,
        samples.iter().map(|s| s.value / period).fold(f64::INFINITY, f64::min),
        samples.iter().map(|s| s.value / period).fold(0.0, f64::max),
        spec.cluster,
        spec.service,
        spec.task.cpu,
        spec.task_rps,
        report::totals_text(a),
        report::totals_text(b),
        a.slo_violation_minutes,
        b.slo_violation_minutes,
        if a.slo_violation_minutes < b.slo_violation_minutes {
            "fewer with ecscale"
        } else if a.slo_violation_minutes == b.slo_violation_minutes {
            "the same"
        } else {
            "more with ecscale"
        },
        a.task_hours,
        b.task_hours,
        (a.task_hours / b.task_hours.max(f64::MIN_POSITIVE) - 1.0) * 100.0
    );
    let problems: Vec<String> = ours
        .problems
        .iter()
        .chain(theirs.problems.iter())
        .map(|(p, n)| format!("{p} ({n} ticks)"))
        .collect();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&Comparison {
                policy: policy_file.clone(),
                trace: args.metrics.display().to_string(),
                slo_p95_ms: opts.slo_p95_ms,
                ecscale: &ours,
                baseline: &theirs,
            })?
        ),
        Format::Table => {
            print!("{summary}");
            for p in &problems {
                println!("problem: {p}");
            }
        }
    }
    if let Some(out) = &args.report {
        let runs = [
            Run {
                name: "ecscale",
                outcome: &ours,
            },
            Run {
                name: "baseline",
                outcome: &theirs,
            },
        ];
        let charts = report::charts(&runs, opts.slo_p95_ms, Some(baseline_target));
        let html = report::html("ecscale backtest --simulate", &summary, &[], &charts, &runs);
        crate::worker::state::write_atomically(out, html.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing the report {}: {e}", out.display()))?;
        if args.format == Format::Table {
            println!("report: {}", out.display());
        }
    }
    Ok(if problems.is_empty() {
        0
    } else {
        super::EXIT_FAILURE
    })
}
