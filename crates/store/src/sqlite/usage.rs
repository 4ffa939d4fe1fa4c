//! `UsageStore` on SQLite: `usage_buckets`, one row per (project, key uid, model, method,
//! minute, code). Adding is an upsert that sums the counters, so flushes from several
//! processes (or a retried flush) never overwrite each other's counts; the primary key
//! leads with (project_number, minute), which is what a project's range read walks.

use super::{col_at, internal, SqliteStore};
use crate::{Result, UsageStore};
use async_trait::async_trait;
use keyplane_core::quota::UsageRow;
use sqlx::sqlite::SqliteRow;

/// A bucket in the column order of `usage`'s select.
fn usage_from_row(row: &SqliteRow) -> Result<UsageRow> {
    Ok(UsageRow {
        project_number: col_at(row, 0, "project_number")?,
        key_id: col_at(row, 1, "key_id")?,
        model: col_at(row, 2, "model")?,
        method: col_at(row, 3, "method")?,
        minute: col_at(row, 4, "minute")?,
        code: col_at(row, 5, "code")?,
        requests: col_at(row, 6, "requests")?,
        prompt_tokens: col_at(row, 7, "prompt_tokens")?,
        candidates_tokens: col_at(row, 8, "candidates_tokens")?,
        latency_ms: col_at(row, 9, "latency_ms")?,
    })
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn add_usage(&self, rows: &[UsageRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .write
            .begin()
            .await
            .map_err(|e| internal("add_usage", e))?;
        // One statement per row, not one multi-row insert: PostgreSQL refuses an upsert
        // that meets the same row twice, and a batch may hold one identity twice. The
        // statement is prepared once and cached by the connection.
        for r in rows {
            // On error the transaction is dropped, which rolls it back.
            sqlx::query(
                "insert into usage_buckets (project_number, key_id, model, method, minute, \
                 code, requests, prompt_tokens, candidates_tokens, latency_ms) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 on conflict (project_number, minute, model, method, key_id, code) do update \
                 set requests = usage_buckets.requests + excluded.requests, \
                 prompt_tokens = usage_buckets.prompt_tokens + excluded.prompt_tokens, \
                 candidates_tokens = usage_buckets.candidates_tokens \
                 + excluded.candidates_tokens, \
                 latency_ms = usage_buckets.latency_ms + excluded.latency_ms",
            )
            .bind(r.project_number)
            .bind(&r.key_id)
            .bind(&r.model)
            .bind(&r.method)
            .bind(r.minute)
            .bind(r.code)
            .bind(r.requests)
            .bind(r.prompt_tokens)
            .bind(r.candidates_tokens)
            .bind(r.latency_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| internal("add_usage", e))?;
        }
        tx.commit().await.map_err(|e| internal("add_usage", e))
    }

    async fn usage(
        &self,
        project_number: i64,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<UsageRow>> {
        let rows = sqlx::query(
            "select project_number, key_id, model, method, minute, code, requests, \
             prompt_tokens, candidates_tokens, latency_ms from usage_buckets \
             where project_number = $1 and minute >= $2 and minute < $3 \
             order by minute, model, method, key_id, code",
        )
        .bind(project_number)
        .bind(from_minute)
        .bind(to_minute)
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("usage", e))?;
        rows.iter().map(usage_from_row).collect()
    }

    async fn usage_totals_since(&self, from_minute: i64) -> Result<Vec<UsageRow>> {
        // Only the calls that consumed request quota: the generating methods, not
        // not answered with success. The casts keep the sums 64-bit integers on PostgreSQL too
        // (its `sum(bigint)` is `numeric`); on SQLite they change nothing. Grouping by
        // model first (the same groups) keeps SQLite from walking the whole primary key
        // for its project order: it reads the day through `usage_buckets_minute` and
        // sorts the few groups instead.
        let rows = sqlx::query(
            "select project_number, model, cast(sum(requests) as bigint), \
             cast(sum(prompt_tokens) as bigint), cast(sum(candidates_tokens) as bigint), \
             cast(sum(latency_ms) as bigint) from usage_buckets \
             where minute >= $1 and code >= 200 and code < 300 \
             and method in ('generateContent', 'streamGenerateContent', 'bidiGenerateContent') \
             group by model, project_number order by project_number, model",
        )
        .bind(from_minute)
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("usage_totals_since", e))?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    project_number: col_at(row, 0, "project_number")?,
                    key_id: String::new(),
                    model: col_at(row, 1, "model")?,
                    method: String::new(),
                    minute: from_minute,
                    code: 0,
                    requests: col_at(row, 2, "requests")?,
                    prompt_tokens: col_at(row, 3, "prompt_tokens")?,
                    candidates_tokens: col_at(row, 4, "candidates_tokens")?,
                    latency_ms: col_at(row, 5, "latency_ms")?,
                })
            })
            .collect()
    }

    async fn purge_usage_before(&self, minute: i64) -> Result<u64> {
        let done = sqlx::query("delete from usage_buckets where minute < $1")
            .bind(minute)
            .execute(&self.write)
            .await
            .map_err(|e| internal("purge_usage_before", e))?;
        Ok(done.rows_affected())
    }
}
