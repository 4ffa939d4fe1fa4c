//! `google.rpc.Status` errors: the one error type every HTTP handler returns.
//!
//! [`ApiError`] becomes a response in exactly one place ([`IntoResponse`]): status code =
//! `error.code`, `Content-Type: application/json; charset=UTF-8`, a pretty-printed
//! `{"error":{"code","message","status","details"}}` body, and on 401 the
//! `WWW-Authenticate` header Google sends. Internal causes are logged, never sent.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

/// `Content-Type` of every error body.
pub const JSON_UTF8: &str = "application/json; charset=UTF-8";
/// `WWW-Authenticate` value sent with every 401.
pub const BEARER_REALM: &str = "Bearer realm=\"https://accounts.google.com/\"";
/// ErrorInfo domain of credential and consumer problems.
pub const GOOGLEAPIS_DOMAIN: &str = "googleapis.com";

/// The canonical `google.rpc.Code`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    pub const ALL: [Code; 16] = [
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The name as written in `error.status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Google's HTTP mapping (gcp-control-plane.md §8 item 5).
    pub const fn http_status(self) -> u16 {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::ResourceExhausted => 429,
            Code::Cancelled => 499,
            Code::Internal | Code::Unknown | Code::DataLoss => 500,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::DeadlineExceeded => 504,
        }
    }

    /// The gRPC integer code, as used in `Operation.error.code`.
    pub const fn grpc(self) -> i32 {
        match self {
            Code::Cancelled => 1,
            Code::Unknown => 2,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::OutOfRange => 11,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::DataLoss => 15,
            Code::Unauthenticated => 16,
        }
    }

    pub fn from_grpc(code: i32) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.grpc() == code)
    }

    pub fn parse(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpLink {
    pub description: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaViolation {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub quota_metric: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub quota_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quota_dimensions: BTreeMap<String, String>,
    /// int64, written as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_value: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreconditionViolation {
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub description: String,
}

/// One entry of `error.details`, serialized with `@type` first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "@type")]
pub enum Detail {
    #[serde(rename = "type.googleapis.com/google.rpc.ErrorInfo")]
    ErrorInfo {
        reason: String,
        domain: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        metadata: BTreeMap<String, String>,
    },
    #[serde(rename = "type.googleapis.com/google.rpc.LocalizedMessage")]
    LocalizedMessage { locale: String, message: String },
    #[serde(rename = "type.googleapis.com/google.rpc.Help")]
    Help { links: Vec<HelpLink> },
    #[serde(rename = "type.googleapis.com/google.rpc.QuotaFailure")]
    QuotaFailure { violations: Vec<QuotaViolation> },
    /// `retryDelay` is a protobuf Duration string, e.g. `"41s"`.
    #[serde(
        rename = "type.googleapis.com/google.rpc.RetryInfo",
        rename_all = "camelCase"
    )]
    RetryInfo { retry_delay: String },
    #[serde(
        rename = "type.googleapis.com/google.rpc.BadRequest",
        rename_all = "camelCase"
    )]
    BadRequest {
        field_violations: Vec<FieldViolation>,
    },
    #[serde(rename = "type.googleapis.com/google.rpc.PreconditionFailure")]
    PreconditionFailure {
        violations: Vec<PreconditionViolation>,
    },
    #[serde(
        rename = "type.googleapis.com/google.rpc.DebugInfo",
        rename_all = "camelCase"
    )]
    DebugInfo {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stack_entries: Vec<String>,
        detail: String,
    },
}

impl Detail {
    pub fn error_info<'a>(
        reason: &str,
        domain: &str,
        metadata: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Detail {
        Detail::ErrorInfo {
            reason: reason.to_owned(),
            domain: domain.to_owned(),
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    /// `LocalizedMessage` in `en-US`.
    pub fn localized(message: impl Into<String>) -> Detail {
        Detail::LocalizedMessage {
            locale: "en-US".to_owned(),
            message: message.into(),
        }
    }

    pub fn help(description: impl Into<String>, url: impl Into<String>) -> Detail {
        Detail::Help {
            links: vec![HelpLink {
                description: description.into(),
                url: url.into(),
            }],
        }
    }

    /// `RetryInfo` with a whole-second delay (`"41s"`).
    pub fn retry_after(delay: Duration) -> Detail {
        Detail::RetryInfo {
            retry_delay: format!("{}s", delay.as_secs()),
        }
    }
}

/// A `google.rpc.Status` error with its HTTP status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code (also `error.code` in the body).
    pub code: u16,
    pub status: Code,
    pub message: String,
    pub details: Vec<Detail>,
    /// Internal cause: logged when the response is built, never sent to the client.
    pub cause: Option<String>,
}

/// `{"error": StatusBody}`, serialized as it is (no `Value` in between).
#[derive(Serialize)]
struct Envelope<'a> {
    error: StatusBody<'a>,
}

#[derive(Serialize)]
struct StatusBody<'a> {
    code: i64,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
    details: &'a [Detail],
}

const KEY_INVALID_MESSAGE: &str = "API key not valid. Please pass a valid API key.";
const UNREGISTERED_CALLERS: &str = "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.";
const INVALID_CREDENTIALS: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
const MISSING_CREDENTIALS: &str = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
const INTERNAL_MESSAGE: &str = "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting";
const QUOTA_MESSAGE: &str = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/rate-limit. ";
const RATE_LIMITS_URL: &str = "https://ai.google.dev/gemini-api/docs/rate-limits";

fn consumer(project_number: i64) -> String {
    format!("projects/{project_number}")
}

impl ApiError {
    /// An error with the canonical HTTP status for `status` and no details.
    pub fn new(status: Code, message: impl Into<String>) -> Self {
        ApiError {
            code: status.http_status(),
            status,
            message: message.into(),
            details: Vec::new(),
            cause: None,
        }
    }

    pub fn with_detail(mut self, detail: Detail) -> Self {
        self.details.push(detail);
        self
    }

    /// Appends a `LocalizedMessage` (en-US) repeating the message.
    pub fn with_localized_message(self) -> Self {
        let m = Detail::localized(self.message.clone());
        self.with_detail(m)
    }

    /// Records an internal cause to log; it never reaches the client.
    pub fn with_cause(mut self, cause: impl fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// The ErrorInfo `reason` of the first ErrorInfo detail, if any.
    pub fn reason(&self) -> Option<&str> {
        self.details.iter().find_map(|d| match d {
            Detail::ErrorInfo { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
    }

    pub fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// `{"error":{"code","message","status","details"}}` with the HTTP code: the body of
    /// error responses and of in-stream SSE error events (`error` is the only, first key).
    pub fn to_status_json(&self) -> Value {
        let body = StatusBody {
            code: i64::from(self.code),
            message: &self.message,
            status: Some(self.status.as_str()),
            details: &self.details,
        };
        serde_json::json!({ "error": body })
    }

    /// `google.rpc.Status` as it appears in `Operation.error`: `{"code": <gRPC int>,
    /// "message", "details"}`.
    pub fn to_operation_error(&self) -> Value {
        let body = StatusBody {
            code: i64::from(self.status.grpc()),
            message: &self.message,
            status: None,
            details: &self.details,
        };
        serde_json::to_value(body).unwrap_or(Value::Null)
    }

    // === Credentials and API keys (gemini-api.md §10.2, gcp-control-plane.md §1.7) ===

    /// 403: no API key and no OAuth token.
    pub fn no_credentials() -> Self {
        ApiError::new(Code::PermissionDenied, UNREGISTERED_CALLERS)
    }

    fn api_key_problem(message: &str, service: &str) -> Self {
        ApiError::new(Code::InvalidArgument, message)
            .with_detail(Detail::error_info(
                "API_KEY_INVALID",
                GOOGLEAPIS_DOMAIN,
                [("service", service.to_owned())],
            ))
            .with_localized_message()
    }

    /// 400 `API_KEY_INVALID`: unknown, malformed or deleted key.
    pub fn api_key_invalid(service: &str) -> Self {
        Self::api_key_problem(KEY_INVALID_MESSAGE, service)
    }

    /// 400 `API_KEY_INVALID`, the "not found" wording.
    pub fn api_key_not_found(service: &str) -> Self {
        Self::api_key_problem("API Key not found. Please pass a valid API key.", service)
    }

    /// 400 `API_KEY_INVALID`, the "expired" wording.
    pub fn api_key_expired(service: &str) -> Self {
        Self::api_key_problem("API key expired. Please renew the API key.", service)
    }

    /// 403 `SERVICE_DISABLED`: the API is not enabled in the consumer project.
    pub fn service_disabled(service: &str, service_title: &str, project_number: i64) -> Self {
        let activation_url = format!(
            "https://console.developers.google.com/apis/api/{service}/overview?project={project_number}"
        );
        let message = format!(
            "{service_title} has not been used in project {project_number} before or it is disabled. \
             Enable it by visiting {activation_url} then retry. If you enabled this API recently, \
             wait a few minutes for the action to propagate to our systems and retry."
        );
        ApiError::new(Code::PermissionDenied, message)
            .with_detail(Detail::error_info(
                "SERVICE_DISABLED",
                GOOGLEAPIS_DOMAIN,
                [
                    ("service", service.to_owned()),
                    ("consumer", consumer(project_number)),
                    ("serviceTitle", service_title.to_owned()),
                    ("containerInfo", project_number.to_string()),
                    ("activationUrl", activation_url.clone()),
                ],
            ))
            .with_localized_message()
            .with_detail(Detail::help(
                "Google developers console API activation",
                activation_url,
            ))
    }

    fn key_restriction(
        message: String,
        reason: &str,
        service: &str,
        project_number: i64,
        extra: Option<(&str, String)>,
    ) -> Self {
        let mut md = vec![
            ("service", service.to_owned()),
            ("consumer", consumer(project_number)),
        ];
        md.extend(extra);
        ApiError::new(Code::PermissionDenied, message)
            .with_detail(Detail::error_info(reason, GOOGLEAPIS_DOMAIN, md))
            .with_localized_message()
    }

    /// 403 `API_KEY_SERVICE_BLOCKED`: the key's `apiTargets` exclude this service/method.
    /// `method` is the full RPC name, e.g.
    /// `google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent`.
    pub fn api_key_service_blocked(service: &str, method: &str, project_number: i64) -> Self {
        let mut e = Self::key_restriction(
            format!("Requests to this API {service} method {method} are blocked."),
            "API_KEY_SERVICE_BLOCKED",
            service,
            project_number,
            Some(("apiName", service.to_owned())),
        );
        if let Some(Detail::ErrorInfo { metadata, .. }) = e.details.first_mut() {
            metadata.insert("methodName".to_owned(), method.to_owned());
        }
        e
    }

    /// 403 `API_KEY_HTTP_REFERRER_BLOCKED`; `None` renders as `<empty>`.
    pub fn referrer_blocked(referrer: Option<&str>, service: &str, project_number: i64) -> Self {
        let shown = referrer.filter(|r| !r.is_empty()).unwrap_or("<empty>");
        Self::key_restriction(
            format!("Requests from referer {shown} are blocked."),
            "API_KEY_HTTP_REFERRER_BLOCKED",
            service,
            project_number,
            Some(("httpReferrer", shown.to_owned())),
        )
    }

    /// 403 `API_KEY_IP_ADDRESS_BLOCKED`.
    pub fn ip_blocked(ip: &str, service: &str, project_number: i64) -> Self {
        Self::key_restriction(
            format!(
                "The provided API key has an IP address restriction. The originating IP address \
                 of the call ({ip}) violates this restriction."
            ),
            "API_KEY_IP_ADDRESS_BLOCKED",
            service,
            project_number,
            Some(("callerIp", ip.to_owned())),
        )
    }

    /// 403 `API_KEY_ANDROID_APP_BLOCKED`; `None` renders as `<empty>`.
    pub fn android_blocked(package: Option<&str>, service: &str, project_number: i64) -> Self {
        let shown = package.filter(|p| !p.is_empty()).unwrap_or("<empty>");
        Self::key_restriction(
            format!("Requests from this Android client application {shown} are blocked."),
            "API_KEY_ANDROID_APP_BLOCKED",
            service,
            project_number,
            Some(("androidPackage", shown.to_owned())),
        )
    }

    /// 403 `API_KEY_IOS_APP_BLOCKED`; `None` renders as `<empty>`.
    pub fn ios_blocked(bundle_id: Option<&str>, service: &str, project_number: i64) -> Self {
        let shown = bundle_id.filter(|b| !b.is_empty()).unwrap_or("<empty>");
        Self::key_restriction(
            format!("Requests from this iOS client application {shown} are blocked."),
            "API_KEY_IOS_APP_BLOCKED",
            service,
            project_number,
            Some(("iosBundleId", shown.to_owned())),
        )
    }

    // === Authentication (401) and authorization (403) ===

    /// 401 with an ErrorInfo `reason` (domain `googleapis.com`, no metadata).
    pub fn unauthenticated(message: impl Into<String>, reason: &str) -> Self {
        ApiError::new(Code::Unauthenticated, message).with_detail(Detail::error_info(
            reason,
            GOOGLEAPIS_DOMAIN,
            [],
        ))
    }

    /// 401 with an ErrorInfo carrying `metadata`.
    pub fn unauthenticated_with(
        message: impl Into<String>,
        reason: &str,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        ApiError::new(Code::Unauthenticated, message).with_detail(Detail::ErrorInfo {
            reason: reason.to_owned(),
            domain: GOOGLEAPIS_DOMAIN.to_owned(),
            metadata,
        })
    }

    /// 401 "Request had invalid authentication credentials. …" (bad/expired token).
    /// `reason` e.g. `ACCESS_TOKEN_EXPIRED`, `ACCESS_TOKEN_TYPE_UNSUPPORTED`, `JWT_TOKEN_INVALID`.
    pub fn invalid_credentials(reason: &str, service: &str, method: &str) -> Self {
        Self::unauthenticated_with(
            INVALID_CREDENTIALS,
            reason,
            [("service", service), ("method", method)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// 401 `CREDENTIALS_MISSING`: a method that needs a principal got no credentials.
    pub fn credentials_missing(service: &str, method: &str) -> Self {
        Self::unauthenticated_with(
            MISSING_CREDENTIALS,
            "CREDENTIALS_MISSING",
            [("service", service), ("method", method)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// 401 `CREDENTIALS_MISSING`: an API key on an API that needs a principal.
    pub fn api_keys_not_supported(service: &str, method: &str) -> Self {
        Self::unauthenticated_with(
            "API keys are not supported by this API. Expected OAuth2 access token or other \
             authentication credentials that assert a principal. See \
             https://cloud.google.com/docs/authentication",
            "CREDENTIALS_MISSING",
            [("service", service), ("method", method)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// 403 with an ErrorInfo (domain `googleapis.com`).
    pub fn permission_denied(
        message: impl Into<String>,
        reason: &str,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        ApiError::new(Code::PermissionDenied, message).with_detail(Detail::ErrorInfo {
            reason: reason.to_owned(),
            domain: GOOGLEAPIS_DOMAIN.to_owned(),
            metadata,
        })
    }

    /// 403 `IAM_PERMISSION_DENIED`: "Permission '{p}' denied on resource '{r}' (or it may
    /// not exist)." The ErrorInfo domain is the service owning the permission
    /// (`apikeys.keys.list` → `apikeys.googleapis.com`).
    pub fn iam_permission_denied(permission: &str, resource: &str) -> Self {
        let prefix = permission.split('.').next().unwrap_or_default();
        let domain = match prefix {
            "resourcemanager" => "cloudresourcemanager.googleapis.com".to_owned(),
            "" => "iam.googleapis.com".to_owned(),
            p => format!("{p}.googleapis.com"),
        };
        ApiError::new(
            Code::PermissionDenied,
            format!(
                "Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
            ),
        )
        .with_detail(Detail::error_info(
            "IAM_PERMISSION_DENIED",
            &domain,
            [
                ("permission", permission.to_owned()),
                ("resource", resource.to_owned()),
            ],
        ))
    }

    // === Requests ===

    /// 404 "models/{id} is not found for API version {v}, or is not supported for {method}. …"
    pub fn model_not_found(model_id: &str, api_version: &str, method: &str) -> Self {
        let id = model_id.strip_prefix("models/").unwrap_or(model_id);
        ApiError::new(
            Code::NotFound,
            format!(
                "models/{id} is not found for API version {api_version}, or is not supported for \
                 {method}. Call ListModels to see the list of available models and their \
                 supported methods."
            ),
        )
    }

    /// 400 INVALID_ARGUMENT without details.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        ApiError::new(Code::InvalidArgument, message)
    }

    /// 400 with a `BadRequest` detail; each description is one full message line and the
    /// message is the lines joined by `\n` (Google's "Invalid JSON payload received. …").
    /// `field` is a snake_case proto path (`generation_config.top_k`) or empty.
    pub fn bad_request_fields<F, D>(violations: Vec<(F, D)>) -> Self
    where
        F: Into<String>,
        D: Into<String>,
    {
        let field_violations: Vec<FieldViolation> = violations
            .into_iter()
            .map(|(f, d)| FieldViolation {
                field: f.into(),
                description: d.into(),
            })
            .collect();
        let message = field_violations
            .iter()
            .map(|v| v.description.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        ApiError::new(Code::InvalidArgument, message)
            .with_detail(Detail::BadRequest { field_violations })
    }

    /// 400 for a malformed body: "Invalid JSON payload received. {detail}" with a
    /// `BadRequest` detail naming no field.
    pub fn invalid_json(detail: impl fmt::Display) -> Self {
        let line = format!("Invalid JSON payload received. {detail}");
        Self::bad_request_fields(vec![(String::new(), line)])
    }

    /// 404 NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(Code::NotFound, message)
    }

    /// 409 ALREADY_EXISTS.
    pub fn already_exists(message: impl Into<String>) -> Self {
        ApiError::new(Code::AlreadyExists, message)
    }

    /// 409 ABORTED (e.g. etag mismatch).
    pub fn aborted(message: impl Into<String>) -> Self {
        ApiError::new(Code::Aborted, message)
    }

    /// 400 FAILED_PRECONDITION.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        ApiError::new(Code::FailedPrecondition, message)
    }

    /// 501 UNIMPLEMENTED.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        ApiError::new(Code::Unimplemented, message)
    }

    /// 503 UNAVAILABLE.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(Code::Unavailable, message)
    }

    /// 504 DEADLINE_EXCEEDED.
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        ApiError::new(Code::DeadlineExceeded, message)
    }

    // === Capacity and failures ===

    /// 429 per-model quota error with Help, QuotaFailure and RetryInfo details. The
    /// message names the metric, the limit (`quota_value`) and the `model` dimension.
    pub fn resource_exhausted_quota(violation: QuotaViolation, retry_after: Duration) -> Self {
        let mut message = QUOTA_MESSAGE.to_owned();
        message.push_str(&format!(
            "\n* Quota exceeded for metric: {}, limit: {}",
            violation.quota_metric,
            violation.quota_value.as_deref().unwrap_or("0")
        ));
        if let Some(model) = violation.quota_dimensions.get("model") {
            message.push_str(&format!(", model: {model}"));
        }
        message.push_str(&format!("\nPlease retry in {}s.", retry_after.as_secs()));
        ApiError::new(Code::ResourceExhausted, message)
            .with_detail(Detail::help(
                "Learn more about Gemini API quotas",
                RATE_LIMITS_URL,
            ))
            .with_detail(Detail::QuotaFailure {
                violations: vec![violation],
            })
            .with_detail(Detail::retry_after(retry_after))
    }

    /// 429 "Resource has been exhausted (e.g. check quota)." without details.
    pub fn resource_exhausted() -> Self {
        ApiError::new(
            Code::ResourceExhausted,
            "Resource has been exhausted (e.g. check quota).",
        )
    }

    /// 503 "The model is overloaded. Please try again later."
    pub fn overloaded() -> Self {
        ApiError::new(
            Code::Unavailable,
            "The model is overloaded. Please try again later.",
        )
    }

    /// 500 with Google's generic text; never carries internal detail.
    pub fn internal() -> Self {
        ApiError::new(Code::Internal, INTERNAL_MESSAGE)
    }

    /// 500 with the generic text; `cause` is logged when the response is built.
    pub fn internal_from(cause: impl fmt::Display) -> Self {
        Self::internal().with_cause(cause)
    }
}

impl ApiError {
    /// The response body: the pretty-printed `{"error": {...}}` of [`Self::to_status_json`].
    pub fn to_body(&self) -> Vec<u8> {
        let envelope = Envelope {
            error: StatusBody {
                code: i64::from(self.code),
                message: &self.message,
                status: Some(self.status.as_str()),
                details: &self.details,
            },
        };
        serde_json::to_vec_pretty(&envelope).unwrap_or_default()
    }

    /// The body of the errors answered for nearly every rejected request (an invalid API
    /// key on the Gemini or the Vertex API), rendered once: `None` for any other error.
    fn prerendered(&self) -> Option<Bytes> {
        if self.code != 400 || self.message != KEY_INVALID_MESSAGE || self.cause.is_some() {
            return None;
        }
        let service = match self.details.first() {
            Some(Detail::ErrorInfo { metadata, .. }) => metadata.get("service")?,
            _ => return None,
        };
        let (error, body) = key_invalid_rendered(service)?;
        (error == self).then(|| body.clone())
    }

    /// What [`Self::api_key_invalid`]`(service)` answers, without building the error when
    /// its body is pre-rendered (the Gemini and the Vertex API): invalid keys are the
    /// rejections a gateway answers most, and from memory.
    pub fn api_key_invalid_response(service: &str) -> Response {
        match key_invalid_rendered(service) {
            Some((_, body)) => json_response(StatusCode::BAD_REQUEST, body.clone()),
            None => ApiError::api_key_invalid(service).into_response(),
        }
    }
}

/// [`ApiError::api_key_invalid`] for `service` and its body, rendered on first use, for the
/// services whose keys the data plane checks; `None` for any other.
fn key_invalid_rendered(service: &str) -> Option<&'static (ApiError, Bytes)> {
    static RENDERED: [OnceLock<(ApiError, Bytes)>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = match service {
        keyplane_core::services::GENERATIVE_LANGUAGE => &RENDERED[0],
        keyplane_core::services::AIPLATFORM => &RENDERED[1],
        _ => return None,
    };
    Some(slot.get_or_init(|| {
        let error = ApiError::api_key_invalid(service);
        let body = Bytes::from(error.to_body());
        (error, body)
    }))
}

/// A JSON error answer: `status`, `body`, and the JSON content type.
fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(status = self.status.as_str(), cause = %cause, "request failed");
        }
        let status = self.http_status();
        let body = match self.prerendered() {
            Some(body) => body,
            None => Bytes::from(self.to_body()),
        };
        let mut resp = json_response(status, body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(BEARER_REALM),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(resp: Response) -> Vec<u8> {
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    /// The body written straight from the structs is byte for byte the pretty-printed
    /// `to_status_json` (the `Value` the body used to go through).
    #[test]
    fn body_is_the_pretty_status_json() {
        let errors = [
            ApiError::api_key_invalid(keyplane_core::services::GENERATIVE_LANGUAGE),
            ApiError::api_key_expired(keyplane_core::services::AIPLATFORM),
            ApiError::service_disabled("generativelanguage.googleapis.com", "Gemini", 42),
            ApiError::resource_exhausted_quota(QuotaViolation::default(), Duration::from_secs(3)),
            ApiError::bad_request_fields(vec![("a", "b")]),
            ApiError::no_credentials(),
            ApiError::internal_from("hidden"),
        ];
        for e in errors {
            let expected = serde_json::to_vec_pretty(&e.to_status_json()).unwrap();
            assert_eq!(e.to_body(), expected, "{e}");
        }
    }

    /// The pre-rendered API_KEY_INVALID answers exactly as a freshly rendered one, for each
    /// service, and only for that error.
    #[tokio::test]
    async fn prerendered_key_invalid_matches_a_fresh_rendering() {
        for service in [
            keyplane_core::services::GENERATIVE_LANGUAGE,
            keyplane_core::services::AIPLATFORM,
        ] {
            let e = ApiError::api_key_invalid(service);
            let fresh = e.to_body();
            for _ in 0..2 {
                let resp = ApiError::api_key_invalid(service).into_response();
                assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
                assert_eq!(resp.headers()[header::CONTENT_TYPE], JSON_UTF8);
                assert_eq!(body_of(resp).await, fresh);
            }
            let direct = ApiError::api_key_invalid_response(service);
            assert_eq!(direct.status(), StatusCode::BAD_REQUEST);
            assert_eq!(direct.headers().len(), 1);
            assert_eq!(direct.headers()[header::CONTENT_TYPE], JSON_UTF8);
            assert_eq!(body_of(direct).await, fresh);
            let body = String::from_utf8(fresh).unwrap();
            assert!(
                body.contains("API_KEY_INVALID") && body.contains(service),
                "{body}"
            );
        }
        // Same message, another service: rendered for it, not taken from the cache.
        let other = ApiError::api_key_invalid("example.googleapis.com");
        assert!(other.prerendered().is_none());
        let direct = ApiError::api_key_invalid_response("example.googleapis.com");
        assert_eq!(body_of(direct).await, other.to_body());
        let body = body_of(other.clone().into_response()).await;
        assert_eq!(body, other.to_body());
        // Another detail list with the same message is not the cached error either.
        let mut changed = ApiError::api_key_invalid(keyplane_core::services::GENERATIVE_LANGUAGE);
        changed.details.pop();
        assert!(changed.prerendered().is_none());
        assert_eq!(
            body_of(changed.clone().into_response()).await,
            changed.to_body()
        );
    }

    #[tokio::test]
    async fn unauthenticated_carries_the_realm() {
        let resp = ApiError::unauthenticated("no", "CREDENTIALS_MISSING").into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], BEARER_REALM);
    }
}
