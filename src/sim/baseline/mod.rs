//! The peers ecscale is measured against, in the same simulator: how AWS and Kubernetes scale a
//! service, each with its own defaults, any of them overridable, and its CPU target the knob a
//! frontier sweeps.
//!
//! - `aws`: Application Auto Scaling target tracking on 1-minute CPU ([`alarms`]);
//! - `aws-hires`: the same on ECS's 20-second high-resolution CPU ([`alarms`]);
//! - `aws-predictive`: AWS predictive scaling beside `aws-hires`, the larger count winning
//!   ([`predictive`]);
//! - `hpa`: the Kubernetes HPA's algorithm with its default behaviour ([`hpa`]).
//!
//! A peer is written `KIND` or `KIND:key=value,...` (`aws-hires:target=55,cooldown-in=120s`).
//! Instances are sized by ecscale's capacity stage for every peer, as for ecscale.

pub mod alarms;
pub mod hpa;
pub mod predictive;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{MetricDataRequest, MetricQuery};
use crate::sim::Sim;

/// What a peer did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BaselineAction {
    pub at: DateTime<Utc>,
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

/// Whether `d` has passed since `t` (or nothing happened yet).
pub(crate) fn since(t: Option<DateTime<Utc>>, d: Duration, now: DateTime<Utc>) -> bool {
    t.is_none_or(|t| now - t >= TimeDelta::from_std(d).unwrap_or_default())
}

/// One statistic of a metric from the simulated CloudWatch over `[start, end)`, as
/// GetMetricData answers it at `now`.
pub(crate) fn query(
    sim: &Sim,
    (namespace, name, dimensions): (&str, &str, Vec<(String, String)>),
    (stat, period_secs): (&str, u32),
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, f64)> {
    let request = MetricDataRequest {
        via: None,
        queries: vec![MetricQuery {
            id: "q".into(),
            namespace: namespace.into(),
            metric_name: name.into(),
            dimensions,
            stat: stat.into(),
            period_secs,
            unit: None,
        }],
        start,
        end,
    };
    let g = sim.lock();
    g.store
        .query(&request, now)
        .pop()
        .map(|r| r.points)
        .unwrap_or_default()
}

/// The service's average CPU in periods of `period_secs`, the newest `n`, each used once its
/// period ended at least `delay` before `now`.
pub(crate) fn cpu_datapoints(
    sim: &Sim,
    period_secs: u32,
    delay: Duration,
    n: usize,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, f64)> {
    let period = i64::from(period_secs.max(1));
    let usable = now - TimeDelta::from_std(delay).unwrap_or_default();
    let s = usable.timestamp();
    let end = DateTime::from_timestamp(s - s.rem_euclid(period), 0).unwrap_or(usable);
    let dims = vec![
        ("ClusterName".into(), sim.spec.cluster.clone()),
        ("ServiceName".into(), sim.spec.service.clone()),
    ];
    let start = end - TimeDelta::seconds(period * n as i64);
    query(
        sim,
        ("AWS/ECS", "CPUUtilization", dims),
        ("Average", period_secs),
        (start, end),
        now,
    )
}

/// Sets the service's desired count from `from` to `to`, and says why.
pub(crate) fn apply(sim: &Sim, now: DateTime<Utc>, (from, to): (u32, u32), reason: String) -> BaselineAction {
    sim.lock().cluster.set_desired(to);
    BaselineAction {
        at: now,
        from,
        to,
        reason,
    }
}

/// The kinds of peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Aws,
    AwsHires,
    AwsPredictive,
    Hpa,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Aws, Kind::AwsHires, Kind::AwsPredictive, Kind::Hpa];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Aws => "aws",
            Kind::AwsHires => "aws-hires",
            Kind::AwsPredictive => "aws-predictive",
            Kind::Hpa => "hpa",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        const ALARMS: &[&str] = &["target", "out", "in", "cooldown-out", "cooldown-in", "delay"];
        const PREDICTIVE: &[&str] = &[
            "target",
            "out",
            "in",
            "cooldown-out",
            "cooldown-in",
            "delay",
            "buffer",
            "history",
            "min-history",
            "refresh",
        ];
        const HPA: &[&str] = &[
            "target",
            "tolerance",
            "sync",
            "stabilization",
            "up-percent",
            "up-tasks",
        ];
        match self {
            Kind::Aws | Kind::AwsHires => ALARMS,
            Kind::AwsPredictive => PREDICTIVE,
            Kind::Hpa => HPA,
        }
    }
}

/// A peer and its settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Peer {
    Aws(alarms::Settings),
    AwsHires(alarms::Settings),
    AwsPredictive {
        tracking: alarms::Settings,
        forecast: predictive::Settings,
    },
    Hpa(hpa::Settings),
}

impl Peer {
    /// `kind` with its defaults at this CPU target, for tasks serving `task_rps` at full CPU.
    pub fn defaults(kind: Kind, target: f64, task_rps: f64) -> Peer {
        match kind {
            Kind::Aws => Peer::Aws(alarms::Settings::aws(target)),
            Kind::AwsHires => Peer::AwsHires(alarms::Settings::aws_hires(target)),
            Kind::AwsPredictive => Peer::AwsPredictive {
                tracking: alarms::Settings::aws_hires(target),
                forecast: predictive::Settings::aws(target, task_rps),
            },
            Kind::Hpa => Peer::Hpa(hpa::Settings::kubernetes(target)),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Peer::Aws(_) => Kind::Aws,
            Peer::AwsHires(_) => Kind::AwsHires,
            Peer::AwsPredictive { .. } => Kind::AwsPredictive,
            Peer::Hpa(_) => Kind::Hpa,
        }
    }

    /// The CPU target (%).
    pub fn target(&self) -> f64 {
        match self {
            Peer::Aws(s) | Peer::AwsHires(s) | Peer::AwsPredictive { tracking: s, .. } => s.target,
            Peer::Hpa(s) => s.target,
        }
    }

    /// This peer at another CPU target (the predictive load per task follows it).
    pub fn with_target(&self, target: f64) -> Peer {
        let mut p = self.clone();
        match &mut p {
            Peer::Aws(s) | Peer::AwsHires(s) => s.target = target,
            Peer::AwsPredictive { tracking, forecast } => {
                forecast.per_task *= target / tracking.target.max(1e-9);
                tracking.target = target;
            }
            Peer::Hpa(s) => s.target = target,
        }
        p
    }

    /// `aws-hires 60 %`.
    pub fn label(&self) -> String {
        format!("{} {} %", self.kind().name(), self.target())
    }

    /// One line: the peer and its settings.
    pub fn describe(&self) -> String {
        match self {
            Peer::Aws(s) => format!("AWS target tracking, 1-minute CPU: {}", s.describe()),
            Peer::AwsHires(s) => format!("AWS target tracking, high-resolution CPU: {}", s.describe()),
            Peer::AwsPredictive { tracking, forecast } => format!(
                "AWS predictive scaling ({} requests/min per task, {} of history, buffer {}) beside target tracking, high-resolution CPU: {}",
                crate::eval_io::num(forecast.per_task),
                humantime::format_duration(forecast.history),
                humantime::format_duration(forecast.buffer),
                tracking.describe()
            ),
            Peer::Hpa(s) => format!("Kubernetes HPA: {}", s.describe()),
        }
    }

    /// Reads `KIND[:key=value,...]`, every value checked; the target defaults to `target`.
    pub fn parse(text: &str, target: f64, task_rps: f64) -> Result<Peer, String> {
        let (name, rest) = text.split_once(':').unwrap_or((text, ""));
        let kind = Kind::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            format!("`{name}` is not a peer: one of {}", names.join(", "))
        })?;
        let mut peer = Peer::defaults(kind, target, task_rps);
        for pair in rest.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: settings are key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            if !kind.keys().contains(&key) {
                return Err(format!(
                    "`{key}` is not a setting of {}: {}",
                    kind.name(),
                    kind.keys().join(", ")
                ));
            }
            peer.set(key, value).map_err(|e| format!("{key}={value}: {e}"))?;
        }
        peer.check()?;
        Ok(peer)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let number = || value.parse::<f64>().map_err(|_| "not a number".to_string());
        let count = || {
            value
                .parse::<usize>()
                .map_err(|_| "not a whole number".to_string())
        };
        let duration = || humantime::parse_duration(value).map_err(|e| e.to_string());
        if key == "target" {
            *self = self.with_target(number()?);
            return Ok(());
        }
        match self {
            Peer::Aws(s) | Peer::AwsHires(s) => return set_alarms(s, key, count, duration),
            Peer::AwsPredictive { tracking, forecast } => match key {
                "buffer" => forecast.buffer = duration()?,
                "history" => forecast.history = duration()?,
                "min-history" => forecast.min_history = duration()?,
                "refresh" => forecast.refresh = duration()?,
                _ => return set_alarms(tracking, key, count, duration),
            },
            Peer::Hpa(s) => match key {
                "tolerance" => s.tolerance = number()?,
                "sync" => s.sync = duration()?,
                "stabilization" => s.stabilization = duration()?,
                "up-percent" => s.up_percent = number()?,
                "up-tasks" => s.up_tasks = u32::try_from(count()?).map_err(|e| e.to_string())?,
                _ => return Err("unknown".into()),
            },
        }
        Ok(())
    }

    /// Values a peer cannot run with.
    fn check(&self) -> Result<(), String> {
        let t = self.target();
        if !(t > 0.0 && t < 100.0) {
            return Err(format!("target {t}: a CPU percentage between 0 and 100"));
        }
        match self {
            Peer::Aws(s) | Peer::AwsHires(s) | Peer::AwsPredictive { tracking: s, .. } => {
                if s.scale_out_datapoints == 0 || s.scale_in_datapoints == 0 {
                    return Err("out and in: at least 1 datapoint".into());
                }
                if let Peer::AwsPredictive { forecast, .. } = self {
                    if forecast.buffer >= Duration::from_secs(3600) {
                        return Err("buffer: under an hour (the forecast's interval)".into());
                    }
                    if forecast.min_history > forecast.history {
                        return Err("min-history: at most history".into());
                    }
                }
                Ok(())
            }
            Peer::Hpa(s) => {
                if !(0.0..1.0).contains(&s.tolerance) {
                    return Err(format!("tolerance {}: a fraction from 0 to below 1", s.tolerance));
                }
                if s.sync.is_zero() {
                    return Err("sync: longer than 0".into());
                }
                Ok(())
            }
        }
    }
}

fn set_alarms(
    s: &mut alarms::Settings,
    key: &str,
    count: impl Fn() -> Result<usize, String>,
    duration: impl Fn() -> Result<Duration, String>,
) -> Result<(), String> {
    match key {
        "out" => s.scale_out_datapoints = count()?,
        "in" => s.scale_in_datapoints = count()?,
        "cooldown-out" => s.scale_out_cooldown = duration()?,
        "cooldown-in" => s.scale_in_cooldown = duration()?,
        "delay" => s.delay = duration()?,
        _ => return Err("unknown".into()),
    }
    Ok(())
}

/// A peer scaling one simulated service.
#[derive(Debug)]
pub enum Baseline {
    Alarms(alarms::TargetTracking),
    Predictive {
        tracking: alarms::TargetTracking,
        forecast: predictive::Forecaster,
    },
    Hpa(hpa::Hpa),
}

impl Baseline {
    pub fn new(peer: &Peer) -> Baseline {
        match peer {
            Peer::Aws(s) | Peer::AwsHires(s) => Baseline::Alarms(alarms::TargetTracking::new(s.clone())),
            Peer::AwsPredictive { tracking, forecast } => Baseline::Predictive {
                tracking: alarms::TargetTracking::new(tracking.clone()),
                forecast: predictive::Forecaster::new(forecast.clone()),
            },
            Peer::Hpa(s) => Baseline::Hpa(hpa::Hpa::new(s.clone())),
        }
    }

    /// What the peer does at this tick, within the service's bounds.
    pub fn tick(&mut self, sim: &Sim, now: DateTime<Utc>, bounds: (u32, u32)) -> Option<BaselineAction> {
        match self {
            Baseline::Alarms(t) => t.tick(sim, now, bounds),
            Baseline::Hpa(h) => h.tick(sim, now, bounds),
            Baseline::Predictive { tracking, forecast } => {
                let current = sim.lock().cluster.desired;
                let floor = forecast.floor(sim, now).map(|f| f.clamp(bounds.0, bounds.1));
                let tracked = tracking.evaluate(sim, now, current, bounds);
                // The larger of the two; a scale-in never goes under the forecast's capacity.
                let (to, reason) = match (tracked, floor) {
                    (Some((to, why)), Some(f)) if f > to => {
                        (f, format!("{why}; the forecast's capacity for the hour is {f}"))
                    }
                    (Some(t), _) => t,
                    (None, Some(f)) if f > current => (
                        f,
                        format!("predictive: the forecast's capacity for the hour is {f}"),
                    ),
                    _ => return None,
                };
                if to == current {
                    return None;
                }
                tracking.scaled(now, to > current);
                Some(apply(sim, now, (current, to), reason))
            }
        }
    }
}

#[cfg(test)]
mod tests;
