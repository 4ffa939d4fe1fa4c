//! The Gemini-upstream pass-through: forwards a data-plane call, byte for byte, to a server
//! that speaks the Gemini wire (generativelanguage.googleapis.com, or anything shaped like
//! it) with the server-held upstream key, and hands back the upstream's status,
//! content type and body as a stream that is never buffered.
//!
//! The HTTP/1.1 client is this module's own, and small on purpose: the request's task
//! writes the request on a pooled keep-alive connection (one write for head and body),
//! reads the response head (httparse), and the body is read from the same connection by
//! whoever polls it, frame by frame as the bytes arrive (content-length, chunked, or up to
//! the close). No connection task, no channel between the request and its socket: every
//! hand-over between tasks is a wake-up the gateway pays on each call. `https` is rustls
//! with Mozilla's roots (webpki-roots). The connection goes back to the pool when its body
//! has been read to the end; a body dropped half-read closes it.
//!
//! This module knows URLs and headers, not Gemini's JSON: the server parses and validates
//! the body before calling [`UpstreamClient::forward`], and maps what comes back to
//! google.rpc.Status where it has to.
//!
//! The upstream key lives in one `HeaderValue` marked sensitive; it is never formatted,
//! logged, or put into an error (the client's own credentials never reach this module).

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderValue;
use http::StatusCode;
use http_body::{Body as _, Frame, SizeHint};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Google's Gemini API root, the default upstream.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// Connecting (TCP and TLS) to the upstream may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The upstream may stay silent this long, waiting for the headers or between two body
/// reads; streams have no total limit.
pub const READ_TIMEOUT: Duration = Duration::from_secs(600);
/// Idle pooled connections are not used again after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// At most this many idle connections are kept.
const POOL_MAX_IDLE: usize = 256;
/// A response head (status line and headers) may be at most this long.
const MAX_HEAD: usize = 64 * 1024;
/// A response may carry at most this many header fields.
const MAX_HEADERS: usize = 128;
/// A chunk-size or trailer line may be at most this long.
const MAX_CHUNK_LINE: usize = 4096;
/// Each read asks for at least this much room.
const READ_SIZE: usize = 16 * 1024;
/// Request bodies up to this size are copied behind the head and sent in one write.
const ONE_WRITE: usize = 64 * 1024;
/// A pooled connection's read buffer grown past this is not kept.
const KEEP_BUFFER: usize = 256 * 1024;

/// A client bound to one upstream and its key. Build it once and share it (`Arc`); every
/// call reuses its keep-alive connections.
pub struct UpstreamClient {
    /// Without a trailing slash.
    base_url: String,
    /// The path prefix of `base_url` (`""` or `/prefix`, without a trailing slash).
    prefix: String,
    /// `scheme://authority`, for error messages.
    origin: String,
    /// The host to connect to (an IPv6 literal without its brackets) and the port.
    host: String,
    port: u16,
    /// The `Host` header: the authority as written in `base_url`.
    authority: String,
    /// For `https`: rustls and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The server-held key, marked sensitive.
    api_key: HeaderValue,
    pool: Arc<Pool>,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The client cannot be built from this configuration (bad URL, unusable key).
    #[error("{0}")]
    Config(String),
    /// No response headers came back: refused or reset connection, DNS or TLS failure,
    /// timeout, a response that is not HTTP/1.1. The text names the cause and the URL
    /// (which never holds a key).
    #[error("{0}")]
    Unreachable(String),
    /// The response body broke off or could not be read.
    #[error("{0}")]
    Body(String),
}

/// What the upstream answered: status and content type now, the body as it arrives.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    /// The body's exact length, when the upstream framed it by `Content-Length`.
    pub content_length: Option<HeaderValue>,
    body: UpstreamBody,
}

impl fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// A client for the Gemini API rooted at `base_url` (`http` or `https`, optionally with
    /// a path prefix), sending `api_key` on every call.
    pub fn new(base_url: &str, api_key: &str) -> Result<UpstreamClient, UpstreamError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        UpstreamClient::with_roots(base_url, api_key, roots)
    }

    /// As [`UpstreamClient::new`], trusting `roots` for `https` instead of Mozilla's.
    pub fn with_roots(
        base_url: &str,
        api_key: &str,
        roots: rustls::RootCertStore,
    ) -> Result<UpstreamClient, UpstreamError> {
        let base_url = base_url.trim().trim_end_matches('/');
        let invalid = |why: &dyn fmt::Display| {
            UpstreamError::Config(format!("invalid upstream URL {base_url}: {why}"))
        };
        if base_url.contains(['?', '#']) {
            return Err(invalid(&"it must not have a query or a fragment"));
        }
        let parsed: http::Uri = base_url.parse().map_err(|e| invalid(&e))?;
        let (Some(scheme), Some(authority)) = (parsed.scheme_str(), parsed.authority()) else {
            return Err(invalid(&"it must be http:// or https:// with a host"));
        };
        let https = match scheme {
            "http" => false,
            "https" => true,
            _ => return Err(invalid(&"it must be http:// or https:// with a host")),
        };
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(invalid(&"it must be http:// or https:// with a host"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let prefix = parsed.path().trim_end_matches('/').to_owned();
        let api_key = api_key.trim();
        if api_key.is_empty() {
            return Err(UpstreamError::Config(
                "the upstream API key is empty".into(),
            ));
        }
        let mut api_key = HeaderValue::from_str(api_key).map_err(|_| {
            UpstreamError::Config(
                "the upstream API key holds characters a header cannot carry".into(),
            )
        })?;
        api_key.set_sensitive(true);
        let tls = if https {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| {
                    UpstreamError::Config(format!("cannot build the upstream client: {e}"))
                })?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone()).map_err(|e| invalid(&e))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(UpstreamClient {
            origin: format!("{scheme}://{authority}"),
            base_url: base_url.to_owned(),
            prefix,
            host,
            port,
            authority: authority.as_str().to_owned(),
            tls,
            api_key,
            pool: Arc::new(Pool::default()),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST {base}/{version}/models/{model}:{verb}?{query}` with `body` as it is, the given
    /// content type and the upstream key; nothing else of the caller's request is sent.
    /// `query` must already be free of credentials. Returns once the response headers are
    /// in; the body streams from [`UpstreamResponse::into_body`].
    ///
    /// A pooled connection the upstream closed while it sat idle is noticed when nothing at
    /// all comes back on it; the call is then sent again on another connection (as hyper
    /// and browsers do). An answer that began is never sent twice.
    pub async fn forward(
        &self,
        version: &str,
        model: &str,
        verb: &str,
        query: Option<&str>,
        content_type: &HeaderValue,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let query = query.filter(|q| !q.is_empty());
        let mut path = String::with_capacity(
            self.prefix.len()
                + version.len()
                + model.len()
                + verb.len()
                + query.map_or(0, |q| q.len() + 1)
                + 10,
        );
        path.push_str(&self.prefix);
        path.push('/');
        path.push_str(version);
        path.push_str("/models/");
        path.push_str(model);
        path.push(':');
        path.push_str(verb);
        if let Some(q) = query {
            path.push('?');
            path.push_str(q);
        }
        let unreachable = |why: &dyn fmt::Display| {
            UpstreamError::Unreachable(format!(
                "error sending request for url ({}{path}): {why}",
                self.origin
            ))
        };
        // What goes on the request line must be a valid request target: visible ASCII only.
        if let Some(b) = path.bytes().find(|b| !(0x21..0x7f).contains(b)) {
            return Err(unreachable(&format_args!(
                "the path holds the byte 0x{b:02x}, which a request line cannot carry"
            )));
        }
        let request = Bytes::from(self.request_bytes(&path, content_type, &body));
        let separate_body = (body.len() > ONE_WRITE).then_some(&body[..]);
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        loop {
            let (mut conn, reused) = match self.pool.checkout() {
                Some(conn) => (conn, true),
                None => (self.connect().await.map_err(|e| unreachable(&e))?, false),
            };
            let exchange = exchange(&mut conn, &request, separate_body);
            match tokio::time::timeout_at(deadline, exchange).await {
                Ok(Ok(head)) => return Ok(self.response(head, conn)),
                Ok(Err(e)) if reused && e.nothing_received => {
                    tracing::debug!(cause = %e.error, "a pooled upstream connection was closed; sending again");
                }
                Ok(Err(e)) => return Err(unreachable(&e.error)),
                Err(_) => {
                    return Err(unreachable(&format_args!(
                        "no answer within {} s",
                        READ_TIMEOUT.as_secs()
                    )))
                }
            }
        }
    }

    /// The request head, and the body behind it unless it is sent apart.
    fn request_bytes(&self, path: &str, content_type: &HeaderValue, body: &Bytes) -> Vec<u8> {
        let inline = body.len() <= ONE_WRITE;
        let mut out = Vec::with_capacity(
            path.len()
                + self.authority.len()
                + content_type.len()
                + self.api_key.len()
                + 96
                + if inline { body.len() } else { 0 },
        );
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.authority.as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\nx-goog-api-key: ");
        out.extend_from_slice(self.api_key.as_bytes());
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        if inline {
            out.extend_from_slice(body);
        }
        out
    }

    /// A new connection: TCP (no Nagle, keep-alive probes) then TLS for `https`, the whole
    /// within [`CONNECT_TIMEOUT`].
    async fn connect(&self) -> Result<Conn, String> {
        let connecting = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("cannot connect: {}", Chain(&e)))?;
            tcp.set_nodelay(true)
                .map_err(|e| format!("cannot set up the connection: {e}"))?;
            let probes = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
            // Probes only help notice a dead peer sooner; a socket without them still works.
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&probes);
            let io = match &self.tls {
                None => Io::Tcp(tcp),
                Some((connector, name)) => Io::Tls(Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| format!("TLS handshake failed: {}", Chain(&e)))?,
                )),
            };
            Ok::<_, String>(Conn {
                io,
                buf: BytesMut::with_capacity(READ_SIZE),
                idle_since: Instant::now(),
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(done) => done,
            Err(_) => Err(format!(
                "connecting took longer than {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    fn response(&self, head: Head, conn: Conn) -> UpstreamResponse {
        let framing = if matches!(head.status.as_u16(), 204 | 304) {
            Framing::Length(0)
        } else if head.chunked {
            Framing::Chunked(Chunked::Size)
        } else if head.other_encoding {
            Framing::Eof
        } else if let Some(n) = head.content_length {
            Framing::Length(n)
        } else {
            Framing::Eof
        };
        let content_length = match framing {
            Framing::Length(n) => Some(HeaderValue::from(n)),
            _ => None,
        };
        let reusable = head.keep_alive && !matches!(framing, Framing::Eof);
        UpstreamResponse {
            status: head.status,
            content_type: head.content_type,
            content_length,
            body: UpstreamBody {
                conn: Some(conn),
                framing,
                reusable,
                pool: self.pool.clone(),
                silence: None,
                rearm: true,
            },
        }
    }
}

/// A failed exchange, and whether the upstream may not have seen the request at all.
struct ExchangeError {
    error: String,
    nothing_received: bool,
}

/// Writes the request, reads the response head (past any 1xx interim answer).
async fn exchange(
    conn: &mut Conn,
    request: &Bytes,
    separate_body: Option<&[u8]>,
) -> Result<Head, ExchangeError> {
    let written = async {
        // Plain TCP goes out with the tick's other upstream writes (batch.rs); whatever the
        // socket buffer did not take then, and TLS, are written here.
        let mut sent = 0;
        if let Io::Tcp(tcp) = &conn.io {
            if let Some(batcher) = crate::batch::Batcher::get() {
                sent = batcher.send(tcp, request.clone()).await?;
            }
        }
        conn.io.write_all(&request[sent..]).await?;
        if let Some(body) = separate_body {
            conn.io.write_all(body).await?;
        }
        conn.io.flush().await
    };
    if let Err(e) = written.await {
        return Err(ExchangeError {
            error: format!("cannot send the request: {}", Chain(&e)),
            nothing_received: true,
        });
    }
    let mut received = false;
    loop {
        match parse_head(&mut conn.buf) {
            Ok(Some(head)) if head.status.is_informational() => {
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(ExchangeError {
                        error: "the upstream switched protocols".into(),
                        nothing_received: false,
                    });
                }
                continue;
            }
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(error) => {
                return Err(ExchangeError {
                    error,
                    nothing_received: false,
                })
            }
        }
        match std::future::poll_fn(|cx| conn.poll_fill(cx)).await {
            Ok(0) => {
                return Err(ExchangeError {
                    error: "connection closed before message completed".into(),
                    nothing_received: !received,
                })
            }
            Ok(_) => received = true,
            Err(e) => {
                return Err(ExchangeError {
                    error: format!("cannot read the response: {}", Chain(&e)),
                    nothing_received: !received,
                })
            }
        }
    }
}

/// What the response head says that matters here.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    content_length: Option<u64>,
    /// `Transfer-Encoding` ends in `chunked`.
    chunked: bool,
    /// `Transfer-Encoding` names something else last: the body runs to the close.
    other_encoding: bool,
    /// The connection may carry another request after this one.
    keep_alive: bool,
}

/// Parses a complete response head off the front of `buf`; `None` while it is incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, String> {
    // Left uninitialised: the parse writes the fields it finds.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(format!("the response head is longer than {MAX_HEAD} bytes"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("the response is not HTTP/1.1: {e}")),
    };
    let code = resp.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| format!("the response has the status code {code}"))?;
    let mut head = Head {
        status,
        content_type: None,
        content_length: None,
        chunked: false,
        other_encoding: false,
        keep_alive: false,
    };
    let mut close = false;
    let mut keep_alive_asked = false;
    for field in resp.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-type") {
            head.content_type = HeaderValue::from_bytes(field.value).ok();
        } else if name.eq_ignore_ascii_case("content-length") {
            for part in field.value.split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii())
                    .ok_or("the response has an invalid Content-Length")?;
                if head.content_length.is_some_and(|m| m != n) {
                    return Err("the response has conflicting Content-Length values".into());
                }
                head.content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding counts (chunked must be last to frame the body).
            for coding in field.value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                head.chunked = coding.eq_ignore_ascii_case(b"chunked");
                head.other_encoding = !head.chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_asked |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when asked.
    head.keep_alive = !close && (resp.version == Some(1) || keep_alive_asked);
    buf.advance(len);
    Ok(Some(head))
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl UpstreamResponse {
    /// The body as an `http_body::Body`: each chunk is passed on as the upstream sends it,
    /// and its exact length, when known, is kept. The upstream may stay silent at most
    /// [`READ_TIMEOUT`] between two chunks.
    pub fn into_body(self) -> UpstreamBody {
        self.body
    }

    /// The whole body, at most `limit` bytes (for error bodies, which are small).
    pub async fn read_limited(self, limit: usize) -> Result<Bytes, UpstreamError> {
        let mut body = self.into_body();
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let Ok(chunk) = frame?.into_data() else {
                continue;
            };
            if out.len() + chunk.len() > limit {
                return Err(UpstreamError::Body(format!(
                    "the upstream body is larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }
}

/// How the response body ends.
#[derive(Debug)]
enum Framing {
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// Neither: the body runs until the upstream closes the connection.
    Eof,
    /// Read to its end.
    Done,
}

/// One step of reading the body out of the buffer.
enum Step {
    Data(Bytes),
    /// The body is complete.
    End,
    /// More bytes must be read first.
    More,
}

impl Framing {
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, String> {
        match self {
            Framing::Length(0) => {
                *self = Framing::Done;
                Ok(Step::End)
            }
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    *self = Framing::Done;
                }
                Ok(Step::Data(buf.split_to(n).freeze()))
            }
            Framing::Chunked(chunked) => match chunked.step(buf)? {
                Step::End => {
                    *self = Framing::Done;
                    Ok(Step::End)
                }
                step => Ok(step),
            },
            Framing::Eof if buf.is_empty() => Ok(Step::More),
            Framing::Eof => Ok(Step::Data(buf.split().freeze())),
            Framing::Done => Ok(Step::End),
        }
    }
}

/// The chunked transfer coding's decoder (RFC 9112 §7.1): chunk extensions and trailer
/// fields are read and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

impl Chunked {
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, String> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(bad_chunk());
                        }
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad_chunk());
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::More);
                    };
                    if line.is_empty() {
                        return Ok(Step::End);
                    }
                }
            }
        }
    }
}

fn bad_chunk() -> String {
    "the upstream's chunked body is malformed".into()
}

/// One CRLF-terminated line off the front of `buf`, without its CRLF; `None` while the line
/// is incomplete.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, String> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            if end == 0 || buf[end - 1] != b'\r' {
                return Err(bad_chunk());
            }
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        None if buf.len() > MAX_CHUNK_LINE => Err(bad_chunk()),
        None => Ok(None),
    }
}

/// The hexadecimal size at the start of a chunk-size line (extensions after `;` dropped).
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(bad_chunk());
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16).ok_or_else(bad_chunk)?;
        Ok(n << 4 | u64::from(d))
    })
}

/// The upstream's response body, passed on frame by frame as it arrives; an upstream silent
/// for [`READ_TIMEOUT`] between two frames ends it with an error. Read to its end, it gives
/// its connection back to the pool.
pub struct UpstreamBody {
    /// `None` once the body has ended (or failed).
    conn: Option<Conn>,
    framing: Framing,
    /// The connection may carry the next request once this body is read.
    reusable: bool,
    pool: Arc<Pool>,
    /// Armed when a read finds nothing to pass on (a complete answer never needs it).
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was set: it must be set again before waiting.
    rearm: bool,
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// The body has ended: the connection goes back to the pool if it can carry another call.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Bytes past the end of the answer mean the upstream is out of step: never reuse.
            if self.reusable && conn.buf.is_empty() {
                self.pool.put(conn);
            }
        }
    }

    fn fail(&mut self, why: String) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.conn = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(UpstreamError::Body(why))))
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.buf) {
                Ok(Step::Data(data)) => {
                    this.rearm = true;
                    if matches!(this.framing, Framing::Done) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(why) => return this.fail(why),
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    if matches!(this.framing, Framing::Eof) {
                        this.conn = None;
                        this.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    return this.fail(
                        "the upstream closed the connection before the end of the body".into(),
                    );
                }
                Poll::Ready(Ok(_)) => this.rearm = true,
                Poll::Ready(Err(e)) => {
                    return this.fail(format!("cannot read the upstream body: {}", Chain(&e)))
                }
                Poll::Pending => {
                    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
                    let silence = match &mut this.silence {
                        Some(s) => {
                            if this.rearm {
                                s.as_mut().reset(deadline);
                            }
                            s
                        }
                        None => this
                            .silence
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    this.rearm = false;
                    return match silence.as_mut().poll(cx) {
                        Poll::Ready(()) => this.fail(format!(
                            "the upstream sent nothing for {} s",
                            READ_TIMEOUT.as_secs()
                        )),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A connection to the upstream and what has been read from it but not yet used.
struct Conn {
    io: Io,
    buf: BytesMut,
    /// When it went back to the pool.
    idle_since: Instant,
}

impl Conn {
    /// Reads what the socket has into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// Idle keep-alive connections, the most recently used last (and taken first).
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let conn = idle.pop()?;
        if conn.idle_since.elapsed() < POOL_IDLE_TIMEOUT {
            return Some(conn);
        }
        // The rest have waited longer still.
        idle.clear();
        None
    }

    fn put(&self, mut conn: Conn) {
        if conn.buf.capacity() > KEEP_BUFFER {
            conn.buf = BytesMut::with_capacity(READ_SIZE);
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.lock();
        // The oldest sit at the front; drop those that have waited too long, and the oldest
        // when the pool is full.
        let stale = idle
            .iter()
            .take_while(|c| now.saturating_duration_since(c.idle_since) >= POOL_IDLE_TIMEOUT)
            .count();
        let over = (idle.len() - stale + 1).saturating_sub(POOL_MAX_IDLE);
        idle.drain(..stale + over);
        idle.push(conn);
    }
}

/// Plain TCP or TLS over TCP.
enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An error with its causes, for the log (the top line alone says little).
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const SECRET: &str = "AIzaUPSTREAMSECRET0123456789abcdefghijk";

    #[test]
    fn base_url_must_be_http_with_a_host() {
        assert!(UpstreamClient::new("http://127.0.0.1:1/", "k").is_ok());
        assert!(UpstreamClient::new("http://[::1]:8080", "k").is_ok());
        assert_eq!(
            UpstreamClient::new("https://example.com/prefix/", "k")
                .unwrap()
                .base_url(),
            "https://example.com/prefix"
        );
        for bad in [
            "ftp://example.com",
            "example.com",
            "http://x/?a=b",
            "",
            "http://u@x/",
        ] {
            assert!(
                matches!(UpstreamClient::new(bad, "k"), Err(UpstreamError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_key_never_shows() {
        let c = UpstreamClient::new("http://127.0.0.1:1", SECRET).unwrap();
        assert!(!format!("{c:?}").contains(SECRET));
        assert!(!format!("{:?}", c.api_key).contains(SECRET));
        match UpstreamClient::new("http://127.0.0.1:1", "bad\nkey") {
            Err(e) => assert!(!e.to_string().contains("bad")),
            Ok(_) => panic!("a key with a newline was accepted"),
        }
        assert!(matches!(
            UpstreamClient::new("http://127.0.0.1:1", "  "),
            Err(UpstreamError::Config(_))
        ));
    }

    async fn call(c: &UpstreamClient, verb: &str) -> Result<UpstreamResponse, UpstreamError> {
        c.forward(
            "v1beta",
            "m",
            verb,
            Some("alt=sse"),
            &HeaderValue::from_static("application/json"),
            Bytes::from_static(b"{\"contents\":[]}"),
        )
        .await
    }

    async fn body_of(r: UpstreamResponse) -> Result<Bytes, UpstreamError> {
        Ok(r.into_body().collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn unreachable_upstream_is_unreachable() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = UpstreamClient::new(&format!("http://127.0.0.1:{port}"), SECRET).unwrap();
        let err = call(&c, "generateContent").await.unwrap_err();
        assert!(matches!(err, UpstreamError::Unreachable(_)), "{err}");
        assert!(!err.to_string().contains(SECRET));
    }

    /// A raw HTTP/1.1 upstream: for each request read off a connection, `answer(n)` (n
    /// counting requests over all connections) gives the bytes to write back and whether to
    /// close afterwards. Returns the base URL, the count of accepted connections, and
    /// every request head it read.
    async fn raw_upstream(
        answer: impl Fn(usize) -> (Vec<u8>, bool) + Send + Sync + 'static,
    ) -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let served = Arc::new(AtomicUsize::new(0));
        let (acc, hs) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let (answer, served, hs) = (answer.clone(), served.clone(), hs.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: the head, then content-length bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        hs.lock().push(head);
                        let (bytes, close) = answer(served.fetch_add(1, Ordering::SeqCst));
                        if s.write_all(&bytes).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (base, accepted, heads)
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn calls_share_one_keep_alive_connection_and_send_the_server_key() {
        let (base, accepted, heads) =
            raw_upstream(|n| (ok(&format!("{{\"n\":{n}}}")), false)).await;
        let c = UpstreamClient::new(&format!("{base}/prefix/"), SECRET).unwrap();
        for n in 0..3 {
            let r = call(&c, "generateContent").await.unwrap();
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.content_type.as_ref().unwrap(), "application/json");
            let want = format!("{{\"n\":{n}}}");
            assert_eq!(r.content_length.as_ref().unwrap(), &want.len().to_string());
            assert_eq!(body_of(r).await.unwrap(), want);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for all three"
        );
        let heads = heads.lock();
        let authority = base.trim_start_matches("http://");
        assert_eq!(
            heads[0],
            format!(
                "POST /prefix/v1beta/models/m:generateContent?alt=sse HTTP/1.1\r\nhost: {authority}\r\n\
                 content-type: application/json\r\nx-goog-api-key: {SECRET}\r\ncontent-length: 15\r\n\r\n"
            )
        );
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closes_is_not_reused() {
        // `Connection: close` is honoured; an upstream that closes without saying so is
        // noticed on the next call, which is sent again on a new connection.
        let (base, accepted, heads) = raw_upstream(|n| {
            let mut bytes = ok("{}");
            if n == 0 {
                bytes =
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}".to_vec();
            }
            (bytes, true)
        })
        .await;
        let c = UpstreamClient::new(&base, SECRET).unwrap();
        for _ in 0..4 {
            let r = call(&c, "generateContent").await.unwrap();
            assert_eq!(body_of(r).await.unwrap(), "{}");
            // Let the upstream's close reach this side before the next call.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(heads.lock().len(), 4, "each call reached the upstream once");
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_bodies_arrive_whole() {
        let (base, accepted, _) = raw_upstream(|n| match n {
            0 => (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
                  7;ext=1\r\ndata: 1\r\n9\r\n\r\ndata: 2\r\n0\r\nx-trailer: t\r\n\r\n"
                    .to_vec(),
                false,
            ),
            1 => (b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec(), true),
            _ => (ok("{}"), false),
        })
        .await;
        let c = UpstreamClient::new(&base, SECRET).unwrap();
        let r = call(&c, "streamGenerateContent").await.unwrap();
        assert!(r.content_length.is_none());
        assert_eq!(body_of(r).await.unwrap(), "data: 1\r\ndata: 2");
        // The chunked answer left the connection reusable.
        let r = call(&c, "generateContent").await.unwrap();
        assert_eq!(body_of(r).await.unwrap(), "until the end");
        let r = call(&c, "generateContent").await.unwrap();
        assert_eq!(body_of(r).await.unwrap(), "{}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_empty_statuses_have_no_body() {
        let (base, _, _) = raw_upstream(|n| match n {
            0 => (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\n\r\nslow".to_vec(),
                false,
            ),
            _ => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false),
        })
        .await;
        let c = UpstreamClient::new(&base, SECRET).unwrap();
        let r = call(&c, "generateContent").await.unwrap();
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.read_limited(3).await.unwrap_err().to_string(),
            "the upstream body is larger than 3 bytes"
        );
        let r = call(&c, "generateContent").await.unwrap();
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(body_of(r).await.unwrap(), "");
    }

    #[tokio::test]
    async fn broken_answers_are_errors_that_name_no_key() {
        let cases: Vec<(&[u8], bool)> = vec![
            // Not HTTP at all.
            (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", true),
            // A head that never ends.
            (&[b'x'; 70_000], true),
            // Conflicting lengths.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
                true,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true),
            // Closed before the head ended (on a fresh connection: not sent again).
            (b"HTTP/1.1 200 OK\r\nContent-Le", true),
        ];
        for (bytes, _) in &cases {
            let bytes = bytes.to_vec();
            let (base, _, heads) = raw_upstream(move |_| (bytes.clone(), true)).await;
            let c = UpstreamClient::new(&base, SECRET).unwrap();
            let err = call(&c, "generateContent").await.unwrap_err();
            assert!(matches!(err, UpstreamError::Unreachable(_)), "{err}");
            assert!(!err.to_string().contains(SECRET), "{err}");
            assert_eq!(heads.lock().len(), 1, "{err}");
        }
        // The body broken off, or badly chunked, after a good head.
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
        ] {
            let bytes = bytes.to_vec();
            let (base, _, _) = raw_upstream(move |_| (bytes.clone(), true)).await;
            let c = UpstreamClient::new(&base, SECRET).unwrap();
            let r = call(&c, "generateContent").await.unwrap();
            let err = body_of(r).await.unwrap_err();
            assert!(matches!(err, UpstreamError::Body(_)), "{err}");
        }
    }

    #[tokio::test]
    async fn a_path_that_cannot_go_on_a_request_line_is_refused() {
        let c = UpstreamClient::new("http://127.0.0.1:1", SECRET).unwrap();
        let err = c
            .forward(
                "v1beta",
                "m x",
                "generateContent",
                None,
                &HeaderValue::from_static("application/json"),
                Bytes::new(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("0x20"), "{err}");
    }

    /// Feeds `wire` to the decoder split at `at`, returns the data and whether it ended.
    fn decode(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool), String> {
        let mut framing = Framing::Chunked(Chunked::Size);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([wire.len()].iter()) {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            loop {
                match framing.step(&mut buf)? {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::End => return Ok((out, true)),
                    Step::More => break,
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn the_chunked_decoder_reads_any_split_of_the_wire() {
        let wire =
            b"5;name=\"v\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nt: 1\r\n\r\n";
        let want = b"helloabcdefghijklmnopqrstuvwxyz";
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let (data, ended) = decode(wire, &[a, b]).unwrap();
                assert_eq!(data, want, "cut at {a} and {b}");
                assert!(ended);
            }
        }
        let (data, ended) = decode(&wire[..wire.len() - 2], &[]).unwrap();
        assert_eq!(data, want);
        assert!(!ended, "the trailers' end has not come");
        for bad in [
            &b"g\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloXY",
            b"10000000000000000\r\n",
            &[b'1'; 5000],
        ] {
            assert!(
                decode(bad, &[]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn https_upstreams_are_verified_against_the_roots() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        // Head and the 15-byte body of `call`.
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            if buf.len() >= i + 4 + 15 {
                                buf.clear();
                                let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
                                if tls.write_all(answer).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        let base = format!("https://localhost:{port}");
        // Mozilla's roots do not know this certificate.
        let c = UpstreamClient::new(&base, SECRET).unwrap();
        let err = call(&c, "generateContent").await.unwrap_err();
        assert!(err.to_string().contains("TLS handshake failed"), "{err}");
        // Trusted, it carries calls, twice on one connection.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let c = UpstreamClient::with_roots(&base, SECRET, roots).unwrap();
        for _ in 0..2 {
            let r = call(&c, "generateContent").await.unwrap();
            assert_eq!(body_of(r).await.unwrap(), "{}");
        }
        assert_eq!(c.pool.idle.lock().len(), 1);
    }
}
