//! Voice bots for `bench/bots.py`: `bot-load PORT` serves every stream Patchbay opens to
//! `ws://127.0.0.1:PORT/bot`. Each bot speaks at real time (20 ms frames of a 440 Hz
//! tone: Twilio's base64 μ-law JSON, or `raw` binary 16-bit PCM at the stream's rate,
//! whichever the stream's `start` says) and counts what it hears. Prints `listening`,
//! then one JSON line of totals on SIGTERM.
//!
//! `bot-load floor PORT N SECONDS` is the kernel's floor for a bot, measured in the same
//! run: N WebSocket connections to `bot-load PORT` (a Twilio `start` each, so its bots
//! speak), then every 20 ms, on one thread, per connection: one non-blocking `recv` of
//! what the bot sent (discarded, not parsed) and one `send` of a ready-made masked
//! Twilio media frame the size of Patchbay's. What a bot costs the gateway less its own
//! code: prints one JSON line with this process's CPU per connection-second.
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

/// A client's text frame: FIN, opcode 1, masked (RFC 6455 §5.2).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// This process's CPU time (user + system).
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn floor(port: u16, n: usize, seconds: f64) -> anyhow::Result<()> {
    use std::io::{ErrorKind, Read, Write};
    use std::time::Instant;
    let start = json!({"event": "start", "start": {"streamSid": "MZ0"}, "streamSid": "MZ0"});
    let mut socks = Vec::with_capacity(n);
    let mut keep = Vec::with_capacity(n);
    for _ in 0..n {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_nodelay(true)?;
        let raw = tcp.try_clone()?;
        let (mut ws, _) =
            tokio_tungstenite::tungstenite::client(format!("ws://127.0.0.1:{port}/bot"), tcp)
                .map_err(|e| anyhow::anyhow!("handshake: {e}"))?;
        ws.send(Message::text(start.to_string()))?;
        raw.set_nonblocking(true)?;
        socks.push(raw);
        // Kept open; from here on its socket is written and read directly.
        keep.push(ws);
    }
    // Patchbay's media message to a bot for 20 ms of μ-law, framed once.
    let payload = base64::engine::general_purpose::STANDARD.encode([0x55u8; 160]);
    let media = format!(
        r#"{{"event":"media","sequenceNumber":"1234","media":{{"track":"inbound","chunk":"1234","timestamp":"24680","payload":"{payload}"}},"streamSid":"MZ0123456789abcdef0123456789abcdef"}}"#
    );
    let frame = masked_text(media.as_bytes());
    let mut buf = vec![0u8; 4096];
    let tick = Duration::from_millis(20);
    let (mut sent, mut read) = (0u64, 0u64);
    let mut next = Instant::now() + tick;
    let mut run = |ticks: u64, sent: &mut u64, read: &mut u64| -> anyhow::Result<()> {
        for _ in 0..ticks {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += tick;
            for s in socks.iter_mut() {
                match s.read(&mut buf) {
                    Ok(k) => *read += k as u64,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
                match s.write(&frame) {
                    Ok(_) => *sent += 1,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    };
    // Two seconds to settle (the bots start speaking), then the measured ticks.
    run(100, &mut sent, &mut read)?;
    let (c0, t0) = (cpu_time(), Instant::now());
    let ticks = (seconds * 50.0) as u64;
    run(ticks, &mut sent, &mut read)?;
    let (cpu, wall) = (cpu_time() - c0, t0.elapsed());
    let per = cpu.as_secs_f64() / wall.as_secs_f64() / n as f64 * 1e6;
    println!(
        "{}",
        json!({"connections": n, "us_per_connection_s": per, "sent": sent, "read_bytes": read, "frame_bytes": frame.len()})
    );
    for mut ws in keep {
        let _ = ws.close(None);
        let _ = ws.flush();
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("floor") {
        let usage = || anyhow::anyhow!("usage: bot-load floor PORT N SECONDS");
        let port = args.get(2).ok_or_else(usage)?.parse()?;
        let n = args.get(3).ok_or_else(usage)?.parse()?;
        let seconds = args.get(4).ok_or_else(usage)?.parse()?;
        return tokio::task::block_in_place(|| floor(port, n, seconds));
    }
    let port: u16 = args
        .get(1)
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
