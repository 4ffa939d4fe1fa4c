//! Rough throughput of the local backend on this machine.
//!
//! `cargo run -p keyplane-backends --example local_bench` with `KEYPLANE_MODEL` set
//! (scripts/setup.sh); the dev profile already builds llama.cpp optimised. Prints prefill and generation speed of one greedy request,
//! then the aggregate speed of `PARALLEL` (env, default 4) concurrent requests.

use std::time::Instant;

use futures::StreamExt;
use keyplane_backends::local::{LocalBackend, LocalOptions};
use keyplane_backends::{Backend, ChatMessage, ChatRequest, GenerationParams, Role, StreamEvent};

const PROMPT: &str = "Write a very long and detailed essay about the history of the Roman Empire.";

fn request(max: u32) -> ChatRequest {
    ChatRequest {
        model: "smollm2-135m-instruct".into(),
        system: None,
        messages: vec![ChatMessage {
            role: Role::User,
            text: PROMPT.into(),
        }],
        params: GenerationParams {
            temperature: Some(0.0),
            max_output_tokens: Some(max),
            ..GenerationParams::default()
        },
    }
}

/// (seconds to the first delta, seconds in total, output tokens)
async fn timed(backend: &LocalBackend, max: u32) -> Result<(f64, f64, u32), String> {
    let started = Instant::now();
    let mut stream = backend
        .stream(request(max))
        .await
        .map_err(|e| e.to_string())?;
    let mut first = None;
    while let Some(event) = stream.next().await {
        match event.map_err(|e| e.to_string())? {
            StreamEvent::Delta { .. } => {
                first.get_or_insert_with(|| started.elapsed().as_secs_f64());
            }
            StreamEvent::Done {
                completion_tokens, ..
            } => {
                let total = started.elapsed().as_secs_f64();
                return Ok((first.unwrap_or(total), total, completion_tokens));
            }
        }
    }
    Err("the stream ended without Done".into())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let path = std::env::var("KEYPLANE_MODEL")
        .map_err(|_| "KEYPLANE_MODEL is not set: run `eval \"$(scripts/setup.sh)\"`")?;
    let parallel = std::env::var("PARALLEL")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4);
    let started = Instant::now();
    let mut opts = LocalOptions::new(path);
    opts.parallel = parallel;
    let backend = LocalBackend::load(opts).map_err(|e| e.to_string())?;
    println!("load: {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    let prompt_tokens = backend
        .count_tokens(&request(1))
        .await
        .map_err(|e| e.to_string())?;

    // Warm-up, then one request alone.
    timed(&backend, 8).await?;
    let (first, total, n) = timed(&backend, 128).await?;
    println!(
        "single greedy request: {prompt_tokens} prompt tokens, first delta after {:.0} ms; \
         {n} output tokens in {total:.2} s = {:.0} tok/s generation",
        first * 1e3,
        f64::from(n.saturating_sub(1)) / (total - first)
    );

    let started = Instant::now();
    let runs = futures::future::join_all((0..parallel).map(|_| timed(&backend, 128))).await;
    let secs = started.elapsed().as_secs_f64();
    let mut tokens = 0;
    for run in runs {
        tokens += run?.2;
    }
    println!(
        "{parallel} concurrent requests: {tokens} output tokens in {secs:.2} s = {:.0} tok/s aggregate",
        f64::from(tokens) / secs
    );
    Ok(())
}
