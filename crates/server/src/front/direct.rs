//! Gemini API calls answered on the connection itself, without hyper.
//!
//! A plain connection starts here. Each request it sends is read whole into one buffer, and
//! while every request is a complete `POST /{v}/models/{rest}` with plain framing (a
//! `content-length`, or no body), it is answered here:
//! - a call whose key [`super::refused_key`] refuses (an unknown or malformed API key,
//!   nothing else that would answer first) gets its API_KEY_INVALID answer from bytes
//!   rendered once;
//! - any other call goes to the Gemini API's handler, as the straight way's calls do
//!   ([`super::answer_gemini_call`]: the same handler, panics caught, the same headers put
//!   on), and its answer is written as hyper writes one: the status line, the headers in
//!   order, `transfer-encoding: chunked` for a body of unknown length, `date`; then the body,
//!   each piece as soon as the handler's body yields it (a streamed answer is not held back).
//!
//! The first request that is anything else (another path or method, a request beyond
//! [`WHOLE_REQUEST`], chunked, `Expect`, `Upgrade`, HTTP/1.0, a head hyper would refuse, a
//! connection the client closed halfway) hands the connection, with every byte read so far,
//! to hyper ([`super::serve_connection`]), which serves it from then on.
//!
//! Why: the calls a gateway exists for then cost a parse, the handler and one write per
//! answer: no hyper dispatcher, no body channel, no service future, no response encoder.
//! The rejections a flood of stolen or guessed keys is made of cost a parse, the key's
//! lookup and one write. The answers are hyper's to the byte (`date` aside, which both take
//! from the clock): the front's parity tests send every case through both.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
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

/// Serves a plain connection of a front whose Gemini API calls go straight: whole calls
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
        let close = match next(&front, &buf) {
            Next::Refused { len, close } => {
                buf.advance(len);
                if write_refusal(&mut io, refusal(close), &mut out)
                    .await
                    .is_err()
                {
                    return;
                }
                close
            }
            Next::Call(call) => {
                // Answers before it go out now: its handler may take its time.
                if unflushed && io.flush().await.is_err() {
                    return;
                }
                let request = buf.split_to(call.len).freeze();
                let close = call.close;
                let answer = super::answer_gemini_call(
                    &front.state,
                    call.data,
                    &call.uri,
                    request.slice(call.head..),
                    call.rest_at,
                );
                // A client that leaves meanwhile cancels the call (its handler is dropped).
                let Some(resp) = unless_client_leaves(&mut io, &mut buf, answer).await else {
                    return;
                };
                drop(request);
                if write_response(&mut io, &mut buf, resp, close, &mut out)
                    .await
                    .is_err()
                {
                    return;
                }
                close
            }
            Next::HandOver => break,
            Next::Partial => {
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
                    // Between requests: shutting down closes the connection here, even one
                    // whose client keeps sending.
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
                continue;
            }
        };
        unflushed = true;
        if close {
            let _ = io.flush().await;
            let _ = io.shutdown().await;
            return;
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
pub(super) enum Next {
    /// A refused call, whole: its length in the buffer, and whether the client asked to
    /// close after it.
    Refused { len: usize, close: bool },
    /// Any other Gemini API call, whole: answered here by its handler.
    Call(Box<Call>),
    /// Not enough bytes yet to tell, or a call whose body is still coming.
    Partial,
    /// Anything else: hyper's.
    HandOver,
}

/// A whole Gemini API call at the start of the buffer, as the handler takes it. (No
/// `Debug`: its headers hold the caller's credentials.)
pub(super) struct Call {
    /// Its length in the buffer, head and body.
    pub(super) len: usize,
    /// Where its body starts.
    head: usize,
    /// Whether the client asked to close after it.
    pub(super) close: bool,
    /// Every header, the key already looked at, the peer.
    data: dataplane::DataRequest,
    uri: Uri,
    /// Where the path's `rest` (after `/{v}/models/`) starts.
    rest_at: usize,
}

/// Reads the request at the start of `buf`.
pub(super) fn next(front: &Front, buf: &[u8]) -> Next {
    if buf.is_empty() {
        return Next::Partial;
    }
    // Left uninitialised: the parse writes the headers it finds (filling the array first
    // would cost more than parsing a typical head).
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head = match req.parse_with_uninit_headers(buf, &mut headers) {
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
    // Every header, as hyper gives them to a handler (the key's check reads the credentials).
    let mut headers = HeaderMap::with_capacity(req.headers.len());
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
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Next::HandOver;
        };
        headers.append(name, value);
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
    let rest_at = uri.path().len() - rest.len();
    let data = dataplane::DataRequest::new(headers, &uri, Some(front.peer.ip()));
    let refused = super::refused_key(&front.state, &data, rest);
    if len > buf.len() {
        return Next::Partial;
    }
    if refused {
        return Next::Refused { len, close };
    }
    Next::Call(Box::new(Call {
        len,
        head,
        close,
        data,
        uri,
        rest_at,
    }))
}

/// Writes `resp` as hyper writes an answer to an HTTP/1.1 request (see [`render`]): the
/// head and whatever of the body is ready in one write, then each further piece as the
/// body yields it. A body that fails, or yields more or less than its `content-length`,
/// is an error: the connection is to be closed, as hyper closes it. Left unflushed when
/// the body has ended, so that answers to pipelined requests go out together.
async fn write_response(
    io: &mut BatchedStream,
    buf: &mut BytesMut,
    resp: Response,
    close: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    use http_body::Body as _;
    use http_body_util::BodyExt;
    let (mut parts, body) = resp.into_parts();
    if close {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = parts.status;
    // What hyper never gives a body (1xx, 204, 304: none of the Gemini API's answers).
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| io::Error::other("an answer's content-length is not a number"))
        })
        .transpose()?;
    let chunked = !bodiless && length.is_none() && !body.is_end_stream();
    out.clear();
    head(out, status, &parts.headers);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(&http_date());
    out.extend_from_slice(b"\r\n\r\n");
    if bodiless {
        return io.write_all(out).await;
    }
    let mut left = length;
    let mut body = std::pin::pin!(body);
    loop {
        // What the body has ready joins what is waiting to be written; when it has nothing
        // ready, what is waiting goes out first.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                io.write_all(out).await?;
                io.flush().await?;
                out.clear();
                unless_client_leaves(io, buf, body.frame())
                    .await
                    .ok_or_else(|| io::Error::other("the client left"))?
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| io::Error::other(format!("an answer's body failed: {e}")))?;
        let Ok(data) = frame.into_data() else {
            // Trailers: hyper sends none to a client that did not ask for them.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if let Some(left) = left.as_mut() {
            *left = left
                .checked_sub(data.len() as u64)
                .ok_or_else(|| io::Error::other("an answer's body outgrew its content-length"))?;
            out.extend_from_slice(&data);
        } else {
            out.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
    }
    if left.is_some_and(|left| left > 0) {
        return Err(io::Error::other(
            "an answer's body ended before its content-length",
        ));
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    io.write_all(out).await
}

/// `work`'s output, unless the client closes its end of the connection (or breaks it) first:
/// then `None`, and `work` is dropped. What the client sends meanwhile (a pipelined request)
/// is kept in `buf`; once bytes wait there the connection is not watched further. This is
/// what hyper does while a request is in flight, so a call whose client went away stops
/// (a local generation frees its sequence) instead of running for nobody.
async fn unless_client_leaves<F: std::future::Future>(
    io: &mut BatchedStream,
    buf: &mut BytesMut,
    work: F,
) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    while buf.is_empty() {
        buf.reserve(8 * 1024);
        tokio::select! {
            biased;
            done = &mut work => return Some(done),
            read = io.read_buf(buf) => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
    Some(work.await)
}

/// The status line and the headers, in order, names lowercase, as hyper writes them for a
/// response to an HTTP/1.1 request.
fn head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
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
    let mut head = Vec::new();
    self::head(&mut head, resp.status(), resp.headers());
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
async fn write_refusal(
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
