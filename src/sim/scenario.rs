//! The demo's scenario file (`examples/demo/scenario.yaml`, `ecscale demo --scenario FILE`): the
//! worker's config file and policy files it names, the simulated cluster, the load in phases
//! and the faults. Every file goes through the reader users' files go through (the config
//! reader, the policy reader, the stress plan's phase reader), with every mistake reported at
//! its file:line:column, and the result is typed values: nothing is rebuilt as text.
//!
//! The scenario shipped in `examples/demo/` is also compiled in, with the files it names, so
//! `ecscale demo` runs anywhere; `--scenario` reads the files from disk.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::cluster::{GroupWorkload, Spec};
use crate::config::env::Vars;
use crate::config::Config;
use crate::model::Resources;
use crate::policy::PolicyFile;
use crate::policy::TargetPolicy;
use crate::read::yaml::{Node, Span};
use crate::read::{join, one_of, Cx, Diagnostics, FromNode, MapReader};
use crate::stress::plan::{list, read_phase, Phase};
use crate::stress::profile::Load;

/// The example service policy and the capacity policy, as shipped in `policies/`.
pub const WEB_POLICY: (&str, &str) = ("policies/web.yaml", include_str!("../../policies/web.yaml"));
pub const CAPACITY_POLICY: (&str, &str) = (
    "policies/capacity.yaml",
    include_str!("../../policies/capacity.yaml"),
);
/// The queue-worker group's policy ([`super::cluster::GroupWorkload::queue_worker`]).
pub const QUEUE_WORKER_POLICY: (&str, &str) = (
    "policies/queue-worker.yaml",
    include_str!("../../policies/queue-worker.yaml"),
);

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The RUNNING task started first stops (its container exits).
    KillTask,
    /// The instance with the most tasks fails its health check.
    KillInstance,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::KillTask => "a task killed",
            Fault::KillInstance => "an instance killed",
        }
    }
}

/// The files of the scenario in `examples/demo/`, compiled in: (path from the repository, text).
const EMBEDDED: [(&str, &str); 5] = [
    (
        "examples/demo/scenario.yaml",
        include_str!("../../examples/demo/scenario.yaml"),
    ),
    (
        "examples/demo/ecscale.yaml",
        include_str!("../../examples/demo/ecscale.yaml"),
    ),
    WEB_POLICY,
    CAPACITY_POLICY,
    QUEUE_WORKER_POLICY,
];

/// Where the scenario comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// `examples/demo/scenario.yaml` and the files it names, as compiled in.
    Embedded,
    File(&'a Path),
}

/// A scenario, read and checked.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// The scenario file, as messages name it.
    pub file: String,
    pub config: Config,
    pub policies: Vec<TargetPolicy>,
    /// The policy files, as named in messages.
    pub policy_files: Vec<String>,
    pub speed: f64,
    pub slo_p95: Duration,
    pub spec: Spec,
    /// The load, in simulated time (open phases only).
    pub phases: Vec<Phase>,
    /// Faults at simulated offsets from the start, in time order.
    pub faults: Vec<(Duration, Fault)>,
}

impl Scenario {
    pub fn minutes(&self) -> f64 {
        self.phases.iter().map(|p| p.duration.as_secs_f64()).sum::<f64>() / 60.0
    }

    /// The phase with the highest mean rate (the longest of those), and its simulated span
    /// (start, end in minutes): where the checks expect latency back under the SLO.
    pub fn peak_phase(&self) -> (&str, f64, f64) {
        let mut t = 0.0;
        let mut best = (f64::MIN, 0.0, ("", 0.0, 0.0));
        for p in &self.phases {
            let d = p.duration.as_secs_f64() / 60.0;
            let mean = p
                .schedule()
                .map_or(0.0, |s| s.total() as f64 / p.duration.as_secs_f64());
            if (mean, d) > (best.0, best.1) {
                best = (mean, d, (p.name.as_str(), t, t + d));
            }
            t += d;
        }
        best.2
    }

    /// The last phase's name (where the checks expect the count back down).
    pub fn last_phase(&self) -> &str {
        self.phases.last().map_or("", |p| p.name.as_str())
    }

    /// The worker's tick interval.
    pub fn tick(&self) -> Duration {
        match &self.config.schedule {
            crate::config::Schedule::Interval(d) => *d,
            crate::config::Schedule::Cron { .. } => Duration::from_secs(15),
        }
    }
}

/// The demo's worker config (`examples/demo/ecscale.yaml`), as compiled in.
pub fn embedded_config() -> Result<Config, Diagnostics> {
    let (path, text) = EMBEDDED[1];
    crate::config::load_str(text, path, Path::new("examples/demo"), &Vars::default())
}

/// `a/b/../c` → `a/c`, without touching the disk (to find compiled-in files).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                let up = matches!(out.components().next_back(), Some(Component::Normal(_)));
                if up {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A file the scenario names: from disk, or compiled in.
fn read(source: Source<'_>, path: &Path, what: &str) -> Result<String, Diagnostics> {
    match source {
        Source::File(_) => crate::read::read_source(path, what),
        Source::Embedded => {
            let want = normalize(path);
            match EMBEDDED.iter().find(|(p, _)| Path::new(p) == want) {
                Some((_, text)) => Ok(text.to_string()),
                None => crate::read::read_source(path, what),
            }
        }
    }
}

/// The raw scenario file: what it says, before the files it names are read.
struct Raw {
    name: String,
    config: (PathBuf, Span),
    policies: Vec<(PathBuf, Span)>,
    speed: f64,
    slo_p95: Duration,
    cluster: ClusterShape,
    phases: Vec<Phase>,
    faults: Vec<(Duration, Fault)>,
}

/// What the scenario says of the simulated cluster (its names come from the config).
struct ClusterShape {
    instance_type: String,
    initial_instances: u32,
    initial_tasks: u32,
    task: Resources,
    task_rps: f64,
    task_start: Duration,
    instance_boot: Duration,
    groups: Vec<(GroupShape, Span)>,
    span: Span,
}

struct GroupShape {
    name: String,
    task: Resources,
    queue: String,
    jobs_per_request: f64,
    jobs_per_task_s: f64,
}

const TOP: &[&str] = &[
    "name", "config", "policies", "speed", "slo_p95", "cluster", "phases", "faults",
];

/// Reads the scenario (and its config and policy files); every mistake at once.
pub fn load(source: Source<'_>) -> Result<Scenario, Diagnostics> {
    let path = match source {
        Source::Embedded => Path::new(EMBEDDED[0].0),
        Source::File(p) => p,
    };
    let file = path.display().to_string();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let text = read(source, path, "the scenario file")?;
    let mut cx = Cx::new(file.clone());
    let raw = crate::read::parse_yaml(&text, &mut cx).and_then(|docs| match docs.as_slice() {
        [doc] => read_raw(doc, &mut cx, &base),
        _ => {
            cx.error(
                Span { line: 1, col: 1 },
                "(file)",
                "a scenario is one YAML document",
            );
            None
        }
    });
    let Some(raw) = raw.filter(|_| cx.diags.is_empty()) else {
        cx.diags.sort_by_key(|d| d.span);
        return Err(Diagnostics(cx.diags));
    };
    let config_text = read(source, &raw.config.0, "the config file")?;
    let config_base = raw.config.0.parent().map(Path::to_path_buf).unwrap_or_default();
    let config = crate::config::load_str(
        &config_text,
        &raw.config.0.display().to_string(),
        &config_base,
        &Vars::from_env(),
    )?;
    let mut files = Vec::new();
    let mut diags = Vec::new();
    for (p, _) in &raw.policies {
        let loaded = read(source, p, "the policy file").and_then(|text| {
            let base = p.parent().map(Path::to_path_buf).unwrap_or_default();
            crate::policy::load_str(&text, &p.display().to_string(), &base)
        });
        match loaded {
            Ok(targets) => files.push(PolicyFile {
                path: p.clone(),
                targets,
            }),
            Err(d) => diags.extend(d.0),
        }
    }
    diags.extend(crate::policy::duplicate_targets(&files));
    diags.extend(crate::policy::check_against_config(&config, &files));
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }
    let spec = spec(&raw, &config, &mut cx).filter(|_| cx.diags.is_empty());
    let Some(spec) = spec else {
        return Err(Diagnostics(cx.diags));
    };
    Ok(Scenario {
        name: raw.name,
        file,
        policy_files: files.iter().map(|f| f.path.display().to_string()).collect(),
        policies: files.into_iter().flat_map(|f| f.targets).collect(),
        config,
        speed: raw.speed,
        slo_p95: raw.slo_p95,
        spec,
        phases: raw.phases,
        faults: raw.faults,
    })
}

/// The fastest the simulated world runs. A task's CPU is the share of real time it spent serving
/// real requests: above 60× a 20-second window lasts under a third of a second of real time,
/// too few requests for a steady reading, and the policies (and the demo's checks) answer the
/// noise (at 90×, 2 runs in 20 had a flap; at 60×, none).
pub const MAX_SPEED: f64 = 60.0;

/// Whether `speed` (simulated seconds per real second) is one the simulated world keeps.
pub fn check_speed(speed: f64) -> Result<(), String> {
    if (1.0..=MAX_SPEED).contains(&speed) {
        return Ok(());
    }
    Err(format!(
        "must be between 1 and {MAX_SPEED} (simulated seconds per real second): above {MAX_SPEED}× a \
         20-second window lasts too little real time to measure a task's CPU steadily"
    ))
}

fn read_raw(doc: &Node, cx: &mut Cx, base: &Path) -> Option<Raw> {
    let mut m = cx.map(doc, "")?;
    let name = m.or(cx, "name", "ecscale demo".to_string());
    let path_of = |n: &Node, p: &str, cx: &mut Cx| {
        String::from_node(n, p, cx).map(|s| (normalize(&base.join(s)), n.span))
    };
    let config = m.req_with(cx, "config", path_of);
    let policies = m.req_with(cx, "policies", |n, p, cx| list(n, p, cx, "policy file", path_of));
    let speed = m.or(cx, "speed", 20.0);
    if let Err(e) = check_speed(speed) {
        cx.error(m.span_of("speed"), "speed", e);
    }
    let slo_p95 = m.or(cx, "slo_p95", Duration::from_millis(250));
    let cluster = m.req_with(cx, "cluster", read_cluster);
    let phases = m.req_with(cx, "phases", |n, p, cx| list(n, p, cx, "phase", open_phase));
    let faults = m
        .opt_with(cx, "faults", |n, p, cx| list(n, p, cx, "fault", read_fault))
        .unwrap_or_default();
    m.finish(cx, TOP);
    let mut faults = faults;
    faults.sort_by_key(|(at, _)| *at);
    Some(Raw {
        name,
        config: config?,
        policies: policies?,
        speed,
        slo_p95,
        cluster: cluster?,
        phases: phases?,
        faults,
    })
}

/// A phase of the stress plan's syntax whose load is by the clock (the demo's load is open).
fn open_phase(n: &Node, p: &str, cx: &mut Cx) -> Option<Phase> {
    let phase = read_phase(n, p, cx)?;
    if !matches!(phase.load, Load::Open(_)) {
        cx.error(
            n.span,
            p,
            "the demo's load is by the clock: rate, ramp, steps, spike or sine (not users or max)",
        );
        return None;
    }
    Some(phase)
}

fn read_fault(n: &Node, p: &str, cx: &mut Cx) -> Option<(Duration, Fault)> {
    let mut m = cx.map(n, p)?;
    let at: Option<Duration> = m.req(cx, "at");
    let kill = m.req_with(cx, "kill", |n, p, cx| one_of(n, p, cx, &["task", "instance"]));
    m.finish(cx, &["at", "kill"]);
    let fault = match kill?.as_str() {
        "task" => Fault::KillTask,
        _ => Fault::KillInstance,
    };
    Some((at?, fault))
}

/// A task's size: [`crate::config::read_resources`], above 0.
fn resources(n: &Node, p: &str, cx: &mut Cx) -> Option<Resources> {
    let r = crate::config::read_resources(n, p, cx)?;
    if r.cpu == 0 || r.memory_mib == 0 {
        cx.error(n.span, p, "cpu and memory_mib must be above 0");
        return None;
    }
    Some(r)
}

fn read_cluster(n: &Node, p: &str, cx: &mut Cx) -> Option<ClusterShape> {
    let d = Spec::example();
    let mut m = cx.map(n, p)?;
    let span = m.span();
    let shape = ClusterShape {
        instance_type: m.or(cx, "instance_type", d.instance_type.clone()),
        initial_instances: m.or(cx, "initial_instances", d.initial_instances),
        initial_tasks: m.or(cx, "initial_tasks", d.initial_tasks),
        task: m.opt_with(cx, "task", resources).unwrap_or(d.task),
        task_rps: m.or(cx, "task_rps", d.task_rps),
        task_start: m.or(cx, "task_start", d.task_start),
        instance_boot: m.or(cx, "instance_boot", d.instance_boot),
        groups: m
            .opt_with(cx, "groups", |n, p, cx| {
                list(n, p, cx, "group", |n, p, cx| {
                    read_group(n, p, cx).map(|g| (g, n.span))
                })
            })
            .unwrap_or_default(),
        span,
    };
    if crate::actuate::capacity::instance_type_resources(&shape.instance_type).is_none() {
        cx.error(
            m.span_of("instance_type"),
            &join(p, "instance_type"),
            format!(
                "`{}` is not an instance type ecscale knows the size of",
                shape.instance_type
            ),
        );
    }
    if shape.task_rps <= 0.0 {
        cx.error(m.span_of("task_rps"), &join(p, "task_rps"), "must be above 0");
    }
    m.finish(
        cx,
        &[
            "instance_type",
            "initial_instances",
            "initial_tasks",
            "task",
            "task_rps",
            "task_start",
            "instance_boot",
            "groups",
        ],
    );
    Some(shape)
}

fn read_group(n: &Node, p: &str, cx: &mut Cx) -> Option<GroupShape> {
    let mut m: MapReader<'_> = cx.map(n, p)?;
    let name: Option<String> = m.req(cx, "name");
    let task = m.req_with(cx, "task", resources);
    let queue: Option<String> = m.req(cx, "queue");
    let jobs_per_request = m.or(cx, "jobs_per_request", 0.25);
    let jobs_per_task_s = m.or(cx, "jobs_per_task_s", 15.0);
    if jobs_per_task_s <= 0.0 || jobs_per_request < 0.0 {
        cx.error(
            m.span(),
            p,
            "jobs_per_task_s must be above 0 and jobs_per_request at least 0",
        );
    }
    m.finish(
        cx,
        &["name", "task", "queue", "jobs_per_request", "jobs_per_task_s"],
    );
    Some(GroupShape {
        name: name?,
        task: task?,
        queue: queue?,
        jobs_per_request,
        jobs_per_task_s,
    })
}

/// The simulated cluster: the config's names (one cluster, one service behind a load balancer,
/// one Auto Scaling group), the scenario's shape. A name the simulator cannot stand for is a
/// mistake at the scenario's `cluster:`.
fn spec(raw: &Raw, config: &Config, cx: &mut Cx) -> Option<Spec> {
    let shape = &raw.cluster;
    let at = shape.span;
    let file = config.file.display().to_string();
    let (Some(cluster), Some(capacity)) = (config.clusters.first(), config.capacity.first()) else {
        cx.error(
            at,
            "cluster",
            format!("{file} must name a cluster and its Auto Scaling group (capacity:)"),
        );
        return None;
    };
    let [service] = cluster.services.as_slice() else {
        cx.error(
            at,
            "cluster",
            format!(
                "{file}: the simulated cluster runs one service; its cluster names {}",
                cluster.services.len()
            ),
        );
        return None;
    };
    let mut spec = Spec {
        region: config.aws.region.clone().unwrap_or_else(|| "us-east-1".into()),
        cluster: cluster.name.clone(),
        service: service.name.clone(),
        auto_scaling_group: capacity.auto_scaling_group.clone(),
        instance_type: shape.instance_type.clone(),
        task: shape.task,
        task_rps: shape.task_rps,
        initial_tasks: shape.initial_tasks,
        initial_instances: shape.initial_instances,
        task_start: shape.task_start,
        instance_boot: shape.instance_boot,
        high_resolution: config.collect.high_resolution.then_some(Duration::from_secs(20)),
        headroom: capacity.headroom,
        spare_tasks: capacity.spare_tasks,
        ..Spec::example()
    };
    let named = [
        ("target_group", service.target_group.clone(), spec.target_group()),
        (
            "load_balancer",
            service.load_balancer.clone(),
            spec.load_balancer(),
        ),
    ];
    for (key, given, wanted) in named {
        if given.as_deref() != Some(wanted.as_str()) {
            cx.error(
                at,
                "cluster",
                format!("{file}: service {}'s {key} must be `{wanted}` (the simulated load balancer's), not {given:?}", service.name),
            );
        }
    }
    spec.groups = group_workloads(shape, config, &file, cx);
    Some(spec)
}

/// The config's task groups, each with its entry in the scenario's `cluster.groups` (its task
/// size and queue); an entry of no task group is a mistake.
fn group_workloads(shape: &ClusterShape, config: &Config, file: &str, cx: &mut Cx) -> Vec<GroupWorkload> {
    let at = shape.span;
    let mut out = Vec::new();
    for g in &config.groups {
        let Some((shape, _)) = shape.groups.iter().find(|(s, _)| s.name == g.name) else {
            cx.error(
                at,
                "cluster.groups",
                format!(
                    "task group `{}` of {file} needs an entry here (its task size and queue)",
                    g.name
                ),
            );
            continue;
        };
        out.push(GroupWorkload {
            name: g.name.clone(),
            family: g
                .task_definition
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string(),
            task: shape.task,
            queue: shape.queue.clone(),
            jobs_per_request: shape.jobs_per_request,
            jobs_per_task_s: shape.jobs_per_task_s,
        });
    }
    for (s, span) in &shape.groups {
        if !config.groups.iter().any(|g| g.name == s.name) {
            cx.error(
                *span,
                "cluster.groups",
                format!("`{}` is not a task group of {file}", s.name),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_scenario_reads_into_two_workloads_with_their_policies() {
        let s = load(Source::Embedded).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            (s.spec.cluster.as_str(), s.spec.service.as_str()),
            ("production", "web")
        );
        assert_eq!(s.spec.groups.len(), 1);
        assert_eq!(s.spec.groups[0].task.cpu, 1024);
        assert_eq!(s.policies.len(), 3);
        assert_eq!(s.minutes(), 50.0);
        assert_eq!(s.peak_phase(), ("hold", 13.0, 28.0));
        assert_eq!(s.last_phase(), "quiet");
        assert_eq!(s.faults.len(), 2);
        assert_eq!(s.tick(), Duration::from_secs(15));
    }

    #[test]
    fn paths_are_normalized_without_losing_a_way_up() {
        assert_eq!(
            normalize(Path::new("examples/demo/../../policies/web.yaml")),
            Path::new("policies/web.yaml")
        );
        assert_eq!(normalize(Path::new("../a/./../../b")), Path::new("../../b"));
        assert_eq!(normalize(Path::new("/x/../y")), Path::new("/y"));
    }

    #[test]
    fn a_mistaken_scenario_names_every_mistake_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo");
        std::fs::copy(repo.join("ecscale.yaml"), dir.path().join("ecscale.yaml")).unwrap();
        let text = "config: ecscale.yaml\npolicies: [nowhere.yaml]\nspeed: 500\ncluster:\n  instance_type: m9.huge\n  groups: []\nphases:\n  - {duration: 1m, users: 5}\nfaults:\n  - {at: 1m, kill: cluster}\n";
        let path = dir.path().join("scenario.yaml");
        std::fs::write(&path, text).unwrap();
        let d = load(Source::File(&path)).unwrap_err().to_string();
        for want in [
            ":3:8: speed: must be between 1 and 60",
            ":5:18: cluster.instance_type: `m9.huge` is not an instance type",
            ":8:5: phases[0]: the demo's load is by the clock",
            ":10:20: faults[0].kill: `cluster` is not one of: task, instance",
        ] {
            assert!(d.contains(want), "{want} in\n{d}");
        }
    }

    #[test]
    fn a_scenario_giving_one_service_two_policies_is_refused_as_the_worker_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let demo = repo.join("examples/demo");
        std::fs::copy(demo.join("ecscale.yaml"), dir.path().join("ecscale.yaml")).unwrap();
        std::fs::copy(repo.join("policies/web.yaml"), dir.path().join("web-copy.yaml")).unwrap();
        let text = std::fs::read_to_string(demo.join("scenario.yaml"))
            .unwrap()
            .replace(
                "../../policies/web.yaml",
                &repo.join("policies/web.yaml").display().to_string(),
            )
            .replace(
                "../../policies/capacity.yaml",
                &format!(
                    "web-copy.yaml\n  - {}",
                    repo.join("policies/capacity.yaml").display()
                ),
            )
            .replace("../../policies/", &format!("{}/policies/", repo.display()));
        let path = dir.path().join("scenario.yaml");
        std::fs::write(&path, &text).unwrap();
        let d = load(Source::File(&path)).unwrap_err().to_string();
        assert!(d.contains("web-copy.yaml:"), "{d}");
        assert!(
            d.contains("target: production/web already has a policy at"),
            "{d}"
        );
        // Without the copy, the same scenario reads.
        std::fs::write(&path, text.replace("  - web-copy.yaml\n", "")).unwrap();
        load(Source::File(&path)).unwrap_or_else(|d| panic!("{d}"));
    }
}
