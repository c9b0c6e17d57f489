//! The SQL both stores run, written once: the writer task with group commit, every
//! [`StoreOp`](super::StoreOp), the probe and the load, as a macro over a backend's
//! connection and row types. Statements are portable SQL with `?` placeholders; a
//! backend's `$sql` function turns them into its own (`$1`, `$2`, … for PostgreSQL).
//!
//! One writer task owns the connection. Units that arrive while a transaction is being
//! written are committed together in the next transaction (group commit), so many
//! concurrent requests share one flush and each is still acknowledged only after its
//! own data is durable. A failed write is always rolled back and every unit in it
//! reports the failure; the store is then unhealthy (readiness fails) until a write
//! succeeds again, and readiness itself tries a 64 KiB durable write, so the store
//! recovers by itself.

use tokio::sync::{mpsc, oneshot};

use super::{BoxFuture, LayoutRecord, Snapshot, Store, StoreError, StoreOp};

/// Most units written in one transaction.
pub(super) const MAX_GROUP: usize = 1024;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer task is asked.
pub(super) enum Cmd {
    Commit(Vec<StoreOp>, Reply<()>),
    Load(Reply<Snapshot>),
    Layout(uuid::Uuid, Reply<Option<LayoutRecord>>),
    Ping(Reply<()>),
    Close(Reply<()>),
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    // Serializing our own plain data types cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

/// The durable [`Store`]: a writer task over SQLite (embedded, one node:
/// [`SqlStore::sqlite`]) or PostgreSQL ([`SqlStore::postgres`]), the same schema and
/// statements on both.
pub struct SqlStore {
    pub(super) tx: mpsc::UnboundedSender<Cmd>,
}

impl SqlStore {
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

impl Store for SqlStore {
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

    fn layout(
        &self,
        participant: uuid::Uuid,
    ) -> BoxFuture<'static, Result<Option<LayoutRecord>, StoreError>> {
        self.request(|r| Cmd::Layout(participant, r))
    }
}

/// `$conn`, `$row`: the backend's connection and row; `$ctx`: what it needs to connect
/// again; `$sql`: `fn(&'static str) -> Cow<'static, str>` (placeholders); `$begin`: the
/// statement that opens a write transaction; `$revive`: `async fn(&$ctx, &mut $conn) ->
/// Result<(), StoreError>`, run before writing while unhealthy (a server that went away
/// is connected to again); `$close`: `async fn($conn) -> Result<(), StoreError>`;
/// `$changes`: `async fn(&mut $conn, &str, &[&[StoreOp]]) -> Result<(), sqlx::Error>`,
/// run in each write transaction after its units (the cluster's change feed);
/// `$lock_feed`: `async fn(&mut $conn) -> Result<(), sqlx::Error>`, taking the change
/// feed's row lock (PostgreSQL; nothing on SQLite, whose writers are serialized);
/// `$now_ms`: a SQL expression of the database's clock in ms (for fences).
///
/// `node` is the node the writer writes for: outbox rows and connection records are
/// its own (`""` on a single node).
macro_rules! sql_store {
    ($conn:ty, $row:ty, $ctx:ty, $sql:path, $begin:expr, $revive:path, $close:path, $changes:path, $lock_feed:path, $now_ms:expr) => {
async fn writer(mut conn: $conn, ctx: $ctx, node: String, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let node = node.as_str();
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
                    commit_group(&mut conn, &ctx, node, &mut group, &mut healthy).await;
                    let _ = reply.send(load(&mut conn, node).await);
                }
                Cmd::Layout(participant, reply) => {
                    commit_group(&mut conn, &ctx, node, &mut group, &mut healthy).await;
                    let row: Result<Option<(String, i64, String)>, _> = sqlx::query_as(&$sql(
                        "SELECT device_id, revision, lines FROM subscribe_layouts WHERE participant_id = ?",
                    ))
                    .bind(participant.to_string())
                    .fetch_optional(&mut conn)
                    .await;
                    let _ = reply.send(row.map_err(backend).map(|r| {
                        r.map(|(device_id, revision, lines)| crate::store::LayoutRecord {
                            participant_id: participant,
                            device_id,
                            revision: revision.max(0) as u64,
                            lines,
                        })
                    }));
                }
                Cmd::Ping(reply) => {
                    commit_group(&mut conn, &ctx, node, &mut group, &mut healthy).await;
                    let r = if healthy {
                        let r = sqlx::query(&$sql("SELECT 1"))
                            .execute(&mut conn)
                            .await
                            .map(|_| ())
                            .map_err(backend);
                        // A connection that broke with no write on it: the next probe
                        // connects again.
                        healthy = r.is_ok();
                        r
                    } else {
                        // Unhealthy since a write failed: healthy again only once a
                        // durable write succeeds.
                        let r = match $revive(&ctx, &mut conn).await {
                            Ok(()) => probe(&mut conn).await,
                            Err(e) => Err(e),
                        };
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
                    commit_group(&mut conn, &ctx, node, &mut group, &mut healthy).await;
                    let r = $close(conn).await;
                    let _ = reply.send(r);
                    return;
                }
            }
        }
        commit_group(&mut conn, &ctx, node, &mut group, &mut healthy).await;
    }
}

/// A durable write of 64 KiB (room for a typical group of changes): does the store
/// write again?
async fn probe(conn: &mut $conn) -> Result<(), StoreError> {
    // Seconds, wrapped to fit the column on every backend (it is only informative).
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() % i32::MAX as u64) as i32)
        .unwrap_or(0);
    begin(conn).await?;
    let result = sqlx::query(&$sql(
        "INSERT INTO store_probe (id, at, pad) VALUES (1, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET at = excluded.at, pad = excluded.pad",
    ))
    .bind(at)
    .bind(vec![0u8; 65536])
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(backend);
    finish(conn, result).await
}

/// Write every grouped unit in one transaction; if that fails, each unit alone
/// so that only the failing ones report an error. `healthy` follows the outcome.
async fn commit_group(
    conn: &mut $conn,
    ctx: &$ctx,
    node: &str,
    group: &mut Vec<(Vec<StoreOp>, Reply<()>)>,
    healthy: &mut bool,
) {
    if group.is_empty() {
        return;
    }
    if !*healthy {
        if let Err(e) = $revive(ctx, conn).await {
            tracing::error!(error = %e, "store unreachable");
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    }
    let units: Vec<&[StoreOp]> = group.iter().map(|(u, _)| u.as_slice()).collect();
    match write_units(conn, node, &units).await {
        Ok(()) => {
            *healthy = true;
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
        // A fenced unit, or one over a limit, is refused, not a failing store.
        Err(e @ (StoreError::Fenced | StoreError::Full)) if group.len() == 1 => {
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(e.clone()));
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
                let r = write_units(conn, node, &[unit.as_slice()]).await;
                match &r {
                    Err(StoreError::Fenced | StoreError::Full) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "store write failed");
                        *healthy = false;
                    }
                    Ok(()) => *healthy = true,
                }
                let _ = reply.send(r);
            }
        }
    }
}

async fn write_units(conn: &mut $conn, node: &str, units: &[&[StoreOp]]) -> Result<(), StoreError> {
    begin(conn).await?;
    let mut result = Ok(());
    'units: for unit in units {
        for op in unit.iter() {
            if let Err(e) = apply(conn, node, op).await {
                result = Err(match (op, &e) {
                    (StoreOp::Fence { .. }, sqlx::Error::Protocol(_)) => StoreError::Fenced,
                    (StoreOp::LimitMembers { .. }, sqlx::Error::Protocol(_)) => StoreError::Full,
                    _ => backend(e),
                });
                break 'units;
            }
        }
    }
    if result.is_ok() {
        result = $changes(conn, node, units).await.map_err(backend);
    }
    finish(conn, result).await
}

async fn begin(conn: &mut $conn) -> Result<(), StoreError> {
    sqlx::query(&$sql($begin))
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(backend)
}

/// COMMIT if `result` is Ok; on any failure, the commit's included, ROLLBACK so that
/// the connection is outside any transaction again (after a failed COMMIT, SQLite may
/// keep the transaction open).
async fn finish(
    conn: &mut $conn,
    result: Result<(), StoreError>,
) -> Result<(), StoreError> {
    let result = match result {
        Ok(()) => sqlx::query(&$sql("COMMIT"))
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(backend),
        Err(e) => Err(e),
    };
    if result.is_err() {
        if let Err(e) = sqlx::query(&$sql("ROLLBACK")).execute(&mut *conn).await {
            tracing::debug!(error = %e, "rollback after a failed write");
        }
    }
    result
}


async fn apply(conn: &mut $conn, node: &str, op: &StoreOp) -> Result<(), sqlx::Error> {
    match op {
        StoreOp::InsertParticipant(p) => {
            sqlx::query(&$sql("INSERT INTO participants (id, account_id, callback_url, publish_permissions, tag, device_api_version, created_at, media_stream) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            )
            .bind(p.id.to_string())
            .bind(&p.account_id)
            .bind(&p.callback_url)
            .bind(json(&p.publish_permissions))
            .bind(&p.tag)
            .bind(p.device_api_version.as_str())
            .bind(p.created_at)
            .bind(p.media_stream.as_ref().map(json))
            .execute(conn)
            .await?;
        }
        StoreOp::DeleteParticipant(id) => {
            sqlx::query(&$sql("DELETE FROM participants WHERE id = ?"))
                .bind(id.to_string())
                .execute(&mut *conn)
                .await?;
            sqlx::query(&$sql("DELETE FROM subscribe_layouts WHERE participant_id = ?"))
                .bind(id.to_string())
                .execute(conn)
                .await?;
        }
        StoreOp::PutLayout(l) => {
            sqlx::query(&$sql("INSERT INTO subscribe_layouts (participant_id, device_id, revision, lines) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (participant_id) DO UPDATE SET device_id = excluded.device_id, revision = excluded.revision, \
                 lines = excluded.lines WHERE subscribe_layouts.device_id <> excluded.device_id \
                 OR subscribe_layouts.revision < excluded.revision"))
            .bind(l.participant_id.to_string())
            .bind(&l.device_id)
            .bind(l.revision.min(i64::MAX as u64) as i64)
            .bind(&l.lines)
            .execute(conn)
            .await?;
        }
        StoreOp::DeleteLayout { participant_id, device_id } => {
            sqlx::query(&$sql("DELETE FROM subscribe_layouts WHERE participant_id = ? AND device_id = ?"))
                .bind(participant_id.to_string())
                .bind(device_id)
                .execute(conn)
                .await?;
        }
        StoreOp::InsertSession(s) => {
            sqlx::query(&$sql("INSERT INTO sessions (id, account_id, tag, created_at, expires_at) VALUES (?, ?, ?, ?, ?)"),
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
            sqlx::query(&$sql("DELETE FROM sessions WHERE id = ?"))
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
            sqlx::query(&$sql("INSERT INTO memberships (participant_id, session_id, joined_seq, subscriptions) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (participant_id) DO UPDATE SET session_id = excluded.session_id, \
                 joined_seq = excluded.joined_seq, subscriptions = excluded.subscriptions"),
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
            sqlx::query(&$sql("UPDATE memberships SET subscriptions = ? WHERE participant_id = ?"))
                .bind(json(subscriptions))
                .bind(participant_id.to_string())
                .execute(conn)
                .await?;
        }
        StoreOp::DeleteMembership(id) => {
            sqlx::query(&$sql("DELETE FROM memberships WHERE participant_id = ?"))
                .bind(id.to_string())
                .execute(conn)
                .await?;
        }
        StoreOp::PutWebhook(w) => {
            sqlx::query(&$sql("INSERT INTO webhooks (node, id, event_id, participant_id, url, body, created_ms, attempts, next_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            )
            .bind(node)
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
            sqlx::query(&$sql("UPDATE webhooks SET attempts = ?, next_ms = ? WHERE node = ? AND id = ?"))
                .bind(*attempts as i64)
                .bind(*next_ms as i64)
                .bind(node)
                .bind(id)
                .execute(conn)
                .await?;
        }
        StoreOp::DeleteWebhook(id) => {
            sqlx::query(&$sql("DELETE FROM webhooks WHERE node = ? AND id = ?"))
                .bind(node)
                .bind(id)
                .execute(conn)
                .await?;
        }
        StoreOp::PutDialog(d) => {
            sqlx::query(&$sql("INSERT INTO dialogs (id, account_id, participant_id, state, data, reason, details, created_at, updated_at, node) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
                 reason = excluded.reason, details = excluded.details, updated_at = excluded.updated_at, node = excluded.node"),
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
            .bind(node)
            .execute(conn)
            .await?;
        }
        StoreOp::PutRecording(r) => {
            sqlx::query(&$sql("INSERT INTO recordings (id, account_id, session_id, node, data, created_ms) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data, node = excluded.node"),
            )
            .bind(r.id.to_string())
            .bind(&r.account_id)
            .bind(r.session_id.to_string())
            .bind(node)
            .bind(json(r))
            .bind(r.start_ms as i64)
            .execute(conn)
            .await?;
        }
        StoreOp::DeleteRecording(id) => {
            sqlx::query(&$sql("DELETE FROM recordings WHERE id = ?"))
                .bind(id.to_string())
                .execute(conn)
                .await?;
        }
        StoreOp::PutConnection(c) => {
            sqlx::query(&$sql("INSERT INTO connections (participant_id, source, device_id, callback_url, tag, connected, since_ms, node) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (participant_id, source, device_id) DO UPDATE SET \
                 callback_url = excluded.callback_url, tag = excluded.tag, connected = excluded.connected, \
                 since_ms = excluded.since_ms, node = excluded.node"),
            )
            .bind(c.participant_id.to_string())
            .bind(c.source.as_str())
            .bind(&c.device_id)
            .bind(&c.callback_url)
            .bind(&c.tag)
            .bind(c.connected as i64)
            .bind(c.since_ms as i64)
            .bind(node)
            .execute(conn)
            .await?;
        }
        StoreOp::DeleteConnection {
            participant_id,
            source,
            device_id,
        } => {
            sqlx::query(&$sql("DELETE FROM connections WHERE participant_id = ? AND source = ? AND device_id = ?"),
            )
            .bind(participant_id.to_string())
            .bind(source.as_str())
            .bind(device_id)
            .execute(conn)
            .await?;
        }
        StoreOp::PutMeta { key, value } => {
            sqlx::query(&$sql("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
            )
            .bind(key)
            .bind(value)
            .execute(conn)
            .await?;
        }
        StoreOp::Fence { session_id, epoch } => {
            // Compared with the lease's expiry by the clock in ms the backend gives
            // (`$now_ms`); a single node has no leases and no fences.
            let held: Option<i64> = sqlx::query_scalar(&$sql(concat!(
                "SELECT epoch FROM session_owners WHERE session_id = ? AND node = ? AND epoch = ? AND expires_ms > ",
                $now_ms
            )))
            .bind(session_id.to_string())
            .bind(node)
            .bind(epoch)
            .fetch_optional(&mut *conn)
            .await?;
            if held.is_none() {
                return Err(sqlx::Error::Protocol(format!(
                    "fenced: this node no longer owns session {session_id} at epoch {epoch}"
                )));
            }
        }
        StoreOp::LimitMembers { session_id, max } => {
            // In a cluster, every control transaction takes the change feed's row lock
            // (at its end); taking it here, before counting, makes the count see every
            // transaction committed before this one (SQLite: one writer at a time).
            $lock_feed(&mut *conn).await?;
            let members: i64 = sqlx::query_scalar(&$sql("SELECT COUNT(*) FROM memberships WHERE session_id = ?"))
                .bind(session_id.to_string())
                .fetch_one(&mut *conn)
                .await?;
            if members > *max as i64 {
                return Err(sqlx::Error::Protocol(format!("session {session_id} has {members} members")));
            }
        }
        StoreOp::InitMeta { key, value } => {
            sqlx::query(&$sql("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"))
                .bind(key)
                .bind(value)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

pub(super) fn uuid_col(row: &$row, col: &str) -> Result<Uuid, StoreError> {
    let s: String = row.try_get(col).map_err(backend)?;
    Uuid::parse_str(&s).map_err(|e| backend(format!("bad uuid in {col}: {e}")))
}

/// Columns: `id, account_id, tag, created_at, expires_at` (members left empty).
pub(super) fn session_row(row: &$row) -> Result<Session, StoreError> {
    Ok(Session {
        id: uuid_col(row, "id")?,
        account_id: row.try_get("account_id").map_err(backend)?,
        tag: row.try_get("tag").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
        members: Vec::new(),
    })
}

/// Columns: `id, account_id, callback_url, publish_permissions, tag,
/// device_api_version, created_at, media_stream` (no membership).
pub(super) fn participant_row(row: &$row) -> Result<Participant, StoreError> {
    let perms: String = row.try_get("publish_permissions").map_err(backend)?;
    let publish_permissions: Vec<PublishPermission> =
        serde_json::from_str(&perms).map_err(backend)?;
    let version: String = row.try_get("device_api_version").map_err(backend)?;
    let stream: Option<String> = row.try_get("media_stream").map_err(backend)?;
    let media_stream = stream
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(backend)?;
    Ok(Participant {
        id: uuid_col(row, "id")?,
        account_id: row.try_get("account_id").map_err(backend)?,
        callback_url: row.try_get("callback_url").map_err(backend)?,
        publish_permissions,
        tag: row.try_get("tag").map_err(backend)?,
        device_api_version: DeviceApiVersion::parse(&version)
            .ok_or_else(|| backend(format!("bad device_api_version {version}")))?,
        created_at: row.try_get("created_at").map_err(backend)?,
        session_id: None,
        subscriptions: Subscriptions::default(),
        media_stream,
    })
}

/// Columns: `participant_id, session_id, joined_seq, subscriptions`.
pub(super) fn membership_row(row: &$row) -> Result<Membership, StoreError> {
    let subs: String = row.try_get("subscriptions").map_err(backend)?;
    Ok(Membership {
        participant_id: uuid_col(row, "participant_id")?,
        session_id: uuid_col(row, "session_id")?,
        joined_seq: row.try_get("joined_seq").map_err(backend)?,
        subscriptions: serde_json::from_str(&subs).map_err(backend)?,
    })
}

/// Columns: `id, event_id, participant_id, url, body, created_ms, attempts, next_ms`
/// (`attempts` as BIGINT).
pub(super) fn webhook_row(row: &$row) -> Result<Webhook, StoreError> {
    let int = |c: &str| row.try_get::<i64, _>(c).map_err(backend);
    Ok(Webhook {
        id: int("id")?,
        event_id: uuid_col(row, "event_id")?,
        participant_id: uuid_col(row, "participant_id")?,
        url: row.try_get("url").map_err(backend)?,
        body: row.try_get("body").map_err(backend)?,
        created_ms: int("created_ms")?.max(0) as u64,
        attempts: int("attempts")?.clamp(0, u32::MAX as i64) as u32,
        next_ms: int("next_ms")?.max(0) as u64,
    })
}

/// Columns: `id, account_id, participant_id, state, data, reason, details, created_at,
/// updated_at`.
pub(super) fn dialog_row(row: &$row) -> Result<DialogRecord, StoreError> {
    Ok(DialogRecord {
        id: uuid_col(row, "id")?,
        account_id: row.try_get("account_id").map_err(backend)?,
        participant_id: uuid_col(row, "participant_id")?,
        state: row.try_get("state").map_err(backend)?,
        data: row.try_get("data").map_err(backend)?,
        reason: row.try_get("reason").map_err(backend)?,
        details: row.try_get("details").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        updated_at: row.try_get("updated_at").map_err(backend)?,
    })
}

/// Columns: `participant_id, source, device_id, callback_url, tag, connected`
/// (as BIGINT), `since_ms`.
pub(super) fn connection_row(row: &$row) -> Result<ConnectionRecord, StoreError> {
    let source: String = row.try_get("source").map_err(backend)?;
    Ok(ConnectionRecord {
        participant_id: uuid_col(row, "participant_id")?,
        source: DeviceSource::parse(&source)
            .ok_or_else(|| backend(format!("bad connection source {source}")))?,
        device_id: row.try_get("device_id").map_err(backend)?,
        callback_url: row.try_get("callback_url").map_err(backend)?,
        tag: row.try_get("tag").map_err(backend)?,
        connected: row.try_get::<i64, _>("connected").map_err(backend)? != 0,
        since_ms: row.try_get::<i64, _>("since_ms").map_err(backend)?.max(0) as u64,
    })
}

async fn load(conn: &mut $conn, node: &str) -> Result<Snapshot, StoreError> {
    let mut snap = Snapshot::default();
    for row in sqlx::query(&$sql("SELECT key, value FROM meta"))
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
    {
        snap.meta.insert(
            row.try_get("key").map_err(backend)?,
            row.try_get("value").map_err(backend)?,
        );
    }
    for row in sqlx::query(&$sql("SELECT id, account_id, tag, created_at, expires_at FROM sessions"))
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
    {
        snap.sessions.push(session_row(&row)?);
    }
    for row in sqlx::query(&$sql("SELECT id, account_id, callback_url, publish_permissions, tag, device_api_version, created_at, media_stream FROM participants"),
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        snap.participants.push(participant_row(&row)?);
    }
    for row in sqlx::query(&$sql("SELECT participant_id, session_id, joined_seq, subscriptions FROM memberships ORDER BY joined_seq"),
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        snap.memberships.push(membership_row(&row)?);
    }
    for row in sqlx::query(&$sql("SELECT id, event_id, participant_id, url, body, created_ms, CAST(attempts AS BIGINT) AS attempts, next_ms FROM webhooks WHERE node = ? ORDER BY id"),
    )
    .bind(node)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        snap.webhooks.push(webhook_row(&row)?);
    }
    for row in sqlx::query(&$sql("SELECT id, account_id, participant_id, state, data, reason, details, created_at, updated_at FROM dialogs WHERE node = ?"),
    )
    .bind(node)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        snap.dialogs.push(dialog_row(&row)?);
    }
    for row in sqlx::query(&$sql("SELECT participant_id, source, device_id, callback_url, tag, CAST(connected AS BIGINT) AS connected, since_ms FROM connections WHERE node = ? ORDER BY since_ms"),
    )
    .bind(node)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        snap.connections.push(connection_row(&row)?);
    }
    for row in sqlx::query(&$sql("SELECT data FROM recordings WHERE node = ? ORDER BY created_ms"))
        .bind(node)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
    {
        let data: String = row.try_get("data").map_err(backend)?;
        snap.recordings.push(serde_json::from_str(&data).map_err(backend)?);
    }
    Ok(snap)
}

    };
}

pub(super) use sql_store;
