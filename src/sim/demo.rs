//! The demo's world: the simulated cluster with its service and task groups behind a real load
//! balancer, the worker with the scenario's config and policies, a stress load of real HTTP
//! requests, the faults on the way, the live view, and the checks the run is held to.
//! `ecscale demo` (`cli/demo.rs`) reads its flags and the scenario, runs this, and reports.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use super::http::Fleet;
use super::report::{self, Check};
use super::run::{self, actions_of, group_ticks, inject, ActionRow, GroupTick};
use super::scenario::Scenario;
use super::visits::{Audit, VisitStore};
use super::{Clock, Sim};
use crate::config::{ElasticsearchSettings, SinkSettings};
use crate::ship::Shipper;
use crate::ship::StatsSnapshot as ShipStats;
use crate::stress::plan::{HttpVersion, Phase, Plan, Target};
use crate::stress::profile::Load;
use crate::stress::{self, Progress};
use crate::worker::ship::ShipStage;
use crate::worker::Worker;

/// Where the run's documents go: the spool folder (the worker's, the stress client's and the
/// visit store below it), the index prefix, and Elasticsearch if any.
pub struct Outlet {
    pub spool: PathBuf,
    pub prefix: String,
    pub es: Option<String>,
}

/// `m` minutes after `start`.
fn minute(start: DateTime<Utc>, m: f64) -> DateTime<Utc> {
    start + TimeDelta::milliseconds((m * 60_000.0) as i64)
}

/// Where the worker's documents go: the outlet, over the config's sink.
fn sink(a: &Outlet, base: &SinkSettings) -> SinkSettings {
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
pub struct Record {
    pub faults: Vec<(DateTime<Utc>, String)>,
    pub actions: Vec<ActionRow>,
    pub groups: Vec<GroupTick>,
    pub problems: usize,
    pub interrupted: bool,
}

/// The live view: rows, cluster events and decisions, printed in time order.
#[derive(Default)]
pub struct View {
    rows: usize,
    events: usize,
}

impl View {
    pub const LEGEND: &'static str = "time   load (rps)  p95 at the load balancer  errors  service CPU  tasks: desired, running, starting, waiting for room  instances  (task groups: running, starting, per zone, queue)   ! cluster event   ↳ decision";

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
pub struct Live {
    sim: std::sync::Arc<Sim>,
    worker: Worker,
    pub fleet: Fleet,
    ship: ShipStage,
    stress: tokio::task::JoinHandle<Result<stress::report::Report, String>>,
    stopped: watch::Receiver<bool>,
    pub start: DateTime<Utc>,
    visits: std::sync::Arc<VisitStore>,
}

/// What the run left, once stopped.
pub struct Stopped {
    pub sim: std::sync::Arc<Sim>,
    pub stress: Option<stress::report::Report>,
    pub ship: ShipStats,
    /// The visit store against the load balancer's answers (or why it could not be read).
    pub visits: Result<Audit, String>,
    pub visits_path: PathBuf,
}

impl Live {
    pub async fn start(a: &Outlet, s: &Scenario) -> anyhow::Result<Live> {
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
    pub async fn run(&mut self, s: &Scenario, quiet: bool) -> anyhow::Result<Record> {
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
    pub async fn stop(self, es: bool) -> Stopped {
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

/// What kind of thing a fault mark hit, for checks and charts.
pub fn kind(what: &str) -> &'static str {
    if what.contains("instance") {
        "instance"
    } else {
        "task"
    }
}

/// The checks a run is held to: the scenario's own (scaling, SLO, the faults' recovery, the
/// task groups), an interrupted run, and the worker's problems and lost documents.
pub fn checks(
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
pub fn visits_check(audit: &Result<Audit, String>, path: &std::path::Path, client_ok: Option<u64>) -> Check {
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
