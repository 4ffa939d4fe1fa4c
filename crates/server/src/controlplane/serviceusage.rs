//! Service Usage v1: enable, disable, batchEnable, get and list services of a project.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use keyplane_core::{now, services, Project, ServiceState};
use keyplane_store::StoreError;
use keyplane_wire::cloud::{self, ListServicesResponse, Operation, Service};
use keyplane_wire::{parse_json_body_or_default, ApiError, Code, Detail};
use serde_json::Value;

use super::{operations, split_verb, store_error, ListParams, ProjectsRest};
use crate::app::AppState;
use crate::identity::Caller;

const HOST: &str = "serviceusage.googleapis.com";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/projects/{p}/services", get(get_dispatch))
        .route(
            "/v1/projects/{p}/services/{s}",
            get(get_dispatch).post(post_dispatch),
        )
        .route("/v1/projects/{p}/services:batchEnable", post(post_dispatch))
        .route("/v1/projects/{p}/services:batchGet", get(get_dispatch))
        .route("/v1/operations/{*rest}", get(get_operation))
}

/// Google's answer for a service it does not know (or the caller may not see).
fn unknown_service(service: &str) -> ApiError {
    ApiError::new(
        Code::PermissionDenied,
        format!("Not found or permission denied for service(s): {service}."),
    )
    .with_detail(Detail::error_info(
        "SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED",
        HOST,
        [("services", service.to_owned())],
    ))
}

fn title_of(service: &str) -> Result<&'static str, ApiError> {
    services::service_title(service).ok_or_else(|| unknown_service(service))
}

fn not_found_path(rest: &str) -> ApiError {
    ApiError::not_found(format!(
        "The requested URL /v1/projects/{rest} was not found on this server."
    ))
}

/// Whether `service` is enabled in `project` (never recorded = disabled).
pub async fn is_enabled(state: &AppState, project: i64, service: &str) -> Result<bool, ApiError> {
    match state.store.service(project, service).await {
        Ok(s) => Ok(s.enabled),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(store_error(e)),
    }
}

/// Records a service state in the store and the snapshot.
pub async fn set_state(
    state: &AppState,
    project: &Project,
    service: &str,
    enabled: bool,
) -> Result<(), ApiError> {
    let s = ServiceState {
        project_number: project.number,
        service: service.to_owned(),
        enabled,
        update_time: now(),
    };
    state.store.set_service(&s).await.map_err(store_error)?;
    state.snapshot.set_service(&s);
    Ok(())
}

fn operation(project: &Project, service: &str, type_url: &str, response: Value) -> Operation {
    Operation::done_with(
        operations::new_name(&format!("acat.p2-{}-", project.number)),
        type_url,
        response,
    )
    .with_metadata(
        cloud::TYPE_SERVICEUSAGE_OPERATION_METADATA,
        serde_json::json!({"resourceNames": [format!("services/{service}/projectSettings/{}", project.number)]}),
    )
}

async fn post_dispatch(
    State(state): State<AppState>,
    caller: Caller,
    ProjectsRest(rest): ProjectsRest,
    body: Bytes,
) -> Result<Json<Operation>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    let (project_ref, service, verb) = match (segments.as_slice(), verb.as_deref()) {
        ([p, s, name], Some(v)) if s == "services" => (p.as_str(), Some(name.as_str()), v),
        ([p, s], Some("batchEnable")) if s == "services" => (p.as_str(), None, "batchEnable"),
        _ => return Err(not_found_path(&rest)),
    };
    let permission = match verb {
        "disable" => "serviceusage.services.disable",
        _ => "serviceusage.services.enable",
    };
    let project = crate::authz::project(&state, &caller, permission, project_ref).await?;
    let op = match (verb, service) {
        ("enable", Some(service)) => {
            let title = title_of(service)?;
            let _: Value = parse_json_body_or_default(&body)?;
            set_state(&state, &project, service, true).await?;
            let svc = Service::new(project.number, service, title, true);
            operation(
                &project,
                service,
                cloud::TYPE_ENABLE_SERVICE_RESPONSE,
                serde_json::json!({"service": svc}),
            )
        }
        ("disable", Some(service)) => {
            let title = title_of(service)?;
            let _req: cloud::DisableServiceRequest = parse_json_body_or_default(&body)?;
            if !is_enabled(&state, project.number, service).await? {
                return Err(ApiError::failed_precondition(format!(
                    "Service {service} is not enabled for consumer projects/{}.",
                    project.number
                )));
            }
            set_state(&state, &project, service, false).await?;
            let svc = Service::new(project.number, service, title, false);
            operation(
                &project,
                service,
                cloud::TYPE_DISABLE_SERVICE_RESPONSE,
                serde_json::json!({"service": svc}),
            )
        }
        ("batchEnable", None) => {
            let req: cloud::BatchEnableServicesRequest = parse_json_body_or_default(&body)?;
            if req.service_ids.is_empty() || req.service_ids.len() > 20 {
                return Err(ApiError::bad_request_fields(vec![(
                    "service_ids",
                    "Between 1 and 20 service ids must be given.",
                )]));
            }
            // Validate all first: a batch enables everything or nothing.
            let mut titles = Vec::new();
            for id in &req.service_ids {
                titles.push(title_of(id)?);
            }
            let mut enabled = Vec::new();
            for (id, title) in req.service_ids.iter().zip(titles) {
                set_state(&state, &project, id, true).await?;
                enabled.push(Service::new(project.number, id, title, true));
            }
            let resp = cloud::BatchEnableServicesResponse {
                services: enabled,
                failures: vec![],
            };
            operation(
                &project,
                &req.service_ids.join(","),
                cloud::TYPE_BATCH_ENABLE_SERVICES_RESPONSE,
                serde_json::to_value(resp).map_err(ApiError::internal_from)?,
            )
        }
        _ => return Err(not_found_path(&rest)),
    };
    Ok(Json(operations::record(&state, op, &[]).await?))
}

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
    match segments.as_slice() {
        [p, s] if s == "services" => {
            let project =
                crate::authz::project(&state, &caller, "serviceusage.services.list", p).await?;
            let stored = state
                .store
                .list_services(project.number)
                .await
                .map_err(store_error)?;
            let want = match params.filter.as_deref().map(str::trim) {
                None | Some("") => None,
                Some("state:ENABLED") => Some(true),
                Some("state:DISABLED") => Some(false),
                Some(other) => {
                    return Err(ApiError::bad_request_fields(vec![(
                        "filter",
                        format!("Invalid filter \"{other}\": use state:ENABLED or state:DISABLED."),
                    )]))
                }
            };
            let services: Vec<Service> = services::KNOWN_SERVICES
                .iter()
                .map(|(name, title)| {
                    let enabled = stored.iter().any(|s| s.service == *name && s.enabled);
                    Service::new(project.number, name, title, enabled)
                })
                .filter(|s| want.is_none_or(|w| (s.state == "ENABLED") == w))
                .collect();
            let resp = ListServicesResponse {
                services,
                next_page_token: None,
            };
            serde_json::to_value(resp)
                .map(Json)
                .map_err(ApiError::internal_from)
        }
        [p, s, name] if s == "services" => {
            let project =
                crate::authz::project(&state, &caller, "serviceusage.services.get", p).await?;
            let title = title_of(name)?;
            let enabled = is_enabled(&state, project.number, name).await?;
            serde_json::to_value(Service::new(project.number, name, title, enabled))
                .map(Json)
                .map_err(ApiError::internal_from)
        }
        _ => Err(not_found_path(&rest)),
    }
}

async fn get_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(rest): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    let name = format!("operations/{rest}");
    crate::authz::require_operation(&state, &caller, &name).await?;
    Ok(Json(operations::get(&state, &name).await?))
}
