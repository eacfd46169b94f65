//! The results of a run: the JSON summary, and a self-contained HTML report whose plots (rate,
//! latency percentiles, errors, and the watched service's tasks) share one time axis.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::check::{Metric, TaskPoint, Threshold, Verdict};
use super::plan::Phase;
use super::stats::{Acc, Latency};
use super::WindowState;
use crate::plot::{self, esc, Axis, Chart, Line, Style, COLORS};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub plan: String,
    pub started_at: DateTime<Utc>,
    pub planned_duration_s: f64,
    /// How long the load actually ran.
    pub duration_s: f64,
    pub verdict: String,
    pub exit_code: u8,
    pub interrupted: bool,
    /// Why a threshold stopped the run early.
    pub aborted: Option<String>,
    pub http: String,
    pub connections: usize,
    /// TCP connections made (reconnections included).
    pub connects: u64,
    /// TLS, when a target is https://.
    pub tls: Option<TlsReport>,
    pub targets: Vec<String>,
    pub totals: Totals,
    pub phases: Vec<PhaseReport>,
    pub thresholds: Vec<ThresholdResult>,
    pub assertions: Vec<AssertionResult>,
    /// Failed looks at the watched service.
    pub watch_errors: u64,
    pub shipping_error: Option<String>,
    /// One entry per second of the run.
    pub seconds: Vec<Second>,
    /// The watched service's task counts over time (seconds from the start).
    pub tasks: Vec<TaskPoint>,
    /// A distributed run's agents (empty for one process).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentReport>,
    /// The TLS figures in a form that adds up (what an agent sends its coordinator).
    #[serde(skip)]
    pub tls_tally: Option<TlsTally>,
}

/// One agent of a distributed run, as the coordinator saw it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentReport {
    pub name: String,
    /// Where it ran (`local pid 1234`, an ECS task ARN).
    pub at: String,
    /// Its share of the plan: segment `index` of `count`.
    pub segment: String,
    pub requests: u64,
    pub errors: u64,
    /// Its requests per second of the load.
    pub rate: f64,
    /// The coordinator's clock minus the agent's (ms), measured when it joined, and that
    /// exchange's round trip.
    pub clock_offset_ms: Option<f64>,
    pub round_trip_ms: Option<f64>,
    /// `finished`, or what became of it (`never joined`, `stopped reporting at 7 s: ...`).
    pub status: String,
}

/// What TLS did in a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TlsReport {
    /// `TLS 1.3`, as the first handshake negotiated.
    pub version: Option<String>,
    pub cipher: Option<String>,
    pub alpn: Option<String>,
    /// Server certificates were not checked (`--insecure`).
    pub insecure: bool,
    pub handshakes: u64,
    /// Of those, the ones that resumed a session (abbreviated handshakes).
    pub resumed: u64,
    pub handshake_ms_p50: Option<f64>,
    pub handshake_ms_p99: Option<f64>,
    pub new_connections_per_s: f64,
}

impl TlsReport {
    /// `TLS 1.3 TLS13_AES_128_GCM_SHA256 (ALPN h2), 50 handshakes (49 resumed) p50 1.20ms p99 3.10ms, 1.0 new connections/s`.
    pub fn line(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}ms"));
        format!(
            "{} {}{}, {} handshakes ({} resumed) p50 {} p99 {}, {} new connections/s{}",
            self.version.as_deref().unwrap_or("(no handshake)"),
            self.cipher.as_deref().unwrap_or(""),
            self.alpn
                .as_ref()
                .map(|a| format!(" (ALPN {a})"))
                .unwrap_or_default(),
            self.handshakes,
            self.resumed,
            ms(self.handshake_ms_p50),
            ms(self.handshake_ms_p99),
            fmt1(self.new_connections_per_s),
            if self.insecure {
                "; certificates NOT checked (--insecure)"
            } else {
                ""
            }
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    #[serde(flatten)]
    pub summary: super::stats::Summary,
    pub planned: Option<f64>,
    /// Requests answered per second over the run.
    pub rate: f64,
    /// Requests answered over those planned (open phases).
    pub rate_achieved: Option<f64>,
}

impl Totals {
    pub fn new(acc: &Acc, secs: f64, planned: f64) -> Totals {
        let summary = acc.summary();
        Totals {
            rate: summary.requests as f64 / secs.max(1e-3),
            rate_achieved: (planned >= 1.0).then(|| summary.requests as f64 / planned),
            planned: (planned >= 1.0).then_some(planned.round()),
            summary,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    /// open, closed or max.
    pub kind: String,
    pub start_s: f64,
    pub duration_s: f64,
    pub planned: Option<u64>,
    #[serde(flatten)]
    pub summary: super::stats::Summary,
    pub rate: f64,
    pub rate_achieved: Option<f64>,
}

impl PhaseReport {
    pub fn new(p: &Phase, start: Duration, acc: &Acc) -> PhaseReport {
        let summary = acc.summary();
        let secs = p.duration.as_secs_f64();
        let planned = p.schedule().map(|s| s.total());
        PhaseReport {
            name: p.name.clone(),
            kind: p.kind().into(),
            start_s: start.as_secs_f64(),
            duration_s: secs,
            planned,
            rate: summary.requests as f64 / secs,
            rate_achieved: planned
                .filter(|n| *n > 0)
                .map(|n| summary.requests as f64 / n as f64),
            summary,
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds from the start.
    pub t: u64,
    /// How much of the second the run lasted (the last one may be short).
    pub span_s: f64,
    pub phase: String,
    pub rate_planned: f64,
    /// Requests answered (or failed) per second.
    pub rate: f64,
    pub requests: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub status_codes: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    pub service_time_ms: Latency,
    pub desired: Option<u32>,
    pub running: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThresholdResult {
    /// The phase it is scoped to; none: the whole run.
    pub phase: Option<String>,
    pub check: String,
    pub window_s: Option<u64>,
    pub abort: bool,
    pub passed: bool,
    /// The measured value (the worst window's, with a window); none when it does not apply.
    pub value: Option<f64>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssertionResult {
    pub assertion: String,
    pub verdict: Verdict,
}

/// A measured value as the threshold writes it (`312.4ms`, `0.42%`, `1480/s`).
pub fn show(t: &Threshold, v: f64) -> String {
    match t.metric {
        Metric::Latency { .. } | Metric::MeanLatency { .. } => format!("{v:.1}ms"),
        Metric::ErrorRate | Metric::RateAchieved => format!("{:.2}%", v * 100.0),
        Metric::ErrorCount => format!("{v:.0}"),
        Metric::Rate => format!("{v:.1}/s"),
    }
}

/// A threshold over a whole scope.
pub fn whole(
    t: &Threshold,
    phase: Option<&str>,
    acc: &Acc,
    secs: f64,
    planned: Option<f64>,
) -> ThresholdResult {
    let value = t.measure(acc, secs, planned);
    let (passed, detail) = match value {
        Some(v) if t.holds(v) => (true, format!("{} (needs {})", show(t, v), t.check)),
        Some(v) => (false, format!("{} breaks {}", show(t, v), t.check)),
        None if t.metric == Metric::RateAchieved => (true, "not applicable: no planned rate".into()),
        None => (true, "not applicable: no requests".into()),
    };
    ThresholdResult {
        phase: phase.map(str::to_string),
        check: t.check.clone(),
        window_s: None,
        abort: t.abort,
        passed,
        value,
        detail,
    }
}

pub(super) fn windowed(t: &Threshold, phase: Option<&str>, w: Duration, st: &WindowState) -> ThresholdResult {
    let passed = st.failed == 0;
    let detail = match st.worst {
        None => "not applicable: the scope never held a full window".to_string(),
        Some((v, at)) => format!(
            "{} of {} windows of {} s failed; worst {} in the window ending at {} s",
            st.failed,
            st.windows,
            w.as_secs(),
            show(t, v),
            at + 1
        ),
    };
    ThresholdResult {
        phase: phase.map(str::to_string),
        check: t.check.clone(),
        window_s: Some(w.as_secs()),
        abort: t.abort,
        passed,
        value: st.worst.map(|(v, _)| v),
        detail,
    }
}

pub fn verdict(r: &Report) -> String {
    let failed_t = r.thresholds.iter().filter(|t| !t.passed).count();
    let failed_a = r
        .assertions
        .iter()
        .filter(|a| !matches!(a.verdict, Verdict::Passed { .. }))
        .count();
    let mut parts = Vec::new();
    if r.interrupted {
        parts.push("interrupted".to_string());
    }
    if let Some(a) = &r.aborted {
        parts.push(format!("aborted: {a}"));
    }
    if failed_t > 0 {
        parts.push(format!("{failed_t} of {} thresholds failed", r.thresholds.len()));
    }
    if failed_a > 0 {
        parts.push(format!(
            "{failed_a} of {} scaling assertions failed",
            r.assertions.len()
        ));
    }
    if !parts.is_empty() {
        return parts.join("; ");
    }
    if !r.thresholds.is_empty() || !r.assertions.is_empty() {
        return "passed".into();
    }
    // Nothing was asked of the run: say so rather than call a run of failures a pass.
    let t = &r.totals.summary;
    if t.requests > 0 && t.errors == t.requests {
        "nothing to judge (no thresholds or assertions set), and every request failed".into()
    } else if t.requests > 0 && redirects(&t.status_codes) == t.requests {
        "nothing to judge (no thresholds or assertions set), and every answer was a redirect (3xx), not followed".into()
    } else {
        "done: no thresholds or assertions set".into()
    }
}

/// The answers with a 3xx status.
fn redirects(codes: &BTreeMap<String, u64>) -> u64 {
    codes
        .iter()
        .filter(|(c, _)| c.starts_with('3'))
        .map(|(_, n)| n)
        .sum()
}

/// The status codes when some are not 2xx, and a note when redirects are many: stress does not
/// follow them, so what they lead to was not loaded.
fn status_lines(s: &mut String, t: &super::stats::Summary) {
    if t.status_codes.keys().all(|c| c.starts_with('2')) {
        return;
    }
    let codes: Vec<String> = t.status_codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let _ = writeln!(s, "  status codes {}", codes.join(", "));
    let answered: u64 = t.status_codes.values().sum();
    let moved = redirects(&t.status_codes);
    if moved > 0 && moved * 2 >= answered {
        let _ = writeln!(
            s,
            "  note: {moved} of {answered} answers were redirects (3xx), which stress does not follow: what they point to was not loaded (point --url there; `curl -sI URL` shows where)"
        );
    }
}

/// The open phases' planned requests that were never sent, and why (a run stopped early says
/// so in its verdict instead).
fn unsent_line(s: &mut String, r: &Report) {
    if r.interrupted || r.aborted.is_some() {
        return;
    }
    let (planned, unsent) = r
        .phases
        .iter()
        .filter_map(|p| p.planned.map(|n| (n, n.saturating_sub(p.summary.requests))))
        .fold((0, 0), |(a, b), (n, u)| (a + n, b + u));
    if unsent > 0 && !r.agents.is_empty() {
        let _ = writeln!(
            s,
            "  not sent: {unsent} of {planned} planned requests (an agent lost or behind: see the agents below)"
        );
    } else if unsent > 0 {
        let _ = writeln!(
            s,
            "  not sent: {unsent} of {planned} planned requests, still waiting for a free connection when their phase ended (the target answered too slowly for {} connection{} per origin, or the generator fell behind: raise --connections, or lower the rate)",
            r.connections,
            if r.connections == 1 { "" } else { "s" }
        );
    }
}

/// The text summary printed at the end of a run.
pub fn text(r: &Report) -> String {
    let mut s = String::new();
    let t = &r.totals;
    totals_lines(&mut s, r);
    for c in &t.summary.error_causes {
        let _ = writeln!(s, "    {} {}: {}", c.kind, c.count, c.cause);
    }
    unsent_line(&mut s, r);
    status_lines(&mut s, &t.summary);
    if let Some(tls) = &r.tls {
        let _ = writeln!(s, "  tls {}", tls.line());
    }
    latency_lines(&mut s, &t.summary);
    phase_lines(&mut s, r);
    check_lines(&mut s, r);
    agent_lines(&mut s, r);
    s
}

/// The verdict, the requests and their rate against the plan, and the errors by kind.
fn totals_lines(s: &mut String, r: &Report) {
    let t = &r.totals;
    let _ = writeln!(
        s,
        "stress {}: {} ({} s of {} s planned)",
        r.run_id,
        r.verdict,
        fmt1(r.duration_s),
        fmt1(r.planned_duration_s)
    );
    let _ = writeln!(
        s,
        "  requests {} ({}/s{}), errors {} ({:.2}%){}",
        t.summary.requests,
        fmt1(t.rate),
        t.rate_achieved
            .map(|a| format!(", {:.2}% of plan", a * 100.0))
            .unwrap_or_default(),
        t.summary.errors,
        if t.summary.requests > 0 {
            100.0 * t.summary.errors as f64 / t.summary.requests as f64
        } else {
            0.0
        },
        if t.summary.errors_by_kind.is_empty() {
            String::new()
        } else {
            format!(
                " [{}]",
                t.summary
                    .errors_by_kind
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
}

/// Latency from the scheduled send (what a user waited) and from the actual send.
fn latency_lines(s: &mut String, summary: &super::stats::Summary) {
    let l = &summary.latency_ms;
    let sv = &summary.service_time_ms;
    let _ = writeln!(
        s,
        "  latency from scheduled send  p50 {:.2}ms  p90 {:.2}ms  p95 {:.2}ms  p99 {:.2}ms  p99.9 {:.2}ms  max {:.2}ms",
        l.p50, l.p90, l.p95, l.p99, l.p99_9, l.max
    );
    let _ = writeln!(
        s,
        "  latency from actual send     p50 {:.2}ms  p90 {:.2}ms  p95 {:.2}ms  p99 {:.2}ms  p99.9 {:.2}ms  max {:.2}ms",
        sv.p50, sv.p90, sv.p95, sv.p99, sv.p99_9, sv.max
    );
}

fn phase_lines(s: &mut String, r: &Report) {
    for p in &r.phases {
        let _ = writeln!(
            s,
            "  phase {} ({}, {} s): {} requests, {}/s{}, p99 {:.2}ms, errors {}",
            p.name,
            p.kind,
            fmt1(p.duration_s),
            p.summary.requests,
            fmt1(p.rate),
            p.rate_achieved
                .map(|a| format!(" ({:.2}% of plan)", a * 100.0))
                .unwrap_or_default(),
            p.summary.latency_ms.p99,
            p.summary.errors
        );
    }
}

/// Each threshold and each scaling assertion, passed or failed.
fn check_lines(s: &mut String, r: &Report) {
    for th in &r.thresholds {
        let _ = writeln!(
            s,
            "  {} threshold {}{}{}: {}",
            if th.passed { "PASS" } else { "FAIL" },
            th.check,
            th.window_s
                .map(|w| format!(" over {w} s windows"))
                .unwrap_or_default(),
            th.phase
                .as_ref()
                .map(|p| format!(" in phase {p}"))
                .unwrap_or_default(),
            th.detail
        );
    }
    for a in &r.assertions {
        let (tag, detail) = match &a.verdict {
            Verdict::Passed { detail, .. } => ("PASS", detail.as_str()),
            Verdict::Failed { detail } => ("FAIL", detail.as_str()),
            Verdict::Undecided => ("FAIL", "undecided when the run ended"),
        };
        let _ = writeln!(s, "  {tag} assertion {}: {detail}", a.assertion);
    }
}

/// Each agent's segment, counts and clock.
fn agent_lines(s: &mut String, r: &Report) {
    if !r.agents.is_empty() {
        let _ = writeln!(
            s,
            "  {} agents (their per-second histograms added, never averaged):",
            r.agents.len()
        );
    }
    for a in &r.agents {
        let clock = match (a.clock_offset_ms, a.round_trip_ms) {
            (Some(o), Some(rtt)) => format!("clock offset {o:+.2} ms (round trip {rtt:.2} ms)"),
            _ => "clock offset unknown".into(),
        };
        let _ = writeln!(
            s,
            "    {:<10} {:<22} segment {:<6} {:>9} requests ({:>8}/s) {:>6} errors  {clock}  {}",
            a.name,
            a.at,
            a.segment,
            a.requests,
            fmt1(a.rate),
            a.errors,
            a.status
        );
    }
}

fn fmt1(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The charts of a report, on one time axis.
pub fn charts(r: &Report) -> Vec<Chart> {
    let at = |t: f64| r.started_at + chrono::TimeDelta::milliseconds((t * 1000.0) as i64);
    let series = |f: &dyn Fn(&Second) -> Option<f64>| -> Vec<(DateTime<Utc>, f64)> {
        r.seconds
            .iter()
            .filter_map(|s| f(s).map(|v| (at(s.t as f64), v)))
            .collect()
    };
    let line = |label: &str, points, axis, style, color| Line {
        label: label.into(),
        points,
        axis,
        style,
        color,
    };
    let mut rate = Chart {
        title: "Request rate".into(),
        left_label: "requests/s".into(),
        ..Default::default()
    };
    if r.seconds.iter().any(|s| s.rate_planned > 0.0) {
        rate.lines.push(line(
            "planned",
            series(&|s| Some(s.rate_planned)),
            Axis::Left,
            Style::Dashed,
            COLORS[1],
        ));
    }
    rate.lines.push(line(
        "achieved",
        series(&|s| Some(s.rate)),
        Axis::Left,
        Style::Line,
        COLORS[0],
    ));
    let with = |s: &Second| s.requests > 0;
    let latency = Chart {
        title: "Latency (from the scheduled send time; dashed: from the actual send)".into(),
        left_label: "ms".into(),
        lines: vec![
            line(
                "p50",
                series(&|s| with(s).then_some(s.latency_ms.p50)),
                Axis::Left,
                Style::Line,
                COLORS[2],
            ),
            line(
                "p95",
                series(&|s| with(s).then_some(s.latency_ms.p95)),
                Axis::Left,
                Style::Line,
                COLORS[4],
            ),
            line(
                "p99",
                series(&|s| with(s).then_some(s.latency_ms.p99)),
                Axis::Left,
                Style::Line,
                COLORS[1],
            ),
            line(
                "p99 from send",
                series(&|s| with(s).then_some(s.service_time_ms.p99)),
                Axis::Left,
                Style::Dashed,
                COLORS[3],
            ),
        ],
        ..Default::default()
    };
    let errors = Chart {
        title: "Errors".into(),
        left_label: "errors/s".into(),
        lines: vec![line(
            "errors",
            series(&|s| Some(s.errors as f64 / s.span_s.max(1e-3))),
            Axis::Left,
            Style::Line,
            COLORS[1],
        )],
        ..Default::default()
    };
    let mut charts = vec![rate, latency, errors];
    if !r.tasks.is_empty() {
        let pts = |f: &dyn Fn(&TaskPoint) -> u32| -> Vec<(DateTime<Utc>, f64)> {
            r.tasks.iter().map(|p| (at(p.t), f(p) as f64)).collect()
        };
        charts.push(Chart {
            title: "Tasks of the watched service".into(),
            left_label: "tasks".into(),
            lines: vec![
                line("desired", pts(&|p| p.desired), Axis::Left, Style::Step, COLORS[0]),
                line("running", pts(&|p| p.running), Axis::Left, Style::Step, COLORS[2]),
            ],
            ..Default::default()
        });
    }
    charts
}

/// The HTML report: self-contained (inline SVG, no script, no network).
pub fn html(r: &Report) -> String {
    let mut h = String::new();
    html_head(&mut h, r);
    html_totals(&mut h, r);
    h.push_str("<h2>Over time</h2>\n");
    h.push_str(&plot::svg(&charts(r)));
    html_phases(&mut h, r);
    html_checks(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

/// The page's head and style, the verdict, the run's settings and its TLS.
fn html_head(h: &mut String, r: &Report) {
    let ok = r.exit_code == 0;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ecscale stress · {}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0 20px}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} th{{background:#f3f3f3}} td.l,th.l{{text-align:left}}\
.pass{{color:#007a3d;font-weight:600}} .fail{{color:#b00020;font-weight:600}} .verdict{{font-size:1.3em}}\
</style></head><body>\n<h1>ecscale stress · {}</h1>\n",
        esc(&r.plan),
        esc(&r.plan)
    );
    let _ = writeln!(
        h,
        "<p class=\"verdict {}\">{} (exit code {})</p>",
        if ok { "pass" } else { "fail" },
        esc(&r.verdict),
        r.exit_code
    );
    let _ = writeln!(
        h,
        "<p>Run <code>{}</code>, started {}, {:.1} s of {:.1} s planned; HTTP/{} with {} connections ({} made); targets: {}</p>",
        esc(&r.run_id),
        r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        r.duration_s,
        r.planned_duration_s,
        r.http,
        r.connections,
        r.connects,
        esc(&r.targets.join(", "))
    );
    if let Some(tls) = &r.tls {
        let _ = writeln!(
            h,
            "<p class=\"{}\">TLS: {}</p>",
            if tls.insecure { "verdict fail" } else { "tls" },
            esc(&tls.line())
        );
    }
}

/// The totals (latency from the scheduled and the actual send) and why requests failed.
fn html_totals(h: &mut String, r: &Report) {
    let t = &r.totals;
    let l = &t.summary.latency_ms;
    let sv = &t.summary.service_time_ms;
    let _ = writeln!(
        h,
        "<table><tr><th class=\"l\">requests</th><th>rate</th><th>of plan</th><th>errors</th>\
<th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>\
<tr><td class=\"l\">{} </td><td>{:.1}/s</td><td>{}</td><td>{}</td><td>{:.2} ms</td><td>{:.2} ms</td><td>{:.2} ms</td><td>{:.2} ms</td><td>{:.2} ms</td><td>{:.2} ms</td></tr>\
<tr><td class=\"l\">from actual send</td><td></td><td></td><td></td><td>{:.2} ms</td><td>{:.2} ms</td><td>{:.2} ms</td><td>{:.2} ms</td><td>{:.2} ms</td><td>{:.2} ms</td></tr></table>",
        t.summary.requests,
        t.rate,
        t.rate_achieved.map(|a| format!("{:.2}%", a * 100.0)).unwrap_or_else(|| "–".into()),
        t.summary.errors,
        l.p50, l.p90, l.p95, l.p99, l.p99_9, l.max,
        sv.p50, sv.p90, sv.p95, sv.p99, sv.p99_9, sv.max
    );
    if !t.summary.error_causes.is_empty() {
        h.push_str("<h2>Why requests failed</h2>\n<table><tr><th class=\"l\">kind</th><th>requests</th><th class=\"l\">cause</th></tr>\n");
        for c in &t.summary.error_causes {
            let _ = writeln!(
                h,
                "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                c.kind,
                c.count,
                esc(&c.cause)
            );
        }
        h.push_str("</table>\n");
    }
}

fn html_phases(h: &mut String, r: &Report) {
    h.push_str("\n<h2>Phases</h2>\n<table><tr><th class=\"l\">phase</th><th class=\"l\">model</th><th>start</th><th>duration</th><th>planned</th><th>requests</th><th>rate</th><th>of plan</th><th>p50</th><th>p99</th><th>errors</th></tr>\n");
    for p in &r.phases {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{:.0} s</td><td>{:.0} s</td><td>{}</td><td>{}</td><td>{:.1}/s</td><td>{}</td><td>{:.2} ms</td><td>{:.2} ms</td><td>{}</td></tr>",
            esc(&p.name),
            p.kind,
            p.start_s,
            p.duration_s,
            p.planned.map(|n| n.to_string()).unwrap_or_else(|| "–".into()),
            p.summary.requests,
            p.rate,
            p.rate_achieved.map(|a| format!("{:.2}%", a * 100.0)).unwrap_or_else(|| "–".into()),
            p.summary.latency_ms.p50,
            p.summary.latency_ms.p99,
            p.summary.errors
        );
    }
    h.push_str("</table>\n");
}

/// The thresholds and the scaling assertions, each passed or failed.
fn html_checks(h: &mut String, r: &Report) {
    if !r.thresholds.is_empty() {
        h.push_str("<h2>Thresholds</h2>\n<table><tr><th class=\"l\">result</th><th class=\"l\">check</th><th class=\"l\">scope</th><th class=\"l\">detail</th></tr>\n");
        for th in &r.thresholds {
            let _ = writeln!(
                h,
                "<tr><td class=\"l {}\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}{}</td><td class=\"l\">{}</td></tr>",
                if th.passed { "pass" } else { "fail" },
                if th.passed { "pass" } else { "FAIL" },
                esc(&th.check),
                esc(th.phase.as_deref().unwrap_or("whole run")),
                th.window_s.map(|w| format!(", {w} s windows")).unwrap_or_default(),
                esc(&th.detail)
            );
        }
        h.push_str("</table>\n");
    }
    if !r.assertions.is_empty() {
        h.push_str("<h2>Scaling assertions</h2>\n<table><tr><th class=\"l\">result</th><th class=\"l\">assertion</th><th class=\"l\">detail</th></tr>\n");
        for a in &r.assertions {
            let (pass, detail) = match &a.verdict {
                Verdict::Passed { detail, .. } => (true, detail.clone()),
                Verdict::Failed { detail } => (false, detail.clone()),
                Verdict::Undecided => (false, "undecided when the run ended".into()),
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"l {}\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                if pass { "pass" } else { "fail" },
                if pass { "pass" } else { "FAIL" },
                esc(&a.assertion),
                esc(&detail)
            );
        }
        h.push_str("</table>\n");
    }
}

/// What the handshake settled on, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: String,
    pub cipher: String,
    pub alpn: Option<String>,
    /// An abbreviated handshake: a session the client kept from an earlier one (resumption is
    /// on: one client config, and its session cache, for every connection of a run).
    pub resumed: bool,
}

/// What a run's TLS connections did, in a form that adds up over agents: the handshake times
/// (µs, an HDR histogram, added exactly), the resumed ones, and what the first negotiated.
#[derive(Debug, Clone)]
pub struct TlsTally {
    pub negotiated: Option<Negotiated>,
    pub handshakes: hdrhistogram::Histogram<u64>,
    pub resumed: u64,
}

impl TlsTally {
    /// Adds another process's tally to this one.
    pub fn add(&mut self, other: &TlsTally) -> Result<(), String> {
        self.handshakes
            .add(&other.handshakes)
            .map_err(|e| format!("adding handshake histograms: {e:?}"))?;
        self.resumed += other.resumed;
        if self.negotiated.is_none() {
            self.negotiated = other.negotiated.clone();
        }
        Ok(())
    }

    /// The report's TLS lines, given the run's TCP connections and length.
    pub fn report(&self, insecure: bool, connects: u64, duration_s: f64) -> TlsReport {
        let h = &self.handshakes;
        let ms = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
        let n = self.negotiated.as_ref();
        TlsReport {
            version: n.map(|n| n.version.clone()),
            cipher: n.map(|n| n.cipher.clone()),
            alpn: n.and_then(|n| n.alpn.clone()),
            insecure,
            handshakes: h.len(),
            resumed: self.resumed,
            handshake_ms_p50: ms(0.5),
            handshake_ms_p99: ms(0.99),
            new_connections_per_s: connects as f64 / duration_s.max(1e-3),
        }
    }
}
