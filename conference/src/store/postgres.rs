//! The PostgreSQL store: the shared writer (`sql`) on one connection, the portable
//! statements with `$1`, `$2`, … placeholders. Migrations are the same files as
//! SQLite's, run under sqlx's advisory lock, so nodes starting together migrate once;
//! PostgreSQL has no `BLOB`, so a domain of that name over `bytea` is created first.
//! A commit returns once the server has flushed its WAL (`synchronous_commit` on, the
//! server's default): only then is a write acknowledged.
//!
//! One node per database until clustering exists: the writer's connection holds a
//! session advisory lock ([`NODE_LOCK`]); a second node on the same database is refused
//! at start, and after a lost connection the writer connects again (while unhealthy,
//! before each write and each readiness probe) and takes the lock again before writing.

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::sql::{backend, json, sql_store, Cmd, Reply, SqlStore, MAX_GROUP};
use super::{ConnectionRecord, DialogRecord, Membership, Snapshot, StoreError, StoreOp};
use crate::events::DeviceSource;
use crate::model::{DeviceApiVersion, Participant, PublishPermission, Session, Subscriptions};
use crate::webhooks::Webhook;

impl SqlStore {
    /// Connect to the PostgreSQL database at `url` (`postgres://user@host/db`) and
    /// apply migrations.
    pub async fn postgres(url: &str) -> Result<SqlStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(backend)?
            .disable_statement_logging();
        let mut conn = options.connect().await.map_err(backend)?;
        // A previous process of this node that just died may hold the lock for a moment
        // (until the server notices its connection is gone).
        let since = std::time::Instant::now();
        while let Err(e) = take_node_lock(&mut conn).await {
            if since.elapsed() > LOCK_PATIENCE {
                return Err(e);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        sqlx::query(
            "DO $$ BEGIN CREATE DOMAIN blob AS bytea; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .execute(&mut conn)
        .await
        .map_err(backend)?;
        sqlx::migrate!("./migrations")
            .run(&mut conn)
            .await
            .map_err(backend)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(conn, options, rx));
        Ok(SqlStore { tx })
    }
}

/// `?` placeholders as PostgreSQL's `$1`, `$2`, … (the statements hold no `?` in
/// literals).
fn sql(s: &'static str) -> Cow<'static, str> {
    let mut out = String::with_capacity(s.len() + 16);
    let mut n = 0;
    for c in s.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// How long a start waits for [`NODE_LOCK`] before refusing.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// The advisory lock key of "the node writing this database" (`pg_locks.objid`).
pub const NODE_LOCK: i64 = 0x7061_7463_6862; // "patchb"

/// Hold [`NODE_LOCK`] on `conn` for as long as it lives, or fail: another node has it.
async fn take_node_lock(conn: &mut PgConnection) -> Result<(), StoreError> {
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(NODE_LOCK)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    if taken {
        Ok(())
    } else {
        Err(StoreError::Backend(
            "another Patchbay node is using this database (one node per database: a \
             cluster of nodes sharing one is not built yet)"
                .into(),
        ))
    }
}

/// Connect again if the connection is gone (the server restarted, the network broke).
async fn revive(options: &PgConnectOptions, conn: &mut PgConnection) -> Result<(), StoreError> {
    if conn.ping().await.is_ok() {
        return Ok(());
    }
    let mut fresh = options.connect().await.map_err(backend)?;
    take_node_lock(&mut fresh).await?;
    *conn = fresh;
    tracing::info!("store connected to PostgreSQL again");
    Ok(())
}

async fn close(conn: PgConnection) -> Result<(), StoreError> {
    conn.close().await.map_err(backend)
}

sql_store!(
    PgConnection,
    sqlx::postgres::PgRow,
    PgConnectOptions,
    sql,
    "BEGIN",
    revive,
    close
);

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(
            super::sql("UPDATE t SET a = ?, b = ? WHERE id = ?"),
            "UPDATE t SET a = $1, b = $2 WHERE id = $3"
        );
    }
}
