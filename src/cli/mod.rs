//! The command line: parses arguments, runs one subcommand through the library, prints errors
//! with their whole cause chain, and turns the outcome into an exit code.
//!
//! Exit codes: 0 success; 1 the command ran but failed or found problems (e.g. AWS unreachable,
//! a service not found); 2 bad input (command line, config file, environment variables).

mod demo;
mod deploy;
mod frontier;
mod policy;
mod render;
mod ship;
mod simulate;
mod status;
mod stress;
mod subject;
mod trace;
mod tune;
mod twin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::aws::AwsContext;
use crate::collect::Collector;
use crate::config::{self, env::Vars, Config};
use crate::usage::ApiMeter;

/// Exit code: the command ran but failed, or found problems.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad input (arguments, config, environment).
pub const EXIT_INVALID: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "ecscale",
    version,
    about = "Autoscaling and metrics pipeline for Amazon ECS",
    long_about = "Autoscaling and metrics pipeline for Amazon ECS.\n\n\
        A worker that, on a schedule, collects ECS state and CloudWatch metrics, ships them to \
        Elasticsearch/OpenSearch for Kibana, evaluates the scaling policies written in YAML files, and \
        actuates: ECS desired counts, Auto Scaling groups, and tasks it places itself. Beside it: load \
        tests with scaling assertions (`stress`), and a simulator that replays your traffic through your \
        policy against AWS's and Kubernetes' scalers (`backtest --simulate`), fits a twin of your service \
        (`twin fit`) and tunes your policy (`tune`). `ecscale demo` runs the whole loop on a simulated \
        cluster, with no AWS account. The documentation is in docs/ (docs/index.md).",
    after_help = "Exit codes: 0 success · 1 failed or found problems · 2 invalid arguments, config or environment"
)]
struct Cli {
    /// Log filter: error, warn, info, debug, or per module (ecscale=debug,aws_config=warn).
    #[arg(long, global = true, env = "ECSCALE_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The worker config file.
    #[arg(long, short = 'c', env = "ECSCALE_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the config file and the policy files it names: every mistake at once, with file:line:column.
    #[command(after_help = "Documentation: docs/configuration.md")]
    Validate {
        #[command(flatten)]
        config: ConfigArg,
        /// Also ask AWS, with read-only calls, whether an Auto Scaling group in `capacity:` is
        /// sized by an ECS capacity provider with managed scaling (which the worker then refuses
        /// to size, or takes over): a warning per such group, exit 1 when AWS cannot be read.
        #[arg(long)]
        aws: bool,
    },
    /// Run the worker: collect, evaluate, actuate and ship on the schedule, until SIGTERM/SIGINT.
    #[command(after_help = "Documentation: docs/worker.md")]
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Evaluate and record decisions, but make no mutating AWS call.
        #[arg(long)]
        dry_run: bool,
        /// Stop after N ticks (a trial run).
        #[arg(long, value_name = "N")]
        ticks: Option<u64>,
        /// Keep FILE in step with the SSM parameter NAME (repeatable, or comma-separated): read
        /// before the config is, then every --ssm-every; a change is written over FILE and
        /// reloaded as an edit of FILE is.
        #[arg(
            long = "from-ssm",
            value_name = "NAME=FILE",
            env = "ECSCALE_FROM_SSM",
            value_delimiter = ','
        )]
        from_ssm: Vec<crate::worker::sources::FromSsm>,
        /// How often the --from-ssm parameters are read again.
        #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration, env = "ECSCALE_SSM_EVERY", requires = "from_ssm")]
        ssm_every: std::time::Duration,
    },
    /// Run one collection pass and print what the worker sees.
    #[command(after_help = "Documentation: docs/worker.md")]
    Collect {
        #[command(flatten)]
        config: ConfigArg,
        /// One pass, then exit (the only mode: continuous collection is `ecscale run`).
        #[arg(long)]
        once: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// What the worker is doing now: each target's counts, last decision, cooldowns and windows (a running worker's /status, else its state).
    #[command(after_help = "Documentation: docs/worker.md")]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Scaling policy files.
    #[command(after_help = "Documentation: docs/policies.md")]
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Replay recorded metrics through a policy file: what the engine would have decided, and totals.
    #[command(after_help = "Documentation: docs/simulator.md")]
    Backtest(Box<policy::BacktestArgs>),
    /// Generate HTTP load (open or closed model) with thresholds and scaling assertions; JSON and HTML reports.
    #[command(after_help = "Documentation: docs/stress.md")]
    Stress(Box<stress::StressArgs>),
    /// Run the whole loop on a simulated cluster with real HTTP traffic: worker, stress ramp, a task and an instance killed; live view and HTML report.
    #[command(after_help = "Documentation: docs/simulator.md")]
    Demo(demo::DemoArgs),
    /// Install ecscale's index templates in Elasticsearch/OpenSearch.
    #[command(after_help = "Documentation: docs/shipping.md")]
    Setup(ship::EsArgs),
    /// Shipping: send a spool directory to Elasticsearch.
    #[command(after_help = "Documentation: docs/shipping.md")]
    Ship {
        #[command(subcommand)]
        command: ShipCommand,
    },
    /// Kibana dashboards: check, export, install.
    #[command(after_help = "Documentation: docs/shipping.md")]
    Dashboards {
        #[command(subcommand)]
        command: DashboardsCommand,
    },
    /// Traces for backtest: export a service's history from CloudWatch or Elasticsearch.
    #[command(after_help = "Documentation: docs/simulator.md")]
    Trace {
        #[command(subcommand)]
        command: TraceCommand,
    },
    /// Search a policy's targets, tolerances, datapoints and cooldowns on your traces (and twin); write the tuned file, judged on held-out history.
    #[command(after_help = "Documentation: docs/simulator.md")]
    Tune(Box<tune::TuneArgs>),
    /// A twin of a service: the simulator's model fitted to its own history.
    #[command(after_help = "Documentation: docs/simulator.md")]
    Twin {
        #[command(subcommand)]
        command: TwinCommand,
    },
    /// Deploying ecscale: check a CloudFormation stack and the config it will run, together.
    #[command(after_help = "Documentation: docs/worker.md")]
    Deploy {
        #[command(subcommand)]
        command: DeployCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DeployCommand {
    /// Check that the stack's task role grants every AWS action the config needs, that every cluster the config and its policies name is one the stack grants, and that its replicas share a lease.
    Check(deploy::CheckArgs),
}

#[derive(Debug, Subcommand)]
enum TwinCommand {
    /// Fit requests per task, the latency curve, task start, instance boot and the load's noise to a service's history; write the twin file.
    Fit(twin::FitArgs),
}

#[derive(Debug, Subcommand)]
enum TraceCommand {
    /// Write a service's metrics and running count over a window as the CSV or NDJSON backtest reads.
    Export(trace::ExportArgs),
}

#[derive(Debug, Subcommand)]
enum ShipCommand {
    /// Send a spool directory (written without Elasticsearch, or left by a stopped worker) until empty.
    Replay {
        /// The spool directory.
        dir: PathBuf,
        #[command(flatten)]
        es: ship::EsArgs,
        #[command(flatten)]
        replay: ship::ReplayArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DashboardsCommand {
    /// Check saved-object files offline: JSON, references, fields against ecscale's mappings.
    Check {
        /// Folder of .ndjson files.
        #[arg(default_value = "dashboards")]
        dir: PathBuf,
    },
    /// Write the saved objects for an index prefix to DIR/ecscale.ndjson.
    Export {
        #[arg(default_value = "dashboards")]
        dir: PathBuf,
        #[arg(long, default_value = "ecscale")]
        prefix: String,
    },
    /// Import the saved objects through Kibana's (or OpenSearch Dashboards') API.
    Install {
        /// Kibana URL.
        #[arg(long)]
        kibana: String,
        /// Generate the objects for this index prefix instead of using DIR/ecscale.ndjson.
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, default_value = "dashboards")]
        dir: PathBuf,
        /// Basic auth user (with --password-env).
        #[arg(long)]
        username: Option<String>,
        /// The environment variable holding the password.
        #[arg(long)]
        password_env: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check policy files (every mistake, with file:line:column) and summarize each target's rules.
    Check {
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// A failure that decides its own exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: EXIT_FAILURE,
            error: e.into(),
        }
    }
}

fn invalid(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_INVALID,
        error: error.into(),
    }
}

/// Runs the command line of this process.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let vars = Vars::from_env();
    for name in vars.unknown() {
        tracing::warn!(
            "unknown environment variable {name} is ignored (see the README's table of ECSCALE_ variables)"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli.command, &vars)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: log filter `{filter}` is not valid ({e}); using `warn`");
        tracing_subscriber::EnvFilter::new("warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .init();
}

async fn run(command: Command, vars: &Vars) -> Result<u8, Failure> {
    match command {
        Command::Validate { config, aws } => validate(&config.config, vars, aws).await,
        Command::Run {
            config,
            dry_run,
            ticks,
            from_ssm,
            ssm_every,
        } => {
            // One meter for every AWS call the worker makes, SSM's among them.
            let meter = ApiMeter::default();
            let sources = from_ssm_first(from_ssm, ssm_every, vars, &meter).await?;
            let opts = crate::worker::RunOptions {
                dry_run,
                max_ticks: ticks,
                sources,
                emf_stack: vars.get("ECSCALE_EMF_STACK").map(str::to_string),
            };
            run_worker(&config.config, vars, opts, meter).await
        }
        Command::Collect { config, once, format } => {
            if !once {
                return Err(invalid(anyhow::anyhow!(
                    "`ecscale collect` runs one pass: add --once. Continuous collection is the scheduled worker, `ecscale run`"
                )));
            }
            collect_once(&config.config, vars, format).await
        }
        Command::Status { config, format } => status::status(&config.config, vars, format).await,
        Command::Policy {
            command: PolicyCommand::Check { files },
        } => policy::check(&files),
        Command::Backtest(args) if args.simulate => simulate::backtest(*args, vars).await,
        Command::Backtest(args) => policy::backtest(*args, vars).await,
        Command::Trace {
            command: TraceCommand::Export(args),
        } => trace::export_command(args, vars).await,
        Command::Twin {
            command: TwinCommand::Fit(args),
        } => twin::fit(args, vars).await,
        Command::Tune(args) => tune::run(*args, vars).await,
        Command::Deploy {
            command: DeployCommand::Check(args),
        } => deploy::check(args, vars),
        Command::Stress(args) => stress::stress(*args, vars).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Setup(es) => ship::setup(es, vars).await,
        Command::Ship {
            command: ShipCommand::Replay { dir, es, replay },
        } => ship::replay(dir, es, replay, vars).await,
        Command::Dashboards { command } => match command {
            DashboardsCommand::Check { dir } => ship::dashboards_check(dir),
            DashboardsCommand::Export { dir, prefix } => ship::dashboards_export(dir, &prefix),
            DashboardsCommand::Install {
                kibana,
                prefix,
                dir,
                username,
                password_env,
            } => ship::dashboards_install(kibana, prefix, dir, username, password_env).await,
        },
    }
}

/// Loads the config, or fails with every mistake listed (exit 2).
fn load_config(path: &std::path::Path, vars: &Vars) -> Result<Config, Failure> {
    config::load(path, vars).map_err(|d| {
        let n = d.0.len();
        invalid(anyhow::anyhow!(
            "{d}\n{n} mistake{} in {}",
            if n == 1 { "" } else { "s" },
            path.display()
        ))
    })
}

/// A config with mistakes: those and, as far as the config names them, the policy files'
/// mistakes too (every mistake at once).
fn config_and_policy_mistakes(path: &std::path::Path, d: config::Diagnostics) -> Failure {
    let files = config::policy_files_in(path);
    let policy = crate::policy::load_files(&files).err().unwrap_or_default();
    let (n, m) = (d.0.len(), policy.0.len());
    let plural = |k: usize| if k == 1 { "" } else { "s" };
    let mut text = d.to_string();
    if m > 0 {
        text.push_str(&format!("\n{policy}"));
    }
    text.push_str(&format!("\n{n} mistake{} in {}", plural(n), path.display()));
    if m > 0 {
        text.push_str(&format!(", {m} in the policy files"));
    } else if !files.is_empty() {
        text.push_str(&format!(
            ", none in its {} policy file{}",
            files.len(),
            plural(files.len())
        ));
    }
    invalid(anyhow::anyhow!(text))
}

/// What `validate` and `run` both check of the sink beyond the file's syntax: the
/// Elasticsearch client can be built (its credentials' variables are set, its CA file reads),
/// and the spool can hold a tick's documents (twice: one batch sent while the next is written).
/// What `run` needs beyond a valid file: the sink's, Prometheus's and the notification
/// targets' secrets set, a spool that holds a tick. `validate` checks the same.
fn check_sink(config: &crate::config::Config) -> Result<(), Failure> {
    let file = config.file.display();
    crate::worker::notify::check(&config.notify).map_err(|e| invalid(anyhow::anyhow!("{file}: {e}")))?;
    crate::collect::prometheus::PromClient::new(&config.prometheus)
        .map_err(|e| invalid(anyhow::anyhow!("{file}: {e}")))?;
    if let Some(es) = &config.sink.elasticsearch {
        crate::ship::elasticsearch::Es::connect(es, es.timeout)
            .map_err(|e| invalid(anyhow::anyhow!("{file}: sink.elasticsearch: {e}")))?;
    }
    let (docs, bytes) = crate::ship::first_tick(config);
    let need = 2 * bytes;
    if config.sink.spool.max_bytes < need {
        let discovered = if config.clusters.iter().any(|c| c.discover.is_some()) {
            ", not counting discovered services"
        } else {
            ""
        };
        return Err(invalid(anyhow::anyhow!(
            "{file}: sink.spool.max_size {} cannot hold a tick's documents: about {docs} documents ({}) on the first tick (collect.lookback {}{discovered}); give at least {}",
            crate::format::bytes(config.sink.spool.max_bytes),
            crate::format::bytes(bytes),
            humantime::format_duration(config.collect.lookback),
            crate::format::bytes(need)
        )));
    }
    Ok(())
}

async fn validate(path: &std::path::Path, vars: &Vars, aws: bool) -> Result<u8, Failure> {
    let config = match config::load(path, vars) {
        Ok(c) => c,
        Err(d) => return Err(config_and_policy_mistakes(path, d)),
    };
    check_sink(&config)?;
    let policies = crate::policy::load_for(&config).map_err(|d| mistakes(d, "the policy files"))?;
    let targets: usize = policies.iter().map(|p| p.targets.len()).sum();
    println!("{}", render::summary(&config, targets));
    let all: Vec<_> = policies.iter().flat_map(|p| p.targets.iter().cloned()).collect();
    let needs = crate::worker::history_needs(&all);
    let tick = crate::worker::expected_gap(&config.schedule);
    println!(
        "{}",
        render::cloudwatch_cost(&crate::collect::cost::monthly(&config, &needs, tick))
    );
    if config.clusters.iter().any(|c| c.discover.is_some()) {
        println!(
            "  (named services only: each service discovery finds adds its own metrics at the same rhythm)"
        );
    }
    if !aws {
        return Ok(0);
    }
    managed_groups(&config).await
}

/// `validate --aws`: each cluster in another region or account is reached (its role assumed
/// through STS, its services listed there); the problems.
async fn places(config: &Config, aws: &AwsContext) -> u32 {
    use crate::api::EcsApi as _;
    let file = config.file.display();
    let mut problems = 0;
    for c in config.clusters.iter().filter(|c| c.place() != (None, None)) {
        let (region, role) = c.place();
        let how = match (region, role) {
            (Some(r), Some(role)) => format!("role {role} in {r}"),
            (None, Some(role)) => format!("role {role}"),
            (Some(r), None) => format!("region {r}"),
            (None, None) => String::new(),
        };
        let listed = match aws.place(region, role).await {
            Ok(ctx) => ctx
                .ecs
                .list_services(&c.name, None)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok(page) => println!(
                "cluster {}: reached through {how} ({} services on the first page)",
                c.name,
                page.items.len()
            ),
            Err(e) => {
                eprintln!(
                    "problem: {file}: cluster {}: not reached through {how}: {e}",
                    c.name
                );
                problems += 1;
            }
        }
    }
    problems
}

/// `validate --aws`: for each group in `capacity:`, whether a capacity provider with managed
/// scaling sizes it (a warning saying what the worker will do), from DescribeClusters and
/// DescribeCapacityProviders in its cluster's place.
async fn managed_groups(config: &Config) -> Result<u8, Failure> {
    use crate::config::ManagedScaling;
    let aws = AwsContext::connect(&config.aws, ApiMeter::default())
        .await
        .map_err(invalid)?;
    let file = config.file.display();
    let mut problems = places(config, &aws).await;
    // Each group's cluster read where it is (its region and account).
    let clients = crate::worker::Clients::routed(&aws, config)
        .await
        .map_err(invalid)?;
    for spec in &config.capacity {
        let group = &spec.auto_scaling_group;
        let providers = match clients.ecs_write.capacity_providers(&spec.cluster).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("problem: {file}: capacity asg/{group}: cluster {}'s capacity providers cannot be read: {e}", spec.cluster);
                problems += 1;
                continue;
            }
        };
        match crate::api::CapacityProvider::managing(&providers, group) {
            Some(p) => eprintln!(
                "warning: {file}: capacity asg/{group}: capacity provider {} sizes this group itself (managed scaling ENABLED); {}",
                p.name,
                match spec.capacity_provider {
                    ManagedScaling::Refuse => "the worker will leave it to ECS on every tick (capacity_provider: refuse)",
                    ManagedScaling::TakeOver => "the worker will disable its managed scaling and size it (capacity_provider: take_over)",
                }
            ),
            None => println!("capacity asg/{group}: no capacity provider with managed scaling sizes it"),
        }
    }
    if problems > 0 {
        eprintln!(
            "{problems} problem{} reading AWS (exit {EXIT_FAILURE})",
            if problems == 1 { "" } else { "s" }
        );
        return Ok(EXIT_FAILURE);
    }
    Ok(0)
}

async fn collect_once(path: &std::path::Path, vars: &Vars, format: Format) -> Result<u8, Failure> {
    let config = load_config(path, vars)?;
    let meter = ApiMeter::default();
    let aws = AwsContext::connect(&config.aws, meter.clone())
        .await
        .map_err(invalid)?;
    let clients = crate::worker::Clients::routed(&aws, &config)
        .await
        .map_err(invalid)?;
    let collector = Collector::new(&config, clients.ecs, clients.cloudwatch, meter).with_signer(aws.signer());
    let snapshot = collector.collect(chrono::Utc::now()).await;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&snapshot)?),
        Format::Table => print!("{}", render::snapshot_table(&snapshot)),
    }
    if snapshot.problems.is_empty() {
        return Ok(0);
    }
    for p in &snapshot.problems {
        eprintln!("problem: {p}");
    }
    eprintln!(
        "{} problem{} during collection (exit {EXIT_FAILURE})",
        snapshot.problems.len(),
        if snapshot.problems.len() == 1 { "" } else { "s" }
    );
    Ok(EXIT_FAILURE)
}

/// How a running worker reads its files again: as `run` reads them at start.
fn reloader(path: &std::path::Path, vars: &Vars) -> crate::worker::reload::Loader {
    let (path, vars) = (path.to_path_buf(), vars.clone());
    std::sync::Arc::new(move || {
        let lines = |d: config::Diagnostics| d.0.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let config = config::load(&path, &vars).map_err(lines)?;
        let files = crate::policy::load_for(&config).map_err(lines)?;
        check_sink(&config).map_err(|f| vec![f.error.to_string()])?;
        Ok(crate::worker::reload::Loaded {
            policies: files.into_iter().flat_map(|f| f.targets).collect(),
            config,
        })
    })
}

/// With `--from-ssm`: every parameter read and written to its file before the config is read
/// (exit 2 naming the parameter when one cannot be), and what keeps them in step afterwards.
async fn from_ssm_first(
    list: Vec<crate::worker::sources::FromSsm>,
    every: std::time::Duration,
    vars: &Vars,
    meter: &ApiMeter,
) -> Result<Option<(crate::worker::sources::Sources, std::time::Duration)>, Failure> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut settings = config::AwsSettings::default();
    let mistakes = config::env::apply_aws(&mut settings, vars);
    if !mistakes.is_empty() {
        return Err(self::mistakes(config::Diagnostics(mistakes), "the environment"));
    }
    let store = crate::aws::parameter_store(&settings, meter.clone())
        .await
        .map_err(|e| invalid(anyhow::anyhow!("--from-ssm: {e}")))?;
    let sources = crate::worker::sources::Sources::new(store, list);
    let written = sources
        .fetch()
        .await
        .map_err(|e| invalid(anyhow::anyhow!("--from-ssm: {e}")))?;
    if !written.is_empty() {
        tracing::info!("SSM: wrote {}", crate::worker::sources::describe(&written));
    }
    Ok(Some((sources, every)))
}

async fn run_worker(
    path: &std::path::Path,
    vars: &Vars,
    opts: crate::worker::RunOptions,
    meter: ApiMeter,
) -> Result<u8, Failure> {
    let config = load_config(path, vars)?;
    let files = crate::policy::load_for(&config).map_err(|d| mistakes(d, "the policy files"))?;
    check_sink(&config)?;
    crate::worker::notify::check(&config.notify)
        .map_err(|e| invalid(anyhow::anyhow!("{}: {e}", config.file.display())))?;
    let policies = files.into_iter().flat_map(|f| f.targets).collect();
    let aws = AwsContext::connect(&config.aws, meter).await.map_err(invalid)?;
    let clients = crate::worker::Clients::routed(&aws, &config)
        .await
        .map_err(invalid)?
        .with_events(&aws, &config.collect);
    crate::worker::run(config, policies, clients, opts, Some(reloader(path, vars))).await?;
    Ok(0)
}
fn mistakes(d: config::Diagnostics, what: &str) -> Failure {
    let n = d.0.len();
    invalid(anyhow::anyhow!(
        "{d}\n{n} mistake{} in {what}",
        if n == 1 { "" } else { "s" }
    ))
}
