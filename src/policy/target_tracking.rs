//! `target_tracking`: keep a metric near a target value.
//!
//! Scale out when each of the last `scale_out_datapoints` periods is above `target × (1 +
//! tolerance)`, to `ceil(current × mean / target)`. Scale in when each of the last
//! `scale_in_datapoints` is below `target × (1 − tolerance)`, to `ceil(current × highest /
//! target)` (the highest value: the cautious estimate). In between: hold. Periods that started
//! before `last scale-out + warmup` are not used: they average in tasks still starting; while
//! too few remain the rule holds.

use std::time::Duration;

use chrono::TimeDelta;

use super::load::{read_count, read_fraction};
use super::Policy;
use crate::config::read::{Cx, MapReader};
use crate::eval_io::{num, EvalInput, Recommendation};

#[derive(Debug, Clone, PartialEq)]
pub struct TargetTracking {
    /// A collected metric id (`cpu`, `memory`, `request_count_per_target`, ...).
    pub metric: String,
    pub target: f64,
    /// A fraction: 0.1 for 10 %.
    pub tolerance: f64,
    pub scale_out_datapoints: usize,
    pub scale_in_datapoints: usize,
    pub disable_scale_in: bool,
    pub warmup: Duration,
}

pub(super) const KEYS: &[&str] = &[
    "metric",
    "target",
    "tolerance",
    "scale_out_datapoints",
    "scale_in_datapoints",
    "disable_scale_in",
    "warmup",
];

impl TargetTracking {
    pub(super) fn read(m: &mut MapReader<'_>, cx: &mut Cx) -> Option<Self> {
        let metric = m.req::<String>(cx, "metric");
        let target = m.req_with(cx, "target", |n, p, cx| {
            let v = <f64 as crate::config::read::FromNode>::from_node(n, p, cx)?;
            if v > 0.0 {
                Some(v)
            } else {
                cx.error(n.span, p, format!("must be above zero, found {v}"));
                None
            }
        });
        let tolerance = m.opt_with(cx, "tolerance", read_fraction).unwrap_or(0.1);
        let scale_out_datapoints = m.opt_with(cx, "scale_out_datapoints", read_count).unwrap_or(2);
        let scale_in_datapoints = m.opt_with(cx, "scale_in_datapoints", read_count).unwrap_or(5);
        let disable_scale_in = m.or(cx, "disable_scale_in", false);
        let warmup = m.or(cx, "warmup", Duration::from_secs(60));
        Some(TargetTracking {
            metric: metric?,
            target: target?,
            tolerance,
            scale_out_datapoints,
            scale_in_datapoints,
            disable_scale_in,
            warmup,
        })
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

impl Policy for TargetTracking {
    fn evaluate(&self, input: &EvalInput<'_>) -> Recommendation {
        let m = input.metric(&self.metric);
        let current = input.current;
        let not_before = input
            .last_scale_out
            .filter(|_| !self.warmup.is_zero())
            .map(|t| t + TimeDelta::from_std(self.warmup).unwrap_or(TimeDelta::MAX));
        let tol = num(self.tolerance * 100.0);
        let (hi, lo) = (
            self.target * (1.0 + self.tolerance),
            self.target * (1.0 - self.tolerance),
        );
        let hold = |reason: String, inputs: Vec<(String, f64)>| Recommendation::Wants {
            count: current,
            reason,
            inputs,
        };
        let missing = |n: usize| Recommendation::Missing {
            metric: self.metric.clone(),
            reason: format!("{} has no value for one of its last {n} periods", self.metric),
        };
        let warming = |t: chrono::DateTime<chrono::Utc>| {
            hold(
                format!(
                    "{}: waiting for datapoints after the warm-up ({}) of the last scale-out",
                    self.metric,
                    t.format("%H:%M:%S")
                ),
                vec![],
            )
        };

        let Some(out) = m.window(self.scale_out_datapoints, not_before) else {
            return missing(self.scale_out_datapoints);
        };
        if out.len() < self.scale_out_datapoints {
            return warming(not_before.unwrap_or(input.now));
        }
        let latest = out.last().copied().unwrap_or(0.0);
        if !out.is_empty() && out.iter().all(|v| *v > hi) {
            let avg = mean(&out);
            let want = ((f64::from(current) * avg / self.target).ceil() as u32).max(current + 1);
            let n = out.len();
            return Recommendation::Wants {
                count: want,
                reason: format!(
                    "{} {} > target {} (+{tol}%) for {n}/{n} datapoints → {current} → {want}",
                    self.metric,
                    num(avg),
                    num(self.target)
                ),
                inputs: vec![(self.metric.clone(), avg)],
            };
        }

        let Some(inw) = m.window(self.scale_in_datapoints, not_before) else {
            return missing(self.scale_in_datapoints);
        };
        if inw.len() < self.scale_in_datapoints {
            return warming(not_before.unwrap_or(input.now));
        }
        if !inw.is_empty() && inw.iter().all(|v| *v < lo) {
            let peak = inw.iter().copied().fold(f64::MIN, f64::max);
            let want = (f64::from(current) * peak / self.target).ceil() as u32;
            let n = inw.len();
            if self.disable_scale_in {
                return Recommendation::Abstain {
                    reason: format!(
                        "{} ≤ {} < target {} but scale-in is disabled",
                        self.metric,
                        num(peak),
                        num(self.target)
                    ),
                };
            }
            if want < current {
                return Recommendation::Wants {
                    count: want,
                    reason: format!(
                        "{} ≤ {} < target {} (−{tol}%) for {n}/{n} datapoints → {current} → {want}",
                        self.metric,
                        num(peak),
                        num(self.target)
                    ),
                    inputs: vec![(self.metric.clone(), peak)],
                };
            }
        }
        // Outside the band, but not for long enough yet; or inside it.
        let reason = if latest > hi {
            let k = out.iter().filter(|v| **v > hi).count();
            format!(
                "{} {} > target {} (+{tol}%) for {k}/{} datapoints: not yet",
                self.metric,
                num(latest),
                num(self.target),
                out.len()
            )
        } else if latest < lo && !self.disable_scale_in {
            let k = inw.iter().filter(|v| **v < lo).count();
            format!(
                "{} {} < target {} (−{tol}%) for {k}/{} datapoints: not yet",
                self.metric,
                num(latest),
                num(self.target),
                inw.len()
            )
        } else {
            format!(
                "{} {} within target {} ± {tol}%",
                self.metric,
                num(latest),
                num(self.target)
            )
        };
        hold(reason, vec![(self.metric.clone(), latest)])
    }

    fn metrics(&self) -> Vec<&str> {
        vec![&self.metric]
    }

    fn summary(&self) -> String {
        format!(
            "target_tracking {} at {} ± {}% (out after {}, in after {} datapoints{}, warm-up {})",
            self.metric,
            num(self.target),
            num(self.tolerance * 100.0),
            self.scale_out_datapoints,
            self.scale_in_datapoints,
            if self.disable_scale_in {
                ", scale-in disabled"
            } else {
                ""
            },
            humantime::format_duration(self.warmup)
        )
    }

    fn tracks(&self) -> Option<(&str, f64)> {
        Some((&self.metric, self.target))
    }
}
