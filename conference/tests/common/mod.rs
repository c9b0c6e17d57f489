//! Records the store tests write (shared by `registry.rs` and `cluster.rs`).

use patchbay_conference::events::DeviceSource;
use patchbay_conference::store::ConnectionRecord;
use patchbay_conference::webhooks::Webhook;
use uuid::Uuid;

/// Callback number `id` for `participant`, due at once.
pub fn webhook(participant: Uuid, id: i64) -> Webhook {
    Webhook {
        id,
        event_id: Uuid::new_v4(),
        participant_id: participant,
        url: "http://127.0.0.1:9/cb".into(),
        body: format!("{{\"n\":{id}}}"),
        created_ms: 1_790_000_000_000 + id as u64,
        attempts: 0,
        next_ms: 1_790_000_000_000,
    }
}

/// An open connection record of `participant`'s device `device`.
pub fn connection(
    participant: Uuid,
    source: DeviceSource,
    device: &str,
    connected: bool,
) -> ConnectionRecord {
    ConnectionRecord {
        participant_id: participant,
        source,
        device_id: device.into(),
        callback_url: "http://127.0.0.1:9/cb".into(),
        tag: Some("t".into()),
        connected,
        since_ms: 1_790_000_000_123,
    }
}
