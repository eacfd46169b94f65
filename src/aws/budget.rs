//! A share of an API family's rate limit, as a token bucket the worker's calls draw from. AWS
//! limits an account's calls per family (ECS's reads: a bucket of 100 refilled at 20 a second),
//! shared by every client of the account; a worker that takes what it likes starves the deploy
//! tools, the console and ECS's own controllers. A throttling answer pauses the whole family
//! (every call of it waits, not only the one retried), doubling from 1 s up to 20 s while
//! throttling goes on, and easing once calls are answered again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::api::{ApiError, Described, EcsApi, ErrorKind, Page, TaskInfo};
use crate::model::{ContainerInstance, ServiceState, TaskDefinitionInfo};

const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
    pause: Duration,
}

/// One family's budget.
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

impl Budget {
    /// `share` of a bucket refilled at `rate` a second and holding `burst`.
    pub fn share(share: f64, (rate, burst): (f64, f64)) -> Budget {
        let burst = (burst * share).max(1.0);
        Budget {
            rate: rate * share,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
                paused_until: None,
                pause: Duration::ZERO,
            }),
        }
    }

    /// Calls a second, and the most at once.
    pub fn rate(&self) -> (f64, f64) {
        (self.rate, self.burst)
    }

    /// Waits for a call's turn: a token, and the end of a pause.
    pub async fn take(&self) {
        loop {
            let wait = self.try_take();
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token now (zero), or says how long to wait for one.
    fn try_take(&self) -> Duration {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = s.paused_until.filter(|u| *u > now) {
            return until - now;
        }
        s.tokens = self.held(&s, now);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - s.tokens) / self.rate.max(1e-9))
    }

    /// The tokens held at `now`: those left, and those come in since, up to the burst.
    fn held(&self, s: &State, now: Instant) -> f64 {
        (s.tokens + now.duration_since(s.last).as_secs_f64() * self.rate).min(self.burst)
    }

    /// The calls this budget can make within `within` from now: the tokens it holds and those
    /// that come in (none while a pause outlasts it).
    pub fn affordable(&self, within: Duration) -> usize {
        let now = Instant::now();
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let paused = s
            .paused_until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        if paused > within {
            return 0;
        }
        (self.held(&s, now) + within.as_secs_f64() * self.rate)
            .floor()
            .max(0.0) as usize
    }

    /// A call of the family was throttled: the family pauses, longer each time in a row.
    pub fn throttled(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.pause = (s.pause * 2).clamp(FIRST_PAUSE, LONGEST_PAUSE);
        let now = Instant::now();
        s.paused_until = Some(now + s.pause);
        // The bucket is empty now, and refills from now (not for the time before the throttle).
        s.tokens = 0.0;
        s.last = now;
    }

    /// A call of the family was answered: the next pause starts short again.
    pub fn answered(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.pause /= 2;
        if s.pause < FIRST_PAUSE {
            s.pause = Duration::ZERO;
        }
    }
}

/// ECS's reads, drawn from a budget: each call waits for its turn, and its answer tells the
/// budget whether the family is throttled.
pub struct PacedEcs {
    pub inner: Arc<dyn EcsApi>,
    pub budget: Arc<Budget>,
}

impl PacedEcs {
    async fn paced<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.budget.take().await;
        let r = call.await;
        match &r {
            Ok(_) => self.budget.answered(),
            Err(e) if e.kind == ErrorKind::Throttled => self.budget.throttled(),
            Err(_) => {}
        }
        r
    }
}

#[async_trait]
impl EcsApi for PacedEcs {
    fn read_allowance(&self, _cluster: &str, within: Duration) -> Option<crate::api::ReadAllowance> {
        Some(crate::api::ReadAllowance {
            budget: Arc::as_ptr(&self.budget) as usize,
            calls: self.budget.affordable(within),
        })
    }
    async fn list_services(
        &self,
        cluster: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, ApiError> {
        self.paced(self.inner.list_services(cluster, next_token)).await
    }
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Described<ServiceState>, ApiError> {
        self.paced(self.inner.describe_services(cluster, services)).await
    }
    async fn describe_task_definition(&self, task_definition: &str) -> Result<TaskDefinitionInfo, ApiError> {
        self.paced(self.inner.describe_task_definition(task_definition))
            .await
    }
    async fn list_container_instances(
        &self,
        cluster: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, ApiError> {
        self.paced(self.inner.list_container_instances(cluster, next_token))
            .await
    }
    async fn describe_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Described<ContainerInstance>, ApiError> {
        self.paced(self.inner.describe_container_instances(cluster, arns))
            .await
    }
    async fn list_tasks(&self, cluster: &str, next_token: Option<String>) -> Result<Page<String>, ApiError> {
        self.paced(self.inner.list_tasks(cluster, next_token)).await
    }
    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Described<TaskInfo>, ApiError> {
        self.paced(self.inner.describe_tasks(cluster, arns)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the paused clock: a burst goes at once, then calls come at the rate; a throttle
    /// pauses every call for 1 s, then 2 s in a row, and answers ease it back.
    #[tokio::test(start_paused = true)]
    async fn calls_come_at_the_share_and_a_throttle_pauses_the_family() {
        let b = Budget::share(0.25, (20.0, 100.0));
        assert_eq!(b.rate(), (5.0, 25.0));
        let start = Instant::now();
        for _ in 0..25 {
            b.take().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst waits for nothing"
        );
        for _ in 0..10 {
            b.take().await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((took - 2.0).abs() < 0.01, "ten more at 5 a second: {took}");
        b.throttled();
        let t = Instant::now();
        b.take().await;
        assert!(
            (t.elapsed().as_secs_f64() - 1.0).abs() < 0.01,
            "{:?}",
            t.elapsed()
        );
        b.throttled();
        let t = Instant::now();
        b.take().await;
        assert!(
            (t.elapsed().as_secs_f64() - 2.0).abs() < 0.01,
            "{:?}",
            t.elapsed()
        );
        b.answered();
        b.answered();
        b.throttled();
        let t = Instant::now();
        b.take().await;
        assert!(
            (t.elapsed().as_secs_f64() - 1.0).abs() < 0.01,
            "eased back: {:?}",
            t.elapsed()
        );
    }

    /// What a pass may plan on: the tokens held and those that come within the time asked
    /// about; nothing while a pause outlasts it, and after one only what comes once it ends.
    #[tokio::test(start_paused = true)]
    async fn what_a_budget_affords_within_a_time_counts_its_pause() {
        let b = Budget::share(0.25, (20.0, 100.0));
        assert_eq!(b.affordable(Duration::ZERO), 25);
        assert_eq!(b.affordable(Duration::from_secs(2)), 35);
        for _ in 0..25 {
            b.take().await;
        }
        assert_eq!(b.affordable(Duration::from_secs(1)), 5);
        b.throttled();
        assert_eq!(b.affordable(Duration::from_millis(900)), 0, "paused for 1 s");
        assert_eq!(
            b.affordable(Duration::from_secs(3)),
            15,
            "3 s of refill, the pause's included"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.affordable(Duration::ZERO), 5);
    }
}
