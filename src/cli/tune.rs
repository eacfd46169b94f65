//! `ecscale tune`: the policy's knobs searched on the user's traces (with their twin), the tuned
//! file written with the input's comments and layout, a diff, and the before/after table on
//! the held-out part of each trace.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{invalid, Failure, Format};
use crate::config::env::Vars;
use crate::model::TargetKey;
use crate::sim::suite::{self, Setup, TraceLoad};
use crate::tune::{self, knobs, Objective, Options, Part, Score, Subject, Tuned};

/// What to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Aim {
    /// The fewest task-hours with at most --max-slo-minutes (default: the input's).
    Cost,
    /// The fewest SLO minutes within --max-task-hours (default: the input's).
    Slo,
}

/// `ecscale tune` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct TuneArgs {
    /// The policy file to tune (its service target; a capacity target in it sizes the instances).
    #[arg(long)]
    policy: PathBuf,
    /// Your traces (repeat it, or name a folder): the load column request_count.
    #[arg(long, required = true)]
    metrics: Vec<PathBuf>,
    /// The simulated service's model fitted to yours (`ecscale twin fit`).
    #[arg(long, value_name = "TWIN.yaml")]
    twin: Option<PathBuf>,
    /// The latency SLO, p95 per minute.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    slo_p95: Duration,
    #[arg(long, value_enum, default_value_t = Aim::Cost)]
    objective: Aim,
    /// With --objective cost: the SLO minutes allowed over the training part of all traces.
    #[arg(long)]
    max_slo_minutes: Option<f64>,
    /// With --objective slo: the task-hours allowed over the training part of all traces.
    #[arg(long)]
    max_task_hours: Option<f64>,
    /// The share of each trace (by time) the search sees; it is judged on the rest.
    #[arg(long, default_value_t = 0.7)]
    split: f64,
    /// The search's seed: the same seed and rounds give the same answer.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start no round after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    budget: Duration,
    /// Exactly this many rounds (instead of --budget): reproduces a run.
    #[arg(long)]
    rounds: Option<usize>,
    /// The tuned policy file.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

fn check(args: &TuneArgs) -> Result<Objective, Failure> {
    if !(args.split > 0.1 && args.split < 0.95) {
        return Err(invalid(anyhow::anyhow!(
            "--split {}: a share between 0.1 and 0.95 (0.7 tunes on the first 70 %)",
            args.split
        )));
    }
    if args.out == args.policy {
        return Err(invalid(anyhow::anyhow!(
            "--out {}: the input itself; write the tuned policy beside it",
            args.out.display()
        )));
    }
    match (args.objective, args.max_slo_minutes, args.max_task_hours) {
        (Aim::Cost, _, Some(_)) => Err(invalid(anyhow::anyhow!(
            "--max-task-hours goes with --objective slo (cost minimises task-hours under --max-slo-minutes)"
        ))),
        (Aim::Slo, Some(_), _) => Err(invalid(anyhow::anyhow!(
            "--max-slo-minutes goes with --objective cost (slo minimises SLO minutes under --max-task-hours)"
        ))),
        (Aim::Cost, m, None) => Ok(Objective::Cost { max_slo_minutes: m }),
        (Aim::Slo, None, m) => Ok(Objective::Slo { max_task_hours: m }),
    }
}

/// The subject: the file's service target with its knobs, the capacity targets, the cluster.
fn subject(args: &TuneArgs, source: &str) -> Result<Subject, Failure> {
    let file = args.policy.display().to_string();
    let base = args.policy.parent().map(Path::to_path_buf).unwrap_or_default();
    let targets = crate::policy::load_str(source, &file, &base).map_err(|d| super::mistakes(d, &file))?;
    let docs = crate::read::yaml::parse_documents(source)
        .map_err(|e| invalid(anyhow::anyhow!("{file}: {}", e.message)))?;
    let mut spec = crate::sim::Spec::example();
    if let Some(path) = &args.twin {
        super::twin::load(path)?.apply(&mut spec);
    }
    let (services, capacity) = suite::split_targets(&targets, &spec.auto_scaling_group);
    let ([service], Some(i)) = (
        services.as_slice(),
        targets
            .iter()
            .position(|t| matches!(t.target, TargetKey::Service { .. })),
    ) else {
        return Err(invalid(anyhow::anyhow!(
            "{file}: tune takes one service target, and this file has {}",
            services.len()
        )));
    };
    if let TargetKey::Service {
        cluster,
        service: name,
    } = &service.target
    {
        spec.cluster = cluster.to_string();
        spec.service = name.to_string();
    }
    let knobs = knobs::of(service, &docs[i]);
    if knobs.is_empty() {
        return Err(invalid(anyhow::anyhow!(
            "{file}: its service target writes no numeric knob tune can move (targets, tolerance, datapoints, lead, cooldowns, ...)"
        )));
    }
    Ok(Subject {
        setup: Setup {
            spec,
            slo_ms: args.slo_p95.as_secs_f64() * 1000.0,
            min: service.min,
            max: service.max,
            initial: None,
            record: false,
        },
        service: (*service).clone(),
        others: capacity,
        knobs,
    })
}

/// The traces, each split into its training and held-out parts.
fn parts(args: &TuneArgs) -> Result<Vec<Part>, Failure> {
    let mut out = Vec::new();
    for path in super::simulate::trace_files(&args.metrics)? {
        let (trace, _) = TraceLoad::read(&path, "request_count").map_err(invalid)?;
        let part = tune::split(&trace, args.split).ok_or_else(|| {
            invalid(anyhow::anyhow!(
                "{}: too short to split into a training and a held-out part",
                path.display()
            ))
        })?;
        out.push(part);
    }
    Ok(out)
}

pub(super) async fn run(args: TuneArgs, _vars: &Vars) -> Result<u8, Failure> {
    let objective = check(&args)?;
    let source = crate::read::read_source(&args.policy, "the policy file")
        .map_err(|d| super::mistakes(d, &args.policy.display().to_string()))?;
    let subject = subject(&args, &source)?;
    let parts = parts(&args)?;
    let opts = Options {
        objective,
        split: args.split,
        seed: args.seed,
        budget: args.budget,
        rounds: args.rounds,
        threads: suite::threads(),
    };
    eprintln!(
        "tuning {} knobs of {} on the first {:.0} % of {} trace(s), {} threads, {}",
        subject.knobs.len(),
        args.policy.display(),
        args.split * 100.0,
        parts.len(),
        opts.threads,
        args.rounds.map_or(
            format!("for {}", humantime::format_duration(args.budget)),
            |r| format!("{r} rounds")
        )
    );
    let started = std::time::Instant::now();
    let budget = args.budget;
    let mut progress = |round: usize, runs: usize, best: Score| {
        let share = match args.rounds {
            Some(r) => round as f64 / r.max(1) as f64,
            None => started.elapsed().as_secs_f64() / budget.as_secs_f64().max(1e-9),
        };
        let filled = (share.min(1.0) * 30.0) as usize;
        eprint!(
            "\r[{}{}] round {round}, {runs} runs, best: {:.1} task-hours, {:.0} SLO minutes   ",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            best.task_hours,
            best.slo_minutes
        );
        let _ = std::io::stderr().flush();
    };
    let tuned = tune::tune(&subject, &parts, &opts, &mut progress)?;
    eprintln!();
    let values = tuned.values.clone();
    let text = knobs::rewrite(&source, &knobs::edits(&subject.knobs, &values))
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.policy.display()))?;
    // What is written must load as it was tuned: a knob's value the policy reader refuses
    // would be a bug in the knobs' ranges, and nothing is written.
    let out = args.out.display().to_string();
    let base = args.policy.parent().map(Path::to_path_buf).unwrap_or_default();
    crate::policy::load_str(&text, &out, &base)
        .map_err(|d| anyhow::anyhow!("the tuned policy would not load (a bug in tune's ranges):\n{d}"))?;
    crate::files::write_atomically(&args.out, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.out.display()))?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&tuned)?),
        Format::Table => print!("{}{}", diff(&source, &text, &args), table(&tuned)),
    }
    eprintln!("tuned policy written to {}", args.out.display());
    Ok(0)
}

/// The lines that changed, as a unified diff's `-`/`+` lines with their line numbers.
fn diff(before: &str, after: &str, args: &TuneArgs) -> String {
    let mut s = format!("--- {}\n+++ {}\n", args.policy.display(), args.out.display());
    for (n, (a, b)) in before.lines().zip(after.lines()).enumerate() {
        if a != b {
            let _ = writeln!(s, "@@ line {} @@\n-{a}\n+{b}", n + 1);
        }
    }
    if !before.lines().zip(after.lines()).any(|(a, b)| a != b) {
        s.push_str("(no change: nothing the search tried did better than the input)\n");
    }
    s
}

/// Training and held-out, input against tuned, with the verdict in words.
fn table(t: &Tuned) -> String {
    let (ti, tt) = t.training;
    let mut s = format!(
        "\n{} rounds, {} runs. Training part: task-hours {:.1} → {:.1} ({:+.1} %), SLO minutes {:.0} → {:.0}\n\n",
        t.rounds,
        t.runs,
        ti.task_hours,
        tt.task_hours,
        pct(ti.task_hours, tt.task_hours),
        ti.slo_minutes,
        tt.slo_minutes
    );
    let _ = writeln!(
        s,
        "{:<18} {:>24} {:>20} {:>16}",
        "held-out part", "task-hours in → tuned", "SLO min in → tuned", "oracle task-h"
    );
    let (mut hi, mut ht) = (Score::default(), Score::default());
    for (name, i, tuned, o) in &t.holdout {
        hi = Score {
            task_hours: hi.task_hours + i.task_hours,
            slo_minutes: hi.slo_minutes + i.slo_minutes,
        };
        ht = Score {
            task_hours: ht.task_hours + tuned.task_hours,
            slo_minutes: ht.slo_minutes + tuned.slo_minutes,
        };
        let _ = writeln!(
            s,
            "{name:<18} {:>24} {:>20} {:>16.1}",
            format!(
                "{:.1} → {:.1} ({:+.1} %)",
                i.task_hours,
                tuned.task_hours,
                pct(i.task_hours, tuned.task_hours)
            ),
            format!("{:.0} → {:.0}", i.slo_minutes, tuned.slo_minutes),
            o.task_hours
        );
    }
    s.push('\n');
    s.push_str(&verdict((ti, tt), (hi, ht)));
    s
}

fn pct(a: f64, b: f64) -> f64 {
    (b / a.max(f64::MIN_POSITIVE) - 1.0) * 100.0
}

/// What the held-out part says, plainly: better, the same, or worse than on training.
fn verdict((ti, tt): (Score, Score), (hi, ht): (Score, Score)) -> String {
    let worse_slo = ht.slo_minutes > hi.slo_minutes;
    let worse_cost = ht.task_hours > hi.task_hours * 1.001;
    let train_gain = pct(ti.task_hours, tt.task_hours);
    let held_gain = pct(hi.task_hours, ht.task_hours);
    let mut s = String::new();
    if worse_slo || worse_cost {
        let _ = writeln!(
            s,
            "WARNING: on the held-out part the tuned policy is worse than the input ({}): it fitted the training part, not the load; keep the input, or tune on more history.",
            match (worse_slo, worse_cost) {
                (true, true) => "more SLO minutes and more task-hours",
                (true, false) => "more SLO minutes",
                _ => "more task-hours",
            }
        );
    } else if held_gain > train_gain + 1.0 {
        let _ = writeln!(
            s,
            "held-out: {held_gain:+.1} % task-hours and {:.0} → {:.0} SLO minutes: less than on training ({train_gain:+.1} %), as a held-out part may.",
            hi.slo_minutes, ht.slo_minutes
        );
    } else {
        let _ = writeln!(
            s,
            "held-out: {held_gain:+.1} % task-hours and {:.0} → {:.0} SLO minutes (training {train_gain:+.1} %)",
            hi.slo_minutes, ht.slo_minutes
        );
    }
    s
}
