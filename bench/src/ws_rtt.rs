//! Signaling round trip, direct vs relayed: two devices of one session, one on the
//! session's owner and one on another node of the cluster (relayed to the owner),
//! each sending JSON-RPC `ping`s one at a time; rounds alternate between them so both
//! see the same machine. Prints p50/p99 of each and the added cost of the hop.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use patchbay_bench::common::{Api, Target};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    /// The session's owner (REST goes here; its device connects here).
    #[command(flatten)]
    owner: Target,
    /// Another node's base URL (its device is relayed to the owner).
    #[arg(long)]
    relay: String,
    /// Pings per device.
    #[arg(long, default_value_t = 5000)]
    pings: u32,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, token: &str, unique: &str) -> anyhow::Result<Ws> {
    let url = format!(
        "{}/v3/?token={token}&uniqueId={unique}&sdkVersion=bench",
        base.replacen("http", "ws", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("websocket")?;
    Ok(ws)
}

/// One `ping` answered: its round trip.
async fn ping(ws: &mut Ws, id: u32) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let req = json!({"jsonrpc": "2.0", "id": id.to_string(), "method": "ping", "params": {}});
    ws.send(Message::text(req.to_string())).await?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            let v: serde_json::Value = serde_json::from_str(t.as_str())?;
            if v["id"] == json!(id.to_string()) {
                return Ok(start.elapsed());
            }
        }
    }
    bail!("socket closed")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = Api::new(&args.owner);
    let session = api.session().await?;
    let subs = json!({"sessionId": session});
    let (_, owner_token) = api.member(&session, json!({}), subs.clone()).await?;
    let (_, relayed_token) = api.member(&session, json!({}), subs).await?;
    // The first device makes its node the owner.
    let mut direct = connect(&args.owner.base, &owner_token, "direct").await?;
    ping(&mut direct, 0).await?;
    let mut relayed = connect(&args.relay, &relayed_token, "relayed").await?;
    ping(&mut relayed, 0).await?;
    let mut h = [Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?];
    let round = 100;
    for r in 0..(args.pings / round).max(1) {
        for (i, ws) in [&mut direct, &mut relayed].into_iter().enumerate() {
            for k in 0..round {
                let d = ping(ws, 1 + r * round + k).await?;
                h[i].record(d.as_micros() as u64)?;
            }
        }
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
    println!(
        "direct:  {} pings, p50 {} us, p99 {} us",
        h[0].len(),
        q(&h[0], 0.5),
        q(&h[0], 0.99)
    );
    println!(
        "relayed: {} pings, p50 {} us, p99 {} us",
        h[1].len(),
        q(&h[1], 0.5),
        q(&h[1], 0.99)
    );
    println!(
        "relay adds: p50 {} us, p99 {} us",
        q(&h[1], 0.5) as i64 - q(&h[0], 0.5) as i64,
        q(&h[1], 0.99) as i64 - q(&h[0], 0.99) as i64
    );
    Ok(())
}
