//! Metering: every data-plane call that reached a project is counted into a per-minute
//! usage bucket (project, key, model, method, minute, HTTP status) in memory, and the
//! buckets are written to the store by a background task ([`spawn_flusher`]), never on the
//! request path. A [`Ticket`] follows one call: the handler opens it once the project and
//! model are known, and it records itself when dropped, which for a successful answer is
//! when its body has been sent (the body is wrapped by [`metered`], which reads the token
//! counts out of the `usageMetadata` the body carries, streamed or not, from the local
//! model or the upstream alike).

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use keyplane_core::quota::UsageRow;
use keyplane_wire::ApiError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::app::AppState;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What identifies a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    project_number: i64,
    key_id: String,
    model: String,
    method: &'static str,
    minute: i64,
    code: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    requests: i64,
    prompt_tokens: i64,
    candidates_tokens: i64,
    latency_ms: i64,
}

/// One call's figures, as [`Meter::record`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub project_number: i64,
    pub key_id: &'a str,
    pub model: &'a str,
    pub method: &'static str,
    pub code: u16,
    pub prompt_tokens: u64,
    pub candidates_tokens: u64,
    pub latency: Duration,
    pub at_ms: u64,
}

/// Pending buckets past which the flusher is woken at once: with a million keys each used
/// once a minute, buckets would otherwise hold ~250 bytes per key until the next tick.
pub const FLUSH_AT: usize = 20_000;
/// Pending buckets kept at most while the store refuses writes; past it, new ones are
/// dropped (and a warning says so) rather than growing without bound.
const HARD_CAP: usize = 1_000_000;

/// The buckets not yet written: an arena, and an index from the hash of a bucket's
/// identity to its chain of buckets, so that a call into an existing bucket allocates
/// nothing and a new bucket costs one arena slot.
#[derive(Default)]
pub struct Meter {
    pending: Mutex<Pending>,
    /// Woken when [`FLUSH_AT`] buckets are pending.
    pub flush_now: tokio::sync::Notify,
}

#[derive(Default)]
struct Pending {
    /// Buckets by their identity's hash (taken with `hasher`).
    index: HashMap<u64, u32, BuildHasherDefault<keyplane_auth::WordHasher>>,
    /// Seeded at random for each set of pending buckets.
    hasher: foldhash::fast::RandomState,
    buckets: Vec<Bucket>,
}

struct Bucket {
    key: BucketKey,
    counters: Counters,
    /// The next bucket with the same hash (`u32::MAX`: none).
    next: u32,
}

/// A bucket's identity, borrowed.
struct Identity<'a> {
    project_number: i64,
    key_id: &'a str,
    model: &'a str,
    method: &'static str,
    minute: i64,
    code: u16,
}

impl Identity<'_> {
    fn hash(&self, state: &foldhash::fast::RandomState) -> u64 {
        state.hash_one((
            self.project_number,
            self.key_id,
            self.model,
            self.method,
            self.minute,
            self.code,
        ))
    }

    fn is(&self, k: &BucketKey) -> bool {
        k.project_number == self.project_number
            && k.minute == self.minute
            && k.code == self.code
            && k.method == self.method
            && k.key_id == self.key_id
            && k.model == self.model
    }
}

impl Pending {
    /// Adds `add` to the bucket of `id` (made when new, unless the arena is full);
    /// returns how many buckets are pending.
    fn add(&mut self, id: &Identity<'_>, add: Counters) -> usize {
        let h = id.hash(&self.hasher);
        let head = self.index.get(&h).copied().unwrap_or(u32::MAX);
        let mut at = head;
        while at != u32::MAX {
            let b = &mut self.buckets[at as usize];
            if id.is(&b.key) {
                b.counters.add(add);
                return self.buckets.len();
            }
            at = b.next;
        }
        if self.buckets.len() >= HARD_CAP {
            tracing::warn!("usage buckets are not being written; a call's usage was dropped");
            return self.buckets.len();
        }
        self.buckets.push(Bucket {
            key: BucketKey {
                project_number: id.project_number,
                key_id: id.key_id.to_owned(),
                model: id.model.to_owned(),
                method: id.method,
                minute: id.minute,
                code: id.code,
            },
            counters: add,
            next: head,
        });
        self.index.insert(h, (self.buckets.len() - 1) as u32);
        self.buckets.len()
    }
}

impl Counters {
    fn add(&mut self, o: Counters) {
        self.requests = self.requests.saturating_add(o.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.candidates_tokens = self.candidates_tokens.saturating_add(o.candidates_tokens);
        self.latency_ms = self.latency_ms.saturating_add(o.latency_ms);
    }
}

impl Meter {
    pub fn record(&self, call: Call<'_>) {
        let id = Identity {
            project_number: call.project_number,
            key_id: call.key_id,
            model: call.model,
            method: call.method,
            minute: (call.at_ms / 60_000) as i64,
            code: call.code,
        };
        let add = Counters {
            requests: 1,
            prompt_tokens: call.prompt_tokens.min(i64::MAX as u64) as i64,
            candidates_tokens: call.candidates_tokens.min(i64::MAX as u64) as i64,
            latency_ms: call.latency.as_millis().min(i64::MAX as u128) as i64,
        };
        let pending = self.pending.lock().add(&id, add);
        if pending == FLUSH_AT {
            self.flush_now.notify_one();
        }
    }

    /// Takes every pending bucket (they are gone from memory: give them back with
    /// [`Meter::restore`] when they could not be written).
    pub fn take(&self) -> Vec<UsageRow> {
        let pending = std::mem::take(&mut *self.pending.lock());
        pending
            .buckets
            .iter()
            .map(|b| to_row(&b.key, &b.counters))
            .collect()
    }

    /// The pending buckets of one project, left in place (for reads that must include what
    /// has not been flushed yet).
    pub fn pending_of(&self, project_number: i64) -> Vec<UsageRow> {
        self.pending
            .lock()
            .buckets
            .iter()
            .filter(|b| b.key.project_number == project_number)
            .map(|b| to_row(&b.key, &b.counters))
            .collect()
    }

    /// Puts rows back after a failed write; they add to whatever was recorded meanwhile.
    pub fn restore(&self, rows: Vec<UsageRow>) {
        let mut pending = self.pending.lock();
        for r in rows {
            let id = Identity {
                project_number: r.project_number,
                key_id: &r.key_id,
                model: &r.model,
                method: static_method(&r.method),
                minute: r.minute,
                code: u16::try_from(r.code).unwrap_or(500),
            };
            let add = Counters {
                requests: r.requests,
                prompt_tokens: r.prompt_tokens,
                candidates_tokens: r.candidates_tokens,
                latency_ms: r.latency_ms,
            };
            pending.add(&id, add);
        }
    }
}

fn to_row(k: &BucketKey, c: &Counters) -> UsageRow {
    UsageRow {
        project_number: k.project_number,
        key_id: k.key_id.clone(),
        model: k.model.clone(),
        method: k.method.to_owned(),
        minute: k.minute,
        code: i32::from(k.code),
        requests: c.requests,
        prompt_tokens: c.prompt_tokens,
        candidates_tokens: c.candidates_tokens,
        latency_ms: c.latency_ms,
    }
}

/// The metered methods' names, as `'static` strings.
pub fn static_method(method: &str) -> &'static str {
    match method {
        "generateContent" => "generateContent",
        "streamGenerateContent" => "streamGenerateContent",
        "countTokens" => "countTokens",
        "bidiGenerateContent" => "bidiGenerateContent",
        _ => "other",
    }
}

/// Writes the pending buckets every `every`, and once more when `stop` resolves (the
/// server's shutdown). A failed write keeps the rows for the next round.
pub fn spawn_flusher(
    state: AppState,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stop = stop;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                () = state.meter.flush_now.notified() => false,
                _ = stop.changed() => true,
            };
            flush(&state).await;
            if last {
                break;
            }
        }
    })
}

/// Writes the pending buckets now.
pub async fn flush(state: &AppState) {
    let rows = state.meter.take();
    if rows.is_empty() {
        return;
    }
    if let Err(e) = state.store.add_usage(&rows).await {
        tracing::warn!(error = %e, rows = rows.len(), "writing usage buckets failed; kept for the next flush");
        state.meter.restore(rows);
    }
}

/// One data-plane call being metered; records itself (and the input tokens an admitted
/// call adds to its quota window) when dropped.
pub struct Ticket {
    state: AppState,
    project_number: i64,
    key_id: String,
    model: String,
    method: &'static str,
    start: Instant,
    /// The HTTP status answered (set by [`metered`]).
    pub code: u16,
    pub prompt_tokens: u64,
    pub candidates_tokens: u64,
    /// When the call was admitted against the generation quota (its input tokens count
    /// there too; a call not answered with success is given back).
    pub admitted_ms: Option<u64>,
}

impl Ticket {
    pub fn new(
        state: &AppState,
        project_number: i64,
        key_id: &str,
        model: &str,
        method: &str,
    ) -> Ticket {
        Ticket {
            state: state.clone(),
            project_number,
            key_id: key_id.to_owned(),
            model: model.to_owned(),
            method: static_method(method),
            start: Instant::now(),
            code: 500,
            prompt_tokens: 0,
            candidates_tokens: 0,
            admitted_ms: None,
        }
    }

    pub fn project_number(&self) -> i64 {
        self.project_number
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn method(&self) -> &'static str {
        self.method
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let at_ms = now_ms();
        self.state.meter.record(Call {
            project_number: self.project_number,
            key_id: &self.key_id,
            model: &self.model,
            method: self.method,
            code: self.code,
            prompt_tokens: self.prompt_tokens,
            candidates_tokens: self.candidates_tokens,
            latency: self.start.elapsed(),
            at_ms,
        });
        if let Some(admitted_ms) = self.admitted_ms {
            let quotas = &self.state.quotas;
            if (200..300).contains(&self.code) {
                quotas.add_tokens(self.project_number, &self.model, at_ms, self.prompt_tokens);
            } else {
                quotas.refund(self.project_number, &self.model, at_ms, admitted_ms);
            }
        }
    }
}

/// A handler's result as a response, metered: an error is recorded with its status at
/// once; a successful body carries the ticket until its last byte, counting the tokens
/// its `usageMetadata` reports on the way.
pub fn metered(result: Result<Response, ApiError>, ticket: Option<Ticket>) -> Response {
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    let Some(mut ticket) = ticket else {
        return resp;
    };
    ticket.code = resp.status().as_u16();
    if !resp.status().is_success() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = MeteredBody {
        inner: body,
        scan: UsageScan::default(),
        ticket: Some(ticket),
    };
    Response::from_parts(parts, Body::new(body))
}

/// A successful answer's body on its way out: passed on frame by frame, unchanged (its
/// length and end included), with the token counts read out of it; the ticket records the
/// call once the last frame has gone (or the body is dropped half-sent).
struct MeteredBody {
    inner: Body,
    scan: UsageScan,
    ticket: Option<Ticket>,
}

impl MeteredBody {
    fn record_counts(&mut self) {
        if let Some(t) = self.ticket.as_mut() {
            if let Some(p) = self.scan.prompt {
                t.prompt_tokens = p;
            }
            if let Some(c) = self.scan.candidates {
                t.candidates_tokens = c;
            }
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.scan.feed(data);
                    this.record_counts();
                }
                if this.inner.is_end_stream() {
                    this.ticket = None;
                }
            }
            Some(Err(_)) => {
                // The body failed half-way (an upstream that dropped): not a success.
                if let Some(t) = this.ticket.as_mut() {
                    t.code = 502;
                }
                this.ticket = None;
            }
            None => this.ticket = None,
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Finds the last `"promptTokenCount": N` and `"candidatesTokenCount": N` in a byte stream
/// of JSON (pretty or compact, SSE or not), across chunk boundaries.
#[derive(Default)]
struct UsageScan {
    carry: Vec<u8>,
    prompt: Option<u64>,
    candidates: Option<u64>,
}

/// What both field names end with; the scan finds this and then looks at what precedes it.
const TOKEN_COUNT: &[u8] = b"TokenCount\"";
const PROMPT: &[u8] = b"\"prompt";
const CANDIDATES: &[u8] = b"\"candidates";
/// Enough of a chunk's end to hold a field name split by the boundary and its number.
const CARRY: usize = 64;

/// Built once: a forward finder, which (unlike a reverse one) has a vectorised prefilter.
static TOKEN_COUNT_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(TOKEN_COUNT));

impl UsageScan {
    fn feed(&mut self, chunk: &[u8]) {
        let joined = !self.carry.is_empty();
        if joined {
            self.carry.extend_from_slice(chunk);
        }
        let hay: &[u8] = if joined { &self.carry } else { chunk };
        let (prompt, candidates) = last_counts(hay);
        if prompt.is_some() {
            self.prompt = prompt;
        }
        if candidates.is_some() {
            self.candidates = candidates;
        }
        let keep = hay.len().min(CARRY);
        if joined {
            let drop = self.carry.len() - keep;
            self.carry.drain(..drop);
        } else {
            self.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
        }
    }
}

/// The numbers after the last complete `"promptTokenCount": N` and
/// `"candidatesTokenCount": N` in `hay`, in one forward pass over it.
fn last_counts(hay: &[u8]) -> (Option<u64>, Option<u64>) {
    let (mut prompt, mut candidates) = (None, None);
    for at in TOKEN_COUNT_FINDER.find_iter(hay) {
        let name = &hay[..at];
        let slot = if name.ends_with(PROMPT) {
            &mut prompt
        } else if name.ends_with(CANDIDATES) {
            &mut candidates
        } else {
            continue;
        };
        if let Some(n) = count_after(hay, at + TOKEN_COUNT.len()) {
            *slot = Some(n);
        }
    }
    (prompt, candidates)
}

/// The number in `: N` at `i`, if it is whole: digits running to the end of what is here
/// may go on in the next chunk.
fn count_after(hay: &[u8], mut i: usize) -> Option<u64> {
    while i < hay.len() && hay[i].is_ascii_whitespace() {
        i += 1;
    }
    if hay.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while i < hay.len() && hay[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    while i < hay.len() && hay[i].is_ascii_digit() {
        i += 1;
    }
    if i == start || i == hay.len() {
        return None;
    }
    std::str::from_utf8(&hay[start..i]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(key: &str, minute: u64, code: u16) -> Call<'_> {
        Call {
            project_number: 7,
            key_id: key,
            model: "m",
            method: "generateContent",
            code,
            prompt_tokens: 3,
            candidates_tokens: 5,
            latency: Duration::from_millis(2),
            at_ms: minute * 60_000 + 1,
        }
    }

    #[test]
    fn calls_add_up_per_identity_and_restore_merges() {
        let m = Meter::default();
        for _ in 0..3 {
            m.record(call("a", 10, 200));
        }
        m.record(call("a", 10, 429));
        m.record(call("b", 10, 200));
        m.record(call("a", 11, 200));
        let mut rows = m.take();
        rows.sort_by(|x, y| (x.minute, &x.key_id, x.code).cmp(&(y.minute, &y.key_id, y.code)));
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.minute,
                    r.key_id.as_str(),
                    r.code,
                    r.requests,
                    r.prompt_tokens,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (10, "a", 200, 3, 9),
                (10, "a", 429, 1, 3),
                (10, "b", 200, 1, 3),
                (11, "a", 200, 1, 3)
            ]
        );
        assert!(m.take().is_empty());
        // A failed write gives the rows back; they merge with newer calls.
        m.record(call("a", 10, 200));
        m.restore(rows);
        let again = m.take();
        assert_eq!(again.len(), 4);
        let a = again
            .iter()
            .find(|r| r.key_id == "a" && r.minute == 10 && r.code == 200)
            .unwrap();
        assert_eq!((a.requests, a.candidates_tokens, a.latency_ms), (4, 20, 8));
    }

    #[tokio::test]
    async fn the_flusher_is_woken_when_buckets_pile_up() {
        let m = Meter::default();
        let keys: Vec<String> = (0..FLUSH_AT).map(|i| format!("k{i}")).collect();
        for k in &keys[..FLUSH_AT - 1] {
            m.record(call(k, 1, 200));
        }
        let woken = tokio::time::timeout(Duration::from_millis(50), m.flush_now.notified());
        assert!(woken.await.is_err(), "woken too early");
        m.record(call(&keys[FLUSH_AT - 1], 1, 200));
        tokio::time::timeout(Duration::from_secs(1), m.flush_now.notified())
            .await
            .expect("woken at FLUSH_AT");
        assert_eq!(m.take().len(), FLUSH_AT);
    }

    fn scan(chunks: &[&str]) -> (Option<u64>, Option<u64>) {
        let mut s = UsageScan::default();
        for c in chunks {
            s.feed(&Bytes::copy_from_slice(c.as_bytes()));
        }
        (s.prompt, s.candidates)
    }

    #[test]
    fn counts_are_read_from_compact_pretty_and_streamed_json() {
        let compact = r#"{"candidates":[],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":7,"totalTokenCount":19}}"#;
        assert_eq!(scan(&[compact]), (Some(12), Some(7)));
        let pretty = "{\n  \"usageMetadata\": {\n    \"promptTokenCount\": 5,\n    \"candidatesTokenCount\": 31\n  }\n}";
        assert_eq!(scan(&[pretty]), (Some(5), Some(31)));
        // SSE: cumulative counts, the last one wins.
        let sse = [
            "data: {\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":1}}\r\n\r\n",
            "data: {\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":2}}\r\n\r\n",
            "data: {\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":40}}\r\n\r\n",
        ];
        assert_eq!(scan(&sse), (Some(9), Some(40)));
    }

    #[test]
    fn other_token_counts_are_not_taken_for_these_two() {
        // Gemini's usageMetadata has more counts ending in "TokenCount"; only the prompt's and
        // the candidates' are metered, and the last complete one of each wins.
        let body = r#"{"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":12,"totalTokenCount":20,"cachedContentTokenCount":3,"toolUsePromptTokenCount":99,"thoughtsTokenCount":4,"promptTokensDetails":[{"modality":"TEXT","tokenCount":8}]}}"#;
        assert_eq!(scan(&[body]), (Some(8), Some(12)));
        let twice = r#"{"promptTokenCount" : 1, "candidatesTokenCount":2} {"promptTokenCount":3,"candidatesTokenCount" :4}"#;
        assert_eq!(scan(&[twice]), (Some(3), Some(4)));
        // A later occurrence that is not followed by a number does not undo an earlier one.
        let broken = r#"{"promptTokenCount":5,"candidatesTokenCount":6} "promptTokenCount": x "candidatesTokenCount""#;
        assert_eq!(scan(&[broken]), (Some(5), Some(6)));
    }

    #[test]
    fn counts_split_across_chunks_are_found() {
        let whole = r#"{"usageMetadata":{"promptTokenCount":1234,"candidatesTokenCount":5678}}"#;
        for cut in 1..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(scan(&[a, b]), (Some(1234), Some(5678)), "cut at {cut}");
        }
        for cut in 1..whole.len() - 1 {
            let (a, rest) = whole.split_at(cut);
            let (b, c) = rest.split_at(1);
            assert_eq!(scan(&[a, b, c]), (Some(1234), Some(5678)), "cut at {cut}");
        }
    }

    #[test]
    fn no_usage_is_none_and_text_naming_the_field_is_not_a_count() {
        assert_eq!(scan(&["{\"candidates\":[]}"]), (None, None));
        assert_eq!(
            scan(&[r#"{"text":"the \"promptTokenCount\" field"}"#]),
            (None, None)
        );
    }
}
