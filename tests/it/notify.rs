//! Notifications against local webhooks: what arrives, in which form, and the exact count of
//! what did not (a webhook that hangs, one that answers 500, a queue that fills).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ecscale::config::{EventKind, NotifyFormat, NotifyTarget, UrlSource};
use ecscale::usage::ApiMeter;
use ecscale::worker::metrics::Metrics;
use ecscale::worker::notify::{Event, Notifier};

use crate::support::webhook::{Answer, Webhook};

fn target(name: &str, url: &str) -> NotifyTarget {
    NotifyTarget {
        name: name.into(),
        url: UrlSource::Literal(url.into()),
        format: NotifyFormat::Json,
        events: EventKind::ALL.to_vec(),
        bearer_token_env: None,
        queue: 100,
        per_minute: 6000,
        timeout: Duration::from_secs(5),
        retries: 3,
        span: Default::default(),
    }
}

fn action(i: u32) -> Event {
    Event::new(
        EventKind::Action,
        Utc::now(),
        Some("c/web".into()),
        format!("c/web: {i} → {}", i + 1),
    )
    .with("from", i)
    .with("to", i + 1)
}

fn counts(m: &Metrics, name: &str) -> [u64; 4] {
    ["offered", "sent", "failed", "dropped"].map(|r| m.notifications(name, r))
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_failing_webhook_holds_nothing_up_and_every_event_is_counted_once() {
    let (good, hang, fail) = (
        Webhook::start(Answer::Ok).await,
        Webhook::start(Answer::Hang).await,
        Webhook::start(Answer::Status(500)).await,
    );
    std::env::set_var("IT_NOTIFY_TOKEN", "s3cret");
    let mut ok = target("good", &good.url);
    ok.bearer_token_env = Some("IT_NOTIFY_TOKEN".into());
    let mut hanging = target("hang", &hang.url);
    (hanging.queue, hanging.timeout, hanging.retries) = (3, Duration::from_millis(700), 0);
    let mut failing = target("fail", &fail.url);
    failing.retries = 1;
    let metrics = Arc::new(Metrics::new(ApiMeter::default(), Duration::from_secs(60)));
    let n = Notifier::start(&[ok, hanging, failing], "it-worker", metrics.clone()).unwrap();
    // Offering never waits: ten events while one webhook hangs and another fails. The first
    // is in flight at the hanging webhook before the other nine are offered.
    n.send(&action(0));
    until("the first event at the hanging webhook", || {
        hang.bodies().len() == 1
    })
    .await;
    let offered = std::time::Instant::now();
    for i in 1..10 {
        n.send(&action(i));
    }
    assert!(
        offered.elapsed() < Duration::from_millis(500),
        "{:?}",
        offered.elapsed()
    );
    // The hanging target holds one in flight and 3 queued; the other 6 are dropped at once.
    assert_eq!(counts(&metrics, "hang"), [10, 0, 0, 6]);
    until("the good webhook's ten", || good.bodies().len() == 10).await;
    let bodies = good.bodies();
    assert_eq!(bodies[0]["kind"], "action");
    assert_eq!(bodies[0]["worker"], "it-worker");
    assert_eq!(bodies[0]["target"], "c/web");
    assert_eq!(
        (bodies[3]["from"].as_u64(), bodies[3]["to"].as_u64()),
        (Some(3), Some(4))
    );
    assert!(good
        .authorizations()
        .iter()
        .all(|a| a.as_deref() == Some("Bearer s3cret")));
    // The failing one is tried twice (a 500 is retried once) before it counts as failed.
    until("a failure after its retry", || {
        metrics.notifications("fail", "failed") >= 1
    })
    .await;
    assert!(fail.bodies().len() >= 2, "{}", fail.bodies().len());
    // Shut down with 2 s of grace: what is left then is dropped, and counted.
    n.finish(tokio::time::Instant::now() + Duration::from_secs(2))
        .await;
    assert_eq!(counts(&metrics, "good"), [10, 10, 0, 0]);
    for name in ["hang", "fail"] {
        let [offered, sent, failed, dropped] = counts(&metrics, name);
        assert_eq!(offered, 10, "{name}");
        assert_eq!(sent, 0, "{name}");
        assert_eq!(
            sent + failed + dropped,
            offered,
            "{name}: {failed} failed, {dropped} dropped"
        );
        assert!(failed >= 1, "{name}: nothing failed");
    }
    // A failure after each 700 ms timeout: the hanging webhook saw each event it failed on.
    assert!(hang.bodies().len() as u64 >= metrics.notifications("hang", "failed"));
    let text = metrics.render();
    assert!(
        text.contains("ecscale_notifications_total{result=\"dropped\",target=\"hang\"}")
            || text.contains("ecscale_notifications_total{target=\"hang\",result=\"dropped\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_error_is_said_once_and_again_when_it_comes_back() {
    let hook = Webhook::start(Answer::Ok).await;
    let mut slack = target("chat", &hook.url);
    slack.format = NotifyFormat::Slack;
    slack.events = vec![EventKind::Error, EventKind::Refusal];
    let metrics = Arc::new(Metrics::new(ApiMeter::default(), Duration::from_secs(60)));
    let n = Notifier::start(&[slack], "w1", metrics.clone()).unwrap();
    let error = |text: &str| Event::new(EventKind::Error, Utc::now(), None, text.into());
    // Tick 1 and 2: the same problem; tick 3: another one too; tick 4: none; tick 5: back.
    n.tick(vec![error("ecs: DescribeServices timed out"), action(1)]);
    n.tick(vec![error("ecs: DescribeServices timed out")]);
    n.tick(vec![
        error("ecs: DescribeServices timed out"),
        error("asg/x: not found"),
    ]);
    n.tick(vec![]);
    n.tick(vec![error("ecs: DescribeServices timed out")]);
    n.finish(tokio::time::Instant::now() + Duration::from_secs(5))
        .await;
    let texts: Vec<String> = hook
        .bodies()
        .iter()
        .map(|b| b["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "ecscale (w1) error: ecs: DescribeServices timed out",
            "ecscale (w1) error: asg/x: not found",
            "ecscale (w1) error: ecs: DescribeServices timed out",
        ],
        "the action is not among the kinds this target wants"
    );
    // Slack's body is the text alone.
    assert_eq!(hook.bodies()[0].as_object().unwrap().len(), 1);
    assert_eq!(counts(&metrics, "chat"), [3, 3, 0, 0]);
}

#[tokio::test]
async fn a_missing_secret_variable_is_named_and_nothing_starts() {
    let mut t = target("oncall", "http://127.0.0.1:9/");
    t.url = UrlSource::Env("IT_NOTIFY_UNSET_URL".into());
    let metrics = Arc::new(Metrics::new(ApiMeter::default(), Duration::from_secs(60)));
    let err = Notifier::start(&[t], "w", metrics).err().unwrap();
    assert_eq!(
        err,
        "notify `oncall`: environment variable IT_NOTIFY_UNSET_URL (named by url_env) is not set"
    );
}
