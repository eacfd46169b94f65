//! [`EcsApi`] over `aws-sdk-ecs`: each method is one API call, its answer mapped to
//! `crate::model` nouns.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ecs::types as ecs;

use super::{api_error, from_smithy, CallSettings};
use crate::api::{ApiError, Described, EcsApi, Page, TaskInfo};
use crate::model::{
    arn_name, ContainerInstance, Deployment, LoadBalancerRef, Resources, ServiceState, TaskDefinitionInfo,
};

/// The ECS client of a worker.
#[derive(Clone, Debug)]
pub struct AwsEcs {
    client: aws_sdk_ecs::Client,
    endpoint: String,
    calls: CallSettings,
}

impl AwsEcs {
    /// DescribeTasks of any number of tasks, in batches.
    async fn describe_all(&self, cluster: &str, arns: &[String]) -> Result<Vec<TaskInfo>, ApiError> {
        let mut out = Vec::new();
        for chunk in arns.chunks(crate::api::DESCRIBE_BATCH) {
            out.extend(
                crate::api::EcsApi::describe_tasks(self, cluster, chunk)
                    .await?
                    .items,
            );
        }
        Ok(out)
    }

    pub(super) fn new(client: aws_sdk_ecs::Client, endpoint: String, calls: CallSettings) -> Self {
        AwsEcs {
            client,
            endpoint,
            calls,
        }
    }

    /// Where calls go, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The SDK client, for the calls the traits do not cover yet.
    pub fn client(&self) -> &aws_sdk_ecs::Client {
        &self.client
    }

    fn err<E>(
        &self,
        e: aws_sdk_ecs::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
        operation: &str,
        resource: String,
    ) -> ApiError
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        api_error(e, operation, resource, &self.endpoint, &self.calls)
    }
}

/// ECS counts are `i32` on the wire and never negative in practice.
fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn failures(f: &[ecs::Failure]) -> Vec<(String, String)> {
    f.iter()
        .map(|f| {
            (
                f.arn().unwrap_or_default().to_string(),
                [f.reason(), f.detail()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
            )
        })
        .collect()
}

fn deployment(d: &ecs::Deployment) -> Deployment {
    Deployment {
        id: d.id().unwrap_or_default().to_string(),
        status: d.status().unwrap_or_default().to_string(),
        task_definition: d.task_definition().unwrap_or_default().to_string(),
        desired: count(d.desired_count()),
        running: count(d.running_count()),
        pending: count(d.pending_count()),
        failed_tasks: count(d.failed_tasks()),
        rollout_state: d.rollout_state().map(|r| r.as_str().to_string()),
        rollout_state_reason: d.rollout_state_reason().map(str::to_string),
        created_at: d.created_at().and_then(from_smithy),
        updated_at: d.updated_at().and_then(from_smithy),
    }
}

fn service_state(cluster: &str, s: &ecs::Service) -> ServiceState {
    let deployments: Vec<Deployment> = s.deployments().iter().map(deployment).collect();
    let arn = s.service_arn().unwrap_or_default().to_string();
    ServiceState {
        cluster: cluster.to_string(),
        name: s
            .service_name()
            .map(str::to_string)
            .unwrap_or_else(|| arn_name(&arn).to_string()),
        arn,
        status: s.status().unwrap_or_default().to_string(),
        desired: count(s.desired_count()),
        running: count(s.running_count()),
        pending: count(s.pending_count()),
        launch_type: s.launch_type().map(|l| l.as_str().to_string()),
        capacity_providers: s
            .capacity_provider_strategy()
            .iter()
            .map(|c| c.capacity_provider().to_string())
            .collect(),
        task_definition: s.task_definition().unwrap_or_default().to_string(),
        task_reservation: None,
        rollout: ServiceState::derive_rollout(&deployments),
        deployments,
        load_balancers: s
            .load_balancers()
            .iter()
            .map(|lb| LoadBalancerRef {
                target_group_arn: lb.target_group_arn().map(str::to_string),
                container_name: lb.container_name().map(str::to_string),
                container_port: lb.container_port(),
            })
            .collect(),
        tags: s
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect::<BTreeMap<_, _>>(),
        created_at: s.created_at().and_then(from_smithy),
    }
}

/// Task-definition CPU (`"256"`, `"1 vCPU"`) in ECS units.
pub fn parse_cpu(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("vCPU").or_else(|| s.strip_suffix("vcpu")) {
        return v.trim().parse::<f64>().ok().map(|v| (v * 1024.0).round() as u32);
    }
    s.parse().ok()
}

/// Task-definition memory (`"512"`, `"2 GB"`) in MiB.
pub fn parse_memory(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("GB").or_else(|| s.strip_suffix("gb")) {
        return v.trim().parse::<f64>().ok().map(|v| (v * 1024.0).round() as u32);
    }
    s.strip_suffix("MiB").unwrap_or(s).trim().parse().ok()
}

fn task_definition(td: &ecs::TaskDefinition) -> TaskDefinitionInfo {
    let containers = td.container_definitions();
    let cpu = td
        .cpu()
        .and_then(parse_cpu)
        .unwrap_or_else(|| containers.iter().map(|c| count(c.cpu())).sum());
    let memory_mib = td.memory().and_then(parse_memory).unwrap_or_else(|| {
        containers
            .iter()
            .map(|c| count(c.memory_reservation().or(c.memory()).unwrap_or(0)))
            .sum()
    });
    TaskDefinitionInfo {
        arn: td.task_definition_arn().unwrap_or_default().to_string(),
        family: td.family().unwrap_or_default().to_string(),
        revision: td.revision(),
        reservation: Resources { cpu, memory_mib },
    }
}

fn resources(list: &[ecs::Resource]) -> Resources {
    let get = |name: &str| {
        list.iter()
            .find(|r| r.name() == Some(name))
            .map_or(0, |r| count(r.integer_value()))
    };
    Resources {
        cpu: get("CPU"),
        memory_mib: get("MEMORY"),
    }
}

fn container_instance(cluster: &str, ci: &ecs::ContainerInstance) -> ContainerInstance {
    ContainerInstance {
        cluster: cluster.to_string(),
        arn: ci.container_instance_arn().unwrap_or_default().to_string(),
        ec2_instance_id: ci.ec2_instance_id().map(str::to_string),
        instance_type: ci
            .attributes()
            .iter()
            .find(|a| a.name() == "ecs.instance-type")
            .and_then(|a| a.value())
            .map(str::to_string),
        status: ci.status().unwrap_or_default().to_string(),
        agent_connected: ci.agent_connected(),
        registered: resources(ci.registered_resources()),
        remaining: resources(ci.remaining_resources()),
        running_tasks: count(ci.running_tasks_count()),
        pending_tasks: count(ci.pending_tasks_count()),
        capacity_provider: ci.capacity_provider_name().map(str::to_string),
        registered_at: ci.registered_at().and_then(from_smithy),
        attributes: ci
            .attributes()
            .iter()
            .filter_map(|a| Some((a.name().to_string(), a.value()?.to_string())))
            .collect(),
    }
}

fn task(t: &ecs::Task) -> TaskInfo {
    TaskInfo {
        arn: t.task_arn().unwrap_or_default().to_string(),
        group: t.group().map(str::to_string),
        last_status: t.last_status().unwrap_or_default().to_string(),
        task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
        cpu: t.cpu().and_then(parse_cpu),
        memory_mib: t.memory().and_then(parse_memory),
        container_instance: t.container_instance_arn().map(str::to_string),
        created_at: t.created_at().and_then(from_smithy),
    }
}

#[async_trait]
impl EcsApi for AwsEcs {
    async fn list_services(
        &self,
        cluster: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, ApiError> {
        let out = self
            .client
            .list_services()
            .cluster(cluster)
            .max_results(100)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| self.err(e, "ECS.ListServices", format!("cluster {cluster}")))?;
        Ok(Page {
            items: out.service_arns().to_vec(),
            next_token: out.next_token().map(str::to_string),
        })
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Described<ServiceState>, ApiError> {
        let out = self
            .client
            .describe_services()
            .cluster(cluster)
            .set_services(Some(services.to_vec()))
            .include(ecs::ServiceField::Tags)
            .send()
            .await
            .map_err(|e| {
                let names: Vec<&str> = services.iter().map(|s| arn_name(s)).collect();
                self.err(
                    e,
                    "ECS.DescribeServices",
                    format!("cluster {cluster}, services {}", names.join(", ")),
                )
            })?;
        Ok(Described {
            items: out.services().iter().map(|s| service_state(cluster, s)).collect(),
            failures: failures(out.failures()),
        })
    }

    async fn describe_task_definition(&self, arn: &str) -> Result<TaskDefinitionInfo, ApiError> {
        let out = self
            .client
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| self.err(e, "ECS.DescribeTaskDefinition", format!("task definition {arn}")))?;
        match out.task_definition() {
            Some(td) => Ok(task_definition(td)),
            None => Err(ApiError {
                operation: "ECS.DescribeTaskDefinition".into(),
                resource: format!("task definition {arn}"),
                endpoint: self.endpoint.clone(),
                kind: crate::api::ErrorKind::NotFound,
                code: None,
                message: "the answer holds no task definition".into(),
            }),
        }
    }

    async fn list_container_instances(
        &self,
        cluster: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, ApiError> {
        let out = self
            .client
            .list_container_instances()
            .cluster(cluster)
            .max_results(100)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| self.err(e, "ECS.ListContainerInstances", format!("cluster {cluster}")))?;
        Ok(Page {
            items: out.container_instance_arns().to_vec(),
            next_token: out.next_token().map(str::to_string),
        })
    }

    async fn describe_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Described<ContainerInstance>, ApiError> {
        let out = self
            .client
            .describe_container_instances()
            .cluster(cluster)
            .set_container_instances(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| {
                self.err(
                    e,
                    "ECS.DescribeContainerInstances",
                    format!("cluster {cluster}, {} instances", arns.len()),
                )
            })?;
        Ok(Described {
            items: out
                .container_instances()
                .iter()
                .map(|ci| container_instance(cluster, ci))
                .collect(),
            failures: failures(out.failures()),
        })
    }

    async fn list_tasks(&self, cluster: &str, next_token: Option<String>) -> Result<Page<String>, ApiError> {
        let out = self
            .client
            .list_tasks()
            .cluster(cluster)
            .desired_status(ecs::DesiredStatus::Running)
            .max_results(100)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| self.err(e, "ECS.ListTasks", format!("cluster {cluster}")))?;
        Ok(Page {
            items: out.task_arns().to_vec(),
            next_token: out.next_token().map(str::to_string),
        })
    }

    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Described<TaskInfo>, ApiError> {
        let out = self
            .client
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| {
                self.err(
                    e,
                    "ECS.DescribeTasks",
                    format!("cluster {cluster}, {} tasks", arns.len()),
                )
            })?;
        Ok(Described {
            items: out.tasks().iter().map(task).collect(),
            failures: failures(out.failures()),
        })
    }
}

#[async_trait]
impl crate::api::EcsWriteApi for AwsEcs {
    async fn update_service(&self, cluster: &str, service: &str, desired: u32) -> Result<(), ApiError> {
        self.client
            .update_service()
            .cluster(cluster)
            .service(service)
            .desired_count(i32::try_from(desired).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| {
                self.err(
                    e,
                    "ECS.UpdateService",
                    format!("service {cluster}/{service} to {desired}"),
                )
            })?;
        Ok(())
    }

    async fn set_instances_state(&self, cluster: &str, arns: &[String], state: &str) -> Result<(), ApiError> {
        self.client
            .update_container_instances_state()
            .cluster(cluster)
            .set_container_instances(Some(arns.to_vec()))
            .status(ecs::ContainerInstanceStatus::from(state))
            .send()
            .await
            .map_err(|e| {
                self.err(
                    e,
                    "ECS.UpdateContainerInstancesState",
                    format!("cluster {cluster}, {} instances to {state}", arns.len()),
                )
            })?;
        Ok(())
    }

    async fn daemon_services(&self, cluster: &str) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_services()
                .cluster(cluster)
                .scheduling_strategy(ecs::SchedulingStrategy::Daemon)
                .max_results(100)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    self.err(
                        e,
                        "ECS.ListServices",
                        format!("cluster {cluster}, daemon services"),
                    )
                })?;
            out.extend(page.service_arns().iter().map(|a| arn_name(a).to_string()));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn instance_tasks(
        &self,
        cluster: &str,
        container_instance: &str,
    ) -> Result<Vec<TaskInfo>, ApiError> {
        let listed = self
            .client
            .list_tasks()
            .cluster(cluster)
            .container_instance(container_instance)
            .desired_status(ecs::DesiredStatus::Running)
            .send()
            .await
            .map_err(|e| {
                self.err(
                    e,
                    "ECS.ListTasks",
                    format!("container instance {container_instance}"),
                )
            })?;
        let arns = listed.task_arns().to_vec();
        self.describe_all(cluster, &arns).await
    }

    async fn capacity_providers(&self, cluster: &str) -> Result<Vec<crate::api::CapacityProvider>, ApiError> {
        let described = self
            .client
            .describe_clusters()
            .clusters(cluster)
            .send()
            .await
            .map_err(|e| self.err(e, "ECS.DescribeClusters", format!("cluster {cluster}")))?;
        let names: Vec<String> = described
            .clusters()
            .iter()
            .flat_map(|c| c.capacity_providers().iter().cloned())
            .filter(|n| !n.starts_with("FARGATE"))
            .collect();
        let mut out = Vec::new();
        // DescribeCapacityProviders takes at most 100 names per call.
        for chunk in names.chunks(100) {
            let page = self
                .client
                .describe_capacity_providers()
                .set_capacity_providers(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| {
                    self.err(
                        e,
                        "ECS.DescribeCapacityProviders",
                        format!("cluster {cluster}, {} capacity providers", chunk.len()),
                    )
                })?;
            out.extend(page.capacity_providers().iter().filter_map(|p| {
                let asg = p.auto_scaling_group_provider()?;
                Some(crate::api::CapacityProvider {
                    name: p.name()?.to_string(),
                    auto_scaling_group_arn: asg.auto_scaling_group_arn().to_string(),
                    managed_scaling: asg
                        .managed_scaling()
                        .and_then(|m| m.status())
                        .is_some_and(|s| *s == ecs::ManagedScalingStatus::Enabled),
                })
            }));
        }
        Ok(out)
    }

    async fn started_by(&self, cluster: &str, started_by: &str) -> Result<Vec<TaskInfo>, ApiError> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_tasks()
                .cluster(cluster)
                .started_by(started_by)
                .desired_status(ecs::DesiredStatus::Running)
                .max_results(100)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    self.err(
                        e,
                        "ECS.ListTasks",
                        format!("cluster {cluster}, tasks started by {started_by}"),
                    )
                })?;
            arns.extend(page.task_arns().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        self.describe_all(cluster, &arns).await
    }

    async fn start_tasks(
        &self,
        cluster: &str,
        task_definition: &str,
        container_instances: &[String],
        started_by: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        let out = self
            .client
            .start_task()
            .cluster(cluster)
            .task_definition(task_definition)
            .set_container_instances(Some(container_instances.to_vec()))
            .started_by(started_by)
            .send()
            .await
            .map_err(|e| {
                self.err(
                    e,
                    "ECS.StartTask",
                    format!(
                        "{task_definition} on {} instances of {cluster}",
                        container_instances.len()
                    ),
                )
            })?;
        let started: Vec<String> = out
            .tasks()
            .iter()
            .filter_map(|t| t.task_arn().map(str::to_string))
            .collect();
        let failures: Vec<String> = out
            .failures()
            .iter()
            .map(|f| format!("{}: {}", f.arn().unwrap_or("?"), f.reason().unwrap_or("?")))
            .collect();
        Ok((started, failures))
    }

    async fn stop_task(&self, cluster: &str, task: &str, reason: &str) -> Result<(), ApiError> {
        self.client
            .stop_task()
            .cluster(cluster)
            .task(task)
            .reason(reason)
            .send()
            .await
            .map_err(|e| self.err(e, "ECS.StopTask", format!("task {task}")))?;
        Ok(())
    }

    async fn run_tasks(&self, r: &crate::api::RunTasks) -> Result<(Vec<String>, Vec<String>), ApiError> {
        let env = r
            .environment
            .iter()
            .map(|(k, v)| ecs::KeyValuePair::builder().name(k).value(v).build())
            .collect();
        let container = ecs::ContainerOverride::builder()
            .name(&r.container)
            .set_command(Some(r.command.clone()))
            .set_environment(Some(env))
            .build();
        let mut call = self
            .client
            .run_task()
            .cluster(&r.cluster)
            .task_definition(&r.task_definition)
            .count(r.count as i32)
            .started_by(&r.started_by)
            .overrides(
                ecs::TaskOverride::builder()
                    .container_overrides(container)
                    .build(),
            );
        if let Some(lt) = &r.launch_type {
            call = call.launch_type(ecs::LaunchType::from(lt.as_str()));
        }
        if !r.subnets.is_empty() {
            let vpc = ecs::AwsVpcConfiguration::builder()
                .set_subnets(Some(r.subnets.clone()))
                .set_security_groups((!r.security_groups.is_empty()).then(|| r.security_groups.clone()))
                .assign_public_ip(if r.assign_public_ip {
                    ecs::AssignPublicIp::Enabled
                } else {
                    ecs::AssignPublicIp::Disabled
                })
                .build()
                .map_err(|e| ApiError {
                    operation: "ECS.RunTask".into(),
                    resource: format!("network configuration in cluster {}", r.cluster),
                    endpoint: self.endpoint.clone(),
                    kind: crate::api::ErrorKind::Other,
                    code: None,
                    message: e.to_string(),
                })?;
            call = call.network_configuration(
                ecs::NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            );
        }
        let what = format!(
            "{} tasks of {} in cluster {}",
            r.count, r.task_definition, r.cluster
        );
        let out = call.send().await.map_err(|e| self.err(e, "ECS.RunTask", what))?;
        let started = out
            .tasks()
            .iter()
            .filter_map(|t| t.task_arn().map(str::to_string))
            .collect();
        let failures = out
            .failures()
            .iter()
            .map(|f| format!("{}: {}", f.arn().unwrap_or("?"), f.reason().unwrap_or("?")))
            .collect();
        Ok((started, failures))
    }

    async fn disable_managed_scaling(&self, provider: &str) -> Result<(), ApiError> {
        let managed = ecs::ManagedScaling::builder()
            .status(ecs::ManagedScalingStatus::Disabled)
            .build();
        let update = ecs::AutoScalingGroupProviderUpdate::builder()
            .managed_scaling(managed)
            .build();
        self.client
            .update_capacity_provider()
            .name(provider)
            .auto_scaling_group_provider(update)
            .send()
            .await
            .map_err(|e| {
                self.err(
                    e,
                    "ECS.UpdateCapacityProvider",
                    format!("capacity provider {provider}: managed scaling to DISABLED"),
                )
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_strings() {
        assert_eq!(parse_cpu("256"), Some(256));
        assert_eq!(parse_cpu("1 vCPU"), Some(1024));
        assert_eq!(parse_cpu(".5 vCPU"), Some(512));
        assert_eq!(parse_memory("512"), Some(512));
        assert_eq!(parse_memory("2 GB"), Some(2048));
        assert_eq!(parse_memory("lots"), None);
    }

    #[test]
    fn task_definition_reservation_falls_back_to_containers() {
        let td = ecs::TaskDefinition::builder()
            .task_definition_arn("arn:aws:ecs:us-east-1:1:task-definition/web:3")
            .family("web")
            .revision(3)
            .container_definitions(
                ecs::ContainerDefinition::builder()
                    .cpu(256)
                    .memory(1024)
                    .memory_reservation(512)
                    .build(),
            )
            .container_definitions(ecs::ContainerDefinition::builder().cpu(128).memory(256).build())
            .build();
        let info = task_definition(&td);
        assert_eq!(
            info.reservation,
            Resources {
                cpu: 384,
                memory_mib: 768
            }
        );
        assert_eq!((info.family.as_str(), info.revision), ("web", 3));

        let td = ecs::TaskDefinition::builder()
            .cpu("1 vCPU")
            .memory("2048")
            .container_definitions(ecs::ContainerDefinition::builder().cpu(10).memory(10).build())
            .build();
        assert_eq!(
            task_definition(&td).reservation,
            Resources {
                cpu: 1024,
                memory_mib: 2048
            }
        );
    }
}
