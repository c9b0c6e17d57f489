//! The PostgreSQL store: the shared writer (`sql`) on one connection, the portable
//! statements with `$1`, `$2`, … placeholders. Migrations are the same files as
//! SQLite's, run under sqlx's advisory lock, so nodes starting together migrate once;
//! PostgreSQL has no `BLOB`, so a domain of that name over `bytea` is created first.
//! A commit returns once the server has flushed its WAL (`synchronous_commit` on, the
//! server's default): only then is a write acknowledged.
//!
//! Several nodes share one database ([`super::cluster`]): outbox rows and connection
//! records carry the node that wrote them, and every transaction that changes
//! sessions, participants or memberships also appends to the change feed (locking
//! `change_head`, so the feed's numbers are gap-free and in commit order) and
//! notifies `patchbay_changes` (a wake-up only: the feed is the truth). After a lost
//! connection the writer connects again (while unhealthy, before each write and each
//! readiness probe).

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
    /// Connect to the PostgreSQL database at `url` (`postgres://user@host/db`) as node
    /// `node`, apply migrations, and take the rows a single node left without a node.
    pub async fn postgres(url: &str, node: &str) -> Result<SqlStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(backend)?
            .disable_statement_logging()
            .options(super::cluster::STATEMENT_LIMITS);
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
        for table in ["webhooks", "connections", "dialogs"] {
            sqlx::query(&format!("UPDATE {table} SET node = $1 WHERE node = ''"))
                .bind(node)
                .execute(&mut conn)
                .await
                .map_err(backend)?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(conn, options, node.to_string(), rx));
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

/// The ids a unit names among sessions, participants and memberships.
pub(super) fn touched(units: &[&[StoreOp]]) -> (Vec<String>, Vec<String>) {
    let (mut participants, mut sessions) = (Vec::new(), Vec::new());
    for op in units.iter().flat_map(|u| u.iter()) {
        match op {
            StoreOp::InsertParticipant(p) => participants.push(p.id.to_string()),
            StoreOp::DeleteParticipant(id)
            | StoreOp::DeleteMembership(id)
            | StoreOp::SetSubscriptions {
                participant_id: id, ..
            } => participants.push(id.to_string()),
            StoreOp::InsertSession(s) => sessions.push(s.id.to_string()),
            StoreOp::DeleteSession(id) => sessions.push(id.to_string()),
            StoreOp::PutMembership {
                participant_id,
                session_id,
                ..
            } => {
                participants.push(participant_id.to_string());
                sessions.push(session_id.to_string());
            }
            _ => {}
        }
    }
    for ids in [&mut participants, &mut sessions] {
        ids.sort_unstable();
        ids.dedup();
    }
    (participants, sessions)
}

/// Append what the transaction touched to the change feed and wake the other nodes.
async fn feed(
    conn: &mut PgConnection,
    node: &str,
    units: &[&[StoreOp]],
) -> Result<(), sqlx::Error> {
    let (participants, sessions) = touched(units);
    if participants.is_empty() && sessions.is_empty() {
        return Ok(());
    }
    let seq: i64 =
        sqlx::query_scalar("UPDATE change_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query("INSERT INTO changes (seq, node, participants, sessions) VALUES ($1, $2, $3, $4)")
        .bind(seq)
        .bind(node)
        .bind(json(&participants))
        .bind(json(&sessions))
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify('patchbay_changes', $1)")
        .bind(seq.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Connect again if the connection is gone (the server restarted, the network broke).
async fn revive(options: &PgConnectOptions, conn: &mut PgConnection) -> Result<(), StoreError> {
    if conn.ping().await.is_ok() {
        return Ok(());
    }
    *conn = options.connect().await.map_err(backend)?;
    tracing::info!("store connected to PostgreSQL again");
    Ok(())
}

async fn close(conn: PgConnection) -> Result<(), StoreError> {
    conn.close().await.map_err(backend)
}

/// Take the change feed's row lock now (it is taken anyway at the end of every
/// control transaction): what this transaction reads next includes every control
/// transaction committed before it.
async fn lock_feed(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT seq FROM change_head WHERE id = 1 FOR UPDATE")
        .execute(conn)
        .await
        .map(|_| ())
}

sql_store!(
    PgConnection,
    sqlx::postgres::PgRow,
    PgConnectOptions,
    sql,
    "BEGIN",
    revive,
    close,
    feed,
    lock_feed,
    "(extract(epoch from clock_timestamp()) * 1000)::bigint"
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
