//! Device signaling for the Bandwidth browser SDK (v3): a WebSocket at `/v3`
//! and `/v3/` speaking JSON-RPC 2.0.
//!
//! Built so far: the token check on connect (close code 4401 with the reason
//! for a bad, expired or revoked token; 4403 when the participant is in no
//! session; 4400 without `uniqueId`), `setMediaPreferences`, `ping`, `leave`,
//! `deviceDiagnostics`, and JSON-RPC errors for garbage (-32700), malformed
//! requests (-32600) and unknown methods (-32601). The media methods
//! (`offerSdp`, `answerSdp`) are not built yet and answer -32601.

use std::collections::HashMap;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{json, Value};

use crate::AppState;

/// WebSocket close codes (4000-4999 are for applications).
pub mod close {
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const NOT_IN_SESSION: u16 = 4403;
}

pub async fn v3(
    ws: WebSocketUpgrade,
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    ws.on_upgrade(move |socket| device(socket, app, query))
}

async fn close_with(mut socket: WebSocket, code: u16, reason: String) {
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
    let Some(token) = query.get("token") else {
        return close_with(
            socket,
            close::UNAUTHORIZED,
            "token query parameter is required".into(),
        )
        .await;
    };
    let participant = match app.conference.verify_token(token) {
        Ok(p) => p,
        Err(e) => {
            return close_with(socket, close::UNAUTHORIZED, format!("invalid token: {e}")).await
        }
    };
    if participant.session_id.is_none() {
        return close_with(
            socket,
            close::NOT_IN_SESSION,
            format!("participant {} is not in a session", participant.id),
        )
        .await;
    }
    tracing::info!(participant_id = %participant.id, device_id = %unique_id, "device connected");
    serve(socket).await;
    tracing::info!(participant_id = %participant.id, device_id = %unique_id, "device gone");
}

async fn serve(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => return,
            _ => continue,
        };
        match handle(text.as_str()) {
            Outcome::Reply(v) => {
                if socket
                    .send(Message::Text(v.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
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
                return;
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
}

fn error(id: Value, code: i64, message: &str) -> Outcome {
    Outcome::Reply(json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id}))
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
        other => match id {
            Some(id) => error(id, -32601, &format!("method not found: {other}")),
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
