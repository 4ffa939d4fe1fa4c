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
//!
//! A plain connection first meets [`direct`]: while it sends nothing but whole Gemini API
//! calls with plain framing, they are read, answered and written without hyper; its first
//! other request hands it, and every byte read so far, to hyper for good.

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

mod direct;

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
    // Tells connections still on the direct way (hyper's own are told by `graceful`).
    let (closing, closing_rx) = tokio::sync::watch::channel(());
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
        let closing = closing_rx.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let io = keyplane_backends::batch::BatchedStream::new(tcp);
                if front.straight {
                    return direct::serve(io, front, watcher, closing).await;
                }
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
    closing.send_replace(());
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
                match read_body(body).await {
                    Ok(body) => Ok(answer_gemini_call(&state, data, &parts.uri, body, at).await),
                    // Already a google.rpc.Status: finished as the refused key's answer above.
                    Err(e) => {
                        let mut resp = e.into_response();
                        finish(&mut resp);
                        Ok(resp)
                    }
                }
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

/// What `gemini::post_model` answers through the router once its body is read (within the
/// router's limit), with what the router's layers do to it: the path's `rest` decoded, the
/// handler (a panic answered as a google.rpc.Status 500), the CORS and length headers.
/// `rest_at` is where `rest` starts in the URI's path.
async fn answer_gemini_call(
    state: &AppState,
    data: dataplane::DataRequest,
    uri: &Uri,
    body: Bytes,
    rest_at: usize,
) -> Response {
    let call = async {
        let Ok(rest) = urlencoding::decode(&uri.path()[rest_at..]) else {
            return dataplane::url_not_found(uri.path()).into_response();
        };
        dataplane::post_gemini_call(state, &data, &rest, uri.query(), body).await
    };
    let mut resp = crate::settle(call).await;
    finish(&mut resp);
    resp
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
        state_with_backend(dir, Arc::new(Echo)).await
    }

    /// A data directory with one project (Generative Language API on), one key in it, and
    /// `backend` answering the local model's calls.
    async fn state_with_backend(
        dir: &std::path::Path,
        backend: Arc<dyn Backend>,
    ) -> (AppState, String) {
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
        let state = crate::build_state(&config, "http://127.0.0.1:1", backend)
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

    /// The `date` header's value, which changes by the second, replaced (once checked to be
    /// an HTTP date) wherever a `date` line stands in `text`.
    fn undated(text: &str) -> String {
        text.split("\r\n")
            .map(|line| match line.strip_prefix("date: ") {
                Some(value) => {
                    assert!(httpdate::parse_http_date(value).is_ok(), "{line}");
                    "date: <now>".to_owned()
                }
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// One request on its own connection: the status line and headers (`date`'s value
    /// replaced) and the body, de-chunked.
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
        let head = undated(std::str::from_utf8(&raw[..split]).unwrap());
        let head: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(
            head.iter().filter(|l| l.starts_with("date: ")).count(),
            1,
            "{head:?}"
        );
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

    /// Two servers on `state`: Gemini API calls the straight way (on the connection
    /// first), and everything through the router.
    async fn both_ways(state: &AppState) -> [SocketAddr; 2] {
        let mut addrs = Vec::new();
        for straight in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let (app, state) = (crate::router(state.clone()), state.clone());
            tokio::spawn(async move {
                serve(listener, app, state, None, straight, std::future::pending()).await
            });
        }
        [addrs[0], addrs[1]]
    }

    #[tokio::test]
    async fn straight_calls_answer_what_the_router_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (state, key) = state_with_key(dir.path()).await;
        let addrs = both_ways(&state).await;
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
            (
                format!("/v1beta/models/{model}:generateContent\"x"),
                vec![("x-goog-api-key", unknown.into())],
                good,
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

    /// A `POST` of `body` to `target` with `headers`, kept alive unless `close`.
    fn post(target: &str, headers: &[(&str, &str)], body: &str, close: bool) -> Vec<u8> {
        let mut head = format!("POST {target} HTTP/1.1\r\nhost: keyplane\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        [head.as_bytes(), body.as_bytes()].concat()
    }

    /// Everything a connection answers to `requests`, written in pieces of `piece` bytes
    /// (a pause between them), then half-closed if `cut`; `date` values replaced and
    /// `responseId`s blanked.
    async fn conversation(addr: SocketAddr, requests: &[u8], piece: usize, cut: bool) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        for part in requests.chunks(piece) {
            tcp.write_all(part).await.unwrap();
            if piece < requests.len() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        if cut {
            tcp.shutdown().await.unwrap();
        }
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut raw))
            .await
            .expect("the server closes after `connection: close`")
            .unwrap();
        comparable(undated(&String::from_utf8_lossy(&raw)).as_bytes())
    }

    #[tokio::test]
    async fn calls_on_a_kept_connection_answer_what_the_router_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (state, key) = state_with_key(dir.path()).await;
        let addrs = both_ways(&state).await;
        let model = crate::settings::LOCAL_MODEL_ID;
        let call = format!("/v1beta/models/{model}:generateContent");
        let absolute = format!("http://keyplane{call}");
        let good = r#"{"contents":[{"role":"user","parts":[{"text":"say the same"}]}]}"#;
        let unknown = ("x-goog-api-key", "AIzaSyNotAKeyThatExistsAnywhere000000000");
        let malformed = ("x-goog-api-key", "garbage");
        let valid = ("x-goog-api-key", key.as_str());
        let chunked = format!(
            "POST {call} HTTP/1.1\r\nhost: k\r\nx-goog-api-key: {}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{good}\r\n0\r\n\r\n",
            unknown.1,
            good.len()
        );
        let chunked_valid = format!(
            "POST {call} HTTP/1.1\r\nhost: k\r\nx-goog-api-key: {key}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{good}\r\n0\r\n\r\n",
            good.len()
        );
        // (answers expected, whether the client half-closes after sending, what it sends)
        let conversations: Vec<(usize, bool, Vec<u8>)> = vec![
            // Refused, refused, a valid call, refused, closed: all on the direct way.
            (
                5,
                false,
                [
                    post(&call, &[unknown], good, false),
                    post(&absolute, &[malformed], good, false),
                    post(&call, &[valid], good, false),
                    post(&call, &[unknown], good, false),
                    post(&call, &[unknown], "", true),
                ]
                .concat(),
            ),
            // Refused with and without bodies, a chunked one (hyper's), refused, closed.
            (
                4,
                false,
                [
                    post(&call, &[unknown], "", false),
                    post(&format!("{call}?key={}", unknown.1), &[], good, false),
                    chunked.into_bytes(),
                    post(&call, &[malformed], good, true),
                ]
                .concat(),
            ),
            // Valid calls of every kind, streamed and not, an unauthenticated one, a body
            // that does not parse, then a chunked one (hyper's from then on), a valid one.
            (
                8,
                false,
                [
                    post(&call, &[valid], good, false),
                    post(
                        &format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
                        &[valid],
                        good,
                        false,
                    ),
                    post(
                        &format!("/v1/models/{model}:streamGenerateContent"),
                        &[valid],
                        good,
                        false,
                    ),
                    post(
                        &format!("/v1beta/models/{model}:countTokens?key={key}"),
                        &[],
                        good,
                        false,
                    ),
                    post(&call, &[], good, false),
                    post(&call, &[valid], "{not json", false),
                    chunked_valid.into_bytes(),
                    post(&call, &[valid], good, true),
                ]
                .concat(),
            ),
            // A valid call the client closes after; a stream the client closes after.
            (1, false, post(&call, &[valid], good, true)),
            (
                1,
                false,
                post(
                    &format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
                    &[valid],
                    good,
                    true,
                ),
            ),
            // A valid call cut off in its body: hyper's 400 for a body that did not arrive.
            (1, true, {
                let whole = post(&call, &[valid], good, false);
                whole[..whole.len() - good.len() + 5].to_vec()
            }),
            // Only refusals, the last one closing.
            (
                3,
                false,
                [
                    post(&call, &[unknown], good, false),
                    post(&call, &[unknown, ("connection", "keep-alive")], good, false),
                    post(&call, &[malformed], good, true),
                ]
                .concat(),
            ),
            // Cut off in a refused call's head (no answer), then in its body (hyper's 400
            // for a body that did not arrive).
            (0, true, post(&call, &[unknown], good, false)[..60].to_vec()),
            (1, true, {
                let whole = post(&call, &[unknown], good, false);
                whole[..whole.len() - good.len() + 5].to_vec()
            }),
        ];
        for (answers, cut, requests) in &conversations {
            // At once, then in pieces that split heads and bodies anywhere.
            for piece in [requests.len(), 7] {
                let straight = conversation(addrs[0], requests, piece, *cut).await;
                let router = conversation(addrs[1], requests, piece, *cut).await;
                assert_eq!(straight, router, "in pieces of {piece}");
                assert_eq!(
                    straight.matches("HTTP/1.1 ").count(),
                    *answers,
                    "{straight:?}"
                );
            }
        }
    }

    /// What [`direct::next`] makes of a buffer, as `(what, length, close)`.
    fn seen(next: direct::Next) -> (&'static str, usize, bool) {
        match next {
            direct::Next::Refused { len, close } => ("refused", len, close),
            direct::Next::Call(call) => ("call", call.len, call.close),
            direct::Next::Partial => ("partial", 0, false),
            direct::Next::HandOver => ("hand over", 0, false),
        }
    }

    #[tokio::test]
    async fn the_direct_way_reads_whole_plainly_framed_calls_only() {
        let dir = tempfile::tempdir().unwrap();
        let (state, key) = state_with_key(dir.path()).await;
        let front = Front {
            app: crate::router(state.clone()),
            state,
            peer: "127.0.0.1:1".parse().unwrap(),
            straight: true,
        };
        let model = crate::settings::LOCAL_MODEL_ID;
        let call = format!("/v1beta/models/{model}:generateContent");
        let good = r#"{"contents":[]}"#;
        let unknown = ("x-goog-api-key", "AIzaSyNotAKeyThatExistsAnywhere000000000");
        let next = |bytes: &[u8]| seen(direct::next(&front, bytes));
        let refused = |len: usize| ("refused", len, false);
        let partial = ("partial", 0, false);
        let hand_over = ("hand over", 0, false);

        let one = post(&call, &[unknown], good, false);
        assert_eq!(next(&one), refused(one.len()));
        let closing = post(&call, &[unknown], good, true);
        assert_eq!(next(&closing), ("refused", closing.len(), true));
        let two = [one.clone(), closing.clone()].concat();
        assert_eq!(next(&two), refused(one.len()));
        for cut in [1, 20, one.len() - good.len() - 1, one.len() - 1] {
            assert_eq!(next(&one[..cut]), partial, "cut at {cut}");
        }
        assert_eq!(next(b""), partial);
        for request in [
            post(&format!("http://k{call}"), &[unknown], good, false),
            post(&call, &[("x-goog-api-key", "garbage")], good, false),
            post(
                &format!("{call}?key=AIzaSyNotAKeyThatExistsAnywhere000000000"),
                &[],
                good,
                false,
            ),
            post(
                &format!("/v1/models/{model}:countTokens"),
                &[unknown],
                "",
                false,
            ),
            post(&format!("/v1beta/models/{model}"), &[unknown], good, false),
            post(&call, &[unknown, ("connection", "Keep-Alive")], good, false),
        ] {
            let text = String::from_utf8_lossy(&request).into_owned();
            assert_eq!(next(&request), refused(request.len()), "{text}");
        }
        // Calls the key does not refuse go to the handler, whatever it will answer.
        let valid = ("x-goog-api-key", key.as_str());
        for request in [
            post(&call, &[valid], good, false),
            post(&format!("http://k{call}"), &[valid], good, false),
            post(&format!("{call}?alt=sse&key={key}"), &[], good, false),
            post(
                &format!("/v1alpha/models/{model}:countTokens"),
                &[valid],
                "",
                false,
            ),
            post(&call, &[], good, false),
            post(
                &call,
                &[("authorization", "Bearer ya29.anything")],
                good,
                false,
            ),
            post(
                &call,
                &[unknown, ("authorization", "Token auth_tokens/not-a-token")],
                good,
                false,
            ),
            post(
                &format!("{call}?access_token=auth_tokens/x"),
                &[unknown],
                good,
                false,
            ),
            post(
                "/v1beta/models/%FF%FE:generateContent",
                &[unknown],
                good,
                false,
            ),
            post(
                &call,
                &[
                    valid,
                    ("x-forwarded-for", "10.0.0.1"),
                    ("referer", "https://a.example/"),
                ],
                good,
                false,
            ),
        ] {
            let text = String::from_utf8_lossy(&request).into_owned();
            assert_eq!(next(&request), ("call", request.len(), false), "{text}");
        }
        let closing = post(&call, &[valid], good, true);
        assert_eq!(next(&closing), ("call", closing.len(), true));
        let two = [post(&call, &[valid], good, false), one.clone()].concat();
        assert_eq!(next(&two), ("call", two.len() - one.len(), false));
        // A call's body on its way: the rest is waited for.
        let whole = post(&call, &[valid], good, false);
        assert_eq!(next(&whole[..whole.len() - 1]), partial);
        let big = "x".repeat(direct::WHOLE_REQUEST);
        let with = |extra: (&str, &str)| post(&call, &[unknown, extra], good, false);
        for handed in [
            post(&call, &[unknown], &big, false),
            post(&call, &[valid], &big, false),
            with(("transfer-encoding", "chunked")),
            with(("expect", "100-continue")),
            with(("upgrade", "websocket")),
            with(("connection", "upgrade")),
            with(("content-length", "15")),
            post(&call, &[valid, ("transfer-encoding", "chunked")], good, false),
            post(&call, &[valid, ("expect", "100-continue")], good, false),
            post(&call, &[valid, ("x-bad", "\u{7f}")], good, false),
            post("/v1beta/projects/p/models/m:generateContent", &[unknown], good, false),
            post("/v1beta/publishers/google/models/m:generateContent", &[valid], good, false),
            post("/v9/models/m:generateContent", &[unknown], good, false),
            post("/v1alpha/auth_tokens", &[valid], "{}", false),
            b"GET /v1beta/models HTTP/1.1\r\nx-goog-api-key: garbage\r\n\r\n".to_vec(),
            format!("GET /v1beta/models/{model} HTTP/1.1\r\nx-goog-api-key: {key}\r\n\r\n").into_bytes(),
            format!("POST {call} HTTP/1.0\r\nx-goog-api-key: garbage\r\ncontent-length: 0\r\n\r\n").into_bytes(),
            format!("POST {call} HTTP/1.1\r\nx-goog-api-key: garbage\r\ncontent-length: +0\r\n\r\n").into_bytes(),
            format!("POST {call} HTTP/1.1\r\nx-goog-api-key: garbage\r\ncontent-length: 0, 0\r\n\r\n").into_bytes(),
            format!("POST {call} HTTP/1.1\r\nx-goog-api-key: garbage\r\ncontent-length: 99999999999999999999\r\n\r\n").into_bytes(),
            format!("POST {call} HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(70)).into_bytes(),
            format!("POST {call}\x01 HTTP/1.1\r\nx-goog-api-key: garbage\r\n\r\n").into_bytes(),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        ] {
            let text = String::from_utf8_lossy(&handed).into_owned();
            assert_eq!(next(&handed), hand_over, "{text}");
        }
        // A refused call's body on its way: the rest is waited for, up to WHOLE_REQUEST.
        let long = "y".repeat(direct::WHOLE_REQUEST / 2);
        let coming = post(&call, &[unknown], &long, false);
        assert_eq!(next(&coming[..coming.len() - 10]), partial);
    }

    #[tokio::test]
    async fn shutting_down_closes_connections_idle_on_the_direct_way() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = state_with_key(dir.path()).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = crate::router(state.clone());
        let server = tokio::spawn(serve(listener, app, state, None, true, async {
            let _ = stopped.await;
        }));
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let call = format!(
            "/v1beta/models/{}:generateContent",
            crate::settings::LOCAL_MODEL_ID
        );
        let request = post(&call, &[("x-goog-api-key", "garbage")], "{}", false);
        tcp.write_all(&request).await.unwrap();
        // The whole answer: its head, then as many bytes as it says.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        let complete = |raw: &[u8]| {
            let head = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
            let text = String::from_utf8_lossy(&raw[..head]).to_string();
            let length: usize = text
                .split("\r\n")
                .find_map(|l| l.strip_prefix("content-length: "))?
                .parse()
                .ok()?;
            (raw.len() >= head + length).then_some(())
        };
        while complete(&raw).is_none() {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the answer");
            raw.extend_from_slice(&chunk[..n]);
        }
        assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 400"));
        // Kept open, idle: shutting down closes it at once, not after the drain's wait.
        stop.send(()).unwrap();
        let waited = std::time::Instant::now();
        tokio::time::timeout(DRAIN_TIMEOUT / 2, server)
            .await
            .expect("serve returns without waiting for the idle connection")
            .unwrap()
            .unwrap();
        let n = tokio::time::timeout(DRAIN_TIMEOUT / 2, tcp.read(&mut chunk))
            .await
            .expect("the connection is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(waited.elapsed() < DRAIN_TIMEOUT / 2);
    }

    /// Stands in for a model that never answers; says when a call of it is dropped.
    struct Hang(tokio::sync::mpsc::UnboundedSender<()>);

    /// Sends on its channel when dropped.
    struct Dropped(tokio::sync::mpsc::UnboundedSender<()>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    #[async_trait::async_trait]
    impl Backend for Hang {
        fn models(&self) -> Vec<ModelInfo> {
            Echo.models()
        }
        async fn generate(&self, _: ChatRequest) -> Result<Completion, BackendError> {
            let _dropped = Dropped(self.0.clone());
            std::future::pending().await
        }
        async fn stream(&self, _: ChatRequest) -> Result<EventStream, BackendError> {
            let dropped = Dropped(self.0.clone());
            Ok(Box::pin(futures::stream::poll_fn(move |_| {
                let _ = &dropped;
                std::task::Poll::<Option<Result<StreamEvent, BackendError>>>::Pending
            })))
        }
        async fn count_tokens(&self, _: &ChatRequest) -> Result<u32, BackendError> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_client_that_leaves_cancels_its_call_on_the_direct_way() {
        let dir = tempfile::tempdir().unwrap();
        let (dropped, mut drops) = tokio::sync::mpsc::unbounded_channel();
        let (state, key) = state_with_backend(dir.path(), Arc::new(Hang(dropped))).await;
        let [addr, _] = both_ways(&state).await;
        let model = crate::settings::LOCAL_MODEL_ID;
        let good = r#"{"contents":[{"role":"user","parts":[{"text":"never answered"}]}]}"#;
        let valid = ("x-goog-api-key", key.as_str());
        // A call waiting for its answer, then a stream waiting for its first event.
        for path in [
            format!("/v1beta/models/{model}:generateContent"),
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
        ] {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&post(&path, &[valid], good, false))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                drops.try_recv().is_err(),
                "{path}: dropped while the client waits"
            );
            drop(tcp);
            tokio::time::timeout(Duration::from_secs(5), drops.recv())
                .await
                .unwrap_or_else(|_| panic!("{path}: the call outlived its client"))
                .unwrap();
        }
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
