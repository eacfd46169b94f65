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
use crate::eval_io::{MetricSet, Observation};
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            initial: None,
            per_task: DEFAULT_PER_TASK.iter().map(|s| s.to_string()).collect(),
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

/// One target's replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub target: TargetKey,
    pub initial: u32,
    pub period_secs: i64,
    pub decisions: Vec<Decision>,
    /// The metric values each tick saw (rescaled where per-task), by metric id: (period start, value).
    pub values: BTreeMap<String, Vec<(DateTime<Utc>, f64)>>,
    pub totals: Totals,
}

/// Replays `trace` through one target policy.
pub async fn run(policy: &TargetPolicy, trace: &Trace, opts: &Options, runner: &PluginRunner) -> Report {
    let period = trace.period_secs.max(1);
    let first_recorded = trace.recorded_count.values().next().copied();
    let initial = opts.initial.or(first_recorded).unwrap_or(policy.min);
    let mut current = initial;
    let mut state = TargetState::default();
    let mut seen: BTreeMap<String, Vec<Sample>> =
        trace.series.keys().map(|k| (k.clone(), Vec::new())).collect();
    let mut cursor: BTreeMap<&str, usize> = BTreeMap::new();
    let mut decisions = Vec::with_capacity(trace.timestamps.len());
    let mut values: BTreeMap<String, Vec<(DateTime<Utc>, f64)>> = BTreeMap::new();

    // One tick per period from the first row to the last, rows or not: each period holds at
    // most one row (rows are at least a period apart).
    for &t in &trace.timestamps {
        let end = t + TimeDelta::seconds(period);
        let recorded = trace.recorded_count.range(t..end).next().map(|(_, c)| *c);
        // The datapoints of period `t`, rescaled to the simulated count where per-task.
        for (id, samples) in &trace.series {
            let i = cursor.entry(id.as_str()).or_insert(0);
            if let Some(s) = samples.get(*i).filter(|s| s.timestamp < end) {
                *i += 1;
                let mut v = s.value;
                if opts.per_task.iter().any(|p| p == id) {
                    if let Some(recorded) = recorded {
                        if current > 0 {
                            v = v * f64::from(recorded) / f64::from(current);
                        }
                    }
                }
                if let Some(list) = seen.get_mut(id) {
                    list.push(Sample {
                        timestamp: t,
                        value: v,
                    });
                }
                values.entry(id.clone()).or_default().push((t, v));
            }
        }
        let now = end;
        let mut metrics = MetricSet::uniform(
            seen.iter().map(|(id, s)| (id.as_str(), s.as_slice())),
            period,
            now,
        );
        metrics.mark_per_task(&opts.per_task);
        let obs = Observation::settled(now, current, &metrics);
        let externals = fetch_answers(runner, policy, &obs).await;
        let d = decide(policy, &obs, &state, &externals);
        state.record(policy, &d, true);
        current = d.desired;
        decisions.push(d);
    }
    let totals = totals(policy, &decisions, &values, period);
    Report {
        target: policy.target.clone(),
        initial,
        period_secs: period,
        decisions,
        values,
        totals,
    }
}

fn totals(
    policy: &TargetPolicy,
    decisions: &[Decision],
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
                rule: r.name.clone(),
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
