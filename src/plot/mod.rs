//! Time-series charts as SVG (inline-able in HTML reports), and as PNG by rasterizing that SVG
//! with a bundled font (no system fonts needed).
//!
//! A chart has a time axis, a left and an optional right value axis, lines (plain, dashed, or
//! steps) on either axis, and point markers. Several charts stack into one image.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

pub mod xy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Left,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Dashed,
    /// Holds each value until the next point (counts).
    Step,
    /// A step line drawn dashed, so one under it still shows (desired over running).
    DashedStep,
}

impl Style {
    fn step(self) -> bool {
        matches!(self, Style::Step | Style::DashedStep)
    }

    fn dashed(self) -> bool {
        matches!(self, Style::Dashed | Style::DashedStep)
    }
}

/// Something that happened at one instant (a fault): a vertical line across the panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(DateTime<Utc>, f64)>,
    pub axis: Axis,
    pub style: Style,
    pub color: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub at: DateTime<Utc>,
    pub value: f64,
    pub axis: Axis,
    /// `▲`/`▼`-like shapes: up or down triangles.
    pub up: bool,
    pub color: &'static str,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    pub title: String,
    pub left_label: String,
    pub right_label: String,
    pub lines: Vec<Line>,
    pub markers: Vec<Marker>,
    pub events: Vec<Event>,
}

/// Colours that stay apart for people with common colour blindness.
pub const COLORS: &[&str] = &["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"];

const WIDTH: f64 = 1000.0;
const PANEL: f64 = 380.0;
const ML: f64 = 70.0;
const MR: f64 = 70.0;
const MT: f64 = 40.0;
const MB: f64 = 60.0;

/// `1, 2, 5 × 10^k` steps covering `[lo, hi]` with about `n` ticks.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 1.0, lo + 1.0) };
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let mut out = Vec::new();
    let mut v = start;
    // Up to the first tick at or above `hi`, so the data never touches the frame's edge.
    loop {
        let tick = (v / step).round() * step;
        out.push(tick);
        if tick >= hi - step * 1e-9 || out.len() > 1000 {
            return out;
        }
        v += step;
    }
}

/// Escapes text for HTML and SVG (elements and quoted attributes).
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        crate::format::short_number(v, 2)
    }
}

#[derive(Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    top: f64,
    bottom: f64,
}

impl Scale {
    fn y(&self, v: f64) -> f64 {
        self.bottom - (v - self.lo) / (self.hi - self.lo).max(f64::EPSILON) * (self.bottom - self.top)
    }
}

fn range(values: impl Iterator<Item = f64>, from_zero: bool) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    if from_zero && lo > 0.0 {
        lo = 0.0;
    }
    let ticks = nice_ticks(lo, hi + (hi - lo).abs() * 0.05, 5);
    Some((*ticks.first()?, *ticks.last()?))
}

/// Draws `charts` stacked into one SVG document.
pub fn svg(charts: &[Chart]) -> String {
    document(PANEL * charts.len().max(1) as f64, |s| {
        for (i, c) in charts.iter().enumerate() {
            panel(s, c, i as f64 * PANEL);
        }
    })
}

/// An SVG document `WIDTH` wide and `height` high on white, its panels drawn by `draw`.
fn document(height: f64, draw: impl FnOnce(&mut String)) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    draw(&mut s);
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, c: &Chart, y0: f64) {
    let (top, bottom, left) = (y0 + MT, y0 + PANEL - MB, ML);
    let _ = write!(
        s,
        r#"<text x="{left}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y0 + 22.0,
        esc(&c.title)
    );
    let Some(f) = Frame::of(c, y0) else {
        let _ = write!(
            s,
            r##"<text x="{left}" y="{}" fill="#666">no data</text>"##,
            (top + bottom) / 2.0
        );
        return;
    };
    grid(s, c, &f);
    lines(s, c, &f);
    markers(s, c, &f);
    events(s, c, &f);
    legend(s, c, &f);
}

/// A panel's plotting area: its edges, its time axis and its two value scales.
#[derive(Clone, Copy)]
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    t_lo: DateTime<Utc>,
    /// Seconds from the first time to the last (at least 1).
    span: f64,
    left_scale: Option<Scale>,
    right_scale: Option<Scale>,
}

impl Frame {
    /// The frame of the panel at `y0`, or `None` when the chart has nothing to draw.
    fn of(c: &Chart, y0: f64) -> Option<Frame> {
        let (top, bottom, left, right) = (y0 + MT, y0 + PANEL - MB, ML, WIDTH - MR);
        let times = c
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .chain(c.markers.iter().map(|m| m.at))
            .chain(c.events.iter().map(|e| e.at));
        let (t_lo, t_hi) = (times.clone().min()?, times.max()?);
        let axis_values = |axis: Axis| {
            c.lines
                .iter()
                .filter(move |l| l.axis == axis)
                .flat_map(|l| l.points.iter().map(|p| p.1))
                .chain(c.markers.iter().filter(move |m| m.axis == axis).map(|m| m.value))
        };
        let scale = |axis| range(axis_values(axis), true).map(|(lo, hi)| Scale { lo, hi, top, bottom });
        Some(Frame {
            left,
            right,
            top,
            bottom,
            t_lo,
            span: (t_hi - t_lo).num_seconds().max(1) as f64,
            left_scale: scale(Axis::Left),
            right_scale: scale(Axis::Right),
        })
    }

    fn x(&self, t: DateTime<Utc>) -> f64 {
        self.left + (t - self.t_lo).num_seconds() as f64 / self.span * (self.right - self.left)
    }

    fn scale(&self, axis: Axis) -> Option<&Scale> {
        match axis {
            Axis::Left => self.left_scale.as_ref(),
            Axis::Right => self.right_scale.as_ref(),
        }
    }
}

/// The frame, the grid, both axes' ticks and labels, and the time axis.
fn grid(s: &mut String, c: &Chart, f: &Frame) {
    let Frame {
        left,
        right,
        top,
        bottom,
        ..
    } = *f;
    let (span, t_lo) = (f.span, f.t_lo);
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        right - left,
        bottom - top
    );
    if let Some(sc) = &f.left_scale {
        for v in nice_ticks(sc.lo, sc.hi, 5) {
            let y = sc.y(v);
            let _ = write!(
                s,
                r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e5e5e5"/>"##
            );
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 6.0,
                y + 4.0,
                fmt_tick(v)
            );
        }
    }
    if let Some(sc) = &f.right_scale {
        for v in nice_ticks(sc.lo, sc.hi, 5) {
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}">{}</text>"#,
                right + 6.0,
                sc.y(v) + 4.0,
                fmt_tick(v)
            );
        }
    }
    let fmt = if span > 2.0 * 86_400.0 {
        "%m-%d %H:%M"
    } else {
        "%H:%M"
    };
    for k in 0..=6 {
        let t = t_lo + chrono::TimeDelta::seconds((span * k as f64 / 6.0) as i64);
        let xx = f.x(t);
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" y1="{bottom}" x2="{xx:.1}" y2="{}" stroke="#999"/>"##,
            bottom + 4.0
        );
        let _ = write!(
            s,
            r#"<text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 18.0,
            t.format(fmt)
        );
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#444">time (UTC)</text>"##,
        (left + right) / 2.0,
        bottom + 36.0
    );
    let mid = (top + bottom) / 2.0;
    let _ = write!(
        s,
        r##"<text x="18" y="{mid}" text-anchor="middle" transform="rotate(-90 18 {mid})" fill="#444">{}</text>"##,
        esc(&c.left_label)
    );
    if f.right_scale.is_some() {
        let rx = WIDTH - 14.0;
        let _ = write!(
            s,
            r##"<text x="{rx}" y="{mid}" text-anchor="middle" transform="rotate(90 {rx} {mid})" fill="#444">{}</text>"##,
            esc(&c.right_label)
        );
    }
}

/// Each line, as a path (steps for counts, dashed for forecasts).
fn lines(s: &mut String, c: &Chart, f: &Frame) {
    let right = f.right;
    for l in &c.lines {
        let Some(sc) = f.scale(l.axis) else {
            continue;
        };
        let mut d = String::new();
        let mut prev_y: Option<f64> = None;
        for (t, v) in l.points.iter().filter(|p| p.1.is_finite()) {
            let (xx, yy) = (f.x(*t), sc.y(*v));
            match (l.style, prev_y) {
                (_, None) => {
                    let _ = write!(d, "M{xx:.1},{yy:.1}");
                }
                (style, Some(_)) if style.step() => {
                    let _ = write!(d, " H{xx:.1} V{yy:.1}");
                }
                (_, Some(_)) => {
                    let _ = write!(d, " L{xx:.1},{yy:.1}");
                }
            }
            prev_y = Some(yy);
        }
        if l.style.step() && prev_y.is_some() {
            let _ = write!(d, " H{right:.1}");
        }
        let dash = if l.style.dashed() {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let width = if l.style.step() { 2.5 } else { 1.8 };
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="{width}"{dash}/>"#,
            l.color
        );
    }
}

/// Each marker: a triangle up (scale-out) or down (scale-in) at its value.
fn markers(s: &mut String, c: &Chart, f: &Frame) {
    for m in &c.markers {
        let Some(sc) = f.scale(m.axis) else {
            continue;
        };
        let (xx, yy) = (f.x(m.at), sc.y(m.value));
        let pts = if m.up {
            format!(
                "{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                xx,
                yy - 9.0,
                xx - 6.0,
                yy + 2.0,
                xx + 6.0,
                yy + 2.0
            )
        } else {
            format!(
                "{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                xx,
                yy + 9.0,
                xx - 6.0,
                yy - 2.0,
                xx + 6.0,
                yy - 2.0
            )
        };
        let _ = write!(s, r#"<polygon points="{pts}" fill="{}"/>"#, m.color);
    }
}

/// Events: a dashed vertical line, labelled near its foot (staggered: close ones apart).
fn events(s: &mut String, c: &Chart, f: &Frame) {
    let (top, bottom) = (f.top, f.bottom);
    for (k, e) in c.events.iter().enumerate() {
        let xx = f.x(e.at);
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{bottom}" stroke="#444" stroke-width="1.2" stroke-dasharray="3 3"/>"##
        );
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#444">{}</text>"##,
            xx + 3.0,
            bottom - 6.0 - 14.0 * (k % 3) as f64,
            esc(&e.label)
        );
    }
}

/// The legend along the top of the panel: each line's stroke and label.
fn legend(s: &mut String, c: &Chart, f: &Frame) {
    let top = f.top;
    let mut lx = f.left + 8.0;
    for l in &c.lines {
        let ly = top + 16.0;
        let dash = if l.style.dashed() {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2.5"{dash}/>"#,
            lx + 22.0,
            l.color
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 27.0,
            ly + 4.0,
            esc(&l.label)
        );
        lx += 40.0 + 7.0 * l.label.chars().count() as f64;
    }
}

/// Rasterizes an SVG document to PNG, with DejaVu Sans (bundled) for the text.
pub fn png(svg: &str) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options {
        font_family: "DejaVu Sans".into(),
        ..usvg::Options::default()
    };
    opt.fontdb_mut().load_font_data(dejavu::sans::regular().to_vec());
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| format!("the chart is not valid SVG: {e}"))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).ok_or("the chart has no size")?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .encode_png()
        .map_err(|e| format!("PNG encoding failed: {e}"))
}

/// Writes charts to `path`, as SVG or PNG by its extension.
pub fn write(path: &std::path::Path, charts: &[Chart]) -> Result<(), String> {
    write_document(path, svg(charts))
}

/// Writes an SVG document to `path`, as SVG or PNG by its extension.
fn write_document(path: &std::path::Path, doc: String) -> Result<(), String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bytes = match ext.as_str() {
        "svg" => doc.into_bytes(),
        "png" => png(&doc)?,
        _ => return Err(format!("{}: write .svg or .png", path.display())),
    };
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_ticks(0.0, 97.0, 5), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(2.0, 9.0, 5), [2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_ticks(0.0, 6.3, 5), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(nice_ticks(5.0, 5.0, 5), [4.0, 4.5, 5.0, 5.5, 6.0]);
    }

    #[test]
    fn events_are_drawn_across_the_panel_and_a_dashed_step_stays_a_step() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let at = |m: i64| t0 + chrono::TimeDelta::minutes(m);
        let chart = Chart {
            title: "Tasks".into(),
            lines: vec![Line {
                label: "desired".into(),
                points: vec![(at(0), 2.0), (at(5), 4.0), (at(10), 4.0)],
                axis: Axis::Left,
                style: Style::DashedStep,
                color: COLORS[0],
            }],
            events: vec![Event {
                at: at(5),
                label: "killed task t-3".into(),
            }],
            ..Default::default()
        };
        let svg = svg(&[chart]);
        assert!(svg.contains("killed task t-3"), "{svg}");
        assert_eq!(
            svg.matches(r#"stroke-dasharray="3 3""#).count(),
            1,
            "one event line"
        );
        let path = svg.split("<path ").nth(1).unwrap();
        assert!(
            path.contains(" H") && path.contains(" V"),
            "drawn as steps: {path}"
        );
        assert!(path.contains(r#"stroke-dasharray="6 4""#), "and dashed: {path}");
    }
}
