//! API Keys v2: create (long-running), list, get, getKeyString, delete, undelete,
//! lookupKey and operations.get, on Google's paths and in Google's JSON.
//!
//! Key strings exist in plain text only in memory: the store receives the HMAC (lookup),
//! the AES-GCM ciphertext (getKeyString) and the last four characters (display).

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use keyplane_core::{now, services, ApiKey, PlainKey, Project, ProjectState, Restrictions};
use keyplane_store::StoreError;
use keyplane_wire::cloud::{self, GetKeyStringResponse, Key, LookupKeyResponse, Operation};
use keyplane_wire::{parse_json_body_or_default, ApiError, Code, Detail};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{operations, split_verb, store_error, ListParams, ProjectsRest};
use crate::app::AppState;
use crate::identity::Caller;

const HOST: &str = "apikeys.googleapis.com";
/// How long a deleted key can be restored.
pub const UNDELETE_WINDOW: time::Duration = time::Duration::days(30);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/keys:lookupKey", get(lookup_key))
        // Explicit shapes (not a catch-all) so that Org Policy shares `/v2/projects/{p}/…`.
        .route(
            "/v2/projects/{p}/locations/{l}/keys",
            get(get_dispatch).post(post_dispatch),
        )
        .route(
            "/v2/projects/{p}/locations/{l}/keys/{k}",
            get(get_dispatch)
                .post(post_dispatch)
                .patch(patch_key)
                .delete(delete_dispatch),
        )
        .route(
            "/v2/projects/{p}/locations/{l}/keys/{k}/keyString",
            get(get_dispatch),
        )
        .route("/v2/operations/{*rest}", get(get_operation))
}

/// The wire form of a stored key ([`Key`], as in a `ListKeysResponse`), with Keyplane's
/// display-only `maskedKeyString`.
pub fn key_json(key: &ApiKey, key_string: Option<&str>) -> Value {
    let mut wire = Key::from_api_key(key);
    if let Some(s) = key_string {
        wire = wire.with_key_string(s);
    }
    let mut v = serde_json::to_value(&wire).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut v {
        fields.insert(
            "maskedKeyString".into(),
            Value::String(format!("…{}", key.last4)),
        );
    }
    v
}

fn not_found_path(rest: &str) -> ApiError {
    ApiError::not_found(format!(
        "The requested URL /v2/projects/{rest} was not found on this server."
    ))
}

fn key_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Key {name} not found."))
}

/// Parsed `projects/{p}/locations/{loc}/keys[/{id}]`.
struct KeyPath {
    project: String,
    key_id: Option<String>,
    /// `keyString` after the key id.
    key_string: bool,
}

fn parse_path(segments: &[String], rest: &str) -> Result<KeyPath, ApiError> {
    // segments start after "projects/"
    if segments.len() < 4 || segments[1] != "locations" || segments[3] != "keys" {
        return Err(not_found_path(rest));
    }
    if segments[2] != "global" {
        return Err(ApiError::invalid_argument(format!(
            "Location '{}' is not supported; API keys live in location 'global'.",
            segments[2]
        )));
    }
    match segments.len() {
        4 if segments[3] == "keys" => Ok(KeyPath {
            project: segments[0].clone(),
            key_id: None,
            key_string: false,
        }),
        5 if segments[3] == "keys" => Ok(KeyPath {
            project: segments[0].clone(),
            key_id: Some(segments[4].clone()),
            key_string: false,
        }),
        6 if segments[3] == "keys" && segments[5] == "keyString" => Ok(KeyPath {
            project: segments[0].clone(),
            key_id: Some(segments[4].clone()),
            key_string: true,
        }),
        _ => Err(not_found_path(rest)),
    }
}

/// The project `p` (id or number) once `caller` holds `permission` on it; it must be active.
async fn project_for(
    state: &AppState,
    caller: &Caller,
    p: &str,
    permission: &str,
) -> Result<Project, ApiError> {
    let project = crate::authz::project(state, caller, permission, p).await?;
    if project.state != ProjectState::Active {
        return Err(ApiError::failed_precondition(format!(
            "Project {} is being deleted; its keys cannot be used or changed.",
            project.project_id
        )));
    }
    Ok(project)
}

async fn load_key(state: &AppState, project: &Project, key_id: &str) -> Result<ApiKey, ApiError> {
    let not_found = || {
        key_not_found(&format!(
            "projects/{}/locations/global/keys/{key_id}",
            project.number
        ))
    };
    let key = state
        .store
        .key(project.number, key_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => not_found(),
            other => store_error(other),
        })?;
    // Deleted longer ago than the undelete window: purged, whether or not the periodic
    // purge has removed the row yet.
    if is_purged(&key, now()) {
        return Err(not_found());
    }
    Ok(key)
}

/// A key soft-deleted longer ago than [`UNDELETE_WINDOW`]: gone for every caller.
pub fn is_purged(key: &ApiKey, at: time::OffsetDateTime) -> bool {
    key.delete_time.is_some_and(|d| at - d > UNDELETE_WINDOW)
}

/// Removes the keys deleted longer ago than the undelete window; returns how many.
pub async fn purge_expired_keys(state: &AppState) -> Result<u64, ApiError> {
    state
        .store
        .purge_deleted_keys(now() - UNDELETE_WINDOW)
        .await
        .map_err(store_error)
}

/// Stores a new key. A keyId held by a key deleted beyond the undelete window is free
/// again: that key is purged first.
async fn create_freeing_expired_id(state: &AppState, key: &ApiKey) -> Result<(), StoreError> {
    match state.store.create_key(key).await {
        Err(StoreError::AlreadyExists(what)) => {
            match state.store.key(key.project_number, &key.key_id).await {
                Ok(old) if is_purged(&old, now()) => {
                    state
                        .store
                        .purge_deleted_keys(now() - UNDELETE_WINDOW)
                        .await?;
                    state.store.create_key(key).await
                }
                _ => Err(StoreError::AlreadyExists(what)),
            }
        }
        other => other,
    }
}

/// The service account a new key is bound to: it must exist in the key's project.
async fn bindable_service_account(
    state: &AppState,
    caller: &Caller,
    project: &Project,
    email: &str,
) -> Result<String, ApiError> {
    // Acting through a key as the account takes what acting as it takes.
    crate::authz::require(
        state,
        caller,
        "iam.serviceAccounts.actAs",
        &crate::authz::Resource::Project(project.number),
    )
    .await?;
    let field = "key.service_account_email";
    let bad = |msg: String| ApiError::bad_request_fields(vec![(field, msg)]);
    if !email.contains('@') {
        return Err(bad(format!(
            "Invalid service account email \"{email}\": expected NAME@PROJECT_ID.iam.gserviceaccount.com."
        )));
    }
    match state.store.service_account(email).await {
        Ok(sa) if sa.project_number == project.number => Ok(sa.email),
        Ok(_) => Err(bad(format!(
            "Service account {email} does not belong to project {}; a key can be bound only to a \
             service account of its own project.",
            project.project_id
        ))),
        Err(StoreError::NotFound) => Err(bad(format!(
            "Service account {email} does not exist in project {}.",
            project.project_id
        ))),
        Err(e) => Err(store_error(e)),
    }
}

fn key_operation_name(project_number: i64) -> String {
    operations::new_name(&format!("akmf.p7-{project_number}-"))
}

fn done_key_op(project_number: i64, key: &ApiKey, key_string: Option<&str>) -> Operation {
    let mut op = Operation::done_with(
        key_operation_name(project_number),
        cloud::TYPE_KEY,
        key_json(key, key_string),
    );
    op.metadata = Some(json!({"@type": cloud::TYPE_EMPTY}));
    op
}

// === dispatch ===

async fn get_dispatch(
    State(state): State<AppState>,
    caller: Caller,
    ProjectsRest(rest): ProjectsRest,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    if verb.is_some() {
        return Err(not_found_path(&rest));
    }
    let path = parse_path(&segments, &rest)?;
    match (path.key_id, path.key_string) {
        (None, _) => list_keys(&state, &caller, &path.project, &params).await,
        (Some(id), false) => {
            let project =
                crate::authz::project(&state, &caller, "apikeys.keys.get", &path.project).await?;
            let key = load_key(&state, &project, &id).await?;
            Ok(Json(key_json(&key, None)))
        }
        (Some(id), true) => {
            let project =
                crate::authz::project(&state, &caller, "apikeys.keys.getKeyString", &path.project)
                    .await?;
            let key = load_key(&state, &project, &id).await?;
            let plain = state
                .secret
                .decrypt(&key.ciphertext)
                .map_err(|_| ApiError::internal_from("a stored key could not be decrypted"))?;
            let body = GetKeyStringResponse {
                key_string: plain.expose().to_owned(),
            };
            Ok(Json(
                serde_json::to_value(body).map_err(ApiError::internal_from)?,
            ))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct CreateParams {
    #[serde(default, alias = "key_id")]
    #[serde(rename = "keyId")]
    key_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DeleteParams {
    #[serde(default)]
    etag: Option<String>,
}

async fn post_dispatch(
    State(state): State<AppState>,
    caller: Caller,
    ProjectsRest(rest): ProjectsRest,
    Query(params): Query<CreateParams>,
    body: Bytes,
) -> Result<Json<Operation>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    let path = parse_path(&segments, &rest)?;
    match (path.key_id, path.key_string, verb.as_deref()) {
        (None, false, None) => {
            let op = create_key(&state, &caller, &path.project, params.key_id, &body).await?;
            Ok(Json(op))
        }
        (Some(id), false, Some("undelete")) => Ok(Json(
            undelete_key(&state, &caller, &path.project, &id).await?,
        )),
        (Some(_), false, Some(other)) => Err(ApiError::not_found(format!(
            "Method '{other}' is not supported on API keys."
        ))),
        _ => Err(not_found_path(&rest)),
    }
}

async fn delete_dispatch(
    State(state): State<AppState>,
    caller: Caller,
    ProjectsRest(rest): ProjectsRest,
    Query(params): Query<DeleteParams>,
) -> Result<Json<Operation>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    let path = parse_path(&segments, &rest)?;
    match (path.key_id, path.key_string, verb) {
        (Some(id), false, None) => Ok(Json(
            delete_key(&state, &caller, &path.project, &id, params.etag.as_deref()).await?,
        )),
        _ => Err(not_found_path(&rest)),
    }
}

// === methods ===

async fn list_keys(
    state: &AppState,
    caller: &Caller,
    project: &str,
    params: &ListParams,
) -> Result<Json<Value>, ApiError> {
    let project = crate::authz::project(state, caller, "apikeys.keys.list", project).await?;
    let page = state
        .store
        .list_keys(project.number, params.show_deleted()?, &params.page()?)
        .await
        .map_err(store_error)?;
    let t = now();
    let keys: Vec<Value> = page
        .items
        .iter()
        .filter(|k| !is_purged(k, t))
        .map(|k| key_json(k, None))
        .collect();
    let mut out = serde_json::Map::new();
    if !keys.is_empty() {
        out.insert("keys".into(), Value::Array(keys));
    }
    if let Some(t) = page.next_page_token {
        out.insert("nextPageToken".into(), Value::String(t));
    }
    Ok(Json(Value::Object(out)))
}

/// Checks the `client_restrictions` oneof and the shape of each restriction.
pub fn validate_restrictions(r: &Restrictions) -> Result<(), ApiError> {
    let kinds = [
        r.browser_key_restrictions.is_some(),
        r.server_key_restrictions.is_some(),
        r.android_key_restrictions.is_some(),
        r.ios_key_restrictions.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds > 1 {
        return Err(ApiError::bad_request_fields(vec![(
            "key.restrictions",
            "Only one of browser_key_restrictions, server_key_restrictions, android_key_restrictions and ios_key_restrictions may be set.".to_owned(),
        )]));
    }
    if let Some(server) = &r.server_key_restrictions {
        for ip in &server.allowed_ips {
            let ok = ip.parse::<std::net::IpAddr>().is_ok() || ip.parse::<ipnet::IpNet>().is_ok();
            if !ok {
                return Err(ApiError::bad_request_fields(vec![(
                    "key.restrictions.server_key_restrictions.allowed_ips",
                    format!("Invalid IP address or CIDR range: \"{ip}\"."),
                )]));
            }
        }
    }
    for (i, t) in r.api_targets.iter().enumerate() {
        if t.service.trim().is_empty() {
            return Err(ApiError::bad_request_fields(vec![(
                format!("key.restrictions.api_targets[{i}].service"),
                "api_targets.service must not be empty.".to_owned(),
            )]));
        }
    }
    Ok(())
}

/// Whether a key with these restrictions may call the Gemini API at all.
fn reaches_gemini(r: &Restrictions) -> bool {
    r.api_targets.is_empty()
        || r.api_targets.iter().any(|t| {
            t.service
                .eq_ignore_ascii_case(services::GENERATIVE_LANGUAGE)
        })
}

/// The seeds' rule: no Gemini key in a project whose Generative Language API is off.
fn gemini_disabled(project: &Project) -> ApiError {
    let service = services::GENERATIVE_LANGUAGE;
    let url = format!(
        "https://console.developers.google.com/apis/api/{service}/overview?project={}",
        project.number
    );
    ApiError::new(
        Code::PermissionDenied,
        format!(
            "Failed to generate API key: permission denied. The Generative Language API \
             ({service}) is not enabled in project {}; enable it first (keyplane services enable \
             {service} --project {}).",
            project.project_id, project.project_id
        ),
    )
    .with_detail(Detail::error_info(
        "SERVICE_DISABLED",
        "googleapis.com",
        [
            ("service", service.to_owned()),
            ("serviceTitle", "Generative Language API".to_owned()),
            ("consumer", format!("projects/{}", project.number)),
            ("activationUrl", url.clone()),
        ],
    ))
    .with_detail(Detail::help("Enable the Generative Language API", url))
}

pub async fn create_key(
    state: &AppState,
    caller: &Caller,
    project: &str,
    key_id: Option<String>,
    body: &[u8],
) -> Result<Operation, ApiError> {
    let project = project_for(state, caller, project, "apikeys.keys.create").await?;
    let req: Key = parse_json_body_or_default(body)?;
    let mut restrictions = req.restrictions.clone().unwrap_or_default();
    normalize_restrictions(&mut restrictions)?;
    if req.display_name.chars().count() > 63 {
        return Err(ApiError::bad_request_fields(vec![(
            "key.display_name",
            "display_name must be at most 63 characters.".to_owned(),
        )]));
    }
    let service_account_email = match req
        .service_account_email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        None => None,
        Some(email) => {
            if super::orgpolicy::enforced(state, &project, super::orgpolicy::DISABLE_SA_API_KEYS)
                .await?
            {
                // Like a duplicate keyId: Google answers 200 with an operation that failed.
                let err = super::orgpolicy::sa_binding_refused(&project, email);
                let op = Operation::failed(key_operation_name(project.number), &err);
                return operations::record(state, op, &[]).await;
            }
            Some(bindable_service_account(state, caller, &project, email).await?)
        }
    };
    if reaches_gemini(&restrictions)
        && !super::serviceusage::is_enabled(state, project.number, services::GENERATIVE_LANGUAGE)
            .await?
    {
        return Err(gemini_disabled(&project));
    }
    let uid = uuid::Uuid::new_v4().to_string();
    let key_id = match key_id.filter(|k| !k.is_empty()) {
        Some(id) => {
            keyplane_core::validate_key_id(&id)
                .map_err(|e| ApiError::bad_request_fields(vec![("key_id", e.0.clone())]))?;
            id
        }
        None => uid.clone(),
    };
    let plain = PlainKey::generate();
    let t = now();
    let key = ApiKey {
        project_number: project.number,
        key_id: key_id.clone(),
        uid,
        display_name: req.display_name.clone(),
        lookup_hash: state.secret.lookup_hash(&plain).to_vec(),
        ciphertext: state.secret.encrypt(&plain),
        last4: plain.last4(),
        restrictions,
        annotations: req.annotations.clone(),
        service_account_email,
        create_time: t,
        update_time: t,
        delete_time: None,
        etag: super::new_etag(),
    };
    let op = match create_freeing_expired_id(state, &key).await {
        Ok(()) => {
            state.snapshot.upsert_key(&key);
            done_key_op(project.number, &key, Some(plain.expose()))
        }
        Err(StoreError::AlreadyExists(_)) => {
            // Google answers 200 with an operation that failed.
            let err = ApiError::already_exists("A key with this id already exists.").with_detail(
                Detail::error_info(
                    "FLOW_APIKEY_ALREADY_EXISTS",
                    HOST,
                    [("keyId", key_id.clone())],
                ),
            );
            Operation::failed(key_operation_name(project.number), &err)
        }
        Err(e) => return Err(store_error(e)),
    };
    operations::record(state, op, &["keyString"]).await
}

async fn delete_key(
    state: &AppState,
    caller: &Caller,
    project: &str,
    key_id: &str,
    etag: Option<&str>,
) -> Result<Operation, ApiError> {
    let project = project_for(state, caller, project, "apikeys.keys.delete").await?;
    let mut key = load_key(state, &project, key_id).await?;
    if let Some(etag) = etag.filter(|e| !e.is_empty()) {
        if etag != key.etag {
            return Err(ApiError::aborted(
                "The etag does not match the current version of the key; read it again and retry.",
            ));
        }
    }
    if key.delete_time.is_none() {
        let expected = key.etag.clone();
        let t = now();
        key.delete_time = Some(t);
        key.update_time = t;
        return save_key(state, project.number, &mut key, &expected).await;
    }
    operations::record(
        state,
        done_key_op(project.number, &key, None),
        &["keyString"],
    )
    .await
}

async fn undelete_key(
    state: &AppState,
    caller: &Caller,
    project: &str,
    key_id: &str,
) -> Result<Operation, ApiError> {
    let project = project_for(state, caller, project, "apikeys.keys.undelete").await?;
    let mut key = load_key(state, &project, key_id).await?;
    let Some(deleted) = key.delete_time else {
        return Err(ApiError::failed_precondition(format!(
            "Key {} is not deleted.",
            key.name()
        )));
    };
    if now() - deleted > UNDELETE_WINDOW {
        return Err(ApiError::failed_precondition(format!(
            "Key {} was deleted more than 30 days ago and can no longer be restored.",
            key.name()
        )));
    }
    let expected = key.etag.clone();
    key.delete_time = None;
    key.update_time = now();
    save_key(state, project.number, &mut key, &expected).await
}

/// Stores a changed key under a new etag (checked against `expected`), shows the change to
/// the data plane at once, and answers the finished operation.
async fn save_key(
    state: &AppState,
    project_number: i64,
    key: &mut ApiKey,
    expected: &str,
) -> Result<Operation, ApiError> {
    key.etag = super::new_etag();
    state
        .store
        .update_key(key, expected)
        .await
        .map_err(store_error)?;
    state.snapshot.upsert_key(key);
    operations::record(
        state,
        done_key_op(project_number, key, None),
        &["keyString"],
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
struct LookupParams {
    #[serde(default, alias = "key_string", rename = "keyString")]
    key_string: Option<String>,
}

async fn lookup_key(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<LookupParams>,
) -> Result<Json<LookupKeyResponse>, ApiError> {
    let Some(s) = params.key_string.filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad_request_fields(vec![(
            "key_string",
            "key_string is required.".to_owned(),
        )]));
    };
    let plain = PlainKey::from_caller(&s);
    let not_found = || ApiError::not_found("The API key was not found.");
    if !plain.is_well_formed() {
        return Err(not_found());
    }
    let hash = state.secret.lookup_hash(&plain);
    let key = state.store.key_by_hash(&hash).await.map_err(|e| match e {
        StoreError::NotFound => not_found(),
        other => store_error(other),
    })?;
    if is_purged(&key, now()) {
        return Err(not_found());
    }
    crate::authz::require(
        &state,
        &caller,
        "apikeys.keys.lookup",
        &crate::authz::Resource::Project(key.project_number),
    )
    .await?;
    Ok(Json(LookupKeyResponse {
        parent: format!("projects/{}", key.project_number),
        name: key.name(),
    }))
}

async fn get_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(rest): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    let name = format!("operations/{rest}");
    crate::authz::require_operation(&state, &caller, &name).await?;
    let mut op = operations::get(&state, &name).await?;
    // The CreateKey response carries the key string; it is not stored with the operation,
    // so it is decrypted back in when the key still exists.
    if let Some(Value::Object(resp)) = op.response.as_mut() {
        let is_key = resp.get("@type").and_then(Value::as_str) == Some(cloud::TYPE_KEY);
        if is_key && !resp.contains_key("deleteTime") {
            if let Some(name) = resp.get("name").and_then(Value::as_str) {
                if let Some((number, id)) = parse_key_name(name) {
                    // Only for callers who may read key strings in that project.
                    let may_read = crate::authz::allowed(
                        &state,
                        &caller.principal,
                        "apikeys.keys.getKeyString",
                        &crate::authz::Resource::Project(number),
                    )
                    .await?;
                    if let Ok(key) = state.store.key(number, &id).await {
                        if may_read && key.delete_time.is_none() && created_by_this(&key, resp) {
                            if let Ok(plain) = state.secret.decrypt(&key.ciphertext) {
                                resp.insert(
                                    "keyString".into(),
                                    Value::String(plain.expose().to_owned()),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Json(op))
}

/// The operation's key is the create response (same create time as the stored key).
fn created_by_this(key: &ApiKey, resp: &serde_json::Map<String, Value>) -> bool {
    resp.get("createTime").and_then(Value::as_str) == Some(&keyplane_core::rfc3339(key.create_time))
        && resp.get("updateTime").and_then(Value::as_str)
            == Some(&keyplane_core::rfc3339(key.create_time))
}

fn parse_key_name(name: &str) -> Option<(i64, String)> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["projects", number, "locations", "global", "keys", id] => {
            Some((number.parse().ok()?, (*id).to_owned()))
        }
        _ => None,
    }
}

// === UpdateKey (PATCH with updateMask and etag) ===

#[derive(Debug, Default, Deserialize)]
struct PatchParams {
    #[serde(default, alias = "update_mask", rename = "updateMask")]
    update_mask: Option<String>,
    #[serde(default, alias = "check_existing_usage", rename = "checkExistingUsage")]
    check_existing_usage: Option<String>,
}

async fn patch_key(
    State(state): State<AppState>,
    caller: Caller,
    ProjectsRest(rest): ProjectsRest,
    Query(params): Query<PatchParams>,
    body: Bytes,
) -> Result<Json<Operation>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    let path = parse_path(&segments, &rest)?;
    match (path.key_id, path.key_string, verb) {
        (Some(id), false, None) => Ok(Json(
            update_key(&state, &caller, &path.project, &id, &params, &body).await?,
        )),
        _ => Err(not_found_path(&rest)),
    }
}

/// One path of an UpdateKey mask.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyField {
    DisplayName,
    Restrictions,
    /// `restrictions.{field}` (camelCase).
    Restriction(&'static str),
    Annotations,
}

const CLIENT_RESTRICTIONS: [&str; 4] = [
    "browserKeyRestrictions",
    "serverKeyRestrictions",
    "androidKeyRestrictions",
    "iosKeyRestrictions",
];
const RESTRICTION_FIELDS: [&str; 5] = [
    "browserKeyRestrictions",
    "serverKeyRestrictions",
    "androidKeyRestrictions",
    "iosKeyRestrictions",
    "apiTargets",
];
/// Fields of `Key` an update can never change.
const IMMUTABLE_KEY_FIELDS: [&str; 8] = [
    "name",
    "uid",
    "keyString",
    "createTime",
    "updateTime",
    "deleteTime",
    "etag",
    "serviceAccountEmail",
];

fn bad_mask(message: String) -> ApiError {
    ApiError::bad_request_fields(vec![("update_mask", message)])
}

/// 400 `APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS`; `fields` in proto (snake_case) names.
fn immutable_fields(fields: &[String]) -> ApiError {
    let quoted: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
    let message = format!(
        "Update mask contains immutable field(s) {}",
        quoted.join(", ")
    );
    ApiError::new(Code::InvalidArgument, message.clone())
        .with_detail(Detail::error_info(
            "APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS",
            HOST,
            [("fields", fields.join(","))],
        ))
        .with_detail(Detail::BadRequest {
            field_violations: vec![keyplane_wire::error::FieldViolation {
                field: "update_mask".into(),
                description: message,
            }],
        })
}

/// Reads an UpdateKey mask (`displayName,restrictions`, snake_case or camelCase, `*`).
fn parse_key_mask(mask: &str) -> Result<Vec<KeyField>, ApiError> {
    use keyplane_wire::case::{to_camel, to_snake};
    let mut out = Vec::new();
    let mut immutable = Vec::new();
    let mut raw_paths = Vec::new();
    for raw in mask.split(',').map(str::trim) {
        if raw.is_empty() {
            return Err(bad_mask(format!(
                "Invalid update_mask \"{mask}\": a field mask is a comma-separated list of field paths."
            )));
        }
        let well_formed = raw == "*"
            || raw.split('.').all(|seg| {
                seg.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !well_formed {
            return Err(bad_mask(format!("Invalid update_mask path \"{raw}\".")));
        }
        raw_paths.push(raw);
    }
    if raw_paths.contains(&"*") {
        if raw_paths.len() > 1 {
            return Err(bad_mask(
                "The update_mask \"*\" cannot be combined with other paths.".to_owned(),
            ));
        }
        return Ok(vec![
            KeyField::DisplayName,
            KeyField::Restrictions,
            KeyField::Annotations,
        ]);
    }
    for raw in raw_paths {
        let segs: Vec<String> = raw.split('.').map(to_camel).collect();
        let field = match segs
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [head] if IMMUTABLE_KEY_FIELDS.contains(head) => {
                let name = to_snake(head);
                if !immutable.contains(&name) {
                    immutable.push(name);
                }
                continue;
            }
            ["displayName"] => KeyField::DisplayName,
            ["restrictions"] => KeyField::Restrictions,
            ["annotations"] => KeyField::Annotations,
            ["restrictions", sub] => match RESTRICTION_FIELDS.iter().find(|f| **f == *sub) {
                Some(f) => KeyField::Restriction(f),
                None => {
                    return Err(bad_mask(format!(
                        "Invalid update_mask path \"{raw}\": Restrictions has no field \"{}\".",
                        to_snake(sub)
                    )))
                }
            },
            [head, ..] if IMMUTABLE_KEY_FIELDS.contains(head) => {
                return Err(bad_mask(format!("Invalid update_mask path \"{raw}\".")))
            }
            _ => {
                return Err(bad_mask(format!(
                    "Invalid update_mask path \"{raw}\": the fields of a key that can be updated \
                     are display_name, restrictions and annotations."
                )))
            }
        };
        if !out.contains(&field) {
            out.push(field);
        }
    }
    if !immutable.is_empty() {
        return Err(immutable_fields(&immutable));
    }
    Ok(out)
}

/// `checkExistingUsage`: `SKIP` (default) or `CHECK`, as a name or a number.
fn parse_check_existing_usage(v: Option<&str>) -> Result<(), ApiError> {
    match v.map(str::trim) {
        None
        | Some("")
        | Some("0")
        | Some("1")
        | Some("2")
        | Some("CHECK_EXISTING_USAGE_UNSPECIFIED")
        | Some("SKIP")
        | Some("CHECK") => Ok(()),
        Some(other) => Err(ApiError::bad_request_fields(vec![(
            "check_existing_usage",
            format!("Invalid value \"{other}\" for check_existing_usage: expected SKIP or CHECK."),
        )])),
    }
}

/// Whether a JSON body names `camel` (in either spelling).
fn body_has(raw: &Value, camel: &str) -> bool {
    raw.get(camel).is_some_and(|v| !v.is_null())
        || raw
            .get(keyplane_wire::case::to_snake(camel).as_str())
            .is_some_and(|v| !v.is_null())
}

/// Checks the values inside restrictions (each with the field it names) and writes Android
/// fingerprints in their colon-less uppercase form.
pub fn normalize_restrictions(r: &mut Restrictions) -> Result<(), ApiError> {
    let bad = |field: String, msg: String| Err(ApiError::bad_request_fields(vec![(field, msg)]));
    let base = "key.restrictions";
    if let Some(b) = &r.browser_key_restrictions {
        for (i, referrer) in b.allowed_referrers.iter().enumerate() {
            if referrer.trim().is_empty() || referrer.chars().any(char::is_whitespace) {
                return bad(
                    format!("{base}.browser_key_restrictions.allowed_referrers[{i}]"),
                    format!("Invalid referrer pattern \"{referrer}\"."),
                );
            }
        }
    }
    if let Some(a) = &mut r.android_key_restrictions {
        for (i, app) in a.allowed_applications.iter_mut().enumerate() {
            let at = format!("{base}.android_key_restrictions.allowed_applications[{i}]");
            let sha1: String = app.sha1_fingerprint.chars().filter(|c| *c != ':').collect();
            if sha1.len() != 40 || !sha1.chars().all(|c| c.is_ascii_hexdigit()) {
                return bad(
                    format!("{at}.sha1_fingerprint"),
                    format!(
                        "Invalid SHA-1 fingerprint \"{}\": expected 40 hexadecimal digits, with or without colons.",
                        app.sha1_fingerprint
                    ),
                );
            }
            app.sha1_fingerprint = sha1.to_ascii_uppercase();
            let package_ok = !app.package_name.is_empty()
                && app
                    .package_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !package_ok {
                return bad(
                    format!("{at}.package_name"),
                    format!("Invalid Android package name \"{}\".", app.package_name),
                );
            }
        }
    }
    if let Some(ios) = &r.ios_key_restrictions {
        for (i, id) in ios.allowed_bundle_ids.iter().enumerate() {
            if id.trim().is_empty() || id.chars().any(char::is_whitespace) {
                return bad(
                    format!("{base}.ios_key_restrictions.allowed_bundle_ids[{i}]"),
                    format!("Invalid iOS bundle id \"{id}\"."),
                );
            }
        }
    }
    for (i, t) in r.api_targets.iter().enumerate() {
        for (j, m) in t.methods.iter().enumerate() {
            if m.trim().is_empty() {
                return bad(
                    format!("{base}.api_targets[{i}].methods[{j}]"),
                    "A method pattern must not be empty.".to_owned(),
                );
            }
        }
    }
    validate_restrictions(r)
}

/// Sets `restrictions.{field}` of `current` to the request's value (absent = cleared);
/// setting one client restriction clears the others (they are a oneof).
fn merge_restriction(
    current: &Restrictions,
    request: Option<&Restrictions>,
    field: &str,
) -> Result<Restrictions, ApiError> {
    let to_map = |r: &Restrictions| match serde_json::to_value(r) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Ok(serde_json::Map::new()),
        Err(e) => Err(ApiError::internal_from(e)),
    };
    let mut cur = to_map(current)?;
    let req = match request {
        Some(r) => to_map(r)?,
        None => serde_json::Map::new(),
    };
    match req.get(field) {
        Some(v) => {
            if CLIENT_RESTRICTIONS.contains(&field) {
                for other in CLIENT_RESTRICTIONS {
                    cur.remove(other);
                }
            }
            cur.insert(field.to_owned(), v.clone());
        }
        None => {
            cur.remove(field);
        }
    }
    serde_json::from_value(Value::Object(cur)).map_err(ApiError::internal_from)
}

async fn update_key(
    state: &AppState,
    caller: &Caller,
    project: &str,
    key_id: &str,
    params: &PatchParams,
    body: &[u8],
) -> Result<Operation, ApiError> {
    let project = project_for(state, caller, project, "apikeys.keys.update").await?;
    parse_check_existing_usage(params.check_existing_usage.as_deref())?;
    let mask = match params.update_mask.as_deref() {
        Some(m) if !m.trim().is_empty() => Some(parse_key_mask(m)?),
        _ => None,
    };
    let req: Key = keyplane_wire::parse_json_body(body)?;
    let raw: Value = serde_json::from_slice(body).map_err(ApiError::invalid_json)?;
    let mut key = load_key(state, &project, key_id).await?;
    if !req.name.is_empty() {
        let same = parse_key_name(&req.name)
            .is_some_and(|(n, id)| n == project.number && id == key.key_id)
            || req.name
                == format!(
                    "projects/{}/locations/global/keys/{}",
                    project.project_id, key.key_id
                );
        if !same {
            return Err(ApiError::bad_request_fields(vec![(
                "key.name",
                format!(
                    "key.name \"{}\" does not match the key in the URL ({}).",
                    req.name,
                    key.name()
                ),
            )]));
        }
    }
    if !req.etag.is_empty() && req.etag != key.etag {
        return Err(ApiError::aborted(format!(
            "The etag \"{}\" does not match the current version of key {}; read it again and retry.",
            req.etag,
            key.name()
        )));
    }
    if key.delete_time.is_some() {
        return Err(ApiError::failed_precondition(format!(
            "Key {} is deleted; undelete it before updating it.",
            key.name()
        )));
    }
    // The binding to a service account never changes after create.
    let requested_sa = req
        .service_account_email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    if let Some(email) = requested_sa {
        if mask.is_none() && key.service_account_email.as_deref() != Some(email) {
            if super::orgpolicy::enforced(state, &project, super::orgpolicy::DISABLE_SA_API_KEYS)
                .await?
            {
                let err = super::orgpolicy::sa_binding_refused(&project, email);
                let op = Operation::failed(key_operation_name(project.number), &err);
                return operations::record(state, op, &[]).await;
            }
            return Err(immutable_fields(&["service_account_email".to_owned()]));
        }
    }
    let fields = match mask {
        Some(m) => m,
        None => {
            let mut implied = Vec::new();
            if body_has(&raw, "displayName") {
                implied.push(KeyField::DisplayName);
            }
            if body_has(&raw, "restrictions") {
                implied.push(KeyField::Restrictions);
            }
            if body_has(&raw, "annotations") {
                implied.push(KeyField::Annotations);
            }
            implied
        }
    };
    if fields.is_empty() {
        // Nothing to change: the key as it is.
        return operations::record(
            state,
            done_key_op(project.number, &key, None),
            &["keyString"],
        )
        .await;
    }
    let mut restrictions = key.restrictions.clone();
    for f in &fields {
        match f {
            KeyField::DisplayName => {
                if req.display_name.chars().count() > 63 {
                    return Err(ApiError::bad_request_fields(vec![(
                        "key.display_name",
                        "display_name must be at most 63 characters.".to_owned(),
                    )]));
                }
                key.display_name = req.display_name.clone();
            }
            KeyField::Restrictions => restrictions = req.restrictions.clone().unwrap_or_default(),
            KeyField::Restriction(field) => {
                restrictions = merge_restriction(&restrictions, req.restrictions.as_ref(), field)?
            }
            KeyField::Annotations => key.annotations = req.annotations.clone(),
        }
    }
    normalize_restrictions(&mut restrictions)?;
    key.restrictions = restrictions;
    let expected = key.etag.clone();
    key.update_time = now();
    save_key(state, project.number, &mut key, &expected).await
}

#[cfg(test)]
mod update_tests {
    use super::*;
    use keyplane_core::{ApiTarget, BrowserKeyRestrictions, ServerKeyRestrictions};

    #[test]
    fn masks_are_read_as_google_does() {
        assert_eq!(
            parse_key_mask("displayName,restrictions").unwrap(),
            [KeyField::DisplayName, KeyField::Restrictions]
        );
        assert_eq!(
            parse_key_mask("display_name, annotations,display_name").unwrap(),
            [KeyField::DisplayName, KeyField::Annotations]
        );
        assert_eq!(parse_key_mask("*").unwrap().len(), 3);
        assert_eq!(
            parse_key_mask("restrictions.api_targets").unwrap(),
            [KeyField::Restriction("apiTargets")]
        );
        for immutable in [
            "name",
            "service_account_email",
            "serviceAccountEmail,displayName",
            "uid",
            "key_string",
        ] {
            let e = parse_key_mask(immutable).unwrap_err();
            assert_eq!(
                e.reason(),
                Some("APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS"),
                "{immutable}"
            );
            assert_eq!(e.code, 400);
        }
        assert!(parse_key_mask("serviceAccountEmail")
            .unwrap_err()
            .message
            .contains("\"service_account_email\""));
        for bad in [
            "foo",
            "display name",
            "displayName,,",
            "*,name",
            "restrictions.foo",
            "displayName.x",
            "1abc",
            "a-b",
        ] {
            let e = parse_key_mask(bad).unwrap_err();
            assert_eq!((e.code, e.status), (400, Code::InvalidArgument), "{bad}");
            assert!(e.reason().is_none(), "{bad}");
        }
    }

    #[test]
    fn restriction_subfields_merge() {
        let current = Restrictions {
            browser_key_restrictions: Some(BrowserKeyRestrictions {
                allowed_referrers: vec!["a.example/*".into()],
            }),
            api_targets: vec![ApiTarget {
                service: "generativelanguage.googleapis.com".into(),
                methods: vec![],
            }],
            ..Restrictions::default()
        };
        let req = Restrictions {
            server_key_restrictions: Some(ServerKeyRestrictions {
                allowed_ips: vec!["10.0.0.0/8".into()],
            }),
            ..Restrictions::default()
        };
        let merged = merge_restriction(&current, Some(&req), "serverKeyRestrictions").unwrap();
        assert!(merged.browser_key_restrictions.is_none());
        assert_eq!(merged.server_key_restrictions, req.server_key_restrictions);
        assert_eq!(merged.api_targets, current.api_targets);
        let cleared = merge_restriction(&current, None, "apiTargets").unwrap();
        assert!(cleared.api_targets.is_empty());
        assert_eq!(
            cleared.browser_key_restrictions,
            current.browser_key_restrictions
        );
    }

    #[test]
    fn restriction_values_are_checked() {
        let mut r: Restrictions = serde_json::from_value(json!({
            "androidKeyRestrictions": {"allowedApplications": [
                {"sha1Fingerprint": "da:39:a3:ee:5e:6b:4b:0d:32:55:bf:ef:95:60:18:90:af:d8:07:09", "packageName": "com.example.app"}
            ]}
        }))
        .unwrap();
        normalize_restrictions(&mut r).unwrap();
        assert_eq!(
            r.android_key_restrictions.unwrap().allowed_applications[0].sha1_fingerprint,
            "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
        );
        for (bad, field) in [
            (json!({"androidKeyRestrictions": {"allowedApplications": [{"sha1Fingerprint": "xyz", "packageName": "a.b"}]}}),
             "key.restrictions.android_key_restrictions.allowed_applications[0].sha1_fingerprint"),
            (json!({"serverKeyRestrictions": {"allowedIps": ["10.0.0.300"]}}),
             "key.restrictions.server_key_restrictions.allowed_ips"),
            (json!({"browserKeyRestrictions": {"allowedReferrers": [""]}}),
             "key.restrictions.browser_key_restrictions.allowed_referrers[0]"),
            (json!({"iosKeyRestrictions": {"allowedBundleIds": ["a b"]}}),
             "key.restrictions.ios_key_restrictions.allowed_bundle_ids[0]"),
            (json!({"apiTargets": [{"service": ""}]}), "key.restrictions.api_targets[0].service"),
            (json!({"browserKeyRestrictions": {}, "iosKeyRestrictions": {}}), "key.restrictions"),
        ] {
            let mut r: Restrictions = serde_json::from_value(bad.clone()).unwrap();
            let e = normalize_restrictions(&mut r).unwrap_err();
            match &e.details[..] {
                [Detail::BadRequest { field_violations }] => assert_eq!(field_violations[0].field, field, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn purge_window() {
        let t = now();
        let mut k = ApiKey {
            project_number: 1,
            key_id: "k".into(),
            uid: "u".into(),
            display_name: String::new(),
            lookup_hash: vec![0; 32],
            ciphertext: vec![],
            last4: "abcd".into(),
            restrictions: Restrictions::default(),
            annotations: Default::default(),
            service_account_email: None,
            create_time: t,
            update_time: t,
            delete_time: None,
            etag: "e".into(),
        };
        assert!(!is_purged(&k, t));
        k.delete_time = Some(t - time::Duration::days(29));
        assert!(!is_purged(&k, t));
        k.delete_time = Some(t - UNDELETE_WINDOW);
        assert!(!is_purged(&k, t), "exactly at the window: still restorable");
        k.delete_time = Some(t - UNDELETE_WINDOW - time::Duration::seconds(1));
        assert!(is_purged(&k, t));
    }
}
