//! `ecscale demo`: a scenario (`examples/demo/scenario.yaml`, or `--scenario FILE`) run for real:
//! the simulated cluster with its service and task groups, the worker with the scenario's config
//! and policies, a stress load of real HTTP requests, the faults on the way, a live view, and a
//! report with checks.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{invalid, Failure, EXIT_FAILURE};
use crate::ship::StatsSnapshot as ShipStats;
use crate::sim::demo::{checks, kind, visits_check, Live, Outlet, Record, View};
use crate::sim::report::{self, Check, Run};
use crate::sim::run;
use crate::sim::scenario::{self, Scenario, Source};
use crate::stress;

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

pub(super) async fn demo(a: DemoArgs) -> Result<u8, Failure> {
    let s = read_scenario(&a)?;
    if !a.quiet {
        print_intro(&a, &s);
    }
    let outlet = Outlet {
        spool: a.spool.clone(),
        prefix: a.prefix.clone(),
        es: a.es.clone(),
    };
    let mut live = Live::start(&outlet, &s).await?;
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
