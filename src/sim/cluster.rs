//! The simulated cluster's state machine: one ECS service and any number of task groups
//! (standalone tasks that ecscale places with StartTask) of different task sizes, sharing the
//! EC2 instances of one Auto Scaling group.
//!
//! [`Cluster::advance`] moves it to a given time, in the order ECS and EC2 Auto Scaling would:
//! booted instances register (ACTIVE), the group launches or terminates instances towards its
//! desired capacity (and replaces dead ones), tasks on DRAINING instances are stopped (ECS starts
//! their replacements elsewhere), the service scheduler starts or stops tasks towards the desired
//! count, waiting tasks are placed (binpack on CPU, then memory) where they fit (a task that fits
//! nowhere stays PROVISIONING), and placed tasks turn RUNNING once their start time has passed.
//! Standalone tasks are placed only by [`Cluster::start_task`], onto the instance it names, and
//! are never replaced by ECS: a task that dies, or sits on a DRAINING instance, is its starter's
//! business (as in ECS). Each group works off a queue that the service's answered requests feed.
//! Everything that happens is an [`Event`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::load::TaskMeter;
use crate::model::Resources;

/// What the simulated cluster is made of.
#[derive(Debug, Clone)]
pub struct Spec {
    pub region: String,
    pub account: String,
    pub cluster: String,
    pub service: String,
    /// The Auto Scaling group of the cluster's instances.
    pub auto_scaling_group: String,
    pub instance_type: String,
    /// What one task reserves.
    pub task: Resources,
    /// Requests per second one task serves at 100 % CPU.
    pub task_rps: f64,
    pub initial_tasks: u32,
    pub initial_instances: u32,
    pub group_min: u32,
    pub group_max: u32,
    /// PENDING → RUNNING once placed.
    pub task_start: Duration,
    /// Launch → registered with the cluster.
    pub instance_boot: Duration,
    /// A minute's datapoint becomes visible this long after the minute ends.
    pub metric_lag: Duration,
    /// ECS's high-resolution service metrics: CPU and memory published per window of this
    /// length (instead of per minute), each visible `high_resolution_lag` after it ends.
    pub high_resolution: Option<Duration>,
    pub high_resolution_lag: Duration,
    /// A request that would wait longer than this in a task's queue is refused (503).
    pub max_queue_wait: Duration,
    /// The mean time one request takes when it does not wait (default `1 / task_rps`), and the
    /// queueing factor of the waits (`(ca² + cs²) / 2`): the latency curve a twin fits.
    pub service_time: Option<Duration>,
    pub queueing: f64,
    /// The embedded worker config's capacity settings for the group: headroom per instance
    /// (a fraction) and room kept for spare tasks.
    pub headroom: f64,
    pub spare_tasks: u32,
    pub seed: u64,
    /// Task groups sharing the instances with the service.
    pub groups: Vec<GroupWorkload>,
}

/// A group of standalone tasks in the simulated cluster (a `groups:` entry of the worker's
/// config): a queue worker. Each request the service answers puts `jobs_per_request` jobs on its
/// SQS queue; each RUNNING task works off `jobs_per_task_s` jobs per second.
#[derive(Debug, Clone)]
pub struct GroupWorkload {
    /// The group's name in ecscale's config (its tasks are started by `ecscale/NAME`).
    pub name: String,
    /// Its task definition's family (revision 1).
    pub family: String,
    pub task: Resources,
    /// The SQS queue's name (`QueueName` in CloudWatch).
    pub queue: String,
    pub jobs_per_request: f64,
    pub jobs_per_task_s: f64,
}

impl GroupWorkload {
    /// A queue worker of 1 vCPU and 2 GiB (twice the example service's task): a job per four
    /// answered requests, 15 jobs per second per task.
    pub fn queue_worker() -> Self {
        GroupWorkload {
            name: "queue-worker".into(),
            family: "queue-worker".into(),
            task: Resources {
                cpu: 1024,
                memory_mib: 2048,
            },
            queue: "jobs".into(),
            jobs_per_request: 0.25,
            jobs_per_task_s: 15.0,
        }
    }
}

impl Spec {
    /// The cluster the example policies (`policies/web.yaml`, `policies/capacity.yaml`) name:
    /// `production/web` on `production-ecs-m5` (m5.large: 2 vCPU, 7.5 GiB), tasks of 0.5 vCPU
    /// and 1 GiB serving 40 requests/s each at full CPU.
    pub fn example() -> Self {
        Spec {
            region: "us-east-1".into(),
            account: "123456789012".into(),
            cluster: "production".into(),
            service: "web".into(),
            auto_scaling_group: "production-ecs-m5".into(),
            instance_type: "m5.large".into(),
            task: Resources {
                cpu: 512,
                memory_mib: 1024,
            },
            task_rps: 40.0,
            initial_tasks: 3,
            initial_instances: 3,
            group_min: 3,
            group_max: 50,
            task_start: Duration::from_secs(30),
            instance_boot: Duration::from_secs(90),
            metric_lag: Duration::from_secs(45),
            high_resolution: Some(Duration::from_secs(20)),
            high_resolution_lag: Duration::from_secs(20),
            headroom: 0.1,
            spare_tasks: 0,
            max_queue_wait: Duration::from_secs(2),
            service_time: None,
            queueing: QUEUEING,
            seed: 7,
            groups: Vec::new(),
        }
    }

    /// [`Spec::example`] with a queue-worker group ([`GroupWorkload::queue_worker`]) on the same
    /// instances: two workloads of different task sizes. No headroom: every instance the
    /// capacity stage launches is one the tasks need (headroom is room kept empty on purpose,
    /// and ECS's binpack keeps it as whole empty instances).
    pub fn two_workloads() -> Self {
        Spec {
            groups: vec![GroupWorkload::queue_worker()],
            headroom: 0.0,
            ..Spec::example()
        }
    }

    /// The availability zones instances are launched into (balanced, as Auto Scaling does).
    pub fn zones(&self) -> [String; 3] {
        ["a", "b", "c"].map(|z| format!("{}{z}", self.region))
    }

    /// The group whose task definition `td` names (`family`, `family:1` or its ARN).
    pub fn group_of(&self, td: &str) -> Option<usize> {
        self.groups.iter().position(|g| {
            td == g.family || td == format!("{}:1", g.family) || td == self.family_arn(&g.family)
        })
    }

    pub fn family_arn(&self, family: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:task-definition/{family}:1",
            self.region, self.account
        )
    }

    pub fn cluster_arn(&self) -> String {
        format!(
            "arn:aws:ecs:{}:{}:cluster/{}",
            self.region, self.account, self.cluster
        )
    }

    pub fn service_arn(&self) -> String {
        format!(
            "arn:aws:ecs:{}:{}:service/{}/{}",
            self.region, self.account, self.cluster, self.service
        )
    }

    pub fn task_definition_arn(&self) -> String {
        self.family_arn(&self.service)
    }

    /// The target group's `targetgroup/NAME/ID`, as CloudWatch names it.
    pub fn target_group(&self) -> String {
        format!("targetgroup/{}/5e1d0c0ffee00001", self.service)
    }

    pub fn target_group_arn(&self) -> String {
        format!(
            "arn:aws:elasticloadbalancing:{}:{}:{}",
            self.region,
            self.account,
            self.target_group()
        )
    }

    /// The load balancer's `app/NAME/ID`.
    pub fn load_balancer(&self) -> String {
        format!("app/{}-alb/5e1d0c0ffee00002", self.cluster)
    }

    /// What one instance offers.
    pub fn instance_resources(&self) -> Resources {
        crate::actuate::capacity::instance_type_resources(&self.instance_type).unwrap_or(Resources {
            cpu: 2048,
            memory_mib: 7680,
        })
    }
}

/// Service-time variability (squared coefficient of variation) and arrival variability: the
/// queueing factor `(ca² + cs²) / 2` of a task by default.
const CS2: f64 = 0.25;
const CA2: f64 = 1.0;
pub const QUEUEING: f64 = (CA2 + CS2) / 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Created, waiting for an instance with room.
    Provisioning,
    /// Placed, starting.
    Pending,
    Running,
    Stopped,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Stopped => "STOPPED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub arn: String,
    /// What the demo app answers with (12 hex digits, like a Docker container id).
    pub container_id: String,
    pub status: TaskStatus,
    /// Index into [`Cluster::instances`].
    pub instance: Option<usize>,
    pub created_at: DateTime<Utc>,
    /// When a placed task turns RUNNING.
    pub ready_at: Option<DateTime<Utc>>,
    pub meter: Arc<TaskMeter>,
    /// What it reserves.
    pub size: Resources,
    /// A standalone task: the index of its group in [`Spec::groups`], and its `startedBy`.
    pub group: Option<(usize, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    /// Launched, not registered yet (Auto Scaling `Pending`).
    Booting,
    Active,
    Draining,
    Terminated,
}

#[derive(Debug, Clone)]
pub struct Instance {
    /// `i-...`
    pub id: String,
    /// The container instance ARN (once registered; made up front).
    pub arn: String,
    pub status: InstanceStatus,
    pub launched_at: DateTime<Utc>,
    pub registered_at: Option<DateTime<Utc>>,
    /// Its availability zone.
    pub zone: String,
    /// When a task was first placed on it.
    pub first_task_at: Option<DateTime<Utc>>,
}

/// A group's SQS queue.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Queue {
    pub depth: f64,
    /// Jobs sent and jobs worked off since the minute started.
    pub sent: f64,
    pub done: f64,
}

/// Something that happened in the cluster.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// `task_started`, `task_stopped`, `task_killed`, `instance_launched`, `instance_in_service`,
    /// `instance_terminated`, `instance_killed`, `task_waiting`, `desired_count`, `group_desired`.
    pub kind: &'static str,
    pub text: String,
}

/// The cluster at [`Cluster::now`].
#[derive(Debug)]
pub struct Cluster {
    pub spec: Spec,
    pub now: DateTime<Utc>,
    pub desired: u32,
    pub group_desired: u32,
    /// The service's tasks.
    pub tasks: Vec<Task>,
    /// The groups' standalone tasks (not stopped).
    pub standalone: Vec<Task>,
    /// Each group's queue: jobs waiting, and jobs sent in the current minute.
    pub queues: Vec<Queue>,
    pub instances: Vec<Instance>,
    pub events: Vec<Event>,
    /// Task-seconds spent placed (PENDING or RUNNING), and instance-seconds launched.
    pub task_seconds: f64,
    pub instance_seconds: f64,
    pub service_created: DateTime<Utc>,
    pub last_desired_change: DateTime<Utc>,
    /// Meters of the tasks removed since the last look (their last minute is still published).
    pub retired: Vec<Arc<TaskMeter>>,
    rng: u64,
    next_id: u64,
    /// A waiting task was reported once (not on every advance).
    waiting_reported: bool,
    /// The longest a service task waited for an instance with room, once placed.
    longest_wait: TimeDelta,
    /// Group-task-seconds placed (PENDING or RUNNING).
    pub group_task_seconds: f64,
}

fn ids(rng: &mut u64, digits: usize) -> String {
    let mut s = String::with_capacity(digits);
    while s.len() < digits {
        s.push_str(&format!("{:016x}", next_u64(rng)));
    }
    s.truncate(digits);
    s
}

/// xorshift64*: enough randomness for ids and service times, reproducible from the seed.
pub fn next_u64(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Places `t` on instance `i` at `now`: PENDING until its start time has passed.
fn put_on(now: DateTime<Utc>, start: Duration, t: &mut Task, instances: &mut [Instance], i: usize) {
    t.instance = Some(i);
    t.status = TaskStatus::Pending;
    t.ready_at = Some(now + TimeDelta::from_std(start).unwrap_or_default());
    instances[i].first_task_at.get_or_insert(now);
}

impl Cluster {
    /// The cluster with its initial instances registered and its initial tasks running.
    pub fn new(spec: Spec, now: DateTime<Utc>) -> Self {
        let mut c = Cluster {
            desired: spec.initial_tasks,
            group_desired: spec.initial_instances,
            tasks: Vec::new(),
            standalone: Vec::new(),
            queues: vec![Queue::default(); spec.groups.len()],
            instances: Vec::new(),
            events: Vec::new(),
            task_seconds: 0.0,
            instance_seconds: 0.0,
            service_created: now,
            last_desired_change: now,
            retired: Vec::new(),
            rng: spec.seed.max(1),
            next_id: 0,
            waiting_reported: false,
            longest_wait: TimeDelta::zero(),
            group_task_seconds: 0.0,
            now,
            spec,
        };
        for _ in 0..c.group_desired {
            let i = c.launch();
            c.instances[i].status = InstanceStatus::Active;
            c.instances[i].registered_at = Some(now);
        }
        for _ in 0..c.desired {
            c.create_task();
        }
        c.place();
        for t in &mut c.tasks {
            if t.status == TaskStatus::Pending {
                t.status = TaskStatus::Running;
                t.ready_at = Some(now);
            }
        }
        c.events.clear();
        c
    }

    fn event(&mut self, kind: &'static str, text: String) {
        self.events.push(Event {
            at: self.now,
            kind,
            text,
        });
    }

    fn launch(&mut self) -> usize {
        let id = format!("i-0{}", ids(&mut self.rng, 16));
        let zones = self.spec.zones();
        let zone = zones
            .iter()
            .min_by_key(|z| self.group_instances().filter(|(_, i)| i.zone == **z).count())
            .cloned()
            .unwrap_or_default();
        let arn = format!(
            "arn:aws:ecs:{}:{}:container-instance/{}/{}",
            self.spec.region,
            self.spec.account,
            self.spec.cluster,
            ids(&mut self.rng, 32)
        );
        self.instances.push(Instance {
            id,
            arn,
            status: InstanceStatus::Booting,
            launched_at: self.now,
            registered_at: None,
            zone,
            first_task_at: None,
        });
        self.instances.len() - 1
    }

    fn new_task(&mut self, size: Resources, group: Option<(usize, String)>) -> Task {
        self.next_id += 1;
        let id = ids(&mut self.rng, 32);
        let arn = format!(
            "arn:aws:ecs:{}:{}:task/{}/{}",
            self.spec.region, self.spec.account, self.spec.cluster, id
        );
        let container_id = ids(&mut self.rng, 12);
        Task {
            id,
            arn,
            container_id,
            status: TaskStatus::Provisioning,
            instance: None,
            created_at: self.now,
            ready_at: None,
            meter: Arc::new(TaskMeter::default()),
            size,
            group,
        }
    }

    fn create_task(&mut self) {
        let t = self.new_task(self.spec.task, None);
        self.tasks.push(t);
    }

    /// StartTask of one task of group `g` onto the container instance `arn`, started by `by`:
    /// the task's ARN, or ECS's failure reason (`MISSING`, `INACTIVE`, `RESOURCE:CPU`,
    /// `RESOURCE:MEMORY`).
    pub fn start_task(&mut self, g: usize, arn: &str, by: &str) -> Result<String, &'static str> {
        let i = self
            .instances
            .iter()
            .position(|i| {
                i.arn == arn && i.status != InstanceStatus::Terminated && i.status != InstanceStatus::Booting
            })
            .ok_or("MISSING")?;
        if self.instances[i].status != InstanceStatus::Active {
            return Err("INACTIVE");
        }
        let size = self.spec.groups[g].task;
        let (used, _, _) = self.used(i);
        let room = self.spec.instance_resources();
        if used.cpu + size.cpu > room.cpu {
            return Err("RESOURCE:CPU");
        }
        if used.memory_mib + size.memory_mib > room.memory_mib {
            return Err("RESOURCE:MEMORY");
        }
        let mut t = self.new_task(size, Some((g, by.to_string())));
        put_on(self.now, self.spec.task_start, &mut t, &mut self.instances, i);
        let text = format!(
            "task {} of group {} placed on {} ({}) by StartTask",
            &t.id[..8],
            self.spec.groups[g].name,
            self.instances[i].id,
            self.instances[i].zone
        );
        let arn = t.arn.clone();
        self.standalone.push(t);
        self.event("group_task_placed", text);
        Ok(arn)
    }

    /// StopTask: a standalone task stops for good, a service task is replaced by the service.
    pub fn stop_by_arn(&mut self, arn: &str, reason: &str) -> bool {
        if let Some(k) = self.standalone.iter().position(|t| t.arn == arn) {
            let t = &mut self.standalone[k];
            t.status = TaskStatus::Stopped;
            let text = format!("task {} of a group stopped by StopTask: {reason}", &t.id[..8]);
            self.event("group_task_stopped", text);
            return true;
        }
        match self.tasks.iter().position(|t| t.arn == arn) {
            Some(k) => {
                self.stop_task(k, "task_stopped", reason);
                true
            }
            None => false,
        }
    }

    /// The live standalone tasks of group `g`.
    pub fn group_tasks(&self, g: usize) -> impl Iterator<Item = &Task> {
        self.standalone.iter().filter(move |t| {
            t.group.as_ref().is_some_and(|(k, _)| *k == g) && t.status != TaskStatus::Stopped
        })
    }

    /// Moves every group's queue on by `real_s` seconds in which the service answered
    /// `answered` requests.
    pub fn work_queues(&mut self, answered: f64, real_s: f64) {
        for (g, spec) in self.spec.groups.iter().enumerate() {
            let running = self
                .group_tasks(g)
                .filter(|t| t.status == TaskStatus::Running)
                .count() as f64;
            let q = &mut self.queues[g];
            let sent = answered * spec.jobs_per_request;
            let done = (q.depth + sent).min(running * spec.jobs_per_task_s * real_s);
            q.depth += sent - done;
            q.sent += sent;
            q.done += done;
        }
    }

    /// Tasks not stopped.
    pub fn live_tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(|t| t.status != TaskStatus::Stopped)
    }

    pub fn count(&self, status: TaskStatus) -> u32 {
        self.tasks.iter().filter(|t| t.status == status).count() as u32
    }

    /// Instances launched and not terminated.
    pub fn group_instances(&self) -> impl Iterator<Item = (usize, &Instance)> {
        self.instances
            .iter()
            .enumerate()
            .filter(|(_, i)| i.status != InstanceStatus::Terminated)
    }

    pub fn instances_in(&self, status: InstanceStatus) -> u32 {
        self.instances.iter().filter(|i| i.status == status).count() as u32
    }

    /// What the placed tasks of instance `i` reserve.
    pub fn used(&self, i: usize) -> (Resources, u32, u32) {
        let mut used = Resources::default();
        let (mut running, mut pending) = (0, 0);
        let all = self.tasks.iter().chain(&self.standalone);
        for t in all.filter(|t| t.instance == Some(i)) {
            match t.status {
                TaskStatus::Running => running += 1,
                TaskStatus::Pending => pending += 1,
                _ => continue,
            }
            used.cpu += t.size.cpu;
            used.memory_mib += t.size.memory_mib;
        }
        (used, running, pending)
    }

    fn stop_task(&mut self, k: usize, kind: &'static str, why: &str) {
        let t = &mut self.tasks[k];
        if t.status == TaskStatus::Stopped {
            return;
        }
        let was = t.status;
        t.status = TaskStatus::Stopped;
        let text = format!(
            "task {} ({}) stopped from {}: {why}",
            &t.id[..8],
            t.container_id,
            was.as_str()
        );
        self.event(kind, text);
    }

    /// The live tasks in the order a scale-in stops them: waiting, then starting, then running
    /// ones, newest first; with `emptiest_first`, running ones on the instances with the fewest
    /// tasks first (so instances empty out).
    pub fn scale_in_order(&self, emptiest_first: bool) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.tasks.len())
            .filter(|&k| self.tasks[k].status != TaskStatus::Stopped)
            .collect();
        order.sort_by_key(|&k| {
            let t = &self.tasks[k];
            let rank = match t.status {
                TaskStatus::Provisioning => 0,
                TaskStatus::Pending => 1,
                _ => 2,
            };
            let load = match t.instance {
                Some(i) if emptiest_first => self.used(i).1 + self.used(i).2,
                _ => 0,
            };
            (rank, load, std::cmp::Reverse(t.created_at))
        });
        order
    }

    /// Stops a task the service no longer needs (the scheduler does not replace it once the
    /// desired count is lowered).
    pub fn stop_for_scale_in(&mut self, k: usize) {
        self.stop_task(k, "task_stopped", "scale-in");
    }

    /// Stops a task as if its container crashed; the scheduler replaces it.
    pub fn kill_task(&mut self, k: usize) {
        self.stop_task(k, "task_killed", "killed (essential container exited)");
    }

    /// Terminates an instance as if it failed its health check: its tasks stop, the group
    /// launches a replacement, the service starts new tasks.
    pub fn kill_instance(&mut self, i: usize) {
        if self.instances[i].status == InstanceStatus::Terminated {
            return;
        }
        self.instances[i].status = InstanceStatus::Terminated;
        let text = format!(
            "instance {} killed (failed its health check)",
            self.instances[i].id
        );
        self.event("instance_killed", text);
        self.stop_on(i);
    }

    /// Every task on instance `i` stops: it was terminated.
    fn stop_on(&mut self, i: usize) {
        for k in 0..self.tasks.len() {
            if self.tasks[k].instance == Some(i) {
                self.stop_task(k, "task_stopped", "its instance was terminated");
            }
        }
        let mut lost = Vec::new();
        for t in self.standalone.iter_mut() {
            if t.instance == Some(i) && t.status != TaskStatus::Stopped {
                t.status = TaskStatus::Stopped;
                lost.push(format!(
                    "task {} of a group stopped: its instance was terminated",
                    &t.id[..8]
                ));
            }
        }
        for text in lost {
            self.event("group_task_stopped", text);
        }
    }

    /// The longest a service task has waited for an instance with room (placed or still waiting).
    pub fn longest_wait(&self) -> TimeDelta {
        self.tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Provisioning)
            .map(|t| self.now - t.created_at)
            .fold(self.longest_wait, TimeDelta::max)
    }

    pub fn set_desired(&mut self, n: u32) {
        if n != self.desired {
            self.event(
                "desired_count",
                format!("service desired count {} → {n}", self.desired),
            );
            self.desired = n;
            self.last_desired_change = self.now;
        }
    }

    pub fn set_group_desired(&mut self, n: u32) {
        let n = n.clamp(self.spec.group_min, self.spec.group_max);
        if n != self.group_desired {
            self.event(
                "group_desired",
                format!("group desired capacity {} → {n}", self.group_desired),
            );
            self.group_desired = n;
        }
    }

    /// TerminateInstanceInAutoScalingGroup with the desired capacity decremented.
    pub fn terminate_instance(&mut self, i: usize) {
        if self.instances[i].status == InstanceStatus::Terminated {
            return;
        }
        self.instances[i].status = InstanceStatus::Terminated;
        self.group_desired = self.group_desired.saturating_sub(1).max(self.spec.group_min);
        let text = format!(
            "instance {} terminated (scale-in; group desired {})",
            self.instances[i].id, self.group_desired
        );
        self.event("instance_terminated", text);
        self.stop_on(i);
    }

    /// Moves the cluster to `now`.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        if now <= self.now {
            return;
        }
        self.meter_until(now);
        self.now = now;
        self.register_booted(now);
        self.size_group();
        // Tasks on draining instances move.
        for k in 0..self.tasks.len() {
            let on_draining = self.tasks[k]
                .instance
                .is_some_and(|i| self.instances[i].status == InstanceStatus::Draining);
            if on_draining && self.tasks[k].status != TaskStatus::Stopped {
                self.stop_task(k, "task_stopped", "its instance is draining");
            }
        }
        self.schedule_service();
        self.place();
        self.start_ready(now);
        self.standalone.retain(|t| t.status != TaskStatus::Stopped);
        if self.tasks.iter().any(|t| t.status == TaskStatus::Stopped) {
            let (stopped, live): (Vec<Task>, Vec<Task>) = std::mem::take(&mut self.tasks)
                .into_iter()
                .partition(|t| t.status == TaskStatus::Stopped);
            self.tasks = live;
            self.retired.extend(stopped.into_iter().map(|t| t.meter));
        }
    }

    /// Task-seconds and instance-seconds from the last step until `now`.
    fn meter_until(&mut self, now: DateTime<Utc>) {
        let dt = (now - self.now).num_milliseconds() as f64 / 1000.0;
        let placed = |ts: &[Task]| {
            ts.iter()
                .filter(|t| matches!(t.status, TaskStatus::Pending | TaskStatus::Running))
                .count() as f64
        };
        self.task_seconds += placed(&self.tasks) * dt;
        self.group_task_seconds += placed(&self.standalone) * dt;
        self.instance_seconds += self.group_instances().count() as f64 * dt;
    }

    /// Instances that finished booting register.
    fn register_booted(&mut self, now: DateTime<Utc>) {
        let boot = TimeDelta::from_std(self.spec.instance_boot).unwrap_or_default();
        for k in 0..self.instances.len() {
            let i = &mut self.instances[k];
            if i.status == InstanceStatus::Booting && i.launched_at + boot <= now {
                i.status = InstanceStatus::Active;
                i.registered_at = Some(now);
                let text = format!("instance {} in service, registered ACTIVE", i.id);
                self.event("instance_in_service", text);
            }
        }
    }

    /// The group towards its desired capacity: launches, or terminates by the default
    /// termination policy, simplified (booting first, then the instance with the fewest
    /// tasks, newest first).
    fn size_group(&mut self) {
        let alive = self.group_instances().count() as u32;
        for _ in alive..self.group_desired {
            let k = self.launch();
            let text = format!(
                "instance {} launched (boots in {:?})",
                self.instances[k].id, self.spec.instance_boot
            );
            self.event("instance_launched", text);
        }
        if alive <= self.group_desired {
            return;
        }
        let mut order: Vec<usize> = self.group_instances().map(|(k, _)| k).collect();
        order.sort_by_key(|&k| {
            let booting = self.instances[k].status == InstanceStatus::Booting;
            let (_, r, p) = self.used(k);
            (!booting, r + p, std::cmp::Reverse(self.instances[k].launched_at))
        });
        for k in order.into_iter().take((alive - self.group_desired) as usize) {
            self.instances[k].status = InstanceStatus::Terminated;
            let text = format!(
                "instance {} terminated (group desired {})",
                self.instances[k].id, self.group_desired
            );
            self.event("instance_terminated", text);
            self.stop_on(k);
        }
    }

    /// The service scheduler: tasks created or stopped towards the desired count.
    fn schedule_service(&mut self) {
        let live = self.live_tasks().count() as u32;
        for _ in live..self.desired {
            self.create_task();
        }
        if live > self.desired {
            for k in self
                .scale_in_order(false)
                .into_iter()
                .take((live - self.desired) as usize)
            {
                self.stop_task(k, "task_stopped", "scale-in");
            }
        }
    }

    /// Started tasks run: the service's, then the groups'.
    fn start_ready(&mut self, now: DateTime<Utc>) {
        for k in 0..self.tasks.len() {
            let t = &mut self.tasks[k];
            if t.status == TaskStatus::Pending && t.ready_at.is_some_and(|r| r <= now) {
                t.status = TaskStatus::Running;
                let text = format!("task {} ({}) RUNNING", &t.id[..8], t.container_id);
                self.event("task_started", text);
            }
        }
        let mut up = Vec::new();
        for t in self.standalone.iter_mut() {
            if t.status == TaskStatus::Pending && t.ready_at.is_some_and(|r| r <= now) {
                t.status = TaskStatus::Running;
                up.push(format!("task {} of a group RUNNING", &t.id[..8]));
            }
        }
        for text in up {
            self.event("group_task_started", text);
        }
    }

    /// Places waiting tasks: binpack (the fullest instance that still has room).
    fn place(&mut self) {
        let room = self.spec.instance_resources();
        let mut waiting = 0;
        for k in 0..self.tasks.len() {
            if self.tasks[k].status != TaskStatus::Provisioning {
                continue;
            }
            let best = self
                .instances
                .iter()
                .enumerate()
                .filter(|(_, i)| i.status == InstanceStatus::Active)
                .map(|(i, _)| (i, self.used(i).0))
                .filter(|(_, u)| {
                    u.cpu + self.spec.task.cpu <= room.cpu
                        && u.memory_mib + self.spec.task.memory_mib <= room.memory_mib
                })
                .max_by_key(|(i, u)| (u.cpu, u.memory_mib, std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            match best {
                Some(i) => {
                    let t = &mut self.tasks[k];
                    self.longest_wait = self.longest_wait.max(self.now - t.created_at);
                    put_on(self.now, self.spec.task_start, t, &mut self.instances, i);
                }
                None => waiting += 1,
            }
        }
        if waiting > 0 && !self.waiting_reported {
            self.waiting_reported = true;
            self.event(
                "task_waiting",
                format!("{waiting} task(s) PROVISIONING: no ACTIVE instance has room"),
            );
        } else if waiting == 0 {
            self.waiting_reported = false;
        }
    }

    /// CPU and memory reserved by placed tasks / registered on ACTIVE and DRAINING instances (%).
    pub fn reservation(&self) -> Option<(f64, f64)> {
        let registered = self
            .instances
            .iter()
            .filter(|i| matches!(i.status, InstanceStatus::Active | InstanceStatus::Draining))
            .count() as f64;
        if registered == 0.0 {
            return None;
        }
        let room = self.spec.instance_resources();
        let used = (0..self.instances.len()).fold(Resources::default(), |a, i| {
            let u = self.used(i).0;
            Resources {
                cpu: a.cpu + u.cpu,
                memory_mib: a.memory_mib + u.memory_mib,
            }
        });
        Some((
            f64::from(used.cpu) * 100.0 / (registered * f64::from(room.cpu)),
            f64::from(used.memory_mib) * 100.0 / (registered * f64::from(room.memory_mib)),
        ))
    }

    /// The CPU share of [`Cluster::reservation`].
    pub fn cpu_reservation(&self) -> Option<f64> {
        self.reservation().map(|(cpu, _)| cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn secs(c: &Cluster, s: i64) -> DateTime<Utc> {
        c.now + TimeDelta::seconds(s)
    }

    #[test]
    fn starts_with_its_tasks_running_on_registered_instances() {
        let c = Cluster::new(Spec::example(), t0());
        assert_eq!(c.count(TaskStatus::Running), 3);
        assert_eq!(c.instances_in(InstanceStatus::Active), 3);
        // binpack: all three on the first instance (3 × 512 of 2048 CPU units)
        assert_eq!(c.used(0).1, 3);
        assert!(c.events.is_empty());
    }

    #[test]
    fn tasks_wait_for_room_then_start_after_their_start_time() {
        let mut c = Cluster::new(Spec::example(), t0());
        // 3 m5.large hold 12 tasks of 512 CPU units
        c.set_desired(14);
        let t = secs(&c, 1);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Pending), 9);
        assert_eq!(c.count(TaskStatus::Provisioning), 2);
        assert!(c.events.iter().any(|e| e.kind == "task_waiting"));
        let t = secs(&c, 29);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Running), 3, "30 s start time not over yet");
        let t = secs(&c, 1);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Running), 12);
        // a fourth instance: booting 90 s, then the two waiting tasks are placed
        c.set_group_desired(4);
        let t = secs(&c, 1);
        c.advance(t);
        assert_eq!(c.instances_in(InstanceStatus::Booting), 1);
        let t = secs(&c, 90);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Provisioning), 0);
        assert_eq!(c.count(TaskStatus::Pending), 2);
        let t = secs(&c, 30);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Running), 14);
    }

    #[test]
    fn killed_tasks_and_instances_are_replaced() {
        let mut c = Cluster::new(Spec::example(), t0());
        c.set_desired(6);
        let t = secs(&c, 1);
        c.advance(t);
        let t = secs(&c, 30);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Running), 6);
        c.kill_task(0);
        let t = secs(&c, 1);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Running), 5);
        assert_eq!(c.live_tasks().count(), 6, "a replacement is starting");
        let t = secs(&c, 30);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Running), 6);
        // the instance with the most tasks dies
        let busiest = (0..c.instances.len()).max_by_key(|&i| c.used(i).1).unwrap();
        let lost = c.used(busiest).1;
        assert!(lost >= 2);
        c.kill_instance(busiest);
        let t = secs(&c, 1);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Running), 6 - lost);
        assert_eq!(
            c.instances_in(InstanceStatus::Booting),
            1,
            "the group replaces it"
        );
        let t = secs(&c, 90);
        c.advance(t);
        assert_eq!(c.instances_in(InstanceStatus::Active), 3);
        assert_eq!(c.count(TaskStatus::Running), 6);
        let kinds: Vec<&str> = c.events.iter().map(|e| e.kind).collect();
        for k in [
            "task_killed",
            "instance_killed",
            "instance_launched",
            "instance_in_service",
            "task_started",
        ] {
            assert!(kinds.contains(&k), "{k} in {kinds:?}");
        }
    }

    #[test]
    fn scale_in_stops_waiting_tasks_first_and_draining_moves_tasks() {
        let mut c = Cluster::new(Spec::example(), t0());
        c.set_desired(14);
        let t = secs(&c, 1);
        c.advance(t);
        let t = secs(&c, 30);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Provisioning), 2);
        c.set_desired(12);
        let t = secs(&c, 1);
        c.advance(t);
        assert_eq!(c.count(TaskStatus::Provisioning), 0);
        assert_eq!(c.count(TaskStatus::Running), 12);
        c.set_desired(8);
        c.instances[0].status = InstanceStatus::Draining;
        let t = secs(&c, 1);
        c.advance(t);
        assert_eq!(
            c.used(0).1 + c.used(0).2,
            0,
            "nothing left on the draining instance"
        );
        assert_eq!(c.live_tasks().count(), 8);
        assert_eq!(c.cpu_reservation().map(|r| r.round()), Some(67.0));
    }
}
