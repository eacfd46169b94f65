//! The CloudWatch half of a collection pass: which metrics each service gets, how they are
//! packed into as few GetMetricData calls as the limits allow, and which datapoints are kept.
//!
//! Publication delay: a datapoint covers `[t, t + period)`; it is kept only if
//! `t + period <= now - delay`, so the newest, possibly incomplete, period is never taken as
//! real. Each series keeps `lookback` worth of such complete periods.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::Collector;
use crate::api::{ApiError, MetricDataRequest, MetricQuery, DATAPOINTS_PER_CALL, METRIC_QUERIES_PER_CALL};
use crate::config::{ClusterSpec, CollectSettings, MetricSpec, ServiceSpec};
use crate::model::{arn_name, Problem, Sample, Series, ServiceKey, ServiceState};

/// A safety stop for NextToken paging.
const MAX_PAGES: usize = 1_000;

/// Periods are aligned to this (one hour) when they all divide it, so one call serves them all.
const ALIGN_LIMIT_SECS: i64 = 3600;

/// One metric of one service, its dimensions filled in. Its spec is shared: a service's
/// metrics are resolved once and read every tick (windows, the plan, the series).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedMetric {
    pub key: ServiceKey,
    pub spec: std::sync::Arc<MetricSpec>,
}

/// `targetgroup/NAME/ID` from a target group ARN.
fn target_group_name(arn: &str) -> Option<&str> {
    arn.find(":targetgroup/").map(|i| &arn[i + 1..])
}

/// The metrics of one service ([`ClusterSpec::metrics_of`]), placeholders filled from the
/// service's state: its target group is the configured one, else the one ECS reports attached.
pub fn metrics_for(
    cluster: &ClusterSpec,
    service: Option<&ServiceSpec>,
    state: &ServiceState,
    collect: &CollectSettings,
) -> (Vec<ResolvedMetric>, Vec<Problem>) {
    let key = state.key();
    let target_group = service.and_then(|s| s.target_group.clone()).or_else(|| {
        state
            .load_balancers
            .iter()
            .filter_map(|lb| lb.target_group_arn.as_deref())
            .find_map(target_group_name)
            .map(str::to_string)
    });
    let load_balancer = service.and_then(|s| s.load_balancer.clone());
    let specs = cluster.metrics_of(service, collect, target_group.is_some());

    let mut problems = Vec::new();
    let mut out = Vec::new();
    let filled = |v: &str| fill(v, &key, target_group.as_deref(), load_balancer.as_deref());
    for spec in specs {
        let id = spec.id.clone();
        match resolve(spec, filled) {
            Ok(spec) => out.push(ResolvedMetric {
                key: key.clone(),
                spec: spec.into(),
            }),
            Err(missing) => problems.push(Problem {
                scope: key.to_string(),
                message: format!(
                    "metric `{id}` not collected: it uses ${{{missing}}}, which this service does not have (set `{missing}` for it in the config)"
                ),
            }),
        }
    }
    (out, problems)
}

/// The cluster-level metrics of a cluster with an Auto Scaling group
/// ([`crate::config::capacity_metrics`]). Their series have an empty service name.
pub fn cluster_metrics(cluster: &str, collect: &CollectSettings) -> Vec<ResolvedMetric> {
    let key = ServiceKey::new(cluster, "");
    crate::config::capacity_metrics(collect)
        .into_iter()
        .map(|mut spec| {
            for v in spec.dimensions.values_mut() {
                *v = v.replace("${cluster}", arn_name(cluster));
            }
            ResolvedMetric {
                key: key.clone(),
                spec: spec.into(),
            }
        })
        .collect()
}

/// A task group's metrics, under the key `CLUSTER/group:NAME`; `${service}` is the group's name.
pub fn group_metrics(g: &crate::config::GroupSpec) -> Vec<ResolvedMetric> {
    let key = g.metrics_key();
    let named = ServiceKey::new(&g.cluster, &g.name);
    g.metrics
        .iter()
        .filter_map(|spec| {
            let spec = resolve(spec.clone(), |v| fill(v, &named, None, None)).ok()?;
            Some(ResolvedMetric {
                key: key.clone(),
                spec: spec.into(),
            })
        })
        .collect()
}

/// `spec` with its placeholders filled (its dimensions, and a Prometheus metric's query, which
/// is then also its metric name); the first missing placeholder otherwise.
fn resolve(
    mut spec: MetricSpec,
    fill: impl Fn(&str) -> Result<String, &'static str>,
) -> Result<MetricSpec, &'static str> {
    for v in spec.dimensions.values_mut() {
        *v = fill(v)?;
    }
    if let Some(q) = &mut spec.prometheus {
        q.query = fill(&q.query)?;
        spec.metric_name.clone_from(&q.query);
    }
    Ok(spec)
}

/// Fills `${cluster}`, `${service}`, `${target_group}`, `${load_balancer}`; names the missing one.
/// `${cluster}` is the cluster's *name* even when the config gives its ARN, as CloudWatch's
/// `ClusterName` dimension wants.
fn fill(value: &str, key: &ServiceKey, tg: Option<&str>, lb: Option<&str>) -> Result<String, &'static str> {
    let mut v = value
        .replace("${cluster}", arn_name(&key.cluster))
        .replace("${service}", &key.service);
    for (name, given) in [("target_group", tg), ("load_balancer", lb)] {
        let placeholder = format!("${{{name}}}");
        if v.contains(&placeholder) {
            v = v.replace(&placeholder, given.ok_or(name)?);
        }
    }
    Ok(v)
}

/// `t` rounded down to a multiple of `secs` since the epoch.
pub fn align_down(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let ts = t.timestamp();
    let aligned = ts - ts.rem_euclid(secs.max(1));
    DateTime::from_timestamp(aligned, 0).unwrap_or(t)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One series to read: its query id and the window of complete periods it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSeries {
    pub query_id: String,
    pub metric: ResolvedMetric,
    /// First period start kept (inclusive).
    pub from: DateTime<Utc>,
    /// Kept periods start before this (exclusive), so every one ends by `now - delay`.
    pub until: DateTime<Utc>,
}

/// The GetMetricData calls of one pass and the series they feed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub requests: Vec<MetricDataRequest>,
    pub series: Vec<PlannedSeries>,
}

/// Packs the metrics into calls: one time window for all queries whose periods divide a common
/// alignment of at most an hour (the usual case: a single group), each call holding at most 500
/// queries and 100,800 datapoints.
pub fn plan(now: DateTime<Utc>, metrics: Vec<ResolvedMetric>, lookback: Duration) -> Plan {
    pack(windows(now, metrics, lookback))
}

/// Each metric's window of complete periods at `now`, `lookback` long.
pub fn windows(now: DateTime<Utc>, metrics: Vec<ResolvedMetric>, lookback: Duration) -> Vec<PlannedSeries> {
    let lookback = TimeDelta::from_std(lookback).unwrap_or(TimeDelta::MAX);
    metrics
        .into_iter()
        .enumerate()
        .map(|(i, metric)| {
            let period = period_secs(&metric.spec);
            let delay = TimeDelta::from_std(metric.spec.delay).unwrap_or(TimeDelta::MAX);
            // The aligned period starting at `t` is complete iff t + period <= now - delay,
            // i.e. iff t < align_down(now - delay, period).
            let until = align_down(now - delay, period);
            let from = align_down(until - lookback, period);
            PlannedSeries {
                query_id: format!("m{i}"),
                metric,
                from,
                until,
            }
        })
        .collect()
}

/// The calls that read `series`, each from its own `from`: one window per call.
pub fn pack(series: Vec<PlannedSeries>) -> Plan {
    let periods: BTreeSet<i64> = series.iter().map(|s| period_secs(&s.metric.spec)).collect();
    let lcm = periods.iter().try_fold(1i64, |acc, p| {
        let l = acc / gcd(acc, *p) * p;
        (l <= ALIGN_LIMIT_SECS).then_some(l)
    });
    let groups: Vec<(i64, Vec<usize>)> = match lcm {
        Some(l) => vec![(l, (0..series.len()).collect())],
        None => periods
            .iter()
            .map(|p| {
                let members = (0..series.len())
                    .filter(|i| period_secs(&series[*i].metric.spec) == *p)
                    .collect();
                (*p, members)
            })
            .collect(),
    };

    let mut requests = Vec::new();
    for (align, members) in groups {
        let (Some(start), Some(end)) = (
            members.iter().map(|i| series[*i].from).min(),
            members.iter().map(|i| series[*i].until).max(),
        ) else {
            continue;
        };
        let start = align_down(start, align);
        let span_secs = (end - start).num_seconds().max(1);
        let mut queries: Vec<MetricQuery> = Vec::new();
        let mut points = 0u64;
        for i in members {
            let s = &series[i];
            let p = period_secs(&s.metric.spec);
            let n = (span_secs / p + 1) as u64;
            if !queries.is_empty()
                && (queries.len() == METRIC_QUERIES_PER_CALL || points + n > DATAPOINTS_PER_CALL)
            {
                requests.push(MetricDataRequest {
                    via: None,
                    queries: std::mem::take(&mut queries),
                    start,
                    end,
                });
                points = 0;
            }
            points += n;
            queries.push(query(s));
        }
        if !queries.is_empty() {
            requests.push(MetricDataRequest {
                via: None,
                queries,
                start,
                end,
            });
        }
    }
    Plan { requests, series }
}

/// [`pack`] for each account and region apart: `via` names the cluster whose account and region
/// a series' cluster is in (`None`: the worker's own), and each call goes there.
pub fn pack_routed(series: Vec<PlannedSeries>, via: impl Fn(&str) -> Option<String>) -> Plan {
    let mut groups: Vec<(Option<String>, Vec<PlannedSeries>)> = Vec::new();
    for s in series {
        let v = via(&s.metric.key.cluster);
        match groups.iter_mut().find(|(g, _)| *g == v) {
            Some((_, members)) => members.push(s),
            None => groups.push((v, vec![s])),
        }
    }
    let mut out = Plan {
        requests: Vec::new(),
        series: Vec::new(),
    };
    for (v, members) in groups {
        let mut p = pack(members);
        for r in &mut p.requests {
            r.via = v.clone();
        }
        out.requests.extend(p.requests);
        out.series.extend(p.series);
    }
    out
}

fn period_secs(spec: &MetricSpec) -> i64 {
    i64::try_from(spec.period.as_secs()).unwrap_or(60).max(1)
}

fn query(s: &PlannedSeries) -> MetricQuery {
    let spec = &s.metric.spec;
    MetricQuery {
        id: s.query_id.clone(),
        namespace: spec.namespace.clone(),
        metric_name: spec.metric_name.clone(),
        dimensions: spec
            .dimensions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        stat: spec.stat.clone(),
        period_secs: u32::try_from(period_secs(spec)).unwrap_or(60),
        unit: spec.unit.clone().filter(|_| spec.unit_filter),
    }
}

/// What the pages of one call said about one query.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) status: String,
    pub(super) points: Vec<(DateTime<Utc>, f64)>,
    pub(super) messages: Vec<String>,
}

/// Reads every page of one call.
pub(super) async fn read_call(
    c: &Collector,
    request: &MetricDataRequest,
) -> Result<(HashMap<String, Collected>, Vec<String>), ApiError> {
    let mut by_id: HashMap<String, Collected> = HashMap::new();
    let mut call_messages = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = c.cloudwatch.get_metric_data(request, token).await?;
        c.meter.metrics_requested(request.queries.len() as u64);
        call_messages.extend(page.messages);
        for r in page.results {
            let e = by_id.entry(r.id).or_default();
            // A page that failed a query keeps that status over later pages' `Complete`.
            if !matches!(e.status.as_str(), "Forbidden" | "InternalError") {
                e.status = r.status;
            }
            e.points.extend(r.points);
            e.messages.extend(r.messages);
        }
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => {
                // Every page read: a query whose data ended on a page boundary was left
                // `PartialData` by that page, but nothing more is to come.
                for e in by_id.values_mut().filter(|e| e.status == "PartialData") {
                    e.status = "Complete".into();
                }
                return Ok((by_id, call_messages));
            }
        }
    }
    call_messages.push(format!(
        "stopped after {MAX_PAGES} pages; some series are partial"
    ));
    Ok((by_id, call_messages))
}

/// Makes the calls of a plan (at most `collect.concurrency` at once) and builds the series.
pub(super) async fn fetch(c: &Collector, plan: Plan) -> (Vec<Series>, Vec<Problem>) {
    let answers = futures::future::join_all(plan.requests.iter().map(|r| c.limited(read_call(c, r)))).await;
    let mut problems = Vec::new();
    let mut collected: HashMap<String, Collected> = HashMap::new();
    let mut failed: HashMap<String, String> = HashMap::new();
    for (request, answer) in plan.requests.iter().zip(answers) {
        match answer {
            Ok((by_id, messages)) => {
                collected.extend(by_id);
                for m in messages {
                    problems.push(Problem {
                        scope: "cloudwatch".into(),
                        message: m,
                    });
                }
            }
            Err(e) => {
                problems.push(Problem {
                    scope: "cloudwatch".into(),
                    message: format!("{} series not collected: {e}", request.queries.len()),
                });
                for q in &request.queries {
                    failed.insert(q.id.clone(), e.kind_name());
                }
            }
        }
    }

    let mut series = Vec::with_capacity(plan.series.len());
    for s in plan.series {
        let spec = &s.metric.spec;
        let (status, mut samples) = match collected.remove(&s.query_id) {
            Some(got) => {
                if !matches!(got.status.as_str(), "Complete" | "") {
                    let detail = if got.messages.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", got.messages.join("; "))
                    };
                    problems.push(Problem {
                        scope: s.metric.key.to_string(),
                        message: format!("metric `{}`: CloudWatch status {}{detail}", spec.id, got.status),
                    });
                }
                let samples: Vec<Sample> = got
                    .points
                    .into_iter()
                    .filter(|(t, _)| *t >= s.from && *t < s.until)
                    .map(|(timestamp, value)| Sample { timestamp, value })
                    .collect();
                let status = if got.status.is_empty() {
                    "Complete".to_string()
                } else {
                    got.status
                };
                (status, samples)
            }
            None => (
                failed.remove(&s.query_id).unwrap_or_else(|| "Missing".into()),
                Vec::new(),
            ),
        };
        samples.sort_by_key(|p| p.timestamp);
        samples.dedup_by_key(|p| p.timestamp);
        series.push(series_of(&s, status, samples));
    }
    (series, problems)
}

/// The series of a planned one, with its status and datapoints.
pub(super) fn series_of(s: &PlannedSeries, status: String, samples: Vec<Sample>) -> Series {
    resolved_series(&s.metric, status, s.until, samples)
}

/// The series of a resolved metric: its names and settings, and what was read.
pub(super) fn resolved_series(
    m: &ResolvedMetric,
    status: String,
    complete_until: DateTime<Utc>,
    samples: Vec<Sample>,
) -> Series {
    let spec = &m.spec;
    Series {
        history: None,
        cluster: m.key.cluster.clone(),
        service: m.key.service.clone(),
        id: spec.id.clone(),
        namespace: spec.namespace.clone(),
        metric_name: spec.metric_name.clone(),
        dimensions: spec.dimensions.clone(),
        stat: spec.stat.clone(),
        period_secs: spec.period.as_secs(),
        unit: spec.unit.clone(),
        status,
        per_task: spec.per_task,
        complete_until,
        samples,
    }
}

impl ApiError {
    /// The status a series gets when its call failed: `Error:throttled`, `Error:unreachable`, ...
    fn kind_name(&self) -> String {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "other".into());
        format!("Error:{kind}")
    }
}
