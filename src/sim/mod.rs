//! The simulated cluster: an in-process twin of one ECS service on an EC2 Auto Scaling group,
//! behind the same traits as AWS ([`crate::api`]), so the worker, the demo and the closed-loop
//! tests run the production code path (collect → evaluate → actuate) against it.
//!
//! - [`cluster`]: tasks and instances (placement, start and boot times, failures, replacement).
//! - [`metrics`]: CloudWatch-like 1-minute statistic sets with publication lag.
//! - [`api`]: the ECS, CloudWatch, Auto Scaling and Application Auto Scaling traits over it.
//! - Requests are served either for real ([`http`]: each task answers HTTP on its own loopback
//!   port behind a round-robin load balancer, as in the demo) or by the [`fluid`] queueing model
//!   (back-tests of a day of traffic in seconds). Both fill the same [`load`] counters, from which
//!   each minute's CPU, request count, response time and a timeline [`Row`] are published.
//! - [`run`]: the closed loop on a virtual clock (the worker, or the AWS-style [`baseline`],
//!   ticking against the simulated cluster), used by `ecscale backtest --simulate` and the tests.
//!
//! Time: the cluster lives on simulated time. The demo runs it `speed` times faster than real
//! time: durations (start and boot times, periods, cooldowns) shrink by `speed`, rates do not
//! (a task serves its requests per real second; the minute's request count is that rate × 60).

pub mod api;
pub mod baseline;
pub mod cluster;
pub mod demo;
pub mod fluid;
pub mod frontier;
pub mod http;
pub mod load;
pub mod metrics;
pub mod oracle;
pub mod record;
pub mod report;
pub mod rows;
pub mod run;
pub mod scenario;
pub mod suite;
pub mod twin;
pub mod visits;

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

pub use cluster::{Cluster, Event, Spec};
use cluster::{InstanceStatus, TaskStatus};
use load::LbMinute;
use metrics::{MetricStore, StatSet};

use crate::usage::ApiMeter;

/// One minute of the simulation, as the report plots it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// Start of the minute.
    pub t: DateTime<Utc>,
    /// Requests per second reaching the load balancer, and those that failed.
    pub rps: f64,
    /// Requests counted (real ones for HTTP; the fluid model's `rps × 60`).
    pub requests: f64,
    pub errors_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The service's CPUUtilization (Average over its tasks).
    pub cpu: Option<f64>,
    pub desired: u32,
    pub running: u32,
    /// Placed and starting.
    pub pending: u32,
    /// Waiting for an instance with room.
    pub provisioning: u32,
    pub instances: u32,
    pub booting: u32,
    pub draining: u32,
    pub group_desired: u32,
    pub cpu_reservation: Option<f64>,
    /// Task-seconds placed (PENDING or RUNNING) during the minute: what task-hours add up.
    pub task_seconds: f64,
    /// The task groups sharing the instances.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupRow>,
}

/// One minute of a task group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupRow {
    pub name: String,
    pub running: u32,
    pub pending: u32,
    /// Jobs waiting at the minute's end, and sent and worked off during it.
    pub queue: f64,
    pub sent: f64,
    pub done: f64,
    /// Per availability zone: the group's live tasks, and the ACTIVE instances.
    pub zones: Vec<ZoneCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ZoneCount {
    pub zone: String,
    pub tasks: u32,
    pub instances: u32,
    /// How many more of the group's tasks its ACTIVE instances have room for.
    pub room: u32,
}

impl GroupRow {
    fn of(c: &Cluster, g: usize) -> GroupRow {
        let tasks: Vec<&cluster::Task> = c.group_tasks(g).collect();
        let size = c.spec.groups[g].task;
        let total = c.spec.instance_resources();
        let fits = |i: usize| {
            let used = c.used(i).0;
            let cpu = total.cpu.saturating_sub(used.cpu) / size.cpu.max(1);
            cpu.min(total.memory_mib.saturating_sub(used.memory_mib) / size.memory_mib.max(1))
        };
        let zones = c
            .spec
            .zones()
            .into_iter()
            .map(|zone| ZoneCount {
                tasks: tasks
                    .iter()
                    .filter(|t| t.instance.is_some_and(|i| c.instances[i].zone == zone))
                    .count() as u32,
                instances: c
                    .instances
                    .iter()
                    .filter(|i| i.zone == zone && i.status == InstanceStatus::Active)
                    .count() as u32,
                room: (0..c.instances.len())
                    .filter(|&i| {
                        c.instances[i].zone == zone && c.instances[i].status == InstanceStatus::Active
                    })
                    .map(fits)
                    .sum(),
                zone,
            })
            .collect();
        let q = c.queues[g];
        GroupRow {
            name: c.spec.groups[g].name.clone(),
            running: tasks.iter().filter(|t| t.status == TaskStatus::Running).count() as u32,
            pending: tasks.iter().filter(|t| t.status == TaskStatus::Pending).count() as u32,
            queue: q.depth,
            sent: q.sent,
            done: q.done,
            zones,
        }
    }
}

impl Row {
    /// One line of the demo's live view.
    pub fn line(&self) -> String {
        format!(
            "{}  load {:>4.0} rps  p95 {:>6}  errors {:>5.1}/s  cpu {:>5}  tasks {:>2} desired, {:>2} running, {} starting, {} waiting  instances {} (+{} booting, {} draining)",
            self.t.format("%H:%M"),
            self.rps,
            self.p95_ms.map_or("–".into(), |p| format!("{p:.0} ms")),
            self.errors_per_s,
            self.cpu.map_or("–".into(), |c| format!("{c:.0} %")),
            self.desired,
            self.running,
            self.pending,
            self.provisioning,
            self.instances,
            self.booting,
            self.draining
        ) + &self
            .groups
            .iter()
            .map(|g| {
                let zones: Vec<String> = g.zones.iter().map(|z| z.tasks.to_string()).collect();
                format!(
                    "  {} {:>2} running, {} starting (by zone {}), queue {:>5.0}",
                    g.name,
                    g.running,
                    g.pending,
                    zones.join("/"),
                    g.queue
                )
            })
            .collect::<String>()
    }
}

/// How the simulated clock moves.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// Moved by [`Sim::advance`] only (back-tests, tests).
    Manual,
    /// This many simulated seconds per real second, from the start.
    Scaled(f64),
}

pub struct Inner {
    pub cluster: Cluster,
    pub store: MetricStore,
    /// The load balancer's counts for the current minute.
    pub lb: LbMinute,
    pub rows: Vec<Row>,
    /// Start of the minute being counted, and of the high-resolution window.
    minute: DateTime<Utc>,
    window: DateTime<Utc>,
    /// Meter seconds per simulated second: 1/speed for real requests, 1 for the fluid model.
    base: f64,
    /// The requests answered this minute that have fed the groups' queues.
    fed: f64,
    /// The cluster's task-seconds when the minute started.
    task_seconds_at_minute: f64,
    /// Task and instance counts over the minute so far, time-weighted (Container Insights and
    /// the Auto Scaling group's metrics are averages over the minute).
    counts: Counts,
}

/// Time-weighted sums of counts: `Σ count × seconds`, and the seconds.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    secs: f64,
    running: f64,
    pending: f64,
    desired: f64,
    in_service: f64,
    booting: f64,
    group_desired: f64,
}

impl Counts {
    fn add(&mut self, c: &Cluster, secs: f64) {
        self.secs += secs;
        self.running += secs * f64::from(c.count(TaskStatus::Running));
        self.pending += secs * f64::from(c.count(TaskStatus::Pending));
        self.desired += secs * f64::from(c.desired);
        self.in_service += secs * f64::from(c.instances_in(InstanceStatus::Active));
        self.booting += secs * f64::from(c.instances_in(InstanceStatus::Booting));
        self.group_desired += secs * f64::from(c.group_desired);
    }
}

/// The simulated cluster and its CloudWatch.
pub struct Sim {
    inner: Mutex<Inner>,
    clock: Clock,
    /// The simulated start, and the real instant it stands for.
    start: DateTime<Utc>,
    origin: std::time::Instant,
    /// API calls made to the simulator, as the AWS clients count them.
    pub meter: ApiMeter,
    pub spec: Spec,
}

/// The start of `t`'s minute.
pub fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(60), 0).unwrap_or(t)
}

impl Sim {
    /// A cluster starting at `start` (rounded down to the minute).
    pub fn new(spec: Spec, start: DateTime<Utc>, clock: Clock) -> Arc<Sim> {
        let start = floor_minute(start);
        let base = match clock {
            Clock::Manual => 1.0,
            Clock::Scaled(speed) => 1.0 / speed.max(1e-6),
        };
        Arc::new(Sim {
            inner: Mutex::new(Inner {
                cluster: Cluster::new(spec.clone(), start),
                store: MetricStore::default(),
                lb: LbMinute::default(),
                rows: Vec::new(),
                minute: start,
                window: start,
                base,
                fed: 0.0,
                counts: Counts::default(),
                task_seconds_at_minute: 0.0,
            }),
            clock,
            start,
            origin: std::time::Instant::now(),
            meter: ApiMeter::default(),
            spec,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulated now.
    pub fn now(&self) -> DateTime<Utc> {
        match self.clock {
            Clock::Manual => self.lock().cluster.now,
            Clock::Scaled(speed) => {
                let us = self.origin.elapsed().as_secs_f64() * speed * 1e6;
                self.start + TimeDelta::microseconds(us as i64)
            }
        }
    }

    /// Moves the cluster to `now` and publishes every minute that ended.
    pub fn advance(&self, now: DateTime<Utc>) {
        let mut g = self.lock();
        g.advance(now);
    }
}

impl Inner {
    fn advance(&mut self, now: DateTime<Utc>) {
        let from = self.cluster.now;
        if now <= from {
            return;
        }
        let dt = (now - from).num_microseconds().unwrap_or(0) as f64 / 1e6 * self.base;
        // The counts held from the last step until now (a change lands at the step's end).
        self.counts.add(&self.cluster, dt);
        for t in &self.cluster.tasks {
            if t.status == TaskStatus::Running {
                t.meter.running_for(dt);
            }
        }
        self.cluster.advance(now);
        let answered = self.lb.requests - self.lb.errors;
        self.cluster.work_queues(answered - self.fed, dt);
        self.fed = answered;
        if let Some(w) = self.cluster.spec.high_resolution {
            let w = TimeDelta::from_std(w).unwrap_or(TimeDelta::seconds(20));
            while self.window + w <= now {
                self.publish_window(w);
                self.window += w;
            }
        }
        while self.minute + TimeDelta::minutes(1) <= now {
            self.publish();
            self.minute += TimeDelta::minutes(1);
        }
    }

    /// The service's CPU and memory over the tasks that ran more than 5 % of `span`.
    fn utilization(counts: &[load::TaskCounts], span: f64) -> (Option<StatSet>, Option<StatSet>) {
        let utils: Vec<f64> = counts
            .iter()
            .filter(|c| c.up > span * 0.05)
            .map(|c| 2.0 + 98.0 * (c.busy / c.up).min(1.0))
            .collect();
        let mem: Vec<f64> = utils.iter().map(|u| 30.0 + 0.2 * u).collect();
        (StatSet::of(&utils), StatSet::of(&mem))
    }

    /// Publishes the high-resolution window starting at `self.window`.
    fn publish_window(&mut self, w: TimeDelta) {
        let spec = &self.cluster.spec;
        let visible = self.window + w + TimeDelta::from_std(spec.high_resolution_lag).unwrap_or_default();
        let counts: Vec<load::TaskCounts> = self
            .cluster
            .tasks
            .iter()
            .map(|t| t.meter.take_window())
            .chain(self.cluster.retired.iter().map(|m| m.take_window()))
            .collect();
        let span = w.num_milliseconds() as f64 / 1000.0 * self.base;
        let (cpu, mem) = Self::utilization(&counts, span);
        let (cluster, service) = (spec.cluster.clone(), spec.service.clone());
        let svc = [
            ("ClusterName", cluster.as_str()),
            ("ServiceName", service.as_str()),
        ];
        let res = w.num_seconds() as u32;
        for (name, stats) in [("CPUUtilization", cpu), ("MemoryUtilization", mem)] {
            if let Some(s) = stats {
                self.store
                    .put_at(res, ("AWS/ECS", name, &svc), self.window, s, visible);
            }
        }
    }

    /// Each group's queue as SQS publishes it: messages visible (the depth at the minute's end)
    /// and sent during it. Per real second of load, like the requests: divided by `base`.
    fn publish_queues(&mut self, minute: DateTime<Utc>, visible: DateTime<Utc>) {
        for (g, spec) in self.cluster.spec.groups.iter().enumerate() {
            let q = std::mem::take(&mut self.cluster.queues[g]);
            let dims = [("QueueName", spec.queue.as_str())];
            let depth = StatSet::one(q.depth);
            let sent = StatSet::one(q.sent / self.base);
            self.store.put(
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                &dims,
                minute,
                depth,
                visible,
            );
            self.store
                .put("AWS/SQS", "NumberOfMessagesSent", &dims, minute, sent, visible);
            self.cluster.queues[g].depth = q.depth;
        }
    }

    /// Publishes the minute starting at `self.minute`.
    fn publish(&mut self) {
        let spec = &self.cluster.spec;
        let minute = self.minute;
        let visible =
            minute + TimeDelta::minutes(1) + TimeDelta::from_std(spec.metric_lag).unwrap_or_default();
        let window = 60.0 * self.base;
        let counts: Vec<load::TaskCounts> = self
            .cluster
            .tasks
            .iter()
            .map(|t| t.meter.take())
            .chain(self.cluster.retired.drain(..).map(|m| m.take()))
            .collect();
        let (cpu, mem) = Self::utilization(&counts, window);
        // With high-resolution metrics the service's CPU and memory went out per window.
        if self.cluster.spec.high_resolution.is_none() {
            let (cluster, service) = (
                self.cluster.spec.cluster.clone(),
                self.cluster.spec.service.clone(),
            );
            let svc = [
                ("ClusterName", cluster.as_str()),
                ("ServiceName", service.as_str()),
            ];
            for (name, stats) in [("CPUUtilization", cpu), ("MemoryUtilization", mem)] {
                if let Some(s) = stats {
                    self.store.put("AWS/ECS", name, &svc, minute, s, visible);
                }
            }
        }
        self.publish_lb(&counts, window, visible);
        self.publish_reservation(cpu, visible);
        self.push_row(cpu.map(|s| s.sum / s.count), window);
        self.publish_queues(minute, visible);
        self.publish_counts(minute, visible);
        self.task_seconds_at_minute = self.cluster.task_seconds;
        self.lb = LbMinute::default();
        self.fed = 0.0;
    }

    /// The load balancer's minute: requests per target (over the targets up), the request
    /// count, and the response time of the requests answered, by load balancer and target
    /// group.
    fn publish_lb(&mut self, counts: &[load::TaskCounts], window: f64, visible: DateTime<Utc>) {
        let minute = self.minute;
        let spec = &self.cluster.spec;
        let (tg, lb) = (spec.target_group(), spec.load_balancer());
        let with_lb = [("LoadBalancer", lb.as_str()), ("TargetGroup", tg.as_str())];
        let tg_only = [("TargetGroup", tg.as_str())];
        let served: f64 = counts.iter().map(|c| c.requests).sum();
        let targets = counts.iter().map(|c| c.up).sum::<f64>() / window;
        let answered = self.lb.requests - self.lb.errors;
        let mut put = |name: &str, stats: StatSet| {
            for dims in [&with_lb[..], &tg_only[..]] {
                self.store
                    .put("AWS/ApplicationELB", name, dims, minute, stats, visible);
            }
        };
        if targets > 0.05 {
            put(
                "RequestCountPerTarget",
                StatSet::one(served / self.base / targets),
            );
        }
        put("RequestCount", StatSet::one(self.lb.requests / self.base));
        if answered > 0.0 {
            let rt = StatSet {
                sum: self.lb.latency_sum / self.base,
                count: answered / self.base,
                min: self.lb.latency_us.min() as f64 / 1e6,
                max: self.lb.latency_us.max() as f64 / 1e6,
            };
            put("TargetResponseTime", rt);
        }
    }

    /// The cluster's CPU and memory reservation, and its CPU, per minute.
    fn publish_reservation(&mut self, cpu: Option<StatSet>, visible: DateTime<Utc>) {
        let Some((cpu_r, mem_r)) = self.cluster.reservation() else {
            return;
        };
        let cluster = self.cluster.spec.cluster.clone();
        let cl = [("ClusterName", cluster.as_str())];
        let minute = self.minute;
        self.store.put(
            "AWS/ECS",
            "CPUReservation",
            &cl,
            minute,
            StatSet::one(cpu_r),
            visible,
        );
        self.store.put(
            "AWS/ECS",
            "MemoryReservation",
            &cl,
            minute,
            StatSet::one(mem_r),
            visible,
        );
        if let Some(s) = cpu {
            self.store
                .put("AWS/ECS", "CPUUtilization", &cl, minute, s, visible);
        }
    }

    /// The minute's row, as the report plots it.
    fn push_row(&mut self, cpu: Option<f64>, window: f64) {
        let c = &self.cluster;
        self.rows.push(Row {
            t: self.minute,
            rps: self.lb.requests / window,
            requests: self.lb.requests,
            errors_per_s: self.lb.errors / window,
            p50_ms: self.lb.percentile_ms(0.50),
            p95_ms: self.lb.percentile_ms(0.95),
            p99_ms: self.lb.percentile_ms(0.99),
            cpu,
            desired: c.desired,
            running: c.count(TaskStatus::Running),
            pending: c.count(TaskStatus::Pending),
            provisioning: c.count(TaskStatus::Provisioning),
            instances: c.instances_in(InstanceStatus::Active),
            booting: c.instances_in(InstanceStatus::Booting),
            draining: c.instances_in(InstanceStatus::Draining),
            group_desired: c.group_desired,
            cpu_reservation: c.reservation().map(|(cpu, _)| cpu),
            task_seconds: c.task_seconds - self.task_seconds_at_minute,
            groups: (0..c.spec.groups.len()).map(|g| GroupRow::of(c, g)).collect(),
        });
    }

    /// The minute's average task counts (Container Insights: RunningTaskCount, PendingTaskCount,
    /// DesiredTaskCount) and the group's instance counts (GroupInServiceInstances,
    /// GroupPendingInstances, GroupDesiredCapacity, as group metrics collection publishes them).
    fn publish_counts(&mut self, minute: DateTime<Utc>, visible: DateTime<Utc>) {
        let c = std::mem::take(&mut self.counts);
        if c.secs <= 0.0 {
            return;
        }
        let spec = &self.cluster.spec;
        let (cluster, service, group) = (
            spec.cluster.clone(),
            spec.service.clone(),
            spec.auto_scaling_group.clone(),
        );
        let svc = [
            ("ClusterName", cluster.as_str()),
            ("ServiceName", service.as_str()),
        ];
        let asg = [("AutoScalingGroupName", group.as_str())];
        let avg = |sum: f64| StatSet::one(sum / c.secs);
        for (name, sum) in [
            ("RunningTaskCount", c.running),
            ("PendingTaskCount", c.pending),
            ("DesiredTaskCount", c.desired),
        ] {
            self.store
                .put("ECS/ContainerInsights", name, &svc, minute, avg(sum), visible);
        }
        for (name, sum) in [
            ("GroupInServiceInstances", c.in_service),
            ("GroupPendingInstances", c.booting),
            ("GroupDesiredCapacity", c.group_desired),
        ] {
            self.store
                .put("AWS/AutoScaling", name, &asg, minute, avg(sum), visible);
        }
    }
}

#[cfg(test)]
mod tests;
