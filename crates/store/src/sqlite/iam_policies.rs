//! `PolicyStore` on SQLite: IAM allow policies in `iam_policies` (resource, policy JSON,
//! etag), written with compare-and-set on the etag.

use super::{col, internal, SqliteStore};
use crate::codec::{from_json, to_json};
use crate::{PolicyStore, Result, StoreError};
use async_trait::async_trait;
use keyplane_core::iam::Policy;

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn iam_policy(&self, resource: &str) -> Result<Option<Policy>> {
        let row = sqlx::query("select policy, etag from iam_policies where resource = $1")
            .bind(resource)
            .fetch_optional(&self.read)
            .await
            .map_err(|e| internal("iam_policy", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut policy: Policy = from_json("policy", &col::<String>(&row, "policy")?)?;
        policy.etag = col(&row, "etag")?;
        Ok(Some(policy))
    }

    async fn put_iam_policy(
        &self,
        resource: &str,
        policy: &Policy,
        expected_etag: Option<&str>,
    ) -> Result<()> {
        if policy.etag.is_empty() {
            return Err(StoreError::InvalidArgument(
                "a stored IAM policy needs an etag".into(),
            ));
        }
        // The etag lives in its own column; the JSON holds version and bindings.
        let body = to_json(
            "policy",
            &Policy {
                etag: String::new(),
                ..policy.clone()
            },
        )?;
        let done = match expected_etag {
            None => sqlx::query(
                "insert into iam_policies (resource, policy, etag) \
                 select $1, $2, $3 where not exists \
                 (select 1 from iam_policies where resource = $1)",
            )
            .bind(resource)
            .bind(&body)
            .bind(&policy.etag)
            .execute(&self.write)
            .await
            .map_err(|e| match super::violation(&e) {
                Some(super::Violation::Unique(_)) => StoreError::EtagMismatch,
                _ => internal("put_iam_policy", e),
            })?,
            Some(expected) => sqlx::query(
                "update iam_policies set policy = $2, etag = $3 \
                 where resource = $1 and etag = $4",
            )
            .bind(resource)
            .bind(&body)
            .bind(&policy.etag)
            .bind(expected)
            .execute(&self.write)
            .await
            .map_err(|e| internal("put_iam_policy", e))?,
        };
        if done.rows_affected() == 0 {
            return Err(StoreError::EtagMismatch);
        }
        Ok(())
    }
}
