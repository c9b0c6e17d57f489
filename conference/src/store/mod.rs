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

mod postgres;
mod sql;
mod sqlite;
pub use sql::SqlStore;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
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
    /// Set a metadata value (e.g. the generated token secret).
    PutMeta { key: String, value: String },
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
    /// A device or SIP call is gone (`onLeave` enqueued).
    DeleteConnection {
        participant_id: Uuid,
        source: DeviceSource,
        device_id: String,
    },
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
}
