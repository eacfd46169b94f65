//! Shipping benchmark: ecscale's shipper against elasticsearch-py's `streaming_bulk`, the same
//! ~1.2 KB documents to the same bulk endpoint, three interleaved runs each.
//!
//!     scripts/bench/ship        (sets up the Python peer, then runs this)
//!
//! The endpoint is a bulk sink in its own process (this program, re-run with `--sink`): it
//! answers every bulk with a per-item answer like Elasticsearch's, so neither client waits on
//! indexing and the sink's CPU counts for neither. Each client's CPU is its own process's
//! (user + system). Issue 5's goal: at least 4× the peer's documents per second per core,
//! i.e. at most 4.3 µs of CPU per document.
//!
//! Without ECSCALE_BENCH_PYTHON (a Python with elasticsearch 7.13 installed) only ecscale runs.

// A measuring program: its fixed inputs are known good, and failing loudly is right.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use ecscale::config::{ElasticsearchSettings, OnFull, SinkSettings, SpoolSettings};
use ecscale::model::{Sample, Series, Snapshot};
use ecscale::ship::docs::snapshot_docs;
use ecscale::ship::Shipper;

mod support;
use support::cpu_seconds;

const DOCS: usize = 200_000;
const RUNS: usize = 3;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The bulk sink: answers each `_bulk` with one `created` item per document.
fn sink() {
    use http_body_util::{BodyExt, Full};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let is_bulk = req.uri().path() == "/_bulk";
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let text = if is_bulk {
                        let n = body.iter().filter(|b| **b == b'\n').count() / 2;
                        let item = r#"{"index":{"_index":"bench-metrics-2026.11.25","_id":"sample:bench/svc-1:cpu:1","_version":1,"result":"created","_shards":{"total":1,"successful":1,"failed":0},"_seq_no":1,"_primary_term":1,"status":201}}"#;
                        let mut s = String::with_capacity(40 + n * (item.len() + 1));
                        s.push_str(r#"{"took":3,"errors":false,"items":["#);
                        for i in 0..n {
                            if i > 0 {
                                s.push(',');
                            }
                            s.push_str(item);
                        }
                        s.push_str("]}");
                        s
                    } else {
                        r#"{"version":{"number":"7.10.2"},"tagline":"You Know, for Search"}"#.to_string()
                    };
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(bytes::Bytes::from(text)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// What the collect stage hands over: 50 services' CPU series, 4,000 datapoints each (the
/// padding dimension brings a document to ~1.1 KB, like the peer's).
fn snapshot() -> Snapshot {
    let at: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
    let series = (0..50)
        .map(|s| Series {
            cluster: "bench".into(),
            service: format!("svc-{s}"),
            id: "cpu".into(),
            namespace: "AWS/ECS".into(),
            metric_name: "CPUUtilization".into(),
            dimensions: BTreeMap::from([
                ("ClusterName".into(), "bench".into()),
                ("ServiceName".into(), format!("svc-{s}")),
                ("Padding".into(), "x".repeat(820)),
            ]),
            stat: "Average".into(),
            period_secs: 60,
            unit: Some("Percent".into()),
            status: "Complete".into(),
            per_task: false,
            history: None,
            complete_until: at,
            samples: (0..DOCS / 50)
                .map(|k| Sample {
                    timestamp: at - TimeDelta::minutes(k as i64 + 1),
                    value: (k % 100) as f64 + 0.5,
                })
                .collect(),
        })
        .collect();
    Snapshot {
        taken_at: at,
        clusters: vec![],
        series,
        usage: Default::default(),
        problems: vec![],
    }
}

struct Run {
    docs: u64,
    seconds: f64,
    cpu: f64,
}

/// Ships DOCS documents through a Shipper (spool included) and waits until all are delivered.
fn ecscale_run(url: &str) -> Run {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut es = ElasticsearchSettings::new(url);
    es.replicas = 0;
    let sink = SinkSettings {
        index_prefix: "bench".into(),
        elasticsearch: Some(es),
        spool: SpoolSettings {
            dir: dir.path().to_path_buf(),
            max_bytes: 4 << 30,
            on_full: OnFull::Block,
        },
    };
    let collected = snapshot();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let stats = rt.block_on(async {
        let shipper = Shipper::start(&sink).unwrap();
        // As the worker does: the pass's documents, handed over in batches.
        let docs = snapshot_docs(&collected, &|_| None);
        for batch in docs.chunks(1000) {
            shipper.ship(batch).await.unwrap();
        }
        shipper.close(Duration::from_secs(300)).await
    });
    let run = Run {
        docs: stats.delivered,
        seconds: t0.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu0,
    };
    // The pass also ships one usage document.
    assert_eq!(run.docs, DOCS as u64 + 1, "{stats:?}");
    run
}

fn peer_run(python: &str, url: &str) -> Run {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench/streaming_bulk.py");
    let out = Command::new(python)
        .args([script, url, &DOCS.to_string()])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the peer prints JSON");
    Run {
        docs: v["docs"].as_u64().unwrap(),
        seconds: v["seconds"].as_f64().unwrap(),
        cpu: v["cpu_seconds"].as_f64().unwrap(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--sink") {
        sink();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--sink")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = format!("http://127.0.0.1:{}", line.trim());
    let python = std::env::var("ECSCALE_BENCH_PYTHON").ok();
    let size = snapshot_docs(&snapshot(), &|_| None)[0].source.len();
    println!("shipping {DOCS} documents of {size} bytes to a bulk sink at {url}, {RUNS} interleaved runs");
    println!(
        "{:<26} {:>10} {:>12} {:>14}",
        "client", "docs/s", "CPU µs/doc", "docs/s per core"
    );
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..RUNS {
        if let Some(py) = &python {
            let r = peer_run(py, &url);
            println!(
                "{:<26} {:>10.0} {:>12.2} {:>14.0}",
                "elasticsearch-py 7.13",
                r.docs as f64 / r.seconds,
                r.cpu * 1e6 / r.docs as f64,
                r.docs as f64 / r.cpu
            );
            theirs.push(r);
        }
        let r = ecscale_run(&url);
        println!(
            "{:<26} {:>10.0} {:>12.2} {:>14.0}",
            "ecscale (spool + bulk)",
            r.docs as f64 / r.seconds,
            r.cpu * 1e6 / r.docs as f64,
            r.docs as f64 / r.cpu
        );
        ours.push(r);
    }
    let _ = child.kill();
    let _ = child.wait();
    let per_core = |runs: &[Run]| {
        let mut v: Vec<f64> = runs.iter().map(|r| r.docs as f64 / r.cpu).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ours_pc = per_core(&ours);
    println!(
        "ecscale median: {ours_pc:.0} docs/s per core ({:.2} µs CPU per document); peak RSS {:.0} MiB",
        1e6 / ours_pc,
        peak_rss_mib()
    );
    if !theirs.is_empty() {
        let theirs_pc = per_core(&theirs);
        println!(
            "elasticsearch-py median: {theirs_pc:.0} docs/s per core ({:.2} µs); ratio {:.1}x (goal: 4x, at most 4.3 µs per document)",
            1e6 / theirs_pc,
            ours_pc / theirs_pc
        );
    }
}
