//! Recorded metrics for back-testing: CSV or NDJSON files.
//!
//! CSV, one row per period: a header `timestamp,METRIC,METRIC,...`, then values; an empty cell
//! is a missing datapoint.
//! ```text
//! timestamp,cpu,queue_depth,running
//! 2026-11-20T10:00:00Z,41.5,120,4
//! ```
//! NDJSON, one object per line: wide (`{"timestamp": "...", "cpu": 41.5, "running": 4}`) or long
//! (`{"timestamp": "...", "metric": "cpu", "value": 41.5}`).
//!
//! Timestamps: RFC 3339, `YYYY-MM-DD HH:MM[:SS]` (UTC), or Unix seconds. A column named
//! `running` (or `tasks`) is the task count when the trace was recorded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::model::Sample;

/// Columns that record the task count rather than a metric.
pub const COUNT_COLUMNS: &[&str] = &["running", "tasks"];

/// A mistake in a trace file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for TraceError {}

/// A recorded trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub file: String,
    /// Every period from the first row to the last, ascending: a row with no value, or none
    /// at all, is a period all the same.
    pub timestamps: Vec<DateTime<Utc>>,
    /// By metric id, ascending, one sample per timestamp at most.
    pub series: BTreeMap<String, Vec<Sample>>,
    /// The task count when recorded, if the trace has a `running`/`tasks` column.
    pub recorded_count: BTreeMap<DateTime<Utc>, u32>,
    /// The period: the smallest gap between timestamps.
    pub period_secs: i64,
}

/// Parses a timestamp in the accepted forms.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(n.and_utc());
        }
    }
    if let Ok(secs) = s.parse::<i64>() {
        if let Some(t) = DateTime::from_timestamp(secs, 0) {
            return Ok(t);
        }
    }
    Err(format!(
        "`{s}` is not a timestamp (RFC 3339, YYYY-MM-DD HH:MM[:SS] in UTC, or Unix seconds)"
    ))
}

/// The largest trace file read: 14 days of 20-second rows for a dozen metrics is about 50 MiB.
pub const MAX_TRACE_BYTES: u64 = 256 << 20;
/// The most periods a trace may span (from its first row to its last): two years of minutes.
pub const MAX_PERIODS: i64 = 1_051_200;
/// The most datapoints a trace may hold.
pub const MAX_DATAPOINTS: usize = 5_000_000;
/// The most metrics (columns, or keys of an NDJSON line) a trace may hold: a policy reads a few.
pub const MAX_COLUMNS: usize = 10_000;

/// Reads a trace; the format follows the extension (`.csv`, `.ndjson`/`.jsonl`/`.json`).
pub fn read(path: &Path) -> Result<Trace, TraceError> {
    let file = path.display().to_string();
    let text = crate::read::read_bounded(path, MAX_TRACE_BYTES).map_err(|e| TraceError {
        file: file.clone(),
        line: 0,
        message: format!("cannot read the metrics file: {e}"),
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => parse_csv(&text, &file),
        "ndjson" | "jsonl" | "json" => parse_ndjson(&text, &file),
        _ => Err(TraceError {
            file,
            line: 0,
            message: "unknown format: name the file .csv or .ndjson".into(),
        }),
    }
}

/// Metrics that are never negative (a utilization, a count, a time): a negative value is a
/// broken file, not a reading.
const NON_NEGATIVE: &[&str] = &[
    "cpu",
    "memory",
    "request_count",
    "request_count_per_target",
    "target_response_time",
    "desired",
    "pending",
    "instances",
    "instances_pending",
    "group_desired",
];

struct Builder {
    file: String,
    /// By metric, in time order (rows come in time order).
    points: BTreeMap<String, Vec<Sample>>,
    counts: BTreeMap<DateTime<Utc>, u32>,
    /// Every row's time, values or not, with its line: once per time, in time order.
    rows: Vec<(DateTime<Utc>, usize)>,
    /// The last row read (rows must come in time order).
    last: Option<(DateTime<Utc>, usize)>,
    datapoints: usize,
}

impl Builder {
    fn new(file: &str) -> Self {
        Builder {
            file: file.to_string(),
            points: BTreeMap::new(),
            counts: BTreeMap::new(),
            rows: Default::default(),
            last: None,
            datapoints: 0,
        }
    }

    /// A row at `t`, with or without values.
    fn row(&mut self, line: usize, t: DateTime<Utc>) -> Result<(), TraceError> {
        if let Some((before, at)) = self.last.filter(|(before, _)| t < *before) {
            return Err(self.err(
                line,
                format!(
                    "{} comes after {} (line {at}): rows are in time order (sort the file by its first column)",
                    t.format("%Y-%m-%dT%H:%M:%SZ"),
                    before.format("%Y-%m-%dT%H:%M:%SZ")
                ),
            ));
        }
        self.last = Some((t, line));
        if self.rows.last().is_none_or(|(before, _)| *before < t) {
            self.rows.push((t, line));
        }
        if self.rows.len() > MAX_PERIODS as usize {
            return Err(self.err(line, format!("more than {MAX_PERIODS} rows")));
        }
        Ok(())
    }

    fn err(&self, line: usize, message: impl Into<String>) -> TraceError {
        TraceError {
            file: self.file.clone(),
            line,
            message: message.into(),
        }
    }

    fn add(&mut self, line: usize, t: DateTime<Utc>, metric: &str, v: f64) -> Result<(), TraceError> {
        if !v.is_finite() {
            return Err(self.err(line, format!("{metric}: {v} is not a finite number")));
        }
        if v < 0.0 && NON_NEGATIVE.contains(&metric) {
            return Err(self.err(
                line,
                format!(
                    "{metric}: {v} at {}: it is never negative",
                    t.format("%Y-%m-%dT%H:%M:%SZ")
                ),
            ));
        }
        self.datapoints += 1;
        if self.datapoints > MAX_DATAPOINTS {
            return Err(self.err(line, format!("more than {MAX_DATAPOINTS} datapoints")));
        }
        if COUNT_COLUMNS.contains(&metric) {
            if v < 0.0 || v.fract() != 0.0 {
                return Err(self.err(
                    line,
                    format!("{metric}: a task count is a whole number, found {v}"),
                ));
            }
            self.counts.insert(t, v as u32);
            return Ok(());
        }
        if !self.points.contains_key(metric) && self.points.len() >= MAX_COLUMNS {
            return Err(self.err(
                line,
                format!("{metric}: more than the {MAX_COLUMNS} metrics a trace may hold"),
            ));
        }
        let list = self.points.entry(metric.to_string()).or_default();
        if list.last().is_some_and(|s| s.timestamp == t) {
            return Err(self.err(
                line,
                format!("{metric} has a second value for {}", t.to_rfc3339()),
            ));
        }
        list.push(Sample {
            timestamp: t,
            value: v,
        });
        Ok(())
    }

    /// The period: the most common gap between rows. Every gap is a whole number of periods
    /// (a row off the grid would change the whole replay's tick), else the first row off it is
    /// named.
    fn grid(&self, rows: &[DateTime<Utc>]) -> Result<i64, TraceError> {
        let gaps: Vec<i64> = rows.windows(2).map(|w| (w[1] - w[0]).num_seconds()).collect();
        let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
        for g in gaps.iter().filter(|g| **g > 0) {
            *counts.entry(*g).or_default() += 1;
        }
        let Some(period) = counts
            .iter()
            .max_by_key(|(g, n)| (**n, std::cmp::Reverse(**g)))
            .map(|(g, _)| *g)
        else {
            return Ok(60);
        };
        if let Some(k) = gaps.iter().position(|g| g % period != 0) {
            let t = rows[k + 1];
            let line = self.rows.get(k + 1).map_or(0, |(_, line)| *line);
            return Err(self.err(
                line,
                format!(
                    "{} is off the {period}-second grid the file's rows keep ({} s after the row before): a trace has one period throughout",
                    t.format("%Y-%m-%dT%H:%M:%SZ"),
                    gaps[k]
                ),
            ));
        }
        Ok(period)
    }

    fn finish(self) -> Result<Trace, TraceError> {
        if self.points.is_empty() {
            return Err(self.err(0, "the file holds no datapoints"));
        }
        let rows: Vec<DateTime<Utc>> = self.rows.iter().map(|(t, _)| *t).collect();
        let period_secs = self.grid(&rows)?;
        let (first, last) = (rows[0], rows[rows.len() - 1]);
        let periods = (last - first).num_seconds() / period_secs + 1;
        if periods > MAX_PERIODS {
            return Err(self.err(
                0,
                format!(
                    "from {} to {} at one row every {period_secs}s is {periods} periods; at most {MAX_PERIODS}",
                    first.to_rfc3339(),
                    last.to_rfc3339()
                ),
            ));
        }
        let timestamps = (0..periods)
            .map(|k| first + chrono::TimeDelta::seconds(k * period_secs))
            .collect();
        Ok(Trace {
            file: self.file,
            timestamps,
            series: self.points,
            recorded_count: self.counts,
            period_secs,
        })
    }
}

/// Parses CSV text.
pub fn parse_csv(text: &str, file: &str) -> Result<Trace, TraceError> {
    let mut b = Builder::new(file);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((hl, header)) = lines.next() else {
        return Err(b.err(0, "the file is empty"));
    };
    if header.contains('"') {
        return Err(b.err(hl + 1, "quoted fields are not supported"));
    }
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols.len() > MAX_COLUMNS + 1 {
        return Err(b.err(
            hl + 1,
            format!(
                "{} metric columns, more than the {MAX_COLUMNS} a trace may hold",
                cols.len() - 1
            ),
        ));
    }
    if !matches!(cols.first(), Some(&"timestamp") | Some(&"time")) {
        return Err(b.err(
            hl + 1,
            format!("the first column must be `timestamp`, found `{}`", cols[0]),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate().skip(1) {
        if c.is_empty() {
            return Err(b.err(hl + 1, format!("column {} has no name", i + 1)));
        }
        if !seen.insert(*c) {
            return Err(b.err(hl + 1, format!("column `{c}` appears twice")));
        }
    }
    for (i, line) in lines {
        let n = i + 1;
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != cols.len() {
            return Err(b.err(
                n,
                format!("{} fields, the header has {}", cells.len(), cols.len()),
            ));
        }
        let t = parse_time(cells[0]).map_err(|e| b.err(n, e))?;
        b.row(n, t)?;
        for (col, cell) in cols.iter().zip(&cells).skip(1) {
            if cell.is_empty() {
                continue;
            }
            let v: f64 = cell
                .parse()
                .map_err(|_| b.err(n, format!("{col}: `{cell}` is not a number")))?;
            b.add(n, t, col, v)?;
        }
    }
    b.finish()
}

/// Parses NDJSON text.
pub fn parse_ndjson(text: &str, file: &str) -> Result<Trace, TraceError> {
    let mut b = Builder::new(file);
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| b.err(n, format!("not JSON: {e}")))?;
        let Some(obj) = v.as_object() else {
            return Err(b.err(n, "each line must be a JSON object"));
        };
        let t = match obj.get("timestamp") {
            Some(serde_json::Value::String(s)) => parse_time(s).map_err(|e| b.err(n, e))?,
            Some(serde_json::Value::Number(x)) => parse_time(&x.to_string()).map_err(|e| b.err(n, e))?,
            _ => return Err(b.err(n, "missing \"timestamp\"")),
        };
        b.row(n, t)?;
        if let (Some(metric), Some(value)) = (obj.get("metric"), obj.get("value")) {
            let metric = metric
                .as_str()
                .ok_or_else(|| b.err(n, "\"metric\" must be a string"))?;
            let value = value
                .as_f64()
                .ok_or_else(|| b.err(n, format!("{metric}: \"value\" must be a number")))?;
            b.add(n, t, metric, value)?;
            continue;
        }
        for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "timestamp") {
            match v {
                serde_json::Value::Null => {}
                _ => {
                    let x = v
                        .as_f64()
                        .ok_or_else(|| b.err(n, format!("{k}: `{v}` is not a number")))?;
                    b.add(n, t, k, x)?;
                }
            }
        }
    }
    b.finish()
}

/// A trace from series read elsewhere (CloudWatch, Elasticsearch): every period from the
/// first sample to the last, at the finest period among them.
pub fn from_series(
    file: &str,
    series: BTreeMap<String, Vec<Sample>>,
    running: BTreeMap<DateTime<Utc>, u32>,
    period_secs: i64,
) -> Trace {
    let first = series
        .values()
        .flatten()
        .map(|s| s.timestamp)
        .chain(running.keys().copied())
        .min();
    let last = series
        .values()
        .flatten()
        .map(|s| s.timestamp)
        .chain(running.keys().copied())
        .max();
    let mut timestamps = Vec::new();
    if let (Some(mut t), Some(last)) = (first, last) {
        while t <= last {
            timestamps.push(t);
            t += chrono::TimeDelta::seconds(period_secs.max(1));
        }
    }
    Trace {
        file: file.to_string(),
        timestamps,
        series,
        recorded_count: running,
        period_secs,
    }
}

/// One row per period: the value of each metric (empty where missing), and `running` when known.
fn rows(t: &Trace) -> impl Iterator<Item = (DateTime<Utc>, Vec<Option<f64>>, Option<u32>)> + '_ {
    let at: Vec<BTreeMap<DateTime<Utc>, f64>> = t
        .series
        .values()
        .map(|v| v.iter().map(|s| (s.timestamp, s.value)).collect())
        .collect();
    t.timestamps.iter().map(move |ts| {
        let cells = at.iter().map(|m| m.get(ts).copied()).collect();
        (*ts, cells, t.recorded_count.get(ts).copied())
    })
}

/// The trace as CSV, as [`parse_csv`] reads it.
pub fn to_csv(t: &Trace) -> String {
    let mut out = String::from("timestamp");
    for id in t.series.keys() {
        out.push(',');
        out.push_str(id);
    }
    let with_running = !t.recorded_count.is_empty();
    if with_running {
        out.push_str(",running");
    }
    out.push('\n');
    for (ts, cells, running) in rows(t) {
        out.push_str(&ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        for c in cells {
            out.push(',');
            if let Some(v) = c {
                out.push_str(&v.to_string());
            }
        }
        if with_running {
            out.push(',');
            if let Some(r) = running {
                out.push_str(&r.to_string());
            }
        }
        out.push('\n');
    }
    out
}

/// The trace as wide NDJSON, as [`parse_ndjson`] reads it (missing values left out).
pub fn to_ndjson(t: &Trace) -> String {
    let ids: Vec<&String> = t.series.keys().collect();
    let mut out = String::new();
    for (ts, cells, running) in rows(t) {
        let mut m = serde_json::Map::new();
        m.insert(
            "timestamp".into(),
            ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into(),
        );
        for (id, c) in ids.iter().zip(cells) {
            if let Some(v) = c {
                m.insert((*id).clone(), v.into());
            }
        }
        if let Some(r) = running {
            m.insert("running".into(), r.into());
        }
        out.push_str(&serde_json::Value::Object(m).to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_out_of_order_a_negative_load_and_a_row_off_the_grid_are_refused_at_their_line() {
        let head = "timestamp,request_count,cpu\n";
        for (rows, says) in [
            (
                "2026-10-05T00:00:00Z,100,50\n2026-10-05T00:02:00Z,100,50\n2026-10-05T00:01:00Z,100,50\n",
                "t.csv:4: 2026-10-05T00:01:00Z comes after 2026-10-05T00:02:00Z (line 3)",
            ),
            (
                "2026-10-05T00:00:00Z,100,50\n2026-10-05T00:01:00Z,100,-3\n",
                "t.csv:3: cpu: -3 at 2026-10-05T00:01:00Z: it is never negative",
            ),
            (
                "2026-10-05T00:00:00Z,1,1\n2026-10-05T00:01:00Z,1,1\n2026-10-05T00:02:00Z,1,1\n2026-10-05T00:03:00Z,1,1\n2026-10-05T00:03:59Z,1,1\n2026-10-05T00:05:00Z,1,1\n",
                "t.csv:6: 2026-10-05T00:03:59Z is off the 60-second grid",
            ),
        ] {
            let e = super::parse_csv(&format!("{head}{rows}"), "t.csv").unwrap_err().to_string();
            assert!(e.starts_with(says), "{e}");
        }
        // gaps of whole periods are missing rows, not another grid
        let t = super::parse_csv(
            &format!("{head}2026-10-05T00:00:00Z,1,1\n2026-10-05T00:03:00Z,1,1\n2026-10-05T00:04:00Z,1,1\n"),
            "t.csv",
        )
        .unwrap();
        assert_eq!((t.period_secs, t.timestamps.len()), (60, 5));
        // a negative value of a metric that may be negative is a value
        assert!(super::parse_csv("timestamp,delta\n2026-10-05T00:00:00Z,-4\n", "d.csv").is_ok());
    }

    use super::*;

    #[test]
    fn csv_with_gaps_counts_and_forms_of_time() {
        let t = parse_csv(
            "timestamp,cpu,running\n2026-11-20T10:00:00Z,40,4\n2026-11-20 10:01,,4\n1795168920,42.5,5\n",
            "t.csv",
        )
        .unwrap();
        assert_eq!(t.period_secs, 60);
        assert_eq!(t.timestamps.len(), 3);
        let cpu: Vec<f64> = t.series["cpu"].iter().map(|s| s.value).collect();
        assert_eq!(cpu, [40.0, 42.5]);
        assert_eq!(t.recorded_count.values().copied().collect::<Vec<_>>(), [4, 4, 5]);
        assert!(!t.series.contains_key("running"));
    }

    #[test]
    fn csv_mistakes_name_the_line() {
        let cases = [
            ("time,cpu\n2026-11-20T10:00:00Z,x\n", "t.csv:2: cpu: `x` is not a number"),
            ("cpu,timestamp\n", "t.csv:1: the first column must be `timestamp`, found `cpu`"),
            ("timestamp,cpu\n2026-11-20T10:00:00Z,1,2\n", "t.csv:2: 3 fields, the header has 2"),
            ("timestamp,cpu\nyesterday,1\n", "t.csv:2: `yesterday` is not a timestamp (RFC 3339, YYYY-MM-DD HH:MM[:SS] in UTC, or Unix seconds)"),
            ("timestamp,cpu\n2026-11-20T10:00:00Z,1\n2026-11-20T10:00:00Z,2\n", "t.csv:3: cpu has a second value for 2026-11-20T10:00:00+00:00"),
            ("timestamp,cpu,running\n2026-11-20T10:00:00Z,1,2.5\n", "t.csv:2: running: a task count is a whole number, found 2.5"),
            ("timestamp,cpu\n", "t.csv: the file holds no datapoints"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_csv(text, "t.csv").unwrap_err().to_string(), want, "{text}");
        }
    }

    #[test]
    fn a_trace_of_too_many_metrics_is_refused_at_once() {
        let names: Vec<String> = (0..=MAX_COLUMNS).map(|i| format!("m{i}")).collect();
        let csv = format!("timestamp,{}\n", names.join(","));
        assert_eq!(
            parse_csv(&csv, "t.csv").unwrap_err().to_string(),
            "t.csv:1: 10001 metric columns, more than the 10000 a trace may hold"
        );
        // At the bound it reads; a repeated name is found with a set, not by scanning the columns.
        let csv = format!(
            "timestamp,{}\n2026-11-20T10:00:00Z,{}\n",
            names[1..].join(","),
            vec!["1"; MAX_COLUMNS].join(",")
        );
        assert_eq!(parse_csv(&csv, "t.csv").unwrap().series.len(), MAX_COLUMNS);
        let dup = "timestamp,a,b,a\n";
        assert_eq!(
            parse_csv(dup, "t.csv").unwrap_err().to_string(),
            "t.csv:1: column `a` appears twice"
        );
        let line: String = names
            .iter()
            .map(|n| format!("\"{n}\":1"))
            .collect::<Vec<_>>()
            .join(",");
        let nd = format!("{{\"timestamp\":\"2026-11-20T10:00:00Z\",{line}}}\n");
        let e = parse_ndjson(&nd, "t.ndjson").unwrap_err().to_string();
        assert!(
            e.starts_with("t.ndjson:1: ") && e.ends_with(": more than the 10000 metrics a trace may hold"),
            "{e}"
        );
    }

    #[test]
    fn ndjson_wide_and_long() {
        let t = parse_ndjson(
            "{\"timestamp\":\"2026-11-20T10:00:00Z\",\"cpu\":40,\"running\":3}\n{\"timestamp\":\"2026-11-20T10:05:00Z\",\"metric\":\"cpu\",\"value\":50}\n",
            "t.ndjson",
        )
        .unwrap();
        assert_eq!(t.period_secs, 300);
        assert_eq!(t.series["cpu"].len(), 2);
        assert_eq!(t.recorded_count.len(), 1);
        let e = parse_ndjson(
            "{\"timestamp\":\"2026-11-20T10:00:00Z\",\"cpu\":\"hot\"}\n",
            "t.ndjson",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "t.ndjson:1: cpu: `\"hot\"` is not a number");
    }

    #[test]
    fn a_trace_written_as_csv_or_ndjson_reads_back_the_same() {
        let t0 = parse_time("2026-11-20T10:00:00Z").unwrap();
        let at = |m: i64| t0 + chrono::TimeDelta::minutes(m);
        let series = BTreeMap::from([
            (
                "cpu".to_string(),
                vec![
                    Sample {
                        timestamp: at(0),
                        value: 41.5,
                    },
                    Sample {
                        timestamp: at(2),
                        value: 60.0,
                    },
                ],
            ),
            (
                "request_count".to_string(),
                vec![Sample {
                    timestamp: at(1),
                    value: 1200.0,
                }],
            ),
        ]);
        let running = BTreeMap::from([(at(0), 4), (at(2), 5)]);
        let t = from_series("export", series, running, 60);
        assert_eq!(t.timestamps, [at(0), at(1), at(2)]);
        let csv = to_csv(&t);
        assert_eq!(
            csv,
            "timestamp,cpu,request_count,running\n2026-11-20T10:00:00Z,41.5,,4\n2026-11-20T10:01:00Z,,1200,\n2026-11-20T10:02:00Z,60,,5\n"
        );
        for back in [
            parse_csv(&csv, "a.csv").unwrap(),
            parse_ndjson(&to_ndjson(&t), "a.ndjson").unwrap(),
        ] {
            assert_eq!(
                (&back.timestamps, &back.series, &back.recorded_count),
                (&t.timestamps, &t.series, &t.recorded_count)
            );
            assert_eq!(back.period_secs, 60);
        }
    }
}
