//! IAM Admin v1 on Google's wire: service accounts, their keys (and what a key file made
//! through the API can do), and the predefined roles.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

const SA_DOMAIN: &str = "iam.gserviceaccount.com";

/// An account id no other test uses (6–30 characters).
fn unique_account_id(prefix: &str) -> String {
    let p = unique_project_id(prefix);
    p.chars().take(30).collect()
}

async fn patch(ctx: &Ctx, path: &str, body: &Value) -> Resp {
    let req = ctx
        .http
        .patch(ctx.url(path))
        .bearer_auth(&ctx.token)
        .json(body);
    ctx.send(format!("PATCH {path} {body}"), req).await
}

async fn put(ctx: &Ctx, path: &str, body: &Value) -> Resp {
    let req = ctx
        .http
        .put(ctx.url(path))
        .bearer_auth(&ctx.token)
        .json(body);
    ctx.send(format!("PUT {path} {body}"), req).await
}

/// A request with an explicit bearer credential (another account's token or JWT).
async fn get_as(ctx: &Ctx, bearer: &str, path: &str) -> Resp {
    let req = ctx.http.get(ctx.url(path)).bearer_auth(bearer);
    ctx.send(format!("GET {path} (as another principal)"), req)
        .await
}

/// Creates an account; returns the ServiceAccount resource.
async fn create_account(ctx: &Ctx, project: &str, account_id: &str) -> Value {
    let r = ctx
        .post(
            &format!("/v1/projects/{project}/serviceAccounts"),
            &json!({"accountId": account_id,
                    "serviceAccount": {"displayName": "API caller", "description": "made by a test"}}),
        )
        .await;
    r.ok()
}

/// Creates a key; returns (the ServiceAccountKey resource, the decoded key file).
async fn create_key(ctx: &Ctx, project: &str, email: &str) -> (Value, Creds) {
    let r = ctx
        .post(
            &format!("/v1/projects/{project}/serviceAccounts/{email}/keys"),
            &json!({"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE", "keyAlgorithm": "KEY_ALG_RSA_2048"}),
        )
        .await;
    let key = r.ok();
    let data = key["privateKeyData"]
        .as_str()
        .unwrap_or_else(|| panic!("no privateKeyData\n{}", r.describe()));
    let file: Value = serde_json::from_slice(
        &STANDARD
            .decode(data)
            .unwrap_or_else(|e| panic!("privateKeyData is not standard base64: {e}")),
    )
    .expect("privateKeyData decodes to JSON");
    (key, creds_from(file))
}

fn creds_from(json: Value) -> Creds {
    let s = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
    Creds {
        private_key: s("private_key"),
        private_key_id: s("private_key_id"),
        client_email: s("client_email"),
        token_uri: s("token_uri"),
        json: json.clone(),
    }
}

/// A self-signed JWT as Google's client libraries send it (audience = Google's host).
fn self_signed(creds: &Creds) -> String {
    let now = unix_now();
    creds.assertion(&json!({
        "iss": creds.client_email, "sub": creds.client_email,
        "aud": "https://iam.googleapis.com/", "iat": now, "exp": now + 3600,
    }))
}

fn key_id_of(key: &Value) -> String {
    key["name"]
        .as_str()
        .and_then(|n| n.rsplit_once("/keys/"))
        .map(|(_, id)| id.to_owned())
        .unwrap_or_else(|| panic!("key name has no /keys/ID: {key}"))
}

#[tokio::test]
async fn service_account_lifecycle() {
    let ctx = server().ctx().await;
    let project = unique_project_id("iam-sa");
    let created = ctx.create_project(&project).await;
    let number = project_number(&created);
    let account_id = unique_account_id("caller");
    let email = format!("{account_id}@{project}.{SA_DOMAIN}");

    let sa = create_account(&ctx, &project, &account_id).await;
    assert_eq!(
        sa["name"],
        format!("projects/{project}/serviceAccounts/{email}"),
        "{sa}"
    );
    assert_eq!(sa["projectId"], project.as_str(), "{sa}");
    assert_eq!(sa["email"], email.as_str(), "{sa}");
    assert_eq!(sa["displayName"], "API caller", "{sa}");
    assert_eq!(sa["description"], "made by a test", "{sa}");
    let unique_id = sa["uniqueId"].as_str().expect("uniqueId").to_owned();
    assert!(
        unique_id.len() == 21 && unique_id.chars().all(|c| c.is_ascii_digit()),
        "{sa}"
    );
    assert_eq!(sa["oauth2ClientId"], unique_id.as_str(), "{sa}");
    assert!(
        sa["etag"]
            .as_str()
            .is_some_and(|e| STANDARD.decode(e).is_ok()),
        "etag is base64 bytes: {sa}"
    );
    assert!(sa.get("disabled").is_none(), "false is omitted: {sa}");

    // The same account id again: 409 ALREADY_EXISTS.
    let r = ctx
        .post(
            &format!("/v1/projects/{project}/serviceAccounts"),
            &json!({"accountId": account_id}),
        )
        .await;
    r.err(409, "ALREADY_EXISTS");

    // Account ids outside Google's rule: 400 naming the field.
    for bad in [
        "short",
        "Upper-case-id",
        "ends-with-hyphen-",
        "9starts-with-digit",
        "has_underscore",
        "a-very-long-account-id-over-thirty",
    ] {
        let r = ctx
            .post(
                &format!("/v1/projects/{project}/serviceAccounts"),
                &json!({"accountId": bad}),
            )
            .await;
        let e = r.err(400, "INVALID_ARGUMENT");
        assert!(e.to_string().contains("account_id"), "{}", r.describe());
    }
    // Unknown fields and oversized names are refused too.
    let r = ctx
        .post(
            &format!("/v1/projects/{project}/serviceAccounts"),
            &json!({"accountId": unique_account_id("x"), "bogus": 1}),
        )
        .await;
    r.err(400, "INVALID_ARGUMENT");
    let r = ctx
        .post(
            &format!("/v1/projects/{project}/serviceAccounts"),
            &json!({"accountId": unique_account_id("x"), "serviceAccount": {"displayName": "x".repeat(101)}}),
        )
        .await;
    r.err(400, "INVALID_ARGUMENT");

    // Get by email, by project number, and by unique id under the `-` wildcard.
    for path in [
        format!("/v1/projects/{project}/serviceAccounts/{email}"),
        format!("/v1/projects/{number}/serviceAccounts/{email}"),
        format!("/v1/projects/-/serviceAccounts/{unique_id}"),
        format!("/v1/projects/-/serviceAccounts/{email}?alt=json"),
        format!(
            "/v1/projects/{project}/serviceAccounts/{}",
            email.replace('@', "%40")
        ),
    ] {
        let got = ctx.get(&path).await.ok();
        assert_eq!(got, sa, "GET {path}");
    }

    // List, with paging.
    let second = create_account(&ctx, &project, &unique_account_id("second")).await;
    let list = ctx
        .get(&format!("/v1/projects/{project}/serviceAccounts"))
        .await
        .ok();
    let emails: Vec<&str> = list["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .filter_map(|a| a["email"].as_str())
        .collect();
    assert!(emails.contains(&email.as_str()), "{list}");
    assert!(
        emails.contains(&second["email"].as_str().unwrap()),
        "{list}"
    );
    assert!(list.get("nextPageToken").is_none(), "{list}");
    let mut paged = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let path = format!(
            "/v1/projects/{project}/serviceAccounts?pageSize=1&pageToken={token}&%24alt=json%3Benum-encoding%3Dint"
        );
        let page = ctx.get(&path).await.ok();
        let accounts = page["accounts"].as_array().expect("accounts");
        assert_eq!(accounts.len(), 1, "{page}");
        paged.push(accounts[0]["email"].as_str().unwrap().to_owned());
        match page["nextPageToken"].as_str() {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, emails, "paging gives the same accounts in order");
    let r = ctx
        .get(&format!(
            "/v1/projects/{project}/serviceAccounts?pageToken=%25%25"
        ))
        .await;
    r.err(400, "INVALID_ARGUMENT");

    // Patch with an update mask (camelCase, as GAPIC sends; snake_case too).
    let path = format!("/v1/projects/{project}/serviceAccounts/{email}");
    let patched = patch(
        &ctx,
        &path,
        &json!({"serviceAccount": {"displayName": "Renamed", "description": "ignored"},
                "updateMask": "displayName"}),
    )
    .await
    .ok();
    assert_eq!(patched["displayName"], "Renamed", "{patched}");
    assert_eq!(patched["description"], "made by a test", "{patched}");
    let patched = patch(
        &ctx,
        &path,
        &json!({"service_account": {"description": "new"}, "update_mask": "description"}),
    )
    .await
    .ok();
    assert_eq!(patched["description"], "new", "{patched}");
    assert_eq!(ctx.get(&path).await.ok(), patched);
    for mask in ["email", "uniqueId", "bogus"] {
        let r = patch(
            &ctx,
            &path,
            &json!({"serviceAccount": {"displayName": "x"}, "updateMask": mask}),
        )
        .await;
        r.err(400, "INVALID_ARGUMENT");
    }
    assert_eq!(
        ctx.get(&path).await.ok(),
        patched,
        "a refused patch changes nothing"
    );

    // The legacy PUT update, with a stale etag refused.
    let r = put(
        &ctx,
        &path,
        &json!({"displayName": "Put", "etag": STANDARD.encode("stale")}),
    )
    .await;
    r.err(409, "ABORTED");
    let updated = put(
        &ctx,
        &path,
        &json!({"displayName": "Put", "etag": patched["etag"]}),
    )
    .await
    .ok();
    assert_eq!(updated["displayName"], "Put", "{updated}");

    // Disable and enable.
    let r = ctx.post(&format!("{path}:disable"), &json!({})).await;
    assert_eq!(r.ok(), json!({}));
    assert_eq!(ctx.get(&path).await.ok()["disabled"], true);
    let r = ctx.post(&format!("{path}:enable"), &json!({})).await;
    assert_eq!(r.ok(), json!({}));
    assert!(ctx.get(&path).await.ok().get("disabled").is_none());
    let r = ctx.post(&format!("{path}:signBlob"), &json!({})).await;
    r.err(404, "NOT_FOUND");

    // Delete: gone from get and list.
    let r = ctx.delete(&path).await;
    assert_eq!(r.ok(), json!({}));
    ctx.get(&path).await.err(404, "NOT_FOUND");
    ctx.delete(&path).await.err(404, "NOT_FOUND");
    // Under the wildcard, an unknown account is 403 (Google does not say whether it exists).
    ctx.get(&format!("/v1/projects/-/serviceAccounts/{unique_id}"))
        .await
        .err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");
    let list = ctx
        .get(&format!("/v1/projects/{project}/serviceAccounts"))
        .await
        .ok();
    assert!(!list.to_string().contains(&email), "{list}");

    // An account of another project is not found under this one.
    let other = unique_project_id("iam-other");
    ctx.create_project(&other).await;
    ctx.get(&format!(
        "/v1/projects/{other}/serviceAccounts/{}",
        second["email"].as_str().unwrap()
    ))
    .await
    .err(404, "NOT_FOUND");
}

#[tokio::test]
async fn keys_lifecycle_and_what_a_new_key_can_do() {
    let srv = server();
    let ctx = srv.ctx().await;
    let project = unique_project_id("iam-keys");
    ctx.create_project(&project).await;
    let account_id = unique_account_id("keyed");
    let sa = create_account(&ctx, &project, &account_id).await;
    let email = sa["email"].as_str().unwrap().to_owned();
    let unique_id = sa["uniqueId"].as_str().unwrap().to_owned();
    let base = format!("/v1/projects/{project}/serviceAccounts/{email}");

    let (key, creds) = create_key(&ctx, &project, &email).await;
    let key_id = key_id_of(&key);
    assert_eq!(
        key["name"],
        format!("{base}/keys/{key_id}").trim_start_matches("/v1/"),
        "{key}"
    );
    assert!(
        key_id.len() == 40 && key_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );
    assert_eq!(
        key["privateKeyType"], "TYPE_GOOGLE_CREDENTIALS_FILE",
        "{key}"
    );
    assert_eq!(key["keyAlgorithm"], "KEY_ALG_RSA_2048", "{key}");
    assert_eq!(key["keyOrigin"], "GOOGLE_PROVIDED", "{key}");
    assert_eq!(key["keyType"], "USER_MANAGED", "{key}");
    assert_eq!(key["validBeforeTime"], "9999-12-31T23:59:59Z", "{key}");
    assert!(
        key["validAfterTime"].as_str().is_some_and(is_rfc3339),
        "{key}"
    );
    // The key file, in Google's shape, naming this server and Keyplane's universe.
    let file = &creds.json;
    assert_eq!(file["type"], "service_account", "{file}");
    assert_eq!(file["project_id"], project.as_str(), "{file}");
    assert_eq!(file["private_key_id"], key_id.as_str(), "{file}");
    assert_eq!(file["client_email"], email.as_str(), "{file}");
    assert_eq!(file["client_id"], unique_id.as_str(), "{file}");
    assert_eq!(file["token_uri"], format!("{}/token", srv.base), "{file}");
    assert_eq!(file["universe_domain"], "keyplane.internal", "{file}");
    assert!(
        creds
            .private_key
            .starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 PEM"
    );

    // The new key authenticates: a token grant, and a self-signed JWT on a control-plane
    // call (the account holds no role, so authorization may refuse it, never with 401).
    let grant = ctx
        .grant(&creds.assertion(&creds.claims(GOOGLE_TOKEN_URI)))
        .await;
    let token = grant.ok()["access_token"].as_str().unwrap().to_owned();
    let jwt = self_signed(&creds);
    for bearer in [&token, &jwt] {
        let r = get_as(&ctx, bearer, &format!("/v3/projects/{project}")).await;
        assert!(
            r.status == 200 || r.status == 403,
            "a new key must authenticate\n{}",
            r.describe()
        );
    }

    // List (no private or public key data), get, and the public key as Google serves it.
    let list = ctx.get(&format!("{base}/keys")).await.ok();
    let keys = list["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{list}");
    assert_eq!(keys[0]["name"], key["name"], "{list}");
    assert!(keys[0].get("privateKeyData").is_none(), "{list}");
    assert!(keys[0].get("publicKeyData").is_none(), "{list}");
    let list = ctx
        .get(&format!(
            "{base}/keys?keyTypes=USER_MANAGED&keyTypes=SYSTEM_MANAGED"
        ))
        .await
        .ok();
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(1), "{list}");
    let list = ctx.get(&format!("{base}/keys?keyTypes=2")).await.ok();
    assert!(
        list.get("keys").is_none(),
        "only system-managed: none\n{list}"
    );
    ctx.get(&format!("{base}/keys?keyTypes=BOGUS"))
        .await
        .err(400, "INVALID_ARGUMENT");

    let got = ctx.get(&format!("{base}/keys/{key_id}")).await.ok();
    assert_eq!(got["name"], key["name"]);
    assert!(got.get("publicKeyData").is_none(), "{got}");
    assert!(got.get("privateKeyData").is_none(), "{got}");
    for ty in ["TYPE_X509_PEM_FILE", "1"] {
        let got = ctx
            .get(&format!("{base}/keys/{key_id}?publicKeyType={ty}"))
            .await
            .ok();
        let pem = String::from_utf8(
            STANDARD
                .decode(got["publicKeyData"].as_str().expect("publicKeyData"))
                .expect("base64"),
        )
        .expect("PEM text");
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE-----\n")
                && pem.trim_end().ends_with("-----END CERTIFICATE-----"),
            "{pem}"
        );
    }
    let raw = ctx
        .get(&format!(
            "{base}/keys/{key_id}?publicKeyType=TYPE_RAW_PUBLIC_KEY"
        ))
        .await
        .ok();
    {
        use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let der = STANDARD
            .decode(raw["publicKeyData"].as_str().expect("publicKeyData"))
            .expect("base64");
        let public = rsa::RsaPublicKey::from_public_key_der(&der).expect("SPKI DER");
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(&creds.private_key).unwrap();
        assert_eq!(
            public,
            private.to_public_key(),
            "the served public key is the key's"
        );
    }
    ctx.get(&format!("{base}/keys/{key_id}?publicKeyType=9"))
        .await
        .err(400, "INVALID_ARGUMENT");
    ctx.get(&format!("{base}/keys/{}", "0".repeat(40)))
        .await
        .err(404, "NOT_FOUND");
    // PKCS#12 is not issued.
    ctx.post(&format!("{base}/keys"), &json!({"privateKeyType": 1}))
        .await
        .err(400, "INVALID_ARGUMENT");

    // A disabled key gets no token and its JWTs are refused; enabling restores both.
    let r = ctx
        .post(&format!("{base}/keys/{key_id}:disable"), &json!({}))
        .await;
    assert_eq!(r.ok(), json!({}));
    let got = ctx.get(&format!("{base}/keys/{key_id}")).await.ok();
    assert_eq!(got["disabled"], true, "{got}");
    let r = ctx
        .grant(&creds.assertion(&creds.claims(GOOGLE_TOKEN_URI)))
        .await;
    assert_eq!(r.status, 400, "{}", r.describe());
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.describe());
    get_as(
        &ctx,
        &self_signed(&creds),
        &format!("/v3/projects/{project}"),
    )
    .await
    .err(401, "UNAUTHENTICATED");
    let r = ctx
        .post(&format!("{base}/keys/{key_id}:enable"), &json!({}))
        .await;
    assert_eq!(r.ok(), json!({}));
    let r = get_as(
        &ctx,
        &self_signed(&creds),
        &format!("/v3/projects/{project}"),
    )
    .await;
    assert!(r.status == 200 || r.status == 403, "{}", r.describe());

    // A disabled account: its earlier token stops working at once, and it gets no new one.
    let r = ctx.post(&format!("{base}:disable"), &json!({})).await;
    assert_eq!(r.ok(), json!({}));
    get_as(&ctx, &token, &format!("/v3/projects/{project}"))
        .await
        .err(401, "UNAUTHENTICATED");
    get_as(
        &ctx,
        &self_signed(&creds),
        &format!("/v3/projects/{project}"),
    )
    .await
    .err(401, "UNAUTHENTICATED");
    let r = ctx
        .grant(&creds.assertion(&creds.claims(GOOGLE_TOKEN_URI)))
        .await;
    assert_eq!(r.status, 400, "{}", r.describe());
    ctx.post(&format!("{base}:enable"), &json!({})).await.ok();

    // A second key, then deleting the first: the first no longer authenticates.
    let (key2, creds2) = create_key(&ctx, &project, &email).await;
    let list = ctx.get(&format!("{base}/keys")).await.ok();
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(2), "{list}");
    let r = ctx.delete(&format!("{base}/keys/{key_id}")).await;
    assert_eq!(r.ok(), json!({}));
    ctx.get(&format!("{base}/keys/{key_id}"))
        .await
        .err(404, "NOT_FOUND");
    get_as(
        &ctx,
        &self_signed(&creds),
        &format!("/v3/projects/{project}"),
    )
    .await
    .err(401, "UNAUTHENTICATED");
    let r = get_as(
        &ctx,
        &self_signed(&creds2),
        &format!("/v3/projects/{project}"),
    )
    .await;
    assert!(r.status == 200 || r.status == 403, "{}", r.describe());

    // Deleting the account takes its keys with it.
    ctx.delete(&base).await.ok();
    ctx.get(&format!(
        "/v1/projects/-/serviceAccounts/{unique_id}/keys/{}",
        key_id_of(&key2)
    ))
    .await
    .err(403, "PERMISSION_DENIED");
    get_as(
        &ctx,
        &self_signed(&creds2),
        &format!("/v3/projects/{project}"),
    )
    .await
    .err(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn the_owner_account_cannot_lock_everyone_out() {
    let srv = server();
    let ctx = srv.ctx().await;
    let owner = srv.owner_credentials();
    let base = format!(
        "/v1/projects/keyplane-admin/serviceAccounts/{}",
        owner.client_email
    );
    ctx.delete(&base).await.err(400, "FAILED_PRECONDITION");
    ctx.post(&format!("{base}:disable"), &json!({}))
        .await
        .err(400, "FAILED_PRECONDITION");
    ctx.post(
        &format!("{base}/keys/{}:disable", owner.private_key_id),
        &json!({}),
    )
    .await
    .err(400, "FAILED_PRECONDITION");
    ctx.delete(&format!("{base}/keys/{}", owner.private_key_id))
        .await
        .err(400, "FAILED_PRECONDITION");
    // Still the owner.
    let me = ctx.get(&base).await.ok();
    assert!(me.get("disabled").is_none(), "{me}");
}

#[tokio::test]
async fn roles_list_and_get() {
    let ctx = server().ctx().await;
    let basic = ctx.get("/v1/roles").await.ok();
    let roles = basic["roles"].as_array().expect("roles");
    let names: Vec<&str> = roles.iter().filter_map(|r| r["name"].as_str()).collect();
    for want in [
        "roles/owner",
        "roles/editor",
        "roles/viewer",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.serviceAccountKeyAdmin",
        "roles/serviceusage.apiKeysAdmin",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(
        roles.iter().all(|r| r.get("includedPermissions").is_none()
            && r["title"].as_str().is_some_and(|t| !t.is_empty())
            && r["etag"].is_string()),
        "BASIC view: titles, no permissions\n{basic}"
    );
    for view in ["FULL", "1"] {
        let full = ctx.get(&format!("/v1/roles?view={view}")).await.ok();
        assert!(
            full["roles"]
                .as_array()
                .expect("roles")
                .iter()
                .all(|r| r["includedPermissions"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty())),
            "FULL view has permissions\n{full}"
        );
    }
    // Paging walks the same list.
    let mut paged = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let page = ctx
            .get(&format!("/v1/roles?pageSize=5&pageToken={token}"))
            .await
            .ok();
        for r in page["roles"].as_array().expect("roles") {
            paged.push(r["name"].as_str().unwrap().to_owned());
        }
        match page["nextPageToken"].as_str() {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, names);

    let owner = ctx.get("/v1/roles/iam.serviceAccountAdmin").await.ok();
    assert_eq!(owner["name"], "roles/iam.serviceAccountAdmin");
    let perms: Vec<&str> = owner["includedPermissions"]
        .as_array()
        .expect("includedPermissions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for p in ["iam.serviceAccounts.create", "iam.serviceAccounts.disable"] {
        assert!(perms.contains(&p), "{p} missing: {owner}");
    }
    assert!(!perms.contains(&"iam.serviceAccountKeys.create"), "{owner}");
    let owner = ctx.get("/v1/roles/owner").await.ok();
    assert_eq!(owner["stage"], "GA", "{owner}");
    ctx.get("/v1/roles/no.suchRole").await.err(404, "NOT_FOUND");
    ctx.get("/v1/roles?view=SIDEWAYS")
        .await
        .err(400, "INVALID_ARGUMENT");
    // Custom roles (under a parent): Keyplane has none.
    let custom = ctx
        .get("/v1/roles?parent=projects/keyplane-admin")
        .await
        .ok();
    assert_eq!(custom, json!({}));
}

#[tokio::test]
async fn errors_are_google_statuses() {
    let srv = server();
    let ctx = srv.ctx().await;
    let anon = Ctx::anonymous(&srv.base);
    for path in [
        "/v1/projects/keyplane-admin/serviceAccounts",
        "/v1/roles",
        "/v1/roles/owner",
    ] {
        anon.get(path).await.err(401, "UNAUTHENTICATED");
    }
    // An unknown project: 403, as for a project the caller may not see.
    ctx.get("/v1/projects/no-such-project-x/serviceAccounts")
        .await
        .err(403, "PERMISSION_DENIED");
    ctx.post(
        "/v1/projects/no-such-project-x/serviceAccounts",
        &json!({"accountId": "some-account"}),
    )
    .await
    .err(403, "PERMISSION_DENIED");
    // Not an email or a unique id.
    ctx.get("/v1/projects/keyplane-admin/serviceAccounts/not-an-email")
        .await
        .err(400, "INVALID_ARGUMENT");
    // A method the path does not have: a google.rpc.Status, not a bare 405.
    let req = ctx.http.patch(ctx.url("/v1/roles")).bearer_auth(&ctx.token);
    ctx.send("PATCH /v1/roles".into(), req)
        .await
        .err(404, "NOT_FOUND");
    // Malformed bodies.
    let req = ctx
        .http
        .post(ctx.url("/v1/projects/keyplane-admin/serviceAccounts"))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/json")
        .body("{not json");
    ctx.send("POST serviceAccounts {not json".into(), req)
        .await
        .err(400, "INVALID_ARGUMENT");
}

/// Runs the `keyplane` CLI against the shared server; returns (status ok, stdout, stderr).
fn cli(srv: &Server, credentials: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyplane"))
        .arg("--credentials")
        .arg(credentials)
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

fn cli_ok(srv: &Server, credentials: &std::path::Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = cli(srv, credentials, args);
    assert!(
        ok,
        "keyplane {args:?} failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    stdout
}

#[tokio::test]
async fn cli_service_accounts_and_keys() {
    let srv = server();
    let ctx = srv.ctx().await;
    let owner = srv.path("owner-credentials.json");
    let project = unique_project_id("iam-cli");
    ctx.create_project(&project).await;
    let account_id = unique_account_id("cli");
    let email = format!("{account_id}@{project}.{SA_DOMAIN}");

    let out = cli_ok(
        srv,
        &owner,
        &[
            "iam",
            "service-accounts",
            "create",
            &account_id,
            "--project",
            &project,
            "--display-name",
            "CLI account",
            "--description",
            "from the CLI",
        ],
    );
    assert!(out.contains(&email), "{out}");
    let out = cli_ok(
        srv,
        &owner,
        &["iam", "service-accounts", "list", "--project", &project],
    );
    assert!(out.contains(&email) && out.contains("CLI account"), "{out}");
    let out = cli_ok(
        srv,
        &owner,
        &[
            "iam",
            "service-accounts",
            "describe",
            &email,
            "--format",
            "json",
        ],
    );
    let sa: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(sa["email"], email.as_str(), "{sa}");
    assert_eq!(sa["description"], "from the CLI", "{sa}");
    let out = cli_ok(
        srv,
        &owner,
        &[
            "iam",
            "service-accounts",
            "update",
            &email,
            "--display-name",
            "Renamed",
        ],
    );
    assert!(out.contains("Updated"), "{out}");

    // A key file written with mode 0600, never over an existing file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("key.json");
    let file_s = file.to_str().unwrap();
    let out = cli_ok(
        srv,
        &owner,
        &[
            "iam",
            "service-accounts",
            "keys",
            "create",
            "--iam-account",
            &email,
            "--output",
            file_s,
        ],
    );
    assert!(out.contains("Created key"), "{out}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode");
    }
    let creds = Creds::load(&file);
    assert_eq!(creds.client_email, email);
    let (ok, _, stderr) = cli(
        srv,
        &owner,
        &[
            "iam",
            "service-accounts",
            "keys",
            "create",
            "--iam-account",
            &email,
            "--output",
            file_s,
        ],
    );
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let out = cli_ok(
        srv,
        &owner,
        &[
            "iam",
            "service-accounts",
            "keys",
            "list",
            "--iam-account",
            &email,
        ],
    );
    assert!(out.contains(&creds.private_key_id), "{out}");

    // The new key file drives the CLI: it authenticates (its account holds no role, so
    // the call may be refused, but as PERMISSION_DENIED, never UNAUTHENTICATED).
    let (ok, stdout, stderr) = cli(
        srv,
        &file,
        &["iam", "service-accounts", "list", "--project", &project],
    );
    assert!(
        ok || stderr.contains("PERMISSION_DENIED"),
        "a key made by the CLI must authenticate\n{stdout}\n{stderr}"
    );
    // Disabled, it no longer does.
    cli_ok(
        srv,
        &owner,
        &[
            "iam",
            "service-accounts",
            "keys",
            "disable",
            &creds.private_key_id,
            "--iam-account",
            &email,
        ],
    );
    let (ok, _, stderr) = cli(
        srv,
        &file,
        &["iam", "service-accounts", "list", "--project", &project],
    );
    assert!(!ok && !stderr.contains("PERMISSION_DENIED"), "{stderr}");
    cli_ok(
        srv,
        &owner,
        &[
            "iam",
            "service-accounts",
            "keys",
            "enable",
            &creds.private_key_id,
            "--iam-account",
            &email,
        ],
    );
    cli_ok(
        srv,
        &owner,
        &[
            "iam",
            "service-accounts",
            "keys",
            "delete",
            &creds.private_key_id,
            "--iam-account",
            &email,
        ],
    );
    cli_ok(srv, &owner, &["iam", "service-accounts", "disable", &email]);
    let out = cli_ok(
        srv,
        &owner,
        &["iam", "service-accounts", "describe", &email],
    );
    assert!(out.contains("disabled:") && out.contains("true"), "{out}");
    cli_ok(srv, &owner, &["iam", "service-accounts", "enable", &email]);
    cli_ok(srv, &owner, &["iam", "service-accounts", "delete", &email]);
    let (ok, _, stderr) = cli(
        srv,
        &owner,
        &["iam", "service-accounts", "describe", &email],
    );
    assert!(!ok && stderr.contains("PERMISSION_DENIED"), "{stderr}");

    let out = cli_ok(srv, &owner, &["iam", "roles", "list"]);
    assert!(out.contains("roles/iam.serviceAccountKeyAdmin"), "{out}");
    let out = cli_ok(
        srv,
        &owner,
        &[
            "iam",
            "roles",
            "describe",
            "roles/iam.serviceAccountKeyAdmin",
        ],
    );
    assert!(out.contains("iam.serviceAccountKeys.create"), "{out}");
}

#[tokio::test]
async fn a_recreated_account_does_not_inherit_old_tokens() {
    let ctx = server().ctx().await;
    let project = unique_project_id("iam-again");
    ctx.create_project(&project).await;
    let account_id = unique_account_id("again");
    let sa = create_account(&ctx, &project, &account_id).await;
    let email = sa["email"].as_str().unwrap().to_owned();
    let (_, creds) = create_key(&ctx, &project, &email).await;
    let grant = ctx
        .grant(&creds.assertion(&creds.claims(GOOGLE_TOKEN_URI)))
        .await;
    let old_token = grant.ok()["access_token"].as_str().unwrap().to_owned();
    let path = format!("/v1/projects/{project}/serviceAccounts/{email}");
    ctx.delete(&path).await.ok();
    let again = create_account(&ctx, &project, &account_id).await;
    assert_ne!(
        again["uniqueId"], sa["uniqueId"],
        "a new account gets a new unique id"
    );
    get_as(&ctx, &old_token, &format!("/v3/projects/{project}"))
        .await
        .err(401, "UNAUTHENTICATED");
}
