//! The PostgreSQL store: the shared writer (`sql`) on one connection, the portable
//! statements with `$1`, `$2`, … placeholders. Migrations are the same files as
//! SQLite's, run under sqlx's advisory lock, so nodes starting together migrate once;
//! PostgreSQL has no `BLOB`, so a domain of that name over `bytea` is created first.
//! A commit returns once the server has flushed its WAL (`synchronous_commit` on, the
//! server's default): only then is a write acknowledged.

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
        tokio::spawn(writer(conn, rx));
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

async fn close(conn: PgConnection) -> Result<(), StoreError> {
    conn.close().await.map_err(backend)
}

sql_store!(PgConnection, sqlx::postgres::PgRow, sql, "BEGIN", close);

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
