//! What the nodes of a cluster share in PostgreSQL besides the control plane's rows:
//! their own rows with a heartbeat, the change feed they follow, and the outbox rows
//! and connection records of dead nodes that a live one takes over.
//!
//! Liveness is judged by the database server's clock (`heartbeat_ms` is written from
//! it), so the nodes' clocks never matter. A node's id is stable across restarts (its
//! configuration names it): a restarted node finds its own rows at once. Its cluster
//! connection holds an advisory lock named by the id, so a second live process under
//! the same id is refused, while a process that died releases it with its connection.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

use super::postgres::{
    connection_row, dialog_row, membership_row, participant_row, session_row, webhook_row,
};
use super::sql::backend;
use super::{
    BoxFuture, Change, Cluster, DialogRecord, NodeRow, Owner, Snapshot, StoreError, Taken,
};

/// The server's clock in ms.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The PostgreSQL side of a cluster node (its own connection, apart from the writer's).
pub struct PgCluster {
    node: String,
    /// How long a session lease lasts unless renewed.
    lease: Duration,
    instance: String,
    options: PgConnectOptions,
    conn: Mutex<Option<PgConnection>>,
    /// Heartbeats and lease renewals only: they never queue behind request queries.
    lease_conn: Mutex<Option<PgConnection>>,
    changed: Arc<Notify>,
}

impl PgCluster {
    /// Connect as node `node` (its session leases last `lease`) and start listening
    /// for change notifications.
    pub async fn connect(url: &str, node: &str, lease: Duration) -> Result<PgCluster, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(backend)?
            .disable_statement_logging()
            .options(STATEMENT_LIMITS);
        let mut conn = options.connect().await.map_err(backend)?;
        // A process of this node that just died may hold the lock for a moment (until
        // the server notices its connection is gone).
        let since = std::time::Instant::now();
        while let Err(e) = take_node_lock(&mut conn, node).await {
            if since.elapsed() > LOCK_PATIENCE {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let changed = Arc::new(Notify::new());
        let mut listener = PgListener::connect(url).await.map_err(backend)?;
        listener.listen("patchbay_changes").await.map_err(backend)?;
        tokio::spawn(listen(listener, changed.clone()));
        Ok(PgCluster {
            node: node.to_string(),
            lease,
            instance: Uuid::new_v4().to_string(),
            options,
            conn: Mutex::new(Some(conn)),
            lease_conn: Mutex::new(None),
            changed,
        })
    }

    /// Run `f` on the connection, connecting again first if the last use failed.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    {
        self.on(&self.conn, true, f).await
    }

    /// Like [`PgCluster::with`], on the connection of heartbeats and lease renewals.
    async fn with_lease<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    {
        self.on(&self.lease_conn, false, f).await
    }

    /// Run `f` on the connection in `slot` (the node's lock taken on it when `locks`).
    async fn on<T, F>(
        &self,
        slot: &Mutex<Option<PgConnection>>,
        locks: bool,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    {
        let mut slot = slot.lock().await;
        let timed_out =
            || StoreError::Backend("the cluster's database did not answer in time".into());
        if slot.is_none() {
            let connect = async {
                let mut conn = self.options.connect().await.map_err(backend)?;
                if locks {
                    take_node_lock(&mut conn, &self.node).await?;
                }
                Ok::<_, StoreError>(conn)
            };
            let conn = tokio::time::timeout(OP_LIMIT, connect)
                .await
                .map_err(|_| timed_out())??;
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(StoreError::Closed);
        };
        let r = match tokio::time::timeout(OP_LIMIT, f(conn)).await {
            Ok(r) => r.map_err(backend),
            Err(_) => Err(timed_out()),
        };
        if r.is_err() {
            // Whatever went wrong, the next call starts on a fresh connection.
            *slot = None;
        }
        r
    }
}

/// Longest a cluster statement (or connecting again) may take: the requests waiting
/// on it fail (503) rather than hang.
const OP_LIMIT: Duration = Duration::from_secs(5);

/// Every connection's server-side limits: a statement the server cannot finish (a lock
/// held by a stuck transaction, a server in trouble) fails instead of holding the
/// writer, and the failure fails the request and `/ready` until it recovers.
pub(crate) const STATEMENT_LIMITS: [(&str, &str); 3] = [
    ("statement_timeout", "10s"),
    ("lock_timeout", "5s"),
    ("idle_in_transaction_session_timeout", "30s"),
];

/// How long a start waits for its node's lock before refusing.
const LOCK_PATIENCE: Duration = Duration::from_secs(5);

/// Hold the advisory lock of node `node` on `conn` for as long as it lives, or fail:
/// another live process runs as this node.
async fn take_node_lock(conn: &mut PgConnection, node: &str) -> Result<(), StoreError> {
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(format!("patchbay-node:{node}"))
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    if taken {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "another Patchbay process is running as node {node}: give each node its own \
             `node_id`"
        )))
    }
}

/// Wake whoever waits on `changed` at each notification; a lost connection is taken up
/// again by the listener (notifications sent meanwhile are lost: the periodic re-read
/// of the feed covers them).
async fn listen(mut listener: PgListener, changed: Arc<Notify>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => changed.notify_waiters(),
            Ok(None) => changed.notify_waiters(),
            Err(e) => {
                tracing::debug!(error = %e, "change notifications: listening again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn ids(text: &str) -> Vec<Uuid> {
    serde_json::from_str::<Vec<String>>(text)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| Uuid::parse_str(s).ok())
        .collect()
}

fn strings(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(Uuid::to_string).collect()
}

impl Cluster for PgCluster {
    fn node(&self) -> &str {
        &self.node
    }

    fn heartbeat(&self, info: String) -> BoxFuture<'_, Result<(), StoreError>> {
        let (node, instance) = (self.node.clone(), self.instance.clone());
        Box::pin(self.with_lease(move |c| {
            Box::pin(async move {
                let q = format!(
                    "INSERT INTO nodes (id, instance, info, started_ms, heartbeat_ms) \
                     VALUES ($1, $2, $3, {NOW_MS}, {NOW_MS}) ON CONFLICT (id) DO UPDATE \
                     SET instance = excluded.instance, info = excluded.info, \
                     heartbeat_ms = excluded.heartbeat_ms, \
                     started_ms = CASE WHEN nodes.instance = excluded.instance \
                        THEN nodes.started_ms ELSE excluded.started_ms END"
                );
                sqlx::query(&q)
                    .bind(&node)
                    .bind(&instance)
                    .bind(&info)
                    .execute(&mut *c)
                    .await?;
                // The feed keeps the last FEED_KEPT changes; a node further behind
                // reads all state again.
                sqlx::query("DELETE FROM changes WHERE seq <= (SELECT seq FROM change_head) - $1")
                    .bind(FEED_KEPT)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
    }

    fn nodes(&self, lease: Duration) -> BoxFuture<'_, Result<Vec<NodeRow>, StoreError>> {
        let lease_ms = lease.as_millis() as i64;
        Box::pin(self.with(move |c| {
            Box::pin(async move {
                let q = format!(
                    "SELECT id, info, started_ms, {NOW_MS} - heartbeat_ms AS age_ms FROM nodes \
                     WHERE heartbeat_ms >= {NOW_MS} - $1 ORDER BY id"
                );
                let rows = sqlx::query(&q).bind(lease_ms).fetch_all(&mut *c).await?;
                rows.iter()
                    .map(|r| {
                        Ok(NodeRow {
                            id: r.try_get("id")?,
                            info: r.try_get("info")?,
                            started_ms: r.try_get("started_ms")?,
                            heartbeat_age_ms: r.try_get("age_ms")?,
                        })
                    })
                    .collect()
            })
        }))
    }

    fn head(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(self.with(|c| {
            Box::pin(async move {
                sqlx::query_scalar("SELECT seq FROM change_head WHERE id = 1")
                    .fetch_one(&mut *c)
                    .await
            })
        }))
    }

    fn changes_since(&self, seq: i64) -> BoxFuture<'_, Result<Vec<Change>, StoreError>> {
        Box::pin(self.with(move |c| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT seq, node, participants, sessions FROM changes WHERE seq > $1 \
                     ORDER BY seq LIMIT 10000",
                )
                .bind(seq)
                .fetch_all(&mut *c)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(Change {
                            seq: r.try_get("seq")?,
                            node: r.try_get("node")?,
                            participants: ids(r.try_get("participants")?),
                            sessions: ids(r.try_get("sessions")?),
                        })
                    })
                    .collect()
            })
        }))
    }

    fn read(
        &self,
        participants: Vec<Uuid>,
        sessions: Vec<Uuid>,
    ) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(async move {
            let rows = self
                .with(move |c| Box::pin(read(c, strings(&participants), strings(&sessions))))
                .await?;
            let mut snap = Snapshot::default();
            for r in &rows.0 {
                snap.sessions.push(session_row(r)?);
            }
            for r in &rows.1 {
                snap.participants.push(participant_row(r)?);
            }
            for r in &rows.2 {
                snap.memberships.push(membership_row(r)?);
            }
            Ok(snap)
        })
    }

    fn take_over(&self, lease: Duration, base_id: i64) -> BoxFuture<'_, Result<Taken, StoreError>> {
        let (node, lease_ms) = (self.node.clone(), lease.as_millis() as i64);
        Box::pin(async move {
            let (webhooks, connections, dialogs) = self
                .with(move |c| Box::pin(take_over(c, node, lease_ms, base_id)))
                .await?;
            let mut taken = Taken::default();
            for r in &webhooks {
                taken.webhooks.push(webhook_row(r)?);
            }
            for r in &connections {
                taken.connections.push(connection_row(r)?);
            }
            for r in &dialogs {
                taken.dialogs.push(dialog_row(r)?);
            }
            taken.webhooks.sort_by_key(|w| w.id);
            Ok(taken)
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.changed.notified())
    }

    fn own(&self, session: Uuid) -> BoxFuture<'_, Result<Owner, StoreError>> {
        let (node, lease_ms) = (self.node.clone(), self.lease.as_millis() as i64);
        Box::pin(self.with(move |c| {
            Box::pin(async move {
                // One statement: of two nodes racing, the row lock lets one insert or
                // take the expired lease; the other's `WHERE` then sees a live lease. A
                // live lease of this node's is extended (same epoch): the lease then
                // runs a full term from now, as the watchdog counts it.
                let take = format!(
                    "INSERT INTO session_owners (session_id, node, epoch, expires_ms) \
                     VALUES ($1, $2, 1, {NOW_MS} + $3) ON CONFLICT (session_id) DO UPDATE \
                     SET node = excluded.node, \
                     epoch = CASE WHEN session_owners.expires_ms <= {NOW_MS} \
                        THEN session_owners.epoch + 1 ELSE session_owners.epoch END, \
                     expires_ms = excluded.expires_ms \
                     WHERE session_owners.expires_ms <= {NOW_MS} OR session_owners.node = excluded.node"
                );
                sqlx::query(&take)
                    .bind(session.to_string())
                    .bind(&node)
                    .bind(lease_ms)
                    .execute(&mut *c)
                    .await?;
                let row = sqlx::query(
                    "SELECT o.node, o.epoch, COALESCE(n.info, '{}') AS info FROM session_owners o \
                     LEFT JOIN nodes n ON n.id = o.node WHERE o.session_id = $1",
                )
                .bind(session.to_string())
                .fetch_one(&mut *c)
                .await?;
                Ok(Owner {
                    node: row.try_get("node")?,
                    epoch: row.try_get("epoch")?,
                    info: row.try_get("info")?,
                })
            })
        }))
    }

    fn renew(&self, held: Vec<(Uuid, i64)>) -> BoxFuture<'_, Result<Vec<Uuid>, StoreError>> {
        let (node, lease_ms) = (self.node.clone(), self.lease.as_millis() as i64);
        Box::pin(self.with_lease(move |c| {
            Box::pin(async move {
                if held.is_empty() {
                    return Ok(Vec::new());
                }
                let (ids, epochs): (Vec<String>, Vec<i64>) =
                    held.iter().map(|(s, e)| (s.to_string(), *e)).unzip();
                // Only a lease still held: one that expired and was taken is lost.
                let q = format!(
                    "UPDATE session_owners o SET expires_ms = {NOW_MS} + $2 \
                     FROM unnest($3::text[], $4::bigint[]) AS h(session_id, epoch) \
                     WHERE o.session_id = h.session_id AND o.epoch = h.epoch AND o.node = $1 \
                     AND o.expires_ms > {NOW_MS} RETURNING o.session_id"
                );
                let kept: Vec<String> = sqlx::query_scalar(&q)
                    .bind(&node)
                    .bind(lease_ms)
                    .bind(&ids)
                    .bind(&epochs)
                    .fetch_all(&mut *c)
                    .await?;
                Ok(kept
                    .iter()
                    .filter_map(|s| Uuid::parse_str(s).ok())
                    .collect())
            })
        }))
    }

    fn owner(&self, session: Uuid) -> BoxFuture<'_, Result<Option<Owner>, StoreError>> {
        Box::pin(self.with(move |c| {
            Box::pin(async move {
                let q = format!(
                    "SELECT o.node, o.epoch, COALESCE(n.info, '{{}}') AS info \
                     FROM session_owners o LEFT JOIN nodes n ON n.id = o.node \
                     WHERE o.session_id = $1 AND o.expires_ms > {NOW_MS}"
                );
                let row = sqlx::query(&q)
                    .bind(session.to_string())
                    .fetch_optional(&mut *c)
                    .await?;
                row.map(|r| {
                    Ok(Owner {
                        node: r.try_get("node")?,
                        epoch: r.try_get("epoch")?,
                        info: r.try_get("info")?,
                    })
                })
                .transpose()
            })
        }))
    }

    fn dialog(
        &self,
        id: Uuid,
    ) -> BoxFuture<'_, Result<Option<(DialogRecord, String)>, StoreError>> {
        Box::pin(async move {
            let row = self
                .with(move |c| {
                    Box::pin(async move {
                        sqlx::query(
                            "SELECT id, account_id, participant_id, state, data, reason, details, \
                             created_at, updated_at, node FROM dialogs WHERE id = $1",
                        )
                        .bind(id.to_string())
                        .fetch_optional(&mut *c)
                        .await
                    })
                })
                .await?;
            match row {
                Some(r) => Ok(Some((dialog_row(&r)?, r.try_get("node").map_err(backend)?))),
                None => Ok(None),
            }
        })
    }

    fn session_recordings(
        &self,
        session: Uuid,
    ) -> BoxFuture<'_, Result<Vec<crate::recording::Recording>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .with(move |c| {
                    Box::pin(async move {
                        sqlx::query(
                            "SELECT data FROM recordings WHERE session_id = $1 ORDER BY created_ms",
                        )
                        .bind(session.to_string())
                        .fetch_all(&mut *c)
                        .await
                    })
                })
                .await?;
            rows.iter()
                .map(|r| {
                    let data: String = r.try_get("data").map_err(backend)?;
                    serde_json::from_str(&data).map_err(backend)
                })
                .collect()
        })
    }

    fn oldest_elsewhere(
        &self,
        participants: Vec<Uuid>,
    ) -> BoxFuture<'_, Result<HashMap<Uuid, i64>, StoreError>> {
        let ids: Vec<String> = participants.iter().map(Uuid::to_string).collect();
        let node = self.node.clone();
        Box::pin(self.with(move |c| {
            Box::pin(async move {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT participant_id, MIN(created_ms) FROM webhooks \
                     WHERE participant_id = ANY($1) AND node <> $2 GROUP BY participant_id",
                )
                .bind(&ids)
                .bind(&node)
                .fetch_all(&mut *c)
                .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(p, at)| Uuid::parse_str(&p).ok().map(|p| (p, at)))
                    .collect())
            })
        }))
    }

    fn owners(&self) -> BoxFuture<'_, Result<Vec<(Uuid, Owner)>, StoreError>> {
        Box::pin(self.with(|c| {
            Box::pin(async move {
                let q = format!(
                    "SELECT o.session_id, o.node, o.epoch, COALESCE(n.info, '{{}}') AS info \
                     FROM session_owners o LEFT JOIN nodes n ON n.id = o.node \
                     WHERE o.expires_ms > {NOW_MS}"
                );
                let rows = sqlx::query(&q).fetch_all(&mut *c).await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let id: String = r.try_get("session_id")?;
                    let Ok(id) = Uuid::parse_str(&id) else {
                        continue;
                    };
                    out.push((
                        id,
                        Owner {
                            node: r.try_get("node")?,
                            epoch: r.try_get("epoch")?,
                            info: r.try_get("info")?,
                        },
                    ));
                }
                Ok(out)
            })
        }))
    }

    fn release(&self, session: Uuid, epoch: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        let node = self.node.clone();
        Box::pin(self.with(move |c| {
            Box::pin(async move {
                // Expired, not deleted: the next owner's epoch is still higher.
                sqlx::query(
                    "UPDATE session_owners SET expires_ms = 0 \
                     WHERE session_id = $1 AND node = $2 AND epoch = $3",
                )
                .bind(session.to_string())
                .bind(&node)
                .bind(epoch)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
    }
}

/// Changes kept in the feed.
const FEED_KEPT: i64 = 100_000;

type Rows = Vec<sqlx::postgres::PgRow>;

/// The sessions named or holding a named participant, their memberships and members,
/// and the named participants with their memberships.
async fn read(
    c: &mut PgConnection,
    participants: Vec<String>,
    sessions: Vec<String>,
) -> Result<(Rows, Rows, Rows), sqlx::Error> {
    let mut tx = c.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let s = sqlx::query(
        "SELECT id, account_id, tag, created_at, expires_at FROM sessions WHERE id = ANY($1) \
         OR id IN (SELECT session_id FROM memberships WHERE participant_id = ANY($2))",
    )
    .bind(&sessions)
    .bind(&participants)
    .fetch_all(&mut *tx)
    .await?;
    let all_sessions: Vec<String> = s
        .iter()
        .filter_map(|r| r.try_get::<String, _>("id").ok())
        .chain(sessions)
        .collect();
    let m = sqlx::query(
        "SELECT participant_id, session_id, joined_seq, subscriptions FROM memberships \
         WHERE session_id = ANY($1) OR participant_id = ANY($2) ORDER BY joined_seq, participant_id",
    )
    .bind(&all_sessions)
    .bind(&participants)
    .fetch_all(&mut *tx)
    .await?;
    let all_participants: Vec<String> = m
        .iter()
        .filter_map(|r| r.try_get::<String, _>("participant_id").ok())
        .chain(participants)
        .collect();
    let p = sqlx::query(
        "SELECT id, account_id, callback_url, publish_permissions, tag, device_api_version, \
         created_at, media_stream FROM participants WHERE id = ANY($1)",
    )
    .bind(&all_participants)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((s, p, m))
}

/// Move the outbox rows and connection records of nodes whose heartbeat is older than
/// the lease to `node`, the outbox rows renumbered after `base_id` in their order.
async fn take_over(
    c: &mut PgConnection,
    node: String,
    lease_ms: i64,
    base_id: i64,
) -> Result<(Rows, Rows, Rows), sqlx::Error> {
    let mut tx = c.begin().await?;
    let dead = format!(
        "SELECT id FROM nodes WHERE id <> $1 AND heartbeat_ms < {NOW_MS} - $2 FOR UPDATE SKIP LOCKED"
    );
    let mut dead: Vec<String> = sqlx::query_scalar(&dead)
        .bind(&node)
        .bind(lease_ms)
        .fetch_all(&mut *tx)
        .await?;
    // Rows of a node that has no row at all (it died before its first heartbeat, or
    // its row was removed by an earlier takeover and it never came back).
    let orphans: Vec<String> = sqlx::query_scalar(
        "SELECT node FROM webhooks WHERE node <> $1 AND node NOT IN (SELECT id FROM nodes) \
         UNION SELECT node FROM connections WHERE node <> $1 AND node NOT IN (SELECT id FROM nodes)",
    )
    .bind(&node)
    .fetch_all(&mut *tx)
    .await?;
    dead.extend(orphans);
    if dead.is_empty() {
        tx.commit().await?;
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    }
    let webhooks = sqlx::query(
        "UPDATE webhooks w SET node = $1, id = $2 + o.n FROM \
         (SELECT node, id, row_number() OVER (ORDER BY created_ms, id) AS n FROM webhooks \
          WHERE node = ANY($3)) o WHERE w.node = o.node AND w.id = o.id \
         RETURNING w.id, w.event_id, w.participant_id, w.url, w.body, w.created_ms, \
         CAST(w.attempts AS BIGINT) AS attempts, w.next_ms",
    )
    .bind(&node)
    .bind(base_id)
    .bind(&dead)
    .fetch_all(&mut *tx)
    .await?;
    let connections = sqlx::query(
        "UPDATE connections SET node = $1 WHERE node = ANY($2) RETURNING participant_id, \
         source, device_id, callback_url, tag, CAST(connected AS BIGINT) AS connected, since_ms",
    )
    .bind(&node)
    .bind(&dead)
    .fetch_all(&mut *tx)
    .await?;
    let dialogs = sqlx::query(
        "UPDATE dialogs SET node = $1 WHERE node = ANY($2) AND state <> 'TERMINATED' RETURNING id, \
         account_id, participant_id, state, data, reason, details, created_at, updated_at",
    )
    .bind(&node)
    .bind(&dead)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM nodes WHERE id = ANY($1)")
        .bind(&dead)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((webhooks, connections, dialogs))
}
