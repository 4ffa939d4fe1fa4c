//! `UserStore` and `AuditStore` on SQLite: `users` (lowercased email, Argon2id PHC hash)
//! and `audit_log` (append-only, keyset-paginated on its `id`).

use super::{col, internal, time_col, violation, SqliteStore, Violation};
use crate::codec::micros;
use crate::page::page_size;
use crate::{AuditFilter, AuditStore, Page, PageRequest, Result, StoreError, UserStore};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyplane_core::{AuditEntry, User};
use sqlx::sqlite::SqliteRow;

fn user_from_row(row: &SqliteRow) -> Result<User> {
    Ok(User {
        email: col(row, "email")?,
        display_name: col(row, "display_name")?,
        password_hash: col(row, "password_hash")?,
        disabled: col::<i64>(row, "disabled")? != 0,
        create_time: time_col(row, "create_time")?,
        update_time: time_col(row, "update_time")?,
    })
}

const USER_COLUMNS: &str = "email, display_name, password_hash, disabled, create_time, update_time";

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, u: &User) -> Result<()> {
        sqlx::query(
            "insert into users (email, display_name, password_hash, disabled, create_time, \
             update_time) values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&u.email)
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(i64::from(u.disabled))
        .bind(micros(u.create_time))
        .bind(micros(u.update_time))
        .execute(&self.write)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique(_)) => StoreError::AlreadyExists(format!("user:{}", u.email)),
            _ => internal("create_user", e),
        })?;
        Ok(())
    }

    async fn user(&self, email: &str) -> Result<User> {
        let row = sqlx::query(&format!(
            "select {USER_COLUMNS} from users where email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| internal("user", e))?
        .ok_or(StoreError::NotFound)?;
        user_from_row(&row)
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!("select {USER_COLUMNS} from users order by email"))
            .fetch_all(&self.read)
            .await
            .map_err(|e| internal("list_users", e))?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(&self, u: &User) -> Result<()> {
        let done = sqlx::query(
            "update users set display_name = $2, password_hash = $3, disabled = $4, \
             update_time = $5 where email = $1",
        )
        .bind(&u.email)
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(i64::from(u.disabled))
        .bind(micros(u.update_time))
        .execute(&self.write)
        .await
        .map_err(|e| internal("update_user", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_access_tokens_of(&self, principal: &str) -> Result<u64> {
        let done = sqlx::query("delete from access_tokens where principal = $1")
            .bind(principal)
            .execute(&self.write)
            .await
            .map_err(|e| internal("delete_access_tokens_of", e))?;
        Ok(done.rows_affected())
    }
}

/// Page tokens of `list_audit`: the id of the last entry returned, tagged.
fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("a:{id}"))
}

fn decode_cursor(req: &PageRequest) -> Result<Option<i64>> {
    let Some(token) = req.page_token.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|raw| raw.strip_prefix("a:").and_then(|n| n.parse::<i64>().ok()))
        .map(Some)
        .ok_or_else(|| StoreError::InvalidArgument("invalid page token".into()))
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry> {
    let status: i64 = col(row, "status")?;
    Ok(AuditEntry {
        time: time_col(row, "time")?,
        principal: col(row, "principal")?,
        method: col(row, "method")?,
        resource: col(row, "resource")?,
        project: col(row, "project")?,
        result: col(row, "result")?,
        status: u16::try_from(status)
            .map_err(|_| StoreError::Internal("column status: out of range".into()))?,
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, e: &AuditEntry) -> Result<()> {
        sqlx::query(
            "insert into audit_log (time, principal, method, resource, project, result, status) \
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(micros(e.time))
        .bind(&e.principal)
        .bind(&e.method)
        .bind(&e.resource)
        .bind(&e.project)
        .bind(&e.result)
        .bind(i64::from(e.status))
        .execute(&self.write)
        .await
        .map_err(|err| internal("append_audit", err))?;
        Ok(())
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let after = decode_cursor(page)?.unwrap_or(0);
        let size = page_size(page);
        // $1 after-id, $2 since (µs), $3 limit, then one placeholder per project.
        let mut sql = String::from(
            "select id, time, principal, method, resource, project, result, status \
             from audit_log where id > $1 and time >= $2",
        );
        if !filter.projects.is_empty() {
            let marks: Vec<String> = (0..filter.projects.len())
                .map(|i| format!("${}", i + 4))
                .collect();
            sql.push_str(&format!(" and project in ({})", marks.join(", ")));
        }
        sql.push_str(" order by id limit $3");
        let mut q = sqlx::query(&sql)
            .bind(after)
            .bind(filter.since.map(micros).unwrap_or(i64::MIN))
            .bind(i64::from(size) + 1);
        for p in &filter.projects {
            q = q.bind(p);
        }
        let rows = q
            .fetch_all(&self.read)
            .await
            .map_err(|e| internal("list_audit", e))?;
        let more = rows.len() > size as usize;
        let rows = &rows[..rows.len().min(size as usize)];
        let items = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => Some(encode_cursor(col::<i64>(last, "id")?)),
            _ => None,
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }
}
