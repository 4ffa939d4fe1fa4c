//! State survives a restart on the same data directory, and the restart rewrites nothing.

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::MetadataExt;

#[tokio::test]
async fn keys_projects_and_services_survive_a_restart() {
    let mut server = Server::start();
    let ctx = server.ctx().await;
    let key = ctx.new_key("rs-key").await;
    let deleted = ctx.create_key(&key.project_id, Some("gone")).await;
    let deleted_name = deleted["name"].as_str().unwrap().to_owned();
    let deleted_string = deleted["keyString"].as_str().unwrap().to_owned();
    ctx.delete(&format!("/v2/{deleted_name}")).await.ok();
    let off = ctx.new_key("rs-off").await;
    ctx.set_service(&off.project_id, GL, false).await;
    let count = json!({"contents": [{"parts": [{"text": "hello"}]}]});
    let count_path = format!("/v1beta/models/{MODEL}:countTokens");
    let before = ctx
        .gemini_post(&key.key_string, &count_path, &count)
        .await
        .ok();

    let files = ["server-secret", "owner-credentials.json"];
    let snapshot = |server: &Server| -> Vec<(Vec<u8>, std::time::SystemTime, u64)> {
        files
            .iter()
            .map(|f| {
                let p = server.path(f);
                let m = std::fs::metadata(&p).unwrap();
                (std::fs::read(&p).unwrap(), m.modified().unwrap(), m.ino())
            })
            .collect()
    };
    let files_before = snapshot(&server);
    drop(ctx);

    let status = server.stop().expect("running");
    assert!(status.success(), "graceful shutdown, got {status:?}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    server.restart();

    let files_after = snapshot(&server);
    for (f, (a, b)) in files.iter().zip(files_before.iter().zip(&files_after)) {
        assert!(a.0 == b.0, "{f} changed across the restart");
        assert_eq!(a.1, b.1, "{f} was rewritten across the restart (mtime)");
        assert_eq!(a.2, b.2, "{f} was replaced across the restart (inode)");
    }

    // The same key file still mints tokens; the key still authenticates.
    let ctx = server.ctx().await;
    let after = ctx
        .gemini_post(&key.key_string, &count_path, &count)
        .await
        .ok();
    assert_eq!(before, after);
    // The project and the key are still there.
    let got = ctx.get(&format!("/v2/{}", key.name)).await.ok();
    assert_eq!(got["name"], key.name.as_str(), "{got}");
    let ks = ctx.get(&format!("/v2/{}/keyString", key.name)).await.ok();
    assert_eq!(ks["keyString"], key.key_string.as_str(), "{ks}");
    ctx.get(&format!("/v3/projects/{}", key.project_id))
        .await
        .ok();
    // A deleted key stays deleted; a disabled service stays disabled.
    ctx.gemini_post(&deleted_string, &count_path, &count)
        .await
        .err_reason(400, "INVALID_ARGUMENT", "API_KEY_INVALID");
    ctx.gemini_post(&off.key_string, &count_path, &count)
        .await
        .err_reason(403, "PERMISSION_DENIED", "SERVICE_DISABLED");
    // Generation works after the restart.
    let r = ctx.generate(&key.key_string, &gen_body("Say hi", 2)).await;
    r.ok();
}

#[tokio::test]
async fn an_access_token_survives_a_restart() {
    let mut server = Server::start();
    let ctx = server.ctx().await;
    ctx.get("/v3/projects/keyplane-admin").await.ok();
    let token = ctx.token.clone();
    drop(ctx);
    server.restart();
    let mut ctx = Ctx::anonymous(&server.base);
    ctx.token = token;
    ctx.get("/v3/projects/keyplane-admin").await.ok();
}
