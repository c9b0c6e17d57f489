//! A cluster node dies under a browser: `kill -9` of the node that runs a session's
//! media, and the unmodified SDK in headless Chromium gets its media back from the
//! node that takes the session over, on the same page (its socket reconnects, its
//! subscribing connection takes the new owner's offer: same m-lines, higher revision).

use std::time::Duration;

use patchbay_tests::browser::{drive_in_background, stream_events};
use patchbay_tests::cluster::{nodes, owned};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_gets_its_media_back_from_the_new_owner_after_kill_9() {
    let url = postgres::database();
    let mut g = nodes(&url, "3s").await;
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
        json!([{"watch": {"everyMs": 200, "forMs": 32000}}]),
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

    // After the lease (3 s), a survivor takes the session: the browser's reconnecting
    // socket places it (on n2, the node it reaches, on a tie).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let owner = loop {
        let now = owned(&g[0]).await;
        // (n3's last heartbeat still counts its session until n3 leaves the view.)
        let survivor = now.iter().find(|(id, n)| *n == 1 && id != "n3");
        if let Some(i) = survivor.and_then(|(id, _)| ["n1", "n2"].iter().position(|n| n == id)) {
            break i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no survivor took the session: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let taken_ms = (now_epoch() * 1000.0) as u64;
    // A second caller reaches the new owner; the browser must hear it on the same page.
    let n = &g[owner];
    let dir = n.scratch().to_path_buf();
    let second = SippCall::tone("second", &dir, 660, Law::Ulaw, 60000).token(&phones[1].1);
    let capture = Capture::start(&dir, &[second.media_port]);
    let second_call = second.spawn(n, &dir);
    // The browser's publishing connection fails (ICE, after Chromium's consent checks
    // stop being answered), the SDK re-offers with an ICE restart, the new owner answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while n.metric("patchbay_webrtc_media_in_total").await < 10.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the browser never published to the new owner"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let available = stream_events(page, "available");
    let stream_of = |p: &str| {
        available
            .iter()
            .find(|e| e["participantId"] == p)
            .and_then(|e| e["endpointId"].as_str())
            .unwrap_or_default()
            .to_string()
    };
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
        "kill -9 → session taken over: {} ms; → media from the new owner heard in the browser: {} ms \
         (the second call started at the takeover); → the browser's audio reaches the new owner: {} ms",
        taken_ms - killed_ms,
        back - killed_ms,
        published_ms - killed_ms
    );
}
