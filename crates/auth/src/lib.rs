//! keyplane-auth: the hot path's credential checks.
//!
//! Owns: the in-memory snapshot of API keys (lookup hash -> key entry) and of project
//! service states, kept current by the control plane on every write; RS256 JWT
//! verification against service-account public keys; access-token minting and lookup; the
//! read-through cache of service accounts and IAM policies ([`Directory`]); the per-project,
//! per-model quota counters and project tiers ([`quota::Quotas`]).
//! Must not touch: HTTP types, wire formats, SQL. Nothing here reads the database on a
//! data-plane request except a cache miss.

pub mod directory;
pub mod jwt;
pub mod quota;
pub mod restrictions;
pub mod snapshot;
pub mod tokens;

pub use directory::Directory;
pub use snapshot::{KeyDenied, KeyEntry, KeyPermit, Snapshot, WordHasher};
