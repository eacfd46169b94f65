//! An HTTP proxy in front of moto that sees every AWS request on the wire: it counts and
//! timestamps them per operation (independently of ecscale's own counters) and can answer a
//! chosen operation with an error (throttling, access denied, ...) a number of times before
//! letting it through. It can also shorten the life of the credentials STS's AssumeRole hands
//! out, and records which access key signed each request.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;

#[derive(Default)]
struct State {
    /// Requests seen, by `Service.Operation`.
    seen: BTreeMap<String, usize>,
    /// Every request, in order, with when it arrived.
    log: Vec<(String, Instant)>,
    /// Error answers still to give, by `Service.Operation`: (times, error code).
    fail: HashMap<String, (u32, String)>,
    /// Every request's body, by `Service.Operation`.
    bodies: BTreeMap<String, Vec<String>>,
    /// AssumeRole's credentials are said to expire this long after they are handed out.
    expire_in: Option<std::time::Duration>,
    /// Access keys AssumeRole handed out, with the expiry it said.
    issued: Vec<(String, std::time::SystemTime)>,
    /// Every request: its operation, the access key that signed it, when it arrived.
    signed: Vec<(String, String, std::time::SystemTime)>,
}

pub struct Proxy {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free loopback port; it lives as long as the runtime.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let state = Arc::new(Mutex::new(State::default()));
        let client = reqwest::Client::new();
        let upstream = upstream.trim_end_matches('/').to_string();
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, state.clone(), client.clone(), upstream.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy { url, state }
    }

    /// Answers the next `times` requests of `operation` (`ECS.DescribeServices`) with a
    /// throttling error.
    pub fn throttle(&self, operation: &str, times: u32) {
        self.fail(operation, times, "Throttling");
    }

    /// Answers the next `times` requests of `operation` with error `code` (`Throttling`,
    /// `AccessDenied`, ...).
    pub fn fail(&self, operation: &str, times: u32, code: &str) {
        self.state
            .lock()
            .unwrap()
            .fail
            .insert(operation.to_string(), (times, code.to_string()));
    }

    /// When each request of `operation` arrived.
    pub fn times(&self, operation: &str) -> Vec<Instant> {
        let s = self.state.lock().unwrap();
        s.log
            .iter()
            .filter(|(op, _)| op == operation)
            .map(|(_, t)| *t)
            .collect()
    }

    /// The bodies of the requests of `operation`, in order.
    pub fn bodies(&self, operation: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .bodies
            .get(operation)
            .cloned()
            .unwrap_or_default()
    }

    /// From now on, AssumeRole's answers say their credentials expire `after` from when they
    /// are handed out (moto says an hour).
    pub fn expire_assumed_credentials(&self, after: std::time::Duration) {
        self.state.lock().unwrap().expire_in = Some(after);
    }

    /// The access keys AssumeRole handed out, with their expiry, in order.
    pub fn issued(&self) -> Vec<(String, std::time::SystemTime)> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Every request: its operation, the access key that signed it, when it arrived.
    pub fn signed(&self) -> Vec<(String, String, std::time::SystemTime)> {
        self.state.lock().unwrap().signed.clone()
    }

    /// Requests seen per operation, throttled ones included.
    pub fn seen(&self) -> BTreeMap<String, usize> {
        self.state.lock().unwrap().seen.clone()
    }
}

/// `ECS.DescribeServices` from the SigV4 credential scope and the target header or Action field.
fn operation(req: &hyper::http::request::Parts, body: &[u8]) -> String {
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let scope = header("authorization")
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("unknown");
    let service = match scope {
        "ecs" => "ECS",
        "monitoring" => "CloudWatch",
        "ec2" => "EC2",
        "autoscaling" => "AutoScaling",
        "application-autoscaling" => "ApplicationAutoScaling",
        "dynamodb" => "DynamoDB",
        other => other,
    };
    let op = match header("x-amz-target").rsplit('.').next() {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => String::from_utf8_lossy(body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .unwrap_or("unknown")
            .to_string(),
    };
    format!("{service}.{op}")
}

/// An AWS error answer: JSON protocols get `{Code}Exception`, the Query protocol `Code`.
fn error_answer(service_is_json: bool, code: &str) -> Response<Full<Bytes>> {
    let (status, message) = match code {
        "AccessDenied" => (403, "User is not authorized to perform this action"),
        "Throttling" => (400, "Rate exceeded"),
        _ => (400, "injected by the test proxy"),
    };
    let (ctype, body) = if service_is_json {
        (
            "application/x-amz-json-1.1",
            format!(r#"{{"__type":"{code}Exception","message":"{message}"}}"#),
        )
    } else {
        (
            "text/xml",
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy</RequestId></ErrorResponse>"),
        )
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let op = operation(&parts, &body);
    let fail = {
        let mut s = state.lock().unwrap();
        *s.seen.entry(op.clone()).or_default() += 1;
        s.log.push((op.clone(), Instant::now()));
        let text = String::from_utf8_lossy(&body).into_owned();
        s.bodies.entry(op.clone()).or_default().push(text);
        let key = access_key(&parts);
        s.signed.push((op.clone(), key, std::time::SystemTime::now()));
        match s.fail.get_mut(&op) {
            Some((n, code)) if *n > 0 => {
                *n -= 1;
                Some(code.clone())
            }
            _ => None,
        }
    };
    if let Some(code) = fail {
        return Ok(error_answer(parts.headers.contains_key("x-amz-target"), &code));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = client.request(parts.method.clone(), format!("{upstream}{path}"));
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            forward = forward.header(k, v);
        }
    }
    let answer = match forward.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("proxy: upstream failed: {e}"))))
                .expect("valid response"))
        }
    };
    let mut out = Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        if !matches!(k.as_str(), "content-length" | "connection" | "transfer-encoding") {
            out = out.header(k, v);
        }
    }
    let mut bytes = answer.bytes().await.unwrap_or_default();
    if op == "sts.AssumeRole" {
        bytes = shorten(&state, bytes);
    }
    Ok(out.body(Full::new(bytes)).expect("valid response"))
}

/// The access key id of a SigV4 `authorization` header (`Credential=AKID/…`).
fn access_key(req: &hyper::http::request::Parts) -> String {
    req.headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_string()
}

/// The text between `<tag>` and `</tag>`.
fn between<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + text[start..].find(&format!("</{tag}>"))?;
    Some(&text[start..end])
}

/// AssumeRole's answer with the expiry the test chose (when it chose one), its key recorded.
fn shorten(state: &Mutex<State>, bytes: Bytes) -> Bytes {
    let mut s = state.lock().unwrap();
    let Some(after) = s.expire_in else {
        return bytes;
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (Some(key), Some(old)) = (between(&text, "AccessKeyId"), between(&text, "Expiration")) else {
        return bytes;
    };
    let expiry = std::time::SystemTime::now() + after;
    let stamp =
        chrono::DateTime::<chrono::Utc>::from(expiry).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    s.issued.push((key.to_string(), expiry));
    Bytes::from(text.replace(
        &format!("<Expiration>{old}</Expiration>"),
        &format!("<Expiration>{stamp}</Expiration>"),
    ))
}
