//! The audit log: a middleware on the whole router that records every mutating
//! control-plane request (POST, PATCH, PUT, DELETE) once it has been answered: when, who
//! (the principal the handler's `Caller` extractor resolved, if it got that far), the
//! method, the resource (the request path; the query string is dropped entirely, so a
//! `?keyString=` never lands in the log), and the result (`allowed` for 2xx, `denied` for
//! 401 and 403, `failed` otherwise) with the HTTP status.
//!
//! Not recorded: the data plane (`/v1*/models/…`, `/v1*/publishers/…`, the project-scoped
//! Vertex path, ephemeral tokens `/v1alpha/auth_tokens`), `/token` and `auth:signIn`
//! (credentials, not resources), and reads.
//!
//! Also serves `GET /v1/keyplane/auditLogs?project=P&since=RFC3339&pageSize&pageToken`.

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use http::Method;
use keyplane_core::{now, rfc3339, AuditEntry};
use keyplane_store::AuditFilter;
use keyplane_wire::ApiError;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

use crate::app::AppState;
use crate::authz::{self, Resource};
use crate::controlplane::{store_error, ListParams};
use crate::identity::Caller;

/// The permission `auditLogs.list` checks on the organization.
pub const LIST_PERMISSION: &str = "resourcemanager.organizations.getIamPolicy";

/// Where the `Caller` extractor leaves the principal it resolved, for the audit middleware
/// to read once the handler has answered. Placed in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PrincipalSlot(Arc<Mutex<Option<String>>>);

impl PrincipalSlot {
    pub fn set(&self, principal: &str) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(principal.to_owned());
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// Whether a request is a control-plane mutation the log records.
pub fn audited(method: &Method, path: &str) -> bool {
    if !matches!(
        *method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    ) {
        return false;
    }
    if path == "/token" || path.ends_with("auth:signIn") {
        return false;
    }
    let mut segments = path.trim_start_matches('/').split('/');
    let version = segments.next().unwrap_or_default();
    let collection = segments.next().unwrap_or_default();
    let data_plane = version.starts_with("v1")
        && (matches!(
            collection,
            "models" | "publishers" | "auth_tokens" | "authTokens"
        ) || path.contains("/publishers/"));
    !data_plane
}

/// The project a path names, as written (`/v2/projects/123/...`, `/v3/projects/p:undelete`).
pub fn project_of(path: &str) -> Option<String> {
    let rest = path.split_once("/projects/")?.1;
    let segment = rest.split('/').next()?;
    let segment = segment.split(':').next()?;
    let segment = urlencoding::decode(segment)
        .map(|s| s.into_owned())
        .unwrap_or_else(|_| segment.to_owned());
    (!segment.is_empty()).then_some(segment)
}

/// `allowed`, `denied` or `failed`.
pub fn result_of(status: u16) -> &'static str {
    match status {
        200..=299 => "allowed",
        401 | 403 => "denied",
        _ => "failed",
    }
}

/// An audited request on its way (the middleware's half-done entry): begun before the
/// handler runs, finished with the status it answered.
#[derive(Debug)]
pub struct Pending {
    method: Method,
    path: String,
    slot: PrincipalSlot,
}

impl Pending {
    /// `None` for a request the log does not record (reads, the data plane); otherwise
    /// leaves a [`PrincipalSlot`] in the request for the `Caller` extractor to fill.
    pub fn begin(req: &mut Request) -> Option<Pending> {
        // The path only: the query string is never looked at.
        if !audited(req.method(), req.uri().path()) {
            return None;
        }
        let pending = Pending {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            slot: PrincipalSlot::default(),
        };
        req.extensions_mut().insert(pending.slot.clone());
        Some(pending)
    }

    /// Appends the entry (before answering, so a client that reads the log right after
    /// sees its own call).
    pub async fn finish(self, state: &AppState, status: u16) {
        let entry = AuditEntry {
            time: now(),
            principal: self.slot.get().unwrap_or_default(),
            method: self.method.as_str().to_owned(),
            project: project_of(&self.path),
            resource: self.path,
            result: result_of(status).to_owned(),
            status,
        };
        if let Err(e) = state.store.append_audit(&entry).await {
            tracing::error!(error = %e, method = %entry.method, resource = %entry.resource,
                "could not write an audit entry");
        }
    }
}

/// The middleware as a function: runs the request, then appends its entry.
pub async fn record(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let pending = Pending::begin(&mut req);
    let resp = next.run(req).await;
    if let Some(pending) = pending {
        pending.finish(&state, resp.status().as_u16()).await;
    }
    resp
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/keyplane/auditLogs", get(list))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditQuery {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default, flatten)]
    list: ListParams,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditLogJson {
    time: String,
    principal: String,
    method: String,
    resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    result: String,
    status: u16,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListAuditLogsResponse {
    audit_logs: Vec<AuditLogJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<ListAuditLogsResponse>, ApiError> {
    authz::require(&state, &caller, LIST_PERMISSION, &Resource::Organization).await?;
    let mut filter = AuditFilter::default();
    if let Some(p) = q.project.as_deref().filter(|p| !p.is_empty()) {
        let p = p.strip_prefix("projects/").unwrap_or(p);
        // Entries name a project as the caller of the audited request wrote it: by id or
        // by number. Match both when the project exists (deleted ones keep theirs).
        filter.projects.push(p.to_owned());
        if let Some(project) = authz::find_project(&state, p).await? {
            filter.projects.push(project.project_id.clone());
            filter.projects.push(project.number.to_string());
        }
        filter.projects.sort();
        filter.projects.dedup();
    }
    if let Some(s) = q.since.as_deref().filter(|s| !s.is_empty()) {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                ApiError::bad_request_fields(vec![(
                    "since",
                    format!("Invalid value \"{s}\": expected an RFC 3339 timestamp."),
                )])
            })?;
        filter.since = Some(t);
    }
    let page = state
        .store
        .list_audit(&filter, &q.list.page()?)
        .await
        .map_err(store_error)?;
    Ok(Json(ListAuditLogsResponse {
        audit_logs: page
            .items
            .into_iter()
            .map(|e| AuditLogJson {
                time: rfc3339(e.time),
                principal: e.principal,
                method: e.method,
                resource: e.resource,
                project: e.project,
                result: e.result,
                status: e.status,
            })
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_control_plane_mutations_are_audited() {
        assert!(audited(
            &Method::POST,
            "/v2/projects/p/locations/global/keys"
        ));
        assert!(audited(
            &Method::PATCH,
            "/v2/projects/p/locations/global/keys/k"
        ));
        assert!(audited(&Method::DELETE, "/v3/projects/p"));
        assert!(audited(&Method::POST, "/v1/keyplane/users"));
        assert!(!audited(&Method::GET, "/v2/keys:lookupKey"));
        assert!(!audited(&Method::POST, "/token"));
        assert!(!audited(&Method::POST, "/v1alpha/auth_tokens"));
        assert!(!audited(&Method::POST, "/v1/keyplane/auth:signIn"));
        assert!(!audited(&Method::POST, "/v1beta/models/m:generateContent"));
        assert!(!audited(
            &Method::POST,
            "/v1/publishers/google/models/m:generateContent"
        ));
        assert!(!audited(
            &Method::POST,
            "/v1/projects/p/locations/us-central1/publishers/google/models/m:generateContent"
        ));
    }

    #[test]
    fn projects_are_read_from_paths() {
        assert_eq!(
            project_of("/v2/projects/123/locations/global/keys/k").as_deref(),
            Some("123")
        );
        assert_eq!(
            project_of("/v3/projects/my-p:undelete").as_deref(),
            Some("my-p")
        );
        assert_eq!(project_of("/v3/projects").as_deref(), None);
        assert_eq!(project_of("/v1/keyplane/users"), None);
    }

    #[test]
    fn results() {
        assert_eq!(result_of(200), "allowed");
        assert_eq!(result_of(401), "denied");
        assert_eq!(result_of(403), "denied");
        assert_eq!(result_of(400), "failed");
        assert_eq!(result_of(500), "failed");
    }
}
