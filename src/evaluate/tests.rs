//! Table-driven tests of every rule kind and every engine behaviour: each case is a policy (as
//! SREs write it), the recent datapoints, the count and the engine's memory, and the decision
//! it must give.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::eval_io::{Answer, MetricData, MetricSet, Observation};
use crate::model::{Action, Decision};

/// One tick: policy body (after `target:`), metrics (oldest first, ending with the newest
/// complete minute; `None` a gap), the count, and what must come out.
struct Case {
    name: &'static str,
    policy: &'static str,
    metrics: Vec<(&'static str, Vec<Option<f64>>)>,
    current: u32,
    now: &'static str,
    state: TargetState,
    externals: BTreeMap<String, Result<Answer, String>>,
    action: Action,
    desired: u32,
    reason: &'static str,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            name: "",
            policy: "",
            metrics: Vec::new(),
            current: 4,
            now: "2026-11-25T12:00:00Z",
            state: TargetState::default(),
            externals: BTreeMap::new(),
            action: Action::Hold,
            desired: 4,
            reason: "",
        }
    }
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn ago(now: &str, secs: i64) -> DateTime<Utc> {
    at(now) - TimeDelta::seconds(secs)
}

pub(super) fn policy(body: &str) -> crate::policy::TargetPolicy {
    let text = format!("target: {{cluster: c, service: s}}\n{body}");
    crate::policy::load_str(&text, "case.yaml", Path::new("."))
        .unwrap_or_else(|d| panic!("{d}\n{text}"))
        .remove(0)
}

/// Samples per metric: the last value is the minute before `now`.
pub(super) fn samples(now: DateTime<Utc>, values: &[Option<f64>]) -> Vec<crate::model::Sample> {
    let n = values.len() as i64;
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            v.map(|value| crate::model::Sample {
                timestamp: now - TimeDelta::minutes(n - i as i64),
                value,
            })
        })
        .collect()
}

fn run(c: &Case) -> Decision {
    let p = policy(c.policy);
    let now = at(c.now);
    let series: Vec<(&str, Vec<crate::model::Sample>)> = c
        .metrics
        .iter()
        .map(|(id, vals)| (*id, samples(now, vals)))
        .collect();
    let set = MetricSet::uniform(series.iter().map(|(id, s)| (*id, s.as_slice())), 60, now);
    let obs = Observation::settled(now, c.current, &set);
    decide(&p, &obs, &c.state, &c.externals)
}

const TT: &str = "min: 1\nmax: 20\nrules:\n  - {name: cpu, kind: target_tracking, metric: cpu, target: 60}\n";
const SS: &str = "min: 1
max: 30
max_step: {out: 50}
rules:
  - name: q
    kind: step_scaling
    metric: q
    datapoints: 2
    of: 3
    scale_out:
      - {above: 100, change: 2}
      - {above: 500, percent: 50, min_magnitude: 3}
      - {above: 1000, exact: 20}
    scale_in:
      - {below: 10, change: -1}
";
const BOTH: &str = "min: 1
max: 20
rules:
  - {name: cpu, kind: target_tracking, metric: cpu, target: 60}
  - {name: backlog, kind: expression, expression: 'ceil(q / 100)'}
";

fn state_out(secs_ago: i64) -> TargetState {
    TargetState {
        last_scale_out: Some(ago("2026-11-25T12:00:00Z", secs_ago)),
        ..TargetState::default()
    }
}

fn cases() -> Vec<Case> {
    let s = Some;
    vec![
        // target_tracking
        Case { name: "tt: above the band for 2/2 → ceil(4 × 85 / 60)", policy: TT, metrics: vec![("cpu", vec![s(80.0), s(90.0)])], action: Action::ScaleOut, desired: 6, reason: "cpu 85 > target 60 (+10%) for 2/2 datapoints → 4 → 6", ..Case::default() },
        Case { name: "tt: above for 1/2 only", policy: TT, metrics: vec![("cpu", vec![s(60.0), s(60.0), s(60.0), s(60.0), s(90.0)])], reason: "cpu 90 > target 60 (+10%) for 1/2 datapoints: not yet", ..Case::default() },
        Case { name: "tt: below for 5/5 → ceil(6 × 30 / 60)", policy: TT, metrics: vec![("cpu", vec![s(30.0); 5])], current: 6, action: Action::ScaleIn, desired: 3, reason: "cpu ≤ 30 < target 60 (−10%) for 5/5 datapoints → 6 → 3", ..Case::default() },
        Case { name: "tt: scale-in sizes for the highest value", policy: TT, metrics: vec![("cpu", vec![s(20.0), s(20.0), s(40.0), s(20.0), s(20.0)])], current: 6, action: Action::ScaleIn, desired: 4, reason: "cpu ≤ 40", ..Case::default() },
        Case { name: "tt: within the band", policy: TT, metrics: vec![("cpu", vec![s(58.0); 5])], reason: "cpu 58 within target 60 ± 10%", ..Case::default() },
        Case { name: "tt: scale-in disabled", policy: "min: 1\nmax: 20\nrules:\n  - {kind: target_tracking, metric: cpu, target: 60, disable_scale_in: true}\n", metrics: vec![("cpu", vec![s(30.0); 5])], current: 6, desired: 6, reason: "no rule asked for a change", ..Case::default() },
        Case { name: "tt: datapoints of warming tasks are not used", policy: TT, metrics: vec![("cpu", vec![s(90.0), s(90.0)])], state: state_out(90), reason: "waiting for datapoints after the warm-up (11:59:30)", ..Case::default() },
        Case { name: "tt: after the warm-up they are", policy: TT, metrics: vec![("cpu", vec![s(90.0), s(90.0)])], state: state_out(200), action: Action::ScaleOut, desired: 6, ..Case::default() },
        Case { name: "tt: a gap blocks (missing_data default)", policy: TT, metrics: vec![("cpu", vec![None, s(90.0)])], reason: "cpu has no value for one of its last 2 periods (missing_data: block_scale_in)", ..Case::default() },
        Case { name: "tt: a stale metric is missing data", policy: TT, metrics: vec![("cpu", vec![s(90.0), s(90.0), None])], reason: "missing_data", ..Case::default() },
        // step_scaling
        Case { name: "ss: 2 of 3 above 100, newest 120 → +2", policy: SS, metrics: vec![("q", vec![s(50.0), s(150.0), s(120.0)])], action: Action::ScaleOut, desired: 6, reason: "q 120 ≥ 100 for 2/3 datapoints: +2 → 4 → 6", ..Case::default() },
        Case { name: "ss: the newest breaching value picks the step; +50% but at least 3", policy: SS, metrics: vec![("q", vec![s(600.0), s(700.0), s(50.0)])], action: Action::ScaleOut, desired: 7, reason: "q 700 ≥ 500 for 2/3 datapoints", ..Case::default() },
        Case { name: "ss: exact", policy: SS, metrics: vec![("q", vec![s(1500.0), s(1200.0), s(1100.0)])], action: Action::ScaleOut, desired: 20, reason: "=20 → 4 → 20", ..Case::default() },
        Case { name: "ss: 1 of 3 is not enough", policy: SS, metrics: vec![("q", vec![s(150.0), s(50.0), s(50.0)])], reason: "no step reached for 2/3 datapoints", ..Case::default() },
        Case { name: "ss: scale-in step", policy: SS, metrics: vec![("q", vec![s(5.0), s(5.0), s(20.0)])], action: Action::ScaleIn, desired: 3, reason: "q 5 < 10 for 2/3 datapoints: -1 → 4 → 3", ..Case::default() },
        // scheduled
        Case { name: "schedule: a window raises the floor", policy: "min: 1\nmax: 20\nrules:\n  - name: cal\n    kind: scheduled\n    windows: [{name: day, cron: '0 8 * * *', duration: 10h, min: 6}]\n", action: Action::ScaleOut, desired: 6, reason: "raised to the minimum 6 (schedule:cal/day)", ..Case::default() },
        Case { name: "schedule: outside the window the floor is back", policy: "min: 1\nmax: 20\nrules:\n  - name: cal\n    kind: scheduled\n    windows: [{name: day, cron: '0 8 * * *', duration: 10h, min: 6}]\n", now: "2026-11-25T19:00:00Z", reason: "no rule asked for a change", ..Case::default() },
        Case { name: "schedule: desired at the window start, past the step cap", policy: "min: 1\nmax: 20\nrules:\n  - name: cal\n    kind: scheduled\n    windows: [{name: sale, from: '2026-11-25T11:00', until: '2026-11-26T00:00', desired: 15}]\n", action: Action::ScaleOut, desired: 15, reason: "the window starts, desired 15", ..Case::default() },
        Case { name: "schedule: a desired already applied is not applied again", policy: "min: 1\nmax: 20\nrules:\n  - name: cal\n    kind: scheduled\n    windows: [{name: sale, from: '2026-11-25T11:00', until: '2026-11-26T00:00', desired: 15}]\n", state: TargetState { applied_windows: vec!["cal/sale@2026-11-25T11:00:00+00:00".into()], ..TargetState::default() }, reason: "no rule asked for a change", ..Case::default() },
        Case { name: "schedule: windows follow their time zone (09:00 Paris is 08:00 UTC)", policy: "min: 1\nmax: 20\nrules:\n  - name: cal\n    kind: scheduled\n    timezone: Europe/Paris\n    windows: [{name: morning, cron: '0 9 * * *', duration: 1h, min: 8}]\n", now: "2026-11-25T08:30:00Z", action: Action::ScaleOut, desired: 8, ..Case::default() },
        Case { name: "schedule: ... and 10:30 Paris is outside", policy: "min: 1\nmax: 20\nrules:\n  - name: cal\n    kind: scheduled\n    timezone: Europe/Paris\n    windows: [{name: morning, cron: '0 9 * * *', duration: 1h, min: 8}]\n", now: "2026-11-25T09:30:00Z", ..Case::default() },
        // expression
        Case { name: "expression", policy: "min: 1\nmax: 20\nrules:\n  - {kind: expression, expression: 'ceil(q / 100)'}\n", metrics: vec![("q", vec![s(450.0)])], current: 2, action: Action::ScaleOut, desired: 5, reason: "`ceil(q / 100)` = 5 (q 450) → 2 → 5", ..Case::default() },
        Case { name: "expression: missing metric", policy: "min: 1\nmax: 20\nrules:\n  - {kind: expression, expression: 'ceil(q / 100)'}\n", reason: "q has no value for a period the expression reads (missing_data: block_scale_in)", ..Case::default() },
        Case { name: "expression: not a number is an error, a hold", policy: "min: 1\nmax: 20\nrules:\n  - {kind: expression, expression: '0 / 0'}\n", reason: "`0 / 0` gave NaN, not a count; holding", ..Case::default() },
        // combining
        Case { name: "any rule scales out, the largest wins", policy: BOTH, metrics: vec![("cpu", vec![s(90.0), s(90.0)]), ("q", vec![s(750.0)])], action: Action::ScaleOut, desired: 8, reason: "`ceil(q / 100)` = 8", ..Case::default() },
        Case { name: "scale-in needs every rule", policy: BOTH, metrics: vec![("cpu", vec![s(30.0); 5]), ("q", vec![s(550.0)])], current: 6, desired: 6, reason: "no scale-in: not every rule agrees", ..Case::default() },
        Case { name: "when all agree, to the highest count", policy: BOTH, metrics: vec![("cpu", vec![s(30.0); 5]), ("q", vec![s(150.0)])], current: 6, action: Action::ScaleIn, desired: 3, ..Case::default() },
        Case { name: "a missing metric never lets the others scale in", policy: BOTH, metrics: vec![("cpu", vec![s(30.0); 5])], current: 6, desired: 6, reason: "no scale-in", ..Case::default() },
        Case { name: "missing_data: hold freezes the target", policy: "min: 1\nmax: 20\nmissing_data: {cpu: hold}\nrules:\n  - {name: cpu, kind: target_tracking, metric: cpu, target: 60}\n  - {name: backlog, kind: expression, expression: 'ceil(q / 100)'}\n", metrics: vec![("q", vec![s(900.0)])], reason: "(missing_data: hold): the target holds", ..Case::default() },
        Case { name: "missing_data: block_scale_in lets others scale out", policy: BOTH, metrics: vec![("q", vec![s(900.0)])], action: Action::ScaleOut, desired: 8, ..Case::default() },
        Case { name: "missing_data: assume never scales in", policy: "min: 0\nmax: 20\nmissing_data: {q: {assume: 0}}\nrules:\n  - {kind: expression, expression: 'ceil(q / 100)'}\n", reason: "not scaling in on an assumed value", ..Case::default() },
        Case { name: "missing_data: assume may scale out", policy: "min: 0\nmax: 20\nmissing_data: {q: {assume: 700}}\nrules:\n  - {kind: expression, expression: 'ceil(q / 100)'}\n", action: Action::ScaleOut, desired: 7, ..Case::default() },
        // cooldowns, stabilization, caps, bounds
        Case { name: "scale-out cooldown", policy: "min: 1\nmax: 20\nrules:\n  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, warmup: 0s}\n", metrics: vec![("cpu", vec![s(90.0), s(90.0)])], state: state_out(30), reason: "held: scale-out cooldown until 12:00:30", ..Case::default() },
        Case { name: "a rule's own cooldown", policy: "min: 1\nmax: 20\nrules:\n  - {name: cpu, kind: target_tracking, metric: cpu, target: 60, warmup: 0s, cooldown: {scale_out: 10s}}\n", metrics: vec![("cpu", vec![s(90.0), s(90.0)])], state: state_out(30), action: Action::ScaleOut, desired: 6, ..Case::default() },
        Case { name: "scale-in cooldown counts from any action", policy: "min: 1\nmax: 20\nrules:\n  - {kind: target_tracking, metric: cpu, target: 60, warmup: 0s}\n", metrics: vec![("cpu", vec![s(30.0); 5])], current: 6, state: state_out(200), desired: 6, reason: "held: scale-in cooldown until 12:01:40", ..Case::default() },
        Case { name: "stabilization: no lower than recent recommendations", policy: TT, metrics: vec![("cpu", vec![s(30.0); 5])], current: 6, state: TargetState { recommendations: VecDeque::from([(ago("2026-11-25T12:00:00Z", 120), 5)]), ..TargetState::default() }, action: Action::ScaleIn, desired: 5, reason: "stabilized: 5 was recommended within the last 5m", ..Case::default() },
        Case { name: "stabilization window passed", policy: TT, metrics: vec![("cpu", vec![s(30.0); 5])], current: 6, state: TargetState { recommendations: VecDeque::from([(ago("2026-11-25T12:00:00Z", 400), 6)]), ..TargetState::default() }, action: Action::ScaleIn, desired: 3, ..Case::default() },
        Case { name: "step cap: double or +4", policy: TT, metrics: vec![("cpu", vec![s(200.0), s(200.0)])], action: Action::ScaleOut, desired: 8, reason: "capped at +4 per tick (max_step.out max(4, 100%))", ..Case::default() },
        Case { name: "step cap in", policy: "min: 1\nmax: 20\nmax_step: {in: 25%}\nrules:\n  - {kind: target_tracking, metric: cpu, target: 60}\n", metrics: vec![("cpu", vec![s(10.0); 5])], current: 12, action: Action::ScaleIn, desired: 9, reason: "capped at -3", ..Case::default() },
        Case { name: "the maximum limits", policy: "min: 1\nmax: 5\nrules:\n  - {kind: target_tracking, metric: cpu, target: 60}\n", metrics: vec![("cpu", vec![s(90.0), s(90.0)])], action: Action::ScaleOut, desired: 5, reason: "limited to the maximum 5 (max)", ..Case::default() },
        Case { name: "below the minimum moves up whatever the metrics", policy: "min: 3\nmax: 20\nrules:\n  - {kind: target_tracking, metric: cpu, target: 60}\n", current: 1, action: Action::ScaleOut, desired: 3, reason: "raised to the minimum 3 (min)", ..Case::default() },
        Case { name: "above the maximum moves down whatever the metrics", policy: "min: 1\nmax: 5\nrules:\n  - {kind: target_tracking, metric: cpu, target: 60}\n", current: 8, action: Action::ScaleIn, desired: 5, reason: "limited to the maximum 5 (max)", ..Case::default() },
        // external (answers fetched beforehand)
        Case { name: "external: an answer is a vote", policy: "min: 1\nmax: 20\nrules:\n  - {name: model, kind: external, command: [sh]}\n", externals: BTreeMap::from([("model".to_string(), Ok(Answer { desired: 7, reason: "model says so".into() }))]), action: Action::ScaleOut, desired: 7, reason: "plugin: model says so → 4 → 7", ..Case::default() },
        Case { name: "external: an error is a hold", policy: "min: 1\nmax: 20\nrules:\n  - {name: model, kind: external, command: [sh]}\n", externals: BTreeMap::from([("model".to_string(), Err("plugin model exited with status 3".to_string()))]), reason: "plugin model exited with status 3; holding", ..Case::default() },
    ]
}

#[test]
fn every_kind_and_engine_behaviour() {
    let mut failures = Vec::new();
    for c in cases() {
        let d = run(&c);
        let ok = d.action == c.action && d.desired == c.desired && d.reason.contains(c.reason);
        if !ok {
            failures.push(format!(
                "{}\n  want {:?} {} with «{}»\n  got  {:?} {} with «{}»",
                c.name, c.action, c.desired, c.reason, d.action, d.desired, d.reason
            ));
        }
        assert!(
            d.desired >= d.min && d.desired <= d.max,
            "{}: outside the bounds",
            c.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A target at `count` tasks, in `state`, deciding at `now` on one one-minute series.
fn decide_on(
    p: &crate::policy::TargetPolicy,
    (metric, samples): (&str, &[crate::model::Sample]),
    (now, count): (DateTime<Utc>, u32),
    state: &TargetState,
) -> Decision {
    let mut set = MetricSet::new();
    set.insert(
        metric,
        MetricData {
            samples,
            period_secs: 60,
            complete_until: now,
            per_task: false,
            history: None,
        },
    );
    let obs = Observation {
        now,
        current: count,
        running: count,
        pending: 0,
        metrics: &set,
    };
    decide(p, &obs, state, &BTreeMap::new())
}

#[test]
fn predictive_forecast_only_is_recorded_not_counted() {
    let body = |forecast_only: bool| {
        format!(
            "min: 1\nmax: 50\nrules:\n  - {{name: f, kind: predictive, metric: rps, target_per_task: 100, horizon: 30m, min_history: 1d, forecast_only: {forecast_only}}}\n"
        )
    };
    let now = at("2026-11-25T12:00:00Z");
    // Two days at 1000 with a daily peak of 2000 around 12:00-13:00.
    let history: Vec<crate::model::Sample> = (1..=2 * 24 * 60)
        .map(|k| {
            let t = now - TimeDelta::minutes(k);
            let hour = t.format("%H").to_string();
            let value = if hour == "12" || hour == "13" {
                2000.0
            } else {
                1000.0
            };
            crate::model::Sample { timestamp: t, value }
        })
        .rev()
        .collect();
    for (only, action) in [(true, Action::Hold), (false, Action::ScaleOut)] {
        let p = policy(Box::leak(body(only).into_boxed_str()));
        let d = decide_on(&p, ("rps", &history), (now, 10), &TargetState::default());
        assert_eq!(d.action, action, "forecast_only {only}: {}", d.reason);
        let v = &d.votes[0];
        assert_eq!(v.status.as_str(), if only { "forecast_only" } else { "wants" });
        let wants = v.wants.unwrap();
        assert!(
            (19..=24).contains(&wants),
            "peak ~2000 / 100 per task, plus the bound: {wants} ({})",
            v.reason
        );
    }
}

#[test]
fn a_forecast_no_better_than_the_last_hour_abstains_and_says_so() {
    let text = "min: 1\nmax: 50\nrules:\n  - {name: f, kind: predictive, metric: rps, target_per_task: 100, horizon: 30m, bucket: 5m, min_history: 1d}\n";
    let now = at("2026-11-25T12:00:00Z");
    // Four days: a daily peak at 12:00-13:00, or bursts at another half hour every day.
    let history = |daily: bool| -> Vec<crate::model::Sample> {
        (1..=4 * 24 * 60)
            .map(|k: i64| {
                let t = now - TimeDelta::minutes(k);
                let peak = if daily {
                    (720..780).contains(&(t.timestamp().rem_euclid(86_400) / 60))
                } else {
                    // Half-hour slots picked by a hash: about one in five.
                    (k / 30).wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64) >> 40 & 7 < 2
                };
                let value = if peak { 3000.0 } else { 1000.0 };
                crate::model::Sample { timestamp: t, value }
            })
            .rev()
            .collect()
    };
    for (daily, status) in [(true, "wants"), (false, "abstains")] {
        // A rule of its own for each history (a rule keeps its judgement for hours).
        let p = policy(text);
        let d = decide_on(&p, ("rps", &history(daily)), (now, 10), &TargetState::default());
        let v = &d.votes[0];
        assert_eq!(v.status.as_str(), status, "daily {daily}: {}", v.reason);
        if !daily {
            assert!(
                v.reason.contains("better than the last hour's level"),
                "{}",
                v.reason
            );
        }
    }
}

#[test]
fn state_records_actions_windows_and_recommendations() {
    let p = policy("min: 1\nmax: 20\nscale_in_stabilization: 3m\nrules:\n  - name: cal\n    kind: scheduled\n    windows: [{name: sale, from: '2026-11-25T11:00', until: '2026-11-26T00:00', desired: 15}]\n");
    let set = MetricSet::new();
    let mut state = TargetState::default();
    let mut current = 4;
    let mut decisions = Vec::new();
    for minute in 0..5 {
        let now = at("2026-11-25T12:00:00Z") + TimeDelta::minutes(minute);
        let obs = Observation {
            now,
            current,
            running: current,
            pending: 0,
            metrics: &set,
        };
        let d = decide(&p, &obs, &state, &BTreeMap::new());
        state.record(&p, &d, true);
        current = d.desired;
        decisions.push((d.action, d.desired));
    }
    assert_eq!(
        decisions,
        [
            (Action::ScaleOut, 15),
            (Action::Hold, 15),
            (Action::Hold, 15),
            (Action::Hold, 15),
            (Action::Hold, 15)
        ]
    );
    assert_eq!(state.last_scale_out, Some(at("2026-11-25T12:00:00Z")));
    assert_eq!(state.applied_windows, ["cal/sale@2026-11-25T11:00:00+00:00"]);
    // Only the last 3 minutes of recommendations are kept.
    assert_eq!(state.recommendations.len(), 3);
    // The state survives a restart: it serializes and reads back the same.
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<TargetState>(&json).unwrap(), state);
}

#[test]
fn a_decision_not_applied_starts_no_cooldown() {
    let p = policy(TT);
    let now = at("2026-11-25T12:00:00Z");
    let s = samples(now, &[Some(90.0), Some(90.0)]);
    let mut state = TargetState::default();
    let d = decide_on(&p, ("cpu", &s), (now, 4), &state);
    assert_eq!(d.action, Action::ScaleOut);
    state.record(&p, &d, false);
    assert_eq!(state.last_scale_out, None);
    state.record(&p, &d, true);
    assert_eq!(state.last_scale_out, Some(now));
}
