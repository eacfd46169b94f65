//! Clusters in other accounts and regions, one worker: against moto's ECS, STS and CloudWatch,
//! a cluster of another account (its role assumed through STS) and one of another region are
//! read, and scaled, where they are; the worker's own cluster where it is.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta};

use ecscale::aws::AwsContext;
use ecscale::config::env::Vars;
use ecscale::usage::ApiMeter;
use ecscale::worker::{Clients, Parts, RunOptions, Worker};

use crate::support::{ecscale, moto_url, run_async, unique, write};
use crate::worker::credentials;

const OWN_REGION: &str = "eu-central-2";
const OTHER_REGION: &str = "eu-south-2";
const ROLE: &str = "arn:aws:iam::222222222222:role/ecscale";

/// A cluster with one service of `desired` tasks, through `ctx`'s ECS client.
async fn cluster(ctx: &AwsContext, name: &str, service: &str, desired: i32) {
    let ecs = ctx.ecs.client();
    ecs.create_cluster().cluster_name(name).send().await.unwrap();
    let td = ecs
        .register_task_definition()
        .family(unique("td"))
        .cpu("256")
        .memory("512")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("app")
                .image("app:1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let td = td.task_definition.unwrap().task_definition_arn.unwrap();
    ecs.create_service()
        .cluster(name)
        .service_name(service)
        .task_definition(td)
        .desired_count(desired)
        .send()
        .await
        .unwrap();
}

async fn desired(ctx: &AwsContext, cluster: &str, service: &str) -> Option<i32> {
    let out = ctx
        .ecs
        .client()
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .ok()?;
    out.services?.first().map(|s| s.desired_count)
}

/// `api`'s policy in `cluster` (at least 4 tasks), and a config of the worker's own region whose
/// clusters (and what follows them) are `body`: its path, text, reading and AWS clients.
async fn setup(
    dir: &std::path::Path,
    cluster: &str,
    body: &str,
) -> (std::path::PathBuf, String, ecscale::config::Config, AwsContext) {
    write(
        dir,
        "api.yaml",
        &format!("target: {{cluster: {cluster}, service: api}}\nmin: 4\nmax: 6\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 60}}\n"),
    );
    let yaml = format!(
        "aws: {{region: {OWN_REGION}, endpoint_url: {url}}}\nschedule: {{interval: 20s}}\n{body}policies: [api.yaml]\nworker: {{state: {{file: {state}}}}}\n",
        url = moto_url(),
        state = dir.join("state.json").display()
    );
    let path = write(dir, "ecscale.yaml", &yaml);
    let config = ecscale::config::load(&path, &Vars::from_pairs([])).unwrap();
    let aws = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .unwrap();
    (path, yaml, config, aws)
}

/// Clients of the other account (its role assumed from `aws`), with `cluster` made there and
/// an Auto Scaling group of 2 m5.large (min 1, max 6) registered to it as its instances.
async fn their_hosts(aws: &AwsContext, cluster: &str, group: &str) -> crate::support::moto::Moto {
    let other = aws.place(None, Some(ROLE)).await.unwrap();
    let there = crate::support::moto::Moto::with_credentials(
        &moto_url(),
        OWN_REGION,
        other.credentials.clone().unwrap(),
    );
    there.cluster(cluster).await.unwrap();
    there.group(group, "m5.large", 1, 6, 2).await.unwrap();
    there.register_group(cluster, group).await.unwrap();
    there
}

/// `ecscale validate --aws --config PATH`: its exit code, stdout and stderr.
async fn validate_aws(path: &std::path::Path) -> (i32, String, String) {
    let mut cmd = ecscale();
    cmd.args(["validate", "--aws", "--config"]).arg(path);
    run_async(cmd).await
}

/// A worker on `config` with `clients`: its policies, its state in the config's file, no lease,
/// nothing shipped.
async fn worker(config: &ecscale::config::Config, aws: &AwsContext, clients: Clients) -> Worker {
    let policies = ecscale::policy::load_for(config)
        .unwrap()
        .into_iter()
        .flat_map(|f| f.targets)
        .collect();
    let parts = Parts {
        store: ecscale::worker::store(config, None).unwrap(),
        lease: None,
        metrics: Arc::new(ecscale::worker::metrics::Metrics::new(
            aws.meter.clone(),
            Duration::from_secs(60),
        )),
        ship: None,
        notify: None,
    };
    Worker::new(config.clone(), policies, clients, parts, &RunOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_of_another_account_and_region_are_read_and_scaled_where_they_are() {
    credentials();
    let dir = tempfile::tempdir().unwrap();
    let (own, theirs, away) = (unique("own"), unique("theirs"), unique("away"));
    let (path, yaml, config, aws) = setup(
        dir.path(),
        &theirs,
        &format!("collect: {{container_instances: false, pending_tasks: false}}\nclusters:\n  - {{name: {own}, services: [web]}}\n  - {{name: {theirs}, role_arn: '{ROLE}', services: [api]}}\n  - {{name: {away}, region: {OTHER_REGION}, services: [worker]}}\n"),
    )
    .await;
    let other_account = aws.place(None, Some(ROLE)).await.unwrap();
    let other_region = aws.place(Some(OTHER_REGION), None).await.unwrap();
    cluster(&aws, &own, "web", 1).await;
    cluster(&other_account, &theirs, "api", 2).await;
    cluster(&other_region, &away, "worker", 3).await;
    // Each cluster exists only where it was made.
    assert_eq!(desired(&aws, &theirs, "api").await, None);
    assert_eq!(desired(&aws, &away, "worker").await, None);

    let clients = Clients::routed(&aws, &config).await.unwrap();
    let mut w = worker(&config, &aws, clients.clone()).await;
    let report = w.tick(chrono::Utc::now()).await;
    let seen = |name: &str| {
        report
            .services
            .iter()
            .find(|(d, _)| d.target.to_string().ends_with(&format!("/{name}")))
            .map(|(d, _)| d.current)
    };
    assert_eq!(seen("api"), Some(2), "{report:#?}");

    // The snapshot has every cluster's service, with the counts of its own place.
    let collector = ecscale::collect::Collector::new(
        &config,
        clients.ecs.clone(),
        clients.cloudwatch.clone(),
        aws.meter.clone(),
    );
    let snap = collector.collect(chrono::Utc::now()).await;
    let count = |n: &str| snap.services().find(|s| s.name == n).map(|s| s.desired);
    assert_eq!(
        (count("web"), count("api"), count("worker")),
        (Some(1), Some(4), Some(3)),
        "{:?}",
        snap.problems
    );
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    // The scale-out to the policy's minimum went to the other account.
    assert_eq!(desired(&other_account, &theirs, "api").await, Some(4));
    assert_eq!(report.problems, Vec::<String>::new());

    // validate --aws reaches each place, and names the one it cannot reach.
    let (code, out, err) = validate_aws(&path).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("cluster {theirs}: reached through role {ROLE}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("cluster {away}: reached through region {OTHER_REGION}")),
        "{out}"
    );
    let gone = yaml.replace(&format!("{{name: {away}, region"), "{name: nowhere, region");
    let gone_path = write(dir.path(), "gone.yaml", &gone);
    let (code, out, err) = validate_aws(&gone_path).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "cluster nowhere: not reached through region {OTHER_REGION}"
        )),
        "{err}"
    );
}

/// The other account's credentials, assumed through STS, are renewed before they expire: STS's
/// answers (through a proxy) say they last 20 s. Over 40 s of ticks, every request to the
/// other account is signed with a key that has not expired yet, several keys serve in turn, and
/// no tick has a problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_credentials_are_renewed_before_they_expire() {
    credentials();
    let proxy = crate::support::proxy::Proxy::start(&moto_url()).await;
    proxy.expire_assumed_credentials(Duration::from_secs(20));
    let dir = tempfile::tempdir().unwrap();
    let theirs = unique("renewed");
    let yaml = format!(
        "aws: {{region: {OWN_REGION}, endpoint_url: {url}, retry: {{max_attempts: 1}}}}\nschedule: {{interval: 20s}}\ncollect: {{container_instances: false, pending_tasks: false}}\nclusters:\n  - {{name: {theirs}, role_arn: '{ROLE}', services: [api]}}\nworker: {{state: {{file: {state}}}}}\n",
        url = proxy.url,
        state = dir.path().join("state.json").display()
    );
    let path = write(dir.path(), "ecscale.yaml", &yaml);
    let config = ecscale::config::load(&path, &Vars::from_pairs([])).unwrap();
    let aws = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .unwrap();
    cluster(&aws.place(None, Some(ROLE)).await.unwrap(), &theirs, "api", 2).await;
    let clients = Clients::routed(&aws, &config).await.unwrap();
    let mut w = worker(&config, &aws, clients).await;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(40) {
        let report = w.tick(chrono::Utc::now()).await;
        assert_eq!(report.problems, Vec::<String>::new());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let issued: std::collections::HashMap<String, std::time::SystemTime> =
        proxy.issued().into_iter().collect();
    let assumed: Vec<(String, String, std::time::SystemTime)> = proxy
        .signed()
        .into_iter()
        .filter(|(op, key, _)| op.starts_with("ECS.") && issued.contains_key(key))
        .collect();
    assert!(
        assumed.len() >= 20,
        "{} ECS calls with assumed keys",
        assumed.len()
    );
    for (op, key, at) in &assumed {
        assert!(*at < issued[key], "{op} signed with {key} after it expired");
    }
    let keys: std::collections::BTreeSet<&String> = assumed.iter().map(|(_, k, _)| k).collect();
    assert!(
        keys.len() >= 3,
        "{} keys served 40 s of 20 s credentials",
        keys.len()
    );
}

/// EC2 capacity in another account: the group named for a cluster whose `role_arn` is another
/// account's is read, and sized for that cluster's tasks, there; the worker's own account has
/// no such group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_scaling_group_of_another_account_is_sized_where_it_is() {
    credentials();
    let dir = tempfile::tempdir().unwrap();
    let (theirs, group) = (unique("their-capacity"), unique("their-asg"));
    let (path, _, config, aws) = setup(
        dir.path(),
        &theirs,
        &format!("clusters:\n  - {{name: {theirs}, role_arn: '{ROLE}', services: [api]}}\ncapacity:\n  - {{auto_scaling_group: {group}, cluster: {theirs}}}\n"),
    )
    .await;
    let there = their_hosts(&aws, &theirs, &group).await;
    let td = there.task_definition(&unique("api"), 2048, 2048).await.unwrap();
    there.service(&theirs, "api", &td, 2, &[]).await.unwrap();
    let here = crate::support::moto::Moto::new(&moto_url(), OWN_REGION);
    assert!(
        here.group_state(&group).await.is_err(),
        "not in the worker's own account"
    );

    let clients = Clients::routed(&aws, &config).await.unwrap();
    let mut w = worker(&config, &aws, clients).await;
    let report = w.tick(chrono::Utc::now()).await;
    assert_eq!(report.problems, Vec::<String>::new());
    let api = there.describe_service(&theirs, "api").await.unwrap();
    assert_eq!(api.desired_count(), 4);
    let g = &report.groups[0];
    let (desired_there, _) = there.group_state(&group).await.unwrap();
    assert!(desired_there >= 4, "{}: {desired_there}", g.decision.reason);
    assert_eq!(desired_there as u32, g.decision.desired, "{}", g.decision.reason);

    // validate --aws reads the group's cluster where it is.
    let (code, out, err) = validate_aws(&path).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "capacity asg/{group}: no capacity provider with managed scaling sizes it"
        )),
        "{out}{err}"
    );
}

/// The fleet bench's stand-in for AWS's token buckets: ECS reads past the 100 a bucket holds
/// are throttled, each account and region drawing on its own bucket (the other account's known
/// by the key its AssumeRole handed out); GetMetricData is answered with a datapoint a period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_proxy_throttles_per_account_and_region_as_aws_does() {
    credentials();
    let proxy = crate::support::proxy::Proxy::start_enforcing(&moto_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "ecscale.yaml",
        &format!(
            "aws: {{region: {OWN_REGION}, endpoint_url: {}, retry: {{max_attempts: 1}}}}\nschedule: {{interval: 20s}}\nclusters: [{{name: x, services: [y]}}]\n",
            proxy.url
        ),
    );
    let config = ecscale::config::load(&path, &Vars::from_pairs([])).unwrap();
    let own = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .unwrap();
    let other = own.place(None, Some(ROLE)).await.unwrap();
    let elsewhere = own.place(Some(OTHER_REGION), None).await.unwrap();
    let burst = |ctx: &AwsContext, n: usize| {
        let ecs = ctx.ecs.client().clone();
        async move {
            let calls = (0..n).map(|_| ecs.list_clusters().send());
            let out = futures::future::join_all(calls).await;
            let throttled = out
                .iter()
                .filter(|r| {
                    r.as_ref()
                        .err()
                        .and_then(|e| e.as_service_error())
                        .and_then(aws_smithy_types::error::metadata::ProvideErrorMetadata::code)
                        == Some("ThrottlingException")
                })
                .count();
            (out.iter().filter(|r| r.is_ok()).count(), throttled)
        }
    };
    let (answered, throttled) = burst(&own, 160).await;
    assert_eq!(answered + throttled, 160, "every call answered or throttled");
    assert!(
        (100..=130).contains(&answered),
        "{answered} of 160 at once through a bucket of 100"
    );
    assert_eq!(
        burst(&other, 40).await,
        (40, 0),
        "the other account's bucket is its own"
    );
    assert_eq!(
        burst(&elsewhere, 40).await,
        (40, 0),
        "another region's bucket is its own"
    );
    let tally = proxy.tally();
    assert_eq!(
        tally[&format!("own {OWN_REGION} ECS reads")].throttled,
        throttled as u64
    );
    assert_eq!(
        tally[&format!("222222222222 {OWN_REGION} ECS reads")].answered,
        40
    );

    let end = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let metric = aws_sdk_cloudwatch::types::Metric::builder()
        .namespace("AWS/ECS")
        .metric_name("CPUUtilization")
        .build();
    let query = aws_sdk_cloudwatch::types::MetricDataQuery::builder()
        .id("m0")
        .metric_stat(
            aws_sdk_cloudwatch::types::MetricStat::builder()
                .metric(metric)
                .period(60)
                .stat("Average")
                .build(),
        )
        .build();
    let out = own
        .cloudwatch
        .client()
        .get_metric_data()
        .metric_data_queries(query)
        .start_time(aws_smithy_types::DateTime::from_secs(
            (end - TimeDelta::minutes(5)).timestamp(),
        ))
        .end_time(aws_smithy_types::DateTime::from_secs(end.timestamp()))
        .send()
        .await
        .unwrap();
    let result = &out.metric_data_results.unwrap()[0];
    let stamps: Vec<i64> = result.timestamps().iter().map(|t| t.secs()).collect();
    let first = end.timestamp() - 300;
    assert_eq!(stamps, (0..5).map(|k| first + 60 * k).collect::<Vec<_>>());
    assert_eq!(result.values().len(), 5);
}

/// A task group in another account's cluster, placed by ecscale's own scheduler: StartTask and
/// StopTask go to that account (signed with the assumed role's keys, not the worker's own),
/// onto its container instances; the worker's own account has no such cluster and no task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_group_of_another_account_is_placed_and_stopped_where_it_is() {
    credentials();
    let dir = tempfile::tempdir().unwrap();
    let proxy = crate::support::proxy::Proxy::start(&moto_url()).await;
    let (theirs, group) = (unique("their-tasks"), unique("their-hosts"));
    let policy = |min: u32, max: u32| {
        format!("target: {{cluster: {theirs}, group: worker}}\nmin: {min}\nmax: {max}\nrules:\n  - {{name: night, kind: scheduled, windows: [{{name: night, cron: '0 0 * * *', duration: 1m, min: {min}}}]}}\n")
    };
    write(dir.path(), "group.yaml", &policy(3, 6));
    let config_at = |td: &str| {
        let yaml = format!(
            "aws: {{region: {OWN_REGION}, endpoint_url: {url}, retry: {{max_attempts: 1}}}}\nschedule: {{interval: 20s}}\nclusters:\n  - {{name: {theirs}, role_arn: '{ROLE}', services: []}}\ngroups:\n  - {{name: worker, cluster: {theirs}, task_definition: {td}, placement: {{strategy: spread, by: instance}}}}\npolicies: [group.yaml]\nworker: {{state: {{file: {state}}}}}\n",
            url = proxy.url,
            state = dir.path().join("state.json").display()
        );
        let path = write(dir.path(), "ecscale.yaml", &yaml);
        ecscale::config::load(&path, &Vars::from_pairs([])).unwrap()
    };
    let first = config_at("none");
    let aws = AwsContext::connect(&first.aws, ApiMeter::default())
        .await
        .unwrap();
    let there = their_hosts(&aws, &theirs, &group).await;
    let td = there.task_definition(&unique("worker"), 128, 128).await.unwrap();
    let config = config_at(&td);
    let run = |config: ecscale::config::Config| {
        let aws = aws.clone();
        async move {
            let clients = Clients::routed(&aws, &config).await.unwrap();
            let mut w = worker(&config, &aws, clients).await;
            w.tick(chrono::Utc::now()).await
        }
    };

    let report = run(config.clone()).await;
    assert_eq!(report.problems, Vec::<String>::new(), "{report:#?}");
    assert_eq!(
        there.started_by(&theirs, "ecscale/worker").await.unwrap().len(),
        3
    );
    let own = crate::support::moto::Moto::new(&moto_url(), OWN_REGION);
    assert!(
        own.started_by(&theirs, "ecscale/worker").await.is_err(),
        "no such cluster here"
    );
    let signed_by = |op: &str| -> Vec<String> {
        proxy
            .signed()
            .into_iter()
            .filter(|(o, _, _)| o == op)
            .map(|(_, key, _)| key)
            .collect()
    };
    let starts = signed_by("ECS.StartTask");
    assert!(
        !starts.is_empty() && starts.iter().all(|k| k != "testing"),
        "{starts:?}"
    );

    // The policy now allows one: two tasks stopped there, by the assumed role.
    write(dir.path(), "group.yaml", &policy(1, 1));
    let report = run(config_at(&td)).await;
    assert_eq!(report.problems, Vec::<String>::new(), "{report:#?}");
    assert_eq!(
        there.started_by(&theirs, "ecscale/worker").await.unwrap().len(),
        1
    );
    let stops = signed_by("ECS.StopTask");
    assert_eq!(stops.len(), 2, "{stops:?}");
    assert!(stops.iter().all(|k| k != "testing"), "{stops:?}");
}
