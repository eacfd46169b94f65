//! `ecscale collect --once` against moto: what it prints is what moto holds, with the promised
//! number of calls on the wire; throttling is retried; an unreachable endpoint is named.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::StandardUnit;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::support::moto::Moto;
use crate::support::proxy::Proxy;
use crate::support::{ecscale, moto_url, run_async, unique, write};

/// Datapoints as seeded: (period start, value).
type Points = Vec<(DateTime<Utc>, f64)>;

const SERVICES: usize = 27;
const CUSTOM_METRICS: usize = 17;
const TASK_CPU: i32 = 256;
const TASK_MEMORY: i32 = 512;

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(60), 0).unwrap()
}

/// Runs `ecscale collect --once --format FORMAT` on a config for `endpoint` and `region` (4
/// attempts, fast backoff) plus `rest`, with extra environment `vars`; returns (exit code,
/// stdout, stderr).
async fn collect(
    endpoint: &str,
    region: &str,
    rest: &str,
    format: &str,
    vars: &[(&str, &str)],
) -> (i32, String, String) {
    let yaml = format!(
        "aws:\n  region: {region}\n  endpoint_url: {endpoint}\n  retry: {{max_attempts: 4, initial_backoff: 20ms, max_backoff: 100ms}}\nschedule: {{interval: 30s}}\n{rest}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ecscale.yaml", &yaml);
    let mut cmd = ecscale();
    cmd.args(["collect", "--once", "--format", format, "--config"])
        .arg(&path)
        .envs(vars.iter().copied());
    run_async(cmd).await
}

/// A cluster with one service `api` (2 tasks of 512 CPU / 1024 MiB wanted); returns its name.
async fn one_service(moto: &Moto, prefix: &str) -> String {
    let cluster = unique(prefix);
    moto.cluster(&cluster).await.unwrap();
    let td = moto.task_definition(&unique("api"), 512, 1024).await.unwrap();
    moto.service(&cluster, "api", &td, 2, &[]).await.unwrap();
    cluster
}

/// The CPU value seeded for service `i`, `k` minutes before the seeding minute.
fn cpu(i: usize, k: i64) -> f64 {
    (i * 100) as f64 + k as f64 + 0.25
}

fn memory(i: usize, k: i64) -> f64 {
    (i * 100 + 50) as f64 + k as f64
}

/// The datapoints a series must keep, by the documented rule: complete periods (ended by
/// `taken_at - delay`) within `lookback` of the newest complete one.
fn expected(
    points: &[(DateTime<Utc>, f64)],
    taken_at: DateTime<Utc>,
    delay_s: i64,
    lookback_s: i64,
) -> Vec<(i64, f64)> {
    let until = minute(taken_at - TimeDelta::seconds(delay_s));
    let from = until - TimeDelta::seconds(lookback_s);
    let mut v: Vec<(i64, f64)> = points
        .iter()
        .filter(|(t, _)| *t >= from && *t < until)
        .map(|(t, v)| (t.timestamp(), *v))
        .collect();
    v.sort_by_key(|p| p.0);
    v
}

fn samples(series: &Value) -> Vec<(i64, f64)> {
    series["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let t: DateTime<Utc> = s["timestamp"].as_str().unwrap().parse().unwrap();
            (t.timestamp(), s["value"].as_f64().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_once_prints_exactly_what_moto_holds_with_the_promised_call_counts() {
    let region = "eu-west-1";
    let moto = Moto::new(&moto_url(), region);
    let cluster = unique("it-collect");

    // The world: 27 services (plus one that discovery must skip), 3 instances, 5 running tasks.
    moto.cluster(&cluster).await.unwrap();
    let td = moto
        .task_definition(&unique("web"), TASK_CPU, TASK_MEMORY)
        .await
        .unwrap();
    for i in 0..SERVICES {
        moto.service(&cluster, &format!("svc-{i:02}"), &td, i as i32 + 1, &[])
            .await
            .unwrap();
    }
    moto.service(&cluster, "other", &td, 1, &[]).await.unwrap();
    let instance_ids = moto.ec2_instances(3, "m5.large").await.unwrap();
    for id in &instance_ids {
        moto.register_instance(&cluster, id).await.unwrap();
    }
    moto.run_tasks(&cluster, &td, 5).await.unwrap();

    // Datapoints: 1..6 minutes back (complete), the current minute (not yet), 40 minutes back
    // (outside the lookback). Custom metrics: one point each, 3 minutes back.
    let m0 = minute(Utc::now());
    let mut seeded: BTreeMap<(String, String), Points> = BTreeMap::new();
    for i in 0..SERVICES {
        let svc = format!("svc-{i:02}");
        let dims = [("ClusterName", cluster.as_str()), ("ServiceName", svc.as_str())];
        let at = |k: i64| m0 - TimeDelta::minutes(k);
        let cpu_points: Vec<_> = [0, 1, 2, 3, 4, 5, 6, 40]
            .iter()
            .map(|k| (at(*k), cpu(i, *k)))
            .collect();
        let mem_points: Vec<_> = [0, 2, 4, 40].iter().map(|k| (at(*k), memory(i, *k))).collect();
        moto.put_points(
            "AWS/ECS",
            "CPUUtilization",
            &dims,
            StandardUnit::Percent,
            &cpu_points,
        )
        .await
        .unwrap();
        moto.put_points(
            "AWS/ECS",
            "MemoryUtilization",
            &dims,
            StandardUnit::Percent,
            &mem_points,
        )
        .await
        .unwrap();
        seeded.insert((svc.clone(), "cpu".into()), cpu_points);
        seeded.insert((svc.clone(), "memory".into()), mem_points);
        for j in 0..CUSTOM_METRICS {
            let points = vec![(at(3), (i * 1000 + j) as f64)];
            let dims = [("Cluster", cluster.as_str()), ("Service", svc.as_str())];
            moto.put_points("ITest", &format!("C{j}"), &dims, StandardUnit::Count, &points)
                .await
                .unwrap();
            seeded.insert((svc.clone(), format!("c{j:02}")), points);
        }
    }

    let custom: String = (0..CUSTOM_METRICS)
        .map(|j| {
            format!(
                "      - {{id: c{j:02}, namespace: ITest, metric_name: C{j}, stat: Sum, dimensions: {{Cluster: '${{cluster}}', Service: '${{service}}'}}}}\n"
            )
        })
        .collect();
    let proxy = Proxy::start(&moto_url()).await;
    let rest = format!(
        "collect: {{delay: 60s, lookback: 10m}}\nclusters:\n  - name: {cluster}\n    discover: {{name_prefix: svc-}}\n    metrics:\n{custom}"
    );
    let (code, stdout, stderr) = collect(&proxy.url, region, &rest, "json", &[]).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    let snap: Value = serde_json::from_str(&stdout).unwrap();
    let taken_at: DateTime<Utc> = snap["taken_at"].as_str().unwrap().parse().unwrap();

    // Services: the 27 discovered, in name order, with moto's own counts.
    let services = snap["clusters"][0]["services"].as_array().unwrap();
    let names: Vec<&str> = services.iter().map(|s| s["name"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..SERVICES).map(|i| format!("svc-{i:02}")).collect();
    assert_eq!(names, want);
    for (i, s) in services.iter().enumerate() {
        assert_eq!(s["desired"], i as u64 + 1, "{}", s["name"]);
        assert_eq!(s["task_reservation"]["cpu"], TASK_CPU);
        assert_eq!(s["task_reservation"]["memory_mib"], TASK_MEMORY);
        assert_eq!(s["status"], "ACTIVE");
    }
    for i in [0, 13, 26] {
        let direct = moto
            .describe_service(&cluster, &format!("svc-{i:02}"))
            .await
            .unwrap();
        assert_eq!(services[i]["running"], direct.running_count());
        assert_eq!(services[i]["pending"], direct.pending_count());
        assert_eq!(services[i]["arn"], direct.service_arn().unwrap());
    }

    // Container instances: the 3 launched, moto's fixed registration, 5 tasks' worth used.
    let instances = snap["clusters"][0]["container_instances"].as_array().unwrap();
    let mut ids: Vec<&str> = instances
        .iter()
        .map(|c| c["ec2_instance_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut launched: Vec<&str> = instance_ids.iter().map(String::as_str).collect();
    launched.sort_unstable();
    assert_eq!(ids, launched);
    let used = |field: &str| -> i64 {
        instances
            .iter()
            .map(|c| c["registered"][field].as_i64().unwrap() - c["remaining"][field].as_i64().unwrap())
            .sum()
    };
    assert_eq!(used("cpu"), 5 * TASK_CPU as i64);
    assert_eq!(used("memory_mib"), 5 * TASK_MEMORY as i64);
    assert_eq!(
        instances
            .iter()
            .map(|c| c["running_tasks"].as_i64().unwrap())
            .sum::<i64>(),
        5
    );
    assert!(instances
        .iter()
        .all(|c| c["instance_type"] == "m5.large" && c["agent_connected"] == true));

    // Series: every seeded value, trimmed by the publication delay and the lookback.
    let series = snap["series"].as_array().unwrap();
    assert_eq!(series.len(), SERVICES * (2 + CUSTOM_METRICS));
    for s in series {
        let key = (
            s["service"].as_str().unwrap().to_string(),
            s["id"].as_str().unwrap().to_string(),
        );
        let points = seeded
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected series {key:?}"));
        assert_eq!(samples(s), expected(points, taken_at, 60, 600), "{key:?}");
        assert_eq!(s["status"], "Complete");
    }
    let cpu0 = series
        .iter()
        .find(|s| s["service"] == "svc-00" && s["id"] == "cpu")
        .unwrap();
    assert_eq!(cpu0["unit"], "Percent");
    assert_eq!(cpu0["dimensions"]["ClusterName"], cluster.as_str());
    assert!(
        samples(cpu0).len() >= 5,
        "1..6 minutes back are complete: {:?}",
        samples(cpu0)
    );

    // Calls: ecscale's count, and the proxy's count of what went over the wire, agree with the
    // batching rules: DescribeServices = ceil(28 / 10), GetMetricData = ceil(513 / 500).
    let usage = &snap["usage"]["operations"];
    let calls = |op: &str| usage[op]["calls"].as_u64().unwrap_or(0);
    assert_eq!(calls("ECS.ListServices"), 1);
    assert_eq!(
        calls("ECS.DescribeServices"),
        3,
        "27 prefixed services, 10 per call"
    );
    assert_eq!(calls("CloudWatch.GetMetricData"), 2, "513 queries, 500 per call");
    assert_eq!(
        calls("ECS.DescribeTaskDefinition"),
        1,
        "one task definition, read once"
    );
    assert_eq!(calls("ECS.ListContainerInstances"), 1);
    assert_eq!(calls("ECS.DescribeContainerInstances"), 1);
    let seen = proxy.seen();
    for (op, count) in usage.as_object().unwrap() {
        assert_eq!(
            seen.get(op).copied().unwrap_or(0) as u64,
            count["attempts"].as_u64().unwrap(),
            "{op} on the wire"
        );
    }
    assert_eq!(snap["usage"]["cloudwatch_metrics_requested"], 513);
    assert!((snap["usage"]["cloudwatch_cost_usd"].as_f64().unwrap() - 0.00513).abs() < 1e-9);
    assert_eq!(snap["problems"], Value::Array(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_are_retried_and_counted() {
    let region = "eu-central-1";
    let moto = Moto::new(&moto_url(), region);
    let cluster = one_service(&moto, "it-throttle").await;
    let m0 = minute(Utc::now());
    let dims = [("ClusterName", cluster.as_str()), ("ServiceName", "api")];
    moto.put_points(
        "AWS/ECS",
        "CPUUtilization",
        &dims,
        StandardUnit::Percent,
        &[(m0 - TimeDelta::minutes(3), 71.5)],
    )
    .await
    .unwrap();

    let proxy = Proxy::start(&moto_url()).await;
    proxy.throttle("ECS.DescribeServices", 2);
    proxy.throttle("CloudWatch.GetMetricData", 1);
    let rest = format!("clusters:\n  - name: {cluster}\n    services: [api]\n");
    let (code, stdout, stderr) = collect(&proxy.url, region, &rest, "json", &[]).await;
    assert_eq!(
        code, 0,
        "throttling within the retries is not a failure; stderr: {stderr}"
    );
    let snap: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(snap["clusters"][0]["services"][0]["desired"], 2);
    let cpu = snap["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "cpu")
        .unwrap();
    assert_eq!(samples(cpu).last().map(|p| p.1), Some(71.5));

    let ops = &snap["usage"]["operations"];
    assert_eq!(
        ops["ECS.DescribeServices"],
        serde_json::json!({"calls": 1, "attempts": 3, "failed_attempts": 2})
    );
    assert_eq!(
        ops["CloudWatch.GetMetricData"],
        serde_json::json!({"calls": 1, "attempts": 2, "failed_attempts": 1})
    );
    assert_eq!(proxy.seen()["ECS.DescribeServices"], 3);
    assert_eq!(proxy.seen()["CloudWatch.GetMetricData"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_beyond_the_retries_is_a_problem_naming_the_service() {
    let region = "eu-north-1";
    let moto = Moto::new(&moto_url(), region);
    let cluster = one_service(&moto, "it-throttle-hard").await;
    let proxy = Proxy::start(&moto_url()).await;
    proxy.throttle("ECS.DescribeServices", 100);
    let rest = format!("clusters:\n  - name: {cluster}\n    services: [api]\n");
    let (code, stdout, stderr) = collect(&proxy.url, region, &rest, "table", &[]).await;
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains(&format!("problem: {cluster}/api: not collected: ECS.DescribeServices (cluster {cluster}, services api) at {}: ThrottlingException: Rate exceeded (still throttled after 4 attempts)", proxy.url)),
        "{stderr}"
    );
    assert_eq!(proxy.seen()["ECS.DescribeServices"], 4);
    assert!(
        stdout.contains(&format!("cluster {cluster}: 0 services")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_named_after_the_configured_retries() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    // The file asks for 4 attempts; the environment overrides it to 3.
    let rest = "clusters:\n  - name: prod\n    services: [web]\n";
    let (code, stdout, stderr) = collect(
        &endpoint,
        "us-east-1",
        rest,
        "json",
        &[("ECSCALE_AWS_MAX_ATTEMPTS", "3")],
    )
    .await;
    assert_eq!(
        code, 1,
        "a failed collection exits 1, never a panic (101); stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let want = format!("problem: prod/web: not collected: ECS.DescribeServices (cluster prod, services web) at {endpoint}: no answer after 3 attempts: dispatch failure");
    assert!(stderr.contains(&want), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    let snap: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(snap["usage"]["operations"]["ECS.DescribeServices"]["attempts"], 3);
    assert_eq!(
        snap["usage"]["operations"]["ECS.DescribeServices"]["failed_attempts"],
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_costs_one_timeout_per_pass_and_later_calls_are_not_sent() {
    // A host that accepts TCP and never answers.
    let (endpoint, held) = crate::support::silent_server().await;
    let yaml = format!(
        "aws:\n  region: us-east-1\n  endpoint_url: {endpoint}\n  retry: {{max_attempts: 2, initial_backoff: 20ms, max_backoff: 100ms}}\n  timeouts: {{connect: 1s, attempt: 500ms, operation: 1s}}\nschedule: {{interval: 30s}}\nclusters:\n  - name: prod\n    services: [web]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ecscale.yaml", &yaml);
    let mut cmd = ecscale();
    cmd.args(["collect", "--once", "--format", "json", "--config"])
        .arg(&path);
    let (code, stdout, stderr) = run_async(cmd).await;
    held.abort();
    assert_eq!(code, 1, "{stderr}");
    // The first call uses its timeout; the next one to the same endpoint is not sent at all,
    // and says why and until when.
    assert!(
        stderr.contains("ECS.DescribeServices (cluster prod, services web)")
            && stderr.contains("timed out (see aws.timeouts)"),
        "{stderr}"
    );
    let want = format!(
        "ECS.ListContainerInstances (cluster prod) at {endpoint}: not tried: {endpoint} left ECS.DescribeServices unanswered at "
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(
        stderr.contains("(aws.timeouts.operation 1s); calls to it resume at "),
        "{stderr}"
    );
    let snap: Value = serde_json::from_str(&stdout).unwrap();
    let ops = &snap["usage"]["operations"];
    assert!(
        ops["ECS.DescribeServices"]["attempts"].as_u64().unwrap() >= 1,
        "{ops}"
    );
    assert_eq!(
        ops["ECS.ListContainerInstances"]["attempts"]
            .as_u64()
            .unwrap_or(0),
        0,
        "a call to a silent endpoint is never sent: {ops}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_shows_services_instances_metrics_and_calls() {
    let region = "ap-southeast-2";
    let moto = Moto::new(&moto_url(), region);
    let cluster = one_service(&moto, "it-table").await;
    let instance = moto.ec2_instances(1, "c5.large").await.unwrap().remove(0);
    moto.register_instance(&cluster, &instance).await.unwrap();
    let m0 = minute(Utc::now());
    let dims = [("ClusterName", cluster.as_str()), ("ServiceName", "api")];
    let points = [
        (m0 - TimeDelta::minutes(3), 40.0),
        (m0 - TimeDelta::minutes(2), 64.125),
    ];
    moto.put_points("AWS/ECS", "CPUUtilization", &dims, StandardUnit::Percent, &points)
        .await
        .unwrap();

    let rest = format!("clusters:\n  - name: {cluster}\n    services: [api]\n");
    let (code, stdout, stderr) = collect(&moto_url(), region, &rest, "table", &[]).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    let row = |first: &str| {
        lines
            .iter()
            .find(|l| l.first() == Some(&first))
            .unwrap_or_else(|| panic!("no row {first}:\n{stdout}"))
    };
    assert!(
        stdout.starts_with(&format!(
            "cluster {cluster}: 1 service, 1 container instance, 0 pending tasks"
        )),
        "{stdout}"
    );
    // SERVICE STATUS DESIRED RUNNING PENDING ROLLOUT TASK-CPU/MiB TASK-DEFINITION
    assert_eq!(row("api")[..3], ["api", "ACTIVE", "2"]);
    assert_eq!(row("api")[6], "512/1024");
    // INSTANCE TYPE STATUS AGENT CPU FREE/ALL MiB FREE/ALL TASKS
    assert_eq!(
        row(&instance)[..6],
        [
            instance.as_str(),
            "c5.large",
            "ACTIVE",
            "yes",
            "4096/4096",
            "7482/7482"
        ]
    );
    // SERVICE METRIC STAT PERIOD LATEST UNIT AT POINTS STATUS
    let cpu = row(&format!("{cluster}/api"));
    assert_eq!(cpu[1..6], ["cpu", "Average", "60s", "64.125", "Percent"]);
    assert_eq!(cpu[8], "Complete");
    let api = stdout.lines().find(|l| l.starts_with("API calls: ")).unwrap();
    assert!(
        api.contains("ECS.DescribeServices 1") && api.contains("CloudWatch.GetMetricData 1"),
        "{api}"
    );
    assert!(
        api.ends_with("CloudWatch metrics requested: 2 ($0.00002)"),
        "{api}"
    );
}
