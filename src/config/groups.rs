//! `groups:`: standalone tasks that ecscale places itself (StartTask onto the container
//! instances it chose), with a placement strategy and constraints.

use super::schema::{CollectSettings, MetricSpec};
use crate::read::yaml::{Node, Span, Value};
use crate::read::{join, one_of, read_named_list, Cx, FromNode};

/// A group of tasks of one task definition in one cluster, counted by its policy.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub name: String,
    pub cluster: String,
    /// `family:revision`, `family` (the latest ACTIVE revision) or an ARN.
    pub task_definition: String,
    pub placement: Placement,
    pub constraints: Vec<Constraint>,
    /// Metrics its policy reads (collected as `CLUSTER/group:NAME`).
    pub metrics: Vec<MetricSpec>,
    pub span: Span,
}

impl GroupSpec {
    /// What its tasks are started by (ECS's `startedBy`): how a restarted worker finds them.
    pub fn started_by(&self) -> String {
        format!("ecscale/{}", self.name)
    }

    /// The key its metrics are collected under (`CLUSTER/group:NAME`, as its target reads).
    pub fn metrics_key(&self) -> crate::model::ServiceKey {
        crate::model::ServiceKey::new(&self.cluster, format!("group:{}", self.name))
    }
}

/// Where new tasks go, and which go first at a scale-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Onto the instance with the least of `field` left that still fits: few instances busy.
    Binpack(Field),
    /// Evenly over availability zones (then instances), or over instances.
    Spread(SpreadBy),
    /// One task on every eligible ACTIVE instance; the count follows the instances.
    Daemon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Cpu,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpreadBy {
    Zone,
    Instance,
}

/// A rule an instance must meet to get a task of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// At most one task of the group per instance.
    DistinctInstance,
    /// `attribute:NAME == V`, `!= V`, `in [A, B]`, `not_in [A, B]`, `exists`.
    Attribute(AttributeExpr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeExpr {
    /// The attribute (`ecs.availability-zone`, `ecs.instance-type`, a custom one).
    pub name: String,
    pub op: AttrOp,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrOp {
    Eq,
    Ne,
    In,
    NotIn,
    Exists,
}

impl AttributeExpr {
    /// Whether an instance with these attributes meets it.
    pub fn holds(&self, attributes: &std::collections::BTreeMap<String, String>) -> bool {
        let v = attributes.get(&self.name);
        match self.op {
            AttrOp::Exists => v.is_some(),
            AttrOp::Eq | AttrOp::In => v.is_some_and(|v| self.values.contains(v)),
            AttrOp::Ne | AttrOp::NotIn => v.is_none_or(|v| !self.values.contains(v)),
        }
    }
}

/// Parses ECS's expression subset: `attribute:NAME OP …`. The error says where it went wrong.
pub fn parse_attribute(text: &str) -> Result<AttributeExpr, String> {
    let s = text.trim();
    let rest = s
        .strip_prefix("attribute:")
        .ok_or_else(|| format!("`{s}`: an expression starts with `attribute:NAME`"))?;
    let (name, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c))
    {
        return Err(format!("`{s}`: `{name}` is not an attribute name"));
    }
    let rest = rest.trim();
    let (op, operand) = [
        ("==", AttrOp::Eq),
        ("!=", AttrOp::Ne),
        ("not_in", AttrOp::NotIn),
        ("in", AttrOp::In),
        ("exists", AttrOp::Exists),
    ]
    .into_iter()
    .find_map(|(word, op)| Some((op, rest.strip_prefix(word)?)))
    .ok_or_else(|| {
        format!("`{s}`: after `attribute:{name}`, expected ==, !=, in, not_in or exists, found `{rest}`")
    })?;
    let operand = operand.trim();
    let values: Vec<String> = match op {
        AttrOp::Exists if operand.is_empty() => Vec::new(),
        AttrOp::Exists => return Err(format!("`{s}`: nothing may follow `exists`, found `{operand}`")),
        AttrOp::In | AttrOp::NotIn => {
            let inner = operand
                .strip_prefix('[')
                .and_then(|o| o.strip_suffix(']'))
                .ok_or_else(|| {
                    format!("`{s}`: a list in brackets must follow, such as [m5.large, m5.xlarge]")
                })?;
            inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        }
        _ => vec![operand.to_string()],
    };
    if op != AttrOp::Exists
        && (values.iter().all(String::is_empty) || values.iter().any(|v| v.contains(char::is_whitespace)))
    {
        return Err(format!(
            "`{s}`: expected a value (or a list of them) after the operator"
        ));
    }
    Ok(AttributeExpr {
        name: name.to_string(),
        op,
        values,
    })
}

fn read_placement(n: &Node, p: &str, cx: &mut Cx) -> Option<Placement> {
    let mut m = cx.map(n, p)?;
    let strategy = m.req_with(cx, "strategy", |n, p, cx| {
        one_of(n, p, cx, &["binpack", "spread", "daemon"])
    });
    let field = m.opt_with(cx, "field", |n, p, cx| one_of(n, p, cx, &["cpu", "memory"]));
    let by = m.opt_with(cx, "by", |n, p, cx| one_of(n, p, cx, &["zone", "instance"]));
    let placement = match strategy.as_deref() {
        Some("binpack") if by.is_none() => Some(Placement::Binpack(match field.as_deref() {
            Some("cpu") => Field::Cpu,
            _ => Field::Memory,
        })),
        Some("spread") if field.is_none() => Some(Placement::Spread(match by.as_deref() {
            Some("instance") => SpreadBy::Instance,
            _ => SpreadBy::Zone,
        })),
        Some("daemon") if field.is_none() && by.is_none() => Some(Placement::Daemon),
        Some(s) => {
            cx.error(
                m.span(),
                p,
                format!(
                    "`{s}` takes {}",
                    match s {
                        "binpack" => "`field` (cpu or memory), not `by`",
                        "spread" => "`by` (zone or instance), not `field`",
                        _ => "neither `field` nor `by`",
                    }
                ),
            );
            None
        }
        None => None,
    };
    m.finish(cx, &["strategy", "field", "by"]);
    placement
}

fn read_constraints(n: &Node, p: &str, cx: &mut Cx) -> Option<Vec<Constraint>> {
    let Value::Seq(items) = &n.value else {
        cx.error(
            n.span,
            p,
            format!("expected a list of constraints, found {}", n.describe()),
        );
        return None;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{p}[{i}]");
        let s = String::from_node(item, &path, cx)?;
        if s == "distinct_instance" {
            out.push(Constraint::DistinctInstance);
            continue;
        }
        match parse_attribute(&s) {
            Ok(e) => out.push(Constraint::Attribute(e)),
            Err(e) => cx.error(item.span, &path, format!("{e} (or `distinct_instance`)")),
        }
    }
    Some(out)
}

fn read_one(node: &Node, path: &str, cx: &mut Cx, collect: &CollectSettings) -> Option<GroupSpec> {
    let mut m = cx.map(node, path)?;
    let name = m.req_with(cx, "name", |n, p, cx| {
        let s = String::from_node(n, p, cx)?;
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        ok.then_some(s.clone()).or_else(|| {
            cx.error(
                n.span,
                p,
                format!("`{s}`: 1 to 64 letters, digits, - and _ (it goes into ECS's startedBy)"),
            );
            None
        })
    });
    let cluster = m.req::<String>(cx, "cluster");
    let task_definition = m.req::<String>(cx, "task_definition");
    let placement = m.req_with(cx, "placement", read_placement);
    let constraints = m
        .opt_with(cx, "constraints", read_constraints)
        .unwrap_or_default();
    let metrics = m
        .opt_with(cx, "metrics", |n, p, cx| {
            super::parse_clusters::read_metrics(n, p, cx, collect)
        })
        .unwrap_or_default();
    m.finish(
        cx,
        &[
            "name",
            "cluster",
            "task_definition",
            "placement",
            "constraints",
            "metrics",
        ],
    );
    Some(GroupSpec {
        name: name?,
        cluster: cluster?,
        task_definition: task_definition?,
        placement: placement?,
        constraints,
        metrics,
        span: node.span,
    })
}

pub(super) fn read_groups(
    node: &Node,
    path: &str,
    cx: &mut Cx,
    collect: &CollectSettings,
) -> Option<Vec<GroupSpec>> {
    read_named_list(
        node,
        path,
        cx,
        ("task group", "name"),
        |_, n, p, cx| read_one(n, p, cx, collect),
        |g| &g.name,
    )
}

/// Each group's cluster is one of `clusters`.
pub(super) fn check_clusters(groups: &[GroupSpec], clusters: &[super::ClusterSpec], cx: &mut Cx) {
    for g in groups {
        if !clusters.iter().any(|c| c.name == g.cluster) {
            cx.error(
                g.span,
                &join("groups", &g.name),
                format!("cluster `{}` is not in `clusters`", g.cluster),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expression_subset_reads_and_says_where_it_is_wrong() {
        let e = parse_attribute("attribute:ecs.instance-type in [m5.large, m5.xlarge]").unwrap();
        assert_eq!(
            (e.name.as_str(), e.op, e.values.len()),
            ("ecs.instance-type", AttrOp::In, 2)
        );
        let attrs = |t: &str| [("ecs.instance-type".to_string(), t.to_string())].into();
        assert!(e.holds(&attrs("m5.large")) && !e.holds(&attrs("t3.micro")));
        let ne = parse_attribute("attribute:ecs.availability-zone != us-east-1a").unwrap();
        assert!(
            ne.holds(&attrs("x")),
            "an instance without the attribute is not equal to it"
        );
        assert!(parse_attribute("attribute:gpu exists")
            .unwrap()
            .holds(&[("gpu".to_string(), "1".to_string())].into()));
        for (bad, says) in [
            (
                "ecs.instance-type == m5.large",
                "an expression starts with `attribute:NAME`",
            ),
            (
                "attribute:ecs.instance-type =~ m5.*",
                "expected ==, !=, in, not_in or exists, found `=~ m5.*`",
            ),
            (
                "attribute:ecs.instance-type in m5.large",
                "a list in brackets must follow",
            ),
            ("attribute:ecs.instance-type ==", "expected a value"),
            ("attribute:gpu exists yes", "nothing may follow `exists`"),
        ] {
            let e = parse_attribute(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
