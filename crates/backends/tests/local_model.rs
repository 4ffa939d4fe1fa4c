//! The local backend against the real SmolLM2-135M-Instruct GGUF (env `KEYPLANE_MODEL`,
//! exported by `scripts/setup.sh`).
//!
//! The model is loaded once per test binary. Tests on the shared backend take `SERIAL`, so
//! that each greedy generation runs alone in its batch: batch composition changes the
//! floating-point path in llama.cpp, and the text comparisons below want exact equality.
//! The overload test has a backend of its own (parallel 1, queue 1) and runs alongside.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use keyplane_backends::local::{LocalBackend, LocalOptions};
use keyplane_backends::{
    Backend, BackendError, ChatMessage, ChatRequest, FinishReason, GenerationParams, Role,
    StreamEvent,
};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn model_path() -> String {
    std::env::var("KEYPLANE_MODEL").unwrap_or_else(|_| {
        panic!(
            "KEYPLANE_MODEL is not set: these tests need the real SmolLM2 model. Run \
             `eval \"$(scripts/setup.sh)\"` from the repository root first."
        )
    })
}

fn load(opts: LocalOptions) -> LocalBackend {
    match LocalBackend::load(opts) {
        Ok(backend) => backend,
        Err(e) => panic!("loading the local model failed: {e} (run scripts/setup.sh?)"),
    }
}

/// The shared backend, with the default options.
fn backend() -> &'static LocalBackend {
    static BACKEND: OnceLock<LocalBackend> = OnceLock::new();
    BACKEND.get_or_init(|| load(LocalOptions::new(model_path())))
}

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: Role::User,
        text: text.into(),
    }
}

/// A greedy request with at most `max` output tokens, under SmolLM2's default system prompt.
fn request(text: &str, max: u32) -> ChatRequest {
    ChatRequest {
        model: "smollm2-135m-instruct".into(),
        system: None,
        messages: vec![user(text)],
        params: GenerationParams {
            temperature: Some(0.0),
            max_output_tokens: Some(max),
            ..GenerationParams::default()
        },
    }
}

/// "What is the capital of France?" under a plain system prompt: greedy, SmolLM2 answers
/// "The capital of France is Paris." (under its default system prompt it rambles in French).
fn france(max: u32) -> ChatRequest {
    let mut req = request("What is the capital of France?", max);
    req.system = Some("You are a helpful assistant.".into());
    req
}

/// Collects a stream: the deltas' text, and the final event.
async fn drain(
    mut stream: keyplane_backends::EventStream,
) -> (Vec<StreamEvent>, String, StreamEvent) {
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => events.push(event),
            Err(e) => panic!("stream failed: {e}"),
        }
    }
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta { text, .. } => Some(text.as_str()),
            StreamEvent::Done { .. } => None,
        })
        .collect();
    let last = events.last().cloned().expect("the stream yielded no event");
    (events, text, last)
}

#[test]
fn models_describes_smollm2() {
    let models = backend().models();
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!(m.id, "smollm2-135m-instruct");
    assert_eq!(m.display_name, "SmolLM2 135M Instruct");
    assert_eq!(m.input_token_limit, 2048);
    assert_eq!(m.output_token_limit, 2048);
    assert_eq!(m.max_temperature, 2.0);
    assert!(m.temperature > 0.0 && m.temperature <= m.max_temperature);
    assert!(m.top_p > 0.0 && m.top_p <= 1.0);
    assert!(m.top_k > 0);
}

#[tokio::test]
async fn generate_returns_text_and_real_counts() {
    let _serial = SERIAL.lock().await;
    let b = backend();
    let req = france(16);
    let started = Instant::now();
    let c = b.generate(req).await.expect("generate");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generate: {:?} ({} prompt + {} output tokens in {:.3} s, {:.0} output tok/s incl. prefill)",
        c.text,
        c.prompt_tokens,
        c.completion_tokens,
        secs,
        f64::from(c.completion_tokens) / secs
    );
    assert!(!c.text.trim().is_empty(), "empty answer");
    assert!(c.text.contains("Paris"), "unexpected answer: {:?}", c.text);
    assert!(c.completion_tokens > 0 && c.completion_tokens <= 16);
    assert_eq!(c.model_version, "smollm2-135m-instruct");
    // The rendered prompt, default system prompt included, is a few dozen tokens.
    assert!(
        c.prompt_tokens > 20 && c.prompt_tokens < 60,
        "{}",
        c.prompt_tokens
    );
    if c.completion_tokens < 16 {
        assert_eq!(c.finish_reason, FinishReason::Stop);
    }
}

#[tokio::test]
async fn greedy_generation_is_deterministic() {
    let _serial = SERIAL.lock().await;
    let b = backend();
    let req = request("Name three colours.", 16);
    let first = b.generate(req.clone()).await.expect("first");
    let second = b.generate(req).await.expect("second");
    assert_eq!(first.text, second.text);
    assert_eq!(first.completion_tokens, second.completion_tokens);
}

#[tokio::test]
async fn max_output_tokens_ends_with_max_tokens() {
    let _serial = SERIAL.lock().await;
    let c = backend()
        .generate(request("Write a long story about a dragon.", 5))
        .await
        .expect("generate");
    assert_eq!(c.finish_reason, FinishReason::MaxTokens);
    assert_eq!(c.completion_tokens, 5);
    assert!(!c.text.is_empty());
}

#[tokio::test]
async fn stop_sequence_cuts_the_output() {
    let _serial = SERIAL.lock().await;
    let b = backend();
    let mut req = france(16);
    let full = b.generate(req.clone()).await.expect("without stop");
    let at = full.text.find("Paris").unwrap_or_else(|| {
        panic!("the test expects Paris in the answer: {:?}", full.text);
    });

    req.params.stop_sequences = vec!["Paris".into()];
    let cut = b.generate(req.clone()).await.expect("with stop");
    assert_eq!(cut.text, full.text[..at]);
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    assert!(cut.completion_tokens <= full.completion_tokens);

    // Streaming: the stop sequence, and anything after it, is never emitted.
    let (_, streamed, last) = drain(b.stream(req).await.expect("stream")).await;
    assert_eq!(streamed, cut.text);
    assert!(matches!(
        last,
        StreamEvent::Done {
            finish_reason: FinishReason::Stop,
            ..
        }
    ));
}

#[tokio::test]
async fn stream_deltas_concatenate_to_the_generated_text() {
    let _serial = SERIAL.lock().await;
    let b = backend();
    let req = request("Tell me a fun fact about cats.", 16);
    let generated = b.generate(req.clone()).await.expect("generate");
    let (events, text, last) = drain(b.stream(req).await.expect("stream")).await;
    assert_eq!(text, generated.text);
    assert!(events.len() >= 2, "expected deltas before Done: {events:?}");

    let mut previous = 0;
    for event in &events[..events.len() - 1] {
        match event {
            StreamEvent::Delta {
                text,
                prompt_tokens,
                completion_tokens,
            } => {
                assert!(!text.is_empty());
                assert_eq!(*prompt_tokens, generated.prompt_tokens);
                assert!(*completion_tokens >= previous);
                previous = *completion_tokens;
            }
            StreamEvent::Done { .. } => panic!("Done before the end: {events:?}"),
        }
    }
    match last {
        StreamEvent::Done {
            prompt_tokens,
            completion_tokens,
            finish_reason,
        } => {
            assert_eq!(prompt_tokens, generated.prompt_tokens);
            assert_eq!(completion_tokens, generated.completion_tokens);
            assert_eq!(finish_reason, generated.finish_reason);
        }
        other => panic!("the last event is not Done: {other:?}"),
    }
}

#[tokio::test]
async fn count_tokens_equals_prompt_tokens() {
    let _serial = SERIAL.lock().await;
    let b = backend();
    let mut req = request("Hi there! How are you?", 1);
    req.system = Some("You answer briefly.".into());
    req.messages.push(ChatMessage {
        role: Role::Model,
        text: "Fine, thanks.".into(),
    });
    req.messages.push(user("And what is 2+2? 🦀 ünïcödé"));
    let counted = b.count_tokens(&req).await.expect("count_tokens");
    let c = b.generate(req).await.expect("generate");
    assert_eq!(counted, c.prompt_tokens);
    assert_eq!(c.completion_tokens, 1);
}

#[tokio::test]
async fn system_instruction_and_turns_shape_the_prompt() {
    let b = backend();
    let mut req = request("Hi", 1);
    let default = b.render_prompt(&req).expect("render");
    assert_eq!(
        default,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );

    req.system = Some("Answer in French.".into());
    req.messages.push(ChatMessage {
        role: Role::Model,
        text: "Bonjour !".into(),
    });
    req.messages.push(user("Ça va ?"));
    let custom = b.render_prompt(&req).expect("render");
    assert_eq!(
        custom,
        "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nBonjour !<|im_end|>\n<|im_start|>user\nÇa va ?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    assert_ne!(
        b.count_tokens(&request("Hi", 1)).await.expect("count"),
        b.count_tokens(&req).await.expect("count")
    );
}

#[tokio::test]
async fn prompt_longer_than_the_context_is_invalid() {
    let b = backend();
    let long = "hello ".repeat(3000);
    let err = b
        .generate(request(&long, 4))
        .await
        .expect_err("a 3000-word prompt cannot fit 2048 tokens");
    match &err {
        BackendError::InvalidArgument(msg) => {
            assert!(msg.starts_with("The input token count ("), "{msg}");
            assert!(
                msg.ends_with(") exceeds the maximum number of tokens allowed (2048)."),
                "{msg}"
            );
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let err = b
        .stream(request(&long, 4))
        .await
        .err()
        .expect("stream must fail too");
    assert!(matches!(err, BackendError::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments() {
    let b = backend();
    let mut empty = request("x", 4);
    empty.messages.clear();
    assert!(matches!(
        b.generate(empty.clone()).await,
        Err(BackendError::InvalidArgument(_))
    ));
    assert!(matches!(
        b.count_tokens(&empty).await,
        Err(BackendError::InvalidArgument(_))
    ));
    for temperature in [-1.0, 2.5, f32::NAN] {
        let mut req = request("x", 4);
        req.params.temperature = Some(temperature);
        assert!(
            matches!(b.generate(req).await, Err(BackendError::InvalidArgument(_))),
            "temperature {temperature}"
        );
    }
    let mut req = request("x", 4);
    req.params.top_p = Some(1.5);
    assert!(matches!(
        b.generate(req).await,
        Err(BackendError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn sampling_with_a_seed_is_reproducible() {
    let _serial = SERIAL.lock().await;
    let b = backend();
    let mut req = request("Write a short poem about the sea.", 12);
    req.params.temperature = Some(1.0);
    req.params.top_p = Some(0.9);
    req.params.top_k = Some(40);
    req.params.seed = Some(42);
    let first = b.generate(req.clone()).await.expect("first");
    let second = b.generate(req).await.expect("second");
    assert!(!first.text.is_empty());
    assert_eq!(first.text, second.text);
}

/// Waits until `backend.in_flight()` is `n`, for at most 10 s.
async fn wait_in_flight(backend: &LocalBackend, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.in_flight() != n {
        assert!(
            Instant::now() < deadline,
            "in_flight stayed {} (waiting for {n})",
            backend.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn full_backend_is_overloaded_and_dropping_a_stream_frees_its_slot() {
    let mut opts = LocalOptions::new(model_path());
    opts.parallel = 1;
    opts.queue = 1;
    opts.context_per_sequence = 512;
    let b: &'static LocalBackend = Box::leak(Box::new(load(opts)));

    // 1. Takes the only slot with a generation that runs for a long while.
    let long = request(
        "Write a very long and detailed essay about the history of the Roman Empire.",
        400,
    );
    let mut first = b.stream(long).await.expect("first stream");
    assert!(matches!(
        first.next().await,
        Some(Ok(StreamEvent::Delta { .. }))
    ));

    // 2. Takes the only queue place; its stream starts once the slot is free.
    let queued = tokio::spawn(async move {
        let stream = b.stream(request("Say hi.", 4)).await?;
        Ok::<_, BackendError>(drain(stream).await)
    });
    wait_in_flight(b, 2).await;

    // 3. Nothing left: refused at once, never left waiting.
    let started = Instant::now();
    let third = b.stream(request("Say hi.", 4)).await;
    assert!(
        matches!(third, Err(BackendError::Overloaded)),
        "expected Overloaded, got {:?}",
        third.err()
    );
    assert!(matches!(
        b.generate(request("Say hi.", 4)).await,
        Err(BackendError::Overloaded)
    ));
    assert!(started.elapsed() < Duration::from_secs(1));

    // 4. Dropping the first stream cancels it: the queued request gets the slot and ends.
    drop(first);
    let (_, text, last) = tokio::time::timeout(Duration::from_secs(30), queued)
        .await
        .expect("the queued request never ran")
        .expect("task")
        .expect("queued stream");
    assert!(!text.is_empty());
    assert!(matches!(last, StreamEvent::Done { .. }));

    // 5. Everything released: a later request succeeds.
    wait_in_flight(b, 0).await;
    let c = b
        .generate(request("Say hi.", 4))
        .await
        .expect("later request");
    assert!(c.completion_tokens > 0);
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test]
async fn the_end_of_the_context_ends_generation_with_max_tokens() {
    let mut opts = LocalOptions::new(model_path());
    opts.parallel = 1;
    opts.queue = 0;
    opts.context_per_sequence = 64;
    let b = load(opts);
    assert_eq!(b.models()[0].input_token_limit, 64);

    // A prompt of exactly `room` tokens short of the context, found by counting.
    async fn prompt_leaving(b: &LocalBackend, room: u32) -> ChatRequest {
        for words in 1..64 {
            let req = request(&"one ".repeat(words), 16);
            let n = b.count_tokens(&req).await.expect("count_tokens");
            if n + room == 64 {
                return req;
            }
            assert!(n + room < 64, "no prompt leaves exactly {room} tokens");
        }
        unreachable!("64 words are more than 64 tokens");
    }

    // The prompt fills the context: one token can still be sampled from its last logits.
    let full = b
        .generate(prompt_leaving(&b, 0).await)
        .await
        .expect("a prompt of exactly the context is accepted");
    assert_eq!(full.prompt_tokens, 64);
    assert_eq!(full.completion_tokens, 1);
    assert_eq!(full.finish_reason, FinishReason::MaxTokens);

    // Three positions left: four tokens (the last one is sampled, never decoded).
    let near = b
        .generate(prompt_leaving(&b, 3).await)
        .await
        .expect("generate");
    assert_eq!(near.prompt_tokens, 61);
    assert_eq!(near.finish_reason, FinishReason::MaxTokens);
    assert_eq!(near.completion_tokens, 4);

    let over = b.generate(request(&"one ".repeat(80), 16)).await;
    assert!(matches!(over, Err(BackendError::InvalidArgument(_))));
}
