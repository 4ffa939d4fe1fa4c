//! The auth snapshot's keys read in one pass at start-up, on a read-only connection of its
//! own. Through sqlx every row is its own message from the connection's worker thread (each
//! value copied on the way), which made that hop most of a million-key start; here one
//! blocking thread steps the statement and reads each column in place, and hands the keys
//! over in pages while it reads the next.

use super::{DecodedRestrictions, BUSY_TIMEOUT};
use crate::{Result, SnapshotKey, StoreError};
use rusqlite::{Connection, OpenFlags, Row};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Pages read ahead of the one being loaded (bounds what sits between the two threads).
const READ_AHEAD: usize = 2;

/// The statement of `live_snapshot_keys_page` without its cursor: the same keys, in the
/// same order.
const LIVE_SNAPSHOT_KEYS: &str = "select project_number, key_id, lookup_hash, restrictions, \
     service_account_email from api_keys where +delete_time is null order by rowid";

/// Reads the live keys of the database file at `path` and hands them to `each` in pages of
/// at most `page` keys, in rowid order.
pub(super) async fn live_snapshot_keys(
    path: &Path,
    page: u32,
    each: &mut (dyn FnMut(Vec<SnapshotKey>) + Send),
) -> Result<()> {
    let page = usize::try_from(page.max(1)).unwrap_or(usize::MAX);
    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let path: PathBuf = path.to_owned();
    let reader = tokio::task::spawn_blocking(move || read_keys(&path, page, &tx));
    while let Some(keys) = rx.recv().await {
        each(keys);
    }
    reader
        .await
        .map_err(|e| StoreError::Internal(format!("live_snapshot_keys: the reader failed: {e}")))?
}

fn failed(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(format!("live_snapshot_keys: {e}"))
}

fn read_keys(path: &Path, page: usize, tx: &mpsc::Sender<Vec<SnapshotKey>>) -> Result<()> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Internal(format!("opening database {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    let mut statement = conn.prepare(LIVE_SNAPSHOT_KEYS).map_err(failed)?;
    let mut rows = statement.query([]).map_err(failed)?;
    // Equal restrictions are decoded once for the whole read.
    let mut decoded = DecodedRestrictions::default();
    let mut keys = Vec::with_capacity(page.min(1 << 16));
    while let Some(row) = rows.next().map_err(failed)? {
        keys.push(snapshot_key(row, &mut decoded)?);
        if keys.len() >= page {
            let full = std::mem::replace(&mut keys, Vec::with_capacity(page.min(1 << 16)));
            if tx.blocking_send(full).is_err() {
                // Nobody is loading them any more (the start-up was abandoned).
                return Ok(());
            }
        }
    }
    if !keys.is_empty() {
        let _ = tx.blocking_send(keys);
    }
    Ok(())
}

/// A row of [`LIVE_SNAPSHOT_KEYS`]. Each column must hold the type the schema gives it.
fn snapshot_key(row: &Row<'_>, decoded: &mut DecodedRestrictions) -> Result<SnapshotKey> {
    let column = |name: &str, e: rusqlite::Error| {
        StoreError::Internal(format!("live_snapshot_keys: column {name}: {e}"))
    };
    let text = row
        .get_ref(3)
        .and_then(|v| v.as_str().map_err(Into::into))
        .map_err(|e| column("restrictions", e))?;
    let restrictions = decoded.decode(text)?;
    Ok(SnapshotKey {
        project_number: row.get(0).map_err(|e| column("project_number", e))?,
        key_id: row.get(1).map_err(|e| column("key_id", e))?,
        lookup_hash: row.get(2).map_err(|e| column("lookup_hash", e))?,
        restrictions,
        service_account_email: row.get(4).map_err(|e| column("service_account_email", e))?,
    })
}
