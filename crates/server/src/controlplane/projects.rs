//! Resource Manager v3: projects (create, get, list, search, patch, delete, undelete) and
//! their operations.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use keyplane_core::{now, services, Project, ProjectState, ServiceState};
use keyplane_wire::cloud::{self, ListProjectsResponse, Operation};
use keyplane_wire::{parse_json_body, ApiError};
use serde_json::json;

use super::{operations, split_verb, store_error, ListParams};
use crate::app::AppState;
use crate::identity::Caller;

const HOST: &str = "cloudresourcemanager.googleapis.com";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/projects", get(list_projects).post(create_project))
        .route("/v3/projects:search", get(search_projects))
        .route(
            "/v3/projects/{*rest}",
            get(get_project)
                .post(post_dispatch)
                .patch(patch_project)
                .delete(delete_project),
        )
        .route("/v3/operations/{*rest}", get(get_operation))
}

/// Creates a project with the services every project starts with; updates the snapshot.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    project_id: &str,
    display_name: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> Result<Project, ApiError> {
    keyplane_core::validate_project_id(project_id)
        .map_err(|e| ApiError::bad_request_fields(vec![("project.project_id", e.0.clone())]))?;
    let t = now();
    let project = Project {
        number: keyplane_core::new_project_number(),
        project_id: project_id.to_owned(),
        display_name: if display_name.is_empty() {
            project_id.to_owned()
        } else {
            display_name.to_owned()
        },
        parent: format!("organizations/{}", state.organization),
        state: ProjectState::Active,
        labels,
        tier: "free".into(),
        studio_visible: false,
        created_by: caller.principal.clone(),
        create_time: t,
        update_time: t,
        delete_time: None,
        etag: super::new_etag(),
    };
    state
        .store
        .create_project(&project)
        .await
        .map_err(|e| match e {
            keyplane_store::StoreError::AlreadyExists(_) => ApiError::already_exists(format!(
            "Requested entity already exists: the project id \"{project_id}\" is already in use."
        )),
            other => store_error(other),
        })?;
    for service in services::DEFAULT_ENABLED {
        let s = ServiceState {
            project_number: project.number,
            service: (*service).to_owned(),
            enabled: true,
            update_time: t,
        };
        state.store.set_service(&s).await.map_err(store_error)?;
        state.snapshot.set_service(&s);
    }
    // Google makes the creator an owner of the new project.
    crate::authz::grant_creator_owner(state, project.number, &caller.principal).await?;
    Ok(project)
}

async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Operation>, ApiError> {
    let req: cloud::Project = parse_json_body(&body)?;
    let org = format!("organizations/{}", state.organization);
    if !req.parent.is_empty() && req.parent != org {
        return Err(super::denied(
            "resourcemanager.projects.create",
            &format!("//{HOST}/{}", req.parent),
        ));
    }
    crate::authz::require(
        &state,
        &caller,
        "resourcemanager.projects.create",
        &crate::authz::Resource::Organization,
    )
    .await?;
    let project = create(
        &state,
        &caller,
        &req.project_id,
        &req.display_name,
        req.labels,
    )
    .await?;
    let op = Operation::done_with(
        format!("operations/cp.{}", keyplane_core::new_unique_id()),
        cloud::TYPE_PROJECT,
        serde_json::to_value(cloud::Project::from_model(&project)).map_err(ApiError::internal_from)?,
    )
    .with_metadata(
        cloud::TYPE_CREATE_PROJECT_METADATA,
        json!({"createTime": keyplane_core::rfc3339(project.create_time), "gettable": true, "ready": true}),
    );
    Ok(Json(operations::record(&state, op, &[]).await?))
}

async fn get_project(
    State(state): State<AppState>,
    caller: Caller,
    Path(rest): Path<String>,
) -> Result<Json<cloud::Project>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    if segments.len() != 1 || verb.is_some() {
        return Err(ApiError::not_found(format!(
            "The requested URL /v3/projects/{rest} was not found on this server."
        )));
    }
    let project = crate::authz::project(
        &state,
        &caller,
        "resourcemanager.projects.get",
        &segments[0],
    )
    .await?;
    Ok(Json(cloud::Project::from_model(&project)))
}

/// `POST /v3/projects/{x}:verb`. Add project verbs here (one POST route serves them all).
async fn post_dispatch(
    State(state): State<AppState>,
    caller: Caller,
    Path(rest): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    let not_found = || {
        ApiError::not_found(format!(
            "The requested URL /v3/projects/{rest} was not found on this server."
        ))
    };
    let (project_ref, verb) = match (segments.as_slice(), verb.as_deref()) {
        ([p], Some(v)) => (p.as_str(), v),
        _ => return Err(not_found()),
    };
    if verb == "undelete" {
        let op = undelete_project(&state, &caller, project_ref, &body).await?;
        return Ok(Json(
            serde_json::to_value(op).map_err(ApiError::internal_from)?,
        ));
    }
    if let Some(result) =
        super::iampolicy::project_verb(&state, &caller, project_ref, verb, &body).await
    {
        return result;
    }
    Err(not_found())
}

async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<ListProjectsResponse>, ApiError> {
    let org = format!("organizations/{}", state.organization);
    if let Some(parent) = params.parent.as_deref().filter(|p| !p.is_empty()) {
        if parent != org {
            return Err(super::denied(
                "resourcemanager.projects.list",
                &format!("//{HOST}/{parent}"),
            ));
        }
    }
    // Only the projects the caller may get are listed. Store pages are filtered; empty
    // filtered pages are skipped (a bounded number of them) so that a caller who sees few
    // projects does not page through many empty answers.
    let show_deleted = params.show_deleted()?;
    let mut request = params.page()?;
    let everything = crate::authz::allowed(
        &state,
        &caller.principal,
        "resourcemanager.projects.get",
        &crate::authz::Resource::Organization,
    )
    .await?;
    let mut projects = Vec::new();
    let mut next_page_token;
    let mut pages = 0;
    loop {
        let page = state
            .store
            .list_projects(show_deleted, &request)
            .await
            .map_err(store_error)?;
        pages += 1;
        for p in &page.items {
            if everything
                || crate::authz::allowed(
                    &state,
                    &caller.principal,
                    "resourcemanager.projects.get",
                    &crate::authz::Resource::Project(p.number),
                )
                .await?
            {
                projects.push(cloud::Project::from_model(p));
            }
        }
        next_page_token = page.next_page_token;
        match &next_page_token {
            Some(t) if projects.is_empty() && pages < 50 => request.page_token = Some(t.clone()),
            _ => break,
        }
    }
    Ok(Json(ListProjectsResponse {
        projects,
        next_page_token,
    }))
}

async fn get_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(rest): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    let op = operations::get(&state, &format!("operations/{rest}")).await?;
    // Seeing a project operation takes seeing its project (still there or not).
    let project = op
        .response
        .as_ref()
        .and_then(|r| r.get("name"))
        .and_then(serde_json::Value::as_str)
        .and_then(|n| n.strip_prefix("projects/"))
        .and_then(|n| n.parse::<i64>().ok());
    let resource = match project {
        Some(n) => crate::authz::Resource::Project(n),
        None => crate::authz::Resource::Organization,
    };
    crate::authz::require(&state, &caller, "resourcemanager.projects.get", &resource).await?;
    Ok(Json(op))
}

// === search, patch, delete, undelete ===

/// The one project named by `/v3/projects/{rest}` (no custom verb), else Google's 404.
fn single_project_ref(rest: &str) -> Result<String, ApiError> {
    let (segments, verb) = split_verb(rest);
    match (segments.as_slice(), verb) {
        ([p], None) => Ok(p.clone()),
        _ => Err(ApiError::not_found(format!(
            "The requested URL /v3/projects/{rest} was not found on this server."
        ))),
    }
}

/// Moves a project to `to` (ACTIVE or DELETE_REQUESTED) in the store and the snapshot: a
/// project being deleted serves nothing; an undeleted one gets its services back.
async fn set_lifecycle(
    state: &AppState,
    mut project: Project,
    to: ProjectState,
) -> Result<Project, ApiError> {
    let expected = project.etag.clone();
    let t = now();
    project.state = to;
    project.delete_time = match to {
        ProjectState::DeleteRequested => Some(t),
        ProjectState::Active => None,
    };
    project.update_time = t;
    project.etag = super::new_etag();
    state
        .store
        .update_project(&project, &expected)
        .await
        .map_err(store_error)?;
    match to {
        ProjectState::DeleteRequested => state.snapshot.deactivate_project(project.number),
        ProjectState::Active => {
            for s in state
                .store
                .list_services(project.number)
                .await
                .map_err(store_error)?
            {
                state.snapshot.set_service(&s);
            }
        }
    }
    Ok(project)
}

/// A finished project operation answering `project`, with `metadata_type` metadata.
async fn project_operation(
    state: &AppState,
    project: &Project,
    metadata_type: &str,
) -> Result<Operation, ApiError> {
    let op = Operation::done_with(
        format!("operations/cp.{}", keyplane_core::new_unique_id()),
        cloud::TYPE_PROJECT,
        serde_json::to_value(cloud::Project::from_model(project))
            .map_err(ApiError::internal_from)?,
    )
    .with_metadata(metadata_type, json!({}));
    operations::record(state, op, &[]).await
}

async fn delete_project(
    State(state): State<AppState>,
    caller: Caller,
    Path(rest): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    let project_ref = single_project_ref(&rest)?;
    let project = crate::authz::project(
        &state,
        &caller,
        "resourcemanager.projects.delete",
        &project_ref,
    )
    .await?;
    if project.state != ProjectState::Active {
        return Err(ApiError::failed_precondition(format!(
            "Project {} is not active: it is already pending deletion (undelete it with \
             POST /v3/projects/{}:undelete).",
            project.project_id, project.number
        )));
    }
    let project = set_lifecycle(&state, project, ProjectState::DeleteRequested).await?;
    Ok(Json(
        project_operation(&state, &project, cloud::TYPE_DELETE_PROJECT_METADATA).await?,
    ))
}

async fn undelete_project(
    state: &AppState,
    caller: &Caller,
    project_ref: &str,
    body: &[u8],
) -> Result<Operation, ApiError> {
    // UndeleteProjectRequest has only `name`, carried by the path.
    let fields: serde_json::Map<String, serde_json::Value> =
        keyplane_wire::parse_json_body_or_default(body)?;
    if let Some(unknown) = fields.keys().find(|k| k.as_str() != "name") {
        return Err(ApiError::bad_request_fields(vec![(
            String::new(),
            format!(
                "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
            ),
        )]));
    }
    let project = crate::authz::project(
        state,
        caller,
        "resourcemanager.projects.undelete",
        project_ref,
    )
    .await?;
    if project.state != ProjectState::DeleteRequested {
        return Err(ApiError::failed_precondition(format!(
            "Project {} is not pending deletion; only a project in state DELETE_REQUESTED can be \
             undeleted.",
            project.project_id
        )));
    }
    let project = set_lifecycle(state, project, ProjectState::Active).await?;
    project_operation(state, &project, cloud::TYPE_UNDELETE_PROJECT_METADATA).await
}

#[derive(Debug, Default, serde::Deserialize)]
struct PatchParams {
    #[serde(default, alias = "update_mask", rename = "updateMask")]
    update_mask: Option<String>,
}

/// Fields of a v3 Project an update may not name.
const IMMUTABLE_PROJECT_FIELDS: [&str; 9] = [
    "name",
    "projectId",
    "parent",
    "state",
    "createTime",
    "updateTime",
    "deleteTime",
    "etag",
    "tags",
];

/// `displayName` / `labels` paths of an UpdateProject mask.
fn parse_project_mask(mask: &str) -> Result<(bool, bool), ApiError> {
    let bad = |msg: String| ApiError::bad_request_fields(vec![("update_mask", msg)]);
    let mut display_name = false;
    let mut labels = false;
    for raw in mask.split(',').map(str::trim) {
        let well_formed = raw == "*"
            || (!raw.is_empty()
                && raw.split('.').all(|seg| {
                    seg.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                        && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                }));
        if !well_formed {
            return Err(bad(format!(
                "Invalid update_mask \"{mask}\": \"{raw}\" is not a field path."
            )));
        }
        let path = keyplane_wire::case::to_camel(raw);
        match path.as_str() {
            "*" => {
                display_name = true;
                labels = true;
            }
            "displayName" => display_name = true,
            "labels" => labels = true,
            p if IMMUTABLE_PROJECT_FIELDS.contains(&p) => {
                return Err(bad(format!(
                    "The update_mask names \"{}\", which cannot be updated; a project's \
                     updatable fields are display_name and labels.",
                    keyplane_wire::case::to_snake(p)
                )))
            }
            _ => {
                return Err(bad(format!(
                    "Invalid update_mask path \"{raw}\": a project's updatable fields are \
                     display_name and labels."
                )))
            }
        }
    }
    Ok((display_name, labels))
}

/// Google's rule for a display name: 4 to 30 letters, digits, hyphens, quotes, spaces, `!`
/// (empty clears it).
fn validate_display_name(name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    let chars_ok = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '\'' | '"' | ' ' | '!'));
    if name.is_empty() || ((4..=30).contains(&n) && chars_ok) {
        return Ok(());
    }
    Err(ApiError::bad_request_fields(vec![(
        "project.display_name",
        format!(
            "Invalid display name \"{name}\": it must be 4 to 30 characters: letters, digits, \
             hyphens, single or double quotes, spaces and exclamation points."
        ),
    )]))
}

/// Label keys `[a-z]([-a-z0-9_]*[a-z0-9])?` (1–63), values `[-a-z0-9_]` (0–63), at most 64.
fn validate_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), ApiError> {
    let bad = |msg: String| Err(ApiError::bad_request_fields(vec![("project.labels", msg)]));
    if labels.len() > 64 {
        return bad(format!(
            "A project has at most 64 labels, got {}.",
            labels.len()
        ));
    }
    let part = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    for (k, v) in labels {
        let key_ok = (1..=63).contains(&k.chars().count())
            && k.starts_with(|c: char| c.is_ascii_lowercase())
            && k.chars().all(part)
            && !k.ends_with(['-', '_']);
        if !key_ok {
            return bad(format!(
                "Invalid label key \"{k}\": 1 to 63 lowercase letters, digits, hyphens and \
                 underscores, starting with a letter and ending with a letter or digit."
            ));
        }
        if v.chars().count() > 63 || !v.chars().all(part) {
            return bad(format!(
                "Invalid value \"{v}\" of label \"{k}\": at most 63 lowercase letters, digits, \
                 hyphens and underscores."
            ));
        }
    }
    Ok(())
}

async fn patch_project(
    State(state): State<AppState>,
    caller: Caller,
    Path(rest): Path<String>,
    Query(params): Query<PatchParams>,
    body: Bytes,
) -> Result<Json<Operation>, ApiError> {
    let project_ref = single_project_ref(&rest)?;
    let mut project = crate::authz::project(
        &state,
        &caller,
        "resourcemanager.projects.update",
        &project_ref,
    )
    .await?;
    let req: cloud::Project = parse_json_body(&body)?;
    let raw: serde_json::Value = serde_json::from_slice(&body).map_err(ApiError::invalid_json)?;
    let present = |camel: &str| {
        raw.get(camel).is_some_and(|v| !v.is_null())
            || raw
                .get(keyplane_wire::case::to_snake(camel).as_str())
                .is_some_and(|v| !v.is_null())
    };
    let (set_display_name, set_labels) = match params
        .update_mask
        .as_deref()
        .filter(|m| !m.trim().is_empty())
    {
        Some(m) => parse_project_mask(m)?,
        None => (present("displayName"), present("labels")),
    };
    if set_display_name {
        validate_display_name(&req.display_name)?;
    }
    if set_labels {
        validate_labels(&req.labels)?;
    }
    if !req.etag.is_empty() && req.etag != project.etag {
        return Err(ApiError::aborted(format!(
            "The etag \"{}\" does not match the current version of project {}; read it again \
             and retry.",
            req.etag, project.project_id
        )));
    }
    if project.state != ProjectState::Active {
        return Err(ApiError::failed_precondition(format!(
            "Project {} is pending deletion and cannot be updated.",
            project.project_id
        )));
    }
    if set_display_name || set_labels {
        let expected = project.etag.clone();
        if set_display_name {
            project.display_name = req.display_name.clone();
        }
        if set_labels {
            project.labels = req.labels.clone();
        }
        project.update_time = now();
        project.etag = super::new_etag();
        state
            .store
            .update_project(&project, &expected)
            .await
            .map_err(store_error)?;
    }
    Ok(Json(
        project_operation(&state, &project, cloud::TYPE_UPDATE_PROJECT_METADATA).await?,
    ))
}

#[derive(Debug, Default, serde::Deserialize)]
struct SearchParams {
    #[serde(default)]
    query: Option<String>,
    #[serde(default, alias = "page_size", rename = "pageSize")]
    page_size: Option<String>,
    #[serde(default, alias = "page_token", rename = "pageToken")]
    page_token: Option<String>,
}

/// One `field:value` term of a projects search query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    /// Normalized field (`displayName`, `id`, `state`, `parent`, `parent.type`,
    /// `parent.id`, `labels`, `labels.KEY`), or empty for a bare word.
    field: String,
    /// Lowercased value without a trailing `*`.
    value: String,
    prefix: bool,
}

/// Splits a query into terms: `displayName:how* labels.env:prod "id:my-proj"`.
fn parse_query(query: &str) -> Result<Vec<Term>, ApiError> {
    let bad = |msg: String| ApiError::bad_request_fields(vec![("query", msg)]);
    // Words, keeping quoted runs together.
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in query.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(bad(format!(
            "Invalid query \"{query}\": unbalanced quotes."
        )));
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut terms = Vec::new();
    for w in words {
        if w.eq_ignore_ascii_case("AND") {
            continue;
        }
        if w.eq_ignore_ascii_case("OR") || w.eq_ignore_ascii_case("NOT") {
            return Err(bad(format!(
                "Invalid query \"{query}\": {w} is not supported; terms are combined with AND."
            )));
        }
        let (field, value) = match w.find([':', '=']) {
            Some(i) => (w[..i].to_owned(), w[i + 1..].to_owned()),
            None => (String::new(), w.clone()),
        };
        let lower = field.to_ascii_lowercase();
        let field = match lower.as_str() {
            "" => String::new(),
            "displayname" | "name" => "displayName".to_owned(),
            "id" | "projectid" => "id".to_owned(),
            "state" | "lifecyclestate" => "state".to_owned(),
            "parent" | "parent.type" | "parent.id" | "labels" => lower.clone(),
            l if l.starts_with("labels.") && l.len() > "labels.".len() => {
                format!("labels.{}", &field["labels.".len()..])
            }
            _ => {
                return Err(bad(format!(
                    "Invalid query \"{query}\": unknown field \"{field}\"; searchable fields are \
                     displayName (name), id (projectId), state (lifecycleState), parent, \
                     parent.type, parent.id, labels and labels.KEY."
                )))
            }
        };
        if value.is_empty() {
            return Err(bad(format!(
                "Invalid query \"{query}\": \"{w}\" has no value."
            )));
        }
        let (value, prefix) = match value.strip_suffix('*') {
            Some(v) => (v.to_lowercase(), true),
            None => (value.to_lowercase(), false),
        };
        terms.push(Term {
            field,
            value,
            prefix,
        });
    }
    Ok(terms)
}

fn term_matches(t: &Term, p: &Project) -> bool {
    let is = |s: &str| {
        let s = s.to_lowercase();
        if t.prefix {
            s.starts_with(&t.value)
        } else {
            s == t.value
        }
    };
    let (parent_type, parent_id) = p.parent.split_once('/').unwrap_or(("", ""));
    match t.field.as_str() {
        "" => is(&p.project_id) || is(&p.display_name) || is(&p.number.to_string()),
        "displayName" => is(&p.display_name),
        "id" => is(&p.project_id),
        "state" => is(p.state.as_str()),
        "parent" => is(&p.parent),
        "parent.type" => is(parent_type.trim_end_matches('s')),
        "parent.id" => is(parent_id),
        "labels" => p.labels.iter().any(|(k, v)| is(k) || is(v)),
        field => {
            let key = &field["labels.".len()..];
            p.labels
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(key) && (t.value.is_empty() || is(v)))
        }
    }
}

async fn search_projects(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<SearchParams>,
) -> Result<Json<ListProjectsResponse>, ApiError> {
    let terms = parse_query(params.query.as_deref().unwrap_or_default())?;
    let page_size = match params.page_size.as_deref().filter(|s| !s.is_empty()) {
        None => 0usize,
        Some(s) => s.parse::<usize>().map_err(|_| {
            ApiError::bad_request_fields(vec![(
                "page_size",
                format!("Invalid value \"{s}\": page_size must be a non-negative integer."),
            )])
        })?,
    };
    let page_size = if page_size == 0 {
        50
    } else {
        page_size.min(500)
    };
    let offset = match params.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0usize,
        Some(t) => t
            .strip_prefix("s1.")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError::bad_request_fields(vec![(
                    "page_token",
                    "Invalid page_token: it was not returned by a projects search.".to_owned(),
                )])
            })?,
    };
    let everything = crate::authz::allowed(
        &state,
        &caller.principal,
        "resourcemanager.projects.get",
        &crate::authz::Resource::Organization,
    )
    .await?;
    let mut matched = Vec::new();
    let mut request = keyplane_store::PageRequest {
        page_size: keyplane_store::MAX_PAGE_SIZE,
        page_token: None,
    };
    loop {
        let page = state
            .store
            .list_projects(true, &request)
            .await
            .map_err(store_error)?;
        for p in page.items {
            if !terms.iter().all(|t| term_matches(t, &p)) {
                continue;
            }
            if everything
                || crate::authz::allowed(
                    &state,
                    &caller.principal,
                    "resourcemanager.projects.get",
                    &crate::authz::Resource::Project(p.number),
                )
                .await?
            {
                matched.push(p);
            }
        }
        match page.next_page_token {
            Some(t) => request.page_token = Some(t),
            None => break,
        }
    }
    let projects: Vec<cloud::Project> = matched
        .iter()
        .skip(offset)
        .take(page_size)
        .map(cloud::Project::from_model)
        .collect();
    let next = offset + projects.len();
    Ok(Json(ListProjectsResponse {
        projects,
        next_page_token: (next < matched.len()).then(|| format!("s1.{next}")),
    }))
}

#[cfg(test)]
mod lifecycle_tests {
    use super::*;

    fn project(id: &str, name: &str, labels: &[(&str, &str)]) -> Project {
        let t = now();
        Project {
            number: 123456789012,
            project_id: id.into(),
            display_name: name.into(),
            parent: "organizations/42".into(),
            state: ProjectState::Active,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            tier: "free".into(),
            studio_visible: false,
            created_by: "system".into(),
            create_time: t,
            update_time: t,
            delete_time: None,
            etag: "e".into(),
        }
    }

    fn matches(q: &str, p: &Project) -> bool {
        parse_query(q).unwrap().iter().all(|t| term_matches(t, p))
    }

    #[test]
    fn search_queries() {
        let p = project("my-proj-123", "My Proj", &[("env", "dev")]);
        for yes in [
            "",
            "id:my-proj-123",
            "projectId=MY-PROJ-123",
            "displayName:my*",
            "name:\"My Proj\"",
            "state:ACTIVE",
            "lifecycleState:active",
            "parent:organizations/42",
            "parent.type:organization parent.id:42",
            "labels.env:dev",
            "labels.env:*",
            "labels:dev",
            "my-proj*",
            "id:my* AND labels.env:d*",
        ] {
            assert!(matches(yes, &p), "{yes}");
        }
        for no in [
            "id:my-proj",
            "state:DELETE_REQUESTED",
            "labels.env:prod",
            "labels.team:*",
            "parent.id:43",
        ] {
            assert!(!matches(no, &p), "{no}");
        }
        for bad in ["foo:bar", "id:", "name:\"unterminated", "id:a OR id:b"] {
            let e = parse_query(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
        }
    }

    #[test]
    fn update_masks_and_values() {
        assert_eq!(parse_project_mask("displayName").unwrap(), (true, false));
        assert_eq!(
            parse_project_mask("display_name,labels").unwrap(),
            (true, true)
        );
        assert_eq!(parse_project_mask("*").unwrap(), (true, true));
        for bad in [
            "projectId",
            "name",
            "parent",
            "foo",
            "displayName,",
            "display name",
        ] {
            assert_eq!(parse_project_mask(bad).unwrap_err().code, 400, "{bad}");
        }
        for ok in ["", "Prod 1", "It's \"ok\"!", "abcd"] {
            validate_display_name(ok).unwrap();
        }
        for bad in ["abc", "this display name is far too long", "semi;colon"] {
            assert!(validate_display_name(bad).is_err(), "{bad}");
        }
        let labels = |k: &str, v: &str| [(k.to_owned(), v.to_owned())].into_iter().collect();
        validate_labels(&labels("env", "dev_1")).unwrap();
        validate_labels(&labels("env", "")).unwrap();
        for (k, v) in [
            ("Env", "x"),
            ("1env", "x"),
            ("env-", "x"),
            ("env", "Dev"),
            ("", "x"),
        ] {
            assert!(validate_labels(&labels(k, v)).is_err(), "{k}={v}");
        }
    }
}
