//! Following the cluster's change feed: every node keeps the whole control plane in
//! memory, PostgreSQL is the truth, and the feed says which sessions and participants
//! another node changed. Catching up re-reads those rows as they are now (state, not
//! operations: applying the same read twice, or a read that already includes a later
//! change, leaves the same memory), then pushes the new membership to any media this
//! node runs for the touched sessions.
//!
//! A node's own changes are in memory before they are in the feed; they are re-read
//! only where another node touched the same rows, so concurrent writes to one session
//! on two nodes converge on what the database committed last.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use uuid::Uuid;

use super::{end_session, ChangeKind, Conference, Result, State};
use crate::media::session::HangupReason;
use crate::store::{Cluster, Membership, Snapshot};

/// How far this node has followed the feed.
#[derive(Debug, Default)]
pub(super) struct Feed {
    /// The last change applied.
    pub(super) seq: i64,
    /// Every catch-up request up to this ticket is answered.
    pub(super) covered: u64,
}

impl Conference {
    /// The cluster this node is one of, if any.
    pub fn cluster(&self) -> Option<Arc<dyn Cluster>> {
        self.cluster.clone()
    }

    /// Catch up with every change committed by other nodes up to now (one database
    /// round trip when there is none). Requests call it first, so what any node
    /// acknowledged is what this node answers; a background task calls it on each
    /// change notification and every second.
    pub async fn sync(&self) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        // Catch-ups coalesce: one that starts after this call began covers it, so many
        // concurrent requests share one read of the feed.
        let ticket = self.sync_tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut feed = self.applied.lock().await;
        if feed.covered >= ticket {
            return Ok(());
        }
        let upto = self.sync_tickets.load(Ordering::SeqCst);
        loop {
            let changes = cluster.changes_since(feed.seq).await?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                break;
            };
            if changes[0].seq != feed.seq + 1 {
                // The feed was pruned past us: read everything.
                tracing::warn!(
                    from = feed.seq,
                    to = last,
                    "change feed pruned past this node; reading all state"
                );
                let snap = self.store.load().await?;
                self.replace_all(snap);
                feed.seq = last;
                continue;
            }
            let (mut participants, mut sessions) = (HashSet::new(), HashSet::new());
            for c in changes.iter().filter(|c| c.node != cluster.node()) {
                participants.extend(c.participants.iter().copied());
                sessions.extend(c.sessions.iter().copied());
            }
            if !participants.is_empty() || !sessions.is_empty() {
                let (participants, sessions): (Vec<Uuid>, Vec<Uuid>) = (
                    participants.into_iter().collect(),
                    sessions.into_iter().collect(),
                );
                let snap = cluster.read(participants.clone(), sessions.clone()).await?;
                self.apply(snap, &participants, &sessions);
            }
            feed.seq = last;
        }
        feed.covered = upto;
        Ok(())
    }

    /// Make memory what `snap` says about the named participants and sessions (and the
    /// sessions and members it carries besides).
    fn apply(&self, snap: Snapshot, participants: &[Uuid], sessions: &[Uuid]) {
        let mut st = self.lock();
        let mut touched: HashSet<Uuid> = HashSet::new();
        let mut ended: Vec<Uuid> = Vec::new();
        let stored: HashSet<Uuid> = snap.sessions.iter().map(|s| s.id).collect();
        let mut changed: Vec<(String, ChangeKind, Uuid, Option<Uuid>)> = Vec::new();
        for id in sessions.iter().filter(|id| !stored.contains(id)) {
            if let Some(s) = st.sessions.get(id) {
                changed.push((s.account_id.clone(), ChangeKind::Session, *id, Some(*id)));
                end_session(&mut st, *id);
                ended.push(*id);
            }
        }
        let present: HashSet<Uuid> = snap.participants.iter().map(|p| p.id).collect();
        for id in participants.iter().filter(|id| !present.contains(id)) {
            let removed = st.participants.remove(id);
            if let Some(p) = &removed {
                changed.push((
                    p.account_id.clone(),
                    ChangeKind::Participant,
                    *id,
                    p.session_id,
                ));
            }
            if let Some(sid) = removed.and_then(|p| p.session_id) {
                if let Some(s) = st.sessions.get_mut(&sid) {
                    s.members.retain(|m| m != id);
                }
                touched.insert(sid);
            }
        }
        let memberships: HashMap<Uuid, &Membership> = snap
            .memberships
            .iter()
            .map(|m| (m.participant_id, m))
            .collect();
        for mut s in snap.sessions {
            s.members = snap
                .memberships
                .iter()
                .filter(|m| m.session_id == s.id)
                .map(|m| m.participant_id)
                .collect();
            touched.insert(s.id);
            changed.push((s.account_id.clone(), ChangeKind::Session, s.id, Some(s.id)));
            st.sessions.insert(s.id, s);
        }
        for mut p in snap.participants {
            let m = memberships.get(&p.id);
            let before = st.participants.get(&p.id).and_then(|o| o.session_id);
            p.session_id = m.map(|m| m.session_id);
            p.subscriptions = m.map(|m| m.subscriptions.clone()).unwrap_or_default();
            if let Some(old) = before.filter(|old| Some(*old) != p.session_id) {
                if let Some(s) = st.sessions.get_mut(&old) {
                    s.members.retain(|x| *x != p.id);
                }
                touched.insert(old);
            }
            changed.push((
                p.account_id.clone(),
                ChangeKind::Participant,
                p.id,
                p.session_id,
            ));
            st.participants.insert(p.id, p);
        }
        for id in &ended {
            self.media.end(*id, HangupReason::SessionEnded);
        }
        for id in touched.iter().filter(|id| st.sessions.contains_key(id)) {
            self.notify_media(&st, *id);
        }
        // Media of these participants parked here moves where they are now (or ends).
        for id in participants {
            self.media.recheck(*id);
        }
        drop(st);
        for (account, kind, id, session) in changed {
            self.changed(&account, kind, id, session);
        }
    }

    /// Replace the whole control plane in memory by the store's (a node that fell too
    /// far behind the feed).
    fn replace_all(&self, snap: Snapshot) {
        let mut fresh = State::default();
        super::fill(
            &mut fresh,
            snap.sessions,
            snap.participants,
            snap.memberships,
        );
        let mut st = self.lock();
        fresh.next_seq = fresh.next_seq.max(st.next_seq);
        let gone: Vec<Uuid> = st
            .sessions
            .keys()
            .filter(|id| !fresh.sessions.contains_key(id))
            .copied()
            .collect();
        *st = fresh;
        for id in gone {
            self.media.end(id, HangupReason::SessionEnded);
        }
        let ids: Vec<Uuid> = st.sessions.keys().copied().collect();
        for id in ids {
            self.notify_media(&st, id);
        }
        // Everything parked here goes where its participant is now.
        self.media.recheck(Uuid::nil());
    }
}
