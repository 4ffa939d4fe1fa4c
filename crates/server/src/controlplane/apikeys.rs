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

use super::{operations, resolve_project, split_verb, store_error, ListParams, ProjectsRest};
use crate::app::AppState;
use crate::identity::Caller;

const HOST: &str = "apikeys.googleapis.com";
/// How long a deleted key can be restored.
pub const UNDELETE_WINDOW: time::Duration = time::Duration::days(30);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/keys:lookupKey", get(lookup_key))
        .route(
            "/v2/projects/{*rest}",
            get(get_dispatch)
                .post(post_dispatch)
                .delete(delete_dispatch),
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

async fn project_for(state: &AppState, p: &str, permission: &str) -> Result<Project, ApiError> {
    let project = resolve_project(state, p, permission, HOST).await?;
    if project.state != ProjectState::Active {
        return Err(ApiError::failed_precondition(format!(
            "Project {} is being deleted; its keys cannot be used or changed.",
            project.project_id
        )));
    }
    Ok(project)
}

async fn load_key(state: &AppState, project: &Project, key_id: &str) -> Result<ApiKey, ApiError> {
    state
        .store
        .key(project.number, key_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => key_not_found(&format!(
                "projects/{}/locations/global/keys/{key_id}",
                project.number
            )),
            other => store_error(other),
        })
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
            let project = resolve_project(&state, &path.project, "apikeys.keys.get", HOST).await?;
            let key = load_key(&state, &project, &id).await?;
            Ok(Json(key_json(&key, None)))
        }
        (Some(id), true) => {
            let project =
                resolve_project(&state, &path.project, "apikeys.keys.getKeyString", HOST).await?;
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
        (Some(id), false, Some("undelete")) => {
            Ok(Json(undelete_key(&state, &path.project, &id).await?))
        }
        (Some(_), false, Some(other)) => Err(ApiError::not_found(format!(
            "Method '{other}' is not supported on API keys."
        ))),
        _ => Err(not_found_path(&rest)),
    }
}

async fn delete_dispatch(
    State(state): State<AppState>,
    _caller: Caller,
    ProjectsRest(rest): ProjectsRest,
    Query(params): Query<DeleteParams>,
) -> Result<Json<Operation>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    let path = parse_path(&segments, &rest)?;
    match (path.key_id, path.key_string, verb) {
        (Some(id), false, None) => Ok(Json(
            delete_key(&state, &path.project, &id, params.etag.as_deref()).await?,
        )),
        _ => Err(not_found_path(&rest)),
    }
}

// === methods ===

async fn list_keys(
    state: &AppState,
    _caller: &Caller,
    project: &str,
    params: &ListParams,
) -> Result<Json<Value>, ApiError> {
    let project = resolve_project(state, project, "apikeys.keys.list", HOST).await?;
    let page = state
        .store
        .list_keys(project.number, params.show_deleted()?, &params.page()?)
        .await
        .map_err(store_error)?;
    let keys: Vec<Value> = page.items.iter().map(|k| key_json(k, None)).collect();
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
    _caller: &Caller,
    project: &str,
    key_id: Option<String>,
    body: &[u8],
) -> Result<Operation, ApiError> {
    let project = project_for(state, project, "apikeys.keys.create").await?;
    let req: Key = parse_json_body_or_default(body)?;
    let restrictions = req.restrictions.clone().unwrap_or_default();
    validate_restrictions(&restrictions)?;
    if req.display_name.chars().count() > 63 {
        return Err(ApiError::bad_request_fields(vec![(
            "key.display_name",
            "display_name must be at most 63 characters.".to_owned(),
        )]));
    }
    if let Some(email) = req
        .service_account_email
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        // Binding needs the org policy to allow it (the next issue); it is enforced off.
        return Err(ApiError::new(
            Code::FailedPrecondition,
            format!(
                "Binding an API key to a service account ({email}) is not allowed by the \
                 organization policy constraint iam.managed.disableServiceAccountApiKeyCreation."
            ),
        )
        .with_detail(Detail::error_info(
            "ORG_POLICY_CONSTRAINT_VIOLATED",
            HOST,
            [(
                "constraint",
                "constraints/iam.managed.disableServiceAccountApiKeyCreation".to_owned(),
            )],
        )));
    }
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
        service_account_email: None,
        create_time: t,
        update_time: t,
        delete_time: None,
        etag: super::new_etag(),
    };
    let op = match state.store.create_key(&key).await {
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
    project: &str,
    key_id: &str,
    etag: Option<&str>,
) -> Result<Operation, ApiError> {
    let project = project_for(state, project, "apikeys.keys.delete").await?;
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
        key.etag = super::new_etag();
        state
            .store
            .update_key(&key, &expected)
            .await
            .map_err(store_error)?;
        state.snapshot.upsert_key(&key);
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
    project: &str,
    key_id: &str,
) -> Result<Operation, ApiError> {
    let project = project_for(state, project, "apikeys.keys.undelete").await?;
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
    key.etag = super::new_etag();
    state
        .store
        .update_key(&key, &expected)
        .await
        .map_err(store_error)?;
    state.snapshot.upsert_key(&key);
    operations::record(
        state,
        done_key_op(project.number, &key, None),
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
    _caller: Caller,
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
    Ok(Json(LookupKeyResponse {
        parent: format!("projects/{}", key.project_number),
        name: key.name(),
    }))
}

async fn get_operation(
    State(state): State<AppState>,
    _caller: Caller,
    Path(rest): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    let mut op = operations::get(&state, &format!("operations/{rest}")).await?;
    // The CreateKey response carries the key string; it is not stored with the operation,
    // so it is decrypted back in when the key still exists.
    if let Some(Value::Object(resp)) = op.response.as_mut() {
        let is_key = resp.get("@type").and_then(Value::as_str) == Some(cloud::TYPE_KEY);
        if is_key && !resp.contains_key("deleteTime") {
            if let Some(name) = resp.get("name").and_then(Value::as_str) {
                if let Some((number, id)) = parse_key_name(name) {
                    if let Ok(key) = state.store.key(number, &id).await {
                        if key.delete_time.is_none() && created_by_this(&key, resp) {
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
