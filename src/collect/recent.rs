//! Each datapoint read about once: a pass asks CloudWatch only for the series that have a
//! complete period due since the last read, and for those only from shortly before that read's
//! end. What was read before is kept in memory, within `lookback` (so it is bounded by the
//! series collected × lookback ÷ period).
//!
//! A 60-second metric on a 15-second tick is queried once a minute, not four times; a
//! 20-second one about three times in four. GetMetricData is billed per metric queried, so
//! this is what the bill is made of.
//!
//! Late datapoints: a read starts [`REREAD_PERIODS`] periods before the last one ended, so a
//! datapoint published up to that late is still seen. A read that was not `Complete`, or a
//! series whose definition changed, is read whole on the next pass.

use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

use super::cloudwatch::{PlannedSeries, ResolvedMetric};
use crate::model::{Sample, Series};

/// Periods read again before the end of the last read.
pub const REREAD_PERIODS: i32 = 2;

/// One series as last read: what it was, up to when, its datapoints, and the pass that last
/// planned it.
#[derive(Debug)]
struct Kept {
    metric: ResolvedMetric,
    until: DateTime<Utc>,
    samples: Vec<Sample>,
    pass: u64,
    /// Its place in that pass's plan.
    order: usize,
}

/// The series read so far (in the last pass's order, which the next pass usually repeats),
/// and the number of the last pass.
#[derive(Debug, Default)]
pub struct Recent {
    kept: Mutex<(Vec<Kept>, u64)>,
}

/// The kept series of `m`: at `hint` when the order is the same as last time, else looked for.
fn find(kept: &[Kept], hint: usize, m: &ResolvedMetric) -> Option<usize> {
    if kept.get(hint).is_some_and(|k| k.metric == *m) {
        return Some(hint);
    }
    kept.iter().position(|k| k.metric == *m)
}

/// What a pass does with each series it plans: serve it from memory, or read (part of) it.
#[derive(Debug)]
pub enum Source {
    /// Nothing new is due: the datapoints kept, within the window.
    Kept(Box<Series>),
    /// Read from `read.from` (index into [`Split::due`]); the series' window starts at `from`.
    Read { due: usize, from: DateTime<Utc> },
}

/// A pass's series, in the plan's order, and the ones to read.
#[derive(Debug, Default)]
pub struct Split {
    pub sources: Vec<Source>,
    pub due: Vec<PlannedSeries>,
}

fn period_of(m: &ResolvedMetric) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(m.spec.period.as_secs()).unwrap_or(60).max(1))
}

/// The datapoints of `samples` in `[from, until)`.
fn within(samples: &[Sample], from: DateTime<Utc>, until: DateTime<Utc>) -> &[Sample] {
    let lo = samples.partition_point(|s| s.timestamp < from);
    let hi = samples.partition_point(|s| s.timestamp < until);
    &samples[lo..hi.max(lo)]
}

impl Recent {
    /// Which of `planned` are due, and from when each is read.
    pub fn split(&self, planned: Vec<PlannedSeries>) -> Split {
        let mut g = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let (kept, pass) = &mut *g;
        *pass += 1;
        let mut split = Split::default();
        for (i, s) in planned.into_iter().enumerate() {
            let known = find(kept, i, &s.metric).map(|k| &mut kept[k]);
            match known {
                Some(k) if k.until == s.until => {
                    k.pass = *pass;
                    k.order = i;
                    let samples = within(&k.samples, s.from, s.until).to_vec();
                    let series = super::cloudwatch::series_of(&s, "Complete".into(), samples);
                    split.sources.push(Source::Kept(Box::new(series)));
                }
                Some(k) if k.until < s.until && k.until > s.from => {
                    let from = s.from;
                    let read = (k.until - period_of(&s.metric) * REREAD_PERIODS).max(from);
                    split.sources.push(Source::Read {
                        due: split.due.len(),
                        from,
                    });
                    split.due.push(PlannedSeries { from: read, ..s });
                }
                _ => {
                    split.sources.push(Source::Read {
                        due: split.due.len(),
                        from: s.from,
                    });
                    split.due.push(s);
                }
            }
        }
        split
    }

    /// The pass's series in the plan's order: the kept ones, and the read ones after the part
    /// kept from before their read (remembered for the next pass when the read was complete).
    /// Series this pass did not plan are forgotten.
    pub fn merge(&self, split: Split, read: Vec<Series>) -> Vec<Series> {
        let mut g = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let (kept, pass) = &mut *g;
        let mut read: Vec<Option<Series>> = read.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(split.sources.len());
        for (i, source) in split.sources.into_iter().enumerate() {
            let (due, from) = match source {
                Source::Kept(series) => {
                    out.push(*series);
                    continue;
                }
                Source::Read { due, from } => (due, from),
            };
            let (Some(plan), Some(mut series)) =
                (split.due.get(due), read.get_mut(due).and_then(Option::take))
            else {
                continue;
            };
            let old = find(kept, i, &plan.metric);
            let before = old.map_or(&[][..], |k| within(&kept[k].samples, from, plan.from));
            if !before.is_empty() {
                let mut all = Vec::with_capacity(before.len() + series.samples.len());
                all.extend_from_slice(before);
                all.append(&mut series.samples);
                series.samples = all;
            }
            match (series.status == "Complete", old) {
                (true, Some(k)) => {
                    let old = &mut kept[k];
                    old.until = plan.until;
                    old.samples.clone_from(&series.samples);
                    old.pass = *pass;
                    old.order = i;
                }
                (true, None) => kept.push(Kept {
                    metric: plan.metric.clone(),
                    until: plan.until,
                    samples: series.samples.clone(),
                    pass: *pass,
                    order: i,
                }),
                (false, Some(k)) => kept[k].pass = 0,
                (false, None) => {}
            }
            out.push(series);
        }
        let this = *pass;
        kept.retain(|k| k.pass == this);
        kept.sort_by_key(|k| k.order);
        out
    }
}
