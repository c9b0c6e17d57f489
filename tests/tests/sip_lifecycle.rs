//! A SIP call's lifecycle with real sipp callers: every way it ends (RTP timeout,
//! participant deleted, session deleted or expired, the gateway shutting down) sends
//! BYE, and leaving the session does not; a second call with the same token replaces
//! the first; after `kill -9` the token calls in again.

use std::time::Duration;

use patchbay_tests::media::{write_tone_wav, Law};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{Api, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn audio_participant(api: &Api) -> (String, String) {
    api.participant(json!({"publishPermissions": ["AUDIO"]}))
        .await
}

#[tokio::test]
async fn silent_caller_is_hung_up_after_rtp_timeout() {
    let g = Gateway::start_with(&["--rtp-timeout", "2s"], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, t) = audio_participant(&api).await;
    api.add(&s, &p, None).await;
    let start = std::time::Instant::now();
    SippCall::new("silent", "uac_wait_bye.xml")
        .var("RTP", "")
        .token(&t)
        .spawn(&g, g.scratch())
        .assert_ok(Duration::from_secs(15));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "hung up after {took:?}, before rtp_timeout"
    );
    assert_eq!(g.metric("patchbay_rtp_timeouts_total").await, 1.0);
}

#[tokio::test]
async fn deleting_the_participant_sends_bye_while_the_caller_talks() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, t) = audio_participant(&api).await;
    api.add(&s, &p, None).await;
    let dir = g.scratch().to_path_buf();
    write_tone_wav(&dir.join("t.wav"), 440.0, 2, Law::Ulaw);
    let call = SippCall::new("talker", "uac_wait_bye.xml")
        .var(
            "RTP",
            "<nop><action><exec rtp_stream=\"t.wav,-1,0\"/></action></nop>",
        )
        .token(&t)
        .spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    // Talking for longer than silence would be tolerated does not matter; DELETE ends it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = api
        .call(Method::DELETE, &format!("/participants/{p}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    call.assert_ok(Duration::from_secs(10));
    g.wait_metric("patchbay_sip_calls_active", 0.0).await;
}

/// Leaving a session is not hanging up: a caller removed from its session stays up
/// (parked) when that session is then deleted, and gets BYE once its participant is
/// deleted; a member's call gets BYE when its session is deleted.
#[tokio::test]
async fn deleting_the_session_or_the_participant_sends_bye_removing_does_not() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p1, t1) = audio_participant(&api).await;
    let (p2, t2) = audio_participant(&api).await;
    api.add(&s, &p1, None).await;
    api.add(&s, &p2, None).await;
    let dir = g.scratch().to_path_buf();
    write_tone_wav(&dir.join("t.wav"), 440.0, 2, Law::Ulaw);
    let rtp = "<nop><action><exec rtp_stream=\"t.wav,-1,0\"/></action></nop>";
    let mut c1 = SippCall::new("removed", "uac_wait_bye.xml")
        .var("RTP", rtp)
        .token(&t1)
        .spawn(&g, &dir);
    let c2 = SippCall::new("session-deleted", "uac_wait_bye.xml")
        .var("RTP", rtp)
        .token(&t2)
        .spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    api.call(
        Method::DELETE,
        &format!("/sessions/{s}/participants/{p1}"),
        None,
    )
    .await;
    api.call(Method::DELETE, &format!("/sessions/{s}"), None)
        .await;
    c2.assert_ok(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c1.is_running(), "the removed caller was hung up");
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 1.0);
    api.call(Method::DELETE, &format!("/participants/{p1}"), None)
        .await;
    c1.assert_ok(Duration::from_secs(10));
    g.wait_metric("patchbay_sip_calls_active", 0.0).await;
}

/// A caller holds (re-INVITE with `direction`, answered `answer`) for a second while
/// another caller talks, then resumes: the call survives both, the held caller receives

#[tokio::test]
async fn a_second_call_with_the_same_token_replaces_the_first() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, t) = audio_participant(&api).await;
    api.add(&s, &p, None).await;
    let dir = g.scratch().to_path_buf();
    write_tone_wav(&dir.join("t.wav"), 440.0, 2, Law::Ulaw);
    let first = SippCall::new("first", "uac_wait_bye.xml")
        .var(
            "RTP",
            "<nop><action><exec rtp_stream=\"t.wav,-1,0\"/></action></nop>",
        )
        .token(&t)
        .spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let second = SippCall::tone("second", &dir, 660, Law::Ulaw, 1500)
        .token(&t)
        .spawn(&g, &dir);
    // The first call gets a BYE, the second completes normally.
    first.assert_ok(Duration::from_secs(10));
    second.assert_ok(Duration::from_secs(10));
}

#[tokio::test]
async fn after_kill_dash_nine_the_same_token_calls_in_again() {
    let mut g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, t) = audio_participant(&api).await;
    api.add(&s, &p, None).await;
    g.kill9();
    g.restart().await;
    let dir = g.scratch().to_path_buf();
    SippCall::tone("after-restart", &dir, 440, Law::Ulaw, 1000)
        .token(&t)
        .spawn(&g, &dir)
        .assert_ok(Duration::from_secs(15));
}

#[tokio::test]
async fn graceful_shutdown_sends_bye_to_every_call() {
    let mut g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let dir = g.scratch().to_path_buf();
    write_tone_wav(&dir.join("t.wav"), 440.0, 2, Law::Ulaw);
    let mut calls = Vec::new();
    for i in 0..2 {
        let (p, t) = audio_participant(&api).await;
        api.add(&s, &p, None).await;
        calls.push(
            SippCall::new(&format!("c{i}"), "uac_wait_bye.xml")
                .var(
                    "RTP",
                    "<nop><action><exec rtp_stream=\"t.wav,-1,0\"/></action></nop>",
                )
                .token(&t)
                .spawn(&g, &dir),
        );
    }
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    assert!(g.terminate(), "SIGTERM must exit cleanly");
    for c in calls {
        c.assert_ok(Duration::from_secs(10));
    }
}

#[tokio::test]
async fn session_expiry_sends_bye() {
    let g = Gateway::start_with(&["--session-ttl", "3s"], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, t) = audio_participant(&api).await;
    api.add(&s, &p, None).await;
    let dir = g.scratch().to_path_buf();
    write_tone_wav(&dir.join("t.wav"), 440.0, 2, Law::Ulaw);
    SippCall::new("expiring", "uac_wait_bye.xml")
        .var(
            "RTP",
            "<nop><action><exec rtp_stream=\"t.wav,-1,0\"/></action></nop>",
        )
        .token(&t)
        .spawn(&g, &dir)
        .assert_ok(Duration::from_secs(15));
}
