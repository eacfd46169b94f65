//! The HTTP/1.1 hot path: each target's request is encoded once; a slot writes it straight to
//! its own connection and parses the answer in place (httparse, what hyper itself uses) in one
//! buffer per connection, reused for every request. No task per connection, no channel, no
//! allocation per request: the request and its answer run on the slot's own task.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stats::{ErrorKind, Failure, Why};

/// A response head larger than this is refused as not HTTP (hyper's own bound: 8 KiB plus
/// 100 × 4 KiB, so the probe's hyper and the run agree).
const MAX_HEAD: usize = 8 * 1024 + 100 * 4096;
/// The buffer each connection starts with (and keeps).
const BUF: usize = 8 * 1024;

/// The bytes of one request, ready to write.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Bytes,
    /// A HEAD request: the answer has no body whatever its headers say.
    pub head: bool,
}

/// `METHOD PATH HTTP/1.1`, the headers as given (Host first), a content-length when there is
/// a body (or the method usually has one), and the body.
pub fn encode(method: &str, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Encoded {
    let mut b = Vec::with_capacity(64 + path.len() + body.len());
    b.extend_from_slice(method.as_bytes());
    b.push(b' ');
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(b": ");
        b.extend_from_slice(v);
        b.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        b.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(body);
    Encoded {
        bytes: Bytes::from(b),
        head: method == "HEAD",
    }
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Read until the server closes the connection.
    Close,
}

/// What the head of an answer said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    len: usize,
    framing: Framing,
    keep_alive: bool,
}

/// Headers an answer may have (hyper's default too).
const MAX_HEADERS: usize = 100;

/// Why httparse refused an answer's head.
fn not_http(e: httparse::Error) -> Failure {
    use httparse::Error as E;
    Failure::new(
        ErrorKind::Protocol,
        match e {
            E::Version => "the answer is not HTTP/1.x (its first line is not a status line)",
            E::Status => "the answer's status code is not 3 digits",
            E::HeaderName => "the answer has a header name that is not a token",
            E::HeaderValue => "the answer has a header value with a control character",
            E::NewLine => "the answer's head has a bad line ending",
            E::Token => "the answer's status line is malformed",
            E::TooManyHeaders => "the answer has more than 100 headers",
        },
    )
}

/// The server closed the connection before its answer was whole.
const CLOSED_EARLY: &str = "the server closed the connection before its answer was whole";

fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(not_http(e)),
    };
    let status = r.code.unwrap_or(0);
    let mut keep_alive = r.version == Some(1);
    let (mut length, mut chunked) = (None, false);
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            length = Some(v.ok_or(Failure::new(
                ErrorKind::Protocol,
                "the answer's content-length is not a number",
            ))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|c| *c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.trim_ascii();
            if v.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if v.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        keep_alive = false;
        Framing::Close
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive,
    }))
}

/// One keep-alive connection and its read buffer: `buf[pos..end]` is read and not used yet.
pub struct Conn<S> {
    io: S,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// When its last answer ended.
    idle_since: Instant,
}

/// A connection idle this long is checked for a close by the server before it is used.
const IDLE_CHECK: Duration = Duration::from_millis(500);

fn io_failure(e: &std::io::Error) -> Failure {
    match super::tls::rustls_error(e) {
        Some(r) => Failure::text(ErrorKind::Tls, super::tls::describe(r)),
        None => Failure {
            kind: ErrorKind::Io,
            why: Why::io(e),
        },
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// The server closed this kept connection since its last answer: one read that does not
    /// wait (over TLS too: a close_notify or an EOF shows as a read of nothing). Looked at only
    /// after a pause: servers close connections idle for seconds, not busy ones. Anything read
    /// while no request is out makes the connection unusable as well.
    pub fn closed_by_peer(&mut self) -> bool {
        if self.idle_since.elapsed() < IDLE_CHECK {
            return false;
        }
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut b = [0u8; 1];
        let mut rb = tokio::io::ReadBuf::new(&mut b);
        std::pin::Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut rb)
            .is_ready()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(io: S) -> Self {
        Conn {
            io,
            buf: vec![0; BUF],
            pos: 0,
            end: 0,
            idle_since: Instant::now(),
        }
    }

    /// Reads more into the buffer (moving what is left to its start first); false at EOF.
    async fn fill(&mut self) -> Result<bool, Failure> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_HEAD {
                return Err(Failure::new(
                    ErrorKind::Protocol,
                    "the answer's head is over 408 KiB",
                ));
            }
            self.buf.resize((self.buf.len() * 2).min(MAX_HEAD), 0);
        }
        let n = self
            .io
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| io_failure(&e))?;
        self.end += n;
        Ok(n > 0)
    }

    /// Sends `req` and reads the whole answer: its status, and whether the connection can carry
    /// the next request.
    pub async fn exchange(&mut self, req: &Encoded) -> Result<(u16, bool), Failure> {
        self.io.write_all(&req.bytes).await.map_err(|e| io_failure(&e))?;
        self.io.flush().await.map_err(|e| io_failure(&e))?;
        loop {
            let head = loop {
                if let Some(h) = parse_head(&self.buf[self.pos..self.end], req.head)? {
                    break h;
                }
                if !self.fill().await? {
                    return Err(Failure::new(
                        ErrorKind::Io,
                        if self.end == self.pos {
                            "the server closed the connection without answering"
                        } else {
                            CLOSED_EARLY
                        },
                    ));
                }
            };
            self.pos += head.len;
            // An interim answer (100 Continue): the real one follows.
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            let clean = self.body(head.framing).await?;
            self.idle_since = Instant::now();
            return Ok((head.status, head.keep_alive && clean));
        }
    }

    /// Skips the body; true when the connection is left at a message boundary.
    async fn body(&mut self, framing: Framing) -> Result<bool, Failure> {
        match framing {
            Framing::None => Ok(true),
            Framing::Length(n) => {
                self.skip(n).await?;
                Ok(true)
            }
            Framing::Chunked => self.chunks().await.map(|()| true),
            Framing::Close => {
                while self.fill().await? {
                    self.pos = self.end;
                }
                Ok(false)
            }
        }
    }

    async fn skip(&mut self, mut n: u64) -> Result<(), Failure> {
        loop {
            let have = (self.end - self.pos) as u64;
            if have >= n {
                self.pos += n as usize;
                return Ok(());
            }
            n -= have;
            self.pos = self.end;
            if !self.fill().await? {
                return Err(Failure::new(ErrorKind::Io, CLOSED_EARLY));
            }
        }
    }

    /// Skips a chunked body and its trailers.
    async fn chunks(&mut self) -> Result<(), Failure> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.pos..self.end]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.pos += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        if !self.fill().await? {
                            return Err(Failure::new(ErrorKind::Io, CLOSED_EARLY));
                        }
                    }
                    Err(_) => {
                        return Err(Failure::new(
                            ErrorKind::Protocol,
                            "the answer has a chunk size that is not hexadecimal",
                        ))
                    }
                }
            };
            if size == 0 {
                return self.trailers().await;
            }
            // The chunk and its CRLF.
            self.skip(size + 2).await?;
        }
    }

    /// Trailer lines up to the empty line that ends the message.
    async fn trailers(&mut self) -> Result<(), Failure> {
        loop {
            let rest = &self.buf[self.pos..self.end];
            if let Some(i) = memchr::memmem::find(rest, b"\r\n") {
                self.pos += i + 2;
                if i == 0 {
                    return Ok(());
                }
                continue;
            }
            if !self.fill().await? {
                return Err(Failure::new(ErrorKind::Io, CLOSED_EARLY));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Answers with `script`, a few bytes per read; what is written is kept.
    struct Scripted {
        script: Vec<u8>,
        at: usize,
        step: usize,
        written: Vec<u8>,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.step.min(self.script.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.script[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.written.extend_from_slice(b);
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn conn(script: &str, step: usize) -> Conn<Scripted> {
        Conn::new(Scripted {
            script: script.as_bytes().to_vec(),
            at: 0,
            step,
            written: Vec::new(),
        })
    }

    fn get() -> Encoded {
        encode("GET", "/a?x=1", &[("host", b"h:1")], b"")
    }

    #[tokio::test]
    async fn answers_of_every_framing_are_read_whole_in_any_split() {
        let cases = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", (200, true)),
            ("HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n", (503, true)),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
                (200, true),
            ),
            ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok", (201, true)),
            ("HTTP/1.1 204 No Content\r\n\r\n", (204, true)),
            ("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", (200, false)),
            ("HTTP/1.0 200 OK\r\n\r\nuntil the end", (200, false)),
        ];
        for (script, want) in cases {
            for step in [1, 3, 7, 4096] {
                let mut c = conn(script, step);
                assert_eq!(
                    c.exchange(&get()).await,
                    Ok(want),
                    "{script:?} in reads of {step}"
                );
                assert_eq!(c.io.at, script.len(), "{script:?}: all of it read");
            }
        }
    }

    #[tokio::test]
    async fn a_connection_carries_one_answer_after_another() {
        let one = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc";
        let mut c = conn(&one.repeat(3), 5);
        for _ in 0..3 {
            assert_eq!(c.exchange(&get()).await, Ok((200, true)));
        }
        assert_eq!(c.io.written, get().bytes.repeat(3));
        assert_eq!(
            c.exchange(&get()).await,
            Err(Failure::new(
                ErrorKind::Io,
                "the server closed the connection without answering"
            )),
            "closed: no answer"
        );
    }

    #[tokio::test]
    async fn broken_answers_are_errors_of_their_kind_with_their_cause() {
        let too_many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "x: 1\r\n".repeat(MAX_HEADERS + 1));
        for (script, kind, cause) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
                ErrorKind::Io,
                CLOSED_EARLY,
            ),
            ("HTTP/1.1 200 OK\r\ncontent-len", ErrorKind::Io, CLOSED_EARLY),
            (
                "SSH-2.0-OpenSSH_9.2\r\n\r\n",
                ErrorKind::Protocol,
                "the answer is not HTTP/1.x (its first line is not a status line)",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                ErrorKind::Protocol,
                "the answer's content-length is not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                ErrorKind::Protocol,
                "the answer has a chunk size that is not hexadecimal",
            ),
            (
                too_many.as_str(),
                ErrorKind::Protocol,
                "the answer has more than 100 headers",
            ),
        ] {
            let got = conn(script, 4).exchange(&get()).await;
            assert_eq!(got, Err(Failure::new(kind, cause)), "{script:?}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            conn(&huge, 4096).exchange(&get()).await,
            Err(Failure::new(
                ErrorKind::Protocol,
                "the answer's head is over 408 KiB"
            ))
        );
        let ok = format!(
            "HTTP/1.1 200 OK\r\n{}content-length: 0\r\n\r\n",
            "x: 1\r\n".repeat(90)
        );
        assert_eq!(
            conn(&ok, 512).exchange(&get()).await,
            Ok((200, true)),
            "90 headers are fine"
        );
    }

    #[test]
    fn requests_are_encoded_once_with_their_length() {
        let e = encode("POST", "/p", &[("host", b"h"), ("x-a", b"1")], b"{}");
        assert_eq!(
            &e.bytes[..],
            b"POST /p HTTP/1.1\r\nhost: h\r\nx-a: 1\r\ncontent-length: 2\r\n\r\n{}"
        );
        assert_eq!(&get().bytes[..], b"GET /a?x=1 HTTP/1.1\r\nhost: h:1\r\n\r\n");
        assert!(encode("HEAD", "/", &[], b"").head);
    }
}
