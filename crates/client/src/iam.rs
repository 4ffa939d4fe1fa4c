//! IAM Admin v1 on the control-plane client: service accounts, their keys and the
//! predefined roles, on Google's paths (`/v1/projects/{p}/serviceAccounts/...`, `/v1/roles`).
//!
//! Accounts are addressed as gcloud does: by email, under the project wildcard
//! `projects/-` unless a project is given. A created key's `privateKeyData` (the whole key
//! file) is a [`Secret`]: `Debug` never shows it.

use crate::control::ControlPlane;
use crate::error::{ClientError, Secret};
use base64::Engine as _;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;

pub use keyplane_wire::iam::{ListServiceAccountsResponse, Role, ServiceAccount};

/// A list is followed for at most this many pages.
const MAX_PAGES: usize = 1000;

/// `google.iam.admin.v1.ServiceAccountKey`; `privateKeyData` (only in a create answer) is
/// a [`Secret`].
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountKey {
    /// `projects/{PROJECT_ID}/serviceAccounts/{EMAIL}/keys/{KEY_ID}`.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_algorithm: String,
    /// Standard base64 of the JSON key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_data: Option<Secret>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key_data: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub valid_after_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub valid_before_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_origin: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_type: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("name", &self.name)
            .field("private_key_type", &self.private_key_type)
            .field("key_algorithm", &self.key_algorithm)
            .field("private_key_data", &self.private_key_data)
            .field("valid_after_time", &self.valid_after_time)
            .field("valid_before_time", &self.valid_before_time)
            .field("key_origin", &self.key_origin)
            .field("key_type", &self.key_type)
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl ServiceAccountKey {
    /// The key id, the last segment of the name (the key file's `private_key_id`).
    pub fn key_id(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    /// The JSON key file a create answered (decoded `privateKeyData`).
    pub fn key_file(&self) -> Result<Secret, ClientError> {
        let data = self
            .private_key_data
            .as_ref()
            .ok_or_else(|| ClientError::Decode {
                what: "a service account key".to_owned(),
                detail: "it carries no privateKeyData (only a create answers it)".to_owned(),
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.expose().trim())
            .map_err(|_| ClientError::Decode {
                what: "a service account key".to_owned(),
                detail: "privateKeyData is not standard base64".to_owned(),
            })?;
        String::from_utf8(bytes)
            .map(Secret::new)
            .map_err(|_| ClientError::Decode {
                what: "a service account key".to_owned(),
                detail: "the key file is not UTF-8".to_owned(),
            })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListKeysResponse {
    #[serde(default)]
    keys: Vec<ServiceAccountKey>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRolesResponse {
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// `projects/{project}/serviceAccounts/{account}` with each part percent-encoded; the
/// project defaults to the wildcard `-`. `account` may also be a full resource name.
fn account_path(project: Option<&str>, account: &str) -> Result<String, ClientError> {
    let (project, account) = match account.strip_prefix("projects/") {
        Some(rest) => match rest.split_once("/serviceAccounts/") {
            Some((p, a)) => (p, a),
            None => {
                return Err(ClientError::InvalidArgument(format!(
                    "{account:?} is not a service account name: expected EMAIL or projects/PROJECT/serviceAccounts/EMAIL"
                )))
            }
        },
        None => (project.unwrap_or("-"), account),
    };
    Ok(format!(
        "/v1/projects/{}/serviceAccounts/{}",
        segment(project)?,
        segment(account)?
    ))
}

fn segment(s: &str) -> Result<String, ClientError> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') {
        return Err(ClientError::InvalidArgument(format!(
            "{s:?} is not a valid resource id"
        )));
    }
    Ok(urlencoding::encode(s).into_owned())
}

impl ControlPlane {
    /// `POST /v1/projects/{p}/serviceAccounts`.
    pub async fn create_service_account(
        &self,
        project: &str,
        account_id: &str,
        display_name: Option<&str>,
        description: Option<&str>,
    ) -> Result<ServiceAccount, ClientError> {
        let mut sa = serde_json::Map::new();
        if let Some(d) = display_name {
            sa.insert("displayName".into(), Value::String(d.to_owned()));
        }
        if let Some(d) = description {
            sa.insert("description".into(), Value::String(d.to_owned()));
        }
        let body = json!({"accountId": account_id, "serviceAccount": sa});
        let path = format!("/v1/projects/{}/serviceAccounts", segment(project)?);
        self.iam_call(
            Method::POST,
            &path,
            &[],
            Some(&body),
            "POST /v1/projects/{p}/serviceAccounts",
        )
        .await
    }

    /// Every service account of a project, following `nextPageToken`.
    pub async fn list_service_accounts(
        &self,
        project: &str,
    ) -> Result<Vec<ServiceAccount>, ClientError> {
        let path = format!("/v1/projects/{}/serviceAccounts", segment(project)?);
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("pageSize", "100".to_owned())];
            if let Some(t) = &token {
                query.push(("pageToken", t.clone()));
            }
            let page: ListServiceAccountsResponse = self
                .iam_call(
                    Method::GET,
                    &path,
                    &query,
                    None,
                    "GET /v1/projects/{p}/serviceAccounts",
                )
                .await?;
            all.extend(page.accounts);
            match page
                .next_page_token
                .filter(|t| !t.is_empty() && Some(t) != token.as_ref())
            {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(all)
    }

    /// `GET /v1/projects/{p|-}/serviceAccounts/{email}`.
    pub async fn get_service_account(
        &self,
        project: Option<&str>,
        account: &str,
    ) -> Result<ServiceAccount, ClientError> {
        let path = account_path(project, account)?;
        self.iam_call(
            Method::GET,
            &path,
            &[],
            None,
            "GET /v1/projects/{p}/serviceAccounts/{sa}",
        )
        .await
    }

    /// `PATCH /v1/projects/{p|-}/serviceAccounts/{email}` with an update mask naming the
    /// fields given.
    pub async fn update_service_account(
        &self,
        project: Option<&str>,
        account: &str,
        display_name: Option<&str>,
        description: Option<&str>,
    ) -> Result<ServiceAccount, ClientError> {
        let path = account_path(project, account)?;
        let mut sa = serde_json::Map::new();
        let mut mask = Vec::new();
        if let Some(d) = display_name {
            sa.insert("displayName".into(), Value::String(d.to_owned()));
            mask.push("displayName");
        }
        if let Some(d) = description {
            sa.insert("description".into(), Value::String(d.to_owned()));
            mask.push("description");
        }
        let body = json!({"serviceAccount": sa, "updateMask": mask.join(",")});
        self.iam_call(
            Method::PATCH,
            &path,
            &[],
            Some(&body),
            "PATCH /v1/projects/{p}/serviceAccounts/{sa}",
        )
        .await
    }

    /// `DELETE /v1/projects/{p|-}/serviceAccounts/{email}`.
    pub async fn delete_service_account(
        &self,
        project: Option<&str>,
        account: &str,
    ) -> Result<(), ClientError> {
        let path = account_path(project, account)?;
        let _: Value = self
            .iam_call(
                Method::DELETE,
                &path,
                &[],
                None,
                "DELETE /v1/projects/{p}/serviceAccounts/{sa}",
            )
            .await?;
        Ok(())
    }

    /// `POST /v1/projects/{p|-}/serviceAccounts/{email}:disable` (or `:enable`).
    pub async fn set_service_account_enabled(
        &self,
        project: Option<&str>,
        account: &str,
        enabled: bool,
    ) -> Result<(), ClientError> {
        let verb = if enabled { "enable" } else { "disable" };
        let path = format!("{}:{verb}", account_path(project, account)?);
        let what = format!("POST /v1/projects/{{p}}/serviceAccounts/{{sa}}:{verb}");
        let _: Value = self
            .iam_call(Method::POST, &path, &[], Some(&json!({})), &what)
            .await?;
        Ok(())
    }

    /// `POST .../serviceAccounts/{email}/keys`: a new key, with the key file in
    /// `privateKeyData` (see [`ServiceAccountKey::key_file`]).
    pub async fn create_service_account_key(
        &self,
        project: Option<&str>,
        account: &str,
    ) -> Result<ServiceAccountKey, ClientError> {
        let path = format!("{}/keys", account_path(project, account)?);
        let body = json!({"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE", "keyAlgorithm": "KEY_ALG_RSA_2048"});
        self.iam_call(
            Method::POST,
            &path,
            &[],
            Some(&body),
            "POST /v1/projects/{p}/serviceAccounts/{sa}/keys",
        )
        .await
    }

    /// `GET .../serviceAccounts/{email}/keys` (user-managed keys).
    pub async fn list_service_account_keys(
        &self,
        project: Option<&str>,
        account: &str,
    ) -> Result<Vec<ServiceAccountKey>, ClientError> {
        let path = format!("{}/keys", account_path(project, account)?);
        let list: ListKeysResponse = self
            .iam_call(
                Method::GET,
                &path,
                &[("keyTypes", "USER_MANAGED".to_owned())],
                None,
                "GET /v1/projects/{p}/serviceAccounts/{sa}/keys",
            )
            .await?;
        Ok(list.keys)
    }

    /// `GET .../keys/{id}`; `public_key_type` (`TYPE_X509_PEM_FILE`, `TYPE_RAW_PUBLIC_KEY`)
    /// asks for `publicKeyData`.
    pub async fn get_service_account_key(
        &self,
        project: Option<&str>,
        account: &str,
        key_id: &str,
        public_key_type: Option<&str>,
    ) -> Result<ServiceAccountKey, ClientError> {
        let path = format!(
            "{}/keys/{}",
            account_path(project, account)?,
            segment(key_id)?
        );
        let query: Vec<(&str, String)> = public_key_type
            .map(|t| vec![("publicKeyType", t.to_owned())])
            .unwrap_or_default();
        self.iam_call(
            Method::GET,
            &path,
            &query,
            None,
            "GET /v1/projects/{p}/serviceAccounts/{sa}/keys/{k}",
        )
        .await
    }

    /// `DELETE .../keys/{id}`.
    pub async fn delete_service_account_key(
        &self,
        project: Option<&str>,
        account: &str,
        key_id: &str,
    ) -> Result<(), ClientError> {
        let path = format!(
            "{}/keys/{}",
            account_path(project, account)?,
            segment(key_id)?
        );
        let _: Value = self
            .iam_call(
                Method::DELETE,
                &path,
                &[],
                None,
                "DELETE /v1/projects/{p}/serviceAccounts/{sa}/keys/{k}",
            )
            .await?;
        Ok(())
    }

    /// `POST .../keys/{id}:disable` (or `:enable`).
    pub async fn set_service_account_key_enabled(
        &self,
        project: Option<&str>,
        account: &str,
        key_id: &str,
        enabled: bool,
    ) -> Result<(), ClientError> {
        let verb = if enabled { "enable" } else { "disable" };
        let path = format!(
            "{}/keys/{}:{verb}",
            account_path(project, account)?,
            segment(key_id)?
        );
        let what = format!("POST /v1/projects/{{p}}/serviceAccounts/{{sa}}/keys/{{k}}:{verb}");
        let _: Value = self
            .iam_call(Method::POST, &path, &[], Some(&json!({})), &what)
            .await?;
        Ok(())
    }

    /// Every predefined role (`GET /v1/roles`), with permissions when `full`.
    pub async fn list_roles(&self, full: bool) -> Result<Vec<Role>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("view", if full { "FULL" } else { "BASIC" }.to_owned())];
            if let Some(t) = &token {
                query.push(("pageToken", t.clone()));
            }
            let page: ListRolesResponse = self
                .iam_call(Method::GET, "/v1/roles", &query, None, "GET /v1/roles")
                .await?;
            all.extend(page.roles);
            match page
                .next_page_token
                .filter(|t| !t.is_empty() && Some(t) != token.as_ref())
            {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(all)
    }

    /// `GET /v1/roles/{role}` (`roles/owner` or `owner`).
    pub async fn get_role(&self, role: &str) -> Result<Role, ClientError> {
        let short = role.strip_prefix("roles/").unwrap_or(role);
        let path = format!("/v1/roles/{}", segment(short)?);
        self.iam_call(Method::GET, &path, &[], None, "GET /v1/roles/{role}")
            .await
    }

    /// One authenticated request, through [`ControlPlane::call`] (a 401 is retried once
    /// with a fresh token).
    async fn iam_call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<T, ClientError> {
        self.call(method, path, query, body, what).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_paths_default_to_the_wildcard_project() {
        assert_eq!(
            account_path(None, "a@p.iam.gserviceaccount.com").unwrap(),
            "/v1/projects/-/serviceAccounts/a%40p.iam.gserviceaccount.com"
        );
        assert_eq!(
            account_path(Some("p"), "123").unwrap(),
            "/v1/projects/p/serviceAccounts/123"
        );
        assert_eq!(
            account_path(
                None,
                "projects/p/serviceAccounts/a@p.iam.gserviceaccount.com"
            )
            .unwrap(),
            "/v1/projects/p/serviceAccounts/a%40p.iam.gserviceaccount.com"
        );
        assert!(account_path(None, "projects/p/keys/x").is_err());
        assert!(account_path(None, "a/b").is_err());
    }

    #[test]
    fn key_files_decode_and_never_show_in_debug() {
        let key: ServiceAccountKey = serde_json::from_value(json!({
            "name": "projects/p/serviceAccounts/a@p.iam.gserviceaccount.com/keys/abc",
            "privateKeyData": base64::engine::general_purpose::STANDARD.encode("{\"private_key\": \"SECRET\"}"),
        }))
        .unwrap();
        assert_eq!(key.key_id(), "abc");
        assert!(key.key_file().unwrap().expose().contains("SECRET"));
        assert!(!format!("{key:?}").contains("eyJ"), "{key:?}");
    }
}
