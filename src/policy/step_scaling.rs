//! `step_scaling`: metric bounds → adjustments, evaluated over N of M datapoints.
//!
//! Two ladders. `scale_out` steps each start `above` a value; `scale_in` steps each start
//! `below` one. The scale-out alarm fires when at least `datapoints` of the last `of` periods
//! are at or above the lowest `above`; the step is then the one the newest such value falls in
//! (the highest `above` it reaches). Likewise for scale-in with values below the highest
//! `below`. An adjustment is a change in count (`change: +2`), an exact count (`exact: 10`), or a
//! percentage of the current count (`percent: 50`, with `min_magnitude`).

use super::fields::read_count;
use super::Policy;
use crate::eval_io::{num, EvalInput, Recommendation};
use crate::format::{push_text, text};
use crate::read::yaml::{Node, Value};
use crate::read::{join, Cx, FromNode, MapReader};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adjustment {
    Change(i64),
    Exact(u32),
    Percent { percent: f64, min_magnitude: u32 },
}

impl Adjustment {
    /// The count after applying this to `current`.
    pub fn apply(&self, current: u32) -> u32 {
        match *self {
            Adjustment::Change(c) => (i64::from(current) + c).clamp(0, i64::from(u32::MAX)) as u32,
            Adjustment::Exact(e) => e,
            Adjustment::Percent {
                percent,
                min_magnitude,
            } => {
                let magnitude = ((f64::from(current) * percent.abs() / 100.0).round() as u32)
                    .max(min_magnitude)
                    .max(1);
                if percent >= 0.0 {
                    current.saturating_add(magnitude)
                } else {
                    current.saturating_sub(magnitude)
                }
            }
        }
    }
}

impl std::fmt::Display for Adjustment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&text! {*self})
    }
}

/// `+2`, `=5`, `+50% (at least 3)`: a change with its sign, always.
impl crate::format::Piece for Adjustment {
    fn put(&self, out: &mut String) {
        use crate::format::Signed;
        match *self {
            Adjustment::Change(c) => push_text! {*out; Signed(c)},
            Adjustment::Exact(e) => push_text! {*out; "=", e},
            Adjustment::Percent {
                percent,
                min_magnitude,
            } => {
                let sign = if percent >= 0.0 { "+" } else { "" };
                push_text! {*out; sign, num(percent), "% (at least ", min_magnitude, ")"}
            }
        }
    }
}

/// One step: from `bound` (above it for scale-out, below it for scale-in) on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub bound: f64,
    pub adjustment: Adjustment,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepScaling {
    pub metric: std::sync::Arc<str>,
    /// N: how many of the last `of` periods must breach.
    pub datapoints: usize,
    /// M.
    pub of: usize,
    /// By `above`, ascending.
    pub scale_out: Vec<Step>,
    /// By `below`, descending.
    pub scale_in: Vec<Step>,
}

pub(super) const KEYS: &[&str] = &["metric", "datapoints", "of", "scale_out", "scale_in"];

fn read_steps(node: &Node, path: &str, cx: &mut Cx, out: bool) -> Option<Vec<Step>> {
    let Value::Seq(items) = &node.value else {
        cx.error(
            node.span,
            path,
            format!("expected a list of steps, found {}", node.describe()),
        );
        return None;
    };
    let bound_key = if out { "above" } else { "below" };
    let mut steps = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(mut m) = cx.map(item, &p) else {
            ok = false;
            continue;
        };
        let bound = m.req::<f64>(cx, bound_key);
        let (adjustment, fine) = read_adjustment(m, cx, &p, out);
        ok &= fine;
        let Some(adjustment) = adjustment else {
            ok = false;
            continue;
        };
        match bound {
            Some(bound) => {
                if steps.iter().any(|s: &Step| s.bound == bound) {
                    cx.error(
                        item.span,
                        &join(&p, bound_key),
                        format!("another step already starts {bound_key} {}", num(bound)),
                    );
                    ok = false;
                }
                steps.push(Step { bound, adjustment });
            }
            None => ok = false,
        }
    }
    if out {
        steps.sort_by(|a, b| a.bound.total_cmp(&b.bound));
    } else {
        steps.sort_by(|a, b| b.bound.total_cmp(&a.bound));
    }
    ok.then_some(steps)
}

/// A step's adjustment: exactly one of `change`, `exact` and `percent` (with its
/// `min_magnitude`), signed for its direction; `false` after a mistake.
fn read_adjustment(mut m: MapReader<'_>, cx: &mut Cx, p: &str, out: bool) -> (Option<Adjustment>, bool) {
    let mut fine = true;
    let change = m.opt_with(cx, "change", |n, p, cx| {
        let v = f64::from_node(n, p, cx)?;
        let sign_ok = if out { v > 0.0 } else { v < 0.0 };
        if v.fract() != 0.0 || !sign_ok {
            let want = if out {
                "a positive whole number (+2)"
            } else {
                "a negative whole number (-1)"
            };
            cx.error(
                n.span,
                p,
                format!(
                    "a {} step's change must be {want}, found {}",
                    if out { "scale_out" } else { "scale_in" },
                    num(v)
                ),
            );
            return None;
        }
        Some(v as i64)
    });
    let exact = m.opt::<u32>(cx, "exact");
    let percent = m.opt_with(cx, "percent", |n, p, cx| {
        let v = f64::from_node(n, p, cx)?;
        let sign_ok = if out { v > 0.0 } else { v < 0.0 && v > -100.0 };
        if !sign_ok {
            let want = if out {
                "above 0 (50 for +50%)"
            } else {
                "between -100 and 0 (-25 for -25%)"
            };
            cx.error(n.span, p, format!("percent must be {want}, found {}", num(v)));
            return None;
        }
        Some(v)
    });
    let min_magnitude = m.opt::<u32>(cx, "min_magnitude");
    let given = [m.has("change"), m.has("exact"), m.has("percent")]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        cx.error(m.span(), p, "give exactly one of `change`, `exact`, `percent`");
        fine = false;
    }
    if min_magnitude.is_some() && !m.has("percent") {
        cx.error(
            m.span_of("min_magnitude"),
            &join(p, "min_magnitude"),
            "only goes with `percent`",
        );
        fine = false;
    }
    let bound_key = if out { "above" } else { "below" };
    m.finish(cx, &[bound_key, "change", "exact", "percent", "min_magnitude"]);
    let adjustment = match (change, exact, percent) {
        (Some(c), None, None) => Adjustment::Change(c),
        (None, Some(e), None) => Adjustment::Exact(e),
        (None, None, Some(p)) => Adjustment::Percent {
            percent: p,
            min_magnitude: min_magnitude.unwrap_or(1),
        },
        _ => return (None, false),
    };
    (Some(adjustment), fine)
}

impl StepScaling {
    pub(super) fn read(m: &mut MapReader<'_>, cx: &mut Cx) -> Option<Self> {
        let metric = m.req::<String>(cx, "metric");
        let datapoints = m.opt_with(cx, "datapoints", read_count).unwrap_or(1);
        let of = m.opt_with(cx, "of", read_count).unwrap_or(datapoints);
        if of < datapoints {
            cx.error(
                m.span_of("of"),
                &join(m.path(), "of"),
                format!("must be at least `datapoints` ({datapoints})"),
            );
        }
        let scale_out = m
            .opt_with(cx, "scale_out", |n, p, cx| read_steps(n, p, cx, true))
            .unwrap_or_default();
        let scale_in = m
            .opt_with(cx, "scale_in", |n, p, cx| read_steps(n, p, cx, false))
            .unwrap_or_default();
        if !m.has("scale_out") && !m.has("scale_in") {
            cx.error(
                m.span(),
                m.path(),
                "give `scale_out` steps, `scale_in` steps, or both",
            );
        }
        if let (Some(out), Some(inn)) = (scale_out.first(), scale_in.first()) {
            if inn.bound > out.bound {
                cx.error(
                    m.span_of("scale_in"),
                    &join(m.path(), "scale_in"),
                    format!(
                        "the scale-in steps (below {}) overlap the scale-out steps (above {})",
                        num(inn.bound),
                        num(out.bound)
                    ),
                );
            }
        }
        Some(StepScaling {
            metric: metric?.into(),
            datapoints,
            of,
            scale_out,
            scale_in,
        })
    }

    /// The step one side (`out`, else in) fires: enough datapoints of the window past its first
    /// bound, the newest of them past the step's, and a count that moves that way.
    fn fired(&self, w: &[f64], steps: &[Step], current: u32, out: bool) -> Option<Recommendation> {
        let past = |v: f64, bound: f64| if out { v >= bound } else { v < bound };
        let threshold = steps.first()?.bound;
        let breaching = w.iter().filter(|v| past(**v, threshold)).count();
        if breaching < self.datapoints {
            return None;
        }
        let v = w.iter().rev().copied().find(|v| past(*v, threshold))?;
        let step = steps.iter().rev().find(|s| past(v, s.bound))?;
        let want = step.adjustment.apply(current);
        if (out && want <= current) || (!out && want >= current) {
            return None;
        }
        let (metric, bound, m) = (&self.metric, num(step.bound), self.of);
        let sign = if out { " ≥ " } else { " < " };
        Some(Recommendation::Wants {
            count: want,
            reason: text! {
                metric, " ", num(v), sign, bound, " for ", breaching, "/", m, " datapoints: ",
                step.adjustment, " → ", current, " → ", want
            },
            inputs: vec![(self.metric.clone(), v)],
        })
    }
}

impl Policy for StepScaling {
    fn evaluate(&self, input: &EvalInput<'_>) -> Recommendation {
        let current = input.current;
        let Some(w) = input.metric(&self.metric).window(self.of, None) else {
            return Recommendation::Missing {
                metric: self.metric.to_string(),
                reason: format!(
                    "{} has no value for one of its last {} periods",
                    self.metric, self.of
                ),
            };
        };
        let fired = self
            .fired(&w, &self.scale_out, current, true)
            .or_else(|| self.fired(&w, &self.scale_in, current, false));
        if let Some(r) = fired {
            return r;
        }
        let (n, m) = (self.datapoints, self.of);
        let latest = w.last().copied().unwrap_or(f64::NAN);
        Recommendation::Wants {
            count: current,
            reason: text! {
                self.metric, " ", num(latest), ": no step reached for ", n, "/", m, " datapoints"
            },
            inputs: vec![(self.metric.clone(), latest)],
        }
    }

    fn metrics(&self) -> Vec<&str> {
        vec![&self.metric]
    }

    fn margin(&self, inputs: &std::collections::BTreeMap<std::sync::Arc<str>, f64>) -> Option<f64> {
        let v = *inputs.get(&self.metric)?;
        let relative = |gap: f64, bound: f64| gap.max(0.0) / bound.abs().max(1e-9);
        let out = self.scale_out.iter().map(|s| relative(s.bound - v, s.bound));
        let ins = self.scale_in.iter().map(|s| relative(v - s.bound, s.bound));
        out.chain(ins).min_by(f64::total_cmp)
    }

    fn summary(&self) -> String {
        let out: Vec<String> = self
            .scale_out
            .iter()
            .map(|s| format!("≥{} {}", num(s.bound), s.adjustment))
            .collect();
        let inn: Vec<String> = self
            .scale_in
            .iter()
            .map(|s| format!("<{} {}", num(s.bound), s.adjustment))
            .collect();
        format!(
            "step_scaling {} over {} of {} datapoints: out [{}], in [{}]",
            self.metric,
            self.datapoints,
            self.of,
            out.join(", "),
            inn.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Adjustment;

    #[test]
    fn every_adjustment_shows_its_sign_and_applies_it() {
        let cases = [
            (Adjustment::Change(2), 4, "+2", 6),
            (Adjustment::Change(-1), 4, "-1", 3),
            (Adjustment::Exact(5), 4, "=5", 5),
            (
                Adjustment::Percent {
                    percent: 50.0,
                    min_magnitude: 3,
                },
                4,
                "+50% (at least 3)",
                7,
            ),
            (
                Adjustment::Percent {
                    percent: -30.0,
                    min_magnitude: 1,
                },
                10,
                "-30% (at least 1)",
                7,
            ),
        ];
        for (a, current, shown, applied) in cases {
            assert_eq!(a.to_string(), shown);
            assert_eq!(a.apply(current), applied, "{shown} from {current}");
        }
    }
}
