//! Application Auto Scaling target tracking as it behaves on an ECS service: two CloudWatch
//! alarms on the service's average CPU.
//!
//! - The high alarm fires when `out` of `out` datapoints are above the target, the low alarm
//!   when `in` of `in` are below 90 % of it (AWS's target tracking alarms: 3 of 3 out, 15 of 15
//!   in, at the metric's period).
//! - A fired alarm sets the desired count to `ceil(current × value / target)` within min and
//!   max. Scale-out waits `cooldown_out` after a scale-out; scale-in waits `cooldown_in` after
//!   any scaling (300 s each by default).
//! - Missing datapoints (insufficient data): no action.
//! - Alarms are evaluated once per period, on the datapoints whose period ended at least `delay`
//!   ago (the metric's publication delay).
//!
//! The two configurations AWS offers for ECS services:
//! - `aws`: `ECSServiceAverageCPUUtilization`, 1-minute datapoints. AWS measured 363 s from a
//!   load increase to the scale-out trigger (containers-roadmap#2113). From a load rising
//!   mid-minute, three breaching datapoints take about 150 s; the rest is the metric's
//!   publication and the alarm's evaluation, so `delay` is 210 s.
//! - `aws-hires`: `ECSServiceAverageCPUUtilizationHighResolution` (since 2026-06), 20-second
//!   datapoints ("Faster auto scaling with high-resolution metrics", Amazon ECS Developer
//!   Guide). The guide gives the period, not the alarms' datapoints; AWS's measured 86 s to the
//!   trigger is three breaching 20-second datapoints (about 50 s from a mid-period rise) and
//!   about 30 s of publication, so the alarms keep their 3-of-3 and 15-of-15 datapoints at the
//!   20-second period, and `delay` is 30 s.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{since, BaselineAction};
use crate::sim::Sim;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Settings {
    /// The CPU target (%).
    pub target: f64,
    /// The datapoints' period (s): 60, or 20 for ECS's high-resolution metrics.
    pub period_secs: u32,
    pub scale_out_datapoints: usize,
    pub scale_in_datapoints: usize,
    /// The low alarm's threshold as a share of the target.
    pub scale_in_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub scale_out_cooldown: Duration,
    #[serde(with = "humantime_serde")]
    pub scale_in_cooldown: Duration,
    /// How long after its period ends a datapoint is first used.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
}

/// Durations as humantime strings in JSON.
mod humantime_serde {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl Settings {
    /// `aws`: AWS's default, 1-minute datapoints.
    pub fn aws(target: f64) -> Self {
        Settings {
            target,
            period_secs: 60,
            scale_out_datapoints: 3,
            scale_in_datapoints: 15,
            scale_in_ratio: 0.9,
            scale_out_cooldown: Duration::from_secs(300),
            scale_in_cooldown: Duration::from_secs(300),
            delay: Duration::from_secs(210),
        }
    }

    /// `aws-hires`: the high-resolution metric, 20-second datapoints.
    pub fn aws_hires(target: f64) -> Self {
        Settings {
            period_secs: 20,
            delay: Duration::from_secs(30),
            ..Settings::aws(target)
        }
    }

    /// One line: what the alarms are.
    pub fn describe(&self) -> String {
        format!(
            "CPU {} %, {}/{} datapoints of {} s out, {}/{} in, cooldowns {} / {}",
            self.target,
            self.scale_out_datapoints,
            self.scale_out_datapoints,
            self.period_secs,
            self.scale_in_datapoints,
            self.scale_in_datapoints,
            humantime::format_duration(self.scale_out_cooldown),
            humantime::format_duration(self.scale_in_cooldown)
        )
    }
}

/// Target tracking on one service: its settings and clocks.
#[derive(Debug)]
pub struct TargetTracking {
    pub settings: Settings,
    last_out: Option<DateTime<Utc>>,
    last_any: Option<DateTime<Utc>>,
    /// The period last evaluated (alarms evaluate once a period).
    evaluated: Option<i64>,
}

impl TargetTracking {
    pub fn new(settings: Settings) -> Self {
        TargetTracking {
            settings,
            last_out: None,
            last_any: None,
            evaluated: None,
        }
    }

    /// Records a change made by another policy beside this one (it starts the cooldowns).
    pub fn scaled(&mut self, now: DateTime<Utc>, out: bool) {
        if out {
            self.last_out = Some(now);
        }
        self.last_any = Some(now);
    }

    /// Evaluates the alarms (once per period): the count they set, with the reason, if one
    /// fired.
    pub fn evaluate(
        &mut self,
        sim: &Sim,
        now: DateTime<Utc>,
        current: u32,
        bounds: (u32, u32),
    ) -> Option<(u32, String)> {
        let s = &self.settings;
        let period = i64::from(s.period_secs.max(1));
        let slot = now.timestamp().div_euclid(period);
        if self.evaluated == Some(slot) {
            return None;
        }
        self.evaluated = Some(slot);
        let n = s.scale_out_datapoints.max(s.scale_in_datapoints);
        let points = super::cpu_datapoints(sim, s.period_secs, s.delay, n + 2, now);
        // The alarm's evaluation periods are the newest datapoints, with no gap between them.
        let newest = points.last()?.0;
        let recent = |k: usize| -> Option<Vec<f64>> {
            (0..k)
                .map(|i| {
                    let t = newest - TimeDelta::seconds(period * i as i64);
                    points.iter().find(|(pt, _)| *pt == t).map(|(_, v)| *v)
                })
                .collect()
        };
        let value = points.last()?.1;
        let proportional = ((f64::from(current) * value / s.target).ceil() as u32).clamp(bounds.0, bounds.1);
        let high = recent(s.scale_out_datapoints).is_some_and(|v| v.iter().all(|x| *x > s.target));
        let low =
            recent(s.scale_in_datapoints).is_some_and(|v| v.iter().all(|x| *x < s.target * s.scale_in_ratio));
        if high && proportional > current && since(self.last_out, s.scale_out_cooldown, now) {
            let reason = format!(
                "high alarm: CPU > {} for {}/{} datapoints of {} s → ceil({current} × {value:.1}/{}) = {proportional}",
                s.target, s.scale_out_datapoints, s.scale_out_datapoints, s.period_secs, s.target
            );
            return Some((proportional, reason));
        }
        if low && proportional < current && since(self.last_any, s.scale_in_cooldown, now) {
            let reason = format!(
                "low alarm: CPU < {:.0} for {}/{} datapoints of {} s → ceil({current} × {value:.1}/{}) = {proportional}",
                s.target * s.scale_in_ratio,
                s.scale_in_datapoints,
                s.scale_in_datapoints,
                s.period_secs,
                s.target
            );
            return Some((proportional, reason));
        }
        None
    }

    /// Evaluates and scales the service.
    pub fn tick(&mut self, sim: &Sim, now: DateTime<Utc>, bounds: (u32, u32)) -> Option<BaselineAction> {
        let current = sim.lock().cluster.desired;
        let (to, reason) = self.evaluate(sim, now, current, bounds)?;
        self.scaled(now, to > current);
        Some(super::apply(sim, now, (current, to), reason))
    }
}
