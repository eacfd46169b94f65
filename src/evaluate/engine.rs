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
use crate::format::{push_text, text};
use crate::model::{Action, Decision, Vote, VoteStatus};
use crate::policy::{Bounds, MissingData, Rule, TargetPolicy};

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

/// A counted wish of one rule: its vote (with the reason) is `votes[vote]`.
#[derive(Clone, Copy)]
struct Wish<'r> {
    rule: &'r Rule,
    count: u32,
    vote: usize,
}

fn until(t: DateTime<Utc>) -> crate::format::Clock {
    crate::format::clock(t)
}

/// Decides for one target. `externals` holds the answers of its external rules, by rule name.
pub fn decide(
    policy: &TargetPolicy,
    obs: &Observation<'_>,
    state: &TargetState,
    externals: &BTreeMap<String, Result<Answer, String>>,
) -> Decision {
    let assume = |id: &str| match policy.missing_for(id) {
        MissingData::Assume(v) => Some(v),
        _ => None,
    };
    let cx = Context {
        policy,
        obs,
        state,
        externals,
        bounds: policy.bounds(obs.now),
        served: state.running.with_look(obs.now, obs.running),
        assume: &assume,
    };
    let ballot = cx.ballot();
    let (recommendation, decider, reason) = ballot.combine(obs.current);
    let limited = cx.limit(recommendation, decider, reason);
    let current = obs.current;
    let (desired, mut rule_name, reason) = cx.clamp(limited, recommendation, decider);
    let action = match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Action::ScaleOut,
        std::cmp::Ordering::Less => Action::ScaleIn,
        std::cmp::Ordering::Equal => Action::Hold,
    };
    if action == Action::Hold && recommendation == current {
        rule_name = None;
    }
    Decision {
        target: policy.target.clone(),
        at: obs.now,
        current,
        running: obs.running,
        desired,
        action,
        min: cx.bounds.min,
        max: cx.bounds.max,
        rule: rule_name,
        reason,
        recommendation,
        inputs: ballot.inputs,
        votes: ballot.votes,
    }
}

/// What one decision reads: the policy, the observation, the engine's memory, the plugins'
/// answers, and the bounds in force.
struct Context<'a> {
    policy: &'a TargetPolicy,
    obs: &'a Observation<'a>,
    state: &'a TargetState,
    externals: &'a BTreeMap<String, Result<Answer, String>>,
    bounds: Bounds,
    served: std::borrow::Cow<'a, RunningHistory>,
    assume: &'a dyn Fn(&str) -> Option<f64>,
}

/// The rules' votes of one tick, sorted by what they mean for the count.
#[derive(Default)]
struct Ballot<'r> {
    votes: Vec<Vote>,
    inputs: BTreeMap<std::sync::Arc<str>, f64>,
    /// The wishes for more tasks and for fewer: the largest count of each (the last such
    /// rule), and the first for fewer. No vector: a wish is kept only if it may decide.
    out: Wishes<'r>,
    inn: Wishes<'r>,
    /// How many rules keep the count (or cannot say): they block a scale-in. Their votes are
    /// those whose status keeps the count.
    blockers: usize,
    /// Rules that want this very count.
    holds: usize,
    /// A rule blind on a metric whose missing data holds the target.
    freeze: Option<(&'r Rule, String)>,
}

/// The wishes one way that may decide: the first, and the largest count (the last of equals).
#[derive(Default)]
struct Wishes<'r> {
    first: Option<Wish<'r>>,
    largest: Option<Wish<'r>>,
}

impl<'r> Wishes<'r> {
    fn push(&mut self, w: Wish<'r>) {
        if self.first.is_none() {
            self.first = Some(w);
        }
        if self.largest.as_ref().is_none_or(|l| w.count >= l.count) {
            self.largest = Some(w);
        }
    }
}

/// A count with the rule that set it and the reason so far.
struct Limited<'r> {
    desired: u32,
    decider: Option<&'r Rule>,
    reason: String,
}

impl<'a> Context<'a> {
    /// What a metric rule reads this tick.
    fn input<'s>(&'s self, rule: &'s str, foreseen: bool) -> EvalInput<'s> {
        let o = self.obs;
        let mut input = EvalInput::new(o.now, o.current, o.metrics, self.assume, self.externals);
        input.rule = rule;
        input.foreseen = foreseen;
        input.running = o.running;
        input.pending = o.pending;
        input.min = self.bounds.min;
        input.max = self.bounds.max;
        input.last_scale_out = self.state.last_scale_out;
        input.last_scale_in = self.state.last_scale_in;
        input.served = &self.served;
        input
    }

    /// Every rule's vote. When a rule follows a forecast, the forecasts vote first, once, so
    /// the rules that follow know whether a learned day is in force; their votes are counted in
    /// turn.
    fn ballot(&self) -> Ballot<'a> {
        let rules = &self.policy.rules;
        // Filled only when a rule follows a forecast (no allocation otherwise).
        let mut early: Vec<Option<(Recommendation, bool)>> = Vec::new();
        let mut foreseen = false;
        if rules.iter().any(|r| r.spec.follows_forecast()) {
            early.resize_with(rules.len(), || None);
            for (i, rule) in rules.iter().enumerate().filter(|(_, r)| r.spec.forecasts()) {
                let input = self.input(&rule.name, false);
                let (rec, learned) = rule.spec.policy().evaluate_foreseeing(&input);
                foreseen |= learned;
                early[i] = Some((rec, input.used_assumed()));
            }
        }
        let mut ballot = Ballot::sized(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let early = early.get_mut(i).and_then(Option::take);
            if rule.spec.policy().is_schedule() {
                self.schedule_vote(rule, &mut ballot);
                continue;
            }
            let (rec, assumed) = early.unwrap_or_else(|| {
                let input = self.input(&rule.name, foreseen);
                let rec = rule.spec.policy().evaluate(&input);
                (rec, input.used_assumed())
            });
            ballot.count(self.policy, rule, rec, assumed, self.obs.current);
        }
        ballot
    }

    /// A scheduled rule: the window's `desired` when it starts (up or down: other rules may
    /// still want more), else no opinion.
    fn schedule_vote(&self, rule: &'a Rule, ballot: &mut Ballot<'a>) {
        let o = self.obs;
        let pending = self
            .bounds
            .pending_desired
            .iter()
            .find(|(key, r, _)| **r == *rule.name && !self.state.applied_windows.contains(key));
        let input = EvalInput::new(o.now, o.current, o.metrics, self.assume, self.externals);
        let reason = match rule.spec.policy().evaluate(&input) {
            Recommendation::Abstain { reason } => reason,
            _ => String::new(),
        };
        let Some((_, _, d)) = pending else {
            ballot.votes.push(vote(rule, VoteStatus::Abstains, None, reason));
            return;
        };
        let wish = Wish {
            rule,
            count: *d,
            vote: ballot.votes.len(),
        };
        let reason = format!("{reason}: the window starts, desired {d}");
        ballot.votes.push(vote(rule, VoteStatus::Wants, Some(*d), reason));
        if *d >= o.current {
            ballot.out.push(wish);
        } else {
            ballot.inn.push(wish);
        }
    }

    /// Steps 4 and 5: the deciding rule's cooldowns, the scale-in stabilization and the step
    /// caps. A window's `desired` is a count an operator chose: none of them applies.
    fn limit(&self, recommendation: u32, decider: Option<&'a Rule>, reason: String) -> Limited<'a> {
        let mut l = Limited {
            desired: recommendation,
            decider,
            reason,
        };
        let explicit = decider.is_some_and(|r| r.spec.policy().is_schedule());
        let current = self.obs.current;
        if explicit || l.desired == current {
            return l;
        }
        if l.desired > current {
            self.limit_out(&mut l);
        } else {
            self.limit_in(&mut l);
        }
        l
    }

    fn limit_out(&self, l: &mut Limited<'a>) {
        let (policy, current) = (self.policy, self.obs.current);
        let cd = l.decider.map_or(policy.cooldown, |r| r.cooldown).scale_out;
        if let Some(ends) = self.state.last_scale_out.map(|t| after(t, cd)) {
            if self.obs.now < ends {
                push_text! {l.reason; "; held: scale-out cooldown until ", until(ends)};
                l.desired = current;
            }
        }
        let cap = l.decider.map_or(policy.max_step_out, |r| r.max_step_out);
        let allowed = cap.allowed(current);
        if l.desired > current && l.desired - current > allowed {
            l.desired = current + allowed;
            note(
                &mut l.reason,
                format_args!("capped at +{allowed} per tick (max_step.out {cap})"),
            );
        }
    }

    fn limit_in(&self, l: &mut Limited<'a>) {
        let (policy, state, current) = (self.policy, self.state, self.obs.current);
        let cd = l.decider.map_or(policy.cooldown, |r| r.cooldown).scale_in;
        let last = state.last_scale_in.max(state.last_scale_out);
        if let Some(ends) = last.map(|t| after(t, cd)) {
            if self.obs.now < ends {
                push_text! {l.reason; "; held: scale-in cooldown until ", until(ends)};
                l.desired = current;
            }
        }
        if l.desired < current {
            self.stabilize(l);
        }
        let cap = l.decider.map_or(policy.max_step_in, |r| r.max_step_in);
        let allowed = cap.allowed(current);
        if l.desired < current && current - l.desired > allowed {
            l.desired = current - allowed;
            note(
                &mut l.reason,
                format_args!("capped at -{allowed} per tick (max_step.in {cap})"),
            );
        }
    }

    /// A scale-in goes no lower than the highest recommendation within the stabilization window.
    fn stabilize(&self, l: &mut Limited<'a>) {
        let window = self.policy.scale_in_stabilization;
        let window_start = self.obs.now - TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
        let highest = self
            .state
            .recommendations
            .iter()
            .filter(|(t, _)| *t > window_start)
            .map(|(_, c)| *c)
            .max()
            .unwrap_or(0);
        if highest > l.desired {
            note(
                &mut l.reason,
                format_args!(
                    "stabilized: {} was recommended within the last {}",
                    highest,
                    humantime::format_duration(window)
                ),
            );
            l.desired = highest.min(self.obs.current);
        }
    }

    /// Step 6: the bounds, last, so the count is always within them (outside them, the count
    /// moves whatever the cooldowns). Returns the count, the rule (or bound) named, the reason.
    fn clamp(
        &self,
        l: Limited<'a>,
        recommendation: u32,
        decider: Option<&Rule>,
    ) -> (u32, Option<std::sync::Arc<str>>, String) {
        let (b, current) = (&self.bounds, self.obs.current);
        let Limited {
            mut desired,
            mut reason,
            ..
        } = l;
        let mut rule_name = decider.map(|r| r.name.clone());
        if desired < b.min {
            if current < b.min || recommendation < b.min {
                note(
                    &mut reason,
                    format_args!("raised to the minimum {} ({})", b.min, b.min_source),
                );
            }
            if decider.is_none() || current < b.min {
                rule_name = Some(b.min_source.as_ref().into());
            }
            desired = b.min;
        } else if desired > b.max {
            note(
                &mut reason,
                format_args!("limited to the maximum {} ({})", b.max, b.max_source),
            );
            if current > b.max {
                rule_name = Some(b.max_source.as_ref().into());
            }
            desired = b.max;
        }
        (desired, rule_name, reason)
    }
}

impl<'r> Ballot<'r> {
    /// Counts one metric rule's recommendation.
    fn count(
        &mut self,
        policy: &TargetPolicy,
        rule: &'r Rule,
        rec: Recommendation,
        assumed: bool,
        current: u32,
    ) {
        let forecast_only = !rule.spec.policy().counts();
        match rec {
            Recommendation::Wants {
                count,
                reason,
                inputs,
            } => {
                self.inputs.extend(inputs);
                if forecast_only {
                    self.votes
                        .push(vote(rule, VoteStatus::ForecastOnly, Some(count), reason));
                } else if count > current {
                    let vote_at = self.votes.len();
                    self.votes
                        .push(vote(rule, VoteStatus::Wants, Some(count), reason));
                    self.out.push(Wish {
                        rule,
                        count,
                        vote: vote_at,
                    });
                } else if count < current && assumed {
                    let mut reason = reason;
                    reason.push_str("; not scaling in on an assumed value (missing_data: assume)");
                    self.hold(rule, reason, current, false);
                } else if count < current {
                    let vote_at = self.votes.len();
                    self.votes
                        .push(vote(rule, VoteStatus::Wants, Some(count), reason));
                    self.inn.push(Wish {
                        rule,
                        count,
                        vote: vote_at,
                    });
                } else {
                    self.hold(rule, reason, current, true);
                }
            }
            Recommendation::Abstain { reason } => {
                self.votes.push(vote(rule, VoteStatus::Abstains, None, reason))
            }
            Recommendation::Missing { metric, mut reason } => {
                let behaviour = policy.missing_for(&metric);
                let _ = write!(reason, " (missing_data: {behaviour})");
                if behaviour == MissingData::Hold && self.freeze.is_none() {
                    self.freeze = Some((rule, reason.clone()));
                }
                self.blockers += 1;
                self.votes.push(vote(rule, VoteStatus::MissingData, None, reason));
            }
            Recommendation::Error { mut reason } => {
                reason.push_str("; holding");
                self.blockers += 1;
                self.votes.push(vote(rule, VoteStatus::Error, None, reason));
            }
        }
    }

    /// A rule that keeps the count: it blocks a scale-in (and, when it wants this very count,
    /// is a reason to hold).
    fn hold(&mut self, rule: &'r Rule, reason: String, current: u32, wants_this: bool) {
        self.blockers += 1;
        self.votes
            .push(vote(rule, VoteStatus::Holds, Some(current), reason));
        if wants_this {
            self.holds += 1;
        }
    }

    /// Step 3: out if any rule wants more (the largest), in only when every counted rule wants
    /// less (to the highest of their counts), else hold. The count, the deciding rule, why.
    fn combine(&self, current: u32) -> (u32, Option<&'r Rule>, String) {
        if let Some((rule, why)) = &self.freeze {
            return (current, Some(*rule), text! {why, ": the target holds"});
        }
        if let Some(w) = &self.out.largest {
            return (w.count, Some(w.rule), self.reason_of(w));
        }
        if let Some(w) = self.inn.largest.as_ref().filter(|_| self.blockers == 0) {
            return (w.count, Some(w.rule), self.reason_of(w));
        }
        if let Some(w) = &self.inn.first {
            return (current, Some(w.rule), self.blocked(w));
        }
        if self.holds == 0 && self.blockers == 0 {
            return (current, None, "no rule asked for a change".to_string());
        }
        let kept = || self.votes.iter().filter(|v| v.status.keeps_the_count());
        let mut why = String::with_capacity(kept().map(|v| v.reason.len() + 2).sum());
        for (k, v) in kept().enumerate() {
            if k > 0 {
                why.push_str("; ");
            }
            why.push_str(&v.reason);
        }
        (current, None, why)
    }
}

impl Ballot<'_> {
    /// Room for every rule's vote: grown one push at a time, the vector was reallocated on
    /// most ticks of most targets.
    fn sized(rules: usize) -> Self {
        Ballot {
            votes: Vec::with_capacity(rules),
            ..Ballot::default()
        }
    }

    /// A scale-in that not every rule agrees to: its reason, and each blocker's, written once
    /// into one string.
    fn blocked(&self, w: &Wish<'_>) -> String {
        const HEAD: &str = " — no scale-in: not every rule agrees (";
        let given = &self.votes[w.vote].reason;
        let blockers = || self.votes.iter().filter(|v| v.status.keeps_the_count());
        let size = blockers()
            .map(|v| v.rule.len() + v.reason.len() + 4)
            .sum::<usize>();
        let mut why = String::with_capacity(given.len() + HEAD.len() + size + 1);
        why.push_str(given);
        why.push_str(HEAD);
        for (k, v) in blockers().enumerate() {
            if k > 0 {
                why.push_str("; ");
            }
            why.push_str(&v.rule);
            why.push_str(": ");
            why.push_str(&v.reason);
        }
        why.push(')');
        why
    }

    /// A deciding wish's reason, with room for what the limits may add (a cooldown, a cap).
    fn reason_of(&self, w: &Wish<'_>) -> String {
        let given = &self.votes[w.vote].reason;
        let mut reason = String::with_capacity(given.len() + 64);
        reason.push_str(given);
        reason
    }
}

fn vote(rule: &Rule, status: VoteStatus, wants: Option<u32>, reason: String) -> Vote {
    Vote {
        rule: rule.name.clone(),
        kind: rule.spec.kind().into(),
        status,
        wants,
        reason,
    }
}

/// Adds a clause to a reason, written in place.
fn note(reason: &mut String, text: std::fmt::Arguments<'_>) {
    let _ = write!(reason, "; {text}");
}

/// `t` plus `d` (a duration too long to add is forever).
fn after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    t + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
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
        let pending = policy.bounds(d.at).pending_desired;
        if applied || d.action == Action::Hold {
            for (key, rule, count) in &pending {
                let voted = d
                    .votes
                    .iter()
                    .any(|v| *v.rule == **rule && v.wants == Some(*count));
                if voted && !self.applied_windows.contains(key) {
                    self.applied_windows.push(key.clone());
                }
            }
        }
        // Keep only windows still in force.
        self.applied_windows
            .retain(|k| pending.iter().any(|(p, _, _)| p == k));
    }
}
