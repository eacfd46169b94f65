//! The real AWS behind the [`crate::api`] traits: SDK clients built once from the config,
//! sharing one retry/timeout policy and one [`ApiMeter`].
//!
//! Credentials come from the standard chain (environment, profile, web identity, ECS task role,
//! EC2 instance role); `aws.endpoint_url` points every client at an AWS-compatible endpoint
//! (moto in tests).

pub mod budget;
mod cloudwatch;
mod ecs;
mod meter;
pub mod routes;
mod scaling;
pub mod sigv4;
mod silence;
mod sqs;
pub mod ssm;

use std::fmt;
use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

pub use crate::errors::{cause, error_chain};
pub use cloudwatch::AwsCloudWatch;
pub use ecs::AwsEcs;
pub use scaling::{AwsAppAutoScaling, AwsAutoScaling};
pub use sigv4::Signer;
pub use sqs::AwsQueue;

use crate::api::{ApiError, ErrorKind};
use crate::config::{AwsSettings, RetryMode};
use crate::usage::ApiMeter;

/// AWS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no AWS region: set aws.region in the config, ECSCALE_AWS_REGION, or AWS_REGION")]
    NoRegion,
}

/// The AWS clients of one worker, built once at start-up.
#[derive(Clone)]
pub struct AwsContext {
    pub ecs: AwsEcs,
    pub cloudwatch: AwsCloudWatch,
    pub autoscaling: AwsAutoScaling,
    pub app_autoscaling: AwsAppAutoScaling,
    /// For the worker's shared state and leader lease.
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub region: String,
    pub meter: ApiMeter,
    /// The credential chain's provider (also signs Amazon Managed Prometheus queries).
    pub credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    /// ECS's reads' share of the account's bucket (`aws.budget.ecs_reads`), when paced.
    pub ecs_reads: Option<Arc<budget::Budget>>,
    /// SQS, for the queue of ECS's events (its attempts may wait out a long poll).
    sqs: aws_sdk_sqs::Client,
    calls: CallSettings,
    sqs_endpoint: String,
    /// What the clients were built from (for [`AwsContext::place`]).
    sdk: aws_config::SdkConfig,
    settings: AwsSettings,
}

impl fmt::Debug for AwsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsContext")
            .field("region", &self.region)
            .field("ecs", &self.ecs.endpoint())
            .field("cloudwatch", &self.cloudwatch.endpoint())
            .finish()
    }
}

/// The SDK's shared config: the retries, timeouts, region, profile and endpoint of `settings`.
async fn sdk_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    let retry = match settings.retry.mode {
        RetryMode::Standard => RetryConfig::standard(),
        RetryMode::Adaptive => RetryConfig::adaptive(),
    }
    .with_max_attempts(settings.retry.max_attempts)
    .with_initial_backoff(settings.retry.initial_backoff)
    .with_max_backoff(settings.retry.max_backoff);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.timeouts.connect)
        .operation_attempt_timeout(settings.timeouts.attempt)
        .operation_timeout(settings.timeouts.operation)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// SSM Parameter Store at `settings`' region and endpoint, signing with the credential chain,
/// before any config is read (`ecscale run --from-ssm`).
pub async fn parameter_store(settings: &AwsSettings, meter: ApiMeter) -> Result<ssm::ParameterStore, String> {
    let sdk = sdk_config(settings).await;
    let region = sdk.region().ok_or(Error::NoRegion.to_string())?.to_string();
    let provider = sdk
        .credentials_provider()
        .ok_or("no AWS credential chain to read SSM with")?;
    let endpoint = settings
        .endpoint_url
        .clone()
        .unwrap_or_else(|| format!("https://ssm.{region}.amazonaws.com"));
    ssm::ParameterStore::new(endpoint, Signer { provider, region }, meter)
}

/// The SQS client's time limits: a long poll waits up to 20 s before its answer, on top of
/// the usual limits.
fn long_poll_timeouts(t: &crate::config::TimeoutSettings) -> TimeoutConfig {
    let poll = std::time::Duration::from_secs(20);
    TimeoutConfig::builder()
        .connect_timeout(t.connect)
        .operation_attempt_timeout(t.attempt + poll)
        .operation_timeout(t.operation + poll)
        .build()
}

impl AwsContext {
    /// Builds the clients. Nothing is sent yet: credentials are resolved on the first call.
    pub async fn connect(settings: &AwsSettings, meter: ApiMeter) -> Result<Self, Error> {
        let sdk = sdk_config(settings).await;
        Self::from_sdk(sdk, settings, meter)
    }

    /// The clients of another place, sharing this context's meter and settings: `region` (else
    /// this one's), with the credentials of `role` assumed through STS from this context's own
    /// (cached, and renewed before they expire), else this context's.
    pub async fn place(&self, region: Option<&str>, role: Option<&str>) -> Result<Self, Error> {
        let mut b = self.sdk.to_builder();
        if let Some(r) = region {
            b.set_region(Some(Region::new(r.to_string())));
        }
        if let Some(role) = role {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("ecscale")
                .configure(&self.sdk)
                .build()
                .await;
            b.set_credentials_provider(Some(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            ));
        }
        Self::from_sdk(b.build(), &self.settings, self.meter.clone())
    }

    fn from_sdk(sdk: aws_config::SdkConfig, settings: &AwsSettings, meter: ApiMeter) -> Result<Self, Error> {
        let region = sdk.region().ok_or(Error::NoRegion)?.to_string();
        let endpoint = |service: &str| {
            settings
                .endpoint_url
                .clone()
                .unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"))
        };
        let silences = silence::Silences::new(settings.timeouts.operation);
        let calls = CallSettings {
            max_attempts: settings.retry.max_attempts,
            silences: silences.clone(),
        };
        let interceptor = meter::MeterInterceptor::new(meter.clone());
        let ecs_client = aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::config::Builder::from(&sdk)
                .interceptor(interceptor.clone())
                .interceptor(silences.guard(endpoint("ecs")))
                .build(),
        );
        let cw_client = aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&sdk)
                .interceptor(interceptor.clone())
                .interceptor(silences.guard(endpoint("monitoring")))
                .build(),
        );
        let autoscaling = AwsAutoScaling {
            client: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .interceptor(silences.guard(endpoint("autoscaling")))
                    .build(),
            ),
            endpoint: endpoint("autoscaling"),
            calls: calls.clone(),
        };
        let app_autoscaling = AwsAppAutoScaling {
            client: aws_sdk_applicationautoscaling::Client::from_conf(
                aws_sdk_applicationautoscaling::config::Builder::from(&sdk)
                    .interceptor(interceptor.clone())
                    .interceptor(silences.guard(endpoint("application-autoscaling")))
                    .build(),
            ),
            endpoint: endpoint("application-autoscaling"),
            calls: calls.clone(),
        };
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(interceptor.clone())
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk)
                .timeout_config(long_poll_timeouts(&settings.timeouts))
                .interceptor(interceptor)
                .interceptor(silences.guard(endpoint("sqs")))
                .build(),
        );
        Ok(AwsContext {
            ecs: AwsEcs::new(ecs_client, endpoint("ecs"), calls.clone()),
            cloudwatch: AwsCloudWatch::new(cw_client, endpoint("monitoring"), calls.clone()),
            sqs,
            sqs_endpoint: endpoint("sqs"),
            calls,
            autoscaling,
            app_autoscaling,
            dynamodb,
            credentials: sdk.credentials_provider(),
            ecs_reads: settings.budget.ecs_reads.map(|share| {
                Arc::new(budget::Budget::share(
                    share,
                    crate::config::BudgetSettings::ECS_READS,
                ))
            }),
            region,
            meter,
            sdk,
            settings: settings.clone(),
        })
    }

    /// The queue at `url`, through this context's SQS client.
    pub fn queue(&self, url: &str) -> AwsQueue {
        AwsQueue::new(
            self.sqs.clone(),
            url.to_string(),
            self.sqs_endpoint.clone(),
            self.calls.clone(),
        )
    }

    /// What signs SigV4 requests (Amazon Managed Prometheus) with this context's credentials.
    pub fn signer(&self) -> Option<Signer> {
        self.credentials.clone().map(|provider| Signer {
            provider,
            region: self.region.clone(),
        })
    }
}

/// What error messages need to know about the call policy, and the endpoints gone silent.
#[derive(Debug, Clone)]
struct CallSettings {
    max_attempts: u32,
    silences: silence::Silences,
}

/// Classifies an AWS error code.
fn kind_of_code(code: &str) -> ErrorKind {
    const THROTTLED: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
    ];
    const DENIED: &[&str] = &[
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "IncompleteSignature",
    ];
    if THROTTLED.contains(&code) {
        ErrorKind::Throttled
    } else if DENIED.contains(&code) {
        ErrorKind::AccessDenied
    } else if code.ends_with("NotFoundException") || code == "ResourceNotFound" {
        ErrorKind::NotFound
    } else {
        ErrorKind::Other
    }
}

/// Turns an SDK error into an [`ApiError`] that names the operation, the resource and the
/// endpoint, and says when the retries were used up.
fn api_error<E>(
    err: SdkError<E, HttpResponse>,
    operation: &str,
    resource: String,
    endpoint: &str,
    calls: &CallSettings,
) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let attempts = calls.max_attempts;
    let (kind, code, message) = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().map(str::to_string);
            let kind = code.as_deref().map_or(ErrorKind::Other, kind_of_code);
            let mut message = e
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {}", se.raw().status()));
            if kind == ErrorKind::Throttled {
                message = format!("{message} (still throttled after {attempts} attempts)");
            }
            (kind, code, message)
        }
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
            if d.is_timeout() {
                calls.silences.mark(endpoint, operation);
            }
            let text = error_chain(&err);
            (
                ErrorKind::Unreachable,
                None,
                format!("no answer after {attempts} attempts: {text}"),
            )
        }
        SdkError::TimeoutError(_) => {
            calls.silences.mark(endpoint, operation);
            let text = error_chain(&err);
            (
                ErrorKind::Unreachable,
                None,
                format!("timed out (see aws.timeouts): {text}"),
            )
        }
        _ if silence::not_tried(&err).is_some() => {
            let text = silence::not_tried(&err)
                .map(ToString::to_string)
                .unwrap_or_default();
            (ErrorKind::Unreachable, None, text)
        }
        _ => {
            let text = error_chain(&err);
            if text.contains("credentials") {
                let hint = "no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                    or AWS_PROFILE / aws.profile, or run with a task or instance role";
                (ErrorKind::AccessDenied, None, format!("{hint} ({text})"))
            } else {
                (ErrorKind::Other, None, text)
            }
        }
    };
    ApiError {
        operation: operation.to_string(),
        resource,
        endpoint: endpoint.to_string(),
        kind,
        code,
        message,
    }
}

/// chrono → smithy time.
fn to_smithy(t: chrono::DateTime<chrono::Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs_and_nanos(t.timestamp(), t.timestamp_subsec_nanos())
}

/// smithy → chrono time (None outside chrono's range, which AWS never sends).
fn from_smithy(t: &aws_smithy_types::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        assert_eq!(kind_of_code("ThrottlingException"), ErrorKind::Throttled);
        assert_eq!(kind_of_code("Throttling"), ErrorKind::Throttled);
        assert_eq!(kind_of_code("AccessDeniedException"), ErrorKind::AccessDenied);
        assert_eq!(kind_of_code("ClusterNotFoundException"), ErrorKind::NotFound);
        assert_eq!(kind_of_code("ServerException"), ErrorKind::Other);
    }

    #[test]
    fn times_round_trip() {
        let t = chrono::DateTime::from_timestamp(1_700_000_123, 456_000_000).unwrap();
        assert_eq!(from_smithy(&to_smithy(t)), Some(t));
    }
}
