//! The control-plane client: Resource Manager v3 (projects), Service Usage v1 (services)
//! and API Keys v2 (keys), on Google's paths, authenticated with a service account's
//! access token. Mutations answer long-running operations; every method here waits for
//! its operation and returns the resource the operation produced.

use crate::credentials::ServiceAccountCredentials;
use crate::error::{ClientError, Secret};
use crate::http::{read_json, trim_base, USER_AGENT};
use crate::resources::{
    Key, ListKeysResponse, ListProjectsResponse, ListServicesResponse, LookupKeyResponse,
    Operation, Project, Service,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::fmt;
use std::time::{Duration, Instant};

/// How long a mutation waits for its operation by default.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one control-plane request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Polling backoff: first wait, factor, longest wait.
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_FACTOR: f64 = 1.5;
const POLL_MAX: Duration = Duration::from_secs(2);
/// A list is followed for at most this many pages.
const MAX_PAGES: usize = 1000;

/// The API an operation belongs to (its `operations.get` lives under that API's version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Resource Manager v3: `GET /v3/operations/…`.
    ResourceManager,
    /// Service Usage v1: `GET /v1/operations/…`.
    ServiceUsage,
    /// API Keys v2: `GET /v2/operations/…`.
    ApiKeys,
}

impl Api {
    fn version(self) -> &'static str {
        match self {
            Api::ResourceManager => "v3",
            Api::ServiceUsage => "v1",
            Api::ApiKeys => "v2",
        }
    }
}

/// What `create_key` sends. Every field is optional.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// `keyId`: the last segment of the key's name; the server picks a UUID when absent.
    pub key_id: Option<String>,
    pub display_name: Option<String>,
    /// A `Restrictions` message in JSON.
    pub restrictions: Option<Value>,
    /// User annotations.
    pub annotations: Option<Map<String, Value>>,
    /// Binds the key to a service account.
    pub service_account_email: Option<String>,
}

/// A client for one Keyplane server's control plane.
pub struct ControlPlane {
    base: String,
    http: reqwest::Client,
    credentials: ServiceAccountCredentials,
    operation_timeout: Duration,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("base", &self.base)
            .field("credentials", &self.credentials)
            .field("operation_timeout", &self.operation_timeout)
            .finish()
    }
}

impl ControlPlane {
    /// A client for the server at `base_url` (`http://host:port`).
    pub fn new(base_url: &str, credentials: ServiceAccountCredentials) -> Self {
        let http = http_client();
        ControlPlane {
            base: trim_base(base_url),
            credentials: credentials.with_http_client(http.clone()),
            http,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// A client for the server the credentials' `token_uri` names.
    pub fn from_credentials(credentials: ServiceAccountCredentials) -> Result<Self, ClientError> {
        let base = credentials.server_base_url().ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "the credentials' token_uri ({}) does not name a Keyplane server; give the server's URL",
                credentials.token_uri()
            ))
        })?;
        Ok(Self::new(&base, credentials))
    }

    /// Waits at most `timeout` for each long-running operation.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn credentials(&self) -> &ServiceAccountCredentials {
        &self.credentials
    }

    // === Resource Manager v3 ===

    /// `POST /v3/projects`, then waits for the operation.
    pub async fn create_project(
        &self,
        project_id: &str,
        display_name: Option<&str>,
    ) -> Result<Project, ClientError> {
        let mut body = json!({ "projectId": project_id });
        if let Some(d) = display_name {
            body["displayName"] = Value::String(d.to_owned());
        }
        let op: Operation = self
            .call(
                Method::POST,
                "/v3/projects",
                &[],
                Some(&body),
                "POST /v3/projects",
            )
            .await?;
        self.wait_for(Api::ResourceManager, op).await
    }

    /// `GET /v3/projects/{id or number}`.
    pub async fn get_project(&self, project: &str) -> Result<Project, ClientError> {
        let path = format!("/v3/projects/{}", segment(project)?);
        self.call(Method::GET, &path, &[], None, "GET /v3/projects/{project}")
            .await
    }

    /// One page of `GET /v3/projects`.
    pub async fn list_projects_page(
        &self,
        page_size: Option<u32>,
        page_token: Option<&str>,
        show_deleted: bool,
    ) -> Result<ListProjectsResponse, ClientError> {
        let query = list_query(page_size, page_token, show_deleted, None);
        self.call(
            Method::GET,
            "/v3/projects",
            &query,
            None,
            "GET /v3/projects",
        )
        .await
    }

    /// Every project, following `nextPageToken`.
    pub async fn list_projects(&self, show_deleted: bool) -> Result<Vec<Project>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .list_projects_page(None, token.as_deref(), show_deleted)
                .await?;
            all.extend(page.projects);
            match next_token(page.next_page_token, &token) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(all)
    }

    // === Service Usage v1 ===

    /// `POST /v1/projects/{p}/services/{service}:enable`, then waits; the enabled service.
    pub async fn enable_service(
        &self,
        project: &str,
        service: &str,
    ) -> Result<Service, ClientError> {
        self.set_service(project, service, "enable").await
    }

    /// `POST /v1/projects/{p}/services/{service}:disable`, then waits; the disabled service.
    pub async fn disable_service(
        &self,
        project: &str,
        service: &str,
    ) -> Result<Service, ClientError> {
        self.set_service(project, service, "disable").await
    }

    async fn set_service(
        &self,
        project: &str,
        service: &str,
        verb: &str,
    ) -> Result<Service, ClientError> {
        #[derive(Deserialize)]
        struct ServiceResponse {
            service: Service,
        }
        let path = format!(
            "/v1/projects/{}/services/{}:{verb}",
            segment(project)?,
            segment(service)?
        );
        let what = format!("POST /v1/projects/{{project}}/services/{{service}}:{verb}");
        let op: Operation = self
            .call(Method::POST, &path, &[], Some(&json!({})), &what)
            .await?;
        let r: ServiceResponse = self.wait_for(Api::ServiceUsage, op).await?;
        Ok(r.service)
    }

    /// `GET /v1/projects/{p}/services/{service}`.
    pub async fn get_service(&self, project: &str, service: &str) -> Result<Service, ClientError> {
        let path = format!(
            "/v1/projects/{}/services/{}",
            segment(project)?,
            segment(service)?
        );
        self.call(
            Method::GET,
            &path,
            &[],
            None,
            "GET /v1/projects/{project}/services/{service}",
        )
        .await
    }

    /// One page of `GET /v1/projects/{p}/services` (`filter`, e.g. `state:ENABLED`).
    pub async fn list_services_page(
        &self,
        project: &str,
        filter: Option<&str>,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<ListServicesResponse, ClientError> {
        let path = format!("/v1/projects/{}/services", segment(project)?);
        let query = list_query(page_size, page_token, false, filter);
        self.call(
            Method::GET,
            &path,
            &query,
            None,
            "GET /v1/projects/{project}/services",
        )
        .await
    }

    /// Every service of a project (with `filter`), following `nextPageToken`.
    pub async fn list_services(
        &self,
        project: &str,
        filter: Option<&str>,
    ) -> Result<Vec<Service>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .list_services_page(project, filter, None, token.as_deref())
                .await?;
            all.extend(page.services);
            match next_token(page.next_page_token, &token) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(all)
    }

    // === API Keys v2 ===

    /// `POST /v2/projects/{p}/locations/global/keys[?keyId=]`, then waits. The key comes
    /// back with its `keyString`.
    pub async fn create_key(&self, project: &str, new: &NewKey) -> Result<Key, ClientError> {
        let path = format!("/v2/projects/{}/locations/global/keys", segment(project)?);
        let mut body = Map::new();
        if let Some(d) = &new.display_name {
            body.insert("displayName".into(), Value::String(d.clone()));
        }
        if let Some(r) = &new.restrictions {
            body.insert("restrictions".into(), r.clone());
        }
        if let Some(a) = &new.annotations {
            body.insert("annotations".into(), Value::Object(a.clone()));
        }
        if let Some(e) = &new.service_account_email {
            body.insert("serviceAccountEmail".into(), Value::String(e.clone()));
        }
        let query: Vec<(&str, String)> =
            new.key_id.iter().map(|id| ("keyId", id.clone())).collect();
        let op: Operation = self
            .call(
                Method::POST,
                &path,
                &query,
                Some(&Value::Object(body)),
                "POST /v2/projects/{project}/locations/global/keys",
            )
            .await?;
        self.wait_for(Api::ApiKeys, op).await
    }

    /// One page of `GET /v2/projects/{p}/locations/global/keys`.
    pub async fn list_keys_page(
        &self,
        project: &str,
        show_deleted: bool,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<ListKeysResponse, ClientError> {
        let path = format!("/v2/projects/{}/locations/global/keys", segment(project)?);
        let query = list_query(page_size, page_token, show_deleted, None);
        self.call(
            Method::GET,
            &path,
            &query,
            None,
            "GET /v2/projects/{project}/locations/global/keys",
        )
        .await
    }

    /// Every key of a project, following `nextPageToken`.
    pub async fn list_keys(
        &self,
        project: &str,
        show_deleted: bool,
    ) -> Result<Vec<Key>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .list_keys_page(project, show_deleted, None, token.as_deref())
                .await?;
            all.extend(page.keys);
            match next_token(page.next_page_token, &token) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(all)
    }

    /// `GET /v2/{name}`.
    pub async fn get_key(&self, name: &str) -> Result<Key, ClientError> {
        let path = format!("/v2/{}", key_path(name)?);
        self.call(Method::GET, &path, &[], None, "GET /v2/{key}")
            .await
    }

    /// `GET /v2/{name}/keyString`.
    pub async fn get_key_string(&self, name: &str) -> Result<Secret, ClientError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct KeyString {
            key_string: Secret,
        }
        let path = format!("/v2/{}/keyString", key_path(name)?);
        let r: KeyString = self
            .call(Method::GET, &path, &[], None, "GET /v2/{key}/keyString")
            .await?;
        Ok(r.key_string)
    }

    /// `DELETE /v2/{name}[?etag=]` (a soft delete), then waits; the key with `deleteTime`.
    pub async fn delete_key(&self, name: &str, etag: Option<&str>) -> Result<Key, ClientError> {
        let path = format!("/v2/{}", key_path(name)?);
        let query: Vec<(&str, String)> = etag.iter().map(|e| ("etag", e.to_string())).collect();
        let op: Operation = self
            .call(Method::DELETE, &path, &query, None, "DELETE /v2/{key}")
            .await?;
        self.wait_for(Api::ApiKeys, op).await
    }

    /// `POST /v2/{name}:undelete`, then waits; the restored key.
    pub async fn undelete_key(&self, name: &str) -> Result<Key, ClientError> {
        let path = format!("/v2/{}:undelete", key_path(name)?);
        let op: Operation = self
            .call(
                Method::POST,
                &path,
                &[],
                Some(&json!({})),
                "POST /v2/{key}:undelete",
            )
            .await?;
        self.wait_for(Api::ApiKeys, op).await
    }

    /// `GET /v2/keys:lookupKey?keyString=`: the project and name a key string belongs to.
    pub async fn lookup_key(&self, key_string: &str) -> Result<LookupKeyResponse, ClientError> {
        let query = [("keyString", key_string.to_owned())];
        self.call(
            Method::GET,
            "/v2/keys:lookupKey",
            &query,
            None,
            "GET /v2/keys:lookupKey",
        )
        .await
    }

    // === Long-running operations ===

    /// `GET /{version}/{operation name}`.
    pub async fn get_operation(&self, api: Api, name: &str) -> Result<Operation, ClientError> {
        let rest = name
            .strip_prefix("operations/")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "an operation name starts with \"operations/\", got {name:?}"
                ))
            })?;
        let encoded: Vec<String> = rest
            .split('/')
            .map(|s| urlencoding::encode(s).into_owned())
            .collect();
        let path = format!("/{}/operations/{}", api.version(), encoded.join("/"));
        let what = format!("GET /{}/operations/{{operation}}", api.version());
        self.call(Method::GET, &path, &[], None, &what).await
    }

    /// Polls `op` until it is done (backoff from 100 ms to 2 s, up to the operation
    /// timeout) and returns its `response` without `@type`; a failed operation becomes
    /// the `ClientError::Api` of its `error`.
    pub async fn wait_operation(&self, api: Api, op: Operation) -> Result<Value, ClientError> {
        let deadline = Instant::now() + self.operation_timeout;
        let mut delay = POLL_FIRST;
        let mut op = op;
        while !op.done {
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::OperationTimeout(op.name));
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = delay.mul_f64(POLL_FACTOR).min(POLL_MAX);
            op = self.get_operation(api, &op.name).await?;
        }
        if let Some(err) = &op.error {
            return Err(ClientError::from_status_value(200, err));
        }
        match op.response {
            Some(Value::Object(mut fields)) => {
                fields.remove("@type");
                Ok(Value::Object(fields))
            }
            Some(other) => Ok(other),
            None => Err(ClientError::Decode {
                what: format!("operation {}", op.name),
                detail: "the operation finished without a response or an error".to_owned(),
            }),
        }
    }

    async fn wait_for<T: DeserializeOwned>(
        &self,
        api: Api,
        op: Operation,
    ) -> Result<T, ClientError> {
        let name = op.name.clone();
        let response = self.wait_operation(api, op).await?;
        serde_json::from_value(response)
            .map_err(|e| ClientError::decode(format!("the response of operation {name}"), &e))
    }

    // === Plumbing ===

    /// Sends one authenticated request and reads a 200 as `T`. A 401 is retried once
    /// with a fresh token (the cached one may have been revoked or the server restarted).
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut retried = false;
        loop {
            let token = self.credentials.access_token().await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose())
                .timeout(REQUEST_TIMEOUT);
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                self.credentials.invalidate().await;
                continue;
            }
            return read_json(resp, what).await;
        }
    }
}

/// Key updates, project lifecycle and search, and Org Policy v2.
impl ControlPlane {
    /// `PATCH /v2/{name}?updateMask=…` with `key` (a partial `Key` in JSON), then waits;
    /// the updated key. `update_mask` lists the fields to replace (camelCase, e.g.
    /// `displayName`, `restrictions.serverKeyRestrictions`); empty means the fields present
    /// in `key`.
    pub async fn update_key(
        &self,
        name: &str,
        key: &Value,
        update_mask: &[&str],
    ) -> Result<Key, ClientError> {
        let path = format!("/v2/{}", key_path(name)?);
        let query: Vec<(&str, String)> = if update_mask.is_empty() {
            Vec::new()
        } else {
            vec![("updateMask", update_mask.join(","))]
        };
        let op: Operation = self
            .call(Method::PATCH, &path, &query, Some(key), "PATCH /v2/{key}")
            .await?;
        self.wait_for(Api::ApiKeys, op).await
    }

    /// `DELETE /v3/projects/{p}` (the project becomes DELETE_REQUESTED), then waits.
    pub async fn delete_project(&self, project: &str) -> Result<Project, ClientError> {
        let path = format!("/v3/projects/{}", segment(project)?);
        let op: Operation = self
            .call(
                Method::DELETE,
                &path,
                &[],
                None,
                "DELETE /v3/projects/{project}",
            )
            .await?;
        self.wait_for(Api::ResourceManager, op).await
    }

    /// `POST /v3/projects/{p}:undelete`, then waits; the active project.
    pub async fn undelete_project(&self, project: &str) -> Result<Project, ClientError> {
        let path = format!("/v3/projects/{}:undelete", segment(project)?);
        let op: Operation = self
            .call(
                Method::POST,
                &path,
                &[],
                Some(&json!({})),
                "POST /v3/projects/{project}:undelete",
            )
            .await?;
        self.wait_for(Api::ResourceManager, op).await
    }

    /// `PATCH /v3/projects/{p}?updateMask=…`: sets the display name and/or replaces the
    /// labels; `etag` (when given) must be the project's current one.
    pub async fn update_project(
        &self,
        project: &str,
        display_name: Option<&str>,
        labels: Option<&Map<String, Value>>,
        etag: Option<&str>,
    ) -> Result<Project, ClientError> {
        let path = format!("/v3/projects/{}", segment(project)?);
        let mut body = Map::new();
        let mut mask = Vec::new();
        if let Some(d) = display_name {
            body.insert("displayName".into(), Value::String(d.to_owned()));
            mask.push("displayName");
        }
        if let Some(l) = labels {
            body.insert("labels".into(), Value::Object(l.clone()));
            mask.push("labels");
        }
        if let Some(e) = etag {
            body.insert("etag".into(), Value::String(e.to_owned()));
        }
        let query = [("updateMask", mask.join(","))];
        let op: Operation = self
            .call(
                Method::PATCH,
                &path,
                &query,
                Some(&Value::Object(body)),
                "PATCH /v3/projects/{project}",
            )
            .await?;
        self.wait_for(Api::ResourceManager, op).await
    }

    /// `GET /v3/projects:search?query=…`, following `nextPageToken`.
    pub async fn search_projects(&self, query: &str) -> Result<Vec<Project>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut q = vec![("query", query.to_owned())];
            if let Some(t) = &token {
                q.push(("pageToken", t.clone()));
            }
            let page: ListProjectsResponse = self
                .call(
                    Method::GET,
                    "/v3/projects:search",
                    &q,
                    None,
                    "GET /v3/projects:search",
                )
                .await?;
            all.extend(page.projects);
            match next_token(page.next_page_token, &token) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(all)
    }

    /// `GET /v2/{parent}/policies/{constraint}` (`parent`: `projects/P` or
    /// `organizations/N`); with `effective`, `…:getEffectivePolicy`. The Policy JSON.
    pub async fn get_org_policy(
        &self,
        parent: &str,
        constraint: &str,
        effective: bool,
    ) -> Result<Value, ClientError> {
        let mut path = format!(
            "/v2/{}/policies/{}",
            policy_parent(parent)?,
            segment(constraint)?
        );
        if effective {
            path.push_str(":getEffectivePolicy");
        }
        self.call(
            Method::GET,
            &path,
            &[],
            None,
            "GET /v2/{parent}/policies/{constraint}",
        )
        .await
    }

    /// Sets the boolean `constraint` on `parent` to `enforce`: updates the policy there, or
    /// creates it. The Policy JSON.
    pub async fn set_org_policy_enforce(
        &self,
        parent: &str,
        constraint: &str,
        enforce: bool,
    ) -> Result<Value, ClientError> {
        let parent = policy_parent(parent)?;
        let spec = json!({ "rules": [{ "enforce": enforce }] });
        match self.get_org_policy(&parent, constraint, false).await {
            Ok(current) => {
                let path = format!("/v2/{parent}/policies/{}", segment(constraint)?);
                let mut body = json!({ "spec": spec });
                if let Some(etag) = current.get("etag").and_then(Value::as_str) {
                    body["etag"] = Value::String(etag.to_owned());
                }
                self.call(
                    Method::PATCH,
                    &path,
                    &[("updateMask", "spec".to_owned())],
                    Some(&body),
                    "PATCH /v2/{parent}/policies/{constraint}",
                )
                .await
            }
            Err(e) if e.status() == Some("NOT_FOUND") => {
                let body = json!({
                    "name": format!("{parent}/policies/{constraint}"),
                    "spec": spec,
                });
                self.call(
                    Method::POST,
                    &format!("/v2/{parent}/policies"),
                    &[],
                    Some(&body),
                    "POST /v2/{parent}/policies",
                )
                .await
            }
            Err(e) => Err(e),
        }
    }

    /// `DELETE /v2/{parent}/policies/{constraint}`: the resource inherits again.
    pub async fn delete_org_policy(
        &self,
        parent: &str,
        constraint: &str,
    ) -> Result<(), ClientError> {
        let path = format!(
            "/v2/{}/policies/{}",
            policy_parent(parent)?,
            segment(constraint)?
        );
        let _: Value = self
            .call(
                Method::DELETE,
                &path,
                &[],
                None,
                "DELETE /v2/{parent}/policies/{constraint}",
            )
            .await?;
        Ok(())
    }

    /// The installation's organization (`organizations/N`), from Resource Manager's
    /// organizations search.
    pub async fn default_policy_organization(&self) -> Result<String, ClientError> {
        let found: Value = self
            .call(
                Method::GET,
                "/v3/organizations:search",
                &[],
                None,
                "GET /v3/organizations:search",
            )
            .await?;
        found["organizations"]
            .as_array()
            .and_then(|orgs| orgs.first())
            .and_then(|o| o["name"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Decode {
                what: "GET /v3/organizations:search".to_owned(),
                detail: "no organization is visible to these credentials".to_owned(),
            })
    }
}

/// `projects/{p}` or `organizations/{n}`, encoded per segment.
fn policy_parent(parent: &str) -> Result<String, ClientError> {
    match parent.split_once('/') {
        Some((kind @ ("projects" | "organizations" | "folders"), id)) if !id.contains('/') => {
            Ok(format!("{kind}/{}", segment(id)?))
        }
        _ => Err(ClientError::InvalidArgument(format!(
            "{parent:?} is not a policy parent: expected projects/PROJECT or organizations/NUMBER"
        ))),
    }
}

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// One path segment, percent-encoded; empty or dot segments are refused.
fn segment(s: &str) -> Result<String, ClientError> {
    if s.is_empty() || s == "." || s == ".." {
        return Err(ClientError::InvalidArgument(format!(
            "{s:?} is not a valid resource id"
        )));
    }
    Ok(urlencoding::encode(s).into_owned())
}

/// A key's resource name, `projects/{p}/locations/{l}/keys/{id}`, encoded per segment.
fn key_path(name: &str) -> Result<String, ClientError> {
    let parts: Vec<&str> = name.split('/').collect();
    let shaped = parts.len() == 6
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "keys"
        && [parts[1], parts[3], parts[5]]
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..");
    if !shaped {
        return Err(ClientError::InvalidArgument(format!(
            "{name:?} is not a key name: expected projects/PROJECT/locations/global/keys/KEY_ID"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| urlencoding::encode(p).into_owned())
        .collect::<Vec<_>>()
        .join("/"))
}

fn list_query(
    page_size: Option<u32>,
    page_token: Option<&str>,
    show_deleted: bool,
    filter: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(n) = page_size {
        q.push(("pageSize", n.to_string()));
    }
    if let Some(t) = page_token {
        q.push(("pageToken", t.to_owned()));
    }
    if show_deleted {
        q.push(("showDeleted", "true".to_owned()));
    }
    if let Some(f) = filter {
        q.push(("filter", f.to_owned()));
    }
    q
}

/// The next page token, or `None` at the end (empty, absent, or the same token again).
fn next_token(next: Option<String>, current: &Option<String>) -> Option<String> {
    next.filter(|t| !t.is_empty() && Some(t) != current.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_checked_and_encoded() {
        assert_eq!(
            key_path("projects/123/locations/global/keys/my-key").unwrap(),
            "projects/123/locations/global/keys/my-key"
        );
        assert_eq!(
            key_path("projects/p/locations/global/keys/a b").unwrap(),
            "projects/p/locations/global/keys/a%20b"
        );
        for bad in [
            "my-key",
            "projects/123/keys/k",
            "projects/123/locations/global/keys/",
            "projects/../locations/global/keys/k",
            "projects/1/locations/global/keys/k/extra",
        ] {
            assert!(
                matches!(key_path(bad), Err(ClientError::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn page_tokens_stop_at_the_end() {
        assert_eq!(next_token(None, &None), None);
        assert_eq!(next_token(Some(String::new()), &None), None);
        assert_eq!(next_token(Some("a".into()), &None), Some("a".into()));
        assert_eq!(next_token(Some("a".into()), &Some("a".into())), None);
    }
}
