//! Kibana dashboards: saved objects (7.10 format, so Kibana 7/8 and OpenSearch Dashboards import
//! them) for the indices the ship stage writes.
//!
//! The objects are defined here and written to `dashboards/ecscale.ndjson` (`ecscale
//! dashboards export`; a test keeps the file and this code identical). [`check`] validates a
//! file offline: every line parses, every reference resolves, every visualization's fields exist
//! with the right type in ecscale's own index mappings. [`search_body`] turns a visualization
//! into the `_search` request Kibana would make, which the tests run against OpenSearch.

mod check;

use serde_json::{json, Value};

pub use check::{check, search_body, CheckReport, Problem as CheckProblem};

use crate::ship::Stream;

/// One saved object.
fn object(kind: &str, id: &str, attributes: Value, references: Vec<Value>) -> Value {
    let version = match kind {
        "index-pattern" => "7.6.0",
        "dashboard" => "7.9.3",
        _ => "7.10.0",
    };
    json!({
        "id": id,
        "type": kind,
        "attributes": attributes,
        "references": references,
        "migrationVersion": { kind: version },
    })
}

fn search_source(query: &str) -> String {
    json!({
        "query": {"query": query, "language": "lucene"},
        "filter": [],
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    })
    .to_string()
}

fn index_ref(pattern_id: &str) -> Value {
    json!({"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern", "id": pattern_id})
}

/// A metric aggregation (`avg`, `max`, `sum`, `count`) with its label.
struct Metric<'a> {
    agg: &'a str,
    field: Option<&'a str>,
    label: &'a str,
    /// The value axis it is drawn against (1: left, 2: right).
    axis: u8,
}

/// A bucket aggregation.
enum Bucket<'a> {
    Time,
    /// Lines per value of a keyword field.
    Terms {
        field: &'a str,
        schema: &'a str,
    },
    /// Lines per query.
    Filters(&'a [(&'a str, &'a str)]),
}

fn line_params(metrics: &[Metric<'_>], left: &str, right: &str) -> Value {
    let axis = |n: u8, name: &str, position: &str| {
        json!({
            "id": format!("ValueAxis-{n}"), "name": format!("{}Axis-1", if n == 1 { "Left" } else { "Right" }),
            "type": "value", "position": position, "show": true, "style": {},
            "scale": {"type": "linear", "mode": "normal"},
            "labels": {"show": true, "rotate": 0, "filter": false, "truncate": 100},
            "title": {"text": name},
        })
    };
    let mut value_axes = vec![axis(1, left, "left")];
    if metrics.iter().any(|m| m.axis == 2) {
        value_axes.push(axis(2, right, "right"));
    }
    let series: Vec<Value> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "show": true, "type": "line", "mode": "normal",
                "data": {"label": m.label, "id": (i + 1).to_string()},
                "valueAxis": format!("ValueAxis-{}", m.axis),
                "drawLinesBetweenPoints": true, "lineWidth": 2, "interpolate": "linear", "showCircles": true,
            })
        })
        .collect();
    json!({
        "type": "line",
        "grid": {"categoryLines": false},
        "categoryAxes": [{
            "id": "CategoryAxis-1", "type": "category", "position": "bottom", "show": true, "style": {},
            "scale": {"type": "linear"}, "labels": {"show": true, "filter": true, "truncate": 100}, "title": {},
        }],
        "valueAxes": value_axes,
        "seriesParams": series,
        "addTooltip": true, "addLegend": true, "legendPosition": "right", "times": [], "addTimeMarker": false,
        "thresholdLine": {"show": false, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
        "labels": {},
    })
}

fn vis_state(
    title: &str,
    kind: &str,
    metrics: &[Metric<'_>],
    buckets: &[Bucket<'_>],
    left: &str,
    right: &str,
) -> String {
    let mut aggs = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        let mut params = json!({"customLabel": m.label});
        if let Some(f) = m.field {
            params["field"] = json!(f);
        }
        aggs.push(json!({"id": (i + 1).to_string(), "enabled": true, "type": m.agg, "schema": "metric", "params": params}));
    }
    for (j, b) in buckets.iter().enumerate() {
        let id = (metrics.len() + j + 1).to_string();
        aggs.push(match b {
            Bucket::Time => json!({"id": id, "enabled": true, "type": "date_histogram", "schema": "segment", "params": {
                "field": "@timestamp", "useNormalizedEsInterval": true, "scaleMetricValues": false,
                "interval": "auto", "drop_partials": false, "min_doc_count": 1, "extended_bounds": {},
            }}),
            Bucket::Terms { field, schema } => json!({"id": id, "enabled": true, "type": "terms", "schema": schema, "params": {
                "field": field, "orderBy": "1", "order": "desc", "size": 10, "otherBucket": false,
                "otherBucketLabel": "Other", "missingBucket": false, "missingBucketLabel": "Missing",
            }}),
            Bucket::Filters(filters) => json!({"id": id, "enabled": true, "type": "filters", "schema": "group", "params": {
                "filters": filters.iter().map(|(q, label)| json!({"input": {"query": q, "language": "lucene"}, "label": label})).collect::<Vec<_>>(),
            }}),
        });
    }
    let params = if kind == "line" {
        line_params(metrics, left, right)
    } else {
        let mut p = line_params(metrics, left, right);
        p["type"] = json!(kind);
        if let Some(series) = p["seriesParams"].as_array_mut() {
            for s in series {
                s["type"] = json!(kind);
            }
        }
        p
    };
    json!({"title": title, "type": kind, "aggs": aggs, "params": params}).to_string()
}

fn visualization(id: &str, title: &str, pattern: &str, query: &str, vis: String) -> Value {
    object(
        "visualization",
        id,
        json!({
            "title": title,
            "visState": vis,
            "uiStateJSON": "{}",
            "description": "",
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": search_source(query)},
        }),
        vec![index_ref(pattern)],
    )
}

/// Every saved object, for indices named `PREFIX-*`.
pub fn saved_objects(prefix: &str) -> Vec<Value> {
    let mut out: Vec<Value> = [
        Stream::Metrics,
        Stream::Decisions,
        Stream::Stress,
        Stream::DeadLetter,
    ]
    .into_iter()
    .map(|s| {
        object(
            "index-pattern",
            &format!("{prefix}-{}", s.name()),
            json!({"title": format!("{prefix}-{}-*", s.name()), "timeFieldName": "@timestamp"}),
            vec![],
        )
    })
    .collect();
    out.extend(metric_panels(prefix));
    out.extend(decision_panels(prefix));
    out.push(stress_panel(prefix));
    out.push(overview(prefix, &out));
    out
}

fn m(agg: &'static str, field: Option<&'static str>, label: &'static str, axis: u8) -> Metric<'static> {
    Metric {
        agg,
        field,
        label,
        axis,
    }
}

/// The panels on the metrics stream: CPU and memory against their targets, task counts,
/// capacity against reservation, and AWS calls with their cost.
fn metric_panels(prefix: &str) -> Vec<Value> {
    let metrics = format!("{prefix}-{}", Stream::Metrics.name());
    let mut out = Vec::new();
    for (metric, label) in [("cpu", "CPU"), ("memory", "Memory")] {
        out.push(visualization(
            &format!("{prefix}-{metric}-vs-target"),
            &format!("ecscale · {label} vs target, per service"),
            &metrics,
            &format!("metric:{metric} AND kind:(sample OR target)"),
            vis_state(
                &format!("{label} vs target"),
                "line",
                &[m("avg", Some("value"), "%", 1)],
                &[
                    Bucket::Time,
                    Bucket::Filters(&[("kind:sample", "measured"), ("kind:target", "target")]),
                    Bucket::Terms {
                        field: "target",
                        schema: "split",
                    },
                ],
                "%",
                "",
            ),
        ));
    }
    out.push(visualization(
        &format!("{prefix}-task-counts"),
        "ecscale · Desired, running and pending tasks",
        &metrics,
        "kind:service",
        vis_state(
            "Task counts",
            "line",
            &[
                m("max", Some("desired"), "desired", 1),
                m("max", Some("running"), "running", 1),
                m("max", Some("pending"), "pending", 1),
            ],
            &[
                Bucket::Time,
                Bucket::Terms {
                    field: "target",
                    schema: "split",
                },
            ],
            "tasks",
            "",
        ),
    ));
    out.push(visualization(
        &format!("{prefix}-capacity"),
        "ecscale · EC2 capacity vs reservation",
        &metrics,
        "kind:capacity",
        vis_state(
            "Capacity",
            "line",
            &[
                m("max", Some("cpu_registered"), "CPU registered", 1),
                m("max", Some("cpu_reserved"), "CPU reserved", 1),
                m("max", Some("memory_registered_mib"), "MiB registered", 2),
                m("max", Some("memory_reserved_mib"), "MiB reserved", 2),
            ],
            &[
                Bucket::Time,
                Bucket::Terms {
                    field: "cluster",
                    schema: "split",
                },
            ],
            "CPU units",
            "MiB",
        ),
    ));
    out.push(visualization(
        &format!("{prefix}-api-cost"),
        "ecscale · AWS API calls and CloudWatch cost",
        &metrics,
        "kind:usage",
        vis_state(
            "API calls and cost",
            "line",
            &[
                m("sum", Some("api_calls"), "API calls", 1),
                m("sum", Some("api_retries"), "retries", 1),
                m("sum", Some("cloudwatch_cost_usd"), "CloudWatch USD", 2),
            ],
            &[Bucket::Time],
            "calls",
            "USD",
        ),
    ));
    out.push(visualization(
        &format!("{prefix}-cloudwatch-per-service"),
        "ecscale · CloudWatch cost per service, as a month",
        &metrics,
        "kind:cloudwatch_spend",
        vis_state(
            "CloudWatch per service",
            "line",
            &[
                m(
                    "max",
                    Some("cloudwatch_usd_per_service_month"),
                    "USD per service a month",
                    1,
                ),
                m("max", Some("services"), "services", 2),
            ],
            &[Bucket::Time],
            "USD a month",
            "services",
        ),
    ));
    out
}

/// The panels on the decisions stream: a timeline by action, and the log with its reasons.
fn decision_panels(prefix: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let decisions = format!("{prefix}-{}", Stream::Decisions.name());
    out.push(visualization(
        &format!("{prefix}-decisions-timeline"),
        "ecscale · Scaling decisions",
        &decisions,
        "NOT action:hold",
        vis_state(
            "Scaling decisions",
            "histogram",
            &[m("count", None, "decisions", 1)],
            &[
                Bucket::Time,
                Bucket::Terms {
                    field: "action",
                    schema: "group",
                },
            ],
            "decisions",
            "",
        ),
    ));
    out.push(object(
        "search",
        &format!("{prefix}-decision-log"),
        json!({
            "title": "ecscale · Decision log (with reasons)",
            "description": "",
            "columns": ["target", "action", "current", "desired", "rule", "reason"],
            "sort": [["@timestamp", "desc"]],
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": search_source("NOT action:hold")},
        }),
        vec![index_ref(&decisions)],
    ));
    out
}

/// The stress runs' latency percentiles and rate beside the task count.
fn stress_panel(prefix: &str) -> Value {
    visualization(
        &format!("{prefix}-stress-latency"),
        "ecscale · Stress: latency percentiles and rate beside the task count",
        &format!("{prefix}-{}", Stream::Stress.name()),
        "*",
        vis_state(
            "Stress",
            "line",
            &[
                m("avg", Some("latency_ms.p50"), "p50 ms", 1),
                m("avg", Some("latency_ms.p95"), "p95 ms", 1),
                m("avg", Some("latency_ms.p99"), "p99 ms", 1),
                m("avg", Some("rate_achieved"), "requests/s", 2),
                m("max", Some("task_count"), "tasks", 2),
            ],
            &[Bucket::Time],
            "ms",
            "requests/s, tasks",
        ),
    )
}

/// The overview dashboard: every panel of `objects`, two per row.
fn overview(prefix: &str, objects: &[Value]) -> Value {
    let panels: Vec<&Value> = objects
        .iter()
        .filter(|o| o["type"] == "visualization" || o["type"] == "search")
        .collect();
    let mut panels_json = Vec::new();
    let mut references = Vec::new();
    for (i, p) in panels.iter().enumerate() {
        let name = format!("panel_{i}");
        panels_json.push(json!({
            "version": "7.10.0",
            "gridData": {"x": (i % 2) * 24, "y": (i / 2) * 15, "w": 24, "h": 15, "i": (i + 1).to_string()},
            "panelIndex": (i + 1).to_string(),
            "embeddableConfig": {},
            "panelRefName": name,
        }));
        references.push(json!({"name": name, "type": p["type"], "id": p["id"]}));
    }
    object(
        "dashboard",
        &format!("{prefix}-overview"),
        json!({
            "title": "ecscale · Overview",
            "description": "Metrics vs targets, task counts, decisions with their reasons, EC2 capacity, API cost, stress runs",
            "panelsJSON": Value::Array(panels_json).to_string(),
            "optionsJSON": json!({"useMargins": true, "hidePanelTitles": false}).to_string(),
            "timeRestore": false,
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json!({"query": {"query": "", "language": "lucene"}, "filter": []}).to_string()},
        }),
        references,
    )
}

/// The saved objects as an import file (one object per line).
pub fn ndjson(prefix: &str) -> String {
    saved_objects(prefix).iter().map(|o| format!("{o}\n")).collect()
}

/// Imports `ndjson` through Kibana's (or OpenSearch Dashboards') saved-objects API; returns how
/// many objects it took.
pub async fn install(kibana: &str, ndjson: String, auth: Option<(String, String)>) -> Result<u64, String> {
    let url = format!(
        "{}/api/saved_objects/_import?overwrite=true",
        kibana.trim_end_matches('/')
    );
    let part = reqwest::multipart::Part::text(ndjson)
        .file_name("ecscale.ndjson")
        .mime_str("application/ndjson")
        .map_err(|e| e.to_string())?;
    let mut req = reqwest::Client::new()
        .post(&url)
        // Kibana wants kbn-xsrf, OpenSearch Dashboards osd-xsrf.
        .header("kbn-xsrf", "true")
        .header("osd-xsrf", "true")
        .multipart(reqwest::multipart::Form::new().part("file", part));
    if let Some((user, password)) = auth {
        req = req.basic_auth(user, Some(password));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::read::bounded::describe(e)))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() || body["success"] != json!(true) {
        return Err(format!("{url} answered HTTP {status}: {body}"));
    }
    Ok(body["successCount"].as_u64().unwrap_or(0))
}
