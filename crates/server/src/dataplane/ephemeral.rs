//! Ephemeral tokens (`auth_tokens/{64 hex}`): `POST /v1alpha/auth_tokens` mints one with an
//! API key; the token then authorizes a limited number of Gemini calls on `/v1alpha`.
//!
//! * Create: the caller must present an API key (never a Bearer token, never an ephemeral
//!   token) whose project has generativelanguage.googleapis.com enabled and whose
//!   restrictions allow `AuthTokenService.CreateToken`. Defaults as Google's: `uses` 1
//!   (0 = unlimited), `expireTime` now+30 min, `newSessionExpireTime` now+60 s, both
//!   < now+20 h. The answer is `{"name": "auth_tokens/…"}`; the name is the token.
//! * Presented as the SDKs present it (gemini-api.md §9.3): `Authorization: Token
//!   auth_tokens/…` (Python Live), `x-goog-api-key: auth_tokens/…`, `?access_token=` (JS
//!   Live); `?key=` and `Authorization: Bearer auth_tokens/…` too. Accepted only on
//!   `/v1alpha` and only for generateContent, streamGenerateContent and countTokens (each
//!   REST call counts as one new session, so `newSessionExpireTime` applies to it).
//!   Google's SDKs refuse to send these tokens on REST (they are for the Live WebSocket,
//!   `live.rs`, where starting a session spends one use); raw HTTP clients can use them on
//!   REST too.
//! * Each use is one conditional UPDATE in the store (`uses_left > 0 and expire_time > now
//!   and new_session_expire_time > now`): concurrent uses never overspend.
//! * Refusals: unknown, exhausted or expired token -> 401 UNAUTHENTICATED "Request had
//!   invalid authentication credentials…" with ErrorInfo reason `ACCESS_TOKEN_EXPIRED`
//!   (Google's shape for a spent OAuth credential); a token on another version or method ->
//!   401 `ACCESS_TOKEN_TYPE_UNSUPPORTED`; the minting key deleted -> same 401 as unknown.
//! * Constraints (`bidiGenerateContentSetup` + `fieldMask`; no mask = every field set in
//!   the setup is locked): a locked `model` different from the called one -> 403
//!   PERMISSION_DENIED; a locked field the request sets to another value -> 400
//!   INVALID_ARGUMENT; a locked field the request leaves out is filled in from the token.

use axum::extract::State;
use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use keyplane_core::{now, services, EphemeralToken};
use keyplane_wire::case::{to_camel, to_snake};
use keyplane_wire::{parse_json_body_or_default, ApiError};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::access::{authorize, DataRequest, Target};
use crate::app::AppState;

/// The prefix every token name has.
pub const PREFIX: &str = "auth_tokens/";
const MAX_LIFETIME: Duration = Duration::hours(20);
const UNLIMITED: i64 = -1;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    uses: Option<i64>,
    #[serde(alias = "expire_time")]
    expire_time: Option<String>,
    #[serde(alias = "new_session_expire_time")]
    new_session_expire_time: Option<String>,
    #[serde(alias = "bidi_generate_content_setup")]
    bidi_generate_content_setup: Option<Value>,
    #[serde(alias = "field_mask")]
    field_mask: Option<Value>,
}

fn parse_time(field: &str, s: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        ApiError::invalid_argument(format!(
            "Invalid value at '{field}' (type.googleapis.com/google.protobuf.Timestamp), \"{s}\""
        ))
    })
}

/// `POST /v1alpha/auth_tokens`.
pub async fn create(State(state): State<AppState>, req: DataRequest, body: Bytes) -> Response {
    match create_inner(&state, &req, &body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create_inner(state: &AppState, req: &DataRequest, body: &[u8]) -> Result<Value, ApiError> {
    let target = Target::gemini(req.version, "AuthTokenService", "CreateToken");
    if presented(req).is_some() {
        return Err(ApiError::permission_denied(
            "Ephemeral tokens cannot be used to create auth tokens or keys; use an API key.",
            "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
            meta(&target.method),
        ));
    }
    let caller = authorize(state, req, &target).await?;
    let Some(key) = caller.key.as_ref() else {
        return Err(ApiError::permission_denied(
            "Auth tokens are created with an API key (x-goog-api-key).",
            "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
            meta(&target.method),
        ));
    };
    let b: CreateBody = parse_json_body_or_default(body)?;
    let t = now();
    let uses = match b.uses.unwrap_or(1) {
        0 => UNLIMITED,
        n if n > 0 => n,
        n => {
            return Err(ApiError::invalid_argument(format!(
                "uses must be non-negative, got {n}."
            )))
        }
    };
    let expire_time = match &b.expire_time {
        Some(s) => parse_time("expire_time", s)?,
        None => t + Duration::minutes(30),
    };
    let new_session_expire_time = match &b.new_session_expire_time {
        Some(s) => parse_time("new_session_expire_time", s)?,
        None => t + Duration::seconds(60),
    };
    for (field, v) in [
        ("expire_time", expire_time),
        ("new_session_expire_time", new_session_expire_time),
    ] {
        if v <= t || v > t + MAX_LIFETIME {
            return Err(ApiError::invalid_argument(format!(
                "{field} must be in the future and less than 20 hours from now."
            )));
        }
    }
    let setup = match b.bidi_generate_content_setup {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(Value::Object(o).to_string()),
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "bidi_generate_content_setup must be an object.",
            ))
        }
    };
    let field_mask = match b.field_mask {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Some(_) => return Err(ApiError::invalid_argument("field_mask must be a string.")),
    };
    let mut raw = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut raw);
    let name = format!("{PREFIX}{}", hex::encode(raw));
    let lookup = state
        .secret
        .lookup_hash(&keyplane_core::PlainKey::from_caller(
            &req.api_key().unwrap_or_default(),
        ));
    let token = EphemeralToken {
        token_hash: state.secret.mac(name.as_bytes()).to_vec(),
        key_hash: lookup.to_vec(),
        project_number: key.project_number,
        uses_left: uses,
        expire_time,
        new_session_expire_time,
        setup,
        field_mask,
        create_time: t,
    };
    state
        .store
        .create_ephemeral_token(&token)
        .await
        .map_err(ApiError::internal_from)?;
    Ok(json!({ "name": name }))
}

fn meta(method: &str) -> BTreeMap<String, String> {
    [
        ("service", services::GENERATIVE_LANGUAGE),
        ("method", method),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The ephemeral token this request presents, if any (`auth_tokens/…`).
pub fn presented(req: &DataRequest) -> Option<String> {
    // Most requests carry an API key: a value is copied only when its raw bytes hold
    // PREFIX (a value that reads as a token once decoded and trimmed holds them as they are).
    let holds = |v: &[u8]| memchr::memmem::find(v, PREFIX.as_bytes()).is_some();
    let from_header = |name: &HeaderName| {
        req.headers
            .get(name)
            .is_some_and(|v| holds(v.as_bytes()))
            .then(|| req.header(name))
            .flatten()
    };
    let param = |name: &str| {
        req.params
            .get(name)
            .filter(|v| holds(v.as_bytes()))
            .map(str::to_owned)
    };
    let auth = from_header(&header::AUTHORIZATION).and_then(|v| {
        v.split_once(' ').and_then(|(scheme, t)| {
            (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
                .then(|| t.trim().to_owned())
        })
    });
    [
        auth,
        from_header(&super::access::X_GOOG_API_KEY),
        param("access_token"),
        param("key"),
    ]
    .into_iter()
    .flatten()
    .find(|t| t.starts_with(PREFIX))
}

/// A token that passed the checks; its use is spent by [`EphemeralUse::spend`] once the
/// request has passed the token's constraints.
#[derive(Debug, Clone)]
pub struct EphemeralUse {
    token_hash: Vec<u8>,
    setup: Option<Map<String, Value>>,
    /// Locked paths (`model`, `generationConfig.temperature`, …).
    locked: Vec<Vec<String>>,
    /// When the token stops working (a Live session started with it ends then).
    pub expire_time: OffsetDateTime,
}

fn expired(method: &str) -> ApiError {
    ApiError::invalid_credentials(
        "ACCESS_TOKEN_EXPIRED",
        services::GENERATIVE_LANGUAGE,
        method,
    )
}

/// Checks an ephemeral token presented for `target` (nothing is spent yet); returns the
/// token's project number and its use.
pub async fn check(
    state: &AppState,
    req: &DataRequest,
    target: &Target,
    token: &str,
) -> Result<(i64, EphemeralUse), ApiError> {
    let allowed = [
        "GenerateContent",
        "StreamGenerateContent",
        "CountTokens",
        "BidiGenerateContent",
        "BidiGenerateContentConstrained",
    ]
    .iter()
    .any(|m| {
        target.method == format!("google.ai.generativelanguage.v1alpha.GenerativeService.{m}")
    });
    if req.version != "v1alpha" || !allowed {
        return Err(ApiError::invalid_credentials(
            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
            target.service,
            &target.method,
        ));
    }
    let hash = state.secret.mac(token.as_bytes());
    let record = match state.store.ephemeral_token(&hash).await {
        Ok(r) => r,
        Err(keyplane_store::StoreError::NotFound) => return Err(expired(&target.method)),
        Err(e) => return Err(ApiError::internal_from(e)),
    };
    let t = now();
    if record.uses_left == 0 || record.expire_time <= t || record.new_session_expire_time <= t {
        return Err(expired(&target.method));
    }
    // The minting key must still be live, its project still have the service.
    let key_hash: [u8; 32] = record
        .key_hash
        .as_slice()
        .try_into()
        .map_err(|_| expired(&target.method))?;
    match state.snapshot.check_key(&key_hash, target.service) {
        Ok(_) => {}
        Err(keyplane_auth::snapshot::KeyDenied::Invalid) => return Err(expired(&target.method)),
        Err(keyplane_auth::snapshot::KeyDenied::ServiceDisabled { project_number }) => {
            return Err(ApiError::service_disabled(
                target.service,
                services::service_title(target.service).unwrap_or(target.service),
                project_number,
            ))
        }
    }
    let setup = record
        .setup
        .as_deref()
        .and_then(|s| serde_json::from_str::<Map<String, Value>>(s).ok());
    let locked = match (&setup, &record.field_mask) {
        (None, _) => Vec::new(),
        (Some(_), Some(mask)) => mask
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.split('.').map(to_camel).collect())
            .collect(),
        (Some(setup), None) => leaf_paths(setup),
    };
    Ok((
        record.project_number,
        EphemeralUse {
            token_hash: hash.to_vec(),
            setup,
            locked,
            expire_time: record.expire_time,
        },
    ))
}

/// Every set path of the setup, one level into objects (what the SDK's mask would list).
fn leaf_paths(setup: &Map<String, Value>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (k, v) in setup {
        match v {
            Value::Object(o) if !o.is_empty() => {
                out.extend(o.keys().map(|kk| vec![to_camel(k), to_camel(kk)]));
            }
            _ => out.push(vec![to_camel(k)]),
        }
    }
    out
}

fn lookup<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<(&'a str, &'a Value)> {
    obj.get_key_value(key)
        .or_else(|| obj.get_key_value(&to_snake(key)))
        .map(|(k, v)| (k.as_str(), v))
}

fn get_path<'a>(obj: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let (_, v) = lookup(obj, first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        get_path(v.as_object()?, rest)
    }
}

impl EphemeralUse {
    /// Applies the token's constraints to a call of `model` with this JSON `body`: the body
    /// to use (locked fields filled in), or the refusal.
    pub fn constrain(&self, model: &str, method: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let Some(setup) = &self.setup else {
            return Ok(body.to_vec());
        };
        let model_locked = self.locked.iter().any(|p| p.len() == 1 && p[0] == "model");
        if let (true, Some(Value::String(pinned))) = (model_locked, setup.get("model")) {
            let pinned = pinned.strip_prefix("models/").unwrap_or(pinned);
            if pinned != model {
                return Err(ApiError::permission_denied(
                    format!(
                        "This ephemeral token only allows models/{pinned}, not models/{model}."
                    ),
                    "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    meta(method),
                ));
            }
        }
        if method.ends_with("CountTokens") {
            return Ok(body.to_vec());
        }
        let mut req: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice(body) {
                Ok(m) => m,
                // Let the handler's parser give its usual error.
                Err(_) => return Ok(body.to_vec()),
            }
        };
        for path in self.locked.iter().filter(|p| p[0] != "model") {
            let Some(want) = get_path(setup, path) else {
                continue;
            };
            match get_path(&req, path) {
                Some(got) if got != want => {
                    return Err(ApiError::invalid_argument(format!(
                        "{} is locked by the ephemeral token and cannot be changed.",
                        path.join(".")
                    )))
                }
                Some(_) => {}
                None => insert_path(&mut req, path, want.clone()),
            }
        }
        Ok(serde_json::to_vec(&req).unwrap_or_else(|_| body.to_vec()))
    }

    /// Spends one use, atomically; an exhausted or expired token is refused.
    pub async fn spend(&self, state: &AppState, method: &str) -> Result<(), ApiError> {
        match state
            .store
            .use_ephemeral_token(&self.token_hash, now())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(expired(method)),
            Err(e) => Err(ApiError::internal_from(e)),
        }
    }
}

fn insert_path(obj: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = lookup(obj, first)
        .map(|(k, _)| k.to_owned())
        .unwrap_or_else(|| first.clone());
    if rest.is_empty() {
        obj.insert(key, value);
        return;
    }
    let entry = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(inner) = entry {
        insert_path(inner, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_with(setup: Value, mask: Option<&str>) -> EphemeralUse {
        let setup = setup.as_object().cloned();
        let locked = match (&setup, mask) {
            (None, _) => vec![],
            (Some(_), Some(m)) => m
                .split(',')
                .map(|p| p.split('.').map(to_camel).collect())
                .collect(),
            (Some(s), None) => leaf_paths(s),
        };
        EphemeralUse {
            token_hash: vec![],
            setup,
            locked,
            expire_time: now(),
        }
    }

    #[test]
    fn model_pin_and_generation_config_lock() {
        let u = use_with(
            json!({"model": "models/m1", "generationConfig": {"temperature": 0.5}}),
            None,
        );
        assert!(u.constrain("m2", "GenerateContent", b"{}").is_err());
        let body = u
            .constrain("m1", "GenerateContent", b"{\"contents\":[]}")
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["generationConfig"]["temperature"], 0.5);
        let e = u
            .constrain(
                "m1",
                "GenerateContent",
                br#"{"generation_config":{"temperature":0.9}}"#,
            )
            .unwrap_err();
        assert_eq!(e.http_status().as_u16(), 400);
        assert!(u
            .constrain(
                "m1",
                "GenerateContent",
                br#"{"generation_config":{"temperature":0.5}}"#
            )
            .is_ok());
    }

    #[test]
    fn a_mask_locks_only_what_it_names() {
        let u = use_with(
            json!({"model": "models/m1", "generationConfig": {"temperature": 0.5}}),
            Some("generation_config.temperature"),
        );
        assert!(u.constrain("m2", "GenerateContent", b"{}").is_ok());
        let unconstrained = use_with(Value::Null, None);
        assert!(unconstrained
            .constrain("any", "GenerateContent", b"{}")
            .is_ok());
    }
}
