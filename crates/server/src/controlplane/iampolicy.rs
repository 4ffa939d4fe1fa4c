//! Resource Manager v3 IAM methods and organizations: `getIamPolicy`, `setIamPolicy`
//! (etag-checked read-modify-write) and `testIamPermissions` on `projects/{p}` and
//! `organizations/{o}`, plus `organizations.get` and `organizations.search`.
//!
//! Project verbs arrive through the POST dispatcher of [`super::projects`] (which owns
//! `POST /v3/projects/{x}:verb`); organization routes are registered here.

use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use keyplane_core::iam::{self, Policy, PolicyError};
use keyplane_core::Organization;
use keyplane_store::StoreError;
use keyplane_wire::{parse_json_body_or_default, ApiError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;

use super::{split_verb, store_error};
use crate::app::AppState;
use crate::authz::{self, Resource};
use crate::identity::Caller;

/// The most permissions one testIamPermissions call may ask about.
const MAX_TESTED_PERMISSIONS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/organizations:search", get(search_organizations))
        .route(
            "/v3/organizations/{*rest}",
            get(get_organization).post(organization_verb),
        )
        // Resource Manager v1 (gcloud, Terraform): the same three methods, same JSON.
        .route("/v1/projects/{p}", post(v1_project_verb))
        .route("/v1/organizations/{*rest}", post(organization_verb))
}

// === request bodies ===

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetPolicyOptions {
    #[serde(default, alias = "requested_policy_version")]
    requested_policy_version: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetIamPolicyRequest {
    #[serde(default)]
    options: Option<GetPolicyOptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBinding {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    members: Option<Vec<String>>,
    #[serde(default)]
    condition: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePolicy {
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    bindings: Option<Vec<WireBinding>>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default, alias = "audit_configs")]
    audit_configs: Option<Vec<Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetIamPolicyRequest {
    #[serde(default)]
    policy: Option<WirePolicy>,
    #[serde(default, alias = "update_mask")]
    update_mask: Option<Value>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct TestIamPermissionsRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    permissions: Vec<String>,
}

/// `google.cloud.resourcemanager.v3.Organization`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOrganization {
    name: String,
    display_name: String,
    state: &'static str,
    create_time: String,
    update_time: String,
    etag: String,
}

impl WireOrganization {
    fn from_model(org: &Organization) -> Self {
        let t = keyplane_core::rfc3339(org.create_time);
        WireOrganization {
            name: format!("organizations/{}", org.number),
            display_name: org.display_name.clone(),
            state: "ACTIVE",
            create_time: t.clone(),
            update_time: t,
            // Stable for an organization that never changes.
            etag: format!("W/\"{:x}\"", org.number),
        }
    }
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct SearchOrganizationsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    organizations: Vec<WireOrganization>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchParams {
    #[serde(default)]
    query: Option<String>,
    #[serde(default, alias = "page_size")]
    page_size: Option<String>,
    #[serde(default, alias = "page_token")]
    page_token: Option<String>,
}

// === the three IAM methods, for any resource ===

/// Which kind of resource a policy method runs on, and the permission names it uses.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Project,
    Organization,
}

impl Kind {
    fn permission(self, verb: &str) -> &'static str {
        match (self, verb) {
            (Kind::Project, "getIamPolicy") => "resourcemanager.projects.getIamPolicy",
            (Kind::Project, _) => "resourcemanager.projects.setIamPolicy",
            (Kind::Organization, "getIamPolicy") => "resourcemanager.organizations.getIamPolicy",
            (Kind::Organization, _) => "resourcemanager.organizations.setIamPolicy",
        }
    }
}

fn policy_version(v: Option<&Value>, field: &str) -> Result<i64, ApiError> {
    let bad = |shown: String| {
        ApiError::bad_request_fields(vec![(
            field.to_owned(),
            format!("Invalid policy version {shown}: use 0, 1 or 3."),
        )])
    };
    let n = match v {
        None | Some(Value::Null) => return Ok(1),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad(n.to_string()))?,
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| bad(format!("\"{s}\"")))?,
        Some(other) => return Err(bad(other.to_string())),
    };
    match n {
        0 | 1 | 3 => Ok(n),
        _ => Err(bad(n.to_string())),
    }
}

/// The policy as clients see it: version 1 (Keyplane has no conditional bindings).
fn wire_policy(mut p: Policy) -> Json<Policy> {
    p.version = 1;
    Json(p)
}

async fn get_policy(
    state: &AppState,
    resource: &Resource,
    body: &[u8],
) -> Result<Json<Policy>, ApiError> {
    let req: GetIamPolicyRequest = parse_json_body_or_default(body)?;
    if let Some(opts) = &req.options {
        policy_version(
            opts.requested_policy_version.as_ref(),
            "options.requested_policy_version",
        )?;
    }
    Ok(wire_policy(authz::policy(state, resource).await?))
}

fn concurrent_change() -> ApiError {
    ApiError::aborted(
        "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.",
    )
}

fn policy_error(e: PolicyError) -> ApiError {
    ApiError::bad_request_fields(vec![("policy.bindings", e.to_string())])
}

/// The fields an update mask names (default `bindings,etag`).
fn mask_paths(mask: Option<&Value>) -> Result<BTreeSet<String>, ApiError> {
    let bad = |shown: &str| {
        ApiError::bad_request_fields(vec![(
            "update_mask",
            format!(
                "Invalid update mask path \"{shown}\": setIamPolicy updates bindings, etag and audit_configs."
            ),
        )])
    };
    let paths: Vec<String> = match mask {
        None | Some(Value::Null) => return Ok(["bindings", "etag"].map(String::from).into()),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Ok(["bindings", "etag"].map(String::from).into())
        }
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_owned()).collect(),
        Some(Value::Object(o)) => match o.get("paths") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(&v.to_string()))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad(&Value::Object(o.clone()).to_string())),
        },
        Some(other) => return Err(bad(&other.to_string())),
    };
    let mut out = BTreeSet::new();
    for p in paths {
        let canonical = match p.as_str() {
            "bindings" => "bindings",
            "etag" => "etag",
            "version" => "version",
            "audit_configs" | "auditConfigs" => "audit_configs",
            other => return Err(bad(other)),
        };
        out.insert(canonical.to_owned());
    }
    Ok(out)
}

async fn set_policy(
    state: &AppState,
    resource: &Resource,
    body: &[u8],
) -> Result<Json<Policy>, ApiError> {
    let req: SetIamPolicyRequest = parse_json_body_or_default(body)?;
    let Some(wire) = req.policy else {
        return Err(ApiError::bad_request_fields(vec![(
            "policy",
            "policy is required.",
        )]));
    };
    let mask = mask_paths(req.update_mask.as_ref())?;
    policy_version(wire.version.as_ref(), "policy.version")?;
    if mask.contains("audit_configs") && wire.audit_configs.as_ref().is_some_and(|a| !a.is_empty())
    {
        return Err(ApiError::bad_request_fields(vec![(
            "policy.audit_configs",
            "Audit configs are not supported by Keyplane.",
        )]));
    }
    let name = resource.name(state);
    let stored = state.store.iam_policy(&name).await.map_err(store_error)?;
    let current = stored.clone().unwrap_or_else(Policy::empty);
    if let Some(etag) = wire.etag.as_deref().filter(|e| !e.is_empty()) {
        if etag != current.etag {
            return Err(concurrent_change());
        }
    }

    let mut next = Policy {
        version: 1,
        bindings: current.bindings.clone(),
        etag: String::new(),
    };
    if mask.contains("bindings") {
        let mut bindings = Vec::new();
        for (i, b) in wire.bindings.unwrap_or_default().into_iter().enumerate() {
            if b.condition.as_ref().is_some_and(|c| !c.is_null()) {
                return Err(ApiError::bad_request_fields(vec![(
                    format!("policy.bindings[{i}].condition"),
                    "Conditional role bindings are not supported by Keyplane.".to_owned(),
                )]));
            }
            let role = b.role.unwrap_or_default();
            if role.is_empty() {
                return Err(ApiError::bad_request_fields(vec![(
                    format!("policy.bindings[{i}].role"),
                    "A binding needs a role.".to_owned(),
                )]));
            }
            bindings.push(iam::Binding {
                role,
                members: b.members.unwrap_or_default(),
            });
        }
        next.bindings = bindings;
    }
    let mut next = next
        .normalized(matches!(resource, Resource::Organization))
        .map_err(policy_error)?;

    // A service account newly named must exist (Google: "Service account … does not
    // exist."); members already in the policy are kept as they are.
    let before: BTreeSet<&str> = current
        .bindings
        .iter()
        .flat_map(|b| b.members.iter().map(String::as_str))
        .collect();
    let added: BTreeSet<String> = next
        .bindings
        .iter()
        .flat_map(|b| b.members.iter())
        .filter(|m| !before.contains(m.as_str()))
        .cloned()
        .collect();
    for m in &added {
        if let Some(email) = m.strip_prefix("serviceAccount:") {
            if email.ends_with(".iam.gserviceaccount.com") {
                match state.store.service_account(email).await {
                    Ok(_) => {}
                    Err(StoreError::NotFound) => {
                        return Err(ApiError::bad_request_fields(vec![(
                            "policy.bindings",
                            format!("Service account {email} does not exist."),
                        )]))
                    }
                    Err(e) => return Err(store_error(e)),
                }
            }
        }
    }

    next.etag = iam::new_policy_etag();
    let expected = stored.as_ref().map(|p| p.etag.as_str());
    let put = state.store.put_iam_policy(&name, &next, expected).await;
    state.directory.forget_policy(&name);
    match put {
        Ok(()) => {}
        Err(StoreError::EtagMismatch) => return Err(concurrent_change()),
        Err(e) => return Err(store_error(e)),
    }
    tracing::info!(resource = %name, "IAM policy set");
    Ok(wire_policy(next))
}

async fn test_permissions(
    state: &AppState,
    caller: &Caller,
    resource: Option<&Resource>,
    body: &[u8],
) -> Result<Json<TestIamPermissionsRequest>, ApiError> {
    let req: TestIamPermissionsRequest = parse_json_body_or_default(body)?;
    if req.permissions.len() > MAX_TESTED_PERMISSIONS {
        return Err(ApiError::bad_request_fields(vec![(
            "permissions",
            format!("At most {MAX_TESTED_PERMISSIONS} permissions may be tested at once."),
        )]));
    }
    for (i, p) in req.permissions.iter().enumerate() {
        if p.contains('*') {
            return Err(ApiError::bad_request_fields(vec![(
                format!("permissions[{i}]"),
                format!("Permissions with wildcards ({p}) are not allowed."),
            )]));
        }
    }
    // An unknown resource answers like one on which the caller holds nothing.
    let held = match resource {
        Some(r) => authz::permissions(state, &caller.principal, r).await?,
        None => BTreeSet::new(),
    };
    let mut seen = BTreeSet::new();
    let permissions = req
        .permissions
        .into_iter()
        .filter(|p| held.contains(p.as_str()) && seen.insert(p.clone()))
        .collect();
    Ok(Json(TestIamPermissionsRequest { permissions }))
}

// === projects ===

/// `POST /v3/projects/{id or number}:{getIamPolicy|setIamPolicy|testIamPermissions}`;
/// `None` when `verb` is not one of them.
pub async fn project_verb(
    state: &AppState,
    caller: &Caller,
    project_ref: &str,
    verb: &str,
    body: &[u8],
) -> Option<Result<Json<Value>, ApiError>> {
    let result = match verb {
        "getIamPolicy" | "setIamPolicy" => {
            let permission = Kind::Project.permission(verb);
            match authz::project(state, caller, permission, project_ref).await {
                Err(e) => Err(e),
                Ok(project) => {
                    let resource = Resource::Project(project.number);
                    if verb == "getIamPolicy" {
                        get_policy(state, &resource, body).await
                    } else {
                        set_policy(state, &resource, body).await
                    }
                    .and_then(to_value)
                }
            }
        }
        "testIamPermissions" => match authz::find_project(state, project_ref).await {
            Err(e) => Err(e),
            Ok(found) => {
                let resource = found.map(|p| Resource::Project(p.number));
                test_permissions(state, caller, resource.as_ref(), body)
                    .await
                    .and_then(to_value)
            }
        },
        _ => return None,
    };
    Some(result)
}

/// `POST /v1/projects/{projectId}:verb` (Resource Manager v1).
async fn v1_project_verb(
    State(state): State<AppState>,
    caller: Caller,
    Path(rest): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        ApiError::not_found(format!(
            "The requested URL /v1/projects/{rest} was not found on this server."
        ))
    };
    let (segments, verb) = split_verb(&rest);
    match (segments.as_slice(), verb.as_deref()) {
        ([p], Some(v)) => project_verb(&state, &caller, p, v, &body)
            .await
            .unwrap_or_else(|| Err(not_found())),
        _ => Err(not_found()),
    }
}

fn to_value<T: Serialize>(Json(v): Json<T>) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(v)
        .map(Json)
        .map_err(ApiError::internal_from)
}

// === organizations ===

fn org_not_found_path(uri: &Uri) -> ApiError {
    ApiError::not_found(format!(
        "The requested URL {} was not found on this server.",
        uri.path()
    ))
}

async fn the_organization(state: &AppState) -> Result<Organization, ApiError> {
    state
        .store
        .organization()
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::internal_from("the organization is missing"))
}

async fn get_organization(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path(rest): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    if segments.len() != 1 || verb.is_some() {
        return Err(org_not_found_path(&uri));
    }
    authz::organization(
        &state,
        &caller,
        "resourcemanager.organizations.get",
        &segments[0],
    )
    .await?;
    let org = the_organization(&state).await?;
    to_value(Json(WireOrganization::from_model(&org)))
}

async fn organization_verb(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path(rest): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (segments, verb) = split_verb(&rest);
    let (org_ref, verb) = match (segments.as_slice(), verb.as_deref()) {
        ([o], Some(v)) => (o.as_str(), v),
        _ => return Err(org_not_found_path(&uri)),
    };
    match verb {
        "getIamPolicy" | "setIamPolicy" => {
            let permission = Kind::Organization.permission(verb);
            let resource = authz::organization(&state, &caller, permission, org_ref).await?;
            if verb == "getIamPolicy" {
                to_value(get_policy(&state, &resource, &body).await?)
            } else {
                to_value(set_policy(&state, &resource, &body).await?)
            }
        }
        "testIamPermissions" => {
            let resource =
                (org_ref == state.organization.to_string()).then_some(Resource::Organization);
            to_value(test_permissions(&state, &caller, resource.as_ref(), &body).await?)
        }
        _ => Err(org_not_found_path(&uri)),
    }
}

/// Whether the organization matches a search query (`domain:`, `displayName:` or
/// `directoryCustomerId:` terms, case-insensitive, `*` suffix for a prefix).
fn org_matches(org: &Organization, query: &str) -> Result<bool, ApiError> {
    for term in query.split_whitespace() {
        let Some((field, value)) = term.split_once(':').or_else(|| term.split_once('=')) else {
            return Err(ApiError::bad_request_fields(vec![(
                "query",
                format!("Invalid query term \"{term}\": use field:value."),
            )]));
        };
        let value = value.trim_matches('"').to_ascii_lowercase();
        let name = org.display_name.to_ascii_lowercase();
        let hit = match field {
            "domain" | "displayName" | "display_name" => match value.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == value,
            },
            "directoryCustomerId" | "directory_customer_id" => false,
            other => {
                return Err(ApiError::bad_request_fields(vec![(
                    "query",
                    format!("Invalid query field \"{other}\": use domain or directoryCustomerId."),
                )]))
            }
        };
        if !hit {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn search_organizations(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<SearchParams>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = params.page_size.as_deref().filter(|s| !s.is_empty()) {
        if s.parse::<u32>().is_err() {
            return Err(ApiError::bad_request_fields(vec![(
                "page_size",
                format!("Invalid value \"{s}\": page_size must be a non-negative integer."),
            )]));
        }
    }
    if params.page_token.as_deref().is_some_and(|t| !t.is_empty()) {
        // One organization fits on the first page: no token is ever issued.
        return Err(ApiError::bad_request_fields(vec![(
            "page_token",
            "Invalid page token.",
        )]));
    }
    let org = the_organization(&state).await?;
    let query = params.query.unwrap_or_default();
    let visible = authz::allowed(
        &state,
        &caller.principal,
        "resourcemanager.organizations.get",
        &Resource::Organization,
    )
    .await?;
    let mut resp = SearchOrganizationsResponse::default();
    if visible && org_matches(&org, &query)? {
        resp.organizations.push(WireOrganization::from_model(&org));
    }
    to_value(Json(resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_masks() {
        let all = |m: Option<Value>| mask_paths(m.as_ref()).unwrap();
        assert_eq!(
            all(None),
            BTreeSet::from(["bindings".to_owned(), "etag".to_owned()])
        );
        assert_eq!(
            all(Some(Value::String("bindings".into()))),
            BTreeSet::from(["bindings".to_owned()])
        );
        assert_eq!(
            all(Some(serde_json::json!({"paths": ["etag", "auditConfigs"]}))),
            BTreeSet::from(["etag".to_owned(), "audit_configs".to_owned()])
        );
        assert!(mask_paths(Some(&Value::String("bindings,owner".into()))).is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(policy_version(None, "v").unwrap(), 1);
        assert_eq!(policy_version(Some(&serde_json::json!(3)), "v").unwrap(), 3);
        assert_eq!(
            policy_version(Some(&serde_json::json!("0")), "v").unwrap(),
            0
        );
        assert!(policy_version(Some(&serde_json::json!(2)), "v").is_err());
        assert!(policy_version(Some(&serde_json::json!(true)), "v").is_err());
    }

    #[test]
    fn organization_queries() {
        let org = Organization {
            number: 1,
            display_name: "keyplane".into(),
            create_time: keyplane_core::now(),
        };
        assert!(org_matches(&org, "").unwrap());
        assert!(org_matches(&org, "domain:keyplane").unwrap());
        assert!(org_matches(&org, "displayName:Key*").unwrap());
        assert!(!org_matches(&org, "domain:example.com").unwrap());
        assert!(org_matches(&org, "owner:x").is_err());
    }
}
