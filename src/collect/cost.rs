//! What collection costs in CloudWatch a month. GetMetricData is billed per metric requested
//! ($0.01 per 1,000, [`crate::usage`]), and a pass asks only for the series with a period due
//! ([`super::recent`]): a series is requested once a period, or once a tick when ticks come
//! further apart than its period; a forecast's long window once per refresh. Metrics read from
//! Prometheus cost nothing here.

use std::collections::BTreeMap;
use std::time::Duration;

use super::HistoryNeed;
use crate::config::{Config, MetricSpec};
use crate::usage::USD_PER_METRIC_REQUESTED;

/// A 30-day month.
pub const MONTH: Duration = Duration::from_secs(30 * 86_400);

/// Series read at one rhythm: how many, how often, and the requests that makes a month.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// `service metrics`, `capacity metrics`, `group metrics`, `forecast history`.
    pub what: &'static str,
    pub series: usize,
    pub every: Duration,
    pub requests: f64,
}

/// A month of collection's CloudWatch requests, with the arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthlyCost {
    /// Services named in the config (discovered ones are not counted: see `per_service`).
    pub services: usize,
    pub terms: Vec<Term>,
    pub requests: f64,
    pub usd: f64,
}

impl MonthlyCost {
    /// The services' share, per service (the services' own metrics and forecasts only).
    pub fn per_service_usd(&self) -> Option<f64> {
        let own: f64 = self
            .terms
            .iter()
            .filter(|t| matches!(t.what, "service metrics" | "forecast history"))
            .map(|t| t.requests)
            .sum();
        (self.services > 0).then(|| own * USD_PER_METRIC_REQUESTED / self.services as f64)
    }
}

/// The month's requests of `config` ticking every `tick`, with the policies' `history` needs.
pub fn monthly(config: &Config, history: &[HistoryNeed], tick: Duration) -> MonthlyCost {
    let mut by: BTreeMap<(&'static str, Duration), usize> = BTreeMap::new();
    let mut add = |what: &'static str, metrics: &[MetricSpec]| {
        for m in metrics.iter().filter(|m| m.prometheus.is_none()) {
            *by.entry((what, m.period.max(tick))).or_default() += 1;
        }
    };
    let mut services = 0;
    for c in &config.clusters {
        for s in &c.services {
            services += 1;
            add(
                "service metrics",
                &c.metrics_of(Some(s), &config.collect, s.target_group.is_some()),
            );
        }
    }
    for _ in &config.capacity {
        add(
            "capacity metrics",
            &crate::config::capacity_metrics(&config.collect),
        );
    }
    for g in &config.groups {
        add("group metrics", &g.metrics);
    }
    for n in history {
        *by.entry(("forecast history", n.refresh.max(tick))).or_default() += 1;
    }
    let terms: Vec<Term> = by
        .into_iter()
        .map(|((what, every), series)| Term {
            what,
            series,
            every,
            requests: series as f64 * MONTH.as_secs_f64() / every.as_secs_f64().max(1.0),
        })
        .collect();
    let requests = terms.iter().map(|t| t.requests).sum::<f64>();
    MonthlyCost {
        services,
        terms,
        requests,
        usd: requests * USD_PER_METRIC_REQUESTED,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Two services with CPU and memory at 20 s (high resolution) and a target group's two
    /// request metrics at 60 s, on a 15 s tick: each series a period, the tick never faster.
    #[test]
    fn a_month_is_each_series_once_a_period_at_a_cent_per_thousand() {
        let text = "schedule: {interval: 15s}\ncollect: {high_resolution: true}\nclusters:\n  - name: a\n    services:\n      - {name: web, target_group: arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web/1}\n      - {name: api, target_group: arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/api/2}\n";
        let config = crate::config::load_str(text, "c.yaml", Path::new("/"), &Default::default()).unwrap();
        let c = monthly(&config, &[], Duration::from_secs(15));
        let at = |secs: u64| {
            c.terms
                .iter()
                .find(|t| t.every == Duration::from_secs(secs))
                .unwrap()
        };
        // cpu and memory of two services every 20 s: 4 × 129,600
        assert_eq!(at(20).series, 4);
        assert_eq!(at(20).requests, 4.0 * 129_600.0);
        // RequestCount and RequestCountPerTarget every 60 s: 4 × 43,200
        assert_eq!(at(60).requests, 4.0 * 43_200.0);
        assert!((c.usd - (691_200.0 * 0.01 / 1000.0)).abs() < 1e-9, "{c:?}");
        assert!((c.per_service_usd().unwrap() - 3.456).abs() < 1e-9);
        // A tick slower than the periods: once a tick.
        let slow = monthly(&config, &[], Duration::from_secs(300));
        assert_eq!(slow.requests, 8.0 * 8_640.0);
    }
}
