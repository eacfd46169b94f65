//! What a rule reads and what it answers: the contract between the rule kinds
//! ([`crate::policy`]) and the engine ([`crate::evaluate::engine`]). Both depend on this module;
//! the kinds never depend on the engine, and the engine reaches a kind only through the
//! [`crate::policy::Policy`] trait.
//!
//! A metric is read as *slots*: the complete periods ending at the series' `complete_until`. A
//! slot without a datapoint is missing, whether CloudWatch skipped it or the metric went stale;
//! what happens then is the policy's missing-data behaviour, applied by the engine.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, TimeDelta, Timelike, Utc};

use serde::{Deserialize, Serialize};

use crate::model::{Sample, Series, ServiceKey, Snapshot};

/// The datapoints of one metric as one evaluation sees them.
#[derive(Debug, Clone, Copy)]
pub struct MetricData<'a> {
    /// Oldest first, one per period start.
    pub samples: &'a [Sample],
    pub period_secs: i64,
    /// Complete periods start before this.
    pub complete_until: DateTime<Utc>,
    /// Load per task: a rule reads it over the tasks that were running in each period.
    pub per_task: bool,
    /// A long window of the metric (days, read less often than `samples`), for forecasts.
    pub history: Option<&'a [Sample]>,
}

/// The metrics of one target, by id. A handful per target, built every tick for every
/// target: a vector kept in order, not a tree of nodes.
#[derive(Debug, Clone, Default)]
pub struct MetricSet<'a> {
    entries: Vec<(&'a str, MetricData<'a>)>,
}

impl<'a> MetricSet<'a> {
    pub fn new() -> Self {
        MetricSet::default()
    }

    /// Metrics that share a period and an end of complete periods (as collected together).
    pub fn uniform(
        series: impl IntoIterator<Item = (&'a str, &'a [Sample])>,
        period_secs: i64,
        complete_until: DateTime<Utc>,
    ) -> Self {
        let series = series.into_iter();
        let mut set = MetricSet {
            entries: Vec::with_capacity(series.size_hint().0),
        };
        for (id, samples) in series {
            set.insert(
                id,
                MetricData {
                    samples,
                    period_secs,
                    complete_until,
                    per_task: false,
                    history: None,
                },
            );
        }
        set
    }

    /// The metrics of one service in a collected snapshot, as the engine reads them.
    pub fn of_service(snapshot: &'a Snapshot, key: &'a ServiceKey) -> Self {
        MetricSet::of_series(snapshot.series_of(key))
    }

    /// The metrics of these series (one service's, as collected).
    pub fn of_series(series: impl IntoIterator<Item = &'a Series>) -> Self {
        let mut set = MetricSet::new();
        for s in series {
            set.insert(
                &s.id,
                MetricData {
                    samples: &s.samples,
                    period_secs: i64::try_from(s.period_secs).unwrap_or(60),
                    complete_until: s.complete_until,
                    per_task: s.per_task,
                    history: s.history.as_ref().map(|h| h.as_slice()),
                },
            );
        }
        set
    }

    /// Where `id` is, or where it would go.
    fn position(&self, id: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (*k).cmp(id))
    }

    pub fn insert(&mut self, id: &'a str, data: MetricData<'a>) {
        match self.position(id) {
            Ok(i) => self.entries[i].1 = data,
            Err(i) => self.entries.insert(i, (id, data)),
        }
    }

    /// Marks these metrics as per-task loads (back-tests, where no config says so).
    pub fn mark_per_task(&mut self, ids: &[String]) {
        for (id, d) in self.entries.iter_mut() {
            d.per_task = ids.iter().any(|p| p == id);
        }
    }

    pub fn get(&self, id: &str) -> Option<&MetricData<'a>> {
        // A target reads a handful of metrics: equality, which compares lengths before bytes,
        // finds one with fewer comparisons of bytes than the ordered search.
        if self.entries.len() <= 8 {
            return self.entries.iter().find(|(k, _)| *k == id).map(|(_, d)| d);
        }
        self.position(id).ok().map(|i| &self.entries[i].1)
    }

    /// The ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &&'a str> {
        self.entries.iter().map(|(k, _)| k)
    }
}

/// A metric as a rule reads it: values per complete period, newest last; with `assume` set,
/// missing periods read as that value (and the evaluation input remembers that it happened).
#[derive(Debug, Clone, Copy)]
pub struct MetricView<'a> {
    pub id: &'a str,
    data: Option<MetricData<'a>>,
    assume: Option<f64>,
    assumed: &'a Cell<bool>,
}

impl<'a> MetricView<'a> {
    pub fn new(
        id: &'a str,
        data: Option<MetricData<'a>>,
        assume: Option<f64>,
        assumed: &'a Cell<bool>,
    ) -> Self {
        MetricView {
            id,
            data,
            assume,
            assumed,
        }
    }

    pub fn period_secs(&self) -> Option<i64> {
        self.data.map(|d| d.period_secs)
    }

    /// Whether it is a load per task.
    pub fn per_task(&self) -> bool {
        self.data.is_some_and(|d| d.per_task)
    }

    /// The values of the last `n` complete periods, oldest first, skipping periods that start
    /// before `not_before` (warm-up). `None` when a period in range has no value and nothing is
    /// assumed; fewer than `n` values when warm-up excluded some.
    pub fn window(&self, n: usize, not_before: Option<DateTime<Utc>>) -> Option<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        self.each_slot(n, not_before, |_, v| out.push(v))?;
        Some(out)
    }

    /// [`MetricView::window`]'s values handed to `f`, oldest first, without a vector of them:
    /// `None` where `window` gives `None`, else how many there were.
    pub fn each_value(&self, n: usize, mut f: impl FnMut(f64)) -> Option<usize> {
        let mut count = 0;
        self.each_slot(n, None, |_, v| {
            count += 1;
            f(v);
        })?;
        Some(count)
    }

    /// [`MetricView::window`] with each value's period start.
    pub fn slots(&self, n: usize, not_before: Option<DateTime<Utc>>) -> Option<Vec<(DateTime<Utc>, f64)>> {
        let mut out = Vec::with_capacity(n);
        self.each_slot(n, not_before, |t, v| out.push((t, v)))?;
        Some(out)
    }

    /// Hands each of the last `n` complete periods from `not_before` on to `f`, oldest first;
    /// `None` at the first period in range without a value when nothing is assumed.
    fn each_slot(
        &self,
        n: usize,
        not_before: Option<DateTime<Utc>>,
        mut f: impl FnMut(DateTime<Utc>, f64),
    ) -> Option<()> {
        let Some(d) = self.data else {
            let v = self.assume?;
            self.assumed.set(true);
            (0..n).for_each(|_| f(DateTime::UNIX_EPOCH, v));
            return Some(());
        };
        let p = d.period_secs.max(1);
        let n_ = i64::try_from(n).unwrap_or(i64::MAX);
        // Where the oldest period is, then a walk forward (the samples are in time order): the
        // window's datapoints are read once, in order, each one's instant worked out once.
        let samples = d.samples;
        let mut days = Days::of(d.complete_until);
        let oldest = days.instant(d.complete_until).plus(-p.saturating_mul(n_));
        let not_before = not_before.map(Instant::of);
        let mut i = first_at_or_after(samples, oldest, p, &mut days);
        let mut at = |i: usize| samples.get(i).map(|s| (days.instant(s.timestamp), s));
        let mut here = at(i);
        for k in 0..n_ {
            let start = oldest.plus(k * p);
            while here.is_some_and(|(t, _)| t < start) {
                i += 1;
                here = at(i);
            }
            if not_before.is_some_and(|nb| start < nb) {
                continue;
            }
            match here.filter(|(t, _)| *t == start) {
                Some((_, s)) => f(s.timestamp, s.value),
                None => {
                    let v = self.assume?;
                    self.assumed.set(true);
                    f(d.complete_until - TimeDelta::seconds(p * (n_ - k)), v);
                }
            }
        }
        Some(())
    }

    /// Every recent datapoint, oldest first; no filling.
    pub fn history(&self) -> &'a [Sample] {
        self.data.map_or(&[], |d| d.samples)
    }

    /// The long window read for forecasts, else the recent datapoints.
    pub fn long_history(&self) -> &'a [Sample] {
        self.data.map_or(&[], |d| d.history.unwrap_or(d.samples))
    }

    /// The start of the newest complete period.
    pub fn newest_slot(&self) -> Option<DateTime<Utc>> {
        self.data
            .map(|d| d.complete_until - TimeDelta::seconds(d.period_secs.max(1)))
    }
}

/// A time as whole seconds since the epoch and the nanoseconds past them, so walks over
/// datapoints (a rule's slots, the running counts under them, the noise guard's pairs) step and
/// compare in integers, where chrono's arithmetic works out the calendar each time.
/// Ordered as chrono orders times (a leap second's nanoseconds run past a billion in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instant(i64, u32);

impl Instant {
    pub(crate) fn of(t: DateTime<Utc>) -> Instant {
        Instant(t.timestamp(), t.timestamp_subsec_nanos())
    }

    pub(crate) fn plus(self, secs: i64) -> Instant {
        Instant(self.0.saturating_add(secs), self.1)
    }

    /// The nanoseconds from `earlier` to this time (negative when it is later).
    pub(crate) fn nanos_since(self, earlier: Instant) -> i128 {
        let secs = i128::from(self.0) - i128::from(earlier.0);
        secs * 1_000_000_000 + i128::from(self.1) - i128::from(earlier.1)
    }

    /// Whole milliseconds from `earlier`, cut toward zero as `TimeDelta::num_milliseconds` cuts.
    pub(crate) fn millis_since(self, earlier: Instant) -> i64 {
        whole(self.nanos_since(earlier), 1_000_000)
    }

    /// Whole seconds from `earlier`, cut toward zero as `TimeDelta::num_seconds` cuts.
    pub(crate) fn secs_since(self, earlier: Instant) -> i64 {
        whole(self.nanos_since(earlier), 1_000_000_000)
    }
}

/// The [`Instant`]s of times that mostly fall on one day, as a window's datapoints do: the
/// calendar (the days since the epoch) is worked out once for each day met, not for each time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Days {
    day: chrono::NaiveDate,
    /// The day's midnight, in seconds since the epoch.
    midnight: i64,
}

impl Days {
    pub(crate) fn of(t: DateTime<Utc>) -> Days {
        let naive = t.naive_utc();
        Days {
            day: naive.date(),
            midnight: t.timestamp() - i64::from(naive.time().num_seconds_from_midnight()),
        }
    }

    /// `Instant::of(t)`.
    pub(crate) fn instant(&mut self, t: DateTime<Utc>) -> Instant {
        let naive = t.naive_utc();
        if naive.date() != self.day {
            *self = Days::of(t);
        }
        let secs = self.midnight + i64::from(naive.time().num_seconds_from_midnight());
        Instant(secs, t.timestamp_subsec_nanos())
    }
}

/// `nanos` in whole units of `unit` nanoseconds, cut toward zero, within an `i64`; in 64-bit
/// arithmetic when it fits (any difference under 292 years), as 128-bit division is a call.
fn whole(nanos: i128, unit: i64) -> i64 {
    if let Ok(n) = i64::try_from(nanos) {
        return n / unit;
    }
    let n = nanos / i128::from(unit);
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// The index of the first sample at or after `t`. The samples are usually one a period up to
/// the newest: the index that spacing gives is checked (two reads near each other) before a
/// binary search (several reads far apart, each a cache miss on a fleet's worth of series).
fn first_at_or_after(samples: &[Sample], t: Instant, period_secs: i64, days: &mut Days) -> usize {
    let search = || samples.partition_point(|s| Instant::of(s.timestamp) < t);
    let Some(last) = samples.last() else {
        return 0;
    };
    let newest = days.instant(last.timestamp);
    let mut before_t = |s: &Sample| days.instant(s.timestamp) < t;
    if newest < t {
        return samples.len();
    }
    let after = usize::try_from((newest.0 - t.0) / period_secs.max(1)).unwrap_or(usize::MAX);
    let Some(guess) = samples.len().checked_sub(after.saturating_add(1)) else {
        return search();
    };
    let at = !before_t(&samples[guess]);
    let before = guess == 0 || before_t(&samples[guess - 1]);
    if at && before {
        guess
    } else {
        search()
    }
}

/// The running task counts a target was seen with, as change points (each count holds until
/// the next), so a per-task metric's period can be read over the tasks that served it: a task
/// that died, or one still starting, carried none of that period's load. A change seen between
/// two looks is placed midway between them; a scale-in the engine made is placed when it was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningHistory {
    points: VecDeque<(DateTime<Utc>, u32)>,
    /// The last look.
    #[serde(default)]
    seen: Option<DateTime<Utc>>,
}

/// How long counts are kept: longer than any rule's window of datapoints.
const RUNNING_KEPT: TimeDelta = TimeDelta::hours(3);

static NO_HISTORY: RunningHistory = RunningHistory {
    points: VecDeque::new(),
    seen: None,
};

impl RunningHistory {
    /// Records the count seen at `at` (later than every look before).
    pub fn observe(&mut self, at: DateTime<Utc>, running: u32) {
        if !self.changes_at(at, running) {
            self.seen = self.seen.max(Some(at));
            return;
        }
        let since = self.seen.map_or(at, |t| t + (at - t) / 2);
        self.seen = Some(at);
        self.set(since, running);
    }

    /// Whether a look at `at` seeing `running` adds a change point.
    fn changes_at(&self, at: DateTime<Utc>, running: u32) -> bool {
        self.seen.is_none_or(|t| t < at) && self.points.back().is_none_or(|(_, r)| *r != running)
    }

    /// The counts a decision made at `at` reads: this history with the look that came with it
    /// (`record` keeps it afterwards). Borrowed when that look changes no count, as on most
    /// ticks.
    pub fn with_look(&self, at: DateTime<Utc>, running: u32) -> std::borrow::Cow<'_, RunningHistory> {
        if !self.changes_at(at, running) {
            return std::borrow::Cow::Borrowed(self);
        }
        // Room for the look, so it is not a second allocation.
        let mut points = VecDeque::with_capacity(self.points.len() + 1);
        points.extend(self.points.iter().copied());
        let mut h = RunningHistory {
            points,
            seen: self.seen,
        };
        h.observe(at, running);
        std::borrow::Cow::Owned(h)
    }

    /// Records a change the engine itself made at `at` (a scale-in stops tasks at once).
    pub fn changed(&mut self, at: DateTime<Utc>, running: u32) {
        self.seen = Some(self.seen.map_or(at, |t| t.max(at)));
        self.set(at, running);
    }

    fn set(&mut self, at: DateTime<Utc>, running: u32) {
        if self.points.back().is_some_and(|(_, r)| *r == running) {
            return;
        }
        while self.points.back().is_some_and(|(t, _)| *t >= at) {
            self.points.pop_back();
        }
        self.points.push_back((at, running));
        // Keep the change point in force at the cutoff.
        let cutoff = at - RUNNING_KEPT;
        while self.points.get(1).is_some_and(|(t, _)| *t <= cutoff) {
            self.points.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The time-weighted mean count over `[start, end)`: before the first change point its
    /// count, after the last one its count. `None` when nothing was recorded.
    pub fn mean(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Option<f64> {
        self.mean_from(&mut 0, start, end - start)
    }

    /// [`RunningHistory::mean`] over `[start, start + len)`, from a cursor: `after` is where the
    /// last call found the first change point after its start. Windows read in time order (a
    /// rule's datapoints) move it forward a point or none at a time instead of searching the
    /// whole history for each.
    fn mean_from(&self, after: &mut usize, start: DateTime<Utc>, len: TimeDelta) -> Option<f64> {
        let first = self.points.front()?;
        let behind = |i: usize| self.points.get(i).is_some_and(|(t, _)| *t <= start);
        let ahead = |i: usize| i > 0 && self.points.get(i - 1).is_some_and(|(t, _)| *t > start);
        if ahead(*after) || self.points.len() < *after {
            *after = self.points.partition_point(|(t, _)| *t <= start);
        }
        while behind(*after) {
            *after += 1;
        }
        let mut count = after.checked_sub(1).map_or(first.1, |i| self.points[i].1);
        if len <= TimeDelta::zero() {
            return Some(f64::from(count));
        }
        // In nanoseconds from `start`, in integers: chrono's date arithmetic for every window
        // of every rule's datapoints was most of this reading's cost.
        let mut days = Days::of(start);
        let origin = days.instant(start);
        let (end, span) = (
            len.num_nanoseconds().map_or(i128::MAX, i128::from),
            len.num_milliseconds(),
        );
        let millis = |ns: i128| whole(ns, 1_000_000);
        let (mut total, mut from) = (0.0, 0);
        for &(t, r) in self.points.range(*after..) {
            let at = days.instant(t).nanos_since(origin);
            if at >= end {
                break;
            }
            total += millis(at - from) as f64 * f64::from(count);
            from = at;
            count = r;
        }
        let last = if from == 0 { span } else { millis(end - from) };
        total += last as f64 * f64::from(count);
        Some(total / span as f64)
    }
}

/// What a rule recommends for its target.
#[derive(Debug, Clone, PartialEq)]
pub enum Recommendation {
    /// This many tasks (or instances); equal to the current count means "hold".
    Wants {
        count: u32,
        reason: String,
        /// Metric values it used (id, value).
        inputs: Vec<(std::sync::Arc<str>, f64)>,
    },
    /// No opinion this tick (outside its window, scale-in disabled, ...).
    Abstain { reason: String },
    /// A metric it needs has no value for the periods it needs.
    Missing { metric: String, reason: String },
    /// It could not be evaluated (an external plugin failed); counted as a hold.
    Error { reason: String },
}

/// What a rule sees when it is evaluated.
pub struct EvalInput<'a> {
    /// The rule being evaluated.
    pub rule: &'a str,
    pub now: DateTime<Utc>,
    /// The count in force: the service's desired count (or the group's desired capacity).
    pub current: u32,
    pub running: u32,
    pub pending: u32,
    /// The bounds in force.
    pub min: u32,
    pub max: u32,
    /// When the target last scaled out: datapoints from before `last_scale_out + warmup`
    /// include tasks still warming up.
    pub last_scale_out: Option<DateTime<Utc>>,
    /// When the target last scaled in: a trend across it mixes the load with the change of
    /// count, so projections do not reach back past it.
    pub last_scale_in: Option<DateTime<Utc>>,
    /// The running counts seen at earlier ticks.
    pub served: &'a RunningHistory,
    /// Whether a counted predictive rule of the same target forecasts this tick from a learned
    /// daily pattern (a rule may then keep less room for what it cannot foresee).
    pub foreseen: bool,
    pub(crate) metrics: &'a MetricSet<'a>,
    pub(crate) assume: &'a dyn Fn(&str) -> Option<f64>,
    /// Answers of external plugins, by rule name, fetched before evaluation.
    pub externals: &'a BTreeMap<String, Result<Answer, String>>,
    /// Set when a view filled a missing period with an assumed value.
    assumed: Cell<bool>,
}

impl<'a> EvalInput<'a> {
    pub fn new(
        now: DateTime<Utc>,
        current: u32,
        metrics: &'a MetricSet<'a>,
        assume: &'a dyn Fn(&str) -> Option<f64>,
        externals: &'a BTreeMap<String, Result<Answer, String>>,
    ) -> Self {
        EvalInput {
            rule: "",
            now,
            current,
            running: current,
            pending: 0,
            min: 0,
            max: u32::MAX,
            last_scale_out: None,
            last_scale_in: None,
            served: &NO_HISTORY,
            foreseen: false,
            metrics,
            assume,
            externals,
            assumed: Cell::new(false),
        }
    }

    /// The metric `id` as a rule reads it.
    pub fn metric<'s>(&'s self, id: &'s str) -> MetricView<'s> {
        MetricView::new(
            id,
            self.metrics.get(id).copied(),
            (self.assume)(id),
            &self.assumed,
        )
    }

    /// The mean number of tasks running over `[start, start + period)`: the tasks that served a
    /// per-task metric's period. Without a recorded count, the count running now. Periods read
    /// in time order share `cursor` (start it at 0), so each finds its counts where the last
    /// one left off (see [`RunningHistory::mean`]).
    pub fn served_from(&self, cursor: &mut usize, start: DateTime<Utc>, period_secs: i64) -> f64 {
        let len = TimeDelta::seconds(period_secs.max(1));
        self.served
            .mean_from(cursor, start, len)
            .unwrap_or(f64::from(self.running))
    }

    /// Whether any metric read so far had a gap filled with an assumed value; a rule's scale-in
    /// never rests on one.
    pub fn used_assumed(&self) -> bool {
        self.assumed.get()
    }
}

/// A number for people in reasons: at most two decimals, no trailing zeros.
pub fn num(v: f64) -> crate::format::Short {
    crate::format::Short(v, 2)
}

/// What the engine needs to know about a target this tick.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub now: DateTime<Utc>,
    /// The count in force (service desired count, group desired capacity).
    pub current: u32,
    pub running: u32,
    pub pending: u32,
    pub metrics: &'a MetricSet<'a>,
}

impl<'a> Observation<'a> {
    /// A target whose tasks all run (as in back-tests): `running = current`, nothing pending.
    pub fn settled(now: DateTime<Utc>, current: u32, metrics: &'a MetricSet<'a>) -> Self {
        Observation {
            now,
            current,
            running: current,
            pending: 0,
            metrics,
        }
    }
}

/// A plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub desired: u32,
    pub reason: String,
}

/// A scheduled window in force: its bounds override the policy's while it lasts, and its
/// `desired` is applied once when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveWindow<'a> {
    pub name: &'a str,
    pub started: DateTime<Utc>,
    pub ends: DateTime<Utc>,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub desired: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_change_seen_between_two_looks_is_placed_midway_and_a_scale_in_when_made() {
        let mut h = RunningHistory::default();
        assert_eq!(h.mean(t(0), t(60)), None);
        h.observe(t(0), 10);
        h.observe(t(30), 10);
        // A task died somewhere between the looks at 30 s and 60 s: counted from 45 s.
        h.observe(t(60), 9);
        assert_eq!(h.mean(t(0), t(60)), Some((45.0 * 10.0 + 15.0 * 9.0) / 60.0));
        // The engine scaled in at 90 s: 4 from then, not from midway to the next look.
        h.changed(t(90), 4);
        h.observe(t(105), 4);
        assert_eq!(h.mean(t(90), t(120)), Some(4.0));
        assert_eq!(h.mean(t(60), t(90)), Some(9.0));
        // Before the first look: the first count; after the last: the last.
        assert_eq!(h.mean(t(-60), t(-30)), Some(10.0));
        assert_eq!(h.mean(t(500), t(600)), Some(4.0));
        // A look no later than the last is ignored.
        h.observe(t(100), 20);
        assert_eq!(h.mean(t(95), t(105)), Some(4.0));
    }

    #[test]
    fn counts_are_kept_for_hours_not_forever() {
        let mut h = RunningHistory::default();
        for k in 0..10_000 {
            h.observe(t(k * 15), (k % 7) as u32);
        }
        // 3 hours of changes at most (one per look here), plus the one in force at the cutoff.
        assert!(h.points.len() <= 3 * 3600 / 15 + 1, "{}", h.points.len());
        assert!(h.mean(t(10_000 * 15 - 60), t(10_000 * 15)).is_some());
    }

    /// The slots as chrono's own arithmetic finds them: each period start stepped from the
    /// oldest, the first sample at or after it, kept when it starts exactly there.
    fn slots_by_chrono(
        d: &MetricData<'_>,
        n: usize,
        not_before: Option<DateTime<Utc>>,
    ) -> Vec<(DateTime<Utc>, Option<f64>)> {
        let period = TimeDelta::seconds(d.period_secs.max(1));
        let oldest = d.complete_until - period * n as i32;
        (0..n as i32)
            .map(|k| oldest + period * k)
            .filter(|start| not_before.is_none_or(|nb| *start >= nb))
            .map(|start| {
                let at = d.samples.iter().find(|s| s.timestamp >= start);
                (start, at.filter(|s| s.timestamp == start).map(|s| s.value))
            })
            .collect()
    }

    /// The mean by a scan of every change point: what the cursor must find.
    fn mean_by_scan(h: &RunningHistory, start: DateTime<Utc>, end: DateTime<Utc>) -> Option<f64> {
        let first = h.points.front()?;
        let at = |t| {
            h.points
                .iter()
                .rev()
                .find(|(p, _)| *p <= t)
                .map_or(first.1, |(_, r)| *r)
        };
        if end <= start {
            return Some(f64::from(at(start)));
        }
        let (mut total, mut from, mut count) = (0.0, start, at(start));
        for &(t, r) in h.points.iter().filter(|(t, _)| *t > start && *t < end) {
            total += (t - from).num_milliseconds() as f64 * f64::from(count);
            (from, count) = (t, r);
        }
        total += (end - from).num_milliseconds() as f64 * f64::from(count);
        Some(total / (end - start).num_milliseconds() as f64)
    }

    proptest::proptest! {
        /// One cursor carried over windows in any order (forward as a rule reads its
        /// datapoints, back, repeated, empty, far outside the history) finds what a scan of
        /// every point finds.
        #[test]
        fn a_cursor_finds_what_a_scan_finds(
            looks in proptest::collection::vec((1i64..90, 0u32..6, proptest::bool::ANY), 0..40),
            windows in proptest::collection::vec((-100i64..3000, 0i64..200), 1..60),
        ) {
            let mut h = RunningHistory::default();
            let mut now = 0;
            for (gap, running, made) in looks {
                now += gap;
                if made { h.changed(t(now), running) } else { h.observe(t(now), running) }
            }
            let mut cursor = 0;
            for (start, len) in windows {
                let (a, b) = (t(start), t(start + len));
                proptest::prop_assert_eq!(h.mean_from(&mut cursor, a, b - a), mean_by_scan(&h, a, b));
            }
        }
    }

    proptest::proptest! {
        /// The differences worked out in integers cut as chrono's do, either way round and
        /// with fractions of a second on both sides.
        #[test]
        fn integer_differences_are_chronos(
            a in -400_000_000i64..400_000_000, an in 0u32..1_000_000_000,
            b in -400_000_000i64..400_000_000, bn in 0u32..1_000_000_000,
            step in -100_000i64..100_000,
        ) {
            let at = |s: i64, n: u32| DateTime::from_timestamp(1_800_000_000 + s, n).unwrap();
            let (x, y) = (at(a, an), at(b, bn));
            let (ix, iy) = (Instant::of(x), Instant::of(y));
            proptest::prop_assert_eq!(ix.millis_since(iy), (x - y).num_milliseconds());
            proptest::prop_assert_eq!(ix.secs_since(iy), (x - y).num_seconds());
            proptest::prop_assert_eq!(ix.plus(step), Instant::of(x + TimeDelta::seconds(step)));
            proptest::prop_assert_eq!(ix < iy, x < y);
            let mut days = Days::of(y);
            proptest::prop_assert_eq!((days.instant(x), days.instant(y), days.instant(x)), (ix, iy, ix));
        }
    }

    proptest::proptest! {
        /// The walk in whole seconds finds what chrono's stepping finds, with series whose
        /// times are off the period grid by whole seconds or by fractions of one, with gaps, and
        /// with a warm-up cut anywhere.
        #[test]
        fn the_integer_walk_reads_the_slots_chrono_reads(
            steps in proptest::collection::vec((1i64..3, 0u32..3), 0..40),
            period in proptest::sample::select(vec![1i64, 10, 60, 300]),
            n in 1usize..20,
            end_slots in 0i64..45,
            end_nanos in proptest::sample::select(vec![0u32, 500_000_000]),
            cut in proptest::option::of(0i64..45),
        ) {
            let base = 1_800_000_000i64;
            let mut slot = 0i64;
            let samples: Vec<Sample> = steps
                .iter()
                .enumerate()
                .map(|(i, (gap, off))| {
                    slot += gap;
                    // Most on the grid; some a second or half a second off it.
                    let (secs, nanos) = match off {
                        0 => (0, 0),
                        1 => (1, 0),
                        _ => (0, 500_000_000),
                    };
                    let t = DateTime::from_timestamp(base + slot * period + secs, nanos).unwrap();
                    Sample { timestamp: t, value: i as f64 }
                })
                .collect();
            let d = MetricData {
                samples: &samples,
                period_secs: period,
                complete_until: DateTime::from_timestamp(base + end_slots * period, end_nanos).unwrap(),
                per_task: false,
                history: None,
            };
            let not_before = cut.map(|c| DateTime::from_timestamp(base + c * period, 0).unwrap());
            let want = slots_by_chrono(&d, n, not_before);
            let flag = Cell::new(false);
            let got = MetricView::new("m", Some(d), None, &flag).slots(n, not_before);
            let complete: Option<Vec<(DateTime<Utc>, f64)>> =
                want.iter().map(|(t, v)| v.map(|v| (*t, v))).collect();
            proptest::prop_assert_eq!(got, complete);
            let filled = MetricView::new("m", Some(d), Some(-1.0), &flag).slots(n, not_before);
            let assumed: Vec<(DateTime<Utc>, f64)> = want.iter().map(|(t, v)| (*t, v.unwrap_or(-1.0))).collect();
            proptest::prop_assert_eq!(filled, Some(assumed));
        }
    }

    proptest::proptest! {
        /// The index the spacing gives, checked, is the binary search's, on series with gaps,
        /// irregular steps, and times before, inside and after them.
        #[test]
        fn the_spaced_guess_finds_what_the_binary_search_finds(
            steps in proptest::collection::vec(1i64..200, 0..80),
            at in -100i64..20_000,
            period in 1i64..120,
        ) {
            let mut t = 1_000i64;
            let samples: Vec<Sample> = steps
                .iter()
                .map(|s| {
                    t += s;
                    Sample { timestamp: DateTime::from_timestamp(t, 0).unwrap(), value: 0.0 }
                })
                .collect();
            let at = DateTime::from_timestamp(1_000 + at, 0).unwrap();
            let want = samples.partition_point(|s| s.timestamp < at);
            let mut days = Days::of(at);
            proptest::prop_assert_eq!(first_at_or_after(&samples, Instant::of(at), period, &mut days), want);
        }
    }

    #[test]
    fn a_leap_second_has_the_instant_chrono_gives_it() {
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .map(|t| t.and_utc())
            .unwrap();
        let mut days = Days::of(leap - TimeDelta::hours(1));
        assert_eq!(days.instant(leap), Instant::of(leap));
        assert!(days.instant(leap) < days.instant(leap + TimeDelta::milliseconds(600)));
    }
}
