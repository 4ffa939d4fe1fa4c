//! Authorization of control-plane calls, as Google Cloud IAM decides it: a caller holds a
//! permission on a resource when a role granting it is bound to the caller in the
//! resource's allow policy or in an ancestor's (projects inherit their organization's).
//!
//! How handlers call it:
//! - the caller named a project (by id or number): [`project`] resolves it and checks the
//!   permission in one step, and answers an unknown project exactly as a project the caller
//!   may not use (no existence oracle);
//! - the resource is already known: [`require`] with a [`Resource`];
//! - to decide without failing (filters, testIamPermissions): [`allowed`], [`permissions`].
//!
//! Denials are 403 PERMISSION_DENIED, reason IAM_PERMISSION_DENIED, with Google's message
//! "Permission 'P' denied on resource '//cloudresourcemanager.googleapis.com/projects/X'
//! (or it may not exist)." where X is the project as the caller wrote it.

use keyplane_core::iam::{self, Policy};
use keyplane_core::Project;
use keyplane_store::StoreError;
use keyplane_wire::ApiError;
use std::collections::BTreeSet;

use crate::app::AppState;
use crate::controlplane::store_error;
use crate::identity::Caller;

/// The host Resource Manager resource names start with.
pub const CRM: &str = "cloudresourcemanager.googleapis.com";

/// What a permission is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The installation's organization.
    Organization,
    /// A project, by number; it inherits the organization's policy.
    Project(i64),
}

impl Resource {
    /// The policy's resource name in the store: `organizations/{n}` or `projects/{n}`.
    pub fn name(&self, state: &AppState) -> String {
        match self {
            Resource::Organization => format!("organizations/{}", state.organization),
            Resource::Project(n) => format!("projects/{n}"),
        }
    }

    /// The full resource name shown in denials (`//cloudresourcemanager.googleapis.com/...`).
    pub fn full_name(&self, state: &AppState) -> String {
        format!("//{CRM}/{}", self.name(state))
    }
}

/// 403 IAM_PERMISSION_DENIED for `permission` on `shown` (a full resource name).
pub fn denied(permission: &str, shown: &str) -> ApiError {
    ApiError::iam_permission_denied(permission, shown)
}

/// 403 for `permission` on the project the caller wrote as `project_ref`.
pub fn denied_on_project(permission: &str, project_ref: &str) -> ApiError {
    denied(permission, &format!("//{CRM}/projects/{project_ref}"))
}

/// The policy set on `resource` alone, or Google's empty policy (etag `ACAB`).
pub async fn policy(state: &AppState, resource: &Resource) -> Result<Policy, ApiError> {
    Ok(state
        .own_policy(&resource.name(state))
        .await?
        .map(|p| Policy::clone(&p))
        .unwrap_or_else(Policy::empty))
}

/// The policies that apply to `resource`, the resource's own first.
/// (A resource without a policy grants nothing, so it adds none.)
async fn effective_policies(
    state: &AppState,
    resource: &Resource,
) -> Result<Vec<std::sync::Arc<Policy>>, ApiError> {
    let mut out = Vec::with_capacity(2);
    out.extend(state.own_policy(&resource.name(state)).await?);
    if let Resource::Project(_) = resource {
        out.extend(
            state
                .own_policy(&Resource::Organization.name(state))
                .await?,
        );
    }
    Ok(out)
}

/// Whether `principal` holds `permission` on `resource`.
pub async fn allowed(
    state: &AppState,
    principal: &str,
    permission: &str,
    resource: &Resource,
) -> Result<bool, ApiError> {
    debug_assert!(
        iam::is_known_permission(permission),
        "unknown permission {permission}"
    );
    Ok(effective_policies(state, resource)
        .await?
        .iter()
        .any(|p| p.grants(principal, permission)))
}

/// Every permission `principal` holds on `resource`.
pub async fn permissions(
    state: &AppState,
    principal: &str,
    resource: &Resource,
) -> Result<BTreeSet<&'static str>, ApiError> {
    let mut out = BTreeSet::new();
    for p in effective_policies(state, resource).await? {
        out.extend(p.permissions_of(principal));
    }
    Ok(out)
}

/// Fails with 403 unless the caller holds `permission` on `resource`. The denial names the
/// resource by number: when the caller named a project by id, use [`project`] instead.
pub async fn require(
    state: &AppState,
    caller: &Caller,
    permission: &str,
    resource: &Resource,
) -> Result<(), ApiError> {
    if allowed(state, &caller.principal, permission, resource).await? {
        Ok(())
    } else {
        Err(denied(permission, &resource.full_name(state)))
    }
}

/// Looks a project up by id or number without any check: `None` when there is none.
pub async fn find_project(
    state: &AppState,
    project_ref: &str,
) -> Result<Option<Project>, ApiError> {
    let found = match project_ref.parse::<i64>() {
        Ok(n) => state.store.project_by_number(n).await,
        Err(_) => state.store.project_by_id(project_ref).await,
    };
    match found {
        Ok(p) => Ok(Some(p)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(store_error(e)),
    }
}

/// The project the caller named (id or number), once the caller is known to hold
/// `permission` on it. A project that does not exist and one the caller may not use get
/// the same 403, naming the project as the caller wrote it.
pub async fn project(
    state: &AppState,
    caller: &Caller,
    permission: &str,
    project_ref: &str,
) -> Result<Project, ApiError> {
    let deny = || denied_on_project(permission, project_ref);
    let Some(project) = find_project(state, project_ref).await? else {
        return Err(deny());
    };
    if allowed(
        state,
        &caller.principal,
        permission,
        &Resource::Project(project.number),
    )
    .await?
    {
        Ok(project)
    } else {
        Err(deny())
    }
}

/// The organization the caller named (`organizations/{ref}`), once the caller is known to
/// hold `permission` on it; an unknown organization gets the same 403.
pub async fn organization(
    state: &AppState,
    caller: &Caller,
    permission: &str,
    org_ref: &str,
) -> Result<Resource, ApiError> {
    let shown = format!("//{CRM}/organizations/{org_ref}");
    if org_ref != state.organization.to_string() {
        return Err(denied(permission, &shown));
    }
    if allowed(
        state,
        &caller.principal,
        permission,
        &Resource::Organization,
    )
    .await?
    {
        Ok(Resource::Organization)
    } else {
        Err(denied(permission, &shown))
    }
}

/// Gives the creator of a new project roles/owner on it, as Google does.
pub async fn grant_creator_owner(
    state: &AppState,
    project_number: i64,
    principal: &str,
) -> Result<(), ApiError> {
    let resource = Resource::Project(project_number).name(state);
    for _ in 0..3 {
        let current = state
            .store
            .iam_policy(&resource)
            .await
            .map_err(store_error)?;
        let expected = current.as_ref().map(|p| p.etag.clone());
        let mut policy = current.unwrap_or_else(Policy::empty);
        policy.add_binding("roles/owner", principal);
        policy.version = 1;
        policy.etag = iam::new_policy_etag();
        let put = state
            .store
            .put_iam_policy(&resource, &policy, expected.as_deref())
            .await;
        state.directory.forget_policy(&resource);
        match put {
            Ok(()) => return Ok(()),
            Err(StoreError::EtagMismatch) => continue,
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(ApiError::aborted(
        "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.",
    ))
}

/// `operations.get` of API Keys and Service Usage: `serviceusage.operations.get` on the
/// project the operation's name carries (on the organization when it carries none).
pub async fn require_operation(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<(), ApiError> {
    let resource = match operation_project(name) {
        Some(n) => Resource::Project(n),
        None => Resource::Organization,
    };
    require(state, caller, "serviceusage.operations.get", &resource).await
}

/// The project number an operation's name carries (`operations/akmf.p7-{n}-…`,
/// `operations/acat.p2-{n}-…`), if any.
pub fn operation_project(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("operations/")?;
    let (_, after) = rest.split_once(".p")?;
    let (_, after) = after.split_once('-')?;
    let (number, _) = after.split_once('-')?;
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_carry_their_project() {
        assert_eq!(
            operation_project("operations/akmf.p7-123456789012-49251468-672b-4b4f"),
            Some(123456789012)
        );
        assert_eq!(
            operation_project("operations/acat.p2-42-a69b946f-cc59"),
            Some(42)
        );
        assert_eq!(operation_project("operations/cp.653806511567819505"), None);
        assert_eq!(operation_project("operations/akmf.p7-x-y"), None);
        assert_eq!(operation_project("nope"), None);
    }
}

#[cfg(test)]
mod bootstrap_tests {
    use keyplane_core::iam::{Binding, Policy};
    use keyplane_core::{now, Organization};
    use keyplane_store::{MetaStore, PolicyStore, SqliteStore};

    const OWNER: &str = "serviceAccount:owner@keyplane-admin.iam.gserviceaccount.com";

    async fn org_policy(store: &SqliteStore) -> Option<Policy> {
        let org = store.organization().await.unwrap().unwrap();
        store
            .iam_policy(&format!("organizations/{}", org.number))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn first_start_makes_the_owner_an_organization_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in_memory().await.unwrap();
        crate::bootstrap::bootstrap(&store, dir.path(), "http://127.0.0.1:1")
            .await
            .unwrap();
        let p = org_policy(&store).await.expect("an organization policy");
        assert!(p.grants(OWNER, "resourcemanager.projects.create"));
        assert!(p.grants(OWNER, "resourcemanager.organizations.setIamPolicy"));
        // A second start leaves the policy alone, even one an administrator changed.
        let org = store.organization().await.unwrap().unwrap();
        let changed = Policy {
            version: 1,
            bindings: vec![Binding {
                role: "roles/viewer".into(),
                members: vec![OWNER.into()],
            }],
            etag: keyplane_core::iam::new_policy_etag(),
        };
        store
            .put_iam_policy(
                &format!("organizations/{}", org.number),
                &changed,
                Some(&p.etag),
            )
            .await
            .unwrap();
        crate::bootstrap::bootstrap(&store, dir.path(), "http://127.0.0.1:1")
            .await
            .unwrap();
        assert_eq!(org_policy(&store).await, Some(changed));
    }

    #[tokio::test]
    async fn an_install_from_before_iam_policies_gets_the_owner_binding() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .create_organization(&Organization {
                number: 123456789012,
                display_name: "keyplane".into(),
                create_time: now(),
            })
            .await
            .unwrap();
        assert_eq!(org_policy(&store).await, None);
        crate::bootstrap::bootstrap(&store, dir.path(), "http://127.0.0.1:1")
            .await
            .unwrap();
        let p = org_policy(&store).await.expect("an organization policy");
        assert_eq!(p.bindings.len(), 1);
        assert_eq!(p.bindings[0].role, "roles/owner");
        assert_eq!(p.bindings[0].members, vec![OWNER.to_owned()]);
    }
}
