//! keyplane-core: the domain of Keyplane as plain data and plain functions.
//!
//! Owns: identifiers and their validation rules (project ids, key ids), the API key
//! format and its protection at rest (HMAC for lookup, AES-256-GCM for retrieval),
//! the domain records the store persists, the catalogue of services Keyplane knows,
//! IAM (Google's predefined roles and their permissions; allow policies), and quota
//! arithmetic with the usage rows it is metered into.
//! Must not touch: I/O, async, sqlx, axum or any wire format.

pub mod iam;
pub mod ids;
pub mod keys;
pub mod model;
pub mod quota;
pub mod services;

pub use ids::*;
pub use keys::*;
pub use model::*;
