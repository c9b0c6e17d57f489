//! Recordings of a session: the record the control plane keeps (and stores), the
//! manifest written next to the files, and the writer that owns the files. The
//! recorders themselves live in the session core (`media::session::recorder`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::media::session::{FileMeta, RecordFormat, RecordMode};

pub mod upload;
pub mod writer;

pub use writer::{RecordingReports, RecordingWriter, WriterStats};

/// Recordings running at once in one session.
pub const MAX_ACTIVE_PER_SESSION: usize = 4;
/// Recordings kept per session (finished ones included), before new ones are refused.
pub const MAX_PER_SESSION: usize = 100;

/// Where a recording is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordingStatus {
    Recording,
    Stopping,
    Complete,
    Failed,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Recording => "recording",
            RecordingStatus::Stopping => "stopping",
            RecordingStatus::Complete => "complete",
            RecordingStatus::Failed => "failed",
        }
    }

    /// Still running (not finished).
    pub fn is_running(self) -> bool {
        matches!(self, RecordingStatus::Recording | RecordingStatus::Stopping)
    }
}

pub fn mode_name(mode: RecordMode) -> &'static str {
    match mode {
        RecordMode::Tracks => "tracks",
        RecordMode::Mixed => "mixed",
        RecordMode::Dual => "dual",
    }
}

pub fn parse_mode(s: &str) -> Option<RecordMode> {
    match s {
        "tracks" => Some(RecordMode::Tracks),
        "mixed" => Some(RecordMode::Mixed),
        "dual" => Some(RecordMode::Dual),
        _ => None,
    }
}

pub fn format_name(format: RecordFormat) -> &'static str {
    match format {
        RecordFormat::Ogg => "ogg",
        RecordFormat::Wav => "wav",
    }
}

pub fn parse_format(s: &str) -> Option<RecordFormat> {
    match s {
        "ogg" => Some(RecordFormat::Ogg),
        "wav" => Some(RecordFormat::Wav),
        _ => None,
    }
}

/// One file of a recording, as the manifest and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    /// Its number in the recording (the API's file id).
    pub file: u32,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_alias: Option<String>,
    pub content_type: String,
    pub channels: u16,
    pub sample_rate: u32,
    /// When it starts, ms after the recording's start.
    pub offset_ms: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    /// Closed normally (false: cut short by a crash and closed after the restart).
    pub complete: bool,
    /// `wav` or `ogg`, with the WAV sample format (to close a file a crash left open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wav_format: Option<String>,
    /// Copied to the object store.
    #[serde(default)]
    pub uploaded: bool,
    /// Not on the disk when it was to be uploaded (removed by hand): never uploaded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    /// The segment it belongs to (0 until the session's media moves in a cluster).
    #[serde(default)]
    pub segment: u32,
}

impl FileReport {
    pub fn opened(file: u32, meta: &FileMeta) -> FileReport {
        FileReport {
            file,
            name: meta.name.clone(),
            participant_id: meta.participant_id,
            stream_alias: meta.stream_alias.clone(),
            content_type: meta.content_type.to_string(),
            channels: meta.channels,
            sample_rate: meta.rate,
            offset_ms: meta.offset_ms,
            duration_ms: 0,
            bytes: 0,
            complete: false,
            wav_format: meta.wav.map(|f| {
                match f {
                    crate::media::container::wav::WavFormat::Pcm16 => "pcm16",
                    crate::media::container::wav::WavFormat::Mulaw => "mulaw",
                    crate::media::container::wav::WavFormat::Alaw => "alaw",
                }
                .to_string()
            }),
            uploaded: false,
            lost: false,
            segment: file / FILES_PER_SEGMENT,
        }
    }

    /// The meta a crashed file is closed with.
    pub fn meta(&self) -> FileMeta {
        use crate::media::container::wav::WavFormat;
        FileMeta {
            name: self.name.clone(),
            participant_id: self.participant_id,
            stream_alias: self.stream_alias.clone(),
            content_type: if self.content_type == "audio/wav" {
                "audio/wav"
            } else {
                "audio/ogg"
            },
            wav: match self.wav_format.as_deref() {
                Some("pcm16") => Some(WavFormat::Pcm16),
                Some("mulaw") => Some(WavFormat::Mulaw),
                Some("alaw") => Some(WavFormat::Alaw),
                _ => None,
            },
            channels: self.channels,
            rate: self.sample_rate,
            offset_ms: self.offset_ms,
        }
    }
}

/// What is written next to a recording's files (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub recording_id: Uuid,
    pub session_id: Uuid,
    pub start_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// Why it stopped (`requested`, `sessionEnded`, `limit`, `shutdown`, `moved`,
    /// `interrupted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Some of its bytes were dropped (the writer fell behind).
    #[serde(default)]
    pub damaged: bool,
    pub files: Vec<FileReport>,
    /// The parts made on each node, when the session's media moved (a cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentReport>,
}

impl Manifest {
    pub fn new(recording_id: Uuid, session_id: Uuid, start_ms: u64) -> Manifest {
        Manifest {
            recording_id,
            session_id,
            start_ms,
            end_ms: None,
            reason: None,
            damaged: false,
            files: Vec::new(),
            segments: Vec::new(),
        }
    }
}

/// One part of a recording: what one node recorded while it ran the session's media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentReport {
    pub segment: u32,
    /// The node that recorded it (None: one gateway, no cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub status: RecordingStatus,
    pub start_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A recording that finished: its manifest, and whether writing failed.
#[derive(Debug, Clone)]
pub struct RecordingReport {
    pub manifest: Manifest,
    pub failed: bool,
}

/// A recording as the control plane keeps and stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub id: Uuid,
    pub account_id: String,
    pub session_id: Uuid,
    pub mode: String,
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub status: RecordingStatus,
    pub start_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub damaged: bool,
    #[serde(default)]
    pub files: Vec<FileReport>,
    /// The bucket has its final manifest.
    #[serde(default)]
    pub manifest_uploaded: bool,
    /// Its part of the recording: 0 for the first; a node that takes a session's
    /// media over goes on with the next, under a row of its own.
    #[serde(default)]
    pub segment: u32,
    /// For a later segment: the recording it continues (whose id the API shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<Uuid>,
    /// The node that records this segment (a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// In the API's view of a recording (never stored): its segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentReport>,
    /// In the API's view: the row of the segment running now (its files in progress).
    #[serde(skip)]
    pub running_row: Option<Uuid>,
}

/// The reason of a segment that ended because the session's media left its node
/// (the recording goes on as a new segment where the media starts again).
pub const MOVED: &str = "moved";

/// Files of segment `n` are numbered from `n * FILES_PER_SEGMENT` (file ids stay
/// unique across a recording's segments).
pub const FILES_PER_SEGMENT: u32 = 1000;

impl Recording {
    /// The id of the recording this row is (a segment of).
    pub fn recording_id(&self) -> Uuid {
        self.continues.unwrap_or(self.id)
    }

    /// Ended only because the session's media moved: it goes on elsewhere.
    pub fn moved(&self) -> bool {
        !self.status.is_running() && self.reason.as_deref() == Some(MOVED)
    }

    fn segment_report(&self) -> SegmentReport {
        SegmentReport {
            segment: self.segment,
            node: self.node.clone(),
            status: self.status,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            reason: self.reason.clone(),
        }
    }

    /// The recording as the API shows it, from its segments' rows (any order; None:
    /// no rows): the first's identity and start, the last's state and end, every
    /// file. A last segment that ended because the media moved shows `recording`
    /// while `session_live` (it goes on where the media starts again).
    pub fn merge(mut rows: Vec<Recording>, session_live: bool) -> Option<Recording> {
        rows.sort_by_key(|r| r.segment);
        let last = rows.last()?.clone();
        let mut view = rows.first()?.clone();
        view.id = view.recording_id();
        view.continues = None;
        view.status = last.status;
        view.end_ms = last.end_ms;
        view.reason = last.reason.clone();
        if last.moved() && session_live {
            view.status = RecordingStatus::Recording;
            view.end_ms = None;
            view.reason = None;
        }
        view.damaged = rows.iter().any(|r| r.damaged);
        view.manifest_uploaded = last.manifest_uploaded;
        view.files = rows
            .iter()
            .flat_map(|r| {
                r.files.iter().cloned().map(|mut f| {
                    f.segment = r.segment;
                    f
                })
            })
            .collect();
        view.segment = last.segment;
        view.node = last.node.clone();
        view.running_row = last.status.is_running().then_some(last.id);
        view.segments = if rows.len() > 1 {
            rows.iter().map(Recording::segment_report).collect()
        } else {
            Vec::new()
        };
        Some(view)
    }

    /// The manifest of a recording's view (every segment's files and the segments).
    pub fn manifest(&self) -> Manifest {
        Manifest {
            recording_id: self.id,
            session_id: self.session_id,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            reason: self.reason.clone(),
            damaged: self.damaged,
            files: self.files.clone(),
            segments: self.segments.clone(),
        }
    }

    /// A file closed: listed (or updated), keeping whether the bucket has it.
    pub fn file_closed(&mut self, mut file: FileReport) {
        match self.files.iter_mut().find(|f| f.file == file.file) {
            Some(f) => {
                file.uploaded |= f.uploaded;
                *f = file;
            }
            None => self.files.push(file),
        }
    }

    /// Take a finished recording's report.
    pub fn finish(&mut self, report: &RecordingReport) {
        self.status = if report.failed {
            RecordingStatus::Failed
        } else {
            RecordingStatus::Complete
        };
        self.end_ms = report.manifest.end_ms;
        self.reason = report.manifest.reason.clone();
        self.damaged = report.manifest.damaged;
        for f in &report.manifest.files {
            self.file_closed(f.clone());
        }
    }
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-12-06T22:28:05.123Z`).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(segment: u32, node: &str, status: RecordingStatus, reason: Option<&str>) -> Recording {
        let first = Uuid::from_u128(1);
        let mut file = FileReport::opened(
            segment * FILES_PER_SEGMENT,
            &FileMeta {
                name: format!("{:02}-mixed.wav", segment * FILES_PER_SEGMENT),
                participant_id: None,
                stream_alias: None,
                content_type: "audio/wav",
                wav: None,
                channels: 1,
                rate: 8000,
                offset_ms: u64::from(segment) * 5000,
            },
        );
        file.complete = !status.is_running();
        Recording {
            id: if segment == 0 {
                first
            } else {
                Uuid::from_u128(100 + u128::from(segment))
            },
            account_id: "a".into(),
            session_id: Uuid::from_u128(2),
            mode: "mixed".into(),
            format: "wav".into(),
            participant_id: None,
            callback_url: None,
            status,
            start_ms: 1000 + u64::from(segment) * 5000,
            end_ms: (!status.is_running()).then_some(6000 + u64::from(segment) * 5000),
            reason: reason.map(str::to_string),
            damaged: false,
            files: vec![file],
            manifest_uploaded: false,
            segment,
            continues: (segment > 0).then_some(first),
            node: Some(node.into()),
            segments: Vec::new(),
            running_row: None,
        }
    }

    #[test]
    fn a_recording_continued_on_another_node_shows_as_one_with_its_segments() {
        use RecordingStatus::{Complete, Recording as Running};
        let moved = row(0, "n1", Complete, Some(MOVED));
        let running = row(1, "n2", Running, None);
        // Between the two: the first segment waits to go on while the session lives.
        let waiting = super::Recording::merge(vec![moved.clone()], true).unwrap();
        assert_eq!(waiting.status, Running);
        assert_eq!(waiting.end_ms, None);
        let gone = super::Recording::merge(vec![moved.clone()], false).unwrap();
        assert_eq!(
            (gone.status, gone.reason.as_deref()),
            (Complete, Some(MOVED))
        );

        let view = super::Recording::merge(vec![running.clone(), moved.clone()], true).unwrap();
        assert_eq!(
            view.id, moved.id,
            "the first segment's id is the recording's"
        );
        assert_eq!(view.start_ms, moved.start_ms);
        assert_eq!(view.status, Running);
        assert_eq!(view.running_row, Some(running.id));
        assert_eq!(
            view.files
                .iter()
                .map(|f| (f.file, f.segment))
                .collect::<Vec<_>>(),
            vec![(0, 0), (FILES_PER_SEGMENT, 1)]
        );
        let nodes: Vec<_> = view.segments.iter().map(|s| s.node.as_deref()).collect();
        assert_eq!(nodes, vec![Some("n1"), Some("n2")]);

        let done = row(1, "n2", Complete, Some("requested"));
        let view = super::Recording::merge(vec![moved.clone(), done.clone()], true).unwrap();
        assert_eq!(
            (view.status, view.reason.as_deref(), view.end_ms),
            (Complete, Some("requested"), done.end_ms)
        );
        let manifest = view.manifest();
        assert_eq!(manifest.recording_id, moved.id);
        assert_eq!(manifest.files.len(), 2);
        assert_eq!(manifest.segments.len(), 2);
        // One row: no segments listed (as before clusters).
        let single = super::Recording::merge(vec![row(0, "n1", Complete, Some("requested"))], true);
        assert!(single.unwrap().segments.is_empty());
    }

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_596_085_123), "2026-12-06T22:28:05.123Z");
    }
}
