//! `deploy/` and the worker as a service: the ECS task definition's health check works against a
//! live worker, stop timeouts leave room for the graceful shutdown, the systemd unit runs what
//! the README says; a first SIGTERM drains and exits 0, a second exits at once (130).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::fake::Reply;
use crate::support::moto::Moto;
use crate::support::{ecscale, free_port, moto_url, repo, unique, write};

/// A config for a cluster with one service, in moto, with `extra` top-level sections.
async fn config(region: &str, dir: &std::path::Path, extra: &str) -> PathBuf {
    let moto = Moto::new(&moto_url(), region);
    let cluster = unique("it-deploy");
    moto.cluster(&cluster).await.unwrap();
    let td = moto.task_definition(&unique("web"), 256, 512).await.unwrap();
    moto.service(&cluster, "web", &td, 1, &[]).await.unwrap();
    let yaml = format!(
        "aws: {{region: {region}, endpoint_url: '{}'}}\nschedule: {{interval: 1s}}\nclusters:\n  - name: {cluster}\n    services: [web]\n{extra}",
        moto_url()
    );
    write(dir, "ecscale.yaml", &yaml)
}

pub(crate) fn spawn(
    path: &std::path::Path,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> tokio::process::Child {
    let mut cmd = ecscale();
    cmd.args(["--log", "info", "run", "--config"])
        .arg(path)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

fn task_definition() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("deploy/ecs-task-definition.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_task_definitions_health_check_works_against_a_live_worker() {
    let td = task_definition();
    let c = &td["containerDefinitions"][0];
    assert_eq!(c["command"][0], "run");
    assert_eq!(c["command"][1], "--config");
    // The graceful shutdown (30 s by default) fits in the stop timeout.
    assert!(c["stopTimeout"].as_u64().unwrap() > 30);
    let env: Vec<(&str, &str)> = c["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    let addr = env.iter().find(|(k, _)| *k == "ECSCALE_METRICS_ADDR").unwrap().1;
    assert_eq!(addr, "0.0.0.0:9464");
    assert_eq!(c["portMappings"][0]["containerPort"], 9464);
    let check = c["healthCheck"]["command"].as_array().unwrap();
    assert_eq!(check[0], "CMD");

    // Run a worker with the task definition's environment, on a free port instead of 9464.
    let dir = tempfile::tempdir().unwrap();
    let path = config("eu-west-2", dir.path(), "").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = env.clone();
    env.retain(|(k, _)| *k != "ECSCALE_METRICS_ADDR");
    env.push(("ECSCALE_METRICS_ADDR", &listen));
    let log = dir.path().join("worker.log");
    let mut child = spawn(&path, &log, &env);
    let argv: Vec<String> = check[1..]
        .iter()
        .map(|a| a.as_str().unwrap().replace("9464", &port.to_string()))
        .collect();
    let healthy = || {
        std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .unwrap()
            .success()
    };
    let start = Instant::now();
    while !healthy() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never healthy: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the check fails when nothing answers.
    let stopped: Vec<String> = check[1..]
        .iter()
        .map(|a| a.as_str().unwrap().replace("9464", &free_port().to_string()))
        .collect();
    assert!(!std::process::Command::new(&stopped[0])
        .args(&stopped[1..])
        .status()
        .unwrap()
        .success());

    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

#[test]
fn the_systemd_unit_runs_the_worker_and_waits_for_its_shutdown() {
    let unit = std::fs::read_to_string(repo().join("deploy/ecscale.service")).unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_string()
    };
    assert_eq!(
        value("ExecStart"),
        "/usr/local/bin/ecscale run --config /etc/ecscale/ecscale.yaml"
    );
    assert_eq!(value("KillSignal"), "SIGTERM");
    let stop: u64 = value("TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    assert!(
        stop > 30,
        "TimeoutStopSec {stop}s leaves no room for the 30 s shutdown grace"
    );
    // A bad config exits 2: restarting would not help.
    assert_eq!(
        value("RestartPreventExitStatus"),
        ecscale::cli::EXIT_INVALID.to_string()
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for file in [
        "deploy/iam-policy.json",
        "deploy/ecs-task-definition.json",
        "deploy/ecscale.service",
        "deploy/Dockerfile",
    ] {
        assert!(readme.contains(file), "the README explains {file}");
    }
}

#[tokio::test]
async fn a_first_sigterm_drains_a_second_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // An Elasticsearch that takes a minute to answer: the flush at shutdown waits (up to the
    // 20 s grace) until the second signal.
    let (es, _) = crate::support::fake::serve(|_| Reply {
        status: 200,
        body: "{}".into(),
        delay: Duration::from_secs(60),
    })
    .await;
    let extra = format!(
        "sink:\n  elasticsearch: {{url: '{es}', timeout: 90s}}\n  spool: {{dir: spool}}\nworker: {{metrics_addr: 'off', shutdown_grace: 20s}}\n"
    );
    let path = config("eu-west-3", dir.path(), &extra).await;
    let log = dir.path().join("worker.log");
    let mut child = spawn(&path, &log, &[]);
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("tick:") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no tick: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    let second = Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "took {:?} after the second signal",
        second.elapsed()
    );
    assert!(
        text.contains("stopping: finishing the tick and flushing"),
        "{text}"
    );
    assert!(text.contains("second signal: exiting now"), "{text}");
}

/// The alerts on ecscale itself: `promtool check rules` accepts them, `promtool test rules`
/// shows each one firing on the series that should raise it and quiet on a healthy pair, and
/// every ecscale metric they read is one the worker's `/metrics` serves.
#[tokio::test]
async fn the_alerts_on_ecscale_pass_promtool_and_read_metrics_the_worker_serves() {
    let promtool =
        std::env::var("ECSCALE_TEST_PROMTOOL").expect("scripts/test-services sets ECSCALE_TEST_PROMTOOL");
    let deploy = repo().join("deploy");
    for args in [
        &["check", "rules", "prometheus-rules.yaml"][..],
        &["test", "rules", "prometheus-rules.test.yaml"][..],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&deploy)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.contains("SUCCESS"),
            "promtool {args:?}: {said}"
        );
    }
    let rules = std::fs::read_to_string(deploy.join("prometheus-rules.yaml")).unwrap();
    // What a worker with a shipper serves.
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ecscale::config::SinkSettings::default();
    sink.spool.dir = dir.path().join("spool");
    let shipper = ecscale::ship::Shipper::start(&sink).unwrap();
    let metrics =
        ecscale::worker::metrics::Metrics::new(ecscale::usage::ApiMeter::default(), Duration::from_secs(60));
    metrics.set_ship(shipper.stats_handle());
    let served = metrics.render();
    let mut read = 0;
    for (i, _) in rules.match_indices("ecscale_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        read += 1;
        assert!(
            served.contains(&format!("# TYPE {name} ")),
            "the rules read {name}, which /metrics does not serve"
        );
    }
    assert!(read >= 8, "{read} metric names read");
}

/// The stack created in moto (clusters `production,batch`), what it made.
fn create_stack(events: bool) -> serde_json::Value {
    let template = repo().join("deploy/ecscale.cfn.yaml");
    let name = unique("ecscale-stack");
    let events = if events { "true" } else { "false" };
    stack_script(&[
        "create",
        template.to_str().unwrap(),
        &name,
        events,
        "production,batch",
    ])
}

/// The actions of a policy document's statements.
fn actions(statements: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in statements.as_array().unwrap() {
        match &s["Action"] {
            serde_json::Value::String(a) => {
                out.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                out.extend(list.iter().map(|a| a.as_str().unwrap().to_string()))
            }
            other => panic!("Action {other}"),
        }
    }
    out
}

/// The one-step deploy: cfn-lint (CloudFormation's own resource specifications) finds nothing in
/// deploy/ecscale.cfn.yaml, and created in moto over CloudFormation's API it makes the worker's
/// service with two replicas, its roles, log group, DynamoDB table (key `key`), the stress
/// agents' task definition and role, and with `EventsQueue` the queue and rule; the task role
/// grants exactly deploy/iam-policy.json's actions, its ECS resources only in the named clusters.
#[test]
fn the_stack_passes_cfn_lint_and_creates_the_worker_with_least_privilege() {
    let python =
        std::env::var("ECSCALE_TEST_PYTHON").expect("scripts/test-services sets ECSCALE_TEST_PYTHON");
    let lint = std::path::Path::new(&python).with_file_name("cfn-lint");
    let out = std::process::Command::new(lint)
        .arg(repo().join("deploy/ecscale.cfn.yaml"))
        .arg(repo().join("deploy/cross-account-role.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stack = create_stack(true);
    assert_eq!(stack["status"], "CREATE_COMPLETE", "{stack}");
    for r in [
        "WorkerSecurityGroup",
        "LogGroup",
        "Table",
        "ExecutionRole",
        "TaskRole",
        "TaskDefinition",
        "Service",
        "StressAgentTaskDefinition",
        "StressCoordinatorRole",
        "Events",
        "EventsDeadLetters",
        "EventsRule",
    ] {
        assert_eq!(stack["resources"][r]["status"], "CREATE_COMPLETE", "{r}: {stack}");
    }
    assert_eq!(stack["service"]["desired"], 2);
    assert_eq!(stack["table_key"][0]["AttributeName"], "key");
    // The table's TTL is on the attribute the worker writes (moto ignores the setting; cfn-lint
    // checks it).
    let template = std::fs::read_to_string(repo().join("deploy/ecscale.cfn.yaml")).unwrap();
    assert!(template.contains("TimeToLiveSpecification: {AttributeName: delete_after, Enabled: true}"));
    assert_eq!(stack["log_groups"].as_array().unwrap().len(), 1);
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/iam-policy.json")).unwrap())
            .unwrap();
    assert_eq!(
        actions(&stack["task_role_statements"]),
        actions(&policy["Statement"])
    );
    let text = stack["task_role_statements"].to_string();
    for arn in text
        .split('"')
        .filter(|s| s.starts_with("arn:aws:ecs:") && s.contains("/"))
    {
        let kind_and_rest = arn.rsplit(':').next().unwrap();
        let cluster = kind_and_rest.split('/').nth(1).unwrap();
        if kind_and_rest.starts_with("task-definition/") || kind_and_rest.starts_with("capacity-provider/") {
            continue;
        }
        assert!(["production", "batch"].contains(&cluster), "{arn}");
    }
    let without = create_stack(false);
    assert_eq!(without["status"], "CREATE_COMPLETE");
    assert!(without["resources"]["Events"].is_null(), "{without}");
}

/// The stack's alarms on ecscale read the metrics the worker's health line carries (namespace
/// ecscale), and every one of them is read.
#[test]
fn the_stacks_alarms_read_the_metrics_the_worker_prints() {
    let template = std::fs::read_to_string(repo().join("deploy/ecscale.cfn.yaml")).unwrap();
    let read: BTreeSet<String> = template
        .split("MetricName: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
        })
        .filter(|name| !name.is_empty() && name != "RunningTaskCount")
        .collect();
    let printed: BTreeSet<String> = ecscale::worker::emf::METRICS
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(read, printed);
    assert!(template.contains("{Name: ECSCALE_EMF_STACK, Value: {Ref: \"AWS::StackName\"}}"));
}

/// `deploy check`: a config with capacity, a lease and DynamoDB state fits the shipped stack;
/// a role without an action the config needs, a policy of a cluster the stack does not grant,
/// and two replicas without a lease are each refused with exit 2, naming what and where.
#[test]
fn deploy_check_refuses_a_missing_action_a_foreign_cluster_and_replicas_without_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let policy = |cluster: &str| {
        format!("target: {{cluster: {cluster}, service: web}}\nmin: 1\nmax: 10\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 60}}\n")
    };
    write(d, "web.yaml", &policy("production"));
    let config = |worker: &str, policies: &str| {
        let batch = if policies.contains("batch") {
            ", {name: batch, services: [web]}"
        } else {
            ""
        };
        write(
            d,
            "ecscale.yaml",
            &format!("schedule: {{interval: 30s}}\nclusters: [{{name: production, services: [web]}}{batch}]\ncapacity: [{{auto_scaling_group: prod-asg, cluster: production}}]\npolicies: [{policies}]\nworker:\n{worker}"),
        )
    };
    let shared = "  state: {dynamodb_table: ecscale-prod}\n  leader: {dynamodb_table: ecscale-prod}\n";
    let check = |template: &std::path::Path, config: &std::path::Path| {
        let mut cmd = ecscale();
        cmd.args(["deploy", "check", "--clusters", "production", "--template"])
            .arg(template)
            .arg("--config")
            .arg(config);
        crate::support::run(&mut cmd)
    };
    let shipped = repo().join("deploy/ecscale.cfn.yaml");
    let good = config(shared, "web.yaml");
    let (code, stdout, stderr) = check(&shipped, &good);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("fit: the") && stdout.contains("its 1 targets"),
        "{stdout}"
    );

    // The role without SetDesiredCapacity: the capacity stage needs it.
    let text = std::fs::read_to_string(&shipped).unwrap();
    let narrowed = text.replace(
        "[autoscaling:SetDesiredCapacity, autoscaling:TerminateInstanceInAutoScalingGroup]",
        "[autoscaling:TerminateInstanceInAutoScalingGroup]",
    );
    assert_ne!(narrowed, text);
    let narrowed = write(d, "narrowed.cfn.yaml", &narrowed);
    let (code, _, stderr) = check(&narrowed, &good);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("does not allow autoscaling:SetDesiredCapacity (capacity:"),
        "{stderr}"
    );

    // A policy of a cluster the stack does not grant, named at its file.
    write(d, "batch.yaml", &policy("batch"));
    let foreign = config(shared, "web.yaml, batch.yaml");
    let (code, _, stderr) = check(&shipped, &foreign);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("batch.yaml")
            && stderr
                .contains("names cluster batch, which the stack's ClusterNames (production) does not grant"),
        "{stderr}"
    );

    // Two replicas (the template's default) and no lease, the state in a file.
    let alone = config("  state: {file: state.json}\n", "web.yaml");
    let (code, _, stderr) = check(&shipped, &alone);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("runs 2 replicas but the config has no worker.leader"),
        "{stderr}"
    );
    assert!(stderr.contains("worker.state is a file"), "{stderr}");

    // A template with short-form intrinsics is said to be one.
    let short = write(d, "short.cfn.yaml", "Resources:\n  TaskRole: !Ref Other\n");
    let (code, _, stderr) = check(&short, &good);
    assert_eq!(code, 2);
    assert!(stderr.contains("short.cfn.yaml"), "{stderr}");
}

/// Waits (up to 60 s) until the log `read` gives satisfies `done`.
async fn wait_for_log(read: &impl Fn() -> String, done: impl Fn(&str) -> bool, what: &str) {
    let start = Instant::now();
    while !done(&read()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s:\n{}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `tests/scripts/stack.py MODE MOTO REGION ARGS...`, its JSON.
fn stack_script(args: &[&str]) -> serde_json::Value {
    let python =
        std::env::var("ECSCALE_TEST_PYTHON").expect("scripts/test-services sets ECSCALE_TEST_PYTHON");
    let out = std::process::Command::new(&python)
        .arg(repo().join("tests/scripts/stack.py"))
        .args(&args[..1])
        .arg(moto_url())
        .arg("us-east-1")
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The stack as shipped, end to end in moto: created with the config and policies in the
/// parameters it reads; `deploy check` passes; the worker's container is started as ECS would
/// start it (the task definition's command, its environment, its secret resolved from
/// Parameter Store) and ticks three times, its config and policies read from the parameters
/// by the task role, with its lease and state in the stack's DynamoDB table; a policy edited
/// in its parameter is written and reloaded while it runs; its security group lets in only the
/// scraper on 9464; the stack deletes cleanly, the table with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_runs_the_worker_from_its_parameters_and_table_and_deletes_cleanly() {
    let moto = Moto::new(&moto_url(), "us-east-1");
    let cluster = unique("it-stack");
    moto.cluster(&cluster).await.unwrap();
    let td = moto.task_definition(&unique("web"), 256, 512).await.unwrap();
    moto.service(&cluster, "web", &td, 2, &[]).await.unwrap();
    let stack = unique("ecscale-st");
    let table = format!("ecscale-{stack}");
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "ecscale.yaml",
        &format!(
            "aws: {{region: us-east-1, endpoint_url: '{}', retry: {{max_attempts: 1}}}}\nschedule: {{interval: 1s}}\nclusters: [{{name: {cluster}, services: [web]}}]\npolicies: [policies.yaml]\nsink: {{spool: {{dir: spool}}}}\nworker:\n  state: {{dynamodb_table: {table}}}\n  leader: {{dynamodb_table: {table}, lease: 10s}}\n",
            moto_url()
        ),
    );
    let policies = write(
        dir.path(),
        "policies.yaml",
        &format!("target: {{cluster: {cluster}, service: web}}\nmin: 1\nmax: 4\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 50}}\n"),
    );
    let mut cmd = ecscale();
    cmd.args(["deploy", "check", "--clusters", &cluster, "--config"])
        .arg(&config);
    let (code, stdout, stderr) = crate::support::run_async(cmd).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let template = repo().join("deploy/ecscale.cfn.yaml");
    let made = stack_script(&[
        "create",
        template.to_str().unwrap(),
        &stack,
        "false",
        &cluster,
        config.to_str().unwrap(),
        policies.to_str().unwrap(),
    ]);
    assert_eq!(made["status"], "CREATE_COMPLETE", "{made}");
    assert_eq!(made["outputs"]["Table"], table.as_str());
    assert_eq!(
        made["ingress"],
        serde_json::json!([{"port": [9464, 9464], "cidrs": ["10.0.9.0/24"]}]),
        "only the scraper, on 9464"
    );
    // The container as ECS starts it (the image's entry point, `ecscale`, with the task's
    // command), in a folder of the test's instead of /tmp/ecscale, its metrics on a free
    // loopback port, reading the parameters again every second.
    let c = &made["container"];
    assert_eq!(c["entry_point"], serde_json::json!([]), "the image's own");
    let task = dir.path().join("task");
    let here = |v: &str| v.replace("/tmp/ecscale", &task.display().to_string());
    let args: Vec<String> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| here(a.as_str().unwrap()))
        .collect();
    let log = dir.path().join("worker.log");
    let mut run = ecscale();
    run.arg("--log").arg("info").args(&args).env_clear();
    for (k, v) in c["environment"]
        .as_object()
        .unwrap()
        .iter()
        .chain(c["secrets"].as_object().unwrap())
    {
        run.env(k, here(v.as_str().unwrap()));
    }
    run.env("ECSCALE_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("ECSCALE_SSM_EVERY", "1s")
        // What ECS gives a task: its region. The endpoint is moto's.
        .env("AWS_REGION", "us-east-1")
        .env("ECSCALE_AWS_ENDPOINT_URL", moto_url())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = tokio::process::Command::from(run)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for_log(&read_log, |l| l.matches("tick:").count() >= 3, "three ticks").await;
    let written = task.join("policies.yaml");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        std::fs::read_to_string(&policies).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A policy edited in Parameter Store reaches the running worker: written and reloaded.
    let edited = std::fs::read_to_string(&policies)
        .unwrap()
        .replace("max: 4", "max: 5");
    let edited_file = write(dir.path(), "edited.yaml", &edited);
    let put = stack_script(&[
        "put",
        &format!("/{stack}/policies"),
        edited_file.to_str().unwrap(),
    ]);
    assert_eq!(put["version"], 2, "{put}");
    wait_for_log(
        &read_log,
        |l| l.contains("(version 2): reloading") && l.contains("): ok: 1 target policies"),
        "the edited parameter reloaded",
    )
    .await;
    assert_eq!(std::fs::read_to_string(&written).unwrap(), edited);
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped within 30 s")
        .unwrap();
    let log = read_log();
    assert!(status.success(), "{log}");
    assert!(log.contains("acting only while it holds the lease"), "{log}");
    // Its health as CloudWatch metrics (Embedded Metric Format, one line a tick on stdout, for
    // the stack's alarms): the stack's name as the dimension, leading, nothing failing.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("stdout"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ecscale", "{l}");
        assert_eq!(
            (&l["Stack"], &l["Ticks"]),
            (&serde_json::json!(stack), &serde_json::json!(1))
        );
        assert_eq!(
            (&l["ShipDegraded"], &l["ReloadFailed"]),
            (&serde_json::json!(0), &serde_json::json!(0))
        );
    }
    assert_eq!(lines.last().unwrap()["Leading"], 1);
    // The lease and the target's state are in the stack's table.
    let scanned = stack_script(&["scan", &table]);
    let keys: Vec<&str> = scanned["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(keys.contains(&"leader"), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("state/target/") && k.contains(&cluster)),
        "{keys:?}"
    );
    // State items may be deleted (the table's TTL) 30 days after their last write; the lease
    // may not.
    let now = chrono::Utc::now().timestamp();
    let after = scanned["delete_after"].as_object().unwrap();
    assert!(after.get("leader").is_none(), "{scanned}");
    let state: Vec<i64> = keys
        .iter()
        .filter(|k| k.starts_with("state/"))
        .map(|k| after[*k].as_i64().unwrap())
        .collect();
    let month = 30 * 86_400;
    assert!(
        state
            .iter()
            .all(|e| (now + month - 120..=now + month).contains(e)),
        "{scanned}"
    );
    let gone = stack_script(&["delete", &stack]);
    assert!(
        ["DELETE_COMPLETE", "GONE"].contains(&gone["status"].as_str().unwrap()),
        "{gone}"
    );
    assert_eq!(gone["table_left"], false, "{gone}");
}

/// `run --from-ssm` with a parameter SSM does not have: exit 2 before anything runs, naming
/// the parameter, the endpoint and SSM's answer; no file written (the one that exists is
/// read but not touched), no worker started.
#[test]
fn a_parameter_ssm_does_not_have_stops_the_worker_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ecscale.yaml");
    let policies = write(dir.path(), "policies.yaml", "# kept\n");
    let name = format!("/{}/config", unique("absent"));
    let present = format!("/{}/policies", unique("present"));
    let text = dir.path().join("present.yaml");
    std::fs::write(&text, "target: {cluster: a, service: b}\n").unwrap();
    stack_script(&["put", &present, text.to_str().unwrap()]);
    let mut cmd = ecscale();
    cmd.args(["run", "--config"])
        .arg(&config)
        .arg("--from-ssm")
        .arg(format!(
            "{present}={},{name}={}",
            policies.display(),
            config.display()
        ))
        .env("AWS_REGION", "us-east-1")
        .env("ECSCALE_AWS_ENDPOINT_URL", moto_url());
    let (code, _, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("SSM parameter {name} at {}", moto_url()))
            && stderr.contains("ParameterNotFound"),
        "{stderr}"
    );
    assert!(!config.exists(), "nothing written");
    assert_eq!(
        std::fs::read_to_string(&policies).unwrap(),
        "# kept\n",
        "all or nothing"
    );

    // A flag without --from-ssm is refused, not ignored.
    let mut cmd = ecscale();
    cmd.args(["run", "--config"])
        .arg(&config)
        .args(["--ssm-every", "5s"]);
    let (code, _, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--from-ssm"), "{stderr}");
}
