//! Distributed stress, `--on local`: a coordinator and its agents (child processes of the
//! binary) against the in-process test server. The shares add up to exactly the plan, the
//! merged percentiles match one process's, a windowed abort stops every agent, a killed agent
//! is named with its shortfall, a wrong token is refused, and the coordinator watches a service
//! in moto for the scaling assertions and ships the merged seconds.

use std::io::BufRead as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use crate::stress::Server;
use crate::support::moto::Moto;
use crate::support::{ecscale, moto_url, path_str, run_async, unique, write};

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

/// The test server, a folder with a plan of `phases` (and `thresholds`) against it, and where
/// the JSON report goes.
async fn run_against_server(
    phases: &str,
    thresholds: &str,
) -> (Server, tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &server.url, phases, thresholds);
    let out = dir.path().join("r.json");
    (server, dir, p, out)
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

/// One process's report and three agents' on the same plan, the three checked for exact
/// accounting: the plan's 600 requests (300 + 300; a phase's requests are counted in the second
/// they finished in, so a few cross the boundary), each segment exactly its share (100 of each
/// phase), each request seen once by the server, clocks within 50 ms.
async fn one_and_three(server: &Server, dir: &Path, round: usize) -> (Value, Value, String) {
    let phases = "  - {name: steady, duration: 2s, rate: 150}\n  - {name: ramp, duration: 2s, ramp: {from: 50, to: 250}}\n";
    let p = plan(dir, &server.url, phases, "");
    let one = dir.join(format!("one-{round}.json"));
    let three = dir.join(format!("three-{round}.json"));
    let args = [
        "--plan",
        path_str(&p),
        "--progress",
        "off",
        "--json",
        path_str(&one),
    ];
    let (code, _, stderr) = stress(&args).await;
    assert_eq!(code, 0, "{stderr}");
    let before = server.requests.load(Ordering::Relaxed);
    let (code, stdout, stderr) = on_three(&p, &three).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let three = json(&three);
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
    assert_eq!(
        server.requests.load(Ordering::Relaxed) - before,
        600,
        "the server saw each request once"
    );
    for a in agents {
        let offset = a["clock_offset_ms"].as_f64().unwrap();
        assert!(offset.abs() < 50.0, "same machine, same clock: {a}");
    }
    assert!(ms(&three, "max") >= ms(&three, "p99"));
    (json(&one), three, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_send_exactly_the_plan_and_their_merged_percentiles_are_one_processs() {
    let server = Server::start(false).await;
    server.delay_us.store(20_000, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    // The merged histogram measures what one process measures: the server's 20 ms. The two
    // runs are a few seconds apart on a shared machine, so a busy moment can move one run's
    // p99; a wrong merge moves it in every round, noise does not, so up to three rounds. Three
    // agent processes on two cores (beside the other tests) queue behind each other more than
    // one process does, so their tail may only be longer: p99 from 15 % under to 50 % over.
    let mut seen = Vec::new();
    for round in 0..3 {
        let (one, three, stdout) = one_and_three(&server, dir.path(), round).await;
        assert!(
            stdout.contains("3 agents (their per-second histograms added, never averaged)"),
            "{stdout}"
        );
        let pairs: Vec<(f64, f64)> = ["p50", "p99"]
            .iter()
            .map(|k| (ms(&one, k), ms(&three, k)))
            .collect();
        let [(one_p50, three_p50), (one_p99, three_p99)] = [pairs[0], pairs[1]];
        let agree = (one_p50 - three_p50).abs() <= 0.15 * one_p50
            && (0.85 * one_p99..=1.5 * one_p99).contains(&three_p99);
        seen.push(pairs);
        if agree {
            return;
        }
    }
    panic!("(one process, three agents) for (p50, p99), ms, in each round: {seen:?}");
}

/// `--agents` with `--url` is honoured, not ignored: the flags' one-target plan is shared out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_share_the_plan_the_url_flags_make() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let (code, stdout, stderr) = stress(&[
        "--url",
        &server.url,
        "--rate",
        "60",
        "--duration",
        "2s",
        "--agents",
        "3",
        "--header",
        "X-Run: dist",
        "--threshold",
        "p95 < 2s",
        "--json",
        path_str(&out),
    ])
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 agents (their per-second histograms added, never averaged)"),
        "{stdout}"
    );
    let r = json(&out);
    let sent = r["totals"]["requests"].as_u64().unwrap();
    assert_eq!(sent, 120, "the plan's 60/s for 2 s, shared by three: {r}");
    assert_eq!(server.requests.load(Ordering::Relaxed), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_threshold_with_abort_on_the_merged_data_stops_every_agent() {
    let (server, _dir, p, out) = run_against_server(
        "  - {name: long, duration: 20s, rate: 90}\n",
        "thresholds:\n  - {check: 'errors < 5%', window: 2s, abort: true}\n",
    )
    .await;
    server.status.store(503, Ordering::Relaxed);
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
    let mut seen = String::new();
    let line = loop {
        let Some(Ok(l)) = lines.next() else {
            panic!("the coordinator ended without announcing itself:\n{seen}");
        };
        if l.contains("coordinator at ") {
            break l;
        }
        seen.push_str(&l);
        seen.push('\n');
    };
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            eprintln!("coordinator: {l}");
        }
    });
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
    let (_server, _dir, p, out) = run_against_server("  - {name: main, duration: 6s, rate: 150}\n", "").await;
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
    let mut printed = child.stdout.take().unwrap();
    let (status, summary) = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut printed, &mut text).unwrap();
        (child.wait().unwrap(), text)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(1), "a missing share fails the run");
    assert!(
        summary.contains("  not sent: ")
            && summary.contains("planned requests (an agent lost or behind: see the agents below)"),
        "{summary}"
    );
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
    let (_server, _dir, p, out) = run_against_server("  - {name: main, duration: 3s, rate: 60}\n", "").await;
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
    assert!(stderr.contains("--on ecs needs --cluster"), "{stderr}");
}

/// The agents' tasks in moto: (ARN, command, environment, last status).
async fn stress_tasks(
    moto: &Moto,
    cluster: &str,
) -> Vec<(String, Vec<String>, Vec<(String, String)>, String)> {
    let listed = moto
        .ecs
        .list_tasks()
        .cluster(cluster)
        .started_by("ecscale-stress")
        .send()
        .await
        .unwrap();
    if listed.task_arns().is_empty() {
        return Vec::new();
    }
    let out = moto
        .ecs
        .describe_tasks()
        .cluster(cluster)
        .set_tasks(Some(listed.task_arns().to_vec()))
        .send()
        .await
        .unwrap();
    out.tasks()
        .iter()
        .map(|t| {
            let o = t.overrides().and_then(|o| o.container_overrides().first());
            (
                t.task_arn().unwrap_or_default().to_string(),
                o.map(|o| o.command().to_vec()).unwrap_or_default(),
                o.map(|o| {
                    o.environment()
                        .iter()
                        .map(|kv| {
                            (
                                kv.name().unwrap_or_default().to_string(),
                                kv.value().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
                format!(
                    "{} {} {:?} {}",
                    t.last_status().unwrap_or_default(),
                    t.task_definition_arn().unwrap_or_default(),
                    t.launch_type(),
                    t.attachments()
                        .iter()
                        .flat_map(|a| a.details())
                        .map(|d| format!(
                            "{}={}",
                            d.name().unwrap_or_default(),
                            d.value().unwrap_or_default()
                        ))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            )
        })
        .collect()
}

/// deploy/stress-agent-task-definition.json registered: its family, container, image and
/// command (what RunTask and the agent depend on), cpu, memory and execution role.
async fn agent_task_definition(moto: &Moto) -> String {
    let text =
        std::fs::read_to_string(crate::support::repo().join("deploy/stress-agent-task-definition.json"))
            .unwrap();
    let td: Value = serde_json::from_str(&text).unwrap();
    let c = &td["containerDefinitions"][0];
    assert_eq!(c["name"], "agent", "the container --container names by default");
    assert_eq!(
        (&c["command"][0], &c["command"][1]),
        (&Value::from("stress"), &Value::from("agent"))
    );
    let container = aws_sdk_ecs::types::ContainerDefinition::builder()
        .name(c["name"].as_str().unwrap())
        .image(c["image"].as_str().unwrap())
        .essential(true)
        // moto sizes tasks from their containers (ECS takes the task-level cpu and memory)
        .cpu(256)
        .memory(512)
        .set_command(
            c["command"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect()),
        )
        .build();
    let out = moto
        .ecs
        .register_task_definition()
        .family(td["family"].as_str().unwrap())
        // The file's awsvpc and FARGATE are left out: with them moto 5.2.5 checks the
        // subnets and then fails creating the task's network interface (AttributeError:
        // 'NetworkInterface' object has no attribute 'private_dns_name'). The network
        // configuration is checked on the wire instead.
        .cpu(td["cpu"].as_str().unwrap())
        .memory(td["memory"].as_str().unwrap())
        .execution_role_arn(td["executionRoleArn"].as_str().unwrap())
        .container_definitions(container)
        .send()
        .await
        .unwrap();
    out.task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_string()
}

/// `--on ecs` against moto, which does not run containers: the test starts local agents with
/// exactly the command and environment RunTask was given.
async fn ecs_run(
    moto: &Moto,
    cluster: &str,
    dir: &Path,
    phase: &str,
    interrupt: bool,
) -> (Option<i32>, Value, Vec<String>) {
    let server = Server::start(false).await;
    let td = agent_task_definition(moto).await;
    // Ids moto does not check for a task definition without awsvpc.
    let (subnet, sg) = ("subnet-0a1".to_string(), "sg-0b2".to_string());
    // Through a proxy that keeps the request bodies: what RunTask was asked, on the wire.
    let proxy = crate::support::proxy::Proxy::start(&moto.url).await;
    let config = write(
        dir,
        "ecscale.yaml",
        &format!(
            "aws:\n  region: {}\n  endpoint_url: {}\n  retry: {{max_attempts: 1}}\nschedule: {{interval: 30s}}\nclusters:\n  - name: {cluster}\n    services: [web]\n",
            moto.region, proxy.url
        ),
    );
    let p = plan(dir, &server.url, phase, "");
    let out = dir.join("r.json");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "--plan",
        path_str(&p),
        "--agents",
        "2",
        "--on",
        "ecs",
        "--config",
        path_str(&config),
        "--cluster",
        cluster,
        "--task-definition",
        &td,
        "--container",
        "agent",
        "--launch-type",
        "FARGATE",
        "--subnets",
        &subnet,
        "--security-groups",
        &sg,
        "--listen",
        &addr,
        "--advertise",
        &addr,
        "--progress",
        "plain",
        "--json",
        path_str(&out),
    ];
    let (child, _, _) = coordinator(&args, None);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        tasks = stress_tasks(moto, cluster).await;
        if tasks.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tasks.len(), 2, "one RunTask of 2 tasks");
    let mut agents = Vec::new();
    for (_, command, env, _) in &tasks {
        assert_eq!(
            command[..4],
            ["stress", "agent", "--coordinator", &format!("http://{addr}")]
        );
        let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_ecscale"));
        agent.args(command).stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in env {
            agent.env(k, v);
        }
        agents.push(agent.spawn().unwrap());
    }
    let mut child = child;
    if interrupt {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let pid = child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    for mut a in agents {
        let _ = a.kill();
        let _ = a.wait();
    }
    let stopped = stress_tasks(moto, cluster)
        .await
        .into_iter()
        .map(|t| t.3)
        .collect();
    // One RunTask for both, with the network configuration and the launch type asked for;
    // a StopTask per task.
    let run: Vec<Value> = proxy
        .bodies("ECS.RunTask")
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(run.len(), 1);
    let vpc = &run[0]["networkConfiguration"]["awsvpcConfiguration"];
    assert_eq!(vpc["subnets"][0], subnet.as_str(), "{}", run[0]);
    assert_eq!(vpc["securityGroups"][0], sg.as_str(), "{}", run[0]);
    assert_eq!(
        (run[0]["launchType"].as_str(), run[0]["count"].as_u64()),
        (Some("FARGATE"), Some(2))
    );
    assert_eq!(run[0]["overrides"]["containerOverrides"][0]["name"], "agent");
    assert_eq!(proxy.seen().get("ECS.StopTask"), Some(&2));
    // The coordinator's IAM policy allows exactly the ECS actions it called (and PassRole,
    // which IAM checks inside RunTask).
    let called: std::collections::BTreeSet<String> = proxy
        .seen()
        .keys()
        .map(|op| crate::worker::iam_action(op))
        .collect();
    let mut allowed = crate::worker::actions_of("deploy/iam-stress-coordinator.json");
    assert!(allowed.remove("iam:PassRole"));
    assert_eq!(called, allowed, "deploy/iam-stress-coordinator.json");
    (status.code(), json(&out), stopped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_ecs_run_task_starts_the_agents_with_their_command_and_every_task_is_stopped_also_on_ctrl_c() {
    let moto = Moto::new(&moto_url(), "eu-west-3");
    let ours = |t: &String| {
        t.starts_with("STOPPED")
            && t.contains("task-definition/ecscale-stress-agent")
            && t.contains("Fargate")
    };
    // To the end, then Ctrl-C mid-run: every task is stopped either way, the report written.
    for (phase, interrupt) in [("2s", false), ("30s", true)] {
        let cluster = unique("it-stress-ecs");
        moto.cluster(&cluster).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let phase = format!("  - {{name: main, duration: {phase}, rate: 50}}\n");
        let (code, r, stopped) = ecs_run(&moto, &cluster, dir.path(), &phase, interrupt).await;
        assert_eq!(code, Some(if interrupt { 130 } else { 0 }), "{r}");
        assert!(
            stopped.len() == 2 && stopped.iter().all(ours),
            "StopTask for every task (interrupted: {interrupt}): {stopped:?}"
        );
        if interrupt {
            assert!(r["interrupted"].as_bool().unwrap());
            assert!(r["duration_s"].as_f64().unwrap() < 20.0, "{r}");
        } else {
            assert_eq!(r["totals"]["requests"], 100, "{r}");
            let agents = r["agents"].as_array().unwrap();
            assert!(agents.iter().all(|a| a["status"] == "finished"), "{agents:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_whose_coordinator_died_stop_sending_within_seconds() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &server.url,
        "  - {name: main, duration: 30s, rate: 100}\n",
        "",
    );
    let (mut child, _, pids) = coordinator(
        &["--plan", path_str(&p), "--agents", "2", "--progress", "plain"],
        None,
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = std::time::Instant::now();
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid);
    while pids.iter().any(|p| alive(*p)) && killed_at.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "agents still running 15 s after their coordinator died"
    );
    let sent = server.requests.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.requests.load(Ordering::Relaxed),
        sent,
        "no load after they stopped"
    );
    assert!(
        sent < 100 * 10,
        "{sent} requests: they stopped long before the plan's 30 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_judges_scaling_assertions_and_ships_the_merged_seconds() {
    let server = Server::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let (moto, cluster, config) = crate::stress::watched_web(dir.path(), "ap-northeast-2").await;
    let plan_for = |service: &str| {
        write(
            dir.path(),
            "plan.yaml",
            &format!(
                "name: dist watch\ntargets: ['{}']\nconnections: 20\nphases:\n  - {{name: hold, duration: 4s, rate: 100}}\nwatch: {{config: ecscale.yaml, cluster: {cluster}, service: {service}, every: 200ms}}\nassertions:\n  - desired >= 6 within 10s\n  - scales back to <= 2 within 20s after the load ends\n  - no more than 2 direction changes\n",
                server.url
            ),
        )
    };
    let out = dir.path().join("r.json");
    let args = |plan: &Path| -> Vec<String> {
        [
            "--plan",
            path_str(plan),
            "--agents",
            "2",
            "--progress",
            "plain",
            "--config",
            path_str(&config),
            "--json",
            path_str(&out),
        ]
        .map(String::from)
        .to_vec()
    };

    // A service that does not exist: one error before any agent starts or any request goes.
    let (code, stdout, stderr) = stress(
        &args(&plan_for("nope"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("watch: service nope not found in cluster"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("coordinator at"),
        "no agent was started: {stderr}"
    );
    assert_eq!(server.requests.load(Ordering::Relaxed), 0);

    // The "worker": out a few seconds in, back once the load is over.
    let mut cmd = ecscale();
    cmd.arg("stress").args(args(&plan_for("web")));
    let (code, stdout, stderr) = crate::stress::run_while_scaling(cmd, &moto, &cluster, [3000, 7000]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&out);
    assert_eq!(r["totals"]["requests"], 400, "exactly the plan: {}", r["totals"]);
    assert_eq!(r["agents"].as_array().unwrap().len(), 2);
    crate::stress::assert_all_passed(&r, 3);
    let mut desired: Vec<u64> = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["desired"].as_u64().unwrap())
        .collect();
    desired.dedup();
    assert!(desired.ends_with(&[6, 2]), "the timeline: {desired:?}");
    // The merged seconds carry the service's count, and went to the config's spool.
    assert!(
        r["seconds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["running"].as_u64().is_some()),
        "{}",
        r["seconds"]
    );
    crate::stress::assert_stress_docs_spooled(dir.path(), 4);
}

/// A process that exited but was not reaped yet.
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}
