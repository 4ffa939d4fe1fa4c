//! API key restrictions on the data plane, from the outside over HTTP: API targets with
//! Google's method wildcards, server IPs (IPv4, IPv6, CIDR, X-Forwarded-For behind trusted
//! and untrusted peers), browser referrers, Android apps, iOS apps; that changes apply to
//! the very next request; and the Vertex AI express path (aiplatform.googleapis.com).
//!
//! Each case is one request with one key and an expected outcome: 200, or Google's 403
//! PERMISSION_DENIED with the ErrorInfo reason and metadata. Allowed cases mostly call
//! countTokens or models.get, which answer without generating.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start_shared)
}

const AIP: &str = "aiplatform.googleapis.com";
const LOCALIZED: &str = "type.googleapis.com/google.rpc.LocalizedMessage";
const SHA1: &str = "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709";
const SHA1_COLONS: &str = "da:39:a3:ee:5e:6b:4b:0d:32:55:bf:ef:95:60:18:90:af:d8:07:09";

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// One data-plane call a case makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// GET /{v}/models
    List(&'static str),
    /// GET /{v}/models/{MODEL}
    Get(&'static str),
    /// POST /{v}/models/{MODEL}:countTokens
    Count(&'static str),
    /// POST /{v}/models/{MODEL}:generateContent (4 tokens at most)
    Generate(&'static str),
    /// POST /{v}/models/{MODEL}:streamGenerateContent?alt=sse
    Stream(&'static str),
    /// POST /{v}/publishers/google/models/{MODEL}:countTokens (Vertex express)
    VertexCount(&'static str),
    /// POST /{v}/publishers/google/models/{MODEL}:generateContent (Vertex express)
    VertexGenerate(&'static str),
}

impl Probe {
    fn method_and_path(self) -> (&'static str, String) {
        match self {
            Probe::List(v) => ("GET", format!("/{v}/models")),
            Probe::Get(v) => ("GET", format!("/{v}/models/{MODEL}")),
            Probe::Count(v) => ("POST", format!("/{v}/models/{MODEL}:countTokens")),
            Probe::Generate(v) => ("POST", format!("/{v}/models/{MODEL}:generateContent")),
            Probe::Stream(v) => (
                "POST",
                format!("/{v}/models/{MODEL}:streamGenerateContent?alt=sse"),
            ),
            Probe::VertexCount(v) => (
                "POST",
                format!("/{v}/publishers/google/models/{MODEL}:countTokens"),
            ),
            Probe::VertexGenerate(v) => (
                "POST",
                format!("/{v}/publishers/google/models/{MODEL}:generateContent"),
            ),
        }
    }

    fn body(self) -> Option<Value> {
        let contents = json!([{"role": "user", "parts": [{"text": "Say hi"}]}]);
        match self {
            Probe::List(_) | Probe::Get(_) => None,
            Probe::Count(_) | Probe::VertexCount(_) => Some(json!({ "contents": contents })),
            _ => Some(json!({
                "contents": contents,
                "generationConfig": {"maxOutputTokens": 4, "temperature": 0}
            })),
        }
    }

    /// The service and the full RPC method name Google would name in errors.
    fn rpc(self) -> (&'static str, String) {
        let gl = |v: &str, m: &str| (GL, format!("google.ai.generativelanguage.{v}.{m}"));
        let aip = |v: &str, m: &str| {
            (
                AIP,
                format!("google.cloud.aiplatform.{v}.PredictionService.{m}"),
            )
        };
        match self {
            Probe::List(v) => gl(v, "ModelService.ListModels"),
            Probe::Get(v) => gl(v, "ModelService.GetModel"),
            Probe::Count(v) => gl(v, "GenerativeService.CountTokens"),
            Probe::Generate(v) => gl(v, "GenerativeService.GenerateContent"),
            Probe::Stream(v) => gl(v, "GenerativeService.StreamGenerateContent"),
            Probe::VertexCount(v) => aip(v, "CountTokens"),
            Probe::VertexGenerate(v) => aip(v, "GenerateContent"),
        }
    }

    fn generates(self) -> bool {
        matches!(
            self,
            Probe::Generate(_) | Probe::Stream(_) | Probe::VertexGenerate(_)
        )
    }
}

/// How the key travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyIn {
    Header,
    Query,
}

async fn call_with(
    ctx: &Ctx,
    key: &str,
    probe: Probe,
    headers: &[(&str, &str)],
    key_in: KeyIn,
) -> Resp {
    let (method, mut path) = probe.method_and_path();
    if key_in == KeyIn::Query {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&format!("key={key}"));
    }
    let mut req = match method {
        "GET" => ctx.http.get(ctx.url(&path)),
        _ => ctx.http.post(ctx.url(&path)),
    };
    if key_in == KeyIn::Header {
        req = req.header("x-goog-api-key", key);
    }
    if let Some(body) = probe.body() {
        req = req.json(&body);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let shown: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let shown_path = path.replace(key, "KEY");
    ctx.send(format!("{method} {shown_path} [{}]", shown.join("; ")), req)
        .await
}

async fn call(ctx: &Ctx, key: &str, probe: Probe, headers: &[(&str, &str)]) -> Resp {
    if probe.generates() {
        // Generation goes through the shared local model; keep it one at a time.
        let _g = generation_lock().await;
        call_with(ctx, key, probe, headers, KeyIn::Header).await
    } else {
        call_with(ctx, key, probe, headers, KeyIn::Header).await
    }
}

// ---------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Expect {
    /// HTTP 200 with a body of the right kind.
    Allowed,
    /// 403 PERMISSION_DENIED with this ErrorInfo reason, the consumer and service metadata,
    /// these extra metadata entries, and this text in the message.
    Blocked {
        reason: &'static str,
        metadata: Vec<(&'static str, String)>,
        message: String,
    },
}

fn allowed() -> Expect {
    Expect::Allowed
}

fn service_blocked(probe: Probe) -> Expect {
    let (service, method) = probe.rpc();
    Expect::Blocked {
        reason: "API_KEY_SERVICE_BLOCKED",
        message: format!("Requests to this API {service} method {method} are blocked."),
        metadata: vec![("apiName", service.to_owned()), ("methodName", method)],
    }
}

fn ip_blocked(ip: &str) -> Expect {
    Expect::Blocked {
        reason: "API_KEY_IP_ADDRESS_BLOCKED",
        message: format!(
            "The provided API key has an IP address restriction. The originating IP address of \
             the call ({ip}) violates this restriction."
        ),
        metadata: vec![("callerIp", ip.to_owned())],
    }
}

fn referrer_blocked(referrer: Option<&str>) -> Expect {
    let shown = referrer.unwrap_or("<empty>");
    Expect::Blocked {
        reason: "API_KEY_HTTP_REFERRER_BLOCKED",
        message: format!("Requests from referer {shown} are blocked."),
        metadata: vec![("httpReferrer", shown.to_owned())],
    }
}

fn android_blocked(package: Option<&str>) -> Expect {
    let shown = package.unwrap_or("<empty>");
    Expect::Blocked {
        reason: "API_KEY_ANDROID_APP_BLOCKED",
        message: format!("Requests from this Android client application {shown} are blocked."),
        metadata: vec![("androidPackage", shown.to_owned())],
    }
}

fn ios_blocked(bundle: Option<&str>) -> Expect {
    let shown = bundle.unwrap_or("<empty>");
    Expect::Blocked {
        reason: "API_KEY_IOS_APP_BLOCKED",
        message: format!("Requests from this iOS client application {shown} are blocked."),
        metadata: vec![("iosBundleId", shown.to_owned())],
    }
}

/// Asserts `r` is what `want` says, for a key of project `number` calling `probe`.
fn check(r: &Resp, want: &Expect, probe: Probe, number: &str) {
    match want {
        Expect::Allowed => {
            assert_eq!(r.status, 200, "expected HTTP 200\n{}", r.describe());
            if matches!(probe, Probe::Stream(_)) {
                assert!(
                    r.content_type.starts_with("text/event-stream") && r.text.starts_with("data: "),
                    "expected an SSE stream\n{}",
                    r.describe()
                );
                return;
            }
            let v = r.ok();
            let shape_ok = match probe {
                Probe::List(_) => v["models"].is_array(),
                Probe::Get(_) => v["name"].is_string(),
                Probe::Count(_) | Probe::VertexCount(_) => v["totalTokens"].as_u64() > Some(0),
                _ => v["candidates"][0]["content"]["parts"].is_array(),
            };
            assert!(shape_ok, "unexpected response body\n{}", r.describe());
        }
        Expect::Blocked {
            reason,
            metadata,
            message,
        } => {
            let (service, _) = probe.rpc();
            let info = r.err_reason(403, "PERMISSION_DENIED", reason);
            let e = r.json()["error"].clone();
            assert_eq!(
                e["message"].as_str().unwrap_or_default(),
                message,
                "error.message\n{}",
                r.describe()
            );
            assert_eq!(info["domain"], "googleapis.com", "{}", r.describe());
            let md = &info["metadata"];
            assert_eq!(
                md["consumer"],
                format!("projects/{number}"),
                "metadata.consumer\n{}",
                r.describe()
            );
            assert_eq!(md["service"], service, "metadata.service\n{}", r.describe());
            for (k, v) in metadata {
                assert_eq!(md[*k], v.as_str(), "metadata.{k}\n{}", r.describe());
            }
            let localized = e["details"]
                .as_array()
                .and_then(|d| d.iter().find(|d| d["@type"] == LOCALIZED))
                .unwrap_or_else(|| panic!("no LocalizedMessage detail\n{}", r.describe()));
            assert_eq!(localized["message"], e["message"], "{}", r.describe());
        }
    }
}

/// One row of a table: a request with these headers, and what must come back.
struct Row {
    probe: Probe,
    headers: Vec<(&'static str, String)>,
    want: Expect,
}

fn row(probe: Probe, headers: &[(&'static str, &str)], want: Expect) -> Row {
    Row {
        probe,
        headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        want,
    }
}

/// Runs every row with `key`, collecting failures in `soft`.
async fn run_table(ctx: &Ctx, key: &TestKey, label: &str, rows: &[Row], soft: &mut Soft) {
    for (i, row) in rows.iter().enumerate() {
        let headers: Vec<(&str, &str)> =
            row.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = call(ctx, &key.key_string, row.probe, &headers).await;
        soft.check(|| {
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check(&r, &row.want, row.probe, &key.project_number)
            }));
            if let Err(e) = res {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("[{label} row {i}: {:?}] {msg}", row.probe);
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// A project with these services enabled.
async fn project_with(ctx: &Ctx, prefix: &str, services: &[&str]) -> (String, String) {
    let id = unique_project_id(prefix);
    let number = project_number(&ctx.create_project(&id).await);
    for s in services {
        ctx.set_service(&id, s, true).await;
    }
    (id, number)
}

/// Creates a key with `restrictions` (a Google `Restrictions` JSON) in the project.
async fn key_with(ctx: &Ctx, project: &(String, String), restrictions: Value) -> TestKey {
    let (id, number) = project;
    let r = ctx
        .post(
            &format!("/v2/projects/{id}/locations/global/keys"),
            &json!({"displayName": "restricted", "restrictions": restrictions}),
        )
        .await;
    let op = r.ok();
    assert!(
        op["done"] == true && op.get("error").is_none(),
        "key creation failed\n{}",
        r.describe()
    );
    let key = &op["response"];
    TestKey {
        project_id: id.clone(),
        project_number: number.clone(),
        name: key["name"].as_str().expect("key name").to_owned(),
        key_string: key["keyString"].as_str().expect("keyString").to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// API targets
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn api_targets_with_method_wildcards() {
    use Probe::*;
    let ctx = server().ctx().await;
    let project = project_with(&ctx, "rs-targets", &[GL, AIP]).await;
    let mut soft = Soft::default();
    // (apiTargets, rows)
    let table: Vec<(Value, Vec<Row>)> = vec![
        // No targets: every API enabled in the project, Vertex included (console keys).
        (
            json!([]),
            vec![
                row(List("v1beta"), &[], allowed()),
                row(Count("v1"), &[], allowed()),
                row(VertexCount("v1"), &[], allowed()),
            ],
        ),
        // The service alone: all its methods, no other service.
        (
            json!([{"service": GL}]),
            vec![
                row(List("v1beta"), &[], allowed()),
                row(Get("v1"), &[], allowed()),
                row(Count("v1beta"), &[], allowed()),
                row(VertexCount("v1"), &[], service_blocked(VertexCount("v1"))),
                row(
                    VertexGenerate("v1beta1"),
                    &[],
                    service_blocked(VertexGenerate("v1beta1")),
                ),
            ],
        ),
        // Another service only (and the blocked method names the request's version).
        (
            json!([{"service": AIP}]),
            vec![
                row(List("v1beta"), &[], service_blocked(List("v1beta"))),
                row(List("v1"), &[], service_blocked(List("v1"))),
                row(Generate("v1beta"), &[], service_blocked(Generate("v1beta"))),
                row(Stream("v1"), &[], service_blocked(Stream("v1"))),
                row(VertexCount("v1beta1"), &[], allowed()),
            ],
        ),
        // A bare method name.
        (
            json!([{"service": GL, "methods": ["CountTokens"]}]),
            vec![
                row(Count("v1beta"), &[], allowed()),
                row(Count("v1"), &[], allowed()),
                row(Generate("v1beta"), &[], service_blocked(Generate("v1beta"))),
                row(List("v1beta"), &[], service_blocked(List("v1beta"))),
            ],
        ),
        // A prefix wildcard on the bare method: Generate* is not StreamGenerate*.
        (
            json!([{"service": GL, "methods": ["Get*", "Count*"]}]),
            vec![
                row(Get("v1beta"), &[], allowed()),
                row(Count("v1"), &[], allowed()),
                row(List("v1beta"), &[], service_blocked(List("v1beta"))),
                row(Stream("v1beta"), &[], service_blocked(Stream("v1beta"))),
            ],
        ),
        (
            json!([{"service": GL, "methods": ["Generate*"]}]),
            vec![
                row(Stream("v1beta"), &[], service_blocked(Stream("v1beta"))),
                row(Count("v1beta"), &[], service_blocked(Count("v1beta"))),
            ],
        ),
        // Service-qualified prefix.
        (
            json!([{"service": GL, "methods": ["generativelanguage.googleapis.com.List*"]}]),
            vec![
                row(List("v1"), &[], allowed()),
                row(Get("v1"), &[], service_blocked(Get("v1"))),
            ],
        ),
        // Fully qualified names pin the API version.
        (
            json!([{"service": GL, "methods": [
                "google.ai.generativelanguage.v1beta.GenerativeService.CountTokens",
                "google.ai.generativelanguage.v1beta.ModelService.*"
            ]}]),
            vec![
                row(Count("v1beta"), &[], allowed()),
                row(Count("v1"), &[], service_blocked(Count("v1"))),
                row(List("v1beta"), &[], allowed()),
                row(Get("v1beta"), &[], allowed()),
                row(List("v1"), &[], service_blocked(List("v1"))),
            ],
        ),
        // Case-insensitive service and methods; "*" is every method.
        (
            json!([
                {"service": "GenerativeLanguage.GoogleAPIs.com", "methods": ["countTOKENS"]},
                {"service": AIP, "methods": ["*"]}
            ]),
            vec![
                row(Count("v1beta"), &[], allowed()),
                row(Get("v1beta"), &[], service_blocked(Get("v1beta"))),
                row(VertexCount("v1"), &[], allowed()),
            ],
        ),
        // Interface-qualified method.
        (
            json!([{"service": GL, "methods": ["ModelService.GetModel"]}]),
            vec![
                row(Get("v1alpha"), &[], allowed()),
                row(List("v1alpha"), &[], service_blocked(List("v1alpha"))),
            ],
        ),
    ];
    for (targets, rows) in &table {
        let key = key_with(&ctx, &project, json!({ "apiTargets": targets })).await;
        run_table(&ctx, &key, &targets.to_string(), rows, &mut soft).await;
    }
    soft.finish();
}

// ---------------------------------------------------------------------------------------
// Server IPs
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn server_ip_restrictions_use_the_socket_peer() {
    use Probe::*;
    let ctx = server().ctx().await;
    let project = project_with(&ctx, "rs-ips", &[GL]).await;
    let mut soft = Soft::default();
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    let table: Vec<(Value, Vec<Row>)> = vec![
        (
            json!(["127.0.0.1"]),
            vec![
                row(Count("v1beta"), &[], allowed()),
                row(List("v1"), &[], allowed()),
                // Without a trusted proxy, X-Forwarded-For is not believed.
                row(Count("v1beta"), &xff("203.0.113.5"), allowed()),
            ],
        ),
        (
            json!(["127.0.0.0/8"]),
            vec![row(Get("v1beta"), &[], allowed())],
        ),
        (
            json!(["0.0.0.0/0"]),
            vec![row(Get("v1beta"), &[], allowed())],
        ),
        (
            json!(["10.0.0.0/8", "192.0.2.1"]),
            vec![
                row(Count("v1beta"), &[], ip_blocked("127.0.0.1")),
                row(Generate("v1beta"), &[], ip_blocked("127.0.0.1")),
            ],
        ),
        (
            json!(["203.0.113.5"]),
            vec![row(
                Count("v1beta"),
                &xff("203.0.113.5"),
                ip_blocked("127.0.0.1"),
            )],
        ),
        // An IPv6 entry does not match an IPv4 caller, unless it is the mapped form.
        (
            json!(["::1", "2001:db8::/32"]),
            vec![row(Get("v1"), &[], ip_blocked("127.0.0.1"))],
        ),
        (
            json!(["::ffff:127.0.0.1"]),
            vec![row(Get("v1"), &[], allowed())],
        ),
        (
            json!(["127.0.0.2/31"]),
            vec![row(Get("v1"), &[], ip_blocked("127.0.0.1"))],
        ),
        (
            json!(["127.0.0.0/31"]),
            vec![row(Get("v1"), &[], allowed())],
        ),
    ];
    for (ips, rows) in &table {
        let key = key_with(
            &ctx,
            &project,
            json!({"serverKeyRestrictions": {"allowedIps": ips}}),
        )
        .await;
        run_table(&ctx, &key, &ips.to_string(), rows, &mut soft).await;
    }
    // The key in ?key= is held to the same restriction.
    let key = key_with(
        &ctx,
        &project,
        json!({"serverKeyRestrictions": {"allowedIps": ["198.51.100.0/24"]}}),
    )
    .await;
    let r = call_with(&ctx, &key.key_string, Count("v1beta"), &[], KeyIn::Query).await;
    soft.check(|| {
        check(
            &r,
            &ip_blocked("127.0.0.1"),
            Count("v1beta"),
            &key.project_number,
        )
    });
    soft.finish();
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    use Probe::*;
    let s = Server::start_with(Options {
        env: vec![(
            "KEYPLANE_TRUSTED_PROXIES".into(),
            "127.0.0.1/32, 10.0.0.0/8".into(),
        )],
        ..Options::default()
    });
    let ctx = s.ctx().await;
    let project = project_with(&ctx, "rs-xff", &[GL]).await;
    let mut soft = Soft::default();
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    let table: Vec<(Value, Vec<Row>)> = vec![
        (
            json!(["203.0.113.0/24"]),
            vec![
                row(Count("v1beta"), &xff("203.0.113.77"), allowed()),
                row(Count("v1beta"), &xff("203.0.113.77:51234"), allowed()),
                // Through another trusted proxy.
                row(Get("v1beta"), &xff("203.0.113.77, 10.1.2.3"), allowed()),
                row(
                    Count("v1beta"),
                    &xff("198.51.100.1"),
                    ip_blocked("198.51.100.1"),
                ),
                // A forged leftmost entry does not help: the rightmost untrusted one counts.
                row(
                    Count("v1beta"),
                    &xff("203.0.113.77, 198.51.100.1"),
                    ip_blocked("198.51.100.1"),
                ),
                // No header: the proxy itself is the caller.
                row(Count("v1beta"), &[], ip_blocked("127.0.0.1")),
                row(Count("v1beta"), &xff("unknown"), ip_blocked("unknown")),
            ],
        ),
        (
            json!(["2001:db8::/32"]),
            vec![
                row(Count("v1"), &xff("2001:db8:1::5"), allowed()),
                row(List("v1"), &xff("[2001:db8::9]:4711"), allowed()),
                row(Count("v1"), &xff("2001:db9::1"), ip_blocked("2001:db9::1")),
                row(
                    Count("v1"),
                    &xff("203.0.113.77"),
                    ip_blocked("203.0.113.77"),
                ),
            ],
        ),
        (
            json!(["2001:db8::1", "198.51.100.7"]),
            vec![
                row(Get("v1beta"), &xff("2001:db8::1"), allowed()),
                row(Get("v1beta"), &xff("198.51.100.7"), allowed()),
                row(Get("v1beta"), &xff("::ffff:198.51.100.7"), allowed()),
                row(
                    Get("v1beta"),
                    &xff("2001:db8::2"),
                    ip_blocked("2001:db8::2"),
                ),
                row(
                    Get("v1beta"),
                    &xff("198.51.100.8"),
                    ip_blocked("198.51.100.8"),
                ),
            ],
        ),
    ];
    for (ips, rows) in &table {
        let key = key_with(
            &ctx,
            &project,
            json!({"serverKeyRestrictions": {"allowedIps": ips}}),
        )
        .await;
        run_table(&ctx, &key, &ips.to_string(), rows, &mut soft).await;
    }
    soft.finish();
}

// ---------------------------------------------------------------------------------------
// Browser referrers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn browser_referrer_restrictions_follow_googles_examples() {
    use Probe::*;
    let ctx = server().ctx().await;
    let project = project_with(&ctx, "rs-referrer", &[GL]).await;
    let mut soft = Soft::default();
    let from = |v: &'static str| [("referer", v)];
    let table: Vec<(Value, Vec<Row>)> = vec![
        // A specific URL with an exact path.
        (
            json!(["www.example.com/path"]),
            vec![
                row(
                    Count("v1beta"),
                    &from("https://www.example.com/path"),
                    allowed(),
                ),
                row(
                    Count("v1beta"),
                    &from("http://www.example.com/path?x=1"),
                    allowed(),
                ),
                row(
                    Count("v1beta"),
                    &from("https://www.example.com/path/"),
                    referrer_blocked(Some("https://www.example.com/path/")),
                ),
                row(Count("v1beta"), &[], referrer_blocked(None)),
            ],
        ),
        // Any URL in a single domain with no subdomains.
        (
            json!(["example.com/*"]),
            vec![
                row(Get("v1"), &from("https://example.com/a/b"), allowed()),
                row(Get("v1"), &from("http://example.com/"), allowed()),
                row(
                    Get("v1"),
                    &from("https://sub.example.com/"),
                    referrer_blocked(Some("https://sub.example.com/")),
                ),
                row(
                    Get("v1"),
                    &from("https://example.com.evil.test/"),
                    referrer_blocked(Some("https://example.com.evil.test/")),
                ),
            ],
        ),
        // Any subdomain or path URLs in a single domain.
        (
            json!(["*.example.com/*"]),
            vec![
                row(Count("v1"), &from("https://sub.example.com/x"), allowed()),
                row(Count("v1"), &from("https://a.b.example.com/x/y"), allowed()),
                row(
                    Count("v1"),
                    &from("https://example.com/"),
                    referrer_blocked(Some("https://example.com/")),
                ),
                row(
                    Count("v1"),
                    &from("https://notexample.com/"),
                    referrer_blocked(Some("https://notexample.com/")),
                ),
            ],
        ),
        // A URL with a non-standard port; a scheme pins the scheme.
        (
            json!([
                "www.example.com:8000/*",
                "https://secure.example.org/*",
                "http://localhost:*/*"
            ]),
            vec![
                row(
                    Get("v1beta"),
                    &from("https://www.example.com:8000/x"),
                    allowed(),
                ),
                row(
                    Get("v1beta"),
                    &from("https://www.example.com/x"),
                    referrer_blocked(Some("https://www.example.com/x")),
                ),
                row(
                    Get("v1beta"),
                    &from("https://secure.example.org/app"),
                    allowed(),
                ),
                row(
                    Get("v1beta"),
                    &from("http://secure.example.org/app"),
                    referrer_blocked(Some("http://secure.example.org/app")),
                ),
                row(Get("v1beta"), &from("http://localhost:5173/"), allowed()),
            ],
        ),
        // Host only behaves as host/*; file URLs in Google's encoding.
        (
            json!(["www.example.net", "__file_url__//srv/app/*"]),
            vec![
                row(
                    List("v1beta"),
                    &from("https://www.example.net/deep/page"),
                    allowed(),
                ),
                row(
                    List("v1beta"),
                    &from("file:///srv/app/index.html"),
                    allowed(),
                ),
                row(
                    List("v1beta"),
                    &from("file:///etc/passwd"),
                    referrer_blocked(Some("file:///etc/passwd")),
                ),
            ],
        ),
    ];
    for (referrers, rows) in &table {
        let key = key_with(
            &ctx,
            &project,
            json!({"browserKeyRestrictions": {"allowedReferrers": referrers}}),
        )
        .await;
        run_table(&ctx, &key, &referrers.to_string(), rows, &mut soft).await;
    }
    soft.finish();
}

// ---------------------------------------------------------------------------------------
// Mobile apps
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn android_and_ios_app_restrictions() {
    use Probe::*;
    let ctx = server().ctx().await;
    let project = project_with(&ctx, "rs-apps", &[GL]).await;
    let mut soft = Soft::default();

    let android = key_with(
        &ctx,
        &project,
        json!({"androidKeyRestrictions": {"allowedApplications": [
            {"packageName": "com.example.app", "sha1Fingerprint": SHA1_COLONS}
        ]}}),
    )
    .await;
    let pkg = "com.example.app";
    let rows = vec![
        row(
            Count("v1beta"),
            &[("X-Android-Package", pkg), ("X-Android-Cert", SHA1)],
            allowed(),
        ),
        row(
            List("v1"),
            &[("x-android-package", pkg), ("x-android-cert", SHA1_COLONS)],
            allowed(),
        ),
        row(
            Count("v1beta"),
            &[
                ("X-Android-Package", pkg),
                ("X-Android-Cert", "0000000000000000000000000000000000000000"),
            ],
            android_blocked(Some(pkg)),
        ),
        row(
            Count("v1beta"),
            &[
                ("X-Android-Package", "com.evil.app"),
                ("X-Android-Cert", SHA1),
            ],
            android_blocked(Some("com.evil.app")),
        ),
        row(
            Count("v1beta"),
            &[("X-Android-Package", pkg)],
            android_blocked(Some(pkg)),
        ),
        row(Count("v1beta"), &[], android_blocked(None)),
        // The iOS header does not stand in for Android's.
        row(
            Count("v1beta"),
            &[("X-Ios-Bundle-Identifier", pkg)],
            android_blocked(None),
        ),
    ];
    run_table(&ctx, &android, "android", &rows, &mut soft).await;

    let ios = key_with(
        &ctx,
        &project,
        json!({"iosKeyRestrictions": {"allowedBundleIds": ["com.example.ios", "com.example.watch"]}}),
    )
    .await;
    let rows = vec![
        row(
            Count("v1beta"),
            &[("X-Ios-Bundle-Identifier", "com.example.ios")],
            allowed(),
        ),
        row(
            Get("v1"),
            &[("x-ios-bundle-identifier", "com.example.watch")],
            allowed(),
        ),
        row(
            Count("v1beta"),
            &[("X-Ios-Bundle-Identifier", "com.example.other")],
            ios_blocked(Some("com.example.other")),
        ),
        row(Count("v1beta"), &[], ios_blocked(None)),
        row(
            Count("v1beta"),
            &[("referer", "https://example.com/")],
            ios_blocked(None),
        ),
    ];
    run_table(&ctx, &ios, "ios", &rows, &mut soft).await;
    soft.finish();
}

// ---------------------------------------------------------------------------------------
// Order of the checks
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn checks_run_in_googles_order() {
    use Probe::*;
    let ctx = server().ctx().await;
    let project = project_with(&ctx, "rs-order", &[GL]).await;
    let mut soft = Soft::default();

    // API targets are checked before the client restriction.
    let both = key_with(
        &ctx,
        &project,
        json!({
            "apiTargets": [{"service": GL, "methods": ["GetModel"]}],
            "serverKeyRestrictions": {"allowedIps": ["192.0.2.1"]}
        }),
    )
    .await;
    let rows = vec![
        row(Count("v1beta"), &[], service_blocked(Count("v1beta"))),
        row(Get("v1beta"), &[], ip_blocked("127.0.0.1")),
    ];
    run_table(&ctx, &both, "targets+ip", &rows, &mut soft).await;

    // Restrictions come before model routing: an unknown model is still 403.
    let r = ctx
        .gemini_post(
            &both.key_string,
            "/v1beta/models/no-such-model:countTokens",
            &json!({"contents": [{"parts": [{"text": "x"}]}]}),
        )
        .await;
    soft.check(|| r.err_reason(403, "PERMISSION_DENIED", "API_KEY_SERVICE_BLOCKED"));
    // …and before body parsing.
    let r = ctx
        .gemini_post_raw(
            Some(&both.key_string),
            &gen_path_v1beta("countTokens"),
            "{not json",
        )
        .await;
    soft.check(|| r.err_reason(403, "PERMISSION_DENIED", "API_KEY_SERVICE_BLOCKED"));

    // The service must be enabled before restrictions are looked at: a disabled API answers
    // SERVICE_DISABLED even for a request the restrictions would block.
    ctx.set_service(&project.0, GL, false).await;
    let r = call(&ctx, &both.key_string, Count("v1beta"), &[]).await;
    soft.check(|| r.err_reason(403, "PERMISSION_DENIED", "SERVICE_DISABLED"));
    ctx.set_service(&project.0, GL, true).await;

    // An unknown key is API_KEY_INVALID whatever else the request carries.
    let r = call(
        &ctx,
        &unknown_key(),
        Count("v1beta"),
        &[("referer", "https://example.com/")],
    )
    .await;
    soft.check(|| r.err_reason(400, "INVALID_ARGUMENT", "API_KEY_INVALID"));
    soft.finish();
}

fn gen_path_v1beta(verb: &str) -> String {
    format!("/v1beta/models/{MODEL}:{verb}")
}

// ---------------------------------------------------------------------------------------
// Changes take effect at once
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn restriction_changes_apply_to_the_next_request() {
    use Probe::*;
    let ctx = server().ctx().await;
    let project = project_with(&ctx, "rs-changes", &[GL]).await;
    let n = project.1.clone();
    let mut soft = Soft::default();

    let open = key_with(&ctx, &project, json!({})).await;
    let r = call(&ctx, &open.key_string, Count("v1beta"), &[]).await;
    soft.check(|| check(&r, &allowed(), Count("v1beta"), &n));

    // A new restricted key is enforced on its very first request.
    let locked = key_with(
        &ctx,
        &project,
        json!({"serverKeyRestrictions": {"allowedIps": ["192.0.2.1"]}}),
    )
    .await;
    let r = call(&ctx, &locked.key_string, Count("v1beta"), &[]).await;
    soft.check(|| check(&r, &ip_blocked("127.0.0.1"), Count("v1beta"), &n));
    // …and the other key is unaffected.
    let r = call(&ctx, &open.key_string, Count("v1beta"), &[]).await;
    soft.check(|| check(&r, &allowed(), Count("v1beta"), &n));

    // Patching restrictions (API Keys v2 UpdateKey) is seen by the next request.
    let patch = |restrictions: Value| {
        let ctx = &ctx;
        let name = open.name.clone();
        async move {
            let req = ctx
                .http
                .patch(ctx.url(&format!("/v2/{name}?updateMask=restrictions")))
                .bearer_auth(&ctx.token)
                .json(&json!({ "restrictions": restrictions }));
            ctx.send(format!("PATCH /v2/{name}?updateMask=restrictions"), req)
                .await
        }
    };
    let r = patch(json!({"apiTargets": [{"service": GL, "methods": ["ListModels"]}]})).await;
    if r.status == 200 {
        soft.check(|| {
            let op = r.ok();
            assert!(op.get("error").is_none(), "{}", r.describe());
        });
        let r = call(&ctx, &open.key_string, Count("v1beta"), &[]).await;
        soft.check(|| check(&r, &service_blocked(Count("v1beta")), Count("v1beta"), &n));
        let r = call(&ctx, &open.key_string, List("v1beta"), &[]).await;
        soft.check(|| check(&r, &allowed(), List("v1beta"), &n));
        let r =
            patch(json!({"iosKeyRestrictions": {"allowedBundleIds": ["com.example.ios"]}})).await;
        soft.check(|| r.ok());
        let r = call(&ctx, &open.key_string, Count("v1beta"), &[]).await;
        soft.check(|| check(&r, &ios_blocked(None), Count("v1beta"), &n));
        let r = patch(json!({})).await;
        soft.check(|| r.ok());
        let r = call(&ctx, &open.key_string, Count("v1beta"), &[]).await;
        soft.check(|| check(&r, &allowed(), Count("v1beta"), &n));
    } else {
        // UpdateKey is not served by this build; it must still answer a google.rpc.Status.
        eprintln!(
            "note: PATCH of keys is not available here (HTTP {}); patch-then-next-request not checked",
            r.status
        );
        soft.check(|| r.status_error());
    }

    // A deleted key stops at once; a disabled service too.
    let r = ctx.delete(&format!("/v2/{}", locked.name)).await;
    soft.check(|| r.ok());
    let r = call(&ctx, &locked.key_string, Count("v1beta"), &[]).await;
    soft.check(|| r.err_reason(400, "INVALID_ARGUMENT", "API_KEY_INVALID"));
    ctx.set_service(&project.0, GL, false).await;
    let r = call(&ctx, &open.key_string, Count("v1beta"), &[]).await;
    soft.check(|| r.err_reason(403, "PERMISSION_DENIED", "SERVICE_DISABLED"));
    soft.finish();
}

// ---------------------------------------------------------------------------------------
// Vertex AI express mode
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn vertex_express_path() {
    use Probe::*;
    let ctx = server().ctx().await;
    let project = project_with(&ctx, "rs-vertex", &[GL, AIP]).await;
    let n = project.1.clone();
    let key = key_with(&ctx, &project, json!({})).await;
    let mut soft = Soft::default();

    // countTokens with the key in the header and in ?key=, on v1 and v1beta1.
    for v in ["v1", "v1beta1"] {
        for key_in in [KeyIn::Header, KeyIn::Query] {
            let r = call_with(&ctx, &key.key_string, VertexCount(v), &[], key_in).await;
            soft.check(|| check(&r, &allowed(), VertexCount(v), &n));
        }
    }

    // generateContent answers a GenerateContentResponse, like the Gemini path.
    let r = call(&ctx, &key.key_string, VertexGenerate("v1"), &[]).await;
    soft.check(|| {
        check(&r, &allowed(), VertexGenerate("v1"), &n);
        let v = r.json();
        assert_eq!(
            v["candidates"][0]["content"]["role"],
            "model",
            "{}",
            r.describe()
        );
        assert!(
            v["usageMetadata"]["promptTokenCount"].as_u64() > Some(0),
            "{}",
            r.describe()
        );
        assert!(
            v["modelVersion"].is_string() && v["responseId"].is_string(),
            "{}",
            r.describe()
        );
    });

    // Streaming with alt=sse.
    let r = {
        let _g = generation_lock().await;
        let req = ctx
            .http
            .post(ctx.url(&format!(
                "/v1beta1/publishers/google/models/{MODEL}:streamGenerateContent?alt=sse"
            )))
            .header("x-goog-api-key", &key.key_string)
            .json(&json!({
                "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}],
                "generationConfig": {"maxOutputTokens": 4}
            }));
        ctx.send("POST vertex stream".into(), req).await
    };
    soft.check(|| {
        assert_eq!(r.status, 200, "{}", r.describe());
        assert!(
            r.content_type.starts_with("text/event-stream"),
            "{}",
            r.describe()
        );
        let last = r
            .text
            .split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .last()
            .unwrap_or_default()
            .to_owned();
        let v: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
        assert!(
            v["candidates"][0]["finishReason"].is_string(),
            "{}",
            r.describe()
        );
    });

    // models.get in Vertex mode.
    let r = ctx
        .gemini_get(
            &key.key_string,
            &format!("/v1beta1/publishers/google/models/{MODEL}"),
        )
        .await;
    soft.check(|| {
        let v = r.ok();
        assert_eq!(
            v["name"],
            format!("publishers/google/models/{MODEL}"),
            "{}",
            r.describe()
        );
    });

    // Unknown model or publisher: Vertex's 404.
    for path in [
        "/v1/publishers/google/models/no-such-model:countTokens",
        format!("/v1/publishers/acme/models/{MODEL}:countTokens").as_str(),
    ] {
        let r = ctx
            .gemini_post(
                &key.key_string,
                path,
                &json!({"contents": [{"parts": [{"text": "x"}]}]}),
            )
            .await;
        soft.check(|| {
            let e = r.err(404, "NOT_FOUND");
            let m = e["message"].as_str().unwrap_or_default();
            assert!(
                m.starts_with("Publisher Model `projects/") && m.contains("was not found"),
                "{}",
                r.describe()
            );
        });
    }

    // Credentials: none, unknown key (named against aiplatform).
    let r = ctx
        .http
        .post(ctx.url(&format!("/v1/publishers/google/models/{MODEL}:countTokens")))
        .json(&json!({"contents": [{"parts": [{"text": "x"}]}]}));
    let r = ctx.send("POST vertex without a key".into(), r).await;
    soft.check(|| r.err(403, "PERMISSION_DENIED"));
    let r = call(&ctx, &unknown_key(), VertexCount("v1"), &[]).await;
    soft.check(|| {
        let info = r.err_reason(400, "INVALID_ARGUMENT", "API_KEY_INVALID");
        assert_eq!(info["metadata"]["service"], AIP, "{}", r.describe());
    });

    // The express path needs aiplatform.googleapis.com in the key's project.
    let gl_only = project_with(&ctx, "rs-vertex-off", &[GL]).await;
    let k2 = key_with(&ctx, &gl_only, json!({})).await;
    let r = call(&ctx, &k2.key_string, VertexCount("v1"), &[]).await;
    soft.check(|| {
        let info = r.err_reason(403, "PERMISSION_DENIED", "SERVICE_DISABLED");
        let md = &info["metadata"];
        assert_eq!(md["service"], AIP, "{}", r.describe());
        assert_eq!(md["serviceTitle"], "Vertex AI API", "{}", r.describe());
        assert_eq!(
            md["consumer"],
            format!("projects/{}", gl_only.1),
            "{}",
            r.describe()
        );
        let m = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            m.starts_with(&format!(
                "Vertex AI API has not been used in project {} before or it is disabled.",
                gl_only.1
            )),
            "{}",
            r.describe()
        );
    });
    // …while the same key still reaches the Gemini API.
    let r = call(&ctx, &k2.key_string, Count("v1beta"), &[]).await;
    soft.check(|| check(&r, &allowed(), Count("v1beta"), &gl_only.1));

    // Client restrictions hold on the express path too.
    let ip_key = key_with(
        &ctx,
        &project,
        json!({"serverKeyRestrictions": {"allowedIps": ["192.0.2.0/24"]}}),
    )
    .await;
    let r = call(&ctx, &ip_key.key_string, VertexCount("v1"), &[]).await;
    soft.check(|| check(&r, &ip_blocked("127.0.0.1"), VertexCount("v1"), &n));
    soft.finish();
}

// ---------------------------------------------------------------------------------------
// One real generation through a restricted key
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_allowed_restricted_key_generates() {
    use Probe::*;
    let ctx = server().ctx().await;
    let project = project_with(&ctx, "rs-generate", &[GL]).await;
    let key = key_with(
        &ctx,
        &project,
        json!({
            "apiTargets": [{"service": GL, "methods": ["GenerateContent", "StreamGenerateContent"]}],
            "browserKeyRestrictions": {"allowedReferrers": ["*.example.com/*"]}
        }),
    )
    .await;
    let mut soft = Soft::default();
    let from = [("referer", "https://app.example.com/chat")];
    let rows = vec![
        row(Generate("v1beta"), &from, allowed()),
        row(Stream("v1"), &from, allowed()),
        row(Generate("v1beta"), &[], referrer_blocked(None)),
        row(Count("v1beta"), &from, service_blocked(Count("v1beta"))),
    ];
    run_table(&ctx, &key, "generate", &rows, &mut soft).await;
    soft.finish();
}

// ---------------------------------------------------------------------------------------
// Odd URLs on the data plane still answer a google.rpc.Status
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn odd_data_plane_requests_answer_a_status() {
    let ctx = server().ctx().await;
    let key = unknown_key();
    let mut soft = Soft::default();
    let cases: &[(&str, &str)] = &[
        ("DELETE", "/v1/publishers/google/models/x"),
        ("PUT", "/v1beta/models/x"),
        ("PATCH", "/v1beta/models"),
        ("GET", "/v1/publishers/%FF/models/x"),
        ("POST", "/v1/publishers/%FF/models/x:generateContent"),
        ("POST", "/v1beta/models/%FF:generateContent"),
        ("GET", "/v1beta/models/%C3%28"),
        ("GET", "/v1/publishers/google/models"),
        ("POST", "/v1beta1/publishers/google/models/"),
    ];
    for (method, path) in cases {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = ctx
            .http
            .request(m, ctx.url(path))
            .header("x-goog-api-key", &key)
            .body("{}");
        let r = ctx.send(format!("{method} {path}"), req).await;
        soft.check(|| {
            let e = r.status_error();
            assert!(
                matches!(r.status, 400 | 404),
                "expected 400 or 404\n{}",
                r.describe()
            );
            e
        });
    }
    soft.finish();
}
