//! The nouns every stage shares: what the collect stage saw, in types the evaluate, actuate and
//! ship stages consume. Nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::usage::ApiUsage;

/// The last `/` segment of an ARN: a service, task or instance name or id. A plain name is
/// returned as it is.
pub fn arn_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// A service, named by its cluster and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    pub cluster: String,
    pub service: String,
}

impl ServiceKey {
    pub fn new(cluster: impl Into<String>, service: impl Into<String>) -> Self {
        ServiceKey {
            cluster: cluster.into(),
            service: service.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.service)
    }
}

/// CPU in ECS units (1024 = one vCPU) and memory in MiB, as ECS reserves them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu: u32,
    pub memory_mib: u32,
}

/// What one task of a task definition reserves on an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDefinitionInfo {
    pub arn: String,
    pub family: String,
    pub revision: i32,
    /// Task-level CPU/memory when set, else the sum over its containers (memory: the soft
    /// `memoryReservation` where given, as ECS places by it, else the hard `memory`).
    pub reservation: Resources,
}

/// Where a service's rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollout {
    /// One deployment, completed.
    Completed,
    /// A new deployment is replacing tasks (several deployments, or the primary one is IN_PROGRESS).
    InProgress,
    /// The primary deployment reports FAILED.
    Failed,
}

impl fmt::Display for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rollout::Completed => "completed",
            Rollout::InProgress => "in_progress",
            Rollout::Failed => "failed",
        })
    }
}

/// One deployment of a service (ECS keeps the PRIMARY one and, during a rollout, ACTIVE older ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    /// `PRIMARY`, `ACTIVE` or `INACTIVE`.
    pub status: String,
    pub task_definition: String,
    pub desired: u32,
    pub running: u32,
    pub pending: u32,
    pub failed_tasks: u32,
    /// `COMPLETED`, `IN_PROGRESS` or `FAILED` when ECS reports it.
    pub rollout_state: Option<String>,
    pub rollout_state_reason: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A load balancer attachment of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerRef {
    pub target_group_arn: Option<String>,
    pub container_name: Option<String>,
    pub container_port: Option<i32>,
}

/// One ECS service as the collect stage saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub cluster: String,
    pub name: String,
    pub arn: String,
    /// `ACTIVE`, `DRAINING` or `INACTIVE`.
    pub status: String,
    pub desired: u32,
    pub running: u32,
    pub pending: u32,
    pub launch_type: Option<String>,
    /// Capacity providers of its strategy, if it uses one.
    pub capacity_providers: Vec<String>,
    pub task_definition: String,
    /// Filled from the task definition; `None` when it could not be read (see the problems).
    pub task_reservation: Option<Resources>,
    pub deployments: Vec<Deployment>,
    pub rollout: Rollout,
    pub load_balancers: Vec<LoadBalancerRef>,
    pub tags: BTreeMap<String, String>,
    pub created_at: Option<DateTime<Utc>>,
}

impl ServiceState {
    /// An ACTIVE EC2 service with all its tasks running, one completed deployment and nothing
    /// else known (for tests, examples and the simulator; adjust the fields as needed).
    pub fn steady(cluster: &str, name: &str, desired: u32) -> Self {
        ServiceState {
            cluster: cluster.into(),
            name: name.into(),
            arn: format!("arn:aws:ecs:us-east-1:1:service/{cluster}/{name}"),
            status: "ACTIVE".into(),
            desired,
            running: desired,
            pending: 0,
            launch_type: Some("EC2".into()),
            capacity_providers: Vec::new(),
            task_definition: format!("arn:aws:ecs:us-east-1:1:task-definition/{name}:1"),
            task_reservation: None,
            deployments: Vec::new(),
            rollout: Rollout::Completed,
            load_balancers: Vec::new(),
            tags: BTreeMap::new(),
            created_at: None,
        }
    }

    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(&self.cluster, &self.name)
    }

    /// The rollout state derived from the deployments.
    pub fn derive_rollout(deployments: &[Deployment]) -> Rollout {
        let primary = deployments.iter().find(|d| d.status == "PRIMARY");
        match primary.and_then(|d| d.rollout_state.as_deref()) {
            Some("FAILED") => Rollout::Failed,
            Some("IN_PROGRESS") => Rollout::InProgress,
            _ if deployments.iter().filter(|d| d.status != "INACTIVE").count() > 1 => Rollout::InProgress,
            _ => Rollout::Completed,
        }
    }
}

/// An EC2 instance registered to a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInstance {
    pub cluster: String,
    pub arn: String,
    pub ec2_instance_id: Option<String>,
    pub instance_type: Option<String>,
    /// `ACTIVE`, `DRAINING`, `REGISTERING`, ...
    pub status: String,
    pub agent_connected: bool,
    pub registered: Resources,
    pub remaining: Resources,
    pub running_tasks: u32,
    pub pending_tasks: u32,
    pub capacity_provider: Option<String>,
    pub registered_at: Option<DateTime<Utc>>,
    /// Its attributes (`ecs.availability-zone`, `ecs.instance-type`, custom ones), for
    /// placement constraints.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A task not yet running (PROVISIONING, PENDING or ACTIVATING).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingTask {
    pub cluster: String,
    pub arn: String,
    /// The service it belongs to, from its group (`service:NAME`), if any.
    pub service: Option<String>,
    pub last_status: String,
    pub reservation: Option<Resources>,
    pub container_instance: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// One datapoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The start of the datapoint's period.
    pub timestamp: DateTime<Utc>,
    pub value: f64,
}

/// A metric's datapoints for one service, oldest first; only complete periods (see
/// `collect.delay`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub cluster: String,
    pub service: String,
    /// The name policies use (`cpu`, `memory`, ...).
    pub id: String,
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: BTreeMap<String, String>,
    pub stat: String,
    pub period_secs: u64,
    pub unit: Option<String>,
    /// CloudWatch's status of the query: `Complete`, `PartialData`, `Forbidden`, `InternalError`.
    pub status: String,
    /// Load per task (see [`crate::config::MetricSpec::per_task`]).
    #[serde(default)]
    pub per_task: bool,
    /// Complete periods start before this: the slot `[complete_until - period, complete_until)`
    /// is the newest one that should have a datapoint. A series whose newest sample is older
    /// is stale, which the evaluate stage treats as missing data.
    pub complete_until: DateTime<Utc>,
    pub samples: Vec<Sample>,
    /// A long window of the same metric, for forecasts (read only for metrics a predictive
    /// rule needs; refreshed less often than `samples`).
    #[serde(skip)]
    pub history: Option<std::sync::Arc<Vec<Sample>>>,
}

impl Series {
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(&self.cluster, &self.service)
    }

    /// `cluster/service`, or `cluster` for a cluster-level series (capacity metrics).
    pub fn target(&self) -> String {
        if self.service.is_empty() {
            self.cluster.clone()
        } else {
            format!("{}/{}", self.cluster, self.service)
        }
    }

    pub fn latest(&self) -> Option<Sample> {
        self.samples.last().copied()
    }
}

/// What a policy scales: an ECS service's desired count, or an Auto Scaling group's desired
/// capacity (capacity policies).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
///
/// Its names are shared (`Arc<str>`): every decision of every tick carries its target's key.
pub enum TargetKey {
    Service {
        cluster: Arc<str>,
        service: Arc<str>,
    },
    AutoScalingGroup {
        name: Arc<str>,
    },
    /// Standalone tasks that ecscale places itself (`groups:` in the config).
    TaskGroup {
        cluster: Arc<str>,
        group: Arc<str>,
    },
}

impl TargetKey {
    pub fn service(cluster: impl Into<Arc<str>>, service: impl Into<Arc<str>>) -> Self {
        TargetKey::Service {
            cluster: cluster.into(),
            service: service.into(),
        }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetKey::Service { cluster, service } => write!(f, "{cluster}/{service}"),
            TargetKey::AutoScalingGroup { name } => write!(f, "asg/{name}"),
            TargetKey::TaskGroup { cluster, group } => write!(f, "{cluster}/group:{group}"),
        }
    }
}

/// Which way a decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    ScaleOut,
    ScaleIn,
    Hold,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::ScaleOut => "scale_out",
            Action::ScaleIn => "scale_in",
            Action::Hold => "hold",
        })
    }
}

/// What a rule's vote says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteStatus {
    /// A count.
    Wants,
    /// Keep the current count.
    Holds,
    /// No opinion.
    Abstains,
    /// Its metric had no data.
    MissingData,
    /// It failed (a plugin's error).
    Error,
    /// Recorded, not counted.
    ForecastOnly,
}

impl VoteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VoteStatus::Wants => "wants",
            VoteStatus::Holds => "holds",
            VoteStatus::Abstains => "abstains",
            VoteStatus::MissingData => "missing_data",
            VoteStatus::Error => "error",
            VoteStatus::ForecastOnly => "forecast_only",
        }
    }

    /// A vote that keeps the count (its reason is the hold's).
    pub fn keeps_the_count(self) -> bool {
        matches!(
            self,
            VoteStatus::Holds | VoteStatus::MissingData | VoteStatus::Error
        )
    }
}

impl std::fmt::Display for VoteStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one rule voted in a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub rule: std::sync::Arc<str>,
    /// `target_tracking`, `step_scaling`, ...
    pub kind: std::borrow::Cow<'static, str>,
    pub status: VoteStatus,
    /// The count it asked for, when it asked for one.
    pub wants: Option<u32>,
    pub reason: String,
}

/// What the engine decided for one target at one tick, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub target: TargetKey,
    pub at: DateTime<Utc>,
    /// The count before the decision.
    pub current: u32,
    /// Tasks (or instances) running when it was decided.
    #[serde(default)]
    pub running: u32,
    /// The count to set (equal to `current` for a hold).
    pub desired: u32,
    pub action: Action,
    /// The bounds in force (a schedule may have raised them).
    pub min: u32,
    pub max: u32,
    /// The rule that decided, or `min`, `max`, `schedule:NAME` when the bounds forced the count.
    pub rule: Option<std::sync::Arc<str>>,
    /// One human sentence: "cpu 82 > target 60 (±10%) for 3/3 datapoints → 4 → 6".
    pub reason: String,
    /// The count the rules asked for before cooldowns, stabilization and step caps.
    pub recommendation: u32,
    /// Metric values the rules used (id → value).
    pub inputs: BTreeMap<Arc<str>, f64>,
    pub votes: Vec<Vote>,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// One second of a load test: what the stress module measures and the ship stage indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StressSample {
    pub run_id: String,
    /// The start of the second (shipped as `@timestamp`).
    #[serde(skip)]
    pub at: DateTime<Utc>,
    pub phase: String,
    pub rate_planned: f64,
    pub rate_achieved: f64,
    pub requests: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// From the scheduled send time (what a user waits, coordinated omission included).
    pub latency_ms: Percentiles,
    /// From the actual send time (what the server took).
    pub service_time_ms: Percentiles,
    /// The watched service's running tasks, when the run watches one.
    pub task_count: Option<u32>,
}

/// One cluster as the collect stage saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    pub name: String,
    pub services: Vec<ServiceState>,
    pub container_instances: Vec<ContainerInstance>,
    pub pending_tasks: Vec<PendingTask>,
}

/// Something the collect stage could not see. The tick goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What it concerns: `cluster`, `cluster/service`, or `cloudwatch`.
    pub scope: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.scope, self.message)
    }
}

/// Everything one collection pass saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    pub clusters: Vec<ClusterSnapshot>,
    pub series: Vec<Series>,
    /// API calls made and CloudWatch metrics requested by this pass.
    pub usage: ApiUsage,
    pub problems: Vec<Problem>,
}

impl Snapshot {
    pub fn services(&self) -> impl Iterator<Item = &ServiceState> {
        self.clusters.iter().flat_map(|c| c.services.iter())
    }

    /// The series of one service, by a scan of every series: for one lookup. A tick that looks
    /// up every service builds a [`SeriesIndex`] once instead.
    pub fn series_of<'a>(&'a self, key: &'a ServiceKey) -> impl Iterator<Item = &'a Series> + 'a {
        self.series
            .iter()
            .filter(move |s| s.cluster == key.cluster && s.service == key.service)
    }
}

/// Each service's series in a snapshot, found by a binary search instead of a scan of every
/// series: a fleet's N services then cost N log N a tick, not N scans of all their series.
#[derive(Debug)]
pub struct SeriesIndex<'a> {
    series: &'a [Series],
    /// Runs of consecutive series of one service (a service's metrics are collected together,
    /// so usually one run each), sorted by service; a service's runs in the snapshot's order.
    runs: Vec<((&'a str, &'a str), std::ops::Range<usize>)>,
}

impl<'a> SeriesIndex<'a> {
    pub fn new(series: &'a [Series]) -> Self {
        let key = |s: &'a Series| (s.cluster.as_str(), s.service.as_str());
        let mut runs: Vec<((&str, &str), std::ops::Range<usize>)> = Vec::new();
        for (i, s) in series.iter().enumerate() {
            match runs.last_mut() {
                Some((k, r)) if *k == key(s) => r.end = i + 1,
                _ => runs.push((key(s), i..i + 1)),
            }
        }
        // Stable, and linear on runs already in order (as a pass collects services).
        runs.sort_by(|a, b| a.0.cmp(&b.0));
        SeriesIndex { series, runs }
    }

    /// The series of `key`, in the snapshot's order (as [`Snapshot::series_of`] finds them).
    pub fn series_of<'s>(&'s self, key: &'s ServiceKey) -> impl Iterator<Item = &'a Series> + 's {
        let want = (key.cluster.as_str(), key.service.as_str());
        let from = self.runs.partition_point(|(k, _)| *k < want);
        let series = self.series;
        self.runs[from..]
            .iter()
            .take_while(move |(k, _)| *k == want)
            .flat_map(move |(_, r)| &series[r.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(cluster: &str, service: &str, id: &str) -> Series {
        Series {
            cluster: cluster.into(),
            service: service.into(),
            id: id.into(),
            ..Series::default()
        }
    }

    #[test]
    fn the_index_finds_what_the_scan_finds_in_the_same_order() {
        // Runs of a service broken by others (as Prometheus series come after CloudWatch's),
        // the same service name in two clusters, a cluster's own series, and none at all.
        let all = vec![
            series("a", "web", "cpu"),
            series("a", "web", "memory"),
            series("a", "api", "cpu"),
            series("b", "web", "cpu"),
            series("a", "", "reservation"),
            series("a", "web", "p95"),
            series("a", "api", "queue"),
            series("a", "web", "requests"),
        ];
        let snapshot = Snapshot {
            taken_at: DateTime::<Utc>::default(),
            clusters: Vec::new(),
            series: all,
            usage: ApiUsage::default(),
            problems: Vec::new(),
        };
        let index = SeriesIndex::new(&snapshot.series);
        for key in [
            ("a", "web"),
            ("a", "api"),
            ("b", "web"),
            ("a", ""),
            ("b", "api"),
            ("c", ""),
        ] {
            let key = ServiceKey::new(key.0, key.1);
            let scanned: Vec<&str> = snapshot.series_of(&key).map(|s| s.id.as_str()).collect();
            let indexed: Vec<&str> = index.series_of(&key).map(|s| s.id.as_str()).collect();
            assert_eq!(indexed, scanned, "{key}");
        }
        let web = ServiceKey::new("a", "web");
        let ids: Vec<&str> = index.series_of(&web).map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["cpu", "memory", "p95", "requests"]);
        assert_eq!(SeriesIndex::new(&[]).series_of(&web).count(), 0);
    }

    #[test]
    fn arn_names() {
        assert_eq!(arn_name("arn:aws:ecs:us-east-1:1:service/demo/web"), "web");
        assert_eq!(arn_name("arn:aws:ecs:us-east-1:1:service/web"), "web");
        assert_eq!(arn_name("web"), "web");
    }

    fn dep(status: &str, rollout: Option<&str>) -> Deployment {
        Deployment {
            id: "d".into(),
            status: status.into(),
            task_definition: "td".into(),
            desired: 1,
            running: 1,
            pending: 0,
            failed_tasks: 0,
            rollout_state: rollout.map(str::to_string),
            rollout_state_reason: None,
            created_at: None,
            updated_at: None,
        }
    }

    #[test]
    fn rollout_is_derived_from_deployments() {
        use Rollout::*;
        let cases: &[(&[Deployment], Rollout)] = &[
            (&[], Completed),
            (&[dep("PRIMARY", Some("COMPLETED"))], Completed),
            (&[dep("PRIMARY", None)], Completed),
            (&[dep("PRIMARY", Some("IN_PROGRESS"))], InProgress),
            (&[dep("PRIMARY", Some("FAILED")), dep("ACTIVE", None)], Failed),
            (&[dep("PRIMARY", None), dep("ACTIVE", None)], InProgress),
            (
                &[dep("PRIMARY", Some("COMPLETED")), dep("INACTIVE", None)],
                Completed,
            ),
        ];
        for (deployments, want) in cases {
            assert_eq!(
                ServiceState::derive_rollout(deployments),
                *want,
                "{deployments:?}"
            );
        }
    }
}
