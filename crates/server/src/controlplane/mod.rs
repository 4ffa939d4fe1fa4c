//! Google's control-plane APIs on the wire: API Keys v2, Resource Manager v3, Service
//! Usage v1 and Org Policy v2 (and IAM). One module per API; each exports `router()`.

pub mod apikeys;
pub mod iam;
pub mod iampolicy;
pub mod operations;
pub mod orgpolicy;
pub mod projects;
pub mod quotas;
pub mod serviceusage;
pub mod users;

use keyplane_store::StoreError;
use keyplane_wire::ApiError;
use serde::Deserialize;

/// Store failures as clients see them: internal errors never show their cause.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("Requested entity was not found."),
        StoreError::AlreadyExists(what) => {
            ApiError::already_exists(format!("Requested entity already exists: {what}."))
        }
        StoreError::EtagMismatch => ApiError::aborted(
            "The etag does not match the current version of the resource; read it again and retry.",
        ),
        StoreError::InvalidArgument(msg) => ApiError::invalid_argument(msg),
        StoreError::Internal(cause) => ApiError::internal_from(cause),
    }
}

/// 403 for a resource the caller may not use, phrased as Google does so that a caller
/// cannot learn whether it exists.
pub fn denied(permission: &str, resource: &str) -> ApiError {
    ApiError::iam_permission_denied(permission, resource)
}

// A project the caller names is found and authorized in one step by
// `crate::authz::project` (unknown and forbidden projects answer alike).

/// System parameters every Google API accepts, plus the list parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    #[serde(default, alias = "page_size")]
    pub page_size: Option<String>,
    #[serde(default, alias = "page_token")]
    pub page_token: Option<String>,
    #[serde(default, alias = "show_deleted")]
    pub show_deleted: Option<String>,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub parent: Option<String>,
}

impl ListParams {
    pub fn page(&self) -> Result<keyplane_store::PageRequest, ApiError> {
        let page_size = match self.page_size.as_deref().filter(|s| !s.is_empty()) {
            None => 0,
            Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request_fields(vec![(
                    "page_size",
                    format!("Invalid value \"{s}\": page_size must be a non-negative integer."),
                )])
            })?,
        };
        Ok(keyplane_store::PageRequest {
            page_size: page_size.min(1000) as u32,
            page_token: self.page_token.clone().filter(|t| !t.is_empty()),
        })
    }

    pub fn show_deleted(&self) -> Result<bool, ApiError> {
        parse_bool("show_deleted", self.show_deleted.as_deref())
    }
}

/// A query-string boolean as Google's front end reads it.
pub fn parse_bool(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request_fields(vec![(
            name.to_owned(),
            format!("Invalid value \"{other}\" for a boolean."),
        )])),
    }
}

/// Splits the part of a path after a collection into segments, separating a trailing
/// custom verb (`keys/abc:undelete` -> (["keys","abc"], Some("undelete"))). A `%3A`
/// written by odd clients counts as `:`.
pub fn split_verb(rest: &str) -> (Vec<String>, Option<String>) {
    let decoded = rest.replace("%3A", ":").replace("%3a", ":");
    let (path, verb) = match decoded.rsplit_once('/') {
        Some((head, last)) => match last.split_once(':') {
            Some((name, verb)) => (format!("{head}/{name}"), Some(verb.to_owned())),
            None => (decoded.clone(), None),
        },
        None => match decoded.split_once(':') {
            Some((name, verb)) => (name.to_owned(), Some(verb.to_owned())),
            None => (decoded.clone(), None),
        },
    };
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            urlencoding::decode(s)
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| s.to_owned())
        })
        .collect();
    (segments, verb)
}

/// The request path after `/{version}/projects/` (percent-decoding is left to
/// [`split_verb`]). Routes are registered with explicit segments so that several APIs can
/// share `/v1/projects/...` and `/v2/projects/...`; handlers then parse the rest.
pub struct ProjectsRest(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ProjectsRest {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        let path = parts.uri.path();
        let rest = path
            .trim_start_matches('/')
            .split_once('/')
            .and_then(|(_, after_version)| after_version.strip_prefix("projects/"))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "The requested URL {path} was not found on this server."
                ))
            })?;
        Ok(ProjectsRest(rest.to_owned()))
    }
}

/// An opaque etag for a new version of a resource.
pub fn new_etag() -> String {
    use base64::Engine;
    let mut raw = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut raw);
    format!(
        "W/\"{}\"",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_split_from_the_last_segment() {
        assert_eq!(
            split_verb("p/locations/global/keys/abc:undelete"),
            (
                vec![
                    "p".into(),
                    "locations".into(),
                    "global".into(),
                    "keys".into(),
                    "abc".into()
                ],
                Some("undelete".into())
            )
        );
        assert_eq!(
            split_verb("p/services/x.googleapis.com%3Aenable").1,
            Some("enable".into())
        );
        assert_eq!(split_verb("my-proj"), (vec!["my-proj".to_string()], None));
        assert_eq!(
            split_verb("123:undelete"),
            (vec!["123".to_string()], Some("undelete".into()))
        );
    }
}
