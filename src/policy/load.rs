//! Reading policy files: every document a target policy, every mistake reported with
//! `file:line:column` and its field path (the same reader as the worker config).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    expression, external, predictive, scheduled, step_scaling, target_tracking, Cooldowns, MissingData, Rule,
    RuleSpec, StepLimit, TargetPolicy, KINDS,
};
use crate::model::TargetKey;
use crate::read::yaml::{Node, Span, Value};
use crate::read::{join, one_of, Cx, Diagnostics, FromNode, MapReader};

/// The target policies of one file.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub path: PathBuf,
    pub targets: Vec<TargetPolicy>,
}

/// Reads a policy file.
pub fn load_file(path: &Path) -> Result<PolicyFile, Diagnostics> {
    let display = path.display().to_string();
    let source = crate::read::read_source(path, "the policy file")?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&source, &display, &base).map(|targets| PolicyFile {
        path: path.to_path_buf(),
        targets,
    })
}

/// Reads policy documents from text; `base_dir` anchors relative plugin paths.
pub fn load_str(source: &str, file: &str, base_dir: &Path) -> Result<Vec<TargetPolicy>, Diagnostics> {
    let mut cx = Cx::new(file);
    let Some(docs) = crate::read::parse_yaml(source, &mut cx) else {
        return Err(Diagnostics(cx.diags));
    };
    if docs.is_empty() {
        cx.error(
            Span { line: 1, col: 1 },
            "(file)",
            "the policy file holds no policy",
        );
    }
    let multi = docs.len() > 1;
    let mut targets: Vec<TargetPolicy> = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        // With several documents, paths say which: `[1].rules[0].metric`.
        let path = if multi { format!("[{i}]") } else { String::new() };
        if let Some(t) = read_target_policy(doc, &path, &mut cx, base_dir) {
            if let Some(first) = targets.iter().find(|o| o.target == t.target) {
                cx.error(
                    doc.span,
                    &join(&path, "target"),
                    format!("{} already has a policy on line {}", t.target, first.span.line),
                );
            }
            targets.push(t);
        }
    }
    let mut diags = cx.diags;
    diags.sort_by_key(|d| d.span);
    if diags.is_empty() {
        Ok(targets)
    } else {
        Err(Diagnostics(diags))
    }
}

/// `max_step: {out, in}`; what is not given keeps `default`.
fn read_steps(
    n: &Node,
    p: &str,
    cx: &mut Cx,
    default: (StepLimit, StepLimit),
) -> Option<(StepLimit, StepLimit)> {
    let mut s = cx.map(n, p)?;
    let out = s.opt_with(cx, "out", read_step_limit);
    let inn = s.opt_with(cx, "in", read_step_limit);
    s.finish(cx, &["out", "in"]);
    Some((out.unwrap_or(default.0), inn.unwrap_or(default.1)))
}

/// A step cap: `4`, `100%`, `{count: 4, percent: 100}` (the larger of the two), or `unlimited`.
fn read_step_limit(n: &Node, p: &str, cx: &mut Cx) -> Option<StepLimit> {
    if let Value::Map(_) = n.value {
        let mut m = cx.map(n, p)?;
        let count = m.opt::<u32>(cx, "count");
        let percent = m.opt_with(cx, "percent", read_percent);
        m.finish(cx, &["count", "percent"]);
        return Some(StepLimit { count, percent });
    }
    let s = n.as_scalar().unwrap_or_default();
    if s == "unlimited" {
        return Some(StepLimit::default());
    }
    if s.ends_with('%') {
        return read_percent(n, p, cx).map(|p| StepLimit {
            count: None,
            percent: Some(p),
        });
    }
    match s.parse::<u32>() {
        Ok(c) if c >= 1 => Some(StepLimit {
            count: Some(c),
            percent: None,
        }),
        _ => {
            cx.error(
                n.span,
                p,
                format!(
                    "expected a count (4), a percentage (100%), {{count, percent}} or `unlimited`, found {}",
                    n.describe()
                ),
            );
            None
        }
    }
}

fn read_percent(n: &Node, p: &str, cx: &mut Cx) -> Option<f64> {
    let s = n.as_scalar().unwrap_or_default().trim();
    match s.trim_end_matches('%').trim().parse::<f64>() {
        Ok(v) if v > 0.0 => Some(v),
        _ => {
            cx.error(
                n.span,
                p,
                format!(
                    "expected a percentage above 0 such as 50%, found {}",
                    n.describe()
                ),
            );
            None
        }
    }
}

fn read_missing(n: &Node, p: &str, cx: &mut Cx) -> Option<MissingData> {
    if let Value::Map(_) = n.value {
        let mut m = cx.map(n, p)?;
        let v = m.req::<f64>(cx, "assume");
        m.finish(cx, &["assume"]);
        return v.map(MissingData::Assume);
    }
    match one_of(n, p, cx, &["hold", "block_scale_in"])?.as_str() {
        "hold" => Some(MissingData::Hold),
        _ => Some(MissingData::BlockScaleIn),
    }
}

fn read_cooldowns(n: &Node, p: &str, cx: &mut Cx, default: Cooldowns) -> Option<Cooldowns> {
    let mut m = cx.map(n, p)?;
    let scale_out = m.or(cx, "scale_out", default.scale_out);
    let scale_in = m.or(cx, "scale_in", default.scale_in);
    m.finish(cx, &["scale_out", "scale_in"]);
    Some(Cooldowns { scale_out, scale_in })
}

fn read_target(n: &Node, p: &str, cx: &mut Cx) -> Option<TargetKey> {
    let mut m = cx.map(n, p)?;
    let cluster = m.opt::<String>(cx, "cluster");
    let service = m.opt::<String>(cx, "service");
    let group = m.opt::<String>(cx, "group");
    let asg = m.opt::<String>(cx, "auto_scaling_group");
    let span = m.span();
    m.finish(cx, &["cluster", "service", "group", "auto_scaling_group"]);
    match (cluster, service, group, asg) {
        (Some(c), Some(s), None, None) => Some(TargetKey::service(c, s)),
        (Some(cluster), None, Some(group), None) => Some(TargetKey::TaskGroup {
            cluster: cluster.into(),
            group: group.into(),
        }),
        (None, None, None, Some(name)) => Some(TargetKey::AutoScalingGroup { name: name.into() }),
        _ => {
            cx.error(
                span,
                p,
                "give `cluster` and `service` (an ECS service), `cluster` and `group` (tasks ecscale places, `groups:` in the config), or `auto_scaling_group` (EC2 capacity)",
            );
            None
        }
    }
}

const TARGET_KEYS: &[&str] = &[
    "target",
    "min",
    "max",
    "cooldown",
    "scale_in_stabilization",
    "max_step",
    "missing_data",
    "rules",
];
const RULE_KEYS: &[&str] = &["name", "kind", "cooldown", "max_step"];

/// What a rule takes from its target unless it sets its own.
struct RuleDefaults {
    cooldown: Cooldowns,
    steps: (StepLimit, StepLimit),
}

fn read_target_policy(doc: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<TargetPolicy> {
    let mut m = cx.map(doc, path)?;
    let target = m.req_with(cx, "target", read_target);
    let min = m.req::<u32>(cx, "min");
    let max = m.req_with(cx, "max", |n, p, cx| {
        let v = u32::from_node(n, p, cx)?;
        (v >= 1).then_some(v).or_else(|| {
            cx.error(n.span, p, "must be at least 1");
            None
        })
    });
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            cx.error(
                m.span_of("max"),
                &join(path, "max"),
                format!("is below min ({lo})"),
            );
        }
    }
    let cooldown = m
        .opt_with(cx, "cooldown", |n, p, cx| {
            read_cooldowns(n, p, cx, Cooldowns::default())
        })
        .unwrap_or_default();
    let scale_in_stabilization = m.or(cx, "scale_in_stabilization", Duration::from_secs(300));
    let steps = m
        .opt_with(cx, "max_step", |n, p, cx| {
            read_steps(n, p, cx, (DEFAULT_STEP_OUT, StepLimit::default()))
        })
        .unwrap_or((DEFAULT_STEP_OUT, StepLimit::default()));
    let (max_step_out, max_step_in) = steps;
    let (missing_data, default_missing) = m
        .opt_with(cx, "missing_data", read_missing_data)
        .unwrap_or_else(|| (BTreeMap::new(), MissingData::BlockScaleIn));
    let defaults = RuleDefaults { cooldown, steps };
    let rules = m.req_with(cx, "rules", |n, p, cx| read_rules(n, p, cx, &defaults, base_dir));
    m.finish(cx, TARGET_KEYS);

    let (target, min, max, rules) = (target?, min?, max?, rules?);
    check_windows(&rules, min, max, path, cx);
    check_missing_data(&rules, &missing_data, doc, path, cx);
    Some(TargetPolicy {
        target,
        min,
        max,
        cooldown,
        scale_in_stabilization,
        max_step_out,
        max_step_in,
        missing_data,
        default_missing,
        rules,
        file: cx.file().to_string(),
        span: doc.span,
    })
}

/// `missing_data`: metric ids (and `default`) to behaviours; the default is `block_scale_in`.
fn read_missing_data(n: &Node, p: &str, cx: &mut Cx) -> Option<(BTreeMap<String, MissingData>, MissingData)> {
    let Value::Map(entries) = &n.value else {
        cx.error(
            n.span,
            p,
            format!("expected metric ids to behaviours, found {}", n.describe()),
        );
        return None;
    };
    let mut out = BTreeMap::new();
    let mut default = MissingData::BlockScaleIn;
    for (k, v) in entries {
        let key = k.as_scalar().unwrap_or_default();
        let Some(b) = read_missing(v, &join(p, key), cx) else {
            continue;
        };
        if key == "default" {
            default = b;
        } else {
            out.insert(key.to_string(), b);
        }
    }
    Some((out, default))
}

/// A scheduled window's bounds, with the policy's filling in, must make sense together.
fn check_windows(rules: &[Rule], min: u32, max: u32, path: &str, cx: &mut Cx) {
    for rule in rules {
        if let RuleSpec::Scheduled(s) = &rule.spec {
            for w in &s.windows {
                let (lo, hi) = (w.min.unwrap_or(min), w.max.unwrap_or(max));
                if lo > hi {
                    cx.error(
                        w.span,
                        &format!("{}.rules.{}", path, rule.name),
                        format!(
                            "window `{}` gives min {lo} and max {hi} (with the policy's bounds filling in)",
                            w.name
                        ),
                    );
                }
            }
        }
    }
}

/// Missing-data settings for metrics no rule reads are likely typos.
fn check_missing_data(
    rules: &[Rule],
    missing_data: &BTreeMap<String, MissingData>,
    doc: &Node,
    path: &str,
    cx: &mut Cx,
) {
    let read: Vec<&str> = rules.iter().flat_map(|r| r.spec.policy().metrics()).collect();
    for metric in missing_data.keys() {
        if !read.contains(&metric.as_str()) {
            cx.error(
                m_span_of_missing(doc),
                &join(&join(path, "missing_data"), metric),
                format!(
                    "no rule reads `{metric}` (rules read: {})",
                    if read.is_empty() {
                        "no metrics".into()
                    } else {
                        read.join(", ")
                    }
                ),
            );
        }
    }
}

/// Where `missing_data` is in a document (for the unused-key check).
fn m_span_of_missing(doc: &Node) -> Span {
    match &doc.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some("missing_data"))
            .map_or(doc.span, |(_, v)| v.span),
        _ => doc.span,
    }
}

/// The most rules one target's policy may have (each is evaluated on every tick).
pub const MAX_RULES: usize = 100;

/// The default scale-out cap: double, or 4 more, whichever is larger (as Kubernetes' HPA).
const DEFAULT_STEP_OUT: StepLimit = StepLimit {
    count: Some(4),
    percent: Some(100.0),
};

fn read_rules(n: &Node, p: &str, cx: &mut Cx, defaults: &RuleDefaults, base_dir: &Path) -> Option<Vec<Rule>> {
    let items = crate::read::non_empty_seq(n, p, cx, "rule", "give at least one rule")?;
    if items.len() > MAX_RULES {
        cx.error(
            n.span,
            p,
            format!(
                "{} rules, more than the {MAX_RULES} a target may have",
                items.len()
            ),
        );
        return None;
    }
    let mut rules: Vec<Rule> = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let rp = format!("{p}[{i}]");
        let Some(mut m) = cx.map(item, &rp) else {
            ok = false;
            continue;
        };
        let kind = m.req_with(cx, "kind", |n, p, cx| one_of(n, p, cx, KINDS));
        let name = m.opt::<String>(cx, "name");
        let cooldown = m
            .opt_with(cx, "cooldown", |n, p, cx| {
                read_cooldowns(n, p, cx, defaults.cooldown)
            })
            .unwrap_or(defaults.cooldown);
        let (max_step_out, max_step_in) = m
            .opt_with(cx, "max_step", |n, p, cx| read_steps(n, p, cx, defaults.steps))
            .unwrap_or(defaults.steps);
        let (spec, keys) = read_spec(kind.as_deref(), &mut m, cx, base_dir);
        let all_keys: Vec<&str> = RULE_KEYS.iter().chain(keys).copied().collect();
        m.finish(cx, &all_keys);
        // A rule that did not read still holds its given name: a second rule of that name is
        // reported in the same pass, not in the next one.
        let name = name.or_else(|| spec.as_ref().map(|s| s.kind().to_string()));
        if let Some(name) = name.as_ref().filter(|n| !names.insert((*n).clone())) {
            let same_kind = spec.as_ref().is_some_and(|s| {
                rules
                    .iter()
                    .any(|r| *r.name == **name && r.spec.kind() == s.kind())
            });
            let hint = if same_kind {
                "; give each rule of the same kind a `name`"
            } else {
                ""
            };
            cx.error(
                item.span,
                &join(&rp, "name"),
                format!("another rule is already called `{name}`{hint}"),
            );
            ok = false;
        }
        let (Some(spec), Some(name)) = (spec, name) else {
            ok = false;
            continue;
        };
        rules.push(Rule {
            name: name.into(),
            spec,
            cooldown,
            max_step_out,
            max_step_in,
            span: item.span,
        });
    }
    ok &= foreseen_has_a_forecast(&rules, p, cx);
    ok.then_some(rules)
}

/// A rule's own fields, by its kind, and the keys they take.
fn read_spec(
    kind: Option<&str>,
    m: &mut MapReader<'_>,
    cx: &mut Cx,
    base_dir: &Path,
) -> (Option<RuleSpec>, &'static [&'static str]) {
    match kind {
        Some("target_tracking") => (
            target_tracking::TargetTracking::read(m, cx).map(RuleSpec::TargetTracking),
            target_tracking::KEYS,
        ),
        Some("step_scaling") => (
            step_scaling::StepScaling::read(m, cx).map(RuleSpec::StepScaling),
            step_scaling::KEYS,
        ),
        Some("scheduled") => (
            scheduled::Scheduled::read(m, cx).map(RuleSpec::Scheduled),
            scheduled::KEYS,
        ),
        Some("predictive") => (
            predictive::Predictive::read(m, cx).map(RuleSpec::Predictive),
            predictive::KEYS,
        ),
        Some("expression") => (
            expression::Expression::read(m, cx).map(RuleSpec::Expression),
            expression::KEYS,
        ),
        Some("external") => (
            external::External::read(m, cx, base_dir).map(RuleSpec::External),
            external::KEYS,
        ),
        // Unknown kind: reported already; skip the keys so they are not all called unknown.
        _ => {
            skip_all(m);
            (None, &[])
        }
    }
}

/// A `foreseen_target` applies while a counted predictive rule of the same target forecasts:
/// without one it would never apply, which is a mistake worth naming.
fn foreseen_has_a_forecast(rules: &[Rule], p: &str, cx: &mut Cx) -> bool {
    let forecasts = rules.iter().any(|r| r.spec.forecasts());
    let mut ok = true;
    for (i, r) in rules.iter().enumerate() {
        if r.spec.follows_forecast() && !forecasts {
            cx.error(
                r.span,
                &format!("{p}[{i}].foreseen_target"),
                "applies while a predictive rule of this target forecasts, and this target has no counted predictive rule".to_string(),
            );
            ok = false;
        }
    }
    ok
}

/// Marks every key of a rule of unknown kind as read.
fn skip_all(m: &mut MapReader<'_>) {
    let keys: Vec<String> = m.keys().map(str::to_string).collect();
    for k in keys {
        m.take(&k);
    }
}

/// Reads policy files: all their mistakes (one target having two policies, across files too),
/// or the files.
pub fn load_files(files: &[std::path::PathBuf]) -> Result<Vec<PolicyFile>, Diagnostics> {
    let mut diags = Vec::new();
    let mut out = Vec::new();
    for f in files {
        match load_file(f) {
            Ok(p) => out.push(p),
            Err(d) => diags.extend(d.0),
        }
    }
    diags.extend(duplicate_targets(&out));
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(Diagnostics(diags))
    }
}

/// A target given a policy in more than one place, at each place after the first.
pub fn duplicate_targets(files: &[PolicyFile]) -> Vec<crate::config::Diagnostic> {
    let mut diags = Vec::new();
    let mut seen: Vec<(&crate::model::TargetKey, &TargetPolicy)> = Vec::new();
    for t in files.iter().flat_map(|f| f.targets.iter()) {
        match seen.iter().find(|(k, _)| *k == &t.target) {
            Some((_, first)) => diags.push(crate::config::Diagnostic {
                file: t.file.clone(),
                span: t.span,
                path: "target".into(),
                message: format!("{} already has a policy at {}", t.target, first.location()),
            }),
            None => seen.push((&t.target, t)),
        }
    }
    diags
}

/// Loads the policies a config names and checks them against it (targets, metrics).
pub fn load_for(config: &crate::config::Config) -> Result<Vec<PolicyFile>, Diagnostics> {
    let files = load_files(&config.policy_files)?;
    let diags = super::check_against_config(config, &files);
    if diags.is_empty() {
        Ok(files)
    } else {
        Err(Diagnostics(diags))
    }
}
