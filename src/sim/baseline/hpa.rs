//! The Kubernetes Horizontal Pod Autoscaler's algorithm with its default behaviour (and so
//! KEDA's, which drives it), on the service's newest CPU datapoint:
//!
//! - every `sync` (15 s) it computes `ratio = usage / target`, where usage is the CPU of the
//!   running tasks and tasks still starting count as idle (as the HPA counts unready pods on a
//!   scale-up); within `tolerance` (10 %) of 1 it keeps the count;
//! - otherwise it recommends `ceil(desired × ratio)`;
//! - scale-up is limited per sync to the larger of +100 % and +4 tasks;
//! - scale-down takes the highest recommendation of the last `stabilization` (300 s);
//! - with no datapoint it does nothing.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{since, BaselineAction};
use crate::sim::cluster::TaskStatus;
use crate::sim::Sim;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Settings {
    /// The CPU target (%).
    pub target: f64,
    pub tolerance: f64,
    #[serde(serialize_with = "secs")]
    pub sync: Duration,
    /// Scale-down stabilization window.
    #[serde(serialize_with = "secs")]
    pub stabilization: Duration,
    /// Scale-up per sync: at most this share more, or this many more, whichever is more.
    pub up_percent: f64,
    pub up_tasks: u32,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

impl Settings {
    /// The HPA's defaults (autoscaling/v2 behavior).
    pub fn kubernetes(target: f64) -> Self {
        Settings {
            target,
            tolerance: 0.1,
            sync: Duration::from_secs(15),
            stabilization: Duration::from_secs(300),
            up_percent: 100.0,
            up_tasks: 4,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "CPU {} %, tolerance {} %, sync {}, scale-down stabilization {}",
            self.target,
            self.tolerance * 100.0,
            humantime::format_duration(self.sync),
            humantime::format_duration(self.stabilization)
        )
    }
}

#[derive(Debug)]
pub struct Hpa {
    pub settings: Settings,
    last_sync: Option<DateTime<Utc>>,
    /// Recommendations within the stabilization window.
    recent: VecDeque<(DateTime<Utc>, u32)>,
}

impl Hpa {
    pub fn new(settings: Settings) -> Self {
        Hpa {
            settings,
            last_sync: None,
            recent: VecDeque::new(),
        }
    }

    /// The recommendation from the newest CPU datapoint, or `None` without one.
    fn recommend(&self, sim: &Sim, now: DateTime<Utc>) -> Option<(u32, f64, u32, f64)> {
        let period = if sim.spec.high_resolution.is_some() {
            20
        } else {
            60
        };
        let delay = Duration::from_secs(if period == 20 { 20 } else { 60 });
        let (_, cpu) = *super::cpu_datapoints(sim, period, delay, 3, now).last()?;
        let (desired, running) = {
            let g = sim.lock();
            (g.cluster.desired, g.cluster.count(TaskStatus::Running))
        };
        let s = &self.settings;
        let usage = cpu * f64::from(running);
        let ratio = usage / (s.target * f64::from(desired.max(1)));
        if (ratio - 1.0).abs() <= s.tolerance {
            return Some((desired, cpu, desired, ratio));
        }
        Some(((f64::from(desired) * ratio).ceil() as u32, cpu, desired, ratio))
    }

    /// One sync, when due: scales the service.
    pub fn tick(&mut self, sim: &Sim, now: DateTime<Utc>, (min, max): (u32, u32)) -> Option<BaselineAction> {
        let s = self.settings.clone();
        if !since(self.last_sync, s.sync, now) {
            return None;
        }
        self.last_sync = Some(now);
        let (rec, cpu, desired, ratio) = self.recommend(sim, now)?;
        let rec = rec.clamp(min, max);
        let window = TimeDelta::from_std(s.stabilization).unwrap_or(TimeDelta::minutes(5));
        self.recent.push_back((now, rec));
        while self.recent.front().is_some_and(|(t, _)| now - *t > window) {
            self.recent.pop_front();
        }
        let to = if rec < desired {
            // Scale-down: the highest recommendation within the window.
            self.recent
                .iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(rec)
                .min(desired)
        } else {
            let limit = (f64::from(desired) * (1.0 + s.up_percent / 100.0)).floor() as u32;
            rec.min(limit.max(desired + s.up_tasks))
        };
        if to == desired {
            return None;
        }
        let reason = format!(
            "HPA: CPU {cpu:.1} % over {} tasks, ratio {ratio:.2} against {} % (tolerance {} %) → {to}",
            desired,
            s.target,
            s.tolerance * 100.0
        );
        Some(super::apply(sim, now, (desired, to), reason))
    }
}
