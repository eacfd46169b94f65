//! `ecscale stress`: an open-model HTTP load generator that validates scaling before a release.
//!
//! profile (phases) → connection slots (`generator`) → one aggregator, once a second
//! (`stats`) → thresholds and scaling assertions (`check`, with the ECS service watched through
//! the collect stage's ECS client) → report (`report`: JSON, HTML) and per-second documents for
//! the ship stage.
//!
//! Exit codes of a run (see [`exit_code`]): 0 everything held; 3 a threshold failed (or aborted
//! the run); 4 a scaling assertion failed (the thresholds held); 130 interrupted (the report is
//! still written). 1 and 2 keep their meaning for every command (failure, bad input).

pub mod check;
pub mod coordinate;
pub mod dist;
pub mod generator;
pub mod h1;
pub mod plan;
pub mod profile;
pub mod report;
pub mod stats;
pub mod tls;
mod watcher;

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::api::EcsApi;
use crate::ship::Shipper;

use check::{TaskPoint, Verdict};
use generator::{drive, PhaseRun, Shared, Slots};
use plan::Plan;
use report::{AssertionResult, PhaseReport, Report, Second, ThresholdResult};
use stats::Acc;
use watcher::{Documents, Watcher};

/// Exit code: a threshold failed, or aborted the run.
pub const EXIT_THRESHOLD: u8 = 3;
/// Exit code: a scaling assertion failed (thresholds held).
pub const EXIT_ASSERTION: u8 = 4;
/// Exit code: interrupted (Ctrl-C / SIGTERM); the report is written all the same.
pub const EXIT_INTERRUPTED: u8 = 130;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// One line redrawn in place every second.
    Tty,
    /// A plain line every few seconds and at each phase change (CI logs).
    Plain,
    Off,
}

/// What a run needs besides its plan.
pub struct Options {
    pub progress: Progress,
    /// Turns true on Ctrl-C/SIGTERM: the run stops and reports what it has.
    pub interrupt: watch::Receiver<bool>,
    /// The ECS client for the plan's `watch`.
    pub ecs: Option<Arc<dyn EcsApi>>,
    /// Where the per-second documents go.
    pub shipper: Option<Shipper>,
    /// Plain progress lines this often.
    pub plain_every: Duration,
    /// The share of the plan this process sends (an agent's; the whole plan by default).
    pub segment: Segment,
    /// When the load starts (an agent's common start; by default 100 ms from now).
    pub start_at: Option<Instant>,
    /// Each second's counts and histograms as recorded, for an agent to stream.
    pub tap: Option<tokio::sync::mpsc::UnboundedSender<(u64, Acc)>>,
}

/// One of `count` disjoint shares of a plan (an execution segment): open phases send the
/// requests whose index is `index` modulo `count`, closed-model users and connections are
/// divided, so that the shares together send exactly the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub index: u64,
    pub count: u64,
}

impl Segment {
    pub const WHOLE: Segment = Segment { index: 0, count: 1 };

    /// This share of `n` things (users, connections): `n / count`, the first `n % count`
    /// shares one more, at least one.
    pub fn share(self, n: usize) -> usize {
        let (n, c, i) = (n as u64, self.count.max(1), self.index);
        (n / c + u64::from(i < n % c)).max(1) as usize
    }

    /// Requests of this share among the first `total` of an open phase.
    pub fn requests(self, total: u64) -> u64 {
        let c = self.count.max(1);
        total / c + u64::from(self.index < total % c)
    }
}

#[cfg(test)]
mod segment_tests {
    use super::Segment;

    #[test]
    fn segments_share_users_connections_and_requests_exactly() {
        let seg = |index| Segment { index, count: 3 };
        let users: Vec<usize> = (0..3).map(|i| seg(i).share(7)).collect();
        assert_eq!(users, [3, 2, 2]);
        let requests: Vec<u64> = (0..3).map(|i| seg(i).requests(301)).collect();
        assert_eq!(requests, [101, 100, 100]);
        assert_eq!(requests.iter().sum::<u64>(), 301);
        // Fewer things than shares: every share still gets one (a user, a connection).
        assert_eq!(seg(2).share(2), 1);
        assert_eq!(Segment::WHOLE.share(50), 50);
    }
}

impl Options {
    /// The whole plan, started now, nothing streamed.
    pub fn new(progress: Progress, interrupt: watch::Receiver<bool>) -> Options {
        Options {
            progress,
            interrupt,
            ecs: None,
            shipper: None,
            plain_every: Duration::from_secs(10),
            segment: Segment::WHOLE,
            start_at: None,
            tap: None,
        }
    }
}

/// The exit code a report stands for.
pub fn exit_code(r: &Report) -> u8 {
    if r.interrupted {
        EXIT_INTERRUPTED
    } else if r.thresholds.iter().any(|t| !t.passed) {
        EXIT_THRESHOLD
    } else if r
        .assertions
        .iter()
        .any(|a| !matches!(a.verdict, Verdict::Passed { .. }))
    {
        EXIT_ASSERTION
    } else {
        0
    }
}

/// A windowed threshold's running result.
#[derive(Default, Clone)]
struct WindowState {
    windows: u64,
    failed: u64,
    worst: Option<(f64, u64)>,
}

/// Folds seconds into series, totals and windows.
struct Aggregator<'p> {
    plan: &'p Plan,
    starts: Vec<f64>,
    seconds: Vec<Second>,
    total: Acc,
    phases: Vec<Acc>,
    ring: VecDeque<(u64, usize, Acc, f64)>,
    ring_len: usize,
    windows: Vec<WindowState>,
    /// Phases whose non-windowed abort thresholds were checked.
    phase_checked: usize,
}

impl<'p> Aggregator<'p> {
    fn new(plan: &'p Plan) -> Self {
        let ring_len = plan
            .all_thresholds()
            .iter()
            .filter_map(|(_, t)| t.window)
            .map(|w| w.as_secs() as usize)
            .max()
            .unwrap_or(0);
        Aggregator {
            plan,
            starts: plan.starts().iter().map(Duration::as_secs_f64).collect(),
            seconds: Vec::new(),
            total: Acc::default(),
            phases: plan.phases.iter().map(|_| Acc::default()).collect(),
            ring: VecDeque::new(),
            ring_len,
            windows: vec![WindowState::default(); plan.all_thresholds().len()],
            phase_checked: 0,
        }
    }

    fn phase_at(&self, t: f64) -> usize {
        self.starts.iter().rposition(|s| *s <= t).unwrap_or(0)
    }

    /// Requests planned in `[a, b)` seconds of the run (open phases only).
    fn planned(&self, a: f64, b: f64) -> f64 {
        self.plan
            .phases
            .iter()
            .zip(&self.starts)
            .filter_map(|(p, s)| p.schedule().map(|sch| (sch, *s)))
            .map(|(sch, s)| sch.count(b - s) - sch.count(a - s))
            .sum()
    }

    /// Adds second `sec` (`span` seconds long); returns why to abort, if a threshold says so.
    fn push(&mut self, sec: u64, span: f64, acc: Acc, tasks: Option<TaskPoint>) -> Option<String> {
        let t = sec as f64;
        let phase = self.phase_at(t);
        let planned = self.planned(t, t + 1.0);
        let s = acc.summary();
        self.seconds.push(Second {
            t: sec,
            span_s: span,
            phase: self.plan.phases[phase].name.clone(),
            rate_planned: planned,
            rate: s.requests as f64 / span.max(1e-3),
            requests: s.requests,
            errors: s.errors,
            errors_by_kind: s.errors_by_kind,
            status_codes: s.status_codes,
            latency_ms: s.latency_ms,
            service_time_ms: s.service_time_ms,
            desired: tasks.map(|p| p.desired),
            running: tasks.map(|p| p.running),
        });
        self.total.add(&acc);
        self.phases[phase].add(&acc);
        let mut abort = None;
        if self.ring_len > 0 {
            self.ring.push_back((sec, phase, acc, planned));
            while self.ring.len() > self.ring_len {
                self.ring.pop_front();
            }
            abort = self.judge_windows(sec);
        }
        // Whole-phase abort thresholds, once their phase is over.
        while self.phase_checked < phase {
            let p = self.phase_checked;
            self.phase_checked += 1;
            if let Some(r) = self
                .phase_results(p)
                .into_iter()
                .find(|(abort, r)| *abort && !r.passed)
            {
                return Some(format!(
                    "`{}` failed in phase {}",
                    r.1.check, self.plan.phases[p].name
                ));
            }
        }
        abort
    }

    /// The windowed thresholds over the seconds up to `sec`: each window's worst value and
    /// failures; the first failed one that aborts, said.
    fn judge_windows(&mut self, sec: u64) -> Option<String> {
        let mut abort = None;
        for (i, (scope, th)) in self.plan.all_thresholds().into_iter().enumerate() {
            let Some(w) = th.window else { continue };
            let w = w.as_secs() as usize;
            let inside: Vec<&(u64, usize, Acc, f64)> = self
                .ring
                .iter()
                .rev()
                .take(w)
                .filter(|(_, p, ..)| scope.is_none_or(|s| s == *p))
                .collect();
            if inside.len() < w {
                continue;
            }
            let mut merged = Acc::default();
            let mut plan_sum = 0.0;
            for (_, _, a, pl) in &inside {
                merged.add(a);
                plan_sum += pl;
            }
            let Some(v) = th.measure(&merged, w as f64, Some(plan_sum)) else {
                continue;
            };
            let st = &mut self.windows[i];
            st.windows += 1;
            let worse = |a: f64, b: f64| match th.op {
                check::Op::Lt | check::Op::Le | check::Op::Eq => a > b,
                _ => a < b,
            };
            if st.worst.is_none_or(|(x, _)| worse(v, x)) {
                st.worst = Some((v, sec));
            }
            if !th.holds(v) {
                st.failed += 1;
                if th.abort && abort.is_none() {
                    abort = Some(format!(
                        "`{}` over {w} s failed at {sec} s ({})",
                        th.check,
                        report::show(th, v)
                    ));
                }
            }
        }
        abort
    }

    /// Whole-scope results of phase `p`'s thresholds without a window: (abort, result).
    fn phase_results(&self, p: usize) -> Vec<(bool, ThresholdResult)> {
        self.plan.phases[p]
            .thresholds
            .iter()
            .filter(|t| t.window.is_none())
            .map(|t| (t.abort, self.whole(t, Some(p), 0.0)))
            .collect()
    }

    /// A threshold without a window over its scope: phase `p`, or the run (`elapsed` long).
    fn whole(&self, th: &check::Threshold, scope: Option<usize>, elapsed: f64) -> ThresholdResult {
        match scope {
            None => report::whole(th, None, &self.total, elapsed, Some(self.planned(0.0, f64::MAX))),
            Some(p) => {
                let phase = &self.plan.phases[p];
                let secs = phase.duration.as_secs_f64();
                let planned = phase.schedule().map(|s| s.count(secs));
                report::whole(th, Some(&phase.name), &self.phases[p], secs, planned)
            }
        }
    }

    fn results(&self, elapsed: f64) -> Vec<ThresholdResult> {
        self.plan
            .all_thresholds()
            .into_iter()
            .enumerate()
            .map(|(i, (scope, th))| match th.window {
                None => self.whole(th, scope, elapsed),
                Some(w) => {
                    let phase_name = scope.map(|p| self.plan.phases[p].name.as_str());
                    report::windowed(th, phase_name, w, &self.windows[i])
                }
            })
            .collect()
    }
}

/// Runs a plan to its end (or until interrupted or aborted) and reports.
pub async fn run(plan: &Plan, mut opts: Options) -> Result<Report, String> {
    // A target that cannot be reached, does not speak HTTP, or fails its certificate or
    // handshake is one clear error before the run (the probe's connections and requests are
    // not the run's).
    Shared::new(plan, Instant::now())?.probe().await?;
    // A short lead lets every slot be spawned before the first request is due.
    let lead = Duration::from_millis(100);
    let start = opts.start_at.unwrap_or_else(|| Instant::now() + lead);
    let until_start = start.saturating_duration_since(Instant::now());
    let started_at: DateTime<Utc> = Utc::now() + chrono::TimeDelta::from_std(until_start).unwrap_or_default();
    let segment = opts.segment;
    let run_id = format!("{}-{}", slug(&plan.name), started_at.format("%Y%m%dT%H%M%S%.3fZ"));
    let shared = Arc::new(Shared::new(plan, start)?);
    let (stop_tx, stop) = watch::channel(false);

    // The watch: one look before the load, so a wrong cluster or service fails at once.
    watcher::probe(plan, opts.ecs.as_ref()).await?;
    let watcher = Watcher::start(plan, opts.ecs.as_ref(), start);
    let docs = Documents::new(opts.shipper.take(), &run_id, started_at);
    // The phases, one after the other, on one load thread per core.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = generator::Workers::start(threads)?;
    let driver = spawn_driver(plan, &shared, workers, start, segment, &stop);
    let mut sinks = Sinks {
        watcher: &watcher,
        docs,
        view: View::new(opts.progress, opts.plain_every, plan),
    };
    let (agg, aborted, interrupted) =
        gather(plan, start, &driver, &shared, &mut sinks, &mut opts, &stop_tx).await;
    let (mut docs, view) = (sinks.docs, sinks.view);
    let ended = driver.await.unwrap_or_else(|_| Instant::now());
    let load_end = ended.saturating_duration_since(start).as_secs_f64();
    view.done();

    // After the load: the assertions that wait for the service to scale back.
    let watched = watcher
        .finish(
            plan,
            start,
            load_end,
            &mut opts.interrupt,
            opts.progress,
            opts.plain_every,
        )
        .await;
    docs.close().await;

    let elapsed = load_end.max(1e-3);
    let ending = Ending {
        run_id,
        started_at,
        elapsed,
        interrupted: interrupted || watched.interrupted,
        aborted,
        connects: shared.connects.load(Ordering::Relaxed),
        tls: shared.tls_tally(),
        assertions: watched.assertions,
        watch_errors: watched.errors,
        shipping_error: docs.failed,
        tasks: watched.points,
    };
    Ok(ending.report(plan, agg))
}

/// Where each second goes besides the aggregator: the live view and the per-second documents;
/// and the watched service's newest look, which goes with it.
struct Sinks<'w> {
    watcher: &'w Watcher,
    docs: Documents,
    view: View,
}

/// Runs the phases one after the other on the load threads; the instant the load ended.
fn spawn_driver(
    plan: &Plan,
    shared: &Arc<Shared>,
    workers: generator::Workers,
    start: Instant,
    segment: Segment,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Instant> {
    let (shared, plan, stop) = (shared.clone(), plan.clone(), stop.clone());
    tokio::spawn(async move {
        let mut slots = Slots::new(&plan, generator::origins(&shared), segment);
        for (phase, offset) in plan.phases.iter().zip(plan.starts()) {
            let mut stop = stop.clone();
            let pstart = start + offset;
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(pstart.into()) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let schedule = phase.schedule().map(Arc::new);
            let run = Arc::new(PhaseRun {
                load: phase.load.clone(),
                total: schedule.as_ref().map_or(0, |s| s.total()),
                schedule,
                next: Arc::new(AtomicU64::new(0)),
                start: pstart,
                end: pstart + phase.duration,
                segment,
            });
            let n = generator::slots_for(&phase.load, &plan, segment);
            let tasks: Vec<_> = slots
                .take(n)
                .into_iter()
                .map(|s| workers.spawn(s.id, drive(s, shared.clone(), run.clone(), stop.clone())))
                .collect();
            let mut back = Vec::with_capacity(n);
            for t in tasks {
                if let Ok(s) = t.await {
                    back.push(s);
                }
            }
            slots.give_back(back);
        }
        Instant::now()
    })
}

/// Takes each second of the load as it ends, until the driver is done: judged, shown and
/// shipped; stops the load on an abort or an interrupt. The aggregate, why it aborted, and
/// whether it was interrupted.
async fn gather<'p>(
    plan: &'p Plan,
    start: Instant,
    driver: &tokio::task::JoinHandle<Instant>,
    shared: &Shared,
    sinks: &mut Sinks<'_>,
    opts: &mut Options,
    stop_tx: &watch::Sender<bool>,
) -> (Aggregator<'p>, Option<String>, bool) {
    let mut agg = Aggregator::new(plan);
    let mut aborted = None;
    let mut interrupted = false;
    let mut sec = 0u64;
    loop {
        let tick = start + Duration::from_secs(sec + 1) + Duration::from_millis(20);
        tokio::select! {
            _ = tokio::time::sleep_until(tick.into()) => {}
            _ = opts.interrupt.wait_for(|s| *s), if !interrupted => {
                interrupted = true;
                let _ = stop_tx.send(true);
                continue;
            }
        }
        let finished = driver.is_finished();
        let now = Instant::now();
        let span = (now.saturating_duration_since(start).as_secs_f64() - sec as f64).clamp(0.0, 1.0);
        let acc = shared.recorder.take_until(if finished { u64::MAX } else { sec });
        if let Some(tap) = &opts.tap {
            let _ = tap.send((sec, acc.clone()));
        }
        let span = if finished { span.max(1e-3) } else { 1.0 };
        if let Some(reason) = agg.push(sec, span, acc, sinks.watcher.latest()) {
            if aborted.is_none() {
                aborted = Some(reason);
                let _ = stop_tx.send(true);
            }
        }
        if let Some(s) = agg.seconds.last().cloned() {
            sinks.view.second(&s, &agg, sec);
            sinks.docs.second(&s).await;
        }
        sec += 1;
        if finished {
            return (agg, aborted, interrupted);
        }
    }
}

/// How a run ended, besides what its aggregator holds.
struct Ending {
    run_id: String,
    started_at: DateTime<Utc>,
    elapsed: f64,
    interrupted: bool,
    aborted: Option<String>,
    connects: u64,
    tls: Option<tls::TlsTally>,
    assertions: Vec<AssertionResult>,
    watch_errors: u64,
    shipping_error: Option<String>,
    tasks: Vec<TaskPoint>,
}

impl Ending {
    fn report(self, plan: &Plan, agg: Aggregator<'_>) -> Report {
        let elapsed = self.elapsed;
        let thresholds = agg.results(elapsed);
        let starts = plan.starts();
        let phases = plan
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| PhaseReport::new(p, starts[i], &agg.phases[i]))
            .collect();
        let mut report = Report {
            run_id: self.run_id,
            plan: plan.name.clone(),
            started_at: self.started_at,
            planned_duration_s: plan.duration().as_secs_f64(),
            duration_s: elapsed,
            interrupted: self.interrupted,
            aborted: self.aborted,
            exit_code: 0,
            verdict: String::new(),
            http: match plan.http {
                plan::HttpVersion::Http1 => "1.1".into(),
                plan::HttpVersion::Http2 => "2".into(),
            },
            connections: plan.connections,
            connects: self.connects,
            tls: self
                .tls
                .as_ref()
                .map(|t| t.report(plan.tls.insecure, self.connects, elapsed)),
            tls_tally: self.tls,
            targets: plan
                .targets
                .iter()
                .map(|t| format!("{} {}", t.method, t.url))
                .collect(),
            totals: report::Totals::new(&agg.total, elapsed, agg.planned(0.0, f64::MAX)),
            phases,
            thresholds,
            assertions: self.assertions,
            watch_errors: self.watch_errors,
            shipping_error: self.shipping_error,
            seconds: agg.seconds,
            tasks: self.tasks,
            agents: Vec::new(),
        };
        report.exit_code = exit_code(&report);
        report.verdict = report::verdict(&report);
        report
    }
}

fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "stress".into()
    } else {
        out
    }
}

/// The live view.
struct View {
    mode: Progress,
    every: Duration,
    last_plain: Option<Instant>,
    phase: Option<String>,
    total: Duration,
    phases: usize,
}

impl View {
    fn new(mode: Progress, every: Duration, plan: &Plan) -> View {
        View {
            mode,
            every,
            last_plain: None,
            phase: None,
            total: plan.duration(),
            phases: plan.phases.len(),
        }
    }

    fn second(&mut self, s: &Second, agg: &Aggregator, sec: u64) {
        if self.mode == Progress::Off {
            return;
        }
        let phase_idx = agg.phase_at(sec as f64);
        let changed = self.phase.as_deref() != Some(s.phase.as_str());
        let rate = if s.rate_planned > 0.0 {
            format!(
                "{:.0}/s of {:.0}/s ({:.1}%)",
                s.rate,
                s.rate_planned,
                100.0 * s.rate / s.rate_planned
            )
        } else {
            format!("{:.0}/s", s.rate)
        };
        let tasks = match (s.desired, s.running) {
            (Some(d), Some(r)) => format!("  tasks {r}/{d}"),
            _ => String::new(),
        };
        let err_pct = if s.requests > 0 {
            100.0 * s.errors as f64 / s.requests as f64
        } else {
            0.0
        };
        let line = format!(
            "[{}/{} {}] {}/{}  rate {rate}  p50 {:.1}ms p99 {:.1}ms  errors {} ({err_pct:.2}%){tasks}",
            phase_idx + 1,
            self.phases,
            s.phase,
            clock(sec + 1),
            clock(self.total.as_secs()),
            s.latency_ms.p50,
            s.latency_ms.p99,
            s.errors,
        );
        match self.mode {
            Progress::Tty => {
                let mut err = std::io::stderr().lock();
                if changed && self.phase.is_some() {
                    let _ = writeln!(err);
                }
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
            Progress::Plain => {
                if changed || self.last_plain.is_none_or(|t| t.elapsed() >= self.every) {
                    self.last_plain = Some(Instant::now());
                    eprintln!("stress: {line}");
                }
            }
            Progress::Off => {}
        }
        self.phase = Some(s.phase.clone());
    }

    fn done(&self) {
        if self.mode == Progress::Tty {
            eprintln!();
        }
    }
}

fn clock(secs: u64) -> String {
    format!("{:02}:{:02}", secs / 60, secs % 60)
}
