//! A gate in front of the real Elasticsearch/OpenSearch node, on a free loopback port: it
//! forwards every request, or answers in its place as a fault would (a 401 on `_bulk`, a node
//! that is down), counting what it refused.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// What the gate does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwarded to the node.
    Open,
    /// `_bulk` requests answered with this status (auth refused, ...); the rest forwarded.
    RefuseBulk(u16),
    /// Every request answered 503, as a node that is down behind a load balancer.
    Down,
    /// A node under load: each `_bulk` is held this many milliseconds per document it carries
    /// before it is forwarded (so a bulk the client gave up on is still indexed, late).
    SlowBulk { per_doc_ms: u64 },
}

pub struct Gate {
    pub url: String,
    mode: Arc<Mutex<Mode>>,
    /// Requests answered by the gate instead of the node, or held back by it.
    refused: Arc<AtomicU64>,
}

impl Gate {
    pub async fn start(upstream: &str, mode: Mode) -> Gate {
        let mode = Arc::new(Mutex::new(mode));
        let refused = Arc::new(AtomicU64::new(0));
        let (m, r, up) = (
            mode.clone(),
            refused.clone(),
            upstream.trim_end_matches('/').to_string(),
        );
        let client = reqwest::Client::new();
        let addr =
            super::serve(move |req| forward(req, m.clone(), r.clone(), up.clone(), client.clone())).await;
        let url = format!("http://{addr}");
        Gate { url, mode, refused }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

async fn forward(
    req: hyper::Request<hyper::body::Incoming>,
    mode: Arc<Mutex<Mode>>,
    refused: Arc<AtomicU64>,
    upstream: String,
    client: reqwest::Client,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let answer = |status: u16, body: &str| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    // The whole request is read first, refused or not: answering before the body is read
    // makes the client see a broken pipe instead of the status (a race, not the fault meant).
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let m = *mode.lock().unwrap();
    match m {
        Mode::RefuseBulk(status) if path.starts_with("/_bulk") => {
            refused.fetch_add(1, Ordering::Relaxed);
            return Ok(answer(
                status,
                r#"{"error":{"type":"security_exception","reason":"refused by the gate"},"status":401}"#,
            ));
        }
        Mode::Down => {
            refused.fetch_add(1, Ordering::Relaxed);
            return Ok(answer(503, r#"{"error":"the node is down"}"#));
        }
        Mode::SlowBulk { per_doc_ms } if path.starts_with("/_bulk") => {
            refused.fetch_add(1, Ordering::Relaxed);
            let docs = body.iter().filter(|b| **b == b'\n').count() as u64 / 2;
            tokio::time::sleep(std::time::Duration::from_millis(docs * per_doc_ms)).await;
        }
        _ => {}
    }
    let resp = client
        .request(method, format!("{upstream}{path}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await;
    Ok(match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let bytes = r.bytes().await.unwrap_or_default();
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(bytes))
                .unwrap()
        }
        Err(e) => answer(502, &format!("{{\"error\":\"{e}\"}}")),
    })
}
