//! Load profiles: what each phase asks of the generator.
//!
//! An open phase is a rate shape `r(t)` over the phase's duration. Requests are scheduled by the
//! clock: the k-th request of a phase (k = 0, 1, …) is due at the time `t` where the planned count
//! `N(t) = ∫₀ᵗ r` reaches k, whatever happened to the requests before it. That is what keeps a
//! slow server from slowing the load down (and what lets latency be counted from the scheduled
//! time, see `stats`).

use std::time::Duration;

/// How a phase generates load.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// Open model: requests by the clock.
    Open(Shape),
    /// Closed model: `users` each send, wait for the answer, think, and send again.
    Closed { users: usize, think: Duration },
    /// As fast as the connections allow (no schedule).
    Max,
}

/// A rate shape in requests per second over a phase of `duration`.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Constant(f64),
    /// Linear from `from` to `to` over the phase.
    Ramp {
        from: f64,
        to: f64,
    },
    /// A staircase of `count` equal steps from `from` to `to`.
    Steps {
        from: f64,
        to: f64,
        count: u32,
    },
    /// `base`, and `peak` for `length` starting `at` into the phase.
    Spike {
        base: f64,
        peak: f64,
        at: Duration,
        length: Duration,
    },
    /// `mean + amplitude · sin(2πt / period)` (a diurnal cycle, compressed).
    Sine {
        mean: f64,
        amplitude: f64,
        period: Duration,
    },
}

impl Shape {
    /// The same shape with its times (a spike's start and length, a sine's period) divided by
    /// `speed`: the shape of a phase run `speed` times faster.
    pub fn compressed(&self, speed: f64) -> Shape {
        let c = |d: Duration| d.div_f64(speed);
        match self.clone() {
            Shape::Spike {
                base,
                peak,
                at,
                length,
            } => Shape::Spike {
                base,
                peak,
                at: c(at),
                length: c(length),
            },
            Shape::Sine {
                mean,
                amplitude,
                period,
            } => Shape::Sine {
                mean,
                amplitude,
                period: c(period),
            },
            other => other,
        }
    }
}

/// An open phase's schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub shape: Shape,
    pub duration: Duration,
}

impl Schedule {
    pub fn new(shape: Shape, duration: Duration) -> Self {
        Schedule { shape, duration }
    }

    fn secs(&self) -> f64 {
        self.duration.as_secs_f64()
    }

    /// The planned rate at `t` seconds into the phase.
    pub fn rate(&self, t: f64) -> f64 {
        let d = self.secs();
        match self.shape {
            Shape::Constant(r) => r,
            Shape::Ramp { from, to } => from + (to - from) * (t / d).clamp(0.0, 1.0),
            Shape::Steps { from, to, count } => {
                let i = ((t / d * count as f64).floor() as u32).min(count - 1);
                step_rate(from, to, count, i)
            }
            Shape::Spike {
                base,
                peak,
                at,
                length,
            } => {
                let (a, l) = (at.as_secs_f64(), length.as_secs_f64());
                if t >= a && t < a + l {
                    peak
                } else {
                    base
                }
            }
            Shape::Sine {
                mean,
                amplitude,
                period,
            } => mean + amplitude * (std::f64::consts::TAU * t / period.as_secs_f64()).sin(),
        }
    }

    /// The planned count from the phase's start to `t` seconds into it: `∫₀ᵗ r`.
    pub fn count(&self, t: f64) -> f64 {
        let d = self.secs();
        let t = t.clamp(0.0, d);
        match self.shape {
            Shape::Constant(r) => r * t,
            Shape::Ramp { from, to } => from * t + (to - from) * t * t / (2.0 * d),
            Shape::Steps { from, to, count } => {
                let w = d / count as f64;
                let full = ((t / w).floor() as u32).min(count);
                let mut n = w * steps_sum(from, to, count, full);
                if full < count {
                    n += step_rate(from, to, count, full) * (t - full as f64 * w);
                }
                n
            }
            Shape::Spike {
                base,
                peak,
                at,
                length,
            } => {
                let (a, l) = (at.as_secs_f64(), length.as_secs_f64());
                let inside = (t.min(a + l) - a).max(0.0);
                base * t + (peak - base) * inside
            }
            Shape::Sine {
                mean,
                amplitude,
                period,
            } => {
                let p = period.as_secs_f64();
                let w = std::f64::consts::TAU / p;
                mean * t + amplitude / w * (1.0 - (w * t).cos())
            }
        }
    }

    /// How many requests the phase sends: those due before its end.
    pub fn total(&self) -> u64 {
        let n = self.count(self.secs());
        // The k-th request is due when N(t) = k; k = 0 is due at once.
        (n - 1e-9).ceil().max(0.0) as u64
    }

    /// Seconds into the phase at which the k-th request is due.
    pub fn due(&self, k: u64) -> f64 {
        let k = k as f64;
        if let Shape::Constant(r) = self.shape {
            return k / r;
        }
        // N is non-decreasing: the first t with N(t) >= k, by bisection (1 ns is plenty).
        let (mut lo, mut hi) = (0.0, self.secs());
        for _ in 0..64 {
            if hi - lo < 1e-9 {
                break;
            }
            let mid = 0.5 * (lo + hi);
            if self.count(mid) >= k {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// The highest rate of the phase (sizing connections, checks).
    pub fn peak(&self) -> f64 {
        match self.shape {
            Shape::Constant(r) => r,
            Shape::Ramp { from, to } | Shape::Steps { from, to, .. } => from.max(to),
            Shape::Spike { base, peak, .. } => base.max(peak),
            Shape::Sine { mean, amplitude, .. } => mean + amplitude.abs(),
        }
    }
}

/// `Σ step_rate(i)` for `i < full`, in closed form (the rates are an arithmetic series), so a
/// staircase of many steps costs no more than one of few.
fn steps_sum(from: f64, to: f64, count: u32, full: u32) -> f64 {
    let k = f64::from(full);
    if count <= 1 {
        to * k
    } else {
        k * from + (to - from) / f64::from(count - 1) * k * (k - 1.0) / 2.0
    }
}

fn step_rate(from: f64, to: f64, count: u32, i: u32) -> f64 {
    if count <= 1 {
        to
    } else {
        from + (to - from) * i as f64 / (count - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(shape: Shape, secs: u64) -> Schedule {
        Schedule::new(shape, Duration::from_secs(secs))
    }

    #[test]
    fn a_staircase_counts_in_closed_form_as_its_steps_add_up() {
        for (from, to, count) in [(300.0, 50.0, 7), (10.0, 10.0, 1), (5.0, 900.0, 250)] {
            let sch = s(Shape::Steps { from, to, count }, 60);
            let w = 60.0 / f64::from(count);
            for t in [0.0, 0.5, w, 7.3, 30.0, 59.99, 60.0] {
                let full = ((t / w).floor() as u32).min(count);
                let mut by_step: f64 = (0..full).map(|i| step_rate(from, to, count, i) * w).sum();
                if full < count {
                    by_step += step_rate(from, to, count, full) * (t - f64::from(full) * w);
                }
                assert!(
                    (sch.count(t) - by_step).abs() < 1e-6 * by_step.max(1.0),
                    "{count} at {t}"
                );
            }
        }
        // A billion steps in a second: its schedule is computed at once, not step by step.
        let many = s(
            Shape::Steps {
                from: 300.0,
                to: 50.0,
                count: 1_000_000_000,
            },
            1,
        );
        assert!((many.count(1.0) - 175.0).abs() < 1e-3, "{}", many.count(1.0));
        assert!(many.due(100) > 0.0 && many.due(100) < 1.0);
    }

    #[test]
    fn totals_are_the_integral_of_the_rate() {
        assert_eq!(s(Shape::Constant(2000.0), 10).total(), 20_000);
        assert_eq!(s(Shape::Ramp { from: 0.0, to: 100.0 }, 10).total(), 500);
        let steps = Shape::Steps {
            from: 100.0,
            to: 400.0,
            count: 4,
        };
        // 100, 200, 300, 400 for 2.5 s each.
        assert_eq!(s(steps, 10).total(), 2500);
        let spike = Shape::Spike {
            base: 10.0,
            peak: 110.0,
            at: Duration::from_secs(2),
            length: Duration::from_secs(3),
        };
        assert_eq!(s(spike, 10).total(), 100 + 300);
        let sine = Shape::Sine {
            mean: 100.0,
            amplitude: 50.0,
            period: Duration::from_secs(10),
        };
        assert_eq!(s(sine, 10).total(), 1000, "whole periods average to the mean");
    }

    #[test]
    fn due_times_invert_the_count_and_follow_the_rate() {
        let ramp = s(Shape::Ramp { from: 0.0, to: 100.0 }, 10);
        // N(t) = 5 t²: the 125th request is due at 5 s.
        assert!((ramp.due(125) - 5.0).abs() < 1e-6);
        let mut last = -1.0;
        for k in 0..ramp.total() {
            let t = ramp.due(k);
            assert!(t >= last && t < 10.0, "k={k} t={t}");
            last = t;
        }
        let sine = s(
            Shape::Sine {
                mean: 100.0,
                amplitude: 100.0,
                period: Duration::from_secs(4),
            },
            4,
        );
        // The first half period holds more than the second.
        let first_half = (0..sine.total()).filter(|k| sine.due(*k) < 2.0).count();
        assert!(first_half > 300, "{first_half}");
        assert_eq!(s(Shape::Constant(4.0), 1).due(3), 0.75);
    }

    #[test]
    fn rates_at_the_edges() {
        let st = s(
            Shape::Steps {
                from: 1.0,
                to: 3.0,
                count: 3,
            },
            3,
        );
        assert_eq!(
            (st.rate(0.0), st.rate(1.5), st.rate(2.99), st.rate(3.0)),
            (1.0, 2.0, 3.0, 3.0)
        );
        assert_eq!(st.peak(), 3.0);
    }
}
