//! `external`: a policy outside the binary. An executable (run directly, no shell, arguments as
//! a list) reads the evaluation input as JSON on stdin; an HTTP endpoint receives it as a POST
//! body. Either answers `{"desired": N, "reason": "..."}`. A plugin that times out, exits
//! non-zero, answers too much or answers something else is an error: the target holds, it never
//! scales because of it. A program runs in a process group of its own, killed when its call
//! ends: nothing it started survives the call.
//!
//! Plugins do I/O, so they are called before the (pure) engine runs: [`fetch_answers`] for a
//! target, whose results the engine reads by rule name.
//!
//! The input (one JSON object):
//! ```json
//! {"now": "2026-11-25T12:00:00Z", "target": {"kind": "service", "cluster": "prod", "service": "web"},
//!  "rule": "my-plugin", "current": 4, "running": 4, "pending": 0, "min": 2, "max": 20,
//!  "metrics": {"cpu": {"period_secs": 60, "complete_until": "2026-11-25T11:59:00Z",
//!                      "samples": [{"timestamp": "2026-11-25T11:58:00Z", "value": 71.5}]}}}
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{Policy, RuleSpec, TargetPolicy};
use crate::eval_io::{Answer, EvalInput, Observation, Recommendation};
use crate::model::{Sample, TargetKey};
use crate::read::yaml::Value;
use crate::read::{join, parse_bytes, Cx, FromNode, MapReader};

/// Where the plugin is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plugin {
    /// Program and arguments; a relative program path is taken from the policy file's folder.
    Command(Vec<String>),
    Http(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub plugin: Plugin,
    pub timeout: Duration,
    /// Largest answer accepted, in bytes.
    pub max_output: usize,
}

pub(super) const KEYS: &[&str] = &["command", "url", "timeout", "max_output"];

impl External {
    pub(super) fn read(m: &mut MapReader<'_>, cx: &mut Cx, base_dir: &Path) -> Option<Self> {
        let command = m.opt_with(cx, "command", |n, p, cx| {
            if !matches!(n.value, Value::Seq(_)) {
                cx.error(n.span, p, "write the command as a list, program first: [./plugins/scale, --mode, fast] (no shell is used)");
                return None;
            }
            let argv = Vec::<String>::from_node(n, p, cx)?;
            if argv.is_empty() {
                cx.error(n.span, p, "name the program to run");
                return None;
            }
            let mut argv = argv;
            let program = Path::new(&argv[0]);
            if program.is_relative() && argv[0].contains('/') {
                argv[0] = base_dir.join(program).to_string_lossy().into_owned();
            }
            if let Err(e) = check_program(&argv[0]) {
                let at = match &n.value {
                    Value::Seq(items) => items.first().map_or(n.span, |i| i.span),
                    _ => n.span,
                };
                cx.error(at, &format!("{p}[0]"), e);
                return None;
            }
            Some(argv)
        });
        let url = m.opt_with(cx, "url", |n, p, cx| {
            let u = String::from_node(n, p, cx)?;
            crate::config::check_http_url(&u)
                .map_err(|e| cx.error(n.span, p, e))
                .ok()
                .map(|_| u)
        });
        let timeout = m
            .opt_with(cx, "timeout", |n, p, cx| {
                let d = Duration::from_node(n, p, cx)?;
                (!d.is_zero() && d <= Duration::from_secs(60))
                    .then_some(d)
                    .or_else(|| {
                        cx.error(n.span, p, "must be above zero and at most 60s");
                        None
                    })
            })
            .unwrap_or(Duration::from_secs(2));
        let max_output = m
            .opt_with(cx, "max_output", |n, p, cx| {
                let s = String::from_node(n, p, cx)?;
                match parse_bytes(&s) {
                    Ok(b) if (16..=(16 << 20)).contains(&b) => Some(b as usize),
                    Ok(_) => {
                        cx.error(n.span, p, "must be between 16B and 16MiB");
                        None
                    }
                    Err(e) => {
                        cx.error(n.span, p, e);
                        None
                    }
                }
            })
            .unwrap_or(64 * 1024);
        if m.has("command") == m.has("url") {
            cx.error(
                m.span(),
                &join(m.path(), "command"),
                "give `command` (a program) or `url` (an HTTP endpoint), one of the two",
            );
            return None;
        }
        let plugin = match (command, url) {
            (Some(argv), None) => Plugin::Command(argv),
            (None, Some(u)) => Plugin::Http(u),
            _ => return None,
        };
        Some(External {
            plugin,
            timeout,
            max_output,
        })
    }
}

/// The program can be run: a path to an executable file, or a name found on `PATH`.
fn check_program(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let path = Path::new(program);
        return match std::fs::metadata(path) {
            Err(e) => Err(format!("plugin {program}: {e}")),
            Ok(m) if !m.is_file() => Err(format!("plugin {program} is not a file")),
            Ok(_) if !executable(path) => Err(format!("plugin {program} is not executable (chmod +x it)")),
            Ok(_) => Ok(()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!("plugin {program}: no executable of that name on PATH"))
    }
}

/// The plugin's process group, killed when the call ends however it ends: what the plugin
/// started (a shell's children) never outlives its call.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        // The group the plugin leads has its pid for id; it exists until its last member is
        // gone, so the id is not reused meanwhile. Gone already: nothing to do.
        let pid = self.0.and_then(|p| i32::try_from(p).ok());
        if let Some(pgid) = pid.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

#[derive(Serialize)]
struct MetricJson<'a> {
    period_secs: i64,
    complete_until: DateTime<Utc>,
    samples: &'a [Sample],
}

#[derive(Serialize)]
struct Request<'a> {
    now: DateTime<Utc>,
    target: &'a TargetKey,
    rule: &'a str,
    current: u32,
    running: u32,
    pending: u32,
    min: u32,
    max: u32,
    metrics: BTreeMap<&'a str, MetricJson<'a>>,
}

/// Calls plugins; holds the HTTP client (built once, reused).
#[derive(Debug, Clone)]
pub struct PluginRunner {
    http: reqwest::Client,
}

impl Default for PluginRunner {
    fn default() -> Self {
        PluginRunner {
            http: reqwest::Client::new(),
        }
    }
}

/// Writes `body` to a plugin and reads its answer (at most `cap` bytes: more is `true`) and
/// the start of what it says on stderr, all at once.
async fn exchange(
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    body: Vec<u8>,
    cap: usize,
) -> (Vec<u8>, bool, Vec<u8>) {
    let write = async move {
        if let Some(mut s) = stdin {
            // A plugin that does not read its input is fine.
            let _ = s.write_all(&body).await;
        }
    };
    let out = async move {
        match stdout {
            Some(o) => read_capped(o, cap).await,
            None => (Vec::new(), false),
        }
    };
    let err = async move {
        match stderr {
            Some(e) => read_capped(e, 4096).await.0,
            None => Vec::new(),
        }
    };
    let (_, (out, too_much), err) = tokio::join!(write, out, err);
    (out, too_much, err)
}

/// How a plugin failed: its status, with the start of its stderr.
fn failed(status: std::process::ExitStatus, err: &[u8]) -> String {
    let how = match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "was killed by a signal".to_string(),
    };
    let err = excerpt(err);
    if err.is_empty() {
        how
    } else {
        format!("{how}: {err}")
    }
}

/// Reads at most `cap` bytes; `true` when there was more.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return (buf, false),
            Ok(n) => {
                if buf.len() + n > cap {
                    let room = cap - buf.len();
                    buf.extend_from_slice(&chunk[..room]);
                    return (buf, true);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    let mut out: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

fn parse_answer(bytes: &[u8]) -> Result<Answer, String> {
    serde_json::from_slice::<Answer>(bytes).map_err(|e| {
        format!(
            "answered `{}`, not JSON {{\"desired\": N, \"reason\": \"...\"}} ({e})",
            excerpt(bytes)
        )
    })
}

impl PluginRunner {
    /// Calls one plugin with `body` (the JSON input).
    pub async fn call(&self, ext: &External, body: Vec<u8>) -> Result<Answer, String> {
        match &ext.plugin {
            Plugin::Command(argv) => self.run_command(argv, ext, body).await,
            Plugin::Http(url) => self.post(url, ext, body).await,
        }
    }

    async fn run_command(&self, argv: &[String], ext: &External, body: Vec<u8>) -> Result<Answer, String> {
        let program = &argv[0];
        let mut child = tokio::process::Command::new(program)
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("plugin {program} could not start: {e}"))?;
        let group = Group(child.id());
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let cap = ext.max_output;
        let exchange = exchange(stdin, stdout, stderr, body, cap);
        let (out, too_much, err) = match tokio::time::timeout(ext.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => {
                drop(group);
                let _ = child.wait().await;
                return Err(format!(
                    "plugin {program} gave no answer within {} (killed with its process group)",
                    humantime::format_duration(ext.timeout)
                ));
            }
        };
        if too_much {
            drop(group);
            let _ = child.wait().await;
            return Err(format!(
                "plugin {program} answered more than {} bytes (max_output)",
                cap
            ));
        }
        let status = match tokio::time::timeout(ext.timeout, child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("plugin {program}: {e}")),
            Err(_) => {
                drop(group);
                let _ = child.wait().await;
                return Err(format!(
                    "plugin {program} did not exit within {} after answering (killed with its process group)",
                    humantime::format_duration(ext.timeout)
                ));
            }
        };
        if !status.success() {
            return Err(format!("plugin {program} {}", failed(status, &err)));
        }
        parse_answer(&out).map_err(|e| format!("plugin {program} {e}"))
    }

    async fn post(&self, url: &str, ext: &External, body: Vec<u8>) -> Result<Answer, String> {
        let exchange = async {
            let resp = self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("plugin {url}: {}", crate::read::bounded::describe(e)))?;
            let status = resp.status();
            let buf = crate::read::bounded::read(resp, ext.max_output)
                .await
                .map_err(|e| match e {
                    crate::read::bounded::BodyError::TooLarge => format!(
                        "plugin {url} answered more than {} bytes (max_output)",
                        ext.max_output
                    ),
                    crate::read::bounded::BodyError::Read(e) => {
                        format!("plugin {url}: {}", crate::read::bounded::describe(e))
                    }
                })?;
            if !status.is_success() {
                return Err(format!("plugin {url} answered HTTP {status}: {}", excerpt(&buf)));
            }
            parse_answer(&buf).map_err(|e| format!("plugin {url} {e}"))
        };
        tokio::time::timeout(ext.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "plugin {url} gave no answer within {}",
                    humantime::format_duration(ext.timeout)
                ))
            })
    }
}

/// The JSON input for one external rule of a target.
pub fn request_body(policy: &TargetPolicy, rule: &str, obs: &Observation<'_>) -> Vec<u8> {
    let bounds = policy.bounds(obs.now);
    let metrics = obs
        .metrics
        .ids()
        .filter_map(|id| {
            obs.metrics.get(id).map(|d| {
                (
                    *id,
                    MetricJson {
                        period_secs: d.period_secs,
                        complete_until: d.complete_until,
                        samples: d.samples,
                    },
                )
            })
        })
        .collect();
    let req = Request {
        now: obs.now,
        target: &policy.target,
        rule,
        current: obs.current,
        running: obs.running,
        pending: obs.pending,
        min: bounds.min,
        max: bounds.max,
        metrics,
    };
    serde_json::to_vec(&req).unwrap_or_default()
}

/// Calls every external rule of a target (at the same time); the engine reads the answers by
/// rule name.
pub async fn fetch_answers(
    runner: &PluginRunner,
    policy: &TargetPolicy,
    obs: &Observation<'_>,
) -> BTreeMap<String, Result<Answer, String>> {
    let calls = policy.rules.iter().filter_map(|rule| match &rule.spec {
        RuleSpec::External(ext) => {
            let body = request_body(policy, &rule.name, obs);
            Some(async move { (rule.name.to_string(), runner.call(ext, body).await) })
        }
        _ => None,
    });
    futures::future::join_all(calls).await.into_iter().collect()
}

impl Policy for External {
    fn evaluate(&self, input: &EvalInput<'_>) -> Recommendation {
        match input.externals.get(input.rule) {
            Some(Ok(a)) => Recommendation::Wants {
                count: a.desired,
                reason: format!("plugin: {} → {} → {}", a.reason, input.current, a.desired),
                inputs: Vec::new(),
            },
            Some(Err(e)) => Recommendation::Error { reason: e.clone() },
            None => Recommendation::Error {
                reason: "the plugin was not called for this tick".into(),
            },
        }
    }

    fn metrics(&self) -> Vec<&str> {
        Vec::new()
    }

    fn summary(&self) -> String {
        let what = match &self.plugin {
            Plugin::Command(argv) => format!("command {}", argv.join(" ")),
            Plugin::Http(u) => format!("POST {u}"),
        };
        format!(
            "external {what} (timeout {}, answers up to {} bytes)",
            humantime::format_duration(self.timeout),
            self.max_output
        )
    }
}
