//! Recording fakes of the actuators' AWS traits, for unit tests.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::api::{
    ApiError, AppAutoScalingApi, AutoScalingApi, EcsWriteApi, ErrorKind, GroupInfo, GroupInstance,
    ScalableTarget, TaskInfo,
};
use crate::model::{ContainerInstance, Resources, ServiceState};

fn error(op: &str, kind: ErrorKind) -> ApiError {
    ApiError {
        operation: op.into(),
        resource: "test".into(),
        endpoint: "fake".into(),
        kind,
        code: None,
        message: format!("{kind:?}"),
    }
}

/// A service of tasks of 512 CPU units / 1024 MiB, all running.
pub fn service(cluster: &str, name: &str, desired: u32) -> ServiceState {
    ServiceState {
        task_reservation: Some(Resources {
            cpu: 512,
            memory_mib: 1024,
        }),
        ..ServiceState::steady(cluster, name, desired)
    }
}

/// A registered container instance of EC2 instance `id`.
pub fn instance(id: &str, registered: Resources, reserved: Resources, tasks: u32) -> ContainerInstance {
    ContainerInstance {
        cluster: "prod".into(),
        arn: format!("arn:aws:ecs:us-east-1:1:container-instance/prod/{id}"),
        ec2_instance_id: Some(id.into()),
        instance_type: Some("m5.large".into()),
        status: "ACTIVE".into(),
        agent_connected: true,
        registered,
        remaining: Resources {
            cpu: registered.cpu - reserved.cpu,
            memory_mib: registered.memory_mib - reserved.memory_mib,
        },
        running_tasks: tasks,
        pending_tasks: 0,
        capacity_provider: None,
        registered_at: None,
        attributes: Default::default(),
    }
}

#[derive(Default)]
pub struct FakeEcs {
    updates: Mutex<Vec<(String, String, u32)>>,
    fail: Mutex<HashMap<String, ErrorKind>>,
    /// (arns, state) per call.
    pub states: Mutex<Vec<(Vec<String>, String)>>,
    /// Tasks per container instance ARN.
    pub tasks: Mutex<HashMap<String, Vec<TaskInfo>>>,
    pub daemons: Mutex<Vec<String>>,
    /// The cluster's capacity providers, and those whose managed scaling was disabled.
    pub providers: Mutex<Vec<crate::api::CapacityProvider>>,
    pub disabled: Mutex<Vec<String>>,
    /// Task groups' tasks by startedBy, and the tasks stopped.
    pub group_tasks: Mutex<HashMap<String, Vec<TaskInfo>>>,
    pub stopped: Mutex<Vec<String>>,
}

impl FakeEcs {
    pub fn updates(&self) -> Vec<(String, String, u32)> {
        self.updates.lock().unwrap().clone()
    }

    pub fn fail_update(&self, service: &str, kind: ErrorKind) {
        self.fail.lock().unwrap().insert(service.into(), kind);
    }

    pub fn set_tasks(&self, container_instance: &str, groups: &[&str]) {
        let tasks = groups
            .iter()
            .enumerate()
            .map(|(i, g)| TaskInfo {
                arn: format!("arn:aws:ecs:us-east-1:1:task/prod/t{i}"),
                group: Some(g.to_string()),
                last_status: "RUNNING".into(),
                task_definition: "td".into(),
                cpu: None,
                memory_mib: None,
                container_instance: Some(container_instance.into()),
                created_at: None,
            })
            .collect();
        self.tasks
            .lock()
            .unwrap()
            .insert(container_instance.into(), tasks);
    }
}

#[async_trait]
impl EcsWriteApi for FakeEcs {
    async fn update_service(&self, cluster: &str, service: &str, desired: u32) -> Result<(), ApiError> {
        if let Some(kind) = self.fail.lock().unwrap().get(service) {
            return Err(error("ECS.UpdateService", *kind));
        }
        self.updates
            .lock()
            .unwrap()
            .push((cluster.into(), service.into(), desired));
        Ok(())
    }

    async fn set_instances_state(
        &self,
        _cluster: &str,
        arns: &[String],
        state: &str,
    ) -> Result<(), ApiError> {
        self.states.lock().unwrap().push((arns.to_vec(), state.into()));
        Ok(())
    }

    async fn daemon_services(&self, _cluster: &str) -> Result<Vec<String>, ApiError> {
        Ok(self.daemons.lock().unwrap().clone())
    }

    async fn capacity_providers(
        &self,
        _cluster: &str,
    ) -> Result<Vec<crate::api::CapacityProvider>, ApiError> {
        Ok(self.providers.lock().unwrap().clone())
    }

    async fn started_by(&self, _cluster: &str, started_by: &str) -> Result<Vec<TaskInfo>, ApiError> {
        Ok(self
            .group_tasks
            .lock()
            .unwrap()
            .get(started_by)
            .cloned()
            .unwrap_or_default())
    }

    async fn start_tasks(
        &self,
        _cluster: &str,
        td: &str,
        on: &[String],
        by: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        let mut tasks = self.group_tasks.lock().unwrap();
        let list = tasks.entry(by.to_string()).or_default();
        let mut out = Vec::new();
        for ci in on {
            let arn = format!(
                "arn:aws:ecs:us-east-1:1:task/prod/{by}-{}",
                list.len() + self.stopped.lock().unwrap().len()
            );
            list.push(TaskInfo {
                arn: arn.clone(),
                group: Some(format!("family:{td}")),
                last_status: "PENDING".into(),
                task_definition: td.into(),
                cpu: None,
                memory_mib: None,
                container_instance: Some(ci.clone()),
                created_at: None,
            });
            out.push(arn);
        }
        Ok((out, Vec::new()))
    }

    async fn stop_task(&self, _cluster: &str, task: &str, _reason: &str) -> Result<(), ApiError> {
        for list in self.group_tasks.lock().unwrap().values_mut() {
            list.retain(|t| t.arn != task);
        }
        self.stopped.lock().unwrap().push(task.into());
        Ok(())
    }

    async fn disable_managed_scaling(&self, provider: &str) -> Result<(), ApiError> {
        for p in self
            .providers
            .lock()
            .unwrap()
            .iter_mut()
            .filter(|p| p.name == provider)
        {
            p.managed_scaling = false;
        }
        self.disabled.lock().unwrap().push(provider.into());
        Ok(())
    }

    async fn instance_tasks(
        &self,
        _cluster: &str,
        container_instance: &str,
    ) -> Result<Vec<TaskInfo>, ApiError> {
        Ok(self
            .tasks
            .lock()
            .unwrap()
            .get(container_instance)
            .cloned()
            .unwrap_or_default())
    }
}

#[derive(Default)]
pub struct FakeAas {
    targets: Mutex<HashMap<String, bool>>,
    suspended: Mutex<Vec<String>>,
    described: Mutex<u32>,
}

impl FakeAas {
    pub fn add(&self, cluster: &str, service: &str, suspended: bool) {
        self.targets
            .lock()
            .unwrap()
            .insert(format!("service/{cluster}/{service}"), suspended);
    }

    pub fn suspended(&self) -> Vec<String> {
        self.suspended.lock().unwrap().clone()
    }

    pub fn described(&self) -> u32 {
        *self.described.lock().unwrap()
    }
}

#[async_trait]
impl AppAutoScalingApi for FakeAas {
    async fn scalable_targets(
        &self,
        services: &[crate::model::ServiceKey],
    ) -> Result<HashMap<crate::model::ServiceKey, ScalableTarget>, ApiError> {
        *self.described.lock().unwrap() += 1;
        let targets = self.targets.lock().unwrap();
        Ok(services
            .iter()
            .filter_map(|k| {
                let suspended = *targets.get(&format!("service/{}/{}", k.cluster, k.service))?;
                Some((k.clone(), ScalableTarget { suspended }))
            })
            .collect())
    }

    async fn suspend(&self, cluster: &str, service: &str) -> Result<(), ApiError> {
        let id = format!("service/{cluster}/{service}");
        self.targets.lock().unwrap().insert(id.clone(), true);
        self.suspended.lock().unwrap().push(id);
        Ok(())
    }
}

/// One Auto Scaling group.
pub struct FakeAsg {
    pub group: Mutex<GroupInfo>,
    pub desired_calls: Mutex<Vec<u32>>,
    pub terminated: Mutex<Vec<String>>,
}

impl FakeAsg {
    pub fn new(name: &str, min: u32, max: u32, ids: &[&str]) -> Self {
        FakeAsg {
            group: Mutex::new(GroupInfo {
                name: name.into(),
                min,
                max,
                desired: ids.len() as u32,
                instances: ids
                    .iter()
                    .map(|id| GroupInstance {
                        id: id.to_string(),
                        lifecycle_state: "InService".into(),
                        instance_type: Some("m5.large".into()),
                        protected_from_scale_in: false,
                    })
                    .collect(),
                instance_type: Some("m5.large".into()),
            }),
            desired_calls: Mutex::new(Vec::new()),
            terminated: Mutex::new(Vec::new()),
        }
    }

    pub fn info(&self) -> GroupInfo {
        self.group.lock().unwrap().clone()
    }
}

#[async_trait]
impl AutoScalingApi for FakeAsg {
    async fn describe_group(&self, _name: &str) -> Result<GroupInfo, ApiError> {
        Ok(self.info())
    }

    async fn set_desired_capacity(&self, _name: &str, desired: u32) -> Result<(), ApiError> {
        self.desired_calls.lock().unwrap().push(desired);
        self.group.lock().unwrap().desired = desired;
        Ok(())
    }

    async fn terminate_instance(&self, _group: &str, instance_id: &str) -> Result<(), ApiError> {
        self.terminated.lock().unwrap().push(instance_id.into());
        let mut g = self.group.lock().unwrap();
        g.instances.retain(|i| i.id != instance_id);
        g.desired -= 1;
        Ok(())
    }
}
