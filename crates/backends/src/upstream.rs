//! The Gemini-upstream pass-through: forwards a data-plane call, byte for byte, to a server
//! that speaks the Gemini wire (generativelanguage.googleapis.com, or anything shaped like
//! it) with the server-held upstream key, and hands back the upstream's status,
//! content type and body as a stream that is never buffered.
//!
//! This module knows URLs and headers, not Gemini's JSON: the server parses and validates
//! the body before calling [`UpstreamClient::forward`], and maps what comes back to
//! google.rpc.Status where it has to.
//!
//! The upstream key lives in one `HeaderValue` marked sensitive; it is never formatted,
//! logged, or put into an error (the client's own credentials never reach this module).

use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;
use std::fmt;
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

const API_KEY_HEADER: &str = "x-goog-api-key";

/// A pooled, keep-alive HTTP client bound to one upstream and its key. Build it once and
/// share it (`Arc`); every call reuses its connections.
pub struct UpstreamClient {
    http: reqwest::Client,
    /// Without a trailing slash.
    base_url: String,
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
    response: reqwest::Response,
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
        let base_url = base_url.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(base_url)
            .map_err(|e| UpstreamError::Config(format!("invalid upstream URL {base_url}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(UpstreamError::Config(format!(
                "invalid upstream URL {base_url}: it must be http:// or https:// with a host"
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(UpstreamError::Config(format!(
                "invalid upstream URL {base_url}: it must not have a query or a fragment"
            )));
        }
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
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(60))
            // The upstream's redirects are its business; never replay the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Config(format!("cannot build the upstream client: {e}")))?;
        Ok(UpstreamClient {
            http,
            base_url: base_url.to_owned(),
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
        let mut url = String::with_capacity(
            self.base_url.len()
                + version.len()
                + model.len()
                + verb.len()
                + query.map_or(0, |q| q.len() + 1)
                + 10,
        );
        url.push_str(&self.base_url);
        url.push('/');
        url.push_str(version);
        url.push_str("/models/");
        url.push_str(model);
        url.push(':');
        url.push_str(verb);
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, content_type.clone())
            .header(API_KEY_HEADER, self.api_key.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(describe(&e)))?;
        let headers = response.headers();
        Ok(UpstreamResponse {
            status: response.status(),
            content_type: headers.get(CONTENT_TYPE).cloned(),
            content_length: headers.get(CONTENT_LENGTH).cloned(),
            response,
        })
    }
}

impl UpstreamResponse {
    /// The body as an `http_body::Body`: each chunk is passed on as the upstream sends it,
    /// and its exact length, when known, is kept.
    pub fn into_body(self) -> reqwest::Body {
        reqwest::Body::from(self.response)
    }

    /// The whole body, at most `limit` bytes (for error bodies, which are small).
    pub async fn read_limited(mut self, limit: usize) -> Result<Bytes, UpstreamError> {
        let mut out = Vec::new();
        while let Some(chunk) = self
            .response
            .chunk()
            .await
            .map_err(|e| UpstreamError::Body(describe(&e)))?
        {
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

/// The error with its causes, for the log (reqwest's top line alone says little).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
