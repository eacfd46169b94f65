//! Offline checks of saved objects, and the searches their visualizations make.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::ship::templates::field_types;
use crate::ship::Stream;

/// A mistake in a saved-objects file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub id: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} ({}): {}", self.line, self.id, self.message)
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Objects by type.
    pub counts: BTreeMap<String, usize>,
    pub problems: Vec<Problem>,
}

const TYPES: &[&str] = &["index-pattern", "visualization", "search", "dashboard"];
const NUMERIC: &[&str] = &["long", "integer", "double", "float", "scaled_float", "short"];

/// The stream an index pattern title (`PREFIX-STREAM-*`) names.
fn stream_of(title: &str) -> Option<Stream> {
    let body = title.strip_suffix("-*")?;
    Stream::ALL
        .into_iter()
        .find(|s| body.ends_with(&format!("-{}", s.name())))
}

fn parse_embedded(obj: &Value, path: &[&str]) -> Result<Value, String> {
    let mut v = obj;
    for p in path {
        v = &v[*p];
    }
    let text = v
        .as_str()
        .ok_or_else(|| format!("{} is missing", path.join(".")))?;
    serde_json::from_str(text).map_err(|e| format!("{} is not JSON: {e}", path.join(".")))
}

/// Checks the saved objects of one file (`text`, one JSON object per line).
pub fn check(text: &str) -> CheckReport {
    let mut report = CheckReport::default();
    let mut objects: Vec<(usize, Value)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let problem = |message: String| Problem {
            line: i + 1,
            id: "?".into(),
            message,
        };
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => objects.push((i + 1, v)),
            Ok(_) => report.problems.push(problem("not a JSON object".into())),
            Err(e) => report.problems.push(problem(format!("not JSON: {e}"))),
        }
    }
    let mut seen = BTreeSet::new();
    let mut patterns: BTreeMap<String, Option<Stream>> = BTreeMap::new();
    for (line, o) in &objects {
        let (kind, id) = (o["type"].as_str().unwrap_or(""), o["id"].as_str().unwrap_or(""));
        if !seen.insert((kind.to_string(), id.to_string())) {
            report.problems.push(Problem {
                line: *line,
                id: id.into(),
                message: format!("a second {kind} with this id"),
            });
        }
        if kind == "index-pattern" {
            patterns.insert(
                id.to_string(),
                o["attributes"]["title"].as_str().and_then(stream_of),
            );
        }
    }
    for (line, o) in &objects {
        let id = o["id"].as_str().unwrap_or("?").to_string();
        let mut bad = |message: String| {
            report.problems.push(Problem {
                line: *line,
                id: id.clone(),
                message,
            })
        };
        let kind = o["type"].as_str().unwrap_or("");
        *report.counts.entry(kind.to_string()).or_default() += 1;
        if !TYPES.contains(&kind) {
            bad(format!("unknown type `{kind}` (known: {})", TYPES.join(", ")));
            continue;
        }
        if o["id"].as_str().is_none_or(str::is_empty) || !o["attributes"].is_object() {
            bad("needs a string `id` and an `attributes` object".into());
            continue;
        }
        let refs: Vec<&Value> = o["references"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        for r in &refs {
            let (rt, rid) = (r["type"].as_str().unwrap_or(""), r["id"].as_str().unwrap_or(""));
            if !seen.contains(&(rt.to_string(), rid.to_string())) {
                bad(format!(
                    "reference `{}` to {rt} `{rid}` resolves to nothing in the file",
                    r["name"].as_str().unwrap_or("?")
                ));
            }
        }
        let ref_named = |name: &str| refs.iter().find(|r| r["name"] == name).copied();
        match kind {
            "index-pattern" => {
                let title = o["attributes"]["title"].as_str().unwrap_or("");
                if stream_of(title).is_none() {
                    bad(format!(
                        "title `{title}` is not an ecscale index pattern (PREFIX-metrics-*, ...)"
                    ));
                }
                if o["attributes"]["timeFieldName"] != "@timestamp" {
                    bad("timeFieldName must be @timestamp".into());
                }
            }
            "visualization" | "search" => {
                let source =
                    match parse_embedded(o, &["attributes", "kibanaSavedObjectMeta", "searchSourceJSON"]) {
                        Ok(s) => s,
                        Err(e) => {
                            bad(e);
                            continue;
                        }
                    };
                let Some(r) = source["indexRefName"].as_str().and_then(ref_named) else {
                    bad("searchSourceJSON.indexRefName names no reference".into());
                    continue;
                };
                let stream = r["id"].as_str().and_then(|p| patterns.get(p).copied().flatten());
                let Some(stream) = stream else {
                    bad("its index pattern is not in the file".into());
                    continue;
                };
                let fields = field_types(stream);
                let need = |field: &str, want: &[&str], what: &str, bad: &mut dyn FnMut(String)| match fields
                    .get(field)
                {
                    None => bad(format!(
                        "{what}: no field `{field}` in the {} mappings",
                        stream.name()
                    )),
                    Some(t) if !want.is_empty() && !want.contains(&t.as_str()) => {
                        bad(format!("{what}: `{field}` is a {t}, not {}", want.join(" or ")))
                    }
                    _ => {}
                };
                if kind == "search" {
                    for c in o["attributes"]["columns"].as_array().into_iter().flatten() {
                        need(c.as_str().unwrap_or(""), &[], "column", &mut bad);
                    }
                    continue;
                }
                let vis = match parse_embedded(o, &["attributes", "visState"]) {
                    Ok(v) => v,
                    Err(e) => {
                        bad(e);
                        continue;
                    }
                };
                for agg in vis["aggs"].as_array().into_iter().flatten() {
                    let t = agg["type"].as_str().unwrap_or("");
                    let field = agg["params"]["field"].as_str().unwrap_or("");
                    let what = format!("aggregation {} ({t})", agg["id"].as_str().unwrap_or("?"));
                    match t {
                        "avg" | "max" | "min" | "sum" => need(field, NUMERIC, &what, &mut bad),
                        "terms" => need(field, &["keyword"], &what, &mut bad),
                        "date_histogram" => need(field, &["date"], &what, &mut bad),
                        "count" => {}
                        "filters" => {
                            if agg["params"]["filters"].as_array().is_none_or(|f| f.is_empty()) {
                                bad(format!("{what}: no filters"));
                            }
                        }
                        other => bad(format!(
                            "{what}: aggregation type `{other}` is not one ecscale uses"
                        )),
                    }
                    let schema = agg["schema"].as_str().unwrap_or("");
                    if !["metric", "segment", "group", "split", "bucket"].contains(&schema) {
                        bad(format!("{what}: schema `{schema}`"));
                    }
                }
            }
            "dashboard" => match parse_embedded(o, &["attributes", "panelsJSON"]) {
                Ok(panels) => {
                    for p in panels.as_array().into_iter().flatten() {
                        let name = p["panelRefName"].as_str().unwrap_or("");
                        if ref_named(name).is_none() {
                            bad(format!("panel `{name}` has no reference"));
                        }
                    }
                }
                Err(e) => bad(e),
            },
            _ => {}
        }
    }
    report
}

fn query_of(source: &Value) -> Value {
    let q = source["query"]["query"]
        .as_str()
        .filter(|q| !q.trim().is_empty())
        .unwrap_or("*");
    json!({"query_string": {"query": q, "analyze_wildcard": true}})
}

/// The `_search` a visualization or saved search makes: (index pattern, request body). Bucket
/// aggregations nest split → segment → group, metrics innermost; `auto` intervals become 1m.
pub fn search_body(objects: &[Value], id: &str) -> Result<(String, Value), String> {
    let o = objects
        .iter()
        .find(|o| o["id"] == id && (o["type"] == "visualization" || o["type"] == "search"))
        .ok_or_else(|| format!("no visualization or search `{id}`"))?;
    let source = parse_embedded(o, &["attributes", "kibanaSavedObjectMeta", "searchSourceJSON"])?;
    let pattern_id = o["references"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["type"] == "index-pattern"))
        .and_then(|r| r["id"].as_str())
        .ok_or("no index pattern reference")?;
    let title = objects
        .iter()
        .find(|p| p["type"] == "index-pattern" && p["id"] == pattern_id)
        .and_then(|p| p["attributes"]["title"].as_str())
        .ok_or_else(|| format!("index pattern `{pattern_id}` is not in the file"))?
        .to_string();
    let query = query_of(&source);
    if o["type"] == "search" {
        let columns = o["attributes"]["columns"].clone();
        return Ok((
            title,
            json!({"size": 10, "query": query, "sort": [{"@timestamp": "desc"}], "_source": columns}),
        ));
    }
    let vis = parse_embedded(o, &["attributes", "visState"])?;
    let aggs: Vec<&Value> = vis["aggs"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut metrics = serde_json::Map::new();
    for a in aggs
        .iter()
        .filter(|a| a["schema"] == "metric" && a["type"] != "count")
    {
        metrics.insert(
            a["id"].as_str().unwrap_or("m").to_string(),
            json!({ a["type"].as_str().unwrap_or("avg"): {"field": a["params"]["field"]} }),
        );
    }
    let rank = |s: &str| match s {
        "split" => 0,
        "segment" => 1,
        _ => 2,
    };
    let mut buckets: Vec<&&Value> = aggs.iter().filter(|a| a["schema"] != "metric").collect();
    buckets.sort_by_key(|a| rank(a["schema"].as_str().unwrap_or("")));
    let mut inner = Value::Object(metrics);
    for b in buckets.iter().rev() {
        let p = &b["params"];
        let mut agg = match b["type"].as_str().unwrap_or("") {
            "date_histogram" => {
                json!({"date_histogram": {"field": p["field"], "fixed_interval": "1m", "min_doc_count": 1}})
            }
            "terms" => json!({"terms": {"field": p["field"], "size": p["size"].as_u64().unwrap_or(10)}}),
            "filters" => {
                let mut f = serde_json::Map::new();
                for flt in p["filters"].as_array().into_iter().flatten() {
                    let label = flt["label"].as_str().unwrap_or("filter").to_string();
                    f.insert(label, json!({"query_string": {"query": flt["input"]["query"]}}));
                }
                json!({"filters": {"filters": f}})
            }
            other => return Err(format!("bucket aggregation `{other}` cannot be translated")),
        };
        if inner.as_object().is_some_and(|m| !m.is_empty()) {
            agg["aggs"] = inner;
        }
        let mut wrap = serde_json::Map::new();
        wrap.insert(b["id"].as_str().unwrap_or("b").to_string(), agg);
        inner = Value::Object(wrap);
    }
    Ok((title, json!({"size": 0, "query": query, "aggs": inner})))
}
