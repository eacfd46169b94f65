//! `ecscale twin fit`: the simulator's service model fitted to a service's own history, from a
//! trace file or read from CloudWatch or Elasticsearch as `trace export` reads it; written as a
//! twin file that `backtest --simulate --twin` and `tune --twin` take.

use std::path::PathBuf;

use super::{invalid, Failure, Format};
use crate::config::env::Vars;
use crate::evaluate::trace;
use crate::sim::twin::{self, file, Estimate, Fitted, Twin};

/// `ecscale twin fit` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct FitArgs {
    /// The service's history: a trace file (as `trace export` writes it).
    #[arg(
        long,
        conflicts_with_all = ["from", "service", "since", "period"],
        required_unless_present = "from"
    )]
    metrics: Option<PathBuf>,
    /// Instead of --metrics: read the history from CloudWatch or Elasticsearch (with --config,
    /// --service, --since).
    #[arg(long, value_enum)]
    from: Option<super::trace::Source>,
    #[command(flatten)]
    window: super::trace::Window,
    /// Write the twin here (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format of what was fitted (the twin file is YAML either way).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub(super) async fn fit(args: FitArgs, vars: &Vars) -> Result<u8, Failure> {
    let t = match (&args.metrics, args.from) {
        (Some(path), _) => trace::read(path).map_err(invalid)?,
        (None, Some(source)) => super::trace::export(source, &args.window, vars).await?,
        (None, None) => return Err(invalid(anyhow::anyhow!("--metrics FILE or --from cloudwatch|es"))),
    };
    let fitted = twin::fit(&t);
    let twin = Twin::of(&fitted);
    let text = file::render(&fitted, &twin);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&fitted)?),
        Format::Table => eprint!("{}", summary(&fitted)),
    }
    match &args.out {
        Some(path) => {
            crate::files::write_atomically(path, text.as_bytes())
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            eprintln!("twin written to {}", path.display());
        }
        None if args.format == Format::Table => print!("{text}"),
        None => {}
    }
    Ok(0)
}

/// Each estimate in a line: the value with its uncertainty and basis, or why there is none.
fn summary(f: &Fitted) -> String {
    let line = |name: &str, e: &Estimate, unit: &dyn Fn(f64) -> String| match e {
        Estimate::Fitted { value, error, basis } => {
            format!("{name:<16} {} ± {} ({basis})\n", unit(*value), unit(*error))
        }
        Estimate::Missing { why } => format!("{name:<16} not enough data, the default stays: {why}\n"),
    };
    let plain = |v: f64| format!("{v:.3}");
    let ms = |v: f64| format!("{:.0} ms", v * 1000.0);
    format!(
        "fitted from {} ({} minutes)\n{}{}{}{}{}{}",
        f.source,
        f.minutes,
        line("requests/s/task", &f.task_rps, &plain),
        line("service time", &f.service_time, &|v| format!(
            "{:.1} ms",
            v * 1000.0
        )),
        line("queueing", &f.queueing, &plain),
        line("task start", &f.task_start, &ms),
        line("instance boot", &f.instance_boot, &ms),
        line("load noise", &f.noise, &|v| format!("{:.1} %", v * 100.0)),
    )
}

/// `--twin FILE`: the twin, or its mistakes.
pub(super) fn load(path: &std::path::Path) -> Result<Twin, Failure> {
    file::load(path).map_err(|d| super::mistakes(d, &path.display().to_string()))
}
