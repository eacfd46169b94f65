//! The fluid model: requests served by formula instead of one by one, so a day of traffic runs
//! through the simulated cluster in seconds (`ecscale backtest --simulate`, the closed-loop tests).
//!
//! The load balancer spreads the arrival rate λ evenly over the RUNNING tasks (round robin).
//! Each task is a single server with mean service time `D = 1/task_rps` and service-time
//! variability cs² = 0.25 (the same shifted-exponential service time the HTTP tasks use), fed by
//! Poisson-like arrivals (ca² = 1):
//! - below saturation (ρ < 1) the mean wait is Kingman's G/G/1 approximation
//!   `Wq = ρ/(1−ρ) · (ca²+cs²)/2 · D`, with the waiting time's tail taken as exponential
//!   (`P(W > x) = ρ·e^(−xρ/Wq)`);
//! - above it, the excess piles up as a backlog (drained at `task_rps` once the load falls), which
//!   every request waits behind; what would wait longer than `max_queue_wait` is refused (503).
//!
//! Each step records 20 latency quantiles into the load balancer's histogram, weighted by the
//! requests served, and into each task's meter the requests that reached it (ALB
//! `RequestCountPerTarget` counts what a target received, refused or not) and the work done
//! (from which CPU is published). [`task_step`] is the arithmetic of one task over one step;
//! the oracle ([`super::oracle`]) sizes its counts with the same function.

use super::cluster::TaskStatus;
#[cfg(test)]
use super::cluster::QUEUEING;
use super::load::LbMinute;
use super::Inner;

/// Quantiles recorded per step.
const QUANTILES: usize = 20;

/// How one task serves requests: what it serves a second at full CPU, the mean time one
/// request takes when it does not wait, and the queueing factor of Kingman's formula. A twin
/// fitted to a service sets all three; by default the service time is `1 / rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Service {
    pub rate: f64,
    pub time: f64,
    pub queueing: f64,
}

impl Service {
    pub fn of(spec: &super::Spec) -> Service {
        let rate = spec.task_rps.max(1e-9);
        Service {
            rate,
            time: spec.service_time.map_or(1.0 / rate, |d| d.as_secs_f64()),
            queueing: spec.queueing,
        }
    }
}

/// The `q` quantile of one request's latency (s) at utilization `rho` (< 1) behind a backlog of
/// `wait` seconds.
pub fn latency_quantile(q: f64, rho: f64, svc: &Service, wait: f64) -> f64 {
    latency_at(q, (1.0 - q).ln(), rho, svc, wait)
}

/// [`latency_quantile`] with `ln(1 - q)` given, so the recorded quantiles' logarithms are
/// worked out once.
fn latency_at(q: f64, ln_1mq: f64, rho: f64, svc: &Service, wait: f64) -> f64 {
    let rho = rho.clamp(0.0, 0.99);
    let wq = rho / (1.0 - rho) * svc.queueing * (1.0 / svc.rate);
    let queued = if rho > 1.0 - q && rho > 0.0 {
        wq / rho * (rho / (1.0 - q)).ln()
    } else {
        0.0
    };
    // Service time: 0.5·D + Exp(mean 0.5·D) (mean D, cs² = 0.25).
    let service = svc.time * (0.5 - 0.5 * ln_1mq);
    wait + queued + service
}

/// The quantiles recorded per step (the middles of [`QUANTILES`] equal slices), each with
/// `ln(1 - q)`.
fn recorded_quantiles() -> &'static [(f64, f64); QUANTILES] {
    static Q: std::sync::LazyLock<[(f64, f64); QUANTILES]> = std::sync::LazyLock::new(|| {
        std::array::from_fn(|j| {
            let q = (j as f64 + 0.5) / QUANTILES as f64;
            (q, (1.0 - q).ln())
        })
    });
    &Q
}

/// The mean latency the model gives at utilization `rho` with no backlog, as its two terms:
/// `mean = time × a + queueing / rate × b`, the same quantiles the load balancer records. A
/// twin fits `time` and `queueing` to a service's response times through these.
pub fn latency_terms(rho: f64) -> (f64, f64) {
    let unit = |time: f64, queueing: f64| {
        let svc = Service {
            rate: 1.0,
            time,
            queueing,
        };
        recorded_quantiles()
            .iter()
            .map(|&(q, ln_1mq)| latency_at(q, ln_1mq, rho, &svc, 0.0))
            .sum::<f64>()
            / QUANTILES as f64
    };
    (unit(1.0, 0.0), unit(0.0, 1.0))
}

/// One task over one step: what it was sent, served, refused, and the latency its requests saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskStep {
    /// Requests that reached the task (served or refused).
    pub arrived: f64,
    pub served: f64,
    /// Refused with 503: they would have waited longer than `max_queue_wait`.
    pub refused: f64,
    /// Seconds of work done (at 100 % CPU).
    pub work: f64,
    /// The backlog (requests) at the end of the step.
    pub backlog: f64,
    /// Mean wait behind the backlog (s), and the utilization the queueing formula uses.
    pub wait: f64,
    pub rho: f64,
}

/// One task with `backlog` requests queued, sent `lambda` requests/s for `dt` seconds: serves
/// `task_rps`, arrivals first and the backlog with the rest; what would wait longer than
/// `max_wait` seconds is refused.
pub fn task_step(backlog: f64, lambda: f64, dt: f64, task_rps: f64, max_wait: f64) -> TaskStep {
    let mu = task_rps;
    let cap = mu * max_wait;
    let came = lambda * dt;
    let mut b1 = (backlog + came - mu * dt).max(0.0);
    let refused = (b1 - cap).max(0.0);
    b1 -= refused;
    TaskStep {
        arrived: came,
        served: came - refused,
        refused,
        work: (backlog + came - refused - b1).max(0.0) / mu,
        backlog: b1,
        wait: (backlog + b1) / 2.0 / mu,
        rho: if b1 > 0.0 || backlog > 0.0 {
            0.99
        } else {
            lambda / mu
        },
    }
}

/// Records what `tasks` tasks that each went through `step` did into the load balancer's minute.
pub fn record(lb: &mut LbMinute, step: &TaskStep, svc: &Service, tasks: u64) {
    if step.served > 0.0 {
        let per = step.served / QUANTILES as f64;
        let n = per.round().max(1.0) as u64;
        for &(q, ln_1mq) in recorded_quantiles() {
            let secs = latency_at(q, ln_1mq, step.rho, svc, step.wait);
            lb.answered(secs, n * tasks);
            // The histogram holds whole requests; the sum of latencies, what was served.
            lb.latency_sum += secs * (per - n as f64) * tasks as f64;
        }
        // `answered` counted n per quantile; correct the request total to what was served.
        lb.requests += (step.served - (n * QUANTILES as u64) as f64) * tasks as f64;
    }
    lb.failed(step.refused * tasks as f64);
}

/// Serves `rps` requests per second for `dt` seconds with the tasks RUNNING now. The load
/// balancer sends each the same rate, so tasks with the same backlog take the same step: it is
/// worked out once for them all. Each task's backlog between steps is kept on its meter, which
/// lives as long as the task.
pub fn serve(sim: &mut Inner, rps: f64, dt: f64) {
    let spec = &sim.cluster.spec;
    let svc = Service::of(spec);
    let mu = spec.task_rps;
    let max_wait = spec.max_queue_wait.as_secs_f64();
    let running: Vec<&std::sync::Arc<super::load::TaskMeter>> = sim
        .cluster
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Running)
        .map(|t| &t.meter)
        .collect();
    if running.is_empty() {
        sim.lb.failed(rps.max(0.0) * dt);
        return;
    }
    let lambda = rps.max(0.0) / running.len() as f64;
    // (backlog before, the step, how many tasks took it)
    let mut steps: Vec<(u64, TaskStep, u64)> = Vec::new();
    for meter in running {
        let b0 = meter.backlog();
        let k = match steps.iter().position(|(b, ..)| *b == b0.to_bits()) {
            Some(k) => k,
            None => {
                steps.push((b0.to_bits(), task_step(b0, lambda, dt, mu, max_wait), 0));
                steps.len() - 1
            }
        };
        let step = steps[k].1;
        steps[k].2 += 1;
        meter.stepped(step.arrived, step.work, step.backlog);
    }
    for (_, step, tasks) in &steps {
        record(&mut sim.lb, step, &svc, *tasks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_grows_as_a_task_saturates() {
        let svc = Service {
            rate: 40.0,
            time: 0.025,
            queueing: QUEUEING,
        };
        let p95 = |rho| latency_quantile(0.95, rho, &svc, 0.0) * 1000.0;
        // idle: the service time's own p95 (0.5·D + 0.5·D·ln 20 ≈ 50 ms)
        assert!((p95(0.0) - 49.9).abs() < 0.5, "{}", p95(0.0));
        assert!(p95(0.5) < p95(0.7) && p95(0.7) < p95(0.9) && p95(0.9) < p95(0.97));
        assert!(p95(0.5) < 150.0, "{}", p95(0.5));
        assert!(p95(0.9) > 250.0, "{}", p95(0.9));
        // a backlog adds its wait to every request
        assert!(
            (latency_quantile(0.5, 0.5, &svc, 1.0) - 1.0 - latency_quantile(0.5, 0.5, &svc, 0.0)).abs()
                < 1e-9
        );
    }
}
