//! `ecscale backtest --simulate --frontier`: each peer swept along its CPU target and the policy
//! along its own targets, every trace; the cost/SLO curves, and the verdicts read off them
//! ([`crate::sim::frontier`]): against each peer, and against the strongest at the policy's cost.

use std::fmt::Write as _;

use serde::Serialize;

use super::policy::BacktestArgs;
use super::subject::Subject;
use super::{invalid, Failure, Format};
use crate::plot::xy::{self, Curve, Spot, XyChart};
use crate::plot::COLORS;
use crate::sim::baseline::Peer;
use crate::sim::frontier::{self, Point, Verdict};
use crate::sim::run::Outcome;
use crate::sim::suite::{self, Contender, Job, TraceLoad};

/// The policy's variants: its main target moved by these many points.
const POLICY_OFFSETS: [f64; 6] = [-20.0, -15.0, -10.0, -5.0, 5.0, 10.0];

/// `FROM:TO:STEP` → the targets, each within 0..100.
pub(super) fn sweep(text: &str) -> Result<Vec<f64>, Failure> {
    let bad = |why: &str| invalid(anyhow::anyhow!("--sweep {text}: {why}"));
    let parts: Vec<f64> = text
        .split(':')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("FROM:TO:STEP, three numbers (30:85:5)"))?;
    let [from, to, step] = parts[..] else {
        return Err(bad("FROM:TO:STEP, three numbers (30:85:5)"));
    };
    if !(from > 0.0 && to < 100.0 && from <= to) {
        return Err(bad("targets between 0 and 100, FROM at most TO"));
    }
    if step <= 0.0 || step.is_nan() || (to - from) / step > 40.0 {
        return Err(bad("a positive STEP, at most 40 steps"));
    }
    let n = ((to - from) / step + 1e-9).floor() as usize;
    Ok((0..=n).map(|k| from + step * k as f64).collect())
}

/// What runs for one (policy, trace): which job is which.
enum Slot {
    Policy,
    Variant(f64),
    Peer(usize, f64),
    Oracle,
}

/// One policy on one trace: the points and the verdicts.
#[derive(Debug, Serialize)]
pub(super) struct TraceFrontier {
    pub(super) trace: String,
    pub(super) policy: String,
    pub(super) ecscale: Point,
    /// The policy at its other main targets (its own curve).
    pub(super) variants: Vec<Point>,
    pub(super) oracle: Point,
    pub(super) peers: Vec<PeerCurve>,
    pub(super) verdicts: Vec<Verdict>,
    /// The peer with the fewest SLO minutes at ecscale's task-hours.
    pub(super) strongest: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct PeerCurve {
    pub(super) peer: String,
    pub(super) settings: Peer,
    pub(super) points: Vec<Point>,
}

fn point(o: &Outcome, knob: f64) -> Point {
    Point {
        task_hours: o.totals.task_hours,
        slo_minutes: o.totals.slo_violation_minutes as f64,
        knob,
    }
}

/// The jobs for one subject on one trace, and what each is.
fn jobs(s: &Subject, peers: &[Peer], targets: &[f64], trace: &(TraceLoad, Option<u32>)) -> Vec<(Slot, Job)> {
    let mut setup = s.setup.clone();
    setup.initial = setup.initial.or(trace.1);
    let job = |contender| Job {
        setup: setup.clone(),
        trace: trace.0.clone(),
        contender,
    };
    let mut out = vec![(Slot::Policy, job(s.contender()))];
    if let Some(main) = s.service().and_then(|t| t.main_target()) {
        for off in POLICY_OFFSETS {
            let knob = main + off;
            let variant = variant(s, knob / main);
            if let Some(targets) = variant {
                out.push((Slot::Variant(knob), job(Contender::Ecscale(targets))));
            }
        }
    }
    for (k, p) in peers.iter().enumerate() {
        for t in targets {
            out.push((Slot::Peer(k, *t), job(s.peer(&p.with_target(*t)))));
        }
    }
    out.push((Slot::Oracle, job(Contender::Oracle)));
    out
}

/// The subject's targets with the service's targets scaled by `factor`.
fn variant(s: &Subject, factor: f64) -> Option<Vec<crate::policy::TargetPolicy>> {
    s.targets
        .iter()
        .map(|t| match t.target {
            crate::model::TargetKey::Service { .. } => t.with_targets_scaled(factor),
            _ => Some(t.clone()),
        })
        .collect()
}

/// Sweeps and reads the verdicts for every subject and trace.
pub(super) fn frontiers(
    subjects: &[Subject],
    peers: &[Peer],
    targets: &[f64],
    traces: &[(TraceLoad, Option<u32>)],
) -> Result<Vec<TraceFrontier>, Failure> {
    let mut slots = Vec::new();
    let mut all = Vec::new();
    for s in subjects {
        for t in traces {
            let (ss, js): (Vec<Slot>, Vec<Job>) = jobs(s, peers, targets, t).into_iter().unzip();
            slots.push((s, &t.0, ss));
            all.extend(js);
        }
    }
    let mut outcomes = suite::run_all(all, suite::threads()).into_iter();
    let mut out = Vec::new();
    for (s, trace, ss) in slots {
        let mut f = TraceFrontier {
            trace: trace.name.clone(),
            policy: s.file.clone(),
            ecscale: Point {
                task_hours: 0.0,
                slo_minutes: 0.0,
                knob: 0.0,
            },
            variants: Vec::new(),
            oracle: Point {
                task_hours: 0.0,
                slo_minutes: 0.0,
                knob: 0.0,
            },
            peers: peers
                .iter()
                .map(|p| PeerCurve {
                    peer: p.kind().name().to_string(),
                    settings: p.clone(),
                    points: Vec::new(),
                })
                .collect(),
            verdicts: Vec::new(),
            strongest: None,
        };
        let main = s.service().and_then(|t| t.main_target()).unwrap_or(0.0);
        for slot in ss {
            let o = outcomes
                .next()
                .unwrap_or_else(|| Err(anyhow::anyhow!("a frontier run is missing")))?;
            match slot {
                Slot::Policy => f.ecscale = point(&o, main),
                Slot::Variant(k) => f.variants.push(point(&o, k)),
                Slot::Peer(k, t) => f.peers[k].points.push(point(&o, t)),
                Slot::Oracle => f.oracle = point(&o, 0.0),
            }
        }
        f.variants.push(f.ecscale);
        f.variants.sort_by(|a, b| a.knob.total_cmp(&b.knob));
        f.verdicts = f
            .peers
            .iter()
            .map(|c| Verdict::of(&c.peer, &c.points, &f.ecscale))
            .collect();
        f.strongest = frontier::strongest(&f.verdicts).map(|v| v.peer.clone());
        out.push(f);
    }
    Ok(out)
}

pub(super) fn run(
    args: &BacktestArgs,
    subjects: &[Subject],
    peers: &[Peer],
    traces: &[(TraceLoad, Option<u32>)],
) -> Result<u8, Failure> {
    let targets = sweep(&args.sweep)?;
    let results = frontiers(subjects, peers, &targets, traces)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Format::Table => print!("{}", text(&results)),
    }
    let charts: Vec<XyChart> = results.iter().map(chart).collect();
    if let Some(out) = &args.plot {
        xy::write(out, &charts).map_err(|e| Failure {
            code: super::EXIT_FAILURE,
            error: anyhow::anyhow!(e),
        })?;
        eprintln!("plot written to {}", out.display());
    }
    if let Some(out) = &args.report {
        let html = report_html(&results, &charts);
        crate::files::write_atomically(out, html.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing the report {}: {e}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(0)
}

/// The verdicts in words, then a summary line per trace.
pub(super) fn text(results: &[TraceFrontier]) -> String {
    let mut s = String::new();
    for f in results {
        let _ = writeln!(
            s,
            "{} on {}: ecscale {:.1} task-hours, {:.0} SLO minutes; the oracle {:.1} task-hours ({:.2}×)",
            f.policy,
            f.trace,
            f.ecscale.task_hours,
            f.ecscale.slo_minutes,
            f.oracle.task_hours,
            f.ecscale.task_hours / f.oracle.task_hours.max(f64::MIN_POSITIVE)
        );
        for v in &f.verdicts {
            let _ = writeln!(s, "  {}", v.sentence(&f.ecscale));
        }
        if let Some(best) = &f.strongest {
            let _ = writeln!(s, "  strongest peer at ecscale's cost: {best}");
        }
        for c in &f.peers {
            let pts: Vec<String> = c
                .points
                .iter()
                .map(|p| format!("{:.0}%:{:.1}/{:.0}", p.knob, p.task_hours, p.slo_minutes))
                .collect();
            let _ = writeln!(
                s,
                "  curve {} (target: task-hours/SLO minutes): {}",
                c.peer,
                pts.join(" ")
            );
        }
        let pts: Vec<String> = f
            .variants
            .iter()
            .map(|p| format!("{:.0}:{:.1}/{:.0}", p.knob, p.task_hours, p.slo_minutes))
            .collect();
        let _ = writeln!(
            s,
            "  curve ecscale (main target: task-hours/SLO minutes): {}\n",
            pts.join(" ")
        );
    }
    s.push_str(&summary(results));
    s
}

/// One line per trace: ecscale against the strongest peer at its cost.
pub(super) fn summary(results: &[TraceFrontier]) -> String {
    let mut s = format!(
        "{:<18} {:>10} {:>8} {:>9}  {:<16} {:>12} {:>8} {:>10}\n",
        "trace", "task-hours", "÷ oracle", "SLO min", "strongest peer", "its SLO min", "ratio", "dominated"
    );
    for f in results {
        let best = f
            .strongest
            .as_ref()
            .and_then(|b| f.verdicts.iter().find(|v| &v.peer == b));
        let _ = writeln!(
            s,
            "{:<18} {:>10.1} {:>8.2} {:>9.0}  {:<16} {:>12} {:>8} {:>10}",
            f.trace,
            f.ecscale.task_hours,
            f.ecscale.task_hours / f.oracle.task_hours.max(f64::MIN_POSITIVE),
            f.ecscale.slo_minutes,
            f.strongest.as_deref().unwrap_or("–"),
            best.and_then(|v| v.peer_slo_minutes)
                .map_or("–".into(), |r| r.text(0)),
            best.and_then(|v| v.slo_ratio)
                .map_or("–".into(), |r| if r.is_finite() {
                    format!("{r:.2}")
                } else {
                    "∞".into()
                }),
            if f.verdicts.iter().any(|v| v.dominated) {
                let by: Vec<&str> = f
                    .verdicts
                    .iter()
                    .filter(|v| v.dominated)
                    .map(|v| v.peer.as_str())
                    .collect();
                format!("by {}", by.join(","))
            } else {
                "no".into()
            }
        );
    }
    s
}

/// The curves of one trace.
pub(super) fn chart(f: &TraceFrontier) -> XyChart {
    let xy = |p: &Point| (p.task_hours, p.slo_minutes);
    let mut curves: Vec<Curve> = f
        .peers
        .iter()
        .enumerate()
        .map(|(k, c)| Curve {
            label: c.peer.clone(),
            points: frontier::envelope(&c.points).iter().map(xy).collect(),
            color: COLORS[(k + 2) % COLORS.len()],
            dashed: false,
        })
        .collect();
    curves.push(Curve {
        label: "ecscale, targets moved".into(),
        points: f.variants.iter().map(xy).collect(),
        color: COLORS[0],
        dashed: true,
    });
    XyChart {
        title: format!(
            "{} on {}: cost against SLO minutes (each peer's CPU target swept)",
            f.policy, f.trace
        ),
        x_label: "task-hours".into(),
        y_label: "SLO-violation minutes".into(),
        curves,
        spots: vec![
            Spot {
                label: "ecscale".into(),
                at: xy(&f.ecscale),
                color: COLORS[0],
            },
            Spot {
                label: "oracle".into(),
                at: xy(&f.oracle),
                color: COLORS[1],
            },
        ],
    }
}

fn report_html(results: &[TraceFrontier], charts: &[XyChart]) -> String {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ecscale frontier</title>\
<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222} pre{background:#f7f7f7;padding:12px;white-space:pre-wrap}</style>\
</head><body>\n<h1>Cost against SLO minutes</h1>\n",
    );
    let _ = writeln!(h, "<pre>{}</pre>", crate::plot::esc(&summary(results)));
    for (f, c) in results.iter().zip(charts) {
        let _ = writeln!(h, "<h2>{}</h2>", crate::plot::esc(&f.trace));
        let lines: Vec<String> = f.verdicts.iter().map(|v| v.sentence(&f.ecscale)).collect();
        let _ = writeln!(h, "<pre>{}</pre>", crate::plot::esc(&lines.join("\n")));
        h.push_str(&xy::svg(std::slice::from_ref(c)));
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_read_whole_and_bad_ones_are_named() {
        assert_eq!(sweep("30:45:5").unwrap(), vec![30.0, 35.0, 40.0, 45.0]);
        assert_eq!(sweep("50:50:1").unwrap(), vec![50.0]);
        for bad in [
            "30:85",
            "a:b:c",
            "0:50:5",
            "60:50:5",
            "30:90:0",
            "30:99:0.1",
            "30:100:5",
        ] {
            let e = sweep(bad).unwrap_err().error.to_string();
            assert!(e.starts_with(&format!("--sweep {bad}: ")), "{e}");
        }
    }
}
