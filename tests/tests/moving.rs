//! Leaving a session is not hanging up (Bandwidth's call flow: after
//! `removeParticipantFromSession` "the PSTN call is still active, but no longer in the
//! WebRTC Session"): a sipp caller moved from one session to another during its call
//! keeps the call and hears the new session; a caller whose participant is in no
//! session yet is answered and parked until it is added; a browser removed and added
//! again keeps its socket and gets the new session's streams.

use std::time::Duration;

use patchbay_tests::browser::{drive_full, stream_events};
use patchbay_tests::hearing::{assert_hears, assert_settles, heard_windows};
use patchbay_tests::media::{now_epoch, Capture, Law};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{Api, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn audio_participant(api: &Api) -> (String, String) {
    api.participant(json!({"publishPermissions": ["AUDIO"]}))
        .await
}

/// No window of `from..to` carries any of the tones.
fn hears_nothing(
    packets: &[patchbay_tests::media::RtpPacket],
    who: &str,
    port: u16,
    from: f64,
    to: f64,
) {
    let windows = heard_windows(packets, port, Law::Ulaw, from, to);
    assert!(windows.len() >= 5, "{who}: too few windows: {windows:?}");
    for (t, tones, rms) in &windows {
        assert!(
            tones.is_empty(),
            "{who} at +{:.2}s heard {tones:?} (rms {rms:.0})",
            t - from
        );
    }
}

/// The `webrtc-transfer-nodejs` flow at the SIP level: session 1 (a caller playing
/// 440 Hz) and session 2 (880 Hz); the moving caller (660 Hz) is removed from session 1
/// and added to session 2 during its call. No BYE (sipp fails on one), and what it hears
/// changes from 440 to 880 within 1 s; the others hear it only where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_moved_between_sessions_keeps_its_call_and_hears_the_new_session() {
    let g = Gateway::start().await;
    let api = g.api();
    let (s1, s2) = (api.session(None).await, api.session(None).await);
    let (a, ta) = audio_participant(&api).await;
    let (b, tb) = audio_participant(&api).await;
    let (m, tm) = audio_participant(&api).await;
    api.add(&s1, &a, Some(json!({"sessionId": s1}))).await;
    api.add(&s1, &m, Some(json!({"sessionId": s1}))).await;
    api.add(&s2, &b, Some(json!({"sessionId": s2}))).await;
    let dir = g.scratch().to_path_buf();
    let call_a = SippCall::tone("a", &dir, 440, Law::Ulaw, 9000).token(&ta);
    let call_b = SippCall::tone("b", &dir, 880, Law::Ulaw, 9000).token(&tb);
    let call_m = SippCall::tone("m", &dir, 660, Law::Ulaw, 7000).token(&tm);
    let capture = Capture::start(
        &dir,
        &[call_a.media_port, call_b.media_port, call_m.media_port],
    );
    let (ra, rb, rm) = (
        call_a.spawn(&g, &dir),
        call_b.spawn(&g, &dir),
        call_m.spawn(&g, &dir),
    );
    g.wait_metric("patchbay_sip_calls_active", 3.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let before = now_epoch();
    api.remove(&s1, &m).await;
    let r = api
        .call(
            Method::PUT,
            &format!("/sessions/{s2}/participants/{m}"),
            Some(json!({"sessionId": s2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let moved = now_epoch();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let end = now_epoch();
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 3.0);
    // Each call ends as scripted: its own BYE, never one of ours.
    for r in [rm, ra, rb] {
        r.assert_ok(Duration::from_secs(20));
    }
    let packets = capture.stop();

    assert_settles(
        &packets,
        "the mover in session 1",
        call_m.media_port,
        Law::Ulaw,
        joined + 0.6,
        before - 0.05,
        &[440],
    );
    assert_hears(
        &packets,
        "the mover in session 2",
        call_m.media_port,
        Law::Ulaw,
        moved + 1.0,
        end - 0.1,
        &[880],
    );
    assert_hears(
        &packets,
        "session 2's caller",
        call_b.media_port,
        Law::Ulaw,
        moved + 1.0,
        end - 0.1,
        &[660],
    );
    hears_nothing(
        &packets,
        "session 1's caller",
        call_a.media_port,
        moved + 1.0,
        end - 0.1,
    );
    assert!(g.metric("patchbay_media_moved_total").await >= 1.0);
}

/// A Voice app may transfer the call before its add to a session lands (the courtroom
/// sample answers with the transfer BXML while the add is in flight): the call is
/// answered and parked in silence, and joins its session once added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_in_no_session_is_answered_parked_and_joins_once_added() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (b, tb) = audio_participant(&api).await;
    let (m, tm) = audio_participant(&api).await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    let call_b = SippCall::tone("b", &dir, 880, Law::Ulaw, 7000).token(&tb);
    let call_m = SippCall::tone("m", &dir, 660, Law::Ulaw, 5000).token(&tm);
    let capture = Capture::start(&dir, &[call_b.media_port, call_m.media_port]);
    let rb = call_b.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let rm = call_m.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    g.wait_metric("patchbay_parked_calls", 1.0).await;
    let answered = now_epoch();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let parked_until = now_epoch();
    api.add(&s, &m, Some(json!({"sessionId": s}))).await;
    let added = now_epoch();
    g.wait_metric("patchbay_parked_calls", 0.0).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let end = now_epoch();
    for r in [rm, rb] {
        r.assert_ok(Duration::from_secs(20));
    }
    let packets = capture.stop();
    hears_nothing(
        &packets,
        "the parked caller",
        call_m.media_port,
        answered + 0.3,
        parked_until,
    );
    assert_hears(
        &packets,
        "the caller once added",
        call_m.media_port,
        Law::Ulaw,
        added + 1.0,
        end - 0.1,
        &[880],
    );
}

/// A browser (the real SDK) removed from session 1 and added to session 2 keeps its
/// socket (no close, no reconnect), loses session 1's caller and gets session 2's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_removed_and_added_keeps_its_socket_and_gets_the_new_sessions_streams() {
    let g = Gateway::start().await;
    let api = g.api();
    let (s1, s2) = (api.session(None).await, api.session(None).await);
    let (d, td) = api.participant(json!({})).await;
    let (a, ta) = audio_participant(&api).await;
    let (b, tb) = audio_participant(&api).await;
    api.add(&s1, &d, Some(json!({"sessionId": s1}))).await;
    api.add(&s1, &a, Some(json!({"sessionId": s1}))).await;
    api.add(&s2, &b, Some(json!({"sessionId": s2}))).await;
    let dir = g.scratch().to_path_buf();
    let ra = SippCall::tone("a", &dir, 440, Law::Ulaw, 20000)
        .token(&ta)
        .spawn(&g, &dir);
    let rb = SippCall::tone("b", &dir, 880, Law::Ulaw, 20000)
        .token(&tb)
        .spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let auth = "Basic ZGV2OmRldg==";
    let report = drive_full(
        &g,
        json!([{"token": td, "connectTimeoutMs": 5000, "publish": {"alias": "mic"},
                "steps": [{"wait": 1500}]}]),
        json!([
            {"afterMs": 0, "method": "DELETE", "url": api.url(&format!("/sessions/{s1}/participants/{d}")),
             "authorization": auth},
            {"afterMs": 1500, "method": "PUT", "url": api.url(&format!("/sessions/{s2}/participants/{d}")),
             "authorization": auth, "body": {"sessionId": s2}},
        ]),
        3000,
    );
    drop((ra, rb));
    let page = &report["pages"][0];
    assert_eq!(page["outcome"], "connected", "{page}");
    assert_eq!(
        page["final"]["closes"],
        json!([]),
        "the socket stayed: {page}"
    );
    assert_eq!(
        page["final"]["socketUrls"].as_array().map(Vec::len),
        Some(1),
        "no reconnect: {page}"
    );
    let kinds: Vec<&str> = page["final"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["available", "unavailable", "available"], "{page}");
    let available = stream_events(page, "available");
    assert_eq!(available[0]["participantId"], a, "{page}");
    assert_eq!(available[1]["participantId"], b, "{page}");
    let endpoint = available[1]["endpointId"].as_str().unwrap_or_default();
    let peak = page["final"]["peaks"][endpoint].as_f64().unwrap_or(0.0);
    assert!(
        (840.0..920.0).contains(&peak),
        "it hears session 2's caller: {peak} Hz: {page}"
    );
}
