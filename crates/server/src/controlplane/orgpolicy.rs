//! Org Policy v2 (`orgpolicy.googleapis.com`) for the constraint Keyplane enforces:
//! `iam.managed.disableServiceAccountApiKeyCreation`, on the organization and its projects.
//!
//! Methods: policies get, list, create, patch, delete and getEffectivePolicy; constraints
//! list. Policies are synchronous (no long-running operations), as Google's are.
//!
//! Evaluation of a boolean constraint for a project: the project's own policy if it sets
//! one (its unconditional rule, or the constraint's default when it says `reset`), else the
//! organization's, else the constraint's default (not enforced). A fresh installation gets
//! an organization policy that enforces it ([`bootstrap_policies`]), as Google gives new
//! organizations. Conditional rules are stored and returned but never match: Keyplane has no
//! tags for their conditions to test.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http::Uri;
use keyplane_core::{now, Project, ProjectState};
use keyplane_store::{OrgPolicyRecord, StoreError};
use keyplane_wire::error::PreconditionViolation;
use keyplane_wire::{parse_json_body, ApiError, Code, Detail};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::store_error;
use crate::app::AppState;
use crate::identity::Caller;

const CRM_HOST: &str = "cloudresourcemanager.googleapis.com";

/// The managed constraint that stops API keys from being bound to service accounts.
pub const DISABLE_SA_API_KEYS: &str = "iam.managed.disableServiceAccountApiKeyCreation";

/// A constraint Keyplane knows: its name and what it says when listed.
struct ConstraintInfo {
    name: &'static str,
    display_name: &'static str,
    description: &'static str,
}

const CONSTRAINTS: &[ConstraintInfo] = &[ConstraintInfo {
    name: DISABLE_SA_API_KEYS,
    display_name: "Block service account API key bindings",
    description: "When enforced, API keys cannot be bound to service accounts: creating or \
                  updating an API key with a serviceAccountEmail is refused in the projects it \
                  applies to. Keys that are not bound to a service account are not affected, \
                  and keys bound before it was enforced keep working.",
}];

fn constraint_info(name: &str) -> Option<&'static ConstraintInfo> {
    CONSTRAINTS.iter().find(|c| c.name == name)
}

pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for kind in ["organizations", "projects", "folders"] {
        r = r
            .route(
                &format!("/v2/{kind}/{{x}}/policies"),
                get(list_policies).post(create_policy),
            )
            .route(
                &format!("/v2/{kind}/{{x}}/policies/{{c}}"),
                get(get_dispatch).patch(update_policy).delete(delete_policy),
            )
            .route(
                &format!("/v2/{kind}/{{x}}/constraints"),
                get(list_constraints),
            );
    }
    r
}

// === wire types (Org Policy v2 JSON) ===

/// `google.cloud.orgpolicy.v2.Policy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PolicySpec>,
    /// Deprecated in the API; refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternate: Option<Value>,
    #[serde(
        default,
        alias = "dry_run_spec",
        skip_serializing_if = "Option::is_none"
    )]
    pub dry_run_spec: Option<PolicySpec>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
}

/// `google.cloud.orgpolicy.v2.PolicySpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Output only here (ignored on input).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    /// Output only.
    #[serde(
        default,
        alias = "update_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub update_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<PolicyRule>>,
    #[serde(
        default,
        alias = "inherit_from_parent",
        skip_serializing_if = "Option::is_none"
    )]
    pub inherit_from_parent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
}

/// `PolicySpec.PolicyRule`: `values`, `allowAll`, `denyAll` and `enforce` are a oneof.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
    #[serde(default, alias = "allow_all", skip_serializing_if = "Option::is_none")]
    pub allow_all: Option<bool>,
    #[serde(default, alias = "deny_all", skip_serializing_if = "Option::is_none")]
    pub deny_all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// `google.type.Expr`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Expr {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expression: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
}

impl PolicySpec {
    /// The spec of a policy that sets the boolean constraint to `enforce`.
    pub fn enforce(enforce: bool) -> Self {
        PolicySpec {
            rules: Some(vec![PolicyRule {
                enforce: Some(enforce),
                ..PolicyRule::default()
            }]),
            ..PolicySpec::default()
        }
    }

    fn rules(&self) -> &[PolicyRule] {
        self.rules.as_deref().unwrap_or_default()
    }

    /// What this spec decides for a boolean constraint: `Some(enforced)`, or `None` to
    /// fall through to the parent. `reset` restores the default (not enforced).
    fn decision(&self) -> Option<bool> {
        if self.reset == Some(true) {
            return Some(false);
        }
        self.rules()
            .iter()
            .find(|r| r.condition.is_none())
            .and_then(|r| r.enforce)
    }

    /// The form kept in the store: output-only fields dropped.
    fn stored(&self) -> PolicySpec {
        PolicySpec {
            etag: String::new(),
            update_time: None,
            ..self.clone()
        }
    }
}

// === resources ===

/// Where a policy lives: the organization, or a project.
enum Parent {
    Organization(i64),
    Project(Box<Project>),
}

impl Parent {
    /// `organizations/{n}` or `projects/{number}`: how responses name it.
    fn name(&self) -> String {
        match self {
            Parent::Organization(n) => format!("organizations/{n}"),
            Parent::Project(p) => format!("projects/{}", p.number),
        }
    }
}

/// `organizations`, `projects` or `folders`: the collection of the request path.
fn kind_of(uri: &Uri) -> &str {
    uri.path()
        .trim_start_matches('/')
        .split('/')
        .nth(1)
        .unwrap_or_default()
}

/// Resolves `{kind}/{x}` to a resource this installation has, once `caller` holds
/// `permission` on it. A resource that does not exist (another organization, a folder, an
/// unknown project) answers 403 exactly as one the caller may not use, as Google does.
async fn parent_for(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
    x: &str,
    permission: &str,
) -> Result<Parent, ApiError> {
    match kind_of(uri) {
        "organizations" => {
            crate::authz::organization(state, caller, permission, x).await?;
            Ok(Parent::Organization(state.organization))
        }
        "projects" => Ok(Parent::Project(Box::new(
            crate::authz::project(state, caller, permission, x).await?,
        ))),
        other => Err(crate::authz::denied(
            permission,
            &format!("//{CRM_HOST}/{other}/{x}"),
        )),
    }
}

fn unknown_constraint(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "Constraint constraints/{name} does not exist; Keyplane supports {}.",
        CONSTRAINTS
            .iter()
            .map(|c| format!("constraints/{}", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn known_constraint(name: &str) -> Result<&'static ConstraintInfo, ApiError> {
    constraint_info(name).ok_or_else(|| unknown_constraint(name))
}

fn policy_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Policy {name} was not found."))
}

/// Refuses writes to a project that is being deleted.
fn writable(parent: &Parent) -> Result<(), ApiError> {
    match parent {
        Parent::Project(p) if p.state != ProjectState::Active => {
            Err(ApiError::failed_precondition(format!(
                "Project {} is being deleted; its policies cannot be changed.",
                p.project_id
            )))
        }
        _ => Ok(()),
    }
}

fn decode_spec(column: &str, text: &str) -> Result<Option<PolicySpec>, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::internal_from(format!("stored {column} unreadable: {e}")))
}

/// The wire form of a stored policy.
fn policy_json(p: &OrgPolicyRecord) -> Result<Policy, ApiError> {
    let update_time = Some(keyplane_core::rfc3339(p.update_time));
    let dress = |s: PolicySpec| PolicySpec {
        etag: p.etag.clone(),
        update_time: update_time.clone(),
        ..s
    };
    let spec = decode_spec("spec", &p.spec)?.map(dress);
    let dry_run_spec = match &p.dry_run_spec {
        Some(t) => decode_spec("dry_run_spec", t)?.map(dress),
        None => None,
    };
    Ok(Policy {
        name: format!("{}/policies/{}", p.resource, p.constraint),
        spec,
        alternate: None,
        dry_run_spec,
        etag: p.etag.clone(),
    })
}

/// An opaque policy etag (base64, as Google's `CLi1…` ones are).
fn new_policy_etag() -> String {
    use base64::Engine;
    let mut raw = [0u8; 9];
    rand::Rng::fill(&mut rand::thread_rng(), &mut raw);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

// === validation ===

/// Checks a spec for a boolean constraint; `field` is its proto path
/// (`policy.spec`, `policy.dry_run_spec`).
fn validate_spec(spec: &PolicySpec, field: &str) -> Result<(), ApiError> {
    let bad = |f: String, msg: String| Err(ApiError::bad_request_fields(vec![(f, msg)]));
    if spec.inherit_from_parent == Some(true) {
        return bad(
            format!("{field}.inherit_from_parent"),
            format!(
                "inherit_from_parent can be set only in policies for list constraints; \
                 constraints/{DISABLE_SA_API_KEYS} is a boolean constraint."
            ),
        );
    }
    if spec.reset == Some(true) {
        if !spec.rules().is_empty() {
            return bad(
                format!("{field}.rules"),
                "A policy that sets reset must not have rules.".to_owned(),
            );
        }
        return Ok(());
    }
    let mut unconditional: Option<bool> = None;
    for (i, rule) in spec.rules().iter().enumerate() {
        let at = format!("{field}.rules[{i}]");
        let kinds = [
            rule.values.is_some(),
            rule.allow_all.is_some(),
            rule.deny_all.is_some(),
            rule.enforce.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds > 1 {
            return bad(
                at,
                "Only one of values, allow_all, deny_all and enforce may be set in a rule."
                    .to_owned(),
            );
        }
        if rule.values.is_some() || rule.allow_all.is_some() || rule.deny_all.is_some() {
            return bad(
                at,
                "values, allow_all and deny_all can be used only in policies for list \
                 constraints; a boolean constraint's rule sets enforce."
                    .to_owned(),
            );
        }
        let Some(enforce) = rule.enforce else {
            return bad(
                format!("{at}.enforce"),
                "A rule of a boolean constraint must set enforce.".to_owned(),
            );
        };
        if rule.parameters.is_some() {
            return bad(
                format!("{at}.parameters"),
                format!("constraints/{DISABLE_SA_API_KEYS} takes no parameters."),
            );
        }
        match &rule.condition {
            None => {
                if unconditional.is_some() {
                    return bad(
                        format!("{field}.rules"),
                        "There must be one and only one policy rule where condition is unset."
                            .to_owned(),
                    );
                }
                unconditional = Some(enforce);
            }
            Some(c) if c.expression.trim().is_empty() => {
                return bad(
                    format!("{at}.condition.expression"),
                    "A rule's condition must have an expression.".to_owned(),
                );
            }
            Some(_) => {}
        }
    }
    let Some(base) = unconditional else {
        return bad(
            format!("{field}.rules"),
            "There must be one and only one policy rule where condition is unset (or set \
             reset)."
                .to_owned(),
        );
    };
    if let Some(i) = spec
        .rules()
        .iter()
        .position(|r| r.condition.is_some() && r.enforce == Some(base))
    {
        return bad(
            format!("{field}.rules[{i}].enforce"),
            "Boolean policy rules with conditions must set enforce to the opposite of the \
             policy rule without a condition."
                .to_owned(),
        );
    }
    Ok(())
}

/// Validates a policy body's specs and returns them in their stored form.
fn checked_specs(policy: &Policy) -> Result<(Option<PolicySpec>, Option<PolicySpec>), ApiError> {
    if policy.alternate.is_some() {
        return Err(ApiError::bad_request_fields(vec![(
            "policy.alternate",
            "alternate is deprecated and not supported; use dry_run_spec.".to_owned(),
        )]));
    }
    if let Some(s) = &policy.spec {
        validate_spec(s, "policy.spec")?;
    }
    if let Some(s) = &policy.dry_run_spec {
        validate_spec(s, "policy.dry_run_spec")?;
    }
    Ok((
        policy.spec.as_ref().map(PolicySpec::stored),
        policy.dry_run_spec.as_ref().map(PolicySpec::stored),
    ))
}

fn encode_specs(
    spec: &Option<PolicySpec>,
    dry_run: &Option<PolicySpec>,
) -> Result<(String, Option<String>), ApiError> {
    let spec = serde_json::to_string(spec).map_err(ApiError::internal_from)?;
    let dry_run = match dry_run {
        Some(d) => Some(serde_json::to_string(d).map_err(ApiError::internal_from)?),
        None => None,
    };
    Ok((spec, dry_run))
}

/// `{parent}/policies/{constraint}` of a policy body: the constraint, when the name's
/// resource is `parent` (by project id or number).
fn constraint_of_name(name: &str, x: &str, parent: &Parent) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request_fields(vec![(
            "policy.name",
            format!(
                "Invalid policy name \"{name}\": expected {}/policies/CONSTRAINT_NAME.",
                parent.name()
            ),
        )])
    };
    let parts: Vec<&str> = name.split('/').collect();
    let [kind, id, "policies", constraint] = parts.as_slice() else {
        return Err(bad());
    };
    let same = match parent {
        Parent::Organization(n) => *kind == "organizations" && id.parse::<i64>().ok() == Some(*n),
        Parent::Project(p) => {
            *kind == "projects"
                && (*id == x || *id == p.project_id || id.parse::<i64>().ok() == Some(p.number))
        }
    };
    if !same || constraint.is_empty() {
        return Err(bad());
    }
    Ok((*constraint).to_owned())
}

// === evaluation ===

/// Whether a boolean constraint is enforced for `project` (its own policy, else the
/// organization's, else the constraint's default: not enforced).
pub async fn enforced(
    state: &AppState,
    project: &Project,
    constraint: &str,
) -> Result<bool, ApiError> {
    Ok(effective(state, Some(project), constraint).await?.0)
}

/// The effective decision and the spec that made it (`None`: the constraint's default).
async fn effective(
    state: &AppState,
    project: Option<&Project>,
    constraint: &str,
) -> Result<(bool, Option<PolicySpec>), ApiError> {
    let mut chain = Vec::new();
    if let Some(p) = project {
        chain.push(format!("projects/{}", p.number));
    }
    chain.push(format!("organizations/{}", state.organization));
    for resource in chain {
        let record = match state.store.org_policy(&resource, constraint).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(store_error(e)),
        };
        if let Some(spec) = decode_spec("spec", &record.spec)? {
            if let Some(decided) = spec.decision() {
                let rules = (spec.reset != Some(true)).then_some(spec);
                return Ok((decided, rules));
            }
        }
    }
    Ok((false, None))
}

/// The refusal of a key bound to a service account while the constraint is enforced:
/// FAILED_PRECONDITION naming the constraint, with a `PreconditionFailure`.
pub fn sa_binding_refused(project: &Project, email: &str) -> ApiError {
    let subject = format!("projects/{}", project.number);
    let constraint = format!("constraints/{DISABLE_SA_API_KEYS}");
    let description = format!(
        "API keys cannot be bound to service accounts (here {email}) while the organization \
         policy constraint {constraint} is enforced for {subject}."
    );
    ApiError::new(
        Code::FailedPrecondition,
        format!("Constraint {constraint} violated for {subject}. {description}"),
    )
    .with_detail(Detail::error_info(
        "ORG_POLICY_CONSTRAINT_VIOLATED",
        "apikeys.googleapis.com",
        [
            ("constraint", constraint.clone()),
            ("resource", subject.clone()),
        ],
    ))
    .with_detail(Detail::PreconditionFailure {
        violations: vec![PreconditionViolation {
            kind: constraint,
            subject,
            description,
        }],
    })
}

/// The policies a fresh installation starts with: the organization enforces
/// `iam.managed.disableServiceAccountApiKeyCreation`, as Google does for new organizations.
pub fn bootstrap_policies(organization: i64) -> Vec<OrgPolicyRecord> {
    let spec = serde_json::to_string(&Some(PolicySpec::enforce(true))).unwrap_or_default();
    vec![OrgPolicyRecord {
        resource: format!("organizations/{organization}"),
        constraint: DISABLE_SA_API_KEYS.to_owned(),
        spec,
        dry_run_spec: None,
        etag: new_policy_etag(),
        update_time: now(),
    }]
}

// === handlers ===

#[derive(Debug, Default, Deserialize)]
struct PolicyParams {
    #[serde(default, alias = "update_mask", rename = "updateMask")]
    update_mask: Option<String>,
    #[serde(default)]
    etag: Option<String>,
}

async fn get_dispatch(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path((x, c)): Path<(String, String)>,
) -> Result<Json<Policy>, ApiError> {
    match c.split_once(':') {
        None => get_policy(&state, &caller, &uri, &x, &c).await,
        Some((constraint, "getEffectivePolicy")) => {
            get_effective_policy(&state, &caller, &uri, &x, constraint).await
        }
        Some((_, verb)) => Err(ApiError::not_found(format!(
            "Method '{verb}' is not supported on policies."
        ))),
    }
}

async fn get_policy(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
    x: &str,
    constraint: &str,
) -> Result<Json<Policy>, ApiError> {
    let parent = parent_for(state, caller, uri, x, "orgpolicy.policy.get").await?;
    known_constraint(constraint)?;
    let resource = parent.name();
    match state.store.org_policy(&resource, constraint).await {
        Ok(p) => Ok(Json(policy_json(&p)?)),
        Err(StoreError::NotFound) => Err(policy_not_found(&format!(
            "{resource}/policies/{constraint}"
        ))),
        Err(e) => Err(store_error(e)),
    }
}

async fn get_effective_policy(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
    x: &str,
    constraint: &str,
) -> Result<Json<Policy>, ApiError> {
    let parent = parent_for(state, caller, uri, x, "orgpolicy.policy.get").await?;
    known_constraint(constraint)?;
    let project = match &parent {
        Parent::Project(p) => Some(&**p),
        Parent::Organization(_) => None,
    };
    let (decided, spec) = effective(state, project, constraint).await?;
    let spec = match spec {
        Some(s) => PolicySpec {
            etag: String::new(),
            update_time: None,
            ..s
        },
        None => PolicySpec::enforce(decided),
    };
    Ok(Json(Policy {
        name: format!("{}/policies/{constraint}", parent.name()),
        spec: Some(spec),
        ..Policy::default()
    }))
}

async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path(x): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let parent = parent_for(&state, &caller, &uri, &x, "orgpolicy.policy.get").await?;
    let records = state
        .store
        .list_org_policies(&parent.name())
        .await
        .map_err(store_error)?;
    let policies = records
        .iter()
        .map(policy_json)
        .collect::<Result<Vec<_>, _>>()?;
    if policies.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "policies": policies })))
}

async fn list_constraints(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path(x): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let parent = parent_for(&state, &caller, &uri, &x, "orgpolicy.constraints.list").await?;
    let constraints: Vec<Value> = CONSTRAINTS
        .iter()
        .map(|c| {
            json!({
                "name": format!("{}/constraints/{}", parent.name(), c.name),
                "displayName": c.display_name,
                "description": c.description,
                "constraintDefault": "ALLOW",
                "booleanConstraint": {},
                "supportsDryRun": true,
            })
        })
        .collect();
    Ok(Json(json!({ "constraints": constraints })))
}

async fn create_policy(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path(x): Path<String>,
    body: Bytes,
) -> Result<Json<Policy>, ApiError> {
    let parent = parent_for(&state, &caller, &uri, &x, "orgpolicy.policy.set").await?;
    let policy: Policy = parse_json_body(&body)?;
    if policy.name.is_empty() {
        return Err(ApiError::bad_request_fields(vec![(
            "policy.name",
            "policy.name is required.".to_owned(),
        )]));
    }
    let constraint = constraint_of_name(&policy.name, &x, &parent)?;
    known_constraint(&constraint)?;
    let (spec, dry_run) = checked_specs(&policy)?;
    writable(&parent)?;
    let (spec, dry_run_spec) = encode_specs(&spec, &dry_run)?;
    let record = OrgPolicyRecord {
        resource: parent.name(),
        constraint: constraint.clone(),
        spec,
        dry_run_spec,
        etag: new_policy_etag(),
        update_time: now(),
    };
    state
        .store
        .create_org_policy(&record)
        .await
        .map_err(|e| match e {
            StoreError::AlreadyExists(_) => ApiError::already_exists(format!(
                "Policy {}/policies/{constraint} already exists; update it instead.",
                parent.name()
            )),
            other => store_error(other),
        })?;
    Ok(Json(policy_json(&record)?))
}

/// The paths of an UpdatePolicy mask (relative to the policy), in camelCase.
fn policy_mask(mask: &str) -> Result<Vec<String>, ApiError> {
    let paths = keyplane_wire::cloud::parse_update_mask(mask);
    for p in &paths {
        if p != "spec" && p != "dryRunSpec" {
            return Err(ApiError::bad_request_fields(vec![(
                "update_mask",
                format!(
                    "Invalid update mask path \"{p}\": a policy's updatable fields are spec and \
                     dry_run_spec."
                ),
            )]));
        }
    }
    Ok(paths)
}

async fn update_policy(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path((x, c)): Path<(String, String)>,
    Query(params): Query<PolicyParams>,
    body: Bytes,
) -> Result<Json<Policy>, ApiError> {
    let parent = parent_for(&state, &caller, &uri, &x, "orgpolicy.policy.set").await?;
    let resource = parent.name();
    if c.contains(':') {
        return Err(ApiError::not_found(format!(
            "The requested URL {} was not found on this server.",
            uri.path()
        )));
    }
    known_constraint(&c)?;
    let policy: Policy = parse_json_body(&body)?;
    if !policy.name.is_empty() && constraint_of_name(&policy.name, &x, &parent)? != c {
        return Err(ApiError::bad_request_fields(vec![(
            "policy.name",
            format!(
                "policy.name \"{}\" does not match the policy in the URL.",
                policy.name
            ),
        )]));
    }
    let mask = match params
        .update_mask
        .as_deref()
        .filter(|m| !m.trim().is_empty())
    {
        Some(m) => Some(policy_mask(m)?),
        None => None,
    };
    let (spec, dry_run) = checked_specs(&policy)?;
    let current = match state.store.org_policy(&resource, &c).await {
        Ok(p) => p,
        Err(StoreError::NotFound) => {
            return Err(policy_not_found(&format!("{resource}/policies/{c}")))
        }
        Err(e) => return Err(store_error(e)),
    };
    if !policy.etag.is_empty() && policy.etag != current.etag {
        return Err(ApiError::aborted(format!(
            "The etag \"{}\" does not match the current version of policy {resource}/policies/{c}; \
             read it again and retry.",
            policy.etag
        )));
    }
    writable(&parent)?;
    let mut new_spec = decode_spec("spec", &current.spec)?;
    let mut new_dry_run = match &current.dry_run_spec {
        Some(t) => decode_spec("dry_run_spec", t)?,
        None => None,
    };
    match &mask {
        // No mask: the policy's specs are replaced by the request's.
        None => {
            new_spec = spec;
            new_dry_run = dry_run;
        }
        Some(paths) => {
            if paths.iter().any(|p| p == "spec") {
                new_spec = spec;
            }
            if paths.iter().any(|p| p == "dryRunSpec") {
                new_dry_run = dry_run;
            }
        }
    }
    let (spec_text, dry_run_text) = encode_specs(&new_spec, &new_dry_run)?;
    let record = OrgPolicyRecord {
        resource: resource.clone(),
        constraint: c.clone(),
        spec: spec_text,
        dry_run_spec: dry_run_text,
        etag: new_policy_etag(),
        update_time: now(),
    };
    state
        .store
        .update_org_policy(&record, &current.etag)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => policy_not_found(&format!("{resource}/policies/{c}")),
            other => store_error(other),
        })?;
    Ok(Json(policy_json(&record)?))
}

async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path((x, c)): Path<(String, String)>,
    Query(params): Query<PolicyParams>,
) -> Result<Json<Value>, ApiError> {
    let parent = parent_for(&state, &caller, &uri, &x, "orgpolicy.policy.set").await?;
    let resource = parent.name();
    if c.contains(':') {
        return Err(ApiError::not_found(format!(
            "The requested URL {} was not found on this server.",
            uri.path()
        )));
    }
    known_constraint(&c)?;
    writable(&parent)?;
    let etag = params.etag.as_deref().filter(|e| !e.is_empty());
    state
        .store
        .delete_org_policy(&resource, &c, etag)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => policy_not_found(&format!("{resource}/policies/{c}")),
            StoreError::EtagMismatch => ApiError::aborted(format!(
                "The etag does not match the current version of policy {resource}/policies/{c}; \
                 read it again and retry."
            )),
            other => store_error(other),
        })?;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> PolicySpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn boolean_specs_are_checked() {
        for ok in [
            json!({"rules": [{"enforce": true}]}),
            json!({"rules": [{"enforce": false}]}),
            json!({"reset": true}),
            json!({"rules": [{"enforce": true}, {"enforce": false, "condition": {"expression": "resource.matchTag('a/b', 'c')"}}]}),
        ] {
            validate_spec(&spec(ok.clone()), "policy.spec").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, field) in [
            (json!({}), "policy.spec.rules"),
            (json!({"rules": []}), "policy.spec.rules"),
            (json!({"rules": [{}]}), "policy.spec.rules[0].enforce"),
            (
                json!({"rules": [{"allowAll": true}]}),
                "policy.spec.rules[0]",
            ),
            (
                json!({"rules": [{"enforce": true, "denyAll": true}]}),
                "policy.spec.rules[0]",
            ),
            (
                json!({"rules": [{"enforce": true}, {"enforce": false}]}),
                "policy.spec.rules",
            ),
            (
                json!({"rules": [{"enforce": true}], "reset": true}),
                "policy.spec.rules",
            ),
            (
                json!({"rules": [{"enforce": true}], "inheritFromParent": true}),
                "policy.spec.inherit_from_parent",
            ),
            (
                json!({"rules": [{"enforce": true, "parameters": {}}]}),
                "policy.spec.rules[0].parameters",
            ),
            (
                json!({"rules": [{"enforce": true}, {"enforce": true, "condition": {"expression": "x"}}]}),
                "policy.spec.rules[1].enforce",
            ),
            (
                json!({"rules": [{"enforce": true}, {"enforce": false, "condition": {}}]}),
                "policy.spec.rules[1].condition.expression",
            ),
        ] {
            let err = validate_spec(&spec(bad.clone()), "policy.spec").expect_err(&bad.to_string());
            assert_eq!(err.status, Code::InvalidArgument, "{bad}");
            match &err.details[..] {
                [Detail::BadRequest { field_violations }] => {
                    assert_eq!(field_violations[0].field, field, "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(
            spec(json!({"rules": [{"enforce": true}]})).decision(),
            Some(true)
        );
        assert_eq!(
            spec(json!({"rules": [{"enforce": false}]})).decision(),
            Some(false)
        );
        assert_eq!(spec(json!({"reset": true})).decision(), Some(false));
        assert_eq!(spec(json!({})).decision(), None);
        // A conditional rule never decides (no tags to match).
        assert_eq!(
            spec(json!({"rules": [{"enforce": false}, {"enforce": true, "condition": {"expression": "x"}}]}))
                .decision(),
            Some(false)
        );
    }

    #[test]
    fn bootstrap_policy_enforces() {
        let p = bootstrap_policies(42);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].resource, "organizations/42");
        let s: Option<PolicySpec> = serde_json::from_str(&p[0].spec).unwrap();
        assert_eq!(s.unwrap().decision(), Some(true));
    }

    #[test]
    fn masks() {
        assert_eq!(
            policy_mask("spec,dry_run_spec").unwrap(),
            ["spec", "dryRunSpec"]
        );
        assert!(policy_mask("name").is_err());
        assert!(policy_mask("spec.rules").is_err());
    }
}
