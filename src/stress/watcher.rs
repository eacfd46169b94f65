//! What a run does besides sending load, the same for one process and for a coordinator: the
//! watched ECS service (one look before the load, then one every `every`; the scaling
//! assertions judged on those looks once the load is over) and the per-second documents for
//! the ship stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::EcsApi;
use crate::model::StressSample;
use crate::ship::docs::stress_doc;
use crate::ship::Shipper;

use super::check::{self, TaskPoint, Verdict};
use super::plan::{self, Plan};
use super::report::{AssertionResult, Second};
use super::Progress;

/// The watched service's looks, taken in the background from the run's start.
pub(super) struct Watcher {
    points: Arc<Mutex<Vec<TaskPoint>>>,
    errors: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// What the watch found, for the report.
pub(super) struct Watched {
    pub assertions: Vec<AssertionResult>,
    /// A Ctrl-C came while the assertions were waited for.
    pub interrupted: bool,
    pub errors: u64,
    pub points: Vec<TaskPoint>,
}

impl Watcher {
    /// Starts watching the plan's service, if it names one (and `ecs` is given: [`probe`]
    /// checks both before any load): one look every `every` from `start`.
    pub fn start(plan: &Plan, ecs: Option<&Arc<dyn EcsApi>>, start: Instant) -> Watcher {
        let (stop, stopped) = watch::channel(false);
        let mut w = Watcher {
            points: Arc::default(),
            errors: Arc::default(),
            stop,
            task: None,
        };
        if let (Some(spec), Some(ecs)) = (&plan.watch, ecs) {
            w.task = Some(tokio::spawn(watch_service(
                ecs.clone(),
                spec.clone(),
                start,
                w.points.clone(),
                w.errors.clone(),
                stopped,
            )));
        }
        w
    }

    /// The newest look, for the second being aggregated.
    pub fn latest(&self) -> Option<TaskPoint> {
        self.points.lock().ok().and_then(|p| p.last().copied())
    }

    fn points(&self) -> Vec<TaskPoint> {
        self.points.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// After the load (which ended `load_end` seconds after `start`): waits until every
    /// assertion that waits for the service is decided, or a Ctrl-C, then judges them all.
    pub async fn finish(
        mut self,
        plan: &Plan,
        start: Instant,
        load_end: f64,
        interrupt: &mut watch::Receiver<bool>,
        progress: Progress,
        plain_every: Duration,
    ) -> Watched {
        let judge = |over: bool, pts: &[TaskPoint]| -> Vec<AssertionResult> {
            let now = start.elapsed().as_secs_f64();
            plan.assertions
                .iter()
                .map(|a| AssertionResult {
                    assertion: a.text.clone(),
                    verdict: a.judge(pts, now, Some(load_end), over),
                })
                .collect()
        };
        let mut watched = Watched {
            assertions: Vec::new(),
            interrupted: false,
            errors: 0,
            points: Vec::new(),
        };
        if let Some(task) = self.task.take() {
            let mut last_line = Instant::now() - Duration::from_secs(3600);
            loop {
                let pts = self.points();
                let stopping = *interrupt.borrow();
                let waiting = undecided(plan, &judge(false, &pts));
                if waiting.is_empty() || stopping {
                    watched.assertions = judge(true, &pts);
                    watched.interrupted = stopping;
                    break;
                }
                if progress != Progress::Off && last_line.elapsed() >= plain_every {
                    last_line = Instant::now();
                    let p = pts.last();
                    eprintln!(
                        "stress: load over; waiting for: {} (desired {} running {})",
                        waiting.join("; "),
                        p.map_or("?".into(), |p| p.desired.to_string()),
                        p.map_or("?".into(), |p| p.running.to_string())
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = interrupt.wait_for(|s| *s) => {}
                }
            }
            let _ = self.stop.send(true);
            let _ = task.await;
        }
        watched.errors = self.errors.load(Ordering::Relaxed);
        watched.points = self.points();
        watched
    }
}

/// The assertions still undecided, flapping aside (it is judged over the whole watch: it waits
/// for the deadlines of the others).
fn undecided(plan: &Plan, so_far: &[AssertionResult]) -> Vec<String> {
    so_far
        .iter()
        .zip(&plan.assertions)
        .filter(|(r, a)| {
            r.verdict == Verdict::Undecided && !matches!(a.kind, check::AssertionKind::Flapping { .. })
        })
        .map(|(r, _)| r.assertion.clone())
        .collect()
}

/// One look at the plan's watched service, if it names one: a wrong cluster or service is an
/// error before any load.
pub(super) async fn probe(plan: &Plan, ecs: Option<&Arc<dyn EcsApi>>) -> Result<(), String> {
    match (&plan.watch, ecs) {
        (Some(w), Some(ecs)) => observe(ecs.as_ref(), &w.cluster, &w.service, 0.0)
            .await
            .map(|_| ()),
        (Some(_), None) => Err("the plan watches a service but no AWS client was given".into()),
        _ => Ok(()),
    }
}

/// One look at the watched service.
async fn observe(ecs: &dyn EcsApi, cluster: &str, service: &str, t: f64) -> Result<TaskPoint, String> {
    let d = ecs
        .describe_services(cluster, &[service.to_string()])
        .await
        .map_err(|e| format!("watch: DescribeServices {cluster}/{service}: {e}"))?;
    match d.items.into_iter().find(|s| s.name == service) {
        Some(s) => Ok(TaskPoint {
            t,
            desired: s.desired,
            running: s.running,
            pending: s.pending,
        }),
        None => Err(format!(
            "watch: service {service} not found in cluster {cluster}{}",
            d.failures
                .first()
                .map(|(a, r)| format!(" ({a}: {r})"))
                .unwrap_or_default()
        )),
    }
}

async fn watch_service(
    ecs: Arc<dyn EcsApi>,
    w: plan::Watch,
    start: Instant,
    points: Arc<Mutex<Vec<TaskPoint>>>,
    errors: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = start;
    loop {
        let t = Instant::now().saturating_duration_since(start).as_secs_f64();
        match observe(ecs.as_ref(), &w.cluster, &w.service, t).await {
            Ok(p) => {
                if let Ok(mut v) = points.lock() {
                    v.push(p);
                }
            }
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{e}");
            }
        }
        next += w.every;
        tokio::select! {
            _ = tokio::time::sleep_until(next.max(Instant::now()).into()) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The run's per-second documents, through a config's sink (Elasticsearch, or the spool).
pub(super) struct Documents {
    shipper: Option<Shipper>,
    run_id: String,
    started_at: DateTime<Utc>,
    /// The first failure to ship, for the report.
    pub failed: Option<String>,
}

impl Documents {
    pub fn new(shipper: Option<Shipper>, run_id: &str, started_at: DateTime<Utc>) -> Documents {
        Documents {
            shipper,
            run_id: run_id.to_string(),
            started_at,
            failed: None,
        }
    }

    /// Ships one aggregated second.
    pub async fn second(&mut self, s: &Second) {
        if let Some(shipper) = &self.shipper {
            let doc = stress_doc(&sample(&self.run_id, self.started_at, s));
            if let Err(e) = shipper.ship(&[doc]).await {
                self.failed.get_or_insert(e.to_string());
            }
        }
    }

    /// Sends what is left (within 10 s) and says how it went.
    pub async fn close(&mut self) {
        if let Some(shipper) = self.shipper.take() {
            let stats = shipper.close(Duration::from_secs(10)).await;
            tracing::info!(?stats, "stress: shipper closed");
        }
    }
}

/// The ship stage's document for one second.
fn sample(run_id: &str, started_at: DateTime<Utc>, s: &Second) -> StressSample {
    StressSample {
        run_id: run_id.to_string(),
        at: started_at + chrono::TimeDelta::seconds(s.t as i64),
        phase: s.phase.clone(),
        rate_planned: s.rate_planned,
        rate_achieved: s.rate,
        requests: s.requests,
        errors: s.errors,
        errors_by_kind: s.errors_by_kind.clone(),
        latency_ms: s.latency_ms.percentiles(),
        service_time_ms: s.service_time_ms.percentiles(),
        task_count: s.running,
    }
}
