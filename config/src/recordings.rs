//! The recordings' object storage keys (`recordings_s3_*`).

use super::{key_err, ConfigError, Layer};

/// `recordings_s3_*`: where finished recordings are copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingsS3 {
    /// `https://host:port` of an S3-compatible service (path-style); None: AWS S3.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: Option<String>,
    /// None: the standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub prefix: String,
}

/// The `recordings_s3_*` keys: a bucket turns uploads on; the rest is checked with it.
pub(super) fn recordings_s3(layer: &Layer) -> Result<Option<RecordingsS3>, ConfigError> {
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let Some(bucket) = set(&layer.recordings_s3_bucket) else {
        for (key, v) in [
            ("recordings_s3_endpoint", &layer.recordings_s3_endpoint),
            (
                "recordings_s3_access_key_id",
                &layer.recordings_s3_access_key_id,
            ),
            (
                "recordings_s3_secret_access_key",
                &layer.recordings_s3_secret_access_key,
            ),
        ] {
            if set(v).is_some() {
                return Err(key_err(key, "needs recordings_s3_bucket"));
            }
        }
        return Ok(None);
    };
    let endpoint = set(&layer.recordings_s3_endpoint);
    if let Some(e) = &endpoint {
        if !(e.starts_with("https://") || e.starts_with("http://")) {
            return Err(key_err(
                "recordings_s3_endpoint",
                "must be an http:// or https:// URL",
            ));
        }
    }
    let access_key_id = set(&layer.recordings_s3_access_key_id);
    let secret_access_key = set(&layer.recordings_s3_secret_access_key);
    if access_key_id.is_some() != secret_access_key.is_some() {
        return Err(key_err(
            "recordings_s3_secret_access_key",
            "recordings_s3_access_key_id and recordings_s3_secret_access_key go together",
        ));
    }
    Ok(Some(RecordingsS3 {
        endpoint,
        bucket,
        region: set(&layer.recordings_s3_region),
        access_key_id,
        secret_access_key,
        prefix: layer
            .recordings_s3_prefix
            .clone()
            .unwrap_or_else(|| "recordings/".into()),
    }))
}
