//! A recording across the nodes of a cluster. A recording runs where the session's
//! media runs; when the media moves (a draining node hands its sessions over, a lease
//! is lost, a node dies), the segment recorded there ends (`moved`) and the node that
//! takes the session over goes on with the next segment, under a row of its own: each
//! node writes only its own rows, so no two nodes ever write one row. The API's view
//! of a recording merges its rows ([`Recording::merge`]); requests for what another
//! live node holds (a segment's file, stopping its running segment) are sent there.

use std::collections::HashMap;

use uuid::Uuid;

use super::{Conference, ConferenceError, Placement, Result};
use crate::media::session::{Control, RecordRequest, SessionInput};
use crate::recording::{self, Recording, RecordingStatus, FILES_PER_SEGMENT, MOVED};
use crate::store::StoreOp;

/// Where a request about a recording is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingHome {
    /// On this node.
    Here,
    /// On another live node (send the request there).
    Elsewhere(Placement),
}

impl Conference {
    /// This node's name in the cluster (None: one gateway).
    pub(super) fn node_name(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.node().to_string())
    }

    /// Every row of `session`'s recordings: this node's as it has them, the others'
    /// as stored.
    async fn recording_rows(&self, session: Uuid) -> Result<Vec<Recording>> {
        let mine: HashMap<Uuid, Recording> = self
            .book()
            .by_id
            .values()
            .filter(|r| r.session_id == session)
            .map(|r| (r.id, r.clone()))
            .collect();
        let Some(cluster) = &self.cluster else {
            return Ok(mine.into_values().collect());
        };
        let stored = cluster.session_recordings(session).await?;
        let mut rows: Vec<Recording> = stored
            .into_iter()
            .filter(|r| !mine.contains_key(&r.id))
            .collect();
        rows.extend(mine.into_values());
        Ok(rows)
    }

    pub(super) fn session_live(&self, session: Uuid) -> bool {
        self.lock().sessions.contains_key(&session)
    }

    /// The recordings of a session as the API shows them (segments merged), oldest
    /// first.
    pub async fn list_recordings(
        &self,
        account_id: &str,
        session_id: Uuid,
    ) -> Result<Vec<Recording>> {
        let mut groups: HashMap<Uuid, Vec<Recording>> = HashMap::new();
        for r in self.recording_rows(session_id).await? {
            if r.account_id == account_id {
                groups.entry(r.recording_id()).or_default().push(r);
            }
        }
        if groups.is_empty() {
            // No recording: the answer is the session's (404 unless it exists).
            self.get_session(account_id, session_id)?;
        }
        let live = self.session_live(session_id);
        let mut out: Vec<Recording> = groups
            .into_values()
            .filter_map(|rows| Recording::merge(rows, live))
            .collect();
        out.sort_by_key(|r| (r.start_ms, r.id));
        Ok(out)
    }

    /// One recording as the API shows it, with its rows.
    async fn recording_with_rows(
        &self,
        account_id: &str,
        session_id: Uuid,
        id: Uuid,
    ) -> Result<(Recording, Vec<Recording>)> {
        let rows: Vec<Recording> = self
            .recording_rows(session_id)
            .await?
            .into_iter()
            .filter(|r| r.recording_id() == id && r.account_id == account_id)
            .collect();
        let view = Recording::merge(rows.clone(), self.session_live(session_id))
            .ok_or_else(|| super::not_found("recording", id))?;
        Ok((view, rows))
    }

    pub async fn get_recording(
        &self,
        account_id: &str,
        session_id: Uuid,
        id: Uuid,
    ) -> Result<Recording> {
        Ok(self
            .recording_with_rows(account_id, session_id, id)
            .await?
            .0)
    }

    /// Where a request about recording `id` (its file `file`, or stopping it) is
    /// answered: here, or on the live node that holds that segment.
    pub async fn recording_home(
        &self,
        account_id: &str,
        session_id: Uuid,
        id: Uuid,
        file: Option<u32>,
    ) -> Result<RecordingHome> {
        let Some(cluster) = &self.cluster else {
            return Ok(RecordingHome::Here);
        };
        let (_, rows) = self.recording_with_rows(account_id, session_id, id).await?;
        let row = match file {
            Some(f) => rows
                .iter()
                .find(|r| r.segment == f / FILES_PER_SEGMENT)
                .ok_or_else(|| {
                    ConferenceError::NotFound(format!("file {f} of recording {id} not found"))
                })?,
            None => rows
                .iter()
                .max_by_key(|r| r.segment)
                .ok_or_else(|| super::not_found("recording", id))?,
        };
        let node = match &row.node {
            Some(n) if n != cluster.node() => n.clone(),
            _ => return Ok(RecordingHome::Here),
        };
        if self.book().by_id.contains_key(&row.id) {
            return Ok(RecordingHome::Here);
        }
        if file.is_none() && !row.status.is_running() {
            // Nothing runs there to stop.
            return Ok(RecordingHome::Here);
        }
        let nodes = cluster.nodes(self.lease).await?;
        match nodes.into_iter().find(|n| n.id == node) {
            Some(n) => Ok(RecordingHome::Elsewhere(super::owners::elsewhere(
                n.id, &n.info,
            ))),
            None if file.is_some() => Err(ConferenceError::Conflict(format!(
                "this file of recording {id} is kept by node {node}, which is not running"
            ))),
            None => Ok(RecordingHome::Here),
        }
    }

    /// Stop a recording (its files close; `recordingAvailable` follows). Stopping one
    /// that has stopped changes nothing. In a cluster, [`Self::recording_home`] says
    /// first where the running segment is; here a segment waiting to go on elsewhere
    /// ends the recording, and one of a node that stopped is marked for that node to
    /// close when it starts again.
    pub async fn stop_recording(&self, account_id: &str, session_id: Uuid, id: Uuid) -> Result<()> {
        let (view, rows) = self.recording_with_rows(account_id, session_id, id).await?;
        if view.status != RecordingStatus::Recording {
            return Ok(());
        }
        let Some(last) = rows.into_iter().max_by_key(|r| r.segment) else {
            return Ok(());
        };
        if self.book().by_id.contains_key(&last.id) && last.status.is_running() {
            return self.stop_here(session_id, last).await;
        }
        let mut last = last;
        if last.moved() {
            last.reason = Some("requested".into());
        } else {
            last.status = RecordingStatus::Stopping;
        }
        self.store
            .commit(vec![StoreOp::PutRecording(last.clone())])
            .await?;
        if let Some(b) = self.book().by_id.get_mut(&last.id) {
            *b = last;
        }
        Ok(())
    }

    /// A segment this node runs: stop it in the session's media.
    async fn stop_here(&self, session_id: Uuid, mut r: Recording) -> Result<()> {
        let id = r.id;
        r.status = RecordingStatus::Stopping;
        self.store
            .commit(vec![StoreOp::PutRecording(r.clone())])
            .await?;
        {
            let mut book = self.book();
            if let Some(b) = book.by_id.get_mut(&id) {
                // The writer may have finished it meanwhile (limit, session end).
                if b.status == RecordingStatus::Recording {
                    b.status = RecordingStatus::Stopping;
                }
            }
        }
        match self.media.running(session_id) {
            Some(h) => {
                if !h.send(SessionInput::Core(Control::StopRecording(id))) {
                    return Err(ConferenceError::Conflict(
                        "the session's media is busy: try again".into(),
                    ));
                }
            }
            None => {
                tracing::warn!(recording = %id, "stopping a recording whose session media is not running")
            }
        }
        Ok(())
    }

    /// This node took `session`'s media over: recordings whose last segment ended
    /// because the media moved (or whose node stopped while recording: it cannot run
    /// the media any more, this node holds the lease) go on here as a new segment.
    pub(super) async fn resume_recordings(&self, session: Uuid) -> Result<usize> {
        let Some(cluster) = &self.cluster else {
            return Ok(0);
        };
        let Some(options) = self.book().options.clone() else {
            return Ok(0);
        };
        if !self.session_live(session) || self.is_draining() {
            return Ok(0);
        }
        let me = cluster.node().to_string();
        let mut groups: HashMap<Uuid, Vec<Recording>> = HashMap::new();
        for r in self.recording_rows(session).await? {
            groups.entry(r.recording_id()).or_default().push(r);
        }
        let now = self.now() as u64;
        let mut resumed = 0;
        for (id, rows) in groups {
            let Some(last) = rows.iter().max_by_key(|r| r.segment) else {
                continue;
            };
            let stopped_elsewhere = last.status == RecordingStatus::Recording
                && last.node.as_deref().is_some_and(|n| n != me);
            if !(last.moved() || stopped_elsewhere) {
                continue;
            }
            let Some(first) = rows.iter().min_by_key(|r| r.segment) else {
                continue;
            };
            let elapsed = now.saturating_sub(first.start_ms);
            let max_ms = options.max_duration.as_millis() as u64;
            let bytes: u64 = rows.iter().flat_map(|r| &r.files).map(|f| f.bytes).sum();
            if elapsed >= max_ms || bytes >= options.max_bytes {
                continue;
            }
            let segment = last.segment + 1;
            let row = Recording {
                id: Uuid::new_v4(),
                status: RecordingStatus::Recording,
                start_ms: now,
                end_ms: None,
                reason: None,
                damaged: false,
                files: Vec::new(),
                manifest_uploaded: false,
                segment,
                continues: Some(id),
                node: Some(me.clone()),
                segments: Vec::new(),
                running_row: None,
                ..first.clone()
            };
            let Some(mode) = recording::parse_mode(&row.mode) else {
                continue;
            };
            let Some(format) = recording::parse_format(&row.format) else {
                continue;
            };
            {
                let book = self.book();
                if book
                    .by_id
                    .values()
                    .any(|r| r.continues == Some(id) && r.segment >= segment)
                {
                    continue;
                }
            }
            self.store
                .commit(vec![StoreOp::PutRecording(row.clone())])
                .await?;
            self.book().by_id.insert(row.id, row.clone());
            let req = RecordRequest {
                id: row.id,
                mode,
                format,
                first: row.participant_id,
                max_bytes: options.max_bytes - bytes,
                max_duration: options.max_duration - std::time::Duration::from_millis(elapsed),
                first_file: segment.saturating_mul(FILES_PER_SEGMENT),
                offset_ms: elapsed,
            };
            if self.run_in_media(row, req).await? {
                tracing::info!(recording = %id, segment, session_id = %session, "recording goes on here as a new segment");
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// A segment's end that does not end the recording: in a cluster, one that ended
    /// because the media left this node (moved, the node stopping, a lost lease) while
    /// the session goes on.
    pub(super) fn segment_goes_on(&self, r: &Recording, session_live: bool) -> bool {
        self.cluster.is_some()
            && matches!(r.reason.as_deref(), Some(MOVED) | Some("shutdown"))
            && session_live
    }

    /// Whether a later segment of `r`'s recording exists (another node went on with it).
    pub(super) async fn continued_elsewhere(&self, r: &Recording) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        match cluster.session_recordings(r.session_id).await {
            Ok(rows) => rows
                .iter()
                .any(|o| o.recording_id() == r.recording_id() && o.segment > r.segment),
            Err(e) => {
                tracing::warn!(recording = %r.id, error = %e, "reading a recording's other segments");
                false
            }
        }
    }

    /// A recording ended (its last segment here): the view the callback shows, with
    /// every segment's files; when it has several, the manifest written beside this
    /// segment's files lists them all (and goes to the bucket).
    pub async fn conclude_recording(&self, row: &Recording) -> Recording {
        let rows = match self.recording_rows(row.session_id).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(recording = %row.id, error = %e, "reading a recording's other segments");
                vec![row.clone()]
            }
        };
        let mut rows: Vec<Recording> = rows
            .into_iter()
            .filter(|r| r.recording_id() == row.recording_id() && r.id != row.id)
            .collect();
        rows.push(row.clone());
        let view = Recording::merge(rows, false).unwrap_or_else(|| row.clone());
        if !view.segments.is_empty() {
            if let Some(dir) = self.recordings_dir() {
                let path = dir.join(row.id.to_string()).join("manifest.json");
                let written = serde_json::to_vec_pretty(&view.manifest())
                    .map_err(std::io::Error::other)
                    .and_then(|b| std::fs::write(&path, b));
                if let Err(e) = written {
                    tracing::warn!(recording = %row.id, error = %e, "writing a recording's manifest");
                }
            }
        }
        if let Some(u) = self.uploader() {
            if recording::upload::pending(row) {
                u.enqueue(row.id);
            }
        }
        view
    }
}
