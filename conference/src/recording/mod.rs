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
        }
    }
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
}

impl Recording {
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

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_596_085_123), "2026-12-06T22:28:05.123Z");
    }
}
