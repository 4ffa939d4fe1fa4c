//! The Gemini-upstream pass-through: forwards a data-plane call, byte for byte, to a server
//! that speaks the Gemini wire (generativelanguage.googleapis.com, or anything shaped like
//! it) with the server-held upstream key, and hands back the upstream's status,
//! content type and body as a stream that is never buffered. hyper's pooled HTTP/1.1
//! client (hyper-util's legacy `Client`) with rustls and Mozilla's roots for `https`.
//!
//! This module knows URLs and headers, not Gemini's JSON: the server parses and validates
//! the body before calling [`UpstreamClient::forward`], and maps what comes back to
//! google.rpc.Status where it has to.
//!
//! The upstream key lives in one `HeaderValue` marked sensitive; it is never formatted,
//! logged, or put into an error (the client's own credentials never reach this module).

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Google's Gemini API root, the default upstream.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// Connecting (TCP and TLS) to the upstream may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The upstream may stay silent this long, waiting for the headers or between two body
/// reads; streams have no total limit.
pub const READ_TIMEOUT: Duration = Duration::from_secs(600);
/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

const API_KEY_HEADER: http::header::HeaderName =
    http::header::HeaderName::from_static("x-goog-api-key");

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A pooled, keep-alive HTTP/1.1 client bound to one upstream and its key. Build it once
/// and share it (`Arc`); every call reuses its connections. hyper's pooled client, with
/// nothing between the request and the pooled connection.
pub struct UpstreamClient {
    http: Client<Connector, Full<Bytes>>,
    /// Without a trailing slash.
    base_url: String,
    /// The path prefix of `base_url` (`""` or `/prefix`, without a trailing slash).
    prefix: String,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The server-held key, marked sensitive.
    api_key: HeaderValue,
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
    /// timeout. The text names the cause and the URL (which never holds a key).
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
    pub content_length: Option<HeaderValue>,
    body: Incoming,
}

impl fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// TCP (no Nagle, keep-alive probes) then TLS for `https`, the whole within
/// [`CONNECT_TIMEOUT`].
#[derive(Clone)]
struct Connector(HttpsConnector<HttpConnector>);

impl tower_service::Service<Uri> for Connector {
    type Response = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(done) => done,
                Err(_) => Err(format!(
                    "connecting took longer than {} s",
                    CONNECT_TIMEOUT.as_secs()
                )
                .into()),
            }
        })
    }
}

impl UpstreamClient {
    /// A client for the Gemini API rooted at `base_url` (`http` or `https`, optionally with
    /// a path prefix), sending `api_key` on every call.
    pub fn new(base_url: &str, api_key: &str) -> Result<UpstreamClient, UpstreamError> {
        let base_url = base_url.trim().trim_end_matches('/');
        let invalid = |why: &dyn fmt::Display| {
            UpstreamError::Config(format!("invalid upstream URL {base_url}: {why}"))
        };
        if base_url.contains(['?', '#']) {
            return Err(invalid(&"it must not have a query or a fragment"));
        }
        let parsed: Uri = base_url.parse().map_err(|e| invalid(&e))?;
        let (Some(scheme), Some(authority)) = (parsed.scheme(), parsed.authority()) else {
            return Err(invalid(&"it must be http:// or https:// with a host"));
        };
        if !matches!(scheme.as_str(), "http" | "https")
            || authority.host().is_empty()
            || authority.as_str().contains('@')
        {
            return Err(invalid(&"it must be http:// or https:// with a host"));
        }
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
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| UpstreamError::Config(format!("cannot build the upstream client: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        // The upstream's redirects are its business: this client never follows one, so the
        // key is never replayed elsewhere.
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(Connector(https));
        Ok(UpstreamClient {
            http,
            base_url: base_url.to_owned(),
            prefix,
            scheme: scheme.clone(),
            authority: authority.clone(),
            api_key,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST {base}/{version}/models/{model}:{verb}?{query}` with `body` as it is, the given
    /// content type and the upstream key; nothing else of the caller's request is sent.
    /// `query` must already be free of credentials. Returns once the response headers are
    /// in; the body streams from [`UpstreamResponse::into_body`].
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
        let origin = self
            .base_url
            .strip_suffix(&self.prefix)
            .unwrap_or(&self.base_url);
        let unreachable = |path: &str, why: &dyn fmt::Display| {
            UpstreamError::Unreachable(format!(
                "error sending request for url ({origin}{path}): {why}"
            ))
        };
        let path_and_query = http::uri::PathAndQuery::from_maybe_shared(Bytes::from(path))
            .map_err(|e| unreachable("", &e))?;
        let path = path_and_query.clone();
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| unreachable(path.as_str(), &e))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.insert(CONTENT_TYPE, content_type.clone());
        headers.insert(API_KEY_HEADER, self.api_key.clone());
        let response = match tokio::time::timeout(READ_TIMEOUT, self.http.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(unreachable(path.as_str(), &Chain(&e))),
            Err(_) => {
                return Err(unreachable(
                    path.as_str(),
                    &format_args!("no answer within {} s", READ_TIMEOUT.as_secs()),
                ))
            }
        };
        let (parts, body) = response.into_parts();
        let mut headers = parts.headers;
        Ok(UpstreamResponse {
            status: parts.status,
            content_type: headers.remove(CONTENT_TYPE),
            content_length: headers.remove(CONTENT_LENGTH),
            body,
        })
    }
}

impl UpstreamResponse {
    /// The body as an `http_body::Body`: each chunk is passed on as the upstream sends it,
    /// and its exact length, when known, is kept. The upstream may stay silent at most
    /// [`READ_TIMEOUT`] between two chunks.
    pub fn into_body(self) -> UpstreamBody {
        UpstreamBody {
            inner: self.body,
            silence: None,
            rearm: true,
        }
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

/// The upstream's response body, passed on frame by frame as it arrives; an upstream silent
/// for [`READ_TIMEOUT`] between two frames ends it with an error.
pub struct UpstreamBody {
    inner: Incoming,
    /// Armed when a read finds nothing to pass on (a complete answer never needs it).
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was set: it must be set again before waiting.
    rearm: bool,
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody").finish_non_exhaustive()
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.rearm = true;
                Poll::Ready(
                    frame.map(|f| f.map_err(|e| UpstreamError::Body(Chain(&e).to_string()))),
                )
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
                match silence.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(UpstreamError::Body(format!(
                        "the upstream sent nothing for {} s",
                        READ_TIMEOUT.as_secs()
                    ))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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

    #[test]
    fn base_url_must_be_http_with_a_host() {
        assert!(UpstreamClient::new("http://127.0.0.1:1/", "k").is_ok());
        assert_eq!(
            UpstreamClient::new("https://example.com/prefix/", "k")
                .unwrap()
                .base_url(),
            "https://example.com/prefix"
        );
        for bad in ["ftp://example.com", "example.com", "http://x/?a=b", ""] {
            assert!(
                matches!(UpstreamClient::new(bad, "k"), Err(UpstreamError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_key_never_shows() {
        let secret = "AIzaUPSTREAMSECRET0123456789abcdefghijk";
        let c = UpstreamClient::new("http://127.0.0.1:1", secret).unwrap();
        assert!(!format!("{c:?}").contains(secret));
        assert!(!format!("{:?}", c.api_key).contains(secret));
        match UpstreamClient::new("http://127.0.0.1:1", "bad\nkey") {
            Err(e) => assert!(!e.to_string().contains("bad")),
            Ok(_) => panic!("a key with a newline was accepted"),
        }
        assert!(matches!(
            UpstreamClient::new("http://127.0.0.1:1", "  "),
            Err(UpstreamError::Config(_))
        ));
    }

    #[tokio::test]
    async fn unreachable_upstream_is_unreachable() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let secret = "AIzaUPSTREAMSECRET0123456789abcdefghijk";
        let c = UpstreamClient::new(&format!("http://127.0.0.1:{port}"), secret).unwrap();
        let err = c
            .forward(
                "v1beta",
                "m",
                "generateContent",
                Some("alt=sse"),
                &HeaderValue::from_static("application/json"),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Unreachable(_)), "{err}");
        assert!(!err.to_string().contains(secret));
    }
}
