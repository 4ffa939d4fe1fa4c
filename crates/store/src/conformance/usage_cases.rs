//! Conformance cases for [`UsageStore`](crate::UsageStore).

use crate::Store;
use keyplane_core::quota::UsageRow;
use std::sync::Arc;

const P1: i64 = 100_000_000_001;
const P2: i64 = 100_000_000_002;
/// A minute in 2025 (minutes since the epoch), so nothing hides near zero.
const M0: i64 = 29_000_000;

/// One call's worth of usage in a 200 row; [`with_counters`] and [`with_code`] vary it.
fn row(project_number: i64, key_id: &str, model: &str, method: &str, minute: i64) -> UsageRow {
    UsageRow {
        project_number,
        key_id: key_id.into(),
        model: model.into(),
        method: method.into(),
        minute,
        code: 200,
        requests: 1,
        prompt_tokens: 10,
        candidates_tokens: 20,
        latency_ms: 300,
    }
}

fn with_counters(
    mut r: UsageRow,
    requests: i64,
    prompt: i64,
    candidates: i64,
    ms: i64,
) -> UsageRow {
    r.requests = requests;
    r.prompt_tokens = prompt;
    r.candidates_tokens = candidates;
    r.latency_ms = ms;
    r
}

fn with_code(mut r: UsageRow, code: i32) -> UsageRow {
    r.code = code;
    r
}

/// Rows with the same identity add up, across calls and within one batch; every counter
/// is summed, none is replaced; a different key (the empty one included) is another row.
pub async fn usage_adds_up<S: Store>(s: &S) {
    let a = row(P1, "k1", "gemini-2.5-flash", "generateContent", M0);
    s.add_usage(std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(s.usage(P1, M0, M0 + 1).await.unwrap(), vec![a.clone()]);

    s.add_usage(&[with_counters(a.clone(), 2, 5, 7, 11)])
        .await
        .unwrap();
    let summed = with_counters(a.clone(), 3, 15, 27, 311);
    assert_eq!(s.usage(P1, M0, M0 + 1).await.unwrap(), vec![summed]);

    // One identity twice in a batch, beside a row of the empty key.
    let keyless = row(P1, "", "gemini-2.5-flash", "generateContent", M0);
    s.add_usage(&[
        with_counters(a.clone(), 1, 1, 1, 1),
        keyless.clone(),
        with_counters(a.clone(), 4, 0, 0, 0),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.usage(P1, M0, M0 + 1).await.unwrap(),
        vec![keyless, with_counters(a, 8, 16, 28, 312)]
    );
}

/// The status is part of the identity: a 200 and a 429 of the same call are two rows,
/// and each keeps its own counters.
pub async fn usage_codes_are_separate<S: Store>(s: &S) {
    let ok = row(P1, "k1", "gemini-2.5-pro", "generateContent", M0);
    let refused = with_counters(with_code(ok.clone(), 429), 1, 0, 0, 2);
    let bad = with_counters(with_code(ok.clone(), 400), 1, 0, 0, 3);
    s.add_usage(&[refused.clone(), ok.clone(), bad.clone()])
        .await
        .unwrap();
    s.add_usage(std::slice::from_ref(&refused)).await.unwrap();
    assert_eq!(
        s.usage(P1, M0, M0 + 1).await.unwrap(),
        vec![ok, bad, with_counters(refused, 2, 0, 0, 4)]
    );
}

/// `usage` returns `from <= minute < to` of the one project asked for.
pub async fn usage_range<S: Store>(s: &S) {
    let rows: Vec<UsageRow> = (0..5)
        .map(|i| row(P1, "k1", "m", "generateContent", M0 + i))
        .collect();
    s.add_usage(&rows).await.unwrap();
    s.add_usage(&[row(P2, "k2", "m", "generateContent", M0 + 2)])
        .await
        .unwrap();

    assert_eq!(s.usage(P1, M0 + 1, M0 + 3).await.unwrap(), rows[1..3]);
    assert_eq!(s.usage(P1, M0, M0 + 5).await.unwrap(), rows);
    assert_eq!(s.usage(P1, M0 - 100, M0 + 100).await.unwrap(), rows);
    assert_eq!(s.usage(P1, M0 + 4, M0 + 5).await.unwrap(), rows[4..]);
    // Empty and inverted ranges, and ranges with nothing in them.
    assert!(s.usage(P1, M0 + 2, M0 + 2).await.unwrap().is_empty());
    assert!(s.usage(P1, M0 + 3, M0 + 1).await.unwrap().is_empty());
    assert!(s.usage(P1, M0 + 5, M0 + 10).await.unwrap().is_empty());
    assert!(s.usage(P1, M0 - 10, M0).await.unwrap().is_empty());
    // Another project's rows, and a project with none.
    assert_eq!(
        s.usage(P2, M0, M0 + 5).await.unwrap(),
        vec![row(P2, "k2", "m", "generateContent", M0 + 2)]
    );
    assert!(s.usage(P2 + 1, M0, M0 + 5).await.unwrap().is_empty());
}

/// Rows come ordered by minute, model, method, key id, then code, whatever order they
/// were added in. The rows are chosen so that swapping any two adjacent sort keys
/// changes the order.
pub async fn usage_order<S: Store>(s: &S) {
    let expected = vec![
        row(P1, "k9", "a-model", "streamGenerateContent", M0),
        row(P1, "k9", "b-model", "countTokens", M0),
        with_code(row(P1, "", "b-model", "generateContent", M0), 200),
        with_code(row(P1, "", "b-model", "generateContent", M0), 503),
        row(P1, "k1", "b-model", "generateContent", M0),
        row(P1, "k2", "b-model", "generateContent", M0),
        row(P1, "k0", "a-model", "generateContent", M0 + 1),
    ];
    // Reversed, then the middle rows swapped again: no insertion order matches.
    let mut shuffled: Vec<UsageRow> = expected.iter().rev().cloned().collect();
    shuffled.swap(1, 4);
    s.add_usage(&shuffled[..3]).await.unwrap();
    s.add_usage(&shuffled[3..]).await.unwrap();
    assert_eq!(s.usage(P1, M0, M0 + 2).await.unwrap(), expected);
}

/// Day totals: only generating calls not refused with 429, at or after the minute, summed
/// per (project, model) over keys, methods, minutes and the other codes; ordered by
/// project then model; key, method and code blank, minute the one asked for.
pub async fn usage_totals<S: Store>(s: &S) {
    let generate =
        |p, key: &str, model: &str, minute| row(p, key, model, "generateContent", minute);
    let stream =
        |p, key: &str, model: &str, minute| row(p, key, model, "streamGenerateContent", minute);
    s.add_usage(&[
        // P1 / flash: counted, 2 + 1 requests.
        with_counters(generate(P1, "k1", "flash", M0), 2, 100, 200, 30),
        stream(P1, "k2", "flash", M0 + 5),
        // Not counted: failed or refused (given back), before the day, refused for quota,
        // not a generating method.
        with_code(generate(P1, "", "flash", M0 + 700), 500),
        with_counters(
            with_code(generate(P1, "k1", "flash", M0 + 1), 400),
            4,
            0,
            0,
            4,
        ),
        with_counters(generate(P1, "k1", "flash", M0 - 1), 1000, 1000, 1000, 1000),
        with_counters(with_code(generate(P1, "k1", "flash", M0), 429), 50, 0, 0, 5),
        with_counters(with_code(stream(P1, "k1", "flash", M0), 429), 60, 0, 0, 6),
        with_counters(row(P1, "k1", "flash", "countTokens", M0), 70, 70, 0, 7),
        with_counters(row(P1, "k1", "flash", "embedContent", M0), 80, 80, 0, 8),
        // P1 / pro and P2 / flash: their own totals.
        generate(P1, "k1", "pro", M0 + 3),
        with_counters(stream(P2, "k3", "flash", M0 + 2), 7, 1, 2, 3),
        // A Live turn counts too.
        row(P2, "k3", "flash", "bidiGenerateContent", M0 + 2),
        // Only uncounted rows: no total at all.
        with_code(generate(P2, "k3", "pro", M0 + 2), 429),
        row(P2, "k3", "lite", "countTokens", M0 + 2),
    ])
    .await
    .unwrap();

    let total = |p, model: &str, requests, prompt, candidates, ms| UsageRow {
        project_number: p,
        key_id: String::new(),
        model: model.into(),
        method: String::new(),
        minute: M0,
        code: 0,
        requests,
        prompt_tokens: prompt,
        candidates_tokens: candidates,
        latency_ms: ms,
    };
    assert_eq!(
        s.usage_totals_since(M0).await.unwrap(),
        vec![
            total(P1, "flash", 3, 110, 220, 330),
            total(P1, "pro", 1, 10, 20, 300),
            total(P2, "flash", 8, 11, 22, 303),
        ]
    );
    // Later: the minute-M0 rows drop out and the minute is the one asked for.
    let later = s.usage_totals_since(M0 + 3).await.unwrap();
    assert_eq!(later.len(), 2);
    assert_eq!((later[0].model.as_str(), later[0].requests), ("flash", 1));
    assert_eq!((later[1].model.as_str(), later[1].requests), ("pro", 1));
    assert!(later
        .iter()
        .all(|t| t.minute == M0 + 3 && t.project_number == P1));
    assert!(s.usage_totals_since(M0 + 6).await.unwrap().is_empty());
}

/// Purge removes rows strictly before the minute, of every project, and counts them.
pub async fn usage_purge<S: Store>(s: &S) {
    let rows: Vec<UsageRow> = (0..4)
        .flat_map(|i| {
            [
                row(P1, "k1", "m", "generateContent", M0 + i),
                with_code(row(P2, "", "m", "generateContent", M0 + i), 429),
            ]
        })
        .collect();
    s.add_usage(&rows).await.unwrap();
    assert_eq!(s.purge_usage_before(M0).await.unwrap(), 0);
    assert_eq!(s.purge_usage_before(M0 + 2).await.unwrap(), 4);
    assert_eq!(s.purge_usage_before(M0 + 2).await.unwrap(), 0);
    assert_eq!(
        s.usage(P1, M0 - 10, M0 + 10).await.unwrap(),
        vec![
            row(P1, "k1", "m", "generateContent", M0 + 2),
            row(P1, "k1", "m", "generateContent", M0 + 3),
        ]
    );
    assert_eq!(s.usage(P2, M0 - 10, M0 + 10).await.unwrap().len(), 2);
    // A purged identity added again starts from zero.
    s.add_usage(&[row(P1, "k1", "m", "generateContent", M0)])
        .await
        .unwrap();
    assert_eq!(
        s.usage(P1, M0, M0 + 1).await.unwrap(),
        vec![row(P1, "k1", "m", "generateContent", M0)]
    );
    assert_eq!(s.purge_usage_before(i64::MAX).await.unwrap(), 5);
    assert!(s.usage(P1, i64::MIN, i64::MAX).await.unwrap().is_empty());
}

/// An empty batch writes nothing and fails nothing; a batch with a failing row writes
/// none of its rows.
pub async fn usage_batches_are_atomic<S: Store>(s: &S) {
    s.add_usage(&[]).await.unwrap();
    assert!(s.usage(P1, i64::MIN, i64::MAX).await.unwrap().is_empty());
    assert!(s.usage_totals_since(i64::MIN).await.unwrap().is_empty());

    let big = with_counters(row(P1, "k1", "m", "generateContent", M0), i64::MAX, 0, 0, 0);
    s.add_usage(std::slice::from_ref(&big)).await.unwrap();
    // The second row overflows the stored counter: the first must not stay behind.
    let fresh = row(P1, "k2", "m", "generateContent", M0);
    let overflow = with_counters(big.clone(), 1, 0, 0, 0);
    assert!(s.add_usage(&[fresh, overflow]).await.is_err());
    assert_eq!(s.usage(P1, i64::MIN, i64::MAX).await.unwrap(), vec![big]);
}

/// 5,000 rows in one call (50,000 values: more than one SQLite statement may bind), twice.
pub async fn usage_large_batch<S: Store>(s: &S) {
    const N: i64 = 5_000;
    let rows: Vec<UsageRow> = (0..N)
        .map(|i| {
            let mut r = row(
                P1 + i % 3,
                &format!("k{}", i % 7),
                "m",
                "generateContent",
                M0 + i / 20,
            );
            r.code = 200 + (i % 20) as i32;
            r.prompt_tokens = i;
            r
        })
        .collect();
    s.add_usage(&rows).await.unwrap();
    s.add_usage(&rows).await.unwrap();
    let mut stored = Vec::new();
    for p in P1..P1 + 3 {
        stored.extend(s.usage(p, M0, M0 + N).await.unwrap());
    }
    assert_eq!(stored.len(), N as usize);
    assert!(stored.iter().all(|r| r.requests == 2));
    assert_eq!(
        stored.iter().map(|r| r.prompt_tokens).sum::<i64>(),
        N * (N - 1)
    );
    let totals = s.usage_totals_since(M0).await.unwrap();
    assert_eq!(totals.iter().map(|t| t.requests).sum::<i64>(), 2 * N);
    assert_eq!(s.purge_usage_before(M0 + N).await.unwrap(), N as u64);
}

/// Many tasks adding to the same buckets at once: no count is lost.
pub async fn concurrent_usage_adds<S: Store + 'static>(s: Arc<S>) {
    const TASKS: i64 = 20;
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| {
            let s = s.clone();
            tokio::spawn(async move {
                let batch = [
                    row(P1, "k1", "m", "generateContent", M0),
                    with_counters(row(P1, "", "m", "generateContent", M0 + n % 2), 1, n, 0, 0),
                ];
                s.add_usage(&batch).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rows = s.usage(P1, M0, M0 + 2).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[1],
        with_counters(
            row(P1, "k1", "m", "generateContent", M0),
            TASKS,
            10 * TASKS,
            20 * TASKS,
            300 * TASKS
        )
    );
    assert_eq!(rows[0].requests + rows[2].requests, TASKS);
    assert_eq!(
        rows[0].prompt_tokens + rows[2].prompt_tokens,
        TASKS * (TASKS - 1) / 2
    );
}
