//! The ship stage under the faults SREs meet, against the real OpenSearch node: a spool disk
//! that fills and frees again (block and drop_oldest), a spool that turns read-only, `_bulk`
//! answered 401 for a while, a node too slow for whole bulks, an index whose writes are blocked for a while, one malformed
//! document among good ones, a request that must be split, and a worker killed with -9 while its
//! spool is full and Elasticsearch is down.
//!
//! Each reads the worker's `/metrics` and `/healthz` while the fault is on, and ends in exact
//! accounting: documents handed over = spooled + not spooled (+ pending), and spooled =
//! delivered + dead-lettered + dropped, with Elasticsearch holding exactly the delivered ones.
//! The disk faults are real: a small tmpfs, and a read-only remount of it (the tests run as root).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecscale::config::{ElasticsearchSettings, OnFull, SinkSettings, SpoolSettings};
use ecscale::ship::{Doc, Shipper, StatsSnapshot};
use ecscale::usage::ApiMeter;
use ecscale::worker::metrics::Metrics;
use tokio::sync::watch;

use crate::ship::{count, docs};
use crate::support::gate::{Gate, Mode};
use crate::support::{es_url, unique};

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped.
pub(crate) struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub(crate) fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "these tests mount a small tmpfs to fill a disk for real: run them as root (`scripts/test` does, on CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }

    pub(crate) fn read_only(&self, ro: bool) {
        let opt = if ro { "remount,ro" } else { "remount,rw" };
        let out = std::process::Command::new("mount")
            .args(["-o", opt])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .output();
    }
}

fn sink(dir: &Path, es: &str, prefix: &str, on_full: OnFull) -> SinkSettings {
    let mut e = ElasticsearchSettings::new(es);
    e.replicas = 0;
    e.bulk_max_bytes = 64 << 10;
    e.flush_interval = Duration::from_millis(200);
    e.timeout = Duration::from_secs(10);
    SinkSettings {
        index_prefix: prefix.to_string(),
        elasticsearch: Some(e),
        spool: SpoolSettings {
            dir: dir.to_path_buf(),
            max_bytes: 64 << 20,
            on_full,
        },
    }
}

/// A shipper, with the worker's `/metrics` and `/healthz` served for it.
struct Rig {
    shipper: Arc<Shipper>,
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

async fn rig(sink: &SinkSettings) -> Rig {
    let shipper = Arc::new(Shipper::start(sink).unwrap());
    let metrics = Arc::new(Metrics::new(ApiMeter::default(), Duration::from_secs(3600)));
    metrics.set_ship(shipper.stats_handle());
    metrics.tick_done(Duration::ZERO);
    let (stop, rx) = watch::channel(false);
    let (addr, _) = ecscale::worker::metrics::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics,
        rx,
        None,
        ecscale::worker::metrics::Guard::Loopback,
    )
    .await
    .unwrap();
    Rig {
        shipper,
        addr,
        _stop: stop,
    }
}

/// `/metrics` and `/healthz` (status and text).
pub(crate) async fn scrape(addr: &str) -> (String, u16, String) {
    let c = reqwest::Client::new();
    let metrics = c
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let h = c.get(format!("http://{addr}/healthz")).send().await.unwrap();
    let status = h.status().as_u16();
    (metrics, status, h.text().await.unwrap())
}

/// The value of a sample of a Prometheus page (0 when absent).
pub(crate) fn value(page: &str, sample: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

pub(crate) async fn wait_until<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ships `docs` in batches of 50 (as ticks would), in the background.
fn produce(shipper: &Arc<Shipper>, docs: Vec<Doc>) -> tokio::task::JoinHandle<()> {
    let shipper = shipper.clone();
    tokio::spawn(async move {
        for batch in docs.chunks(50) {
            shipper.ship(batch).await.unwrap();
        }
    })
}

/// The accounting every test ends with: all handed over was spooled, and all spooled was
/// delivered, dead-lettered or dropped, Elasticsearch holding the delivered ones.
async fn accounted(s: &StatsSnapshot, produced: u64, es: &str, pattern: &str) {
    assert_eq!(s.queued, produced, "{s:?}");
    assert_eq!(s.queued, s.spooled + s.not_spooled + s.pending, "{s:?}");
    assert_eq!(s.spooled, s.delivered + s.dead_lettered + s.dropped, "{s:?}");
    assert_eq!(
        count(es, pattern).await,
        s.delivered,
        "Elasticsearch holds what was delivered: {s:?}"
    );
}

async fn idle(rig: &Rig) {
    let s = rig.shipper.clone();
    wait_until("the spool empties", Duration::from_secs(90), || {
        let s = s.clone();
        async move { s.idle().unwrap() && s.stats().pending == 0 }
    })
    .await;
}

async fn disk_fills(on_full: OnFull) -> (StatsSnapshot, String, String, String) {
    let es = es_url();
    let gate = Gate::start(&es, Mode::Open).await;
    let fs = Tmpfs::mount("1m");
    let prefix = unique("it-full").to_lowercase();
    let r = rig(&sink(&fs.path, &gate.url, &prefix, on_full)).await;
    let all = docs(&prefix, 0, 2_000);
    let pattern = format!("{prefix}-metrics-*");

    // 1. Elasticsearch up: documents go through.
    produce(&r.shipper, all[..300].to_vec()).await.unwrap();
    let s = r.shipper.clone();
    wait_until("the first 300 delivered", Duration::from_secs(60), || {
        let s = s.clone();
        async move { s.stats().delivered == 300 }
    })
    .await;
    // Their segments are removed just after they are counted delivered: wait for that, or the
    // room it frees would end the full-disk episode below while it is being looked at.
    idle(&r).await;
    // 2. Elasticsearch stops taking them: the spool fills the 1 MiB disk (2,000 documents are
    //    2.4 MB).
    gate.set(Mode::Down);
    let producer = produce(&r.shipper, all[300..].to_vec());
    let addr = r.addr.to_string();
    wait_for_error(&addr, "no_space", "the disk is full", 60).await;
    let (metrics, status, health) = scrape_degraded(&addr).await;
    // 3. Elasticsearch back: the spool drains, the disk frees, the rest goes.
    gate.set(Mode::Open);
    tokio::time::timeout(Duration::from_secs(90), producer)
        .await
        .unwrap()
        .unwrap();
    idle(&r).await;
    assert_eq!(
        status, 200,
        "a shipping fault does not make the worker unhealthy: {health}"
    );
    let s = r.shipper.stats();
    accounted(&s, 2_000, &es, &pattern).await;
    (s, metrics, health, scrape(&addr).await.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_waits_then_frees_and_nothing_is_lost() {
    let (s, metrics, health, after) = disk_fills(OnFull::Block).await;
    // While the disk was full: counted, degraded, the reason said.
    assert!(
        health.starts_with("degraded: shipping:") && health.contains("No space left on device"),
        "{health}"
    );
    assert_eq!(value(&metrics, "ecscale_ship_degraded"), 1.0, "{metrics}");
    assert!(
        value(&metrics, "ecscale_ship_pending_documents") > 0.0,
        "{metrics}"
    );
    // Every document arrived: a failed append left nothing half written (none refused as
    // malformed), and nothing was dropped.
    assert_eq!(
        (s.delivered, s.dead_lettered, s.dropped, s.not_spooled),
        (2_000, 0, 0, 0),
        "{s:?}"
    );
    assert!(after.starts_with("ok:"), "recovered: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_frees_a_full_disk_and_counts_exactly_what_it_dropped() {
    let (s, metrics, health, _) = disk_fills(OnFull::DropOldest).await;
    // Degraded while documents are being dropped (or the disk refuses the append that
    // makes room), though appends go on.
    assert!(
        health.starts_with("degraded: shipping:")
            && (health.contains("documents dropped so far") || health.contains("No space left")),
        "{health}\n{metrics}"
    );
    assert!(s.dropped > 0, "{s:?}\n{metrics}");
    // What was not dropped was delivered, and Elasticsearch holds exactly that (checked above).
    assert_eq!(s.delivered + s.dropped, 2_000, "{s:?}");
    assert_eq!(s.dead_lettered, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_turns_read_only_waits_and_goes_on_when_writable() {
    let es = es_url();
    let fs = Tmpfs::mount("16m");
    let prefix = unique("it-ro").to_lowercase();
    let r = rig(&sink(&fs.path, &es, &prefix, OnFull::Block)).await;
    let all = docs(&prefix, 0, 600);
    produce(&r.shipper, all[..200].to_vec()).await.unwrap();
    fs.read_only(true);
    let producer = produce(&r.shipper, all[200..].to_vec());
    let addr = r.addr.to_string();
    wait_for_error(&addr, "read_only", "the read-only spool is noticed", 30).await;
    let (_, status, health) = scrape_degraded(&addr).await;
    assert!(!producer.is_finished(), "appends wait for the disk");
    fs.read_only(false);
    tokio::time::timeout(Duration::from_secs(60), producer)
        .await
        .unwrap()
        .unwrap();
    idle(&r).await;
    assert_eq!(status, 200);
    assert!(
        health.starts_with("degraded:") && health.contains("Read-only file system"),
        "{health}"
    );
    let s = r.shipper.stats();
    accounted(&s, 600, &es, &format!("{prefix}-metrics-*")).await;
    assert_eq!((s.delivered, s.dead_lettered, s.dropped), (600, 0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_refused_with_401_is_retried_not_dead_lettered() {
    let es = es_url();
    let gate = Gate::start(&es, Mode::RefuseBulk(401)).await;
    let spool = tempfile::tempdir().unwrap();
    let prefix = unique("it-auth").to_lowercase();
    let r = rig(&sink(spool.path(), &gate.url, &prefix, OnFull::Block)).await;
    produce(&r.shipper, docs(&prefix, 0, 500)).await.unwrap();
    let addr = r.addr.to_string();
    wait_until("401s are counted", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { value(&scrape(&addr).await.0, "ecscale_ship_errors_total{kind=\"auth\"}") >= 3.0 }
    })
    .await;
    let (metrics, status, health) = scrape(&addr).await;
    assert_eq!(status, 200);
    assert!(
        health.starts_with("degraded:") && health.contains("401"),
        "{health}"
    );
    assert_eq!(
        value(&metrics, "ecscale_ship_documents_total{state=\"dead_lettered\"}"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, "ecscale_ship_documents_total{state=\"delivered\"}"),
        0.0
    );
    // The credentials are fixed: everything goes, once.
    gate.set(Mode::Open);
    idle(&r).await;
    let s = r.shipper.stats();
    accounted(&s, 500, &es, &format!("{prefix}-metrics-*")).await;
    assert_eq!((s.delivered, s.dead_lettered), (500, 0), "{s:?}");
    assert!(s.errors.get("auth").copied().unwrap_or(0) >= 3, "{s:?}");
    assert!(
        gate.refused() >= 3,
        "the node saw no request while the gate refused"
    );
    assert!(scrape(&addr).await.2.starts_with("ok:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_too_slow_for_whole_bulks_gets_smaller_ones_and_nothing_is_lost_or_doubled() {
    let es = es_url();
    // 8 ms a document: a bulk of more than 125 cannot be answered within the 1 s timeout.
    let gate = Gate::start(&es, Mode::SlowBulk { per_doc_ms: 8 }).await;
    let spool = tempfile::tempdir().unwrap();
    let prefix = unique("it-slow").to_lowercase();
    let mut settings = sink(spool.path(), &gate.url, &prefix, OnFull::Block);
    let e = settings.elasticsearch.as_mut().unwrap();
    e.timeout = Duration::from_secs(1);
    e.bulk_max_bytes = 1 << 20;
    e.flush_interval = Duration::from_secs(1);
    let r = rig(&settings).await;
    produce(&r.shipper, docs(&prefix, 0, 1_000)).await.unwrap();
    idle(&r).await;
    let s = r.shipper.stats();
    // The timed-out bulks were indexed late, and sent again: their ids make that harmless.
    accounted(&s, 1_000, &es, &format!("{prefix}-metrics-*")).await;
    assert_eq!((s.delivered, s.dead_lettered, s.dropped), (1_000, 0, 0), "{s:?}");
    let timeouts = s.errors.get("timeout").copied().unwrap_or(0);
    assert!(timeouts >= 1, "the whole segment timed out first: {s:?}");
    assert!(
        !s.errors.contains_key("unreachable"),
        "a slow node is not called unreachable: {s:?}"
    );
    // Smaller bulks from then on, not one timeout per segment or per retry.
    let in_time = s.requests - s.failed_requests;
    assert!(
        in_time >= 8 && timeouts * 2 < in_time,
        "{timeouts} timeouts, {s:?}"
    );
    assert!(
        gate.refused() >= s.requests,
        "every bulk went through the slow gate"
    );
    let (metrics, _, health) = scrape(&r.addr.to_string()).await;
    assert_eq!(
        value(&metrics, "ecscale_ship_errors_total{kind=\"timeout\"}"),
        timeouts as f64,
        "{metrics}"
    );
    assert!(health.starts_with("ok:"), "moving again: {health}");
}

/// Sets (or, with null, lifts) `index.blocks.write` on the indices of `pattern`.
async fn write_block(es: &str, pattern: &str, on: bool) {
    let r = reqwest::Client::new()
        .put(format!("{es}/{pattern}/_settings"))
        .json(&serde_json::json!({"index.blocks.write": if on { serde_json::json!(true) } else { serde_json::Value::Null }}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{pattern}: {}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_with_a_write_block_keeps_its_documents_in_the_spool_until_it_is_lifted() {
    let es = es_url();
    let spool = tempfile::tempdir().unwrap();
    let prefix = unique("it-block").to_lowercase();
    let pattern = format!("{prefix}-metrics-*");
    let r = rig(&sink(spool.path(), &es, &prefix, OnFull::Block)).await;
    r.shipper.ship(&docs(&prefix, 0, 100)).await.unwrap();
    idle(&r).await;
    // An SRE blocks writes (maintenance; the flood-stage watermark sets a block of the same kind).
    write_block(&es, &pattern, true).await;
    produce(&r.shipper, docs(&prefix, 100, 300)).await.unwrap();
    let addr = r.addr.to_string();
    wait_for_error(&addr, "blocked", "the block is counted", 30).await;
    let (metrics, status, health) = scrape(&addr).await;
    assert_eq!(status, 200);
    assert!(
        health.starts_with("degraded:")
            && health.contains("cluster_block_exception")
            && health.contains("index write"),
        "{health}"
    );
    assert_eq!(
        value(&metrics, "ecscale_ship_documents_total{state=\"dead_lettered\"}"),
        0.0,
        "never dead-lettered: {metrics}"
    );
    assert_eq!(count(&es, &pattern).await, 100, "nothing got through the block");
    assert!(
        r.shipper.stats().spool_bytes > 0,
        "the blocked documents wait on disk"
    );
    // Lifted: everything goes, once.
    write_block(&es, &pattern, false).await;
    idle(&r).await;
    let s = r.shipper.stats();
    accounted(&s, 300, &es, &pattern).await;
    assert_eq!((s.delivered, s.dead_lettered, s.dropped), (300, 0, 0), "{s:?}");
    assert!(s.errors.get("blocked").copied().unwrap_or(0) >= 1, "{s:?}");
    assert!(scrape(&addr).await.2.starts_with("ok:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_malformed_document_is_dead_lettered_with_its_reason_and_the_rest_arrive() {
    let es = es_url();
    let spool = tempfile::tempdir().unwrap();
    let prefix = unique("it-bad").to_lowercase();
    let r = rig(&sink(spool.path(), &es, &prefix, OnFull::Block)).await;
    let mut batch = docs(&prefix, 0, 100);
    // `value` is a number in the mapping: this one cannot be indexed.
    let bad = &mut batch[37];
    let text = String::from_utf8(bad.source.clone()).unwrap();
    bad.source = text
        .replace("\"value\":37.5", "\"value\":\"thirty-seven\"")
        .into_bytes();
    assert_ne!(bad.source, text.as_bytes());
    r.shipper.ship(&batch).await.unwrap();
    idle(&r).await;
    let (metrics, _, _) = scrape(&r.addr.to_string()).await;
    assert_eq!(
        value(&metrics, "ecscale_ship_documents_total{state=\"dead_lettered\"}"),
        1.0,
        "{metrics}"
    );
    let s = r.shipper.stats();
    accounted(&s, 100, &es, &format!("{prefix}-metrics-*")).await;
    assert_eq!(
        (s.delivered, s.dead_lettered, s.dead_letter_file),
        (99, 1, 0),
        "{s:?}"
    );
    // The letter holds the document and the reason.
    let letters = crate::ship::search(&es, &format!("{prefix}-deadletter-*")).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0]["error_type"], "mapper_parsing_exception",
        "{letters:?}"
    );
    assert!(letters[0]["document"].as_str().unwrap().contains("thirty-seven"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_too_large_is_split_and_a_malformed_one_split_down_to_the_document_at_fault() {
    use crate::support::fake::{serve, Reply};
    // An endpoint that answers 413 to bodies over 8 KiB, and 400 to any body with the poison
    // document (as to a malformed request), else takes everything.
    let (url, seen) = serve(|req| {
        if req.target.starts_with("/_bulk") {
            if req.body.len() > 8 << 10 {
                return Reply::json(413, r#"{"error":"too large"}"#);
            }
            if String::from_utf8_lossy(&req.body).contains("poison") {
                return Reply::json(400, r#"{"error":{"type":"illegal_argument_exception","reason":"Malformed action/metadata line"}}"#);
            }
            return Reply::json(200, r#"{"took":1,"errors":false,"items":[]}"#);
        }
        Reply::json(200, "{}")
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    let r = rig(&sink(spool.path(), &url, "split", OnFull::Block)).await;
    let mut batch = docs("split", 0, 40);
    let text = String::from_utf8(batch[11].source.clone()).unwrap();
    batch[11].source = text.replace("\"cpu\"", "\"poison\"").into_bytes();
    r.shipper.ship(&batch).await.unwrap();
    idle(&r).await;
    let s = r.shipper.stats();
    assert_eq!(
        (s.delivered, s.dead_lettered, s.dead_letter_file),
        (39, 1, 1),
        "{s:?}"
    );
    assert_eq!(s.queued, s.delivered + s.dead_lettered);
    let kept = std::fs::read_to_string(spool.path().join("deadletter.ndjson")).unwrap();
    assert_eq!(kept.lines().count(), 1);
    assert!(
        kept.contains("poison") && kept.contains("Malformed action/metadata line"),
        "{kept}"
    );
    // No body over the limit was ever taken.
    let seen = seen.lock().unwrap();
    assert!(seen
        .iter()
        .filter(|r| r.target.starts_with("/_bulk"))
        .any(|r| r.body.len() > 8 << 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_inside_the_spool_bound_and_replayed_once_the_cause_is_fixed() {
    use crate::support::fake::{serve, Reply};
    let es = es_url();
    // A first endpoint refuses one document (and the dead-letter index): it goes to the file.
    let (url, _) = serve(|req| {
        if req.target.starts_with("/_bulk") && String::from_utf8_lossy(&req.body).contains("poison") {
            return Reply::json(
                400,
                r#"{"error":{"type":"illegal_argument_exception","reason":"refused"}}"#,
            );
        }
        if req.target.starts_with("/_bulk") {
            return Reply::json(200, r#"{"took":1,"errors":false,"items":[]}"#);
        }
        Reply::json(200, "{}")
    })
    .await;
    let spool = tempfile::tempdir().unwrap();
    let prefix = unique("it-dl").to_lowercase();
    let r = rig(&sink(spool.path(), &url, &prefix, OnFull::Block)).await;
    let mut batch = docs(&prefix, 0, 10);
    let text = String::from_utf8(batch[3].source.clone()).unwrap();
    batch[3].source = text.replace("\"cpu\"", "\"poison\"").into_bytes();
    r.shipper.ship(&batch).await.unwrap();
    idle(&r).await;
    let letters = std::fs::metadata(spool.path().join("deadletter.ndjson"))
        .unwrap()
        .len();
    // The spool's size is counted as the sent segment is removed, just after the spool is
    // found empty: wait for the count (the assertion below shows it if it never comes).
    let s = r.shipper.clone();
    let settled = tokio::time::timeout(Duration::from_secs(10), async move {
        while s.stats().spool_bytes != letters {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    drop(settled);
    assert_eq!(
        r.shipper.stats().spool_bytes,
        letters,
        "dead letters count in the spool's size"
    );
    // The real node takes it: `ship replay --dead-letters` sends it there and empties the file.
    let (code, stdout, stderr) = crate::support::run(
        crate::support::ecscale()
            .args([
                "ship",
                "replay",
                "--dead-letters",
                "--replicas",
                "0",
                "--es",
                &es,
                "--prefix",
                &prefix,
            ])
            .arg(spool.path()),
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 documents delivered, 0 refused again"),
        "{stdout}"
    );
    assert!(!spool.path().join("deadletter.ndjson").exists());
    assert_eq!(count(&es, &format!("{prefix}-metrics-*")).await, 1);
}

#[tokio::test]
async fn a_failed_append_is_cut_back_to_the_last_whole_document() {
    // 64 KiB of disk: a second 40 KiB batch fits only in part. It must not stay in part.
    let fs = Tmpfs::mount("64k");
    let spool = ecscale::ship::spool::Spool::open(&fs.path, 1 << 30, OnFull::Block, 1 << 20).unwrap();
    let one = |n: usize, tag: char| -> Vec<u8> {
        let mut b = Vec::new();
        for i in 0..n {
            b.extend_from_slice(
                format!(
                    "{{\"index\":{{\"_id\":\"{tag}{i}\"}}}}\n{{\"pad\":\"{}\"}}\n",
                    "x".repeat(380)
                )
                .as_bytes(),
            );
        }
        b
    };
    let first = one(100, 'a');
    spool.append(&first).await.unwrap();
    let second = tokio::time::timeout(Duration::from_millis(1500), spool.append(&one(100, 'b'))).await;
    assert!(second.is_err(), "no room: the append waits");
    assert_eq!(spool.blocked().map(|b| b.kind), Some("no_space"));
    let open: Vec<PathBuf> = std::fs::read_dir(&fs.path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "open"))
        .collect();
    assert_eq!(open.len(), 1);
    assert_eq!(
        std::fs::read(&open[0]).unwrap(),
        first,
        "the partial write was cut off"
    );
    assert_eq!(spool.size(), first.len() as u64);
}

fn minute(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(60), 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_its_spool_full_and_elasticsearch_down_loses_no_sample() {
    use crate::support::moto::Moto;
    use crate::support::{free_port, moto_url, write};
    let es = es_url();
    let gate = Gate::start(&es, Mode::Down).await;
    let dir = tempfile::tempdir().unwrap();
    let region = "ap-south-1";
    let moto = Moto::new(&moto_url(), region);
    let cluster = unique("it-kill");
    moto.cluster(&cluster).await.unwrap();
    let td = moto.task_definition(&unique("web"), 256, 512).await.unwrap();
    moto.service(&cluster, "web", &td, 1, &[]).await.unwrap();
    let t0 = minute(chrono::Utc::now());
    let points: Vec<_> = (-10..10)
        .map(|k| (t0 + chrono::TimeDelta::minutes(k), 40.0 + k as f64))
        .collect();
    moto.put_points(
        "AWS/ECS",
        "CPUUtilization",
        &[("ClusterName", &cluster), ("ServiceName", "web")],
        aws_sdk_cloudwatch::types::StandardUnit::Percent,
        &points,
    )
    .await
    .unwrap();
    let port = free_port();
    let prefix = unique("it-kill").to_lowercase();
    let path = write(
        dir.path(),
        "ecscale.yaml",
        &format!(
            "aws: {{region: {region}, endpoint_url: '{}'}}\nschedule: {{interval: 1s}}\ncollect: {{lookback: 5m}}\nclusters:\n  - name: {cluster}\n    services: [web]\nsink:\n  index_prefix: {prefix}\n  elasticsearch: {{url: '{}', replicas: 0, flush_interval: 200ms, timeout: 5s}}\n  spool: {{dir: spool, max_size: 64KiB, on_full: block}}\nworker:\n  metrics_addr: 127.0.0.1:{port}\n  state: {{file: state.json}}\n",
            moto_url(),
            gate.url
        ),
    );
    // What an earlier run left: 60 KiB of documents, so not even the first tick's fit.
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let room = (64 << 10) - 200;
    let mut left = Vec::new();
    for d in docs(&prefix, 0, 100) {
        let mut b = Vec::new();
        d.write_bulk(&prefix, &mut b);
        if left.len() + b.len() > room - 1400 {
            break;
        }
        left.extend(b);
    }
    // The last one padded to leave 200 bytes free: less than any tick's documents.
    let mut last = docs(&prefix, 100, 101).remove(0);
    let mut b = Vec::new();
    last.write_bulk(&prefix, &mut b);
    let pad = "x".repeat(820);
    let text = String::from_utf8(last.source.clone()).unwrap();
    let fitted = "x".repeat((820 + room as i64 - (left.len() + b.len()) as i64) as usize);
    last.source = text.replace(&pad, &fitted).into_bytes();
    last.write_bulk(&prefix, &mut left);
    assert_eq!(left.len(), room);
    std::fs::write(spool.join(format!("{:020}.ndjson", 0)), &left).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut first = crate::deploy::spawn(&path, &dir.path().join("first.log"), &[]);
    // The spool fills, then the ship stage's queue: documents are counted as not spooled.
    wait_until("documents not spooled", Duration::from_secs(120), || {
        let addr = addr.clone();
        async move {
            let Ok(r) = reqwest::get(format!("http://{addr}/metrics")).await else {
                return false;
            };
            value(
                &r.text().await.unwrap_or_default(),
                "ecscale_ship_documents_total{state=\"not_spooled\"}",
            ) > 0.0
        }
    })
    .await;
    let (_, status, health) = scrape(&addr).await;
    assert_eq!(status, 200);
    assert!(health.starts_with("degraded: shipping:"), "{health}");
    // Right after a tick: the last look, then kill -9.
    let ticks = value(&scrape(&addr).await.0, "ecscale_ticks_total");
    wait_until("a tick", Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { value(&scrape(&addr).await.0, "ecscale_ticks_total") > ticks }
    })
    .await;
    let (last, _, _) = scrape(&addr).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let n = |state: &str| {
        value(
            &last,
            &format!("ecscale_ship_documents_total{{state=\"{state}\"}}"),
        )
    };
    assert!(
        n("not_spooled") > 0.0 && n("delivered") == 0.0 && n("spooled") == 0.0,
        "{last}"
    );
    assert_eq!(
        n("queued"),
        n("spooled") + n("not_spooled") + value(&last, "ecscale_ship_pending_documents"),
        "{last}"
    );
    // Nothing of this run reached the disk, so its state claims no sample as shipped.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap()).unwrap();
    let shipped = state["shipped_until"].as_object().cloned().unwrap_or_default();
    assert!(shipped.keys().all(|k| !k.ends_with(":cpu")), "{shipped:?}");

    // Elasticsearch back, the worker again on the same spool and state.
    gate.set(Mode::Open);
    let mut second = crate::deploy::spawn(&path, &dir.path().join("second.log"), &[]);
    wait_until("the spool is sent", Duration::from_secs(120), || {
        let (addr, spool) = (addr.clone(), spool.clone());
        async move {
            let empty = std::fs::read_dir(&spool)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .all(|e| e.path().extension().is_none_or(|x| x != "ndjson"))
                })
                .unwrap_or(false);
            let Ok(r) = reqwest::get(format!("http://{addr}/metrics")).await else {
                return false;
            };
            let page = r.text().await.unwrap_or_default();
            empty && value(&page, "ecscale_ship_documents_total{state=\"delivered\"}") > 0.0
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = second.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let code = tokio::time::timeout(Duration::from_secs(40), second.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        code.success(),
        "{}",
        std::fs::read_to_string(dir.path().join("second.log")).unwrap()
    );
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    assert!(
        log.contains("0 not spooled") && log.contains("0 dead-lettered, 0 dropped"),
        "{log}"
    );

    // Every CPU minute the two runs' windows covered is in Elasticsearch, without a gap: the
    // samples of the batches that never reached the disk were read again after the restart.
    let cpu: std::collections::BTreeSet<String> = crate::ship::search(&es, &format!("{prefix}-metrics-*"))
        .await
        .into_iter()
        .filter(|d| d["kind"] == "sample" && d["metric"] == "cpu" && d["target"] == format!("{cluster}/web"))
        .map(|d| d["@timestamp"].as_str().unwrap().to_string())
        .collect();
    let minutes: Vec<chrono::DateTime<chrono::Utc>> = cpu.iter().map(|t| t.parse().unwrap()).collect();
    // And what the earlier run left arrived too.
    let earlier = left.iter().filter(|b| **b == b'\n').count() as u64 / 2;
    let all = count(&es, &format!("{prefix}-metrics-*")).await;
    assert!(
        all >= earlier + minutes.len() as u64,
        "{all} documents, {earlier} left earlier, {} cpu minutes\n{log}",
        minutes.len()
    );
    assert!(minutes.len() >= 5, "{minutes:?}");
    for w in minutes.windows(2) {
        assert_eq!(w[1] - w[0], chrono::TimeDelta::minutes(1), "a gap in {minutes:?}");
    }
    // The CloudWatch spend the dashboard reads per service: there, within the strict mapping,
    // over the one service.
    let spend: Vec<serde_json::Value> = crate::ship::search(&es, &format!("{prefix}-metrics-*"))
        .await
        .into_iter()
        .filter(|d| d["kind"] == "cloudwatch_spend")
        .collect();
    assert!(!spend.is_empty(), "no spend document");
    for d in &spend {
        assert_eq!(d["services"], 1, "{d}");
        let month = d["cloudwatch_usd_month"].as_f64().unwrap();
        let each = d["cloudwatch_usd_per_service_month"].as_f64().unwrap();
        assert!(month >= 0.0 && (month - each).abs() < 1e-9, "{d}");
    }
}

/// A command to try: what it is, its arguments, its environment.
type Invocation<'a> = (&'a str, Vec<String>, Vec<(&'a str, String)>);

/// Runs a command; its status and everything it printed.
fn printed(cmd: &mut std::process::Command) -> (i32, String) {
    let (code, out, err) = crate::support::run(cmd);
    (code, format!("{out}{err}"))
}

#[test]
fn credentials_in_a_url_are_refused_everywhere_with_exit_2_and_never_shown() {
    use crate::support::{ecscale, write};
    let secret = "s3cr3t-9f2e";
    let url = format!("http://elastic:{secret}@127.0.0.1:9");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let config = write(
        dir.path(),
        "ecscale.yaml",
        &format!("schedule: {{interval: 30s}}\nclusters:\n  - name: production\n    services: [web]\nsink:\n  elasticsearch: {{url: '{url}'}}\n"),
    );
    let plain = write(
        dir.path(),
        "plain.yaml",
        "schedule: {interval: 30s}\nclusters:\n  - name: production\n    services: [web]\n",
    );
    let plan = write(
        dir.path(),
        "plan.yaml",
        "targets: [{url: 'http://127.0.0.1:9/'}]\nphases: [{duration: 1s, rate: 1}]\n",
    );
    let c = |p: &Path| p.to_str().unwrap().to_string();
    let commands: Vec<Invocation> = vec![
        (
            "validate",
            vec!["validate".into(), "--config".into(), c(&config)],
            vec![],
        ),
        (
            "run",
            vec![
                "run".into(),
                "--ticks".into(),
                "1".into(),
                "--config".into(),
                c(&config),
            ],
            vec![],
        ),
        (
            "setup --config",
            vec!["setup".into(), "--config".into(), c(&config)],
            vec![],
        ),
        (
            "setup --es",
            vec!["setup".into(), "--es".into(), url.clone()],
            vec![],
        ),
        (
            "replay --es",
            vec![
                "ship".into(),
                "replay".into(),
                c(&spool),
                "--es".into(),
                url.clone(),
            ],
            vec![],
        ),
        (
            "replay --config",
            vec![
                "ship".into(),
                "replay".into(),
                c(&spool),
                "--config".into(),
                c(&config),
            ],
            vec![],
        ),
        (
            "demo --es",
            vec!["demo".into(), "--es".into(), url.clone(), "--quiet".into()],
            vec![],
        ),
        (
            "stress --config",
            vec![
                "stress".into(),
                "--plan".into(),
                c(&plan),
                "--config".into(),
                c(&config),
            ],
            vec![],
        ),
        (
            "ECSCALE_ES_URL validate",
            vec!["validate".into(), "--config".into(), c(&plain)],
            vec![("ECSCALE_ES_URL", url.clone())],
        ),
        (
            "ECSCALE_ES_URL run",
            vec![
                "run".into(),
                "--ticks".into(),
                "1".into(),
                "--config".into(),
                c(&plain),
            ],
            vec![("ECSCALE_ES_URL", url.clone())],
        ),
        (
            "ECSCALE_ES_URL setup",
            vec!["setup".into()],
            vec![("ECSCALE_ES_URL", url.clone())],
        ),
        // Not even a URL: the message still does not echo what stands before the host.
        (
            "setup --es broken",
            vec![
                "setup".into(),
                "--es".into(),
                format!("http://elastic:{secret}@[::1"),
            ],
            vec![],
        ),
    ];
    for (what, args, env) in commands {
        let mut cmd = ecscale();
        cmd.args(&args).current_dir(dir.path());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let (code, text) = printed(&mut cmd);
        assert_eq!(code, 2, "{what}: {text}");
        assert!(!text.contains(secret), "{what} printed the secret: {text}");
        assert!(
            text.contains("***@"),
            "{what} names the URL without its credentials: {text}"
        );
    }
}

#[tokio::test]
async fn passwords_and_api_keys_never_appear_in_what_the_binary_prints() {
    use crate::support::fake::{serve, Reply};
    use crate::support::{ecscale, write};
    let (password, key) = ("pw-77a1c9", "key-5d09e3");
    // An endpoint that refuses everything, echoing the Authorization header it got.
    let (url, _) = serve(|req| {
        let echo = req.header("authorization").unwrap_or("").to_string();
        Reply::json(401, format!(r#"{{"error":"denied for {echo}"}}"#))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    for (name, auth) in [
        ("basic.yaml", "username: elastic, password_env: ECSCALE_TEST_PW"),
        ("key.yaml", "api_key_env: ECSCALE_TEST_KEY"),
    ] {
        let config = write(
            dir.path(),
            name,
            &format!("schedule: {{interval: 30s}}\nclusters:\n  - name: production\n    services: [web]\nsink:\n  elasticsearch: {{url: '{url}', {auth}, timeout: 2s}}\n  spool: {{dir: spool}}\n"),
        );
        for args in [
            vec!["setup", "--config"],
            vec![
                "ship",
                "replay",
                spool.to_str().unwrap(),
                "--max-wait",
                "2s",
                "--config",
            ],
        ] {
            let mut cmd = ecscale();
            cmd.args(&args)
                .arg(&config)
                .env("ECSCALE_TEST_PW", password)
                .env("ECSCALE_TEST_KEY", key)
                .env("ECSCALE_LOG", "debug");
            let out = tokio::task::spawn_blocking(move || printed(&mut cmd))
                .await
                .unwrap();
            let (code, text) = out;
            assert_ne!(code, 0, "{args:?}: {text}");
            assert!(text.contains("401"), "{args:?}: {text}");
            let encoded = [password, key, "ZWxhc3RpYzpwdy03N2ExYzk="];
            for s in encoded {
                assert!(!text.contains(s), "{args:?} {name} printed {s}: {text}");
            }
        }
    }
}

#[test]
fn a_spool_too_small_for_a_tick_is_refused_by_validate_and_run_alike() {
    use crate::support::{ecscale, write};
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "ecscale.yaml",
        "schedule: {interval: 30s}\nclusters:\n  - name: production\n    services:\n      - {name: web, target_group: targetgroup/web/1, load_balancer: app/alb/2}\nsink:\n  spool: {dir: spool, max_size: 16KiB}\n",
    );
    for cmd in ["validate", "run"] {
        let (code, text) = printed(ecscale().args([cmd, "--config"]).arg(&config));
        assert_eq!(code, 2, "{cmd}: {text}");
        assert!(
            text.contains(
                "sink.spool.max_size 16 KiB cannot hold a tick's documents: about 81 documents (87 KiB)"
            ) && text.contains("give at least"),
            "{cmd}: {text}"
        );
    }
}

/// Waits until the worker's /metrics counts an error of `kind` in the ship stage.
async fn wait_for_error(addr: &str, kind: &str, what: &str, secs: u64) {
    let series = format!("ecscale_ship_errors_total{{kind=\"{kind}\"}}");
    wait_until(what, Duration::from_secs(secs), || {
        let (addr, series) = (addr.to_string(), series.clone());
        async move { value(&scrape(&addr).await.0, &series) >= 1.0 }
    })
    .await;
}

/// A scrape taken while `/healthz` says shipping is degraded (the first within 30 s); the last
/// one taken when it never did, for the caller's assertions to show.
async fn scrape_degraded(addr: &str) -> (String, u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = scrape(addr).await;
        if got.2.starts_with("degraded") || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The spool's folder removed (`rm -rf`) while Elasticsearch is down: the folder is made again,
/// what vanished with it is counted lost (documents and segments, in the stats and in
/// `/metrics`), and once Elasticsearch is back the accounting is exact: spooled = delivered +
/// dead-lettered + dropped + lost, and Elasticsearch holds exactly what was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_folder_removed_while_elasticsearch_is_down_is_made_again_and_the_loss_counted() {
    let es = es_url();
    let gate = Gate::start(&es, Mode::Down).await;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    let prefix = unique("it-rmspool").to_lowercase();
    let r = rig(&sink(&dir, &gate.url, &prefix, OnFull::Block)).await;
    let all = docs(&prefix, 0, 600);
    produce(&r.shipper, all[..300].to_vec()).await.unwrap();
    let s = r.shipper.clone();
    wait_until("the first 300 spooled", Duration::from_secs(30), || {
        let s = s.clone();
        async move { s.stats().spooled == 300 }
    })
    .await;
    assert_eq!(r.shipper.stats().delivered, 0, "Elasticsearch is down");
    std::fs::remove_dir_all(&dir).unwrap();
    produce(&r.shipper, all[300..].to_vec()).await.unwrap();
    let s = r.shipper.clone();
    wait_until("the rest spooled", Duration::from_secs(30), || {
        let s = s.clone();
        async move { s.stats().spooled == 600 }
    })
    .await;
    assert!(dir.is_dir(), "the folder is made again");
    gate.set(Mode::Open);
    // Until every spooled document is accounted for: delivered, or counted lost (a segment the
    // sender had already read is still delivered; one that waited on disk is lost).
    let s = r.shipper.clone();
    wait_until(
        "every spooled document accounted for",
        Duration::from_secs(90),
        || {
            let s = s.clone();
            async move {
                let t = s.stats();
                t.pending == 0 && t.delivered + t.dead_lettered + t.dropped + t.lost == t.spooled
            }
        },
    )
    .await;
    let s = r.shipper.stats();
    assert_eq!((s.queued, s.spooled, s.not_spooled), (600, 600, 0), "{s:?}");
    assert_eq!((s.dead_lettered, s.dropped), (0, 0), "{s:?}");
    assert!(
        s.delivered >= 300,
        "what came after the folder went arrives: {s:?}"
    );
    assert_eq!(s.lost > 0, s.lost_segments > 0, "{s:?}");
    assert_eq!(
        count(&es, &format!("{prefix}-metrics-*")).await,
        s.delivered,
        "{s:?}"
    );
    let (metrics, _, _) = scrape(&r.addr.to_string()).await;
    assert_eq!(
        value(&metrics, "ecscale_ship_documents_total{state=\"lost\"}"),
        s.lost as f64,
        "{metrics}"
    );
}
