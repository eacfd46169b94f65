//! Measurement: HDR histograms of latency counted from the scheduled send time (what a user of
//! an open system waits, a stall included) and from the actual send time (what the server took),
//! error kinds and status codes; recorded by the connection tasks into a few locked shards and
//! folded once a second into the per-second series, the phase totals and the run totals.
//!
//! Memory is fixed whatever the run length: a histogram has a bucket array sized by the largest
//! latency seen (3 significant digits), the per-second series keeps numbers, not histograms, and
//! only the seconds a sliding-window threshold needs are kept as histograms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The TCP connection (or the HTTP/2 handshake) could not be made.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection broke mid-request (reset, closed).
    Io,
    /// The server answered something that is not HTTP.
    Protocol,
    /// 4xx status.
    Http4xx,
    /// 5xx status.
    Http5xx,
    /// A certificate or TLS handshake failure (or a TLS alert mid-connection).
    Tls,
}

pub const KINDS: [ErrorKind; 7] = [
    ErrorKind::Connect,
    ErrorKind::Timeout,
    ErrorKind::Io,
    ErrorKind::Protocol,
    ErrorKind::Http4xx,
    ErrorKind::Http5xx,
    ErrorKind::Tls,
];

impl ErrorKind {
    pub fn named(name: &str) -> Option<ErrorKind> {
        KINDS.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::Tls => "tls",
        }
    }
}

/// Why a request failed, in words: fixed words for what the generator names itself, the
/// system's for the rest (a name that does not resolve, an unusual socket error), or an agent's.
#[derive(Debug, Clone)]
pub enum Why {
    Said(&'static str),
    Text(Arc<str>),
}

impl Why {
    pub fn as_str(&self) -> &str {
        match self {
            Why::Said(s) => s,
            Why::Text(s) => s,
        }
    }

    /// An I/O error's words: fixed ones for the kinds a load test meets, the error's own else.
    pub fn io(e: &std::io::Error) -> Why {
        use std::io::ErrorKind as K;
        Why::Said(match e.kind() {
            K::ConnectionRefused => "connection refused",
            K::ConnectionReset => "connection reset by the server",
            K::ConnectionAborted => "connection aborted",
            K::BrokenPipe => "broken pipe (the server closed the connection)",
            K::TimedOut => "timed out (the system's own timeout)",
            K::AddrNotAvailable => "no local address available (out of ephemeral ports?)",
            K::NotConnected => "not connected",
            K::UnexpectedEof => "the connection ended unexpectedly",
            _ => return Why::Text(e.to_string().into()),
        })
    }
}

impl PartialEq for Why {
    fn eq(&self, other: &Why) -> bool {
        match (self, other) {
            (Why::Said(a), Why::Said(b)) => std::ptr::eq(*a, *b) || a == b,
            _ => self.as_str() == other.as_str(),
        }
    }
}

/// A failed request: its kind (what thresholds and series count) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub why: Why,
}

impl Failure {
    pub fn new(kind: ErrorKind, why: &'static str) -> Failure {
        Failure {
            kind,
            why: Why::Said(why),
        }
    }

    pub fn text(kind: ErrorKind, why: impl Into<Arc<str>>) -> Failure {
        Failure {
            kind,
            why: Why::Text(why.into()),
        }
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An answer (a 4xx/5xx status is also an error of its kind).
    Status(u16),
    Failed(Failure),
}

/// How many distinct causes an [`Acc`] keeps; the rest are counted per kind as "other causes".
pub const MAX_CAUSES: usize = 16;
/// What a cause past [`MAX_CAUSES`] is counted as.
pub const OTHER_CAUSES: &str = "other causes";

/// A histogram of microseconds that grows to the largest value recorded.
#[allow(clippy::expect_used)]
fn histogram() -> Histogram<u64> {
    // Only a precision above 5 digits is refused; 3 is a constant.
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

/// Counts and histograms over some requests (one second, a phase, a run).
#[derive(Debug, Clone)]
pub struct Acc {
    /// From the scheduled send time, µs.
    pub sched: Histogram<u64>,
    /// From the actual send time, µs.
    pub actual: Histogram<u64>,
    pub requests: u64,
    pub errors: [u64; KINDS.len()],
    pub statuses: Vec<(u16, u64)>,
    /// Failures by kind and cause (at most [`MAX_CAUSES`], then one "other causes" per kind).
    pub causes: Vec<(ErrorKind, Why, u64)>,
}

impl Default for Acc {
    fn default() -> Self {
        Acc {
            sched: histogram(),
            actual: histogram(),
            requests: 0,
            errors: [0; KINDS.len()],
            statuses: Vec::new(),
            causes: Vec::new(),
        }
    }
}

impl Acc {
    pub fn record(&mut self, from_sched_us: u64, from_send_us: u64, outcome: Outcome) {
        self.requests += 1;
        // Auto-resizing histograms accept any u64.
        let _ = self.sched.record(from_sched_us.max(1));
        let _ = self.actual.record(from_send_us.max(1));
        match outcome {
            Outcome::Status(code) => {
                match self.statuses.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, n)) => *n += 1,
                    None => self.statuses.push((code, 1)),
                }
                if code >= 500 {
                    self.errors[ErrorKind::Http5xx as usize] += 1;
                } else if code >= 400 {
                    self.errors[ErrorKind::Http4xx as usize] += 1;
                }
            }
            Outcome::Failed(f) => {
                self.errors[f.kind as usize] += 1;
                self.cause(f.kind, f.why, 1);
            }
        }
    }

    fn cause(&mut self, kind: ErrorKind, why: Why, n: u64) {
        if let Some((_, _, m)) = self.causes.iter_mut().find(|(k, w, _)| *k == kind && *w == why) {
            *m += n;
        } else if self.causes.len() < MAX_CAUSES {
            self.causes.push((kind, why, n));
        } else {
            let other = Why::Said(OTHER_CAUSES);
            match self.causes.iter_mut().find(|(k, w, _)| *k == kind && *w == other) {
                Some((_, _, m)) => *m += n,
                None => self.causes.push((kind, other, n)),
            }
        }
    }

    pub fn add(&mut self, other: &Acc) {
        let _ = self.sched.add(&other.sched);
        let _ = self.actual.add(&other.actual);
        self.requests += other.requests;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        for (code, n) in &other.statuses {
            match self.statuses.iter_mut().find(|(c, _)| c == code) {
                Some((_, m)) => *m += n,
                None => self.statuses.push((*code, *n)),
            }
        }
        for (kind, why, n) in &other.causes {
            self.cause(*kind, why.clone(), *n);
        }
    }

    /// The causes, the most frequent first.
    fn error_causes(&self) -> Vec<Cause> {
        let mut c: Vec<Cause> = self
            .causes
            .iter()
            .map(|(k, w, n)| Cause {
                kind: k.name(),
                cause: w.as_str().to_string(),
                count: *n,
            })
            .collect();
        c.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(b.kind)));
        c
    }

    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn summary(&self) -> Summary {
        Summary {
            requests: self.requests,
            ok: self.requests - self.error_count(),
            errors: self.error_count(),
            errors_by_kind: KINDS
                .iter()
                .filter(|k| self.errors[**k as usize] > 0)
                .map(|k| (k.name().to_string(), self.errors[*k as usize]))
                .collect(),
            status_codes: self.statuses.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            error_causes: self.error_causes(),
            latency_ms: Latency::of(&self.sched, self.requests),
            service_time_ms: Latency::of(&self.actual, self.requests),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>, n: u64) -> Latency {
        if n == 0 {
            return Latency::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            mean: h.mean() / 1000.0,
            p50: q(0.5),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
            p99_9: q(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }

    pub fn percentiles(&self) -> crate::model::Percentiles {
        crate::model::Percentiles {
            p50: self.p50,
            p90: self.p90,
            p95: self.p95,
            p99: self.p99,
            max: self.max,
        }
    }
}

/// What a report says of some requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub status_codes: BTreeMap<String, u64>,
    /// Why requests failed (4xx/5xx answers are in `status_codes`), the most frequent first.
    pub error_causes: Vec<Cause>,
    /// From the scheduled send time: coordinated omission cannot hide a stall here.
    pub latency_ms: Latency,
    /// From the actual send time (what most load generators report).
    pub service_time_ms: Latency,
}

/// Failures of one kind for one reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    pub kind: &'static str,
    pub cause: String,
    pub count: u64,
}

/// How many shards the connection tasks record into (a task uses `slot % SHARDS`).
pub const SHARDS: usize = 8;

/// The connection tasks' side: record a request, binned by the second it completed in.
pub struct Recorder {
    start: Instant,
    shards: Vec<Mutex<Vec<(u64, Acc)>>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// One request: due at `sched`, sent at `sent`, done at `done`.
    pub fn record(&self, slot: usize, sched: Instant, sent: Instant, done: Instant, outcome: Outcome) {
        let sec = done.saturating_duration_since(self.start).as_secs();
        let from_sched = done.saturating_duration_since(sched).as_micros() as u64;
        let from_send = done.saturating_duration_since(sent).as_micros() as u64;
        let Ok(mut shard) = self.shards[slot % SHARDS].lock() else {
            return;
        };
        if let Some((_, acc)) = shard.iter_mut().find(|(s, _)| *s == sec) {
            acc.record(from_sched, from_send, outcome);
        } else {
            let mut acc = Acc::default();
            acc.record(from_sched, from_send, outcome);
            shard.push((sec, acc));
        }
    }

    /// Everything recorded for seconds up to `sec` (late arrivals for earlier seconds included).
    pub fn take_until(&self, sec: u64) -> Acc {
        let mut out = Acc::default();
        for shard in &self.shards {
            let taken: Vec<(u64, Acc)> = match shard.lock() {
                Ok(mut s) => {
                    let (old, keep): (Vec<_>, Vec<_>) = s.drain(..).partition(|(s, _)| *s <= sec);
                    *s = keep;
                    old
                }
                Err(_) => continue,
            };
            for (_, acc) in &taken {
                out.add(acc);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_stall_shows_from_the_scheduled_time_only() {
        let start = Instant::now();
        let r = Recorder::new(start);
        // 100 requests due every 10 ms; the server stalls 500 ms on the 50th, so the next 49
        // leave late (when the connection frees up) but are answered in 1 ms.
        let ms = Duration::from_millis;
        let mut free = start;
        for k in 0..100u64 {
            let sched = start + ms(10 * k);
            let sent = sched.max(free);
            let took = if k == 50 { ms(500) } else { ms(1) };
            let done = sent + took;
            free = done;
            r.record(k as usize, sched, sent, done, Outcome::Status(200));
        }
        let s = r.take_until(10).summary();
        assert_eq!(s.requests, 100);
        assert!(s.service_time_ms.p99 <= 2.0, "{:?}", s.service_time_ms);
        assert!(s.latency_ms.p90 >= 100.0, "{:?}", s.latency_ms);
        assert!((499.0..=502.0).contains(&s.latency_ms.max), "{:?}", s.latency_ms);
    }

    #[test]
    fn errors_and_statuses_are_counted_by_kind_and_seconds_are_kept_apart() {
        let start = Instant::now();
        let r = Recorder::new(start);
        let s = Duration::from_secs;
        r.record(0, start, start, start + s(0), Outcome::Status(200));
        r.record(1, start, start, start + s(0), Outcome::Status(503));
        r.record(2, start, start, start + s(1), Outcome::Status(404));
        r.record(
            3,
            start,
            start,
            start + s(1),
            Outcome::Failed(Failure::new(ErrorKind::Timeout, "slow")),
        );
        let first = r.take_until(0).summary();
        assert_eq!((first.requests, first.ok, first.errors), (2, 1, 1));
        assert_eq!(first.errors_by_kind["http_5xx"], 1);
        assert_eq!(first.status_codes["503"], 1);
        let second = r.take_until(1).summary();
        assert_eq!((second.requests, second.errors), (2, 2));
        assert_eq!(second.errors_by_kind["timeout"], 1);
        assert_eq!(second.errors_by_kind["http_4xx"], 1);
        assert_eq!(r.take_until(5).requests, 0);
        assert_eq!(
            second.error_causes,
            vec![Cause {
                kind: "timeout",
                cause: "slow".into(),
                count: 1
            }],
            "a 4xx answer is a status, not a cause"
        );
    }

    #[test]
    fn causes_are_counted_by_kind_and_words_within_a_bound() {
        let mut a = Acc::default();
        let fail = |kind, why: String| Outcome::Failed(Failure::text(kind, why));
        for i in 0..100u64 {
            a.record(1, 1, fail(ErrorKind::Connect, format!("cause {}", i % 40)));
        }
        a.record(
            1,
            1,
            Outcome::Failed(Failure::new(ErrorKind::Io, "connection reset by the server")),
        );
        a.record(1, 1, fail(ErrorKind::Io, "connection reset by the server".into()));
        let c = a.summary().error_causes;
        let total: u64 = c.iter().map(|c| c.count).sum();
        assert_eq!(total, 102, "every failure counted under some cause: {c:?}");
        assert!(c.len() <= MAX_CAUSES + KINDS.len(), "{}", c.len());
        let other = c
            .iter()
            .find(|c| c.cause == OTHER_CAUSES)
            .expect("the rest as other causes");
        assert_eq!(other.kind, "connect");
        let io = c.iter().find(|c| c.kind == "io").expect("io");
        assert_eq!(
            io.count, 2,
            "fixed and agent-sent words of one cause are one cause"
        );
        assert_eq!(
            c[0].count,
            c.iter().map(|c| c.count).max().unwrap(),
            "most frequent first"
        );
    }
}
