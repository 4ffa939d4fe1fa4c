//! Ephemeral tokens (`POST /v1alpha/auth_tokens`) from the outside over HTTP: minted with
//! an API key, presented as the SDKs present them (`Authorization: Token`, x-goog-api-key,
//! `?access_token=`), counted atomically (20 concurrent calls on a 5-use token: exactly 5
//! succeed), refused when exhausted, expired, on another version, or to mint more tokens;
//! model and generation-config constraints honoured.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

fn count_path(v: &str) -> String {
    format!("/{v}/models/{MODEL}:countTokens")
}

fn count_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]})
}

/// Mints a token with `key`; returns its name.
async fn mint(ctx: &Ctx, key: &str, body: &Value) -> String {
    let r = ctx.gemini_post(key, "/v1alpha/auth_tokens", body).await;
    let v = r.ok();
    let name = v["name"].as_str().expect("name").to_owned();
    assert!(name.starts_with("auth_tokens/"), "{}", r.describe());
    assert_eq!(name.len(), "auth_tokens/".len() + 64, "{}", r.describe());
    name
}

/// countTokens on `/{v}` with the token as Python's Live client sends it.
async fn count_with_token(ctx: &Ctx, token: &str, v: &str) -> Resp {
    let path = count_path(v);
    let req = ctx
        .http
        .post(ctx.url(&path))
        .header("authorization", format!("Token {token}"))
        .json(&count_body());
    ctx.send(format!("POST {path} (Authorization: Token)"), req)
        .await
}

#[tokio::test]
async fn a_token_works_for_its_uses_then_is_refused() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("eph-uses").await;
    let token = mint(&ctx, &key.key_string, &json!({"uses": 3})).await;

    // Each way the SDKs present it counts one use.
    let r = count_with_token(&ctx, &token, "v1alpha").await;
    assert!(r.ok()["totalTokens"].as_i64().unwrap() > 0);
    let r = ctx
        .gemini_post(&token, &count_path("v1alpha"), &count_body())
        .await;
    r.ok();
    let path = format!("{}?access_token={token}", count_path("v1alpha"));
    let r = ctx
        .send(
            format!("POST {path}"),
            ctx.http.post(ctx.url(&path)).json(&count_body()),
        )
        .await;
    r.ok();
    // The fourth is refused.
    let r = count_with_token(&ctx, &token, "v1alpha").await;
    r.err_reason(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED");
    // The key itself is unaffected.
    ctx.gemini_post(&key.key_string, &count_path("v1beta"), &count_body())
        .await
        .ok();
}

#[tokio::test]
async fn concurrent_uses_are_counted_exactly() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("eph-race").await;
    let token = mint(&ctx, &key.key_string, &json!({"uses": 5})).await;
    let calls = (0..20).map(|_| count_with_token(&ctx, &token, "v1alpha"));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    for r in results.iter().filter(|r| r.status != 200) {
        r.err_reason(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED");
    }
    assert_eq!(ok, 5, "exactly 5 of 20 concurrent calls succeed");
}

#[tokio::test]
async fn refusals() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("eph-refuse").await;
    let token = mint(&ctx, &key.key_string, &json!({})).await;
    let mut soft = Soft::default();

    // Only v1alpha mints (v1beta: 404, as Google's).
    let r = ctx
        .gemini_post(&key.key_string, "/v1beta/auth_tokens", &json!({}))
        .await;
    soft.check(|| r.err(404, "NOT_FOUND"));
    // A token cannot mint tokens.
    let r = ctx
        .gemini_post(&token, "/v1alpha/auth_tokens", &json!({}))
        .await;
    soft.check(|| r.err(403, "PERMISSION_DENIED"));
    let req = ctx
        .http
        .post(ctx.url("/v1alpha/auth_tokens"))
        .header("authorization", format!("Token {token}"))
        .json(&json!({}));
    let r = ctx
        .send("POST /v1alpha/auth_tokens (Token)".into(), req)
        .await;
    soft.check(|| r.err(403, "PERMISSION_DENIED"));
    // …nor keys (the control plane wants an OAuth token).
    let req = ctx
        .http
        .post(ctx.url(&format!(
            "/v2/projects/{}/locations/global/keys",
            key.project_id
        )))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({}));
    let r = ctx.send("POST /v2/…/keys (Bearer token)".into(), req).await;
    soft.check(|| r.err(401, "UNAUTHENTICATED"));
    // Minting needs a key: no credential is Google's 403.
    let r = ctx
        .gemini_post_raw(None, "/v1alpha/auth_tokens", "{}")
        .await;
    soft.check(|| r.err(403, "PERMISSION_DENIED"));
    // Only on v1alpha, and only for the generate/count methods.
    let r = count_with_token(&ctx, &token, "v1beta").await;
    soft.check(|| r.err_reason(401, "UNAUTHENTICATED", "ACCESS_TOKEN_TYPE_UNSUPPORTED"));
    let req = ctx
        .http
        .get(ctx.url("/v1alpha/models"))
        .header("authorization", format!("Token {token}"));
    let r = ctx.send("GET /v1alpha/models (Token)".into(), req).await;
    soft.check(|| r.err_reason(401, "UNAUTHENTICATED", "ACCESS_TOKEN_TYPE_UNSUPPORTED"));
    // An unknown token.
    let fake = format!("auth_tokens/{}", "0".repeat(64));
    let r = count_with_token(&ctx, &fake, "v1alpha").await;
    soft.check(|| r.err_reason(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED"));
    // Bad create bodies.
    for body in [
        json!({"uses": -1}),
        json!({"expireTime": "2001-01-01T00:00:00Z"}),
        json!({"expireTime": "not a time"}),
        json!({"newSessionExpireTime": "2999-01-01T00:00:00+00:00"}),
    ] {
        let r = ctx
            .gemini_post(&key.key_string, "/v1alpha/auth_tokens", &body)
            .await;
        soft.check(|| r.err(400, "INVALID_ARGUMENT"));
    }
    // The token's minting key deleted: the token stops at once.
    let token = mint(&ctx, &key.key_string, &json!({"uses": 0})).await;
    let r = count_with_token(&ctx, &token, "v1alpha").await;
    soft.check(|| r.ok());
    let r = ctx.delete(&format!("/v2/{}", key.name)).await;
    soft.check(|| r.ok());
    let r = count_with_token(&ctx, &token, "v1alpha").await;
    soft.check(|| r.err_reason(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_window_is_refused() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("eph-expire").await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let token = mint(
        &ctx,
        &key.key_string,
        &json!({"uses": 10, "newSessionExpireTime": soon}),
    )
    .await;
    count_with_token(&ctx, &token, "v1alpha").await.ok();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = count_with_token(&ctx, &token, "v1alpha").await;
    r.err_reason(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED");
}

#[tokio::test]
async fn constraints_pin_the_model_and_generation_config() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("eph-pin").await;
    let token = mint(
        &ctx,
        &key.key_string,
        &json!({
            "uses": 10,
            "bidiGenerateContentSetup": {
                "model": format!("models/{MODEL}"),
                "generationConfig": {"temperature": 0.0}
            },
            "fieldMask": "model,generationConfig.temperature"
        }),
    )
    .await;
    let mut soft = Soft::default();
    // The pinned model: allowed.
    let r = count_with_token(&ctx, &token, "v1alpha").await;
    soft.check(|| r.ok());
    // Another model: 403.
    let path = "/v1alpha/models/some-other-model:countTokens";
    let req = ctx
        .http
        .post(ctx.url(path))
        .header("authorization", format!("Token {token}"))
        .json(&count_body());
    let r = ctx.send(format!("POST {path}"), req).await;
    soft.check(|| r.err(403, "PERMISSION_DENIED"));
    // A locked generation config field set to another value: 400.
    let path = format!("/v1alpha/models/{MODEL}:generateContent");
    let req = ctx
        .http
        .post(ctx.url(&path))
        .header("authorization", format!("Token {token}"))
        .json(&json!({
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"temperature": 0.9, "maxOutputTokens": 2}
        }));
    let r = ctx.send(format!("POST {path}"), req).await;
    soft.check(|| r.err(400, "INVALID_ARGUMENT"));
}
