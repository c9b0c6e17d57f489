//! Voice bots for `bench/bots.py`: `bot-load PORT` serves every stream Patchbay opens to
//! `ws://127.0.0.1:PORT/bot`. Each bot speaks at real time (20 ms frames of a 440 Hz
//! tone: Twilio's base64 μ-law JSON, or `raw` binary 16-bit PCM at the stream's rate,
//! whichever the stream's `start` says) and counts what it hears. Prints `listening`,
//! then one JSON line of totals on SIGTERM.
//!
//! In Rust rather than Python so that the load generator takes little of the machine
//! the gateway is measured on: the same bots in Python (aiohttp) took most of a core at
//! 150 streams, and a busy neighbour makes every instruction of the gateway's dearer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Totals {
    streams: AtomicU64,
    heard: AtomicU64,
    sent: AtomicU64,
}

fn ulaw(sample: i16) -> u8 {
    let sign = if sample < 0 { 0x80 } else { 0 };
    let s = (i32::from(sample).abs().min(32635) + 0x84) as u32;
    let mut exp = 7;
    while exp > 0 && s & (1 << (exp + 7)) == 0 {
        exp -= 1;
    }
    !(sign | (exp << 4) as u8 | ((s >> (exp + 3)) & 0x0f) as u8)
}

fn tone(rate: u32, i: u64) -> i16 {
    (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin()) as i16
}

/// One second of the bot's speech, as the 50 messages it sends.
fn speech(start: &Value) -> Vec<Message> {
    if let Some(rate) = start["sampleRate"].as_u64() {
        let n = rate / 50;
        return (0..50u64)
            .map(|f| {
                let bytes: Vec<u8> = (0..n)
                    .flat_map(|i| tone(rate as u32, f * n + i).to_le_bytes())
                    .collect();
                Message::binary(bytes)
            })
            .collect();
    }
    let sid = start["start"]["streamSid"].as_str().unwrap_or_default();
    (0..50u64)
        .map(|f| {
            let ulaw: Vec<u8> = (0..160).map(|i| ulaw(tone(8000, f * 160 + i))).collect();
            let payload = base64::engine::general_purpose::STANDARD.encode(ulaw);
            let m = json!({"event": "media", "streamSid": sid, "media": {"payload": payload}});
            Message::text(m.to_string())
        })
        .collect()
}

async fn bot(tcp: TcpStream, totals: Arc<Totals>) -> anyhow::Result<()> {
    let ws = tokio_tungstenite::accept_async(tcp).await?;
    totals.streams.fetch_add(1, Relaxed);
    let (tx, mut rx) = ws.split();
    let mut tx = Some(tx);
    let mut speaker = None;
    while let Some(m) = rx.next().await {
        let text = match m? {
            Message::Binary(_) => {
                totals.heard.fetch_add(1, Relaxed);
                continue;
            }
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        if text.contains(r#""event":"media""#) {
            totals.heard.fetch_add(1, Relaxed);
            continue;
        }
        let v: Value = serde_json::from_str(&text)?;
        let start =
            v["event"] == "start" && v["start"].is_object() || v.get("sampleRate").is_some();
        if start && tx.is_some() {
            let Some(mut tx) = tx.take() else { continue };
            let frames = speech(&v);
            let totals = totals.clone();
            speaker = Some(tokio::spawn(async move {
                // Streams start out of phase, as real bots do.
                tokio::time::sleep(Duration::from_micros(rand_below(20_000))).await;
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                for m in frames.iter().cycle() {
                    tick.tick().await;
                    if tx.send(m.clone()).await.is_err() {
                        return;
                    }
                    totals.sent.fetch_add(1, Relaxed);
                }
            }));
        } else if v["event"] == "stop" {
            break;
        }
    }
    if let Some(s) = speaker {
        s.abort();
    }
    Ok(())
}

/// Microseconds in [0, n), from the clock (enough to spread the bots' phases).
fn rand_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos).wrapping_mul(0x9e37_79b9_7f4a_7c15) % n
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bot-load PORT"))?
        .parse()?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let totals = Arc::new(Totals::default());
    println!("listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = accepted?;
                let _ = tcp.set_nodelay(true);
                let totals = totals.clone();
                tokio::spawn(async move {
                    if let Err(e) = bot(tcp, totals).await {
                        eprintln!("a bot: {e}");
                    }
                });
            }
            _ = term.recv() => break,
        }
    }
    let t = &totals;
    println!(
        "{}",
        json!({"streams": t.streams.load(Relaxed), "heard": t.heard.load(Relaxed), "sent": t.sent.load(Relaxed)})
    );
    Ok(())
}
