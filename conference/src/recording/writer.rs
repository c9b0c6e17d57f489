//! The recordings' writer: one thread that owns the files. Session shells hand it
//! their recorders' outputs on a bounded queue (a full queue drops the bytes and counts
//! them: the file is marked damaged, the session's media never waits for a disk);
//! it appends, rewrites WAV headers with their sizes at close, keeps each recording's
//! `manifest.json` current (so a crash leaves files that can be closed after the
//! restart) and reports each finished recording.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use uuid::Uuid;

use super::{FileReport, Manifest, RecordingReport};
use crate::media::container::wav;
use crate::media::session::{FileMeta, RecordingOut, StopReason};

/// Outputs queued for the writer before they are dropped (about a second of bytes per
/// file each: minutes of a stalled disk for a hundred recordings).
pub const WRITER_QUEUE: usize = 8192;

/// Counters (rendered into `/metrics`).
#[derive(Debug, Default)]
pub struct WriterStats {
    pub bytes_written: AtomicU64,
    pub files_closed: AtomicU64,
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
}

/// Where finished recordings are reported (the control plane).
pub trait RecordingReports: Send + Sync + 'static {
    /// One file is complete (the recording goes on).
    fn file_closed(&self, recording: Uuid, file: FileReport) {
        let _ = (recording, file);
    }
    fn finished(&self, report: RecordingReport);
}

enum Msg {
    Out {
        session_id: Uuid,
        out: RecordingOut,
    },
    /// A recording's bytes were dropped (queue full).
    Damaged(Uuid),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct RecordingWriter {
    tx: SyncSender<Msg>,
    pub stats: Arc<WriterStats>,
    dir: Arc<PathBuf>,
}

impl RecordingWriter {
    /// Start the writer thread for recordings under `dir`.
    pub fn start(dir: PathBuf, reports: Arc<dyn RecordingReports>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = sync_channel(WRITER_QUEUE);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let thread_dir = dir.clone();
        std::thread::Builder::new()
            .name("recordings".into())
            .spawn(move || run(thread_dir, rx, reports, thread_stats))?;
        Ok(RecordingWriter {
            tx,
            stats,
            dir: Arc::new(dir),
        })
    }

    /// Where recordings are kept.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of one recording.
    pub fn recording_dir(&self, recording: Uuid) -> PathBuf {
        self.dir.join(recording.to_string())
    }

    /// Hand over a recorder's output (false: the queue is full, the bytes are lost
    /// and counted).
    pub fn send(&self, session_id: Uuid, out: RecordingOut) -> bool {
        let recording = match &out {
            RecordingOut::Open { recording, .. }
            | RecordingOut::Data { recording, .. }
            | RecordingOut::Close { recording, .. }
            | RecordingOut::Stopped { recording, .. } => *recording,
        };
        match self.tx.try_send(Msg::Out { session_id, out }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Relaxed);
                // Best effort: the mark itself may not fit either; the counter stays.
                let _ = self.tx.try_send(Msg::Damaged(recording));
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Wait (at most `limit`) until everything handed over so far is written.
    pub fn flush(&self, limit: std::time::Duration) -> bool {
        let (done, wait) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(limit).is_ok()
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (name, help, v) in [
            (
                "recording_bytes_written",
                "Bytes of recordings written to disk.",
                &self.stats.bytes_written,
            ),
            (
                "recording_files_closed",
                "Recording files finished.",
                &self.stats.files_closed,
            ),
            (
                "recording_chunks_dropped",
                "Recording output dropped because the writer's queue was full (the file is marked damaged).",
                &self.stats.dropped,
            ),
            (
                "recording_write_errors",
                "Failed writes of recording files.",
                &self.stats.write_errors,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP patchbay_{name} {help}\n# TYPE patchbay_{name} counter\npatchbay_{name}_total {}",
                v.load(Relaxed)
            );
        }
    }
}

struct OpenFile {
    meta: FileMeta,
    file: Option<File>,
    bytes: u64,
}

struct Active {
    manifest: Manifest,
    open: HashMap<u32, OpenFile>,
    failed: bool,
}

impl Active {
    fn new(recording: Uuid, session_id: Uuid) -> Active {
        Active {
            manifest: Manifest::new(
                recording,
                session_id,
                crate::media::session::unix_us() / 1000,
            ),
            open: HashMap::new(),
            failed: false,
        }
    }
}

fn run(
    dir: PathBuf,
    rx: Receiver<Msg>,
    reports: Arc<dyn RecordingReports>,
    stats: Arc<WriterStats>,
) {
    let mut active: HashMap<Uuid, Active> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Flush(done) => {
                let _ = done.send(());
            }
            Msg::Damaged(recording) => {
                if let Some(a) = active.get_mut(&recording) {
                    a.manifest.damaged = true;
                }
            }
            Msg::Out { session_id, out } => {
                handle(&dir, &mut active, session_id, out, &*reports, &stats)
            }
        }
    }
}

fn handle(
    dir: &Path,
    active: &mut HashMap<Uuid, Active>,
    session_id: Uuid,
    out: RecordingOut,
    reports: &dyn RecordingReports,
    stats: &WriterStats,
) {
    match out {
        RecordingOut::Open {
            recording,
            file,
            meta,
        } => {
            let a = active
                .entry(recording)
                .or_insert_with(|| Active::new(recording, session_id));
            let rdir = dir.join(recording.to_string());
            let opened = std::fs::create_dir_all(&rdir).and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(rdir.join(&meta.name))
            });
            let f = match opened {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(recording = %recording, error = %e, "recording file could not be created");
                    stats.write_errors.fetch_add(1, Relaxed);
                    a.failed = true;
                    None
                }
            };
            a.manifest.files.push(FileReport::opened(file, &meta));
            a.open.insert(
                file,
                OpenFile {
                    meta,
                    file: f,
                    bytes: 0,
                },
            );
            save_manifest(&rdir, &a.manifest, stats);
        }
        RecordingOut::Data {
            recording,
            file,
            bytes,
        } => {
            let Some(a) = active.get_mut(&recording) else {
                return;
            };
            let Some(o) = a.open.get_mut(&file) else {
                return;
            };
            if let Some(f) = o.file.as_mut() {
                match f.write_all(&bytes) {
                    Ok(()) => {
                        o.bytes += bytes.len() as u64;
                        stats.bytes_written.fetch_add(bytes.len() as u64, Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(recording = %recording, error = %e, "recording write failed");
                        stats.write_errors.fetch_add(1, Relaxed);
                        a.failed = true;
                        o.file = None;
                    }
                }
            }
        }
        RecordingOut::Close {
            recording,
            file,
            duration_ms,
        } => {
            let Some(a) = active.get_mut(&recording) else {
                return;
            };
            let Some(o) = a.open.remove(&file) else {
                return;
            };
            if let Some(mut f) = o.file {
                if let Err(e) = finish_file(&mut f, &o.meta, o.bytes) {
                    tracing::warn!(recording = %recording, error = %e, "recording file could not be closed");
                    stats.write_errors.fetch_add(1, Relaxed);
                    a.failed = true;
                }
            }
            stats.files_closed.fetch_add(1, Relaxed);
            let mut closed = None;
            if let Some(r) = a.manifest.files.iter_mut().find(|r| r.file == file) {
                r.duration_ms = duration_ms;
                r.bytes = o.bytes;
                r.complete = true;
                closed = Some(r.clone());
            }
            save_manifest(&dir.join(recording.to_string()), &a.manifest, stats);
            if let Some(f) = closed.filter(|_| !a.failed) {
                reports.file_closed(recording, f);
            }
        }
        RecordingOut::Stopped { recording, reason } => {
            let mut a = active
                .remove(&recording)
                .unwrap_or_else(|| Active::new(recording, session_id));
            a.manifest.end_ms = Some(crate::media::session::unix_us() / 1000);
            a.manifest.reason = Some(reason_name(reason).to_string());
            save_manifest(&dir.join(recording.to_string()), &a.manifest, stats);
            reports.finished(RecordingReport {
                manifest: a.manifest,
                failed: a.failed,
            });
        }
    }
}

/// Rewrite a WAV header with the data's size; flush to disk.
fn finish_file(f: &mut File, meta: &FileMeta, bytes: u64) -> std::io::Result<()> {
    if let Some(format) = meta.wav {
        let data = bytes.saturating_sub(wav::HEADER_LEN as u64);
        let header = wav::header(
            format,
            meta.channels,
            meta.rate,
            Some(data.min(u32::MAX as u64) as u32),
        );
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&header)?;
    }
    f.sync_data()
}

/// Bytes read at each end of an Ogg file a crash left open (the last page is within a
/// second of audio, a few KB; the first holds the Opus header).
const OGG_REPAIR_WINDOW: u64 = 256 * 1024;

/// Close an Ogg Opus file a crash left open: cut a torn last page off; its length and
/// duration (ms, from the last page's granule position less the pre-skip).
pub fn repair_ogg(path: &Path) -> std::io::Result<(u64, u64)> {
    use crate::media::container::ogg;
    use std::io::Read;
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let mut head = vec![0u8; len.min(4096) as usize];
    f.read_exact(&mut head)?;
    let from = len.saturating_sub(OGG_REPAIR_WINDOW);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    f.read_to_end(&mut tail)?;
    let Some((end, granule)) = ogg::last_complete_page(&tail) else {
        return Ok((len, 0));
    };
    let end = from + end as u64;
    if end < len {
        f.set_len(end)?;
        f.sync_data()?;
    }
    let pre_skip = u64::from(ogg::pre_skip(&head).unwrap_or(0));
    Ok((end, granule.saturating_sub(pre_skip) / 48))
}

/// Close a WAV file a crash left open (its header says "unknown size").
pub fn repair_wav(path: &Path, meta: &FileMeta) -> std::io::Result<u64> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    let len = f.metadata()?.len();
    if meta.wav.is_some() && len >= wav::HEADER_LEN as u64 {
        finish_file(&mut f, meta, len)?;
    }
    Ok(len)
}

fn reason_name(reason: StopReason) -> &'static str {
    match reason {
        StopReason::Requested => "requested",
        StopReason::SessionEnded => "sessionEnded",
        StopReason::Limit => "limit",
        StopReason::Shutdown => "shutdown",
        StopReason::Moved => "moved",
    }
}

/// Write the manifest next to the files (through a temporary file and a rename, so a
/// crash leaves the old one or the new one).
fn save_manifest(rdir: &Path, manifest: &Manifest, stats: &WriterStats) {
    let tmp = rdir.join("manifest.json.tmp");
    let result = serde_json::to_vec_pretty(manifest)
        .map_err(std::io::Error::other)
        .and_then(|body| {
            std::fs::create_dir_all(rdir)?;
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_data()?;
            std::fs::rename(&tmp, rdir.join("manifest.json"))
        });
    if let Err(e) = result {
        tracing::warn!(error = %e, "recording manifest could not be written");
        stats.write_errors.fetch_add(1, Relaxed);
    }
}
