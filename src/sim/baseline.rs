//! The AWS-style baseline: Application Auto Scaling target tracking as it behaves on ECS, for
//! comparisons in the same simulator.
//!
//! Two CloudWatch alarms on the metric (1-minute datapoints, read with the same publication lag
//! as everything else): the high alarm fires when 3 of 3 datapoints are above the target, the
//! low alarm when 15 of 15 are below 90 % of it. A fired alarm sets the desired count to
//! `ceil(current × value / target)` within min and max. Scale-out waits 300 s after a scale-out;
//! scale-in waits 300 s after any scaling. Missing datapoints (insufficient data): no action.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::Sim;
use crate::api::{MetricDataRequest, MetricQuery};

#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<(String, String)>,
    pub stat: String,
    pub target: f64,
    pub scale_out_datapoints: usize,
    pub scale_in_datapoints: usize,
    /// The low alarm's threshold as a share of the target.
    pub scale_in_ratio: f64,
    pub scale_out_cooldown: Duration,
    pub scale_in_cooldown: Duration,
    pub min: u32,
    pub max: u32,
}

impl Settings {
    /// Target tracking on the service's average CPU, with AWS's defaults.
    pub fn cpu(sim: &Sim, target: f64, min: u32, max: u32) -> Self {
        Settings {
            namespace: "AWS/ECS".into(),
            metric_name: "CPUUtilization".into(),
            dimensions: vec![
                ("ClusterName".into(), sim.spec.cluster.clone()),
                ("ServiceName".into(), sim.spec.service.clone()),
            ],
            stat: "Average".into(),
            target,
            scale_out_datapoints: 3,
            scale_in_datapoints: 15,
            scale_in_ratio: 0.9,
            scale_out_cooldown: Duration::from_secs(300),
            scale_in_cooldown: Duration::from_secs(300),
            min,
            max,
        }
    }
}

/// What the baseline did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BaselineAction {
    pub at: DateTime<Utc>,
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

pub struct Baseline {
    pub settings: Settings,
    last_out: Option<DateTime<Utc>>,
    last_any: Option<DateTime<Utc>>,
    /// The minute last evaluated (alarms evaluate once a minute).
    evaluated: Option<DateTime<Utc>>,
}

impl Baseline {
    pub fn new(settings: Settings) -> Self {
        Baseline {
            settings,
            last_out: None,
            last_any: None,
            evaluated: None,
        }
    }

    /// Evaluates the alarms (once per minute) and scales the service.
    pub async fn tick(&mut self, sim: &Sim, now: DateTime<Utc>) -> Option<BaselineAction> {
        let minute = super::floor_minute(now);
        if self.evaluated == Some(minute) {
            return None;
        }
        self.evaluated = Some(minute);
        let s = &self.settings;
        let n = s.scale_out_datapoints.max(s.scale_in_datapoints);
        let request = MetricDataRequest {
            queries: vec![MetricQuery {
                id: "m".into(),
                namespace: s.namespace.clone(),
                metric_name: s.metric_name.clone(),
                dimensions: s.dimensions.clone(),
                stat: s.stat.clone(),
                period_secs: 60,
                unit: None,
            }],
            start: minute - TimeDelta::minutes(n as i64 + 5),
            end: minute,
        };
        let points = {
            let g = sim.lock();
            g.store.query(&request, now).pop()?.points
        };
        // The alarm's evaluation periods are the last minutes that have been published: the
        // newest datapoint, and those right before it with no gap.
        let newest = points.last()?.0;
        let recent = |k: usize| -> Option<Vec<f64>> {
            let want: Vec<DateTime<Utc>> = (0..k).map(|i| newest - TimeDelta::minutes(i as i64)).collect();
            want.iter()
                .map(|t| points.iter().find(|(pt, _)| pt == t).map(|(_, v)| *v))
                .collect()
        };
        let current = sim.lock().cluster.desired;
        let value = points.last()?.1;
        let proportional = ((f64::from(current) * value / s.target).ceil() as u32).clamp(s.min, s.max);
        let since = |t: Option<DateTime<Utc>>, d: Duration| {
            t.is_none_or(|t| now - t >= TimeDelta::from_std(d).unwrap_or_default())
        };
        let high = recent(s.scale_out_datapoints).is_some_and(|v| v.iter().all(|x| *x > s.target));
        let low =
            recent(s.scale_in_datapoints).is_some_and(|v| v.iter().all(|x| *x < s.target * s.scale_in_ratio));
        let (to, reason) = if high && proportional > current && since(self.last_out, s.scale_out_cooldown) {
            (
                proportional,
                format!(
                    "high alarm: {} > {} for {}/{} datapoints → ceil({current} × {value:.1}/{}) = {proportional}",
                    s.metric_name, s.target, s.scale_out_datapoints, s.scale_out_datapoints, s.target
                ),
            )
        } else if low && proportional < current && since(self.last_any, s.scale_in_cooldown) {
            (
                proportional,
                format!(
                    "low alarm: {} < {:.0} for {}/{} datapoints → ceil({current} × {value:.1}/{}) = {proportional}",
                    s.metric_name,
                    s.target * s.scale_in_ratio,
                    s.scale_in_datapoints,
                    s.scale_in_datapoints,
                    s.target
                ),
            )
        } else {
            return None;
        };
        if to > current {
            self.last_out = Some(now);
        }
        self.last_any = Some(now);
        sim.lock().cluster.set_desired(to);
        Some(BaselineAction {
            at: now,
            from: current,
            to,
            reason,
        })
    }
}
