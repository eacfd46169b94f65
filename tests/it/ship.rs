//! The ship stage against the real OpenSearch node: 100,000 documents exactly once, refused
//! documents dead-lettered with their reason, an outage and a kill -9 survived, templates, the
//! dashboards' searches answered with data, auth headers and secrets kept out of messages.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use ecscale::config::{ElasticsearchSettings, OnFull, SinkSettings, SpoolSettings};
use ecscale::ship::{Doc, Shipper, Stream};
use serde_json::{json, Value};

use crate::support::{ecscale, es_url, repo, run, unique};

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(url: &str) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// Refreshes and counts documents of an index pattern.
pub(crate) async fn count(es: &str, pattern: &str) -> u64 {
    http()
        .post(format!(
            "{es}/{pattern}/_refresh?ignore_unavailable=true&allow_no_indices=true"
        ))
        .send()
        .await
        .unwrap();
    let v = get(&format!(
        "{es}/{pattern}/_count?ignore_unavailable=true&allow_no_indices=true"
    ))
    .await;
    v["count"].as_u64().unwrap_or_else(|| panic!("{pattern}: {v}"))
}

/// The sources of an index pattern's documents (refreshed first).
pub(crate) async fn search(es: &str, pattern: &str) -> Vec<Value> {
    count(es, pattern).await;
    let v = get(&format!(
        "{es}/{pattern}/_search?size=1000&ignore_unavailable=true&allow_no_indices=true"
    ))
    .await;
    v["hits"]["hits"]
        .as_array()
        .map(|h| h.iter().map(|x| x["_source"].clone()).collect())
        .unwrap_or_default()
}

/// About 1.2 KB each, over two days (two daily indices), deterministic ids.
pub(crate) fn docs(prefix_run: &str, from: usize, to: usize) -> Vec<Doc> {
    let start: DateTime<Utc> = "2026-11-24T22:00:00Z".parse().unwrap();
    (from..to)
        .map(|i| {
            let at = start + TimeDelta::seconds(i as i64 * 2);
            Doc::new(
                Stream::Metrics,
                format!("sample:{prefix_run}/svc-{}:cpu:{i}", i % 50),
                at,
                json!({
                    "kind": "sample", "target": format!("bench/svc-{}", i % 50), "cluster": "bench",
                    "service": format!("svc-{}", i % 50), "metric": "cpu", "namespace": "AWS/ECS",
                    "metric_name": "CPUUtilization", "stat": "Average", "unit": "Percent", "period_secs": 60,
                    "value": (i % 100) as f64 + 0.5,
                    "dimensions": {"ClusterName": "bench", "ServiceName": format!("svc-{}", i % 50), "Padding": "x".repeat(820)},
                }),
            )
        })
        .collect()
}

fn sink(dir: &Path, es: Option<&str>, prefix: &str) -> SinkSettings {
    SinkSettings {
        index_prefix: prefix.to_string(),
        elasticsearch: es.map(|url| {
            let mut s = ElasticsearchSettings::new(url);
            s.replicas = 0;
            s
        }),
        spool: SpoolSettings {
            dir: dir.to_path_buf(),
            max_bytes: 4 << 30,
            on_full: OnFull::Block,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_documents_arrive_exactly_once() {
    let es = es_url();
    let prefix = unique("it-ship").to_lowercase();
    let dir = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&sink(dir.path(), Some(&es), &prefix)).unwrap();
    let all = docs(&prefix, 0, 100_000);
    for chunk in all.chunks(1000) {
        shipper.ship(chunk).await.unwrap();
    }
    // A few sent twice, as a retry or a replay would: they must not count twice.
    shipper.ship(&all[..500]).await.unwrap();
    let stats = shipper.close(Duration::from_secs(180)).await;
    assert_eq!(stats.queued, 100_500);
    assert_eq!(stats.delivered, 100_500, "{stats:?}");
    assert_eq!(
        (stats.dead_lettered, stats.dropped, stats.spool_bytes),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(count(&es, &format!("{prefix}-metrics-*")).await, 100_000);
    let indices = get(&format!("{es}/_cat/indices/{prefix}-metrics-*?format=json")).await;
    let mut names: Vec<String> = indices
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    // 100,000 documents 2 s apart from 11-24 22:00: four days, four daily indices.
    let want: Vec<String> = ["24", "25", "26", "27"]
        .iter()
        .map(|d| format!("{prefix}-metrics-2026.11.{d}"))
        .collect();
    assert_eq!(names, want);
    // The templates' mapping is the one in force.
    let mapping = get(&format!("{es}/{}/_mapping", names[0])).await;
    let props = &mapping[names[0].as_str()]["mappings"]["properties"];
    assert_eq!(props["value"]["type"], "double");
    assert_eq!(
        props["dimensions"]["properties"]["ServiceName"]["type"],
        "keyword"
    );
    assert!(std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .all(|e| e.path().extension().is_none_or(|x| x != "ndjson")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_documents_are_dead_lettered_with_their_reason_and_the_rest_arrive() {
    let es = es_url();
    let prefix = unique("it-dead").to_lowercase();
    let dir = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&sink(dir.path(), Some(&es), &prefix)).unwrap();
    let mut batch = docs(&prefix, 0, 20);
    // Two mapping conflicts: a number field given text, and a field the mapping does not know.
    let mut changed = |i: usize, field: &str, v: Value| {
        let mut source = batch[i].value();
        source[field] = v;
        batch[i] = Doc::new(Stream::Metrics, batch[i].id.clone(), batch[i].at, source);
    };
    changed(3, "value", json!("very high"));
    changed(7, "colour", json!("blue"));
    shipper.ship(&batch).await.unwrap();
    let stats = shipper.close(Duration::from_secs(60)).await;
    assert_eq!(
        (stats.delivered, stats.dead_lettered, stats.dead_letter_file),
        (18, 2, 0),
        "{stats:?}"
    );
    assert_eq!(count(&es, &format!("{prefix}-metrics-*")).await, 18);
    assert_eq!(count(&es, &format!("{prefix}-deadletter-*")).await, 2);
    let letters = get(&format!("{es}/{prefix}-deadletter-*/_search?sort=id:asc")).await;
    let hits: Vec<&Value> = letters["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["_source"])
        .collect();
    assert_eq!(hits[0]["id"], format!("sample:{prefix}/svc-3:cpu:3"));
    assert_eq!(hits[0]["status"], 400);
    assert_eq!(hits[0]["error_type"], "mapper_parsing_exception");
    assert!(hits[0]["document"].as_str().unwrap().contains("very high"));
    assert_eq!(hits[1]["error_type"], "strict_dynamic_mapping_exception");
    assert!(
        hits[1]["error_reason"].as_str().unwrap().contains("colour"),
        "{}",
        hits[1]
    );
}

#[tokio::test]
async fn without_elasticsearch_the_spool_fills_and_replay_sends_it() {
    let es = es_url();
    let prefix = unique("it-replay").to_lowercase();
    let dir = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&sink(dir.path(), None, &prefix)).unwrap();
    shipper.ship(&docs(&prefix, 0, 3000)).await.unwrap();
    let stats = shipper.close(Duration::from_secs(5)).await;
    assert_eq!((stats.queued, stats.delivered), (3000, 0));
    assert!(stats.spool_bytes > 3000 * 1000);
    // The spool is plain bulk NDJSON.
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["index"]["_index"], format!("{prefix}-metrics-2026.11.24"));

    let (code, stdout, stderr) = run(ecscale().args(["ship", "replay"]).arg(dir.path()).args([
        "--es",
        &es,
        "--prefix",
        &prefix,
        "--replicas",
        "0",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(": 3000 documents delivered, 0 retried, 0 dead-lettered"),
        "{stdout}"
    );
    assert_eq!(count(&es, &format!("{prefix}-metrics-*")).await, 3000);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a replayed spool is empty"
    );
}

/// The OpenSearch launcher of ../shared (or ECSCALE_OPENSEARCH_DIR).
fn opensearch_dir() -> PathBuf {
    std::env::var("ECSCALE_OPENSEARCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("../shared/opensearch"))
}

/// Starts a node of our own (this test stops it), on `port` when given; returns its URL.
fn start_node(home: &Path, port: Option<u16>) -> String {
    let mut cmd = std::process::Command::new(opensearch_dir().join("start"));
    cmd.arg("--home").arg(home);
    if let Some(p) = port {
        cmd.args(["--port", &p.to_string()]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("this test needs {}: {e}", opensearch_dir().display()));
    assert!(
        out.status.success(),
        "OpenSearch did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("OPENSEARCH_URL="))
        .unwrap()
        .to_string()
}

fn stop_node(home: &Path) {
    let _ = std::process::Command::new(opensearch_dir().join("stop"))
        .arg(home)
        .output();
}

/// Stops the node when the test ends, passed or failed.
struct Node(PathBuf);
impl Drop for Node {
    fn drop(&mut self) {
        stop_node(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_and_a_kill_9_lose_nothing_and_duplicate_nothing() {
    const N: usize = 100_000;
    let home = tempfile::tempdir().unwrap();
    let url = start_node(home.path(), None);
    let _node = Node(home.path().to_path_buf());
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let prefix = "fault";

    // The worker without Elasticsearch: the spool fills (segments of 5 MiB, one bulk request each).
    let spool = tempfile::tempdir().unwrap();
    let settings = sink(spool.path(), None, prefix);
    let shipper = Shipper::start(&settings).unwrap();
    for chunk in docs(prefix, 0, N).chunks(1000) {
        shipper.ship(chunk).await.unwrap();
    }
    shipper.close(Duration::from_secs(5)).await;

    let replay = |url: &str| {
        let mut cmd = ecscale();
        cmd.args(["ship", "replay"]).arg(spool.path()).args([
            "--es",
            url,
            "--prefix",
            prefix,
            "--replicas",
            "0",
        ]);
        cmd.env("ECSCALE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let wait_for = |target: u64, url: String| async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let c = http()
                .get(format!("{url}/{prefix}-metrics-*/_count?allow_no_indices=true"))
                .send()
                .await;
            if let Ok(r) = c {
                if let Ok(v) = r.json::<Value>().await {
                    if v["count"].as_u64().unwrap_or(0) >= target {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{target} documents did not arrive in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // 1. Send; stop OpenSearch mid-stream for 20 s; the replay waits, then goes on.
    let mut first = replay(&url);
    wait_for(5_000, url.clone()).await;
    stop_node(home.path());
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        first.try_wait().unwrap().is_none(),
        "the replay waits out the outage"
    );
    let url2 = start_node(home.path(), Some(port));
    assert_eq!(url2, url);
    assert!(stopped.elapsed() >= Duration::from_secs(20));

    // 2. Kill -9 the shipping process mid-stream, start it again.
    wait_for(40_000, url.clone()).await;
    assert!(
        first.try_wait().unwrap().is_none(),
        "killed mid-stream, not after the end"
    );
    first.kill().unwrap(); // SIGKILL
    let _ = first.wait();
    let at_kill = count(&url, &format!("{prefix}-metrics-*")).await;
    assert!(
        at_kill < N as u64,
        "documents were still to come when it was killed ({at_kill})"
    );
    let second = replay(&url);
    let out = second.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        count(&url, &format!("{prefix}-metrics-*")).await,
        N as u64,
        "every document exactly once"
    );
    assert_eq!(
        std::fs::read_dir(spool.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "ndjson"))
            .count(),
        0
    );
}

/// A fake Elasticsearch that has the templates, takes bulks, and answers `status` to bulks
/// when told to; it echoes the Authorization header in its error bodies, as a careless proxy
/// might.
async fn fake_es(
    bulk_status: u16,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<crate::support::fake::Seen>>>,
) {
    use crate::support::fake::{serve, Reply};
    serve(move |req| {
        if req.target.starts_with("/_bulk") {
            if bulk_status == 200 {
                return Reply::json(200, r#"{"took":1,"errors":false,"items":[]}"#);
            }
            let echo = req.header("authorization").unwrap_or("");
            return Reply::json(bulk_status, format!(r#"{{"error":"denied for {echo}"}}"#));
        }
        Reply::json(200, "{}")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_api_keys_are_sent_and_never_shown() {
    // SAFETY of the test: unique variable names, read only by this test.
    std::env::set_var("ECSCALE_TEST_PW_9F2", "s3cret");
    std::env::set_var("ECSCALE_TEST_KEY_9F2", "a2V5aWQ6a2V5c2VjcmV0");
    let (url, seen) = fake_es(200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = sink(dir.path(), Some(&url), "auth");
    if let Some(es) = settings.elasticsearch.as_mut() {
        es.username = Some("user".into());
        es.password_env = Some("ECSCALE_TEST_PW_9F2".into());
    }
    let shipper = Shipper::start(&settings).unwrap();
    shipper.ship(&docs("auth", 0, 10)).await.unwrap();
    let stats = shipper.close(Duration::from_secs(20)).await;
    assert_eq!(stats.delivered, 10);
    let seen_now = seen.lock().unwrap().clone();
    assert!(!seen_now.is_empty());
    assert!(seen_now
        .iter()
        .all(|r| r.header("authorization") == Some("Basic dXNlcjpzM2NyZXQ=")));
    assert!(seen_now
        .iter()
        .any(|r| r.method == "POST" && r.target == "/_bulk"));

    let (url, seen) = fake_es(200).await;
    let mut s = ElasticsearchSettings::new(&url);
    s.api_key_env = Some("ECSCALE_TEST_KEY_9F2".into());
    let es = ecscale::ship::elasticsearch::Es::connect(&s, Duration::from_secs(5)).unwrap();
    es.json(elasticsearch::http::Method::Get, "/", None)
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap()[0].header("authorization"),
        Some("ApiKey a2V5aWQ6a2V5c2VjcmV0")
    );

    // A server that echoes the credentials in an error: they are blanked out of the message.
    let (url, _) = fake_es(401).await;
    let mut s = ElasticsearchSettings::new(&url);
    s.username = Some("user".into());
    s.password_env = Some("ECSCALE_TEST_PW_9F2".into());
    let es = ecscale::ship::elasticsearch::Es::connect(&s, Duration::from_secs(5)).unwrap();
    let err = es
        .bulk(bytes::Bytes::from_static(b"{}\n{}\n"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("denied for Basic ***"),
        "{err}"
    );
    assert!(
        !err.contains("s3cret") && !err.contains("dXNlcjpzM2NyZXQ="),
        "{err}"
    );
    assert!(
        !format!("{s:?}").contains("s3cret"),
        "settings name the variable, not the secret"
    );
}

#[test]
fn missing_secrets_and_bad_certificates_are_named() {
    let mut s = ElasticsearchSettings::new("https://es.example:9200");
    s.username = Some("user".into());
    s.password_env = Some("ECSCALE_TEST_UNSET_VAR_1".into());
    let err = ecscale::ship::elasticsearch::Es::connect(&s, Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "Elasticsearch settings: environment variable ECSCALE_TEST_UNSET_VAR_1 (named by sink.elasticsearch.password_env) is not set");

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let mut s = ElasticsearchSettings::new("https://es.example:9200");
    s.ca_file = Some(ca.clone());
    let err = ecscale::ship::elasticsearch::Es::connect(&s, Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{} is not a PEM certificate", ca.display())),
        "{err}"
    );
    s.ca_file = Some(dir.path().join("missing.pem"));
    let err = ecscale::ship::elasticsearch::Es::connect(&s, Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read sink.elasticsearch.ca_file"), "{err}");

    let err = ecscale::ship::elasticsearch::Es::connect(
        &ElasticsearchSettings::new("http://user:pw@es:9200"),
        Duration::from_secs(1),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not in the URL") && !err.contains("pw@"), "{err}");
}

#[tokio::test]
async fn setup_installs_the_templates() {
    let es = es_url();
    let prefix = unique("it-setup").to_lowercase();
    let (code, stdout, stderr) =
        run(ecscale().args(["setup", "--es", &es, "--prefix", &prefix, "--replicas", "0"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("6 templates installed"), "{stdout}");
    let t = get(&format!("{es}/_index_template/{prefix}-decisions")).await;
    let tpl = &t["index_templates"][0]["index_template"];
    assert_eq!(tpl["index_patterns"][0], format!("{prefix}-decisions-*"));
    assert_eq!(
        tpl["composed_of"],
        json!([format!("{prefix}-settings"), format!("{prefix}-common")])
    );
    assert_eq!(
        tpl["template"]["mappings"]["properties"]["reason"]["type"],
        "text"
    );
    // Installing twice is harmless.
    let (code, _, _) = run(ecscale().args(["setup", "--es", &es, "--prefix", &prefix, "--replicas", "0"]));
    assert_eq!(code, 0);
    let (code, _, stderr) = run(ecscale().args(["setup", "--es", "http://127.0.0.1:9", "--prefix", &prefix]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Elasticsearch at http://127.0.0.1:9:"),
        "{stderr}"
    );
}

/// Templates written by another version of ecscale (a field fewer, another fingerprint), and
/// today's index made from them: a document with the new field is refused by that index's
/// strict mapping. The shipper replaces the templates and adds the field to the index, so the
/// document arrives, none dead-lettered; a second start writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_of_another_version_are_upgraded_and_todays_index_takes_the_new_fields() {
    use ecscale::ship::templates::{self, TemplateOptions};
    let es = es_url();
    let prefix = unique("it-upgrade").to_lowercase();
    let opts = TemplateOptions {
        prefix: prefix.clone(),
        replicas: 0,
        ilm_policy: None,
    };
    let http = http();
    for (path, mut body) in templates::templates(&opts) {
        if let Some(props) = body
            .pointer_mut("/template/mappings/properties")
            .and_then(Value::as_object_mut)
        {
            props.remove("cloudwatch_usd_per_service_month");
        }
        if body.get("_meta").is_some() {
            body["_meta"]["fingerprint"] = json!("an-older-one");
        }
        let r = http.put(format!("{es}{path}")).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
    }
    let now = Utc::now();
    let index = Stream::Metrics.index(&prefix, now);
    let made = http.put(format!("{es}/{index}")).send().await.unwrap();
    assert!(made.status().is_success(), "{}", made.text().await.unwrap());
    let spend = ecscale::worker::status::spend(1000, now - TimeDelta::minutes(10), now, 4).unwrap();
    let doc = spend.doc(now);
    let refused = http
        .post(format!("{es}/{index}/_doc"))
        .header("content-type", "application/json")
        .body(doc.source.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400, "the old mapping is strict");

    let dir = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&sink(dir.path(), Some(&es), &prefix)).unwrap();
    shipper.ship(&[doc]).await.unwrap();
    let stats = shipper.close(Duration::from_secs(60)).await;
    assert_eq!((stats.delivered, stats.dead_lettered), (1, 0), "{stats:?}");
    let t = get(&format!("{es}/_index_template/{prefix}-metrics")).await;
    let ours = templates::fingerprint_of(&opts);
    assert_eq!(
        t["index_templates"][0]["index_template"]["_meta"]["fingerprint"],
        ours.as_str()
    );
    let es_client = ecscale::ship::elasticsearch::Es::connect(
        &sink(dir.path(), Some(&es), &prefix).elasticsearch.unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        !templates::ensure(&es_client, &opts).await.unwrap(),
        "up to date: nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_as_a_whole_goes_to_the_dead_letter_file() {
    // Every request answered 400 (malformed, as the endpoint says): split down to single
    // documents, each refused on its own, so each is dead-lettered with the reason, in the file
    // (the dead-letter index refuses too), which stays inside the spool's size bound.
    let (url, _) = fake_es(400).await;
    let dir = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&sink(dir.path(), Some(&url), "whole")).unwrap();
    shipper.ship(&docs("whole", 0, 25)).await.unwrap();
    let stats = shipper.close(Duration::from_secs(20)).await;
    let letters = std::fs::metadata(dir.path().join("deadletter.ndjson"))
        .unwrap()
        .len();
    assert_eq!(
        (
            stats.delivered,
            stats.dead_lettered,
            stats.dead_letter_file,
            stats.spool_bytes
        ),
        (0, 25, 25, letters),
        "{stats:?}"
    );
    // One request for the 25, then halves down to each document alone: 49 in all.
    assert_eq!(stats.requests, 49, "{stats:?}");
    let kept = std::fs::read_to_string(dir.path().join("deadletter.ndjson")).unwrap();
    let letters: Vec<Value> = kept.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 25);
    assert_eq!(letters[0]["id"], "sample:whole/svc-0:cpu:0");
    assert_eq!(letters[0]["status"], 400);
    assert!(
        letters[0]["error_reason"]
            .as_str()
            .unwrap()
            .contains("answered HTTP 400"),
        "{}",
        letters[0]
    );
    assert!(letters[0]["document"]
        .as_str()
        .unwrap()
        .contains("\"metric\":\"cpu\""));
}
