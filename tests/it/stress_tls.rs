//! `ecscale stress` over TLS against an in-process rustls server with a CA made in the test:
//! HTTP/1.1 and h2 by ALPN, a wrong CA and an expired certificate refused before the run,
//! `--insecure`, mutual TLS, and `--resolve` sending the URL's name as SNI to another address.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

use crate::support::{ecscale, path_str, run_async, write};

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate: its PEM, its key's PEM, and both for rustls.
struct Leaf {
    pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for `names`, for a server or a client, expired or not.
    fn leaf(&self, names: &[&str], client: bool, expired: bool) -> Leaf {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn write_pem(&self, dir: &Path, name: &str) -> String {
        path_str(&write(dir, name, &self.cert.pem())).to_string()
    }
}

/// The server's side: its certificate, the protocols it offers, and the CA its clients need.
struct ServerTls {
    leaf: Leaf,
    alpn: Vec<&'static [u8]>,
    client_ca: Option<CertificateDer<'static>>,
}

/// A TLS server answering 200; it records the SNI names it was asked for.
struct TlsServer {
    port: u16,
    requests: Arc<AtomicU64>,
    sni: Arc<Mutex<Vec<String>>>,
    /// Requests arriving in this window are held until it ends.
    stall: Arc<Mutex<Option<(Instant, Instant)>>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsServer {
    async fn start(tls: ServerTls) -> TlsServer {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match tls.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).unwrap();
                let v =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls.leaf.key_der.clone()));
        let mut config = builder.with_single_cert(vec![tls.leaf.der.clone()], key).unwrap();
        config.alpn_protocols = tls.alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TlsServer {
            port: listener.local_addr().unwrap().port(),
            requests: Arc::default(),
            sni: Arc::default(),
            stall: Arc::default(),
        };
        let (requests, sni, stall) = (s.requests.clone(), s.sni.clone(), s.stall.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, requests, sni, stall) =
                    (acceptor.clone(), requests.clone(), sni.clone(), stall.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_, conn) = stream.get_ref();
                    sni.lock()
                        .unwrap()
                        .push(conn.server_name().unwrap_or("").to_string());
                    let h2 = conn.alpn_protocol() == Some(b"h2");
                    let service =
                        hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                            requests.fetch_add(1, Ordering::Relaxed);
                            let window = *stall.lock().unwrap();
                            async move {
                                if let Some((from, until)) = window {
                                    let now = Instant::now();
                                    if now >= from && now < until {
                                        tokio::time::sleep_until(until.into()).await;
                                    }
                                }
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                                    b"container-1\n",
                                ))))
                            }
                        });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    if h2 {
                        let _ =
                            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                                .serve_connection(io, service)
                                .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        s
    }
}

fn server_tls(ca: &Ca, expired: bool) -> ServerTls {
    ServerTls {
        leaf: ca.leaf(&["localhost", "api.test"], false, expired),
        alpn: vec![b"h2", b"http/1.1"],
        client_ca: None,
    }
}

async fn stress(args: &[&str]) -> (i32, String, String) {
    let mut cmd = ecscale();
    cmd.arg("stress").args(args).args(["--progress", "off"]);
    run_async(cmd).await
}

/// `stress` against `url` at `rate` for one second, with `extra` flags.
async fn for_a_second(url: &str, rate: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["--url", url, "--rate", rate, "--duration", "1s"];
    args.extend_from_slice(extra);
    stress(&args).await
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every request answered 200, at the planned rate.
fn all_answered(r: &Value) {
    let t = &r["totals"];
    assert!(t["requests"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["status_codes"]["200"], t["requests"], "{t}");
    assert!(t["rate_achieved"].as_f64().unwrap() >= 0.99, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2_over_tls_hold_the_rate_and_report_the_handshakes() {
    let ca = Ca::new("ecscale test CA");
    let server = TlsServer::start(server_tls(&ca, false)).await;
    let dir = tempfile::tempdir().unwrap();
    let cacert = ca.write_pem(dir.path(), "ca.pem");
    let url = format!("https://localhost:{}/hello", server.port);
    for (http2, alpn) in [(false, "http/1.1"), (true, "h2")] {
        let out = dir
            .path()
            .join(format!("run-h{}.json", if http2 { 2 } else { 1 }));
        let mut args = vec![
            "--url",
            &url,
            "--rate",
            "1000",
            "--duration",
            "2s",
            "--connections",
            "4",
            "--cacert",
            &cacert,
            "--json",
            path_str(&out),
        ];
        if http2 {
            args.push("--http2");
        }
        let (code, stdout, stderr) = stress(&args).await;
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let r = json(&out);
        all_answered(&r);
        let tls = &r["tls"];
        assert_eq!(tls["version"], "TLS 1.3", "{tls}");
        assert_eq!(tls["alpn"], alpn, "{tls}");
        assert_eq!(tls["insecure"], false);
        assert_eq!(tls["handshakes"], r["connects"], "{tls}");
        assert!(tls["handshake_ms_p50"].as_f64().unwrap() > 0.0, "{tls}");
        assert!(tls["handshake_ms_p99"].as_f64().unwrap() >= tls["handshake_ms_p50"].as_f64().unwrap());
        assert!(tls["cipher"].as_str().unwrap().starts_with("TLS13_"), "{tls}");
        assert!(stdout.contains("  tls TLS 1.3 TLS13_"), "{stdout}");
    }
    assert_eq!(
        server.sni.lock().unwrap().first().map(String::as_str),
        Some("localhost")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_over_tls_report_their_handshakes_added_up() {
    let ca = Ca::new("ecscale test CA");
    let server = TlsServer::start(server_tls(&ca, false)).await;
    let dir = tempfile::tempdir().unwrap();
    ca.write_pem(dir.path(), "ca.pem");
    let plan = write(
        dir.path(),
        "plan.yaml",
        &format!(
            "name: dist tls\ntargets: ['https://localhost:{}/hello']\ntls: {{cacert: ca.pem}}\nconnections: 4\nphases:\n  - {{duration: 2s, rate: 400}}\n",
            server.port
        ),
    );
    let out = dir.path().join("r.json");
    let args = [
        "--plan",
        path_str(&plan),
        "--agents",
        "2",
        "--json",
        path_str(&out),
    ];
    let (code, stdout, stderr) = stress(&args).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&out);
    assert_eq!(r["totals"]["requests"], 800, "{}", r["totals"]);
    let tls = &r["tls"];
    assert_eq!(tls["version"], "TLS 1.3", "{tls}");
    assert_eq!(tls["alpn"], "http/1.1", "{tls}");
    // Each agent's connections are in the merged histogram: 2 connections each at least.
    assert_eq!(tls["handshakes"], r["connects"], "{tls}");
    assert!(tls["handshakes"].as_u64().unwrap() >= 4, "{tls}");
    assert!(tls["handshake_ms_p50"].as_f64().unwrap() > 0.0, "{tls}");
    assert!(stdout.contains("  tls TLS 1.3 TLS13_"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_an_expired_certificate_fails_before_the_run_and_insecure_passes() {
    let ca = Ca::new("the server's CA");
    let other = Ca::new("another CA");
    let dir = tempfile::tempdir().unwrap();
    let other_pem = other.write_pem(dir.path(), "other.pem");
    let ca_pem = ca.write_pem(dir.path(), "ca.pem");
    let good = TlsServer::start(server_tls(&ca, false)).await;
    let expired = TlsServer::start(server_tls(&ca, true)).await;
    let cases = [
        (&good, other_pem.as_str(), "the server's certificate is not signed by a trusted CA: give its CA with --cacert FILE (or --insecure)"),
        (&expired, ca_pem.as_str(), "the server's certificate has expired"),
    ];
    for (server, cacert, want) in cases {
        let url = format!("https://localhost:{}/", server.port);
        let (code, stdout, stderr) = for_a_second(&url, "100", &["--cacert", cacert]).await;
        assert_eq!(code, 1, "{stdout}\n{stderr}");
        let line = format!("tls: https://localhost:{}: {want}", server.port);
        assert!(stderr.contains(&line), "«{line}» not in:\n{stderr}");
        assert_eq!(server.requests.load(Ordering::Relaxed), 0, "no request was sent");
        assert!(stdout.is_empty(), "no report: {stdout}");
    }
    // --insecure takes the other CA's server, and says so in the summary and the report.
    let out = dir.path().join("insecure.json");
    let html = dir.path().join("insecure.html");
    let url = format!("https://localhost:{}/", good.port);
    let (code, stdout, stderr) = for_a_second(
        &url,
        "200",
        &[
            "--insecure",
            "--json",
            path_str(&out),
            "--report",
            path_str(&html),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    all_answered(&json(&out));
    assert_eq!(json(&out)["tls"]["insecure"], true);
    assert!(
        stderr.contains("TLS certificates NOT checked (--insecure)"),
        "{stderr}"
    );
    assert!(
        stdout.contains("certificates NOT checked (--insecure)"),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(&html)
        .unwrap()
        .contains("certificates NOT checked (--insecure)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_is_refused_without_a_client_certificate_and_passes_with_one() {
    let ca = Ca::new("ecscale test CA");
    let mut tls = server_tls(&ca, false);
    tls.client_ca = Some(ca.cert.der().clone());
    let server = TlsServer::start(tls).await;
    let dir = tempfile::tempdir().unwrap();
    let cacert = ca.write_pem(dir.path(), "ca.pem");
    let client = ca.leaf(&["load-agent"], true, false);
    let cert = write(dir.path(), "client.pem", &client.pem);
    let key = write(dir.path(), "client.key", &client.key_pem);
    let url = format!("https://localhost:{}/", server.port);
    let base = [
        "--url",
        url.as_str(),
        "--rate",
        "200",
        "--duration",
        "1s",
        "--cacert",
        cacert.as_str(),
    ];
    let (code, stdout, stderr) = stress(&base).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "tls: https://localhost:{}: the server refused the handshake (does it require a client certificate? --cert/--key)",
            server.port
        )),
        "{stderr}"
    );
    let out = dir.path().join("mtls.json");
    let mut args = base.to_vec();
    args.extend([
        "--cert",
        path_str(&cert),
        "--key",
        path_str(&key),
        "--json",
        path_str(&out),
    ]);
    let (code, stdout, stderr) = stress(&args).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    all_answered(&json(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_sends_the_urls_name_as_sni_to_the_chosen_address() {
    let ca = Ca::new("ecscale test CA");
    let server = TlsServer::start(server_tls(&ca, false)).await;
    let dir = tempfile::tempdir().unwrap();
    let cacert = ca.write_pem(dir.path(), "ca.pem");
    let out = dir.path().join("run.json");
    // `api.test` resolves nowhere: only --resolve gets the connection to the server.
    let url = format!("https://api.test:{}/", server.port);
    let resolve = format!("api.test:{}:127.0.0.1", server.port);
    let (code, stdout, stderr) = for_a_second(
        &url,
        "200",
        &[
            "--cacert",
            &cacert,
            "--resolve",
            &resolve,
            "--json",
            path_str(&out),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    all_answered(&json(&out));
    let sni = server.sni.lock().unwrap().clone();
    assert!(!sni.is_empty() && sni.iter().all(|n| n == "api.test"), "{sni:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_refused_clearly_when_the_server_offers_only_http1() {
    let ca = Ca::new("ecscale test CA");
    let mut tls = server_tls(&ca, false);
    tls.alpn = vec![b"http/1.1"];
    let server = TlsServer::start(tls).await;
    let dir = tempfile::tempdir().unwrap();
    let cacert = ca.write_pem(dir.path(), "ca.pem");
    let url = format!("https://localhost:{}/", server.port);
    let (code, stdout, stderr) = for_a_second(&url, "100", &["--http2", "--cacert", &cacert]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    // A rustls server ends the handshake with no_application_protocol; another may pick
    // http/1.1: either way, one clear line.
    let want = format!(
        "tls: https://localhost:{}: the server did not offer h2 over ALPN",
        server.port
    );
    assert!(stderr.contains(&want), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_one_second_stall_shows_in_p99_from_the_scheduled_time_only() {
    let ca = Ca::new("ecscale test CA");
    let server = TlsServer::start(server_tls(&ca, false)).await;
    let dir = tempfile::tempdir().unwrap();
    let cacert = ca.write_pem(dir.path(), "ca.pem");
    let out = dir.path().join("run.json");
    let from = Instant::now() + Duration::from_millis(1500);
    *server.stall.lock().unwrap() = Some((from, from + Duration::from_secs(1)));
    let url = format!("https://localhost:{}/", server.port);
    let (code, stdout, stderr) = stress(&[
        "--url",
        &url,
        "--rate",
        "2000",
        "--duration",
        "4s",
        "--connections",
        "50",
        "--cacert",
        &cacert,
        "--json",
        path_str(&out),
    ])
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let t = &json(&out)["totals"];
    let corrected = t["latency_ms"]["p99"].as_f64().unwrap();
    let uncorrected = t["service_time_ms"]["p99"].as_f64().unwrap();
    assert!(
        (800.0..=1_100.0).contains(&corrected),
        "p99 from scheduled: {corrected} ms"
    );
    assert!(uncorrected < 100.0, "p99 from the actual send: {uncorrected} ms");
    assert!(
        t["service_time_ms"]["max"].as_f64().unwrap() >= 900.0,
        "the stalled requests themselves"
    );
}

/// A certificate as `openssl req -x509` makes it: self-signed, marked a CA, used by the
/// server itself; expired or not.
fn self_signed(expired: bool) -> Leaf {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Leaf {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_self_signed_certificate_that_expired_is_refused() {
    let leaf = self_signed(true);
    let dir = tempfile::tempdir().unwrap();
    let cacert = write(dir.path(), "old.pem", &leaf.pem);
    let server = TlsServer::start(ServerTls {
        leaf,
        alpn: vec![b"http/1.1"],
        client_ca: None,
    })
    .await;
    let url = format!("https://localhost:{}/", server.port);
    let (code, _, stderr) = for_a_second(&url, "100", &["--cacert", path_str(&cacert)]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the server's certificate has expired"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_server_certificate_given_with_cacert_is_trusted_for_its_names_only() {
    let leaf = self_signed(false);
    let dir = tempfile::tempdir().unwrap();
    let cacert = write(dir.path(), "self.pem", &leaf.pem);
    let server = TlsServer::start(ServerTls {
        leaf,
        alpn: vec![b"http/1.1"],
        client_ca: None,
    })
    .await;
    let out = dir.path().join("run.json");
    let url = format!("https://localhost:{}/", server.port);
    let (code, stdout, stderr) = for_a_second(
        &url,
        "200",
        &["--cacert", path_str(&cacert), "--json", path_str(&out)],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    all_answered(&json(&out));
    // The same certificate for a name it does not carry: refused before the run.
    let url = format!("https://127.0.0.1:{}/", server.port);
    let (code, _, stderr) = for_a_second(&url, "100", &["--cacert", path_str(&cacert)]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the server's certificate is not valid for the URL's host"),
        "{stderr}"
    );
}

/// A TLS server that answers one request per connection read, keeps the connection, and closes
/// it (close_notify) once it has been idle for `idle`; counts the connections it accepted.
async fn closing_server(leaf: &Leaf, idle: Duration) -> (u16, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut have = 0;
                loop {
                    // The next request, or a close once idle too long.
                    let read = tokio::time::timeout(idle, tls.read(&mut buf[have..])).await;
                    let Ok(Ok(n)) = read else {
                        let _ = tls.shutdown().await;
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                        if tls.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_tls_connection_the_server_closed_while_idle_is_dialled_again_not_failed() {
    let leaf = self_signed(false);
    let dir = tempfile::tempdir().unwrap();
    let cacert = write(dir.path(), "self.pem", &leaf.pem);
    // The server closes connections idle for 300 ms; requests come one a second.
    let (port, connections) = closing_server(&leaf, Duration::from_millis(300)).await;
    let out = dir.path().join("run.json");
    let url = format!("https://localhost:{port}/");
    let args = [
        "--url",
        url.as_str(),
        "--rate",
        "1",
        "--duration",
        "4s",
        "--connections",
        "1",
        "--cacert",
        path_str(&cacert),
        "--json",
        path_str(&out),
    ];
    let (code, stdout, stderr) = stress(&args).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&out);
    let t = &r["totals"];
    assert_eq!(t["requests"], 4, "{t}");
    assert_eq!(
        t["status_codes"]["200"], 4,
        "every request answered, none on a dead connection: {t}"
    );
    // One connection per request, and the probe's.
    assert!(
        connections.load(Ordering::Relaxed) >= 4,
        "{}",
        connections.load(Ordering::Relaxed)
    );
}
