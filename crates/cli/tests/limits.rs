//! Framework-level refusals (oversized bodies, malformed query strings, wrong methods)
//! answer google.rpc.Status like every handler error, and change nothing stored.

mod common;

use common::*;
use serde_json::json;
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

/// 21 MiB of JSON: just over the 20 MiB limit.
fn oversized_body(field: &str) -> String {
    format!("{{\"{field}\":\"{}\"}}", "x".repeat(21 * 1024 * 1024))
}

#[tokio::test]
async fn oversized_bodies_are_invalid_argument_and_store_nothing() {
    let ctx = server().ctx().await;
    let id = format!("big-{}", unix_now() % 1_000_000_000);
    let body =
        oversized_body("displayName").replacen('{', &format!("{{\"projectId\":\"{id}\","), 1);
    let req = ctx
        .http
        .post(ctx.url("/v3/projects"))
        .bearer_auth(&ctx.token)
        .header("content-type", "application/json")
        .body(body);
    let r = ctx.send("POST /v3/projects (21 MiB)".into(), req).await;
    let err = r.err(400, "INVALID_ARGUMENT");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("payload size exceeds the limit")),
        "{}",
        r.describe()
    );
    // Nothing was created.
    let got = ctx.get(&format!("/v3/projects/{id}")).await;
    got.err(403, "PERMISSION_DENIED");

    // The data plane answers the same way, before any model work.
    let req = ctx
        .http
        .post(ctx.url(
            "/v1beta/models/gemini-2.5-flash:countTokens?key=AIzaSyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ))
        .header("content-type", "application/json")
        .body(oversized_body("contents"));
    let r = ctx.send("POST :countTokens (21 MiB)".into(), req).await;
    r.err(400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths_are_status_404() {
    let ctx = server().ctx().await;
    for (what, req) in [
        (
            "PUT /v3/projects",
            ctx.http.put(ctx.url("/v3/projects")).json(&json!({})),
        ),
        ("GET /nowhere", ctx.http.get(ctx.url("/nowhere"))),
        (
            "DELETE /v1beta/models",
            ctx.http.delete(ctx.url("/v1beta/models")),
        ),
    ] {
        let r = ctx.send(what.into(), req.bearer_auth(&ctx.token)).await;
        r.err(404, "NOT_FOUND");
    }
}
