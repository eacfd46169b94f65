//! The coordinator's run and the agent's, over [`super::dist`]'s API: the coordinator starts
//! the agents (`--on local`: child processes of this binary), waits at the start barrier,
//! merges every second, judges thresholds on the merged data and tells the agents to stop on
//! abort or Ctrl-C; an agent joins, reads the plan, measures its clock offset, sends its segment
//! from the common start and streams each second.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::dist::{self, now_us, Done, Join, Joined, Reply, SecondMsg, Start, State, WireAcc, WireTls};
use super::plan::{self, Plan};
use super::report::{AgentReport, Report};
use super::stats::Acc;
use super::tls::TlsTally;
use super::watcher::{self, Documents, Watcher};
use super::{Aggregator, Ending, Options, Progress, Segment, Sinks, View};

/// The environment variable local agents get the secret in.
pub const TOKEN_VAR: &str = "ECSCALE_STRESS_TOKEN";

/// Where the agents run.
#[derive(Clone)]
pub enum Launch {
    /// Child processes of this binary.
    Local,
    /// ECS tasks started with RunTask (`run`'s count, command and environment are filled in
    /// here), reaching the coordinator at `advertise` (HOST:PORT).
    Ecs {
        api: Arc<dyn crate::api::EcsWriteApi>,
        run: Box<crate::api::RunTasks>,
        advertise: String,
    },
}

/// How a distributed run is set up.
#[derive(Clone)]
pub struct Distributed {
    pub agents: usize,
    pub launch: Launch,
    /// Where the coordinator listens (port 0: any free one).
    pub listen: SocketAddr,
    pub token: String,
    /// How long the start barrier waits for every agent.
    pub join_timeout: Duration,
}

/// A second is merged once every live agent sent it, or this long after it ended.
const GRACE: Duration = Duration::from_millis(1500);
/// An agent silent this long is taken for dead.
const SILENT: Duration = Duration::from_secs(5);
/// The most an agent reads of one coordinator answer (a plan is a few KiB).
const MAX_REPLY: usize = 8 << 20;

/// A fresh random secret (for local agents, when none is given).
pub fn random_token() -> Result<String, String> {
    let mut b = [0u8; 16];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("reading /dev/urandom for a token: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn lock(s: &Arc<Mutex<State>>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The agents as child processes of this binary, the secret in their environment.
fn spawn_local(names: &[String], url: &str, token: &str) -> Result<Vec<tokio::process::Child>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding ecscale's own binary: {e}"))?;
    names
        .iter()
        .map(|name| {
            tokio::process::Command::new(&exe)
                .args(agent_command(url, Some(name)))
                .env(TOKEN_VAR, token)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting agent {name}: {e}"))
        })
        .collect()
}

/// What was started: local processes, or ECS tasks (their ARNs).
enum Launched {
    Local(Vec<tokio::process::Child>),
    Ecs {
        api: Arc<dyn crate::api::EcsWriteApi>,
        cluster: String,
        tasks: Vec<String>,
    },
}

/// The command an agent runs (after the binary).
fn agent_command(url: &str, name: Option<&str>) -> Vec<String> {
    let mut c: Vec<String> = ["stress", "agent", "--coordinator", url, "--token-env", TOKEN_VAR]
        .map(String::from)
        .to_vec();
    if let Some(n) = name {
        c.extend(["--name".to_string(), n.to_string()]);
    }
    c
}

/// RunTask in calls of at most 10; a task ECS did not start leaves a place dead with why.
async fn run_on_ecs(
    api: &Arc<dyn crate::api::EcsWriteApi>,
    template: &crate::api::RunTasks,
    url: &str,
    token: &str,
    state: &Arc<Mutex<State>>,
) -> Vec<String> {
    let n = lock(state).agents.len();
    let (mut started, mut failed) = (Vec::new(), Vec::new());
    let mut left = n;
    while left > 0 {
        let count = left.min(10);
        left -= count;
        let run = crate::api::RunTasks {
            count: count as u32,
            command: agent_command(url, None),
            environment: vec![(TOKEN_VAR.to_string(), token.to_string())],
            ..template.clone()
        };
        match api.run_tasks(&run).await {
            Ok((arns, failures)) => {
                let short = count.saturating_sub(arns.len());
                started.extend(arns);
                let why = failures
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "no reason given".into());
                failed.extend(std::iter::repeat_n(
                    format!("RunTask did not start it: {why}"),
                    short,
                ));
            }
            Err(e) => failed.extend(std::iter::repeat_n(format!("RunTask failed: {e}"), count)),
        }
    }
    let mut s = lock(state);
    for (a, why) in s.agents.iter_mut().rev().zip(failed) {
        a.dead = Some(why);
    }
    for a in s.agents.iter_mut().filter(|a| a.dead.is_none()) {
        a.at = "an ECS task (not joined)".into();
    }
    started
}

impl Launched {
    async fn start(
        d: &Distributed,
        url: &str,
        names: &[String],
        state: &Arc<Mutex<State>>,
    ) -> Result<Launched, String> {
        match &d.launch {
            Launch::Local => {
                let children = spawn_local(names, url, &d.token)?;
                let mut s = lock(state);
                for (a, c) in s.agents.iter_mut().zip(&children) {
                    a.at = c.id().map_or("local".into(), |p| format!("local pid {p}"));
                }
                Ok(Launched::Local(children))
            }
            Launch::Ecs { api, run, .. } => Ok(Launched::Ecs {
                api: api.clone(),
                cluster: run.cluster.clone(),
                tasks: run_on_ecs(api, run, url, &d.token, state).await,
            }),
        }
    }

    fn reap(&mut self, s: &mut State) {
        if let Launched::Local(children) = self {
            reap(s, children);
        }
    }

    /// Waits a little for local agents to exit, then kills them; stops every ECS task.
    async fn stop(&mut self) -> Vec<String> {
        match self {
            Launched::Local(children) => {
                for c in children.iter_mut() {
                    let _ = tokio::time::timeout(Duration::from_secs(3), c.wait()).await;
                    let _ = c.start_kill();
                }
                Vec::new()
            }
            Launched::Ecs { api, cluster, tasks } => {
                let mut errors = Vec::new();
                for t in tasks.iter() {
                    if let Err(e) = api.stop_task(cluster, t, "ecscale stress: the run is over").await {
                        errors.push(format!("StopTask {t}: {e}"));
                    }
                }
                errors
            }
        }
    }
}

/// Marks the agents whose process ended before they said they were done.
fn reap(s: &mut State, children: &mut [tokio::process::Child]) {
    for (a, c) in s.agents.iter_mut().zip(children.iter_mut()) {
        if let Ok(Some(status)) = c.try_wait() {
            if !a.done && a.dead.is_none() {
                let after = a
                    .last
                    .map_or("before its first second".into(), |l| format!("after second {l}"));
                a.dead = Some(format!("its process ended ({status}) {after}"));
            }
        }
    }
}

/// The merged run, once every agent finished (or died).
struct Merged<'p> {
    agg: Aggregator<'p>,
    aborted: Option<String>,
    interrupted: bool,
    /// Seconds merged.
    seconds: u64,
}

/// Merges the agents' seconds in order, judging thresholds on each, until none is live.
async fn merge<'p>(
    plan: &'p Plan,
    state: &Arc<Mutex<State>>,
    launched: &mut Launched,
    start: Instant,
    sinks: &mut Sinks<'_>,
    interrupt: &mut watch::Receiver<bool>,
) -> Merged<'p> {
    let mut m = Merged {
        agg: Aggregator::new(plan),
        aborted: None,
        interrupted: false,
        seconds: 0,
    };
    loop {
        let sec = m.seconds;
        let ended = start + Duration::from_secs(sec + 1);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if *interrupt.borrow_and_update() && !m.interrupted {
                m.interrupted = true;
                lock(state).stop = true;
            }
            let mut s = lock(state);
            launched.reap(&mut s);
            if second_due(&mut s, sec, ended) {
                break;
            }
        }
        let (acc, finished) = take_second(&mut lock(state), sec);
        if let Some(reason) = m.agg.push(sec, 1.0, acc, sinks.watcher.latest()) {
            if m.aborted.is_none() {
                m.aborted = Some(reason);
                lock(state).stop = true;
            }
        }
        if let Some(last) = m.agg.seconds.last().cloned() {
            sinks.view.second(&last, &m.agg, sec);
            sinks.docs.second(&last).await;
        }
        m.seconds += 1;
        if finished {
            return m;
        }
    }
}

/// Whether second `sec` (ended at `ended`) can be merged: every live agent sent it, or the
/// grace passed, or none is live. Agents silent too long are marked dead on the way.
fn second_due(s: &mut State, sec: u64, ended: Instant) -> bool {
    for a in s
        .agents
        .iter_mut()
        .filter(|a| a.live() && a.last_seen.elapsed() > SILENT)
    {
        let after = a
            .last
            .map_or("before its first second".into(), |l| format!("after second {l}"));
        a.dead = Some(format!("stopped reporting {after}"));
    }
    let ready = s
        .agents
        .iter()
        .filter(|a| a.live())
        .all(|a| a.last.is_some_and(|l| l >= sec));
    let now = Instant::now();
    (ready && now >= ended) || now >= ended + GRACE || s.agents.iter().all(|a| !a.live())
}

/// Second `sec`'s merged counts (with any late ones before it), and whether the run is over.
fn take_second(s: &mut State, sec: u64) -> (Acc, bool) {
    let mut acc = Acc::default();
    let later = s.pending.split_off(&(sec + 1));
    for a in std::mem::replace(&mut s.pending, later).values() {
        acc.add(a);
    }
    s.merged_until = sec + 1;
    let finished = s.agents.iter().all(|a| !a.live()) && s.pending.is_empty();
    (acc, finished)
}

/// The report's table of agents.
fn agent_rows(s: &State, elapsed: f64) -> Vec<AgentReport> {
    s.agents
        .iter()
        .enumerate()
        .map(|(i, a)| AgentReport {
            name: a.name.clone(),
            at: a.at.clone(),
            segment: format!("{}/{}", i + 1, s.agents.len()),
            requests: a.requests,
            errors: a.errors,
            rate: a.requests as f64 / elapsed,
            clock_offset_ms: a.offset_ms,
            round_trip_ms: a.rtt_ms,
            status: a.dead.clone().unwrap_or_else(|| "finished".into()),
        })
        .collect()
}

/// Runs `plan` (its file's text `plan_text`, relative paths from `base`) on `d.agents` local
/// agents and reports as a single run does, with a table of the agents.
pub async fn coordinate(
    plan: &Plan,
    plan_text: String,
    base: &Path,
    d: &Distributed,
    mut opts: Options,
) -> Result<Report, String> {
    let progress = opts.progress;
    // The watched service is looked at before any agent starts: a wrong one fails at once.
    watcher::probe(plan, opts.ecs.as_ref()).await?;
    let names: Vec<String> = (1..=d.agents).map(|i| format!("agent-{i}")).collect();
    let state = Arc::new(Mutex::new(State::new(
        plan_text,
        base.display().to_string(),
        &names,
    )));
    let (server, mut launched) = launch(d, &names, &state, progress).await?;
    let start_us = match dist::barrier(&state, d.join_timeout, Duration::from_millis(500), |s| {
        launched.reap(s)
    })
    .await
    {
        Ok(s) => s,
        Err(e) => return Err(abandon(e, &mut launched, server).await),
    };
    let (start, started_at, run_id) = common_start(plan, start_us);
    let watcher = Watcher::start(plan, opts.ecs.as_ref(), start);
    let mut sinks = Sinks {
        watcher: &watcher,
        docs: Documents::new(opts.shipper.take(), &run_id, started_at),
        view: View::new(progress, opts.plain_every, plan),
    };
    let merged = merge(
        plan,
        &state,
        &mut launched,
        start,
        &mut sinks,
        &mut opts.interrupt,
    )
    .await;
    sinks.view.done();
    let mut docs = sinks.docs;
    let elapsed = start.elapsed().as_secs_f64().min(merged.seconds as f64).max(1e-3);
    for e in launched.stop().await {
        eprintln!("stress: {e}");
    }
    // After the load: the assertions that wait for the service to scale back.
    let watched = watcher
        .finish(
            plan,
            start,
            elapsed,
            &mut opts.interrupt,
            progress,
            opts.plain_every,
        )
        .await;
    docs.close().await;
    server.abort();
    let s = lock(&state);
    for r in &s.refused {
        tracing::warn!("coordinator refused {r}");
    }
    let ending = Ending {
        run_id,
        started_at,
        elapsed,
        interrupted: merged.interrupted || watched.interrupted,
        aborted: merged.aborted,
        connects: s.agents.iter().map(|a| a.connects).sum(),
        tls: merged_tls(&s),
        assertions: watched.assertions,
        watch_errors: watched.errors,
        shipping_error: docs.failed,
        tasks: watched.points,
    };
    Ok(with_agents(ending.report(plan, merged.agg), &s, elapsed))
}

/// The agents did not all join: stops them and the server; the error with each failure to stop.
async fn abandon(e: String, launched: &mut Launched, server: tokio::task::JoinHandle<()>) -> String {
    let stopped = launched.stop().await;
    server.abort();
    stopped.into_iter().fold(e, |e, s| format!("{e}; {s}"))
}

/// The common start the agents were given (microseconds since the epoch): as an instant here,
/// as a time, and the run's id from it.
fn common_start(plan: &Plan, start_us: i64) -> (Instant, DateTime<Utc>, String) {
    let start = Instant::now() + Duration::from_micros((start_us - now_us()).max(0) as u64);
    let started_at = DateTime::<Utc>::from_timestamp_micros(start_us).unwrap_or_else(Utc::now);
    let run_id = format!(
        "{}-{}",
        super::slug(&plan.name),
        started_at.format("%Y%m%dT%H%M%S%.3fZ")
    );
    (start, started_at, run_id)
}

/// Serves the coordinator's API and starts the agents, saying where they run.
async fn launch(
    d: &Distributed,
    names: &[String],
    state: &Arc<Mutex<State>>,
    progress: Progress,
) -> Result<(tokio::task::JoinHandle<()>, Launched), String> {
    let (listener, addr) = dist::bind(d.listen).await?;
    let server = dist::serve(listener, state.clone(), d.token.clone());
    let url = match &d.launch {
        Launch::Local => format!("http://{addr}"),
        Launch::Ecs { advertise, .. } => format!("http://{advertise}"),
    };
    let launched = match Launched::start(d, &url, names, state).await {
        Ok(l) => l,
        Err(e) => {
            server.abort();
            return Err(e);
        }
    };
    if progress != Progress::Off {
        let pids: Vec<String> = lock(state)
            .agents
            .iter()
            .map(|a| format!("{} ({})", a.name, a.at))
            .collect();
        eprintln!("stress: coordinator at {url}; agents {}", pids.join(", "));
    }
    Ok((server, launched))
}

/// The report with its table of agents; a run whose agent did not finish fails, since that
/// agent's share of the load is missing.
fn with_agents(mut report: Report, s: &State, elapsed: f64) -> Report {
    report.agents = agent_rows(s, elapsed);
    if report.agents.iter().any(|a| a.status != "finished") && report.exit_code == 0 {
        report.exit_code = 1;
        report.verdict = format!(
            "{} (an agent did not finish: its share is missing)",
            report.verdict
        );
    }
    report
}

/// The agents' TLS tallies added up (none when no agent made a TLS connection).
fn merged_tls(s: &State) -> Option<TlsTally> {
    let mut tallies = s.agents.iter().filter_map(|a| a.tls.as_ref());
    let mut all = tallies.next()?.clone();
    for t in tallies {
        if let Err(e) = all.add(t) {
            tracing::warn!("{e}");
        }
    }
    Some(all)
}

/// Where this agent runs: its ECS task (from the task metadata endpoint), or its pid and host.
async fn whereabouts(client: &reqwest::Client) -> String {
    if let Ok(uri) = std::env::var("ECS_CONTAINER_METADATA_URI_V4") {
        let arn = async {
            let r = client.get(format!("{uri}/task")).send().await.ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v["TaskARN"].as_str().map(str::to_string)
        };
        if let Some(a) = arn.await {
            return a;
        }
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("pid {} on {}", std::process::id(), host.trim())
}

/// The agent's side: joins `url` as `name` (or under the name the coordinator gives when
/// `None`), sends its segment from the common start, streams each second, stops when told.
pub async fn agent(url: &str, token: &str, name: Option<&str>) -> Result<(), String> {
    let name = name.unwrap_or("");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("agent {name}: {e}"))?;
    let call = Call {
        client: &client,
        url: url.trim_end_matches('/'),
        token,
        name,
    };
    let (joined, clock) = join(&call).await?;
    let name = joined.name.as_str();
    let call = Call { name, ..call };
    let plan = agent_plan(&joined)?;
    let start: Start = call.start().await?;
    let local_start_us = start.start_us as f64 - clock.offset_us;
    let wait_us = (local_start_us - now_us() as f64).max(0.0);
    let start_at = Instant::now() + Duration::from_micros(wait_us as u64);
    let (tap, seconds) = tokio::sync::mpsc::unbounded_channel::<(u64, Acc)>();
    let (stop_tx, stop) = watch::channel(false);
    let forward = spawn_forward(&call, clock, seconds, stop_tx);
    let opts = Options {
        segment: Segment {
            index: joined.index,
            count: joined.count,
        },
        start_at: Some(start_at),
        tap: Some(tap),
        ..Options::new(Progress::Off, stop)
    };
    let ran = super::run(&plan, opts).await;
    let forwarded = forward.await.map_err(|e| e.to_string()).and_then(|r| r);
    let done = agent_done(name, &ran, &forwarded);
    let _: Reply = call.post("/v1/done", &done).await?;
    match done.error {
        Some(e) => Err(format!("agent {name}: {e}")),
        None => Ok(()),
    }
}

/// The agent's clock against the coordinator's, measured when it joined.
#[derive(Clone, Copy)]
struct Clock {
    offset_us: f64,
    rtt_us: f64,
}

/// Joins the coordinator: the answer, and the clock offset and round trip it measures.
async fn join(call: &Call<'_>) -> Result<(Joined, Clock), String> {
    let t0 = now_us();
    let at = whereabouts(call.client).await;
    let join = Join {
        name: call.name.into(),
        at,
        sent_us: t0,
    };
    let joined: Joined = call.post("/v1/join", &join).await?;
    let t2 = now_us();
    let clock = Clock {
        offset_us: joined.coordinator_us as f64 - (t0 + t2) as f64 / 2.0,
        rtt_us: (t2 - t0) as f64,
    };
    Ok((joined, clock))
}

/// The coordinator's plan as this agent runs it: thresholds and the watch are the
/// coordinator's, on the merged data.
fn agent_plan(joined: &Joined) -> Result<Plan, String> {
    let mut plan = plan::load_str(
        &joined.plan,
        "(the coordinator's plan)",
        &PathBuf::from(&joined.base),
    )
    .map_err(|d| format!("agent {}: the coordinator's plan: {d}", joined.name))?;
    plan.thresholds.clear();
    plan.phases.iter_mut().for_each(|p| p.thresholds.clear());
    plan.watch = None;
    plan.assertions.clear();
    Ok(plan)
}

/// Sends each second's tally to the coordinator as it comes. A coordinator that cannot be
/// reached (after retries), or that says stop, stops this agent: no load goes out that nobody
/// counts.
fn spawn_forward(
    call: &Call<'_>,
    clock: Clock,
    mut seconds: tokio::sync::mpsc::UnboundedReceiver<(u64, Acc)>,
    stop_tx: watch::Sender<bool>,
) -> tokio::task::JoinHandle<Result<(), String>> {
    let (client, url, token, name) = (
        call.client.clone(),
        call.url.to_string(),
        call.token.to_string(),
        call.name.to_string(),
    );
    tokio::spawn(async move {
        let call = Call {
            client: &client,
            url: &url,
            token: &token,
            name: &name,
        };
        while let Some((sec, acc)) = seconds.recv().await {
            let msg = match WireAcc::encode(&acc) {
                Ok(acc) => SecondMsg {
                    name: name.clone(),
                    sec,
                    acc,
                    offset_us: clock.offset_us,
                    rtt_us: clock.rtt_us,
                },
                Err(e) => {
                    let _ = stop_tx.send(true);
                    return Err(e);
                }
            };
            match call.post_retrying::<_, Reply>("/v1/second", &msg).await {
                Ok(r) if r.stop => {
                    let _ = stop_tx.send(true);
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = stop_tx.send(true);
                    return Err(e);
                }
            }
        }
        Ok::<(), String>(())
    })
}

/// What the agent tells the coordinator when its segment is over: its totals, or the error
/// that ended it.
fn agent_done(name: &str, ran: &Result<Report, String>, forwarded: &Result<(), String>) -> Done {
    let (requests, connects, mut error) = match (ran, forwarded) {
        (Ok(r), Ok(())) => (r.totals.summary.requests, r.connects, None),
        (Err(e), _) | (_, Err(e)) => (0, 0, Some(e.clone())),
    };
    let tls = match ran
        .as_ref()
        .ok()
        .and_then(|r| r.tls_tally.as_ref())
        .map(WireTls::encode)
    {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            error.get_or_insert(e);
            None
        }
        None => None,
    };
    Done {
        name: name.into(),
        requests,
        connects,
        error,
        tls,
    }
}

/// Calls to the coordinator, with the secret.
struct Call<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    token: &'a str,
    name: &'a str,
}

impl Call<'_> {
    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, String> {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| self.failed(path, &crate::read::bounded::describe(e)))?;
        self.read(r, path).await
    }

    /// [`Call::post`], tried 3 times over about a second (a coordinator busy for a moment).
    async fn post_retrying<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, String> {
        let mut last = String::new();
        for attempt in 0..3u64 {
            match self.post(path, body).await {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        }
        Err(last)
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        r: reqwest::Response,
        path: &str,
    ) -> Result<T, String> {
        let status = r.status();
        let body = crate::read::bounded::read(r, MAX_REPLY)
            .await
            .map_err(|e| self.failed(path, &e.describe(MAX_REPLY)))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(format!(
                "agent {}: coordinator {}{path} answered {status}: {}",
                self.name,
                self.url,
                text.trim()
            ));
        }
        serde_json::from_str(&text).map_err(|e| self.failed(path, &e.to_string()))
    }

    fn failed(&self, path: &str, why: &str) -> String {
        format!("agent {}: coordinator {}{path}: {why}", self.name, self.url)
    }

    /// Polls until the start is set (the coordinator's bound applies; ours is 10 minutes).
    async fn start(&self) -> Result<Start, String> {
        let until = Instant::now() + Duration::from_secs(600);
        while Instant::now() < until {
            let r = self
                .client
                .get(format!("{}/v1/start", self.url))
                .bearer_auth(self.token)
                .send()
                .await
                .map_err(|e| self.failed("/v1/start", &crate::read::bounded::describe(e)))?;
            if r.status() != reqwest::StatusCode::NO_CONTENT {
                return self.read(r, "/v1/start").await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "agent {}: no start from {} within 10 minutes",
            self.name, self.url
        ))
    }
}
