//! ECS's events decide what a pass reads, against moto's ECS and SQS: an event in the queue
//! makes the next pass describe that service and no other; a change without an event (a lost
//! one) is seen within the reconciliation's bound; the worker's own change is read again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use ecscale::api::{ApiError, Described, EcsApi, Page, TaskInfo};
use ecscale::aws::AwsContext;
use ecscale::collect::events::{Changes, Poller};
use ecscale::collect::Collector;
use ecscale::config::env::Vars;
use ecscale::model::{ContainerInstance, ServiceKey, ServiceState, TaskDefinitionInfo};
use ecscale::usage::ApiMeter;

use crate::support::moto::Moto;
use crate::support::{moto_url, unique, write};
use crate::worker::credentials;

const SERVICES: usize = 30;

/// Moto's ECS, with the services each DescribeServices asked for written down.
struct Recording {
    inner: Arc<dyn EcsApi>,
    described: Mutex<Vec<String>>,
}

impl Recording {
    fn take(&self) -> Vec<String> {
        let mut v = std::mem::take(&mut *self.described.lock().unwrap());
        v.sort();
        v
    }
}

#[async_trait]
impl EcsApi for Recording {
    fn read_allowance(
        &self,
        cluster: &str,
        within: std::time::Duration,
    ) -> Option<ecscale::api::ReadAllowance> {
        self.inner.read_allowance(cluster, within)
    }
    async fn list_services(&self, cluster: &str, t: Option<String>) -> Result<Page<String>, ApiError> {
        self.inner.list_services(cluster, t).await
    }
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Described<ServiceState>, ApiError> {
        self.described.lock().unwrap().extend(services.iter().cloned());
        self.inner.describe_services(cluster, services).await
    }
    async fn describe_task_definition(&self, td: &str) -> Result<TaskDefinitionInfo, ApiError> {
        self.inner.describe_task_definition(td).await
    }
    async fn list_container_instances(&self, c: &str, t: Option<String>) -> Result<Page<String>, ApiError> {
        self.inner.list_container_instances(c, t).await
    }
    async fn describe_container_instances(
        &self,
        c: &str,
        arns: &[String],
    ) -> Result<Described<ContainerInstance>, ApiError> {
        self.inner.describe_container_instances(c, arns).await
    }
    async fn list_tasks(&self, c: &str, t: Option<String>) -> Result<Page<String>, ApiError> {
        self.inner.list_tasks(c, t).await
    }
    async fn describe_tasks(&self, c: &str, arns: &[String]) -> Result<Described<TaskInfo>, ApiError> {
        self.inner.describe_tasks(c, arns).await
    }
}

/// An ECS task state change of `service`'s task, as EventBridge puts it in the queue.
fn task_event(region: &str, cluster: &str, service: &str) -> String {
    serde_json::json!({
        "version": "0", "id": unique("ev"), "detail-type": "ECS Task State Change",
        "source": "aws.ecs", "account": "123456789012", "region": region,
        "resources": [format!("arn:aws:ecs:{region}:123456789012:task/{cluster}/0123")],
        "detail": {
            "clusterArn": format!("arn:aws:ecs:{region}:123456789012:cluster/{cluster}"),
            "group": format!("service:{service}"), "lastStatus": "RUNNING", "desiredStatus": "RUNNING"
        }
    })
    .to_string()
}

/// A cluster of `n` services `svc-00`… at rest (moto starts no tasks, so a service wanting any
/// would be forever in motion), and an SQS queue for its events.
async fn stage(prefix: &str, n: usize) -> (Moto, String, String) {
    credentials();
    let moto = Moto::new(&moto_url(), "me-central-1");
    let cluster = unique(prefix);
    moto.cluster(&cluster).await.unwrap();
    let td = moto.task_definition(&unique("svc"), 256, 512).await.unwrap();
    for i in 0..n {
        moto.service(&cluster, &format!("svc-{i:02}"), &td, 0, &[])
            .await
            .unwrap();
    }
    let queue = moto
        .sqs
        .create_queue()
        .queue_name(unique("ecs-events"))
        .send()
        .await
        .unwrap();
    (moto, cluster, queue.queue_url.unwrap())
}

/// The config of a worker collecting `cluster` with the events in `queue`, ticking every
/// `tick` and reconciling every `reconcile`; its AWS clients, and moto's ECS recorded.
async fn collecting(
    moto: &Moto,
    cluster: &str,
    queue: &str,
    tick: &str,
    reconcile: &str,
) -> (ecscale::config::Config, AwsContext, Arc<Recording>) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "aws: {{region: {region}, endpoint_url: {url}}}\nschedule: {{interval: {tick}}}\ncollect: {{container_instances: false, pending_tasks: false, events: {{queue_url: {queue}, reconcile: {reconcile}}}}}\nclusters:\n  - name: {cluster}\n    discover: {{name_prefix: svc-}}\n",
        region = moto.region,
        url = moto_url()
    );
    let config =
        ecscale::config::load(&write(dir.path(), "ecscale.yaml", &yaml), &Vars::from_pairs([])).unwrap();
    let aws = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .unwrap();
    let recording = Arc::new(Recording {
        inner: Arc::new(aws.ecs.clone()),
        described: Mutex::default(),
    });
    (config, aws, recording)
}

/// A collector reading through `ecs`, and a poller feeding it the events of `queue`.
fn collector_polling(
    config: &ecscale::config::Config,
    aws: &AwsContext,
    ecs: Arc<dyn EcsApi>,
    queue: &str,
) -> (Collector, Poller, Arc<Changes>) {
    let changes = Arc::new(Changes::default());
    let collector = Collector::new(config, ecs, Arc::new(aws.cloudwatch.clone()), aws.meter.clone())
        .with_changes(changes.clone());
    let poller = Poller {
        queue: Arc::new(aws.queue(queue)),
        changes: changes.clone(),
        wait: Duration::from_secs(1),
    };
    (collector, poller, changes)
}

fn desired(s: &ecscale::model::Snapshot, name: &str) -> u32 {
    s.services()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("{name} not in the snapshot"))
        .desired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_reads_its_service_alone_and_the_reconciliation_catches_a_lost_one_within_its_bound() {
    let (moto, cluster, queue) = stage("events", SERVICES).await;
    let region = moto.region.clone();
    let (config, aws, ecs) = collecting(&moto, &cluster, &queue, "20s", "2m").await;
    let (collector, poller, changes) = collector_polling(&config, &aws, ecs.clone(), &queue);
    let t0: DateTime<Utc> = Utc::now();
    let at = |k: i64| t0 + TimeDelta::seconds(20 * k);

    // Pass 0 reads every service.
    let s = collector.collect(at(0)).await;
    assert_eq!(ecs.take().len(), SERVICES);
    assert_eq!(s.services().count(), SERVICES);

    // svc-07 changes with an event; svc-03 changes and its event is lost.
    moto.set_desired(&cluster, "svc-07", 5).await.unwrap();
    moto.set_desired(&cluster, "svc-03", 4).await.unwrap();
    moto.sqs
        .send_message()
        .queue_url(&queue)
        .message_body(task_event(&region, &cluster, "svc-07"))
        .send()
        .await
        .unwrap();
    moto.sqs
        .send_message()
        .queue_url(&queue)
        .message_body("{\"not\": \"an event\"}")
        .send()
        .await
        .unwrap();
    let mut received = 0;
    for _ in 0..5 {
        received += poller.once().await.unwrap();
        if received == 2 {
            break;
        }
    }
    // The queue's calls, as the IAM policy's sqs actions allow them.
    let used = aws.meter.usage();
    assert!(used.calls("SQS.ReceiveMessage") >= 1 && used.calls("SQS.DeleteMessageBatch") >= 1);
    let counts = changes.counts();
    assert_eq!(
        (
            counts.received,
            counts.about_services,
            counts.unreadable,
            counts.deleted
        ),
        (2, 1, 1, 2),
        "{counts:?}"
    );

    // Pass 1, 20 s later: svc-07 for its event, and the reconciliation's turn alone (the 29
    // quiet ones × 20 s ÷ 120 s: 4, the fraction carried); its new count is seen.
    let before = aws.meter.usage();
    let s = collector.collect(at(1)).await;
    let described = ecs.take();
    assert!(described.contains(&"svc-07".to_string()), "{described:?}");
    assert_eq!(desired(&s, "svc-07"), 5);
    let turn = (SERVICES - 1) * 20 / 120;
    assert_eq!(
        described.len(),
        1 + turn,
        "svc-07 and the reconciliation's {turn}: {described:?}"
    );
    assert_eq!(
        aws.meter.usage().since(&before).calls("ECS.DescribeServices"),
        1,
        "five services in one call"
    );

    // The lost change is seen within the 2-minute bound, and every service is read again
    // within it.
    let mut last_read: std::collections::HashMap<String, i64> =
        (0..SERVICES).map(|i| (format!("svc-{i:02}"), 0)).collect();
    last_read.insert("svc-07".into(), 1);
    let mut seen_at = None;
    for k in 2..=12 {
        let s = collector.collect(at(k)).await;
        for n in ecs.take() {
            last_read.insert(n, k);
        }
        if seen_at.is_none() && desired(&s, "svc-03") == 4 {
            seen_at = Some(k);
        }
        for (n, r) in &last_read {
            assert!(
                k - r <= 6,
                "{n} last read at pass {r}, now pass {k}: older than 2 minutes"
            );
        }
    }
    let seen_at = seen_at.expect("the lost change was never seen");
    assert!(seen_at <= 6, "seen at pass {seen_at}, past the 2-minute bound");

    // The worker's own change: read again in the next pass.
    collector.changed(ServiceKey::new(&cluster, "svc-11"));
    collector.collect(at(13)).await;
    assert!(ecs.take().contains(&"svc-11".to_string()));
    let (reads, oldest) = collector.reads(at(13));
    assert!(oldest.unwrap() <= Duration::from_secs(120), "{oldest:?}");
    assert_eq!(reads.new, SERVICES as u64);
    assert!(reads.changed >= 2 && reads.kept > reads.reconciled, "{reads:?}");
}

/// The worker's own change: a policy whose minimum is above the service's count scales it out,
/// and the next tick describes that service again (its count is not the one last read) while
/// the others wait their turn; `/metrics` counts the reads by why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_own_change_is_read_again_in_the_next_tick() {
    use ecscale::worker::{Clients, Parts, RunOptions, Worker};
    let (moto, cluster, queue) = stage("own", 12).await;
    let region = moto.region.clone();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "web.yaml",
        &format!("target: {{cluster: {cluster}, service: svc-05}}\nmin: 3\nmax: 5\nrules:\n  - {{name: cpu, kind: target_tracking, metric: cpu, target: 60}}\n"),
    );
    let yaml = format!(
        "aws: {{region: {region}, endpoint_url: {url}}}\nschedule: {{interval: 20s}}\ncollect: {{container_instances: false, pending_tasks: false, events: {{queue_url: {queue}, reconcile: 10m}}}}\nclusters:\n  - name: {cluster}\n    discover: {{name_prefix: svc-}}\npolicies: [web.yaml]\nworker: {{state: {{file: {state}}}}}\n",
        url = moto_url(),
        state = dir.path().join("state.json").display()
    );
    let path = write(dir.path(), "ecscale.yaml", &yaml);
    let config = ecscale::config::load(&path, &Vars::from_pairs([])).unwrap();
    let policies = ecscale::policy::load_for(&config)
        .unwrap()
        .into_iter()
        .flat_map(|f| f.targets)
        .collect();
    let aws = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .unwrap();
    let clients = Clients::aws(&aws).with_events(&aws, &config.collect);
    assert!(clients.events.is_some());
    let store = ecscale::worker::store(&config, None).unwrap();
    let metrics = Arc::new(ecscale::worker::metrics::Metrics::new(
        aws.meter.clone(),
        Duration::from_secs(60),
    ));
    let parts = Parts {
        store,
        lease: None,
        metrics: metrics.clone(),
        ship: None,
        notify: None,
    };
    let opts = RunOptions::default();
    let mut w = Worker::new(config, policies, clients, parts, &opts)
        .await
        .unwrap();
    let t0 = Utc::now();
    let report = w.tick(t0).await;
    let (d, _) = report
        .services
        .iter()
        .find(|(d, _)| d.target.to_string().ends_with("/svc-05"))
        .expect("a decision for svc-05");
    assert_eq!(d.desired, 3, "{report:#?}");
    let described = moto
        .describe_service(&cluster, "svc-05")
        .await
        .unwrap()
        .desired_count();
    assert_eq!(described, 3);
    assert_eq!(metrics.service_reads("new"), 12);
    w.tick(t0 + TimeDelta::seconds(20)).await;
    // svc-05: changed by the worker (and now in motion: moto starts no task).
    assert_eq!(metrics.service_reads("changed"), 1);
    assert_eq!(
        metrics.service_reads("kept") + metrics.service_reads("reconciled"),
        11
    );
    assert!(metrics
        .render()
        .contains("ecscale_service_reads_total{why=\"changed\"} 1"));
}

/// Sends one task-state event for each of `services`, and reads them all from the queue.
async fn send_events(moto: &Moto, queue: &str, poller: &Poller, cluster: &str, services: &[String]) {
    for s in services {
        moto.sqs
            .send_message()
            .queue_url(queue)
            .message_body(task_event(&moto.region, cluster, s))
            .send()
            .await
            .unwrap();
    }
    let mut received = 0;
    for _ in 0..20 {
        received += poller.once().await.unwrap();
        if received >= services.len() {
            return;
        }
    }
    panic!("{received} of {} events read from the queue", services.len());
}

/// ECS's read budget cannot cover a pass: 25 services changed with events, and the family was
/// just throttled (paused, its tokens gone), so the pass affords one DescribeServices. It reads
/// the 10 nearest their thresholds (the worker's margins), says which it left, and those are
/// the worker's to hold; the next pass, with no new event, reads the nearest of the rest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_the_budget_cannot_cover_reads_the_nearest_threshold_first_and_names_the_rest() {
    use ecscale::aws::budget::{Budget, PacedEcs};
    let (moto, cluster, queue) = stage("budget", SERVICES).await;
    // A 10 s tick: a pass's reads may wait 5 s for the budget.
    let (config, aws, recording) = collecting(&moto, &cluster, &queue, "10s", "10m").await;
    // 5 calls at once, then one every 5 s: one call in a pass's 5 s once the burst is spent.
    let budget = Arc::new(Budget::share(1.0, (0.2, 5.0)));
    let ecs = Arc::new(PacedEcs {
        inner: recording.clone(),
        budget: budget.clone(),
    });
    let (collector, poller, _) = collector_polling(&config, &aws, ecs, &queue);
    let t0: DateTime<Utc> = Utc::now();
    let at = |k: i64| t0 + TimeDelta::seconds(20 * k);
    let names = |r: std::ops::Range<usize>| -> Vec<String> { r.map(|i| format!("svc-{i:02}")).collect() };

    // Pass 0: a ListServices and 3 DescribeServices, within the burst.
    collector.collect(at(0)).await;
    assert_eq!(recording.take().len(), SERVICES);

    // 25 services change; the nearer a threshold the higher their number.
    send_events(&moto, &queue, &poller, &cluster, &names(0..25)).await;
    collector.rank(
        (0..25)
            .map(|i| {
                (
                    ServiceKey::new(&cluster, format!("svc-{i:02}")),
                    0.01 * (24 - i) as f64,
                )
            })
            .collect(),
    );
    // A throttling answer: the whole family pauses (1 s) and its tokens are gone.
    budget.throttled();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Pass 1: one call, the 10 nearest.
    let s = collector.collect(at(1)).await;
    assert_eq!(recording.take(), names(15..25));
    let mut unread: Vec<String> = collector.unread().iter().map(|k| k.service.clone()).collect();
    unread.sort();
    assert_eq!(unread, names(0..15), "held until read");
    let note = s
        .problems
        .iter()
        .find(|p| p.message.contains("read budget"))
        .unwrap_or_else(|| panic!("no word of what was left: {:?}", s.problems));
    assert!(
        note.message.contains("15 services due were left")
            && note
                .message
                .contains(&format!("{cluster}/svc-14, {cluster}/svc-13")),
        "{}",
        note.message
    );
    assert_eq!(collector.reads(at(1)).0.skipped, 15);

    // Pass 2, no new event: one call again, the nearest 10 of the 15 left.
    collector.collect(at(2)).await;
    assert_eq!(recording.take(), names(5..15));
    let mut unread: Vec<String> = collector.unread().iter().map(|k| k.service.clone()).collect();
    unread.sort();
    assert_eq!(unread, names(0..5));
}
