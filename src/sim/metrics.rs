//! The simulator's CloudWatch: per-minute statistic sets, each visible from the time the
//! simulated service would have published it, read back with GetMetricData's semantics (period
//! buckets aligned on the request's start, one value per bucket with data, the statistic asked).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{MetricDataRequest, MetricDataResult};

/// CloudWatch's statistic set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatSet {
    pub sum: f64,
    pub count: f64,
    pub min: f64,
    pub max: f64,
}

impl StatSet {
    pub fn one(v: f64) -> Self {
        StatSet {
            sum: v,
            count: 1.0,
            min: v,
            max: v,
        }
    }

    pub fn of(values: &[f64]) -> Option<Self> {
        let mut it = values.iter();
        let first = *it.next()?;
        Some(it.fold(StatSet::one(first), |s, &v| s.merge(&StatSet::one(v))))
    }

    fn merge(&self, o: &StatSet) -> StatSet {
        StatSet {
            sum: self.sum + o.sum,
            count: self.count + o.count,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }

    fn stat(&self, stat: &str) -> Option<f64> {
        match stat {
            "Average" => Some(self.sum / self.count.max(f64::MIN_POSITIVE)),
            "Sum" => Some(self.sum),
            "Minimum" => Some(self.min),
            "Maximum" => Some(self.max),
            "SampleCount" => Some(self.count),
            _ => None,
        }
    }
}

type Key = (String, String, Vec<(String, String)>);
/// Minute start → (statistics, visible from).
type Minutes = BTreeMap<DateTime<Utc>, (StatSet, DateTime<Utc>)>;

fn key(namespace: &str, name: &str, dims: &[(&str, &str)]) -> Key {
    let mut d: Vec<(String, String)> = dims.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    d.sort();
    (namespace.into(), name.into(), d)
}

#[derive(Debug, Default)]
pub struct MetricStore {
    series: HashMap<Key, Minutes>,
}

impl MetricStore {
    /// Publishes the minute starting at `minute`, visible from `visible`.
    pub fn put(
        &mut self,
        namespace: &str,
        name: &str,
        dims: &[(&str, &str)],
        minute: DateTime<Utc>,
        stats: StatSet,
        visible: DateTime<Utc>,
    ) {
        self.series
            .entry(key(namespace, name, dims))
            .or_default()
            .insert(minute, (stats, visible));
    }

    /// One value per period bucket `[start + k·period, …)` that has data visible at `now`.
    pub fn query(&self, request: &MetricDataRequest, now: DateTime<Utc>) -> Vec<MetricDataResult> {
        request
            .queries
            .iter()
            .map(|q| {
                let mut dims: Vec<(String, String)> = q.dimensions.clone();
                dims.sort();
                let k = (q.namespace.clone(), q.metric_name.clone(), dims);
                let mut result = MetricDataResult {
                    id: q.id.clone(),
                    status: "Complete".into(),
                    points: Vec::new(),
                    messages: Vec::new(),
                };
                if q.period_secs < 60 || q.period_secs % 60 != 0 {
                    result.status = "InternalError".into();
                    result.messages.push(format!(
                        "the simulator publishes 1-minute datapoints: period {} s is not a multiple of 60",
                        q.period_secs
                    ));
                    return result;
                }
                if StatSet::one(0.0).stat(&q.stat).is_none() {
                    result.status = "InternalError".into();
                    result.messages.push(format!(
                        "the simulator keeps statistic sets: `{}` is not one of Average, Sum, Minimum, Maximum, SampleCount",
                        q.stat
                    ));
                    return result;
                }
                let Some(series) = self.series.get(&k) else {
                    return result;
                };
                let period = TimeDelta::seconds(i64::from(q.period_secs));
                let mut bucket = request.start;
                while bucket < request.end {
                    let merged = series
                        .range(bucket..bucket + period)
                        .filter(|(_, (_, visible))| *visible <= now)
                        .map(|(_, (s, _))| *s)
                        .reduce(|a, b| a.merge(&b));
                    if let Some(v) = merged.and_then(|s| s.stat(&q.stat)) {
                        result.points.push((bucket, v));
                    }
                    bucket += period;
                }
                result
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MetricQuery;

    #[test]
    fn answers_with_published_minutes_only_and_merges_periods() {
        let t0: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        let m = |k: i64| t0 + TimeDelta::minutes(k);
        let mut s = MetricStore::default();
        for k in 0..5 {
            let v = StatSet::of(&[10.0 * k as f64, 10.0 * k as f64 + 2.0]).unwrap();
            s.put(
                "AWS/ECS",
                "CPUUtilization",
                &[("ServiceName", "web"), ("ClusterName", "p")],
                m(k),
                v,
                m(k + 2),
            );
        }
        let q = |stat: &str, period: u32| MetricDataRequest {
            queries: vec![MetricQuery {
                id: "a".into(),
                namespace: "AWS/ECS".into(),
                metric_name: "CPUUtilization".into(),
                dimensions: vec![
                    ("ClusterName".into(), "p".into()),
                    ("ServiceName".into(), "web".into()),
                ],
                stat: stat.into(),
                period_secs: period,
                unit: None,
            }],
            start: t0,
            end: m(5),
        };
        // at minute 4, minutes 0..=2 are visible
        let r = s.query(&q("Average", 60), m(4));
        assert_eq!(r[0].points, vec![(m(0), 1.0), (m(1), 11.0), (m(2), 21.0)]);
        let r = s.query(&q("Maximum", 120), m(10));
        assert_eq!(r[0].points, vec![(m(0), 12.0), (m(2), 32.0), (m(4), 42.0)]);
        let r = s.query(&q("SampleCount", 300), m(10));
        assert_eq!(r[0].points, vec![(m(0), 10.0)]);
        let r = s.query(&q("p99", 60), m(10));
        assert_eq!(r[0].status, "InternalError");
        assert!(r[0].messages[0].contains("p99"), "{:?}", r[0].messages);
    }
}
