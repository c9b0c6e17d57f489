//! Durable state behind a trait: embedded SQLite for one node, PostgreSQL (the one
//! distributed engine a cluster shares), the same schema and statements on both.
//!
//! The control plane keeps its state in memory and writes every change through
//! the store before acknowledging it. A change is a unit of [`StoreOp`]s that
//! is applied atomically; units are applied in the order [`Store::commit`] was
//! called (the call enqueues synchronously, the returned future resolves once
//! the unit is durable).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use uuid::Uuid;

use crate::events::DeviceSource;
use crate::model::{Participant, Session, Subscriptions};
use crate::webhooks::Webhook;

mod cluster;
mod postgres;
mod sql;
mod sqlite;
pub use cluster::PgCluster;
pub use sql::SqlStore;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
    /// A unit's [`StoreOp::Fence`] did not hold: this node lost the session.
    #[error("this node no longer owns the session")]
    Fenced,
    /// A unit's [`StoreOp::LimitMembers`] did not hold (another node added members at
    /// the same time).
    #[error("the session is full")]
    Full,
}

/// One change to durable state.
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// Insert a participant (without membership: see `PutMembership`).
    InsertParticipant(Participant),
    /// Delete a participant and its membership.
    DeleteParticipant(Uuid),
    /// Insert a session (without members).
    InsertSession(Session),
    /// Delete a session and every membership in it.
    DeleteSession(Uuid),
    /// Create or replace a participant's membership and subscriptions.
    PutMembership {
        participant_id: Uuid,
        session_id: Uuid,
        /// Orders members by joining.
        joined_seq: i64,
        subscriptions: Subscriptions,
    },
    /// Replace the subscriptions of an existing membership.
    SetSubscriptions {
        participant_id: Uuid,
        subscriptions: Subscriptions,
    },
    /// End a participant's membership.
    DeleteMembership(Uuid),
    /// Set a metadata value.
    PutMeta { key: String, value: String },
    /// Set a metadata value unless one is set (e.g. the generated token secret, which
    /// nodes starting together must agree on).
    InitMeta { key: String, value: String },
    /// Add a callback to the webhook outbox.
    PutWebhook(Webhook),
    /// A callback failed: its attempts so far and when it is tried next.
    RetryWebhook {
        id: i64,
        attempts: u32,
        next_ms: u64,
    },
    /// A callback was delivered (or given up).
    DeleteWebhook(i64),
    /// Create or replace a dialog.
    PutDialog(DialogRecord),
    /// A device or SIP call connected (or lost its connection): create or replace.
    PutConnection(ConnectionRecord),
    /// Fails the unit unless this node holds `session_id`'s lease at `epoch` (writes of
    /// a session's owner: an owner that lost its lease changes nothing).
    Fence { session_id: Uuid, epoch: i64 },
    /// A device or SIP call is gone (`onLeave` enqueued).
    DeleteConnection {
        participant_id: Uuid,
        source: DeviceSource,
        device_id: String,
    },
    /// Fails the unit (with [`StoreError::Full`]) if `session_id` has more than `max`
    /// members once the unit's own changes are in, counting every committed
    /// transaction: two nodes adding the last member at once cannot both succeed.
    LimitMembers { session_id: Uuid, max: usize },
    /// A v3 device's subscribing connection after an offer: replaces the participant's
    /// record unless that one is the same device's at a higher revision (writes of two
    /// offers may land out of order).
    PutLayout(LayoutRecord),
    /// The device left (its page closed the connection): forget its layout.
    DeleteLayout {
        participant_id: Uuid,
        device_id: String,
    },
    /// Create or replace a recording's record.
    PutRecording(crate::recording::Recording),
    /// Forget a recording (its retention ended).
    DeleteRecording(Uuid),
}

/// A v3 browser's subscribing peer connection as the browser holds it: the m-lines of
/// the last offer it was sent and that offer's `sdpRevision`, so that whichever node
/// serves the device next goes on offering on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRecord {
    pub participant_id: Uuid,
    /// The SDK's `uniqueId`.
    pub device_id: String,
    pub revision: u64,
    /// `kind:mid` per m-line, in order, separated by spaces.
    pub lines: String,
}

/// A browser device or SIP call whose `onConnect` went out and whose `onLeave` has
/// not: if the process dies, the next start ends it (`onDisconnect`, `onLeave`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub participant_id: Uuid,
    pub source: DeviceSource,
    /// The SDK's `uniqueId` or the SIP Call-ID.
    pub device_id: String,
    pub callback_url: String,
    pub tag: Option<String>,
    /// Whether its connection was open (a browser's may be lost, waiting for a resume).
    pub connected: bool,
    pub since_ms: u64,
}

/// A dialog as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogRecord {
    pub id: Uuid,
    pub account_id: String,
    pub participant_id: Uuid,
    pub state: String,
    /// JSON `{"to","from","userToUser"?}`.
    pub data: String,
    pub reason: Option<String>,
    pub details: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A membership as stored.
#[derive(Debug, Clone)]
pub struct Membership {
    pub participant_id: Uuid,
    pub session_id: Uuid,
    pub joined_seq: i64,
    pub subscriptions: Subscriptions,
}

/// Everything the store holds, read once at startup.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Participants with `session_id` unset and empty subscriptions (see `memberships`).
    pub participants: Vec<Participant>,
    /// Sessions with `members` empty (see `memberships`).
    pub sessions: Vec<Session>,
    pub memberships: Vec<Membership>,
    pub meta: HashMap<String, String>,
    /// Callbacks not delivered yet, by id.
    pub webhooks: Vec<Webhook>,
    pub dialogs: Vec<DialogRecord>,
    /// Devices and calls that were connected when the last run stopped.
    pub connections: Vec<ConnectionRecord>,
    /// This node's recordings.
    pub recordings: Vec<crate::recording::Recording>,
}

/// Durable storage of the control plane's state.
pub trait Store: Send + Sync + 'static {
    /// Read everything (at startup).
    fn load(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>>;
    /// Enqueue one atomic unit now; the future resolves when it is durable.
    fn commit(&self, unit: Vec<StoreOp>) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Whether the store answers (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Finish every enqueued unit, flush and close.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The layout of `participant`'s device's subscribing connection, if one is kept
    /// (read after every unit enqueued before it).
    fn layout(
        &self,
        participant: Uuid,
    ) -> BoxFuture<'static, Result<Option<LayoutRecord>, StoreError>> {
        let _ = participant;
        Box::pin(async { Ok(None) })
    }
}

/// A node as the cluster sees it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: String,
    /// JSON the node wrote with its heartbeat (addresses, load).
    pub info: String,
    pub started_ms: i64,
    /// How long ago its last heartbeat was, by the database's clock.
    pub heartbeat_age_ms: i64,
}

/// One committed transaction of the change feed and what it touched.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: i64,
    /// The node that wrote it.
    pub node: String,
    pub participants: Vec<Uuid>,
    pub sessions: Vec<Uuid>,
}

/// What a live node took over from dead ones.
#[derive(Debug, Default)]
pub struct Taken {
    /// Undelivered callbacks, renumbered into the taker's outbox, in order.
    pub webhooks: Vec<Webhook>,
    /// Devices and calls that were connected on a dead node: to be ended.
    pub connections: Vec<ConnectionRecord>,
    /// Dialogs a dead node placed (their calls are gone): to be ended.
    pub dialogs: Vec<DialogRecord>,
}

/// What the nodes of a cluster share beside the [`Store`]: their rows and heartbeats,
/// the change feed, and the takeover of dead nodes' outbox and connections.
pub trait Cluster: Send + Sync + 'static {
    /// This node's id.
    fn node(&self) -> &str;
    /// Upsert this node's row with a fresh heartbeat.
    fn heartbeat(&self, info: String) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The nodes whose last heartbeat is within `lease`.
    fn nodes(&self, lease: std::time::Duration) -> BoxFuture<'_, Result<Vec<NodeRow>, StoreError>>;
    /// The feed's last number.
    fn head(&self) -> BoxFuture<'_, Result<i64, StoreError>>;
    /// The feed after `seq`, in order (at most 10,000 entries).
    fn changes_since(&self, seq: i64) -> BoxFuture<'_, Result<Vec<Change>, StoreError>>;
    /// The named participants and sessions as stored now, with the sessions the named
    /// participants are in and those sessions' members and memberships.
    fn read(
        &self,
        participants: Vec<Uuid>,
        sessions: Vec<Uuid>,
    ) -> BoxFuture<'_, Result<Snapshot, StoreError>>;
    /// Take over the outbox and connections of nodes silent for longer than `lease`,
    /// numbering the callbacks from `base_id + 1`.
    fn take_over(
        &self,
        lease: std::time::Duration,
        base_id: i64,
    ) -> BoxFuture<'_, Result<Taken, StoreError>>;
    /// Resolves at the next change notification (a wake-up only: it may be lost).
    fn changed(&self) -> BoxFuture<'_, ()>;
    /// Take the lease on `session`'s media if it has no live owner (the epoch grows at
    /// each new owner), and answer who owns it now.
    fn own(&self, session: Uuid) -> BoxFuture<'_, Result<Owner, StoreError>>;
    /// Extend the leases this node holds at these epochs; answers the ones it still
    /// holds (a missing one was taken by another node: its media must stop here).
    fn renew(&self, held: Vec<(Uuid, i64)>) -> BoxFuture<'_, Result<Vec<Uuid>, StoreError>>;
    /// `session`'s owner if its lease is live.
    fn owner(&self, session: Uuid) -> BoxFuture<'_, Result<Option<Owner>, StoreError>>;
    /// A dialog's record, whichever node placed it, and that node.
    fn dialog(&self, id: Uuid)
        -> BoxFuture<'_, Result<Option<(DialogRecord, String)>, StoreError>>;
    /// Every live lease with its owner.
    fn owners(&self) -> BoxFuture<'_, Result<Vec<(Uuid, Owner)>, StoreError>>;
    /// For each of `participants` with callbacks pending on other nodes, the oldest one's
    /// `created_ms` (a participant's callbacks are delivered in order across nodes).
    fn oldest_elsewhere(
        &self,
        participants: Vec<Uuid>,
    ) -> BoxFuture<'_, Result<HashMap<Uuid, i64>, StoreError>>;
    /// Give up a lease held at `epoch` (the session's media ended here).
    fn release(&self, session: Uuid, epoch: i64) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Every stored recording row (segment) of `session`, whichever node wrote it.
    fn session_recordings(
        &self,
        session: Uuid,
    ) -> BoxFuture<'_, Result<Vec<crate::recording::Recording>, StoreError>>;
}

/// Who owns a session's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub epoch: i64,
    /// What the owner said about itself with its heartbeat (JSON; addresses).
    pub info: String,
}
