//! `ecscale policy check` and `ecscale backtest`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{invalid, mistakes, Failure, Format, EXIT_FAILURE};
use crate::eval_io::num;
use crate::evaluate::backtest::{self, Options, Report};
use crate::model::Action;
use crate::plot::{self, Axis, Chart, Line, Marker, Style, COLORS};
use crate::policy::{external::PluginRunner, load_files as load_policies, RuleSpec, TargetPolicy};

/// One line per target: bounds, engine settings, rules.
pub(super) fn target_summary(t: &TargetPolicy) -> String {
    let rules: Vec<String> = t
        .rules
        .iter()
        .map(|r| format!("[{}] {}", r.name, r.spec.policy().summary()))
        .collect();
    format!(
        "{}: {} min {} max {}, cooldown out {} in {}, scale-in stabilization {}, step out {} in {}, missing data {} · {}",
        t.location(),
        t.target,
        t.min,
        t.max,
        humantime::format_duration(t.cooldown.scale_out),
        humantime::format_duration(t.cooldown.scale_in),
        humantime::format_duration(t.scale_in_stabilization),
        t.max_step_out,
        t.max_step_in,
        t.default_missing,
        rules.join(" · ")
    )
}

pub(super) fn check(files: &[PathBuf]) -> Result<u8, Failure> {
    let policies = load_policies(files).map_err(|d| mistakes(d, &plural_files(files)))?;
    for t in policies.iter().flat_map(|p| p.targets.iter()) {
        println!("{}", target_summary(t));
    }
    Ok(0)
}

fn plural_files(files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        many => format!("{} files", many.len()),
    }
}

/// `ecscale backtest` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct BacktestArgs {
    /// The policy file to replay (with --simulate, repeat it to compare several).
    #[arg(long, required = true)]
    pub(super) policy: Vec<PathBuf>,
    /// Recorded metrics: .csv (timestamp,METRIC,...) or .ndjson (with --simulate, repeat it, or
    /// name a folder, to run a suite of traces).
    #[arg(long, required_unless_present = "from", conflicts_with_all = ["service", "since", "period"])]
    pub(super) metrics: Vec<PathBuf>,
    /// Instead of --metrics: the service's own history, read from CloudWatch or from what
    /// ecscale shipped to Elasticsearch (with --config, --service, --since; as `trace export`).
    #[arg(long, value_enum, conflicts_with = "metrics")]
    pub(super) from: Option<super::trace::Source>,
    #[command(flatten)]
    pub(super) window: super::trace::Window,
    /// Also draw the metric, its target and the count over time: OUT.svg or OUT.png (with
    /// --simulate --frontier: the cost/SLO curves).
    #[arg(long, value_name = "OUT")]
    pub(super) plot: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(super) format: Format,
    /// The count at the start (default: the trace's `running` column, else the policy's min).
    #[arg(long)]
    pub(super) initial: Option<u32>,
    /// Metrics that are per-task averages, rescaled to the simulated count when the trace has a
    /// `running` column.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cpu,memory,request_count_per_target",
        conflicts_with = "simulate"
    )]
    per_task: Vec<String>,
    /// Print only the ticks that change the count.
    #[arg(long, conflicts_with = "simulate")]
    changes_only: bool,
    /// How far back each tick sees, as the worker's `collect.lookback` (a forecast rule also
    /// sees its own window, and a rule that reads further back, as a burst guard's hour, what
    /// it reads): the replay decides what the worker would on the same data.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration, conflicts_with = "simulate")]
    lookback: std::time::Duration,
    /// Closed loop: replay the trace's load through the simulated cluster (tasks, instances,
    /// queueing latency) with the worker and this policy, and with an AWS-style target-tracking
    /// baseline, and compare SLO-violation minutes and task-hours.
    #[arg(long)]
    pub(super) simulate: bool,
    /// With --simulate: the trace column holding the load, as requests per trace period (ALB
    /// RequestCount, Sum).
    #[arg(long, default_value = "request_count", requires = "simulate")]
    pub(super) load: String,
    /// With --simulate: the latency SLO, p95 per minute.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration, requires = "simulate")]
    pub(super) slo_p95: std::time::Duration,
    /// With --simulate: requests per second one task serves at 100 % CPU (default 40, or the
    /// twin's).
    #[arg(long, requires = "simulate")]
    pub(super) task_rps: Option<f64>,
    /// With --simulate: the simulated service's model fitted to your own (`ecscale twin fit`):
    /// requests per task, latency curve, task start and instance boot times.
    #[arg(
        long,
        value_name = "TWIN.yaml",
        requires = "simulate",
        conflicts_with = "task_rps"
    )]
    pub(super) twin: Option<PathBuf>,
    /// With --simulate: also write the ecscale run's history (what CloudWatch would hold for
    /// the service: load, CPU, response time, task and instance counts) as a trace, one policy
    /// on one trace.
    #[arg(long, value_name = "OUT.csv", requires = "simulate")]
    pub(super) record: Option<PathBuf>,
    /// With --simulate: the peers' CPU target (%), where --baseline does not set one.
    #[arg(long, default_value_t = 60.0, requires = "simulate")]
    pub(super) baseline_target: f64,
    /// With --simulate: a peer to compare against, KIND or KIND:key=value,... (repeat it):
    /// aws (target tracking, 1-minute CPU), aws-hires (20-second CPU), aws-predictive (AWS
    /// predictive scaling beside aws-hires), hpa (the Kubernetes HPA). Default: all four.
    #[arg(long, value_name = "PEER", requires = "simulate")]
    pub(super) baseline: Vec<String>,
    /// With --simulate: the cost/SLO frontier. Each peer runs at every CPU target of --sweep
    /// and the policy at its own targets moved together (-20 to +10 points); the verdicts say
    /// whether the policy's point is dominated by each peer's curve and what each peer needs
    /// at the policy's cost and at its SLO minutes.
    #[arg(long, requires = "simulate")]
    pub(super) frontier: bool,
    /// With --frontier: the peers' CPU targets, FROM:TO:STEP (%).
    #[arg(long, default_value = "30:85:5", requires = "frontier")]
    pub(super) sweep: String,
    /// With --simulate: the resolution of ECS's service CPU and memory in the simulator (20s:
    /// ECS's high-resolution metrics, which the embedded config then reads; 60s: without them).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, requires = "simulate")]
    pub(super) resolution: std::time::Duration,
    /// With --simulate: the capacity stage's headroom per instance (a fraction: 0.1).
    #[arg(long, default_value_t = 0.1, requires = "simulate")]
    pub(super) headroom: f64,
    /// With --simulate: room the capacity stage keeps for this many more tasks (warm capacity).
    #[arg(long, default_value_t = 0, requires = "simulate")]
    pub(super) spare_tasks: u32,
    /// With --simulate: write an HTML report (the three runs' charts, decisions and events).
    #[arg(long, value_name = "OUT.html", requires = "simulate")]
    pub(super) report: Option<PathBuf>,
}

pub(super) async fn backtest(args: BacktestArgs, vars: &crate::config::env::Vars) -> Result<u8, Failure> {
    let ([policy], metrics) = (args.policy.as_slice(), args.metrics.as_slice()) else {
        return Err(invalid(anyhow::anyhow!(
            "backtest replays one policy file on one trace (several are for --simulate)"
        )));
    };
    if metrics.len() > 1 {
        return Err(invalid(anyhow::anyhow!(
            "backtest replays one policy file on one trace (several are for --simulate)"
        )));
    }
    let policies = load_policies(std::slice::from_ref(policy))
        .map_err(|d| mistakes(d, &policy.display().to_string()))?;
    let from = args.from.map(|s| (s, &args.window));
    let trace = super::trace::backtest_trace(metrics.first().map(PathBuf::as_path), from, vars).await?;
    let metrics = Path::new(&trace.file).to_path_buf();
    let opts = Options {
        initial: args.initial,
        per_task: args.per_task.clone(),
        lookback: args.lookback,
    };
    let targets: Vec<&TargetPolicy> = policies.iter().flat_map(|p| p.targets.iter()).collect();
    for t in &targets {
        warn_missing_columns(t, &trace, &metrics);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let reports = replay_all(&targets, &trace, &opts, &args, &mut out)
        .await
        .and_then(|r| out.flush().map(|_| r))
        .map_err(|e| Failure {
            code: EXIT_FAILURE,
            error: anyhow::anyhow!("writing the replay: {e}"),
        })?;
    if let Some(out) = &args.plot {
        let charts: Vec<Chart> = targets.iter().zip(&reports).map(|(t, r)| chart(t, r)).collect();
        plot::write(out, &charts).map_err(|e| Failure {
            code: EXIT_FAILURE,
            error: anyhow::anyhow!(e),
        })?;
        eprintln!("plot written to {}", out.display());
    }
    Ok(0)
}

fn warn_missing_columns(t: &TargetPolicy, trace: &crate::evaluate::trace::Trace, file: &Path) {
    for rule in &t.rules {
        for m in rule.spec.policy().metrics() {
            if !trace.series.contains_key(m) {
                eprintln!(
                    "warning: {} has no `{m}` column: rule `{}` of {} sees it missing at every tick",
                    file.display(),
                    rule.name,
                    t.target
                );
            }
        }
    }
}

/// Replays each target, writing its ticks as they are decided (a table, or a JSON array of
/// reports), so a long trace's decisions are never all in memory.
async fn replay_all(
    targets: &[&TargetPolicy],
    trace: &crate::evaluate::trace::Trace,
    opts: &Options,
    args: &BacktestArgs,
    out: &mut dyn std::io::Write,
) -> std::io::Result<Vec<Report>> {
    let runner = PluginRunner::default();
    let json = matches!(args.format, Format::Json);
    let mut reports = Vec::new();
    if json {
        out.write_all(b"[")?;
    }
    for (i, t) in targets.iter().enumerate() {
        let initial = backtest::initial_count(t, trace, opts);
        let period = trace.period_secs.max(1);
        let metrics = metrics_read(t);
        if json {
            json_head(out, i, t, initial, period)?;
        } else {
            table_head(out, t, trace, initial, period, &metrics)?;
        }
        let mut failed: Option<std::io::Error> = None;
        let mut n = 0usize;
        let r = backtest::run(t, trace, opts, &runner, |d, seen| {
            let done = if json {
                json_decision(out, n, &d)
            } else {
                table_row(out, &d, seen, &metrics, args.changes_only)
            };
            n += 1;
            if let Err(e) = done {
                failed.get_or_insert(e);
            }
        })
        .await;
        if let Some(e) = failed {
            return Err(e);
        }
        if json {
            json_tail(out, &r)?;
        } else {
            table_totals(out, &r)?;
        }
        reports.push(r);
    }
    if json {
        out.write_all(b"\n]\n")?;
    }
    Ok(reports)
}

fn json_head(
    out: &mut dyn std::io::Write,
    i: usize,
    t: &TargetPolicy,
    initial: u32,
    period: i64,
) -> std::io::Result<()> {
    let target = serde_json::to_string(&t.target)?;
    let sep = if i == 0 { "" } else { "," };
    write!(
        out,
        "{sep}\n{{\"target\": {target}, \"initial\": {initial}, \"period_secs\": {period}, \"decisions\": ["
    )
}

fn json_decision(out: &mut dyn std::io::Write, n: usize, d: &crate::model::Decision) -> std::io::Result<()> {
    out.write_all(if n == 0 { b"\n" } else { b",\n" })?;
    serde_json::to_writer(&mut *out, d)?;
    Ok(())
}

fn json_tail(out: &mut dyn std::io::Write, r: &Report) -> std::io::Result<()> {
    write!(out, "], \"values\": ")?;
    serde_json::to_writer(&mut *out, &r.values)?;
    write!(out, ", \"totals\": ")?;
    serde_json::to_writer(&mut *out, &r.totals)?;
    write!(out, "}}")
}

/// The metrics a policy's rules read, in rule order.
fn metrics_read(t: &TargetPolicy) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for m in t.rules.iter().flat_map(|r| r.spec.policy().metrics()) {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

fn table_head(
    out: &mut dyn std::io::Write,
    t: &TargetPolicy,
    trace: &crate::evaluate::trace::Trace,
    initial: u32,
    period: i64,
    metrics: &[&str],
) -> std::io::Result<()> {
    let first = trace.timestamps.first().map_or("-".into(), |t| {
        (*t + chrono::TimeDelta::seconds(period))
            .format("%Y-%m-%d %H:%M")
            .to_string()
    });
    writeln!(
        out,
        "{} ({}): {} ticks of {period}s from {first}, starting at {initial}",
        t.target,
        t.location(),
        trace.timestamps.len(),
    )?;
    let mut header = format!("{:<17}", "TIME (UTC)");
    for m in metrics {
        let _ = write!(header, " {m:>10}");
    }
    writeln!(
        out,
        "{header}  {:>9}  {:<9}  {:<16}  REASON",
        "COUNT", "ACTION", "RULE"
    )
}

fn table_row(
    out: &mut dyn std::io::Write,
    d: &crate::model::Decision,
    seen: &backtest::TickValues<'_>,
    metrics: &[&str],
    changes_only: bool,
) -> std::io::Result<()> {
    if changes_only && d.action == Action::Hold {
        return Ok(());
    }
    let mut line = format!("{:<17}", d.at.format("%m-%d %H:%M:%S"));
    for m in metrics {
        let v = seen.get(m).map(num);
        let _ = write!(line, " {:>10}", v.map_or_else(|| "-".into(), |v| v.to_string()));
    }
    let count = if d.desired == d.current {
        d.current.to_string()
    } else {
        format!("{}→{}", d.current, d.desired)
    };
    writeln!(
        out,
        "{line}  {count:>9}  {:<9}  {:<16}  {}",
        d.action.to_string(),
        d.rule.as_deref().unwrap_or("-"),
        d.reason
    )
}

fn table_totals(out: &mut dyn std::io::Write, r: &Report) -> std::io::Result<()> {
    let tot = &r.totals;
    let above: Vec<String> = tot
        .above_target
        .iter()
        .map(|a| format!("{} above {} for {} min", a.metric, num(a.target), num(a.minutes)))
        .collect();
    writeln!(
        out,
        "totals: {} scale-outs, {} scale-ins, {} task-hours over {} min, count {}..{}{}\n",
        tot.scale_outs,
        tot.scale_ins,
        num(tot.task_hours),
        num(tot.minutes),
        tot.lowest_count,
        tot.peak_count,
        if above.is_empty() {
            String::new()
        } else {
            format!("; {}", above.join(", "))
        }
    )
}

/// The chart of one replay: the metrics read (left), target lines (dashed), the count (right,
/// steps), and a triangle at each scale action.
pub fn chart(t: &TargetPolicy, r: &Report) -> Chart {
    let mut lines = Vec::new();
    let metrics = metrics_read(t);
    for (i, m) in metrics.iter().enumerate() {
        let Some(values) = r.values.get(*m) else { continue };
        let color = COLORS[i % COLORS.len()];
        lines.push(Line {
            label: m.to_string(),
            points: values.clone(),
            axis: Axis::Left,
            style: Style::Line,
            color,
        });
        for rule in &t.rules {
            if let RuleSpec::TargetTracking(tt) = &rule.spec {
                if *tt.metric == **m {
                    let (first, last) = (values.first().map(|p| p.0), values.last().map(|p| p.0));
                    if let (Some(a), Some(b)) = (first, last) {
                        lines.push(Line {
                            label: format!("{m} target {}", num(tt.target)),
                            points: vec![(a, tt.target), (b, tt.target)],
                            axis: Axis::Left,
                            style: Style::Dashed,
                            color,
                        });
                    }
                }
            }
        }
    }
    let count_color = "#111111";
    let mut count: Vec<_> = Vec::with_capacity(r.ticks.len() + 1);
    if let Some(first) = r.ticks.first() {
        count.push((
            first.at - chrono::TimeDelta::seconds(r.period_secs),
            f64::from(r.initial),
        ));
    }
    count.extend(r.ticks.iter().map(|d| (d.at, f64::from(d.desired))));
    lines.push(Line {
        label: "count".into(),
        points: count,
        axis: Axis::Right,
        style: Style::Step,
        color: count_color,
    });
    let markers = r
        .ticks
        .iter()
        .filter(|d| d.action != Action::Hold)
        .map(|d| Marker {
            at: d.at,
            value: f64::from(d.desired),
            axis: Axis::Right,
            up: d.action == Action::ScaleOut,
            color: if d.action == Action::ScaleOut {
                "#d55e00"
            } else {
                "#009e73"
            },
        })
        .collect();
    Chart {
        title: format!(
            "{}: {} scale-outs, {} scale-ins, {} task-hours",
            t.target,
            r.totals.scale_outs,
            r.totals.scale_ins,
            num(r.totals.task_hours)
        ),
        left_label: metrics.join(", "),
        right_label: "count".into(),
        lines,
        markers,
        events: Vec::new(),
    }
}
