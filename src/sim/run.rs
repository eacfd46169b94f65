//! The closed loop: the simulated cluster, the load, and what scales it (the ecscale worker, or
//! the AWS-style baseline), advanced together on a virtual clock.
//!
//! Each step (5 simulated seconds) serves the load of that step through the fluid model
//! ([`super::fluid::serve`]), moves the cluster, publishes the minutes that ended, and runs the
//! worker's tick when it is due (its `schedule.interval`), with the simulated time as the tick's
//! `now`: the worker collects, evaluates and actuates through the simulator's API exactly as it
//! would against AWS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::baseline::Baseline;
use super::cluster::{InstanceStatus, TaskStatus};
use super::oracle::Oracle;
use super::{Event, Row, Sim, Spec};
use crate::actuate::Applied;
use crate::config::Config;
use crate::policy::TargetPolicy;
use crate::worker::metrics::Metrics;
use crate::worker::state::MemoryStore;
use crate::worker::{Clients, Parts, RunOptions, TickReport, Worker};

pub use super::rows::{minute_violates, ActionRow, LoadFn};
pub use super::scenario::{Fault, CAPACITY_POLICY, QUEUE_WORKER_POLICY, WEB_POLICY};

/// The worker's configuration for the simulated cluster: the demo's `examples/demo/ecscale.yaml`
/// (compiled in, read by the config reader), with the spec's capacity room, high-resolution
/// setting and groups, ticking every `tick`. Its names must be the spec's (the simulator stands
/// for them): a spec that names others is refused.
pub fn config(spec: &Spec, tick: Duration) -> anyhow::Result<Config> {
    let mut c = super::scenario::embedded_config()
        .map_err(|d| anyhow::anyhow!("the simulator's own configuration is invalid (a bug):\n{d}"))?;
    c.schedule = crate::config::Schedule::Interval(tick);
    c.collect.high_resolution = spec.high_resolution.is_some();
    for cap in &mut c.capacity {
        cap.headroom = spec.headroom;
        cap.spare_tasks = spec.spare_tasks;
    }
    c.groups.retain(|g| spec.groups.iter().any(|w| w.name == g.name));
    let names = (
        c.clusters.first().map(|k| k.name.as_str()),
        c.clusters
            .first()
            .and_then(|k| k.services.first())
            .map(|s| s.name.as_str()),
        c.capacity.first().map(|k| k.auto_scaling_group.as_str()),
    );
    let want = (
        Some(spec.cluster.as_str()),
        Some(spec.service.as_str()),
        Some(spec.auto_scaling_group.as_str()),
    );
    anyhow::ensure!(
        names == want && c.groups.len() == spec.groups.len(),
        "the simulator's config names {names:?} and {} group(s), its cluster {want:?} and {}",
        c.groups.len(),
        spec.groups.len()
    );
    Ok(c)
}

/// Reads policies from text (`(file name, YAML)`).
pub fn policies(files: &[(&str, &str)]) -> anyhow::Result<Vec<TargetPolicy>> {
    let mut out = Vec::new();
    for (name, text) in files {
        let p = crate::policy::load_str(text, name, Path::new(".")).map_err(|d| anyhow::anyhow!("{d}"))?;
        out.extend(p);
    }
    Ok(out)
}

/// The worker's clients, all answered by the simulator.
pub fn clients(sim: &Arc<Sim>) -> Clients {
    Clients {
        ecs: sim.clone(),
        cloudwatch: sim.clone(),
        ecs_write: sim.clone(),
        autoscaling: sim.clone(),
        app_autoscaling: sim.clone(),
        dynamodb: None,
        meter: sim.meter.clone(),
        signer: None,
        events: None,
        changes: Default::default(),
    }
}

/// A worker acting on the simulated cluster, its state in memory. On the virtual clock its
/// UpdateService pacing (real seconds, for ECS's bucket) is lifted: a replay runs thousands of
/// simulated minutes a real second, and the simulator's API has no bucket.
pub async fn worker(
    mut config: Config,
    policies: Vec<TargetPolicy>,
    sim: &Arc<Sim>,
    ship: Option<crate::worker::ship::ShipQueue>,
) -> anyhow::Result<Worker> {
    if matches!(sim.clock, super::Clock::Manual) {
        config.worker.update_rate = f64::INFINITY;
    }
    let parts = Parts {
        store: Box::new(MemoryStore::default()),
        lease: None,
        metrics: Arc::new(Metrics::new(sim.meter.clone(), Duration::from_secs(3600))),
        ship,
        notify: None,
    };
    Ok(Worker::new(config, policies, clients(sim), parts, &RunOptions::default()).await?)
}

/// Injects a fault now; what was hit, or `None` when there was nothing to hit.
pub fn inject(sim: &Sim, fault: Fault) -> Option<String> {
    let mut g = sim.lock();
    let c = &mut g.cluster;
    match fault {
        Fault::KillTask => {
            let k = (0..c.tasks.len())
                .filter(|&k| c.tasks[k].status == TaskStatus::Running)
                .min_by_key(|&k| c.tasks[k].created_at)?;
            let what = format!("task {} ({})", &c.tasks[k].id[..8], c.tasks[k].container_id);
            c.kill_task(k);
            Some(what)
        }
        Fault::KillInstance => {
            let k = (0..c.instances.len())
                .filter(|&i| c.instances[i].status == InstanceStatus::Active)
                .max_by_key(|&i| (c.used(i).1, std::cmp::Reverse(i)))?;
            let what = format!("instance {} with {} tasks", c.instances[k].id, c.used(k).1);
            c.kill_instance(k);
            Some(what)
        }
    }
}

/// The changes a worker tick made (holds and failures left out; failures are in its problems).
pub fn actions_of(report: &TickReport) -> Vec<ActionRow> {
    let services = report.services.iter().map(|(d, a)| (d, a));
    let groups = report.groups.iter().map(|g| (&g.decision, &g.applied));
    services
        .chain(groups)
        .filter_map(|(d, applied)| match applied {
            Applied::Updated { from, to } => Some(ActionRow {
                at: d.at,
                target: d.target.to_string(),
                from: *from,
                to: *to,
                rule: d.rule.as_deref().map(str::to_string),
                reason: d.reason.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// What a run adds up to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub minutes: usize,
    /// Minutes whose p95 latency was over the SLO, or with more than 1 % of requests failed.
    pub slo_violation_minutes: usize,
    pub slo_p95_ms: f64,
    pub worst_p95_ms: f64,
    pub requests: f64,
    pub errors: f64,
    /// Task-hours placed (PENDING or RUNNING), and instance-hours launched.
    pub task_hours: f64,
    pub instance_hours: f64,
    pub peak_tasks: u32,
    pub peak_instances: u32,
    pub scale_outs: usize,
    pub scale_ins: usize,
}

/// Whether a minute broke the SLO.
pub fn violates(r: &Row, slo_ms: f64) -> bool {
    let failed = if r.rps > 0.0 { r.errors_per_s / r.rps } else { 0.0 };
    minute_violates(r.p95_ms, failed, slo_ms)
}

pub fn totals(sim: &Sim, actions: &[ActionRow], slo_ms: f64) -> Totals {
    let g = sim.lock();
    let service = format!("{}/{}", sim.spec.cluster, sim.spec.service);
    let rows = &g.rows;
    Totals {
        minutes: rows.len(),
        slo_violation_minutes: rows.iter().filter(|r| violates(r, slo_ms)).count(),
        slo_p95_ms: slo_ms,
        worst_p95_ms: rows.iter().filter_map(|r| r.p95_ms).fold(0.0, f64::max),
        requests: rows.iter().map(|r| r.requests).sum(),
        errors: rows
            .iter()
            .map(|r| r.errors_per_s / r.rps.max(f64::MIN_POSITIVE) * r.requests)
            .sum(),
        task_hours: g.cluster.task_seconds / 3600.0,
        instance_hours: g.cluster.instance_seconds / 3600.0,
        peak_tasks: rows.iter().map(|r| r.running).max().unwrap_or(0),
        peak_instances: rows.iter().map(|r| r.instances + r.booting).max().unwrap_or(0),
        scale_outs: actions
            .iter()
            .filter(|a| a.target == service && a.to > a.from)
            .count(),
        scale_ins: actions
            .iter()
            .filter(|a| a.target == service && a.to < a.from)
            .count(),
    }
}

/// What scales the service.
pub enum Scaler {
    /// The ecscale worker with its policies (service and capacity).
    Ecscale(Box<Worker>),
    /// A peer ([`super::baseline`]) scales the service within `bounds`; the worker (with no
    /// service policy) sizes the instances, the same way as in the ecscale run.
    Baseline {
        baseline: Box<Baseline>,
        bounds: (u32, u32),
        capacity: Box<Worker>,
    },
    /// The clairvoyant baseline: sizes tasks and instances itself from the whole trace, every step.
    Oracle(Box<Oracle>),
}

/// The outcome of a closed-loop run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub actions: Vec<ActionRow>,
    pub events: Vec<Event>,
    pub totals: Totals,
    /// Tick problems (collection gaps, failed calls), deduplicated, with counts.
    pub problems: Vec<(String, usize)>,
    /// After each tick, every task group's decided count and its tasks in the cluster.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupTick>,
    /// What the simulated CloudWatch held for the service, as a trace, when asked for.
    #[serde(skip)]
    pub history: Option<crate::evaluate::trace::Trace>,
}

/// A task group after a tick: the count ecscale decided, and the tasks the cluster holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupTick {
    pub at: DateTime<Utc>,
    pub group: String,
    pub desired: u32,
    pub placed: u32,
}

/// The task groups of a tick's decisions, as they stand in the cluster after it.
pub fn group_ticks(sim: &Sim, report: &TickReport) -> Vec<GroupTick> {
    let g = sim.lock();
    let c = &g.cluster;
    report
        .services
        .iter()
        .filter_map(|(d, _)| match &d.target {
            crate::model::TargetKey::TaskGroup { group, .. } => {
                let k = c.spec.groups.iter().position(|w| *w.name == **group)?;
                Some(GroupTick {
                    at: d.at,
                    group: group.to_string(),
                    desired: d.desired,
                    placed: c.group_tasks(k).count() as u32,
                })
            }
            _ => None,
        })
        .collect()
}

pub struct LoopOptions {
    pub until: DateTime<Utc>,
    pub tick: Duration,
    pub step: Duration,
    pub slo_p95_ms: f64,
    pub faults: Vec<(DateTime<Utc>, Fault)>,
}

/// Runs the closed loop until `opts.until` on the virtual clock.
pub async fn closed_loop(
    sim: &Arc<Sim>,
    mut scaler: Scaler,
    load: &LoadFn<'_>,
    opts: &LoopOptions,
) -> Outcome {
    let step = TimeDelta::from_std(opts.step).unwrap_or(TimeDelta::seconds(5));
    let tick = TimeDelta::from_std(opts.tick).unwrap_or(TimeDelta::seconds(15));
    let mut t = sim.now();
    let mut next_tick = t + tick;
    let mut faults = opts.faults.clone();
    faults.sort_by_key(|(at, _)| *at);
    let mut actions = Vec::new();
    let mut problems: std::collections::BTreeMap<String, usize> = Default::default();
    let mut groups = Vec::new();
    while t < opts.until {
        while faults.first().is_some_and(|(at, _)| *at <= t) {
            let (_, f) = faults.remove(0);
            inject(sim, f);
        }
        let rps = load(t + step / 2);
        {
            let mut g = sim.lock();
            super::fluid::serve(&mut g, rps, step.num_milliseconds() as f64 / 1000.0);
        }
        t += step;
        sim.advance(t);
        if let Scaler::Oracle(oracle) = &mut scaler {
            actions.extend(oracle.act(sim, t));
            continue;
        }
        if t >= next_tick {
            next_tick += tick;
            let report = match &mut scaler {
                Scaler::Ecscale(w) => w.tick(t).await,
                Scaler::Baseline {
                    baseline,
                    bounds,
                    capacity,
                } => {
                    if let Some(a) = baseline.tick(sim, t, *bounds) {
                        actions.push(ActionRow {
                            at: a.at,
                            target: format!("{}/{}", sim.spec.cluster, sim.spec.service),
                            from: a.from,
                            to: a.to,
                            rule: Some("baseline".into()),
                            reason: a.reason,
                        });
                    }
                    capacity.tick(t).await
                }
                Scaler::Oracle(_) => continue,
            };
            actions.extend(actions_of(&report));
            groups.extend(group_ticks(sim, &report));
            for p in report.problems {
                *problems.entry(p).or_default() += 1;
            }
        }
    }
    let mut out = outcome(sim, actions, problems.into_iter().collect(), opts.slo_p95_ms);
    out.groups = groups;
    out
}

/// What the simulated cluster went through, with the actions taken on it.
pub fn outcome(sim: &Sim, actions: Vec<ActionRow>, problems: Vec<(String, usize)>, slo_ms: f64) -> Outcome {
    let totals = totals(sim, &actions, slo_ms);
    let g = sim.lock();
    Outcome {
        rows: g.rows.clone(),
        actions,
        events: g.cluster.events.clone(),
        totals,
        problems,
        groups: Vec::new(),
        history: None,
    }
}
