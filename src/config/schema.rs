//! The validated configuration types, their defaults, and the default metrics.
//!
//! Reading them from YAML (and every check) is in `parse` and `parse_clusters`; the README's
//! config reference is the user-facing copy of these doc comments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::read::yaml::Span;

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
    /// The `policies` entries they came from, as globs resolved against the config's folder
    /// (the file watcher looks for new files matching them).
    pub policy_globs: Vec<String>,
    /// EC2 capacity: the Auto Scaling groups behind the clusters.
    pub capacity: Vec<super::CapacitySpec>,
    /// The scheduled worker's own settings.
    pub worker: super::WorkerSettings,
    /// Where the worker pushes its events (chat webhooks).
    pub notify: Vec<super::NotifyTarget>,
    /// The Prometheus server of metrics read from Prometheus.
    pub prometheus: PrometheusSettings,
    /// Standalone tasks that ecscale places itself.
    pub groups: Vec<super::GroupSpec>,
}

/// How to reach AWS. Credentials always come from the standard chain (environment, profile,
/// web identity, ECS task role, EC2 instance role), never from this file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsSettings {
    /// Region; when absent, the standard chain decides (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// Any AWS-compatible endpoint (for all services), e.g. a moto server or a VPC endpoint.
    pub endpoint_url: Option<String>,
    /// A named profile from `~/.aws/config`.
    pub profile: Option<String>,
    pub retry: RetrySettings,
    pub timeouts: TimeoutSettings,
    /// The share of the account's API rate limits this worker may use.
    pub budget: BudgetSettings,
}

/// Shares of the account's API rate limits (token buckets shared with every other client of
/// the account): the worker paces its calls to stay within them, and a throttling answer
/// pauses the whole family, not one call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BudgetSettings {
    /// ECS's read bucket (DescribeServices, ListServices, ListTasks, DescribeTasks, the
    /// container instances' and clusters' reads): refilled at 20 calls a second, 100 at most.
    /// `None`: not paced.
    pub ecs_reads: Option<f64>,
}

impl BudgetSettings {
    /// ECS's read bucket: refill per second, and size.
    pub const ECS_READS: (f64, f64) = (20.0, 100.0);
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
        schedule: Box<super::cron::Cron>,
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
    /// Read the default ECS CPU and memory metrics at 20 seconds (ECS's high-resolution
    /// service metrics) instead of `period`.
    pub high_resolution: bool,
    /// Read services when ECS says they changed (an SQS queue of ECS's EventBridge events),
    /// plus a rolling reconciliation; `None`: every service is read every pass.
    pub events: Option<EventsSettings>,
}

/// The queue of ECS events a worker long-polls, and how stale a quiet service may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsSettings {
    /// The SQS queue's URL (an EventBridge rule routes the clusters' ECS events to it).
    pub queue_url: String,
    /// Every service is read at least this often, events or none (a fraction of them each
    /// pass, oldest first): the bound on the age of a count the worker acts on, since events
    /// can be lost, late or out of order.
    pub reconcile: Duration,
}

impl EventsSettings {
    pub const DEFAULT_RECONCILE: Duration = Duration::from_secs(600);
}

/// The period and delay of ECS's high-resolution service metrics.
pub const HIGH_RESOLUTION: Duration = Duration::from_secs(20);

impl Default for CollectSettings {
    fn default() -> Self {
        CollectSettings {
            period: Duration::from_secs(60),
            delay: Duration::from_secs(60),
            lookback: Duration::from_secs(15 * 60),
            concurrency: 8,
            container_instances: true,
            pending_tasks: true,
            high_resolution: false,
            events: None,
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
    /// Its region, when not the worker's (`aws.region`).
    pub region: Option<String>,
    /// A role to assume for it (another account), through STS with the standard chain.
    pub role_arn: Option<String>,
    /// Where this cluster was declared, for messages.
    pub span: Span,
}

impl ClusterSpec {
    /// Where its calls go: `(region, role)`, `(None, None)` for the worker's own.
    pub fn place(&self) -> (Option<&str>, Option<&str>) {
        (self.region.as_deref(), self.role_arn.as_deref())
    }

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
    /// An average or a count per task (CPU, memory, requests per target): it measures load
    /// spread over the tasks that were running, so rules read it over those tasks.
    pub per_task: bool,
    /// Read from Prometheus instead of CloudWatch (then `namespace` is `Prometheus`,
    /// `metric_name` the query, and there are no dimensions).
    pub prometheus: Option<PromQuery>,
}

/// A metric's PromQL query, and the server when not `prometheus.url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromQuery {
    /// May use `${cluster}`, `${service}`, `${target_group}`, `${load_balancer}`.
    pub query: String,
    pub url: Option<String>,
}

/// `prometheus:`: the server Prometheus metrics are read from, and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrometheusSettings {
    /// The base URL (`http://prometheus:9090`, or Amazon Managed Prometheus's workspace URL).
    pub url: Option<String>,
    /// A variable holding a bearer token.
    pub bearer_token_env: Option<String>,
    /// Basic auth: the user, with the password in `password_env`.
    pub username: Option<String>,
    pub password_env: Option<String>,
    /// One query's time limit.
    pub timeout: Option<Duration>,
    /// Sign queries with SigV4 through the AWS credential chain (Amazon Managed Prometheus).
    pub sigv4: Option<SigV4Settings>,
}

/// SigV4 signing of Prometheus queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Settings {
    /// The workspace's region (default: the AWS settings' region).
    pub region: Option<String>,
    /// The signing name: `aps` for Amazon Managed Prometheus.
    pub service: String,
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
/// utilization (at 20 s with `collect.high_resolution`), and with a target group the ALB request
/// count per target and in all (and, with a load balancer, the target response time).
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
        per_task: matches!(id, "cpu" | "memory" | "request_count_per_target"),
        prometheus: None,
    };
    let ecs = |mut m: MetricSpec| {
        if collect.high_resolution {
            m.period = HIGH_RESOLUTION;
            m.delay = HIGH_RESOLUTION;
        }
        m
    };
    let ecs_dims = [("ClusterName", "${cluster}"), ("ServiceName", "${service}")];
    let mut out = vec![
        ecs(metric(
            "cpu",
            "AWS/ECS",
            "CPUUtilization",
            &ecs_dims,
            "Average",
            "Percent",
        )),
        ecs(metric(
            "memory",
            "AWS/ECS",
            "MemoryUtilization",
            &ecs_dims,
            "Average",
            "Percent",
        )),
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
        out.push(metric(
            "request_count",
            "AWS/ApplicationELB",
            "RequestCount",
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

/// The metrics collected for a cluster with an Auto Scaling group in `capacity:`, for capacity
/// policies (`target: { auto_scaling_group: NAME }`): what ECS publishes per cluster.
pub fn capacity_metrics(collect: &CollectSettings) -> Vec<MetricSpec> {
    [
        ("cpu_reservation", "CPUReservation"),
        ("memory_reservation", "MemoryReservation"),
        ("cpu_utilization", "CPUUtilization"),
        ("memory_utilization", "MemoryUtilization"),
    ]
    .into_iter()
    .map(|(id, name)| MetricSpec {
        id: id.into(),
        namespace: "AWS/ECS".into(),
        metric_name: name.into(),
        dimensions: [("ClusterName".to_string(), "${cluster}".to_string())].into(),
        stat: "Average".into(),
        period: collect.period,
        delay: collect.delay,
        unit: Some("Percent".into()),
        unit_filter: false,
        per_task: false,
        prometheus: None,
    })
    .collect()
}

/// Where metrics, decisions and stress results go.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSettings {
    /// Prefix of the daily indices (`PREFIX-metrics-*`, `PREFIX-decisions-*`, `PREFIX-stress-*`);
    /// documents are named with it as they enter the spool, Elasticsearch or not.
    pub index_prefix: String,
    /// Elasticsearch/OpenSearch; when absent, documents stay in the local spool.
    pub elasticsearch: Option<ElasticsearchSettings>,
    pub spool: SpoolSettings,
}

impl Default for SinkSettings {
    fn default() -> Self {
        SinkSettings {
            index_prefix: "ecscale".into(),
            elasticsearch: None,
            spool: SpoolSettings::default(),
        }
    }
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
    /// Replicas of each index (0 on a single node).
    pub replicas: u32,
    /// An ILM policy to name in the templates (Elasticsearch only; OpenSearch has none).
    pub ilm_policy: Option<String>,
    /// Largest bulk request body.
    pub bulk_max_bytes: u64,
    /// Documents are sent at least this often.
    pub flush_interval: Duration,
    /// Bulk requests in flight at once.
    pub max_in_flight: usize,
    /// One request's time limit.
    pub timeout: Duration,
}

impl ElasticsearchSettings {
    /// The endpoint with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        ElasticsearchSettings {
            url: url.into(),
            username: None,
            password_env: None,
            api_key_env: None,
            ca_file: None,
            replicas: 1,
            ilm_policy: None,
            bulk_max_bytes: 5 << 20,
            flush_interval: Duration::from_secs(1),
            max_in_flight: 4,
            timeout: Duration::from_secs(30),
        }
    }
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
