//! IAM: Google's predefined roles that matter to Keyplane, with the permissions each
//! grants (Google's permission names), and allow policies (`google.iam.v1.Policy`):
//! bindings of roles to members, with the rules Google applies when one is set.
//!
//! Only the permissions Keyplane checks (or that Google's roles list beside them for the
//! APIs Keyplane serves) are in [`PERMISSIONS`]; a role grants the subset of its Google
//! permissions that falls in that list. Where Google's documentation is surprising, the
//! table follows it and says so (roles/viewer includes `apikeys.keys.getKeyString`, as the
//! API Keys access-control page lists).
//!
//! Evaluation: a principal holds a permission on a resource when a binding of a role that
//! grants it names the principal (or `allUsers`, `allAuthenticatedUsers`, or the
//! principal's `domain:`) in the resource's policy or in an ancestor's (a project inherits
//! its organization's policy).

use base64::Engine as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

// === permissions ===

/// Every permission Keyplane knows, in Google's spelling.
pub const PERMISSIONS: &[&str] = &[
    // API Keys v2
    "apikeys.keys.create",
    "apikeys.keys.delete",
    "apikeys.keys.get",
    "apikeys.keys.getKeyString",
    "apikeys.keys.list",
    "apikeys.keys.lookup",
    "apikeys.keys.undelete",
    "apikeys.keys.update",
    // Service Usage v1
    "serviceusage.apiKeys.regenerate",
    "serviceusage.apiKeys.revert",
    "serviceusage.operations.get",
    "serviceusage.operations.list",
    "serviceusage.quotas.get",
    "serviceusage.quotas.update",
    "serviceusage.services.disable",
    "serviceusage.services.enable",
    "serviceusage.services.get",
    "serviceusage.services.list",
    "serviceusage.services.use",
    // Resource Manager v3
    "resourcemanager.organizations.get",
    "resourcemanager.organizations.getIamPolicy",
    "resourcemanager.organizations.setIamPolicy",
    "resourcemanager.projects.create",
    "resourcemanager.projects.delete",
    "resourcemanager.projects.get",
    "resourcemanager.projects.getIamPolicy",
    "resourcemanager.projects.list",
    "resourcemanager.projects.move",
    "resourcemanager.projects.setIamPolicy",
    "resourcemanager.projects.undelete",
    "resourcemanager.projects.update",
    // IAM v1
    "iam.roles.get",
    "iam.roles.list",
    "iam.serviceAccountKeys.create",
    "iam.serviceAccountKeys.delete",
    "iam.serviceAccountKeys.disable",
    "iam.serviceAccountKeys.enable",
    "iam.serviceAccountKeys.get",
    "iam.serviceAccountKeys.list",
    "iam.serviceAccounts.actAs",
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.delete",
    "iam.serviceAccounts.disable",
    "iam.serviceAccounts.enable",
    "iam.serviceAccounts.get",
    "iam.serviceAccounts.getIamPolicy",
    "iam.serviceAccounts.list",
    "iam.serviceAccounts.setIamPolicy",
    "iam.serviceAccounts.undelete",
    "iam.serviceAccounts.update",
    // Org Policy v2
    "orgpolicy.constraints.list",
    "orgpolicy.policies.create",
    "orgpolicy.policies.delete",
    "orgpolicy.policies.list",
    "orgpolicy.policies.update",
    "orgpolicy.policy.get",
    "orgpolicy.policy.set",
    // Vertex AI (the data plane's aiplatform.googleapis.com methods)
    "aiplatform.cachedContents.create",
    "aiplatform.cachedContents.delete",
    "aiplatform.cachedContents.get",
    "aiplatform.cachedContents.list",
    "aiplatform.cachedContents.update",
    "aiplatform.endpoints.predict",
];

/// Whether Keyplane knows `permission`.
pub fn is_known_permission(permission: &str) -> bool {
    PERMISSIONS.contains(&permission)
}

// === roles ===

/// Where a role may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantable {
    /// On the organization and on projects.
    Anywhere,
    /// Only on the organization (Google: "Lowest-level resources where you can grant this
    /// role: Organization").
    OrganizationOnly,
}

/// How a role's permission list is written in the table.
#[derive(Debug, Clone, Copy)]
enum Grants {
    /// Exactly these.
    Only(&'static [&'static str]),
    /// Every known permission except these.
    AllExcept(&'static [&'static str]),
}

/// A predefined role, as IAM v1 `roles.get` describes it.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    /// `roles/...`
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// `GA` or `BETA`.
    pub stage: &'static str,
    pub grantable: Grantable,
    grants: Grants,
}

impl Role {
    /// The permissions this role grants, sorted.
    pub fn permissions(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = match self.grants {
            Grants::Only(list) => list.to_vec(),
            Grants::AllExcept(excluded) => PERMISSIONS
                .iter()
                .copied()
                .filter(|p| !excluded.contains(p))
                .collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn grants(&self, permission: &str) -> bool {
        match self.grants {
            Grants::Only(list) => list.contains(&permission),
            Grants::AllExcept(excluded) => {
                is_known_permission(permission) && !excluded.contains(&permission)
            }
        }
    }
}

/// What only roles/orgpolicy.policyAdmin grants: Google's basic roles do not change
/// organization policies.
const ORG_POLICY_WRITES: &[&str] = &[
    "orgpolicy.policies.create",
    "orgpolicy.policies.delete",
    "orgpolicy.policies.update",
    "orgpolicy.policy.set",
];

const VIEWER: &[&str] = &[
    "apikeys.keys.get",
    "apikeys.keys.getKeyString",
    "apikeys.keys.list",
    "apikeys.keys.lookup",
    "serviceusage.operations.get",
    "serviceusage.operations.list",
    "serviceusage.quotas.get",
    "serviceusage.services.get",
    "serviceusage.services.list",
    "resourcemanager.organizations.get",
    "resourcemanager.organizations.getIamPolicy",
    "resourcemanager.projects.get",
    "resourcemanager.projects.getIamPolicy",
    "resourcemanager.projects.list",
    "iam.roles.get",
    "iam.roles.list",
    "iam.serviceAccountKeys.get",
    "iam.serviceAccountKeys.list",
    "iam.serviceAccounts.get",
    "iam.serviceAccounts.getIamPolicy",
    "iam.serviceAccounts.list",
    "orgpolicy.constraints.list",
    "orgpolicy.policies.list",
    "orgpolicy.policy.get",
    "aiplatform.cachedContents.get",
    "aiplatform.cachedContents.list",
];

/// The roles Keyplane knows, sorted by name.
pub const ROLES: &[Role] = &[
    Role {
        name: "roles/aiplatform.expressUser",
        title: "Vertex AI Platform Express User",
        description: "Grants user access to Vertex AI Express",
        stage: "BETA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(&[
            "aiplatform.cachedContents.create",
            "aiplatform.cachedContents.delete",
            "aiplatform.cachedContents.get",
            "aiplatform.cachedContents.list",
            "aiplatform.cachedContents.update",
            "aiplatform.endpoints.predict",
        ]),
    },
    Role {
        name: "roles/aiplatform.user",
        title: "Vertex AI User",
        description: "Grants access to use all resource in Vertex AI",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(&[
            "aiplatform.cachedContents.create",
            "aiplatform.cachedContents.delete",
            "aiplatform.cachedContents.get",
            "aiplatform.cachedContents.list",
            "aiplatform.cachedContents.update",
            "aiplatform.endpoints.predict",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
        ]),
    },
    Role {
        name: "roles/editor",
        title: "Editor",
        description: "View, create, update, and delete most Google Cloud resources. See the list of included permissions.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::AllExcept(&[
            "resourcemanager.organizations.setIamPolicy",
            "resourcemanager.projects.setIamPolicy",
            "resourcemanager.projects.delete",
            "resourcemanager.projects.undelete",
            "resourcemanager.projects.move",
            "iam.serviceAccounts.setIamPolicy",
            "orgpolicy.policies.create",
            "orgpolicy.policies.delete",
            "orgpolicy.policies.update",
            "orgpolicy.policy.set",
        ]),
    },
    Role {
        name: "roles/iam.serviceAccountAdmin",
        title: "Service Account Admin",
        description: "Create and manage service accounts.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(&[
            "iam.serviceAccounts.create",
            "iam.serviceAccounts.delete",
            "iam.serviceAccounts.disable",
            "iam.serviceAccounts.enable",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.getIamPolicy",
            "iam.serviceAccounts.list",
            "iam.serviceAccounts.setIamPolicy",
            "iam.serviceAccounts.undelete",
            "iam.serviceAccounts.update",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
        ]),
    },
    Role {
        name: "roles/iam.serviceAccountKeyAdmin",
        title: "Service Account Key Admin",
        description: "Create and manage (and rotate) service account keys.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(&[
            "iam.serviceAccountKeys.create",
            "iam.serviceAccountKeys.delete",
            "iam.serviceAccountKeys.disable",
            "iam.serviceAccountKeys.enable",
            "iam.serviceAccountKeys.get",
            "iam.serviceAccountKeys.list",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
        ]),
    },
    Role {
        name: "roles/iam.serviceAccountUser",
        title: "Service Account User",
        description: "Run operations as the service account.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(&[
            "iam.serviceAccounts.actAs",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
        ]),
    },
    Role {
        name: "roles/orgpolicy.policyAdmin",
        title: "Organization Policy Administrator",
        description: "Provides access to define what restrictions an organization wants to have on its resource configurations.",
        stage: "GA",
        grantable: Grantable::OrganizationOnly,
        grants: Grants::Only(&[
            "orgpolicy.constraints.list",
            "orgpolicy.policies.create",
            "orgpolicy.policies.delete",
            "orgpolicy.policies.list",
            "orgpolicy.policies.update",
            "orgpolicy.policy.get",
            "orgpolicy.policy.set",
        ]),
    },
    Role {
        name: "roles/owner",
        title: "Owner",
        description: "Full access to most Google Cloud resources. See the list of included permissions.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::AllExcept(ORG_POLICY_WRITES),
    },
    Role {
        name: "roles/resourcemanager.organizationAdmin",
        title: "Organization Administrator",
        description: "Access to administer all resources belonging to the organization.",
        stage: "GA",
        grantable: Grantable::OrganizationOnly,
        grants: Grants::Only(&[
            "iam.roles.get",
            "iam.roles.list",
            "orgpolicy.constraints.list",
            "orgpolicy.policies.list",
            "orgpolicy.policy.get",
            "resourcemanager.organizations.get",
            "resourcemanager.organizations.getIamPolicy",
            "resourcemanager.organizations.setIamPolicy",
            "resourcemanager.projects.get",
            "resourcemanager.projects.getIamPolicy",
            "resourcemanager.projects.list",
            "resourcemanager.projects.setIamPolicy",
        ]),
    },
    Role {
        name: "roles/resourcemanager.projectCreator",
        title: "Project Creator",
        description: "Access to create new GCP projects.",
        stage: "GA",
        grantable: Grantable::OrganizationOnly,
        grants: Grants::Only(&[
            "resourcemanager.organizations.get",
            "resourcemanager.projects.create",
        ]),
    },
    Role {
        name: "roles/serviceusage.apiKeysAdmin",
        title: "API Keys Admin",
        description: "Ability to create, delete, update, get and list API keys for a project.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(&[
            "apikeys.keys.create",
            "apikeys.keys.delete",
            "apikeys.keys.get",
            "apikeys.keys.getKeyString",
            "apikeys.keys.list",
            "apikeys.keys.lookup",
            "apikeys.keys.undelete",
            "apikeys.keys.update",
            "orgpolicy.policy.get",
            "serviceusage.apiKeys.regenerate",
            "serviceusage.apiKeys.revert",
            "serviceusage.operations.get",
        ]),
    },
    Role {
        name: "roles/serviceusage.apiKeysViewer",
        title: "API Keys Viewer",
        description: "Ability to get and list API keys for a project.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(&[
            "apikeys.keys.get",
            "apikeys.keys.getKeyString",
            "apikeys.keys.list",
            "apikeys.keys.lookup",
        ]),
    },
    Role {
        name: "roles/serviceusage.serviceUsageAdmin",
        title: "Service Usage Admin",
        description: "Ability to enable, disable, and inspect service states, inspect operations, and consume quota and billing for a consumer project.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(&[
            "serviceusage.operations.get",
            "serviceusage.operations.list",
            "serviceusage.quotas.get",
            "serviceusage.quotas.update",
            "serviceusage.services.disable",
            "serviceusage.services.enable",
            "serviceusage.services.get",
            "serviceusage.services.list",
            "serviceusage.services.use",
        ]),
    },
    Role {
        name: "roles/serviceusage.serviceUsageConsumer",
        title: "Service Usage Consumer",
        description: "Ability to inspect service states and operations, and consume quota and billing for a consumer project.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(&[
            "serviceusage.quotas.get",
            "serviceusage.services.get",
            "serviceusage.services.list",
            "serviceusage.services.use",
        ]),
    },
    Role {
        name: "roles/viewer",
        title: "Viewer",
        description: "View most Google Cloud resources. See the list of included permissions.",
        stage: "GA",
        grantable: Grantable::Anywhere,
        grants: Grants::Only(VIEWER),
    },
];

/// The predefined role `name` (`roles/...`).
pub fn role(name: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.name == name)
}

// === policies ===

/// The etag Google gives a resource that has no policy yet (bytes 00 20 01).
pub const EMPTY_POLICY_ETAG: &str = "ACAB";
/// Google's limit on the principals of one allow policy.
pub const MAX_POLICY_MEMBERS: usize = 1500;

/// `google.iam.v1.Policy` as Keyplane keeps it (no conditions, no audit configs).
/// Serialises as Google's JSON: `{"version": 1, "bindings": [...], "etag": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub version: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    /// Base64 of opaque bytes; changes with every write.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub role: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// Why a policy cannot be set. The messages are what clients see (400 INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("Role ({0}) does not exist in the resource's hierarchy.")]
    UnknownRole(String),
    #[error("Role {0} is not supported for this resource.")]
    RoleNotGrantableHere(String),
    #[error("Invalid member '{0}': a member is user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, allUsers or allAuthenticatedUsers.")]
    InvalidMember(String),
    #[error("A binding for role {0} has no members.")]
    NoMembers(String),
    #[error("The policy has more than {MAX_POLICY_MEMBERS} members.")]
    TooManyMembers,
    #[error("Policy version {0} is not valid: use 0, 1 or 3.")]
    InvalidVersion(i64),
}

impl Policy {
    /// The policy of a resource nobody has set one on.
    pub fn empty() -> Policy {
        Policy {
            version: 1,
            bindings: Vec::new(),
            etag: EMPTY_POLICY_ETAG.to_owned(),
        }
    }

    /// Checks a policy a caller wants to set on a resource (`on_organization` says which
    /// kind) and returns it as Keyplane keeps it: version 1, one binding per role sorted
    /// by role, members lower-cased where they are emails, deduplicated and sorted. The
    /// etag is left as it was.
    pub fn normalized(&self, on_organization: bool) -> Result<Policy, PolicyError> {
        let mut by_role: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for b in &self.bindings {
            let Some(role) = role(&b.role) else {
                return Err(PolicyError::UnknownRole(b.role.clone()));
            };
            if role.grantable == Grantable::OrganizationOnly && !on_organization {
                return Err(PolicyError::RoleNotGrantableHere(b.role.clone()));
            }
            if b.members.is_empty() {
                return Err(PolicyError::NoMembers(b.role.clone()));
            }
            let set = by_role.entry(b.role.clone()).or_default();
            for m in &b.members {
                set.insert(normalize_member(m)?);
            }
        }
        let total: usize = by_role.values().map(BTreeSet::len).sum();
        if total > MAX_POLICY_MEMBERS {
            return Err(PolicyError::TooManyMembers);
        }
        Ok(Policy {
            version: 1,
            bindings: by_role
                .into_iter()
                .map(|(role, members)| Binding {
                    role,
                    members: members.into_iter().collect(),
                })
                .collect(),
            etag: self.etag.clone(),
        })
    }

    /// Adds `member` to `role`'s binding (creating it). Does not validate.
    pub fn add_binding(&mut self, role: &str, member: &str) {
        match self.bindings.iter_mut().find(|b| b.role == role) {
            Some(b) => {
                if !b.members.iter().any(|m| m == member) {
                    b.members.push(member.to_owned());
                }
            }
            None => self.bindings.push(Binding {
                role: role.to_owned(),
                members: vec![member.to_owned()],
            }),
        }
    }

    /// Removes `member` from `role`'s binding, dropping the binding when it empties.
    /// Returns whether anything was removed.
    pub fn remove_binding(&mut self, role: &str, member: &str) -> bool {
        let mut removed = false;
        for b in self.bindings.iter_mut().filter(|b| b.role == role) {
            let before = b.members.len();
            b.members.retain(|m| m != member);
            removed |= b.members.len() != before;
        }
        self.bindings.retain(|b| !b.members.is_empty());
        removed
    }

    /// The roles this policy gives `principal` (`user:EMAIL` or `serviceAccount:EMAIL`).
    pub fn roles_of<'a>(&'a self, principal: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.bindings
            .iter()
            .filter(move |b| b.members.iter().any(|m| member_matches(m, principal)))
            .map(|b| b.role.as_str())
    }

    /// Whether this policy alone grants `permission` to `principal`.
    pub fn grants(&self, principal: &str, permission: &str) -> bool {
        self.roles_of(principal)
            .filter_map(role)
            .any(|r| r.grants(permission))
    }

    /// Every known permission this policy grants `principal`.
    pub fn permissions_of(&self, principal: &str) -> BTreeSet<&'static str> {
        self.roles_of(principal)
            .filter_map(role)
            .flat_map(|r| r.permissions())
            .collect()
    }
}

/// A fresh policy etag: base64 of 8 random bytes, like Google's (`BwYk3n6TqPo=`).
pub fn new_policy_etag() -> String {
    let mut raw = [0u8; 8];
    rand::thread_rng().fill(&mut raw);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && valid_domain(domain)
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
}

fn valid_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Checks a member's syntax and returns it normalised (emails and domains lower-cased).
pub fn normalize_member(member: &str) -> Result<String, PolicyError> {
    let bad = || PolicyError::InvalidMember(member.to_owned());
    if member == "allUsers" || member == "allAuthenticatedUsers" {
        return Ok(member.to_owned());
    }
    if member.starts_with("principal://") || member.starts_with("principalSet://") {
        let rest = member.split_once("://").map(|(_, r)| r).unwrap_or_default();
        if rest.is_empty() || rest.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        return Ok(member.to_owned());
    }
    let (kind, rest) = member.split_once(':').ok_or_else(bad)?;
    match kind {
        "user" | "group" => valid_email(rest)
            .then(|| format!("{kind}:{}", rest.to_ascii_lowercase()))
            .ok_or_else(bad),
        "serviceAccount" => (valid_email(rest)
            && rest.to_ascii_lowercase().ends_with("gserviceaccount.com"))
        .then(|| format!("{kind}:{}", rest.to_ascii_lowercase()))
        .ok_or_else(bad),
        "domain" => valid_domain(rest)
            .then(|| format!("domain:{}", rest.to_ascii_lowercase()))
            .ok_or_else(bad),
        "deleted" => {
            // deleted:user:EMAIL?uid=N, deleted:serviceAccount:EMAIL?uid=N, deleted:group:...
            let (inner, uid) = rest.split_once("?uid=").ok_or_else(bad)?;
            if uid.is_empty() || !uid.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let inner = normalize_member(inner).map_err(|_| bad())?;
            if !(inner.starts_with("user:")
                || inner.starts_with("serviceAccount:")
                || inner.starts_with("group:"))
            {
                return Err(bad());
            }
            Ok(format!("deleted:{inner}?uid={uid}"))
        }
        _ => Err(bad()),
    }
}

/// Whether a policy member names `principal` (`user:EMAIL` or `serviceAccount:EMAIL`).
/// Every caller of the control plane is authenticated, so `allAuthenticatedUsers` names
/// all of them; `domain:D` names users whose email is in D; groups and deleted principals
/// name nobody.
pub fn member_matches(member: &str, principal: &str) -> bool {
    if member == "allUsers" || member == "allAuthenticatedUsers" {
        return true;
    }
    if member.eq_ignore_ascii_case(principal) {
        return true;
    }
    if let Some(domain) = member.strip_prefix("domain:") {
        if let Some(email) = principal.strip_prefix("user:") {
            return email
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_unique_and_uses_only_known_permissions() {
        let names: Vec<&str> = ROLES.iter().map(|r| r.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        for r in ROLES {
            if let Grants::Only(list) = r.grants {
                for p in list {
                    assert!(is_known_permission(p), "{} lists unknown {p}", r.name);
                }
            }
            if let Grants::AllExcept(list) = r.grants {
                for p in list {
                    assert!(is_known_permission(p), "{} excludes unknown {p}", r.name);
                }
            }
            assert!(!r.permissions().is_empty(), "{}", r.name);
        }
        let mut perms = PERMISSIONS.to_vec();
        perms.sort_unstable();
        perms.dedup();
        assert_eq!(perms.len(), PERMISSIONS.len(), "PERMISSIONS has duplicates");
    }

    #[test]
    fn the_brief_roles_are_all_there() {
        for name in [
            "roles/owner",
            "roles/editor",
            "roles/viewer",
            "roles/serviceusage.apiKeysAdmin",
            "roles/serviceusage.apiKeysViewer",
            "roles/serviceusage.serviceUsageAdmin",
            "roles/serviceusage.serviceUsageConsumer",
            "roles/iam.serviceAccountAdmin",
            "roles/iam.serviceAccountKeyAdmin",
            "roles/iam.serviceAccountUser",
            "roles/resourcemanager.projectCreator",
            "roles/resourcemanager.organizationAdmin",
            "roles/orgpolicy.policyAdmin",
            "roles/aiplatform.user",
            "roles/aiplatform.expressUser",
        ] {
            assert!(role(name).is_some(), "{name}");
        }
        assert!(role("roles/nope").is_none());
    }

    #[test]
    fn basic_roles_are_concentric() {
        let owner = role("roles/owner").unwrap();
        let editor = role("roles/editor").unwrap();
        let viewer = role("roles/viewer").unwrap();
        for p in viewer.permissions() {
            assert!(editor.grants(p), "editor lacks viewer's {p}");
        }
        for p in editor.permissions() {
            assert!(owner.grants(p), "owner lacks editor's {p}");
        }
        assert!(owner.grants("resourcemanager.projects.setIamPolicy"));
        assert!(!editor.grants("resourcemanager.projects.setIamPolicy"));
        assert!(!viewer.grants("apikeys.keys.create"));
        // Changing an org policy takes the Organization Policy Administrator.
        assert!(!owner.grants("orgpolicy.policy.set"));
        assert!(role("roles/orgpolicy.policyAdmin")
            .unwrap()
            .grants("orgpolicy.policy.set"));
        assert!(!owner.grants("made.up.permission"));
    }

    #[test]
    fn google_documented_key_roles() {
        let admin = role("roles/serviceusage.apiKeysAdmin").unwrap();
        let viewer = role("roles/serviceusage.apiKeysViewer").unwrap();
        assert_eq!(
            viewer.permissions(),
            vec![
                "apikeys.keys.get",
                "apikeys.keys.getKeyString",
                "apikeys.keys.list",
                "apikeys.keys.lookup"
            ]
        );
        assert!(admin.grants("apikeys.keys.create"));
        assert!(admin.grants("serviceusage.operations.get"));
        assert!(!admin.grants("serviceusage.services.enable"));
    }

    #[test]
    fn members_are_checked_and_normalised() {
        for (input, want) in [
            ("user:Alice@Example.com", "user:alice@example.com"),
            (
                "serviceAccount:sa@p.iam.gserviceaccount.com",
                "serviceAccount:sa@p.iam.gserviceaccount.com",
            ),
            ("group:team@example.com", "group:team@example.com"),
            ("domain:Example.com", "domain:example.com"),
            ("allUsers", "allUsers"),
            ("allAuthenticatedUsers", "allAuthenticatedUsers"),
            (
                "deleted:serviceAccount:sa@p.iam.gserviceaccount.com?uid=123",
                "deleted:serviceAccount:sa@p.iam.gserviceaccount.com?uid=123",
            ),
            (
                "principal://iam.googleapis.com/locations/global/workforcePools/p/subject/s",
                "principal://iam.googleapis.com/locations/global/workforcePools/p/subject/s",
            ),
        ] {
            assert_eq!(normalize_member(input).unwrap(), want, "{input}");
        }
        for bad in [
            "",
            "alice@example.com",
            "user:",
            "user:alice",
            "user:alice@",
            "user:@example.com",
            "user:a b@example.com",
            "serviceAccount:sa@example.com",
            "robot:x@example.com",
            "domain:localhost",
            "deleted:user:a@example.com",
            "deleted:domain:example.com?uid=1",
            "allusers",
            "principal://",
        ] {
            assert!(normalize_member(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn members_match_principals() {
        let p = "user:alice@example.com";
        assert!(member_matches("user:alice@example.com", p));
        assert!(member_matches("allAuthenticatedUsers", p));
        assert!(member_matches("allUsers", p));
        assert!(member_matches("domain:example.com", p));
        assert!(!member_matches("domain:example.org", p));
        assert!(!member_matches("user:bob@example.com", p));
        assert!(!member_matches("group:alice@example.com", p));
        assert!(!member_matches(
            "domain:gserviceaccount.com",
            "serviceAccount:x@p.iam.gserviceaccount.com"
        ));
    }

    #[test]
    fn policies_normalise_and_grant() {
        let raw = Policy {
            version: 3,
            bindings: vec![
                Binding {
                    role: "roles/viewer".into(),
                    members: vec!["user:B@x.com".into(), "user:a@x.com".into()],
                },
                Binding {
                    role: "roles/serviceusage.apiKeysAdmin".into(),
                    members: vec!["user:a@x.com".into()],
                },
                Binding {
                    role: "roles/viewer".into(),
                    members: vec!["user:b@x.com".into()],
                },
            ],
            etag: "BwYk3n6TqPo=".into(),
        };
        let p = raw.normalized(false).unwrap();
        assert_eq!(p.version, 1);
        assert_eq!(p.etag, "BwYk3n6TqPo=");
        assert_eq!(
            p.bindings,
            vec![
                Binding {
                    role: "roles/serviceusage.apiKeysAdmin".into(),
                    members: vec!["user:a@x.com".into()],
                },
                Binding {
                    role: "roles/viewer".into(),
                    members: vec!["user:a@x.com".into(), "user:b@x.com".into()],
                },
            ]
        );
        assert!(p.grants("user:a@x.com", "apikeys.keys.create"));
        assert!(!p.grants("user:b@x.com", "apikeys.keys.create"));
        assert!(p.grants("user:b@x.com", "apikeys.keys.list"));
        assert!(!p.grants("user:c@x.com", "apikeys.keys.list"));
        assert!(p
            .permissions_of("user:a@x.com")
            .contains("resourcemanager.projects.get"));
    }

    #[test]
    fn bad_policies_are_refused() {
        let with = |role: &str, members: &[&str]| Policy {
            version: 1,
            bindings: vec![Binding {
                role: role.into(),
                members: members.iter().map(|m| m.to_string()).collect(),
            }],
            etag: String::new(),
        };
        assert_eq!(
            with("roles/nope", &["user:a@x.com"]).normalized(true),
            Err(PolicyError::UnknownRole("roles/nope".into()))
        );
        assert_eq!(
            with("roles/orgpolicy.policyAdmin", &["user:a@x.com"]).normalized(false),
            Err(PolicyError::RoleNotGrantableHere(
                "roles/orgpolicy.policyAdmin".into()
            ))
        );
        assert!(with("roles/orgpolicy.policyAdmin", &["user:a@x.com"])
            .normalized(true)
            .is_ok());
        assert_eq!(
            with("roles/viewer", &["bob"]).normalized(true),
            Err(PolicyError::InvalidMember("bob".into()))
        );
        assert_eq!(
            with("roles/viewer", &[]).normalized(true),
            Err(PolicyError::NoMembers("roles/viewer".into()))
        );
    }

    #[test]
    fn bindings_are_added_and_removed() {
        let mut p = Policy::empty();
        p.add_binding("roles/viewer", "user:a@x.com");
        p.add_binding("roles/viewer", "user:a@x.com");
        p.add_binding("roles/viewer", "user:b@x.com");
        assert_eq!(p.bindings[0].members.len(), 2);
        assert!(p.remove_binding("roles/viewer", "user:a@x.com"));
        assert!(!p.remove_binding("roles/viewer", "user:a@x.com"));
        assert!(p.remove_binding("roles/viewer", "user:b@x.com"));
        assert!(p.bindings.is_empty());
    }

    #[test]
    fn etags_look_like_googles() {
        let e = new_policy_etag();
        assert_eq!(e.len(), 12);
        assert!(e.ends_with('='));
        assert_ne!(e, new_policy_etag());
    }
}
