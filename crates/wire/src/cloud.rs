//! Control-plane resources in Google's JSON: API Keys v2, Resource Manager v3, Service
//! Usage v1, long-running operations, service-account key files and OAuth token replies.
//!
//! Input structs accept camelCase and snake_case names and integer or string enums (GAPIC
//! REST clients send `$alt=json;enum-encoding=int`); output is lowerCamelCase, no empties.

use crate::de::{self, null_default};
use crate::error::ApiError;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use keyplane_core::Restrictions;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub use crate::json::{parse_json_body, parse_json_body_or_default};

// === Type URLs for Operation `response` / `metadata` ===

pub const TYPE_KEY: &str = "type.googleapis.com/google.api.apikeys.v2.Key";
pub const TYPE_EMPTY: &str = "type.googleapis.com/google.protobuf.Empty";
pub const TYPE_PROJECT: &str = "type.googleapis.com/google.cloud.resourcemanager.v3.Project";
pub const TYPE_CREATE_PROJECT_METADATA: &str =
    "type.googleapis.com/google.cloud.resourcemanager.v3.CreateProjectMetadata";
pub const TYPE_UPDATE_PROJECT_METADATA: &str =
    "type.googleapis.com/google.cloud.resourcemanager.v3.UpdateProjectMetadata";
pub const TYPE_DELETE_PROJECT_METADATA: &str =
    "type.googleapis.com/google.cloud.resourcemanager.v3.DeleteProjectMetadata";
pub const TYPE_UNDELETE_PROJECT_METADATA: &str =
    "type.googleapis.com/google.cloud.resourcemanager.v3.UndeleteProjectMetadata";
pub const TYPE_MOVE_PROJECT_METADATA: &str =
    "type.googleapis.com/google.cloud.resourcemanager.v3.MoveProjectMetadata";
pub const TYPE_ENABLE_SERVICE_RESPONSE: &str =
    "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse";
pub const TYPE_DISABLE_SERVICE_RESPONSE: &str =
    "type.googleapis.com/google.api.serviceusage.v1.DisableServiceResponse";
pub const TYPE_BATCH_ENABLE_SERVICES_RESPONSE: &str =
    "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse";
pub const TYPE_SERVICEUSAGE_OPERATION_METADATA: &str =
    "type.googleapis.com/google.api.serviceusage.v1.OperationMetadata";

/// A `google.protobuf.Any` in JSON: `{"@type": type_url, ...fields of resource}` with
/// `@type` first. A non-object resource becomes `{"@type", "value"}` (well-known types).
pub fn any_json(type_url: &str, resource: Value) -> Value {
    let mut out = Map::new();
    out.insert("@type".to_owned(), Value::String(type_url.to_owned()));
    match resource {
        Value::Object(fields) => {
            for (k, v) in fields {
                if k != "@type" {
                    out.insert(k, v);
                }
            }
        }
        Value::Null => {}
        other => {
            out.insert("value".to_owned(), other);
        }
    }
    Value::Object(out)
}

/// Restrictions in either spelling (their message tree has no free-form maps).
fn restrictions_any_case<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Restrictions>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(de::camelize_keys(v))
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn is_false(v: &bool) -> bool {
    !*v
}

// === API Keys v2 ===

/// `google.api.apikeys.v2.Key`. The same struct reads CreateKey/UpdateKey bodies (only
/// `displayName`, `restrictions`, `annotations`, `serviceAccountEmail` are honoured there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    /// `projects/{NUMBER}/locations/global/keys/{KEY_ID}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(
        default,
        alias = "display_name",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    /// Only in `getKeyString`'s sibling and in the CreateKey operation response.
    #[serde(default, alias = "key_string", skip_serializing_if = "Option::is_none")]
    pub key_string: Option<String>,
    #[serde(
        default,
        alias = "create_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub create_time: Option<String>,
    #[serde(
        default,
        alias = "update_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub update_time: Option<String>,
    #[serde(
        default,
        alias = "delete_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub delete_time: Option<String>,
    /// User data: keys kept verbatim.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// `None` = not given (matters for update masks); written as `{}`-less when empty.
    #[serde(
        default,
        deserialize_with = "restrictions_any_case",
        skip_serializing_if = "restrictions_absent"
    )]
    pub restrictions: Option<Restrictions>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    #[serde(
        default,
        alias = "service_account_email",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account_email: Option<String>,
}

fn restrictions_absent(r: &Option<Restrictions>) -> bool {
    r.as_ref().is_none_or(|r| *r == Restrictions::default())
}

impl Key {
    /// The wire form of a stored key (no key string).
    pub fn from_api_key(k: &keyplane_core::ApiKey) -> Self {
        Key {
            name: k.name(),
            uid: k.uid.clone(),
            display_name: k.display_name.clone(),
            key_string: None,
            create_time: Some(keyplane_core::rfc3339(k.create_time)),
            update_time: Some(keyplane_core::rfc3339(k.update_time)),
            delete_time: k.delete_time.map(keyplane_core::rfc3339),
            annotations: k.annotations.clone(),
            restrictions: Some(k.restrictions.clone()),
            etag: k.etag.clone(),
            service_account_email: k.service_account_email.clone(),
        }
    }

    pub fn with_key_string(mut self, key_string: impl Into<String>) -> Self {
        self.key_string = Some(key_string.into());
        self
    }

    /// The key as an `Operation.response` (`@type` = [`TYPE_KEY`]).
    pub fn to_any(&self) -> Value {
        any_json(TYPE_KEY, serde_json::to_value(self).unwrap_or(Value::Null))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListKeysResponse {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub keys: Vec<Key>,
    #[serde(
        default,
        alias = "next_page_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetKeyStringResponse {
    #[serde(alias = "key_string")]
    pub key_string: String,
}

/// `GET /v2/keys:lookupKey` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LookupKeyResponse {
    /// `projects/{NUMBER}`.
    pub parent: String,
    /// Key name; empty (omitted) if purged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A field mask (`updateMask=displayName,restrictions`) as a list of paths whose first
/// segment is normalized to camelCase (`display_name` → `displayName`); later segments
/// are kept as sent. Empty entries and duplicates are dropped; `*` is kept.
pub fn parse_update_mask(mask: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for path in mask.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let normalized = match path.split_once('.') {
            Some((head, rest)) => format!("{}.{rest}", crate::case::to_camel(head)),
            None => crate::case::to_camel(path),
        };
        if !out.contains(&normalized) {
            out.push(normalized);
        }
    }
    out
}

// === Long-running operations ===

/// `google.longrunning.Operation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub name: String,
    /// `Any` JSON with `@type` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(
        default,
        deserialize_with = "de::bool_or_false",
        skip_serializing_if = "is_false"
    )]
    pub done: bool,
    /// `Any` JSON with `@type` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// `google.rpc.Status` with a gRPC integer code ([`ApiError::to_operation_error`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

impl Operation {
    /// A finished operation whose `response` is `resource_json` typed as `type_url`.
    pub fn done_with(name: impl Into<String>, type_url: &str, resource_json: Value) -> Self {
        Operation {
            name: name.into(),
            metadata: None,
            done: true,
            response: Some(any_json(type_url, resource_json)),
            error: None,
        }
    }

    /// A finished operation that failed with `err` (code written as the gRPC integer).
    pub fn failed(name: impl Into<String>, err: &ApiError) -> Self {
        Operation {
            name: name.into(),
            metadata: None,
            done: true,
            response: None,
            error: Some(err.to_operation_error()),
        }
    }

    /// An operation still running (`done` omitted).
    pub fn pending(name: impl Into<String>) -> Self {
        Operation {
            name: name.into(),
            ..Operation::default()
        }
    }

    /// Sets `metadata` to `metadata_json` typed as `type_url`.
    pub fn with_metadata(mut self, type_url: &str, metadata_json: Value) -> Self {
        self.metadata = Some(any_json(type_url, metadata_json));
        self
    }
}

// === Resource Manager v3 ===

/// `google.cloud.resourcemanager.v3.Project` (also the CreateProject/UpdateProject body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// `projects/{NUMBER}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `organizations/{id}` or `folders/{id}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent: String,
    #[serde(
        default,
        alias = "project_id",
        skip_serializing_if = "String::is_empty"
    )]
    pub project_id: String,
    /// `ACTIVE`, `DELETE_REQUESTED` (integer enums accepted on input).
    #[serde(
        default,
        deserialize_with = "de::project_state::req",
        skip_serializing_if = "String::is_empty"
    )]
    pub state: String,
    #[serde(
        default,
        alias = "display_name",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    #[serde(
        default,
        alias = "create_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub create_time: Option<String>,
    #[serde(
        default,
        alias = "update_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub update_time: Option<String>,
    #[serde(
        default,
        alias = "delete_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub delete_time: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    /// User data: keys kept verbatim.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

impl Project {
    pub fn from_model(p: &keyplane_core::Project) -> Self {
        Project {
            name: format!("projects/{}", p.number),
            parent: p.parent.clone(),
            project_id: p.project_id.clone(),
            state: p.state.as_str().to_owned(),
            display_name: p.display_name.clone(),
            create_time: Some(keyplane_core::rfc3339(p.create_time)),
            update_time: Some(keyplane_core::rfc3339(p.update_time)),
            delete_time: p.delete_time.map(keyplane_core::rfc3339),
            etag: p.etag.clone(),
            labels: p.labels.clone(),
        }
    }

    /// The project as an `Operation.response` (`@type` = [`TYPE_PROJECT`]).
    pub fn to_any(&self) -> Value {
        any_json(
            TYPE_PROJECT,
            serde_json::to_value(self).unwrap_or(Value::Null),
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListProjectsResponse {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub projects: Vec<Project>,
    #[serde(
        default,
        alias = "next_page_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_page_token: Option<String>,
}

/// `POST /v3/projects/{x}:move` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveProjectRequest {
    #[serde(default, alias = "destination_parent")]
    pub destination_parent: String,
}

// === Service Usage v1 ===

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    /// `generativelanguage.googleapis.com`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
}

/// `google.api.serviceusage.v1.Service`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `projects/{NUMBER}/services/{service}`.
    pub name: String,
    /// `projects/{NUMBER}`.
    pub parent: String,
    /// `ENABLED`, `DISABLED`.
    #[serde(default, deserialize_with = "de::service_state::req")]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ServiceConfig>,
}

impl Service {
    pub fn new(project_number: i64, service: &str, title: &str, enabled: bool) -> Self {
        Service {
            name: format!("projects/{project_number}/services/{service}"),
            parent: format!("projects/{project_number}"),
            state: if enabled { "ENABLED" } else { "DISABLED" }.to_owned(),
            config: Some(ServiceConfig {
                name: service.to_owned(),
                title: title.to_owned(),
            }),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListServicesResponse {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services: Vec<Service>,
    #[serde(
        default,
        alias = "next_page_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_page_token: Option<String>,
}

/// `EnableServiceResponse` / `DisableServiceResponse` (same shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnableServiceResponse {
    pub service: Service,
}

/// `:disable` body; `checkIfServiceHasUsage` arrives as `2` from GAPIC, `"CHECK"` from others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisableServiceRequest {
    #[serde(
        default,
        alias = "disable_dependent_services",
        deserialize_with = "de::bool_or_false"
    )]
    pub disable_dependent_services: bool,
    /// `SKIP`, `CHECK`.
    #[serde(
        default,
        alias = "check_if_service_has_usage",
        deserialize_with = "de::check_if_service_has_usage::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub check_if_service_has_usage: Option<String>,
}

/// `:batchEnable` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEnableServicesRequest {
    #[serde(default, alias = "service_ids", deserialize_with = "null_default")]
    pub service_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEnableServicesFailure {
    #[serde(alias = "service_id")]
    pub service_id: String,
    #[serde(alias = "error_message")]
    pub error_message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEnableServicesResponse {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services: Vec<Service>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub failures: Vec<BatchEnableServicesFailure>,
}

/// Service Usage `OperationMetadata` (`{"resourceNames": [...]}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUsageOperationMetadata {
    #[serde(
        default,
        alias = "resource_names",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resource_names: Vec<String>,
}

// === Service-account key files and OAuth ===

/// Google's JSON key file for a service account, field order as real files have it.
/// (Its names are snake_case on the wire.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountKeyFile {
    /// `service_account`.
    #[serde(rename = "type")]
    pub kind: String,
    pub project_id: String,
    /// 40 hex characters (the key id and the JWT `kid`).
    pub private_key_id: String,
    /// PKCS#8 PEM.
    pub private_key: String,
    pub client_email: String,
    pub client_id: String,
    pub auth_uri: String,
    pub token_uri: String,
    pub auth_provider_x509_cert_url: String,
    pub client_x509_cert_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub universe_domain: String,
}

impl ServiceAccountKeyFile {
    /// A key file with Google's fixed URLs, `token_uri` pointing at `token_uri`.
    pub fn new(
        project_id: &str,
        private_key_id: &str,
        private_key_pem: &str,
        client_email: &str,
        client_id: &str,
        token_uri: &str,
        universe_domain: &str,
    ) -> Self {
        let email_enc: String = client_email
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        ServiceAccountKeyFile {
            kind: "service_account".to_owned(),
            project_id: project_id.to_owned(),
            private_key_id: private_key_id.to_owned(),
            private_key: private_key_pem.to_owned(),
            client_email: client_email.to_owned(),
            client_id: client_id.to_owned(),
            auth_uri: "https://accounts.google.com/o/oauth2/auth".to_owned(),
            token_uri: token_uri.to_owned(),
            auth_provider_x509_cert_url: "https://www.googleapis.com/oauth2/v1/certs".to_owned(),
            client_x509_cert_url: format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{email_enc}"
            ),
            universe_domain: universe_domain.to_owned(),
        }
    }
}

/// `/token` success: `{"access_token", "expires_in", "token_type": "Bearer"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default, deserialize_with = "de::i64_or_zero")]
    pub expires_in: i64,
    #[serde(default)]
    pub token_type: String,
}

impl TokenResponse {
    pub fn bearer(access_token: impl Into<String>, expires_in: i64) -> Self {
        TokenResponse {
            access_token: access_token.into(),
            expires_in,
            token_type: "Bearer".to_owned(),
        }
    }
}

/// `/token` failure: `{"error", "error_description"}` — the OAuth endpoint's error type.
/// Status: `invalid_client` 401, `server_error` 500, `temporarily_unavailable` 503,
/// anything else 400.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}: {error_description}")]
pub struct OAuthError {
    pub error: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_description: String,
}

impl OAuthError {
    pub fn new(error: &str, description: impl Into<String>) -> Self {
        OAuthError {
            error: error.to_owned(),
            error_description: description.into(),
        }
    }

    /// 400 `invalid_grant` (bad signature, expired assertion, unknown account, …).
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    /// 400 `unsupported_grant_type`.
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new("unsupported_grant_type", description)
    }

    /// 500 `server_error` (retried by google-auth); internal detail never included.
    pub fn server_error() -> Self {
        Self::new("server_error", "Internal error.")
    }

    pub fn http_status(&self) -> StatusCode {
        match self.error.as_str() {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" | "internal_failure" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let body = serde_json::to_vec_pretty(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::error::JSON_UTF8),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
