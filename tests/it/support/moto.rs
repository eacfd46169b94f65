//! Putting a world into moto: clusters, task definitions, services, EC2 instances registered as
//! container instances, running tasks and CloudWatch datapoints. Shared by the integration tests
//! and the `moto_sandbox` example (the pre-simulator demo).
#![allow(dead_code)]

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecs::types::{ContainerDefinition, Tag};
use chrono::{DateTime, Utc};

/// Clients for one moto region (each test takes its own region, so CloudWatch and ECS state of
/// other tests never mixes in).
pub struct Moto {
    pub url: String,
    pub region: String,
    pub ecs: aws_sdk_ecs::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub app_autoscaling: aws_sdk_applicationautoscaling::Client,
    pub sqs: aws_sdk_sqs::Client,
    http: reqwest::Client,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Moto {
    pub fn new(url: &str, region: &str) -> Self {
        let creds = Credentials::new("testing", "testing", None, None, "ecscale-tests");
        Self::with_credentials(url, region, SharedCredentialsProvider::new(creds))
    }

    /// Clients signing with `creds`: those of a role assumed in another account put the world
    /// in that account.
    pub fn with_credentials(url: &str, region: &str, creds: SharedCredentialsProvider) -> Self {
        let ecs = aws_sdk_ecs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(url)
            .credentials_provider(creds.clone())
            .build();
        let cw = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatch::config::Region::new(region.to_string()))
            .endpoint_url(url)
            .credentials_provider(creds.clone())
            .build();
        macro_rules! client {
            ($krate:ident) => {
                $krate::Client::from_conf(
                    $krate::Config::builder()
                        .behavior_version($krate::config::BehaviorVersion::latest())
                        .region($krate::config::Region::new(region.to_string()))
                        .endpoint_url(url)
                        .credentials_provider(creds.clone())
                        .build(),
                )
            };
        }
        Moto {
            url: url.to_string(),
            region: region.to_string(),
            ecs: aws_sdk_ecs::Client::from_conf(ecs),
            cloudwatch: aws_sdk_cloudwatch::Client::from_conf(cw),
            autoscaling: client!(aws_sdk_autoscaling),
            dynamodb: client!(aws_sdk_dynamodb),
            app_autoscaling: client!(aws_sdk_applicationautoscaling),
            sqs: client!(aws_sdk_sqs),
            http: reqwest::Client::new(),
        }
    }

    pub async fn cluster(&self, name: &str) -> Result<(), BoxError> {
        self.ecs.create_cluster().cluster_name(name).send().await?;
        Ok(())
    }

    /// A task definition of one container; returns its ARN.
    pub async fn task_definition(&self, family: &str, cpu: i32, memory: i32) -> Result<String, BoxError> {
        let out = self
            .ecs
            .register_task_definition()
            .family(family)
            .container_definitions(
                ContainerDefinition::builder()
                    .name("app")
                    .image("nginx")
                    .cpu(cpu)
                    .memory(memory)
                    .build(),
            )
            .send()
            .await?;
        Ok(out
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .ok_or("no task definition ARN")?
            .to_string())
    }

    pub async fn service(
        &self,
        cluster: &str,
        name: &str,
        task_definition: &str,
        desired: i32,
        tags: &[(&str, &str)],
    ) -> Result<(), BoxError> {
        let mut req = self
            .ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(task_definition)
            .desired_count(desired);
        for (k, v) in tags {
            req = req.tags(Tag::builder().key(*k).value(*v).build());
        }
        req.send().await?;
        Ok(())
    }

    /// Launches EC2 instances through moto's EC2 Query API (the Rust EC2 SDK is too large to
    /// build for this one call); returns their ids.
    pub async fn ec2_instances(&self, count: u32, instance_type: &str) -> Result<Vec<String>, BoxError> {
        let body = format!(
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-12c6146b&MinCount={count}&MaxCount={count}&InstanceType={instance_type}"
        );
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{}/ec2/aws4_request, SignedHeaders=host, Signature=0",
            self.region
        );
        let text = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Authorization", auth)
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let ids: Vec<String> = text
            .split("<instanceId>")
            .skip(1)
            .filter_map(|s| s.split("</instanceId>").next())
            .map(str::to_string)
            .collect();
        if ids.len() != count as usize {
            return Err(format!("RunInstances gave {} instance ids: {text}", ids.len()).into());
        }
        Ok(ids)
    }

    /// Registers an EC2 instance to a cluster; returns the container instance ARN.
    pub async fn register_instance(&self, cluster: &str, instance_id: &str) -> Result<String, BoxError> {
        let doc = format!(r#"{{"instanceId": "{instance_id}"}}"#);
        let out = self
            .ecs
            .register_container_instance()
            .cluster(cluster)
            .instance_identity_document(doc)
            .send()
            .await?;
        Ok(out
            .container_instance()
            .and_then(|c| c.container_instance_arn())
            .ok_or("no container instance ARN")?
            .to_string())
    }

    /// RunTask: moto places the tasks on the container instances and takes their resources.
    pub async fn run_tasks(&self, cluster: &str, task_definition: &str, count: i32) -> Result<(), BoxError> {
        self.ecs
            .run_task()
            .cluster(cluster)
            .task_definition(task_definition)
            .count(count)
            .send()
            .await?;
        Ok(())
    }

    /// Puts datapoints of one metric, 20 per call.
    pub async fn put_points(
        &self,
        namespace: &str,
        metric: &str,
        dimensions: &[(&str, &str)],
        unit: StandardUnit,
        points: &[(DateTime<Utc>, f64)],
    ) -> Result<(), BoxError> {
        let dims: Vec<Dimension> = dimensions
            .iter()
            .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
            .collect();
        for chunk in points.chunks(20) {
            let mut req = self.cloudwatch.put_metric_data().namespace(namespace);
            for (t, v) in chunk {
                req = req.metric_data(
                    MetricDatum::builder()
                        .metric_name(metric)
                        .set_dimensions(Some(dims.clone()))
                        .timestamp(aws_smithy_types::DateTime::from_secs(t.timestamp()))
                        .value(*v)
                        .unit(unit.clone())
                        .build(),
                );
            }
            req.send().await?;
        }
        Ok(())
    }

    /// The service as moto reports it, read directly (independently of ecscale).
    pub async fn describe_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<aws_sdk_ecs::types::Service, BoxError> {
        let out = self
            .ecs
            .describe_services()
            .cluster(cluster)
            .services(name)
            .send()
            .await?;
        Ok(out.services().first().ok_or("service not found")?.clone())
    }

    /// A launch configuration of `instance_type` and an Auto Scaling group on it; returns the
    /// ids of the instances moto launched for it.
    pub async fn group(
        &self,
        name: &str,
        instance_type: &str,
        min: i32,
        max: i32,
        desired: i32,
    ) -> Result<Vec<String>, BoxError> {
        let lc = format!("{name}-lc");
        self.autoscaling
            .create_launch_configuration()
            .launch_configuration_name(&lc)
            .image_id("ami-12c6146b")
            .instance_type(instance_type)
            .send()
            .await?;
        self.autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name(&lc)
            .min_size(min)
            .max_size(max)
            .desired_capacity(desired)
            .availability_zones(format!("{}a", self.region))
            .send()
            .await?;
        Ok(self.group_state(name).await?.1)
    }

    /// (desired capacity, instance ids) of a group, as moto holds it.
    pub async fn group_state(&self, name: &str) -> Result<(i32, Vec<String>), BoxError> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await?;
        let g = out.auto_scaling_groups().first().ok_or("no such group")?;
        let ids = g
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        Ok((g.desired_capacity().unwrap_or(0), ids))
    }

    /// A capacity provider backed by `group`, with managed scaling on or off, attached to
    /// `cluster`; returns its name.
    pub async fn capacity_provider(
        &self,
        cluster: &str,
        group: &str,
        managed: bool,
    ) -> Result<String, BoxError> {
        use aws_sdk_ecs::types::{AutoScalingGroupProvider, ManagedScaling, ManagedScalingStatus};
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await?;
        let arn = out
            .auto_scaling_groups()
            .first()
            .and_then(|g| g.auto_scaling_group_arn())
            .ok_or("no such group")?
            .to_string();
        let name = format!("{group}-cp");
        let status = if managed {
            ManagedScalingStatus::Enabled
        } else {
            ManagedScalingStatus::Disabled
        };
        self.ecs
            .create_capacity_provider()
            .name(&name)
            .auto_scaling_group_provider(
                AutoScalingGroupProvider::builder()
                    .auto_scaling_group_arn(arn)
                    .managed_scaling(ManagedScaling::builder().status(status).build())
                    .build()?,
            )
            .send()
            .await?;
        self.ecs
            .put_cluster_capacity_providers()
            .cluster(cluster)
            .capacity_providers(&name)
            .set_default_capacity_provider_strategy(Some(Vec::new()))
            .send()
            .await?;
        Ok(name)
    }

    /// The tasks started by `started_by` still meant to run: (task ARN, container instance ARN).
    pub async fn started_by(
        &self,
        cluster: &str,
        started_by: &str,
    ) -> Result<Vec<(String, String)>, BoxError> {
        let listed = self
            .ecs
            .list_tasks()
            .cluster(cluster)
            .started_by(started_by)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .send()
            .await?;
        if listed.task_arns().is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(listed.task_arns().to_vec()))
            .send()
            .await?;
        Ok(out
            .tasks()
            .iter()
            .map(|t| {
                (
                    t.task_arn().unwrap_or_default().to_string(),
                    t.container_instance_arn().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// Whether a capacity provider's managed scaling is ENABLED.
    pub async fn provider_managed(&self, name: &str) -> Result<bool, BoxError> {
        let out = self
            .ecs
            .describe_capacity_providers()
            .capacity_providers(name)
            .send()
            .await?;
        let p = out
            .capacity_providers()
            .first()
            .ok_or("no such capacity provider")?;
        Ok(p.auto_scaling_group_provider()
            .and_then(|a| a.managed_scaling())
            .and_then(|m| m.status())
            .is_some_and(|s| *s == aws_sdk_ecs::types::ManagedScalingStatus::Enabled))
    }

    /// Registers the group's instances that are not registered to `cluster` yet (what the ECS
    /// agent does when an instance boots); returns the container instance ARNs by instance id.
    pub async fn register_group(
        &self,
        cluster: &str,
        group: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, BoxError> {
        let mut known = self.container_instances(cluster).await?;
        for id in self.group_state(group).await?.1 {
            if let std::collections::btree_map::Entry::Vacant(slot) = known.entry(id) {
                let arn = self.register_instance(cluster, slot.key()).await?;
                slot.insert((arn, "ACTIVE".into()));
            }
        }
        Ok(known.into_iter().map(|(id, (arn, _))| (id, arn)).collect())
    }

    /// Container instances of a cluster: instance id → (ARN, status).
    pub async fn container_instances(
        &self,
        cluster: &str,
    ) -> Result<std::collections::BTreeMap<String, (String, String)>, BoxError> {
        let arns = self
            .ecs
            .list_container_instances()
            .cluster(cluster)
            .send()
            .await?
            .container_instance_arns()
            .to_vec();
        let mut out = std::collections::BTreeMap::new();
        if arns.is_empty() {
            return Ok(out);
        }
        let described = self
            .ecs
            .describe_container_instances()
            .cluster(cluster)
            .set_container_instances(Some(arns))
            .send()
            .await?;
        for c in described.container_instances() {
            if let (Some(id), Some(arn)) = (c.ec2_instance_id(), c.container_instance_arn()) {
                out.insert(
                    id.to_string(),
                    (arn.to_string(), c.status().unwrap_or_default().to_string()),
                );
            }
        }
        Ok(out)
    }

    /// StartTask of one task on one container instance, in a service's group; returns its ARN.
    pub async fn start_task(
        &self,
        cluster: &str,
        task_definition: &str,
        container_instance: &str,
        group: &str,
    ) -> Result<String, BoxError> {
        let out = self
            .ecs
            .start_task()
            .cluster(cluster)
            .task_definition(task_definition)
            .container_instances(container_instance)
            .group(group)
            .send()
            .await?;
        Ok(out
            .tasks()
            .first()
            .and_then(|t| t.task_arn())
            .ok_or("no task started")?
            .to_string())
    }

    pub async fn stop_task(&self, cluster: &str, task: &str) -> Result<(), BoxError> {
        self.ecs.stop_task().cluster(cluster).task(task).send().await?;
        Ok(())
    }

    /// Sets a service's desired count directly (as a person or another tool would).
    pub async fn set_desired(&self, cluster: &str, service: &str, desired: i32) -> Result<(), BoxError> {
        self.ecs
            .update_service()
            .cluster(cluster)
            .service(service)
            .desired_count(desired)
            .send()
            .await?;
        Ok(())
    }

    /// A DynamoDB table with a string partition key `key` (what ecscale's state and lease use).
    pub async fn table(&self, name: &str) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        self.dynamodb
            .create_table()
            .table_name(name)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("key")
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("key")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await?;
        Ok(())
    }

    /// An Application Auto Scaling scalable target on a service's desired count.
    pub async fn scalable_target(&self, cluster: &str, service: &str) -> Result<(), BoxError> {
        use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
        self.app_autoscaling
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(format!("service/{cluster}/{service}"))
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .min_capacity(1)
            .max_capacity(20)
            .send()
            .await?;
        Ok(())
    }

    /// Whether Application Auto Scaling's dynamic scaling on a service is suspended.
    pub async fn scalable_target_suspended(&self, cluster: &str, service: &str) -> Result<bool, BoxError> {
        use aws_sdk_applicationautoscaling::types::ServiceNamespace;
        let out = self
            .app_autoscaling
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_ids(format!("service/{cluster}/{service}"))
            .send()
            .await?;
        let t = out.scalable_targets().first().ok_or("no scalable target")?;
        Ok(t.suspended_state()
            .and_then(|s| s.dynamic_scaling_out_suspended())
            .unwrap_or(false))
    }
}
