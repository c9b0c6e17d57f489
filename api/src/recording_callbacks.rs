//! `recordingAvailable`: a finished recording's record is stored with its callback
//! (through the outbox, signed like every callback), or alone when it has none. Its
//! files are listed in the REST shape (`RecordingBody`), so it is shaped here.

use serde_json::{json, Map, Value};

use patchbay_conference::recording::{rfc3339_ms, Recording, RecordingReport, RecordingReports};
use patchbay_conference::store::StoreOp;

use crate::recordings::RecordingBody;
use crate::webhooks::{NewEvent, Webhooks};

/// The body of `recordingAvailable` (the names of Bandwidth Voice's callback where it
/// has one: `recordingId`, `status`, `startTime`, `endTime`, `duration` as ISO 8601,
/// `fileFormat`; each file with its `mediaUrl`, a path of this API).
pub fn recording_body(r: &Recording, at_ms: u64) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("event".into(), json!("recordingAvailable"));
    body.insert("eventType".into(), json!("recordingAvailable"));
    body.insert("timestamp".into(), json!(at_ms.to_string()));
    body.insert("eventTime".into(), json!(rfc3339_ms(at_ms)));
    body.insert("accountId".into(), json!(r.account_id));
    body.insert("sessionId".into(), json!(r.session_id.to_string()));
    body.insert("recordingId".into(), json!(r.id.to_string()));
    body.insert("mode".into(), json!(r.mode));
    body.insert("fileFormat".into(), json!(r.format));
    body.insert("status".into(), json!(r.status.as_str()));
    body.insert("startTime".into(), json!(rfc3339_ms(r.start_ms)));
    if let Some(end) = r.end_ms {
        body.insert("endTime".into(), json!(rfc3339_ms(end)));
        let ms = end.saturating_sub(r.start_ms);
        body.insert(
            "duration".into(),
            json!(format!("PT{}.{:03}S", ms / 1000, ms % 1000)),
        );
    }
    if let Some(reason) = &r.reason {
        body.insert("reason".into(), json!(reason));
    }
    body.insert("damaged".into(), json!(r.damaged));
    let files = RecordingBody::of(r, &r.files).files;
    body.insert(
        "files".into(),
        serde_json::to_value(files).unwrap_or(Value::Array(Vec::new())),
    );
    body
}

/// The recording writer's reports, and the recordings a restart found interrupted,
/// become stored records and callbacks.
#[derive(Clone)]
pub struct RecordingCallbacks(pub Webhooks);

impl RecordingCallbacks {
    /// Store a finished segment's row. When it ends the recording (not `moved`: the
    /// recording goes on where the session's media moved), the recording's callback
    /// goes with it when it has a URL, showing every segment's files.
    pub fn recording_done(&self, r: Recording) {
        let op = StoreOp::PutRecording(r.clone());
        let url = r.callback_url.clone().filter(|_| !r.moved());
        let me = self.0.clone();
        self.0.runtime().spawn(async move {
            let view = if r.moved() {
                r.clone()
            } else {
                me.conference().conclude_recording(&r).await
            };
            match url {
                Some(url) => {
                    let at_ms = view.end_ms.unwrap_or(view.start_ms);
                    me.send(NewEvent {
                        // A recording's callbacks are ordered among themselves.
                        participant_id: view.id,
                        url,
                        body: recording_body(&view, at_ms),
                        track: Some(op),
                        fence: None,
                    });
                }
                None => {
                    if let Err(e) = me.conference().commit(vec![op]).await {
                        tracing::warn!(error = %e, "storing a finished recording");
                    }
                }
            }
        });
    }
}

/// The writer's reports (from its thread) become stored records and callbacks.
impl RecordingReports for RecordingCallbacks {
    fn file_closed(&self, recording: uuid::Uuid, file: patchbay_conference::recording::FileReport) {
        self.0.conference().recording_file_closed(recording, file);
    }

    fn finished(&self, report: RecordingReport) {
        let id = report.manifest.recording_id;
        match self.0.conference().recording_finished(&report) {
            Some(r) => {
                tracing::info!(recording = %id, status = r.status.as_str(), files = r.files.len(), "recording finished");
                self.recording_done(r);
            }
            None => {
                tracing::warn!(recording = %id, "a recording finished that the control plane does not know")
            }
        }
    }
}
