//! Finished recordings to S3-compatible object storage. The durable queue is the
//! recordings' own records: a complete recording with a file not `uploaded` is work,
//! found again after a restart; each file is marked (and stored) once the bucket has
//! it, then the manifest is uploaded. An unreachable bucket is retried with backoff
//! (1 s doubling to a minute) for as long as it takes; local files are kept.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Recording;

/// Where recordings go: a bucket of an S3-compatible service.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// `https://s3.example.com` (path-style requests); None: AWS S3 itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: Option<String>,
    /// None: the standard AWS environment (`AWS_ACCESS_KEY_ID`, …).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Prefix of every key (`recordings/`): `{prefix}{account}/{session}/{recording}/{file}`.
    pub prefix: String,
}

/// What the uploader needs from the control plane.
pub trait UploadBook: Send + Sync + 'static {
    /// A recording's record as it is now.
    fn recording(&self, id: Uuid) -> Option<Recording>;
    /// This file is not on the disk (removed by hand): mark it (durably) as lost.
    fn mark_lost(
        &self,
        id: Uuid,
        file: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>;
    /// The bucket has this file (None: the manifest): mark it (durably) in the record.
    fn mark_uploaded(
        &self,
        id: Uuid,
        file: Option<u32>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>;
}

/// Counters (rendered into `/metrics`).
#[derive(Debug, Default)]
pub struct UploadStats {
    pub files: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    pub pending: std::sync::atomic::AtomicU64,
}

/// The handle: enqueue recordings whose files are to be uploaded.
#[derive(Clone)]
pub struct Uploader {
    tx: mpsc::UnboundedSender<Uuid>,
    queued: Arc<Mutex<HashSet<Uuid>>>,
    pub stats: Arc<UploadStats>,
}

impl Uploader {
    /// Start the upload task (in the current tokio runtime).
    pub fn start(
        options: &S3Options,
        dir: PathBuf,
        book: Arc<dyn UploadBook>,
    ) -> Result<Uploader, String> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&options.bucket);
        if let Some(e) = &options.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(r) = &options.region {
            b = b.with_region(r);
        }
        if let (Some(k), Some(s)) = (&options.access_key_id, &options.secret_access_key) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        let store = b.build().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Mutex::new(HashSet::new()));
        let stats = Arc::new(UploadStats::default());
        tokio::spawn(run(
            Arc::new(store),
            options.prefix.clone(),
            dir,
            book,
            rx,
            queued.clone(),
            stats.clone(),
        ));
        Ok(Uploader { tx, queued, stats })
    }

    /// Upload what `recording` has not uploaded yet (once queued, queued once).
    pub fn enqueue(&self, recording: Uuid) {
        let fresh = self
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(recording);
        if fresh {
            self.stats
                .pending
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = self.tx.send(recording);
        }
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        for (name, help, v) in [
            (
                "recording_files_uploaded",
                "Recording files copied to the object store.",
                &self.stats.files,
            ),
            (
                "recording_bytes_uploaded",
                "Bytes of recordings copied to the object store.",
                &self.stats.bytes,
            ),
            (
                "recording_upload_failures",
                "Failed uploads of recordings (each is retried).",
                &self.stats.failures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP patchbay_{name} {help}\n# TYPE patchbay_{name} counter\npatchbay_{name}_total {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP patchbay_recording_uploads_pending Recordings with files not in the object store yet.\n# TYPE patchbay_recording_uploads_pending gauge\npatchbay_recording_uploads_pending {}",
            self.stats.pending.load(Relaxed)
        );
    }
}

async fn run(
    store: Arc<dyn ObjectStore>,
    prefix: String,
    dir: PathBuf,
    book: Arc<dyn UploadBook>,
    mut rx: mpsc::UnboundedReceiver<Uuid>,
    queued: Arc<Mutex<HashSet<Uuid>>>,
    stats: Arc<UploadStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Some(id) = rx.recv().await {
        let mut backoff = Duration::from_secs(1);
        let mut passes = 0;
        loop {
            match upload(&store, &prefix, &dir, &*book, id, &stats).await {
                // Files that closed meanwhile, or the end that came meanwhile, are taken
                // before the recording leaves the queue (a few passes at most: what
                // comes later is queued again).
                Ok(()) if passes < 4 && book.recording(id).is_some_and(|r| pending(&r)) => {
                    passes += 1;
                }
                Ok(()) => break,
                Err(e) => {
                    stats.failures.fetch_add(1, Relaxed);
                    tracing::warn!(recording = %id, error = %e, retry_in = ?backoff, "recording upload failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
        queued.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        stats.pending.fetch_sub(1, Relaxed);
    }
}

/// A file the bucket should have now: closed, or in a recording that ended (a crash
/// closes files as far as they got).
fn due(r: &Recording, f: &super::FileReport) -> bool {
    !f.uploaded && !f.lost && (f.complete || !r.status.is_running())
}

/// Whether `r` has uploads to make: a due file, or its manifest once it ended.
pub fn pending(r: &Recording) -> bool {
    r.files.iter().any(|f| due(r, f)) || (!r.status.is_running() && !r.manifest_uploaded)
}

/// Upload every file of `id` not marked yet, then its manifest.
async fn upload(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    dir: &std::path::Path,
    book: &dyn UploadBook,
    id: Uuid,
    stats: &UploadStats,
) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(r) = book.recording(id) else {
        return Ok(());
    };
    // A recording's segments (a cluster) share its folder; their files' names differ.
    let base = format!(
        "{prefix}{}/{}/{}",
        r.account_id,
        r.session_id,
        r.recording_id()
    );
    let rdir = dir.join(id.to_string());
    for f in r.files.iter().filter(|f| due(&r, f)) {
        let path = rdir.join(&f.name);
        if !path.exists() {
            // Removed from the disk by hand: nothing to upload, ever (not retried).
            tracing::warn!(recording = %id, file = %f.name, "a recording file to upload is not on the disk");
            if !book.mark_lost(id, f.file).await {
                return Err("the missing file could not be recorded in the store".into());
            }
            continue;
        }
        let bytes = put_file(store, &format!("{base}/{}", f.name), &path).await?;
        if !book.mark_uploaded(id, Some(f.file)).await {
            return Err("the upload could not be recorded in the store".into());
        }
        stats.files.fetch_add(1, Relaxed);
        stats.bytes.fetch_add(bytes, Relaxed);
        tracing::info!(recording = %id, file = %f.name, bytes, "recording file uploaded");
    }
    if !r.status.is_running() && !r.manifest_uploaded {
        let manifest = rdir.join("manifest.json");
        // A recording cut by a crash before its first file has no manifest: none to upload.
        if manifest.exists() {
            put_file(store, &format!("{base}/manifest.json"), &manifest).await?;
        }
        if !book.mark_uploaded(id, None).await {
            return Err("the upload could not be recorded in the store".into());
        }
    }
    Ok(())
}

/// Stream a local file to `key` (multipart above the buffer's size).
async fn put_file(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    path: &std::path::Path,
) -> Result<u64, String> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut writer = object_store::buffered::BufWriter::new(store.clone(), ObjectPath::from(key));
    let n = tokio::io::copy(&mut file, &mut writer)
        .await
        .map_err(|e| e.to_string())?;
    writer.shutdown().await.map_err(|e| e.to_string())?;
    Ok(n)
}
