//! `ecscale stress`: flags for the simple case, `--plan FILE` for phases, thresholds and
//! scaling assertions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{invalid, load_config, Failure};
use crate::aws::AwsContext;
use crate::config::env::Vars;
use crate::stress::check::Threshold;
use crate::stress::plan::{self, HttpVersion, Phase, Plan, Target};
use crate::stress::profile::{Load, Shape};
use crate::stress::{report, Options, Progress};
use crate::usage::ApiMeter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// A redrawn line on a terminal, plain lines otherwise.
    Auto,
    Tty,
    Plain,
    Off,
}

/// Where a distributed run's agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnArg {
    /// Child processes on this machine (every core, and tests).
    Local,
    /// ECS tasks started with RunTask (`--cluster`, `--task-definition`, `--advertise`; AWS
    /// settings from `--config`).
    Ecs,
}

#[derive(Debug, clap::Subcommand)]
pub enum StressCommand {
    /// Run as an agent of a distributed run: join the coordinator, send this agent's share of
    /// its plan, stream each second back.
    Agent(AgentArgs),
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The coordinator's address (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    coordinator: String,
    /// The environment variable that holds the shared secret.
    #[arg(long, value_name = "VAR")]
    token_env: String,
    /// This agent's name, as the coordinator knows it (without it, the coordinator names it).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Exit codes: 0 every threshold and assertion held · 1 failed to run (or an agent did not \
finish) · 2 invalid plan or flags · 3 a threshold failed (or aborted the run) · 4 a scaling assertion failed · \
130 interrupted (the report is still written)"
)]
pub struct StressArgs {
    #[command(subcommand)]
    command: Option<StressCommand>,
    /// Distributed: this many agents share the plan (a --plan file, or the one-target plan of
    /// --url and its flags); this process coordinates and merges their histograms exactly.
    #[arg(long, value_name = "N", requires = "plan")]
    agents: Option<usize>,
    /// Where the agents run.
    #[arg(long, value_enum, default_value_t = OnArg::Local, requires = "agents")]
    on: OnArg,
    /// The coordinator's listening address (agents connect to it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", requires = "agents")]
    listen: std::net::SocketAddr,
    /// The environment variable holding the secret agents authenticate with (a random one
    /// for local agents otherwise).
    #[arg(long, value_name = "VAR", requires = "agents")]
    token_env: Option<String>,
    /// How long the start barrier waits for every agent to join.
    #[arg(long, value_name = "DURATION", default_value = "30s", requires = "agents")]
    join_timeout: humantime::Duration,
    /// --on ecs: the cluster the agents run in.
    #[arg(long, requires = "agents")]
    cluster: Option<String>,
    /// --on ecs: the agents' task definition (`family:revision`, `family` or an ARN); its
    /// container runs ecscale (deploy/stress-agent-task-definition.json).
    #[arg(long, value_name = "TD", requires = "agents")]
    task_definition: Option<String>,
    /// --on ecs: the container whose command and environment are overridden.
    #[arg(long, default_value = "agent", requires = "agents")]
    container: String,
    /// --on ecs: FARGATE or EC2 (the cluster's default without it).
    #[arg(long, value_name = "TYPE", requires = "agents")]
    launch_type: Option<String>,
    /// --on ecs: awsvpc subnets (comma-separated; repeatable).
    #[arg(long, value_delimiter = ',', requires = "agents")]
    subnets: Vec<String>,
    /// --on ecs: security groups (comma-separated; repeatable).
    #[arg(long, value_delimiter = ',', requires = "agents")]
    security_groups: Vec<String>,
    /// --on ecs: give the agents public IPs (Fargate in public subnets).
    #[arg(long, requires = "agents")]
    assign_public_ip: bool,
    /// --on ecs: HOST:PORT the agents reach the coordinator at (its --listen, as they see it).
    #[arg(long, value_name = "HOST:PORT", requires = "agents")]
    advertise: Option<String>,
    /// A plan file (YAML): targets, phases, thresholds, the service to watch and scaling assertions.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["url", "rate", "users", "duration", "connections", "http2", "method", "headers", "body", "thresholds", "timeout", "cacert", "insecure", "cert", "key", "resolve"])]
    plan: Option<PathBuf>,
    /// Target URL (repeat for a mix, equal weights).
    #[arg(long, value_name = "URL")]
    url: Vec<String>,
    /// HTTP method (GET).
    #[arg(long)]
    method: Option<String>,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request body (`@FILE` reads it from a file).
    #[arg(long)]
    body: Option<String>,
    /// Requests per second, scheduled by the clock (open model). Without it: as fast as the connections allow.
    #[arg(long, value_name = "N", conflicts_with = "users")]
    rate: Option<f64>,
    /// Closed model: this many users, each sending, waiting for the answer, thinking, sending again.
    #[arg(long, value_name = "N")]
    users: Option<usize>,
    /// The users' think time (with --users).
    #[arg(long, value_name = "DURATION", requires = "users")]
    think: Option<humantime::Duration>,
    /// How long the load runs.
    #[arg(long, value_name = "DURATION")]
    duration: Option<humantime::Duration>,
    /// Connections (HTTP/1.1: requests in flight at most).
    #[arg(long, value_name = "C")]
    connections: Option<usize>,
    /// HTTP/2, 10 streams per connection: h2c (prior knowledge) over http://, h2 by ALPN over https://.
    #[arg(long)]
    http2: bool,
    /// CA certificates (PEM) trusted besides the platform's, for https:// targets.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Accept any server certificate (said in the summary and the report).
    #[arg(long)]
    insecure: bool,
    /// A client certificate (PEM chain) for mutual TLS, with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// HOST:PORT:ADDR (curl's form): connect to ADDR for HOST:PORT; the URL's host stays the TLS name and Host header (repeatable).
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    resolve: Vec<String>,
    /// Request timeout.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<humantime::Duration>,
    /// A threshold over the whole run, e.g. 'p95 < 300ms', 'errors < 1%' (repeatable).
    #[arg(long = "threshold", value_name = "CHECK")]
    thresholds: Vec<String>,
    /// Write the JSON summary here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long, value_name = "OUT.html")]
    report: Option<PathBuf>,
    /// Ship the per-second documents through this worker config's sink (Elasticsearch or spool).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Live progress.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
}

/// The plan of the flags as plan text, for agents (which read the plan they are sent): every
/// flag a plan holds, strings JSON-quoted (YAML reads them as double-quoted scalars). The text
/// must read back as exactly the plan the flags make, or the run is refused.
fn plan_text_from_flags(a: &StressArgs, want: &Plan) -> Result<String, String> {
    let mut t = String::from("name: stress\ntargets:\n");
    push_targets(&mut t, a, flag_body_text(a, want)?.as_deref());
    push_load(&mut t, a);
    push_options(&mut t, a, want);
    let read = plan::load_str(&t, "(the flags' plan)", Path::new("/")).map_err(|d| d.to_string())?;
    if read != *want {
        return Err("the flags' plan cannot be sent to agents as it is (a bug): write it as a plan file and use --plan".into());
    }
    Ok(t)
}

/// A string as a double-quoted YAML scalar.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `--body` as text: the body the flags' plan already holds (a file given as `@FILE` is read
/// once, within [`MAX_BODY_BYTES`], by [`plan_from_flags`]).
fn flag_body_text(a: &StressArgs, want: &Plan) -> Result<Option<String>, String> {
    let Some(b) = a.body.as_deref() else {
        return Ok(None);
    };
    let body = want.targets.first().map_or(&[][..], |t| &t.body[..]);
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| format!("--body {b}: agents are sent the body as text, and this file is not UTF-8"))?;
    Ok(Some(text))
}

/// The `targets:` items: each `--url` with the method, headers and body.
fn push_targets(t: &mut String, a: &StressArgs, body: Option<&str>) {
    for u in &a.url {
        t.push_str(&format!("  - url: {}\n", q(u)));
        if let Some(m) = &a.method {
            t.push_str(&format!("    method: {}\n", q(m)));
        }
        if !a.headers.is_empty() {
            t.push_str("    headers:\n");
            for h in &a.headers {
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                t.push_str(&format!("      {}: {}\n", q(k.trim()), q(v.trim())));
            }
        }
        if let Some(b) = body {
            t.push_str(&format!("    body: {}\n", q(b)));
        }
    }
}

/// The one phase: its duration and its load (a rate, users, or as fast as it goes).
fn push_load(t: &mut String, a: &StressArgs) {
    let duration = a.duration.map_or("10s".to_string(), |d| d.to_string());
    t.push_str(&format!(
        "phases:\n  - name: main\n    duration: {}\n",
        q(&duration)
    ));
    match (a.rate, a.users) {
        (Some(r), _) => t.push_str(&format!("    rate: {r}\n")),
        (None, Some(u)) => {
            t.push_str(&format!("    users: {u}\n"));
            if let Some(th) = a.think {
                t.push_str(&format!("    think: {}\n", q(&th.to_string())));
            }
        }
        (None, None) => t.push_str("    max: true\n"),
    }
}

/// Connections, HTTP version, timeout, thresholds, TLS (paths made absolute) and `--resolve`.
fn push_options(t: &mut String, a: &StressArgs, want: &Plan) {
    let abs = |p: &PathBuf| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string()
    };
    t.push_str(&format!("connections: {}\n", want.connections));
    if a.http2 {
        t.push_str("http: \"2\"\n");
    }
    if let Some(to) = a.timeout {
        t.push_str(&format!("timeout: {}\n", q(&to.to_string())));
    }
    push_list(t, "thresholds", &a.thresholds);
    if a.insecure || a.cacert.is_some() || a.cert.is_some() {
        t.push_str("tls:\n");
        if a.insecure {
            t.push_str("  insecure: true\n");
        }
        for (key, path) in [("cacert", &a.cacert), ("cert", &a.cert), ("key", &a.key)] {
            if let Some(p) = path {
                t.push_str(&format!("  {key}: {}\n", q(&abs(p))));
            }
        }
    }
    push_list(t, "resolve", &a.resolve);
}

/// `key:` and its items, when there are any.
fn push_list(t: &mut String, key: &str, items: &[String]) {
    if !items.is_empty() {
        t.push_str(&format!("{key}:\n"));
        for i in items {
            t.push_str(&format!("  - {}\n", q(i)));
        }
    }
}

fn plan_from_flags(a: &StressArgs) -> Result<Plan, String> {
    let targets = flag_targets(a)?;
    let duration: Duration = a.duration.map(Into::into).unwrap_or(Duration::from_secs(10));
    if duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    let load = flag_load(a)?;
    let connections = a.connections.unwrap_or(50);
    if !(1..=10_000).contains(&connections) {
        return Err("--connections must be between 1 and 10000".into());
    }
    let thresholds = a
        .thresholds
        .iter()
        .map(|t| Threshold::parse(t).map_err(|e| format!("--threshold {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan {
        name: "stress".into(),
        targets,
        phases: vec![Phase {
            name: "main".into(),
            duration,
            load,
            thresholds: vec![],
        }],
        connections,
        http: if a.http2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Http1
        },
        streams: 10,
        timeout: a.timeout.map(Into::into).unwrap_or(Duration::from_secs(10)),
        connect_timeout: Duration::from_secs(3),
        thresholds,
        watch: None,
        assertions: vec![],
        tls: crate::stress::plan::TlsOptions {
            cacert: a.cacert.clone(),
            insecure: a.insecure,
            cert: a.cert.clone(),
            key: a.key.clone(),
        },
        resolve: a
            .resolve
            .iter()
            .map(|r| crate::stress::plan::parse_resolve(r).map_err(|e| format!("--resolve {e}")))
            .collect::<Result<Vec<_>, _>>()?,
    })
}

/// The largest `--body @FILE` read: a request body, not a data set.
const MAX_BODY_BYTES: u64 = 64 << 20;

/// The targets of `--url` (each with `--method`, `--header` and `--body`), checked.
fn flag_targets(a: &StressArgs) -> Result<Vec<Target>, String> {
    if a.url.is_empty() {
        return Err("give --url URL (or --plan FILE)".into());
    }
    let mut headers = Vec::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}`: write `Name: value`"))?;
        let (k, v) = (k.trim(), v.trim());
        hyper::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("--header `{h}`: `{k}` is not a header name"))?;
        hyper::header::HeaderValue::from_str(v)
            .map_err(|_| format!("--header `{h}`: not a valid header value"))?;
        headers.push((k.to_string(), v.to_string()));
    }
    let body = match a.body.as_deref() {
        Some(b) if b.starts_with('@') => read_body(&b[1..]).map_err(|e| format!("--body {b}: {e}"))?,
        Some(b) => b.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let method = a
        .method
        .clone()
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase();
    hyper::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("--method {method} is not an HTTP method"))?;
    a.url
        .iter()
        .map(|u| {
            plan::parse_url(u).map(|url| Target {
                method: method.clone(),
                url,
                headers: headers.clone(),
                body: body.clone(),
                weight: 1,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--url {e}"))
}

/// A body file of at most [`MAX_BODY_BYTES`], read no further (a device never fills memory).
fn read_body(path: &str) -> Result<Vec<u8>, String> {
    use crate::read::{read_bounded_bytes, BoundedError};
    read_bounded_bytes(std::path::Path::new(path), MAX_BODY_BYTES).map_err(|e| match e {
        BoundedError::Io(e) => format!("cannot read {path}: {e}"),
        BoundedError::TooLarge(_) => format!("{path} is {e}"),
    })
}

/// The load of `--rate` (open), `--users` and `--think` (closed), or neither (as fast as the
/// connections go).
fn flag_load(a: &StressArgs) -> Result<Load, String> {
    Ok(match (a.rate, a.users) {
        (Some(r), _) if !(r > 0.0 && r <= 10_000_000.0) => {
            return Err(format!(
                "--rate {r}: a rate is above 0 and at most 10,000,000 requests per second"
            ))
        }
        (Some(r), _) => Load::Open(Shape::Constant(r)),
        (None, Some(0)) => return Err("--users must be at least 1".into()),
        (None, Some(users)) => Load::Closed {
            users,
            think: a.think.map(Into::into).unwrap_or_default(),
        },
        (None, None) => Load::Max,
    })
}

/// Fails before the run if an output could not be written after it.
fn check_output(path: &Option<PathBuf>, flag: &str) -> Result<(), Failure> {
    if let Some(p) = path {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(invalid(anyhow::anyhow!(
                "{flag} {}: the folder {} does not exist",
                p.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    crate::files::write_atomically(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()).into())
}

/// The secret in the environment variable `var` (named in the error when it is unset).
fn secret(var: &str) -> Result<String, Failure> {
    crate::config::env::secret(var, "--token-env")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            invalid(anyhow::anyhow!(
                "--token-env {var}: the variable is not set (or empty)"
            ))
        })
}

async fn agent(a: &AgentArgs) -> Result<u8, Failure> {
    let token = secret(&a.token_env)?;
    crate::stress::coordinate::agent(&a.coordinator, &token, a.name.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(0)
}

/// `--on ecs`: the RunTask call's template and the AWS client, checked before anything starts.
async fn ecs_launch(a: &StressArgs, vars: &Vars) -> Result<crate::stress::coordinate::Launch, Failure> {
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .ok_or_else(|| invalid(anyhow::anyhow!("--on ecs needs {flag}")))
    };
    let cluster = need(&a.cluster, "--cluster")?;
    let task_definition = need(&a.task_definition, "--task-definition")?;
    let advertise = need(
        &a.advertise,
        "--advertise HOST:PORT (where the agents reach this coordinator)",
    )?;
    let Some(config) = &a.config else {
        return Err(invalid(anyhow::anyhow!(
            "--on ecs needs --config FILE (a worker config: its aws settings reach ECS)"
        )));
    };
    let config = load_config(config, vars)?;
    let aws = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .map_err(invalid)?;
    Ok(crate::stress::coordinate::Launch::Ecs {
        api: Arc::new(aws.ecs.clone()),
        run: Box::new(crate::api::RunTasks {
            cluster,
            task_definition,
            count: 0,
            started_by: "ecscale-stress".into(),
            container: a.container.clone(),
            command: Vec::new(),
            environment: Vec::new(),
            launch_type: a.launch_type.clone(),
            subnets: a.subnets.clone(),
            security_groups: a.security_groups.clone(),
            assign_public_ip: a.assign_public_ip,
        }),
        advertise,
    })
}

/// The distributed run's settings, checked before anything starts.
async fn distributed(
    a: &StressArgs,
    n: usize,
    vars: &Vars,
) -> Result<crate::stress::coordinate::Distributed, Failure> {
    let (launch, most) = match a.on {
        OnArg::Local => (crate::stress::coordinate::Launch::Local, 64),
        OnArg::Ecs => (ecs_launch(a, vars).await?, 500),
    };
    if !(1..=most).contains(&n) {
        return Err(invalid(anyhow::anyhow!("--agents {n}: between 1 and {most}")));
    }
    let token = match &a.token_env {
        Some(var) => secret(var)?,
        None => crate::stress::coordinate::random_token().map_err(|e| anyhow::anyhow!(e))?,
    };
    Ok(crate::stress::coordinate::Distributed {
        agents: n,
        launch,
        listen: a.listen,
        token,
        join_timeout: a.join_timeout.into(),
    })
}

pub async fn stress(a: StressArgs, vars: &Vars) -> Result<u8, Failure> {
    if let Some(StressCommand::Agent(args)) = &a.command {
        return agent(args).await;
    }
    let dist = match a.agents {
        Some(n) => Some(distributed(&a, n, vars).await?),
        None => None,
    };
    let plan = read_plan(&a)?;
    check_output(&a.json, "--json")?;
    check_output(&a.report, "--report")?;
    if plan.uses_tls() {
        crate::stress::tls::Tls::new(&plan.tls, plan.http).map_err(|e| invalid(anyhow::anyhow!(e)))?;
    }
    let ecs = watched_ecs(&plan, vars).await?;
    let shipper = match &a.config {
        Some(path) => {
            let config = load_config(path, vars)?;
            Some(
                crate::ship::Shipper::start(&config.sink)
                    .map_err(|e| anyhow::anyhow!("{}: sink: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let (interrupt_tx, interrupt) = watch::channel(false);
    crate::worker::watch_signals(
        interrupt_tx,
        "stress: stopping: writing the report (a second signal exits at once)",
    );
    eprintln!("{}", announcement(&plan));
    let opts = Options {
        ecs,
        shipper,
        plain_every: Duration::from_secs(5),
        ..Options::new(progress_of(a.progress), interrupt)
    };
    let report = run_plan(&a, &plan, dist.as_ref(), opts).await?;
    if let Some(p) = &a.json {
        write(p, &serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(p) = &a.report {
        write(p, &report::html(&report))?;
    }
    print!("{}", report::text(&report));
    if let Some(e) = &report.shipping_error {
        eprintln!("stress: the per-second documents could not all be shipped: {e}");
    }
    Ok(report.exit_code)
}

/// The plan: from `--plan`, or made of the flags.
fn read_plan(a: &StressArgs) -> Result<Plan, Failure> {
    match &a.plan {
        Some(file) => plan::load(file).map_err(|d| {
            let n = d.0.len();
            invalid(anyhow::anyhow!(
                "{d}\n{n} mistake{} in {}",
                if n == 1 { "" } else { "s" },
                file.display()
            ))
        }),
        None => plan_from_flags(a).map_err(|e| invalid(anyhow::anyhow!(e))),
    }
}

/// ECS, reached with the watch's config, when the plan watches a service.
async fn watched_ecs(plan: &Plan, vars: &Vars) -> Result<Option<Arc<dyn crate::api::EcsApi>>, Failure> {
    let Some(w) = &plan.watch else {
        return Ok(None);
    };
    let config = load_config(&w.config, vars)?;
    let aws = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .map_err(invalid)?;
    Ok(Some(Arc::new(aws.ecs.clone())))
}

fn progress_of(p: ProgressArg) -> Progress {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match p {
        ProgressArg::Auto if tty => Progress::Tty,
        ProgressArg::Auto | ProgressArg::Plain => Progress::Plain,
        ProgressArg::Tty => Progress::Tty,
        ProgressArg::Off => Progress::Off,
    }
}

/// The line that says what the run sends.
fn announcement(plan: &Plan) -> String {
    format!(
        "stress: {} over {} s, {} phase{}, HTTP/{}, {} connections{}",
        plan.targets
            .iter()
            .map(|t| format!("{} {}", t.method, t.url))
            .collect::<Vec<_>>()
            .join(", "),
        plan.duration().as_secs_f64(),
        plan.phases.len(),
        if plan.phases.len() == 1 { "" } else { "s" },
        if plan.http == HttpVersion::Http2 {
            "2"
        } else {
            "1.1"
        },
        plan.connections,
        if plan.uses_tls() && plan.tls.insecure {
            "; TLS certificates NOT checked (--insecure)"
        } else {
            ""
        }
    )
}

/// Runs the plan here, or on agents (sent the plan file's text, or the flags' plan as text).
async fn run_plan(
    a: &StressArgs,
    plan: &Plan,
    dist: Option<&crate::stress::coordinate::Distributed>,
    opts: Options,
) -> Result<report::Report, Failure> {
    let report = match (dist, &a.plan) {
        (Some(d), Some(file)) => {
            let text = crate::read::read_bounded(file, 1 << 20).map_err(|e| anyhow::anyhow!(e))?;
            let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
            let base = std::fs::canonicalize(&base).unwrap_or(base);
            crate::stress::coordinate::coordinate(plan, text, &base, d, opts).await
        }
        // The flags' one-target plan is a plan: its agents are sent it as plan text.
        (Some(d), None) => {
            let text = plan_text_from_flags(a, plan).map_err(|e| invalid(anyhow::anyhow!(e)))?;
            let base = std::env::current_dir().unwrap_or_default();
            crate::stress::coordinate::coordinate(plan, text, &base, d, opts).await
        }
        _ => crate::stress::run(plan, opts).await,
    };
    Ok(report.map_err(|e| anyhow::anyhow!(e))?)
}
