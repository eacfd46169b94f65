//! `ecscale run`: the scheduled worker that ties the stages together.
//!
//! Ticks on the configured schedule (a fixed interval, or a cron expression in UTC). Ticks never
//! stack: one that overruns its slot makes the worker skip the slots it covered (logged and
//! counted in `ecscale_ticks_skipped_total`) and start again at the next one. Each tick
//! ([`tick`]) collects, evaluates, actuates, saves the [`state`] and hands documents to the ship
//! stage through a bounded queue, so an Elasticsearch outage never holds scaling back: when the
//! shipper falls 16 ticks behind (the spool full with `on_full: block`), a tick's documents are
//! dropped with an error instead of stopping the worker.
//!
//! Several replicas may run; with `worker.leader`, one [`leader`] acts and the others wait.
//! `/metrics` and `/healthz` come from [`metrics`].
//!
//! Shutdown: the first SIGTERM or SIGINT lets the running tick finish (within
//! `worker.shutdown_grace`), flushes the shipper and gives the lease up; a second one exits at
//! once (status 130).

pub mod control;
pub mod emf;
pub mod groups;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod orphans;
pub mod reload;
pub mod ship;
pub mod sources;
pub mod state;
pub mod status;
pub mod tick;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use tokio::sync::{mpsc, watch};

use crate::actuate::capacity::CapacityActuator;
use crate::actuate::ecs_service::ServiceActuator;
use crate::actuate::{Alone, Fence, RateLimiter};
use crate::api::{AppAutoScalingApi, AutoScalingApi, CloudWatchApi, EcsApi, EcsWriteApi};
use crate::collect::{Collector, HistoryNeed};
use crate::config::{Config, Schedule, StateBackend};
use crate::model::{ServiceKey, TargetKey};
use crate::policy::TargetPolicy;
use crate::ship::{ShipError, Shipper};
use crate::usage::ApiMeter;

use leader::{Lease, LeaseFence};
use metrics::Metrics;
use reload::{Loader, Reloading, Trigger};
use ship::{ShipQueue, ShipStage};
use state::{DynamoStore, FileStore, StateStore};
pub use tick::{TickReport, Worker};

/// Ticks of documents the ship queue holds before dropping.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("opening the ship stage: {0}")]
    Ship(#[from] ShipError),
    #[error("{0} needs a DynamoDB client, and none was given")]
    NoDynamoDb(String),
    #[error("{0}")]
    Notify(String),
    #[error("serving /metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where a cluster is: its region and role (`None`: the worker's own).
type Place<'a> = (Option<&'a str>, Option<&'a str>);

/// Everything the worker talks to.
#[derive(Clone)]
pub struct Clients {
    pub ecs: Arc<dyn EcsApi>,
    pub cloudwatch: Arc<dyn CloudWatchApi>,
    pub ecs_write: Arc<dyn EcsWriteApi>,
    pub autoscaling: Arc<dyn AutoScalingApi>,
    pub app_autoscaling: Arc<dyn AppAutoScalingApi>,
    /// For the DynamoDB state and lease, when configured.
    pub dynamodb: Option<aws_sdk_dynamodb::Client>,
    pub meter: ApiMeter,
    /// Signs Amazon Managed Prometheus queries (none: no AWS credential chain).
    pub signer: Option<crate::aws::Signer>,
    /// The queue of ECS's events (`collect.events`), long-polled while the worker runs.
    pub events: Option<Arc<dyn crate::api::QueueApi>>,
    /// The services changed since the last pass, from the queue and the worker's own actions.
    pub changes: Arc<crate::collect::events::Changes>,
}

impl Clients {
    /// The AWS SDK clients of a context.
    pub fn aws(aws: &crate::aws::AwsContext) -> Self {
        let ecs: Arc<dyn EcsApi> = Arc::new(aws.ecs.clone());
        let ecs: Arc<dyn EcsApi> = match &aws.ecs_reads {
            Some(budget) => Arc::new(crate::aws::budget::PacedEcs {
                inner: ecs,
                budget: budget.clone(),
            }),
            None => ecs,
        };
        Clients {
            ecs,
            cloudwatch: Arc::new(aws.cloudwatch.clone()),
            ecs_write: Arc::new(aws.ecs.clone()),
            autoscaling: Arc::new(aws.autoscaling.clone()),
            app_autoscaling: Arc::new(aws.app_autoscaling.clone()),
            dynamodb: Some(aws.dynamodb.clone()),
            meter: aws.meter.clone(),
            signer: aws.signer(),
            events: None,
            changes: Arc::default(),
        }
    }

    /// The clients of every place `config`'s clusters are in: the worker's own, and each region
    /// and role a cluster names (its own clients, read budget and credentials, the role
    /// assumed through STS from the worker's own).
    pub async fn routed(aws: &crate::aws::AwsContext, config: &Config) -> Result<Self, crate::aws::Error> {
        use crate::aws::routes::Routes;
        let own = Clients::aws(aws);
        // (the place, its region, its clients)
        let mut places: Vec<(Place<'_>, String, Clients)> = Vec::new();
        for c in config.clusters.iter().filter(|c| c.place() != (None, None)) {
            if !places.iter().any(|(p, _, _)| *p == c.place()) {
                let ctx = aws.place(c.region.as_deref(), c.role_arn.as_deref()).await?;
                places.push((c.place(), ctx.region.clone(), Clients::aws(&ctx)));
            }
        }
        if places.is_empty() {
            return Ok(own);
        }
        macro_rules! routes {
            ($field:ident, $t:ty) => {{
                let clusters = config
                    .clusters
                    .iter()
                    .filter_map(|c| {
                        let (_, _, cl) = places.iter().find(|(p, _, _)| *p == c.place())?;
                        Some((c.name.clone(), cl.$field.clone()))
                    })
                    .collect();
                let places = places
                    .iter()
                    .map(|((_, role), region, cl)| {
                        let account = role
                            .and_then(crate::config::role_account)
                            .map(str::to_string);
                        (region.clone(), account, cl.$field.clone())
                    })
                    .collect();
                Arc::new(Routes::<$t> {
                    own: own.$field.clone(),
                    clusters,
                    places,
                }) as Arc<$t>
            }};
        }
        // Auto Scaling groups where their cluster is, by group name.
        let groups = config
            .capacity
            .iter()
            .filter_map(|g| {
                let place = config.clusters.iter().find(|c| c.name == g.cluster)?.place();
                let (_, _, cl) = places.iter().find(|(p, _, _)| *p == place)?;
                Some((g.auto_scaling_group.clone(), cl.autoscaling.clone()))
            })
            .collect();
        let autoscaling = Arc::new(Routes::<dyn AutoScalingApi> {
            own: own.autoscaling.clone(),
            clusters: groups,
            places: Vec::new(),
        });
        Ok(Clients {
            ecs: routes!(ecs, dyn EcsApi),
            cloudwatch: routes!(cloudwatch, dyn CloudWatchApi),
            ecs_write: routes!(ecs_write, dyn EcsWriteApi),
            app_autoscaling: routes!(app_autoscaling, dyn AppAutoScalingApi),
            autoscaling,
            ..own
        })
    }

    /// With the queue of ECS's events that `collect` names (if any).
    pub fn with_events(
        mut self,
        aws: &crate::aws::AwsContext,
        collect: &crate::config::CollectSettings,
    ) -> Self {
        self.events = collect
            .events
            .as_ref()
            .map(|e| Arc::new(aws.queue(&e.queue_url)) as Arc<dyn crate::api::QueueApi>);
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Evaluate and record, call no mutating API.
    pub dry_run: bool,
    /// Stop after this many ticks (trial runs, tests).
    pub max_ticks: Option<u64>,
    /// The SSM parameters the files come from, read again this often (`--from-ssm`).
    pub sources: Option<(sources::Sources, Duration)>,
    /// With `ECSCALE_EMF_STACK`: the `Stack` dimension of the health line printed each tick.
    pub emf_stack: Option<String>,
}

/// A worker's id in the lease: the configured one, else host name and process id.
fn worker_id(config: &Config) -> String {
    if let Some(id) = config.worker.leader.as_ref().and_then(|l| l.id.clone()) {
        return id;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ecscale".into());
    format!("{host}-{}", std::process::id())
}

/// The state store the config names.
pub fn store(
    config: &Config,
    dynamodb: Option<&aws_sdk_dynamodb::Client>,
) -> Result<Box<dyn StateStore>, Error> {
    match (&config.worker.state, dynamodb) {
        (StateBackend::DynamoDb { table }, Some(client)) => {
            Ok(Box::new(DynamoStore::new(client.clone(), table)))
        }
        (StateBackend::File(path), _) => Ok(Box::new(FileStore::new(path))),
        (StateBackend::DynamoDb { table }, None) => {
            Err(Error::NoDynamoDb(format!("worker.state.dynamodb_table {table}")))
        }
    }
}

/// How long a gap between ticks is normal (for `/healthz`).
pub fn expected_gap(schedule: &Schedule) -> Duration {
    match schedule {
        Schedule::Interval(d) => *d,
        Schedule::Cron { schedule, .. } => {
            let a = schedule.next_after(Tz::UTC, Utc::now());
            match (a, a.and_then(|a| schedule.next_after(Tz::UTC, a))) {
                (Some(a), Some(b)) => (b - a).to_std().unwrap_or(Duration::from_secs(60)),
                _ => Duration::from_secs(60),
            }
        }
    }
}

/// The first scheduled time after `t`.
pub fn next_after(schedule: &Schedule, start: DateTime<Utc>, t: DateTime<Utc>) -> DateTime<Utc> {
    match schedule {
        Schedule::Interval(d) => {
            let step = TimeDelta::from_std(*d)
                .unwrap_or(TimeDelta::seconds(30))
                .max(TimeDelta::milliseconds(1));
            if t < start {
                return start;
            }
            let k = (t - start).num_milliseconds() / step.num_milliseconds() + 1;
            start + step * i32::try_from(k).unwrap_or(i32::MAX)
        }
        Schedule::Cron { schedule, .. } => schedule
            .next_after(Tz::UTC, t)
            .unwrap_or(t + TimeDelta::days(365)),
    }
}

/// What a worker is built with besides its config and clients.
pub struct Parts {
    pub store: Box<dyn StateStore>,
    /// With several workers: act only while holding it.
    pub lease: Option<Arc<Lease>>,
    pub metrics: Arc<Metrics>,
    /// Where each tick's documents go (none: not shipped).
    pub ship: Option<ShipQueue>,
    /// Where its events are pushed (none: nowhere).
    pub notify: Option<Arc<notify::Notifications>>,
}

/// The long windows the policies' rules need (predictive rules): per service and metric, the
/// longest window any rule asks for, read again as often as the most demanding rule wants.
pub fn history_needs(policies: &[TargetPolicy]) -> Vec<HistoryNeed> {
    let mut needs: Vec<HistoryNeed> = Vec::new();
    for p in policies {
        let TargetKey::Service { cluster, service } = &p.target else {
            continue;
        };
        for (metric, window, refresh) in p.rules.iter().filter_map(|r| r.spec.policy().history()) {
            let key = ServiceKey::new(&**cluster, &**service);
            match needs.iter_mut().find(|n| n.key == key && n.metric == metric) {
                Some(n) => {
                    n.window = n.window.max(window);
                    n.refresh = n.refresh.min(refresh);
                }
                None => needs.push(HistoryNeed {
                    key,
                    metric: metric.to_string(),
                    window,
                    refresh,
                }),
            }
        }
    }
    needs
}

/// The collector for a config and its policies' history needs.
fn collector(config: &Config, policies: &[TargetPolicy], clients: &Clients) -> Collector {
    Collector::new(
        config,
        clients.ecs.clone(),
        clients.cloudwatch.clone(),
        clients.meter.clone(),
    )
    .with_history(history_needs(policies))
    .with_signer(clients.signer.clone())
    .with_changes(clients.changes.clone())
}

/// Long-polls the queue of ECS's events (when there is one) until `stop`.
fn poll_events(clients: &Clients, stop: &watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
    let poller = crate::collect::events::Poller {
        queue: clients.events.clone()?,
        changes: clients.changes.clone(),
        wait: Duration::from_secs(20),
    };
    Some(tokio::spawn(poller.run(stop.clone())))
}

/// The UpdateService rate limiter of a config: ECS's bucket for UpdateService holds 50
/// (refilled at 5 per second), so a burst of up to 50 lets a spike on many services be
/// answered at once; the rate holds after it.
fn update_limiter(config: &Config) -> Arc<RateLimiter> {
    if config.worker.update_rate.is_infinite() {
        return Arc::new(RateLimiter::unlimited());
    }
    let burst = (config.worker.update_rate * 10.0).clamp(1.0, 50.0);
    Arc::new(RateLimiter::new(config.worker.update_rate, burst))
}

impl Worker {
    /// Builds a worker: loads its state (an unreadable state is an error, not a fresh start),
    /// and, with a lease, does not act until it leads.
    pub async fn new(
        config: Config,
        policies: Vec<TargetPolicy>,
        clients: Clients,
        parts: Parts,
        opts: &RunOptions,
    ) -> Result<Worker, Error> {
        let Parts {
            store,
            lease,
            metrics,
            ship,
            notify,
        } = parts;
        // A dry run reads the state (to decide as the acting worker would) but never writes it,
        // and takes no part in the leader election.
        let (store, lease): (Box<dyn StateStore>, _) = if opts.dry_run {
            (Box::new(state::ReadOnly(store)), None)
        } else {
            (store, lease)
        };
        let state = if lease.is_some() {
            Default::default()
        } else {
            store.load().await?
        };
        let limiter = update_limiter(&config);
        let fence: Arc<dyn Fence> = match &lease {
            Some(l) => Arc::new(LeaseFence(l.clone())),
            None => Arc::new(Alone),
        };
        Ok(Worker {
            collector: collector(&config, &policies, &clients),
            services: ServiceActuator::new(
                clients.ecs_write.clone(),
                clients.app_autoscaling.clone(),
                config.worker.app_autoscaling,
                limiter,
                opts.dry_run,
            ),
            capacity: CapacityActuator::new(
                clients.ecs_write.clone(),
                clients.autoscaling.clone(),
                opts.dry_run,
            ),
            plugins: Default::default(),
            task_groups: crate::actuate::task_group::TaskGroupActuator::new(
                clients.ecs.clone(),
                clients.ecs_write.clone(),
                opts.dry_run,
            ),
            clients,
            dry_run: opts.dry_run,
            notify: notify.unwrap_or_else(|| Arc::new(notify::Notifications::new("", None))),
            store,
            lease,
            fence,
            metrics,
            ship,
            state,
            loaded_fencing: None,
            orphans: Default::default(),
            spend_from: None,
            services_seen: 0,
            config,
            policies,
        })
    }
}

/// Counts SIGTERM/SIGINT: the first sets `stop`, the second exits the process now.
/// The first SIGTERM/SIGINT sets `stop` (and logs `first`); a second exits at once with 130.
pub fn watch_signals(stop: watch::Sender<bool>, first: &'static str) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot listen for SIGTERM/SIGINT: stop the worker with SIGKILL");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("{first}");
        let _ = stop.send(true);
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("ecscale: second signal: exiting now");
        std::process::exit(130);
    });
}

/// Serves `/metrics`, `/healthz`, `/status` and `POST /reload` when the config asks for it.
async fn serve_metrics(
    config: &Config,
    metrics: &Arc<Metrics>,
    stop: &watch::Receiver<bool>,
    reload: Option<mpsc::Sender<Trigger>>,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    let Some(addr) = config.worker.metrics_addr else {
        return Ok(None);
    };
    let guard = metrics::Guard::of(addr, std::env::var("ECSCALE_CONTROL_TOKEN").ok());
    let (bound, task) = metrics::serve(addr, metrics.clone(), stop.clone(), reload, guard)
        .await
        .map_err(|source| Error::Metrics { addr, source })?;
    tracing::info!("serving /metrics, /healthz and /status on http://{bound}");
    Ok(Some(task))
}

/// The lease of a config with a leader, or none (a dry run takes no part in the election).
fn lease_of(config: &Config, clients: &Clients, opts: &RunOptions) -> Result<Option<Arc<Lease>>, Error> {
    match (&config.worker.leader, &clients.dynamodb) {
        (Some(_), _) if opts.dry_run => {
            tracing::warn!(
                "dry run: not taking part in the leader election; the state is read, never written"
            );
            Ok(None)
        }
        (Some(l), Some(client)) => Ok(Some(Arc::new(Lease::new(
            client.clone(),
            &l.table,
            &worker_id(config),
            l.lease,
        )))),
        (Some(l), None) => Err(Error::NoDynamoDb(format!(
            "worker.leader.dynamodb_table {}",
            l.table
        ))),
        (None, _) => Ok(None),
    }
}

/// The notifier of a config's `notify:` targets.
fn notifications(config: &Config, metrics: &Arc<Metrics>) -> Result<Arc<notify::Notifications>, Error> {
    let id = worker_id(config);
    let n = match config.notify.is_empty() {
        true => None,
        false => Some(notify::Notifier::start(&config.notify, &id, metrics.clone()).map_err(Error::Notify)?),
    };
    Ok(Arc::new(notify::Notifications::new(&id, n)))
}

/// When to tick: the schedule, the instant slots are aligned to, and the next slot.
struct Clock {
    schedule: Schedule,
    start: DateTime<Utc>,
    next: DateTime<Utc>,
}

impl Clock {
    fn new(schedule: Schedule) -> Self {
        let start = Utc::now();
        Clock {
            schedule,
            start,
            next: start,
        }
    }

    /// After a tick that was due at `scheduled`: the next slot not yet passed, and how many
    /// were skipped.
    fn advance(&mut self, scheduled: DateTime<Utc>) -> u64 {
        let now = Utc::now();
        self.next = next_after(&self.schedule, self.start, scheduled);
        let mut skipped = 0u64;
        while self.next <= now {
            skipped += 1;
            self.next = next_after(&self.schedule, self.start, self.next);
        }
        skipped
    }

    /// A reloaded schedule: slots from now on, the first one a full period away.
    fn reschedule(&mut self, schedule: &Schedule) {
        if schedule.to_string() != self.schedule.to_string() {
            *self = Clock::new(schedule.clone());
            self.next = next_after(&self.schedule, self.start, self.start);
            tracing::info!(
                "ticking {} from now on: next at {}",
                self.schedule,
                self.next.format("%H:%M:%S")
            );
        }
    }
}

/// Runs the worker until a signal (or `max_ticks`). With a `loader`, the config and policy
/// files are reloaded on SIGHUP, `POST /reload` and (with `worker.watch`) when they change.
pub async fn run(
    config: Config,
    policies: Vec<TargetPolicy>,
    clients: Clients,
    opts: RunOptions,
    loader: Option<Loader>,
) -> Result<(), Error> {
    let (stop_tx, stop) = watch::channel(false);
    watch_signals(
        stop_tx,
        "stopping: finishing the tick and flushing (a second signal exits at once)",
    );
    let metrics = Arc::new(Metrics::new(
        clients.meter.clone(),
        expected_gap(&config.schedule) * 3 + Duration::from_secs(60),
    ));
    let (reload_tx, reload_rx) = mpsc::channel::<Trigger>(8);
    let server = serve_metrics(
        &config,
        &metrics,
        &stop,
        loader.as_ref().map(|_| reload_tx.clone()),
    )
    .await?;
    let (ship_stage, ship_queue) = ShipStage::start(Shipper::start(&config.sink)?);
    metrics.set_ship(ship_stage.stats());
    let notify = notifications(&config, &metrics)?;

    let store = store(&config, clients.dynamodb.as_ref())?;
    let lease = lease_of(&config, &clients, &opts)?;
    let lease_task = keep_lease(lease.as_ref(), &stop, &metrics, &notify);
    let reloading = loader.map(|l| Reloading::new(l, &config));
    let watcher = watch_reloads(reloading.as_ref(), &config, &reload_tx, &metrics, &stop);
    let fetcher = opts
        .sources
        .clone()
        .filter(|_| reloading.is_some())
        .map(|(s, every)| s.poll(every, reload_tx.clone(), stop.clone()));
    let events = poll_events(&clients, &stop);
    let parts = Parts {
        store,
        lease: lease.clone(),
        metrics: metrics.clone(),
        ship: Some(ship_queue),
        notify: Some(notify.clone()),
    };
    let mut worker = Worker::new(config, policies, clients, parts, &opts).await?;
    if let Some(l) = &lease {
        tracing::info!("worker {} started: acting only while it holds the lease", l.id);
    }
    if opts.dry_run {
        tracing::warn!("dry run: decisions are made and recorded, no mutating AWS call is made");
    }
    let mut looping = Looping {
        reloading,
        reload_rx,
        notify: notify.clone(),
        metrics,
        max_ticks: opts.max_ticks,
        emf: opts.emf_stack.as_deref().map(emf::Emf::new),
    };
    looping.run(&mut worker, stop).await;

    let grace = worker.config.worker.shutdown_grace;
    drop(worker);
    if let Some(w) = watcher {
        w.abort();
    }
    let deadline = tokio::time::Instant::now() + grace;
    drain(ship_stage, &notify, deadline).await;
    if let Some(l) = &lease {
        l.release().await;
    }
    for t in [lease_task, server, events, fetcher].into_iter().flatten() {
        t.abort();
    }
    Ok(())
}

/// Keeps the lease in the background, telling the metrics and the notifications whether this
/// worker leads.
fn keep_lease(
    lease: Option<&Arc<Lease>>,
    stop: &watch::Receiver<bool>,
    metrics: &Arc<Metrics>,
    notify: &Arc<notify::Notifications>,
) -> Option<tokio::task::JoinHandle<()>> {
    lease.cloned().map(|l| {
        let (m, n) = (metrics.clone(), notify.clone());
        tokio::spawn(l.keep(stop.clone(), move |leading| {
            m.set_leader(leading);
            n.leader(leading);
        }))
    })
}

/// With reloading on: SIGHUP triggers a reload, and with `worker.watch`, so does a change of
/// the files in use (the watcher is returned).
fn watch_reloads(
    reloading: Option<&Reloading>,
    config: &Config,
    reload_tx: &mpsc::Sender<Trigger>,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let r = reloading?;
    let watcher = config
        .worker
        .watch
        .map(|every| reload::watch_files(r.in_use(), every, reload_tx.clone(), stop.clone()));
    reload::on_sighup(reload_tx.clone());
    metrics.reloaded(r.status());
    watcher
}

/// The worker's loop: ticks on the schedule, reloads between ticks, until a stop or
/// `max_ticks`.
struct Looping {
    reloading: Option<Reloading>,
    reload_rx: mpsc::Receiver<Trigger>,
    notify: Arc<notify::Notifications>,
    metrics: Arc<Metrics>,
    max_ticks: Option<u64>,
    emf: Option<emf::Emf>,
}

impl Looping {
    async fn run(&mut self, worker: &mut Worker, mut stop_rx: watch::Receiver<bool>) {
        let mut clock = Clock::new(worker.config.schedule.clone());
        eprintln!(
            "ecscale: ticking {}: the first tick now, the next at {}",
            clock.schedule,
            next_after(&clock.schedule, clock.start, clock.start).format("%Y-%m-%dT%H:%M:%SZ")
        );
        let mut ticks = 0u64;
        loop {
            let wait = (clock.next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop_rx.changed() => break,
                Some(t) = self.reload_rx.recv() => {
                    self.reload(worker, &mut clock, t).await;
                    continue;
                }
            }
            if *stop_rx.borrow() {
                break;
            }
            let scheduled = clock.next;
            let Some(r) = tick_within_grace(worker, &mut stop_rx).await else {
                break;
            };
            log_tick(&r);
            if let Some(e) = &mut self.emf {
                println!("{}", e.line(&self.metrics, Utc::now()));
            }
            ticks += 1;
            if *stop_rx.borrow() || self.max_ticks.is_some_and(|m| ticks >= m) {
                break;
            }
            self.advance(&mut clock, scheduled);
        }
    }

    /// A reload, between two ticks, so a tick never sees half of one.
    async fn reload(&mut self, worker: &mut Worker, clock: &mut Clock, t: Trigger) {
        if let Some(r) = &mut self.reloading {
            let grace = worker.config.worker.shutdown_grace;
            r.apply(worker, t, &self.notify, grace).await;
            clock.reschedule(&worker.config.schedule);
            self.metrics
                .set_stale_after(expected_gap(&clock.schedule) * 3 + Duration::from_secs(60));
        }
    }

    /// The next slot after a tick due at `scheduled`, saying (and counting) the slots it missed.
    fn advance(&self, clock: &mut Clock, scheduled: DateTime<Utc>) {
        let skipped = clock.advance(scheduled);
        if skipped > 0 {
            tracing::warn!(
                "the tick took {}s, past {skipped} scheduled tick(s): skipped, next at {}",
                (Utc::now() - scheduled).num_milliseconds() as f64 / 1000.0,
                clock.next.format("%H:%M:%S")
            );
            self.metrics.skipped(skipped);
        }
    }
}

/// The shutdown: the ship queue and the shipper, with the count of every document, then the
/// notifications, all within `deadline`.
async fn drain(ship_stage: ShipStage, notify: &Arc<notify::Notifications>, deadline: tokio::time::Instant) {
    let s = ship_stage.finish(deadline).await;
    let summary = format!(
        "ship stage: {} documents handed over: {} spooled, {} not spooled; {} delivered, {} dead-lettered, {} dropped (drop_oldest), {} lost (vanished from the spool's disk); {} bytes left in the spool for the next start",
        s.queued, s.spooled, s.not_spooled, s.delivered, s.dead_lettered, s.dropped, s.lost, s.spool_bytes
    );
    if s.not_spooled > 0 || s.dropped > 0 {
        tracing::warn!("{summary}");
    } else {
        tracing::info!("{summary}");
    }
    notify::retire(notify.replace(None), deadline).await;
}

/// One tick; a stop signal during it gives it `worker.shutdown_grace` to finish (none: it
/// was abandoned).
async fn tick_within_grace(worker: &mut Worker, stop_rx: &mut watch::Receiver<bool>) -> Option<TickReport> {
    let grace = worker.config.worker.shutdown_grace;
    let tick = worker.tick(Utc::now());
    tokio::pin!(tick);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = &mut tick => return Some(r),
            _ = stop_rx.changed(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                tracing::error!("the tick did not finish within worker.shutdown_grace ({}): abandoned", humantime::format_duration(grace));
                return None;
            }
        }
    }
}

fn log_tick(r: &TickReport) {
    if !r.acted {
        tracing::debug!("following: another worker leads");
        return;
    }
    let changed = r
        .services
        .iter()
        .filter(|(_, a)| !matches!(a, crate::actuate::Applied::Unchanged))
        .count();
    tracing::info!(
        "tick: {} service decisions ({changed} acted on), {} groups, {} problems",
        r.services.len(),
        r.groups.len(),
        r.problems.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn interval_slots_are_aligned_to_the_start() {
        let start = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let s = Schedule::Interval(Duration::from_secs(30));
        assert_eq!(next_after(&s, start, start), start + TimeDelta::seconds(30));
        // A tick that ran until 12:01:05 skips 12:00:30 and 12:01:00.
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 12, 1, 5).unwrap();
        assert_eq!(next_after(&s, start, t), start + TimeDelta::seconds(90));
    }

    #[test]
    fn cron_slots() {
        let s = crate::config::parse_cron("0 */5 * * * *").unwrap();
        let s = Schedule::Cron {
            expression: "0 */5 * * * *".into(),
            schedule: Box::new(s),
        };
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 12, 3, 0).unwrap();
        assert_eq!(
            next_after(&s, t, t),
            Utc.with_ymd_and_hms(2026, 11, 25, 12, 5, 0).unwrap()
        );
        assert_eq!(expected_gap(&s), Duration::from_secs(300));
    }
}
