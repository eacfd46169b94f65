//! A twin: the simulator's service model fitted to a service's own history (`ecscale twin
//! fit`), so back-tests, frontiers and the tuner ask "what would happen to *this* service".
//!
//! What it fits ([`fit`]): requests per task at full CPU, the latency curve (service time and
//! queueing factor), task start time, instance boot time, and the load's noise. Each estimate
//! comes with its uncertainty and what it rests on; one the history cannot support is said,
//! and left at the simulator's default.
//!
//! The twin is a small YAML file ([`file`]) that `backtest --simulate --twin`, `--frontier` and
//! `tune` read.

pub mod file;
pub mod fit;

use std::time::Duration;

use serde::Serialize;

use super::Spec;
use crate::evaluate::trace::Trace;

/// The columns a twin is fitted from, as `trace export` writes them (and the simulator's own
/// history, [`super::record`]). `running` is the trace's recorded count.
pub mod columns {
    /// ALB RequestCount (Sum per period).
    pub const LOAD: &str = "request_count";
    /// ECS CPUUtilization (Average, %).
    pub const CPU: &str = "cpu";
    /// ALB TargetResponseTime (Average, s).
    pub const RESPONSE_TIME: &str = "target_response_time";
    /// Container Insights DesiredTaskCount and PendingTaskCount (Average).
    pub const DESIRED: &str = "desired";
    pub const PENDING: &str = "pending";
    /// The Auto Scaling group's GroupInServiceInstances, GroupPendingInstances and
    /// GroupDesiredCapacity (Average).
    pub const INSTANCES: &str = "instances";
    pub const INSTANCES_PENDING: &str = "instances_pending";
    pub const GROUP_DESIRED: &str = "group_desired";
}

/// One estimate: a value with its standard error and what it rests on, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Estimate {
    Fitted {
        value: f64,
        error: f64,
        basis: String,
    },
    /// Not enough data: the default stays.
    Missing {
        why: String,
    },
}

impl Estimate {
    pub fn fitted(value: f64, error: f64, basis: impl Into<String>) -> Estimate {
        Estimate::Fitted {
            value,
            error: if error.is_finite() {
                error.abs()
            } else {
                f64::INFINITY
            },
            basis: basis.into(),
        }
    }

    pub fn missing(why: impl Into<String>) -> Estimate {
        Estimate::Missing { why: why.into() }
    }

    pub fn value(&self) -> Option<f64> {
        match self {
            Estimate::Fitted { value, .. } if value.is_finite() => Some(*value),
            _ => None,
        }
    }
}

/// The fitted model, each parameter with its estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fitted {
    /// Where the history came from, and its span.
    pub source: String,
    pub minutes: usize,
    pub task_rps: Estimate,
    /// Seconds.
    pub service_time: Estimate,
    pub queueing: Estimate,
    /// Seconds.
    pub task_start: Estimate,
    /// Seconds.
    pub instance_boot: Estimate,
    /// A fraction a minute.
    pub noise: Estimate,
}

/// Fits every parameter the history supports.
pub fn fit(t: &Trace) -> Fitted {
    let task_rps = fit::task_rate(t);
    let (service_time, queueing) = fit::latency(t, task_rps.value());
    Fitted {
        source: t.file.clone(),
        minutes: t.timestamps.len() * t.period_secs.max(1) as usize / 60,
        task_rps,
        service_time,
        queueing,
        task_start: fit::task_start(t),
        instance_boot: fit::instance_boot(t),
        noise: fit::noise(t),
    }
}

/// The parameters the simulator runs with: fitted where they were, its defaults elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Twin {
    pub task_rps: f64,
    pub service_time: Option<Duration>,
    pub queueing: f64,
    pub task_start: Duration,
    pub instance_boot: Duration,
    pub noise: Option<f64>,
}

impl Twin {
    /// The simulator's defaults.
    pub fn defaults() -> Twin {
        let s = Spec::example();
        Twin {
            task_rps: s.task_rps,
            service_time: None,
            queueing: s.queueing,
            task_start: s.task_start,
            instance_boot: s.instance_boot,
            noise: None,
        }
    }

    /// The fitted values over the defaults.
    pub fn of(f: &Fitted) -> Twin {
        let d = Twin::defaults();
        let secs = |e: &Estimate| {
            e.value()
                .filter(|v| *v > 0.0 && *v < 86_400.0)
                .map(Duration::from_secs_f64)
        };
        Twin {
            task_rps: f.task_rps.value().filter(|v| *v > 0.0).unwrap_or(d.task_rps),
            service_time: secs(&f.service_time),
            queueing: f.queueing.value().filter(|v| *v > 0.0).unwrap_or(d.queueing),
            task_start: secs(&f.task_start).unwrap_or(d.task_start),
            instance_boot: secs(&f.instance_boot).unwrap_or(d.instance_boot),
            noise: f.noise.value(),
        }
    }

    /// Sets the simulator's service model.
    pub fn apply(&self, spec: &mut Spec) {
        spec.task_rps = self.task_rps;
        spec.service_time = self.service_time;
        spec.queueing = self.queueing;
        spec.task_start = self.task_start;
        spec.instance_boot = self.instance_boot;
    }
}

#[cfg(test)]
mod tests;
