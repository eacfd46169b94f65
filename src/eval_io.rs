//! What a rule reads and what it answers: the contract between the rule kinds
//! ([`crate::policy`]) and the engine ([`crate::evaluate::engine`]). Both depend on this module;
//! the kinds never depend on the engine, and the engine reaches a kind only through the
//! [`crate::policy::Policy`] trait.
//!
//! A metric is read as *slots*: the complete periods ending at the series' `complete_until`. A
//! slot without a datapoint is missing, whether CloudWatch skipped it or the metric went stale;
//! what happens then is the policy's missing-data behaviour, applied by the engine.

use std::cell::Cell;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use serde::{Deserialize, Serialize};

use crate::model::Sample;

/// The datapoints of one metric as one evaluation sees them.
#[derive(Debug, Clone, Copy)]
pub struct MetricData<'a> {
    /// Oldest first, one per period start.
    pub samples: &'a [Sample],
    pub period_secs: i64,
    /// Complete periods start before this.
    pub complete_until: DateTime<Utc>,
}

/// The metrics of one target, by id.
#[derive(Debug, Clone, Default)]
pub struct MetricSet<'a> {
    entries: BTreeMap<&'a str, MetricData<'a>>,
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
        let mut set = MetricSet::new();
        for (id, samples) in series {
            set.insert(
                id,
                MetricData {
                    samples,
                    period_secs,
                    complete_until,
                },
            );
        }
        set
    }

    pub fn insert(&mut self, id: &'a str, data: MetricData<'a>) {
        self.entries.insert(id, data);
    }

    pub fn get(&self, id: &str) -> Option<&MetricData<'a>> {
        self.entries.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &&'a str> {
        self.entries.keys()
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

    /// The value of the complete period starting at `start`, if it has one.
    fn at(&self, start: DateTime<Utc>) -> Option<f64> {
        let d = self.data?;
        let i = d.samples.partition_point(|s| s.timestamp < start);
        d.samples.get(i).filter(|s| s.timestamp == start).map(|s| s.value)
    }

    /// The values of the last `n` complete periods, oldest first, skipping periods that start
    /// before `not_before` (warm-up). `None` when a period in range has no value and nothing is
    /// assumed; fewer than `n` values when warm-up excluded some.
    pub fn window(&self, n: usize, not_before: Option<DateTime<Utc>>) -> Option<Vec<f64>> {
        let Some(d) = self.data else {
            return self.assume.map(|v| {
                self.assumed.set(true);
                vec![v; n]
            });
        };
        let period = TimeDelta::seconds(d.period_secs.max(1));
        let mut out = Vec::with_capacity(n);
        for k in (1..=n as i32).rev() {
            let start = d.complete_until - period * k;
            if not_before.is_some_and(|nb| start < nb) {
                continue;
            }
            match self.at(start) {
                Some(v) => out.push(v),
                None => {
                    let v = self.assume?;
                    self.assumed.set(true);
                    out.push(v);
                }
            }
        }
        Some(out)
    }

    /// Every datapoint available (history for forecasts), oldest first; no filling.
    pub fn history(&self) -> &'a [Sample] {
        self.data.map_or(&[], |d| d.samples)
    }

    /// The start of the newest complete period.
    pub fn newest_slot(&self) -> Option<DateTime<Utc>> {
        self.data
            .map(|d| d.complete_until - TimeDelta::seconds(d.period_secs.max(1)))
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
        inputs: Vec<(String, f64)>,
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

    /// Whether any metric read so far had a gap filled with an assumed value; a rule's scale-in
    /// never rests on one.
    pub fn used_assumed(&self) -> bool {
        self.assumed.get()
    }
}

/// A number for people in reasons: at most two decimals, no trailing zeros.
pub fn num(v: f64) -> String {
    crate::format::short_number(v, 2)
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
