//! Keyplane-specific administration on the control-plane client: people
//! (`/v1/keyplane/users`), sign-in (`/v1/keyplane/auth:signIn`), the audit log
//! (`/v1/keyplane/auditLogs`), and plans, quotas and usage
//! (`/v1/keyplane/projects/{p}/quotas`, `:setTier`, `/usage`). Passwords are sent once and never kept or shown.

use crate::control::{http_client, ControlPlane};
use crate::error::{ClientError, Secret};
use crate::http::{read_json, trim_base};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A list is followed for at most this many pages.
const MAX_PAGES: usize = 1000;

/// A person who signs in (`user:{email}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default)]
    pub update_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ListUsersResponse {
    #[serde(default)]
    users: Vec<User>,
}

/// One audit entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditLog {
    pub time: String,
    #[serde(default)]
    pub principal: String,
    pub method: String,
    pub resource: String,
    #[serde(default)]
    pub project: Option<String>,
    pub result: String,
    #[serde(default)]
    pub status: u16,
}

/// One page of `GET /v1/keyplane/auditLogs`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAuditLogsResponse {
    #[serde(default)]
    pub audit_logs: Vec<AuditLog>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// Quota limits; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaLimits {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub input_tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub requests_per_day: Option<u64>,
}

/// One model's limits and what the project used of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelQuota {
    pub model: String,
    #[serde(default)]
    pub limits: QuotaLimits,
    #[serde(default)]
    pub requests_this_minute: u64,
    #[serde(default)]
    pub input_tokens_this_minute: u64,
    #[serde(default)]
    pub requests_today: u64,
}

/// `GET /v1/keyplane/projects/{p}/quotas`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectQuotas {
    pub project: String,
    #[serde(default)]
    pub project_id: String,
    pub tier: String,
    #[serde(default)]
    pub limits: QuotaLimits,
    #[serde(default)]
    pub models: Vec<ModelQuota>,
}

/// One usage bucket: a minute, a model, a method, a key and a status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageBucket {
    pub start_time: String,
    pub model: String,
    pub method: String,
    #[serde(default)]
    pub key: Option<String>,
    pub code: i32,
    pub requests: i64,
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub candidates_tokens: i64,
    #[serde(default)]
    pub latency_ms_sum: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    #[serde(default)]
    pub requests: i64,
    #[serde(default)]
    pub errors: i64,
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub candidates_tokens: i64,
}

/// `GET /v1/keyplane/projects/{p}/usage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectUsage {
    pub project: String,
    pub start_time: String,
    pub end_time: String,
    #[serde(default)]
    pub buckets: Vec<UsageBucket>,
    #[serde(default)]
    pub totals: UsageTotals,
}

/// A project reference as a single path segment.
fn project_segment(project: &str) -> Result<String, ClientError> {
    let p = project.strip_prefix("projects/").unwrap_or(project);
    if p.is_empty() || p.contains('/') || p.contains(':') {
        return Err(ClientError::InvalidArgument(format!(
            "{project:?} is not a project id or number"
        )));
    }
    Ok(urlencoding::encode(p).into_owned())
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
}

/// `POST {base}/v1/keyplane/auth:signIn`: a user's access token.
pub async fn sign_in(base_url: &str, email: &str, password: &str) -> Result<Secret, ClientError> {
    let resp = http_client()
        .post(format!("{}/v1/keyplane/auth:signIn", trim_base(base_url)))
        .timeout(REQUEST_TIMEOUT)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    let body: TokenBody = read_json(resp, "POST /v1/keyplane/auth:signIn").await?;
    Ok(Secret::new(body.access_token))
}

impl ControlPlane {
    /// `POST /v1/keyplane/users`.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<User, ClientError> {
        let mut body = json!({"email": email, "password": password});
        if let Some(d) = display_name {
            body["displayName"] = Value::String(d.to_owned());
        }
        self.admin_call(
            Method::POST,
            "/v1/keyplane/users",
            &[],
            Some(&body),
            "POST /v1/keyplane/users",
        )
        .await
    }

    /// `GET /v1/keyplane/users`.
    pub async fn list_users(&self) -> Result<Vec<User>, ClientError> {
        let r: ListUsersResponse = self
            .admin_call(
                Method::GET,
                "/v1/keyplane/users",
                &[],
                None,
                "GET /v1/keyplane/users",
            )
            .await?;
        Ok(r.users)
    }

    /// `POST /v1/keyplane/users/{email}:disable` (or `:enable` with `disabled` false).
    pub async fn set_user_disabled(
        &self,
        email: &str,
        disabled: bool,
    ) -> Result<User, ClientError> {
        if email.is_empty() || email.contains('/') {
            return Err(ClientError::InvalidArgument(format!(
                "{email:?} is not an email address"
            )));
        }
        let verb = if disabled { "disable" } else { "enable" };
        let path = format!("/v1/keyplane/users/{}:{verb}", urlencoding::encode(email));
        let what = format!("POST /v1/keyplane/users/{{email}}:{verb}");
        self.admin_call(Method::POST, &path, &[], Some(&json!({})), &what)
            .await
    }

    /// One page of `GET /v1/keyplane/auditLogs`.
    pub async fn list_audit_logs_page(
        &self,
        project: Option<&str>,
        since: Option<&str>,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<ListAuditLogsResponse, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(p) = project {
            query.push(("project", p.to_owned()));
        }
        if let Some(s) = since {
            query.push(("since", s.to_owned()));
        }
        if let Some(n) = page_size {
            query.push(("pageSize", n.to_string()));
        }
        if let Some(t) = page_token {
            query.push(("pageToken", t.to_owned()));
        }
        self.admin_call(
            Method::GET,
            "/v1/keyplane/auditLogs",
            &query,
            None,
            "GET /v1/keyplane/auditLogs",
        )
        .await
    }

    /// Every audit entry matching the filters, following `nextPageToken`.
    pub async fn list_audit_logs(
        &self,
        project: Option<&str>,
        since: Option<&str>,
    ) -> Result<Vec<AuditLog>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .list_audit_logs_page(project, since, None, token.as_deref())
                .await?;
            all.extend(page.audit_logs);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => break,
            }
        }
        Ok(all)
    }

    /// `GET /v1/keyplane/projects/{p}/quotas`: the tier, its limits, and per model the
    /// use this minute and today.
    pub async fn project_quotas(&self, project: &str) -> Result<ProjectQuotas, ClientError> {
        let path = format!("/v1/keyplane/projects/{}/quotas", project_segment(project)?);
        self.admin_call(
            Method::GET,
            &path,
            &[],
            None,
            "GET /v1/keyplane/projects/{p}/quotas",
        )
        .await
    }

    /// `POST /v1/keyplane/projects/{p}:setTier` (`free`, `tier-1`, `tier-2`, `tier-3`).
    pub async fn set_project_tier(
        &self,
        project: &str,
        tier: &str,
    ) -> Result<ProjectQuotas, ClientError> {
        let path = format!(
            "/v1/keyplane/projects/{}:setTier",
            project_segment(project)?
        );
        self.admin_call(
            Method::POST,
            &path,
            &[],
            Some(&json!({ "tier": tier })),
            "POST /v1/keyplane/projects/{p}:setTier",
        )
        .await
    }

    /// `GET /v1/keyplane/projects/{p}/usage` over `[start, end)` (RFC 3339; the server's
    /// defaults: the last hour).
    pub async fn project_usage(
        &self,
        project: &str,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<ProjectUsage, ClientError> {
        let path = format!("/v1/keyplane/projects/{}/usage", project_segment(project)?);
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = start {
            query.push(("startTime", s.to_owned()));
        }
        if let Some(e) = end {
            query.push(("endTime", e.to_owned()));
        }
        self.admin_call(
            Method::GET,
            &path,
            &query,
            None,
            "GET /v1/keyplane/projects/{p}/usage",
        )
        .await
    }

    /// One authenticated request, through [`ControlPlane::call`] (a 401 is retried once
    /// with a fresh token).
    async fn admin_call<T: DeserializeOwned>(
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
