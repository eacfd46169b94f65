//! Back-testing: replays a recorded trace through a policy, one engine tick per period, and
//! totals what would have happened.
//!
//! Open loop: the recorded load does not react to the simulated scaling, with one correction:
//! when the trace records the task count (`running`), per-task metrics (`--per-task`, by
//! default `cpu`, `memory`, `request_count_per_target`) are rescaled to the simulated count:
//! `value × recorded / simulated`, i.e. the same total load spread over more or fewer tasks.
//! The closed-loop variant (latency, a real cluster model) is the simulator's.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::trace::Trace;
use super::{decide, TargetState};
use crate::eval_io::{MetricData, MetricSet, Observation};
use crate::model::{Action, Decision, Sample, TargetKey};
use crate::policy::external::{fetch_answers, PluginRunner};
use crate::policy::TargetPolicy;

/// Metrics rescaled by default when the trace records the task count.
pub const DEFAULT_PER_TASK: &[&str] = &["cpu", "memory", "request_count_per_target"];

#[derive(Debug, Clone)]
pub struct Options {
    /// The count at the start; else the trace's first recorded count; else the policy's min.
    pub initial: Option<u32>,
    /// Metrics that are per-task averages.
    pub per_task: Vec<String>,
    /// How far back each tick sees, as the live worker's `collect.lookback`; a forecast rule
    /// also sees its own long window, as the worker reads it for that rule.
    pub lookback: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            initial: None,
            per_task: DEFAULT_PER_TASK.iter().map(|s| s.to_string()).collect(),
            lookback: crate::config::CollectSettings::default().lookback,
        }
    }
}

/// Time a target-tracking rule's metric spent above its target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AboveTarget {
    pub rule: String,
    pub metric: String,
    pub target: f64,
    pub minutes: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub steps: usize,
    pub minutes: f64,
    pub scale_outs: usize,
    pub scale_ins: usize,
    /// Σ count × period.
    pub task_hours: f64,
    pub peak_count: u32,
    pub lowest_count: u32,
    pub above_target: Vec<AboveTarget>,
}

/// What a tick sees of each metric: the recent window (the worker's lookback, or longer for a
/// metric a rule reads further back) and, for a metric a forecast rule reads, its long window.
struct Windows {
    recent: std::time::Duration,
    /// A metric a rule reads further back than the lookback ([`crate::policy::Policy::window`]),
    /// as the worker's lookback must then be: how far.
    wider: BTreeMap<String, std::time::Duration>,
    long: BTreeMap<String, TimeDelta>,
}

/// Where the window of complete periods ending at `until` starts, `lookback` long: the start of
/// the period holding `until - lookback`, as the collector plans its reads.
pub fn window_start(
    until: DateTime<Utc>,
    lookback: std::time::Duration,
    period: i64,
) -> Option<DateTime<Utc>> {
    let from = until.checked_sub_signed(TimeDelta::from_std(lookback).ok()?)?;
    let ts = from.timestamp();
    DateTime::from_timestamp(ts - ts.rem_euclid(period.max(1)), 0)
}

impl Windows {
    fn of(policy: &TargetPolicy, lookback: std::time::Duration) -> Self {
        let mut long: BTreeMap<String, TimeDelta> = BTreeMap::new();
        let mut wider: BTreeMap<String, std::time::Duration> = BTreeMap::new();
        for (metric, window) in policy.rules.iter().filter_map(|r| r.spec.policy().window()) {
            let e = wider.entry(metric.to_string()).or_insert(lookback);
            *e = (*e).max(window);
        }
        for (metric, window, _) in policy.rules.iter().filter_map(|r| r.spec.policy().history()) {
            let w = TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
            let e = long.entry(metric.to_string()).or_insert(w);
            *e = (*e).max(w);
        }
        Windows {
            recent: lookback,
            wider,
            long,
        }
    }
}

impl Windows {
    fn recent_of(&self, metric: &str) -> std::time::Duration {
        self.wider.get(metric).copied().unwrap_or(self.recent)
    }
}

/// The samples at or after `from` (the list is in time order): a slice, found by bisection.
fn since(list: &[Sample], from: Option<DateTime<Utc>>) -> &[Sample] {
    match from {
        Some(from) => &list[list.partition_point(|s| s.timestamp < from)..],
        None => list,
    }
}

/// The metric set one tick ending at `now` sees, within the windows.
fn visible<'a>(
    seen: &'a BTreeMap<String, Vec<Sample>>,
    windows: &Windows,
    period: i64,
    now: DateTime<Utc>,
    per_task: &[String],
) -> MetricSet<'a> {
    let mut set = MetricSet::new();
    for (id, list) in seen {
        let long = windows
            .long
            .get(id)
            .map(|w| since(list, now.checked_sub_signed(*w)));
        set.insert(
            id,
            MetricData {
                samples: since(list, window_start(now, windows.recent_of(id), period)),
                period_secs: period,
                complete_until: now,
                per_task: per_task.iter().any(|p| p == id),
                history: long,
            },
        );
    }
    set
}

/// One target's replay: its counts tick by tick (each tick's whole decision went to the
/// caller as it was made, so a long trace is not held in memory twice).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub target: TargetKey,
    pub initial: u32,
    pub period_secs: i64,
    #[serde(skip)]
    pub ticks: Vec<Tick>,
    /// The metric values each tick saw (rescaled where per-task), by metric id: (period start, value).
    pub values: BTreeMap<String, Vec<(DateTime<Utc>, f64)>>,
    pub totals: Totals,
}

/// What a tick set: when, the count, and the action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    pub at: DateTime<Utc>,
    pub desired: u32,
    pub action: Action,
}

/// The datapoints one tick took in, by metric id (for the caller's table).
pub struct TickValues<'a> {
    seen: &'a BTreeMap<String, Vec<Sample>>,
    slot: DateTime<Utc>,
}

impl TickValues<'_> {
    /// The value of `metric` for this tick's period, if the trace has one.
    pub fn get(&self, metric: &str) -> Option<f64> {
        let last = self.seen.get(metric)?.last()?;
        (last.timestamp == self.slot).then_some(last.value)
    }
}

/// The count a replay starts at: the one given, else the trace's first recorded count, else the
/// policy's min.
pub fn initial_count(policy: &TargetPolicy, trace: &Trace, opts: &Options) -> u32 {
    let first_recorded = trace.recorded_count.values().next().copied();
    opts.initial.or(first_recorded).unwrap_or(policy.min)
}

/// Replays `trace` through one target policy, handing each tick's decision to `each` as it is
/// made. Each tick sees the lookback the worker would (and a forecast rule its own window), so
/// a tick costs the same at the first row and the millionth.
pub async fn run<F>(
    policy: &TargetPolicy,
    trace: &Trace,
    opts: &Options,
    runner: &PluginRunner,
    mut each: F,
) -> Report
where
    F: FnMut(Decision, &TickValues<'_>),
{
    let period = trace.period_secs.max(1);
    let initial = initial_count(policy, trace, opts);
    let mut current = initial;
    let mut state = TargetState::default();
    let mut seen: BTreeMap<String, Vec<Sample>> =
        trace.series.keys().map(|k| (k.clone(), Vec::new())).collect();
    let windows = Windows::of(policy, opts.lookback);
    let mut ticks = Vec::with_capacity(trace.timestamps.len());
    // One tick per row: each period holds at most one row (rows are at least a period apart).
    for &t in &trace.timestamps {
        let end = t + TimeDelta::seconds(period);
        take_period(trace, opts, &mut seen, (t, end), current);
        let metrics = visible(&seen, &windows, period, end, &opts.per_task);
        let obs = Observation::settled(end, current, &metrics);
        let externals = fetch_answers(runner, policy, &obs).await;
        let d = decide(policy, &obs, &state, &externals);
        state.record(policy, &d, true);
        current = d.desired;
        ticks.push(Tick {
            at: d.at,
            desired: d.desired,
            action: d.action,
        });
        each(d, &TickValues { seen: &seen, slot: t });
    }
    let values: BTreeMap<String, Vec<(DateTime<Utc>, f64)>> = seen
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(id, v)| (id, v.into_iter().map(|s| (s.timestamp, s.value)).collect()))
        .collect();
    let totals = totals(policy, &ticks, &values, period);
    Report {
        target: policy.target.clone(),
        initial,
        period_secs: period,
        ticks,
        values,
        totals,
    }
}

/// Appends the datapoints of the period `[t, end)` to `seen`, rescaled to the simulated count
/// `current` where per-task and the trace recorded the count.
fn take_period(
    trace: &Trace,
    opts: &Options,
    seen: &mut BTreeMap<String, Vec<Sample>>,
    (t, end): (DateTime<Utc>, DateTime<Utc>),
    current: u32,
) {
    let recorded = trace.recorded_count.range(t..end).next().map(|(_, c)| *c);
    for (id, samples) in &trace.series {
        let Some(list) = seen.get_mut(id) else { continue };
        let next = list
            .last()
            .map_or(0, |l| samples.partition_point(|s| s.timestamp <= l.timestamp));
        let Some(s) = samples.get(next).filter(|s| s.timestamp < end) else {
            continue;
        };
        let mut value = s.value;
        if let Some(recorded) = recorded.filter(|_| current > 0 && opts.per_task.iter().any(|p| p == id)) {
            value = value * f64::from(recorded) / f64::from(current);
        }
        list.push(Sample { timestamp: t, value });
    }
}

fn totals(
    policy: &TargetPolicy,
    decisions: &[Tick],
    values: &BTreeMap<String, Vec<(DateTime<Utc>, f64)>>,
    period: i64,
) -> Totals {
    let hours = period as f64 / 3600.0;
    let above_target = policy
        .rules
        .iter()
        .filter_map(|r| {
            let (metric, target) = r.spec.policy().tracks()?;
            let above = values
                .get(metric)
                .map_or(0, |v| v.iter().filter(|(_, x)| *x > target).count());
            Some(AboveTarget {
                rule: r.name.to_string(),
                metric: metric.to_string(),
                target,
                minutes: above as f64 * period as f64 / 60.0,
            })
        })
        .collect();
    Totals {
        steps: decisions.len(),
        minutes: decisions.len() as f64 * period as f64 / 60.0,
        scale_outs: decisions.iter().filter(|d| d.action == Action::ScaleOut).count(),
        scale_ins: decisions.iter().filter(|d| d.action == Action::ScaleIn).count(),
        task_hours: decisions.iter().map(|d| f64::from(d.desired) * hours).sum(),
        peak_count: decisions.iter().map(|d| d.desired).max().unwrap_or(0),
        lowest_count: decisions.iter().map(|d| d.desired).min().unwrap_or(0),
        above_target,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::collect::{plan, ResolvedMetric};
    use crate::config::MetricSpec;
    use crate::model::ServiceKey;

    fn metric(period: u64) -> ResolvedMetric {
        ResolvedMetric {
            key: ServiceKey::new("c", "s"),
            spec: MetricSpec {
                id: "cpu".into(),
                namespace: "AWS/ECS".into(),
                metric_name: "CPUUtilization".into(),
                dimensions: BTreeMap::new(),
                stat: "Average".into(),
                period: Duration::from_secs(period),
                delay: Duration::ZERO,
                unit: None,
                unit_filter: false,
                per_task: true,
                prometheus: None,
            }
            .into(),
        }
    }

    /// A replay's tick sees the window the live worker's collector reads: from the start of the
    /// period holding `until - lookback` to `until`, for lookbacks on and off the period's grid.
    #[test]
    fn a_tick_sees_the_window_the_collector_reads() {
        let t0: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        for period in [20u64, 60, 300] {
            for lookback in ["15m", "10m30s", "1h", "59s"] {
                let lookback = humantime::parse_duration(lookback).unwrap();
                for k in 0..7 {
                    let until = t0 + TimeDelta::seconds(k * period as i64);
                    let planned = plan(until, vec![metric(period)], lookback);
                    let from = planned.series[0].from;
                    assert_eq!(planned.series[0].until, until);
                    assert_eq!(
                        window_start(until, lookback, period as i64),
                        Some(from),
                        "period {period}, lookback {lookback:?}, until {until}"
                    );
                }
            }
        }
    }

    fn csv(values: impl Iterator<Item = f64>) -> Trace {
        let t0: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
        let mut text = String::from("timestamp,cpu\n");
        for (k, v) in values.enumerate() {
            let t = t0 + TimeDelta::minutes(k as i64);
            text.push_str(&format!("{},{v}\n", t.format("%Y-%m-%dT%H:%M:%SZ")));
        }
        crate::evaluate::trace::parse_csv(&text, "t.csv").unwrap()
    }

    async fn last_count(trace: &Trace, lookback: Duration) -> u32 {
        let ticks = ticks_of(trace, lookback, "noise_guard: 1m").await;
        ticks.last().unwrap().0
    }

    /// The count after each tick, and its reason.
    async fn ticks_of(trace: &Trace, lookback: Duration, keys: &str) -> Vec<(u32, String)> {
        let text = format!("target: {{cluster: c, service: s}}\nmin: 1\nmax: 40\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 50, {keys}}}\n");
        let policy = crate::policy::load_str(&text, "p.yaml", Path::new(".")).unwrap();
        let opts = Options {
            initial: Some(8),
            lookback,
            ..Options::default()
        };
        let mut reasons = Vec::new();
        let each = |d: Decision, _: &TickValues| reasons.push(d.reason);
        let r = run(&policy[0], trace, &opts, &PluginRunner::default(), each).await;
        r.ticks.iter().map(|t| t.desired).zip(reasons).collect()
    }

    /// A rule that reads further back than the lookback (a burst guard's hour) sees it, as the
    /// worker would (`validate` makes its lookback cover it): at a 15-minute lookback, a burst
    /// in each of the last four quarter hours keeps room, and the reason says so.
    #[tokio::test]
    async fn a_rule_reading_an_hour_sees_it_whatever_the_lookback() {
        // CPU over the 8 tasks that ran (the `running` column): 160 % of a task, 360 % a minute
        // in each quarter hour.
        let t0: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
        let mut text = String::from("timestamp,cpu,running\n");
        for k in 0..123 {
            let cpu = if k % 15 == 7 && k < 120 { 45 } else { 20 };
            let t = (t0 + TimeDelta::minutes(k)).format("%Y-%m-%dT%H:%M:%SZ");
            text.push_str(&format!("{t},{cpu},8\n"));
        }
        let trace = crate::evaluate::trace::parse_csv(&text, "t.csv").unwrap();
        let lookback = Duration::from_secs(15 * 60);
        let keys = "noise_guard: 1m, burst_recurrence: 15m";
        let ticks = ticks_of(&trace, lookback, keys).await;
        let kept = |why: &str| why.contains("bursts back in each of the last 4 15m");
        // Not while fewer than four quarter hours are there; then each refused scale-in says why.
        assert!(ticks[..45].iter().all(|(_, why)| !kept(why)));
        let (_, why) = ticks.last().unwrap();
        assert!(kept(why), "{why}");
    }

    /// Datapoints older than the lookback change nothing, as in the worker: two hours of a
    /// wildly noisy load and then an hour and a half of a flat one end at the count the flat
    /// load alone reaches, where a replay that kept the whole history (the noise guard reading
    /// two hours of noise) holds more tasks.
    #[tokio::test]
    async fn what_a_tick_decides_does_not_see_past_the_lookback() {
        let noisy = (0..120).map(|k| if k % 2 == 0 { 10.0 } else { 45.0 });
        let then_flat = csv(noisy.chain(std::iter::repeat_n(20.0, 90)));
        let flat = csv(std::iter::repeat_n(20.0, 210));
        let lookback = Duration::from_secs(15 * 60);
        let alone = last_count(&flat, lookback).await;
        assert_eq!(last_count(&then_flat, lookback).await, alone);
        let everything = Duration::from_secs(365 * 86_400);
        let kept = last_count(&then_flat, everything).await;
        assert!(kept > alone, "the whole history held {kept} against {alone}");
    }
}
