//! Who may call the data plane: the credential, the key snapshot's decision and the key's
//! restrictions, in DESIGN.md's order. Everything here reads the in-memory snapshot and
//! directory; only a cache miss (a Bearer token, an account or a policy not read since
//! its last change) reaches the store.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName};
use keyplane_auth::restrictions::{self, CallerAddress, Client, Denied};
use keyplane_auth::snapshot::KeyDenied;
use keyplane_auth::KeyEntry;
use keyplane_core::{services, PlainKey};
use keyplane_wire::ApiError;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use super::ephemeral::{self, EphemeralUse};
use super::{api_version, Params};
use crate::app::AppState;
use crate::authz::{allowed, Resource};

/// The request headers authorization reads, as names the header map finds without parsing.
pub(super) static X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");
static X_ANDROID_PACKAGE: HeaderName = HeaderName::from_static("x-android-package");
static X_ANDROID_CERT: HeaderName = HeaderName::from_static("x-android-cert");
static X_IOS_BUNDLE_IDENTIFIER: HeaderName = HeaderName::from_static("x-ios-bundle-identifier");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What authorization reads from a request: headers, query, the socket peer, the path's
/// API version. An extractor, so handlers never assemble it by hand.
#[derive(Debug, Clone)]
pub struct DataRequest {
    pub headers: HeaderMap,
    pub params: Params,
    /// The TCP peer (`None` when the server was not started with connect info).
    pub peer: Option<IpAddr>,
    /// `v1beta`, `v1`, … as the path says.
    pub version: &'static str,
    pub path: String,
    /// The API key presented, looked at once ([`DataRequest::presented_key`]).
    key: OnceLock<PresentedKey>,
}

/// What a request presents as its API key, as the key snapshot is asked about it.
#[derive(Clone)]
enum PresentedKey {
    /// No `x-goog-api-key` and no `?key=`.
    Nothing,
    /// Not the shape of a key this server mints: invalid without a lookup.
    Malformed,
    /// A well-formed key's lookup hash (the key itself is not kept).
    Hash([u8; 32]),
}

impl std::fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PresentedKey::Nothing => "Nothing",
            PresentedKey::Malformed => "Malformed",
            PresentedKey::Hash(_) => "Hash(..)",
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DataRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<crate::Peer>>()
            .map(|c| c.0 .0.ip());
        Ok(DataRequest::new(parts.headers.clone(), &parts.uri, peer))
    }
}

impl DataRequest {
    /// What authorization reads, from a request's headers (taken over), URI and peer.
    pub(crate) fn new(headers: HeaderMap, uri: &axum::http::Uri, peer: Option<IpAddr>) -> Self {
        DataRequest {
            headers,
            params: Params::parse(uri.query()),
            peer,
            version: api_version(uri.path()),
            path: uri.path().to_owned(),
            key: OnceLock::new(),
        }
    }

    /// The API key presented, its lookup hash computed on first use: once a request, even
    /// when [`refuses_key`] asked before [`authorize`].
    fn presented_key(&self, state: &AppState) -> &PresentedKey {
        self.key.get_or_init(|| match self.api_key() {
            None => PresentedKey::Nothing,
            Some(key) => {
                let plain = PlainKey::from_caller(&key);
                if plain.is_well_formed() {
                    PresentedKey::Hash(state.secret.lookup_hash(&plain))
                } else {
                    PresentedKey::Malformed
                }
            }
        })
    }

    /// A header's value, trimmed, if not empty. Names known ahead are passed as
    /// [`HeaderName`]s (the constants below), which the map finds without parsing them.
    pub(super) fn header(&self, name: impl header::AsHeaderName) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// The `Authorization: Bearer` credential, if any.
    pub(super) fn bearer(&self) -> Option<String> {
        self.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    }

    /// The API key presented: `x-goog-api-key`, else `?key=`.
    pub(super) fn api_key(&self) -> Option<String> {
        self.header(&X_GOOG_API_KEY)
            .or_else(|| self.params.get("key").map(|k| k.trim().to_owned()))
            .filter(|k| !k.is_empty())
    }

    /// The caller's address: the peer, or X-Forwarded-For behind a trusted proxy.
    fn client_address(&self, trusted: &[restrictions::IpNet]) -> CallerAddress {
        let forwarded: Vec<String> = self
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let forwarded: Vec<&str> = forwarded.iter().map(String::as_str).collect();
        restrictions::client_address(self.peer, &forwarded, trusted)
    }
}

/// The call being authorized: the API (service name) and the full RPC method name that
/// `apiTargets` and `API_KEY_SERVICE_BLOCKED` speak of.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: &'static str,
    pub method: Cow<'static, str>,
}

/// The Gemini RPCs most calls are, by (version, verb): their names without a `format!`.
macro_rules! gemini_rpcs {
    ([$($version:literal),*], $verbs:tt) => {
        fn known_gemini_rpc(version: &str, verb: &str) -> Option<&'static str> {
            $(if version == $version {
                return gemini_rpcs!(@verb $version, verb, $verbs);
            })*
            None
        }
    };
    (@verb $version:literal, $verb:ident, [$($name:literal => $rpc:literal),* $(,)?]) => {
        match $verb {
            $($name => Some(concat!(
                "google.ai.generativelanguage.", $version, ".GenerativeService.", $rpc
            )),)*
            _ => None,
        }
    };
}

gemini_rpcs!(
    ["v1beta", "v1", "v1alpha"],
    [
        "generateContent" => "GenerateContent",
        "streamGenerateContent" => "StreamGenerateContent",
        "countTokens" => "CountTokens",
        "embedContent" => "EmbedContent",
        "batchEmbedContents" => "BatchEmbedContents",
    ]
);

impl Target {
    /// A Gemini API method: `google.ai.generativelanguage.{v}.{Service}.{Method}`.
    pub fn gemini(version: &str, interface: &str, method: impl std::fmt::Display) -> Target {
        Target {
            service: services::GENERATIVE_LANGUAGE,
            method: Cow::Owned(format!(
                "google.ai.generativelanguage.{version}.{interface}.{method}"
            )),
        }
    }

    /// The Gemini RPC behind a `models/{id}:{verb}` POST.
    pub fn gemini_verb(version: &str, verb: &str) -> Target {
        if let Some(rpc) = known_gemini_rpc(version, verb) {
            return Target {
                service: services::GENERATIVE_LANGUAGE,
                method: Cow::Borrowed(rpc),
            };
        }
        let interface = match verb {
            "predict" | "predictLongRunning" => "PredictionService",
            _ => "GenerativeService",
        };
        Self::gemini(version, interface, super::UpperCamel(verb))
    }

    /// A Vertex AI method: `google.cloud.aiplatform.{v}.PredictionService.{Method}`.
    pub fn vertex(version: &str, verb: &str) -> Target {
        Target {
            service: services::AIPLATFORM,
            method: Cow::Owned(format!(
                "google.cloud.aiplatform.{version}.PredictionService.{}",
                super::UpperCamel(verb)
            )),
        }
    }
}

/// Who is calling the data plane, once authorized.
#[derive(Debug, Clone)]
pub struct DataCaller {
    /// The consumer project (the key's project, or the service account's).
    pub project_number: i64,
    /// The key used, when the credential was an API key.
    pub key: Option<Arc<KeyEntry>>,
    /// The ephemeral token used, when it was one: its use must be spent
    /// ([`EphemeralUse::spend`]) once the request passes its constraints.
    pub ephemeral: Option<EphemeralUse>,
}

fn service_disabled(service: &str, project_number: i64) -> ApiError {
    ApiError::service_disabled(
        service,
        services::service_title(service).unwrap_or(service),
        project_number,
    )
}

/// The credential check every data-plane call makes first.
pub async fn authorize(
    state: &AppState,
    req: &DataRequest,
    target: &Target,
) -> Result<DataCaller, ApiError> {
    let service = target.service;
    if let Some(token) = ephemeral::presented(req) {
        let (project_number, token) = ephemeral::check(state, req, target, &token).await?;
        return Ok(DataCaller {
            project_number,
            key: None,
            ephemeral: Some(token),
        });
    }
    let hash = match req.presented_key(state) {
        PresentedKey::Nothing => None,
        PresentedKey::Malformed => return Err(ApiError::api_key_invalid(service)),
        PresentedKey::Hash(hash) => Some(hash),
    };
    if let Some(hash) = hash {
        let permit = match state.snapshot.check_key(hash, service) {
            Ok(permit) => permit,
            Err(KeyDenied::Invalid) => return Err(ApiError::api_key_invalid(service)),
            Err(KeyDenied::ServiceDisabled { project_number }) => {
                return Err(service_disabled(service, project_number))
            }
        };
        check_restrictions(state, req, target, &permit.key)?;
        if let Some(email) = &permit.key.service_account_email {
            check_bound_account(state, target, email, permit.key.project_number).await?;
        }
        return Ok(DataCaller {
            project_number: permit.key.project_number,
            key: Some(permit.key),
            ephemeral: None,
        });
    }
    if let Some(token) = req.bearer() {
        // A service-account token: the account's own project is the consumer.
        let caller = state.caller_from_bearer(&token).await?;
        let email = caller
            .principal
            .strip_prefix("serviceAccount:")
            .ok_or_else(ApiError::no_credentials)?;
        let sa = state
            .account(email)
            .await?
            .ok_or_else(ApiError::no_credentials)?;
        if !state.snapshot.service_enabled(sa.project_number, service) {
            return Err(service_disabled(service, sa.project_number));
        }
        require_permission(state, &caller.principal, service, sa.project_number).await?;
        return Ok(DataCaller {
            project_number: sa.project_number,
            key: None,
            ephemeral: None,
        });
    }
    Err(ApiError::no_credentials())
}

/// Whether [`authorize`] would refuse `req` for `service` with API_KEY_INVALID: no
/// ephemeral token, and an API key that is malformed or unknown. Answered from memory, before
/// anything else of the request is looked at, so that the rejections a gateway answers most
/// cost the least (`crate::front`). A key it does not refuse is looked up again by
/// [`authorize`], once the body has arrived: that decision is the one that admits the call.
/// Reads no header but `x-goog-api-key` and `authorization` (with the query's `key` and
/// `access_token`).
pub(crate) fn refuses_key(state: &AppState, req: &DataRequest, service: &str) -> bool {
    let refused = match req.presented_key(state) {
        PresentedKey::Nothing => false,
        PresentedKey::Malformed => true,
        PresentedKey::Hash(hash) => matches!(
            state.snapshot.check_key(hash, service),
            Err(KeyDenied::Invalid)
        ),
    };
    refused && ephemeral::presented(req).is_none()
}

/// The project-scoped Vertex path (`/{v}/projects/{p}/locations/{l}/publishers/...`): the
/// path names the consumer project. An OAuth caller (a service-account access token or
/// self-signed JWT) must hold the call's permission on that project, which must have the
/// service enabled; an API key must belong to that project. An unknown project and one the
/// caller may not use answer the same 403.
pub async fn authorize_in_project(
    state: &AppState,
    req: &DataRequest,
    target: &Target,
    project: &str,
) -> Result<DataCaller, ApiError> {
    let service = target.service;
    let permission = data_permission(service);
    let hidden = || ApiError::iam_permission_denied(permission, &format!("projects/{project}"));
    let found = match project.parse::<i64>() {
        Ok(n) => state.store.project_by_number(n).await,
        Err(_) => state.store.project_by_id(project).await,
    };
    let number = match found {
        Ok(p) if p.state == keyplane_core::ProjectState::Active => p.number,
        Ok(_) | Err(keyplane_store::StoreError::NotFound) => return Err(hidden()),
        Err(e) => return Err(ApiError::internal_from(e)),
    };
    let token = match req.bearer() {
        Some(token) if req.api_key().is_none() => token,
        _ => {
            let caller = authorize(state, req, target).await?;
            if caller.project_number != number {
                return Err(hidden());
            }
            return Ok(caller);
        }
    };
    let caller = state.caller_from_bearer(&token).await?;
    if !allowed(
        state,
        &caller.principal,
        permission,
        &Resource::Project(number),
    )
    .await?
    {
        return Err(hidden());
    }
    if !state.snapshot.service_enabled(number, service) {
        return Err(service_disabled(service, number));
    }
    Ok(DataCaller {
        project_number: number,
        key: None,
        ephemeral: None,
    })
}

/// The IAM permission a data-plane call of `service` needs on the consumer project.
/// aiplatform: `aiplatform.endpoints.predict` (Vertex AI User / Express User grant it).
/// generativelanguage: Keyplane's role table has no `generativelanguage.*` permission yet,
/// so a principal must be allowed to consume the project (`serviceusage.services.use`,
/// as Google requires of a quota project).
fn data_permission(service: &str) -> &'static str {
    if service == services::AIPLATFORM {
        "aiplatform.endpoints.predict"
    } else {
        "serviceusage.services.use"
    }
}

/// `principal` must hold the call's permission on `projects/{project_number}`, else 403
/// IAM_PERMISSION_DENIED.
async fn require_permission(
    state: &AppState,
    principal: &str,
    service: &str,
    project_number: i64,
) -> Result<(), ApiError> {
    let permission = data_permission(service);
    let resource = Resource::Project(project_number);
    if allowed(state, principal, permission, &resource).await? {
        Ok(())
    } else {
        Err(ApiError::iam_permission_denied(
            permission,
            &resource.name(state),
        ))
    }
}

/// A key bound to a service account acts as it, on aiplatform.googleapis.com (the only
/// API that honours bound keys; elsewhere the key identifies its project only). The
/// account and the policies come from the directory cache, which every write to them
/// empties, so a deleted or disabled account or a revoked role stops the key at once:
/// 403 IAM_PERMISSION_DENIED, as when it lacks the role.
async fn check_bound_account(
    state: &AppState,
    target: &Target,
    email: &str,
    project_number: i64,
) -> Result<(), ApiError> {
    if target.service != services::AIPLATFORM {
        return Ok(());
    }
    let denied = || {
        ApiError::iam_permission_denied(
            data_permission(target.service),
            &Resource::Project(project_number).name(state),
        )
    };
    match state.account(email).await? {
        Some(sa) if !sa.disabled => {}
        _ => return Err(denied()),
    }
    require_permission(
        state,
        &format!("serviceAccount:{email}"),
        target.service,
        project_number,
    )
    .await
}

/// The key's restrictions against this request: API targets, then the client restriction.
fn check_restrictions(
    state: &AppState,
    req: &DataRequest,
    target: &Target,
    key: &KeyEntry,
) -> Result<(), ApiError> {
    let r = &key.restrictions;
    let unrestricted = r.api_targets.is_empty()
        && r.server_key_restrictions.is_none()
        && r.browser_key_restrictions.is_none()
        && r.android_key_restrictions.is_none()
        && r.ios_key_restrictions.is_none();
    if unrestricted {
        return Ok(());
    }
    // Only what the key's client restriction looks at is read.
    let referrer = r
        .browser_key_restrictions
        .as_ref()
        .and_then(|_| req.header(header::REFERER));
    let (android_package, android_cert) = match &r.android_key_restrictions {
        Some(_) => (req.header(&X_ANDROID_PACKAGE), req.header(&X_ANDROID_CERT)),
        None => (None, None),
    };
    let ios_bundle_id = r
        .ios_key_restrictions
        .as_ref()
        .and_then(|_| req.header(&X_IOS_BUNDLE_IDENTIFIER));
    let client = Client {
        address: if r.server_key_restrictions.is_some() {
            req.client_address(&state.settings.trusted_proxies)
        } else {
            CallerAddress::default()
        },
        referrer: referrer.as_deref(),
        android_package: android_package.as_deref(),
        android_cert: android_cert.as_deref(),
        ios_bundle_id: ios_bundle_id.as_deref(),
    };
    let call = restrictions::Call {
        service: target.service,
        method: &target.method,
    };
    restrictions::check(r, call, &client).map_err(|denied| {
        let (service, project) = (target.service, key.project_number);
        match denied {
            Denied::Service => ApiError::api_key_service_blocked(service, &target.method, project),
            Denied::Ip(ip) => ApiError::ip_blocked(&ip, service, project),
            Denied::Referrer(r) => ApiError::referrer_blocked(r.as_deref(), service, project),
            Denied::Android(p) => ApiError::android_blocked(p.as_deref(), service, project),
            Denied::Ios(b) => ApiError::ios_blocked(b.as_deref(), service, project),
        }
    })
}
