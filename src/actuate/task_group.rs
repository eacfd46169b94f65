//! Task groups: standalone tasks that ecscale places itself. Each tick it finds the group's
//! tasks by `startedBy` (so a restarted worker adopts them instead of starting more), plans
//! ([`super::placement`]) and makes the calls: StartTask onto the chosen container instances,
//! at most 10 distinct ones per call, then StopTask for a scale-in and for tasks on instances
//! that are no longer eligible (draining). A task that stopped or failed is simply no longer
//! listed, so the next plan starts its replacement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::placement::{self, GroupTask, PlacementPlan};
use super::{Applied, Fence};
use crate::api::{ApiError, EcsApi, EcsWriteApi, TaskInfo};
use crate::config::GroupSpec;
use crate::model::{ClusterSnapshot, Decision, Resources};

/// StartTask takes at most this many container instances.
const START_BATCH: usize = 10;

/// A group as listed this tick.
#[derive(Debug, Clone)]
pub struct Observed {
    pub tasks: Vec<GroupTask>,
    /// What one of its tasks reserves.
    pub size: Resources,
}

impl Observed {
    pub fn running(&self) -> u32 {
        self.tasks.iter().filter(|t| t.status == "RUNNING").count() as u32
    }

    pub fn count(&self) -> u32 {
        self.tasks.len() as u32
    }
}

/// What a tick did to a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupTasksOutcome {
    pub applied: Applied,
    pub plan: PlacementPlan,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    /// Calls or tasks that failed; the rest went on.
    pub errors: Vec<String>,
}

pub struct TaskGroupActuator {
    ecs: Arc<dyn EcsApi>,
    write: Arc<dyn EcsWriteApi>,
    dry_run: bool,
    sizes: Mutex<HashMap<String, Resources>>,
}

fn task(t: TaskInfo) -> GroupTask {
    GroupTask {
        arn: t.arn,
        instance: t.container_instance,
        status: t.last_status,
    }
}

/// The start list in calls: distinct instances, at most [`START_BATCH`] per call.
fn batches(start: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for arn in start {
        match out.iter_mut().find(|b| b.len() < START_BATCH && !b.contains(arn)) {
            Some(b) => b.push(arn.clone()),
            None => out.push(vec![arn.clone()]),
        }
    }
    out
}

impl TaskGroupActuator {
    pub fn new(ecs: Arc<dyn EcsApi>, write: Arc<dyn EcsWriteApi>, dry_run: bool) -> Self {
        TaskGroupActuator {
            ecs,
            write,
            dry_run,
            sizes: Mutex::default(),
        }
    }

    /// The group's tasks, and the size of one (its task definition, read once).
    pub async fn observe(&self, spec: &GroupSpec) -> Result<Observed, ApiError> {
        let tasks = self.write.started_by(&spec.cluster, &spec.started_by()).await?;
        let cached = self
            .sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&spec.task_definition)
            .copied();
        let size = match cached {
            Some(s) => s,
            None => {
                let td = self.ecs.describe_task_definition(&spec.task_definition).await?;
                self.sizes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(spec.task_definition.clone(), td.reservation);
                td.reservation
            }
        };
        Ok(Observed {
            tasks: tasks.into_iter().map(task).collect(),
            size,
        })
    }

    /// The plan for `d.desired` tasks (daemon groups: the eligible instances), carried out.
    pub async fn apply(
        &self,
        spec: &GroupSpec,
        obs: &Observed,
        cluster: &ClusterSnapshot,
        d: &Decision,
        fence: &dyn Fence,
    ) -> GroupTasksOutcome {
        let plan = placement::plan(
            spec,
            &cluster.container_instances,
            &obs.tasks,
            d.desired,
            obs.size,
        );
        let mut out = GroupTasksOutcome {
            applied: Applied::Unchanged,
            plan,
            started: Vec::new(),
            stopped: Vec::new(),
            errors: Vec::new(),
        };
        let from = obs.count();
        // Moved tasks are replaced one for one, so every start adds and every stop takes one.
        let to = (from + out.plan.start.len() as u32).saturating_sub(out.plan.stop.len() as u32);
        if out.plan.start.is_empty() && out.plan.stop.is_empty() {
            return out;
        }
        if let Err(reason) = fence.check() {
            out.applied = Applied::Refused { reason };
            return out;
        }
        if self.dry_run {
            out.applied = Applied::DryRun { from, to };
            return out;
        }
        self.start(spec, &mut out).await;
        self.stop(spec, &mut out).await;
        let reached = (from + out.started.len() as u32).saturating_sub(out.stopped.len() as u32);
        out.applied = match (reached == from, out.errors.first()) {
            (true, Some(e)) => Applied::Failed {
                kind: crate::api::ErrorKind::Other,
                error: e.clone(),
            },
            (true, None) => Applied::Unchanged,
            (false, _) => Applied::Updated { from, to: reached },
        };
        out
    }

    async fn start(&self, spec: &GroupSpec, out: &mut GroupTasksOutcome) {
        for batch in batches(&out.plan.start) {
            match self
                .write
                .start_tasks(&spec.cluster, &spec.task_definition, &batch, &spec.started_by())
                .await
            {
                Ok((started, failures)) => {
                    out.started.extend(started);
                    out.errors
                        .extend(failures.into_iter().map(|f| format!("StartTask: {f}")));
                }
                Err(e) => out.errors.push(e.to_string()),
            }
        }
    }

    async fn stop(&self, spec: &GroupSpec, out: &mut GroupTasksOutcome) {
        // Replacements first: tasks on ineligible instances go only once theirs started.
        let moved_ok = out.started.len() >= out.plan.moved as usize;
        for (k, arn) in out.plan.stop.clone().iter().enumerate() {
            let moving = k < out.plan.moved as usize;
            if moving && !moved_ok {
                continue;
            }
            let evening = k >= (out.plan.moved - out.plan.rebalanced) as usize;
            let reason = if moving && evening {
                format!("ecscale: group {} evens out its spread", spec.name)
            } else if moving {
                format!(
                    "ecscale: group {} moves it off an instance that is no longer eligible",
                    spec.name
                )
            } else {
                format!("ecscale: scale-in of group {}", spec.name)
            };
            match self.write.stop_task(&spec.cluster, arn, &reason).await {
                Ok(()) => out.stopped.push(arn.clone()),
                Err(e) => out.errors.push(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::testing::{instance, FakeEcs};
    use crate::actuate::Alone;
    use crate::config::{Placement, SpreadBy};

    #[test]
    fn start_calls_hold_distinct_instances_ten_at_most() {
        let start: Vec<String> = (0..23).map(|k| format!("i-{}", k % 12)).collect();
        let b = batches(&start);
        assert!(b.iter().all(|b| b.len() <= 10));
        for batch in &b {
            let mut s = batch.clone();
            s.dedup();
            assert_eq!(s.len(), batch.len());
        }
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 23);
    }

    /// A read API that only knows the task definition's size.
    struct Sizes;

    #[async_trait::async_trait]
    impl EcsApi for Sizes {
        async fn list_services(
            &self,
            _: &str,
            _: Option<String>,
        ) -> Result<crate::api::Page<String>, ApiError> {
            unreachable!()
        }
        async fn describe_services(
            &self,
            _: &str,
            _: &[String],
        ) -> Result<crate::api::Described<crate::model::ServiceState>, ApiError> {
            unreachable!()
        }
        async fn describe_task_definition(
            &self,
            td: &str,
        ) -> Result<crate::model::TaskDefinitionInfo, ApiError> {
            Ok(crate::model::TaskDefinitionInfo {
                arn: td.into(),
                family: "worker".into(),
                revision: 1,
                reservation: Resources {
                    cpu: 512,
                    memory_mib: 512,
                },
            })
        }
        async fn list_container_instances(
            &self,
            _: &str,
            _: Option<String>,
        ) -> Result<crate::api::Page<String>, ApiError> {
            unreachable!()
        }
        async fn describe_container_instances(
            &self,
            _: &str,
            _: &[String],
        ) -> Result<crate::api::Described<crate::model::ContainerInstance>, ApiError> {
            unreachable!()
        }
        async fn list_tasks(&self, _: &str, _: Option<String>) -> Result<crate::api::Page<String>, ApiError> {
            unreachable!()
        }
        async fn describe_tasks(
            &self,
            _: &str,
            _: &[String],
        ) -> Result<crate::api::Described<TaskInfo>, ApiError> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn a_restarted_worker_adopts_the_tasks_it_started_and_starts_no_more() {
        let fake = Arc::new(FakeEcs::default());
        let spec = GroupSpec {
            name: "worker".into(),
            cluster: "prod".into(),
            task_definition: "worker:1".into(),
            placement: Placement::Spread(SpreadBy::Instance),
            constraints: Vec::new(),
            metrics: Vec::new(),
            span: Default::default(),
        };
        let big = Resources {
            cpu: 4096,
            memory_mib: 8192,
        };
        let none = Resources {
            cpu: 0,
            memory_mib: 0,
        };
        let cluster = ClusterSnapshot {
            name: "prod".into(),
            services: Vec::new(),
            container_instances: vec![instance("i-1", big, none, 0), instance("i-2", big, none, 0)],
            pending_tasks: Vec::new(),
        };
        let decision = |desired| Decision {
            target: crate::model::TargetKey::TaskGroup {
                cluster: "prod".into(),
                group: "worker".into(),
            },
            at: chrono::Utc::now(),
            current: 0,
            running: 0,
            desired,
            action: crate::model::Action::Hold,
            min: 0,
            max: 10,
            rule: None,
            reason: String::new(),
            recommendation: desired,
            inputs: Default::default(),
            votes: Vec::new(),
        };
        let act = TaskGroupActuator::new(Arc::new(Sizes), fake.clone(), false);
        let obs = act.observe(&spec).await.unwrap();
        let out = act.apply(&spec, &obs, &cluster, &decision(3), &Alone).await;
        assert_eq!(out.applied, Applied::Updated { from: 0, to: 3 });
        assert_eq!(out.started.len(), 3);
        // A new worker (a restart): it finds the three by startedBy and does nothing.
        let again = TaskGroupActuator::new(Arc::new(Sizes), fake.clone(), false);
        let obs = again.observe(&spec).await.unwrap();
        assert_eq!(obs.count(), 3);
        let out = again.apply(&spec, &obs, &cluster, &decision(3), &Alone).await;
        assert_eq!(out.applied, Applied::Unchanged);
        // One stops (it failed): the next tick replaces it.
        let lost = obs.tasks[0].arn.clone();
        fake.stop_task("prod", &lost, "it crashed").await.unwrap();
        let obs = again.observe(&spec).await.unwrap();
        let out = again.apply(&spec, &obs, &cluster, &decision(3), &Alone).await;
        assert_eq!(out.applied, Applied::Updated { from: 2, to: 3 });
        // A scale-in to 1 stops two.
        let obs = again.observe(&spec).await.unwrap();
        let out = again.apply(&spec, &obs, &cluster, &decision(1), &Alone).await;
        assert_eq!(
            (out.applied.clone(), out.stopped.len()),
            (Applied::Updated { from: 3, to: 1 }, 2)
        );
    }
}
