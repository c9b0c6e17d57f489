//! The outbox task: events are stored (batched, fenced per session) before their first
//! attempt, then delivered per participant in order, retried with backoff, deleted
//! once delivered or given up; in a cluster it also takes over stopped nodes' rows and
//! holds a participant's callbacks while an older one waits on another node.

use super::*;
use patchbay_conference::webhooks::{AfterFailure, Outbox};

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
    /// to deliver (the stored ones, and unfenced ones the store failed to keep:
    /// delivered without durability) and the fenced units to write again (a session's
    /// events are never sent without the proof that this node still owns it); never
    /// the callbacks of a lost lease.
    fn store(self, conference: &Conference, stats: &Arc<WebhookStats>) -> Stored {
        let stats = stats.clone();
        let writes: Vec<_> = self
            .units
            .into_iter()
            .map(|u| {
                let again = u.fence.is_some().then(|| Unit {
                    fence: u.fence,
                    webhooks: u.webhooks.clone(),
                    track: u.track.clone(),
                });
                let ops: Vec<StoreOp> = u
                    .fence
                    .map(|(session_id, epoch)| StoreOp::Fence { session_id, epoch })
                    .into_iter()
                    .chain(u.webhooks.iter().cloned().map(StoreOp::PutWebhook))
                    .chain(u.track)
                    .collect();
                (u.webhooks, again, conference.commit(ops))
            })
            .collect();
        async move {
            let (mut deliver, mut retry) = (Vec::new(), Vec::new());
            for (webhooks, again, write) in writes {
                match (write.await, again) {
                    (Ok(()), _) => deliver.extend(webhooks),
                    (Err(ConferenceError::Store(StoreError::Fenced)), _) => {
                        stats.fenced.fetch_add(webhooks.len() as u64, Relaxed);
                        tracing::warn!(count = webhooks.len(), "callbacks of a session this node no longer owns: not sent");
                    }
                    (Err(e), Some(unit)) => {
                        tracing::error!(error = %e, count = webhooks.len(), "storing a session's callbacks failed; writing them again (never sent unfenced)");
                        retry.push(unit);
                    }
                    (Err(e), None) => {
                        tracing::error!(error = %e, "storing callbacks; delivering without durability");
                        deliver.extend(webhooks);
                    }
                }
            }
            (deliver, retry)
        }
        .boxed()
    }
}

/// What a write gave: the callbacks to deliver, the fenced units to write again.
type Stored = BoxFuture<'static, (Vec<Webhook>, Vec<Unit>)>;

/// How long a failed fenced write waits before it is tried again.
const STORE_RETRY: Duration = Duration::from_millis(500);

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

pub(super) async fn run(
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
        stats.log.stored(&w, at);
        outbox.push(w);
    }
    stats.pending.store(outbox.len() as u64, Relaxed);
    let client = match reqwest::Client::builder()
        .timeout(options.timeout)
        // Never through HTTP(S)_PROXY: the proxy would resolve the name, past the policy.
        .no_proxy()
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
    // After a failed fenced write: not before this.
    let mut store_after: Option<tokio::time::Instant> = None;
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
        let may_store = store_after.is_none_or(|t| tokio::time::Instant::now() >= t);
        if storing.is_none() && !to_store.is_empty() && may_store {
            storing = Some(std::mem::take(&mut to_store).store(&conference, &stats));
        }
        if storing.is_none() && to_store.is_empty() {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
        }
        if !open
            && storing.is_none()
            && outbox.is_empty()
            && (to_store.is_empty() || store_after.is_some())
        {
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
            (stored, again) = async { match storing.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                storing = None;
                if again.is_empty() {
                    store_after = None;
                } else {
                    // First in line again, after a pause.
                    let mut units = again;
                    units.append(&mut to_store.units);
                    to_store.units = units;
                    store_after = Some(tokio::time::Instant::now() + STORE_RETRY);
                }
                stats.pending.fetch_add(stored.len() as u64, Relaxed);
                let at = now_ms();
                for w in stored {
                    stats.log.stored(&w, at);
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
                        stats.log.delivered(id, now);
                        stats.delivered.fetch_add(1, Relaxed);
                        stats.pending.fetch_sub(1, Relaxed);
                        drop(conference.commit(vec![StoreOp::DeleteWebhook(id)]));
                    }
                    Err(why) => match outbox.failed(participant, id, now, rand::random::<f64>()) {
                        AfterFailure::Retry { attempts, next_ms } => {
                            stats.log.retrying(id, attempts, next_ms, &why, now);
                            tracing::info!(%participant, id, attempts, retry_in_ms = next_ms.saturating_sub(now), reason = %why, "callback failed; will retry");
                            stats.retried.fetch_add(1, Relaxed);
                            drop(conference.commit(vec![StoreOp::RetryWebhook { id, attempts, next_ms }]));
                        }
                        AfterFailure::GiveUp => {
                            stats.log.failed(id, &why, now);
                            tracing::warn!(%participant, id, reason = %why, "callback given up after the retry period");
                            stats.failed.fetch_add(1, Relaxed);
                            stats.pending.fetch_sub(1, Relaxed);
                            drop(conference.commit(vec![StoreOp::DeleteWebhook(id)]));
                        }
                    },
                }
            }
            _ = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
            _ = async { match store_after { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } }, if storing.is_none() && !to_store.is_empty() => {}
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
                    stats.log.stored(&w, now_ms());
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
