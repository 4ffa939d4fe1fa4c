//! First start of a data directory: what `keyplane serve` writes, with which modes, and
//! that a second start on the same directory rewrites nothing.

mod common;

use common::*;
use rsa::pkcs8::DecodePrivateKey;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn first_start_writes_secret_database_and_owner_credentials() {
    let server = Server::start();

    // Exactly one stdout line, the ready line.
    assert_eq!(
        server.stdout_lines(),
        vec![format!("keyplane listening on {}", server.base)],
        "stdout must hold exactly the ready line"
    );

    // server-secret: 64 hex characters, mode 0600.
    let secret_path = server.path("server-secret");
    assert!(secret_path.is_file(), "server-secret is missing");
    assert_eq!(mode(&secret_path), 0o600, "server-secret must be mode 0600");
    let secret = std::fs::read_to_string(&secret_path).unwrap();
    let secret = secret.trim();
    assert_eq!(
        secret.len(),
        64,
        "server-secret must be 64 hex chars: {secret:?}"
    );
    assert!(
        secret.chars().all(|c| c.is_ascii_hexdigit()),
        "server-secret must be hex: {secret:?}"
    );

    // The database.
    assert!(
        server.path("keyplane.db").is_file(),
        "keyplane.db is missing"
    );

    // owner-credentials.json: a Google service-account key file, mode 0600.
    let creds_path = server.path("owner-credentials.json");
    assert!(creds_path.is_file(), "owner-credentials.json is missing");
    assert_eq!(
        mode(&creds_path),
        0o600,
        "owner-credentials.json must be mode 0600"
    );
    let creds = server.owner_credentials();
    let j = &creds.json;
    assert_eq!(j["type"], "service_account", "{j}");
    assert_eq!(j["project_id"], "keyplane-admin", "{j}");
    assert_eq!(
        j["client_email"], "owner@keyplane-admin.iam.gserviceaccount.com",
        "{j}"
    );
    assert!(!creds.private_key_id.is_empty(), "private_key_id is empty");
    assert!(
        j["client_id"].as_str().is_some_and(|s| !s.is_empty()),
        "client_id must be a non-empty string: {j}"
    );
    assert!(
        creds.private_key.starts_with("-----BEGIN PRIVATE KEY-----"),
        "private_key must be a PKCS#8 PEM: {:?}",
        &creds.private_key[..creds.private_key.len().min(40)]
    );
    rsa::RsaPrivateKey::from_pkcs8_pem(&creds.private_key)
        .expect("private_key parses as a PKCS#8 RSA key");
    assert_eq!(creds.token_uri, format!("{}/token", server.base), "{j}");
    assert!(
        j["universe_domain"].as_str().is_some_and(|s| !s.is_empty()),
        "universe_domain must be a non-empty string: {j}"
    );

    // The key file works: it mints a token that the control plane accepts.
    let ctx = server.ctx().await;
    let admin = ctx.get("/v3/projects/keyplane-admin").await.ok();
    assert_eq!(admin["projectId"], "keyplane-admin", "{admin}");
    assert_eq!(admin["state"], "ACTIVE", "{admin}");
}

#[tokio::test]
async fn secrets_stay_out_of_the_database() {
    let server = Server::start();
    let secret = std::fs::read_to_string(server.path("server-secret")).unwrap();
    let creds = server.owner_credentials();
    // Make the database do some work first.
    let ctx = server.ctx().await;
    ctx.get("/v3/projects").await.ok();

    let mut db = Vec::new();
    for f in ["keyplane.db", "keyplane.db-wal", "keyplane.db-shm"] {
        if let Ok(bytes) = std::fs::read(server.path(f)) {
            db.extend_from_slice(&bytes);
        }
    }
    assert!(
        !contains_bytes(&db, secret.trim().as_bytes()),
        "the server secret is stored in the database"
    );
    // A line from the middle of the private key's base64 body.
    let pem_lines: Vec<&str> = creds.private_key.lines().collect();
    let probe = pem_lines[pem_lines.len() / 2];
    assert!(probe.len() >= 32, "unexpected PEM layout: {probe:?}");
    assert!(
        !contains_bytes(&db, probe.as_bytes()),
        "the owner's private key is stored in the database"
    );
}

#[tokio::test]
async fn second_start_rewrites_nothing_and_sigterm_is_graceful() {
    let mut server = Server::start();
    let files = ["server-secret", "owner-credentials.json"];
    let before: Vec<(Vec<u8>, std::fs::Metadata)> = files
        .iter()
        .map(|f| {
            let p = server.path(f);
            (std::fs::read(&p).unwrap(), std::fs::metadata(&p).unwrap())
        })
        .collect();

    let status = server.stop().expect("the server was running");
    assert!(
        status.success(),
        "SIGTERM must shut the server down gracefully (exit 0), got {status:?}\n--- stderr ---\n{}",
        server.stderr_text()
    );

    // Let a rewrite be visible in the mtime even on coarse file systems.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    server.restart();
    assert_eq!(server.starts(), 2);

    for (f, (bytes, meta)) in files.iter().zip(&before) {
        let p = server.path(f);
        let now_bytes = std::fs::read(&p).unwrap();
        let now_meta = std::fs::metadata(&p).unwrap();
        assert!(now_bytes == *bytes, "{f} changed on the second start");
        assert_eq!(
            now_meta.modified().unwrap(),
            meta.modified().unwrap(),
            "{f} was rewritten on the second start (mtime changed)"
        );
        assert_eq!(
            now_meta.ino(),
            meta.ino(),
            "{f} was replaced on the second start (inode changed)"
        );
        assert_eq!(mode(&p), 0o600, "{f} must stay mode 0600");
    }

    // One ready line per start, nothing else on stdout.
    let lines = server.stdout_lines();
    assert_eq!(lines.len(), 2, "stdout: {lines:?}");
    assert!(lines
        .iter()
        .all(|l| l == &format!("keyplane listening on {}", server.base)));

    // The unchanged key file still mints tokens.
    let ctx = server.ctx().await;
    ctx.get("/v3/projects/keyplane-admin").await.ok();
}
