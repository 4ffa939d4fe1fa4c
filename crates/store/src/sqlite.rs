//! SQLite: the embedded default store.
//!
//! One file in WAL mode. Writes go through a pool of exactly one connection, so they
//! queue in the process (fairly, without spinning in SQLite's busy handler) and a
//! statement never meets a write lock held by this process; the busy timeout covers other
//! processes (an admin command run beside the server). Reads go through a second pool of
//! several connections, which WAL lets run beside the writer and which see every write
//! committed before they start.
//!
//! Constraint violations are mapped to `StoreError`s where each statement runs (see
//! [`violation`]); everything else becomes `Internal` with the statement's name and
//! sqlx's message, which never holds bound values.
//!
//! Statements are written in SQL PostgreSQL runs too (see `migrations/README.md`), with
//! `$n` placeholders. sqlx binds a placeholder without a value as NULL and ignores extra
//! values, silently: keep each statement's `.bind` calls in placeholder order.

use crate::codec::{from_json, from_micros, micros, micros_opt, to_json};
use crate::page::{into_page, key_cursor, page_size, project_cursor, Cursor};
use crate::{
    IdentityStore, KeyStore, MetaStore, OrgPolicyRecord, OrgPolicyStore, Page, PageRequest,
    ProjectStore, Result, SnapshotKey, StoreError,
};
use async_trait::async_trait;
use keyplane_core::{
    AccessToken, ApiKey, Organization, Project, ProjectState, Restrictions, ServiceAccount,
    ServiceAccountKey, ServiceState, StoredOperation,
};
use sqlx::error::ErrorKind;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

mod ephemeral;
mod iam_policies;
mod snapshot;
mod usage;
mod users_audit;

/// The schema, compiled into the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for a write lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections of a file-backed store.
const READERS: u32 = 4;

/// The SQLite implementation of every storage trait. Cheap to clone (the pools are
/// shared) and safe to use from any number of tasks.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    /// The database file (`None` in memory), which the snapshot's keys are read from in
    /// one pass on a connection of their own.
    file: Option<Arc<PathBuf>>,
}

impl SqliteStore {
    /// Opens (creating it if missing, with its directory) the database file at `path` and
    /// brings its schema up to date. A new file is readable by its owner only.
    ///
    /// Fails if the file was migrated by a newer Keyplane (it holds a schema version this
    /// binary does not know).
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let path = plain_path(path);
        create_private_file(&path).await?;
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit reaches the disk before it returns: a key shown to a caller
            // must survive a power cut.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(|e| {
                StoreError::Internal(format!("opening database {}: {e}", path.display()))
            })?;
        migrate(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(opts)
            .await
            .map_err(|e| {
                StoreError::Internal(format!("opening database {}: {e}", path.display()))
            })?;
        Ok(SqliteStore {
            write,
            read,
            file: Some(Arc::new(path)),
        })
    }

    /// A private, empty, migrated database that lives as long as this store (and its
    /// clones): for tests and throwaway servers.
    pub async fn open_in_memory() -> Result<SqliteStore> {
        let opts = SqliteConnectOptions::new()
            .filename(":memory:")
            .in_memory(true)
            .foreign_keys(true);
        // An in-memory database lives and dies with its connection: keep exactly one,
        // forever, and use it for reads as well as writes.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Internal(format!("opening in-memory database: {e}")))?;
        migrate(&pool).await?;
        Ok(SqliteStore {
            write: pool.clone(),
            read: pool,
            file: None,
        })
    }

    /// Waits for running statements, then closes every connection (checkpointing the
    /// WAL). Later calls on this store or its clones fail with `Internal`.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// SQLite opens names starting with `file:` as URIs; a relative path that looks like one
/// is made explicit so it stays a path.
fn plain_path(path: &Path) -> PathBuf {
    if path.is_relative() && path.to_string_lossy().starts_with("file:") {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}

/// Creates the database file (and its directory) if missing, with mode 0600 on Unix:
/// SQLite gives the `-wal` and `-shm` files the same permissions.
async fn create_private_file(path: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| {
        StoreError::Internal(format!("{what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io("creating the directory of", e))?;
    }
    let mut file = tokio::fs::OpenOptions::new();
    file.write(true).create(true).truncate(false);
    #[cfg(unix)]
    file.mode(0o600);
    file.open(path).await.map_err(|e| io("creating", e))?;
    Ok(())
}

async fn migrate(pool: &SqlitePool) -> Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| StoreError::Internal(format!("migrating the database: {e}")))
}

// === errors ===

/// A constraint a failed statement violated.
enum Violation<'a> {
    /// A unique or primary-key constraint; SQLite names the columns
    /// (`UNIQUE constraint failed: api_keys.lookup_hash`).
    Unique(&'a str),
    /// A foreign key: the row referred to does not exist.
    ForeignKey,
}

fn violation(e: &sqlx::Error) -> Option<Violation<'_>> {
    let db = e.as_database_error()?;
    match db.kind() {
        ErrorKind::UniqueViolation => Some(Violation::Unique(db.message())),
        ErrorKind::ForeignKeyViolation => Some(Violation::ForeignKey),
        _ => None,
    }
}

/// Anything not mapped at the call site. sqlx's messages never include bound values, so
/// no key material can leak through here.
fn internal(statement: &str, e: sqlx::Error) -> StoreError {
    StoreError::Internal(format!("{statement}: {e}"))
}

/// Reads one column, typed.
fn col<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Internal(format!("column {name}: {e}")))
}

fn time_col(row: &SqliteRow, name: &str) -> Result<OffsetDateTime> {
    from_micros(name, col(row, name)?)
}

fn opt_time_col(row: &SqliteRow, name: &str) -> Result<Option<OffsetDateTime>> {
    col::<Option<i64>>(row, name)?
        .map(|m| from_micros(name, m))
        .transpose()
}

/// After a compare-and-swap UPDATE touched no row: was the row missing (`exists` finds
/// nothing) or its etag different?
async fn missing_or_stale(pool: &SqlitePool, exists: Query<'_>) -> StoreError {
    match exists.fetch_optional(pool).await {
        Ok(Some(_)) => StoreError::EtagMismatch,
        Ok(None) => StoreError::NotFound,
        Err(e) => internal("etag check", e),
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

// === rows ===

macro_rules! project_columns {
    () => {
        "number, project_id, display_name, parent, state, labels, tier, studio_visible, \
         created_by, create_time, update_time, delete_time, etag"
    };
}

fn project_from_row(row: &SqliteRow) -> Result<Project> {
    let state: String = col(row, "state")?;
    Ok(Project {
        number: col(row, "number")?,
        project_id: col(row, "project_id")?,
        display_name: col(row, "display_name")?,
        parent: col(row, "parent")?,
        state: ProjectState::parse(&state)
            .ok_or_else(|| StoreError::Internal(format!("column state: unknown {state:?}")))?,
        labels: from_json("labels", &col::<String>(row, "labels")?)?,
        tier: col(row, "tier")?,
        studio_visible: col(row, "studio_visible")?,
        created_by: col(row, "created_by")?,
        create_time: time_col(row, "create_time")?,
        update_time: time_col(row, "update_time")?,
        delete_time: opt_time_col(row, "delete_time")?,
        etag: col(row, "etag")?,
    })
}

macro_rules! key_columns {
    () => {
        "project_number, key_id, uid, display_name, lookup_hash, ciphertext, last4, \
         restrictions, annotations, service_account_email, create_time, update_time, \
         delete_time, etag"
    };
}

fn key_from_row(row: &SqliteRow) -> Result<ApiKey> {
    Ok(ApiKey {
        project_number: col(row, "project_number")?,
        key_id: col(row, "key_id")?,
        uid: col(row, "uid")?,
        display_name: col(row, "display_name")?,
        lookup_hash: col(row, "lookup_hash")?,
        ciphertext: col(row, "ciphertext")?,
        last4: col(row, "last4")?,
        restrictions: from_json("restrictions", &col::<String>(row, "restrictions")?)?,
        annotations: from_json("annotations", &col::<String>(row, "annotations")?)?,
        service_account_email: col(row, "service_account_email")?,
        create_time: time_col(row, "create_time")?,
        update_time: time_col(row, "update_time")?,
        delete_time: opt_time_col(row, "delete_time")?,
        etag: col(row, "etag")?,
    })
}

macro_rules! service_account_columns {
    () => {
        "email, unique_id, project_number, project_id, display_name, description, disabled, \
         create_time, etag"
    };
}

fn service_account_from_row(row: &SqliteRow) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        email: col(row, "email")?,
        unique_id: col(row, "unique_id")?,
        project_number: col(row, "project_number")?,
        project_id: col(row, "project_id")?,
        display_name: col(row, "display_name")?,
        description: col(row, "description")?,
        disabled: col(row, "disabled")?,
        create_time: time_col(row, "create_time")?,
        etag: col(row, "etag")?,
    })
}

macro_rules! sa_key_columns {
    () => {
        "key_id, service_account_email, public_key_pem, disabled, valid_after, valid_before, \
         create_time"
    };
}

fn sa_key_from_row(row: &SqliteRow) -> Result<ServiceAccountKey> {
    Ok(ServiceAccountKey {
        key_id: col(row, "key_id")?,
        service_account_email: col(row, "service_account_email")?,
        public_key_pem: col(row, "public_key_pem")?,
        disabled: col(row, "disabled")?,
        valid_after: time_col(row, "valid_after")?,
        valid_before: time_col(row, "valid_before")?,
        create_time: time_col(row, "create_time")?,
    })
}

fn service_from_row(row: &SqliteRow) -> Result<ServiceState> {
    Ok(ServiceState {
        project_number: col(row, "project_number")?,
        service: col(row, "service")?,
        enabled: col(row, "enabled")?,
        update_time: time_col(row, "update_time")?,
    })
}

/// A column by position (the statement's own order), for rows read in bulk: no name lookup.
fn col_at<'r, T>(row: &'r SqliteRow, index: usize, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(index)
        .map_err(|e| StoreError::Internal(format!("column {name}: {e}")))
}

/// Distinct restrictions texts [`DecodedRestrictions`] remembers (a linear search: the keys
/// read in bulk hold a handful of distinct values, usually one).
const DECODED_RESTRICTIONS: usize = 8;

/// Restrictions decoded while reading keys in bulk for the snapshot: most keys share theirs
/// with many others (none at all, or the same API target), so equal JSON text is decoded
/// once and its keys share one value.
#[derive(Default)]
struct DecodedRestrictions(Vec<(String, Arc<Restrictions>)>);

impl DecodedRestrictions {
    fn decode(&mut self, text: &str) -> Result<Arc<Restrictions>> {
        if let Some((_, r)) = self.0.iter().find(|(t, _)| t == text) {
            return Ok(Arc::clone(r));
        }
        let r = Arc::new(from_json::<Restrictions>("restrictions", text)?);
        if self.0.len() < DECODED_RESTRICTIONS {
            self.0.push((text.to_owned(), Arc::clone(&r)));
        }
        Ok(r)
    }
}

/// The rowid after which a page of live keys starts (`live_keys_page`'s cursor).
fn key_page_cursor(after: Option<&[u8]>) -> Result<i64> {
    match after {
        None => Ok(i64::MIN),
        Some(c) => <[u8; 8]>::try_from(c).map(i64::from_be_bytes).map_err(|_| {
            StoreError::InvalidArgument("a key page cursor this store did not issue".into())
        }),
    }
}

fn collect<T>(rows: &[SqliteRow], f: fn(&SqliteRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

// === MetaStore ===

#[async_trait]
impl MetaStore for SqliteStore {
    async fn organization(&self) -> Result<Option<Organization>> {
        let row = sqlx::query(
            "select number, display_name, create_time from organizations \
             order by number limit 1",
        )
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("organization", e))?;
        row.map(|row| {
            Ok(Organization {
                number: col(&row, "number")?,
                display_name: col(&row, "display_name")?,
                create_time: time_col(&row, "create_time")?,
            })
        })
        .transpose()
    }

    async fn create_organization(&self, org: &Organization) -> Result<()> {
        // One organization per installation: insert only into an empty table.
        let done = sqlx::query(
            "insert into organizations (number, display_name, create_time) \
             select $1, $2, $3 where not exists (select 1 from organizations)",
        )
        .bind(org.number)
        .bind(&org.display_name)
        .bind(micros(org.create_time))
        .execute(&self.write)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique(_)) => {
                StoreError::AlreadyExists(format!("organizations/{}", org.number))
            }
            _ => internal("create_organization", e),
        })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists("an organization".into()));
        }
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("select value from meta where key = $1")
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .map_err(|e| internal("get_meta", e))
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "insert into meta (key, value) values ($1, $2) \
             on conflict (key) do update set value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await
        .map_err(|e| internal("set_meta", e))?;
        Ok(())
    }

    async fn put_operation(&self, op: &StoredOperation) -> Result<()> {
        sqlx::query(
            "insert into operations (name, body, create_time) values ($1, $2, $3) \
             on conflict (name) do update \
             set body = excluded.body, create_time = excluded.create_time",
        )
        .bind(&op.name)
        .bind(&op.body)
        .bind(micros(op.create_time))
        .execute(&self.write)
        .await
        .map_err(|e| internal("put_operation", e))?;
        Ok(())
    }

    async fn get_operation(&self, name: &str) -> Result<StoredOperation> {
        let row = sqlx::query("select name, body, create_time from operations where name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(|e| internal("get_operation", e))?
            .ok_or(StoreError::NotFound)?;
        Ok(StoredOperation {
            name: col(&row, "name")?,
            body: col(&row, "body")?,
            create_time: time_col(&row, "create_time")?,
        })
    }
}

// === ProjectStore ===

#[async_trait]
impl ProjectStore for SqliteStore {
    async fn create_project(&self, p: &Project) -> Result<()> {
        sqlx::query(concat!(
            "insert into projects (",
            project_columns!(),
            ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(p.number)
        .bind(&p.project_id)
        .bind(&p.display_name)
        .bind(&p.parent)
        .bind(p.state.as_str())
        .bind(to_json("labels", &p.labels)?)
        .bind(&p.tier)
        .bind(p.studio_visible)
        .bind(&p.created_by)
        .bind(micros(p.create_time))
        .bind(micros(p.update_time))
        .bind(micros_opt(p.delete_time))
        .bind(&p.etag)
        .execute(&self.write)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique(cols)) if cols.contains("project_id") => {
                StoreError::AlreadyExists(format!("projects/{}", p.project_id))
            }
            Some(Violation::Unique(_)) => {
                StoreError::AlreadyExists(format!("projects/{}", p.number))
            }
            _ => internal("create_project", e),
        })?;
        Ok(())
    }

    async fn project_by_number(&self, number: i64) -> Result<Project> {
        let row = sqlx::query(concat!(
            "select ",
            project_columns!(),
            " from projects where number = $1"
        ))
        .bind(number)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("project_by_number", e))?
        .ok_or(StoreError::NotFound)?;
        project_from_row(&row)
    }

    async fn project_by_id(&self, project_id: &str) -> Result<Project> {
        let row = sqlx::query(concat!(
            "select ",
            project_columns!(),
            " from projects where project_id = $1"
        ))
        .bind(project_id)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("project_by_id", e))?
        .ok_or(StoreError::NotFound)?;
        project_from_row(&row)
    }

    async fn list_projects(&self, show_deleted: bool, page: &PageRequest) -> Result<Page<Project>> {
        let size = page_size(page);
        let after = project_cursor(page)?;
        let rows = sqlx::query(concat!(
            "select ",
            project_columns!(),
            " from projects \
             where ($1 or state = 'ACTIVE') and ($2 is null or project_id > $2) \
             order by project_id limit $3"
        ))
        .bind(show_deleted)
        .bind(after.as_deref())
        .bind(i64::from(size) + 1)
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("list_projects", e))?;
        let items = collect(&rows, project_from_row)?;
        Ok(into_page(items, size, |p| Cursor::Project {
            project_id: p.project_id.clone(),
        }))
    }

    async fn update_project(&self, p: &Project, expected_etag: &str) -> Result<()> {
        let done = sqlx::query(
            "update projects set display_name = $1, labels = $2, state = $3, delete_time = $4, \
             tier = $5, studio_visible = $6, update_time = $7, etag = $8 \
             where number = $9 and etag = $10",
        )
        .bind(&p.display_name)
        .bind(to_json("labels", &p.labels)?)
        .bind(p.state.as_str())
        .bind(micros_opt(p.delete_time))
        .bind(&p.tier)
        .bind(p.studio_visible)
        .bind(micros(p.update_time))
        .bind(&p.etag)
        .bind(p.number)
        .bind(expected_etag)
        .execute(&self.write)
        .await
        .map_err(|e| internal("update_project", e))?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("select 1 from projects where number = $1").bind(p.number);
            return Err(missing_or_stale(&self.write, exists).await);
        }
        Ok(())
    }

    async fn set_service(&self, s: &ServiceState) -> Result<()> {
        sqlx::query(
            "insert into services (project_number, service, enabled, update_time) \
             values ($1, $2, $3, $4) \
             on conflict (project_number, service) do update \
             set enabled = excluded.enabled, update_time = excluded.update_time",
        )
        .bind(s.project_number)
        .bind(&s.service)
        .bind(s.enabled)
        .bind(micros(s.update_time))
        .execute(&self.write)
        .await
        .map_err(|e| match violation(&e) {
            // The project does not exist.
            Some(Violation::ForeignKey) => StoreError::NotFound,
            _ => internal("set_service", e),
        })?;
        Ok(())
    }

    async fn service(&self, project_number: i64, service: &str) -> Result<ServiceState> {
        let row = sqlx::query(
            "select project_number, service, enabled, update_time from services \
             where project_number = $1 and service = $2",
        )
        .bind(project_number)
        .bind(service)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("service", e))?
        .ok_or(StoreError::NotFound)?;
        service_from_row(&row)
    }

    async fn list_services(&self, project_number: i64) -> Result<Vec<ServiceState>> {
        let rows = sqlx::query(
            "select project_number, service, enabled, update_time from services \
             where project_number = $1 order by service",
        )
        .bind(project_number)
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("list_services", e))?;
        collect(&rows, service_from_row)
    }
}

// === KeyStore ===

/// The insert of one key, bound and ready to run on a pool or in a transaction.
fn insert_key(
    k: &ApiKey,
) -> Result<sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>>> {
    Ok(sqlx::query(concat!(
        "insert into api_keys (",
        key_columns!(),
        ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind(k.project_number)
    .bind(&k.key_id)
    .bind(&k.uid)
    .bind(&k.display_name)
    .bind(&k.lookup_hash)
    .bind(&k.ciphertext)
    .bind(&k.last4)
    .bind(to_json("restrictions", &k.restrictions)?)
    .bind(to_json("annotations", &k.annotations)?)
    .bind(k.service_account_email.as_deref())
    .bind(micros(k.create_time))
    .bind(micros(k.update_time))
    .bind(micros_opt(k.delete_time))
    .bind(&k.etag))
}

fn create_key_error(k: &ApiKey, e: sqlx::Error) -> StoreError {
    match violation(&e) {
        // Never say more than that: the clash is with another key's secret.
        Some(Violation::Unique(cols)) if cols.contains("lookup_hash") => {
            StoreError::AlreadyExists("an API key with the same key string".into())
        }
        Some(Violation::Unique(cols)) if cols.contains(".uid") => {
            StoreError::AlreadyExists(format!("an API key with uid {}", k.uid))
        }
        Some(Violation::Unique(_)) => StoreError::AlreadyExists(k.name()),
        // The project does not exist.
        Some(Violation::ForeignKey) => StoreError::NotFound,
        _ => internal("create_key", e),
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, k: &ApiKey) -> Result<()> {
        insert_key(k)?
            .execute(&self.write)
            .await
            .map_err(|e| create_key_error(k, e))?;
        Ok(())
    }

    async fn create_keys(&self, keys: &[ApiKey]) -> Result<()> {
        let mut tx = self
            .write
            .begin()
            .await
            .map_err(|e| internal("create_keys", e))?;
        for k in keys {
            // On error the transaction is dropped, which rolls it back.
            insert_key(k)?
                .execute(&mut *tx)
                .await
                .map_err(|e| create_key_error(k, e))?;
        }
        tx.commit().await.map_err(|e| internal("create_keys", e))
    }

    async fn key(&self, project_number: i64, key_id: &str) -> Result<ApiKey> {
        let row = sqlx::query(concat!(
            "select ",
            key_columns!(),
            " from api_keys where project_number = $1 and key_id = $2"
        ))
        .bind(project_number)
        .bind(key_id)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("key", e))?
        .ok_or(StoreError::NotFound)?;
        key_from_row(&row)
    }

    async fn list_keys(
        &self,
        project_number: i64,
        show_deleted: bool,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>> {
        let size = page_size(page);
        let (after_time, after_id) = match key_cursor(page, project_number)? {
            Some((t, id)) => (Some(t), Some(id)),
            None => (None, None),
        };
        let rows = sqlx::query(concat!(
            "select ",
            key_columns!(),
            " from api_keys \
             where project_number = $1 and ($2 or delete_time is null) \
             and ($3 is null or (create_time, key_id) > ($3, $4)) \
             order by create_time, key_id limit $5"
        ))
        .bind(project_number)
        .bind(show_deleted)
        .bind(after_time)
        .bind(after_id.as_deref())
        .bind(i64::from(size) + 1)
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("list_keys", e))?;
        let items = collect(&rows, key_from_row)?;
        Ok(into_page(items, size, |k| Cursor::Key {
            project_number,
            create_micros: micros(k.create_time),
            key_id: k.key_id.clone(),
        }))
    }

    async fn update_key(&self, k: &ApiKey, expected_etag: &str) -> Result<()> {
        let done = sqlx::query(
            "update api_keys set display_name = $1, restrictions = $2, annotations = $3, \
             service_account_email = $4, update_time = $5, delete_time = $6, etag = $7 \
             where project_number = $8 and key_id = $9 and etag = $10",
        )
        .bind(&k.display_name)
        .bind(to_json("restrictions", &k.restrictions)?)
        .bind(to_json("annotations", &k.annotations)?)
        .bind(k.service_account_email.as_deref())
        .bind(micros(k.update_time))
        .bind(micros_opt(k.delete_time))
        .bind(&k.etag)
        .bind(k.project_number)
        .bind(&k.key_id)
        .bind(expected_etag)
        .execute(&self.write)
        .await
        .map_err(|e| internal("update_key", e))?;
        if done.rows_affected() == 0 {
            let exists =
                sqlx::query("select 1 from api_keys where project_number = $1 and key_id = $2")
                    .bind(k.project_number)
                    .bind(&k.key_id);
            return Err(missing_or_stale(&self.write, exists).await);
        }
        Ok(())
    }

    async fn key_by_hash(&self, lookup_hash: &[u8]) -> Result<ApiKey> {
        let row = sqlx::query(concat!(
            "select ",
            key_columns!(),
            " from api_keys where lookup_hash = $1"
        ))
        .bind(lookup_hash)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("key_by_hash", e))?
        .ok_or(StoreError::NotFound)?;
        key_from_row(&row)
    }

    async fn all_live_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(concat!(
            "select ",
            key_columns!(),
            " from api_keys where delete_time is null \
             order by project_number, create_time, key_id"
        ))
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("all_live_keys", e))?;
        collect(&rows, key_from_row)
    }

    async fn live_keys_page(
        &self,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<(Vec<ApiKey>, Option<Vec<u8>>)> {
        // In rowid order, the table's own order: reading through an index instead costs one
        // random table lookup per key (20 s for a million). `+delete_time` keeps the planner
        // off the delete_time index for the same reason. The cursor is the last rowid.
        let after = key_page_cursor(after)?;
        let rows = sqlx::query(concat!(
            "select rowid as row_id, ",
            key_columns!(),
            " from api_keys where rowid > $1 and +delete_time is null order by rowid limit $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("live_keys_page", e))?;
        let next = match rows.last() {
            Some(last) if rows.len() == limit as usize => {
                let id: i64 = col(last, "row_id")?;
                Some(id.to_be_bytes().to_vec())
            }
            _ => None,
        };
        Ok((collect(&rows, key_from_row)?, next))
    }

    async fn live_snapshot_keys_page(
        &self,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<(Vec<SnapshotKey>, Option<Vec<u8>>)> {
        // The same statement as `live_keys_page` with five of its fourteen columns: sqlx
        // copies every column of every row, so the rest would be most of the work.
        let after = key_page_cursor(after)?;
        let rows = sqlx::query(
            "select rowid, project_number, key_id, lookup_hash, restrictions, \
             service_account_email from api_keys \
             where rowid > $1 and +delete_time is null order by rowid limit $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("live_snapshot_keys_page", e))?;
        let next = match rows.last() {
            Some(last) if rows.len() == limit as usize => {
                let id: i64 = col_at(last, 0, "rowid")?;
                Some(id.to_be_bytes().to_vec())
            }
            _ => None,
        };
        // Equal restrictions are decoded once per page.
        let mut decoded = DecodedRestrictions::default();
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let restrictions = decoded.decode(col_at(row, 4, "restrictions")?)?;
            keys.push(SnapshotKey {
                project_number: col_at(row, 1, "project_number")?,
                key_id: col_at(row, 2, "key_id")?,
                lookup_hash: col_at(row, 3, "lookup_hash")?,
                restrictions,
                service_account_email: col_at(row, 5, "service_account_email")?,
            });
        }
        Ok((keys, next))
    }

    async fn live_snapshot_keys(
        &self,
        page: u32,
        each: &mut (dyn FnMut(Vec<SnapshotKey>) + Send),
    ) -> Result<()> {
        match &self.file {
            // Like every other call after `close`, this one fails (its connection would not).
            Some(_) if self.read.is_closed() => Err(StoreError::Internal(
                "live_snapshot_keys: the store is closed".into(),
            )),
            Some(path) => snapshot::live_snapshot_keys(path, page, each).await,
            // An in-memory database is only reachable through its one connection.
            None => crate::snapshot_keys_in_pages(self, page, each).await,
        }
    }

    async fn live_key_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("select count(*) from api_keys where delete_time is null")
            .fetch_one(&self.read)
            .await
            .map_err(|e| internal("live_key_count", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn purge_deleted_keys(&self, cutoff: OffsetDateTime) -> Result<u64> {
        let done =
            sqlx::query("delete from api_keys where delete_time is not null and delete_time < $1")
                .bind(micros(cutoff))
                .execute(&self.write)
                .await
                .map_err(|e| internal("purge_deleted_keys", e))?;
        Ok(done.rows_affected())
    }
}

// === IdentityStore ===

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn create_service_account(&self, sa: &ServiceAccount) -> Result<()> {
        sqlx::query(concat!(
            "insert into service_accounts (",
            service_account_columns!(),
            ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&sa.email)
        .bind(&sa.unique_id)
        .bind(sa.project_number)
        .bind(&sa.project_id)
        .bind(&sa.display_name)
        .bind(&sa.description)
        .bind(sa.disabled)
        .bind(micros(sa.create_time))
        .bind(&sa.etag)
        .execute(&self.write)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique(cols)) if cols.contains("unique_id") => {
                StoreError::AlreadyExists(format!(
                    "a service account with uniqueId {}",
                    sa.unique_id
                ))
            }
            Some(Violation::Unique(_)) => {
                StoreError::AlreadyExists(format!("serviceAccounts/{}", sa.email))
            }
            // The project does not exist.
            Some(Violation::ForeignKey) => StoreError::NotFound,
            _ => internal("create_service_account", e),
        })?;
        Ok(())
    }

    async fn service_account(&self, email: &str) -> Result<ServiceAccount> {
        let row = sqlx::query(concat!(
            "select ",
            service_account_columns!(),
            " from service_accounts where email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("service_account", e))?
        .ok_or(StoreError::NotFound)?;
        service_account_from_row(&row)
    }

    async fn service_account_by_unique_id(&self, unique_id: &str) -> Result<ServiceAccount> {
        let row = sqlx::query(concat!(
            "select ",
            service_account_columns!(),
            " from service_accounts where unique_id = $1"
        ))
        .bind(unique_id)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("service_account_by_unique_id", e))?
        .ok_or(StoreError::NotFound)?;
        service_account_from_row(&row)
    }

    async fn list_service_accounts(&self, project_number: i64) -> Result<Vec<ServiceAccount>> {
        let rows = sqlx::query(concat!(
            "select ",
            service_account_columns!(),
            " from service_accounts where project_number = $1 order by email"
        ))
        .bind(project_number)
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("list_service_accounts", e))?;
        collect(&rows, service_account_from_row)
    }

    async fn update_service_account(&self, sa: &ServiceAccount) -> Result<()> {
        let done = sqlx::query(
            "update service_accounts set display_name = $1, description = $2, disabled = $3, \
             etag = $4 where email = $5",
        )
        .bind(&sa.display_name)
        .bind(&sa.description)
        .bind(sa.disabled)
        .bind(&sa.etag)
        .bind(&sa.email)
        .execute(&self.write)
        .await
        .map_err(|e| internal("update_service_account", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_service_account(&self, email: &str) -> Result<()> {
        // Its keys go with it (on delete cascade).
        let done = sqlx::query("delete from service_accounts where email = $1")
            .bind(email)
            .execute(&self.write)
            .await
            .map_err(|e| internal("delete_service_account", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn add_service_account_key(&self, k: &ServiceAccountKey) -> Result<()> {
        sqlx::query(concat!(
            "insert into service_account_keys (",
            sa_key_columns!(),
            ") values ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&k.key_id)
        .bind(&k.service_account_email)
        .bind(&k.public_key_pem)
        .bind(k.disabled)
        .bind(micros(k.valid_after))
        .bind(micros(k.valid_before))
        .bind(micros(k.create_time))
        .execute(&self.write)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique(_)) => StoreError::AlreadyExists(format!(
                "serviceAccounts/{}/keys/{}",
                k.service_account_email, k.key_id
            )),
            // The service account does not exist.
            Some(Violation::ForeignKey) => StoreError::NotFound,
            _ => internal("add_service_account_key", e),
        })?;
        Ok(())
    }

    async fn service_account_key(&self, key_id: &str) -> Result<ServiceAccountKey> {
        let row = sqlx::query(concat!(
            "select ",
            sa_key_columns!(),
            " from service_account_keys where key_id = $1"
        ))
        .bind(key_id)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("service_account_key", e))?
        .ok_or(StoreError::NotFound)?;
        sa_key_from_row(&row)
    }

    async fn list_service_account_keys(&self, email: &str) -> Result<Vec<ServiceAccountKey>> {
        let rows = sqlx::query(concat!(
            "select ",
            sa_key_columns!(),
            " from service_account_keys where service_account_email = $1 \
             order by create_time, key_id"
        ))
        .bind(email)
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("list_service_account_keys", e))?;
        collect(&rows, sa_key_from_row)
    }

    async fn update_service_account_key(&self, k: &ServiceAccountKey) -> Result<()> {
        let done = sqlx::query(
            "update service_account_keys set public_key_pem = $1, disabled = $2, \
             valid_after = $3, valid_before = $4 where key_id = $5",
        )
        .bind(&k.public_key_pem)
        .bind(k.disabled)
        .bind(micros(k.valid_after))
        .bind(micros(k.valid_before))
        .bind(&k.key_id)
        .execute(&self.write)
        .await
        .map_err(|e| internal("update_service_account_key", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_service_account_key(&self, key_id: &str) -> Result<()> {
        let done = sqlx::query("delete from service_account_keys where key_id = $1")
            .bind(key_id)
            .execute(&self.write)
            .await
            .map_err(|e| internal("delete_service_account_key", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn put_access_token(&self, t: &AccessToken) -> Result<()> {
        sqlx::query(
            "insert into access_tokens (token_hash, principal, scope, expire_time) \
             values ($1, $2, $3, $4)",
        )
        .bind(&t.token_hash)
        .bind(&t.principal)
        .bind(&t.scope)
        .bind(micros(t.expire_time))
        .execute(&self.write)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique(_)) => StoreError::AlreadyExists("an access token".into()),
            _ => internal("put_access_token", e),
        })?;
        Ok(())
    }

    async fn access_token(&self, token_hash: &[u8]) -> Result<AccessToken> {
        let row = sqlx::query(
            "select token_hash, principal, scope, expire_time from access_tokens \
             where token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("access_token", e))?
        .ok_or(StoreError::NotFound)?;
        Ok(AccessToken {
            token_hash: col(&row, "token_hash")?,
            principal: col(&row, "principal")?,
            scope: col(&row, "scope")?,
            expire_time: time_col(&row, "expire_time")?,
        })
    }

    async fn purge_expired_tokens(&self, now: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("delete from access_tokens where expire_time < $1")
            .bind(micros(now))
            .execute(&self.write)
            .await
            .map_err(|e| internal("purge_expired_tokens", e))?;
        Ok(done.rows_affected())
    }
}

// === OrgPolicyStore ===

macro_rules! org_policy_columns {
    () => {
        "resource, constraint_name, spec, dry_run_spec, etag, update_time"
    };
}

fn org_policy_from_row(row: &SqliteRow) -> Result<OrgPolicyRecord> {
    Ok(OrgPolicyRecord {
        resource: col(row, "resource")?,
        constraint: col(row, "constraint_name")?,
        spec: col(row, "spec")?,
        dry_run_spec: col(row, "dry_run_spec")?,
        etag: col(row, "etag")?,
        update_time: time_col(row, "update_time")?,
    })
}

#[async_trait]
impl OrgPolicyStore for SqliteStore {
    async fn org_policy(&self, resource: &str, constraint: &str) -> Result<OrgPolicyRecord> {
        let row = sqlx::query(concat!(
            "select ",
            org_policy_columns!(),
            " from org_policies where resource = $1 and constraint_name = $2"
        ))
        .bind(resource)
        .bind(constraint)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("org_policy", e))?
        .ok_or(StoreError::NotFound)?;
        org_policy_from_row(&row)
    }

    async fn list_org_policies(&self, resource: &str) -> Result<Vec<OrgPolicyRecord>> {
        let rows = sqlx::query(concat!(
            "select ",
            org_policy_columns!(),
            " from org_policies where resource = $1 order by constraint_name"
        ))
        .bind(resource)
        .fetch_all(&self.read)
        .await
        .map_err(|e| internal("list_org_policies", e))?;
        collect(&rows, org_policy_from_row)
    }

    async fn create_org_policy(&self, p: &OrgPolicyRecord) -> Result<()> {
        sqlx::query(concat!(
            "insert into org_policies (",
            org_policy_columns!(),
            ") values ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&p.resource)
        .bind(&p.constraint)
        .bind(&p.spec)
        .bind(p.dry_run_spec.as_deref())
        .bind(&p.etag)
        .bind(micros(p.update_time))
        .execute(&self.write)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique(_)) => {
                StoreError::AlreadyExists(format!("{}/policies/{}", p.resource, p.constraint))
            }
            _ => internal("create_org_policy", e),
        })?;
        Ok(())
    }

    async fn update_org_policy(&self, p: &OrgPolicyRecord, expected_etag: &str) -> Result<()> {
        let done = sqlx::query(
            "update org_policies set spec = $1, dry_run_spec = $2, etag = $3, update_time = $4 \
             where resource = $5 and constraint_name = $6 and etag = $7",
        )
        .bind(&p.spec)
        .bind(p.dry_run_spec.as_deref())
        .bind(&p.etag)
        .bind(micros(p.update_time))
        .bind(&p.resource)
        .bind(&p.constraint)
        .bind(expected_etag)
        .execute(&self.write)
        .await
        .map_err(|e| internal("update_org_policy", e))?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query(
                "select 1 from org_policies where resource = $1 and constraint_name = $2",
            )
            .bind(&p.resource)
            .bind(&p.constraint);
            return Err(missing_or_stale(&self.write, exists).await);
        }
        Ok(())
    }

    async fn delete_org_policy(
        &self,
        resource: &str,
        constraint: &str,
        expected_etag: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "delete from org_policies where resource = $1 and constraint_name = $2 \
             and ($3 is null or etag = $3)",
        )
        .bind(resource)
        .bind(constraint)
        .bind(expected_etag)
        .execute(&self.write)
        .await
        .map_err(|e| internal("delete_org_policy", e))?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query(
                "select 1 from org_policies where resource = $1 and constraint_name = $2",
            )
            .bind(resource)
            .bind(constraint);
            return Err(missing_or_stale(&self.write, exists).await);
        }
        Ok(())
    }
}
