//! SIP limits against raw sockets and sipp: what a hostile or broken peer gets
//! (merged requests, too many transactions, too many or idle TCP connections,
//! oversized messages), and that a normal call still goes through.

use std::time::Duration;

use patchbay_tests::media::Law;
use patchbay_tests::rawsip::RawSip;
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{Api, Gateway};
use serde_json::json;

async fn audio_participant(api: &Api) -> (String, String) {
    api.participant(json!({"publishPermissions": ["AUDIO"]}))
        .await
}

/// A caller playing 440 Hz for `hold_ms`, then hanging up.
fn tone_call(name: &str, dir: &std::path::Path, hold_ms: u32, token: &str) -> SippCall {
    SippCall::tone(name, dir, 440, Law::Ulaw, hold_ms).token(token)
}

/// RFC 3261 §8.2.2.2: a second INVITE on a live call's Call-ID without a To tag (not
/// a retransmission: another branch) is a merged request: 482, and the first call is
/// unharmed (still up, and it hangs up normally).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_invite_gets_482_and_leaves_the_call_alone() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (a, ta) = audio_participant(&api).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    let (b, tb) = audio_participant(&api).await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    let sip = RawSip::new(&g);
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let media_port = media.local_addr().unwrap().port();
    let call_id = format!("merged-{}", uuid::Uuid::new_v4());

    sip.send(&sip.invite(&call_id, "first", &ta, media_port));
    let ok = sip.final_response();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let to_tag = RawSip::to_tag(&ok);
    sip.send(&sip.in_dialog("ACK", 1, &call_id, &to_tag, "first"));
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // Same Call-ID, From tag and CSeq, another branch, another participant's token.
    sip.send(&sip.invite(&call_id, "second", &tb, media_port));
    let merged = sip.final_response();
    assert!(merged.starts_with("SIP/2.0 482"), "{merged}");
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 1.0);

    // The first call is still ours to end.
    sip.send(&sip.in_dialog("BYE", 2, &call_id, &to_tag, "bye"));
    let bye = sip.final_response();
    assert!(bye.starts_with("SIP/2.0 200"), "{bye}");
    g.wait_metric("patchbay_sip_calls_active", 0.0).await;
}

/// SIP over TCP is bounded: past `sip_tcp_max_per_source` connections from one address
/// the excess is refused (closed at once), a call still goes through meanwhile, idle
/// connections are closed after `sip_tcp_idle_timeout`, and then TCP serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped_and_idle_ones_closed() {
    use std::io::Read;
    let g = Gateway::start_with(
        &[
            "--sip-tcp-max-connections",
            "16",
            "--sip-tcp-max-per-source",
            "4",
            "--sip-tcp-idle-timeout",
            "2s",
        ],
        &[],
    )
    .await;
    let api = g.api();
    let s = api.session(None).await;
    let (a, ta) = audio_participant(&api).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();

    // Twice the cap from one address, holding their connections silently.
    let mut conns: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", g.sip_port)).unwrap())
        .collect();
    g.wait_metric("patchbay_sip_tcp_refused_total", 4.0).await;
    // Closed by the gateway: EOF or a reset; open: the read times out.
    let closed_now = |conns: &mut Vec<std::net::TcpStream>, wait: Duration| -> usize {
        conns
            .iter_mut()
            .map(|c| {
                c.set_read_timeout(Some(wait)).unwrap();
                let mut b = [0u8; 16];
                match c.read(&mut b) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            })
            .filter(|closed| *closed)
            .count()
    };
    assert_eq!(
        closed_now(&mut conns, Duration::from_millis(200)),
        4,
        "the excess is refused"
    );
    assert_eq!(g.metric("patchbay_sip_tcp_refused_total").await, 4.0);
    assert_eq!(g.metric("patchbay_sip_tcp_connections").await, 4.0);

    // A call (UDP) goes through while they are held.
    tone_call("udp-caller", &dir, 500, &ta)
        .spawn(&g, &dir)
        .assert_ok(Duration::from_secs(10));

    // Idle: closed after the timeout; then TCP takes a call again.
    g.wait_metric("patchbay_sip_tcp_idle_closed_total", 4.0)
        .await;
    assert_eq!(closed_now(&mut conns, Duration::from_millis(200)), 8);
    tone_call("tcp-caller", &dir, 500, &ta)
        .tcp()
        .spawn(&g, &dir)
        .assert_ok(Duration::from_secs(10));
}

/// A message over the size limit on TCP gets 513 Message Too Large before the
/// connection closes (its framing is lost), and the gateway serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_tcp_message_gets_513() {
    use std::io::{Read, Write};
    let g = Gateway::start().await;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", g.sip_port)).unwrap();
    let local = c.local_addr().unwrap().port();
    let head = format!(
        "INVITE sip:127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{local};branch=z9hG4bKbig1\r\n\
         From: <sip:big@127.0.0.1>;tag=b1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: big-1\r\nCSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: 2000000\r\n\r\n",
        p = g.sip_port
    );
    c.write_all(head.as_bytes()).unwrap();
    // The body follows, as a sender of such a message would send it (the gateway may
    // close before it is all written).
    let _ = c.write_all(&vec![b'v'; 64 * 1024]);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("SIP/2.0 513 Message Too Large\r\n"),
        "{text}"
    );
    assert!(text.contains("Call-ID: big-1"), "{text}");
    assert!(text.contains("branch=z9hG4bKbig1"), "{text}");
    // Still serving.
    let sip = RawSip::new(&g);
    let port = sip.port();
    sip.send(&format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKopt\r\n\
         From: <sip:o@127.0.0.1>;tag=o\r\nTo: <sip:127.0.0.1>\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(sip.final_response().starts_with("SIP/2.0 200"));
}

/// One source may hold `sip_max_transactions_per_source` server transactions (each is
/// kept 32 s after its answer on UDP): a new request over it gets 503 with Retry-After
/// and nothing is kept; a retransmission is still answered by its transaction; another
/// source is served; the refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_per_source_are_capped_with_503() {
    let g = Gateway::start_with(&["--sip-max-transactions-per-source", "20"], &[]).await;
    let flood = RawSip::new(&g);
    let mut codes = Vec::new();
    for i in 0..30 {
        flood.send(&flood.options(&format!("flood{i}")));
        let r = flood.final_response();
        codes.push(r.get(8..11).unwrap_or_default().to_string());
        if i == 25 {
            assert!(r.contains("Retry-After: 5"), "{r}");
        }
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "200").count(),
        20,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "503").count(),
        10,
        "{codes:?}"
    );
    assert!(codes[..20].iter().all(|c| c == "200"), "{codes:?}");
    assert_eq!(
        g.metric("patchbay_sip_transactions_refused_total").await,
        10.0
    );
    // A retransmission of an answered request: its transaction answers it again.
    flood.send(&flood.options("flood3"));
    assert!(flood.final_response().starts_with("SIP/2.0 200"));
    // Another source is not affected.
    let other = RawSip::from(&g, "127.0.0.2".parse().unwrap());
    other.send(&other.options("other1"));
    assert!(other.final_response().starts_with("SIP/2.0 200"));
    assert_eq!(
        g.metric("patchbay_sip_transactions_refused_total").await,
        10.0
    );
}
