//! Putting a world into moto: clusters, task definitions, services, EC2 instances registered as
//! container instances, running tasks and CloudWatch datapoints. Shared by the integration tests
//! and the `moto_sandbox` example (the pre-simulator demo).
#![allow(dead_code)]

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
    http: reqwest::Client,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Moto {
    pub fn new(url: &str, region: &str) -> Self {
        let creds = Credentials::new("testing", "testing", None, None, "ecscale-tests");
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
            .credentials_provider(creds)
            .build();
        Moto {
            url: url.to_string(),
            region: region.to_string(),
            ecs: aws_sdk_ecs::Client::from_conf(ecs),
            cloudwatch: aws_sdk_cloudwatch::Client::from_conf(cw),
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
}
