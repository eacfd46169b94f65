//! Text output for people: the one-line config summary and the tables of `collect --once`.

use std::fmt::Write as _;

use crate::config::Config;
use crate::model::{ClusterSnapshot, Series, Snapshot};

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line saying what a valid config will do.
pub fn summary(c: &Config, policy_targets: usize) -> String {
    let named: usize = c.clusters.iter().map(|k| k.services.len()).sum();
    let discovery = c.clusters.iter().filter(|k| k.discover.is_some()).count();
    let metrics: usize = c
        .clusters
        .iter()
        .flat_map(|k| k.services.iter().map(move |s| (k, s)))
        .map(|(k, s)| k.metrics_of(Some(s), &c.collect, s.target_group.is_some()).len())
        .sum();
    let region = c.aws.region.as_deref().unwrap_or("from the environment");
    let endpoint = c.aws.endpoint_url.as_deref().unwrap_or("AWS");
    let sink = match &c.sink.elasticsearch {
        Some(es) => format!("Elasticsearch {}", es.url),
        None => format!("local spool {}", c.sink.spool.dir.display()),
    };
    let policies = if c.policy_files.is_empty() {
        "no policy files".to_string()
    } else {
        format!(
            "{} with {}",
            plural(c.policy_files.len(), "policy file", "policy files"),
            plural(policy_targets, "target", "targets")
        )
    };
    let capacity = match c.capacity.len() {
        0 => "no Auto Scaling group".to_string(),
        n => format!(
            "{} ({})",
            plural(n, "Auto Scaling group", "Auto Scaling groups"),
            c.capacity
                .iter()
                .map(|g| g.auto_scaling_group.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let state = match &c.worker.state {
        crate::config::StateBackend::File(p) => format!("state in {}", p.display()),
        crate::config::StateBackend::DynamoDb { table } => format!("state in DynamoDB table {table}"),
    };
    let leader = match &c.worker.leader {
        Some(l) => format!(
            ", leader lease in {} ({})",
            l.table,
            humantime::format_duration(l.lease)
        ),
        None => String::new(),
    };
    let groups = match c.groups.len() {
        0 => String::new(),
        n => format!(
            ", {} placed by ecscale ({})",
            plural(n, "task group", "task groups"),
            c.groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let notify = match c.notify.len() {
        0 => String::new(),
        _ => format!(
            ", notifying {}",
            c.notify
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "{}: valid: {}, {} and {} ({} on named services), {}, region {region}, endpoint {endpoint}, sink {sink}, {policies}, {capacity}{groups}, {state}{leader}{notify}",
        c.file.display(),
        plural(c.clusters.len(), "cluster", "clusters"),
        plural(named, "named service", "named services"),
        plural(discovery, "discovery rule", "discovery rules"),
        plural(metrics, "metric", "metrics"),
        schedule(&c.schedule),
    )
}

/// The schedule and, for a cron, when it fires next.
fn schedule(s: &crate::config::Schedule) -> String {
    match s {
        crate::config::Schedule::Cron { schedule, .. } => {
            let next = schedule.next_after(chrono_tz::Tz::UTC, chrono::Utc::now());
            let next = next.map_or("never".to_string(), |t| {
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            });
            format!("{s}, next at {next}")
        }
        crate::config::Schedule::Interval(_) => s.to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let _ = write!(s, "{cell:<w$}");
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&mut headers.iter().copied()));
    for row in rows {
        let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
    }
}

fn short_task_definition(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn latest(s: &Series) -> (String, String) {
    match s.latest() {
        Some(p) => (
            crate::format::short_number(p.value, 3),
            p.timestamp.format("%H:%M:%S").to_string(),
        ),
        None => ("-".into(), "-".into()),
    }
}

/// The tables of one snapshot: per cluster its services, instances and pending tasks; then the
/// metrics; then the API calls the pass made and what its metrics cost.
pub fn snapshot_table(s: &Snapshot) -> String {
    let mut out = String::new();
    for c in &s.clusters {
        let _ = writeln!(
            out,
            "cluster {}: {}, {}, {}",
            c.name,
            plural(c.services.len(), "service", "services"),
            plural(
                c.container_instances.len(),
                "container instance",
                "container instances"
            ),
            plural(c.pending_tasks.len(), "pending task", "pending tasks"),
        );
        let _ = writeln!(out);
        services_table(&mut out, c);
        instances_table(&mut out, c);
        pending_table(&mut out, c);
        let _ = writeln!(out);
    }
    metrics_table(&mut out, s);
    usage_line(&mut out, s);
    out
}

fn services_table(out: &mut String, c: &ClusterSnapshot) {
    let rows: Vec<Vec<String>> = c
        .services
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.status.clone(),
                v.desired.to_string(),
                v.running.to_string(),
                v.pending.to_string(),
                v.rollout.to_string(),
                v.task_reservation
                    .map_or("?".into(), |r| format!("{}/{}", r.cpu, r.memory_mib)),
                short_task_definition(&v.task_definition).to_string(),
            ]
        })
        .collect();
    table(
        out,
        &[
            "SERVICE",
            "STATUS",
            "DESIRED",
            "RUNNING",
            "PENDING",
            "ROLLOUT",
            "TASK CPU/MiB",
            "TASK DEFINITION",
        ],
        &rows,
    );
}

fn instances_table(out: &mut String, c: &ClusterSnapshot) {
    if c.container_instances.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = c
        .container_instances
        .iter()
        .map(|i| {
            vec![
                i.ec2_instance_id.clone().unwrap_or_else(|| "-".into()),
                i.instance_type.clone().unwrap_or_else(|| "-".into()),
                i.status.clone(),
                if i.agent_connected { "yes" } else { "NO" }.into(),
                format!("{}/{}", i.remaining.cpu, i.registered.cpu),
                format!("{}/{}", i.remaining.memory_mib, i.registered.memory_mib),
                format!("{}/{}", i.running_tasks, i.pending_tasks),
            ]
        })
        .collect();
    table(
        out,
        &[
            "INSTANCE",
            "TYPE",
            "STATUS",
            "AGENT",
            "CPU FREE/ALL",
            "MiB FREE/ALL",
            "TASKS RUN/PEND",
        ],
        &rows,
    );
}

fn pending_table(out: &mut String, c: &ClusterSnapshot) {
    if c.pending_tasks.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = c
        .pending_tasks
        .iter()
        .map(|t| {
            vec![
                short_task_definition(&t.arn).to_string(),
                t.service.clone().unwrap_or_else(|| "-".into()),
                t.last_status.clone(),
                t.reservation
                    .map_or("?".into(), |r| format!("{}/{}", r.cpu, r.memory_mib)),
                t.created_at
                    .map_or("-".into(), |d| d.format("%H:%M:%S").to_string()),
            ]
        })
        .collect();
    table(
        out,
        &["PENDING TASK", "SERVICE", "STATUS", "CPU/MiB", "CREATED"],
        &rows,
    );
}

/// The newest complete datapoint of every series.
fn metrics_table(out: &mut String, s: &Snapshot) {
    if s.series.is_empty() {
        return;
    }
    let _ = writeln!(out, "metrics (newest complete datapoint):");
    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = s
        .series
        .iter()
        .map(|m| {
            let (value, at) = latest(m);
            vec![
                m.target(),
                m.id.clone(),
                m.stat.clone(),
                format!("{}s", m.period_secs),
                value,
                m.unit.clone().unwrap_or_else(|| "-".into()),
                at,
                m.samples.len().to_string(),
                m.status.clone(),
            ]
        })
        .collect();
    table(
        out,
        &[
            "SERVICE", "METRIC", "STAT", "PERIOD", "LATEST", "UNIT", "AT (UTC)", "POINTS", "STATUS",
        ],
        &rows,
    );
    let _ = writeln!(out);
}

/// The API calls the pass made and what its metrics cost.
fn usage_line(out: &mut String, s: &Snapshot) {
    let u = &s.usage;
    let calls: Vec<String> = u
        .operations
        .iter()
        .map(|(op, c)| format!("{op} {}", c.calls))
        .collect();
    let _ = writeln!(
        out,
        "API calls: {} ({} retries) · CloudWatch metrics requested: {} (${:.5})",
        if calls.is_empty() {
            "none".into()
        } else {
            calls.join(", ")
        },
        u.total_retries(),
        u.cloudwatch_metrics_requested,
        u.cloudwatch_cost_usd,
    );
}

/// A month of CloudWatch requests, with the arithmetic: one line per rhythm.
pub fn cloudwatch_cost(c: &crate::collect::cost::MonthlyCost) -> String {
    let per_service = c
        .per_service_usd()
        .map_or(String::new(), |u| format!(", ${u:.2} per service"));
    let mut s = format!(
        "CloudWatch: about {} metrics requested a month, ${:.2} a month{per_service} (GetMetricData, $0.01 per 1,000; each series read once a period, or once a tick when ticks are further apart):",
        crate::format::count(c.requests.round() as u64),
        c.usd
    );
    for t in &c.terms {
        let _ = write!(
            s,
            "\n  {} {} every {}: {} × 30 days ÷ {} = {}",
            t.series,
            t.what,
            humantime::format_duration(t.every),
            t.series,
            humantime::format_duration(t.every),
            crate::format::count(t.requests.round() as u64)
        );
    }
    s
}
