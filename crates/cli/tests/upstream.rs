//! The Gemini-upstream pass-through: models listed in `[upstream] models` are answered by
//! a Gemini-wire upstream (here a fake one inside the test, which records what it gets)
//! with the server-held key, after all of Keyplane's checks.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The key the server holds for the upstream.
const SERVER_KEY: &str = "AIzaSyUPSTREAM_server_held_key_0123456";
/// The environment variable the test config names for it.
const KEY_ENV: &str = "KEYPLANE_TEST_UPSTREAM_KEY";
/// Served by the upstream: canned answers.
const UP_MODEL: &str = "gemini-2.5-flash";
/// Served by the upstream, which answers 429 with a google.rpc.Status.
const QUOTA_MODEL: &str = "gemini-2.5-pro";
/// Served by the upstream, which answers 502 with an HTML page.
const BROKEN_MODEL: &str = "gemini-2.0-flash";
/// Still an alias of the local model.
const LOCAL_ALIAS: &str = "gemini-flash-latest";

const UNARY: &str = r#"{"candidates":[{"content":{"parts":[{"text":"hello from upstream"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":3,"totalTokenCount":6},"modelVersion":"gemini-2.5-flash","responseId":"upstream-unary"}"#;
const SSE_FIRST: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"first \"}],\"role\":\"model\"},\"index\":0}],\"responseId\":\"upstream-sse\"}\r\n\r\n";
const SSE_LAST: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"last\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"responseId\":\"upstream-sse\"}\r\n\r\n";
const ARRAY: &str = "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}],\"role\":\"model\"},\"index\":0}]}\n,\r\n{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}]}\n]";
const COUNT: &str =
    r#"{"totalTokens":7,"promptTokensDetails":[{"modality":"TEXT","tokenCount":7}]}"#;
const QUOTA: &str = r#"{"error":{"code":429,"message":"Resource has been exhausted (upstream quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"17s"}]}}"#;

// ---------------------------------------------------------------------------------------
// The fake upstream
// ---------------------------------------------------------------------------------------

/// One request the fake upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// A held SSE stream (`hold=1` in the query) sends its last event once this is notified.
    release: Arc<Notify>,
}

impl Fake {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream was called")
    }
}

/// Starts the fake upstream on 127.0.0.1:0 in the current runtime; returns its address.
async fn start_fake(fake: Fake) -> String {
    let app = axum::Router::new().fallback(answer).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake upstream");
    let addr = listener.local_addr().expect("fake upstream address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn answer(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Seen {
            method,
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            body,
        });
    let last = uri.path().rsplit('/').next().unwrap_or_default();
    let (model, verb) = last.split_once(':').unwrap_or((last, ""));
    let query = uri.query().unwrap_or_default();
    let json = |status: StatusCode, body: &'static str| {
        (
            status,
            [("content-type", "application/json; charset=UTF-8")],
            body,
        )
            .into_response()
    };
    match (model, verb) {
        (QUOTA_MODEL, _) => json(StatusCode::TOO_MANY_REQUESTS, QUOTA),
        (BROKEN_MODEL, _) => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response(),
        (_, "generateContent") => json(StatusCode::OK, UNARY),
        (_, "countTokens") => json(StatusCode::OK, COUNT),
        (_, "streamGenerateContent") if query.split('&').any(|p| p == "alt=sse") => {
            let hold = query.split('&').any(|p| p == "hold=1");
            let release = fake.release.clone();
            let events = futures::stream::unfold(0u8, move |step| {
                let release = release.clone();
                async move {
                    match step {
                        0 => Some((Ok::<_, std::convert::Infallible>(SSE_FIRST), 1)),
                        1 => {
                            if hold {
                                release.notified().await;
                            }
                            Some((Ok(SSE_LAST), 2))
                        }
                        _ => None,
                    }
                }
            });
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(events),
            )
                .into_response()
        }
        (_, "streamGenerateContent") => json(StatusCode::OK, ARRAY),
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":{"code":404,"message":"not here","status":"NOT_FOUND"}}"#,
        ),
    }
}

/// A config file routing the three upstream models to `base_url`.
fn write_config(dir: &std::path::Path, base_url: &str, key_env: Option<&str>) -> String {
    let env_line = key_env
        .map(|e| format!("api_key_env = \"{e}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "[upstream]\nbase_url = \"{base_url}\"\n{env_line}models = [\"{UP_MODEL}\", \"{QUOTA_MODEL}\", \"{BROKEN_MODEL}\"]\n"
    );
    let path = dir.join("keyplane.toml");
    std::fs::write(&path, text).expect("write the config file");
    path.display().to_string()
}

/// A server whose upstream is `base_url`, logging at debug level.
fn start_server(dir: &std::path::Path, base_url: &str) -> Server {
    let config = write_config(dir, base_url, Some(KEY_ENV));
    Server::start_with(Options {
        env: vec![
            ("KEYPLANE_CONFIG".into(), config),
            (KEY_ENV.into(), SERVER_KEY.into()),
            ("RUST_LOG".into(), "debug".into()),
            ("KEYPLANE_LOG".into(), "debug".into()),
        ],
        ..Options::default()
    })
}

fn header<'a>(s: &'a Seen, name: &str) -> Option<&'a str> {
    s.headers.get(name).and_then(|v| v.to_str().ok())
}

/// What every forwarded request must look like: a POST to `path` with the server's key
/// and none of the caller's credentials.
fn assert_forwarded(s: &Seen, path: &str, client_key: &str) {
    assert_eq!(s.method, Method::POST, "{s:?}");
    assert_eq!(s.path, path, "{s:?}");
    assert_eq!(header(s, "x-goog-api-key"), Some(SERVER_KEY), "{s:?}");
    assert_eq!(
        s.headers.get_all("x-goog-api-key").iter().count(),
        1,
        "{s:?}"
    );
    assert!(s.headers.get("authorization").is_none(), "{s:?}");
    assert!(s.headers.get("cookie").is_none(), "{s:?}");
    let query = s.query.clone().unwrap_or_default();
    assert!(
        !query.contains(client_key),
        "client key in the query: {s:?}"
    );
    assert!(
        !query.split('&').any(|p| p.starts_with("key=")),
        "a key parameter was forwarded: {s:?}"
    );
    for (name, value) in &s.headers {
        assert!(
            !contains_bytes(value.as_bytes(), client_key.as_bytes()),
            "the client key went upstream in {name}: {s:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_models_are_passed_through_with_the_server_key() {
    let fake = Fake::default();
    let upstream = start_fake(fake.clone()).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let s = start_server(tmp.path(), &upstream);
    let ctx = s.ctx().await;
    let key = ctx.new_key("upstream").await;
    let k = key.key_string.as_str();
    let mut soft = Soft::default();

    // Unary, key in the query, with a cookie and a Bearer header that must not travel;
    // the body's own bytes (odd spacing) reach the upstream unchanged.
    let body = "{ \"contents\" : [ {\"parts\": [{\"text\": \"hi\"}]} ] ,\n \"generationConfig\": {\"temperature\": 0.5}}";
    let path = format!("/v1beta/models/{UP_MODEL}:generateContent?key={k}&prettyPrint=false");
    let r = ctx
        .send(
            format!("POST {path}"),
            ctx.http
                .post(ctx.url(&path))
                .header("content-type", "application/json")
                .header("cookie", "SID=browser-session")
                .header("authorization", "Bearer not-for-upstream")
                .body(body),
        )
        .await;
    soft.check(|| {
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.text, UNARY, "the upstream body, byte for byte");
        assert!(
            r.content_type.starts_with("application/json"),
            "{}",
            r.describe()
        );
        let seen = fake.last();
        assert_forwarded(
            &seen,
            &format!("/v1beta/models/{UP_MODEL}:generateContent"),
            k,
        );
        assert_eq!(seen.query.as_deref(), Some("prettyPrint=false"));
        assert_eq!(seen.body, body.as_bytes(), "the caller's bytes, unchanged");
        assert_eq!(header(&seen, "content-type"), Some("application/json"));
    });

    // The same on /v1 and /v1alpha with the key in the header.
    for v in ["v1", "v1alpha"] {
        let r = ctx
            .gemini_post(
                k,
                &format!("/{v}/models/{UP_MODEL}:generateContent"),
                &gen_body("x", 4),
            )
            .await;
        soft.check(|| {
            assert_eq!(r.status, 200, "{}", r.describe());
            assert_eq!(r.text, UNARY);
            assert_forwarded(
                &fake.last(),
                &format!("/{v}/models/{UP_MODEL}:generateContent"),
                k,
            );
        });
    }

    // countTokens.
    let r = ctx
        .gemini_post(
            k,
            &format!("/v1beta/models/{UP_MODEL}:countTokens"),
            &json!({"contents": [{"parts": [{"text": "count me"}]}]}),
        )
        .await;
    soft.check(|| {
        assert_eq!(r.ok()["totalTokens"], 7, "{}", r.describe());
        assert_forwarded(
            &fake.last(),
            &format!("/v1beta/models/{UP_MODEL}:countTokens"),
            k,
        );
    });

    // streamGenerateContent without alt=sse: the upstream's JSON array as it is.
    let r = ctx
        .gemini_post(
            k,
            &format!("/v1beta/models/{UP_MODEL}:streamGenerateContent"),
            &gen_body("x", 4),
        )
        .await;
    soft.check(|| {
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.text, ARRAY);
        assert_forwarded(
            &fake.last(),
            &format!("/v1beta/models/{UP_MODEL}:streamGenerateContent"),
            k,
        );
    });

    // Vertex express: forwarded to the Gemini path.
    ctx.set_service(&key.project_id, "aiplatform.googleapis.com", true)
        .await;
    let vpath = format!("/v1/publishers/google/models/{UP_MODEL}:generateContent?key={k}");
    let r = ctx
        .send(
            format!("POST {vpath}"),
            ctx.http.post(ctx.url(&vpath)).json(&gen_body("x", 4)),
        )
        .await;
    soft.check(|| {
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.text, UNARY);
        let seen = fake.last();
        assert_forwarded(&seen, &format!("/v1/models/{UP_MODEL}:generateContent"), k);
        assert_eq!(seen.query, None, "nothing but the key was in the query");
    });
    // Vertex's countTokens with generateContent fields: Gemini's generateContentRequest.
    let r = ctx
        .gemini_post(
            k,
            &format!("/v1beta1/publishers/google/models/{UP_MODEL}:countTokens"),
            &json!({"contents": [{"parts": [{"text": "count"}]}],
                    "systemInstruction": {"parts": [{"text": "be brief"}]}}),
        )
        .await;
    soft.check(|| {
        assert_eq!(r.ok()["totalTokens"], 7, "{}", r.describe());
        let seen = fake.last();
        assert_forwarded(&seen, &format!("/v1beta/models/{UP_MODEL}:countTokens"), k);
        let sent: Value = serde_json::from_slice(&seen.body).expect("JSON body");
        assert_eq!(
            sent,
            json!({"generateContentRequest": {
                "contents": [{"parts": [{"text": "count"}]}],
                "systemInstruction": {"parts": [{"text": "be brief"}]},
                "model": format!("models/{UP_MODEL}")}})
        );
    });

    // An upstream google.rpc.Status error comes back as it is, with its status.
    let r = ctx
        .gemini_post(
            k,
            &format!("/v1beta/models/{QUOTA_MODEL}:generateContent"),
            &gen_body("x", 4),
        )
        .await;
    soft.check(|| {
        let e = r.err(429, "RESOURCE_EXHAUSTED");
        assert_eq!(
            e["message"],
            "Resource has been exhausted (upstream quota)."
        );
        assert_eq!(e["details"][0]["retryDelay"], "17s");
    });
    // An upstream error that is not a Status becomes one (never HTML, never a bare 500).
    let r = ctx
        .gemini_post(
            k,
            &format!("/v1beta/models/{BROKEN_MODEL}:generateContent"),
            &gen_body("x", 4),
        )
        .await;
    soft.check(|| {
        r.err(503, "UNAVAILABLE");
        assert!(!r.text.contains("<html>"), "{}", r.describe());
    });

    // Refused before the upstream: a bad key, no key, a bad body, an unknown method.
    let before = fake.count();
    let up_path = format!("/v1beta/models/{UP_MODEL}:generateContent");
    let r = ctx
        .gemini_post(&unknown_key(), &up_path, &gen_body("x", 4))
        .await;
    soft.check(|| {
        r.err_reason(400, "INVALID_ARGUMENT", "API_KEY_INVALID");
    });
    let r = ctx.gemini_post_raw(None, &up_path, "{}").await;
    soft.check(|| {
        r.err(403, "PERMISSION_DENIED");
    });
    let r = ctx
        .gemini_post_raw(
            Some(k),
            &up_path,
            r#"{"contents": [{"parts": [{"txt": "x"}]}]}"#,
        )
        .await;
    soft.check(|| {
        r.err(400, "INVALID_ARGUMENT");
    });
    let r = ctx
        .gemini_post_raw(Some(k), &up_path, "{\"contents\": [")
        .await;
    soft.check(|| {
        r.err(400, "INVALID_ARGUMENT");
    });
    let r = ctx
        .gemini_post(
            k,
            &format!("/v1beta/models/{UP_MODEL}:countTokens"),
            &json!({"contents": []}),
        )
        .await;
    soft.check(|| {
        r.err(400, "INVALID_ARGUMENT");
    });
    // A model that is not in `models` is still the local model's (an alias here).
    let r = ctx
        .gemini_post(
            k,
            &format!("/v1beta/models/{LOCAL_ALIAS}:countTokens"),
            &json!({"contents": [{"parts": [{"text": "hello there"}]}]}),
        )
        .await;
    soft.check(|| {
        let n = r.ok()["totalTokens"].as_i64().unwrap_or(0);
        assert!(n > 0 && n != 7, "{}", r.describe());
    });
    let r = ctx
        .gemini_post(
            k,
            &format!("/v1beta/models/{LOCAL_MODEL}:generateContent"),
            &gen_body("Say hi", 2),
        )
        .await;
    soft.check(|| {
        let v = r.ok();
        assert_ne!(v["responseId"], "upstream-unary", "{}", r.describe());
    });
    soft.check(|| {
        assert_eq!(
            fake.count(),
            before,
            "refused or local calls reached the upstream: {:?}",
            &fake.seen()[before..]
        )
    });

    // An ephemeral token: its constraints and use counting run first, the locked field is
    // filled in, and neither the token nor the key that minted it goes upstream.
    let r = ctx
        .gemini_post(
            k,
            "/v1alpha/auth_tokens",
            &json!({"uses": 2,
                    "bidiGenerateContentSetup": {"model": format!("models/{UP_MODEL}"),
                                                 "generationConfig": {"temperature": 0.25}},
                    "fieldMask": "model,generationConfig.temperature"}),
        )
        .await;
    let token = r.ok()["name"].as_str().unwrap_or_default().to_owned();
    let eph_path = format!("/v1alpha/models/{UP_MODEL}:generateContent");
    let contents = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let r = ctx
        .send(
            format!("POST {eph_path} (Token)"),
            ctx.http
                .post(ctx.url(&eph_path))
                .header("authorization", format!("Token {token}"))
                .json(&contents),
        )
        .await;
    soft.check(|| {
        assert_eq!(r.status, 200, "{}", r.describe());
        let seen = fake.last();
        assert_forwarded(&seen, &eph_path, &token);
        let sent: Value = serde_json::from_slice(&seen.body).expect("JSON body");
        assert_eq!(sent["generationConfig"]["temperature"], 0.25, "{sent}");
    });
    let q_path = format!("{eph_path}?access_token={token}&alt=json");
    let r = ctx
        .send(
            format!("POST {q_path}"),
            ctx.http.post(ctx.url(&q_path)).json(&contents),
        )
        .await;
    soft.check(|| {
        assert_eq!(r.status, 200, "{}", r.describe());
        let seen = fake.last();
        assert_forwarded(&seen, &eph_path, &token);
        assert_eq!(seen.query.as_deref(), Some("alt=json"));
    });
    let before_spent = fake.count();
    let r = ctx
        .send(
            format!("POST {eph_path} (Token, third use)"),
            ctx.http
                .post(ctx.url(&eph_path))
                .header("authorization", format!("Token {token}"))
                .json(&contents),
        )
        .await;
    soft.check(|| {
        r.err_reason(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED");
        assert_eq!(
            fake.count(),
            before_spent,
            "a spent token reached the upstream"
        );
    });

    // models.list and models.get show the upstream's models next to the local ones.
    let r = ctx.gemini_get(k, "/v1beta/models?pageSize=1000").await;
    soft.check(|| {
        let v = r.ok();
        let names: Vec<&str> = v["models"]
            .as_array()
            .expect("models")
            .iter()
            .filter_map(|m| m["name"].as_str())
            .collect();
        for want in [
            UP_MODEL,
            QUOTA_MODEL,
            BROKEN_MODEL,
            LOCAL_MODEL,
            LOCAL_ALIAS,
        ] {
            assert!(
                names.contains(&format!("models/{want}").as_str()),
                "{want} not in {names:?}"
            );
        }
    });
    let r = ctx
        .gemini_get(k, &format!("/v1beta/models/{UP_MODEL}"))
        .await;
    soft.check(|| {
        let v = r.ok();
        assert_eq!(v["name"], format!("models/{UP_MODEL}"));
        assert!(
            v["description"]
                .as_str()
                .unwrap_or_default()
                .contains("upstream"),
            "{}",
            r.describe()
        );
    });

    // Neither key ever reaches the log.
    soft.check(|| {
        let log = s.stderr_text();
        assert!(!log.contains(SERVER_KEY), "the upstream key was logged");
        assert!(!log.contains(k), "the client key was logged");
    });
    soft.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_reach_the_client_as_the_upstream_sends_them() {
    let fake = Fake::default();
    let upstream = start_fake(fake.clone()).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let s = start_server(tmp.path(), &upstream);
    let ctx = s.ctx().await;
    let key = ctx.new_key("upstream-sse").await;
    let k = key.key_string.as_str();

    let path = format!("/v1beta/models/{UP_MODEL}:streamGenerateContent?alt=sse&key={k}&hold=1");
    let mut resp = ctx
        .http
        .post(ctx.url(&path))
        .json(&gen_body("stream", 8))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap_or_default(),
        "text/event-stream"
    );
    // The upstream holds its last event until the client has read the first one: a
    // buffering gateway would never deliver it.
    let mut got = Vec::new();
    while !contains_bytes(&got, b"\r\n\r\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("the first event did not arrive while the upstream was still streaming")
            .expect("read")
            .expect("the stream ended before the first event");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(String::from_utf8_lossy(&got), SSE_FIRST);
    fake.release.notify_one();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the last event did not arrive")
        .expect("read")
    {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("{SSE_FIRST}{SSE_LAST}")
    );
    let seen = fake.last();
    assert_forwarded(
        &seen,
        &format!("/v1beta/models/{UP_MODEL}:streamGenerateContent"),
        k,
    );
    assert_eq!(seen.query.as_deref(), Some("alt=sse&hold=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_503_unavailable() {
    // An upstream that accepts connections and closes them before answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let tmp = tempfile::tempdir().expect("temp dir");
    let s = start_server(tmp.path(), &format!("http://{addr}"));
    let ctx = s.ctx().await;
    let key = ctx.new_key("upstream-down").await;
    let k = key.key_string.as_str();
    let contents = json!({"contents": [{"parts": [{"text": "hello"}]}]});
    for verb in [
        "generateContent",
        "streamGenerateContent?alt=sse",
        "countTokens",
    ] {
        let r = ctx
            .gemini_post(k, &format!("/v1beta/models/{UP_MODEL}:{verb}"), &contents)
            .await;
        let e = r.err(503, "UNAVAILABLE");
        assert!(
            !r.text.contains(SERVER_KEY) && !r.text.contains(&addr.to_string()),
            "the error tells the client nothing of the upstream\n{}",
            r.describe()
        );
        let _ = e;
    }
    // The local model is unaffected.
    let r = ctx
        .gemini_post(
            k,
            &format!("/v1beta/models/{LOCAL_ALIAS}:countTokens"),
            &json!({"contents": [{"parts": [{"text": "hello"}]}]}),
        )
        .await;
    r.ok();
    assert!(
        !s.stderr_text().contains(SERVER_KEY),
        "the upstream key was logged"
    );
}

#[test]
fn serve_refuses_to_start_without_the_upstream_key() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // The default variable name, KEYPLANE_UPSTREAM_API_KEY, unset.
    let config = write_config(tmp.path(), "http://127.0.0.1:9", None);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyplane"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            &config,
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .env_remove("KEYPLANE_UPSTREAM_API_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn keyplane serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("keyplane serve kept running without its upstream key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "serve must fail; stderr: {stderr}");
    assert!(
        stderr.contains("KEYPLANE_UPSTREAM_API_KEY"),
        "the message names the variable: {stderr}"
    );
}
