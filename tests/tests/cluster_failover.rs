//! A cluster node dies under a browser: `kill -9` of the node that runs a session's
//! media, and the unmodified SDK in headless Chromium gets its media back from the
//! node that takes the session over, on the same page (its socket reconnects, its
//! subscribing connection takes the new owner's offer: same m-lines, higher revision).

use std::time::Duration;

use patchbay_tests::browser::{drive_in_background, stream_events};
use patchbay_tests::cluster::{nodes, nodes_with, owned};
use patchbay_tests::media::{assert_audible, decode_window, now_epoch, received, Capture, Law};
use patchbay_tests::postgres;
use patchbay_tests::sipp::SippCall;
use serde_json::{json, Value};

/// A received stream's level (RMS, 0..1) above this is audio, below is silence.
const HEARD: f64 = 0.002;

/// The first moment (ms since the epoch) at or after `from` when `page`'s stream
/// `endpoint` was heard, from the page's timeline.
fn heard_at(page: &Value, endpoint: &str, from: u64) -> Option<u64> {
    page["timeline"].as_array()?.iter().find_map(|t| {
        let at = t["at"].as_u64()?;
        let level = t["levels"][endpoint].as_f64()?;
        (at >= from && level > HEARD).then_some(at)
    })
}

/// The index in `g` of the survivor (n1 or n2) that owns the session, once one does
/// (within `limit_s`; n3's last heartbeat still counts its session until n3 leaves the
/// view, so n3 is never taken for it).
async fn survivor_owning(g: &[patchbay_tests::Gateway], limit_s: u64) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(limit_s);
    loop {
        let now = owned(&g[0]).await;
        let survivor = now.iter().find(|(id, n)| *n == 1 && id != "n3");
        if let Some(i) = survivor.and_then(|(id, _)| ["n1", "n2"].iter().position(|n| n == id)) {
            return i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no survivor took the session: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The endpoint id of the stream from `participant` the page saw become available.
fn stream_of(page: &Value, participant: &str) -> String {
    stream_events(page, "available")
        .iter()
        .find(|e| e["participantId"] == participant)
        .and_then(|e| e["endpointId"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_gets_its_media_back_from_the_new_owner_after_kill_9() {
    let url = postgres::database();
    // bench/failover.sh measures with other leases (the default is 10 s).
    let lease = std::env::var("PATCHBAY_FAILOVER_LEASE").unwrap_or_else(|_| "3s".into());
    let mut g = nodes(&url, &lease).await;
    // (The page's final look must come before the second caller's sipp times out, 30 s.)
    let longer_lease_ms = lease
        .trim_end_matches('s')
        .parse::<u64>()
        .map_or(0, |s| s.saturating_sub(3) * 1000);
    let api = g[0].api();
    let s = api.session(None).await;
    let (browser, browser_token) = api.participant(json!({})).await;
    let mut phones = Vec::new();
    for _ in 0..2 {
        let (id, token) = api
            .participant(json!({"publishPermissions": ["AUDIO"]}))
            .await;
        api.add(&s, &id, Some(json!({"sessionId": s}))).await;
        phones.push((id, token));
    }
    api.add(&s, &browser, Some(json!({"sessionId": s}))).await;

    // The first call lands on n3: n3 runs the session's media.
    let n3 = &g[2];
    let dir = n3.scratch().to_path_buf();
    let first = SippCall::tone("first", &dir, 440, Law::Ulaw, 60000).token(&phones[0].1);
    let first_call = first.spawn(n3, &dir);
    n3.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // The browser's socket lands on n2 (relayed to n3). The page watches what it hears.
    let driver = drive_in_background(
        &g[1],
        json!([{"token": browser_token, "connectTimeoutMs": 8000, "publish": {"alias": "microphone"},
                "settleMs": 300}]),
        json!([{"watch": {"everyMs": 200, "forMs": 32000 + longer_lease_ms}}]),
        0,
        110_000,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while n3.metric("patchbay_webrtc_media_out_total").await < 100.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "n3 never sent the browser media"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let killed_ms = (now_epoch() * 1000.0) as u64;
    g[2].kill9();
    drop(first_call);

    // After the lease, a survivor takes the session: the browser's reconnecting socket
    // places it (on n2, the node it reaches, on a tie).
    let owner = survivor_owning(&g, 40).await;
    let taken_ms = (now_epoch() * 1000.0) as u64;
    // A second caller reaches the new owner; the browser must hear it on the same page.
    let n = &g[owner];
    let dir = n.scratch().to_path_buf();
    let second = SippCall::tone("second", &dir, 660, Law::Ulaw, 60000).token(&phones[1].1);
    let capture = Capture::start(&dir, &[second.media_port]);
    let second_call = second.spawn(n, &dir);
    // The browser's publishing connection fails (ICE, after Chromium's consent checks
    // stop being answered), the SDK re-offers with an ICE restart, the new owner answers.
    n.wait_browser_media(
        10.0,
        Duration::from_secs(40),
        "the browser never published to the new owner",
    )
    .await;
    let published_ms = (now_epoch() * 1000.0) as u64;
    let report = tokio::task::spawn_blocking(move || driver.join().expect("driver"))
        .await
        .expect("join");
    drop(second_call);
    let packets = capture.stop();
    // While the page still publishes (it closes at the end of its watch).
    let from = published_ms as f64 / 1000.0 + 0.5;
    let rx = received(&packets, second.media_port);
    let pcm = decode_window(&rx, Law::Ulaw, from, from + 2.5);
    assert_audible(&pcm, "the browser, heard by the new owner's caller");

    let page = &report["pages"][0];
    let stream_of = |p: &str| stream_of(page, p);
    let (before, after) = (stream_of(&phones[0].0), stream_of(&phones[1].0));
    let owner_log = || {
        let log = g[owner].log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                ["device", "sdp", "answer", "layout", "offer"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        lines.join("\n")
    };
    assert!(
        !before.is_empty() && !after.is_empty(),
        "{page}\nthe new owner's log:\n{}",
        owner_log()
    );
    assert!(
        heard_at(page, &before, 0).is_some_and(|t| t < killed_ms),
        "the first caller was not heard before the kill: {page}"
    );
    let back = heard_at(page, &after, killed_ms);
    let back = back.unwrap_or_else(|| panic!("no media from the new owner: {page}"));
    let peak = page["final"]["peaks"][&after].as_f64().unwrap_or(0.0);
    assert!(
        (620.0..700.0).contains(&peak),
        "strongest frequency {peak} Hz: {page}"
    );
    // One page throughout: its SDK reconnected its socket, nothing reloaded it.
    let sockets = page["final"]["socketUrls"].as_array().map_or(0, Vec::len);
    assert!(sockets >= 2, "{page}");
    assert!(g[owner].log().contains("sdpOffer sent"));
    eprintln!(
        "failover (lease {lease}): kill -9 → session taken over: {} ms; → media from the new owner heard in the browser: {} ms \
         (the second call started at the takeover); → the browser's audio reaches the new owner: {} ms",
        taken_ms - killed_ms,
        back - killed_ms,
        published_ms - killed_ms
    );
}

/// A graceful stop (`SIGTERM`) of the node that runs a session: it keeps serving while
/// the session's call lasts (the call is not cut), takes nothing new (`/ready` 503, a
/// call of another session 503 so that a dispatcher tries the next node), then hands
/// the session over once the call ends: the browser, on the same page, gets its media
/// from the node that takes it, and the stopping node exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_lets_its_call_end_then_hands_the_session_over() {
    let url = postgres::database();
    let mut g = nodes_with(&url, "3s", &["--drain-timeout", "40s"]).await;
    let api = g[0].api();
    let s = api.session(None).await;
    let (browser, browser_token) = api.participant(json!({})).await;
    api.add(&s, &browser, Some(json!({"sessionId": s}))).await;
    let mut phones = Vec::new();
    for _ in 0..2 {
        let (id, token) = api
            .participant(json!({"publishPermissions": ["AUDIO"]}))
            .await;
        api.add(&s, &id, Some(json!({"sessionId": s}))).await;
        phones.push((id, token));
    }
    let other = api.session(None).await;
    let (late, late_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&other, &late, Some(json!({"sessionId": other})))
        .await;

    let n3_dir = g[2].scratch().to_path_buf();
    let first = SippCall::tone("first", &n3_dir, 440, Law::Ulaw, 14000).token(&phones[0].1);
    let first_call = first.spawn(&g[2], &n3_dir);
    g[2].wait_metric("patchbay_sip_calls_active", 1.0).await;
    let driver = drive_in_background(
        &g[1],
        json!([{"token": browser_token, "connectTimeoutMs": 8000, "settleMs": 300}]),
        json!([{"watch": {"everyMs": 200, "forMs": 30000}}]),
        0,
        110_000,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while g[2].metric("patchbay_webrtc_media_out_total").await < 100.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "n3 never sent the browser media"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let stopped_ms = (now_epoch() * 1000.0) as u64;
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &g[2].pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -TERM");
    // Draining: out of the load balancer, and a call of a session it does not run is
    // refused with 503 (a dispatcher's cue to try the next node).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while g[2].ready().await != reqwest::StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            std::time::Instant::now() < deadline,
            "/ready still 200 while draining"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    SippCall::new("late", "uac_expect.xml")
        .var("UUI", format!("User-To-User: {late_token};encoding=jwt"))
        .var("PT", "0")
        .var("RTPMAP", "PCMU/8000")
        .var("CODE", "503")
        .spawn(&g[2], &n3_dir)
        .assert_ok(Duration::from_secs(15));
    // The call that was up is not cut: it ends when its caller hangs up (sipp's BYE,
    // answered).
    first_call.assert_ok(Duration::from_secs(30));
    let call_ended_ms = (now_epoch() * 1000.0) as u64;
    assert!(call_ended_ms >= stopped_ms + 5000);
    // Then n3 hands the session over and exits by itself.
    assert!(g[2].terminate(), "n3 did not exit cleanly:\n{}", g[2].log());
    let owner = survivor_owning(&g, 20).await;
    let n = &g[owner];
    let dir = n.scratch().to_path_buf();
    let second = SippCall::tone("second", &dir, 660, Law::Ulaw, 30000).token(&phones[1].1);
    let second_call = second.spawn(n, &dir);
    let report = tokio::task::spawn_blocking(move || driver.join().expect("driver"))
        .await
        .expect("join");
    drop(second_call);

    let page = &report["pages"][0];
    assert_eq!(page["outcome"], "connected", "{page}");
    let stream_of = |p: &str| stream_of(page, p);
    let (before, after) = (stream_of(&phones[0].0), stream_of(&phones[1].0));
    assert!(!before.is_empty() && !after.is_empty(), "{page}");
    assert!(
        heard_at(page, &before, stopped_ms).is_some(),
        "the call was cut at the SIGTERM: {page}"
    );
    let back = heard_at(page, &after, call_ended_ms);
    let back = back.unwrap_or_else(|| panic!("no media from the new owner: {page}"));
    let closes = page["final"]["closes"].to_string();
    assert!(
        closes.contains("the session moved to another node"),
        "{closes}"
    );
    eprintln!(
        "SIGTERM → the call ended {} ms later; → media from the new owner heard: {} ms after the call ended",
        call_ended_ms - stopped_ms,
        back - call_ended_ms
    );
}
