//! `twin.yaml`: what `twin fit` writes and `--twin` reads. Each parameter on its own line with
//! a comment giving its uncertainty and what it rests on (or that it is the default, and why).
//!
//! ```yaml
//! task_rps: 25.02          # requests/s per task at 100 % CPU, ± 0.31 (1,204 steady minutes ...)
//! service_time: 39812us    # mean time a request takes unqueued, ± 410us (...)
//! queueing: 0.641          # Kingman's (ca² + cs²) / 2, ± 0.02 (...)
//! task_start: 60412ms      # ± 2100ms (212 tasks started)
//! instance_boot: 90000ms   # the default: no `instances_pending` column
//! noise: 0.041             # the load's noise a minute, ± 0.001 (...)
//! ```
//!
//! Read by the same bounded reader as every YAML file: a mistake is named at file:line:column,
//! an unknown key is refused, and every value is checked.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{Estimate, Fitted, Twin};
use crate::read::{read_source, Cx, Diagnostics};

const KEYS: &[&str] = &[
    "task_rps",
    "service_time",
    "queueing",
    "task_start",
    "instance_boot",
    "noise",
];

fn comment(e: &Estimate, unit: impl Fn(f64) -> String) -> String {
    match e {
        Estimate::Fitted { error, basis, .. } => format!("± {} ({basis})", unit(*error)),
        Estimate::Missing { why } => format!("the default: {why}"),
    }
}

fn ms(secs: f64) -> String {
    format!("{:.0}ms", secs * 1000.0)
}

fn us(secs: f64) -> String {
    format!("{:.0}us", secs * 1e6)
}

/// The twin's text: the values in force, each with what it rests on.
pub fn render(f: &Fitted, t: &Twin) -> String {
    let mut s = format!(
        "# A twin of the service fitted by `ecscale twin fit` from {} ({} minutes).\n\
# `ecscale backtest --simulate --twin FILE` and `ecscale tune --twin FILE` run the simulator with it.\n",
        f.source, f.minutes
    );
    let mut line = |key: &str, value: String, note: String| {
        let _ = writeln!(s, "{:<28} # {note}", format!("{key}: {value}"));
    };
    line(
        "task_rps",
        format!("{:.3}", t.task_rps),
        format!(
            "requests/s per task at 100 % CPU, {}",
            comment(&f.task_rps, |v| format!("{v:.3}"))
        ),
    );
    let service = t.service_time.map_or(1.0 / t.task_rps, |d| d.as_secs_f64());
    line(
        "service_time",
        us(service),
        format!(
            "mean time one request takes unqueued, {}",
            comment(&f.service_time, us)
        ),
    );
    line(
        "queueing",
        format!("{:.3}", t.queueing),
        format!(
            "Kingman's (ca² + cs²) / 2, {}",
            comment(&f.queueing, |v| format!("{v:.3}"))
        ),
    );
    line(
        "task_start",
        ms(t.task_start.as_secs_f64()),
        format!("placed to RUNNING, {}", comment(&f.task_start, ms)),
    );
    line(
        "instance_boot",
        ms(t.instance_boot.as_secs_f64()),
        format!("launched to ACTIVE, {}", comment(&f.instance_boot, ms)),
    );
    if let Some(n) = t.noise {
        line(
            "noise",
            format!("{n:.4}"),
            format!(
                "the load's noise a minute (a fraction), {}",
                comment(&f.noise, |v| format!("{v:.4}"))
            ),
        );
    }
    s
}

/// Reads a twin file: every mistake at once, with its position.
pub fn load(path: &Path) -> Result<Twin, Diagnostics> {
    let source = read_source(path, "the twin file")?;
    load_str(&source, &path.display().to_string())
}

pub fn load_str(source: &str, file: &str) -> Result<Twin, Diagnostics> {
    let mut cx = Cx::new(file);
    let Some(docs) = crate::read::parse_yaml(source, &mut cx) else {
        return Err(Diagnostics(cx.diags));
    };
    let [doc] = docs.as_slice() else {
        cx.error(Default::default(), "(file)", "a twin file holds one document");
        return Err(Diagnostics(cx.diags));
    };
    let Some(mut m) = cx.map(doc, "") else {
        return Err(Diagnostics(cx.diags));
    };
    let d = Twin::defaults();
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let number =
        |m: &mut crate::read::MapReader<'_>, cx: &mut Cx, key: &str, ok: &dyn Fn(f64) -> bool, what: &str| {
            let span = m.span_of(key);
            let v: Option<f64> = m.opt(cx, key);
            if v.is_some_and(|v| !ok(v)) {
                cx.error(span, key, format!("{} is not {what}", v.unwrap_or_default()));
                return None;
            }
            v
        };
    let task_rps = number(&mut m, &mut cx, "task_rps", &positive, "a positive rate").unwrap_or(d.task_rps);
    let queueing = number(
        &mut m,
        &mut cx,
        "queueing",
        &|v| v > 0.0 && v < 100.0,
        "a factor between 0 and 100",
    )
    .unwrap_or(d.queueing);
    let noise = number(
        &mut m,
        &mut cx,
        "noise",
        &|v| (0.0..10.0).contains(&v),
        "a fraction from 0 to 10",
    );
    let duration = |m: &mut crate::read::MapReader<'_>, cx: &mut Cx, key: &str| {
        let span = m.span_of(key);
        let v: Option<Duration> = m.opt(cx, key);
        if v.is_some_and(|v| v.is_zero() || v > Duration::from_secs(86_400)) {
            cx.error(span, key, "longer than 0 and at most a day");
            return None;
        }
        v
    };
    let service_time = duration(&mut m, &mut cx, "service_time");
    let task_start = duration(&mut m, &mut cx, "task_start").unwrap_or(d.task_start);
    let instance_boot = duration(&mut m, &mut cx, "instance_boot").unwrap_or(d.instance_boot);
    m.finish(&mut cx, KEYS);
    if !cx.diags.is_empty() {
        return Err(Diagnostics(cx.diags));
    }
    Ok(Twin {
        task_rps,
        service_time,
        queueing,
        task_start,
        instance_boot,
        noise,
    })
}
