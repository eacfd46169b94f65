//! Dashboards: the saved objects as shipped, checked offline; every visualization's search run
//! against OpenSearch with seeded data returns buckets; install goes through the import API.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ecscale::config::{OnFull, SinkSettings, SpoolSettings};
use ecscale::dashboards::{check, ndjson, saved_objects, search_body};
use ecscale::model::*;
use ecscale::ship::docs::{decision_doc, snapshot_docs, stress_doc, target_docs};
use ecscale::ship::Shipper;
use serde_json::Value;

use crate::support::{ecscale, es_url, repo, run, unique, write};

#[test]
fn the_shipped_file_is_the_generated_one_and_checks_clean() {
    let shipped = std::fs::read_to_string(repo().join("dashboards/ecscale.ndjson")).unwrap();
    assert_eq!(
        shipped,
        ndjson("ecscale"),
        "run `ecscale dashboards export` after changing the definitions"
    );
    let report = check(&shipped);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let counts: Vec<(&str, usize)> = report.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        counts,
        [
            ("dashboard", 1),
            ("index-pattern", 4),
            ("search", 1),
            ("visualization", 8)
        ]
    );
    let (code, stdout, stderr) = run(ecscale().args(["dashboards", "check"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("dashboards/ecscale.ndjson: 1 dashboard, 4 index-pattern, 1 search, 8 visualization"),
        "{stdout}"
    );
}

#[test]
fn check_finds_every_broken_line_reference_and_field() {
    let mut lines: Vec<String> = ndjson("ecscale").lines().map(str::to_string).collect();
    let replace = |lines: &mut Vec<String>, id: &str, from: &str, to: &str| {
        let l = lines
            .iter_mut()
            .find(|l| l.contains(&format!("\"id\":\"{id}\"")))
            .unwrap();
        assert!(l.contains(from), "{from} in {id}");
        *l = l.replacen(from, to, 1);
    };
    replace(
        &mut lines,
        "ecscale-task-counts",
        r#"\"field\":\"running\""#,
        r#"\"field\":\"runing\""#,
    );
    replace(
        &mut lines,
        "ecscale-capacity",
        r#"\"field\":\"cluster\""#,
        r#"\"field\":\"cpu_reserved\""#,
    );
    replace(
        &mut lines,
        "ecscale-overview",
        r#""id":"ecscale-stress-latency""#,
        r#""id":"ecscale-gone""#,
    );
    lines.push("{not json".into());
    let last = lines.len();
    let report = check(&lines.join("\n"));
    let msgs: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    assert!(
        msgs.iter().any(|m| m.contains(
            "(ecscale-task-counts): aggregation 2 (max): no field `runing` in the metrics mappings"
        )),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter().any(|m| m
            .contains("(ecscale-capacity): aggregation 6 (terms): `cpu_reserved` is a long, not keyword")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains(
            "(ecscale-overview): reference `panel_8` to visualization `ecscale-gone` resolves to nothing"
        )),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with(&format!("line {last} (?): not JSON"))),
        "{msgs:#?}"
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "broken.ndjson", &lines.join("\n"));
    let (code, _, stderr) = run(ecscale().args(["dashboards", "check"]).arg(dir.path()));
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("broken.ndjson:{last}: not JSON")),
        "{stderr}"
    );
    assert!(stderr.contains("4 problems in the saved objects"), "{stderr}");
}

fn series(cluster: &str, service: &str, id: &str, now: DateTime<Utc>, base: f64) -> Series {
    Series {
        cluster: cluster.into(),
        service: service.into(),
        id: id.into(),
        namespace: "AWS/ECS".into(),
        metric_name: if id == "cpu" {
            "CPUUtilization"
        } else {
            "MemoryUtilization"
        }
        .into(),
        dimensions: BTreeMap::from([
            ("ClusterName".into(), cluster.into()),
            ("ServiceName".into(), service.into()),
        ]),
        stat: "Average".into(),
        period_secs: 60,
        unit: Some("Percent".into()),
        status: "Complete".into(),
        per_task: false,
        history: None,
        complete_until: now,
        samples: (1..=10)
            .map(|k| Sample {
                timestamp: now - TimeDelta::minutes(k),
                value: base + k as f64,
            })
            .collect(),
    }
}

fn service(cluster: &str, name: &str, desired: u32) -> ServiceState {
    ServiceState {
        running: desired - 1,
        pending: 1,
        task_definition: "web:1".into(),
        task_reservation: Some(Resources {
            cpu: 256,
            memory_mib: 512,
        }),
        ..ServiceState::steady(cluster, name, desired)
    }
}

/// Metrics, services, capacity, usage, CloudWatch spend, targets, decisions and a stress run, a
/// few minutes' worth.
async fn seed(prefix: &str, es: &str) {
    let now = Utc::now();
    let dir = tempfile::tempdir().unwrap();
    let mut es_settings = ecscale::config::ElasticsearchSettings::new(es);
    es_settings.replicas = 0;
    let shipper = Shipper::start(&SinkSettings {
        index_prefix: prefix.into(),
        elasticsearch: Some(es_settings),
        spool: SpoolSettings {
            dir: dir.path().into(),
            max_bytes: 1 << 30,
            on_full: OnFull::Block,
        },
    })
    .unwrap();
    let mut docs = Vec::new();
    for minute in 0..5 {
        let at = now - TimeDelta::minutes(minute);
        let instance = ContainerInstance {
            cluster: "prod".into(),
            arn: "ci-1".into(),
            ec2_instance_id: Some("i-1".into()),
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
        };
        let mut usage = ecscale::usage::ApiUsage::default();
        usage.operations.insert(
            "ECS.DescribeServices".into(),
            ecscale::usage::OpCount {
                calls: 3,
                attempts: 4,
                failed_attempts: 1,
            },
        );
        usage.cloudwatch_metrics_requested = 100;
        usage.cloudwatch_cost_usd = 0.001;
        let snapshot = Snapshot {
            taken_at: at,
            clusters: vec![ClusterSnapshot {
                name: "prod".into(),
                services: vec![service("prod", "web", 4), service("prod", "api", 2)],
                container_instances: vec![instance],
                pending_tasks: vec![],
            }],
            series: vec![
                series("prod", "web", "cpu", at, 50.0),
                series("prod", "web", "memory", at, 30.0),
                series("prod", "api", "cpu", at, 70.0),
            ],
            usage,
            problems: vec![],
        };
        docs.extend(snapshot_docs(&snapshot, &|_| None));
        let spend =
            ecscale::worker::status::spend(100 * (5 - minute as u64), now - TimeDelta::minutes(5), at, 2)
                .expect("time has passed");
        docs.push(spend.doc(at));
        let policy = ecscale::policy::load_str(
            "target: {cluster: prod, service: web}\nmin: 1\nmax: 9\nrules:\n  - {kind: target_tracking, metric: cpu, target: 60}\n  - {name: mem, kind: target_tracking, metric: memory, target: 70}\n",
            "p.yaml",
            std::path::Path::new("."),
        )
        .unwrap()
        .remove(0);
        docs.extend(target_docs(&policy, at));
        docs.push(decision_doc(
            &Decision {
                target: TargetKey::service("prod", "web"),
                at,
                current: 4,
                running: 4,
                desired: 5 + minute as u32,
                action: Action::ScaleOut,
                min: 1,
                max: 9,
                rule: Some("target_tracking".into()),
                reason: "cpu 80 > target 60 (+10%) for 2/2 datapoints → 4 → 6".into(),
                recommendation: 6,
                inputs: BTreeMap::from([("cpu".into(), 80.0)]),
                votes: vec![Vote {
                    rule: "target_tracking".into(),
                    kind: "target_tracking".into(),
                    status: ecscale::model::VoteStatus::Wants,
                    wants: Some(6),
                    reason: "cpu 80".into(),
                }],
            },
            None,
        ));
    }
    for s in 0..30 {
        let p = Percentiles {
            p50: 12.0 + s as f64,
            p90: 30.0,
            p95: 40.0,
            p99: 80.0,
            max: 120.0,
        };
        docs.push(stress_doc(&StressSample {
            run_id: "run-1".into(),
            at: now - TimeDelta::seconds(s),
            phase: "ramp".into(),
            rate_planned: 200.0,
            rate_achieved: 199.0,
            requests: 199,
            errors: 1,
            errors_by_kind: BTreeMap::from([("timeout".into(), 1)]),
            latency_ms: p,
            service_time_ms: p,
            task_count: Some(4),
        }));
    }
    shipper.ship(&docs).await.unwrap();
    let stats = shipper.close(Duration::from_secs(60)).await;
    assert_eq!(
        (stats.delivered, stats.dead_lettered),
        (docs.len() as u64, 0),
        "{stats:?}"
    );
    reqwest::Client::new()
        .post(format!("{es}/{prefix}-*/_refresh"))
        .send()
        .await
        .unwrap();
}

/// Whether an aggregation answer has buckets all the way down, with a metric value somewhere.
fn has_data(aggs: &Value) -> bool {
    let Some(map) = aggs.as_object() else { return false };
    map.iter().any(|(k, v)| {
        if k == "doc_count" || k == "key" || k == "key_as_string" {
            return false;
        }
        if let Some(value) = v.get("value") {
            return !value.is_null();
        }
        let buckets: Vec<&Value> = match &v["buckets"] {
            Value::Array(a) => a.iter().collect(),
            Value::Object(o) => o.values().collect(),
            _ => return false,
        };
        buckets.iter().any(|b| {
            b["doc_count"].as_u64().unwrap_or(0) > 0
                && (has_data(b)
                    || b.as_object().is_some_and(|o| {
                        o.keys()
                            .all(|k| k == "doc_count" || k == "key" || k == "key_as_string")
                    }))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_visualization_returns_buckets_from_seeded_data() {
    let es = es_url();
    let prefix = unique("it-dash").to_lowercase();
    seed(&prefix, &es).await;
    let objects = saved_objects(&prefix);
    let mut checked = 0;
    for o in objects
        .iter()
        .filter(|o| o["type"] == "visualization" || o["type"] == "search")
    {
        let id = o["id"].as_str().unwrap();
        let (index, body) = search_body(&objects, id).unwrap();
        let answer: Value = reqwest::Client::new()
            .post(format!("{es}/{index}/_search"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer["error"].is_null(), "{id}: {answer}");
        if o["type"] == "search" {
            assert!(
                answer["hits"]["total"]["value"].as_u64().unwrap_or(0) > 0,
                "{id}: {answer}"
            );
            let hit = &answer["hits"]["hits"][0]["_source"];
            assert!(
                hit["reason"].as_str().is_some_and(|r| r.contains("→ 4 → 6")),
                "{id}: {hit}"
            );
        } else {
            assert!(
                has_data(&answer["aggregations"]),
                "{id}: no buckets in {}",
                answer["aggregations"]
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 9);
}

/// Kibana's import API: every object counted, the xsrf header required.
fn kibana_import(req: &crate::support::fake::Seen) -> crate::support::fake::Reply {
    use crate::support::fake::Reply;
    let lines = String::from_utf8_lossy(&req.body)
        .matches("\"migrationVersion\"")
        .count();
    if req.header("kbn-xsrf") != Some("true") {
        return Reply::json(400, r#"{"message":"Request must contain a kbn-xsrf header."}"#);
    }
    Reply::json(200, format!(r#"{{"success":true,"successCount":{lines}}}"#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_reaches_kibana_at_an_ipv6_literal_url() {
    let (kibana, seen) = crate::support::fake::serve_on("[::1]:0", kibana_import).await;
    assert!(kibana.starts_with("http://[::1]:"), "{kibana}");
    let mut cmd = ecscale();
    cmd.args(["dashboards", "install", "--kibana", &kibana]);
    let (code, stdout, stderr) = crate::support::run_async(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": 14 saved objects imported"), "{stdout}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_imports_through_the_saved_objects_api() {
    use crate::support::fake::{serve, Reply};
    let (kibana, seen) = serve(kibana_import).await;
    let mut cmd = ecscale();
    cmd.args(["dashboards", "install", "--kibana", &kibana]);
    let (code, stdout, stderr) = crate::support::run_async(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": 14 saved objects imported"), "{stdout}");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/api/saved_objects/_import?overwrite=true")
    );
    assert!(req
        .header("content-type")
        .unwrap()
        .starts_with("multipart/form-data; boundary="));
    assert_eq!(
        req.header("osd-xsrf"),
        Some("true"),
        "OpenSearch Dashboards' header too"
    );
    let body = String::from_utf8_lossy(&req.body);
    assert!(body.contains("filename=\"ecscale.ndjson\"") && body.contains("\"id\":\"ecscale-overview\""));

    // A custom prefix: objects generated for it.
    let mut cmd = ecscale();
    cmd.args(["dashboards", "install", "--kibana", &kibana, "--prefix", "team-a"]);
    let (code, _, _) = crate::support::run_async(cmd).await;
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&seen.lock().unwrap()[1].body).contains("\"title\":\"team-a-metrics-*\""));

    let (refusing, _) = serve(|_| {
        Reply::json(
            200,
            r#"{"success":false,"errors":[{"id":"x","error":{"type":"conflict"}}]}"#,
        )
    })
    .await;
    let mut cmd = ecscale();
    cmd.args(["dashboards", "install", "--kibana", &refusing]);
    let (code, _, stderr) = crate::support::run_async(cmd).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("\"success\":false") && stderr.contains(&refusing),
        "{stderr}"
    );
}
