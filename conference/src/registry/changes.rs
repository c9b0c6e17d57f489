//! What changed in an account's control plane, for live views (the console): every
//! change this node makes or follows from the cluster's feed is announced on a bounded
//! broadcast; a reader that falls behind is told so and reads everything again.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Conference, Session};

/// Changes kept for slow readers before they are told they lagged.
pub const CHANGES_BUFFER: usize = 1024;

/// What kind of object changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Session,
    Participant,
    Dialog,
}

/// One object of one account changed (created, updated or deleted): read it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    #[serde(skip)]
    pub account_id: Arc<str>,
    pub kind: ChangeKind,
    pub id: Uuid,
    /// The session it belongs to, when known (a member, a dialog's participant's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
}

pub(super) fn channel() -> broadcast::Sender<Change> {
    broadcast::channel(CHANGES_BUFFER).0
}

impl Conference {
    /// Every change from now on (all accounts: readers filter theirs).
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Announce a change (nobody listening is fine).
    pub(super) fn changed(
        &self,
        account_id: &str,
        kind: ChangeKind,
        id: Uuid,
        session_id: Option<Uuid>,
    ) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        let _ = self.changes.send(Change {
            account_id: Arc::from(account_id),
            kind,
            id,
            session_id,
        });
    }

    /// The account's sessions that have not expired, newest first.
    pub fn list_sessions(&self, account_id: &str) -> Vec<Session> {
        let now = self.now();
        let st = self.lock();
        let mut list: Vec<Session> = st
            .sessions
            .values()
            .filter(|s| s.account_id == account_id && s.expires_at > now)
            .cloned()
            .collect();
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        list
    }
}
