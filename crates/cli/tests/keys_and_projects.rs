//! API Keys v2 updates (updateMask, etag), the undelete window and purge, Resource Manager
//! v3 project search/patch/delete/undelete, Org Policy v2 and keys bound to service
//! accounts, and the CLI verbs for them, over HTTP against the real `keyplane serve`.
//!
//! Every bad input is checked twice: it answers Google's error, and nothing stored changed.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

const CONSTRAINT: &str = "iam.managed.disableServiceAccountApiKeyCreation";
const KEY_TYPE: &str = "type.googleapis.com/google.api.apikeys.v2.Key";

async fn patch(ctx: &Ctx, path: &str, body: &Value) -> Resp {
    patch_raw(ctx, path, &body.to_string()).await
}

async fn patch_raw(ctx: &Ctx, path: &str, body: &str) -> Resp {
    let mut req = ctx
        .http
        .patch(ctx.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if !ctx.token.is_empty() {
        req = req.bearer_auth(&ctx.token);
    }
    ctx.send(format!("PATCH {path} {body}"), req).await
}

/// The `field` of the first BadRequest field violation of an `error` object.
fn bad_field(e: &Value) -> String {
    e["details"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        })
        .and_then(|d| d["fieldViolations"][0]["field"].as_str())
        .unwrap_or("<none>")
        .to_owned()
}

/// A key's path under /v2 (`projects/N/locations/global/keys/ID`).
fn key_path(name: &str) -> String {
    format!("/v2/{name}")
}

/// Data-plane status of a call with the key (listing models generates nothing).
async fn key_status(ctx: &Ctx, key: &str) -> (u16, Option<String>) {
    let r = ctx.gemini_get(key, "/v1beta/models").await;
    let reason = if r.status >= 400 {
        error_info(&r.json()["error"]).and_then(|i| i["reason"].as_str().map(str::to_owned))
    } else {
        None
    };
    (r.status, reason)
}

/// The finished operation's response of a PATCH/DELETE/POST on a key.
fn key_op(r: &Resp) -> Value {
    let op = r.ok();
    assert_eq!(op["done"], true, "{}", r.describe());
    assert!(op.get("error").is_none(), "{}", r.describe());
    assert_eq!(op["response"]["@type"], KEY_TYPE, "{}", r.describe());
    op["response"].clone()
}

#[tokio::test]
async fn key_update_with_masks_and_etags() {
    let ctx = server().ctx().await;
    let k = ctx.new_key("kp-upd").await;
    let path = key_path(&k.name);
    let before = ctx.get(&path).await.ok();

    // Mask in camelCase (as GAPIC sends it): display name and restrictions replaced.
    let r = patch(
        &ctx,
        &format!("{path}?updateMask=displayName%2Crestrictions&%24alt=json%3Benum-encoding%3Dint"),
        &json!({
            "displayName": "renamed",
            "annotations": {"not": "in the mask"},
            "restrictions": {
                "serverKeyRestrictions": {"allowedIps": ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]},
                "apiTargets": [{"service": GL, "methods": ["Generate*", "ListModels"]}]
            }
        }),
    )
    .await;
    let key = key_op(&r);
    assert!(
        key.get("keyString").is_none(),
        "no key string in an update: {key}"
    );
    assert_eq!(key["displayName"], "renamed");
    assert!(
        key.get("annotations").is_none(),
        "annotations not in the mask: {key}"
    );
    assert_eq!(
        key["restrictions"]["serverKeyRestrictions"]["allowedIps"],
        json!(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
    );
    assert_ne!(key["etag"], before["etag"]);
    assert_ne!(key["updateTime"], before["updateTime"]);
    assert_eq!(key["createTime"], before["createTime"]);
    assert_eq!(ctx.get(&path).await.ok()["displayName"], "renamed");
    assert_eq!(key_status(&ctx, &k.key_string).await.0, 200);

    // snake_case mask; a sub-field of restrictions keeps the others.
    let key = key_op(
        &patch(
            &ctx,
            &format!("{path}?update_mask=restrictions.api_targets,annotations"),
            &json!({"restrictions": {"apiTargets": [{"service": GL}]}, "annotations": {"team": "a"}}),
        )
        .await,
    );
    assert_eq!(key["restrictions"]["apiTargets"], json!([{"service": GL}]));
    assert_eq!(
        key["restrictions"]["serverKeyRestrictions"]["allowedIps"][0],
        "127.0.0.1"
    );
    assert_eq!(key["annotations"], json!({"team": "a"}));

    // No mask: the fields present are replaced, the others kept.
    let key = key_op(&patch(&ctx, &path, &json!({"displayName": "implied"})).await);
    assert_eq!(key["displayName"], "implied");
    assert_eq!(key["annotations"], json!({"team": "a"}));
    // `*`: every mutable field, absent ones cleared.
    let key = key_op(
        &patch(
            &ctx,
            &format!("{path}?updateMask=*"),
            &json!({"displayName": "star"}),
        )
        .await,
    );
    assert_eq!(key["displayName"], "star");
    assert!(key.get("annotations").is_none(), "{key}");
    assert!(key.get("restrictions").is_none(), "{key}");
    // The body's etag, when given, must be the current one.
    let etag = key["etag"].as_str().unwrap().to_owned();
    let key = key_op(
        &patch(
            &ctx,
            &format!("{path}?updateMask=displayName"),
            &json!({"displayName": "with etag", "etag": etag}),
        )
        .await,
    );
    assert_eq!(key["displayName"], "with etag");

    // Android fingerprints are stored without colons, in upper case.
    let key = key_op(
        &patch(
            &ctx,
            &format!("{path}?updateMask=restrictions"),
            &json!({"restrictions": {"androidKeyRestrictions": {"allowedApplications": [
                {"sha1Fingerprint": "da:39:a3:ee:5e:6b:4b:0d:32:55:bf:ef:95:60:18:90:af:d8:07:09", "packageName": "com.example.app"}
            ]}}}),
        )
        .await,
    );
    assert_eq!(
        key["restrictions"]["androidKeyRestrictions"]["allowedApplications"][0]["sha1Fingerprint"],
        "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
    );
    let key = key_op(&patch(&ctx, &format!("{path}?updateMask=restrictions"), &json!({})).await);
    assert!(key.get("restrictions").is_none(), "{key}");

    // Bad input: Google's error, and the key is exactly as it was.
    let stored = ctx.get(&path).await.ok();
    let long_name = "x".repeat(64);
    let cases: Vec<(String, String, u16, &str, &str)> = vec![
        // (query, body, HTTP status, status, ErrorInfo reason or BadRequest field)
        ("?updateMask=name".into(), json!({"displayName": "x"}).to_string(), 400, "INVALID_ARGUMENT", "reason:APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS"),
        ("?updateMask=displayName,uid".into(), json!({"displayName": "x"}).to_string(), 400, "INVALID_ARGUMENT", "reason:APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS"),
        ("?updateMask=service_account_email".into(), json!({"serviceAccountEmail": "a@b.iam.gserviceaccount.com"}).to_string(), 400, "INVALID_ARGUMENT", "reason:APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS"),
        ("?updateMask=keyString".into(), json!({}).to_string(), 400, "INVALID_ARGUMENT", "reason:APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS"),
        ("?updateMask=noSuchField".into(), json!({"displayName": "x"}).to_string(), 400, "INVALID_ARGUMENT", "field:update_mask"),
        ("?updateMask=displayName,,restrictions".into(), json!({"displayName": "x"}).to_string(), 400, "INVALID_ARGUMENT", "field:update_mask"),
        ("?updateMask=display%20name".into(), json!({"displayName": "x"}).to_string(), 400, "INVALID_ARGUMENT", "field:update_mask"),
        ("?updateMask=*,displayName".into(), json!({"displayName": "x"}).to_string(), 400, "INVALID_ARGUMENT", "field:update_mask"),
        ("?updateMask=restrictions.noSuch".into(), json!({}).to_string(), 400, "INVALID_ARGUMENT", "field:update_mask"),
        ("?updateMask=displayName".into(), json!({"displayName": "x", "etag": "W/\"stale\""}).to_string(), 409, "ABORTED", ""),
        ("?updateMask=displayName".into(), json!({"displayName": long_name}).to_string(), 400, "INVALID_ARGUMENT", "field:key.display_name"),
        ("?updateMask=displayName".into(), json!({"displayName": 5}).to_string(), 400, "INVALID_ARGUMENT", "field:display_name"),
        ("".into(), json!({"displayName": "x", "noSuchField": 1}).to_string(), 400, "INVALID_ARGUMENT", ""),
        ("".into(), "{\"displayName\": ".into(), 400, "INVALID_ARGUMENT", ""),
        ("?updateMask=restrictions".into(), json!({"restrictions": {"serverKeyRestrictions": {"allowedIps": ["10.0.0.300"]}}}).to_string(), 400, "INVALID_ARGUMENT", "field:key.restrictions.server_key_restrictions.allowed_ips"),
        ("?updateMask=restrictions".into(), json!({"restrictions": {"serverKeyRestrictions": {"allowedIps": ["1.2.3.4"]}, "iosKeyRestrictions": {"allowedBundleIds": ["a.b"]}}}).to_string(), 400, "INVALID_ARGUMENT", "field:key.restrictions"),
        ("?updateMask=restrictions".into(), json!({"restrictions": {"androidKeyRestrictions": {"allowedApplications": [{"sha1Fingerprint": "nothex", "packageName": "a.b"}]}}}).to_string(), 400, "INVALID_ARGUMENT", "field:key.restrictions.android_key_restrictions.allowed_applications[0].sha1_fingerprint"),
        ("?updateMask=restrictions".into(), json!({"restrictions": {"apiTargets": [{"service": ""}]}}).to_string(), 400, "INVALID_ARGUMENT", "field:key.restrictions.api_targets[0].service"),
        ("?updateMask=displayName&checkExistingUsage=SOMETIMES".into(), json!({"displayName": "x"}).to_string(), 400, "INVALID_ARGUMENT", "field:check_existing_usage"),
        ("".into(), json!({"name": "projects/1/locations/global/keys/other", "displayName": "x"}).to_string(), 400, "INVALID_ARGUMENT", "field:key.name"),
    ];
    let mut soft = Soft::default();
    for (query, body, code, status, what) in &cases {
        let r = patch_raw(&ctx, &format!("{path}{query}"), body).await;
        soft.check(|| {
            let e = r.err(*code, status);
            if let Some(reason) = what.strip_prefix("reason:") {
                assert_eq!(
                    error_info(&e).map(|i| i["reason"].clone()),
                    Some(json!(reason)),
                    "{}",
                    r.describe()
                );
            } else if let Some(field) = what.strip_prefix("field:") {
                assert_eq!(bad_field(&e), field, "{}", r.describe());
            }
        });
        let now = ctx.get(&path).await.ok();
        soft.check(|| assert_eq!(now, stored, "{} changed the key", r.describe()));
    }
    // The immutable-field message names the field as Google does.
    let r = patch(
        &ctx,
        &format!("{path}?updateMask=serviceAccountEmail"),
        &json!({}),
    )
    .await;
    soft.check(|| {
        let e = r.err(400, "INVALID_ARGUMENT");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("Update mask contains immutable field(s) \"service_account_email\""),
            "{}",
            r.describe()
        );
    });
    // Unknown key, unknown project, a path that is not a key.
    let project_path = format!("/v2/projects/{}/locations/global/keys", k.project_id);
    let r = patch(
        &ctx,
        &format!("{project_path}/no-such-key?updateMask=displayName"),
        &json!({}),
    )
    .await;
    soft.check(|| r.err(404, "NOT_FOUND"));
    let r = patch(
        &ctx,
        &format!(
            "/v2/projects/{}/locations/global/keys/k?updateMask=displayName",
            unique_project_id("nope")
        ),
        &json!({}),
    )
    .await;
    soft.check(|| r.err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED"));
    let r = patch(&ctx, &project_path, &json!({})).await;
    soft.check(|| r.status_error());
    soft.finish();
}

#[tokio::test]
async fn the_data_plane_sees_key_updates_at_once() {
    let ctx = server().ctx().await;
    let k = ctx.new_key("kp-dp").await;
    let path = key_path(&k.name);
    assert_eq!(key_status(&ctx, &k.key_string).await, (200, None));

    // Only another API: this one is blocked.
    key_op(
        &patch(
            &ctx,
            &format!("{path}?updateMask=restrictions.apiTargets"),
            &json!({"restrictions": {"apiTargets": [{"service": "aiplatform.googleapis.com"}]}}),
        )
        .await,
    );
    assert_eq!(
        key_status(&ctx, &k.key_string).await,
        (403, Some("API_KEY_SERVICE_BLOCKED".into()))
    );
    // Back to the Gemini API but from an IP the test does not have.
    key_op(
        &patch(
            &ctx,
            &format!("{path}?updateMask=restrictions"),
            &json!({"restrictions": {"serverKeyRestrictions": {"allowedIps": ["192.0.2.0/24"]}}}),
        )
        .await,
    );
    assert_eq!(
        key_status(&ctx, &k.key_string).await,
        (403, Some("API_KEY_IP_ADDRESS_BLOCKED".into()))
    );
    key_op(&patch(&ctx, &format!("{path}?updateMask=restrictions"), &json!({})).await);
    assert_eq!(key_status(&ctx, &k.key_string).await, (200, None));

    // Delete with the etag: it stops at once; undelete: it works again.
    let etag = ctx.get(&path).await.ok()["etag"]
        .as_str()
        .unwrap()
        .to_owned();
    ctx.delete(&format!("{path}?etag=W%2F%22stale%22"))
        .await
        .err(409, "ABORTED");
    assert_eq!(key_status(&ctx, &k.key_string).await.0, 200);
    let deleted = key_op(
        &ctx.delete(&format!("{path}?etag={}", urlencode(&etag)))
            .await,
    );
    assert!(
        deleted["deleteTime"].as_str().is_some_and(is_rfc3339),
        "{deleted}"
    );
    assert_eq!(
        key_status(&ctx, &k.key_string).await,
        (400, Some("API_KEY_INVALID".into()))
    );
    // A deleted key is not updated.
    patch(
        &ctx,
        &format!("{path}?updateMask=displayName"),
        &json!({"displayName": "x"}),
    )
    .await
    .err(400, "FAILED_PRECONDITION");
    key_op(&ctx.post(&format!("{path}:undelete"), &json!({})).await);
    assert_eq!(key_status(&ctx, &k.key_string).await, (200, None));
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sets `delete_time` of a key `days` back, straight in the database file (what 30 days of
/// waiting would do).
fn backdate_deletion(server: &Server, project_number: &str, key_id: &str, days: i64) {
    let db = server.path("keyplane.db");
    let script = r#"
import sqlite3, sys, time
db, number, key_id, days = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c = sqlite3.connect(db, timeout=30)
t = int((time.time() - days * 86400) * 1_000_000)
n = c.execute("update api_keys set delete_time = ? where project_number = ? and key_id = ? and delete_time is not null", (t, number, key_id)).rowcount
c.commit()
assert n == 1, n
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&db)
        .arg(project_number)
        .arg(key_id)
        .arg(days.to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "backdating failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many rows `api_keys` has for the key.
fn stored_rows(server: &Server, project_number: &str, key_id: &str) -> i64 {
    let script = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
print(c.execute("select count(*) from api_keys where project_number = ? and key_id = ?", (int(sys.argv[2]), sys.argv[3])).fetchone()[0])
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(server.path("keyplane.db"))
        .arg(project_number)
        .arg(key_id)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test]
async fn undelete_window_then_purge() {
    let mut server = Server::start();
    let ctx = server.ctx().await;
    let project_id = unique_project_id("kp-purge");
    let number = project_number(&ctx.create_project(&project_id).await);
    ctx.set_service(&project_id, GL, true).await;
    let keys = format!("/v2/projects/{project_id}/locations/global/keys");

    // Deleted 29 days ago: still restorable.
    let a = ctx.create_key(&project_id, Some("key-a")).await;
    ctx.delete(&key_path(a["name"].as_str().unwrap()))
        .await
        .ok();
    backdate_deletion(&server, &number, "key-a", 29);
    key_op(
        &ctx.post(&format!("{keys}/key-a:undelete"), &json!({}))
            .await,
    );

    // Deleted 31 days ago: gone for every caller, even before the purge removes the row.
    let b = ctx.create_key(&project_id, Some("key-b")).await;
    let b_string = b["keyString"].as_str().unwrap().to_owned();
    ctx.delete(&format!("{keys}/key-b")).await.ok();
    backdate_deletion(&server, &number, "key-b", 31);
    ctx.get(&format!("{keys}/key-b"))
        .await
        .err(404, "NOT_FOUND");
    ctx.post(&format!("{keys}/key-b:undelete"), &json!({}))
        .await
        .err(404, "NOT_FOUND");
    ctx.get(&format!("/v2/keys:lookupKey?keyString={b_string}"))
        .await
        .err(404, "NOT_FOUND");
    let listed = ctx.get(&format!("{keys}?showDeleted=true")).await.ok();
    assert!(
        !listed.to_string().contains("key-b"),
        "a purged key is not listed: {listed}"
    );
    assert_eq!(key_status(&ctx, &b_string).await.0, 400);
    // Its keyId is free again.
    let again = ctx.create_key(&project_id, Some("key-b")).await;
    assert_ne!(again["uid"], b["uid"]);
    assert_ne!(again["keyString"], b["keyString"]);

    // A restart purges what is past the window; what is within it stays.
    let c = ctx.create_key(&project_id, Some("key-c")).await;
    ctx.delete(&key_path(c["name"].as_str().unwrap()))
        .await
        .ok();
    ctx.delete(&format!("{keys}/key-a")).await.ok();
    backdate_deletion(&server, &number, "key-c", 45);
    backdate_deletion(&server, &number, "key-a", 2);
    assert_eq!(stored_rows(&server, &number, "key-c"), 1);
    server.restart();
    let ctx = server.ctx().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stored_rows(&server, &number, "key-c") != 0 {
        assert!(std::time::Instant::now() < deadline, "key-c was not purged");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stored_rows(&server, &number, "key-a"), 1);
    key_op(
        &ctx.post(&format!("{keys}/key-a:undelete"), &json!({}))
            .await,
    );
}

// === Resource Manager v3 ===

#[tokio::test]
async fn projects_patch_search_delete_undelete() {
    let ctx = server().ctx().await;
    let k = ctx.new_key("kp-life").await;
    let id = k.project_id.clone();
    let path = format!("/v3/projects/{id}");

    // Patch: display name and labels (camelCase or snake_case mask).
    let r = patch(
        &ctx,
        &format!("{path}?updateMask=displayName,labels"),
        &json!({"displayName": "Renamed project", "labels": {"env": "dev", "team": "kp"}}),
    )
    .await;
    let op = r.ok();
    assert_eq!(op["done"], true, "{}", r.describe());
    assert_eq!(
        op["metadata"]["@type"],
        "type.googleapis.com/google.cloud.resourcemanager.v3.UpdateProjectMetadata"
    );
    let p = &op["response"];
    assert_eq!(p["displayName"], "Renamed project");
    assert_eq!(p["labels"], json!({"env": "dev", "team": "kp"}));
    let p = ctx.get(&path).await.ok();
    assert_eq!(p["displayName"], "Renamed project");
    let r = patch(
        &ctx,
        &format!("{path}?update_mask=labels"),
        &json!({"labels": {"env": "prod"}}),
    )
    .await;
    assert_eq!(r.ok()["response"]["labels"], json!({"env": "prod"}));
    assert_eq!(ctx.get(&path).await.ok()["displayName"], "Renamed project");

    // Search.
    let search = |q: &str| format!("/v3/projects:search?query={}", urlencode(q));
    let ids = |v: &Value| -> Vec<String> {
        v["projects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p["projectId"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for (q, hit) in [
        (format!("id:{id}"), true),
        (format!("projectId:{id} labels.env:prod"), true),
        (format!("id:{id} labels.env:dev"), false),
        (format!("id:{id} displayName:renamed*"), true),
        (format!("id:{id} name:\"Renamed project\""), true),
        (format!("id:{id} state:ACTIVE"), true),
        (format!("id:{id} labels:prod"), true),
        (format!("id:{}*", &id[..8]), true),
    ] {
        let found = ids(&ctx.get(&search(&q)).await.ok());
        assert_eq!(found.contains(&id), hit, "query {q}: {found:?}");
    }
    // Paging: pageSize 1 walks every match once.
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let mut q = format!("{}&pageSize=1", search("state:ACTIVE"));
        if !token.is_empty() {
            q.push_str(&format!("&pageToken={token}"));
        }
        let v = ctx.get(&q).await.ok();
        let page = ids(&v);
        assert!(page.len() <= 1, "{v}");
        seen.extend(page);
        match v["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_owned(),
            _ => break,
        }
    }
    assert!(
        seen.contains(&id) && seen.contains(&"keyplane-admin".to_owned()),
        "{seen:?}"
    );
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no project twice: {seen:?}");

    // Bad input: Google's error, nothing changes.
    let stored = ctx.get(&path).await.ok();
    let mut soft = Soft::default();
    let cases: Vec<(String, String, u16, &str)> = vec![
        (
            "?updateMask=projectId".into(),
            json!({"projectId": "other-id-123"}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "?updateMask=parent".into(),
            json!({"parent": "organizations/1"}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "?updateMask=name".into(),
            json!({}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "?updateMask=foo".into(),
            json!({}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "?updateMask=displayName".into(),
            json!({"displayName": "abc"}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "?updateMask=displayName".into(),
            json!({"displayName": "semi;colon"}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "?updateMask=labels".into(),
            json!({"labels": {"Env": "x"}}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "?updateMask=labels".into(),
            json!({"labels": {"env": "UPPER"}}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "?updateMask=displayName".into(),
            json!({"displayName": "Fine name", "etag": "W/\"stale\""}).to_string(),
            409,
            "ABORTED",
        ),
        (
            "".into(),
            json!({"displayName": "Fine name", "bogus": true}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        ("".into(), "not json".into(), 400, "INVALID_ARGUMENT"),
    ];
    for (query, body, code, status) in &cases {
        let r = patch_raw(&ctx, &format!("{path}{query}"), body).await;
        soft.check(|| r.err(*code, status));
        let now = ctx.get(&path).await.ok();
        soft.check(|| assert_eq!(now, stored, "{} changed the project", r.describe()));
    }
    for q in ["nosuchfield:x", "id:", "id:a OR id:b", "name:\"open"] {
        let r = ctx.get(&search(q)).await;
        soft.check(|| r.err(400, "INVALID_ARGUMENT"));
    }
    let r = ctx.get("/v3/projects:search?pageToken=bogus").await;
    soft.check(|| r.err(400, "INVALID_ARGUMENT"));
    soft.finish();

    // Delete: DELETE_REQUESTED, still readable, its keys stop working at once.
    assert_eq!(key_status(&ctx, &k.key_string).await, (200, None));
    let r = ctx.delete(&path).await;
    let op = r.ok();
    assert_eq!(
        op["metadata"]["@type"],
        "type.googleapis.com/google.cloud.resourcemanager.v3.DeleteProjectMetadata",
        "{}",
        r.describe()
    );
    assert_eq!(op["response"]["state"], "DELETE_REQUESTED");
    assert!(op["response"]["deleteTime"]
        .as_str()
        .is_some_and(is_rfc3339));
    let p = ctx.get(&path).await.ok();
    assert_eq!(p["state"], "DELETE_REQUESTED");
    assert_eq!(
        key_status(&ctx, &k.key_string).await,
        (403, Some("SERVICE_DISABLED".into()))
    );
    let listed = ctx.get("/v3/projects").await.ok().to_string();
    assert!(!listed.contains(&format!("\"{id}\"")), "hidden from list");
    let listed = ctx
        .get("/v3/projects?showDeleted=true&pageSize=1000")
        .await
        .ok()
        .to_string();
    assert!(
        listed.contains(&format!("\"{id}\"")),
        "listed with showDeleted"
    );
    assert!(ids(&ctx
        .get(&search(&format!("id:{id} state:DELETE_REQUESTED")))
        .await
        .ok())
    .contains(&id));
    // Nothing changes in a project pending deletion.
    ctx.delete(&path).await.err(400, "FAILED_PRECONDITION");
    patch(
        &ctx,
        &format!("{path}?updateMask=displayName"),
        &json!({"displayName": "Nope nope"}),
    )
    .await
    .err(400, "FAILED_PRECONDITION");
    ctx.post(
        &format!("/v2/projects/{id}/locations/global/keys"),
        &json!({}),
    )
    .await
    .err(400, "FAILED_PRECONDITION");

    // Undelete: ACTIVE again, the keys work again.
    let r = ctx.post(&format!("{path}:undelete"), &json!({})).await;
    let op = r.ok();
    assert_eq!(
        op["metadata"]["@type"],
        "type.googleapis.com/google.cloud.resourcemanager.v3.UndeleteProjectMetadata",
        "{}",
        r.describe()
    );
    assert_eq!(op["response"]["state"], "ACTIVE");
    assert!(op["response"].get("deleteTime").is_none());
    assert_eq!(key_status(&ctx, &k.key_string).await, (200, None));
    ctx.post(&format!("{path}:undelete"), &json!({}))
        .await
        .err(400, "FAILED_PRECONDITION");
    ctx.post(&format!("{path}:undelete"), &json!({"bogus": 1}))
        .await
        .err(400, "INVALID_ARGUMENT");
    // Unknown projects: 403 (no existence oracle).
    let other = unique_project_id("kp-none");
    ctx.delete(&format!("/v3/projects/{other}"))
        .await
        .err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");
    ctx.post(&format!("/v3/projects/{other}:undelete"), &json!({}))
        .await
        .err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");
}

// === Org Policy v2 ===

/// `organizations/N` of this server.
async fn organization(ctx: &Ctx) -> String {
    ctx.get("/v3/projects/keyplane-admin").await.ok()["parent"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Adds `role` for `member` to the organization's IAM policy.
async fn grant_on_organization(ctx: &Ctx, org: &str, role: &str, member: &str) {
    for _ in 0..5 {
        let mut policy = ctx
            .post(&format!("/v3/{org}:getIamPolicy"), &json!({}))
            .await
            .ok();
        let bindings = policy["bindings"].as_array_mut().expect("bindings");
        match bindings.iter_mut().find(|b| b["role"] == role) {
            Some(b) => {
                if b["members"].as_array().unwrap().contains(&json!(member)) {
                    return;
                }
                b["members"].as_array_mut().unwrap().push(json!(member));
            }
            None => bindings.push(json!({"role": role, "members": [member]})),
        }
        let r = ctx
            .post(
                &format!("/v3/{org}:setIamPolicy"),
                &json!({"policy": policy}),
            )
            .await;
        if r.status == 200 {
            return;
        }
    }
    panic!("could not grant {role} on {org}");
}

/// Creates a key bound to `email`; returns the finished Operation.
async fn create_bound_key(ctx: &Ctx, project: &str, email: &str) -> Value {
    let r = ctx
        .post(
            &format!("/v2/projects/{project}/locations/global/keys"),
            &json!({"displayName": "bound", "serviceAccountEmail": email,
                    "restrictions": {"apiTargets": [{"service": "aiplatform.googleapis.com"}]}}),
        )
        .await;
    let op = r.ok();
    assert_eq!(op["done"], true, "{}", r.describe());
    op
}

fn enforce_of(policy: &Value) -> Value {
    policy["spec"]["rules"][0]["enforce"].clone()
}

fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyplane"))
        .arg("--credentials")
        .arg(server.path("owner-credentials.json"))
        .arg("--server")
        .arg(&server.base)
        .args(args)
        .output()
        .expect("run keyplane")
}

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = cli(server, args);
    assert!(
        out.status.success(),
        "keyplane {} failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli_json(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let text = cli_ok(server, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn org_policy_gates_keys_bound_to_service_accounts() {
    let ctx = server().ctx().await;
    let org = organization(&ctx).await;
    let project_id = unique_project_id("kp-pol");
    let number = project_number(&ctx.create_project(&project_id).await);
    ctx.set_service(&project_id, GL, true).await;
    let policies = format!("/v2/projects/{project_id}/policies");
    let policy_path = format!("{policies}/{CONSTRAINT}");
    let policy_name = format!("projects/{number}/policies/{CONSTRAINT}");

    // Owners read policies but only policy administrators change them.
    let body = json!({"name": format!("projects/{project_id}/policies/{CONSTRAINT}"),
                      "spec": {"rules": [{"enforce": false}]}});
    ctx.post(&policies, &body)
        .await
        .err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");

    // A fresh installation enforces the constraint on its organization.
    let p = ctx
        .get(&format!("/v2/{org}/policies/{CONSTRAINT}"))
        .await
        .ok();
    assert_eq!(p["name"], format!("{org}/policies/{CONSTRAINT}"));
    assert_eq!(enforce_of(&p), true, "{p}");
    assert!(p["etag"].as_str().is_some_and(|e| !e.is_empty()), "{p}");
    assert!(
        p["spec"]["updateTime"].as_str().is_some_and(is_rfc3339),
        "{p}"
    );
    let eff = ctx
        .get(&format!("{policy_path}:getEffectivePolicy"))
        .await
        .ok();
    assert_eq!(
        eff["name"], policy_name,
        "responses name the project by number"
    );
    assert_eq!(enforce_of(&eff), true, "{eff}");
    assert!(
        eff.get("etag").is_none() && eff["spec"].get("etag").is_none(),
        "{eff}"
    );
    ctx.get(&policy_path).await.err(404, "NOT_FOUND");
    let constraints = ctx
        .get(&format!("/v2/projects/{project_id}/constraints"))
        .await
        .ok();
    assert_eq!(
        constraints["constraints"][0]["name"],
        format!("projects/{number}/constraints/{CONSTRAINT}")
    );
    assert_eq!(constraints["constraints"][0]["constraintDefault"], "ALLOW");
    assert!(constraints["constraints"][0]["booleanConstraint"].is_object());
    assert_eq!(ctx.get(&policies).await.ok(), json!({}));

    // A service account of the project.
    let r = ctx
        .post(
            &format!("/v1/projects/{project_id}/serviceAccounts"),
            &json!({"accountId": "bound-caller", "serviceAccount": {"displayName": "Bound"}}),
        )
        .await;
    let email = r.ok()["email"].as_str().unwrap().to_owned();

    // Enforced: 200 and an operation that failed with FAILED_PRECONDITION.
    let op = create_bound_key(&ctx, &project_id, &email).await;
    assert_eq!(op["error"]["code"], 9, "{op}");
    assert!(
        op["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("constraints/{CONSTRAINT}")),
        "{op}"
    );
    let violation = op["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure")
        .unwrap_or_else(|| panic!("no PreconditionFailure: {op}"))
        .clone();
    assert_eq!(
        violation["violations"][0]["type"],
        format!("constraints/{CONSTRAINT}")
    );
    assert_eq!(
        violation["violations"][0]["subject"],
        format!("projects/{number}")
    );
    // The failed operation is stored like any other.
    let polled = ctx
        .get(&format!("/v2/{}", op["name"].as_str().unwrap()))
        .await
        .ok();
    assert_eq!(polled["error"]["code"], 9, "{polled}");
    let listed = ctx
        .get(&format!("/v2/projects/{project_id}/locations/global/keys"))
        .await
        .ok();
    assert_eq!(listed, json!({}), "no key was made");

    grant_on_organization(
        &ctx,
        &org,
        "roles/orgpolicy.policyAdmin",
        "serviceAccount:owner@keyplane-admin.iam.gserviceaccount.com",
    )
    .await;

    // Bad policies: Google's error, nothing stored.
    let mut soft = Soft::default();
    let name = format!("projects/{project_id}/policies/{CONSTRAINT}");
    for (body, code, status, field) in [
        (
            json!({"name": name, "spec": {"rules": [{"allowAll": true}]}}),
            400,
            "INVALID_ARGUMENT",
            "policy.spec.rules[0]",
        ),
        (
            json!({"name": name, "spec": {"rules": [{"enforce": true}, {"enforce": false}]}}),
            400,
            "INVALID_ARGUMENT",
            "policy.spec.rules",
        ),
        (
            json!({"name": name, "spec": {"rules": [{"enforce": true}], "inheritFromParent": true}}),
            400,
            "INVALID_ARGUMENT",
            "policy.spec.inherit_from_parent",
        ),
        (
            json!({"name": name, "spec": {"rules": [{"enforce": true}], "reset": true}}),
            400,
            "INVALID_ARGUMENT",
            "policy.spec.rules",
        ),
        (
            json!({"name": name, "spec": {"rules": [{}]}}),
            400,
            "INVALID_ARGUMENT",
            "policy.spec.rules[0].enforce",
        ),
        (
            json!({"name": name, "spec": {}}),
            400,
            "INVALID_ARGUMENT",
            "policy.spec.rules",
        ),
        (
            json!({"name": name, "dryRunSpec": {"rules": [{"denyAll": true}]}}),
            400,
            "INVALID_ARGUMENT",
            "policy.dry_run_spec.rules[0]",
        ),
        (
            json!({"name": name, "alternate": {"spec": {}}}),
            400,
            "INVALID_ARGUMENT",
            "policy.alternate",
        ),
        (
            json!({"spec": {"rules": [{"enforce": false}]}}),
            400,
            "INVALID_ARGUMENT",
            "policy.name",
        ),
        (
            json!({"name": format!("projects/other-project/policies/{CONSTRAINT}"), "spec": {"rules": [{"enforce": false}]}}),
            400,
            "INVALID_ARGUMENT",
            "policy.name",
        ),
        (
            json!({"name": name, "spec": {"rules": [{"enforce": "maybe"}]}}),
            400,
            "INVALID_ARGUMENT",
            "spec.rules[0].enforce",
        ),
        (
            json!({"name": name, "spec": {"rules": [{"enforce": false}]}, "bogus": 1}),
            400,
            "INVALID_ARGUMENT",
            "",
        ),
        (
            json!({"name": format!("projects/{project_id}/policies/compute.disableSerialPortAccess"), "spec": {"rules": [{"enforce": true}]}}),
            404,
            "NOT_FOUND",
            "",
        ),
    ] {
        let r = ctx.post(&policies, &body).await;
        soft.check(|| {
            let e = r.err(code, status);
            if !field.is_empty() {
                assert_eq!(bad_field(&e), field, "{}", r.describe());
            }
        });
        let r = ctx.get(&policy_path).await;
        soft.check(|| r.err(404, "NOT_FOUND"));
    }
    soft.finish();

    // Not enforced on the project: keys may be bound to the project's accounts.
    let r = ctx.post(&policies, &body).await;
    let created = r.ok();
    assert_eq!(created["name"], policy_name, "{}", r.describe());
    assert_eq!(enforce_of(&created), false);
    let etag = created["etag"].as_str().unwrap().to_owned();
    assert_eq!(created["spec"]["etag"], etag);
    ctx.post(&policies, &body).await.err(409, "ALREADY_EXISTS");
    assert_eq!(ctx.get(&policy_path).await.ok(), created);
    assert_eq!(
        ctx.get(&policies).await.ok(),
        json!({"policies": [created.clone()]})
    );
    let eff = ctx
        .get(&format!("{policy_path}:getEffectivePolicy"))
        .await
        .ok();
    assert_eq!(enforce_of(&eff), false, "{eff}");
    // The organization's own effective policy is unchanged.
    let org_eff = ctx
        .get(&format!(
            "/v2/{org}/policies/{CONSTRAINT}:getEffectivePolicy"
        ))
        .await
        .ok();
    assert_eq!(enforce_of(&org_eff), true, "{org_eff}");

    let op = create_bound_key(&ctx, &project_id, &email).await;
    assert!(op.get("error").is_none(), "{op}");
    let bound = op["response"].clone();
    assert_eq!(bound["serviceAccountEmail"], email.as_str());
    let bound_path = key_path(bound["name"].as_str().unwrap());
    assert_eq!(
        ctx.get(&bound_path).await.ok()["serviceAccountEmail"],
        email.as_str()
    );
    // Only accounts of the key's own project, and only existing ones.
    for other in [
        "owner@keyplane-admin.iam.gserviceaccount.com".to_owned(),
        format!("nobody@{project_id}.iam.gserviceaccount.com"),
        "not-an-email".to_owned(),
    ] {
        let r = ctx
            .post(
                &format!("/v2/projects/{project_id}/locations/global/keys"),
                &json!({"serviceAccountEmail": other}),
            )
            .await;
        let e = r.err(400, "INVALID_ARGUMENT");
        assert_eq!(
            bad_field(&e),
            "key.service_account_email",
            "{}",
            r.describe()
        );
    }
    // The binding never changes, whatever the policy.
    patch(
        &ctx,
        &format!("{bound_path}?updateMask=serviceAccountEmail"),
        &json!({"serviceAccountEmail": email}),
    )
    .await
    .err_reason(
        400,
        "INVALID_ARGUMENT",
        "APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS",
    );
    // Echoing the binding back unchanged (read-modify-write without a mask) is fine.
    let echoed = key_op(
        &patch(
            &ctx,
            &bound_path,
            &json!({"displayName": "still bound", "serviceAccountEmail": email}),
        )
        .await,
    );
    assert_eq!(echoed["serviceAccountEmail"], email.as_str());
    // Binding a key that has none, without a mask: immutable while allowed.
    let plain = ctx.create_key(&project_id, None).await;
    let plain_path = key_path(plain["name"].as_str().unwrap());
    patch(&ctx, &plain_path, &json!({"serviceAccountEmail": email}))
        .await
        .err_reason(
            400,
            "INVALID_ARGUMENT",
            "APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS",
        );

    // Patch: stale etag, bad mask, mismatched name: errors and nothing changes.
    let mut soft = Soft::default();
    for (query, body, code, status) in [
        (
            "",
            json!({"etag": "stale", "spec": {"rules": [{"enforce": true}]}}),
            409,
            "ABORTED",
        ),
        (
            "?updateMask=name",
            json!({"spec": {"rules": [{"enforce": true}]}}),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "?updateMask=spec.rules",
            json!({"spec": {"rules": [{"enforce": true}]}}),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "",
            json!({"name": format!("projects/{project_id}/policies/other.constraint"), "spec": {"rules": [{"enforce": true}]}}),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "",
            json!({"spec": {"rules": [{"enforce": true, "values": {"allowedValues": ["x"]}}]}}),
            400,
            "INVALID_ARGUMENT",
        ),
    ] {
        let r = patch(&ctx, &format!("{policy_path}{query}"), &body).await;
        soft.check(|| r.err(code, status));
        let now = ctx.get(&policy_path).await.ok();
        soft.check(|| assert_eq!(now, created, "{} changed the policy", r.describe()));
    }
    ctx.delete(&format!("{policy_path}?etag=stale"))
        .await
        .err(409, "ABORTED");
    soft.finish();
    assert_eq!(ctx.get(&policy_path).await.ok(), created);

    // While enforced, binding a key (create or patch) is refused with the constraint named.
    let r = patch(
        &ctx,
        &format!("{policy_path}?updateMask=spec"),
        &json!({"etag": etag, "spec": {"rules": [{"enforce": true}]}}),
    )
    .await;
    let updated = r.ok();
    assert_eq!(enforce_of(&updated), true, "{}", r.describe());
    assert_ne!(updated["etag"], created["etag"]);
    assert_eq!(
        create_bound_key(&ctx, &project_id, &email).await["error"]["code"],
        9
    );
    let r = patch(&ctx, &plain_path, &json!({"serviceAccountEmail": email})).await;
    let op = r.ok();
    assert_eq!(op["error"]["code"], 9, "{}", r.describe());
    assert!(ctx
        .get(&plain_path)
        .await
        .ok()
        .get("serviceAccountEmail")
        .is_none());
    // Not retroactive: the key bound earlier keeps its binding.
    assert_eq!(
        ctx.get(&bound_path).await.ok()["serviceAccountEmail"],
        email.as_str()
    );

    // dryRunSpec is kept; a mask of dryRunSpec leaves spec alone.
    let r = patch(
        &ctx,
        &format!("{policy_path}?updateMask=dry_run_spec"),
        &json!({"dryRunSpec": {"rules": [{"enforce": false}]}, "spec": {"rules": [{"enforce": false}]}}),
    )
    .await;
    let with_dry_run = r.ok();
    assert_eq!(enforce_of(&with_dry_run), true, "{}", r.describe());
    assert_eq!(with_dry_run["dryRunSpec"]["rules"][0]["enforce"], false);
    // `reset`: the constraint's default (not enforced) regardless of the organization.
    let reset = patch(&ctx, &policy_path, &json!({"spec": {"reset": true}}))
        .await
        .ok();
    assert_eq!(reset["spec"]["reset"], true, "{reset}");
    let eff = ctx
        .get(&format!("{policy_path}:getEffectivePolicy"))
        .await
        .ok();
    assert_eq!(enforce_of(&eff), false, "{eff}");

    // The CLI: describe, enforce, stop enforcing, delete.
    let s = server();
    let shown = cli_json(
        s,
        &[
            "org-policies",
            "describe",
            CONSTRAINT,
            "--project",
            &project_id,
            "--effective",
        ],
    );
    assert_eq!(enforce_of(&shown), false, "{shown}");
    cli_ok(
        s,
        &[
            "org-policies",
            "enable-enforce",
            CONSTRAINT,
            "--project",
            &project_id,
        ],
    );
    assert_eq!(enforce_of(&ctx.get(&policy_path).await.ok()), true);
    let text = cli_ok(
        s,
        &[
            "org-policies",
            "describe",
            &format!("constraints/{CONSTRAINT}"),
            "--project",
            &project_id,
        ],
    );
    assert!(
        text.contains("enforced:") && text.contains("true"),
        "{text}"
    );
    cli_ok(
        s,
        &[
            "org-policies",
            "disable-enforce",
            CONSTRAINT,
            "--project",
            &project_id,
        ],
    );
    assert_eq!(
        enforce_of(
            &ctx.get(&format!("{policy_path}:getEffectivePolicy"))
                .await
                .ok()
        ),
        false
    );
    // `set --enforce true|false` does the same as the two verbs above.
    cli_ok(
        s,
        &[
            "org-policies",
            "set",
            CONSTRAINT,
            "--project",
            &project_id,
            "--enforce",
            "true",
        ],
    );
    assert_eq!(enforce_of(&ctx.get(&policy_path).await.ok()), true);
    cli_ok(
        s,
        &[
            "org-policies",
            "set",
            CONSTRAINT,
            "--project",
            &project_id,
            "--enforce",
            "false",
        ],
    );
    assert_eq!(enforce_of(&ctx.get(&policy_path).await.ok()), false);
    let org_shown = cli_json(s, &["org-policies", "describe", CONSTRAINT]);
    assert_eq!(org_shown["name"], format!("{org}/policies/{CONSTRAINT}"));
    cli_ok(
        s,
        &[
            "org-policies",
            "delete",
            CONSTRAINT,
            "--project",
            &project_id,
        ],
    );
    ctx.get(&policy_path).await.err(404, "NOT_FOUND");
    ctx.delete(&policy_path).await.err(404, "NOT_FOUND");
    patch(
        &ctx,
        &policy_path,
        &json!({"spec": {"rules": [{"enforce": true}]}}),
    )
    .await
    .err(404, "NOT_FOUND");
    // Back to the organization's policy.
    let eff = ctx
        .get(&format!("{policy_path}:getEffectivePolicy"))
        .await
        .ok();
    assert_eq!(enforce_of(&eff), true, "{eff}");
    let out = cli(
        s,
        &[
            "org-policies",
            "describe",
            CONSTRAINT,
            "--project",
            &project_id,
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"),
        "{out:?}"
    );

    // Other resources: folders, other organizations, unknown projects are 403; unknown
    // constraints 404; unknown verbs 404.
    for path in [
        format!("/v2/folders/123/policies/{CONSTRAINT}"),
        format!("/v2/organizations/1/policies/{CONSTRAINT}"),
        format!(
            "/v2/projects/{}/policies/{CONSTRAINT}",
            unique_project_id("kp-none")
        ),
    ] {
        ctx.get(&path)
            .await
            .err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");
    }
    ctx.get(&format!(
        "{policies}/compute.disableSerialPortAccess:getEffectivePolicy"
    ))
    .await
    .err(404, "NOT_FOUND");
    ctx.get(&format!("{policy_path}:frobnicate"))
        .await
        .err(404, "NOT_FOUND");

    // A project pending deletion keeps its policies readable but not writable.
    ctx.delete(&format!("/v3/projects/{project_id}")).await.ok();
    ctx.post(&policies, &body)
        .await
        .err(400, "FAILED_PRECONDITION");
    ctx.get(&format!("{policy_path}:getEffectivePolicy"))
        .await
        .ok();
    ctx.post(&format!("/v3/projects/{project_id}:undelete"), &json!({}))
        .await
        .ok();
}

// === CLI verbs ===

#[tokio::test]
async fn cli_keys_update_and_project_lifecycle() {
    let s = server();
    let ctx = s.ctx().await;
    let k = ctx.new_key("kp-cli").await;
    let id = k.project_id.clone();

    let key = cli_json(
        s,
        &[
            "keys",
            "update",
            &k.name,
            "--display-name",
            "cli renamed",
            "--allowed-ips",
            "127.0.0.1,10.0.0.0/8",
            "--api-target",
            &format!("{GL}:GenerateContent,ListModels"),
            "--api-target",
            "aiplatform.googleapis.com",
        ],
    );
    assert_eq!(key["displayName"], "cli renamed", "{key}");
    assert_eq!(
        key["restrictions"]["serverKeyRestrictions"]["allowedIps"],
        json!(["127.0.0.1", "10.0.0.0/8"])
    );
    assert_eq!(
        key["restrictions"]["apiTargets"],
        json!([{"service": GL, "methods": ["GenerateContent", "ListModels"]}, {"service": "aiplatform.googleapis.com"}])
    );
    assert_eq!(key_status(&ctx, &k.key_string).await, (200, None));
    // Referrers replace the IP restriction (one client restriction per key); targets kept.
    let key = cli_json(
        s,
        &[
            "keys",
            "update",
            &k.name,
            "--allowed-referrers",
            "*.example.com/*",
        ],
    );
    assert!(
        key["restrictions"].get("serverKeyRestrictions").is_none(),
        "{key}"
    );
    assert_eq!(
        key["restrictions"]["browserKeyRestrictions"]["allowedReferrers"],
        json!(["*.example.com/*"])
    );
    assert_eq!(
        key["restrictions"]["apiTargets"][1]["service"],
        "aiplatform.googleapis.com"
    );
    assert_eq!(
        key_status(&ctx, &k.key_string).await,
        (403, Some("API_KEY_HTTP_REFERRER_BLOCKED".into()))
    );
    let text = cli_ok(s, &["keys", "update", &k.name, "--clear-restrictions"]);
    assert!(text.contains("restrictions: none"), "{text}");
    assert_eq!(key_status(&ctx, &k.key_string).await, (200, None));
    // Nothing to update, conflicting flags, a bad IP: errors, exit status 1.
    for args in [
        vec!["keys", "update", k.name.as_str()],
        vec![
            "keys",
            "update",
            k.name.as_str(),
            "--allowed-ips",
            "1.2.3.4",
            "--allowed-referrers",
            "a.com",
        ],
        vec![
            "keys",
            "update",
            k.name.as_str(),
            "--allowed-ips",
            "1.2.3.999",
        ],
    ] {
        let out = cli(s, &args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!out.stderr.is_empty());
    }
    assert_eq!(
        ctx.get(&key_path(&k.name)).await.ok()["displayName"],
        "cli renamed"
    );

    // Projects: update labels and name, search, delete, undelete.
    let p = cli_json(
        s,
        &[
            "projects",
            "update",
            &id,
            "--display-name",
            "CLI project",
            "--update-labels",
            "env=dev,team=cli",
        ],
    );
    assert_eq!(p["displayName"], "CLI project");
    assert_eq!(p["labels"], json!({"env": "dev", "team": "cli"}));
    let p = cli_json(
        s,
        &[
            "projects",
            "update",
            &id,
            "--remove-labels",
            "team",
            "--update-labels",
            "tier=1",
        ],
    );
    assert_eq!(p["labels"], json!({"env": "dev", "tier": "1"}));
    let found = cli_json(
        s,
        &["projects", "search", &format!("id:{id} labels.tier:1")],
    );
    assert_eq!(found["projects"][0]["projectId"], id.as_str(), "{found}");
    let text = cli_ok(s, &["projects", "search", &format!("id:{id}")]);
    assert!(text.contains(&id) && text.contains("env=dev"), "{text}");
    let p = cli_json(s, &["projects", "update", &id, "--clear-labels"]);
    assert!(p.get("labels").is_none(), "{p}");

    let text = cli_ok(s, &["projects", "delete", &id]);
    assert!(text.contains("DELETE_REQUESTED"), "{text}");
    assert_eq!(
        key_status(&ctx, &k.key_string).await,
        (403, Some("SERVICE_DISABLED".into()))
    );
    let p = cli_json(s, &["projects", "describe", &id]);
    assert_eq!(p["state"], "DELETE_REQUESTED");
    assert!(!cli(s, &["projects", "delete", &id]).status.success());
    let p = cli_json(s, &["projects", "undelete", &id]);
    assert_eq!(p["state"], "ACTIVE");
    assert_eq!(key_status(&ctx, &k.key_string).await, (200, None));
}
