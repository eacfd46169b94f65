//! Reports of simulated runs (the demo, `backtest --simulate`): charts over simulated time,
//! the decision log with reasons, the cluster's events, checks and a text summary, as one
//! self-contained HTML page (inline SVG, no script, no network).

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};

use super::cluster::Event;
use super::run::{violates, ActionRow, Outcome, Totals};
use super::Row;
use crate::plot::{self, esc, Axis, Chart, Line, Marker, Style, COLORS};

/// A run to draw: its name (`ecscale`, `baseline`) and outcome.
pub struct Run<'a> {
    pub name: &'a str,
    pub outcome: &'a Outcome,
}

fn series(rows: &[Row], f: impl Fn(&Row) -> Option<f64>) -> Vec<(DateTime<Utc>, f64)> {
    rows.iter().filter_map(|r| f(r).map(|v| (r.t, v))).collect()
}

fn line(
    label: String,
    points: Vec<(DateTime<Utc>, f64)>,
    axis: Axis,
    style: Style,
    color: &'static str,
) -> Line {
    Line {
        label,
        points,
        axis,
        style,
        color,
    }
}

/// Load and latency, CPU, tasks, instances: one chart each, every run drawn on it.
pub fn charts(
    runs: &[Run<'_>],
    slo_ms: f64,
    cpu_target: Option<f64>,
    faults: &[(DateTime<Utc>, String)],
) -> Vec<Chart> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let names = Names(runs.len() > 1);
    let mut charts = vec![
        load_chart(runs, slo_ms, names),
        cpu_chart(runs, cpu_target, names),
        tasks_chart(runs, names),
        instances_chart(runs, names),
    ];
    charts.extend(group_charts(first.outcome));
    for c in &mut charts {
        c.events = faults
            .iter()
            .map(|(at, label)| crate::plot::Event {
                at: *at,
                label: label.clone(),
            })
            .collect();
    }
    charts
}

/// How lines are named and drawn when several runs share a chart: the run's name after the
/// line's, the first run solid and the others dashed.
#[derive(Clone, Copy)]
struct Names(bool);

impl Names {
    fn of(self, r: &Run<'_>, what: &str) -> String {
        if self.0 {
            format!("{what} ({})", r.name)
        } else {
            what.to_string()
        }
    }

    fn style(i: usize) -> Style {
        if i == 0 {
            Style::Line
        } else {
            Style::Dashed
        }
    }
}

/// A level line across the first run's minutes.
fn level(runs: &[Run<'_>], v: f64) -> Vec<(DateTime<Utc>, f64)> {
    runs.first()
        .map_or_else(Vec::new, |r| series(&r.outcome.rows, |_| Some(v)))
}

/// The load, its errors, each run's p95 (drawn up to 4 × the SLO: one outage would flatten
/// every other minute; the legend says so with the true worst), and the SLO.
fn load_chart(runs: &[Run<'_>], slo_ms: f64, names: Names) -> Chart {
    let rows0 = runs.first().map_or(&[][..], |r| &r.outcome.rows[..]);
    let mut load = Chart {
        title: "Load and latency".into(),
        left_label: "requests/s".into(),
        right_label: "p95 latency (ms)".into(),
        ..Default::default()
    };
    load.lines.push(line(
        "load".into(),
        series(rows0, |r| Some(r.rps)),
        Axis::Left,
        Style::Line,
        COLORS[0],
    ));
    load.lines.push(line(
        "errors/s".into(),
        series(rows0, |r| Some(r.errors_per_s)),
        Axis::Left,
        Style::Line,
        COLORS[3],
    ));
    let clip = slo_ms * 4.0;
    for (i, r) in runs.iter().enumerate() {
        let label = clipped_label(
            names.of(r, "p95"),
            r.outcome.rows.iter().filter_map(|x| Some((x.p95_ms?, x.t))),
            clip,
        );
        load.lines.push(line(
            label,
            series(&r.outcome.rows, |x| x.p95_ms.map(|p| p.min(clip))),
            Axis::Right,
            Names::style(i),
            [COLORS[1], COLORS[4]][i.min(1)],
        ));
    }
    load.lines.push(line(
        format!("SLO {slo_ms:.0} ms"),
        level(runs, slo_ms),
        Axis::Right,
        Style::Dashed,
        COLORS[5],
    ));
    load
}

/// Each run's CPU, and the target.
fn cpu_chart(runs: &[Run<'_>], cpu_target: Option<f64>, names: Names) -> Chart {
    let mut cpu = Chart {
        title: "CPU utilization of the service (average over its tasks)".into(),
        left_label: "%".into(),
        ..Default::default()
    };
    for (i, r) in runs.iter().enumerate() {
        cpu.lines.push(line(
            names.of(r, "cpu"),
            series(&r.outcome.rows, |x| x.cpu),
            Axis::Left,
            Names::style(i),
            COLORS[i.min(1) * 2],
        ));
    }
    if let Some(t) = cpu_target {
        cpu.lines.push(line(
            format!("target {t:.0} %"),
            level(runs, t),
            Axis::Left,
            Style::Dashed,
            COLORS[5],
        ));
    }
    cpu
}

/// Each run's running and desired tasks (running first, desired dashed over it: both show
/// where they are equal), the first run's tasks waiting for room, and the service's decisions.
fn tasks_chart(runs: &[Run<'_>], names: Names) -> Chart {
    let mut tasks = Chart {
        title: "Tasks (▲▼ the service's scaling decisions)".into(),
        left_label: "tasks".into(),
        ..Default::default()
    };
    for (i, r) in runs.iter().enumerate() {
        let rows = &r.outcome.rows;
        tasks.lines.push(line(
            names.of(r, "running"),
            series(rows, |x| Some(f64::from(x.running))),
            Axis::Left,
            Style::Step,
            [COLORS[2], COLORS[3]][i.min(1)],
        ));
        tasks.lines.push(line(
            names.of(r, "desired"),
            series(rows, |x| Some(f64::from(x.desired))),
            Axis::Left,
            Style::DashedStep,
            [COLORS[0], COLORS[4]][i.min(1)],
        ));
        if i == 0 {
            tasks.lines.push(line(
                "waiting for room".into(),
                series(rows, |x| Some(f64::from(x.provisioning))),
                Axis::Left,
                Style::Step,
                COLORS[1],
            ));
        }
        let service = |a: &ActionRow| !a.target.starts_with("asg/") && !a.target.contains("/group:");
        tasks.markers.extend(decisions(&r.outcome.actions, service));
    }
    tasks
}

/// Each run's instances in service, and the first run's booting and draining ones.
fn instances_chart(runs: &[Run<'_>], names: Names) -> Chart {
    let mut instances = Chart {
        title: "EC2 instances".into(),
        left_label: "instances".into(),
        ..Default::default()
    };
    for (i, r) in runs.iter().enumerate() {
        let rows = &r.outcome.rows;
        instances.lines.push(line(
            names.of(r, "in service"),
            series(rows, |x| Some(f64::from(x.instances + x.draining))),
            Axis::Left,
            Style::Step,
            [COLORS[0], COLORS[4]][i.min(1)],
        ));
        if i == 0 {
            for (what, count, color) in [
                ("booting", (|x: &Row| x.booting) as fn(&Row) -> u32, COLORS[1]),
                ("draining", |x: &Row| x.draining, COLORS[3]),
            ] {
                instances.lines.push(line(
                    what.into(),
                    series(rows, |x| Some(f64::from(count(x)))),
                    Axis::Left,
                    Style::Step,
                    color,
                ));
            }
        }
    }
    instances
}

/// The changes `keep` selects, as ▲▼ markers at the count they set.
fn decisions(actions: &[ActionRow], keep: impl Fn(&ActionRow) -> bool) -> Vec<Marker> {
    actions
        .iter()
        .filter(|a| keep(a))
        .map(|a| Marker {
            at: a.at,
            value: f64::from(a.to),
            axis: Axis::Left,
            up: a.to > a.from,
            color: if a.to > a.from { COLORS[1] } else { COLORS[2] },
        })
        .collect()
}

/// A line of a group's chart: label, what it plots, axis, style, colour.
type GroupLine = (
    &'static str,
    fn(&super::GroupRow) -> f64,
    Axis,
    Style,
    &'static str,
);

/// One chart per task group: its tasks (running, starting) with its decisions, and its queue.
fn group_charts(o: &Outcome) -> Vec<Chart> {
    let names: Vec<String> = o
        .rows
        .first()
        .map(|r| r.groups.iter().map(|g| g.name.clone()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let of = |f: fn(&super::GroupRow) -> f64| series(&o.rows, move |r| r.groups.get(k).map(f));
        let mut c = Chart {
            title: format!("Task group {name}, placed by ecscale (▲▼ its decisions)"),
            left_label: "tasks".into(),
            right_label: "jobs waiting".into(),
            ..Default::default()
        };
        let lines: [GroupLine; 3] = [
            (
                "running",
                |g| f64::from(g.running),
                Axis::Left,
                Style::Step,
                COLORS[2],
            ),
            (
                "starting",
                |g| f64::from(g.pending),
                Axis::Left,
                Style::Step,
                COLORS[1],
            ),
            ("queue", |g| g.queue, Axis::Right, Style::Line, COLORS[0]),
        ];
        for (label, f, axis, style, color) in lines {
            c.lines.push(line(label.into(), of(f), axis, style, color));
        }
        let target = format!("/group:{name}");
        c.markers
            .extend(decisions(&o.actions, |a| a.target.ends_with(&target)));
        out.push(c);
    }
    out
}

/// A line's legend, saying so when some of its values are drawn cut at `clip`.
fn clipped_label(name: String, values: impl Iterator<Item = (f64, DateTime<Utc>)>, clip: f64) -> String {
    match values.max_by(|a, b| a.0.total_cmp(&b.0)) {
        Some((v, at)) if v > clip => format!(
            "{name} (drawn up to {clip:.0} ms; worst {v:.0} ms at {})",
            at.format("%H:%M")
        ),
        _ => name,
    }
}

/// The totals as text lines.
pub fn totals_text(t: &Totals) -> String {
    format!(
        "{} minutes: p95 over {:.0} ms (or >1 % errors) in {} of them (worst p95 {:.0} ms); {:.0} requests, {:.0} failed ({:.2} %)\n\
task-hours {:.2}, instance-hours {:.2}; peak {} tasks on {} instances; {} scale-outs, {} scale-ins of the service",
        t.minutes,
        t.slo_p95_ms,
        t.slo_violation_minutes,
        t.worst_p95_ms,
        t.requests,
        t.errors,
        if t.requests > 0.0 { t.errors * 100.0 / t.requests } else { 0.0 },
        t.task_hours,
        t.instance_hours,
        t.peak_tasks,
        t.peak_instances,
        t.scale_outs,
        t.scale_ins
    )
}

/// A pass/fail line of a report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    pub passed: bool,
    pub what: String,
}

/// The page: a summary (text, as printed), checks, charts, then per run its decisions and the
/// cluster's events.
pub fn html(title: &str, summary: &str, checks: &[Check], charts: &[Chart], runs: &[Run<'_>]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0 20px}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}} th{{background:#f3f3f3}}\
pre{{background:#f7f7f7;padding:12px;white-space:pre-wrap}} .pass{{color:#007a3d;font-weight:600}} .fail{{color:#b00020;font-weight:600}}\
</style></head><body>\n<h1>{t}</h1>\n<h2>Summary</h2>\n<pre id=\"summary\">{s}</pre>\n",
        t = esc(title),
        s = esc(summary)
    );
    if !checks.is_empty() {
        h.push_str("<h2>Checks</h2>\n<ul id=\"checks\">\n");
        for c in checks {
            let _ = writeln!(
                h,
                "<li class=\"{}\">{} {}</li>",
                if c.passed { "pass" } else { "fail" },
                if c.passed { "✓" } else { "✗" },
                esc(&c.what)
            );
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h2>Over time</h2>\n");
    h.push_str(&plot::svg(charts));
    for r in runs {
        let _ = writeln!(h, "\n<h2>Decisions ({})</h2>", esc(r.name));
        h.push_str("<table class=\"decisions\"><tr><th>time (UTC)</th><th>target</th><th>change</th><th>rule</th><th>reason</th></tr>\n");
        for a in &r.outcome.actions {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td></tr>",
                a.at.format("%H:%M:%S"),
                esc(&a.target),
                a.from,
                a.to,
                esc(a.rule.as_deref().unwrap_or("")),
                esc(&a.reason)
            );
        }
        h.push_str("</table>\n");
        let notable: Vec<_> = r.outcome.events.iter().filter(|e| notable(e.kind)).collect();
        if !notable.is_empty() {
            let _ = writeln!(
                h,
                "<h3>Cluster events ({})</h3>\n<table><tr><th>time (UTC)</th><th>event</th></tr>",
                esc(r.name)
            );
            for e in notable {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    e.at.format("%H:%M:%S"),
                    esc(&e.text)
                );
            }
            h.push_str("</table>\n");
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// Events worth a line in reports and the live view (task starts and stops are many).
pub fn notable(kind: &str) -> bool {
    matches!(
        kind,
        "task_killed"
            | "instance_killed"
            | "instance_launched"
            | "instance_in_service"
            | "instance_terminated"
            | "task_waiting"
            | "instance_state"
    )
}

/// The minute row at `t`.
fn row_at(rows: &[Row], t: DateTime<Utc>) -> Option<&Row> {
    rows.iter().rev().find(|r| r.t <= t)
}

/// The phases a run's checks are about, named as the scenario names them: its busiest phase
/// (name, start, end) and its last one.
pub struct Phases<'a> {
    pub busiest: (&'a str, DateTime<Utc>, DateTime<Utc>),
    pub last: &'a str,
}

/// What a scaling run must show: it scaled out, latency came back under the SLO during the
/// busiest phase, it scaled back in by the end, it did not flap, and (when faults were injected)
/// what was killed was replaced. Each label names the scenario's own phases.
pub fn checks(
    o: &Outcome,
    service: &str,
    initial: u32,
    slo_ms: f64,
    phases: Phases<'_>,
    faults: &[(DateTime<Utc>, &str)],
) -> Vec<Check> {
    let (busiest, hold) = (phases.busiest.0, (phases.busiest.1, phases.busiest.2));
    let mut out = Vec::new();
    let peak = o.rows.iter().map(|r| r.desired).max().unwrap_or(0);
    out.push(Check {
        passed: peak > initial,
        what: format!("the service scaled out under the load: {initial} → {peak} tasks"),
    });
    // The last third of the hold, minutes right after a fault left out.
    let from = hold.1 - (hold.1 - hold.0) / 3;
    let late: Vec<&Row> = o
        .rows
        .iter()
        .filter(|r| r.t >= from && r.t + TimeDelta::minutes(1) <= hold.1)
        .filter(|r| {
            !faults
                .iter()
                .any(|(at, _)| r.t + TimeDelta::minutes(1) > *at && r.t < *at + TimeDelta::minutes(2))
        })
        .collect();
    let over = late.iter().filter(|r| violates(r, slo_ms)).count();
    out.push(Check {
        passed: !late.is_empty() && over == 0,
        what: format!(
            "p95 latency back under {slo_ms:.0} ms by the end of `{busiest}`, the busiest phase: {} of its last {} minutes over",
            over,
            late.len()
        ),
    });
    let last = o.rows.last().map(|r| r.desired).unwrap_or(0);
    out.push(Check {
        passed: last < peak && last <= initial.max(peak / 3),
        what: format!(
            "it scaled back in by the end of `{}`, the last phase: {peak} → {last} tasks",
            phases.last
        ),
    });
    let svc: Vec<&ActionRow> = o.actions.iter().filter(|a| a.target == service).collect();
    // Flapping is going back and forth: out, in, out (or in, out, in) within 10 minutes. One
    // correction after the end of a ramp is not.
    let up = |a: &ActionRow| a.to > a.from;
    let flapping: Vec<&[&ActionRow]> = svc
        .windows(3)
        .filter(|w| {
            up(w[0]) != up(w[1]) && up(w[1]) != up(w[2]) && w[2].at - w[0].at < TimeDelta::minutes(10)
        })
        .collect();
    // A failure names the first flap's changes and the reason of the one that turned back.
    let first = flapping.first().map_or(String::new(), |w| {
        let change = |a: &ActionRow| format!("{} → {} at {}", a.from, a.to, a.at.format("%H:%M:%S"));
        format!(
            ": {}, {}, {} by {}",
            change(w[0]),
            change(w[1]),
            change(w[2]),
            w[2].reason
        )
    });
    out.push(Check {
        passed: flapping.is_empty(),
        what: format!(
            "no flapping: {} back-and-forth change(s) of direction within 10 minutes{first}",
            flapping.len()
        ),
    });
    for (at, what) in faults {
        out.extend(fault_checks(&o.rows, &o.events, &svc, *at, what));
    }
    let mut streak = 0;
    let mut longest = 0;
    for r in &o.rows {
        streak = if r.provisioning > 0 { streak + 1 } else { 0 };
        longest = longest.max(streak);
    }
    out.push(Check {
        passed: longest <= 3,
        what: format!("capacity in time: tasks waited for an instance at most {longest} minute(s) in a row"),
    });
    out
}

/// What a fault at `at` must show: no scale-out for the loss (a failure names the action and
/// its reason), and what was killed replaced within 4 minutes.
fn fault_checks(
    rows: &[Row],
    events: &[Event],
    svc: &[&ActionRow],
    at: DateTime<Utc>,
    what: &str,
) -> [Check; 2] {
    // A loss is not demand: no scale-out above the count set before it while the loss is in the
    // data, until a minute after its replacements run (or 5 minutes when they do not). Later, a
    // scale-out answers the load, as the flapping check judges.
    let before = row_at(rows, at - TimeDelta::minutes(1)).map_or(0, |r| r.desired);
    let limit = at + TimeDelta::minutes(5);
    let whole = rows
        .iter()
        .find(|r| r.t >= at && r.running >= r.desired)
        .map_or(limit, |r| (r.t + TimeDelta::minutes(2)).min(limit));
    let after = rows
        .iter()
        .filter(|r| r.t >= at && r.t < whole)
        .map(|r| r.desired)
        .max()
        .unwrap_or(0);
    // A failure names the scale-out and its reason: the check runs on a live, timed loop.
    let why = svc
        .iter()
        .find(|a| a.at >= at && a.at < whole && a.to > before)
        .map(|a| {
            format!(
                ": {} → {} at {} by {}",
                a.from,
                a.to,
                a.at.format("%H:%M:%S"),
                a.reason
            )
        })
        .filter(|_| after > before)
        .unwrap_or_default();
    let no_scale_out = Check {
        passed: after <= before,
        what: format!(
            "{what} at {}: no scale-out for the loss ({before} desired before, at most {after} until {}){why}",
            at.format("%H:%M"),
            whole.format("%H:%M")
        ),
    };
    let later = at + TimeDelta::minutes(4);
    let r = row_at(rows, later);
    let ok = r.is_some_and(|r| r.running >= r.desired);
    let started = events
        .iter()
        .any(|e| e.at > at && matches!(e.kind, "task_started" | "instance_in_service"));
    let replaced = Check {
        passed: ok && started,
        what: format!(
            "{what} at {}: replaced, {} running of {} desired 4 minutes later",
            at.format("%H:%M"),
            r.map_or(0, |r| r.running),
            r.map_or(0, |r| r.desired)
        ),
    };
    [no_scale_out, replaced]
}

/// The longest run of minutes in which a group's spread over zones was off by more than one
/// task although the emptier zone had room for one more (drift ecscale could have mended).
pub fn spread_drift(rows: &[Row], g: usize) -> usize {
    let (mut streak, mut longest) = (0, 0);
    for r in rows {
        let Some(zones) = r.groups.get(g).map(|g| &g.zones) else {
            continue;
        };
        let hi = zones.iter().map(|z| z.tasks).max().unwrap_or(0);
        let short = zones.iter().any(|z| z.tasks + 1 < hi && z.room > 0);
        streak = if short { streak + 1 } else { 0 };
        longest = longest.max(streak);
    }
    longest
}

/// The longest time a group had fewer tasks placed than decided, over the ticks.
pub fn longest_short(ticks: &[super::run::GroupTick], group: &str) -> TimeDelta {
    let mut since: Option<DateTime<Utc>> = None;
    let mut worst = TimeDelta::zero();
    for t in ticks.iter().filter(|t| t.group == group) {
        if t.placed >= t.desired {
            since = None;
            continue;
        }
        let from = *since.get_or_insert(t.at);
        worst = worst.max(t.at - from);
    }
    worst
}

/// What a run with task groups must show of each (spread over zones, as the simulated groups
/// are): it followed its queue out and back, its placement held its strategy, and its tasks
/// were placed in time.
pub fn group_checks(o: &Outcome, spec: &super::Spec) -> Vec<Check> {
    let mut out = Vec::new();
    for (g, w) in spec.groups.iter().enumerate() {
        let running = |r: &Row| r.groups.get(g).map_or(0, |x| x.running);
        let peak = o.rows.iter().map(running).max().unwrap_or(0);
        let last = o.rows.last().map_or(0, running);
        out.push(Check {
            passed: peak > last && last > 0,
            what: format!(
                "group {}: followed its queue, out to {peak} tasks and back to {last}",
                w.name
            ),
        });
        let drift = spread_drift(&o.rows, g);
        out.push(Check {
            passed: drift <= 1,
            what: format!(
                "group {}: placed as its strategy says (spread over zones within one task wherever room was), off for at most {drift} minute(s) in a row",
                w.name
            ),
        });
        let short = longest_short(&o.groups, &w.name);
        out.push(Check {
            passed: short <= TimeDelta::minutes(3),
            what: format!(
                "group {}: every task it decided was placed within {} s",
                w.name,
                short.num_seconds()
            ),
        });
        let queue = o
            .rows
            .last()
            .and_then(|r| r.groups.get(g))
            .map_or(0.0, |x| x.queue);
        out.push(Check {
            passed: queue <= 60.0 * w.jobs_per_task_s,
            what: format!(
                "group {}: its queue worked off, {queue:.0} jobs waiting at the end",
                w.name
            ),
        });
    }
    out
}

#[cfg(test)]
mod clip_tests {
    use super::*;

    #[test]
    fn a_line_cut_at_the_top_of_its_chart_says_so_with_its_worst_value() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let quiet = [(120.0, t), (300.0, t)];
        assert_eq!(clipped_label("p95".into(), quiet.into_iter(), 1000.0), "p95");
        let spike = [(120.0, t), (3412.4, t + TimeDelta::minutes(3))];
        assert_eq!(
            clipped_label("p95".into(), spike.into_iter(), 1000.0),
            "p95 (drawn up to 1000 ms; worst 3412 ms at 22:16)"
        );
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;

    /// Minutes of (desired, running) from `t0`, a minute a row.
    fn rows(t0: DateTime<Utc>, counts: &[(u32, u32)]) -> Vec<Row> {
        let row = |(i, (desired, running)): (usize, &(u32, u32))| Row {
            t: t0 + TimeDelta::minutes(i as i64),
            rps: 360.0,
            requests: 21_600.0,
            errors_per_s: 0.0,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            cpu: None,
            desired: *desired,
            running: *running,
            pending: desired.saturating_sub(*running),
            provisioning: 0,
            instances: 4,
            booting: 0,
            draining: 0,
            group_desired: 4,
            cpu_reservation: None,
            task_seconds: 0.0,
            groups: Vec::new(),
        };
        counts.iter().enumerate().map(row).collect()
    }

    fn scale_out(at: DateTime<Utc>, from: u32, to: u32) -> ActionRow {
        ActionRow {
            at,
            target: "production/web".into(),
            from,
            to,
            rule: Some("cpu".into()),
            reason: "cpu 86 > target 67".into(),
        }
    }

    fn started(at: DateTime<Utc>) -> Event {
        Event {
            at,
            kind: "task_started",
            text: String::new(),
        }
    }

    #[test]
    fn a_scale_out_while_the_loss_is_in_the_data_fails_and_one_after_it_is_the_loads() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let kill = t0 + TimeDelta::minutes(2);
        let m = |k: i64, s: i64| t0 + TimeDelta::minutes(k) + TimeDelta::seconds(s);
        let events = [started(m(2, 50))];
        // Replaced within the kill's minute: the window ends two rows later.
        let whole = [
            (14, 14),
            (14, 14),
            (14, 14),
            (14, 14),
            (16, 14),
            (16, 16),
            (16, 16),
        ];
        let late = scale_out(m(4, 35), 14, 16);
        let [no_out, replaced] = fault_checks(&rows(t0, &whole), &events, &[&late], kill, "killed instance");
        assert!(no_out.passed, "{}", no_out.what);
        assert!(no_out.what.contains("at most 14 until"), "{}", no_out.what);
        assert!(replaced.passed, "{}", replaced.what);
        // The same scale-out while the replacements still start is the loss's.
        let starting = [
            (14, 14),
            (14, 14),
            (14, 10),
            (16, 12),
            (16, 16),
            (16, 16),
            (16, 16),
        ];
        let early = scale_out(m(3, 10), 14, 16);
        let [no_out, _] = fault_checks(&rows(t0, &starting), &events, &[&early], kill, "killed instance");
        assert!(!no_out.passed);
        assert!(
            no_out.what.contains("14 → 16 at") && no_out.what.contains("by cpu 86"),
            "{}",
            no_out.what
        );
        // Never replaced: five minutes are the loss's, and nothing counts as replaced.
        let never = [
            (14, 14),
            (14, 14),
            (14, 10),
            (14, 10),
            (14, 10),
            (14, 10),
            (18, 10),
            (18, 10),
        ];
        let [no_out, replaced] = fault_checks(&rows(t0, &never), &[], &[], kill, "killed instance");
        assert!(!no_out.passed && !replaced.passed, "{}", no_out.what);
    }
}
