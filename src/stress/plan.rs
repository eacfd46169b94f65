//! The stress plan: targets, phases, connection settings, thresholds and the scaling watch,
//! read from a YAML plan file (every mistake at once, with line:column and field path) or built
//! from the command line's flags for the simple case.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::read::yaml::{Node, Span};
use crate::read::{join, Cx, Diagnostics, FromNode, MapReader};

use super::check::{Assertion, Threshold, MAX_WINDOW};
use super::profile::{Load, Schedule, Shape};

/// One request the mix can send.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub method: String,
    pub url: url::Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    pub duration: Duration,
    pub load: Load,
    pub thresholds: Vec<Threshold>,
}

impl Phase {
    /// The open schedule of this phase, if it is open.
    pub fn schedule(&self) -> Option<Schedule> {
        match &self.load {
            Load::Open(shape) => Some(Schedule::new(shape.clone(), self.duration)),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.load {
            Load::Open(_) => "open",
            Load::Closed { .. } => "closed",
            Load::Max => "max",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

/// The ECS service watched while the load runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// The worker config that says how to reach AWS (region, endpoint, credentials).
    pub config: PathBuf,
    pub cluster: String,
    pub service: String,
    pub every: Duration,
}

/// TLS settings for `https://` targets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsOptions {
    /// A PEM file of CA certificates, added to the platform's roots.
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate (shown in the summary and the report).
    pub insecure: bool,
    /// A client certificate chain (PEM) and its key, for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `--resolve HOST:PORT:ADDR`: connections to HOST:PORT go to ADDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    pub host: String,
    pub port: u16,
    pub addr: std::net::IpAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub targets: Vec<Target>,
    pub phases: Vec<Phase>,
    /// Connections per origin (HTTP/1.1: requests in flight at most this many).
    pub connections: usize,
    pub http: HttpVersion,
    /// Requests in flight per HTTP/2 connection.
    pub streams: usize,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub thresholds: Vec<Threshold>,
    pub watch: Option<Watch>,
    pub assertions: Vec<Assertion>,
    pub tls: TlsOptions,
    pub resolve: Vec<Resolve>,
}

impl Plan {
    /// True when a target is `https://`.
    pub fn uses_tls(&self) -> bool {
        self.targets.iter().any(|t| t.url.scheme() == "https")
    }

    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// Phase start offsets from the run's start.
    pub fn starts(&self) -> Vec<Duration> {
        let mut t = Duration::ZERO;
        self.phases
            .iter()
            .map(|p| {
                let s = t;
                t += p.duration;
                s
            })
            .collect()
    }

    /// Every threshold with the phase it is scoped to (`None`: the whole run).
    pub fn all_thresholds(&self) -> Vec<(Option<usize>, &Threshold)> {
        let mut out: Vec<(Option<usize>, &Threshold)> = self.thresholds.iter().map(|t| (None, t)).collect();
        for (i, p) in self.phases.iter().enumerate() {
            out.extend(p.thresholds.iter().map(|t| (Some(i), t)));
        }
        out
    }
}

/// Reads a plan file.
pub fn load(path: &Path) -> Result<Plan, Diagnostics> {
    let source = crate::read::read_source(path, "the stress plan")?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&source, &path.display().to_string(), &base)
}

const TOP: &[&str] = &[
    "name",
    "targets",
    "phases",
    "connections",
    "http",
    "streams",
    "timeout",
    "connect_timeout",
    "thresholds",
    "watch",
    "assertions",
    "tls",
    "resolve",
];

/// Reads a plan from text; `base` anchors the watch's config path.
pub fn load_str(source: &str, file: &str, base: &Path) -> Result<Plan, Diagnostics> {
    let mut cx = Cx::new(file);
    let Some(docs) = crate::read::parse_yaml(source, &mut cx) else {
        return Err(Diagnostics(cx.diags));
    };
    let plan = match docs.as_slice() {
        [doc] => read_plan(doc, &mut cx, base),
        _ => {
            cx.error(
                Span { line: 1, col: 1 },
                "(file)",
                "a stress plan is one YAML document",
            );
            None
        }
    };
    let mut diags = cx.diags;
    diags.sort_by_key(|d| d.span);
    match plan {
        Some(p) if diags.is_empty() => Ok(p),
        _ => Err(Diagnostics(diags)),
    }
}

fn read_plan(doc: &Node, cx: &mut Cx, base: &Path) -> Option<Plan> {
    let mut m = cx.map(doc, "")?;
    let name = m.or(cx, "name", "stress".to_string());
    let targets = m.req_with(cx, "targets", |n, p, cx| list(n, p, cx, "target", read_target));
    let phases = m.req_with(cx, "phases", |n, p, cx| list(n, p, cx, "phase", read_phase));
    let connections = m.or(cx, "connections", 50usize);
    if !(1..=10_000).contains(&connections) {
        cx.error(
            m.span_of("connections"),
            "connections",
            "must be between 1 and 10000",
        );
    }
    let http = m
        .opt_with(cx, "http", |n, p, cx| match n.as_scalar() {
            Some("1.1") | Some("1") | Some("http1") => Some(HttpVersion::Http1),
            Some("2") | Some("2.0") | Some("http2") => Some(HttpVersion::Http2),
            _ => {
                cx.error(n.span, p, format!("expected 1.1 or 2, found {}", n.describe()));
                None
            }
        })
        .unwrap_or(HttpVersion::Http1);
    let streams = m.or(cx, "streams", 10usize);
    if !(1..=1000).contains(&streams) {
        cx.error(m.span_of("streams"), "streams", "must be between 1 and 1000");
    }
    let timeout = m.or(cx, "timeout", Duration::from_secs(10));
    let connect_timeout = m.or(cx, "connect_timeout", Duration::from_secs(3));
    let thresholds = m
        .opt_with(cx, "thresholds", |n, p, cx| {
            list(n, p, cx, "threshold", read_threshold)
        })
        .unwrap_or_default();
    let watch = m.opt_with(cx, "watch", |n, p, cx| read_watch(n, p, cx, base));
    let assertions = m
        .opt_with(cx, "assertions", |n, p, cx| {
            list(n, p, cx, "assertion", |n, p, cx| {
                let s = scalar(n, p, cx)?;
                Assertion::parse(s).map_err(|e| cx.error(n.span, p, e)).ok()
            })
        })
        .unwrap_or_default();
    if !assertions.is_empty() && watch.is_none() && !m.has("watch") {
        cx.error(
            m.span_of("assertions"),
            "assertions",
            "scaling assertions need a `watch:` (config, cluster, service) to observe",
        );
    }
    let tls = m
        .opt_with(cx, "tls", |n, p, cx| read_tls(n, p, cx, base))
        .unwrap_or_default();
    let resolve = m
        .opt_with(cx, "resolve", |n, p, cx| {
            list(n, p, cx, "HOST:PORT:ADDR", |n, p, cx| {
                let s = scalar(n, p, cx)?;
                parse_resolve(s).map_err(|e| cx.error(n.span, p, e)).ok()
            })
        })
        .unwrap_or_default();
    m.finish(cx, TOP);
    Some(Plan {
        name,
        targets: targets?,
        phases: phases?,
        connections,
        http,
        streams,
        timeout,
        connect_timeout,
        thresholds,
        watch,
        assertions,
        tls,
        resolve,
    })
}

/// `tls: {cacert, insecure, cert, key}`; paths from the plan's folder.
fn read_tls(n: &Node, p: &str, cx: &mut Cx, base: &Path) -> Option<TlsOptions> {
    let mut m = cx.map(n, p)?;
    let path = |s: Option<String>| s.map(|s| base.join(s));
    let tls = TlsOptions {
        cacert: path(m.opt(cx, "cacert")),
        insecure: m.or(cx, "insecure", false),
        cert: path(m.opt(cx, "cert")),
        key: path(m.opt(cx, "key")),
    };
    if tls.cert.is_some() != tls.key.is_some() {
        let at = if tls.cert.is_some() { "cert" } else { "key" };
        cx.error(
            m.span_of(at),
            &join(p, at),
            "`cert` and `key` go together (a client certificate and its key)",
        );
    }
    m.finish(cx, &["cacert", "insecure", "cert", "key"]);
    Some(tls)
}

fn scalar<'n>(n: &'n Node, p: &str, cx: &mut Cx) -> Option<&'n str> {
    let s = n.as_scalar();
    if s.is_none() {
        cx.error(n.span, p, format!("expected a string, found {}", n.describe()));
    }
    s
}

pub(crate) fn list<T>(
    n: &Node,
    p: &str,
    cx: &mut Cx,
    what: &str,
    mut read: impl FnMut(&Node, &str, &mut Cx) -> Option<T>,
) -> Option<Vec<T>> {
    let items = crate::read::non_empty_seq(n, p, cx, what, &format!("needs at least one {what}"))?;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match read(item, &format!("{p}[{i}]"), cx) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Checks a target URL: absolute, http(s), with a host.
pub fn parse_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    match u.scheme() {
        "http" | "https" => {}
        other => return Err(format!("`{s}`: scheme {other} is not http or https")),
    }
    if u.host_str().is_none() {
        return Err(format!("`{s}` has no host"));
    }
    Ok(u)
}

fn read_target(n: &Node, p: &str, cx: &mut Cx) -> Option<Target> {
    // A bare string is a GET of that URL.
    if let Some(s) = n.as_scalar() {
        return parse_url(s)
            .map_err(|e| cx.error(n.span, p, e))
            .ok()
            .map(|url| Target {
                method: "GET".into(),
                url,
                headers: vec![],
                body: vec![],
                weight: 1,
            });
    }
    let mut m = cx.map(n, p)?;
    let url = m.req_with(cx, "url", |n, p, cx| {
        let s = scalar(n, p, cx)?;
        parse_url(s).map_err(|e| cx.error(n.span, p, e)).ok()
    });
    let method = m.or(cx, "method", "GET".to_string()).to_ascii_uppercase();
    if hyper::Method::from_bytes(method.as_bytes()).is_err() {
        cx.error(
            m.span_of("method"),
            &join(p, "method"),
            format!("`{method}` is not an HTTP method"),
        );
    }
    let headers = m
        .opt_with(cx, "headers", |n, p, cx| {
            let mut h = cx.map(n, p)?;
            let keys: Vec<&str> = h.keys().collect();
            let mut out = Vec::new();
            for k in keys {
                let v: Option<String> = h.opt(cx, k);
                if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    cx.error(h.span_of(k), &join(p, k), "not a valid header name");
                } else if let Some(v) = v {
                    if hyper::header::HeaderValue::from_str(&v).is_err() {
                        cx.error(h.span_of(k), &join(p, k), "not a valid header value");
                    } else {
                        out.push((k.to_string(), v));
                    }
                }
            }
            // Every key was read above: nothing is left for `finish` to call unknown.
            h.finish(cx, &[]);
            Some(out)
        })
        .unwrap_or_default();
    let body = m
        .opt::<String>(cx, "body")
        .map(String::into_bytes)
        .unwrap_or_default();
    let weight = m.or(cx, "weight", 1u32);
    if weight == 0 {
        cx.error(m.span_of("weight"), &join(p, "weight"), "must be at least 1");
    }
    m.finish(cx, &["url", "method", "headers", "body", "weight"]);
    Some(Target {
        method,
        url: url?,
        headers,
        body,
        weight,
    })
}

fn read_threshold(n: &Node, p: &str, cx: &mut Cx) -> Option<Threshold> {
    if let Some(s) = n.as_scalar() {
        return Threshold::parse(s).map_err(|e| cx.error(n.span, p, e)).ok();
    }
    let mut m = cx.map(n, p)?;
    let check = m.req_with(cx, "check", |n, p, cx| {
        let s = scalar(n, p, cx)?;
        Threshold::parse(s).map_err(|e| cx.error(n.span, p, e)).ok()
    });
    let window = m.opt::<Duration>(cx, "window");
    if let Some(w) = window {
        if w < Duration::from_secs(1) || w > MAX_WINDOW || w.subsec_nanos() != 0 {
            cx.error(
                m.span_of("window"),
                &join(p, "window"),
                format!("a window is whole seconds from 1s to {}s", MAX_WINDOW.as_secs()),
            );
        }
    }
    let abort = m.or(cx, "abort", false);
    m.finish(cx, &["check", "window", "abort"]);
    let mut t = check?;
    t.window = window;
    t.abort = abort;
    Some(t)
}

fn rate(m: &mut MapReader, cx: &mut Cx, key: &str) -> Option<f64> {
    let v: f64 = m.req(cx, key)?;
    if !(0.0..=10_000_000.0).contains(&v) {
        cx.error(
            m.span_of(key),
            &join(m.path(), key),
            "a rate is 0 to 10,000,000 requests per second",
        );
        return None;
    }
    Some(v)
}

fn read_shape(kind: &str, n: &Node, p: &str, cx: &mut Cx, duration: Option<Duration>) -> Option<Shape> {
    if kind == "rate" {
        let v = f64::from_node(n, p, cx)?;
        if !(v > 0.0 && v <= 10_000_000.0) {
            cx.error(
                n.span,
                p,
                "a rate is above 0 and at most 10,000,000 requests per second",
            );
            return None;
        }
        return Some(Shape::Constant(v));
    }
    let mut m = cx.map(n, p)?;
    let shape = match kind {
        "ramp" => {
            let (from, to) = (rate(&mut m, cx, "from"), rate(&mut m, cx, "to"));
            m.finish(cx, &["from", "to"]);
            Shape::Ramp { from: from?, to: to? }
        }
        "steps" => {
            let (from, to) = (rate(&mut m, cx, "from"), rate(&mut m, cx, "to"));
            let count: Option<u32> = m.req(cx, "count");
            if count == Some(0) {
                cx.error(m.span_of("count"), &join(p, "count"), "at least 1 step");
            }
            m.finish(cx, &["from", "to", "count"]);
            Shape::Steps {
                from: from?,
                to: to?,
                count: count.filter(|c| *c > 0)?,
            }
        }
        "spike" => {
            let (base, peak) = (rate(&mut m, cx, "base"), rate(&mut m, cx, "peak"));
            let at: Option<Duration> = m.req(cx, "at");
            let length: Option<Duration> = m.req(cx, "length");
            if let (Some(a), Some(l), Some(d)) = (at, length, duration) {
                if a + l > d {
                    cx.error(
                        m.span_of("length"),
                        &join(p, "length"),
                        "the spike ends after the phase",
                    );
                }
            }
            m.finish(cx, &["base", "peak", "at", "length"]);
            Shape::Spike {
                base: base?,
                peak: peak?,
                at: at?,
                length: length?,
            }
        }
        _ => {
            let (mean, amplitude) = (rate(&mut m, cx, "mean"), rate(&mut m, cx, "amplitude"));
            let period: Option<Duration> = m.req(cx, "period");
            if let (Some(mn), Some(a)) = (mean, amplitude) {
                if a > mn {
                    cx.error(
                        m.span_of("amplitude"),
                        &join(p, "amplitude"),
                        "the amplitude is larger than the mean: the rate would go below 0",
                    );
                }
            }
            if period == Some(Duration::ZERO) {
                cx.error(m.span_of("period"), &join(p, "period"), "must be above 0");
            }
            m.finish(cx, &["mean", "amplitude", "period"]);
            Shape::Sine {
                mean: mean?,
                amplitude: amplitude?,
                period: period.filter(|p| !p.is_zero())?,
            }
        }
    };
    Some(shape)
}

const LOADS: &[&str] = &["rate", "ramp", "steps", "spike", "sine", "users", "max"];

/// One phase of a plan's `phases:` (also read by the demo's scenario file).
pub(crate) fn read_phase(n: &Node, p: &str, cx: &mut Cx) -> Option<Phase> {
    let mut m = cx.map(n, p)?;
    let name: Option<String> = m.opt(cx, "name");
    let duration: Option<Duration> = m.req(cx, "duration");
    if duration == Some(Duration::ZERO) {
        cx.error(m.span_of("duration"), &join(p, "duration"), "must be above 0");
    }
    let given: Vec<&str> = LOADS.iter().copied().filter(|k| m.has(k)).collect();
    let load = match given.as_slice() {
        [] => {
            cx.error(
                m.span(),
                p,
                "a phase needs one load: rate, ramp, steps, spike, sine (open model), users (closed model) or max: true",
            );
            None
        }
        [one] => {
            let node = m.take(one)?;
            let path = join(p, one);
            match *one {
                "users" => {
                    let users = usize::from_node(node, &path, cx).filter(|u| (1..=10_000).contains(u));
                    if users.is_none() {
                        cx.error(node.span, &path, "users is a count from 1 to 10000");
                    }
                    let think = m.or(cx, "think", Duration::ZERO);
                    users.map(|users| Load::Closed { users, think })
                }
                "max" => match bool::from_node(node, &path, cx) {
                    Some(true) => Some(Load::Max),
                    Some(false) => {
                        cx.error(node.span, &path, "max: true, or another load");
                        None
                    }
                    None => None,
                },
                kind => read_shape(kind, node, &path, cx, duration).map(Load::Open),
            }
        }
        several => {
            cx.error(
                m.span(),
                p,
                format!("a phase has one load, found {}", several.join(", ")),
            );
            None
        }
    };
    if m.has("think") && !matches!(load, Some(Load::Closed { .. })) {
        cx.error(
            m.span_of("think"),
            &join(p, "think"),
            "think time goes with users (the closed model)",
        );
        m.take("think");
    }
    let thresholds = m
        .opt_with(cx, "thresholds", |n, p, cx| {
            list(n, p, cx, "threshold", read_threshold)
        })
        .unwrap_or_default();
    let mut known = vec!["name", "duration", "think", "thresholds"];
    known.extend(LOADS);
    m.finish(cx, &known);
    let duration = duration.filter(|d| !d.is_zero())?;
    let load = load?;
    Some(Phase {
        name: name.unwrap_or_else(|| p.trim_start_matches("phases").to_string()),
        duration,
        load,
        thresholds,
    })
}

fn read_watch(n: &Node, p: &str, cx: &mut Cx, base: &Path) -> Option<Watch> {
    let mut m = cx.map(n, p)?;
    let config: Option<String> = m.req(cx, "config");
    let cluster: Option<String> = m.req(cx, "cluster");
    let service: Option<String> = m.req(cx, "service");
    let every = m.or(cx, "every", Duration::from_secs(5));
    if every < Duration::from_millis(100) {
        cx.error(m.span_of("every"), &join(p, "every"), "at least 100ms");
    }
    m.finish(cx, &["config", "cluster", "service", "every"]);
    Some(Watch {
        config: base.join(config?),
        cluster: cluster?,
        service: service?,
        every,
    })
}

/// `HOST:PORT:ADDR` (curl's `--resolve`): connections to HOST:PORT go to ADDR (IPv6 in
/// brackets), the TLS name and the Host header stay HOST.
pub fn parse_resolve(s: &str) -> Result<Resolve, String> {
    let form = || format!("`{s}`: write HOST:PORT:ADDR (curl's form), e.g. api.example.com:443:10.0.0.5");
    let (host, rest) = s.split_once(':').ok_or_else(form)?;
    let (port, addr) = rest.split_once(':').ok_or_else(form)?;
    let port: u16 = port.parse().map_err(|_| form())?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let addr: std::net::IpAddr = addr.parse().map_err(|_| form())?;
    if host.is_empty() {
        return Err(form());
    }
    Ok(Resolve {
        host: host.to_ascii_lowercase(),
        port,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_plan_reads_with_every_shape() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stress/release-check.yaml");
        let plan = load(&path).unwrap_or_else(|d| panic!("{d}"));
        let kinds: Vec<&str> = plan.phases.iter().map(Phase::kind).collect();
        assert_eq!(kinds, ["open", "open", "open", "open", "open", "open", "closed"]);
        assert_eq!(plan.targets.len(), 2);
        assert_eq!(plan.targets[1].method, "POST");
        assert_eq!(
            plan.duration(),
            Duration::from_secs(30 + 120 + 180 + 60 + 240 + 60 + 60)
        );
        assert_eq!(plan.all_thresholds().len(), 5);
        assert_eq!(plan.assertions.len(), 4);
        let watch = plan.watch.unwrap();
        assert!(watch.config.ends_with("examples/stress/../ecscale.yaml"));
        assert!(watch.config.exists());
    }

    #[test]
    fn flags_like_yaml_mistakes_are_positioned() {
        let e = load_str(
            "targets: ['http://x/']\nphases:\n  - {duration: 1s, sine: {mean: 10, amplitude: 20, period: 1s}}\n  - {duration: 1s, rate: 5, think: 1s}\n",
            "p.yaml",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.yaml:3:"), "{e}");
        assert!(
            e.contains("phases[0].sine.amplitude: the amplitude is larger than the mean"),
            "{e}"
        );
        assert!(e.contains("phases[1].think: think time goes with users"), "{e}");
    }

    #[test]
    fn tls_and_resolve_keys_read_from_the_plans_folder_and_their_mistakes_are_positioned() {
        let p = load_str(
            "targets: ['https://web.internal/']\nphases: [{duration: 1s, rate: 5}]\ntls: {cacert: ca.pem, cert: c.pem, key: c.key}\nresolve: ['web.internal:443:10.0.3.17']\n",
            "p.yaml",
            Path::new("plans"),
        )
        .unwrap();
        assert!(p.uses_tls());
        assert_eq!(p.tls.cacert.as_deref(), Some(Path::new("plans/ca.pem")));
        assert_eq!(p.tls.key.as_deref(), Some(Path::new("plans/c.key")));
        assert!(!p.tls.insecure);
        assert_eq!(
            p.resolve,
            vec![Resolve {
                host: "web.internal".into(),
                port: 443,
                addr: "10.0.3.17".parse().unwrap()
            }]
        );
        let e = load_str(
            "targets: ['https://w/']\nphases: [{duration: 1s, rate: 5}]\ntls: {cert: c.pem, insecure: maybe}\nresolve: ['w:443']\n",
            "p.yaml",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.yaml:3:") && e.contains("tls.insecure"), "{e}");
        assert!(e.contains("tls.cert: `cert` and `key` go together"), "{e}");
        assert!(
            e.contains("p.yaml:4:11: resolve[0]: `w:443`: write HOST:PORT:ADDR"),
            "{e}"
        );
    }
}
