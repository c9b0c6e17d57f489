//! The v2 device protocol's client for `webrtc-load sfu --protocol v2`: like the SDK's
//! v2 code, one peer connection (here: its own UDP socket and task) per published stream
//! (`requestToPublish`, then `offerSdp`) and per received stream (`sdpNeeded`, then
//! `offerSdp` to receive), always offering; `endpointRemoved` ends a connection.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::{write_opus, Peer, Totals};

/// A connection whose offer is out: its endpoint, the peer, and the mid it publishes on.
type Offered = (String, Peer, SdpPendingOffer, Option<Mid>);

/// One v2 device: publishes one Opus stream when `payload` is set, receives every
/// endpoint the gateway announces, until the socket closes.
pub(super) async fn client(
    ws_base: &str,
    token: &str,
    index: usize,
    payload: Option<usize>,
    totals: Arc<Totals>,
) -> anyhow::Result<()> {
    let url = format!(
        "{ws_base}/v2/?token={token}&sdkVersion=0&uniqueId=bench-v2-{index}-{}",
        std::process::id()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let mut next_id = 0u64;
    let mut request = |method: &str, params: Value| {
        next_id += 1;
        let text = json!({"jsonrpc": "2.0", "id": next_id, "method": method, "params": params});
        (next_id, Message::Text(text.to_string().into()))
    };
    let (_, m) = request(
        "setMediaPreferences",
        json!({"sendRecv": false, "aggregationType": "NONE", "protocol": "WEB_RTC"}),
    );
    ws.send(m).await?;
    let mut publish_request = None;
    if payload.is_some() {
        let (id, m) = request(
            "requestToPublish",
            json!({"mediaTypes": ["AUDIO"], "alias": "mic"}),
        );
        publish_request = Some(id);
        ws.send(m).await?;
    }
    let frame = Arc::new(vec![0x5au8; payload.unwrap_or(0)]);
    let mut offered: HashMap<u64, Offered> = HashMap::new();
    // Dropping a connection's sender ends its task.
    let mut running: HashMap<String, oneshot::Sender<()>> = HashMap::new();
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(t) => t,
            Message::Close(f) => return Err(anyhow!("closed by the gateway: {f:?}")),
            _ => continue,
        };
        let v: Value = serde_json::from_str(&text)?;
        if v.get("error").is_some() {
            return Err(anyhow!("gateway error: {v}"));
        }
        let id = v["id"].as_u64();
        // A new endpoint: its connection offers (to send, or to receive).
        let new_endpoint = if id.is_some() && id == publish_request {
            v["result"]["endpointId"]
                .as_str()
                .map(|e| (e, MediaKind::Audio, true))
        } else if v["method"] == "sdpNeeded" {
            let kinds = v["params"]["mediaTypes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let kind = if kinds.iter().any(|k| k == "VIDEO") {
                MediaKind::Video
            } else {
                MediaKind::Audio
            };
            v["params"]["endpointId"].as_str().map(|e| (e, kind, false))
        } else {
            None
        };
        if let Some((endpoint, kind, publishing)) = new_endpoint {
            let mut peer = Peer::new().await?;
            let mut change = peer.rtc.sdp_api();
            let direction = if publishing {
                Direction::SendOnly
            } else {
                Direction::RecvOnly
            };
            let stream = publishing.then(|| format!("bench-v2-stream-{index}"));
            let track = publishing.then(|| format!("bench-v2-track-{index}"));
            let mid = change.add_media(kind, direction, stream, track, None);
            let (offer, pending) = change.apply().ok_or_else(|| anyhow!("no offer"))?;
            let (id, m) = request(
                "offerSdp",
                json!({"sdpOffer": offer.to_sdp_string(), "endpointId": endpoint}),
            );
            ws.send(m).await?;
            offered.insert(
                id,
                (
                    endpoint.to_string(),
                    peer,
                    pending,
                    publishing.then_some(mid),
                ),
            );
        } else if let Some((endpoint, mut peer, pending, mid)) = id.and_then(|i| offered.remove(&i))
        {
            let answer = v["result"]["sdpAnswer"].as_str().unwrap_or_default();
            peer.rtc
                .sdp_api()
                .accept_answer(pending, SdpAnswer::from_sdp_string(answer)?)?;
            if mid.is_some() {
                totals.publishing.fetch_add(1, Relaxed);
            }
            let (stop, stopped) = oneshot::channel();
            running.insert(endpoint, stop);
            let send = mid.map(|m| (m, frame.clone()));
            tokio::spawn(run_peer(peer, send, totals.clone(), stopped));
        } else if v["method"] == "endpointRemoved" {
            if let Some(e) = v["params"]["endpointId"].as_str() {
                running.remove(e);
            }
        }
    }
    Ok(())
}

/// One connection until it is stopped: datagrams in, its timers, and an Opus frame every
/// 20 ms on `send`'s mid when it publishes.
async fn run_peer(
    mut peer: Peer,
    send: Option<(Mid, Arc<Vec<u8>>)>,
    totals: Arc<Totals>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; 2000];
    let mut next_frame = Instant::now();
    let mut ts = 0u64;
    loop {
        let mut deadline = peer.drive(&totals);
        if send.is_some() {
            deadline = deadline.min(next_frame);
        }
        tokio::select! {
            _ = &mut stopped => return,
            r = peer.socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    peer.input(from, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if let (Some((mid, frame)), true) = (&send, now >= next_frame) {
                    next_frame += Duration::from_millis(20);
                    write_opus(&mut peer.rtc, *mid, ts, frame, now, &totals);
                    ts += 960;
                }
            }
        }
    }
}
