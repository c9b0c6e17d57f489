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
//! stream that moves messages between the socket and the sink. Protocols: `twilio`.

pub mod sink;
pub mod twilio;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use patchbay_conference::events::DeviceOwner;
use patchbay_conference::media::codec::AudioCodec;
use patchbay_conference::media::session::{LegId, LegMedia, SessionInput};
use patchbay_conference::{Participant, Placement, StreamProtocol};
use tokio::sync::{mpsc, watch};
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

/// Keep a bot connected for each stream participant in a session whose media runs here.
pub fn start(app: AppState) {
    tokio::spawn(async move {
        let mut running: HashMap<Uuid, Running> = HashMap::new();
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
            for (id, (p, session)) in want {
                if running.contains_key(&id)
                    || retry_at.contains_key(&id)
                    || running.len() >= MAX_STREAMS
                {
                    continue;
                }
                let (stop, stopped) = watch::channel(false);
                running.insert(id, Running { session, stop });
                tokio::spawn(run_stream(app.clone(), p, stopped));
            }
        }
    });
}

/// One stream, from connecting to its end.
async fn run_stream(app: AppState, p: Participant, mut stopped: watch::Receiver<bool>) {
    let Some(m) = p.media_stream.clone() else {
        return;
    };
    if m.protocol != StreamProtocol::Twilio {
        tracing::warn!(participant_id = %p.id, protocol = ?m.protocol, "this stream protocol is not served yet");
        return;
    }
    // In a cluster the node that runs the session's media (or takes it now) connects.
    if let Some(sid) = p.session_id {
        match app.conference.place_session(sid).await {
            Ok(Placement::Here) => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(participant_id = %p.id, error = %e, "placing a stream's session failed");
                return;
            }
        }
    }
    let ws = match connect(&app, &m.url).await {
        Ok(ws) => ws,
        Err(e) => {
            app.metrics.stream_connect_failures.inc();
            tracing::warn!(participant_id = %p.id, error = %e, "the bot's WebSocket could not be opened");
            return;
        }
    };
    let (mut tx, mut rx) = ws.split();
    let ids = twilio::Ids {
        stream_sid: format!("MZ{}", Uuid::new_v4().simple()),
        call_sid: format!("CA{}", p.id.simple()),
        account_sid: p.account_id.clone(),
    };
    let mut writer = twilio::Writer::new(ids.clone());
    let custom = m
        .custom_parameters
        .clone()
        .map(serde_json::Value::Object)
        .unwrap_or_else(|| serde_json::json!({}));
    for text in writer.opening(&custom) {
        if tx.send(Message::text(text)).await.is_err() {
            return;
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel(sink::OUT_QUEUE);
    let bot = Arc::new(BotSink::new(out_tx));
    let joined = match app.conference.join_stream(p.id) {
        Ok(Some(j)) => j,
        Ok(None) => return,
        Err(e) => {
            tracing::info!(participant_id = %p.id, error = %e, "the stream's session runs elsewhere");
            return;
        }
    };
    let (participant, session) = joined;
    let (media_tx, media) = watch::channel(LegMedia {
        codec: AudioCodec::Pcmu,
        payload_type: 0,
        event_payload_type: Some(101),
        event_clock: 8000,
        ptime_ms: 20,
    });
    let leg = LegId(NEXT_STREAM_LEG.fetch_add(1, Relaxed));
    let joined = session.send(SessionInput::Join {
        leg,
        owner: DeviceOwner::of(&participant),
        call_id: ids.stream_sid.as_str().into(),
        media,
        sink: bot.clone(),
    });
    if !joined {
        tracing::warn!(participant_id = %p.id, "the session's media did not take the stream (busy); it is tried again");
        let _ = tx.send(Message::text(writer.message(&ToBot::Stop))).await;
        return;
    }
    app.metrics.streams_connected.inc();
    tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, %leg, "stream connected");
    let mut dropped = (0, 0);
    loop {
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    let _ = tx.send(Message::text(writer.message(&ToBot::Stop))).await;
                    break;
                }
            }
            out = out_rx.recv() => {
                let Some(out) = out else { break };
                let stop = out == ToBot::Stop;
                if tx.send(Message::text(writer.message(&out))).await.is_err() || stop {
                    break;
                }
            }
            frame = rx.next() => {
                match frame {
                    Some(Ok(Message::Text(t))) => match twilio::parse(&t) {
                        Ok(twilio::FromBot::Media(ulaw)) => bot.push_audio(&ulaw),
                        Ok(twilio::FromBot::Mark(name)) => bot.mark(name),
                        Ok(twilio::FromBot::Clear) => bot.clear(),
                        Ok(twilio::FromBot::Other) => {}
                        Err(why) => {
                            app.metrics.stream_invalid_messages.inc();
                            tracing::debug!(participant_id = %p.id, why, "a frame from the bot was ignored");
                        }
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
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
    }
    // The leg leaves the session's media when its media watch goes.
    drop(media_tx);
    let _ = tx.close().await;
    app.metrics.streams_connected.dec();
    tracing::info!(participant_id = %p.id, stream_sid = %ids.stream_sid, "stream ended");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open the bot's WebSocket, to an address the egress policy allows (the name is
/// resolved once and the checked address is the one connected to).
async fn connect(app: &AppState, url: &str) -> Result<Ws, String> {
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
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async_tls_with_config(url, tcp, Some(config), None),
    )
    .await
    .map_err(|_| "the WebSocket handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(ws)
}
