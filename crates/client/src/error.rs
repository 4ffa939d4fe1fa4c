//! The one error type of this crate. Its text never holds a key string or a token: HTTP
//! errors are stripped of their URL (lookupKey carries the key string in its query) and
//! undecodable bodies are described by position, never quoted.

use serde::Deserialize;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No API key was given and none was found in the environment.
    #[error(
        "no API key was provided: pass one explicitly, or set GOOGLE_API_KEY or GEMINI_API_KEY"
    )]
    NoApiKey,

    /// The service-account key file could not be read or used.
    #[error("credentials {path}: {reason}")]
    Credentials { path: String, reason: String },

    /// The token endpoint refused the JWT-bearer grant (`{"error", "error_description"}`).
    #[error("token request refused (HTTP {http_status}): {error}{}", describe(.description))]
    Token {
        http_status: u16,
        error: String,
        description: String,
    },

    /// The server answered with a `google.rpc.Status`.
    #[error("{status}: {message}{}", reason_suffix(.reason))]
    Api {
        /// HTTP status code (or the `code` of an error delivered in a stream or operation).
        code: u16,
        /// Canonical status name, e.g. `INVALID_ARGUMENT`.
        status: String,
        message: String,
        /// The `google.rpc.ErrorInfo` reason, when the error carries one.
        reason: Option<String>,
    },

    /// The request could not be sent or its response not received.
    #[error("HTTP request failed: {0}")]
    Http(#[source] reqwest::Error),

    /// A 200 response whose body is not what the method returns.
    #[error("unexpected response from {what}: {detail}")]
    Decode { what: String, detail: String },

    /// A long-running operation did not finish in time.
    #[error("operation {0} did not finish in time")]
    OperationTimeout(String),

    /// A caller-side argument the server would refuse anyway (bad model name, …).
    #[error("{0}")]
    InvalidArgument(String),
}

fn describe(description: &str) -> String {
    if description.is_empty() {
        String::new()
    } else {
        format!(": {description}")
    }
}

fn reason_suffix(reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!(" (reason: {r})"),
        None => String::new(),
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        // The URL may carry a key string (`keys:lookupKey?keyString=`): never show it.
        ClientError::Http(e.without_url())
    }
}

impl ClientError {
    /// The ErrorInfo reason of an API error.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Api { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// The canonical status of an API error (`NOT_FOUND`, …).
    pub fn status(&self) -> Option<&str> {
        match self {
            ClientError::Api { status, .. } => Some(status),
            _ => None,
        }
    }

    /// A decode failure described without quoting the body (which may hold secrets).
    pub(crate) fn decode(what: impl Into<String>, e: &serde_json::Error) -> Self {
        ClientError::Decode {
            what: what.into(),
            detail: describe_json_error(e),
        }
    }

    /// Builds an API error from a `google.rpc.Status` JSON value (the inside of
    /// `{"error": …}`), falling back to the HTTP status when fields are missing.
    pub(crate) fn from_status_value(http_code: u16, status: &serde_json::Value) -> Self {
        let parsed: RpcStatus = serde_json::from_value(status.clone()).unwrap_or_default();
        parsed.into_error(http_code)
    }

    /// Builds an API error from a non-200 response body.
    pub(crate) fn from_error_body(http_code: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: RpcStatus,
        }
        let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        // Google sometimes wraps errors in a one-element array (non-SSE streams).
        let value = match value {
            Some(serde_json::Value::Array(mut items)) if items.len() == 1 => Some(items.remove(0)),
            other => other,
        };
        match value.and_then(|v| serde_json::from_value::<Envelope>(v).ok()) {
            Some(env) => env.error.into_error(http_code),
            None => ClientError::Api {
                code: http_code,
                status: canonical_status(http_code).to_owned(),
                message: format!("HTTP {http_code} with a body that is not a google.rpc.Status"),
                reason: None,
            },
        }
    }
}

/// `google.rpc.Status`, the parts the client reads.
#[derive(Debug, Default, Deserialize)]
struct RpcStatus {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

impl RpcStatus {
    fn into_error(self, http_code: u16) -> ClientError {
        let reason = self.details.iter().find_map(|d| {
            let ty = d.get("@type")?.as_str()?;
            if ty.ends_with("google.rpc.ErrorInfo") {
                d.get("reason")?.as_str().map(str::to_owned)
            } else {
                None
            }
        });
        // Operation errors carry a gRPC code (e.g. 6) rather than an HTTP one.
        let (code, status) = match (self.code, self.status) {
            (Some(c), Some(s)) if (100..600).contains(&c) => (c as u16, s),
            (Some(c), None) if (100..600).contains(&c) => {
                (c as u16, canonical_status(c as u16).to_owned())
            }
            (Some(c), s) if (0..=16).contains(&c) => {
                let (http, name) = grpc_code(c as u8);
                (http, s.unwrap_or_else(|| name.to_owned()))
            }
            (_, s) => (
                http_code,
                s.unwrap_or_else(|| canonical_status(http_code).to_owned()),
            ),
        };
        ClientError::Api {
            code,
            status,
            message: self.message,
            reason,
        }
    }
}

/// The canonical status name Google uses for an HTTP status.
pub(crate) fn canonical_status(http: u16) -> &'static str {
    match http {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// gRPC code → (HTTP status, canonical name), as google.rpc.Code maps them.
fn grpc_code(code: u8) -> (u16, &'static str) {
    match code {
        0 => (200, "OK"),
        1 => (499, "CANCELLED"),
        2 => (500, "UNKNOWN"),
        3 => (400, "INVALID_ARGUMENT"),
        4 => (504, "DEADLINE_EXCEEDED"),
        5 => (404, "NOT_FOUND"),
        6 => (409, "ALREADY_EXISTS"),
        7 => (403, "PERMISSION_DENIED"),
        8 => (429, "RESOURCE_EXHAUSTED"),
        9 => (400, "FAILED_PRECONDITION"),
        10 => (409, "ABORTED"),
        11 => (400, "OUT_OF_RANGE"),
        12 => (501, "UNIMPLEMENTED"),
        13 => (500, "INTERNAL"),
        14 => (503, "UNAVAILABLE"),
        15 => (500, "DATA_LOSS"),
        _ => (401, "UNAUTHENTICATED"),
    }
}

/// serde_json's messages can quote values (`invalid type: string "AIza…"`); keep only the
/// category and position.
fn describe_json_error(e: &serde_json::Error) -> String {
    let category = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "JSON of the wrong shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{category} at line {} column {}", e.line(), e.column())
}

/// A secret string (key string, access token) whose `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// Serializes as the plain string: for the one deliberate output of a key string
/// (`keys create --format json`). `Debug` stays redacted.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_carry_status_and_reason() {
        let body = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        let e = ClientError::from_error_body(400, body);
        assert_eq!(e.status(), Some("INVALID_ARGUMENT"));
        assert_eq!(e.reason(), Some("API_KEY_INVALID"));
        assert_eq!(
            e.to_string(),
            "INVALID_ARGUMENT: API key not valid. Please pass a valid API key. (reason: API_KEY_INVALID)"
        );
    }

    #[test]
    fn operation_errors_use_grpc_codes() {
        let v = serde_json::json!({"code": 6, "message": "A key with this id already exists."});
        match ClientError::from_status_value(200, &v) {
            ClientError::Api { code, status, .. } => {
                assert_eq!(code, 409);
                assert_eq!(status, "ALREADY_EXISTS");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_status_bodies_become_generic_errors() {
        let e = ClientError::from_error_body(502, b"<html>Bad Gateway</html>");
        assert!(matches!(e, ClientError::Api { code: 502, .. }));
        let e = ClientError::from_error_body(
            429,
            br#"[{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(e.to_string(), "RESOURCE_EXHAUSTED: slow down");
    }

    #[test]
    fn decode_errors_never_quote_values() {
        let err = serde_json::from_str::<u32>(r#""AIzaSECRETSECRETSECRET""#).unwrap_err();
        let e = ClientError::decode("GET keyString", &err);
        assert!(!e.to_string().contains("AIza"), "{e}");
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("AIzaXYZ");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "AIzaXYZ");
    }
}
