//! A device whose session's media another node of the cluster owns: its socket is
//! relayed, message by message, to the owner's signaling (the same path and query,
//! plus a hop mark so the owner never relays it again). The owner writes the SDP, so
//! the ICE candidate in it is the owner's and media flows to the owner directly; only
//! signaling takes the extra hop.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as UpClose;
use tokio_tungstenite::tungstenite::Message as Up;

use super::{close_with, MAX_MESSAGE_BYTES};
use crate::signaling::Protocol;

/// The query parameter a relayed connection carries: the relaying node's hop mark
/// (`hops.rs`). A connection with a genuine one is served where it lands or refused,
/// never relayed again; a device's own is ignored.
pub(crate) const HOP: &str = "patchbayRelayed";

/// The signaling path of `protocol` (what a hop mark is made for).
pub(crate) fn path(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::V3 => "/v3/",
        Protocol::V2 => "/v2/",
    }
}

/// A server-side close asking the client to come back (RFC 6455 1013, Try Again Later).
pub(crate) const TRY_AGAIN: u16 = 1013;

/// How long connecting to the owner may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

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
    let proven = match &hops {
        None => Err("not in a cluster".to_string()),
        Some(h) => h.check_peer(owner_http, node).await,
    };
    let (Some(hops), Ok(())) = (hops, proven.map_err(|e| {
        tracing::warn!(%node, error = %e, "relaying a device: its session's node did not prove itself");
    })) else {
        return close_with(
            client,
            TRY_AGAIN,
            "the session's node cannot be reached".into(),
        )
        .await;
    };
    let Ok(mut url) = reqwest::Url::parse(owner_http) else {
        return close_with(
            client,
            TRY_AGAIN,
            "the session's node cannot be reached".into(),
        )
        .await;
    };
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    let _ = url.set_scheme(scheme);
    url.set_path(path(protocol));
    {
        let mut pairs = url.query_pairs_mut();
        pairs.clear();
        for (k, v) in query.iter().filter(|(k, _)| *k != HOP) {
            pairs.append_pair(k, v);
        }
        pairs.append_pair(HOP, &hops.mark("GET", path(protocol)));
    }
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        Some(config),
        true,
        Some(tokio_tungstenite::Connector::Rustls(hops.tls())),
    );
    let upstream = match tokio::time::timeout(CONNECT_LIMIT, connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            tracing::warn!(%node, error = %e, "relaying a device to its session's node failed");
            return close_with(
                client,
                TRY_AGAIN,
                "the session's node cannot be reached".into(),
            )
            .await;
        }
        Err(_) => {
            tracing::warn!(%node, "relaying a device: its session's node did not answer in time");
            return close_with(
                client,
                TRY_AGAIN,
                "the session's node cannot be reached".into(),
            )
            .await;
        }
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
