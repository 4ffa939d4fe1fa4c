//! IAM Admin v1 (`iam.googleapis.com`) in Google's JSON: service accounts, their keys and
//! roles, with the request bodies of their methods.
//!
//! Requests accept camelCase and snake_case names and enums as names or numbers (GAPIC
//! REST clients send numbers, discovery clients and gcloud send names). Responses are
//! lowerCamelCase without empty fields. `bytes` fields of the protos (`etag`,
//! `privateKeyData`, `publicKeyData`) are standard base64 strings, as proto3 JSON has them.

use crate::de::{self, null_default};
use serde::{Deserialize, Serialize};

fn is_false(v: &bool) -> bool {
    !*v
}

/// Builds a reader module for a proto enum from `crate::de`'s generic reader.
macro_rules! proto_enum_reader {
    ($(#[$m:meta])* $name:ident, [$($v:literal),* $(,)?]) => {
        $(#[$m])*
        pub(crate) mod $name {
            use serde::de::Error as _;
            use serde::{Deserialize, Deserializer};
            use serde_json::Value;

            /// Names, indexed by enum number.
            pub const NAMES: &[&str] = &[$($v),*];

            pub(crate) fn req<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
                match Option::<Value>::deserialize(d)? {
                    None => Ok(String::new()),
                    Some(v) => Ok(crate::de::enum_from_value(v, NAMES)
                        .map_err(D::Error::custom)?
                        .unwrap_or_default()),
                }
            }
        }
    };
}

proto_enum_reader!(
    /// `google.iam.admin.v1.ServiceAccountPrivateKeyType`.
    private_key_type,
    ["TYPE_UNSPECIFIED", "TYPE_PKCS12_FILE", "TYPE_GOOGLE_CREDENTIALS_FILE"]
);
proto_enum_reader!(
    /// `google.iam.admin.v1.ServiceAccountKeyAlgorithm`.
    key_algorithm,
    ["KEY_ALG_UNSPECIFIED", "KEY_ALG_RSA_1024", "KEY_ALG_RSA_2048"]
);

/// Names of `google.iam.admin.v1.ServiceAccountPublicKeyType`, by number.
pub const PUBLIC_KEY_TYPES: &[&str] = &["TYPE_NONE", "TYPE_X509_PEM_FILE", "TYPE_RAW_PUBLIC_KEY"];
/// Names of `ListServiceAccountKeysRequest.KeyType`, by number.
pub const KEY_TYPES: &[&str] = &["KEY_TYPE_UNSPECIFIED", "USER_MANAGED", "SYSTEM_MANAGED"];
/// Names of `google.iam.admin.v1.RoleView`, by number.
pub const ROLE_VIEWS: &[&str] = &["BASIC", "FULL"];

/// An enum query parameter (`publicKeyType=TYPE_X509_PEM_FILE` or `publicKeyType=1`) as
/// its name; `None` for a number out of range or a name not in `names`.
pub fn enum_param(value: &str, names: &[&str]) -> Option<String> {
    let v = value.trim();
    if let Ok(i) = v.parse::<usize>() {
        return names.get(i).map(|s| (*s).to_owned());
    }
    names.iter().find(|n| **n == v).map(|s| (*s).to_owned())
}

// === Service accounts ===

/// `google.iam.admin.v1.ServiceAccount`. Also read from request bodies (create, patch,
/// update), where only `displayName` and `description` are honoured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    /// `projects/{PROJECT_ID}/serviceAccounts/{EMAIL}`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        alias = "project_id",
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub project_id: String,
    #[serde(
        default,
        alias = "unique_id",
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub unique_id: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub email: String,
    /// `None` = not given (matters for update masks).
    #[serde(
        default,
        alias = "display_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Base64 (a `bytes` field); deprecated by Google, kept opaque.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub etag: String,
    #[serde(
        default,
        alias = "oauth2_client_id",
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub oauth2_client_id: String,
    /// Output only; omitted when false.
    #[serde(
        default,
        deserialize_with = "de::bool_or_false",
        skip_serializing_if = "is_false"
    )]
    pub disabled: bool,
}

/// `POST /v1/projects/{p}/serviceAccounts` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateServiceAccountRequest {
    #[serde(default, alias = "account_id", deserialize_with = "null_default")]
    pub account_id: String,
    #[serde(
        default,
        alias = "service_account",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account: Option<ServiceAccount>,
    /// `projects/{p}`: the path's, repeated (gRPC-transcoded clients may send it).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
}

/// `PATCH /v1/projects/{p}/serviceAccounts/{sa}` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchServiceAccountRequest {
    #[serde(default, alias = "service_account")]
    pub service_account: Option<ServiceAccount>,
    /// Comma-separated field mask (`displayName,description`).
    #[serde(
        default,
        alias = "update_mask",
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub update_mask: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListServiceAccountsResponse {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub accounts: Vec<ServiceAccount>,
    #[serde(
        default,
        alias = "next_page_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_page_token: Option<String>,
}

/// The empty bodies of `:disable`, `:enable` and `:undelete` (accounts) and of keys'
/// `:disable` / `:enable`; `name` may be repeated from the path. Key disable requests in
/// newer protos carry a reason and a message, accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyRequest {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        alias = "service_account_key_disable_reason",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account_key_disable_reason: Option<serde_json::Value>,
    #[serde(
        default,
        alias = "extended_status_message",
        skip_serializing_if = "Option::is_none"
    )]
    pub extended_status_message: Option<String>,
}

/// `:undelete` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UndeleteServiceAccountResponse {
    #[serde(
        default,
        alias = "restored_account",
        skip_serializing_if = "Option::is_none"
    )]
    pub restored_account: Option<ServiceAccount>,
}

// === Service-account keys ===

/// `google.iam.admin.v1.ServiceAccountKey`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountKey {
    /// `projects/{PROJECT_ID}/serviceAccounts/{EMAIL}/keys/{KEY_ID}`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Only in the create answer.
    #[serde(
        default,
        alias = "private_key_type",
        skip_serializing_if = "String::is_empty"
    )]
    pub private_key_type: String,
    #[serde(
        default,
        alias = "key_algorithm",
        skip_serializing_if = "String::is_empty"
    )]
    pub key_algorithm: String,
    /// Standard base64 of the JSON key file; only in the create answer.
    #[serde(
        default,
        alias = "private_key_data",
        skip_serializing_if = "String::is_empty"
    )]
    pub private_key_data: String,
    /// Standard base64 of the public key in the requested `publicKeyType`.
    #[serde(
        default,
        alias = "public_key_data",
        skip_serializing_if = "String::is_empty"
    )]
    pub public_key_data: String,
    #[serde(
        default,
        alias = "valid_after_time",
        skip_serializing_if = "String::is_empty"
    )]
    pub valid_after_time: String,
    #[serde(
        default,
        alias = "valid_before_time",
        skip_serializing_if = "String::is_empty"
    )]
    pub valid_before_time: String,
    #[serde(
        default,
        alias = "key_origin",
        skip_serializing_if = "String::is_empty"
    )]
    pub key_origin: String,
    #[serde(default, alias = "key_type", skip_serializing_if = "String::is_empty")]
    pub key_type: String,
    #[serde(
        default,
        deserialize_with = "de::bool_or_false",
        skip_serializing_if = "is_false"
    )]
    pub disabled: bool,
}

/// `POST .../serviceAccounts/{sa}/keys` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateServiceAccountKeyRequest {
    #[serde(
        default,
        alias = "private_key_type",
        deserialize_with = "private_key_type::req",
        skip_serializing_if = "String::is_empty"
    )]
    pub private_key_type: String,
    #[serde(
        default,
        alias = "key_algorithm",
        deserialize_with = "key_algorithm::req",
        skip_serializing_if = "String::is_empty"
    )]
    pub key_algorithm: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListServiceAccountKeysResponse {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub keys: Vec<ServiceAccountKey>,
}

// === Roles ===

/// `google.iam.admin.v1.Role`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// `roles/{ROLE}`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub title: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// Only in `get` and in `list` with `view=FULL`.
    #[serde(
        default,
        alias = "included_permissions",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub included_permissions: Vec<String>,
    /// `GA`, `BETA`, ... (launch stage).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub stage: String,
    /// Base64 (a `bytes` field).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub etag: String,
    #[serde(
        default,
        deserialize_with = "de::bool_or_false",
        skip_serializing_if = "is_false"
    )]
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRolesResponse {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub roles: Vec<Role>,
    #[serde(
        default,
        alias = "next_page_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_page_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json_body;

    #[test]
    fn enums_arrive_as_names_or_numbers() {
        let r: CreateServiceAccountKeyRequest =
            parse_json_body(br#"{"privateKeyType":2,"keyAlgorithm":"KEY_ALG_RSA_2048"}"#).unwrap();
        assert_eq!(r.private_key_type, "TYPE_GOOGLE_CREDENTIALS_FILE");
        assert_eq!(r.key_algorithm, "KEY_ALG_RSA_2048");
        let r: CreateServiceAccountKeyRequest = parse_json_body(b"{}").unwrap();
        assert_eq!(r.private_key_type, "");
        assert!(
            parse_json_body::<CreateServiceAccountKeyRequest>(br#"{"keyAlgorithm":9}"#).is_err()
        );
        assert_eq!(
            enum_param("1", PUBLIC_KEY_TYPES).as_deref(),
            Some("TYPE_X509_PEM_FILE")
        );
        assert_eq!(
            enum_param("TYPE_RAW_PUBLIC_KEY", PUBLIC_KEY_TYPES).as_deref(),
            Some("TYPE_RAW_PUBLIC_KEY")
        );
        assert_eq!(enum_param("7", PUBLIC_KEY_TYPES), None);
        assert_eq!(enum_param("x", PUBLIC_KEY_TYPES), None);
    }

    #[test]
    fn create_bodies_in_either_case_and_unknown_fields_refused() {
        let r: CreateServiceAccountRequest = parse_json_body(
            br#"{"account_id":"api-caller","service_account":{"display_name":"A","description":"d"}}"#,
        )
        .unwrap();
        assert_eq!(r.account_id, "api-caller");
        let sa = r.service_account.unwrap();
        assert_eq!(sa.display_name.as_deref(), Some("A"));
        assert_eq!(sa.description.as_deref(), Some("d"));
        let e = parse_json_body::<CreateServiceAccountRequest>(br#"{"accountId":"a","bogus":1}"#)
            .unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("bogus"), "{}", e.message);
    }

    #[test]
    fn output_omits_empty_and_false_fields() {
        let sa = ServiceAccount {
            name: "projects/p/serviceAccounts/a@p.iam.gserviceaccount.com".into(),
            display_name: Some("A".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&sa).unwrap(),
            serde_json::json!({"name": "projects/p/serviceAccounts/a@p.iam.gserviceaccount.com", "displayName": "A"})
        );
    }
}
