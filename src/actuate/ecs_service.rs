//! Applying a decision to an ECS service: UpdateService(desiredCount), once, when it changes
//! something, and only when nothing forbids it.
//!
//! Guards, in order:
//! - **Idempotent**: no call when the service's desired count already is the decided one.
//! - **No scale-in during a rollout**: while a deployment is replacing tasks, that is while the
//!   service has more than one deployment that is not INACTIVE (the new PRIMARY and the ACTIVE
//!   old one), a scale-in is refused: ECS would stop tasks of either revision and the rollout's
//!   health checks would see a shrinking fleet. A lone PRIMARY deployment whose rollout state is
//!   still IN_PROGRESS (a new service, or moto, which never completes one) replaces nothing, so
//!   it does not block. Scale-out is never refused for a rollout: more tasks help it.
//! - **One autoscaler per service**: if Application Auto Scaling has a scalable target on the
//!   service with its dynamic scaling live, `worker.app_autoscaling` decides: `refuse` leaves the
//!   service alone and says so on every decision, `take_over` suspends Application Auto
//!   Scaling's dynamic and scheduled scaling first (logged once, visible in the AWS console) and
//!   only then scales. Never both silently. The check is made only for services about to
//!   change, 50 to a call ([`ServiceActuator::prepare`]), and cached for five minutes.
//! - **Leadership**: the [`Fence`] is asked right before each mutating call.
//! - **Rate**: UpdateService calls of all services share one [`RateLimiter`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Applied, Fence, RateLimiter};
use crate::api::{AppAutoScalingApi, EcsWriteApi, ScalableTarget};
use crate::config::AppAutoScaling;
use crate::model::{Decision, ServiceKey, ServiceState};

/// How long an Application Auto Scaling answer is trusted.
const AAS_CACHE: Duration = Duration::from_secs(300);

/// The deployments of a service that still run or start tasks.
pub fn live_deployments(s: &ServiceState) -> usize {
    s.deployments.iter().filter(|d| d.status != "INACTIVE").count()
}

pub struct ServiceActuator {
    ecs: Arc<dyn EcsWriteApi>,
    aas: Arc<dyn AppAutoScalingApi>,
    mode: AppAutoScaling,
    limiter: Arc<RateLimiter>,
    dry_run: bool,
    /// Scalable targets seen (None: none), with when.
    aas_seen: Mutex<HashMap<ServiceKey, (Instant, Option<ScalableTarget>)>>,
}

impl ServiceActuator {
    pub fn new(
        ecs: Arc<dyn EcsWriteApi>,
        aas: Arc<dyn AppAutoScalingApi>,
        mode: AppAutoScaling,
        limiter: Arc<RateLimiter>,
        dry_run: bool,
    ) -> Self {
        ServiceActuator {
            ecs,
            aas,
            mode,
            limiter,
            dry_run,
            aas_seen: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &ServiceKey) -> Option<Option<ScalableTarget>> {
        let seen = self.aas_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(key)
            .filter(|(at, _)| at.elapsed() < AAS_CACHE)
            .map(|(_, t)| *t)
    }

    fn remember(&self, key: ServiceKey, target: Option<ScalableTarget>) {
        let mut seen = self.aas_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(key, (Instant::now(), target));
    }

    /// Looks up, 50 to a call, whether Application Auto Scaling targets the services of these
    /// decisions that are about to change (and are not in the cache). A failed lookup leaves
    /// them uncached: [`ServiceActuator::apply`] asks again for each.
    pub async fn prepare(&self, changing: &[(&Decision, &ServiceState)]) {
        let keys: Vec<ServiceKey> = changing
            .iter()
            .filter(|(d, s)| d.desired != s.desired)
            .map(|(_, s)| s.key())
            .filter(|k| self.cached(k).is_none())
            .collect();
        for chunk in keys.chunks(crate::api::SCALABLE_TARGETS_BATCH) {
            match self.aas.scalable_targets(chunk).await {
                Ok(found) => {
                    for k in chunk {
                        self.remember(k.clone(), found.get(k).copied());
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    /// Application Auto Scaling's hold on the service: `Ok(())` when ecscale may scale it (after
    /// suspending Application Auto Scaling, in `take_over` mode).
    async fn settle_app_autoscaling(&self, s: &ServiceState, fence: &dyn Fence) -> Result<(), Applied> {
        let key = s.key();
        let target = match self.cached(&key) {
            Some(t) => t,
            None => {
                let t = self
                    .aas
                    .scalable_targets(std::slice::from_ref(&key))
                    .await
                    .map_err(|e| Applied::failed(&e))?
                    .get(&key)
                    .copied();
                self.remember(key.clone(), t);
                t
            }
        };
        if target.is_none_or(|t| t.suspended) {
            return Ok(());
        }
        let resource = format!("service/{}/{}", crate::model::arn_name(&s.cluster), s.name);
        match self.mode {
            AppAutoScaling::Refuse => Err(Applied::Refused {
                reason: format!(
                    "Application Auto Scaling also scales this service (scalable target {resource}); ecscale leaves it alone. Remove the scalable target, or set worker.app_autoscaling: take_over to suspend it"
                ),
            }),
            AppAutoScaling::TakeOver if self.dry_run => {
                tracing::info!(
                    service = %key,
                    "dry run: would suspend Application Auto Scaling on {resource} (worker.app_autoscaling: take_over) before scaling"
                );
                Ok(())
            }
            AppAutoScaling::TakeOver => {
                fence.check().map_err(|reason| Applied::Refused { reason })?;
                self.aas
                    .suspend(&s.cluster, &s.name)
                    .await
                    .map_err(|e| Applied::failed(&e))?;
                tracing::warn!(
                    service = %key,
                    "suspended Application Auto Scaling's dynamic and scheduled scaling on {resource} (worker.app_autoscaling: take_over); ecscale scales this service now"
                );
                self.remember(key, Some(ScalableTarget { suspended: true }));
                Ok(())
            }
        }
    }

    /// Applies one decision to the service it is about, as `service` was collected this tick.
    pub async fn apply(&self, d: &Decision, service: &ServiceState, fence: &dyn Fence) -> Applied {
        let (from, to) = (service.desired, d.desired);
        if from == to {
            return Applied::Unchanged;
        }
        let live = live_deployments(service);
        if to < from && live > 1 {
            return Applied::Refused {
                reason: format!(
                    "a deployment is replacing tasks ({live} deployments running): no scale-in ({from} → {to}) until it completes"
                ),
            };
        }
        if let Err(a) = self.settle_app_autoscaling(service, fence).await {
            return a;
        }
        if self.dry_run {
            return Applied::DryRun { from, to };
        }
        self.limiter.acquire().await;
        // Asked after the wait: leadership may have been lost meanwhile.
        if let Err(reason) = fence.check() {
            return Applied::Refused { reason };
        }
        match self.ecs.update_service(&service.cluster, &service.name, to).await {
            Ok(()) => Applied::Updated { from, to },
            Err(e) => Applied::failed(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::testing::{service, FakeAas, FakeEcs};
    use crate::actuate::Alone;
    use crate::api::ErrorKind;
    use crate::model::{Action, Deployment, TargetKey};

    fn decision(current: u32, desired: u32) -> Decision {
        Decision {
            target: TargetKey::service("prod", "web"),
            at: chrono::Utc::now(),
            current,
            running: current,
            desired,
            action: if desired > current {
                Action::ScaleOut
            } else if desired < current {
                Action::ScaleIn
            } else {
                Action::Hold
            },
            min: 1,
            max: 100,
            rule: None,
            reason: String::new(),
            recommendation: desired,
            inputs: Default::default(),
            votes: Vec::new(),
        }
    }

    fn actuator(
        ecs: &Arc<FakeEcs>,
        aas: &Arc<FakeAas>,
        mode: AppAutoScaling,
        dry_run: bool,
    ) -> ServiceActuator {
        ServiceActuator::new(
            ecs.clone(),
            aas.clone(),
            mode,
            Arc::new(RateLimiter::new(50.0, 50.0)),
            dry_run,
        )
    }

    fn deployment(status: &str) -> Deployment {
        Deployment {
            id: status.into(),
            status: status.into(),
            task_definition: "td".into(),
            desired: 4,
            running: 4,
            pending: 0,
            failed_tasks: 0,
            rollout_state: Some("IN_PROGRESS".into()),
            rollout_state_reason: None,
            created_at: None,
            updated_at: None,
        }
    }

    #[tokio::test]
    async fn updates_once_and_is_idempotent() {
        let (ecs, aas) = (Arc::new(FakeEcs::default()), Arc::new(FakeAas::default()));
        let a = actuator(&ecs, &aas, AppAutoScaling::Refuse, false);
        let s = service("prod", "web", 4);
        assert_eq!(
            a.apply(&decision(4, 6), &s, &Alone).await,
            Applied::Updated { from: 4, to: 6 }
        );
        assert_eq!(ecs.updates(), vec![("prod".into(), "web".into(), 6)]);
        // The service now has 6: the same decision again makes no call.
        let s = service("prod", "web", 6);
        assert_eq!(a.apply(&decision(6, 6), &s, &Alone).await, Applied::Unchanged);
        assert_eq!(ecs.updates().len(), 1);
    }

    #[tokio::test]
    async fn no_scale_in_while_a_deployment_replaces_tasks() {
        let (ecs, aas) = (Arc::new(FakeEcs::default()), Arc::new(FakeAas::default()));
        let a = actuator(&ecs, &aas, AppAutoScaling::Refuse, false);
        let mut s = service("prod", "web", 4);
        s.deployments = vec![deployment("PRIMARY"), deployment("ACTIVE")];
        let got = a.apply(&decision(4, 2), &s, &Alone).await;
        assert!(
            matches!(&got, Applied::Refused { reason } if reason.contains("2 deployments")),
            "{got:?}"
        );
        // Scale-out is fine during a rollout.
        assert_eq!(
            a.apply(&decision(4, 5), &s, &Alone).await,
            Applied::Updated { from: 4, to: 5 }
        );
        // A lone PRIMARY deployment IN_PROGRESS (a new service; moto) replaces nothing.
        s.deployments = vec![deployment("PRIMARY")];
        assert_eq!(
            a.apply(&decision(4, 2), &s, &Alone).await,
            Applied::Updated { from: 4, to: 2 }
        );
        assert_eq!(ecs.updates().len(), 2);
    }

    #[tokio::test]
    async fn refuses_to_fight_application_auto_scaling() {
        let (ecs, aas) = (Arc::new(FakeEcs::default()), Arc::new(FakeAas::default()));
        aas.add("prod", "web", false);
        let a = actuator(&ecs, &aas, AppAutoScaling::Refuse, false);
        let got = a.apply(&decision(4, 6), &service("prod", "web", 4), &Alone).await;
        assert!(
            matches!(&got, Applied::Refused { reason } if reason.contains("take_over")),
            "{got:?}"
        );
        assert!(ecs.updates().is_empty());
        assert_eq!(aas.suspended(), Vec::<String>::new());
        // A suspended scalable target does not scale: ecscale may.
        let (ecs, aas) = (Arc::new(FakeEcs::default()), Arc::new(FakeAas::default()));
        aas.add("prod", "web", true);
        let a = actuator(&ecs, &aas, AppAutoScaling::Refuse, false);
        assert!(a
            .apply(&decision(4, 6), &service("prod", "web", 4), &Alone)
            .await
            .took_effect());
    }

    #[tokio::test]
    async fn takes_over_by_suspending_first() {
        let (ecs, aas) = (Arc::new(FakeEcs::default()), Arc::new(FakeAas::default()));
        aas.add("prod", "web", false);
        let a = actuator(&ecs, &aas, AppAutoScaling::TakeOver, false);
        assert!(a
            .apply(&decision(4, 6), &service("prod", "web", 4), &Alone)
            .await
            .took_effect());
        assert_eq!(aas.suspended(), vec!["service/prod/web".to_string()]);
        // Cached: the next change does not ask or suspend again.
        assert!(a
            .apply(&decision(6, 7), &service("prod", "web", 6), &Alone)
            .await
            .took_effect());
        assert_eq!(aas.described(), 1);
        assert_eq!(aas.suspended().len(), 1);
    }

    #[tokio::test]
    async fn dry_run_makes_no_mutating_call() {
        let (ecs, aas) = (Arc::new(FakeEcs::default()), Arc::new(FakeAas::default()));
        aas.add("prod", "api", false);
        let a = actuator(&ecs, &aas, AppAutoScaling::TakeOver, true);
        assert_eq!(
            a.apply(&decision(4, 6), &service("prod", "web", 4), &Alone).await,
            Applied::DryRun { from: 4, to: 6 }
        );
        // Even where it would suspend Application Auto Scaling first.
        assert_eq!(
            a.apply(&decision(4, 6), &service("prod", "api", 4), &Alone).await,
            Applied::DryRun { from: 4, to: 6 }
        );
        assert!(ecs.updates().is_empty());
        assert!(aas.suspended().is_empty());
    }

    #[tokio::test]
    async fn errors_and_lost_leadership() {
        let (ecs, aas) = (Arc::new(FakeEcs::default()), Arc::new(FakeAas::default()));
        ecs.fail_update("web", ErrorKind::Throttled);
        let a = actuator(&ecs, &aas, AppAutoScaling::Refuse, false);
        let got = a.apply(&decision(4, 6), &service("prod", "web", 4), &Alone).await;
        assert!(
            matches!(
                got,
                Applied::Failed {
                    kind: ErrorKind::Throttled,
                    ..
                }
            ),
            "{got:?}"
        );
        struct Deposed;
        impl Fence for Deposed {
            fn check(&self) -> Result<(), String> {
                Err("not the leader".into())
            }
        }
        let got = a
            .apply(&decision(4, 6), &service("prod", "api", 4), &Deposed)
            .await;
        assert_eq!(
            got,
            Applied::Refused {
                reason: "not the leader".into()
            }
        );
        assert!(ecs.updates().is_empty());
    }
}
