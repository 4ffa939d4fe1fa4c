//! keyplane-backends: the model backends that answer generation requests.
//!
//! Owns: the neutral request/response types ([`ChatRequest`], [`Completion`],
//! [`StreamEvent`]), the [`Backend`] trait every backend implements, and the backends
//! themselves (today: [`local::LocalBackend`], SmolLM2 through llama.cpp), and the
//! Gemini-upstream pass-through ([`upstream::UpstreamClient`]), which forwards bytes and
//! so stands outside the [`Backend`] trait.
//! Must not touch: Gemini wire types, auth, quota or the store. The server maps wire
//! requests to these types and [`BackendError`] to google.rpc.Status.

pub mod batch;
pub mod local;
pub mod upstream;

/// Who wrote a turn of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Model,
}

/// One turn of the conversation, text only.
#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub role: Role,
    pub text: String,
}

/// Sampling and stopping parameters; `None` means "the model's default" (see [`ModelInfo`]).
#[derive(Debug, Clone, Default)]
pub struct GenerationParams {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub max_output_tokens: Option<u32>,
    pub stop_sequences: Vec<String>,
    pub seed: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// Backend model id, e.g. "smollm2-135m-instruct".
    pub model: String,
    /// systemInstruction text; `None` lets the chat template use its own default system prompt.
    pub system: Option<String>,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    pub params: GenerationParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of turn or a stop sequence.
    Stop,
    /// `max_output_tokens` (or the end of the context) was reached.
    MaxTokens,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub finish_reason: FinishReason,
    pub model_version: String,
}

#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// New text only; the counts are cumulative so far.
    Delta {
        text: String,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    /// Always the last event of a successful stream.
    Done {
        prompt_tokens: u32,
        completion_tokens: u32,
        finish_reason: FinishReason,
    },
}

/// What a backend advertises about one of its models (the server maps it to `models.get`).
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub input_token_limit: u32,
    pub output_token_limit: u32,
    /// Defaults used when the request leaves the parameter out.
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub max_temperature: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The request cannot be served as sent (400 INVALID_ARGUMENT); the text is for the client.
    #[error("{0}")]
    InvalidArgument(String),
    /// Every slot and queue place is taken (503 UNAVAILABLE).
    #[error("the model is overloaded")]
    Overloaded,
    /// The backend cannot be used right now: model missing, worker stopped (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an engine failure: logged, the client sees a generic 500.
    #[error("{0}")]
    Internal(String),
}

pub type EventStream = futures::stream::BoxStream<'static, Result<StreamEvent, BackendError>>;

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    fn models(&self) -> Vec<ModelInfo>;

    async fn generate(&self, req: ChatRequest) -> Result<Completion, BackendError>;

    /// Starts generation; errors before the first token come back as Err here, later ones
    /// inside the stream. Dropping the stream cancels the generation (frees the slot).
    async fn stream(&self, req: ChatRequest) -> Result<EventStream, BackendError>;

    /// Tokens of the prompt exactly as `generate` would count them in `prompt_tokens`.
    async fn count_tokens(&self, req: &ChatRequest) -> Result<u32, BackendError>;
}
