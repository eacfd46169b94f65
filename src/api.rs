//! What the worker needs of ECS and CloudWatch, as small traits.
//!
//! The AWS SDK clients implement them (`crate::aws`), and so does the simulated cluster (`crate::sim`); the
//! collect stage (and later the worker) is written against these traits only, so the demo and
//! closed-loop tests run the same code path as production. Methods speak in `crate::model`
//! nouns; each maps to one API call, so the call counts the collect stage promises (batches of
//! 10 services, 500 metric queries) are visible in the code that makes them.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::{ContainerInstance, ServiceState, TaskDefinitionInfo};

/// Largest number of services one DescribeServices call takes.
pub const DESCRIBE_SERVICES_BATCH: usize = 10;
/// Largest number of container instances, or tasks, one Describe call takes.
pub const DESCRIBE_BATCH: usize = 100;
/// Largest number of resource ids one DescribeScalableTargets call takes.
pub const SCALABLE_TARGETS_BATCH: usize = 50;
/// Largest number of queries one GetMetricData call takes.
pub const METRIC_QUERIES_PER_CALL: usize = 500;
/// Largest number of datapoints one GetMetricData call returns.
pub const DATAPOINTS_PER_CALL: u64 = 100_800;

/// Why an API call failed, in the terms the worker acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Throttled even after the retries.
    Throttled,
    /// Credentials missing or not allowed to make the call.
    AccessDenied,
    /// The cluster, service or other resource does not exist.
    NotFound,
    /// No answer: connection refused, DNS, timeout (after the retries).
    Unreachable,
    /// Anything else the service answered.
    Other,
}

/// A failed API call, naming the operation, the resource and the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// `ECS.DescribeServices`, `CloudWatch.GetMetricData`, ...
    pub operation: String,
    /// What it was about (`cluster demo`, `3 services of cluster demo`, ...).
    pub resource: String,
    /// Where it was sent.
    pub endpoint: String,
    pub kind: ErrorKind,
    /// The error code AWS gave, if any (`ThrottlingException`, `AccessDeniedException`).
    pub code: Option<String>,
    /// The full cause.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) at {}: ", self.operation, self.resource, self.endpoint)?;
        if let Some(code) = &self.code {
            write!(f, "{code}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ApiError {}

/// One page of a List call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// The answer of a Describe call: what was found, and what was not (with ECS's reason).
#[derive(Debug, Clone, PartialEq)]
pub struct Described<T> {
    pub items: Vec<T>,
    /// `(arn or name, reason)`, e.g. `("arn:...:service/demo/web", "MISSING")`.
    pub failures: Vec<(String, String)>,
}

impl<T> Default for Described<T> {
    fn default() -> Self {
        Described {
            items: Vec::new(),
            failures: Vec::new(),
        }
    }
}

/// A task as DescribeTasks returns it (only what the worker uses).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    pub arn: String,
    /// `service:NAME` for service tasks, `family:NAME` for others.
    pub group: Option<String>,
    pub last_status: String,
    pub task_definition: String,
    /// Task-level CPU units and memory MiB, when ECS reports them.
    pub cpu: Option<u32>,
    pub memory_mib: Option<u32>,
    pub container_instance: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// What a paced family of calls affords a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAllowance {
    /// Which budget: clusters of one account and region draw from the same one.
    pub budget: usize,
    /// The calls it can make within the time asked about, waiting for its turns.
    pub calls: usize,
}

/// The ECS calls the collect stage makes.
#[async_trait]
pub trait EcsApi: Send + Sync {
    /// What `cluster`'s read budget affords within `within`; `None`: not paced (no budget).
    fn read_allowance(&self, _cluster: &str, _within: std::time::Duration) -> Option<ReadAllowance> {
        None
    }
    /// ListServices: one page of service ARNs.
    async fn list_services(
        &self,
        cluster: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, ApiError>;
    /// DescribeServices for at most [`DESCRIBE_SERVICES_BATCH`] names or ARNs, tags included.
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Described<ServiceState>, ApiError>;
    /// DescribeTaskDefinition.
    async fn describe_task_definition(&self, task_definition: &str) -> Result<TaskDefinitionInfo, ApiError>;
    /// ListContainerInstances: one page of ARNs.
    async fn list_container_instances(
        &self,
        cluster: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, ApiError>;
    /// DescribeContainerInstances for at most [`DESCRIBE_BATCH`] ARNs.
    async fn describe_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Described<ContainerInstance>, ApiError>;
    /// ListTasks with desired status RUNNING (which includes tasks still starting): one page.
    async fn list_tasks(&self, cluster: &str, next_token: Option<String>) -> Result<Page<String>, ApiError>;
    /// DescribeTasks for at most [`DESCRIBE_BATCH`] ARNs.
    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Described<TaskInfo>, ApiError>;
}

/// One metric query of a GetMetricData call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricQuery {
    /// Unique within the call; CloudWatch wants `^[a-z][a-zA-Z0-9_]*$`.
    pub id: String,
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<(String, String)>,
    pub stat: String,
    pub period_secs: u32,
    /// Only datapoints published with this unit, when set.
    pub unit: Option<String>,
}

/// A GetMetricData call: up to [`METRIC_QUERIES_PER_CALL`] queries over one time window.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDataRequest {
    /// The cluster whose account and region the call goes to (`None`: the worker's own).
    pub via: Option<String>,
    pub queries: Vec<MetricQuery>,
    /// Inclusive.
    pub start: DateTime<Utc>,
    /// Exclusive.
    pub end: DateTime<Utc>,
}

/// The datapoints of one query (on one page).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDataResult {
    pub id: String,
    /// `Complete`, `PartialData` (more on the next page), `Forbidden`, `InternalError`.
    pub status: String,
    pub points: Vec<(DateTime<Utc>, f64)>,
    pub messages: Vec<String>,
}

/// One page of a GetMetricData answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricDataPage {
    pub results: Vec<MetricDataResult>,
    pub next_token: Option<String>,
    /// Messages about the whole call.
    pub messages: Vec<String>,
}

/// The CloudWatch calls the collect stage makes.
#[async_trait]
pub trait CloudWatchApi: Send + Sync {
    /// GetMetricData, one page (timestamps ascending).
    async fn get_metric_data(
        &self,
        request: &MetricDataRequest,
        next_token: Option<String>,
    ) -> Result<MetricDataPage, ApiError>;
}

/// One message of a queue, and the handle that deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub body: String,
    pub receipt: String,
}

/// Largest number of messages one ReceiveMessage (or DeleteMessageBatch) call takes.
pub const QUEUE_BATCH: usize = 10;

/// The queue of ECS's events (SQS), long-polled by the worker.
#[async_trait]
pub trait QueueApi: Send + Sync {
    /// ReceiveMessage: at most [`QUEUE_BATCH`] messages, waiting up to `wait` for the first.
    async fn receive(&self, wait: std::time::Duration) -> Result<Vec<QueuedMessage>, ApiError>;
    /// DeleteMessageBatch of at most [`QUEUE_BATCH`] receipts: those not deleted, with why.
    async fn delete(&self, receipts: &[String]) -> Result<Vec<(String, String)>, ApiError>;
}

/// The ECS calls the actuators make (besides the reads above).
#[async_trait]
pub trait EcsWriteApi: Send + Sync {
    /// UpdateService(desiredCount).
    async fn update_service(&self, cluster: &str, service: &str, desired: u32) -> Result<(), ApiError>;
    /// UpdateContainerInstancesState to `DRAINING` or `ACTIVE`.
    async fn set_instances_state(&self, cluster: &str, arns: &[String], state: &str) -> Result<(), ApiError>;
    /// ListServices with schedulingStrategy DAEMON: every page, names.
    async fn daemon_services(&self, cluster: &str) -> Result<Vec<String>, ApiError>;
    /// ListTasks on one container instance + DescribeTasks: what runs (or starts) there.
    async fn instance_tasks(
        &self,
        cluster: &str,
        container_instance: &str,
    ) -> Result<Vec<TaskInfo>, ApiError>;
    /// DescribeClusters + DescribeCapacityProviders: the cluster's Auto Scaling group
    /// capacity providers.
    async fn capacity_providers(&self, cluster: &str) -> Result<Vec<CapacityProvider>, ApiError>;
    /// UpdateCapacityProvider: its managed scaling DISABLED (ECS stops sizing the group).
    async fn disable_managed_scaling(&self, provider: &str) -> Result<(), ApiError>;
    /// ListTasks(startedBy, desired RUNNING) + DescribeTasks: a task group's tasks.
    async fn started_by(&self, cluster: &str, started_by: &str) -> Result<Vec<TaskInfo>, ApiError>;
    /// StartTask: one task of `task_definition` on each of these container instances (at most
    /// 10), tagged `started_by`. Returns the tasks started and ECS's reasons for those it did
    /// not start (`ARN: RESOURCE:MEMORY`).
    async fn start_tasks(
        &self,
        cluster: &str,
        task_definition: &str,
        container_instances: &[String],
        started_by: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError>;
    /// StopTask.
    async fn stop_task(&self, cluster: &str, task: &str, reason: &str) -> Result<(), ApiError>;
    /// RunTask: `r.count` (at most 10) tasks of `r.task_definition`, the container's command and
    /// environment overridden. Returns the tasks started and ECS's reasons for those it did not
    /// start. Only AWS runs tasks; other implementations refuse.
    async fn run_tasks(&self, r: &RunTasks) -> Result<(Vec<String>, Vec<String>), ApiError> {
        Err(ApiError {
            operation: "ECS.RunTask".into(),
            resource: format!("cluster {}, task definition {}", r.cluster, r.task_definition),
            endpoint: "this client".into(),
            kind: ErrorKind::Other,
            code: None,
            message: "this ECS client does not run tasks".into(),
        })
    }
}

/// A RunTask call: where, what, and the container's command and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTasks {
    pub cluster: String,
    pub task_definition: String,
    pub count: u32,
    pub started_by: String,
    /// The container whose command and environment are overridden.
    pub container: String,
    pub command: Vec<String>,
    pub environment: Vec<(String, String)>,
    /// `FARGATE` or `EC2` (the cluster's default when absent).
    pub launch_type: Option<String>,
    /// awsvpc networking, when subnets are given.
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
}

/// An ECS capacity provider backed by an Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityProvider {
    pub name: String,
    /// The group's ARN (`…:autoScalingGroupName/NAME`).
    pub auto_scaling_group_arn: String,
    /// Managed scaling ENABLED: ECS sizes the group itself.
    pub managed_scaling: bool,
}

impl CapacityProvider {
    /// Whether it is backed by the group named `group` (a name or an ARN).
    pub fn backs(&self, group: &str) -> bool {
        self.auto_scaling_group_arn == group
            || self
                .auto_scaling_group_arn
                .rsplit_once(":autoScalingGroupName/")
                .is_some_and(|(_, name)| name == group)
    }

    /// Among a cluster's `providers`, the one with managed scaling that sizes `group`: ECS's
    /// to size, not ecscale's.
    pub fn managing<'a>(providers: &'a [CapacityProvider], group: &str) -> Option<&'a CapacityProvider> {
        providers.iter().find(|p| p.managed_scaling && p.backs(group))
    }
}

/// An instance of an Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInstance {
    pub id: String,
    /// `InService`, `Pending`, `Terminating`, ...
    pub lifecycle_state: String,
    pub instance_type: Option<String>,
    pub protected_from_scale_in: bool,
}

/// An Auto Scaling group as the capacity actuator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub instances: Vec<GroupInstance>,
    /// From the launch configuration, or the instances.
    pub instance_type: Option<String>,
}

/// The Auto Scaling calls the capacity actuator makes.
#[async_trait]
pub trait AutoScalingApi: Send + Sync {
    /// DescribeAutoScalingGroups (+ DescribeLaunchConfigurations for the instance type).
    async fn describe_group(&self, name: &str) -> Result<GroupInfo, ApiError>;
    /// SetDesiredCapacity.
    async fn set_desired_capacity(&self, name: &str, desired: u32) -> Result<(), ApiError>;
    /// TerminateInstanceInAutoScalingGroup, decrementing the desired capacity. `group` is the
    /// instance's group (AWS does not need it; it says where the group is).
    async fn terminate_instance(&self, group: &str, instance_id: &str) -> Result<(), ApiError>;
}

/// Application Auto Scaling's hold on an ECS service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalableTarget {
    /// Its dynamic scaling (scale-in and scale-out) is suspended.
    pub suspended: bool,
}

/// The Application Auto Scaling calls the service actuator makes.
#[async_trait]
pub trait AppAutoScalingApi: Send + Sync {
    /// DescribeScalableTargets for at most [`SCALABLE_TARGETS_BATCH`] services' desired counts:
    /// the services that have one (those absent have none).
    async fn scalable_targets(
        &self,
        services: &[crate::model::ServiceKey],
    ) -> Result<std::collections::HashMap<crate::model::ServiceKey, ScalableTarget>, ApiError>;
    /// RegisterScalableTarget with its dynamic and scheduled scaling suspended.
    async fn suspend(&self, cluster: &str, service: &str) -> Result<(), ApiError>;
}
