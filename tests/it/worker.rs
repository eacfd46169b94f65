//! The worker against moto: the whole loop (service and capacity out, a restart mid-cooldown,
//! in with drains), errors per target, `--dry-run`, the IAM policy against the calls seen on the
//! wire, and two workers electing a leader.
//!
//! The in-process tests drive [`Worker::tick`] with chosen times, so cooldowns pass without
//! waiting; CloudWatch datapoints are put at those times. moto does not run tasks for services
//! (their running count stays 0) nor register booting instances, so the tests do what ECS would:
//! register the group's new instances, start and stop tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::types::StandardUnit;
use chrono::{DateTime, TimeDelta, Utc};

use ecscale::actuate::Applied;
use ecscale::api::ErrorKind;
use ecscale::aws::AwsContext;
use ecscale::config::env::Vars;
use ecscale::model::Action;
use ecscale::usage::ApiMeter;
use ecscale::worker::leader::{Lease, LeaseStep};
use ecscale::worker::metrics::Metrics;
use ecscale::worker::{Clients, Parts, RunOptions, TickReport, Worker};

use crate::support::moto::Moto;
use crate::support::proxy::Proxy;
use crate::support::{free_port, moto_url, repo, unique, write};

pub(crate) fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(60), 0).unwrap()
}

pub(crate) fn mins(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

/// Static credentials for the in-process clients (moto takes any).
pub(crate) fn credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
}

/// A cluster with service `web` (2 tasks of 2048 CPU / 2048 MiB: one per instance once the 10 %
/// headroom is kept), an Auto Scaling group of 2 m5.large (min 1, max 6) whose instances are
/// registered to the cluster, and a proxy in front of moto.
pub(crate) struct Stage {
    pub(crate) moto: Moto,
    pub(crate) proxy: Proxy,
    pub(crate) cluster: String,
    pub(crate) group: String,
    /// A small task definition, for tasks the tests start on instances.
    small: String,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn stage(region: &str, prefix: &str) -> Stage {
    let moto = Moto::new(&moto_url(), region);
    let cluster = unique(prefix);
    moto.cluster(&cluster).await.unwrap();
    let td = moto.task_definition(&unique("web"), 2048, 2048).await.unwrap();
    moto.service(&cluster, "web", &td, 2, &[]).await.unwrap();
    let group = unique("asg");
    moto.group(&group, "m5.large", 1, 6, 2).await.unwrap();
    moto.register_group(&cluster, &group).await.unwrap();
    let small = moto.task_definition(&unique("sidecar"), 128, 128).await.unwrap();
    let proxy = Proxy::start(&moto_url()).await;
    Stage {
        moto,
        proxy,
        cluster,
        group,
        small,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Stage {
    /// `web`'s CPU at `value` for every minute in `[from, until)`.
    pub(crate) async fn cpu(&self, service: &str, from: DateTime<Utc>, until: DateTime<Utc>, value: f64) {
        let mut points = Vec::new();
        let mut t = from;
        while t < until {
            points.push((t, value));
            t += mins(1);
        }
        self.moto
            .put_points(
                "AWS/ECS",
                "CPUUtilization",
                &[("ClusterName", &self.cluster), ("ServiceName", service)],
                StandardUnit::Percent,
                &points,
            )
            .await
            .unwrap();
    }

    /// Writes the config (through the proxy, one attempt per call) and a policy per service;
    /// `worker` is the body of the `worker:` section.
    fn config(&self, services: &[&str], worker: &str) -> PathBuf {
        self.config_named("ecscale.yaml", &self.proxy.url, services, 1, worker)
    }

    /// As [`Stage::config`], through `endpoint`, with the policies' `min`.
    pub(crate) fn config_named(
        &self,
        name: &str,
        endpoint: &str,
        services: &[&str],
        min: u32,
        worker: &str,
    ) -> PathBuf {
        let mut policies = String::new();
        for s in services {
            policies.push_str(&format!(
                "---\ntarget: {{cluster: {c}, service: {s}}}\nmin: {min}\nmax: 8\ncooldown: {{scale_out: 5m, scale_in: 2m}}\nscale_in_stabilization: 1m\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 50, scale_in_datapoints: 3, warmup: 0s}}\n",
                c = self.cluster
            ));
        }
        write(self.dir.path(), "policies.yaml", &policies);
        let yaml = format!(
            "aws:\n  region: {region}\n  endpoint_url: {url}\n  retry: {{max_attempts: 1}}\nschedule: {{interval: 1s}}\nclusters:\n  - name: {cluster}\n    services: [{list}]\ncapacity:\n  - {{auto_scaling_group: {group}, cluster: {cluster}}}\npolicies: [policies.yaml]\nsink: {{spool: {{dir: spool}}}}\nworker:\n  metrics_addr: 'off'\n{worker}",
            region = self.moto.region,
            url = endpoint,
            cluster = self.cluster,
            group = self.group,
            list = services.join(", "),
        );
        write(self.dir.path(), name, &yaml)
    }

    pub(crate) async fn desired(&self, service: &str) -> i32 {
        self.moto
            .describe_service(&self.cluster, service)
            .await
            .unwrap()
            .desired_count()
    }

    async fn group_desired(&self) -> i32 {
        self.moto.group_state(&self.group).await.unwrap().0
    }
}

/// A worker built as `ecscale run` builds it, with its lease (when configured) under `id`.
async fn worker(path: &Path, id: &str, dry_run: bool) -> (Worker, Option<Arc<Lease>>) {
    credentials();
    let config = ecscale::config::load(path, &Vars::from_pairs([])).unwrap();
    let policies = ecscale::policy::load_for(&config)
        .unwrap()
        .into_iter()
        .flat_map(|f| f.targets)
        .collect();
    let aws = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .unwrap();
    let store = ecscale::worker::store(&config, Some(&aws.dynamodb)).unwrap();
    let lease = config
        .worker
        .leader
        .as_ref()
        .map(|l| Arc::new(Lease::new(aws.dynamodb.clone(), &l.table, id, l.lease)));
    let parts = Parts {
        store,
        lease: lease.clone(),
        metrics: Arc::new(Metrics::new(aws.meter.clone(), Duration::from_secs(60))),
        ship: None,
        notify: None,
    };
    let opts = RunOptions {
        dry_run,
        max_ticks: None,
        sources: None,
        emf_stack: None,
    };
    let w = Worker::new(config, policies, Clients::aws(&aws), parts, &opts)
        .await
        .unwrap();
    (w, lease)
}

fn service<'a>(r: &'a TickReport, name: &str) -> &'a (ecscale::model::Decision, Applied) {
    r.services
        .iter()
        .find(|(d, _)| d.target.to_string().ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("no decision for {name}: {r:#?}"))
}

/// Actions only task groups call (the group test checks the policy allows them).
const GROUP_ONLY: &[&str] = &["ecs:StartTask", "ecs:StopTask"];

/// Actions of features the capacity run below does not use: the ECS events queue (its calls are
/// `SQS.ReceiveMessage` and `SQS.DeleteMessageBatch`, tests/it/events.rs) and clusters in other
/// accounts (STS AssumeRole, tests/it/accounts.rs).
const OTHER_FEATURES: &[&str] = &[
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sts:AssumeRole",
    "ssm:GetParameter",
];

#[tokio::test]
async fn a_task_group_is_placed_with_start_task_adopted_after_a_restart_and_scaled_in_with_stop_task() {
    let s = stage("eu-south-1", "it-groups").await;
    let group_block = format!(
        "groups:\n  - name: worker\n    cluster: {c}\n    task_definition: {td}\n    placement: {{strategy: spread, by: instance}}\n",
        c = s.cluster,
        td = s.small
    );
    let policy = |min: u32, max: u32| {
        format!(
            "---\ntarget: {{cluster: {c}, group: worker}}\nmin: {min}\nmax: {max}\nrules:\n  - {{name: night, kind: scheduled, windows: [{{name: night, cron: '0 0 * * *', duration: 1m, min: {min}}}]}}\n",
            c = s.cluster
        )
    };
    let path = s.config(&["web"], "");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{group_block}")).unwrap();
    let policies = s.dir.path().join("policies.yaml");
    let web = std::fs::read_to_string(&policies).unwrap();
    std::fs::write(&policies, format!("{web}{}", policy(3, 6))).unwrap();
    let t0 = minute(Utc::now());
    s.cpu("web", t0 - mins(15), t0 + mins(10), 40.0).await;

    // 1. Three tasks, spread over the two instances, each StartTask naming its instances.
    let (mut w, _) = worker(&path, "it-groups", false).await;
    let r = w.tick(t0).await;
    let (d, a) = service(&r, "group:worker");
    assert_eq!(*a, Applied::Updated { from: 0, to: 3 }, "{}", d.reason);
    let tasks = s.moto.started_by(&s.cluster, "ecscale/worker").await.unwrap();
    assert_eq!(tasks.len(), 3);
    let mut per_instance: BTreeMap<String, u32> = BTreeMap::new();
    for (_, ci) in &tasks {
        *per_instance.entry(ci.clone()).or_default() += 1;
    }
    let mut counts: Vec<u32> = per_instance.values().copied().collect();
    counts.sort();
    assert_eq!(counts, [1, 2], "{per_instance:?}");
    let starts = s.proxy.seen().get("ECS.StartTask").copied().unwrap_or(0);
    assert_eq!(starts, 2, "two calls: an instance appears once per call");

    // 2. A restarted worker adopts them: nothing started.
    drop(w);
    let (mut w, _) = worker(&path, "it-groups-2", false).await;
    let r = w.tick(t0 + mins(1)).await;
    assert_eq!(service(&r, "group:worker").1, Applied::Unchanged);
    assert_eq!(s.proxy.seen().get("ECS.StartTask").copied().unwrap_or(0), starts);

    // 3. The policy now allows one: StopTask for two, from the instance with two.
    std::fs::write(&policies, format!("{web}{}", policy(1, 1))).unwrap();
    drop(w);
    let (mut w, _) = worker(&path, "it-groups-3", false).await;
    let r = w.tick(t0 + mins(2)).await;
    assert_eq!(service(&r, "group:worker").1, Applied::Updated { from: 3, to: 1 });
    assert_eq!(s.proxy.seen().get("ECS.StopTask"), Some(&2));
    assert_eq!(
        s.moto
            .started_by(&s.cluster, "ecscale/worker")
            .await
            .unwrap()
            .len(),
        1
    );
    // The IAM policy allows what groups call.
    let allowed = policy_actions();
    for a in GROUP_ONLY {
        assert!(allowed.contains(*a), "{a}");
        assert!(
            s.proxy.seen().keys().any(|op| iam_action(op) == *a),
            "{a} never called"
        );
    }
}

/// The config's capacity group with `capacity_provider: take_over`.
fn take_over_capacity(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("capacity:\n  - {").unwrap();
    let end = start + text[start..].find("}\n").unwrap();
    let text = format!("{}, capacity_provider: take_over{}", &text[..end], &text[end..]);
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn a_group_that_ecs_sizes_is_left_alone_and_every_decision_says_why() {
    let s = stage("ca-central-1", "it-managed").await;
    let provider = s
        .moto
        .capacity_provider(&s.cluster, &s.group, true)
        .await
        .unwrap();
    let path = s.config(&["web"], "");
    let t0 = minute(Utc::now());
    s.cpu("web", t0 - mins(15), t0 + mins(10), 90.0).await;
    let (mut w, _) = worker(&path, "it-managed", false).await;
    for at in [t0, t0 + mins(1)] {
        let r = w.tick(at).await;
        // The service scales (ECS's managed scaling adds the instances for its tasks)...
        assert_eq!(service(&r, "web").0.desired, 4);
        // ...and the group is refused, with the reason, on every tick.
        let g = &r.groups[0];
        let Applied::Refused { reason } = &g.applied else {
            panic!("{:?}: {}", g.applied, g.decision.reason)
        };
        assert!(
            reason.starts_with(&format!(
                "capacity provider {provider} sizes asg/{} itself (managed scaling ENABLED)",
                s.group
            )),
            "{reason}"
        );
        assert_eq!(&g.decision.reason, reason);
    }
    assert_eq!(s.group_desired().await, 2);
    assert_eq!(s.proxy.seen().get("AutoScaling.SetDesiredCapacity"), None);
    assert_eq!(s.proxy.seen().get("ECS.UpdateCapacityProvider"), None);
    assert!(s.moto.provider_managed(&provider).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_with_aws_warns_of_a_group_that_a_managed_capacity_provider_sizes() {
    let s = stage("ca-central-1", "it-validate-aws").await;
    let path = s.config(&["web"], "");
    let validate = |aws: bool| {
        let mut cmd = crate::support::ecscale();
        cmd.args(["validate", "--config", path.to_str().unwrap()]);
        if aws {
            cmd.arg("--aws");
        }
        crate::support::run_async(cmd)
    };
    // Offline, as before: no AWS call at all.
    let (code, _, stderr) = validate(false).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(s.proxy.seen().is_empty(), "{:?}", s.proxy.seen());
    let (code, stdout, stderr) = validate(true).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "capacity asg/{}: no capacity provider with managed scaling sizes it",
            s.group
        )),
        "{stdout}"
    );
    let provider = s
        .moto
        .capacity_provider(&s.cluster, &s.group, true)
        .await
        .unwrap();
    let (code, stdout, stderr) = validate(true).await;
    assert_eq!(code, 0, "a warning, not a mistake: {stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {}: capacity asg/{}: capacity provider {provider} sizes this group itself (managed scaling ENABLED); the worker will leave it to ECS on every tick (capacity_provider: refuse)",
            path.display(),
            s.group
        )),
        "{stderr}"
    );
    // Read-only calls, and nothing changed.
    let seen = s.proxy.seen();
    assert!(seen.contains_key("ECS.DescribeCapacityProviders"), "{seen:?}");
    assert!(
        seen.keys()
            .all(|op| op.contains(".Describe") || op.contains(".List")),
        "{seen:?}"
    );
    assert!(s.moto.provider_managed(&provider).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_providers_that_cannot_be_read_leave_the_group_alone_for_that_tick_only() {
    let s = stage("ca-central-1", "it-cp-denied").await;
    // A provider without managed scaling: ecscale sizes the group, once it knows that.
    s.moto
        .capacity_provider(&s.cluster, &s.group, false)
        .await
        .unwrap();
    let path = s.config(&["web"], "");
    let t0 = minute(Utc::now());
    s.cpu("web", t0 - mins(15), t0 + mins(10), 90.0).await;
    s.proxy
        .fail("ECS.DescribeCapacityProviders", 1, "AccessDeniedException");
    let (mut w, _) = worker(&path, "it-cp-denied", false).await;
    // Auth refused on the read: the service still scales, the group is not sized (ECS might be
    // sizing it), and the tick says why.
    let r = w.tick(t0).await;
    assert_eq!(service(&r, "web").0.desired, 4);
    assert!(r.groups.is_empty(), "{:?}", r.groups);
    let problems = r.problems.join("\n");
    assert!(
        problems.contains(&format!(
            "asg/{}: capacity providers not known, the group is not sized this tick",
            s.group
        )) && problems.contains("AccessDenied"),
        "{problems}"
    );
    assert_eq!(s.group_desired().await, 2);
    assert_eq!(s.proxy.seen().get("AutoScaling.SetDesiredCapacity"), None);
    // The next tick reads them and sizes the group for the 4 tasks.
    let r = w.tick(t0 + mins(1)).await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(
        r.groups[0].applied,
        Applied::Updated { from: 2, to: 4 },
        "{}",
        r.groups[0].decision.reason
    );
    assert_eq!(s.group_desired().await, 4);
}

/// `ECS.UpdateService` → `ecs:UpdateService`.
pub(crate) fn iam_action(op: &str) -> String {
    let (service, action) = op.split_once('.').unwrap();
    let prefix = match service {
        "ECS" => "ecs",
        "CloudWatch" => "cloudwatch",
        "AutoScaling" => "autoscaling",
        "ApplicationAutoScaling" => "application-autoscaling",
        "DynamoDB" => "dynamodb",
        other => panic!("a call to an unexpected service: {other}"),
    };
    format!("{prefix}:{action}")
}

/// Every action the deploy/ IAM policy allows.
fn policy_actions() -> BTreeSet<String> {
    actions_of("deploy/iam-policy.json")
}

/// Every action an IAM policy file of the repository allows.
pub(crate) fn actions_of(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["Version"], "2012-10-17");
    let mut out = BTreeSet::new();
    for st in doc["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow", "{st}");
        assert!(st["Resource"].is_string() || st["Resource"].is_array(), "{st}");
        match &st["Action"] {
            serde_json::Value::String(a) => {
                out.insert(a.clone());
            }
            serde_json::Value::Array(a) => out.extend(a.iter().map(|v| v.as_str().unwrap().to_string())),
            other => panic!("{other}"),
        }
    }
    out
}

#[tokio::test]
async fn the_loop_scales_out_and_in_survives_a_restart_and_the_iam_policy_is_exact() {
    let s = stage("us-west-1", "it-loop").await;
    let table = unique("ecscale");
    s.moto.table(&table).await.unwrap();
    // Application Auto Scaling also targets web: with take_over it is suspended first. And a
    // capacity provider with managed scaling sizes the group: with take_over it is disabled.
    s.moto.scalable_target(&s.cluster, "web").await.unwrap();
    let provider = s
        .moto
        .capacity_provider(&s.cluster, &s.group, true)
        .await
        .unwrap();
    let path = s.config(
        &["web"],
        &format!(
            "  state: {{dynamodb_table: {table}}}\n  leader: {{dynamodb_table: {table}, lease: 30s}}\n  app_autoscaling: take_over\n"
        ),
    );
    take_over_capacity(&path);
    let t0 = minute(Utc::now());
    s.cpu("web", t0 - mins(15), t0 + mins(10), 90.0).await;
    s.cpu("web", t0 + mins(10), t0 + mins(30), 20.0).await;

    let (mut w, lease) = worker(&path, "it-a", false).await;
    let lease = lease.unwrap();
    assert!(matches!(lease.step().await, LeaseStep::Leading { new: true, .. }));

    // 1. CPU 90 % for a target of 50 %: web 2 → 4 (ceil(2 × 90 / 50)); 4 tasks of 2048 CPU need
    //    4 instances, so the group goes 2 → 4 in the same tick.
    let r = w.tick(t0).await;
    let (d, a) = service(&r, "web");
    assert_eq!((d.action, d.desired), (Action::ScaleOut, 4), "{}", d.reason);
    assert_eq!(*a, Applied::Updated { from: 2, to: 4 });
    assert_eq!(
        r.groups[0].applied,
        Applied::Updated { from: 2, to: 4 },
        "{}",
        r.groups[0].decision.reason
    );
    assert_eq!(s.desired("web").await, 4);
    assert_eq!(s.group_desired().await, 4);
    assert!(s.moto.scalable_target_suspended(&s.cluster, "web").await.unwrap());
    assert!(!s.moto.provider_managed(&provider).await.unwrap());
    assert_eq!(s.proxy.seen().get("ECS.UpdateCapacityProvider"), Some(&1));
    s.moto.register_group(&s.cluster, &s.group).await.unwrap();

    // 2. Restart one minute later: the new worker reads the cooldown from DynamoDB and holds.
    lease.release().await;
    drop(w);
    let (mut w, lease) = worker(&path, "it-b", false).await;
    let lease = lease.unwrap();
    assert!(matches!(
        lease.step().await,
        LeaseStep::Leading {
            fencing: 2,
            new: true
        }
    ));
    let r = w.tick(t0 + mins(1)).await;
    let (d, a) = service(&r, "web");
    assert_eq!(
        (d.action, *a == Applied::Unchanged),
        (Action::Hold, true),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("scale-out cooldown until"), "{}", d.reason);
    assert_eq!(s.proxy.seen().get("ECS.UpdateService"), Some(&1));

    // 3. After the cooldown: 4 → 8, and the group to 6, its max.
    let r = w.tick(t0 + mins(6)).await;
    assert_eq!(service(&r, "web").1, Applied::Updated { from: 4, to: 8 });
    let g = &r.groups[0];
    assert_eq!(
        g.applied,
        Applied::Updated { from: 4, to: 6 },
        "{}",
        g.decision.reason
    );
    assert!(
        g.decision.reason.contains("capped at the group's max 6"),
        "{}",
        g.decision.reason
    );
    let registered = s.moto.register_group(&s.cluster, &s.group).await.unwrap();
    assert_eq!(registered.len(), 6);

    // 4. CPU 20 %: web 8 → 4. Its 8 tasks still run when the decision is made, so the group
    //    keeps its instances this tick.
    let r = w.tick(t0 + mins(20)).await;
    let (d, a) = service(&r, "web");
    assert_eq!(*a, Applied::Updated { from: 8, to: 4 }, "{}", d.reason);
    assert_eq!(
        r.groups[0].applied,
        Applied::Unchanged,
        "{}",
        r.groups[0].decision.reason
    );

    // 5. Next tick, 4 tasks run: 4 instances will do. One small task runs on five instances, the
    //    sixth is empty: that one and one of the others are drained, nothing terminated yet.
    let mut tasks = BTreeMap::new();
    for (id, arn) in registered.iter().take(5) {
        let task = s
            .moto
            .start_task(&s.cluster, &s.small, arn, "service:web")
            .await
            .unwrap();
        tasks.insert(id.clone(), task);
    }
    let empty = registered.keys().nth(5).unwrap().clone();
    let r = w.tick(t0 + mins(20) + TimeDelta::seconds(30)).await;
    assert_eq!(service(&r, "web").1, Applied::Unchanged, "scale-in cooldown");
    let g = &r.groups[0];
    assert_eq!(g.drained.len(), 2, "{}", g.decision.reason);
    assert_eq!(g.drained[0], empty, "the emptiest first");
    let busy = g.drained[1].clone();
    assert!(g.terminated.is_empty());
    let states = s.moto.container_instances(&s.cluster).await.unwrap();
    for id in &g.drained {
        assert_eq!(states[id].1, "DRAINING");
    }
    assert_eq!(s.group_desired().await, 6);

    // 6. The empty one is terminated; the one with a task waits.
    let r = w.tick(t0 + mins(21)).await;
    assert_eq!(
        r.groups[0].terminated,
        vec![empty.clone()],
        "{}",
        r.groups[0].decision.reason
    );
    assert_eq!(s.group_desired().await, 5);
    assert!(s.moto.group_state(&s.group).await.unwrap().1.contains(&busy));

    // 7. Its task stops (ECS moved it): terminated too.
    s.moto.stop_task(&s.cluster, &tasks[&busy]).await.unwrap();
    let r = w.tick(t0 + mins(21) + TimeDelta::seconds(30)).await;
    assert_eq!(r.groups[0].terminated, vec![busy.clone()]);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(s.group_desired().await, 4);
    assert_eq!(s.desired("web").await, 4);
    assert_eq!(
        s.proxy.seen().get("ECS.UpdateService"),
        Some(&3),
        "one call per change"
    );
    assert!(w.state().groups[&s.group].draining.is_empty());
    lease.release().await;

    // The IAM policy allows exactly the actions this worker called, and those of task groups
    // (the group test sees those) and of the features it does not use.
    let seen: BTreeSet<String> = s.proxy.seen().keys().map(|op| iam_action(op)).collect();
    let allowed = policy_actions();
    let missing: Vec<&String> = seen.difference(&allowed).collect();
    let unused: Vec<&String> = allowed
        .difference(&seen)
        .filter(|a| !GROUP_ONLY.contains(&a.as_str()) && !OTHER_FEATURES.contains(&a.as_str()))
        .collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "deploy/iam-policy.json misses {missing:?} and allows {unused:?}, never called"
    );
}

#[tokio::test]
async fn an_aws_error_fails_its_target_only_and_the_next_tick_retries_without_doubling() {
    let s = stage("sa-east-1", "it-errors").await;
    let td = s.moto.task_definition(&unique("api"), 512, 512).await.unwrap();
    s.moto.service(&s.cluster, "api", &td, 2, &[]).await.unwrap();
    // `ghost` is configured and has a policy, but ECS does not know it.
    let path = s.config(&["web", "api", "ghost"], "");
    let t0 = minute(Utc::now());
    for svc in ["web", "api"] {
        s.cpu(svc, t0 - mins(10), t0 + mins(2), 90.0).await;
    }
    s.proxy.fail("ECS.UpdateService", 1, "AccessDenied");
    s.proxy.throttle("AutoScaling.DescribeAutoScalingGroups", 1);
    let (mut w, _) = worker(&path, "it", false).await;

    let r = w.tick(t0).await;
    let failed: Vec<&(ecscale::model::Decision, Applied)> = r
        .services
        .iter()
        .filter(|(_, a)| matches!(a, Applied::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{:#?}", r.services);
    let (d, a) = failed[0];
    let Applied::Failed { kind, error } = a else {
        unreachable!()
    };
    assert_eq!(*kind, ErrorKind::AccessDenied);
    let name = d.target.to_string().rsplit('/').next().unwrap().to_string();
    assert!(
        error.contains("ECS.UpdateService") && error.contains(&format!("/{name}")),
        "{error}"
    );
    let other = if name == "web" { "api" } else { "web" };
    assert_eq!(service(&r, other).1, Applied::Updated { from: 2, to: 4 });
    let problems = r.problems.join("\n");
    assert!(problems.contains("ghost"), "{problems}");
    assert!(
        problems.contains(&format!("asg/{}", s.group)) && problems.contains("Throttl"),
        "{problems}"
    );
    assert_eq!(s.desired(&name).await, 2);
    assert_eq!(s.desired(other).await, 4);
    assert_eq!(w.metrics().actions("service", "failed"), 1);

    // Next tick: the failed one is applied (its cooldown never started); the other one is in
    // its cooldown and not touched again.
    let r = w.tick(t0 + TimeDelta::seconds(30)).await;
    assert_eq!(service(&r, &name).1, Applied::Updated { from: 2, to: 4 });
    assert_eq!(service(&r, other).1, Applied::Unchanged);
    assert_eq!(s.desired(&name).await, 4);
    assert_eq!(s.desired(other).await, 4);
    assert_eq!(
        s.proxy.seen().get("ECS.UpdateService"),
        Some(&3),
        "one failed call, two that worked"
    );
}

/// Mutating calls the worker may make.
const MUTATING: &[&str] = &[
    "ECS.UpdateService",
    "ECS.UpdateContainerInstancesState",
    "AutoScaling.SetDesiredCapacity",
    "AutoScaling.TerminateInstanceInAutoScalingGroup",
    "ApplicationAutoScaling.RegisterScalableTarget",
    "DynamoDB.PutItem",
    "DynamoDB.UpdateItem",
];

#[tokio::test]
async fn dry_run_makes_no_mutating_call() {
    let s = stage("us-west-2", "it-dry").await;
    s.moto.scalable_target(&s.cluster, "web").await.unwrap();
    let path = s.config(&["web"], "  app_autoscaling: take_over\n");
    let t0 = minute(Utc::now());
    s.cpu("web", t0 - mins(10), t0 + mins(2), 90.0).await;
    let before = s.moto.container_instances(&s.cluster).await.unwrap();
    let mut cmd = crate::support::ecscale();
    cmd.args(["--log", "info", "run", "--dry-run", "--ticks", "2", "--config"])
        .arg(&path);
    let (code, _, stderr) = crate::support::run_async(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("dry run: 2 → 4"), "{stderr}");
    assert!(
        stderr.contains("dry run: would suspend Application Auto Scaling"),
        "{stderr}"
    );
    // moto holds what it held.
    assert_eq!(s.desired("web").await, 2);
    assert_eq!(s.group_desired().await, 2);
    assert_eq!(s.moto.container_instances(&s.cluster).await.unwrap(), before);
    assert!(!s.moto.scalable_target_suspended(&s.cluster, "web").await.unwrap());
    // And nothing mutating crossed the wire.
    let seen = s.proxy.seen();
    for op in MUTATING {
        assert_eq!(seen.get(*op), None, "{op} was called in a dry run: {seen:?}");
    }
    assert!(
        seen.get("ECS.DescribeServices").is_some_and(|n| *n >= 2),
        "{seen:?}"
    );
    // The decisions are recorded in the documents; the state (the acting worker's) is not written.
    assert!(!s.dir.path().join("ecscale-state.json").exists());
    let mut spooled = String::new();
    for f in std::fs::read_dir(s.dir.path().join("spool")).unwrap() {
        spooled.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap_or_default());
    }
    let decisions: Vec<serde_json::Value> = spooled
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|d| d["target"] == format!("{}/web", s.cluster) && d["action"].is_string())
        .collect();
    assert_eq!(decisions.len(), 2, "one per tick: {spooled}");
    for d in &decisions {
        assert_eq!(d["applied"], "dry_run", "{d}");
        assert_eq!(d["desired"], 4, "{d}");
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Resets web to 1 every 200 ms until `done` says so (failing after `limit`).
async fn reset_until(s: &Stage, done: &dyn Fn() -> bool, limit: Duration) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} in vain");
        s.moto.set_desired(&s.cluster, "web", 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn two_workers_one_leader_and_a_takeover_within_the_lease() {
    let s = stage("ca-central-1", "it-leader").await;
    let table = unique("ecscale");
    s.moto.table(&table).await.unwrap();
    let proxy_b = Proxy::start(&moto_url()).await;
    let lease = Duration::from_secs(3);
    let port = free_port();
    let section = |id: &str, addr: &str| {
        format!(
            "  metrics_addr: '{addr}'\n  state: {{dynamodb_table: {table}}}\n  leader: {{dynamodb_table: {table}, lease: 3s, id: {id}}}\n"
        )
    };
    // min 3: whenever the test sets web to 1, the leader puts it back to 3 at its next tick.
    let a_path = s.config_named(
        "a.yaml",
        &s.proxy.url,
        &["web"],
        3,
        &section("worker-a", &format!("127.0.0.1:{port}")),
    );
    let b_path = s.config_named("b.yaml", &proxy_b.url, &["web"], 3, &section("worker-b", "off"));
    // `metrics_addr` is set twice in each file otherwise: keep the one from the section.
    for p in [&a_path, &b_path] {
        let text = std::fs::read_to_string(p)
            .unwrap()
            .replacen("  metrics_addr: 'off'\n", "", 1);
        std::fs::write(p, text).unwrap();
    }
    let spawn = |path: &PathBuf, log: &str| {
        let mut cmd = crate::support::ecscale();
        cmd.args(["--log", "info", "run", "--config"]).arg(path);
        let log = std::fs::File::create(s.dir.path().join(log)).unwrap();
        cmd.stderr(log).stdout(std::process::Stdio::null());
        tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let calls = |p: &Proxy| p.seen().get("ECS.UpdateService").copied().unwrap_or(0);

    let mut a = spawn(&a_path, "a.log");
    reset_until(&s, &|| calls(&s.proxy) >= 2, Duration::from_secs(30)).await;
    let mut b = spawn(&b_path, "b.log");
    let follow_from = std::time::Instant::now();
    reset_until(
        &s,
        &|| follow_from.elapsed() > Duration::from_secs(4),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(calls(&proxy_b), 0, "b follows while a leads");
    assert!(
        proxy_b.seen().contains_key("DynamoDB.UpdateItem"),
        "b tries for the lease"
    );

    // a serves its metrics and health.
    let (status, metrics) = get(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(status, 200);
    for line in [
        "ecscale_leader 1",
        "ecscale_actions_total{target_kind=\"service\",result=\"updated\"}",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let (status, health) = get(&format!("http://127.0.0.1:{port}/healthz")).await;
    assert_eq!(status, 200, "{health}");

    // kill -9 the leader: b takes over within the lease (plus its tick).
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let killed = std::time::Instant::now();
    reset_until(&s, &|| calls(&proxy_b) >= 1, Duration::from_secs(20)).await;
    let a_times = s.proxy.times("ECS.UpdateService");
    let b_times = proxy_b.times("ECS.UpdateService");
    let (a_last, b_first) = (*a_times.iter().max().unwrap(), *b_times.iter().min().unwrap());
    assert!(a_last < b_first, "both called UpdateService at once");
    let takeover = b_first.duration_since(killed);
    assert!(
        takeover <= lease + Duration::from_secs(3),
        "b acted {takeover:?} after the kill (lease {lease:?}, tick 1s)"
    );
    assert_eq!(s.desired("web").await, 3);

    // SIGTERM: b finishes, releases the lease (expires = 0) and exits 0.
    let pid = b.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(30), b.wait())
        .await
        .unwrap()
        .unwrap();
    let log = std::fs::read_to_string(s.dir.path().join("b.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    let item = s
        .moto
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("key", aws_sdk_dynamodb::types::AttributeValue::S("leader".into()))
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    assert_eq!(item["holder"].as_s().unwrap(), "worker-b");
    assert_eq!(item["expires"].as_n().unwrap(), "0", "released at shutdown");
    assert!(log.contains("released the leader lease"), "{log}");
}

/// The number after `name` in a Prometheus text page (0 when absent).
fn prometheus_value(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn predictive_history_is_one_long_window_call_per_metric_read_once_per_bucket_and_a_pass_reads_only_what_is_due(
) {
    let s = stage("eu-north-1", "it-history").await;
    let t0 = minute(Utc::now());
    // Two days of two load metrics, every 5 minutes, with a daily shape.
    for (name, scale) in [("Requests", 1.0), ("Orders", 0.1)] {
        let points: Vec<(DateTime<Utc>, f64)> = (1..=576)
            .map(|k| {
                let t = t0 - mins(5 * k);
                let phase = (t.timestamp() % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU;
                (t, scale * (1000.0 + 500.0 * phase.sin()))
            })
            .collect();
        s.moto
            .put_points("App", name, &[("Service", "web")], StandardUnit::Count, &points)
            .await
            .unwrap();
    }
    let rule = |name: &str, metric: &str| {
        format!("  - {{name: {name}, kind: predictive, metric: {metric}, target_per_task: 400, horizon: 10m, bucket: 5m, min_history: 1d, history: 3d}}\n")
    };
    write(
        s.dir.path(),
        "policies.yaml",
        &format!(
            "target: {{cluster: {c}, service: web}}\nmin: 1\nmax: 8\nrules:\n{}{}",
            rule("requests", "requests"),
            rule("orders", "orders"),
            c = s.cluster
        ),
    );
    let path = write(
        s.dir.path(),
        "ecscale.yaml",
        &format!(
            "aws:\n  region: {region}\n  endpoint_url: {url}\n  retry: {{max_attempts: 1}}\nschedule: {{interval: 15s}}\nclusters:\n  - name: {cluster}\n    default_metrics: false\n    services:\n      - name: web\n        metrics:\n          - {{id: requests, namespace: App, metric_name: Requests, stat: Sum, dimensions: {{Service: web}}}}\n          - {{id: orders, namespace: App, metric_name: Orders, stat: Sum, dimensions: {{Service: web}}}}\npolicies: [policies.yaml]\nsink: {{spool: {{dir: spool}}}}\nworker:\n  metrics_addr: 'off'\n",
            region = s.moto.region,
            url = s.proxy.url,
            cluster = s.cluster,
        ),
    );
    let (mut w, _) = worker(&path, "it-h", false).await;
    let on_wire = || {
        s.proxy
            .seen()
            .get("CloudWatch.GetMetricData")
            .copied()
            .unwrap_or(0)
    };
    let counted = |w: &Worker| {
        prometheus_value(
            &w.metrics().render(),
            "ecscale_aws_calls_total{operation=\"CloudWatch.GetMetricData\"}",
        )
    };

    // First tick: the pass's one call (both lookback windows together) and one long-window
    // call per predictive metric; both rules forecast from the two days.
    let r = w.tick(t0).await;
    assert_eq!(on_wire(), 3, "{:?}", s.proxy.seen());
    assert_eq!(counted(&w), 3.0);
    let (d, _) = service(&r, "web");
    for name in ["requests", "orders"] {
        let v = d.votes.iter().find(|v| &*v.rule == name).unwrap();
        assert!(
            v.reason.contains("forecast peak") && v.reason.contains("daily"),
            "{v:?}"
        );
    }
    let metrics_after_one = prometheus_value(
        &w.metrics().render(),
        "ecscale_cloudwatch_metrics_requested_total",
    );
    assert_eq!(
        metrics_after_one, 4.0,
        "2 queries in the pass, 1 in each long call"
    );

    // Within the same minute: the 1-minute metrics have no new period due and the long
    // windows are cached, so no call at all (each datapoint is read once).
    for k in 1..=3 {
        w.tick(t0 + TimeDelta::seconds(15 * k)).await;
    }
    assert_eq!(on_wire(), 3, "{:?}", s.proxy.seen());
    // The next minute: a period is due, one call for both metrics.
    w.tick(t0 + mins(1)).await;
    assert_eq!(on_wire(), 4);
    // A bucket later: the pass's call and the long windows read again, once each.
    let r = w.tick(t0 + mins(5)).await;
    assert_eq!(on_wire(), 7);
    assert_eq!(counted(&w), 7.0);
    assert!(service(&r, "web")
        .0
        .votes
        .iter()
        .all(|v| v.reason.contains("forecast peak")));
}

/// The processes alive (not zombies) in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces, so read after its `)`.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

/// A plugin (a shell script) that starts children and never answers: on its timeout the whole
/// process group goes, and the failure is logged with its target and rule, counted under
/// `ecscale_errors_total{stage="plugin"}` and listed in the tick's problems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_times_out_leaves_no_process_and_is_logged_counted_and_listed() {
    let s = stage("eu-north-1", "it-plugin").await;
    let path = s.config(&["web"], "");
    let script = write(
        s.dir.path(),
        "model.sh",
        "#!/bin/sh\necho $$ > \"$1\"\nsleep 30 &\nsleep 30 | cat\necho '{\"desired\": 9, \"reason\": \"late\"}'\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pidfile = s.dir.path().join("plugin.pid");
    write(
        s.dir.path(),
        "policies.yaml",
        &format!(
            "target: {{cluster: {}, service: web}}\nmin: 1\nmax: 8\nrules:\n  - name: model\n    kind: external\n    command: ['{}', '{}']\n    timeout: 500ms\n",
            s.cluster,
            script.display(),
            pidfile.display()
        ),
    );
    let (mut w, _) = worker(&path, "it-plugin", false).await;
    let r = w.tick(Utc::now()).await;
    let (d, a) = service(&r, "web");
    assert_eq!((d.action, a), (Action::Hold, &Applied::Unchanged), "{}", d.reason);
    let listed: Vec<&String> = r.problems.iter().filter(|p| p.contains("rule model")).collect();
    assert_eq!(listed.len(), 1, "{:?}", r.problems);
    assert!(
        listed[0].contains("gave no answer within 500ms (killed with its process group)"),
        "{}",
        listed[0]
    );
    assert_eq!(w.metrics().errors("plugin"), 1);
    assert!(
        w.metrics()
            .render()
            .contains("ecscale_errors_total{stage=\"plugin\"} 1"),
        "{}",
        w.metrics().render()
    );
    // The script, its background sleep and its pipeline: all gone.
    let pgid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !group_members(pgid).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        group_members(pgid),
        Vec::<u32>::new(),
        "the plugin's group survived"
    );

    // As `ecscale run` logs it, at warn (the default filter), naming the target and the rule.
    let mut cmd = crate::support::ecscale();
    cmd.args(["run", "--dry-run", "--ticks", "1", "--config"])
        .arg(&path);
    let (code, _, stderr) = crate::support::run_async(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("gave no answer"))
        .unwrap_or_else(|| panic!("not logged: {stderr}"));
    assert!(line.contains("WARN") && line.contains("rule=model"), "{line}");
    assert!(line.contains(&format!("{}/web", s.cluster)), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_a_running_worker_and_then_its_state_file() {
    let s = stage("eu-north-1", "it-status").await;
    let port = free_port();
    let path = s.config_named(
        "status.yaml",
        &s.proxy.url,
        &["web"],
        1,
        &format!("  metrics_addr: '127.0.0.1:{port}'\n  state: {{file: state.json}}\n"),
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("  metrics_addr: 'off'\n", "", 1);
    std::fs::write(&path, text).unwrap();
    let t0 = minute(Utc::now());
    s.cpu("web", t0 - mins(15), t0 + mins(10), 90.0).await;
    let mut cmd = crate::support::ecscale();
    cmd.args(["run", "--config"]).arg(&path);
    cmd.stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let mut run = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = |format: &'static str| {
        let mut cmd = crate::support::ecscale();
        cmd.args(["status", "--format", format, "--config"]).arg(&path);
        crate::support::run_async(cmd)
    };
    // Until the worker has scaled web out (2 → 4 at 90 % CPU for a target of 50 %).
    let start = std::time::Instant::now();
    let json = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no scale-out seen in /status"
        );
        let (code, stdout, stderr) = status("json").await;
        if code == 0 {
            let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            if v["targets"][0]["last_action"]["to"] == 4 {
                break v;
            }
        } else {
            assert!(
                stderr.contains("no worker answering") || stderr.is_empty(),
                "{stderr}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let target = format!("{}/web", s.cluster);
    assert_eq!(
        json["source"],
        format!("worker at http://127.0.0.1:{port}/status")
    );
    assert_eq!(json["leader"], true);
    let web = &json["targets"][0];
    assert_eq!(web["target"], target.as_str());
    assert_eq!(
        (web["current"].as_u64(), web["desired"].as_u64()),
        (Some(2), Some(4)),
        "{web}"
    );
    assert!(web["reason"].as_str().unwrap().contains("cpu"), "{web}");
    // The scale-out's 5-minute cooldown holds from the action on.
    let at: DateTime<Utc> = web["last_action"]["at"].as_str().unwrap().parse().unwrap();
    let until: DateTime<Utc> = web["scale_out_cooldown_until"].as_str().unwrap().parse().unwrap();
    assert_eq!(until - at, mins(5), "{web}");
    let (code, table, _) = status("table").await;
    assert_eq!(code, 0);
    assert!(
        table.starts_with(&format!(
            "worker at http://127.0.0.1:{port}/status: leading, last tick "
        )),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&target) && l.contains(&until.format("%H:%M:%S").to_string())),
        "{table}"
    );
    // From its second tick, what CloudWatch costs at the rate measured since the first, with
    // the arithmetic.
    let spend = loop {
        let (_, stdout, _) = status("json").await;
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        if v["cloudwatch"].is_object() {
            break v["cloudwatch"].clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no cloudwatch spend in {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(spend["services"], 1, "{spend}");
    let per_month = spend["usd_per_month"].as_f64().unwrap();
    assert_eq!(
        spend["usd_per_service_month"].as_f64(),
        Some(per_month),
        "{spend}"
    );
    assert!(
        spend["arithmetic"]
            .as_str()
            .unwrap()
            .ends_with(&format!("÷ 1 services = ${per_month:.4} per service")),
        "{spend}"
    );

    // Stopped: the same clocks from the state file, and who said so.
    let pid = run.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .unwrap()
        .unwrap();
    let (code, stdout, stderr) = status("json").await;
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let source = v["source"].as_str().unwrap();
    assert!(
        source.starts_with("file ") && source.contains("state.json (no worker answering: "),
        "{source}"
    );
    let again: DateTime<Utc> = v["targets"][0]["scale_out_cooldown_until"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(again, until);
    assert_eq!(v["targets"][0]["last_action"]["to"], 4);
}

/// `aws.budget.ecs_reads: 5%` (1 call a second, 5 at once, of ECS's read bucket of 20 a second
/// and 100): on the wire, after the first 5, ECS reads come no faster than one a second across
/// ticks; a throttled DescribeServices pauses every ECS read for a second, not only its retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_reads_keep_within_their_budget_and_a_throttle_pauses_the_family() {
    let s = stage("eu-north-1", "it-budget").await;
    let path = s.config(&["web"], "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "retry: {max_attempts: 1}",
        "retry: {max_attempts: 1}\n  budget: {ecs_reads: 5%}",
    );
    std::fs::write(&path, text).unwrap();
    s.proxy.throttle("ECS.DescribeServices", 1);
    let mut cmd = crate::support::ecscale();
    cmd.args(["run", "--dry-run", "--ticks", "4", "--config"])
        .arg(&path);
    let (code, _, stderr) = crate::support::run_async(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    let reads = [
        "ECS.ListServices",
        "ECS.DescribeServices",
        "ECS.DescribeTaskDefinition",
        "ECS.ListContainerInstances",
        "ECS.DescribeContainerInstances",
        "ECS.ListTasks",
        "ECS.DescribeTasks",
    ];
    let mut times: Vec<std::time::Instant> = reads.iter().flat_map(|op| s.proxy.times(op)).collect();
    times.sort();
    assert!(times.len() >= 10, "{:?}", s.proxy.seen());
    for (k, t) in times.iter().enumerate().skip(5) {
        let since = t.duration_since(times[0]).as_secs_f64();
        let least = (k + 1 - 5) as f64 - 0.05;
        assert!(since >= least, "read {k} came {since:.2} s after the first: at 1 a second after a burst of 5, not before {least}");
    }
    // The throttled call, and the next ECS read of any kind: a second apart at least.
    let throttled = s.proxy.times("ECS.DescribeServices")[0];
    let next = times.iter().find(|t| **t > throttled).unwrap();
    let pause = next.duration_since(throttled).as_secs_f64();
    assert!(pause >= 0.95, "the family paused {pause:.2} s after the throttle");
    assert!(
        stderr.contains("Throttling") || stderr.contains("throttled"),
        "{stderr}"
    );
}

/// The DynamoDB state's items say when the table's TTL may delete them (`delete_after`, 30 days
/// after their last write); an item past it (DynamoDB deletes within days, not at once) is not
/// read back, and an unchanged item is not written again on every tick.
#[tokio::test]
async fn dynamodb_state_items_expire_and_an_expired_one_is_not_read_back() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use ecscale::worker::state::{DynamoStore, StateStore, TargetRecord, WorkerState};
    let moto = Moto::new(&moto_url(), "eu-north-1");
    let table = unique("ecscale-ttl");
    moto.table(&table).await.unwrap();
    let store = DynamoStore::new(moto.dynamodb.clone(), &table);
    let mut state = WorkerState::default();
    state.targets.insert("prod/web".into(), TargetRecord::default());
    store.save(&state, None).await.unwrap();
    let item = |key: &str| {
        let (dynamodb, table, key) = (moto.dynamodb.clone(), table.clone(), key.to_string());
        async move {
            dynamodb
                .get_item()
                .table_name(&table)
                .key("key", AttributeValue::S(key))
                .send()
                .await
                .unwrap()
                .item
                .unwrap()
        }
    };
    let web = item("state/target/prod/web").await;
    let after: i64 = web["delete_after"].as_n().unwrap().parse().unwrap();
    let month = Utc::now().timestamp() + 30 * 86_400;
    assert!((month - 60..=month).contains(&after), "{after} vs {month}");
    let written = web["updated_at"].as_s().unwrap().clone();
    store.save(&state, None).await.unwrap();
    assert_eq!(
        item("state/target/prod/web").await["updated_at"].as_s().unwrap(),
        &written,
        "unchanged: not written again"
    );
    // A target gone long ago: its item past its delete_after, not yet deleted by DynamoDB.
    moto.dynamodb
        .put_item()
        .table_name(&table)
        .item("key", AttributeValue::S("state/target/prod/gone".into()))
        .item(
            "body",
            AttributeValue::S(serde_json::to_string(&TargetRecord::default()).unwrap()),
        )
        .item(
            "delete_after",
            AttributeValue::N((Utc::now().timestamp() - 60).to_string()),
        )
        .send()
        .await
        .unwrap();
    let fresh = DynamoStore::new(moto.dynamodb.clone(), &table);
    let loaded = fresh.load().await.unwrap();
    assert_eq!(loaded.targets.keys().collect::<Vec<_>>(), ["prod/web"]);
}
