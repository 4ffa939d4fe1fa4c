//! The clients against a tiny in-process fake server (axum on an ephemeral port): token
//! caching and refresh, 401 retry, operation polling and errors, paging, google.rpc.Status
//! parsing, and the Gemini calls including SSE.

use crate::control::{Api, ControlPlane, NewKey};
use crate::credentials::tests::key_file_json;
use crate::credentials::ServiceAccountCredentials;
use crate::error::ClientError;
use crate::gemini::{text_request, Gemini};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY_STRING: &str = "AIzaSyFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE1";

#[derive(Default)]
struct Fake {
    token_hits: AtomicUsize,
    polls: AtomicUsize,
    expires_in: Mutex<Option<u64>>,
    /// Tokens the server no longer accepts (answers 401).
    revoked: Mutex<Vec<String>>,
    /// Operation polls before `done`; `usize::MAX` never finishes.
    polls_needed: Mutex<usize>,
    seen_api_keys: Mutex<Vec<String>>,
}

type S = Arc<Fake>;

fn status(code: u16, status: &str, message: &str, reason: Option<&str>) -> Response {
    let mut err = json!({"code": code, "message": message, "status": status});
    if let Some(r) = reason {
        err["details"] = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r, "domain": "googleapis.com"}]);
    }
    (
        StatusCode::from_u16(code).unwrap(),
        Json(json!({ "error": err })),
    )
        .into_response()
}

/// `Some(401 response)` when the request's token is missing or revoked.
fn unauthorized(s: &Fake, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if token.is_empty() || s.revoked.lock().unwrap().iter().any(|t| t == token) {
        return Some(status(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            Some("ACCESS_TOKEN_EXPIRED"),
        ));
    }
    None
}

async fn token(State(s): State<S>, Form(form): Form<HashMap<String, String>>) -> Response {
    if form.get("grant_type").map(String::as_str) != Some(crate::credentials::JWT_BEARER_GRANT)
        || form
            .get("assertion")
            .is_none_or(|a| a.split('.').count() != 3)
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
        )
            .into_response();
    }
    let n = s.token_hits.fetch_add(1, Ordering::SeqCst) + 1;
    let mut body = json!({"access_token": format!("tok-{n}"), "token_type": "Bearer"});
    if let Some(e) = *s.expires_in.lock().unwrap() {
        body["expires_in"] = json!(e);
    }
    Json(body).into_response()
}

async fn get_project(State(s): State<S>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    if id == "missing" {
        return status(
            403,
            "PERMISSION_DENIED",
            "Permission 'resourcemanager.projects.get' denied on resource '//cloudresourcemanager.googleapis.com/projects/missing' (or it may not exist).",
            Some("IAM_PERMISSION_DENIED"),
        );
    }
    Json(json!({"name": "projects/42", "projectId": id, "state": "ACTIVE", "displayName": "P"}))
        .into_response()
}

async fn list_projects(
    State(s): State<S>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    match q.get("pageToken").map(String::as_str) {
        None => Json(json!({"projects": [{"name": "projects/1", "projectId": "a", "state": "ACTIVE"}], "nextPageToken": "p2"})).into_response(),
        Some("p2") => Json(json!({"projects": [{"name": "projects/2", "projectId": "b", "state": "ACTIVE"}]})).into_response(),
        Some(_) => status(400, "INVALID_ARGUMENT", "bad page token", None),
    }
}

async fn create_key(
    State(s): State<S>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    match q.get("keyId").map(String::as_str) {
        Some("dup") => Json(json!({"name": "operations/akmf.dup", "done": true, "error": {"code": 6, "message": "A key with this id already exists.", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "FLOW_APIKEY_ALREADY_EXISTS"}]}})).into_response(),
        _ => {
            assert_eq!(body["displayName"], "my key");
            Json(json!({"name": "operations/akmf.p7-42-x", "metadata": {"@type": "type.googleapis.com/google.protobuf.Empty"}})).into_response()
        }
    }
}

async fn get_v2_operation(
    State(s): State<S>,
    headers: HeaderMap,
    Path(rest): Path<String>,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let n = s.polls.fetch_add(1, Ordering::SeqCst) + 1;
    let name = format!("operations/{rest}");
    if n < *s.polls_needed.lock().unwrap() {
        return Json(json!({ "name": name })).into_response();
    }
    Json(json!({"name": name, "done": true, "response": {
        "@type": "type.googleapis.com/google.api.apikeys.v2.Key",
        "name": "projects/42/locations/global/keys/k1", "uid": "u1", "displayName": "my key",
        "keyString": KEY_STRING, "maskedKeyString": "…KE1", "createTime": "2026-01-02T03:04:05Z",
        "etag": "W/\"e\""
    }}))
    .into_response()
}

async fn models(headers: HeaderMap, State(s): State<S>, Path(rest): Path<String>) -> Response {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    s.seen_api_keys.lock().unwrap().push(key.clone());
    if key != KEY_STRING {
        return status(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            Some("API_KEY_INVALID"),
        );
    }
    let chunk = |t: &str| json!({"candidates": [{"content": {"parts": [{"text": t}], "role": "model"}, "index": 0}]});
    match rest.as_str() {
        "m:generateContent" => Json(chunk("Hello there")).into_response(),
        "m:countTokens" => Json(json!({"totalTokens": 7})).into_response(),
        "m:streamGenerateContent" => {
            let body = format!(
                "data: {}\r\n\r\ndata: {}\r\n\r\n",
                chunk("Hel"),
                chunk("lo")
            );
            ([("content-type", "text/event-stream")], body).into_response()
        }
        "m" => Json(json!({"name": "models/m", "displayName": "M"})).into_response(),
        _ => status(
            404,
            "NOT_FOUND",
            "models/x is not found for API version v1beta",
            None,
        ),
    }
}

async fn list_models(State(s): State<S>, headers: HeaderMap) -> Response {
    let _ = (s, headers);
    Json(json!({"models": [{"name": "models/m"}]})).into_response()
}

async fn start() -> (String, S) {
    let state: S = Arc::new(Fake::default());
    *state.expires_in.lock().unwrap() = Some(3599);
    *state.polls_needed.lock().unwrap() = 2;
    let app = Router::new()
        .route("/token", post(token))
        .route(
            "/token-refused",
            post(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
                )
            }),
        )
        .route("/v3/projects", get(list_projects))
        .route("/v3/projects/{id}", get(get_project))
        .route("/v2/projects/{p}/locations/global/keys", post(create_key))
        .route("/v2/operations/{*rest}", get(get_v2_operation))
        .route("/v1beta/models", get(list_models))
        .route("/v1beta/models/{*rest}", get(models).post(models))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), state)
}

fn control(base: &str) -> ControlPlane {
    let creds =
        ServiceAccountCredentials::from_json(&key_file_json(&format!("{base}/token"))).unwrap();
    ControlPlane::from_credentials(creds).unwrap()
}

#[tokio::test]
async fn the_token_is_fetched_once_and_reused() {
    let (base, fake) = start().await;
    let cp = control(&base);
    assert_eq!(cp.base_url(), base);
    for _ in 0..3 {
        let p = cp.get_project("my-proj").await.unwrap();
        assert_eq!(p.project_id, "my-proj");
    }
    assert_eq!(fake.token_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed() {
    let (base, fake) = start().await;
    // 60 s is inside the refresh margin: every call needs a new token.
    *fake.expires_in.lock().unwrap() = Some(60);
    let cp = control(&base);
    cp.get_project("p").await.unwrap();
    cp.get_project("p").await.unwrap();
    assert_eq!(fake.token_hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_401_is_retried_once_with_a_fresh_token() {
    let (base, fake) = start().await;
    let cp = control(&base);
    cp.get_project("p").await.unwrap();
    fake.revoked.lock().unwrap().push("tok-1".into());
    cp.get_project("p").await.unwrap();
    assert_eq!(fake.token_hits.load(Ordering::SeqCst), 2);

    // A server that refuses every token: the second 401 is the answer.
    fake.revoked
        .lock()
        .unwrap()
        .extend(["tok-2".into(), "tok-3".into()]);
    let err = cp.get_project("p").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { code: 401, status, reason: Some(r), .. } if status == "UNAUTHENTICATED" && r == "ACCESS_TOKEN_EXPIRED"),
        "{err:?}"
    );
}

#[tokio::test]
async fn token_refusals_are_token_errors() {
    let (base, _fake) = start().await;
    let creds =
        ServiceAccountCredentials::from_json(&key_file_json(&format!("{base}/token-refused")))
            .unwrap();
    let err = ControlPlane::new(&base, creds)
        .get_project("p")
        .await
        .unwrap_err();
    match &err {
        ClientError::Token {
            http_status, error, ..
        } => assert_eq!((*http_status, error.as_str()), (400, "invalid_grant")),
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("eyJ"), "no assertion in {err}");
}

#[tokio::test]
async fn api_errors_carry_code_status_message_and_reason() {
    let (base, _fake) = start().await;
    let err = control(&base).get_project("missing").await.unwrap_err();
    match err {
        ClientError::Api {
            code,
            status,
            message,
            reason,
        } => {
            assert_eq!(code, 403);
            assert_eq!(status, "PERMISSION_DENIED");
            assert!(message.starts_with("Permission 'resourcemanager.projects.get' denied"));
            assert_eq!(reason.as_deref(), Some("IAM_PERMISSION_DENIED"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn lists_follow_page_tokens() {
    let (base, _fake) = start().await;
    let projects = control(&base).list_projects(false).await.unwrap();
    let ids: Vec<&str> = projects.iter().map(|p| p.project_id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b"]);
}

#[tokio::test]
async fn create_key_polls_its_operation_and_returns_the_key_string() {
    let (base, fake) = start().await;
    let cp = control(&base);
    let key = cp
        .create_key(
            "42",
            &NewKey {
                display_name: Some("my key".into()),
                ..NewKey::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(fake.polls.load(Ordering::SeqCst), 2);
    assert_eq!(key.name, "projects/42/locations/global/keys/k1");
    assert_eq!(key.key_string.as_ref().unwrap().expose(), KEY_STRING);
    assert_eq!(key.masked_key_string.as_deref(), Some("…KE1"));
    assert!(!key.other.contains_key("@type"));
    assert!(!format!("{key:?}").contains(KEY_STRING));
}

#[tokio::test]
async fn failed_operations_become_api_errors() {
    let (base, _fake) = start().await;
    let err = control(&base)
        .create_key(
            "42",
            &NewKey {
                key_id: Some("dup".into()),
                ..NewKey::default()
            },
        )
        .await
        .unwrap_err();
    match err {
        ClientError::Api {
            code,
            status,
            message,
            reason,
        } => {
            assert_eq!((code, status.as_str()), (409, "ALREADY_EXISTS"));
            assert_eq!(message, "A key with this id already exists.");
            assert_eq!(reason.as_deref(), Some("FLOW_APIKEY_ALREADY_EXISTS"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn operations_that_never_finish_time_out() {
    let (base, fake) = start().await;
    *fake.polls_needed.lock().unwrap() = usize::MAX;
    let cp = control(&base).with_operation_timeout(Duration::from_millis(400));
    let err = cp
        .create_key(
            "42",
            &NewKey {
                display_name: Some("my key".into()),
                ..NewKey::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::OperationTimeout(name) if name == "operations/akmf.p7-42-x"),
        "{err:?}"
    );
    assert!(fake.polls.load(Ordering::SeqCst) >= 2);
    let op = cp
        .get_operation(Api::ApiKeys, "operations/akmf.p7-42-x")
        .await
        .unwrap();
    assert!(!op.done);
}

#[tokio::test]
async fn gemini_calls_send_the_key_header() {
    let (base, fake) = start().await;
    let g = Gemini::new(&base, KEY_STRING);
    let r = g
        .generate_content("gemini-x", &text_request("hi"))
        .await
        .unwrap_err();
    assert_eq!(r.status(), Some("NOT_FOUND"));
    let r = g
        .generate_content("models/m", &text_request("hi"))
        .await
        .unwrap();
    assert_eq!(r.text(), "Hello there");
    let n = g
        .count_tokens(
            "m",
            &keyplane_wire::gemini::CountTokensRequest {
                contents: text_request("hi").contents,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(n.total_tokens, 7);
    assert_eq!(g.get_model("m").await.unwrap().display_name, "M");
    assert_eq!(g.list_models().await.unwrap().len(), 1);
    let chunks: Vec<String> = g
        .stream_generate_content("m", &text_request("hi"))
        .await
        .unwrap()
        .map(|c| c.unwrap().text())
        .collect()
        .await;
    assert_eq!(chunks, vec!["Hel", "lo"]);
    assert!(fake
        .seen_api_keys
        .lock()
        .unwrap()
        .iter()
        .all(|k| k == KEY_STRING));

    let bad = Gemini::new(&base, "AIzaWRONGWRONG");
    let err = match bad.stream_generate_content("m", &text_request("hi")).await {
        Err(e) => e,
        Ok(_) => panic!("a bad key must fail before streaming"),
    };
    assert_eq!(err.reason(), Some("API_KEY_INVALID"));
    assert!(!err.to_string().contains("AIzaWRONGWRONG"));
}
