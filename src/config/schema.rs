//! The validated configuration types and how each is read from YAML.
//!
//! Every field has its default and its check here, next to its doc comment; the README's config
//! reference is the user-facing copy of these comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use super::read::{join, one_of, parse_bytes, Cx, FromNode};
use super::yaml::{Node, Span};

/// The whole worker configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// How to reach AWS.
    pub aws: AwsSettings,
    /// When the worker ticks.
    pub schedule: Schedule,
    /// Collection defaults.
    pub collect: CollectSettings,
    /// The clusters, and their services, to manage.
    pub clusters: Vec<ClusterSpec>,
    /// Where metrics and decisions go.
    pub sink: SinkSettings,
    /// Policy files (globs expanded, relative paths resolved against the config's folder).
    pub policy_files: Vec<PathBuf>,
}

/// How to reach AWS. Credentials always come from the standard chain (environment, profile,
/// web identity, ECS task role, EC2 instance role), never from this file.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Region; when absent, the standard chain decides (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// Any AWS-compatible endpoint (for all services), e.g. a moto server or a VPC endpoint.
    pub endpoint_url: Option<String>,
    /// A named profile from `~/.aws/config`.
    pub profile: Option<String>,
    pub retry: RetrySettings,
    pub timeouts: TimeoutSettings,
}

/// SDK retry behaviour for throttling and transient errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// `standard`, or `adaptive` (adds client-side rate limiting when throttled).
    pub mode: RetryMode,
    /// Attempts per API call, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Backoff before the first retry; later ones grow exponentially, with jitter.
    pub initial_backoff: Duration,
    /// Longest backoff between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            mode: RetryMode::Standard,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    Standard,
    Adaptive,
}

/// Time limits on AWS calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutSettings {
    /// Establishing a connection.
    pub connect: Duration,
    /// One attempt of one call.
    pub attempt: Duration,
    /// One call, all its retries included.
    pub operation: Duration,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            connect: Duration::from_secs(3),
            attempt: Duration::from_secs(10),
            operation: Duration::from_secs(30),
        }
    }
}

/// When the worker ticks: a fixed interval or a cron expression (UTC).
#[derive(Debug, Clone)]
pub enum Schedule {
    Interval(Duration),
    Cron {
        /// As written in the file.
        expression: String,
        schedule: Box<cron::Schedule>,
    },
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Interval(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Schedule::Cron { expression, .. } => write!(f, "cron `{expression}` (UTC)"),
        }
    }
}

/// Collection defaults, used by every metric that does not set its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectSettings {
    /// CloudWatch period of a datapoint.
    pub period: Duration,
    /// Publication delay: a datapoint is used only once `delay` has passed since its period
    /// ended, so a recent, still-incomplete datapoint is never taken as real.
    pub delay: Duration,
    /// How far back each collection reads.
    pub lookback: Duration,
    /// AWS calls in flight at once.
    pub concurrency: usize,
    /// Collect container instances (EC2 capacity) of each cluster.
    pub container_instances: bool,
    /// Collect tasks waiting to start (only listed when ECS reports some pending).
    pub pending_tasks: bool,
}

impl Default for CollectSettings {
    fn default() -> Self {
        CollectSettings {
            period: Duration::from_secs(60),
            delay: Duration::from_secs(60),
            lookback: Duration::from_secs(15 * 60),
            concurrency: 8,
            container_instances: true,
            pending_tasks: true,
        }
    }
}

/// One ECS cluster and the services of it to manage.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    /// Services named explicitly.
    pub services: Vec<ServiceSpec>,
    /// Services found by name prefix and/or tags, in addition to the explicit ones.
    pub discover: Option<Discovery>,
    /// Extra metrics collected for every service of this cluster.
    pub metrics: Vec<MetricSpec>,
    /// Whether services get the default metrics (CPU, memory, ALB) unless they say otherwise.
    pub default_metrics: bool,
    /// Where this cluster was declared, for messages.
    pub span: Span,
}

impl ClusterSpec {
    /// The metrics a service of this cluster gets: the defaults (unless turned off), then the
    /// cluster's, then the service's own (`None` for a discovered service), a later one
    /// replacing an earlier one of the same id. Placeholders are left for the collect stage.
    pub fn metrics_of(
        &self,
        service: Option<&ServiceSpec>,
        collect: &CollectSettings,
        has_target_group: bool,
    ) -> Vec<MetricSpec> {
        let has_load_balancer = service.is_some_and(|s| s.load_balancer.is_some());
        let with_defaults = service
            .and_then(|s| s.default_metrics)
            .unwrap_or(self.default_metrics);
        let defaults = if with_defaults {
            default_metrics(collect, has_target_group, has_load_balancer)
        } else {
            Vec::new()
        };
        let own = service.map(|s| s.metrics.as_slice()).unwrap_or_default();
        let mut specs: Vec<MetricSpec> = Vec::new();
        for m in defaults.iter().chain(&self.metrics).chain(own) {
            match specs.iter_mut().find(|s| s.id == m.id) {
                Some(existing) => *existing = m.clone(),
                None => specs.push(m.clone()),
            }
        }
        specs
    }
}

/// Finding services without naming them: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The service name starts with this.
    pub name_prefix: Option<String>,
    /// The service carries all these tags (key → value).
    pub tags: BTreeMap<String, String>,
}

/// A service named in the config.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    /// The ALB target group, as an ARN or its `targetgroup/NAME/ID` suffix. When absent, the
    /// target group ECS reports attached to the service is used, if any.
    pub target_group: Option<String>,
    /// The ALB, as an ARN or its `app/NAME/ID` suffix; needed for `TargetResponseTime`.
    pub load_balancer: Option<String>,
    /// Overrides the cluster's `default_metrics`.
    pub default_metrics: Option<bool>,
    /// Metrics for this service; one with the id of a default metric replaces it.
    pub metrics: Vec<MetricSpec>,
    pub span: Span,
}

/// One CloudWatch metric to collect for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricSpec {
    /// The name policies use for it (`cpu`, `memory`, `queue_depth`, ...).
    pub id: String,
    pub namespace: String,
    pub metric_name: String,
    /// Dimensions; values may use `${cluster}`, `${service}`, `${target_group}`, `${load_balancer}`.
    pub dimensions: BTreeMap<String, String>,
    /// `Average`, `Sum`, `Minimum`, `Maximum`, `SampleCount`, or a percentile such as `p95`.
    pub stat: String,
    #[serde(with = "humantime_serde_secs")]
    pub period: Duration,
    #[serde(with = "humantime_serde_secs")]
    pub delay: Duration,
    /// The CloudWatch unit. When set in the file it also filters the query (CloudWatch returns
    /// only datapoints published with that unit); defaults carry it as a label only.
    pub unit: Option<String>,
    /// Whether `unit` is passed to CloudWatch as a filter.
    #[serde(skip)]
    pub unit_filter: bool,
}

mod humantime_serde_secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

/// Placeholders a dimension value may use.
pub const PLACEHOLDERS: &[&str] = &["cluster", "service", "target_group", "load_balancer"];

/// The metrics every service gets unless `default_metrics: false`: ECS CPU and memory
/// utilization, and with a target group the ALB request count per target (and, with a load
/// balancer, the target response time).
pub fn default_metrics(
    collect: &CollectSettings,
    has_target_group: bool,
    has_load_balancer: bool,
) -> Vec<MetricSpec> {
    let metric = |id: &str, ns: &str, name: &str, dims: &[(&str, &str)], stat: &str, unit: &str| MetricSpec {
        id: id.into(),
        namespace: ns.into(),
        metric_name: name.into(),
        dimensions: dims.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        stat: stat.into(),
        period: collect.period,
        delay: collect.delay,
        unit: Some(unit.into()),
        unit_filter: false,
    };
    let ecs_dims = [("ClusterName", "${cluster}"), ("ServiceName", "${service}")];
    let mut out = vec![
        metric(
            "cpu",
            "AWS/ECS",
            "CPUUtilization",
            &ecs_dims,
            "Average",
            "Percent",
        ),
        metric(
            "memory",
            "AWS/ECS",
            "MemoryUtilization",
            &ecs_dims,
            "Average",
            "Percent",
        ),
    ];
    if has_target_group {
        let mut dims = vec![("TargetGroup", "${target_group}")];
        if has_load_balancer {
            dims.push(("LoadBalancer", "${load_balancer}"));
        }
        out.push(metric(
            "request_count_per_target",
            "AWS/ApplicationELB",
            "RequestCountPerTarget",
            &dims,
            "Sum",
            "Count",
        ));
        if has_load_balancer {
            out.push(metric(
                "target_response_time",
                "AWS/ApplicationELB",
                "TargetResponseTime",
                &[
                    ("LoadBalancer", "${load_balancer}"),
                    ("TargetGroup", "${target_group}"),
                ],
                "Average",
                "Seconds",
            ));
        }
    }
    out
}

/// Where metrics, decisions and stress results go.
#[derive(Debug, Clone, Default)]
pub struct SinkSettings {
    /// Elasticsearch/OpenSearch; when absent, documents stay in the local spool.
    pub elasticsearch: Option<ElasticsearchSettings>,
    pub spool: SpoolSettings,
}

/// An Elasticsearch 7/8 or OpenSearch endpoint. Secrets are read from the environment
/// variables named here, never written in this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElasticsearchSettings {
    pub url: String,
    /// Basic auth user (with `password_env`).
    pub username: Option<String>,
    /// The environment variable that holds the basic auth password.
    pub password_env: Option<String>,
    /// The environment variable that holds an API key (instead of basic auth).
    pub api_key_env: Option<String>,
    /// A PEM file with the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// Prefix of the data streams (`PREFIX-metrics`, `PREFIX-decisions`, `PREFIX-stress`).
    pub index_prefix: String,
}

/// The on-disk buffer for documents Elasticsearch cannot take right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    /// Largest size on disk.
    pub max_bytes: u64,
    /// What happens when it is full.
    pub on_full: OnFull,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            dir: PathBuf::from("spool"),
            max_bytes: 1 << 30,
            on_full: OnFull::Block,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Collection waits until there is room again; nothing is lost.
    Block,
    /// The oldest documents are dropped, counted and logged.
    DropOldest,
}

// ---------------------------------------------------------------------------------------------
// Reading

const TOP_KEYS: &[&str] = &["aws", "schedule", "collect", "clusters", "sink", "policies"];

pub(super) fn read_config(root: &Node, cx: &mut Cx, base_dir: &Path, file: PathBuf) -> Option<Config> {
    let mut m = cx.map(root, "")?;
    let aws = m.or(cx, "aws", AwsSettings::default());
    let schedule = m.req::<Schedule>(cx, "schedule");
    let collect = m.or(cx, "collect", CollectSettings::default());
    let clusters = m.req_with(cx, "clusters", |n, p, cx| read_clusters(n, p, cx, &collect));
    let sink = m
        .opt_with(cx, "sink", |n, p, cx| read_sink(n, p, cx, base_dir))
        .unwrap_or_else(|| SinkSettings {
            spool: SpoolSettings {
                dir: base_dir.join("spool"),
                ..SpoolSettings::default()
            },
            elasticsearch: None,
        });
    let policy_files = m
        .opt_with(cx, "policies", |n, p, cx| read_policy_paths(n, p, cx, base_dir))
        .unwrap_or_default();
    m.finish(cx, TOP_KEYS);
    Some(Config {
        file,
        aws,
        schedule: schedule?,
        collect,
        clusters: clusters?,
        sink,
        policy_files,
    })
}

impl FromNode for AwsSettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let mut m = cx.map(node, path)?;
        let region = m.opt_with(cx, "region", |n, p, cx| {
            let r = String::from_node(n, p, cx)?;
            if is_region(&r) {
                Some(r)
            } else {
                cx.error(
                    n.span,
                    p,
                    format!("`{r}` does not look like an AWS region (e.g. us-east-1)"),
                );
                None
            }
        });
        let endpoint_url = m.opt_with(cx, "endpoint_url", |n, p, cx| {
            let s = String::from_node(n, p, cx)?;
            match check_http_url(&s) {
                Ok(()) => Some(s),
                Err(e) => {
                    cx.error(n.span, p, e);
                    None
                }
            }
        });
        let profile = m.opt(cx, "profile");
        let retry = m.or(cx, "retry", RetrySettings::default());
        let timeouts = m.or(cx, "timeouts", TimeoutSettings::default());
        m.finish(cx, &["region", "endpoint_url", "profile", "retry", "timeouts"]);
        Some(AwsSettings {
            region,
            endpoint_url,
            profile,
            retry,
            timeouts,
        })
    }
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `eu-central-2`: letters, dash-separated, ending in a number.
pub fn is_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// An `http://` or `https://` URL with a host.
pub fn check_http_url(s: &str) -> Result<(), String> {
    match url::Url::parse(s) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "`{s}` must be an http:// or https:// URL with a host (scheme `{}`)",
            u.scheme()
        )),
        Err(e) => Err(format!("`{s}` is not a URL: {e}")),
    }
}

fn positive(d: Duration, n: &Node, p: &str, cx: &mut Cx) -> Option<Duration> {
    if d.is_zero() {
        cx.error(n.span, p, "must be longer than zero");
        None
    } else {
        Some(d)
    }
}

fn read_positive(m: &mut super::read::MapReader<'_>, cx: &mut Cx, key: &str) -> Option<Duration> {
    m.opt_with(cx, key, |n, p, cx| {
        positive(Duration::from_node(n, p, cx)?, n, p, cx)
    })
}

impl FromNode for RetrySettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let d = RetrySettings::default();
        let mut m = cx.map(node, path)?;
        let mode = m
            .opt_with(cx, "mode", |n, p, cx| one_of(n, p, cx, &["standard", "adaptive"]))
            .map(|s| {
                if s == "adaptive" {
                    RetryMode::Adaptive
                } else {
                    RetryMode::Standard
                }
            })
            .unwrap_or(d.mode);
        let max_attempts = m
            .opt_with(cx, "max_attempts", |n, p, cx| {
                let v = u32::from_node(n, p, cx)?;
                if (1..=20).contains(&v) {
                    Some(v)
                } else {
                    cx.error(n.span, p, format!("must be between 1 and 20, found {v}"));
                    None
                }
            })
            .unwrap_or(d.max_attempts);
        let initial_backoff = read_positive(&mut m, cx, "initial_backoff").unwrap_or(d.initial_backoff);
        let max_backoff = read_positive(&mut m, cx, "max_backoff").unwrap_or(d.max_backoff);
        if max_backoff < initial_backoff {
            cx.error(
                m.span_of("max_backoff"),
                &join(path, "max_backoff"),
                "must not be shorter than initial_backoff",
            );
        }
        m.finish(cx, &["mode", "max_attempts", "initial_backoff", "max_backoff"]);
        Some(RetrySettings {
            mode,
            max_attempts,
            initial_backoff,
            max_backoff,
        })
    }
}

impl FromNode for TimeoutSettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let d = TimeoutSettings::default();
        let mut m = cx.map(node, path)?;
        let connect = read_positive(&mut m, cx, "connect").unwrap_or(d.connect);
        let attempt = read_positive(&mut m, cx, "attempt").unwrap_or(d.attempt);
        let operation = read_positive(&mut m, cx, "operation").unwrap_or(d.operation);
        m.finish(cx, &["connect", "attempt", "operation"]);
        Some(TimeoutSettings {
            connect,
            attempt,
            operation,
        })
    }
}

impl FromNode for Schedule {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let mut m = cx.map(node, path)?;
        let interval = m.opt_with(cx, "interval", |n, p, cx| {
            let d = positive(Duration::from_node(n, p, cx)?, n, p, cx)?;
            if d < Duration::from_secs(1) {
                cx.error(n.span, p, "must be at least 1s");
                return None;
            }
            Some(d)
        });
        let cron = m.opt_with(cx, "cron", |n, p, cx| {
            let expr = String::from_node(n, p, cx)?;
            match parse_cron(&expr) {
                Ok(s) => Some(Schedule::Cron {
                    expression: expr,
                    schedule: Box::new(s),
                }),
                Err(e) => {
                    cx.error(n.span, p, e);
                    None
                }
            }
        });
        let both = m.has("interval") && m.has("cron");
        let neither =
            !m.has("interval") && !m.has("cron") && !m.misspelled("interval") && !m.misspelled("cron");
        let span = m.span();
        m.finish(cx, &["interval", "cron"]);
        if both {
            cx.error(span, path, "give either `interval` or `cron`, not both");
            return None;
        }
        if neither {
            cx.error(
                span,
                path,
                "give `interval` (e.g. 30s) or `cron` (e.g. \"*/30 * * * * *\")",
            );
        }
        interval.map(Schedule::Interval).or(cron)
    }
}

/// Parses a cron expression: 5 fields (minute hour day month weekday, as in crontab) or the
/// `cron` crate's 6/7 fields (with seconds first, and an optional year).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_string(),
        n => {
            return Err(format!(
                "`{expr}` has {n} fields; write 5 (min hour day month weekday) or 6 (sec min hour day month weekday)"
            ))
        }
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("`{expr}` is not a valid cron expression: {e}"))
}

impl FromNode for CollectSettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let d = CollectSettings::default();
        let mut m = cx.map(node, path)?;
        let period = m
            .opt_with(cx, "period", |n, p, cx| {
                check_period(Duration::from_node(n, p, cx)?, n, p, cx)
            })
            .unwrap_or(d.period);
        let delay = m.or(cx, "delay", d.delay);
        let lookback = read_positive(&mut m, cx, "lookback").unwrap_or(d.lookback);
        let concurrency = m
            .opt_with(cx, "concurrency", |n, p, cx| {
                let v = usize::from_node(n, p, cx)?;
                if (1..=64).contains(&v) {
                    Some(v)
                } else {
                    cx.error(n.span, p, format!("must be between 1 and 64, found {v}"));
                    None
                }
            })
            .unwrap_or(d.concurrency);
        let container_instances = m.or(cx, "container_instances", d.container_instances);
        let pending_tasks = m.or(cx, "pending_tasks", d.pending_tasks);
        if lookback < period {
            cx.error(
                m.span_of("lookback"),
                &join(path, "lookback"),
                "must be at least one period long",
            );
        }
        m.finish(
            cx,
            &[
                "period",
                "delay",
                "lookback",
                "concurrency",
                "container_instances",
                "pending_tasks",
            ],
        );
        Some(CollectSettings {
            period,
            delay,
            lookback,
            concurrency,
            container_instances,
            pending_tasks,
        })
    }
}

/// CloudWatch accepts periods of 1, 5, 10, 20 or 30 seconds (high-resolution metrics) or any
/// multiple of 60 seconds.
fn check_period(d: Duration, n: &Node, p: &str, cx: &mut Cx) -> Option<Duration> {
    let s = d.as_secs();
    if d.subsec_nanos() == 0 && (matches!(s, 1 | 5 | 10 | 20 | 30) || (s > 0 && s % 60 == 0)) {
        Some(d)
    } else {
        cx.error(
            n.span,
            p,
            format!(
                "CloudWatch periods are 1s, 5s, 10s, 20s, 30s or a multiple of 60s; found {}",
                humantime::format_duration(d)
            ),
        );
        None
    }
}

fn read_clusters(
    node: &Node,
    path: &str,
    cx: &mut Cx,
    collect: &CollectSettings,
) -> Option<Vec<ClusterSpec>> {
    let super::yaml::Value::Seq(items) = &node.value else {
        cx.error(
            node.span,
            path,
            format!("expected a list of clusters, found {}", node.describe()),
        );
        return None;
    };
    if items.is_empty() {
        cx.error(node.span, path, "name at least one cluster to manage");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match read_cluster(item, &p, cx, collect) {
            Some(c) => {
                if let Some(first) = seen.insert(c.name.clone(), c.span.line) {
                    cx.error(
                        c.span,
                        &join(&p, "name"),
                        format!("cluster `{}` is already listed on line {first}", c.name),
                    );
                    ok = false;
                }
                out.push(c);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn read_cluster(node: &Node, path: &str, cx: &mut Cx, collect: &CollectSettings) -> Option<ClusterSpec> {
    let mut m = cx.map(node, path)?;
    let name = m.req::<String>(cx, "name");
    let services = m
        .opt_with(cx, "services", |n, p, cx| read_services(n, p, cx, collect))
        .unwrap_or_default();
    let discover = m.opt::<Discovery>(cx, "discover");
    let metrics = m
        .opt_with(cx, "metrics", |n, p, cx| read_metrics(n, p, cx, collect))
        .unwrap_or_default();
    let default_metrics = m.or(cx, "default_metrics", true);
    if !m.has("services") && !m.has("discover") {
        cx.error(
            m.span(),
            path,
            "give `services` (a list) or `discover` (name_prefix and/or tags), or both",
        );
    }
    m.finish(
        cx,
        &["name", "services", "discover", "metrics", "default_metrics"],
    );
    Some(ClusterSpec {
        name: name?,
        services,
        discover,
        metrics,
        default_metrics,
        span: node.span,
    })
}

fn read_services(
    node: &Node,
    path: &str,
    cx: &mut Cx,
    collect: &CollectSettings,
) -> Option<Vec<ServiceSpec>> {
    let super::yaml::Value::Seq(items) = &node.value else {
        cx.error(
            node.span,
            path,
            format!("expected a list of services, found {}", node.describe()),
        );
        return None;
    };
    let mut out: Vec<ServiceSpec> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match read_service(item, &p, cx, collect) {
            Some(s) => {
                if let Some(first) = out.iter().find(|o| o.name == s.name) {
                    cx.error(
                        s.span,
                        &join(&p, "name"),
                        format!(
                            "service `{}` is already listed on line {}",
                            s.name, first.span.line
                        ),
                    );
                    ok = false;
                }
                out.push(s);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn read_service(node: &Node, path: &str, cx: &mut Cx, collect: &CollectSettings) -> Option<ServiceSpec> {
    // A bare name is a service with every default.
    if let Some(name) = node.as_scalar() {
        return Some(ServiceSpec {
            name: name.to_string(),
            target_group: None,
            load_balancer: None,
            default_metrics: None,
            metrics: Vec::new(),
            span: node.span,
        });
    }
    let mut m = cx.map(node, path)?;
    let name = m.req::<String>(cx, "name");
    let target_group = m.opt_with(cx, "target_group", |n, p, cx| {
        arn_suffix(&String::from_node(n, p, cx)?, "targetgroup/", n, p, cx)
    });
    let load_balancer = m.opt_with(cx, "load_balancer", |n, p, cx| {
        arn_suffix(&String::from_node(n, p, cx)?, "app/", n, p, cx)
    });
    let default_metrics = m.opt(cx, "default_metrics");
    let metrics = m
        .opt_with(cx, "metrics", |n, p, cx| read_metrics(n, p, cx, collect))
        .unwrap_or_default();
    if m.has("load_balancer") && !m.has("target_group") {
        cx.error(
            m.span_of("load_balancer"),
            &join(path, "load_balancer"),
            "needs `target_group` too: ALB metrics are published per target group",
        );
    }
    m.finish(
        cx,
        &[
            "name",
            "target_group",
            "load_balancer",
            "default_metrics",
            "metrics",
        ],
    );
    Some(ServiceSpec {
        name: name?,
        target_group,
        load_balancer,
        default_metrics,
        metrics,
        span: node.span,
    })
}

/// CloudWatch names a target group `targetgroup/NAME/ID` and an ALB `app/NAME/ID`: the tail of
/// their ARNs. Accepts either form.
fn arn_suffix(s: &str, prefix: &str, n: &Node, p: &str, cx: &mut Cx) -> Option<String> {
    let tail = match s.find(&format!(":{prefix}")) {
        Some(i) if s.starts_with("arn:") => &s[i + 1..],
        _ => s,
    };
    let tail = tail.strip_prefix("loadbalancer/").unwrap_or(tail);
    let ok = tail.starts_with(prefix) && tail.split('/').count() == 3 && !tail.ends_with('/');
    if ok {
        Some(tail.to_string())
    } else {
        cx.error(
            n.span,
            p,
            format!("`{s}` is neither an ARN nor a `{prefix}NAME/ID` name"),
        );
        None
    }
}

impl FromNode for Discovery {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let mut m = cx.map(node, path)?;
        let name_prefix = m.opt(cx, "name_prefix");
        let tags = m.opt::<BTreeMap<String, String>>(cx, "tags").unwrap_or_default();
        if !m.has("name_prefix") && !m.has("tags") {
            cx.error(
                m.span(),
                path,
                "give `name_prefix`, `tags`, or both (otherwise every service would match)",
            );
        }
        m.finish(cx, &["name_prefix", "tags"]);
        Some(Discovery { name_prefix, tags })
    }
}

fn read_metrics(node: &Node, path: &str, cx: &mut Cx, collect: &CollectSettings) -> Option<Vec<MetricSpec>> {
    let super::yaml::Value::Seq(items) = &node.value else {
        cx.error(
            node.span,
            path,
            format!("expected a list of metrics, found {}", node.describe()),
        );
        return None;
    };
    let mut out: Vec<MetricSpec> = Vec::new();
    let mut ok = true;
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match read_metric(item, &p, cx, collect) {
            Some(mspec) => {
                if let Some(first) = lines.insert(mspec.id.clone(), item.span.line) {
                    cx.error(
                        item.span,
                        &join(&p, "id"),
                        format!("metric id `{}` is already used on line {first}", mspec.id),
                    );
                    ok = false;
                }
                out.push(mspec);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

const STATS: &[&str] = &["Average", "Sum", "Minimum", "Maximum", "SampleCount", "IQM"];
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// A CloudWatch statistic: a basic one, or a percentile-style one such as `p95`, `p99.9`, `tm90`.
pub fn is_stat(s: &str) -> bool {
    if STATS.contains(&s) {
        return true;
    }
    ["p", "tm", "wm", "tc", "ts"].iter().any(|prefix| {
        s.strip_prefix(prefix)
            .and_then(|n| n.parse::<f64>().ok())
            .is_some_and(|v| (0.0..=100.0).contains(&v))
    })
}

fn read_metric(node: &Node, path: &str, cx: &mut Cx, collect: &CollectSettings) -> Option<MetricSpec> {
    let mut m = cx.map(node, path)?;
    let id = m.req_with(cx, "id", |n, p, cx| {
        let s = String::from_node(n, p, cx)?;
        let ok = s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Some(s)
        } else {
            cx.error(
                n.span,
                p,
                format!("`{s}`: ids are lowercase letters, digits and _, starting with a letter"),
            );
            None
        }
    });
    let namespace = m.req::<String>(cx, "namespace");
    let metric_name = m.req::<String>(cx, "metric_name");
    let dimensions = m
        .opt_with(cx, "dimensions", |n, p, cx| {
            let dims = BTreeMap::<String, String>::from_node(n, p, cx)?;
            let mut ok = true;
            for (k, v) in &dims {
                if let Err(e) = check_placeholders(v) {
                    cx.error(n.span, &join(p, k), e);
                    ok = false;
                }
            }
            if dims.len() > 30 {
                cx.error(n.span, p, "CloudWatch allows at most 30 dimensions");
                ok = false;
            }
            ok.then_some(dims)
        })
        .unwrap_or_default();
    let stat = m.opt_with(cx, "stat", |n, p, cx| {
        let s = String::from_node(n, p, cx)?;
        if is_stat(&s) {
            Some(s)
        } else {
            cx.error(
                n.span,
                p,
                format!(
                    "`{s}` is not a CloudWatch statistic ({} or a percentile such as p95)",
                    STATS.join(", ")
                ),
            );
            None
        }
    });
    let period = m
        .opt_with(cx, "period", |n, p, cx| {
            check_period(Duration::from_node(n, p, cx)?, n, p, cx)
        })
        .unwrap_or(collect.period);
    let delay = m.or(cx, "delay", collect.delay);
    let unit = m.opt_with(cx, "unit", |n, p, cx| one_of(n, p, cx, UNITS));
    if collect.lookback < period {
        cx.error(
            m.span(),
            &join(path, "period"),
            "is longer than collect.lookback: no datapoint would fit",
        );
    }
    m.finish(
        cx,
        &[
            "id",
            "namespace",
            "metric_name",
            "dimensions",
            "stat",
            "period",
            "delay",
            "unit",
        ],
    );
    Some(MetricSpec {
        id: id?,
        namespace: namespace?,
        metric_name: metric_name?,
        dimensions,
        stat: stat.unwrap_or_else(|| "Average".to_string()),
        period,
        delay,
        unit_filter: unit.is_some(),
        unit,
    })
}

/// Checks the `${name}` placeholders of a dimension value.
pub fn check_placeholders(v: &str) -> Result<(), String> {
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("`{v}`: `${{` without a closing `}}`"));
        };
        let name = &after[..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "`{v}`: unknown placeholder `${{{name}}}` (known: {})",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("${{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

fn read_sink(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<SinkSettings> {
    let mut m = cx.map(node, path)?;
    let elasticsearch = m.opt_with(cx, "elasticsearch", |n, p, cx| read_es(n, p, cx, base_dir));
    let spool = m
        .opt_with(cx, "spool", |n, p, cx| read_spool(n, p, cx, base_dir))
        .unwrap_or_else(|| SpoolSettings {
            dir: base_dir.join("spool"),
            ..SpoolSettings::default()
        });
    m.finish(cx, &["elasticsearch", "spool"]);
    Some(SinkSettings { elasticsearch, spool })
}

fn read_es(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<ElasticsearchSettings> {
    let mut m = cx.map(node, path)?;
    let url = m.req_with(cx, "url", |n, p, cx| {
        let u = String::from_node(n, p, cx)?;
        match check_http_url(&u) {
            Ok(()) => Some(u),
            Err(e) => {
                cx.error(n.span, p, e);
                None
            }
        }
    });
    let env_name = |n: &Node, p: &str, cx: &mut Cx| {
        let s = String::from_node(n, p, cx)?;
        if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Some(s)
        } else {
            cx.error(n.span, p, format!("`{s}` is not an environment variable name: give the variable's name, never the secret itself"));
            None
        }
    };
    let username = m.opt(cx, "username");
    let password_env = m.opt_with(cx, "password_env", env_name);
    let api_key_env = m.opt_with(cx, "api_key_env", env_name);
    let ca_file = m.opt::<String>(cx, "ca_file").map(|f| base_dir.join(f));
    let index_prefix = m.or(cx, "index_prefix", "ecscale".to_string());
    if m.has("username") != m.has("password_env") {
        cx.error(
            m.span(),
            path,
            "basic auth needs both `username` and `password_env`",
        );
    }
    if m.has("api_key_env") && m.has("username") {
        cx.error(
            m.span(),
            path,
            "give basic auth (`username`, `password_env`) or `api_key_env`, not both",
        );
    }
    m.finish(
        cx,
        &[
            "url",
            "username",
            "password_env",
            "api_key_env",
            "ca_file",
            "index_prefix",
        ],
    );
    Some(ElasticsearchSettings {
        url: url?,
        username,
        password_env,
        api_key_env,
        ca_file,
        index_prefix,
    })
}

fn read_spool(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<SpoolSettings> {
    let d = SpoolSettings::default();
    let mut m = cx.map(node, path)?;
    let dir = m
        .opt::<String>(cx, "dir")
        .map(|s| base_dir.join(s))
        .unwrap_or_else(|| base_dir.join(&d.dir));
    let max_bytes = m
        .opt_with(cx, "max_size", |n, p, cx| {
            let s = String::from_node(n, p, cx)?;
            match parse_bytes(&s) {
                Ok(0) => {
                    cx.error(n.span, p, "must be larger than zero");
                    None
                }
                Ok(b) => Some(b),
                Err(e) => {
                    cx.error(n.span, p, e);
                    None
                }
            }
        })
        .unwrap_or(d.max_bytes);
    let on_full = m
        .opt_with(cx, "on_full", |n, p, cx| {
            one_of(n, p, cx, &["block", "drop_oldest"])
        })
        .map(|s| {
            if s == "drop_oldest" {
                OnFull::DropOldest
            } else {
                OnFull::Block
            }
        })
        .unwrap_or(d.on_full);
    m.finish(cx, &["dir", "max_size", "on_full"]);
    Some(SpoolSettings {
        dir,
        max_bytes,
        on_full,
    })
}

fn read_policy_paths(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<Vec<PathBuf>> {
    let super::yaml::Value::Seq(items) = &node.value else {
        cx.error(
            node.span,
            path,
            format!(
                "expected a list of policy file paths or globs, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut files = BTreeSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(pattern) = String::from_node(item, &p, cx) else {
            ok = false;
            continue;
        };
        let full = base_dir.join(&pattern);
        let full_str = full.to_string_lossy().to_string();
        match glob::glob(&full_str) {
            Err(e) => {
                cx.error(item.span, &p, format!("`{pattern}` is not a valid glob: {e}"));
                ok = false;
            }
            Ok(paths) => {
                let found: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|f| f.is_file()).collect();
                if found.is_empty() {
                    cx.error(
                        item.span,
                        &p,
                        format!("no policy file matches `{pattern}` (looked for {full_str})"),
                    );
                    ok = false;
                }
                files.extend(found);
            }
        }
    }
    ok.then(|| files.into_iter().collect())
}
