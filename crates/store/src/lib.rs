//! keyplane-store: where Keyplane's records live.
//!
//! Owns: the narrow storage traits below, their SQLite implementation (the embedded
//! default) and, later, PostgreSQL behind the same traits; the migrations of each dialect
//! (`migrations/sqlite`, `migrations/postgres`, same version numbers); one conformance
//! suite run against every implementation.
//! Must not touch: HTTP, wire formats, key strings in plain text (only HMACs and
//! ciphertexts arrive here), authorization decisions.

use async_trait::async_trait;
use keyplane_core::{
    AccessToken, ApiKey, Organization, Project, ServiceAccount, ServiceAccountKey, ServiceState,
    StoredOperation,
};
use time::OffsetDateTime;

mod codec;
mod page;
mod sqlite;
pub use page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use sqlite::SqliteStore;

#[cfg(feature = "conformance")]
pub mod conformance;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint was violated; the string names what already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// An optimistic-concurrency check (etag) failed; nothing was written.
    #[error("etag mismatch")]
    EtagMismatch,
    /// The caller passed something this store cannot use, e.g. a page token it did not
    /// issue. The string is safe to show to clients (it never holds stored data).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Anything else (I/O, corruption). Logged by the caller, never shown to clients.
    #[error("storage failure: {0}")]
    Internal(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A page request: `page_token` is the opaque token returned with the previous page.
/// `page_size` 0 means [`DEFAULT_PAGE_SIZE`]; sizes above [`MAX_PAGE_SIZE`] are capped.
/// A token this store did not issue (for this list) is `InvalidArgument`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub page_size: u32,
    pub page_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Organizations, installation metadata and finished operations.
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// The installation's organization, if bootstrap has created it.
    async fn organization(&self) -> Result<Option<Organization>>;
    /// Creates the organization; `AlreadyExists` if one is there.
    async fn create_organization(&self, org: &Organization) -> Result<()>;
    /// Free-form installation metadata (e.g. `bootstrap.version`).
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;
    async fn put_operation(&self, op: &StoredOperation) -> Result<()>;
    async fn get_operation(&self, name: &str) -> Result<StoredOperation>;
}

/// Projects and the services enabled in them.
#[async_trait]
pub trait ProjectStore: Send + Sync {
    /// `AlreadyExists` if the projectId or number is taken (deleted projects keep theirs).
    async fn create_project(&self, project: &Project) -> Result<()>;
    async fn project_by_number(&self, number: i64) -> Result<Project>;
    async fn project_by_id(&self, project_id: &str) -> Result<Project>;
    /// All projects (including DELETE_REQUESTED ones when `show_deleted`), ordered by
    /// projectId; the page token is opaque.
    async fn list_projects(&self, show_deleted: bool, page: &PageRequest) -> Result<Page<Project>>;
    /// Replaces the mutable fields (display name, labels, state, delete time, tier,
    /// studio flag, update time, etag) when the stored etag equals `expected_etag`.
    async fn update_project(&self, project: &Project, expected_etag: &str) -> Result<()>;
    /// Inserts or replaces a service's state.
    async fn set_service(&self, state: &ServiceState) -> Result<()>;
    /// `NotFound` when the service was never enabled or disabled in the project.
    async fn service(&self, project_number: i64, service: &str) -> Result<ServiceState>;
    async fn list_services(&self, project_number: i64) -> Result<Vec<ServiceState>>;
}

/// API keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// `AlreadyExists` if (project, keyId) exists, even soft-deleted, or the lookup hash exists.
    async fn create_key(&self, key: &ApiKey) -> Result<()>;
    async fn key(&self, project_number: i64, key_id: &str) -> Result<ApiKey>;
    /// Keys of a project ordered by create time then keyId; soft-deleted ones only when
    /// `show_deleted`.
    async fn list_keys(
        &self,
        project_number: i64,
        show_deleted: bool,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>>;
    /// Replaces display name, restrictions, annotations, service account, update time,
    /// delete time and etag when the stored etag equals `expected_etag`.
    async fn update_key(&self, key: &ApiKey, expected_etag: &str) -> Result<()>;
    /// The key (deleted or not) with this lookup hash.
    async fn key_by_hash(&self, lookup_hash: &[u8]) -> Result<ApiKey>;
    /// Every key not soft-deleted: what the in-memory auth snapshot is built from.
    async fn all_live_keys(&self) -> Result<Vec<ApiKey>>;
    /// Removes keys soft-deleted before `cutoff`; returns how many.
    async fn purge_deleted_keys(&self, cutoff: OffsetDateTime) -> Result<u64>;
}

/// Service accounts, their public keys and the access tokens minted for principals.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// `AlreadyExists` if the email is taken.
    async fn create_service_account(&self, sa: &ServiceAccount) -> Result<()>;
    async fn service_account(&self, email: &str) -> Result<ServiceAccount>;
    async fn service_account_by_unique_id(&self, unique_id: &str) -> Result<ServiceAccount>;
    async fn list_service_accounts(&self, project_number: i64) -> Result<Vec<ServiceAccount>>;
    async fn update_service_account(&self, sa: &ServiceAccount) -> Result<()>;
    async fn delete_service_account(&self, email: &str) -> Result<()>;
    async fn add_service_account_key(&self, key: &ServiceAccountKey) -> Result<()>;
    /// By key id (the JWT `kid`).
    async fn service_account_key(&self, key_id: &str) -> Result<ServiceAccountKey>;
    async fn list_service_account_keys(&self, email: &str) -> Result<Vec<ServiceAccountKey>>;
    async fn update_service_account_key(&self, key: &ServiceAccountKey) -> Result<()>;
    async fn delete_service_account_key(&self, key_id: &str) -> Result<()>;
    async fn put_access_token(&self, token: &AccessToken) -> Result<()>;
    async fn access_token(&self, token_hash: &[u8]) -> Result<AccessToken>;
    /// Removes tokens that expired before `now`; returns how many.
    async fn purge_expired_tokens(&self, now: OffsetDateTime) -> Result<u64>;
}

/// Everything the server needs.
pub trait Store: MetaStore + ProjectStore + KeyStore + IdentityStore {}
impl<T: MetaStore + ProjectStore + KeyStore + IdentityStore> Store for T {}
