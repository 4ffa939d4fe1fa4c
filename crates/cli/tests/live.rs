//! The Live API (`/ws/google.ai.generativelanguage.{v}.GenerativeService.Bidi…`) from the
//! outside, over a real WebSocket: a key's session (setup, a streamed answer, usage, a
//! second turn that remembers the first), an ephemeral token's sessions counted (N uses:
//! N sessions, then refused, also under concurrency), its constraints, and every refusal
//! as the close frame Google's endpoint sends (1007 for a bad credential or message, 1008
//! for a refused permission or model).

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const RPC: &str = "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
const CONSTRAINED: &str =
    "google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained";

/// Opens a Live WebSocket on `/ws/{rpc}{query}` with extra headers.
async fn open(ctx: &Ctx, rpc: &str, query: &str, headers: &[(&str, &str)]) -> Ws {
    let url = format!("{}/ws/{rpc}{query}", ctx.base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().expect("a ws request");
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
            .expect("header name");
        req.headers_mut()
            .insert(name, v.parse().expect("header value"));
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the WebSocket upgrade is accepted");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next server message: Ok(json) or Err((close code, reason)).
async fn recv(ws: &mut Ws) -> Result<Value, (u16, String)> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("the server answers in time");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("json")),
            Some(Ok(Message::Binary(b))) => return Ok(serde_json::from_slice(&b).expect("json")),
            Some(Ok(Message::Close(Some(f)))) => {
                return Err((u16::from(f.code), f.reason.to_string()))
            }
            Some(Ok(Message::Close(None))) | None => return Err((1005, String::new())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err((1006, e.to_string())),
        }
    }
}

fn setup(model: &str) -> Value {
    json!({"setup": {
        "model": format!("models/{model}"),
        "generationConfig": {"responseModalities": ["TEXT"], "temperature": 0, "maxOutputTokens": 12},
    }})
}

/// Sends the setup and expects `setupComplete`.
async fn start(ws: &mut Ws, setup: Value) {
    send(ws, setup).await;
    let m = recv(ws).await.expect("setupComplete");
    assert_eq!(m, json!({"setupComplete": {}}));
}

/// Sends a user turn and collects the answer: (text, the turnComplete message).
async fn turn(ws: &mut Ws, text: &str) -> (String, Value) {
    send(
        ws,
        json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}}),
    )
    .await;
    let mut out = String::new();
    let mut generation_complete = false;
    loop {
        let m = recv(ws).await.expect("a server message");
        let content = &m["serverContent"];
        if let Some(parts) = content["modelTurn"]["parts"].as_array() {
            for p in parts {
                out.push_str(p["text"].as_str().unwrap_or_default());
            }
        }
        if content["generationComplete"] == true {
            generation_complete = true;
        }
        if content["turnComplete"] == true {
            assert!(
                generation_complete,
                "generationComplete comes before turnComplete"
            );
            return (out, m);
        }
    }
}

/// Expects the server to close with `code`; returns the reason.
async fn closed_with(ws: &mut Ws, code: u16) -> String {
    match recv(ws).await {
        Err((c, reason)) => {
            assert_eq!(c, code, "close code (reason: {reason})");
            reason
        }
        Ok(m) => panic!("expected a close {code}, got {m}"),
    }
}

async fn mint(ctx: &Ctx, key: &str, body: &Value) -> String {
    let r = ctx.gemini_post(key, "/v1alpha/auth_tokens", body).await;
    r.ok()["name"].as_str().expect("name").to_owned()
}

#[tokio::test]
async fn a_key_session_streams_answers_and_keeps_the_conversation() {
    let _g = generation_lock().await;
    let ctx = server().ctx().await;
    let key = ctx.new_key("live-key").await;
    // Python's SDK: the key in x-goog-api-key.
    let mut ws = open(&ctx, RPC, "", &[("x-goog-api-key", &key.key_string)]).await;
    start(&mut ws, setup(MODEL)).await;
    let (first, done) = turn(&mut ws, "Name a colour.").await;
    assert!(!first.trim().is_empty());
    let usage = &done["usageMetadata"];
    let prompt = usage["promptTokenCount"].as_i64().unwrap();
    let response = usage["responseTokenCount"].as_i64().unwrap();
    assert!(prompt > 0 && response > 0 && response <= 12, "{usage}");
    assert_eq!(
        usage["totalTokenCount"].as_i64().unwrap(),
        prompt + response
    );
    // The second turn's prompt holds the first exchange.
    let (_, done2) = turn(&mut ws, "And another?").await;
    let prompt2 = done2["usageMetadata"]["promptTokenCount"].as_i64().unwrap();
    assert!(
        prompt2 > prompt + response,
        "{prompt2} vs {prompt}+{response}"
    );
    // realtimeInput text is a turn too.
    send(&mut ws, json!({"realtimeInput": {"text": "Hi"}})).await;
    loop {
        let m = recv(&mut ws).await.expect("answer");
        if m["serverContent"]["turnComplete"] == true {
            break;
        }
    }
    ws.close(None).await.expect("close");

    // JS's SDK: the key in ?key=.
    let mut ws = open(&ctx, RPC, &format!("?key={}", key.key_string), &[]).await;
    start(&mut ws, setup(LOCAL_MODEL)).await;
    let (text, _) = turn(&mut ws, "Say hi.").await;
    assert!(!text.is_empty());
}

#[tokio::test]
async fn refusals_close_with_googles_codes() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("live-refuse").await;
    let k = key.key_string.as_str();

    // No credential, an unknown key: 1007 with Google's message, after the setup.
    let mut ws = open(&ctx, RPC, "", &[]).await;
    send(&mut ws, setup(MODEL)).await;
    let reason = closed_with(&mut ws, 1008).await;
    assert!(reason.contains("unregistered callers"), "{reason}");
    let bogus = format!("AIza{}", "x".repeat(35));
    let mut ws = open(&ctx, RPC, "", &[("x-goog-api-key", &bogus)]).await;
    send(&mut ws, setup(MODEL)).await;
    assert_eq!(
        closed_with(&mut ws, 1007).await,
        "API key not valid. Please pass a valid API key."
    );

    // An unknown model: 1008 naming it.
    let mut ws = open(&ctx, RPC, "", &[("x-goog-api-key", k)]).await;
    send(&mut ws, setup("no-such-model")).await;
    let reason = closed_with(&mut ws, 1008).await;
    assert!(reason.contains("no-such-model"), "{reason}");

    // AUDIO output (the Python SDK's default), audio input, tools, unknown fields, a first
    // message that is not setup, and JSON that does not parse: 1007.
    let mut ws = open(&ctx, RPC, "", &[("x-goog-api-key", k)]).await;
    send(
        &mut ws,
        json!({"setup": {"model": format!("models/{MODEL}"), "generationConfig": {"responseModalities": ["AUDIO"]}}}),
    )
    .await;
    let reason = closed_with(&mut ws, 1007).await;
    assert!(reason.contains("not supported"), "{reason}");

    let mut ws = open(&ctx, RPC, "", &[("x-goog-api-key", k)]).await;
    start(&mut ws, setup(MODEL)).await;
    send(
        &mut ws,
        json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm", "data": "AAAA"}}}),
    )
    .await;
    let reason = closed_with(&mut ws, 1007).await;
    assert!(reason.contains("text input only"), "{reason}");

    for (first, what) in [
        (json!({"clientContent": {"turns": []}}), "setup"),
        (
            json!({"setup": {"model": format!("models/{MODEL}"), "bogus": 1}}),
            "bogus",
        ),
        (
            json!({"setup": {"model": format!("models/{MODEL}"), "tools": [{"functionDeclarations": [{"name": "f"}]}]}}),
            "Function calling",
        ),
    ] {
        let mut ws = open(&ctx, RPC, "", &[("x-goog-api-key", k)]).await;
        send(&mut ws, first).await;
        let reason = closed_with(&mut ws, 1007).await;
        assert!(reason.contains(what), "{what}: {reason}");
    }
    let mut ws = open(&ctx, RPC, "", &[("x-goog-api-key", k)]).await;
    ws.send(Message::text("{not json")).await.unwrap();
    let reason = closed_with(&mut ws, 1007).await;
    assert!(reason.contains("Invalid JSON"), "{reason}");

    // A key restricted to other methods is blocked on the Live method: 1008.
    let r = ctx
        .http
        .patch(ctx.url(&format!("/v2/{}?updateMask=restrictions", key.name)))
        .bearer_auth(&ctx.token)
        .json(&json!({"restrictions": {"apiTargets": [{"service": "generativelanguage.googleapis.com", "methods": ["google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"]}]}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let mut ws = open(&ctx, RPC, "", &[("x-goog-api-key", k)]).await;
    send(&mut ws, setup(MODEL)).await;
    let reason = closed_with(&mut ws, 1008).await;
    assert!(reason.starts_with("Requests to this API"), "{reason}");

    // Not a WebSocket request, an unknown RPC: HTTP errors in Google's format.
    let r = ctx.get(&format!("/ws/{RPC}")).await;
    r.err(400, "INVALID_ARGUMENT");
    let r = ctx
        .get("/ws/google.ai.generativelanguage.v1beta.GenerativeService.Nope")
        .await;
    r.err(404, "NOT_FOUND");
}

#[tokio::test]
async fn an_ephemeral_token_starts_exactly_its_uses_in_sessions() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("live-eph").await;
    let token = mint(
        &ctx,
        &key.key_string,
        &json!({"uses": 2, "bidiGenerateContentSetup": {"model": format!("models/{MODEL}"), "generationConfig": {"temperature": 0}}}),
    )
    .await;
    // Python: Authorization: Token + x-goog-api-key; JS: ?access_token=.
    let python = [
        ("authorization", format!("Token {token}")),
        ("x-goog-api-key", token.clone()),
    ];
    let python: Vec<(&str, &str)> = python.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut ws = open(&ctx, CONSTRAINED, "", &python).await;
    start(&mut ws, setup(MODEL)).await;
    ws.close(None).await.unwrap();
    let mut ws = open(&ctx, CONSTRAINED, &format!("?access_token={token}"), &[]).await;
    // The locked model is filled in and the locked temperature cannot change.
    send(
        &mut ws,
        json!({"setup": {"model": format!("models/{MODEL}"), "generationConfig": {"temperature": 0.9, "responseModalities": ["TEXT"]}}}),
    )
    .await;
    let reason = closed_with(&mut ws, 1007).await;
    assert!(reason.contains("locked"), "{reason}");
    let mut ws = open(&ctx, CONSTRAINED, &format!("?access_token={token}"), &[]).await;
    start(&mut ws, setup(MODEL)).await;
    ws.close(None).await.unwrap();
    // Spent: the third session is refused.
    let mut ws = open(&ctx, CONSTRAINED, "", &python).await;
    send(&mut ws, setup(MODEL)).await;
    let reason = closed_with(&mut ws, 1007).await;
    assert!(
        reason.contains("invalid authentication credentials"),
        "{reason}"
    );

    // A pinned model cannot be swapped: 1008.
    let pinned = mint(
        &ctx,
        &key.key_string,
        &json!({"bidiGenerateContentSetup": {"model": format!("models/{MODEL}")}}),
    )
    .await;
    let mut ws = open(&ctx, CONSTRAINED, &format!("?access_token={pinned}"), &[]).await;
    send(&mut ws, setup(LOCAL_MODEL)).await;
    let reason = closed_with(&mut ws, 1008).await;
    assert!(reason.contains("only allows"), "{reason}");
}

#[tokio::test]
async fn concurrent_sessions_on_a_token_start_exactly_n() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("live-race").await;
    let token = mint(&ctx, &key.key_string, &json!({"uses": 3})).await;
    let attempts = (0..12).map(|_| {
        let base = ctx.base.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let ctx = Ctx::anonymous(&base);
            let mut ws = open(&ctx, CONSTRAINED, &format!("?access_token={token}"), &[]).await;
            send(&mut ws, setup(MODEL)).await;
            recv(&mut ws).await.is_ok()
        })
    });
    let mut started = 0;
    for a in attempts {
        if a.await.unwrap() {
            started += 1;
        }
    }
    assert_eq!(started, 3);
}

#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let ctx = server().ctx().await;
    let key = ctx.new_key("live-exp").await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let expire = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let token = mint(
        &ctx,
        &key.key_string,
        &json!({"expireTime": expire, "newSessionExpireTime": expire}),
    )
    .await;
    let mut ws = open(&ctx, CONSTRAINED, &format!("?access_token={token}"), &[]).await;
    start(&mut ws, setup(MODEL)).await;
    let reason = closed_with(&mut ws, 1008).await;
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn each_turn_counts_against_the_quota_and_is_metered() {
    let dir = tempfile::tempdir().expect("a config dir");
    let config = dir.path().join("keyplane.toml");
    std::fs::write(&config, "[quota.free]\nrpm = 2\n").expect("write config");
    let server = Server::start_with(Options {
        args: vec!["--config".into(), config.display().to_string()],
        ..Options::default()
    });
    let ctx = server.ctx().await;
    let key = ctx.new_key("live-quota").await;
    // The two turns and the refused third must fall in one minute.
    let second = unix_now() % 60;
    if second > 40 {
        tokio::time::sleep(Duration::from_secs(61 - second as u64)).await;
    }
    let mut ws = open(&ctx, RPC, "", &[("x-goog-api-key", &key.key_string)]).await;
    start(&mut ws, setup(MODEL)).await;
    let (_, first) = turn(&mut ws, "Say one word.").await;
    let (_, second) = turn(&mut ws, "Another word.").await;
    send(
        &mut ws,
        json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "More."}]}], "turnComplete": true}}),
    )
    .await;
    let reason = closed_with(&mut ws, 1011).await;
    assert!(
        reason.starts_with("You exceeded your current quota"),
        "{reason}"
    );

    let u = ctx
        .get(&format!("/v1/keyplane/projects/{}/usage", key.project_id))
        .await
        .ok();
    let turns: Vec<&Value> = u["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["method"] == "bidiGenerateContent" && b["code"] == 200)
        .collect();
    let requests: i64 = turns.iter().map(|b| b["requests"].as_i64().unwrap()).sum();
    assert_eq!(requests, 2, "{u}");
    let prompt: i64 = turns
        .iter()
        .map(|b| b["promptTokens"].as_i64().unwrap())
        .sum();
    let expected = first["usageMetadata"]["promptTokenCount"].as_i64().unwrap()
        + second["usageMetadata"]["promptTokenCount"]
            .as_i64()
            .unwrap();
    assert_eq!(prompt, expected, "{u}");
    assert_eq!(turns[0]["key"], key.name.as_str(), "{u}");
}
