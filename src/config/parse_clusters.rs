//! Reading `clusters`: each cluster's named services, discovery rule and metrics, with their
//! checks (ALB names, statistics, units, dimension placeholders, unique names).

use std::collections::BTreeMap;
use std::time::Duration;

use super::fields::{check_period, is_region};
use super::schema::*;
use crate::read::yaml::{Node, Value};
use crate::read::{join, one_of, read_named_list, Cx, FromNode, MapReader};

pub(super) fn read_clusters(
    node: &Node,
    path: &str,
    cx: &mut Cx,
    collect: &CollectSettings,
) -> Option<Vec<ClusterSpec>> {
    if matches!(&node.value, Value::Seq(items) if items.is_empty()) {
        cx.error(node.span, path, "name at least one cluster to manage");
        return None;
    }
    read_named_list(
        node,
        path,
        cx,
        ("cluster", "name"),
        |_, n, p, cx| read_cluster(n, p, cx, collect),
        |c| &c.name,
    )
}

fn read_cluster(node: &Node, path: &str, cx: &mut Cx, collect: &CollectSettings) -> Option<ClusterSpec> {
    let mut m = cx.map(node, path)?;
    let name = m.req::<String>(cx, "name");
    let services = m
        .opt_with(cx, "services", |n, p, cx| read_services(n, p, cx, collect))
        .unwrap_or_default();
    let discover = m.opt::<Discovery>(cx, "discover");
    let metrics = m
        .opt_with(cx, "metrics", |n, p, cx| read_metrics(n, p, cx, collect))
        .unwrap_or_default();
    let default_metrics = m.or(cx, "default_metrics", true);
    let region = m.opt_with(cx, "region", |n, p, cx| {
        let r = String::from_node(n, p, cx)?;
        if is_region(&r) {
            return Some(r);
        }
        cx.error(
            n.span,
            p,
            format!("`{r}` is not an AWS region (such as eu-west-1)"),
        );
        None
    });
    let role_arn = m.opt_with(cx, "role_arn", |n, p, cx| {
        let r = String::from_node(n, p, cx)?;
        if role_account(&r).is_some() {
            return Some(r);
        }
        cx.error(
            n.span,
            p,
            format!("`{r}` is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        );
        None
    });
    if !m.has("services") && !m.has("discover") {
        cx.error(
            m.span(),
            path,
            "give `services` (a list) or `discover` (name_prefix and/or tags), or both",
        );
    }
    m.finish(
        cx,
        &[
            "name",
            "services",
            "discover",
            "metrics",
            "default_metrics",
            "region",
            "role_arn",
        ],
    );
    Some(ClusterSpec {
        name: name?,
        services,
        discover,
        metrics,
        default_metrics,
        region,
        role_arn,
        span: node.span,
    })
}

/// The account of a role ARN (`arn:PARTITION:iam::ACCOUNT:role/NAME`), if it is one.
pub fn role_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_, partition, iam, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let ok = arn_ == "arn"
        && partition.starts_with("aws")
        && iam == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix("role/").is_some_and(|n| !n.is_empty());
    ok.then_some(account)
}

fn read_services(
    node: &Node,
    path: &str,
    cx: &mut Cx,
    collect: &CollectSettings,
) -> Option<Vec<ServiceSpec>> {
    read_named_list(
        node,
        path,
        cx,
        ("service", "name"),
        |_, n, p, cx| read_service(n, p, cx, collect),
        |s| &s.name,
    )
}

fn read_service(node: &Node, path: &str, cx: &mut Cx, collect: &CollectSettings) -> Option<ServiceSpec> {
    // A bare name is a service with every default.
    if let Some(name) = node.as_scalar() {
        return Some(ServiceSpec {
            name: name.to_string(),
            target_group: None,
            load_balancer: None,
            default_metrics: None,
            metrics: Vec::new(),
            span: node.span,
        });
    }
    let mut m = cx.map(node, path)?;
    let name = m.req::<String>(cx, "name");
    let target_group = m.opt_with(cx, "target_group", |n, p, cx| {
        arn_suffix(&String::from_node(n, p, cx)?, "targetgroup/", n, p, cx)
    });
    let load_balancer = m.opt_with(cx, "load_balancer", |n, p, cx| {
        arn_suffix(&String::from_node(n, p, cx)?, "app/", n, p, cx)
    });
    let default_metrics = m.opt(cx, "default_metrics");
    let metrics = m
        .opt_with(cx, "metrics", |n, p, cx| read_metrics(n, p, cx, collect))
        .unwrap_or_default();
    if m.has("load_balancer") && !m.has("target_group") {
        cx.error(
            m.span_of("load_balancer"),
            &join(path, "load_balancer"),
            "needs `target_group` too: ALB metrics are published per target group",
        );
    }
    m.finish(
        cx,
        &[
            "name",
            "target_group",
            "load_balancer",
            "default_metrics",
            "metrics",
        ],
    );
    Some(ServiceSpec {
        name: name?,
        target_group,
        load_balancer,
        default_metrics,
        metrics,
        span: node.span,
    })
}

/// CloudWatch names a target group `targetgroup/NAME/ID` and an ALB `app/NAME/ID`: the tail of
/// their ARNs. Accepts either form.
fn arn_suffix(s: &str, prefix: &str, n: &Node, p: &str, cx: &mut Cx) -> Option<String> {
    let tail = match s.find(&format!(":{prefix}")) {
        Some(i) if s.starts_with("arn:") => &s[i + 1..],
        _ => s,
    };
    let tail = tail.strip_prefix("loadbalancer/").unwrap_or(tail);
    let ok = tail.starts_with(prefix) && tail.split('/').count() == 3 && !tail.ends_with('/');
    if ok {
        Some(tail.to_string())
    } else {
        cx.error(
            n.span,
            p,
            format!("`{s}` is neither an ARN nor a `{prefix}NAME/ID` name"),
        );
        None
    }
}

impl FromNode for Discovery {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let mut m = cx.map(node, path)?;
        let name_prefix = m.opt(cx, "name_prefix");
        let tags = m.opt::<BTreeMap<String, String>>(cx, "tags").unwrap_or_default();
        if !m.has("name_prefix") && !m.has("tags") {
            cx.error(
                m.span(),
                path,
                "give `name_prefix`, `tags`, or both (otherwise every service would match)",
            );
        }
        m.finish(cx, &["name_prefix", "tags"]);
        Some(Discovery { name_prefix, tags })
    }
}

pub(super) fn read_metrics(
    node: &Node,
    path: &str,
    cx: &mut Cx,
    collect: &CollectSettings,
) -> Option<Vec<MetricSpec>> {
    read_named_list(
        node,
        path,
        cx,
        ("metric", "id"),
        |_, n, p, cx| read_metric(n, p, cx, collect),
        |m| &m.id,
    )
}

const STATS: &[&str] = &["Average", "Sum", "Minimum", "Maximum", "SampleCount", "IQM"];
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// A CloudWatch statistic: a basic one, or a percentile-style one such as `p95`, `p99.9`, `tm90`.
pub fn is_stat(s: &str) -> bool {
    if STATS.contains(&s) {
        return true;
    }
    ["p", "tm", "wm", "tc", "ts"].iter().any(|prefix| {
        s.strip_prefix(prefix)
            .and_then(|n| n.parse::<f64>().ok())
            .is_some_and(|v| (0.0..=100.0).contains(&v))
    })
}

fn read_metric(node: &Node, path: &str, cx: &mut Cx, collect: &CollectSettings) -> Option<MetricSpec> {
    let mut m = cx.map(node, path)?;
    let id = m.req_with(cx, "id", |n, p, cx| {
        let s = String::from_node(n, p, cx)?;
        let ok = s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Some(s)
        } else {
            cx.error(
                n.span,
                p,
                format!("`{s}`: ids are lowercase letters, digits and _, starting with a letter"),
            );
            None
        }
    });
    if m.has("prometheus") {
        let query = m.opt_with(cx, "prometheus", read_prom_query);
        return prometheus_metric(m, cx, collect, id, query);
    }
    let namespace = m.req::<String>(cx, "namespace");
    let metric_name = m.req::<String>(cx, "metric_name");
    let dimensions = m
        .opt_with(cx, "dimensions", |n, p, cx| {
            let dims = BTreeMap::<String, String>::from_node(n, p, cx)?;
            let mut ok = true;
            for (k, v) in &dims {
                if let Err(e) = check_placeholders(v) {
                    cx.error(n.span, &join(p, k), e);
                    ok = false;
                }
            }
            if dims.len() > 30 {
                cx.error(n.span, p, "CloudWatch allows at most 30 dimensions");
                ok = false;
            }
            ok.then_some(dims)
        })
        .unwrap_or_default();
    let stat = m.opt_with(cx, "stat", |n, p, cx| {
        let s = String::from_node(n, p, cx)?;
        if is_stat(&s) {
            Some(s)
        } else {
            cx.error(
                n.span,
                p,
                format!(
                    "`{s}` is not a CloudWatch statistic ({} or a percentile such as p95)",
                    STATS.join(", ")
                ),
            );
            None
        }
    });
    let period = m
        .opt_with(cx, "period", |n, p, cx| {
            check_period(Duration::from_node(n, p, cx)?, n, p, cx)
        })
        .unwrap_or(collect.period);
    let delay = m.or(cx, "delay", collect.delay);
    let unit = m.opt_with(cx, "unit", |n, p, cx| one_of(n, p, cx, UNITS));
    let per_task = m.or(cx, "per_task", false);
    if collect.lookback < period {
        cx.error(
            m.span(),
            &join(path, "period"),
            "is longer than collect.lookback: no datapoint would fit",
        );
    }
    m.finish(
        cx,
        &[
            "id",
            "namespace",
            "metric_name",
            "dimensions",
            "stat",
            "period",
            "delay",
            "unit",
            "per_task",
            "prometheus",
        ],
    );
    Some(MetricSpec {
        id: id?,
        namespace: namespace?,
        metric_name: metric_name?,
        dimensions,
        stat: stat.unwrap_or_else(|| "Average".to_string()),
        period,
        delay,
        unit_filter: unit.is_some(),
        unit,
        per_task,
        prometheus: None,
    })
}

/// `prometheus: {query, url?}` of a metric.
fn read_prom_query(n: &Node, p: &str, cx: &mut Cx) -> Option<PromQuery> {
    let mut q = cx.map(n, p)?;
    let query = q.req_with(cx, "query", |n, p, cx| {
        let s = String::from_node(n, p, cx)?;
        let bad = if s.trim().is_empty() {
            Some("an empty query".to_string())
        } else if s.len() > 8192 {
            Some(format!("a query of {} bytes (at most 8192)", s.len()))
        } else {
            check_placeholders(&s).err()
        };
        match bad {
            Some(e) => {
                cx.error(n.span, p, e);
                None
            }
            None => Some(s),
        }
    });
    let url = q.opt_with(cx, "url", |n, p, cx| {
        let u = String::from_node(n, p, cx)?;
        super::check_http_url(&u)
            .map_err(|e| cx.error(n.span, p, e))
            .ok()?;
        Some(u)
    });
    q.finish(cx, &["query", "url"]);
    Some(PromQuery { query: query?, url })
}

/// The rest of a metric read from Prometheus: CloudWatch's fields do not apply.
fn prometheus_metric(
    mut m: MapReader<'_>,
    cx: &mut Cx,
    collect: &CollectSettings,
    id: Option<String>,
    prometheus: Option<PromQuery>,
) -> Option<MetricSpec> {
    for key in ["namespace", "metric_name", "dimensions", "stat", "unit"] {
        if m.has(key) {
            cx.error(
                m.span_of(key),
                &join(m.path(), key),
                format!("`{key}` is CloudWatch's: a metric with `prometheus` is its query alone"),
            );
            m.take(key);
        }
    }
    let period = m
        .opt_with(cx, "period", |n, p, cx| {
            check_period(Duration::from_node(n, p, cx)?, n, p, cx)
        })
        .unwrap_or(collect.period);
    let delay = m.or(cx, "delay", collect.delay);
    let per_task = m.or(cx, "per_task", false);
    m.finish(cx, &["id", "prometheus", "period", "delay", "per_task"]);
    let (id, prometheus) = (id?, prometheus?);
    Some(MetricSpec {
        id,
        namespace: "Prometheus".into(),
        metric_name: prometheus.query.clone(),
        dimensions: BTreeMap::new(),
        stat: "value".into(),
        period,
        delay,
        unit: None,
        unit_filter: false,
        per_task,
        prometheus: Some(prometheus),
    })
}

/// Checks the `${name}` placeholders of a dimension value.
pub fn check_placeholders(v: &str) -> Result<(), String> {
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("`{v}`: `${{` without a closing `}}`"));
        };
        let name = &after[..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "`{v}`: unknown placeholder `${{{name}}}` (known: {})",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("${{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}
