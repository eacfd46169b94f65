//! The collect stage: one pass over ECS and CloudWatch that yields a [`Snapshot`].
//!
//! First in the data flow. Per pass: the services of every cluster are resolved (named ones,
//! plus those discovered by name prefix or tags) with DescribeServices in batches of 10; then,
//! at the same time, every metric of every service is read with as few GetMetricData calls as
//! the limits allow (500 queries, 100,800 datapoints per call), and each cluster's task
//! definitions, container instances and pending tasks are read. Anything that fails is a
//! [`Problem`] for its own scope; the pass goes on for the rest. The API calls the pass made are
//! counted in [`Snapshot::usage`]. Metrics with a `prometheus` query are read from Prometheus
//! instead ([`prometheus`]), into the same kind of series.

pub mod book;
mod cloudwatch;
pub mod cost;
mod ecs;
pub mod events;
mod history;
pub mod prometheus;
mod recent;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use crate::api::{CloudWatchApi, EcsApi};
use crate::config::{ClusterSpec, CollectSettings, Config};
use crate::model::{ClusterSnapshot, Problem, Sample, Series, ServiceKey, Snapshot, TaskDefinitionInfo};
use crate::usage::ApiMeter;

pub use cloudwatch::{align_down, cluster_metrics, metrics_for, plan, Plan, PlannedSeries, ResolvedMetric};
pub use history::{history_period, HistoryNeed, MAX_HISTORY};

/// Collects snapshots. Build one per worker and reuse it: it keeps the AWS clients and a cache
/// of task definitions (a revision never changes, so it is read once).
pub struct Collector {
    ecs: Arc<dyn EcsApi>,
    cloudwatch: Arc<dyn CloudWatchApi>,
    meter: ApiMeter,
    clusters: Vec<ClusterSpec>,
    settings: CollectSettings,
    /// Bounds the AWS calls in flight (`collect.concurrency`).
    limiter: Semaphore,
    task_definitions: Mutex<HashMap<String, TaskDefinitionInfo>>,
    /// Long windows for predictive rules.
    history: history::HistoryCache,
    /// The client of Prometheus metrics (or why there is none: a secret not set).
    prometheus: Result<prometheus::PromClient, String>,
    /// The cluster-level metrics of clusters with an Auto Scaling group, and the task groups'
    /// metrics (as `CLUSTER/group:NAME`): the same every pass.
    fixed_metrics: Vec<ResolvedMetric>,
    /// The series read in earlier passes, so a pass reads only what is due.
    recent: recent::Recent,
    /// Each service's metrics with their placeholders filled, by service and the target group
    /// ECS reported for it: the same every pass until one of those changes.
    resolved: Mutex<HashMap<(ServiceKey, Vec<String>), Resolved>>,
    /// Each cluster elsewhere (another region or account), and the first cluster of the config
    /// in the same place, whose clients its calls use ([`Collector::via`]); worked out once.
    vias: HashMap<String, String>,
    /// With `collect.events`: the services as last read, and which changed since.
    book: book::Book,
    changes: Arc<events::Changes>,
    /// How long a pass's ECS reads may wait for the read budget: half the tick.
    read_within: std::time::Duration,
}

/// The most services whose metrics are kept resolved.
const RESOLVED_MAX: usize = 20_000;

/// A service's metrics, and the problems of those that could not be filled.
type Resolved = (Vec<ResolvedMetric>, Vec<Problem>);

/// [`Collector::vias`] of `clusters`.
fn vias(clusters: &[ClusterSpec]) -> HashMap<String, String> {
    clusters
        .iter()
        .filter(|c| c.place() != (None, None))
        .filter_map(|c| {
            let first = clusters.iter().find(|f| f.place() == c.place())?;
            Some((c.name.clone(), first.name.clone()))
        })
        .collect()
}

impl Collector {
    pub fn new(
        config: &Config,
        ecs: Arc<dyn EcsApi>,
        cloudwatch: Arc<dyn CloudWatchApi>,
        meter: ApiMeter,
    ) -> Self {
        Collector {
            ecs,
            cloudwatch,
            meter,
            clusters: config.clusters.clone(),
            settings: config.collect.clone(),
            limiter: Semaphore::new(config.collect.concurrency),
            task_definitions: Mutex::new(HashMap::new()),
            history: history::HistoryCache::default(),
            prometheus: prometheus::PromClient::new(&config.prometheus),
            resolved: Mutex::default(),
            vias: vias(&config.clusters),
            recent: recent::Recent::default(),
            book: book::Book::default(),
            changes: Arc::default(),
            read_within: match &config.schedule {
                crate::config::Schedule::Interval(d) => *d / 2,
                crate::config::Schedule::Cron { .. } => std::time::Duration::from_secs(30),
            },
            fixed_metrics: config
                .capacity
                .iter()
                .flat_map(|c| cluster_metrics(&c.cluster, &config.collect))
                .chain(config.groups.iter().flat_map(cloudwatch::group_metrics))
                .collect(),
        }
    }

    /// [`metrics_for`] a service, worked out once per service and target group.
    fn service_metrics(
        &self,
        spec: &ClusterSpec,
        service: Option<&crate::config::ServiceSpec>,
        state: &crate::model::ServiceState,
    ) -> Resolved {
        let tgs = state
            .load_balancers
            .iter()
            .filter_map(|lb| lb.target_group_arn.clone())
            .collect();
        let key = (state.key(), tgs);
        let mut cache = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        // Services come and go (discovered ones): bounded, and rebuilt when it would grow past.
        if cache.len() >= RESOLVED_MAX {
            cache.clear();
        }
        cache
            .entry(key)
            .or_insert_with(|| metrics_for(spec, service, state, &self.settings))
            .clone()
    }

    /// Also reads these metrics' long windows (predictive rules), each once per its refresh.
    pub fn with_history(mut self, needs: Vec<HistoryNeed>) -> Self {
        self.history = history::HistoryCache::new(needs);
        self
    }

    /// Signs Prometheus queries with these AWS credentials (`prometheus.sigv4`).
    pub fn with_signer(mut self, signer: Option<crate::aws::Signer>) -> Self {
        self.prometheus = self.prometheus.map(|p| p.with_signer(signer));
        self
    }

    /// Takes over the history `old` read for the needs both share (a reload does not read
    /// long windows again), and the services as it last read them.
    pub fn carry_history(&self, old: &Collector) {
        self.history.carry_from(&old.history);
        self.book.carry_from(&old.book);
    }

    /// Takes the services changed (ECS's events, the worker's actions) from `changes`.
    pub fn with_changes(mut self, changes: Arc<events::Changes>) -> Self {
        self.changes = changes;
        self
    }

    /// `key` changed (the worker acted on it): the next pass reads it.
    pub fn changed(&self, key: ServiceKey) {
        self.changes.mark(key);
    }

    /// Why services were read or served as last read, and the oldest state kept, at `now`.
    pub fn reads(&self, now: DateTime<Utc>) -> (book::ReadCounts, Option<std::time::Duration>) {
        (self.book.counts(), self.book.oldest(now))
    }

    /// The cluster whose account and region `cluster`'s calls go to: the first cluster of the
    /// config in the same place; `None` for the worker's own.
    pub(crate) fn via(&self, cluster: &str) -> Option<String> {
        self.vias.get(cluster).cloned()
    }

    /// Runs `call` once a slot among `collect.concurrency` is free.
    async fn limited<F: Future>(&self, call: F) -> F::Output {
        // The semaphore is never closed, so acquiring cannot fail; if it ever did, running
        // the call unbounded is better than not running it.
        let _permit = self.limiter.acquire().await.ok();
        call.await
    }

    /// Step 1 of a pass: every cluster's services listed, then (with events) the book's plan
    /// of which to read within the read budget, then those described.
    async fn resolve(&self, pass: Option<&book::Pass>) -> Vec<ecs::Resolved> {
        let listed = futures::future::join_all(self.clusters.iter().map(|c| ecs::list(self, c, pass))).await;
        let mut due: Vec<Option<(Vec<String>, &book::Pass)>> = vec![None; listed.len()];
        if let Some(pass) = pass {
            let found: Vec<book::Found<'_>> = self
                .clusters
                .iter()
                .zip(&listed)
                .map(|(c, l)| book::Found {
                    cluster: &c.name,
                    names: &l.names,
                    allowance: self.ecs.read_allowance(&c.name, self.read_within),
                })
                .collect();
            due = self
                .book
                .plan(&found, pass)
                .into_iter()
                .map(|d| Some((d, pass)))
                .collect();
        }
        futures::future::join_all(
            self.clusters
                .iter()
                .zip(listed)
                .zip(due)
                .map(|((c, l), d)| ecs::resolve_services(self, c, l, d)),
        )
        .await
    }

    /// How near each service is to a rule's threshold, from the worker's last decisions: when
    /// the read budget cannot cover a pass, the nearest are read first.
    pub fn rank(&self, margins: HashMap<ServiceKey, f64>) {
        self.book.rank(margins);
    }

    /// The services the last pass knew changed (or overdue) but could not read again: the
    /// worker holds them.
    pub fn unread(&self) -> Vec<ServiceKey> {
        self.book.unread()
    }

    /// One collection pass, as of `now` (which decides the metric windows).
    pub async fn collect(&self, now: DateTime<Utc>) -> Snapshot {
        let before = self.meter.usage();
        let mut problems = Vec::new();

        // 1. Which services, in what state (with events: those changed, moving or due).
        let pass = self
            .settings
            .events
            .as_ref()
            .map(|e| self.book.pass(now, self.changes.take(), e.reconcile));
        let resolved = self.resolve(pass.as_ref()).await;
        if let Some(message) = pass.as_ref().and_then(|_| self.book.skipped_note()) {
            problems.push(Problem {
                scope: "collect".into(),
                message,
            });
        }
        if pass.is_some() {
            let keep = resolved
                .iter()
                .flat_map(|r| r.services.iter().map(|(s, _)| s.key()))
                .collect();
            self.book.retain(&keep);
        }

        // 2. Their metrics, and each cluster's details, at the same time.
        let mut metrics = Vec::new();
        for (spec, r) in self.clusters.iter().zip(&resolved) {
            for (state, service_spec) in &r.services {
                let (m, p) = self.service_metrics(spec, service_spec.as_ref(), state);
                metrics.extend(m);
                problems.extend(p);
            }
        }
        metrics.extend(self.fixed_metrics.iter().cloned());
        let (from_prometheus, metrics): (Vec<_>, Vec<_>) =
            metrics.into_iter().partition(|m| m.spec.prometheus.is_some());
        let wanted: Vec<ResolvedMetric> = metrics
            .iter()
            .filter(|m| self.history.needs(m))
            .cloned()
            .collect();
        let long = history::read(self, now, &wanted);
        let split = self
            .recent
            .split(cloudwatch::windows(now, metrics, self.settings.lookback));
        let plan = cloudwatch::pack_routed(split.due.clone(), |c| self.via(c));
        let details = futures::future::join_all(resolved.into_iter().map(|r| ecs::details(self, r)));
        let ((read, metric_problems), (prom, prom_problems), clusters, (histories, history_problems)) = tokio::join!(
            cloudwatch::fetch(self, plan),
            prometheus::fetch(self, now, from_prometheus),
            details,
            long
        );
        let mut series = self.recent.merge(split, read);
        series.extend(prom);
        problems.extend(metric_problems);
        problems.extend(prom_problems);
        problems.extend(history_problems);
        attach_histories(&mut series, &histories);

        let clusters = clusters
            .into_iter()
            .map(|(c, p): (ClusterSnapshot, Vec<Problem>)| {
                problems.extend(p);
                c
            })
            .collect();
        Snapshot {
            taken_at: now,
            clusters,
            series,
            usage: self.meter.since(&before),
            problems,
        }
    }
}

/// Each series' long history, where a forecast read one. Only a metric some forecast reads
/// has one: the others need no lookup.
fn attach_histories(series: &mut [Series], histories: &HashMap<(ServiceKey, String), Arc<Vec<Sample>>>) {
    let with_history: std::collections::HashSet<&str> = histories.keys().map(|(_, id)| id.as_str()).collect();
    for s in series.iter_mut().filter(|s| with_history.contains(s.id.as_str())) {
        s.history = histories.get(&(s.key(), s.id.clone())).cloned();
    }
}

#[cfg(test)]
mod tests;
