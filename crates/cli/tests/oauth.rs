//! `POST /token` (the JWT-bearer grant google-auth uses) and bearer authentication on the
//! control plane.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

/// Asserts an OAuth error answer: HTTP 400, JSON `{"error": code, "error_description"}`.
fn oauth_error(r: &Resp, code: &str) {
    assert_eq!(r.status, 400, "expected HTTP 400 {code}\n{}", r.describe());
    assert!(
        r.content_type.starts_with("application/json"),
        "expected JSON\n{}",
        r.describe()
    );
    let v = r.json();
    assert_eq!(v["error"], code, "expected error {code}\n{}", r.describe());
    assert!(
        v["error_description"].is_string(),
        "expected an error_description\n{}",
        r.describe()
    );
    assert!(v.get("access_token").is_none(), "{}", r.describe());
}

fn token_ok(r: &Resp) -> String {
    let v = r.ok();
    let token = v["access_token"].as_str().unwrap_or_default();
    assert!(!token.is_empty(), "no access_token\n{}", r.describe());
    let expires = v["expires_in"]
        .as_i64()
        .unwrap_or_else(|| panic!("expires_in must be a number\n{}", r.describe()));
    assert!(
        (3500..=3600).contains(&expires),
        "expires_in should be about 3599\n{}",
        r.describe()
    );
    assert_eq!(v["token_type"], "Bearer", "{}", r.describe());
    token.to_owned()
}

#[tokio::test]
async fn grant_with_token_uri_audience_returns_a_working_token() {
    let s = server();
    let creds = s.owner_credentials();
    let mut ctx = Ctx::anonymous(&s.base);
    let r = ctx
        .grant(&creds.assertion(&creds.claims(&creds.token_uri)))
        .await;
    ctx.token = token_ok(&r);
    let list = ctx.get("/v3/projects").await.ok();
    assert!(list["projects"].is_array(), "{list}");
}

#[tokio::test]
async fn grant_shaped_like_google_auth_is_accepted() {
    // google-auth: aud is Google's token URL even when token_uri points elsewhere; no sub.
    let s = server();
    let creds = s.owner_credentials();
    let now = unix_now();
    let claims = json!({
        "iat": now,
        "exp": now + 3600,
        "iss": creds.client_email,
        "aud": GOOGLE_TOKEN_URI,
        "scope": CLOUD_PLATFORM,
    });
    let mut ctx = Ctx::anonymous(&s.base);
    ctx.token = token_ok(&ctx.grant(&creds.assertion(&claims)).await);
    ctx.get("/v3/projects/keyplane-admin").await.ok();
}

#[tokio::test]
async fn two_grants_give_two_working_tokens() {
    let s = server();
    let creds = s.owner_credentials();
    let ctx = Ctx::anonymous(&s.base);
    let a = ctx.owner_token(&creds).await;
    let b = ctx.owner_token(&creds).await;
    for t in [a, b] {
        let mut c = Ctx::anonymous(&s.base);
        c.token = t;
        c.get("/v3/projects/keyplane-admin").await.ok();
    }
}

#[tokio::test]
async fn bad_signature_is_invalid_grant() {
    let s = server();
    let creds = s.owner_credentials();
    let other = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("generate a key");
    let jwt = sign_jwt_with(
        &other,
        &creds.private_key_id,
        &creds.claims(&creds.token_uri),
    );
    let ctx = Ctx::anonymous(&s.base);
    oauth_error(&ctx.grant(&jwt).await, "invalid_grant");

    // A valid signature over different claims (tampered payload) fails too.
    let good = creds.assertion(&creds.claims(&creds.token_uri));
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims = creds.claims(&creds.token_uri);
    claims["scope"] = json!("https://www.googleapis.com/auth/cloud-platform openid");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    );
    oauth_error(&ctx.grant(&tampered).await, "invalid_grant");
}

#[tokio::test]
async fn expired_assertion_is_invalid_grant() {
    let s = server();
    let creds = s.owner_credentials();
    let now = unix_now();
    let mut claims = creds.claims(&creds.token_uri);
    claims["iat"] = json!(now - 7200);
    claims["exp"] = json!(now - 3600);
    let ctx = Ctx::anonymous(&s.base);
    oauth_error(&ctx.grant(&creds.assertion(&claims)).await, "invalid_grant");
}

#[tokio::test]
async fn unknown_kid_is_invalid_grant() {
    let s = server();
    let creds = s.owner_credentials();
    let jwt = sign_jwt(
        &creds.private_key,
        "0123456789abcdef0123456789abcdef01234567",
        &creds.claims(&creds.token_uri),
    );
    let ctx = Ctx::anonymous(&s.base);
    oauth_error(&ctx.grant(&jwt).await, "invalid_grant");
}

#[tokio::test]
async fn garbage_assertion_is_invalid_grant() {
    let s = server();
    let ctx = Ctx::anonymous(&s.base);
    for a in ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30."] {
        oauth_error(&ctx.grant(a).await, "invalid_grant");
    }
}

#[tokio::test]
async fn missing_assertion_is_invalid_request() {
    let s = server();
    let ctx = Ctx::anonymous(&s.base);
    let r = ctx
        .token_form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")])
        .await;
    oauth_error(&r, "invalid_request");
}

#[tokio::test]
async fn other_grant_type_is_unsupported_grant_type() {
    let s = server();
    let ctx = Ctx::anonymous(&s.base);
    let r = ctx
        .token_form(&[
            ("grant_type", "client_credentials"),
            ("assertion", "whatever"),
        ])
        .await;
    oauth_error(&r, "unsupported_grant_type");
    let r = ctx
        .token_form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .await;
    oauth_error(&r, "unsupported_grant_type");
}

/// Control-plane calls that must demand a bearer token.
fn protected_calls() -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("GET", "/v3/projects".into(), None),
        ("GET", "/v3/projects/keyplane-admin".into(), None),
        (
            "POST",
            "/v3/projects".into(),
            Some(json!({"projectId": "never-created-1", "displayName": "Never"})),
        ),
        (
            "GET",
            "/v1/projects/keyplane-admin/services?filter=state:ENABLED".into(),
            None,
        ),
        (
            "POST",
            format!("/v1/projects/keyplane-admin/services/{GL}:enable"),
            Some(json!({})),
        ),
        (
            "GET",
            "/v2/projects/keyplane-admin/locations/global/keys".into(),
            None,
        ),
        (
            "POST",
            "/v2/projects/keyplane-admin/locations/global/keys".into(),
            Some(json!({"displayName": "x"})),
        ),
    ]
}

async fn call(ctx: &Ctx, method: &str, path: &str, body: &Option<Value>) -> Resp {
    match (method, body) {
        ("GET", _) => ctx.get(path).await,
        ("POST", Some(b)) => ctx.post(path, b).await,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn control_plane_without_authorization_is_unauthenticated() {
    let s = server();
    let ctx = Ctx::anonymous(&s.base);
    for (method, path, body) in protected_calls() {
        call(&ctx, method, &path, &body)
            .await
            .err(401, "UNAUTHENTICATED");
    }
    // Nothing was created by the refused calls.
    let authed = s.ctx().await;
    authed
        .get("/v3/projects/never-created-1")
        .await
        .err(403, "PERMISSION_DENIED");
}

#[tokio::test]
async fn control_plane_with_a_garbage_bearer_is_unauthenticated() {
    let s = server();
    let creds = s.owner_credentials();
    let mut ctx = Ctx::anonymous(&s.base);
    let forged_jwt = {
        // Signed by a key the server never saw: not a valid self-signed JWT either.
        let other = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let now = unix_now();
        sign_jwt_with(
            &other,
            &creds.private_key_id,
            &json!({"iss": creds.client_email, "sub": creds.client_email,
                    "aud": "https://apikeys.googleapis.com/", "iat": now, "exp": now + 3600}),
        )
    };
    for bad in [
        "garbage".to_owned(),
        "ya29.not-a-real-token".to_owned(),
        forged_jwt,
    ] {
        ctx.token = bad;
        for (method, path, body) in protected_calls() {
            call(&ctx, method, &path, &body)
                .await
                .err(401, "UNAUTHENTICATED");
        }
    }
}

#[tokio::test]
async fn an_api_key_is_not_a_control_plane_credential() {
    let s = server();
    let owner = s.ctx().await;
    let key = owner.new_key("oauth-key").await;
    let ctx = Ctx::anonymous(&s.base);
    let path = "/v3/projects/keyplane-admin";
    let r = ctx
        .send(
            format!("GET {path} (x-goog-api-key)"),
            ctx.http
                .get(ctx.url(path))
                .header("x-goog-api-key", &key.key_string),
        )
        .await;
    let e = r.status_error();
    assert!(
        r.status == 401 || r.status == 403,
        "an API key must not authorize a control-plane call\n{}",
        r.describe()
    );
    let _ = e;
}
