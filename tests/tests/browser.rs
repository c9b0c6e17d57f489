//! The unmodified Bandwidth browser SDK (`@bandwidth/webrtc-browser`) in headless
//! Chromium against the real gateway: what the page observes.

use patchbay_tests::browser::{
    assert_one_stream_heard, drive, drive_full, drive_in_background, drive_with, stream_events,
};
use patchbay_tests::Gateway;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_connects_and_bad_tokens_are_refused_with_a_reason() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (member, member_token) = api.participant(json!({})).await;
    api.add(&s, &member, None).await;
    let (_, lonely_token) = api.participant(json!({})).await;
    let (revoked, revoked_token) = api.participant(json!({})).await;
    api.add(&s, &revoked, None).await;
    api.call(Method::DELETE, &format!("/participants/{revoked}"), None)
        .await;
    // A well-formed JWT (the SDK decodes it client-side) whose signature is not ours.
    let mut parts: Vec<String> = member_token.split('.').map(String::from).collect();
    parts[2] = "A".repeat(parts[2].len());
    let tampered = parts.join(".");
    // A forgery that says `alg: none` (the reason once outgrew a close frame, and the
    // page saw 1006 with no reason).
    let forged = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = member_token.split('.').nth(1).unwrap();
        format!("{}.{claims}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#))
    };

    let report = drive(
        &g,
        json!([
            {"token": member_token, "connectTimeoutMs": 5000},
            {"token": revoked_token, "connectTimeoutMs": 2500},
            {"token": tampered, "connectTimeoutMs": 2500},
            {"token": lonely_token, "connectTimeoutMs": 2500},
            {"token": forged, "connectTimeoutMs": 2500},
        ]),
    );
    let pages = report["pages"].as_array().unwrap();
    // A member, and a participant in no session (parked until it is added), connect.
    for page in [&pages[0], &pages[3]] {
        assert_eq!(page["outcome"], "connected", "{page}");
        assert_eq!(page["closes"], json!([]), "{page}");
    }
    for (page, code, reason) in [
        (&pages[1], 4401, "no longer exists"),
        (&pages[2], 4401, "invalid token"),
        (&pages[4], 4401, "invalid token"),
    ] {
        // connect() never settles (the SDK retries forever); the page saw why.
        assert_eq!(page["outcome"], "timeout", "{page}");
        let closes = page["closes"].as_array().unwrap();
        assert!(!closes.is_empty(), "no close seen: {page}");
        assert!(
            closes
                .iter()
                .all(|c| c["code"] == code && c["reason"].as_str().unwrap().contains(reason)),
            "expected {code} `{reason}`: {page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_publishes_audio_and_media_arrives() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api.participant(json!({})).await;
    api.add(&s, &p, Some(json!({"sessionId": s}))).await;
    let report = drive(
        &g,
        json!([{"token": token, "connectTimeoutMs": 5000, "publish": {"alias": "microphone"}, "settleMs": 2500}]),
    );
    let page = &report["pages"][0];
    assert_eq!(page["outcome"], "connected", "{page}");
    // The SDK got our answer and the stream metadata it keys by msid.
    let published = &page["published"];
    assert_eq!(published["mediaTypes"], json!(["AUDIO"]), "{page}");
    assert_eq!(published["alias"], "microphone", "{page}");
    // ICE-lite, DTLS and SRTP came up: the browser's audio reached the session.
    let frames = g.metric("patchbay_webrtc_media_in_total").await;
    assert!(
        frames > 20.0,
        "only {frames} media frames from the browser:\n{}",
        g.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_the_publishers_audio_with_its_metadata() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (listener, listener_token) = api.participant(json!({})).await;
    let (talker, talker_token) = api.participant(json!({})).await;
    api.add(&s, &listener, Some(json!({"sessionId": s}))).await;
    api.add(&s, &talker, Some(json!({"sessionId": s}))).await;
    let report = drive_with(
        &g,
        json!([
            {"token": listener_token, "connectTimeoutMs": 5000},
            {"token": talker_token, "connectTimeoutMs": 5000, "publish": {"alias": "microphone"}, "settleMs": 500},
        ]),
        2500,
    );
    let listener_page = &report["pages"][0];
    let available: Vec<&Value> = listener_page["final"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "available")
        .collect();
    assert_eq!(available.len(), 1, "{listener_page}");
    let stream = available[0];
    assert_eq!(stream["participantId"], talker.as_str(), "{stream}");
    assert_eq!(stream["alias"], "microphone");
    assert_eq!(stream["mediaTypes"], json!(["AUDIO"]));
    // The fake microphone's beeps arrived: energy on the received track.
    let endpoint = stream["endpointId"].as_str().unwrap();
    let rms = listener_page["final"]["energy"][endpoint]
        .as_f64()
        .unwrap_or(0.0);
    assert!(rms > 0.01, "received audio rms {rms}: {listener_page}");
    assert!(g.metric("patchbay_webrtc_media_out_total").await > 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_and_a_phone_caller_hear_each_other() {
    use patchbay_tests::media::{assert_audible, decode_window, now_epoch, received, Capture, Law};
    use patchbay_tests::sipp::SippCall;
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (browser, browser_token) = api.participant(json!({})).await;
    let (phone, phone_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &browser, Some(json!({"sessionId": s}))).await;
    api.add(&s, &phone, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    let call = SippCall::tone("phone", &dir, 440, Law::Ulaw, 12000).token(&phone_token);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let report = drive_with(
        &g,
        json!([{"token": browser_token, "connectTimeoutMs": 5000, "publish": {"alias": "microphone"},
                "steps": [{"wait": 1500}, {"call": "dtmf", "arg": "5"}], "settleMs": 2000}]),
        500,
    );
    let until = now_epoch();
    drop(running);
    let packets = capture.stop();

    // The browser got the phone's stream, with the phone participant's metadata, and hears 440 Hz.
    let page = &report["pages"][0];
    let stream = assert_one_stream_heard(page, &phone, 440.0);
    assert_eq!(stream["alias"], "phone");
    assert_eq!(stream["mediaTypes"], json!(["AUDIO"]));

    // The phone hears the browser's fake microphone (it beeps): energy in what sipp received.
    let rx = received(&packets, call.media_port);
    let pcm = decode_window(&rx, Law::Ulaw, until - 3.0, until);
    assert_audible(&pcm, "the phone");

    // The SDK's sendDtmf("5") reached the phone as RFC 4733 (its telephone-event PT 101).
    let events: Vec<_> = rx.iter().filter(|p| p.payload_type == 101).collect();
    assert!(!events.is_empty(), "no telephone-event reached the phone");
    assert!(
        events
            .iter()
            .all(|p| p.payload.len() == 4 && p.payload[0] == 5),
        "not digit 5"
    );
    assert!(events[0].marker, "the event's first packet has the marker");
    assert!(
        events.iter().any(|p| p.payload[1] & 0x80 != 0),
        "no end-of-event packet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whisper_change_removes_the_stream_and_restoring_it_brings_it_back() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (listener, listener_token) = api.participant(json!({})).await;
    let (talker, talker_token) = api.participant(json!({})).await;
    api.add(&s, &listener, Some(json!({"sessionId": s}))).await;
    api.add(&s, &talker, Some(json!({"sessionId": s}))).await;
    let url = api.url(&format!(
        "/sessions/{s}/participants/{listener}/subscriptions"
    ));
    let auth = "Basic ZGV2OmRldg=="; // dev:dev
    let report = drive_full(
        &g,
        json!([
            {"token": listener_token, "connectTimeoutMs": 5000},
            {"token": talker_token, "connectTimeoutMs": 5000, "publish": {"alias": "microphone"}, "settleMs": 2000},
        ]),
        json!([
            // Before: the listener hears the talker.
            {"afterMs": 0, "measure": true},
            // Whisper: the listener now hears only itself (nobody).
            {"afterMs": 0, "method": "PUT", "url": url, "authorization": auth,
             "body": {"participants": [{"participantId": listener}]}},
            // During: the talker's audio no longer reaches it.
            {"afterMs": 1000, "measure": true},
            // And back to everyone.
            {"afterMs": 0, "method": "PUT", "url": url, "authorization": auth, "body": {"sessionId": s}},
        ]),
        2000,
    );
    let events: Vec<(String, String)> = report["pages"][0]["final"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["endpointId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let log = g.log();
    let offers: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sdpOffer") || l.contains("answer"))
        .collect();
    assert_eq!(
        kinds,
        vec!["available", "unavailable", "available"],
        "{}\n{offers:#?}",
        report["pages"][0]
    );
    assert!(
        events.iter().all(|(_, id)| *id == events[0].1),
        "one stream throughout: {events:?}"
    );
    let available = report["pages"][0]["final"]["events"][2].clone();
    assert_eq!(available["participantId"], talker.as_str());
    assert_eq!(available["alias"], "microphone");
    // What the listener heard of the talker's stream: audio before, silence during the
    // whisper, audio again after.
    let stream = events[0].1.as_str();
    let measures = &report["pages"][0]["measures"];
    let before = measures[0][stream].as_f64().unwrap_or(0.0);
    let during = measures[1][stream].as_f64().unwrap_or(0.0);
    let after = report["pages"][0]["final"]["energy"][stream]
        .as_f64()
        .unwrap_or(0.0);
    assert!(before > 0.001, "heard before the whisper: {measures}");
    assert!(
        during < before / 20.0,
        "still heard during the whisper: {measures}"
    );
    assert!(after > 0.001, "not heard after the restore: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_participant_closes_its_device_and_its_stream_goes() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (listener, listener_token) = api.participant(json!({})).await;
    let (talker, talker_token) = api.participant(json!({})).await;
    api.add(&s, &listener, Some(json!({"sessionId": s}))).await;
    api.add(&s, &talker, Some(json!({"sessionId": s}))).await;
    let report = drive_full(
        &g,
        json!([
            {"token": listener_token, "connectTimeoutMs": 5000},
            {"token": talker_token, "connectTimeoutMs": 5000, "publish": {"alias": "microphone"}, "settleMs": 2000},
        ]),
        json!([{"afterMs": 0, "method": "DELETE", "url": api.url(&format!("/participants/{talker}")),
                "authorization": "Basic ZGV2OmRldg=="}]),
        2500,
    );
    let kinds: Vec<&str> = report["pages"][0]["final"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["available", "unavailable"],
        "{}",
        report["pages"][0]
    );
    // The talker's page saw its connection closed with the reason, then its revoked token refused.
    let closes = report["pages"][1]["final"]["closes"].as_array().unwrap();
    assert!(
        closes
            .iter()
            .any(|c| c["code"] == 4403 && c["reason"].as_str().unwrap().contains("deleted")),
        "{}",
        report["pages"][1]
    );
    assert!(
        closes.iter().any(
            |c| c["code"] == 4401 && c["reason"].as_str().unwrap().contains("no longer exists")
        ),
        "{}",
        report["pages"][1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_reaches_a_subscriber_and_audio_only_participants_send_none() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (listener, listener_token) = api.participant(json!({})).await;
    let (camera, camera_token) = api
        .participant(json!({"publishPermissions": ["AUDIO", "VIDEO"]}))
        .await;
    let (voice, voice_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    for p in [&listener, &camera, &voice] {
        api.add(&s, p, Some(json!({"sessionId": s}))).await;
    }
    let report = drive_with(
        &g,
        json!([
            {"token": listener_token, "connectTimeoutMs": 5000},
            {"token": camera_token, "connectTimeoutMs": 5000, "publish": {"alias": "camera", "video": true}, "settleMs": 500},
            {"token": voice_token, "connectTimeoutMs": 5000, "publish": {"alias": "mic", "video": true}, "settleMs": 500},
        ]),
        3000,
    );
    let pages = report["pages"].as_array().unwrap();
    // The AUDIO-only participant asked for audio and video; only audio was accepted.
    assert_eq!(
        pages[2]["published"]["mediaTypes"],
        json!(["AUDIO"]),
        "{}",
        pages[2]
    );
    assert_eq!(
        pages[1]["published"]["mediaTypes"],
        json!(["AUDIO", "VIDEO"]),
        "{}",
        pages[1]
    );
    let available: Vec<&Value> = pages[0]["final"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "available")
        .collect();
    let from = |p: &str| available.iter().find(|e| e["participantId"] == p).copied();
    let camera_stream = from(&camera).unwrap_or_else(|| panic!("no camera stream: {}", pages[0]));
    let voice_stream = from(&voice).unwrap_or_else(|| panic!("no voice stream: {}", pages[0]));
    assert_eq!(camera_stream["mediaTypes"], json!(["AUDIO", "VIDEO"]));
    assert_eq!(voice_stream["mediaTypes"], json!(["AUDIO"]));
    assert_eq!(voice_stream["videoTracks"], 0, "{voice_stream}");
    // The camera's frames were decoded by the listener (a keyframe was requested for it).
    let endpoint = camera_stream["endpointId"].as_str().unwrap();
    let video = &pages[0]["final"]["video"][endpoint];
    assert!(
        video["frames"].as_u64().unwrap_or(0) > 10,
        "decoded video frames: {video}"
    );
    assert!(video["width"].as_u64().unwrap_or(0) > 0, "{video}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_signaling_socket_resumes_and_media_carries_on() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (listener, listener_token) = api.participant(json!({})).await;
    let (talker, talker_token) = api.participant(json!({})).await;
    for p in [&listener, &talker] {
        api.add(&s, p, Some(json!({"sessionId": s}))).await;
    }
    let report = drive_with(
        &g,
        json!([
            {"token": listener_token, "connectTimeoutMs": 5000},
            {"token": talker_token, "connectTimeoutMs": 5000, "publish": {"alias": "mic"},
             "steps": [{"wait": 1500}, {"call": "dropSocket"}, {"wait": 3000}]},
        ]),
        500,
    );
    let pages = report["pages"].as_array().unwrap();
    // The talker's socket went (its own 4000) and came back by itself, with no close from us.
    let closes = pages[1]["final"]["closes"].as_array().unwrap();
    assert_eq!(closes.len(), 1, "{}", pages[1]);
    assert_eq!(closes[0]["code"], 4000);
    // The listener never lost the talker's stream, and still hears it.
    assert_eq!(
        stream_events(&pages[0], "available").len(),
        1,
        "{}",
        pages[0]
    );
    assert!(
        stream_events(&pages[0], "unavailable").is_empty(),
        "{}",
        pages[0]
    );
    let energy = pages[0]["final"]["energy"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_f64)
        .fold(0.0, f64::max);
    assert!(energy > 0.001, "silence after the resume: {}", pages[0]);
    assert_eq!(g.metric("patchbay_signaling_resumed_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_heartbeat_ends_the_device() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (listener, listener_token) = api.participant(json!({})).await;
    let (talker, talker_token) = api.participant(json!({})).await;
    for p in [&listener, &talker] {
        api.add(&s, p, Some(json!({"sessionId": s}))).await;
    }
    let report = drive_with(
        &g,
        json!([
            {"token": listener_token, "connectTimeoutMs": 5000},
            {"token": talker_token, "connectTimeoutMs": 5000, "publish": {"alias": "mic"},
             "steps": [{"wait": 1000}, {"call": "silenceHeartbeat"}, {"wait": 21000}]},
        ]),
        0,
    );
    let pages = report["pages"].as_array().unwrap();
    let closes = pages[1]["final"]["closes"].as_array().unwrap();
    assert!(
        closes
            .iter()
            .any(|c| c["code"] == 4408 && c["reason"].as_str().unwrap().contains("heartbeat")),
        "{}",
        pages[1]
    );
    // Its stream went away for the listener.
    assert_eq!(
        stream_events(&pages[0], "available").len(),
        1,
        "{}",
        pages[0]
    );
    assert_eq!(
        stream_events(&pages[0], "unavailable").len(),
        1,
        "{}",
        pages[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_of_the_participant_replaces_the_first() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api.participant(json!({})).await;
    api.add(&s, &p, None).await;
    let report = drive_with(
        &g,
        json!([
            {"token": token, "connectTimeoutMs": 5000, "publish": {"alias": "first"}},
            {"token": token, "connectTimeoutMs": 5000, "publish": {"alias": "second"}, "settleMs": 2500},
        ]),
        0,
    );
    let pages = report["pages"].as_array().unwrap();
    // The first SDK was closed normally with the reason, and did not come back (no
    // reconnect fight): the second stays connected.
    let first = pages[0]["final"]["closes"].as_array().unwrap();
    assert_eq!(first.len(), 1, "{}", pages[0]);
    assert_eq!(first[0]["code"], 1000);
    assert!(first[0]["reason"].as_str().unwrap().contains("replaced"));
    assert!(
        pages[1]["final"]["closes"].as_array().unwrap().is_empty(),
        "{}",
        pages[1]
    );
    assert_eq!(pages[1]["outcome"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_events_reach_the_callback_url_with_the_sdk_unique_id() {
    use patchbay_tests::hooks::Receiver;
    let hooks = Receiver::start().await;
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api
        .participant(json!({"callbackUrl": hooks.url("/cb/browser"), "tag": "web"}))
        .await;
    api.add(&s, &p, Some(json!({"sessionId": s}))).await;
    let report = drive_with(
        &g,
        json!([{"token": token, "connectTimeoutMs": 5000, "publish": {"alias": "mic"},
                "steps": [{"wait": 1000}, {"call": "dropSocket"}, {"wait": 2500}, {"call": "disconnect"}, {"wait": 500}]}]),
        0,
    );
    let page = &report["pages"][0];
    let url = page["final"]["socketUrls"][0].as_str().unwrap().to_string();
    let unique_id = url
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("uniqueId="))
        .unwrap_or_else(|| panic!("no uniqueId in {url}"))
        .to_string();
    hooks
        .wait_for(
            std::time::Duration::from_secs(10),
            "four device events",
            |h| h.len() >= 4,
        )
        .await;
    let bodies = hooks.delivered("/cb/browser");
    let events: Vec<&str> = bodies
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["onConnect", "onDisconnect", "onConnect", "onLeave"],
        "{page}"
    );
    for b in &bodies {
        assert_eq!(b["deviceId"], unique_id.as_str());
        assert_eq!(b["participantId"], p.as_str());
        assert_eq!(b["tag"], "web");
    }
}

/// `kill -9` while a browser device and a phone call are connected: the restarted
/// gateway ends both for the application (`onDisconnect`, `onLeave` with a reason),
/// delivered to the real receiver like any event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_ends_the_devices_and_calls_it_left_connected() {
    use patchbay_tests::hooks::Receiver;
    use patchbay_tests::media::Law;
    use patchbay_tests::sipp::SippCall;
    use std::time::Duration;
    let hooks = Receiver::start().await;
    let mut g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (browser, browser_token) = api
        .participant(json!({"callbackUrl": hooks.url("/cb/browser"), "tag": "web"}))
        .await;
    let (phone, phone_token) = api
        .participant(
            json!({"publishPermissions": ["AUDIO"], "callbackUrl": hooks.url("/cb/phone")}),
        )
        .await;
    api.add(&s, &browser, Some(json!({"sessionId": s}))).await;
    api.add(&s, &phone, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    let call = SippCall::tone("phone", &dir, 440, Law::Ulaw, 30000).token(&phone_token);
    let running = call.spawn(&g, &dir);
    let page = drive_in_background(
        &g,
        json!([{"token": browser_token, "connectTimeoutMs": 5000, "publish": {"alias": "mic"},
                "steps": [{"wait": 12000}]}]),
        json!([]),
        0,
        // The page only has to connect; after the kill its report does not matter.
        40_000,
    );
    hooks
        .wait_for(Duration::from_secs(20), "both onConnect", |h| {
            h.iter().filter(|h| h.body["event"] == "onConnect").count() >= 2
        })
        .await;
    let sip_call_id = hooks.delivered("/cb/phone")[0]["deviceId"]
        .as_str()
        .unwrap()
        .to_string();
    let unique_id = hooks.delivered("/cb/browser")[0]["deviceId"]
        .as_str()
        .unwrap()
        .to_string();

    g.kill9();
    g.restart().await;
    hooks
        .wait_for(Duration::from_secs(20), "onLeave of both", |h| {
            h.iter().filter(|h| h.body["event"] == "onLeave").count() >= 2
        })
        .await;
    drop(running);
    for (path, participant, device) in [
        ("/cb/phone", &phone, &sip_call_id),
        ("/cb/browser", &browser, &unique_id),
    ] {
        // At-least-once: a callback delivered just before the kill may come again after
        // the restart, with the same eventId; receivers de-duplicate on it.
        let mut seen = std::collections::HashSet::new();
        let bodies: Vec<Value> = hooks
            .delivered(path)
            .into_iter()
            .filter(|b| seen.insert(b["eventId"].as_str().unwrap_or_default().to_string()))
            .collect();
        let events: Vec<&str> = bodies
            .iter()
            .map(|b| b["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            events[..3],
            ["onConnect", "onDisconnect", "onLeave"],
            "{path}: {bodies:?}"
        );
        for b in &bodies[..3] {
            assert_eq!(b["participantId"], participant.as_str(), "{b}");
            assert_eq!(b["deviceId"], device.as_str(), "{b}");
        }
        for b in &bodies[1..3] {
            assert_eq!(
                b["reason"], "the gateway restarted while it was connected",
                "{b}"
            );
        }
    }
    assert_eq!(hooks.delivered("/cb/browser")[0]["tag"], "web");
    // Nothing is left to end at the next start (the driver ends by its deadline at the
    // latest; its report is not needed).
    let _ = page.join();
    g.kill9();
    g.restart().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let phone_events: std::collections::HashSet<String> = hooks
        .delivered("/cb/phone")
        .iter()
        .map(|b| b["eventId"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(phone_events.len(), 3, "{:?}", hooks.delivered("/cb/phone"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_participant_cannot_take_over_a_device_by_its_unique_id() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (victim, victim_token) = api.participant(json!({})).await;
    let (listener, listener_token) = api.participant(json!({})).await;
    let (attacker, attacker_token) = api.participant(json!({})).await;
    // Each participant is in the session (the attacker holds a valid token of its own).
    for p in [&victim, &listener, &attacker] {
        api.add(&s, p, Some(json!({"sessionId": s}))).await;
    }
    let report = drive_with(
        &g,
        json!([
            {"token": victim_token, "uniqueId": "the-victims-device", "connectTimeoutMs": 5000,
             "publish": {"alias": "victim"}},
            {"token": listener_token, "connectTimeoutMs": 5000, "settleMs": 1500},
            // Another participant's SDK opens its socket with the victim's uniqueId (and
            // keeps reconnecting, as the SDK does after a refusal).
            {"token": attacker_token, "uniqueId": "the-victims-device", "connectTimeoutMs": 3000,
             "settleMs": 1000},
        ]),
        500,
    );
    let pages = report["pages"].as_array().unwrap();
    // The attacker is refused with a clear reason, every time it tries: every socket its
    // SDK opened was closed by us (but one just opened at the final look), all with 4409.
    // (Whether the SDK's connect() settles is its own affair: it can resolve on the
    // socket's open, before our close arrives.)
    let refusals = pages[2]["final"]["closes"].as_array().unwrap();
    let sockets = pages[2]["final"]["socketUrls"].as_array().unwrap().len();
    assert!(!refusals.is_empty(), "{}", pages[2]);
    assert!(
        refusals.len() + 1 >= sockets,
        "a socket stayed open: {}",
        pages[2]
    );
    for c in refusals {
        assert_eq!(c["code"], 4409, "{}", pages[2]);
        assert!(
            c["reason"]
                .as_str()
                .unwrap()
                .contains("uniqueId already used"),
            "{c}"
        );
    }
    // The victim keeps its device (never closed) and its media: the listener still
    // hears its stream, published by the victim.
    assert_eq!(pages[0]["outcome"], "connected");
    assert!(
        pages[0]["final"]["closes"].as_array().unwrap().is_empty(),
        "{}",
        pages[0]
    );
    let available: Vec<&Value> = stream_events(&pages[1], "available");
    assert_eq!(available.len(), 1, "{}", pages[1]);
    assert_eq!(available[0]["participantId"], victim.as_str());
    assert!(
        stream_events(&pages[1], "unavailable").is_empty(),
        "{}",
        pages[1]
    );
    let endpoint = available[0]["endpointId"].as_str().unwrap();
    let rms = pages[1]["final"]["energy"][endpoint]
        .as_f64()
        .unwrap_or(0.0);
    assert!(rms > 0.001, "the listener still hears the victim: {rms}");
    assert!(g.metric("patchbay_devices_refused_total").await >= 1.0);
}
