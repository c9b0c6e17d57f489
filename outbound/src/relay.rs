//! The outbound half of relaying a device's signaling to the node that owns its
//! session: the owner first proves it is that node of the cluster (`hops`), then a
//! WebSocket to its signaling path carrying our hop mark (so it never relays it again).
//! `api` pumps the device's messages through it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::hops::Hops;

/// The query parameter a relayed connection carries: the relaying node's hop mark. A
/// connection with a genuine one is served where it lands or refused, never relayed
/// again; a device's own is ignored.
pub const HOP: &str = "patchbayRelayed";

/// How long connecting to the owner may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// The connection to the owner's signaling.
pub type Upstream = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Connect to the signaling `path` of the owner at `owner_http` (`http(s)://host:port`),
/// with the device's `query` and our hop mark, once it proved it is `node`; messages up
/// to `max_message` bytes. Why not is logged (a warning: the device is told to retry).
pub async fn connect(
    hops: Option<&Arc<Hops>>,
    owner_http: &str,
    node: &str,
    path: &str,
    query: &HashMap<String, String>,
    max_message: usize,
) -> Result<Upstream, ()> {
    let Some(hops) = hops else {
        tracing::warn!(%node, "relaying a device: not in a cluster");
        return Err(());
    };
    if let Err(e) = hops.check_peer(owner_http, node).await {
        tracing::warn!(%node, error = %e, "relaying a device: its session's node did not prove itself");
        return Err(());
    }
    let Ok(mut url) = reqwest::Url::parse(owner_http) else {
        tracing::warn!(%node, "relaying a device: its session's node has no usable URL");
        return Err(());
    };
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    let _ = url.set_scheme(scheme);
    url.set_path(path);
    {
        let mut pairs = url.query_pairs_mut();
        pairs.clear();
        for (k, v) in query.iter().filter(|(k, _)| *k != HOP) {
            pairs.append_pair(k, v);
        }
        pairs.append_pair(HOP, &hops.mark("GET", path));
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        Some(config),
        true,
        Some(tokio_tungstenite::Connector::Rustls(hops.tls())),
    );
    match tokio::time::timeout(CONNECT_LIMIT, connect).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => {
            tracing::warn!(%node, error = %e, "relaying a device to its session's node failed");
            Err(())
        }
        Err(_) => {
            tracing::warn!(%node, "relaying a device: its session's node did not answer in time");
            Err(())
        }
    }
}
