//! The local backend: SmolLM2-135M-Instruct (GGUF) run in-process by llama.cpp.
//!
//! Design (measured in spec/local-model.md):
//! - the model is loaded once per path (mmap) and kept for the life of the process;
//! - one worker thread owns one llama.cpp context with `parallel` sequences and runs
//!   continuous batching: each step decodes one batch holding the next token of every
//!   generating sequence plus a chunk of the prompts being prefilled (see `worker`);
//! - the async side only renders and tokenizes the prompt (on the blocking pool), takes an
//!   admission permit (`parallel + queue` of them, else [`BackendError::Overloaded`]) and
//!   talks to the worker over tokio channels;
//! - the chat template is the GGUF's own Jinja template, rendered with minijinja.
//!
//! llama.cpp's own log lines are dropped (they would otherwise go to stderr), unless
//! [`LocalOptions::engine_logs`] asks for them; then they go to `tracing` with the target
//! `llama-cpp-2`.

mod template;
mod text;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Semaphore};

use crate::{Backend, BackendError, ChatRequest, Completion, EventStream, ModelInfo, StreamEvent};
use template::ChatTemplate;
use worker::{Job, Sampling};

/// The id the local SmolLM2 model is served under.
pub const DEFAULT_MODEL_ID: &str = "smollm2-135m-instruct";

/// Output tokens when the request does not say (never more than the context leaves).
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 512;

/// llama.cpp's limit on the sequences of one context (`LLAMA_MAX_SEQ`).
const MAX_PARALLEL: usize = 256;

/// Rendered prompts this large are refused before tokenizing (llama.cpp's i32 lengths).
const MAX_PROMPT_BYTES: usize = 1 << 30;

/// Sampling defaults advertised in [`ModelInfo`] and used when a request leaves them out.
/// Low temperature: a 135M model drifts quickly when sampled hot.
pub const DEFAULT_TEMPERATURE: f32 = 0.2;
pub const DEFAULT_TOP_P: f32 = 0.95;
pub const DEFAULT_TOP_K: u32 = 40;
pub const MAX_TEMPERATURE: f32 = 2.0;

/// How the local backend is set up.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// The id requests and `models()` use, e.g. "smollm2-135m-instruct".
    pub model_id: String,
    /// Sequences generated at once (slots of the batch). Default 4.
    pub parallel: usize,
    /// Requests that may wait for a slot beyond `parallel`; past that, `Overloaded`. Default 64.
    pub queue: usize,
    /// Context of each sequence, prompt plus output, in tokens. Default 2048.
    pub context_per_sequence: u32,
    /// llama.cpp threads of the worker. Default 1 (spec/local-model.md: one thread holds up
    /// when other work competes for the cores; two threads collapse under contention).
    pub threads: i32,
    /// Forward llama.cpp's own log lines to `tracing` (target `llama-cpp-2`) instead of
    /// dropping them. Process-wide, decided by the first backend loaded. Default false.
    pub engine_logs: bool,
}

impl LocalOptions {
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            model_id: DEFAULT_MODEL_ID.to_owned(),
            parallel: 4,
            queue: 64,
            context_per_sequence: 2048,
            threads: 1,
            engine_logs: false,
        }
    }
}

/// The process-wide llama.cpp state: the backend may be initialised only once, models are
/// shared by path, and contexts must not be created concurrently from one model.
struct Engine {
    backend: &'static LlamaBackend,
    models: HashMap<PathBuf, &'static LlamaModel>,
}

static ENGINE: Mutex<Option<Engine>> = Mutex::new(None);

/// The local llama.cpp backend. Cheap to share behind an `Arc`; dropping the last handle
/// lets the worker finish what it is generating and exit.
pub struct LocalBackend {
    inner: Arc<Inner>,
}

struct Inner {
    model: &'static LlamaModel,
    template: ChatTemplate,
    info: ModelInfo,
    context_per_sequence: u32,
    capacity: usize,
    admission: Arc<Semaphore>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// A request turned into what the worker needs.
struct Prepared {
    tokens: Vec<LlamaToken>,
    max_tokens: u32,
    sampling: Sampling,
    stops: Vec<String>,
}

impl LocalBackend {
    /// Loads the model (once per path per process) and starts the worker thread, which
    /// creates the llama.cpp context when the first request arrives. Blocking (about 0.2 s):
    /// call it at startup or from `spawn_blocking`.
    pub fn load(opts: LocalOptions) -> Result<LocalBackend, BackendError> {
        if opts.parallel == 0 || opts.parallel > MAX_PARALLEL {
            return Err(BackendError::InvalidArgument(format!(
                "local backend: parallel must be between 1 and {MAX_PARALLEL}, got {}",
                opts.parallel
            )));
        }
        if opts.context_per_sequence < 16 {
            return Err(BackendError::InvalidArgument(
                "local backend: context_per_sequence must be at least 16 tokens".into(),
            ));
        }
        if !opts.model_path.is_file() {
            return Err(BackendError::Unavailable(format!(
                "local model file not found: {}",
                opts.model_path.display()
            )));
        }
        let threads = opts.threads.max(1);
        let n_seq = u32::try_from(opts.parallel).unwrap_or(1);

        let mut engine = ENGINE.lock();
        let engine = match engine.as_mut() {
            Some(engine) => engine,
            None => {
                // Before anything else: llama.cpp logs to stderr until told otherwise.
                llama_cpp_2::send_logs_to_tracing(
                    llama_cpp_2::LogOptions::default().with_logs_enabled(opts.engine_logs),
                );
                let backend = LlamaBackend::init().map_err(|e| {
                    BackendError::Unavailable(format!("llama.cpp backend init failed: {e}"))
                })?;
                engine.insert(Engine {
                    backend: Box::leak(Box::new(backend)),
                    models: HashMap::new(),
                })
            }
        };
        let model = load_model(engine, &opts.model_path)?;

        let n_ctx_train = model.n_ctx_train();
        let context_per_sequence = if n_ctx_train > 0 && opts.context_per_sequence > n_ctx_train {
            tracing::warn!(
                requested = opts.context_per_sequence,
                n_ctx_train,
                "context_per_sequence is larger than the model's training context; using the latter"
            );
            n_ctx_train
        } else {
            opts.context_per_sequence
        };

        let template_source = model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok())
            .ok_or_else(|| {
                BackendError::Unavailable(format!(
                    "{} has no tokenizer.chat_template",
                    opts.model_path.display()
                ))
            })?;
        let piece = |token| {
            String::from_utf8_lossy(&model.vocab().token_to_piece(token, true, None)).into_owned()
        };
        let bos = piece(model.vocab().bos());
        let eos = piece(model.vocab().eos());
        let template = ChatTemplate::new(&template_source, &bos, &eos).map_err(|e| {
            BackendError::Unavailable(format!("the model's chat template does not compile: {e}"))
        })?;

        let n_batch = worker::batch_capacity(opts.parallel);
        // The KV cache is split evenly between the sequences (kv_unified stays off), so each
        // one has `context_per_sequence` positions of its own.
        let n_ctx = context_per_sequence.checked_mul(n_seq).ok_or_else(|| {
            BackendError::InvalidArgument(
                "local backend: parallel x context_per_sequence is too large".into(),
            )
        })?;
        // The worker creates the context when the first request arrives (see `worker`).
        let spec = ContextSpec {
            n_ctx,
            n_seq,
            n_batch,
            threads,
        };

        let (jobs, rx) = mpsc::unbounded_channel();
        worker::spawn(model, spec, rx, opts.parallel)?;

        tracing::info!(
            model = %opts.model_id,
            path = %opts.model_path.display(),
            parallel = opts.parallel,
            queue = opts.queue,
            context_per_sequence,
            threads,
            "local model ready"
        );

        let capacity = opts.parallel + opts.queue;
        let info = ModelInfo {
            id: opts.model_id.clone(),
            display_name: "SmolLM2 135M Instruct".into(),
            description: "SmolLM2-135M-Instruct (Q4_1 GGUF) running locally on llama.cpp.".into(),
            input_token_limit: context_per_sequence,
            output_token_limit: context_per_sequence,
            temperature: DEFAULT_TEMPERATURE,
            top_p: DEFAULT_TOP_P,
            top_k: DEFAULT_TOP_K,
            max_temperature: MAX_TEMPERATURE,
        };
        Ok(LocalBackend {
            inner: Arc::new(Inner {
                model,
                template,
                info,
                context_per_sequence,
                capacity,
                admission: Arc::new(Semaphore::new(capacity)),
                jobs,
            }),
        })
    }

    /// The prompt `generate` would feed the model for `req`, as text.
    pub fn render_prompt(&self, req: &ChatRequest) -> Result<String, BackendError> {
        self.inner.render(req)
    }

    /// Requests admitted and not finished: generating plus waiting for a slot.
    pub fn in_flight(&self) -> usize {
        self.inner.capacity - self.inner.admission.available_permits()
    }

    /// Renders and tokenizes on the blocking pool, takes an admission permit and hands the
    /// job to the worker. The receiver yields the job's events.
    async fn submit(
        &self,
        req: ChatRequest,
    ) -> Result<mpsc::UnboundedReceiver<Result<StreamEvent, BackendError>>, BackendError> {
        // Admission first: a full backend answers at once, without tokenizing anything.
        let permit = Arc::clone(&self.inner.admission)
            .try_acquire_owned()
            .map_err(|_| BackendError::Overloaded)?;
        let inner = Arc::clone(&self.inner);
        let prepared = tokio::task::spawn_blocking(move || inner.prepare(&req))
            .await
            .map_err(|e| BackendError::Internal(format!("prompt preparation failed: {e}")))??;
        let (events, rx) = mpsc::unbounded_channel();
        let job = Job {
            tokens: prepared.tokens,
            max_tokens: prepared.max_tokens,
            sampling: prepared.sampling,
            stops: prepared.stops,
            events,
            permit,
            enqueued: std::time::Instant::now(),
        };
        self.inner
            .jobs
            .send(job)
            .map_err(|_| BackendError::Unavailable("the local model worker has stopped".into()))?;
        Ok(rx)
    }
}

fn load_model(engine: &mut Engine, path: &Path) -> Result<&'static LlamaModel, BackendError> {
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if let Some(model) = engine.models.get(&key) {
        return Ok(model);
    }
    let started = std::time::Instant::now();
    let model = LlamaModel::load_from_file(engine.backend, &key, &LlamaModelParams::default())
        .map_err(|e| {
            BackendError::Unavailable(format!(
                "cannot load the local model {}: {e}",
                key.display()
            ))
        })?;
    let model: &'static LlamaModel = Box::leak(Box::new(model));
    tracing::debug!(path = %key.display(), elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");
    engine.models.insert(key, model);
    Ok(model)
}

/// The llama.cpp context of a backend, as `LocalBackend::load` sized it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContextSpec {
    /// KV cache positions in all: `parallel` x `context_per_sequence`.
    n_ctx: u32,
    n_seq: u32,
    n_batch: u32,
    threads: i32,
}

/// Creates a context of `model`, or says why it could not (under the ENGINE lock: contexts are never created
/// concurrently).
pub(crate) fn new_context(
    model: &'static LlamaModel,
    spec: ContextSpec,
) -> Result<LlamaContext<'static>, String> {
    let engine = ENGINE.lock();
    let backend = engine
        .as_ref()
        .map(|e| e.backend)
        .ok_or_else(|| "llama.cpp backend not initialised".to_owned())?;
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(spec.n_ctx))
        .with_n_seq_max(spec.n_seq)
        .with_n_batch(spec.n_batch)
        .with_n_ubatch(spec.n_batch)
        .with_n_threads(spec.threads)
        .with_n_threads_batch(spec.threads);
    model
        .new_context(backend, params)
        .map_err(|e| format!("llama.cpp context creation failed: {e}"))
}

fn worker_stopped() -> BackendError {
    BackendError::Unavailable("the local model worker stopped during generation".into())
}

impl Inner {
    fn render(&self, req: &ChatRequest) -> Result<String, BackendError> {
        if req.messages.is_empty() {
            return Err(BackendError::InvalidArgument(
                "contents is not specified".into(),
            ));
        }
        self.template
            .render(req.system.as_deref(), &req.messages)
            .map_err(|e| {
                BackendError::InvalidArgument(format!(
                    "the chat template rejected the conversation: {e}"
                ))
            })
    }

    /// The prompt's tokens: what `prompt_tokens` and `count_tokens` report.
    fn prompt_tokens(&self, req: &ChatRequest) -> Result<Vec<LlamaToken>, BackendError> {
        let prompt = self.render(req)?;
        // llama.cpp counts bytes and tokens in i32 (llama-cpp-2 panics past that).
        if prompt.len() >= MAX_PROMPT_BYTES {
            return Err(BackendError::InvalidArgument(format!(
                "the prompt is too large ({} bytes)",
                prompt.len()
            )));
        }
        // add_special=false: the template already wrote every special token;
        // parse_special=true: so that "<|im_start|>" etc. become their control tokens.
        let tokens = self.model.vocab().tokenize(prompt.as_bytes(), false, true);
        if tokens.is_empty() {
            return Err(BackendError::InvalidArgument(
                "the rendered prompt is empty".into(),
            ));
        }
        Ok(tokens)
    }

    fn prepare(&self, req: &ChatRequest) -> Result<Prepared, BackendError> {
        let params = &req.params;
        let temperature = params.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
            return Err(BackendError::InvalidArgument(format!(
                "temperature must be between 0 and {MAX_TEMPERATURE}, got {temperature}"
            )));
        }
        let top_p = params.top_p.unwrap_or(DEFAULT_TOP_P);
        if !(0.0..=1.0).contains(&top_p) {
            return Err(BackendError::InvalidArgument(format!(
                "top_p must be between 0 and 1, got {top_p}"
            )));
        }
        let top_k = params.top_k.unwrap_or(DEFAULT_TOP_K);

        let tokens = self.prompt_tokens(req)?;
        let n_prompt = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        let limit = self.context_per_sequence;
        if n_prompt > limit {
            return Err(BackendError::InvalidArgument(format!(
                "The input token count ({n_prompt}) exceeds the maximum number of tokens allowed ({limit})."
            )));
        }
        let requested = match params.max_output_tokens {
            None | Some(0) => DEFAULT_MAX_OUTPUT_TOKENS,
            Some(n) => n,
        };
        // The k-th output token is sampled from the logits at position n_prompt + k - 2, and
        // positions end at the context: room for context - n_prompt + 1 output tokens.
        let max_tokens = requested.min(limit - n_prompt + 1);

        let sampling = if temperature <= 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Random {
                top_k,
                top_p,
                temperature,
                seed: params.seed,
            }
        };
        tracing::debug!(
            prompt_tokens = n_prompt,
            max_tokens,
            ?sampling,
            stops = params.stop_sequences.len(),
            "local request prepared"
        );
        Ok(Prepared {
            tokens,
            max_tokens,
            sampling,
            stops: params.stop_sequences.clone(),
        })
    }
}

/// Yields the worker's events after the first one; ends after `Done`, or with
/// [`worker_stopped`] if the worker went away before sending it.
fn rest_of_stream(
    rx: mpsc::UnboundedReceiver<Result<StreamEvent, BackendError>>,
) -> impl futures::Stream<Item = Result<StreamEvent, BackendError>> {
    futures::stream::unfold(Some(rx), |state| async move {
        let mut rx = state?;
        match rx.recv().await {
            Some(Ok(event @ StreamEvent::Done { .. })) => Some((Ok(event), None)),
            Some(Err(e)) => Some((Err(e), None)),
            Some(Ok(event)) => Some((Ok(event), Some(rx))),
            None => Some((Err(worker_stopped()), None)),
        }
    })
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn models(&self) -> Vec<ModelInfo> {
        vec![self.inner.info.clone()]
    }

    async fn generate(&self, req: ChatRequest) -> Result<Completion, BackendError> {
        let mut rx = self.submit(req).await?;
        let mut text = String::new();
        loop {
            match rx.recv().await {
                Some(Ok(StreamEvent::Delta { text: delta, .. })) => text.push_str(&delta),
                Some(Ok(StreamEvent::Done {
                    prompt_tokens,
                    completion_tokens,
                    finish_reason,
                })) => {
                    return Ok(Completion {
                        text,
                        prompt_tokens,
                        completion_tokens,
                        finish_reason,
                        model_version: self.inner.info.id.clone(),
                    })
                }
                Some(Err(e)) => return Err(e),
                None => return Err(worker_stopped()),
            }
        }
    }

    async fn stream(&self, req: ChatRequest) -> Result<EventStream, BackendError> {
        let mut rx = self.submit(req).await?;
        match rx.recv().await {
            None => Err(worker_stopped()),
            Some(Err(e)) => Err(e),
            Some(Ok(first)) => {
                let done = matches!(first, StreamEvent::Done { .. });
                let first = futures::stream::once(async move { Ok(first) });
                if done {
                    Ok(first.boxed())
                } else {
                    Ok(first.chain(rest_of_stream(rx)).boxed())
                }
            }
        }
    }

    async fn count_tokens(&self, req: &ChatRequest) -> Result<u32, BackendError> {
        let inner = Arc::clone(&self.inner);
        let req = req.clone();
        tokio::task::spawn_blocking(move || {
            let tokens = inner.prompt_tokens(&req)?;
            Ok(u32::try_from(tokens.len()).unwrap_or(u32::MAX))
        })
        .await
        .map_err(|e| BackendError::Internal(format!("token counting failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `template.rs` tests against a copy of the GGUF's template; it must stay a true copy.
    #[test]
    fn bundled_template_copy_matches_the_gguf() {
        let path = std::env::var("KEYPLANE_MODEL").unwrap_or_else(|_| {
            panic!("KEYPLANE_MODEL is not set: run `eval \"$(scripts/setup.sh)\"` first")
        });
        let mut opts = LocalOptions::new(path);
        opts.parallel = 1;
        opts.context_per_sequence = 256;
        let backend = match LocalBackend::load(opts) {
            Ok(backend) => backend,
            Err(e) => panic!("loading the local model failed: {e}"),
        };
        let source = backend
            .inner
            .model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok());
        assert_eq!(
            source.as_deref(),
            Some(include_str!("smollm2_chat_template.jinja"))
        );
    }
}
