//! Long windows of history for predictive rules: the worker's regular pass reads only
//! `lookback` (minutes), a forecast needs days. Each metric a predictive rule reads gets one
//! long-window GetMetricData call (its pages followed), cached and refreshed once per the rule's
//! `bucket`, not on every tick; the calls and metrics are counted like the pass's own.
//!
//! Each refresh reads only what is new: from an hour before the newest datapoint cached (late
//! or revised datapoints are read again) to now, and the cache drops what has left the window.
//! So a datapoint is read about once, not once per refresh, and a refresh costs the same
//! whatever the window's length.
//!
//! The period fits the window: the metric's own (at least a minute), coarser where CloudWatch
//! keeps only coarser data that far back (1-minute data for 15 days, 5-minute for 63, hourly
//! for 455) or where one call would exceed its datapoint limit. A sum read at a coarser period
//! is scaled back to the metric's own period, so the rule sees values in the units it is
//! configured in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::cloudwatch::{align_down, ResolvedMetric};
use super::Collector;
use crate::api::{MetricDataRequest, MetricQuery, DATAPOINTS_PER_CALL};
use crate::model::{Problem, Sample, ServiceKey};

/// A metric of a service whose history a rule needs.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryNeed {
    pub key: ServiceKey,
    /// The metric id.
    pub metric: String,
    pub window: Duration,
    /// How often the window is read again.
    pub refresh: Duration,
}

const DAY: u64 = 86_400;

/// The period a window of history is read at.
pub fn history_period(window: Duration, metric_period: Duration) -> u64 {
    let w = window.as_secs();
    // The finest period CloudWatch still holds for the oldest datapoint of the window.
    let kept = [60, 300, 3600]
        .into_iter()
        .find(|p| w <= crate::config::kept_at(Duration::from_secs(*p)).as_secs())
        .unwrap_or(3600);
    let mut p = metric_period.as_secs().max(60).max(kept);
    while w / p > DATAPOINTS_PER_CALL {
        p += 60;
    }
    p
}

/// How far back CloudWatch keeps data at all.
pub const MAX_HISTORY: Duration = Duration::from_secs(455 * DAY);

#[derive(Debug)]
struct Cached {
    fetched_at: DateTime<Utc>,
    samples: Arc<Vec<Sample>>,
}

/// The history read so far, by service and metric id.
#[derive(Debug, Default)]
pub struct HistoryCache {
    needs: Vec<HistoryNeed>,
    entries: Mutex<HashMap<(ServiceKey, String), Cached>>,
}

impl HistoryCache {
    pub fn new(needs: Vec<HistoryNeed>) -> Self {
        HistoryCache {
            needs,
            entries: Mutex::default(),
        }
    }

    /// The entries of `old` whose need is the same here.
    pub fn carry_from(&self, old: &HistoryCache) {
        let old_entries = old.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut mine = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for ((key, metric), c) in old_entries.iter() {
            let same = |n: &&HistoryNeed| &n.key == key && &n.metric == metric;
            if let (Some(a), Some(b)) = (self.needs.iter().find(same), old.needs.iter().find(same)) {
                if a == b {
                    mine.insert(
                        (key.clone(), metric.clone()),
                        Cached {
                            fetched_at: c.fetched_at,
                            samples: c.samples.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Whether a rule needs this metric's history.
    pub fn needs(&self, m: &ResolvedMetric) -> bool {
        self.need(m).is_some()
    }

    fn need(&self, m: &ResolvedMetric) -> Option<&HistoryNeed> {
        self.needs
            .iter()
            .find(|n| n.key == m.key && n.metric == m.spec.id)
    }

    fn cached(&self, key: &(ServiceKey, String)) -> Option<(DateTime<Utc>, Arc<Vec<Sample>>)> {
        let g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        g.get(key).map(|c| (c.fetched_at, c.samples.clone()))
    }

    fn store(&self, key: (ServiceKey, String), at: DateTime<Utc>, samples: Arc<Vec<Sample>>) {
        let mut g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(
            key,
            Cached {
                fetched_at: at,
                samples,
            },
        );
    }
}

/// How far before the newest cached datapoint a refresh starts reading again.
const OVERLAP: TimeDelta = TimeDelta::hours(1);

/// The window `[start, end)` of `need` at `now`, aligned to its period.
fn window(now: DateTime<Utc>, m: &ResolvedMetric, need: &HistoryNeed) -> (DateTime<Utc>, DateTime<Utc>, i64) {
    let period = history_period(need.window, m.spec.period) as i64;
    let delay = TimeDelta::from_std(m.spec.delay).unwrap_or_default();
    let end = align_down(now - delay, period);
    let start = align_down(
        end - TimeDelta::from_std(need.window).unwrap_or(TimeDelta::MAX),
        period,
    );
    (start, end, period)
}

/// The one call that reads `need`'s window of `m`, from `since` (the part not cached) on.
fn request(
    now: DateTime<Utc>,
    m: &ResolvedMetric,
    need: &HistoryNeed,
    since: Option<DateTime<Utc>>,
) -> (MetricDataRequest, i64) {
    let (start, end, period) = window(now, m, need);
    let start = since.map_or(start, |s| align_down(s, period).max(start).min(end));
    let query = MetricQuery {
        id: "h0".into(),
        namespace: m.spec.namespace.clone(),
        metric_name: m.spec.metric_name.clone(),
        dimensions: m
            .spec
            .dimensions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        stat: m.spec.stat.clone(),
        period_secs: u32::try_from(period).unwrap_or(3600),
        unit: m.spec.unit.clone().filter(|_| m.spec.unit_filter),
    };
    (
        MetricDataRequest {
            via: None,
            queries: vec![query],
            start,
            end,
        },
        period,
    )
}

/// Reads the history of every metric in `metrics` that a rule needs and whose cached copy is
/// older than its refresh; the others come from the cache. A failed read keeps the cached copy
/// (if any) and is a problem for its service.
pub(super) async fn read(
    c: &Collector,
    now: DateTime<Utc>,
    metrics: &[ResolvedMetric],
) -> (HashMap<(ServiceKey, String), Arc<Vec<Sample>>>, Vec<Problem>) {
    let cache = &c.history;
    let due: Vec<(&ResolvedMetric, &HistoryNeed)> = metrics
        .iter()
        .filter_map(|m| cache.need(m).map(|n| (m, n)))
        .filter(|(m, n)| {
            let refresh = TimeDelta::from_std(n.refresh).unwrap_or(TimeDelta::MAX);
            cache
                .cached(&(m.key.clone(), m.spec.id.clone()))
                .is_none_or(|(at, _)| now - at >= refresh)
        })
        .collect();
    let reads = due.iter().map(|(m, n)| async move {
        let cached = cache.cached(&(m.key.clone(), m.spec.id.clone())).map(|(_, s)| s);
        let since = cached
            .as_ref()
            .and_then(|s| s.last())
            .map(|s| s.timestamp - OVERLAP);
        let (mut req, period) = request(now, m, n, since);
        req.via = c.via(&m.key.cluster);
        let answer = c.limited(super::cloudwatch::read_call(c, &req)).await;
        (m, n, period, req.start, cached, answer)
    });
    let mut problems = Vec::new();
    for (m, n, period, from, cached, answer) in futures::future::join_all(reads).await {
        let key = (m.key.clone(), m.spec.id.clone());
        match answer {
            Ok((mut by_id, _)) => {
                let points = by_id.remove("h0").map(|got| got.points).unwrap_or_default();
                let own = m.spec.period.as_secs().max(1) as f64;
                let scale = match m.spec.stat.as_str() {
                    "Sum" | "SampleCount" if period as f64 > own => own / period as f64,
                    _ => 1.0,
                };
                let mut fresh: Vec<Sample> = points
                    .into_iter()
                    .map(|(timestamp, value)| Sample {
                        timestamp,
                        value: value * scale,
                    })
                    .collect();
                fresh.sort_by_key(|s| s.timestamp);
                fresh.dedup_by_key(|s| s.timestamp);
                // What is cached before the part read again, within the window, then the part.
                let (start, _, _) = window(now, m, n);
                let kept: &[Sample] = cached.as_deref().map_or(&[], |c| {
                    let lo = c.partition_point(|s| s.timestamp < start);
                    let hi = c.partition_point(|s| s.timestamp < from);
                    &c[lo..hi.max(lo)]
                });
                let mut samples = Vec::with_capacity(kept.len() + fresh.len());
                samples.extend_from_slice(kept);
                samples.extend(fresh);
                cache.store(key, now, Arc::new(samples));
            }
            Err(e) => problems.push(Problem {
                scope: m.key.to_string(),
                message: format!(
                    "history of `{}` not read (the forecast uses what it had): {e}",
                    m.spec.id
                ),
            }),
        }
    }
    let out = metrics
        .iter()
        .filter(|m| cache.need(m).is_some())
        .filter_map(|m| {
            let key = (m.key.clone(), m.spec.id.clone());
            cache.cached(&key).map(|(_, s)| (key, s))
        })
        .collect();
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_fits_the_window_retention_and_the_datapoint_limit() {
        let d = |days: u64| Duration::from_secs(days * DAY);
        let minute = Duration::from_secs(60);
        assert_eq!(history_period(d(14), minute), 60);
        assert_eq!(
            history_period(d(14), Duration::from_secs(20)),
            60,
            "high resolution is kept 3 hours"
        );
        assert_eq!(history_period(d(14), Duration::from_secs(300)), 300);
        assert_eq!(
            history_period(d(30), minute),
            300,
            "1-minute data is kept 15 days"
        );
        assert_eq!(
            history_period(d(200), minute),
            3600,
            "5-minute data is kept 63 days"
        );
        for days in [1, 14, 15, 63, 455] {
            assert!(d(days).as_secs() / history_period(d(days), minute) <= DATAPOINTS_PER_CALL);
        }
    }
}
