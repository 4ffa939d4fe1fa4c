//! Refused Gemini API calls answered on the connection itself, before hyper.
//!
//! A plain connection starts here. Each request it sends is read whole into one buffer, and
//! while every request is a complete `POST /{v}/models/{rest}` that [`super::refused_key`]
//! refuses (an unknown or malformed API key, nothing else that would answer first), its
//! API_KEY_INVALID answer is written from bytes rendered once. The first request that is
//! anything else (a key that may pass, another path, a request beyond [`WHOLE_REQUEST`],
//! chunked, `Expect`, `Upgrade`, HTTP/1.0, a head hyper would refuse, a connection the
//! client closed halfway) hands the connection, with every byte read so far, to hyper
//! ([`super::serve_connection`]), which serves it from then on.
//!
//! Why: a gateway's most common rejection, and the one a flood of stolen or guessed keys is
//! made of, then costs a parse, the key's lookup and one write: no request or header map
//! for hyper, no service future, no body channel, no response to encode. A connection that
//! carries one valid call has left this path for good, so valid calls pay one extra head
//! parse a connection. The answers are hyper's to the byte (`date` aside, which both take
//! from the clock): the front's parity test sends every case through both.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use bytes::{Buf, BytesMut};
use futures::FutureExt;
use hyper_util::server::graceful::Watcher;
use keyplane_backends::batch::BatchedStream;
use keyplane_core::services;
use keyplane_wire::ApiError;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::Front;
use crate::dataplane;

/// The largest request (head and body) answered here; a larger one goes to hyper.
pub(super) const WHOLE_REQUEST: usize = 64 * 1024;
/// Headers a request answered here may have; one with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// Serves a plain connection of a front whose Gemini API calls go straight: refused calls
/// here, then everything from the first other request on through hyper. `closing` ends a
/// connection idle between requests.
pub(super) async fn serve(
    mut io: BatchedStream,
    front: Front,
    watcher: Watcher,
    mut closing: watch::Receiver<()>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::new();
    // Answers written but not flushed: sent once no further request is in the buffer.
    let mut unflushed = false;
    loop {
        match next(&front, &buf) {
            Next::Refused { len, close } => {
                buf.advance(len);
                let answer = refusal(close);
                let written = write_answer(&mut io, answer, &mut out).await;
                if written.is_err() {
                    return;
                }
                unflushed = true;
                if close {
                    let _ = io.flush().await;
                    let _ = io.shutdown().await;
                    return;
                }
                continue;
            }
            Next::HandOver => break,
            Next::Partial => {}
        }
        if unflushed {
            if io.flush().await.is_err() {
                return;
            }
            unflushed = false;
        }
        if buf.len() >= WHOLE_REQUEST {
            break;
        }
        buf.reserve(8 * 1024);
        let read = if buf.is_empty() {
            // Between requests: shutting down closes the connection here, even one whose
            // client keeps sending.
            tokio::select! {
                biased;
                _ = closing.changed() => return,
                read = io.read_buf(&mut buf) => read,
            }
        } else {
            io.read_buf(&mut buf).await
        };
        match read {
            // Closed between requests, or broken: nothing to answer.
            Ok(0) if buf.is_empty() => return,
            Err(_) => return,
            // Closed halfway through a request: hyper answers that as it answers it.
            Ok(0) => break,
            Ok(_) => {}
        }
    }
    if unflushed && io.flush().await.is_err() {
        return;
    }
    let io = Prefixed {
        prefix: buf.freeze(),
        io,
    };
    super::serve_connection(io, front, watcher).await;
}

/// What to do with what the buffer holds.
#[derive(Debug, PartialEq)]
pub(super) enum Next {
    /// A refused call, whole: its length in the buffer, and whether the client asked to
    /// close after it.
    Refused { len: usize, close: bool },
    /// Not enough bytes yet to tell, or a refused call whose body is still coming.
    Partial,
    /// Anything else: hyper's.
    HandOver,
}

/// Reads the request at the start of `buf`.
pub(super) fn next(front: &Front, buf: &[u8]) -> Next {
    if buf.is_empty() {
        return Next::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Next::Partial,
        // Malformed, or more headers than answered here: hyper says what is wrong.
        Err(_) => return Next::HandOver,
    };
    let (Some(1), Some("POST"), Some(target)) = (req.version, req.method, req.path) else {
        return Next::HandOver;
    };
    let mut body = 0;
    let mut length_seen = false;
    let mut close = false;
    let mut credentials = HeaderMap::new();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // One plain decimal length, as hyper reads it; anything else is hyper's.
            let digits = h.value;
            if length_seen
                || digits.is_empty()
                || digits.len() > 19
                || !digits.iter().all(u8::is_ascii_digit)
            {
                return Next::HandOver;
            }
            length_seen = true;
            body = digits
                .iter()
                .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        } else if name.eq_ignore_ascii_case(b"connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return Next::HandOver;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Next::HandOver;
        } else if let Some(name) = dataplane::CREDENTIAL_HEADERS
            .iter()
            .find(|c| name.eq_ignore_ascii_case(c.as_bytes()))
        {
            let Ok(value) = HeaderValue::from_bytes(h.value) else {
                return Next::HandOver;
            };
            credentials.append(HeaderName::from_static(name), value);
        }
    }
    let len = head + body;
    if len > WHOLE_REQUEST {
        return Next::HandOver;
    }
    // The request target as hyper reads it: a URI (origin or absolute form).
    let Ok(uri) = Uri::try_from(target) else {
        return Next::HandOver;
    };
    let Some(rest) = super::gemini_call(&Method::POST, uri.path()) else {
        return Next::HandOver;
    };
    let data = dataplane::DataRequest::new(credentials, &uri, None);
    if !super::refused_key(&front.state, &data, rest) {
        return Next::HandOver;
    }
    if len <= buf.len() {
        Next::Refused { len, close }
    } else {
        Next::Partial
    }
}

/// The API_KEY_INVALID answer, as hyper writes the straight way's: the head up to the
/// `date` value, and what follows it.
struct Refusal {
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// The answer for a connection kept open (`close` false) or closed after it.
fn refusal(close: bool) -> &'static Refusal {
    static RENDERED: [OnceLock<Refusal>; 2] = [OnceLock::new(), OnceLock::new()];
    RENDERED[usize::from(close)].get_or_init(|| render(close))
}

/// Renders what the straight way answers an invalid key, as hyper encodes a response to
/// an HTTP/1.1 request: the status line, the headers in order with lowercase names
/// (`connection: close` after them when the client asked to close), `date` last.
fn render(close: bool) -> Refusal {
    let mut resp = ApiError::api_key_invalid_response(services::GENERATIVE_LANGUAGE);
    super::finish(&mut resp);
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = resp.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("<none>")
    )
    .into_bytes();
    for (name, value) in resp.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    use http_body_util::BodyExt;
    let body = resp
        .into_body()
        .collect()
        .now_or_never()
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut tail = b"\r\n\r\n".to_vec();
    tail.extend_from_slice(&body);
    Refusal { head, tail }
}

/// Writes `answer`, dated now, in one write.
async fn write_answer(
    io: &mut BatchedStream,
    answer: &Refusal,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    out.clear();
    out.extend_from_slice(&answer.head);
    out.extend_from_slice(&http_date());
    out.extend_from_slice(&answer.tail);
    io.write_all(out).await
}

/// The `date` value now, rendered at most once a second per thread (as hyper does).
fn http_date() -> [u8; 29] {
    struct Cached {
        until: SystemTime,
        text: [u8; 29],
    }
    thread_local!(static CACHED: RefCell<Cached> = const {
        RefCell::new(Cached { until: SystemTime::UNIX_EPOCH, text: [b' '; 29] })
    });
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        let now = SystemTime::now();
        if now >= cached.until {
            let text = httpdate::fmt_http_date(now);
            if let Ok(text) = <[u8; 29]>::try_from(text.as_bytes()) {
                cached.text = text;
            }
            let into_second = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            cached.until = now + Duration::from_secs(1) - Duration::from_nanos(into_second.into());
        }
        cached.text
    })
}

/// A connection whose first bytes were already read: they are read again first.
pub(super) struct Prefixed<I> {
    prefix: bytes::Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
