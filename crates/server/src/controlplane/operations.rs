//! Long-running operations. Every Keyplane operation finishes before the call returns;
//! it is stored so `operations.get` answers it as Google's APIs do.

use keyplane_core::{now, StoredOperation};
use keyplane_wire::cloud::Operation;
use keyplane_wire::ApiError;

use super::store_error;
use crate::app::AppState;

/// Stores a finished operation and returns it. `secret_fields` of the response (a key
/// string) are left out of what is stored.
pub async fn record(
    state: &AppState,
    op: Operation,
    secret_fields: &[&str],
) -> Result<Operation, ApiError> {
    let mut stored = op.clone();
    if let Some(serde_json::Value::Object(fields)) = stored.response.as_mut() {
        for f in secret_fields {
            fields.remove(*f);
        }
    }
    let body = serde_json::to_string(&stored).map_err(ApiError::internal_from)?;
    state
        .store
        .put_operation(&StoredOperation {
            name: op.name.clone(),
            body,
            create_time: now(),
        })
        .await
        .map_err(store_error)?;
    Ok(op)
}

/// The stored operation `name` (`operations/...`).
pub async fn get(state: &AppState, name: &str) -> Result<Operation, ApiError> {
    let op = state.store.get_operation(name).await.map_err(|e| match e {
        keyplane_store::StoreError::NotFound => {
            ApiError::not_found(format!("Operation {name} not found."))
        }
        other => store_error(other),
    })?;
    serde_json::from_str(&op.body).map_err(ApiError::internal_from)
}

/// A fresh operation name: `operations/{prefix}{uuid}`.
pub fn new_name(prefix: &str) -> String {
    format!("operations/{prefix}{}", uuid::Uuid::new_v4())
}
