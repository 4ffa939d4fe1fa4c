//! Resource Manager v3: projects (create, get, list) and their operations.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use keyplane_core::{now, services, Project, ProjectState, ServiceState};
use keyplane_wire::cloud::{self, ListProjectsResponse, Operation};
use keyplane_wire::{parse_json_body, ApiError};
use serde_json::json;

use super::{operations, resolve_project, split_verb, store_error, ListParams};
use crate::app::AppState;
use crate::identity::Caller;

const HOST: &str = "cloudresourcemanager.googleapis.com";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/projects", get(list_projects).post(create_project))
        .route("/v3/projects/{*rest}", get(get_project))
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
    _caller: Caller,
    Path(rest): Path<String>,
) -> Result<Json<cloud::Project>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    if segments.len() != 1 || verb.is_some() {
        return Err(ApiError::not_found(format!(
            "The requested URL /v3/projects/{rest} was not found on this server."
        )));
    }
    let project =
        resolve_project(&state, &segments[0], "resourcemanager.projects.get", HOST).await?;
    Ok(Json(cloud::Project::from_model(&project)))
}

async fn list_projects(
    State(state): State<AppState>,
    _caller: Caller,
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
    let page = state
        .store
        .list_projects(params.show_deleted()?, &params.page()?)
        .await
        .map_err(store_error)?;
    Ok(Json(ListProjectsResponse {
        projects: page.items.iter().map(cloud::Project::from_model).collect(),
        next_page_token: page.next_page_token,
    }))
}

async fn get_operation(
    State(state): State<AppState>,
    _caller: Caller,
    Path(rest): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    Ok(Json(
        operations::get(&state, &format!("operations/{rest}")).await?,
    ))
}
