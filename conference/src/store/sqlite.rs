//! The embedded SQLite store (one node): WAL mode, `synchronous=FULL`, the shared
//! writer (`sql`) with explicit `BEGIN IMMEDIATE` / `COMMIT` / `ROLLBACK` (after a
//! failed COMMIT SQLite may keep the transaction open: it is always rolled back).

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::sql::{backend, json, sql_store, Cmd, Reply, SqlStore, MAX_GROUP};
use super::{ConnectionRecord, DialogRecord, Membership, Snapshot, StoreError, StoreOp};
use crate::events::DeviceSource;
use crate::model::{DeviceApiVersion, Participant, PublishPermission, Session, Subscriptions};
use crate::webhooks::Webhook;

impl SqlStore {
    /// Open (creating if needed) the SQLite database file and apply migrations.
    pub async fn sqlite(path: &Path) -> Result<SqlStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(backend)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5))
            .disable_statement_logging();
        let mut conn = options.connect().await.map_err(backend)?;
        sqlx::migrate!("./migrations")
            .run(&mut conn)
            .await
            .map_err(backend)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(conn, (), String::new(), rx));
        Ok(SqlStore { tx })
    }
}

/// SQLite takes the portable statements as they are.
fn sql(s: &'static str) -> Cow<'static, str> {
    Cow::Borrowed(s)
}

async fn checkpoint_and_close(mut conn: SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .map_err(backend)?;
    conn.close().await.map_err(backend)
}

/// The file stays open across failures (a full disk recovers on the same connection).
async fn revive(_: &(), _: &mut SqliteConnection) -> Result<(), StoreError> {
    Ok(())
}

/// One node: no change feed.
async fn no_changes(
    _: &mut SqliteConnection,
    _: &str,
    _: &[&[StoreOp]],
) -> Result<(), sqlx::Error> {
    Ok(())
}

/// One writer at a time already (`BEGIN IMMEDIATE`).
async fn no_lock(_: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    Ok(())
}

sql_store!(
    SqliteConnection,
    sqlx::sqlite::SqliteRow,
    (),
    sql,
    "BEGIN IMMEDIATE",
    revive,
    checkpoint_and_close,
    no_changes,
    no_lock,
    "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
);
