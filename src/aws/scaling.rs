//! [`AutoScalingApi`] and [`AppAutoScalingApi`] over the AWS SDK.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_applicationautoscaling::types as aas;

use super::{api_error, CallSettings};

use crate::api::{ApiError, AppAutoScalingApi, AutoScalingApi, GroupInfo, GroupInstance, ScalableTarget};
use crate::model::ServiceKey;

fn count(n: Option<i32>) -> u32 {
    n.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// The Auto Scaling client of a worker.
#[derive(Clone, Debug)]
pub struct AwsAutoScaling {
    pub(super) client: aws_sdk_autoscaling::Client,
    pub(super) endpoint: String,
    pub(super) calls: CallSettings,
}

#[async_trait]
impl AutoScalingApi for AwsAutoScaling {
    async fn describe_group(&self, name: &str) -> Result<GroupInfo, ApiError> {
        let err = |e, op: &str| {
            api_error(
                e,
                op,
                format!("Auto Scaling group {name}"),
                &self.endpoint,
                &self.calls,
            )
        };
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| err(e, "AutoScaling.DescribeAutoScalingGroups"))?;
        let Some(g) = out.auto_scaling_groups().first() else {
            return Err(ApiError {
                operation: "AutoScaling.DescribeAutoScalingGroups".into(),
                resource: format!("Auto Scaling group {name}"),
                endpoint: self.endpoint.clone(),
                kind: crate::api::ErrorKind::NotFound,
                code: None,
                message: "no such group".into(),
            });
        };
        let instances: Vec<GroupInstance> = g
            .instances()
            .iter()
            .map(|i| GroupInstance {
                id: i.instance_id().unwrap_or_default().to_string(),
                lifecycle_state: i
                    .lifecycle_state()
                    .map_or(String::new(), |s| s.as_str().to_string()),
                instance_type: i.instance_type().map(str::to_string),
                protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
            })
            .collect();
        let mut instance_type = instances.iter().find_map(|i| i.instance_type.clone());
        if let Some(lc) = g.launch_configuration_name() {
            let out = self
                .client
                .describe_launch_configurations()
                .launch_configuration_names(lc)
                .send()
                .await
                .map_err(|e| {
                    api_error(
                        e,
                        "AutoScaling.DescribeLaunchConfigurations",
                        format!("launch configuration {lc}"),
                        &self.endpoint,
                        &self.calls,
                    )
                })?;
            if let Some(t) = out
                .launch_configurations()
                .first()
                .and_then(|l| l.instance_type())
            {
                instance_type = Some(t.to_string());
            }
        }
        Ok(GroupInfo {
            name: name.to_string(),
            min: count(g.min_size()),
            max: count(g.max_size()),
            desired: count(g.desired_capacity()),
            instances,
            instance_type,
        })
    }

    async fn set_desired_capacity(&self, name: &str, desired: u32) -> Result<(), ApiError> {
        self.client
            .set_desired_capacity()
            .auto_scaling_group_name(name)
            .desired_capacity(i32::try_from(desired).unwrap_or(i32::MAX))
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| {
                api_error(
                    e,
                    "AutoScaling.SetDesiredCapacity",
                    format!("Auto Scaling group {name} to {desired}"),
                    &self.endpoint,
                    &self.calls,
                )
            })?;
        Ok(())
    }

    async fn terminate_instance(&self, _group: &str, instance_id: &str) -> Result<(), ApiError> {
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| {
                api_error(
                    e,
                    "AutoScaling.TerminateInstanceInAutoScalingGroup",
                    format!("instance {instance_id}"),
                    &self.endpoint,
                    &self.calls,
                )
            })?;
        Ok(())
    }
}

/// The Application Auto Scaling client of a worker.
#[derive(Clone, Debug)]
pub struct AwsAppAutoScaling {
    pub(super) client: aws_sdk_applicationautoscaling::Client,
    pub(super) endpoint: String,
    pub(super) calls: CallSettings,
}

fn resource(cluster: &str, service: &str) -> String {
    format!("service/{}/{service}", crate::model::arn_name(cluster))
}

#[async_trait]
impl AppAutoScalingApi for AwsAppAutoScaling {
    async fn scalable_targets(
        &self,
        services: &[ServiceKey],
    ) -> Result<HashMap<ServiceKey, ScalableTarget>, ApiError> {
        let ids: HashMap<String, &ServiceKey> = services
            .iter()
            .map(|k| (resource(&k.cluster, &k.service), k))
            .collect();
        let what = match services {
            [one] => format!("service {one}"),
            many => format!("{} services", many.len()),
        };
        let out = self
            .client
            .describe_scalable_targets()
            .service_namespace(aas::ServiceNamespace::Ecs)
            .set_resource_ids(Some(ids.keys().cloned().collect()))
            .scalable_dimension(aas::ScalableDimension::EcsServiceDesiredCount)
            .max_results(i32::try_from(crate::api::SCALABLE_TARGETS_BATCH).unwrap_or(50))
            .send()
            .await
            .map_err(|e| {
                api_error(
                    e,
                    "ApplicationAutoScaling.DescribeScalableTargets",
                    what,
                    &self.endpoint,
                    &self.calls,
                )
            })?;
        Ok(out
            .scalable_targets()
            .iter()
            .filter_map(|t| {
                let key = ids.get(t.resource_id())?;
                let s = t.suspended_state();
                let suspended = s.is_some_and(|s| {
                    s.dynamic_scaling_in_suspended() == Some(true)
                        && s.dynamic_scaling_out_suspended() == Some(true)
                });
                Some(((*key).clone(), ScalableTarget { suspended }))
            })
            .collect())
    }

    async fn suspend(&self, cluster: &str, service: &str) -> Result<(), ApiError> {
        self.client
            .register_scalable_target()
            .service_namespace(aas::ServiceNamespace::Ecs)
            .resource_id(resource(cluster, service))
            .scalable_dimension(aas::ScalableDimension::EcsServiceDesiredCount)
            .suspended_state(
                aas::SuspendedState::builder()
                    .dynamic_scaling_in_suspended(true)
                    .dynamic_scaling_out_suspended(true)
                    .scheduled_scaling_suspended(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                api_error(
                    e,
                    "ApplicationAutoScaling.RegisterScalableTarget",
                    format!("service {cluster}/{service}"),
                    &self.endpoint,
                    &self.calls,
                )
            })?;
        Ok(())
    }
}
