//! Device signaling for the Bandwidth browser SDK: WebSockets at `/v3` and `/v3/`
//! (the v3 protocol, [`v3`]) and at `/v2` and `/v2/` (the legacy v2 protocol, [`v2`]),
//! speaking JSON-RPC 2.0. The path picks the protocol (the SDK picks the path from its
//! token's `v` claim); both are adapters over the same session core.
//!
//! Shared here: the token is checked on connect (close 4401 with the reason for a bad,
//! expired or revoked token; 4400 without `uniqueId`); JSON-RPC errors for garbage
//! (-32700), malformed requests (-32600) and unknown methods (-32601); the connection
//! loop, which carries the session's notes to the client, its messages to the
//! protocol's adapter, and WebSocket pings that keep idle proxies from cutting it. The
//! media decides a device's life: a participant in no session is parked (the socket
//! stays open, nothing is routed) and moves to its session when added; a lost socket
//! may resume within 30 s with the same `uniqueId`; a new `uniqueId` replaces the old
//! device (1000); a dead heartbeat, silent peer connections or an unanswered offer end
//! it (4408); deleting the participant or its session ends it (4403); a `uniqueId`
//! another participant's device uses in the session is refused (4409).
//!
//! The session core speaks typed data (`Offer`, `EndpointRequest`, `PublishAnswer`);
//! the SDK's JSON-RPC is written in `v3` and `v2` only.

pub mod churn;
mod relay;
mod v2;
mod v3;

#[cfg(test)]
pub(crate) use v2::{handle as handle_v2, Outcome as OutcomeV2};
#[cfg(test)]
pub(crate) use v3::{handle, Outcome};

use std::collections::HashMap;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{json, Value};

use patchbay_conference::events::{DeviceClose, DeviceNote, DeviceOwner};
use patchbay_conference::media::session::{
    device_inbox, DeviceInput, DeviceKey, InboxSender, Protocol, PublishAnswer, PublishError,
    SessionInput, DEVICE_INPUTS, MAX_UNIQUE_ID_CHARS, NOTE_QUEUE,
};
use patchbay_conference::{Placement, PublishPermission};

use crate::AppState;

/// WebSocket close codes (4000-4999 are for applications).
pub mod close {
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const NOT_IN_SESSION: u16 = 4403;
    /// Heartbeat lost, or an `sdpOffer` left unanswered.
    pub const TIMEOUT: u16 = 4408;
    /// Another device of the same participant took over: a normal close, so that the
    /// SDK (which reconnects after any other code) does not take the participant back.
    pub const REPLACED: u16 = 1000;
    /// Its peer connection failed.
    pub const MEDIA_LOST: u16 = 4410;
    /// Its `uniqueId` is used by another participant's device in the session.
    pub const CONFLICT: u16 = 4409;
    /// The participant's devices connected too often (`churn.rs`).
    pub const TOO_MANY: u16 = 4429;

    /// The close code for a server-side close.
    pub fn of(why: super::DeviceClose) -> u16 {
        use super::DeviceClose::*;
        match why {
            Removed | SessionEnded => NOT_IN_SESSION,
            HeartbeatLost | Silent | OfferUnanswered => TIMEOUT,
            Replaced => REPLACED,
            MediaLost => MEDIA_LOST,
            DuplicateDevice => CONFLICT,
            // The SDK reconnects (any code but 1000) and is placed on another node.
            Moved => super::relay::TRY_AGAIN,
        }
    }
}

/// Largest message a device may send (an SDP offer with simulcast video is ~10 KB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// A WebSocket ping goes to each device this often: proxies that cut idle connections
/// (nginx's and AWS ALB's default 60 s) keep it (the SDK's own `ping` comes every 5 min).
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// A socket from which nothing arrived this long (not even the pong to two pings) is
/// lost (the device may still resume).
pub const SILENT_SOCKET: std::time::Duration = std::time::Duration::from_secs(75);
/// Largest close reason a close frame can carry (RFC 6455 §5.5: 125 - the code).
const MAX_CLOSE_REASON: usize = 123;

/// `/v3`: the v3 device protocol.
pub async fn v3(
    ws: WebSocketUpgrade,
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    slot: Option<axum::Extension<crate::server::ConnectionSlot>>,
) -> Response {
    upgrade(ws, app, query, slot, Protocol::V3)
}

/// `/v2`: the legacy v2 device protocol.
pub async fn v2(
    ws: WebSocketUpgrade,
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    slot: Option<axum::Extension<crate::server::ConnectionSlot>>,
) -> Response {
    upgrade(ws, app, query, slot, Protocol::V2)
}

fn upgrade(
    ws: WebSocketUpgrade,
    app: AppState,
    query: HashMap<String, String>,
    slot: Option<axum::Extension<crate::server::ConnectionSlot>>,
    protocol: Protocol,
) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            // The listener's connection slot is held for as long as the socket lives.
            let _slot = slot;
            device(socket, app, query, protocol).await
        })
}

/// `reason` cut to what a close frame can carry, at a character boundary.
pub(crate) fn close_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON {
        let mut end = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

async fn close_with(mut socket: WebSocket, code: u16, reason: String) {
    let reason = close_reason(reason);
    tracing::info!(code, %reason, "device refused");
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    // Read until the client's Close (RFC 6455 §7.1.1) before dropping the connection:
    // closing with its first request unread would reset it, and the browser could lose
    // our Close frame and report 1006 without the reason.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn device(
    socket: WebSocket,
    app: AppState,
    query: HashMap<String, String>,
    protocol: Protocol,
) {
    let Some(unique_id) = query.get("uniqueId").filter(|u| !u.is_empty()).cloned() else {
        return close_with(
            socket,
            close::BAD_REQUEST,
            "uniqueId query parameter is required".into(),
        )
        .await;
    };
    if unique_id.chars().count() > MAX_UNIQUE_ID_CHARS {
        return close_with(
            socket,
            close::BAD_REQUEST,
            format!("uniqueId is longer than {MAX_UNIQUE_ID_CHARS} characters"),
        )
        .await;
    }
    let Some(token) = query.get("token") else {
        return close_with(
            socket,
            close::UNAUTHORIZED,
            "token query parameter is required".into(),
        )
        .await;
    };
    // In a cluster, the session's media may run on another node: relay there. A hop
    // mark counts only when another node of the cluster made it.
    let relayed = app
        .cluster
        .hop_from(
            query.get(relay::HOP).map(String::as_str),
            "GET",
            relay::path(protocol),
        )
        .is_some();
    match app.conference.place(token, relayed).await {
        Ok(Placement::Here) => {}
        Ok(Placement::Elsewhere {
            node,
            http_url: Some(url),
            ..
        }) if !relayed => {
            let hops = app.cluster.hops.clone();
            return relay::relay(socket, hops, &url, &node, protocol, &query, &app.metrics).await;
        }
        Ok(Placement::Draining) => {
            return close_with(
                socket,
                relay::TRY_AGAIN,
                "this node is stopping; connect again".into(),
            )
            .await;
        }
        Ok(Placement::Elsewhere { node, .. }) => {
            return close_with(
                socket,
                relay::TRY_AGAIN,
                format!("the session is served by node {node} now; connect again"),
            )
            .await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "placing a device failed");
            return close_with(
                socket,
                relay::TRY_AGAIN,
                "the gateway's store cannot be reached; connect again".into(),
            )
            .await;
        }
    }
    // A participant in no session joins the lobby (parked: nothing is routed) and moves
    // to its session once added.
    let (participant, session) = match app.conference.join_device(token) {
        Ok(x) => x,
        Err(e) => {
            return close_with(socket, close::UNAUTHORIZED, format!("invalid token: {e}")).await
        }
    };
    if !app.churn.admit(participant.id, std::time::Instant::now()) {
        app.metrics.device_connects_refused.inc();
        tracing::info!(participant_id = %participant.id, "device connection refused: this participant connects too often");
        return close_with(
            socket,
            close::TOO_MANY,
            "this participant's devices connect too often; wait and connect again".into(),
        )
        .await;
    }
    let conn = app.conference.media().new_conn();
    tracing::info!(participant_id = %participant.id, device_id = %unique_id, %conn, ?protocol, in_session = participant.session_id.is_some(), "signaling connected");
    // The connection's own input channel: it moves with the device (between sessions
    // and the lobby), so every input reaches the core that has the device.
    let (inputs, inputs_rx) = device_inbox(conn, DEVICE_INPUTS);
    let mut device = Device {
        key: DeviceKey::new(participant.id, &unique_id),
        may_publish_audio: participant.may_publish(PublishPermission::Audio),
        may_publish_video: participant.may_publish(PublishPermission::Video),
        inputs,
        metrics: app.metrics.clone(),
    };
    // A previous socket of this device first handles what it received (its `leave`).
    let mut registration = app.handovers.take_over(&device.key, conn).await;
    // v3: the subscribing connection the browser may hold from the session's previous
    // owner (a cluster node that died, or this process before a restart).
    let prior = match (protocol, participant.session_id) {
        (Protocol::V3, Some(session_id)) => {
            app.conference
                .subscribe_prior(participant.id, &unique_id, session_id)
                .await
        }
        _ => None,
    };
    let (notify, notifications) = tokio::sync::mpsc::channel(NOTE_QUEUE);
    session
        .send_wait(SessionInput::DeviceJoin {
            key: device.key.clone(),
            conn,
            owner: DeviceOwner::of(&participant),
            protocol,
            prior,
            notify,
            inputs: inputs_rx,
        })
        .await;
    let mut handing_over = None;
    let wire = match protocol {
        Protocol::V3 => Wire::V3,
        Protocol::V2 => Wire::V2(v2::State::default()),
    };
    let end = serve(
        socket,
        &mut device,
        wire,
        notifications,
        &mut registration.requests,
        &mut handing_over,
    )
    .await;
    device
        .send(DeviceInput::Gone {
            left: end == End::Left,
        })
        .await;
    // A newer socket of this device waits for this (its join comes after our leave).
    drop(handing_over);
    tracing::info!(participant_id = %participant.id, device_id = %unique_id, %conn, how = ?end, "signaling closed");
}

/// A connected device and its connection's input channel to the media.
pub(crate) struct Device {
    key: DeviceKey,
    may_publish_audio: bool,
    may_publish_video: bool,
    inputs: InboxSender,
    metrics: std::sync::Arc<crate::Metrics>,
}

impl Device {
    /// Send to the media (whichever session, or the lobby, has the device now), waiting
    /// while the connection's queue is full (a client that floods is paced, not
    /// dropped). When the session ended, its notes channel closes and the connection is
    /// closed with a reason.
    async fn send(&mut self, input: DeviceInput) -> bool {
        self.inputs.send(input).await
    }

    /// Send an input that carries `reply` and wait (bounded) for the session's answer.
    async fn ask(
        &mut self,
        input: DeviceInput,
        answer: tokio::sync::oneshot::Receiver<Result<PublishAnswer, PublishError>>,
    ) -> Result<PublishAnswer, String> {
        if !self.send(input).await {
            return Err("the session ended".into());
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), answer).await {
            Ok(Ok(Ok(a))) => Ok(a),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(_)) => Err("the session ended".into()),
            Err(_) => Err("the session's media did not answer in time".into()),
        }
    }
}

/// The protocol spoken on a connection, with its state.
enum Wire {
    V3,
    V2(v2::State),
}

impl Wire {
    /// A note from the session as a message for the client (None: nothing to send).
    fn note(&self, device: &DeviceKey, note: &DeviceNote) -> Option<Value> {
        match self {
            Wire::V3 => v3::note(device, note),
            Wire::V2(_) => v2::note(note),
        }
    }

    /// One client message.
    async fn message(&mut self, device: &mut Device, text: &str) -> Step {
        match self {
            Wire::V3 => v3::message(device, text).await,
            Wire::V2(state) => v2::message(state, device, text).await,
        }
    }
}

/// How a signaling connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client said `leave`.
    Left,
    /// The socket closed or failed (the device may resume).
    Lost,
    /// We closed it.
    Closed,
}

async fn serve(
    mut socket: WebSocket,
    device: &mut Device,
    mut wire: Wire,
    mut notifications: tokio::sync::mpsc::Receiver<DeviceNote>,
    handover: &mut tokio::sync::mpsc::Receiver<crate::handover::Request>,
    handing_over: &mut Option<crate::handover::Request>,
) -> End {
    // While a newer socket of this device waits: until when frames already on their
    // way are still read before it is let in.
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = tokio::time::Instant::now();
    loop {
        let drained = async {
            match drain_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            biased;
            msg = socket.recv() => msg,
            Some(request) = handover.recv() => {
                *handing_over = Some(request);
                drain_until = Some(tokio::time::Instant::now() + crate::handover::DRAIN_WINDOW);
                continue;
            }
            _ = drained => {
                // Nothing more came: the newer socket takes over (a resume).
                drop(handing_over.take());
                drain_until = None;
                continue;
            }
            _ = pings.tick() => {
                if heard.elapsed() > SILENT_SOCKET {
                    tracing::info!(device = %device.key.unique_id, "signaling socket silent: lost");
                    return End::Lost;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return End::Lost;
                }
                continue;
            }
            note = notifications.recv() => {
                let why = match note {
                    Some(DeviceNote::Close(why)) => why,
                    Some(note) => {
                        if let Some(v) = wire.note(&device.key, &note) {
                            if socket.send(Message::Text(v.to_string().into())).await.is_err() {
                                return End::Lost;
                            }
                        }
                        continue;
                    }
                    // The session's media stopped.
                    None => DeviceClose::SessionEnded,
                };
                close_with(socket, close::of(why), why.reason().into()).await;
                return End::Closed;
            }
        };
        heard = tokio::time::Instant::now();
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                // Too big (1009) or a text frame that is not UTF-8 (1007): say so before
                // the connection goes; anything else is a lost connection.
                let text = e.to_string();
                let refusal = if text.contains("too long") || text.contains("Space limit") {
                    Some((
                        1009,
                        format!("message larger than {MAX_MESSAGE_BYTES} bytes"),
                    ))
                } else if text.contains("UTF-8") || text.contains("utf-8") {
                    Some((1007, "text message is not valid UTF-8".to_string()))
                } else {
                    None
                };
                if let Some((code, reason)) = refusal {
                    close_with(socket, code, reason).await;
                    return End::Closed;
                }
                return End::Lost;
            }
            None => return End::Lost,
        };
        let text = match msg {
            Message::Text(t) => t,
            // A normal close (1000: the SDK sends `leave` first) ends the device; any
            // other close is a lost connection the client may resume (the SDK reconnects).
            Message::Close(f) => {
                // Complete the closing handshake (tungstenite queued our echo of it).
                let _ = futures_util::SinkExt::flush(&mut socket).await;
                return match f {
                    Some(f) if f.code == 1000 => End::Left,
                    _ => End::Lost,
                };
            }
            _ => continue,
        };
        match wire.message(device, text.as_str()).await {
            Step::Reply(v) => {
                if socket
                    .send(Message::Text(v.to_string().into()))
                    .await
                    .is_err()
                {
                    return End::Lost;
                }
            }
            Step::Nothing => {}
            Step::Leave => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 1000,
                        reason: "left".into(),
                    })))
                    .await;
                return End::Left;
            }
        }
    }
}

/// What the connection loop does after a client message.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    Reply(Value),
    Nothing,
    Leave,
}

pub(crate) fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id})
}

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` if cut
/// (a client's own text echoed in an error stays short).
pub(crate) fn shortened(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame_and_keep_whole_characters() {
        assert_eq!(close_reason("short".into()), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = close_reason(long);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(close_reason("x".repeat(500)).len(), 123);
    }
}
