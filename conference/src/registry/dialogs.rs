//! Dialogs (outbound calls placed for participants): their book, their states as
//! the SIP side reports them, and their durable records.

use super::*;

pub(super) fn dialog_from_record(r: &DialogRecord) -> Option<Dialog> {
    Some(Dialog {
        id: r.id,
        account_id: r.account_id.clone(),
        participant_id: r.participant_id,
        state: DialogState::parse(&r.state)?,
        data: serde_json::from_str(&r.data).ok()?,
        reason: r.reason.clone(),
        details: r.details.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

fn dialog_record(d: &Dialog) -> DialogRecord {
    DialogRecord {
        id: d.id,
        account_id: d.account_id.clone(),
        participant_id: d.participant_id,
        state: d.state.as_str().to_string(),
        data: serde_json::to_string(&d.data).unwrap_or_default(),
        reason: d.reason.clone(),
        details: d.details.clone(),
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

impl Conference {
    fn dialogs_lock(&self) -> MutexGuard<'_, DialogBook> {
        self.dialog_book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where dialogs' calls go (the SIP side, when a trunk is configured).
    pub fn set_dialer(&self, dialer: tokio::sync::mpsc::UnboundedSender<DialCommand>) {
        self.dialogs_lock().dialer = Some(dialer);
    }

    /// Dialogs left live by the last run have no call any more: end them (reported).
    pub fn recover_dialogs(&self) {
        let live: Vec<Uuid> = self
            .dialogs_lock()
            .by_id
            .values()
            .filter(|d| d.is_live())
            .map(|d| d.id)
            .collect();
        self.end_orphaned_dialogs(live, "the gateway restarted during the call");
    }

    /// Dialogs a stopped node of the cluster placed (taken over by this one): their
    /// calls are gone with that node; end them (reported).
    pub fn adopt_dialogs(&self, records: Vec<DialogRecord>) {
        let mut live = Vec::new();
        {
            let mut book = self.dialogs_lock();
            for d in records.iter().filter_map(dialog_from_record) {
                if d.is_live() {
                    live.push(d.id);
                }
                book.by_id.insert(d.id, d);
            }
        }
        self.end_orphaned_dialogs(live, "the cluster node that placed the call stopped");
    }

    fn end_orphaned_dialogs(&self, live: Vec<Uuid>, why: &str) {
        for id in &live {
            let participant_id = self.dialogs_lock().by_id.get(id).map(|d| d.participant_id);
            let owner = participant_id
                .and_then(|p| {
                    self.lock()
                        .participants
                        .get(&p)
                        .map(|p| (p.callback_url.clone(), p.tag.clone()))
                })
                .unwrap_or_default();
            self.dialogs_lock().owners.insert(*id, owner);
        }
        for id in live {
            self.dialog_progress(
                id,
                DialogState::Terminated,
                Some("ERROR".into()),
                Some(why.into()),
            );
        }
    }

    /// Place a call for a participant (`session`: the session the request named, if any).
    pub async fn create_dialog(
        &self,
        account_id: &str,
        participant_id: Uuid,
        session: Option<Uuid>,
        data: DialogData,
    ) -> Result<Dialog> {
        self.new_dialog(account_id, participant_id, session, data, false)
            .await
    }

    /// A participant's call asked to be transferred (an accepted REFER): its dialog to
    /// the target, reported like any other. The participant may still have a live
    /// dialog (the call being transferred may be one): the new call's answer replaces it.
    pub async fn transfer_dialog(&self, participant_id: Uuid, data: DialogData) -> Result<Dialog> {
        let account_id = self
            .participant(participant_id)
            .map(|p| p.account_id)
            .ok_or_else(|| not_found("participant", participant_id))?;
        self.new_dialog(&account_id, participant_id, None, data, true)
            .await
    }

    async fn new_dialog(
        &self,
        account_id: &str,
        participant_id: Uuid,
        session: Option<Uuid>,
        data: DialogData,
        transfer: bool,
    ) -> Result<Dialog> {
        data.validate().map_err(ConferenceError::Invalid)?;
        let p = self.get_participant(account_id, participant_id)?;
        if self.dialogs_lock().dialer.is_none() {
            return Err(ConferenceError::Conflict(
                "no SIP trunk is configured (sip_trunk): dialogs cannot be placed".into(),
            ));
        }
        if let Some(s) = session {
            self.get_session(account_id, s)?;
            if p.session_id != Some(s) {
                return Err(ConferenceError::NotFound(format!(
                    "participant {participant_id} is not in session {s}"
                )));
            }
        }
        if !p.may_publish(PublishPermission::Audio) {
            return Err(ConferenceError::Conflict(format!(
                "participant {participant_id} may not publish AUDIO: a dialog needs it"
            )));
        }
        if p.session_id.is_none() {
            return Err(ConferenceError::Conflict(format!(
                "participant {participant_id} is not in a session: add it to one before dialing"
            )));
        }
        let now = self.now();
        let (d, unit, dialer) = {
            let mut book = self.dialogs_lock();
            let Some(dialer) = book.dialer.clone() else {
                return Err(ConferenceError::Conflict(
                    "no SIP trunk is configured (sip_trunk): dialogs cannot be placed".into(),
                ));
            };
            if let Some(live) = book
                .by_id
                .values()
                .filter(|_| !transfer)
                .find(|d| d.participant_id == participant_id && d.is_live())
            {
                return Err(ConferenceError::Conflict(format!(
                    "participant {participant_id} already has a live dialog ({})",
                    live.id
                )));
            }
            let d = Dialog {
                id: Uuid::new_v4(),
                account_id: account_id.to_string(),
                participant_id,
                state: DialogState::New,
                data,
                reason: None,
                details: None,
                created_at: now,
                updated_at: now,
            };
            book.by_id.insert(d.id, d.clone());
            book.owners
                .insert(d.id, (p.callback_url.clone(), p.tag.clone()));
            let unit = self
                .store
                .commit(vec![StoreOp::PutDialog(dialog_record(&d))]);
            (d, unit, dialer)
        };
        unit.await?;
        tracing::info!(dialog_id = %d.id, %participant_id, to = %d.data.to, "dialog created");
        self.changed(account_id, super::ChangeKind::Dialog, d.id, p.session_id);
        let _ = dialer.send(DialCommand::Place {
            dialog_id: d.id,
            participant_id,
            data: d.data.clone(),
        });
        Ok(d)
    }

    /// A participant's dialogs known to this node, newest first (the live one first).
    pub fn list_dialogs(&self, account_id: &str, participant_id: Uuid) -> Vec<Dialog> {
        let mut list: Vec<Dialog> = self
            .dialogs_lock()
            .by_id
            .values()
            .filter(|d| d.account_id == account_id && d.participant_id == participant_id)
            .cloned()
            .collect();
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        list
    }

    /// A participant's dialog.
    pub fn get_dialog(&self, account_id: &str, participant_id: Uuid, id: Uuid) -> Result<Dialog> {
        self.dialogs_lock()
            .by_id
            .get(&id)
            .filter(|d| d.account_id == account_id && d.participant_id == participant_id)
            .cloned()
            .ok_or_else(|| not_found("dialog", id))
    }

    /// A participant's dialog, from this node's book or, in a cluster, as another node
    /// stored it (a dialog is placed and driven by one node; any node can read it).
    pub async fn find_dialog(
        &self,
        account_id: &str,
        participant_id: Uuid,
        id: Uuid,
    ) -> Result<Dialog> {
        match (
            self.get_dialog(account_id, participant_id, id),
            &self.cluster,
        ) {
            (Err(ConferenceError::NotFound(_)), Some(cluster)) => cluster
                .dialog(id)
                .await?
                .and_then(|(r, _)| dialog_from_record(&r))
                .filter(|d| d.account_id == account_id && d.participant_id == participant_id)
                .ok_or_else(|| not_found("dialog", id)),
            (r, _) => r,
        }
    }

    /// In a cluster, where a new dialog of `participant_id` must be placed: on the node
    /// that runs its session's media (this one takes the session when no live node
    /// holds it), so that the call joins that media. Anything else (no session, unknown
    /// participant): here, where `create_dialog` answers the error.
    pub async fn dialog_placement(
        &self,
        account_id: &str,
        participant_id: Uuid,
    ) -> Result<super::Placement> {
        let session = self
            .get_participant(account_id, participant_id)
            .ok()
            .and_then(|p| p.session_id);
        match (&self.cluster, session) {
            (Some(_), Some(s)) if self.is_draining() && !self.media.has(s) => {
                Ok(super::Placement::Draining)
            }
            (Some(_), Some(s)) => self.place_session(s).await,
            _ => Ok(super::Placement::Here),
        }
    }

    /// In a cluster, the live node that placed a dialog this node does not drive (its
    /// `PATCH`/`DELETE` go there); `None`: this node answers.
    pub async fn dialog_home(
        &self,
        account_id: &str,
        participant_id: Uuid,
        id: Uuid,
    ) -> Result<Option<super::Placement>> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        if self.get_dialog(account_id, participant_id, id).is_ok() {
            return Ok(None);
        }
        let Some((record, node)) = cluster.dialog(id).await? else {
            return Ok(None);
        };
        if record.account_id != account_id || record.participant_id != participant_id {
            return Ok(None);
        }
        let nodes = cluster.nodes(self.lease).await?;
        Ok(nodes
            .into_iter()
            .find(|n| n.id == node && n.id != cluster.node())
            .map(|n| super::owners::elsewhere(n.id, &n.info)))
    }

    /// End a dialog (CANCEL or BYE on the SIP side); it is `TERMINATED` at once.
    pub async fn hang_up_dialog(
        &self,
        account_id: &str,
        participant_id: Uuid,
        id: Uuid,
    ) -> Result<Dialog> {
        let d = self.get_dialog(account_id, participant_id, id)?;
        if d.is_live() {
            let dialer = self.dialogs_lock().dialer.clone();
            if let Some(dialer) = dialer {
                let _ = dialer.send(DialCommand::Hangup { dialog_id: id });
            }
            self.dialog_progress(
                id,
                DialogState::Terminated,
                None,
                Some("hung up through the API".into()),
            );
        }
        self.get_dialog(account_id, participant_id, id)
    }

    /// End the live dialogs of these participants (CANCEL or BYE), reported `TERMINATED`.
    pub(super) fn end_dialogs_of(&self, participants: &[Uuid], why: &str) {
        let (live, dialer): (Vec<Uuid>, _) = {
            let book = self.dialogs_lock();
            (
                book.by_id
                    .values()
                    .filter(|d| d.is_live() && participants.contains(&d.participant_id))
                    .map(|d| d.id)
                    .collect(),
                book.dialer.clone(),
            )
        };
        for id in live {
            if let Some(d) = &dialer {
                let _ = d.send(DialCommand::Hangup { dialog_id: id });
            }
            self.dialog_progress(id, DialogState::Terminated, None, Some(why.to_string()));
        }
    }

    /// The SIP side reports a dialog's progress. Transitions that do not go forward
    /// are ignored, so each state is reported once and in order. Returns whether it
    /// took effect.
    pub fn dialog_progress(
        &self,
        id: Uuid,
        state: DialogState,
        reason: Option<String>,
        details: Option<String>,
    ) -> bool {
        let now = self.now();
        let mut book = self.dialogs_lock();
        let Some(d) = book
            .by_id
            .get_mut(&id)
            .filter(|d| d.state.may_become(state))
        else {
            return false;
        };
        d.state = state;
        d.reason = reason;
        d.details = details;
        d.updated_at = now;
        let d = d.clone();
        // Enqueued under the lock: the store and the callbacks see transitions in order.
        drop(
            self.store
                .commit(vec![StoreOp::PutDialog(dialog_record(&d))]),
        );
        tracing::info!(dialog_id = %id, state = state.as_str(), reason = d.reason.as_deref(), details = d.details.as_deref(), "dialog state");
        self.changed(&d.account_id, super::ChangeKind::Dialog, id, None);
        let (callback_url, tag) = if state == DialogState::Terminated {
            book.owners.remove(&id)
        } else {
            book.owners.get(&id).cloned()
        }
        .unwrap_or_default();
        self.media.event_sink().dialog_event(DialogEvent {
            callback_url,
            tag,
            dialog: d,
            at_ms: now.max(0) as u64,
        });
        drop(book);
        true
    }

    /// A dialog's participant and its session's media actor (the lobby's when it is in
    /// none), once the call is answered.
    pub fn dialog_media(
        &self,
        participant_id: Uuid,
    ) -> std::result::Result<(Participant, SessionHandle), JoinError> {
        let st = self.lock();
        let p = st
            .participants
            .get(&participant_id)
            .ok_or_else(|| TokenError::Invalid("participant no longer exists".into()))?;
        if !p.may_publish(PublishPermission::Audio) {
            return Err(JoinError::NoAudioPermission(p.id));
        }
        let handle = match p.session_id {
            Some(sid) => self.media.session(sid, || snapshot(&st, sid)),
            // Removed from its session while it rang: parked like any call.
            None => self.media.lobby(),
        };
        Ok((p.clone(), handle))
    }
}
