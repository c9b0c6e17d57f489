//! The embedded SQLite store: WAL mode, `synchronous=FULL`, group commit.
//!
//! One writer task owns the connection. Units that arrive while a transaction
//! is being written are committed together in the next transaction (group
//! commit), so many concurrent requests share one fsync and each is still
//! acknowledged only after its own data is on disk.
//!
//! Transactions are driven with explicit `BEGIN IMMEDIATE` / `COMMIT` / `ROLLBACK`: a
//! failed write (a full disk, a read-only or vanished directory) is always rolled
//! back, so nothing after it can land inside a transaction that never commits, and
//! every unit in it reports the failure. After a failure the store is unhealthy
//! (readiness fails) until a write succeeds again; readiness itself then tries a
//! small durable write, so the store recovers by itself once the disk allows it.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    BoxFuture, ConnectionRecord, DialogRecord, Membership, Snapshot, Store, StoreError, StoreOp,
};
use crate::events::DeviceSource;
use crate::model::{DeviceApiVersion, Participant, PublishPermission, Session, Subscriptions};
use crate::webhooks::Webhook;

/// Most units written in one transaction.
const MAX_GROUP: usize = 1024;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Cmd {
    Commit(Vec<StoreOp>, Reply<()>),
    Load(Reply<Snapshot>),
    Ping(Reply<()>),
    Close(Reply<()>),
}

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    tx: mpsc::UnboundedSender<Cmd>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Open (creating if needed) the database file and apply migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
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
        tokio::spawn(writer(conn, rx));
        Ok(SqliteStore { tx })
    }

    fn request<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Cmd,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(make(reply)).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }
}

impl Store for SqliteStore {
    fn load(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        self.request(Cmd::Load)
    }

    fn commit(&self, unit: Vec<StoreOp>) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(|r| Cmd::Commit(unit, r))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.request(Cmd::Ping)
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.request(Cmd::Close)
    }
}

async fn writer(mut conn: SqliteConnection, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut group: Vec<(Vec<StoreOp>, Reply<()>)> = Vec::new();
    let mut healthy = true;
    while let Some(cmd) = rx.recv().await {
        let mut next = Some(cmd);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Commit(unit, reply) => {
                    group.push((unit, reply));
                    if group.len() < MAX_GROUP {
                        next = rx.try_recv().ok();
                    }
                }
                Cmd::Load(reply) => {
                    // Keep order: write what is grouped before anything else.
                    commit_group(&mut conn, &mut group, &mut healthy).await;
                    let _ = reply.send(load(&mut conn).await);
                }
                Cmd::Ping(reply) => {
                    commit_group(&mut conn, &mut group, &mut healthy).await;
                    let r = if healthy {
                        sqlx::query("SELECT 1")
                            .execute(&mut conn)
                            .await
                            .map(|_| ())
                            .map_err(backend)
                    } else {
                        // Unhealthy since a write failed: healthy again only once a
                        // durable write succeeds.
                        let r = probe(&mut conn).await;
                        healthy = r.is_ok();
                        if healthy {
                            tracing::info!("store writes again");
                        }
                        r
                    };
                    let _ = reply.send(r);
                }
                Cmd::Close(reply) => {
                    rx.close();
                    while let Ok(Cmd::Commit(unit, r)) = rx.try_recv() {
                        group.push((unit, r));
                    }
                    commit_group(&mut conn, &mut group, &mut healthy).await;
                    let r = checkpoint_and_close(conn).await;
                    let _ = reply.send(r);
                    return;
                }
            }
        }
        commit_group(&mut conn, &mut group, &mut healthy).await;
    }
}

/// A durable write of 64 KiB (room for a typical group of changes): does the store
/// write again?
async fn probe(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    begin(conn).await?;
    let result = sqlx::query(
        "INSERT OR REPLACE INTO store_probe (id, at, pad) VALUES (1, ?, zeroblob(65536))",
    )
    .bind(at)
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(backend);
    finish(conn, result).await
}

async fn checkpoint_and_close(mut conn: SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .map_err(backend)?;
    conn.close().await.map_err(backend)
}

/// Write every grouped unit in one transaction; if that fails, each unit alone
/// so that only the failing ones report an error. `healthy` follows the outcome.
async fn commit_group(
    conn: &mut SqliteConnection,
    group: &mut Vec<(Vec<StoreOp>, Reply<()>)>,
    healthy: &mut bool,
) {
    if group.is_empty() {
        return;
    }
    let units: Vec<&[StoreOp]> = group.iter().map(|(u, _)| u.as_slice()).collect();
    match write_units(conn, &units).await {
        Ok(()) => {
            *healthy = true;
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) if group.len() == 1 => {
            tracing::error!(error = %e, "store write failed");
            *healthy = false;
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(_) => {
            for (unit, reply) in group.drain(..) {
                let r = write_units(conn, &[unit.as_slice()]).await;
                if let Err(e) = &r {
                    tracing::error!(error = %e, "store write failed");
                }
                *healthy = r.is_ok();
                let _ = reply.send(r);
            }
        }
    }
}

async fn write_units(conn: &mut SqliteConnection, units: &[&[StoreOp]]) -> Result<(), StoreError> {
    begin(conn).await?;
    let mut result = Ok(());
    'units: for unit in units {
        for op in unit.iter() {
            if let Err(e) = apply(conn, op).await {
                result = Err(backend(e));
                break 'units;
            }
        }
    }
    finish(conn, result).await
}

async fn begin(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("BEGIN IMMEDIATE")
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(backend)
}

/// COMMIT if `result` is Ok; on any failure, the commit's included, ROLLBACK so that
/// the connection is outside any transaction again (after a failed COMMIT, SQLite may
/// keep the transaction open).
async fn finish(
    conn: &mut SqliteConnection,
    result: Result<(), StoreError>,
) -> Result<(), StoreError> {
    let result = match result {
        Ok(()) => sqlx::query("COMMIT")
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(backend),
        Err(e) => Err(e),
    };
    if result.is_err() {
        if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
            tracing::debug!(error = %e, "rollback after a failed write");
        }
    }
    result
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Serializing our own plain data types cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

async fn apply(conn: &mut SqliteConnection, op: &StoreOp) -> Result<(), sqlx::Error> {
    match op {
        StoreOp::InsertParticipant(p) => {
            sqlx::query(
                "INSERT INTO participants (id, account_id, callback_url, publish_permissions, tag, device_api_version, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(p.id.to_string())
            .bind(&p.account_id)
            .bind(&p.callback_url)
            .bind(json(&p.publish_permissions))
            .bind(&p.tag)
            .bind(p.device_api_version.as_str())
            .bind(p.created_at)
            .execute(conn)
            .await?;
        }
        StoreOp::DeleteParticipant(id) => {
            sqlx::query("DELETE FROM participants WHERE id = ?")
                .bind(id.to_string())
                .execute(conn)
                .await?;
        }
        StoreOp::InsertSession(s) => {
            sqlx::query(
                "INSERT INTO sessions (id, account_id, tag, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(s.id.to_string())
            .bind(&s.account_id)
            .bind(&s.tag)
            .bind(s.created_at)
            .bind(s.expires_at)
            .execute(conn)
            .await?;
        }
        StoreOp::DeleteSession(id) => {
            sqlx::query("DELETE FROM sessions WHERE id = ?")
                .bind(id.to_string())
                .execute(conn)
                .await?;
        }
        StoreOp::PutMembership {
            participant_id,
            session_id,
            joined_seq,
            subscriptions,
        } => {
            sqlx::query(
                "INSERT INTO memberships (participant_id, session_id, joined_seq, subscriptions) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (participant_id) DO UPDATE SET session_id = excluded.session_id, \
                 joined_seq = excluded.joined_seq, subscriptions = excluded.subscriptions",
            )
            .bind(participant_id.to_string())
            .bind(session_id.to_string())
            .bind(joined_seq)
            .bind(json(subscriptions))
            .execute(conn)
            .await?;
        }
        StoreOp::SetSubscriptions {
            participant_id,
            subscriptions,
        } => {
            sqlx::query("UPDATE memberships SET subscriptions = ? WHERE participant_id = ?")
                .bind(json(subscriptions))
                .bind(participant_id.to_string())
                .execute(conn)
                .await?;
        }
        StoreOp::DeleteMembership(id) => {
            sqlx::query("DELETE FROM memberships WHERE participant_id = ?")
                .bind(id.to_string())
                .execute(conn)
                .await?;
        }
        StoreOp::PutWebhook(w) => {
            sqlx::query(
                "INSERT INTO webhooks (id, event_id, participant_id, url, body, created_ms, attempts, next_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(w.id)
            .bind(w.event_id.to_string())
            .bind(w.participant_id.to_string())
            .bind(&w.url)
            .bind(&w.body)
            .bind(w.created_ms as i64)
            .bind(w.attempts as i64)
            .bind(w.next_ms as i64)
            .execute(conn)
            .await?;
        }
        StoreOp::RetryWebhook {
            id,
            attempts,
            next_ms,
        } => {
            sqlx::query("UPDATE webhooks SET attempts = ?, next_ms = ? WHERE id = ?")
                .bind(*attempts as i64)
                .bind(*next_ms as i64)
                .bind(id)
                .execute(conn)
                .await?;
        }
        StoreOp::DeleteWebhook(id) => {
            sqlx::query("DELETE FROM webhooks WHERE id = ?")
                .bind(id)
                .execute(conn)
                .await?;
        }
        StoreOp::PutDialog(d) => {
            sqlx::query(
                "INSERT INTO dialogs (id, account_id, participant_id, state, data, reason, details, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
                 reason = excluded.reason, details = excluded.details, updated_at = excluded.updated_at",
            )
            .bind(d.id.to_string())
            .bind(&d.account_id)
            .bind(d.participant_id.to_string())
            .bind(&d.state)
            .bind(&d.data)
            .bind(&d.reason)
            .bind(&d.details)
            .bind(d.created_at)
            .bind(d.updated_at)
            .execute(conn)
            .await?;
        }
        StoreOp::PutConnection(c) => {
            sqlx::query(
                "INSERT INTO connections (participant_id, source, device_id, callback_url, tag, connected, since_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (participant_id, source, device_id) DO UPDATE SET \
                 callback_url = excluded.callback_url, tag = excluded.tag, connected = excluded.connected, since_ms = excluded.since_ms",
            )
            .bind(c.participant_id.to_string())
            .bind(c.source.as_str())
            .bind(&c.device_id)
            .bind(&c.callback_url)
            .bind(&c.tag)
            .bind(c.connected as i64)
            .bind(c.since_ms as i64)
            .execute(conn)
            .await?;
        }
        StoreOp::DeleteConnection {
            participant_id,
            source,
            device_id,
        } => {
            sqlx::query(
                "DELETE FROM connections WHERE participant_id = ? AND source = ? AND device_id = ?",
            )
            .bind(participant_id.to_string())
            .bind(source.as_str())
            .bind(device_id)
            .execute(conn)
            .await?;
        }
        StoreOp::PutMeta { key, value } => {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

fn uuid_col(row: &sqlx::sqlite::SqliteRow, col: &str) -> Result<Uuid, StoreError> {
    let s: String = row.try_get(col).map_err(backend)?;
    Uuid::parse_str(&s).map_err(|e| backend(format!("bad uuid in {col}: {e}")))
}

async fn load(conn: &mut SqliteConnection) -> Result<Snapshot, StoreError> {
    let mut snap = Snapshot::default();
    for row in sqlx::query("SELECT key, value FROM meta")
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
    {
        snap.meta.insert(
            row.try_get("key").map_err(backend)?,
            row.try_get("value").map_err(backend)?,
        );
    }
    for row in sqlx::query("SELECT id, account_id, tag, created_at, expires_at FROM sessions")
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
    {
        snap.sessions.push(Session {
            id: uuid_col(&row, "id")?,
            account_id: row.try_get("account_id").map_err(backend)?,
            tag: row.try_get("tag").map_err(backend)?,
            created_at: row.try_get("created_at").map_err(backend)?,
            expires_at: row.try_get("expires_at").map_err(backend)?,
            members: Vec::new(),
        });
    }
    for row in sqlx::query(
        "SELECT id, account_id, callback_url, publish_permissions, tag, device_api_version, created_at FROM participants",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        let perms: String = row.try_get("publish_permissions").map_err(backend)?;
        let publish_permissions: Vec<PublishPermission> =
            serde_json::from_str(&perms).map_err(backend)?;
        let version: String = row.try_get("device_api_version").map_err(backend)?;
        snap.participants.push(Participant {
            id: uuid_col(&row, "id")?,
            account_id: row.try_get("account_id").map_err(backend)?,
            callback_url: row.try_get("callback_url").map_err(backend)?,
            publish_permissions,
            tag: row.try_get("tag").map_err(backend)?,
            device_api_version: DeviceApiVersion::parse(&version)
                .ok_or_else(|| backend(format!("bad device_api_version {version}")))?,
            created_at: row.try_get("created_at").map_err(backend)?,
            session_id: None,
            subscriptions: Subscriptions::default(),
        });
    }
    for row in sqlx::query(
        "SELECT participant_id, session_id, joined_seq, subscriptions FROM memberships ORDER BY joined_seq",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        let subs: String = row.try_get("subscriptions").map_err(backend)?;
        snap.memberships.push(Membership {
            participant_id: uuid_col(&row, "participant_id")?,
            session_id: uuid_col(&row, "session_id")?,
            joined_seq: row.try_get("joined_seq").map_err(backend)?,
            subscriptions: serde_json::from_str(&subs).map_err(backend)?,
        });
    }
    for row in sqlx::query(
        "SELECT id, event_id, participant_id, url, body, created_ms, attempts, next_ms FROM webhooks ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        let int = |c: &str| row.try_get::<i64, _>(c).map_err(backend);
        snap.webhooks.push(Webhook {
            id: int("id")?,
            event_id: uuid_col(&row, "event_id")?,
            participant_id: uuid_col(&row, "participant_id")?,
            url: row.try_get("url").map_err(backend)?,
            body: row.try_get("body").map_err(backend)?,
            created_ms: int("created_ms")?.max(0) as u64,
            attempts: int("attempts")?.clamp(0, u32::MAX as i64) as u32,
            next_ms: int("next_ms")?.max(0) as u64,
        });
    }
    for row in sqlx::query(
        "SELECT id, account_id, participant_id, state, data, reason, details, created_at, updated_at FROM dialogs",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        snap.dialogs.push(DialogRecord {
            id: uuid_col(&row, "id")?,
            account_id: row.try_get("account_id").map_err(backend)?,
            participant_id: uuid_col(&row, "participant_id")?,
            state: row.try_get("state").map_err(backend)?,
            data: row.try_get("data").map_err(backend)?,
            reason: row.try_get("reason").map_err(backend)?,
            details: row.try_get("details").map_err(backend)?,
            created_at: row.try_get("created_at").map_err(backend)?,
            updated_at: row.try_get("updated_at").map_err(backend)?,
        });
    }
    for row in sqlx::query(
        "SELECT participant_id, source, device_id, callback_url, tag, connected, since_ms FROM connections ORDER BY since_ms",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        let source: String = row.try_get("source").map_err(backend)?;
        snap.connections.push(ConnectionRecord {
            participant_id: uuid_col(&row, "participant_id")?,
            source: DeviceSource::parse(&source)
                .ok_or_else(|| backend(format!("bad connection source {source}")))?,
            device_id: row.try_get("device_id").map_err(backend)?,
            callback_url: row.try_get("callback_url").map_err(backend)?,
            tag: row.try_get("tag").map_err(backend)?,
            connected: row.try_get::<i64, _>("connected").map_err(backend)? != 0,
            since_ms: row.try_get::<i64, _>("since_ms").map_err(backend)?.max(0) as u64,
        });
    }
    Ok(snap)
}
