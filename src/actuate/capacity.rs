//! EC2 capacity: an Auto Scaling group sized for the tasks its cluster will run.
//!
//! Each tick, per group in `capacity:`:
//! 1. **Drains in progress** move on: an instance set to DRAINING by an earlier tick is
//!    terminated (TerminateInstanceInAutoScalingGroup, decrementing the desired capacity) once no
//!    task but daemon tasks is left on it; after `drain_timeout` the scale-in is given up and the
//!    instance set ACTIVE again. An instance with a non-daemon task is never terminated.
//! 2. **Demand**: every service of the cluster at `max(its decided desired count, running +
//!    pending)` tasks (so the tasks this tick's decisions add are counted before they exist, and
//!    the tasks a scale-in will stop are counted until they stop), plus standalone tasks waiting
//!    to start. The reservations nobody explains (daemon tasks, standalone tasks, services
//!    ecscale does not manage) are spread over the instances as a per-instance overhead.
//! 3. **Packing** ([`super::binpack`]): the registered ACTIVE instances, plus the ones the group
//!    has launched or will launch that have not registered yet (its desired capacity beyond those
//!    registered), then new instances; `headroom` of each kept free.
//! 4. **Scale-out** at once when tasks would not fit: SetDesiredCapacity within the group's
//!    min/max, in the same tick as the service decisions, so instances boot while ECS still
//!    places tasks. Draining instances are taken back first (set ACTIVE), they are the quickest.
//! 5. **Scale-in** only when every instance is registered, nothing is booting, and
//!    `scale_in_cooldown` passed since the last change: the instances the packing left empty,
//!    fewest tasks first, not protected from scale-in, and never below the group's minimum, are
//!    set DRAINING (ECS moves their service tasks elsewhere); step 1 takes it from there.
//!
//! A capacity policy on the group (`target: { auto_scaling_group: NAME }`) is a floor: the group
//! gets at least what the policy decides, and gives instances back only when both the policy and
//! the packing agree (as the engine does with several rules).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::binpack::{pack, Bin, Demand, Packing};
use super::{Applied, Fence};
use crate::api::{ApiError, AutoScalingApi, EcsWriteApi, GroupInfo};
use crate::config::{CapacitySpec, ManagedScaling};
use crate::model::{Action, ClusterSnapshot, ContainerInstance, Decision, Resources, TargetKey};

/// An instance on its way out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub instance_id: String,
    pub container_instance: String,
    pub since: DateTime<Utc>,
}

/// What the capacity actuator remembers about a group between ticks (kept with the engine's
/// state, so a restart resumes drains and cooldowns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub last_scale_out: Option<DateTime<Utc>>,
    pub last_scale_in: Option<DateTime<Utc>>,
    pub draining: Vec<Drain>,
}

/// What happened to a group this tick.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupOutcome {
    /// The decision as the decision log shows it (target `asg/NAME`).
    pub decision: Decision,
    /// What became of the desired capacity.
    pub applied: Applied,
    /// Instances set to DRAINING this tick.
    pub drained: Vec<String>,
    /// Instances terminated this tick.
    pub terminated: Vec<String>,
    /// Instances set ACTIVE again (drain given up, or capacity needed back).
    pub reactivated: Vec<String>,
    /// Calls that failed, per instance or step; the rest of the group's work went on.
    pub errors: Vec<String>,
    /// Tasks that the group's max leaves without room: (service name, or `task ID` for a
    /// standalone task, count).
    pub waiting: Vec<(String, u32)>,
}

/// The tasks (of services, not spare room) that `max` instances leave without room.
fn waiting_at(
    demands: &[Demand],
    bins: &[Bin],
    new_instance: Resources,
    headroom: f64,
    max: u32,
) -> Vec<(String, u32)> {
    let cap = max.max(bins.len() as u32);
    match crate::actuate::binpack::pack_within(demands, bins, new_instance, headroom, cap) {
        Ok(p) => p
            .waiting
            .into_iter()
            .filter(|(name, _)| name != "spare")
            .map(|(name, n)| match name.strip_prefix("service ") {
                Some(service) => (service.to_string(), n),
                None => (name, n),
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// " (capped at the group's max 3: 28 tasks will wait for room: web 28)".
fn capped_note(max: u32, waiting: &[(String, u32)]) -> String {
    let n: u32 = waiting.iter().map(|(_, n)| n).sum();
    if n == 0 {
        return format!(" (capped at the group's max {max})");
    }
    let each: Vec<String> = waiting.iter().map(|(s, n)| format!("{s} {n}")).collect();
    format!(
        " (capped at the group's max {max}: {n} task{} will wait for room: {})",
        if n == 1 { "" } else { "s" },
        each.join(", ")
    )
}

/// CPU units and MiB that ECS offers on common instance types, for a group none of whose
/// instances has registered yet (afterwards, the registered resources are used). Memory is what
/// the ECS agent registers on the ECS-optimized AMI, about 94 % of the instance's.
pub fn instance_type_resources(instance_type: &str) -> Option<Resources> {
    let (family, size) = instance_type.split_once('.')?;
    let vcpus: u32 = match size {
        "medium" => 1,
        "large" => 2,
        "xlarge" => 4,
        s => s.strip_suffix("xlarge")?.parse::<u32>().ok()? * 4,
    };
    let gib_per_vcpu: u32 = match family {
        "c5" | "c5a" | "c6i" | "c6a" | "c6g" | "c7i" | "c7g" => 2,
        "m5" | "m5a" | "m6i" | "m6a" | "m6g" | "m7i" | "m7g" | "t3" | "t3a" | "t4g" => 4,
        "r5" | "r5a" | "r6i" | "r6a" | "r6g" | "r7i" | "r7g" => 8,
        _ => return None,
    };
    let vcpus = if size == "medium" && family.starts_with('t') {
        2
    } else {
        vcpus
    };
    let gib = if size == "medium" { 4 } else { vcpus * gib_per_vcpu };
    Some(Resources {
        cpu: vcpus * 1024,
        memory_mib: gib * 1024 * 94 / 100,
    })
}

/// The most common value, ties broken by the larger.
fn most_common(items: impl Iterator<Item = Resources>) -> Option<Resources> {
    let mut counts: HashMap<(u32, u32), usize> = HashMap::new();
    for r in items {
        *counts.entry((r.cpu, r.memory_mib)).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)))
        .map(|((cpu, memory_mib), _)| Resources { cpu, memory_mib })
}

/// What one new instance of the group offers.
fn new_instance_size(
    spec: &CapacitySpec,
    group: &GroupInfo,
    registered: &[&ContainerInstance],
) -> Result<Resources, String> {
    if let Some(r) = spec.instance {
        return Ok(r);
    }
    let of_type = registered
        .iter()
        .filter(|i| group.instance_type.is_some() && i.instance_type == group.instance_type)
        .map(|i| i.registered);
    if let Some(r) = most_common(of_type).or_else(|| most_common(registered.iter().map(|i| i.registered))) {
        return Ok(r);
    }
    match group.instance_type.as_deref() {
        Some(t) => instance_type_resources(t).ok_or_else(|| {
            format!("no instance of group {} has registered yet and its instance type {t} is not in ecscale's table: set `instance: {{cpu, memory_mib}}` for it in `capacity`", group.name)
        }),
        None => Err(format!(
            "no instance of group {} has registered yet and its instance type is unknown (launch template): set `instance: {{cpu, memory_mib}}` for it in `capacity`",
            group.name
        )),
    }
}

/// The group's instances this tick: registered ones (ACTIVE or draining), the ACTIVE ones not
/// being drained, and those launched but not registered yet.
struct Fleet<'a> {
    registered: Vec<&'a ContainerInstance>,
    active: Vec<&'a ContainerInstance>,
    /// Launched or to be launched, not registered yet (an instance that never registers stays
    /// counted here, and holds scale-in back: look at the group when this lasts).
    booting: u32,
    draining: u32,
    /// The group's desired capacity after this tick's terminations.
    desired_now: u32,
}

impl<'a> Fleet<'a> {
    fn of(t: &GroupTick<'a>, state: &GroupState, out: &GroupOutcome) -> Fleet<'a> {
        let g = t.group;
        let group_ids: HashMap<&str, &crate::api::GroupInstance> = g
            .instances
            .iter()
            .filter(|i| !i.lifecycle_state.starts_with("Terminat"))
            .map(|i| (i.id.as_str(), i))
            .collect();
        let registered: Vec<&ContainerInstance> = t
            .cluster
            .container_instances
            .iter()
            .filter(|c| {
                c.ec2_instance_id
                    .as_deref()
                    .is_some_and(|id| group_ids.contains_key(id))
            })
            .collect();
        let draining: Vec<&str> = state.draining.iter().map(|d| d.instance_id.as_str()).collect();
        let active: Vec<&ContainerInstance> = registered
            .iter()
            .copied()
            .filter(|c| {
                let drained = c
                    .ec2_instance_id
                    .as_deref()
                    .is_some_and(|id| draining.contains(&id));
                c.status == "ACTIVE" && !drained
            })
            .collect();
        let desired_now = g.desired.saturating_sub(out.terminated.len() as u32);
        Fleet {
            booting: desired_now.saturating_sub(registered.len() as u32),
            draining: registered.len().saturating_sub(active.len()) as u32,
            registered,
            active,
            desired_now,
        }
    }

    /// A bin per ACTIVE instance (its room after the overhead), and one per booting instance of
    /// the size a new one will have.
    fn bins(&self, size: Resources, overhead: Resources) -> Vec<Bin> {
        let mut bins: Vec<Bin> = self
            .active
            .iter()
            .map(|c| Bin {
                id: c.ec2_instance_id.clone().unwrap_or_default(),
                capacity: sub(c.registered, overhead),
                tasks: c.running_tasks + c.pending_tasks,
            })
            .collect();
        bins.extend((0..self.booting).map(|i| Bin {
            id: format!("booting-{i}"),
            capacity: sub(size, overhead),
            tasks: u32::MAX,
        }));
        bins
    }
}

/// The demands with `spares` tasks of the largest size added (none when nothing is demanded).
fn with_spares(mut demands: Vec<Demand>, spares: u32) -> Vec<Demand> {
    let largest = demands
        .iter()
        .map(|d| d.size)
        .max_by_key(|s| (s.cpu, s.memory_mib));
    if let Some(size) = largest.filter(|_| spares > 0) {
        demands.push(Demand {
            name: "spare".into(),
            size,
            count: spares,
        });
    }
    demands
}

/// What the decision shows it rested on.
fn record_inputs(
    d: &mut Decision,
    fleet: &Fleet<'_>,
    needed: u32,
    demands: &[Demand],
    size: Resources,
    overhead: Resources,
) {
    d.recommendation = needed;
    let tasks: f64 = demands.iter().map(|x| f64::from(x.count)).sum();
    for (name, v) in [
        ("instances_needed", f64::from(needed)),
        ("instances_active", fleet.active.len() as f64),
        ("instances_booting", f64::from(fleet.booting)),
        ("instances_draining", f64::from(fleet.draining)),
        ("tasks", tasks),
        ("instance_cpu", f64::from(size.cpu)),
        ("instance_memory_mib", f64::from(size.memory_mib)),
        ("overhead_cpu", f64::from(overhead.cpu)),
        ("overhead_memory_mib", f64::from(overhead.memory_mib)),
    ] {
        d.inputs.insert(name.into(), v);
    }
}

/// The outcome with this tick's terminations (a scale-in of the group's count) and its errors
/// (a failure when nothing else was applied).
fn finish(mut out: GroupOutcome, from: u32, desired_now: u32) -> GroupOutcome {
    if !out.terminated.is_empty() {
        out.decision.action = Action::ScaleIn;
        out.decision.desired = out.decision.desired.min(desired_now);
        if matches!(out.applied, Applied::Unchanged) {
            out.applied = Applied::Updated {
                from,
                to: desired_now,
            };
        }
        let terminated = out.terminated.join(", ");
        out.decision
            .reason
            .push_str(&format!("; terminated {terminated} (drained)"));
    }
    if !out.errors.is_empty() && matches!(out.applied, Applied::Unchanged) {
        out.applied = Applied::Failed {
            kind: crate::api::ErrorKind::Other,
            error: out.errors.join("; "),
        };
    }
    out
}

fn sub(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu: a.cpu.saturating_sub(b.cpu),
        memory_mib: a.memory_mib.saturating_sub(b.memory_mib),
    }
}

/// A service whose tasks all run on Fargate (its launch type, or a strategy of Fargate
/// providers only) needs no instance of the group. A mixed strategy is counted whole.
fn on_fargate(s: &crate::model::ServiceState) -> bool {
    s.launch_type.as_deref() == Some("FARGATE")
        || (!s.capacity_providers.is_empty()
            && s.capacity_providers
                .iter()
                .all(|c| c == "FARGATE" || c == "FARGATE_SPOT"))
}

/// The tasks the cluster will run, and the per-instance overhead nobody explains.
fn demand(
    cluster: &ClusterSnapshot,
    desired: &BTreeMap<String, u32>,
    groups: &[TaskGroupDemand],
    instances: &[&ContainerInstance],
) -> (Vec<Demand>, Resources, Vec<String>) {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    let (mut explained_cpu, mut explained_mem) = (0u64, 0u64);
    for g in groups {
        let placed = g.tasks.len() as u64;
        explained_cpu += placed * u64::from(g.size.cpu);
        explained_mem += placed * u64::from(g.size.memory_mib);
        out.push(Demand {
            name: format!("group {}", g.name),
            size: g.size,
            count: g.wanted.max(g.tasks.len() as u32),
        });
    }
    let grouped = |arn: &str| groups.iter().any(|g| g.tasks.iter().any(|t| t == arn));
    for s in &cluster.services {
        if s.status != "ACTIVE" || on_fargate(s) {
            continue;
        }
        let Some(size) = s.task_reservation else {
            unknown.push(format!(
                "service {}: its task definition's reservation is unknown",
                s.name
            ));
            continue;
        };
        let wanted = desired.get(&s.name).copied().unwrap_or(s.desired);
        let count = wanted.max(s.running + s.pending);
        // Tasks placed and still starting reserve their share too (ECS takes it from the
        // instance's remaining resources at placement).
        let placed = u64::from(s.running + s.pending);
        explained_cpu += placed * u64::from(size.cpu);
        explained_mem += placed * u64::from(size.memory_mib);
        out.push(Demand {
            name: format!("service {}", s.name),
            size,
            count,
        });
    }
    for t in cluster
        .pending_tasks
        .iter()
        .filter(|t| t.service.is_none() && !grouped(&t.arn))
    {
        match t.reservation {
            Some(size) => out.push(Demand {
                name: format!("task {}", crate::model::arn_name(&t.arn)),
                size,
                count: 1,
            }),
            None => unknown.push(format!("task {}: its reservation is unknown", t.arn)),
        }
    }
    let reserved = |f: fn(Resources) -> u32| -> u64 {
        instances
            .iter()
            .map(|i| u64::from(f(i.registered).saturating_sub(f(i.remaining))))
            .sum()
    };
    let n = instances.len().max(1) as u64;
    let overhead = Resources {
        cpu: u32::try_from(reserved(|r| r.cpu).saturating_sub(explained_cpu).div_ceil(n)).unwrap_or(u32::MAX),
        memory_mib: u32::try_from(
            reserved(|r| r.memory_mib)
                .saturating_sub(explained_mem)
                .div_ceil(n),
        )
        .unwrap_or(u32::MAX),
    };
    (out, overhead, unknown)
}

/// A group's outcome before anything is done: its decision holds at the current count.
fn base_outcome(t: &GroupTick<'_>) -> GroupOutcome {
    let g = t.group;
    GroupOutcome {
        decision: Decision {
            target: TargetKey::AutoScalingGroup {
                name: g.name.as_str().into(),
            },
            at: t.now,
            current: g.desired,
            running: g
                .instances
                .iter()
                .filter(|i| i.lifecycle_state == "InService")
                .count() as u32,
            desired: g.desired,
            action: Action::Hold,
            min: g.min,
            max: g.max,
            rule: None,
            reason: String::new(),
            recommendation: g.desired,
            inputs: BTreeMap::new(),
            votes: t.policy.map(|p| p.votes.clone()).unwrap_or_default(),
        },
        applied: Applied::Unchanged,
        drained: Vec::new(),
        terminated: Vec::new(),
        reactivated: Vec::new(),
        errors: Vec::new(),
        waiting: Vec::new(),
    }
}

/// Sizes one group per tick. Holds the clients; the per-group memory is the caller's.
pub struct CapacityActuator {
    ecs: Arc<dyn EcsWriteApi>,
    asg: Arc<dyn AutoScalingApi>,
    dry_run: bool,
}

/// The inputs of one group's tick.
pub struct GroupTick<'a> {
    pub spec: &'a CapacitySpec,
    pub group: &'a GroupInfo,
    /// This tick's snapshot of the group's cluster.
    pub cluster: &'a ClusterSnapshot,
    /// The desired counts this tick's service decisions set (service name → count).
    pub desired: &'a BTreeMap<String, u32>,
    /// The group's capacity policy's decision, if it has one.
    pub policy: Option<&'a Decision>,
    /// The cluster's task groups (tasks ecscale places): their size, tasks and count wanted.
    pub task_groups: &'a [TaskGroupDemand],
    pub now: DateTime<Utc>,
}

/// A task group's share of the demand on a cluster's instances.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskGroupDemand {
    pub name: String,
    pub size: Resources,
    /// Its tasks now (their ARNs: not counted again among the cluster's pending tasks).
    pub tasks: Vec<String>,
    /// The count this tick's decision wants.
    pub wanted: u32,
}

impl CapacityActuator {
    /// Whether ECS sizes the group itself: a capacity provider backed by it with managed
    /// scaling ENABLED. `Some(reason)`: leave the group alone this tick (`refuse`). `None`:
    /// size it (not managed, or, with `take_over`, managed scaling just disabled).
    pub async fn managed_refusal(&self, spec: &CapacitySpec) -> Result<Option<String>, ApiError> {
        let providers = self.ecs.capacity_providers(&spec.cluster).await?;
        let Some(p) = crate::api::CapacityProvider::managing(&providers, &spec.auto_scaling_group) else {
            return Ok(None);
        };
        let group = &spec.auto_scaling_group;
        match spec.capacity_provider {
            ManagedScaling::Refuse => Ok(Some(format!(
                "capacity provider {} sizes asg/{group} itself (managed scaling ENABLED): ecscale leaves the group to ECS; disable managed scaling, or set capacity[].capacity_provider: take_over",
                p.name
            ))),
            ManagedScaling::TakeOver if self.dry_run => {
                tracing::warn!("dry run: would disable managed scaling of capacity provider {} (capacity_provider: take_over) and size asg/{group}", p.name);
                Ok(None)
            }
            ManagedScaling::TakeOver => {
                self.ecs.disable_managed_scaling(&p.name).await?;
                tracing::warn!("capacity provider {}: managed scaling DISABLED (capacity_provider: take_over); ecscale sizes asg/{group} from now on", p.name);
                Ok(None)
            }
        }
    }

    /// The outcome of a group left alone on purpose this tick.
    pub fn refused(&self, t: &GroupTick<'_>, reason: String) -> GroupOutcome {
        let mut out = base_outcome(t);
        out.decision.reason.clone_from(&reason);
        out.applied = Applied::Refused { reason };
        out
    }
    pub fn new(ecs: Arc<dyn EcsWriteApi>, asg: Arc<dyn AutoScalingApi>, dry_run: bool) -> Self {
        CapacityActuator { ecs, asg, dry_run }
    }

    /// The group as Auto Scaling reports it (the worker reads it first: a capacity policy's
    /// current count is its desired capacity).
    pub async fn observe(&self, name: &str) -> Result<GroupInfo, crate::api::ApiError> {
        self.asg.describe_group(name).await
    }

    /// Moves drains on (step 1). Returns the instances terminated and given up.
    async fn progress_drains(
        &self,
        t: &GroupTick<'_>,
        state: &mut GroupState,
        fence: &dyn Fence,
        out: &mut GroupOutcome,
    ) {
        if state.draining.is_empty() {
            return;
        }
        let cluster = &t.spec.cluster;
        let daemons = match self.ecs.daemon_services(cluster).await {
            Ok(d) => d,
            Err(e) => {
                out.errors
                    .push(format!("listing the daemon services of {cluster}: {e}"));
                return;
            }
        };
        let in_group: HashMap<&str, &str> = t
            .group
            .instances
            .iter()
            .map(|i| (i.id.as_str(), i.lifecycle_state.as_str()))
            .collect();
        let mut keep = Vec::new();
        for d in std::mem::take(&mut state.draining) {
            let Some(lifecycle) = in_group.get(d.instance_id.as_str()) else {
                tracing::info!(group = %t.group.name, "instance {} left the group while draining", d.instance_id);
                continue;
            };
            if lifecycle.starts_with("Terminating") || *lifecycle == "Terminated" {
                continue;
            }
            let tasks = match self.ecs.instance_tasks(cluster, &d.container_instance).await {
                Ok(tasks) => tasks,
                Err(e) => {
                    out.errors.push(format!(
                        "listing the tasks of draining instance {}: {e}",
                        d.instance_id
                    ));
                    keep.push(d);
                    continue;
                }
            };
            let left = tasks_left(&tasks, &daemons);
            let elapsed = (t.now - d.since).to_std().unwrap_or_default();
            if left.is_empty() {
                keep.extend(self.terminate_drained(t, d, elapsed, state, fence, out).await);
            } else if elapsed >= t.spec.drain_timeout {
                tracing::warn!(
                    group = %t.group.name,
                    "giving up the scale-in of {}: {} task(s) still on it after {} ({}); setting it ACTIVE again",
                    d.instance_id,
                    left.len(),
                    humantime::format_duration(t.spec.drain_timeout),
                    left.join(", ")
                );
                self.reactivate(t, vec![d], fence, &mut keep, out).await;
            } else {
                keep.push(d);
            }
        }
        state.draining = keep;
    }

    /// Terminates an instance drained of its tasks (`elapsed` after the drain began); the
    /// drain back when it cannot (a dry run, the lease lost, or the call failed).
    async fn terminate_drained(
        &self,
        t: &GroupTick<'_>,
        d: Drain,
        elapsed: std::time::Duration,
        state: &mut GroupState,
        fence: &dyn Fence,
        out: &mut GroupOutcome,
    ) -> Option<Drain> {
        if self.dry_run {
            return Some(d);
        }
        if let Err(reason) = fence.check() {
            out.errors.push(reason);
            return Some(d);
        }
        match self.asg.terminate_instance(&t.group.name, &d.instance_id).await {
            Ok(()) => {
                tracing::info!(group = %t.group.name, "terminated {} after draining for {}", d.instance_id, humantime::format_duration(std::time::Duration::from_secs(elapsed.as_secs())));
                state.last_scale_in = Some(t.now);
                out.terminated.push(d.instance_id);
                None
            }
            Err(e) => {
                out.errors.push(format!("terminating {}: {e}", d.instance_id));
                Some(d)
            }
        }
    }

    /// Sets drained instances ACTIVE again; those it cannot stay in `keep`.
    async fn reactivate(
        &self,
        t: &GroupTick<'_>,
        drains: Vec<Drain>,
        fence: &dyn Fence,
        keep: &mut Vec<Drain>,
        out: &mut GroupOutcome,
    ) {
        if drains.is_empty() {
            return;
        }
        if self.dry_run {
            keep.extend(drains);
            return;
        }
        if let Err(reason) = fence.check() {
            out.errors.push(reason);
            keep.extend(drains);
            return;
        }
        let arns: Vec<String> = drains.iter().map(|d| d.container_instance.clone()).collect();
        match self
            .ecs
            .set_instances_state(&t.spec.cluster, &arns, "ACTIVE")
            .await
        {
            Ok(()) => out.reactivated.extend(drains.into_iter().map(|d| d.instance_id)),
            Err(e) => {
                out.errors
                    .push(format!("setting {} instance(s) ACTIVE again: {e}", arns.len()));
                keep.extend(drains);
            }
        }
    }

    /// One tick of one group.
    pub async fn apply(&self, t: &GroupTick<'_>, state: &mut GroupState, fence: &dyn Fence) -> GroupOutcome {
        let g = t.group;
        let mut out = base_outcome(t);
        self.progress_drains(t, state, fence, &mut out).await;
        let fleet = Fleet::of(t, state, &out);
        let size = match new_instance_size(t.spec, g, &fleet.registered) {
            Ok(s) => s,
            Err(e) => return self.no_action(out, e),
        };
        let (demands, overhead, unknown) = demand(t.cluster, t.desired, t.task_groups, &fleet.active);
        let demands = with_spares(demands, t.spec.spare_tasks);
        let bins = fleet.bins(size, overhead);
        let packing = match pack(&demands, &bins, sub(size, overhead), t.spec.headroom) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(group = %g.name, "{e}");
                return self.no_action(out, e.to_string());
            }
        };
        let needed = packing.needed();
        // A policy that scales sets the floor; one that holds only keeps what the group has (its
        // count may be the one from before this tick's terminations: it must not grow it back).
        let have = fleet.active.len() as u32 + fleet.booting;
        let floor = t.policy.map_or(0, |p| {
            if p.action == Action::Hold {
                p.desired.min(have)
            } else {
                p.desired
            }
        });
        let wanted = needed.max(floor);
        let target = wanted.clamp(g.min, g.max);
        record_inputs(&mut out.decision, &fleet, needed, &demands, size, overhead);
        let mut why = describe(&packing, &demands, size, t.spec.headroom, floor, t.policy);
        if wanted > g.max {
            out.waiting = waiting_at(&demands, &bins, sub(size, overhead), t.spec.headroom, g.max);
            let n: u32 = out.waiting.iter().map(|(_, n)| n).sum();
            out.decision.inputs.insert("tasks_waiting".into(), f64::from(n));
            why.push_str(&capped_note(g.max, &out.waiting));
        }
        if target > have {
            self.scale_out(t, state, fence, &mut out, have, target, why).await;
        } else if target < have {
            match self.scale_in_blocked(t, state, fleet.booting, &unknown) {
                Some(b) => {
                    out.decision.reason =
                        format!("{why}; {have} in service, {target} would do, but {b}: hold");
                }
                None => {
                    self.scale_in(
                        t,
                        state,
                        fence,
                        &mut out,
                        &packing,
                        &fleet.active,
                        have - target,
                        why,
                    )
                    .await
                }
            }
        } else {
            out.decision.reason = format!("{why}; {have} in service: hold");
        }
        finish(out, g.desired, fleet.desired_now)
    }

    /// Why a scale-in must wait this tick, if it must: instances still booting, a demand not
    /// known, or the scale-in cooldown.
    fn scale_in_blocked(
        &self,
        t: &GroupTick<'_>,
        state: &GroupState,
        booting: u32,
        unknown: &[String],
    ) -> Option<String> {
        if booting > 0 {
            return Some(format!("{booting} instance(s) still booting"));
        }
        if !unknown.is_empty() {
            return Some(format!("demand unknown ({})", unknown.join("; ")));
        }
        self.cooling(t, state)
            .map(|until| format!("scale-in cooldown until {}", until.format("%H:%M:%S")))
    }

    fn no_action(&self, mut out: GroupOutcome, reason: String) -> GroupOutcome {
        out.decision.reason = format!("cannot size the group: {reason}; no action");
        out.applied = Applied::Refused { reason };
        out
    }

    /// When the scale-in cooldown ends, if it has not.
    fn cooling(&self, t: &GroupTick<'_>, state: &GroupState) -> Option<DateTime<Utc>> {
        let cooldown = TimeDelta::from_std(t.spec.scale_in_cooldown).unwrap_or(TimeDelta::MAX);
        let last = state.last_scale_out.max(state.last_scale_in)?;
        let until = last + cooldown;
        (t.now < until).then_some(until)
    }

    #[allow(clippy::too_many_arguments)]
    async fn scale_out(
        &self,
        t: &GroupTick<'_>,
        state: &mut GroupState,
        fence: &dyn Fence,
        out: &mut GroupOutcome,
        have: u32,
        target: u32,
        why: String,
    ) {
        let g = t.group;
        let mut missing = target - have;
        // Draining instances first: they are up and registered.
        let back: Vec<Drain> = {
            let n = (missing as usize).min(state.draining.len());
            state.draining.drain(..n).collect()
        };
        let mut keep = Vec::new();
        let wanted_back = back.len() as u32;
        self.reactivate(t, back, fence, &mut keep, out).await;
        let got_back = wanted_back - keep.len() as u32;
        state.draining.extend(keep);
        missing -= got_back.min(missing);
        let desired_now = g.desired.saturating_sub(out.terminated.len() as u32);
        let to = (desired_now + missing).min(g.max);
        out.decision.action = Action::ScaleOut;
        out.decision.desired = to;
        out.decision.rule = Some(
            if t.policy.is_some_and(|p| p.desired >= target && p.desired > have) {
                format!(
                    "policy:{}",
                    t.policy.and_then(|p| p.rule.clone()).unwrap_or_default()
                )
                .into()
            } else {
                "binpack".into()
            },
        );
        out.decision.reason = format!("{why}; {have} in service → {target}");
        if got_back > 0 {
            out.decision
                .reason
                .push_str(&format!("; {got_back} draining instance(s) taken back"));
        }
        if to <= desired_now {
            return;
        }
        if self.dry_run {
            out.applied = Applied::DryRun {
                from: desired_now,
                to,
            };
            return;
        }
        if let Err(reason) = fence.check() {
            out.applied = Applied::Refused { reason };
            return;
        }
        match self.asg.set_desired_capacity(&g.name, to).await {
            Ok(()) => {
                state.last_scale_out = Some(t.now);
                out.applied = Applied::Updated {
                    from: desired_now,
                    to,
                };
            }
            Err(e) => out.applied = Applied::failed(&e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn scale_in(
        &self,
        t: &GroupTick<'_>,
        state: &mut GroupState,
        fence: &dyn Fence,
        out: &mut GroupOutcome,
        packing: &Packing,
        active: &[&ContainerInstance],
        surplus: u32,
        why: String,
    ) {
        let g = t.group;
        let desired_now = g.desired.saturating_sub(out.terminated.len() as u32);
        let room_above_min = desired_now
            .saturating_sub(g.min)
            .saturating_sub(state.draining.len() as u32);
        let n = surplus.min(room_above_min) as usize;
        let candidates = drain_candidates(g, packing, active, n);
        let have = active.len() as u32;
        if candidates.is_empty() {
            out.decision.reason = format!(
                "{why}; {have} in service, {} would do, but none can go (group min {}, protected or not in service)",
                have - surplus,
                g.min
            );
            return;
        }
        let ids: Vec<String> = candidates
            .iter()
            .filter_map(|c| c.ec2_instance_id.clone())
            .collect();
        out.decision.action = Action::ScaleIn;
        out.decision.desired = desired_now - ids.len() as u32;
        out.decision.rule = Some("binpack".into());
        out.decision.reason = format!(
            "{why}; {have} in service → {}: draining {}",
            have - ids.len() as u32,
            ids.join(", ")
        );
        if self.dry_run {
            out.applied = Applied::DryRun {
                from: desired_now,
                to: out.decision.desired,
            };
            return;
        }
        if let Err(reason) = fence.check() {
            out.applied = Applied::Refused { reason };
            return;
        }
        self.drain(t, state, out, &candidates, ids).await;
    }

    /// Sets the `candidates` (EC2 ids `ids`) DRAINING and remembers their drains.
    async fn drain(
        &self,
        t: &GroupTick<'_>,
        state: &mut GroupState,
        out: &mut GroupOutcome,
        candidates: &[&ContainerInstance],
        ids: Vec<String>,
    ) {
        let arns: Vec<String> = candidates.iter().map(|c| c.arn.clone()).collect();
        match self
            .ecs
            .set_instances_state(&t.spec.cluster, &arns, "DRAINING")
            .await
        {
            Ok(()) => {
                state.last_scale_in = Some(t.now);
                for (c, id) in candidates.iter().zip(&ids) {
                    state.draining.push(Drain {
                        instance_id: id.clone(),
                        container_instance: c.arn.clone(),
                        since: t.now,
                    });
                }
                out.drained = ids;
            }
            Err(e) => out.applied = Applied::failed(&e),
        }
    }
}

/// At most `n` of the instances the packing left empty, fewest tasks first, none protected
/// from scale-in or out of service.
fn drain_candidates<'a>(
    g: &GroupInfo,
    packing: &Packing,
    active: &[&'a ContainerInstance],
    n: usize,
) -> Vec<&'a ContainerInstance> {
    let protected: Vec<&str> = g
        .instances
        .iter()
        .filter(|i| i.protected_from_scale_in || i.lifecycle_state != "InService")
        .map(|i| i.id.as_str())
        .collect();
    let by_id: HashMap<&str, &ContainerInstance> = active
        .iter()
        .filter_map(|c| c.ec2_instance_id.as_deref().map(|id| (id, *c)))
        .collect();
    let mut candidates: Vec<&ContainerInstance> = packing
        .unused
        .iter()
        .filter(|id| !protected.contains(&id.as_str()))
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .collect();
    candidates.sort_by_key(|c| (c.running_tasks + c.pending_tasks, c.ec2_instance_id.clone()));
    candidates.truncate(n);
    candidates
}

/// "31 tasks (web 12 × 512/1024, ...) need 4 instances of 4096 CPU / 7482 MiB (10% headroom)".
fn describe(
    p: &Packing,
    demands: &[Demand],
    size: Resources,
    headroom: f64,
    floor: u32,
    policy: Option<&Decision>,
) -> String {
    let tasks: u32 = demands.iter().map(|d| d.count).sum();
    let spare: u32 = demands
        .iter()
        .filter(|d| d.name == "spare")
        .map(|d| d.count)
        .sum();
    let tasks = if spare > 0 {
        format!("{} tasks and room for {spare} more", tasks - spare)
    } else {
        format!("{tasks} tasks")
    };
    let mut s = format!(
        "{tasks} need {} instance(s) of {} CPU / {} MiB ({}% headroom)",
        p.needed(),
        size.cpu,
        size.memory_mib,
        (headroom * 100.0).round()
    );
    if !p.unplaced.is_empty() {
        let list: Vec<String> = p.unplaced.iter().map(|(n, c)| format!("{c} of {n}")).collect();
        s.push_str(&format!(
            " ({} fit only on larger instances, all full)",
            list.join(", ")
        ));
    }
    if let Some(d) = policy {
        s.push_str(&format!("; policy wants at least {floor} ({})", d.reason));
    }
    s
}

/// The tasks still on a draining instance: not stopped, and not of a daemon service (they
/// stop with the instance).
fn tasks_left<'a>(tasks: &'a [crate::api::TaskInfo], daemons: &[String]) -> Vec<&'a str> {
    tasks
        .iter()
        .filter(|task| task.last_status != "STOPPED")
        .filter(|task| {
            !task
                .group
                .as_deref()
                .and_then(|g| g.strip_prefix("service:"))
                .is_some_and(|svc| daemons.iter().any(|d| d == svc))
        })
        .map(|task| crate::model::arn_name(&task.arn))
        .collect()
}

#[cfg(test)]
mod tests;
