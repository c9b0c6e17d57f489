//! Stream participants (voice bots): a participant created with a `mediaStream` has a
//! bot instead of a device. While it is in a session whose media runs on this node,
//! Patchbay keeps a WebSocket open to the bot: what the participant hears (as its
//! subscriptions say) goes there as one mix, what the bot sends is the participant's
//! audio stream. The participant joins the session's media as an audio endpoint like a
//! SIP leg ([`sink::BotSink`] in place of an RTP socket), so the mixer, routing,
//! browsers, recordings and DTMF treat it as they treat a caller.
//!
//! Here: the supervisor (which stream participants should have a bot connected), the
//! connection (egress-checked like webhooks, `ws://` or `wss://`), and one task per
//! stream that moves messages between the socket and the sink. Protocols: `twilio`,
//! `bandwidth`, `raw`.

pub mod bandwidth;
pub mod rate;
pub mod raw;
pub mod sink;
pub mod twilio;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use patchbay_conference::events::{
    DeviceEvent, DeviceEventKind, DeviceOwner, DeviceSource, EventSink,
};
use patchbay_conference::media::session::{LegId, SessionInput};
use patchbay_conference::{Participant, Placement, StreamProtocol};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;
use sink::{BotSink, ToBot};

/// How often the supervisor compares the stream participants in sessions with the
/// bots connected.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);
/// A stream that ended by itself is opened again after this.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Largest frame a bot may send (a second of μ-law is 8 KB; base64 and JSON add a
/// third).
const MAX_FRAME: usize = 1 << 20;
/// Bytes read from a bot's socket at a time (a 20 ms frame's message is under 1 KiB).
const READ_BUFFER: usize = 4096;
/// Streams connected at once on this node.
pub const MAX_STREAMS: usize = 1000;
/// Stream legs are numbered from here (SIP legs count from 1: the two never meet).
const STREAM_LEGS: u64 = 1 << 62;
static NEXT_STREAM_LEG: AtomicU64 = AtomicU64::new(STREAM_LEGS);

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
        loop {
            tick.tick().await;
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
                tokio::spawn(run_stream(app.clone(), p, retry_for, stopped, done.clone()));
            }
        }
    });
}

/// The `reason` of a stream participant's `onLeave` when its bot closed the stream.
pub const BOT_CLOSED: &str = "the bot closed the stream";
/// The `reason` of its `onLeave` when the bot's WebSocket dropped and did not come back
/// within `stream_retry_for`.
pub const BOT_GONE: &str =
    "the bot's WebSocket dropped and did not come back within stream_retry_for";

/// The protocol spoken with one bot.
enum Wire {
    Twilio(twilio::Writer),
    Bandwidth(bandwidth::Writer, bandwidth::Reader),
    Raw(raw::Wire),
}

impl Wire {
    fn opening(&mut self, custom: &serde_json::Value) -> Vec<String> {
        match self {
            Wire::Twilio(w) => w.opening(custom),
            Wire::Bandwidth(w, _) => w.opening(custom),
            Wire::Raw(w) => w.opening(custom),
        }
    }

    /// None: the protocol has no such message.
    fn message(&mut self, m: &ToBot) -> Option<Message> {
        match self {
            Wire::Twilio(w) => Some(Message::text(w.message(m))),
            Wire::Bandwidth(w, _) => w.message(m).map(Message::text),
            Wire::Raw(w) => Some(match w.message(m) {
                raw::Frame::Text(t) => Message::text(t),
                raw::Frame::Binary(b) => Message::binary(b),
            }),
        }
    }

    fn parse(&mut self, text: &str) -> Result<twilio::FromBot, &'static str> {
        match self {
            Wire::Twilio(_) => twilio::parse(text),
            Wire::Bandwidth(_, r) => r.parse(text),
            Wire::Raw(w) => w.parse(text),
        }
    }

    /// What the bot's endpoint carries in the session core.
    fn format(&self) -> sink::Format {
        match self {
            Wire::Raw(w) => w.format(),
            Wire::Twilio(_) | Wire::Bandwidth(..) => sink::Format::Mulaw,
        }
    }

    /// A binary frame: audio in `raw`, not a message in the others.
    fn binary(&mut self, bytes: &[u8]) -> Result<twilio::FromBot, &'static str> {
        match self {
            Wire::Raw(w) => w.audio(bytes),
            _ => Err("a binary frame (this protocol's messages are text)"),
        }
    }
}

/// Where a stream connects and what it opens with.
struct Target<'a> {
    url: &'a str,
    custom: &'a serde_json::Value,
    /// Sent with the handshake (checked when the participant was created).
    headers: Option<&'a std::collections::BTreeMap<String, String>>,
    retry_for: Duration,
}

/// How a connection to the bot ended.
enum Ended {
    /// The participant left the session's media (removed, deleted, session ended): the
    /// bot was sent `stop`.
    Stopped,
    /// The bot closed the WebSocket (a close frame): it is done, the participant leaves.
    Closed,
    /// The WebSocket dropped without a close: connected again.
    Dropped,
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
    let mut writer = match m.protocol {
        StreamProtocol::Bandwidth => Wire::Bandwidth(
            bandwidth::Writer::new(ids.clone()),
            bandwidth::Reader::default(),
        ),
        StreamProtocol::Raw => {
            Wire::Raw(raw::Wire::new(ids.clone(), p.id.to_string(), m.sample_rate))
        }
        StreamProtocol::Twilio => Wire::Twilio(twilio::Writer::new(ids.clone())),
    };
    let target = Target {
        url: &m.url,
        custom: &custom,
        headers: m.headers.as_ref(),
        retry_for,
    };
    let first = match open(&app, &p, &target, &mut writer).await {
        Some(ws) => Some(ws),
        None => reconnect(&app, &p, &target, &mut writer, &mut stopped).await,
    };
    let Some(mut ws) = first else {
        if !*stopped.borrow() {
            tracing::warn!(participant_id = %p.id, "the bot could not be reached; the stream is given up in this session");
            done_lock(&done).insert(p.id, sid);
        }
        return;
    };
    let (out_tx, mut out_rx) = mpsc::channel(sink::OUT_QUEUE);
    let format = writer.format();
    let bot = Arc::new(BotSink::new(out_tx, format));
    let (participant, session) = match app.conference.join_stream(p.id) {
        Ok(Some(j)) => j,
        Ok(None) => return,
        Err(e) => {
            tracing::info!(participant_id = %p.id, error = %e, "the stream's session runs elsewhere");
            return;
        }
    };
    let (media_tx, media) = watch::channel(format.leg_media());
    let leg = LegId(NEXT_STREAM_LEG.fetch_add(1, Relaxed));
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
        if let Some(stop) = writer.message(&ToBot::Stop) {
            let _ = ws.send(stop).await;
        }
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
    };
    loop {
        let ended = serve(
            &app,
            &p,
            &bot,
            &mut ws,
            &mut writer,
            &mut out_rx,
            &mut stopped,
        )
        .await;
        let _ = ws.close(None).await;
        match ended {
            Ended::Stopped => break,
            Ended::Closed => {
                tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, "the bot closed the stream; the participant leaves");
                app.webhooks.leave_reason(p.id, &ids.stream_sid, BOT_CLOSED);
                done_lock(&done).insert(p.id, sid);
                break;
            }
            Ended::Dropped => {}
        }
        app.metrics.streams_connected.dec();
        app.webhooks
            .device_event(event(DeviceEventKind::Disconnect));
        tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, "the bot's WebSocket dropped; connecting again");
        bot.clear();
        let Some(again) = reconnect(&app, &p, &target, &mut writer, &mut stopped).await else {
            tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, "the bot did not come back; the participant leaves");
            if !*stopped.borrow() {
                app.webhooks.leave_reason(p.id, &ids.stream_sid, BOT_GONE);
                done_lock(&done).insert(p.id, sid);
            }
            // The leg leaves the session's media when its media watch goes: `onLeave`.
            drop(media_tx);
            return;
        };
        ws = again;
        // What piled up while it was away is not sent late.
        while out_rx.try_recv().is_ok() {}
        app.metrics.streams_connected.inc();
        app.webhooks.device_event(event(DeviceEventKind::Connect));
    }
    drop(media_tx);
    app.metrics.streams_connected.dec();
    tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, "stream ended");
}

/// Connect and send the protocol's opening messages.
async fn open(app: &AppState, p: &Participant, to: &Target<'_>, writer: &mut Wire) -> Option<Ws> {
    let mut ws = match connect(app, to.url, to.headers).await {
        Ok(ws) => ws,
        Err(e) => {
            app.metrics.stream_connect_failures.inc();
            tracing::warn!(participant_id = %p.id, error = %e, "the bot's WebSocket could not be opened");
            return None;
        }
    };
    for text in writer.opening(to.custom) {
        if ws.send(Message::text(text)).await.is_err() {
            app.metrics.stream_connect_failures.inc();
            return None;
        }
    }
    Some(ws)
}

/// Connect again with backoff (250 ms doubling to 5 s) for at most `retry_for`, unless
/// the stream is stopped meanwhile.
async fn reconnect(
    app: &AppState,
    p: &Participant,
    to: &Target<'_>,
    writer: &mut Wire,
    stopped: &mut watch::Receiver<bool>,
) -> Option<Ws> {
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
        if let Some(ws) = open(app, p, to, writer).await {
            return Some(ws);
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Move messages between one connection and the sink until it ends.
async fn serve(
    app: &AppState,
    p: &Participant,
    bot: &BotSink,
    ws: &mut Ws,
    writer: &mut Wire,
    out_rx: &mut mpsc::Receiver<ToBot>,
    stopped: &mut watch::Receiver<bool>,
) -> Ended {
    let mut dropped = (
        bot.stats.dropped_in.load(Relaxed),
        bot.stats.dropped_out.load(Relaxed),
    );
    loop {
        let ended = tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    if let Some(stop) = writer.message(&ToBot::Stop) {
                        let _ = ws.send(stop).await;
                    }
                    Some(Ended::Stopped)
                } else {
                    None
                }
            }
            out = out_rx.recv() => match out {
                None => Some(Ended::Stopped),
                Some(out) => {
                    let stop = out == ToBot::Stop;
                    let sent = match writer.message(&out) {
                        Some(msg) => ws.send(msg).await,
                        None => Ok(()),
                    };
                    match sent {
                        Err(_) => Some(Ended::Dropped),
                        Ok(()) if stop => Some(Ended::Stopped),
                        Ok(()) => None,
                    }
                }
            },
            frame = ws.next() => match frame {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    let parsed = match &m {
                        Message::Text(t) => writer.parse(t),
                        _ => writer.binary(&m.into_data()),
                    };
                    match parsed {
                        Ok(twilio::FromBot::Media(audio)) => bot.push_audio(&audio),
                        Ok(twilio::FromBot::Mark(name)) => bot.mark(name),
                        Ok(twilio::FromBot::Clear) => bot.clear(),
                        Ok(twilio::FromBot::Other) => {}
                        Err(why) => {
                            app.metrics.stream_invalid_messages.inc();
                            tracing::debug!(participant_id = %p.id, why, "a frame from the bot was ignored");
                        }
                    }
                    None
                }
                Some(Ok(Message::Close(_))) => Some(Ended::Closed),
                None | Some(Err(_)) => Some(Ended::Dropped),
                Some(Ok(_)) => None,
            },
        };
        let now = (
            bot.stats.dropped_in.load(Relaxed),
            bot.stats.dropped_out.load(Relaxed),
        );
        if now != dropped {
            app.metrics
                .stream_dropped
                .inc_by((now.0 - dropped.0) + (now.1 - dropped.1));
            dropped = now;
        }
        if let Some(e) = ended {
            return e;
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open the bot's WebSocket, to an address the egress policy allows (the name is
/// resolved once and the checked address is the one connected to).
async fn connect(
    app: &AppState,
    url: &str,
    headers: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Ws, String> {
    let policy = &app.webhooks.egress;
    let u = policy.check_url_as(url, "mediaStream.url", &["ws", "wss"])?;
    let host = u.host_str().ok_or("no host")?;
    let port = u.port_or_known_default().ok_or("no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = policy.resolve(host, port).await?;
    let addr = addrs.first().ok_or("no address")?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| "connecting timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    // Reads of at most 4 KiB: tungstenite zero-fills its read buffer up to this size on
    // every read, and a stream reads 50 small messages a second (128 KiB, its default,
    // was 9 % of the gateway's CPU with 50 bots).
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
        .read_buffer_size(READ_BUFFER);
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    for (name, value) in headers.into_iter().flatten() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        request.headers_mut().insert(name, value);
    }
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), None),
    )
    .await
    .map_err(|_| "the WebSocket handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(ws)
}
