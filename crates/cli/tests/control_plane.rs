//! Resource Manager v3 projects, Service Usage v1 and API Keys v2, on Google's wire.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

const PROJECT_TYPE: &str = "type.googleapis.com/google.cloud.resourcemanager.v3.Project";
const KEY_TYPE: &str = "type.googleapis.com/google.api.apikeys.v2.Key";

/// All projects, following nextPageToken.
async fn list_all_projects(ctx: &Ctx) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let path = if token.is_empty() {
            "/v3/projects".to_owned()
        } else {
            format!("/v3/projects?pageToken={token}")
        };
        let v = ctx.get(&path).await.ok();
        if let Some(items) = v["projects"].as_array() {
            out.extend(items.iter().cloned());
        }
        match v["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_owned(),
            _ => return out,
        }
    }
    panic!("GET /v3/projects never stopped paging");
}

fn check_project(p: &Value, project_id: &str, display_name: &str) {
    project_number(p);
    assert_eq!(p["projectId"], project_id, "{p}");
    assert_eq!(p["displayName"], display_name, "{p}");
    assert_eq!(p["state"], "ACTIVE", "{p}");
    let parent = p["parent"].as_str().unwrap_or_default();
    let org = parent.strip_prefix("organizations/").unwrap_or_default();
    assert!(
        !org.is_empty() && org.chars().all(|c| c.is_ascii_digit()),
        "parent must be organizations/N: {p}"
    );
    assert!(
        p["createTime"].as_str().is_some_and(is_rfc3339),
        "createTime must be RFC 3339: {p}"
    );
}

#[tokio::test]
async fn projects_create_get_list() {
    let ctx = server().ctx().await;
    let id = unique_project_id("cp-proj");
    let r = ctx
        .post(
            "/v3/projects",
            &json!({"projectId": id, "displayName": "My Project"}),
        )
        .await;
    let op = r.ok();
    assert!(
        op["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("operations/cp")),
        "operation name must start operations/cp\n{}",
        r.describe()
    );
    assert_eq!(op["done"], true, "{}", r.describe());
    assert!(op.get("error").is_none(), "{}", r.describe());
    let p = &op["response"];
    assert_eq!(p["@type"], PROJECT_TYPE, "{}", r.describe());
    check_project(p, &id, "My Project");
    let number = project_number(p);

    // GET by id and by number: same project, named by number.
    for key in [id.as_str(), number.as_str()] {
        let got = ctx.get(&format!("/v3/projects/{key}")).await.ok();
        check_project(&got, &id, "My Project");
        assert_eq!(got["name"], format!("projects/{number}"), "{got}");
        assert!(
            got.get("@type").is_none(),
            "a plain GET has no @type: {got}"
        );
    }

    // The list holds the admin project and this one.
    let all = list_all_projects(&ctx).await;
    let ids: Vec<&str> = all.iter().filter_map(|p| p["projectId"].as_str()).collect();
    assert!(ids.contains(&"keyplane-admin"), "list: {ids:?}");
    assert!(ids.contains(&id.as_str()), "list: {ids:?}");
    let mine = all.iter().find(|p| p["projectId"] == id.as_str()).unwrap();
    assert_eq!(mine["name"], format!("projects/{number}"), "{mine}");
}

#[tokio::test]
async fn project_errors() {
    let ctx = server().ctx().await;
    let id = unique_project_id("cp-dup");
    ctx.create_project(&id).await;

    // Duplicate projectId.
    ctx.post(
        "/v3/projects",
        &json!({"projectId": id, "displayName": "Again"}),
    )
    .await
    .err(409, "ALREADY_EXISTS");

    // Invalid projectIds.
    for bad in [
        "UPPER",
        "Upper-case-1",
        "ab",
        "1starts-with-digit",
        "trailing-",
    ] {
        ctx.post(
            "/v3/projects",
            &json!({"projectId": bad, "displayName": "Bad"}),
        )
        .await
        .err(400, "INVALID_ARGUMENT");
    }

    // Unknown project: 403 as Google answers, by id or number.
    for unknown in [unique_project_id("cp-nothere"), "999999999999".to_owned()] {
        let r = ctx.get(&format!("/v3/projects/{unknown}")).await;
        let e = r.err(403, "PERMISSION_DENIED");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("denied on resource") && msg.contains("(or it may not exist)"),
            "message should read like Google's \"Permission '...' denied on resource '...' (or it may not exist).\"\n{}",
            r.describe()
        );
    }
}

#[tokio::test]
async fn service_usage_enable_get_list_disable() {
    let ctx = server().ctx().await;
    let id = unique_project_id("cp-svc");
    let number = project_number(&ctx.create_project(&id).await);
    let svc_path = format!("/v1/projects/{id}/services/{GL}");
    let svc_name = format!("projects/{number}/services/{GL}");

    // New projects do not have the Generative Language API.
    let s = ctx.get(&svc_path).await.ok();
    assert_eq!(
        s["state"], "DISABLED",
        "a new project must not have {GL}: {s}"
    );
    let enabled = ctx
        .get(&format!("/v1/projects/{id}/services?filter=state:ENABLED"))
        .await
        .ok();
    let names: Vec<&str> = enabled["services"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(!names.contains(&svc_name.as_str()), "{enabled}");

    // Enable.
    let r = ctx.post(&format!("{svc_path}:enable"), &json!({})).await;
    let op = r.ok();
    assert_eq!(op["done"], true, "{}", r.describe());
    assert!(
        op["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("operations/")),
        "{}",
        r.describe()
    );
    assert_eq!(
        op["response"]["@type"],
        "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
        "{}",
        r.describe()
    );
    assert_eq!(
        op["response"]["service"]["name"],
        svc_name,
        "{}",
        r.describe()
    );
    assert_eq!(
        op["response"]["service"]["state"],
        "ENABLED",
        "{}",
        r.describe()
    );

    let s = ctx.get(&svc_path).await.ok();
    assert_eq!(s["state"], "ENABLED", "{s}");
    assert_eq!(s["name"], svc_name, "{s}");
    // By number too.
    let s = ctx
        .get(&format!("/v1/projects/{number}/services/{GL}"))
        .await
        .ok();
    assert_eq!(s["state"], "ENABLED", "{s}");

    let enabled = ctx
        .get(&format!("/v1/projects/{id}/services?filter=state:ENABLED"))
        .await
        .ok();
    let list = enabled["services"].as_array().cloned().unwrap_or_default();
    assert!(
        list.iter().any(|s| s["name"] == svc_name.as_str()),
        "enabled list must contain {svc_name}: {enabled}"
    );
    assert!(
        list.iter().all(|s| s["state"] == "ENABLED"),
        "filter=state:ENABLED returned other states: {enabled}"
    );

    // Disable.
    let r = ctx.post(&format!("{svc_path}:disable"), &json!({})).await;
    let op = r.ok();
    assert_eq!(op["done"], true, "{}", r.describe());
    assert_eq!(
        op["response"]["@type"],
        "type.googleapis.com/google.api.serviceusage.v1.DisableServiceResponse",
        "{}",
        r.describe()
    );
    assert_eq!(
        op["response"]["service"]["state"],
        "DISABLED",
        "{}",
        r.describe()
    );
    let s = ctx.get(&svc_path).await.ok();
    assert_eq!(s["state"], "DISABLED", "{s}");
    let enabled = ctx
        .get(&format!("/v1/projects/{id}/services?filter=state:ENABLED"))
        .await
        .ok();
    assert!(
        !enabled.to_string().contains(&svc_name),
        "disabled service still listed as enabled: {enabled}"
    );
}

#[tokio::test]
async fn unknown_service_is_service_config_not_found() {
    let ctx = server().ctx().await;
    let id = unique_project_id("cp-nosvc");
    ctx.create_project(&id).await;
    let svc = "no-such-api.googleapis.com";
    ctx.post(
        &format!("/v1/projects/{id}/services/{svc}:enable"),
        &json!({}),
    )
    .await
    .err_reason(
        403,
        "PERMISSION_DENIED",
        "SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED",
    );
    ctx.get(&format!("/v1/projects/{id}/services/{svc}"))
        .await
        .err_reason(
            403,
            "PERMISSION_DENIED",
            "SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED",
        );
}

fn check_key(k: &Value, number: &str, key_id: &str) {
    assert_eq!(
        k["name"],
        format!("projects/{number}/locations/global/keys/{key_id}"),
        "{k}"
    );
    let uid = k["uid"].as_str().unwrap_or_default();
    assert!(
        uid.len() == 36 && uid.chars().filter(|c| *c == '-').count() == 4,
        "uid must be a UUID: {k}"
    );
    assert!(k["createTime"].as_str().is_some_and(is_rfc3339), "{k}");
    assert!(k["updateTime"].as_str().is_some_and(is_rfc3339), "{k}");
    assert!(
        k["etag"].as_str().is_some_and(|e| !e.is_empty()),
        "etag: {k}"
    );
}

#[tokio::test]
async fn api_key_lifecycle() {
    let s = server();
    let ctx = s.ctx().await;
    let id = unique_project_id("cp-keys");
    let number = project_number(&ctx.create_project(&id).await);
    ctx.set_service(&id, GL, true).await;

    // Create.
    let r = ctx
        .post(
            &format!("/v2/projects/{id}/locations/global/keys?keyId=k1"),
            &json!({"displayName": "Test key"}),
        )
        .await;
    let op = r.ok();
    let op_name = op["name"].as_str().unwrap_or_default().to_owned();
    assert!(
        op_name.starts_with(&format!("operations/akmf.p7-{number}-")),
        "operation name must be operations/akmf.p7-NUMBER-...\n{}",
        r.describe()
    );
    assert_eq!(op["done"], true, "{}", r.describe());
    let key = &op["response"];
    assert_eq!(key["@type"], KEY_TYPE, "{}", r.describe());
    check_key(key, &number, "k1");
    assert_eq!(key["displayName"], "Test key", "{key}");
    let key_string = key["keyString"].as_str().unwrap_or_default().to_owned();
    assert!(
        is_api_key(&key_string),
        "keyString must be AIza + 35 chars: {key}"
    );
    let last4 = &key_string[35..];
    let masked = key["maskedKeyString"].as_str().unwrap_or_default();
    assert!(
        masked.ends_with(last4) && !masked.contains(&key_string[..20]),
        "maskedKeyString must show only the last 4 characters: {key}"
    );
    let key_name = format!("projects/{number}/locations/global/keys/k1");

    // The operation can be polled.
    let polled = ctx.get(&format!("/v2/{op_name}")).await.ok();
    assert_eq!(polled["name"], op_name.as_str(), "{polled}");
    assert_eq!(polled["done"], true, "{polled}");
    assert_eq!(polled["response"]["name"], key_name.as_str(), "{polled}");

    // List (by id and by number): no keyString, maskedKeyString present.
    for parent in [id.as_str(), number.as_str()] {
        let list = ctx
            .get(&format!("/v2/projects/{parent}/locations/global/keys"))
            .await
            .ok();
        let keys = list["keys"].as_array().cloned().unwrap_or_default();
        let k = keys
            .iter()
            .find(|k| k["name"] == key_name.as_str())
            .unwrap_or_else(|| panic!("list must contain {key_name}: {list}"));
        assert!(
            k.get("keyString").is_none(),
            "list must not return keyString: {k}"
        );
        assert!(
            k["maskedKeyString"]
                .as_str()
                .is_some_and(|m| m.ends_with(last4)),
            "{k}"
        );
        check_key(k, &number, "k1");
        assert!(!list.to_string().contains(&key_string), "{list}");
    }

    // Get: no keyString.
    let got = ctx.get(&format!("/v2/{key_name}")).await.ok();
    check_key(&got, &number, "k1");
    assert_eq!(got["displayName"], "Test key", "{got}");
    assert!(
        got.get("keyString").is_none(),
        "GET must not return keyString: {got}"
    );
    // Also addressable with the project id in the path.
    let by_id = ctx
        .get(&format!("/v2/projects/{id}/locations/global/keys/k1"))
        .await
        .ok();
    assert_eq!(by_id["name"], key_name.as_str(), "{by_id}");

    // keyString.
    let ks = ctx.get(&format!("/v2/{key_name}/keyString")).await.ok();
    assert_eq!(ks["keyString"], key_string.as_str(), "{ks}");

    // lookupKey.
    let lk = ctx
        .get(&format!("/v2/keys:lookupKey?keyString={key_string}"))
        .await
        .ok();
    assert_eq!(lk["parent"], format!("projects/{number}"), "{lk}");
    assert_eq!(lk["name"], key_name.as_str(), "{lk}");

    // The key works on the data plane.
    let count = json!({"contents": [{"parts": [{"text": "hello"}]}]});
    let count_path = format!("/v1beta/models/{MODEL}:countTokens");
    ctx.gemini_post(&key_string, &count_path, &count).await.ok();

    // Delete with a stale etag: ABORTED, and the key still works.
    ctx.delete(&format!("/v2/{key_name}?etag=definitely-not-the-etag"))
        .await
        .err(409, "ABORTED");
    ctx.gemini_post(&key_string, &count_path, &count).await.ok();

    // Delete (with the right etag).
    let etag = got["etag"].as_str().unwrap().to_owned();
    let etag_q: String = etag
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let r = ctx.delete(&format!("/v2/{key_name}?etag={etag_q}")).await;
    let op = r.ok();
    assert_eq!(op["done"], true, "{}", r.describe());
    assert_eq!(op["response"]["@type"], KEY_TYPE, "{}", r.describe());
    assert_eq!(
        op["response"]["name"],
        key_name.as_str(),
        "{}",
        r.describe()
    );
    assert!(
        op["response"]["deleteTime"]
            .as_str()
            .is_some_and(is_rfc3339),
        "the deleted key must carry deleteTime\n{}",
        r.describe()
    );

    // Deleted: refused on the data plane, hidden from list unless showDeleted.
    ctx.gemini_post(&key_string, &count_path, &count)
        .await
        .err_reason(400, "INVALID_ARGUMENT", "API_KEY_INVALID");
    let list = ctx
        .get(&format!("/v2/projects/{id}/locations/global/keys"))
        .await
        .ok();
    assert!(
        !list.to_string().contains(&key_name),
        "a deleted key must be hidden from list: {list}"
    );
    let list = ctx
        .get(&format!(
            "/v2/projects/{id}/locations/global/keys?showDeleted=true"
        ))
        .await
        .ok();
    let k = list["keys"]
        .as_array()
        .and_then(|a| a.iter().find(|k| k["name"] == key_name.as_str()).cloned())
        .unwrap_or_else(|| panic!("showDeleted=true must list the deleted key: {list}"));
    assert!(k["deleteTime"].is_string(), "{k}");
    // GET still answers, with deleteTime.
    let got = ctx.get(&format!("/v2/{key_name}")).await.ok();
    assert!(got["deleteTime"].is_string(), "{got}");

    // Undelete: works again.
    let r = ctx
        .post(&format!("/v2/{key_name}:undelete"), &json!({}))
        .await;
    let op = r.ok();
    assert_eq!(op["done"], true, "{}", r.describe());
    assert_eq!(
        op["response"]["name"],
        key_name.as_str(),
        "{}",
        r.describe()
    );
    assert!(
        op["response"].get("deleteTime").is_none(),
        "an undeleted key has no deleteTime\n{}",
        r.describe()
    );
    ctx.gemini_post(&key_string, &count_path, &count).await.ok();
    let list = ctx
        .get(&format!("/v2/projects/{id}/locations/global/keys"))
        .await
        .ok();
    assert!(list.to_string().contains(&key_name), "{list}");
}

#[tokio::test]
async fn key_creation_requires_the_generative_language_api() {
    let ctx = server().ctx().await;
    let id = unique_project_id("cp-nogl");
    ctx.create_project(&id).await;
    let r = ctx
        .post(
            &format!("/v2/projects/{id}/locations/global/keys?keyId=k1"),
            &json!({"displayName": "Test key"}),
        )
        .await;
    let e = r.err(403, "PERMISSION_DENIED");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Failed to generate API key: permission denied."),
        "{}",
        r.describe()
    );
    r.err_reason(403, "PERMISSION_DENIED", "SERVICE_DISABLED");

    // After enabling, the same call succeeds.
    ctx.set_service(&id, GL, true).await;
    let key = ctx.create_key(&id, Some("k1")).await;
    assert!(is_api_key(key["keyString"].as_str().unwrap_or("")), "{key}");
}

#[tokio::test]
async fn duplicate_key_id_completes_with_already_exists() {
    let ctx = server().ctx().await;
    let id = unique_project_id("cp-dupkey");
    ctx.create_project(&id).await;
    ctx.set_service(&id, GL, true).await;
    ctx.create_key(&id, Some("same")).await;
    let r = ctx
        .post(
            &format!("/v2/projects/{id}/locations/global/keys?keyId=same"),
            &json!({"displayName": "Again"}),
        )
        .await;
    let op = r.ok();
    assert_eq!(op["done"], true, "{}", r.describe());
    assert!(op.get("response").is_none(), "{}", r.describe());
    let e = &op["error"];
    assert_eq!(e["code"], 6, "{}", r.describe());
    assert_eq!(
        e["message"],
        "A key with this id already exists.",
        "{}",
        r.describe()
    );
    let info = error_info(e).unwrap_or_else(|| panic!("no ErrorInfo\n{}", r.describe()));
    assert_eq!(
        info["reason"],
        "FLOW_APIKEY_ALREADY_EXISTS",
        "{}",
        r.describe()
    );

    // Still exactly one key with that id.
    let list = ctx
        .get(&format!("/v2/projects/{id}/locations/global/keys"))
        .await
        .ok();
    assert_eq!(list["keys"].as_array().map(|a| a.len()), Some(1), "{list}");
}

#[tokio::test]
async fn key_without_key_id_gets_a_uuid_name() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("cp-uuid").await;
    let id = key.name.rsplit('/').next().unwrap();
    assert!(
        id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4,
        "a key created without keyId is named by a UUID: {}",
        key.name
    );
    assert!(is_api_key(&key.key_string));
}

#[tokio::test]
async fn lookup_of_an_unknown_key_is_not_found() {
    let ctx = server().ctx().await;
    ctx.get(&format!("/v2/keys:lookupKey?keyString={}", unknown_key()))
        .await
        .err(404, "NOT_FOUND");
}

#[tokio::test]
async fn key_calls_on_unknown_projects_and_keys() {
    let ctx = server().ctx().await;
    let nothere = unique_project_id("cp-nokeyproj");
    ctx.get(&format!("/v2/projects/{nothere}/locations/global/keys"))
        .await
        .err(403, "PERMISSION_DENIED");
    let key = ctx.new_key("cp-nokey").await;
    let missing = format!(
        "projects/{}/locations/global/keys/does-not-exist",
        key.project_number
    );
    let r = ctx.get(&format!("/v2/{missing}")).await;
    let e = r.status_error();
    assert!(
        r.status == 404 || r.status == 403,
        "an unknown key must be 404 or 403\n{}",
        r.describe()
    );
    let _ = e;
}

#[tokio::test]
async fn keys_are_never_stored_or_logged_in_plain_text() {
    // Its own server, logging at debug level, so that every log line is examined.
    let mut s = Server::start_with(Options {
        env: vec![
            ("RUST_LOG".into(), "debug".into()),
            ("KEYPLANE_LOG".into(), "debug".into()),
        ],
        ..Options::default()
    });
    let ctx = s.ctx().await;
    let key = ctx.new_key("cp-leak").await;
    let k = key.key_string.clone();

    // Use it every way a caller can: header, query parameter, getKeyString, lookupKey.
    let count = json!({"contents": [{"parts": [{"text": "hello"}]}]});
    ctx.gemini_post(&k, &format!("/v1beta/models/{MODEL}:countTokens"), &count)
        .await
        .ok();
    let path = format!("/v1beta/models/{MODEL}:countTokens?key={k}");
    ctx.send(
        format!("POST {path}"),
        ctx.http.post(ctx.url(&path)).json(&count),
    )
    .await
    .ok();
    ctx.get(&format!("/v2/{}/keyString", key.name)).await.ok();
    ctx.get(&format!("/v2/keys:lookupKey?keyString={k}"))
        .await
        .ok();
    // A failing call too.
    ctx.gemini_post(&k, "/v1beta/models/no-such-model:countTokens", &count)
        .await
        .err(404, "NOT_FOUND");

    let data_dir = s.data_dir.clone();
    let check_files = |when: &str| {
        for entry in std::fs::read_dir(&data_dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !contains_bytes(&bytes, k.as_bytes()),
                    "{when}: the key string is stored in plain text in {}",
                    p.display()
                );
            }
        }
    };
    check_files("while running");
    let _ = s.stop();
    check_files("after shutdown");
    let stderr = s.stderr_bytes();
    assert!(
        String::from_utf8_lossy(&stderr).contains("DEBUG"),
        "the server was asked for debug logs (RUST_LOG=debug) but wrote none; nothing to examine"
    );
    assert!(
        !contains_bytes(&stderr, k.as_bytes()),
        "the key string appears in the server's log:\n{}",
        String::from_utf8_lossy(&stderr)
            .lines()
            .filter(|l| l.contains(&k))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The tail is not the key, but make sure the middle of it is not logged either.
    assert!(
        !contains_bytes(&stderr, &k.as_bytes()[4..30]),
        "part of the key string appears in the server's log"
    );
}
