//! IAM Admin v1 (`iam.googleapis.com`): service accounts (create, get, list, patch,
//! update, delete, disable, enable), their keys (create, list, get, delete, disable,
//! enable) and the predefined roles Keyplane knows (list, get), on Google's paths and in
//! Google's JSON.
//!
//! Keys: the server mints an RSA-2048 key, hands out Google's JSON key file once (base64 in
//! `privateKeyData`) and keeps only a self-signed X.509 certificate of the public half,
//! which `keys.get?publicKeyType=TYPE_X509_PEM_FILE` returns as Google does. A disabled or
//! deleted account, or a disabled or deleted key, gets no token and no self-signed JWT of
//! it is accepted (see `identity.rs`); cached tokens of an account are forgotten at once.

use axum::extract::{RawPathParams, RawQuery, State};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use keyplane_core::{now, Project, ProjectState, ServiceAccount, ServiceAccountKey};
use keyplane_store::StoreError;
use keyplane_wire::iam::{
    self as wire, CreateServiceAccountKeyRequest, CreateServiceAccountRequest, EmptyRequest,
    ListRolesResponse, ListServiceAccountKeysResponse, ListServiceAccountsResponse,
    PatchServiceAccountRequest,
};
use keyplane_wire::{parse_json_body, parse_json_body_or_default, ApiError};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{split_verb, store_error};
use crate::app::AppState;
use crate::identity::Caller;

const HOST: &str = "iam.googleapis.com";
/// Google: at most 10 user-managed keys per service account.
pub const MAX_KEYS_PER_ACCOUNT: usize = 10;
/// `displayName` and `description` limits, in UTF-8 bytes.
const MAX_DISPLAY_NAME: usize = 100;
const MAX_DESCRIPTION: usize = 256;
/// Service-account lists: default and largest page.
const DEFAULT_ACCOUNTS_PAGE: usize = 20;
const MAX_ACCOUNTS_PAGE: usize = 100;
/// Role lists: default and largest page.
const DEFAULT_ROLES_PAGE: usize = 300;
const MAX_ROLES_PAGE: usize = 1000;
/// The etag Google shows on predefined roles.
const PREDEFINED_ROLE_ETAG: &str = "AA==";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/projects/{p}/serviceAccounts",
            or_404(get(list_accounts).post(create_account)),
        )
        .route(
            "/v1/projects/{p}/serviceAccounts/{sa}",
            or_404(
                get(get_account)
                    .patch(patch_account)
                    .put(update_account)
                    .delete(delete_account)
                    .post(account_verb),
            ),
        )
        .route(
            "/v1/projects/{p}/serviceAccounts/{sa}/keys",
            or_404(get(list_keys).post(create_key)),
        )
        .route(
            "/v1/projects/{p}/serviceAccounts/{sa}/keys/{k}",
            or_404(get(get_key).delete(delete_key).post(key_verb)),
        )
        .route("/v1/roles", or_404(get(list_roles)))
        .route("/v1/roles/{r}", or_404(get(get_role)))
}

/// A method the path does not have answers as Google's front end does: 404 with a
/// google.rpc.Status, never axum's bare 405.
fn or_404(m: MethodRouter<AppState>) -> MethodRouter<AppState> {
    m.fallback(|req: axum::extract::Request| async move {
        not_found_url(req.uri().path()).into_response()
    })
}

fn not_found_url(path: &str) -> ApiError {
    ApiError::not_found(format!(
        "The requested URL {path} was not found on this server."
    ))
}

// === paths, queries and lookups ===

/// The path parameters, percent-decoded. A malformed escape is Google's 400.
fn params(raw: &RawPathParams) -> Result<Vec<String>, ApiError> {
    raw.iter()
        .map(|(_, v)| {
            urlencoding::decode(v)
                .map(|s| s.into_owned())
                .map_err(|_| ApiError::invalid_argument("Invalid resource name: bad escape."))
        })
        .collect()
}

/// `name=value` pairs of the query string (repeated names kept in order).
fn query_pairs(raw: &Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    match raw.as_deref() {
        None | Some("") => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map_err(|_| ApiError::invalid_argument("Invalid query string.")),
    }
}

/// The last value of query parameter `name` (camelCase or snake_case).
fn query_value<'a>(pairs: &'a [(String, String)], camel: &str, snake: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == camel || k == snake)
        .map(|(_, v)| v.as_str())
}

fn page_size(pairs: &[(String, String)], default: usize, max: usize) -> Result<usize, ApiError> {
    match query_value(pairs, "pageSize", "page_size").filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(0) => Ok(default),
            Ok(n) if n > 0 => Ok((n as usize).min(max)),
            _ => Err(ApiError::bad_request_fields(vec![(
                "page_size",
                format!("Invalid value \"{s}\": page_size must be a non-negative integer."),
            )])),
        },
    }
}

/// The position a page token stands for (the last name of the previous page).
fn page_after(pairs: &[(String, String)]) -> Result<Option<String>, ApiError> {
    match query_value(pairs, "pageToken", "page_token").filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request_fields(vec![(
                    "page_token",
                    "The page token is not valid.".to_owned(),
                )])
            }),
    }
}

fn page_token_for(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

/// The project named in the path (id or number), once `caller` holds `permission` on it.
/// `-` is not a project here.
async fn project_of(
    state: &AppState,
    caller: &Caller,
    p: &str,
    permission: &str,
) -> Result<Project, ApiError> {
    if p == "-" {
        return Err(ApiError::invalid_argument(
            "The project wildcard \"-\" is not allowed here; name the project.",
        ));
    }
    crate::authz::project(state, caller, permission, p).await
}

fn active(project: &Project) -> Result<(), ApiError> {
    if project.state != ProjectState::Active {
        return Err(ApiError::failed_precondition(format!(
            "Project {} is being deleted; its service accounts cannot be changed.",
            project.project_id
        )));
    }
    Ok(())
}

fn unknown_account() -> ApiError {
    ApiError::not_found("Unknown service account")
}

/// The account `projects/{p}/serviceAccounts/{sa}` (`sa` an email or a unique id; `p` a
/// project id or number, or `-` for any project) with its project, after the caller's
/// `permission` on that project is checked. Unknown accounts are 404 under a named
/// project and 403 under `-`, as Google answers.
async fn load_account(
    state: &AppState,
    caller: &Caller,
    p: &str,
    sa: &str,
    permission: &str,
) -> Result<(ServiceAccount, Project), ApiError> {
    let by_email = sa.contains('@');
    if !by_email && (sa.is_empty() || !sa.bytes().all(|b| b.is_ascii_digit())) {
        return Err(ApiError::invalid_argument(format!(
            "Invalid form of account ID {sa}. Should be [Gaia ID |Email |Unique ID |] of the account"
        )));
    }
    let named = if p == "-" {
        None
    } else {
        Some(crate::authz::project(state, caller, permission, p).await?)
    };
    let found = if by_email {
        state.store.service_account(sa).await
    } else {
        state.store.service_account_by_unique_id(sa).await
    };
    let account = match (found, &named) {
        (Ok(a), Some(project)) if a.project_number != project.number => None,
        (Ok(a), _) => Some(a),
        (Err(StoreError::NotFound), _) => None,
        (Err(e), _) => return Err(store_error(e)),
    };
    let Some(account) = account else {
        return match named {
            // The caller holds `permission` on the project (checked above).
            Some(_) => Err(unknown_account()),
            None => Err(super::denied(
                permission,
                &format!("//{HOST}/projects/-/serviceAccounts/{sa}"),
            )),
        };
    };
    let wildcard = named.is_none();
    let project = match named {
        Some(p) => p,
        None => state
            .store
            .project_by_number(account.project_number)
            .await
            .map_err(store_error)?,
    };
    // Under `-`, an account the caller may not use answers like one that does not exist.
    if wildcard
        && !crate::authz::allowed(
            state,
            &caller.principal,
            permission,
            &crate::authz::Resource::Project(project.number),
        )
        .await?
    {
        return Err(super::denied(
            permission,
            &format!("//{HOST}/projects/-/serviceAccounts/{sa}"),
        ));
    }
    Ok((account, project))
}

fn account_name(sa: &ServiceAccount) -> String {
    format!("projects/{}/serviceAccounts/{}", sa.project_id, sa.email)
}

/// The wire form of a stored account.
pub fn account_json(sa: &ServiceAccount) -> wire::ServiceAccount {
    wire::ServiceAccount {
        name: account_name(sa),
        project_id: sa.project_id.clone(),
        unique_id: sa.unique_id.clone(),
        email: sa.email.clone(),
        display_name: Some(sa.display_name.clone()).filter(|s| !s.is_empty()),
        description: Some(sa.description.clone()).filter(|s| !s.is_empty()),
        etag: STANDARD.encode(sa.etag.as_bytes()),
        oauth2_client_id: sa.unique_id.clone(),
        disabled: sa.disabled,
    }
}

/// The installation's owner account: deleting or disabling it would lock everyone out.
fn owner_email() -> String {
    keyplane_core::service_account_email(
        crate::bootstrap::OWNER_ACCOUNT_ID,
        crate::bootstrap::ADMIN_PROJECT_ID,
    )
}

fn refuse_owner(sa: &ServiceAccount, what: &str) -> Result<(), ApiError> {
    if sa.email == owner_email() {
        return Err(ApiError::failed_precondition(format!(
            "The installation's owner account {} cannot be {what}: every other credential depends on it.",
            sa.email
        )));
    }
    Ok(())
}

fn check_lengths(
    display_name: Option<&str>,
    description: Option<&str>,
    prefix: &str,
) -> Result<(), ApiError> {
    let mut bad = Vec::new();
    if let Some(d) = display_name.filter(|d| d.len() > MAX_DISPLAY_NAME) {
        bad.push((
            format!("{prefix}display_name"),
            format!(
                "The display name must be at most {MAX_DISPLAY_NAME} UTF-8 bytes; it has {}.",
                d.len()
            ),
        ));
    }
    if let Some(d) = description.filter(|d| d.len() > MAX_DESCRIPTION) {
        bad.push((
            format!("{prefix}description"),
            format!(
                "The description must be at most {MAX_DESCRIPTION} UTF-8 bytes; it has {}.",
                d.len()
            ),
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request_fields(bad))
    }
}

fn principal(sa: &ServiceAccount) -> String {
    format!("serviceAccount:{}", sa.email)
}

fn empty() -> Json<Value> {
    Json(json!({}))
}

// === service accounts ===

async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
    body: Bytes,
) -> Result<Json<wire::ServiceAccount>, ApiError> {
    let p = params(&raw)?;
    let permission = "iam.serviceAccounts.create";
    let project = project_of(&state, &caller, &p[0], permission).await?;
    let req: CreateServiceAccountRequest = parse_json_body(&body)?;
    keyplane_core::validate_account_id(&req.account_id)
        .map_err(|e| ApiError::bad_request_fields(vec![("account_id", e.0.clone())]))?;
    let given = req.service_account.unwrap_or_default();
    check_lengths(
        given.display_name.as_deref(),
        given.description.as_deref(),
        "service_account.",
    )?;
    active(&project)?;
    let sa = ServiceAccount {
        email: keyplane_core::service_account_email(&req.account_id, &project.project_id),
        unique_id: keyplane_core::new_unique_id(),
        project_number: project.number,
        project_id: project.project_id.clone(),
        display_name: given.display_name.unwrap_or_default(),
        description: given.description.unwrap_or_default(),
        disabled: false,
        create_time: now(),
        etag: keyplane_core::new_hex_id(8),
    };
    state
        .store
        .create_service_account(&sa)
        .await
        .map_err(|e| match e {
            StoreError::AlreadyExists(_) => ApiError::already_exists(format!(
                "Service account {} already exists within project projects/{}.",
                req.account_id, project.project_id
            )),
            other => store_error(other),
        })?;
    state.directory.forget_account(&sa.email);
    // Tokens of an earlier account with the same email must not carry over.
    state.tokens.revoke_principal(&principal(&sa));
    Ok(Json(account_json(&sa)))
}

async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
    RawQuery(query): RawQuery,
) -> Result<Json<ListServiceAccountsResponse>, ApiError> {
    let p = params(&raw)?;
    let permission = "iam.serviceAccounts.list";
    let project = project_of(&state, &caller, &p[0], permission).await?;
    let pairs = query_pairs(&query)?;
    let size = page_size(&pairs, DEFAULT_ACCOUNTS_PAGE, MAX_ACCOUNTS_PAGE)?;
    let after = page_after(&pairs)?;
    let mut all = state
        .store
        .list_service_accounts(project.number)
        .await
        .map_err(store_error)?;
    all.sort_by(|a, b| a.email.cmp(&b.email));
    let rest: Vec<&ServiceAccount> = all
        .iter()
        .filter(|sa| after.as_deref().is_none_or(|a| sa.email.as_str() > a))
        .collect();
    let page: Vec<&ServiceAccount> = rest.iter().take(size).copied().collect();
    let next_page_token = (rest.len() > page.len())
        .then(|| page.last().map(|sa| page_token_for(&sa.email)))
        .flatten();
    Ok(Json(ListServiceAccountsResponse {
        accounts: page.into_iter().map(account_json).collect(),
        next_page_token,
    }))
}

async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
) -> Result<Json<wire::ServiceAccount>, ApiError> {
    let p = params(&raw)?;
    let (sa, verb) = split_account(&p[1]);
    if verb.is_some() {
        return Err(not_found_url(&format!(
            "/v1/projects/{}/serviceAccounts/{}",
            p[0], p[1]
        )));
    }
    let (account, _) = load_account(&state, &caller, &p[0], &sa, "iam.serviceAccounts.get").await?;
    Ok(Json(account_json(&account)))
}

/// `email:verb` → (`email`, `verb`).
fn split_account(segment: &str) -> (String, Option<String>) {
    let (mut segments, verb) = split_verb(segment);
    (segments.pop().unwrap_or_default(), verb)
}

/// The mutable fields a patch mask names, as (displayName, description).
fn patch_fields(mask: &str, given: &wire::ServiceAccount) -> Result<(bool, bool), ApiError> {
    let paths = keyplane_wire::cloud::parse_update_mask(mask);
    if paths.is_empty() {
        return Ok((given.display_name.is_some(), given.description.is_some()));
    }
    let (mut display, mut description) = (false, false);
    for path in &paths {
        match path.as_str() {
            "displayName" => display = true,
            "description" => description = true,
            "*" => (display, description) = (true, true),
            "name" | "projectId" | "uniqueId" | "email" | "oauth2ClientId" | "etag"
            | "disabled" => {
                return Err(ApiError::bad_request_fields(vec![(
                    "update_mask",
                    format!("The field \"{path}\" of a service account cannot be updated."),
                )]))
            }
            other => {
                return Err(ApiError::bad_request_fields(vec![(
                    "update_mask",
                    format!("Invalid update mask: unknown field \"{other}\"."),
                )]))
            }
        }
    }
    Ok((display, description))
}

/// The account named by `/v1/projects/{p}/serviceAccounts/{sa}` (no verb allowed), loaded
/// with `permission` checked.
async fn account_at_path(
    state: &AppState,
    caller: &Caller,
    raw: &RawPathParams,
    permission: &str,
) -> Result<(ServiceAccount, Project), ApiError> {
    let p = params(raw)?;
    let (sa, verb) = split_account(&p[1]);
    if verb.is_some() {
        return Err(not_found_url(&format!(
            "/v1/projects/{}/serviceAccounts/{}",
            p[0], p[1]
        )));
    }
    load_account(state, caller, &p[0], &sa, permission).await
}

/// Stores a changed account under a new etag.
async fn save_account(state: &AppState, account: &mut ServiceAccount) -> Result<(), ApiError> {
    account.etag = keyplane_core::new_hex_id(8);
    let saved = state.store.update_service_account(account).await;
    state.directory.forget_account(&account.email);
    saved.map_err(store_error)
}

async fn patch_account(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
    body: Bytes,
) -> Result<Json<wire::ServiceAccount>, ApiError> {
    let (mut account, project) =
        account_at_path(&state, &caller, &raw, "iam.serviceAccounts.update").await?;
    let req: PatchServiceAccountRequest = parse_json_body(&body)?;
    let given = req.service_account.unwrap_or_default();
    let (display, description) = patch_fields(&req.update_mask, &given)?;
    check_lengths(
        given.display_name.as_deref().filter(|_| display),
        given.description.as_deref().filter(|_| description),
        "service_account.",
    )?;
    active(&project)?;
    if display {
        account.display_name = given.display_name.unwrap_or_default();
    }
    if description {
        account.description = given.description.unwrap_or_default();
    }
    if display || description {
        save_account(&state, &mut account).await?;
    }
    Ok(Json(account_json(&account)))
}

/// `PUT` (the legacy `update`): the body is a ServiceAccount; `displayName` and
/// `description` are taken when given; a stale `etag` is 409 ABORTED.
async fn update_account(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
    body: Bytes,
) -> Result<Json<wire::ServiceAccount>, ApiError> {
    let (mut account, project) =
        account_at_path(&state, &caller, &raw, "iam.serviceAccounts.update").await?;
    let given: wire::ServiceAccount = parse_json_body(&body)?;
    check_lengths(
        given.display_name.as_deref(),
        given.description.as_deref(),
        "",
    )?;
    if !given.etag.is_empty() && given.etag != account_json(&account).etag {
        return Err(ApiError::aborted(
            "The etag does not match the current version of the service account; read it again and retry.",
        ));
    }
    active(&project)?;
    if let Some(d) = given.display_name {
        account.display_name = d;
    }
    if let Some(d) = given.description {
        account.description = d;
    }
    save_account(&state, &mut account).await?;
    Ok(Json(account_json(&account)))
}

async fn delete_account(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
) -> Result<Json<Value>, ApiError> {
    let (account, _) = account_at_path(&state, &caller, &raw, "iam.serviceAccounts.delete").await?;
    refuse_owner(&account, "deleted")?;
    // Its keys go with it; its cached tokens too.
    let deleted = state.store.delete_service_account(&account.email).await;
    state.directory.forget_account(&account.email);
    deleted.map_err(store_error)?;
    state.tokens.revoke_principal(&principal(&account));
    Ok(empty())
}

/// `POST .../serviceAccounts/{sa}:disable | :enable | :undelete`.
async fn account_verb(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    let p = params(&raw)?;
    let (sa, verb) = split_account(&p[1]);
    let path = format!("/v1/projects/{}/serviceAccounts/{}", p[0], p[1]);
    let permission = match verb.as_deref() {
        Some("disable") => "iam.serviceAccounts.disable",
        Some("enable") => "iam.serviceAccounts.enable",
        Some("undelete") => "iam.serviceAccounts.undelete",
        _ => return Err(not_found_url(&path)),
    };
    let (mut account, _) = load_account(&state, &caller, &p[0], &sa, permission).await?;
    let _: EmptyRequest = parse_json_body_or_default(&body)?;
    match verb.as_deref() {
        Some("disable") => {
            refuse_owner(&account, "disabled")?;
            if !account.disabled {
                account.disabled = true;
                save_account(&state, &mut account).await?;
            }
            state.tokens.revoke_principal(&principal(&account));
            Ok(empty().into_response())
        }
        Some("enable") => {
            if account.disabled {
                account.disabled = false;
                save_account(&state, &mut account).await?;
            }
            Ok(empty().into_response())
        }
        // Keyplane removes deleted accounts at once, so an account that can be found was
        // never deleted.
        _ => Err(ApiError::failed_precondition(format!(
            "Service account {} is not deleted; only deleted accounts can be restored.",
            account.email
        ))),
    }
}

// === keys ===

fn key_name(sa: &ServiceAccount, key_id: &str) -> String {
    format!("{}/keys/{key_id}", account_name(sa))
}

/// The wire form of a stored key; `public_key_type` adds `publicKeyData`.
fn key_json(
    sa: &ServiceAccount,
    key: &ServiceAccountKey,
    public_key_type: &str,
) -> Result<wire::ServiceAccountKey, ApiError> {
    let public_key_data = match public_key_type {
        "TYPE_X509_PEM_FILE" => STANDARD.encode(certificate_or_public_pem(&key.public_key_pem)?),
        "TYPE_RAW_PUBLIC_KEY" => STANDARD.encode(
            stored_public_key(&key.public_key_pem)
                .ok_or_else(|| ApiError::internal_from("a stored public key does not parse"))?
                .to_public_key_der()
                .map_err(ApiError::internal_from)?
                .as_bytes(),
        ),
        _ => String::new(),
    };
    Ok(wire::ServiceAccountKey {
        name: key_name(sa, &key.key_id),
        key_algorithm: "KEY_ALG_RSA_2048".into(),
        public_key_data,
        valid_after_time: keyplane_core::rfc3339(key.valid_after),
        valid_before_time: keyplane_core::rfc3339(key.valid_before),
        key_origin: "GOOGLE_PROVIDED".into(),
        key_type: "USER_MANAGED".into(),
        disabled: key.disabled,
        ..Default::default()
    })
}

fn unknown_key(sa: &ServiceAccount, key_id: &str) -> ApiError {
    ApiError::not_found(format!(
        "Service account key {} does not exist.",
        key_name(sa, key_id)
    ))
}

async fn load_key(
    state: &AppState,
    sa: &ServiceAccount,
    key_id: &str,
) -> Result<ServiceAccountKey, ApiError> {
    match state.store.service_account_key(key_id).await {
        Ok(k) if k.service_account_email == sa.email => Ok(k),
        Ok(_) | Err(StoreError::NotFound) => Err(unknown_key(sa, key_id)),
        Err(e) => Err(store_error(e)),
    }
}

async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
    body: Bytes,
) -> Result<Json<wire::ServiceAccountKey>, ApiError> {
    let p = params(&raw)?;
    let (account, project) = load_account(
        &state,
        &caller,
        &p[0],
        &p[1],
        "iam.serviceAccountKeys.create",
    )
    .await?;
    let req: CreateServiceAccountKeyRequest = parse_json_body_or_default(&body)?;
    match req.private_key_type.as_str() {
        "" | "TYPE_UNSPECIFIED" | "TYPE_GOOGLE_CREDENTIALS_FILE" => {}
        "TYPE_PKCS12_FILE" => {
            return Err(ApiError::bad_request_fields(vec![(
                "private_key_type",
                "Keyplane issues keys only as Google credentials files (TYPE_GOOGLE_CREDENTIALS_FILE); PKCS#12 is not supported.".to_owned(),
            )]))
        }
        other => {
            return Err(ApiError::bad_request_fields(vec![(
                "private_key_type",
                format!("Invalid value \"{other}\" for private_key_type."),
            )]))
        }
    }
    match req.key_algorithm.as_str() {
        "" | "KEY_ALG_UNSPECIFIED" | "KEY_ALG_RSA_2048" => {}
        other => {
            return Err(ApiError::bad_request_fields(vec![(
                "key_algorithm",
                format!("Key algorithm {other} is not supported; use KEY_ALG_RSA_2048."),
            )]))
        }
    }
    active(&project)?;
    let existing = state
        .store
        .list_service_account_keys(&account.email)
        .await
        .map_err(store_error)?;
    if existing.len() >= MAX_KEYS_PER_ACCOUNT {
        return Err(ApiError::failed_precondition(format!(
            "Precondition check failed: service account {} already has {MAX_KEYS_PER_ACCOUNT} keys, the most it may have; delete one first.",
            account.email
        )));
    }
    let (record, file) = crate::identity::mint_key_file(&account, &state.base_url).await?;
    state
        .store
        .add_service_account_key(&record)
        .await
        .map_err(|e| match e {
            // Deleted between the lookup and now.
            StoreError::NotFound => unknown_account(),
            other => store_error(other),
        })?;
    let mut text = serde_json::to_string_pretty(&file).map_err(ApiError::internal_from)?;
    text.push('\n');
    let mut out = key_json(&account, &record, "")?;
    out.private_key_type = "TYPE_GOOGLE_CREDENTIALS_FILE".into();
    out.private_key_data = STANDARD.encode(text.as_bytes());
    Ok(Json(out))
}

async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
    RawQuery(query): RawQuery,
) -> Result<Json<ListServiceAccountKeysResponse>, ApiError> {
    let p = params(&raw)?;
    let (account, _) =
        load_account(&state, &caller, &p[0], &p[1], "iam.serviceAccountKeys.list").await?;
    let pairs = query_pairs(&query)?;
    let mut user_managed = true;
    let mut filtered = false;
    for (k, v) in &pairs {
        if k != "keyTypes" && k != "key_types" {
            continue;
        }
        if !filtered {
            filtered = true;
            user_managed = false;
        }
        match wire::enum_param(v, wire::KEY_TYPES).as_deref() {
            Some("USER_MANAGED") => user_managed = true,
            Some("SYSTEM_MANAGED") => {}
            _ => {
                return Err(ApiError::bad_request_fields(vec![(
                    "key_types",
                    format!(
                        "Invalid value \"{v}\" for key_types: use USER_MANAGED or SYSTEM_MANAGED."
                    ),
                )]))
            }
        }
    }
    let keys = if user_managed {
        state
            .store
            .list_service_account_keys(&account.email)
            .await
            .map_err(store_error)?
    } else {
        Vec::new()
    };
    Ok(Json(ListServiceAccountKeysResponse {
        keys: keys
            .iter()
            .map(|k| key_json(&account, k, ""))
            .collect::<Result<_, _>>()?,
    }))
}

async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
    RawQuery(query): RawQuery,
) -> Result<Json<wire::ServiceAccountKey>, ApiError> {
    let p = params(&raw)?;
    let (key_id, verb) = split_account(&p[2]);
    if verb.is_some() {
        return Err(not_found_url(&format!(
            "/v1/projects/{}/serviceAccounts/{}/keys/{}",
            p[0], p[1], p[2]
        )));
    }
    let (account, _) =
        load_account(&state, &caller, &p[0], &p[1], "iam.serviceAccountKeys.get").await?;
    let pairs = query_pairs(&query)?;
    let public_key_type = match query_value(&pairs, "publicKeyType", "public_key_type") {
        None | Some("") => "TYPE_NONE".to_owned(),
        Some(v) => wire::enum_param(v, wire::PUBLIC_KEY_TYPES).ok_or_else(|| {
            ApiError::bad_request_fields(vec![(
                "public_key_type",
                format!("Invalid value \"{v}\" for public_key_type: use TYPE_NONE, TYPE_X509_PEM_FILE or TYPE_RAW_PUBLIC_KEY."),
            )])
        })?,
    };
    let key = load_key(&state, &account, &key_id).await?;
    Ok(Json(key_json(&account, &key, &public_key_type)?))
}

/// Refuses to remove or disable the owner account's last enabled key.
async fn refuse_last_owner_key(
    state: &AppState,
    sa: &ServiceAccount,
    key: &ServiceAccountKey,
) -> Result<(), ApiError> {
    if sa.email != owner_email() || key.disabled {
        return Ok(());
    }
    let others = state
        .store
        .list_service_account_keys(&sa.email)
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|k| k.key_id != key.key_id && !k.disabled)
        .count();
    if others == 0 {
        return Err(ApiError::failed_precondition(format!(
            "Key {} is the last enabled key of the installation's owner account; create another one first.",
            key.key_id
        )));
    }
    Ok(())
}

async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
) -> Result<Json<Value>, ApiError> {
    let p = params(&raw)?;
    let (key_id, verb) = split_account(&p[2]);
    if verb.is_some() {
        return Err(not_found_url(&format!(
            "/v1/projects/{}/serviceAccounts/{}/keys/{}",
            p[0], p[1], p[2]
        )));
    }
    let (account, _) = load_account(
        &state,
        &caller,
        &p[0],
        &p[1],
        "iam.serviceAccountKeys.delete",
    )
    .await?;
    let key = load_key(&state, &account, &key_id).await?;
    refuse_last_owner_key(&state, &account, &key).await?;
    state
        .store
        .delete_service_account_key(&key.key_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => unknown_key(&account, &key_id),
            other => store_error(other),
        })?;
    Ok(empty())
}

/// `POST .../keys/{k}:disable | :enable`.
async fn key_verb(
    State(state): State<AppState>,
    caller: Caller,
    raw: RawPathParams,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p = params(&raw)?;
    let (key_id, verb) = split_account(&p[2]);
    let (permission, disable) = match verb.as_deref() {
        Some("disable") => ("iam.serviceAccountKeys.disable", true),
        Some("enable") => ("iam.serviceAccountKeys.enable", false),
        _ => {
            return Err(not_found_url(&format!(
                "/v1/projects/{}/serviceAccounts/{}/keys/{}",
                p[0], p[1], p[2]
            )))
        }
    };
    let (account, _) = load_account(&state, &caller, &p[0], &p[1], permission).await?;
    let _: EmptyRequest = parse_json_body_or_default(&body)?;
    let mut key = load_key(&state, &account, &key_id).await?;
    if disable {
        refuse_last_owner_key(&state, &account, &key).await?;
    }
    if key.disabled != disable {
        key.disabled = disable;
        state
            .store
            .update_service_account_key(&key)
            .await
            .map_err(store_error)?;
    }
    Ok(empty())
}

// === roles ===

fn role_json(role: &keyplane_core::iam::Role, full: bool) -> wire::Role {
    wire::Role {
        name: role.name.to_owned(),
        title: role.title.to_owned(),
        description: role.description.to_owned(),
        included_permissions: if full {
            role.permissions().into_iter().map(str::to_owned).collect()
        } else {
            Vec::new()
        },
        stage: role.stage.to_owned(),
        etag: PREDEFINED_ROLE_ETAG.to_owned(),
        deleted: false,
    }
}

/// `GET /v1/roles?view=BASIC|FULL&pageSize&pageToken&parent&showDeleted`: the predefined
/// roles (custom roles, under a `parent`, are not supported and list empty).
async fn list_roles(
    _caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListRolesResponse>, ApiError> {
    let pairs = query_pairs(&query)?;
    let full = match query_value(&pairs, "view", "view") {
        None | Some("") => false,
        Some(v) => match wire::enum_param(v, wire::ROLE_VIEWS).as_deref() {
            Some("FULL") => true,
            Some(_) => false,
            None => {
                return Err(ApiError::bad_request_fields(vec![(
                    "view",
                    format!("Invalid value \"{v}\" for view: use BASIC or FULL."),
                )]))
            }
        },
    };
    if let Some(parent) = query_value(&pairs, "parent", "parent").filter(|p| !p.is_empty()) {
        let shaped = parent.split_once('/').is_some_and(|(kind, id)| {
            matches!(kind, "projects" | "organizations") && !id.is_empty() && !id.contains('/')
        });
        if !shaped {
            return Err(ApiError::bad_request_fields(vec![(
                "parent",
                format!("Invalid parent \"{parent}\": use projects/PROJECT or organizations/ORGANIZATION."),
            )]));
        }
        // Keyplane has no custom roles.
        return Ok(Json(ListRolesResponse::default()));
    }
    let size = page_size(&pairs, DEFAULT_ROLES_PAGE, MAX_ROLES_PAGE)?;
    let after = page_after(&pairs)?;
    let rest: Vec<&keyplane_core::iam::Role> = keyplane_core::iam::ROLES
        .iter()
        .filter(|r| after.as_deref().is_none_or(|a| r.name > a))
        .collect();
    let page: Vec<&keyplane_core::iam::Role> = rest.iter().take(size).copied().collect();
    let next_page_token = (rest.len() > page.len())
        .then(|| page.last().map(|r| page_token_for(r.name)))
        .flatten();
    Ok(Json(ListRolesResponse {
        roles: page.into_iter().map(|r| role_json(r, full)).collect(),
        next_page_token,
    }))
}

/// `GET /v1/roles/{role}`: a predefined role with its permissions.
async fn get_role(_caller: Caller, raw: RawPathParams) -> Result<Json<wire::Role>, ApiError> {
    let p = params(&raw)?;
    let name = format!("roles/{}", p[0]);
    keyplane_core::iam::role(&name)
        .map(|r| Json(role_json(r, true)))
        .ok_or_else(|| ApiError::not_found(format!("The role {name} was not found.")))
}

// === key material ===

/// A self-signed X.509 certificate (PEM) of `private`'s public half, as Google serves for
/// service-account keys: subject and issuer `CN={email}`, valid from `not_before` to
/// `not_after`, RSA PKCS#1 v1.5 with SHA-256.
pub fn self_signed_certificate(
    private: &RsaPrivateKey,
    email: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<String, ApiError> {
    use std::str::FromStr as _;
    use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
    use x509_cert::der::EncodePem as _;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::{Time, Validity};

    let time = |t: OffsetDateTime| -> Result<Time, ApiError> {
        let unix = u64::try_from(t.unix_timestamp()).map_err(ApiError::internal_from)?;
        let dt = x509_cert::der::DateTime::from_unix_duration(std::time::Duration::from_secs(unix))
            .map_err(ApiError::internal_from)?;
        Ok(Time::GeneralTime(
            x509_cert::der::asn1::GeneralizedTime::from_date_time(dt),
        ))
    };
    let validity = Validity {
        not_before: time(not_before)?,
        not_after: time(not_after)?,
    };
    let mut serial = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut serial);
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let serial = SerialNumber::new(&serial).map_err(ApiError::internal_from)?;
    let subject = Name::from_str(&format!("CN={email}")).map_err(ApiError::internal_from)?;
    let spki = SubjectPublicKeyInfoOwned::from_key(private.to_public_key())
        .map_err(ApiError::internal_from)?;
    let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(private.clone());
    let builder = CertificateBuilder::new(
        Profile::Leaf {
            issuer: subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        },
        serial,
        validity,
        subject,
        spki,
        &signer,
    )
    .map_err(ApiError::internal_from)?;
    let cert = builder
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(ApiError::internal_from)?;
    cert.to_pem(LineEnding::LF).map_err(ApiError::internal_from)
}

/// The RSA public key of a stored key: a certificate PEM (what Keyplane stores), or an
/// SPKI / PKCS#1 public-key PEM (keys minted before certificates were kept).
pub fn stored_public_key(pem: &str) -> Option<RsaPublicKey> {
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        use x509_cert::der::{DecodePem as _, Encode as _};
        let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).ok()?;
        let der = cert.tbs_certificate.subject_public_key_info.to_der().ok()?;
        return RsaPublicKey::from_public_key_der(&der).ok();
    }
    keyplane_auth::jwt::parse_public_key(pem).ok()
}

/// What `publicKeyType=TYPE_X509_PEM_FILE` returns: the certificate PEM; for a key stored
/// before certificates were kept, its public-key PEM (which readers of Google's
/// certificates, google-auth's among them, also accept).
fn certificate_or_public_pem(pem: &str) -> Result<Vec<u8>, ApiError> {
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        return Ok(pem.as_bytes().to_vec());
    }
    let key = stored_public_key(pem)
        .ok_or_else(|| ApiError::internal_from("a stored public key does not parse"))?;
    Ok(key
        .to_public_key_pem(LineEnding::LF)
        .map_err(ApiError::internal_from)?
        .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_carry_the_public_key() {
        let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let t = now();
        let pem = self_signed_certificate(
            &private,
            "a-b@p.iam.gserviceaccount.com",
            t,
            time::macros::datetime!(9999-12-31 23:59:59 UTC),
        )
        .unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        assert_eq!(stored_public_key(&pem), Some(private.to_public_key()));
        let spki = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(stored_public_key(&spki), Some(private.to_public_key()));
        assert_eq!(certificate_or_public_pem(&spki).unwrap(), spki.as_bytes());
    }

    #[test]
    fn masks_name_only_mutable_fields() {
        let given = wire::ServiceAccount {
            display_name: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(patch_fields("", &given).unwrap(), (true, false));
        assert_eq!(
            patch_fields("display_name,description", &given).unwrap(),
            (true, true)
        );
        assert_eq!(patch_fields("description", &given).unwrap(), (false, true));
        assert_eq!(patch_fields("email", &given).unwrap_err().code, 400);
        assert_eq!(patch_fields("bogus", &given).unwrap_err().code, 400);
    }

    #[test]
    fn page_tokens_round_trip() {
        let pairs = vec![("pageToken".to_owned(), page_token_for("a@b"))];
        assert_eq!(page_after(&pairs).unwrap().as_deref(), Some("a@b"));
        let bad = vec![("pageToken".to_owned(), "%%%".to_owned())];
        assert_eq!(page_after(&bad).unwrap_err().code, 400);
        let size = vec![("pageSize".to_owned(), "1000".to_owned())];
        assert_eq!(page_size(&size, 20, 100).unwrap(), 100);
        let neg = vec![("page_size".to_owned(), "-1".to_owned())];
        assert!(page_size(&neg, 20, 100).is_err());
    }
}
