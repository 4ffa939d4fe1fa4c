//! keyplane-client: typed HTTP clients for Keyplane's two faces, shared by the CLI and the
//! tests, and API-key discovery as Google's SDKs do it.
//!
//! Owns: the control-plane client (`ControlPlane`: Resource Manager v3 projects, Service
//! Usage v1, API Keys v2, with their long-running operations; IAM v1 in `iam`), the Gemini client (`Gemini`:
//! models, generateContent, SSE streaming, countTokens), service-account credentials and
//! the JWT-bearer token grant, and `resolve_api_key`.
//! Must not touch: the server, the store or any domain rule; it speaks only HTTP. It never
//! puts a key string or a token into an error message or a `Debug` output.

pub mod admin;
pub mod api_key;
pub mod control;
pub mod credentials;
pub mod error;
pub mod gemini;
mod http;
pub mod iam;
pub mod policies;
pub mod resources;
pub mod sse;

#[cfg(test)]
mod tests;

pub use api_key::{resolve_api_key, ResolvedKey};
pub use control::{Api, ControlPlane, NewKey};
pub use credentials::ServiceAccountCredentials;
pub use error::{ClientError, Secret};
pub use gemini::{text_request, ChunkStream, Gemini};
pub use iam::ServiceAccountKey;
pub use resources::{Key, Operation};
