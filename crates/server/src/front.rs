//! Serving connections, plain and TLS alike: the accept loop and the service each
//! connection's requests go to.
//!
//! Every connection gets TCP_NODELAY ([`crate::accept_tcp`]), batched writes when plain
//! (`keyplane_backends::batch`), a bounded handshake when TLS, HTTP/1.1 with upgrades (the
//! Live API's WebSocket), its peer address, and is drained on shutdown.
//!
//! Its requests go to [`Front`]: the Gemini API's calls (`POST /{v}/models/{model}:{verb}`,
//! the request path the gateway exists for) go straight to their handler, everything else to
//! the router. The straight way runs the same handler with the same inputs and answers the
//! same bytes as the router's `/{v}/models/{*rest}` route behind its layers would (body
//! limit, panics caught, framework errors as google.rpc.Status, permissive CORS), without
//! what those cost a request: route matching, a boxed route and a boxed layer future, the
//! headers copied for the extractor, the peer address in an extensions map, a header map of
//! CORS values built per request. bench/README.md has the figures.

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use futures::future::{BoxFuture, Either};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use keyplane_core::services;
use keyplane_wire::ApiError;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::app::AppState;
use crate::dataplane;

/// A client has this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, open connections get this long to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `shutdown`, then drains them.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
    straight: bool,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = crate::accept_tcp(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let front = Front {
            app: app.clone(),
            state: state.clone(),
            peer,
            straight,
        };
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let io = keyplane_backends::batch::BatchedStream::new(tcp);
                return serve_connection(io, front, watcher).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_connection(tls, front, watcher).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("open connections did not finish in time; closing them");
    }
    Ok(())
}

async fn serve_connection<I>(io: I, front: Front, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = front.peer;
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), front);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The service one connection's requests go to.
struct Front {
    app: Router,
    state: AppState,
    peer: SocketAddr,
    /// Gemini API calls go straight to their handler ([`straight_calls`]).
    straight: bool,
}

/// Whether Gemini API calls skip the router: yes unless `KEYPLANE_STRAIGHT_CALLS=off`
/// (every request through the router, for comparing the two).
pub(crate) fn straight_calls() -> bool {
    !matches!(
        std::env::var("KEYPLANE_STRAIGHT_CALLS").as_deref(),
        Ok("off" | "0" | "false")
    )
}

impl hyper::service::Service<Request<Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        BoxFuture<'static, Result<Response, Infallible>>,
        axum::routing::future::RouteFuture<Infallible>,
    >;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(rest) = gemini_call(req.method(), req.uri().path()).filter(|_| self.straight) {
            // Where `rest` starts in the path, which the request carries along.
            let at = req.uri().path().len() - rest.len();
            let (parts, body) = req.into_parts();
            let data = dataplane::DataRequest::new(parts.headers, &parts.uri, Some(self.peer.ip()));
            if refused_key(&self.state, &data, &parts.uri.path()[at..]) {
                return Either::Left(Box::pin(async move {
                    let mut resp = match read_body(body).await {
                        Ok(_) => ApiError::api_key_invalid_response(services::GENERATIVE_LANGUAGE),
                        Err(e) => e.into_response(),
                    };
                    finish(&mut resp);
                    Ok(resp)
                }));
            }
            let state = self.state.clone();
            return Either::Left(Box::pin(async move {
                let call = gemini_call_response(&state, data, &parts.uri, body, at);
                let mut resp = crate::settle(call).await;
                finish(&mut resp);
                Ok(resp)
            }));
        }
        req.extensions_mut()
            .insert(ConnectInfo(crate::Peer(self.peer)));
        let mut app = self.app.clone();
        Either::Right(tower::Service::call(&mut app, req))
    }
}

/// Whether a Gemini API call is answered API_KEY_INVALID whatever else it holds: its key
/// is malformed or unknown, and nothing the router's route checks first would answer
/// otherwise (the path decodes; the body's limit is checked as the body is read). Answered
/// then without building the handler's future, from memory. A panic here is left to the
/// handler's way, where it is caught.
fn refused_key(state: &AppState, data: &dataplane::DataRequest, rest: &str) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The key first: a call it does not refuse decodes its path once, in the handler.
        dataplane::refuses_key(state, data, services::GENERATIVE_LANGUAGE)
            && urlencoding::decode(rest).is_ok()
    }))
    .unwrap_or(false)
}

/// What the router's outer layers put on every answer: the permissive CORS headers, and
/// content-length where the body's length is known.
fn finish(resp: &mut Response) {
    permissive_cors(resp);
    set_content_length(resp);
}

/// The still percent-encoded `rest` of `POST /{v}/models/{rest}`, where the router's
/// `/{v}/models/{*rest}` route would take the request to `gemini::post_model`.
fn gemini_call<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    if method != Method::POST {
        return None;
    }
    let (version, after) = path.strip_prefix('/')?.split_once('/')?;
    if !dataplane::VERSIONS.contains(&version) {
        return None;
    }
    let rest = after.strip_prefix("models/")?;
    (!rest.is_empty()).then_some(rest)
}

/// What `gemini::post_model` answers through the router, in the order its extractors run:
/// the body (within the router's limit), the path's `rest` decoded, then the handler.
async fn gemini_call_response(
    state: &AppState,
    data: dataplane::DataRequest,
    uri: &Uri,
    body: Incoming,
    rest_at: usize,
) -> Response {
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let Ok(rest) = urlencoding::decode(&uri.path()[rest_at..]) else {
        return dataplane::url_not_found(uri.path()).into_response();
    };
    dataplane::post_gemini_call(state, &data, &rest, uri.query(), body).await
}

/// The request body, as axum's `Bytes` extractor reads it under the router's
/// `DefaultBodyLimit`, its refusals worded as [`crate::google_errors`] words them.
async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, crate::MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(crate::payload_too_large()),
        Err(e) => Err(ApiError::invalid_argument(format!(
            "Failed to buffer the request body: {e}"
        ))),
    }
}

/// A body of known length is announced in the headers, as axum's router announces it.
fn set_content_length(resp: &mut Response) {
    use http_body::Body as _;
    if resp.headers().contains_key(header::CONTENT_LENGTH) {
        return;
    }
    if let Some(n) = resp.body().size_hint().exact() {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// The headers `tower_http::cors::CorsLayer::permissive()` puts on an answer to anything but
/// a preflight request.
fn permissive_cors(resp: &mut Response) {
    let headers = resp.headers_mut();
    headers.append(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("*"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    use keyplane_backends::{
        Backend, BackendError, ChatRequest, Completion, EventStream, FinishReason, ModelInfo,
        StreamEvent,
    };
    use keyplane_core::services;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Stands in for the model: answers with the prompt's last message, counted in words.
    struct Echo;

    #[async_trait::async_trait]
    impl Backend for Echo {
        fn models(&self) -> Vec<ModelInfo> {
            vec![ModelInfo {
                id: crate::settings::LOCAL_MODEL_ID.to_owned(),
                display_name: "Echo".into(),
                description: "Echoes the prompt".into(),
                input_token_limit: 8192,
                output_token_limit: 1024,
                temperature: 1.0,
                top_p: 0.95,
                top_k: 40,
                max_temperature: 2.0,
            }]
        }
        async fn generate(&self, req: ChatRequest) -> Result<Completion, BackendError> {
            let text = req
                .messages
                .last()
                .map(|m| m.text.clone())
                .unwrap_or_default();
            Ok(Completion {
                prompt_tokens: text.split_whitespace().count() as u32,
                completion_tokens: text.split_whitespace().count() as u32,
                text,
                finish_reason: FinishReason::Stop,
                model_version: req.model,
            })
        }
        async fn stream(&self, req: ChatRequest) -> Result<EventStream, BackendError> {
            let c = self.generate(req).await?;
            Ok(Box::pin(futures::stream::iter([
                Ok(StreamEvent::Delta {
                    text: c.text,
                    prompt_tokens: c.prompt_tokens,
                    completion_tokens: c.completion_tokens,
                }),
                Ok(StreamEvent::Done {
                    prompt_tokens: c.prompt_tokens,
                    completion_tokens: c.completion_tokens,
                    finish_reason: c.finish_reason,
                }),
            ])))
        }
        async fn count_tokens(&self, req: &ChatRequest) -> Result<u32, BackendError> {
            Ok(req
                .messages
                .iter()
                .map(|m| m.text.split_whitespace().count() as u32)
                .sum())
        }
    }

    /// A data directory with one project (Generative Language API on) and one key in it.
    async fn state_with_key(dir: &std::path::Path) -> (AppState, String) {
        let config = crate::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_owned(),
            config_file: Some(dir.join("keyplane.toml")),
            model_path: None,
            tls: None,
        };
        // Quotas out of reach: both ways are called the same number of times.
        std::fs::write(
            dir.join("keyplane.toml"),
            "[quota.free]\nrpm = 1000000\ntpm = 1000000000\nrpd = 1000000000\n",
        )
        .unwrap();
        let state = crate::build_state(&config, "http://127.0.0.1:1", Arc::new(Echo))
            .await
            .unwrap();
        // Made as the control plane makes them, by the owner account.
        let owner = crate::identity::Caller {
            principal: format!(
                "serviceAccount:{}",
                keyplane_core::service_account_email(
                    crate::bootstrap::OWNER_ACCOUNT_ID,
                    crate::bootstrap::ADMIN_PROJECT_ID
                )
            ),
        };
        let cp = crate::controlplane::projects::create(
            &state,
            &owner,
            "front-test",
            "",
            Default::default(),
        )
        .await
        .unwrap();
        crate::controlplane::serviceusage::set_state(
            &state,
            &cp,
            services::GENERATIVE_LANGUAGE,
            true,
        )
        .await
        .unwrap();
        let op =
            crate::controlplane::apikeys::create_key(&state, &owner, "front-test", None, b"{}")
                .await
                .unwrap();
        let key = op.response.as_ref().and_then(|r| r["keyString"].as_str());
        let key = key.expect("the key string").to_owned();
        (state, key)
    }

    /// One request on its own connection: the status line and headers (without `date`, which
    /// changes by the second) and the body, de-chunked.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let head: Vec<&str> = head
            .split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .collect();
        let chunked = head
            .iter()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        let mut body = raw[split..].to_vec();
        if chunked {
            let (mut out, mut rest) = (Vec::new(), &body[..]);
            loop {
                let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
                rest = &rest[eol + 4 + size..];
            }
            body = out;
        }
        (head.join("\r\n"), body)
    }

    /// A body with the one field that differs between any two answers (`responseId`)
    /// blanked, wherever and however it is written (JSON, SSE, a streamed JSON array).
    fn comparable(body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let mut out = String::new();
        let mut rest = &text[..];
        while let Some(at) = rest.find("\"responseId\"") {
            let after = &rest[at + 12..];
            let open = after.find('"').unwrap() + 1;
            let close = open + after[open..].find('"').unwrap();
            out.push_str(&rest[..at + 12]);
            out.push_str(&after[..open]);
            out.push('_');
            rest = &after[close..];
        }
        out.push_str(rest);
        out
    }

    #[tokio::test]
    async fn straight_calls_answer_what_the_router_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (state, key) = state_with_key(dir.path()).await;
        let mut addrs = Vec::new();
        for straight in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let (app, state) = (crate::router(state.clone()), state.clone());
            tokio::spawn(async move {
                serve(listener, app, state, None, straight, std::future::pending()).await
            });
        }
        let model = crate::settings::LOCAL_MODEL_ID;
        let good = r#"{"contents":[{"role":"user","parts":[{"text":"say the same"}]}]}"#;
        let big = "x".repeat(crate::MAX_BODY_BYTES + 1);
        let unknown = "AIzaSyNotAKeyThatExistsAnywhere000000000";
        // (path and query, extra headers, body)
        type Case<'a> = (String, Vec<(&'a str, String)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            (
                format!("/v1/models/{model}:generateContent?key={key}"),
                vec![],
                good,
            ),
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![
                    ("x-goog-api-key", key.clone()),
                    ("origin", "https://app.example".into()),
                ],
                good,
            ),
            (
                format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            (
                format!("/v1beta/models/{model}:streamGenerateContent"),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            (
                format!("/v1beta/models/{model}:countTokens"),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![(
                    "x-goog-api-key",
                    "AIzaSyNotAKeyThatExistsAnywhere000000000".into(),
                )],
                good,
            ),
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![("x-goog-api-key", "garbage".into())],
                good,
            ),
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![],
                good,
            ),
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![("authorization", "Bearer nope".into())],
                good,
            ),
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![("x-goog-api-key", key.clone())],
                "{not json",
            ),
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![("x-goog-api-key", key.clone())],
                r#"{"contents":[]}"#,
            ),
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![("x-goog-api-key", key.clone())],
                &big,
            ),
            (
                "/v1beta/models/no-such-model:generateContent".into(),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            (
                format!("/v1beta/models/{model}:embedContent"),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            (
                format!("/v1beta/models/{model}:noSuchVerb"),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            (
                format!("/v1beta/models/{model}"),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            (
                "/v1beta/models/%FF%FE:generateContent".into(),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            (
                "/v1beta/models/gemini%2D2.5:generateContent".into(),
                vec![("x-goog-api-key", key.clone())],
                good,
            ),
            // Invalid keys, answered before the handler on the straight way: what the
            // router checks first still comes first.
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![("x-goog-api-key", unknown.into())],
                &big,
            ),
            (
                "/v1beta/models/%FF%FE:generateContent".into(),
                vec![("x-goog-api-key", unknown.into())],
                good,
            ),
            (
                format!("/v1beta/models/{model}:generateContent?key={unknown}"),
                vec![("origin", "https://app.example".into())],
                good,
            ),
            (
                format!("/v1beta/models/{model}:generateContent"),
                vec![
                    ("x-goog-api-key", unknown.into()),
                    ("authorization", "Token auth_tokens/not-a-token".into()),
                ],
                good,
            ),
            (
                format!("/v1beta/models/{model}"),
                vec![("x-goog-api-key", "garbage".into())],
                "",
            ),
        ];
        for (path, headers, body) in &cases {
            let mut request = format!(
                "POST {path} HTTP/1.1\r\nhost: keyplane\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("\r\n");
            let request = [request.as_bytes(), body.as_bytes()].concat();
            let (head_s, body_s) = exchange(addrs[0], &request).await;
            let (head_r, body_r) = exchange(addrs[1], &request).await;
            assert_eq!(head_s, head_r, "{path} {headers:?}");
            assert_eq!(
                comparable(&body_s),
                comparable(&body_r),
                "{path} {headers:?}"
            );
            assert!(!body_s.is_empty(), "{path}: an empty answer");
        }
        // The answers above are what the rest of the suite checks against Google's wire;
        // here, that a few of them are what they should be at all.
        let request = |path: &str, key: &str| {
            format!("POST {path} HTTP/1.1\r\nhost: k\r\nx-goog-api-key: {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{good}", good.len())
        };
        let (head, body) = exchange(
            addrs[0],
            request(&format!("/v1beta/models/{model}:generateContent"), &key).as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("say the same"));
        let (head, body) = exchange(
            addrs[0],
            request(
                &format!("/v1beta/models/{model}:generateContent"),
                "AIzaSyNotAKeyThatExistsAnywhere000000000",
            )
            .as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("API_KEY_INVALID"));
        let (head, _) = exchange(
            addrs[0],
            request("/v1beta/models/%FF%FE:generateContent", &key).as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    }

    #[test]
    fn only_gemini_calls_take_the_straight_way() {
        let post = Method::POST;
        assert_eq!(
            gemini_call(&post, "/v1beta/models/gemini-2.5-flash:generateContent"),
            Some("gemini-2.5-flash:generateContent")
        );
        assert_eq!(gemini_call(&post, "/v1/models/a%2Fb:x"), Some("a%2Fb:x"));
        assert_eq!(gemini_call(&post, "/v1alpha/models/m/x/y"), Some("m/x/y"));
        for path in [
            "/v1beta/models/",
            "/v1beta/models",
            "/v2/models/m:generateContent",
            "/v1beta/tunedModels/m:generateContent",
            "/v1beta/publishers/google/models/m:generateContent",
            "/v1beta//models/m:generateContent",
            "v1beta/models/m:generateContent",
            "/",
            "",
        ] {
            assert_eq!(gemini_call(&post, path), None, "{path}");
        }
        assert_eq!(
            gemini_call(&Method::GET, "/v1beta/models/gemini-2.5-flash"),
            None
        );
    }
}
