//! [`QueueApi`] over `aws-sdk-sqs`: the queue of ECS's events a worker long-polls.

use std::time::Duration;

use async_trait::async_trait;

use super::{api_error, CallSettings};
use crate::api::{ApiError, QueueApi, QueuedMessage, QUEUE_BATCH};

/// One queue, by its URL.
#[derive(Clone, Debug)]
pub struct AwsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    endpoint: String,
    calls: CallSettings,
}

impl AwsQueue {
    pub(super) fn new(
        client: aws_sdk_sqs::Client,
        queue_url: String,
        endpoint: String,
        calls: CallSettings,
    ) -> Self {
        AwsQueue {
            client,
            queue_url,
            endpoint,
            calls,
        }
    }

    fn err<E>(
        &self,
        e: aws_sdk_sqs::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
        operation: &str,
    ) -> ApiError
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let resource = format!("queue {}", self.queue_url);
        api_error(e, operation, resource, &self.endpoint, &self.calls)
    }
}

#[async_trait]
impl QueueApi for AwsQueue {
    async fn receive(&self, wait: Duration) -> Result<Vec<QueuedMessage>, ApiError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(QUEUE_BATCH as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .send()
            .await
            .map_err(|e| self.err(e, "SQS.ReceiveMessage"))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(QueuedMessage {
                    body: m.body.unwrap_or_default(),
                    receipt: m.receipt_handle?,
                })
            })
            .collect())
    }

    async fn delete(&self, receipts: &[String]) -> Result<Vec<(String, String)>, ApiError> {
        let entries = receipts
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .ok()
            })
            .collect();
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.err(e, "SQS.DeleteMessageBatch"))?;
        Ok(out
            .failed
            .into_iter()
            .map(|f| {
                let receipt = f.id.parse::<usize>().ok().and_then(|i| receipts.get(i));
                let why = f.message.unwrap_or(f.code);
                (receipt.cloned().unwrap_or(f.id), why)
            })
            .collect())
    }
}
