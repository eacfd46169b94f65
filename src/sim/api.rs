//! The simulated cluster behind the traits the worker uses of AWS. Each method is one API call:
//! it is counted in [`Sim::meter`] like the SDK clients count theirs, answers from the cluster
//! as it stands, and fails the way AWS would (unknown cluster, service or group; a desired
//! capacity outside the group's bounds).

// ApiError is the traits' error type: these helpers return it as the traits do.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use async_trait::async_trait;

use super::cluster::{Cluster, InstanceStatus, Task, TaskStatus};
use super::Sim;
use crate::api::{
    ApiError, AppAutoScalingApi, AutoScalingApi, CloudWatchApi, Described, EcsApi, EcsWriteApi, ErrorKind,
    GroupInfo, GroupInstance, MetricDataPage, MetricDataRequest, Page, ScalableTarget, TaskInfo,
};
use crate::model::{
    ContainerInstance, Deployment, LoadBalancerRef, Resources, ServiceKey, ServiceState, TaskDefinitionInfo,
};

/// Where the simulator says calls went, in error messages.
pub const ENDPOINT: &str = "simulator";

impl Sim {
    fn op(&self, operation: &str) {
        self.meter.call(operation);
        self.meter.attempt(operation, false);
    }

    fn not_found(&self, operation: &str, resource: String, code: &str, message: String) -> ApiError {
        ApiError {
            operation: operation.into(),
            resource,
            endpoint: ENDPOINT.into(),
            kind: ErrorKind::NotFound,
            code: Some(code.into()),
            message,
        }
    }

    fn invalid(&self, operation: &str, resource: String, message: String) -> ApiError {
        ApiError {
            operation: operation.into(),
            resource,
            endpoint: ENDPOINT.into(),
            kind: ErrorKind::Other,
            code: Some("InvalidParameterException".into()),
            message,
        }
    }

    fn check_cluster(&self, operation: &str, cluster: &str) -> Result<(), ApiError> {
        if cluster == self.spec.cluster || cluster == self.spec.cluster_arn() {
            Ok(())
        } else {
            Err(self.not_found(
                operation,
                format!("cluster {cluster}"),
                "ClusterNotFoundException",
                format!("Cluster not found: the simulator runs `{}`", self.spec.cluster),
            ))
        }
    }

    fn check_group(&self, operation: &str, name: &str) -> Result<(), ApiError> {
        if name == self.spec.auto_scaling_group {
            return Ok(());
        }
        Err(self.not_found(
            operation,
            format!("Auto Scaling group {name}"),
            "ValidationError",
            format!(
                "AutoScalingGroup name not found: the simulator runs `{}`",
                self.spec.auto_scaling_group
            ),
        ))
    }

    fn service_state(&self) -> ServiceState {
        let g = self.lock();
        let c = &g.cluster;
        let spec = &self.spec;
        let running = c.count(TaskStatus::Running);
        let pending = c.count(TaskStatus::Pending) + c.count(TaskStatus::Provisioning);
        let mut s = ServiceState::steady(&spec.cluster, &spec.service, c.desired);
        s.arn = spec.service_arn();
        s.running = running;
        s.pending = pending;
        s.task_definition = spec.task_definition_arn();
        s.created_at = Some(c.service_created);
        s.load_balancers = vec![LoadBalancerRef {
            target_group_arn: Some(spec.target_group_arn()),
            container_name: Some(spec.service.clone()),
            container_port: Some(8080),
        }];
        s.deployments = vec![Deployment {
            id: "ecs-svc/0000000000000000001".into(),
            status: "PRIMARY".into(),
            task_definition: spec.task_definition_arn(),
            desired: c.desired,
            running,
            pending,
            failed_tasks: 0,
            rollout_state: Some("COMPLETED".into()),
            rollout_state_reason: None,
            created_at: Some(c.service_created),
            updated_at: Some(c.last_desired_change),
        }];
        s
    }

    /// What DescribeTasks says of a task (of the service or of a group).
    fn task_info(c: &Cluster, t: &Task) -> TaskInfo {
        let (group, td) = match &t.group {
            Some((g, _)) => {
                let family = &c.spec.groups[*g].family;
                (format!("family:{family}"), c.spec.family_arn(family))
            }
            None => (
                format!("service:{}", c.spec.service),
                c.spec.task_definition_arn(),
            ),
        };
        TaskInfo {
            arn: t.arn.clone(),
            group: Some(group),
            last_status: t.status.as_str().into(),
            task_definition: td,
            cpu: Some(t.size.cpu),
            memory_mib: Some(t.size.memory_mib),
            container_instance: t.instance.map(|i| c.instances[i].arn.clone()),
            created_at: Some(t.created_at),
        }
    }

    /// The infos of the live tasks (service and groups) that `keep` selects.
    fn tasks_where(&self, keep: impl Fn(&Cluster, &Task) -> bool) -> Vec<TaskInfo> {
        let g = self.lock();
        let c = &g.cluster;
        c.tasks
            .iter()
            .chain(&c.standalone)
            .filter(|t| t.status != TaskStatus::Stopped && keep(c, t))
            .map(|t| Self::task_info(c, t))
            .collect()
    }
}

#[async_trait]
impl EcsApi for Sim {
    async fn list_services(&self, cluster: &str, _next: Option<String>) -> Result<Page<String>, ApiError> {
        self.op("ECS.ListServices");
        self.check_cluster("ECS.ListServices", cluster)?;
        Ok(Page {
            items: vec![self.spec.service_arn()],
            next_token: None,
        })
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Described<ServiceState>, ApiError> {
        self.op("ECS.DescribeServices");
        self.check_cluster("ECS.DescribeServices", cluster)?;
        let mut out = Described::default();
        for s in services {
            if *s == self.spec.service || *s == self.spec.service_arn() {
                out.items.push(self.service_state());
            } else {
                out.failures.push((s.clone(), "MISSING".into()));
            }
        }
        Ok(out)
    }

    async fn describe_task_definition(&self, task_definition: &str) -> Result<TaskDefinitionInfo, ApiError> {
        self.op("ECS.DescribeTaskDefinition");
        let arn = self.spec.task_definition_arn();
        if task_definition == arn || task_definition == format!("{}:1", self.spec.service) {
            return Ok(TaskDefinitionInfo {
                arn,
                family: self.spec.service.clone(),
                revision: 1,
                reservation: self.spec.task,
            });
        }
        match self.spec.group_of(task_definition) {
            Some(g) => {
                let g = &self.spec.groups[g];
                Ok(TaskDefinitionInfo {
                    arn: self.spec.family_arn(&g.family),
                    family: g.family.clone(),
                    revision: 1,
                    reservation: g.task,
                })
            }
            None => Err(self.not_found(
                "ECS.DescribeTaskDefinition",
                format!("task definition {task_definition}"),
                "ClientException",
                "Unable to describe task definition.".into(),
            )),
        }
    }

    async fn list_container_instances(
        &self,
        cluster: &str,
        _next: Option<String>,
    ) -> Result<Page<String>, ApiError> {
        self.op("ECS.ListContainerInstances");
        self.check_cluster("ECS.ListContainerInstances", cluster)?;
        let g = self.lock();
        let items = g
            .cluster
            .instances
            .iter()
            .filter(|i| matches!(i.status, InstanceStatus::Active | InstanceStatus::Draining))
            .map(|i| i.arn.clone())
            .collect();
        Ok(Page {
            items,
            next_token: None,
        })
    }

    async fn describe_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Described<ContainerInstance>, ApiError> {
        self.op("ECS.DescribeContainerInstances");
        self.check_cluster("ECS.DescribeContainerInstances", cluster)?;
        let g = self.lock();
        let c = &g.cluster;
        let registered = self.spec.instance_resources();
        let mut out = Described::default();
        for arn in arns {
            let found = c.instances.iter().position(|i| {
                i.arn == *arn && matches!(i.status, InstanceStatus::Active | InstanceStatus::Draining)
            });
            let Some(k) = found else {
                out.failures.push((arn.clone(), "MISSING".into()));
                continue;
            };
            let i = &c.instances[k];
            let (used, running, pending) = c.used(k);
            out.items.push(ContainerInstance {
                cluster: self.spec.cluster.clone(),
                arn: i.arn.clone(),
                ec2_instance_id: Some(i.id.clone()),
                instance_type: Some(self.spec.instance_type.clone()),
                status: if i.status == InstanceStatus::Draining {
                    "DRAINING"
                } else {
                    "ACTIVE"
                }
                .into(),
                agent_connected: true,
                registered,
                remaining: Resources {
                    cpu: registered.cpu.saturating_sub(used.cpu),
                    memory_mib: registered.memory_mib.saturating_sub(used.memory_mib),
                },
                running_tasks: running,
                pending_tasks: pending,
                capacity_provider: None,
                registered_at: i.registered_at,
                attributes: [
                    ("ecs.instance-type".to_string(), self.spec.instance_type.clone()),
                    ("ecs.availability-zone".to_string(), i.zone.clone()),
                ]
                .into(),
            });
        }
        Ok(out)
    }

    async fn list_tasks(&self, cluster: &str, _next: Option<String>) -> Result<Page<String>, ApiError> {
        self.op("ECS.ListTasks");
        self.check_cluster("ECS.ListTasks", cluster)?;
        Ok(Page {
            items: self.tasks_where(|_, _| true).into_iter().map(|t| t.arn).collect(),
            next_token: None,
        })
    }

    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Described<TaskInfo>, ApiError> {
        self.op("ECS.DescribeTasks");
        self.check_cluster("ECS.DescribeTasks", cluster)?;
        let mut out = Described::default();
        let mut found = self.tasks_where(|_, t| arns.contains(&t.arn));
        for arn in arns {
            match found.iter().position(|t| t.arn == *arn) {
                Some(k) => out.items.push(found.swap_remove(k)),
                None => out.failures.push((arn.clone(), "MISSING".into())),
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl CloudWatchApi for Sim {
    async fn get_metric_data(
        &self,
        request: &MetricDataRequest,
        _next: Option<String>,
    ) -> Result<MetricDataPage, ApiError> {
        self.op("CloudWatch.GetMetricData");
        self.meter.metrics_requested(request.queries.len() as u64);
        let now = self.now();
        let results = self.lock().store.query(request, now);
        Ok(MetricDataPage {
            results,
            next_token: None,
            messages: Vec::new(),
        })
    }
}

#[async_trait]
impl EcsWriteApi for Sim {
    async fn update_service(&self, cluster: &str, service: &str, desired: u32) -> Result<(), ApiError> {
        self.op("ECS.UpdateService");
        self.check_cluster("ECS.UpdateService", cluster)?;
        if service != self.spec.service && service != self.spec.service_arn() {
            return Err(self.not_found(
                "ECS.UpdateService",
                format!("service {cluster}/{service}"),
                "ServiceNotFoundException",
                "Service not found.".into(),
            ));
        }
        self.lock().cluster.set_desired(desired);
        Ok(())
    }

    async fn set_instances_state(&self, cluster: &str, arns: &[String], state: &str) -> Result<(), ApiError> {
        self.op("ECS.UpdateContainerInstancesState");
        self.check_cluster("ECS.UpdateContainerInstancesState", cluster)?;
        let to = match state {
            "DRAINING" => InstanceStatus::Draining,
            _ => InstanceStatus::Active,
        };
        let mut g = self.lock();
        let now = g.cluster.now;
        let mut changed = Vec::new();
        for i in g.cluster.instances.iter_mut() {
            if arns.contains(&i.arn)
                && matches!(i.status, InstanceStatus::Active | InstanceStatus::Draining)
                && i.status != to
            {
                i.status = to;
                changed.push(i.id.clone());
            }
        }
        for id in changed {
            g.cluster.events.push(super::Event {
                at: now,
                kind: "instance_state",
                text: format!("instance {id} set {state}"),
            });
        }
        Ok(())
    }

    async fn daemon_services(&self, cluster: &str) -> Result<Vec<String>, ApiError> {
        self.op("ECS.ListServices");
        self.check_cluster("ECS.ListServices", cluster)?;
        Ok(Vec::new())
    }

    async fn instance_tasks(
        &self,
        cluster: &str,
        container_instance: &str,
    ) -> Result<Vec<TaskInfo>, ApiError> {
        self.op("ECS.ListTasks");
        self.check_cluster("ECS.ListTasks", cluster)?;
        let on = self.tasks_where(|c, t| {
            t.instance
                .is_some_and(|i| c.instances[i].arn == container_instance)
        });
        if !on.is_empty() {
            self.op("ECS.DescribeTasks");
        }
        Ok(on)
    }

    /// The simulated cluster has no capacity providers (its group is sized by ecscale).
    async fn capacity_providers(&self, cluster: &str) -> Result<Vec<crate::api::CapacityProvider>, ApiError> {
        self.op("ECS.DescribeClusters");
        self.check_cluster("ECS.DescribeClusters", cluster)?;
        Ok(Vec::new())
    }

    /// ListTasks with `startedBy`, then DescribeTasks (when any are listed).
    async fn started_by(&self, cluster: &str, started_by: &str) -> Result<Vec<TaskInfo>, ApiError> {
        self.op("ECS.ListTasks");
        self.check_cluster("ECS.ListTasks", cluster)?;
        let tasks = self.tasks_where(|_, t| t.group.as_ref().is_some_and(|(_, by)| by == started_by));
        if !tasks.is_empty() {
            self.op("ECS.DescribeTasks");
        }
        Ok(tasks)
    }

    /// StartTask: one task of the group whose task definition is `td` on each instance of `on`
    /// (at most 10, as ECS takes); the started ARNs, and a failure (`ARN: REASON`) for each
    /// instance that could not take one.
    async fn start_tasks(
        &self,
        cluster: &str,
        td: &str,
        on: &[String],
        by: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        let op = "ECS.StartTask";
        self.op(op);
        self.check_cluster(op, cluster)?;
        let Some(g) = self.spec.group_of(td) else {
            return Err(self.not_found(
                op,
                format!("task definition {td}"),
                "ClientException",
                "TaskDefinition not found.".into(),
            ));
        };
        if on.is_empty() || on.len() > 10 {
            return Err(self.invalid(
                op,
                format!("cluster {cluster}, task definition {td}"),
                format!("containerInstances must name 1 to 10 instances, not {}", on.len()),
            ));
        }
        let mut guard = self.lock();
        let (mut started, mut failed) = (Vec::new(), Vec::new());
        for arn in on {
            match guard.cluster.start_task(g, arn, by) {
                Ok(task) => started.push(task),
                Err(reason) => failed.push(format!("{arn}: {reason}")),
            }
        }
        Ok((started, failed))
    }

    async fn stop_task(&self, cluster: &str, task: &str, reason: &str) -> Result<(), ApiError> {
        let op = "ECS.StopTask";
        self.op(op);
        self.check_cluster(op, cluster)?;
        if self.lock().cluster.stop_by_arn(task, reason) {
            return Ok(());
        }
        Err(self.invalid(
            op,
            format!("task {task}"),
            "The referenced task was not found.".into(),
        ))
    }

    async fn disable_managed_scaling(&self, provider: &str) -> Result<(), ApiError> {
        self.op("ECS.UpdateCapacityProvider");
        Err(self.not_found(
            "ECS.UpdateCapacityProvider",
            format!("capacity provider {provider}"),
            "ClientException",
            "The specified capacity provider does not exist.".into(),
        ))
    }
}

#[async_trait]
impl AutoScalingApi for Sim {
    async fn describe_group(&self, name: &str) -> Result<GroupInfo, ApiError> {
        self.op("AutoScaling.DescribeAutoScalingGroups");
        self.check_group("AutoScaling.DescribeAutoScalingGroups", name)?;
        let g = self.lock();
        let c = &g.cluster;
        Ok(GroupInfo {
            name: name.into(),
            min: self.spec.group_min,
            max: self.spec.group_max,
            desired: c.group_desired,
            instances: c
                .group_instances()
                .map(|(_, i)| GroupInstance {
                    id: i.id.clone(),
                    lifecycle_state: if i.status == InstanceStatus::Booting {
                        "Pending"
                    } else {
                        "InService"
                    }
                    .into(),
                    instance_type: Some(self.spec.instance_type.clone()),
                    protected_from_scale_in: false,
                })
                .collect(),
            instance_type: Some(self.spec.instance_type.clone()),
        })
    }

    async fn set_desired_capacity(&self, name: &str, desired: u32) -> Result<(), ApiError> {
        let op = "AutoScaling.SetDesiredCapacity";
        self.op(op);
        self.check_group(op, name)?;
        if desired < self.spec.group_min || desired > self.spec.group_max {
            return Err(ApiError {
                operation: op.into(),
                resource: format!("Auto Scaling group {name}"),
                endpoint: ENDPOINT.into(),
                kind: ErrorKind::Other,
                code: Some("ValidationError".into()),
                message: format!(
                    "New SetDesiredCapacity value {desired} is outside the bounds {}..={}",
                    self.spec.group_min, self.spec.group_max
                ),
            });
        }
        self.lock().cluster.set_group_desired(desired);
        Ok(())
    }

    async fn terminate_instance(&self, _group: &str, instance_id: &str) -> Result<(), ApiError> {
        let op = "AutoScaling.TerminateInstanceInAutoScalingGroup";
        self.op(op);
        let mut g = self.lock();
        let k = g
            .cluster
            .group_instances()
            .find(|(_, i)| i.id == instance_id)
            .map(|(k, _)| k);
        match k {
            Some(k) => {
                g.cluster.terminate_instance(k);
                Ok(())
            }
            None => Err(self.not_found(
                op,
                format!("instance {instance_id}"),
                "ValidationError",
                "Instance Id not found".into(),
            )),
        }
    }
}

#[async_trait]
impl AppAutoScalingApi for Sim {
    async fn scalable_targets(
        &self,
        _services: &[ServiceKey],
    ) -> Result<HashMap<ServiceKey, ScalableTarget>, ApiError> {
        self.op("ApplicationAutoScaling.DescribeScalableTargets");
        Ok(HashMap::new())
    }

    async fn suspend(&self, _cluster: &str, _service: &str) -> Result<(), ApiError> {
        self.op("ApplicationAutoScaling.RegisterScalableTarget");
        Ok(())
    }
}
