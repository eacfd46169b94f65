//! The collect stage against in-memory fakes of ECS and CloudWatch: batching, paging,
//! discovery, metric windows, call packing and failures, each checked on the calls made.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::api::*;
use crate::config::{env::Vars, load_str, MetricSpec};
use crate::model::*;

fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, h, m, s).unwrap()
}

fn error(op: &str, kind: ErrorKind) -> ApiError {
    ApiError {
        operation: op.into(),
        resource: "test".into(),
        endpoint: "fake".into(),
        kind,
        code: Some("ThrottlingException".into()),
        message: "rate exceeded".into(),
    }
}

fn service(cluster: &str, name: &str, desired: u32, pending: u32) -> ServiceState {
    ServiceState {
        running: desired - pending,
        pending,
        ..ServiceState::steady(cluster, name, desired)
    }
}

/// An ECS that answers from memory and records every call with its argument count.
#[derive(Default)]
struct FakeEcs {
    services: Vec<ServiceState>,
    instances: Vec<ContainerInstance>,
    tasks: Vec<TaskInfo>,
    page_size: usize,
    fail_describe_containing: Option<String>,
    calls: Mutex<Vec<(String, usize)>>,
}

impl FakeEcs {
    fn record(&self, op: &str, n: usize) {
        self.calls.lock().unwrap().push((op.to_string(), n));
    }

    fn calls(&self, op: &str) -> Vec<usize> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, n)| *n)
            .collect()
    }

    fn page<T: Clone>(&self, all: Vec<T>, token: Option<String>) -> Page<T> {
        let size = if self.page_size == 0 { 100 } else { self.page_size };
        let start: usize = token.map_or(0, |t| t.parse().unwrap());
        let end = (start + size).min(all.len());
        Page {
            items: all[start..end].to_vec(),
            next_token: (end < all.len()).then(|| end.to_string()),
        }
    }
}

#[async_trait]
impl EcsApi for FakeEcs {
    async fn list_services(&self, cluster: &str, next: Option<String>) -> Result<Page<String>, ApiError> {
        self.record("ListServices", 0);
        let arns = self
            .services
            .iter()
            .filter(|s| s.cluster == cluster)
            .map(|s| s.arn.clone())
            .collect();
        Ok(self.page(arns, next))
    }

    async fn describe_services(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<Described<ServiceState>, ApiError> {
        assert!(
            names.len() <= DESCRIBE_SERVICES_BATCH,
            "DescribeServices takes at most 10"
        );
        self.record("DescribeServices", names.len());
        if let Some(bad) = &self.fail_describe_containing {
            if names.iter().any(|n| arn_name(n) == bad) {
                return Err(error("ECS.DescribeServices", ErrorKind::Throttled));
            }
        }
        let mut out = Described::default();
        for n in names {
            match self
                .services
                .iter()
                .find(|s| s.cluster == cluster && s.name == arn_name(n))
            {
                Some(s) => out.items.push(s.clone()),
                None => out.failures.push((n.clone(), "MISSING".into())),
            }
        }
        Ok(out)
    }

    async fn describe_task_definition(&self, arn: &str) -> Result<TaskDefinitionInfo, ApiError> {
        self.record("DescribeTaskDefinition", 1);
        Ok(TaskDefinitionInfo {
            arn: arn.into(),
            family: arn_name(arn).into(),
            revision: 1,
            reservation: Resources {
                cpu: 256,
                memory_mib: 512,
            },
        })
    }

    async fn list_container_instances(
        &self,
        cluster: &str,
        next: Option<String>,
    ) -> Result<Page<String>, ApiError> {
        self.record("ListContainerInstances", 0);
        let arns = self
            .instances
            .iter()
            .filter(|i| i.cluster == cluster)
            .map(|i| i.arn.clone())
            .collect();
        Ok(self.page(arns, next))
    }

    async fn describe_container_instances(
        &self,
        _c: &str,
        arns: &[String],
    ) -> Result<Described<ContainerInstance>, ApiError> {
        assert!(arns.len() <= DESCRIBE_BATCH);
        self.record("DescribeContainerInstances", arns.len());
        Ok(Described {
            items: self
                .instances
                .iter()
                .filter(|i| arns.contains(&i.arn))
                .cloned()
                .collect(),
            failures: vec![],
        })
    }

    async fn list_tasks(&self, _c: &str, next: Option<String>) -> Result<Page<String>, ApiError> {
        self.record("ListTasks", 0);
        Ok(self.page(self.tasks.iter().map(|t| t.arn.clone()).collect(), next))
    }

    async fn describe_tasks(&self, _c: &str, arns: &[String]) -> Result<Described<TaskInfo>, ApiError> {
        assert!(arns.len() <= DESCRIBE_BATCH);
        self.record("DescribeTasks", arns.len());
        Ok(Described {
            items: self
                .tasks
                .iter()
                .filter(|t| arns.contains(&t.arn))
                .cloned()
                .collect(),
            failures: vec![],
        })
    }
}

/// A metric: its name and dimensions.
type MetricKey = (String, Vec<(String, String)>);
/// What a GetMetricData call asked: query count, start, end, NextToken.
type RequestLog = Vec<(usize, DateTime<Utc>, DateTime<Utc>, Option<String>)>;

/// A CloudWatch holding datapoints per metric, paging by datapoints.
#[derive(Default)]
struct FakeCloudWatch {
    points: HashMap<MetricKey, Vec<(DateTime<Utc>, f64)>>,
    points_per_page: usize,
    fail: bool,
    requests: Mutex<RequestLog>,
}

#[async_trait]
impl CloudWatchApi for FakeCloudWatch {
    async fn get_metric_data(
        &self,
        req: &MetricDataRequest,
        next: Option<String>,
    ) -> Result<MetricDataPage, ApiError> {
        assert!(req.queries.len() <= METRIC_QUERIES_PER_CALL);
        self.requests
            .lock()
            .unwrap()
            .push((req.queries.len(), req.start, req.end, next.clone()));
        if self.fail {
            return Err(error("CloudWatch.GetMetricData", ErrorKind::Throttled));
        }
        // Every (query, point) in order; a page is a slice of that list.
        let mut flat: Vec<(String, Option<(DateTime<Utc>, f64)>)> = Vec::new();
        for q in &req.queries {
            let key = (q.metric_name.clone(), q.dimensions.clone());
            let pts: Vec<_> = self
                .points
                .get(&key)
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|(t, _)| *t >= req.start && *t < req.end)
                        .collect()
                })
                .unwrap_or_default();
            if pts.is_empty() {
                flat.push((q.id.clone(), None));
            }
            flat.extend(pts.into_iter().map(|p| (q.id.clone(), Some(p))));
        }
        let size = if self.points_per_page == 0 {
            usize::MAX
        } else {
            self.points_per_page
        };
        let start: usize = next.map_or(0, |t| t.parse().unwrap());
        let end = start.saturating_add(size).min(flat.len());
        let mut results: Vec<MetricDataResult> = Vec::new();
        for (id, p) in &flat[start..end] {
            if results.last().is_none_or(|r| &r.id != id) {
                results.push(MetricDataResult {
                    id: id.clone(),
                    status: "Complete".into(),
                    points: vec![],
                    messages: vec![],
                });
            }
            let r = results.last_mut().unwrap();
            r.points.extend(p);
        }
        if end < flat.len() {
            if let Some(r) = results.last_mut() {
                r.status = "PartialData".into();
            }
        }
        Ok(MetricDataPage {
            results,
            next_token: (end < flat.len()).then(|| end.to_string()),
            messages: vec![],
        })
    }
}

fn config(yaml: &str) -> crate::config::Config {
    load_str(yaml, "test.yaml", Path::new("."), &Vars::default()).unwrap_or_else(|d| panic!("{d}"))
}

fn collector(yaml: &str, ecs: FakeEcs, cw: FakeCloudWatch) -> (Collector, Arc<FakeEcs>, Arc<FakeCloudWatch>) {
    let ecs = Arc::new(ecs);
    let cw = Arc::new(cw);
    let c = Collector::new(&config(yaml), ecs.clone(), cw.clone(), ApiMeter::default());
    (c, ecs, cw)
}

fn cpu_key(cluster: &str, service: &str) -> MetricKey {
    (
        "CPUUtilization".into(),
        vec![
            ("ClusterName".into(), cluster.into()),
            ("ServiceName".into(), service.into()),
        ],
    )
}

#[tokio::test]
async fn named_services_are_described_ten_at_a_time_in_config_order() {
    let names: Vec<String> = (0..25).map(|i| format!("svc-{i:02}")).collect();
    let ecs = FakeEcs {
        services: names.iter().rev().map(|n| service("prod", n, 2, 0)).collect(),
        ..FakeEcs::default()
    };
    let yaml = format!(
        "schedule: {{interval: 30s}}\ncollect: {{container_instances: false}}\nclusters:\n  - name: prod\n    services: [{}]\n",
        names.join(", ")
    );
    let (c, ecs, _) = collector(&yaml, ecs, FakeCloudWatch::default());
    let snap = c.collect(t(12, 0, 0)).await;
    assert_eq!(ecs.calls("DescribeServices"), vec![10, 10, 5]);
    assert!(
        ecs.calls("ListServices").is_empty(),
        "named services need no listing"
    );
    let got: Vec<&str> = snap.services().map(|s| s.name.as_str()).collect();
    assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(snap.services().all(|s| s.task_reservation
        == Some(Resources {
            cpu: 256,
            memory_mib: 512
        })));
    assert_eq!(ecs.calls("DescribeTaskDefinition").len(), 25);
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);

    // Task definitions are immutable: the second pass reads none.
    c.collect(t(12, 0, 30)).await;
    assert_eq!(ecs.calls("DescribeTaskDefinition").len(), 25);
    assert_eq!(ecs.calls("DescribeServices").len(), 6);
}

#[tokio::test]
async fn discovery_pages_filters_by_prefix_tags_and_status_and_reports_missing_names() {
    let mut services = vec![
        service("prod", "web", 2, 0),
        service("prod", "batch-a", 1, 0),
        service("prod", "batch-b", 1, 0),
        service("prod", "batch-c", 1, 0),
        service("prod", "other", 1, 0),
    ];
    services[1].tags.insert("team".into(), "payments".into());
    services[2].tags.insert("team".into(), "search".into());
    services[3].tags.insert("team".into(), "payments".into());
    services[3].status = "DRAINING".into();
    let ecs = FakeEcs {
        services,
        page_size: 2,
        ..FakeEcs::default()
    };
    let yaml = "schedule: {interval: 30s}\nclusters:\n  - name: prod\n    services: [web, ghost]\n    discover: {name_prefix: batch-, tags: {team: payments}}\n";
    let (c, ecs, _) = collector(yaml, ecs, FakeCloudWatch::default());
    let snap = c.collect(t(12, 0, 0)).await;
    let got: Vec<&str> = snap.services().map(|s| s.name.as_str()).collect();
    assert_eq!(got, ["web", "batch-a"]);
    assert_eq!(ecs.calls("ListServices").len(), 3, "5 services in pages of 2");
    // web, ghost, and the 3 prefixed ones: one call.
    assert_eq!(ecs.calls("DescribeServices"), vec![5]);
    assert_eq!(snap.problems.len(), 1);
    assert_eq!(snap.problems[0].scope, "prod/ghost");
    assert!(
        snap.problems[0].message.contains("MISSING"),
        "{}",
        snap.problems[0]
    );
}

#[tokio::test]
async fn a_failed_batch_is_a_problem_for_its_services_only() {
    let names: Vec<String> = (0..12).map(|i| format!("s{i:02}")).collect();
    let ecs = FakeEcs {
        services: names.iter().map(|n| service("prod", n, 1, 0)).collect(),
        fail_describe_containing: Some("s11".into()),
        ..FakeEcs::default()
    };
    let yaml = format!(
        "schedule: {{interval: 30s}}\nclusters:\n  - name: prod\n    services: [{}]\n",
        names.join(", ")
    );
    let (c, _, _) = collector(&yaml, ecs, FakeCloudWatch::default());
    let snap = c.collect(t(12, 0, 0)).await;
    assert_eq!(snap.services().count(), 10);
    let scopes: Vec<&str> = snap.problems.iter().map(|p| p.scope.as_str()).collect();
    assert_eq!(scopes, ["prod/s10", "prod/s11"]);
    assert!(snap.problems[0].message.contains("ThrottlingException"));
}

#[tokio::test]
async fn metric_windows_skip_incomplete_periods_and_pages_are_merged() {
    let mut cw = FakeCloudWatch {
        points_per_page: 3,
        ..FakeCloudWatch::default()
    };
    // now = 12:10:30, delay 60s: a period must have ended by 12:09:30. The 12:08 one ended at
    // 12:09 and is kept; the 12:09 one ends at 12:10 and is not complete yet.
    let pts = |v: f64| {
        vec![
            (t(11, 50, 0), v), // older than the 15 min lookback: dropped
            (t(12, 6, 0), v + 6.0),
            (t(12, 7, 0), v + 7.0),
            (t(12, 8, 0), v + 8.0),
            (t(12, 9, 0), v + 9.0), // incomplete: dropped
        ]
    };
    cw.points.insert(cpu_key("prod", "a"), pts(10.0));
    cw.points.insert(cpu_key("prod", "b"), pts(20.0));
    let ecs = FakeEcs {
        services: vec![service("prod", "a", 1, 0), service("prod", "b", 1, 0)],
        ..FakeEcs::default()
    };
    let yaml = "schedule: {interval: 30s}\ncollect: {delay: 60s, lookback: 15m}\nclusters:\n  - name: prod\n    services: [a, b]\n";
    let (c, _, cw) = collector(yaml, ecs, cw);
    let snap = c.collect(t(12, 10, 30)).await;
    let cpu_a = snap
        .series
        .iter()
        .find(|s| s.service == "a" && s.id == "cpu")
        .unwrap();
    let values: Vec<(String, f64)> = cpu_a
        .samples
        .iter()
        .map(|s| (s.timestamp.format("%H:%M").to_string(), s.value))
        .collect();
    assert_eq!(
        values,
        [
            ("12:06".into(), 16.0),
            ("12:07".into(), 17.0),
            ("12:08".into(), 18.0)
        ]
    );
    assert_eq!(cpu_a.status, "Complete");
    assert_eq!(cpu_a.unit.as_deref(), Some("Percent"));
    let cpu_b = snap
        .series
        .iter()
        .find(|s| s.service == "b" && s.id == "cpu")
        .unwrap();
    assert_eq!(cpu_b.latest().map(|s| s.value), Some(28.0));
    let mem_b = snap
        .series
        .iter()
        .find(|s| s.service == "b" && s.id == "memory")
        .unwrap();
    assert!(mem_b.samples.is_empty());

    // One call (4 queries) over 11:54..12:09: 3 + 3 points and 2 empty results, 3 per page.
    let reqs = cw.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3);
    assert!(reqs
        .iter()
        .all(|(n, start, end, _)| *n == 4 && *start == t(11, 54, 0) && *end == t(12, 9, 0)));
    assert_eq!(
        reqs[1].3.as_deref(),
        Some("3"),
        "the second page asks with the NextToken"
    );
    // Metrics requested are billed per call made, pages included.
    assert_eq!(snap.usage.cloudwatch_metrics_requested, 12);
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
}

#[tokio::test]
async fn a_failed_metric_call_leaves_series_marked_and_one_problem() {
    let ecs = FakeEcs {
        services: vec![service("prod", "a", 1, 0)],
        ..FakeEcs::default()
    };
    let cw = FakeCloudWatch {
        fail: true,
        ..FakeCloudWatch::default()
    };
    let (c, _, _) = collector(
        "schedule: {interval: 30s}\nclusters:\n  - name: prod\n    services: [a]\n",
        ecs,
        cw,
    );
    let snap = c.collect(t(12, 0, 0)).await;
    assert_eq!(snap.series.len(), 2);
    assert!(snap
        .series
        .iter()
        .all(|s| s.status == "Error:throttled" && s.samples.is_empty()));
    assert_eq!(snap.problems.len(), 1);
    assert_eq!(snap.problems[0].scope, "cloudwatch");
    assert!(snap.problems[0].message.starts_with("2 series not collected"));
    assert_eq!(
        snap.usage.cloudwatch_metrics_requested, 0,
        "a failed call is not billed"
    );
}

#[tokio::test]
async fn pending_tasks_are_listed_only_when_ecs_reports_some() {
    let task = |arn: &str, status: &str, cpu: Option<u32>| TaskInfo {
        arn: arn.into(),
        group: Some("service:a".into()),
        last_status: status.into(),
        task_definition: "arn:aws:ecs:us-east-1:1:task-definition/a:1".into(),
        cpu,
        memory_mib: cpu.map(|c| c * 2),
        container_instance: None,
        created_at: None,
    };
    let tasks = vec![
        task("t1", "RUNNING", Some(256)),
        task("t2", "PENDING", Some(1024)),
        task("t3", "PROVISIONING", None),
    ];
    let yaml = "schedule: {interval: 30s}\nclusters:\n  - name: prod\n    services: [a]\n";

    let quiet = FakeEcs {
        services: vec![service("prod", "a", 3, 0)],
        tasks: tasks.clone(),
        ..FakeEcs::default()
    };
    let (c, ecs, _) = collector(yaml, quiet, FakeCloudWatch::default());
    let snap = c.collect(t(12, 0, 0)).await;
    assert!(ecs.calls("ListTasks").is_empty());
    assert!(snap.clusters[0].pending_tasks.is_empty());

    let busy = FakeEcs {
        services: vec![service("prod", "a", 3, 2)],
        tasks,
        ..FakeEcs::default()
    };
    let (c, ecs, _) = collector(yaml, busy, FakeCloudWatch::default());
    let snap = c.collect(t(12, 0, 0)).await;
    assert_eq!(ecs.calls("DescribeTasks"), vec![3]);
    let pending: Vec<(&str, &str, Option<Resources>, Option<&str>)> = snap.clusters[0]
        .pending_tasks
        .iter()
        .map(|p| {
            (
                p.arn.as_str(),
                p.last_status.as_str(),
                p.reservation,
                p.service.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        pending,
        [
            (
                "t2",
                "PENDING",
                Some(Resources {
                    cpu: 1024,
                    memory_mib: 2048
                }),
                Some("a")
            ),
            // No task-level size: the task definition's.
            (
                "t3",
                "PROVISIONING",
                Some(Resources {
                    cpu: 256,
                    memory_mib: 512
                }),
                Some("a")
            ),
        ]
    );
}

#[tokio::test]
async fn container_instances_are_listed_and_described_in_hundreds() {
    let instances: Vec<ContainerInstance> = (0..150)
        .map(|i| ContainerInstance {
            cluster: "prod".into(),
            arn: format!("ci-{i}"),
            ec2_instance_id: Some(format!("i-{i}")),
            instance_type: Some("m5.large".into()),
            status: "ACTIVE".into(),
            agent_connected: true,
            registered: Resources {
                cpu: 2048,
                memory_mib: 7680,
            },
            remaining: Resources {
                cpu: 1024,
                memory_mib: 4096,
            },
            running_tasks: 4,
            pending_tasks: 0,
            capacity_provider: None,
            registered_at: None,
            attributes: Default::default(),
        })
        .collect();
    let ecs = FakeEcs {
        services: vec![service("prod", "a", 1, 0)],
        instances,
        ..FakeEcs::default()
    };
    let (c, ecs, _) = collector(
        "schedule: {interval: 30s}\nclusters:\n  - name: prod\n    services: [a]\n",
        ecs,
        FakeCloudWatch::default(),
    );
    let snap = c.collect(t(12, 0, 0)).await;
    assert_eq!(ecs.calls("ListContainerInstances").len(), 2);
    assert_eq!(ecs.calls("DescribeContainerInstances"), vec![100, 50]);
    assert_eq!(snap.clusters[0].container_instances.len(), 150);
}

fn metric(id: &str, name: &str, period: u64) -> ResolvedMetric {
    ResolvedMetric {
        key: ServiceKey::new("prod", "a"),
        spec: MetricSpec {
            id: id.into(),
            namespace: "N".into(),
            metric_name: name.into(),
            dimensions: BTreeMap::new(),
            stat: "Average".into(),
            period: Duration::from_secs(period),
            delay: Duration::from_secs(60),
            unit: None,
            unit_filter: false,
            per_task: false,
            prometheus: None,
        }
        .into(),
    }
}

#[test]
fn calls_hold_at_most_500_queries() {
    let metrics: Vec<ResolvedMetric> = (0..1201)
        .map(|i| metric(&format!("m{i}"), &format!("M{i}"), 60))
        .collect();
    let p = plan(t(12, 0, 0), metrics, Duration::from_secs(900));
    let sizes: Vec<usize> = p.requests.iter().map(|r| r.queries.len()).collect();
    assert_eq!(sizes, [500, 500, 201]);
    let ids: std::collections::HashSet<&str> = p
        .requests
        .iter()
        .flat_map(|r| r.queries.iter().map(|q| q.id.as_str()))
        .collect();
    assert_eq!(ids.len(), 1201, "query ids are unique across the pass");
}

#[test]
fn calls_hold_at_most_100800_datapoints() {
    // A day of 1-minute datapoints is 1,441 per query: 69 fit in a call.
    let metrics: Vec<ResolvedMetric> = (0..100).map(|i| metric(&format!("m{i}"), "M", 60)).collect();
    let p = plan(t(12, 0, 0), metrics, Duration::from_secs(86_400));
    let sizes: Vec<usize> = p.requests.iter().map(|r| r.queries.len()).collect();
    assert_eq!(sizes, [69, 31]);
}

#[test]
fn periods_share_a_call_when_they_divide_an_hour() {
    let now = t(12, 7, 10);
    let p = plan(
        now,
        vec![metric("a", "A", 60), metric("b", "B", 300), metric("c", "C", 420)],
        Duration::from_secs(3600),
    );
    assert_eq!(p.requests.len(), 1, "60, 300 and 420 s align on 2,100 s");
    let p = plan(
        now,
        vec![
            metric("a", "A", 60),
            metric("b", "B", 3600),
            metric("c", "C", 420),
        ],
        Duration::from_secs(7200),
    );
    assert_eq!(
        p.requests.len(),
        3,
        "lcm(3600, 420) is over an hour: one call per period"
    );
    for r in &p.requests {
        let period = r.queries[0].period_secs as i64;
        assert_eq!(r.start.timestamp() % period, 0, "each call starts on its period");
    }
}

#[test]
fn windows_follow_each_metrics_delay_and_period() {
    let mut slow = metric("slow", "S", 300);
    std::sync::Arc::make_mut(&mut slow.spec).delay = Duration::from_secs(180);
    let p = plan(
        t(12, 10, 30),
        vec![metric("fast", "F", 60), slow],
        Duration::from_secs(900),
    );
    let w: Vec<(String, String)> = p
        .series
        .iter()
        .map(|s| {
            (
                s.from.format("%H:%M").to_string(),
                s.until.format("%H:%M").to_string(),
            )
        })
        .collect();
    // fast: complete until 12:09:30 → periods starting before 12:09. slow: until 12:07:30 →
    // 5-minute periods starting before 12:05.
    assert_eq!(
        w,
        [
            ("11:54".to_string(), "12:09".to_string()),
            ("11:50".into(), "12:05".into())
        ]
    );
}

#[test]
fn service_metrics_merge_defaults_cluster_and_own_and_fill_placeholders() {
    let cfg = config(
        "schedule: {interval: 30s}
clusters:
  - name: prod
    metrics:
      - {id: errors, namespace: App, metric_name: Errors, dimensions: {Svc: '${service}', C: '${cluster}'}}
      - {id: tg_only, namespace: App, metric_name: X, dimensions: {TG: '${target_group}'}}
    services:
      - name: web
        load_balancer: app/alb/1
        target_group: targetgroup/web/2
        metrics:
          - {id: cpu, namespace: Custom, metric_name: CPU, stat: p95}
      - name: bare
        default_metrics: false
",
    );
    let cluster = &cfg.clusters[0];
    let web = service("prod", "web", 1, 0);
    let (m, problems) = metrics_for(cluster, Some(&cluster.services[0]), &web, &cfg.collect);
    assert!(problems.is_empty());
    let ids: Vec<&str> = m.iter().map(|r| r.spec.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "cpu",
            "memory",
            "request_count_per_target",
            "request_count",
            "target_response_time",
            "errors",
            "tg_only"
        ]
    );
    // Loads per task are read over the tasks that carried them; totals and custom metrics are not.
    let per_task: Vec<bool> = m.iter().map(|r| r.spec.per_task).collect();
    assert_eq!(per_task, [false, true, true, false, false, false, false]);
    assert_eq!(
        (m[0].spec.namespace.as_str(), m[0].spec.stat.as_str()),
        ("Custom", "p95")
    );
    let dims = |i: usize| {
        m[i].spec
            .dimensions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(dims(2), "LoadBalancer=app/alb/1,TargetGroup=targetgroup/web/2");
    assert_eq!(dims(3), "LoadBalancer=app/alb/1,TargetGroup=targetgroup/web/2");
    assert_eq!(dims(5), "C=prod,Svc=web");
    assert_eq!(dims(6), "TG=targetgroup/web/2");

    // No target group configured, none attached: the ALB metric is skipped, with a problem.
    let bare = service("prod", "bare", 1, 0);
    let (m, problems) = metrics_for(cluster, Some(&cluster.services[1]), &bare, &cfg.collect);
    assert_eq!(
        m.iter().map(|r| r.spec.id.as_str()).collect::<Vec<_>>(),
        ["errors"]
    );
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("${target_group}"), "{}", problems[0]);

    // A discovered service with a target group attached in ECS gets RequestCountPerTarget.
    let mut found = service("prod", "api", 1, 0);
    found.load_balancers.push(LoadBalancerRef {
        target_group_arn: Some("arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/api/3".into()),
        container_name: None,
        container_port: None,
    });
    let (m, problems) = metrics_for(cluster, None, &found, &cfg.collect);
    assert!(problems.is_empty());
    let rcpt = m
        .iter()
        .find(|r| r.spec.id == "request_count_per_target")
        .unwrap();
    assert_eq!(rcpt.spec.dimensions["TargetGroup"], "targetgroup/api/3");
    assert!(
        !m.iter().any(|r| r.spec.id == "target_response_time"),
        "needs a load balancer"
    );
}

#[tokio::test]
async fn each_series_is_trimmed_to_its_own_delay_within_a_shared_call() {
    let mut cw = FakeCloudWatch::default();
    let points: Vec<(DateTime<Utc>, f64)> = (0..12).map(|m| (t(12, m, 0), m as f64)).collect();
    cw.points.insert(cpu_key("prod", "a"), points.clone());
    cw.points
        .insert(("Depth".into(), vec![("Queue".into(), "jobs".into())]), points);
    let ecs = FakeEcs {
        services: vec![service("prod", "a", 1, 0)],
        ..FakeEcs::default()
    };
    let yaml = "schedule: {interval: 30s}
collect: {delay: 60s, lookback: 5m}
clusters:
  - name: prod
    services:
      - name: a
        metrics:
          - {id: depth, namespace: AWS/SQS, metric_name: Depth, dimensions: {Queue: jobs}, delay: 3m}
";
    let (c, _, cw) = collector(yaml, ecs, cw);
    let snap = c.collect(t(12, 10, 30)).await;
    assert_eq!(cw.requests.lock().unwrap().len(), 1, "both delays share one call");
    let minutes = |id: &str| -> Vec<u32> {
        let s = snap.series.iter().find(|s| s.id == id).unwrap();
        s.samples.iter().map(|p| p.value as u32).collect()
    };
    // cpu: complete by 12:09:30 → 12:04..12:08. depth: complete by 12:07:30 → 12:02..12:06.
    assert_eq!(minutes("cpu"), [4, 5, 6, 7, 8]);
    assert_eq!(minutes("depth"), [2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn clusters_and_services_may_be_given_by_arn() {
    let cluster_arn = "arn:aws:ecs:us-east-1:1:cluster/prod";
    let mut web = service(cluster_arn, "web", 2, 0);
    web.arn = "arn:aws:ecs:us-east-1:1:service/prod/web".into();
    let ecs = FakeEcs {
        services: vec![web, service(cluster_arn, "api", 1, 0)],
        ..FakeEcs::default()
    };
    let yaml = format!(
        "schedule: {{interval: 30s}}\nclusters:\n  - name: '{cluster_arn}'\n    services: ['arn:aws:ecs:us-east-1:1:service/prod/web', api]\n"
    );
    let (c, _, cw) = collector(&yaml, ecs, FakeCloudWatch::default());
    let snap = c.collect(t(12, 0, 0)).await;
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    let names: Vec<&str> = snap.services().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "api"]);
    // CloudWatch's ClusterName dimension is the cluster's name, not its ARN.
    let cpu = snap
        .series
        .iter()
        .find(|s| s.service == "web" && s.id == "cpu")
        .unwrap();
    assert_eq!(cpu.dimensions["ClusterName"], "prod");
    assert_eq!(cw.requests.lock().unwrap().len(), 1);
}
