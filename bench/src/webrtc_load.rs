//! WebRTC load generator: browser-like clients (str0m, full ICE, DTLS, SRTP) that
//! speak the Bandwidth v3 signaling protocol to a running gateway.
//!
//! `webrtc-load sfu --sessions S` creates S sessions of `--per-session` (20)
//! participants, all subscribed to the whole session; each publishes one Opus
//! stream (50 packets/s of `--payload` bytes) and receives everyone else's. With
//! `--protocol v2` the clients speak the v2 protocol (`v2`: a connection per stream). After a
//! warm-up it measures for `--seconds`: packets the gateway forwarded (from its
//! /metrics), packets the clients received, and the gateway's CPU (from
//! /proc/PID/stat): forwarded packets per second per core, CPU per subscriber.
//!
//! `webrtc-load listen --sessions-file F` joins each session id in F with one
//! subscribe-only participant (what a browser listening to phone callers costs)
//! and stays until killed or `--seconds` pass, printing packets received.
//!
//! `webrtc-load opus-baseline --rate 8000` times a bare libopus encode of a tone
//! with the gateway's settings (VoIP, complexity 5, 20 ms mono): the baseline of
//! the phone→browser benchmark.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

use patchbay_bench::common::{metrics, proc_cpu, Api, Target};

#[path = "webrtc_load/v2.rs"]
mod v2;

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    target: Target,
    /// Worker threads of the load generator
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Sessions of publishers that all subscribe to each other.
    Sfu {
        #[arg(long, default_value_t = 1)]
        sessions: usize,
        #[arg(long, default_value_t = 20)]
        per_session: usize,
        /// Bytes per Opus packet (a 32 kbit/s voice packet is about 80)
        #[arg(long, default_value_t = 80)]
        payload: usize,
        /// The gateway's pid, for its CPU time
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The device protocol the clients speak: v3 (two connections per device) or
        /// v2 (one connection per published and per received stream)
        #[arg(long, default_value = "v3", value_parser = ["v3", "v2"])]
        protocol: String,
    },
    /// One subscribe-only participant in each listed session.
    Listen {
        #[arg(long)]
        sessions_file: String,
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
    },
    /// Publishing clients for the participants whose tokens are listed (one per line),
    /// each leaving cleanly and joining again every `--cycle` seconds (±20 %), until
    /// `--seconds` pass; then all leave. Prints a JSON summary.
    Clients {
        #[arg(long)]
        tokens_file: String,
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        #[arg(long, default_value_t = 60)]
        cycle: u64,
    },
    /// Time a bare libopus encode (the phone→browser baseline).
    OpusBaseline {
        #[arg(long, default_value_t = 8000)]
        rate: u32,
        #[arg(long, default_value_t = 5000)]
        frames: usize,
    },
}

/// Counters shared by every client.
#[derive(Default)]
struct Totals {
    received: AtomicU64,
    sent: AtomicU64,
    publishing: AtomicUsize,
    errors: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Cmd::OpusBaseline { rate, frames } = args.cmd {
        return opus_baseline(rate, frames);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let api = Api::new(&args.target);
    let ws_base = args.target.base.replacen("http", "ws", 1);
    let totals = Arc::new(Totals::default());
    match args.cmd {
        Cmd::Sfu {
            sessions,
            per_session,
            payload,
            pid,
            warmup,
            seconds,
            protocol,
        } => {
            let version = protocol.to_uppercase();
            let body = json!({"publishPermissions": ["AUDIO"], "tag": "bench", "deviceApiVersion": version});
            let tokens: Vec<String> = api
                .members(sessions * per_session, per_session, body, true)
                .await?
                .into_iter()
                .map(|(_, token)| token)
                .collect();
            let n = tokens.len();
            // Baseline, same machine, same run: the kernel's cost of one forwarded
            // datagram on loopback (sendmmsg to 19 receivers, their delivery included).
            let floor_us =
                tokio::task::spawn_blocking(|| udp_floor(per_session_fanout(), 200_000)).await??;
            for (i, token) in tokens.into_iter().enumerate() {
                let (ws_base, totals, v2) = (ws_base.clone(), totals.clone(), protocol == "v2");
                tokio::spawn(async move {
                    let r = if v2 {
                        v2::client(&ws_base, &token, i, Some(payload), totals.clone()).await
                    } else {
                        client(&ws_base, &token, i, Some(payload), None, totals.clone()).await
                    };
                    if let Err(e) = r {
                        totals.errors.fetch_add(1, Relaxed);
                        eprintln!("client {i}: {e:#}");
                    }
                });
                // Spread the DTLS handshakes.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_secs(warmup)).await;
            let metrics_url = format!("{}/metrics", args.target.base);
            // The forwarding counters, and what each drive of a peer connection did
            // (a binary older than those counters reports 0 for them).
            const KEYS: [&str; 7] = [
                "patchbay_webrtc_media_out_total",
                "patchbay_webrtc_media_in_total",
                "patchbay_webrtc_drives_total",
                "patchbay_webrtc_polls_total",
                "patchbay_webrtc_timeouts_total",
                "patchbay_webrtc_transmits_total",
                "patchbay_webrtc_media_out_now_total",
            ];
            let media = |m: HashMap<String, f64>| KEYS.map(|k| m.get(k).copied().unwrap_or(0.0));
            let (m0, c0, r0, t0) = (
                media(metrics(&api.http, &metrics_url).await?),
                proc_cpu(pid)?,
                totals.received.load(Relaxed),
                Instant::now(),
            );
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let (m1, c1, r1, wall) = (
                media(metrics(&api.http, &metrics_url).await?),
                proc_cpu(pid)?,
                totals.received.load(Relaxed),
                t0.elapsed().as_secs_f64(),
            );
            let delta: Vec<f64> = m1.iter().zip(m0).map(|(a, b)| a - b).collect();
            let fwd = delta[0] / wall;
            let inn = delta[1] / wall;
            // Per forwarded frame: drives, polls, timeouts, datagrams out, sent at once.
            let per_frame: Vec<f64> = delta[2..]
                .iter()
                .map(|d| if delta[0] > 0.0 { d / delta[0] } else { 0.0 })
                .collect();
            let rx = (r1 - r0) as f64 / wall;
            let cpu = (c1 - c0) / wall;
            let expected = (n * (per_session - 1) * 50) as f64;
            let per_core = if cpu > 0.0 { fwd / cpu } else { f64::INFINITY };
            println!(
                "{sessions} sessions x {per_session} participants ({protocol} devices), all subscribed to all, Opus {payload} B x 50/s each, {wall:.1} s measured"
            );
            println!(
                "publishing {} of {n}; client errors {}",
                totals.publishing.load(Relaxed),
                totals.errors.load(Relaxed)
            );
            println!("gateway in      {inn:9.0} pkt/s");
            println!("gateway out     {fwd:9.0} pkt/s forwarded of {expected:.0} expected");
            println!(
                "clients got     {rx:9.0} pkt/s ({:.2} % of expected)",
                rx / expected * 100.0
            );
            println!(
                "gateway CPU     {:9.1} % of one core; {:.0} µs per subscriber per second",
                cpu * 100.0,
                cpu / n as f64 * 1e6
            );
            println!("forwarded per core: {per_core:.0} pkt/s");
            let ours_us = if fwd > 0.0 {
                cpu / fwd * 1e6
            } else {
                f64::INFINITY
            };
            println!(
                "per forwarded packet: {ours_us:.2} µs of gateway CPU; baseline (bare sendmmsg on loopback, this machine) {floor_us:.2} µs = {:.2}x",
                ours_us / floor_us
            );
            if per_frame.iter().any(|x| *x > 0.0) {
                println!(
                    "per forwarded frame: {:.2} peer connection drives, {:.2} polls, {:.2} timeouts, {:.2} datagrams out; {:.1} % sent at once as written",
                    per_frame[0], per_frame[1], per_frame[2], per_frame[3], per_frame[4] * 100.0
                );
            }
            println!(
                "{}",
                json!({"sessions": sessions, "participants": n, "protocol": protocol, "forwarded_pps": fwd.round(),
                       "drives_per_frame": per_frame[0], "polls_per_frame": per_frame[1],
                       "timeouts_per_frame": per_frame[2], "transmits_per_frame": per_frame[3],
                       "sent_at_once": per_frame[4],
                       "received_pps": rx.round(), "expected_pps": expected, "cpu_core_fraction": cpu,
                       "forwarded_pps_per_core": per_core.round(),
                       "cpu_us_per_subscriber_s": (cpu / n as f64 * 1e6).round(),
                       "us_per_forwarded_packet": ours_us, "baseline_us_per_packet": floor_us})
            );
        }
        Cmd::Listen {
            sessions_file,
            seconds,
        } => {
            let text = std::fs::read_to_string(&sessions_file)?;
            let mut n = 0;
            for (i, s) in text.split_whitespace().enumerate() {
                let body = json!({"publishPermissions": [], "tag": "bench"});
                let token = api.member(s, body, json!({"sessionId": s})).await?.1;
                let (ws_base, totals) = (ws_base.clone(), totals.clone());
                tokio::spawn(async move {
                    if let Err(e) = client(&ws_base, &token, i, None, None, totals.clone()).await {
                        totals.errors.fetch_add(1, Relaxed);
                        eprintln!("listener {i}: {e:#}");
                    }
                });
                n += 1;
            }
            let start = Instant::now();
            let mut last = 0;
            while start.elapsed() < Duration::from_secs(seconds) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = totals.received.load(Relaxed);
                println!(
                    "{n} listeners: {} pkt/s received, errors {}",
                    now - last,
                    totals.errors.load(Relaxed)
                );
                last = now;
            }
        }
        Cmd::Clients {
            tokens_file,
            seconds,
            cycle,
        } => {
            let text = std::fs::read_to_string(&tokens_file)?;
            let end = Instant::now() + Duration::from_secs(seconds);
            let cycles = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for (i, token) in text.split_whitespace().map(str::to_string).enumerate() {
                let (ws_base, totals, cycles) = (ws_base.clone(), totals.clone(), cycles.clone());
                tasks.push(tokio::spawn(async move {
                    let mut round = 0u64;
                    while Instant::now() < end {
                        // Spread the reconnections: ±20 % around the cycle.
                        round += 1;
                        let spread = (i as u64 * 7919 + round * 104_729) % 1000;
                        let jitter = 0.8 + 0.4 * spread as f64 / 1000.0;
                        let life = Duration::from_secs_f64(cycle as f64 * jitter)
                            .min(end.saturating_duration_since(Instant::now()));
                        let r =
                            client(&ws_base, &token, i, Some(80), Some(life), totals.clone()).await;
                        if let Err(e) = r {
                            totals.errors.fetch_add(1, Relaxed);
                            eprintln!("client {i}: {e:#}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        cycles.fetch_add(1, Relaxed);
                    }
                }));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for t in tasks {
                let _ = t.await;
            }
            println!(
                "{}",
                json!({"clients": text.split_whitespace().count(), "connections": cycles.load(Relaxed),
                       "errors": totals.errors.load(Relaxed), "sent": totals.sent.load(Relaxed),
                       "received": totals.received.load(Relaxed)})
            );
        }
        Cmd::OpusBaseline { .. } => unreachable!("handled in main"),
    }
    Ok(())
}

/// One peer connection with its own UDP socket.
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    heartbeat: Option<ChannelId>,
}

impl Peer {
    async fn new() -> anyhow::Result<Peer> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        Ok(Peer {
            rtc,
            socket,
            local,
            heartbeat: None,
        })
    }

    fn input(&mut self, from: SocketAddr, data: &[u8]) {
        if let Ok(r) = Receive::new(Protocol::Udp, from, self.local, data) {
            let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
        }
    }

    /// Run until it waits; returns its next timeout; counts media it received.
    fn drive(&mut self, totals: &Totals) -> Instant {
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::MediaData(_) => {
                        totals.received.fetch_add(1, Relaxed);
                    }
                    Event::ChannelOpen(id, label) if label == "__heartbeat__" => {
                        self.heartbeat = Some(id);
                    }
                    Event::ChannelData(d) if Some(d.id) == self.heartbeat && d.data == b"PING" => {
                        if let Some(mut ch) = self.rtc.channel(d.id) {
                            let _ = ch.write(false, b"PONG");
                        }
                    }
                    _ => {}
                },
                Err(_) => return Instant::now() + Duration::from_secs(1),
            }
        }
    }
}

fn sdk_channels() -> [ChannelConfig; 2] {
    [(0u16, "__heartbeat__"), (1, "__diagnostics__")].map(|(id, label)| ChannelConfig {
        label: label.into(),
        negotiated: Some(id),
        protocol: "udp".into(),
        ..Default::default()
    })
}

/// One browser-like device: publishes (when `payload` is set) and answers the
/// gateway's subscribe offers, until the socket closes or, with a `lifetime`, it
/// leaves (`leave`, then a close) when that has passed.
async fn client(
    ws_base: &str,
    token: &str,
    index: usize,
    payload: Option<usize>,
    lifetime: Option<Duration>,
    totals: Arc<Totals>,
) -> anyhow::Result<()> {
    let leave_at = lifetime.map(|l| Instant::now() + l);
    let url = format!(
        "{ws_base}/v3/?token={token}&client=bench&sdkVersion=0&uniqueId=bench-{index}-{}",
        std::process::id()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let mut next_id = 1u64;
    let mut request = |method: &str, params: Value| {
        next_id += 1;
        Message::Text(
            json!({"jsonrpc": "2.0", "id": next_id, "method": method, "params": params})
                .to_string()
                .into(),
        )
    };
    ws.send(request(
        "setMediaPreferences",
        json!({"protocol": "WEBRTC"}),
    ))
    .await?;

    let mut publisher = Peer::new().await?;
    let mut pending: Option<SdpPendingOffer> = None;
    let mut mid: Option<Mid> = None;
    if payload.is_some() {
        let mut change = publisher.rtc.sdp_api();
        let stream = format!("bench-stream-{index}");
        mid = Some(change.add_media(
            MediaKind::Audio,
            Direction::SendOnly,
            Some(stream.clone()),
            Some(format!("bench-track-{index}")),
            None,
        ));
        for c in sdk_channels() {
            change.add_channel_with_config(c);
        }
        let (offer, p) = change.apply().context("publish offer")?;
        pending = Some(p);
        ws.send(request(
            "offerSdp",
            json!({"sdpOffer": offer.to_sdp_string(),
                   "mediaMetadata": {"mediaStreams": {stream: {"alias": "mic"}}}}),
        ))
        .await?;
    }
    let mut subscriber: Option<Peer> = None;
    let frame = vec![0x5au8; payload.unwrap_or(0)];
    let mut ts: u64 = 0;
    let mut next_frame = Instant::now();
    let (mut buf_p, mut buf_s) = (vec![0u8; 2000], vec![0u8; 2000]);
    loop {
        let mut deadline = publisher.drive(&totals);
        if let Some(s) = subscriber.as_mut() {
            deadline = deadline.min(s.drive(&totals));
        }
        if mid.is_some() {
            deadline = deadline.min(next_frame);
        }
        if let Some(at) = leave_at {
            if Instant::now() >= at {
                ws.send(Message::Text(
                    json!({"jsonrpc": "2.0", "method": "leave", "params": {}})
                        .to_string()
                        .into(),
                ))
                .await?;
                let _ = ws.close(None).await;
                return Ok(());
            }
            deadline = deadline.min(at);
        }
        let sub_socket = subscriber.as_ref().map(|s| &s.socket);
        tokio::select! {
            r = publisher.socket.recv_from(&mut buf_p) => {
                let (n, from) = r?;
                publisher.input(from, &buf_p[..n]);
            }
            r = async { match sub_socket { Some(s) => s.recv_from(&mut buf_s).await, None => std::future::pending().await } } => {
                let (n, from) = r?;
                if let Some(s) = subscriber.as_mut() {
                    s.input(from, &buf_s[..n]);
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => return Err(anyhow!("closed by the gateway: {f:?}")),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(()),
                };
                let v: Value = serde_json::from_str(&text)?;
                if let Some(answer) = v["result"]["sdpAnswer"].as_str() {
                    let answer = SdpAnswer::from_sdp_string(answer)?;
                    if let Some(p) = pending.take() {
                        publisher.rtc.sdp_api().accept_answer(p, answer)?;
                        totals.publishing.fetch_add(1, Relaxed);
                    }
                } else if v["method"] == "sdpOffer" {
                    let offer = SdpOffer::from_sdp_string(v["params"]["sdpOffer"].as_str().unwrap_or_default())?;
                    let fresh = subscriber.is_none();
                    if fresh {
                        subscriber = Some(Peer::new().await?);
                    }
                    if let Some(s) = subscriber.as_mut() {
                        let answer = s.rtc.sdp_api().accept_offer(offer)?;
                        if fresh {
                            // Like the SDK: the negotiated heartbeat channels here too.
                            for c in sdk_channels() {
                                s.rtc.direct_api().create_data_channel(c);
                            }
                        }
                        ws.send(request("answerSdp", json!({"sdpAnswer": answer.to_sdp_string()}))).await?;
                    }
                } else if v.get("error").is_some() {
                    return Err(anyhow!("gateway error: {v}"));
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if let (Some(m), true) = (mid, now >= next_frame) {
                    next_frame += Duration::from_millis(20);
                    write_opus(&mut publisher.rtc, m, ts, &frame, now, &totals);
                    ts += 960;
                }
            }
        }
    }
}

/// Write one Opus frame stamped `ts` (48 kHz) on `mid`, counted as sent.
fn write_opus(rtc: &mut Rtc, mid: Mid, ts: u64, frame: &[u8], now: Instant, totals: &Totals) {
    let Some(w) = rtc.writer(mid) else { return };
    let Some(pt) = w
        .payload_params()
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt())
    else {
        return;
    };
    let t = MediaTime::new(ts, Frequency::FORTY_EIGHT_KHZ);
    if w.write(pt, now, t, frame.to_vec()).is_ok() {
        totals.sent.fetch_add(1, Relaxed);
    }
}

/// Receivers per sender in the baseline (a 20-participant session's fan-out).
fn per_session_fanout() -> usize {
    19
}

/// CPU µs (of the sending thread, which on loopback also pays the delivery) per
/// 80-byte datagram sent with `sendmmsg` in batches of `fanout` to `fanout` receivers.
fn udp_floor(fanout: usize, packets: usize) -> anyhow::Result<f64> {
    use std::os::fd::AsRawFd;
    let receivers: Vec<std::net::UdpSocket> = (0..fanout)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = receivers
        .iter()
        .map(|r| r.local_addr())
        .collect::<Result<_, _>>()?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drains: Vec<_> = receivers
        .into_iter()
        .map(|r| {
            let stop = stop.clone();
            r.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Relaxed) {
                    let _ = r.recv(&mut buf);
                }
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let payload = [0x5au8; 80];
    // SAFETY: plain C structs, all-zero valid; the headers point at live data below.
    let mut names: Vec<libc::sockaddr_in> = addrs
        .iter()
        .map(|a| {
            let SocketAddr::V4(a) = a else {
                unreachable!("bound to 127.0.0.1")
            };
            libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }
        })
        .collect();
    let mut iovs: Vec<libc::iovec> = (0..fanout)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..fanout)
        .map(|i| {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let cpu = || {
        // SAFETY: clock_gettime writes the timespec it is given.
        let mut t: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
    };
    let start = cpu();
    let mut sent = 0;
    while sent < packets {
        // SAFETY: every header points at a live address and buffer for the call.
        let n = unsafe { libc::sendmmsg(sender.as_raw_fd(), msgs.as_mut_ptr(), fanout as _, 0) };
        if n > 0 {
            sent += n as usize;
        }
        // Pace like 50 publishers' packets would: let the receivers keep up.
        if sent % (fanout * 50) == 0 {
            std::thread::yield_now();
        }
    }
    let per = (cpu() - start) / sent as f64;
    stop.store(true, Relaxed);
    for d in drains {
        let _ = d.join();
    }
    Ok(per)
}

/// Bare libopus: encode a 440 Hz tone at `rate` in 20 ms mono frames with the gateway's
/// settings; prints µs per frame.
fn opus_baseline(rate: u32, frames: usize) -> anyhow::Result<()> {
    use audiopus::coder::Encoder;
    use audiopus::{Application, Channels, SampleRate};
    let sr = match rate {
        8000 => SampleRate::Hz8000,
        16000 => SampleRate::Hz16000,
        48000 => SampleRate::Hz48000,
        other => bail!("unsupported rate {other}"),
    };
    let mut enc = Encoder::new(sr, Channels::Mono, Application::Voip)?;
    enc.set_complexity(5)?;
    let n = rate as usize / 50;
    let tone: Vec<i16> = (0..n * 50)
        .map(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate as f64).sin()) as i16
        })
        .collect();
    let mut out = vec![0u8; 1275];
    let start = Instant::now();
    for f in 0..frames {
        let at = (f % 50) * n;
        enc.encode(&tone[at..at + n], &mut out)?;
    }
    let per = start.elapsed().as_secs_f64() / frames as f64 * 1e6;
    println!("bare libopus encode, {rate} Hz, complexity 5: {per:.1} µs per 20 ms frame");
    println!("{}", json!({"rate": rate, "us_per_frame": per}));
    Ok(())
}
