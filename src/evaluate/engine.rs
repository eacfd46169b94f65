//! The engine: one decision per target per tick, from the rules' recommendations.
//!
//! In order:
//! 1. **Bounds**: the policy's `min`/`max`, overridden by scheduled windows in force; a window's
//!    `desired` is applied once, when it starts.
//! 2. **Votes**: every other rule is evaluated. A rule whose metric is missing follows the
//!    metric's missing-data behaviour: `hold` freezes the target, `block_scale_in` forbids
//!    scale-in, `assume` fills the gap (and a scale-in that rests on an assumed value becomes a
//!    hold). A plugin error is a hold. `forecast_only` votes are recorded, not counted.
//! 3. **Combine**: scale out if any rule wants more (the largest); scale in only when every
//!    counted rule wants less (to the highest of their counts); otherwise hold.
//! 4. **Cooldowns**: the deciding rule's; a scale-out waits for the scale-out cooldown after the
//!    last scale-out, a scale-in for the scale-in cooldown after the last action of any kind. A
//!    scheduled window's `desired` (an operator's explicit count) skips cooldowns and step caps.
//! 5. **Scale-in stabilization**: a scale-in goes no lower than the highest recommendation
//!    within the window.
//! 6. **Step cap** per tick, then **clamp** to the bounds. The clamp is last, so the decided
//!    count is always within them; being outside the bounds moves the count regardless of
//!    cooldowns.
//!
//! Pure: [`decide`] reads the [`TargetState`]; [`TargetState::record`] updates it once the
//! decision is applied (or simulated).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::eval_io::{Answer, EvalInput, Observation, Recommendation, RunningHistory};
use crate::model::{Action, Decision, Vote};
use crate::policy::{MissingData, Rule, TargetPolicy};

/// What the engine remembers about a target between ticks. Serializable: a restarted worker
/// must neither repeat an action nor forget a cooldown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    pub last_scale_out: Option<DateTime<Utc>>,
    pub last_scale_in: Option<DateTime<Utc>>,
    /// Recommendations within the stabilization window, oldest first.
    pub recommendations: VecDeque<(DateTime<Utc>, u32)>,
    /// Scheduled windows whose `desired` was applied: `rule/window@start`.
    pub applied_windows: Vec<String>,
    /// The running counts seen at each decision.
    #[serde(default, skip_serializing_if = "RunningHistory::is_empty")]
    pub running: RunningHistory,
}

/// A counted wish of one rule.
struct Wish<'r> {
    rule: &'r Rule,
    count: u32,
    reason: String,
}

fn until(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

/// Decides for one target. `externals` holds the answers of its external rules, by rule name.
pub fn decide(
    policy: &TargetPolicy,
    obs: &Observation<'_>,
    state: &TargetState,
    externals: &BTreeMap<String, Result<Answer, String>>,
) -> Decision {
    let now = obs.now;
    let current = obs.current;
    let bounds = policy.bounds(now);
    let assume = |id: &str| match policy.missing_for(id) {
        MissingData::Assume(v) => Some(v),
        _ => None,
    };

    let mut votes: Vec<Vote> = Vec::with_capacity(policy.rules.len());
    let mut inputs = BTreeMap::new();
    let mut outs: Vec<Wish<'_>> = Vec::new();
    let mut ins: Vec<Wish<'_>> = Vec::new();
    // Rules that keep the count (or cannot say), with why: they block a scale-in.
    let mut blockers: Vec<String> = Vec::new();
    let mut holds: Vec<String> = Vec::new();
    let mut freeze: Option<(&Rule, String)> = None;
    let served = state.running.with_look(now, obs.running);
    // What a metric rule reads this tick (its name and `foreseen` are set per rule).
    let base = || {
        let mut input = EvalInput::new(now, current, obs.metrics, &assume, externals);
        input.running = obs.running;
        input.pending = obs.pending;
        input.min = bounds.min;
        input.max = bounds.max;
        input.last_scale_out = state.last_scale_out;
        input.last_scale_in = state.last_scale_in;
        input.served = &served;
        input
    };
    // A counted forecast from a learned day: the rules that follow it may keep less room. The
    // forecasts vote first, once, and their votes are counted in turn below.
    let mut early: Vec<Option<(Recommendation, bool)>> = Vec::new();
    let mut foreseen = false;
    if policy.rules.iter().any(|r| r.spec.follows_forecast()) {
        early = policy.rules.iter().map(|_| None).collect();
        for (i, rule) in policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.spec.forecasts())
        {
            let mut input = base();
            input.rule = &rule.name;
            let (rec, learned) = rule.spec.policy().evaluate_foreseeing(&input);
            foreseen |= learned;
            early[i] = Some((rec, input.used_assumed()));
        }
    }

    for (i, rule) in policy.rules.iter().enumerate() {
        let kind = rule.spec.kind();
        let vote = |status: &str, wants: Option<u32>, reason: String| Vote {
            rule: rule.name.clone(),
            kind: kind.to_string(),
            status: status.to_string(),
            wants,
            reason,
        };
        if rule.spec.policy().is_schedule() {
            let pending = bounds
                .pending_desired
                .iter()
                .find(|(key, r, _)| r == &rule.name && !state.applied_windows.contains(key));
            let rec =
                rule.spec
                    .policy()
                    .evaluate(&EvalInput::new(now, current, obs.metrics, &assume, externals));
            let reason = match rec {
                Recommendation::Abstain { reason } => reason,
                _ => String::new(),
            };
            match pending {
                Some((_, _, d)) => {
                    let wish = Wish {
                        rule,
                        count: *d,
                        reason: format!("{reason}: the window starts, desired {d}"),
                    };
                    votes.push(vote("wants", Some(*d), wish.reason.clone()));
                    // A window's start sets the count, up or down (other rules may still want more).
                    if *d >= current {
                        outs.push(wish);
                    } else {
                        ins.push(wish);
                    }
                }
                None => votes.push(vote("abstains", None, reason)),
            }
            continue;
        }

        let (rec, assumed) = early.get_mut(i).and_then(Option::take).unwrap_or_else(|| {
            let mut input = base();
            input.rule = &rule.name;
            input.foreseen = foreseen;
            let rec = rule.spec.policy().evaluate(&input);
            (rec, input.used_assumed())
        });
        let forecast_only = !rule.spec.policy().counts();
        match rec {
            Recommendation::Wants {
                count,
                reason,
                inputs: used,
            } => {
                for (k, v) in used {
                    inputs.insert(k, v);
                }
                if forecast_only {
                    votes.push(vote("forecast_only", Some(count), reason));
                } else if count > current {
                    votes.push(vote("wants", Some(count), reason.clone()));
                    outs.push(Wish { rule, count, reason });
                } else if count < current && assumed {
                    let reason =
                        format!("{reason}; not scaling in on an assumed value (missing_data: assume)");
                    votes.push(vote("holds", Some(current), reason.clone()));
                    blockers.push(format!("{}: {reason}", rule.name));
                } else if count < current {
                    votes.push(vote("wants", Some(count), reason.clone()));
                    ins.push(Wish { rule, count, reason });
                } else {
                    votes.push(vote("holds", Some(current), reason.clone()));
                    blockers.push(format!("{}: {reason}", rule.name));
                    holds.push(reason);
                }
            }
            Recommendation::Abstain { reason } => votes.push(vote("abstains", None, reason)),
            Recommendation::Missing { metric, reason } => {
                let behaviour = policy.missing_for(&metric);
                let reason = format!("{reason} (missing_data: {behaviour})");
                votes.push(vote("missing_data", None, reason.clone()));
                if behaviour == MissingData::Hold && freeze.is_none() {
                    freeze = Some((rule, reason.clone()));
                }
                blockers.push(format!("{}: {reason}", rule.name));
            }
            Recommendation::Error { reason } => {
                let reason = format!("{reason}; holding");
                votes.push(vote("error", None, reason.clone()));
                blockers.push(format!("{}: {reason}", rule.name));
            }
        }
    }

    // 3. Combine.
    let (recommendation, mut decider, mut reason): (u32, Option<&Rule>, String) =
        if let Some((rule, why)) = freeze {
            (current, Some(rule), format!("{why}: the target holds"))
        } else if let Some(w) = outs.iter().max_by_key(|w| w.count) {
            (w.count, Some(w.rule), w.reason.clone())
        } else if !ins.is_empty() && blockers.is_empty() {
            // Every counted rule wants less: go to the highest of their counts.
            let w = ins.iter().max_by_key(|w| w.count).unwrap_or(&ins[0]);
            (w.count, Some(w.rule), w.reason.clone())
        } else if let Some(w) = ins.first() {
            let why = blockers.join("; ");
            (
                current,
                Some(w.rule),
                format!("{} — no scale-in: not every rule agrees ({why})", w.reason),
            )
        } else if holds.is_empty() && blockers.is_empty() {
            (current, None, "no rule asked for a change".to_string())
        } else {
            let parts: Vec<&str> = votes
                .iter()
                .filter(|v| matches!(v.status.as_str(), "holds" | "missing_data" | "error"))
                .map(|v| v.reason.as_str())
                .collect();
            (current, None, parts.join("; "))
        };

    // 4–6. Cooldowns, stabilization, step caps; then the bounds.
    let mut desired = recommendation;
    let mut rule_name = decider.map(|r| r.name.clone());
    // A window's `desired` is a count an operator chose: no cooldown or step cap applies.
    let explicit = decider.is_some_and(|r| r.spec.policy().is_schedule());
    let note = |reason: &mut String, text: String| {
        let _ = write!(reason, "; {text}");
    };
    if desired > current && !explicit {
        let cd = decider.map_or(policy.cooldown, |r| r.cooldown).scale_out;
        if let Some(t) = state.last_scale_out {
            let ends = t + TimeDelta::from_std(cd).unwrap_or(TimeDelta::MAX);
            if now < ends {
                note(
                    &mut reason,
                    format!("held: scale-out cooldown until {}", until(ends)),
                );
                desired = current;
            }
        }
        let cap = decider.map_or(policy.max_step_out, |r| r.max_step_out);
        let allowed = cap.allowed(current);
        if desired > current && desired - current > allowed {
            desired = current + allowed;
            note(
                &mut reason,
                format!("capped at +{allowed} per tick (max_step.out {cap})"),
            );
        }
    } else if desired < current && !explicit {
        let cd = decider.map_or(policy.cooldown, |r| r.cooldown).scale_in;
        let last = state.last_scale_in.max(state.last_scale_out);
        if let Some(t) = last {
            let ends = t + TimeDelta::from_std(cd).unwrap_or(TimeDelta::MAX);
            if now < ends {
                note(
                    &mut reason,
                    format!("held: scale-in cooldown until {}", until(ends)),
                );
                desired = current;
            }
        }
        if desired < current {
            let window_start =
                now - TimeDelta::from_std(policy.scale_in_stabilization).unwrap_or(TimeDelta::MAX);
            let highest = state
                .recommendations
                .iter()
                .filter(|(t, _)| *t > window_start)
                .map(|(_, c)| *c)
                .max()
                .unwrap_or(0);
            if highest > desired {
                let stabilized = highest.min(current);
                note(
                    &mut reason,
                    format!(
                        "stabilized: {} was recommended within the last {}",
                        highest,
                        humantime::format_duration(policy.scale_in_stabilization)
                    ),
                );
                desired = stabilized;
            }
        }
        let cap = decider.map_or(policy.max_step_in, |r| r.max_step_in);
        let allowed = cap.allowed(current);
        if desired < current && current - desired > allowed {
            desired = current - allowed;
            note(
                &mut reason,
                format!("capped at -{allowed} per tick (max_step.in {cap})"),
            );
        }
    }
    if desired < bounds.min {
        if current < bounds.min || recommendation < bounds.min {
            note(
                &mut reason,
                format!("raised to the minimum {} ({})", bounds.min, bounds.min_source),
            );
        }
        if decider.is_none() || current < bounds.min {
            rule_name = Some(bounds.min_source.clone());
        }
        desired = bounds.min;
    } else if desired > bounds.max {
        note(
            &mut reason,
            format!("limited to the maximum {} ({})", bounds.max, bounds.max_source),
        );
        if current > bounds.max {
            rule_name = Some(bounds.max_source.clone());
        }
        desired = bounds.max;
    }
    let action = match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Action::ScaleOut,
        std::cmp::Ordering::Less => Action::ScaleIn,
        std::cmp::Ordering::Equal => Action::Hold,
    };
    if action == Action::Hold && recommendation == current {
        decider = None;
        rule_name = None;
    }
    let _ = decider;
    Decision {
        target: policy.target.clone(),
        at: now,
        current,
        running: obs.running,
        desired,
        action,
        min: bounds.min,
        max: bounds.max,
        rule: rule_name,
        reason,
        recommendation,
        inputs,
        votes,
    }
}

impl TargetState {
    /// Updates the state with a decision. `applied`: its action was carried out (a dry run or a
    /// failed call is not), which starts cooldowns.
    pub fn record(&mut self, policy: &TargetPolicy, d: &Decision, applied: bool) {
        let keep_from = d.at - TimeDelta::from_std(policy.scale_in_stabilization).unwrap_or(TimeDelta::MAX);
        self.recommendations.push_back((d.at, d.recommendation));
        self.running.observe(d.at, d.running);
        while self.recommendations.front().is_some_and(|(t, _)| *t <= keep_from) {
            self.recommendations.pop_front();
        }
        if applied {
            match d.action {
                Action::ScaleOut => self.last_scale_out = Some(d.at),
                Action::ScaleIn => {
                    self.last_scale_in = Some(d.at);
                    self.running.changed(d.at, d.running.min(d.desired));
                }
                Action::Hold => {}
            }
        }
        if applied || d.action == Action::Hold {
            for (key, rule, count) in policy.bounds(d.at).pending_desired {
                let voted = d.votes.iter().any(|v| v.rule == rule && v.wants == Some(count));
                if voted && !self.applied_windows.contains(&key) {
                    self.applied_windows.push(key);
                }
            }
        }
        // Keep only windows still in force.
        let active: Vec<String> = policy
            .bounds(d.at)
            .pending_desired
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        self.applied_windows.retain(|k| active.contains(k));
    }
}
