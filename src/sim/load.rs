//! What the simulated tasks and load balancer count between two published minutes.
//!
//! Both ways of serving requests fill the same counters: real HTTP requests (the demo,
//! [`super::http`]) and the fluid model (closed-loop back-tests, [`super::fluid`]). Work and
//! running time are kept in the meter's own time base: real seconds for HTTP (a task's CPU is
//! what it really did), simulated seconds for the fluid model.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// One task's counters (since the last published minute, and since the last published
/// high-resolution window) and the requests queued at it between steps, under one lock.
#[derive(Debug, Default)]
pub struct TaskMeter {
    inner: Mutex<Meter>,
}

#[derive(Debug, Default)]
struct Meter {
    counts: [TaskCounts; 2],
    backlog: f64,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests that reached the task, and the seconds of work they took.
    pub fn served(&self, requests: f64, busy: f64) {
        self.lock().add(requests, busy);
    }

    /// [`TaskMeter::served`] in a step, with the requests left queued at its end.
    pub fn stepped(&self, requests: f64, busy: f64, backlog: f64) {
        let mut m = self.lock();
        m.add(requests, busy);
        m.backlog = backlog;
    }

    /// The requests queued at the task after its last step.
    pub fn backlog(&self) -> f64 {
        self.lock().backlog
    }

    pub fn running_for(&self, secs: f64) {
        for c in self.lock().counts.iter_mut() {
            c.up += secs;
        }
    }

    /// The counts since the last call (the minute's).
    pub fn take(&self) -> TaskCounts {
        std::mem::take(&mut self.lock().counts[0])
    }

    /// The counts since the last call (the high-resolution window's).
    pub fn take_window(&self) -> TaskCounts {
        std::mem::take(&mut self.lock().counts[1])
    }
}

impl Meter {
    fn add(&mut self, requests: f64, busy: f64) {
        for c in self.counts.iter_mut() {
            c.requests += requests;
            c.busy += busy;
        }
    }
}

/// The largest latency counted (µs): an hour.
const MAX_US: u64 = 3_600_000_000;

/// The grid latencies are counted on: HDR's, 1 µs .. 1 h at 3 significant digits. Only its
/// arithmetic is used (which values are equivalent), never its counts.
fn grid() -> &'static Histogram<u8> {
    static GRID: std::sync::LazyLock<Histogram<u8>> = std::sync::LazyLock::new(|| {
        #[allow(clippy::expect_used)]
        Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds (reason: constants)")
    });
    &GRID
}

/// Latencies (µs) counted on HDR's grid at 3 significant digits, and read back exactly as an
/// `hdrhistogram::Histogram` with those bounds reads them (quantiles, min, max), but sparse: only
/// the values seen are kept, so a new one costs nothing (the simulator makes one a minute, the
/// oracle one per count it tries).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Latencies {
    /// The lowest equivalent value of each bucket seen → its count.
    counts: BTreeMap<u64, u64>,
    total: u64,
    min: u64,
    max: u64,
}

impl Latencies {
    /// Counts `n` latencies of `us` µs (clamped to 1 µs .. 1 h).
    pub fn record_n(&mut self, us: u64, n: u64) {
        if n == 0 {
            return;
        }
        let us = us.clamp(1, MAX_US);
        *self.counts.entry(grid().lowest_equivalent(us)).or_default() += n;
        self.min = if self.total == 0 { us } else { self.min.min(us) };
        self.max = self.max.max(us);
        self.total += n;
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The value at quantile `q` (0..=1): the highest equivalent value of the bucket where the
    /// count first reaches `ceil(q × total)` (the lowest for `q` = 0), 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        let q = q.min(1.0);
        let want = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&v, &n) in &self.counts {
            seen += n;
            if seen >= want {
                return if q == 0.0 { v } else { grid().highest_equivalent(v) };
            }
        }
        0
    }

    /// The lowest latency counted (its bucket's lowest value), 0 when empty.
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            grid().lowest_equivalent(self.min)
        }
    }

    /// The highest latency counted (its bucket's highest value), 0 when empty.
    pub fn max(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            grid().highest_equivalent(self.max)
        }
    }
}

/// What the load balancer saw in the current minute: latency (µs) of every answered request,
/// and errors (refused, no target, target failed).
#[derive(Debug, Default)]
pub struct LbMinute {
    pub latency_us: Latencies,
    pub requests: f64,
    pub errors: f64,
    /// Σ latency (s), for TargetResponseTime's average.
    pub latency_sum: f64,
}

impl LbMinute {
    /// Records `n` requests answered after `secs`.
    pub fn answered(&mut self, secs: f64, n: u64) {
        let us = ((secs * 1e6).round() as u64).clamp(1, MAX_US);
        self.latency_us.record_n(us, n);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Read back exactly as the dense HDR histogram with the same bounds reads it.
        #[test]
        fn latencies_read_as_an_hdr_histogram_does(
            values in proptest::collection::vec((1u64..5_000_000_000, 1u64..50), 0..300),
            qs in proptest::collection::vec(0.0f64..=1.0, 1..8),
        ) {
            let mut sparse = Latencies::default();
            let mut dense = Histogram::<u64>::new_with_bounds(1, MAX_US, 3).unwrap();
            for (v, n) in &values {
                sparse.record_n(*v, *n);
                dense.record_n((*v).min(MAX_US), *n).unwrap();
            }
            prop_assert_eq!(sparse.is_empty(), dense.is_empty());
            for q in qs.iter().chain(&[0.0, 0.5, 0.95, 0.99, 1.0]) {
                prop_assert_eq!(sparse.value_at_quantile(*q), dense.value_at_quantile(*q), "q {}", q);
            }
            if !values.is_empty() {
                prop_assert_eq!(sparse.min(), dense.min());
                prop_assert_eq!(sparse.max(), dense.max());
            }
        }
    }
}
