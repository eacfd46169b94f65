//! An SDK interceptor that feeds the [`ApiMeter`]: one call per operation execution, one
//! attempt per HTTP request (retries included), failed when no 2xx answer came back.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::usage::ApiMeter;

#[derive(Debug, Clone)]
pub(super) struct MeterInterceptor(ApiMeter);

impl MeterInterceptor {
    pub(super) fn new(meter: ApiMeter) -> Self {
        MeterInterceptor(meter)
    }
}

/// `ECS.DescribeServices`, from the operation metadata the SDK stores for every call.
fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        // The SDK names some services with spaces (`Application Auto Scaling`, `Auto Scaling`);
        // ours are one word, as in error messages and the IAM-style tables.
        .map(|m| format!("{}.{}", m.service().replace(' ', ""), m.name()))
        .unwrap_or_else(|| "unknown".to_string())
}

impl Intercept for MeterInterceptor {
    fn name(&self) -> &'static str {
        "ecscale::ApiMeter"
    }

    // Once per call. (`read_before_execution` runs before the operation's metadata is in the
    // config bag, so the call could not be named there.)
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.call(&operation(cfg));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let failed = context.response().is_none_or(|r| !r.status().is_success());
        self.0.attempt(&operation(cfg), failed);
        Ok(())
    }
}
