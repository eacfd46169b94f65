//! A policy's numeric knobs, as the tuner moves them: where each is written in the file (so a
//! tuned file keeps its comments and layout: only those values change), the range it may take,
//! and how a value reaches the typed policy the simulator runs.
//!
//! Knobs are those the service target's document writes: targets (a target-tracking rule's
//! `foreseen_target` moves with its `target`), tolerance, datapoints, `lead`, the noise guard,
//! a predictive rule's load per task and confidence, the cooldowns and the scale-in
//! stabilization. A key the file leaves out keeps its default.

use std::time::Duration;

use crate::policy::{RuleSpec, TargetPolicy};
use crate::read::yaml::{Node, Span, Value};

/// How a knob's value is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// A number, with this many decimals.
    Number(usize),
    /// A fraction written as a percentage (`6%`), or as a plain fraction.
    Fraction {
        percent: bool,
    },
    Count,
    /// Seconds, written as `45s`, `5m`.
    Duration,
}

/// Which field a knob sets.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    CooldownOut,
    CooldownIn,
    Stabilization,
    RuleCooldownOut(usize),
    RuleCooldownIn(usize),
    Target(usize),
    Tolerance(usize),
    OutDatapoints(usize),
    InDatapoints(usize),
    Lead(usize),
    NoiseGuard(usize),
    NoiseAbsorbed(usize),
    PerTask(usize),
    Confidence(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Knob {
    /// As the file names it: `rules[0].target` (with the rule's name: `cpu.target`).
    pub name: String,
    pub unit: Unit,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
    /// Where its value is written (a target-tracking target and its foreseen target: two), and
    /// the text written there.
    pub at: Vec<(Span, String)>,
    field: Field,
    /// For a target: the foreseen target's distance above it.
    offset: Option<f64>,
}

/// The mapping entries of `node`.
fn entries(node: &Node) -> &[(Node, Node)] {
    match &node.value {
        Value::Map(e) => e,
        _ => &[],
    }
}

fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    entries(node)
        .iter()
        .find(|(k, _)| k.as_scalar() == Some(key))
        .map(|(_, v)| v)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A knob at `node`'s scalar, when the file writes one there.
fn knob(
    name: String,
    node: Option<&Node>,
    unit: Unit,
    value: f64,
    range: (f64, f64, f64),
    field: Field,
) -> Option<Knob> {
    let n = node.filter(|n| n.as_scalar().is_some())?;
    let unit = match unit {
        Unit::Fraction { .. } => Unit::Fraction {
            percent: n.as_scalar().is_some_and(|s| s.trim_end().ends_with('%')),
        },
        u => u,
    };
    Some(Knob {
        name,
        unit,
        value,
        lo: range.0,
        hi: range.1,
        step: range.2,
        at: vec![(n.span, n.as_scalar().unwrap_or_default().to_string())],
        field,
        offset: None,
    })
}

/// The knobs of `policy`, the service target read from `doc`.
pub fn of(policy: &TargetPolicy, doc: &Node) -> Vec<Knob> {
    let cooldown = get(doc, "cooldown");
    let t = policy;
    let mut out: Vec<Knob> = [
        knob(
            "cooldown.scale_out".into(),
            cooldown.and_then(|c| get(c, "scale_out")),
            Unit::Duration,
            secs(t.cooldown.scale_out),
            (0.0, 300.0, 10.0),
            Field::CooldownOut,
        ),
        knob(
            "cooldown.scale_in".into(),
            cooldown.and_then(|c| get(c, "scale_in")),
            Unit::Duration,
            secs(t.cooldown.scale_in),
            (0.0, 900.0, 30.0),
            Field::CooldownIn,
        ),
        knob(
            "scale_in_stabilization".into(),
            get(doc, "scale_in_stabilization"),
            Unit::Duration,
            secs(t.scale_in_stabilization),
            (0.0, 900.0, 30.0),
            Field::Stabilization,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let rules: &[Node] = match get(doc, "rules").map(|r| &r.value) {
        Some(Value::Seq(s)) => s,
        _ => &[],
    };
    for (i, (rule, node)) in t.rules.iter().zip(rules).enumerate() {
        out.extend(rule_knobs(i, rule, node));
    }
    out
}

/// The knobs of rule `i`, written at `node`.
fn rule_knobs(i: usize, rule: &crate::policy::Rule, node: &Node) -> Vec<Knob> {
    let at = At {
        i,
        rule: &rule.name,
        node,
    };
    let mut out = Vec::new();
    if let Some(c) = get(node, "cooldown") {
        out.push(knob(
            at.name("cooldown.scale_out"),
            get(c, "scale_out"),
            Unit::Duration,
            secs(rule.cooldown.scale_out),
            (0.0, 300.0, 10.0),
            Field::RuleCooldownOut(i),
        ));
        out.push(knob(
            at.name("cooldown.scale_in"),
            get(c, "scale_in"),
            Unit::Duration,
            secs(rule.cooldown.scale_in),
            (0.0, 900.0, 30.0),
            Field::RuleCooldownIn(i),
        ));
    }
    match &rule.spec {
        RuleSpec::TargetTracking(tt) => out.extend(tracking_knobs(&at, tt)),
        RuleSpec::Predictive(p) => out.extend(predictive_knobs(&at, p)),
        _ => {}
    }
    out.into_iter().flatten().collect()
}

/// Where a rule's knobs are written: rule `i`, named `rule`, at `node`.
struct At<'a> {
    i: usize,
    rule: &'a str,
    node: &'a Node,
}

impl At<'_> {
    fn name(&self, key: &str) -> String {
        format!("{}.{key}", self.rule)
    }

    /// A knob written at `key` of the rule.
    fn knob(&self, key: &str, unit: Unit, value: f64, range: (f64, f64, f64), field: Field) -> Option<Knob> {
        knob(self.name(key), get(self.node, key), unit, value, range, field)
    }
}

/// A target tracking rule's knobs.
fn tracking_knobs(at: &At, tt: &crate::policy::target_tracking::TargetTracking) -> Vec<Option<Knob>> {
    let (i, node) = (at.i, at.node);
    let mut out = Vec::new();
    // Below the saturation and the urgent value, which must stay above the target.
    let top = tt
        .saturation
        .into_iter()
        .chain(tt.urgent)
        .fold(f64::INFINITY, f64::min)
        - 1.0;
    let offset = tt.foreseen_target.map(|f| f - tt.target);
    let hi = (tt.target * 1.4).min(top - offset.unwrap_or(0.0));
    let decimals = usize::from(tt.target.fract() != 0.0);
    let mut target = at.knob(
        "target",
        Unit::Number(decimals),
        tt.target,
        (tt.target * 0.6, hi, (tt.target * 0.04).max(0.5)),
        Field::Target(i),
    );
    if let (Some(off), Some(k)) = (offset, target.as_mut()) {
        if let Some(f) = get(node, "foreseen_target") {
            k.at.push((f.span, f.as_scalar().unwrap_or_default().to_string()));
        }
        k.offset = Some(off);
    }
    out.push(target);
    out.push(at.knob(
        "tolerance",
        Unit::Fraction { percent: true },
        tt.tolerance,
        (0.02, 0.2, 0.02),
        Field::Tolerance(i),
    ));
    out.push(at.knob(
        "scale_out_datapoints",
        Unit::Count,
        tt.scale_out_datapoints as f64,
        (1.0, 6.0, 1.0),
        Field::OutDatapoints(i),
    ));
    out.push(at.knob(
        "scale_in_datapoints",
        Unit::Count,
        tt.scale_in_datapoints as f64,
        (1.0, 15.0, 1.0),
        Field::InDatapoints(i),
    ));
    out.push(at.knob(
        "lead",
        Unit::Duration,
        tt.lead.map_or(0.0, secs),
        (0.0, 180.0, 15.0),
        Field::Lead(i),
    ));
    // A burst guard needs a noise guard shorter than its span: never 0s, never as long.
    let guard = match tt.burst_recurrence {
        Some(span) => (30.0, (secs(span) - 30.0).clamp(30.0, 300.0), 30.0),
        None => (0.0, 300.0, 30.0),
    };
    out.push(at.knob(
        "noise_guard",
        Unit::Duration,
        tt.noise_guard.map_or(0.0, secs),
        guard,
        Field::NoiseGuard(i),
    ));
    out.push(at.knob(
        "noise_absorbed",
        Unit::Fraction { percent: true },
        tt.noise_absorbed,
        (0.0, 0.5, 0.05),
        Field::NoiseAbsorbed(i),
    ));
    out
}

/// A predictive rule's knobs.
fn predictive_knobs(at: &At, p: &crate::policy::predictive::Predictive) -> Vec<Option<Knob>> {
    let i = at.i;
    vec![
        at.knob(
            "target_per_task",
            Unit::Number(0),
            p.target_per_task,
            (
                p.target_per_task * 0.6,
                p.target_per_task * 1.4,
                p.target_per_task * 0.04,
            ),
            Field::PerTask(i),
        ),
        at.knob(
            "confidence",
            Unit::Number(2),
            p.confidence,
            (0.5, 0.99, 0.05),
            Field::Confidence(i),
        ),
    ]
}

impl Knob {
    /// `v` within the knob's range, on its grid (whole counts, whole seconds).
    pub fn clamp(&self, v: f64) -> f64 {
        let v = v.clamp(self.lo, self.hi.max(self.lo));
        match self.unit {
            Unit::Count => v.round(),
            Unit::Duration => (v / 5.0).round() * 5.0,
            Unit::Number(0) => v.round(),
            Unit::Number(d) => {
                let f = 10f64.powi(d as i32);
                (v * f).round() / f
            }
            Unit::Fraction { .. } => (v * 100.0).round() / 100.0,
        }
    }

    /// The value as the file writes it, for each place it is written.
    pub fn texts(&self, v: f64) -> Vec<String> {
        let one = |v: f64| match self.unit {
            Unit::Number(d) => format!("{v:.d$}"),
            Unit::Count => format!("{v:.0}"),
            Unit::Fraction { percent: true } => format!("{:.0}%", v * 100.0),
            Unit::Fraction { percent: false } => format!("{v:.2}"),
            Unit::Duration => {
                humantime::format_duration(Duration::from_secs(v.round().max(0.0) as u64)).to_string()
            }
        };
        let mut out = vec![one(v)];
        if let Some(off) = self.offset {
            out.push(one(v + off));
        }
        out
    }

    /// Sets this knob to `v` in `p`.
    pub fn apply(&self, p: &mut TargetPolicy, v: f64) {
        let d = Duration::from_secs(v.round().max(0.0) as u64);
        let some = |d: Duration| (!d.is_zero()).then_some(d);
        match self.field {
            Field::CooldownOut => {
                let old = p.cooldown.scale_out;
                p.cooldown.scale_out = d;
                for r in p.rules.iter_mut().filter(|r| r.cooldown.scale_out == old) {
                    r.cooldown.scale_out = d;
                }
            }
            Field::CooldownIn => {
                let old = p.cooldown.scale_in;
                p.cooldown.scale_in = d;
                for r in p.rules.iter_mut().filter(|r| r.cooldown.scale_in == old) {
                    r.cooldown.scale_in = d;
                }
            }
            Field::Stabilization => p.scale_in_stabilization = d,
            Field::RuleCooldownOut(i) => p.rules[i].cooldown.scale_out = d,
            Field::RuleCooldownIn(i) => p.rules[i].cooldown.scale_in = d,
            Field::PerTask(i) | Field::Confidence(i) => {
                if let RuleSpec::Predictive(pr) = &mut p.rules[i].spec {
                    match self.field {
                        Field::PerTask(_) => pr.target_per_task = v,
                        _ => pr.confidence = v,
                    }
                }
            }
            Field::Target(i)
            | Field::Tolerance(i)
            | Field::OutDatapoints(i)
            | Field::InDatapoints(i)
            | Field::Lead(i)
            | Field::NoiseGuard(i)
            | Field::NoiseAbsorbed(i) => {
                let RuleSpec::TargetTracking(tt) = &mut p.rules[i].spec else {
                    return;
                };
                match self.field {
                    Field::Target(_) => {
                        tt.target = v;
                        if let Some(off) = self.offset {
                            tt.foreseen_target = Some(v + off);
                        }
                    }
                    Field::Tolerance(_) => tt.tolerance = v,
                    Field::OutDatapoints(_) => tt.scale_out_datapoints = v.round().max(1.0) as usize,
                    Field::InDatapoints(_) => tt.scale_in_datapoints = v.round().max(1.0) as usize,
                    Field::Lead(_) => tt.lead = some(d),
                    Field::NoiseGuard(_) => tt.noise_guard = some(d),
                    _ => tt.noise_absorbed = v,
                }
            }
        }
    }
}

/// The edits that write `values` (one per knob) over the file's own.
pub fn edits(knobs: &[Knob], values: &[f64]) -> Vec<(Span, String, String)> {
    let mut out = Vec::new();
    for (k, v) in knobs.iter().zip(values) {
        if (*v - k.value).abs() < 1e-12 {
            continue;
        }
        for ((span, old), new) in k.at.iter().zip(k.texts(*v)) {
            out.push((*span, old.clone(), new));
        }
    }
    out
}

/// `source` with the scalars at `edits` replaced (each checked to be the scalar `old` there).
pub fn rewrite(source: &str, edits: &[(Span, String, String)]) -> Result<String, String> {
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let mut starts = Vec::with_capacity(lines.len());
    let mut at = 0;
    for l in &lines {
        starts.push(at);
        at += l.len();
    }
    let mut byte_edits: Vec<(usize, usize, String)> = Vec::new();
    for (span, old, new) in edits {
        let line = lines
            .get(span.line.wrapping_sub(1))
            .ok_or_else(|| format!("line {} is not in the file", span.line))?;
        let col = line
            .char_indices()
            .nth(span.col.saturating_sub(1))
            .map(|(b, _)| b)
            .ok_or_else(|| format!("{span}: past the end of its line"))?;
        if !line[col..].starts_with(old.as_str()) {
            return Err(format!("{span}: `{old}` is not written there"));
        }
        let start = starts[span.line - 1] + col;
        // A comment after the value keeps its column: the spaces before it give or take.
        let rest = &line[col + old.len()..];
        let spaces = rest.len() - rest.trim_start_matches(' ').len();
        let (end, text) = if rest[spaces..].starts_with('#') && spaces > 0 {
            let pad = (spaces + old.chars().count())
                .saturating_sub(new.chars().count())
                .max(1);
            (start + old.len() + spaces, format!("{new}{}", " ".repeat(pad)))
        } else {
            (start + old.len(), new.clone())
        };
        byte_edits.push((start, end, text));
    }
    byte_edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = source.to_string();
    for (a, b, new) in byte_edits {
        out.replace_range(a..b, &new);
    }
    Ok(out)
}
