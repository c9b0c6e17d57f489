//! Which node runs a session's media. In a cluster, the node a session's first device
//! or call reaches takes the session's lease (PostgreSQL, with an epoch that grows at
//! each new owner) and runs its media until the session ends there; joins reaching
//! another node are sent to the owner. The owner renews its leases in one statement;
//! a lease it could not renew was taken by another node after it expired, and the
//! media stops here at once. If renewals keep failing (the database is unreachable),
//! the media stops before the lease can run out, so two nodes never serve one session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Conference, Result};
use crate::media::session::HangupReason;
use crate::media::session::SubscribeLayout;

/// Where a device or call must be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this node (one node, or this node owns the session now).
    Here,
    /// On the owner: its id and what it advertises.
    Elsewhere {
        node: String,
        http_url: Option<String>,
        sip_uri: Option<String>,
    },
    /// Nowhere yet: this node is stopping and the session does not run here (connect
    /// again: the next try is placed on another node).
    Draining,
}

/// Another node, with the addresses its heartbeat advertises (`info`).
pub(super) fn elsewhere(node: String, info: &str) -> Placement {
    let info: serde_json::Value = serde_json::from_str(info).unwrap_or_default();
    let text = |k: &str| info[k].as_str().map(str::to_string);
    Placement::Elsewhere {
        node,
        http_url: text("httpUrl"),
        sip_uri: text("sipUri"),
    }
}

/// A lease a node must not give up right after taking it: the join that took it has
/// not started the media yet.
const FRESH: Duration = Duration::from_secs(5);
/// Lost leases remembered (for fencing the events of ending media) at most.
const MAX_LOST: usize = 10_000;
/// Media stops this long before a lease that could not be renewed runs out.
const MARGIN: Duration = Duration::from_secs(2);
/// The watchdog stops media this long (plus its period) before a lease could run out.
const WATCHDOG_SLACK: Duration = Duration::from_millis(250);

/// The sessions this node owns: epoch and when the lease was taken; and the owners
/// other nodes had when last looked at.
#[derive(Default)]
pub(super) struct Owned {
    held: HashMap<Uuid, (i64, Instant)>,
    /// Leases lost (or given up unrenewed) at these epochs: the events the ending media
    /// still emits are fenced by them, and refused.
    lost: HashMap<Uuid, i64>,
    elsewhere: HashMap<Uuid, Placement>,
    /// The last renewal that succeeded.
    renewed: Option<Instant>,
    /// A graceful stop began: no session that does not run here is taken.
    draining: bool,
}

impl Conference {
    fn owned(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the device holding `token` must be served (the token and the membership
    /// are checked again by the join itself). A session without a live owner goes to
    /// the least loaded live node (this one on a tie); `relayed`: another node already
    /// chose this one, which takes the session if it can.
    pub async fn place(&self, token: &str, relayed: bool) -> Result<Placement> {
        let Some(cluster) = &self.cluster else {
            return Ok(Placement::Here);
        };
        let Ok(claims) = self.tokens.verify(token, self.now()) else {
            return Ok(Placement::Here);
        };
        let session = self
            .lock()
            .participants
            .get(&claims.participant_id)
            .and_then(|p| p.session_id);
        let Some(session) = session else {
            return Ok(Placement::Here);
        };
        if self.is_draining() && !self.media.has(session) {
            return Ok(Placement::Draining);
        }
        if relayed || self.owned().held.contains_key(&session) {
            return self.place_session(session).await;
        }
        if let Some(owner) = cluster.owner(session).await? {
            if owner.node != cluster.node() {
                return Ok(elsewhere(owner.node, &owner.info));
            }
            return self.place_session(session).await;
        }
        let nodes = cluster.nodes(self.lease).await?;
        let load = |info: &str| -> u64 {
            let v: serde_json::Value = serde_json::from_str(info).unwrap_or_default();
            v["ownedSessions"].as_u64().unwrap_or(u64::MAX)
        };
        let mine = nodes
            .iter()
            .find(|n| n.id == cluster.node())
            .map_or(0, |n| load(&n.info));
        let draining = |info: &str| -> bool {
            let v: serde_json::Value = serde_json::from_str(info).unwrap_or_default();
            v["draining"].as_bool().unwrap_or(false)
        };
        let least = nodes
            .iter()
            .filter(|n| n.id != cluster.node() && !draining(&n.info))
            .map(|n| (load(&n.info), n))
            .min_by_key(|(l, n)| (*l, n.id.clone()));
        match least {
            Some((l, n)) if l < mine => {
                tracing::info!(session_id = %session, node = %n.id, load = l, own_load = mine, "new session placed on a less loaded node");
                Ok(elsewhere(n.id.clone(), &n.info))
            }
            _ => self.place_session(session).await,
        }
    }

    /// Take `session`'s lease unless another node holds it; where its media runs.
    pub async fn place_session(&self, session: Uuid) -> Result<Placement> {
        let Some(cluster) = &self.cluster else {
            return Ok(Placement::Here);
        };
        if self.owned().held.contains_key(&session) {
            return Ok(Placement::Here);
        }
        // The lease counts from when it was asked for.
        let sent = Instant::now();
        let owner = cluster.own(session).await?;
        if owner.node == cluster.node() {
            tracing::info!(session_id = %session, epoch = owner.epoch, "session media placed on this node");
            {
                let mut owned = self.owned();
                owned.elsewhere.remove(&session);
                owned.lost.remove(&session);
                owned.held.insert(session, (owner.epoch, sent));
            }
            // Recordings of the session that another node was making go on here.
            if let Err(e) = self.resume_recordings(session).await {
                tracing::warn!(session_id = %session, error = %e, "resuming the session's recordings here");
            }
            return Ok(Placement::Here);
        }
        let placement = elsewhere(owner.node, &owner.info);
        self.owned().elsewhere.insert(session, placement.clone());
        Ok(placement)
    }

    /// A call joined `session`'s media here without asking the cluster first (SIP
    /// joins are answered at once): take its lease now, and if another node got it
    /// first, end the media here (its calls are hung up; the next go to the owner).
    pub fn claim(self: &std::sync::Arc<Self>, session: Uuid) {
        if self.cluster.is_none() || self.owned().held.contains_key(&session) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            match me.place_session(session).await {
                Ok(Placement::Here) => {}
                Ok(Placement::Draining) => {}
                Ok(Placement::Elsewhere { node, .. }) => {
                    tracing::warn!(session_id = %session, %node, "a call joined here while another node owns the session; ending it here");
                    me.media.end(session, HangupReason::Shutdown);
                }
                Err(e) => {
                    tracing::warn!(session_id = %session, error = %e, "taking the session's lease failed; ending its media here");
                    me.media.end(session, HangupReason::Shutdown);
                }
            }
        });
    }

    /// In a cluster, the session a call with `token` would join when this node does not
    /// run it (its placement must be decided before the call is admitted); `None` when
    /// there is nothing to decide (one node, a bad token, no session, or ours).
    pub fn session_to_place(&self, token: &str) -> Option<Uuid> {
        self.cluster.as_ref()?;
        if self.is_draining() {
            return None;
        }
        let claims = self.tokens.verify(token, self.now()).ok()?;
        let session = self
            .lock()
            .participants
            .get(&claims.participant_id)
            .and_then(|p| p.session_id)?;
        (!self.owned().held.contains_key(&session)).then_some(session)
    }

    /// The node (and its SIP URI) that owned `session` when last looked at, if not
    /// this one.
    pub(super) fn owner_elsewhere(&self, session: Uuid) -> Option<(String, Option<String>)> {
        let owned = self.owned();
        if owned.held.contains_key(&session) {
            return None;
        }
        match owned.elsewhere.get(&session) {
            Some(Placement::Elsewhere { node, sip_uri, .. }) => {
                Some((node.clone(), sip_uri.clone()))
            }
            _ => None,
        }
    }

    /// The epoch at which this node owns (or last owned, if it lost it) `session`.
    pub fn epoch(&self, session: Uuid) -> Option<i64> {
        let owned = self.owned();
        owned
            .held
            .get(&session)
            .map(|(e, _)| *e)
            .or_else(|| owned.lost.get(&session).copied())
    }

    fn lose(owned: &mut Owned, session: Uuid, epoch: i64) {
        if owned.lost.len() >= MAX_LOST {
            owned.lost.clear();
        }
        owned.lost.insert(session, epoch);
    }

    /// A graceful stop begins: from now on this node takes no session whose media does
    /// not run here (devices are told to connect again, calls get 503), its heartbeat
    /// says so (other nodes place new sessions elsewhere) and `/ready` fails (load
    /// balancers take it out).
    pub fn start_draining(&self) {
        self.owned().draining = true;
        tracing::info!("draining: new sessions go to other nodes");
    }

    /// Whether a graceful stop began.
    pub fn is_draining(&self) -> bool {
        self.owned().draining
    }

    /// Draining: end here the media of every session without SIP calls (browsers only),
    /// its devices told to connect again — they are placed on another node, where they
    /// get their media back without a page reload. Returns how many moved.
    pub fn move_sessions_without_calls(&self) -> usize {
        let ids = self.media.without_calls();
        for session in &ids {
            tracing::info!(session_id = %session, "draining: the session moves to another node");
            self.media.end(*session, HangupReason::Moved);
        }
        ids.len()
    }

    /// Give up the leases of sessions whose media no longer runs here (once the events
    /// it emitted are stored: they were fenced by the lease).
    pub async fn release_ended(&self) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let ended: Vec<(Uuid, i64)> = {
            let mut owned = self.owned();
            let ended: Vec<(Uuid, i64)> = owned
                .held
                .iter()
                .filter(|(s, _)| !self.media.has(**s))
                .map(|(s, (e, _))| (*s, *e))
                .collect();
            for (s, e) in &ended {
                owned.held.remove(s);
                Self::lose(&mut owned, *s, *e);
            }
            ended
        };
        for (session, epoch) in ended {
            cluster.release(session, epoch).await?;
        }
        Ok(())
    }

    /// Sessions this node owns now.
    pub fn owned_sessions(&self) -> usize {
        self.owned().held.len()
    }

    /// Give up every lease (a graceful stop, once the media ended and its events are
    /// stored): other nodes may take the sessions at once instead of after the lease.
    pub async fn release_all(&self) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let held: Vec<(Uuid, i64)> = {
            let mut owned = self.owned();
            let held: Vec<(Uuid, i64)> = owned.held.drain().map(|(s, (e, _))| (s, e)).collect();
            for (s, e) in &held {
                Self::lose(&mut owned, *s, *e);
            }
            held
        };
        for (session, epoch) in held {
            cluster.release(session, epoch).await?;
        }
        Ok(())
    }

    /// Renew the leases of sessions whose media runs here, release the others, and stop
    /// the media of any lease lost (or about to run out unrenewed after `lease`).
    /// The watchdog, run every lease / 10 apart from [`Self::keep_ownership`], whatever
    /// that is waiting for: media whose lease was last confirmed (taken, or renewed,
    /// counted from when that was asked for: the database set the end no earlier than
    /// a lease after it) stops here one watchdog period and a slack before that end,
    /// so before another node may take the session. (Renewals come every lease / 3.)
    pub fn expire_unconfirmed(&self) {
        if self.cluster.is_none() {
            return;
        }
        let limit = self
            .lease
            .saturating_sub(self.lease / 10)
            .saturating_sub(WATCHDOG_SLACK);
        let mut owned = self.owned();
        let renewed = owned.renewed;
        let stale: Vec<(Uuid, i64)> = owned
            .held
            .iter()
            .filter(|(_, (_, since))| {
                let confirmed = renewed.map_or(*since, |r| r.max(*since));
                confirmed.elapsed() >= limit
            })
            .map(|(s, (e, _))| (*s, *e))
            .collect();
        for (session, epoch) in stale {
            owned.held.remove(&session);
            Self::lose(&mut owned, session, epoch);
            tracing::warn!(session_id = %session, epoch, "session lease not confirmed in time (watchdog); its media stops here");
            self.media.end(session, HangupReason::Shutdown);
        }
    }

    pub async fn keep_ownership(&self) -> Result<()> {
        let lease = self.lease;
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let (running, idle): (Vec<_>, Vec<_>) = {
            let owned = self.owned();
            owned
                .held
                .iter()
                .map(|(s, (e, since))| (*s, *e, *since))
                .partition(|(s, _, since)| self.media.has(*s) || since.elapsed() < FRESH)
        };
        let held: Vec<(Uuid, i64)> = running.iter().map(|(s, e, _)| (*s, *e)).collect();
        // Renewal first: nothing else this round may delay it, and it may not take
        // longer than a round (renewals run every lease / 3).
        let round = lease / 3;
        // The lease is confirmed from when the renewal was sent (the server's clock
        // starts the new term no earlier than that).
        let sent = Instant::now();
        let renewal = match tokio::time::timeout(round, cluster.renew(held.clone())).await {
            Ok(r) => r,
            Err(_) => Err(crate::store::StoreError::Backend(
                "renewing the session leases timed out".into(),
            )),
        };
        let renewed = match renewal {
            Ok(kept) => {
                let mut owned = self.owned();
                owned.renewed = Some(sent);
                for (session, epoch) in held.iter().filter(|(s, _)| !kept.contains(s)) {
                    owned.held.remove(session);
                    Self::lose(&mut owned, *session, *epoch);
                    tracing::warn!(session_id = %session, epoch, "session lease lost to another node; its media stops here");
                    self.media.end(*session, HangupReason::Shutdown);
                }
                Ok(())
            }
            Err(e) => {
                let mut owned = self.owned();
                // Stop now if the next round could come too late.
                let stale = owned
                    .renewed
                    .is_none_or(|at| at.elapsed() + round + MARGIN >= lease);
                if stale {
                    let held: Vec<(Uuid, i64)> =
                        owned.held.drain().map(|(s, (e, _))| (s, e)).collect();
                    for (session, epoch) in held {
                        Self::lose(&mut owned, session, epoch);
                        tracing::warn!(session_id = %session, "session lease could not be renewed in time; its media stops here");
                        self.media.end(session, HangupReason::Shutdown);
                    }
                }
                Err(e.into())
            }
        };
        // The rest of the round is bounded too (the watchdog does not depend on it).
        let deadline = tokio::time::Instant::now() + round;
        for (session, epoch, _) in idle {
            self.owned().held.remove(&session);
            match tokio::time::timeout_at(deadline, cluster.release(session, epoch)).await {
                Ok(Ok(())) => {
                    tracing::info!(session_id = %session, epoch, "session media ended here; lease released")
                }
                // It runs out by itself.
                Ok(Err(e)) => {
                    tracing::warn!(session_id = %session, error = %e, "releasing a lease")
                }
                Err(_) => {
                    tracing::warn!(session_id = %session, "releasing a lease timed out; it runs out by itself")
                }
            }
        }
        // Who owns what elsewhere, for calls that must be sent there.
        match tokio::time::timeout_at(deadline, cluster.owners())
            .await
            .unwrap_or_else(|_| {
                Err(crate::store::StoreError::Backend(
                    "reading the owners timed out".into(),
                ))
            }) {
            Ok(owners) => {
                self.owned().elsewhere = owners
                    .into_iter()
                    .filter(|(_, o)| o.node != cluster.node())
                    .map(|(s, o)| (s, elsewhere(o.node, &o.info)))
                    .collect();
            }
            Err(e) => tracing::warn!(error = %e, "reading the cluster's session owners"),
        }
        renewed
    }
}

impl Conference {
    /// What a v3 device joining `session`'s media here may hold from a previous owner
    /// (another node, or this process before a restart): its subscribing connection's
    /// kept layout when the same device (`uniqueId`) left one, and in a cluster at
    /// least `epoch << 32` as the revision to count from, so that every owner's offers
    /// are above every earlier owner's. A store that does not answer in time gives
    /// only the floor (the browser then refuses the offers: logged).
    pub async fn subscribe_prior(
        &self,
        participant: Uuid,
        device: &str,
        session: Uuid,
    ) -> Option<SubscribeLayout> {
        let floor = self
            .epoch(session)
            .map_or(0, |e| u64::try_from(e).unwrap_or(0) << 32);
        let kept = match tokio::time::timeout(LAYOUT_READ_LIMIT, self.store.layout(participant))
            .await
        {
            Ok(Ok(kept)) => kept.filter(|k| k.device_id == device),
            Ok(Err(e)) => {
                tracing::warn!(participant_id = %participant, error = %e, "reading a device's subscribing layout");
                None
            }
            Err(_) => {
                tracing::warn!(participant_id = %participant, "reading a device's subscribing layout timed out");
                None
            }
        };
        let mut prior = kept
            .and_then(|k| SubscribeLayout::decode(k.revision, &k.lines))
            .unwrap_or_default();
        prior.revision = prior.revision.max(floor);
        (prior.revision > 0 || !prior.lines.is_empty()).then_some(prior)
    }
}

/// How long a device's join waits for its kept layout.
const LAYOUT_READ_LIMIT: Duration = Duration::from_secs(2);
