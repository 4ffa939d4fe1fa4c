//! The records Keyplane keeps. Plain data: the store persists them, the server maps them
//! to Google's wire shapes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// `organizations/{number}`: one per installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub number: i64,
    pub display_name: String,
    pub create_time: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectState {
    Active,
    DeleteRequested,
}

impl ProjectState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectState::Active => "ACTIVE",
            ProjectState::DeleteRequested => "DELETE_REQUESTED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(ProjectState::Active),
            "DELETE_REQUESTED" => Some(ProjectState::DeleteRequested),
            _ => None,
        }
    }
}

/// `projects/{number}`, also known by its `projectId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub number: i64,
    pub project_id: String,
    pub display_name: String,
    /// `organizations/{number}`
    pub parent: String,
    pub state: ProjectState,
    pub labels: BTreeMap<String, String>,
    /// Billing tier: `free`, `tier-1`, `tier-2`, `tier-3`.
    pub tier: String,
    /// Shown in the studio (created there, or imported into it).
    pub studio_visible: bool,
    /// The principal that created it (`user:…` or `serviceAccount:…`).
    pub created_by: String,
    pub create_time: OffsetDateTime,
    pub update_time: OffsetDateTime,
    pub delete_time: Option<OffsetDateTime>,
    pub etag: String,
}

/// A service's state in one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub project_number: i64,
    pub service: String,
    pub enabled: bool,
    pub update_time: OffsetDateTime,
}

/// `projects/{projectId}/serviceAccounts/{email}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub email: String,
    pub unique_id: String,
    pub project_number: i64,
    pub project_id: String,
    pub display_name: String,
    pub description: String,
    pub disabled: bool,
    pub create_time: OffsetDateTime,
    pub etag: String,
}

/// A service-account key. The server keeps only the public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountKey {
    /// 40 hex characters; the `private_key_id` of the key file and the JWT `kid`.
    pub key_id: String,
    pub service_account_email: String,
    /// PKCS#1 or SPKI PEM of the RSA public key.
    pub public_key_pem: String,
    pub disabled: bool,
    pub valid_after: OffsetDateTime,
    pub valid_before: OffsetDateTime,
    pub create_time: OffsetDateTime,
}

/// Restrictions of an API key, in the shape of API Keys v2's `Restrictions`
/// (serde names are Google's JSON names, so the store can keep them as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restrictions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_key_restrictions: Option<BrowserKeyRestrictions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_key_restrictions: Option<ServerKeyRestrictions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub android_key_restrictions: Option<AndroidKeyRestrictions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ios_key_restrictions: Option<IosKeyRestrictions>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_targets: Vec<ApiTarget>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserKeyRestrictions {
    #[serde(default)]
    pub allowed_referrers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerKeyRestrictions {
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AndroidKeyRestrictions {
    #[serde(default)]
    pub allowed_applications: Vec<AndroidApplication>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AndroidApplication {
    #[serde(default)]
    pub sha1_fingerprint: String,
    #[serde(default)]
    pub package_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IosKeyRestrictions {
    #[serde(default)]
    pub allowed_bundle_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTarget {
    pub service: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// `projects/{number}/locations/global/keys/{keyId}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub project_number: i64,
    pub key_id: String,
    pub uid: String,
    pub display_name: String,
    /// HMAC-SHA256 of the key string under the server secret.
    pub lookup_hash: Vec<u8>,
    /// AES-256-GCM ciphertext of the key string under the server secret.
    pub ciphertext: Vec<u8>,
    pub last4: String,
    pub restrictions: Restrictions,
    pub annotations: BTreeMap<String, String>,
    pub service_account_email: Option<String>,
    pub create_time: OffsetDateTime,
    pub update_time: OffsetDateTime,
    pub delete_time: Option<OffsetDateTime>,
    pub etag: String,
}

impl ApiKey {
    pub fn name(&self) -> String {
        format!(
            "projects/{}/locations/global/keys/{}",
            self.project_number, self.key_id
        )
    }
}

/// An OAuth access token minted at `/token`; stored only as an HMAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token_hash: Vec<u8>,
    /// `serviceAccount:{email}` or `user:{email}`.
    pub principal: String,
    pub scope: String,
    pub expire_time: OffsetDateTime,
}

/// An ephemeral token (`auth_tokens/{id}`) minted with an API key at `/v1alpha/auth_tokens`;
/// stored only as an HMAC of its name. Each use decrements `uses_left`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralToken {
    pub token_hash: Vec<u8>,
    /// The lookup hash of the key that minted it.
    pub key_hash: Vec<u8>,
    pub project_number: i64,
    pub uses_left: i64,
    pub expire_time: OffsetDateTime,
    pub new_session_expire_time: OffsetDateTime,
    /// The `bidiGenerateContentSetup` constraints as JSON text (`None`: unconstrained).
    pub setup: Option<String>,
    /// The comma-separated `fieldMask` as sent (`None`: every field set in `setup` is locked).
    pub field_mask: Option<String>,
    pub create_time: OffsetDateTime,
}

/// A person who signs in (`user:{email}`). The password is kept only as an Argon2id PHC
/// string; the email is stored lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub disabled: bool,
    pub create_time: OffsetDateTime,
    pub update_time: OffsetDateTime,
}

/// One audited control-plane mutation. Holds a path (never a query string or a body), so
/// it never holds a key string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub time: OffsetDateTime,
    /// `serviceAccount:{email}`, `user:{email}`, or empty when the caller was not identified.
    pub principal: String,
    /// HTTP method (`POST`, `PATCH`, `PUT`, `DELETE`).
    pub method: String,
    /// The request path (the resource name and verb), without the query string.
    pub resource: String,
    /// The project the path names (id or number as written), if any.
    pub project: Option<String>,
    /// `allowed` (2xx), `denied` (401, 403) or `failed`.
    pub result: String,
    pub status: u16,
}

/// A finished long-running operation, kept so `operations.get` can answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOperation {
    pub name: String,
    /// The whole `google.longrunning.Operation` JSON. Never holds a key string.
    pub body: String,
    pub create_time: OffsetDateTime,
}

/// Current time, truncated to microseconds (what every store keeps).
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .expect("valid nanosecond")
}

/// RFC 3339 with a `Z`, as Google's JSON timestamps are written.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("UTC timestamps always format")
}
