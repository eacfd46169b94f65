//! Application Auto Scaling predictive scaling for an ECS service, beside high-resolution target
//! tracking, as AWS documents it ("How Application Auto Scaling predictive scaling works"):
//!
//! - it needs at least 24 hours of the load metric, and analyses up to the past 14 days;
//! - it forecasts capacity in hourly intervals for the next 48 hours, and updates the forecast
//!   every 6 hours;
//! - in forecast-and-scale mode it raises capacity for an hour `SchedulingBufferTime` (default
//!   300 s) before the hour starts; it never scales in on a forecast;
//! - with target tracking beside it, the larger desired count wins.
//!
//! The load metric is ALB `RequestCount` (the `ALBRequestCount` metric pair), and the capacity
//! an hour needs is its forecast load per minute over the load one task carries at the target
//! (`target` % of what a task serves at full CPU).
//!
//! AWS does not publish its forecasting model. Ours: each hour's load is the mean of the same
//! hour of the day over the days in the window, and once a week of history exists, over the
//! days of the same kind only (weekdays, or Saturdays and Sundays). It is a seasonal model of
//! the kind AWS describes (daily and weekly patterns), not AWS's own.

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};

use crate::sim::Sim;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Settings {
    /// Requests a minute one task carries at the target.
    pub per_task: f64,
    #[serde(serialize_with = "secs")]
    pub history: Duration,
    #[serde(serialize_with = "secs")]
    pub min_history: Duration,
    #[serde(serialize_with = "secs")]
    pub refresh: Duration,
    #[serde(serialize_with = "secs")]
    pub buffer: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

impl Settings {
    /// AWS's defaults, for a CPU target (%) on tasks serving `task_rps` at full CPU.
    pub fn aws(target: f64, task_rps: f64) -> Self {
        Settings {
            per_task: target / 100.0 * task_rps * 60.0,
            history: Duration::from_secs(14 * 86_400),
            min_history: Duration::from_secs(86_400),
            refresh: Duration::from_secs(6 * 3600),
            buffer: Duration::from_secs(300),
        }
    }
}

/// The forecast in force: capacity per hour (start of the hour → tasks).
#[derive(Debug)]
pub struct Forecaster {
    pub settings: Settings,
    made: Option<DateTime<Utc>>,
    hours: Vec<(DateTime<Utc>, u32)>,
}

fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(3600), 0).unwrap_or(t)
}

fn weekend(t: DateTime<Utc>) -> bool {
    t.weekday().num_days_from_monday() >= 5
}

impl Forecaster {
    pub fn new(settings: Settings) -> Self {
        Forecaster {
            settings,
            made: None,
            hours: Vec::new(),
        }
    }

    /// The load metric's per-minute values over the window before `now`.
    fn history(sim: &Sim, window: Duration, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, f64)> {
        let dims = vec![("TargetGroup".into(), sim.spec.target_group())];
        let start = now - TimeDelta::from_std(window).unwrap_or(TimeDelta::days(14));
        super::query(
            sim,
            ("AWS/ApplicationELB", "RequestCount", dims),
            ("Sum", 60),
            (start, now),
            now,
        )
    }

    /// Makes a forecast of the next 48 hours from the history (none with less than
    /// `min_history` of it).
    fn forecast(&mut self, sim: &Sim, now: DateTime<Utc>) {
        self.made = Some(now);
        self.hours.clear();
        let points = Self::history(sim, self.settings.history, now);
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return;
        };
        if last.0 - first.0 < TimeDelta::from_std(self.settings.min_history).unwrap_or(TimeDelta::days(1)) {
            return;
        }
        let weekly = last.0 - first.0 >= TimeDelta::days(7);
        // Per hour of the day (and kind of day once weekly): the sum and count of the minutes.
        let mut sums = [[(0.0, 0u32); 24]; 2];
        for (t, v) in &points {
            let kind = usize::from(weekly && weekend(*t));
            let e = &mut sums[kind][t.hour() as usize];
            e.0 += v;
            e.1 += 1;
        }
        let start = hour_of(now);
        for h in 0..48 {
            let at = start + TimeDelta::hours(h);
            let kind = usize::from(weekly && weekend(at));
            let (sum, n) = sums[kind][at.hour() as usize];
            if n == 0 {
                continue;
            }
            let load = sum / f64::from(n);
            self.hours
                .push((at, (load / self.settings.per_task.max(1e-9)).ceil() as u32));
        }
    }

    /// The capacity the forecast asks for at `now` (the hour starting within the buffer), once
    /// there is a forecast; remade every `refresh`.
    pub fn floor(&mut self, sim: &Sim, now: DateTime<Utc>) -> Option<u32> {
        let refresh = TimeDelta::from_std(self.settings.refresh).unwrap_or(TimeDelta::hours(6));
        if self.made.is_none_or(|m| now - m >= refresh) {
            self.forecast(sim, now);
        }
        let ahead = now + TimeDelta::from_std(self.settings.buffer).unwrap_or_default();
        let hour = hour_of(ahead);
        // The hour about to start (within the buffer) raises capacity; the one running keeps it.
        [hour_of(now), hour]
            .iter()
            .filter_map(|h| self.hours.iter().find(|(at, _)| at == h).map(|(_, n)| *n))
            .max()
    }
}
