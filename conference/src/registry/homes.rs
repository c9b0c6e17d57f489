//! Where a participant's media belongs (asked by the media hub whenever a participant's
//! calls and devices leave a core): its session's media on this node, the lobby (it is
//! in no session: parked), another node (a cluster: the session is placed there), or
//! nowhere (the participant was deleted).
//!
//! In a cluster the session a parked call moves to is placed by the rule every media
//! join follows: a session no node runs is taken by the node that asks (this one, where
//! the call is); one another node runs stays there, and the call stays parked here (a
//! live call never changes node), while devices are told to connect again and are
//! relayed to that node.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use uuid::Uuid;

use super::{snapshot, Conference, Placement};
use crate::media::session::{Home, Homes};

struct HomesOf(Weak<Conference>);

impl Homes for HomesOf {
    fn home(&self, participant_id: Uuid) -> Pin<Box<dyn Future<Output = Home> + Send>> {
        let conference = self.0.upgrade();
        Box::pin(async move {
            match conference {
                Some(c) => c.home_of(participant_id).await,
                None => Home::Gone,
            }
        })
    }
}

impl Conference {
    /// Let the media ask this control plane where a participant's media belongs.
    pub fn route_media(self: &Arc<Self>) {
        self.media
            .set_homes(Arc::new(HomesOf(Arc::downgrade(self))));
    }

    async fn home_of(&self, participant_id: Uuid) -> Home {
        let session = match self.lock().participants.get(&participant_id) {
            None => return Home::Gone,
            Some(p) => p.session_id,
        };
        let Some(session) = session else {
            return Home::Lobby;
        };
        if self.cluster.is_some() {
            if self.is_draining() && !self.media.has(session) {
                return Home::Elsewhere;
            }
            match self.place_session(session).await {
                Ok(Placement::Here) => {}
                Ok(_) => return Home::Elsewhere,
                Err(e) => {
                    tracing::warn!(session_id = %session, %participant_id, error = %e, "placing a moving participant's session failed; its media stays parked");
                    return Home::Lobby;
                }
            }
        }
        let st = self.lock();
        match st.participants.get(&participant_id) {
            Some(p) if p.session_id == Some(session) => {
                Home::Session(session, snapshot(&st, session))
            }
            // It moved on meanwhile: that change rechecks the lobby.
            Some(_) => Home::Lobby,
            None => Home::Gone,
        }
    }
}
