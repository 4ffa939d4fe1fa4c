//! Quotas and metering on the request path (DESIGN.md steps 6 and 8), over HTTP against
//! the real binary: per project and model, by tier, requests per minute, input tokens per
//! minute and requests per day; Google's 429 with Help, QuotaFailure and RetryInfo; tier
//! changes seen by the next call; usage buckets per minute, key, model, method and status,
//! kept across a restart (and the day's count with them).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const FREE_REQUESTS: &str = "generativelanguage.googleapis.com/generate_content_free_tier_requests";

/// A config file in a directory that outlives the test binary's servers.
fn config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyplane-quota-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// RPM 3 for every model of the free tier; usage written every second.
fn rpm_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let path = config(
            "rpm.toml",
            "[quota.free]\nrpm = 3\n\n[usage]\nflush_seconds = 1\n",
        );
        Server::start_with(Options {
            args: vec!["--config".into(), path.display().to_string()],
            ..Options::default()
        })
    })
}

/// Waits out the end of a minute when fewer than `need` seconds of it are left, so that a
/// test's calls fall in one quota window.
async fn same_minute(need: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 60 - now % 60;
    if left < need {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

fn detail<'a>(err: &'a Value, kind: &str) -> &'a Value {
    err["details"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|x| x["@type"] == format!("type.googleapis.com/google.rpc.{kind}"))
        })
        .unwrap_or_else(|| panic!("no {kind} detail in {err}"))
}

/// The checks every quota refusal must pass; returns (quotaId, retry seconds).
fn check_quota_error(err: &Value, model: &str, limit: u64) -> (String, u64) {
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("You exceeded your current quota"),
        "{err}"
    );
    assert!(
        message.contains(&format!("limit: {limit}, model: {model}")),
        "{err}"
    );
    let help = detail(err, "Help");
    assert_eq!(
        help["links"][0]["url"],
        "https://ai.google.dev/gemini-api/docs/rate-limits"
    );
    let v = &detail(err, "QuotaFailure")["violations"][0];
    assert_eq!(v["quotaDimensions"]["model"], model, "{err}");
    assert_eq!(v["quotaDimensions"]["location"], "global", "{err}");
    assert_eq!(v["quotaValue"], limit.to_string(), "{err}");
    let delay = detail(err, "RetryInfo")["retryDelay"]
        .as_str()
        .expect("retryDelay");
    let secs: u64 = delay
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("retryDelay {delay:?}"));
    assert!(
        message.contains(&format!("Please retry in {secs}s.")),
        "{err}"
    );
    (v["quotaId"].as_str().unwrap_or_default().to_owned(), secs)
}

#[tokio::test]
async fn the_minute_limit_answers_googles_429_per_project_and_model() {
    let _g = generation_lock().await;
    let ctx = rpm_server().ctx().await;
    let key = ctx.new_key("rpm").await;
    let other = ctx.new_key("rpm-other").await;
    same_minute(40).await;
    // countTokens does not count against the generation quota.
    for _ in 0..4 {
        ctx.gemini_post(
            &key.key_string,
            &format!("/v1beta/models/{MODEL}:countTokens"),
            &json!({"contents": [{"parts": [{"text": "hello"}]}]}),
        )
        .await
        .ok();
    }
    for _ in 0..3 {
        ctx.generate(&key.key_string, &gen_body("Say hi.", 2))
            .await
            .ok();
    }
    let r = ctx.generate(&key.key_string, &gen_body("Say hi.", 2)).await;
    let err = r.err(429, "RESOURCE_EXHAUSTED");
    let (quota_id, secs) = check_quota_error(&err, MODEL, 3);
    assert_eq!(
        quota_id,
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    );
    assert_eq!(
        detail(&err, "QuotaFailure")["violations"][0]["quotaMetric"],
        FREE_REQUESTS
    );
    assert!((1..=60).contains(&secs), "{secs}");
    // The stream is refused the same way (same model, same window)...
    let r = ctx
        .gemini_post(
            &key.key_string,
            &format!("/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"),
            &gen_body("Say hi.", 2),
        )
        .await;
    r.err(429, "RESOURCE_EXHAUSTED");
    // ...but another model of the project, and the same model in another project, are not.
    ctx.gemini_post(
        &key.key_string,
        "/v1beta/models/gemini-2.0-flash:generateContent",
        &gen_body("Say hi.", 2),
    )
    .await
    .ok();
    ctx.generate(&other.key_string, &gen_body("Say hi.", 2))
        .await
        .ok();

    // The quota page says the same.
    let q = ctx
        .get(&format!("/v1/keyplane/projects/{}/quotas", key.project_id))
        .await
        .ok();
    assert_eq!(q["tier"], "free");
    assert_eq!(q["limits"]["requestsPerMinute"], 3);
    let m = q["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == MODEL)
        .cloned()
        .unwrap_or_else(|| panic!("{q}"));
    assert_eq!(m["requestsThisMinute"], 3, "{q}");
    assert!(m["inputTokensThisMinute"].as_u64().unwrap() > 0, "{q}");
}

#[tokio::test]
async fn a_tier_change_applies_to_the_next_call() {
    let _g = generation_lock().await;
    let ctx = rpm_server().ctx().await;
    let key = ctx.new_key("tier").await;
    same_minute(40).await;
    for _ in 0..3 {
        ctx.generate(&key.key_string, &gen_body("Hi", 1)).await.ok();
    }
    ctx.generate(&key.key_string, &gen_body("Hi", 1))
        .await
        .err(429, "RESOURCE_EXHAUSTED");

    // Bad tiers and callers change nothing.
    let path = format!("/v1/keyplane/projects/{}:setTier", key.project_id);
    let r = ctx.post(&path, &json!({"tier": "gold"})).await;
    let err = r.err(400, "INVALID_ARGUMENT");
    assert_eq!(
        detail(&err, "BadRequest")["fieldViolations"][0]["field"],
        "tier"
    );
    ctx.post(&path, &json!({"plan": "tier-1"}))
        .await
        .err(400, "INVALID_ARGUMENT");
    ctx.post(&path, &json!(["tier-1"]))
        .await
        .err(400, "INVALID_ARGUMENT");
    let anonymous = Ctx::anonymous(&rpm_server().base);
    let r = anonymous.post(&path, &json!({"tier": "tier-1"})).await;
    assert!(matches!(r.status, 401 | 403), "{}", r.describe());
    ctx.post(
        "/v1/keyplane/projects/no-such-project-x:setTier",
        &json!({"tier": "tier-1"}),
    )
    .await
    .err(403, "PERMISSION_DENIED");
    ctx.post(
        &format!("/v1/keyplane/projects/{}:setPlan", key.project_id),
        &json!({"tier": "tier-1"}),
    )
    .await
    .err(404, "NOT_FOUND");
    ctx.generate(&key.key_string, &gen_body("Hi", 1))
        .await
        .err(429, "RESOURCE_EXHAUSTED");

    // Tier 1 (Google's limits: 1,000 RPM): the very next call is served.
    let q = ctx.post(&path, &json!({"tier": "tier-1"})).await.ok();
    assert_eq!(q["tier"], "tier-1");
    assert_eq!(q["limits"]["requestsPerMinute"], 1000);
    ctx.generate(&key.key_string, &gen_body("Hi", 1)).await.ok();
    // The project resource keeps the tier (Resource Manager does not show it; the store does).
    let q = ctx
        .get(&format!(
            "/v1/keyplane/projects/{}/quotas",
            key.project_number
        ))
        .await
        .ok();
    assert_eq!(q["tier"], "tier-1");
    assert_eq!(q["projectId"], key.project_id.as_str());
}

#[tokio::test]
async fn usage_is_metered_per_minute_key_model_method_and_status() {
    let _g = generation_lock().await;
    let ctx = rpm_server().ctx().await;
    let key = ctx.new_key("usage").await;
    same_minute(40).await;
    let r = ctx
        .generate(&key.key_string, &gen_body("Count to three.", 5))
        .await
        .ok();
    let prompt = r["usageMetadata"]["promptTokenCount"].as_i64().unwrap();
    let out = r["usageMetadata"]["candidatesTokenCount"].as_i64().unwrap();
    let r = ctx
        .gemini_post(
            &key.key_string,
            &format!("/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"),
            &gen_body("Count to three.", 5),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    ctx.gemini_post(
        &key.key_string,
        &format!("/v1beta/models/{MODEL}:countTokens"),
        &json!({"contents": [{"parts": [{"text": "Count to three."}]}]}),
    )
    .await
    .ok();
    // A refused body (400) is metered with its status, and uses no quota: two more calls
    // fit in the minute's three, the next one does not.
    for _ in 0..3 {
        ctx.gemini_post(
            &key.key_string,
            &format!("/v1beta/models/{MODEL}:generateContent"),
            &json!({"contents": []}),
        )
        .await
        .err(400, "INVALID_ARGUMENT");
    }
    ctx.generate(&key.key_string, &gen_body("x", 1)).await.ok();
    ctx.generate(&key.key_string, &gen_body("x", 1))
        .await
        .err(429, "RESOURCE_EXHAUSTED");

    // Read at once (pending buckets included), then again once flushed.
    for pass in 0..2 {
        if pass == 1 {
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        let u = ctx
            .get(&format!("/v1/keyplane/projects/{}/usage", key.project_id))
            .await
            .ok();
        let buckets = u["buckets"].as_array().unwrap().clone();
        let find = |method: &str, code: i64| -> Value {
            buckets
                .iter()
                .filter(|b| b["method"] == method && b["code"] == code && b["model"] == MODEL)
                .fold(json!({"requests": 0, "promptTokens": 0, "candidatesTokens": 0}), |acc, b| {
                    json!({
                        "requests": acc["requests"].as_i64().unwrap() + b["requests"].as_i64().unwrap(),
                        "promptTokens": acc["promptTokens"].as_i64().unwrap() + b["promptTokens"].as_i64().unwrap(),
                        "candidatesTokens": acc["candidatesTokens"].as_i64().unwrap() + b["candidatesTokens"].as_i64().unwrap(),
                        "key": b["key"].clone(),
                    })
                })
        };
        let gen = find("generateContent", 200);
        assert_eq!(gen["requests"], 2, "pass {pass}: {u}");
        assert!(gen["promptTokens"].as_i64().unwrap() >= prompt, "{u}");
        assert!(gen["candidatesTokens"].as_i64().unwrap() >= out, "{u}");
        assert_eq!(gen["key"], key.name.as_str(), "{u}");
        let stream = find("streamGenerateContent", 200);
        assert_eq!(stream["requests"], 1, "{u}");
        assert_eq!(stream["promptTokens"], prompt, "{u}");
        assert!(stream["candidatesTokens"].as_i64().unwrap() > 0, "{u}");
        assert_eq!(find("countTokens", 200)["requests"], 1, "{u}");
        assert_eq!(find("generateContent", 400)["requests"], 3, "{u}");
        assert_eq!(find("generateContent", 429)["requests"], 1, "{u}");
        assert_eq!(u["totals"]["requests"], 8, "{u}");
        assert_eq!(u["totals"]["errors"], 4, "{u}");
    }

    // Bad ranges are refused with the field named.
    let base = format!("/v1/keyplane/projects/{}/usage", key.project_id);
    for (query, field) in [
        ("?startTime=yesterday", "start_time"),
        ("?endTime=2026-13-01T00:00:00Z", "end_time"),
        (
            "?startTime=2026-01-02T00:00:00Z&endTime=2026-01-01T00:00:00Z",
            "end_time",
        ),
        (
            "?startTime=2025-01-01T00:00:00Z&endTime=2026-01-01T00:00:00Z",
            "start_time",
        ),
    ] {
        let r = ctx.get(&format!("{base}{query}")).await;
        let err = r.err(400, "INVALID_ARGUMENT");
        assert_eq!(
            detail(&err, "BadRequest")["fieldViolations"][0]["field"],
            field,
            "{query}"
        );
    }
    // A range with nothing in it is empty, not an error.
    let u = ctx
        .get(&format!(
            "{base}?startTime=2026-01-01T00:00:00Z&endTime=2026-01-01T01:00:00Z"
        ))
        .await
        .ok();
    assert_eq!(u["buckets"], json!([]));
    let r = Ctx::anonymous(&rpm_server().base).get(&base).await;
    assert!(matches!(r.status, 401 | 403), "{}", r.describe());
}

#[tokio::test]
async fn the_day_and_token_limits_hold_across_a_restart() {
    let _g = generation_lock().await;
    let path = config(
        "day.toml",
        "[quota.free]\nrpm = \"unlimited\"\nrpd = 2\ntpm = \"unlimited\"\n\n\
         [quota.free.models.\"gemini-2.0-flash\"]\nrpd = \"unlimited\"\ntpm = 10\n",
    );
    let mut server = Server::start_with(Options {
        args: vec!["--config".into(), path.display().to_string()],
        ..Options::default()
    });
    let ctx = server.ctx().await;
    let key = ctx.new_key("day").await;
    same_minute(30).await;
    for _ in 0..2 {
        ctx.generate(&key.key_string, &gen_body("Hi", 1)).await.ok();
    }
    let err = ctx
        .generate(&key.key_string, &gen_body("Hi", 1))
        .await
        .err(429, "RESOURCE_EXHAUSTED");
    let (quota_id, secs) = check_quota_error(&err, MODEL, 2);
    assert_eq!(
        quota_id,
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    );
    assert!(secs <= 86_400, "{secs}");

    // Input tokens: the call that crosses 10 is served, the next one is not.
    let long = gen_body(
        "Please write one short sentence about the sea and the sky.",
        1,
    );
    let tpm = "/v1beta/models/gemini-2.0-flash:generateContent";
    ctx.gemini_post(&key.key_string, tpm, &long).await.ok();
    let err = ctx
        .gemini_post(&key.key_string, tpm, &long)
        .await
        .err(429, "RESOURCE_EXHAUSTED");
    let (quota_id, _) = check_quota_error(&err, "gemini-2.0-flash", 10);
    assert_eq!(
        quota_id,
        "GenerateContentInputTokensPerModelPerMinute-FreeTier"
    );
    assert_eq!(
        detail(&err, "QuotaFailure")["violations"][0]["quotaMetric"],
        "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
    );

    // A restart writes the pending buckets first, and the day's count is read back.
    server.restart();
    let ctx = server.ctx().await;
    ctx.generate(&key.key_string, &gen_body("Hi", 1))
        .await
        .err(429, "RESOURCE_EXHAUSTED");
    let u = ctx
        .get(&format!("/v1/keyplane/projects/{}/usage", key.project_id))
        .await
        .ok();
    let ok: i64 = u["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["code"] == 200)
        .map(|b| b["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(ok, 3, "{u}");
    assert_eq!(u["totals"]["requests"], 6, "{u}");
}
