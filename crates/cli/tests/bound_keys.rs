//! Service-account-bound keys and service-account Bearer tokens on the data plane.
//!
//! A key bound to an account (allowed where `iam.managed.disableServiceAccountApiKeyCreation`
//! is not enforced) acts as it on aiplatform.googleapis.com: the account must exist, be
//! enabled and hold a role granting `aiplatform.endpoints.predict` on the project, else 403
//! IAM_PERMISSION_DENIED; disabling or deleting the account stops the key at once.
//! A Bearer token of an account needs the same permission (Vertex), or
//! `serviceusage.services.use` on its project (Gemini API).

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

const AIP: &str = "aiplatform.googleapis.com";
const CONSTRAINT: &str = "iam.managed.disableServiceAccountApiKeyCreation";
const OWNER: &str = "serviceAccount:owner@keyplane-admin.iam.gserviceaccount.com";

fn count_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]})
}

fn vertex_count() -> String {
    format!("/v1/publishers/google/models/{MODEL}:countTokens")
}

/// Adds `member` to `role` on `resource` (`organizations/N` or `projects/ID`).
async fn grant(ctx: &Ctx, resource: &str, role: &str, member: &str) {
    for _ in 0..5 {
        let mut policy = ctx
            .post(&format!("/v3/{resource}:getIamPolicy"), &json!({}))
            .await
            .ok();
        let mut bindings = policy["bindings"].as_array().cloned().unwrap_or_default();
        match bindings.iter_mut().find(|b| b["role"] == role) {
            Some(b) => {
                if b["members"].as_array().unwrap().contains(&json!(member)) {
                    return;
                }
                b["members"].as_array_mut().unwrap().push(json!(member));
            }
            None => bindings.push(json!({"role": role, "members": [member]})),
        }
        policy["bindings"] = Value::Array(bindings);
        let r = ctx
            .post(
                &format!("/v3/{resource}:setIamPolicy"),
                &json!({ "policy": policy }),
            )
            .await;
        if r.status == 200 {
            return;
        }
    }
    panic!("could not grant {role} on {resource}");
}

/// A project with both APIs enabled; returns (projectId, number).
async fn project(ctx: &Ctx, prefix: &str) -> (String, String) {
    let id = unique_project_id(prefix);
    let p = ctx.create_project(&id).await;
    ctx.set_service(&id, GL, true).await;
    ctx.set_service(&id, AIP, true).await;
    (id, project_number(&p))
}

async fn create_account(ctx: &Ctx, project: &str, account_id: &str) -> String {
    let r = ctx
        .post(
            &format!("/v1/projects/{project}/serviceAccounts"),
            &json!({"accountId": account_id, "serviceAccount": {"displayName": "caller"}}),
        )
        .await;
    r.ok()["email"].as_str().expect("email").to_owned()
}

/// A new key for `email` (through IAM v1), and a self-signed JWT made with it as
/// google-auth makes one for Vertex AI.
async fn self_signed_jwt(ctx: &Ctx, project: &str, email: &str) -> String {
    let r = ctx
        .post(
            &format!("/v1/projects/{project}/serviceAccounts/{email}/keys"),
            &json!({}),
        )
        .await;
    let data = r.ok()["privateKeyData"].as_str().unwrap().to_owned();
    use base64::Engine as _;
    let file: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    )
    .unwrap();
    let now = unix_now();
    sign_jwt(
        file["private_key"].as_str().unwrap(),
        file["private_key_id"].as_str().unwrap(),
        &json!({"iss": email, "sub": email, "aud": "https://aiplatform.googleapis.com/",
                "iat": now, "exp": now + 3600}),
    )
}

fn denied(r: &Resp, permission: &str, number: &str) {
    let info = r.err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");
    assert_eq!(
        info["metadata"]["permission"],
        permission,
        "{}",
        r.describe()
    );
    assert_eq!(
        info["metadata"]["resource"],
        format!("projects/{number}"),
        "{}",
        r.describe()
    );
}

#[tokio::test]
async fn a_bound_key_acts_as_its_account() {
    let ctx = server().ctx().await;
    let org = ctx.get("/v3/projects/keyplane-admin").await.ok()["parent"]
        .as_str()
        .unwrap()
        .to_owned();
    grant(&ctx, &org, "roles/orgpolicy.policyAdmin", OWNER).await;
    let (id, number) = project(&ctx, "bound").await;
    ctx.post(
        &format!("/v2/projects/{id}/policies"),
        &json!({"name": format!("projects/{id}/policies/{CONSTRAINT}"),
                "spec": {"rules": [{"enforce": false}]}}),
    )
    .await
    .ok();
    let email = create_account(&ctx, &id, "bound-caller").await;
    let op = ctx
        .post(
            &format!("/v2/projects/{id}/locations/global/keys"),
            &json!({"displayName": "bound", "serviceAccountEmail": email}),
        )
        .await
        .ok();
    assert!(op.get("error").is_none(), "{op}");
    let key = op["response"]["keyString"].as_str().unwrap().to_owned();
    let sa_path = format!("/v1/projects/{id}/serviceAccounts/{email}");
    let predict = "aiplatform.endpoints.predict";

    // No role: refused on Vertex; the Gemini API does not honour the binding.
    let r = ctx.gemini_post(&key, &vertex_count(), &count_body()).await;
    denied(&r, predict, &number);
    let gl = format!("/v1beta/models/{MODEL}:countTokens");
    ctx.gemini_post(&key, &gl, &count_body()).await.ok();

    // The express user role: allowed.
    grant(
        &ctx,
        &format!("projects/{id}"),
        "roles/aiplatform.expressUser",
        &format!("serviceAccount:{email}"),
    )
    .await;
    ctx.gemini_post(&key, &vertex_count(), &count_body())
        .await
        .ok();

    // Disabled: refused at once; enabled again: allowed.
    ctx.post(&format!("{sa_path}:disable"), &json!({}))
        .await
        .ok();
    let r = ctx.gemini_post(&key, &vertex_count(), &count_body()).await;
    denied(&r, predict, &number);
    ctx.post(&format!("{sa_path}:enable"), &json!({}))
        .await
        .ok();
    ctx.gemini_post(&key, &vertex_count(), &count_body())
        .await
        .ok();

    // Deleted: the key stops working at once.
    ctx.delete(&sa_path).await.ok();
    let r = ctx.gemini_post(&key, &vertex_count(), &count_body()).await;
    denied(&r, predict, &number);
}

#[tokio::test]
async fn service_account_bearer_tokens_need_a_role() {
    let ctx = server().ctx().await;
    let (id, number) = project(&ctx, "bearer").await;
    let email = create_account(&ctx, &id, "bearer-caller").await;
    let jwt = self_signed_jwt(&ctx, &id, &email).await;
    let call = |path: String| {
        let req = ctx
            .http
            .post(ctx.url(&path))
            .bearer_auth(&jwt)
            .json(&count_body());
        ctx.send(format!("POST {path} (Bearer)"), req)
    };
    let gl = format!("/v1beta/models/{MODEL}:countTokens");

    denied(
        &call(vertex_count()).await,
        "aiplatform.endpoints.predict",
        &number,
    );
    denied(
        &call(gl.clone()).await,
        "serviceusage.services.use",
        &number,
    );

    let member = format!("serviceAccount:{email}");
    grant(
        &ctx,
        &format!("projects/{id}"),
        "roles/aiplatform.user",
        &member,
    )
    .await;
    call(vertex_count()).await.ok();
    denied(
        &call(gl.clone()).await,
        "serviceusage.services.use",
        &number,
    );
    grant(
        &ctx,
        &format!("projects/{id}"),
        "roles/serviceusage.serviceUsageConsumer",
        &member,
    )
    .await;
    call(gl).await.ok();
}

/// The project-scoped Vertex path names the consumer project: a Bearer caller needs
/// `aiplatform.endpoints.predict` there (an unknown project answers the same 403), and
/// aiplatform must be enabled in it.
#[tokio::test]
async fn project_scoped_vertex_path_checks_the_named_project() {
    let ctx = server().ctx().await;
    let (id, number) = project(&ctx, "vxproj").await;
    let (other, _) = project(&ctx, "vxother").await;
    let email = create_account(&ctx, &id, "vx-caller").await;
    let jwt = self_signed_jwt(&ctx, &id, &email).await;
    let path = |p: &str| {
        format!(
            "/v1/projects/{p}/locations/us-central1/publishers/google/models/{MODEL}:countTokens"
        )
    };
    let call = |p: String| {
        let req = ctx
            .http
            .post(ctx.url(&p))
            .bearer_auth(&jwt)
            .json(&count_body());
        ctx.send(format!("POST {p} (Bearer)"), req)
    };

    // No role yet: refused, and an unknown project answers alike.
    call(path(&id)).await.err(403, "PERMISSION_DENIED");
    let unknown = call(path("no-such-project-1")).await;
    unknown.err(403, "PERMISSION_DENIED");

    // With Vertex AI User on the project, by id and by number.
    grant(
        &ctx,
        &format!("projects/{id}"),
        "roles/aiplatform.user",
        &format!("serviceAccount:{email}"),
    )
    .await;
    let ok = call(path(&id)).await.ok();
    assert!(ok["totalTokens"].as_i64().unwrap() > 0, "{ok}");
    call(path(&number)).await.ok();
    // Not on another project.
    call(path(&other)).await.err(403, "PERMISSION_DENIED");

    // aiplatform disabled in the project: SERVICE_DISABLED.
    ctx.set_service(&id, AIP, false).await;
    call(path(&id))
        .await
        .err_reason(403, "PERMISSION_DENIED", "SERVICE_DISABLED");
    ctx.set_service(&id, AIP, true).await;
    call(path(&id)).await.ok();

    // No credential at all: 403 as the global path answers.
    let req = ctx.http.post(ctx.url(&path(&id))).json(&count_body());
    ctx.send("POST project path (anonymous)".into(), req)
        .await
        .err(403, "PERMISSION_DENIED");
}
