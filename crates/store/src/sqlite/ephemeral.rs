//! `EphemeralTokenStore` on SQLite: `ephemeral_tokens`, keyed by the HMAC of the token
//! name. A use is one conditional UPDATE, so concurrent uses never overspend; a negative
//! `uses_left` means unlimited (`uses: 0` at creation).

use super::{col, internal, time_col, violation, SqliteStore, Violation};
use crate::codec::micros;
use crate::{EphemeralTokenStore, Result, StoreError};
use async_trait::async_trait;
use keyplane_core::EphemeralToken;
use time::OffsetDateTime;

#[async_trait]
impl EphemeralTokenStore for SqliteStore {
    async fn create_ephemeral_token(&self, t: &EphemeralToken) -> Result<()> {
        sqlx::query(
            "insert into ephemeral_tokens (token_hash, key_hash, project_number, uses_left, \
             expire_time, new_session_expire_time, setup, field_mask, create_time) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&t.token_hash)
        .bind(&t.key_hash)
        .bind(t.project_number)
        .bind(t.uses_left)
        .bind(micros(t.expire_time))
        .bind(micros(t.new_session_expire_time))
        .bind(&t.setup)
        .bind(&t.field_mask)
        .bind(micros(t.create_time))
        .execute(&self.write)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique(_)) => StoreError::AlreadyExists("an ephemeral token".into()),
            _ => internal("create_ephemeral_token", e),
        })?;
        Ok(())
    }

    async fn ephemeral_token(&self, token_hash: &[u8]) -> Result<EphemeralToken> {
        let row = sqlx::query(
            "select token_hash, key_hash, project_number, uses_left, expire_time, \
             new_session_expire_time, setup, field_mask, create_time \
             from ephemeral_tokens where token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("ephemeral_token", e))?
        .ok_or(StoreError::NotFound)?;
        Ok(EphemeralToken {
            token_hash: col(&row, "token_hash")?,
            key_hash: col(&row, "key_hash")?,
            project_number: col(&row, "project_number")?,
            uses_left: col(&row, "uses_left")?,
            expire_time: time_col(&row, "expire_time")?,
            new_session_expire_time: time_col(&row, "new_session_expire_time")?,
            setup: col(&row, "setup")?,
            field_mask: col(&row, "field_mask")?,
            create_time: time_col(&row, "create_time")?,
        })
    }

    async fn use_ephemeral_token(&self, token_hash: &[u8], now: OffsetDateTime) -> Result<bool> {
        let done = sqlx::query(
            "update ephemeral_tokens \
             set uses_left = case when uses_left > 0 then uses_left - 1 else uses_left end \
             where token_hash = $1 and uses_left <> 0 and expire_time > $2 \
             and new_session_expire_time > $2",
        )
        .bind(token_hash)
        .bind(micros(now))
        .execute(&self.write)
        .await
        .map_err(|e| internal("use_ephemeral_token", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_expired_ephemeral_tokens(&self, now: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("delete from ephemeral_tokens where expire_time < $1")
            .bind(micros(now))
            .execute(&self.write)
            .await
            .map_err(|e| internal("purge_expired_ephemeral_tokens", e))?;
        Ok(done.rows_affected())
    }
}
