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
use patchbay_conference::webhooks::{AfterFailure, Outbox, RetryPolicy, Webhook};
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
struct NewEvent {
    participant_id: Uuid,
    url: String,
    body: Map<String, Value>,
    /// The change to the record of open connections, stored with the event.
    track: Option<StoreOp>,
    /// In a cluster: the session lease (session, epoch) the event's node must still
    /// hold for the event to be stored and sent (an owner that lost it stays quiet).
    fence: Option<(Uuid, i64)>,
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

    fn send(&self, event: NewEvent) {
        let _ = self.tx.send(Cmd::Event(Box::new(event)));
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
        let body = device_body(
            e.kind,
            e.at_ms,
            e.owner.participant_id,
            &e.device_id,
            e.owner.tag.as_deref(),
        );
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

/// Events waiting for the store: their callbacks and the changes to the record of
/// open connections (in event order), one unit per fence (events of sessions this node
/// owns carry their lease; a unit whose lease is gone is refused as a whole).
#[derive(Default)]
struct ToStore {
    units: Vec<Unit>,
}

#[derive(Default)]
struct Unit {
    fence: Option<(Uuid, i64)>,
    webhooks: Vec<Webhook>,
    track: Vec<StoreOp>,
}

impl ToStore {
    fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Give the event its id and `eventId`.
    fn admit(&mut self, ev: NewEvent, next_id: &mut i64, stats: &WebhookStats) {
        let event_id = Uuid::new_v4();
        let mut body = ev.body;
        body.insert("eventId".into(), json!(event_id.to_string()));
        let created_ms = now_ms();
        let unit = match self.units.iter().position(|u| u.fence == ev.fence) {
            Some(i) => &mut self.units[i],
            None => {
                self.units.push(Unit {
                    fence: ev.fence,
                    ..Unit::default()
                });
                let last = self.units.len() - 1;
                &mut self.units[last]
            }
        };
        unit.webhooks.push(Webhook {
            id: *next_id,
            event_id,
            participant_id: ev.participant_id,
            url: ev.url,
            body: Value::Object(body).to_string(),
            created_ms,
            attempts: 0,
            next_ms: created_ms,
        });
        unit.track.extend(ev.track);
        *next_id += 1;
        stats.queued.fetch_add(1, Relaxed);
    }

    /// Write every unit (the store commits them together); resolves to the callbacks
    /// to deliver: the stored ones, and those the store failed to keep (delivered
    /// without durability), never those of a lost lease.
    fn store(self, conference: &Conference, stats: &Arc<WebhookStats>) -> Stored {
        let stats = stats.clone();
        let writes: Vec<_> = self
            .units
            .into_iter()
            .map(|u| {
                let ops: Vec<StoreOp> = u
                    .fence
                    .map(|(session_id, epoch)| StoreOp::Fence { session_id, epoch })
                    .into_iter()
                    .chain(u.webhooks.iter().cloned().map(StoreOp::PutWebhook))
                    .chain(u.track)
                    .collect();
                (u.webhooks, conference.commit(ops))
            })
            .collect();
        async move {
            let mut deliver = Vec::new();
            for (webhooks, write) in writes {
                match write.await {
                    Ok(()) => deliver.extend(webhooks),
                    Err(ConferenceError::Store(StoreError::Fenced)) => {
                        stats.fenced.fetch_add(webhooks.len() as u64, Relaxed);
                        tracing::warn!(count = webhooks.len(), "callbacks of a session this node no longer owns: not sent");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "storing callbacks; delivering without durability");
                        deliver.extend(webhooks);
                    }
                }
            }
            deliver
        }
        .boxed()
    }
}

type Stored = BoxFuture<'static, Vec<Webhook>>;

/// How long a callback waits before looking again for an older one of its participant
/// on another node.
const HOLD_FOR_OLDER: u64 = 500;

/// Take out of `due` (deferring them in `outbox`) the callbacks of participants with an
/// older callback pending on another node: a participant whose session moved between
/// nodes gets its events in order. One query for the whole batch; a store that does
/// not answer within a second delays nothing (at-least-once before order).
async fn hold_for_older_elsewhere(
    cluster: &dyn patchbay_conference::store::Cluster,
    outbox: &mut Outbox,
    due: &mut Vec<Webhook>,
) {
    let mut participants: Vec<Uuid> = due.iter().map(|w| w.participant_id).collect();
    participants.sort();
    participants.dedup();
    let oldest = match tokio::time::timeout(
        Duration::from_secs(1),
        cluster.oldest_elsewhere(participants),
    )
    .await
    {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "looking for older callbacks on other nodes");
            return;
        }
        Err(_) => return,
    };
    let later = now_ms() + HOLD_FOR_OLDER;
    due.retain(|w| {
        let older = oldest
            .get(&w.participant_id)
            .is_some_and(|&at| at < w.created_ms as i64);
        if older {
            tracing::debug!(participant_id = %w.participant_id, id = w.id, "callback held: an older one waits on another node");
            outbox.defer(w.participant_id, w.id, later);
        }
        !older
    });
}

async fn run(
    conference: Arc<Conference>,
    options: WebhookOptions,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    stats: Arc<WebhookStats>,
) {
    let mut outbox = Outbox::new(options.policy);
    let mut next_id = 1;
    let left = conference.take_leftovers();
    if !left.webhooks.is_empty() {
        tracing::info!(
            count = left.webhooks.len(),
            "undelivered callbacks from the last run"
        );
    }
    if !left.connections.is_empty() {
        tracing::info!(
            count = left.connections.len(),
            "devices and calls left connected by the last run: ending them"
        );
    }
    let at = now_ms();
    let recovered: Vec<NewEvent> = left
        .connections
        .into_iter()
        .flat_map(|c| recovery_events(c, at, RESTART_REASON))
        .collect();
    for w in left.webhooks {
        next_id = next_id.max(w.id + 1);
        outbox.push(w);
    }
    stats.pending.store(outbox.len() as u64, Relaxed);
    let client = match reqwest::Client::builder()
        .timeout(options.timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Host names resolve only to addresses the egress policy allows.
        .dns_resolver(Arc::new(crate::egress::PolicyResolver(
            options.egress.clone(),
        )))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook HTTP client; callbacks are not delivered");
            return;
        }
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Uuid, i64, Result<(), String>)>();
    // Events waiting for the store, and the write in progress.
    let mut to_store = ToStore::default();
    for ev in recovered {
        to_store.admit(ev, &mut next_id, &stats);
    }
    let mut storing: Option<Stored> = None;
    let mut due = Vec::new();
    let mut open = true;
    let mut flushes: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let cluster = conference.cluster();
    let mut take_over = tokio::time::interval(TAKE_OVER_EVERY);
    loop {
        // Start what is due (in a cluster, what no older callback of its participant
        // waits for on another node).
        outbox.due(now_ms(), &mut due);
        if let (Some(cluster), false) = (&cluster, due.is_empty()) {
            hold_for_older_elsewhere(cluster.as_ref(), &mut outbox, &mut due).await;
        }
        for w in due.drain(..) {
            let (client, permits, done, secret, egress) = (
                client.clone(),
                permits.clone(),
                done_tx.clone(),
                options.secret.clone(),
                options.egress.clone(),
            );
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                // IP-literal URLs never reach the resolver: check them here.
                let result = match egress.check_url(&w.url) {
                    Ok(_) => deliver(&client, &w, secret.as_deref()).await,
                    Err(e) => Err(e),
                };
                let _ = done.send((w.participant_id, w.id, result));
            });
        }
        if storing.is_none() && !to_store.is_empty() {
            storing = Some(std::mem::take(&mut to_store).store(&conference, &stats));
        }
        if storing.is_none() && to_store.is_empty() {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
        }
        if !open && storing.is_none() && outbox.is_empty() {
            return;
        }
        let wake = outbox.next_due().map(|at| {
            tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()))
        });
        tokio::select! {
            ev = rx.recv(), if open => {
                let Some(ev) = ev else {
                    open = false;
                    continue;
                };
                let mut take = |cmd: Cmd| match cmd {
                    Cmd::Event(ev) => to_store.admit(*ev, &mut next_id, &stats),
                    Cmd::Flush(done) => flushes.push(done),
                };
                take(ev);
                while let Ok(ev) = rx.try_recv() {
                    take(ev);
                }
            }
            stored = async { match storing.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                storing = None;
                stats.pending.fetch_add(stored.len() as u64, Relaxed);
                for w in stored {
                    outbox.push(w);
                }
            }
            Some((participant, id, result)) = done_rx.recv() => {
                let now = now_ms();
                match result {
                    Ok(()) => {
                        if let Some(created) = outbox.created_ms(participant, id) {
                            stats.latency.observe(Duration::from_millis(now.saturating_sub(created)));
                        }
                        outbox.delivered(participant, id);
                        stats.delivered.fetch_add(1, Relaxed);
                        stats.pending.fetch_sub(1, Relaxed);
                        drop(conference.commit(vec![StoreOp::DeleteWebhook(id)]));
                    }
                    Err(why) => match outbox.failed(participant, id, now, rand::random::<f64>()) {
                        AfterFailure::Retry { attempts, next_ms } => {
                            tracing::info!(%participant, id, attempts, retry_in_ms = next_ms.saturating_sub(now), reason = %why, "callback failed; will retry");
                            stats.retried.fetch_add(1, Relaxed);
                            drop(conference.commit(vec![StoreOp::RetryWebhook { id, attempts, next_ms }]));
                        }
                        AfterFailure::GiveUp => {
                            tracing::warn!(%participant, id, reason = %why, "callback given up after the retry period");
                            stats.failed.fetch_add(1, Relaxed);
                            stats.pending.fetch_sub(1, Relaxed);
                            drop(conference.commit(vec![StoreOp::DeleteWebhook(id)]));
                        }
                    },
                }
            }
            _ = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
            _ = take_over.tick(), if cluster.is_some() && open => {
                let Some(cluster) = &cluster else { continue };
                let mut taken = match tokio::time::timeout(TAKE_OVER_EVERY, cluster.take_over(options.cluster_lease, next_id)).await {
                    Ok(Ok(taken)) => taken,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "taking over the outbox of stopped nodes");
                        continue;
                    }
                    Err(_) => continue,
                };
                if !taken.webhooks.is_empty() || !taken.connections.is_empty() || !taken.dialogs.is_empty() {
                    tracing::info!(webhooks = taken.webhooks.len(), connections = taken.connections.len(), dialogs = taken.dialogs.len(), "took over the outbox, connections and dialogs of a stopped node");
                }
                conference.adopt_dialogs(std::mem::take(&mut taken.dialogs));
                stats.pending.fetch_add(taken.webhooks.len() as u64, Relaxed);
                for w in taken.webhooks {
                    next_id = next_id.max(w.id + 1);
                    // Older than this node's own callbacks of the participant, if any.
                    outbox.push_taken(w);
                }
                let at = now_ms();
                for ev in taken.connections.into_iter().flat_map(|c| recovery_events(c, at, NODE_LOST_REASON)) {
                    to_store.admit(ev, &mut next_id, &stats);
                }
            }
        }
    }
}

/// One attempt: POST the body; Ok on a 2xx.
async fn deliver(
    client: &reqwest::Client,
    w: &Webhook,
    secret: Option<&str>,
) -> Result<(), String> {
    let mut req = client
        .post(&w.url)
        .header("content-type", "application/json")
        .header("X-Patchbay-Event-Id", w.event_id.to_string());
    if let Some(secret) = secret {
        req = req.header(SIGNATURE_HEADER, signature(secret, w.body.as_bytes()));
    }
    match req.body(w.body.clone()).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) if e.is_timeout() => Err("timed out".into()),
        Err(e) => Err(e.to_string()),
    }
}

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
