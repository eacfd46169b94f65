//! `ecscale demo`: a scenario (`examples/demo/scenario.yaml`, or `--scenario FILE`) run for real:
//! the simulated cluster with its service and task groups, the worker with the scenario's config
//! and policies, a stress load of real HTTP requests, the faults on the way, a live view, and a
//! report with checks.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use super::{invalid, Failure, EXIT_FAILURE};
use crate::config::{ElasticsearchSettings, SinkSettings};
use crate::ship::Shipper;
use crate::ship::StatsSnapshot as ShipStats;
use crate::sim::http::Fleet;
use crate::sim::report::{self, Check, Run};
use crate::sim::run::{self, actions_of, group_ticks, inject, ActionRow, GroupTick};
use crate::sim::scenario::{self, Scenario, Source};
use crate::sim::visits::{Audit, VisitStore};
use crate::sim::{Clock, Sim};
use crate::stress::plan::{HttpVersion, Phase, Plan, Target};
use crate::stress::profile::Load;
use crate::stress::{self, Progress};
use crate::worker::ship::ShipStage;
use crate::worker::Worker;

#[derive(Debug, clap::Args)]
pub(super) struct DemoArgs {
    /// The scenario file (phases, faults, the simulated cluster, the worker's config and
    /// policies); without it, `examples/demo/scenario.yaml` as compiled in.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Send the documents (metrics, decisions, stress seconds) to this Elasticsearch/OpenSearch;
    /// without it they stay in the local spool (`ecscale ship replay` sends them later).
    #[arg(long, value_name = "URL")]
    es: Option<String>,
    /// Where to write the HTML report.
    #[arg(long, value_name = "OUT.html", default_value = "ecscale-demo.html")]
    report: PathBuf,
    /// Simulated seconds per real second, 1 to 60 (default: the scenario's; 20 runs its 50
    /// minutes in 2.5).
    #[arg(long)]
    speed: Option<f64>,
    /// The spool directory.
    #[arg(long, value_name = "DIR", default_value = "ecscale-demo-spool")]
    spool: PathBuf,
    /// Index prefix of the documents.
    #[arg(long, default_value = "ecscale")]
    prefix: String,
    /// No live view (the summary is printed at the end all the same).
    #[arg(long)]
    quiet: bool,
}

fn minute(start: DateTime<Utc>, m: f64) -> DateTime<Utc> {
    start + TimeDelta::milliseconds((m * 60_000.0) as i64)
}

/// The scenario, with `--speed` applied and the flags checked: nothing starts on a mistake.
fn read_scenario(a: &DemoArgs) -> Result<Scenario, Failure> {
    let source = a.scenario.as_deref().map_or(Source::Embedded, Source::File);
    let mut s = scenario::load(source).map_err(|d| invalid(anyhow::anyhow!("{d}")))?;
    if let Some(speed) = a.speed {
        scenario::check_speed(speed).map_err(|e| invalid(anyhow::anyhow!("--speed {speed}: {e}")))?;
        s.speed = speed;
    }
    if let Some(url) = &a.es {
        crate::config::check_http_url(url).map_err(|e| invalid(anyhow::anyhow!("--es: {e}")))?;
    }
    Ok(s)
}

/// Where the worker's documents go: the flags, over the config's sink.
fn sink(a: &DemoArgs, base: &SinkSettings) -> SinkSettings {
    let mut s = base.clone();
    s.index_prefix = a.prefix.clone();
    s.spool.dir = a.spool.join("worker");
    s.elasticsearch = a.es.as_deref().map(ElasticsearchSettings::new);
    s
}

/// The stress plan: the scenario's phases, run `speed` times faster, against the load balancer.
fn plan(s: &Scenario, url: url::Url) -> Plan {
    let phases = s
        .phases
        .iter()
        .map(|p| Phase {
            name: p.name.clone(),
            duration: p.duration.div_f64(s.speed),
            load: match &p.load {
                Load::Open(shape) => Load::Open(shape.compressed(s.speed)),
                other => other.clone(),
            },
            thresholds: p.thresholds.clone(),
        })
        .collect();
    Plan {
        name: s.name.clone(),
        targets: vec![Target {
            method: "GET".into(),
            url,
            headers: Vec::new(),
            body: Vec::new(),
            weight: 1,
        }],
        phases,
        connections: 400,
        http: HttpVersion::Http1,
        streams: 10,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(3),
        thresholds: Vec::new(),
        watch: None,
        assertions: Vec::new(),
        tls: Default::default(),
        resolve: Vec::new(),
    }
}

/// What the run went through, as the loop records it.
#[derive(Default)]
struct Record {
    faults: Vec<(DateTime<Utc>, String)>,
    actions: Vec<ActionRow>,
    groups: Vec<GroupTick>,
    problems: usize,
    interrupted: bool,
}

/// The live view: rows, cluster events and decisions, printed in time order.
#[derive(Default)]
struct View {
    rows: usize,
    events: usize,
}

impl View {
    const LEGEND: &'static str = "time   load (rps)  p95 at the load balancer  errors  service CPU  tasks: desired, running, starting, waiting for room  instances  (task groups: running, starting, per zone, queue)   ! cluster event   ↳ decision";

    fn show(&mut self, sim: &Sim, actions: &[ActionRow]) {
        let g = sim.lock();
        let mut lines: Vec<(DateTime<Utc>, u8, String)> = Vec::new();
        for e in g.cluster.events[self.events..]
            .iter()
            .filter(|e| report::notable(e.kind))
        {
            lines.push((e.at, 0, format!("    ! {} {}", e.at.format("%H:%M:%S"), e.text)));
        }
        for x in actions {
            let text = format!(
                "    ↳ {} {} {} → {}: {}",
                x.at.format("%H:%M:%S"),
                x.target,
                x.from,
                x.to,
                x.reason
            );
            lines.push((x.at, 1, text));
        }
        // A minute's row once it ended: after what happened in it.
        for r in &g.rows[self.rows..] {
            lines.push((r.t + TimeDelta::minutes(1), 2, r.line()));
        }
        self.events = g.cluster.events.len();
        self.rows = g.rows.len();
        lines.sort_by_key(|(at, k, _)| (*at, *k));
        for (_, _, l) in lines {
            println!("{l}");
        }
        let _ = std::io::stdout().flush();
    }
}

/// The demo's moving parts.
struct Live {
    sim: std::sync::Arc<Sim>,
    worker: Worker,
    fleet: Fleet,
    ship: ShipStage,
    stress: tokio::task::JoinHandle<Result<stress::report::Report, String>>,
    stopped: watch::Receiver<bool>,
    start: DateTime<Utc>,
    visits: std::sync::Arc<VisitStore>,
}

/// What the run left, once stopped.
struct Stopped {
    sim: std::sync::Arc<Sim>,
    stress: Option<stress::report::Report>,
    ship: ShipStats,
    /// The visit store against the load balancer's answers (or why it could not be read).
    visits: Result<Audit, String>,
    visits_path: PathBuf,
}

impl Live {
    async fn start(a: &DemoArgs, s: &Scenario) -> Result<Live, Failure> {
        let sim = Sim::new(s.spec.clone(), Utc::now(), Clock::Scaled(s.speed));
        let start = sim.now();
        let mut config = s.config.clone();
        config.sink = sink(a, &config.sink);
        let mut stress_sink = config.sink.clone();
        stress_sink.spool.dir = a.spool.join("stress");
        let stress_shipper = Shipper::start(&stress_sink)?;
        // The ship stage: each tick's documents through a bounded queue, as in `ecscale run`.
        let (ship, queue) = ShipStage::start(Shipper::start(&config.sink)?);
        let worker = run::worker(config, s.policies.clone(), &sim, Some(queue)).await?;
        let visits = std::sync::Arc::new(
            VisitStore::create(&a.spool.join("visits.sqlite")).map_err(|e| anyhow::anyhow!(e))?,
        );
        let fleet = Fleet::start(sim.clone(), 0, Some(visits.clone())).await?;
        let url = url::Url::parse(&format!("http://{}/", fleet.lb_addr)).map_err(anyhow::Error::from)?;
        let plan = plan(s, url);
        let (interrupt_tx, interrupt) = watch::channel(false);
        crate::worker::watch_signals(
            interrupt_tx,
            "demo: stopping: writing the report (a second signal exits at once)",
        );
        let stopped = interrupt.clone();
        let stress = tokio::spawn(async move {
            let opts = stress::Options {
                shipper: Some(stress_shipper),
                plain_every: Duration::from_secs(3600),
                ..stress::Options::new(Progress::Off, interrupt)
            };
            stress::run(&plan, opts).await
        });
        Ok(Live {
            sim,
            worker,
            fleet,
            ship,
            stress,
            stopped,
            start,
            visits,
        })
    }

    /// Runs the scenario to its end (or a signal): faults, ticks, the live view.
    async fn run(&mut self, s: &Scenario, quiet: bool) -> Result<Record, Failure> {
        let end = minute(self.start, s.minutes());
        let tick = TimeDelta::from_std(s.tick()).unwrap_or(TimeDelta::seconds(15));
        let mut faults: Vec<(DateTime<Utc>, run::Fault)> = s
            .faults
            .iter()
            .map(|(at, f)| (self.start + TimeDelta::from_std(*at).unwrap_or_default(), *f))
            .collect();
        let mut rec = Record::default();
        let mut view = View::default();
        let mut next_tick = self.start + tick;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = self.stopped.changed() => { rec.interrupted = true; }
            }
            let now = self.sim.now();
            self.sim.advance(now);
            while faults.first().is_some_and(|(at, _)| *at <= now) {
                let (at, f) = faults.remove(0);
                if let Some(what) = inject(&self.sim, f) {
                    rec.faults.push((at, format!("killed {what}")));
                }
            }
            self.fleet.reconcile().await?;
            let mut new = Vec::new();
            if now >= next_tick {
                while next_tick <= now {
                    next_tick += tick;
                }
                let r = self.worker.tick(now).await;
                rec.problems += r.problems.len();
                for p in &r.problems {
                    tracing::warn!("tick problem: {p}");
                }
                new = actions_of(&r);
                rec.groups.extend(group_ticks(&self.sim, &r));
            }
            if quiet {
                view.rows = self.sim.lock().rows.len();
            } else {
                view.show(&self.sim, &new);
            }
            rec.actions.extend(new);
            if rec.interrupted || (now >= end && self.stress.is_finished()) {
                return Ok(rec);
            }
        }
    }

    /// Stops the servers, waits for the stress run, drains the ship stage, audits the visits.
    async fn stop(self, es: bool) -> Stopped {
        let report = match self.stress.await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                eprintln!("demo: the stress run failed: {e}");
                None
            }
            Err(e) => {
                eprintln!("demo: the stress run panicked: {e}");
                None
            }
        };
        let answered = self.fleet.answered();
        self.fleet.stop();
        drop(self.worker);
        let drain = Duration::from_secs(if es { 30 } else { 5 });
        let stats = self.ship.finish(tokio::time::Instant::now() + drain).await;
        Stopped {
            sim: self.sim,
            stress: report,
            ship: stats,
            visits: self.visits.audit(&answered),
            visits_path: self.visits.path.clone(),
        }
    }
}

pub(super) async fn demo(a: DemoArgs) -> Result<u8, Failure> {
    let s = read_scenario(&a)?;
    if !a.quiet {
        print_intro(&a, &s);
    }
    let mut live = Live::start(&a, &s).await?;
    if !a.quiet {
        println!("load balancer http://{}\n{}", live.fleet.lb_addr, View::LEGEND);
    }
    let start = live.start;
    let rec = live.run(&s, a.quiet).await?;
    let end = live.stop(a.es.is_some()).await;
    let mut outcome = run::outcome(
        &end.sim,
        rec.actions.clone(),
        Vec::new(),
        s.slo_p95.as_secs_f64() * 1000.0,
    );
    outcome.groups = rec.groups.clone();
    let mut checks = checks(&s, &outcome, &rec, start, end.ship.not_spooled);
    let client_ok = end
        .stress
        .as_ref()
        .map(|r| r.totals.summary.requests.saturating_sub(r.totals.summary.errors));
    checks.insert(
        checks.len() - 1,
        visits_check(&end.visits, &end.visits_path, client_ok),
    );
    let summary = summary(&a, &s, &outcome, end.stress.as_ref(), &rec, &end.ship, &checks);
    write_report(&a, &s, &outcome, &rec, &summary, &checks)?;
    println!("\n{summary}report: {}", a.report.display());
    Ok(if checks.iter().all(|c| c.passed) {
        0
    } else {
        EXIT_FAILURE
    })
}

fn print_intro(a: &DemoArgs, s: &Scenario) {
    let spec = &s.spec;
    let groups: Vec<String> = spec
        .groups
        .iter()
        .map(|g| {
            format!(
                "task group {} (tasks of {} CPU units, placed by ecscale)",
                g.name, g.task.cpu
            )
        })
        .collect();
    println!(
        "{}: {} simulated minutes at {}× ({:.0} s) from {}: service {}/{} (tasks of {} CPU units, {} req/s each at full CPU){}{} on Auto Scaling group {} ({}), policies {}",
        s.name,
        s.minutes(),
        s.speed,
        s.minutes() * 60.0 / s.speed,
        s.file,
        spec.cluster,
        spec.service,
        spec.task.cpu,
        spec.task_rps,
        if groups.is_empty() { "" } else { " and " },
        groups.join(", "),
        spec.auto_scaling_group,
        spec.instance_type,
        s.policy_files.join(", ")
    );
    let faults: Vec<String> = s
        .faults
        .iter()
        .map(|(at, f)| format!("{} at minute {:.0}", f.as_str(), at.as_secs_f64() / 60.0))
        .collect();
    println!(
        "load: {}; faults: {}; documents → {}",
        s.phases
            .iter()
            .map(|p| format!("{} {:.0} min", p.name, p.duration.as_secs_f64() / 60.0))
            .collect::<Vec<_>>()
            .join(", "),
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        },
        a.es.as_deref().map_or_else(
            || format!("spool {}", a.spool.display()),
            |u| format!("Elasticsearch {u} (spooled in {} first)", a.spool.display())
        )
    );
}

/// What kind of thing a fault mark hit, for checks and charts.
fn kind(what: &str) -> &'static str {
    if what.contains("instance") {
        "instance"
    } else {
        "task"
    }
}

fn checks(
    s: &Scenario,
    o: &run::Outcome,
    rec: &Record,
    start: DateTime<Utc>,
    not_spooled: u64,
) -> Vec<Check> {
    let (busiest, from, to) = s.peak_phase();
    let marks: Vec<(DateTime<Utc>, &str)> = rec
        .faults
        .iter()
        .map(|(at, w)| {
            let what = match kind(w) {
                "instance" => "the killed instance",
                _ => "the killed task",
            };
            (*at, what)
        })
        .collect();
    let mut checks = report::checks(
        o,
        &format!("{}/{}", s.spec.cluster, s.spec.service),
        s.spec.initial_tasks,
        s.slo_p95.as_secs_f64() * 1000.0,
        report::Phases {
            busiest: (busiest, minute(start, from), minute(start, to)),
            last: s.last_phase(),
        },
        &marks,
    );
    checks.extend(report::group_checks(o, &s.spec));
    if rec.interrupted {
        checks.push(Check {
            passed: false,
            what: "the run was interrupted before the end".into(),
        });
    }
    checks.push(Check {
        passed: rec.problems == 0 && not_spooled == 0,
        what: format!(
            "the worker's ticks saw {} problem(s); {not_spooled} document(s) not spooled",
            rec.problems
        ),
    });
    checks
}

/// Every answered request saved exactly once, none lost when a task or an instance died.
fn visits_check(audit: &Result<Audit, String>, path: &std::path::Path, client_ok: Option<u64>) -> Check {
    match audit {
        Ok(v) => Check {
            passed: v.exactly_once(),
            what: format!(
                "every answered request recorded exactly once in the visit store {} across the kills: {} answered ({} successes counted by the stress client), {} of them missing, {} answered twice, {} second saves refused; {} rows from {} containers ({} saved by a task that died before its answer got out: the client saw those fail), {} saves failed",
                path.display(),
                v.answered,
                client_ok.map_or("no".into(), |n| n.to_string()),
                v.missing,
                v.answered_twice,
                v.duplicates,
                v.rows,
                v.containers,
                v.unanswered_rows,
                v.failures
            ),
        },
        Err(e) => Check {
            passed: false,
            what: format!("the visit store could not be audited: {e}"),
        },
    }
}

fn summary(
    a: &DemoArgs,
    s: &Scenario,
    o: &run::Outcome,
    stress: Option<&stress::report::Report>,
    rec: &Record,
    stats: &ShipStats,
    checks: &[Check],
) -> String {
    let mut out = format!(
        "{}: {} simulated minutes at {}× ({}/{} with {})\n{}\n",
        s.name,
        s.minutes(),
        s.speed,
        s.spec.cluster,
        s.spec.service,
        s.policy_files.join(", "),
        report::totals_text(&o.totals)
    );
    if let Some(r) = stress {
        let l = &r.totals.summary.latency_ms;
        out.push_str(&format!(
            "stress (client side): {} requests at {:.0}/s, {} errors, p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms\n",
            r.totals.summary.requests, r.totals.rate, r.totals.summary.errors, l.p50, l.p95, l.p99
        ));
    }
    for (at, w) in &rec.faults {
        out.push_str(&format!("{} {w}\n", at.format("%H:%M:%S")));
    }
    let spool = a.spool.join("worker");
    match &a.es {
        Some(u) => out.push_str(&format!(
            "worker documents: {} shipped to {u}: {} delivered, {} dead letters, {} left in the spool {}\n",
            stats.queued,
            stats.delivered,
            stats.dead_lettered,
            stats
                .queued
                .saturating_sub(stats.delivered + stats.dead_lettered + stats.dropped),
            spool.display()
        )),
        None => out.push_str(&format!(
            "worker documents: {} in the spool {} (send them with: ecscale ship replay {} --es URL)\n",
            stats.queued,
            spool.display(),
            spool.display()
        )),
    }
    for c in checks {
        out.push_str(&format!("{} {}\n", if c.passed { "✓" } else { "✗" }, c.what));
    }
    out
}

fn write_report(
    a: &DemoArgs,
    s: &Scenario,
    o: &run::Outcome,
    rec: &Record,
    summary: &str,
    checks: &[Check],
) -> Result<(), Failure> {
    // On the charts, short: which kind was killed (the summary names it).
    let marks: Vec<(DateTime<Utc>, String)> = rec
        .faults
        .iter()
        .map(|(at, w)| (*at, format!("{} killed", kind(w))))
        .collect();
    let runs = [Run {
        name: "ecscale",
        outcome: o,
    }];
    let charts = report::charts(&runs, s.slo_p95.as_secs_f64() * 1000.0, Some(60.0), &marks);
    let html = report::html(&s.name, summary, checks, &charts, &runs);
    crate::files::write_atomically(&a.report, html.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing the report {}: {e}", a.report.display()))?;
    Ok(())
}
