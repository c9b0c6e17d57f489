//! What an attacker with a packet generator can do to a call, tried from outside: an
//! off-path sender on another address streaming RTP at a live leg, forged SRTP packets
//! at an SDES caller. Callers are independent (`tests/python/rtp_caller.py`, SRTP by
//! pylibsrtp), what the others hear is captured on loopback and its tones detected.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use patchbay_tests::hearing::heard_windows;
use patchbay_tests::media::{now_epoch, ulaw_encode, Capture, Law};
use patchbay_tests::native::NativeClient;
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{Api, Gateway};
use serde_json::json;

async fn audio_participant(api: &Api) -> (String, String) {
    api.participant(json!({"publishPermissions": ["AUDIO"]}))
        .await
}

/// A Python caller playing `hz` for `seconds`, silent in [pause.0, pause.1).
fn py_caller(
    g: &Gateway,
    token: &str,
    hz: u32,
    seconds: u32,
    pause: (u32, u32),
    srtp: bool,
) -> NativeClient {
    let mut args = vec![
        format!("127.0.0.1:{}", g.sip_port),
        token.to_string(),
        hz.to_string(),
        seconds.to_string(),
        pause.0.to_string(),
        pause.1.to_string(),
    ];
    if srtp {
        args.push("srtp".into());
    }
    NativeClient::script(g, "rtp_caller.py", &args, &format!("caller-{hz}"))
}

/// The leg's address from the caller's first line.
async fn leg_of(caller: &NativeClient) -> String {
    caller
        .wait_until(
            Duration::from_secs(10),
            "the caller's call is answered",
            |v| v.get("leg").is_some(),
        )
        .await;
    let lines = caller.lines();
    let leg = lines
        .iter()
        .find_map(|v| v.get("leg")?.as_str().map(String::from));
    leg.expect("a leg address")
}

/// A 20 ms PCMU packet of `hz` with sequence number `seq`.
fn tone_packet(seq: u16, ssrc: u32, hz: f64) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160).map(|i| {
        let t = f64::from(u32::from(seq) * 160 + i) / 8000.0;
        ulaw_encode((8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16)
    }));
    p
}

/// Windows in [from, to) that carry `hz`, and how many windows there were.
fn share_with(windows: &[(f64, Vec<u32>, f64)], from: f64, to: f64, hz: u32) -> (usize, usize) {
    let w: Vec<_> = windows
        .iter()
        .filter(|(t, _, _)| *t >= from && *t + 0.1 <= to)
        .collect();
    (
        w.iter().filter(|(_, tones, _)| tones.contains(&hz)).count(),
        w.len(),
    )
}

/// A session with two audio participants: `a` (the talker, not yet called in) and `b`,
/// whose sipp caller (880 Hz for `listen_ms`) is in and captured.
struct Room {
    g: Gateway,
    s: String,
    a: String,
    ta: String,
    b: String,
    listener: SippCall,
    capture: Capture,
    listening: patchbay_tests::sipp::RunningSipp,
}

impl Room {
    async fn start(listen_ms: u32) -> Room {
        let g = Gateway::start().await;
        let api = g.api();
        let s = api.session(None).await;
        let (a, ta) = audio_participant(&api).await;
        let (b, tb) = audio_participant(&api).await;
        api.add(&s, &a, Some(json!({"sessionId": s}))).await;
        api.add(&s, &b, Some(json!({"sessionId": s}))).await;
        let dir = g.scratch().to_path_buf();
        let listener = SippCall::tone("listener", &dir, 880, Law::Ulaw, listen_ms).token(&tb);
        let capture = Capture::start(&dir, &[listener.media_port]);
        let listening = listener.spawn(&g, &dir);
        g.wait_metric("patchbay_sip_calls_active", 1.0).await;
        Room {
            g,
            s,
            a,
            ta,
            b,
            listener,
            capture,
            listening,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_path_sender_is_never_heard_and_never_hears_even_when_the_caller_goes_quiet() {
    // The listener: what it hears shows whether the attacker's audio got in.
    let Room {
        g,
        s,
        a,
        ta,
        b,
        listener,
        capture,
        listening,
    } = Room::start(11_000).await;
    // The talker plays 440 Hz for 9 s and is silent from 3 s to 6 s (mute, hold, VAD).
    let talker = py_caller(&g, &ta, 440, 9, (3, 6), false);
    let leg = leg_of(&talker).await;
    let t0 = now_epoch();
    // Meanwhile /metrics without credentials names no session or participant.
    let text = g
        .client()
        .get(format!("{}/metrics", g.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for id in [&s, &a, &b] {
        assert!(!text.contains(id.as_str()), "/metrics names {id}");
    }
    assert!(
        text.contains("patchbay_streams{origin=\"phone\",media=\"AUDIO\"} 2"),
        "{text}"
    );
    // The attacker: another address, a well-formed in-sequence 660 Hz stream at the
    // talker's leg for the whole call, reading whatever comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
            sock.set_nonblocking(true).unwrap();
            let (mut got, mut buf, mut seq) = (0usize, [0u8; 2048], 0u16);
            while !stop.load(Ordering::Relaxed) {
                let _ = sock.send_to(&tone_packet(seq, 0xbad0_f00d, 660.0), &leg);
                seq = seq.wrapping_add(1);
                while sock.recv(&mut buf).is_ok() {
                    got += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (seq, got)
        })
    };
    talker
        .wait_until(Duration::from_secs(20), "the talker finishes", |v| {
            v.get("received").is_some()
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let (sent, got) = attacker.join().unwrap();
    listening.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();
    assert!(sent > 300, "the attacker sent only {sent} packets");
    assert_eq!(got, 0, "the attacker received the conference's audio");
    let windows = heard_windows(&packets, listener.media_port, Law::Ulaw, t0, t0 + 9.0);
    let leaked: Vec<_> = windows
        .iter()
        .filter(|(_, tones, _)| tones.contains(&660))
        .collect();
    assert!(leaked.is_empty(), "the attacker was heard: {leaked:?}");
    // The talker was heard before its pause and again after it (its source kept).
    for (from, to) in [(t0 + 0.5, t0 + 2.8), (t0 + 6.5, t0 + 8.8)] {
        let (with, of) = share_with(&windows, from, to, 440);
        assert!(
            of >= 15 && with as f64 >= of as f64 * 0.8,
            "the talker was heard in {with} of {of} windows of [{:.1}, {:.1}): {windows:?}",
            from - t0,
            to - t0
        );
    }
    let (with, _) = share_with(&windows, t0 + 3.5, t0 + 5.8, 440);
    assert_eq!(with, 0, "the talker was heard during its pause");
    // The talker itself heard the listener throughout.
    let received = talker
        .lines()
        .iter()
        .find_map(|v| v.get("received")?.as_u64());
    assert!(
        received.unwrap_or(0) > 300,
        "the talker heard {received:?} packets"
    );
    assert!(g.metric("patchbay_rtp_unknown_source_total").await >= sent as f64 * 0.9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdes_caller_keeps_being_heard_after_forged_packets_from_another_address() {
    let Room {
        g,
        ta,
        listener,
        capture,
        listening,
        ..
    } = Room::start(9_000).await;
    // SRTP from pylibsrtp; its sequence numbers wrap within the first second, so its
    // rollover counter is 1 when the forged packets come.
    let talker = py_caller(&g, &ta, 440, 7, (100, 100), true);
    let leg = leg_of(&talker).await;
    let t0 = now_epoch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = g.metric("patchbay_rtp_srtp_failed_total").await;
    let forger = UdpSocket::bind("127.0.0.2:0").unwrap();
    for i in 0..5u8 {
        // 12 bytes of header with a new SSRC, 10 of would-be tag.
        let mut p = vec![0x80, 0, 0, i, 0, 0, 0, 0, 0x0b, 0xad, 0xf0, i];
        p.extend_from_slice(&[0u8; 10]);
        forger.send_to(&p, &leg).unwrap();
    }
    let forged_at = now_epoch() - t0;
    talker
        .wait_until(Duration::from_secs(20), "the talker finishes", |v| {
            v.get("received").is_some()
        })
        .await;
    listening.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();
    assert_eq!(
        g.metric("patchbay_rtp_srtp_failed_total").await - before,
        5.0,
        "the forged packets were not refused by authentication"
    );
    let windows = heard_windows(&packets, listener.media_port, Law::Ulaw, t0, t0 + 7.0);
    for (from, to) in [(t0 + 0.8, t0 + 1.9), (t0 + forged_at + 0.3, t0 + 6.5)] {
        let (with, of) = share_with(&windows, from, to, 440);
        assert!(
            of >= 8 && with as f64 >= of as f64 * 0.8,
            "the SRTP caller was heard in {with} of {of} windows of [{:.1}, {:.1}): {windows:?}",
            from - t0,
            to - t0
        );
    }
}
