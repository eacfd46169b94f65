//! Metrics from a real Prometheus server (Debian's, started by `scripts/test-services`), which
//! scrapes exporters the tests run: the query → series → decision path, an empty result held as
//! missing data, two series refused, a Prometheus that is down or never answers named as the
//! problem with nothing scaled, Prometheus scraping ecscale's own `/metrics`, and the alerts on
//! ecscale going true in it.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::support::{unique, write};
use crate::worker::{stage, Stage};

fn prometheus_url() -> String {
    std::env::var("ECSCALE_TEST_PROMETHEUS_URL")
        .expect("ECSCALE_TEST_PROMETHEUS_URL: run the tests through scripts/test-services")
}

/// Tells Prometheus to scrape `addr` every second, with label `it` = `name`.
fn scrape(name: &str, addr: &str) {
    let dir = PathBuf::from(std::env::var("ECSCALE_TEST_PROMETHEUS_TARGETS").unwrap());
    let json = serde_json::json!([{ "targets": [addr], "labels": { "it": name } }]);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, json.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.json"))).unwrap();
}

/// An exporter serving `text` on /metrics (changeable while it runs).
struct Exporter {
    addr: String,
    text: Arc<Mutex<String>>,
}

impl Exporter {
    async fn start(text: &str) -> Exporter {
        let text = Arc::new(Mutex::new(text.to_string()));
        let t = text.clone();
        let addr = crate::support::serve(move |_req| {
            let body = t.lock().unwrap().clone();
            async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
        })
        .await;
        Exporter { addr, text }
    }
}

/// An instant query's first value, if any.
async fn instant(query: &str) -> Option<f64> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prometheus_url()))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Waits until `query` (an instant query) gives at least `min`.
async fn until_at_least(query: &str, min: f64) {
    let start = std::time::Instant::now();
    while instant(query).await.is_none_or(|v| v < min) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "`{query}` never reached {min}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A config on the stage whose `web` reads metric `load` from Prometheus with `query`, and its
/// policy: target tracking at 50 (min 1, max 8).
fn config(s: &Stage, query: &str) -> PathBuf {
    config_on(s, query, &format!("{{url: '{}'}}", prometheus_url()))
}

/// [`config`] with these `prometheus:` settings.
fn config_on(s: &Stage, query: &str, prometheus: &str) -> PathBuf {
    write(
        s.dir.path(),
        "policies.yaml",
        &format!(
            "target: {{cluster: {c}, service: web}}\nmin: 1\nmax: 8\ncooldown: {{scale_out: 0s, scale_in: 0s}}\nscale_in_stabilization: 0s\nrules:\n  - {{name: load, kind: target_tracking, metric: load, target: 50, scale_in_datapoints: 3, warmup: 0s}}\n",
            c = s.cluster
        ),
    );
    write(
        s.dir.path(),
        "ecscale.yaml",
        &format!(
            "aws:\n  region: {region}\n  endpoint_url: {moto}\n  retry: {{max_attempts: 1}}\nschedule: {{interval: 1s}}\nprometheus: {prometheus}\nclusters:\n  - name: {c}\n    default_metrics: false\n    services:\n      - name: web\n        metrics:\n          - {{id: load, prometheus: {{query: '{query}'}}, period: 1s, delay: 1s}}\npolicies: [policies.yaml]\nsink: {{spool: {{dir: spool}}}}\nworker:\n  metrics_addr: 'off'\n  state: {{file: state.json}}\n",
            region = s.moto.region,
            moto = s.proxy.url,
            c = s.cluster,
        ),
    )
}

/// `ecscale run` on `config`, its output dropped, killed when dropped.
fn run_quietly(config: &std::path::Path) -> tokio::process::Child {
    let mut cmd = crate::support::ecscale();
    cmd.args(["run", "--config"]).arg(config);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn run_ticks(config: &std::path::Path, ticks: &str) -> (i32, String, String) {
    let mut cmd = crate::support::ecscale();
    cmd.args([
        "--log",
        "info,ecscale::worker=debug",
        "run",
        "--ticks",
        ticks,
        "--config",
    ])
    .arg(config);
    crate::support::run(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_query_becomes_a_series_and_a_decision() {
    let s = stage("ap-southeast-1", "it-prom").await;
    let name = unique("load");
    let exporter = Exporter::start("# TYPE ecscale_it_load gauge\necscale_it_load 90\n").await;
    scrape(&name, &exporter.addr);
    until_at_least(
        &format!("count_over_time(ecscale_it_load{{it=\"{name}\"}}[30s])"),
        8.0,
    )
    .await;
    let config = config(&s, &format!("ecscale_it_load{{it=\"{name}\"}}"));
    // The series as collected: one sample per complete second, each 90.
    let mut cmd = crate::support::ecscale();
    cmd.args(["collect", "--once", "--format", "json", "--config"])
        .arg(&config);
    let (code, stdout, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    let snap: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let series = &snap["series"][0];
    assert_eq!(series["namespace"], "Prometheus");
    assert_eq!(series["status"], "Complete");
    assert_eq!(series["period_secs"], 1);
    let samples = series["samples"].as_array().unwrap();
    assert!(samples.len() >= 5, "{series}");
    assert!(samples.iter().all(|p| p["value"] == 90.0), "{series}");
    assert_eq!(
        snap["usage"]["operations"]["Prometheus.QueryRange"]["calls"], 1,
        "{}",
        snap["usage"]
    );
    // The decision: 90 against a target of 50 takes 2 tasks to 4.
    let (code, _, log) = run_ticks(&config, "1");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("2 → 4: load 90 > target 50"), "{log}");
    assert_eq!(s.desired("web").await, 4);

    // The value falls: three low seconds later, a scale-in, as from CloudWatch.
    *exporter.text.lock().unwrap() = "ecscale_it_load 10\n".into();
    until_at_least(
        &format!("count_over_time((ecscale_it_load{{it=\"{name}\"}} == 10)[30s:1s])"),
        5.0,
    )
    .await;
    let (code, _, log) = run_ticks(&config, "1");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("4 → 1"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_result_is_missing_data_not_zero_and_two_series_are_an_error() {
    let s = stage("ap-southeast-1", "it-prom-empty").await;
    let name = unique("pair");
    let exporter = Exporter::start("ecscale_it_pair{pod=\"a\"} 1\necscale_it_pair{pod=\"b\"} 2\n").await;
    scrape(&name, &exporter.addr);
    until_at_least(
        &format!("count(count_over_time(ecscale_it_pair{{it=\"{name}\"}}[30s]) >= 5)"),
        2.0,
    )
    .await;

    // Nothing matches: read as 0 it would take web from 2 to 1; as missing data, it holds.
    let config_empty = config(&s, &format!("ecscale_it_pair{{it=\"{name}\", pod=\"gone\"}}"));
    let (code, _, log) = run_ticks(&config_empty, "2");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("missing"), "{log}");
    assert!(!log.contains("→ 1"), "{log}");
    assert_eq!(s.desired("web").await, 2);

    // Two series where one is expected: a problem naming them, and no decision on them.
    let config_two = config(&s, &format!("ecscale_it_pair{{it=\"{name}\"}}"));
    let mut cmd = crate::support::ecscale();
    cmd.args(["collect", "--once", "--format", "json", "--config"])
        .arg(&config_two);
    let (code, out, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 1, "{stderr}\n{out}");
    assert!(
        stderr.contains("metric `load`: the query gave 2 series ("),
        "{stderr}"
    );
    assert!(
        stderr.contains("pod=\"a\"") && stderr.contains("pod=\"b\""),
        "{stderr}"
    );
    let (_, _, log) = run_ticks(&config_two, "1");
    assert!(log.contains("2 series"), "{log}");
    assert_eq!(s.desired("web").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_ecscale_metrics_and_promtool_finds_nothing_wrong() {
    let s = stage("ap-southeast-1", "it-prom-self").await;
    let name = unique("self");
    let exporter = Exporter::start("ecscale_it_load 40\n").await;
    scrape(&format!("{name}-load"), &exporter.addr);
    let config = config(&s, &format!("ecscale_it_load{{it=\"{name}-load\"}}"));
    let port = crate::support::free_port();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "metrics_addr: 'off'",
        &format!("metrics_addr: '127.0.0.1:{port}'"),
    );
    std::fs::write(&config, text).unwrap();
    let _worker = run_quietly(&config);
    scrape(&name, &format!("127.0.0.1:{port}"));
    // Scraped without errors, ticks and Prometheus queries counted.
    until_at_least(&format!("up{{it=\"{name}\"}}"), 1.0).await;
    until_at_least(&format!("ecscale_ticks_total{{it=\"{name}\"}}"), 3.0).await;
    until_at_least(
        &format!("ecscale_aws_calls_total{{it=\"{name}\", operation=\"Prometheus.QueryRange\"}}"),
        1.0,
    )
    .await;
    // Every sample of the text was taken (as many as its sample lines, give or take the
    // label sets a tick adds in between).
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count() as f64;
    let scraped = instant(&format!("scrape_samples_scraped{{it=\"{name}\"}}"))
        .await
        .unwrap();
    assert!(
        (scraped - lines).abs() <= 10.0,
        "{scraped} samples scraped of {lines}"
    );
    // promtool's lint of the same text.
    let mut promtool = std::process::Command::new(std::env::var("ECSCALE_TEST_PROMTOOL").unwrap())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_down_or_silent_is_a_problem_naming_it_and_nothing_is_scaled() {
    let s = stage("ap-southeast-1", "it-prom-down").await;
    // Down: nothing listens on the port (bound, then closed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    // Silent: it accepts connections and never answers.
    let (silent_url, held) = crate::support::silent_server().await;
    for (url, says) in [(&down, "Connection refused"), (&silent_url, "no answer in time")] {
        let settings = format!("{{url: '{url}', timeout: 1s}}");
        let config = config_on(&s, "ecscale_it_load", &settings);
        let (code, _, log) = tokio::task::block_in_place(|| run_ticks(&config, "2"));
        assert_eq!(
            code, 0,
            "a source's failure fails its target's tick, not the worker: {log}"
        );
        let named = format!("{url}/api/v1/query_range");
        assert!(
            log.contains(&named) && log.contains(says),
            "{named}, {says}: {log}"
        );
        assert!(!log.contains(" → "), "no decision without data: {log}");
        assert_eq!(s.desired("web").await, 2, "{log}");
    }
    held.abort();
}

/// IPv6 literal URLs for the real services: the worker reads its metric from Prometheus and
/// ships its documents to OpenSearch, both named as `http://[::1]:PORT` (a forwarder on IPv6
/// loopback in front of each), and `ecscale setup` installs its templates the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_elasticsearch_at_ipv6_literal_urls() {
    let s = stage("ap-southeast-1", "it-prom-v6").await;
    let name = unique("v6");
    let exporter = Exporter::start("# TYPE ecscale_it_load gauge\necscale_it_load 90\n").await;
    scrape(&name, &exporter.addr);
    until_at_least(
        &format!("count_over_time(ecscale_it_load{{it=\"{name}\"}}[30s])"),
        5.0,
    )
    .await;
    let authority = |url: &str| {
        url.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    };
    let prom6 = crate::support::ipv6_to(&authority(&prometheus_url())).await;
    let es6 = crate::support::ipv6_to(&authority(&crate::support::es_url())).await;
    assert!(prom6.starts_with("http://[::1]:") && es6.starts_with("http://[::1]:"));
    let prefix = unique("itv6");
    let config = config_on(
        &s,
        &format!("ecscale_it_load{{it=\"{name}\"}}"),
        &format!("{{url: '{prom6}'}}"),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "sink: {spool: {dir: spool}}",
        &format!("sink: {{index_prefix: {prefix}, elasticsearch: {{url: '{es6}', replicas: 0, flush_interval: 200ms}}, spool: {{dir: spool}}}}"),
    );
    std::fs::write(&config, text).unwrap();
    let mut cmd = crate::support::ecscale();
    cmd.args(["setup", "--config"]).arg(&config);
    let (code, stdout, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("templates installed"), "{stdout}");
    let (code, _, log) = run_ticks(&config, "2");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("2 → 4: load 90 > target 50"), "{log}");
    // The documents arrived, through the IPv6 URL.
    let es = crate::support::es_url();
    let client = reqwest::Client::new();
    client
        .post(format!("{es}/{prefix}-*/_refresh"))
        .send()
        .await
        .unwrap();
    let count: serde_json::Value = client
        .get(format!("{es}/{prefix}-decisions-*/_count"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(count["count"].as_u64().unwrap_or(0) >= 1, "{count}");
}

/// The alerts on ecscale itself in the real Prometheus (`scripts/test-services` loads
/// `deploy/prometheus-rules.yaml`, evaluated every second): a worker whose Elasticsearch does
/// not answer raises EcscaleShipperDegraded (pending through its `for:`), a refused reload
/// raises EcscaleReloadFailed at once, and the worker stopped raises EcscaleDown (pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_on_ecscale_go_true_in_prometheus() {
    let s = stage("ap-southeast-1", "it-prom-alerts").await;
    let name = unique("alerts");
    let exporter = Exporter::start("ecscale_it_load 40\n").await;
    scrape(&format!("{name}-load"), &exporter.addr);
    let config = config(&s, &format!("ecscale_it_load{{it=\"{name}-load\"}}"));
    let (port, nobody) = (crate::support::free_port(), crate::support::free_port());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "metrics_addr: 'off'",
            &format!("metrics_addr: '127.0.0.1:{port}'"),
        )
        .replace(
            "sink: {spool: {dir: spool}}",
            &format!("sink: {{elasticsearch: {{url: 'http://127.0.0.1:{nobody}'}}, spool: {{dir: spool}}}}"),
        );
    std::fs::write(&config, text).unwrap();
    let mut cmd = crate::support::ecscale();
    cmd.args(["run", "--config"]).arg(&config);
    // Its health lines for CloudWatch too (the stack's alarms read them).
    let stdout = s.dir.path().join("emf.ndjson");
    cmd.env("ECSCALE_EMF_STACK", "it-alerts")
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::process::Stdio::null());
    let mut worker = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    scrape(&name, &format!("127.0.0.1:{port}"));
    let alert = |alert: &str| format!("ALERTS{{alertname=\"{alert}\", it=\"{name}\"}}");
    until_at_least(&alert("EcscaleShipperDegraded"), 1.0).await;
    // A broken policy file, reloaded: refused, the alert fires (no `for:`).
    write(s.dir.path(), "policies.yaml", "target: [unclosed\n");
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/reload"))
        .send()
        .await
        .unwrap();
    assert!(!answer.status().is_success(), "{}", answer.status());
    until_at_least(
        &format!("ALERTS{{alertname=\"EcscaleReloadFailed\", alertstate=\"firing\", it=\"{name}\"}}"),
        1.0,
    )
    .await;
    // The health lines said the same: the shipper degraded, then the reload failed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["ShipDegraded"] == 1), "{lines:?}");
    assert_eq!(lines.last().unwrap()["ReloadFailed"], 1, "{lines:?}");
    // Stopped: nothing to scrape.
    worker.kill().await.unwrap();
    until_at_least(&alert("EcscaleDown"), 1.0).await;
}

/// A worker whose ticks stop while it still answers: its AWS endpoint accepts connections and
/// never answers (and its time limits are long), so the first tick never ends. Scraped by the
/// real Prometheus, EcscaleNoTick goes true once the start is older than its schedule's three
/// gaps and a minute, while EcscaleDown stays quiet (the worker is up: it is the ticks that
/// stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_ticks_stall_raises_no_tick_in_prometheus() {
    let (aws, held) = crate::support::silent_server().await;
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let config = write(
        dir.path(),
        "ecscale.yaml",
        &format!(
            "aws:\n  region: eu-west-1\n  endpoint_url: '{aws}'\n  retry: {{max_attempts: 1}}\n  timeouts: {{attempt: 10m, operation: 10m}}\nschedule: {{interval: 1s}}\nclusters: [{{name: stalled, services: [web]}}]\nsink: {{spool: {{dir: spool}}}}\nworker:\n  metrics_addr: '127.0.0.1:{port}'\n  state: {{file: state.json}}\n"
        ),
    );
    let _worker = run_quietly(&config);
    let name = unique("stalled");
    scrape(&name, &format!("127.0.0.1:{port}"));
    let firing = format!("ALERTS{{alertname=\"EcscaleNoTick\", alertstate=\"firing\", it=\"{name}\"}}");
    let start = std::time::Instant::now();
    while instant(&firing).await.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "EcscaleNoTick did not fire"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stale = start.elapsed();
    assert!(
        stale >= Duration::from_secs(55),
        "fired after {stale:?}, before the stale bound"
    );
    assert_eq!(
        instant(&format!("up{{it=\"{name}\"}}")).await,
        Some(1.0),
        "the worker is up"
    );
    assert_eq!(
        instant(&format!("ecscale_ticks_total{{it=\"{name}\"}}")).await,
        Some(0.0),
        "no tick ended"
    );
    held.abort();
}
