//! One tick of the worker: collect → evaluate → actuate → record → ship.
//!
//! Order within a tick: every service decision is made first; then each Auto Scaling group is
//! sized for the counts those decisions set (so instances boot while ECS places the new tasks);
//! then the services are updated, all at once but within the shared UpdateService rate. Every
//! failure is logged with its target and counted, and the tick goes on with the other targets.
//! The state is saved after the actions and before shipping: a crash between an action and the
//! save can at worst repeat an absolute count (idempotent), never a relative step.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::leader::Lease;
use super::ship::{ShipBatch, ShipQueue};
use super::state::{LastAction, StateError, StateStore, WorkerState};
use crate::actuate::capacity::{CapacityActuator, GroupOutcome, GroupTick};
use crate::actuate::ecs_service::ServiceActuator;
use crate::actuate::{Applied, Fence};
use crate::collect::Collector;
use crate::config::Config;
use crate::eval_io::{MetricSet, Observation};
use crate::evaluate::decide;
use crate::model::{Action, Decision, ServiceKey, ServiceState, Snapshot, TargetKey};
use crate::policy::external::{fetch_answers, PluginRunner};
use crate::policy::{RuleSpec, TargetPolicy};
use crate::ship::docs::{decision_doc, snapshot_docs, target_docs, Doc};

use super::metrics::Metrics;
use super::notify::Event;
use crate::config::EventKind;

/// What one tick did.
#[derive(Debug, Clone)]
pub struct TickReport {
    pub at: DateTime<Utc>,
    /// False when this worker follows (another leads): nothing was collected or done.
    pub acted: bool,
    /// Service decisions and what became of them.
    pub services: Vec<(Decision, Applied)>,
    pub groups: Vec<GroupOutcome>,
    /// Things the collection could not see, targets that could not be evaluated, failures.
    pub problems: Vec<String>,
    /// Milliseconds spent per stage: `collect`, `evaluate`, `actuate`, `save`.
    pub stage_ms: BTreeMap<&'static str, f64>,
}

impl TickReport {
    fn idle(at: DateTime<Utc>) -> Self {
        TickReport {
            at,
            acted: false,
            services: Vec::new(),
            groups: Vec::new(),
            problems: Vec::new(),
            stage_ms: BTreeMap::new(),
        }
    }
}

/// The parts of a running worker.
pub struct Worker {
    pub(super) config: Config,
    pub(super) policies: Vec<TargetPolicy>,
    pub(super) collector: Collector,
    pub(super) services: ServiceActuator,
    pub(super) capacity: CapacityActuator,
    pub(super) plugins: PluginRunner,
    pub(super) task_groups: crate::actuate::task_group::TaskGroupActuator,
    /// Kept to rebuild the collector and actuators on a reload.
    pub(super) clients: super::Clients,
    pub(super) dry_run: bool,
    pub(super) notify: Arc<super::notify::Notifications>,
    pub(super) store: Box<dyn StateStore>,
    pub(super) lease: Option<Arc<Lease>>,
    pub(super) fence: Arc<dyn Fence>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) ship: Option<ShipQueue>,
    pub(super) state: WorkerState,
    /// The fencing token the state was loaded under (with a lease).
    pub(super) loaded_fencing: Option<u64>,
    /// Targets whose policy file vanished, kept for a grace.
    pub(super) orphans: super::orphans::Orphans,
    /// The first pass's time and the CloudWatch metrics requested by its end (for
    /// `/status`'s spend).
    pub(super) spend_from: Option<(DateTime<Utc>, u64)>,
    /// The services collected in the last pass.
    pub(super) services_seen: usize,
}

fn has_externals(p: &TargetPolicy) -> bool {
    p.rules.iter().any(|r| matches!(r.spec, RuleSpec::External(_)))
}

/// Holds a service whose known change (or overdue state) the last pass could not read again:
/// its count may be old, and acting on it could undo what changed it.
fn hold_unread(d: &mut Decision) {
    if d.action == crate::model::Action::Hold {
        return;
    }
    d.reason.push_str(&format!(
        "; held at {}: ECS changed this service (or its state is older than the reconciliation allows) and the read budget did not cover reading it again this pass; it is read first in the next",
        d.current
    ));
    d.desired = d.current;
    d.action = crate::model::Action::Hold;
}

/// Tells each service of the group's cluster how many of its decided tasks the group's max
/// leaves without room (in its decision's reason and in `/metrics`).
fn note_waiting(
    pending: &mut [(usize, Decision, &ServiceState)],
    spec: &crate::config::CapacitySpec,
    outcome: &crate::actuate::capacity::GroupOutcome,
    metrics: &Metrics,
) {
    for (_, d, s) in pending.iter_mut().filter(|(_, _, s)| s.cluster == spec.cluster) {
        let n = outcome
            .waiting
            .iter()
            .find(|(name, _)| *name == s.name)
            .map_or(0, |(_, n)| *n);
        metrics.set_waiting(&s.cluster, &s.name, n.into());
        if n > 0 {
            d.reason.push_str(&format!(
                "; {n} of its {} tasks will wait for room: asg/{} is at its max",
                d.desired, spec.auto_scaling_group
            ));
        }
    }
}

/// One decision as an event, when it did something worth saying.
fn decision_event(d: &Decision, a: &Applied) -> Option<Event> {
    let target = d.target.to_string();
    let event = |kind, text: String| {
        Event::new(kind, d.at, Some(target.clone()), text)
            .with("from", d.current)
            .with("to", d.desired)
            .with("reason", d.reason.clone())
            .with("result", a.result())
    };
    Some(match a {
        Applied::Unchanged => return None,
        Applied::Updated { from, to } => event(
            EventKind::Action,
            format!("{target}: {from} → {to}: {}", d.reason),
        ),
        Applied::DryRun { from, to } => event(
            EventKind::Action,
            format!("{target}: {from} → {to} (dry run, not applied): {}", d.reason),
        ),
        Applied::Refused { reason } => event(
            EventKind::Refusal,
            format!("{target}: {} → {} refused: {reason}", d.current, d.desired),
        ),
        Applied::Failed { error, .. } => event(
            EventKind::Error,
            format!("{target}: {} → {} failed: {error}", d.current, d.desired),
        ),
    })
}

/// What a tick did that people hear of: actions, refusals, failures and problems.
fn tick_events(report: &TickReport) -> Vec<Event> {
    let decisions = report
        .services
        .iter()
        .map(|(d, a)| (d, a))
        .chain(report.groups.iter().map(|g| (&g.decision, &g.applied)));
    let mut out: Vec<Event> = decisions.filter_map(|(d, a)| decision_event(d, a)).collect();
    for g in &report.groups {
        let target = g.decision.target.to_string();
        out.extend(g.errors.iter().map(|e| {
            Event::new(
                EventKind::Error,
                report.at,
                Some(target.clone()),
                format!("{target}: {e}"),
            )
        }));
    }
    out.extend(
        report
            .problems
            .iter()
            .map(|p| Event::new(EventKind::Error, report.at, None, p.clone())),
    );
    out
}

fn kind(t: &TargetKey) -> &'static str {
    match t {
        TargetKey::Service { .. } => "service",
        TargetKey::AutoScalingGroup { .. } => "auto_scaling_group",
        TargetKey::TaskGroup { .. } => "task_group",
    }
}

impl Worker {
    /// The state in memory (for tests and the final save).
    pub fn state(&self) -> &WorkerState {
        &self.state
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Decides for one target, from this tick's observation. A plugin that failed is logged,
    /// counted and listed in `problems` (its rule votes "error", so the target holds).
    pub(super) async fn decide(
        &self,
        policy: &TargetPolicy,
        obs: &Observation<'_>,
        problems: &mut Vec<String>,
    ) -> Decision {
        let externals = if has_externals(policy) {
            fetch_answers(&self.plugins, policy, obs).await
        } else {
            BTreeMap::new()
        };
        for (rule, e) in externals.iter().filter_map(|(r, a)| Some((r, a.as_ref().err()?))) {
            tracing::warn!(target = %policy.target, rule = %rule, "{e}");
            self.metrics.error("plugin");
            problems.push(format!("{}: rule {rule}: {e}", policy.target));
        }
        let state = self
            .state
            .targets
            .get(&policy.target.to_string())
            .map(|r| r.engine.clone())
            .unwrap_or_default();
        decide(policy, obs, &state, &externals)
    }

    /// Records a decision and what became of it; with its policy, in the engine's state too
    /// (a daemon group has none).
    pub(super) fn record(
        &mut self,
        policy_index: Option<usize>,
        d: &Decision,
        applied: &Applied,
        took_effect: bool,
    ) {
        let record = self.state.targets.entry(d.target.to_string()).or_default();
        if let Some(policy) = policy_index.map(|i| &self.policies[i]) {
            record.engine.record(policy, d, took_effect);
        }
        if !matches!(applied, Applied::Unchanged) {
            record.last_action = Some(LastAction {
                at: d.at,
                from: d.current,
                to: d.desired,
                result: applied.result().to_string(),
            });
        }
        let k = kind(&d.target);
        self.metrics.decision(k, &d.action.to_string());
        self.metrics.action(k, applied.result());
        match applied {
            Applied::Failed { error, .. } => {
                tracing::error!(target = %d.target, "{} → {}: {error}", d.current, d.desired);
                self.metrics.error("actuate");
            }
            Applied::Refused { reason } => {
                tracing::warn!(target = %d.target, "{} → {} refused: {reason}", d.current, d.desired)
            }
            Applied::Updated { from, to } => {
                tracing::info!(target = %d.target, "{from} → {to}: {}", d.reason)
            }
            Applied::DryRun { from, to } => {
                tracing::info!(target = %d.target, "dry run: {from} → {to}: {}", d.reason)
            }
            Applied::Unchanged => tracing::debug!(target = %d.target, "{}", d.reason),
        }
    }

    /// Makes sure this worker may act, loading the state a previous leader left when it just
    /// became the leader. `false`: follow this tick.
    async fn leading(&mut self) -> bool {
        let Some(lease) = &self.lease else {
            self.metrics.set_leader(true);
            return true;
        };
        let Some(fencing) = lease.fencing() else {
            self.metrics.set_leader(false);
            return false;
        };
        if self.loaded_fencing != Some(fencing) {
            match self.store.load().await {
                Ok(s) => {
                    self.state = s;
                    self.loaded_fencing = Some(fencing);
                    tracing::info!(
                        "leading (fencing token {fencing}): loaded the state from {}",
                        self.store.describe()
                    );
                }
                Err(e) => {
                    tracing::error!("leading, but the state cannot be read, so no action this tick: {e}");
                    self.metrics.error("state");
                    return false;
                }
            }
        }
        self.metrics.set_leader(true);
        true
    }

    /// One tick as of `now`.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> TickReport {
        let started = Instant::now();
        self.expire_orphans(now);
        if !self.leading().await {
            self.metrics.tick_done(started.elapsed());
            let report = TickReport::idle(now);
            self.metrics.set_status(self.status(&report, started.elapsed()));
            return report;
        }
        let mut report = TickReport::idle(now);
        report.acted = true;
        let mut lap = Instant::now();
        let mut stage = |report: &mut TickReport, name: &'static str| {
            report.stage_ms.insert(name, lap.elapsed().as_secs_f64() * 1000.0);
            lap = Instant::now();
        };
        let snapshot = self.collector.collect(now).await;
        self.services_seen = snapshot.services().count();
        // Measured from the end of the first pass (which reads whole windows), at the rate
        // that follows.
        let requested = self.clients.meter.metrics_requested_total();
        self.spend_from.get_or_insert((now, requested));
        if self.config.collect.events.is_some() {
            self.metrics
                .set_reads(self.collector.reads(now).0, self.clients.changes.counts());
        }
        stage(&mut report, "collect");
        for p in &snapshot.problems {
            tracing::warn!(scope = %p.scope, "{}", p.message);
            self.metrics.error("collect");
            report.problems.push(p.to_string());
        }
        // 1. Decide: services, then task groups.
        let mut pending = self.decide_services(&snapshot, now, &mut report).await;
        let groups = self.decide_groups(&snapshot, now, &mut report.problems).await;
        stage(&mut report, "evaluate");
        // 2. Capacity, for the counts just decided.
        for spec in &self.config.capacity.clone() {
            if let Some(outcome) = self
                .size_group(spec, &snapshot, &groups, &pending, now, &mut report)
                .await
            {
                note_waiting(&mut pending, spec, &outcome, &self.metrics);
                report.groups.push(outcome);
            }
        }
        // 3. The services, all at once within the UpdateService rate; then the task groups.
        self.apply_services(pending, &mut report).await;
        self.apply_groups(groups, &snapshot, &mut report).await;
        stage(&mut report, "actuate");
        // 4. Remember, then ship.
        self.save(&mut report).await;
        stage(&mut report, "save");
        for (name, ms) in &report.stage_ms {
            self.metrics.stage(name, *ms / 1000.0);
        }
        self.ship(&snapshot, &report);
        self.notify.tick(tick_events(&report));
        self.metrics.tick_done(started.elapsed());
        self.metrics.set_status(self.status(&report, started.elapsed()));
        report
    }

    /// Each service target's decision, with the service as collected (one missing from the
    /// collection is a problem, and no decision).
    async fn decide_services<'s>(
        &self,
        snapshot: &'s Snapshot,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Vec<(usize, Decision, &'s ServiceState)> {
        let services: BTreeMap<ServiceKey, &ServiceState> =
            snapshot.services().map(|s| (s.key(), s)).collect();
        let series = crate::model::SeriesIndex::new(&snapshot.series);
        // With events, what the last pass could not read is held, and the margins rank the
        // next pass's reads; without, every service is read every pass.
        let events = self.config.collect.events.is_some();
        let unread: std::collections::HashSet<ServiceKey> = self.collector.unread().into_iter().collect();
        let mut margins = std::collections::HashMap::new();
        let mut pending = Vec::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let TargetKey::Service { cluster, service } = &policy.target else {
                continue;
            };
            let key = ServiceKey::new(&**cluster, &**service);
            let Some(svc) = services.get(&key) else {
                let msg = format!(
                    "{key}: not in this tick's collection (see the collection problems); no decision"
                );
                tracing::warn!("{msg}");
                self.metrics.error("evaluate");
                report.problems.push(msg);
                continue;
            };
            let metrics = MetricSet::of_series(series.series_of(&key));
            let obs = Observation {
                now,
                current: svc.desired,
                running: svc.running,
                pending: svc.pending,
                metrics: &metrics,
            };
            let mut d = self.decide(policy, &obs, &mut report.problems).await;
            if unread.contains(&key) {
                hold_unread(&mut d);
            }
            if let Some(m) = events.then(|| policy.margin(&d)).flatten() {
                margins.insert(key, m);
            }
            pending.push((i, d, *svc));
        }
        if events {
            self.collector.rank(margins);
        }
        pending
    }

    /// Sizes one Auto Scaling group for the services' decided counts, its task groups and its
    /// own policy (a floor); `None` when it could not be read or its sizing is not known.
    async fn size_group(
        &mut self,
        spec: &crate::config::CapacitySpec,
        snapshot: &Snapshot,
        groups: &[super::groups::PendingGroup],
        pending: &[(usize, Decision, &ServiceState)],
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Option<GroupOutcome> {
        let cluster = snapshot.clusters.iter().find(|c| c.name == spec.cluster)?;
        let group = match self.capacity.observe(&spec.auto_scaling_group).await {
            Ok(g) => g,
            Err(e) => {
                self.problem(report, format!("asg/{}: {e}", spec.auto_scaling_group));
                return None;
            }
        };
        let desired: BTreeMap<String, u32> = pending
            .iter()
            .filter(|(_, _, s)| s.cluster == spec.cluster)
            .map(|(_, d, s)| (s.name.clone(), d.desired))
            .collect();
        let floor = self.group_floor(spec, snapshot, &group, now, report).await;
        let mut gstate = self
            .state
            .groups
            .get(&spec.auto_scaling_group)
            .cloned()
            .unwrap_or_default();
        let task_groups = super::groups::demands(groups, &self.config.groups, &spec.cluster);
        let tick = GroupTick {
            spec,
            group: &group,
            cluster,
            desired: &desired,
            policy: floor.as_ref().map(|(_, d)| d),
            task_groups: &task_groups,
            now,
        };
        let outcome = match self.capacity.managed_refusal(spec).await {
            Ok(None) => self.capacity.apply(&tick, &mut gstate, self.fence.as_ref()).await,
            Ok(Some(reason)) => self.capacity.refused(&tick, reason),
            Err(e) => {
                // Not knowing whether ECS sizes the group, leave it alone this tick.
                self.problem(
                    report,
                    format!(
                        "asg/{}: capacity providers not known, the group is not sized this tick: {e}",
                        spec.auto_scaling_group
                    ),
                );
                return None;
            }
        };
        self.state.groups.insert(spec.auto_scaling_group.clone(), gstate);
        if let Some((i, d)) = &floor {
            self.record_group_policy(*i, d, &outcome);
        }
        self.record_group_outcome(&outcome, now);
        Some(outcome)
    }

    /// An actuation problem: logged, counted and listed.
    fn problem(&self, report: &mut TickReport, msg: String) {
        tracing::error!("{msg}");
        self.metrics.error("actuate");
        report.problems.push(msg);
    }

    /// The group's own policy's decision (its index and decision), when it has one.
    async fn group_floor(
        &self,
        spec: &crate::config::CapacitySpec,
        snapshot: &Snapshot,
        group: &crate::api::GroupInfo,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Option<(usize, Decision)> {
        let target = TargetKey::AutoScalingGroup {
            name: spec.auto_scaling_group.as_str().into(),
        };
        let i = self.policies.iter().position(|p| p.target == target)?;
        let cluster_key = ServiceKey::new(&spec.cluster, "");
        let metrics = MetricSet::of_service(snapshot, &cluster_key);
        let count = |f: &dyn Fn(&str) -> bool| {
            group.instances.iter().filter(|i| f(&i.lifecycle_state)).count() as u32
        };
        let obs = Observation {
            now,
            current: group.desired,
            running: count(&|s| s == "InService"),
            pending: count(&|s| s.starts_with("Pending")),
            metrics: &metrics,
        };
        Some((
            i,
            self.decide(&self.policies[i], &obs, &mut report.problems).await,
        ))
    }

    /// The group policy's own clocks start when the group moved its way. Any launch starts its
    /// scale-out clock, the bin-packing's too: its metric (a reservation over the instances
    /// registered) does not count the new instances until they register, and read against the
    /// grown group it would ask for them a second time.
    fn record_group_policy(&mut self, i: usize, d: &Decision, outcome: &GroupOutcome) {
        let launched = outcome.applied.took_effect() && outcome.decision.action == Action::ScaleOut;
        let moved = launched || (d.action == Action::ScaleIn && !outcome.drained.is_empty());
        let mut d = d.clone();
        if launched {
            d.action = Action::ScaleOut;
        }
        let policy = &self.policies[i];
        self.state
            .targets
            .entry(d.target.to_string())
            .or_default()
            .engine
            .record(policy, &d, moved);
    }

    /// A group's decision, counted and logged like a service's (no engine state of its own).
    fn record_group_outcome(&mut self, outcome: &GroupOutcome, now: DateTime<Utc>) {
        let took = outcome.applied.took_effect() || !outcome.drained.is_empty();
        let (applied, decision) = (&outcome.applied, &outcome.decision);
        let k = kind(&decision.target);
        self.metrics.decision(k, &decision.action.to_string());
        self.metrics.action(k, applied.result());
        for e in &outcome.errors {
            tracing::error!(target = %decision.target, "{e}");
            self.metrics.error("actuate");
        }
        if took || !matches!(applied, Applied::Unchanged) {
            tracing::info!(target = %decision.target, "{applied}: {}", decision.reason);
            let record = self.state.targets.entry(decision.target.to_string()).or_default();
            record.last_action = Some(LastAction {
                at: now,
                from: decision.current,
                to: decision.desired,
                result: applied.result().to_string(),
            });
        }
    }

    /// The services' decisions, applied together within the UpdateService rate, and recorded.
    async fn apply_services(
        &mut self,
        pending: Vec<(usize, Decision, &ServiceState)>,
        report: &mut TickReport,
    ) {
        let fence = self.fence.clone();
        let changing: Vec<(&Decision, &ServiceState)> = pending.iter().map(|(_, d, s)| (d, *s)).collect();
        self.services.prepare(&changing).await;
        let applied = futures::future::join_all(
            pending
                .iter()
                .map(|(_, d, svc)| self.services.apply(d, svc, fence.as_ref())),
        )
        .await;
        for ((i, d, svc), a) in pending.into_iter().zip(applied) {
            if a.took_effect() {
                // Its desired count is not what was last read: read it again next pass.
                self.collector.changed(svc.key());
            }
            self.record(Some(i), &d, &a, a.took_effect());
            report.services.push((d, a));
        }
    }

    /// `/status` after a tick: every target with its decision, clocks and last action.
    fn status(&self, report: &TickReport, took: std::time::Duration) -> super::status::Status {
        let mut decisions: Vec<(&Decision, &str)> =
            report.services.iter().map(|(d, a)| (d, a.result())).collect();
        decisions.extend(report.groups.iter().map(|g| (&g.decision, g.applied.result())));
        let mut targets = super::status::build(&self.policies, &self.state, &decisions, report.at);
        // Groups sized by the capacity stage alone (no policy of their own).
        let with_policy: std::collections::HashSet<&TargetKey> =
            self.policies.iter().map(|p| &p.target).collect();
        for (d, applied) in &decisions {
            if !with_policy.contains(&d.target) {
                let mut t = super::status::TargetStatus {
                    target: d.target.to_string(),
                    ..Default::default()
                };
                super::status::with_decision(&mut t, d, applied);
                t.last_action = self
                    .state
                    .targets
                    .get(&t.target)
                    .and_then(|r| r.last_action.clone());
                targets.push(t);
            }
        }
        super::status::Status {
            source: "worker".into(),
            leader: report.acted,
            last_tick: Some(report.at),
            tick_ms: Some(took.as_secs_f64() * 1000.0),
            problems: report.problems.clone(),
            targets,
            reload: None,
            cloudwatch: self.cloudwatch_spend(report.at),
        }
    }

    /// What CloudWatch has cost from the end of the first pass to `at`, as a month.
    fn cloudwatch_spend(&self, at: DateTime<Utc>) -> Option<super::status::CloudWatchSpend> {
        let (since, before) = self.spend_from?;
        let requested = self.clients.meter.metrics_requested_total();
        super::status::spend(requested.saturating_sub(before), since, at, self.services_seen)
    }

    async fn save(&mut self, report: &mut TickReport) {
        let fencing = self.lease.as_ref().and(self.loaded_fencing);
        if let Err(e) = self.store.save(&self.state, fencing).await {
            self.metrics.error("state");
            if let StateError::Fenced { .. } = e {
                tracing::error!("{e}: another worker leads now");
                // Forget the tenure: the next tick as leader reloads the state.
                self.loaded_fencing = None;
            } else {
                tracing::error!("saving the state: {e}");
            }
            report.problems.push(e.to_string());
        }
    }

    /// Hands this tick's documents to the ship stage (never waits for it).
    fn ship(&mut self, snapshot: &Snapshot, report: &TickReport) {
        let Some(queue) = &self.ship else {
            return;
        };
        // Samples count as shipped once they are on disk: those after that are sent again.
        for (k, t) in queue.durable() {
            let e = self.state.shipped_until.entry(k).or_insert(t);
            *e = (*e).max(t);
        }
        let shipped = &self.state.shipped_until;
        let mut docs: Vec<Doc> = snapshot_docs(snapshot, &|k| shipped.get(k).copied());
        for p in &self.policies {
            docs.extend(target_docs(p, report.at));
        }
        for (d, a) in &report.services {
            docs.push(decision_doc(d, Some(a)));
        }
        for g in &report.groups {
            docs.push(decision_doc(&g.decision, Some(&g.applied)));
        }
        docs.extend(self.cloudwatch_spend(report.at).map(|s| s.doc(report.at)));
        let marks = snapshot
            .series
            .iter()
            .filter_map(|s| {
                s.latest()
                    .map(|last| (format!("{}:{}", s.target(), s.id), last.timestamp))
            })
            .collect();
        queue.send(ShipBatch { docs, marks }, &self.metrics);
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Action, Decision, TargetKey};

    /// A service whose known change was not read again keeps its count, and says why.
    #[test]
    fn an_unread_service_is_held_with_the_reason() {
        let mut d = Decision {
            target: TargetKey::service("c", "s"),
            at: chrono::DateTime::UNIX_EPOCH,
            current: 4,
            running: 4,
            desired: 6,
            action: Action::ScaleOut,
            min: 1,
            max: 10,
            rule: Some("cpu".into()),
            reason: "cpu 80 > 60".into(),
            recommendation: 6,
            inputs: Default::default(),
            votes: Vec::new(),
        };
        super::hold_unread(&mut d);
        assert_eq!((d.desired, d.action), (4, Action::Hold));
        assert!(
            d.reason.starts_with("cpu 80 > 60; held at 4: ECS changed"),
            "{}",
            d.reason
        );
        let before = d.clone();
        super::hold_unread(&mut d);
        assert_eq!(d, before, "a hold is left as it is");
    }
}
