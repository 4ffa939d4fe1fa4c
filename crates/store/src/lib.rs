//! keyplane-store: where Keyplane's records live.
//!
//! Owns: the narrow storage traits below, their SQLite implementation (the embedded
//! default) and, later, PostgreSQL behind the same traits; the migrations of each dialect
//! (`migrations/sqlite`, `migrations/postgres`, same version numbers); one conformance
//! suite run against every implementation.
//! Must not touch: HTTP, wire formats, key strings in plain text (only HMACs and
//! ciphertexts arrive here), authorization decisions.

use async_trait::async_trait;
use keyplane_core::iam::Policy;
use keyplane_core::quota::UsageRow;
use keyplane_core::{
    AccessToken, ApiKey, AuditEntry, EphemeralToken, Organization, Project, Restrictions,
    ServiceAccount, ServiceAccountKey, ServiceState, StoredOperation, User,
};
use std::sync::Arc;
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

/// What the in-memory auth snapshot keeps of a live key: the fields of [`ApiKey`] the data
/// plane decides with, and nothing else (no ciphertext, times, annotations or etag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotKey {
    pub project_number: i64,
    pub key_id: String,
    pub lookup_hash: Vec<u8>,
    /// Keys of one page whose stored restrictions are equal may share one value.
    pub restrictions: Arc<Restrictions>,
    pub service_account_email: Option<String>,
}

impl From<ApiKey> for SnapshotKey {
    fn from(key: ApiKey) -> Self {
        SnapshotKey {
            project_number: key.project_number,
            key_id: key.key_id,
            lookup_hash: key.lookup_hash,
            restrictions: Arc::new(key.restrictions),
            service_account_email: key.service_account_email,
        }
    }
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
    /// Creates every key in one transaction (bulk loads: imports, benchmarks): all or
    /// nothing, with the errors of [`KeyStore::create_key`] for the first key that fails.
    async fn create_keys(&self, keys: &[ApiKey]) -> Result<()>;
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
    /// At most `limit` keys not soft-deleted, from the start (`after` = `None`) or after the
    /// cursor returned with the previous page, in an order of the store's choosing, with the
    /// cursor of the next page (`None` on the last). The snapshot is loaded page by page, so
    /// a million keys never sit in memory twice; the cursor is opaque.
    async fn live_keys_page(
        &self,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<(Vec<ApiKey>, Option<Vec<u8>>)>;
    /// [`KeyStore::live_keys_page`] with only what the auth snapshot needs of each key
    /// ([`SnapshotKey`]): the same keys in the same order, with the same cursors (a cursor
    /// of either method is valid for the other). Reading a million keys at start-up, the
    /// columns left out are most of the cost.
    async fn live_snapshot_keys_page(
        &self,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<(Vec<SnapshotKey>, Option<Vec<u8>>)> {
        let (keys, next) = self.live_keys_page(after, limit).await?;
        Ok((keys.into_iter().map(SnapshotKey::from).collect(), next))
    }
    /// Every key not soft-deleted, as [`SnapshotKey`]s handed to `each` in pages of at most
    /// `page` keys (never empty) as they are read: what the auth snapshot is loaded from at
    /// start-up. The same keys, in the same order, as [`KeyStore::live_snapshot_keys_page`]
    /// walked from the start, which is what this default does; a store that can read them
    /// in one pass overrides it (SQLite, whose paged reads cost a million-key start about
    /// five seconds of per-row overhead). Pages go to `each` as they are read, so the keys
    /// are never in memory twice.
    async fn live_snapshot_keys(
        &self,
        page: u32,
        each: &mut (dyn FnMut(Vec<SnapshotKey>) + Send),
    ) -> Result<()> {
        snapshot_keys_in_pages(self, page, each).await
    }
    /// How many keys are not soft-deleted (a capacity hint for loading the snapshot).
    async fn live_key_count(&self) -> Result<u64>;
    /// Removes keys soft-deleted before `cutoff`; returns how many.
    async fn purge_deleted_keys(&self, cutoff: OffsetDateTime) -> Result<u64>;
}

/// [`KeyStore::live_snapshot_keys`] by walking [`KeyStore::live_snapshot_keys_page`] from the
/// start: the default, and what a store falls back to when it cannot read in one pass.
pub async fn snapshot_keys_in_pages<S: KeyStore + ?Sized>(
    store: &S,
    page: u32,
    each: &mut (dyn FnMut(Vec<SnapshotKey>) + Send),
) -> Result<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (keys, next) = store
            .live_snapshot_keys_page(after.as_deref(), page)
            .await?;
        if !keys.is_empty() {
            each(keys);
        }
        match next {
            Some(cursor) => after = Some(cursor),
            None => return Ok(()),
        }
    }
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

/// An organization policy as stored: the policy one resource sets for one constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgPolicyRecord {
    /// `organizations/{number}` or `projects/{number}`.
    pub resource: String,
    /// The constraint's name without `constraints/`
    /// (`iam.managed.disableServiceAccountApiKeyCreation`).
    pub constraint: String,
    /// The Org Policy v2 `PolicySpec` as JSON text, written and read by the server only
    /// (`null` when the policy has a dry-run spec only).
    pub spec: String,
    /// The dry-run `PolicySpec` JSON, if any.
    pub dry_run_spec: Option<String>,
    pub etag: String,
    pub update_time: OffsetDateTime,
}

/// Organization policies (Org Policy v2), on organizations and projects.
#[async_trait]
pub trait OrgPolicyStore: Send + Sync {
    /// `NotFound` when the resource sets no policy for the constraint.
    async fn org_policy(&self, resource: &str, constraint: &str) -> Result<OrgPolicyRecord>;
    /// The policies a resource sets, ordered by constraint name.
    async fn list_org_policies(&self, resource: &str) -> Result<Vec<OrgPolicyRecord>>;
    /// `AlreadyExists` if the resource already sets a policy for the constraint.
    async fn create_org_policy(&self, policy: &OrgPolicyRecord) -> Result<()>;
    /// Replaces the spec, dry-run spec, etag and update time when the stored etag equals
    /// `expected_etag` (`EtagMismatch` otherwise, `NotFound` when there is no policy).
    async fn update_org_policy(&self, policy: &OrgPolicyRecord, expected_etag: &str) -> Result<()>;
    /// Removes a policy; with `expected_etag`, only if the stored etag equals it.
    async fn delete_org_policy(
        &self,
        resource: &str,
        constraint: &str,
        expected_etag: Option<&str>,
    ) -> Result<()>;
}

/// IAM allow policies on `organizations/{number}` and `projects/{number}` (always the
/// project number, never its id). Each stored policy carries its etag.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The policy set on `resource`; `None` when none was ever set.
    async fn iam_policy(&self, resource: &str) -> Result<Option<Policy>>;
    /// Writes `policy` (with its new etag) on `resource` when the stored policy's etag is
    /// `expected_etag`, or, with `None`, when no policy is stored yet. Otherwise
    /// `EtagMismatch`, and nothing is written.
    async fn put_iam_policy(
        &self,
        resource: &str,
        policy: &Policy,
        expected_etag: Option<&str>,
    ) -> Result<()>;
}

/// People who sign in (`user:{email}`), by lowercased email.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// `AlreadyExists` if the email is taken.
    async fn create_user(&self, user: &User) -> Result<()>;
    async fn user(&self, email: &str) -> Result<User>;
    /// Every user, ordered by email.
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Replaces display name, password hash, disabled flag and update time.
    async fn update_user(&self, user: &User) -> Result<()>;
    /// Removes every stored access token of `principal`; returns how many.
    async fn delete_access_tokens_of(&self, principal: &str) -> Result<u64>;
}

/// Which audit entries a list returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Entries whose project is any of these (a project's id and its number); empty: all.
    pub projects: Vec<String>,
    /// Entries at or after this time.
    pub since: Option<OffsetDateTime>,
}

/// The audit log of control-plane mutations: append-only, listed in arrival order.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<()>;
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>>;
}

/// Ephemeral tokens (`auth_tokens/…`), by the HMAC of their name.
#[async_trait]
pub trait EphemeralTokenStore: Send + Sync {
    /// `AlreadyExists` if the hash is taken.
    async fn create_ephemeral_token(&self, token: &EphemeralToken) -> Result<()>;
    async fn ephemeral_token(&self, token_hash: &[u8]) -> Result<EphemeralToken>;
    /// Spends one use, atomically (a negative `uses_left` is unlimited and stays as it is):
    /// true when the token had a use left and both
    /// `expire_time` and `new_session_expire_time` are after `now`; false otherwise
    /// (unknown, exhausted or expired), and nothing changes.
    async fn use_ephemeral_token(&self, token_hash: &[u8], now: OffsetDateTime) -> Result<bool>;
    /// Removes tokens that expired before `now`; returns how many.
    async fn purge_expired_ephemeral_tokens(&self, now: OffsetDateTime) -> Result<u64>;
}

/// Usage buckets: what the data plane metered, one [`UsageRow`] per identity (project,
/// key uid, model, method, UTC minute, HTTP status). Rows are only ever added to, never
/// rewritten, and go when they are older than the retention.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds every row's counters (requests, prompt and candidates tokens, latency) to the
    /// stored row with the same identity, creating it when there is none; rows of `rows`
    /// that share an identity add up too. One transaction: all rows or none (a sum that
    /// would overflow an `i64` fails the call, `Internal`, and writes nothing). An empty
    /// slice writes nothing.
    async fn add_usage(&self, rows: &[UsageRow]) -> Result<()>;
    /// A project's rows with `from_minute <= minute < to_minute`, ordered by minute, model,
    /// method, key id, then code.
    async fn usage(
        &self,
        project_number: i64,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<UsageRow>>;
    /// What seeds the quota day counters at start: the counters of every row with
    /// `minute >= from_minute` whose method consumes request quota (`generateContent`,
    /// `streamGenerateContent`, `bidiGenerateContent`: a Live turn) and whose code is a
    /// success (2xx: refused and failed calls are given back), summed per (project, model).
    /// Each result has `key_id` and `method` empty, `minute = from_minute` and `code` 0;
    /// ordered by project number then model.
    async fn usage_totals_since(&self, from_minute: i64) -> Result<Vec<UsageRow>>;
    /// Removes the rows of every project whose minute is before `minute` (strictly: the
    /// rows of `minute` itself stay); returns how many.
    async fn purge_usage_before(&self, minute: i64) -> Result<u64>;
}

/// Everything the server needs.
pub trait Store:
    MetaStore
    + ProjectStore
    + KeyStore
    + IdentityStore
    + OrgPolicyStore
    + PolicyStore
    + UserStore
    + AuditStore
    + EphemeralTokenStore
    + UsageStore
{
}
impl<
        T: MetaStore
            + ProjectStore
            + KeyStore
            + IdentityStore
            + OrgPolicyStore
            + PolicyStore
            + UserStore
            + AuditStore
            + EphemeralTokenStore
            + UsageStore,
    > Store for T
{
}
