//! XY charts: curves of points joined by lines (a cost/SLO frontier: task-hours across, SLO
//! minutes up), with single points marked and labelled. Same look, fonts and PNG path as the
//! time-series charts.

use std::fmt::Write as _;

use super::{esc, fmt_tick, nice_ticks};

/// One curve: its points in drawing order, joined by a line unless `dashed` is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
    /// Joined by a dashed line (a policy's variants), else a plain one.
    pub dashed: bool,
}

/// A single point, drawn larger and labelled (the shipped policy, the oracle).
#[derive(Debug, Clone, PartialEq)]
pub struct Spot {
    pub label: String,
    pub at: (f64, f64),
    pub color: &'static str,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct XyChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub curves: Vec<Curve>,
    pub spots: Vec<Spot>,
}

use super::WIDTH;
const PANEL: f64 = 460.0;
const ML: f64 = 70.0;
const MR: f64 = 200.0;
const MT: f64 = 40.0;
const MB: f64 = 60.0;

/// Draws `charts` stacked into one SVG document.
pub fn svg(charts: &[XyChart]) -> String {
    super::document(PANEL * charts.len().max(1) as f64, |s| {
        for (i, c) in charts.iter().enumerate() {
            panel(s, c, i as f64 * PANEL);
        }
    })
}

/// The range of `values` with a margin, `None` when there are none.
fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    Some((lo - pad, hi + pad))
}

fn panel(s: &mut String, c: &XyChart, y0: f64) {
    let (top, bottom, left) = (y0 + MT, y0 + PANEL - MB, ML);
    let _ = write!(
        s,
        r#"<text x="{left}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y0 + 22.0,
        esc(&c.title)
    );
    let Some(f) = XyFrame::of(c, y0) else {
        let _ = write!(
            s,
            r##"<text x="{left}" y="{}" fill="#666">no data</text>"##,
            (top + bottom) / 2.0
        );
        return;
    };
    axes(s, c, &f);
    curves(s, c, &f);
    spots(s, c, &f);
    legend(s, c, &f);
}

/// A panel's plotting area: its edges and both axes' ticks (the first and last are the range).
struct XyFrame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x_ticks: Vec<f64>,
    y_ticks: Vec<f64>,
}

impl XyFrame {
    /// The frame of the panel at `y0` (the y axis from 0), or `None` with nothing to draw.
    fn of(c: &XyChart, y0: f64) -> Option<XyFrame> {
        let xs = c
            .curves
            .iter()
            .flat_map(|k| k.points.iter().map(|p| p.0))
            .chain(c.spots.iter().map(|p| p.at.0));
        let ys = c
            .curves
            .iter()
            .flat_map(|k| k.points.iter().map(|p| p.1))
            .chain(c.spots.iter().map(|p| p.at.1));
        let ((x_lo, x_hi), (y_lo, y_hi)) = (range(xs)?, range(ys.chain([0.0]))?);
        Some(XyFrame {
            left: ML,
            right: WIDTH - MR,
            top: y0 + MT,
            bottom: y0 + PANEL - MB,
            x_ticks: nice_ticks(x_lo, x_hi, 6),
            y_ticks: nice_ticks(y_lo.max(0.0), y_hi, 5),
        })
    }

    fn x(&self, v: f64) -> f64 {
        let (lo, hi) = (self.x_ticks[0], *self.x_ticks.last().unwrap_or(&self.x_ticks[0]));
        self.left + (v - lo) / (hi - lo).max(1e-9) * (self.right - self.left)
    }

    fn y(&self, v: f64) -> f64 {
        let (lo, hi) = (self.y_ticks[0], *self.y_ticks.last().unwrap_or(&self.y_ticks[0]));
        self.bottom - (v - lo) / (hi - lo).max(1e-9) * (self.bottom - self.top)
    }
}

/// The frame, the grid, both axes' ticks and their labels.
fn axes(s: &mut String, c: &XyChart, f: &XyFrame) {
    let (left, right, top, bottom) = (f.left, f.right, f.top, f.bottom);
    let (x_ticks, y_ticks) = (&f.x_ticks, &f.y_ticks);
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        right - left,
        bottom - top
    );
    for v in y_ticks {
        let yy = f.y(*v);
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{right}" y2="{yy:.1}" stroke="#e5e5e5"/>"##
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            yy + 4.0,
            fmt_tick(*v)
        );
    }
    for v in x_ticks {
        let xx = f.x(*v);
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{bottom}" stroke="#f0f0f0"/>"##
        );
        let _ = write!(
            s,
            r#"<text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 18.0,
            fmt_tick(*v)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        bottom + 40.0,
        esc(&c.x_label)
    );
    let _ = write!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"#,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0,
        esc(&c.y_label)
    );
}

/// Each curve: a line through its points, and a dot on each.
fn curves(s: &mut String, c: &XyChart, f: &XyFrame) {
    for k in &c.curves {
        let d: Vec<String> = k
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{}{:.1} {:.1}",
                    if i == 0 { "M" } else { " L" },
                    f.x(p.0),
                    f.y(p.1)
                )
            })
            .collect();
        let dash = if k.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.6"{dash}/>"#,
            d.join(""),
            k.color
        );
        for p in &k.points {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                f.x(p.0),
                f.y(p.1),
                k.color
            );
        }
    }
}

/// Each spot: a large dot, labelled.
fn spots(s: &mut String, c: &XyChart, f: &XyFrame) {
    for p in &c.spots {
        let (xx, yy) = (f.x(p.at.0), f.y(p.at.1));
        let _ = write!(
            s,
            r##"<circle cx="{xx:.1}" cy="{yy:.1}" r="7" fill="{}" stroke="#222" stroke-width="1.5"/>"##,
            p.color
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            xx + 10.0,
            yy - 8.0,
            esc(&p.label)
        );
    }
}

/// The legend, right of the panel.
fn legend(s: &mut String, c: &XyChart, f: &XyFrame) {
    let right = f.right;
    let mut ly = f.top + 10.0;
    for (label, color, dashed) in c
        .curves
        .iter()
        .map(|k| (&k.label, k.color, k.dashed))
        .chain(c.spots.iter().map(|p| (&p.label, p.color, false)))
    {
        let dash = if dashed { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{ly:.1}" x2="{}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/>"#,
            right + 12.0,
            right + 36.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}">{}</text>"#,
            right + 42.0,
            ly + 4.0,
            esc(label)
        );
        ly += 18.0;
    }
}

/// Writes charts to `path`, as SVG or PNG by its extension.
pub fn write(path: &std::path::Path, charts: &[XyChart]) -> Result<(), String> {
    super::write_document(path, svg(charts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_and_spots_are_drawn_inside_the_frame_with_their_labels() {
        let chart = XyChart {
            title: "nasa".into(),
            x_label: "task-hours".into(),
            y_label: "SLO minutes".into(),
            curves: vec![Curve {
                label: "aws-hires".into(),
                points: vec![(100.0, 400.0), (150.0, 100.0), (200.0, 20.0)],
                color: super::super::COLORS[0],
                dashed: false,
            }],
            spots: vec![Spot {
                label: "ecscale <web>".into(),
                at: (130.0, 30.0),
                color: super::super::COLORS[1],
            }],
        };
        let doc = svg(&[chart]);
        assert!(
            doc.contains("aws-hires") && doc.contains("ecscale &lt;web&gt;"),
            "{doc}"
        );
        let path = doc.split(r#"<path d=""#).nth(1).unwrap();
        let coords: Vec<f64> = path
            .split('"')
            .next()
            .unwrap()
            .split(['M', 'L', ' '])
            .filter_map(|v| v.parse().ok())
            .collect();
        assert_eq!(coords.len(), 6, "{path}");
        for pair in coords.chunks(2) {
            assert!((ML..=WIDTH - MR).contains(&pair[0]), "{pair:?}");
            assert!((MT..=PANEL - MB).contains(&pair[1]), "{pair:?}");
        }
        // fewer SLO minutes is drawn lower: y grows downwards
        assert!(coords[1] < coords[3] && coords[3] < coords[5]);
        assert!(super::super::png(&doc).is_ok());
    }
}
