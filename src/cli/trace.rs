//! `ecscale trace export`: the user's own history as a trace that `backtest` reads, from
//! CloudWatch (the metrics a service's policy reads, its load balancer's request count, its
//! running count where Container Insights keeps one) or from what ecscale shipped to
//! Elasticsearch. `backtest --from cloudwatch|es` reads the same without a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{invalid, Failure};
use crate::aws::AwsContext;
use crate::collect::{align_down, history_period, Collector, HistoryNeed, MAX_HISTORY};
use crate::config::env::Vars;
use crate::config::{Config, MetricSpec};
use crate::evaluate::trace::{self, Trace};
use crate::model::{Sample, ServiceKey};
use crate::policy::TargetPolicy;
use crate::sim::twin::columns;
use crate::usage::ApiMeter;

/// Where a trace comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Source {
    Cloudwatch,
    Es,
}

/// Output format of an exported trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum TraceFormat {
    Csv,
    Ndjson,
}

/// What to export: one service of a config, over a window.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct Window {
    /// The worker config: its AWS settings, the service's metrics, its policy, its sink.
    #[arg(long, short = 'c', env = "ECSCALE_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub(super) config: PathBuf,
    /// The service, as CLUSTER/SERVICE.
    #[arg(long)]
    pub(super) service: Option<String>,
    /// How far back from now.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub(super) since: Duration,
    /// The period wanted (default: the finest CloudWatch keeps over the whole window; a finer
    /// one than it keeps is made coarser, and said).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(super) period: Option<Duration>,
}

/// `ecscale trace export` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    window: Window,
    /// Read what ecscale shipped to Elasticsearch (`sink.elasticsearch`) instead of CloudWatch.
    #[arg(long)]
    from_es: bool,
    #[arg(long, value_enum, default_value_t = TraceFormat::Csv)]
    format: TraceFormat,
    /// Write here (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(super) async fn export_command(args: ExportArgs, vars: &Vars) -> Result<u8, Failure> {
    let source = if args.from_es {
        Source::Es
    } else {
        Source::Cloudwatch
    };
    let t = export(source, &args.window, vars).await?;
    let text = match args.format {
        TraceFormat::Csv => trace::to_csv(&t),
        TraceFormat::Ndjson => trace::to_ndjson(&t),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            eprintln!("trace written to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(0)
}

/// The trace of `w`'s service from `source`; what was read and what it cost on stderr.
pub(super) async fn export(source: Source, w: &Window, vars: &Vars) -> Result<Trace, Failure> {
    let config = super::load_config(&w.config, vars)?;
    let key = service_key(w, &config)?;
    let policies: Vec<TargetPolicy> = crate::policy::load_for(&config)
        .map_err(|d| super::mistakes(d, "the policy files"))?
        .into_iter()
        .flat_map(|f| f.targets)
        .collect();
    let wanted = wanted_metrics(&config, &policies, &key)?;
    let t = match source {
        Source::Cloudwatch => from_cloudwatch(config, &key, &wanted, w).await?,
        Source::Es => from_es(&config, &key, &wanted, w).await?,
    };
    if t.timestamps.is_empty() {
        return Err(Failure {
            code: super::EXIT_FAILURE,
            error: anyhow::anyhow!(
                "no datapoint for {key} in the last {}",
                humantime::format_duration(w.since)
            ),
        });
    }
    eprintln!(
        "{} periods of {} s from {} to {}: {}{}",
        t.timestamps.len(),
        t.period_secs,
        t.timestamps[0].format("%Y-%m-%dT%H:%M:%SZ"),
        t.timestamps[t.timestamps.len() - 1].format("%Y-%m-%dT%H:%M:%SZ"),
        t.series.keys().cloned().collect::<Vec<_>>().join(", "),
        if t.recorded_count.is_empty() {
            ""
        } else {
            ", running"
        }
    );
    Ok(t)
}

/// `--service CLUSTER/SERVICE`, or the config's only service.
fn service_key(w: &Window, config: &Config) -> Result<ServiceKey, Failure> {
    let named: Vec<ServiceKey> = config
        .clusters
        .iter()
        .flat_map(|c| c.services.iter().map(move |s| ServiceKey::new(&c.name, &s.name)))
        .collect();
    let key = match (&w.service, named.as_slice()) {
        (Some(s), _) => {
            let (c, s) = s
                .split_once('/')
                .ok_or_else(|| invalid(anyhow::anyhow!("--service {s}: give CLUSTER/SERVICE")))?;
            ServiceKey::new(c, s)
        }
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(invalid(anyhow::anyhow!(
                "--service CLUSTER/SERVICE: which of the config's services?"
            )))
        }
    };
    if !named.contains(&key) {
        return Err(invalid(anyhow::anyhow!(
            "{}: {key} is not one of its named services ({})",
            config.file.display(),
            named
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(key)
}

/// The service's metrics that its policy reads, plus what a twin is fitted from when the service
/// has it (`request_count`, the load; `cpu`; `target_response_time`); all its metrics when no
/// policy names it.
fn wanted_metrics(
    config: &Config,
    policies: &[TargetPolicy],
    key: &ServiceKey,
) -> Result<Vec<MetricSpec>, Failure> {
    let (cluster, service) = config
        .clusters
        .iter()
        .find_map(|c| {
            Some((
                c,
                c.services
                    .iter()
                    .find(|s| s.name == key.service && c.name == key.cluster)?,
            ))
        })
        .ok_or_else(|| invalid(anyhow::anyhow!("{key} is not in the config")))?;
    let all = cluster.metrics_of(Some(service), &config.collect, service.target_group.is_some());
    let target = crate::model::TargetKey::Service {
        cluster: key.cluster.as_str().into(),
        service: key.service.as_str().into(),
    };
    let read: Option<BTreeSet<&str>> = policies.iter().find(|p| p.target == target).map(|p| {
        p.rules
            .iter()
            .flat_map(|r| r.spec.policy().metrics())
            .chain([columns::LOAD, columns::CPU, columns::RESPONSE_TIME])
            .collect()
    });
    let out: Vec<MetricSpec> = all
        .into_iter()
        .filter(|m| read.as_ref().is_none_or(|r| r.contains(m.id.as_str())))
        .collect();
    if let Some(p) = out.iter().find(|m| m.prometheus.is_some()) {
        return Err(invalid(anyhow::anyhow!(
            "metric `{}` of {key} is read from Prometheus: export it from Prometheus (query_range), this reads CloudWatch and Elasticsearch",
            p.id
        )));
    }
    Ok(out)
}

/// A count's average per minute: `id` from `namespace`/`name` with these dimensions.
fn count_metric(
    config: &Config,
    id: &str,
    (namespace, name): (&str, &str),
    dims: &[(&str, &str)],
) -> MetricSpec {
    MetricSpec {
        id: id.into(),
        namespace: namespace.into(),
        metric_name: name.into(),
        dimensions: dims.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        stat: "Average".into(),
        period: Duration::from_secs(60),
        delay: config.collect.delay,
        unit: None,
        unit_filter: false,
        per_task: false,
        prometheus: None,
    }
}

/// ECS's running count from Container Insights (when it is on for the cluster).
fn running_metric(config: &Config) -> MetricSpec {
    count_metric(config, "running", INSIGHTS_RUNNING, SERVICE_DIMS)
}

const SERVICE_DIMS: &[(&str, &str)] = &[("ClusterName", "${cluster}"), ("ServiceName", "${service}")];
const INSIGHTS_RUNNING: (&str, &str) = ("ECS/ContainerInsights", "RunningTaskCount");

/// The counts a twin's start and boot times come from: the service's desired and starting
/// tasks (Container Insights), and, for the cluster's Auto Scaling group, its instances in
/// service, booting, and its desired capacity (the group's metrics collection).
fn twin_counts(config: &Config, key: &ServiceKey) -> Vec<MetricSpec> {
    let insights = "ECS/ContainerInsights";
    let mut out = vec![
        count_metric(
            config,
            columns::DESIRED,
            (insights, "DesiredTaskCount"),
            SERVICE_DIMS,
        ),
        count_metric(
            config,
            columns::PENDING,
            (insights, "PendingTaskCount"),
            SERVICE_DIMS,
        ),
    ];
    if let Some(c) = config.capacity.iter().find(|c| c.cluster == key.cluster) {
        let dims = [("AutoScalingGroupName", c.auto_scaling_group.as_str())];
        for (id, name) in [
            (columns::INSTANCES, "GroupInServiceInstances"),
            (columns::INSTANCES_PENDING, "GroupPendingInstances"),
            (columns::GROUP_DESIRED, "GroupDesiredCapacity"),
        ] {
            out.push(count_metric(config, id, ("AWS/AutoScaling", name), &dims));
        }
    }
    out
}

/// The period each metric is read at, and what the user is told about it.
fn periods(w: &Window, wanted: &mut [MetricSpec]) -> Result<Vec<String>, Failure> {
    if w.since > MAX_HISTORY {
        return Err(invalid(anyhow::anyhow!(
            "--since {}: CloudWatch keeps datapoints for 455 days at most (at 1-hour periods)",
            humantime::format_duration(w.since)
        )));
    }
    let mut notes = Vec::new();
    for m in wanted.iter_mut() {
        let asked = w.period.unwrap_or(m.period).max(m.period);
        let got = history_period(w.since, asked);
        m.period = Duration::from_secs(got);
        if w.period.is_some_and(|p| p.as_secs() < got) {
            notes.push(format!(
                "`{}`: read at {got} s, not {} s: CloudWatch keeps finer datapoints for a shorter time than {} (1-minute: 15 days, 5-minute: 63 days), and one call returns at most 100,800",
                m.id,
                asked.as_secs(),
                humantime::format_duration(w.since)
            ));
        }
    }
    Ok(notes)
}

async fn from_cloudwatch(
    mut config: Config,
    key: &ServiceKey,
    wanted: &[MetricSpec],
    w: &Window,
) -> Result<Trace, Failure> {
    let mut metrics: Vec<MetricSpec> = wanted.to_vec();
    metrics.push(running_metric(&config));
    metrics.extend(twin_counts(&config, key));
    for n in periods(w, &mut metrics)? {
        eprintln!("note: {n}");
    }
    // One cluster, one service, exactly these metrics: the collector reads their windows.
    config.clusters.retain(|c| c.name == key.cluster);
    for c in &mut config.clusters {
        c.discover = None;
        c.metrics.clear();
        c.services.retain(|s| s.name == key.service);
        for s in &mut c.services {
            s.default_metrics = Some(false);
            s.metrics.clone_from(&metrics);
        }
    }
    config.capacity.clear();
    let meter = ApiMeter::default();
    let aws = AwsContext::connect(&config.aws, meter.clone())
        .await
        .map_err(invalid)?;
    let needs = metrics
        .iter()
        .map(|m| HistoryNeed {
            key: key.clone(),
            metric: m.id.clone(),
            window: w.since,
            refresh: Duration::ZERO,
        })
        .collect();
    let clients = crate::worker::Clients::routed(&aws, &config)
        .await
        .map_err(invalid)?;
    let collector =
        Collector::new(&config, clients.ecs, clients.cloudwatch, meter.clone()).with_history(needs);
    let snap = collector.collect(Utc::now()).await;
    for p in &snap.problems {
        eprintln!("problem: {p}");
    }
    let mut series: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in snap.series.iter().filter(|s| s.key() == *key) {
        if let Some(h) = s.history.as_ref().filter(|h| !h.is_empty()) {
            series.insert(s.id.clone(), h.as_ref().clone());
        }
    }
    let running = counts(series.remove("running").unwrap_or_default());
    if running.is_empty() {
        eprintln!("note: no running column: ECS/ContainerInsights RunningTaskCount has no data for {key} (Container Insights off?)");
    }
    let absent: Vec<&str> = metrics
        .iter()
        .map(|m| m.id.as_str())
        .filter(|id| *id != "running" && !series.contains_key(*id))
        .collect();
    if !absent.is_empty() {
        eprintln!(
            "note: no data for {} (a twin fit says what it cannot estimate without them)",
            absent.join(", ")
        );
    }
    let period = metrics.iter().map(|m| m.period.as_secs()).min().unwrap_or(60) as i64;
    print_cost(&meter, w.since, period, metrics.len());
    Ok(trace::from_series("cloudwatch", series, running, period))
}

/// The running count per period, rounded (an average over the period).
fn counts(samples: Vec<Sample>) -> BTreeMap<DateTime<Utc>, u32> {
    samples
        .into_iter()
        .filter(|s| s.value.is_finite() && s.value >= 0.0)
        .map(|s| (s.timestamp, s.value.round() as u32))
        .collect()
}

fn print_cost(meter: &ApiMeter, since: Duration, period: i64, queries: usize) {
    let u = meter.usage();
    let per_call = since.as_secs() as i64 / period.max(1) + 1;
    eprintln!(
        "{} GetMetricData call(s) ({queries} long windows of at most {per_call} datapoints each: AWS allows 100,800 per call; plus one short collection pass), {} metrics requested: ${:.4}",
        u.calls("CloudWatch.GetMetricData"),
        u.cloudwatch_metrics_requested,
        u.cloudwatch_cost_usd
    );
}

/// Documents read from Elasticsearch at most (a bound on memory).
const MAX_DOCS: usize = 5_000_000;

async fn from_es(
    config: &Config,
    key: &ServiceKey,
    wanted: &[MetricSpec],
    w: &Window,
) -> Result<Trace, Failure> {
    let Some(es_settings) = &config.sink.elasticsearch else {
        return Err(invalid(anyhow::anyhow!(
            "{}: --from-es reads sink.elasticsearch, which it does not set",
            config.file.display()
        )));
    };
    let es = crate::ship::elasticsearch::Es::connect(es_settings, es_settings.timeout).map_err(invalid)?;
    let since = Utc::now() - TimeDelta::from_std(w.since).unwrap_or(TimeDelta::MAX);
    let docs = es_documents(&es, &config.sink.index_prefix, key, since).await?;
    let ids: BTreeSet<&str> = wanted.iter().map(|m| m.id.as_str()).collect();
    let mut series: BTreeMap<String, BTreeMap<DateTime<Utc>, f64>> = BTreeMap::new();
    let mut period = i64::MAX;
    let mut services: Vec<(DateTime<Utc>, u32)> = Vec::new();
    // The service documents' desired and starting counts, as a twin reads them.
    let mut counted: BTreeMap<&str, BTreeMap<DateTime<Utc>, f64>> = BTreeMap::new();
    for d in &docs {
        let at = d["@timestamp"]
            .as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok());
        match (d["kind"].as_str(), at) {
            (Some("sample"), Some(at)) => {
                let (Some(id), Some(v)) = (d["metric"].as_str(), d["value"].as_f64()) else {
                    continue;
                };
                if ids.contains(id) {
                    series.entry(id.to_string()).or_default().insert(at, v);
                    period = period.min(d["period_secs"].as_i64().unwrap_or(60).max(1));
                }
            }
            (Some("service"), Some(at)) => {
                if let Some(r) = d["running"].as_u64() {
                    services.push((at, u32::try_from(r).unwrap_or(u32::MAX)));
                }
                for id in [columns::DESIRED, columns::PENDING] {
                    if let Some(v) = d[id].as_f64() {
                        counted.entry(id).or_default().insert(at, v);
                    }
                }
            }
            _ => {}
        }
    }
    let period = if period == i64::MAX { 60 } else { period };
    // The running count of each period: the last seen in it.
    services.sort();
    let running = services
        .into_iter()
        .map(|(at, n)| (align_down(at, period), n))
        .collect();
    eprintln!("{} documents read from {}", docs.len(), es_settings.url);
    for (id, m) in counted {
        // The last count seen in each period.
        let per: BTreeMap<DateTime<Utc>, f64> =
            m.into_iter().map(|(at, v)| (align_down(at, period), v)).collect();
        series.insert(id.to_string(), per);
    }
    let series = series
        .into_iter()
        .map(|(id, m)| {
            (
                id,
                m.into_iter()
                    .map(|(timestamp, value)| Sample { timestamp, value })
                    .collect(),
            )
        })
        .collect();
    Ok(trace::from_series("elasticsearch", series, running, period))
}

/// Every sample and service document of `key` since `since`, by scrolling.
async fn es_documents(
    es: &crate::ship::elasticsearch::Es,
    prefix: &str,
    key: &ServiceKey,
    since: DateTime<Utc>,
) -> Result<Vec<serde_json::Value>, Failure> {
    use elasticsearch::http::Method;
    let query = serde_json::json!({
        "size": 5000,
        "sort": ["_doc"],
        "_source": ["@timestamp", "kind", "metric", "value", "period_secs", "running", "desired", "pending"],
        "query": {"bool": {"filter": [
            {"terms": {"kind": ["sample", "service"]}},
            {"term": {"target": key.to_string()}},
            {"range": {"@timestamp": {"gte": since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}}}
        ]}}
    });
    let path = format!("/{prefix}-metrics-*/_search?scroll=1m&ignore_unavailable=true");
    let mut page = es
        .json(Method::Post, &path, Some(&query))
        .await
        .map_err(es_failure)?;
    let mut out = Vec::new();
    loop {
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() || out.len() >= MAX_DOCS {
            break;
        }
        out.extend(hits.into_iter().map(|h| h["_source"].clone()));
        let Some(id) = page["_scroll_id"].as_str().map(str::to_string) else {
            break;
        };
        let next = serde_json::json!({"scroll": "1m", "scroll_id": id});
        page = es
            .json(Method::Post, "/_search/scroll", Some(&next))
            .await
            .map_err(es_failure)?;
    }
    if let Some(id) = page["_scroll_id"].as_str() {
        let _ = es
            .json(
                Method::Delete,
                "/_search/scroll",
                Some(&serde_json::json!({"scroll_id": id})),
            )
            .await;
    }
    if out.len() >= MAX_DOCS {
        eprintln!("note: stopped at {MAX_DOCS} documents: narrow --since");
    }
    Ok(out)
}

fn es_failure(e: crate::ship::elasticsearch::EsError) -> Failure {
    Failure {
        code: super::EXIT_FAILURE,
        error: anyhow::anyhow!("reading Elasticsearch: {e}"),
    }
}

/// The trace a backtest reads: a file, or the export of `--from`.
pub(super) async fn backtest_trace(
    path: Option<&Path>,
    from: Option<(Source, &Window)>,
    vars: &Vars,
) -> Result<Trace, Failure> {
    match (path, from) {
        (Some(p), None) => trace::read(p).map_err(invalid),
        (None, Some((source, w))) => export(source, w, vars).await,
        _ => Err(invalid(anyhow::anyhow!(
            "give --metrics FILE, or --from cloudwatch|es with --config and --service"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(since: &str, period: Option<&str>) -> Window {
        Window {
            config: PathBuf::from("c.yaml"),
            service: None,
            since: humantime::parse_duration(since).unwrap(),
            period: period.map(|p| humantime::parse_duration(p).unwrap()),
        }
    }

    #[test]
    fn a_window_is_read_at_the_finest_period_cloudwatch_keeps_for_all_of_it_and_a_finer_one_is_said() {
        let config = crate::config::load_str(
            "schedule: {interval: 30s}\nclusters: [{name: prod, services: [web]}]\n",
            "c.yaml",
            Path::new("/"),
            &Vars::default(),
        )
        .unwrap();
        let metric = || vec![running_metric(&config)];
        let mut m = metric();
        assert!(periods(&window("7d", None), &mut m).unwrap().is_empty());
        assert_eq!(m[0].period, Duration::from_secs(60));
        let mut m = metric();
        let notes = periods(&window("30d", Some("60s")), &mut m).unwrap();
        assert_eq!(m[0].period, Duration::from_secs(300));
        assert!(
            notes[0].starts_with("`running`: read at 300 s, not 60 s: CloudWatch keeps finer datapoints"),
            "{notes:?}"
        );
        let mut m = metric();
        periods(&window("200d", Some("5m")), &mut m).unwrap();
        assert_eq!(m[0].period, Duration::from_secs(3600));
        let mut m = metric();
        let e = periods(&window("500d", None), &mut m).unwrap_err();
        assert_eq!(e.code, 2);
    }
}
