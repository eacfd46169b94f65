//! `target_tracking`: keep a metric near a target value.
//!
//! Scale out when each of the last `scale_out_datapoints` periods is above `target × (1 +
//! tolerance)`, to `ceil(load × mean / target)`. Scale in when each of the last
//! `scale_in_datapoints` is below `target × (1 − tolerance)`, to `ceil(load × highest /
//! target)` (the highest value: the cautious estimate). In between: hold. Periods that started
//! before `last scale-out + warmup` are not used; while too few remain the rule holds.
//!
//! `load` is what the value was measured over. For a per-task metric (CPU, memory, requests per
//! target) it is the tasks running in each period (from the counts the engine recorded), so
//! the rule sizes the count for the demand itself: a task killed, or tasks still starting after a
//! scale-out, inflate the per-task value but not the demand, and cause no second scale-out. For
//! other metrics it is the current count.

use std::time::Duration;

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};

use super::fields::{read_count, read_fraction};
use super::Policy;
use crate::eval_io::{num, EvalInput, Instant, MetricView, Recommendation};
use crate::format::{push_text, text, Piece};
use crate::read::{Cx, MapReader};

#[derive(Debug, Clone, PartialEq)]
pub struct TargetTracking {
    /// A collected metric id (`cpu`, `memory`, `request_count_per_target`, ...).
    pub metric: std::sync::Arc<str>,
    pub target: f64,
    /// A fraction: 0.1 for 10 %.
    pub tolerance: f64,
    pub scale_out_datapoints: usize,
    pub scale_in_datapoints: usize,
    pub disable_scale_in: bool,
    pub warmup: Duration,
    /// A value at or above this is capped by the resource (CPU reads at most 100 %): the load
    /// may be any amount higher, so the rule asks for twice the tasks that carried it.
    pub saturation: Option<f64>,
    /// A value at or above this needs no confirmation (the SLO's edge: users already wait, and
    /// a second datapoint would cost them another minute): one datapoint scales out, sized on
    /// its own demand. Below it, `scale_out_datapoints` confirm a rise that may be noise.
    pub urgent: Option<f64>,
    /// How long new tasks take to serve (start time plus a tick, plus boot where instances must
    /// launch): a rising load is projected this far ahead by its recent trend, and the rule
    /// scales out when the count in force would be above its band by then.
    pub lead: Option<Duration>,
    /// Scale in only to a count that also carries the rise the demand showed within this long
    /// in the recent datapoints (their median plus [`NOISE_Z`] robust deviations, over every
    /// pair of periods this far apart), less what the target's own room absorbs: a noisy load
    /// keeps the room its next noisy minutes need, a quiet one gives nothing up. The pairs
    /// that span one jump (a step, a herd, a cron's burst) are too few to set it.
    pub noise_guard: Option<Duration>,
    /// The share of the demand the target's room absorbs (a rise this large is met by the
    /// scale-out rules in time): a fraction, 0.15 by default.
    pub noise_absorbed: f64,
    /// With [`TargetTracking::noise_guard`]: also keep room for the largest rise that came back
    /// in each of the last four spans this long (bursts that recur: a crawler, a busy hour's
    /// spikes), however few pairs span each. One burst, a step or a herd falls in one span and
    /// sets nothing; bursts that leave a span out set nothing either. The rule then reads four
    /// spans of datapoints ([`Policy::window`]).
    pub burst_recurrence: Option<Duration>,
    /// The target while a counted predictive rule of the same target forecasts from a learned
    /// day ([`EvalInput::foreseen`]): the recurring rises are then met ahead by the forecast's
    /// floor, so this rule keeps only the room for what the forecast misses.
    pub foreseen_target: Option<f64>,
}

/// How many robust standard deviations of the recent rises [`TargetTracking::noise_guard`]
/// covers: 2.5 is normal noise's 99.4th percentile.
const NOISE_Z: f64 = 2.5;

/// The spans [`TargetTracking::burst_recurrence`] looks back over: a rise must have come back in
/// each of them to set the room (in three of four, occasional bursts of 1.5 to 3.5 times the
/// load cost more than the SLO minutes they save).
const BURST_SPANS: u32 = 4;

/// How many horizons' worth of pairs [`TargetTracking::noise_guard`] needs before it trusts
/// its estimate of the noise (fewer: a few quiet pairs by chance would let a noisy load go).
const MIN_GUARD_HORIZONS: usize = 5;

/// A trend is projected only when the line explains this much of the variation (a jump or
/// noise is not a trend), and it still rises over the last third of its window at half its
/// slope or more...
const STEADY_TREND_R2: f64 = 0.6;
/// ...and by at most this share of the last value (a projection is a nudge, not a forecast).
const MAX_PROJECTED_RISE: f64 = 0.25;

pub(super) const KEYS: &[&str] = &[
    "metric",
    "target",
    "tolerance",
    "scale_out_datapoints",
    "scale_in_datapoints",
    "disable_scale_in",
    "warmup",
    "saturation",
    "urgent",
    "lead",
    "noise_guard",
    "noise_absorbed",
    "burst_recurrence",
    "foreseen_target",
];

impl TargetTracking {
    pub(super) fn read(m: &mut MapReader<'_>, cx: &mut Cx) -> Option<Self> {
        let metric = m.req::<String>(cx, "metric");
        let target = m.req_with(cx, "target", |n, p, cx| {
            let v = <f64 as crate::read::FromNode>::from_node(n, p, cx)?;
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
        let saturation = m.opt_with(cx, "saturation", |n, p, cx| {
            let v = <f64 as crate::read::FromNode>::from_node(n, p, cx)?;
            let t = target.unwrap_or(0.0);
            if v > t {
                Some(v)
            } else {
                cx.error(n.span, p, format!("must be above the target {t}, found {v}"));
                None
            }
        });
        let urgent = m.opt_with(cx, "urgent", |n, p, cx| {
            let v = <f64 as crate::read::FromNode>::from_node(n, p, cx)?;
            let (t, cap) = (target.unwrap_or(0.0), saturation.unwrap_or(f64::INFINITY));
            if v > t && v <= cap {
                Some(v)
            } else {
                cx.error(
                    n.span,
                    p,
                    format!("must be above the target {t} and at most the saturation, found {v}"),
                );
                None
            }
        });
        let lead = m.opt::<Duration>(cx, "lead").filter(|d| !d.is_zero());
        let noise_guard = m.opt::<Duration>(cx, "noise_guard").filter(|d| !d.is_zero());
        let noise_absorbed = m.opt_with(cx, "noise_absorbed", read_fraction).unwrap_or(0.15);
        let burst_recurrence = m.opt_with(cx, "burst_recurrence", |n, p, cx| {
            let d = <Duration as crate::read::FromNode>::from_node(n, p, cx)?;
            match noise_guard {
                Some(h) if d > h => Some(d),
                Some(h) => {
                    let h = humantime::format_duration(h);
                    cx.error(n.span, p, format!("must be longer than the noise_guard's {h}"));
                    None
                }
                None => {
                    cx.error(
                        n.span,
                        p,
                        String::from("needs a noise_guard (the horizon of the rises it keeps room for)"),
                    );
                    None
                }
            }
        });
        let foreseen_target = m.opt_with(cx, "foreseen_target", |n, p, cx| {
            let v = <f64 as crate::read::FromNode>::from_node(n, p, cx)?;
            let (t, cap) = (target.unwrap_or(0.0), saturation.unwrap_or(f64::INFINITY));
            if v >= t && v < cap {
                Some(v)
            } else {
                cx.error(
                    n.span,
                    p,
                    format!("must be at least the target {t} and below the saturation, found {v}"),
                );
                None
            }
        });
        Some(TargetTracking {
            metric: metric?.into(),
            target: target?,
            tolerance,
            scale_out_datapoints,
            scale_in_datapoints,
            disable_scale_in,
            warmup,
            saturation,
            urgent,
            lead,
            noise_guard,
            noise_absorbed,
            burst_recurrence,
            foreseen_target,
        })
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

type Slots = Vec<(DateTime<Utc>, f64)>;

/// The room a noise guard keeps, and whether recurring bursts set it.
struct Rise {
    room: f64,
    burst: bool,
}

/// Normal noise's high quantile of the rises, robustly: the median and the median absolute
/// deviation, so the few pairs that span one jump (a step, a herd, a cron's burst) set nothing;
/// the quantile lies [`NOISE_Z`] scaled deviations above the median.
fn robust_high(mut rises: Vec<f64>) -> f64 {
    // The element a sort would put in the middle, selected in linear time.
    let median = |v: &mut Vec<f64>| {
        let mid = v.len() / 2;
        *v.select_nth_unstable_by(mid, f64::total_cmp).1
    };
    let mid = median(&mut rises);
    let mut dev: Vec<f64> = rises.iter().map(|x| (x - mid).abs()).collect();
    mid + NOISE_Z * 1.4826 * median(&mut dev)
}

/// The largest rise that came back in each of the last [`BURST_SPANS`] spans of `span` before
/// `now` (the smallest of the spans' largest rises); `None` while a span has no pair yet.
fn recurring_rise(rises: &[(Instant, f64)], now: DateTime<Utc>, span: Duration) -> Option<f64> {
    let span = TimeDelta::from_std(span).ok()?.num_seconds().max(1);
    let now = Instant::of(now);
    let mut top = [f64::NEG_INFINITY; BURST_SPANS as usize];
    for (t, v) in rises {
        let k = now.secs_since(*t).div_euclid(span);
        if let Some(slot) = usize::try_from(k).ok().and_then(|k| top.get_mut(k)) {
            *slot = slot.max(*v);
        }
    }
    let least = top.into_iter().fold(f64::INFINITY, f64::min);
    least.is_finite().then_some(least)
}

/// The rule's view of its metric this tick.
struct Reading<'a, 'i> {
    input: &'a EvalInput<'i>,
    view: MetricView<'a>,
    /// Datapoints from before this are not used (warm-up).
    not_before: Option<DateTime<Utc>>,
    period: i64,
    /// The target in force: `target`, or `foreseen_target` while a forecast is in force.
    target: f64,
    /// How reasons show it.
    shown: Shown,
    hi: f64,
    lo: f64,
    tol: crate::format::Short,
}

/// The target in force as reasons show it, written where it is shown: every target's rule
/// writes it every tick.
#[derive(Clone, Copy)]
struct Shown {
    target: f64,
    foreseen: bool,
}

impl Piece for Shown {
    fn put(&self, out: &mut String) {
        num(self.target).put(out);
        if self.foreseen {
            out.push_str(" (a day's forecast in force)");
        }
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&text! {*self})
    }
}

impl Reading<'_, '_> {
    /// The load each value was measured over: for a per-task metric the tasks running in its
    /// period (a task that died, or one still starting, carried none of it), else the count.
    fn demand(&self, slots: &[(DateTime<Utc>, f64)]) -> Vec<f64> {
        self.demands(slots).collect()
    }

    /// [`Reading::demand`], one value at a time.
    fn demands<'s>(&'s self, slots: &'s [(DateTime<Utc>, f64)]) -> impl Iterator<Item = f64> + 's {
        let mut cursor = 0;
        slots.iter().map(move |(start, v)| {
            // A per-task datapoint was measured over tasks that ran: a recorded count under
            // one task means the looks missed them (a count that lags), so the count in
            // force is the better estimate.
            let served = self
                .view
                .per_task()
                .then(|| self.input.served_from(&mut cursor, *start, self.period))
                .filter(|served| *served >= 0.5);
            v * served.unwrap_or(f64::from(self.input.current))
        })
    }

    /// " over 10.5 running" when the per-task values were carried by another count.
    fn over(&self, slots: &[(DateTime<Utc>, f64)], demand: &[f64]) -> String {
        let tasks = demand
            .iter()
            .zip(slots)
            .map(|(d, (_, v))| d / v.max(f64::MIN_POSITIVE));
        let mean_tasks = tasks.sum::<f64>() / demand.len().max(1) as f64;
        if self.view.per_task() && (mean_tasks - f64::from(self.input.current)).abs() > 0.05 {
            format!(" over {} running", num(mean_tasks))
        } else {
            String::new()
        }
    }
}

/// A rising demand projected `lead` ahead.
struct Projection {
    demand: f64,
    per_minute: f64,
}

impl TargetTracking {
    fn hold(&self, current: u32, reason: String, value: Option<f64>) -> Recommendation {
        Recommendation::Wants {
            count: current,
            reason,
            inputs: value.map(|v| (self.metric.clone(), v)).into_iter().collect(),
        }
    }

    /// The last `n` datapoints after the warm-up, or what to answer when they are not there.
    fn slots(&self, r: &Reading<'_, '_>, n: usize) -> Result<Slots, Recommendation> {
        let Some(slots) = r.view.slots(n, r.not_before) else {
            return Err(Recommendation::Missing {
                metric: self.metric.to_string(),
                reason: format!("{} has no value for one of its last {n} periods", self.metric),
            });
        };
        if slots.len() < n {
            let since = crate::format::clock(r.not_before.unwrap_or(r.input.now));
            return Err(self.hold(
                r.input.current,
                text! {
                    self.metric, ": waiting for datapoints after the warm-up (", since,
                    ") of the last scale-out"
                },
                None,
            ));
        }
        Ok(slots)
    }

    /// The demand `lead` ahead by the trend of the datapoints covering twice the lead (at
    /// least 9), when it rises steadily and the newest datapoint is at the target or above
    /// (scale-in never rests on a projection). A window that
    /// reaches back past the last scale-in projects nothing: while tasks stop, the per-task
    /// values rise by the change of count itself, and the trend would undo the scale-in.
    fn projection(&self, r: &Reading<'_, '_>) -> Option<Projection> {
        let lead = self.lead?;
        let n = ((2.0 * lead.as_secs_f64() / r.period as f64).ceil() as usize)
            .max(self.scale_out_datapoints)
            .max(9);
        let slots = r.view.slots(n, r.not_before)?;
        let first = slots.first()?.0;
        if r.input.last_scale_in.is_some_and(|t| first < t) {
            return None;
        }
        let demand = r.demand(&slots);
        let now = Instant::of(r.input.now);
        let x = |t: DateTime<Utc>| Instant::of(t).millis_since(now) as f64 / 1000.0 + r.period as f64 / 2.0;
        let points: Vec<(f64, f64)> = slots.iter().zip(&demand).map(|((t, _), d)| (x(*t), *d)).collect();
        let line = crate::lsq::Line::through(&points)?;
        let (a, slope, r2) = (line.a, line.b, line.r2()?);
        let last = *demand.last()?;
        // Still rising at the end of the window: a step (flat, jump, flat) fits a line too.
        let k = (points.len() / 3)
            .max((60 / r.period.max(1)) as usize)
            .clamp(1, points.len() - 1);
        let (x0, y0) = points[points.len() - 1 - k];
        let (x1, y1) = points[points.len() - 1];
        let recent = (y1 - y0) / (x1 - x0).max(f64::MIN_POSITIVE);
        let steady = r2 >= STEADY_TREND_R2 && recent >= 0.5 * slope;
        // Below the target the band's room still absorbs a ramp that stops where it is: the
        // datapoints lag the load, so their trend outlives it by a period or two.
        let above = slots.last()?.1 >= r.target;
        (slope > 0.0 && steady && above).then(|| Projection {
            demand: (a + slope * lead.as_secs_f64()).clamp(last, last * (1.0 + MAX_PROJECTED_RISE)),
            per_minute: slope * 60.0,
        })
    }

    /// Whether the count in force carries a per-task metric's demand within the band.
    fn carried(&self, r: &Reading<'_, '_>, demand: &[f64]) -> bool {
        r.view.per_task() && mean(demand) / f64::from(r.input.current.max(1)) <= r.hi
    }

    fn carried_reason(&self, r: &Reading<'_, '_>, out: &[(DateTime<Utc>, f64)], d: &[f64]) -> String {
        let current = r.input.current;
        format!(
            "{}, but {} per task of the {current} set: within the band",
            self.hot_reason(r, out, d),
            num(mean(d) / f64::from(current.max(1))),
        )
    }

    /// Out when every datapoint is above the band, or when the rising trend will take the
    /// count in force above it within `lead`.
    fn scale_out(&self, r: &Reading<'_, '_>, out: &[(DateTime<Utc>, f64)]) -> Option<Recommendation> {
        let current = r.input.current;
        let values: Vec<f64> = out.iter().map(|(_, v)| *v).collect();
        let latest = values.last().copied().unwrap_or(0.0);
        // A saturated datapoint needs no confirmation: the load is over capacity now.
        let saturated = self.saturation.is_some_and(|s| latest >= s);
        let confirmed = !values.is_empty() && values.iter().all(|v| *v > r.hi);
        let urgent = self.urgent.is_some_and(|u| latest >= u);
        let mut hot = confirmed || saturated || urgent;
        let ahead = self
            .projection(r)
            .filter(|p| p.demand / f64::from(current.max(1)) > r.hi);
        if !hot && ahead.is_none() {
            return None;
        }
        let d = r.demand(out);
        if hot && !saturated && self.carried(r, &d) {
            // Fewer tasks carried the values than the count in force (a task or an instance
            // lost, tasks still starting), and the count in force carries their load within
            // the band: the per-task values are hot because of the count, not the load.
            if ahead.is_none() {
                return Some(self.hold(current, self.carried_reason(r, out, &d), Some(latest)));
            }
            hot = false;
        }
        let (mut need, mut what) = if hot {
            self.hot_need(r, out, &d, !confirmed && urgent && !saturated)
        } else {
            (0, format!("{} {}", self.metric, num(latest)))
        };
        if let Some(p) = &ahead {
            need = need.max(self.ahead_need(r, p, &mut what));
        }
        if saturated {
            need = need.max(self.saturated_need(r, out, &d, &mut what));
        }
        Some(self.out_answer(r, need, what, latest))
    }

    /// The count hot datapoints need, and why: confirmed (or saturated, sized apart), the
    /// periods' mean demand; urgent `at_once`, the newest period's own.
    fn hot_need(
        &self,
        r: &Reading<'_, '_>,
        out: &[(DateTime<Utc>, f64)],
        d: &[f64],
        at_once: bool,
    ) -> (u32, String) {
        let mut what = self.hot_reason(r, out, d);
        let demand = if at_once {
            let latest = out.last().map_or(0.0, |(_, v)| *v);
            let u = num(self.urgent.unwrap_or_default());
            let _ = write!(what, ", the newest {} ≥ {u} (urgent): at once", num(latest));
            d.last().copied().unwrap_or(0.0)
        } else {
            mean(d)
        };
        ((demand / r.target).ceil() as u32, what)
    }

    /// "cpu 80 over 10.5 running > target 67 (+6%) for 2/2 datapoints".
    fn hot_reason(&self, r: &Reading<'_, '_>, out: &[(DateTime<Utc>, f64)], d: &[f64]) -> String {
        let values: Vec<f64> = out.iter().map(|(_, v)| *v).collect();
        let k = values.iter().filter(|v| **v > r.hi).count();
        text! {
            self.metric, " ", num(mean(&values)), r.over(out, d), " > target ", r.shown, " (+",
            r.tol, "%) for ", k, "/", values.len(), " datapoints"
        }
    }

    /// The count the projected demand needs, its reason added to `what`.
    fn ahead_need(&self, r: &Reading<'_, '_>, p: &Projection, what: &mut String) -> u32 {
        let current = r.input.current;
        let per_task = p.demand / f64::from(current.max(1));
        let _ = write!(
            what,
            ", rising {}/min: {} per task of {current} in {} > target {} (+{}%)",
            num(p.per_minute / f64::from(current.max(1))),
            num(per_task),
            humantime::format_duration(self.lead.unwrap_or_default()),
            r.shown,
            r.tol
        );
        (p.demand / r.target).ceil() as u32
    }

    /// The count a saturated newest datapoint needs, its reason added to `what`: the newest
    /// period's tasks ran flat out, so the load may be any amount more; twice the tasks that
    /// carried it. Unless fewer tasks carried it than in the period before: tasks were lost (a
    /// crash, an instance), and the loss explains the saturation; their replacements restore
    /// the capacity, and the demand (what the survivors carried) sizes the rest.
    fn saturated_need(
        &self,
        r: &Reading<'_, '_>,
        out: &[(DateTime<Utc>, f64)],
        d: &[f64],
        what: &mut String,
    ) -> u32 {
        let s = self.saturation.unwrap_or(100.0);
        let n = out.len();
        let carried_by = |k: usize| d[k] / out[k].1.max(f64::MIN_POSITIVE);
        let carried = carried_by(n - 1);
        let lost = (n >= 2 && r.view.per_task())
            .then(|| carried_by(n - 2) - carried)
            .filter(|l| *l >= 0.5);
        if let Some(l) = lost {
            let _ = write!(
                what,
                ", saturated (≥ {}) on {} tasks, {} fewer than the period before: the loss explains it",
                num(s),
                num(carried),
                num(l)
            );
            return 0;
        }
        let _ = write!(
            what,
            ", saturated (≥ {}: twice the tasks that carried it)",
            num(s)
        );
        (2.0 * carried).ceil() as u32
    }

    /// Out to `need` (at least one more for a metric that is not per task), or a hold when the
    /// count in force already carries it.
    fn out_answer(&self, r: &Reading<'_, '_>, need: u32, mut what: String, latest: f64) -> Recommendation {
        let current = r.input.current;
        let want = if r.view.per_task() {
            need
        } else {
            need.max(current + 1)
        };
        if want <= current {
            push_text! {what; ": the ", current, " tasks set already carry that load"};
            return self.hold(current, what, Some(latest));
        }
        push_text! {what; " → ", current, " → ", want};
        Recommendation::Wants {
            count: want,
            reason: what,
            inputs: vec![(self.metric.clone(), latest)],
        }
    }

    /// How much the demand may rise within `horizon` above `from`, by its changes over every
    /// pair of recent periods that far apart (0 when it mostly fell), or by the bursts that
    /// recur ([`TargetTracking::burst_recurrence`]) when they rose more; with less than
    /// [`MIN_GUARD_HORIZONS`] horizons of pairs, all of the highest demand seen.
    fn recent_rise(&self, r: &Reading<'_, '_>, horizon: Duration, from: f64) -> Rise {
        let samples = r.view.history();
        let slots: Slots = samples.iter().map(|s| (s.timestamp, s.value)).collect();
        let demand = r.demand(&slots);
        // Whole periods apart (at least one), so pairs fall on the datapoints' grid.
        let period = r.period.max(1);
        let step = ((horizon.as_secs() as i64 + period / 2) / period).max(1) * period;
        // Each pair's rise, at the start of its later period; the times in integers, as the
        // walk reads each twice.
        let at: Vec<Instant> = slots.iter().map(|(t, _)| Instant::of(*t)).collect();
        let mut rises: Vec<(Instant, f64)> = Vec::with_capacity(slots.len());
        let mut j = 0;
        for (i, t) in at.iter().enumerate() {
            let due = t.plus(step);
            while j < at.len() && at[j] < due {
                j += 1;
            }
            match at.get(j) {
                Some(tj) if *tj == due => rises.push((*tj, demand[j] - demand[i])),
                Some(_) => {}
                None => break,
            }
        }
        // Never more than the highest demand seen: the guard is at most a long stabilization.
        let highest = demand.iter().copied().fold(0.0, f64::max);
        let cap = (highest - from).max(0.0);
        // Too few horizons of history (a worker or a service just started) say nothing of the
        // noise: keep everything seen, as a stabilization over the whole history would.
        let horizons = (step / period).max(1) as usize;
        if rises.len() < MIN_GUARD_HORIZONS * horizons {
            return Rise {
                room: cap,
                burst: false,
            };
        }
        let noise = robust_high(rises.iter().map(|(_, v)| *v).collect());
        let burst = self
            .burst_recurrence
            .and_then(|span| recurring_rise(&rises, r.input.now, span))
            .filter(|b| *b > noise);
        Rise {
            room: burst.unwrap_or(noise).min(cap).max(0.0),
            burst: burst.is_some(),
        }
    }

    /// In when every datapoint is below the band, to the highest demand's count (plus the
    /// recent rise with a noise guard).
    fn scale_in(&self, r: &Reading<'_, '_>, inw: &[(DateTime<Utc>, f64)]) -> Option<Recommendation> {
        let current = r.input.current;
        if inw.is_empty() || !inw.iter().all(|(_, v)| *v < r.lo) {
            return None;
        }
        let peak = inw.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max);
        let peak_demand = r.demands(inw).fold(0.0, f64::max);
        let guard = self.noise_guard.map(|h| self.recent_rise(r, h, peak_demand));
        let rise = guard
            .as_ref()
            .map_or(0.0, |g| (g.room - self.noise_absorbed * peak_demand).max(0.0));
        let want = ((peak_demand + rise) / r.target).ceil() as u32;
        let n = inw.len();
        // Written once, with room for what follows.
        let mut what = String::with_capacity(self.metric.len() + 96);
        push_text! {
            what;
            self.metric, " ≤ ", num(peak), " < target ", r.shown, " (−", r.tol, "%) for ", n, "/",
            n, " datapoints"
        };
        if rise > 0.0 {
            let _ = write!(
                what,
                ", with room for a rise of {} tasks' worth (its noise within {}{})",
                num(rise / r.target),
                humantime::format_duration(self.noise_guard.unwrap_or_default()),
                match (guard.is_some_and(|g| g.burst), self.burst_recurrence) {
                    (true, Some(span)) => format!(
                        ", bursts back in each of the last {BURST_SPANS} {}",
                        humantime::format_duration(span)
                    ),
                    _ => String::new(),
                }
            );
        }
        if want >= current {
            push_text! {what; ": ", current, " kept"};
            return (rise > 0.0).then(|| self.hold(current, what, Some(peak)));
        }
        push_text! {what; " → ", current, " → ", want};
        Some(Recommendation::Wants {
            count: want,
            reason: what,
            inputs: vec![(self.metric.clone(), peak)],
        })
    }

    /// Outside the band, but not for long enough yet; or inside it.
    fn holding(
        &self,
        r: &Reading<'_, '_>,
        out: &[(DateTime<Utc>, f64)],
        inw: &[(DateTime<Utc>, f64)],
    ) -> Recommendation {
        let latest = out.last().map_or(0.0, |(_, v)| *v);
        let count =
            |w: &[(DateTime<Utc>, f64)], f: &dyn Fn(f64) -> bool| w.iter().filter(|(_, v)| f(*v)).count();
        let (metric, target, tol) = (&self.metric, r.shown, r.tol);
        let reason = if latest > r.hi {
            let k = count(out, &|v| v > r.hi);
            text! {
                metric, " ", num(latest), " > target ", target, " (+", tol, "%) for ", k, "/",
                out.len(), " datapoints: not yet"
            }
        } else if latest < r.lo {
            let k = count(inw, &|v| v < r.lo);
            text! {
                metric, " ", num(latest), " < target ", target, " (−", tol, "%) for ", k, "/",
                inw.len(), " datapoints: not yet"
            }
        } else {
            text! {metric, " ", num(latest), " within target ", target, " ± ", tol, "%"}
        };
        self.hold(r.input.current, reason, Some(latest))
    }
}

impl Policy for TargetTracking {
    fn evaluate(&self, input: &EvalInput<'_>) -> Recommendation {
        let not_before = input
            .last_scale_out
            .filter(|_| !self.warmup.is_zero())
            .map(|t| t + TimeDelta::from_std(self.warmup).unwrap_or(TimeDelta::MAX));
        let view = input.metric(&self.metric);
        let (target, foreseen) = match self.foreseen_target.filter(|_| input.foreseen) {
            Some(t) => (t, true),
            None => (self.target, false),
        };
        let r = Reading {
            input,
            view,
            not_before,
            period: view.period_secs().unwrap_or(60),
            target,
            shown: Shown { target, foreseen },
            hi: target * (1.0 + self.tolerance),
            lo: target * (1.0 - self.tolerance),
            tol: num(self.tolerance * 100.0),
        };
        let out = match self.slots(&r, self.scale_out_datapoints) {
            Ok(s) => s,
            Err(answer) => return answer,
        };
        if let Some(answer) = self.scale_out(&r, &out) {
            return answer;
        }
        let latest = out.last().map_or(0.0, |(_, v)| *v);
        if self.disable_scale_in && latest <= r.hi {
            // It only ever asks for more: it neither votes for nor blocks a scale-in.
            return Recommendation::Abstain {
                reason: format!(
                    "{} {} ≤ target {} (+{}%), and its scale-in is disabled",
                    self.metric,
                    num(latest),
                    r.shown,
                    r.tol
                ),
            };
        }
        let inw = match self.slots(&r, self.scale_in_datapoints) {
            Ok(s) => s,
            Err(answer) => return answer,
        };
        self.scale_in(&r, &inw)
            .unwrap_or_else(|| self.holding(&r, &out, &inw))
    }

    fn metrics(&self) -> Vec<&str> {
        vec![&self.metric]
    }

    fn summary(&self) -> String {
        format!(
            "target_tracking {} at {}{} ± {}% (out after {}{}, in after {} datapoints{}, warm-up {})",
            self.metric,
            num(self.target),
            self.foreseen_target
                .map(|t| format!(" ({} while a day's forecast is in force)", num(t)))
                .unwrap_or_default(),
            num(self.tolerance * 100.0),
            self.scale_out_datapoints,
            self.urgent
                .map(|u| format!(" or 1 at {} or more", num(u)))
                .unwrap_or_default(),
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

    fn margin(&self, inputs: &std::collections::BTreeMap<std::sync::Arc<str>, f64>) -> Option<f64> {
        let v = *inputs.get(&self.metric)?;
        let (hi, lo) = (
            self.target * (1.0 + self.tolerance),
            self.target * (1.0 - self.tolerance),
        );
        let gap = if v >= hi || v <= lo {
            0.0
        } else {
            (hi - v).min(v - lo)
        };
        Some(gap / self.target.abs().max(f64::MIN_POSITIVE))
    }

    fn window(&self) -> Option<(&str, Duration)> {
        let span = self.burst_recurrence?;
        // The oldest span's first pairs start before it: it has fewer, which is enough.
        Some((&self.metric, span * BURST_SPANS))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use chrono::{DateTime, TimeDelta, Utc};

    use crate::eval_io::{MetricSet, Observation};
    use crate::evaluate::{decide, TargetState};
    use crate::model::{Action, Decision, Sample};

    fn now() -> DateTime<Utc> {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn policy(rules: &str) -> crate::policy::TargetPolicy {
        let text = format!("target: {{cluster: c, service: s}}\nmin: 1\nmax: 40\ncooldown: {{scale_out: 0s, scale_in: 0s}}\nscale_in_stabilization: 0s\nmax_step: {{out: unlimited, in: unlimited}}\nrules:\n{rules}");
        crate::policy::load_str(&text, "t.yaml", Path::new("."))
            .unwrap()
            .remove(0)
    }

    /// How near a target is to a change, from its decision: the relative distance of the
    /// value read to the nearer edge of the band (target tracking) or to the nearest step
    /// bound; zero when a rule asks for a change; the smallest of the rules'.
    #[test]
    fn a_targets_margin_is_its_nearest_rules_distance_to_a_change() {
        let rules = "  - {name: cpu, kind: target_tracking, metric: cpu, target: 50, tolerance: 0.1}\n  - {name: q, kind: step_scaling, metric: queue, datapoints: 1, of: 1, scale_out: [{above: 100, change: 1}], scale_in: [{below: 10, change: -1}]}\n";
        let p = policy(rules);
        let d = |cpu: f64, queue: f64, recommendation: u32| Decision {
            inputs: BTreeMap::from([("cpu".into(), cpu), ("queue".into(), queue)]),
            recommendation,
            ..decide_on(rules, &[50.0; 15], false, &[], 4, 4)
        };
        // cpu 52 in [45, 55]: 3 of 50 from the top edge, 0.06; queue 60: 40 of 100 from the
        // scale-out bound, 0.4, and 50 of 10 above the scale-in one, 5.
        let m = p.margin(&d(52.0, 60.0, 4)).unwrap();
        assert!((m - 0.06).abs() < 1e-9, "{m}");
        // queue 95: 0.05, nearer than the cpu's.
        let m = p.margin(&d(52.0, 95.0, 4)).unwrap();
        assert!((m - 0.05).abs() < 1e-9, "{m}");
        // At or past a threshold, or a rule asking for a change: zero.
        assert_eq!(p.margin(&d(57.0, 60.0, 4)), Some(0.0));
        assert_eq!(p.margin(&d(50.0, 60.0, 5)), Some(0.0));
        // No value read: no margin.
        let none = Decision {
            inputs: BTreeMap::new(),
            ..d(50.0, 60.0, 4)
        };
        assert_eq!(p.margin(&none), None);
    }

    /// 1-minute values ending with the minute before `now`.
    fn series(values: &[f64]) -> Vec<Sample> {
        let n = values.len() as i64;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Sample {
                timestamp: now() - TimeDelta::minutes(n - i as i64),
                value: *v,
            })
            .collect()
    }

    /// One decision on `cpu` (per task when `per_task`), with the running counts seen before.
    fn decide_on(
        rules: &str,
        cpu: &[f64],
        per_task: bool,
        counts: &[(i64, u32)],
        current: u32,
        running: u32,
    ) -> Decision {
        decide_after(
            rules,
            cpu,
            per_task,
            counts,
            (current, running),
            TargetState::default(),
        )
    }

    /// [`decide_on`] with the target's memory (its last actions) given.
    fn decide_after(
        rules: &str,
        cpu: &[f64],
        per_task: bool,
        counts: &[(i64, u32)],
        (current, running): (u32, u32),
        mut state: TargetState,
    ) -> Decision {
        let p = policy(rules);
        let s = series(cpu);
        let mut set = MetricSet::uniform([("cpu", s.as_slice())], 60, now());
        if per_task {
            set.mark_per_task(&["cpu".to_string()]);
        }
        for (mins_ago, r) in counts {
            state.running.observe(now() - TimeDelta::minutes(*mins_ago), *r);
        }
        let obs = Observation {
            now: now(),
            current,
            running,
            pending: current.saturating_sub(running),
            metrics: &set,
        };
        decide(&p, &obs, &state, &BTreeMap::new())
    }

    const CPU: &str = "  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, warmup: 0s}\n";

    /// 10 tasks at 72 % CPU for `minutes`, with the requests they served (a gentle wave): the
    /// decision of a 67 % CPU rule with `foreseen_target: 74` beside `forecast`.
    fn foreseen_decision(minutes: usize, forecast: &str) -> Decision {
        let rules = format!("  - {{name: cpu, kind: target_tracking, metric: cpu, target: 67, tolerance: 6%, warmup: 0s, foreseen_target: 74}}\n{forecast}");
        let p = policy(&rules);
        let cpu = series(&vec![72.0; minutes]);
        let wave: Vec<f64> = (0..minutes)
            .map(|i| 17_280.0 + 400.0 * (i as f64 / 1440.0 * std::f64::consts::TAU).sin())
            .collect();
        let requests = series(&wave);
        let mut set = MetricSet::uniform(
            [("cpu", cpu.as_slice()), ("request_count", requests.as_slice())],
            60,
            now(),
        );
        set.mark_per_task(&["cpu".to_string()]);
        let obs = Observation {
            now: now(),
            current: 10,
            running: 10,
            pending: 0,
            metrics: &set,
        };
        decide(&p, &obs, &TargetState::default(), &BTreeMap::new())
    }

    #[test]
    fn a_foreseen_target_applies_only_while_a_counted_forecast_has_learned_a_day() {
        let forecast = "  - {name: forecast, kind: predictive, metric: request_count, target_per_task: 2000, horizon: 2m, bucket: 5m, min_history: 1d}\n";
        // A day and more of history: the forecast is in force, 72 % is inside 74 ± 6 %.
        let d = foreseen_decision(1500, forecast);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        let cpu = d.votes.iter().find(|v| &*v.rule == "cpu").unwrap();
        assert!(
            cpu.reason.contains("74 (a day's forecast in force)"),
            "{}",
            cpu.reason
        );
        // An hour of history: no forecast yet, so 72 % is above 67 + 6 %: out, to 720 / 67.
        let d = foreseen_decision(60, forecast);
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 11), "{}", d.reason);
        // A day of history, but the forecast asks for two: the plain target.
        let longer = forecast.replace("min_history: 1d", "min_history: 2d");
        let d = foreseen_decision(1500, &longer);
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 11), "{}", d.reason);
    }

    #[test]
    fn a_foreseen_target_without_a_forecast_rule_is_refused_with_its_place() {
        let text = "target: {cluster: c, service: s}\nmin: 1\nmax: 40\nrules:\n  - {name: cpu, kind: target_tracking, metric: cpu, target: 67, foreseen_target: 74}\n";
        let e = crate::policy::load_str(text, "t.yaml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.yaml:5")
                && e.contains("rules[0].foreseen_target")
                && e.contains("no counted predictive rule"),
            "{e}"
        );
        let recorded = text.replace("rules:\n", "rules:\n  - {name: f, kind: predictive, metric: request_count, target_per_task: 9, forecast_only: true}\n");
        let e = crate::policy::load_str(&recorded, "t.yaml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no counted predictive rule"),
            "a forecast-only rule does not count: {e}"
        );
        let below = text.replace("foreseen_target: 74", "foreseen_target: 60");
        let e = crate::policy::load_str(&below, "t.yaml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be at least the target 67"), "{e}");
    }

    #[test]
    fn a_killed_task_inflates_the_per_task_value_but_not_the_demand() {
        // 10 tasks at 60 %; 3 die two minutes ago: the 7 left run at 60 × 10/7 while ECS
        // replaces the 3 (desired stays 10).
        let cpu = [60.0, 60.0, 60.0, 85.7, 85.7];
        let d = decide_on(CPU, &cpu, true, &[(30, 10), (2, 7)], 10, 7);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        assert!(
            d.reason.contains("over 7 running")
                && d.reason.contains("59.99 per task of the 10 set: within the band"),
            "{}",
            d.reason
        );
        // At the band's edge: 7 at 92 % are 64.4 % over the 10 set, within 54..66 %, where the
        // demand's own count (ceil 10.7) would have added one; 7 at 97 % are 67.9 %, above it.
        for (hot, want) in [(92.0, 10), (97.0, 12)] {
            let d = decide_on(
                CPU,
                &[60.0, 60.0, 60.0, hot, hot],
                true,
                &[(30, 10), (2, 7)],
                10,
                7,
            );
            assert_eq!(d.desired, want, "{}", d.reason);
        }
        // Read over the count in force instead, the same values ask for 15.
        let d = decide_on(CPU, &cpu, false, &[(30, 10), (2, 7)], 10, 7);
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 15), "{}", d.reason);
    }

    #[test]
    fn a_noise_guard_keeps_room_for_a_noisy_load_and_none_for_a_quiet_one_or_one_jump() {
        let guarded = "  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, warmup: 0s, scale_in_datapoints: 3, noise_guard: 2m}\n";
        let at = |cpu: &[f64], rules: &str| {
            let d = decide_on(rules, cpu, true, &[(30, 10)], 10, 10);
            (d.action, d.desired, d.reason)
        };
        // 10 tasks, 15 minutes between 40 % and 50 %, the last three at 40 %: demand 4 tasks'
        // worth now, but it swings by up to one within two minutes.
        let noisy: Vec<f64> = (0..15)
            .map(|i| [48.0, 42.0, 50.0, 40.0, 45.0][i % 5])
            .chain([40.0; 3])
            .collect();
        let (action, plain, _) = at(
            &noisy,
            CPU.replace("warmup: 0s", "warmup: 0s, scale_in_datapoints: 3")
                .as_str(),
        );
        assert_eq!(
            (action, plain),
            (Action::ScaleIn, 7),
            "without the guard: 400 % / 60 %"
        );
        let (action, kept, why) = at(&noisy, guarded);
        assert!(kept > plain && kept < 10, "{action:?} {kept}: {why}");
        assert!(why.contains("room for a rise of"), "{why}");
        // Quiet at the same level: the guard costs nothing.
        let quiet: Vec<f64> = std::iter::repeat_n(41.0, 15).chain([40.0; 3]).collect();
        assert_eq!(at(&quiet, guarded).1, plain, "{}", at(&quiet, guarded).2);
        // One step down after a plateau (a sawtooth's fall): its one jump sets nothing.
        let step: Vec<f64> = std::iter::repeat_n(80.0, 12).chain([40.0; 6]).collect();
        assert_eq!(at(&step, guarded).1, plain, "{}", at(&step, guarded).2);
    }

    #[test]
    fn a_burst_guard_keeps_room_for_bursts_that_recur_and_none_for_fewer() {
        let rules = "  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, warmup: 0s, scale_in_datapoints: 3, noise_guard: 1m, burst_recurrence: 15m}\n";
        // 10 tasks, an hour at 40 % with a one-minute burst to 60 % in the quarter hours given
        // (counted back from now), the last three minutes at 40 %.
        let hour = |quarters: &[i64]| -> Vec<f64> {
            (0..64)
                .map(|i| {
                    let ago = 64 - i;
                    if quarters.iter().any(|q| ago == q * 15 + 7) {
                        60.0
                    } else {
                        40.0
                    }
                })
                .collect()
        };
        let at = |cpu: &[f64]| decide_on(rules, cpu, true, &[(70, 10)], 10, 10);
        // Bursts in every quarter: room for the next one's rise (200 % of a task), less the 15 %
        // of the 400 % the target absorbs: (400 + 140) / 60 → 9, where a plain rule goes to 7.
        let d = at(&hour(&[0, 1, 2, 3]));
        assert_eq!((d.action, d.desired), (Action::ScaleIn, 9), "{}", d.reason);
        assert!(
            d.reason.contains("bursts back in each of the last 4 15m"),
            "{}",
            d.reason
        );
        // In three of the four, two, one (a herd, a step) or none: nothing kept for them.
        for quarters in [&[0, 2, 3][..], &[1, 3], &[2], &[]] {
            let d = at(&hour(quarters));
            assert_eq!(
                (d.action, d.desired),
                (Action::ScaleIn, 7),
                "{quarters:?}: {}",
                d.reason
            );
            assert!(!d.reason.contains("bursts"), "{}", d.reason);
        }
        // Less than four quarter hours seen (a worker just started): the plain noise guard.
        let d = at(&hour(&[0, 1, 2, 3])[20..]);
        assert!(!d.reason.contains("bursts"), "{}", d.reason);
    }

    #[test]
    fn a_burst_guard_needs_a_noise_guard_shorter_than_its_span() {
        let load = |rule: &str| {
            let text = format!("target: {{cluster: c, service: s}}\nmin: 1\nmax: 4\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 60, {rule}}}\n");
            crate::policy::load_str(&text, "t.yaml", Path::new(".")).map(|mut p| p.remove(0))
        };
        let err = load("burst_recurrence: 15m").unwrap_err().to_string();
        assert!(
            err.contains("t.yaml:5:") && err.contains("burst_recurrence: needs a noise_guard"),
            "{err}"
        );
        let err = load("noise_guard: 20m, burst_recurrence: 15m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be longer than the noise_guard's 20m"), "{err}");
        let p = load("noise_guard: 1m, burst_recurrence: 15m").unwrap();
        let rule = p.rules[0].spec.policy();
        assert_eq!(rule.window(), Some(("cpu", std::time::Duration::from_secs(3600))));
    }

    #[test]
    fn a_noise_guard_with_too_little_history_keeps_all_it_has_seen() {
        let guarded = "  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, warmup: 0s, scale_in_datapoints: 3, noise_guard: 2m}\n";
        let at = |cpu: &[f64]| decide_on(guarded, cpu, true, &[(30, 10)], 10, 10);
        // A worker just started: 6 minutes (4 pairs two minutes apart, fewer than 5 horizons'
        // worth) that once reached 55 %, then 40 %: it says nothing of the noise yet, so the
        // count keeps carrying the highest seen, less the 15 % the target's room absorbs
        // (400 % + 150 % − 60 %, over 60 %: 9, where the plain rule goes to 7).
        let short = [55.0, 40.0, 40.0, 40.0, 40.0, 40.0];
        let d = at(&short);
        assert_eq!((d.action, d.desired), (Action::ScaleIn, 9), "{}", d.reason);
        // The same end after 12 quiet minutes: the guard trusts the history and scales in.
        let long: Vec<f64> = std::iter::repeat_n(41.0, 12).chain(short).collect();
        let d = at(&long);
        assert_eq!((d.action, d.desired), (Action::ScaleIn, 7), "{}", d.reason);
    }

    #[test]
    fn a_count_of_no_running_task_under_a_datapoint_is_not_believed() {
        // CPU at 90 % says tasks ran; the looks saw none (a lagging count): the count in force.
        let d = decide_on(CPU, &[90.0, 90.0], true, &[(10, 0)], 2, 0);
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 3), "{}", d.reason);
    }

    #[test]
    fn tasks_still_starting_after_a_scale_out_are_not_counted_twice() {
        // 5 → 10 a minute ago; the new 5 are still starting, the old 5 run at 90 %: demand
        // 450 % of a task is 8 at 60 %, fewer than the 10 already set.
        let d = decide_on(CPU, &[90.0, 90.0], true, &[(10, 5)], 10, 5);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        // Once they run and the load is still 90 % over all 10, it grows again.
        let d = decide_on(CPU, &[90.0, 90.0], true, &[(10, 10)], 10, 10);
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 15), "{}", d.reason);
    }

    #[test]
    fn a_saturation_the_loss_of_tasks_explains_is_not_doubled() {
        let rules =
            "  - {name: cpu, kind: target_tracking, metric: cpu, target: 70, saturation: 95, warmup: 0s}\n";
        // 13 tasks at 65 %; an instance with 4 of them dies half way through the last minute:
        // the 9 left run flat out while their replacements start (11 on average that
        // minute). What they carried asks for 14 at 70 %, not twice the tasks.
        let cpu = [65.0, 65.0, 65.0, 100.0];
        let d = decide_on(rules, &cpu, true, &[(30, 13), (1, 13), (0, 9)], 13, 9);
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 14), "{}", d.reason);
        assert!(
            d.reason
                .contains("on 11 tasks, 2 fewer than the period before: the loss explains it"),
            "{}",
            d.reason
        );
        // The same 100 % on as many tasks as before is load beyond them: twice at once.
        let d = decide_on(rules, &cpu, true, &[(30, 13)], 13, 13);
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 26), "{}", d.reason);
    }

    #[test]
    fn an_urgent_datapoint_scales_out_at_once_on_its_own_demand() {
        let rules = "  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, urgent: 80, saturation: 95, warmup: 0s}\n";
        // 6 tasks at 50 %, then 90 %: past the SLO's edge, no second datapoint; 540 % of a
        // task at 60 % is 9, not the mean of the two periods' (8).
        let d = decide_on(rules, &[50.0, 50.0, 90.0], true, &[(30, 6)], 6, 6);
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 9), "{}", d.reason);
        assert!(
            d.reason.contains("the newest 90 ≥ 80 (urgent): at once"),
            "{}",
            d.reason
        );
        // 75 %: above the band but short of urgent, so a second datapoint must confirm it.
        let d = decide_on(rules, &[50.0, 50.0, 75.0], true, &[(30, 6)], 6, 6);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        // Without `urgent`, 90 % waits for its confirmation too.
        let d = decide_on(CPU, &[50.0, 50.0, 90.0], true, &[(30, 6)], 6, 6);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
    }

    #[test]
    fn urgent_lies_between_the_target_and_the_saturation() {
        for (urgent, said) in [("60", "found 60"), ("96", "found 96")] {
            let text = format!("target: {{cluster: c, service: s}}\nmin: 1\nmax: 4\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 60, saturation: 95, urgent: {urgent}}}\n");
            let err = crate::policy::load_str(&text, "t.yaml", Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains("urgent") && err.contains(said), "{err}");
        }
    }

    #[test]
    fn a_saturated_datapoint_asks_for_twice_the_tasks_at_once() {
        let rules = "  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, saturation: 95, scale_out_datapoints: 3, warmup: 0s}\n";
        // One datapoint at 100 %: no need for three, and not just 100/60 more.
        let d = decide_on(rules, &[50.0, 55.0, 100.0], true, &[(30, 6)], 6, 6);
        assert_eq!((d.action, d.desired), (Action::ScaleOut, 12), "{}", d.reason);
        assert!(d.reason.contains("saturated"), "{}", d.reason);
        // Without `saturation`, it waits for three datapoints above the band.
        let d = decide_on(
            &rules.replace(", saturation: 95", ""),
            &[50.0, 55.0, 100.0],
            true,
            &[(30, 6)],
            6,
            6,
        );
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
    }

    #[test]
    fn a_steady_rise_is_met_ahead_but_a_jump_is_not_projected() {
        let rules = "  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, tolerance: 10%, lead: 3m, warmup: 0s}\n";
        // +2 points a minute up to 64, inside the band (54..66): in 3 minutes it will be over.
        let ramp: Vec<f64> = (0..10).map(|k| 46.0 + 2.0 * k as f64).collect();
        let d = decide_on(rules, &ramp, true, &[(30, 10)], 10, 10);
        assert_eq!(d.action, Action::ScaleOut, "{}", d.reason);
        assert!(d.reason.contains("rising"), "{}", d.reason);
        // +4 a minute up to 58, still under the target: the trend says 70 in 3 minutes, but
        // the datapoints lag the load and the band's room takes a ramp that stops here.
        let below: Vec<f64> = (0..10).map(|k| 22.0 + 4.0 * k as f64).collect();
        let d = decide_on(rules, &below, true, &[(30, 10)], 10, 10);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        // Flat, a jump, flat at 64: no trend to project, and 64 is within the band.
        let step = [50.0, 50.0, 50.0, 50.0, 50.0, 64.0, 64.0, 64.0, 64.0, 64.0];
        let d = decide_on(rules, &step, true, &[(30, 10)], 10, 10);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        // Noise around 60 is not a trend either.
        let noise = [58.0, 63.0, 57.0, 62.0, 59.0, 64.0, 56.0, 61.0, 60.0, 63.0];
        let d = decide_on(rules, &noise, true, &[(30, 10)], 10, 10);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
    }

    #[test]
    fn a_trend_is_not_projected_across_the_last_scale_in() {
        let rules = "  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, tolerance: 10%, lead: 3m, warmup: 0s}\n";
        let ramp: Vec<f64> = (0..10).map(|k| 46.0 + 2.0 * k as f64).collect();
        let after = |mins: i64| TargetState {
            last_scale_in: Some(now() - TimeDelta::minutes(mins)),
            ..TargetState::default()
        };
        // The same rise, inside the band: a scale-in 4 minutes ago lies inside the window (the
        // per-task values rose as tasks stopped), so nothing is projected and nothing is done.
        let d = decide_after(rules, &ramp, true, &[(30, 10)], (10, 10), after(4));
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        // One older than the window leaves the trend whole: met ahead as before.
        let d = decide_after(rules, &ramp, true, &[(30, 10)], (10, 10), after(30));
        assert_eq!(d.action, Action::ScaleOut, "{}", d.reason);
        assert!(d.reason.contains("rising"), "{}", d.reason);
    }

    #[test]
    fn a_rule_with_scale_in_disabled_neither_votes_for_nor_blocks_a_scale_in() {
        let rules = format!(
            "{CPU}  - {{name: other, kind: target_tracking, metric: cpu, target: 40, disable_scale_in: true, warmup: 0s}}\n"
        );
        // CPU 30 % on 10 tasks: `cpu` wants 5; `other` (target 40, in its band's lower part)
        // abstains instead of holding.
        let d = decide_on(&rules, &[30.0; 5], true, &[(30, 10)], 10, 10);
        assert_eq!((d.action, d.desired), (Action::ScaleIn, 5), "{}", d.reason);
        let other = d.votes.iter().find(|v| &*v.rule == "other").unwrap();
        assert_eq!(other.status.as_str(), "abstains", "{other:?}");
    }
}
