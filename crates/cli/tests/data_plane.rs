//! The Gemini API (data plane): models, generateContent, streamGenerateContent,
//! countTokens, API-key authentication and Google's error envelope.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

const PROMPT: &str = "Explain how AI works in a few words";

fn gen_path(verb: &str) -> String {
    format!("/v1beta/models/{MODEL}:{verb}")
}

/// Checks a GenerateContentResponse and returns (text, finishReason, usageMetadata).
fn check_generation(r: &Resp, max_tokens: u64) -> (String, String, Value) {
    let v = r.ok();
    let c = &v["candidates"][0];
    assert_eq!(c["content"]["role"], "model", "{}", r.describe());
    assert!(
        c["content"]["parts"][0]["text"].is_string(),
        "candidate 0 must have a text part\n{}",
        r.describe()
    );
    let finish = c["finishReason"].as_str().unwrap_or_default().to_owned();
    assert!(
        finish == "MAX_TOKENS" || finish == "STOP",
        "finishReason must be MAX_TOKENS or STOP\n{}",
        r.describe()
    );
    assert_eq!(c["index"], 0, "candidate index 0\n{}", r.describe());
    let u = v["usageMetadata"].clone();
    let prompt = u["promptTokenCount"].as_u64().unwrap_or(0);
    let cand = u["candidatesTokenCount"].as_u64().unwrap_or(0);
    let total = u["totalTokenCount"].as_u64().unwrap_or(0);
    assert!(prompt > 0, "promptTokenCount > 0\n{}", r.describe());
    assert!(
        cand <= max_tokens,
        "candidatesTokenCount ≤ {max_tokens}\n{}",
        r.describe()
    );
    assert_eq!(
        total,
        prompt + cand,
        "totalTokenCount = prompt + candidates\n{}",
        r.describe()
    );
    if finish == "MAX_TOKENS" {
        assert_eq!(
            cand,
            max_tokens,
            "MAX_TOKENS means the limit was hit\n{}",
            r.describe()
        );
    }
    assert_eq!(v["modelVersion"], LOCAL_MODEL, "{}", r.describe());
    assert!(
        v["responseId"].as_str().is_some_and(|s| !s.is_empty()),
        "responseId\n{}",
        r.describe()
    );
    (candidate_text(&v), finish, u)
}

/// Splits an `alt=sse` body into its events' JSON: `data: ` + one line, `\r\n\r\n` after each.
fn parse_sse(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        r.content_type.starts_with("text/event-stream"),
        "content-type must be text/event-stream\n{}",
        r.describe()
    );
    assert!(
        r.text.ends_with("\r\n\r\n"),
        "every event ends with a blank line (\\r\\n\\r\\n)\n{}",
        r.describe()
    );
    let events: Vec<&str> = r.text[..r.text.len() - 4].split("\r\n\r\n").collect();
    events
        .iter()
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap_or_else(|| {
                panic!("event {e:?} does not start with `data: `\n{}", r.describe())
            });
            assert!(
                !data.contains('\n') && !data.contains('\r'),
                "event data must be one line: {e:?}"
            );
            serde_json::from_str::<Value>(data)
                .unwrap_or_else(|err| panic!("event data is not JSON ({err}): {e:?}"))
        })
        .collect()
}

/// Checks a sequence of stream chunks; returns the joined text and the last chunk.
fn check_chunks(chunks: &[Value], what: &str) -> (String, Value) {
    assert!(!chunks.is_empty(), "{what}: no chunks");
    let mut text = String::new();
    let rid = chunks[0]["responseId"].clone();
    for (i, c) in chunks.iter().enumerate() {
        assert!(c.get("error").is_none(), "{what}: error chunk {c}");
        assert_eq!(c["modelVersion"], LOCAL_MODEL, "{what}: chunk {i}: {c}");
        assert_eq!(c["responseId"], rid, "{what}: responseId must repeat: {c}");
        let last = i + 1 == chunks.len();
        let finish = &c["candidates"][0]["finishReason"];
        if last {
            assert!(
                finish.is_string(),
                "{what}: the last chunk has a finishReason: {c}"
            );
            assert!(
                c["usageMetadata"]["totalTokenCount"].is_u64(),
                "{what}: the last chunk has usageMetadata: {c}"
            );
        } else {
            assert!(
                finish.is_null(),
                "{what}: only the last chunk has a finishReason: {c}"
            );
        }
        text.push_str(&candidate_text(c));
    }
    (text, chunks.last().unwrap().clone())
}

#[tokio::test]
async fn models_list_and_get() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-models").await;

    let r = ctx.gemini_get(&key.key_string, "/v1beta/models").await;
    let v = r.ok();
    let names: Vec<&str> = v["models"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    for want in [format!("models/{LOCAL_MODEL}"), format!("models/{MODEL}")] {
        assert!(
            names.contains(&want.as_str()),
            "list must contain {want}\n{}",
            r.describe()
        );
    }

    let r = ctx
        .gemini_get(&key.key_string, &format!("/v1beta/models/{MODEL}"))
        .await;
    let m = r.ok();
    assert_eq!(m["name"], format!("models/{MODEL}"), "{}", r.describe());
    assert!(
        m["inputTokenLimit"].as_u64().is_some_and(|n| n > 0),
        "inputTokenLimit\n{}",
        r.describe()
    );
    let methods: Vec<&str> = m["supportedGenerationMethods"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    for want in ["generateContent", "countTokens"] {
        assert!(
            methods.contains(&want),
            "supportedGenerationMethods must contain {want}\n{}",
            r.describe()
        );
    }

    ctx.gemini_get(&key.key_string, "/v1beta/models/no-such-model")
        .await
        .err(404, "NOT_FOUND");
}

#[tokio::test]
async fn generate_content() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-gen").await;
    let _g = generation_lock().await;

    let body = gen_body(PROMPT, 8);
    let r = ctx.generate(&key.key_string, &body).await;
    let (text, _, usage) = check_generation(&r, 8);

    // Greedy decoding is reproducible.
    let r2 = ctx.generate(&key.key_string, &body).await;
    let (text2, _, usage2) = check_generation(&r2, 8);
    assert_eq!(text, text2, "temperature 0 must be deterministic");
    assert_eq!(usage, usage2);
    assert_ne!(
        r.json()["responseId"],
        r2.json()["responseId"],
        "each response has its own responseId"
    );

    // The same request with the key in ?key= and the model under its own name.
    let path = format!(
        "/v1beta/models/{LOCAL_MODEL}:generateContent?key={}",
        key.key_string
    );
    let r3 = ctx
        .send(
            format!("POST {path} {body}"),
            ctx.http.post(ctx.url(&path)).json(&body),
        )
        .await;
    let (text3, _, _) = check_generation(&r3, 8);
    assert_eq!(text, text3, "the alias and the model answer the same");

    // Curl's shape (no role, no generationConfig) works too.
    let r = ctx
        .generate(
            &key.key_string,
            &json!({"contents": [{"parts": [{"text": "Say hi"}]}],
                    "generationConfig": {"maxOutputTokens": 4}}),
        )
        .await;
    check_generation(&r, 4);
}

#[tokio::test]
async fn generate_accepts_snake_case_and_system_instruction() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-snake").await;
    let _g = generation_lock().await;
    let contents = json!([{"role": "user", "parts": [{"text": PROMPT}]}]);
    let system = json!({"parts": [{"text": "You are a pirate. Answer like a pirate."}]});

    let plain = ctx
        .generate(
            &key.key_string,
            &json!({"contents": contents, "generationConfig": {"maxOutputTokens": 3, "temperature": 0}}),
        )
        .await;
    let (_, _, plain_usage) = check_generation(&plain, 3);

    let camel = ctx
        .generate(
            &key.key_string,
            &json!({"contents": contents,
                    "systemInstruction": system,
                    "generationConfig": {"maxOutputTokens": 3, "temperature": 0}}),
        )
        .await;
    let (camel_text, _, camel_usage) = check_generation(&camel, 3);

    let snake = ctx
        .generate(
            &key.key_string,
            &json!({"contents": contents,
                    "system_instruction": system,
                    "generation_config": {"max_output_tokens": 3, "temperature": 0}}),
        )
        .await;
    let (snake_text, _, snake_usage) = check_generation(&snake, 3);

    assert_ne!(
        plain_usage["promptTokenCount"], camel_usage["promptTokenCount"],
        "systemInstruction must change the prompt\nplain: {}\ncamel: {}",
        plain.text, camel.text
    );
    assert_eq!(
        camel_usage, snake_usage,
        "snake_case and camelCase requests must be the same request"
    );
    assert_eq!(camel_text, snake_text);
    assert!(
        !snake.text.contains("_count") && !snake.text.contains("finish_reason"),
        "answers are camelCase only: {}",
        snake.text
    );
}

#[tokio::test]
async fn stop_sequences_cut_the_output() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-stop").await;
    let _g = generation_lock().await;

    let r = ctx.generate(&key.key_string, &gen_body(PROMPT, 16)).await;
    let (full, _, _) = check_generation(&r, 16);
    // A word from the middle of the greedy answer.
    let start = full
        .char_indices()
        .skip(4)
        .find(|&(i, c)| c == ' ' && full[i + 1..].starts_with(|c: char| c.is_alphanumeric()))
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| {
            panic!("the greedy answer is too short to test stopSequences: {full:?}")
        });
    let stop: String = full[start..]
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .take(4)
        .collect();
    let cut = full.find(&stop).unwrap();
    let expected = &full[..cut];

    let mut body = gen_body(PROMPT, 16);
    body["generationConfig"]["stopSequences"] = json!([stop]);
    let r = ctx.generate(&key.key_string, &body).await;
    let (text, finish, _) = check_generation(&r, 16);
    assert_eq!(
        text,
        expected,
        "with stopSequences [{stop:?}] the text ends before it (full answer {full:?})\n{}",
        r.describe()
    );
    assert_eq!(finish, "STOP", "{}", r.describe());

    // Streaming honours it too.
    let path = format!("{}?alt=sse", gen_path("streamGenerateContent"));
    let r = ctx.gemini_post(&key.key_string, &path, &body).await;
    let (streamed, _) = check_chunks(&parse_sse(&r), "sse with stop");
    assert_eq!(streamed, expected, "{}", r.describe());
}

#[tokio::test]
async fn stream_matches_the_non_streamed_answer() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-sse").await;
    let _g = generation_lock().await;
    let body = gen_body(PROMPT, 16);

    let r = ctx.generate(&key.key_string, &body).await;
    let (text, finish, usage) = check_generation(&r, 16);

    // alt=sse
    let path = format!("{}?alt=sse", gen_path("streamGenerateContent"));
    let r = ctx.gemini_post(&key.key_string, &path, &body).await;
    let chunks = parse_sse(&r);
    let (streamed, last) = check_chunks(&chunks, "sse");
    assert_eq!(
        streamed,
        text,
        "SSE text must equal the non-streamed text\n{}",
        r.describe()
    );
    assert_eq!(
        last["candidates"][0]["finishReason"],
        finish.as_str(),
        "{}",
        r.describe()
    );
    assert_eq!(
        last["usageMetadata"],
        usage,
        "final usage must match\n{}",
        r.describe()
    );
    assert!(
        chunks.len() >= 2,
        "a 16-token answer should arrive in several chunks\n{}",
        r.describe()
    );

    // No alt: one JSON array of the same chunks.
    let r = ctx
        .gemini_post(&key.key_string, &gen_path("streamGenerateContent"), &body)
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let arr = r.json();
    let arr = arr
        .as_array()
        .unwrap_or_else(|| panic!("without alt=sse the body is a JSON array\n{}", r.describe()));
    let (arr_text, last) = check_chunks(arr, "json array");
    assert_eq!(arr_text, text, "{}", r.describe());
    assert_eq!(last["usageMetadata"], usage, "{}", r.describe());

    // The key in ?key= with alt=sse (curl's form).
    let path = format!(
        "{}?alt=sse&key={}",
        gen_path("streamGenerateContent"),
        key.key_string
    );
    let r = ctx
        .send(
            format!("POST {path}"),
            ctx.http.post(ctx.url(&path)).json(&body),
        )
        .await;
    let (streamed, _) = check_chunks(&parse_sse(&r), "sse ?key=");
    assert_eq!(streamed, text);
}

#[tokio::test]
async fn count_tokens_matches_prompt_token_count() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-count").await;
    let contents = json!([{"role": "user", "parts": [{"text": PROMPT}]}]);
    let system = json!({"parts": [{"text": "Be brief."}]});

    let (plain, with_system) = {
        let _g = generation_lock().await;
        let a = ctx
            .generate(
                &key.key_string,
                &json!({"contents": contents, "generationConfig": {"maxOutputTokens": 1}}),
            )
            .await;
        let b = ctx
            .generate(
                &key.key_string,
                &json!({"contents": contents, "systemInstruction": system,
                        "generationConfig": {"maxOutputTokens": 1}}),
            )
            .await;
        (
            check_generation(&a, 1).2["promptTokenCount"].clone(),
            check_generation(&b, 1).2["promptTokenCount"].clone(),
        )
    };

    let r = ctx
        .gemini_post(
            &key.key_string,
            &gen_path("countTokens"),
            &json!({"contents": contents}),
        )
        .await;
    assert_eq!(
        r.ok()["totalTokens"],
        plain,
        "countTokens == promptTokenCount\n{}",
        r.describe()
    );

    let r = ctx
        .gemini_post(
            &key.key_string,
            &gen_path("countTokens"),
            &json!({"generateContentRequest": {"model": format!("models/{MODEL}"), "contents": contents}}),
        )
        .await;
    assert_eq!(r.ok()["totalTokens"], plain, "{}", r.describe());

    let r = ctx
        .gemini_post(
            &key.key_string,
            &gen_path("countTokens"),
            &json!({"generateContentRequest": {"model": format!("models/{MODEL}"),
                    "contents": contents, "systemInstruction": system}}),
        )
        .await;
    assert_eq!(
        r.ok()["totalTokens"],
        with_system,
        "countTokens with a systemInstruction == promptTokenCount with it\n{}",
        r.describe()
    );
}

#[tokio::test]
async fn all_api_versions_serve_the_same_methods() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-versions").await;
    let count = json!({"contents": [{"parts": [{"text": PROMPT}]}]});
    let mut totals = Vec::new();
    for v in ["v1", "v1beta", "v1alpha"] {
        let r = ctx
            .gemini_get(&key.key_string, &format!("/{v}/models"))
            .await;
        assert!(r.ok()["models"].is_array(), "{}", r.describe());
        let r = ctx
            .gemini_post(
                &key.key_string,
                &format!("/{v}/models/{MODEL}:countTokens"),
                &count,
            )
            .await;
        totals.push(r.ok()["totalTokens"].clone());
    }
    assert!(totals.windows(2).all(|w| w[0] == w[1]), "{totals:?}");
    let _g = generation_lock().await;
    let r = ctx
        .gemini_post(
            &key.key_string,
            &format!("/v1/models/{MODEL}:generateContent"),
            &gen_body(PROMPT, 2),
        )
        .await;
    check_generation(&r, 2);
}

#[tokio::test]
async fn missing_key_is_permission_denied() {
    let s = server();
    let ctx = Ctx::anonymous(&s.base);
    let body = gen_body(PROMPT, 2);
    for path in [
        gen_path("generateContent"),
        gen_path("countTokens"),
        format!("{}?alt=sse", gen_path("streamGenerateContent")),
    ] {
        ctx.gemini_post_raw(None, &path, &body.to_string())
            .await
            .err(403, "PERMISSION_DENIED");
    }
    let r = ctx
        .send(
            "GET /v1beta/models".into(),
            ctx.http.get(ctx.url("/v1beta/models")),
        )
        .await;
    r.err(403, "PERMISSION_DENIED");
}

#[tokio::test]
async fn invalid_keys_are_api_key_invalid() {
    let s = server();
    let ctx = Ctx::anonymous(&s.base);
    let body = gen_body(PROMPT, 2);
    let check = |r: &Resp| {
        let info = r.err_reason(400, "INVALID_ARGUMENT", "API_KEY_INVALID");
        assert_eq!(info["domain"], "googleapis.com", "{}", r.describe());
        assert_eq!(info["metadata"]["service"], GL, "{}", r.describe());
    };
    for key in [unknown_key(), "abc".to_owned()] {
        check(
            &ctx.gemini_post(&key, &gen_path("generateContent"), &body)
                .await,
        );
        check(&ctx.gemini_post(&key, &gen_path("countTokens"), &body).await);
        check(
            &ctx.gemini_post(
                &key,
                &format!("{}?alt=sse", gen_path("streamGenerateContent")),
                &body,
            )
            .await,
        );
        check(&ctx.gemini_get(&key, "/v1beta/models").await);
        // In the query string.
        let path = format!("{}?key={key}", gen_path("generateContent"));
        check(
            &ctx.send(
                format!("POST {path}"),
                ctx.http.post(ctx.url(&path)).json(&body),
            )
            .await,
        );
    }
}

#[tokio::test]
async fn a_project_without_the_api_refuses_its_keys_until_re_enabled() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-disabled").await;
    let count = json!({"contents": [{"parts": [{"text": "hello"}]}]});
    ctx.gemini_post(&key.key_string, &gen_path("countTokens"), &count)
        .await
        .ok();

    ctx.set_service(&key.project_id, GL, false).await;
    for r in [
        ctx.gemini_post(&key.key_string, &gen_path("countTokens"), &count)
            .await,
        ctx.generate(&key.key_string, &gen_body(PROMPT, 2)).await,
    ] {
        let info = r.err_reason(403, "PERMISSION_DENIED", "SERVICE_DISABLED");
        assert_eq!(
            info["metadata"]["consumer"],
            format!("projects/{}", key.project_number),
            "{}",
            r.describe()
        );
        assert_eq!(info["metadata"]["service"], GL, "{}", r.describe());
    }

    ctx.set_service(&key.project_id, GL, true).await;
    ctx.gemini_post(&key.key_string, &gen_path("countTokens"), &count)
        .await
        .ok();
}

#[tokio::test]
async fn a_deleted_key_is_invalid_until_undeleted() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-deleted").await;
    let count = json!({"contents": [{"parts": [{"text": "hello"}]}]});
    ctx.gemini_post(&key.key_string, &gen_path("countTokens"), &count)
        .await
        .ok();
    ctx.delete(&format!("/v2/{}", key.name)).await.ok();
    ctx.gemini_post(&key.key_string, &gen_path("countTokens"), &count)
        .await
        .err_reason(400, "INVALID_ARGUMENT", "API_KEY_INVALID");
    ctx.post(&format!("/v2/{}:undelete", key.name), &json!({}))
        .await
        .ok();
    ctx.gemini_post(&key.key_string, &gen_path("countTokens"), &count)
        .await
        .ok();
}

#[tokio::test]
async fn unknown_model_is_not_found() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-nomodel").await;
    let body = gen_body(PROMPT, 2);
    for verb in [
        "generateContent",
        "countTokens",
        "streamGenerateContent?alt=sse",
    ] {
        ctx.gemini_post(
            &key.key_string,
            &format!("/v1beta/models/no-such-model:{verb}"),
            &body,
        )
        .await
        .err(404, "NOT_FOUND");
    }
}

#[tokio::test]
async fn bad_requests_are_invalid_argument() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-badreq").await;
    // Some of these requests generate when the server wrongly accepts them.
    let _g = generation_lock().await;
    let k = key.key_string.as_str();
    let gen = gen_path("generateContent");
    let sse = format!("{}?alt=sse", gen_path("streamGenerateContent"));
    let count = gen_path("countTokens");
    let hi = json!([{"parts": [{"text": "hi"}]}]);
    let mut soft = Soft::default();

    // Malformed JSON.
    for path in [&gen, &sse, &count] {
        let r = ctx.gemini_post_raw(Some(k), path, "{\"contents\": [").await;
        soft.check(|| r.err(400, "INVALID_ARGUMENT"));
    }
    // Empty or missing contents.
    for body in [json!({"contents": []}), json!({})] {
        for path in [&gen, &sse] {
            let r = ctx.gemini_post(k, path, &body).await;
            soft.check(|| r.err(400, "INVALID_ARGUMENT"));
        }
    }
    // Unknown fields, at the top and nested; CountTokensRequest has no generationConfig.
    let unknown = [
        (&gen, json!({"contents": hi, "foo": 1}), "foo"),
        (
            &gen,
            json!({"contents": hi, "generationConfig": {"foo": 1}}),
            "foo",
        ),
        (
            &gen,
            json!({"contents": [{"parts": [{"text": "hi", "foo": 1}]}]}),
            "foo",
        ),
        (&sse, json!({"contents": hi, "foo": 1}), "foo"),
        (&count, json!({"contents": hi, "foo": 1}), "foo"),
        (
            &count,
            json!({"contents": hi, "generationConfig": {"maxOutputTokens": 1}}),
            "generationConfig",
        ),
    ];
    for (path, body, name) in unknown {
        let r = ctx.gemini_post(k, path, &body).await;
        soft.check(|| {
            let e = r.err(400, "INVALID_ARGUMENT");
            let msg = e["message"].as_str().unwrap();
            assert!(
                msg.contains(&format!("Invalid JSON payload received. Unknown name \"{name}\"")),
                "message should be Google's `Invalid JSON payload received. Unknown name \"{name}\" ...`\n{}",
                r.describe()
            );
        });
    }
    // Out-of-range temperature.
    for path in [&gen, &sse] {
        let body =
            json!({"contents": hi, "generationConfig": {"temperature": 5, "maxOutputTokens": 1}});
        let r = ctx.gemini_post(k, path, &body).await;
        soft.check(|| r.err(400, "INVALID_ARGUMENT"));
    }
    soft.finish();
}

#[tokio::test]
async fn odd_inputs_never_get_a_bare_500() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-odd").await;
    // Some of these requests generate when the server wrongly accepts them.
    let _g = generation_lock().await;
    let k = key.key_string.as_str();
    let gen = gen_path("generateContent");
    let count = gen_path("countTokens");
    let mut soft = Soft::default();
    // Bad for both generateContent and countTokens.
    let both = [
        "",
        "null",
        "[]",
        "\"contents\"",
        "{\"contents\": \"hi\"}",
        "{\"contents\": [{}]}",
        "{\"contents\": [{\"parts\": []}]}",
        "{\"contents\": [{\"parts\": [{}]}]}",
        "{\"contents\": [{\"role\": \"robot\", \"parts\": [{\"text\": \"hi\"}]}]}",
        "{\"contents\": [{\"parts\": [{\"text\": 5}]}]}",
        "{\"contents\": [{\"parts\": [{\"inlineData\": {\"mimeType\": \"image/png\", \"data\": \"!!!\"}}]}]}",
        "\u{0}\u{1}\u{2}",
    ];
    // Bad generation settings (generateContent only).
    let gen_only = [
        "{\"contents\": [{\"parts\": [{\"text\": \"hi\"}]}], \"generationConfig\": {\"maxOutputTokens\": -1}}",
        "{\"contents\": [{\"parts\": [{\"text\": \"hi\"}]}], \"generationConfig\": {\"maxOutputTokens\": \"lots\"}}",
        "{\"contents\": [{\"parts\": [{\"text\": \"hi\"}]}], \"generationConfig\": {\"topP\": 7}}",
        "{\"contents\": [{\"parts\": [{\"text\": \"hi\"}]}], \"generationConfig\": {\"candidateCount\": 9}}",
    ];
    let cases = both
        .iter()
        .flat_map(|b| [(gen.clone(), *b), (count.clone(), *b)])
        .chain(gen_only.iter().map(|b| (gen.clone(), *b)));
    for (path, body) in cases {
        let r = ctx.gemini_post_raw(Some(k), &path, body).await;
        soft.check(|| {
            r.status_error();
            assert!(
                (400..500).contains(&r.status),
                "a bad request is a 4xx\n{}",
                r.describe()
            );
        });
    }
    // Wrong method and unknown paths still answer with a google.rpc.Status.
    for (method, path) in [
        ("GET", gen.clone()),
        ("GET", "/v1beta/nothing/here".to_owned()),
        ("POST", format!("/v1beta/models/{MODEL}:noSuchVerb")),
    ] {
        let req = match method {
            "GET" => ctx.http.get(ctx.url(&path)),
            _ => ctx.http.post(ctx.url(&path)).json(&gen_body("hi", 1)),
        }
        .header("x-goog-api-key", k);
        let r = ctx.send(format!("{method} {path}"), req).await;
        soft.check(|| {
            r.status_error();
            assert!((400..500).contains(&r.status), "{}", r.describe());
        });
    }
    // The server is still healthy.
    ctx.gemini_post(
        k,
        &count,
        &json!({"contents": [{"parts": [{"text": "ok"}]}]}),
    )
    .await
    .ok();
    soft.finish();
}

#[tokio::test]
async fn eight_concurrent_requests_all_succeed() {
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-conc").await;
    let _g = generation_lock().await;
    let bodies: Vec<Value> = (0..8)
        .map(|i| gen_body(&format!("Count to {i} in words"), 4))
        .collect();
    let calls = bodies.iter().map(|b| ctx.generate(&key.key_string, b));
    let results = futures::future::join_all(calls).await;
    for r in &results {
        check_generation(r, 4);
    }
}

#[tokio::test]
async fn an_api_key_sent_as_bearer_is_unauthenticated() {
    // Google's native endpoint answers 401 ACCESS_TOKEN_TYPE_UNSUPPORTED (spec §9.1).
    let s = server();
    let ctx = s.ctx().await;
    let key = ctx.new_key("dp-bearer").await;
    let path = gen_path("countTokens");
    let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let r = ctx
        .send(
            format!("POST {path} (Authorization: Bearer API_KEY)"),
            ctx.http
                .post(ctx.url(&path))
                .bearer_auth(&key.key_string)
                .json(&body),
        )
        .await;
    r.err_reason(401, "UNAUTHENTICATED", "ACCESS_TOKEN_TYPE_UNSUPPORTED");
}
