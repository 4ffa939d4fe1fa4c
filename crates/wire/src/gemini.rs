//! The Gemini API (`generativelanguage.googleapis.com`) JSON types.
//!
//! Requests accept lowerCamelCase and snake_case names (the Python SDK sends snake_case
//! inside `thinkingConfig`, `inlineData`, schemas, …), ignore unknown fields, and keep
//! free-form JSON (`functionCall.args`, `functionResponse.response`, JSON schemas,
//! schema `example`/`default`) verbatim. Everything serializes in lowerCamelCase without
//! nulls or empty fields. See gemini-api.md §3–§8.

use crate::de::{self, null_default};
use crate::error::ApiError;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub use crate::de::normalize_schema;
pub use crate::json::{parse_json_body, parse_json_body_or_default};

/// Role of user turns.
pub const ROLE_USER: &str = "user";
/// Role of model turns.
pub const ROLE_MODEL: &str = "model";

// === Content ===

/// A turn of the conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    /// `user` or `model`; absent on input means `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub parts: Vec<Part>,
}

impl Content {
    /// A `model` turn holding one text part.
    pub fn model_text(text: impl Into<String>) -> Self {
        Content {
            role: Some(ROLE_MODEL.to_owned()),
            parts: vec![Part::text(text)],
        }
    }

    /// A `user` turn holding one text part.
    pub fn user_text(text: impl Into<String>) -> Self {
        Content {
            role: Some(ROLE_USER.to_owned()),
            parts: vec![Part::text(text)],
        }
    }

    /// The role, `user` when absent.
    pub fn role_or_user(&self) -> &str {
        match self.role.as_deref() {
            None | Some("") => ROLE_USER,
            Some(r) => r,
        }
    }

    /// The non-thought text parts, concatenated.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter(|p| !p.thought)
            .filter_map(|p| p.text.as_deref())
            .collect()
    }
}

/// One part of a turn: exactly one data field plus optional modifiers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(
        default,
        alias = "inline_data",
        skip_serializing_if = "Option::is_none"
    )]
    pub inline_data: Option<Blob>,
    #[serde(default, alias = "file_data", skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    #[serde(
        default,
        alias = "function_call",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_call: Option<FunctionCall>,
    #[serde(
        default,
        alias = "function_response",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_response: Option<FunctionResponse>,
    #[serde(
        default,
        alias = "executable_code",
        skip_serializing_if = "Option::is_none"
    )]
    pub executable_code: Option<ExecutableCode>,
    #[serde(
        default,
        alias = "code_execution_result",
        skip_serializing_if = "Option::is_none"
    )]
    pub code_execution_result: Option<CodeExecutionResult>,
    /// The part is a thought summary.
    #[serde(
        default,
        deserialize_with = "de::bool_or_false",
        skip_serializing_if = "de::is_false"
    )]
    pub thought: bool,
    /// Opaque base64 bytes that clients echo back in history.
    #[serde(
        default,
        alias = "thought_signature",
        skip_serializing_if = "Option::is_none"
    )]
    pub thought_signature: Option<String>,
    #[serde(
        default,
        alias = "video_metadata",
        deserialize_with = "de::opt_camelized",
        skip_serializing_if = "Option::is_none"
    )]
    pub video_metadata: Option<Value>,
    #[serde(
        default,
        alias = "media_resolution",
        deserialize_with = "de::opt_camelized",
        skip_serializing_if = "Option::is_none"
    )]
    pub media_resolution: Option<Value>,
    #[serde(
        default,
        alias = "part_metadata",
        deserialize_with = "de::opt_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub part_metadata: Option<Value>,
}

impl Part {
    pub fn text(text: impl Into<String>) -> Self {
        Part {
            text: Some(text.into()),
            ..Part::default()
        }
    }

    /// Whether the part carries any data field (the proto `data` oneof is set).
    pub fn has_data(&self) -> bool {
        self.text.is_some()
            || self.inline_data.is_some()
            || self.file_data.is_some()
            || self.function_call.is_some()
            || self.function_response.is_some()
            || self.executable_code.is_some()
            || self.code_execution_result.is_some()
    }
}

/// Inline bytes: `{"mimeType", "data": base64}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    #[serde(default, alias = "mime_type")]
    pub mime_type: String,
    /// Base64 (standard on output; standard, url-safe or unpadded accepted on input).
    #[serde(default)]
    pub data: String,
}

impl Blob {
    /// Decodes `data` (standard or url-safe alphabet, padded or not).
    pub fn decode(&self) -> Result<Vec<u8>, ApiError> {
        decode_base64(&self.data).ok_or_else(|| {
            ApiError::bad_request_fields(vec![(
                "inline_data.data",
                "Invalid value at 'inline_data.data' (TYPE_BYTES), Base64 decoding failed",
            )])
        })
    }
}

/// Decodes base64 in any of the forms Google accepts for `bytes` fields.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if s.contains(['-', '_']) {
        &alphabet::URL_SAFE
    } else {
        &alphabet::STANDARD
    };
    let cleaned: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    GeneralPurpose::new(alphabet, cfg).decode(cleaned).ok()
}

/// Encodes bytes as standard padded base64 (the form Google emits).
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A file reference: `{"mimeType", "fileUri"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    #[serde(default, alias = "mime_type", skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, alias = "file_uri")]
    pub file_uri: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// Free-form arguments, verbatim.
    #[serde(
        default,
        deserialize_with = "de::opt_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// Free-form result, verbatim (`{"temp_c": 21}` stays `temp_c`).
    #[serde(
        default,
        deserialize_with = "de::opt_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub response: Option<Value>,
    #[serde(
        default,
        alias = "will_continue",
        deserialize_with = "de::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub will_continue: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutableCode {
    /// `PYTHON`.
    #[serde(default, deserialize_with = "de::language::req")]
    pub language: String,
    #[serde(default)]
    pub code: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeExecutionResult {
    /// `OUTCOME_OK`, `OUTCOME_FAILED`, `OUTCOME_DEADLINE_EXCEEDED`.
    #[serde(default, deserialize_with = "de::outcome::req")]
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

// === generateContent request ===

/// `POST /{v}/models/{id}:generateContent` and `:streamGenerateContent` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    /// Only inside `countTokens`' `generateContentRequest` (`models/x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub contents: Vec<Content>,
    #[serde(
        default,
        alias = "system_instruction",
        skip_serializing_if = "Option::is_none"
    )]
    pub system_instruction: Option<Content>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tools: Vec<Tool>,
    #[serde(
        default,
        alias = "tool_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub tool_config: Option<ToolConfig>,
    #[serde(
        default,
        alias = "safety_settings",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub safety_settings: Vec<SafetySetting>,
    #[serde(
        default,
        alias = "generation_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub generation_config: Option<GenerationConfig>,
    /// `cachedContents/{id}`.
    #[serde(
        default,
        alias = "cached_content",
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_content: Option<String>,
    /// User labels (keys are user data).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        alias = "service_tier",
        deserialize_with = "de::opt_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_tier: Option<Value>,
    #[serde(
        default,
        deserialize_with = "de::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub store: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(
        default,
        alias = "stop_sequences",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub stop_sequences: Vec<String>,
    /// `text/plain`, `application/json`, `text/x.enum`.
    #[serde(
        default,
        alias = "response_mime_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_mime_type: Option<String>,
    /// Gemini `Schema` (OpenAPI subset), its own keys normalized to camelCase
    /// (see [`normalize_schema`]).
    #[serde(
        default,
        alias = "response_schema",
        deserialize_with = "de::opt_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_schema: Option<Value>,
    /// Free JSON Schema, verbatim.
    #[serde(
        default,
        alias = "response_json_schema",
        alias = "_responseJsonSchema",
        deserialize_with = "de::opt_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_json_schema: Option<Value>,
    /// `TEXT`, `IMAGE`, `AUDIO`.
    #[serde(
        default,
        alias = "response_modalities",
        deserialize_with = "de::modality::vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub response_modalities: Vec<String>,
    #[serde(
        default,
        alias = "candidate_count",
        deserialize_with = "de::opt_i32",
        skip_serializing_if = "Option::is_none"
    )]
    pub candidate_count: Option<i32>,
    #[serde(
        default,
        alias = "max_output_tokens",
        deserialize_with = "de::opt_i32",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_output_tokens: Option<i32>,
    #[serde(
        default,
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub temperature: Option<f64>,
    #[serde(
        default,
        alias = "top_p",
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub top_p: Option<f64>,
    #[serde(
        default,
        alias = "top_k",
        deserialize_with = "de::opt_i32",
        skip_serializing_if = "Option::is_none"
    )]
    pub top_k: Option<i32>,
    #[serde(
        default,
        deserialize_with = "de::opt_i32",
        skip_serializing_if = "Option::is_none"
    )]
    pub seed: Option<i32>,
    #[serde(
        default,
        alias = "presence_penalty",
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub presence_penalty: Option<f64>,
    #[serde(
        default,
        alias = "frequency_penalty",
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub frequency_penalty: Option<f64>,
    #[serde(
        default,
        alias = "response_logprobs",
        deserialize_with = "de::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_logprobs: Option<bool>,
    #[serde(
        default,
        deserialize_with = "de::opt_i32",
        skip_serializing_if = "Option::is_none"
    )]
    pub logprobs: Option<i32>,
    #[serde(
        default,
        alias = "enable_enhanced_civic_answers",
        deserialize_with = "de::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_enhanced_civic_answers: Option<bool>,
    /// `{voiceConfig:{prebuiltVoiceConfig:{voiceName}}, …}`, keys normalized to camelCase.
    #[serde(
        default,
        alias = "speech_config",
        deserialize_with = "de::opt_camelized",
        skip_serializing_if = "Option::is_none"
    )]
    pub speech_config: Option<Value>,
    #[serde(
        default,
        alias = "thinking_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub thinking_config: Option<ThinkingConfig>,
    /// `{aspectRatio, …}`, keys normalized to camelCase.
    #[serde(
        default,
        alias = "image_config",
        deserialize_with = "de::opt_camelized",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_config: Option<Value>,
    /// `MEDIA_RESOLUTION_LOW|MEDIUM|HIGH`.
    #[serde(
        default,
        alias = "media_resolution",
        deserialize_with = "de::media_resolution::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub media_resolution: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    #[serde(
        default,
        alias = "include_thoughts",
        deserialize_with = "de::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub include_thoughts: Option<bool>,
    #[serde(
        default,
        alias = "thinking_budget",
        deserialize_with = "de::opt_i32",
        skip_serializing_if = "Option::is_none"
    )]
    pub thinking_budget: Option<i32>,
    /// `MINIMAL`, `LOW`, `MEDIUM`, `HIGH`.
    #[serde(
        default,
        alias = "thinking_level",
        deserialize_with = "de::thinking_level::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub thinking_level: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SafetySetting {
    /// `HARM_CATEGORY_*`.
    #[serde(default, deserialize_with = "de::harm_category::req")]
    pub category: String,
    /// `BLOCK_LOW_AND_ABOVE`, `BLOCK_MEDIUM_AND_ABOVE`, `BLOCK_ONLY_HIGH`, `BLOCK_NONE`, `OFF`.
    #[serde(default, deserialize_with = "de::harm_block_threshold::req")]
    pub threshold: String,
    #[serde(
        default,
        deserialize_with = "de::harm_block_method::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub method: Option<String>,
}

/// One entry of `tools`. Known kinds are typed; any other kind is kept in `other`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    #[serde(
        default,
        alias = "function_declarations",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub function_declarations: Vec<FunctionDeclaration>,
    #[serde(
        default,
        alias = "google_search",
        deserialize_with = "de::opt_camelized",
        skip_serializing_if = "Option::is_none"
    )]
    pub google_search: Option<Value>,
    #[serde(
        default,
        alias = "code_execution",
        deserialize_with = "de::opt_camelized",
        skip_serializing_if = "Option::is_none"
    )]
    pub code_execution: Option<Value>,
    #[serde(
        default,
        alias = "url_context",
        deserialize_with = "de::opt_camelized",
        skip_serializing_if = "Option::is_none"
    )]
    pub url_context: Option<Value>,
    #[serde(
        default,
        alias = "google_search_retrieval",
        deserialize_with = "de::opt_camelized",
        skip_serializing_if = "Option::is_none"
    )]
    pub google_search_retrieval: Option<Value>,
    /// Tool kinds this crate does not model (`googleMaps`, `fileSearch`, `computerUse`, …),
    /// under the key they arrived with.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Tool {
    /// Names of the tool kinds present (camelCase), for "unsupported tool" messages.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds = Vec::new();
        if !self.function_declarations.is_empty() {
            kinds.push("functionDeclarations".to_owned());
        }
        for (name, v) in [
            ("googleSearch", &self.google_search),
            ("codeExecution", &self.code_execution),
            ("urlContext", &self.url_context),
            ("googleSearchRetrieval", &self.google_search_retrieval),
        ] {
            if v.is_some() {
                kinds.push(name.to_owned());
            }
        }
        kinds.extend(self.other.keys().map(|k| crate::case::to_camel(k)));
        kinds
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `BLOCKING`, `NON_BLOCKING`.
    #[serde(
        default,
        deserialize_with = "de::function_behavior::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub behavior: Option<String>,
    /// Gemini `Schema`, keys normalized.
    #[serde(
        default,
        deserialize_with = "de::opt_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub parameters: Option<Value>,
    /// Free JSON Schema, verbatim.
    #[serde(
        default,
        alias = "parameters_json_schema",
        deserialize_with = "de::opt_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub parameters_json_schema: Option<Value>,
    /// Gemini `Schema`, keys normalized.
    #[serde(
        default,
        deserialize_with = "de::opt_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub response: Option<Value>,
    /// Free JSON Schema, verbatim.
    #[serde(
        default,
        alias = "response_json_schema",
        deserialize_with = "de::opt_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_json_schema: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    #[serde(
        default,
        alias = "function_calling_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_calling_config: Option<FunctionCallingConfig>,
    #[serde(
        default,
        alias = "retrieval_config",
        deserialize_with = "de::opt_camelized",
        skip_serializing_if = "Option::is_none"
    )]
    pub retrieval_config: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    /// `AUTO`, `ANY`, `NONE`, `VALIDATED`.
    #[serde(
        default,
        deserialize_with = "de::function_calling_mode::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<String>,
    #[serde(
        default,
        alias = "allowed_function_names",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_function_names: Vec<String>,
}

/// Most stop sequences a request may carry.
pub const MAX_STOP_SEQUENCES: usize = 5;

impl GenerateContentRequest {
    /// Google-style validation (400 INVALID_ARGUMENT, one `* GenerateContentRequest.{path}:
    /// {problem}` line per violation). Candidate count is capped at 1: Keyplane's models
    /// generate a single candidate.
    pub fn validate(&self) -> Result<(), ApiError> {
        for c in self.contents.iter().chain(self.system_instruction.iter()) {
            if let Some(role) = c.role.as_deref() {
                if !role.is_empty() && role != ROLE_USER && role != ROLE_MODEL {
                    return Err(ApiError::invalid_argument(
                        "Please use a valid role: user, model.",
                    ));
                }
            }
        }
        let mut lines: Vec<String> = Vec::new();
        let mut push = |path: &str, problem: &str| {
            lines.push(format!("* GenerateContentRequest.{path}: {problem}"));
        };
        if self.contents.is_empty() {
            push("contents", "contents is not specified");
        }
        for (i, c) in self.contents.iter().enumerate() {
            if c.parts.is_empty() {
                push(
                    &format!("contents[{i}].parts"),
                    "contents.parts must not be empty.",
                );
            }
            for (j, p) in c.parts.iter().enumerate() {
                if !p.has_data() {
                    push(
                        &format!("contents[{i}].parts[{j}].data"),
                        "required oneof field 'data' must have one initialized field",
                    );
                }
            }
        }
        if let Some(g) = &self.generation_config {
            if let Some(n) = g.candidate_count {
                if n < 0 {
                    push(
                        "generation_config.candidate_count",
                        "candidate_count must be positive.",
                    );
                } else if n > 1 {
                    push(
                        "generation_config.candidate_count",
                        "only 1 candidate is supported by this model; candidate_count must be 1.",
                    );
                }
            }
            if let Some(n) = g.max_output_tokens {
                if n <= 0 {
                    push(
                        "generation_config.max_output_tokens",
                        "max_output_tokens must be positive.",
                    );
                }
            }
            if let Some(t) = g.temperature {
                if !(0.0..=2.0).contains(&t) {
                    push(
                        "generation_config.temperature",
                        "temperature must be in the range [0.0, 2.0].",
                    );
                }
            }
            if let Some(p) = g.top_p {
                if !(0.0..=1.0).contains(&p) {
                    push(
                        "generation_config.top_p",
                        "top_p must be in the range [0.0, 1.0].",
                    );
                }
            }
            if let Some(k) = g.top_k {
                if k < 0 {
                    push("generation_config.top_k", "top_k must be non-negative.");
                }
            }
            if g.stop_sequences.len() > MAX_STOP_SEQUENCES {
                push(
                    "generation_config.stop_sequences",
                    "at most 5 stop sequences are allowed.",
                );
            }
        }
        if lines.is_empty() {
            Ok(())
        } else {
            let mut message = lines.join("\n");
            message.push('\n');
            Err(ApiError::invalid_argument(message))
        }
    }
}

// === generateContent response ===

/// One response, or one SSE chunk of a streamed response (delta parts only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub candidates: Vec<Candidate>,
    #[serde(
        default,
        alias = "prompt_feedback",
        skip_serializing_if = "Option::is_none"
    )]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(
        default,
        alias = "usage_metadata",
        skip_serializing_if = "Option::is_none"
    )]
    pub usage_metadata: Option<UsageMetadata>,
    /// Bare model id, e.g. `gemini-2.5-flash`.
    #[serde(
        default,
        alias = "model_version",
        skip_serializing_if = "Option::is_none"
    )]
    pub model_version: Option<String>,
    #[serde(
        default,
        alias = "response_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_id: Option<String>,
}

impl GenerateContentResponse {
    /// Text of candidate 0 (non-thought parts).
    pub fn text(&self) -> String {
        self.candidates
            .first()
            .and_then(|c| c.content.as_ref())
            .map(Content::text)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// `STOP`, `MAX_TOKENS`, `SAFETY`, … (see [`finish_reason`]); only on the last chunk.
    #[serde(
        default,
        alias = "finish_reason",
        deserialize_with = "de::finish_reason::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub finish_reason: Option<String>,
    /// Always written, `0` included (as Google does).
    #[serde(default, deserialize_with = "de::i32_or_zero")]
    pub index: i32,
    #[serde(
        default,
        alias = "safety_ratings",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub safety_ratings: Vec<SafetyRating>,
    #[serde(
        default,
        alias = "citation_metadata",
        skip_serializing_if = "Option::is_none"
    )]
    pub citation_metadata: Option<Value>,
    #[serde(
        default,
        alias = "token_count",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub token_count: i32,
    #[serde(
        default,
        alias = "grounding_metadata",
        skip_serializing_if = "Option::is_none"
    )]
    pub grounding_metadata: Option<Value>,
    #[serde(
        default,
        alias = "url_context_metadata",
        skip_serializing_if = "Option::is_none"
    )]
    pub url_context_metadata: Option<Value>,
    #[serde(
        default,
        alias = "avg_logprobs",
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub avg_logprobs: Option<f64>,
    #[serde(
        default,
        alias = "logprobs_result",
        skip_serializing_if = "Option::is_none"
    )]
    pub logprobs_result: Option<Value>,
    #[serde(
        default,
        alias = "finish_message",
        skip_serializing_if = "Option::is_none"
    )]
    pub finish_message: Option<String>,
}

/// `finishReason` values Keyplane emits. Never emit `CONTINUATION` (SDK 3.4 would
/// re-issue the request automatically).
pub mod finish_reason {
    pub const STOP: &str = "STOP";
    pub const MAX_TOKENS: &str = "MAX_TOKENS";
    pub const SAFETY: &str = "SAFETY";
    pub const RECITATION: &str = "RECITATION";
    pub const OTHER: &str = "OTHER";
    pub const MALFORMED_FUNCTION_CALL: &str = "MALFORMED_FUNCTION_CALL";
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SafetyRating {
    #[serde(default, deserialize_with = "de::harm_category::req")]
    pub category: String,
    /// `NEGLIGIBLE`, `LOW`, `MEDIUM`, `HIGH`.
    #[serde(default, deserialize_with = "de::harm_probability::req")]
    pub probability: String,
    #[serde(
        default,
        deserialize_with = "de::bool_or_false",
        skip_serializing_if = "de::is_false"
    )]
    pub blocked: bool,
}

/// A blocked prompt is HTTP 200 with this and no candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// `SAFETY`, `OTHER`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `IMAGE_SAFETY`.
    #[serde(
        default,
        alias = "block_reason",
        deserialize_with = "de::block_reason::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub block_reason: Option<String>,
    #[serde(
        default,
        alias = "safety_ratings",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub safety_ratings: Vec<SafetyRating>,
}

/// Token counts; zero counts and empty lists are omitted (proto3 JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(
        default,
        alias = "prompt_token_count",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub prompt_token_count: i32,
    #[serde(
        default,
        alias = "candidates_token_count",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub candidates_token_count: i32,
    /// prompt + candidates + thoughts + tool-use prompt.
    #[serde(
        default,
        alias = "total_token_count",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub total_token_count: i32,
    #[serde(
        default,
        alias = "thoughts_token_count",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub thoughts_token_count: i32,
    #[serde(
        default,
        alias = "cached_content_token_count",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub cached_content_token_count: i32,
    #[serde(
        default,
        alias = "tool_use_prompt_token_count",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub tool_use_prompt_token_count: i32,
    #[serde(
        default,
        alias = "prompt_tokens_details",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub prompt_tokens_details: Vec<ModalityTokenCount>,
    #[serde(
        default,
        alias = "cache_tokens_details",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cache_tokens_details: Vec<ModalityTokenCount>,
    #[serde(
        default,
        alias = "candidates_tokens_details",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub candidates_tokens_details: Vec<ModalityTokenCount>,
    #[serde(
        default,
        alias = "tool_use_prompt_tokens_details",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tool_use_prompt_tokens_details: Vec<ModalityTokenCount>,
}

impl UsageMetadata {
    /// Text-only usage: counts plus `TEXT` modality details, total = prompt + candidates.
    pub fn text(prompt_tokens: i32, candidate_tokens: i32) -> Self {
        UsageMetadata {
            prompt_token_count: prompt_tokens,
            candidates_token_count: candidate_tokens,
            total_token_count: prompt_tokens + candidate_tokens,
            prompt_tokens_details: vec![ModalityTokenCount::text(prompt_tokens)],
            candidates_tokens_details: if candidate_tokens > 0 {
                vec![ModalityTokenCount::text(candidate_tokens)]
            } else {
                Vec::new()
            },
            ..UsageMetadata::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModalityTokenCount {
    /// `TEXT`, `IMAGE`, `AUDIO`, `VIDEO`, `DOCUMENT`.
    #[serde(default)]
    pub modality: String,
    #[serde(default, alias = "token_count", deserialize_with = "de::i32_or_zero")]
    pub token_count: i32,
}

impl ModalityTokenCount {
    pub fn text(tokens: i32) -> Self {
        ModalityTokenCount {
            modality: "TEXT".to_owned(),
            token_count: tokens,
        }
    }
}

// === countTokens ===

/// `{"contents": […]}` or `{"generateContentRequest": {…}}` (mutually exclusive).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountTokensRequest {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub contents: Vec<Content>,
    #[serde(
        default,
        alias = "generate_content_request",
        skip_serializing_if = "Option::is_none"
    )]
    pub generate_content_request: Option<GenerateContentRequest>,
}

impl CountTokensRequest {
    /// 400 when both forms are given.
    pub fn validate(&self) -> Result<(), ApiError> {
        if !self.contents.is_empty() && self.generate_content_request.is_some() {
            return Err(ApiError::invalid_argument(
                "* CountTokensRequest: contents and generate_content_request are mutually exclusive; set only one.\n",
            ));
        }
        Ok(())
    }

    /// Both forms as one `GenerateContentRequest` (the thing to count).
    pub fn into_generate_request(self) -> GenerateContentRequest {
        match self.generate_content_request {
            Some(r) => r,
            None => GenerateContentRequest {
                contents: self.contents,
                ..GenerateContentRequest::default()
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountTokensResponse {
    /// Always written (the SDKs read it).
    #[serde(default, alias = "total_tokens", deserialize_with = "de::i32_or_zero")]
    pub total_tokens: i32,
    #[serde(
        default,
        alias = "cached_content_token_count",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub cached_content_token_count: i32,
    #[serde(
        default,
        alias = "prompt_tokens_details",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub prompt_tokens_details: Vec<ModalityTokenCount>,
    #[serde(
        default,
        alias = "cache_tokens_details",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cache_tokens_details: Vec<ModalityTokenCount>,
}

// === Embeddings ===

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedContentRequest {
    /// `models/{id}`; inside a batch it must equal the path model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub content: Content,
    /// `RETRIEVAL_QUERY`, `RETRIEVAL_DOCUMENT`, `SEMANTIC_SIMILARITY`, ….
    #[serde(
        default,
        alias = "task_type",
        deserialize_with = "de::task_type::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(
        default,
        alias = "output_dimensionality",
        deserialize_with = "de::opt_i32",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_dimensionality: Option<i32>,
}

impl EmbedContentRequest {
    /// 400 when the content has no parts or a non-positive `outputDimensionality`.
    /// `prefix` names the request in messages (`EmbedContentRequest` or
    /// `BatchEmbedContentsRequest.requests[3]`).
    pub fn validate_as(&self, prefix: &str) -> Result<(), ApiError> {
        if self.content.parts.is_empty() {
            return Err(ApiError::invalid_argument(format!(
                "* {prefix}.content.parts: contents.parts must not be empty.\n"
            )));
        }
        if matches!(self.output_dimensionality, Some(n) if n <= 0) {
            return Err(ApiError::invalid_argument(format!(
                "* {prefix}.output_dimensionality: output_dimensionality must be positive.\n"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEmbedContentsRequest {
    #[serde(default, deserialize_with = "null_default")]
    pub requests: Vec<EmbedContentRequest>,
}

impl BatchEmbedContentsRequest {
    /// 400 for an empty batch, a bad inner request, or an inner `model` other than
    /// `path_model` (`models/{id}`).
    pub fn validate(&self, path_model: &str) -> Result<(), ApiError> {
        if self.requests.is_empty() {
            return Err(ApiError::invalid_argument(
                "* BatchEmbedContentsRequest.requests: requests is not specified\n",
            ));
        }
        for (i, r) in self.requests.iter().enumerate() {
            let prefix = format!("BatchEmbedContentsRequest.requests[{i}]");
            r.validate_as(&prefix)?;
            if let Some(m) = r.model.as_deref() {
                let m_norm = m.strip_prefix("models/").unwrap_or(m);
                let p_norm = path_model.strip_prefix("models/").unwrap_or(path_model);
                if !m_norm.is_empty() && m_norm != p_norm {
                    return Err(ApiError::invalid_argument(format!(
                        "* {prefix}.model: Model in the request ({m}) does not match the model in the path (models/{p_norm}).\n"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentEmbedding {
    #[serde(default, deserialize_with = "null_default")]
    pub values: Vec<f32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedContentResponse {
    pub embedding: ContentEmbedding,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEmbedContentsResponse {
    #[serde(default, deserialize_with = "null_default")]
    pub embeddings: Vec<ContentEmbedding>,
}

// === Models ===

/// `models/{id}` as listed by `GET /{v}/models`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    /// `models/{id}`.
    pub name: String,
    #[serde(
        default,
        alias = "base_model_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_model_id: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(
        default,
        alias = "display_name",
        skip_serializing_if = "String::is_empty"
    )]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(
        default,
        alias = "input_token_limit",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub input_token_limit: i32,
    #[serde(
        default,
        alias = "output_token_limit",
        deserialize_with = "de::i32_or_zero",
        skip_serializing_if = "de::is_zero_i32"
    )]
    pub output_token_limit: i32,
    /// `generateContent`, `countTokens`, `embedContent`, `batchEmbedContents`, ….
    #[serde(
        default,
        alias = "supported_generation_methods",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub supported_generation_methods: Vec<String>,
    #[serde(
        default,
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub temperature: Option<f64>,
    #[serde(
        default,
        alias = "max_temperature",
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_temperature: Option<f64>,
    #[serde(
        default,
        alias = "top_p",
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub top_p: Option<f64>,
    /// Absent ⇒ the model does not take topK.
    #[serde(
        default,
        alias = "top_k",
        deserialize_with = "de::opt_i32",
        skip_serializing_if = "Option::is_none"
    )]
    pub top_k: Option<i32>,
    /// The model supports thinking.
    #[serde(
        default,
        deserialize_with = "de::bool_or_false",
        skip_serializing_if = "de::is_false"
    )]
    pub thinking: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListModelsResponse {
    #[serde(default, deserialize_with = "null_default")]
    pub models: Vec<Model>,
    /// Absent on the last page.
    #[serde(
        default,
        alias = "next_page_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_page_token: Option<String>,
}
