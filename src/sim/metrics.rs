//! The simulator's CloudWatch: statistic sets per minute (or per 20 s for high-resolution
//! series), each visible from the time the simulated service would have published it, read back
//! with GetMetricData's semantics (period buckets aligned on the request's start, one value per
//! bucket with data, the statistic asked; a period finer than the series' resolution, or not a
//! multiple of it, is refused).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

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

/// Period start → (statistics, visible from), both in seconds since the epoch.
type Minutes = BTreeMap<i64, (StatSet, i64)>;

/// One series: its resolution (s) and datapoints.
#[derive(Debug, Default)]
struct Stored {
    resolution: u32,
    points: Minutes,
}

/// A series' name in one string, its dimensions sorted, each part ended by a NUL (which no
/// CloudWatch name or value holds): found by comparing one string, with the one allocation of
/// this text instead of a string per part.
fn key<'d>(namespace: &str, name: &str, dims: impl Iterator<Item = (&'d str, &'d str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = dims.collect();
    sorted.sort_unstable();
    let parts = sorted.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
    let mut out = String::with_capacity(namespace.len() + name.len() + 2 + parts);
    for part in [namespace, name]
        .into_iter()
        .chain(sorted.iter().flat_map(|(k, v)| [*k, *v]))
    {
        out.push_str(part);
        out.push('\0');
    }
    out
}

#[derive(Debug, Default)]
pub struct MetricStore {
    series: BTreeMap<String, Stored>,
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
        self.put_at(60, (namespace, name, dims), minute, stats, visible);
    }

    /// Publishes the `resolution`-second period starting at `start`, visible from `visible`.
    pub fn put_at(
        &mut self,
        resolution: u32,
        (namespace, name, dims): (&str, &str, &[(&str, &str)]),
        start: DateTime<Utc>,
        stats: StatSet,
        visible: DateTime<Utc>,
    ) {
        let s = (self.series)
            .entry(key(namespace, name, dims.iter().copied()))
            .or_default();
        s.resolution = resolution;
        s.points.insert(start.timestamp(), (stats, visible.timestamp()));
    }

    /// The series a query names (its dimensions in any order).
    fn find(&self, q: &crate::api::MetricQuery) -> Option<&Stored> {
        let dims = q.dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        self.series.get(&key(&q.namespace, &q.metric_name, dims))
    }

    /// One value per period bucket `[start + k·period, …)` that has data visible at `now`.
    pub fn query(&self, request: &MetricDataRequest, now: DateTime<Utc>) -> Vec<MetricDataResult> {
        request
            .queries
            .iter()
            .map(|q| self.answer(q, request, now))
            .collect()
    }

    fn answer(
        &self,
        q: &crate::api::MetricQuery,
        request: &MetricDataRequest,
        now: DateTime<Utc>,
    ) -> MetricDataResult {
        let mut result = MetricDataResult {
            id: q.id.clone(),
            status: "Complete".into(),
            points: Vec::new(),
            messages: Vec::new(),
        };
        let stored = self.find(q);
        // A series not published yet has no resolution to check against: no data.
        let resolution = stored.map_or(1, |s| s.resolution.max(1));
        if q.period_secs < resolution || q.period_secs % resolution != 0 {
            result.status = "InternalError".into();
            result.messages.push(format!(
                "the simulator publishes {}/{} every {resolution} s: period {} s is not a multiple of it",
                q.namespace, q.metric_name, q.period_secs
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
        let Some(series) = stored.map(|s| &s.points) else {
            return result;
        };
        // One pass over the stored points in the window, merged per period bucket.
        let period = i64::from(q.period_secs);
        let (start, end, now) = (
            request.start.timestamp(),
            request.end.timestamp(),
            now.timestamp(),
        );
        let mut open: Option<(i64, StatSet)> = None;
        let close = |b: Option<(i64, StatSet)>, out: &mut Vec<(DateTime<Utc>, f64)>| {
            if let Some((t, v)) = b.and_then(|(t, s)| s.stat(&q.stat).map(|v| (t, v))) {
                out.push((DateTime::from_timestamp(t, 0).unwrap_or(request.start), v));
            }
        };
        if start < end {
            for (t, (stats, visible)) in series.range(start..end) {
                if *visible > now {
                    continue;
                }
                let bucket = start + (t - start).div_euclid(period) * period;
                match &mut open {
                    Some((b, s)) if *b == bucket => *s = s.merge(stats),
                    _ => {
                        close(open.take(), &mut result.points);
                        open = Some((bucket, *stats));
                    }
                }
            }
        }
        close(open, &mut result.points);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MetricQuery;
    use chrono::TimeDelta;

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
            via: None,
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
