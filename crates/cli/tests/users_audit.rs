//! People (`user:EMAIL`: create, sign in, disable) and the audit log of control-plane
//! mutations, driven over HTTP and through the `keyplane` CLI.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

const PASSWORD: &str = "correct horse battery";

/// Runs the CLI with the owner's credentials and `stdin`; returns (ok, stdout, stderr).
fn cli(srv: &Server, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyplane"))
        .arg("--credentials")
        .arg(srv.path("owner-credentials.json"))
        .args(["--server", &srv.base])
        .args(args)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyplane");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for keyplane");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_ok(srv: &Server, args: &[&str], stdin: &str) -> String {
    let (ok, stdout, stderr) = cli(srv, args, stdin);
    assert!(
        ok,
        "keyplane {args:?} failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    stdout
}

fn unique_email(prefix: &str) -> String {
    format!("{}@Example.com", unique_project_id(prefix))
}

/// Creates a user with the CLI (password on stdin); returns the lowercased email.
fn create_user(srv: &Server, email: &str) -> String {
    let out = cli_ok(
        srv,
        &["users", "create", email, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let lower = email.to_lowercase();
    assert!(out.contains(&format!("user:{lower}")), "{out}");
    lower
}

async fn sign_in(ctx: &Ctx, email: &str, password: &str) -> Resp {
    let req = ctx
        .http
        .post(ctx.url("/v1/keyplane/auth:signIn"))
        .json(&json!({"email": email, "password": password}));
    ctx.send(format!("POST auth:signIn {email}"), req).await
}

/// A context carrying the user's token.
async fn user_ctx(srv: &Server, email: &str) -> Ctx {
    let mut ctx = Ctx::anonymous(&srv.base);
    let r = sign_in(&ctx, email, PASSWORD).await;
    let v = r.ok();
    assert_eq!(v["token_type"], "Bearer", "{}", r.describe());
    assert!(
        v["expires_in"].as_i64().unwrap_or(0) > 0,
        "{}",
        r.describe()
    );
    ctx.token = v["access_token"].as_str().expect("access_token").to_owned();
    ctx
}

/// Adds `member` to `role` on `projects/{project}` (read-modify-write with the etag).
async fn grant(owner: &Ctx, project: &str, role: &str, member: &str) {
    let mut policy = owner
        .post(&format!("/v3/projects/{project}:getIamPolicy"), &json!({}))
        .await
        .ok();
    let bindings = policy["bindings"].as_array().cloned().unwrap_or_default();
    let mut bindings: Vec<Value> = bindings;
    bindings.push(json!({"role": role, "members": [member]}));
    policy["bindings"] = Value::Array(bindings);
    owner
        .post(
            &format!("/v3/projects/{project}:setIamPolicy"),
            &json!({ "policy": policy }),
        )
        .await
        .ok();
}

async fn audit(owner: &Ctx, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let sep = if query.is_empty() { "" } else { "&" };
        let path = if token.is_empty() {
            format!("/v1/keyplane/auditLogs?{query}")
        } else {
            format!("/v1/keyplane/auditLogs?{query}{sep}pageToken={token}")
        };
        let v = owner.get(&path).await.ok();
        out.extend(v["auditLogs"].as_array().cloned().unwrap_or_default());
        match v["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_owned(),
            _ => return out,
        }
    }
    panic!("auditLogs never stopped paging");
}

#[tokio::test]
async fn users_sign_in_and_act_with_the_roles_granted_to_them() {
    let srv = server();
    let owner = srv.ctx().await;
    let email = create_user(srv, &unique_email("alice"));
    let member = format!("user:{email}");

    // The CLI lists the user.
    let list = cli_ok(srv, &["users", "list"], "");
    assert!(list.contains(&email) && list.contains("ENABLED"), "{list}");
    // The same email again: ALREADY_EXISTS.
    let (ok, _, stderr) = cli(srv, &["users", "create", &email], &format!("{PASSWORD}\n"));
    assert!(!ok && stderr.contains("ALREADY_EXISTS"), "{stderr}");

    let project = unique_project_id("users-p");
    owner.create_project(&project).await;
    owner.set_service(&project, GL, true).await;
    let other = unique_project_id("users-q");
    owner.create_project(&other).await;
    owner.set_service(&other, GL, true).await;

    let user = user_ctx(srv, &email.to_uppercase()).await;
    // No role yet: 403, on reads and on writes.
    user.get(&format!("/v3/projects/{project}"))
        .await
        .err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");
    user.post(
        &format!("/v2/projects/{project}/locations/global/keys"),
        &json!({}),
    )
    .await
    .err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");

    // Editor on one project: allowed there, still denied on the other.
    grant(&owner, &project, "roles/editor", &member).await;
    user.get(&format!("/v3/projects/{project}")).await.ok();
    let op = user
        .post(
            &format!("/v2/projects/{project}/locations/global/keys"),
            &json!({"displayName": "by a user"}),
        )
        .await
        .ok();
    assert_eq!(op["done"], true, "{op}");
    assert!(op.get("error").is_none(), "{op}");
    user.post(
        &format!("/v2/projects/{other}/locations/global/keys"),
        &json!({}),
    )
    .await
    .err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");
    // Managing users takes an organization-level role.
    let r = user.get("/v1/keyplane/users").await;
    r.err_reason(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED");
}

#[tokio::test]
async fn sign_in_failures_look_the_same() {
    let srv = server();
    let email = create_user(srv, &unique_email("bob"));
    let anon = Ctx::anonymous(&srv.base);

    let wrong = sign_in(&anon, &email, "not the password").await;
    let unknown = sign_in(&anon, &unique_email("nobody"), PASSWORD).await;
    let empty = sign_in(&anon, "", "").await;
    for r in [&wrong, &unknown, &empty] {
        r.err_reason(401, "UNAUTHENTICATED", "INVALID_CREDENTIALS");
    }
    assert_eq!(wrong.text, unknown.text);
    assert_eq!(wrong.text, empty.text);
    // The right one works.
    sign_in(&anon, &email, PASSWORD).await.ok();

    // Short passwords and bad emails are refused at creation; nothing is created.
    let owner = srv.ctx().await;
    let short = unique_email("short").to_lowercase();
    owner
        .post(
            "/v1/keyplane/users",
            &json!({"email": short, "password": "1234567"}),
        )
        .await
        .err(400, "INVALID_ARGUMENT");
    owner
        .post(
            "/v1/keyplane/users",
            &json!({"email": "not-an-email", "password": PASSWORD}),
        )
        .await
        .err(400, "INVALID_ARGUMENT");
    let users = owner.get("/v1/keyplane/users").await.ok();
    assert!(!users.to_string().contains(&short), "{users}");
    // Passwords never reach the server's log.
    assert!(!srv.stderr_text().contains(PASSWORD));
}

#[tokio::test]
async fn disabled_users_cannot_sign_in_and_lose_their_tokens() {
    let srv = server();
    let email = create_user(srv, &unique_email("carol"));
    let user = user_ctx(srv, &email).await;
    // Authenticated (403, not 401) before.
    user.get("/v1/keyplane/users")
        .await
        .err(403, "PERMISSION_DENIED");

    let out = cli_ok(srv, &["users", "disable", &email], "");
    assert!(out.contains("Disabled"), "{out}");
    user.get("/v1/keyplane/users")
        .await
        .err(401, "UNAUTHENTICATED");
    sign_in(&user, &email, PASSWORD).await.err_reason(
        401,
        "UNAUTHENTICATED",
        "INVALID_CREDENTIALS",
    );
    let list = cli_ok(srv, &["--format", "json", "users", "list"], "");
    let list: Value = serde_json::from_str(&list).expect("users list JSON");
    let me = list["users"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["email"] == email.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{email} not listed: {list}"));
    assert_eq!(me["disabled"], true);

    // Enabled again: a new sign-in works, the old token stays revoked.
    cli_ok(srv, &["users", "enable", &email], "");
    user.get("/v1/keyplane/users")
        .await
        .err(401, "UNAUTHENTICATED");
    let again = user_ctx(srv, &email).await;
    again
        .get("/v1/keyplane/users")
        .await
        .err(403, "PERMISSION_DENIED");
}

#[tokio::test]
async fn the_audit_log_records_who_did_what_and_the_result() {
    let srv = server();
    let owner = srv.ctx().await;
    let owner_member = format!("serviceAccount:{}", srv.owner_credentials().client_email);
    let email = create_user(srv, &unique_email("dave"));
    let user = user_ctx(srv, &email).await;

    let project = unique_project_id("audit-p");
    let created = owner.create_project(&project).await;
    let number = project_number(&created);
    owner.set_service(&project, GL, true).await;
    // Denied: the user has no role on the project.
    user.post(
        &format!("/v2/projects/{project}/locations/global/keys"),
        &json!({}),
    )
    .await
    .err(403, "PERMISSION_DENIED");
    // A read is not audited.
    owner.get(&format!("/v3/projects/{project}")).await.ok();

    let entries = audit(&owner, &format!("project={project}")).await;
    let enable = entries
        .iter()
        .find(|e| {
            e["resource"]
                .as_str()
                .is_some_and(|r| r.ends_with(":enable"))
        })
        .unwrap_or_else(|| panic!("no enable entry: {entries:?}"));
    assert_eq!(enable["principal"], owner_member.as_str());
    assert_eq!(enable["method"], "POST");
    assert_eq!(enable["result"], "allowed");
    assert_eq!(enable["status"], 200);
    assert!(enable["time"].as_str().is_some_and(is_rfc3339));
    let denied = entries
        .iter()
        .find(|e| e["result"] == "denied")
        .unwrap_or_else(|| panic!("no denied entry: {entries:?}"));
    assert_eq!(denied["principal"], format!("user:{email}").as_str());
    assert_eq!(
        denied["resource"],
        format!("/v2/projects/{project}/locations/global/keys").as_str()
    );
    assert_eq!(denied["status"], 403);
    assert!(entries.iter().all(|e| e["method"] != "GET"), "{entries:?}");
    assert!(
        entries.iter().all(|e| e["project"] == project.as_str()),
        "{entries:?}"
    );
    // By number, the same entries (the requests named the project by id).
    let by_number = audit(&owner, &format!("project={number}")).await;
    assert_eq!(by_number, entries);

    // `since`: only what happened afterwards.
    let last = entries.last().expect("entries")["time"]
        .as_str()
        .expect("time")
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mark = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    assert_ne!(mark, last);
    owner.set_service(&project, GL, false).await;
    let since = audit(&owner, &format!("project={project}&since={mark}")).await;
    assert_eq!(since.len(), 1, "{since:?}");
    assert!(since[0]["resource"]
        .as_str()
        .is_some_and(|r| r.ends_with(":disable")));

    // Unauthenticated mutations are recorded as denied, with no principal.
    Ctx::anonymous(&srv.base)
        .post(&format!("/v3/projects/{project}:undelete"), &json!({}))
        .await
        .err(401, "UNAUTHENTICATED");
    let after = audit(&owner, &format!("project={project}")).await;
    let anon = after.last().expect("entries");
    assert_eq!(anon["principal"], "");
    assert_eq!(anon["result"], "denied");
    assert_eq!(anon["status"], 401);

    // The CLI's table.
    let table = cli_ok(srv, &["audit", "--project", &project], "");
    let header = table.lines().next().unwrap_or_default();
    for col in ["TIME", "PRINCIPAL", "METHOD", "RESOURCE", "RESULT"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains(&format!("user:{email}")), "{table}");
    assert!(
        table.contains("denied") && table.contains("allowed"),
        "{table}"
    );
    let since_table = cli_ok(srv, &["audit", "--project", &number, "--since", &mark], "");
    assert!(since_table.contains(":disable"), "{since_table}");
    assert!(!since_table.contains(":enable"), "{since_table}");

    // Reading the log takes an organization-level permission.
    user.get("/v1/keyplane/auditLogs").await.err_reason(
        403,
        "PERMISSION_DENIED",
        "IAM_PERMISSION_DENIED",
    );
    owner
        .get("/v1/keyplane/auditLogs?since=yesterday")
        .await
        .err(400, "INVALID_ARGUMENT");
}

fn files_contain(dir: &Path, needle: &str) -> Option<String> {
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let p = entry.expect("entry").path();
        if p.is_file() && contains_bytes(&std::fs::read(&p).expect("read"), needle.as_bytes()) {
            return Some(p.display().to_string());
        }
    }
    None
}

#[tokio::test]
async fn key_strings_never_reach_the_audit_log() {
    let srv = server();
    let owner = srv.ctx().await;
    let key = owner.new_key("audit-k").await;
    let k = &key.key_string;
    owner
        .get(&format!("/v2/keys:lookupKey?keyString={k}"))
        .await
        .ok();
    // A mutating method with the key string in its query: audited, the query dropped.
    let r = owner
        .post(&format!("/v2/keys:lookupKey?keyString={k}"), &json!({}))
        .await;
    assert!(r.status >= 400, "{}", r.describe());
    owner
        .delete(&format!("/v2/{}?keyString={k}", key.name))
        .await
        .ok();

    let entries = audit(&owner, "").await;
    let text = serde_json::to_string(&entries).expect("json");
    assert!(text.contains("/v2/keys:lookupKey"), "{text}");
    assert!(text.contains(&key.name), "{text}");
    assert!(
        !text.contains(k.as_str()),
        "a key string is in the audit log"
    );
    assert!(
        !text.contains("keyString"),
        "a query string is in the audit log"
    );
    let table = cli_ok(srv, &["audit"], "");
    assert!(
        !table.contains(k.as_str()),
        "a key string is in `keyplane audit`"
    );
    if let Some(file) = files_contain(&srv.data_dir, k) {
        panic!("the key string is stored in plain text in {file}");
    }
}
