//! [`CloudWatchApi`] over `aws-sdk-cloudwatch` (pinned to 1.99.0, the last release that speaks
//! the AWS Query protocol; see Cargo.toml).

use async_trait::async_trait;
use aws_sdk_cloudwatch::types as cw;

use super::{api_error, from_smithy, to_smithy, CallSettings};
use crate::api::{ApiError, CloudWatchApi, MetricDataPage, MetricDataRequest, MetricDataResult, MetricQuery};

/// The CloudWatch client of a worker.
#[derive(Clone, Debug)]
pub struct AwsCloudWatch {
    client: aws_sdk_cloudwatch::Client,
    endpoint: String,
    calls: CallSettings,
}

impl AwsCloudWatch {
    pub(super) fn new(client: aws_sdk_cloudwatch::Client, endpoint: String, calls: CallSettings) -> Self {
        AwsCloudWatch {
            client,
            endpoint,
            calls,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The SDK client, for the calls the traits do not cover yet.
    pub fn client(&self) -> &aws_sdk_cloudwatch::Client {
        &self.client
    }
}

fn query(q: &MetricQuery) -> cw::MetricDataQuery {
    let metric = cw::Metric::builder()
        .namespace(&q.namespace)
        .metric_name(&q.metric_name)
        .set_dimensions(Some(
            q.dimensions
                .iter()
                .map(|(name, value)| cw::Dimension::builder().name(name).value(value).build())
                .collect(),
        ))
        .build();
    cw::MetricDataQuery::builder()
        .id(&q.id)
        .metric_stat(
            cw::MetricStat::builder()
                .metric(metric)
                .period(i32::try_from(q.period_secs).unwrap_or(i32::MAX))
                .stat(&q.stat)
                .set_unit(q.unit.as_deref().map(cw::StandardUnit::from))
                .build(),
        )
        .return_data(true)
        .build()
}

fn messages(m: &[cw::MessageData]) -> Vec<String> {
    m.iter()
        .map(|m| {
            format!(
                "{}: {}",
                m.code().unwrap_or("message"),
                m.value().unwrap_or_default()
            )
        })
        .collect()
}

#[async_trait]
impl CloudWatchApi for AwsCloudWatch {
    async fn get_metric_data(
        &self,
        request: &MetricDataRequest,
        next_token: Option<String>,
    ) -> Result<MetricDataPage, ApiError> {
        let out = self
            .client
            .get_metric_data()
            .set_metric_data_queries(Some(request.queries.iter().map(query).collect()))
            .start_time(to_smithy(request.start))
            .end_time(to_smithy(request.end))
            .scan_by(cw::ScanBy::TimestampAscending)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| {
                let resource = format!(
                    "{} metric queries, {} to {}",
                    request.queries.len(),
                    request.start.format("%H:%M:%S"),
                    request.end.format("%H:%M:%S")
                );
                api_error(
                    e,
                    "CloudWatch.GetMetricData",
                    resource,
                    &self.endpoint,
                    &self.calls,
                )
            })?;
        let results = out
            .metric_data_results()
            .iter()
            .map(|r| MetricDataResult {
                id: r.id().unwrap_or_default().to_string(),
                status: r.status_code().map_or("Complete", |s| s.as_str()).to_string(),
                points: r
                    .timestamps()
                    .iter()
                    .zip(r.values())
                    .filter_map(|(t, v)| Some((from_smithy(t)?, *v)))
                    .collect(),
                messages: messages(r.messages()),
            })
            .collect();
        Ok(MetricDataPage {
            results,
            next_token: out.next_token().map(str::to_string),
            messages: messages(out.messages()),
        })
    }
}
