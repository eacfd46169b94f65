//! Clusters in other accounts and regions: each API call goes to the clients of its cluster's
//! place (a region, a role assumed through STS), the worker's own for the rest. Every call of
//! the [`crate::api`] traits names its cluster (or, for a task definition, its ARN names the
//! account and region; for metrics, the request says `via` which cluster), so one worker
//! reaches them all.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::api::{
    ApiError, AppAutoScalingApi, AutoScalingApi, CapacityProvider, CloudWatchApi, Described, EcsApi,
    EcsWriteApi, GroupInfo, MetricDataPage, MetricDataRequest, Page, RunTasks, ScalableTarget, TaskInfo,
};
use crate::model::{ContainerInstance, ServiceKey, ServiceState, TaskDefinitionInfo};

/// One client per place, and which cluster is where.
pub struct Routes<T: ?Sized> {
    /// The worker's own account and region.
    pub own: Arc<T>,
    /// Clusters elsewhere, by name.
    pub clusters: HashMap<String, Arc<T>>,
    /// The same clients by region and account (`None`: the worker's own account), for what is
    /// named by ARN (task definitions, capacity providers).
    pub places: Vec<(String, Option<String>, Arc<T>)>,
}

impl<T: ?Sized> Routes<T> {
    fn of(&self, cluster: &str) -> &T {
        self.clusters.get(cluster).unwrap_or(&self.own)
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:…`'s place: the account's in that region, else the
    /// worker's own account's in that region, else the worker's own.
    fn of_arn(&self, arn: &str) -> &T {
        let mut p = arn.split(':').skip(3);
        let (Some(region), Some(account)) = (p.next(), p.next()) else {
            return &self.own;
        };
        let find = |a: Option<&str>| {
            self.places
                .iter()
                .find(|(r, acc, _)| r == region && acc.as_deref() == a)
        };
        find(Some(account))
            .or_else(|| find(None))
            .map_or(&*self.own, |(_, _, t)| &**t)
    }
}

#[async_trait]
impl EcsApi for Routes<dyn EcsApi> {
    fn read_allowance(
        &self,
        cluster: &str,
        within: std::time::Duration,
    ) -> Option<crate::api::ReadAllowance> {
        self.of(cluster).read_allowance(cluster, within)
    }
    async fn list_services(&self, cluster: &str, t: Option<String>) -> Result<Page<String>, ApiError> {
        self.of(cluster).list_services(cluster, t).await
    }
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Described<ServiceState>, ApiError> {
        self.of(cluster).describe_services(cluster, services).await
    }
    async fn describe_task_definition(&self, td: &str) -> Result<TaskDefinitionInfo, ApiError> {
        self.of_arn(td).describe_task_definition(td).await
    }
    async fn list_container_instances(&self, c: &str, t: Option<String>) -> Result<Page<String>, ApiError> {
        self.of(c).list_container_instances(c, t).await
    }
    async fn describe_container_instances(
        &self,
        c: &str,
        arns: &[String],
    ) -> Result<Described<ContainerInstance>, ApiError> {
        self.of(c).describe_container_instances(c, arns).await
    }
    async fn list_tasks(&self, c: &str, t: Option<String>) -> Result<Page<String>, ApiError> {
        self.of(c).list_tasks(c, t).await
    }
    async fn describe_tasks(&self, c: &str, arns: &[String]) -> Result<Described<TaskInfo>, ApiError> {
        self.of(c).describe_tasks(c, arns).await
    }
}

#[async_trait]
impl CloudWatchApi for Routes<dyn CloudWatchApi> {
    async fn get_metric_data(
        &self,
        request: &MetricDataRequest,
        next_token: Option<String>,
    ) -> Result<MetricDataPage, ApiError> {
        let to = match &request.via {
            Some(c) => self.of(c),
            None => &*self.own,
        };
        to.get_metric_data(request, next_token).await
    }
}

#[async_trait]
impl EcsWriteApi for Routes<dyn EcsWriteApi> {
    async fn update_service(&self, cluster: &str, service: &str, desired: u32) -> Result<(), ApiError> {
        self.of(cluster).update_service(cluster, service, desired).await
    }
    async fn set_instances_state(&self, cluster: &str, arns: &[String], state: &str) -> Result<(), ApiError> {
        self.of(cluster).set_instances_state(cluster, arns, state).await
    }
    async fn daemon_services(&self, cluster: &str) -> Result<Vec<String>, ApiError> {
        self.of(cluster).daemon_services(cluster).await
    }
    async fn instance_tasks(&self, cluster: &str, instance: &str) -> Result<Vec<TaskInfo>, ApiError> {
        self.of(cluster).instance_tasks(cluster, instance).await
    }
    async fn capacity_providers(&self, cluster: &str) -> Result<Vec<CapacityProvider>, ApiError> {
        self.of(cluster).capacity_providers(cluster).await
    }
    async fn disable_managed_scaling(&self, provider: &str) -> Result<(), ApiError> {
        self.of_arn(provider).disable_managed_scaling(provider).await
    }
    async fn started_by(&self, cluster: &str, started_by: &str) -> Result<Vec<TaskInfo>, ApiError> {
        self.of(cluster).started_by(cluster, started_by).await
    }
    async fn start_tasks(
        &self,
        cluster: &str,
        task_definition: &str,
        container_instances: &[String],
        started_by: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        self.of(cluster)
            .start_tasks(cluster, task_definition, container_instances, started_by)
            .await
    }
    async fn stop_task(&self, cluster: &str, task: &str, reason: &str) -> Result<(), ApiError> {
        self.of(cluster).stop_task(cluster, task, reason).await
    }
    async fn run_tasks(&self, r: &RunTasks) -> Result<(Vec<String>, Vec<String>), ApiError> {
        self.of(&r.cluster).run_tasks(r).await
    }
}

#[async_trait]
impl AppAutoScalingApi for Routes<dyn AppAutoScalingApi> {
    async fn scalable_targets(
        &self,
        services: &[ServiceKey],
    ) -> Result<HashMap<ServiceKey, ScalableTarget>, ApiError> {
        // The worker's own services in one call, each other cluster's in its own (a call never
        // mixes places).
        let mut groups: Vec<(Option<&str>, Vec<ServiceKey>)> = Vec::new();
        for s in services {
            let place = self
                .clusters
                .contains_key(&s.cluster)
                .then_some(s.cluster.as_str());
            match groups.iter_mut().find(|(p, _)| *p == place) {
                Some((_, v)) => v.push(s.clone()),
                None => groups.push((place, vec![s.clone()])),
            }
        }
        let mut out = HashMap::new();
        for (place, batch) in groups {
            let to = place.map_or(&*self.own, |c| self.of(c));
            out.extend(to.scalable_targets(&batch).await?);
        }
        Ok(out)
    }
    async fn suspend(&self, cluster: &str, service: &str) -> Result<(), ApiError> {
        self.of(cluster).suspend(cluster, service).await
    }
}

/// Auto Scaling groups go where their cluster is: `clusters` holds them by group name.
#[async_trait]
impl AutoScalingApi for Routes<dyn AutoScalingApi> {
    async fn describe_group(&self, name: &str) -> Result<GroupInfo, ApiError> {
        self.of(name).describe_group(name).await
    }
    async fn set_desired_capacity(&self, name: &str, desired: u32) -> Result<(), ApiError> {
        self.of(name).set_desired_capacity(name, desired).await
    }
    async fn terminate_instance(&self, group: &str, instance_id: &str) -> Result<(), ApiError> {
        self.of(group).terminate_instance(group, instance_id).await
    }
}
