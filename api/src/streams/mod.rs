//! Stream participants (voice bots): a participant created with a `mediaStream` has a
//! bot instead of a device. While it is in a session whose media runs on this node,
//! Patchbay keeps a WebSocket open to the bot: what the participant hears (as its
//! subscriptions say) goes there as one mix, what the bot sends is the participant's
//! audio stream. The participant joins the session's media as an audio endpoint like a
//! SIP leg ([`sink::BotSink`] in place of an RTP socket), so the mixer, routing,
//! browsers, recordings and DTMF treat it as they treat a caller.
//!
//! Here: the supervisor (which stream participants should have a bot connected) and one
//! task per stream that opens its connection (`conn`: egress-checked like webhooks,
//! `ws://` or `wss://`), hands it to the sink, and waits for it to end to connect again
//! or let the participant go. The session's media task moves the stream's messages
//! (`sink`), not this one. Protocols: `twilio`, `bandwidth`, `raw` (`wire`).

pub mod bandwidth;
pub mod conn;
pub mod rate;
pub mod raw;
pub mod sink;
pub mod twilio;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchbay_conference::events::{
    DeviceEvent, DeviceEventKind, DeviceOwner, DeviceSource, EventSink,
};
use patchbay_conference::media::session::SessionInput;
use patchbay_conference::{ChangeKind, Participant, Placement, StreamProtocol};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;
use conn::Link;
use sink::{BotSink, Ended, ToBot};
use wire::Wire;

/// The supervisor compares the stream participants in sessions with the bots connected
/// when a participant changes (here or, in a cluster, followed from another node), when
/// a stream ends, and at least this often (a session's media placed on this node, a
/// retry due).
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
/// Changes arriving together are looked at once (a burst of REST calls).
const COALESCE: Duration = Duration::from_millis(50);
/// A stream that ended by itself is opened again after this.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Streams connected at once on this node.
pub const MAX_STREAMS: usize = 1000;

/// A stream's URL as the webhook egress policy sees callbacks: `ws://` or `wss://`, no
/// user info, an address the operator allows.
pub async fn check_stream_url(app: &AppState, url: &str) -> Result<(), ApiError> {
    crate::routes::check_outbound_url(app, url, "mediaStream.url", &["ws", "wss"]).await
}

struct Running {
    session: Uuid,
    stop: watch::Sender<bool>,
}

/// Streams that ended for good in their session (the bot closed it, or did not come
/// back within `stream_retry_for`): not opened again until the participant is in
/// another session (or this one again after leaving it).
type Done = Arc<std::sync::Mutex<HashMap<Uuid, Uuid>>>;

fn done_lock(d: &Done) -> std::sync::MutexGuard<'_, HashMap<Uuid, Uuid>> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keep a bot connected for each stream participant in a session whose media runs here.
pub fn start(app: AppState, retry_for: Duration) {
    tokio::spawn(async move {
        let mut running: HashMap<Uuid, Running> = HashMap::new();
        let done: Done = Default::default();
        let mut refused: std::collections::HashSet<Uuid> = Default::default();
        // A stream that ended by itself (its bot went, or its session runs elsewhere)
        // is tried again after a pause.
        let mut retry_at: HashMap<Uuid, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(SUPERVISE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = app.conference.changes();
        let stream_ended = Arc::new(tokio::sync::Notify::new());
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stream_ended.notified() => {}
                change = changes.recv() => match change {
                    // Only a stream participant's change (or the deletion of one whose
                    // stream runs) is worth a look at every stream participant.
                    Ok(c) if c.kind != ChangeKind::Participant
                        || !(running.contains_key(&c.id) || app.conference.is_stream(c.id)) =>
                    {
                        continue
                    }
                    // A stream participant changed, or changes were missed (lagged): look.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
            tokio::time::sleep(COALESCE).await;
            while changes.try_recv().is_ok() {}
            let now = Instant::now();
            running.retain(|id, r| {
                let ended = r.stop.is_closed();
                if ended {
                    retry_at.insert(*id, now + RETRY_AFTER);
                }
                !ended
            });
            retry_at.retain(|_, at| *at > now);
            let want: HashMap<Uuid, (Participant, Uuid)> = app
                .conference
                .streams_in_sessions()
                .into_iter()
                .map(|(p, s)| (p.id, (p, s)))
                .collect();
            // Removed, deleted, or moved to another session: its stream ends.
            running.retain(|id, r| {
                let keep = want.get(id).is_some_and(|(_, s)| *s == r.session);
                if !keep {
                    let _ = r.stop.send(true);
                }
                keep
            });
            done_lock(&done).retain(|id, s| want.get(id).is_some_and(|(_, w)| w == s));
            refused.retain(|id| want.contains_key(id) && !running.contains_key(id));
            for (id, (p, session)) in want {
                if running.contains_key(&id)
                    || retry_at.contains_key(&id)
                    || done_lock(&done).contains_key(&id)
                {
                    continue;
                }
                if running.len() >= MAX_STREAMS {
                    // Counted once per participant while it waits.
                    if refused.insert(id) {
                        app.metrics.stream_connect_failures.inc();
                        tracing::warn!(participant_id = %id, "this node runs {MAX_STREAMS} streams: the stream waits");
                    }
                    continue;
                }
                let (stop, stopped) = watch::channel(false);
                running.insert(id, Running { session, stop });
                let (app, done, ended) = (app.clone(), done.clone(), stream_ended.clone());
                tokio::spawn(async move {
                    run_stream(app, p, retry_for, stopped, done).await;
                    ended.notify_one();
                });
            }
        }
    });
}

/// Where a stream connects and what it opens with.
struct Target<'a> {
    url: &'a str,
    custom: &'a serde_json::Value,
    /// Sent with the handshake (checked when the participant was created).
    headers: Option<&'a std::collections::BTreeMap<String, String>>,
    retry_for: Duration,
}

/// One stream participant's stream, from its first connection to its end: the
/// participant joins the session's media once connected and stays while its bot's
/// WebSocket is connected again after drops (for `retry_for`, with backoff; silence
/// meanwhile, `onDisconnect` then `onConnect`); after that it leaves (`onLeave`).
async fn run_stream(
    app: AppState,
    p: Participant,
    retry_for: Duration,
    mut stopped: watch::Receiver<bool>,
    done: Done,
) {
    let Some(m) = p.media_stream.clone() else {
        return;
    };
    // In a cluster the node that runs the session's media (or takes it now) connects.
    let Some(sid) = p.session_id else {
        return;
    };
    match app.conference.place_session(sid).await {
        Ok(Placement::Here) => {}
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(participant_id = %p.id, error = %e, "placing a stream's session failed");
            return;
        }
    }
    let ids = twilio::Ids {
        stream_sid: format!("MZ{}", Uuid::new_v4().simple()),
        call_sid: format!("CA{}", p.id.simple()),
        account_sid: p.account_id.clone(),
    };
    let custom = m
        .custom_parameters
        .clone()
        .map(serde_json::Value::Object)
        .unwrap_or_else(|| serde_json::json!({}));
    let wire = match m.protocol {
        StreamProtocol::Bandwidth => Wire::Bandwidth(
            bandwidth::Writer::new(ids.clone()),
            bandwidth::Reader::default(),
        ),
        StreamProtocol::Raw => Wire::Raw(Box::new(raw::Wire::new(
            ids.clone(),
            p.id.to_string(),
            m.sample_rate,
        ))),
        StreamProtocol::Twilio => Wire::Twilio(twilio::Writer::new(ids.clone())),
    };
    let counters = sink::Counters {
        dropped: app.metrics.stream_dropped.clone(),
        invalid: app.metrics.stream_invalid_messages.clone(),
    };
    let bot = Arc::new(BotSink::new(wire, counters));
    let target = Target {
        url: &m.url,
        custom: &custom,
        headers: m.headers.as_ref(),
        retry_for,
    };
    let first = match open(&app, &p, &target, &bot).await {
        Some(link) => Some(link),
        None => reconnect(&app, &p, &target, &bot, &mut stopped).await,
    };
    let Some(Link { ws }) = first else {
        if !*stopped.borrow() {
            tracing::warn!(participant_id = %p.id, "the bot could not be reached; the stream is given up in this session");
            done_lock(&done).insert(p.id, sid);
        }
        return;
    };
    bot.attach(ws);
    let (participant, session) = match app.conference.join_stream(p.id) {
        Ok(Some(j)) => j,
        Ok(None) => return,
        Err(e) => {
            tracing::info!(participant_id = %p.id, error = %e, "the stream's session runs elsewhere");
            return;
        }
    };
    let (media_tx, media) = watch::channel(bot.format().leg_media());
    let leg = app.conference.media().new_leg();
    let owner = DeviceOwner::of(&participant);
    let joined = session.send(SessionInput::Join {
        leg,
        owner: owner.clone(),
        call_id: ids.stream_sid.as_str().into(),
        media,
        sink: bot.clone(),
    });
    if !joined {
        tracing::warn!(participant_id = %p.id, "the session's media did not take the stream (busy); it is tried again");
        stop(&bot).await;
        return;
    }
    app.metrics.streams_connected.inc();
    tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, %leg, "stream connected");
    let event = |kind| DeviceEvent {
        session_id: sid,
        kind,
        source: DeviceSource::Sip,
        owner: owner.clone(),
        device_id: ids.stream_sid.clone(),
        at_ms: patchbay_conference::media::session::unix_us() / 1000,
        reason: None,
    };
    loop {
        let ended = tokio::select! {
            _ = bot.ended.notified() => match bot.take_ended() {
                Some(e) => e,
                None => continue,
            },
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    // Removed, deleted or moved: the bot is told `stop`.
                    stop(&bot).await;
                    break;
                }
                continue;
            }
        };
        match ended {
            Ended::Stopped => {
                // The session's media sent `stop` (the participant left it).
                if let Some(ws) = bot.detach() {
                    Link { ws }.close().await;
                }
                break;
            }
            Ended::Closed => {
                tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, "the bot closed the stream; the participant leaves");
                done_lock(&done).insert(p.id, sid);
                break;
            }
            Ended::Dropped => {}
        }
        app.metrics.streams_connected.dec();
        app.webhooks
            .device_event(event(DeviceEventKind::Disconnect));
        tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, "the bot's WebSocket dropped; connecting again");
        // What was not played is not played late.
        bot.clear();
        let Some(again) = reconnect(&app, &p, &target, &bot, &mut stopped).await else {
            tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, "the bot did not come back; the participant leaves");
            if !*stopped.borrow() {
                bot.set_leave_reason(sink::BOT_GONE);
                done_lock(&done).insert(p.id, sid);
            }
            // The leg leaves the session's media when its media watch goes: `onLeave`.
            drop(media_tx);
            return;
        };
        bot.attach(again.ws);
        app.metrics.streams_connected.inc();
        app.webhooks.device_event(event(DeviceEventKind::Connect));
    }
    drop(media_tx);
    app.metrics.streams_connected.dec();
    tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, "stream ended");
}

/// Take the connection from the session's media, send `stop` and close it.
async fn stop(bot: &BotSink) {
    let Some(ws) = bot.detach() else {
        return;
    };
    let mut link = Link { ws };
    if let Some(stop) = bot.message(ToBot::Stop) {
        let _ = link.send_all(vec![stop]).await;
    }
    link.close().await;
}

/// Connect and send the protocol's opening messages.
async fn open(app: &AppState, p: &Participant, to: &Target<'_>, bot: &BotSink) -> Option<Link> {
    let mut link = match conn::connect(app, to.url, to.headers).await {
        Ok(link) => link,
        Err(e) => {
            app.metrics.stream_connect_failures.inc();
            tracing::warn!(participant_id = %p.id, error = %e, "the bot's WebSocket could not be opened");
            return None;
        }
    };
    if link.send_all(bot.opening(to.custom)).await.is_err() {
        app.metrics.stream_connect_failures.inc();
        return None;
    }
    Some(link)
}

/// Connect again with backoff (250 ms doubling to 5 s) for at most `retry_for`, unless
/// the stream is stopped meanwhile.
async fn reconnect(
    app: &AppState,
    p: &Participant,
    to: &Target<'_>,
    bot: &BotSink,
    stopped: &mut watch::Receiver<bool>,
) -> Option<Link> {
    let until = Instant::now() + to.retry_for;
    let mut backoff = Duration::from_millis(250);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    return None;
                }
            }
        }
        if Instant::now() >= until {
            return None;
        }
        if let Some(link) = open(app, p, to, bot).await {
            return Some(link);
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
