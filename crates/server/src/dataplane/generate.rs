//! What the data plane answers with, whichever URL family was called: generateContent,
//! streamGenerateContent (SSE with `alt=sse`, a streamed JSON array without) and
//! countTokens, from a routed model's backend.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use keyplane_backends::{
    BackendError, ChatMessage, ChatRequest, FinishReason, GenerationParams, Role, StreamEvent,
};
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
    req: &GenerateContentRequest,
) -> Result<Response, ApiError> {
    req.validate()?;
    let chat = to_chat_request(m, req)?;
    let completion = m.backend.generate(chat).await.map_err(backend_error)?;
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
    req: &GenerateContentRequest,
    params: &Params,
) -> Result<Response, ApiError> {
    req.validate()?;
    let chat = to_chat_request(m, req)?;
    let sse = params.get("alt") == Some("sse");
    let events = m.backend.stream(chat).await.map_err(backend_error)?;
    Ok(stream_response(events, m.backend_model.clone(), sse))
}

/// countTokens over what a generateContent request would send to the model.
pub async fn count_tokens(
    m: &RoutedModel,
    gen: &GenerateContentRequest,
) -> Result<Response, ApiError> {
    if gen.contents.is_empty() {
        return Err(ApiError::invalid_argument(
            "* CountTokensRequest.contents: contents is not specified\n",
        ));
    }
    gen.validate()?;
    let chat = to_chat_request(m, gen)?;
    let n = m.backend.count_tokens(&chat).await.map_err(backend_error)?;
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    Ok(json_response(&CountTokensResponse {
        total_tokens: n,
        prompt_tokens_details: vec![ModalityTokenCount::text(n)],
        ..CountTokensResponse::default()
    }))
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
fn to_chat_request(m: &RoutedModel, req: &GenerateContentRequest) -> Result<ChatRequest, ApiError> {
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

/// Streams backend events as Gemini chunks. The last text delta is held back so that the
/// final chunk carries both text and `finishReason`, as Google's streams do.
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
        held: Option<(String, u32, u32)>,
        done: bool,
        model: String,
        id: String,
    }
    let st = St {
        events,
        held: None,
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
                    let prev = st.held.replace((text, prompt_tokens, completion_tokens));
                    if let Some((t, p, c)) = prev {
                        let out = chunk(Some(t), None, p, c, &st.model, &st.id);
                        return Some((Ok(out), st));
                    }
                }
                Some(Ok(StreamEvent::Done {
                    prompt_tokens,
                    completion_tokens,
                    finish_reason,
                })) => {
                    st.done = true;
                    let text = st.held.take().map(|(t, _, _)| t).unwrap_or_default();
                    let out = chunk(
                        Some(text),
                        Some(finish(finish_reason)),
                        prompt_tokens,
                        completion_tokens,
                        &st.model,
                        &st.id,
                    );
                    return Some((Ok(out), st));
                }
                Some(Err(e)) => {
                    st.done = true;
                    // Text already generated is sent before the error.
                    if let Some((t, p, c)) = st.held.take() {
                        st.held = None;
                        let out = chunk(Some(t), None, p, c, &st.model, &st.id);
                        // The error follows on the next poll.
                        st.events = futures::stream::once(async move { Err(e) }).boxed();
                        st.done = false;
                        return Some((Ok(out), st));
                    }
                    return Some((Err(backend_error(e)), st));
                }
                None => {
                    st.done = true;
                    if let Some((t, p, c)) = st.held.take() {
                        // The backend ended without Done: report what we have as OTHER.
                        let out =
                            chunk(Some(t), Some(finish_reason::OTHER), p, c, &st.model, &st.id);
                        return Some((Ok(out), st));
                    }
                    return None;
                }
            }
        }
    })
    .boxed()
}
