//! The conformance suite against SQLite, in memory and on disk, plus what only a file
//! can show: durability across reopening, file permissions, schema versions.

use keyplane_store::conformance::{self, Fixture};
use keyplane_store::{KeyStore, MetaStore, ProjectStore, SqliteStore, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

mod in_memory {
    use super::*;

    async fn fixture() -> Fixture<SqliteStore> {
        Fixture::new(SqliteStore::open_in_memory().await.unwrap())
    }

    keyplane_store::conformance_tests!(fixture().await);
}

mod on_disk {
    use super::*;

    async fn fixture() -> Fixture<SqliteStore> {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("keyplane.db"))
            .await
            .unwrap();
        Fixture::with_guard(store, dir)
    }

    keyplane_store::conformance_tests!(fixture().await);
}

#[tokio::test]
async fn reopened_file_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet is created.
    let path = dir.path().join("data").join("keyplane.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let population = conformance::populate(&store).await;
    conformance::check_population(&store, &population).await;
    store.close().await;
    drop(store);

    let reopened = SqliteStore::open(&path).await.unwrap();
    conformance::check_population(&reopened, &population).await;
    reopened.close().await;

    // Unclean: the store is dropped without `close`, then the file opened a third time.
    let again = SqliteStore::open(&path).await.unwrap();
    again.set_meta("after", "unclean").await.unwrap();
    drop(again);
    let third = SqliteStore::open(&path).await.unwrap();
    conformance::check_population(&third, &population).await;
    assert_eq!(
        third.get_meta("after").await.unwrap().as_deref(),
        Some("unclean")
    );
}

#[tokio::test]
async fn in_memory_stores_are_separate() {
    let a = SqliteStore::open_in_memory().await.unwrap();
    let b = SqliteStore::open_in_memory().await.unwrap();
    a.set_meta("k", "a").await.unwrap();
    assert_eq!(b.get_meta("k").await.unwrap(), None);
    // Clones share the database.
    let a2 = a.clone();
    assert_eq!(a2.get_meta("k").await.unwrap().as_deref(), Some("a"));
}

#[cfg(unix)]
#[tokio::test]
async fn new_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyplane.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.set_meta("k", "v").await.unwrap();
    for file in ["keyplane.db", "keyplane.db-wal", "keyplane.db-shm"] {
        let meta = std::fs::metadata(dir.path().join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
    }
}

#[tokio::test]
async fn file_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyplane.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.close().await;
    drop(store);

    // Pretend a newer Keyplane applied schema version 9999.
    {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "insert into _sqlx_migrations \
             (version, description, success, checksum, execution_time) \
             values (9999, 'future', 1, x'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    match SqliteStore::open(&path).await {
        Err(StoreError::Internal(msg)) => assert!(msg.contains("migrat"), "{msg}"),
        other => panic!("expected Internal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn unreadable_file_is_an_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-database.db");
    std::fs::write(&path, b"this is not an SQLite file, not even a little bit").unwrap();
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(StoreError::Internal(_))
    ));
}

/// The snapshot's keys read in one pass from a file: a row whose restrictions do not decode
/// ends the read with an internal error, after the pages before it, and nothing is changed.
#[tokio::test]
async fn snapshot_keys_from_a_damaged_row_are_an_internal_error() {
    use sqlx::ConnectOptions;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyplane.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let project = conformance::project(1);
    store.create_project(&project).await.unwrap();
    let keys: Vec<_> = (1..=30)
        .map(|n| conformance::api_key(project.number, n))
        .collect();
    store.create_keys(&keys).await.unwrap();
    let mut whole = 0;
    store
        .live_snapshot_keys(10, &mut |page| whole += page.len())
        .await
        .unwrap();
    assert_eq!(whole, 30);

    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    // The table is STRICT, so a column cannot hold another type: what can be damaged is the
    // restrictions' JSON.
    for damage in [
        "update api_keys set restrictions = '{not json' where rowid = 25",
        "update api_keys set restrictions = '[1, 2]' where rowid = 25",
    ] {
        sqlx::query(damage).execute(&mut conn).await.unwrap();
        let mut read = Vec::new();
        let e = store
            .live_snapshot_keys(10, &mut |page| read.push(page.len()))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Internal(m) if m.contains("restrictions")),
            "{e:?}"
        );
        assert_eq!(read, [10, 10], "{damage}");
    }
    assert_eq!(store.live_key_count().await.unwrap(), 30);
    // A closed store reads nothing.
    store.close().await;
    let mut after_close = 0;
    assert!(matches!(
        store
            .live_snapshot_keys(10, &mut |_| after_close += 1)
            .await,
        Err(StoreError::Internal(_))
    ));
    assert_eq!(after_close, 0);
}

/// What `_sqlx_migrations` says was applied: (version, success, checksum).
async fn applied_migrations(path: &Path) -> Vec<(i64, bool, Vec<u8>)> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    sqlx::query_as("select version, success, checksum from _sqlx_migrations order by version")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

/// The schema as SQLite keeps it: every table and index with its SQL.
async fn schema(path: &Path) -> Vec<(String, String, Option<String>)> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    sqlx::query_as("select type, name, sql from sqlite_master order by type, name")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn migrations_run_once() {
    // Read where the test runs (cargo sets CARGO_MANIFEST_DIR for it), not where it was
    // compiled: a build cached from another checkout keeps that checkout's path.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_owned());
    let shipped = std::fs::read_dir(manifest_dir.join("migrations/sqlite"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyplane.db");

    let store = SqliteStore::open(&path).await.unwrap();
    let population = conformance::populate(&store).await;
    store.close().await;
    let first = applied_migrations(&path).await;
    assert_eq!(first.len(), shipped, "every shipped migration applied once");
    assert!(first.iter().all(|(_, success, _)| *success));
    let first_schema = schema(&path).await;
    assert!(first_schema.iter().any(|(_, name, _)| name == "api_keys"));

    // Opening again (twice) applies nothing, changes no schema object and loses no data.
    for _ in 0..2 {
        let again = SqliteStore::open(&path).await.unwrap();
        conformance::check_population(&again, &population).await;
        again.close().await;
        assert_eq!(applied_migrations(&path).await, first);
        assert_eq!(schema(&path).await, first_schema);
    }
}

/// The server and an admin command (or two server processes by mistake) open the same
/// file and write at once: SQLite's busy timeout queues them, nobody sees "database is
/// locked", and each sees the other's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_file_write_at_once() {
    const TASKS: i64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyplane.db");
    let a = Arc::new(SqliteStore::open(&path).await.unwrap());
    // Opened while `a` is open: the migrations find nothing to do.
    let b = Arc::new(SqliteStore::open(&path).await.unwrap());
    let p = conformance::project(1);
    a.create_project(&p).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=TASKS {
        let (writer, reader) = if n % 2 == 0 {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        let pn = p.number;
        tasks.spawn(async move {
            let k = conformance::api_key(pn, n);
            writer.create_key(&k).await?;
            writer.set_meta(&format!("task.{n}"), "done").await?;
            // Committed by one handle, visible through the other.
            assert_eq!(reader.key_by_hash(&k.lookup_hash).await?, k);
            Ok::<_, StoreError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined
            .expect("task panicked")
            .expect("concurrent write failed");
    }
    for s in [&a, &b] {
        assert_eq!(s.all_live_keys().await.unwrap().len(), TASKS as usize);
        assert_eq!(
            s.get_meta(&format!("task.{TASKS}"))
                .await
                .unwrap()
                .as_deref(),
            Some("done")
        );
    }
}

/// The server holds the store as `Arc<dyn Store>`.
#[tokio::test]
async fn usable_as_a_trait_object() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    store.set_meta("k", "v").await.unwrap();
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v"));
    assert!(store.all_live_keys().await.unwrap().is_empty());
}
