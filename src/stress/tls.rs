//! TLS for stress targets (rustls, no OpenSSL): the client configuration a plan asks for, the
//! handshake with SNI and ALPN, and the stream the HTTP layers run over.
//!
//! Roots are the platform's (the system store) plus `--cacert`; `--insecure` checks nothing
//! (and says so in the summary and the report); `--cert/--key` present a client certificate.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[cfg(test)]
use super::plan::parse_resolve;
use super::plan::{HttpVersion, TlsOptions};
pub use super::report::{Negotiated, TlsTally};

/// The client side of every TLS connection of a run.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    http: HttpVersion,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of a PEM file, named in every error.
fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let it = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))?;
    let certs = it
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in it (PEM `BEGIN CERTIFICATE`)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The platform's store, read once per process (a store that cannot be read leaves only
/// `--cacert`).
fn platform_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// The platform's roots plus `cacert`'s, and `cacert`'s certificates themselves (pinned).
fn roots(cacert: Option<&Path>) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), String> {
    let mut roots = RootCertStore::empty();
    for c in platform_roots() {
        let _ = roots.add(c.clone());
    }
    let mut pinned = Vec::new();
    if let Some(p) = cacert {
        for c in certificates(p, "--cacert")? {
            roots
                .add(c.clone())
                .map_err(|e| format!("--cacert {}: not a certificate rustls accepts: {e}", p.display()))?;
            pinned.push(c);
        }
    }
    Ok((roots, pinned))
}

/// One DER element: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// An X.509 time (UTCTime or GeneralizedTime, UTC) as Unix seconds.
fn der_time(tag: u8, body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?.strip_suffix('Z')?;
    let full = match tag {
        // UTCTime: YYMMDDHHMMSS, years 1950-2049.
        0x17 if text.len() == 12 => {
            let yy: i32 = text[..2].parse().ok()?;
            format!("{}{}", if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => text.to_string(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// A certificate's (notBefore, notAfter), Unix seconds.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, then validity.
    let (tag, _, after) = der(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (_, validity, _) = der(rest)?;
    let (t1, b1, more) = der(validity)?;
    let (t2, b2, _) = der(more)?;
    Some((der_time(t1, b1)?, der_time(t2, b2)?))
}

/// The server's certificate: the usual chain check, and one given itself in `--cacert` (a
/// self-signed one made with `openssl req -x509`, which marks it a CA) is trusted as it is, for
/// the names it carries. Without a chain check (`--insecure`) every certificate is taken.
/// Handshake signatures are checked either way.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                // Pinned is trusted as issuer, not as timeless: its validity still holds.
                let (from, until) = validity(end_entity.as_ref()).ok_or(
                    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
                )?;
                let now = now.as_secs() as i64;
                if now > until {
                    return Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::Expired,
                    ));
                }
                if now < from {
                    return Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidYet,
                    ));
                }
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl Verifier {
    fn new(options: &TlsOptions, provider: &Arc<CryptoProvider>) -> Result<Verifier, String> {
        let algorithms = provider.signature_verification_algorithms;
        if options.insecure {
            return Ok(Verifier {
                webpki: None,
                pinned: Vec::new(),
                algorithms,
            });
        }
        let (roots, pinned) = roots(options.cacert.as_deref())?;
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("TLS roots: {e}"))?;
        Ok(Verifier {
            webpki: Some(webpki),
            pinned,
            algorithms,
        })
    }
}

impl Tls {
    /// The configuration for `options`, with ALPN for `http` (h2, or http/1.1).
    pub fn new(options: &TlsOptions, http: HttpVersion) -> Result<Tls, String> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier::new(options, &provider)?));
        let mut config = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "--cert")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--key {}: no private key in it (PEM): {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--cert/--key: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("--cert and --key go together (a client certificate and its key)".into()),
        };
        config.alpn_protocols = match http {
            HttpVersion::Http2 => vec![b"h2".to_vec()],
            HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
        };
        Ok(Tls {
            config: Arc::new(config),
            http,
        })
    }

    /// The handshake over `tcp` with `host` as SNI: the stream, how long it took and what was
    /// negotiated. Over HTTP/2 the server must choose h2.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<(Stream, Duration, Negotiated), String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` cannot be a TLS server name: {e}"))?;
        let t = Instant::now();
        let s = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| match rustls_error(&e) {
                Some(rustls::Error::NoApplicationProtocol)
                | Some(rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol))
                    if self.http == HttpVersion::Http2 =>
                {
                    "the server did not offer h2 over ALPN: use `http: 1.1` (no --http2)".to_string()
                }
                _ => handshake_error(&e),
            })?;
        let took = t.elapsed();
        let (_, conn) = s.get_ref();
        let negotiated = Negotiated {
            version: conn.protocol_version().map_or("?".into(), |v| {
                v.as_str()
                    .unwrap_or("?")
                    .replace('_', ".")
                    .replace("TLSv", "TLS ")
            }),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or("?".into(), |c| format!("{:?}", c.suite())),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        };
        if self.http == HttpVersion::Http2 && negotiated.alpn.as_deref() != Some("h2") {
            return Err(format!(
                "the server did not offer h2 over ALPN (it chose {}): use `http: 1.1` (no --http2)",
                negotiated.alpn.as_deref().unwrap_or("nothing")
            ));
        }
        Ok((Stream::Tls(Box::new(s)), took, negotiated))
    }
}

/// The rustls error inside an I/O error, if any.
pub fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    crate::aws::cause::<rustls::Error>(e)
}

/// What went wrong in the handshake, in words an SRE acts on.
fn handshake_error(e: &io::Error) -> String {
    match rustls_error(e) {
        Some(r) => describe(r),
        None => format!("TLS handshake failed: {e}"),
    }
}

/// A rustls error with what to do about it.
pub fn describe(r: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let hint = match r {
        E::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA: give its CA with --cacert FILE (or --insecure)"
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "the server's certificate has expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet (check the clocks)"
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for the URL's host (with --resolve, the URL keeps the name)"
        }
        E::AlertReceived(A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::HandshakeFailure) => {
            "the server refused the handshake (does it require a client certificate? --cert/--key)"
        }
        E::NoApplicationProtocol | E::AlertReceived(A::NoApplicationProtocol) => {
            "the server offers none of the protocols asked for over ALPN"
        }
        _ => "",
    };
    if hint.is_empty() {
        format!("TLS handshake failed: {r}")
    } else {
        format!("{hint} ({r})")
    }
}

/// A connection to a target: plain TCP or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(us: &[u64], resumed: u64, version: Option<&str>) -> TlsTally {
        let mut h = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
        us.iter().for_each(|v| h.record(*v).unwrap());
        TlsTally {
            negotiated: version.map(|v| Negotiated {
                version: v.into(),
                cipher: "TLS13_AES_128_GCM_SHA256".into(),
                alpn: None,
                resumed: false,
            }),
            handshakes: h,
            resumed,
        }
    }

    #[test]
    fn tallies_add_up_to_one_of_all_the_handshakes() {
        let (a, b) = ([800, 900, 1_000, 40_000], [1_200, 1_300]);
        let mut merged = tally(&a, 1, None);
        merged.add(&tally(&b, 2, Some("TLS 1.3"))).unwrap();
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let one = tally(&all, 3, Some("TLS 1.3"));
        let (m, o) = (merged.report(false, 6, 2.0), one.report(false, 6, 2.0));
        assert_eq!((m.handshakes, m.resumed), (6, 3));
        assert_eq!(m.handshake_ms_p50, o.handshake_ms_p50);
        assert_eq!(m.handshake_ms_p99, o.handshake_ms_p99);
        assert_eq!(
            m.version.as_deref(),
            Some("TLS 1.3"),
            "from the agent that had one"
        );
        assert_eq!(m.new_connections_per_s, 3.0);
    }

    #[test]
    fn resolve_takes_curls_form() {
        let r = parse_resolve("API.example.com:443:10.0.0.5").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.addr.to_string().as_str()),
            ("api.example.com", 443, "10.0.0.5")
        );
        let r = parse_resolve("h:8443:[::1]").unwrap();
        assert_eq!(r.addr.to_string(), "::1");
        for bad in ["h:443", "h:x:1.2.3.4", ":443:1.2.3.4", "h:443:not-an-ip"] {
            let e = parse_resolve(bad).unwrap_err();
            assert!(e.contains("HOST:PORT:ADDR"), "{bad}: {e}");
        }
    }

    #[test]
    fn cert_without_key_and_missing_files_are_named() {
        let o = TlsOptions {
            cert: Some("c.pem".into()),
            ..TlsOptions::default()
        };
        let e = Tls::new(&o, HttpVersion::Http1).unwrap_err();
        assert!(e.contains("--cert and --key go together"), "{e}");
        let o = TlsOptions {
            cacert: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = Tls::new(&o, HttpVersion::Http1).unwrap_err();
        assert!(
            e.starts_with("--cacert /nonexistent/ca.pem: cannot read it"),
            "{e}"
        );
    }

    #[test]
    fn a_certificates_validity_is_read_from_its_der() {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2051, 6, 30);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let (from, until) = validity(cert.der().as_ref()).unwrap();
        assert_eq!(from, 1_577_836_800);
        assert_eq!(until, 2_571_696_000, "GeneralizedTime after 2049");
        assert_eq!(validity(&cert.der().as_ref()[..40]), None);
    }
}
