//! What the data plane answers with, whichever URL family was called: generateContent,
//! streamGenerateContent (SSE with `alt=sse`, a streamed JSON array without) and
//! countTokens, from a routed model's backend, or passed through to the Gemini upstream
//! ([`forward`]).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use keyplane_backends::upstream::{UpstreamClient, UpstreamResponse};
use keyplane_backends::{
    Backend, BackendError, ChatMessage, ChatRequest, FinishReason, GenerationParams, Role,
    StreamEvent,
};
use keyplane_wire::error::Code;
use keyplane_wire::error::JSON_UTF8;
use keyplane_wire::gemini::{
    finish_reason, Candidate, Content, CountTokensResponse, GenerateContentRequest,
    GenerateContentResponse, ModalityTokenCount, UsageMetadata,
};
use keyplane_wire::ApiError;

use super::Params;
use crate::app::RoutedModel;

/// generateContent.
pub async fn generate_content(
    m: &RoutedModel,
    backend: &dyn Backend,
    req: &GenerateContentRequest,
) -> Result<Response, ApiError> {
    req.validate()?;
    let chat = to_chat_request(m, req)?;
    let completion = backend.generate(chat).await.map_err(backend_error)?;
    let resp = GenerateContentResponse {
        candidates: vec![Candidate {
            content: Some(Content::model_text(completion.text)),
            finish_reason: Some(finish(completion.finish_reason).to_owned()),
            index: 0,
            ..Candidate::default()
        }],
        usage_metadata: Some(usage(
            completion.prompt_tokens,
            completion.completion_tokens,
        )),
        model_version: Some(completion.model_version),
        response_id: Some(response_id()),
        ..GenerateContentResponse::default()
    };
    Ok(json_response(&resp))
}

/// streamGenerateContent: SSE with `alt=sse`, else a streamed JSON array.
pub async fn stream_generate_content(
    m: &RoutedModel,
    backend: &dyn Backend,
    req: &GenerateContentRequest,
    params: &Params,
) -> Result<Response, ApiError> {
    req.validate()?;
    let chat = to_chat_request(m, req)?;
    let sse = params.get("alt") == Some("sse");
    let events = backend.stream(chat).await.map_err(backend_error)?;
    Ok(stream_response(events, m.backend_model.clone(), sse))
}

/// countTokens over what a generateContent request would send to the model.
pub async fn count_tokens(
    m: &RoutedModel,
    backend: &dyn Backend,
    gen: &GenerateContentRequest,
) -> Result<Response, ApiError> {
    validate_count(gen)?;
    let chat = to_chat_request(m, gen)?;
    let n = backend.count_tokens(&chat).await.map_err(backend_error)?;
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    Ok(json_response(&CountTokensResponse {
        total_tokens: n,
        prompt_tokens_details: vec![ModalityTokenCount::text(n)],
        ..CountTokensResponse::default()
    }))
}

/// countTokens' checks on the generateContent request it counts.
pub fn validate_count(gen: &GenerateContentRequest) -> Result<(), ApiError> {
    if gen.contents.is_empty() {
        return Err(ApiError::invalid_argument(
            "* CountTokensRequest.contents: contents is not specified\n",
        ));
    }
    gen.validate()
}

/// An authorized, validated call for the Gemini upstream.
pub struct Forward<'a> {
    /// The Gemini API version to call (`v1beta`, `v1`, `v1alpha`).
    pub version: &'a str,
    /// The upstream's model id.
    pub model: &'a str,
    /// `generateContent`, `streamGenerateContent` or `countTokens`.
    pub verb: &'a str,
    /// The caller's raw query string; its credentials are dropped in [`forward`].
    pub query: Option<&'a str>,
    /// The caller's `Content-Type` (`application/json` when it sent none).
    pub content_type: Option<&'a HeaderValue>,
    /// The body to send, as the caller sent it.
    pub body: Bytes,
}

/// Upstream error bodies are read whole (to check they are a google.rpc.Status) up to this.
const UPSTREAM_ERROR_LIMIT: usize = 1 << 20;

/// Passes the call to the upstream with the server's key and streams its answer back as it
/// arrives: status, content type and body unchanged. An upstream that cannot be reached
/// is a 503 UNAVAILABLE; an upstream error that is not a google.rpc.Status becomes one.
pub async fn forward(up: &UpstreamClient, call: Forward<'_>) -> Result<Response, ApiError> {
    let query = forwarded_query(call.query);
    let default_type = HeaderValue::from_static("application/json");
    let content_type = call.content_type.unwrap_or(&default_type);
    // The Gemini API has no v1beta1 (a Vertex version): its nearest is v1beta.
    let version = match call.version {
        "v1beta1" => "v1beta",
        v => v,
    };
    let mut resp = up
        .forward(
            version,
            call.model,
            call.verb,
            query.as_deref(),
            content_type,
            call.body,
        )
        .await
        .map_err(|e| {
            tracing::warn!(cause = %e, "the Gemini upstream cannot be reached");
            ApiError::unavailable("The service is currently unavailable.")
        })?;
    if !resp.status.is_success() {
        return Ok(upstream_error(resp).await);
    }
    let status = resp.status;
    let content_type = resp.content_type.take();
    let content_length = resp.content_length.take();
    let mut out = Response::new(Body::new(resp.into_body()));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    if let Some(v) = content_type {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(v) = content_length {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    if call.verb == "streamGenerateContent" {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
    }
    Ok(out)
}

/// The caller's query without its credentials (`key`, `access_token`): borrowed when it
/// holds none, `None` when nothing is left.
fn forwarded_query(raw: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
    let raw = raw.filter(|q| !q.is_empty())?;
    if !raw.split('&').any(is_credential) {
        return Some(std::borrow::Cow::Borrowed(raw));
    }
    let kept: Vec<&str> = raw
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_credential(pair))
        .collect();
    (!kept.is_empty()).then(|| std::borrow::Cow::Owned(kept.join("&")))
}

/// Whether a `name=value` query pair carries a credential (names percent-decoded, as the
/// credential reader decodes them).
fn is_credential(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
    if name.contains('%') {
        return urlencoding::decode(name)
            .is_ok_and(|n| matches!(n.as_ref(), "key" | "access_token"));
    }
    matches!(name, "key" | "access_token")
}

/// An upstream error: passed through when its body is a google.rpc.Status, else replaced
/// by one with the code its HTTP status stands for.
async fn upstream_error(resp: UpstreamResponse) -> Response {
    let status = resp.status;
    if matches!(status.as_u16(), 401 | 403) {
        tracing::warn!(%status, "the Gemini upstream refused the call (check the upstream key)");
    } else {
        tracing::debug!(%status, "the Gemini upstream answered an error");
    }
    let body = match resp.read_limited(UPSTREAM_ERROR_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(cause = %e, %status, "the Gemini upstream's error body could not be read");
            return ApiError::unavailable("The service is currently unavailable.").into_response();
        }
    };
    if is_rpc_status(&body) {
        return (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8))],
            body,
        )
            .into_response();
    }
    tracing::warn!(%status, "the Gemini upstream answered an error that is not a google.rpc.Status");
    let code = match status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        429 => Code::ResourceExhausted,
        504 => Code::DeadlineExceeded,
        _ => Code::Unavailable,
    };
    ApiError::new(
        code,
        format!(
            "The upstream model service answered HTTP {}.",
            status.as_u16()
        ),
    )
    .into_response()
}

/// `{"error": {"code": N, "message": "...", "status": "CANONICAL_NAME", ...}}`.
fn is_rpc_status(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Status,
    }
    #[derive(serde::Deserialize)]
    struct Status {
        code: i64,
        message: String,
        status: String,
    }
    serde_json::from_slice::<Envelope>(body).is_ok_and(|e| {
        e.error.code > 0 && !e.error.message.is_empty() && Code::parse(&e.error.status).is_some()
    })
}

pub fn json_response<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8))],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal_from(e).into_response(),
    }
}

fn finish(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => finish_reason::STOP,
        FinishReason::MaxTokens => finish_reason::MAX_TOKENS,
    }
}

fn usage(prompt: u32, completion: u32) -> UsageMetadata {
    UsageMetadata::text(
        i32::try_from(prompt).unwrap_or(i32::MAX),
        i32::try_from(completion).unwrap_or(i32::MAX),
    )
}

/// A response id in the shape Google uses (22 URL-safe characters).
fn response_id() -> String {
    use base64::Engine;
    let raw: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(raw)
        .chars()
        .take(22)
        .collect()
}

pub fn backend_error(e: BackendError) -> ApiError {
    match e {
        BackendError::InvalidArgument(msg) => ApiError::invalid_argument(msg),
        BackendError::Overloaded => ApiError::overloaded(),
        BackendError::Unavailable(msg) => {
            tracing::warn!(cause = %msg, "backend unavailable");
            ApiError::unavailable("The service is currently unavailable.")
        }
        BackendError::Internal(msg) => ApiError::internal_from(msg),
    }
}

/// The wire request as the backend's neutral chat request. Parts the local model cannot
/// read, and features it does not have, are refused as Google refuses them for models
/// without them.
pub(super) fn to_chat_request(
    m: &RoutedModel,
    req: &GenerateContentRequest,
) -> Result<ChatRequest, ApiError> {
    let model_name = format!("models/{}", m.backend_model);
    if !req.tools.is_empty() {
        let kinds: Vec<String> = req.tools.iter().flat_map(|t| t.kinds()).collect();
        if kinds.iter().any(|k| k == "functionDeclarations") {
            return Err(ApiError::invalid_argument(format!(
                "Function calling is not enabled for {model_name}"
            )));
        }
        return Err(ApiError::invalid_argument(format!(
            "Tools ({}) are not supported by {model_name}.",
            kinds.join(", ")
        )));
    }
    if req.cached_content.is_some() {
        return Err(ApiError::invalid_argument(format!(
            "Cached content is not supported by {model_name}."
        )));
    }
    let text_only = |c: &Content, what: &str| -> Result<String, ApiError> {
        for p in &c.parts {
            if p.text.is_none() {
                return Err(ApiError::invalid_argument(format!(
                    "{model_name} accepts text parts only; {what} holds a non-text part (inline data, file data, function call or code)."
                )));
            }
        }
        Ok(c.text())
    };
    let system = match &req.system_instruction {
        Some(c) => Some(text_only(c, "systemInstruction")?),
        None => None,
    };
    let mut messages = Vec::with_capacity(req.contents.len());
    for (i, c) in req.contents.iter().enumerate() {
        let role = if c.role_or_user() == "model" {
            Role::Model
        } else {
            Role::User
        };
        messages.push(ChatMessage {
            role,
            text: text_only(c, &format!("contents[{i}]"))?,
        });
    }
    let mut params = GenerationParams::default();
    if let Some(g) = &req.generation_config {
        if let Some(mime) = g.response_mime_type.as_deref() {
            if mime != "text/plain" {
                return Err(ApiError::invalid_argument(format!(
                    "JSON mode is not enabled for {model_name}"
                )));
            }
        }
        if g.response_schema.is_some() || g.response_json_schema.is_some() {
            return Err(ApiError::invalid_argument(format!(
                "JSON mode is not enabled for {model_name}"
            )));
        }
        if g.response_modalities.iter().any(|m| m != "TEXT") {
            return Err(ApiError::invalid_argument(format!(
                "Multi-modal output is not supported by {model_name}."
            )));
        }
        params.temperature = g.temperature.map(|t| t as f32);
        params.top_p = g.top_p.map(|p| p as f32);
        params.top_k = g.top_k.filter(|k| *k > 0).map(|k| k as u32);
        params.max_output_tokens = g
            .max_output_tokens
            .map(|n| (n as u32).min(m.info.output_token_limit));
        params.stop_sequences = g.stop_sequences.clone();
        params.seed = g.seed.map(|s| s as u32);
    }
    Ok(ChatRequest {
        model: m.backend_model.clone(),
        system,
        messages,
        params,
    })
}

/// One streamed chunk.
fn chunk(
    text: Option<String>,
    finish_reason: Option<&str>,
    prompt: u32,
    completion: u32,
    model: &str,
    id: &str,
) -> GenerateContentResponse {
    GenerateContentResponse {
        candidates: vec![Candidate {
            content: text.map(Content::model_text),
            finish_reason: finish_reason.map(str::to_owned),
            index: 0,
            ..Candidate::default()
        }],
        usage_metadata: Some(usage(prompt, completion)),
        model_version: Some(model.to_owned()),
        response_id: Some(id.to_owned()),
        ..GenerateContentResponse::default()
    }
}

/// Streams backend events as Gemini chunks. Each text delta goes out as soon as the backend
/// yields it; the end of the turn is one more chunk with an empty text part, `finishReason`
/// and the final usage, as Google's streams end.
fn stream_response(events: keyplane_backends::EventStream, model: String, sse: bool) -> Response {
    let id = response_id();
    let chunks = async_stream(events, model, id);
    let body = if sse {
        Body::from_stream(chunks.map(|item| {
            let json = match item {
                Ok(c) => serde_json::to_string(&c).unwrap_or_default(),
                Err(e) => serde_json::to_string(&e.to_status_json()).unwrap_or_default(),
            };
            Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {json}\r\n\r\n")))
        }))
    } else {
        let mut first = true;
        let items = chunks.map(move |item| {
            let json = match item {
                Ok(c) => serde_json::to_string_pretty(&c).unwrap_or_default(),
                Err(e) => serde_json::to_string_pretty(&e.to_status_json()).unwrap_or_default(),
            };
            let sep = if first { "[" } else { ",\r\n" };
            first = false;
            Ok::<_, std::convert::Infallible>(Bytes::from(format!("{sep}{json}\n")))
        });
        let close = futures::stream::once(async { Ok(Bytes::from_static(b"]")) });
        // An empty stream still has to be a JSON array.
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let o1 = opened.clone();
        let items = items.inspect(move |_| o1.store(true, std::sync::atomic::Ordering::Relaxed));
        let close = close.map(move |r| {
            if opened.load(std::sync::atomic::Ordering::Relaxed) {
                r
            } else {
                Ok(Bytes::from_static(b"[]"))
            }
        });
        Body::from_stream(items.chain(close))
    };
    let content_type = if sse { "text/event-stream" } else { JSON_UTF8 };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Backend events -> wire chunks (or one in-stream error, then the end).
fn async_stream(
    events: keyplane_backends::EventStream,
    model: String,
    id: String,
) -> futures::stream::BoxStream<'static, Result<GenerateContentResponse, ApiError>> {
    struct St {
        events: keyplane_backends::EventStream,
        /// Usage of the last delta sent, if any was.
        sent: Option<(u32, u32)>,
        done: bool,
        model: String,
        id: String,
    }
    let st = St {
        events,
        sent: None,
        done: false,
        model,
        id,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.events.next().await {
                Some(Ok(StreamEvent::Delta {
                    text,
                    prompt_tokens,
                    completion_tokens,
                })) => {
                    if text.is_empty() {
                        continue;
                    }
                    st.sent = Some((prompt_tokens, completion_tokens));
                    let out = chunk(
                        Some(text),
                        None,
                        prompt_tokens,
                        completion_tokens,
                        &st.model,
                        &st.id,
                    );
                    return Some((Ok(out), st));
                }
                Some(Ok(StreamEvent::Done {
                    prompt_tokens,
                    completion_tokens,
                    finish_reason,
                })) => {
                    st.done = true;
                    let out = chunk(
                        Some(String::new()),
                        Some(finish(finish_reason)),
                        prompt_tokens,
                        completion_tokens,
                        &st.model,
                        &st.id,
                    );
                    return Some((Ok(out), st));
                }
                Some(Err(e)) => {
                    // Text already generated has gone out; the error ends the stream.
                    st.done = true;
                    return Some((Err(backend_error(e)), st));
                }
                None => {
                    // The backend ended without Done: what was sent ends as OTHER.
                    st.done = true;
                    let (p, c) = st.sent?;
                    let out = chunk(
                        Some(String::new()),
                        Some(finish_reason::OTHER),
                        p,
                        c,
                        &st.model,
                        &st.id,
                    );
                    return Some((Ok(out), st));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_leave_in_the_query() {
        let q = |raw: &str| forwarded_query(Some(raw)).map(|c| c.into_owned());
        assert_eq!(q("alt=sse"), Some("alt=sse".to_owned()));
        assert!(matches!(
            forwarded_query(Some("alt=sse")),
            Some(std::borrow::Cow::Borrowed(_))
        ));
        assert_eq!(q("key=AIzaX&alt=sse"), Some("alt=sse".to_owned()));
        assert_eq!(q("alt=sse&key=AIzaX"), Some("alt=sse".to_owned()));
        assert_eq!(
            q("k%65y=AIzaX&alt=sse&access_token=t"),
            Some("alt=sse".to_owned())
        );
        assert_eq!(q("key=AIzaX"), None);
        assert_eq!(q("key"), None);
        assert_eq!(q("keys=1&monkey=2"), Some("keys=1&monkey=2".to_owned()));
        assert_eq!(forwarded_query(Some("")), None);
        assert_eq!(forwarded_query(None), None);
    }

    #[test]
    fn rpc_status_bodies_are_recognised() {
        assert!(is_rpc_status(
            br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[]}}"#
        ));
        assert!(!is_rpc_status(b"<html>Bad Gateway</html>"));
        assert!(!is_rpc_status(
            br#"{"error":{"code":400,"message":"x","status":"NOPE"}}"#
        ));
        assert!(!is_rpc_status(br#"{"error":"bad"}"#));
        assert!(!is_rpc_status(
            br#"{"error":{"code":400,"message":"","status":"INVALID_ARGUMENT"}}"#
        ));
    }
}
