//! The ECS half of a collection pass: resolving services (named and discovered), their task
//! definitions, container instances and pending tasks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;

use super::book::Pass;
use super::Collector;
use crate::api::{ApiError, Page, TaskInfo, DESCRIBE_BATCH, DESCRIBE_SERVICES_BATCH};
use crate::config::{ClusterSpec, ServiceSpec};
use crate::model::{
    arn_name, ClusterSnapshot, ContainerInstance, PendingTask, Problem, Resources, ServiceState,
};

/// A safety stop for paging: no real cluster lists more than this many pages of 100.
const MAX_PAGES: usize = 10_000;

/// The statuses of a task that has been asked to run but is not running yet.
const NOT_YET_RUNNING: &[&str] = &["PROVISIONING", "PENDING", "ACTIVATING"];

/// One cluster's services, after step 1 of a pass.
pub(super) struct Resolved {
    pub name: String,
    /// Each service with its config entry (`None` for discovered ones).
    pub services: Vec<(ServiceState, Option<ServiceSpec>)>,
    pub problems: Vec<Problem>,
}

/// Reads every page of a List call.
async fn list_all<F, Fut>(c: &Collector, mut page: F) -> Result<Vec<String>, ApiError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<String>, ApiError>>,
{
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let Page { items, next_token } = c.limited(page(token)).await?;
        out.extend(items);
        match next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
    Ok(out)
}

fn matches_discovery(spec: &ClusterSpec, state: &ServiceState) -> bool {
    let Some(d) = &spec.discover else {
        return false;
    };
    state.status == "ACTIVE"
        && d.name_prefix.as_deref().is_none_or(|p| state.name.starts_with(p))
        && d.tags.iter().all(|(k, v)| state.tags.get(k) == Some(v))
}

/// Step 1a: a cluster's service names, named ones first in config order, then the discovered
/// ones by name.
pub(super) struct Listed {
    pub explicit: Vec<String>,
    pub discovered: BTreeSet<String>,
    pub names: Vec<String>,
    pub problems: Vec<Problem>,
}

/// Step 1a: lists a cluster's services (with `discover`; with events on, the list is read once
/// per tenth of `reconcile`).
pub(super) async fn list(c: &Collector, spec: &ClusterSpec, pass: Option<&Pass>) -> Listed {
    let mut problems = Vec::new();
    // Services may be named by ARN in the config; ECS describes them by name.
    let explicit: Vec<String> = spec.services.iter().map(|s| s.name.clone()).collect();
    let discovered = discover(c, spec, &explicit, pass, &mut problems).await;
    let names = explicit
        .iter()
        .cloned()
        .chain(discovered.iter().cloned())
        .collect();
    Listed {
        explicit,
        discovered,
        names,
        problems,
    }
}

/// Step 1b: the services of a cluster, DescribeServices called once per 10. With `due`
/// (events on, the book's plan), only those are described; the others are served as last
/// read.
pub(super) async fn resolve_services(
    c: &Collector,
    spec: &ClusterSpec,
    listed: Listed,
    due: Option<(Vec<String>, &Pass)>,
) -> Resolved {
    let cluster = spec.name.as_str();
    let Listed {
        explicit,
        discovered,
        names,
        mut problems,
    } = listed;
    let found = match due {
        None => describe_services(c, cluster, &names, &explicit, &mut problems).await,
        Some((due, pass)) => {
            let read = describe_services(c, cluster, &due, &explicit, &mut problems).await;
            c.book.record(cluster, &due, &read, pass.now);
            c.book.states(cluster, &names)
        }
    };
    // By name: a cluster's N services cost N lookups, not N scans of what was found. Built
    // from the last, so of two with one name the first found wins, as a scan finds it.
    let by_name: HashMap<&str, &ServiceState> = found.iter().rev().map(|s| (s.name.as_str(), s)).collect();
    let mut services = Vec::new();
    for (name, service_spec) in explicit.iter().zip(&spec.services) {
        if let Some(state) = by_name.get(arn_name(name)) {
            services.push(((*state).clone(), Some(service_spec.clone())));
        }
    }
    for name in &discovered {
        if let Some(state) = by_name.get(name.as_str()) {
            if matches_discovery(spec, state) {
                services.push(((*state).clone(), None));
            }
        }
    }
    Resolved {
        name: cluster.to_string(),
        services,
        problems,
    }
}

/// With `discover`: the cluster's services that match its name prefix and are not named.
async fn discover(
    c: &Collector,
    spec: &ClusterSpec,
    explicit: &[String],
    pass: Option<&Pass>,
    problems: &mut Vec<Problem>,
) -> BTreeSet<String> {
    let cluster = spec.name.as_str();
    let mut discovered = BTreeSet::new();
    let Some(d) = &spec.discover else {
        return discovered;
    };
    match list_services(c, cluster, pass).await {
        Ok(arns) => {
            for arn in arns {
                let name = arn_name(&arn);
                let prefix_ok = d.name_prefix.as_deref().is_none_or(|p| name.starts_with(p));
                if prefix_ok && !explicit.iter().any(|e| arn_name(e) == name) {
                    discovered.insert(name.to_string());
                }
            }
        }
        Err(e) => problems.push(Problem {
            scope: cluster.to_string(),
            message: format!("service discovery failed: {e}"),
        }),
    }
    discovered
}

/// ListServices, every page; with events on, at most once per tenth of `reconcile` (a new
/// service waits at most that long to be found).
async fn list_services(c: &Collector, cluster: &str, pass: Option<&Pass>) -> Result<Vec<String>, ApiError> {
    let Some(pass) = pass else {
        return list_all(c, |t| c.ecs.list_services(cluster, t)).await;
    };
    if let Some(arns) = c.book.listed(cluster, pass.now, pass.reconcile / 10) {
        return Ok(arns);
    }
    let arns = list_all(c, |t| c.ecs.list_services(cluster, t)).await?;
    c.book.list(cluster, &arns, pass.now);
    Ok(arns)
}

/// DescribeServices for `names`, 10 a call, all at once (within the read budget); what ECS
/// did not describe is a problem of the service.
async fn describe_services(
    c: &Collector,
    cluster: &str,
    names: &[String],
    explicit: &[String],
    problems: &mut Vec<Problem>,
) -> Vec<ServiceState> {
    let batches = futures::future::join_all(
        names
            .chunks(DESCRIBE_SERVICES_BATCH)
            .map(|batch| c.limited(c.ecs.describe_services(cluster, batch))),
    )
    .await;
    let mut found: Vec<ServiceState> = Vec::new();
    for (batch, result) in names.chunks(DESCRIBE_SERVICES_BATCH).zip(batches) {
        match result {
            Ok(d) => {
                found.extend(d.items);
                for (arn, reason) in d.failures {
                    let name = arn_name(&arn);
                    let what = if explicit.iter().any(|e| arn_name(e) == name) {
                        "is named in the config but ECS did not describe it"
                    } else {
                        "was listed but ECS did not describe it"
                    };
                    problems.push(Problem {
                        scope: format!("{cluster}/{name}"),
                        message: format!("{what}: {reason}"),
                    });
                }
            }
            Err(e) => problems.extend(batch.iter().map(|name| Problem {
                scope: format!("{cluster}/{name}"),
                message: format!("not collected: {e}"),
            })),
        }
    }
    found
}

/// Step 2 (ECS side): container instances, pending tasks, and the task definitions that give
/// services and pending tasks their CPU/memory reservation.
pub(super) async fn details(c: &Collector, r: Resolved) -> (ClusterSnapshot, Vec<Problem>) {
    let cluster = r.name.as_str();
    let mut problems = r.problems;
    let mut services: Vec<ServiceState> = r.services.into_iter().map(|(s, _)| s).collect();

    let mut instances = Vec::new();
    if c.settings.container_instances {
        match container_instances(c, cluster).await {
            Ok((found, failures)) => {
                instances = found;
                problems.extend(failures);
            }
            Err(e) => problems.push(Problem {
                scope: cluster.to_string(),
                message: format!("container instances not collected: {e}"),
            }),
        }
    }

    let mut tasks = Vec::new();
    let anything_pending =
        services.iter().any(|s| s.pending > 0) || instances.iter().any(|i| i.pending_tasks > 0);
    if c.settings.pending_tasks && anything_pending {
        match pending_tasks(c, cluster).await {
            Ok(t) => tasks = t,
            Err(e) => problems.push(Problem {
                scope: cluster.to_string(),
                message: format!("pending tasks not collected: {e}"),
            }),
        }
    }
    reservations(c, cluster, &mut services, &tasks, &mut problems).await;
    let pending_tasks = {
        let cache = c.task_definitions.lock().unwrap_or_else(|e| e.into_inner());
        tasks
            .into_iter()
            .map(|t| pending_task(cluster, t, |arn| cache.get(arn).map(|d| d.reservation)))
            .collect()
    };
    (
        ClusterSnapshot {
            name: cluster.to_string(),
            services,
            container_instances: instances,
            pending_tasks,
        },
        problems,
    )
}

/// The services' task reservations, from the task definitions: from the cache, else read
/// (once per revision for the worker's life), with those the pending tasks need.
async fn reservations(
    c: &Collector,
    cluster: &str,
    services: &mut [ServiceState],
    tasks: &[TaskInfo],
    problems: &mut Vec<Problem>,
) {
    let wanted: HashSet<String> = services
        .iter()
        .map(|s| s.task_definition.clone())
        .chain(
            tasks
                .iter()
                .filter(|t| t.cpu.is_none() || t.memory_mib.is_none())
                .map(|t| t.task_definition.clone()),
        )
        .filter(|arn| !arn.is_empty())
        .collect();
    let missing: Vec<String> = {
        let cache = c.task_definitions.lock().unwrap_or_else(|e| e.into_inner());
        wanted
            .iter()
            .filter(|a| !cache.contains_key(*a))
            .cloned()
            .collect()
    };
    let read = futures::future::join_all(
        missing
            .iter()
            .map(|arn| c.limited(c.ecs.describe_task_definition(arn))),
    )
    .await;
    let mut failed_defs = Vec::new();
    {
        let mut cache = c.task_definitions.lock().unwrap_or_else(|e| e.into_inner());
        for (arn, result) in missing.iter().zip(read) {
            match result {
                Ok(info) => {
                    cache.insert(arn.clone(), info);
                }
                Err(e) => failed_defs.push((arn.clone(), e)),
            }
        }
        for s in services.iter_mut() {
            s.task_reservation = cache.get(&s.task_definition).map(|t| t.reservation);
        }
    }
    for (arn, e) in failed_defs {
        for s in services.iter().filter(|s| s.task_definition == arn) {
            problems.push(Problem {
                scope: format!("{cluster}/{}", s.name),
                message: format!("task reservation unknown: {e}"),
            });
        }
    }
}

async fn container_instances(
    c: &Collector,
    cluster: &str,
) -> Result<(Vec<ContainerInstance>, Vec<Problem>), ApiError> {
    let arns = list_all(c, |t| c.ecs.list_container_instances(cluster, t)).await?;
    let answers = futures::future::join_all(
        arns.chunks(DESCRIBE_BATCH)
            .map(|batch| c.limited(c.ecs.describe_container_instances(cluster, batch))),
    )
    .await;
    let mut out = Vec::with_capacity(arns.len());
    let mut problems = Vec::new();
    for answer in answers {
        let d = answer?;
        out.extend(d.items);
        problems.extend(d.failures.into_iter().map(|(arn, reason)| Problem {
            scope: cluster.to_string(),
            message: format!("container instance {arn} not described: {reason}"),
        }));
    }
    Ok((out, problems))
}

/// Tasks asked to run but not running yet. ListTasks cannot filter on the task's last status,
/// so this lists the tasks desired RUNNING and keeps those not yet there; it is only called
/// when DescribeServices or the instances report something pending.
async fn pending_tasks(c: &Collector, cluster: &str) -> Result<Vec<TaskInfo>, ApiError> {
    let arns = list_all(c, |t| c.ecs.list_tasks(cluster, t)).await?;
    let answers = futures::future::join_all(
        arns.chunks(DESCRIBE_BATCH)
            .map(|batch| c.limited(c.ecs.describe_tasks(cluster, batch))),
    )
    .await;
    let mut out = Vec::new();
    for answer in answers {
        out.extend(
            answer?
                .items
                .into_iter()
                .filter(|t| NOT_YET_RUNNING.contains(&t.last_status.as_str())),
        );
    }
    Ok(out)
}

fn pending_task(cluster: &str, t: TaskInfo, task_def: impl Fn(&str) -> Option<Resources>) -> PendingTask {
    let reservation = match (t.cpu, t.memory_mib) {
        (Some(cpu), Some(memory_mib)) => Some(Resources { cpu, memory_mib }),
        _ => task_def(&t.task_definition),
    };
    PendingTask {
        cluster: cluster.to_string(),
        service: t
            .group
            .as_deref()
            .and_then(|g| g.strip_prefix("service:"))
            .map(str::to_string),
        arn: t.arn,
        last_status: t.last_status,
        reservation,
        container_instance: t.container_instance,
        created_at: t.created_at,
    }
}
