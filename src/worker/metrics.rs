//! The worker's own metrics, served as Prometheus text on `/metrics`, and `/healthz`.
//!
//! Counters are kept here and rendered on request; AWS calls come from the shared
//! [`crate::usage::ApiMeter`], shipping counts live from the shipper.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::control::Trigger;

use crate::ship::StatsHandle;
use crate::usage::ApiMeter;

/// Upper bounds of the tick duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct Labeled(Mutex<BTreeMap<Vec<(&'static str, String)>, u64>>);

impl Labeled {
    fn add(&self, labels: Vec<(&'static str, String)>, n: u64) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(labels)
            .or_default() += n;
    }

    fn set(&self, labels: Vec<(&'static str, String)>, n: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(labels, n);
    }

    fn get(&self, labels: &[(&'static str, &str)]) -> u64 {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .filter(|(k, _)| {
                labels
                    .iter()
                    .all(|(n, v)| k.iter().any(|(kn, kv)| kn == n && kv == v))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    fn render(&self, out: &mut String, name: &str) {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (labels, v) in m.iter() {
            let _ = writeln!(out, "{name}{{{}}} {v}", label_text(labels));
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn label_text(labels: &[(&'static str, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Everything `/metrics` shows.
pub struct Metrics {
    meter: ApiMeter,
    started: chrono::DateTime<chrono::Utc>,
    /// A tick is late (unhealthy) once this long has passed since the last one finished.
    stale_after: Mutex<Duration>,
    ticks: AtomicU64,
    skipped: AtomicU64,
    tick_buckets: [AtomicU64; BUCKETS.len()],
    tick_sum_ms: AtomicU64,
    last_tick_ms: AtomicI64,
    last_tick_seconds: Mutex<f64>,
    leader: AtomicBool,
    /// What `/status` answers: the last tick's targets, clocks and problems.
    status: Mutex<super::status::Status>,
    /// The last tick's seconds per stage.
    stages: Mutex<BTreeMap<String, f64>>,
    decisions: Labeled,
    actions: Labeled,
    errors: Labeled,
    /// Tasks waiting for room at the group's max, by cluster and service (a gauge).
    waiting: Labeled,
    ship: Mutex<Option<StatsHandle>>,
    /// Notifications by target and result (`sent`, `failed`, `dropped`).
    notifications: Labeled,
    /// Reloads by result (`ok`, `unchanged`, `failed`).
    reloads: Labeled,
    reload: Mutex<Option<super::status::ReloadStatus>>,
    /// With `collect.events`: services read (or served as last read), by why.
    service_reads: Labeled,
    /// Messages of the ECS events queue, by what became of them.
    events: Labeled,
}

impl Metrics {
    pub fn new(meter: ApiMeter, stale_after: Duration) -> Self {
        // Every reload result from 0, so the first failure is an increase an alert can see
        // (a counter series born at 1 shows none).
        let reloads = Labeled::default();
        for result in ["ok", "unchanged", "failed"] {
            reloads.add(vec![("result", result.to_string())], 0);
        }
        Metrics {
            meter,
            started: chrono::Utc::now(),
            stale_after: Mutex::new(stale_after),
            ticks: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            tick_buckets: Default::default(),
            tick_sum_ms: AtomicU64::new(0),
            last_tick_ms: AtomicI64::new(0),
            last_tick_seconds: Mutex::new(0.0),
            leader: AtomicBool::new(false),
            status: Mutex::new(super::status::Status::default()),
            stages: Mutex::new(BTreeMap::new()),
            decisions: Labeled::default(),
            actions: Labeled::default(),
            errors: Labeled::default(),
            waiting: Labeled::default(),
            ship: Mutex::new(None),
            notifications: Labeled::default(),
            reloads,
            reload: Mutex::new(None),
            service_reads: Labeled::default(),
            events: Labeled::default(),
        }
    }

    /// The collect stage's reads of services, and the events queue's messages, so far.
    pub fn set_reads(&self, r: crate::collect::book::ReadCounts, e: crate::collect::events::EventCounts) {
        for (why, n) in [
            ("new", r.new),
            ("changed", r.changed),
            ("in_motion", r.in_motion),
            ("reconciled", r.reconciled),
            ("kept", r.kept),
            ("skipped", r.skipped),
        ] {
            self.service_reads.set(vec![("why", why.to_string())], n);
        }
        for (what, n) in [
            ("about_services", e.about_services),
            ("other", e.other),
            ("unreadable", e.unreadable),
            ("deleted", e.deleted),
            ("not_deleted", e.not_deleted),
        ] {
            self.events.set(vec![("message", what.to_string())], n);
        }
    }

    pub fn service_reads(&self, why: &str) -> u64 {
        self.service_reads.get(&[("why", why)])
    }

    pub fn tick_done(&self, took: Duration) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (b, n) in BUCKETS.iter().zip(&self.tick_buckets) {
            if secs <= *b {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.tick_sum_ms
            .fetch_add(took.as_millis() as u64, Ordering::Relaxed);
        self.last_tick_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        *self.last_tick_seconds.lock().unwrap_or_else(|p| p.into_inner()) = secs;
    }

    /// How long a stage of the last tick took.
    pub fn stage(&self, name: &str, seconds: f64) {
        self.stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), seconds);
    }

    pub fn skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Ordering::Relaxed);
    }

    /// A decision, by target kind (`service`, `auto_scaling_group`) and action.
    pub fn decision(&self, kind: &str, action: &str) {
        self.decisions
            .add(vec![("target_kind", kind.into()), ("action", action.into())], 1);
    }

    /// What an actuator did, by target kind and result.
    pub fn action(&self, kind: &str, result: &str) {
        self.actions
            .add(vec![("target_kind", kind.into()), ("result", result.into())], 1);
    }

    /// A failure, by stage (`collect`, `evaluate`, `actuate`, `state`, `ship`, `lease`).
    pub fn error(&self, stage: &str) {
        self.errors.add(vec![("stage", stage.into())], 1);
    }

    /// Tasks of a service that its cluster's group, at its max, leaves without room.
    /// What `/status` answers from now on.
    pub fn set_status(&self, s: super::status::Status) {
        if let Ok(mut g) = self.status.lock() {
            *g = s;
        }
    }

    /// `/status` as JSON.
    pub fn status_json(&self) -> String {
        let mut s = self.status.lock().map(|g| g.clone()).unwrap_or_default();
        s.reload = self.reload_status();
        serde_json::to_string_pretty(&s).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")) + "\n"
    }

    /// A notification's end: `sent`, `failed` or `dropped`.
    pub fn notification(&self, target: &str, result: &str) {
        self.notifications
            .add(vec![("target", target.into()), ("result", result.into())], 1);
    }

    pub fn notifications(&self, target: &str, result: &str) -> u64 {
        self.notifications.get(&[("target", target), ("result", result)])
    }

    /// A reload's result and the files in use after it.
    pub fn reloaded(&self, r: super::status::ReloadStatus) {
        if let Some(result) = &r.last_result {
            self.reloads.add(vec![("result", result.clone())], 1);
        }
        *self.reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    /// The targets kept after their policy file vanished (`/status`, and `/healthz` degraded).
    pub fn set_orphans(&self, list: Vec<String>) {
        let mut g = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert_with(Default::default).orphaned = list;
    }

    pub fn reloads(&self, result: &str) -> u64 {
        self.reloads.get(&[("result", result)])
    }

    pub fn reload_status(&self) -> Option<super::status::ReloadStatus> {
        self.reload.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new schedule: a tick is late after this long.
    pub fn set_stale_after(&self, d: Duration) {
        *self.stale_after.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }

    pub fn set_waiting(&self, cluster: &str, service: &str, n: u64) {
        self.waiting
            .set(vec![("cluster", cluster.into()), ("service", service.into())], n);
    }

    pub fn waiting(&self, cluster: &str, service: &str) -> u64 {
        self.waiting.get(&[("cluster", cluster), ("service", service)])
    }

    pub fn errors(&self, stage: &str) -> u64 {
        self.errors.get(&[("stage", stage)])
    }

    pub fn actions(&self, kind: &str, result: &str) -> u64 {
        self.actions.get(&[("target_kind", kind), ("result", result)])
    }

    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Whether this worker may act (the leader, or the only worker).
    pub fn leading(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Whether documents are not moving (the shipper has trouble).
    pub fn ship_degraded(&self) -> bool {
        self.ship_snapshot().is_some_and(|s| s.trouble.is_some())
    }

    /// AWS attempts made so far, and how many of them failed.
    pub fn aws_attempts(&self) -> (u64, u64) {
        let u = self.meter.usage();
        u.operations
            .values()
            .fold((0, 0), |(a, f), c| (a + c.attempts, f + c.failed_attempts))
    }

    /// Where the shipping counters and trouble are read, live.
    pub fn set_ship(&self, s: StatsHandle) {
        *self.ship.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    fn ship_snapshot(&self) -> Option<crate::ship::StatsSnapshot> {
        self.ship
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|h| h.snapshot())
    }

    /// What `/healthz` says of a failed last reload.
    fn reload_trouble(&self) -> Option<String> {
        let r = self.reload_status()?;
        let first = r.mistakes.first()?;
        let more = match r.mistakes.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        let loaded = r
            .loaded_at
            .map_or("-".into(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        Some(format!(
            "the last reload failed: {first}{more}; the files read at {loaded} keep running"
        ))
    }

    /// `(healthy, text)` for `/healthz`.
    pub fn health(&self) -> (bool, String) {
        let now = chrono::Utc::now();
        let last = self.last_tick_ms.load(Ordering::Relaxed);
        let stale_after = *self.stale_after.lock().unwrap_or_else(|p| p.into_inner());
        let stale = chrono::TimeDelta::from_std(stale_after).unwrap_or(chrono::TimeDelta::MAX);
        if last == 0 {
            let ok = now - self.started <= stale;
            let text = if ok {
                "starting: no tick finished yet"
            } else {
                "no tick finished since the start"
            };
            return (ok, text.to_string());
        }
        let at = chrono::DateTime::from_timestamp_millis(last).unwrap_or(now);
        let ago = (now - at).num_milliseconds() as f64 / 1000.0;
        let role = if self.leader.load(Ordering::Relaxed) {
            "leader"
        } else {
            "worker"
        };
        if now - at <= stale {
            // Shipping in trouble does not make the worker unhealthy (it scales on regardless:
            // restarting it would not help), but it is said.
            // So does a failed reload: the last good files keep running.
            let orphaned = self
                .reload_status()
                .map(|r| r.orphaned)
                .filter(|o| !o.is_empty())
                .map(|o| format!("orphaned targets: {}", o.join("; ")));
            let why: Vec<String> = self
                .ship_snapshot()
                .and_then(|s| s.degraded())
                .into_iter()
                .chain(self.reload_trouble())
                .chain(orphaned)
                .collect();
            if why.is_empty() {
                (true, format!("ok: {role}, last tick finished {ago:.1}s ago"))
            } else {
                (
                    true,
                    format!(
                        "degraded: {}; {role}, last tick finished {ago:.1}s ago",
                        why.join("; ")
                    ),
                )
            }
        } else {
            (
                false,
                format!(
                    "late: last tick finished {ago:.1}s ago (expected within {}s)",
                    stale_after.as_secs()
                ),
            )
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        self.render_ticks(&mut o);
        self.render_counters(&mut o);
        self.render_aws(&mut o);
        if let Some(s) = self.ship_snapshot() {
            render_ship(&mut o, &s);
        }
        o
    }

    /// The ticks: how many, how long, when the last one ended, and what counts as late.
    fn render_ticks(&self, o: &mut String) {
        one(o, "ecscale_ticks_total", "counter", "Ticks run.", self.ticks());
        one(
            o,
            "ecscale_ticks_skipped_total",
            "counter",
            "Scheduled ticks skipped because the previous one overran.",
            self.skipped.load(Ordering::Relaxed),
        );
        head(
            o,
            "ecscale_tick_duration_seconds",
            "histogram",
            "How long ticks take.",
        );
        for (b, n) in BUCKETS.iter().zip(&self.tick_buckets) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(o, "ecscale_tick_duration_seconds_bucket{{le=\"{b}\"}} {n}");
        }
        let (ticks, sum) = (
            self.ticks(),
            self.tick_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        let _ = writeln!(o, "ecscale_tick_duration_seconds_bucket{{le=\"+Inf\"}} {ticks}");
        let _ = writeln!(o, "ecscale_tick_duration_seconds_sum {sum}");
        let _ = writeln!(o, "ecscale_tick_duration_seconds_count {ticks}");
        let last = *self.last_tick_seconds.lock().unwrap_or_else(|p| p.into_inner());
        one(
            o,
            "ecscale_last_tick_duration_seconds",
            "gauge",
            "How long the last tick took.",
            last,
        );
        one(
            o,
            "ecscale_last_tick_timestamp_seconds",
            "gauge",
            "When the last tick finished (Unix time).",
            self.last_tick_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        one(
            o,
            "ecscale_start_time_seconds",
            "gauge",
            "When this worker started (Unix time).",
            self.started.timestamp_millis() as f64 / 1000.0,
        );
        let stale = self
            .stale_after
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_secs_f64();
        one(
            o,
            "ecscale_tick_stale_after_seconds",
            "gauge",
            "A last tick older than this is late: three of the schedule's gaps and a minute.",
            stale,
        );
        head(
            o,
            "ecscale_stage_duration_seconds",
            "gauge",
            "How long each stage of the last tick took.",
        );
        for (stage, secs) in self.stages.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                o,
                "ecscale_stage_duration_seconds{{stage=\"{}\"}} {secs}",
                escape(stage)
            );
        }
    }

    /// The leader flag and the labelled counters: decisions, actions, errors, waiting tasks,
    /// reloads and notifications.
    fn render_counters(&self, o: &mut String) {
        one(
            o,
            "ecscale_leader",
            "gauge",
            "1 while this worker may act (the leader, or the only worker).",
            u8::from(self.leader.load(Ordering::Relaxed)),
        );
        let labelled: [(&str, &str, &str, &Labeled); 8] = [
            ("ecscale_decisions_total", "counter", "Decisions, by target kind and action.", &self.decisions),
            ("ecscale_actions_total", "counter", "What the actuators did, by target kind and result.", &self.actions),
            ("ecscale_errors_total", "counter", "Failures, by stage.", &self.errors),
            (
                "ecscale_tasks_waiting",
                "gauge",
                "Tasks decided for a service that its cluster's Auto Scaling group, at its max, leaves without room.",
                &self.waiting,
            ),
            (
                "ecscale_config_reloads_total",
                "counter",
                "Reloads of the config and policy files, by result (ok, unchanged, failed).",
                &self.reloads,
            ),
            (
                "ecscale_notifications_total",
                "counter",
                "Notifications, by target and result (sent, failed, dropped).",
                &self.notifications,
            ),
            (
                "ecscale_service_reads_total",
                "counter",
                "With collect.events: services described by the collect stage, by why (new, changed, in_motion, reconciled), or served as last read (kept).",
                &self.service_reads,
            ),
            (
                "ecscale_ecs_events_total",
                "counter",
                "Messages of the ECS events queue: about_services, other (about no service), unreadable (not an ECS event), deleted, not_deleted.",
                &self.events,
            ),
        ];
        for (name, kind, help, values) in labelled {
            head(o, name, kind, help);
            values.render(o, name);
        }
    }

    /// AWS calls and failed attempts by operation, and the metrics CloudWatch bills.
    fn render_aws(&self, o: &mut String) {
        let usage = self.meter.usage();
        head(
            o,
            "ecscale_aws_calls_total",
            "counter",
            "AWS API calls, by operation.",
        );
        for (op, c) in &usage.operations {
            let _ = writeln!(
                o,
                "ecscale_aws_calls_total{{operation=\"{}\"}} {}",
                escape(op),
                c.calls
            );
        }
        head(
            o,
            "ecscale_aws_attempts_failed_total",
            "counter",
            "AWS API attempts that failed (retried or not), by operation.",
        );
        for (op, c) in &usage.operations {
            let _ = writeln!(
                o,
                "ecscale_aws_attempts_failed_total{{operation=\"{}\"}} {}",
                escape(op),
                c.failed_attempts
            );
        }
        one(
            o,
            "ecscale_cloudwatch_metrics_requested_total",
            "counter",
            "Metrics requested from GetMetricData (what it is billed on).",
            usage.cloudwatch_metrics_requested,
        );
    }
}

/// A metric's HELP and TYPE lines.
fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A metric of one unlabelled value, with its HELP and TYPE.
fn one(o: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(o, name, kind, help);
    let _ = writeln!(o, "{name} {value}");
}

/// The shipping counters: documents by what became of them, failures by kind, what waits.
fn render_ship(o: &mut String, s: &crate::ship::StatsSnapshot) {
    head(
        o,
        "ecscale_ship_documents_total",
        "counter",
        "Documents handed to the ship stage (queued), and what became of them: spooled or not_spooled; of the spooled, delivered, dead_lettered, dropped (drop_oldest) or lost (vanished from the spool's disk); retried counts retries.",
    );
    for (state, v) in [
        ("queued", s.queued),
        ("spooled", s.spooled),
        ("not_spooled", s.not_spooled),
        ("delivered", s.delivered),
        ("retried", s.retried),
        ("dead_lettered", s.dead_lettered),
        ("dropped", s.dropped),
        ("lost", s.lost),
    ] {
        let _ = writeln!(o, "ecscale_ship_documents_total{{state=\"{state}\"}} {v}");
    }
    head(
        o,
        "ecscale_ship_pending_documents",
        "gauge",
        "Handed over, not on disk yet (in memory).",
    );
    let _ = writeln!(o, "ecscale_ship_pending_documents {}", s.pending);
    head(
        o,
        "ecscale_ship_spool_bytes",
        "gauge",
        "Bytes in the spool: documents waiting and dead letters.",
    );
    let _ = writeln!(o, "ecscale_ship_spool_bytes {}", s.spool_bytes);
    head(
        o,
        "ecscale_ship_errors_total",
        "counter",
        "Shipping failures by kind, each counted when it happens.",
    );
    for (kind, v) in &s.errors {
        let _ = writeln!(o, "ecscale_ship_errors_total{{kind=\"{}\"}} {v}", escape(kind));
    }
    head(
        o,
        "ecscale_ship_degraded",
        "gauge",
        "1 while documents are not moving (the reason is on /healthz).",
    );
    let _ = writeln!(o, "ecscale_ship_degraded {}", u8::from(s.trouble.is_some()));
}

/// `POST /reload`: asks the worker to reload and waits for the result (the reload runs
/// between ticks, so a running tick finishes first).
async fn reload(tx: Option<&mpsc::Sender<Trigger>>) -> (StatusCode, String) {
    let Some(tx) = tx else {
        return (
            StatusCode::NOT_FOUND,
            "this worker does not reload its files\n".into(),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if tx.send(Trigger::Http(reply)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the worker is stopping\n".into());
    }
    match tokio::time::timeout(Duration::from_secs(60), answer).await {
        Ok(Ok(o)) if o.result == "failed" => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("failed: the last good files keep running\n{}\n", o.text),
        ),
        Ok(Ok(o)) => (StatusCode::OK, format!("{}: {}\n", o.result, o.text)),
        Ok(Err(_)) => (StatusCode::SERVICE_UNAVAILABLE, "the worker is stopping\n".into()),
        Err(_) => (
            StatusCode::ACCEPTED,
            "accepted: the reload runs once the current tick ends (see /status)\n".into(),
        ),
    }
}

/// Who may change state over HTTP: anyone on a loopback address; elsewhere only a caller with
/// the bearer token (`ECSCALE_CONTROL_TOKEN`), and nobody when none is set.
#[derive(Debug, Clone)]
pub enum Guard {
    Loopback,
    Token(String),
    Closed,
}

impl Guard {
    /// The guard for an endpoint bound to `addr`, with the token from the environment.
    pub fn of(addr: SocketAddr, token: Option<String>) -> Guard {
        match token.filter(|t| !t.is_empty()) {
            Some(t) => Guard::Token(t),
            None if addr.ip().is_loopback() => Guard::Loopback,
            None => Guard::Closed,
        }
    }

    /// `None` when the request may change state, else the refusal.
    fn refuse(&self, req: &Request<hyper::body::Incoming>) -> Option<(StatusCode, String)> {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match self {
            Guard::Loopback => None,
            Guard::Token(t) if given.is_some_and(|g| equal_in_constant_time(g.as_bytes(), t.as_bytes())) => None,
            Guard::Token(_) => Some((
                StatusCode::UNAUTHORIZED,
                "unauthorized: POST /reload needs `Authorization: Bearer TOKEN` (ECSCALE_CONTROL_TOKEN)\n".into(),
            )),
            Guard::Closed => Some((
                StatusCode::FORBIDDEN,
                "forbidden: this endpoint is not on a loopback address and ECSCALE_CONTROL_TOKEN is not set, so it changes nothing over HTTP (SIGHUP reloads)\n".into(),
            )),
        }
    }
}

/// Compares two secrets in time that depends on their length only.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    m: Arc<Metrics>,
    reload_tx: Option<mpsc::Sender<Trigger>>,
    guard: Guard,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", m.render()),
        ("GET", "/status") => (StatusCode::OK, "application/json", m.status_json()),
        ("GET", "/healthz") => {
            let (ok, text) = m.health();
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "text/plain", text + "\n")
        }
        ("POST", "/reload") => {
            let (status, text) = match guard.refuse(&req) {
                Some(refused) => refused,
                None => reload(reload_tx.as_ref()).await,
            };
            (status, "text/plain", text)
        }
        ("GET", _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /status (GET), or /reload (POST)\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET /metrics, /healthz, /status and POST /reload\n".into(),
        ),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Serves `/metrics` and `/healthz` on `addr` until `stop`; returns the bound address (port 0
/// picks a free one).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    reload: Option<mpsc::Sender<Trigger>>,
    guard: Guard,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!("metrics endpoint: {e}");
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let (m, r, g) = (metrics.clone(), reload.clone(), guard.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| answer(req, m.clone(), r.clone(), g.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// POST /reload with `auth` (an Authorization header value) against an endpoint with `guard`:
    /// the status, and whether a reload reached the worker.
    async fn post(guard: Guard, auth: Option<&str>) -> (u16, bool) {
        let m = Arc::new(Metrics::new(ApiMeter::default(), Duration::from_secs(60)));
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let (tx, mut rx) = mpsc::channel(1);
        let (addr, _task) = serve("127.0.0.1:0".parse().unwrap(), m, stop, Some(tx), guard)
            .await
            .unwrap();
        let reached = tokio::spawn(async move {
            match rx.recv().await {
                Some(Trigger::Http(reply)) => {
                    let _ = reply.send(super::super::control::Outcome {
                        result: "ok",
                        text: "reloaded".into(),
                    });
                    true
                }
                _ => false,
            }
        });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let header = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let req = format!(
            "POST /reload HTTP/1.1\r\nHost: x\r\n{header}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut out)
            .await
            .unwrap();
        let code: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let got = tokio::time::timeout(Duration::from_millis(300), reached)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        (code, got)
    }

    #[tokio::test]
    async fn a_reload_beyond_loopback_needs_the_token_and_without_one_changes_nothing() {
        let token = || Guard::Token("s3cret-token".into());
        assert_eq!(post(token(), None).await, (401, false));
        assert_eq!(post(token(), Some("Bearer wrong-token!")).await, (401, false));
        assert_eq!(post(token(), Some("Basic s3cret-token")).await, (401, false));
        assert_eq!(post(token(), Some("Bearer s3cret-token")).await, (200, true));
        assert_eq!(post(Guard::Closed, Some("Bearer anything")).await, (403, false));
        assert_eq!(post(Guard::Loopback, None).await, (200, true));
        // what an endpoint gets from its address and the environment
        let any: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert!(matches!(Guard::of(any, None), Guard::Closed));
        assert!(matches!(Guard::of(any, Some(String::new())), Guard::Closed));
        assert!(matches!(Guard::of(lo, None), Guard::Loopback));
        assert!(matches!(Guard::of(any, Some("t".into())), Guard::Token(_)));
        assert!(equal_in_constant_time(b"abc", b"abc") && !equal_in_constant_time(b"abc", b"abd"));
    }

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new(ApiMeter::default(), Duration::from_secs(60));
        m.tick_done(Duration::from_millis(300));
        m.decision("service", "scale_out");
        m.decision("service", "scale_out");
        m.action("service", "updated");
        m.error("collect");
        m.set_leader(true);
        m.set_waiting("prod", "web", 26);
        m.set_waiting("prod", "api", 3);
        m.set_waiting("prod", "api", 0);
        let text = m.render();
        for line in [
            "ecscale_tasks_waiting{cluster=\"prod\",service=\"web\"} 26",
            "ecscale_tasks_waiting{cluster=\"prod\",service=\"api\"} 0",
            "ecscale_ticks_total 1",
            "ecscale_tick_duration_seconds_bucket{le=\"0.25\"} 0",
            "ecscale_tick_duration_seconds_bucket{le=\"0.5\"} 1",
            "ecscale_decisions_total{target_kind=\"service\",action=\"scale_out\"} 2",
            "ecscale_actions_total{target_kind=\"service\",result=\"updated\"} 1",
            "ecscale_errors_total{stage=\"collect\"} 1",
            "ecscale_leader 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        assert_eq!(m.errors("collect"), 1);
        assert!(m.health().0);
    }

    #[test]
    fn health_turns_late() {
        let m = Metrics::new(ApiMeter::default(), Duration::ZERO);
        m.tick_done(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        let (ok, text) = m.health();
        assert!(!ok && text.starts_with("late"), "{text}");
    }
}
