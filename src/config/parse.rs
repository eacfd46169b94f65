//! Reading the config from YAML: the top level, `aws`, `schedule`, `collect`, `sink` and
//! `policies` (clusters, services and metrics are in `parse_clusters`). Each reader records
//! every mistake in the [`Cx`] and goes on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fields::{check_http_url, check_period, env_name, is_region};
use super::parse_clusters::read_clusters;
use super::schema::*;
use crate::read::yaml::Node;
use crate::read::{join, one_of, parse_bytes, Cx, FromNode, MapReader};

const TOP_KEYS: &[&str] = &[
    "aws",
    "schedule",
    "collect",
    "clusters",
    "capacity",
    "sink",
    "policies",
    "worker",
    "notify",
    "prometheus",
    "groups",
];

pub(super) fn read_config(root: &Node, cx: &mut Cx, base_dir: &Path, file: PathBuf) -> Option<Config> {
    let mut m = cx.map(root, "")?;
    let aws = m.or(cx, "aws", AwsSettings::default());
    let schedule = m.req::<Schedule>(cx, "schedule");
    let collect = m.or(cx, "collect", CollectSettings::default());
    let clusters = m.req_with(cx, "clusters", |n, p, cx| read_clusters(n, p, cx, &collect));
    let sink = m
        .opt_with(cx, "sink", |n, p, cx| read_sink(n, p, cx, base_dir))
        .unwrap_or_else(|| SinkSettings {
            spool: SpoolSettings {
                dir: base_dir.join("spool"),
                ..SpoolSettings::default()
            },
            ..SinkSettings::default()
        });
    let policies = m
        .opt_with(cx, "policies", |n, p, cx| read_policy_paths(n, p, cx, base_dir))
        .unwrap_or_default();
    let capacity = m
        .opt_with(cx, "capacity", super::worker::read_capacity)
        .unwrap_or_default();
    let worker = m
        .opt_with(cx, "worker", |n, p, cx| {
            super::worker::read_worker(n, p, cx, base_dir)
        })
        .unwrap_or_else(|| super::WorkerSettings::defaults(base_dir));
    let notify = m
        .opt_with(cx, "notify", super::notify::read_notify)
        .unwrap_or_default();
    let prometheus = m.opt_with(cx, "prometheus", read_prometheus).unwrap_or_default();
    let groups = m
        .opt_with(cx, "groups", |n, p, cx| {
            super::groups::read_groups(n, p, cx, &collect)
        })
        .unwrap_or_default();
    if let Some(list) = &clusters {
        super::groups::check_clusters(&groups, list, cx);
    }
    if let (Some(list), None) = (&clusters, &prometheus.url) {
        check_prometheus_urls(list, cx);
    }
    for (i, c) in capacity.iter().enumerate() {
        if let Some(first) = capacity[..i].iter().find(|o| o.cluster == c.cluster) {
            cx.error(
                c.span,
                "capacity",
                format!(
                    "auto_scaling_group {}: cluster `{}` already has a group ({}); one group per cluster (the tasks of a cluster are packed onto one group's instances)",
                    c.auto_scaling_group, c.cluster, first.auto_scaling_group
                ),
            );
        }
    }
    if let Some(list) = &clusters {
        for c in &capacity {
            if !list.iter().any(|k| k.name == c.cluster) {
                cx.error(
                    c.span,
                    "capacity",
                    format!(
                        "auto_scaling_group {}: cluster `{}` is not in `clusters`",
                        c.auto_scaling_group, c.cluster
                    ),
                );
            }
        }
    }
    m.finish(cx, TOP_KEYS);
    Some(Config {
        file,
        aws,
        schedule: schedule?,
        collect,
        clusters: clusters?,
        sink,
        policy_files: policies.files,
        policy_globs: policies.patterns,
        capacity,
        worker,
        notify,
        prometheus,
        groups,
    })
}

impl FromNode for AwsSettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let mut m = cx.map(node, path)?;
        let region = m.opt_with(cx, "region", |n, p, cx| {
            let r = String::from_node(n, p, cx)?;
            if is_region(&r) {
                Some(r)
            } else {
                cx.error(
                    n.span,
                    p,
                    format!("`{r}` does not look like an AWS region (e.g. us-east-1)"),
                );
                None
            }
        });
        let endpoint_url = m.opt_with(cx, "endpoint_url", |n, p, cx| {
            let s = String::from_node(n, p, cx)?;
            match check_http_url(&s) {
                Ok(()) => Some(s),
                Err(e) => {
                    cx.error(n.span, p, e);
                    None
                }
            }
        });
        let profile = m.opt(cx, "profile");
        let retry = m.or(cx, "retry", RetrySettings::default());
        let timeouts = m.or(cx, "timeouts", TimeoutSettings::default());
        let budget = m.or(cx, "budget", BudgetSettings::default());
        m.finish(
            cx,
            &["region", "endpoint_url", "profile", "retry", "timeouts", "budget"],
        );
        Some(AwsSettings {
            region,
            endpoint_url,
            profile,
            retry,
            timeouts,
            budget,
        })
    }
}

/// An `http://` or `https://` URL with a host.
/// How long CloudWatch keeps datapoints of `period` (then only coarser ones).
pub fn kept_at(period: Duration) -> Duration {
    const DAY: u64 = 86_400;
    Duration::from_secs(match period.as_secs() {
        0..=59 => 3 * 3600,
        60..=299 => 15 * DAY,
        300..=3599 => 63 * DAY,
        _ => 455 * DAY,
    })
}

fn positive(d: Duration, n: &Node, p: &str, cx: &mut Cx) -> Option<Duration> {
    if d.is_zero() {
        cx.error(n.span, p, "must be longer than zero");
        None
    } else {
        Some(d)
    }
}

fn read_positive(m: &mut MapReader<'_>, cx: &mut Cx, key: &str) -> Option<Duration> {
    m.opt_with(cx, key, |n, p, cx| {
        positive(Duration::from_node(n, p, cx)?, n, p, cx)
    })
}

impl FromNode for BudgetSettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let mut m = cx.map(node, path)?;
        let ecs_reads = m.opt_with(cx, "ecs_reads", read_share);
        m.finish(cx, &["ecs_reads"]);
        Some(BudgetSettings { ecs_reads })
    }
}

/// A share of a limit: `25%` or `0.25`, above 0 and at most all of it.
fn read_share(n: &Node, p: &str, cx: &mut Cx) -> Option<f64> {
    let s = n.as_scalar().unwrap_or_default().trim();
    let v = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok().map(|v| v / 100.0),
        None => s.parse::<f64>().ok(),
    };
    match v {
        Some(v) if v > 0.0 && v <= 1.0 => Some(v),
        _ => {
            cx.error(
                n.span,
                p,
                format!(
                    "expected a share such as 25% or 0.25 (above 0, at most 100%), found {}",
                    n.describe()
                ),
            );
            None
        }
    }
}

impl FromNode for RetrySettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let d = RetrySettings::default();
        let mut m = cx.map(node, path)?;
        let mode = m
            .opt_with(cx, "mode", |n, p, cx| one_of(n, p, cx, &["standard", "adaptive"]))
            .map(|s| {
                if s == "adaptive" {
                    RetryMode::Adaptive
                } else {
                    RetryMode::Standard
                }
            })
            .unwrap_or(d.mode);
        let max_attempts = m
            .opt_with(cx, "max_attempts", |n, p, cx| {
                let v = u32::from_node(n, p, cx)?;
                if (1..=20).contains(&v) {
                    Some(v)
                } else {
                    cx.error(n.span, p, format!("must be between 1 and 20, found {v}"));
                    None
                }
            })
            .unwrap_or(d.max_attempts);
        let initial_backoff = read_positive(&mut m, cx, "initial_backoff").unwrap_or(d.initial_backoff);
        let max_backoff = read_positive(&mut m, cx, "max_backoff").unwrap_or(d.max_backoff);
        if max_backoff < initial_backoff {
            cx.error(
                m.span_of("max_backoff"),
                &join(path, "max_backoff"),
                "must not be shorter than initial_backoff",
            );
        }
        m.finish(cx, &["mode", "max_attempts", "initial_backoff", "max_backoff"]);
        Some(RetrySettings {
            mode,
            max_attempts,
            initial_backoff,
            max_backoff,
        })
    }
}

impl FromNode for TimeoutSettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let d = TimeoutSettings::default();
        let mut m = cx.map(node, path)?;
        let connect = read_positive(&mut m, cx, "connect").unwrap_or(d.connect);
        let attempt = read_positive(&mut m, cx, "attempt").unwrap_or(d.attempt);
        let operation = read_positive(&mut m, cx, "operation").unwrap_or(d.operation);
        m.finish(cx, &["connect", "attempt", "operation"]);
        Some(TimeoutSettings {
            connect,
            attempt,
            operation,
        })
    }
}

impl FromNode for Schedule {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let mut m = cx.map(node, path)?;
        let interval = m.opt_with(cx, "interval", |n, p, cx| {
            let d = positive(Duration::from_node(n, p, cx)?, n, p, cx)?;
            if d < Duration::from_secs(1) {
                cx.error(n.span, p, "must be at least 1s");
                return None;
            }
            Some(d)
        });
        let cron = m.opt_with(cx, "cron", |n, p, cx| {
            let expr = String::from_node(n, p, cx)?;
            match parse_cron(&expr) {
                Ok(s) => Some(Schedule::Cron {
                    expression: expr,
                    schedule: Box::new(s),
                }),
                Err(e) => {
                    cx.error(n.span, p, e);
                    None
                }
            }
        });
        let both = m.has("interval") && m.has("cron");
        let neither =
            !m.has("interval") && !m.has("cron") && !m.misspelled("interval") && !m.misspelled("cron");
        let span = m.span();
        m.finish(cx, &["interval", "cron"]);
        if both {
            cx.error(span, path, "give either `interval` or `cron`, not both");
            return None;
        }
        if neither {
            cx.error(
                span,
                path,
                "give `interval` (e.g. 30s) or `cron` (e.g. \"*/30 * * * * *\")",
            );
        }
        interval.map(Schedule::Interval).or(cron)
    }
}

/// Parses a cron expression: 5 fields as in crontab, or 6 with seconds first (see
/// [`super::cron`]).
pub fn parse_cron(expr: &str) -> Result<super::cron::Cron, String> {
    super::cron::Cron::parse(expr)
}

impl FromNode for CollectSettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let d = CollectSettings::default();
        let mut m = cx.map(node, path)?;
        let period = m
            .opt_with(cx, "period", |n, p, cx| {
                check_period(Duration::from_node(n, p, cx)?, n, p, cx)
            })
            .unwrap_or(d.period);
        let delay = m.or(cx, "delay", d.delay);
        let given = read_positive(&mut m, cx, "lookback");
        let lookback = given.unwrap_or(d.lookback);
        let concurrency = m
            .opt_with(cx, "concurrency", |n, p, cx| {
                let v = usize::from_node(n, p, cx)?;
                if (1..=64).contains(&v) {
                    Some(v)
                } else {
                    cx.error(n.span, p, format!("must be between 1 and 64, found {v}"));
                    None
                }
            })
            .unwrap_or(d.concurrency);
        let container_instances = m.or(cx, "container_instances", d.container_instances);
        let pending_tasks = m.or(cx, "pending_tasks", d.pending_tasks);
        let high_resolution = m.or(cx, "high_resolution", d.high_resolution);
        let events = m.opt(cx, "events");
        if given.is_some() && lookback < period {
            cx.error(
                m.span_of("lookback"),
                &join(path, "lookback"),
                "must be at least one period long",
            );
        }
        let kept = kept_at(period);
        if given.is_some() && lookback > kept {
            cx.error(
                m.span_of("lookback"),
                &join(path, "lookback"),
                format!(
                    "CloudWatch keeps datapoints of a {} period for {} (under 1 minute: 3 hours; 1-minute: 15 days; 5-minute: 63 days; 1-hour: 455 days): an older part of the window comes back empty, and each pass would read it; at most {}",
                    humantime::format_duration(period),
                    humantime::format_duration(kept),
                    humantime::format_duration(kept)
                ),
            );
        }
        m.finish(
            cx,
            &[
                "period",
                "delay",
                "lookback",
                "concurrency",
                "container_instances",
                "pending_tasks",
                "high_resolution",
                "events",
            ],
        );
        Some(CollectSettings {
            period,
            delay,
            lookback,
            concurrency,
            container_instances,
            pending_tasks,
            high_resolution,
            events,
        })
    }
}

impl FromNode for EventsSettings {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let mut m = cx.map(node, path)?;
        let queue_url = m.req_with(cx, "queue_url", |n, p, cx| {
            let s = String::from_node(n, p, cx)?;
            match check_http_url(&s) {
                Ok(()) => Some(s),
                Err(e) => {
                    cx.error(n.span, p, e);
                    None
                }
            }
        });
        let reconcile = read_positive(&mut m, cx, "reconcile").unwrap_or(EventsSettings::DEFAULT_RECONCILE);
        m.finish(cx, &["queue_url", "reconcile"]);
        Some(EventsSettings {
            queue_url: queue_url?,
            reconcile,
        })
    }
}

fn read_sink(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<SinkSettings> {
    let mut m = cx.map(node, path)?;
    let d = SinkSettings::default();
    let index_prefix = m
        .opt_with(cx, "index_prefix", |n, p, cx| {
            let s = String::from_node(n, p, cx)?;
            let ok = s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            ok.then_some(s.clone()).or_else(|| {
                cx.error(
                    n.span,
                    p,
                    format!(
                        "`{s}`: index names are lowercase letters, digits, - and _, starting with a letter"
                    ),
                );
                None
            })
        })
        .unwrap_or(d.index_prefix);
    let elasticsearch = m.opt_with(cx, "elasticsearch", |n, p, cx| read_es(n, p, cx, base_dir));
    let spool = m
        .opt_with(cx, "spool", |n, p, cx| read_spool(n, p, cx, base_dir))
        .unwrap_or_else(|| SpoolSettings {
            dir: base_dir.join("spool"),
            ..SpoolSettings::default()
        });
    m.finish(cx, &["index_prefix", "elasticsearch", "spool"]);
    Some(SinkSettings {
        index_prefix,
        elasticsearch,
        spool,
    })
}

/// `prometheus:`: the server, its auth.
fn read_prometheus(node: &Node, path: &str, cx: &mut Cx) -> Option<PrometheusSettings> {
    let mut m = cx.map(node, path)?;
    let url = m.opt_with(cx, "url", |n, p, cx| {
        let u = String::from_node(n, p, cx)?;
        check_http_url(&u).map_err(|e| cx.error(n.span, p, e)).ok()?;
        Some(u)
    });
    let bearer_token_env = m.opt_with(cx, "bearer_token_env", env_name);
    let username = m.opt::<String>(cx, "username");
    let password_env = m.opt_with(cx, "password_env", env_name);
    let timeout = read_positive(&mut m, cx, "timeout");
    let sigv4 = m.opt_with(cx, "sigv4", |n, p, cx| {
        let mut s = cx.map(n, p)?;
        let region = s.opt_with(cx, "region", |n, p, cx| {
            let r = String::from_node(n, p, cx)?;
            is_region(&r).then_some(r.clone()).or_else(|| {
                cx.error(
                    n.span,
                    p,
                    format!("`{r}` does not look like an AWS region (e.g. us-east-1)"),
                );
                None
            })
        });
        let service = s.or(cx, "service", "aps".to_string());
        s.finish(cx, &["region", "service"]);
        Some(SigV4Settings { region, service })
    });
    if sigv4.is_some() && (bearer_token_env.is_some() || username.is_some()) {
        cx.error(
            m.span_of("sigv4"),
            path,
            "give one of sigv4 (the AWS credential chain), bearer_token_env, or username with password_env",
        );
    }
    if username.is_some() != password_env.is_some() {
        cx.error(
            m.span(),
            path,
            "basic auth needs both `username` and `password_env`",
        );
    }
    if bearer_token_env.is_some() && username.is_some() {
        cx.error(
            m.span_of("bearer_token_env"),
            path,
            "give basic auth (`username`, `password_env`) or `bearer_token_env`, not both",
        );
    }
    m.finish(
        cx,
        &[
            "url",
            "bearer_token_env",
            "username",
            "password_env",
            "timeout",
            "sigv4",
        ],
    );
    Some(PrometheusSettings {
        url,
        bearer_token_env,
        username,
        password_env,
        timeout,
        sigv4,
    })
}

/// Without a top-level `prometheus.url`, every Prometheus metric names its server.
fn check_prometheus_urls(clusters: &[ClusterSpec], cx: &mut Cx) {
    for c in clusters {
        let lists =
            std::iter::once((c.span, &c.metrics)).chain(c.services.iter().map(|s| (s.span, &s.metrics)));
        for (span, metrics) in lists {
            for m in metrics
                .iter()
                .filter(|m| m.prometheus.as_ref().is_some_and(|q| q.url.is_none()))
            {
                cx.error(
                    span,
                    "prometheus.url",
                    format!(
                        "metric `{}` reads Prometheus, but neither its `prometheus.url` nor a top-level `prometheus.url` is given",
                        m.id
                    ),
                );
            }
        }
    }
}

fn read_es(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<ElasticsearchSettings> {
    let mut m = cx.map(node, path)?;
    let url = m.req_with(cx, "url", |n, p, cx| {
        let u = String::from_node(n, p, cx)?;
        match check_http_url(&u) {
            Ok(()) => Some(u),
            Err(e) => {
                cx.error(n.span, p, e);
                None
            }
        }
    });
    let username = m.opt(cx, "username");
    let password_env = m.opt_with(cx, "password_env", env_name);
    let api_key_env = m.opt_with(cx, "api_key_env", env_name);
    let ca_file = m.opt::<String>(cx, "ca_file").map(|f| base_dir.join(f));
    let d = ElasticsearchSettings::new("");
    let replicas = m.or(cx, "replicas", d.replicas);
    let ilm_policy = m.opt(cx, "ilm_policy");
    let bulk_max_bytes = m
        .opt_with(cx, "bulk_max_size", |n, p, cx| {
            let s = String::from_node(n, p, cx)?;
            match parse_bytes(&s) {
                Ok(b) if (1024..=(100 << 20)).contains(&b) => Some(b),
                Ok(_) => {
                    cx.error(
                        n.span,
                        p,
                        "must be between 1KiB and 100MiB (5MiB is a good start)",
                    );
                    None
                }
                Err(e) => {
                    cx.error(n.span, p, e);
                    None
                }
            }
        })
        .unwrap_or(d.bulk_max_bytes);
    let flush_interval = read_positive(&mut m, cx, "flush_interval").unwrap_or(d.flush_interval);
    let max_in_flight = m
        .opt_with(cx, "max_in_flight", |n, p, cx| {
            let v = usize::from_node(n, p, cx)?;
            (1..=32).contains(&v).then_some(v).or_else(|| {
                cx.error(n.span, p, format!("must be between 1 and 32, found {v}"));
                None
            })
        })
        .unwrap_or(d.max_in_flight);
    let timeout = read_positive(&mut m, cx, "timeout").unwrap_or(d.timeout);
    if m.has("username") != m.has("password_env") {
        cx.error(
            m.span(),
            path,
            "basic auth needs both `username` and `password_env`",
        );
    }
    if m.has("api_key_env") && m.has("username") {
        cx.error(
            m.span(),
            path,
            "give basic auth (`username`, `password_env`) or `api_key_env`, not both",
        );
    }
    m.finish(
        cx,
        &[
            "url",
            "username",
            "password_env",
            "api_key_env",
            "ca_file",
            "replicas",
            "ilm_policy",
            "bulk_max_size",
            "flush_interval",
            "max_in_flight",
            "timeout",
        ],
    );
    Some(ElasticsearchSettings {
        url: url?,
        username,
        password_env,
        api_key_env,
        ca_file,
        replicas,
        ilm_policy,
        bulk_max_bytes,
        flush_interval,
        max_in_flight,
        timeout,
    })
}

fn read_spool(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<SpoolSettings> {
    let d = SpoolSettings::default();
    let mut m = cx.map(node, path)?;
    let dir = m
        .opt::<String>(cx, "dir")
        .map(|s| base_dir.join(s))
        .unwrap_or_else(|| base_dir.join(&d.dir));
    let max_bytes = m
        .opt_with(cx, "max_size", |n, p, cx| {
            let s = String::from_node(n, p, cx)?;
            match parse_bytes(&s) {
                Ok(0) => {
                    cx.error(n.span, p, "must be larger than zero");
                    None
                }
                Ok(b) => Some(b),
                Err(e) => {
                    cx.error(n.span, p, e);
                    None
                }
            }
        })
        .unwrap_or(d.max_bytes);
    let on_full = m
        .opt_with(cx, "on_full", |n, p, cx| {
            one_of(n, p, cx, &["block", "drop_oldest"])
        })
        .map(|s| {
            if s == "drop_oldest" {
                OnFull::DropOldest
            } else {
                OnFull::Block
            }
        })
        .unwrap_or(d.on_full);
    m.finish(cx, &["dir", "max_size", "on_full"]);
    Some(SpoolSettings {
        dir,
        max_bytes,
        on_full,
    })
}

fn read_policy_paths(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<PolicyPaths> {
    let found = policy_paths(node, path, cx, base_dir);
    found.ok.then_some(found)
}

/// What `policies` names: the files, the patterns they came from (resolved against the
/// config's folder), and whether every entry named some.
#[derive(Default)]
pub(super) struct PolicyPaths {
    pub files: Vec<PathBuf>,
    pub patterns: Vec<String>,
    pub ok: bool,
}

/// The files (not folders) that `pattern` matches now.
pub fn glob_files(pattern: &str) -> Result<Vec<PathBuf>, glob::PatternError> {
    Ok(glob_matches(pattern)?.0)
}

/// Matches of a pattern that cannot be read as files, each with why.
pub type Unreadable = Vec<(PathBuf, String)>;

/// The files `pattern` matches now, and the matches that cannot be read as files, each with
/// why: a symbolic link loop, a link to nothing, a folder that cannot be listed.
pub fn glob_matches(pattern: &str) -> Result<(Vec<PathBuf>, Unreadable), glob::PatternError> {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for m in glob::glob(pattern)? {
        match m {
            Ok(f) => match std::fs::metadata(&f) {
                Ok(meta) if meta.is_file() => files.push(f),
                Ok(_) => {}
                Err(e) => unreadable.push((f, why_unreadable(&e))),
            },
            Err(e) => unreadable.push((e.path().to_path_buf(), why_unreadable(e.error()))),
        }
    }
    // A literal path glob does not yield when it cannot be followed: say why.
    let literal = !pattern.contains(['*', '?', '[']);
    if files.is_empty() && unreadable.is_empty() && literal {
        let p = Path::new(pattern);
        if let (Ok(_), Err(e)) = (std::fs::symlink_metadata(p), std::fs::metadata(p)) {
            unreadable.push((p.to_path_buf(), why_unreadable(&e)));
        }
    }
    Ok((files, unreadable))
}

/// Why a path cannot be read, in words.
fn why_unreadable(e: &std::io::Error) -> String {
    // ELOOP (Linux 40, macOS 62): too many levels of symbolic links.
    if matches!(e.raw_os_error(), Some(40) | Some(62)) {
        return "is a symbolic link loop (it leads back to itself)".into();
    }
    if e.kind() == std::io::ErrorKind::NotFound {
        return "is a symbolic link to nothing".into();
    }
    format!("cannot be read: {e}")
}

/// Whether two paths are the same file (after links); false when either cannot be resolved.
fn is_same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The files `policies` names.
pub(super) fn policy_paths(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> PolicyPaths {
    let crate::read::yaml::Value::Seq(items) = &node.value else {
        cx.error(
            node.span,
            path,
            format!(
                "expected a list of policy file paths or globs, found {}",
                node.describe()
            ),
        );
        return PolicyPaths::default();
    };
    let mut files = BTreeSet::new();
    let mut patterns = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(pattern) = String::from_node(item, &p, cx) else {
            ok = false;
            continue;
        };
        let full = base_dir.join(&pattern);
        let full_str = full.to_string_lossy().to_string();
        patterns.push(full_str.clone());
        match glob_matches(&full_str) {
            Err(e) => {
                cx.error(item.span, &p, format!("`{pattern}` is not a valid glob: {e}"));
                ok = false;
            }
            Ok((mut found, unreadable)) => {
                for (f, why) in unreadable {
                    cx.error(item.span, &p, format!("`{pattern}`: {} {why}", f.display()));
                    ok = false;
                }
                if let Some(own) = found.iter().position(|f| is_same_file(f, Path::new(cx.file()))) {
                    cx.error(
                        item.span,
                        &p,
                        format!(
                            "`{pattern}` matches this config file itself ({}): list policy files, not the config",
                            found[own].display()
                        ),
                    );
                    found.remove(own);
                    ok = false;
                }
                if found.is_empty() && ok {
                    cx.error(
                        item.span,
                        &p,
                        format!("no policy file matches `{pattern}` (looked for {full_str})"),
                    );
                    ok = false;
                }
                files.extend(found);
            }
        }
    }
    PolicyPaths {
        files: files.into_iter().collect(),
        patterns,
        ok,
    }
}
