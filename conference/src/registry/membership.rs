//! Membership and subscriptions: adding a participant to a session (under the
//! 20-member limit, kept across cluster nodes by the store), removing it, reading and
//! replacing its subscriptions. Each change reaches the session's media and the
//! account's change announcements once durable.

use super::*;

impl Conference {
    /// Add a participant to a session (idempotent: adding a member again replaces
    /// its subscriptions). `subscriptions: None` means membership only.
    pub async fn add_participant_to_session(
        &self,
        account_id: &str,
        session_id: Uuid,
        participant_id: Uuid,
        subscriptions: Option<Subscriptions>,
    ) -> Result<()> {
        let durable = {
            let mut st = self.lock();
            let s = session(&st, account_id, session_id, self.now())?;
            let p = participant(&st, account_id, participant_id)?;
            match p.session_id {
                Some(other) if other != session_id => {
                    return Err(ConferenceError::Conflict(format!(
                        "participant {participant_id} is already in session {other}; a participant is in at most one session"
                    )))
                }
                Some(_) => {}
                None if s.members.len() >= MAX_PARTICIPANTS_PER_SESSION => {
                    return Err(ConferenceError::Conflict(format!(
                        "session {session_id} already has the maximum of {MAX_PARTICIPANTS_PER_SESSION} participants"
                    )))
                }
                None => {}
            }
            let subscriptions = subscriptions.unwrap_or_default();
            check_subscriptions(&st, s, &subscriptions)?;
            let already_member = p.session_id.is_some();

            let seq = st.next_seq;
            st.next_seq += 1;
            if !already_member {
                if let Some(s) = st.sessions.get_mut(&session_id) {
                    s.members.push(participant_id);
                }
            }
            if let Some(p) = st.participants.get_mut(&participant_id) {
                p.session_id = Some(session_id);
                p.subscriptions = subscriptions.clone();
            }
            self.notify_media(&st, session_id);
            if !already_member {
                // Its parked calls and devices move here.
                self.media.recheck(participant_id);
            }
            let op = if already_member {
                StoreOp::SetSubscriptions {
                    participant_id,
                    subscriptions,
                }
            } else {
                StoreOp::PutMembership {
                    participant_id,
                    session_id,
                    joined_seq: seq,
                    subscriptions,
                }
            };
            let mut unit = vec![op];
            if !already_member {
                // The check above saw this node's memory; the store's sees every node's.
                unit.push(StoreOp::LimitMembers {
                    session_id,
                    max: MAX_PARTICIPANTS_PER_SESSION,
                });
            }
            (self.store.commit(unit), already_member)
        };
        match durable.0.await {
            Ok(()) => {
                let id = Some(session_id);
                self.changed(account_id, ChangeKind::Participant, participant_id, id);
                Ok(())
            }
            Err(StoreError::Full) => {
                // Another node added the last member first: this one is not a member.
                if !durable.1 {
                    let mut st = self.lock();
                    if let Some(s) = st.sessions.get_mut(&session_id) {
                        s.members.retain(|m| *m != participant_id);
                    }
                    if let Some(p) = st.participants.get_mut(&participant_id) {
                        p.session_id = None;
                        p.subscriptions = Subscriptions::default();
                    }
                    self.notify_media(&st, session_id);
                }
                Err(ConferenceError::Conflict(format!(
                    "session {session_id} already has the maximum of {MAX_PARTICIPANTS_PER_SESSION} participants"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Remove a participant from a session; its subscriptions go (other members'
    /// subscriptions naming it stay). Its calls and devices stay connected, parked.
    pub async fn remove_participant_from_session(
        &self,
        account_id: &str,
        session_id: Uuid,
        participant_id: Uuid,
    ) -> Result<()> {
        let durable = {
            let mut st = self.lock();
            member(&st, account_id, session_id, participant_id, self.now())?;
            let mut unit = Vec::new();
            leave_session(&mut st, session_id, participant_id, &mut unit);
            self.notify_media(&st, session_id);
            self.store.commit(unit)
        };
        durable.await?;
        let id = Some(session_id);
        self.changed(account_id, ChangeKind::Participant, participant_id, id);
        Ok(())
    }

    pub fn get_subscriptions(
        &self,
        account_id: &str,
        session_id: Uuid,
        participant_id: Uuid,
    ) -> Result<Subscriptions> {
        let st = self.lock();
        Ok(
            member(&st, account_id, session_id, participant_id, self.now())?
                .subscriptions
                .clone(),
        )
    }

    /// Replace a member's subscriptions (`None`: remove them all).
    pub async fn update_subscriptions(
        &self,
        account_id: &str,
        session_id: Uuid,
        participant_id: Uuid,
        subscriptions: Option<Subscriptions>,
    ) -> Result<()> {
        let durable = {
            let mut st = self.lock();
            member(&st, account_id, session_id, participant_id, self.now())?;
            let subscriptions = subscriptions.unwrap_or_default();
            if let Some(s) = st.sessions.get(&session_id) {
                check_subscriptions(&st, s, &subscriptions)?;
            }
            if let Some(p) = st.participants.get_mut(&participant_id) {
                p.subscriptions = subscriptions.clone();
            }
            self.notify_media(&st, session_id);
            self.store.commit(vec![StoreOp::SetSubscriptions {
                participant_id,
                subscriptions,
            }])
        };
        durable.await?;
        let id = Some(session_id);
        self.changed(account_id, ChangeKind::Participant, participant_id, id);
        Ok(())
    }
}
