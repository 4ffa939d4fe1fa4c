//! keyplane-wire: Google's wire formats as serde types.
//!
//! Owns: the JSON shapes of the Gemini API ([`gemini`]), of the control-plane resources
//! (API Keys v2, Resource Manager v3, Service Usage v1, OAuth; [`cloud`]) and of
//! `google.rpc.Status` errors ([`error`]), plus lenient request parsing ([`parse_json_body`]).
//! Must not touch: storage, authentication decisions or model execution.
//!
//! Conventions (proto3 JSON, as Google's front ends speak it):
//! - requests accept both lowerCamelCase and snake_case names at every typed level, ignore
//!   unknown fields, take integers written as floats (`40.0`) or strings, and enums as names
//!   or numbers; free-form JSON (`functionCall.args`, JSON schemas, …) is kept verbatim;
//! - responses are written in lowerCamelCase only, without nulls or empty fields.

pub mod case;
pub mod cloud;
mod de;
pub mod error;
pub mod gemini;
pub mod iam;
mod json;

pub use error::{ApiError, Code, Detail};
pub use json::{parse_json_body, parse_json_body_or_default};
