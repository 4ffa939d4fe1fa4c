//! IAM allow policies and organizations on the control-plane client (Resource Manager v3):
//! `getIamPolicy`, `setIamPolicy`, `testIamPermissions` on `projects/{p}` and
//! `organizations/{o}`, the gcloud-like read-modify-write helpers
//! `add_iam_policy_binding` / `remove_iam_policy_binding`, and `organizations.get|search`.

use crate::control::ControlPlane;
use crate::error::ClientError;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How many times a read-modify-write is retried when the policy changed meanwhile.
const POLICY_RETRIES: usize = 5;

/// `google.iam.v1.Policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub version: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
}

/// `google.iam.v1.Binding`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub role: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// `google.cloud.resourcemanager.v3.Organization`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default)]
    pub etag: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchOrganizationsResponse {
    #[serde(default)]
    organizations: Vec<Organization>,
}

#[derive(Debug, Default, Deserialize)]
struct TestIamPermissionsResponse {
    #[serde(default)]
    permissions: Vec<String>,
}

/// `projects/{p}` or `organizations/{o}`, checked and with its id percent-encoded.
fn resource_path(resource: &str) -> Result<String, ClientError> {
    let (kind, id) = resource.split_once('/').unwrap_or(("", ""));
    let ok_kind = matches!(kind, "projects" | "organizations");
    if !ok_kind || id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(ClientError::InvalidArgument(format!(
            "{resource:?} is not a resource: expected projects/PROJECT or organizations/ORGANIZATION"
        )));
    }
    Ok(format!("{kind}/{}", urlencoding::encode(id)))
}

impl ControlPlane {
    /// `POST /v3/{resource}:getIamPolicy` (`resource` = `projects/P` or `organizations/O`).
    pub async fn get_iam_policy(&self, resource: &str) -> Result<Policy, ClientError> {
        let path = format!("/v3/{}:getIamPolicy", resource_path(resource)?);
        let body = json!({"options": {"requestedPolicyVersion": 3}});
        self.policy_call(
            Method::POST,
            &path,
            Some(&body),
            "POST /v3/{resource}:getIamPolicy",
        )
        .await
    }

    /// `POST /v3/{resource}:setIamPolicy`: replaces the bindings. With the policy's etag
    /// (as read), a concurrent change makes this fail with ABORTED (HTTP 409).
    pub async fn set_iam_policy(
        &self,
        resource: &str,
        policy: &Policy,
    ) -> Result<Policy, ClientError> {
        let path = format!("/v3/{}:setIamPolicy", resource_path(resource)?);
        let body = json!({"policy": policy, "updateMask": "bindings,etag"});
        self.policy_call(
            Method::POST,
            &path,
            Some(&body),
            "POST /v3/{resource}:setIamPolicy",
        )
        .await
    }

    /// `POST /v3/{resource}:testIamPermissions`: the subset of `permissions` the caller holds.
    pub async fn test_iam_permissions(
        &self,
        resource: &str,
        permissions: &[&str],
    ) -> Result<Vec<String>, ClientError> {
        let path = format!("/v3/{}:testIamPermissions", resource_path(resource)?);
        let body = json!({ "permissions": permissions });
        let resp: TestIamPermissionsResponse = self
            .policy_call(
                Method::POST,
                &path,
                Some(&body),
                "POST /v3/{resource}:testIamPermissions",
            )
            .await?;
        Ok(resp.permissions)
    }

    /// Grants `role` to `member` on `resource` (read, modify, write with the etag; retried
    /// when the policy changed meanwhile). Returns the new policy.
    pub async fn add_iam_policy_binding(
        &self,
        resource: &str,
        member: &str,
        role: &str,
    ) -> Result<Policy, ClientError> {
        self.modify_policy(resource, |p| {
            match p.bindings.iter_mut().find(|b| b.role == role) {
                Some(b) if b.members.iter().any(|m| m == member) => {}
                Some(b) => b.members.push(member.to_owned()),
                None => p.bindings.push(Binding {
                    role: role.to_owned(),
                    members: vec![member.to_owned()],
                }),
            }
            Ok(())
        })
        .await
    }

    /// Revokes `role` from `member` on `resource`; an error when the policy has no such
    /// binding. Returns the new policy.
    pub async fn remove_iam_policy_binding(
        &self,
        resource: &str,
        member: &str,
        role: &str,
    ) -> Result<Policy, ClientError> {
        self.modify_policy(resource, |p| {
            let mut found = false;
            for b in p.bindings.iter_mut().filter(|b| b.role == role) {
                let before = b.members.len();
                b.members.retain(|m| m != member);
                found |= b.members.len() != before;
            }
            if !found {
                return Err(ClientError::InvalidArgument(format!(
                    "the policy of {resource} has no binding of {role} to {member}"
                )));
            }
            p.bindings.retain(|b| !b.members.is_empty());
            Ok(())
        })
        .await
    }

    async fn modify_policy(
        &self,
        resource: &str,
        change: impl Fn(&mut Policy) -> Result<(), ClientError>,
    ) -> Result<Policy, ClientError> {
        let mut attempt = 0;
        loop {
            let mut policy = self.get_iam_policy(resource).await?;
            change(&mut policy)?;
            match self.set_iam_policy(resource, &policy).await {
                Err(ClientError::Api { code: 409, .. }) if attempt + 1 < POLICY_RETRIES => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// `GET /v3/organizations/{o}`.
    pub async fn get_organization(&self, organization: &str) -> Result<Organization, ClientError> {
        let id = organization
            .strip_prefix("organizations/")
            .unwrap_or(organization);
        let path = resource_path(&format!("organizations/{id}"))?;
        self.policy_call(
            Method::GET,
            &format!("/v3/{path}"),
            None,
            "GET /v3/organizations/{o}",
        )
        .await
    }

    /// `GET /v3/organizations:search` (`query` e.g. `domain:example.com`; empty = all).
    pub async fn search_organizations(
        &self,
        query: &str,
    ) -> Result<Vec<Organization>, ClientError> {
        let path = if query.is_empty() {
            "/v3/organizations:search".to_owned()
        } else {
            format!(
                "/v3/organizations:search?query={}",
                urlencoding::encode(query)
            )
        };
        let resp: SearchOrganizationsResponse = self
            .policy_call(Method::GET, &path, None, "GET /v3/organizations:search")
            .await?;
        Ok(resp.organizations)
    }

    /// One authenticated request, through [`ControlPlane::call`] (a 401 is retried once
    /// with a fresh token).
    async fn policy_call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<T, ClientError> {
        self.call(method, path, &[], body, what).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_checked_and_encoded() {
        assert_eq!(
            resource_path("projects/my-proj").unwrap(),
            "projects/my-proj"
        );
        assert_eq!(
            resource_path("organizations/42").unwrap(),
            "organizations/42"
        );
        assert_eq!(resource_path("projects/a b").unwrap(), "projects/a%20b");
        for bad in [
            "my-proj",
            "folders/1",
            "projects/",
            "projects/a/b",
            "projects/..",
        ] {
            assert!(resource_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_parse_googles_json() {
        let p: Policy = serde_json::from_str(
            r#"{"version":1,"etag":"BwYk3n6TqPo=","bindings":[{"role":"roles/owner","members":["user:a@x.com"]}]}"#,
        )
        .unwrap();
        assert_eq!(p.etag, "BwYk3n6TqPo=");
        assert_eq!(p.bindings[0].members, vec!["user:a@x.com"]);
        let empty: Policy = serde_json::from_str(r#"{"version":1,"etag":"ACAB"}"#).unwrap();
        assert!(empty.bindings.is_empty());
    }
}
