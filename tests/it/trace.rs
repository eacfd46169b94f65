//! `ecscale trace export`: a seeded week of CloudWatch datapoints in moto comes back as the
//! trace `backtest` reads, within AWS's datapoint limits per call; the same from what a
//! shipping run put in OpenSearch; and `backtest --from` without a file. (The week is at
//! 5-minute periods: moto aggregates a 1-minute week too slowly for a test.)

use aws_sdk_cloudwatch::types::StandardUnit;
use chrono::{DateTime, TimeDelta, Utc};

use crate::support::{es_url, unique, write};
use crate::worker::{minute, stage};

/// A daily shape: 30 % at night, 70 % at the afternoon peak.
fn cpu_at(t: DateTime<Utc>) -> f64 {
    let h = (t.timestamp().rem_euclid(86_400)) as f64 / 3600.0;
    (50.0 - 20.0 * ((h - 3.0) / 24.0 * std::f64::consts::TAU).cos()).round()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_week_of_cloudwatch_comes_back_as_a_trace_that_backtest_reads() {
    let s = stage("ap-east-1", "it-trace").await;
    // On 5-minute boundaries, as the periods CloudWatch aggregates into.
    let five = |t: DateTime<Utc>| {
        DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(300), 0).unwrap()
    };
    let end = five(minute(Utc::now()) - TimeDelta::minutes(5));
    let start = end - TimeDelta::days(7);
    let mut cpu = Vec::new();
    let mut running = Vec::new();
    let mut t = start;
    while t < end {
        cpu.push((t, cpu_at(t)));
        running.push((t, if cpu_at(t) > 60.0 { 4.0 } else { 2.0 }));
        t += TimeDelta::minutes(5);
    }
    let dims = [("ClusterName", s.cluster.as_str()), ("ServiceName", "web")];
    s.moto
        .put_points("AWS/ECS", "CPUUtilization", &dims, StandardUnit::Percent, &cpu)
        .await
        .unwrap();
    s.moto
        .put_points(
            "ECS/ContainerInsights",
            "RunningTaskCount",
            &dims,
            StandardUnit::Count,
            &running,
        )
        .await
        .unwrap();
    let config = s.config_named("trace.yaml", &s.proxy.url, &["web"], 1, "");
    // moto answers a month of datapoints in seconds, more on a loaded machine: this test is
    // about what is read, not how fast, so it gives each call longer than the 10 s default.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  retry: {max_attempts: 1}\n",
        "  retry: {max_attempts: 1}\n  timeouts: {attempt: 60s, operation: 120s}\n",
    );
    assert!(text.contains("attempt: 60s"), "{text}");
    std::fs::write(&config, text).unwrap();
    let out = s.dir.path().join("week.csv");
    let before = s
        .proxy
        .seen()
        .get("CloudWatch.GetMetricData")
        .copied()
        .unwrap_or(0);
    let mut cmd = crate::support::ecscale();
    cmd.args(["trace", "export", "--service"])
        .arg(format!("{}/web", s.cluster))
        .args(["--since", "7d", "--period", "5m", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&config);
    let (code, _, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    // One long window per metric (the policy reads cpu; running, desired and pending from
    // Container Insights; the group's instances in service, booting and desired), 2,017
    // datapoints at most each, plus the short pass: 8 calls.
    let calls = s
        .proxy
        .seen()
        .get("CloudWatch.GetMetricData")
        .copied()
        .unwrap_or(0)
        - before;
    assert_eq!(calls, 8, "{stderr}");
    // What has no data is said, not written as empty columns.
    assert!(
        stderr.contains("note: no data for desired, pending, instances, instances_pending, group_desired"),
        "{stderr}"
    );
    assert!(
        stderr.contains("at most 2017 datapoints each: AWS allows 100,800 per call"),
        "{stderr}"
    );
    assert!(stderr.contains("metrics requested: $"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("timestamp,cpu,running"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!((2_010..=2_017).contains(&rows.len()), "{} rows", rows.len());
    for row in rows.iter().step_by(37) {
        let at: DateTime<Utc> = row[0].parse().unwrap();
        assert_eq!(row[1].parse::<f64>().unwrap(), cpu_at(at), "{row:?}");
        assert_eq!(row[2], if cpu_at(at) > 60.0 { "4" } else { "2" }, "{row:?}");
    }

    // backtest reads it: one tick per period, the count from the running column.
    let policy = s.dir.path().join("policies.yaml");
    let mut cmd = crate::support::ecscale();
    cmd.args(["backtest", "--format", "json", "--policy"])
        .arg(&policy)
        .arg("--metrics")
        .arg(&out);
    let (code, stdout, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report[0]["decisions"].as_array().unwrap().len(),
        rows.len(),
        "{}",
        &stdout[..500]
    );

    // --from cloudwatch: the same, without a file.
    let mut cmd = crate::support::ecscale();
    cmd.args([
        "backtest",
        "--format",
        "json",
        "--from",
        "cloudwatch",
        "--since",
        "1d",
        "--period",
        "5m",
        "--policy",
    ])
    .arg(&policy)
    .arg("--config")
    .arg(&config);
    let (code, stdout, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ticks = report[0]["decisions"].as_array().unwrap().len();
    // A day of 5-minute periods, from the first datapoint to the last.
    assert!((280..=289).contains(&ticks), "{ticks}");

    // A window CloudWatch does not keep at 1-minute periods is read coarser, and said.
    let mut cmd = crate::support::ecscale();
    cmd.args([
        "trace", "export", "--since", "30d", "--period", "60s", "--format", "ndjson", "--config",
    ])
    .arg(&config);
    let (code, stdout, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("`cpu`: read at 300 s, not 60 s"), "{stderr}");
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert!(
        first["cpu"].is_number() && first["running"].is_number(),
        "{first}"
    );
    // Beyond what CloudWatch keeps at all: refused, exit 2.
    let mut cmd = crate::support::ecscale();
    cmd.args(["trace", "export", "--since", "500d", "--config"])
        .arg(&config);
    let (code, _, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("CloudWatch keeps datapoints for 455 days at most"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_shipping_run_put_in_opensearch_comes_back_as_a_trace() {
    let s = stage("ap-east-1", "it-trace-es").await;
    let t0 = minute(Utc::now());
    let mut points = Vec::new();
    for m in -15..0 {
        points.push((t0 + TimeDelta::minutes(m), 40.0 + f64::from(m as i32 + 15)));
    }
    s.moto
        .put_points(
            "AWS/ECS",
            "CPUUtilization",
            &[("ClusterName", s.cluster.as_str()), ("ServiceName", "web")],
            StandardUnit::Percent,
            &points,
        )
        .await
        .unwrap();
    let prefix = unique("ittrace");
    let config = s.config_named("ship.yaml", &s.proxy.url, &["web"], 1, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "sink: {spool: {dir: spool}}",
        &format!(
            "sink: {{index_prefix: {prefix}, elasticsearch: {{url: '{}', replicas: 0, flush_interval: 200ms}}, spool: {{dir: spool}}}}",
            es_url()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut cmd = crate::support::ecscale();
    cmd.args(["run", "--ticks", "2", "--config"]).arg(&config);
    let (code, _, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    // The documents are searchable once the indices refresh.
    reqwest::Client::new()
        .post(format!("{}/{prefix}-*/_refresh", es_url()))
        .send()
        .await
        .unwrap();
    let out = write(s.dir.path(), "from-es.csv", "");
    let mut cmd = crate::support::ecscale();
    cmd.args(["trace", "export", "--from-es", "--since", "1h", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&config);
    let (code, _, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    // cpu from CloudWatch; desired, pending and running from the service documents.
    assert_eq!(
        lines.next(),
        Some("timestamp,cpu,desired,pending,running"),
        "{text}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // The samples the ticks shipped (complete minutes of the lookback), each as seeded.
    let with_cpu: Vec<&Vec<&str>> = rows.iter().filter(|r| !r[1].is_empty()).collect();
    assert!(with_cpu.len() >= 10, "{text}");
    for row in with_cpu {
        let at: DateTime<Utc> = row[0].parse().unwrap();
        let m = (at - t0).num_minutes();
        assert_eq!(row[1].parse::<f64>().unwrap(), 40.0 + (m + 15) as f64, "{row:?}");
    }
    // The running count from the service documents (moto starts no task: 0).
    assert!(rows.iter().any(|r| r[4] == "0"), "{text}");
    std::fs::remove_file(&out).ok();
}

/// A column of a trace and the metric it is put as: id, namespace, name, dimensions.
type Put<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

/// The simulator's own history of a service (task rate 25/s, 60 s starts), put into moto's
/// CloudWatch under the names AWS publishes it with, comes back through `trace export` with
/// every column a twin needs, and `twin fit --from cloudwatch` finds the simulator's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_is_fitted_to_a_service_s_history_read_from_cloudwatch() {
    let s = stage("ap-east-1", "it-twin").await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Six hours of the simulator's history, moved to end a few minutes ago.
    let made = s.dir.path().join("made.csv");
    let spec = s.dir.path().join("spec.yaml");
    std::fs::write(&spec, "task_rps: 25\ntask_start: 60s\ninstance_boot: 90s\n").unwrap();
    let mut cmd = crate::support::ecscale();
    cmd.args(["backtest", "--simulate", "--baseline", "aws", "--policy"])
        .arg(root.join("policies/web.yaml"))
        .arg("--metrics")
        .arg(root.join("examples/traces/bursts.csv"))
        .arg("--twin")
        .arg(&spec)
        .arg("--record")
        .arg(&made);
    let (code, _, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    let history = ecscale::evaluate::trace::read(&made).unwrap();
    let first = history.timestamps[0];
    let shift = minute(Utc::now()) - TimeDelta::minutes(6 * 60 + 5) - first;
    let keep = |t: DateTime<Utc>| t - first < TimeDelta::hours(6);
    let tg = "targetgroup/web/5e1d0c0ffee00001";
    let lb = "app/web/5e1d0c0ffee00002";
    let alb = [("LoadBalancer", lb), ("TargetGroup", tg)];
    let svc = [("ClusterName", s.cluster.as_str()), ("ServiceName", "web")];
    let asg = [("AutoScalingGroupName", s.group.as_str())];
    let put: [Put; 8] = [
        ("request_count", "AWS/ApplicationELB", "RequestCount", &alb),
        (
            "target_response_time",
            "AWS/ApplicationELB",
            "TargetResponseTime",
            &alb,
        ),
        ("cpu", "AWS/ECS", "CPUUtilization", &svc),
        ("desired", "ECS/ContainerInsights", "DesiredTaskCount", &svc),
        ("pending", "ECS/ContainerInsights", "PendingTaskCount", &svc),
        ("instances", "AWS/AutoScaling", "GroupInServiceInstances", &asg),
        (
            "instances_pending",
            "AWS/AutoScaling",
            "GroupPendingInstances",
            &asg,
        ),
        ("group_desired", "AWS/AutoScaling", "GroupDesiredCapacity", &asg),
    ];
    for (id, ns, name, dims) in put {
        let points: Vec<(DateTime<Utc>, f64)> = history.series[id]
            .iter()
            .filter(|p| keep(p.timestamp))
            .map(|p| (p.timestamp + shift, p.value))
            .collect();
        s.moto
            .put_points(ns, name, dims, StandardUnit::None, &points)
            .await
            .unwrap();
    }
    let running: Vec<(DateTime<Utc>, f64)> = history
        .recorded_count
        .iter()
        .filter(|(t, _)| keep(**t))
        .map(|(t, n)| (*t + shift, f64::from(*n)))
        .collect();
    s.moto
        .put_points(
            "ECS/ContainerInsights",
            "RunningTaskCount",
            &svc,
            StandardUnit::None,
            &running,
        )
        .await
        .unwrap();
    let config = write(
        s.dir.path(),
        "twin.yaml",
        &format!(
            "aws:\n  region: {region}\n  endpoint_url: {url}\n  retry: {{max_attempts: 1}}\n  timeouts: {{attempt: 60s, operation: 120s}}\nschedule: {{interval: 15s}}\nclusters:\n  - name: {cluster}\n    services:\n      - {{name: web, target_group: arn:aws:elasticloadbalancing:{region}:123456789012:{tg}, load_balancer: {lb}}}\ncapacity:\n  - {{auto_scaling_group: {group}, cluster: {cluster}}}\nsink: {{spool: {{dir: spool}}}}\nworker:\n  metrics_addr: 'off'\n",
            region = s.moto.region,
            url = s.proxy.url,
            cluster = s.cluster,
            group = s.group,
        ),
    );
    // trace export: every column the fit needs
    let out = s.dir.path().join("exported.csv");
    let mut cmd = crate::support::ecscale();
    cmd.args(["trace", "export", "--since", "7h", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&config);
    let (code, _, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    let header = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    for c in [
        "cpu",
        "desired",
        "group_desired",
        "instances_pending",
        "pending",
        "request_count",
        "target_response_time",
        "running",
    ] {
        assert!(header.split(',').any(|h| h == c), "{c}: {header}");
    }
    // twin fit --from cloudwatch reads the same and finds the simulator's values
    let twin = s.dir.path().join("fitted.yaml");
    let mut cmd = crate::support::ecscale();
    cmd.args([
        "twin",
        "fit",
        "--from",
        "cloudwatch",
        "--since",
        "7h",
        "--format",
        "json",
        "--out",
    ])
    .arg(&twin)
    .arg("--config")
    .arg(&config);
    let (code, stdout, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    let f: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let value = |k: &str| {
        assert_eq!(f[k]["status"], "fitted", "{k}: {}", f[k]);
        f[k]["value"].as_f64().unwrap()
    };
    assert!((value("task_rps") - 25.0).abs() <= 2.5, "{stdout}");
    assert!((value("task_start") - 60.0).abs() <= 6.0, "{stdout}");
    let text = std::fs::read_to_string(&twin).unwrap();
    assert!(
        text.starts_with("# A twin of the service fitted by `ecscale twin fit` from cloudwatch"),
        "{text}"
    );
    // and backtest --simulate runs with it
    let mut cmd = crate::support::ecscale();
    cmd.args(["backtest", "--simulate", "--baseline", "aws", "--policy"])
        .arg(root.join("policies/web.yaml"))
        .arg("--metrics")
        .arg(root.join("examples/traces/step.csv"))
        .arg("--twin")
        .arg(&twin);
    let (code, stdout, stderr) = crate::support::run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("serving 25."), "{stdout}");
}
