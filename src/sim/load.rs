//! What the simulated tasks and load balancer count between two published minutes.
//!
//! Both ways of serving requests fill the same counters: real HTTP requests (the demo,
//! [`super::http`]) and the fluid model (closed-loop back-tests, [`super::fluid`]). Work and
//! running time are kept in the meter's own time base: real seconds for HTTP (a task's CPU is
//! what it really did), simulated seconds for the fluid model.

use std::sync::Mutex;

use hdrhistogram::Histogram;

/// One task's counters: since the last published minute, and since the last published
/// high-resolution window.
#[derive(Debug, Default)]
pub struct TaskMeter {
    counts: Mutex<[TaskCounts; 2]>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct TaskCounts {
    pub requests: f64,
    /// Seconds of work done (at 100 % CPU).
    pub busy: f64,
    /// Seconds spent RUNNING.
    pub up: f64,
}

impl TaskMeter {
    /// Requests that reached the task, and the seconds of work they took.
    pub fn served(&self, requests: f64, busy: f64) {
        let mut g = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for c in g.iter_mut() {
            c.requests += requests;
            c.busy += busy;
        }
    }

    pub fn running_for(&self, secs: f64) {
        let mut g = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for c in g.iter_mut() {
            c.up += secs;
        }
    }

    /// The counts since the last call (the minute's).
    pub fn take(&self) -> TaskCounts {
        std::mem::take(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner())[0])
    }

    /// The counts since the last call (the high-resolution window's).
    pub fn take_window(&self) -> TaskCounts {
        std::mem::take(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner())[1])
    }
}

/// What the load balancer saw in the current minute: latency (µs) of every answered request,
/// and errors (refused, no target, target failed).
#[derive(Debug)]
pub struct LbMinute {
    pub latency_us: Histogram<u64>,
    pub requests: f64,
    pub errors: f64,
    /// Σ latency (s), for TargetResponseTime's average.
    pub latency_sum: f64,
}

impl Default for LbMinute {
    fn default() -> Self {
        LbMinute {
            // 1 µs .. 1 h at 3 significant digits: fixed size, never fails to record.
            #[allow(clippy::expect_used)]
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds (reason: constants)"),
            requests: 0.0,
            errors: 0.0,
            latency_sum: 0.0,
        }
    }
}

impl LbMinute {
    /// Records `n` requests answered after `secs`.
    pub fn answered(&mut self, secs: f64, n: u64) {
        let us = ((secs * 1e6).round() as u64).clamp(1, 3_600_000_000);
        let _ = self.latency_us.record_n(us, n);
        self.requests += n as f64;
        self.latency_sum += secs * n as f64;
    }

    pub fn failed(&mut self, n: f64) {
        self.requests += n;
        self.errors += n;
    }

    /// A percentile of the answered requests, in ms.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(q) as f64 / 1000.0)
    }
}
