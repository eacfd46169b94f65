//! Distributed stress, `--on local`: a coordinator and its agents (child processes of the
//! binary) against the in-process test server. The shares add up to exactly the plan, the
//! merged percentiles match one process's, a windowed abort stops every agent, a killed agent
//! is named with its shortfall, and a wrong token is refused.

use std::io::BufRead as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use crate::stress::Server;
use crate::support::{ecscale, path_str, run_async, write};

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn plan(dir: &Path, url: &str, phases: &str, thresholds: &str) -> std::path::PathBuf {
    write(
        dir,
        "plan.yaml",
        &format!("name: dist\ntargets: ['{url}']\nconnections: 60\nphases:\n{phases}{thresholds}"),
    )
}

async fn stress(args: &[&str]) -> (i32, String, String) {
    let mut cmd = ecscale();
    cmd.arg("stress").args(args);
    run_async(cmd).await
}

/// `plan` on three local agents, its JSON report to `out`.
async fn on_three(plan: &Path, out: &Path) -> (i32, String, String) {
    let args = [
        "--agents",
        "3",
        "--progress",
        "off",
        "--json",
        path_str(out),
        "--plan",
        path_str(plan),
    ];
    stress(&args).await
}

fn ms(v: &Value, k: &str) -> f64 {
    v["totals"]["latency_ms"][k].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_send_exactly_the_plan_and_their_merged_percentiles_are_one_processs() {
    let server = Server::start(false).await;
    server.delay_us.store(20_000, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let phases = "  - {name: steady, duration: 2s, rate: 150}\n  - {name: ramp, duration: 2s, ramp: {from: 50, to: 250}}\n";
    let p = plan(dir.path(), &server.url, phases, "");
    let (one, three) = (dir.path().join("one.json"), dir.path().join("three.json"));
    let (code, _, stderr) = stress(&[
        "--plan",
        path_str(&p),
        "--progress",
        "off",
        "--json",
        path_str(&one),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let before = server.requests.load(Ordering::Relaxed);
    let (code, stdout, stderr) = on_three(&p, &three).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let (one, three) = (json(&one), json(&three));
    // Exactly the plan (300 + 300; a phase's requests are counted in the second they finished
    // in, so a few cross the boundary), each segment exactly its share: 100 of each phase.
    assert_eq!(three["totals"]["requests"], 600, "{three}");
    let per_phase: u64 = (0..2)
        .map(|p| three["phases"][p]["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(per_phase, 600);
    let agents = three["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    assert!(
        agents
            .iter()
            .all(|a| a["status"] == "finished" && a["requests"] == 200),
        "{agents:?}"
    );
    let shares: u64 = agents.iter().map(|a| a["requests"].as_u64().unwrap()).sum();
    let total = three["totals"]["requests"].as_u64().unwrap();
    assert_eq!(shares, total);
    assert_eq!(
        server.requests.load(Ordering::Relaxed) - before,
        total,
        "the server saw each request once"
    );
    // The merged histogram measures what one process measures: the server's 20 ms.
    for k in ["p50", "p99"] {
        let (a, b) = (ms(&one, k), ms(&three, k));
        assert!(
            (a - b).abs() <= 0.15 * a,
            "{k}: one process {a} ms, three agents {b} ms"
        );
    }
    assert!(ms(&three, "max") >= ms(&three, "p99"));
    for a in agents {
        let offset = a["clock_offset_ms"].as_f64().unwrap();
        assert!(offset.abs() < 50.0, "same machine, same clock: {a}");
    }
    assert!(
        stdout.contains("3 agents (their per-second histograms added, never averaged)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_threshold_with_abort_on_the_merged_data_stops_every_agent() {
    let server = Server::start(false).await;
    server.status.store(503, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &server.url,
        "  - {name: long, duration: 20s, rate: 90}\n",
        "thresholds:\n  - {check: 'errors < 5%', window: 2s, abort: true}\n",
    );
    let out = dir.path().join("r.json");
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = on_three(&p, &out).await;
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "stopped long before 20 s"
    );
    let r = json(&out);
    assert!(r["aborted"].as_str().unwrap().contains("errors < 5%"), "{r}");
    let agents = r["agents"].as_array().unwrap();
    assert!(
        agents.iter().all(|a| a["status"] == "finished"),
        "every agent stopped when told: {agents:?}"
    );
    assert!(r["totals"]["requests"].as_u64().unwrap() < 90 * 8);
}

/// Starts a coordinator with piped stderr; returns it and its announced URL and agent pids.
fn coordinator(args: &[&str], token: Option<(&str, &str)>) -> (std::process::Child, String, Vec<u32>) {
    let mut cmd = ecscale();
    cmd.arg("stress")
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some((k, v)) = token {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let line = loop {
        let l = lines.next().expect("the coordinator announces itself").unwrap();
        if l.contains("coordinator at ") {
            break l;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let url = line
        .split("coordinator at ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let pids = line
        .split("local pid ")
        .skip(1)
        .map(|s| s.split(')').next().unwrap().parse().unwrap())
        .collect();
    (child, url, pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_run_is_named_and_its_share_shows_as_shortfall() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &server.url,
        "  - {name: main, duration: 6s, rate: 150}\n",
        "",
    );
    let out = dir.path().join("r.json");
    let (mut child, _, pids) = coordinator(
        &[
            "--plan",
            path_str(&p),
            "--agents",
            "3",
            "--progress",
            "plain",
            "--json",
            path_str(&out),
        ],
        None,
    );
    assert_eq!(pids.len(), 3);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pids[1].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "a missing share fails the run");
    let r = json(&out);
    let agents = r["agents"].as_array().unwrap();
    let dead = agents[1]["status"].as_str().unwrap();
    assert!(
        dead.contains("its process ended") && dead.contains("signal: 9"),
        "{dead}"
    );
    assert_eq!(agents[0]["status"], "finished");
    assert_eq!(agents[2]["status"], "finished");
    let achieved = r["totals"]["rate_achieved"].as_f64().unwrap();
    assert!(
        (0.6..0.95).contains(&achieved),
        "a third missing for the last 3.5 s: {achieved}"
    );
    assert!(
        r["verdict"].as_str().unwrap().contains("an agent did not finish"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_the_run_goes_on_with_the_right_one() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &server.url,
        "  - {name: main, duration: 3s, rate: 60}\n",
        "",
    );
    let out = dir.path().join("r.json");
    let (child, url, _) = coordinator(
        &[
            "--plan",
            path_str(&p),
            "--agents",
            "2",
            "--progress",
            "plain",
            "--json",
            path_str(&out),
            "--token-env",
            "DIST_SECRET",
        ],
        Some(("DIST_SECRET", "the-right-one")),
    );
    let mut rogue = ecscale();
    rogue
        .args([
            "stress",
            "agent",
            "--coordinator",
            &url,
            "--name",
            "agent-1",
            "--token-env",
            "ROGUE",
        ])
        .env("ROGUE", "a-wrong-one");
    let (code, _, stderr) = run_async(rogue).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("401 Unauthorized") && stderr.contains("wrong or missing token"),
        "{stderr}"
    );
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let r = json(&out);
    assert_eq!(r["totals"]["requests"], 180, "{r}");
    // Without the variable: refused before anything starts.
    let (code, _, stderr) = stress(&[
        "--plan",
        path_str(&p),
        "--agents",
        "2",
        "--token-env",
        "UNSET_SECRET_X",
    ])
    .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--token-env UNSET_SECRET_X: the variable is not set"),
        "{stderr}"
    );
    let (code, _, stderr) = stress(&["--plan", path_str(&p), "--agents", "2", "--on", "ecs"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("--on ecs: not built yet"), "{stderr}");
}
