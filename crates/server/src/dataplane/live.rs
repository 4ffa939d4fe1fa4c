//! The Live API: `GET /ws/google.ai.generativelanguage.{v}.GenerativeService.BidiGenerateContent`
//! (an API key in `x-goog-api-key` or `?key=`) and `…BidiGenerateContentConstrained` (an
//! ephemeral token: `Authorization: Token auth_tokens/…`, `x-goog-api-key` or
//! `?access_token=`), a WebSocket session as Google's SDKs speak it.
//!
//! * The upgrade is always accepted once the path names a Live method; every refusal after
//!   that is a close frame whose code and reason say why, as Google's Live endpoint does and
//!   as the SDKs surface it (`APIError(code, reason)`): 1007 for a bad credential or an
//!   invalid message, 1008 for a refused permission or an unknown model, 1011 for an
//!   internal failure, 1013 when the model is overloaded.
//! * The first client message must be `{"setup": {…}}` (BidiGenerateContentSetup); the
//!   server answers `{"setupComplete": {}}`. An ephemeral token's constraints apply to the
//!   setup (a locked model or field the setup changes is refused, a locked field left out is
//!   filled in) and one use is spent, atomically, when the session starts; resuming is not
//!   offered, so every session is new. The session ends at the token's `expireTime`.
//! * `clientContent` (`turns`, `turnComplete`) and `realtimeInput.text` are user turns;
//!   the answer streams as `serverContent.modelTurn` messages, then `generationComplete`,
//!   then `turnComplete` with `usageMetadata`. New input while the model is answering
//!   interrupts it (`serverContent.interrupted`). The history is kept for the session.
//! * The local model reads and writes text only: `responseModalities` other than TEXT
//!   (the Python SDK asks for AUDIO unless told otherwise), audio or video input and tools
//!   are refused with 1007 and a reason naming the model.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::stream::{SplitSink, StreamExt};
use futures::SinkExt;
use keyplane_backends::{EventStream, StreamEvent};
use keyplane_wire::case::to_camel;
use keyplane_wire::gemini::GenerateContentRequest;
use keyplane_wire::{parse_json_body, ApiError, Code};
use serde_json::{json, Map, Value};
use std::time::Duration;

use super::access::{authorize, DataCaller, DataRequest, Target};
use super::{generate, VERSIONS};
use crate::app::{AppState, Route, RoutedModel};

const RPC_PREFIX: &str = "google.ai.generativelanguage.";
const SERVICE: &str = "GenerativeService";
/// Largest client message accepted (the REST body limit).
const MAX_MESSAGE_BYTES: usize = crate::MAX_BODY_BYTES;
/// How long a new connection may wait before sending its setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a refused connection waits for the setup before it is closed.
const REFUSAL_WAIT: Duration = Duration::from_secs(10);
/// Setup fields that only shape audio, sessions or transcription: accepted, and without
/// effect on a text-only model.
const IGNORED_SETUP_FIELDS: &[&str] = &[
    "realtimeInputConfig",
    "contextWindowCompression",
    "inputAudioTranscription",
    "outputAudioTranscription",
    "proactivity",
    "enableAffectiveDialog",
    "explicitVadSignal",
];

/// `GET /ws/{rpc}`.
pub async fn connect(
    State(state): State<AppState>,
    Path(rpc): Path<String>,
    mut req: DataRequest,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Some((version, method)) = parse_rpc(&rpc) else {
        return ApiError::not_found(format!(
            "The requested URL /ws/{rpc} was not found on this server."
        ))
        .into_response();
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return ApiError::invalid_argument(format!(
            "{method} is a WebSocket method: connect with an HTTP/1.1 Upgrade: websocket request."
        ))
            .into_response()
        }
    };
    req.version = version;
    let target = Target::gemini(version, SERVICE, method);
    // The credential is checked now; a refusal is told in the close frame, after the upgrade.
    let caller = authorize(&state, &req, &target).await;
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let (sink, mut stream) = socket.split();
            let mut session = Session {
                state,
                sink,
                target,
                version,
                history: Vec::new(),
                setup: Map::new(),
                model: None,
                project_number: 0,
                key_id: String::new(),
            };
            let outcome = match caller {
                Ok(caller) => session.run(caller, stream).await,
                Err(e) => {
                    // As Google's endpoint: the refusal follows the client's setup message,
                    // so the SDKs read it as the close of the session, not a failed send.
                    let _ = tokio::time::timeout(REFUSAL_WAIT, next_message(&mut stream)).await;
                    Err(e)
                }
            };
            session.close(outcome).await;
        })
}

/// `google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent` ->
/// (`v1beta`, `BidiGenerateContent`).
fn parse_rpc(rpc: &str) -> Option<(&'static str, &'static str)> {
    let rest = rpc.strip_prefix(RPC_PREFIX)?;
    let (version, rest) = rest.split_once('.')?;
    let method = rest.strip_prefix(SERVICE)?.strip_prefix('.')?;
    let version = VERSIONS.iter().find(|v| **v == version)?;
    let method = ["BidiGenerateContent", "BidiGenerateContentConstrained"]
        .into_iter()
        .find(|m| *m == method)?;
    Some((version, method))
}

type Sink = SplitSink<WebSocket, Message>;

struct Session {
    state: AppState,
    sink: Sink,
    target: Target,
    version: &'static str,
    /// The conversation so far, as Gemini `Content` objects.
    history: Vec<Value>,
    /// The setup (after an ephemeral token's constraints), camelCase keys.
    setup: Map<String, Value>,
    model: Option<RoutedModel>,
    /// The consumer project and key (empty for an ephemeral token), once set up.
    project_number: i64,
    key_id: String,
}

/// Why a session ended early: the close frame to send.
type Outcome = Result<(), ApiError>;

impl Session {
    async fn run(
        &mut self,
        caller: DataCaller,
        mut incoming: futures::stream::SplitStream<WebSocket>,
    ) -> Outcome {
        let first = match tokio::time::timeout(SETUP_TIMEOUT, next_message(&mut incoming)).await {
            Ok(Some(m)) => m?,
            Ok(None) => return Ok(()),
            Err(_) => {
                return Err(ApiError::new(
                    Code::DeadlineExceeded,
                    "No setup message was received in time.",
                ))
            }
        };
        let deadline = self.start(&caller, first).await?;
        self.send(json!({ "setupComplete": {} })).await?;

        let mut generation: Option<(EventStream, Turn)> = None;
        let expiry = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                msg = next_message(&mut incoming) => {
                    let Some(msg) = msg else { return Ok(()) };
                    let input = self.client_message(msg?)?;
                    if let Some(turns) = input {
                        if generation.take().is_some() {
                            self.send(json!({"serverContent": {"interrupted": true}})).await?;
                        }
                        self.history.extend(turns.turns);
                        if turns.complete {
                            generation = Some(self.generate().await?);
                        }
                    }
                }
                event = next_event(&mut generation) => {
                    if let Some(done) = self.stream_event(&mut generation, event).await? {
                        self.history.push(done);
                    }
                }
                () = &mut expiry => {
                    return Err(ApiError::new(
                        Code::PermissionDenied,
                        "The ephemeral token of this session has expired.",
                    ));
                }
            }
        }
    }

    /// The setup message: credential constraints, model routing, validation. Returns how
    /// long the session may last (an ephemeral token's `expireTime`).
    async fn start(
        &mut self,
        caller: &DataCaller,
        first: Value,
    ) -> Result<Option<Duration>, ApiError> {
        let Value::Object(mut msg) = first else {
            return Err(ApiError::invalid_argument(
                "The first message must be a setup message.",
            ));
        };
        let setup = match (msg.remove("setup"), msg.is_empty()) {
            (Some(Value::Object(setup)), true) => setup,
            _ => {
                return Err(ApiError::invalid_argument(
                    "The first message must be {\"setup\": {...}} and nothing else.",
                ))
            }
        };
        let model_name = setup
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid_argument("setup.model is required."))?
            .to_owned();
        let id = model_name
            .strip_prefix("models/")
            .unwrap_or(&model_name)
            .to_owned();
        let setup = match &caller.ephemeral {
            Some(token) => {
                let raw = serde_json::to_vec(&setup).map_err(ApiError::internal_from)?;
                let constrained = token.constrain(&id, &self.target.method, &raw)?;
                serde_json::from_slice(&constrained).map_err(ApiError::internal_from)?
            }
            None => setup,
        };
        let setup = camel_keys(setup);
        // The upstream's Live API is not relayed: only models answered here stream live.
        let m = self
            .state
            .models
            .get(&id)
            .filter(|m| matches!(m.route, Route::Local(_)))
            .cloned()
            .ok_or_else(|| ApiError::model_not_found(&id, self.version, "bidiGenerateContent"))?;
        for key in setup.keys() {
            let known = matches!(
                key.as_str(),
                "model" | "generationConfig" | "systemInstruction" | "tools" | "sessionResumption"
            ) || IGNORED_SETUP_FIELDS.contains(&key.as_str());
            if !known {
                return Err(ApiError::invalid_argument(format!(
                    "Invalid JSON payload received. Unknown name \"{key}\" at 'setup': Cannot find field."
                )));
            }
        }
        if setup
            .get("sessionResumption")
            .and_then(|r| r.get("handle"))
            .is_some_and(|h| !h.is_null())
        {
            return Err(ApiError::invalid_argument(
                "Session resumption is not supported: start a new session without a handle.",
            ));
        }
        self.setup = setup;
        self.model = Some(m);
        self.project_number = caller.project_number;
        self.key_id = caller
            .key
            .as_ref()
            .map(|k| k.key_id.clone())
            .unwrap_or_default();
        // The setup must make a valid request on its own (modalities, tools, config).
        self.request(&[json!({"role": "user", "parts": [{"text": "."}]})])?;
        let deadline = match &caller.ephemeral {
            Some(token) => {
                token.spend(&self.state, &self.target.method).await?;
                let left = token.expire_time - keyplane_core::now();
                Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
            }
            None => None,
        };
        Ok(deadline)
    }

    /// What a client message adds to the conversation (`None`: nothing to answer).
    fn client_message(&self, msg: Value) -> Result<Option<Turns>, ApiError> {
        let Value::Object(msg) = msg else {
            return Err(ApiError::invalid_argument(
                "A client message must be a JSON object.",
            ));
        };
        let msg = camel_keys(msg);
        let mut fields = msg.into_iter();
        let (Some((kind, body)), None) = (fields.next(), fields.next()) else {
            return Err(ApiError::invalid_argument(
                "A client message must set exactly one of setup, clientContent, realtimeInput, toolResponse.",
            ));
        };
        let model = self.model_name();
        match kind.as_str() {
            "clientContent" => {
                let turns = match body.get("turns") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(t)) => t.clone(),
                    Some(_) => {
                        return Err(ApiError::invalid_argument(
                            "clientContent.turns must be a list of Content.",
                        ))
                    }
                };
                let complete = body
                    .get("turnComplete")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                Ok(Some(Turns { turns, complete }))
            }
            "realtimeInput" => {
                let body = camel_keys(body.as_object().cloned().unwrap_or_default());
                for media in ["audio", "video", "mediaChunks"] {
                    if body.get(media).is_some_and(|v| !v.is_null()) {
                        return Err(ApiError::invalid_argument(format!(
                            "{model} accepts text input only; realtimeInput.{media} is not supported."
                        )));
                    }
                }
                match body.get("text").and_then(Value::as_str) {
                    Some(text) => Ok(Some(Turns {
                        turns: vec![json!({"role": "user", "parts": [{"text": text}]})],
                        complete: true,
                    })),
                    // activityStart / activityEnd / audioStreamEnd: nothing to answer.
                    None => Ok(None),
                }
            }
            "toolResponse" => Err(ApiError::invalid_argument(format!(
                "Function calling is not enabled for {model}"
            ))),
            "setup" => Err(ApiError::invalid_argument(
                "setup may be sent only once, as the first message.",
            )),
            other => Err(ApiError::invalid_argument(format!(
                "Invalid JSON payload received. Unknown name \"{other}\": Cannot find field."
            ))),
        }
    }

    fn model_name(&self) -> String {
        self.model
            .as_ref()
            .map(|m| format!("models/{}", m.backend_model))
            .unwrap_or_default()
    }

    /// The session as a generateContent request over `contents`, validated as REST is.
    fn request(&self, contents: &[Value]) -> Result<keyplane_backends::ChatRequest, ApiError> {
        let m = self
            .model
            .as_ref()
            .ok_or_else(|| ApiError::internal_from("no model"))?;
        let mut body = Map::new();
        body.insert("contents".into(), Value::Array(contents.to_vec()));
        for field in ["generationConfig", "systemInstruction", "tools"] {
            if let Some(v) = self.setup.get(field) {
                body.insert(field.into(), v.clone());
            }
        }
        // Live has no responseModalities default of its own here: TEXT is what this model makes.
        let raw = serde_json::to_vec(&body).map_err(ApiError::internal_from)?;
        let gen: GenerateContentRequest = parse_json_body(&raw)?;
        gen.validate()?;
        generate::to_chat_request(m, &gen)
    }

    async fn generate(&mut self) -> Result<(EventStream, Turn), ApiError> {
        let chat = self.request(&self.history)?;
        let Some(RoutedModel {
            id,
            route: Route::Local(backend),
            ..
        }) = &self.model
        else {
            return Err(ApiError::internal_from(
                "a live session without a local model",
            ));
        };
        // A turn over quota ends the session (close 1011 with Google's quota message).
        let mut ticket = crate::meter::Ticket::new(
            &self.state,
            self.project_number,
            &self.key_id,
            id,
            "bidiGenerateContent",
        );
        // Interrupted by the client unless it completes: 499 CANCELLED.
        ticket.code = 499;
        if let Err(e) = super::admit(&self.state, &mut ticket) {
            ticket.code = e.http_status().as_u16();
            return Err(e);
        }
        let events = backend
            .stream(chat)
            .await
            .map_err(generate::backend_error)?;
        Ok((
            events,
            Turn {
                text: String::new(),
                ticket: Some(ticket),
            },
        ))
    }

    /// One backend event: relayed as `serverContent`; at the end, the model's whole turn.
    async fn stream_event(
        &mut self,
        generation: &mut Option<(EventStream, Turn)>,
        event: Option<Result<StreamEvent, keyplane_backends::BackendError>>,
    ) -> Result<Option<Value>, ApiError> {
        let event = match event {
            Some(e) => e.map_err(generate::backend_error)?,
            None => {
                *generation = None;
                return Err(ApiError::internal_from(
                    "the model stopped without finishing",
                ));
            }
        };
        match event {
            StreamEvent::Delta { text, .. } => {
                if let Some((_, turn)) = generation.as_mut() {
                    turn.text.push_str(&text);
                }
                if !text.is_empty() {
                    self.send(json!({"serverContent": {"modelTurn": {"parts": [{"text": text}]}}}))
                        .await?;
                }
                Ok(None)
            }
            StreamEvent::Done {
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                let mut turn = generation.take().map(|(_, t)| t).unwrap_or_default();
                if let Some(t) = turn.ticket.as_mut() {
                    t.code = 200;
                    t.prompt_tokens = u64::from(prompt_tokens);
                    t.candidates_tokens = u64::from(completion_tokens);
                }
                self.send(json!({"serverContent": {"generationComplete": true}}))
                    .await?;
                self.send(json!({
                    "serverContent": {"turnComplete": true},
                    "usageMetadata": {
                        "promptTokenCount": prompt_tokens,
                        "responseTokenCount": completion_tokens,
                        "totalTokenCount": prompt_tokens + completion_tokens,
                        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
                        "responseTokensDetails": [{"modality": "TEXT", "tokenCount": completion_tokens}],
                    },
                }))
                .await?;
                Ok(Some(
                    json!({"role": "model", "parts": [{"text": turn.text}]}),
                ))
            }
        }
    }

    async fn send(&mut self, v: Value) -> Outcome {
        let text = v.to_string();
        self.sink
            .send(Message::Text(text.into()))
            .await
            // The client went away: nothing left to tell it.
            .map_err(|_| ApiError::new(Code::Cancelled, "the client closed the connection"))
    }

    /// Ends the session: a normal close, or the error's close code and reason.
    async fn close(mut self, outcome: Outcome) {
        let frame = match outcome {
            Ok(()) => CloseFrame {
                code: 1000,
                reason: "".into(),
            },
            Err(e) if e.status == Code::Cancelled => return,
            Err(e) => {
                if let Some(cause) = &e.cause {
                    tracing::warn!(%cause, "live session failed");
                }
                CloseFrame {
                    code: close_code(&e),
                    reason: close_reason(&e.message).into(),
                }
            }
        };
        let _ = self.sink.send(Message::Close(Some(frame))).await;
        let _ = self.sink.close().await;
    }
}

/// User turns a client message adds, and whether the model should answer now.
struct Turns {
    turns: Vec<Value>,
    complete: bool,
}

/// The model's turn being generated, metered as one `bidiGenerateContent` call (each turn
/// counts against the generation quota, as a generateContent call does).
#[derive(Default)]
struct Turn {
    text: String,
    ticket: Option<crate::meter::Ticket>,
}

async fn next_event(
    generation: &mut Option<(EventStream, Turn)>,
) -> Option<Result<StreamEvent, keyplane_backends::BackendError>> {
    match generation {
        Some((events, _)) => events.next().await,
        None => std::future::pending().await,
    }
}

/// The next JSON message from the client (`None` when it closed the connection).
async fn next_message(
    incoming: &mut futures::stream::SplitStream<WebSocket>,
) -> Option<Result<Value, ApiError>> {
    loop {
        let msg = match incoming.next().await? {
            Ok(m) => m,
            Err(_) => return None,
        };
        let bytes = match msg {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return None,
        };
        return Some(serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::invalid_argument(format!("Invalid JSON payload received. {e}"))
        }));
    }
}

/// The close code Google's Live endpoint uses for an error of this kind.
fn close_code(e: &ApiError) -> u16 {
    match e.status {
        Code::InvalidArgument
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::OutOfRange => 1007,
        Code::PermissionDenied | Code::NotFound => 1008,
        Code::Unavailable => 1013,
        _ => 1011,
    }
}

/// A close frame's reason holds at most 123 bytes.
fn close_reason(message: &str) -> String {
    const MAX: usize = 123;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// Object keys in camelCase, one level deep at the top and inside objects (the Python SDK
/// may send snake_case); free-form values are left as they are.
fn camel_keys(obj: Map<String, Value>) -> Map<String, Value> {
    obj.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Object(inner)
                    if matches!(k.as_str(), "generation_config" | "generationConfig") =>
                {
                    Value::Object(inner.into_iter().map(|(k, v)| (to_camel(&k), v)).collect())
                }
                v => v,
            };
            (to_camel(&k), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names() {
        assert_eq!(
            parse_rpc("google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"),
            Some(("v1beta", "BidiGenerateContent"))
        );
        assert_eq!(
            parse_rpc(
                "google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
            ),
            Some(("v1alpha", "BidiGenerateContentConstrained"))
        );
        for bad in [
            "google.ai.generativelanguage.v9.GenerativeService.BidiGenerateContent",
            "google.ai.generativelanguage.v1beta.ModelService.BidiGenerateContent",
            "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent",
            "BidiGenerateContent",
            "",
        ] {
            assert_eq!(parse_rpc(bad), None, "{bad}");
        }
    }

    #[test]
    fn close_reasons_fit_a_frame() {
        let long = "é".repeat(200);
        let r = close_reason(&long);
        assert!(r.len() <= 123);
        assert!(r.ends_with("..."));
        assert_eq!(close_reason("short"), "short");
    }

    #[test]
    fn close_codes_follow_googles() {
        assert_eq!(close_code(&ApiError::api_key_invalid("s")), 1007);
        assert_eq!(close_code(&ApiError::not_found("m")), 1008);
        assert_eq!(close_code(&ApiError::overloaded()), 1013);
        assert_eq!(close_code(&ApiError::internal_from("x")), 1011);
    }

    #[test]
    fn snake_case_setup_keys_become_camel_case() {
        let m: Map<String, Value> = serde_json::from_value(json!({
            "generation_config": {"response_modalities": ["TEXT"], "temperature": 0},
            "system_instruction": {"parts": [{"text": "x"}]},
        }))
        .unwrap();
        let m = camel_keys(m);
        assert!(m["generationConfig"].get("responseModalities").is_some());
        assert!(m.contains_key("systemInstruction"));
    }
}
