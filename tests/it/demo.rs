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
        "✓ the service scaled out under the load: 3 → ",
        "✓ p95 latency back under 250 ms by the end of `hold`, the busiest phase",
        "✓ it scaled back in by the end of `quiet`, the last phase",
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
    for (speed, shown) in [("0.5", "0.5"), ("90", "90")] {
        let (code, _, stderr) = run(ecscale().args(["demo", "--speed", speed]));
        assert_eq!(code, 2);
        assert!(
            stderr.contains(&format!("--speed {shown}: must be between 1 and 60")),
            "{stderr}"
        );
        assert!(stderr.contains("to measure a task's CPU steadily"), "{stderr}");
    }
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
    // "SLO-violation minutes: ecscale A, aws B, aws-hires C, ..., oracle O; task-hours: ecscale
    // X (1.10×), aws Y (...), ..., oracle Z"
    let (slo_part, hours_part) = line.split_once("; task-hours: ").unwrap();
    let named = |part: &str| -> std::collections::BTreeMap<String, f64> {
        part.trim_start_matches("SLO-violation minutes: ")
            .split(", ")
            .map(|kv| {
                let mut it = kv.split_whitespace();
                let name = it.next().unwrap().to_string();
                (name, it.next().unwrap().parse().unwrap())
            })
            .collect()
    };
    let (slo, hours) = (named(slo_part), named(hours_part));
    for peer in ["ecscale", "aws", "aws-hires", "aws-predictive", "hpa", "oracle"] {
        assert!(
            slo.contains_key(peer) && hours.contains_key(peer),
            "{peer}: {line}"
        );
    }
    for (name, v) in &slo {
        assert!(slo["oracle"] <= *v, "{name}: {stdout}");
    }
    assert!(slo["ecscale"] < slo["aws"], "{stdout}");
    assert!(hours["ecscale"] <= hours["aws"], "{stdout}");
    assert!(stdout.contains("1440 minutes"), "{stdout}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("Decisions (aws 60 %)")
            && page.contains("high alarm: CPU &gt; 60 for 3/3 datapoints of 60 s"),
        "the report lists each peer's decisions"
    );

    let (code, stdout, _) = simulate(&["--format", "json", "--baseline", "aws-hires:target=55"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ecscale"]["rows"].as_array().unwrap().len(), 1440);
    assert_eq!(v["peers"].as_array().unwrap().len(), 1, "only the peer asked for");
    assert_eq!(v["peers"][0]["label"], "aws-hires 55 %");
    assert_eq!(v["peers"][0]["outcome"]["rows"].as_array().unwrap().len(), 1440);
    assert_eq!(v["oracle"]["rows"].as_array().unwrap().len(), 1440);
    assert_eq!(
        v["ecscale"]["totals"]["slo_violation_minutes"].as_f64(),
        Some(slo["ecscale"])
    );
}

#[test]
fn the_frontier_sweeps_each_peer_and_the_policy_and_reads_the_verdicts_off_the_curves() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("frontier.png");
    let root = repo();
    let args = [
        "--frontier",
        "--sweep",
        "40:80:20",
        "--baseline",
        "aws-hires",
        "--baseline",
        "hpa",
        "--format",
        "json",
        "--plot",
        path_str(&png),
    ];
    let (code, stdout, stderr) = simulate_with(
        &root.join("policies/web.yaml"),
        &root.join("examples/traces/step.csv"),
        &args,
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let f = &v[0];
    assert_eq!(f["trace"], "step");
    let peers = f["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    for p in peers {
        let knobs: Vec<f64> = p["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["knob"].as_f64().unwrap())
            .collect();
        assert_eq!(knobs, vec![40.0, 60.0, 80.0], "{p}");
    }
    // the policy's own curve: its main target (67) moved, the shipped point among them
    let variants: Vec<f64> = f["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["knob"].as_f64().unwrap())
        .collect();
    assert!(variants.contains(&67.0) && variants.len() >= 5, "{variants:?}");
    let verdicts = f["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 2);
    for vd in verdicts {
        assert!(vd["dominated"].is_boolean(), "{vd}");
        assert!(vd["peer_slo_minutes"]["reading"].is_string(), "{vd}");
        assert!(vd["peer_task_hours"]["value"].is_number(), "{vd}");
    }
    assert!(["aws-hires", "hpa"].contains(&f["strongest"].as_str().unwrap()));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    // --plot draws a frontier: without --frontier it is refused, not ignored
    let (code, _, stderr) = simulate(&["--plot", path_str(&png)]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--plot with --simulate draws the cost/SLO frontier: add --frontier"),
        "{stderr}"
    );
    let (code, _, stderr) = simulate(&["--baseline", "aws", "--baseline", "aws:target=50"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("aws is named twice"), "{stderr}");
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
