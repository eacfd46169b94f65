//! `ecscale deploy check`: the CloudFormation stack (`deploy/ecscale.cfn.yaml`, or one of yours
//! in its shape) and the config and policies it will run, checked together before they go out:
//! every AWS action the config implies is granted by the stack's task role, every cluster the
//! config and its policies name is one the stack grants, and several replicas share a lease.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::{AppAutoScaling, Config, ManagedScaling, StateBackend};
use crate::model::TargetKey;
use crate::policy::TargetPolicy;
use crate::read::yaml::{parse_documents, Node, Value};

/// Templates are small; a larger file is not one.
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// What the check reads from a template.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub file: String,
    /// The actions the task role's inline policies allow (`service:Action`, `service:*`, `*`).
    pub actions: BTreeSet<String>,
    /// The `ClusterNames` parameter's default, when it has one.
    pub cluster_names: Option<Vec<String>>,
    /// The `Replicas` parameter's default (the service's desired count), when it has one.
    pub replicas: Option<u32>,
}

/// One action the config implies, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub action: &'static str,
    pub why: &'static str,
}

/// Reads `path` as a CloudFormation template in YAML or JSON (intrinsics in their long form,
/// `{"Fn::Sub": ...}`, as `deploy/ecscale.cfn.yaml` writes them).
pub fn read_template(path: &Path) -> Result<Stack, String> {
    let file = path.display().to_string();
    let text = crate::read::read_bounded(path, MAX_TEMPLATE_BYTES).map_err(|e| format!("{file}: {e}"))?;
    let docs = parse_documents(&text).map_err(|e| {
        // The hint only where it helps: a tag is what a short-form intrinsic reads as.
        let hint = if e.message.contains("tags") {
            " (intrinsics in short form, `!Ref`, are not read: write `{Ref: X}`)"
        } else {
            ""
        };
        format!("{file}:{}:{}: {}{hint}", e.span.line, e.span.col, e.message)
    })?;
    let root = docs.first().ok_or_else(|| format!("{file}: empty"))?;
    let role = get(root, "Resources")
        .and_then(|r| get(r, "TaskRole"))
        .ok_or_else(|| format!("{file}: no Resources.TaskRole (the worker's task role)"))?;
    let mut actions = BTreeSet::new();
    for policy in get(role, "Properties")
        .and_then(|p| get(p, "Policies"))
        .map_or(&[][..], seq)
    {
        let statements = get(policy, "PolicyDocument").and_then(|d| get(d, "Statement"));
        for s in statements.map_or(&[][..], seq) {
            if get(s, "Effect").and_then(Node::as_scalar) == Some("Allow") {
                actions.extend(strings(get(s, "Action")));
            }
        }
    }
    let parameter = |name: &str| {
        get(root, "Parameters")
            .and_then(|p| get(p, name))
            .and_then(|p| get(p, "Default"))
    };
    let cluster_names = parameter("ClusterNames").and_then(Node::as_scalar).map(|s| {
        s.split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    });
    let replicas = parameter("Replicas")
        .and_then(Node::as_scalar)
        .and_then(|s| s.parse().ok());
    Ok(Stack {
        file,
        actions,
        cluster_names,
        replicas,
    })
}

fn get<'a>(n: &'a Node, key: &str) -> Option<&'a Node> {
    match &n.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn seq(n: &Node) -> &[Node] {
    match &n.value {
        Value::Seq(items) => items,
        _ => &[],
    }
}

/// A scalar or a list of scalars, as strings.
fn strings(n: Option<&Node>) -> Vec<String> {
    match n.map(|n| &n.value) {
        Some(Value::Scalar { text, .. }) => vec![text.clone()],
        Some(Value::Seq(items)) => items
            .iter()
            .filter_map(|i| i.as_scalar().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// The actions a worker running `config` calls (the statements of `deploy/iam-policy.json` its
/// features use).
pub fn required(config: &Config) -> Vec<Need> {
    let mut out: Vec<Need> = Vec::new();
    let mut add = |why: &'static str, actions: &[&'static str]| {
        out.extend(actions.iter().map(|&action| Need { action, why }));
    };
    add(
        "reading the services",
        &[
            "ecs:ListServices",
            "ecs:DescribeServices",
            "ecs:ListTasks",
            "ecs:DescribeTasks",
            "ecs:DescribeClusters",
            "ecs:DescribeTaskDefinition",
            "ecs:DescribeCapacityProviders",
        ],
    );
    add("reading the metrics", &["cloudwatch:GetMetricData"]);
    add("setting desired counts", &["ecs:UpdateService"]);
    add(
        "seeing whether Application Auto Scaling also scales a service",
        &["application-autoscaling:DescribeScalableTargets"],
    );
    if config.worker.app_autoscaling == AppAutoScaling::TakeOver {
        add(
            "app_autoscaling: take_over",
            &["application-autoscaling:RegisterScalableTarget"],
        );
    }
    if !config.capacity.is_empty() {
        add(
            "capacity: (sizing Auto Scaling groups, draining instances)",
            &[
                "ecs:ListContainerInstances",
                "ecs:DescribeContainerInstances",
                "ecs:UpdateContainerInstancesState",
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeLaunchConfigurations",
                "autoscaling:SetDesiredCapacity",
                "autoscaling:TerminateInstanceInAutoScalingGroup",
            ],
        );
    }
    if config
        .capacity
        .iter()
        .any(|c| c.capacity_provider == ManagedScaling::TakeOver)
    {
        add("capacity_provider: take_over", &["ecs:UpdateCapacityProvider"]);
    }
    if !config.groups.is_empty() {
        add(
            "groups: (placing tasks)",
            &[
                "ecs:StartTask",
                "ecs:StopTask",
                "ecs:ListContainerInstances",
                "ecs:DescribeContainerInstances",
            ],
        );
    }
    if config.collect.events.is_some() {
        add(
            "collect.events (the queue of ECS's events)",
            &["sqs:ReceiveMessage", "sqs:DeleteMessage"],
        );
    }
    if config.clusters.iter().any(|c| c.role_arn.is_some()) {
        add(
            "clusters[].role_arn (clusters in other accounts)",
            &["sts:AssumeRole"],
        );
    }
    let dynamo =
        matches!(config.worker.state, StateBackend::DynamoDb { .. }) || config.worker.leader.is_some();
    if dynamo {
        add(
            "the state or the lease in DynamoDB",
            &["dynamodb:Scan", "dynamodb:PutItem", "dynamodb:UpdateItem"],
        );
    }
    out
}

/// Whether `granted` (an IAM action pattern: `ecs:UpdateService`, `ecs:*`, `ecs:Describe*`, `*`)
/// covers `action`, case-insensitively as IAM compares them.
fn covers(granted: &str, action: &str) -> bool {
    let (g, a) = (granted.to_ascii_lowercase(), action.to_ascii_lowercase());
    match g.strip_suffix('*') {
        Some(prefix) => a.starts_with(prefix),
        None => g == a,
    }
}

/// The problems of running `config` (and its policies) in `stack` with `clusters` as its
/// `ClusterNames`; none when they fit.
pub fn check(stack: &Stack, clusters: &[String], config: &Config, policies: &[TargetPolicy]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut missing: Vec<Need> = required(config)
        .into_iter()
        .filter(|n| !stack.actions.iter().any(|g| covers(g, n.action)))
        .collect();
    missing.dedup_by_key(|n| n.action);
    for n in missing {
        problems.push(format!(
            "{}: the task role does not allow {} ({} needs it)",
            stack.file, n.action, n.why
        ));
    }
    let mut named: BTreeSet<&str> = clusters.iter().map(String::as_str).collect();
    // Clusters in other accounts are granted by their own role there, not by this stack.
    named.extend(
        config
            .clusters
            .iter()
            .filter(|c| c.role_arn.is_some())
            .map(|c| c.name.as_str()),
    );
    let mut used: Vec<(String, String)> = config
        .clusters
        .iter()
        .map(|c| (c.name.clone(), format!("{}: clusters", config.file.display())))
        .chain(
            config
                .capacity
                .iter()
                .map(|c| (c.cluster.clone(), format!("{}: capacity", config.file.display()))),
        )
        .collect();
    for p in policies {
        if let TargetKey::Service { cluster, .. } = &p.target {
            used.push((cluster.to_string(), format!("{} ({})", p.location(), p.target)));
        }
    }
    let mut said = BTreeSet::new();
    for (cluster, whose) in used {
        if !named.contains(cluster.as_str()) && said.insert((cluster.clone(), whose.clone())) {
            problems.push(format!(
                "{whose} names cluster {cluster}, which the stack's ClusterNames ({}) does not grant",
                clusters.join(",")
            ));
        }
    }
    if stack.replicas.unwrap_or(1) > 1 && config.worker.leader.is_none() {
        problems.push(format!(
            "{}: the stack runs {} replicas but the config has no worker.leader: each would act on every target; give worker.leader.dynamodb_table (the stack's Table output)",
            config.file.display(),
            stack.replicas.unwrap_or(1)
        ));
    }
    if let StateBackend::File(path) = &config.worker.state {
        if stack.replicas.unwrap_or(1) > 1 {
            problems.push(format!(
                "{}: worker.state is a file ({}) in a task's disk: a new leader would start without the cooldowns; give worker.state.dynamodb_table",
                config.file.display(),
                path.display()
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every feature but task groups on, the config needs exactly the least-privilege
    /// policy's actions but StartTask and StopTask (the groups') and SSM's GetParameter (`run
    /// --from-ssm`'s, which no config names), and never one it lacks.
    #[test]
    fn every_feature_needs_exactly_the_least_privilege_policys_actions() {
        let text = "schedule: {interval: 30s}\ncollect: {events: {queue_url: 'https://sqs.eu-west-1.amazonaws.com/1/x-ecs-events'}}\nclusters: [{name: a, services: [b]}, {name: x, role_arn: 'arn:aws:iam::222222222222:role/ecscale-cluster-access', services: [y]}]\ncapacity: [{auto_scaling_group: g, cluster: a, capacity_provider: take_over}]\nworker:\n  app_autoscaling: take_over\n  state: {dynamodb_table: t}\n  leader: {dynamodb_table: t}\n";
        let config = crate::config::load_str(text, "c.yaml", Path::new("/"), &Default::default()).unwrap();
        let needed: BTreeSet<&str> = required(&config).iter().map(|n| n.action).collect();
        let policy: serde_json::Value =
            serde_json::from_str(include_str!("../deploy/iam-policy.json")).unwrap();
        let mut granted = BTreeSet::new();
        for s in policy["Statement"].as_array().unwrap() {
            match &s["Action"] {
                serde_json::Value::String(a) => {
                    granted.insert(a.clone());
                }
                v => granted.extend(
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_string()),
                ),
            }
        }
        let granted: BTreeSet<&str> = granted.iter().map(String::as_str).collect();
        let not_needed: BTreeSet<&str> = granted.difference(&needed).copied().collect();
        assert_eq!(
            not_needed,
            BTreeSet::from(["ecs:StartTask", "ecs:StopTask", "ssm:GetParameter"])
        );
        assert!(needed.is_subset(&granted), "{needed:?}");
        // Without capacity, leases or take-overs: the reads, the metrics and UpdateService.
        let bare = crate::config::load_str(
            "schedule: {interval: 30s}\nclusters: [{name: a, services: [b]}]\n",
            "c.yaml",
            Path::new("/"),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(required(&bare).len(), 10);
    }

    #[test]
    fn an_action_pattern_covers_what_iam_would() {
        assert!(covers("ecs:UpdateService", "ecs:updateservice"));
        assert!(covers("ecs:*", "ecs:UpdateService"));
        assert!(covers("ecs:Describe*", "ecs:DescribeServices"));
        assert!(covers("*", "dynamodb:Scan"));
        assert!(!covers("ecs:Describe*", "ecs:UpdateService"));
        assert!(!covers("ecs:UpdateServices", "ecs:UpdateService"));
    }
}
