//! ECS's own events, as a list of the services that changed since the last pass.
//!
//! ECS publishes every service action, deployment change and task state change to EventBridge;
//! a rule routes those of the managed clusters to an SQS queue, and a [`Poller`] long-polls it.
//! Each message names a service (or is counted as not about one), goes into [`Changes`], and is
//! then deleted. A pass takes the changes and reads those services again. Events can be lost,
//! late or out of order, so they only decide what is read early: the rolling reconciliation
//! (`collect.events.reconcile`) reads every service anyway.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::api::{QueueApi, QueuedMessage};
use crate::model::{arn_name, ServiceKey};

/// The most services remembered as changed between two passes; past it, the next pass reads
/// every service (nothing is dropped silently).
pub const MAX_CHANGED: usize = 100_000;

/// A message larger than this is not read (SQS's own limit is 256 KiB).
const MAX_MESSAGE: usize = 256 * 1024;

/// What the poller has seen, all counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventCounts {
    /// Messages received.
    pub received: u64,
    /// Messages that named at least one service.
    pub about_services: u64,
    /// ECS events about no service (container instances, standalone tasks).
    pub other: u64,
    /// Messages that were not ECS events (or not JSON): deleted, and logged.
    pub unreadable: u64,
    /// Messages deleted after being taken into account.
    pub deleted: u64,
    /// Messages SQS would not delete (they come back, and are counted again).
    pub not_deleted: u64,
}

#[derive(Debug, Default)]
struct Inner {
    services: HashSet<ServiceKey>,
    /// More changes than [`MAX_CHANGED`]: read everything.
    overflow: bool,
    counts: EventCounts,
}

/// The services changed since the last pass took them, from events and from the worker's
/// own actions.
#[derive(Debug, Default)]
pub struct Changes(Mutex<Inner>);

/// What a pass takes from [`Changes`].
#[derive(Debug, Default, Clone)]
pub struct Changed {
    pub services: HashSet<ServiceKey>,
    /// Read every service.
    pub all: bool,
}

impl Changes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `key` changed: read it in the next pass.
    pub fn mark(&self, key: ServiceKey) {
        let mut i = self.lock();
        if i.services.len() >= MAX_CHANGED {
            i.overflow = true;
        } else {
            i.services.insert(key);
        }
    }

    /// The changes so far, which start again from none.
    pub fn take(&self) -> Changed {
        let mut i = self.lock();
        Changed {
            services: std::mem::take(&mut i.services),
            all: std::mem::take(&mut i.overflow),
        }
    }

    pub fn counts(&self) -> EventCounts {
        self.lock().counts
    }

    /// Takes a message into account: the services it names are marked.
    fn message(&self, body: &str) -> Result<usize, String> {
        let keys = services_of(body);
        let mut i = self.lock();
        i.counts.received += 1;
        match &keys {
            Ok(k) if k.is_empty() => i.counts.other += 1,
            Ok(_) => i.counts.about_services += 1,
            Err(_) => i.counts.unreadable += 1,
        }
        drop(i);
        let keys = keys?;
        let n = keys.len();
        for k in keys {
            self.mark(k);
        }
        Ok(n)
    }
}

/// The services an ECS event (as EventBridge delivers it, or wrapped by SNS) is about; none
/// for events about no service. Not an ECS event: why.
pub fn services_of(body: &str) -> Result<Vec<ServiceKey>, String> {
    if body.len() > MAX_MESSAGE {
        return Err(format!(
            "{} bytes, more than the {MAX_MESSAGE} a message may have",
            body.len()
        ));
    }
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    // Through SNS, the event is the notification's `Message`, as text.
    if v.get("Type").and_then(Value::as_str) == Some("Notification") {
        if let Some(inner) = v.get("Message").and_then(Value::as_str) {
            return services_of(inner);
        }
    }
    if v.get("source").and_then(Value::as_str) != Some("aws.ecs") {
        return Err("not an ECS event (its `source` is not aws.ecs)".into());
    }
    let detail = v.get("detail").unwrap_or(&Value::Null);
    let cluster = detail.get("clusterArn").and_then(Value::as_str).map(arn_name);
    let mut keys = Vec::new();
    // Task state changes: the task's group is `service:NAME` for a service's tasks.
    if let (Some(c), Some(name)) = (
        cluster,
        detail
            .get("group")
            .and_then(Value::as_str)
            .and_then(|g| g.strip_prefix("service:")),
    ) {
        keys.push(ServiceKey::new(c, name));
    }
    // Service actions and deployment changes: the service's ARN among the resources.
    let resources = v.get("resources").and_then(Value::as_array);
    for arn in resources.into_iter().flatten().filter_map(Value::as_str) {
        if let Some(k) = service_arn(arn, cluster) {
            keys.push(k);
        }
    }
    keys.dedup();
    Ok(keys)
}

/// `arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME` (or the old `service/NAME`, whose cluster
/// the event's detail gives).
fn service_arn(arn: &str, cluster: Option<&str>) -> Option<ServiceKey> {
    let resource = arn.strip_prefix("arn:")?.splitn(5, ':').nth(4)?;
    let path = resource.strip_prefix("service/")?;
    match path.split_once('/') {
        Some((c, name)) => Some(ServiceKey::new(c, name)),
        None => cluster.map(|c| ServiceKey::new(c, path)),
    }
}

/// Long-polls the queue into [`Changes`] until stopped.
pub struct Poller {
    pub queue: Arc<dyn QueueApi>,
    pub changes: Arc<Changes>,
    /// Each receive's long poll (at most 20 s).
    pub wait: Duration,
}

impl Poller {
    /// One receive: every message taken into account, then deleted. The number received.
    pub async fn once(&self) -> Result<usize, crate::api::ApiError> {
        let messages = self.queue.receive(self.wait).await?;
        let n = messages.len();
        let mut receipts = Vec::with_capacity(n);
        for QueuedMessage { body, receipt } in messages {
            if let Err(why) = self.changes.message(&body) {
                tracing::warn!("ECS events queue: a message was not an ECS event ({why}); deleted");
            }
            receipts.push(receipt);
        }
        if !receipts.is_empty() {
            let failed = self.queue.delete(&receipts).await?;
            let mut i = self.changes.lock();
            i.counts.deleted += (receipts.len() - failed.len()) as u64;
            i.counts.not_deleted += failed.len() as u64;
            for (_, why) in failed {
                tracing::warn!("ECS events queue: a message was not deleted ({why}); it will come back");
            }
        }
        Ok(n)
    }

    /// Polls until `stop`; a failed receive waits a little (doubling to a minute) and tries
    /// again, since the reconciliation covers what is missed meanwhile.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut pause = Duration::from_secs(1);
        while !*stop.borrow() {
            tokio::select! {
                r = self.once() => match r {
                    Ok(_) => pause = Duration::from_secs(1),
                    Err(e) => {
                        tracing::warn!("ECS events queue: {e}; trying again in {}s (the reconciliation reads every service meanwhile)", pause.as_secs());
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = stop.changed() => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(60));
                    }
                },
                _ = stop.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str, s: &str) -> ServiceKey {
        ServiceKey::new(c, s)
    }

    #[test]
    fn each_kind_of_ecs_event_names_its_service() {
        let task = r#"{"source":"aws.ecs","detail-type":"ECS Task State Change","resources":["arn:aws:ecs:us-east-1:1:task/prod/abc"],
            "detail":{"clusterArn":"arn:aws:ecs:us-east-1:1:cluster/prod","group":"service:web","lastStatus":"STOPPED"}}"#;
        assert_eq!(services_of(task).unwrap(), vec![key("prod", "web")]);
        let action = r#"{"source":"aws.ecs","detail-type":"ECS Service Action","resources":["arn:aws:ecs:us-east-1:1:service/prod/api"],
            "detail":{"eventName":"SERVICE_STEADY_STATE","clusterArn":"arn:aws:ecs:us-east-1:1:cluster/prod"}}"#;
        assert_eq!(services_of(action).unwrap(), vec![key("prod", "api")]);
        let old_arn = r#"{"source":"aws.ecs","resources":["arn:aws:ecs:us-east-1:1:service/api"],
            "detail":{"clusterArn":"arn:aws:ecs:us-east-1:1:cluster/prod"}}"#;
        assert_eq!(services_of(old_arn).unwrap(), vec![key("prod", "api")]);
        let standalone = r#"{"source":"aws.ecs","detail":{"clusterArn":"c/prod","group":"family:batch"}}"#;
        assert!(services_of(standalone).unwrap().is_empty());
        let sns = serde_json::json!({"Type": "Notification", "Message": action}).to_string();
        assert_eq!(services_of(&sns).unwrap(), vec![key("prod", "api")]);
    }

    #[test]
    fn what_is_not_an_ecs_event_says_why() {
        assert!(services_of("{").unwrap_err().contains("not JSON"));
        assert!(services_of(r#"{"source":"aws.ec2"}"#)
            .unwrap_err()
            .contains("not an ECS event"));
        let big = format!("\"{}\"", "x".repeat(MAX_MESSAGE));
        assert!(services_of(&big).unwrap_err().contains("more than"));
    }

    #[test]
    fn changes_are_taken_once_and_overflow_reads_everything() {
        let c = Changes::default();
        c.mark(key("a", "b"));
        c.mark(key("a", "b"));
        let t = c.take();
        assert_eq!(t.services.len(), 1);
        assert!(!t.all);
        assert!(c.take().services.is_empty());
        for i in 0..=MAX_CHANGED {
            c.mark(key("a", &i.to_string()));
        }
        let t = c.take();
        assert!(t.all, "past the bound, the next pass reads everything");
        assert_eq!(t.services.len(), MAX_CHANGED);
    }
}
