//! fake-upstream: a Gemini API stand-in that answers at once, so that what a benchmark
//! measures through a proxy is the proxy's own cost.
//!
//! Serves `POST /{version}/models/{model}:generateContent` (a canned answer),
//! `:countTokens`, `:streamGenerateContent` (a canned SSE stream of `--events` events,
//! `--event-delay-ms` apart) and `GET /{version}/models/{model}`. Every request must carry
//! `x-goog-api-key` (or `?key=`) equal to `--key`, else 403 PERMISSION_DENIED: a proxy that
//! forgets to swap the client's key for the upstream key is caught. `GET /__stats` answers
//! `{"requests": N}`, the number of model requests served, so a harness can check that
//! rejected requests never reached the upstream.

use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(about = "A Gemini API stand-in that answers instantly (for benchmarks)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18081")]
    listen: SocketAddr,
    /// The upstream API key callers must present (x-goog-api-key or ?key=).
    #[arg(long, env = "FAKE_UPSTREAM_KEY")]
    key: String,
    /// Events in a streamed answer.
    #[arg(long, default_value_t = 5)]
    events: usize,
    /// Pause between streamed events, in milliseconds (0: none).
    #[arg(long, default_value_t = 0)]
    event_delay_ms: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=UTF-8");
const SSE: HeaderValue = HeaderValue::from_static("text/event-stream");

const GENERATE_ANSWER: &str = r#"{"candidates":[{"content":{"parts":[{"text":"AI learns patterns from data and uses them to make predictions."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":12,"totalTokenCount":20,"promptTokensDetails":[{"modality":"TEXT","tokenCount":8}]},"modelVersion":"gemini-2.5-flash","responseId":"fake-upstream-0001"}"#;
const COUNT_ANSWER: &str =
    r#"{"totalTokens":8,"promptTokensDetails":[{"modality":"TEXT","tokenCount":8}]}"#;
const STREAM_WORDS: &[&str] = &["AI ", "learns ", "patterns ", "from ", "data", "."];

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

struct Upstream {
    key: String,
    events: usize,
    event_delay: Duration,
    served: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.key.is_empty(), "--key must not be empty");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let upstream = Arc::new(Upstream {
        key: args.key,
        events: args.events.max(1),
        event_delay: Duration::from_millis(args.event_delay_ms),
        served: AtomicU64::new(0),
    });
    println!(
        "fake-upstream listening on http://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fake-upstream: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let upstream = upstream.clone();
                async move { Ok::<_, Infallible>(upstream.handle(req).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Upstream {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        // Read the whole request, as a real upstream would.
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "unreadable body",
                )
            }
        };
        let path = parts.uri.path();
        if path == "/__stats" {
            let n = self.served.load(Ordering::Relaxed);
            return json(StatusCode::OK, format!("{{\"requests\":{n}}}"));
        }
        if !self.key_ok(&parts) {
            return status(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            );
        }
        let Some((_, rest)) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once("/models/"))
        else {
            return not_found(path);
        };
        match (parts.method, rest.rsplit_once(':')) {
            (Method::GET, None) => {
                self.served.fetch_add(1, Ordering::Relaxed);
                json(
                    StatusCode::OK,
                    format!(
                        r#"{{"name":"models/{rest}","version":"001","displayName":"{rest}","inputTokenLimit":1048576,"outputTokenLimit":65536,"supportedGenerationMethods":["generateContent","countTokens"]}}"#
                    ),
                )
            }
            (Method::POST, Some((_, verb))) => {
                if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "INVALID_ARGUMENT",
                        "Invalid JSON payload received.",
                    );
                }
                self.served.fetch_add(1, Ordering::Relaxed);
                match verb {
                    "generateContent" => json(StatusCode::OK, GENERATE_ANSWER.to_owned()),
                    "countTokens" => json(StatusCode::OK, COUNT_ANSWER.to_owned()),
                    "streamGenerateContent" => self.stream(),
                    _ => not_found(path),
                }
            }
            _ => not_found(path),
        }
    }

    fn key_ok(&self, parts: &http::request::Parts) -> bool {
        if let Some(v) = parts.headers.get("x-goog-api-key") {
            return v.as_bytes() == self.key.as_bytes();
        }
        parts.uri.query().is_some_and(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .any(|(k, v)| k == "key" && v == self.key)
        })
    }

    fn stream(&self) -> Response<Body> {
        let n = self.events;
        let delay = self.event_delay;
        let events = futures::stream::unfold(0usize, move |i| async move {
            if i >= n {
                return None;
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let word = STREAM_WORDS[i % STREAM_WORDS.len()];
            let last = i + 1 == n;
            let finish = if last {
                r#","finishReason":"STOP""#
            } else {
                ""
            };
            let usage = if last {
                r#","usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":12,"totalTokenCount":20}"#
            } else {
                ""
            };
            let event = format!(
                "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{word}\"}}],\"role\":\"model\"}}{finish},\"index\":0}}]{usage},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"fake-upstream-0001\"}}\r\n\r\n"
            );
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), i + 1))
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(events)));
        resp.headers_mut().insert(header::CONTENT_TYPE, SSE);
        resp
    }
}

fn json(code: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *resp.status_mut() = code;
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
    resp
}

/// A google.rpc.Status error, as Google's front end answers.
fn status(code: StatusCode, status: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": {"code": code.as_u16(), "message": message, "status": status}
    });
    json(code, body.to_string())
}

fn not_found(path: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("The requested URL {path} was not found on this server."),
    )
}
