//! The forecasting model of the `predictive` rule: fitted once per history, evaluated per tick.
//!
//! A linear trend, a daily profile (the mean residual per `bucket` of the day, once a day of
//! history exists) and a weekly profile (the mean remaining residual per day of the week, once a
//! week exists). It is fitted twice, on the values and on their logarithms (a multiplicative
//! pattern: the same shape at another level on a quiet day), and the one with the smaller
//! relative residual is kept.
//!
//! A *short cycle* is looked for in the last hours of what is left: a load repeating every 5
//! minutes to 2 hours (cron jobs, clients polling in step), found as the first peak of the
//! residuals' autocorrelation that reaches 0.6 with at least three cycles in view, and whose
//! profile explains at least half the variance of those hours. Its profile
//! (the mean residual per minute of the cycle) joins the forecast, and such a cycle is enough
//! to forecast from before a day of history exists.
//!
//! The forecast adds the *current level*: the mean residual of the last hour, so a day running
//! above or below its usual level (a weekend before a week of history exists, a busy day) moves
//! the forecast with it. The spread of what is left (residual minus its trailing-hour mean) gives
//! an upper bound at `confidence`: the quantile of what is left, in the forecast's bucket of the
//! day where it has enough of them.
//!
//! From a day and a quarter of history on, the model is *judged*: fitted again on the first three
//! quarters (at least the first day), how much less absolute error it makes on the rest than the
//! last hour's level alone (its skill), once the rest holds the time of day its profile peaks.
//! Under [`MIN_SKILL`] the pattern is not worth scaling ahead of.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::model::Sample;

pub const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;
/// The window of the current level.
const LEVEL: i64 = 3600;
/// Where short cycles are looked for, how long they may be, and how clear they must be.
const CYCLE_WINDOW: i64 = 6 * 3600;
const CYCLE_MIN: i64 = 300;
const CYCLE_MAX: i64 = 2 * 3600;
const CYCLE_STRENGTH: f64 = 0.6;
/// A cycle must leave at most this share of the window's variance.
const CYCLE_EXPLAINS: f64 = 0.5;

/// A load repeating every `period` seconds over the last hours.
#[derive(Debug, Clone, PartialEq)]
struct Cycle {
    period: i64,
    /// The mean residual per minute of the cycle, the phase counted from `anchor`.
    profile: Vec<f64>,
    anchor: i64,
}

impl Cycle {
    fn at(&self, t: i64) -> f64 {
        let k = ((t - self.anchor).rem_euclid(self.period) / 60) as usize;
        self.profile.get(k).copied().unwrap_or(0.0)
    }
}

/// The per-minute means of the residuals of the window's minutes (`None` where none fell).
fn minutes(ts: &[i64], residual: &[f64], from: i64, n: usize) -> Vec<Option<f64>> {
    let mut bins = vec![(0.0, 0u32); n];
    for (t, r) in ts.iter().zip(residual).filter(|(t, _)| **t >= from) {
        let k = (((t - from) / 60) as usize).min(n - 1);
        bins[k].0 += r;
        bins[k].1 += 1;
    }
    bins.into_iter()
        .map(|(s, c)| (c > 0).then(|| s / f64::from(c)))
        .collect()
}

/// The autocorrelation of `x` at `lag`, over the pairs that both have a value.
fn autocorrelation(x: &[Option<f64>], mean: f64, lag: usize) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..x.len() {
        let Some(a) = x[i] else { continue };
        den += (a - mean).powi(2);
        if let Some(Some(b)) = x.get(i + lag) {
            num += (a - mean) * (b - mean);
        }
    }
    if den > 0.0 {
        num / den * x.len() as f64 / (x.len() - lag).max(1) as f64
    } else {
        0.0
    }
}

/// A clear short cycle in the last [`CYCLE_WINDOW`] of the residuals, if there is one.
fn find_cycle(ts: &[i64], residual: &[f64]) -> Option<Cycle> {
    let end = *ts.last()?;
    let from = (end - CYCLE_WINDOW).max(ts[0]);
    let n = ((end - from) / 60 + 1) as usize;
    let x = minutes(ts, residual, from, n);
    let filled: Vec<f64> = x.iter().flatten().copied().collect();
    if filled.len() * 10 < n * 9 {
        return None;
    }
    let m = mean(filled.iter().copied());
    let (lo, hi) = ((CYCLE_MIN / 60) as usize, ((CYCLE_MAX / 60) as usize).min(n / 3));
    if lo + 1 >= hi {
        return None;
    }
    let r: Vec<f64> = (lo - 1..=hi + 1).map(|lag| autocorrelation(&x, m, lag)).collect();
    // The first local peak that is clear enough: the fundamental, not a multiple of it.
    let lag =
        (1..r.len() - 1).find(|&i| r[i] >= CYCLE_STRENGTH && r[i] > r[i - 1] && r[i] >= r[i + 1])? + lo - 1;
    let period = lag as i64 * 60;
    let mut sums = vec![(0.0, 0u32); lag];
    for (t, r) in ts.iter().zip(residual).filter(|(t, _)| **t >= from) {
        let k = ((t - end).rem_euclid(period) / 60) as usize % lag;
        sums[k].0 += r;
        sums[k].1 += 1;
    }
    let profile = sums
        .into_iter()
        .map(|(s, c)| if c > 0 { s / f64::from(c) } else { 0.0 })
        .collect();
    let cycle = Cycle {
        period,
        profile,
        anchor: end,
    };
    // A cycle worth the name explains the load: at least half the variance of the window.
    let window: Vec<(i64, f64)> = ts
        .iter()
        .zip(residual)
        .filter(|(t, _)| **t >= from)
        .map(|(t, r)| (*t, *r))
        .collect();
    let m = mean(window.iter().map(|(_, r)| *r));
    let before: f64 = window.iter().map(|(_, r)| (r - m).powi(2)).sum();
    let after: f64 = window.iter().map(|(t, r)| (r - cycle.at(*t) - m).powi(2)).sum();
    (after <= CYCLE_EXPLAINS * before).then_some(cycle)
}

/// What the model saw and expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// Per bucket over the horizon: (time, expected value).
    pub points: Vec<(DateTime<Utc>, f64)>,
    /// The highest upper bound over the horizon.
    pub peak: f64,
    /// Residual standard deviation (in the model's space).
    pub sigma: f64,
    /// Trend, per hour, in the metric's units at `now`.
    pub slope_per_hour: f64,
    pub daily: bool,
    pub weekly: bool,
    /// The period of a short cycle in the last hours, when one was found.
    pub cycle: Option<Duration>,
    /// Fitted on logarithms (a multiplicative pattern).
    pub multiplicative: bool,
    /// The current level against the usual one: a factor (multiplicative) or an offset.
    pub level: f64,
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    t0: i64,
    log: bool,
    /// Added before the logarithm, so zeros are allowed.
    offset: f64,
    intercept: f64,
    /// Per hour, in the model's space.
    slope: f64,
    bucket: i64,
    daily: Option<Vec<f64>>,
    weekly: Option<[f64; 7]>,
    cycle: Option<Cycle>,
    spread: Spread,
    /// The last hour's residuals at the end of the history: (time, residual).
    tail: Vec<(i64, f64)>,
    /// How much better than the last hour's level it forecast the end of its history held out
    /// ([`held_out`]); `None` until that can be judged ([`Model::skill_on`]).
    skill: Option<f64>,
}

/// The choice made for a history: the space, and the skill the model showed on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub multiplicative: bool,
    pub skill: Option<f64>,
}

/// A pattern worth scaling ahead of forecasts the held-out end of its history with at least
/// this much less absolute error than the last hour's level alone does. A bursty load with a
/// weak daily shape (news, a crawler) scores near zero: its forecast would only add a margin,
/// which the reactive rules keep more cheaply.
pub const MIN_SKILL: f64 = 0.1;

/// The least history a model is judged on, after the day it is fitted on: a quarter of a day.
const MIN_HELD_OUT: TimeDelta = TimeDelta::hours(6);

/// The day of the week of `t` (Monday 0), by arithmetic: 1970-01-01 was a Thursday.
fn weekday(t: i64) -> usize {
    (t.div_euclid(DAY) + 3).rem_euclid(7) as usize
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// The least-squares line `(intercept, slope)` through `(x, y)`.
fn line(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let (mx, my) = (mean(xs.iter().copied()), mean(ys.iter().copied()));
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, v)| (x - mx) * (v - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - slope * mx, slope)
}

/// Mean residual per class (`class[i]` is datapoint i's, below `classes`).
fn profile(class: &[usize], residual: &[f64], classes: usize) -> Vec<f64> {
    let mut sums = vec![(0.0, 0u32); classes];
    for (c, r) in class.iter().zip(residual) {
        let e = &mut sums[*c];
        e.0 += r;
        e.1 += 1;
    }
    sums.into_iter()
        .map(|(s, n)| if n > 0 { s / f64::from(n) } else { 0.0 })
        .collect()
}

/// A bucket of the day needs this many deviations before its own quantile is read: a day's
/// worth of 1-minute datapoints in a 5-minute bucket (with fewer, the overall one).
const BUCKET_MIN: usize = 5;

/// The spread of what the level correction leaves (residuals minus their trailing-hour mean),
/// read as the bound at the model's confidence: the deviations' quantile over all of them and
/// per bucket of the day, not a normal bound from their variance: real loads are heavy-tailed
/// (a few bursts would make the variance, and a normal bound, many times what the other days
/// show). Worked out once a fit, by selection rather than sorting.
#[derive(Debug, Clone, Default, PartialEq)]
struct Spread {
    /// The confidence its bounds are at.
    q: f64,
    /// The standard deviation over all of them (reported).
    sigma: f64,
    /// The quantile over all of them.
    overall: f64,
    /// Per bucket of the day: its own quantile where it has [`BUCKET_MIN`] deviations, never
    /// below the overall one (some hours are more volatile than others, none is calmer than
    /// all of them together).
    per: Vec<f64>,
}

impl Spread {
    fn of(ts: &[i64], residual: &[f64], buckets: usize, of: impl Fn(i64) -> usize, q: f64) -> Spread {
        let (mut lo, mut sum) = (0usize, 0.0);
        let mut dev = Vec::with_capacity(residual.len());
        for i in 0..residual.len() {
            while ts[i] - ts[lo] > LEVEL {
                sum -= residual[lo];
                lo += 1;
            }
            if i > lo {
                dev.push((ts[i], residual[i] - sum / (i - lo) as f64));
            }
            sum += residual[i];
        }
        let m = mean(dev.iter().map(|(_, d)| *d));
        let var = mean(dev.iter().map(|(_, d)| (d - m).powi(2)));
        let mut all: Vec<f64> = dev.iter().map(|(_, d)| d - m).collect();
        let (mut values, starts) = grouped(&dev, buckets, |(t, d)| (of(*t) % buckets, d - m));
        let overall = quantile(&mut all, q);
        let mut per = Vec::with_capacity(buckets);
        let mut rest = values.as_mut_slice();
        for w in starts.windows(2) {
            let (this, tail) = rest.split_at_mut(w[1] - w[0]);
            rest = tail;
            per.push(match this.len() >= BUCKET_MIN {
                true => quantile(this, q).max(overall),
                false => overall,
            });
        }
        Spread {
            q,
            sigma: if var.is_finite() { var.sqrt() } else { 0.0 },
            overall,
            per,
        }
    }

    /// The deviation at the confidence in `bucket`; 0 without deviations.
    fn bound(&self, bucket: usize) -> f64 {
        self.per.get(bucket).copied().unwrap_or(self.overall)
    }
}

/// The values of `items` grouped by class, in one buffer (a counting sort): class `c`'s are
/// `values[starts[c]..starts[c + 1]]`. `f` gives an item's class (below `classes`) and value.
fn grouped<T>(items: &[T], classes: usize, f: impl Fn(&T) -> (usize, f64)) -> (Vec<f64>, Vec<usize>) {
    let mut starts = vec![0usize; classes + 1];
    for item in items {
        starts[f(item).0 + 1] += 1;
    }
    for c in 0..classes {
        starts[c + 1] += starts[c];
    }
    let mut next = starts.clone();
    let mut values = vec![0.0; items.len()];
    for item in items {
        let (c, v) = f(item);
        values[next[c]] = v;
        next[c] += 1;
    }
    (values, starts)
}

/// The `q` quantile of `values` (linear between order statistics, in `total_cmp`'s order); 0
/// when empty. Reorders `values`: two order statistics are selected, not the whole sorted.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    let Some(last) = values.len().checked_sub(1) else {
        return 0.0;
    };
    let at = q.clamp(0.0, 1.0) * last as f64;
    let (i, frac) = (at.floor() as usize, at.fract());
    let (_, &mut low, above) = values.select_nth_unstable_by(i, f64::total_cmp);
    let next = above.iter().copied().min_by(f64::total_cmp).unwrap_or(low);
    low + frac * (next - low)
}

/// Each datapoint's bucket of the day and day of the week.
struct Seasons<'a> {
    day_class: &'a [usize],
    week_class: &'a [usize],
    buckets: usize,
}

type Fitted = (f64, f64, Option<Vec<f64>>, Option<[f64; 7]>, Vec<f64>);

impl Seasons<'_> {
    /// The profiles' part of datapoint `i`.
    fn seasonal(&self, i: usize, d: &Option<Vec<f64>>, w: &Option<[f64; 7]>) -> f64 {
        d.as_ref().map_or(0.0, |d| d[self.day_class[i]]) + w.as_ref().map_or(0.0, |w| w[self.week_class[i]])
    }

    /// Backfitting: the trend of what the profiles leave, the profiles of what the trend leaves
    /// (a trend fitted first would take part of a daily cycle for growth). The intercept, the
    /// slope, the daily and weekly profiles (those given), and what all of them leave.
    fn backfit(
        &self,
        xs: &[f64],
        y: &[f64],
        mut daily: Option<Vec<f64>>,
        mut weekly: Option<[f64; 7]>,
    ) -> Fitted {
        let (mut intercept, mut slope) = (0.0, 0.0);
        let mut residual = vec![0.0; y.len()];
        let mut rest = vec![0.0; y.len()];
        for _ in 0..3 {
            for (i, (r, v)) in rest.iter_mut().zip(y).enumerate() {
                *r = v - self.seasonal(i, &daily, &weekly);
            }
            (intercept, slope) = line(xs, &rest);
            for (r, (x, v)) in residual.iter_mut().zip(xs.iter().zip(y)) {
                *r = v - intercept - slope * x;
            }
            // What the trend leaves, without the other profile.
            if daily.is_some() {
                for (i, (r, res)) in rest.iter_mut().zip(&residual).enumerate() {
                    *r = res - self.seasonal(i, &None, &weekly);
                }
                daily = Some(profile(self.day_class, &rest, self.buckets));
            }
            if weekly.is_some() {
                for (i, (r, res)) in rest.iter_mut().zip(&residual).enumerate() {
                    *r = res - self.seasonal(i, &daily, &None);
                }
                let p = profile(self.week_class, &rest, 7);
                weekly = Some([p[0], p[1], p[2], p[3], p[4], p[5], p[6]]);
            }
        }
        for (i, r) in residual.iter_mut().enumerate() {
            *r -= self.seasonal(i, &daily, &weekly);
        }
        (intercept, slope, daily, weekly, residual)
    }
}

/// What a model is fitted for: to forecast, or only to be scored on the rest of its history
/// (which reads no bound, so its spread is not worked out).
#[derive(Clone, Copy, PartialEq)]
enum Purpose {
    /// Its bound at this confidence.
    Forecast(f64),
    Score,
}

/// A history split by time to judge a model on: its first three quarters and the last, or its
/// first day and the rest while that is more (the part fitted must hold a whole day, so each
/// held-out hour has its place in the daily profile). `None` until the rest spans
/// [`MIN_HELD_OUT`].
fn held_out(history: &[Sample]) -> Option<(&[Sample], &[Sample])> {
    let (first, last) = (history.first()?.timestamp, history.last()?.timestamp);
    let cut = first + ((last - first) * 3 / 4).max(TimeDelta::days(1));
    if last - cut < MIN_HELD_OUT {
        return None;
    }
    Some(history.split_at(history.partition_point(|s| s.timestamp < cut)))
}

impl Model {
    /// Fits one model to `history` (oldest first), in the values' space or their logarithms'.
    fn fit_in(history: &[Sample], bucket: Duration, log: bool, purpose: Purpose) -> Option<Model> {
        let t0 = history.first()?.timestamp.timestamp();
        let ts: Vec<i64> = history.iter().map(|s| s.timestamp.timestamp()).collect();
        let scale = mean(history.iter().map(|s| s.value.abs()));
        let offset = 1e-3 * scale + 1e-9;
        let y: Vec<f64> = history
            .iter()
            .map(|s| {
                if log {
                    (s.value.max(0.0) + offset).ln()
                } else {
                    s.value
                }
            })
            .collect();
        let xs: Vec<f64> = ts.iter().map(|t| (t - t0) as f64 / 3600.0).collect();
        let span = ts.last()? - t0;
        let bucket = (bucket.as_secs() as i64).max(1);
        let buckets = (DAY / bucket).max(1) as usize;
        let day_of = |t: i64| (t.rem_euclid(DAY) / bucket) as usize;
        // Each datapoint's bucket of the day and day of the week, worked out once.
        let day_class: Vec<usize> = ts.iter().map(|t| day_of(*t) % buckets).collect();
        let week_class: Vec<usize> = ts.iter().map(|t| weekday(*t)).collect();
        let seasons = Seasons {
            day_class: &day_class,
            week_class: &week_class,
            buckets,
        };
        let (intercept, slope, daily, weekly, mut residual) = seasons.backfit(
            &xs,
            &y,
            (span >= DAY).then(|| vec![0.0; buckets]),
            (span >= WEEK).then_some([0.0; 7]),
        );
        let cycle = find_cycle(&ts, &residual);
        if let Some(c) = &cycle {
            for (r, t) in residual.iter_mut().zip(&ts) {
                *r -= c.at(*t);
            }
        }
        let spread = match purpose {
            Purpose::Forecast(q) => Spread::of(&ts, &residual, buckets, day_of, q),
            Purpose::Score => Spread::default(),
        };
        let end = *ts.last()?;
        let tail = ts
            .iter()
            .zip(&residual)
            .filter(|(t, _)| end - **t < LEVEL)
            .map(|(t, r)| (*t, *r))
            .collect();
        Some(Model {
            t0,
            log,
            offset,
            intercept,
            slope,
            bucket,
            daily,
            weekly,
            cycle,
            spread,
            tail,
            skill: None,
        })
    }

    /// Fits both spaces and keeps the one that forecasts better: both are fitted again on the
    /// first part of the history and scored on the rest ([`held_out`]; each datapoint forecast
    /// with the level of the hour before it, as live). Below a day and a quarter of history, or
    /// with negative values, the score cannot tell much: multiplicative where the values allow
    /// it (loads are users × their rate). Its forecasts' upper bound is at `confidence`. `None`
    /// with fewer than two datapoints.
    pub fn fit(history: &[Sample], bucket: Duration, confidence: f64) -> Option<Model> {
        Model::fit_as(history, bucket, None, confidence)
    }

    /// [`Model::fit`], or as chosen earlier on this history (its space and skill).
    pub fn fit_as(
        history: &[Sample],
        bucket: Duration,
        chosen: Option<Choice>,
        confidence: f64,
    ) -> Option<Model> {
        let purpose = Purpose::Forecast(confidence);
        if history.len() < 2 {
            return None;
        }
        let positive = history.iter().all(|s| s.value >= 0.0);
        if let Some(c) = chosen {
            let mut m = Model::fit_in(history, bucket, c.multiplicative && positive, purpose)?;
            m.skill = c.skill;
            return Some(m);
        }
        let linear = Model::fit_in(history, bucket, false, purpose)?;
        let Some(log) = positive
            .then(|| Model::fit_in(history, bucket, true, purpose))
            .flatten()
        else {
            return Some(linear.judged(history));
        };
        let Some((train, test)) = held_out(history) else {
            return Some(log);
        };
        let trained = |log: bool| Model::fit_in(train, bucket, log, Purpose::Score);
        let score = |m: &Option<Model>| m.as_ref().map_or(f64::INFINITY, |m| m.error(history, test));
        let (on_log, on_values) = (trained(true), trained(false));
        let (mut m, on_train) = if score(&on_log) <= score(&on_values) {
            (log, on_log)
        } else {
            (linear, on_values)
        };
        m.skill = on_train.and_then(|t| t.skill_on(history, test));
        Some(m)
    }

    /// The model with its skill: fitted again on the first part of `history` ([`held_out`]), how
    /// much less absolute error it makes on the rest than the last hour's level alone (each
    /// datapoint forecast from the hour before it, as live).
    fn judged(mut self, history: &[Sample]) -> Model {
        let Some((train, test)) = held_out(history) else {
            return self;
        };
        let bucket = Duration::from_secs(self.bucket as u64);
        self.skill =
            Model::fit_in(train, bucket, self.log, Purpose::Score).and_then(|m| m.skill_on(history, test));
        self
    }

    /// The choice made for this model's history.
    pub fn choice(&self) -> Choice {
        Choice {
            multiplicative: self.log,
            skill: self.skill,
        }
    }

    /// Whether its pattern forecast better than the last hour's level (or could not be judged
    /// yet): see [`MIN_SKILL`].
    pub fn foresees(&self) -> bool {
        self.skill.is_none_or(|s| s >= MIN_SKILL)
    }

    /// Its skill, when judged.
    pub fn skill(&self) -> Option<f64> {
        self.skill
    }

    /// Each datapoint of `test` with what the hour of `all` before it held, in the model's
    /// space: the mean residual and the mean value, `None` where that hour is empty.
    fn hours_before(
        &self,
        all: &[Sample],
        test: &[Sample],
        mut each: impl FnMut(&Sample, Option<(f64, f64)>),
    ) {
        let (mut lo, mut hi) = (0usize, 0usize);
        let (mut residuals, mut values) = (0.0, 0.0);
        for s in test {
            let t = s.timestamp.timestamp();
            while hi < all.len() && all[hi].timestamp.timestamp() < t {
                let (at, v) = (all[hi].timestamp.timestamp(), self.transform(all[hi].value));
                residuals += v - self.base(at);
                values += v;
                hi += 1;
            }
            while lo < hi && t - all[lo].timestamp.timestamp() > LEVEL {
                let (at, v) = (all[lo].timestamp.timestamp(), self.transform(all[lo].value));
                residuals -= v - self.base(at);
                values -= v;
                lo += 1;
            }
            let n = (hi - lo) as f64;
            each(s, (hi > lo).then(|| (residuals / n, values / n)));
        }
    }

    /// How much less absolute error, in values, this model (fitted on the first part of `all`)
    /// makes forecasting `test` with the level of the hour before each datapoint than that
    /// hour's level alone: 1 − its error ÷ the level's. `None` when `test` misses the time of
    /// day its pattern rises highest: a held-out night cannot show what a pattern is for (and on
    /// a flat one, the level's error is near zero).
    fn skill_on(&self, all: &[Sample], test: &[Sample]) -> Option<f64> {
        if !self.peak_in(test) {
            return None;
        }
        let (mut model, mut flat) = (0.0, 0.0);
        self.hours_before(all, test, |s, hour| {
            if let Some((level, value)) = hour {
                let t = s.timestamp.timestamp();
                model += (self.to_value(self.base(t) + level) - s.value).abs();
                flat += (self.to_value(value) - s.value).abs();
            }
        });
        Some(if flat > 0.0 { 1.0 - model / flat } else { 0.0 })
    }

    /// Whether `test` holds a datapoint in the bucket of the day where the daily profile is
    /// highest.
    fn peak_in(&self, test: &[Sample]) -> bool {
        let Some(d) = &self.daily else {
            return false;
        };
        let peak = (0..d.len()).max_by(|a, b| d[*a].total_cmp(&d[*b]));
        peak.is_some_and(|p| {
            test.iter()
                .any(|s| self.bucket_of(s.timestamp.timestamp()) % d.len() == p)
        })
    }

    /// The mean relative error forecasting each of `test` with the level of the hour of
    /// `all` before it.
    fn error(&self, all: &[Sample], test: &[Sample]) -> f64 {
        let mut errors = Vec::with_capacity(test.len());
        self.hours_before(all, test, |s, hour| {
            let level = hour.map_or(0.0, |(level, _)| level);
            let want = s.value.abs().max(f64::MIN_POSITIVE);
            errors.push((self.to_value(self.base(s.timestamp.timestamp()) + level) - s.value).abs() / want);
        });
        mean(errors.into_iter())
    }

    /// The model's value at `t`, in its own space (before the level).
    fn base(&self, t: i64) -> f64 {
        let mut v = self.intercept + self.slope * (t - self.t0) as f64 / 3600.0;
        if let Some(d) = &self.daily {
            v += d[self.bucket_of(t) % d.len()];
        }
        if let Some(w) = &self.weekly {
            v += w[weekday(t)];
        }
        if let Some(c) = &self.cycle {
            v += c.at(t);
        }
        v
    }

    /// The period of the short cycle found, if any.
    pub fn cycle(&self) -> Option<Duration> {
        self.cycle.as_ref().map(|c| Duration::from_secs(c.period as u64))
    }

    fn to_value(&self, v: f64) -> f64 {
        if self.log {
            (v.exp() - self.offset).max(0.0)
        } else {
            v
        }
    }

    fn transform(&self, v: f64) -> f64 {
        if self.log {
            (v.max(0.0) + self.offset).ln()
        } else {
            v
        }
    }

    /// The mean residual of the hour before `now`: from `recent` where it has datapoints then,
    /// else from the end of the fitted history.
    fn level(&self, recent: &[Sample], now: DateTime<Utc>) -> f64 {
        let now = now.timestamp();
        let fresh: Vec<f64> = recent
            .iter()
            .map(|s| (s.timestamp.timestamp(), s.value))
            .filter(|(t, _)| *t <= now && now - t < LEVEL)
            .map(|(t, v)| self.transform(v) - self.base(t))
            .collect();
        if !fresh.is_empty() {
            return mean(fresh.into_iter());
        }
        mean(
            self.tail
                .iter()
                .filter(|(t, _)| *t <= now && now - t < LEVEL)
                .map(|(_, r)| *r),
        )
    }

    fn bucket_of(&self, t: i64) -> usize {
        (t.rem_euclid(DAY) / self.bucket) as usize
    }

    /// Whether it learned a daily profile (it had a day of history).
    pub fn daily(&self) -> bool {
        self.daily.is_some()
    }

    /// Fitted on logarithms.
    pub fn multiplicative(&self) -> bool {
        self.log
    }

    /// The confidence its forecasts' upper bound is at.
    pub fn confidence(&self) -> f64 {
        self.spread.q
    }

    /// Forecasts each bucket overlapping `[now, now + horizon]`, its peak at the confidence the
    /// model was fitted for.
    pub fn forecast(&self, recent: &[Sample], now: DateTime<Utc>, horizon: Duration) -> Forecast {
        let level = self.level(recent, now);
        let end = now + TimeDelta::from_std(horizon).unwrap_or(TimeDelta::MAX);
        // Per bucket, or per minute where a cycle moves faster than the buckets.
        let res = if self.cycle.is_some() {
            self.bucket.min(60)
        } else {
            self.bucket
        };
        let step = TimeDelta::seconds(res);
        let mut points = Vec::new();
        let mut peak = f64::MIN;
        let mut b =
            DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(res), 0).unwrap_or(now);
        while b <= end {
            let at = b.max(now);
            let v = self.base(at.timestamp()) + level;
            points.push((at, self.to_value(v)));
            let room = self.spread.bound(self.bucket_of(at.timestamp()));
            peak = peak.max(self.to_value(v + room));
            b += step;
        }
        let here = self.to_value(self.base(now.timestamp()) + level);
        Forecast {
            points,
            peak,
            sigma: self.spread.sigma,
            slope_per_hour: if self.log {
                self.slope * (here + self.offset)
            } else {
                self.slope
            },
            daily: self.daily.is_some(),
            weekly: self.weekly.is_some(),
            cycle: self.cycle(),
            multiplicative: self.log,
            level: if self.log { level.exp() } else { level },
        }
    }
}

/// Fits `history` and forecasts `[now, now + horizon]` (the level from its own last hour).
pub fn forecast(
    history: &[Sample],
    now: DateTime<Utc>,
    horizon: Duration,
    bucket: Duration,
    confidence: f64,
) -> Option<Forecast> {
    Some(Model::fit(history, bucket, confidence)?.forecast(history, now, horizon))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    #[test]
    fn the_weekday_by_arithmetic_is_the_calendar_s() {
        for t in (-400 * DAY..400 * DAY).step_by(3_607) {
            let d = DateTime::from_timestamp(t, 0).unwrap();
            assert_eq!(weekday(t), d.weekday().num_days_from_monday() as usize, "{d}");
        }
    }

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

    #[test]
    fn one_burst_does_not_widen_the_bound_of_every_day_after_it() {
        // Two weeks of 1000 ± 5 % (alternating), and one burst: ten times the load for ten
        // minutes at noon, once. Tomorrow noon's 90 % bound is read from what that quarter
        // hour did on the other days (and the day's profile, a mean, moves by the burst's share
        // of that quarter hour: about 10 %): a normal bound from the variance, which the burst
        // makes, would ask for about twice the load.
        let noon = 1_767_225_600 + 3 * DAY + 12 * 3600;
        let h = series(14, |t| {
            let base = 1000.0 + if t % 600 == 0 { 50.0 } else { -50.0 };
            if (noon..noon + 600).contains(&t) {
                10.0 * base
            } else {
                base
            }
        });
        let f = forecast(
            &h,
            h.last().unwrap().timestamp + TimeDelta::hours(12),
            Duration::from_secs(900),
            Duration::from_secs(900),
            0.9,
        )
        .unwrap();
        assert!(f.peak > 1040.0 && f.peak < 1300.0, "{}", f.peak);
    }

    #[test]
    fn the_bound_is_the_quantile_of_what_the_periods_did() {
        // Shuffled: the order statistics are selected, whatever the order.
        let values = [3.0, 0.0, 4.0, 1.0, 2.0];
        assert_eq!(quantile(&mut values.clone(), 0.5), 2.0);
        assert_eq!(quantile(&mut values.clone(), 0.9), 3.6);
        assert_eq!(quantile(&mut values.clone(), 1.0), 4.0);
        assert_eq!(quantile(&mut values.clone(), 0.0), 0.0);
        assert_eq!(quantile(&mut [], 0.9), 0.0);
    }

    #[test]
    fn a_quiet_day_scales_the_learned_shape_by_its_current_level() {
        // Two days of a shape with a 09:00 surge, then a day at 60 % of it: by 08:30 the last
        // hour says "60 %", and the 09:00 surge is forecast at 60 % too.
        let shape = |t: i64| {
            let h = (t.rem_euclid(DAY)) as f64 / 3600.0;
            100.0
                + 50.0 * (h / 24.0 * std::f64::consts::TAU).sin().abs()
                + if (9.0..10.0).contains(&h) { 300.0 } else { 0.0 }
        };
        let mut h = series(2, shape);
        let day3 = h.last().unwrap().timestamp + TimeDelta::minutes(5);
        let mut t = day3;
        while t < day3 + TimeDelta::minutes(8 * 60 + 30) {
            h.push(Sample {
                timestamp: t,
                value: 0.6 * shape(t.timestamp()),
            });
            t += TimeDelta::minutes(5);
        }
        let now = h.last().unwrap().timestamp; // 08:25
        let f = forecast(&h, now, Duration::from_secs(3600), Duration::from_secs(300), 0.8).unwrap();
        assert!(f.multiplicative, "{f:?}");
        // Relative to the fit, which already took in part of this morning: below the usual.
        assert!(f.level < 0.9, "level {}", f.level);
        let surge = f
            .points
            .iter()
            .find(|(t, _)| t.timestamp().rem_euclid(DAY) == 9 * 3600)
            .unwrap()
            .1;
        let want = 0.6 * shape(day3.timestamp() + 9 * 3600);
        assert!((surge - want).abs() < 0.1 * want, "surge {surge} vs {want}");
        assert!(f.peak >= want, "the bound covers the surge: {} vs {want}", f.peak);
    }
}

#[cfg(test)]
mod cycle_tests {
    use super::*;

    fn minutes(n: i64, f: impl Fn(i64) -> f64) -> Vec<Sample> {
        let start = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        (0..n)
            .map(|k| Sample {
                timestamp: start + TimeDelta::minutes(k),
                value: f(k),
            })
            .collect()
    }

    /// Deterministic noise in [-1, 1] (xorshift, so without a period of its own).
    fn noise(k: i64) -> f64 {
        let mut x = (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    #[test]
    fn a_herd_every_20_minutes_is_found_and_forecast_before_it_comes() {
        // 4 hours: 80 requests, a jump to 320 every 20 minutes decaying back, ±3 % noise.
        let h = minutes(240, |k| {
            (320.0 - 240.0 * ((k % 20) as f64 / 20.0)) * (1.0 + 0.03 * noise(k))
        });
        let m = Model::fit(&h, Duration::from_secs(300), 0.8).unwrap();
        assert_eq!(m.cycle(), Some(Duration::from_secs(1200)));
        // Two minutes before the next jump, the forecast over the next 3 minutes sees it.
        let now = h[0].timestamp + TimeDelta::minutes(258);
        let f = m.forecast(&h, now, Duration::from_secs(180));
        assert!(f.peak > 280.0, "{f:?}");
        // Right after the jump has decayed, it does not expect one.
        let f = m.forecast(
            &h,
            h[0].timestamp + TimeDelta::minutes(250),
            Duration::from_secs(180),
        );
        assert!(f.peak < 250.0, "{f:?}");
    }

    /// Every minute for `n` minutes: a level of 1000 with bursts of 3 to 8 times it, 10 to 40
    /// minutes long, at times of day that differ from day to day (news, a crawler).
    fn bursty(n: i64) -> Vec<Sample> {
        minutes(n, |k| {
            let t = 60 * k;
            let slot = t / 1800;
            let burst = noise(slot) > 0.7;
            let len = 600 + (noise(slot + 7).abs() * 1800.0) as i64;
            let factor = 3.0 + 5.0 * noise(slot + 13).abs();
            if burst && t % 1800 < len {
                1000.0 * factor
            } else {
                1000.0 + 100.0 * noise(t)
            }
        })
    }

    /// A daily curve peaking at 14:00, with noise.
    fn day_curve(k: i64) -> f64 {
        let h = (60 * k).rem_euclid(DAY) as f64 / 3600.0;
        2000.0 - 1000.0 * ((h - 2.0) / 24.0 * std::f64::consts::TAU).cos() + 150.0 * noise(k)
    }

    #[test]
    fn a_daily_shape_is_judged_worth_foreseeing_and_bursts_are_not() {
        let bucket = Duration::from_secs(300);
        let daily = Model::fit(&minutes(6 * 1440, day_curve), bucket, 0.9).unwrap();
        let skill = daily.skill().unwrap();
        assert!(skill >= MIN_SKILL && daily.foresees(), "daily skill {skill}");
        let bursts = Model::fit(&bursty(6 * 1440), bucket, 0.9).unwrap();
        let skill = bursts.skill().unwrap();
        assert!(skill < MIN_SKILL && !bursts.foresees(), "bursts' skill {skill}");
        // Kept with the choice: a fit as chosen carries the judgement.
        let again = Model::fit_as(&bursty(6 * 1440), bucket, Some(bursts.choice()), 0.9).unwrap();
        assert!(!again.foresees());
    }

    #[test]
    fn after_its_first_day_a_pattern_is_judged_where_what_follows_can_show_it() {
        let bucket = Duration::from_secs(300);
        // Under a day and a quarter, nothing past the first day to judge on.
        for h in [minutes(1440 + 300, day_curve), bursty(1440 + 300)] {
            let m = Model::fit(&h, bucket, 0.9).unwrap();
            assert_eq!(m.skill(), None);
            assert!(m.foresees());
        }
        // A day and three quarters: fitted on 1.31 days, judged on 07:30 to 18:00, the peak in it.
        let m = Model::fit(&minutes(1440 * 7 / 4, day_curve), bucket, 0.9).unwrap();
        assert!(m.skill().is_some_and(|s| s >= MIN_SKILL), "{:?}", m.skill());
        // A day and 8 hours: what follows the first day is its night, without the 14:00 peak:
        // unjudged.
        let m = Model::fit(&minutes(1440 + 480, day_curve), bucket, 0.9).unwrap();
        assert_eq!(m.skill(), None);
        // Bursts at other times of day: judged no better than the level once what follows the
        // first day holds the hour of its biggest, unjudged before.
        let skills: Vec<Option<f64>> = (30..48)
            .map(|h| Model::fit(&bursty(60 * h), bucket, 0.9).unwrap().skill())
            .collect();
        assert!(skills.iter().flatten().all(|s| *s < MIN_SKILL), "{skills:?}");
        assert!(skills.iter().flatten().count() >= 3, "{skills:?}");
    }

    #[test]
    fn noise_and_a_ramp_have_no_cycle() {
        let noisy = minutes(240, |k| 200.0 * (1.0 + 0.1 * noise(k)));
        assert_eq!(
            Model::fit(&noisy, Duration::from_secs(300), 0.8).unwrap().cycle(),
            None
        );
        let ramp = minutes(240, |k| 50.0 + k as f64 + 5.0 * noise(k));
        assert_eq!(
            Model::fit(&ramp, Duration::from_secs(300), 0.8).unwrap().cycle(),
            None
        );
        // Too short a history to see three cycles of anything longer than 20 minutes.
        let short = minutes(50, |k| if k % 30 < 5 { 300.0 } else { 100.0 });
        assert_eq!(
            Model::fit(&short, Duration::from_secs(300), 0.8).unwrap().cycle(),
            None
        );
    }
}
