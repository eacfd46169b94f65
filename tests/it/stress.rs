//! `ecscale stress` against an in-process HTTP server on a free loopback port: the open model
//! holds its rate, a stall shows from the scheduled time, thresholds set the documented exit
//! codes, Ctrl-C still writes the report, scaling assertions watch a service in moto, the HTML
//! report renders its plots in headless Chromium, per-second documents reach the spool, a
//! target nobody listens on fails before the run, and failures are counted by their cause.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::support::moto::Moto;
use crate::support::{ecscale, moto_url, path_str, run_async, unique, write};

/// A test server: answers `status` after `delay`, or holds every request that arrives in the
/// stall window until the window ends.
#[derive(Clone)]
pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) requests: Arc<AtomicU64>,
    stall: Arc<Mutex<Option<(Instant, Instant)>>>,
    pub(crate) status: Arc<AtomicU64>,
    /// Every answer waits this long (µs).
    pub(crate) delay_us: Arc<AtomicU64>,
}

impl Server {
    pub(crate) async fn start(http2: bool) -> Server {
        Server::start_on("127.0.0.1:0", http2).await
    }

    /// The server on `addr` (`[::1]:0` for IPv6 loopback).
    pub(crate) async fn start_on(addr: &str, http2: bool) -> Server {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let s = Server {
            url: format!("http://{}/hello", listener.local_addr().unwrap()),
            requests: Arc::default(),
            stall: Arc::default(),
            status: Arc::new(AtomicU64::new(200)),
            delay_us: Arc::default(),
        };
        let server = s.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                            let server = server.clone();
                            async move {
                                server.requests.fetch_add(1, Ordering::Relaxed);
                                let delay = server.delay_us.load(Ordering::Relaxed);
                                if delay > 0 {
                                    tokio::time::sleep(Duration::from_micros(delay)).await;
                                }
                                let window = *server.stall.lock().unwrap();
                                if let Some((from, until)) = window {
                                    let now = Instant::now();
                                    if now >= from && now < until {
                                        tokio::time::sleep_until(until.into()).await;
                                    }
                                }
                                let status = server.status.load(Ordering::Relaxed) as u16;
                                Ok::<_, Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(b"container-1\n")))
                                        .unwrap(),
                                )
                            }
                        });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    if http2 {
                        let _ =
                            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                                .serve_connection(io, service)
                                .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        s
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn stress(args: &[&str]) -> (i32, String, String) {
    let mut cmd = ecscale();
    cmd.arg("stress").args(args);
    run_async(cmd).await
}

/// An IPv6 literal is a host, not a name to resolve: `http://[::1]:PORT/` is loaded as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_literal_url_is_loaded_without_resolving_it() {
    let server = Server::start_on("[::1]:0", false).await;
    assert!(server.url.starts_with("http://[::1]:"), "{}", server.url);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let (code, stdout, stderr) = stress(&[
        "--url",
        &server.url,
        "--rate",
        "100",
        "--duration",
        "1s",
        "--json",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&out);
    let sent = r["totals"]["requests"].as_u64().unwrap_or_default();
    assert!(sent >= 90, "{r}");
    assert_eq!(
        server.requests.load(Ordering::Relaxed),
        sent,
        "every request reached [::1]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_holds_2000_per_second_within_one_percent() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let (code, stdout, stderr) = stress(&[
        "--url",
        &server.url,
        "--rate",
        "2000",
        "--duration",
        "5s",
        "--connections",
        "50",
        "--json",
        path_str(&out),
        "--progress",
        "plain",
    ])
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&out);
    let t = &r["totals"];
    let requests = t["requests"].as_u64().unwrap();
    assert!(
        (9_900..=10_000).contains(&requests),
        "{requests} of 10,000 planned"
    );
    assert_eq!(
        server.requests.load(Ordering::Relaxed),
        requests,
        "the server saw exactly those"
    );
    assert!(t["rate_achieved"].as_f64().unwrap() >= 0.99, "{t}");
    assert_eq!(t["errors"], 0);
    assert_eq!(t["status_codes"]["200"].as_u64(), Some(requests));
    // Every full second near 2000/s, and planned 2000.
    let seconds = r["seconds"].as_array().unwrap();
    assert!(seconds.len() >= 5, "{}", seconds.len());
    for s in &seconds[..5] {
        assert!((s["rate_planned"].as_f64().unwrap() - 2000.0).abs() < 1.0, "{s}");
        let n = s["requests"].as_u64().unwrap();
        assert!((1_940..=2_060).contains(&n), "second {}: {n}", s["t"]);
    }
    // Keep-alive: one connection per slot, not one per request.
    assert!(r["connects"].as_u64().unwrap() <= 50, "{}", r["connects"]);
    assert!(
        stderr.contains("stress: [1/1 main]"),
        "plain progress lines: {stderr}"
    );
    assert!(
        stdout.contains(": done: no thresholds or assertions set"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_stall_shows_in_p99_from_the_scheduled_time_only() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let from = Instant::now() + Duration::from_millis(1500);
    *server.stall.lock().unwrap() = Some((from, from + Duration::from_secs(1)));
    let (code, stdout, stderr) = stress(&[
        "--url",
        &server.url,
        "--rate",
        "2000",
        "--duration",
        "4s",
        "--connections",
        "50",
        "--json",
        path_str(&out),
        "--progress",
        "off",
    ])
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let t = &json(&out)["totals"];
    let corrected = t["latency_ms"]["p99"].as_f64().unwrap();
    let uncorrected = t["service_time_ms"]["p99"].as_f64().unwrap();
    assert!(
        (800.0..=1_100.0).contains(&corrected),
        "p99 from scheduled: {corrected} ms"
    );
    assert!(uncorrected < 100.0, "p99 from the actual send: {uncorrected} ms");
    assert!(
        t["service_time_ms"]["max"].as_f64().unwrap() >= 900.0,
        "the stalled requests themselves"
    );
    assert!(stdout.contains("latency from scheduled send"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_pass_fail_and_abort_with_the_documented_exit_codes() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    // Pass: exit 0.
    let (code, stdout, _) = stress(&[
        "--url",
        &server.url,
        "--rate",
        "200",
        "--duration",
        "2s",
        "--threshold",
        "p95 < 500ms",
        "--threshold",
        "errors < 1%",
        "--progress",
        "off",
    ])
    .await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("PASS threshold p95 < 500ms"), "{stdout}");
    // Fail: exit 3, and the report says which and by how much.
    server.status.store(503, Ordering::Relaxed);
    let out = dir.path().join("fail.json");
    let (code, stdout, _) = stress(&[
        "--url",
        &server.url,
        "--rate",
        "200",
        "--duration",
        "2s",
        "--threshold",
        "errors < 1%",
        "--threshold",
        "p95 < 500ms",
        "--json",
        path_str(&out),
        "--progress",
        "off",
    ])
    .await;
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout.contains("FAIL threshold errors < 1%: 100.00% breaks errors < 1%"),
        "{stdout}"
    );
    let r = json(&out);
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["totals"]["errors_by_kind"]["http_5xx"], r["totals"]["requests"]);
    assert_eq!(r["thresholds"][1]["passed"], true);

    // A windowed threshold with abort: stops a 30 s plan within seconds.
    let plan = write(
        dir.path(),
        "abort.yaml",
        &format!(
            "name: abort check\ntargets: ['{}']\nconnections: 10\nphases:\n  - {{name: warm, duration: 30s, rate: 100}}\nthresholds:\n  - {{check: errors < 5%, window: 2s, abort: true}}\n",
            server.url
        ),
    );
    let out = dir.path().join("abort.json");
    let started = Instant::now();
    let (code, stdout, _) = stress(&[
        "--plan",
        path_str(&plan),
        "--json",
        path_str(&out),
        "--progress",
        "off",
    ])
    .await;
    assert_eq!(code, 3, "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "aborted early: {:?}",
        started.elapsed()
    );
    let r = json(&out);
    assert!(
        r["aborted"].as_str().unwrap().contains("errors < 5%"),
        "{}",
        r["aborted"]
    );
    assert!(r["duration_s"].as_f64().unwrap() < 6.0);
}

#[tokio::test]
async fn plan_mistakes_are_all_named_with_their_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(
        dir.path(),
        "bad.yaml",
        "targets:\n  - url: ftp://x/\nphases:\n  - duration: 10s\n    ramp: {from: 10}\n  - duration: 5s\n    rate: 10\n    users: 3\nthresholds: ['p95 < soon']\nassertions: ['desired >= 6 within 3m']\nconection: 3\n",
    );
    let (code, _, stderr) = stress(&["--plan", path_str(&plan)]).await;
    assert_eq!(code, 2, "{stderr}");
    for want in [
        "bad.yaml:2:10: targets[0].url: `ftp://x/`: scheme ftp is not http",
        "phases[0].ramp.to: missing required field",
        "phases[1]: a phase has one load, found rate, users",
        "bad.yaml:9:14: thresholds[0]: `soon` in `p95 < soon` is not a duration",
        "assertions: scaling assertions need a `watch:`",
        "unknown key `conection`",
        "did you mean `connections`?",
    ] {
        assert!(stderr.contains(want), "missing `{want}` in:\n{stderr}");
    }
    let (code, _, stderr) = stress(&["--url", "http://127.0.0.1:1/", "--rate", "0"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--rate 0"), "{stderr}");
    let (code, _, stderr) = stress(&[
        "--url",
        "http://127.0.0.1:1/",
        "--json",
        "/nonexistent/dir/x.json",
    ])
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the folder /nonexistent/dir does not exist"),
        "{stderr}"
    );
    // A body file is read within a bound: an endless one is refused, not read into memory.
    let (code, _, stderr) = stress(&["--url", "http://127.0.0.1:1/", "--body", "@/dev/zero"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--body @/dev/zero: /dev/zero is larger than 64 MiB"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_run_still_writes_the_report() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, html) = (dir.path().join("run.json"), dir.path().join("run.html"));
    let mut cmd = tokio::process::Command::from(ecscale());
    cmd.args([
        "stress",
        "--url",
        &server.url,
        "--rate",
        "500",
        "--duration",
        "60s",
        "--progress",
        "off",
    ])
    .args(["--json", path_str(&out), "--report", path_str(&html)])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops within seconds of Ctrl-C")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    let r = json(&out);
    assert_eq!(r["interrupted"], true);
    let d = r["duration_s"].as_f64().unwrap();
    assert!((2.0..4.0).contains(&d), "{d}");
    let requests = r["totals"]["requests"].as_u64().unwrap();
    assert!((900..=1_300).contains(&requests), "{requests}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("interrupted") && page.contains("<svg"),
        "the report is whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_multiplexes_streams_over_few_connections() {
    let server = Server::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let (code, stdout, stderr) = stress(&[
        "--url",
        &server.url,
        "--http2",
        "--rate",
        "1000",
        "--duration",
        "2s",
        "--connections",
        "2",
        "--json",
        path_str(&out),
        "--progress",
        "off",
    ])
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&out);
    assert_eq!(r["http"], "2");
    assert_eq!(r["connects"], 2, "two connections, 20 streams");
    assert!(
        r["totals"]["rate_achieved"].as_f64().unwrap() >= 0.99,
        "{}",
        r["totals"]
    );
    assert_eq!(r["totals"]["status_codes"]["200"], r["totals"]["requests"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_never_sent_for_want_of_a_connection_are_counted_and_explained() {
    let server = Server::start(false).await;
    server.delay_us.store(700_000, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let (code, stdout, stderr) = stress(&[
        "--url",
        &server.url,
        "--rate",
        "20",
        "--duration",
        "1s",
        "--connections",
        "1",
        "--json",
        path_str(&out),
        "--progress",
        "off",
    ])
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let t = &json(&out)["totals"];
    let (planned, sent) = (
        t["planned"].as_f64().unwrap() as u64,
        t["requests"].as_u64().unwrap(),
    );
    assert!(sent <= 3 && planned == 20, "{t}");
    assert!(
        stdout.contains(&format!(
            "  not sent: {} of 20 planned requests, still waiting for a free connection when their phase ended (the target answered too slowly for 1 connection per origin",
            planned - sent
        )),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_only_redirects_is_not_called_loaded() {
    let server = Server::start(false).await;
    server.status.store(301, Ordering::Relaxed);
    let (code, stdout, stderr) = stress(&[
        "--url",
        &server.url,
        "--rate",
        "100",
        "--duration",
        "1s",
        "--progress",
        "off",
    ])
    .await;
    assert_eq!(code, 0, "nothing asked of the run: {stdout}\n{stderr}");
    let requests = server.requests.load(Ordering::Relaxed);
    assert!(requests >= 90, "{requests}");
    assert!(
        stdout.contains("nothing to judge (no thresholds or assertions set), and every answer was a redirect (3xx), not followed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("  status codes 301 {requests}\n"))
            && stdout.contains(&format!(
                "note: {requests} of {requests} answers were redirects (3xx)"
            )),
        "{stdout}"
    );
    // Answers that are all 2xx print no status line.
    server.status.store(200, Ordering::Relaxed);
    let (code, stdout, _) = stress(&["--url", &server.url, "--rate", "100", "--duration", "1s"]).await;
    assert_eq!(code, 0);
    assert!(
        !stdout.contains("status codes") && stdout.contains("done: no thresholds"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_without_tls_to_a_server_that_speaks_only_http1_fails_before_the_run() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let (code, stdout, stderr) = stress(&[
        "--url",
        &server.url,
        "--http2",
        "--duration",
        "2s",
        "--json",
        path_str(&out),
    ])
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let origin = server.url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    assert!(
        stderr.contains(&format!(
            "{origin}: the server did not take HTTP/2 without TLS (h2c, prior knowledge)"
        )) && stderr.contains("leave out --http2"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing ran, so nothing is reported");
    assert_eq!(
        server.requests.load(Ordering::Relaxed),
        0,
        "the preface is no request"
    );
}

/// A worker config for moto in `region` (the watch reads AWS through it) spooling to `dir`.
/// A listener that reads each request and answers every other one with half a body before it
/// closes; the rest it closes without a word.
async fn breaking_server() -> (String, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let read = matches!(s.read(&mut buf).await, Ok(n) if n > 0);
                if read && count.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
                        .await;
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_nobody_listens_on_fails_before_the_run_and_failures_carry_their_causes() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens: one line naming the target and the cause, exit 1, no report.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/", free.local_addr().unwrap());
    drop(free);
    let out = dir.path().join("dead.json");
    let (code, stdout, stderr) =
        stress(&["--url", &dead, "--duration", "2s", "--json", path_str(&out)]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let origin = dead.trim_end_matches('/');
    assert!(
        stderr.contains(&format!("connect: {origin}: connection refused")),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing ran, so nothing is reported");

    // A target that breaks its answers: every failure is counted under its cause.
    let (url, seen) = breaking_server().await;
    let out = dir.path().join("broken.json");
    let (code, stdout, stderr) = stress(&[
        "--url",
        &url,
        "--rate",
        "200",
        "--duration",
        "2s",
        "--connections",
        "4",
        "--json",
        path_str(&out),
    ])
    .await;
    assert_eq!(code, 0, "no thresholds: {stdout}\n{stderr}");
    assert!(
        stdout.contains("nothing to judge (no thresholds or assertions set), and every request failed"),
        "not called a pass: {stdout}"
    );
    let t = &json(&out)["totals"];
    let requests = t["requests"].as_u64().unwrap();
    assert_eq!(t["errors"].as_u64(), Some(requests), "{t}");
    assert_eq!(
        seen.load(Ordering::Relaxed),
        requests,
        "the server saw exactly the run's requests"
    );
    let causes = t["error_causes"].as_array().unwrap();
    let count = |cause: &str| {
        causes
            .iter()
            .find(|c| c["kind"] == "io" && c["cause"] == cause)
            .and_then(|c| c["count"].as_u64())
            .unwrap_or_else(|| panic!("no io cause {cause:?} in {causes:?}"))
    };
    let half = count("the server closed the connection before its answer was whole");
    let none = count("the server closed the connection without answering");
    assert_eq!(half + none, requests, "{causes:?}");
    assert_eq!(causes.len(), 2, "{causes:?}");
    assert!(half.abs_diff(none) <= 1, "every other one: {half} / {none}");
    assert!(
        stdout.contains(&format!(
            "io {half}: the server closed the connection before its answer was whole"
        )),
        "{stdout}"
    );
}

/// A cluster in moto with a service `web` of 2 tasks, and a worker config for it (in `dir`,
/// spooling to `dir/spool`) that a plan's `watch` reads AWS through.
pub(crate) async fn watched_web(dir: &Path, region: &str) -> (Moto, String, PathBuf) {
    let moto = Moto::new(&moto_url(), region);
    let cluster = unique("it-stress");
    moto.cluster(&cluster).await.unwrap();
    let td = moto.task_definition(&unique("web"), 256, 512).await.unwrap();
    moto.service(&cluster, "web", &td, 2, &[]).await.unwrap();
    let config = moto_config(dir, region, &cluster);
    (moto, cluster, config)
}

/// Runs `cmd` while a stand-in for the worker sets `web`'s desired count to 6 after `ms[0]`
/// and back to 2 `ms[1]` later.
pub(crate) async fn run_while_scaling(
    cmd: std::process::Command,
    moto: &Moto,
    cluster: &str,
    ms: [u64; 2],
) -> (i32, String, String) {
    let run = tokio::spawn(run_async(cmd));
    tokio::time::sleep(Duration::from_millis(ms[0])).await;
    moto.set_desired(cluster, "web", 6).await.unwrap();
    tokio::time::sleep(Duration::from_millis(ms[1])).await;
    moto.set_desired(cluster, "web", 2).await.unwrap();
    run.await.unwrap()
}

/// The report's `n` scaling assertions all passed.
pub(crate) fn assert_all_passed(r: &Value, n: usize) {
    let verdicts: Vec<&str> = r["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["verdict"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, vec!["passed"; n], "{}", r["assertions"]);
}

/// At least `n` per-second stress documents went to `dir/spool`, for Kibana.
pub(crate) fn assert_stress_docs_spooled(dir: &Path, n: usize) {
    let spooled: String = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    let docs = spooled.lines().filter(|l| l.contains("\"rate_planned\"")).count();
    assert!(docs >= n, "{docs} stress documents in the spool:\n{spooled}");
    assert!(spooled.contains("ecscale-stress-"), "{spooled}");
}

fn moto_config(dir: &Path, region: &str, cluster: &str) -> PathBuf {
    write(
        dir,
        "ecscale.yaml",
        &format!(
            "aws: {{region: {region}, endpoint_url: '{}'}}\nschedule: {{interval: 60s}}\nclusters:\n  - name: {cluster}\n    services: [web]\nsink:\n  spool: {{dir: '{}'}}\n",
            moto_url(),
            dir.join("spool").display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_assertions_watch_the_service_in_moto() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let (moto, cluster, config) = watched_web(dir.path(), "ap-south-1").await;
    let plan_text = |back: &str| {
        format!(
            "name: release check\ntargets:\n  - {{url: '{}', weight: 1}}\nconnections: 10\nphases:\n  - {{name: ramp, duration: 2s, ramp: {{from: 50, to: 200}}}}\n  - {{name: hold, duration: 2s, rate: 200}}\nwatch: {{config: ecscale.yaml, cluster: {cluster}, service: web, every: 200ms}}\nassertions:\n  - desired >= 6 within 3s\n  - running == desired within 4s\n  - {back}\n  - no more than 1 direction changes\n",
            server.url
        )
    };
    let plan = write(
        dir.path(),
        "plan.yaml",
        &plan_text("scales back to <= 2 within 3s after the load ends"),
    );
    let (out, html) = (dir.path().join("run.json"), dir.path().join("run.html"));
    let mut cmd = ecscale();
    cmd.args([
        "stress",
        "--plan",
        path_str(&plan),
        "--progress",
        "plain",
        "--config",
        path_str(&config),
    ])
    .args(["--json", path_str(&out), "--report", path_str(&html)]);
    // The "worker": scale out a second into the load, back in once it is over.
    let (code, stdout, stderr) = run_while_scaling(cmd, &moto, &cluster, [1200, 3800]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&out);
    assert_all_passed(&r, 4);
    // The task count timeline: 2 (0 running, as moto creates it), 6, then 2.
    let tasks = r["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["desired"], 2);
    assert_eq!(tasks[0]["running"], 0);
    let desired: Vec<u64> = tasks.iter().map(|p| p["desired"].as_u64().unwrap()).collect();
    let mut changes = desired.clone();
    changes.dedup();
    assert_eq!(changes, [2, 6, 2], "{desired:?}");
    assert!(
        r["seconds"][2]["running"].as_u64() == Some(6),
        "{}",
        r["seconds"][2]
    );
    assert!(stderr.contains("waiting for: scales back to <= 2"), "{stderr}");
    // The per-second documents went to the config's spool, for Kibana.
    assert_stress_docs_spooled(dir.path(), 4);

    // Never scaled back: exit 4, and the report says what it last saw.
    let plan = write(
        dir.path(),
        "plan2.yaml",
        &plan_text("desired <= 1 within 1s after the load ends"),
    );
    let (code, stdout, _) = stress(&["--plan", path_str(&plan), "--progress", "off"]).await;
    assert_eq!(code, 4, "{stdout}");
    assert!(
        stdout.contains("FAIL assertion desired <= 1 within 1s after the load ends: not by"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL assertion desired >= 6 within 3s"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_its_plots_in_headless_chromium() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let plan = write(
        dir.path(),
        "plan.yaml",
        &format!(
            "name: render\ntargets: ['{}']\nconnections: 10\nphases:\n  - {{name: ramp, duration: 3s, ramp: {{from: 100, to: 400}}}}\n  - {{name: users, duration: 2s, users: 5, think: 10ms}}\nthresholds: ['p99 < 2s']\n",
            server.url
        ),
    );
    let (code, stdout, _) = stress(&[
        "--plan",
        path_str(&plan),
        "--report",
        path_str(&html),
        "--progress",
        "off",
    ])
    .await;
    assert_eq!(code, 0, "{stdout}");
    let (pixels, near) = crate::support::screenshot(&html, dir.path());
    // The achieved-rate line (#0072b2) and the p99 line (#d55e00) were drawn.
    for (name, rgb) in [("blue", [0x00, 0x72, 0xb2]), ("vermillion", [0xd5, 0x5e, 0x00])] {
        let n = pixels.iter().filter(|p| near(p, rgb)).count();
        assert!(n > 300, "{name} plot pixels: {n}");
    }
}
