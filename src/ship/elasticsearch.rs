//! Talking to Elasticsearch/OpenSearch: the client (auth, TLS), bulk requests with per-item
//! handling, and dead letters.
//!
//! A bulk answer is read item by item: 2xx is delivered; 429 and 5xx are retried (with
//! backoff, only those items), and so is an item refused because the index cannot take writes
//! now (a write or read-only block, a closed index, an index that may not be created): that is
//! the cluster's state, not the document's; any other 4xx (a mapping or parse error) goes, with its reason,
//! to the `PREFIX-deadletter-*` index, or to `deadletter.ndjson` in the spool when even that
//! fails (see [`super::sender`] for whole requests refused). Every document ends up counted in
//! exactly one of: sent, dead-lettered, dropped.

use std::time::Duration;

use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde::Deserialize;
use serde_json::{json, Value};

use super::docs::Stream;
use crate::config::ElasticsearchSettings;

/// An Elasticsearch failure, naming the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    #[error("Elasticsearch at {url}: {message}")]
    Request { url: String, message: String },
    #[error("Elasticsearch at {url}: {method} {path} answered HTTP {status}: {body}")]
    Status {
        url: String,
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    /// No whole answer within the request timeout: a slow node (or a bulk too big for it).
    #[error("Elasticsearch at {url}: no answer within {}", humantime::format_duration(*after))]
    Timeout { url: String, after: Duration },
    #[error("Elasticsearch settings: {0}")]
    Settings(String),
}

impl EsError {
    /// Whether waiting and trying again may help (unreachable, overloaded, 5xx, 429).
    pub fn retryable(&self) -> bool {
        match self {
            EsError::Request { .. } | EsError::Timeout { .. } => true,
            EsError::Status { status, .. } => *status == 429 || *status >= 500,
            EsError::Settings(_) => false,
        }
    }
}

/// A connection to one Elasticsearch/OpenSearch endpoint. Credentials come from the
/// environment variables the config names; they are never printed.
#[derive(Clone)]
pub struct Es {
    client: Elasticsearch,
    /// The URL, for messages (it carries no credentials: the config gives them separately).
    pub url: String,
    timeout: Duration,
    /// Secrets (and their encodings) blanked out of every message, should a server echo them.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Es {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Es")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn secret(var: &str, field: &str) -> Result<String, EsError> {
    crate::config::env::secret(var, &format!("sink.elasticsearch.{field}")).map_err(EsError::Settings)
}

impl Es {
    /// Builds the client; nothing is sent yet.
    pub fn connect(s: &ElasticsearchSettings, timeout: Duration) -> Result<Es, EsError> {
        let url = url::Url::parse(&s.url)
            .map_err(|e| EsError::Settings(format!("`{}` is not a URL: {e}", s.url)))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EsError::Settings(
                "put credentials in username/password_env or api_key_env, not in the URL".into(),
            ));
        }
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(timeout);
        let mut secrets = Vec::new();
        if let (Some(user), Some(var)) = (&s.username, &s.password_env) {
            let password = secret(var, "password_env")?;
            secrets.push(base64_encode(format!("{user}:{password}").as_bytes()));
            secrets.push(password.clone());
            builder = builder.auth(Credentials::Basic(user.clone(), password));
        }
        if let Some(var) = &s.api_key_env {
            let key = secret(var, "api_key_env")?;
            secrets.push(key.clone());
            builder = builder.auth(Credentials::EncodedApiKey(key));
        }
        secrets.retain(|s| s.len() >= 4);
        if let Some(ca) = &s.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                EsError::Settings(format!(
                    "cannot read sink.elasticsearch.ca_file {}: {e}",
                    ca.display()
                ))
            })?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| EsError::Settings(format!("{} is not a PEM certificate: {e}", ca.display())))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder
            .build()
            .map_err(|e| EsError::Settings(format!("cannot build the Elasticsearch client: {e}")))?;
        Ok(Es {
            client: Elasticsearch::new(transport),
            url: s.url.trim_end_matches('/').to_string(),
            timeout,
            secrets,
        })
    }

    /// `text` with every secret replaced by `***`.
    fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
    }

    fn request_error(&self, e: impl std::fmt::Display) -> EsError {
        EsError::Request {
            url: self.url.clone(),
            message: self.redact(&e.to_string()),
        }
    }

    /// The client's error: a timeout of its own kind, else unreachable with its causes.
    fn client_error(&self, e: &elasticsearch::Error) -> EsError {
        if e.is_timeout() {
            EsError::Timeout {
                url: self.url.clone(),
                after: self.timeout,
            }
        } else {
            self.request_error(crate::aws::error_chain(e))
        }
    }

    /// Sends a request; returns the status and body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), EsError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let resp = self
            .client
            .send(method, path, headers, None::<&()>, body, Some(self.timeout))
            .await
            .map_err(|e| self.client_error(&e))?;
        let status = resp.status_code().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.client_error(&e))?;
        Ok((status, bytes))
    }

    /// A JSON request that must succeed; returns the answer.
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, EsError> {
        let name = match method {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            _ => "HEAD",
        };
        let body = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        let (status, bytes) = self.raw(method, path, "application/json", body).await?;
        if !(200..300).contains(&status) {
            return Err(EsError::Status {
                url: self.url.clone(),
                method: name,
                path: path.to_string(),
                status,
                body: self.redact(&String::from_utf8_lossy(&bytes[..bytes.len().min(500)])),
            });
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Sends a bulk body; an error when the request as a whole failed.
    pub async fn bulk(&self, body: Bytes) -> Result<Bytes, EsError> {
        let (status, bytes) = self
            .raw(Method::Post, "/_bulk", "application/x-ndjson", Some(body))
            .await?;
        if status == 200 {
            Ok(bytes)
        } else {
            Err(EsError::Status {
                url: self.url.clone(),
                method: "POST",
                path: "/_bulk".into(),
                status,
                body: self.redact(&String::from_utf8_lossy(&bytes[..bytes.len().min(300)])),
            })
        }
    }
}

/// Standard base64 (for recognizing a basic-auth header echoed back).
fn base64_encode(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct BulkHead {
    errors: bool,
}

#[derive(Deserialize)]
struct BulkItems {
    items: Vec<std::collections::HashMap<String, ItemResult>>,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// A refused document.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub action: Bytes,
    pub source: Bytes,
    pub status: u16,
    pub error: Value,
}

/// What one bulk answer said about a body's documents.
#[derive(Debug, Default)]
pub struct Outcome {
    pub delivered: u64,
    /// To send again (429, 5xx, the index not writable now): the bulk lines.
    pub retry: Vec<u8>,
    pub retry_docs: u64,
    /// Why the first of them was not taken.
    pub retry_why: Option<NotTaken>,
    pub refused: Vec<Refused>,
}

/// Why Elasticsearch did not take a document this time, for the counts and `/healthz`.
#[derive(Debug, Clone, PartialEq)]
pub struct NotTaken {
    /// `blocked` (the index cannot take writes now), `throttled` (429) or `server` (5xx).
    pub kind: &'static str,
    /// `STATUS type: reason`, as Elasticsearch said it.
    pub said: String,
}

/// Item errors that say the index cannot take writes now, not that the document is wrong: a
/// block (`index.blocks.write`, read-only, the flood-stage watermark), a closed index, or one
/// that may not be created (`action.auto_create_index`). Retried until it can.
const NOT_WRITABLE: [&str; 3] = [
    "cluster_block_exception",
    "index_closed_exception",
    "index_not_found_exception",
];

fn not_taken(status: u16, error: Option<&Value>) -> Option<NotTaken> {
    let kind = error.and_then(|e| e["type"].as_str()).unwrap_or("");
    let kind = if NOT_WRITABLE.contains(&kind) {
        "blocked"
    } else if status == 429 {
        "throttled"
    } else if status >= 500 {
        "server"
    } else {
        return None;
    };
    let said = match error {
        Some(e) => format!(
            "{status} {}: {}",
            e["type"].as_str().unwrap_or("?"),
            e["reason"].as_str().unwrap_or("no reason given")
        ),
        None => format!("{status}"),
    };
    Some(NotTaken { kind, said })
}

/// The (action, source) line pairs of a bulk body.
pub fn pairs(body: &[u8]) -> Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut pending: Option<std::ops::Range<usize>> = None;
    for i in memchr::memchr_iter(b'\n', body) {
        let line = start..i;
        start = i + 1;
        match pending.take() {
            None => pending = Some(line),
            Some(action) => out.push((action, line)),
        }
    }
    out
}

/// Reads a bulk answer for `body`.
pub fn read_answer(body: &Bytes, answer: &[u8]) -> Result<Outcome, String> {
    // Elasticsearch and OpenSearch write `errors` right after `took`: when the start says
    // false, the hundreds of kilobytes of items need not be read.
    let start = &answer[..answer.len().min(64)];
    let clean = start.windows(15).any(|w| w == b"\"errors\":false") || {
        let head: BulkHead = serde_json::from_slice(answer).map_err(|e| format!("not a bulk answer: {e}"))?;
        !head.errors
    };
    if clean {
        return Ok(Outcome {
            delivered: super::spool::count_docs(body),
            ..Outcome::default()
        });
    }
    let docs = pairs(body);
    let items: BulkItems = serde_json::from_slice(answer).map_err(|e| format!("not a bulk answer: {e}"))?;
    if items.items.len() != docs.len() {
        return Err(format!(
            "{} items answered for {} documents",
            items.items.len(),
            docs.len()
        ));
    }
    let mut out = Outcome::default();
    for (item, (action, source)) in items.items.iter().zip(docs) {
        let Some(r) = item.values().next() else {
            return Err("an empty bulk item".into());
        };
        if (200..300).contains(&r.status) {
            out.delivered += 1;
            continue;
        }
        match not_taken(r.status, r.error.as_ref()) {
            Some(why) => {
                out.retry.extend_from_slice(&body[action.start..=action.end]);
                out.retry.extend_from_slice(&body[source.start..=source.end]);
                out.retry_docs += 1;
                out.retry_why.get_or_insert(why);
            }
            None => out.refused.push(Refused {
                action: body.slice(action),
                source: body.slice(source),
                status: r.status,
                error: r.error.clone().unwrap_or(Value::Null),
            }),
        }
    }
    Ok(out)
}

/// The dead-letter documents for refused ones (deterministic ids: a refused retry is one letter).
pub fn dead_letters(refused: &[Refused], prefix: &str, now: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in refused {
        let action: Value = serde_json::from_slice(&r.action).unwrap_or(Value::Null);
        let meta = action
            .as_object()
            .and_then(|m| m.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        let index = meta["_index"].as_str().unwrap_or("?").to_string();
        let id = meta["_id"].as_str().unwrap_or("?").to_string();
        let letter = json!({
            "@timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "index": index,
            "id": id,
            "status": r.status,
            "error_type": r.error["type"],
            "error_reason": r.error["reason"],
            "error": r.error.to_string(),
            "document": String::from_utf8_lossy(&r.source),
        });
        let action = json!({"index": {"_index": Stream::DeadLetter.index(prefix, now), "_id": format!("dead:{index}:{id}")}});
        let _ = serde_json::to_writer(&mut out, &action);
        out.push(b'\n');
        let _ = serde_json::to_writer(&mut out, &letter);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_standard() {
        assert_eq!(base64_encode(b"user:s3cret"), "dXNlcjpzM2NyZXQ=");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_encode(b"abc"), "YWJj");
    }

    #[test]
    fn answers_are_read_item_by_item() {
        let body = Bytes::from_static(
            b"{\"index\":{\"_index\":\"m\",\"_id\":\"1\"}}\n{\"v\":1}\n{\"index\":{\"_index\":\"m\",\"_id\":\"2\"}}\n{\"v\":\"x\"}\n{\"index\":{\"_index\":\"m\",\"_id\":\"3\"}}\n{\"v\":3}\n",
        );
        let answer = br#"{"took":1,"errors":true,"items":[
            {"index":{"_id":"1","status":201}},
            {"index":{"_id":"2","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [v]"}}},
            {"index":{"_id":"3","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}]}"#;
        let o = read_answer(&body, answer).unwrap();
        assert_eq!(o.delivered, 1);
        assert_eq!(o.retry_docs, 1);
        assert_eq!(
            o.retry,
            b"{\"index\":{\"_index\":\"m\",\"_id\":\"3\"}}\n{\"v\":3}\n"
        );
        assert_eq!(o.refused.len(), 1);
        assert_eq!(o.refused[0].status, 400);
        assert_eq!(&o.refused[0].source[..], b"{\"v\":\"x\"}");
        let letters = dead_letters(
            &o.refused,
            "ecscale",
            chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap(),
        );
        let lines: Vec<Value> = letters
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines[0]["index"]["_id"], "dead:m:2");
        assert_eq!(lines[0]["index"]["_index"], "ecscale-deadletter-2025.11.24");
        assert_eq!(lines[1]["error_type"], "mapper_parsing_exception");
        assert_eq!(lines[1]["document"], "{\"v\":\"x\"}");

        let ok = read_answer(&body, br#"{"took":1,"errors":false,"items":[]}"#).unwrap();
        assert_eq!((ok.delivered, ok.retry_docs, ok.refused.len()), (3, 0, 0));
        assert!(read_answer(&body, b"<html>").is_err());
    }

    #[test]
    fn an_index_that_cannot_take_writes_now_is_retried_never_dead_lettered() {
        let body = Bytes::from_static(
            b"{\"index\":{\"_index\":\"m\",\"_id\":\"1\"}}\n{\"v\":1}\n{\"index\":{\"_index\":\"n\",\"_id\":\"2\"}}\n{\"v\":2}\n{\"index\":{\"_index\":\"o\",\"_id\":\"3\"}}\n{\"v\":3}\n",
        );
        // As OpenSearch 2 answers a write block, a closed index and auto-create turned off.
        let answer = br#"{"took":1,"errors":true,"items":[
            {"index":{"_index":"m","_id":"1","status":403,"error":{"type":"cluster_block_exception","reason":"index [m] blocked by: [FORBIDDEN/8/index write (api)];"}}},
            {"index":{"_index":"n","_id":"2","status":400,"error":{"type":"index_closed_exception","reason":"closed","index":"n"}}},
            {"index":{"_index":"o","_id":"3","status":404,"error":{"type":"index_not_found_exception","reason":"no such index [o] and [action.auto_create_index] is [false]"}}}]}"#;
        let o = read_answer(&body, answer).unwrap();
        assert_eq!((o.delivered, o.retry_docs, o.refused.len()), (0, 3, 0));
        assert_eq!(&o.retry[..], &body[..], "all three, as they were");
        assert_eq!(
            o.retry_why,
            Some(NotTaken {
                kind: "blocked",
                said: "403 cluster_block_exception: index [m] blocked by: [FORBIDDEN/8/index write (api)];"
                    .into()
            })
        );
        let throttled = br#"{"took":1,"errors":true,"items":[{"index":{"status":201}},{"index":{"status":201}},
            {"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}]}"#;
        let o = read_answer(&body, throttled).unwrap();
        assert_eq!(o.retry_why.map(|w| w.kind), Some("throttled"));
    }
}
