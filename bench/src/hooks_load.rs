//! Webhook and dialog load generator (see docs/benchmarks.md).
//!
//! `hooks-load webhooks --seconds S --concurrency C`: participants with a
//! `callbackUrl` pointing at a local HTTP receiver (in this process); C workers loop
//! connecting a device over the v3 signaling WebSocket and leaving (each loop: an
//! `onConnect` and an `onLeave`). Reports callbacks delivered per second and the
//! gateway's enqueue→2xx latency (its `patchbay_webhook_delivery_seconds`).
//! Baseline (same run, same receiver): the same number of workers POSTing the same
//! bodies straight to the receiver with one HTTP client.
//!
//! `hooks-load dialogs --rate R --count N --trunk-port P`: N participants dial at
//! R/s through the gateway's trunk (a sipp UAS on P that answers every call);
//! each is hung up (DELETE) once its `ANSWERED` callback arrives. Reports dialogs
//! answered per second and failures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Client, Method};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use patchbay_bench::common::{metrics, Api, Target};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    Webhooks {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Callbacks per second to produce (0: as fast as the workers go)
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    Dialogs {
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
}

/// What the receiver saw.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    /// dialogId → states seen.
    dialogs: Mutex<HashMap<String, Vec<String>>>,
    answered: AtomicU64,
    terminated: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = Api::new(&args.target);
    let received = Arc::new(Received::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    {
        let received = received.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, received.clone()));
            }
        });
    }
    let callback = format!("http://127.0.0.1:{port}/cb");
    match args.cmd {
        Cmd::Webhooks {
            seconds,
            concurrency,
            rate,
        } => {
            webhooks(
                &api,
                &args.target.base,
                &callback,
                received,
                seconds,
                concurrency,
                rate,
            )
            .await
        }
        Cmd::Dialogs { rate, count } => dialogs(&api, &callback, received, rate, count).await,
    }
}

async fn webhooks(
    api: &Api,
    base: &str,
    callback: &str,
    received: Arc<Received>,
    seconds: u64,
    concurrency: usize,
    rate: u64,
) -> anyhow::Result<()> {
    let target = rate;
    // Baseline: the receiver's own rate with a plain HTTP client, same bodies.
    let body = json!({"event": "onConnect", "timestamp": "1795730000000", "participantId": uuid::Uuid::new_v4().to_string(), "deviceId": "bench", "eventId": uuid::Uuid::new_v4().to_string()}).to_string();
    let client = Client::new();
    let until = Instant::now() + Duration::from_secs(seconds.min(5));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, body, url, sent) = (
            client.clone(),
            body.clone(),
            callback.to_string(),
            sent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                if client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    sent.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let baseline = sent.load(Relaxed) as f64 / seconds.min(5) as f64;
    received.count.store(0, Relaxed);

    // The participants (20 per session).
    let tokens: Vec<String> = api
        .members(
            concurrency,
            20,
            json!({"callbackUrl": callback, "tag": "bench"}),
            false,
        )
        .await?
        .into_iter()
        .map(|(_, token)| token)
        .collect();
    let metrics_url = format!("{base}/metrics");
    let m0 = metrics(&api.http, &metrics_url).await?;
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(seconds);
    let loops = Arc::new(AtomicU64::new(0));
    let ws_base = base.replacen("http", "ws", 1);
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (ws_base, loops) = (ws_base.clone(), loops.clone());
        // Each worker paces its loops (two callbacks each) to its share of `rate`.
        let period =
            (rate > 0).then(|| Duration::from_secs_f64(2.0 * concurrency as f64 / rate as f64));
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut next = Instant::now();
            while Instant::now() < until {
                if let Some(p) = period {
                    tokio::time::sleep_until(next.into()).await;
                    next += p;
                }
                n += 1;
                let url = format!("{ws_base}/v3/?token={token}&uniqueId=bench-{i}-{n}");
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                    continue;
                };
                let _ = ws
                    .send(Message::Text(
                        json!({"jsonrpc": "2.0", "method": "leave"})
                            .to_string()
                            .into(),
                    ))
                    .await;
                while let Some(Ok(m)) = ws.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
                loops.fetch_add(1, Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let produced_wall = t0.elapsed().as_secs_f64();
    let expected = loops.load(Relaxed) * 2;
    // Let the outbox drain.
    let drain_start = Instant::now();
    while received.count.load(Relaxed) < expected && drain_start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let m1 = metrics(&api.http, &metrics_url).await?;
    let got = received.count.load(Relaxed);
    let delta = |k: &str| m1.get(k).copied().unwrap_or(0.0) - m0.get(k).copied().unwrap_or(0.0);
    let mut buckets: Vec<(f64, f64)> = m1
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix("patchbay_webhook_delivery_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, v - m0.get(k).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let q = |q: f64| {
        let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
        buckets
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map(|(b, _)| *b * 1000.0)
            .unwrap_or(f64::NAN)
    };
    let rate = got as f64 / wall;
    println!("{concurrency} devices connecting and leaving for {seconds} s (onConnect + onLeave each), target {} callbacks/s, receiver in-process", if target > 0 { target.to_string() } else { "max".into() });
    println!("callbacks produced {expected} in {produced_wall:.1} s; delivered {got} ({:.0}/s over {wall:.1} s incl. drain)", rate);
    println!(
        "gateway: queued {:.0}, delivered {:.0}, retried {:.0}, failed {:.0}",
        delta("patchbay_webhooks_queued_total"),
        delta("patchbay_webhooks_delivered_total"),
        delta("patchbay_webhooks_retried_total"),
        delta("patchbay_webhooks_failed_total")
    );
    println!(
        "enqueue -> 2xx latency: p50 <= {:.1} ms, p99 <= {:.1} ms (bucket bounds)",
        q(0.5),
        q(0.99)
    );
    println!(
        "baseline: the same receiver takes {baseline:.0} POSTs/s from a bare client ({concurrency} connections): ratio {:.2}",
        rate / baseline
    );
    println!(
        "{}",
        json!({"delivered_per_s": rate.round(), "expected": expected, "delivered": got,
               "p50_ms": q(0.5), "p99_ms": q(0.99), "baseline_posts_per_s": baseline.round()})
    );
    Ok(())
}

async fn dialogs(
    api: &Api,
    callback: &str,
    received: Arc<Received>,
    rate: u64,
    count: usize,
) -> anyhow::Result<()> {
    // Participants in sessions of 20, each with one dialog.
    let participants: Vec<String> = api
        .members(
            count,
            20,
            json!({"callbackUrl": callback, "publishPermissions": ["AUDIO"]}),
            false,
        )
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let api = Arc::new(api.clone());
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut ids = Vec::new();
    let (id_tx, mut id_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    for p in participants.iter().cloned() {
        tick.tick().await;
        let (api, errors, id_tx) = (api.clone(), errors.clone(), id_tx.clone());
        tokio::spawn(async move {
            let body =
                json!({"type": "SIP", "data": {"to": "+15551234567", "from": "+15557654321"}});
            match api
                .call(Method::POST, &format!("/participants/{p}/dialogs"), body)
                .await
            {
                Ok(v) => {
                    let _ = id_tx.send((p, v["dialogId"].as_str().unwrap_or_default().to_string()));
                }
                Err(e) => {
                    errors.fetch_add(1, Relaxed);
                    eprintln!("create: {e:#}");
                }
            }
        });
    }
    let created_wall = t0.elapsed().as_secs_f64();
    drop(id_tx);
    while let Some(x) = id_rx.recv().await {
        ids.push(x);
    }
    // Wait for every ANSWERED (or a final failure).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = received.answered.load(Relaxed) + received.terminated.load(Relaxed);
        if done >= ids.len() as u64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answered_wall = t0.elapsed().as_secs_f64();
    let answered = received.answered.load(Relaxed);
    let failed = received.terminated.load(Relaxed);
    // Hang them all up.
    let mut hangups = Vec::new();
    for (p, d) in &ids {
        let api = api.clone();
        let path = format!("/participants/{p}/dialogs/{d}");
        hangups.push(tokio::spawn(async move {
            let _ = api.call(Method::DELETE, &path, Value::Null).await;
        }));
    }
    for h in hangups {
        let _ = h.await;
    }
    let states: HashMap<String, Vec<String>> = received
        .dialogs
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let in_order = states
        .values()
        .filter(|s| {
            s.starts_with(&[
                "CALLING".to_string(),
                "RINGING".to_string(),
                "ANSWERED".to_string(),
            ])
        })
        .count();
    println!(
        "{count} dialogs requested at {rate}/s: created in {created_wall:.2} s, {} API errors",
        errors.load(Relaxed)
    );
    println!(
        "answered {answered}, failed {failed}, all answered after {answered_wall:.2} s: {:.0} dialogs/s created -> ANSWERED",
        answered as f64 / answered_wall
    );
    println!(
        "callbacks in order CALLING, RINGING, ANSWERED: {in_order} of {}",
        states.len()
    );
    println!(
        "{}",
        json!({"requested": count, "rate": rate, "answered": answered, "failed": failed,
               "api_errors": errors.load(Relaxed), "answered_per_s": (answered as f64 / answered_wall).round()})
    );
    if answered < count as u64 {
        bail!("{} dialogs not answered", count as u64 - answered);
    }
    Ok(())
}

/// A minimal keep-alive HTTP/1.1 receiver: 200 to every POST; counts and records dialog states.
async fn serve(mut stream: TcpStream, received: Arc<Received>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&buf[head_end..head_end + len]) {
            if v["event"] == "onSipDialogStateChange" {
                let state = v["state"].as_str().unwrap_or_default().to_string();
                match state.as_str() {
                    "ANSWERED" => {
                        received.answered.fetch_add(1, Relaxed);
                    }
                    "TERMINATED" if v["eventData"]["reason"].is_string() => {
                        received.terminated.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
                if let Ok(mut m) = received.dialogs.lock() {
                    m.entry(v["dialogId"].as_str().unwrap_or_default().to_string())
                        .or_default()
                        .push(state);
                }
            }
        }
        received.count.fetch_add(1, Relaxed);
        buf.drain(..head_end + len);
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}
