//! `ecscale demo`: the simulated cluster, the worker with the example policies, a stress ramp of
//! real HTTP requests, a task and an instance killed on the way, a live view, and a report.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use super::{invalid, Failure, EXIT_FAILURE};
use crate::ship::Shipper;
use crate::sim::http::Fleet;
use crate::sim::report::{self, Check, Run};
use crate::sim::run::{self, actions_of, inject, ActionRow, Fault};
use crate::sim::{Clock, Sim, Spec};
use crate::stress::{self, Progress};
use crate::worker::ship::ShipStage;

/// The demo's SLO: p95 latency at the load balancer.
pub const DEMO_SLO_MS: f64 = 250.0;

#[derive(Debug, clap::Args)]
pub(super) struct DemoArgs {
    /// Send the documents (metrics, decisions, stress seconds) to this Elasticsearch/OpenSearch;
    /// without it they stay in the local spool (`ecscale ship replay` sends them later).
    #[arg(long, value_name = "URL")]
    es: Option<String>,
    /// Where to write the HTML report.
    #[arg(long, value_name = "OUT.html", default_value = "ecscale-demo.html")]
    report: PathBuf,
    /// Simulated seconds per real second (the scenario is 50 simulated minutes: 2.5 min at 20).
    #[arg(long, default_value_t = 20.0)]
    speed: f64,
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

/// The scenario, in simulated minutes from the start.
struct Scenario {
    /// (name, minutes, from rps, to rps)
    phases: Vec<(&'static str, f64, f64, f64)>,
    faults: Vec<(f64, Fault)>,
}

impl Scenario {
    fn standard() -> Self {
        Scenario {
            phases: vec![
                ("warm", 3.0, 60.0, 60.0),
                ("ramp-up", 10.0, 60.0, 360.0),
                ("hold", 15.0, 360.0, 360.0),
                ("ramp-down", 5.0, 360.0, 60.0),
                ("quiet", 17.0, 60.0, 60.0),
            ],
            faults: vec![(18.0, Fault::KillTask), (22.0, Fault::KillInstance)],
        }
    }

    fn minutes(&self) -> f64 {
        self.phases.iter().map(|p| p.1).sum()
    }

    /// When a phase starts and ends, in simulated minutes.
    fn span(&self, name: &str) -> (f64, f64) {
        let mut t = 0.0;
        for p in &self.phases {
            if p.0 == name {
                return (t, t + p.1);
            }
            t += p.1;
        }
        (0.0, 0.0)
    }

    /// The stress plan: the phases in real time at `speed`.
    fn plan(&self, url: &str, speed: f64) -> String {
        let mut s = format!(
            "name: ecscale demo\ntargets:\n  - url: '{url}/'\nconnections: 400\ntimeout: 5s\nphases:\n"
        );
        for (name, minutes, from, to) in &self.phases {
            let secs = minutes * 60.0 / speed;
            if from == to {
                s.push_str(&format!(
                    "  - {{name: {name}, duration: {}ms, rate: {from}}}\n",
                    (secs * 1000.0) as u64
                ));
            } else {
                s.push_str(&format!(
                    "  - {{name: {name}, duration: {}ms, ramp: {{from: {from}, to: {to}}}}}\n",
                    (secs * 1000.0) as u64
                ));
            }
        }
        s
    }
}

fn sink_yaml(prefix: &str, es: Option<&str>, spool: &std::path::Path) -> String {
    let mut s = format!(
        "  index_prefix: '{prefix}'\n  spool:\n    dir: '{}'\n",
        spool.display()
    );
    if let Some(url) = es {
        s.push_str(&format!("  elasticsearch:\n    url: '{url}'\n"));
    }
    s
}

fn minute(start: DateTime<Utc>, m: f64) -> DateTime<Utc> {
    start + TimeDelta::milliseconds((m * 60_000.0) as i64)
}

pub(super) async fn demo(a: DemoArgs) -> Result<u8, Failure> {
    if !(1.0..=120.0).contains(&a.speed) {
        return Err(invalid(anyhow::anyhow!(
            "--speed {}: must be between 1 and 120 (simulated seconds per real second)",
            a.speed
        )));
    }
    if let Some(url) = &a.es {
        crate::config::check_http_url(url).map_err(|e| invalid(anyhow::anyhow!("--es: {e}")))?;
    }
    let scenario = Scenario::standard();
    let spec = Spec::example();
    let sim = Sim::new(spec.clone(), Utc::now(), Clock::Scaled(a.speed));
    let start = sim.now();
    let end = minute(start, scenario.minutes());
    let tick = Duration::from_secs(15);
    let worker_spool = a.spool.join("worker");
    let config = run::config(
        &spec,
        tick,
        &sink_yaml(&a.prefix, a.es.as_deref(), &worker_spool),
        std::path::Path::new("."),
    )?;
    let policies = run::policies(&[run::WEB_POLICY, run::CAPACITY_POLICY])?;

    // The ship stage: each tick's documents through a bounded queue, as in `ecscale run`.
    let (ship_stage, ship_queue) = ShipStage::start(Shipper::start(&config.sink)?);
    let mut stress_sink = config.sink.clone();
    stress_sink.spool.dir = a.spool.join("stress");
    let stress_shipper = Shipper::start(&stress_sink)?;
    let mut worker = run::worker(config, policies, &sim, Some(ship_queue)).await?;

    let mut fleet = Fleet::start(sim.clone(), 0).await?;
    let url = format!("http://{}", fleet.lb_addr);
    let plan = stress::plan::load_str(
        &scenario.plan(&url, a.speed),
        "(demo plan)",
        std::path::Path::new("."),
    )
    .map_err(|d| anyhow::anyhow!("the demo's stress plan is invalid (a bug):\n{d}"))?;
    let (interrupt_tx, interrupt) = watch::channel(false);
    crate::worker::watch_signals(
        interrupt_tx,
        "demo: stopping: writing the report (a second signal exits at once)",
    );
    let mut stopped = interrupt.clone();

    println!(
        "ecscale demo: {} simulated minutes at {}× ({:.0} s): service {}/{} (tasks of {} CPU units, {} req/s each at full CPU) on Auto Scaling group {} ({}), policies {} and {}",
        scenario.minutes(),
        a.speed,
        scenario.minutes() * 60.0 / a.speed,
        spec.cluster,
        spec.service,
        spec.task.cpu,
        spec.task_rps,
        spec.auto_scaling_group,
        spec.instance_type,
        run::WEB_POLICY.0,
        run::CAPACITY_POLICY.0
    );
    println!(
        "load balancer http://{} ({} tasks serving on their own ports); load: {}; a task is killed at minute {}, an instance at minute {}",
        fleet.lb_addr,
        fleet.task_addrs().len(),
        scenario
            .phases
            .iter()
            .map(|(n, m, f, t)| if f == t { format!("{n} {m} min at {f} rps") } else { format!("{n} {m} min {f}→{t} rps") })
            .collect::<Vec<_>>()
            .join(", "),
        scenario.faults[0].0,
        scenario.faults[1].0,
    );
    println!(
        "documents → {}",
        a.es.as_deref().map_or_else(
            || format!("spool {}", a.spool.display()),
            |u| format!("Elasticsearch {u} (spooled in {} first)", a.spool.display())
        )
    );

    let stress_task = tokio::spawn({
        let plan = plan.clone();
        async move {
            stress::run(
                &plan,
                stress::Options {
                    progress: Progress::Off,
                    interrupt,
                    ecs: None,
                    shipper: Some(stress_shipper),
                    plain_every: Duration::from_secs(3600),
                },
            )
            .await
        }
    });

    let mut faults: Vec<(DateTime<Utc>, Fault)> = scenario
        .faults
        .iter()
        .map(|(m, f)| (minute(start, *m), *f))
        .collect();
    let mut fault_marks: Vec<(DateTime<Utc>, String)> = Vec::new();
    let mut actions: Vec<ActionRow> = Vec::new();
    let mut problems = 0usize;
    let mut next_tick = start + TimeDelta::from_std(tick).unwrap_or_default();
    let (mut shown_rows, mut shown_events) = (0usize, 0usize);
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stopped.changed() => { interrupted = true; }
        }
        let now = sim.now();
        sim.advance(now);
        while faults.first().is_some_and(|(at, _)| *at <= now) {
            let (at, f) = faults.remove(0);
            if let Some(what) = inject(&sim, f) {
                fault_marks.push((at, format!("killed {what}")));
            }
        }
        fleet.reconcile().await?;
        if !a.quiet {
            let g = sim.lock();
            for e in g.cluster.events[shown_events..]
                .iter()
                .filter(|e| report::notable(e.kind))
            {
                println!("    ! {} {}", e.at.format("%H:%M:%S"), e.text);
            }
            shown_events = g.cluster.events.len();
            for r in &g.rows[shown_rows..] {
                println!("{}", r.line());
            }
            shown_rows = g.rows.len();
            let _ = std::io::stdout().flush();
        } else {
            shown_rows = sim.lock().rows.len();
        }
        if now >= next_tick {
            while next_tick <= now {
                next_tick += TimeDelta::from_std(tick).unwrap_or_default();
            }
            let r = worker.tick(now).await;
            problems += r.problems.len();
            for p in &r.problems {
                tracing::warn!("tick problem: {p}");
            }
            let new = actions_of(&r);
            if !a.quiet {
                for x in &new {
                    println!(
                        "    ↳ {} {} {} → {}: {}",
                        x.at.format("%H:%M:%S"),
                        x.target,
                        x.from,
                        x.to,
                        x.reason
                    );
                }
            }
            actions.extend(new);
        }
        if interrupted || (now >= end && stress_task.is_finished()) {
            break;
        }
    }
    let stress_report = match stress_task.await {
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
    fleet.stop();
    drop(worker);
    let drain = if a.es.is_some() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    };
    let stats = ship_stage.finish(tokio::time::Instant::now() + drain).await;
    let ship_failed = stats.not_spooled;

    let outcome = run::outcome(&sim, actions, Vec::new(), DEMO_SLO_MS);
    let hold = scenario.span("hold");
    let marks: Vec<(DateTime<Utc>, &str)> = fault_marks
        .iter()
        .map(|(at, w)| {
            (
                *at,
                if w.contains("instance") {
                    "the killed instance"
                } else {
                    "the killed task"
                },
            )
        })
        .collect();
    let mut checks: Vec<Check> = report::checks(
        &outcome,
        &format!("{}/{}", spec.cluster, spec.service),
        spec.initial_tasks,
        DEMO_SLO_MS,
        (minute(start, hold.0), minute(start, hold.1)),
        &marks,
    );
    if interrupted {
        checks.push(Check {
            passed: false,
            what: "the run was interrupted before the end".into(),
        });
    }
    checks.push(Check {
        passed: problems == 0 && ship_failed == 0,
        what: format!("the worker's ticks saw {problems} problem(s); {ship_failed} document(s) not spooled"),
    });
    let mut summary = format!(
        "ecscale demo: {} simulated minutes at {}× ({}/{} with {} and {})\n{}\n",
        scenario.minutes(),
        a.speed,
        spec.cluster,
        spec.service,
        run::WEB_POLICY.0,
        run::CAPACITY_POLICY.0,
        report::totals_text(&outcome.totals)
    );
    if let Some(r) = &stress_report {
        let l = &r.totals.summary.latency_ms;
        summary.push_str(&format!(
            "stress (client side): {} requests at {:.0}/s, {} errors, p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms\n",
            r.totals.summary.requests, r.totals.rate, r.totals.summary.errors, l.p50, l.p95, l.p99
        ));
    }
    for (at, w) in &fault_marks {
        summary.push_str(&format!("{} {w}\n", at.format("%H:%M:%S")));
    }
    match &a.es {
        Some(u) => {
            summary.push_str(&format!(
            "worker documents: {} shipped to {u}: {} delivered, {} dead letters, {} left in the spool {}\n",
            stats.queued,
            stats.delivered,
            stats.dead_lettered,
            stats.queued.saturating_sub(stats.delivered + stats.dead_lettered + stats.dropped),
            worker_spool.display()
        ))
        }
        None => summary.push_str(&format!(
            "worker documents: {} in the spool {} (send them with: ecscale ship replay {} --es URL)\n",
            stats.queued,
            worker_spool.display(),
            worker_spool.display()
        )),
    }
    for c in &checks {
        summary.push_str(&format!("{} {}\n", if c.passed { "✓" } else { "✗" }, c.what));
    }
    // On the charts, short: which kind was killed (the summary names it).
    let chart_marks: Vec<(DateTime<Utc>, String)> = fault_marks
        .iter()
        .map(|(at, w)| {
            let kind = if w.contains("instance") {
                "instance"
            } else {
                "task"
            };
            (*at, format!("{kind} killed"))
        })
        .collect();
    let charts = report::charts(
        &[Run {
            name: "ecscale",
            outcome: &outcome,
        }],
        DEMO_SLO_MS,
        Some(60.0),
        &chart_marks,
    );
    let html = report::html(
        "ecscale demo",
        &summary,
        &checks,
        &charts,
        &[Run {
            name: "ecscale",
            outcome: &outcome,
        }],
    );
    crate::worker::state::write_atomically(&a.report, html.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing the report {}: {e}", a.report.display()))?;
    println!("\n{summary}report: {}", a.report.display());
    Ok(if checks.iter().all(|c| c.passed) {
        0
    } else {
        EXIT_FAILURE
    })
}
