//! A device whose session's media another node of the cluster owns: its socket is
//! relayed, message by message, to the owner's signaling (the same path and query,
//! plus a hop mark so the owner never relays it again: the connection is opened by
//! `patchbay_outbound::relay`). The owner writes the SDP, so
//! the ICE candidate in it is the owner's and media flows to the owner directly; only
//! signaling takes the extra hop.

use std::collections::HashMap;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use patchbay_outbound::relay;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as UpClose;
use tokio_tungstenite::tungstenite::Message as Up;

use super::{close_with, MAX_MESSAGE_BYTES};
use crate::signaling::Protocol;

/// The query parameter a relayed connection carries (see `patchbay_outbound::relay`).
pub(crate) use patchbay_outbound::relay::HOP;

/// The signaling path of `protocol` (what a hop mark is made for).
pub(crate) fn path(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::V3 => "/v3/",
        Protocol::V2 => "/v2/",
    }
}

/// A server-side close asking the client to come back (RFC 6455 1013, Try Again Later).
pub(crate) const TRY_AGAIN: u16 = 1013;

/// Relay `client` to the owner at `owner_http` (`http(s)://host:port`) until either side
/// closes, once the owner proved it is `node` of this cluster.
pub(crate) async fn relay(
    client: WebSocket,
    hops: Option<std::sync::Arc<crate::hops::Hops>>,
    owner_http: &str,
    node: &str,
    protocol: Protocol,
    query: &HashMap<String, String>,
    metrics: &crate::Metrics,
) {
    let owner = relay::connect(
        hops.as_ref(),
        owner_http,
        node,
        path(protocol),
        query,
        MAX_MESSAGE_BYTES,
    );
    let Ok(upstream) = owner.await else {
        return close_with(
            client,
            TRY_AGAIN,
            "the session's node cannot be reached".into(),
        )
        .await;
    };
    tracing::info!(%node, "device relayed to its session's node");
    metrics.signaling_relayed.inc();
    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut down_tx, mut down_rx) = client.split();
    loop {
        tokio::select! {
            m = down_rx.next() => {
                let Some(Ok(m)) = m else { break };
                let closing = matches!(m, Message::Close(_));
                if up_tx.send(upward(m)).await.is_err() || closing {
                    break;
                }
            }
            m = up_rx.next() => {
                let Some(Ok(m)) = m else { break };
                let Some(m) = downward(m) else { continue };
                let closing = matches!(m, Message::Close(_));
                if down_tx.send(m).await.is_err() || closing {
                    break;
                }
            }
        }
    }
    let _ = up_tx.close().await;
    let _ = down_tx.close().await;
}

fn upward(m: Message) -> Up {
    match m {
        Message::Text(t) => Up::text(t.as_str()),
        Message::Binary(b) => Up::Binary(b),
        Message::Ping(b) => Up::Ping(b),
        Message::Pong(b) => Up::Pong(b),
        Message::Close(c) => Up::Close(c.map(|c| UpClose {
            code: CloseCode::from(c.code),
            reason: c.reason.as_str().into(),
        })),
    }
}

fn downward(m: Up) -> Option<Message> {
    Some(match m {
        Up::Text(t) => Message::Text(t.as_str().into()),
        Up::Binary(b) => Message::Binary(b),
        Up::Ping(b) => Message::Ping(b),
        Up::Pong(b) => Message::Pong(b),
        Up::Close(c) => Message::Close(c.map(|c| CloseFrame {
            code: c.code.into(),
            reason: c.reason.as_str().into(),
        })),
        Up::Frame(_) => return None,
    })
}
