//! `ecscale backtest --simulate`: recorded loads through the simulated cluster, closed loop,
//! with each policy (the ecscale worker), with the AWS-style baseline and with the clairvoyant
//! oracle. One policy and one trace: the comparison in detail (and `--report`); more: the suite
//! table, one row per trace.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::policy::{mistakes, BacktestArgs};
use super::{invalid, Failure, Format};
use crate::model::TargetKey;
use crate::policy::load_files;
use crate::sim::report::{self, Run};
use crate::sim::run::{Outcome, Totals};
use crate::sim::suite::{self, Contender, Job, Setup, SuiteRow, TraceLoad};
use crate::sim::Spec;

/// The traces named on the command line: files, and the `.csv`/`.ndjson` files of folders.
fn trace_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| invalid(anyhow::anyhow!("{}: {e}", p.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().is_some_and(|x| x == "csv" || x == "ndjson"))
            .collect();
        if found.is_empty() {
            return Err(invalid(anyhow::anyhow!(
                "{}: no .csv or .ndjson trace in it",
                p.display()
            )));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

fn read_trace(path: &Path, column: &str) -> Result<(TraceLoad, Option<u32>), Failure> {
    TraceLoad::read(path, column).map_err(invalid)
}

/// One policy file, ready to run: its targets and the cluster it scales.
struct Subject {
    file: String,
    contender: Contender,
    capacity: Contender,
    setup: Setup,
}

fn subject(path: &Path, args: &BacktestArgs) -> Result<Subject, Failure> {
    let file = path.display().to_string();
    let files = load_files(&[path.to_path_buf()]).map_err(|d| mistakes(d, &file))?;
    let targets: Vec<_> = files.into_iter().flat_map(|f| f.targets).collect();
    let mut spec = Spec::example();
    let (services, capacity) = suite::split_targets(&targets, &spec.auto_scaling_group);
    let [service] = services.as_slice() else {
        return Err(invalid(anyhow::anyhow!(
            "{file}: --simulate replays one service, and this file has {} service targets",
            services.len()
        )));
    };
    let TargetKey::Service {
        cluster,
        service: name,
    } = &service.target
    else {
        return Err(invalid(anyhow::anyhow!("{file}: not a service target")));
    };
    spec.cluster = cluster.clone();
    spec.service = name.clone();
    spec.task_rps = args.task_rps;
    spec.headroom = args.headroom;
    spec.spare_tasks = args.spare_tasks;
    spec.high_resolution = match args.resolution.as_secs() {
        20 => Some(args.resolution),
        60 => None,
        _ => {
            return Err(invalid(anyhow::anyhow!(
                "--resolution {}: 20s (ECS's high-resolution metrics) or 60s",
                humantime::format_duration(args.resolution)
            )))
        }
    };
    let setup = Setup {
        spec,
        slo_ms: args.slo_p95.as_secs_f64() * 1000.0,
        min: service.min,
        max: service.max,
        initial: args.initial,
    };
    Ok(Subject {
        file,
        capacity: Contender::Baseline {
            cpu_target: args.baseline_target,
            capacity,
        },
        contender: Contender::Ecscale(targets.clone()),
        setup,
    })
}

pub(super) async fn backtest(args: BacktestArgs, vars: &crate::config::env::Vars) -> Result<u8, Failure> {
    if !(args.task_rps > 0.0 && args.task_rps.is_finite()) {
        return Err(invalid(anyhow::anyhow!(
            "--task-rps {}: must be a positive number",
            args.task_rps
        )));
    }
    if !(0.0..1.0).contains(&args.headroom) {
        return Err(invalid(anyhow::anyhow!(
            "--headroom {}: a fraction from 0 to below 1 (0.1 is 10 %)",
            args.headroom
        )));
    }
    if !(args.baseline_target > 0.0 && args.baseline_target < 100.0) {
        return Err(invalid(anyhow::anyhow!(
            "--baseline-target {}: a CPU percentage between 0 and 100",
            args.baseline_target
        )));
    }
    let subjects = args
        .policy
        .iter()
        .map(|p| subject(p, &args))
        .collect::<Result<Vec<_>, _>>()?;
    let mut traces = Vec::new();
    match args.from {
        Some(source) => {
            let t = super::trace::export(source, &args.window, vars).await?;
            traces.push(TraceLoad::of(&t, &t.file, &args.load).map_err(invalid)?);
        }
        None => {
            for path in trace_files(&args.metrics)? {
                traces.push(read_trace(&path, &args.load)?);
            }
        }
    }
    if subjects.len() == 1 && traces.len() == 1 {
        let (subject, (trace, recorded)) = (&subjects[0], &traces[0]);
        return one(subject, trace, *recorded, &args).await;
    }
    if args.report.is_some() {
        return Err(invalid(anyhow::anyhow!(
            "--report draws one policy on one trace; this run has {} policies and {} traces",
            subjects.len(),
            traces.len()
        )));
    }
    let tables = suite_tables(&subjects, &traces)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&tables)?),
        Format::Table => {
            for t in &tables {
                print!(
                    "{}",
                    suite_text(t, subjects[0].setup.slo_ms, args.baseline_target)
                );
            }
        }
    }
    Ok(0)
}

/// Jobs for each subject on each trace: ecscale, the baseline, the oracle.
fn jobs(subjects: &[Subject], traces: &[(TraceLoad, Option<u32>)]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for s in subjects {
        for (trace, recorded) in traces {
            let mut setup = s.setup.clone();
            setup.initial = setup.initial.or(*recorded);
            for contender in [&s.contender, &s.capacity, &Contender::Oracle] {
                jobs.push(Job {
                    setup: setup.clone(),
                    trace: trace.clone(),
                    contender: contender.clone(),
                });
            }
        }
    }
    jobs
}

#[derive(serde::Serialize)]
struct SuiteTable {
    policy: String,
    rows: Vec<SuiteRow>,
}

fn suite_tables(
    subjects: &[Subject],
    traces: &[(TraceLoad, Option<u32>)],
) -> Result<Vec<SuiteTable>, Failure> {
    let mut outcomes = suite::run_all(jobs(subjects, traces), suite::threads()).into_iter();
    let mut tables = Vec::new();
    for s in subjects {
        let mut rows = Vec::new();
        for (trace, _) in traces {
            let mut next = || -> Result<Totals, Failure> {
                let o = outcomes
                    .next()
                    .unwrap_or_else(|| Err(anyhow::anyhow!("missing result")))?;
                Ok(o.totals)
            };
            rows.push(SuiteRow {
                trace: trace.name.clone(),
                minutes: trace.minutes(),
                ecscale: next()?,
                baseline: next()?,
                oracle: next()?,
            });
        }
        tables.push(SuiteTable {
            policy: s.file.clone(),
            rows,
        });
    }
    Ok(tables)
}

fn suite_text(t: &SuiteTable, slo_ms: f64, baseline_target: f64) -> String {
    let mut s = format!(
        "{}: ecscale vs AWS-style target tracking (CPU {baseline_target} %) vs the oracle; SLO p95 {slo_ms:.0} ms, errors ≤ 1 %\n\n",
        t.policy
    );
    let _ = writeln!(
        s,
        "{:<15} {:>6}  {:>22}  {:>26}  {:>16}  {:>24}",
        "trace", "min", "SLO minutes e/b/o", "task-hours e/b/o", "÷ oracle e/b", "instance-hours e/b/o"
    );
    let mut sum = [[0.0f64; 3]; 3];
    for r in &t.rows {
        let all = [&r.ecscale, &r.baseline, &r.oracle];
        for (k, x) in all.iter().enumerate() {
            sum[0][k] += x.slo_violation_minutes as f64;
            sum[1][k] += x.task_hours;
            sum[2][k] += x.instance_hours;
        }
        let _ = writeln!(
            s,
            "{:<15} {:>6.0}  {:>22}  {:>26}  {:>16}  {:>24}",
            r.trace,
            r.minutes,
            format!(
                "{} / {} / {}",
                r.ecscale.slo_violation_minutes,
                r.baseline.slo_violation_minutes,
                r.oracle.slo_violation_minutes
            ),
            format!(
                "{:.1} / {:.1} / {:.1}",
                r.ecscale.task_hours, r.baseline.task_hours, r.oracle.task_hours
            ),
            format!("{:.2} / {:.2}", r.ratio(&r.ecscale), r.ratio(&r.baseline)),
            format!(
                "{:.1} / {:.1} / {:.1}",
                r.ecscale.instance_hours, r.baseline.instance_hours, r.oracle.instance_hours
            ),
        );
    }
    let minutes: f64 = t.rows.iter().map(|r| r.minutes).sum();
    let _ = writeln!(
        s,
        "{:<15} {:>6.0}  {:>22}  {:>26}  {:>16}  {:>24}\n",
        "suite",
        minutes,
        format!("{} / {} / {}", sum[0][0], sum[0][1], sum[0][2]),
        format!("{:.1} / {:.1} / {:.1}", sum[1][0], sum[1][1], sum[1][2]),
        format!(
            "{:.2} / {:.2}",
            sum[1][0] / sum[1][2].max(f64::MIN_POSITIVE),
            sum[1][1] / sum[1][2].max(f64::MIN_POSITIVE)
        ),
        format!("{:.1} / {:.1} / {:.1}", sum[2][0], sum[2][1], sum[2][2]),
    );
    s
}

#[derive(serde::Serialize)]
struct Comparison<'a> {
    policy: &'a str,
    trace: &'a str,
    slo_p95_ms: f64,
    ecscale: &'a Outcome,
    baseline: &'a Outcome,
    oracle: &'a Outcome,
}

/// One policy on one trace, in detail.
async fn one(
    subject: &Subject,
    trace: &TraceLoad,
    recorded: Option<u32>,
    args: &BacktestArgs,
) -> Result<u8, Failure> {
    let mut outcomes = suite::run_all(
        jobs(std::slice::from_ref(subject), &[(trace.clone(), recorded)]),
        suite::threads(),
    )
    .into_iter()
    .collect::<anyhow::Result<Vec<Outcome>>>()?;
    let (Some(oracle), Some(theirs), Some(ours)) = (outcomes.pop(), outcomes.pop(), outcomes.pop()) else {
        return Err(anyhow::anyhow!("a closed-loop run is missing").into());
    };
    let spec = &subject.setup.spec;
    let (a, b, o) = (&ours.totals, &theirs.totals, &oracle.totals);
    let (lo, hi) = trace.range();
    let ratio = |t: &Totals| t.task_hours / o.task_hours.max(f64::MIN_POSITIVE);
    let summary = format!(
        "{} on {} ({:.0} minutes, {lo:.0}–{hi:.0} requests/s), simulated closed loop: {}/{} on m5.large, tasks of {} CPU units serving {} requests/s at full CPU\n\n\
ecscale ({}):\n{}\n\nAWS-style target tracking (CPU {} %, 3/3 datapoints out, 15/15 in, 300 s cooldowns):\n{}\n\n\
oracle (knows the trace; the fewest tasks that keep the SLO, started and booted ahead):\n{}\n\n\
SLO-violation minutes: {} vs {} ({}), oracle {}; task-hours: {:.2} vs {:.2} ({:+.1} %), oracle {:.2} (ecscale {:.2}×, baseline {:.2}×)\n",
        subject.file,
        args.metrics.first().map_or(String::new(), |p| p.display().to_string()),
        trace.minutes(),
        spec.cluster,
        spec.service,
        spec.task.cpu,
        spec.task_rps,
        subject.file,
        report::totals_text(a),
        args.baseline_target,
        report::totals_text(b),
        report::totals_text(o),
        a.slo_violation_minutes,
        b.slo_violation_minutes,
        match a.slo_violation_minutes.cmp(&b.slo_violation_minutes) {
            std::cmp::Ordering::Less => "fewer with ecscale",
            std::cmp::Ordering::Equal => "the same",
            std::cmp::Ordering::Greater => "more with ecscale",
        },
        o.slo_violation_minutes,
        a.task_hours,
        b.task_hours,
        (a.task_hours / b.task_hours.max(f64::MIN_POSITIVE) - 1.0) * 100.0,
        o.task_hours,
        ratio(a),
        ratio(b),
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
                policy: &subject.file,
                trace: &trace.name,
                slo_p95_ms: subject.setup.slo_ms,
                ecscale: &ours,
                baseline: &theirs,
                oracle: &oracle,
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
            Run {
                name: "oracle",
                outcome: &oracle,
            },
        ];
        let charts = report::charts(&runs, subject.setup.slo_ms, Some(args.baseline_target), &[]);
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
