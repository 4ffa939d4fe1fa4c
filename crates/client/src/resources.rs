//! Control-plane resources as the client reads them.
//!
//! Projects, services and lookup answers are `keyplane_wire::cloud`'s types (re-exported
//! here). Keys and operations have client-side types: a key can carry its key string, so
//! its `Debug` must not show it (the wire type's derived `Debug` would), and Keyplane adds
//! the output-only `maskedKeyString`. Fields the client does not name are kept in `other`
//! so that re-serializing a key gives back what the server sent.

use crate::error::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

pub use keyplane_wire::cloud::{
    ListProjectsResponse, ListServicesResponse, LookupKeyResponse, Project, Service,
};

/// `google.api.apikeys.v2.Key`, plus Keyplane's `maskedKeyString`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    /// `projects/{NUMBER}/locations/global/keys/{KEY_ID}`.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Only in the answer of a create (and of `getKeyString`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_string: Option<Secret>,
    /// `…` and the last four characters of the key string (Keyplane's display field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked_key_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// Set on soft-deleted keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_time: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    /// The `Restrictions` message as sent (browser/server/android/ios, apiTargets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restrictions: Option<Value>,
    /// Every other field (`annotations`, `serviceAccountEmail`, …), verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Key {
    /// The project number of the key's name (`projects/{NUMBER}/…`).
    pub fn project_number(&self) -> Option<&str> {
        let rest = self.name.strip_prefix("projects/")?;
        rest.split('/').next().filter(|s| !s.is_empty())
    }

    /// The key id, the last segment of the name.
    pub fn key_id(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or_default()
    }

    pub fn is_deleted(&self) -> bool {
        self.delete_time.is_some()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("display_name", &self.display_name)
            .field("key_string", &self.key_string) // Secret: redacted
            .field("masked_key_string", &self.masked_key_string)
            .field("create_time", &self.create_time)
            .field("update_time", &self.update_time)
            .field("delete_time", &self.delete_time)
            .field("etag", &self.etag)
            .field("restrictions", &self.restrictions)
            .field("other", &self.other)
            .finish()
    }
}

/// `ListKeys`' answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListKeysResponse {
    #[serde(default)]
    pub keys: Vec<Key>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `google.longrunning.Operation`. Its `Debug` leaves out `response`, which holds the key
/// string of a CreateKey operation.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub done: bool,
    /// `Any` JSON: `{"@type": …, …fields}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// `google.rpc.Status` (gRPC integer code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("name", &self.name)
            .field("done", &self.done)
            .field("metadata", &self.metadata)
            .field("response", &self.response.as_ref().map(|_| "<not shown>"))
            .field("error", &self.error)
            .finish()
    }
}

/// The project number of a resource name `projects/{NUMBER}` (or a longer name).
pub fn project_number_of(name: &str) -> Option<&str> {
    name.strip_prefix("projects/")?
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = r#"{"name":"projects/123/locations/global/keys/k1","uid":"u","displayName":"d","keyString":"AIzaSyTESTTESTTESTTESTTESTTESTTESTTESTX","maskedKeyString":"…STX","createTime":"2026-01-02T03:04:05Z","etag":"W/\"e\"","restrictions":{"apiTargets":[{"service":"generativelanguage.googleapis.com"}]},"annotations":{"a":"b"},"serviceAccountEmail":"x@y"}"#;

    #[test]
    fn keys_round_trip_and_hide_the_key_string_in_debug() {
        let k: Key = serde_json::from_str(KEY).unwrap();
        assert_eq!(k.project_number(), Some("123"));
        assert_eq!(k.key_id(), "k1");
        assert_eq!(
            k.key_string.as_ref().map(Secret::expose),
            Some("AIzaSyTESTTESTTESTTESTTESTTESTTESTTESTX")
        );
        let shown = format!("{k:?}");
        assert!(!shown.contains("AIzaSyTEST"), "{shown}");
        let back: Value = serde_json::to_value(&k).unwrap();
        let orig: Value = serde_json::from_str(KEY).unwrap();
        assert_eq!(back, orig, "nothing lost or added");
    }

    #[test]
    fn operation_debug_leaves_out_the_response() {
        let op: Operation = serde_json::from_value(serde_json::json!({
            "name": "operations/x", "done": true,
            "response": {"@type": "t", "keyString": "AIzaSECRET"}
        }))
        .unwrap();
        assert!(!format!("{op:?}").contains("AIzaSECRET"));
    }
}
