//! The load generator: connection slots that send requests by the clock (open model), as fast as
//! they can (max), or as users with think time (closed model), over HTTP/1.1 keep-alive or
//! HTTP/2 (h2c), recording every outcome into the [`Recorder`].
//!
//! A slot is one request in flight at a time. HTTP/1.1: one slot, one connection per origin.
//! HTTP/2: `streams` slots share each connection. Open phases need no dispatcher: slots take the
//! next ticket of the phase from one atomic counter and wait for its due time, so a slow answer
//! on one connection never delays the schedule, and the latency of a request that had to wait for
//! a free connection counts from when it was due.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::{watch, Mutex};

use super::plan::{HttpVersion, Plan, Target};
use super::profile::{Load, Schedule};
use super::stats::{ErrorKind, Outcome, Recorder};

/// A request ready to clone and send.
struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    origin: usize,
}

/// Where connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    host: String,
    port: u16,
}

/// The weighted mix of requests, shared by all slots.
pub struct Mix {
    requests: Vec<Prepared>,
    /// Running sums of the weights.
    cumulative: Vec<u64>,
    origins: Vec<Origin>,
}

impl Mix {
    pub fn new(targets: &[Target], http: HttpVersion) -> Result<Mix, String> {
        let mut origins: Vec<Origin> = Vec::new();
        let mut requests = Vec::new();
        let mut cumulative = Vec::new();
        let mut sum = 0u64;
        for t in targets {
            let host = t.url.host_str().unwrap_or_default().to_string();
            let port = t.url.port_or_known_default().unwrap_or(80);
            let o = Origin { host, port };
            let origin = match origins.iter().position(|x| *x == o) {
                Some(i) => i,
                None => {
                    origins.push(o);
                    origins.len() - 1
                }
            };
            let path = &t.url[url::Position::BeforePath..url::Position::AfterQuery];
            // HTTP/2 carries the authority in the URI; HTTP/1.1 in the Host header.
            let uri: Uri = match http {
                HttpVersion::Http1 => path.parse(),
                HttpVersion::Http2 => t.url[..url::Position::AfterQuery].parse(),
            }
            .map_err(|e| format!("{}: {e}", t.url))?;
            let mut headers = HeaderMap::new();
            if http == HttpVersion::Http1 {
                let authority = &t.url[url::Position::BeforeHost..url::Position::AfterPort];
                headers.insert(
                    HOST,
                    HeaderValue::from_str(authority).map_err(|e| format!("{}: {e}", t.url))?,
                );
            }
            for (k, v) in &t.headers {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
                let value = HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
                headers.append(name, value);
            }
            let method = Method::from_bytes(t.method.as_bytes()).map_err(|e| format!("{}: {e}", t.method))?;
            sum += u64::from(t.weight.max(1));
            cumulative.push(sum);
            requests.push(Prepared {
                method,
                uri,
                headers,
                body: Bytes::from(t.body.clone()),
                origin,
            });
        }
        if requests.is_empty() {
            return Err("no target".into());
        }
        Ok(Mix {
            requests,
            cumulative,
            origins,
        })
    }

    /// The request for ticket `k`: the weights hold over any stretch of tickets.
    fn pick(&self, k: u64) -> &Prepared {
        if self.requests.len() == 1 {
            return &self.requests[0];
        }
        let total = self.cumulative.last().copied().unwrap_or(1);
        let x = splitmix(k) % total;
        let i = self.cumulative.partition_point(|c| *c <= x);
        &self.requests[i.min(self.requests.len() - 1)]
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

type H2Cell = Arc<Mutex<Option<http2::SendRequest<Full<Bytes>>>>>;

/// One request in flight at a time, with its connections (one per origin, made when needed).
pub struct Slot {
    pub id: usize,
    h1: Vec<Option<http1::SendRequest<Full<Bytes>>>>,
    h2: Vec<H2Cell>,
}

/// Settings every slot shares.
pub struct Shared {
    pub mix: Mix,
    pub recorder: Recorder,
    pub http: HttpVersion,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Connections made, for the report.
    pub connects: AtomicU64,
}

impl Shared {
    pub fn new(plan: &Plan, start: Instant) -> Result<Shared, String> {
        Ok(Shared {
            mix: Mix::new(&plan.targets, plan.http)?,
            recorder: Recorder::new(start),
            http: plan.http,
            timeout: plan.timeout,
            connect_timeout: plan.connect_timeout,
            connects: AtomicU64::new(0),
        })
    }

    async fn dial(&self, origin: usize) -> Result<TokioIo<TcpStream>, ErrorKind> {
        let o = &self.mix.origins[origin];
        let stream = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((o.host.as_str(), o.port)),
        )
        .await
        .map_err(|_| ErrorKind::Connect)?
        .map_err(|_| ErrorKind::Connect)?;
        let _ = stream.set_nodelay(true);
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(TokioIo::new(stream))
    }
}

fn classify(e: &hyper::Error) -> ErrorKind {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        ErrorKind::Protocol
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Io
    }
}

/// The pool of slots; HTTP/2 cells are shared by `streams` slots each.
pub struct Slots {
    free: Vec<Slot>,
    h2_cells: Vec<Vec<H2Cell>>,
    origins: usize,
    made: usize,
}

impl Slots {
    pub fn new(plan: &Plan, origins: usize) -> Slots {
        let cells = match plan.http {
            HttpVersion::Http1 => Vec::new(),
            HttpVersion::Http2 => (0..plan.connections)
                .map(|_| (0..origins).map(|_| Arc::new(Mutex::new(None))).collect())
                .collect(),
        };
        Slots {
            free: Vec::new(),
            h2_cells: cells,
            origins,
            made: 0,
        }
    }

    /// `n` slots (the ones used before first, so their connections are reused).
    pub fn take(&mut self, n: usize) -> Vec<Slot> {
        while self.free.len() < n {
            let id = self.made;
            self.made += 1;
            let h2 = if self.h2_cells.is_empty() {
                Vec::new()
            } else {
                self.h2_cells[id % self.h2_cells.len()].clone()
            };
            self.free.push(Slot {
                id,
                h1: (0..self.origins).map(|_| None).collect(),
                h2,
            });
        }
        self.free.sort_by_key(|s| std::cmp::Reverse(s.id));
        let at = self.free.len() - n;
        self.free.split_off(at)
    }

    pub fn give_back(&mut self, slots: Vec<Slot>) {
        self.free.extend(slots);
    }
}

impl Slot {
    /// Sends ticket `k`'s request and reads the whole answer.
    async fn request(&mut self, shared: &Shared, k: u64) -> Outcome {
        let p = shared.mix.pick(k);
        let mut req = Request::new(Full::new(p.body.clone()));
        *req.method_mut() = p.method.clone();
        *req.uri_mut() = p.uri.clone();
        *req.headers_mut() = p.headers.clone();
        match tokio::time::timeout(shared.timeout, self.exchange(shared, p.origin, req)).await {
            Ok(Ok(status)) => Outcome::Status(status),
            Ok(Err(kind)) => Outcome::Failed(kind),
            Err(_) => {
                // An HTTP/1.1 connection with an unfinished exchange cannot be reused.
                if shared.http == HttpVersion::Http1 {
                    self.h1[p.origin] = None;
                }
                Outcome::Failed(ErrorKind::Timeout)
            }
        }
    }

    async fn exchange(
        &mut self,
        shared: &Shared,
        origin: usize,
        req: Request<Full<Bytes>>,
    ) -> Result<u16, ErrorKind> {
        let response = match shared.http {
            HttpVersion::Http1 => {
                let conn = &mut self.h1[origin];
                let usable = match conn {
                    Some(s) => s.ready().await.is_ok(),
                    None => false,
                };
                if !usable {
                    let io = shared.dial(origin).await?;
                    let (sender, connection) = http1::handshake(io).await.map_err(|e| classify(&e))?;
                    tokio::spawn(connection);
                    *conn = Some(sender);
                }
                let Some(sender) = conn.as_mut() else {
                    return Err(ErrorKind::Connect);
                };
                match sender.send_request(req).await {
                    Ok(r) => r,
                    Err(e) => {
                        *conn = None;
                        return Err(classify(&e));
                    }
                }
            }
            HttpVersion::Http2 => {
                let cell = &self.h2[origin];
                let mut sender = {
                    let mut g = cell.lock().await;
                    let alive = g.as_ref().is_some_and(|s| !s.is_closed());
                    if !alive {
                        let io = shared.dial(origin).await?;
                        let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                            .await
                            .map_err(|_| ErrorKind::Connect)?;
                        tokio::spawn(connection);
                        *g = Some(sender);
                    }
                    g.clone().ok_or(ErrorKind::Connect)?
                };
                sender.ready().await.map_err(|e| classify(&e))?;
                sender.send_request(req).await.map_err(|e| classify(&e))?
            }
        };
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| classify(&e))?;
        }
        Ok(status)
    }
}

/// One phase's work for one slot.
pub struct PhaseRun {
    pub load: Load,
    pub schedule: Option<Arc<Schedule>>,
    pub next: Arc<AtomicU64>,
    pub total: u64,
    pub start: Instant,
    pub end: Instant,
}

/// tokio's timer resolution.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Waits until `at`; false if stopped first.
async fn wait_until(at: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(at.into()) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Runs one slot through a phase, then hands the slot back.
pub async fn drive(
    mut slot: Slot,
    shared: Arc<Shared>,
    run: Arc<PhaseRun>,
    mut stop: watch::Receiver<bool>,
) -> Slot {
    let mut k = slot.id as u64;
    loop {
        if *stop.borrow() {
            break;
        }
        let due = match (&run.load, &run.schedule) {
            (Load::Open(_), Some(schedule)) => {
                let ticket = run.next.fetch_add(1, Ordering::Relaxed);
                if ticket >= run.total {
                    break;
                }
                k = ticket;
                let due = run.start + Duration::from_secs_f64(schedule.due(ticket));
                // Past the phase's end, what is still due is not sent: the achieved rate says so.
                if Instant::now() >= run.end {
                    break;
                }
                // The timer fires on the first millisecond tick at or after its deadline: aiming
                // a millisecond early sends within [due - 1 ms, due) instead of up to 1 ms late,
                // so the generator's own timer does not show up as latency.
                let aim = due.checked_sub(TIMER_TICK).unwrap_or(due);
                if aim > Instant::now() && !wait_until(aim, &mut stop).await {
                    break;
                }
                due
            }
            _ => {
                let now = Instant::now();
                if now >= run.end {
                    break;
                }
                k = k.wrapping_add(1);
                now
            }
        };
        let sent = Instant::now();
        // Sent a little early: the wait counts from the send.
        let due = due.min(sent);
        let outcome = tokio::select! {
            o = slot.request(&shared, k) => o,
            // Stopped mid-request: the request is not counted (it has no outcome).
            _ = stop.wait_for(|s| *s) => break,
        };
        let done = Instant::now();
        shared.recorder.record(slot.id, due, sent, done, outcome);
        if let Load::Closed { think, .. } = run.load {
            if !think.is_zero() && !wait_until((done + think).min(run.end), &mut stop).await {
                break;
            }
        }
    }
    slot
}

/// The threads that run the slots: one single-threaded runtime per core, so a connection's
/// task and the slot that uses it wake each other on one thread (no cross-thread wake-ups, the
/// largest cost of a request on a multi-threaded runtime).
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Workers {
    pub fn start(threads: usize) -> Result<Workers, String> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..threads.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a load thread: {e}"))?;
            handles.push(rt.handle().clone());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stops.push(tx);
            std::thread::Builder::new()
                .name(format!("ecscale-load-{i}"))
                .spawn(move || {
                    rt.block_on(async {
                        let _ = rx.await;
                    })
                })
                .map_err(|e| format!("cannot start a load thread: {e}"))?;
        }
        Ok(Workers {
            handles,
            _stop: stops,
        })
    }

    /// Runs `f` on worker `i % threads`.
    pub fn spawn<F>(&self, i: usize, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[i % self.handles.len()].spawn(f)
    }
}

/// How many slots a phase uses.
pub fn slots_for(load: &Load, plan: &Plan) -> usize {
    match load {
        Load::Closed { users, .. } => *users,
        _ => match plan.http {
            HttpVersion::Http1 => plan.connections,
            HttpVersion::Http2 => plan.connections * plan.streams,
        },
    }
}

pub fn origins(shared: &Shared) -> usize {
    shared.mix.origins.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, weight: u32) -> Target {
        Target {
            method: "GET".into(),
            url: url::Url::parse(url).unwrap(),
            headers: vec![("x-a".into(), "1".into())],
            body: vec![],
            weight,
        }
    }

    #[test]
    fn the_mix_keeps_its_weights_and_origins() {
        let mix = Mix::new(
            &[
                target("http://127.0.0.1:8080/a?x=1", 3),
                target("http://127.0.0.1:8080/b", 1),
                target("http://localhost:9/c", 1),
            ],
            HttpVersion::Http1,
        )
        .unwrap();
        assert_eq!(mix.origins.len(), 2);
        let mut counts = [0usize; 3];
        for k in 0..50_000 {
            let p = mix.pick(k);
            let i = match p.uri.path() {
                "/a" => 0,
                "/b" => 1,
                _ => 2,
            };
            counts[i] += 1;
        }
        let share = |i: usize| counts[i] as f64 / 50_000.0;
        assert!((share(0) - 0.6).abs() < 0.01, "{counts:?}");
        assert!((share(1) - 0.2).abs() < 0.01, "{counts:?}");
        let a = mix.pick(0);
        assert!(a.headers.contains_key("x-a"));
        let first = mix.requests.iter().find(|p| p.uri.path() == "/a").unwrap();
        assert_eq!(first.uri.query(), Some("x=1"));
        assert_eq!(first.headers[HOST], "127.0.0.1:8080");
    }
}
