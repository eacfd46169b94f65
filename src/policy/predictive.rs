//! `predictive`: forecast a load metric over the next `horizon` and scale ahead of it.
//!
//! The model ([`super::forecast`]): trend, daily and weekly profiles, additive or multiplicative
//! (whichever fits), moved by the current level; the count is the peak of its `confidence`
//! upper bound over the horizon divided by `target_per_task`. It is fitted on the metric's long
//! window (`history`, which the live worker reads from CloudWatch once per `bucket`) and
//! refitted only when that window changes; each tick adds the recent datapoints' level.
//!
//! Use a load metric that does not depend on the count (requests, messages arriving), not a
//! utilization. With `forecast_only: true` the engine records what the rule would do without
//! counting its vote.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::forecast::{Choice, Model, DAY, MIN_SKILL};
use super::Policy;
use crate::eval_io::{num, EvalInput, Recommendation};
use crate::model::Sample;
use crate::read::{Cx, FromNode, MapReader};

#[derive(Debug, Clone, PartialEq)]
pub struct Predictive {
    pub metric: String,
    /// The load one task should carry.
    pub target_per_task: f64,
    pub horizon: Duration,
    /// Less history than this: the rule abstains.
    pub min_history: Duration,
    /// The quantile of the upper bound, e.g. 0.8.
    pub confidence: f64,
    /// Width of the daily profile's buckets.
    pub bucket: Duration,
    pub forecast_only: bool,
    /// How far back the history reaches (at least `min_history`).
    pub history: Duration,
    fitted: FitCache,
}

/// The model fitted to the last long window seen, with that window's span, and the space
/// chosen for it with the end of the history it was chosen on.
#[derive(Debug, Default)]
struct FitCache(Mutex<Option<Fitted>>);

/// A fitted model: its window's first and last datapoints, and its space and skill with when
/// they were chosen.
type Fitted = (WindowKey, Arc<Model>, (Choice, DateTime<Utc>));

/// The choice between an additive and a multiplicative model, and the judgement of its skill,
/// are made again after this much more history (a fit alone is cheaper than the choice).
const RECHOOSE: chrono::TimeDelta = chrono::TimeDelta::hours(6);

/// A window's first and last datapoints' times.
type WindowKey = (DateTime<Utc>, DateTime<Utc>);

/// A model is fitted again once its window has moved on by this share of its span: a fit takes
/// time in proportion to the span, so a tick costs the same however long the history is (over a
/// day, every 5 minutes; over 14 days, every 70). The level still moves at every tick.
const REFIT_SHARE: i32 = 288;

impl Clone for FitCache {
    fn clone(&self) -> Self {
        FitCache::default()
    }
}

impl PartialEq for FitCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// How far back CloudWatch keeps data (hourly): the longest history a rule may ask for.
pub const MAX_HISTORY_DAYS: u64 = 455;

pub(super) const KEYS: &[&str] = &[
    "metric",
    "target_per_task",
    "horizon",
    "min_history",
    "confidence",
    "bucket",
    "forecast_only",
    "history",
];

impl Predictive {
    pub(super) fn read(m: &mut MapReader<'_>, cx: &mut Cx) -> Option<Self> {
        let metric = m.req::<String>(cx, "metric");
        let target_per_task = m.req_with(cx, "target_per_task", |n, p, cx| {
            let v = f64::from_node(n, p, cx)?;
            (v > 0.0).then_some(v).or_else(|| {
                cx.error(n.span, p, "must be above zero");
                None
            })
        });
        let positive = |key: &str, default: Duration, m: &mut MapReader<'_>, cx: &mut Cx| {
            m.opt_with(cx, key, |n, p, cx| {
                let d = Duration::from_node(n, p, cx)?;
                (!d.is_zero()).then_some(d).or_else(|| {
                    cx.error(n.span, p, "must be longer than zero");
                    None
                })
            })
            .unwrap_or(default)
        };
        let horizon = positive("horizon", Duration::from_secs(30 * 60), m, cx);
        let min_history = positive("min_history", Duration::from_secs(DAY as u64), m, cx);
        let bucket = positive("bucket", Duration::from_secs(15 * 60), m, cx);
        let confidence = m
            .opt_with(cx, "confidence", |n, p, cx| {
                let v = f64::from_node(n, p, cx)?;
                (0.5..1.0).contains(&v).then_some(v).or_else(|| {
                    cx.error(
                        n.span,
                        p,
                        format!("must be at least 0.5 and below 1 (e.g. 0.8), found {v}"),
                    );
                    None
                })
            })
            .unwrap_or(0.8);
        let forecast_only = m.or(cx, "forecast_only", false);
        let history = positive("history", Duration::from_secs(14 * DAY as u64), m, cx);
        if history < min_history || history.as_secs() > MAX_HISTORY_DAYS * DAY as u64 {
            cx.error(
                m.span_of("history"),
                &crate::read::join(m.path(), "history"),
                format!(
                    "must be at least min_history ({}) and at most {MAX_HISTORY_DAYS} days (what CloudWatch keeps)",
                    humantime::format_duration(min_history)
                ),
            );
        }
        if DAY % bucket.as_secs().max(1) as i64 != 0 {
            cx.error(
                m.span_of("bucket"),
                &crate::read::join(m.path(), "bucket"),
                "must divide a day (e.g. 5m, 15m, 1h)",
            );
        }
        Some(Predictive {
            metric: metric?,
            target_per_task: target_per_task?,
            horizon,
            min_history,
            confidence,
            bucket,
            forecast_only,
            history,
            fitted: FitCache::default(),
        })
    }
}

impl Predictive {
    /// The model of `window`: the one fitted last, while the window has moved on by less than
    /// 1/[`REFIT_SHARE`] of its span since (and only forward), else a new fit.
    fn model(&self, window: &[Sample]) -> Option<Arc<Model>> {
        let (first, end) = (window.first()?.timestamp, window.last()?.timestamp);
        let mut g = self.fitted.0.lock().unwrap_or_else(|p| p.into_inner());
        // A model fitted at another confidence (the rule changed since) is not reused.
        if let Some(((a, b), m, _)) = g.as_ref().filter(|(_, m, _)| m.confidence() == self.confidence) {
            let moved = end - *b;
            if first >= *a
                && first <= *b
                && moved >= chrono::TimeDelta::zero()
                && moved * REFIT_SHARE < end - first
            {
                return Some(m.clone());
            }
            if (*a, *b) == (first, end) {
                return Some(m.clone());
            }
        }
        let chosen = g
            .as_ref()
            .map(|(_, _, c)| *c)
            .filter(|(_, at)| end >= *at && end - *at < RECHOOSE);
        let m = Arc::new(Model::fit_as(
            window,
            self.bucket,
            chosen.map(|(c, _)| c),
            self.confidence,
        )?);
        let chosen = chosen.unwrap_or((m.choice(), end));
        *g = Some(((first, end), m.clone(), chosen));
        Some(m)
    }
}

/// What the rule has to forecast from at a tick.
struct Known<'s> {
    /// The recent datapoints up to now (the level).
    recent: &'s [Sample],
    /// Seconds of history, long window and recent together.
    have: i64,
    model: Option<Arc<Model>>,
}

impl Predictive {
    fn known<'s>(&self, view: &'s crate::eval_io::MetricView<'s>, now: DateTime<Utc>) -> Known<'s> {
        let upto = |s: &'_ [Sample]| s.partition_point(|x| x.timestamp <= now);
        let long = view.long_history();
        let long = &long[..upto(long)];
        let recent = view.history();
        let recent = &recent[..upto(recent)];
        let first = long.first().or(recent.first()).map(|s| s.timestamp);
        let last = recent.last().or(long.last()).map(|s| s.timestamp);
        let have = first
            .zip(last)
            .map_or(0, |(a, b): (DateTime<Utc>, _)| (b - a).num_seconds());
        Known {
            recent,
            have,
            model: self.model(long),
        }
    }

    /// The vote from what is known: abstain without enough history (or a clear short cycle),
    /// else the forecast peak's count.
    fn recommend(&self, known: Known<'_>, input: &EvalInput<'_>) -> Recommendation {
        let Known { recent, have, model } = known;
        let cycle = model.as_ref().and_then(|m| m.cycle());
        // Less history than asked for: only a clear short cycle is enough to go on.
        if have < self.min_history.as_secs() as i64 && cycle.is_none() {
            return Recommendation::Abstain {
                reason: format!(
                    "{}: {} of history, needs {} to forecast (or a clear short cycle)",
                    self.metric,
                    humantime::format_duration(Duration::from_secs(have.max(0) as u64)),
                    humantime::format_duration(self.min_history)
                ),
            };
        }
        let Some(model) = model else {
            return Recommendation::Abstain {
                reason: format!("{}: too few datapoints to forecast", self.metric),
            };
        };
        if !model.foresees() && cycle.is_none() {
            return Recommendation::Abstain {
                reason: format!(
                    "{}: its daily pattern forecast the held-out end of its history {}% better than the last hour's level did, under the {}% worth scaling ahead of",
                    self.metric,
                    num(model.skill().unwrap_or(0.0) * 100.0),
                    num(MIN_SKILL * 100.0)
                ),
            };
        }
        let f = model.forecast(recent, input.now, self.horizon);
        let want = (f.peak.max(0.0) / self.target_per_task).ceil() as u32;
        let mut seasons = match (f.daily, f.weekly) {
            (true, true) => "daily+weekly".to_string(),
            (true, false) => "daily".to_string(),
            _ => "no seasonality".to_string(),
        };
        if let Some(c) = f.cycle {
            seasons.push_str(&format!(", a {} cycle", humantime::format_duration(c)));
        }
        let level = if f.multiplicative {
            format!("level ×{}", num(f.level))
        } else {
            format!("level {:+}", num(f.level))
        };
        Recommendation::Wants {
            count: want,
            reason: format!(
                "{} forecast peak {} in the next {} (trend {:+}/h, {seasons}, {level}, {}% bound) / {} per task → {} → {want}",
                self.metric,
                num(f.peak),
                humantime::format_duration(self.horizon),
                num(f.slope_per_hour),
                num(self.confidence * 100.0),
                num(self.target_per_task),
                input.current
            ),
            inputs: vec![(format!("{}_forecast_peak", self.metric).into(), f.peak)],
        }
    }
}

impl Policy for Predictive {
    fn evaluate(&self, input: &EvalInput<'_>) -> Recommendation {
        self.evaluate_foreseeing(input).0
    }

    fn evaluate_foreseeing(&self, input: &EvalInput<'_>) -> (Recommendation, bool) {
        let view = input.metric(&self.metric);
        let known = self.known(&view, input.now);
        let learned = known.have >= self.min_history.as_secs() as i64
            && known.model.as_ref().is_some_and(|m| m.daily() && m.foresees());
        (self.recommend(known, input), learned)
    }

    fn metrics(&self) -> Vec<&str> {
        vec![&self.metric]
    }

    fn history(&self) -> Option<(&str, Duration, Duration)> {
        Some((&self.metric, self.history, self.bucket))
    }

    fn summary(&self) -> String {
        format!(
            "predictive {} / {} per task over {} ({}% bound, needs {} of history){}",
            self.metric,
            num(self.target_per_task),
            humantime::format_duration(self.horizon),
            num(self.confidence * 100.0),
            humantime::format_duration(self.min_history),
            if self.forecast_only { ", forecast only" } else { "" }
        )
    }

    fn counts(&self) -> bool {
        !self.forecast_only
    }
}
