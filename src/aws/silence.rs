//! An endpoint that lets a call time out is not called again for a while.
//!
//! A host that accepts TCP and never answers costs the whole operation timeout (30 s by default)
//! per call, and a pass makes several calls one after another: without this, a tick against a
//! silent endpoint took a minute or more to give up. Once one call to an endpoint has timed out,
//! every call to it fails at once, named as not tried, for as long as that timeout (the time it
//! took to learn the endpoint was silent). Any answer from it ends the silence early.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{DateTime, Utc};

/// The endpoints that went silent, shared by every client of one context.
#[derive(Debug, Clone)]
pub(super) struct Silences {
    silent: Arc<Mutex<HashMap<String, Silent>>>,
    hold: Duration,
}

#[derive(Debug, Clone)]
struct Silent {
    operation: String,
    at: DateTime<Utc>,
    until: Instant,
}

/// A call refused without being sent: its endpoint let an earlier one time out.
#[derive(Debug, thiserror::Error)]
#[error(
    "not tried: {endpoint} left {operation} unanswered at {at} (aws.timeouts.operation {hold:?}); \
     calls to it resume at {resume} or at its first answer",
    at = .at.format("%H:%M:%S"),
    resume = (*.at + chrono::TimeDelta::from_std(*.hold).unwrap_or_default()).format("%H:%M:%S")
)]
pub(super) struct NotTried {
    endpoint: String,
    operation: String,
    at: DateTime<Utc>,
    hold: Duration,
}

impl Silences {
    pub(super) fn new(hold: Duration) -> Self {
        Silences {
            silent: Arc::default(),
            hold,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Silent>> {
        self.silent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `operation` timed out at `endpoint`.
    pub(super) fn mark(&self, endpoint: &str, operation: &str) {
        let s = Silent {
            operation: operation.to_string(),
            at: Utc::now(),
            until: Instant::now() + self.hold,
        };
        self.lock().insert(endpoint.to_string(), s);
    }

    fn check(&self, endpoint: &str) -> Option<NotTried> {
        let mut silent = self.lock();
        let s = silent.get(endpoint)?;
        if Instant::now() >= s.until {
            silent.remove(endpoint);
            return None;
        }
        Some(NotTried {
            endpoint: endpoint.to_string(),
            operation: s.operation.clone(),
            at: s.at,
            hold: self.hold,
        })
    }

    fn answered(&self, endpoint: &str) {
        self.lock().remove(endpoint);
    }

    /// The interceptor for one client, whose calls go to `endpoint`.
    pub(super) fn guard(&self, endpoint: String) -> SilenceGuard {
        SilenceGuard {
            silences: self.clone(),
            endpoint,
        }
    }
}

/// Refuses a call to a silent endpoint before it is sent; an answer ends the silence.
#[derive(Debug, Clone)]
pub(super) struct SilenceGuard {
    silences: Silences,
    endpoint: String,
}

impl Intercept for SilenceGuard {
    fn name(&self) -> &'static str {
        "ecscale::SilenceGuard"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        match self.silences.check(&self.endpoint) {
            Some(not_tried) => Err(Box::new(not_tried)),
            None => Ok(()),
        }
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if context.response().is_some() {
            self.silences.answered(&self.endpoint);
        }
        Ok(())
    }
}

/// The [`NotTried`] somewhere in an error's causes.
pub(super) fn not_tried<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a NotTried> {
    super::cause::<NotTried>(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_silences_its_endpoint_only_until_the_hold_ends_or_it_answers() {
        let s = Silences::new(Duration::from_millis(50));
        s.mark("http://a", "ECS.DescribeServices");
        let n = s.check("http://a").expect("silent");
        assert!(
            n.to_string()
                .starts_with("not tried: http://a left ECS.DescribeServices unanswered at "),
            "{n}"
        );
        assert!(s.check("http://b").is_none(), "another endpoint is still called");
        s.answered("http://a");
        assert!(s.check("http://a").is_none(), "an answer ends the silence");
        s.mark("http://a", "ECS.ListServices");
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.check("http://a").is_none(), "the hold ends");
    }
}
