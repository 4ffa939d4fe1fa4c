//! The data plane: the Gemini API (`/{v}/models…`) and the Vertex AI express path
//! (`/{v}/publishers/google/models/{model}:verb`), on Google's wire.
//!
//! Request path, in DESIGN.md's order ([`access::authorize`]): credential (x-goog-api-key,
//! else `?key=`, else a Bearer token) -> key lookup (API_KEY_INVALID) -> the called service
//! enabled in the key's project (SERVICE_DISABLED) -> the key's restrictions: API targets,
//! then server IPs / browser referrers / Android apps / iOS apps (API_KEY_*_BLOCKED) ->
//! identity: a service-account-bound key on aiplatform, or a service-account Bearer token,
//! needs the method's IAM permission on the project (IAM_PERMISSION_DENIED) ->
//! model routing (404) -> quota (429, [`admit`]) -> body parsing and validation (400) ->
//! backend ([`generate`]). Every call past authorization is metered ([`crate::meter`]).
//! An ephemeral token (`auth_tokens/…`, v1alpha only) replaces the key checks with its
//! own: constraints, then one use spent atomically in the store.
//!
//! Modules: `access` (who may call), `ephemeral` (`POST /v1alpha/auth_tokens` and token
//! checks), `gemini` and `vertex` (the two URL families), `generate` (what both answer
//! with: generateContent, the stream, countTokens), `live` (the Live API WebSocket).

mod access;
mod ephemeral;
mod gemini;
mod generate;
mod live;
mod vertex;

pub(crate) use access::refuses_key;
pub use access::{DataCaller, DataRequest};
pub(crate) use gemini::post_model_decoded as post_gemini_call;
pub use generate::backend_error;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{Method, Uri};
use axum::routing::get;
use axum::Router;
use keyplane_wire::ApiError;
use std::collections::HashMap;

use crate::app::AppState;
use crate::meter::Ticket;

/// Path versions served; Google's SDKs use all of them depending on their release.
pub(crate) const VERSIONS: &[&str] = &["v1", "v1beta", "v1alpha", "v1beta1"];

pub fn router() -> Router<AppState> {
    // Ephemeral tokens are minted on v1alpha only (v1beta answers 404, as Google's).
    let mut r = Router::new()
        .route(
            "/v1alpha/auth_tokens",
            axum::routing::post(ephemeral::create).fallback(no_such_method),
        )
        // The Live API (WebSocket): `/ws/google.ai.generativelanguage.{v}.GenerativeService.Bidi…`.
        .route("/ws/{rpc}", get(live::connect).fallback(no_such_method));
    for v in VERSIONS {
        r = r
            .route(
                &format!("/{v}/models"),
                get(gemini::list_models).fallback(no_such_method),
            )
            .route(
                &format!("/{v}/models/{{*rest}}"),
                get(gemini::get_model)
                    .post(gemini::post_model)
                    .fallback(no_such_method),
            )
            .route(
                &format!(
                    "/{v}/projects/{{project}}/locations/{{location}}/publishers/{{publisher}}/models/{{*rest}}"
                ),
                axum::routing::post(vertex::post_project_model).fallback(no_such_method),
            )
            .route(
                &format!("/{v}/publishers/{{publisher}}/models/{{*rest}}"),
                get(vertex::get_model)
                    .post(vertex::post_model)
                    .fallback(no_such_method),
            );
    }
    r
}

/// Any other HTTP method on a data-plane path: Google's 404, as a google.rpc.Status (never
/// axum's empty 405).
async fn no_such_method(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "The requested URL {} was not found on this server ({method} is not served here).",
        uri.path()
    ))
}

/// A path segment that does not decode (invalid percent-encoding or UTF-8) is a URL this
/// server does not have: a google.rpc.Status 404, not axum's plain-text rejection.
fn path_or_404<T>(path: Result<Path<T>, PathRejection>, uri_path: &str) -> Result<T, ApiError> {
    path.map(|Path(p)| p).map_err(|_| url_not_found(uri_path))
}

/// Google's 404 for a URL this server does not have.
pub(crate) fn url_not_found(uri_path: &str) -> ApiError {
    ApiError::not_found(format!(
        "The requested URL {uri_path} was not found on this server."
    ))
}

/// Query parameters the data plane reads (the rest, e.g. `$alt`, `prettyPrint`, is ignored).
#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or_default()).unwrap_or_default();
        Params(pairs.into_iter().collect())
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// The API version a path starts with (`/v1beta/...` -> `v1beta`).
fn api_version(uri_path: &str) -> &'static str {
    let first = uri_path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    VERSIONS
        .iter()
        .find(|v| **v == first)
        .copied()
        .unwrap_or("v1beta")
}

/// `models/{id}` or `{id}`, with an optional `:method` (`%3A` accepted for the colon).
fn split_model(rest: &str) -> (String, Option<String>) {
    let decoded;
    let rest = if rest.contains("%3") {
        decoded = rest.replace("%3A", ":").replace("%3a", ":");
        decoded.as_str()
    } else {
        rest
    };
    let rest = rest.strip_prefix("models/").unwrap_or(rest);
    match rest.split_once(':') {
        Some((id, method)) => (id.to_owned(), Some(method.to_owned())),
        None => (rest.to_owned(), None),
    }
}

/// Opens the meter's ticket of an authorized call of `model` (as the caller named it).
fn open_ticket(state: &AppState, caller: &DataCaller, model: &str, method: &str) -> Ticket {
    let key_id = caller.key.as_ref().map_or("", |k| k.key_id.as_str());
    Ticket::new(state, caller.project_number, key_id, model, method)
}

/// The quota step: generation calls count against the project's per-model limits (by its
/// tier); countTokens does not. A call admitted here and then not answered with success
/// (its body refused, the backend failed) is given back when its ticket closes. Over a limit: 429 RESOURCE_EXHAUSTED with QuotaFailure and
/// RetryInfo, as Google answers.
fn admit(state: &AppState, ticket: &mut Ticket) -> Result<(), ApiError> {
    if !matches!(
        ticket.method(),
        "generateContent" | "streamGenerateContent" | "bidiGenerateContent"
    ) {
        return Ok(());
    }
    let (project, model) = (ticket.project_number(), ticket.model());
    let now = crate::meter::now_ms();
    match state.quotas.admit(project, model, now) {
        Ok(()) => {
            ticket.admitted_ms = Some(now);
            Ok(())
        }
        Err(denied) => Err(quota_error(model, &denied)),
    }
}

/// The 429 of a refused call.
pub fn quota_error(model: &str, denied: &keyplane_auth::quota::QuotaDenied) -> ApiError {
    let e = &denied.exceeded;
    let violation = keyplane_wire::error::QuotaViolation {
        quota_metric: e.metric.quota_metric(denied.tier),
        quota_id: e.metric.quota_id(denied.tier),
        quota_dimensions: [
            ("location".to_owned(), "global".to_owned()),
            ("model".to_owned(), model.to_owned()),
        ]
        .into_iter()
        .collect(),
        quota_value: Some(e.limit.to_string()),
        ..Default::default()
    };
    let retry =
        std::time::Duration::from_secs(keyplane_core::quota::retry_after_secs(e.retry_after_ms));
    ApiError::resource_exhausted_quota(violation, retry)
}

/// `generateContent` -> `GenerateContent`, written where it is formatted (no string of its
/// own).
struct UpperCamel<'a>(&'a str);

impl std::fmt::Display for UpperCamel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut chars = self.0.chars();
        match chars.next() {
            Some(c) => write!(f, "{}{}", c.to_ascii_uppercase(), chars.as_str()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::access::Target;
    use super::*;

    #[test]
    fn a_model_path_splits_into_id_and_verb() {
        let s = |id: &str, verb: Option<&str>| (id.to_owned(), verb.map(str::to_owned));
        assert_eq!(
            split_model("gemini-2.5-flash:generateContent"),
            s("gemini-2.5-flash", Some("generateContent"))
        );
        assert_eq!(
            split_model("models/gemini:countTokens"),
            s("gemini", Some("countTokens"))
        );
        assert_eq!(
            split_model("gemini%3AgenerateContent"),
            s("gemini", Some("generateContent"))
        );
        assert_eq!(
            split_model("gemini%3agenerateContent"),
            s("gemini", Some("generateContent"))
        );
        assert_eq!(split_model("gemini%2Fx:a:b"), s("gemini%2Fx", Some("a:b")));
        assert_eq!(split_model("gemini"), s("gemini", None));
        assert_eq!(split_model("gemini:"), s("gemini", Some("")));
    }

    #[test]
    fn a_verb_names_its_rpc() {
        for (verb, rpc) in [
            ("generateContent", "GenerativeService.GenerateContent"),
            (
                "streamGenerateContent",
                "GenerativeService.StreamGenerateContent",
            ),
            ("predict", "PredictionService.Predict"),
            ("", "GenerativeService."),
        ] {
            let t = Target::gemini_verb("v1beta", verb);
            assert_eq!(
                t.method,
                format!("google.ai.generativelanguage.v1beta.{rpc}")
            );
            assert_eq!(t.service, keyplane_core::services::GENERATIVE_LANGUAGE);
        }
        assert_eq!(UpperCamel("countTokens").to_string(), "CountTokens");
        // The names kept ready are the ones the general way builds.
        for version in ["v1beta", "v1", "v1alpha", "v2"] {
            for verb in [
                "generateContent",
                "streamGenerateContent",
                "countTokens",
                "embedContent",
                "batchEmbedContents",
                "predict",
                "generateAnswer",
            ] {
                let t = Target::gemini_verb(version, verb);
                let interface = if verb == "predict" {
                    "PredictionService"
                } else {
                    "GenerativeService"
                };
                let built = Target::gemini(version, interface, UpperCamel(verb));
                assert_eq!(t.method, built.method, "{version} {verb}");
            }
        }
    }
}
