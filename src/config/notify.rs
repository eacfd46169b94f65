//! `notify:`: where the worker pushes its events (a JSON webhook, or Slack-compatible text).

use std::time::Duration;

use serde::Serialize;

use super::fields::{check_http_url, env_name};
use crate::read::yaml::{Node, Span, Value};
use crate::read::{read_named_list, Cx, FromNode};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A scale action taken (or, in a dry run, one that would have been).
    Action,
    /// An action refused (another autoscaler owns the service, the lease was lost, …).
    Refusal,
    /// A failed action, or a problem that was not there the tick before.
    Error,
    /// This worker became the leader, or stopped being it.
    Leader,
    /// A reload of the config or a policy file that failed (the last good files keep running).
    Reload,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Action,
        EventKind::Refusal,
        EventKind::Error,
        EventKind::Leader,
        EventKind::Reload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Action => "action",
            EventKind::Refusal => "refusal",
            EventKind::Error => "error",
            EventKind::Leader => "leader",
            EventKind::Reload => "reload",
        }
    }
}

/// The body a target is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// The event as a JSON object (`kind`, `at`, `worker`, `target`, `text` and the details).
    Json,
    /// `{"text": …}`: Slack's incoming webhooks, and the chat tools that copy them.
    Slack,
}

/// Where the webhook's URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// Written in the file (no credentials allowed in it).
    Literal(String),
    /// The name of an environment variable holding it (Slack's URLs are secrets).
    Env(String),
}

/// One notification target.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyTarget {
    pub name: String,
    pub url: UrlSource,
    pub format: NotifyFormat,
    /// The kinds sent (default: all).
    pub events: Vec<EventKind>,
    /// An environment variable holding a bearer token (sent as `Authorization: Bearer …`).
    pub bearer_token_env: Option<String>,
    /// Events waiting to be sent; past it, new events are dropped and counted.
    pub queue: usize,
    /// Requests per minute at most.
    pub per_minute: u32,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// Attempts after the first one for a 5xx, a 429, a timeout or a refused connection.
    pub retries: u32,
    pub span: Span,
}

const KEYS: &[&str] = &[
    "name",
    "url",
    "url_env",
    "format",
    "events",
    "bearer_token_env",
    "queue",
    "per_minute",
    "timeout",
    "retries",
];

fn read_events(n: &Node, p: &str, cx: &mut Cx) -> Option<Vec<EventKind>> {
    let Value::Seq(items) = &n.value else {
        cx.error(
            n.span,
            p,
            format!("expected a list of event kinds, found {}", n.describe()),
        );
        return None;
    };
    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let s = String::from_node(item, &format!("{p}[{i}]"), cx)?;
        match EventKind::ALL.iter().find(|k| k.name() == s) {
            Some(k) if !out.contains(k) => out.push(*k),
            Some(_) => cx.error(item.span, &format!("{p}[{i}]"), format!("`{s}` is listed twice")),
            None => cx.error(
                item.span,
                &format!("{p}[{i}]"),
                format!("unknown event kind `{s}` (expected one of: {})", names.join(", ")),
            ),
        }
    }
    Some(out)
}

fn read_url(m: &mut crate::read::MapReader<'_>, cx: &mut Cx) -> Option<UrlSource> {
    let literal = m.opt_with(cx, "url", |n, p, cx| {
        let u = String::from_node(n, p, cx)?;
        check_http_url(&u).map_err(|e| cx.error(n.span, p, e)).ok()?;
        Some(u)
    });
    let env = m.opt_with(cx, "url_env", env_name);
    match (literal, env, m.has("url") || m.has("url_env")) {
        (Some(u), None, _) => Some(UrlSource::Literal(u)),
        (None, Some(v), _) => Some(UrlSource::Env(v)),
        (Some(_), Some(_), _) => {
            cx.error(
                m.span_of("url_env"),
                m.path(),
                "give `url` or `url_env`, not both",
            );
            None
        }
        (None, None, false) => {
            cx.error(
                m.span(),
                m.path(),
                "give `url`, or `url_env` naming a variable that holds it",
            );
            None
        }
        (None, None, true) => None,
    }
}

fn read_one(node: &Node, path: &str, cx: &mut Cx) -> Option<NotifyTarget> {
    let mut m = cx.map(node, path)?;
    let name = m.req::<String>(cx, "name");
    let url = read_url(&mut m, cx);
    let format = m
        .opt_with(cx, "format", |n, p, cx| {
            crate::read::one_of(n, p, cx, &["json", "slack"])
        })
        .map_or(NotifyFormat::Json, |f| match f.as_str() {
            "slack" => NotifyFormat::Slack,
            _ => NotifyFormat::Json,
        });
    let events = m
        .opt_with(cx, "events", read_events)
        .unwrap_or_else(|| EventKind::ALL.to_vec());
    let bearer_token_env = m.opt_with(cx, "bearer_token_env", env_name);
    let queue = m.or(cx, "queue", 100usize);
    let per_minute = m.or(cx, "per_minute", 30u32);
    let timeout = m.or(cx, "timeout", Duration::from_secs(5));
    let retries = m.or(cx, "retries", 3u32);
    for (key, bad, bounds) in [
        ("queue", queue == 0 || queue > 100_000, "from 1 to 100000 events"),
        (
            "per_minute",
            per_minute == 0 || per_minute > 6_000,
            "from 1 to 6000 requests",
        ),
        (
            "timeout",
            timeout.is_zero() || timeout > Duration::from_secs(60),
            "above 0s and at most 60s",
        ),
        ("retries", retries > 10, "at most 10"),
    ] {
        if bad {
            cx.error(
                m.span_of(key),
                &crate::read::join(path, key),
                format!("must be {bounds}"),
            );
        }
    }
    m.finish(cx, KEYS);
    Some(NotifyTarget {
        name: name?,
        url: url?,
        format,
        events,
        bearer_token_env,
        queue,
        per_minute,
        timeout,
        retries,
        span: node.span,
    })
}

pub(super) fn read_notify(node: &Node, path: &str, cx: &mut Cx) -> Option<Vec<NotifyTarget>> {
    read_named_list(
        node,
        path,
        cx,
        ("notification target", "name"),
        |_, n, p, cx| read_one(n, p, cx),
        |t| &t.name,
    )
}
