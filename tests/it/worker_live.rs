//! A running `ecscale run` against moto, changed while it runs: its files reloaded (SIGHUP,
//! `POST /reload`, the file watcher; editors' two ways of saving), and its notifications
//! pushed to local webhooks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::support::free_port;
use crate::support::webhook::{Answer, Webhook};
use crate::worker::{mins, minute, stage, Stage};

/// A worker process serving its endpoints on `port`, its log in `log`.
struct Live {
    child: tokio::process::Child,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Live {
    fn start(config: &Path, port: u16) -> Live {
        let log = config.with_extension("log");
        let mut cmd = crate::support::ecscale();
        cmd.args(["--log", "info", "run", "--config"]).arg(config);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Live {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match self.http.get(format!("{}{path}", self.base)).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    async fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status").await;
        if code != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap()
    }

    async fn post_reload(&self) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}/reload", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits (up to 40 s) until `/status` satisfies `ok`; returns it.
    async fn until(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let s = self.status().await;
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "timed out waiting for {what}; last /status: {s}\nlog:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A tick that started after `t`.
    async fn tick_after(&self, t: DateTime<Utc>) -> serde_json::Value {
        self.until("a tick after the reload", |s| {
            s["last_tick"]
                .as_str()
                .and_then(|x| x.parse::<DateTime<Utc>>().ok())
                .is_some_and(|at| at > t)
        })
        .await
    }

    /// Waits (up to 40 s) for `n` more ticks.
    async fn more_ticks(&self, n: u64) {
        let ticks = |text: &str| metric(text, "ecscale_ticks_total ");
        let from = ticks(&self.get("/metrics").await.1);
        let start = std::time::Instant::now();
        while ticks(&self.get("/metrics").await.1) < from + n {
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "fewer than {n} ticks in 40 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// SIGTERM, then its log.
    async fn stop(mut self) -> String {
        self.signal("-TERM");
        tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Saves like an editor that writes a temporary file and renames it over the old one.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A worker config on the stage with its endpoints on `port` and these extra `worker:` lines.
fn live_config(s: &Stage, name: &str, port: u16, worker: &str) -> PathBuf {
    let path = s.config_named(
        name,
        &s.proxy.url,
        &["web"],
        1,
        &format!("  metrics_addr: '127.0.0.1:{port}'\n  state: {{file: {name}.state.json}}\n{worker}"),
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("  metrics_addr: 'off'\n", "", 1);
    std::fs::write(&path, text).unwrap();
    path
}

/// A running worker that has just scaled `web` out, and its files.
struct Scene {
    s: Stage,
    live: Live,
    config: PathBuf,
    policies: PathBuf,
    /// The policy file as written.
    original: String,
    /// `/status` once web is at 4.
    first: serde_json::Value,
}

/// A worker on a new stage, once it has scaled `web` 2 → 4 (90 % CPU for a target of 50 %;
/// a 5-minute scale-out cooldown from then).
async fn scaled_out(region: &str, prefix: &str, name: &str, worker: &str) -> Scene {
    let s = stage(region, prefix).await;
    let port = free_port();
    let config = live_config(&s, name, port, worker);
    let policies = s.dir.path().join("policies.yaml");
    let original = std::fs::read_to_string(&policies).unwrap();
    let t0 = minute(Utc::now());
    s.cpu("web", t0 - mins(15), t0 + mins(10), 90.0).await;
    let live = Live::start(&config, port);
    let first = live
        .until("the scale-out", |v| v["targets"][0]["last_action"]["to"] == 4)
        .await;
    Scene {
        s,
        live,
        config,
        policies,
        original,
        first,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_sighup_and_post_keep_cooldowns_and_survive_a_broken_edit() {
    let Scene {
        s,
        live,
        config,
        policies,
        original,
        first,
    } = scaled_out("ap-northeast-1", "it-reload", "live.yaml", "  watch: 'off'\n").await;
    let target = format!("{}/web", s.cluster);
    let cooldown = first["targets"][0]["scale_out_cooldown_until"].clone();
    assert!(cooldown.is_string(), "{first}");
    assert_eq!(first["reload"]["files"].as_array().unwrap().len(), 2, "{first}");

    // 1. SIGHUP after an editor's rename: a target of 25 % now wants 8, but the cooldown the
    //    worker had before the reload still holds it at 4.
    save_by_rename(&policies, &original.replace("target: 50", "target: 25"));
    let asked = Utc::now();
    live.signal("-HUP");
    live.until("the SIGHUP reload", |v| {
        v["reload"]["last_trigger"] == "sighup" && v["reload"]["last_result"] == "ok"
    })
    .await;
    let after = live.tick_after(asked + chrono::TimeDelta::seconds(1)).await;
    let web = &after["targets"][0];
    assert_eq!(web["target"], target.as_str());
    assert_eq!(
        web["scale_out_cooldown_until"], cooldown,
        "the cooldown was lost: {web}"
    );
    assert!(web["reason"].as_str().unwrap().contains("25"), "{web}");
    assert_eq!(s.desired("web").await, 4);

    // 2. A broken edit, saved by truncate-then-write: POST /reload refuses it with its line,
    //    the old policy keeps running, /healthz and /status say so, and it is counted.
    std::fs::write(
        &policies,
        original
            .replace("target: 50", "target: 25")
            .replace("max: 8", "max: lots"),
    )
    .unwrap();
    let (code, body) = live.post_reload().await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("policies.yaml:4:") && body.contains("max"),
        "{body}"
    );
    let (code, health) = live.get("/healthz").await;
    assert_eq!(code, 200, "{health}");
    assert!(
        health.starts_with("degraded: the last reload failed: "),
        "{health}"
    );
    assert!(health.contains("policies.yaml:4:"), "{health}");
    let broken = live.tick_after(Utc::now() + chrono::TimeDelta::seconds(1)).await;
    assert_eq!(broken["reload"]["last_result"], "failed", "{broken}");
    assert!(broken["reload"]["mistakes"][0]
        .as_str()
        .unwrap()
        .contains("policies.yaml:4:"));
    assert!(
        broken["targets"][0]["reason"].as_str().unwrap().contains("25"),
        "{broken}"
    );

    // 3. A setting that cannot change live is named, and refused as a whole.
    let config_text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &policies,
        original
            .replace("target: 50", "target: 25")
            .replace("max: 8", "max: 3"),
    )
    .unwrap();
    std::fs::write(
        &config,
        config_text.replace("state: {file: live.yaml.state.json}", "state: {file: other.json}"),
    )
    .unwrap();
    let (code, body) = live.post_reload().await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("worker.state cannot change while the worker runs"),
        "{body}"
    );
    assert_eq!(s.desired("web").await, 4);

    // 4. The good edit: max 3 takes effect on the next tick (4 → 3), the mistakes are gone.
    std::fs::write(&config, &config_text).unwrap();
    let asked = Utc::now();
    let (code, body) = live.post_reload().await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ok: 1 target policies"), "{body}");
    live.tick_after(asked + chrono::TimeDelta::seconds(1)).await;
    assert_eq!(s.desired("web").await, 3);
    let (_, health) = live.get("/healthz").await;
    assert!(health.starts_with("ok: "), "{health}");
    // The same files again: nothing to do.
    let (code, body) = live.post_reload().await;
    assert_eq!(
        (code, body.as_str()),
        (200, "unchanged: the files are as they were\n")
    );
    let (_, text) = live.get("/metrics").await;
    let count = |r: &str| metric(&text, &format!("ecscale_config_reloads_total{{result=\"{r}\"}}"));
    assert_eq!(
        (count("ok"), count("failed"), count("unchanged")),
        (2, 2, 1),
        "{text}"
    );
    live.stop().await;
}

/// Hostile reloads while the worker runs: a policy nested 100,000 levels deep is refused with its
/// place (the worker keeps running, not a stack overflow), and a policy file deleted from a
/// glob's folder leaves its target orphaned, with its state, degraded and said, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_deep_policy_is_refused_and_a_vanished_file_leaves_its_target_orphaned() {
    let Scene {
        s,
        live,
        config,
        policies,
        original,
        first,
    } = scaled_out("ap-southeast-2", "it-orphan", "orphan.yaml", "  watch: 'off'\n").await;
    let cooldown = first["targets"][0]["scale_out_cooldown_until"].clone();
    // The policies move into a folder the config names by a glob.
    let folder = s.dir.path().join("pol");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("web.yaml"), &original).unwrap();
    // A second file in the folder, for the group: the glob still matches when web.yaml goes.
    std::fs::write(
        folder.join("group.yaml"),
        format!(
            "target: {{auto_scaling_group: {}}}\nmin: 1\nmax: 4\nrules:\n  - {{kind: target_tracking, metric: cpu_reservation, target: 80}}\n",
            s.group
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("policies: [policies.yaml]", "policies: ['pol/*.yaml']"),
    )
    .unwrap();
    std::fs::remove_file(&policies).unwrap();
    let (code, body) = live.post_reload().await;
    assert_eq!(code, 200, "{body}");

    // 1. An expression 100,000 levels deep: refused at its place, the worker runs on.
    let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    std::fs::write(
        folder.join("web.yaml"),
        original.replace(
            "rules:\n",
            &format!("rules:\n  - {{name: deep, kind: expression, expression: '{deep}'}}\n"),
        ),
    )
    .unwrap();
    let (code, body) = live.post_reload().await;
    assert_eq!(code, 422, "{}", &body[..body.len().min(400)]);
    assert!(
        body.contains("nests deeper than 64 levels"),
        "{}",
        &body[..body.len().min(400)]
    );
    let (code, health) = live.get("/healthz").await;
    assert_eq!(code, 200, "still running: {health}");

    // 2. The file removed: the target stays, with its cooldown, orphaned and said so.
    std::fs::remove_file(folder.join("web.yaml")).unwrap();
    let (code, body) = live.post_reload().await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("orphaned, their policy file vanished: "), "{body}");
    assert!(!body.contains("removed (their state dropped)"), "{body}");
    let (_, health) = live.get("/healthz").await;
    assert!(health.starts_with("degraded: orphaned targets: "), "{health}");
    let after = live.tick_after(Utc::now() + chrono::TimeDelta::seconds(1)).await;
    let web = after["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == format!("{}/web", s.cluster).as_str())
        .unwrap_or_else(|| panic!("web is still a target: {after}"));
    assert_eq!(web["scale_out_cooldown_until"], cooldown, "{after}");
    assert!(
        after["reload"]["orphaned"][0]
            .as_str()
            .unwrap()
            .contains("vanished at"),
        "{after}"
    );
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_takes_a_renamed_file_and_a_slow_truncate_then_write_whole() {
    let Scene {
        s,
        live,
        policies,
        original,
        ..
    } = scaled_out("ap-northeast-2", "it-watch", "watched.yaml", "  watch: 200ms\n").await;
    // An editor's atomic save.
    save_by_rename(&policies, &original.replace("max: 8", "max: 3"));
    live.until("the watched rename", |v| {
        v["reload"]["last_trigger"] == "watch" && v["reload"]["last_result"] == "ok"
    })
    .await;
    live.tick_after(Utc::now() + chrono::TimeDelta::seconds(1)).await;
    assert_eq!(s.desired("web").await, 3);
    // Truncated, then written in two pieces 150 ms apart: the half-written file (which would
    // not validate) is never read.
    let text = original.replace("max: 8", "max: 2");
    let cut = text.find("max: 2").unwrap() + 4;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&policies).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        f.write_all(&text.as_bytes()[..cut]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        f.write_all(&text.as_bytes()[cut..]).unwrap();
    }
    let start = std::time::Instant::now();
    while s.desired("web").await != 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "max 2 never applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, metrics) = live.get("/metrics").await;
    let count = |r: &str| {
        metric(
            &metrics,
            &format!("ecscale_config_reloads_total{{result=\"{r}\"}}"),
        )
    };
    assert_eq!((count("ok"), count("failed")), (2, 0), "{metrics}");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_kind_arrives_once_and_bad_webhooks_never_hold_a_tick() {
    let s = stage("ap-northeast-3", "it-notify").await;
    let table = crate::support::unique("lease");
    s.moto.table(&table).await.unwrap();
    // `api` is scaled by Application Auto Scaling too: ecscale refuses to touch it. `ghost`
    // is not in the cluster: a problem on every tick.
    let td = s
        .moto
        .task_definition(&crate::support::unique("api"), 256, 512)
        .await
        .unwrap();
    s.moto.service(&s.cluster, "api", &td, 2, &[]).await.unwrap();
    s.moto.scalable_target(&s.cluster, "api").await.unwrap();
    let (good, hang, fail) = (
        Webhook::start(Answer::Ok).await,
        Webhook::start(Answer::Hang).await,
        Webhook::start(Answer::Status(500)).await,
    );
    let port = free_port();
    let config = s.config_named(
        "notify.yaml",
        &s.proxy.url,
        &["web", "api", "ghost"],
        1,
        &format!(
            "  state: {{dynamodb_table: {table}}}\n  leader: {{dynamodb_table: {table}, lease: 3s, id: it-notifier}}\n  watch: 'off'\n  shutdown_grace: 3s\nnotify:\n  - {{name: chat, url: '{}'}}\n  - {{name: stuck, url: '{}', timeout: 5s, retries: 0}}\n  - {{name: broken, url: '{}', retries: 1, events: [action, error]}}\n",
            good.url, hang.url, fail.url
        ),
    );
    // No capacity stage here (its group's own actions would be events too), and the
    // endpoints served.
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("capacity:").unwrap();
    let end = text[start..].find("policies:").unwrap() + start;
    let text = format!("{}{}", &text[..start], &text[end..]).replacen(
        "  metrics_addr: 'off'\n",
        &format!("  metrics_addr: '127.0.0.1:{port}'\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let t0 = minute(Utc::now());
    s.cpu("web", t0 - mins(15), t0 + mins(10), 90.0).await;
    s.cpu("api", t0 - mins(15), t0 + mins(10), 90.0).await;
    let live = Live::start(&config, port);
    live.until("the scale-out", |v| {
        v["targets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["last_action"]["to"] == 4))
    })
    .await;
    // A broken policy file, reloaded: one reload event.
    let policies = s.dir.path().join("policies.yaml");
    let original = std::fs::read_to_string(&policies).unwrap();
    std::fs::write(&policies, original.replacen("min: 1", "min: -1", 1)).unwrap();
    assert_eq!(live.post_reload().await.0, 422);
    live.more_ticks(5).await;
    // Ticks never waited for the webhook that hangs (5 s a try) nor the one that fails.
    let (_, metrics) = live.get("/metrics").await;
    let ticks = metric(&metrics, "ecscale_ticks_total ");
    let quick = metric(&metrics, "ecscale_tick_duration_seconds_bucket{le=\"2.5\"} ");
    assert!(
        ticks >= 6 && quick == ticks,
        "{quick} of {ticks} ticks within 2.5 s\n{metrics}"
    );
    assert_eq!(metric(&metrics, "ecscale_ticks_skipped_total "), 0, "{metrics}");
    let log = live.stop().await;

    let bodies = good.bodies();
    let of =
        |kind: &str| -> Vec<&serde_json::Value> { bodies.iter().filter(|b| b["kind"] == kind).collect() };
    let one = |kind: &str| {
        let v = of(kind);
        assert_eq!(v.len(), 1, "{kind}: {v:?}\nall: {bodies:?}");
        v[0].clone()
    };
    let action = one("action");
    assert_eq!(action["target"], format!("{}/web", s.cluster));
    assert_eq!(
        (action["from"].as_u64(), action["to"].as_u64()),
        (Some(2), Some(4))
    );
    let refusal = one("refusal");
    assert_eq!(refusal["target"], format!("{}/api", s.cluster));
    assert!(
        refusal["text"]
            .as_str()
            .unwrap()
            .contains("Application Auto Scaling"),
        "{refusal}"
    );
    let leader = one("leader");
    assert_eq!(leader["leading"], true);
    assert!(
        leader["text"].as_str().unwrap().contains("it-notifier"),
        "{leader}"
    );
    let reload = one("reload");
    assert!(
        reload["text"].as_str().unwrap().contains("policies.yaml:"),
        "{reload}"
    );
    // Errors: each distinct problem once, though it was there on every tick since.
    let errors = of("error");
    assert!(!errors.is_empty(), "{bodies:?}");
    let mut texts: Vec<&str> = errors.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert!(texts.iter().any(|t| t.contains("ghost")), "{texts:?}");
    let n = texts.len();
    texts.dedup();
    assert_eq!(texts.len(), n, "an error said twice: {texts:?}");
    // Exact accounting per target at shutdown.
    let line = |name: &str| {
        log.lines()
            .find(|l| l.contains(&format!("notify `{name}`: ")))
            .unwrap_or_else(|| panic!("no summary for {name}:\n{log}"))
            .to_string()
    };
    let total = bodies.len();
    assert!(
        line("chat").contains(&format!(
            "{total} events offered: {total} sent, 0 failed, 0 dropped"
        )),
        "{}",
        line("chat")
    );
    for name in ["stuck", "broken"] {
        let l = line(name);
        let nums: Vec<u64> = l
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        let [offered, sent, failed, dropped] = nums[nums.len() - 4..] else {
            panic!("{l}")
        };
        assert_eq!((sent, failed + dropped), (0, offered), "{l}");
        assert!(failed >= 1, "{l}");
    }
    assert!(!hang.bodies().is_empty() && fail.bodies().len() >= 2);
}
