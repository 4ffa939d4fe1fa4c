//! The conformance suite against SQLite, in memory and on disk, plus what only a file
//! can show: durability across reopening, file permissions, schema versions.

use keyplane_store::conformance::{self, Fixture};
use keyplane_store::{MetaStore, SqliteStore, StoreError};

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
