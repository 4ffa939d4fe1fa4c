//! The worker thread: one llama.cpp context, `parallel` sequences, continuous batching.
//!
//! Each step builds one batch: the last sampled token of every generating sequence, then
//! as many prompt tokens of the sequences being prefilled as the batch has room for
//! (oldest request first; a step holds `STEP_TOKENS` at most, so a long prompt does not stall
//! the others for long). After the decode each sequence with fresh logits samples its
//! next token with its own sampler. A sequence that ends, or whose receiver is gone
//! (the client dropped the stream), has its KV cache cleared and its slot reused.
//!
//! The context (its KV cache for `parallel` x `context_per_sequence` positions, about
//! 180 MiB with the defaults, and its compute buffers) is created when the first request
//! arrives, not when the backend loads: a server that only proxies to the upstream never
//! holds that memory. Once created it is kept for the life of the worker. If creating it
//! fails, the requests waiting for it fail with `Unavailable` and the next one tries again.

use std::collections::VecDeque;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::text::{Progress, TextAssembler};
use super::ContextSpec;
use crate::{BackendError, FinishReason, StreamEvent};

/// Tokens one step decodes at most: the generating sequences' next tokens first, prompt
/// tokens in the rest. llama-server's default batch. Each step streams every weight of the
/// model through the cache once, so prefill runs in chunks as large as this: with 256 (as
/// before) a 470-token prompt took two passes (bench/model.sh, long prompt alone: 75% of
/// llama-server's prompt tok/s before, 94% after, on a busy machine).
const STEP_TOKENS: usize = 512;

/// llama.cpp picks a random seed when given this one.
const RANDOM_SEED: u32 = u32::MAX;

/// Tokens one batch may hold.
pub(crate) fn batch_capacity(parallel: usize) -> u32 {
    // Room for one prompt token beside every generating sequence, so prefill never starves.
    u32::try_from(STEP_TOKENS.max(parallel + 1)).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sampling {
    Greedy,
    Random {
        top_k: u32,
        top_p: f32,
        temperature: f32,
        seed: Option<u32>,
    },
}

impl Sampling {
    fn sampler(self) -> LlamaSampler {
        match self {
            Sampling::Greedy => LlamaSampler::greedy(),
            Sampling::Random {
                top_k,
                top_p,
                temperature,
                seed,
            } => {
                let seed = match seed {
                    // u32::MAX means "random" to llama.cpp; keep an explicit seed reproducible.
                    Some(RANDOM_SEED) => RANDOM_SEED - 1,
                    Some(seed) => seed,
                    None => RANDOM_SEED,
                };
                LlamaSampler::chain_simple([
                    // k = 0 disables top-k in llama.cpp.
                    LlamaSampler::top_k(i32::try_from(top_k).unwrap_or(i32::MAX)),
                    LlamaSampler::top_p(top_p, 1),
                    LlamaSampler::temp(temperature),
                    LlamaSampler::dist(seed),
                ])
            }
        }
    }
}

/// One admitted request on its way to the worker.
pub(crate) struct Job {
    pub(crate) tokens: Vec<LlamaToken>,
    pub(crate) max_tokens: u32,
    pub(crate) sampling: Sampling,
    pub(crate) stops: Vec<String>,
    pub(crate) events: mpsc::UnboundedSender<Result<StreamEvent, BackendError>>,
    /// Held until the job is finished or dropped: that is what frees capacity.
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) enqueued: Instant,
}

/// A sequence being served.
struct Slot {
    job: Job,
    sampler: LlamaSampler,
    admitted: Instant,
    /// Admission order, for prefill fairness.
    order: u64,
    /// Prompt tokens already decoded.
    prefilled: usize,
    /// Sampled token to feed at `pos` in the next step (generating phase).
    next_token: Option<LlamaToken>,
    pos: i32,
    /// Index in the current batch whose logits are this slot's.
    logits_at: Option<i32>,
    completion_tokens: u32,
    first_token_at: Option<Instant>,
    text: TextAssembler,
}

impl Slot {
    fn prompt_tokens(&self) -> u32 {
        u32::try_from(self.job.tokens.len()).unwrap_or(u32::MAX)
    }

    fn emit(&self, text: String) {
        if !text.is_empty() {
            let _ = self.job.events.send(Ok(StreamEvent::Delta {
                text,
                prompt_tokens: self.prompt_tokens(),
                completion_tokens: self.completion_tokens,
            }));
        }
    }
}

struct Worker {
    model: &'static LlamaModel,
    /// Created with the first request (see the module docs).
    ctx: Option<LlamaContext<'static>>,
    spec: ContextSpec,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    jobs: mpsc::UnboundedReceiver<Job>,
    closed: bool,
    waiting: VecDeque<Job>,
    slots: Vec<Option<Slot>>,
    admissions: u64,
}

pub(crate) fn spawn(
    model: &'static LlamaModel,
    spec: ContextSpec,
    jobs: mpsc::UnboundedReceiver<Job>,
    parallel: usize,
) -> Result<(), BackendError> {
    let n_batch = usize::try_from(batch_capacity(parallel)).unwrap_or(usize::MAX);
    let worker = Worker {
        model,
        ctx: None,
        spec,
        batch: LlamaBatch::new(n_batch, 1),
        n_batch,
        jobs,
        closed: false,
        waiting: VecDeque::new(),
        slots: (0..parallel).map(|_| None).collect(),
        admissions: 0,
    };
    std::thread::Builder::new()
        .name("keyplane-llama".into())
        .spawn(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
            if run.is_err() {
                tracing::error!(
                    "the local model worker panicked; the local backend is unavailable"
                );
            }
        })
        .map_err(|e| {
            BackendError::Unavailable(format!("cannot start the local model worker: {e}"))
        })?;
    Ok(())
}

impl Worker {
    fn run(mut self) {
        while self.intake() {
            self.drop_cancelled();
            if self.slots.iter().any(Option::is_some) && self.ensure_context() {
                self.step();
            }
        }
        tracing::debug!("local model worker exiting");
    }

    /// Pulls new jobs, drops the ones nobody waits for any more and fills free slots.
    /// Blocks while there is nothing to do. False when the backend is gone and all is done.
    fn intake(&mut self) -> bool {
        let idle = self.slots.iter().all(Option::is_none) && self.waiting.is_empty();
        if idle {
            if self.closed {
                return false;
            }
            match self.jobs.blocking_recv() {
                Some(job) => self.waiting.push_back(job),
                None => return false,
            }
        }
        loop {
            match self.jobs.try_recv() {
                Ok(job) => self.waiting.push_back(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
        // Dropping a job releases its permit at once.
        self.waiting.retain(|job| !job.events.is_closed());
        for seq in 0..self.slots.len() {
            if self.slots[seq].is_some() {
                continue;
            }
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            self.admissions += 1;
            let sampler = job.sampling.sampler();
            let text = TextAssembler::new(&job.stops);
            self.slots[seq] = Some(Slot {
                job,
                sampler,
                admitted: Instant::now(),
                order: self.admissions,
                prefilled: 0,
                next_token: None,
                pos: 0,
                logits_at: None,
                completion_tokens: 0,
                first_token_at: None,
                text,
            });
        }
        true
    }

    /// Creates the context if this is the first request; false (after failing every
    /// admitted request) if that failed.
    fn ensure_context(&mut self) -> bool {
        if self.ctx.is_some() {
            return true;
        }
        match super::new_context(self.model, self.spec) {
            Ok(ctx) => {
                self.ctx = Some(ctx);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot create the local model's context");
                for seq in 0..self.slots.len() {
                    if let Some(slot) = self.release(seq) {
                        let Job { events, permit, .. } = slot.job;
                        drop(permit);
                        let _ = events.send(Err(BackendError::Unavailable(e.clone())));
                    }
                }
                false
            }
        }
    }

    /// Frees the slots whose client went away.
    fn drop_cancelled(&mut self) {
        for seq in 0..self.slots.len() {
            if let Some(slot) = &self.slots[seq] {
                if slot.job.events.is_closed() {
                    tracing::debug!(
                        seq,
                        completion_tokens = slot.completion_tokens,
                        "local generation cancelled"
                    );
                    self.release(seq);
                }
            }
        }
    }

    fn step(&mut self) {
        if let Err(e) = self.fill_batch() {
            self.fail_batch(&format!("building the batch failed: {e}"));
            return;
        }
        let Some(ctx) = self.ctx.as_mut() else {
            return;
        };
        if let Err(e) = ctx.decode(&mut self.batch) {
            self.fail_batch(&format!("llama.cpp decode failed: {e}"));
            return;
        }
        let vocab = self.model.vocab();
        for seq in 0..self.slots.len() {
            let Some(slot) = self.slots[seq].as_mut() else {
                continue;
            };
            let Some(idx) = slot.logits_at.take() else {
                continue;
            };
            let Some(ctx) = self.ctx.as_ref() else {
                return;
            };
            let token = slot.sampler.sample(ctx, idx);
            slot.first_token_at.get_or_insert_with(Instant::now);
            if vocab.is_eog(token) {
                let rest = slot.text.finish();
                slot.emit(rest);
                self.finish(seq, FinishReason::Stop);
                continue;
            }
            slot.completion_tokens += 1;
            let piece = vocab.token_to_piece(token, false, None);
            match slot.text.push(&piece) {
                Progress::Stopped(text) => {
                    slot.emit(text);
                    self.finish(seq, FinishReason::Stop);
                }
                Progress::Continue(text) => {
                    slot.emit(text);
                    if slot.completion_tokens >= slot.job.max_tokens {
                        let rest = slot.text.finish();
                        slot.emit(rest);
                        self.finish(seq, FinishReason::MaxTokens);
                    } else {
                        slot.next_token = Some(token);
                    }
                }
            }
        }
    }

    /// The next token of every generating sequence, then prompt chunks, oldest first.
    fn fill_batch(&mut self) -> Result<(), llama_cpp_2::llama_batch::BatchAddError> {
        self.batch.clear();
        let mut budget = self.n_batch;
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot.as_mut() else { continue };
            slot.logits_at = None;
            if let Some(token) = slot.next_token.take() {
                self.batch.add(token, slot.pos, &[seq_id(seq)], true)?;
                slot.pos += 1;
                slot.logits_at = Some(self.batch.n_tokens() - 1);
                budget -= 1;
            }
        }
        let mut prefilling: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(seq, slot)| {
                let slot = slot.as_ref()?;
                (slot.prefilled < slot.job.tokens.len()).then_some((slot.order, seq))
            })
            .collect();
        prefilling.sort_unstable();
        for (_, seq) in prefilling {
            if budget == 0 {
                break;
            }
            let Some(slot) = self.slots[seq].as_mut() else {
                continue;
            };
            let total = slot.job.tokens.len();
            let end = total.min(slot.prefilled + budget);
            for at in slot.prefilled..end {
                let last = at + 1 == total;
                self.batch
                    .add(slot.job.tokens[at], position(at), &[seq_id(seq)], last)?;
            }
            budget -= end - slot.prefilled;
            slot.prefilled = end;
            if end == total {
                slot.pos = position(total);
                slot.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        Ok(())
    }

    /// A failed decode leaves the KV cache of every sequence in the batch unreliable.
    fn fail_batch(&mut self, why: &str) {
        tracing::error!(error = why, "local model step failed");
        for seq in 0..self.slots.len() {
            let in_batch = self.slots[seq]
                .as_ref()
                .is_some_and(|slot| slot.logits_at.is_some() || slot.prefilled > 0);
            if in_batch {
                if let Some(slot) = self.release(seq) {
                    let Job { events, permit, .. } = slot.job;
                    drop(permit);
                    let _ = events.send(Err(BackendError::Internal(why.to_owned())));
                }
            }
        }
    }

    /// Frees the slot, then sends `Done`: a client that starts its next request as soon as
    /// it sees `Done` finds the capacity already released.
    fn finish(&mut self, seq: usize, finish_reason: FinishReason) {
        let Some(slot) = self.release(seq) else {
            return;
        };
        let prompt_tokens = slot.prompt_tokens();
        let completion_tokens = slot.completion_tokens;
        if tracing::enabled!(tracing::Level::DEBUG) {
            let now = Instant::now();
            let first = slot.first_token_at.unwrap_or(now);
            let gen_secs = (now - first).as_secs_f64();
            tracing::debug!(
                seq,
                prompt_tokens,
                completion_tokens,
                ?finish_reason,
                queued_ms = (slot.admitted - slot.job.enqueued).as_millis() as u64,
                first_token_ms = (first - slot.admitted).as_millis() as u64,
                tokens_per_s = if gen_secs > 0.0 {
                    f64::from(completion_tokens.saturating_sub(1)) / gen_secs
                } else {
                    0.0
                },
                "local generation finished"
            );
        }
        let Job { events, permit, .. } = slot.job;
        drop(permit);
        let _ = events.send(Ok(StreamEvent::Done {
            prompt_tokens,
            completion_tokens,
            finish_reason,
        }));
    }

    /// Takes the slot out and clears its sequence's KV cache. Dropping the returned slot
    /// releases the admission permit.
    fn release(&mut self, seq: usize) -> Option<Slot> {
        let slot = self.slots[seq].take()?;
        let seq_u32 = u32::try_from(seq).unwrap_or(u32::MAX);
        if let Some(ctx) = self.ctx.as_mut() {
            if let Err(e) = ctx.clear_kv_cache_seq(Some(seq_u32), None, None) {
                tracing::error!(seq, error = %e, "clearing a sequence's KV cache failed");
            }
        }
        Some(slot)
    }
}

fn seq_id(seq: usize) -> i32 {
    i32::try_from(seq).unwrap_or(i32::MAX)
}

fn position(at: usize) -> i32 {
    i32::try_from(at).unwrap_or(i32::MAX)
}
