//! The load generator: connection slots that send requests by the clock (open model), as fast as
//! they can (max), or as users with think time (closed model), over HTTP/1.1 keep-alive or
//! HTTP/2 (h2c), recording every outcome into the [`Recorder`].
//!
//! A slot is one request in flight at a time. HTTP/1.1: one slot, one connection per origin.
//! HTTP/2: `streams` slots share each connection. Open phases need no dispatcher: slots take the
//! next ticket of the phase from one atomic counter and wait for its due time, so a slow answer
//! on one connection never delays the schedule, and the latency of a request that had to wait for
//! a free connection counts from when it was due.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Mutex};
use tokio::time::Sleep;

use super::plan::{HttpVersion, Plan, Resolve, Target};
use super::profile::{Load, Schedule};
use super::stats::{ErrorKind, Failure, Outcome, Recorder, Why};
use super::tls::{Negotiated, Stream, Tls, TlsTally};

/// A request ready to clone and send (HTTP/2), or to write as it is (HTTP/1.1).
struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    origin: usize,
    encoded: super::h1::Encoded,
}

/// Where connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    host: String,
    port: u16,
    tls: bool,
    /// `--resolve`: the address to connect to instead of the host's.
    connect_to: Option<std::net::IpAddr>,
}

impl Origin {
    fn name(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// The weighted mix of requests, shared by all slots.
pub struct Mix {
    requests: Vec<Prepared>,
    /// Running sums of the weights.
    cumulative: Vec<u64>,
    origins: Vec<Origin>,
}

impl Mix {
    pub fn new(targets: &[Target], http: HttpVersion, resolve: &[Resolve]) -> Result<Mix, String> {
        let mut origins: Vec<Origin> = Vec::new();
        let mut requests = Vec::new();
        let mut cumulative = Vec::new();
        let mut sum = 0u64;
        for t in targets {
            // An IP literal is connected to as it is (`[::1]` is no name to resolve); a
            // name, through `--resolve` when it names it, else the system's resolver.
            let (host, literal) = match t.url.host() {
                Some(url::Host::Ipv6(a)) => (a.to_string(), Some(std::net::IpAddr::V6(a))),
                Some(url::Host::Ipv4(a)) => (a.to_string(), Some(std::net::IpAddr::V4(a))),
                Some(url::Host::Domain(d)) => (d.to_string(), None),
                None => (String::new(), None),
            };
            let port = t.url.port_or_known_default().unwrap_or(80);
            let connect_to = resolve
                .iter()
                .find(|r| r.host.trim_matches(['[', ']']).eq_ignore_ascii_case(&host) && r.port == port)
                .map(|r| r.addr)
                .or(literal);
            let tls = t.url.scheme() == "https";
            let o = Origin {
                host,
                port,
                tls,
                connect_to,
            };
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
            let fields: Vec<(&str, &[u8])> =
                headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
            let path = &t.url[url::Position::BeforePath..url::Position::AfterQuery];
            let encoded = super::h1::encode(method.as_str(), path, &fields, &t.body);
            requests.push(Prepared {
                method,
                uri,
                headers,
                body: Bytes::from(t.body.clone()),
                origin,
                encoded,
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
    h1: Vec<Option<super::h1::Conn<Stream>>>,
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
    /// TLS handshakes that resumed an earlier session.
    pub resumed: AtomicU64,
    /// The TLS client, when a target is https://.
    tls: Option<Tls>,
    /// TLS handshake times (µs) and what the first handshake negotiated.
    handshakes: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
    negotiated: std::sync::OnceLock<Negotiated>,
}

impl Shared {
    pub fn new(plan: &Plan, start: Instant) -> Result<Shared, String> {
        let tls = if plan.uses_tls() {
            Some(Tls::new(&plan.tls, plan.http)?)
        } else {
            None
        };
        let handshakes = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| format!("histogram: {e}"))?;
        Ok(Shared {
            mix: Mix::new(&plan.targets, plan.http, &plan.resolve)?,
            recorder: Recorder::new(start),
            http: plan.http,
            timeout: plan.timeout,
            connect_timeout: plan.connect_timeout,
            connects: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            tls,
            handshakes: std::sync::Mutex::new(handshakes),
            negotiated: std::sync::OnceLock::new(),
        })
    }

    /// A connection to `origin`: TCP (to the `--resolve` address if one is given), then the TLS
    /// handshake with the URL's host as SNI.
    async fn dial(&self, origin: usize) -> Result<Stream, Failure> {
        let o = &self.mix.origins[origin];
        let connect = async {
            match o.connect_to {
                Some(addr) => TcpStream::connect((addr, o.port)).await,
                None => TcpStream::connect((o.host.as_str(), o.port)).await,
            }
        };
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| Failure::new(ErrorKind::Connect, "no connection within the connect timeout"))?
            .map_err(|e| Failure {
                kind: ErrorKind::Connect,
                why: Why::io(&e),
            })?;
        let _ = stream.set_nodelay(true);
        self.connects.fetch_add(1, Ordering::Relaxed);
        let stream = match (&self.tls, o.tls) {
            (Some(tls), true) => {
                let (s, took, negotiated) =
                    tokio::time::timeout(self.connect_timeout, tls.connect(&o.host, stream))
                        .await
                        .map_err(|_| {
                            Failure::new(ErrorKind::Tls, "no TLS handshake within the connect timeout")
                        })?
                        .map_err(|e| Failure::text(ErrorKind::Tls, e))?;
                if let Ok(mut h) = self.handshakes.lock() {
                    let _ = h.record((took.as_micros() as u64).max(1));
                }
                if negotiated.resumed {
                    self.resumed.fetch_add(1, Ordering::Relaxed);
                }
                let _ = self.negotiated.set(negotiated);
                s
            }
            _ => Stream::Plain(stream),
        };
        Ok(stream)
    }

    /// Before the run: one connection to each origin (not counted), so a target that cannot be
    /// reached (nothing listens, a name that does not resolve) or whose certificate or handshake
    /// fails is one clear error at once instead of the error of every request. Over TLS one
    /// request follows (a refused client certificate or ALPN shows only then); over plain
    /// HTTP none, so the target sees exactly the run's requests. An answer of any status
    /// passes, and a probe that gets no answer in time leaves it to the run.
    pub async fn probe(&self) -> Result<(), String> {
        for (i, o) in self.mix.origins.iter().enumerate() {
            let failed = |f: &Failure| {
                let hint = match f.kind {
                    ErrorKind::Connect => " (nothing was sent: is the URL right, and is the target up?)",
                    _ => "",
                };
                format!("{}: {}: {}{hint}", f.kind.name(), o.name(), f.why.as_str())
            };
            let stream = match self.dial(i).await {
                Ok(s) => s,
                Err(e) => return Err(failed(&e)),
            };
            // Over TLS a request shows a refused certificate or a wrong ALPN; over cleartext
            // only HTTP/2 (prior knowledge) needs one: an HTTP/1-only server refuses its preface.
            let h2c = !o.tls && self.http == HttpVersion::Http2;
            if !o.tls && !h2c {
                continue;
            }
            let Some(p) = self.mix.requests.iter().find(|p| p.origin == i) else {
                continue;
            };
            let probed = if h2c {
                self.probe_exchange(stream, p, true).await.map_err(|f| {
                    Failure::text(
                        f.kind,
                        format!(
                            "the server did not take HTTP/2 without TLS (h2c, prior knowledge): {}; \
                             leave out --http2 (http: 2) for HTTP/1.1, or use https:// to negotiate HTTP/2",
                            f.why.as_str()
                        ),
                    )
                })
            } else {
                self.probe_request(stream, p).await
            };
            probed.map_err(|f| failed(&f))?;
        }
        Ok(())
    }

    /// The probe's request on its TLS connection, after a look for a refused client
    /// certificate.
    async fn probe_request(&self, mut stream: Stream, p: &Prepared) -> Result<(), Failure> {
        // TLS 1.3 settles a client certificate after the handshake: a refusal is an alert
        // (then a close) the server sends before any request.
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(150), stream.read(&mut byte)).await {
            Err(_) => {}
            Ok(Ok(0)) => return Err(Failure::new(
                ErrorKind::Tls,
                "the server closed the connection after the handshake (does it require a client certificate? --cert/--key)",
            )),
            Ok(Err(e)) => {
                return Err(match super::tls::rustls_error(&e) {
                    Some(r) => Failure::text(ErrorKind::Tls, super::tls::describe(r)),
                    None => Failure::text(ErrorKind::Tls, format!("the connection failed after the handshake: {e}")),
                })
            }
            Ok(Ok(_)) => return Ok(()),
        }
        self.probe_exchange(stream, p, false).await
    }

    /// One request on a fresh connection: an error when the answer is not HTTP (or TLS failed,
    /// or, when `strict`, the connection broke); a status of any kind, or a slow answer, is the
    /// run's to count.
    async fn probe_exchange(&self, stream: Stream, p: &Prepared, strict: bool) -> Result<(), Failure> {
        let io = TokioIo::new(stream);
        let exchange = async {
            match self.http {
                HttpVersion::Http1 => {
                    let (mut s, c) = http1::handshake(io).await?;
                    tokio::spawn(c);
                    s.send_request(p.request()).await.map(|r| r.status())
                }
                HttpVersion::Http2 => {
                    let (mut s, c) = http2::handshake(TokioExecutor::new(), io).await?;
                    tokio::spawn(c);
                    s.send_request(p.request()).await.map(|r| r.status())
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Err(e)) => match classify(&e) {
                f if f.kind == ErrorKind::Tls => Err(f),
                f if f.kind == ErrorKind::Protocol => Err(Failure::text(
                    ErrorKind::Protocol,
                    format!("the answer is not HTTP ({})", f.why.as_str()),
                )),
                f if strict => Err(f),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// What TLS did in the run (none without an https:// target).
    pub fn tls_tally(&self) -> Option<TlsTally> {
        self.tls.as_ref()?;
        Some(TlsTally {
            negotiated: self.negotiated.get().cloned(),
            handshakes: self.handshakes.lock().ok()?.clone(),
            resumed: self.resumed.load(Ordering::Relaxed),
        })
    }
}

impl Prepared {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

fn classify(e: &hyper::Error) -> Failure {
    if let Some(r) = super::tls::rustls_error(e) {
        return Failure::text(ErrorKind::Tls, super::tls::describe(r));
    }
    let kind = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        ErrorKind::Protocol
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Io
    };
    let why = match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    Failure::text(kind, why)
}

/// The pool of slots; HTTP/2 cells are shared by `streams` slots each.
pub struct Slots {
    free: Vec<Slot>,
    h2_cells: Vec<Vec<H2Cell>>,
    origins: usize,
    made: usize,
}

impl Slots {
    pub fn new(plan: &Plan, origins: usize, segment: super::Segment) -> Slots {
        let cells = match plan.http {
            HttpVersion::Http1 => Vec::new(),
            HttpVersion::Http2 => (0..segment.share(plan.connections))
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
    /// `deadline` is the slot's own timer, reset for each request: moving a registered timer
    /// later is one atomic store, where a new timer per request is an insert into the timer
    /// wheel and a removal under its lock.
    async fn request(&mut self, shared: &Shared, k: u64, deadline: Pin<&mut Sleep>) -> Outcome {
        let p = shared.mix.pick(k);
        let answer = tokio::select! {
            biased;
            r = self.exchange(shared, p) => Some(r),
            () = deadline => None,
        };
        match answer {
            Some(Ok(status)) => Outcome::Status(status),
            Some(Err(f)) => Outcome::Failed(f),
            None => {
                // An HTTP/1.1 connection with an unfinished exchange cannot be reused.
                if shared.http == HttpVersion::Http1 {
                    self.h1[p.origin] = None;
                }
                Outcome::Failed(Failure::new(
                    ErrorKind::Timeout,
                    "no whole answer within the request timeout",
                ))
            }
        }
    }

    /// HTTP/1.1: the encoded request straight onto the slot's own connection.
    async fn exchange_h1(&mut self, shared: &Shared, p: &Prepared) -> Result<u16, Failure> {
        let slot = &mut self.h1[p.origin];
        // A kept connection the server has closed since (keep-alive timeout) is dialled again.
        if slot.as_mut().is_some_and(|c| c.closed_by_peer()) {
            *slot = None;
        }
        let conn = match slot {
            Some(c) => c,
            None => slot.insert(super::h1::Conn::new(shared.dial(p.origin).await?)),
        };
        match conn.exchange(&p.encoded).await {
            Ok((status, reusable)) => {
                if !reusable {
                    *slot = None;
                }
                Ok(status)
            }
            Err(kind) => {
                *slot = None;
                Err(kind)
            }
        }
    }

    async fn exchange(&mut self, shared: &Shared, p: &Prepared) -> Result<u16, Failure> {
        let origin = p.origin;
        let response = match shared.http {
            HttpVersion::Http1 => return self.exchange_h1(shared, p).await,
            HttpVersion::Http2 => {
                let req = p.request();
                let cell = &self.h2[origin];
                let mut sender = {
                    let mut g = cell.lock().await;
                    let alive = g.as_ref().is_some_and(|s| !s.is_closed());
                    if !alive {
                        let io = TokioIo::new(shared.dial(origin).await?);
                        let (sender, connection) =
                            http2::handshake(TokioExecutor::new(), io).await.map_err(|e| {
                                let f = classify(&e);
                                match f.kind {
                                    ErrorKind::Tls => f,
                                    _ => Failure {
                                        kind: ErrorKind::Connect,
                                        why: f.why,
                                    },
                                }
                            })?;
                        tokio::spawn(connection);
                        *g = Some(sender);
                    }
                    g.clone()
                        .ok_or(Failure::new(ErrorKind::Connect, "no HTTP/2 connection"))?
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
    /// The requests of an open phase this process sends: index ≡ `segment.index` (mod count).
    pub segment: super::Segment,
}

/// tokio's timer resolution.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Waits until `at`; false if stopped first.
async fn wait_until(at: Instant, stopped: Pin<&mut impl Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        () = stopped => false,
        () = tokio::time::sleep_until(at.into()) => true,
    }
}

/// When the next request of a slot is due (and its ticket), or None when the slot is done.
fn next_due(run: &PhaseRun, k: u64) -> Option<(Instant, u64)> {
    match (&run.load, &run.schedule) {
        (Load::Open(_), Some(schedule)) => {
            let ticket = run.next.fetch_add(1, Ordering::Relaxed);
            let index = run.segment.index + ticket * run.segment.count;
            // Past the phase's end, what is still due is not sent: the achieved rate says so.
            if index >= run.total || Instant::now() >= run.end {
                return None;
            }
            Some((run.start + Duration::from_secs_f64(schedule.due(index)), index))
        }
        _ => {
            let now = Instant::now();
            (now < run.end).then(|| (now, k.wrapping_add(1)))
        }
    }
}

/// Runs one slot through a phase, then hands the slot back.
pub async fn drive(
    mut slot: Slot,
    shared: Arc<Shared>,
    run: Arc<PhaseRun>,
    stop: watch::Receiver<bool>,
) -> Slot {
    let mut k = slot.id as u64;
    // One wait for the stop and one request timer for the whole phase, not one per request.
    let mut rx = stop.clone();
    let mut stopped = std::pin::pin!(async move {
        let _ = rx.wait_for(|s| *s).await;
    });
    let mut deadline = std::pin::pin!(tokio::time::sleep(shared.timeout));
    let open = matches!(run.load, Load::Open(_));
    while !*stop.borrow() {
        let Some((due, ticket)) = next_due(&run, k) else {
            break;
        };
        k = ticket;
        // The timer fires on the first millisecond tick at or after its deadline: aiming a
        // millisecond early sends within [due - 1 ms, due) instead of up to 1 ms late, so the
        // generator's own timer does not show up as latency.
        // A closed-model request is due now: no second look at the clock.
        let aim = due.checked_sub(TIMER_TICK).unwrap_or(due);
        if open && aim > Instant::now() && !wait_until(aim, stopped.as_mut()).await {
            break;
        }
        let sent = Instant::now();
        // Sent a little early: the wait counts from the send.
        let due = due.min(sent);
        deadline.as_mut().reset((sent + shared.timeout).into());
        let outcome = tokio::select! {
            biased;
            // Stopped mid-request: the request is not counted (it has no outcome).
            () = stopped.as_mut() => break,
            o = slot.request(&shared, k, deadline.as_mut()) => o,
        };
        let done = Instant::now();
        shared.recorder.record(slot.id, due, sent, done, outcome);
        if let Load::Closed { think, .. } = run.load {
            let until = (done + think).min(run.end);
            if !think.is_zero() && !wait_until(until, stopped.as_mut()).await {
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

/// How many slots a phase uses (this segment's share of them).
pub fn slots_for(load: &Load, plan: &Plan, segment: super::Segment) -> usize {
    match load {
        Load::Closed { users, .. } => segment.share(*users),
        _ => match plan.http {
            HttpVersion::Http1 => segment.share(plan.connections),
            HttpVersion::Http2 => segment.share(plan.connections) * plan.streams,
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
            &[],
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
