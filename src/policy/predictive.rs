//! `predictive`: forecast a load metric over the next `horizon` and scale ahead of it.
//!
//! The model is additive: a linear trend (least squares over the history), a daily profile (the
//! mean residual per `bucket` of the day, once a day of history exists) and a weekly profile
//! (the mean remaining residual per day of the week, once a week exists). The spread of what is
//! left gives an upper bound at `confidence` (a normal quantile). The count is the peak of that
//! bound over the horizon divided by `target_per_task`.
//!
//! Use a load metric that does not depend on the count (requests, messages arriving), not a
//! utilization. With `forecast_only: true` the engine records what the rule would do without
//! counting its vote.

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::statistics::Statistics;

use super::Policy;
use crate::config::read::{Cx, FromNode, MapReader};
use crate::eval_io::{num, EvalInput, Recommendation};
use crate::model::Sample;

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
}

pub(super) const KEYS: &[&str] = &[
    "metric",
    "target_per_task",
    "horizon",
    "min_history",
    "confidence",
    "bucket",
    "forecast_only",
];

const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;

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
        if DAY % bucket.as_secs().max(1) as i64 != 0 {
            cx.error(
                m.span_of("bucket"),
                &crate::config::read::join(m.path(), "bucket"),
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
        })
    }
}

/// What the model saw and expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// Per bucket over the horizon: (time, expected value).
    pub points: Vec<(DateTime<Utc>, f64)>,
    /// The highest upper bound over the horizon.
    pub peak: f64,
    /// Residual standard deviation.
    pub sigma: f64,
    /// Trend, per hour.
    pub slope_per_hour: f64,
    pub daily: bool,
    pub weekly: bool,
}

/// Fits trend + daily + weekly seasonality to `history` and forecasts `(now, now + horizon]`.
/// `None` when fewer than two datapoints exist.
pub fn forecast(
    history: &[Sample],
    now: DateTime<Utc>,
    horizon: Duration,
    bucket: Duration,
    confidence: f64,
) -> Option<Forecast> {
    if history.len() < 2 {
        return None;
    }
    let t0 = history[0].timestamp.timestamp();
    let hours = |t: i64| (t - t0) as f64 / 3600.0;
    let xs: Vec<f64> = history.iter().map(|s| hours(s.timestamp.timestamp())).collect();
    let ys: Vec<f64> = history.iter().map(|s| s.value).collect();
    let var_x = xs.iter().variance();
    let slope = if var_x > 0.0 {
        xs.iter().covariance(ys.iter()) / var_x
    } else {
        0.0
    };
    let intercept = ys.iter().mean() - slope * xs.iter().mean();
    let trend = |x: f64| intercept + slope * x;

    let span = history[history.len() - 1].timestamp.timestamp() - t0;
    let bucket_s = (bucket.as_secs() as i64).max(1);
    let buckets = (DAY / bucket_s).max(1) as usize;
    let bucket_of = |t: i64| (t.rem_euclid(DAY) / bucket_s) as usize % buckets;
    let weekday_of =
        |t: i64| DateTime::from_timestamp(t, 0).map_or(0, |d| d.weekday().num_days_from_monday() as usize);

    let mut residual: Vec<f64> = xs.iter().zip(&ys).map(|(x, y)| y - trend(*x)).collect();
    let daily_on = span >= DAY;
    let mut daily = vec![0.0; buckets];
    if daily_on {
        let mut sums = vec![(0.0, 0u32); buckets];
        for (s, r) in history.iter().zip(&residual) {
            let e = &mut sums[bucket_of(s.timestamp.timestamp())];
            e.0 += r;
            e.1 += 1;
        }
        for (d, (sum, n)) in daily.iter_mut().zip(sums) {
            *d = if n > 0 { sum / f64::from(n) } else { 0.0 };
        }
        for (s, r) in history.iter().zip(residual.iter_mut()) {
            *r -= daily[bucket_of(s.timestamp.timestamp())];
        }
    }
    let weekly_on = span >= WEEK;
    let mut weekly = [0.0; 7];
    if weekly_on {
        let mut sums = [(0.0, 0u32); 7];
        for (s, r) in history.iter().zip(&residual) {
            let e = &mut sums[weekday_of(s.timestamp.timestamp())];
            e.0 += r;
            e.1 += 1;
        }
        for (w, (sum, n)) in weekly.iter_mut().zip(sums) {
            *w = if n > 0 { sum / f64::from(n) } else { 0.0 };
        }
        for (s, r) in history.iter().zip(residual.iter_mut()) {
            *r -= weekly[weekday_of(s.timestamp.timestamp())];
        }
    }
    let sigma = if residual.len() > 2 {
        residual.iter().std_dev()
    } else {
        0.0
    };
    let sigma = if sigma.is_finite() { sigma } else { 0.0 };
    let z = Normal::standard().inverse_cdf(confidence);

    let step = TimeDelta::seconds(bucket_s);
    let end = now + TimeDelta::from_std(horizon).unwrap_or(TimeDelta::MAX);
    let mut points = Vec::new();
    let mut t = now + step;
    loop {
        let at = if t > end { end } else { t };
        let ts = at.timestamp();
        let mut v = trend(hours(ts));
        if daily_on {
            v += daily[bucket_of(ts)];
        }
        if weekly_on {
            v += weekly[weekday_of(ts)];
        }
        points.push((at, v));
        if at >= end {
            break;
        }
        t += step;
    }
    let peak = points.iter().map(|(_, v)| v + z * sigma).fold(f64::MIN, f64::max);
    Some(Forecast {
        points,
        peak,
        sigma,
        slope_per_hour: slope,
        daily: daily_on,
        weekly: weekly_on,
    })
}

impl Policy for Predictive {
    fn evaluate(&self, input: &EvalInput<'_>) -> Recommendation {
        let history = input.metric(&self.metric).history();
        let history: &[Sample] = &history[..history.partition_point(|s| s.timestamp <= input.now)];
        let have = history
            .first()
            .zip(history.last())
            .map_or(0, |(a, b)| (b.timestamp - a.timestamp).num_seconds());
        if have < self.min_history.as_secs() as i64 {
            return Recommendation::Abstain {
                reason: format!(
                    "{}: {} of history, needs {} to forecast",
                    self.metric,
                    humantime::format_duration(Duration::from_secs(have.max(0) as u64)),
                    humantime::format_duration(self.min_history)
                ),
            };
        }
        let Some(f) = forecast(history, input.now, self.horizon, self.bucket, self.confidence) else {
            return Recommendation::Abstain {
                reason: format!("{}: too few datapoints to forecast", self.metric),
            };
        };
        let want = (f.peak.max(0.0) / self.target_per_task).ceil() as u32;
        let seasons = match (f.daily, f.weekly) {
            (true, true) => "daily+weekly",
            (true, false) => "daily",
            _ => "no seasonality",
        };
        Recommendation::Wants {
            count: want,
            reason: format!(
                "{} forecast peak {} in the next {} (trend {:+}/h, {seasons}, {}% bound) / {} per task → {} → {want}",
                self.metric,
                num(f.peak),
                humantime::format_duration(self.horizon),
                num(f.slope_per_hour),
                num(self.confidence * 100.0),
                num(self.target_per_task),
                input.current
            ),
            inputs: vec![(format!("{}_forecast_peak", self.metric), f.peak)],
        }
    }

    fn metrics(&self) -> Vec<&str> {
        vec![&self.metric]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn series(days: i64, f: impl Fn(i64) -> f64) -> Vec<Sample> {
        let start = DateTime::from_timestamp(1_767_225_600, 0).unwrap(); // 2026-01-01 00:00 UTC, a Thursday
        (0..days * 288)
            .map(|i| {
                let t = start + TimeDelta::minutes(5 * i);
                Sample {
                    timestamp: t,
                    value: f(t.timestamp()),
                }
            })
            .collect()
    }

    #[test]
    fn a_daily_cycle_is_learned_and_forecast() {
        // 1000 at night, 3000 at 14:00, a smooth day.
        let day_curve = |t: i64| {
            let h = (t.rem_euclid(DAY)) as f64 / 3600.0;
            2000.0 - 1000.0 * ((h - 2.0) / 24.0 * std::f64::consts::TAU).cos()
        };
        let h = series(14, day_curve);
        let now = h.last().unwrap().timestamp;
        // Forecast 13:00..15:00 of the next day.
        let at = now + TimeDelta::hours(13);
        let f = forecast(
            &h,
            at,
            Duration::from_secs(2 * 3600),
            Duration::from_secs(900),
            0.8,
        )
        .unwrap();
        assert!(f.daily && f.weekly);
        assert!(f.slope_per_hour.abs() < 1.0, "no trend: {}", f.slope_per_hour);
        for (t, v) in &f.points {
            let want = day_curve(t.timestamp());
            assert!((v - want).abs() < 60.0, "{t}: {v} vs {want}");
        }
        assert!((f.peak - 3000.0).abs() < 80.0, "peak {}", f.peak);
    }

    #[test]
    fn a_weekly_pattern_and_a_trend_are_learned() {
        // Weekends at half load, plus growth of 10 per hour.
        let start = 1_767_225_600;
        let load = |t: i64| {
            let weekday = DateTime::from_timestamp(t, 0)
                .unwrap()
                .weekday()
                .num_days_from_monday();
            let base = if weekday >= 5 { 500.0 } else { 1000.0 };
            base + 10.0 * (t - start) as f64 / 3600.0
        };
        let h = series(21, load);
        let now = h.last().unwrap().timestamp; // the end of a Wednesday
        let f = forecast(
            &h,
            now + TimeDelta::days(3),
            Duration::from_secs(3600),
            Duration::from_secs(900),
            0.5,
        )
        .unwrap();
        let (t, v) = f.points[0];
        let want = load(t.timestamp());
        assert!((v - want).abs() < 0.08 * want, "{t}: {v} vs {want}");
        assert!(
            (f.slope_per_hour - 10.0).abs() < 1.5,
            "slope {}",
            f.slope_per_hour
        );
    }

    #[test]
    fn the_bound_widens_with_noise() {
        let noisy = series(2, |t| 1000.0 + if t % 600 == 0 { 200.0 } else { -200.0 });
        let quiet = series(2, |_| 1000.0);
        let f = |h: &[Sample]| {
            forecast(
                h,
                h.last().unwrap().timestamp,
                Duration::from_secs(1800),
                Duration::from_secs(900),
                0.9,
            )
            .unwrap()
        };
        assert!(f(&quiet).peak < 1000.5);
        assert!(f(&noisy).peak > 1200.0, "{}", f(&noisy).peak);
    }
}
