//! `ecscale demo` and `ecscale backtest --simulate`: the simulated cluster end to end.
//! The demo runs at 60× (50 simulated minutes in under a minute) with real HTTP traffic, ships to
//! OpenSearch, and its report renders in headless Chromium; the closed-loop back-test compares
//! the example policy with the AWS-style baseline on the recorded diurnal-plus-spike trace.

use std::path::Path;

use crate::ship::count;
use crate::support::{ecscale, es_url, path_str, repo, run, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scales_survives_kills_ships_and_writes_a_report_that_renders() {
    let es = es_url();
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("demo.html");
    let prefix = format!("demo-it-{}", std::process::id());
    let (code, stdout, stderr) = run(ecscale()
        .args([
            "demo", "--speed", "60", "--quiet", "--es", &es, "--prefix", &prefix,
        ])
        .arg("--report")
        .arg(&html)
        .arg("--spool")
        .arg(dir.path().join("spool")));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for line in [
        "✓ the service scaled out under the ramp: 3 → ",
        "✓ p95 latency back under 250 ms by the end of the hold",
        "✓ it scaled back in after the load fell",
        "✓ no flapping",
        "✓ the killed task at ",
        "✓ the killed instance at ",
        "✓ capacity in time",
        "✓ group queue-worker: followed its queue, out to ",
        "✓ group queue-worker: placed as its strategy says",
        "✓ group queue-worker: every task it decided was placed within",
        "✓ group queue-worker: its queue worked off",
        "✓ every answered request recorded exactly once in the visit store",
    ] {
        assert!(stdout.contains(line), "{line}\n{stdout}");
    }
    assert!(!stdout.contains('✗'), "{stdout}");
    // The store is a real SQLite file: one row per visit id, as many as the check counted.
    let visits = dir.path().join("spool/visits.sqlite");
    let db = rusqlite::Connection::open(&visits).unwrap();
    let (rows, ids): (i64, i64) = db
        .query_row("SELECT COUNT(*), COUNT(DISTINCT id) FROM visits", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(rows, ids);
    let line = stdout.lines().find(|l| l.contains("visit store")).unwrap();
    assert!(
        line.contains(&format!(
            "0 of them missing, 0 answered twice, 0 second saves refused; {rows} rows from "
        )),
        "{line}"
    );
    // Every decision reached OpenSearch, beside the metrics and the stress seconds.
    let decisions = count(&es, &format!("{prefix}-decisions-*")).await;
    let metrics = count(&es, &format!("{prefix}-metrics-*")).await;
    let stress = count(&es, &format!("{prefix}-stress-*")).await;
    assert!(
        decisions >= 100 && metrics >= 100 && stress >= 30,
        "{decisions} {metrics} {stress}\n{stdout}"
    );
    assert!(
        stdout.contains(" 0 dead letters, 0 left in the spool"),
        "{stdout}"
    );
    // The report: summary, checks, charts, the decision log with reasons, the kills.
    let page = std::fs::read_to_string(&html).unwrap();
    for s in [
        "<pre id=\"summary\">",
        "Decisions (ecscale)",
        "cpu ",
        "target 67 (+6%)",
        "killed (failed its health check)",
        "<svg",
    ] {
        assert!(page.contains(s), "{s}");
    }
    // Both kills are marked on every chart (4 charts and the task group's), desired drawn
    // dashed over running.
    let fault_lines = page.matches(r#"stroke-dasharray="3 3""#).count();
    assert_eq!(fault_lines, 10, "fault lines on the charts");
    assert!(page.contains("Task group queue-worker, placed by ecscale"));
    let (pixels, near) = crate::support::screenshot(&html, dir.path());
    // The load line (#0072b2) and the p95 line (#d55e00) were drawn.
    for (name, rgb) in [("blue", [0x00, 0x72, 0xb2]), ("vermillion", [0xd5, 0x5e, 0x00])] {
        let n = pixels.iter().filter(|p| near(p, rgb)).count();
        assert!(n > 300, "{name} plot pixels: {n}");
    }
}

#[test]
fn the_demo_scenario_is_read_by_the_users_readers_and_a_mistake_starts_nothing() {
    // A copy whose config names a group the scenario does not describe, and a fault of an
    // unknown kind: both named with their line, exit 2, no report written.
    let dir = tempfile::tempdir().unwrap();
    let demo = repo().join("examples/demo");
    let scenario = std::fs::read_to_string(demo.join("scenario.yaml")).unwrap();
    let scenario = scenario
        .replace(
            "../../policies/",
            &format!("{}/", repo().join("policies").display()),
        )
        .replace("kill: instance", "kill: zone");
    let path = write(dir.path(), "scenario.yaml", &scenario);
    std::fs::copy(demo.join("ecscale.yaml"), dir.path().join("ecscale.yaml")).unwrap();
    let report = dir.path().join("r.html");
    let (code, _, stderr) = run(ecscale().args([
        "demo",
        "--scenario",
        path_str(&path),
        "--report",
        path_str(&report),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("scenario.yaml:42:22: faults[1].kill: `zone` is not one of: task, instance"),
        "{stderr}"
    );
    assert!(!report.exists());
    let scenario = scenario
        .replace("kill: zone", "kill: instance")
        .replace("name: queue-worker\n      task", "name: other\n      task");
    let path = write(dir.path(), "scenario.yaml", &scenario);
    let (code, _, stderr) = run(ecscale().args(["demo", "--scenario", path_str(&path)]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("task group `queue-worker` of"), "{stderr}");
    assert!(stderr.contains("`other` is not a task group of"), "{stderr}");
}

#[test]
fn the_demo_refuses_a_bad_speed_or_url_before_starting() {
    let (code, _, stderr) = run(ecscale().args(["demo", "--speed", "0.5"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--speed 0.5: must be between 1 and 120"),
        "{stderr}"
    );
    let (code, _, stderr) = run(ecscale().args(["demo", "--es", "ftp://x"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("--es: `ftp://x`"), "{stderr}");
}

fn simulate_with(policy: &Path, trace: &Path, extra: &[&str]) -> (i32, String, String) {
    run(ecscale()
        .args([
            "backtest",
            "--simulate",
            "--policy",
            path_str(policy),
            "--metrics",
            path_str(trace),
        ])
        .args(extra))
}

fn simulate(extra: &[&str]) -> (i32, String, String) {
    let root = repo();
    simulate_with(
        &root.join("policies/web.yaml"),
        &root.join("examples/traces/diurnal-spike.csv"),
        extra,
    )
}

#[test]
fn the_closed_loop_backtest_beats_the_aws_style_baseline_on_the_recorded_day() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("bt.html");
    let (code, stdout, stderr) = simulate(&["--report", path_str(&html)]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("SLO-violation minutes: "))
        .unwrap();
    // "SLO-violation minutes: A vs B (...), oracle O; task-hours: X vs Y (...), oracle ..."
    let nums: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| !s.is_empty() && *s != ".")
        .map(|s| s.parse().unwrap())
        .collect();
    let (ours, theirs, oracle, ours_h, theirs_h) = (nums[0], nums[1], nums[2], nums[3], nums[4]);
    assert!(oracle <= ours && oracle <= theirs, "{stdout}");
    assert!(ours < theirs, "{stdout}");
    assert!(ours_h <= theirs_h, "{stdout}");
    assert!(stdout.contains("1440 minutes"), "{stdout}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("Decisions (baseline)")
            && page.contains("high alarm: CPUUtilization &gt; 60 for 3/3 datapoints")
    );

    let (code, stdout, _) = simulate(&["--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ecscale"]["rows"].as_array().unwrap().len(), 1440);
    assert_eq!(v["baseline"]["rows"].as_array().unwrap().len(), 1440);
    assert_eq!(v["oracle"]["rows"].as_array().unwrap().len(), 1440);
    assert_eq!(
        v["ecscale"]["totals"]["slo_violation_minutes"].as_f64(),
        Some(ours)
    );
}

#[test]
fn the_closed_loop_backtest_names_what_is_wrong_in_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(
        dir.path(),
        "t.csv",
        "timestamp,cpu\n2026-11-20T00:00:00Z,40\n2026-11-20T00:01:00Z,41\n",
    );
    let policy = repo().join("policies/web.yaml");
    let (code, _, stderr) = simulate_with(&policy, &trace, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("{}: no `request_count` column", trace.display()))
            && stderr.contains("columns: cpu"),
        "{stderr}"
    );
    let two = write(
        dir.path(),
        "two.yaml",
        "target: {cluster: p, service: a}\nmin: 1\nmax: 5\nrules:\n  - {kind: target_tracking, metric: cpu, target: 60}\n---\ntarget: {cluster: p, service: b}\nmin: 1\nmax: 5\nrules:\n  - {kind: target_tracking, metric: cpu, target: 60}\n",
    );
    let (code, _, stderr) = simulate_with(&two, &trace, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--simulate replays one service, and this file has 2 service targets"),
        "{stderr}"
    );
    let (code, _, stderr) = run(ecscale().args([
        "backtest",
        "--load",
        "x",
        "--policy",
        path_str(&two),
        "--metrics",
        path_str(&trace),
    ]));
    assert_eq!(code, 2, "--load without --simulate");
    assert!(stderr.contains("--simulate"), "{stderr}");
}
