//! Distributed stress: one coordinator, N agents, exact merged results.
//!
//! The coordinator serves a small HTTP API on its address; every call carries the shared secret
//! (`Authorization: Bearer`), compared in constant time, and a wrong or missing one is refused
//! with 401:
//! - `POST /v1/join {name, sent_us}`: the agent's plan (the plan file's text, re-read by the
//!   agent with the same reader, thresholds and watch left to the coordinator), its segment,
//!   and the coordinator's clock, from which the agent measures its offset (NTP's way: half the
//!   round trip).
//! - `GET /v1/start?name=`: 204 until every agent joined (or the barrier's bound passed), then
//!   the common start on the coordinator's clock.
//! - `POST /v1/second {name, sec, acc}`: one second of the agent's counts, with its latency
//!   histograms in HDR's V2 compressed encoding (base64). The answer says whether to stop
//!   (a threshold aborted the run, or Ctrl-C).
//! - `POST /v1/done {name, ...}`: the agent finished.
//!
//! The coordinator adds the agents' histograms and counters second by second (never averaging
//! percentiles) and feeds the merged second to the same aggregator a single process uses, so
//! thresholds, windows and `abort` judge the whole load. A second an agent delivers late is
//! added to the next one (counted, never dropped). An agent that does not join, exits, or stops
//! reporting is named in the report; its share shows as shortfall in the achieved rate.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use hdrhistogram::serialization::Serializer as _;

use super::stats::{Acc, ErrorKind, Why, KINDS, MAX_CAUSES};
use super::tls::{Negotiated, TlsTally};

/// The longest cause an agent may send, in characters.
const MAX_CAUSE_CHARS: usize = 300;

/// The largest message an agent may send (a second's histograms are a few KiB).
pub const MAX_MESSAGE: usize = 1 << 20;

/// The coordinator's clock, µs since the Unix epoch.
pub fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// A second of counts and histograms on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireAcc {
    pub requests: u64,
    /// Per error kind, in [`KINDS`] order.
    pub errors: Vec<u64>,
    pub statuses: Vec<(u16, u64)>,
    /// Failures by kind name and cause.
    #[serde(default)]
    pub causes: Vec<(String, String, u64)>,
    /// HDR V2 compressed (deflate), base64: from the scheduled send, and from the actual send.
    pub sched: String,
    pub actual: String,
}

fn encode_histogram(h: &hdrhistogram::Histogram<u64>) -> Result<String, String> {
    let mut buf = Vec::new();
    hdrhistogram::serialization::V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| format!("encoding a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

fn decode_histogram(s: &str) -> Result<hdrhistogram::Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("a histogram is not base64: {e}"))?;
    let mut h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("a histogram is not HDR V2: {e:?}"))?;
    h.auto(true);
    Ok(h)
}

impl WireAcc {
    pub fn encode(acc: &Acc) -> Result<WireAcc, String> {
        Ok(WireAcc {
            requests: acc.requests,
            errors: acc.errors.to_vec(),
            statuses: acc.statuses.clone(),
            causes: acc
                .causes
                .iter()
                .map(|(k, w, n)| (k.name().to_string(), w.as_str().to_string(), *n))
                .collect(),
            sched: encode_histogram(&acc.sched)?,
            actual: encode_histogram(&acc.actual)?,
        })
    }

    pub fn decode(&self) -> Result<Acc, String> {
        let errors: [u64; KINDS.len()] = self
            .errors
            .as_slice()
            .try_into()
            .map_err(|_| format!("{} error counts, expected {}", self.errors.len(), KINDS.len()))?;
        Ok(Acc {
            sched: decode_histogram(&self.sched)?,
            actual: decode_histogram(&self.actual)?,
            requests: self.requests,
            errors,
            statuses: self.statuses.clone(),
            causes: self.causes()?,
        })
    }

    /// The causes as the agent sent them, within the bounds an agent's own [`Acc`] keeps.
    fn causes(&self) -> Result<Vec<(ErrorKind, Why, u64)>, String> {
        if self.causes.len() > MAX_CAUSES + KINDS.len() {
            return Err(format!(
                "{} error causes, at most {}",
                self.causes.len(),
                MAX_CAUSES + KINDS.len()
            ));
        }
        self.causes
            .iter()
            .map(|(kind, why, n)| {
                let kind = ErrorKind::named(kind).ok_or_else(|| format!("an unknown error kind {kind:?}"))?;
                let why: String = why.chars().take(MAX_CAUSE_CHARS).collect();
                Ok((kind, Why::Text(why.into()), *n))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Join {
    /// Empty: the coordinator names it (agents started by one RunTask call share a command).
    pub name: String,
    /// Where it runs (its ECS task ARN, or `pid N on HOST`).
    #[serde(default)]
    pub at: String,
    pub sent_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    /// Its name (the one it asked for, or the one it was given).
    pub name: String,
    /// The plan file's text, and the folder its relative paths are read from.
    pub plan: String,
    pub base: String,
    pub index: u64,
    pub count: u64,
    pub coordinator_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub start_us: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecondMsg {
    pub name: String,
    pub sec: u64,
    pub acc: WireAcc,
    /// Coordinator minus agent clock, and the join's round trip (µs).
    pub offset_us: f64,
    pub rtt_us: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub name: String,
    /// Its own totals, and TCP connections made.
    pub requests: u64,
    pub connects: u64,
    pub error: Option<String>,
    /// What its TLS connections did (https:// targets).
    #[serde(default)]
    pub tls: Option<WireTls>,
}

/// A [`TlsTally`] on the wire: the handshake histogram in HDR's V2 compressed encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireTls {
    pub version: Option<String>,
    pub cipher: Option<String>,
    pub alpn: Option<String>,
    pub resumed: u64,
    pub handshakes: String,
}

impl WireTls {
    pub fn encode(t: &TlsTally) -> Result<WireTls, String> {
        let n = t.negotiated.as_ref();
        Ok(WireTls {
            version: n.map(|n| n.version.clone()),
            cipher: n.map(|n| n.cipher.clone()),
            alpn: n.and_then(|n| n.alpn.clone()),
            resumed: t.resumed,
            handshakes: encode_histogram(&t.handshakes)?,
        })
    }

    pub fn decode(&self) -> Result<TlsTally, String> {
        let negotiated = match (&self.version, &self.cipher) {
            (Some(version), Some(cipher)) => Some(Negotiated {
                version: version.clone(),
                cipher: cipher.clone(),
                alpn: self.alpn.clone(),
                resumed: false,
            }),
            _ => None,
        };
        Ok(TlsTally {
            negotiated,
            handshakes: decode_histogram(&self.handshakes)?,
            resumed: self.resumed,
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Reply {
    pub stop: bool,
}

/// An agent as the coordinator tracks it.
#[derive(Debug, Clone)]
pub struct AgentSlot {
    pub name: String,
    pub at: String,
    pub joined: bool,
    pub offset_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
    /// The last second received.
    pub last: Option<u64>,
    pub last_seen: Instant,
    pub done: bool,
    pub dead: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub connects: u64,
    /// What its TLS connections did, from its last word.
    pub tls: Option<TlsTally>,
}

impl AgentSlot {
    pub fn live(&self) -> bool {
        !self.done && self.dead.is_none()
    }
}

/// What the coordinator's API and its loop share.
pub struct State {
    pub plan: String,
    pub base: String,
    pub agents: Vec<AgentSlot>,
    pub start_us: Option<i64>,
    pub stop: bool,
    /// Seconds received, not yet merged into the run.
    pub pending: BTreeMap<u64, Acc>,
    /// The next second the loop merges: later arrivals for earlier ones join it.
    pub merged_until: u64,
    /// Refused calls (wrong token, unknown agent, bad message), with why.
    pub refused: Vec<String>,
}

impl State {
    pub fn new(plan: String, base: String, names: &[String]) -> State {
        State {
            plan,
            base,
            agents: names
                .iter()
                .map(|n| AgentSlot {
                    name: n.clone(),
                    at: String::new(),
                    joined: false,
                    offset_ms: None,
                    rtt_ms: None,
                    last: None,
                    last_seen: Instant::now(),
                    done: false,
                    dead: None,
                    requests: 0,
                    errors: 0,
                    connects: 0,
                    tls: None,
                })
                .collect(),
            start_us: None,
            stop: false,
            pending: BTreeMap::new(),
            merged_until: 0,
            refused: Vec::new(),
        }
    }

    fn agent(&mut self, name: &str) -> Result<(usize, &mut AgentSlot), String> {
        self.agents
            .iter_mut()
            .enumerate()
            .find(|(_, a)| a.name == name)
            .ok_or_else(|| format!("no agent is named `{name}`"))
    }

    fn join(&mut self, j: Join) -> Result<Joined, String> {
        let count = self.agents.len() as u64;
        if self.start_us.is_some() {
            return Err(format!("agent {}: joined after the start", j.name));
        }
        let name = if j.name.is_empty() {
            let free = self.agents.iter().find(|a| !a.joined && a.dead.is_none());
            free.map(|a| a.name.clone())
                .ok_or_else(|| "every agent's place is taken".to_string())?
        } else {
            j.name.clone()
        };
        let (index, a) = self.agent(&name)?;
        if a.joined {
            return Err(format!("agent {name} joined already"));
        }
        a.joined = true;
        a.last_seen = Instant::now();
        if !j.at.is_empty() {
            a.at = j.at.clone();
        }
        Ok(Joined {
            name,
            plan: self.plan.clone(),
            base: self.base.clone(),
            index: index as u64,
            count,
            coordinator_us: now_us(),
        })
    }

    fn second(&mut self, m: SecondMsg) -> Result<Reply, String> {
        let acc = m.acc.decode().map_err(|e| format!("agent {}: {e}", m.name))?;
        let merged_until = self.merged_until;
        let (_, a) = self.agent(&m.name)?;
        a.last = Some(a.last.map_or(m.sec, |l| l.max(m.sec)));
        a.last_seen = Instant::now();
        a.offset_ms = Some(m.offset_us / 1000.0);
        a.rtt_ms = Some(m.rtt_us / 1000.0);
        a.requests += acc.requests;
        a.errors += acc.error_count();
        // Too late for its second: it joins the next one to be merged (counted, not lost).
        let sec = m.sec.max(merged_until);
        self.pending.entry(sec).or_default().add(&acc);
        Ok(Reply { stop: self.stop })
    }

    fn done(&mut self, d: Done) -> Result<Reply, String> {
        let (_, a) = self.agent(&d.name)?;
        a.done = true;
        a.last_seen = Instant::now();
        a.connects = d.connects;
        a.tls = d.tls.as_ref().map(WireTls::decode).transpose()?;
        if let Some(e) = d.error {
            a.dead = Some(format!("failed: {e}"));
        }
        Ok(Reply { stop: self.stop })
    }
}

/// Constant-time comparison of the presented secret with ours.
fn token_ok(req: &Request<hyper::body::Incoming>, token: &str) -> bool {
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn body<T: serde::de::DeserializeOwned>(req: Request<hyper::body::Incoming>) -> Result<T, String> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_MESSAGE);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| format!("reading the message: {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("a message that is not what was expected: {e}"))
}

fn reply<T: Serialize>(r: Result<T, String>) -> Response<Full<Bytes>> {
    match r {
        Ok(v) => answer(StatusCode::OK, serde_json::to_string(&v).unwrap_or_default()),
        Err(e) => answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": e }).to_string(),
        ),
    }
}

async fn route(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
    token: Arc<String>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !token_ok(&req, &token) {
        let who = format!("{} {}", req.method(), req.uri().path());
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refused
            .push(format!("{who}: wrong or missing token"));
        return Ok(answer(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"wrong or missing token"}"#.into(),
        ));
    }
    let path = req.uri().path().to_string();
    let st = |f: &dyn Fn(&mut State) -> Response<Full<Bytes>>| {
        let mut g = state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    };
    let resp = match (req.method().as_str(), path.as_str()) {
        ("POST", "/v1/join") => match body::<Join>(req).await {
            Ok(j) => st(&|s| reply(s.join(j.clone()))),
            Err(e) => reply::<()>(Err(e)),
        },
        ("GET", "/v1/start") => st(&|s| match s.start_us {
            Some(start_us) => reply(Ok(Start { start_us })),
            None => answer(StatusCode::NO_CONTENT, String::new()),
        }),
        ("POST", "/v1/second") => match body::<SecondMsg>(req).await {
            Ok(m) => st(&|s| reply(s.second(m.clone()))),
            Err(e) => reply::<()>(Err(e)),
        },
        ("POST", "/v1/done") => match body::<Done>(req).await {
            Ok(d) => st(&|s| reply(s.done(d.clone()))),
            Err(e) => reply::<()>(Err(e)),
        },
        _ => answer(StatusCode::NOT_FOUND, r#"{"error":"no such call"}"#.into()),
    };
    Ok(resp)
}

/// Serves the coordinator's API on `listener` until the task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<Mutex<State>>,
    token: String,
) -> tokio::task::JoinHandle<()> {
    let token = Arc::new(token);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (state, token) = (state.clone(), token.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| route(req, state.clone(), token.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The coordinator's listening address, bound on `addr` (port 0: any free one).
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("coordinator: binding {addr}: {e}"))?;
    let local = l.local_addr().map_err(|e| e.to_string())?;
    Ok((l, local))
}

/// Waits for every agent to join, at most `bound`; then sets the common start `lead` ahead.
/// The agents that did not join are marked so (their share will be missing).
pub async fn barrier(
    state: &Arc<Mutex<State>>,
    bound: Duration,
    lead: Duration,
    mut alive: impl FnMut(&mut State),
) -> Result<i64, String> {
    let until = Instant::now() + bound;
    loop {
        {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            alive(&mut s);
            let all = s.agents.iter().all(|a| a.joined || a.dead.is_some());
            let any = s.agents.iter().any(|a| a.joined);
            if all || Instant::now() >= until {
                if !any {
                    let why: Vec<String> = s
                        .agents
                        .iter()
                        .map(|a| format!("{}: {}", a.name, a.dead.as_deref().unwrap_or("did not join")))
                        .collect();
                    return Err(format!("no agent joined within {bound:?} ({})", why.join("; ")));
                }
                for a in s.agents.iter_mut().filter(|a| !a.joined && a.dead.is_none()) {
                    a.dead = Some(format!(
                        "never joined within {}",
                        humantime::format_duration(bound)
                    ));
                }
                let start = now_us() + lead.as_micros() as i64;
                s.start_us = Some(start);
                return Ok(start);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::stats::{Failure, Outcome};

    #[test]
    fn histograms_cross_the_wire_exactly_and_add_like_one_process() {
        let (mut a, mut b, mut whole) = (Acc::default(), Acc::default(), Acc::default());
        for k in 0..20_000u64 {
            let us = 200 + (k * 7919) % 150_000;
            let out = if k % 97 == 0 {
                Outcome::Status(503)
            } else if k % 101 == 0 {
                Outcome::Failed(Failure::new(ErrorKind::Io, "connection reset by the server"))
            } else if k % 103 == 0 {
                Outcome::Failed(Failure::text(ErrorKind::Connect, format!("cause {}", k % 3)))
            } else {
                Outcome::Status(200)
            };
            [&mut a, &mut b][(k % 2) as usize].record(us, us / 2, out.clone());
            whole.record(us, us / 2, out);
        }
        let mut merged = WireAcc::encode(&a).unwrap().decode().unwrap();
        merged.add(&WireAcc::encode(&b).unwrap().decode().unwrap());
        assert_eq!(merged.requests, whole.requests);
        assert_eq!(merged.errors, whole.errors);
        // Causes cross as words and add up by kind and words, whichever side said them.
        assert_eq!(merged.summary().error_causes, whole.summary().error_causes);
        assert_eq!(
            whole.summary().error_causes.len(),
            4,
            "{:?}",
            whole.summary().error_causes
        );
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.sched.value_at_quantile(q),
                whole.sched.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(merged.sched.max(), whole.sched.max());
        assert_eq!(merged.actual.len(), whole.actual.len());
        // Compact: a second of a busy agent is a few KiB.
        let wire = serde_json::to_string(&WireAcc::encode(&whole).unwrap()).unwrap();
        assert!(wire.len() < 16 * 1024, "{} bytes", wire.len());
    }

    #[test]
    fn a_late_second_joins_the_next_one_and_unknown_agents_are_refused() {
        let names = ["a".to_string(), "b".to_string()];
        let mut s = State::new("plan".into(), ".".into(), &names);
        let join = |name: &str| Join {
            name: name.into(),
            at: String::new(),
            sent_us: 0,
        };
        let j = s.join(join("b")).unwrap();
        assert_eq!((j.index, j.count), (1, 2));
        assert!(s.join(join("c")).is_err(), "unknown");
        assert!(s.join(join("b")).is_err(), "twice");
        assert_eq!(s.join(join("")).unwrap().name, "a", "named by the coordinator");
        assert!(s.join(join("")).is_err(), "no place left");
        let mut acc = Acc::default();
        acc.record(1000, 900, Outcome::Status(200));
        let msg = |sec| SecondMsg {
            name: "b".into(),
            sec,
            acc: WireAcc::encode(&acc).unwrap(),
            offset_us: 0.0,
            rtt_us: 0.0,
        };
        s.second(msg(3)).unwrap();
        s.merged_until = 5;
        s.second(msg(4)).unwrap();
        assert_eq!(s.pending.keys().copied().collect::<Vec<_>>(), [3, 5]);
        assert_eq!(s.agents[1].requests, 2);
    }
}
