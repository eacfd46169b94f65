//! What the integration tests share: the addresses of the real services, the ecscale binary,
//! seeding moto, and a proxy that counts (and can throttle) the AWS calls on the wire.

pub mod fake;
pub mod gate;
pub mod moto;
pub mod proxy;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The moto server the tests run against. Fails the test, loudly, when there is none.
pub fn moto_url() -> String {
    std::env::var("ECSCALE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "ECSCALE_TEST_MOTO_URL is not set: this test needs moto. Run the suite with `scripts/test` \
             (it starts moto and OpenSearch), or point ECSCALE_TEST_MOTO_URL at a moto server"
        )
    })
}

/// The Elasticsearch-API node the tests run against. Fails the test when there is none.
pub fn es_url() -> String {
    std::env::var("ECSCALE_TEST_ES_URL").unwrap_or_else(|_| {
        panic!(
            "ECSCALE_TEST_ES_URL is not set: this test needs Elasticsearch/OpenSearch. Run the suite with \
             `scripts/test`, or point ECSCALE_TEST_ES_URL at a node"
        )
    })
}

/// A name no other test (or earlier run against the same moto) uses.
/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ecscale binary, with a clean environment: no ECSCALE_* or AWS_* from outside, and
/// static test credentials (moto accepts any).
pub fn ecscale() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecscale"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ECSCALE_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .current_dir(repo());
    cmd
}

/// (exit code, stdout, stderr) of a finished ecscale; a signal (a crash) fails the test.
fn decode(
    Output {
        status,
        stdout,
        stderr,
    }: Output,
) -> (i32, String, String) {
    let code = status
        .code()
        .unwrap_or_else(|| panic!("ecscale was killed by a signal: {status:?}"));
    (
        code,
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs ecscale; returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    decode(cmd.output().expect("ecscale runs"))
}

/// Writes `text` to a new file in `dir`, returning its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

/// As [`run`], without blocking the async runtime (the proxy lives on it).
pub async fn run_async(cmd: Command) -> (i32, String, String) {
    decode(
        tokio::process::Command::from(cmd)
            .output()
            .await
            .expect("ecscale runs"),
    )
}

/// Whether a pixel is close to a colour.
pub type Near = fn(&[u8], [u8; 3]) -> bool;

/// Opens an HTML file in headless Chromium and returns the screenshot's pixels (RGB or RGBA), with
/// a colour-closeness test.
pub fn screenshot(html: &std::path::Path, dir: &std::path::Path) -> (Vec<Vec<u8>>, Near) {
    let shot = dir.join("shot.png");
    let chromium = "chromium";
    let status = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,1900",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{chromium} (Debian's chromium; scripts/test installs it): {e}"));
    assert!(status.success(), "{chromium} failed: {status:?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|c| c.to_vec())
        .collect();
    fn near(p: &[u8], rgb: [u8; 3]) -> bool {
        p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) < 40)
    }
    let pixels: Vec<Vec<u8>> = pixels;
    let blank = pixels.iter().filter(|p| near(p, [255, 255, 255])).count();
    assert!(blank < pixels.len() * 97 / 100, "the page is blank");
    (pixels, near)
}

/// A path as a `&str` (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Serves HTTP/1.1 on a free loopback port with `handler` for every request, until the test
/// ends; returns the address (`127.0.0.1:PORT`).
pub async fn serve<F, Fut>(handler: F) -> String
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible>,
        > + Send
        + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(handler);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A host that accepts TCP and never answers: every connection is held open, unread, until the
/// task is aborted. Its `http://` URL and the task.
pub async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    (url, held)
}

/// A TCP forwarder on IPv6 loopback to `upstream` (`127.0.0.1:PORT`), so a service that listens
/// on IPv4 is reached through an `http://[::1]:PORT` URL; it lives as long as the runtime.
pub async fn ipv6_to(upstream: &str) -> String {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.to_string();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    url
}
