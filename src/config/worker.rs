//! The worker's own settings (`worker:`) and the EC2 capacity it manages (`capacity:`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::Resources;
use crate::read::yaml::{Node, Span, Value};
use crate::read::{join, one_of, read_named_list, Cx, FromNode};

/// An Auto Scaling group whose instances serve a cluster's tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacitySpec {
    pub auto_scaling_group: String,
    /// The ECS cluster its instances register to.
    pub cluster: String,
    /// Spare CPU and memory kept beyond what tasks reserve (a fraction, 0.1 = 10 %).
    pub headroom: f64,
    /// Room kept for this many more tasks (of the cluster's largest task size): warm capacity,
    /// so a scale-out of that many needs no instance to boot.
    pub spare_tasks: u32,
    /// What one instance offers to tasks. When absent: learned from the cluster's registered
    /// container instances, else from the group's instance type.
    pub instance: Option<Resources>,
    /// How long a draining instance may take to lose its tasks before the scale-in is given up.
    pub drain_timeout: Duration,
    /// No instance is taken away within this long of the last scale-out or scale-in.
    pub scale_in_cooldown: Duration,
    /// What to do when a capacity provider with managed scaling sizes the group.
    pub capacity_provider: ManagedScaling,
    pub span: Span,
}

/// A group that ECS sizes itself (a capacity provider with managed scaling ENABLED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedScaling {
    /// Leave the group to ECS (and say so in its decision every tick).
    Refuse,
    /// Disable managed scaling (UpdateCapacityProvider), then size the group.
    TakeOver,
}

/// Where the engine's memory (cooldown clocks, recent recommendations) is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// A JSON file, rewritten atomically after each tick (one worker).
    File(PathBuf),
    /// A DynamoDB table with a string partition key `key` (several workers).
    DynamoDb { table: String },
}

/// Several workers: one leader at a time, through a DynamoDB lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSettings {
    /// A table with a string partition key `key`.
    pub table: String,
    /// How long a lease lasts without renewal: a dead leader is replaced within it.
    pub lease: Duration,
    /// This worker's name in the lease (default: host name and process id).
    pub id: Option<String>,
}

/// What to do when Application Auto Scaling also scales a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppAutoScaling {
    /// Leave the service alone (and say so): two autoscalers must not fight.
    Refuse,
    /// Suspend Application Auto Scaling's dynamic scaling on it, then scale it.
    TakeOver,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// Where `/metrics` and `/healthz` are served (none: not served).
    pub metrics_addr: Option<SocketAddr>,
    pub state: StateBackend,
    pub leader: Option<LeaderSettings>,
    pub app_autoscaling: AppAutoScaling,
    /// UpdateService calls per second, across services (ECS allows 5 sustained).
    pub update_rate: f64,
    /// On the first SIGTERM/SIGINT: time to finish the tick and flush the spool.
    pub shutdown_grace: Duration,
    /// How often the config and policy files are checked for changes (none: only SIGHUP and
    /// `POST /reload` reload them).
    pub watch: Option<Duration>,
}

impl WorkerSettings {
    pub fn defaults(base_dir: &Path) -> Self {
        WorkerSettings {
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            state: StateBackend::File(base_dir.join("ecscale-state.json")),
            leader: None,
            app_autoscaling: AppAutoScaling::Refuse,
            update_rate: 5.0,
            shutdown_grace: Duration::from_secs(30),
            watch: Some(Duration::from_secs(2)),
        }
    }
}

fn positive(n: &Node, p: &str, cx: &mut Cx) -> Option<Duration> {
    let d = Duration::from_node(n, p, cx)?;
    (!d.is_zero()).then_some(d).or_else(|| {
        cx.error(n.span, p, "must be longer than zero");
        None
    })
}

pub(super) fn read_worker(node: &Node, path: &str, cx: &mut Cx, base_dir: &Path) -> Option<WorkerSettings> {
    let d = WorkerSettings::defaults(base_dir);
    let mut m = cx.map(node, path)?;
    let metrics_addr = match m.take("metrics_addr") {
        None if m.has("metrics_addr") => None,
        None => d.metrics_addr,
        Some(n) => read_metrics_addr(n, &join(path, "metrics_addr"), cx),
    };
    let state = m
        .opt_with(cx, "state", |n, p, cx| read_state(n, p, cx, base_dir))
        .unwrap_or(d.state);
    let leader = m.opt_with(cx, "leader", read_leader);
    let app_autoscaling = m
        .opt_with(cx, "app_autoscaling", |n, p, cx| {
            one_of(n, p, cx, &["refuse", "take_over"])
        })
        .map(|s| {
            if s == "take_over" {
                AppAutoScaling::TakeOver
            } else {
                AppAutoScaling::Refuse
            }
        })
        .unwrap_or(d.app_autoscaling);
    let update_rate = m
        .opt_with(cx, "update_rate", |n, p, cx| {
            let v = f64::from_node(n, p, cx)?;
            (v > 0.0 && v <= 50.0).then_some(v).or_else(|| {
                cx.error(n.span, p, "must be above 0 and at most 50 calls per second");
                None
            })
        })
        .unwrap_or(d.update_rate);
    let shutdown_grace = m
        .opt_with(cx, "shutdown_grace", positive)
        .unwrap_or(d.shutdown_grace);
    let watch = match m.take("watch") {
        None => d.watch,
        Some(n) if n.as_scalar() == Some("off") => None,
        Some(n) => positive(n, &join(path, "watch"), cx),
    };
    if matches!(state, StateBackend::File(_)) && leader.is_some() {
        cx.error(
            m.span_of("leader"),
            &join(path, "leader"),
            "several workers need a shared state: set state.dynamodb_table too",
        );
    }
    m.finish(
        cx,
        &[
            "metrics_addr",
            "state",
            "leader",
            "app_autoscaling",
            "update_rate",
            "shutdown_grace",
            "watch",
        ],
    );
    Some(WorkerSettings {
        metrics_addr,
        state,
        leader,
        app_autoscaling,
        update_rate,
        shutdown_grace,
        watch,
    })
}

/// `worker.metrics_addr`: an address, or `off`.
fn read_metrics_addr(n: &Node, p: &str, cx: &mut Cx) -> Option<SocketAddr> {
    match n.as_scalar() {
        Some("off") => None,
        Some(s) => s
            .parse::<SocketAddr>()
            .map_err(|e| {
                cx.error(
                    n.span,
                    p,
                    format!("`{s}` is not an address such as 127.0.0.1:9464 ({e}); `off` serves nothing"),
                )
            })
            .ok(),
        None => {
            cx.error(n.span, p, "expected an address such as 127.0.0.1:9464, or off");
            None
        }
    }
}

/// `worker.state`: a file (one worker) or a DynamoDB table (several), one of the two.
fn read_state(n: &Node, p: &str, cx: &mut Cx, base_dir: &Path) -> Option<StateBackend> {
    let mut s = cx.map(n, p)?;
    let file = s.opt::<String>(cx, "file").map(|f| base_dir.join(f));
    let table = s.opt::<String>(cx, "dynamodb_table");
    let span = s.span();
    s.finish(cx, &["file", "dynamodb_table"]);
    match (file, table) {
        (Some(f), None) => Some(StateBackend::File(f)),
        (None, Some(t)) => Some(StateBackend::DynamoDb { table: t }),
        _ => {
            cx.error(
                span,
                p,
                "give `file` (one worker) or `dynamodb_table` (several), one of the two",
            );
            None
        }
    }
}

/// `worker.leader`: the lease's table, its length (at least 2 s) and this worker's id.
fn read_leader(n: &Node, p: &str, cx: &mut Cx) -> Option<LeaderSettings> {
    let mut l = cx.map(n, p)?;
    let table = l.req::<String>(cx, "dynamodb_table");
    let lease = l
        .opt_with(cx, "lease", positive)
        .unwrap_or(Duration::from_secs(15));
    let id = l.opt::<String>(cx, "id");
    if lease < Duration::from_secs(2) {
        cx.error(
            l.span_of("lease"),
            &join(p, "lease"),
            "must be at least 2s (it is renewed every third of it)",
        );
    }
    l.finish(cx, &["dynamodb_table", "lease", "id"]);
    Some(LeaderSettings {
        table: table?,
        lease,
        id,
    })
}

fn read_capacity_one(node: &Node, path: &str, cx: &mut Cx) -> Option<CapacitySpec> {
    let mut m = cx.map(node, path)?;
    let auto_scaling_group = m.req::<String>(cx, "auto_scaling_group");
    let cluster = m.req::<String>(cx, "cluster");
    let headroom = m
        .opt_with(cx, "headroom", |n, p, cx| {
            let s = n.as_scalar().unwrap_or_default().trim();
            let v = match s.strip_suffix('%') {
                Some(pct) => pct.trim().parse::<f64>().ok().map(|v| v / 100.0),
                None => s.parse::<f64>().ok().filter(|v| *v < 1.0),
            };
            match v {
                Some(v) if (0.0..1.0).contains(&v) => Some(v),
                _ => {
                    cx.error(
                        n.span,
                        p,
                        format!("expected a fraction such as 10% or 0.1, found {}", n.describe()),
                    );
                    None
                }
            }
        })
        .unwrap_or(0.1);
    let instance = m.opt_with(cx, "instance", read_resources);
    let spare_tasks = m.or(cx, "spare_tasks", 0u32);
    let drain_timeout = m
        .opt_with(cx, "drain_timeout", positive)
        .unwrap_or(Duration::from_secs(600));
    let scale_in_cooldown = m
        .opt_with(cx, "scale_in_cooldown", Duration::from_node)
        .unwrap_or(Duration::from_secs(300));
    let capacity_provider = match m
        .opt_with(cx, "capacity_provider", |n, p, cx| {
            one_of(n, p, cx, &["refuse", "take_over"])
        })
        .as_deref()
    {
        Some("take_over") => ManagedScaling::TakeOver,
        _ => ManagedScaling::Refuse,
    };
    m.finish(
        cx,
        &[
            "auto_scaling_group",
            "cluster",
            "headroom",
            "spare_tasks",
            "instance",
            "drain_timeout",
            "scale_in_cooldown",
            "capacity_provider",
        ],
    );
    Some(CapacitySpec {
        auto_scaling_group: auto_scaling_group?,
        cluster: cluster?,
        headroom,
        spare_tasks,
        instance,
        drain_timeout,
        scale_in_cooldown,
        capacity_provider,
        span: node.span,
    })
}

pub(super) fn read_capacity(node: &Node, path: &str, cx: &mut Cx) -> Option<Vec<CapacitySpec>> {
    if !matches!(node.value, Value::Seq(_)) {
        cx.error(
            node.span,
            path,
            format!(
                "expected a list of Auto Scaling groups, found {}",
                node.describe()
            ),
        );
        return None;
    }
    read_named_list(
        node,
        path,
        cx,
        ("auto_scaling_group", "auto_scaling_group"),
        |_, n, p, cx| read_capacity_one(n, p, cx),
        |c| &c.auto_scaling_group,
    )
}

/// `{cpu, memory_mib}`: CPU units and MiB (an instance's, a task's).
pub fn read_resources(n: &Node, p: &str, cx: &mut Cx) -> Option<Resources> {
    let mut m = cx.map(n, p)?;
    let cpu = m.req::<u32>(cx, "cpu");
    let memory_mib = m.req::<u32>(cx, "memory_mib");
    m.finish(cx, &["cpu", "memory_mib"]);
    Some(Resources {
        cpu: cpu?,
        memory_mib: memory_mib?,
    })
}
