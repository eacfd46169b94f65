//! "What is it doing right now": the worker's `GET /status` (JSON) after every tick, and
//! `ecscale status`, which reads a running worker's `/status`, or the state backend when no
//! worker answers.

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::state::{LastAction, WorkerState};
use crate::evaluate::TargetState;
use crate::model::Decision;
use crate::policy::TargetPolicy;

/// The worker as of its last tick (or as its state has it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Where this came from: `worker at http://…/status`, or `state file …`.
    #[serde(default)]
    pub source: String,
    pub leader: bool,
    pub last_tick: Option<DateTime<Utc>>,
    pub tick_ms: Option<f64>,
    pub problems: Vec<String>,
    pub targets: Vec<TargetStatus>,
    /// The files in use and the last reload (a running worker only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadStatus>,
    /// What CloudWatch has cost since the worker's first tick, as a month (a running worker
    /// only, from its second tick).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudwatch: Option<CloudWatchSpend>,
}

/// CloudWatch's GetMetricData spend measured by a running worker, as a month at that rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudWatchSpend {
    pub since: DateTime<Utc>,
    pub metrics_requested: u64,
    pub usd_per_month: f64,
    /// The services collected in the last pass.
    pub services: usize,
    /// All of the worker's requests (capacity and group metrics included) ÷ `services`.
    pub usd_per_service_month: Option<f64>,
    /// How the figures were worked out.
    pub arithmetic: String,
}

impl CloudWatchSpend {
    /// The spend as a document of the metrics stream at `at` (`kind: cloudwatch_spend`), for
    /// the dashboard's cost per service.
    pub fn doc(&self, at: DateTime<Utc>) -> crate::ship::docs::Doc {
        crate::ship::docs::Doc::new(
            crate::ship::Stream::Metrics,
            format!("cloudwatch_spend:{}", at.timestamp_millis()),
            at,
            serde_json::json!({
                "kind": "cloudwatch_spend",
                "services": self.services,
                "cloudwatch_metrics_requested": self.metrics_requested,
                "cloudwatch_usd_month": self.usd_per_month,
                "cloudwatch_usd_per_service_month": self.usd_per_service_month,
            }),
        )
    }
}

/// The spend of `requested` metrics between `since` and `now` over `services` services; `None`
/// before any time has passed.
pub fn spend(
    requested: u64,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    services: usize,
) -> Option<CloudWatchSpend> {
    use crate::usage::USD_PER_METRIC_REQUESTED;
    let elapsed = (now - since).to_std().ok().filter(|d| !d.is_zero())?;
    let month = crate::collect::cost::MONTH.as_secs_f64();
    let per_month = requested as f64 * month / elapsed.as_secs_f64();
    let usd = per_month * USD_PER_METRIC_REQUESTED;
    let per_service = (services > 0).then(|| usd / services as f64);
    let took = humantime::format_duration(elapsed);
    let n = crate::format::count(requested);
    let mut arithmetic = format!(
        "{n} metrics requested in {took}; {n} × 30 days ÷ {took} = {} a month; × $0.01 per 1,000 = ${usd:.2} a month",
        crate::format::count(per_month.round() as u64),
    );
    if let Some(p) = per_service {
        let _ = write!(arithmetic, "; ÷ {services} services = ${p:.4} per service");
    }
    Some(CloudWatchSpend {
        since,
        metrics_requested: requested,
        usd_per_month: usd,
        services,
        usd_per_service_month: per_service,
        arithmetic,
    })
}

/// The config and policy files a worker runs, and how its last reload went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// When the files in use were read.
    pub loaded_at: Option<DateTime<Utc>>,
    pub files: Vec<String>,
    /// The last reload: when, what asked for it (`sighup`, `http`, `watch`), and its result
    /// (`ok`, `unchanged`, `failed`).
    pub last_at: Option<DateTime<Utc>>,
    pub last_trigger: Option<String>,
    pub last_result: Option<String>,
    /// While the last reload failed: its mistakes (file:line: …). The files in use are those
    /// loaded at `loaded_at`.
    pub mistakes: Vec<String>,
    /// Targets kept after their policy file vanished, and until when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphaned: Vec<String>,
}

/// One target: its counts, the last decision, and the clocks that hold it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target: String,
    pub current: Option<u32>,
    pub desired: Option<u32>,
    pub running: Option<u32>,
    pub action: Option<String>,
    pub reason: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// What became of the decision: `updated`, `unchanged`, `dry_run`, `refused`, `failed`.
    pub applied: Option<String>,
    pub last_action: Option<LastAction>,
    /// No scale-out before this.
    pub scale_out_cooldown_until: Option<DateTime<Utc>>,
    /// No scale-in before this.
    pub scale_in_cooldown_until: Option<DateTime<Utc>>,
    /// Scale-in goes no lower than the window's highest recommendation until this.
    pub stabilization_until: Option<DateTime<Utc>>,
    /// Scheduled windows in force, as their rules say.
    pub windows: Vec<String>,
}

fn after(t: Option<DateTime<Utc>>, d: std::time::Duration, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let until = t? + TimeDelta::from_std(d).ok()?;
    (until > now).then_some(until)
}

/// The cooldown and stabilization clocks of a target still running at `now`.
fn clocks(p: &TargetPolicy, s: &TargetState, now: DateTime<Utc>, t: &mut TargetStatus) {
    t.scale_out_cooldown_until = after(s.last_scale_out, p.cooldown.scale_out, now);
    t.scale_in_cooldown_until = after(s.last_scale_in.max(s.last_scale_out), p.cooldown.scale_in, now);
    // The floor is the highest recommendation still inside the window: it holds until that
    // one leaves it.
    let highest = s
        .recommendations
        .iter()
        .filter(|(at, _)| after(Some(*at), p.scale_in_stabilization, now).is_some())
        .max_by_key(|(at, n)| (*n, *at));
    t.stabilization_until = highest.and_then(|(at, _)| after(Some(*at), p.scale_in_stabilization, now));
}

/// The decision of this tick into `t`.
pub fn with_decision(t: &mut TargetStatus, d: &Decision, applied: &str) {
    t.current = Some(d.current);
    t.desired = Some(d.desired);
    t.running = Some(d.running);
    t.action = Some(d.action.to_string());
    t.reason = Some(d.reason.clone());
    t.decided_at = Some(d.at);
    t.applied = Some(applied.to_string());
    t.windows = d
        .votes
        .iter()
        .filter(|v| v.kind == "scheduled" && v.reason.contains("in force"))
        .map(|v| format!("{}: {}", v.rule, v.reason))
        .collect();
}

/// Every target of `policies` as `state` remembers it at `now`, with the decisions of a tick.
pub fn build(
    policies: &[TargetPolicy],
    state: &WorkerState,
    decisions: &[(&Decision, &str)],
    now: DateTime<Utc>,
) -> Vec<TargetStatus> {
    // Each target's first decision, found by a hash: a fleet's N targets cost N lookups, not
    // N scans of N decisions.
    let mut by_target = std::collections::HashMap::with_capacity(decisions.len());
    for (d, applied) in decisions {
        by_target.entry(&d.target).or_insert((*d, *applied));
    }
    policies
        .iter()
        .map(|p| {
            let key = p.target.to_string();
            let mut t = TargetStatus {
                target: key.clone(),
                ..TargetStatus::default()
            };
            if let Some(r) = state.targets.get(&key) {
                clocks(p, &r.engine, now, &mut t);
                t.last_action = r.last_action.clone();
            }
            if let Some((d, applied)) = by_target.get(&p.target) {
                with_decision(&mut t, d, applied);
            }
            t
        })
        .collect()
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".into(), |t| t.format("%H:%M:%S").to_string())
}

fn count(n: Option<u32>) -> String {
    n.map_or("-".into(), |n| n.to_string())
}

/// The table `ecscale status` prints.
fn render_reload(o: &mut String, r: &ReloadStatus) {
    let at = |t: Option<DateTime<Utc>>| t.map_or("-".into(), |t| t.format("%H:%M:%S").to_string());
    let _ = writeln!(o, "  files read at {}: {}", at(r.loaded_at), r.files.join(", "));
    if let (Some(result), Some(trigger)) = (&r.last_result, &r.last_trigger) {
        let _ = writeln!(o, "  last reload at {} ({trigger}): {result}", at(r.last_at));
    }
    for m in &r.mistakes {
        let _ = writeln!(o, "  reload mistake: {m}");
    }
}

pub fn render(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {}, last tick {}{}, {} problem{}",
        s.source,
        if s.leader { "leading" } else { "not leading" },
        s.last_tick
            .map_or("never".into(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        s.tick_ms.map(|ms| format!(" ({ms:.0} ms)")).unwrap_or_default(),
        s.problems.len(),
        if s.problems.len() == 1 { "" } else { "s" }
    );
    for p in &s.problems {
        let _ = writeln!(o, "  problem: {p}");
    }
    if let Some(r) = &s.reload {
        render_reload(&mut o, r);
    }
    if let Some(c) = &s.cloudwatch {
        let _ = writeln!(o, "CloudWatch: {}", c.arithmetic);
    }
    let _ = writeln!(
        o,
        "{:<28} {:>7} {:>7} {:>7}  {:<9} {:<9} {:<9} {:<9}  last decision",
        "target", "current", "desired", "running", "out-cool", "in-cool", "stable", "decided"
    );
    for t in &s.targets {
        let last = match (&t.action, &t.reason) {
            (Some(a), Some(r)) => format!("{a}: {r}"),
            _ => t.last_action.as_ref().map_or("-".into(), |l| {
                format!(
                    "last action {} → {} ({}) at {}",
                    l.from,
                    l.to,
                    l.result,
                    l.at.format("%H:%M:%S")
                )
            }),
        };
        let _ = writeln!(
            o,
            "{:<28} {:>7} {:>7} {:>7}  {:<9} {:<9} {:<9} {:<9}  {last}",
            t.target,
            count(t.current),
            count(t.desired),
            count(t.running),
            time(t.scale_out_cooldown_until),
            time(t.scale_in_cooldown_until),
            time(t.stabilization_until),
            time(t.decided_at),
        );
        for w in &t.windows {
            let _ = writeln!(o, "{:<28} window {w}", "");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::TargetState;
    use crate::worker::state::TargetRecord;

    fn policy() -> TargetPolicy {
        policy_of("web")
    }

    fn policy_of(service: &str) -> TargetPolicy {
        let src = format!("target: {{cluster: prod, service: {service}}}\nmin: 1\nmax: 10\ncooldown: {{scale_out: 1m, scale_in: 5m}}\nscale_in_stabilization: 2m\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 60}}\n");
        crate::policy::load_str(&src, "p.yaml", std::path::Path::new("."))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn each_target_shows_its_own_first_decision() {
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let decision = |service: &str, desired: u32| Decision {
            target: crate::model::TargetKey::service("prod", service),
            at: now,
            current: 3,
            running: 3,
            desired,
            action: crate::model::Action::ScaleOut,
            min: 1,
            max: 10,
            rule: None,
            reason: format!("{service} to {desired}"),
            recommendation: desired,
            inputs: Default::default(),
            votes: Vec::new(),
        };
        let (api, web, web_again) = (decision("api", 5), decision("web", 7), decision("web", 9));
        let decisions = [(&api, "applied"), (&web, "held"), (&web_again, "applied")];
        let policies = [policy_of("web"), policy_of("api"), policy_of("jobs")];
        let shown: Vec<(String, Option<u32>, Option<String>)> =
            build(&policies, &WorkerState::default(), &decisions, now)
                .into_iter()
                .map(|t| (t.target, t.desired, t.applied))
                .collect();
        assert_eq!(
            shown,
            [
                ("prod/web".to_string(), Some(7), Some("held".to_string())),
                ("prod/api".to_string(), Some(5), Some("applied".to_string())),
                ("prod/jobs".to_string(), None, None),
            ]
        );
    }

    #[test]
    fn clocks_run_from_the_last_actions_and_the_highest_recommendation() {
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let ago = |s: i64| now - TimeDelta::seconds(s);
        let mut state = WorkerState::default();
        state.targets.insert(
            "prod/web".into(),
            TargetRecord {
                engine: TargetState {
                    last_scale_out: Some(ago(30)),
                    recommendations: [(ago(100), 6), (ago(50), 4)].into_iter().collect(),
                    ..TargetState::default()
                },
                last_action: None,
            },
        );
        let t = build(&[policy()], &state, &[], now).remove(0);
        assert_eq!(t.target, "prod/web");
        assert_eq!(t.scale_out_cooldown_until, Some(ago(30) + TimeDelta::minutes(1)));
        assert_eq!(t.scale_in_cooldown_until, Some(ago(30) + TimeDelta::minutes(5)));
        // 6, 100 s ago, is the highest within 2 minutes: the floor lasts until it leaves.
        assert_eq!(t.stabilization_until, Some(ago(100) + TimeDelta::minutes(2)));
        // Long after, nothing holds.
        let later = build(&[policy()], &state, &[], now + TimeDelta::hours(1)).remove(0);
        assert_eq!(
            (
                later.scale_out_cooldown_until,
                later.scale_in_cooldown_until,
                later.stabilization_until
            ),
            (None, None, None)
        );
        let text = render(&Status {
            source: "state file s.json".into(),
            targets: vec![t],
            ..Status::default()
        });
        assert!(
            text.starts_with("state file s.json: not leading, last tick never, 0 problems\n"),
            "{text}"
        );
        assert!(text.contains("prod/web"), "{text}");
        assert!(text.contains("12:00:30"), "the scale-out cooldown's end: {text}");
    }

    /// The measured spend, as a month at that rate, with its arithmetic.
    #[test]
    fn cloudwatch_spend_is_the_measured_rate_over_a_month() {
        let since: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().unwrap();
        let c = super::spend(2_000, since, since + TimeDelta::seconds(20), 5).unwrap();
        // 2,000 in 20 s: 259,200,000 a month, $2,592 at $0.01 per 1,000, $518.40 a service.
        assert!((c.usd_per_month - 2_592.0).abs() < 1e-6, "{c:?}");
        assert!((c.usd_per_service_month.unwrap() - 518.4).abs() < 1e-6, "{c:?}");
        assert_eq!(
            c.arithmetic,
            "2,000 metrics requested in 20s; 2,000 × 30 days ÷ 20s = 259,200,000 a month; × $0.01 per 1,000 = $2592.00 a month; ÷ 5 services = $518.4000 per service"
        );
        assert!(super::spend(10, since, since, 5).is_none(), "no time, no rate");
        assert_eq!(
            super::spend(10, since, since + TimeDelta::seconds(1), 0)
                .unwrap()
                .usd_per_service_month,
            None
        );
        let table = render(&Status {
            cloudwatch: Some(c),
            ..Status::default()
        });
        assert!(
            table.contains("CloudWatch: 2,000 metrics requested in 20s"),
            "{table}"
        );
    }
}
