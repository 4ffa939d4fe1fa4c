//! Harness for the black-box integration tests: runs the real `keyplane serve` binary on a
//! temporary data directory, mints OAuth tokens with the owner key file it writes, and
//! wraps the HTTP calls the tests make with assertions on Google's error envelope.
//!
//! The server runs under a small `sh` wrapper that watches its own stdin (a pipe held by the
//! test process): when the test process exits, even without running destructors (servers
//! shared through a `static`), the pipe closes and the wrapper stops the server with SIGTERM
//! and removes the data directory it was told to clean up.

#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::Sha256;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const GL: &str = "generativelanguage.googleapis.com";
pub const MODEL: &str = "gemini-2.5-flash";
pub const LOCAL_MODEL: &str = "smollm2-135m-instruct";
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const READY_PREFIX: &str = "keyplane listening on ";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `sh -c WRAPPER sh CLEANUP_DIR BIN ARGS...`: runs `BIN ARGS...`, forwards SIGTERM/SIGINT
/// to it, stops it when its own stdin reaches end of file, exits with its status and then
/// removes CLEANUP_DIR when that is not empty.
const WRAPPER: &str = r#"
cleanup="$1"; shift
exec 3<&0
"$@" </dev/null 3<&- &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
( while read -r _line; do :; done; kill -TERM "$child" 2>/dev/null ) <&3 >/dev/null 2>&1 &
watcher=$!
exec 3<&-
rc=0
while kill -0 "$child" 2>/dev/null; do
  wait "$child"; rc=$?
done
kill "$watcher" 2>/dev/null
if [ -n "$cleanup" ]; then rm -rf -- "$cleanup"; fi
exit "$rc"
"#;

// ---------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra environment for the server (for instance `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// Extra arguments after `serve --listen … --data-dir …` (for instance `--tls-cert`).
    pub args: Vec<String>,
}

struct Proc {
    child: Child,
    _stdin: ChildStdin,
    stdout_thread: Option<JoinHandle<()>>,
    stderr_thread: Option<JoinHandle<()>>,
}

/// A running `keyplane serve`.
pub struct Server {
    /// `http://127.0.0.1:PORT` (`https://` when started with TLS)
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub data_dir: PathBuf,
    tmp: Option<tempfile::TempDir>,
    cleanup_on_exit: bool,
    opts: Options,
    proc: Option<Proc>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    starts: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    /// A server on a fresh temporary data directory, stopped and removed on drop.
    pub fn start() -> Server {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("keyplane-test-")
            .tempdir()
            .expect("create a temporary data directory");
        let data_dir = tmp.path().join("data");
        let mut s = Server {
            base: String::new(),
            addr: String::new(),
            data_dir,
            tmp: Some(tmp),
            cleanup_on_exit: false,
            opts,
            proc: None,
            stderr: Default::default(),
            stdout: Default::default(),
            starts: 0,
        };
        s.spawn("127.0.0.1:0");
        s
    }

    /// A server meant to live in a `static` for the whole test binary: it is never dropped,
    /// so the wrapper stops it and removes its data directory when the test process exits.
    pub fn start_shared() -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("keyplane-test-")
            .tempdir()
            .expect("create a temporary data directory");
        let root = tmp.keep();
        let mut s = Server {
            base: String::new(),
            addr: String::new(),
            data_dir: root.join("data"),
            tmp: None,
            cleanup_on_exit: true,
            opts: Options::default(),
            proc: None,
            stderr: Default::default(),
            stdout: Default::default(),
            starts: 0,
        };
        s.spawn("127.0.0.1:0");
        s
    }

    fn cleanup_dir(&self) -> String {
        if self.cleanup_on_exit {
            self.data_dir
                .parent()
                .expect("data dir has a parent")
                .display()
                .to_string()
        } else {
            String::new()
        }
    }

    fn spawn(&mut self, listen: &str) {
        assert!(self.proc.is_none(), "the server is already running");
        let bin = env!("CARGO_BIN_EXE_keyplane");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .arg(self.cleanup_dir())
            .arg(bin)
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.opts.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn keyplane serve");
        let stdin = child.stdin.take().expect("stdin pipe");
        let stdout = child.stdout.take().expect("stdout pipe");
        let stderr = child.stderr.take().expect("stderr pipe");

        let (tx, rx) = mpsc::channel::<String>();
        let lines = self.stdout.clone();
        let stdout_thread = std::thread::spawn(move || {
            let reader = BufReader::new(stdout);
            for line in reader.lines() {
                let Ok(line) = line else { break };
                lock(&lines).push(line.clone());
                let _ = tx.send(line);
            }
        });
        let sink = self.stderr.clone();
        let stderr_thread = std::thread::spawn(move || {
            let mut stderr = stderr;
            let mut buf = [0u8; 8192];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => lock(&sink).extend_from_slice(&buf[..n]),
                }
            }
        });
        self.proc = Some(Proc {
            child,
            _stdin: stdin,
            stdout_thread: Some(stdout_thread),
            stderr_thread: Some(stderr_thread),
        });
        self.starts += 1;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(READY_PREFIX) {
                        let base = rest.trim().trim_end_matches('/').to_owned();
                        let addr = base.split_once("://").map_or(base.as_str(), |(_, a)| a);
                        self.addr = addr.to_owned();
                        self.base = base;
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.stop();
                    panic!(
                        "keyplane serve did not print `{READY_PREFIX}...` within {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        READY_TIMEOUT,
                        lock(&self.stdout).join("\n"),
                        self.stderr_text()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.stop();
                    panic!(
                        "keyplane serve exited ({status:?}) before it was ready\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        lock(&self.stdout).join("\n"),
                        self.stderr_text()
                    );
                }
            }
        }
    }

    /// Sends SIGTERM and waits for the process to exit (SIGKILL after 30 s). Returns the
    /// exit status, or `None` when the server was not running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut p = self.proc.take()?;
        let pid = p.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match p.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25))
                }
                _ => {
                    let _ = p.child.kill();
                    break p.child.wait().ok();
                }
            }
        };
        // The pipes close once the server is gone; collect everything it wrote.
        if let Some(t) = p.stdout_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = p.stderr_thread.take() {
            let _ = t.join();
        }
        status
    }

    /// Stops the server and starts it again on the same data directory and port.
    pub fn restart(&mut self) -> Option<ExitStatus> {
        let status = self.stop();
        // Same port, so that the key file's token_uri stays valid.
        let addr = self.addr.clone();
        self.spawn(&addr);
        status
    }

    /// Everything the server wrote to stderr so far (all runs).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    pub fn stderr_bytes(&self) -> Vec<u8> {
        lock(&self.stderr).clone()
    }

    /// The lines the server wrote to stdout so far (all runs).
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }

    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.data_dir.join(file)
    }

    pub fn owner_credentials(&self) -> Creds {
        Creds::load(&self.path("owner-credentials.json"))
    }

    /// A test context: a fresh HTTP client (clients must not outlive the runtime of the
    /// test that made them) and an owner access token.
    pub async fn ctx(&self) -> Ctx {
        let mut ctx = Ctx::anonymous(&self.base);
        ctx.token = ctx.owner_token(&self.owner_credentials()).await;
        ctx
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Serialises the tests of one binary that depend on greedy generation being reproducible
/// (batch composition in the local backend may change numerics) or that load the model.
/// An async mutex: each test has its own runtime, and tokio's mutex works across them.
pub async fn generation_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

// ---------------------------------------------------------------------------------------
// Credentials and JWTs
// ---------------------------------------------------------------------------------------

/// A Google service-account key file.
#[derive(Debug, Clone)]
pub struct Creds {
    pub json: Value,
    pub private_key: String,
    pub private_key_id: String,
    pub client_email: String,
    pub token_uri: String,
}

impl Creds {
    pub fn load(path: &Path) -> Creds {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let s = |k: &str| {
            json[k]
                .as_str()
                .unwrap_or_else(|| panic!("{} has no string field {k}: {json}", path.display()))
                .to_owned()
        };
        Creds {
            private_key: s("private_key"),
            private_key_id: s("private_key_id"),
            client_email: s("client_email"),
            token_uri: s("token_uri"),
            json: json.clone(),
        }
    }

    /// The claims google-auth sends (plus `sub`), valid for an hour from now.
    pub fn claims(&self, aud: &str) -> Value {
        let now = unix_now();
        json!({
            "iss": self.client_email,
            "sub": self.client_email,
            "aud": aud,
            "scope": CLOUD_PLATFORM,
            "iat": now,
            "exp": now + 3600,
        })
    }

    pub fn assertion(&self, claims: &Value) -> String {
        sign_jwt(&self.private_key, &self.private_key_id, claims)
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An RS256 JWT signed with the PKCS#8 PEM key `pem`, header kid `kid`.
pub fn sign_jwt(pem: &str, kid: &str, claims: &Value) -> String {
    let key = RsaPrivateKey::from_pkcs8_pem(pem).expect("private_key is a PKCS#8 PEM RSA key");
    sign_jwt_with(&key, kid, claims)
}

pub fn sign_jwt_with(key: &RsaPrivateKey, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signer = SigningKey::<Sha256>::new(key.clone());
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64url(&sig.to_bytes()))
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// One HTTP exchange, kept whole so that failures can show the request and the answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub request: String,
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn describe(&self) -> String {
        let mut body = self.text.clone();
        if body.len() > 3000 {
            body.truncate(3000);
            body.push('…');
        }
        format!(
            "request: {}\n   got: HTTP {} ({})\n  body: {}",
            self.request, self.status, self.content_type, body
        )
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e})\n{}", self.describe()))
    }

    /// Asserts HTTP 200 with a JSON body and returns it.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "expected HTTP 200\n{}", self.describe());
        assert!(
            self.content_type.starts_with("application/json"),
            "expected a JSON content type\n{}",
            self.describe()
        );
        self.json()
    }

    /// Asserts a google.rpc.Status error with this HTTP code and status name and returns
    /// the `error` object.
    pub fn err(&self, code: u16, status: &str) -> Value {
        let e = self.status_error();
        assert_eq!(
            (self.status, e["status"].as_str().unwrap_or("")),
            (code, status),
            "expected HTTP {code} {status}\n{}",
            self.describe()
        );
        e
    }

    /// Asserts the body is a google.rpc.Status JSON consistent with the HTTP status, that
    /// the status is an error and not a bare 500; returns the `error` object.
    pub fn status_error(&self) -> Value {
        assert!(
            self.status >= 400,
            "expected an error status\n{}",
            self.describe()
        );
        assert!(
            self.content_type.starts_with("application/json"),
            "an error must be JSON (application/json)\n{}",
            self.describe()
        );
        let v = self.json();
        let e = &v["error"];
        assert!(
            e.is_object(),
            "body is not a google.rpc.Status {{error: ...}}\n{}",
            self.describe()
        );
        assert_eq!(
            e["code"].as_u64(),
            Some(self.status as u64),
            "error.code must equal the HTTP status\n{}",
            self.describe()
        );
        let status = e["status"].as_str().unwrap_or("");
        assert!(
            !status.is_empty() && status.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "error.status must be a canonical code name\n{}",
            self.describe()
        );
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error.message must be a non-empty string\n{}",
            self.describe()
        );
        if let Some(details) = e.get("details") {
            let arr = details
                .as_array()
                .unwrap_or_else(|| panic!("error.details must be an array\n{}", self.describe()));
            for d in arr {
                assert!(
                    d["@type"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("type.googleapis.com/")),
                    "every detail needs an @type\n{}",
                    self.describe()
                );
            }
        }
        assert!(
            !(self.status == 500 && status == "INTERNAL"),
            "bare 500 INTERNAL\n{}",
            self.describe()
        );
        e.clone()
    }

    /// `err` plus the ErrorInfo reason; returns the ErrorInfo detail.
    pub fn err_reason(&self, code: u16, status: &str, reason: &str) -> Value {
        let e = self.err(code, status);
        match error_info(&e) {
            Some(info) if info["reason"] == reason => info,
            other => panic!(
                "expected ErrorInfo reason {reason}, found {:?}\n{}",
                other.map(|i| i["reason"].clone()),
                self.describe()
            ),
        }
    }
}

/// The `google.rpc.ErrorInfo` detail of a google.rpc.Status `error` object.
pub fn error_info(error: &Value) -> Option<Value> {
    error["details"]
        .as_array()?
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .cloned()
}

/// A client bound to one server, optionally carrying an owner access token.
pub struct Ctx {
    pub base: String,
    pub http: reqwest::Client,
    pub token: String,
}

impl Ctx {
    pub fn anonymous(base: &str) -> Ctx {
        Ctx {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("build an HTTP client"),
            token: String::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request and collects the whole answer.
    pub async fn send(&self, what: String, req: reqwest::RequestBuilder) -> Resp {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: transport error {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"));
        Resp {
            request: what,
            status,
            content_type,
            headers,
            text,
        }
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.token.is_empty() {
            req
        } else {
            req.bearer_auth(&self.token)
        }
    }

    /// Control plane GET with the owner token.
    pub async fn get(&self, path: &str) -> Resp {
        let req = self.authed(self.http.get(self.url(path)));
        self.send(format!("GET {path}"), req).await
    }

    /// Control plane POST (JSON) with the owner token.
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        let req = self.authed(self.http.post(self.url(path)).json(body));
        self.send(format!("POST {path} {body}"), req).await
    }

    /// Control plane DELETE with the owner token.
    pub async fn delete(&self, path: &str) -> Resp {
        let req = self.authed(self.http.delete(self.url(path)));
        self.send(format!("DELETE {path}"), req).await
    }

    /// `POST /token` with a form body.
    pub async fn token_form(&self, form: &[(&str, &str)]) -> Resp {
        let shown: Vec<String> = form
            .iter()
            .map(|(k, v)| {
                if v.len() > 40 {
                    format!("{k}={}…", &v[..40])
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        let req = self.http.post(self.url("/token")).form(form);
        self.send(format!("POST /token {}", shown.join("&")), req)
            .await
    }

    pub async fn grant(&self, assertion: &str) -> Resp {
        self.token_form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .await
    }

    /// Mints an owner access token with the JWT-bearer grant.
    pub async fn owner_token(&self, creds: &Creds) -> String {
        let r = self
            .grant(&creds.assertion(&creds.claims(&creds.token_uri)))
            .await;
        let v = r.ok();
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token\n{}", r.describe()))
            .to_owned()
    }

    // --- data plane ---------------------------------------------------------------------

    /// Data plane POST with the key in `x-goog-api-key`.
    pub async fn gemini_post(&self, key: &str, path: &str, body: &Value) -> Resp {
        let req = self
            .http
            .post(self.url(path))
            .header("x-goog-api-key", key)
            .json(body);
        self.send(format!("POST {path} (x-goog-api-key) {body}"), req)
            .await
    }

    /// Data plane POST with a raw body.
    pub async fn gemini_post_raw(&self, key: Option<&str>, path: &str, body: &str) -> Resp {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(k) = key {
            req = req.header("x-goog-api-key", k);
        }
        self.send(format!("POST {path} {body}"), req).await
    }

    pub async fn gemini_get(&self, key: &str, path: &str) -> Resp {
        let req = self.http.get(self.url(path)).header("x-goog-api-key", key);
        self.send(format!("GET {path} (x-goog-api-key)"), req).await
    }

    pub async fn generate(&self, key: &str, body: &Value) -> Resp {
        self.gemini_post(
            key,
            &format!("/v1beta/models/{MODEL}:generateContent"),
            body,
        )
        .await
    }

    // --- control plane helpers ----------------------------------------------------------

    /// Creates a project; returns the Project resource.
    pub async fn create_project(&self, project_id: &str) -> Value {
        let r = self
            .post(
                "/v3/projects",
                &json!({"projectId": project_id, "displayName": "Test project"}),
            )
            .await;
        let op = r.ok();
        assert_eq!(
            op["done"],
            true,
            "project creation must be done\n{}",
            r.describe()
        );
        op["response"].clone()
    }

    pub async fn set_service(&self, project: &str, service: &str, enable: bool) -> Value {
        let verb = if enable { "enable" } else { "disable" };
        let r = self
            .post(
                &format!("/v1/projects/{project}/services/{service}:{verb}"),
                &json!({}),
            )
            .await;
        let op = r.ok();
        assert_eq!(op["done"], true, "{verb} must be done\n{}", r.describe());
        op
    }

    /// Creates a key; returns the completed Operation's `response` (the Key, with keyString).
    pub async fn create_key(&self, project: &str, key_id: Option<&str>) -> Value {
        let path = match key_id {
            Some(id) => format!("/v2/projects/{project}/locations/global/keys?keyId={id}"),
            None => format!("/v2/projects/{project}/locations/global/keys"),
        };
        let r = self.post(&path, &json!({"displayName": "Test key"})).await;
        let op = r.ok();
        assert_eq!(
            op["done"],
            true,
            "key creation must be done\n{}",
            r.describe()
        );
        assert!(
            op.get("error").is_none(),
            "key creation failed\n{}",
            r.describe()
        );
        op["response"].clone()
    }

    /// A new project with the Generative Language API enabled and one key in it.
    pub async fn new_key(&self, prefix: &str) -> TestKey {
        let project_id = unique_project_id(prefix);
        let project = self.create_project(&project_id).await;
        self.set_service(&project_id, GL, true).await;
        let key = self.create_key(&project_id, None).await;
        TestKey {
            project_number: project_number(&project),
            project_id,
            name: key["name"].as_str().expect("key name").to_owned(),
            key_string: key["keyString"].as_str().expect("keyString").to_owned(),
        }
    }
}

/// A key made for a test, with its project.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub project_id: String,
    pub project_number: String,
    /// `projects/NUMBER/locations/global/keys/ID`
    pub name: String,
    pub key_string: String,
}

/// `NUMBER` from a v3 Project's `name` (`projects/NUMBER`).
pub fn project_number(project: &Value) -> String {
    let name = project["name"].as_str().unwrap_or_default();
    let n = name
        .strip_prefix("projects/")
        .unwrap_or_else(|| panic!("project name is not projects/NUMBER: {project}"));
    assert!(
        !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()),
        "project name is not projects/NUMBER: {project}"
    );
    n.to_owned()
}

/// A project id that no other test uses: `{prefix}-{8 hex}`, within Google's 6–30 rule.
pub fn unique_project_id(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let mix = nanos ^ (std::process::id().rotate_left(16)) ^ n.wrapping_mul(0x9E37_79B9);
    let mut p: String = prefix.chars().take(20).collect();
    if p.is_empty() || !p.starts_with(|c: char| c.is_ascii_lowercase()) {
        p.insert(0, 't');
    }
    format!("{p}-{mix:08x}")
}

/// True when `s` is a classic API key string: `AIza` + 35 of `[0-9A-Za-z_-]`.
pub fn is_api_key(s: &str) -> bool {
    s.len() == 39
        && s.starts_with("AIza")
        && s[4..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A well-formed key that no server issued.
pub fn unknown_key() -> String {
    let tail = format!("{:x}", unix_now());
    let mut k = format!("AIzaSyUnknownKeyForTests_{tail}");
    while k.len() < 39 {
        k.push('x');
    }
    k.truncate(39);
    k
}

pub fn is_rfc3339(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

/// Text of candidate 0 (all text parts joined).
pub fn candidate_text(resp: &Value) -> String {
    resp["candidates"][0]["content"]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default()
}

/// A simple generateContent body.
pub fn gen_body(prompt: &str, max_tokens: u32) -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"maxOutputTokens": max_tokens, "temperature": 0}
    })
}

/// True if `needle` occurs in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Collects assertion failures so that one test can report every failing case at once.
#[derive(Default)]
pub struct Soft {
    failures: Vec<String>,
}

impl Soft {
    /// Runs `f`; a panic inside it is recorded instead of ending the test.
    pub fn check<T>(&mut self, f: impl FnOnce() -> T) -> Option<T> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".to_owned());
                self.failures.push(msg);
                None
            }
        }
    }

    /// Fails the test when any check failed, listing them all.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "{} check(s) failed:\n\n{}",
                self.failures.len(),
                self.failures.join("\n\n")
            );
        }
    }
}
