//! Closed-loop comparisons over load traces: each trace's load through the simulated cluster,
//! scaled by ecscale with a policy, by the AWS-style baseline, and by the clairvoyant oracle.
//! `ecscale backtest --simulate` and `scripts/bench/sim` run these; so do the suite tests.
//!
//! Every (trace, scaler) pair is an independent job with its own simulated cluster, so jobs run
//! on as many threads as there are cores, each with its own single-threaded runtime.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::baseline::{Baseline, Peer};
use super::oracle::{tasks_needed, Oracle};
use super::run::{self, closed_loop, LoopOptions, Outcome, Scaler};
use super::{Clock, Sim, Spec};
use crate::model::{Sample, TargetKey};
use crate::policy::TargetPolicy;

/// The worker's tick in back-tests.
pub const TICK: Duration = Duration::from_secs(15);
/// The simulator's step.
pub const STEP: Duration = Duration::from_secs(5);

/// The longest trace `--simulate` replays: 62 days (CloudWatch keeps 5-minute data for 63).
/// Each scaler's run is simulated in 5-second steps, so a longer span (a two-row trace a year
/// apart, say) would hold the command for hours.
pub const MAX_SIMULATED_MINUTES: f64 = 62.0 * 1440.0;

/// A recorded load: requests per period, replayed as a constant rate within each period.
#[derive(Debug, Clone)]
pub struct TraceLoad {
    /// The file's stem (`step`, `multi-day`, ...).
    pub name: String,
    pub period_secs: i64,
    pub samples: Arc<Vec<Sample>>,
}

impl TraceLoad {
    /// Reads `column` (requests per period) of a trace file, and its first recorded count.
    pub fn read(path: &std::path::Path, column: &str) -> anyhow::Result<(TraceLoad, Option<u32>)> {
        let t = crate::evaluate::trace::read(path)?;
        let name = path
            .file_stem()
            .map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into());
        Self::of(&t, &name, column)
    }

    /// `column` of a trace read already (a file, or an export), named `name`.
    pub fn of(
        t: &crate::evaluate::trace::Trace,
        name: &str,
        column: &str,
    ) -> anyhow::Result<(TraceLoad, Option<u32>)> {
        let Some(samples) = t.series.get(column) else {
            anyhow::bail!(
                "{}: no `{column}` column (the load, requests per period); columns: {}",
                t.file,
                t.series.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        if samples.is_empty() {
            anyhow::bail!("{}: `{column}` has no values", t.file);
        }
        if let Some(s) = samples.iter().find(|s| s.value < 0.0) {
            anyhow::bail!(
                "{}: `{column}` is {} at {}: a load (requests per period) is never negative",
                t.file,
                s.value,
                s.timestamp.format("%Y-%m-%dT%H:%M:%SZ")
            );
        }
        let name = name.to_string();
        let load = TraceLoad {
            name,
            period_secs: t.period_secs.max(1),
            samples: Arc::new(samples.clone()),
        };
        let minutes = load.minutes();
        if minutes > MAX_SIMULATED_MINUTES {
            anyhow::bail!(
                "{}: --simulate runs the load minute by minute, three times, and this trace spans {} minutes ({} to {}); at most {} ({} days): replay a shorter window (cut the file, or `trace export --since`)",
                t.file,
                minutes.ceil(),
                load.start().format("%Y-%m-%dT%H:%MZ"),
                load.end().format("%Y-%m-%dT%H:%MZ"),
                MAX_SIMULATED_MINUTES,
                MAX_SIMULATED_MINUTES / 1440.0
            );
        }
        Ok((load, t.recorded_count.values().next().copied()))
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.samples.first().map_or(DateTime::UNIX_EPOCH, |s| s.timestamp)
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.samples.last().map_or(DateTime::UNIX_EPOCH, |s| {
            s.timestamp + TimeDelta::seconds(self.period_secs.max(1))
        })
    }

    /// Requests per second at `t`.
    pub fn rps(&self, t: DateTime<Utc>) -> f64 {
        let i = self.samples.partition_point(|s| s.timestamp <= t);
        if i == 0 {
            return 0.0;
        }
        self.samples[i - 1].value.max(0.0) / self.period_secs.max(1) as f64
    }

    pub fn minutes(&self) -> f64 {
        (self.end() - self.start()).num_seconds() as f64 / 60.0
    }

    /// The lowest and highest rate.
    pub fn range(&self) -> (f64, f64) {
        let p = self.period_secs.max(1) as f64;
        let lo = self
            .samples
            .iter()
            .map(|s| s.value / p)
            .fold(f64::INFINITY, f64::min);
        let hi = self.samples.iter().map(|s| s.value / p).fold(0.0, f64::max);
        (lo, hi)
    }
}

/// What scales the service in one job.
#[derive(Debug, Clone)]
pub enum Contender {
    /// The ecscale worker with these policies (a service target, and a capacity target if any).
    Ecscale(Vec<TargetPolicy>),
    /// A peer scales the service; `capacity` sizes the instances.
    Baseline {
        peer: Peer,
        capacity: Vec<TargetPolicy>,
    },
    Oracle,
}

impl Contender {
    pub fn label(&self) -> &'static str {
        match self {
            Contender::Ecscale(_) => "ecscale",
            Contender::Baseline { .. } => "baseline",
            Contender::Oracle => "oracle",
        }
    }
}

/// The simulated cluster and the SLO every job shares.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Names, task size and rate; initial counts are set per trace.
    pub spec: Spec,
    pub slo_ms: f64,
    /// The service target's bounds.
    pub min: u32,
    pub max: u32,
    /// The count at the start; `None`: what the trace's first minute needs (by the oracle's
    /// model), so that every scaler starts from the same, sensible place.
    pub initial: Option<u32>,
    /// Keep the run's history ([`Outcome::history`]).
    pub record: bool,
}

impl Setup {
    /// The cluster for `trace`, with its initial tasks and instances.
    pub fn spec_for(&self, trace: &TraceLoad) -> Spec {
        let mut spec = self.spec.clone();
        let initial = self.initial.unwrap_or_else(|| {
            let step = TimeDelta::from_std(STEP).unwrap_or(TimeDelta::seconds(5));
            let rates: Vec<f64> = (0..12)
                .map(|k| trace.rps(trace.start() + step * k + step / 2))
                .collect();
            tasks_needed(&spec, &rates, STEP.as_secs_f64(), self.slo_ms, self.min, self.max)
        });
        let initial = initial.clamp(self.min, self.max);
        spec.initial_tasks = initial;
        let room = spec.instance_resources();
        let per = (room.cpu / spec.task.cpu.max(1)).max(1);
        spec.initial_instances = initial.div_ceil(per).max(spec.group_min);
        spec.group_max = spec.group_max.max(self.max.div_ceil(per) + 2);
        spec
    }
}

/// Runs one trace with one contender.
pub async fn run_one(setup: &Setup, trace: &TraceLoad, contender: &Contender) -> anyhow::Result<Outcome> {
    let spec = setup.spec_for(trace);
    let load = |t: DateTime<Utc>| trace.rps(t);
    let opts = LoopOptions {
        until: trace.end(),
        tick: TICK,
        step: STEP,
        slo_p95_ms: setup.slo_ms,
        faults: Vec::new(),
    };
    let sim = Sim::new(spec.clone(), trace.start(), Clock::Manual);
    let scaler = match contender {
        Contender::Ecscale(policies) => {
            let config = run::config(&spec, TICK)?;
            Scaler::Ecscale(Box::new(run::worker(config, policies.clone(), &sim, None).await?))
        }
        Contender::Baseline { peer, capacity } => {
            let config = run::config(&spec, TICK)?;
            let capacity = run::worker(config, capacity.clone(), &sim, None).await?;
            Scaler::Baseline {
                baseline: Box::new(Baseline::new(peer)),
                bounds: (setup.min, setup.max),
                capacity: Box::new(capacity),
            }
        }
        Contender::Oracle => {
            let step = TimeDelta::from_std(STEP).unwrap_or(TimeDelta::seconds(5));
            let oracle = Oracle::plan(
                &spec,
                &load,
                (trace.start(), trace.end()),
                step,
                setup.slo_ms,
                (setup.min, setup.max),
            );
            Scaler::Oracle(Box::new(oracle))
        }
    };
    let mut out = closed_loop(&sim, scaler, &load, &opts).await;
    if setup.record {
        out.history = Some(super::record::trace_of(&sim, (trace.start(), trace.end())));
    }
    Ok(out)
}

/// One job of a suite.
pub struct Job {
    pub setup: Setup,
    pub trace: TraceLoad,
    pub contender: Contender,
}

/// Runs the jobs on up to `threads` threads; results in the jobs' order.
pub fn run_all(jobs: Vec<Job>, threads: usize) -> Vec<anyhow::Result<Outcome>> {
    let n = jobs.len();
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let results = std::sync::Mutex::new((0..n).map(|_| None).collect::<Vec<_>>());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((i, job)) = next else { break };
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| rt.block_on(run_one(&job.setup, &job.trace, &job.contender)));
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("a suite job did not finish"))))
        .collect()
}

/// The number of threads to run a suite on.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The service target of a set of policies, and the capacity policies for its group.
pub fn split_targets<'a>(
    targets: &'a [TargetPolicy],
    group: &str,
) -> (Vec<&'a TargetPolicy>, Vec<TargetPolicy>) {
    let services = targets
        .iter()
        .filter(|t| matches!(t.target, TargetKey::Service { .. }))
        .collect();
    let capacity = targets
        .iter()
        .filter(|t| matches!(&t.target, TargetKey::AutoScalingGroup { name } if **name == *group))
        .cloned()
        .collect();
    (services, capacity)
}

/// One row of a suite table: a trace, and the three scalers' totals on it.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteRow {
    pub trace: String,
    pub minutes: f64,
    pub ecscale: run::Totals,
    pub baseline: run::Totals,
    pub oracle: run::Totals,
}

impl SuiteRow {
    /// Task-hours relative to the oracle's.
    pub fn ratio(&self, t: &run::Totals) -> f64 {
        t.task_hours / self.oracle.task_hours.max(f64::MIN_POSITIVE)
    }
}
