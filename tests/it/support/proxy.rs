//! An HTTP proxy in front of moto that sees every AWS request on the wire: it counts and
//! timestamps them per operation (independently of ecscale's own counters) and can answer a
//! chosen operation with an error (throttling, access denied, ...) a number of times before
//! letting it through. It can also shorten the life of the credentials STS's AssumeRole hands
//! out, and records which access key signed each request. With `Proxy::start_enforcing` it
//! answers as AWS's own token buckets do, per account and region (see `Bucket`), and records
//! nothing else, so that it can stand in front of a long run.

#![allow(dead_code)]

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
    /// Whether the above are kept (not when enforcing: a long run would grow them).
    record: bool,
    /// AWS's token buckets, by (account, region, family), when enforced.
    buckets: Option<HashMap<(String, String, &'static str), Bucket>>,
    /// Access keys AssumeRole handed out, with the account of the role they were for.
    accounts: HashMap<String, String>,
    /// Per `account region family`: calls answered, and calls throttled by the buckets.
    tally: BTreeMap<String, Tally>,
    /// Whether GetMetricData is answered here (see `metric_data`) rather than by moto.
    serve_metrics: bool,
}

/// Calls of one bucket: answered (passed on), and throttled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub answered: u64,
    pub throttled: u64,
}

/// One of AWS's token buckets: `burst` calls at once, refilled at `rate` a second.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn new((rate, burst): (f64, f64)) -> Bucket {
        Bucket {
            tokens: burst,
            last: Instant::now(),
            rate,
            burst,
        }
    }

    /// Takes a token if one is there.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The family of an operation that AWS throttles with a token bucket, and its (rate a second,
/// burst). ECS: "Request throttling for the Amazon ECS API" in the ECS developer guide (service
/// and cluster reads 20 a second, 100 at once; UpdateService 5 a second, 50 at once).
/// CloudWatch: GetMetricData's quota in the CloudWatch service quotas (50 a second).
fn family(op: &str) -> Option<(&'static str, (f64, f64))> {
    let ecs = op.strip_prefix("ECS.");
    if ecs.is_some_and(|o| o.starts_with("Describe") || o.starts_with("List")) {
        return Some(("ECS reads", (20.0, 100.0)));
    }
    match op {
        "ECS.UpdateService" => Some(("ECS UpdateService", (5.0, 50.0))),
        "CloudWatch.GetMetricData" => Some(("CloudWatch GetMetricData", (50.0, 50.0))),
        _ => None,
    }
}

pub struct Proxy {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free loopback port; it lives as long as the runtime.
    pub async fn start(upstream: &str) -> Proxy {
        Self::start_with(
            upstream,
            State {
                record: true,
                ..State::default()
            },
        )
        .await
    }

    /// A proxy that throttles as AWS's token buckets do, per account (the role an access key
    /// was assumed for, as seen in AssumeRole's answers; `own` otherwise) and region, and keeps
    /// only its tally. It answers GetMetricData itself (see `metric_data`): moto's parser of
    /// the Query protocol is quadratic in a call's queries (a call of 500 takes it seconds of
    /// CPU), which at fleet size measures moto, not the client.
    pub async fn start_enforcing(upstream: &str) -> Proxy {
        Self::start_with(
            upstream,
            State {
                buckets: Some(HashMap::new()),
                serve_metrics: true,
                ..State::default()
            },
        )
        .await
    }

    async fn start_with(upstream: &str, state: State) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let state = Arc::new(Mutex::new(state));
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

    /// Per `account region family`, the calls answered and throttled by the buckets.
    pub fn tally(&self) -> BTreeMap<String, Tally> {
        self.state.lock().unwrap().tally.clone()
    }
}

/// Part `n` of a SigV4 `authorization` header's `Credential=AKID/DATE/REGION/SERVICE/aws4_request`
/// (0 the access key, 2 the region, 3 the service).
fn scope(req: &hyper::http::request::Parts, n: usize) -> Option<&str> {
    req.headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(n))
}

/// Whether the buckets (when enforced) let this call through; counted either way.
fn admit(s: &mut State, parts: &hyper::http::request::Parts, op: &str) -> bool {
    let (Some(buckets), Some((family, limits))) = (s.buckets.as_mut(), family(op)) else {
        return true;
    };
    let key = access_key(parts);
    let account = s.accounts.get(&key).cloned().unwrap_or_else(|| "own".to_string());
    let region = scope(parts, 2).unwrap_or("").to_string();
    let ok = buckets
        .entry((account.clone(), region.clone(), family))
        .or_insert_with(|| Bucket::new(limits))
        .take();
    let t = s.tally.entry(format!("{account} {region} {family}")).or_default();
    if ok {
        t.answered += 1;
    } else {
        t.throttled += 1;
    }
    ok
}

/// `ECS.DescribeServices` from the SigV4 credential scope and the target header or Action field.
fn operation(req: &hyper::http::request::Parts, body: &[u8]) -> String {
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let service = match scope(req, 3).unwrap_or("unknown") {
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
        if s.record {
            s.log.push((op.clone(), Instant::now()));
            let text = String::from_utf8_lossy(&body).into_owned();
            s.bodies.entry(op.clone()).or_default().push(text);
            let key = access_key(&parts);
            s.signed.push((op.clone(), key, std::time::SystemTime::now()));
        }
        if !admit(&mut s, &parts, &op) {
            return Ok(error_answer(
                parts.headers.contains_key("x-amz-target"),
                "Throttling",
            ));
        }
        if s.serve_metrics && op == "CloudWatch.GetMetricData" {
            return Ok(xml(metric_data(&String::from_utf8_lossy(&body))));
        }
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
    let answer = match forward.body(body.clone()).send().await {
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
        learn_account(&state, &body, &bytes);
        bytes = shorten(&state, bytes);
    }
    Ok(out.body(Full::new(bytes)).expect("valid response"))
}

/// The access key id that signed a request.
fn access_key(req: &hyper::http::request::Parts) -> String {
    scope(req, 0).unwrap_or("").to_string()
}

fn xml(body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(200)
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// A GetMetricData answer in the Query protocol: for each query, a datapoint every period of
/// its window (`StartTime` to `EndTime`), oldest first, of a value that varies with the query
/// and the time, as CloudWatch would answer for a metric published every period.
fn metric_data(form: &str) -> String {
    let fields: HashMap<String, String> = url::form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect();
    let time = |k: &str| {
        fields
            .get(k)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp())
    };
    let (Some(start), Some(end)) = (time("StartTime"), time("EndTime")) else {
        return String::from("<ErrorResponse/>");
    };
    let mut out = String::from(
        r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><GetMetricDataResult><MetricDataResults>"#,
    );
    for n in 1.. {
        let Some(id) = fields.get(format!("MetricDataQueries.member.{n}.Id").as_str()) else {
            break;
        };
        let period = fields
            .get(format!("MetricDataQueries.member.{n}.MetricStat.Period").as_str())
            .and_then(|p| p.parse::<i64>().ok())
            .unwrap_or(60)
            .max(1);
        let first = start.div_euclid(period) * period + if start % period == 0 { 0 } else { period };
        let (mut stamps, mut values) = (String::new(), String::new());
        for t in (first..end).step_by(period as usize) {
            let stamp = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
            stamps.push_str(&format!(
                "<member>{}</member>",
                stamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
            values.push_str(&format!("<member>{}</member>", 20 + (t / period + n as i64) % 60));
        }
        out.push_str(&format!("<member><Id>{id}</Id><Label>{id}</Label><StatusCode>Complete</StatusCode><Timestamps>{stamps}</Timestamps><Values>{values}</Values></member>"));
    }
    out.push_str("</MetricDataResults><Messages/></GetMetricDataResult><ResponseMetadata><RequestId>proxy</RequestId></ResponseMetadata></GetMetricDataResponse>");
    out
}

/// Records the account of the role an AssumeRole asked for (`RoleArn=arn:aws:iam::ACCOUNT:…`
/// in its form) against the access key it handed out.
fn learn_account(state: &Mutex<State>, request: &[u8], answer: &[u8]) {
    let account = url::form_urlencoded::parse(request)
        .find(|(k, _)| k == "RoleArn")
        .and_then(|(_, role)| role.split(':').nth(4).map(str::to_string));
    let text = String::from_utf8_lossy(answer);
    if let (Some(account), Some(key)) = (account, between(&text, "AccessKeyId")) {
        state.lock().unwrap().accounts.insert(key.to_string(), account);
    }
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
