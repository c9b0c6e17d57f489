//! Recordings of a session as the control plane keeps them: started and stopped
//! through the session's media core, finished by the writer's report, stored.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use super::state::snapshot;
use super::{Conference, ConferenceError, Result};
use crate::media::session::{Control, RecordFormat, RecordMode, RecordRequest, SessionInput};
use crate::recording::{self, FileReport, Manifest, Recording, RecordingReport, RecordingStatus};
use crate::store::StoreOp;

/// Limits and place of recordings.
#[derive(Debug, Clone)]
pub struct RecordingOptions {
    pub dir: PathBuf,
    /// Recordings running at once in one session.
    pub max_active_per_session: usize,
    /// Recordings kept per session (finished ones included).
    pub max_per_session: usize,
    /// Bytes over all of one recording's files before it stops by itself.
    pub max_bytes: u64,
    /// Longest recording before it stops by itself.
    pub max_duration: Duration,
    /// Finished recordings are deleted this long after they end.
    pub retention: Duration,
}

/// A request to start a recording.
#[derive(Debug, Clone)]
pub struct NewRecording {
    pub mode: RecordMode,
    pub format: RecordFormat,
    pub callback_url: Option<String>,
    /// `dual`: the participant on the first channel.
    pub participant_id: Option<Uuid>,
}

#[derive(Default)]
pub(super) struct RecordingBook {
    pub(super) by_id: HashMap<Uuid, Recording>,
    pub(super) options: Option<RecordingOptions>,
    /// Finished recordings go on to object storage (when configured).
    pub(super) uploader: Option<recording::upload::Uploader>,
}

/// Whether a recording has files (or a manifest) the object store should have and has not.
fn to_upload(r: &Recording) -> bool {
    recording::upload::pending(r)
}

impl recording::upload::UploadBook for Conference {
    fn recording(&self, id: Uuid) -> Option<Recording> {
        self.book().by_id.get(&id).cloned()
    }

    fn mark_lost(
        &self,
        id: Uuid,
        file: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        self.mark(id, |r| {
            for f in r.files.iter_mut().filter(|f| f.file == file) {
                f.lost = true;
            }
        })
    }

    fn mark_uploaded(
        &self,
        id: Uuid,
        file: Option<u32>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        self.mark(id, |r| match file {
            Some(file) => {
                for f in r.files.iter_mut().filter(|f| f.file == file) {
                    f.uploaded = true;
                }
            }
            None => r.manifest_uploaded = true,
        })
    }
}

impl Conference {
    /// Change a recording's record and store it; whether it is durable.
    fn mark(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Recording),
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        let record = {
            let mut book = self.book();
            let Some(r) = book.by_id.get_mut(&id) else {
                return Box::pin(async { false });
            };
            change(r);
            r.clone()
        };
        let write = self.store.commit(vec![StoreOp::PutRecording(record)]);
        Box::pin(async move {
            match write.await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(recording = %id, error = %e, "storing a recording's upload state");
                    false
                }
            }
        })
    }
}

impl Conference {
    pub(super) fn book(&self) -> std::sync::MutexGuard<'_, RecordingBook> {
        self.recordings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turn recordings on (under `options.dir`). Recordings a crash left running are
    /// closed as far as they got (WAV headers get their sizes) and marked
    /// `interrupted`; they are returned for their `recordingAvailable` callbacks (their
    /// records are stored before this returns).
    pub async fn enable_recordings(&self, options: RecordingOptions) -> Result<Vec<Recording>> {
        let dir = options.dir.clone();
        let stale: Vec<Recording> = {
            let mut book = self.book();
            book.options = Some(options);
            book.by_id
                .values()
                .filter(|r| r.status.is_running())
                .cloned()
                .collect()
        };
        let mut closed = Vec::new();
        for mut r in stale {
            let rdir = dir.join(r.id.to_string());
            let manifest: Option<Manifest> = std::fs::read(rdir.join("manifest.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let mut files = manifest.map(|m| m.files).unwrap_or_default();
            for f in files.iter_mut().filter(|f| !f.complete) {
                let meta = f.meta();
                let path = rdir.join(&f.name);
                let repaired = match meta.wav {
                    Some(format) => recording::writer::repair_wav(&path, &meta).map(|len| {
                        let per_ms = u64::from(meta.rate)
                            * u64::from(meta.channels)
                            * u64::from(format.bytes_per_sample())
                            / 1000;
                        (len, len.saturating_sub(44) / per_ms.max(1))
                    }),
                    None => recording::writer::repair_ogg(&path),
                };
                match repaired {
                    Ok((len, duration_ms)) => {
                        f.bytes = len;
                        f.duration_ms = duration_ms;
                    }
                    Err(e) => {
                        tracing::warn!(recording = %r.id, file = %f.name, error = %e, "an interrupted recording's file could not be closed")
                    }
                }
            }
            let stop_asked = r.status == RecordingStatus::Stopping;
            r.status = RecordingStatus::Complete;
            r.reason = Some("interrupted".into());
            if stop_asked {
                r.reason = Some("requested".into());
            } else if self.continued_elsewhere(&r).await {
                // In a cluster another node took the session's media over meanwhile:
                // the recording went on there as a new segment.
                r.reason = Some(recording::MOVED.into());
                r.manifest_uploaded = true;
            }
            r.end_ms = Some(self.now() as u64);
            r.files = files;
            self.store
                .commit(vec![StoreOp::PutRecording(r.clone())])
                .await?;
            tracing::info!(recording = %r.id, "an interrupted recording was closed");
            self.book().by_id.insert(r.id, r.clone());
            closed.push(r);
        }
        Ok(closed)
    }

    /// Send finished recordings to object storage; those the last run did not finish
    /// uploading are queued now.
    pub fn enable_uploads(&self, uploader: recording::upload::Uploader) {
        let mut book = self.book();
        for r in book.by_id.values().filter(|r| to_upload(r)) {
            uploader.enqueue(r.id);
        }
        book.uploader = Some(uploader);
    }

    /// The uploader, if recordings go to object storage.
    pub fn uploader(&self) -> Option<recording::upload::Uploader> {
        self.book().uploader.clone()
    }

    /// Delete the finished recordings whose retention ended (record, then local files);
    /// one the bucket does not have yet is kept. Returns how many went.
    pub async fn sweep_recordings(&self) -> Result<usize> {
        let now = self.now() as u64;
        let (expired, dir): (Vec<Uuid>, Option<PathBuf>) = {
            let book = self.book();
            let Some(o) = book.options.as_ref() else {
                return Ok(0);
            };
            let keep = o.retention.as_millis() as u64;
            let uploads = book.uploader.is_some();
            let expired = book
                .by_id
                .values()
                .filter(|r| !r.status.is_running())
                .filter(|r| r.end_ms.unwrap_or(r.start_ms).saturating_add(keep) <= now)
                .filter(|r| !(uploads && to_upload(r)))
                .map(|r| r.id)
                .collect();
            (expired, Some(o.dir.clone()))
        };
        if expired.is_empty() {
            return Ok(0);
        }
        self.store
            .commit(
                expired
                    .iter()
                    .map(|id| StoreOp::DeleteRecording(*id))
                    .collect(),
            )
            .await?;
        let mut book = self.book();
        for id in &expired {
            book.by_id.remove(id);
        }
        drop(book);
        if let Some(dir) = dir {
            for id in &expired {
                if let Err(e) = std::fs::remove_dir_all(dir.join(id.to_string())) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(recording = %id, error = %e, "an expired recording's files could not be deleted");
                    }
                }
            }
        }
        tracing::info!(recordings = expired.len(), "expired recordings deleted");
        Ok(expired.len())
    }

    /// Where recordings are kept, if they are on.
    pub fn recordings_dir(&self) -> Option<PathBuf> {
        self.book().options.as_ref().map(|o| o.dir.clone())
    }

    /// Start recording a session's media.
    pub async fn start_recording(
        &self,
        account_id: &str,
        session_id: Uuid,
        new: NewRecording,
    ) -> Result<Recording> {
        let options = self.book().options.clone().ok_or_else(|| {
            ConferenceError::Conflict("recordings are not enabled on this gateway".into())
        })?;
        let session = self.get_session(account_id, session_id)?;
        // In a cluster, a recording runs (and is served) where the session's media runs.
        match self.place_session(session_id).await? {
            super::Placement::Here => {}
            super::Placement::Elsewhere { node, .. } => {
                return Err(ConferenceError::Conflict(format!(
                    "the session's media runs on node {node}: recordings of it are made there"
                )))
            }
            super::Placement::Draining => {
                return Err(ConferenceError::Conflict(
                    "this node is stopping: start the recording on another node".into(),
                ))
            }
        }
        if let Some(p) = new.participant_id {
            if new.mode != RecordMode::Dual {
                return Err(ConferenceError::Invalid(
                    "participantId is only for mode \"dual\"".into(),
                ));
            }
            if !session.members.contains(&p) {
                return Err(ConferenceError::Invalid(format!(
                    "participant {p} is not in session {session_id}"
                )));
            }
        }
        let now = self.now() as u64;
        let record = Recording {
            id: Uuid::new_v4(),
            account_id: account_id.to_string(),
            session_id,
            mode: recording::mode_name(new.mode).into(),
            format: recording::format_name(new.format).into(),
            participant_id: new.participant_id,
            callback_url: new.callback_url,
            status: RecordingStatus::Recording,
            start_ms: now,
            end_ms: None,
            reason: None,
            damaged: false,
            files: Vec::new(),
            manifest_uploaded: false,
            segment: 0,
            continues: None,
            node: self.node_name(),
            segments: Vec::new(),
            running_row: None,
        };
        let durable = {
            let mut book = self.book();
            // Counted by recording (a recording continued here is one of its segments).
            let of_session = book.by_id.values().filter(|r| r.session_id == session_id);
            let (mut all, mut running) = (HashSet::new(), HashSet::new());
            for r in of_session {
                all.insert(r.recording_id());
                if r.status.is_running() {
                    running.insert(r.recording_id());
                }
            }
            let (total, active) = (all.len(), running.len());
            if active >= options.max_active_per_session {
                return Err(ConferenceError::Conflict(format!(
                    "session {session_id} already has {active} recordings running (at most {})",
                    options.max_active_per_session
                )));
            }
            if total >= options.max_per_session {
                return Err(ConferenceError::Conflict(format!(
                    "session {session_id} has {total} recordings (at most {})",
                    options.max_per_session
                )));
            }
            book.by_id.insert(record.id, record.clone());
            self.store
                .commit(vec![StoreOp::PutRecording(record.clone())])
        };
        if let Err(e) = durable.await {
            self.book().by_id.remove(&record.id);
            return Err(e.into());
        }
        let req = RecordRequest {
            id: record.id,
            mode: new.mode,
            format: new.format,
            first: new.participant_id,
            max_bytes: options.max_bytes,
            max_duration: options.max_duration,
            first_file: 0,
            offset_ms: 0,
        };
        if !self.run_in_media(record.clone(), req).await? {
            return Err(ConferenceError::Conflict(
                "the session's media is busy: try again".into(),
            ));
        }
        Ok(record)
    }

    /// Hand a recording's request to its session's media (started if it does not run
    /// here yet). When the media does not take it (busy or gone), the row is stored as
    /// failed. Whether it runs.
    pub(super) async fn run_in_media(&self, row: Recording, req: RecordRequest) -> Result<bool> {
        let session = row.session_id;
        let handle = {
            let st = self.lock();
            self.media.session(session, || snapshot(&st, session))
        };
        if handle.send(SessionInput::Core(Control::Record(req))) {
            return Ok(true);
        }
        let mut failed = row;
        failed.status = RecordingStatus::Failed;
        failed.reason = Some("the session's media did not take it".into());
        failed.end_ms = Some(self.now() as u64);
        self.store
            .commit(vec![StoreOp::PutRecording(failed.clone())])
            .await?;
        self.book().by_id.insert(failed.id, failed);
        Ok(false)
    }

    /// A recording's file, for download: where it is and what it is.
    pub fn recording_file(
        &self,
        account_id: &str,
        session_id: Uuid,
        id: Uuid,
        file: u32,
    ) -> Result<(PathBuf, FileReport)> {
        let dir = self
            .recordings_dir()
            .ok_or_else(|| super::not_found("recording", id))?;
        let missing =
            || ConferenceError::NotFound(format!("file {file} of recording {id} not found"));
        // The segment's row is this node's (requests for another node's are sent there).
        let rows: Vec<Recording> = self
            .book()
            .by_id
            .values()
            .filter(|r| r.recording_id() == id)
            .filter(|r| r.account_id == account_id && r.session_id == session_id)
            .cloned()
            .collect();
        for r in rows {
            // A running segment's files are listed by the writer's manifest.
            let files = match r.status.is_running() {
                true => self.recording_progress(r.id).map(|m| m.files),
                false => None,
            };
            if let Some(f) = files
                .unwrap_or(r.files)
                .into_iter()
                .find(|f| f.file == file)
            {
                return Ok((dir.join(r.id.to_string()).join(&f.name), f));
            }
        }
        Err(missing())
    }

    /// The writer finished a recording's segment here: its row as it is now (for the
    /// caller to store; with its callback, after [`Self::conclude_recording`], unless
    /// [`Recording::moved`]: the recording goes on where the media moved). None:
    /// unknown here.
    pub fn recording_finished(&self, report: &RecordingReport) -> Option<Recording> {
        let live = self.session_live(report.manifest.session_id);
        let mut book = self.book();
        let r = book.by_id.get_mut(&report.manifest.recording_id)?;
        r.finish(report);
        if self.segment_goes_on(r, live) {
            r.reason = Some(recording::MOVED.into());
            // Its files are listed by the manifest of the segment that ends it.
            r.manifest_uploaded = true;
        }
        let r = r.clone();
        if r.moved() {
            if let Some(u) = book.uploader.as_ref().filter(|_| to_upload(&r)) {
                u.enqueue(r.id);
            }
        }
        Some(r)
    }

    /// A file of a running recording is complete: listed in its record, and uploaded
    /// when recordings go to object storage (not stored here: the upload's mark, or the
    /// end of the recording, stores it).
    pub fn recording_file_closed(&self, id: Uuid, file: FileReport) {
        let mut book = self.book();
        let Some(r) = book.by_id.get_mut(&id) else {
            return;
        };
        r.file_closed(file);
        let due = to_upload(r);
        if let Some(u) = book.uploader.as_ref().filter(|_| due) {
            u.enqueue(id);
        }
    }

    /// The files of a running recording as far as the writer got (the manifest).
    pub fn recording_progress(&self, id: Uuid) -> Option<Manifest> {
        let dir = self.recordings_dir()?;
        std::fs::read(dir.join(id.to_string()).join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
}
