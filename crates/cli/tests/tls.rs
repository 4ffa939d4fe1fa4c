//! `keyplane serve --tls-cert --tls-key`: the same server over HTTPS (a self-signed
//! certificate for 127.0.0.1, made here with rcgen), and the refusals of unusable files,
//! which stop the server before it starts, with a message that names the file and never
//! quotes the key.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MODEL: &str = "gemini-2.5-flash";

struct Pem {
    cert: String,
    key: String,
}

fn self_signed() -> Pem {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("make a self-signed certificate");
    Pem {
        cert: cert.pem(),
        key: key_pair.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write a PEM file");
    p
}

fn https_client(cert_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_server_speaks_https() {
    let dir = tempfile::tempdir().unwrap();
    let pem = self_signed();
    let cert = write(dir.path(), "cert.pem", &pem.cert);
    let key = write(dir.path(), "key.pem", &pem.key);
    let s = Server::start_with(Options {
        args: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        ..Options::default()
    });
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);

    // Control plane and data plane over HTTPS: an owner token from /token, a new key, a
    // model list and a generation with it, and Google's error for a bad key.
    let mut ctx = Ctx::anonymous(&s.base);
    ctx.http = https_client(&pem.cert);
    ctx.token = ctx.owner_token(&s.owner_credentials()).await;
    let k = ctx.new_key("tls").await;
    let models = ctx.gemini_get(&k.key_string, "/v1beta/models").await.ok();
    assert!(models["models"].as_array().is_some_and(|m| !m.is_empty()));
    let body = json!({"contents": [{"parts": [{"text": "Say hi."}]}],
                      "generationConfig": {"maxOutputTokens": 4}});
    let r = ctx
        .gemini_post(
            &k.key_string,
            &format!("/v1beta/models/{MODEL}:generateContent"),
            &body,
        )
        .await
        .ok();
    assert!(!candidate_text(&r).is_empty(), "{r}");
    ctx.gemini_post(
        &unknown_key(),
        &format!("/v1beta/models/{MODEL}:countTokens"),
        &body,
    )
    .await
    .err_reason(400, "INVALID_ARGUMENT", "API_KEY_INVALID");

    // Plain HTTP on the TLS port, and a client that does not trust the certificate: each
    // fails on its own connection, and the server goes on serving.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/v1beta/models", s.addr))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| !r.status().is_success()),
        "plain HTTP must not be served on the TLS port: {plain:?}"
    );
    let untrusting = reqwest::Client::new()
        .get(format!("{}/v1beta/models", s.base))
        .send()
        .await;
    assert!(
        untrusting.is_err(),
        "an untrusted certificate must fail the handshake"
    );
    ctx.gemini_get(&k.key_string, "/v1beta/models").await.ok();
}

/// Runs `keyplane serve` with these arguments and expects it to exit non-zero at once;
/// returns its stderr.
fn refused(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keyplane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("KEYPLANE_TLS_CERT")
        .env_remove("KEYPLANE_TLS_KEY")
        .output()
        .expect("run keyplane serve");
    assert!(
        !out.status.success(),
        "serve {args:?} must fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "serve {args:?} must not listen"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unusable_tls_files_stop_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let a = self_signed();
    let b = self_signed();
    let cert = write(dir.path(), "cert.pem", &a.cert);
    let key = write(dir.path(), "key.pem", &a.key);
    let other_key = write(dir.path(), "other-key.pem", &b.key);
    let junk = write(dir.path(), "junk.pem", "not a PEM file\n");
    let missing = dir.path().join("missing.pem");
    let (cert, key, other_key, junk, missing) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        other_key.to_str().unwrap(),
        junk.to_str().unwrap(),
        missing.to_str().unwrap(),
    );

    let cases: &[(&[&str], &str)] = &[
        (
            &["--tls-cert", missing, "--tls-key", key],
            "cannot read the certificate file",
        ),
        (
            &["--tls-cert", cert, "--tls-key", missing],
            "cannot read the key file",
        ),
        (
            &["--tls-cert", junk, "--tls-key", key],
            "holds no certificate",
        ),
        (
            &["--tls-cert", cert, "--tls-key", junk],
            "holds no private key",
        ),
        (
            &["--tls-cert", cert, "--tls-key", cert],
            "holds no private key",
        ),
        (
            &["--tls-cert", cert, "--tls-key", other_key],
            "does not fit the certificate",
        ),
        (&["--tls-cert", cert], "--tls-key"),
        (&["--tls-key", key], "--tls-cert"),
    ];
    // The base64 body of each private key: never in an error.
    let secrets: Vec<String> = [&a.key, &b.key]
        .iter()
        .map(|k| k.lines().nth(1).unwrap_or_default().to_owned())
        .collect();
    for (args, want) in cases {
        let stderr = refused(&data, args);
        assert!(
            stderr.contains(want),
            "serve {args:?}: want {want:?} in\n{stderr}"
        );
        for s in &secrets {
            assert!(
                !stderr.contains(s.as_str()),
                "serve {args:?} printed key material"
            );
        }
    }
}
