//! `ecscale backtest --simulate`: recorded loads through the simulated cluster, closed loop,
//! with each policy (the ecscale worker), with the peers (AWS target tracking on 1-minute and
//! 20-second CPU, AWS predictive scaling, the Kubernetes HPA) and with the clairvoyant oracle.
//! One policy and one trace: the comparison in detail (and `--report`); more: the suite table,
//! one row per trace. `--frontier` sweeps each peer's target and the policy's own, and reads
//! the verdicts off the curves ([`super::frontier`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::mistakes;
use super::policy::BacktestArgs;
use super::subject::Subject;
use super::{invalid, Failure, Format};
use crate::model::TargetKey;
use crate::policy::load_files;
use crate::sim::baseline::{Kind, Peer};
use crate::sim::report::{self, Run};
use crate::sim::run::{Outcome, Totals};
use crate::sim::suite::{self, Contender, Job, Setup, TraceLoad};
use crate::sim::Spec;

/// The traces named on the command line: files, and the `.csv`/`.ndjson` files of folders.
pub(super) fn trace_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
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

/// The simulated cluster's spec from the arguments: the service's model (the twin's, or the
/// task rate given), capacity room, resolution.
pub(super) fn spec_of(args: &BacktestArgs) -> Result<Spec, Failure> {
    let mut spec = Spec::example();
    if let Some(path) = &args.twin {
        super::twin::load(path)?.apply(&mut spec);
    }
    if let Some(rate) = args.task_rps {
        spec.task_rps = rate;
    }
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
    Ok(spec)
}

pub(super) fn subject(path: &Path, args: &BacktestArgs) -> Result<Subject, Failure> {
    let file = path.display().to_string();
    let files = load_files(&[path.to_path_buf()]).map_err(|d| mistakes(d, &file))?;
    let targets: Vec<_> = files.into_iter().flat_map(|f| f.targets).collect();
    let mut spec = spec_of(args)?;
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
    spec.cluster = cluster.to_string();
    spec.service = name.to_string();
    let setup = Setup {
        spec,
        slo_ms: args.slo_p95.as_secs_f64() * 1000.0,
        min: service.min,
        max: service.max,
        initial: args.initial,
        record: false,
    };
    Ok(Subject {
        file,
        capacity,
        targets: targets.clone(),
        setup,
    })
}

/// The peers asked for (`--baseline`, repeatable), else every kind with its defaults, for
/// tasks serving `task_rps` at full CPU.
pub(super) fn peers(args: &BacktestArgs, task_rps: f64) -> Result<Vec<Peer>, Failure> {
    if args.baseline.is_empty() {
        return Ok(Kind::ALL
            .iter()
            .map(|k| Peer::defaults(*k, args.baseline_target, task_rps))
            .collect());
    }
    let mut out: Vec<Peer> = Vec::new();
    for text in &args.baseline {
        let p = Peer::parse(text, args.baseline_target, task_rps)
            .map_err(|e| invalid(anyhow::anyhow!("--baseline {text}: {e}")))?;
        if out.iter().any(|o| o.kind() == p.kind()) {
            return Err(invalid(anyhow::anyhow!(
                "--baseline {text}: {} is named twice (one of each kind; its target is swept by --frontier)",
                p.kind().name()
            )));
        }
        out.push(p);
    }
    Ok(out)
}

/// Checks the numeric arguments every closed-loop run shares.
pub(super) fn check_args(args: &BacktestArgs) -> Result<(), Failure> {
    if let Some(rate) = args.task_rps.filter(|r| !(*r > 0.0 && r.is_finite())) {
        return Err(invalid(anyhow::anyhow!(
            "--task-rps {rate}: must be a positive number"
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
    if args.plot.is_some() && !args.frontier {
        return Err(invalid(anyhow::anyhow!(
            "--plot with --simulate draws the cost/SLO frontier: add --frontier (--report draws the runs)"
        )));
    }
    Ok(())
}

/// The traces: from files, or exported from the service's own history.
pub(super) async fn traces(
    args: &BacktestArgs,
    vars: &crate::config::env::Vars,
) -> Result<Vec<(TraceLoad, Option<u32>)>, Failure> {
    let mut traces = Vec::new();
    match args.from {
        Some(source) => {
            let t = super::trace::export(source, &args.window, vars).await?;
            traces.push(TraceLoad::of(&t, &t.file, &args.load).map_err(invalid)?);
        }
        None => {
            for path in trace_files(&args.metrics)? {
                traces.push(TraceLoad::read(&path, &args.load).map_err(invalid)?);
            }
        }
    }
    Ok(traces)
}

pub(super) async fn backtest(args: BacktestArgs, vars: &crate::config::env::Vars) -> Result<u8, Failure> {
    check_args(&args)?;
    let subjects = args
        .policy
        .iter()
        .map(|p| subject(p, &args))
        .collect::<Result<Vec<_>, _>>()?;
    let peers = peers(&args, subjects[0].setup.spec.task_rps)?;
    let traces = traces(&args, vars).await?;
    if args.record.is_some() && (subjects.len() != 1 || traces.len() != 1 || args.frontier) {
        return Err(invalid(anyhow::anyhow!(
            "--record writes the history of one policy's run on one trace (not with --frontier or several)"
        )));
    }
    if args.frontier {
        return super::frontier::run(&args, &subjects, &peers, &traces);
    }
    if subjects.len() == 1 && traces.len() == 1 {
        let (subject, (trace, recorded)) = (&subjects[0], &traces[0]);
        return one(subject, &peers, trace, *recorded, &args);
    }
    if args.report.is_some() {
        return Err(invalid(anyhow::anyhow!(
            "--report draws one policy on one trace; this run has {} policies and {} traces",
            subjects.len(),
            traces.len()
        )));
    }
    let tables = suite_tables(&subjects, &peers, &traces)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&tables)?),
        Format::Table => {
            for t in &tables {
                print!("{}", suite_text(t, &peers, subjects[0].setup.slo_ms));
            }
        }
    }
    Ok(0)
}

/// Jobs for each subject on each trace: ecscale, each peer, the oracle.
fn jobs(subjects: &[Subject], peers: &[Peer], traces: &[(TraceLoad, Option<u32>)]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for s in subjects {
        for (trace, recorded) in traces {
            let mut setup = s.setup.clone();
            setup.initial = setup.initial.or(*recorded);
            let contenders = std::iter::once(s.contender())
                .chain(peers.iter().map(|p| s.peer(p)))
                .chain(std::iter::once(Contender::Oracle));
            for contender in contenders {
                jobs.push(Job {
                    setup: setup.clone(),
                    trace: trace.clone(),
                    contender,
                });
            }
        }
    }
    jobs
}

/// One trace's totals: ecscale, each peer (in the order given), the oracle.
#[derive(Debug, Clone, serde::Serialize)]
struct SuiteRow {
    trace: String,
    minutes: f64,
    ecscale: Totals,
    peers: Vec<(String, Totals)>,
    oracle: Totals,
}

#[derive(serde::Serialize)]
struct SuiteTable {
    policy: String,
    rows: Vec<SuiteRow>,
}

fn suite_tables(
    subjects: &[Subject],
    peers: &[Peer],
    traces: &[(TraceLoad, Option<u32>)],
) -> Result<Vec<SuiteTable>, Failure> {
    let mut outcomes = suite::run_all(jobs(subjects, peers, traces), suite::threads()).into_iter();
    let mut next = || -> Result<Totals, Failure> {
        let o = outcomes
            .next()
            .unwrap_or_else(|| Err(anyhow::anyhow!("missing result")))?;
        Ok(o.totals)
    };
    let mut tables = Vec::new();
    for s in subjects {
        let mut rows = Vec::new();
        for (trace, _) in traces {
            let ecscale = next()?;
            let mut theirs = Vec::new();
            for p in peers {
                theirs.push((p.label(), next()?));
            }
            rows.push(SuiteRow {
                trace: trace.name.clone(),
                minutes: trace.minutes(),
                ecscale,
                peers: theirs,
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

fn suite_text(t: &SuiteTable, peers: &[Peer], slo_ms: f64) -> String {
    let names: Vec<String> = peers.iter().map(|p| p.kind().name().to_string()).collect();
    let mut s = format!(
        "{}: ecscale vs {} vs the oracle; SLO p95 {slo_ms:.0} ms, errors ≤ 1 %\n",
        t.policy,
        peers.iter().map(Peer::label).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "columns: ecscale / {} / oracle\n", names.join(" / "));
    let _ = writeln!(
        s,
        "{:<18} {:>6}  {:>28}  {:>36}  {:>26}",
        "trace", "min", "SLO minutes", "task-hours ÷ oracle's", "oracle task-hours"
    );
    let n = peers.len() + 2;
    let mut slo = vec![0.0f64; n];
    let mut hours = vec![0.0f64; n];
    for r in &t.rows {
        let all: Vec<&Totals> = std::iter::once(&r.ecscale)
            .chain(r.peers.iter().map(|(_, t)| t))
            .chain(std::iter::once(&r.oracle))
            .collect();
        for (k, x) in all.iter().enumerate() {
            slo[k] += x.slo_violation_minutes as f64;
            hours[k] += x.task_hours;
        }
        let o = r.oracle.task_hours.max(f64::MIN_POSITIVE);
        let _ = writeln!(
            s,
            "{:<18} {:>6.0}  {:>28}  {:>36}  {:>26.1}",
            r.trace,
            r.minutes,
            all.iter()
                .map(|x| x.slo_violation_minutes.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            all[..n - 1]
                .iter()
                .map(|x| format!("{:.2}", x.task_hours / o))
                .collect::<Vec<_>>()
                .join(" / "),
            r.oracle.task_hours
        );
    }
    let minutes: f64 = t.rows.iter().map(|r| r.minutes).sum();
    let o = hours[n - 1].max(f64::MIN_POSITIVE);
    let _ = writeln!(
        s,
        "{:<18} {:>6.0}  {:>28}  {:>36}  {:>26.1}\n",
        "suite",
        minutes,
        slo.iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
        hours[..n - 1]
            .iter()
            .map(|h| format!("{:.2}", h / o))
            .collect::<Vec<_>>()
            .join(" / "),
        hours[n - 1]
    );
    s
}

#[derive(serde::Serialize)]
struct PeerRun<'a> {
    peer: &'a Peer,
    label: String,
    outcome: &'a Outcome,
}

#[derive(serde::Serialize)]
struct Comparison<'a> {
    policy: &'a str,
    trace: &'a str,
    slo_p95_ms: f64,
    ecscale: &'a Outcome,
    peers: Vec<PeerRun<'a>>,
    oracle: &'a Outcome,
}

/// One policy on one trace, in detail.
fn one(
    subject: &Subject,
    peers: &[Peer],
    trace: &TraceLoad,
    recorded: Option<u32>,
    args: &BacktestArgs,
) -> Result<u8, Failure> {
    let mut all = jobs(std::slice::from_ref(subject), peers, &[(trace.clone(), recorded)]);
    all[0].setup.record = args.record.is_some();
    let mut outcomes = suite::run_all(all, suite::threads())
        .into_iter()
        .collect::<anyhow::Result<Vec<Outcome>>>()?;
    let (Some(oracle), true) = (outcomes.pop(), outcomes.len() == peers.len() + 1) else {
        return Err(anyhow::anyhow!("a closed-loop run is missing").into());
    };
    let ours = outcomes.remove(0);
    let theirs = outcomes;
    if let (Some(out), Some(h)) = (&args.record, &ours.history) {
        crate::files::write_atomically(out, crate::evaluate::trace::to_csv(h).as_bytes())
            .map_err(|e| anyhow::anyhow!("writing the history {}: {e}", out.display()))?;
        eprintln!("the ecscale run's history written to {}", out.display());
    }
    let summary = one_summary(subject, peers, trace, args, (&ours, &theirs, &oracle));
    let problems: Vec<String> = std::iter::once(&ours)
        .chain(theirs.iter())
        .flat_map(|o| o.problems.iter())
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
                peers: peers
                    .iter()
                    .zip(&theirs)
                    .map(|(peer, outcome)| PeerRun {
                        peer,
                        label: peer.label(),
                        outcome,
                    })
                    .collect(),
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
        write_report(out, subject, peers, args, (&ours, &theirs, &oracle), &summary)?;
    }
    Ok(if problems.is_empty() {
        0
    } else {
        super::EXIT_FAILURE
    })
}

/// The HTML report of one policy on one trace: the summary, and each run's charts.
fn write_report(
    out: &Path,
    subject: &Subject,
    peers: &[Peer],
    args: &BacktestArgs,
    (ours, theirs, oracle): (&Outcome, &[Outcome], &Outcome),
    summary: &str,
) -> Result<(), Failure> {
    let labels: Vec<String> = peers.iter().map(Peer::label).collect();
    let runs: Vec<Run<'_>> = std::iter::once(Run {
        name: "ecscale",
        outcome: ours,
    })
    .chain(
        labels
            .iter()
            .zip(theirs)
            .map(|(name, outcome)| Run { name, outcome }),
    )
    .chain(std::iter::once(Run {
        name: "oracle",
        outcome: oracle,
    }))
    .collect();
    let charts = report::charts(&runs, subject.setup.slo_ms, Some(args.baseline_target), &[]);
    let html = report::html("ecscale backtest --simulate", summary, &[], &charts, &runs);
    crate::files::write_atomically(out, html.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing the report {}: {e}", out.display()))?;
    if args.format == Format::Table {
        println!("report: {}", out.display());
    }
    Ok(())
}

/// The text of one policy on one trace: each run's totals, then the comparison line.
fn one_summary(
    subject: &Subject,
    peers: &[Peer],
    trace: &TraceLoad,
    args: &BacktestArgs,
    (ours, theirs, oracle): (&Outcome, &[Outcome], &Outcome),
) -> String {
    let spec = &subject.setup.spec;
    let (lo, hi) = trace.range();
    let o = oracle.totals.task_hours.max(f64::MIN_POSITIVE);
    let mut s = format!(
        "{} on {} ({:.0} minutes, {lo:.0}–{hi:.0} requests/s), simulated closed loop: {}/{} on m5.large, tasks of {} CPU units serving {} requests/s at full CPU\n\n\
ecscale ({}):\n{}\n\n",
        subject.file,
        args.metrics.first().map_or(trace.name.clone(), |p| p.display().to_string()),
        trace.minutes(),
        spec.cluster,
        spec.service,
        spec.task.cpu,
        spec.task_rps,
        subject.file,
        report::totals_text(&ours.totals),
    );
    for (p, out) in peers.iter().zip(theirs) {
        let _ = write!(
            s,
            "{} ({}):\n{}\n\n",
            p.label(),
            p.describe(),
            report::totals_text(&out.totals)
        );
    }
    let _ = write!(
        s,
        "oracle (knows the trace; the fewest tasks that keep the SLO, started and booted ahead):\n{}\n\n",
        report::totals_text(&oracle.totals)
    );
    let named = |name: &str, t: &Totals| (name.to_string(), t.slo_violation_minutes, t.task_hours);
    let all: Vec<(String, usize, f64)> = std::iter::once(named("ecscale", &ours.totals))
        .chain(
            peers
                .iter()
                .zip(theirs)
                .map(|(p, out)| named(p.kind().name(), &out.totals)),
        )
        .collect();
    let _ = writeln!(
        s,
        "SLO-violation minutes: {}, oracle {}; task-hours: {}, oracle {:.2}",
        all.iter()
            .map(|(n, v, _)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        oracle.totals.slo_violation_minutes,
        all.iter()
            .map(|(n, _, h)| format!("{n} {h:.2} ({:.2}×)", h / o))
            .collect::<Vec<_>>()
            .join(", "),
        oracle.totals.task_hours
    );
    s
}
