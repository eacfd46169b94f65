//! Composable index templates for the daily indices (`PREFIX-STREAM-*`): one component template
//! of settings, one of common fields, and one index template per stream with explicit mappings.
//! Only the common subset of Elasticsearch 7/8 and OpenSearch is used; an ILM policy name (an
//! Elasticsearch-only setting) is added only when configured.

use serde_json::{json, Value};

use super::docs::Stream;
use super::elasticsearch::{Es, EsError};

/// Template options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateOptions {
    pub prefix: String,
    pub replicas: u32,
    /// `index.lifecycle.name` (Elasticsearch only).
    pub ilm_policy: Option<String>,
}

fn kw() -> Value {
    json!({"type": "keyword"})
}

fn dbl() -> Value {
    json!({"type": "double"})
}

fn int() -> Value {
    json!({"type": "long"})
}

fn percentiles() -> Value {
    json!({"properties": {"p50": dbl(), "p90": dbl(), "p95": dbl(), "p99": dbl(), "max": dbl()}})
}

/// Fields every stream has.
fn common_properties() -> Value {
    json!({
        "@timestamp": {"type": "date"},
        "kind": kw(),
        "target": kw(),
        "target_kind": kw(),
        "cluster": kw(),
        "service": kw(),
        "auto_scaling_group": kw(),
    })
}

/// The mappings of one stream. `dynamic: strict`: a field the mapping does not know is refused
/// (and dead-lettered) rather than guessed; maps of names (dimensions, inputs, operations) are
/// open, with their values typed by dynamic templates.
pub fn mappings(stream: Stream) -> Value {
    let properties = match stream {
        Stream::Metrics => json!({
            "metric": kw(), "namespace": kw(), "metric_name": kw(), "stat": kw(), "unit": kw(),
            "period_secs": int(), "value": dbl(), "tolerance": dbl(), "rule": kw(),
            "dimensions": {"type": "object", "dynamic": true},
            "status": kw(), "rollout": kw(), "desired": int(), "running": int(), "pending": int(),
            "deployments": int(), "task_cpu": int(), "task_memory_mib": int(),
            "instances": int(), "instances_active": int(), "cpu_registered": int(), "cpu_reserved": int(),
            "memory_registered_mib": int(), "memory_reserved_mib": int(), "pending_tasks": int(),
            "api_calls": int(), "api_retries": int(), "cloudwatch_metrics_requested": int(),
            "cloudwatch_cost_usd": dbl(), "problems": int(),
            "services": int(), "cloudwatch_usd_month": dbl(), "cloudwatch_usd_per_service_month": dbl(),
            "operations": {"type": "object", "dynamic": true},
        }),
        Stream::Decisions => json!({
            "action": kw(), "current": int(), "desired": int(), "change": int(), "min": int(), "max": int(),
            "recommendation": int(), "rule": kw(), "applied": kw(), "applied_detail": {"type": "text"},
            "reason": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}},
            "inputs": {"type": "object", "dynamic": true},
            "votes": {"properties": {
                "rule": kw(), "kind": kw(), "status": kw(), "wants": int(), "reason": {"type": "text"},
            }},
        }),
        Stream::Stress => json!({
            "run_id": kw(), "phase": kw(), "rate_planned": dbl(), "rate_achieved": dbl(),
            "requests": int(), "errors": int(),
            "errors_by_kind": {"type": "object", "dynamic": true},
            "latency_ms": percentiles(), "service_time_ms": percentiles(), "task_count": int(),
        }),
        Stream::DeadLetter => json!({
            "index": kw(), "id": kw(), "status": int(), "error_type": kw(),
            "error_reason": {"type": "text"}, "error": {"type": "text", "index": false},
            "document": {"type": "text", "index": false},
        }),
    };
    json!({
        "dynamic": "strict",
        "dynamic_templates": [
            {"names_are_keywords": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}},
            {"numbers_are_doubles": {"match_mapping_type": "long", "mapping": {"type": "double"}}},
        ],
        "properties": properties,
    })
}

/// The component and index templates, as (API path, body), each index template carrying the
/// fingerprint of the whole set: a node whose templates were written by another version of
/// ecscale is told apart from one that is up to date.
pub fn templates(o: &TemplateOptions) -> Vec<(String, Value)> {
    let mut out = bodies(o);
    let print = fingerprint(&out);
    for (_, body) in out.iter_mut().filter(|(p, _)| p.starts_with("/_index_template/")) {
        body["_meta"] =
            json!({"managed_by": "ecscale", "version": env!("CARGO_PKG_VERSION"), "fingerprint": print});
    }
    out
}

/// The fingerprint the templates of `o` carry.
pub fn fingerprint_of(o: &TemplateOptions) -> String {
    fingerprint(&bodies(o))
}

/// The templates without their `_meta`.
fn bodies(o: &TemplateOptions) -> Vec<(String, Value)> {
    let p = &o.prefix;
    let mut settings = json!({"number_of_shards": 1, "number_of_replicas": o.replicas});
    if let Some(policy) = &o.ilm_policy {
        settings["index.lifecycle.name"] = json!(policy);
    }
    let mut out = vec![
        (
            format!("/_component_template/{p}-settings"),
            json!({"template": {"settings": settings}}),
        ),
        (
            format!("/_component_template/{p}-common"),
            json!({"template": {"mappings": {"properties": common_properties()}}}),
        ),
    ];
    for stream in Stream::ALL {
        out.push((
            format!("/_index_template/{p}-{}", stream.name()),
            json!({
                "index_patterns": [format!("{p}-{}-*", stream.name())],
                "priority": 500,
                "composed_of": [format!("{p}-settings"), format!("{p}-common")],
                "template": {"mappings": mappings(stream)},
            }),
        ));
    }
    out
}

/// FNV-1a of the templates as JSON (maps serialize in key order): the same on every build.
fn fingerprint(all: &[(String, Value)]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (path, body) in all {
        for b in path.bytes().chain(body.to_string().into_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Installs (or updates) every template.
pub async fn install(es: &Es, o: &TemplateOptions) -> Result<usize, EsError> {
    let all = templates(o);
    for (path, body) in &all {
        es.json(elasticsearch::http::Method::Put, path, Some(body))
            .await?;
    }
    Ok(all.len())
}

/// Installs the templates unless they are there already and up to date (the fingerprint of
/// the last one written). Templates of another version are replaced, and the indices they
/// already made get the fields added since, so today's index takes the new documents rather
/// than refusing them under its strict mapping. True when something was written.
pub async fn ensure(es: &Es, o: &TemplateOptions) -> Result<bool, EsError> {
    let last = format!("/_index_template/{}-{}", o.prefix, Stream::DeadLetter.name());
    let found = match es.json(elasticsearch::http::Method::Get, &last, None).await {
        Ok(found) => found,
        Err(EsError::Status { status: 404, .. }) => return install(es, o).await.map(|_| true),
        Err(e) => return Err(e),
    };
    let theirs = found["index_templates"][0]["index_template"]["_meta"]["fingerprint"].as_str();
    if theirs == Some(fingerprint_of(o).as_str()) {
        return Ok(false);
    }
    install(es, o).await?;
    for stream in Stream::ALL {
        let path = format!("/{}-{}-*/_mapping?allow_no_indices=true", o.prefix, stream.name());
        let body = json!({"properties": mappings(stream)["properties"].clone()});
        es.json(elasticsearch::http::Method::Put, &path, Some(&body))
            .await?;
    }
    Ok(true)
}

/// Every mapped field of a stream's indices (common ones included) with its type, by dotted
/// path (`latency_ms.p95`); open objects (`dimensions`, `inputs`) as `object`.
pub fn field_types(stream: Stream) -> std::collections::BTreeMap<String, String> {
    fn walk(prefix: &str, props: &Value, out: &mut std::collections::BTreeMap<String, String>) {
        let Some(map) = props.as_object() else { return };
        for (name, spec) in map {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if let Some(inner) = spec.get("properties") {
                walk(&path, inner, out);
            } else {
                out.insert(path, spec["type"].as_str().unwrap_or("object").to_string());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk("", &common_properties(), &mut out);
    walk("", &mappings(stream)["properties"], &mut out);
    out
}
