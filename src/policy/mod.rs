//! Scaling policies: what SREs write in `policies/*.yaml`, validated into runtime objects.
//!
//! A policy file holds one or more YAML documents, each a [`TargetPolicy`]: the target (an ECS
//! service or an Auto Scaling group), its bounds, engine settings (cooldowns, scale-in
//! stabilization, step caps, missing-data behaviour) and its rules. A rule is one of the closed
//! set of kinds in [`RuleSpec`]: adding a kind makes the compiler list every place that must
//! handle it. User plugins are the `external` kind, not a string registry.
//!
//! Rules only recommend ([`Policy::evaluate`]); combining, clamping, cooldowns, stabilization
//! and missing data are the engine's (`crate::evaluate::engine`).

pub mod expression;
pub mod external;
mod fields;
pub mod forecast;
mod load;
pub mod predictive;
pub mod scheduled;
pub mod step_scaling;
pub mod target_tracking;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::eval_io::{ActiveWindow, EvalInput, Recommendation};
use crate::model::TargetKey;
use crate::read::yaml::Span;

pub use load::{duplicate_targets, load_file, load_files, load_for, load_str, PolicyFile};

/// What every rule kind can do.
pub trait Policy: Send + Sync + fmt::Debug {
    /// Its recommendation for this tick. Pure: everything it may use is in `input`.
    fn evaluate(&self, input: &EvalInput<'_>) -> Recommendation;

    /// The metric ids it reads (for checks against the collected metrics).
    fn metrics(&self) -> Vec<&str>;

    /// One line for `ecscale policy check`.
    fn summary(&self) -> String;

    /// Windows in force at `now` whose bounds replace the policy's (scheduled rules).
    fn windows(&self, _now: chrono::DateTime<chrono::Utc>) -> Vec<ActiveWindow<'_>> {
        Vec::new()
    }

    /// Whether the rule sets bounds and explicit counts from a schedule rather than voting
    /// on metrics: its `desired` skips cooldowns and step caps.
    fn is_schedule(&self) -> bool {
        false
    }

    /// Whether its vote is counted (a forecast-only rule's is recorded, not counted).
    fn counts(&self) -> bool {
        true
    }

    /// Its recommendation, and whether it forecasts this tick from a learned daily pattern (a
    /// predictive rule with the history it asks for): what
    /// [`crate::eval_io::EvalInput::foreseen`] tells the others.
    fn evaluate_foreseeing(&self, input: &EvalInput<'_>) -> (Recommendation, bool) {
        (self.evaluate(input), false)
    }

    /// The metric it keeps at a target value, and that value (for back-test totals).
    fn tracks(&self) -> Option<(&str, f64)> {
        None
    }

    /// How far the values it read (`inputs`, a decision's) are from making it ask for a change,
    /// relative to the threshold: 0 at or past one. `None`: it cannot say (no threshold).
    fn margin(&self, _inputs: &std::collections::BTreeMap<std::sync::Arc<str>, f64>) -> Option<f64> {
        None
    }

    /// A metric whose long history it needs, how far back, and how often to read it again.
    fn history(&self) -> Option<(&str, std::time::Duration, std::time::Duration)> {
        None
    }

    /// A metric whose recent datapoints it reads further back than a pass usually keeps, and
    /// how far: the worker's `collect.lookback` must cover it.
    fn window(&self) -> Option<(&str, std::time::Duration)> {
        None
    }
}

/// The rule kinds.
#[derive(Debug, Clone)]
pub enum RuleSpec {
    TargetTracking(target_tracking::TargetTracking),
    StepScaling(step_scaling::StepScaling),
    Scheduled(scheduled::Scheduled),
    Predictive(predictive::Predictive),
    Expression(expression::Expression),
    External(external::External),
}

impl RuleSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            RuleSpec::TargetTracking(_) => "target_tracking",
            RuleSpec::StepScaling(_) => "step_scaling",
            RuleSpec::Scheduled(_) => "scheduled",
            RuleSpec::Predictive(_) => "predictive",
            RuleSpec::Expression(_) => "expression",
            RuleSpec::External(_) => "external",
        }
    }

    pub fn policy(&self) -> &dyn Policy {
        match self {
            RuleSpec::TargetTracking(p) => p,
            RuleSpec::StepScaling(p) => p,
            RuleSpec::Scheduled(p) => p,
            RuleSpec::Predictive(p) => p,
            RuleSpec::Expression(p) => p,
            RuleSpec::External(p) => p,
        }
    }

    /// A predictive rule whose vote counts: what a `foreseen_target` follows.
    pub fn forecasts(&self) -> bool {
        matches!(self, RuleSpec::Predictive(_)) && self.policy().counts()
    }

    /// A rule with a target of its own for while a forecast is in force.
    pub fn follows_forecast(&self) -> bool {
        matches!(self, RuleSpec::TargetTracking(t) if t.foreseen_target.is_some())
    }
}

/// Every kind, as written in `kind:`.
pub const KINDS: &[&str] = &[
    "target_tracking",
    "step_scaling",
    "scheduled",
    "predictive",
    "expression",
    "external",
];

/// Waits after an action before the next one in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldowns {
    /// After a scale-out, before the next scale-out.
    pub scale_out: Duration,
    /// After any action, before a scale-in.
    pub scale_in: Duration,
}

impl Default for Cooldowns {
    fn default() -> Self {
        Cooldowns {
            scale_out: Duration::from_secs(60),
            scale_in: Duration::from_secs(300),
        }
    }
}

/// One rule of a target.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique within its target; defaults to `KIND` or `KIND-N`. Shared with every vote and
    /// decision that names it.
    pub name: std::sync::Arc<str>,
    pub spec: RuleSpec,
    /// The rule's own, else the target's.
    pub cooldown: Cooldowns,
    /// Caps per tick when this rule decides: the rule's own, else the target's.
    pub max_step_out: StepLimit,
    pub max_step_in: StepLimit,
    pub span: Span,
}

/// What happens when a rule's metric has no value for a period it needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MissingData {
    /// The target holds: no scale-out, no scale-in this tick.
    Hold,
    /// Other rules may scale out; nothing scales in.
    BlockScaleIn,
    /// Missing periods read as this value; a scale-in never rests on an assumed value.
    Assume(f64),
}

impl fmt::Display for MissingData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissingData::Hold => f.write_str("hold"),
            MissingData::BlockScaleIn => f.write_str("block_scale_in"),
            MissingData::Assume(v) => write!(f, "assume {v}"),
        }
    }
}

/// How far one tick may move the count: at most `count`, or `percent` of the current count,
/// whichever is larger (at least 1). `None` for both: no cap.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepLimit {
    pub count: Option<u32>,
    pub percent: Option<f64>,
}

impl StepLimit {
    /// The largest move allowed from `current`.
    pub fn allowed(&self, current: u32) -> u32 {
        match (self.count, self.percent) {
            (None, None) => u32::MAX,
            (c, p) => {
                let by_pct = p.map_or(0, |p| (f64::from(current) * p / 100.0).ceil() as u32);
                c.unwrap_or(0).max(by_pct).max(1)
            }
        }
    }
}

impl fmt::Display for StepLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.count, self.percent) {
            (None, None) => f.write_str("unlimited"),
            (Some(c), None) => write!(f, "{c}"),
            (None, Some(p)) => write!(f, "{p}%"),
            (Some(c), Some(p)) => write!(f, "max({c}, {p}%)"),
        }
    }
}

/// The scaling policy of one target.
#[derive(Debug, Clone)]
pub struct TargetPolicy {
    pub target: TargetKey,
    pub min: u32,
    pub max: u32,
    /// Defaults for the rules.
    pub cooldown: Cooldowns,
    /// A scale-in goes only as low as the highest recommendation within this window.
    pub scale_in_stabilization: Duration,
    /// Caps per tick.
    pub max_step_out: StepLimit,
    pub max_step_in: StepLimit,
    /// Per metric id; `default_missing` for the others.
    pub missing_data: BTreeMap<String, MissingData>,
    pub default_missing: MissingData,
    pub rules: Vec<Rule>,
    /// Where the document starts, for messages.
    pub file: String,
    pub span: Span,
}

/// The bounds in force, and what set them.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    /// `min`, or `schedule:RULE/WINDOW` when a window raised it.
    pub min_source: std::borrow::Cow<'static, str>,
    pub max_source: std::borrow::Cow<'static, str>,
    /// Windows in force whose `desired` is yet to be applied: (key, rule, count).
    pub pending_desired: Vec<(String, String, u32)>,
}

fn window_key(rule: &str, window: &str, start: DateTime<Utc>) -> String {
    format!("{rule}/{window}@{}", start.to_rfc3339())
}

impl TargetPolicy {
    /// The bounds in force at `now` (scheduled windows included). Windows' `desired` are listed
    /// whether or not applied already; the engine filters with its state.
    pub fn bounds(&self, now: DateTime<Utc>) -> Bounds {
        let policy = self;
        let mut b = Bounds {
            min: policy.min,
            max: policy.max,
            min_source: "min".into(),
            max_source: "max".into(),
            pending_desired: Vec::new(),
        };
        // The highest bound among windows in force, and which window set it.
        let mut best_min: Option<(u32, String)> = None;
        let mut best_max: Option<(u32, String)> = None;
        // Only scheduled rules have windows; the rest are passed over without a call.
        for rule in &policy.rules {
            let RuleSpec::Scheduled(scheduled) = &rule.spec else {
                continue;
            };
            for w in scheduled.windows(now) {
                let source = format!("schedule:{}/{}", rule.name, w.name);
                if let Some(m) = w.min {
                    if best_min.as_ref().is_none_or(|(v, _)| m > *v) {
                        best_min = Some((m, source.clone()));
                    }
                }
                if let Some(m) = w.max {
                    if best_max.as_ref().is_none_or(|(v, _)| m > *v) {
                        best_max = Some((m, source.clone()));
                    }
                }
                if let Some(d) = w.desired {
                    b.pending_desired.push((
                        window_key(&rule.name, w.name, w.started),
                        rule.name.to_string(),
                        d,
                    ));
                }
            }
        }
        if let Some((m, s)) = best_min {
            b.min = m;
            b.min_source = s.into();
        }
        if let Some((m, s)) = best_max {
            b.max = m;
            b.max_source = s.into();
        }
        if b.min > b.max {
            b.max = b.min;
        }
        b
    }

    /// How near the target is to a change, from its last decision: 0 when a rule asked for
    /// one (or is at a threshold), else the smallest of its rules' margins; `None` when no rule
    /// can say. A pass the read budget cannot cover reads the nearest first.
    pub fn margin(&self, d: &crate::model::Decision) -> Option<f64> {
        if d.recommendation != d.current {
            return Some(0.0);
        }
        self.rules
            .iter()
            .filter_map(|r| r.spec.policy().margin(&d.inputs))
            .min_by(f64::total_cmp)
    }

    /// The missing-data behaviour of a metric.
    pub fn missing_for(&self, metric: &str) -> MissingData {
        self.missing_data
            .get(metric)
            .copied()
            .unwrap_or(self.default_missing)
    }

    /// `file:line` of the document.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.span.line)
    }
}

/// Checks policies against the worker config: each service target must be a configured
/// service (or in a cluster that discovers services), and each metric a rule reads must be one
/// that is collected for it. Returns the mistakes, at the policy's or the rule's line.
pub fn check_against_config(
    config: &crate::config::Config,
    files: &[PolicyFile],
) -> Vec<crate::config::Diagnostic> {
    use crate::config::Diagnostic;
    let mut out = Vec::new();
    // A group that is not a daemon is counted by its policy: without one nothing is placed.
    for g in config
        .groups
        .iter()
        .filter(|g| g.placement != crate::config::Placement::Daemon)
    {
        let target = TargetKey::TaskGroup {
            cluster: g.cluster.as_str().into(),
            group: g.name.as_str().into(),
        };
        if !files.iter().flat_map(|f| &f.targets).any(|t| t.target == target) {
            out.push(Diagnostic {
                file: config.file.display().to_string(),
                span: g.span,
                path: format!("groups.{}", g.name),
                message: format!(
                    "no policy file has a policy for it (target: {{cluster: {}, group: {}}}); only a daemon group needs none",
                    g.cluster, g.name
                ),
            });
        }
    }
    for file in files {
        for t in &file.targets {
            let at = |span: Span, path: String, message: String| Diagnostic {
                file: t.file.clone(),
                span,
                path,
                message,
            };
            for (i, rule) in t.rules.iter().enumerate() {
                if let Some(d) = lookback_short(config, rule) {
                    out.push(at(rule.span, format!("rules[{i}]"), d));
                }
            }
            out.extend(match &t.target {
                TargetKey::Service { cluster, service } => check_service(config, t, cluster, service, &at),
                TargetKey::AutoScalingGroup { name } => check_group(config, t, name, &at),
                TargetKey::TaskGroup { cluster, group } => check_task_group(config, t, cluster, group, &at),
            });
        }
    }
    out
}

/// A service's policy: its cluster is configured, the service is named there (or discovered),
/// and each metric its rules read is collected for it.
fn check_service(
    config: &crate::config::Config,
    t: &TargetPolicy,
    cluster: &str,
    service: &str,
    at: &dyn Fn(Span, String, String) -> crate::config::Diagnostic,
) -> Vec<crate::config::Diagnostic> {
    let mut out = Vec::new();
    let Some(c) = config.clusters.iter().find(|c| c.name == cluster) else {
        let known: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        out.push(at(
            t.span,
            "target.cluster".into(),
            format!(
                "cluster `{cluster}` is not in {} (clusters: {})",
                config.file.display(),
                known.join(", ")
            ),
        ));
        return out;
    };
    let named = c
        .services
        .iter()
        .find(|s| crate::model::arn_name(&s.name) == service);
    if named.is_none() && c.discover.is_none() {
        out.push(at(
            t.span,
            "target.service".into(),
            format!(
                "service `{service}` is not among cluster {cluster}'s services in {} and the cluster discovers none",
                config.file.display()
            ),
        ));
        return out;
    }
    // Collected for sure, and (without a configured target group) what a target group
    // that ECS reports attached would add.
    let configured_tg = named.is_some_and(|s| s.target_group.is_some());
    let ids = |tg: bool| -> Vec<String> {
        c.metrics_of(named, &config.collect, tg)
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    let mut known = ids(configured_tg);
    known.sort();
    let with_attached: Vec<String> = ids(true).into_iter().filter(|id| !known.contains(id)).collect();
    let listing = if with_attached.is_empty() {
        known.join(", ")
    } else {
        format!(
            "{}; {} when ECS reports a target group",
            known.join(", "),
            with_attached.join(", ")
        )
    };
    for (i, rule) in t.rules.iter().enumerate() {
        for metric in rule.spec.policy().metrics() {
            if !known.iter().chain(&with_attached).any(|k| k == metric) {
                out.push(at(
                    rule.span,
                    format!("rules[{i}]"),
                    format!(
                        "rule `{}` reads `{metric}`, which is not collected for {cluster}/{service} (collected: {listing})",
                        rule.name
                    ),
                ));
            }
        }
    }
    out
}

/// Why the worker's lookback is too short for the datapoints a rule reads, if it is.
fn lookback_short(config: &crate::config::Config, rule: &Rule) -> Option<String> {
    let (metric, window) = rule.spec.policy().window()?;
    let lookback = config.collect.lookback;
    (window > lookback).then(|| {
        format!(
            "rule `{}` reads {} of `{metric}`, and collect.lookback in {} keeps {}: give collect.lookback: {} or more",
            rule.name,
            humantime::format_duration(window),
            config.file.display(),
            humantime::format_duration(lookback),
            humantime::format_duration(window)
        )
    })
}

/// A task group's policy: the group must be in `groups:`, its metrics among the group's.
fn check_task_group(
    config: &crate::config::Config,
    t: &TargetPolicy,
    cluster: &str,
    group: &str,
    at: &dyn Fn(Span, String, String) -> crate::config::Diagnostic,
) -> Vec<crate::config::Diagnostic> {
    let Some(spec) = config
        .groups
        .iter()
        .find(|g| g.name == group && g.cluster == cluster)
    else {
        let known: Vec<String> = config
            .groups
            .iter()
            .map(|g| format!("{}/{}", g.cluster, g.name))
            .collect();
        return vec![at(
            t.span,
            "target.group".into(),
            format!(
                "task group `{group}` of cluster `{cluster}` is not in `groups` of {} ({})",
                config.file.display(),
                if known.is_empty() {
                    "which names none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )];
    };
    let ids: Vec<&str> = spec.metrics.iter().map(|m| m.id.as_str()).collect();
    let mut out = Vec::new();
    for (i, rule) in t.rules.iter().enumerate() {
        for metric in rule.spec.policy().metrics() {
            if !ids.contains(&metric) {
                out.push(at(
                    rule.span,
                    format!("rules[{i}]"),
                    format!(
                        "rule `{}` reads `{metric}`, which group {group}'s metrics do not include ({})",
                        rule.name,
                        if ids.is_empty() {
                            "it has none".to_string()
                        } else {
                            ids.join(", ")
                        }
                    ),
                ));
            }
        }
    }
    out
}

/// A capacity policy: its group must be in `capacity:`, its metrics among the cluster-level ones.
fn check_group(
    config: &crate::config::Config,
    t: &TargetPolicy,
    name: &str,
    at: &dyn Fn(Span, String, String) -> crate::config::Diagnostic,
) -> Vec<crate::config::Diagnostic> {
    let mut out = Vec::new();
    let Some(spec) = config.capacity.iter().find(|c| c.auto_scaling_group == name) else {
        let known: Vec<&str> = config
            .capacity
            .iter()
            .map(|c| c.auto_scaling_group.as_str())
            .collect();
        out.push(at(
            t.span,
            "target.auto_scaling_group".into(),
            format!(
                "Auto Scaling group `{name}` is not in `capacity` of {} ({})",
                config.file.display(),
                if known.is_empty() {
                    "which names none".to_string()
                } else {
                    format!("groups: {}", known.join(", "))
                }
            ),
        ));
        return out;
    };
    let known: Vec<String> = crate::config::capacity_metrics(&config.collect)
        .into_iter()
        .map(|m| m.id)
        .collect();
    for (i, rule) in t.rules.iter().enumerate() {
        for metric in rule.spec.policy().metrics() {
            if !known.iter().any(|k| k == metric) {
                out.push(at(
                    rule.span,
                    format!("rules[{i}]"),
                    format!(
                        "rule `{}` reads `{metric}`, which is not collected for group {name} of cluster {} (collected: {})",
                        rule.name,
                        spec.cluster,
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    out
}

impl TargetPolicy {
    /// The policy's main knob: the first target-tracking rule's target (its CPU target, say).
    pub fn main_target(&self) -> Option<f64> {
        self.rules.iter().find_map(|r| match &r.spec {
            RuleSpec::TargetTracking(t) => Some(t.target),
            _ => None,
        })
    }

    /// This policy with every utilization target scaled by `factor`: target-tracking targets
    /// and their foreseen targets, predictive loads per task. The main knob a frontier sweeps,
    /// moving the rules together so they stay consistent. `None` when a scaled target would
    /// reach its rule's saturation, or its urgent value.
    pub fn with_targets_scaled(&self, factor: f64) -> Option<TargetPolicy> {
        if !(factor.is_finite() && factor > 0.0) {
            return None;
        }
        let mut p = self.clone();
        for rule in &mut p.rules {
            match &mut rule.spec {
                RuleSpec::TargetTracking(t) => {
                    t.target *= factor;
                    if let Some(f) = &mut t.foreseen_target {
                        *f *= factor;
                    }
                    // The saturation and the urgent value are the service's, not targets:
                    // they stay, and a target at or past them makes no policy.
                    let top = t.foreseen_target.unwrap_or(t.target);
                    if t.saturation.is_some_and(|c| top >= c) || t.urgent.is_some_and(|u| t.target >= u) {
                        return None;
                    }
                }
                RuleSpec::Predictive(pr) => pr.target_per_task *= factor,
                _ => {}
            }
        }
        Some(p)
    }
}
