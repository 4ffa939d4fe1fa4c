//! The permission matrix: for each predefined role Keyplane knows and each control-plane
//! method, a service account holding only that role is allowed or denied exactly as the
//! role table in `keyplane_core::iam` says, seen from the outside over HTTP.
//!
//! Each role is bound where Google lets it be bound: project-level roles on a test project,
//! organization-only roles on the organization (and so inherited by the project). A
//! principal with no role at all is the last row. The accounts and their keys are made
//! through IAM v1 and their tokens minted at /token, like any client would.
//!
//! Also here: IAM policy round trips (etag, 409 on a stale etag, 400 on unknown roles and
//! bad members), the creator of a project becoming its owner, and the absence of an
//! existence oracle (a project one may not see and a project that does not exist answer
//! the same).

mod common;

use base64::Engine as _;
use common::*;
use keyplane_core::iam::{self, Grantable, Role};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

/// Held by the tests that change the organization's policy, so that their
/// read-modify-writes do not race.
async fn org_policy_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

const AIPLATFORM: &str = "aiplatform.googleapis.com";

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

async fn call(ctx: &Ctx, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = ctx.http.request(m, ctx.url(path));
    if !ctx.token.is_empty() {
        req = req.bearer_auth(&ctx.token);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let shown = match body {
        Some(b) => format!("{method} {path} {b}"),
        None => format!("{method} {path}"),
    };
    ctx.send(shown, req).await
}

/// The organization number (`organizations/N` is the admin project's parent).
async fn organization(owner: &Ctx) -> String {
    let p = owner.get("/v3/projects/keyplane-admin").await.ok();
    p["parent"]
        .as_str()
        .and_then(|s| s.strip_prefix("organizations/"))
        .expect("the admin project's parent is organizations/N")
        .to_owned()
}

/// A service account in `project` with a fresh key; returns its email and a context
/// holding an access token minted with that key.
async fn principal(owner: &Ctx, project: &str, account_id: &str) -> (String, Ctx) {
    let r = owner
        .post(
            &format!("/v1/projects/{project}/serviceAccounts"),
            &json!({"accountId": account_id, "serviceAccount": {"displayName": account_id}}),
        )
        .await;
    let email = r.ok()["email"].as_str().expect("email").to_owned();
    let r = owner
        .post(
            &format!("/v1/projects/{project}/serviceAccounts/{email}/keys"),
            &json!({}),
        )
        .await;
    let data = r.ok()["privateKeyData"]
        .as_str()
        .expect("privateKeyData")
        .to_owned();
    let file: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("privateKeyData is base64"),
    )
    .expect("privateKeyData is a JSON key file");
    let s = |k: &str| file[k].as_str().expect(k).to_owned();
    let creds = Creds {
        private_key: s("private_key"),
        private_key_id: s("private_key_id"),
        client_email: s("client_email"),
        token_uri: s("token_uri"),
        json: file.clone(),
    };
    assert_eq!(creds.client_email, email);
    let mut ctx = Ctx::anonymous(&owner.base);
    ctx.token = ctx.owner_token(&creds).await;
    (email, ctx)
}

async fn get_policy(owner: &Ctx, resource: &str) -> Value {
    owner
        .post(&format!("/v3/{resource}:getIamPolicy"), &json!({}))
        .await
        .ok()
}

/// Adds `member` to `role` on `resource` (read-modify-write with the etag).
async fn add_binding(owner: &Ctx, resource: &str, role: &str, member: &str) {
    let mut policy = get_policy(owner, resource).await;
    let bindings = policy["bindings"].as_array().cloned().unwrap_or_default();
    let mut bindings: Vec<Value> = bindings;
    match bindings.iter_mut().find(|b| b["role"] == role) {
        Some(b) => b["members"].as_array_mut().unwrap().push(json!(member)),
        None => bindings.push(json!({"role": role, "members": [member]})),
    }
    policy["bindings"] = Value::Array(bindings);
    owner
        .post(
            &format!("/v3/{resource}:setIamPolicy"),
            &json!({ "policy": policy }),
        )
        .await
        .ok();
}

fn is_denied(r: &Resp, permission: &str) -> bool {
    if r.status != 403 {
        return false;
    }
    let e = r.err(403, "PERMISSION_DENIED");
    let info = error_info(&e).unwrap_or_else(|| panic!("403 without ErrorInfo\n{}", r.describe()));
    assert_eq!(info["reason"], "IAM_PERMISSION_DENIED", "{}", r.describe());
    assert_eq!(
        info["metadata"]["permission"],
        permission,
        "{}",
        r.describe()
    );
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(&format!("Permission '{permission}' denied on resource '//"))
            && msg.ends_with("(or it may not exist)."),
        "Google's message expected\n{}",
        r.describe()
    );
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Project,
    Organization,
}

/// Whether a principal bound to `role` (where the test binds it) holds `permission` on
/// the scope.
fn holds(role: Option<&Role>, permission: &str, scope: Scope) -> bool {
    match role {
        None => false,
        Some(r) => {
            let bound_on_org = r.grantable == Grantable::OrganizationOnly;
            r.grants(permission) && (bound_on_org || scope == Scope::Project)
        }
    }
}

/// What the test's resources are.
struct Fixture {
    owner: Ctx,
    org: String,
    project: String,
    project_number: String,
    /// A key of the project, made by the owner.
    key_name: String,
    key_string: String,
    /// The owner's operations: a key creation, a service enable, the project creation.
    key_op: String,
    service_op: String,
    project_op: String,
    /// An account of the project.
    account: String,
}

async fn owner_key(owner: &Ctx, project: &str) -> (String, String, String) {
    let r = owner
        .post(
            &format!("/v2/projects/{project}/locations/global/keys"),
            &json!({"displayName": "matrix"}),
        )
        .await;
    let op = r.ok();
    assert_eq!(op["done"], true, "{}", r.describe());
    (
        op["response"]["name"].as_str().unwrap().to_owned(),
        op["response"]["keyString"].as_str().unwrap().to_owned(),
        op["name"].as_str().unwrap().to_owned(),
    )
}

/// One method of the matrix: its permission, the scope it is checked on, and the call.
struct Method {
    name: &'static str,
    permission: &'static str,
    scope: Scope,
}

#[rustfmt::skip]
const METHODS: &[Method] = &[
    Method { name: "projects.get", permission: "resourcemanager.projects.get", scope: Scope::Project },
    Method { name: "projects.getIamPolicy", permission: "resourcemanager.projects.getIamPolicy", scope: Scope::Project },
    Method { name: "projects.setIamPolicy", permission: "resourcemanager.projects.setIamPolicy", scope: Scope::Project },
    Method { name: "projects.create", permission: "resourcemanager.projects.create", scope: Scope::Organization },
    Method { name: "crm.operations.get", permission: "resourcemanager.projects.get", scope: Scope::Project },
    Method { name: "organizations.get", permission: "resourcemanager.organizations.get", scope: Scope::Organization },
    Method { name: "organizations.getIamPolicy", permission: "resourcemanager.organizations.getIamPolicy", scope: Scope::Organization },
    Method { name: "organizations.setIamPolicy", permission: "resourcemanager.organizations.setIamPolicy", scope: Scope::Organization },
    Method { name: "services.list", permission: "serviceusage.services.list", scope: Scope::Project },
    Method { name: "services.get", permission: "serviceusage.services.get", scope: Scope::Project },
    Method { name: "services.enable", permission: "serviceusage.services.enable", scope: Scope::Project },
    Method { name: "services.batchEnable", permission: "serviceusage.services.enable", scope: Scope::Project },
    Method { name: "services.disable", permission: "serviceusage.services.disable", scope: Scope::Project },
    Method { name: "serviceusage.operations.get", permission: "serviceusage.operations.get", scope: Scope::Project },
    Method { name: "keys.create", permission: "apikeys.keys.create", scope: Scope::Project },
    Method { name: "keys.list", permission: "apikeys.keys.list", scope: Scope::Project },
    Method { name: "keys.get", permission: "apikeys.keys.get", scope: Scope::Project },
    Method { name: "keys.getKeyString", permission: "apikeys.keys.getKeyString", scope: Scope::Project },
    Method { name: "keys.patch", permission: "apikeys.keys.update", scope: Scope::Project },
    Method { name: "keys.delete", permission: "apikeys.keys.delete", scope: Scope::Project },
    Method { name: "keys.undelete", permission: "apikeys.keys.undelete", scope: Scope::Project },
    Method { name: "keys.lookupKey", permission: "apikeys.keys.lookup", scope: Scope::Project },
    Method { name: "apikeys.operations.get", permission: "serviceusage.operations.get", scope: Scope::Project },
    Method { name: "serviceAccounts.create", permission: "iam.serviceAccounts.create", scope: Scope::Project },
    Method { name: "serviceAccounts.list", permission: "iam.serviceAccounts.list", scope: Scope::Project },
    Method { name: "serviceAccounts.get", permission: "iam.serviceAccounts.get", scope: Scope::Project },
    Method { name: "serviceAccountKeys.list", permission: "iam.serviceAccountKeys.list", scope: Scope::Project },
];

/// Makes the call of `method` as `who` (the owner prepares what the call needs first).
async fn attempt(fx: &Fixture, who: &Ctx, method: &str, n: usize) -> Resp {
    let p = &fx.project;
    let owner = &fx.owner;
    match method {
        "projects.get" => call(who, "GET", &format!("/v3/projects/{p}"), None).await,
        "projects.getIamPolicy" => {
            call(
                who,
                "POST",
                &format!("/v3/projects/{p}:getIamPolicy"),
                Some(&json!({})),
            )
            .await
        }
        "projects.setIamPolicy" => {
            // The same bindings, written blind: allowed callers change nothing that matters.
            let current = get_policy(owner, &format!("projects/{p}")).await;
            let body = json!({"policy": {"bindings": current["bindings"]}});
            call(
                who,
                "POST",
                &format!("/v3/projects/{p}:setIamPolicy"),
                Some(&body),
            )
            .await
        }
        "projects.create" => {
            let id = unique_project_id("pm-made");
            call(who, "POST", "/v3/projects", Some(&json!({"projectId": id}))).await
        }
        "crm.operations.get" => call(who, "GET", &format!("/v3/{}", fx.project_op), None).await,
        "organizations.get" => {
            call(who, "GET", &format!("/v3/organizations/{}", fx.org), None).await
        }
        "organizations.getIamPolicy" => {
            let path = format!("/v3/organizations/{}:getIamPolicy", fx.org);
            call(who, "POST", &path, Some(&json!({}))).await
        }
        "organizations.setIamPolicy" => {
            let current = get_policy(owner, &format!("organizations/{}", fx.org)).await;
            let body = json!({"policy": {"bindings": current["bindings"]}});
            let path = format!("/v3/organizations/{}:setIamPolicy", fx.org);
            call(who, "POST", &path, Some(&body)).await
        }
        "services.list" => call(who, "GET", &format!("/v1/projects/{p}/services"), None).await,
        "services.get" => call(who, "GET", &format!("/v1/projects/{p}/services/{GL}"), None).await,
        "services.enable" => {
            let path = format!("/v1/projects/{p}/services/{AIPLATFORM}:enable");
            call(who, "POST", &path, Some(&json!({}))).await
        }
        "services.batchEnable" => {
            let path = format!("/v1/projects/{p}/services:batchEnable");
            call(
                who,
                "POST",
                &path,
                Some(&json!({"serviceIds": [AIPLATFORM]})),
            )
            .await
        }
        "services.disable" => {
            owner.set_service(p, AIPLATFORM, true).await;
            let path = format!("/v1/projects/{p}/services/{AIPLATFORM}:disable");
            call(who, "POST", &path, Some(&json!({}))).await
        }
        "serviceusage.operations.get" => {
            call(who, "GET", &format!("/v1/{}", fx.service_op), None).await
        }
        "keys.create" => {
            let path = format!("/v2/projects/{p}/locations/global/keys");
            call(
                who,
                "POST",
                &path,
                Some(&json!({"displayName": "by a member"})),
            )
            .await
        }
        "keys.list" => {
            call(
                who,
                "GET",
                &format!("/v2/projects/{p}/locations/global/keys"),
                None,
            )
            .await
        }
        "keys.get" => call(who, "GET", &format!("/v2/{}", fx.key_name), None).await,
        "keys.getKeyString" => {
            call(who, "GET", &format!("/v2/{}/keyString", fx.key_name), None).await
        }
        "keys.patch" => {
            let path = format!("/v2/{}?updateMask=displayName", fx.key_name);
            call(
                who,
                "PATCH",
                &path,
                Some(&json!({"displayName": format!("renamed {n}")})),
            )
            .await
        }
        "keys.delete" => {
            let (name, _, _) = owner_key(owner, p).await;
            call(who, "DELETE", &format!("/v2/{name}"), None).await
        }
        "keys.undelete" => {
            let (name, _, _) = owner_key(owner, p).await;
            owner.delete(&format!("/v2/{name}")).await.ok();
            call(
                who,
                "POST",
                &format!("/v2/{name}:undelete"),
                Some(&json!({})),
            )
            .await
        }
        "keys.lookupKey" => {
            let path = format!("/v2/keys:lookupKey?keyString={}", fx.key_string);
            call(who, "GET", &path, None).await
        }
        "apikeys.operations.get" => call(who, "GET", &format!("/v2/{}", fx.key_op), None).await,
        "serviceAccounts.create" => {
            let path = format!("/v1/projects/{p}/serviceAccounts");
            let id = format!("pm-made-{n:02}");
            call(who, "POST", &path, Some(&json!({"accountId": id}))).await
        }
        "serviceAccounts.list" => {
            call(
                who,
                "GET",
                &format!("/v1/projects/{p}/serviceAccounts"),
                None,
            )
            .await
        }
        "serviceAccounts.get" => {
            let path = format!("/v1/projects/{p}/serviceAccounts/{}", fx.account);
            call(who, "GET", &path, None).await
        }
        "serviceAccountKeys.list" => {
            let path = format!("/v1/projects/{p}/serviceAccounts/{}/keys", fx.account);
            call(who, "GET", &path, None).await
        }
        other => panic!("no call for {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// the matrix
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_role_against_every_method() {
    let _org = org_policy_lock().await;
    let owner = server().ctx().await;
    let org = organization(&owner).await;
    let project = unique_project_id("pm-matrix");
    let r = owner
        .post("/v3/projects", &json!({"projectId": project}))
        .await;
    let op = r.ok();
    let project_op = op["name"].as_str().unwrap().to_owned();
    let project_number = project_number(&op["response"]);
    owner.set_service(&project, GL, true).await;
    let service_op = owner.set_service(&project, AIPLATFORM, true).await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let (key_name, key_string, key_op) = owner_key(&owner, &project).await;

    // One account per role, plus one with no role.
    let mut rows: Vec<(Option<&'static Role>, String, Ctx)> = Vec::new();
    for (i, role) in iam::ROLES.iter().map(Some).chain([None]).enumerate() {
        let id = format!("pm-row-{i:02}");
        let (email, ctx) = principal(&owner, &project, &id).await;
        let member = format!("serviceAccount:{email}");
        if let Some(role) = role {
            let resource = match role.grantable {
                Grantable::OrganizationOnly => format!("organizations/{org}"),
                Grantable::Anywhere => format!("projects/{project}"),
            };
            add_binding(&owner, &resource, role.name, &member).await;
        }
        rows.push((role, email, ctx));
    }
    let fx = Fixture {
        account: rows[0].1.clone(),
        owner,
        org,
        project: project.clone(),
        project_number: project_number.clone(),
        key_name,
        key_string,
        key_op,
        service_op,
        project_op,
    };

    let mut soft = Soft::default();
    let mut table = String::new();
    for (n, (role, _email, who)) in rows.iter().enumerate() {
        let label = role.map_or("(no role)", |r| r.name);
        let mut line = format!("{label:45}");
        for m in METHODS {
            let expect = holds(*role, m.permission, m.scope);
            let r = attempt(&fx, who, m.name, n).await;
            let verdict = soft.check(|| {
                if expect {
                    assert_eq!(
                        r.status,
                        200,
                        "{label} must be allowed {} ({})\n{}",
                        m.name,
                        m.permission,
                        r.describe()
                    );
                    if let Some(e) = r.json().get("error") {
                        panic!(
                            "{label}: {} answered a failed operation {e}\n{}",
                            m.name,
                            r.describe()
                        );
                    }
                } else {
                    assert!(
                        is_denied(&r, m.permission),
                        "{label} must be denied {} ({}) with 403 IAM_PERMISSION_DENIED\n{}",
                        m.name,
                        m.permission,
                        r.describe()
                    );
                }
            });
            line.push_str(match (expect, verdict.is_some()) {
                (true, true) => " A",
                (false, true) => " .",
                (_, false) => " X",
            });
        }

        // Authorization as filtering: projects.list, organizations.search,
        // testIamPermissions on the project and on the organization.
        let listed = list_all(who).await;
        soft.check(|| {
            assert_eq!(
                listed.contains(&fx.project_number),
                holds(*role, "resourcemanager.projects.get", Scope::Project),
                "{label}: projects.list must show the project exactly when it may get it"
            )
        });
        let found = call(who, "GET", "/v3/organizations:search", None).await;
        soft.check(|| {
            let orgs = found.ok()["organizations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                orgs.len(),
                usize::from(holds(
                    *role,
                    "resourcemanager.organizations.get",
                    Scope::Organization
                )),
                "{label}: organizations.search\n{}",
                found.describe()
            );
        });
        for (scope, resource) in [
            (Scope::Project, format!("projects/{}", fx.project)),
            (Scope::Organization, format!("organizations/{}", fx.org)),
        ] {
            let r = call(
                who,
                "POST",
                &format!("/v3/{resource}:testIamPermissions"),
                Some(&json!({"permissions": iam::PERMISSIONS})),
            )
            .await;
            soft.check(|| {
                let got: BTreeSet<String> = r.ok()["permissions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_owned())
                    .collect();
                let want: BTreeSet<String> = iam::PERMISSIONS
                    .iter()
                    .filter(|p| holds(*role, p, scope))
                    .map(|p| (*p).to_owned())
                    .collect();
                assert_eq!(
                    got,
                    want,
                    "{label}: testIamPermissions on {resource}\n{}",
                    r.describe()
                );
            });
        }
        table.push_str(&line);
        table.push('\n');
    }
    let header: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
    println!(
        "permission matrix (A allowed, . denied, X wrong)\ncolumns: {}\n{table}",
        header.join(", ")
    );
    soft.finish();
}

/// Project numbers of every project `who` can list.
async fn list_all(who: &Ctx) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let path = if token.is_empty() {
            "/v3/projects?pageSize=5".to_owned()
        } else {
            format!("/v3/projects?pageSize=5&pageToken={token}")
        };
        let v = call(who, "GET", &path, None).await.ok();
        for p in v["projects"].as_array().cloned().unwrap_or_default() {
            out.insert(project_number(&p));
        }
        match v["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_owned(),
            _ => return out,
        }
    }
    panic!("projects.list never stopped paging");
}

// ---------------------------------------------------------------------------------------
// no existence oracle
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hidden_project_and_a_missing_one_answer_the_same() {
    let owner = server().ctx().await;
    let hidden = unique_project_id("pm-hidden");
    let number = project_number(&owner.create_project(&hidden).await);
    let helper = unique_project_id("pm-oracle");
    owner.create_project(&helper).await;
    let (_, nobody) = principal(&owner, &helper, "pm-nobody").await;
    let missing = unique_project_id("pm-missing");

    let calls: &[(&str, &str, Option<Value>)] = &[
        ("GET", "/v3/projects/{P}", None),
        ("POST", "/v3/projects/{P}:getIamPolicy", Some(json!({}))),
        (
            "POST",
            "/v3/projects/{P}:setIamPolicy",
            Some(json!({"policy": {}})),
        ),
        ("GET", "/v1/projects/{P}/services", None),
        ("GET", "/v1/projects/{P}/services/{GL}", None),
        (
            "POST",
            "/v1/projects/{P}/services/{GL}:enable",
            Some(json!({})),
        ),
        ("GET", "/v2/projects/{P}/locations/global/keys", None),
        (
            "POST",
            "/v2/projects/{P}/locations/global/keys",
            Some(json!({})),
        ),
        ("GET", "/v2/projects/{P}/locations/global/keys/k1", None),
        ("GET", "/v1/projects/{P}/serviceAccounts", None),
    ];
    let mut soft = Soft::default();
    for (method, template, body) in calls {
        for (there, absent) in [
            (hidden.as_str(), missing.as_str()),
            (number.as_str(), "999999999999"),
        ] {
            let path = |p: &str| template.replace("{P}", p).replace("{GL}", GL);
            let a = call(&nobody, method, &path(there), body.as_ref()).await;
            let b = call(&nobody, method, &path(absent), body.as_ref()).await;
            soft.check(|| {
                assert_eq!(a.status, 403, "{}", a.describe());
                assert_eq!(
                    (a.status, a.text.replace(there, "P")),
                    (b.status, b.text.replace(absent, "P")),
                    "a hidden project and a missing one must answer alike\n{}\n{}",
                    a.describe(),
                    b.describe()
                );
                assert!(
                    a.text.contains(&format!(
                        "//cloudresourcemanager.googleapis.com/projects/{there}"
                    )),
                    "{}",
                    a.describe()
                );
            });
        }
    }
    // testIamPermissions answers an empty list for both.
    for p in [hidden.as_str(), missing.as_str()] {
        let r = call(
            &nobody,
            "POST",
            &format!("/v3/projects/{p}:testIamPermissions"),
            Some(&json!({"permissions": ["resourcemanager.projects.get"]})),
        )
        .await;
        soft.check(|| assert_eq!(r.ok(), json!({}), "{}", r.describe()));
    }
    // And projects.list does not show the hidden project.
    let listed = list_all(&nobody).await;
    soft.check(|| assert!(!listed.contains(&number), "{listed:?}"));
    soft.finish();
}

// ---------------------------------------------------------------------------------------
// policies on the wire
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn project_policies_round_trip_with_etags() {
    let owner = server().ctx().await;
    let id = unique_project_id("pm-policy");
    let number = project_number(&owner.create_project(&id).await);
    let owner_email = owner_email();

    // The creator is the project's owner; Google's JSON shape, base64 etag.
    let p = owner
        .post(
            &format!("/v3/projects/{id}:getIamPolicy"),
            &json!({"options": {"requestedPolicyVersion": 3}}),
        )
        .await
        .ok();
    assert_eq!(p["version"], 1, "{p}");
    assert_eq!(
        p["bindings"],
        json!([{"role": "roles/owner", "members": [format!("serviceAccount:{owner_email}")]}]),
        "{p}"
    );
    let etag = p["etag"].as_str().unwrap().to_owned();
    base64::engine::general_purpose::STANDARD
        .decode(&etag)
        .expect("the etag is base64");
    let keys: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["bindings", "etag", "version"]), "{p}");
    // By number too.
    assert_eq!(
        owner
            .post(&format!("/v3/projects/{number}:getIamPolicy"), &json!({}))
            .await
            .ok(),
        p
    );
    // And through Resource Manager v1, as gcloud and Terraform call it.
    assert_eq!(
        owner
            .post(&format!("/v1/projects/{id}:getIamPolicy"), &json!({}))
            .await
            .ok(),
        p
    );
    owner
        .post(&format!("/v1/projects/{id}:frobnicate"), &json!({}))
        .await
        .err(404, "NOT_FOUND");

    // Set with the etag: a new etag; the old one is now stale (409 ABORTED).
    let mut next = p.clone();
    next["bindings"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "roles/viewer", "members": ["user:Alice@Example.com", "allAuthenticatedUsers"]}));
    let set = owner
        .post(
            &format!("/v3/projects/{id}:setIamPolicy"),
            &json!({"policy": next}),
        )
        .await
        .ok();
    assert_ne!(set["etag"], p["etag"]);
    assert_eq!(
        set["bindings"][1],
        json!({"role": "roles/viewer", "members": ["allAuthenticatedUsers", "user:alice@example.com"]}),
        "members are normalised and sorted: {set}"
    );
    assert_eq!(
        owner
            .post(&format!("/v3/projects/{id}:getIamPolicy"), &json!({}))
            .await
            .ok(),
        set
    );
    owner
        .post(
            &format!("/v3/projects/{id}:setIamPolicy"),
            &json!({"policy": next}),
        )
        .await
        .err(409, "ABORTED");

    // Bad input: 400, and nothing changes.
    for (what, body) in [
        (
            "unknown role",
            json!({"policy": {"bindings": [{"role": "roles/nope", "members": ["user:a@example.com"]}]}}),
        ),
        (
            "bad member",
            json!({"policy": {"bindings": [{"role": "roles/viewer", "members": ["alice"]}]}}),
        ),
        (
            "bad member kind",
            json!({"policy": {"bindings": [{"role": "roles/viewer", "members": ["robot:a@example.com"]}]}}),
        ),
        (
            "org-only role",
            json!({"policy": {"bindings": [{"role": "roles/orgpolicy.policyAdmin", "members": ["user:a@example.com"]}]}}),
        ),
        (
            "missing account",
            json!({"policy": {"bindings": [{"role": "roles/viewer", "members": [format!("serviceAccount:nobody@{id}.iam.gserviceaccount.com")]}]}}),
        ),
        (
            "condition",
            json!({"policy": {"version": 3, "bindings": [{"role": "roles/viewer", "members": ["user:a@example.com"], "condition": {"expression": "true", "title": "t"}}]}}),
        ),
        (
            "bad version",
            json!({"policy": {"version": 2, "bindings": []}}),
        ),
        (
            "bad mask",
            json!({"policy": {"bindings": []}, "updateMask": "owners"}),
        ),
        (
            "unknown field",
            json!({"policy": {"bindings": [], "owners": []}}),
        ),
        ("no policy", json!({})),
    ] {
        let r = owner
            .post(&format!("/v3/projects/{id}:setIamPolicy"), &body)
            .await;
        assert_eq!(r.status, 400, "{what}\n{}", r.describe());
        r.err(400, "INVALID_ARGUMENT");
    }
    assert_eq!(
        owner
            .post(&format!("/v3/projects/{id}:getIamPolicy"), &json!({}))
            .await
            .ok(),
        set
    );

    // updateMask "etag" alone leaves the bindings as they are.
    let masked = owner
        .post(
            &format!("/v3/projects/{id}:setIamPolicy"),
            &json!({"policy": {"bindings": [], "etag": set["etag"]}, "updateMask": "etag"}),
        )
        .await
        .ok();
    assert_eq!(masked["bindings"], set["bindings"]);
    assert_ne!(masked["etag"], set["etag"]);

    // testIamPermissions: the subset held, in the order asked.
    let r = owner
        .post(
            &format!("/v3/projects/{id}:testIamPermissions"),
            &json!({"permissions": ["apikeys.keys.create", "made.up.permission", "orgpolicy.policy.set", "resourcemanager.projects.get"]}),
        )
        .await
        .ok();
    assert_eq!(
        r,
        json!({"permissions": ["apikeys.keys.create", "resourcemanager.projects.get"]})
    );
}

#[tokio::test]
async fn the_creator_of_a_project_owns_it_and_org_roles_are_inherited() {
    let _org = org_policy_lock().await;
    let owner = server().ctx().await;
    let org = organization(&owner).await;
    let home = unique_project_id("pm-home");
    owner.create_project(&home).await;
    let (email, creator) = principal(&owner, &home, "pm-creator").await;
    let member = format!("serviceAccount:{email}");

    // Without a role: no project creation.
    let id = unique_project_id("pm-own");
    let r = creator
        .post("/v3/projects", &json!({"projectId": id}))
        .await;
    assert!(
        is_denied(&r, "resourcemanager.projects.create"),
        "{}",
        r.describe()
    );
    // With roles/resourcemanager.projectCreator on the organization it may create one, and
    // then owns it: it can read it, create keys in it and change its policy.
    add_binding(
        &owner,
        &format!("organizations/{org}"),
        "roles/resourcemanager.projectCreator",
        &member,
    )
    .await;
    let made = creator.create_project(&id).await;
    assert_eq!(made["projectId"], id.as_str());
    creator.get(&format!("/v3/projects/{id}")).await.ok();
    let policy = get_policy(&creator, &format!("projects/{id}")).await;
    assert_eq!(
        policy["bindings"],
        json!([{"role": "roles/owner", "members": [member]}]),
        "{policy}"
    );
    creator.set_service(&id, GL, true).await;
    creator.create_key(&id, None).await;
    // But not the home project, where it holds nothing.
    let r = creator.get(&format!("/v3/projects/{home}")).await;
    assert!(
        is_denied(&r, "resourcemanager.projects.get"),
        "{}",
        r.describe()
    );

    // The organization's owner still sees the new project (inherited from the org).
    owner.get(&format!("/v3/projects/{id}")).await.ok();

    // Organizations: get and search for the owner, denied for the creator.
    let o = owner.get(&format!("/v3/organizations/{org}")).await.ok();
    assert_eq!(o["name"], format!("organizations/{org}"));
    assert_eq!(o["state"], "ACTIVE");
    let found = owner.get("/v3/organizations:search").await.ok();
    assert_eq!(
        found["organizations"][0]["name"],
        format!("organizations/{org}")
    );
    // roles/resourcemanager.projectCreator includes resourcemanager.organizations.get.
    creator.get(&format!("/v3/organizations/{org}")).await.ok();
    let r = creator
        .post(&format!("/v3/organizations/{org}:getIamPolicy"), &json!({}))
        .await;
    assert!(
        is_denied(&r, "resourcemanager.organizations.getIamPolicy"),
        "{}",
        r.describe()
    );
    let v1 = owner
        .post(&format!("/v1/organizations/{org}:getIamPolicy"), &json!({}))
        .await
        .ok();
    assert_eq!(
        v1,
        owner
            .post(&format!("/v3/organizations/{org}:getIamPolicy"), &json!({}))
            .await
            .ok()
    );
    // An organization that does not exist answers as one the caller may not see.
    let r = owner.get("/v3/organizations/123").await;
    assert!(
        is_denied(&r, "resourcemanager.organizations.get"),
        "{}",
        r.describe()
    );
}

/// The owner account's email, from the owner key file.
fn owner_email() -> String {
    server().owner_credentials().client_email
}

// ---------------------------------------------------------------------------------------
// the CLI
// ---------------------------------------------------------------------------------------

/// Runs the `keyplane` CLI against the shared server with the owner's key file.
fn cli(args: &[&str]) -> (bool, String, String) {
    let srv = server();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyplane"))
        .arg("--credentials")
        .arg(srv.path("owner-credentials.json"))
        .args(["--server", &srv.base])
        .args(args)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keyplane");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = cli(args);
    assert!(
        ok,
        "keyplane {args:?} failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    stdout
}

#[tokio::test]
async fn cli_policy_verbs() {
    let owner = server().ctx().await;
    let id = unique_project_id("pm-cli");
    owner.create_project(&id).await;
    let member = "user:Dana@Example.com";

    let out = cli_ok(&["projects", "get-iam-policy", &id]);
    assert!(
        out.contains("roles/owner") && out.contains(&owner_email()),
        "{out}"
    );
    let out = cli_ok(&[
        "projects",
        "add-iam-policy-binding",
        &id,
        "--member",
        member,
        "--role",
        "roles/viewer",
    ]);
    assert!(
        out.contains("roles/viewer") && out.contains("user:dana@example.com"),
        "{out}"
    );
    // Adding it again changes nothing.
    cli_ok(&[
        "projects",
        "add-iam-policy-binding",
        &id,
        "--member",
        member,
        "--role",
        "roles/viewer",
    ]);
    let json: Value = serde_json::from_str(&cli_ok(&[
        "projects",
        "get-iam-policy",
        &id,
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        json["bindings"],
        json!([
            {"role": "roles/owner", "members": [format!("serviceAccount:{}", owner_email())]},
            {"role": "roles/viewer", "members": ["user:dana@example.com"]},
        ]),
        "{json}"
    );
    cli_ok(&[
        "projects",
        "remove-iam-policy-binding",
        &id,
        "--member",
        "user:dana@example.com",
        "--role",
        "roles/viewer",
    ]);
    let out = cli_ok(&["projects", "get-iam-policy", &id]);
    assert!(!out.contains("roles/viewer"), "{out}");
    // Removing what is not there, an unknown role, a bad member: errors.
    for args in [
        vec![
            "projects",
            "remove-iam-policy-binding",
            &id,
            "--member",
            member,
            "--role",
            "roles/viewer",
        ],
        vec![
            "projects",
            "add-iam-policy-binding",
            &id,
            "--member",
            member,
            "--role",
            "roles/nope",
        ],
        vec![
            "projects",
            "add-iam-policy-binding",
            &id,
            "--member",
            "dana",
            "--role",
            "roles/viewer",
        ],
    ] {
        let (ok, stdout, stderr) = cli(&args);
        assert!(!ok, "keyplane {args:?} must fail\n{stdout}\n{stderr}");
    }

    // Organizations.
    let org = organization(&owner).await;
    let out = cli_ok(&["organizations", "list"]);
    assert!(out.contains(&org), "{out}");
    let out = cli_ok(&["organizations", "describe", &org]);
    assert!(out.contains(&format!("organizations/{org}")), "{out}");
    let out = cli_ok(&["organizations", "get-iam-policy", &org]);
    assert!(
        out.contains("roles/owner") && out.contains(&owner_email()),
        "{out}"
    );
    let _org = org_policy_lock().await;
    cli_ok(&[
        "organizations",
        "add-iam-policy-binding",
        &org,
        "--member",
        "domain:example.org",
        "--role",
        "roles/viewer",
    ]);
    let out = cli_ok(&["organizations", "get-iam-policy", &org]);
    assert!(out.contains("domain:example.org"), "{out}");
    cli_ok(&[
        "organizations",
        "remove-iam-policy-binding",
        &org,
        "--member",
        "domain:example.org",
        "--role",
        "roles/viewer",
    ]);
    let out = cli_ok(&["organizations", "get-iam-policy", &org]);
    assert!(!out.contains("domain:example.org"), "{out}");
}
