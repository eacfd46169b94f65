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
    let objects = read_objects(text, &mut report);
    let (seen, patterns) = index(&objects, &mut report);
    for (line, o) in &objects {
        let kind = o["type"].as_str().unwrap_or("");
        *report.counts.entry(kind.to_string()).or_default() += 1;
        let id = o["id"].as_str().unwrap_or("?");
        for message in check_object(o, &seen, &patterns) {
            report.problems.push(Problem {
                line: *line,
                id: id.into(),
                message,
            });
        }
    }
    report
}

/// Each line's JSON object, with its line number; a line that is not one is a problem.
fn read_objects(text: &str, report: &mut CheckReport) -> Vec<(usize, Value)> {
    let mut objects = Vec::new();
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
    objects
}

/// Every (type, id) in the file (a second one is a problem), and each index pattern's stream.
type Seen = BTreeSet<(String, String)>;
type Patterns = BTreeMap<String, Option<Stream>>;

fn index(objects: &[(usize, Value)], report: &mut CheckReport) -> (Seen, Patterns) {
    let mut seen = BTreeSet::new();
    let mut patterns = BTreeMap::new();
    for (line, o) in objects {
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
    (seen, patterns)
}

/// What is wrong with one saved object: its type, its references, and what its kind needs.
fn check_object(o: &Value, seen: &Seen, patterns: &Patterns) -> Vec<String> {
    let kind = o["type"].as_str().unwrap_or("");
    if !TYPES.contains(&kind) {
        return vec![format!("unknown type `{kind}` (known: {})", TYPES.join(", "))];
    }
    if o["id"].as_str().is_none_or(str::is_empty) || !o["attributes"].is_object() {
        return vec!["needs a string `id` and an `attributes` object".into()];
    }
    let refs: Vec<&Value> = o["references"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut bad = Vec::new();
    for r in &refs {
        let (rt, rid) = (r["type"].as_str().unwrap_or(""), r["id"].as_str().unwrap_or(""));
        if !seen.contains(&(rt.to_string(), rid.to_string())) {
            bad.push(format!(
                "reference `{}` to {rt} `{rid}` resolves to nothing in the file",
                r["name"].as_str().unwrap_or("?")
            ));
        }
    }
    let ref_named = |name: &str| refs.iter().find(|r| r["name"] == name).copied();
    match kind {
        "index-pattern" => check_pattern(o, &mut bad),
        "visualization" | "search" => {
            if let Err(e) = check_panel(o, kind, &ref_named, patterns, &mut bad) {
                bad.push(e);
            }
        }
        "dashboard" => match parse_embedded(o, &["attributes", "panelsJSON"]) {
            Ok(panels) => {
                for p in panels.as_array().into_iter().flatten() {
                    let name = p["panelRefName"].as_str().unwrap_or("");
                    if ref_named(name).is_none() {
                        bad.push(format!("panel `{name}` has no reference"));
                    }
                }
            }
            Err(e) => bad.push(e),
        },
        _ => {}
    }
    bad
}

fn check_pattern(o: &Value, bad: &mut Vec<String>) {
    let title = o["attributes"]["title"].as_str().unwrap_or("");
    if stream_of(title).is_none() {
        bad.push(format!(
            "title `{title}` is not an ecscale index pattern (PREFIX-metrics-*, ...)"
        ));
    }
    if o["attributes"]["timeFieldName"] != "@timestamp" {
        bad.push("timeFieldName must be @timestamp".into());
    }
}

/// A visualization or a saved search: its index pattern in the file, and every field it reads
/// in that stream's mappings with a type its aggregation takes. `Err` is the mistake that
/// stops the check of the rest.
fn check_panel<'a>(
    o: &Value,
    kind: &str,
    ref_named: &dyn Fn(&str) -> Option<&'a Value>,
    patterns: &Patterns,
    bad: &mut Vec<String>,
) -> Result<(), String> {
    let source = parse_embedded(o, &["attributes", "kibanaSavedObjectMeta", "searchSourceJSON"])?;
    let r = source["indexRefName"]
        .as_str()
        .and_then(ref_named)
        .ok_or("searchSourceJSON.indexRefName names no reference")?;
    let stream = r["id"]
        .as_str()
        .and_then(|p| patterns.get(p).copied().flatten())
        .ok_or("its index pattern is not in the file")?;
    let fields = field_types(stream);
    let need = |field: &str, want: &[&str], what: &str| match fields.get(field) {
        None => Some(format!(
            "{what}: no field `{field}` in the {} mappings",
            stream.name()
        )),
        Some(t) if !want.is_empty() && !want.contains(&t.as_str()) => {
            Some(format!("{what}: `{field}` is a {t}, not {}", want.join(" or ")))
        }
        _ => None,
    };
    if kind == "search" {
        for c in o["attributes"]["columns"].as_array().into_iter().flatten() {
            bad.extend(need(c.as_str().unwrap_or(""), &[], "column"));
        }
        return Ok(());
    }
    let vis = parse_embedded(o, &["attributes", "visState"])?;
    for agg in vis["aggs"].as_array().into_iter().flatten() {
        bad.extend(agg_problems(agg, &need));
    }
    Ok(())
}

/// The mistake, if any, of reading `field` (of one of the wanted types, any when none) as `what`.
type Need<'a> = dyn Fn(&str, &[&str], &str) -> Option<String> + 'a;

/// What is wrong with one aggregation: its field's type for its kind, and its schema.
fn agg_problems(agg: &Value, need: &Need<'_>) -> Vec<String> {
    let t = agg["type"].as_str().unwrap_or("");
    let field = agg["params"]["field"].as_str().unwrap_or("");
    let what = format!("aggregation {} ({t})", agg["id"].as_str().unwrap_or("?"));
    let mut bad: Vec<String> = match t {
        "avg" | "max" | "min" | "sum" => need(field, NUMERIC, &what).into_iter().collect(),
        "terms" => need(field, &["keyword"], &what).into_iter().collect(),
        "date_histogram" => need(field, &["date"], &what).into_iter().collect(),
        "count" => Vec::new(),
        "filters" if agg["params"]["filters"].as_array().is_none_or(|f| f.is_empty()) => {
            vec![format!("{what}: no filters")]
        }
        "filters" => Vec::new(),
        other => vec![format!(
            "{what}: aggregation type `{other}` is not one ecscale uses"
        )],
    };
    let schema = agg["schema"].as_str().unwrap_or("");
    if !["metric", "segment", "group", "split", "bucket"].contains(&schema) {
        bad.push(format!("{what}: schema `{schema}`"));
    }
    bad
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
