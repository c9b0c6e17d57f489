//! Device signaling for the Bandwidth browser SDK (v3): a WebSocket at `/v3`
//! and `/v3/` speaking JSON-RPC 2.0.
//!
//! The token is checked on connect (close 4401 with the reason for a bad, expired or
//! revoked token; 4403 when the participant is in no session; 4400 without
//! `uniqueId`). `setMediaPreferences`, `ping`, `leave` and `deviceDiagnostics` are
//! answered here, with JSON-RPC errors for garbage (-32700), malformed requests
//! (-32600) and unknown methods (-32601). `offerSdp` (publishing) is answered by the
//! session's media actor, which also pushes `sdpOffer` (subscribing), takes
//! `answerSdp`, and decides a device's life: a lost socket may resume within 30 s
//! with the same `uniqueId`; a new `uniqueId` replaces the old device (1000); a dead
//! heartbeat or an unanswered `sdpOffer` ends it (4408); removal ends it (4403); a
//! `uniqueId` another participant's device uses in the session is refused (4409).
//!
//! The session core speaks typed data (`Offer`, `PublishAnswer`); the SDK's JSON-RPC
//! is written here only.

use std::collections::HashMap;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{json, Value};

use patchbay_conference::events::{DeviceClose, DeviceNote, DeviceOwner};
use patchbay_conference::media::session::{
    ConnId, DeviceKey, Offer, PublishRequest, SessionHandle, SessionInput, MAX_UNIQUE_ID_CHARS,
    NOTE_QUEUE,
};
use patchbay_conference::{JoinError, PublishPermission};

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

    /// The close code for a server-side close.
    pub fn of(why: super::DeviceClose) -> u16 {
        use super::DeviceClose::*;
        match why {
            Removed | SessionEnded => NOT_IN_SESSION,
            HeartbeatLost | OfferUnanswered => TIMEOUT,
            Replaced => REPLACED,
            MediaLost => MEDIA_LOST,
            DuplicateDevice => CONFLICT,
        }
    }
}

/// Numbers each signaling connection, so a stale socket's close never ends a resumed device.
static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Largest message a device may send (an SDP offer with simulcast video is ~10 KB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Largest close reason a close frame can carry (RFC 6455 §5.5: 125 - the code).
const MAX_CLOSE_REASON: usize = 123;

pub async fn v3(
    ws: WebSocketUpgrade,
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    slot: Option<axum::Extension<crate::server::ConnectionSlot>>,
) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            // The listener's connection slot is held for as long as the socket lives.
            let _slot = slot;
            device(socket, app, query).await
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

async fn device(socket: WebSocket, app: AppState, query: HashMap<String, String>) {
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
    let (participant, session) = match app.conference.join_device(token) {
        Ok(x) => x,
        Err(JoinError::NotInSession(p)) => {
            return close_with(
                socket,
                close::NOT_IN_SESSION,
                format!("participant {p} is not in a session"),
            )
            .await
        }
        Err(e) => {
            return close_with(socket, close::UNAUTHORIZED, format!("invalid token: {e}")).await
        }
    };
    let conn = ConnId(CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    tracing::info!(participant_id = %participant.id, device_id = %unique_id, %conn, "signaling connected");
    let mut device = Device {
        key: DeviceKey::new(participant.id, &unique_id),
        conn,
        may_publish_audio: participant.may_publish(PublishPermission::Audio),
        may_publish_video: participant.may_publish(PublishPermission::Video),
        session,
    };
    // A previous socket of this device first handles what it received (its `leave`).
    let mut registration = crate::handover::take_over(&device.key, conn).await;
    let (notify, notifications) = tokio::sync::mpsc::channel(NOTE_QUEUE);
    device
        .send(SessionInput::DeviceJoin {
            key: device.key.clone(),
            conn,
            owner: DeviceOwner::of(&participant),
            notify,
        })
        .await;
    let mut handing_over = None;
    let end = serve(
        socket,
        &mut device,
        notifications,
        &mut registration.requests,
        &mut handing_over,
    )
    .await;
    device
        .send(SessionInput::DeviceGone {
            key: device.key.clone(),
            conn,
            left: end == End::Left,
        })
        .await;
    // A newer socket of this device waits for this (its join comes after our leave).
    drop(handing_over);
    tracing::info!(participant_id = %participant.id, device_id = %unique_id, %conn, how = ?end, "signaling closed");
}

/// A connected device and the session whose media it joins.
struct Device {
    key: DeviceKey,
    conn: ConnId,
    may_publish_audio: bool,
    may_publish_video: bool,
    session: SessionHandle,
}

impl Device {
    /// Send to the session's media, waiting while its queue is full (a client that
    /// floods is paced, not dropped). When the session ended, its notes channel closes
    /// and the connection is closed with a reason.
    async fn send(&mut self, input: SessionInput) -> bool {
        self.session.send_wait(input).await
    }
}

/// The JSON-RPC `sdpOffer` notification for an [`Offer`].
fn sdp_offer(device: &DeviceKey, offer: &Offer) -> Value {
    let mut metadata = serde_json::Map::new();
    for s in &offer.streams {
        let mut m = json!({
            "endpointId": s.stream,
            "mediaTypes": s.media_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "participantId": s.participant_id.to_string(),
        });
        if let Some(a) = &s.alias {
            m["alias"] = json!(a);
        }
        metadata.insert(s.stream.clone(), m);
    }
    json!({"jsonrpc": "2.0", "method": "sdpOffer", "params": {
        "endpointId": &*device.unique_id,
        "sdpOffer": offer.sdp,
        "sdpRevision": offer.revision,
        "streamMetadata": metadata,
    }})
}

/// Hand an `offerSdp` to the session actor and build the SDK's `PublishSdpAnswer`.
async fn publish(device: &mut Device, id: Value, params: &Value) -> Value {
    let sdp = params["sdpOffer"].as_str().unwrap_or_default().to_string();
    let aliases = params["mediaMetadata"]["mediaStreams"]
        .as_object()
        .map(|streams| {
            streams
                .iter()
                .filter_map(|(msid, m)| Some((msid.clone(), m["alias"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let sent = device
        .send(SessionInput::Publish {
            key: device.key.clone(),
            conn: device.conn,
            request: PublishRequest {
                sdp,
                aliases,
                may_publish_audio: device.may_publish_audio,
                may_publish_video: device.may_publish_video,
            },
            reply,
        })
        .await;
    if !sent {
        return rpc_error(id, -32000, "the session ended");
    }
    let answer = match tokio::time::timeout(std::time::Duration::from_secs(10), answer).await {
        Ok(Ok(Ok(a))) => a,
        Ok(Ok(Err(e))) => return rpc_error(id, -32000, &e.to_string()),
        Ok(Err(_)) => return rpc_error(id, -32000, "the session ended"),
        Err(_) => return rpc_error(id, -32000, "the session's media did not answer in time"),
    };
    let mut metadata = serde_json::Map::new();
    for s in answer.streams {
        let mut m = json!({
            "endpointId": s.stream,
            "mediaTypes": s.media_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "participantId": s.participant_id.to_string(),
        });
        if let Some(alias) = s.alias {
            m["alias"] = json!(alias);
        }
        metadata.insert(s.stream, m);
    }
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "endpointId": &*device.key.unique_id,
        "sdpAnswer": answer.sdp,
        "streamMetadata": metadata,
    }})
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
    mut notifications: tokio::sync::mpsc::Receiver<DeviceNote>,
    handover: &mut tokio::sync::mpsc::Receiver<crate::handover::Request>,
    handing_over: &mut Option<crate::handover::Request>,
) -> End {
    // While a newer socket of this device waits: until when frames already on their
    // way are still read before it is let in.
    let mut drain_until: Option<tokio::time::Instant> = None;
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
            note = notifications.recv() => {
                let why = match note {
                    Some(DeviceNote::Offer(offer)) => {
                        let text = sdp_offer(&device.key, &offer).to_string();
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            return End::Lost;
                        }
                        continue;
                    }
                    Some(DeviceNote::Close(why)) => why,
                    // The session's media stopped.
                    None => DeviceClose::SessionEnded,
                };
                close_with(socket, close::of(why), why.reason().into()).await;
                return End::Closed;
            }
        };
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
        let outcome = match handle(text.as_str()) {
            Outcome::OfferSdp { id, params } => Outcome::Reply(publish(device, id, &params).await),
            Outcome::AnswerSdp { id, sdp } => {
                device
                    .send(SessionInput::Answer {
                        key: device.key.clone(),
                        conn: device.conn,
                        sdp,
                    })
                    .await;
                match id {
                    Some(id) => Outcome::Reply(json!({"jsonrpc": "2.0", "result": {}, "id": id})),
                    None => Outcome::Nothing,
                }
            }
            other => other,
        };
        match outcome {
            Outcome::OfferSdp { .. } | Outcome::AnswerSdp { .. } => {}
            Outcome::Reply(v) => {
                if socket
                    .send(Message::Text(v.to_string().into()))
                    .await
                    .is_err()
                {
                    return End::Lost;
                }
            }
            Outcome::Nothing => {}
            Outcome::Leave => {
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

/// What one client message asks of us.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Reply(Value),
    Nothing,
    Leave,
    /// A publish offer for the session's media.
    OfferSdp {
        id: Value,
        params: Value,
    },
    /// The answer to our last `sdpOffer`.
    AnswerSdp {
        id: Option<Value>,
        sdp: String,
    },
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id})
}

fn error(id: Value, code: i64, message: &str) -> Outcome {
    Outcome::Reply(rpc_error(id, code, message))
}

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` if cut
/// (a client's own text echoed in an error stays short).
fn shortened(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Handle one JSON-RPC message (sans-IO).
pub fn handle(text: &str) -> Outcome {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return error(Value::Null, -32700, "parse error: not JSON");
    };
    let Some(obj) = v.as_object() else {
        return error(Value::Null, -32600, "invalid request: not an object");
    };
    let id = obj.get("id").cloned();
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return error(
            id.unwrap_or(Value::Null),
            -32600,
            "invalid request: no method",
        );
    };
    let result = |r: Value| match &id {
        Some(id) => Outcome::Reply(json!({"jsonrpc": "2.0", "result": r, "id": id})),
        None => Outcome::Nothing,
    };
    match method {
        "setMediaPreferences" | "ping" => result(json!({})),
        "deviceDiagnostics" => {
            tracing::debug!("device diagnostics received");
            result(json!({}))
        }
        "leave" => Outcome::Leave,
        "offerSdp" => match (id, obj.get("params")) {
            (Some(id), Some(params)) if params["sdpOffer"].is_string() => Outcome::OfferSdp {
                id,
                params: params.clone(),
            },
            (Some(id), _) => error(
                id,
                -32602,
                "invalid params: sdpOffer (a string) is required",
            ),
            (None, _) => Outcome::Nothing,
        },
        "answerSdp" => match obj.get("params").and_then(|p| p["sdpAnswer"].as_str()) {
            Some(sdp) => Outcome::AnswerSdp {
                id,
                sdp: sdp.to_string(),
            },
            None => match id {
                Some(id) => error(
                    id,
                    -32602,
                    "invalid params: sdpAnswer (a string) is required",
                ),
                None => Outcome::Nothing,
            },
        },
        other => match id {
            Some(id) => error(
                id,
                -32601,
                &format!("method not found: {}", shortened(other, 40)),
            ),
            None => Outcome::Nothing,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_integer_and_string_ids() {
        assert_eq!(
            handle(
                r#"{"jsonrpc":"2.0","method":"setMediaPreferences","params":{"protocol":"WEBRTC"},"id":1}"#
            ),
            Outcome::Reply(json!({"jsonrpc":"2.0","result":{},"id":1}))
        );
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"ping","params":{},"id":"6f1c"}"#),
            Outcome::Reply(json!({"jsonrpc":"2.0","result":{},"id":"6f1c"}))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            handle("}{"),
            Outcome::Reply(
                json!({"jsonrpc":"2.0","error":{"code":-32700,"message":"parse error: not JSON"},"id":null})
            )
        );
        let Outcome::Reply(v) = handle(r#"{"jsonrpc":"2.0","method":"fly","id":7}"#) else {
            panic!()
        };
        assert_eq!(v["error"]["code"], -32601);
        assert_eq!(v["id"], 7);
        let Outcome::Reply(v) = handle("[1]") else {
            panic!()
        };
        assert_eq!(v["error"]["code"], -32600);
        // Unknown notifications are ignored.
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"fly"}"#),
            Outcome::Nothing
        );
    }

    #[test]
    fn close_reasons_fit_a_close_frame_and_keep_whole_characters() {
        assert_eq!(close_reason("short".into()), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = close_reason(long);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(close_reason("x".repeat(500)).len(), 123);
    }

    #[test]
    fn leave_and_diagnostics() {
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"leave"}"#),
            Outcome::Leave
        );
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"deviceDiagnostics","params":{"logs":[]}}"#),
            Outcome::Nothing
        );
    }
}
