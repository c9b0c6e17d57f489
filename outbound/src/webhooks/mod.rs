//! Webhook delivery: participant events POSTed to their `callbackUrl`, reliably.
//!
//! One task owns the outbox ([`patchbay_conference::webhooks::Outbox`]): events are
//! written to the store (batched: whatever arrives while one write is in progress
//! goes in the next) before their first attempt; each attempt is an HTTP POST with
//! a 5 s timeout and no redirects; a non-2xx, a timeout or an error is retried with
//! exponential backoff and jitter for at least 24 hours; per participant strictly in
//! order. Delivered and given-up callbacks are deleted from the store; the rest are
//! taken again after a restart (at-least-once: the body's `eventId` is stable).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use patchbay_conference::dialogs::DialogEvent;
use patchbay_conference::events::{DeviceEvent, DeviceEventKind, DeviceLayout, EventSink};
use patchbay_conference::media::stats::LatencyHistogram;
use patchbay_conference::store::{ConnectionRecord, LayoutRecord, StoreError, StoreOp};
use patchbay_conference::webhooks::{RetryPolicy, Webhook};
use patchbay_conference::{Conference, ConferenceError};

/// The signature header: `sha256=<hex HMAC-SHA256 of the body>` under `webhook_secret`.
pub const SIGNATURE_HEADER: &str = "X-Patchbay-Signature";

/// Delivery settings.
#[derive(Clone)]
pub struct WebhookOptions {
    /// Sign bodies with HMAC-SHA256 under this secret.
    pub secret: Option<String>,
    pub timeout: Duration,
    pub policy: RetryPolicy,
    /// Most deliveries in flight at once (over all participants).
    pub concurrency: usize,
    /// Where callbacks may go (checked at creation and at delivery).
    pub egress: Arc<crate::egress::EgressPolicy>,
    /// In a cluster: a node silent this long is dead and its outbox is taken over.
    pub cluster_lease: Duration,
}

/// How often a node of a cluster looks for stopped nodes' outboxes.
const TAKE_OVER_EVERY: Duration = Duration::from_secs(2);

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            secret: None,
            timeout: Duration::from_secs(5),
            policy: RetryPolicy::default(),
            concurrency: 512,
            egress: Arc::new(crate::egress::EgressPolicy::default()),
            cluster_lease: Duration::from_secs(10),
        }
    }
}

/// Counters (rendered into `/metrics`).
#[derive(Default)]
pub struct WebhookStats {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub pending: AtomicU64,
    /// Callbacks of a session whose lease this node lost: refused by the fence, not sent.
    pub fenced: AtomicU64,
    /// From enqueue to a 2xx.
    pub latency: LatencyHistogram,
    /// The recent callbacks and their delivery (the console's webhook log).
    pub log: log::WebhookLog,
}

impl WebhookStats {
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        for (name, help, v) in [
            ("webhooks_queued", "Callbacks enqueued.", &self.queued),
            (
                "webhooks_delivered",
                "Callbacks delivered (2xx).",
                &self.delivered,
            ),
            (
                "webhooks_retried",
                "Failed attempts that will be retried.",
                &self.retried,
            ),
            (
                "webhooks_failed",
                "Callbacks given up after the retry period.",
                &self.failed,
            ),
            (
                "webhooks_fenced",
                "Callbacks of a session this cluster node no longer owns: not sent.",
                &self.fenced,
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
            "# HELP patchbay_webhooks_pending Callbacks stored and not delivered yet.\n# TYPE patchbay_webhooks_pending gauge\npatchbay_webhooks_pending {}",
            self.pending.load(Relaxed)
        );
        let (buckets, count, sum) = self.latency.snapshot();
        let _ = writeln!(out, "# HELP patchbay_webhook_delivery_seconds From enqueue to a 2xx answer.\n# TYPE patchbay_webhook_delivery_seconds histogram");
        for (bound, c) in buckets {
            let _ = writeln!(
                out,
                "patchbay_webhook_delivery_seconds_bucket{{le=\"{bound}\"}} {c}"
            );
        }
        let _ = writeln!(
            out,
            "patchbay_webhook_delivery_seconds_bucket{{le=\"+Inf\"}} {count}\npatchbay_webhook_delivery_seconds_sum {sum}\npatchbay_webhook_delivery_seconds_count {count}"
        );
    }
}

/// An event for a participant's `callbackUrl` (its body without `eventId`).
pub struct NewEvent {
    /// Whose callbacks this one is ordered among.
    pub participant_id: Uuid,
    pub url: String,
    pub body: Map<String, Value>,
    /// A change stored with the event (the record of open connections, a recording).
    pub track: Option<StoreOp>,
    /// In a cluster: the session lease (session, epoch) the event's node must still
    /// hold for the event to be stored and sent (an owner that lost it stays quiet).
    pub fence: Option<(Uuid, i64)>,
}

enum Cmd {
    Event(Box<NewEvent>),
    /// Answer once everything enqueued so far is in the store.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The handle to the outbox task: enqueue events.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::UnboundedSender<Cmd>,
    pub stats: Arc<WebhookStats>,
    /// Where callbacks may go.
    pub egress: Arc<crate::egress::EgressPolicy>,
    /// Whose session leases fence device events (in a cluster).
    conference: Arc<Conference>,
    /// Where writes started from other threads (the recordings' writer) run.
    runtime: tokio::runtime::Handle,
}

impl Webhooks {
    /// Start the outbox task (it first takes the callbacks left from the last run).
    pub fn start(conference: Arc<Conference>, options: WebhookOptions) -> Webhooks {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WebhookStats::default());
        let egress = options.egress.clone();
        tokio::spawn(run(conference.clone(), options, rx, stats.clone()));
        Webhooks {
            tx,
            stats,
            egress,
            conference,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Enqueue `body` (a JSON object; `eventId` is added) for `url`.
    pub fn enqueue(&self, participant_id: Uuid, url: &str, body: Map<String, Value>) {
        self.send(NewEvent {
            participant_id,
            url: url.to_string(),
            body,
            track: None,
            fence: None,
        });
    }

    /// Enqueue an event with what is stored with it.
    pub fn send(&self, event: NewEvent) {
        let _ = self.tx.send(Cmd::Event(Box::new(event)));
    }

    /// The conference whose store holds the outbox.
    pub fn conference(&self) -> &Arc<Conference> {
        &self.conference
    }

    /// The runtime writes started from other threads run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Wait (at most `limit`) until every callback enqueued so far is stored (shutdown:
    /// what is stored is delivered after the restart).
    pub async fn flush(&self, limit: Duration) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Cmd::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}

/// Device events become `onConnect` / `onLeave` / `onDisconnect` callbacks.
impl EventSink for Webhooks {
    fn device_event(&self, e: DeviceEvent) {
        tracing::info!(event = e.kind.name(), participant_id = %e.owner.participant_id, device_id = %e.device_id, "device event");
        let Some(url) = e.owner.callback_url.as_deref() else {
            return;
        };
        let mut body = device_body(
            e.kind,
            e.at_ms,
            e.owner.participant_id,
            &e.device_id,
            e.owner.tag.as_deref(),
        );
        if let (DeviceEventKind::Leave, Some(why)) = (e.kind, e.reason) {
            body.insert("reason".into(), json!(why));
        }
        // What a crash would leave open, written with the event.
        let track = match e.kind {
            DeviceEventKind::Connect | DeviceEventKind::Disconnect => {
                StoreOp::PutConnection(ConnectionRecord {
                    participant_id: e.owner.participant_id,
                    source: e.source,
                    device_id: e.device_id.clone(),
                    callback_url: url.to_string(),
                    tag: e.owner.tag.as_deref().map(Into::into),
                    connected: e.kind == DeviceEventKind::Connect,
                    since_ms: e.at_ms,
                })
            }
            DeviceEventKind::Leave => StoreOp::DeleteConnection {
                participant_id: e.owner.participant_id,
                source: e.source,
                device_id: e.device_id.clone(),
            },
        };
        self.send(NewEvent {
            participant_id: e.owner.participant_id,
            url: url.to_string(),
            body,
            track: Some(track),
            // In a cluster, only the session's owner speaks for its devices and calls.
            fence: self
                .conference
                .epoch(e.session_id)
                .map(|epoch| (e.session_id, epoch)),
        });
    }

    /// Kept in the store (fenced like the events) for the session's next owner; not a
    /// callback. A failed write is logged: that device's media then does not survive a
    /// change of owner.
    fn device_layout(&self, l: DeviceLayout) {
        let op = match l.layout {
            Some(layout) => StoreOp::PutLayout(LayoutRecord {
                participant_id: l.participant_id,
                device_id: l.device_id,
                revision: layout.revision,
                lines: layout.encode(),
            }),
            None => StoreOp::DeleteLayout {
                participant_id: l.participant_id,
                device_id: l.device_id,
            },
        };
        let fence = self
            .conference
            .epoch(l.session_id)
            .map(|epoch| StoreOp::Fence {
                session_id: l.session_id,
                epoch,
            });
        let write = self
            .conference
            .commit(fence.into_iter().chain([op]).collect());
        tokio::spawn(async move {
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "keeping a device's subscribing layout");
            }
        });
    }

    fn dialog_event(&self, e: DialogEvent) {
        let d = &e.dialog;
        tracing::info!(dialog_id = %d.id, state = d.state.as_str(), "dialog event");
        let Some(url) = e.callback_url.as_deref() else {
            return;
        };
        let mut body = Map::new();
        body.insert("event".into(), json!("onSipDialogStateChange"));
        body.insert("timestamp".into(), json!(e.at_ms.to_string()));
        body.insert("participantId".into(), json!(d.participant_id.to_string()));
        body.insert("dialogId".into(), json!(d.id.to_string()));
        if let Some(tag) = &e.tag {
            body.insert("tag".into(), json!(tag));
        }
        body.insert("type".into(), json!("SIP"));
        body.insert("state".into(), json!(d.state.as_str()));
        body.insert("data".into(), json!(d.data));
        if d.reason.is_some() || d.details.is_some() {
            let mut ed = Map::new();
            if let Some(r) = &d.reason {
                ed.insert("reason".into(), json!(r));
            }
            if let Some(x) = &d.details {
                ed.insert("details".into(), json!(x));
            }
            body.insert("eventData".into(), Value::Object(ed));
        }
        // The older documented shape, for consumers written against it.
        body.insert(
            "dialogStateData".into(),
            json!({"state": d.state.as_str(), "to": d.data.to, "from": d.data.from}),
        );
        self.enqueue(d.participant_id, url, body);
    }
}

/// The body of `onConnect` / `onDisconnect` / `onLeave`.
fn device_body(
    kind: DeviceEventKind,
    at_ms: u64,
    participant_id: Uuid,
    device_id: &str,
    tag: Option<&str>,
) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("event".into(), json!(kind.name()));
    body.insert("timestamp".into(), json!(at_ms.to_string()));
    body.insert("participantId".into(), json!(participant_id.to_string()));
    body.insert("deviceId".into(), json!(device_id));
    if let Some(tag) = tag {
        body.insert("tag".into(), json!(tag));
    }
    body
}

/// The reason recovery events carry (an addition to the documented body).
pub const RESTART_REASON: &str = "the gateway restarted while it was connected";
/// The `reason` of the `onLeave` (and `onDisconnect`) a live node of a cluster sends
/// for a device or call of a node that stopped beating.
pub const NODE_LOST_REASON: &str = "the cluster node it was connected to stopped";

/// What ends a device or call the last run left connected: `onDisconnect` if its
/// connection was open, then `onLeave` (which also deletes the record).
fn recovery_events(c: ConnectionRecord, at_ms: u64, reason: &str) -> Vec<NewEvent> {
    let kinds: &[DeviceEventKind] = if c.connected {
        &[DeviceEventKind::Disconnect, DeviceEventKind::Leave]
    } else {
        &[DeviceEventKind::Leave]
    };
    kinds
        .iter()
        .map(|&kind| {
            let mut body = device_body(
                kind,
                at_ms,
                c.participant_id,
                &c.device_id,
                c.tag.as_deref(),
            );
            body.insert("reason".into(), json!(reason));
            let track = (kind == DeviceEventKind::Leave).then(|| StoreOp::DeleteConnection {
                participant_id: c.participant_id,
                source: c.source,
                device_id: c.device_id.clone(),
            });
            NewEvent {
                participant_id: c.participant_id,
                url: c.callback_url.clone(),
                body,
                track,
                fence: None,
            }
        })
        .collect()
}

fn now_ms() -> u64 {
    patchbay_conference::media::session::unix_us() / 1000
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

pub mod inbound;
pub mod log;
mod outbox;
use outbox::run;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
