//! A tick's task groups (tasks ecscale places with StartTask): each one's decision, its share of
//! the capacity stage's demand, and the placement calls.

use chrono::{DateTime, Utc};

use super::Worker;
use crate::actuate::capacity::TaskGroupDemand;
use crate::actuate::task_group::Observed;
use crate::actuate::{placement, Applied};
use crate::config::{GroupSpec, Placement};
use crate::eval_io::Observation;
use crate::model::{Action, ClusterSnapshot, Decision, Snapshot, TargetKey};

/// A group decided this tick, waiting for its placement.
pub(super) struct PendingGroup {
    pub(super) spec: usize,
    pub(super) policy: Option<usize>,
    pub(super) decision: Decision,
    pub(super) observed: Observed,
}

fn target(spec: &GroupSpec) -> TargetKey {
    TargetKey::TaskGroup {
        cluster: spec.cluster.as_str().into(),
        group: spec.name.as_str().into(),
    }
}

/// A daemon group without a policy: one task per eligible instance.
fn daemon_decision(
    spec: &GroupSpec,
    obs: &Observed,
    cluster: &ClusterSnapshot,
    now: DateTime<Utc>,
) -> Decision {
    let plan = placement::plan(spec, &cluster.container_instances, &obs.tasks, 0, obs.size);
    let (current, desired) = (obs.count(), plan.target);
    Decision {
        target: target(spec),
        at: now,
        current,
        running: obs.running(),
        desired,
        action: match desired.cmp(&current) {
            std::cmp::Ordering::Greater => Action::ScaleOut,
            std::cmp::Ordering::Less => Action::ScaleIn,
            std::cmp::Ordering::Equal => Action::Hold,
        },
        min: 0,
        max: desired,
        rule: None,
        reason: format!("daemon: one task on each of the {desired} eligible ACTIVE instances"),
        recommendation: desired,
        inputs: Default::default(),
        votes: Vec::new(),
    }
}

impl Worker {
    /// Every group's decision: its policy's, or, for a daemon, the eligible instances.
    pub(super) async fn decide_groups(
        &self,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
        problems: &mut Vec<String>,
    ) -> Vec<PendingGroup> {
        let mut out = Vec::new();
        for (k, spec) in self.config.groups.iter().enumerate() {
            let Some(cluster) = snapshot.clusters.iter().find(|c| c.name == spec.cluster) else {
                continue;
            };
            let observed = match self.task_groups.observe(spec).await {
                Ok(o) => o,
                Err(e) => {
                    let msg = format!(
                        "{}: its tasks cannot be listed, nothing is placed this tick: {e}",
                        target(spec)
                    );
                    tracing::error!("{msg}");
                    self.metrics.error("actuate");
                    problems.push(msg);
                    continue;
                }
            };
            let policy = self.policies.iter().position(|p| p.target == target(spec));
            let decision = match (policy, spec.placement) {
                (_, Placement::Daemon) => daemon_decision(spec, &observed, cluster, now),
                (Some(i), _) => {
                    let key = spec.metrics_key();
                    let metrics = crate::eval_io::MetricSet::of_service(snapshot, &key);
                    let obs = Observation {
                        now,
                        current: observed.count(),
                        running: observed.running(),
                        pending: observed.count() - observed.running(),
                        metrics: &metrics,
                    };
                    self.decide(&self.policies[i], &obs, problems).await
                }
                (None, _) => {
                    problems.push(format!("{}: no policy names it; nothing is placed", target(spec)));
                    continue;
                }
            };
            out.push(PendingGroup {
                spec: k,
                policy,
                decision,
                observed,
            });
        }
        out
    }

    /// Places each group's tasks, and records what became of its decision.
    pub(super) async fn apply_groups(
        &mut self,
        pending: Vec<PendingGroup>,
        snapshot: &Snapshot,
        report: &mut super::TickReport,
    ) {
        let fence = self.fence.clone();
        for g in pending {
            let spec = self.config.groups[g.spec].clone();
            let Some(cluster) = snapshot.clusters.iter().find(|c| c.name == spec.cluster) else {
                continue;
            };
            let out = self
                .task_groups
                .apply(&spec, &g.observed, cluster, &g.decision, fence.as_ref())
                .await;
            let mut d = g.decision;
            if out.plan.rebalanced > 0 {
                d.reason.push_str(&format!(
                    "; {} of its tasks moved to even out its spread",
                    out.plan.rebalanced
                ));
            }
            if out.plan.waiting > 0 {
                d.reason.push_str(&format!(
                    "; {} of its tasks wait: no eligible instance has room",
                    out.plan.waiting
                ));
            }
            // A failure of the whole placement is logged and counted by `record`; the others
            // (calls that failed while others went through) here.
            let whole = usize::from(matches!(out.applied, Applied::Failed { .. }));
            for (k, e) in out.errors.iter().enumerate() {
                if k >= whole {
                    tracing::error!(target = %d.target, "{e}");
                    self.metrics.error("actuate");
                }
                report.problems.push(format!("{}: {e}", d.target));
            }
            self.record(g.policy, &d, &out.applied, out.applied.took_effect());
            report.services.push((d, out.applied));
        }
    }
}

/// The groups of `cluster` as the capacity stage counts them.
pub(super) fn demands(pending: &[PendingGroup], groups: &[GroupSpec], cluster: &str) -> Vec<TaskGroupDemand> {
    pending
        .iter()
        .filter(|g| groups[g.spec].cluster == cluster)
        .map(|g| TaskGroupDemand {
            name: groups[g.spec].name.clone(),
            size: g.observed.size,
            tasks: g.observed.tasks.iter().map(|t| t.arn.clone()).collect(),
            wanted: g.decision.desired,
        })
        .collect()
}
