//! Notifications: the worker's events pushed to webhooks (`notify:`), never in a tick's way.
//!
//! Each target has its own bounded queue and sender task. A tick only offers events
//! (`try_send`): a slow, hanging or failing webhook fills its own queue, and past that new
//! events are dropped and counted, so no tick ever waits on a webhook. The sender keeps a
//! per-target rate (a token bucket of `per_minute`), retries a 5xx, a 429 (after its
//! `Retry-After`), a timeout or a refused connection with exponential backoff, and gives up on
//! any other answer. Every event offered to a target is counted in
//! `ecscale_notifications_total{target,result="offered"}` and ends counted once more as
//! `sent`, `failed` or `dropped` (queue full, or still queued when the shutdown grace ran out);
//! the shutdown log gives the sums per target.
//!
//! Errors and refusals are edge-triggered: one that was already raised on the previous tick
//! (same kind, target and text) is not sent again, so a lasting problem is said once, not once
//! per tick.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::metrics::Metrics;
use crate::config::{EventKind, NotifyFormat, NotifyTarget, UrlSource};

/// One thing worth telling people.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    /// The service or group it is about, if any.
    pub target: Option<String>,
    /// One line for people.
    pub text: String,
    /// For machines: `from`, `to`, `reason`, `result`, …
    pub details: Map<String, Value>,
}

impl Event {
    pub fn new(kind: EventKind, at: DateTime<Utc>, target: Option<String>, text: String) -> Self {
        Event {
            kind,
            at,
            target,
            text,
            details: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// What makes two errors or refusals the same one.
    fn key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.kind.name(),
            self.target.as_deref().unwrap_or(""),
            self.text
        )
    }
}

/// The body sent for an event.
fn body(format: NotifyFormat, worker: &str, e: &Event) -> Value {
    match format {
        NotifyFormat::Json => {
            let mut m = Map::new();
            m.insert("kind".into(), json!(e.kind.name()));
            m.insert(
                "at".into(),
                json!(e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            );
            m.insert("worker".into(), json!(worker));
            m.insert("target".into(), json!(e.target));
            m.insert("text".into(), json!(e.text));
            for (k, v) in &e.details {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Value::Object(m)
        }
        NotifyFormat::Slack => json!({ "text": format!("ecscale ({worker}) {}: {}", e.kind.name(), e.text) }),
    }
}

/// A target, ready to send: its settings with the URL and token read from the environment.
struct Sink {
    target: NotifyTarget,
    url: String,
    bearer: Option<String>,
    http: reqwest::Client,
}

fn env_secret(var: &str, field: &str, name: &str) -> Result<String, String> {
    crate::config::env::secret(var, field).map_err(|e| format!("notify `{name}`: {e}"))
}

impl Sink {
    fn new(target: &NotifyTarget) -> Result<Sink, String> {
        let url = match &target.url {
            UrlSource::Literal(u) => u.clone(),
            UrlSource::Env(var) => {
                let u = env_secret(var, "url_env", &target.name)?;
                // The value is a secret: the error names the variable, never the URL.
                crate::config::check_http_url(&u).map_err(|_| {
                    format!(
                        "notify `{}`: environment variable {var} does not hold an http(s) URL without credentials",
                        target.name
                    )
                })?;
                u
            }
        };
        let bearer = match &target.bearer_token_env {
            Some(var) => Some(env_secret(var, "bearer_token_env", &target.name)?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(target.timeout)
            .connect_timeout(target.timeout)
            .build()
            .map_err(|e| format!("notify `{}`: {e}", target.name))?;
        Ok(Sink {
            target: target.clone(),
            url,
            bearer,
            http,
        })
    }

    /// One attempt: `Ok`, or whether to retry (and after how long at least) and why not.
    async fn attempt(&self, body: &Value) -> Result<(), (bool, Option<Duration>, String)> {
        let mut req = self.http.post(&self.url).json(body);
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                let after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(60)));
                let retry = status.is_server_error() || status.as_u16() == 429;
                Err((retry, after, format!("answered {status}")))
            }
            // Never the URL: for Slack it is the secret.
            Err(e) if e.is_timeout() => Err((
                true,
                None,
                format!(
                    "no answer within {}",
                    humantime::format_duration(self.target.timeout)
                ),
            )),
            Err(e) if e.is_connect() => Err((true, None, "connection refused or unreachable".into())),
            Err(e) => Err((true, None, crate::read::bounded::describe(e))),
        }
    }
}

/// Checks that every target's URL and token variables are set (before the worker starts).
pub fn check(targets: &[NotifyTarget]) -> Result<(), String> {
    targets.iter().try_for_each(|t| Sink::new(t).map(drop))
}

/// A token bucket: `per_minute` requests a minute, up to a fifth of them at once.
struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u32) -> Self {
        let burst = (f64::from(per_minute) / 5.0).clamp(1.0, 20.0);
        Bucket {
            tokens: burst,
            burst,
            per_sec: f64::from(per_minute) / 60.0,
            at: Instant::now(),
        }
    }

    /// How long to wait before the next request may go (and takes its token).
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_sec).min(self.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        }
    }
}

/// Sends one event with its retries; the result to count.
async fn deliver(sink: &Sink, worker: &str, e: &Event) -> &'static str {
    let body = body(sink.target.format, worker, e);
    let mut backoff = Duration::from_secs(1);
    for attempt in 0..=sink.target.retries {
        match sink.attempt(&body).await {
            Ok(()) => return "sent",
            Err((retry, after, why)) => {
                let last = attempt == sink.target.retries || !retry;
                tracing::warn!(
                    notify = %sink.target.name,
                    "{} event not delivered (attempt {} of {}): {why}{}",
                    e.kind.name(),
                    attempt + 1,
                    sink.target.retries + 1,
                    if last { "; given up" } else { "; retrying" }
                );
                if last {
                    return "failed";
                }
                tokio::time::sleep(after.unwrap_or(backoff).max(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    "failed"
}

/// A target's sender: events from its queue until the queue closes, or until `cancel`, when
/// whatever is left counts as dropped.
async fn send_loop(
    sink: Sink,
    worker: String,
    mut rx: mpsc::Receiver<Event>,
    mut cancel: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let name = sink.target.name.clone();
    let mut bucket = Bucket::new(sink.target.per_minute);
    let mut left = 0u64;
    while let Some(e) = rx.recv().await {
        let work = async {
            tokio::time::sleep(bucket.take()).await;
            deliver(&sink, &worker, &e).await
        };
        let result = tokio::select! {
            r = work => r,
            _ = cancel.wait_for(|c| *c) => "dropped",
        };
        metrics.notification(&name, result);
        if result == "dropped" {
            left = 1;
            break;
        }
    }
    // Cancelled: the event in flight (counted above) and those still queued.
    while rx.try_recv().is_ok() {
        metrics.notification(&name, "dropped");
        left += 1;
    }
    if left > 0 {
        tracing::warn!(notify = %name, "{left} event(s) dropped, in flight or queued: the shutdown grace ran out");
    }
}

/// The running senders of the configured targets.
pub struct Notifier {
    targets: Vec<NotifyTarget>,
    /// Emptied at the finish, which closes the queues.
    queues: Mutex<Vec<(NotifyTarget, mpsc::Sender<Event>)>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    cancel: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// The errors and refusals raised on the last tick (edge-triggering).
    ongoing: Mutex<BTreeSet<String>>,
    leading: Mutex<bool>,
}

impl Notifier {
    /// Starts a sender per target; a target whose URL or token variable is missing is an
    /// error naming it.
    pub fn start(targets: &[NotifyTarget], worker: &str, metrics: Arc<Metrics>) -> Result<Notifier, String> {
        let sinks = targets.iter().map(Sink::new).collect::<Result<Vec<_>, _>>()?;
        let (cancel, cancel_rx) = watch::channel(false);
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for sink in sinks {
            let (tx, rx) = mpsc::channel(sink.target.queue);
            queues.push((sink.target.clone(), tx));
            tasks.push(tokio::spawn(send_loop(
                sink,
                worker.to_string(),
                rx,
                cancel_rx.clone(),
                metrics.clone(),
            )));
        }
        Ok(Notifier {
            targets: targets.to_vec(),
            queues: Mutex::new(queues),
            tasks: Mutex::new(tasks),
            cancel,
            metrics,
            ongoing: Mutex::default(),
            leading: Mutex::new(false),
        })
    }

    /// The targets it sends to.
    pub fn targets(&self) -> &[NotifyTarget] {
        &self.targets
    }

    /// Offers an event to every target that wants its kind; never waits.
    pub fn send(&self, e: &Event) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for (t, tx) in queues.iter().filter(|(t, _)| t.events.contains(&e.kind)) {
            self.metrics.notification(&t.name, "offered");
            if let Err(err) = tx.try_send(e.clone()) {
                self.metrics.notification(&t.name, "dropped");
                let why = match err {
                    mpsc::error::TrySendError::Full(_) => format!("its queue of {} is full", t.queue),
                    mpsc::error::TrySendError::Closed(_) => "it is shutting down".into(),
                };
                tracing::warn!(notify = %t.name, "{} event dropped: {why}", e.kind.name());
            }
        }
    }

    /// A tick's events: actions always; errors and refusals only when they were not already
    /// raised on the tick before.
    pub fn tick(&self, events: Vec<Event>) {
        let mut ongoing = self.ongoing.lock().unwrap_or_else(|p| p.into_inner());
        let mut now = BTreeSet::new();
        for e in events {
            if matches!(e.kind, EventKind::Error | EventKind::Refusal) {
                let key = e.key();
                let new = !ongoing.contains(&key);
                now.insert(key);
                if !new {
                    continue;
                }
            }
            self.send(&e);
        }
        *ongoing = now;
    }

    /// The lease changed hands: said when this worker starts or stops leading.
    pub fn leader(&self, leading: bool, id: &str) {
        let mut was = self.leading.lock().unwrap_or_else(|p| p.into_inner());
        if *was == leading {
            return;
        }
        *was = leading;
        let text = if leading {
            format!("worker {id} leads now: it scales from this tick on")
        } else {
            format!("worker {id} no longer leads: another worker acts")
        };
        self.send(&Event::new(EventKind::Leader, Utc::now(), None, text).with("leading", leading));
    }

    /// Lets the senders empty their queues until `deadline`; what is left then is dropped
    /// (and counted).
    pub async fn finish(&self, deadline: Instant) {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let all = futures::future::join_all(tasks);
        tokio::pin!(all);
        if tokio::time::timeout_at(deadline, &mut all).await.is_err() {
            let _ = self.cancel.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(2), all).await;
        }
        for t in &self.targets {
            let n = |r| self.metrics.notifications(&t.name, r);
            let (offered, sent, failed, dropped) = (n("offered"), n("sent"), n("failed"), n("dropped"));
            let line = format!(
                "notify `{}`: {offered} events offered: {sent} sent, {failed} failed, {dropped} dropped",
                t.name
            );
            if offered == sent + failed + dropped && failed + dropped == 0 {
                tracing::info!("{line}");
            } else {
                tracing::warn!("{line}");
            }
        }
    }
}

/// The notifier in use: replaced when a reload changes `notify:`, the old one emptied in the
/// background.
pub struct Notifications {
    worker: String,
    current: Mutex<Option<Arc<Notifier>>>,
}

impl Notifications {
    /// `worker`: this worker's id, in every event.
    pub fn new(worker: &str, n: Option<Notifier>) -> Self {
        Notifications {
            worker: worker.to_string(),
            current: Mutex::new(n.map(Arc::new)),
        }
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub fn current(&self) -> Option<Arc<Notifier>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `n` in place; returns the one it replaces.
    pub fn replace(&self, n: Option<Notifier>) -> Option<Arc<Notifier>> {
        std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(|p| p.into_inner()),
            n.map(Arc::new),
        )
    }

    pub fn send(&self, e: &Event) {
        if let Some(n) = self.current() {
            n.send(e);
        }
    }

    pub fn tick(&self, events: Vec<Event>) {
        if let Some(n) = self.current() {
            n.tick(events);
        }
    }

    pub fn leader(&self, leading: bool) {
        if let Some(n) = self.current() {
            n.leader(leading, &self.worker);
        }
    }
}

/// Empties a notifier that is no longer in use (after a reload, at shutdown).
pub async fn retire(n: Option<Arc<Notifier>>, deadline: Instant) {
    if let Some(n) = n {
        n.finish(deadline).await;
    }
}
