//! The Bandwidth browser SDK's legacy v2 protocol (participants created with
//! `deviceApiVersion: "V2"`, the Python server SDK's default), with the unmodified SDK
//! in headless Chromium: versions 0.12.0-beta.1 and 0.9.2-beta.1.

use patchbay_tests::browser::{drive_full, drive_with, stream_events};
use patchbay_tests::Gateway;
use serde_json::{json, Value};

/// The SDK versions whose v2 protocol is tested (`drive.js` page builds).
const SDKS: [&str; 2] = ["0.12.0", "0.9.2"];

fn sdk_page(sdk: &str) -> Option<&str> {
    (sdk == "0.9.2").then_some("0.9.2")
}

/// The one stream of `participant` a page saw become available (the v2 SDK reports it
/// once per track), checked against what was published.
fn available_from<'a>(page: &'a Value, participant: &str) -> Vec<&'a Value> {
    stream_events(page, "available")
        .into_iter()
        .filter(|e| e["participantId"] == participant)
        .collect()
}

/// Two V2 browsers publish (one audio and video, one audio): each sees the other's
/// stream with its participant, alias and media types, hears it, and video arrives.
async fn two_v2_browsers_see_and_hear_each_other(sdk: &str) {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (a, a_token) = api.participant(json!({"deviceApiVersion": "V2"})).await;
    let (b, b_token) = api.participant(json!({"deviceApiVersion": "V2"})).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    let page = sdk_page(sdk);
    let report = drive_with(
        &g,
        json!([
            {"token": a_token, "sdk": page, "connectTimeoutMs": 5000, "publish": {"alias": "cam", "video": true}},
            {"token": b_token, "sdk": page, "connectTimeoutMs": 5000, "publish": {"alias": "mic"}, "settleMs": 500},
        ]),
        3000,
    );
    for (i, page) in report["pages"].as_array().unwrap().iter().enumerate() {
        assert_eq!(page["outcome"], "connected", "page {i}: {page}");
        // The SDK opened the v2 path with its own version.
        let url = page["final"]["socketUrls"][0].as_str().unwrap_or_default();
        assert!(
            url.contains("/v2/?token=") && url.contains(&format!("sdkVersion={sdk}")),
            "{url}"
        );
        let published = &page["published"];
        assert!(published["endpointId"].is_string(), "{published}");
    }
    let (pa, pb) = (&report["pages"][0], &report["pages"][1]);
    assert_eq!(pa["published"]["mediaTypes"], json!(["AUDIO", "VIDEO"]));

    // b sees a's stream: audio and video, alias "cam", one endpoint.
    let seen = available_from(pb, &a);
    assert!(!seen.is_empty(), "{pb}");
    let endpoint = seen[0]["endpointId"].as_str().unwrap();
    assert!(seen.iter().all(|e| e["endpointId"] == endpoint
        && e["alias"] == "cam"
        && e["mediaTypes"] == json!(["AUDIO", "VIDEO"])));
    let rms = pb["final"]["energy"][endpoint].as_f64().unwrap_or(0.0);
    assert!(rms > 0.01, "b heard a at rms {rms}: {pb}");
    let frames = pb["final"]["video"][endpoint]["frames"]
        .as_u64()
        .unwrap_or(0);
    assert!(frames > 10, "b decoded {frames} video frames of a: {pb}");

    // a sees b's stream: audio only, alias "mic".
    let seen = available_from(pa, &b);
    assert_eq!(seen.len(), 1, "{pa}");
    assert_eq!(seen[0]["alias"], "mic");
    assert_eq!(seen[0]["mediaTypes"], json!(["AUDIO"]));
    let endpoint = seen[0]["endpointId"].as_str().unwrap();
    let rms = pa["final"]["energy"][endpoint].as_f64().unwrap_or(0.0);
    assert!(rms > 0.01, "a heard b at rms {rms}: {pa}");
    // Nothing of their own came back.
    assert!(available_from(pa, &a).is_empty() && available_from(pb, &b).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_browsers_see_and_hear_each_other_sdk_0_12() {
    two_v2_browsers_see_and_hear_each_other(SDKS[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_browsers_see_and_hear_each_other_sdk_0_9() {
    two_v2_browsers_see_and_hear_each_other(SDKS[1]).await;
}

/// A whisper change sent to the REST API takes a V2 browser's stream away (the SDK's
/// `endpointRemoved` → `onStreamUnavailable`, silence) and restoring the subscription
/// brings it back on a new endpoint (`sdpNeeded` again), audible.
async fn a_subscription_change_removes_and_restores_a_v2_stream(sdk: &str) {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (listener, listener_token) = api.participant(json!({"deviceApiVersion": "V2"})).await;
    let (talker, talker_token) = api.participant(json!({"deviceApiVersion": "V2"})).await;
    api.add(&s, &listener, Some(json!({"sessionId": s}))).await;
    api.add(&s, &talker, Some(json!({"sessionId": s}))).await;
    let url = api.url(&format!(
        "/sessions/{s}/participants/{listener}/subscriptions"
    ));
    let auth = "Basic ZGV2OmRldg=="; // dev:dev
    let page = sdk_page(sdk);
    let report = drive_full(
        &g,
        json!([
            {"token": listener_token, "sdk": page, "connectTimeoutMs": 5000},
            {"token": talker_token, "sdk": page, "connectTimeoutMs": 5000, "publish": {"alias": "mic"}, "settleMs": 2000},
        ]),
        json!([
            {"afterMs": 0, "measure": true},
            // Whisper: the listener hears nobody.
            {"afterMs": 0, "method": "PUT", "url": url, "authorization": auth,
             "body": {"participants": [{"participantId": listener}]}},
            {"afterMs": 1000, "measure": true},
            // Back to the whole session.
            {"afterMs": 0, "method": "PUT", "url": url, "authorization": auth, "body": {"sessionId": s}},
        ]),
        2500,
    );
    let page = &report["pages"][0];
    let events: Vec<(&str, &str)> = page["final"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["endpointId"].as_str().unwrap(),
            )
        })
        .collect();
    // available E1, unavailable E1, available E2 (the SDK may report E1 unavailable once
    // more when its closed connection times out).
    assert!(events.len() >= 3, "{page}");
    let (first, removed, restored) = (events[0], events[1], events[2]);
    assert_eq!(first.0, "available", "{events:?}");
    assert_eq!(removed, ("unavailable", first.1), "{events:?}");
    assert_eq!(restored.0, "available", "{events:?}");
    assert_ne!(restored.1, first.1, "a new endpoint: {events:?}");
    assert!(
        events[3..].iter().all(|e| *e == removed),
        "nothing else happened: {events:?}"
    );
    for e in stream_events(page, "available") {
        assert_eq!(e["participantId"], talker.as_str());
        assert_eq!(e["alias"], "mic");
        assert_eq!(e["mediaTypes"], json!(["AUDIO"]));
    }
    let measures = &page["measures"];
    let before = measures[0][first.1].as_f64().unwrap_or(0.0);
    let during = measures[1][first.1].as_f64().unwrap_or(0.0);
    let after = page["final"]["energy"][restored.1].as_f64().unwrap_or(0.0);
    assert!(before > 0.001, "heard before the whisper: {measures}");
    assert!(
        during < before / 20.0,
        "still heard during the whisper: {measures}"
    );
    assert!(after > 0.001, "not heard after the restore: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_change_removes_and_restores_a_v2_stream_sdk_0_12() {
    a_subscription_change_removes_and_restores_a_v2_stream(SDKS[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_change_removes_and_restores_a_v2_stream_sdk_0_9() {
    a_subscription_change_removes_and_restores_a_v2_stream(SDKS[1]).await;
}

/// A sipp caller and two V2 browsers (one per SDK version) in one session: each browser
/// hears the caller's 440 Hz, the caller hears the browsers, and a browser's `sendDtmf`
/// reaches the caller (in-band, as the v2 SDK sends it). The browsers' devices raise `onConnect` and `onLeave`
/// like v3 devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_caller_and_v2_browsers_hear_each_other() {
    use patchbay_tests::hooks::Receiver;
    use patchbay_tests::media::{
        assert_audible, decode_window, now_epoch, received, tones_present, Capture, Law,
    };
    use patchbay_tests::sipp::SippCall;
    let hooks = Receiver::start().await;
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let v2 = |path: &str| json!({"deviceApiVersion": "V2", "callbackUrl": hooks.url(path)});
    let (b1, b1_token) = api.participant(v2("/cb/b1")).await;
    let (b2, b2_token) = api.participant(v2("/cb/b2")).await;
    let (phone, phone_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    for p in [&b1, &b2, &phone] {
        api.add(&s, p, Some(json!({"sessionId": s}))).await;
    }
    let dir = g.scratch().to_path_buf();
    let call = SippCall::tone("phone", &dir, 440, Law::Ulaw, 14000).token(&phone_token);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let report = drive_with(
        &g,
        json!([
            {"token": b1_token, "connectTimeoutMs": 5000, "publish": {"alias": "mic"}},
            {"token": b2_token, "sdk": "0.9.2", "connectTimeoutMs": 5000, "publish": {"alias": "mic"},
             "steps": [{"wait": 1500}, {"call": "dtmf", "arg": "7"}], "settleMs": 2000},
        ]),
        500,
    );
    let until = now_epoch();
    drop(running);
    let packets = capture.stop();

    for page in report["pages"].as_array().unwrap() {
        let seen = available_from(page, &phone);
        assert_eq!(seen.len(), 1, "{page}");
        assert_eq!(seen[0]["alias"], "phone");
        assert_eq!(seen[0]["mediaTypes"], json!(["AUDIO"]));
        let endpoint = seen[0]["endpointId"].as_str().unwrap();
        let peak = page["final"]["peaks"][endpoint].as_f64().unwrap_or(0.0);
        assert!(
            (400.0..480.0).contains(&peak),
            "a browser's strongest frequency {peak} Hz: {page}"
        );
    }
    // The caller hears the browsers' fake microphones.
    let rx = received(&packets, call.media_port);
    let pcm = decode_window(&rx, Law::Ulaw, until - 3.0, until);
    assert_audible(&pcm, "the caller");
    // The v2 SDK's sendDtmf plays DTMF in the published audio (its DtmfSender mixes two
    // oscillators into the track; RFC 4733 is v3's): the caller hears 852 + 1209 Hz ("7").
    let all = decode_window(&rx, Law::Ulaw, 0.0, until);
    let heard_seven = all.chunks(640).any(|w| {
        let (present, _) = tones_present(
            w,
            &[697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0],
            8000.0,
        );
        present == [852, 1209]
    });
    assert!(
        heard_seven,
        "the caller never heard the DTMF 7 of a v2 browser"
    );
    // Device events: onConnect, then onLeave or onDisconnect once the page is gone, with
    // the SDK's uniqueId, for each browser.
    for (i, (p, path)) in [(&b1, "/cb/b1"), (&b2, "/cb/b2")].into_iter().enumerate() {
        hooks
            .wait_for(std::time::Duration::from_secs(10), "a device's end", |_| {
                hooks.delivered(path).len() >= 2
            })
            .await;
        let bodies = hooks.delivered(path);
        let kinds: Vec<&str> = bodies
            .iter()
            .map(|b| b["event"].as_str().unwrap())
            .collect();
        assert_eq!(kinds[0], "onConnect", "{kinds:?}");
        assert!(matches!(kinds[1], "onLeave" | "onDisconnect"), "{kinds:?}");
        let url = report["pages"][i]["final"]["socketUrls"][0]
            .as_str()
            .unwrap();
        for b in &bodies {
            assert_eq!(b["participantId"], p.as_str());
            assert!(url.contains(&format!("uniqueId={}", b["deviceId"].as_str().unwrap())));
        }
    }
}

/// A V2 browser and a V3 browser in one session see and hear each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_and_a_v3_browser_see_and_hear_each_other() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (old, old_token) = api.participant(json!({"deviceApiVersion": "V2"})).await;
    let (new, new_token) = api.participant(json!({"deviceApiVersion": "V3"})).await;
    api.add(&s, &old, Some(json!({"sessionId": s}))).await;
    api.add(&s, &new, Some(json!({"sessionId": s}))).await;
    let report = drive_with(
        &g,
        json!([
            {"token": old_token, "connectTimeoutMs": 5000, "publish": {"alias": "old", "video": true}},
            {"token": new_token, "connectTimeoutMs": 5000, "publish": {"alias": "new", "video": true}, "settleMs": 500},
        ]),
        3000,
    );
    let (po, pn) = (&report["pages"][0], &report["pages"][1]);
    let url = |p: &Value| {
        p["final"]["socketUrls"][0]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(url(po).contains("/v2/?"), "{}", url(po));
    assert!(url(pn).contains("/v3/?"), "{}", url(pn));
    for (page, other, alias) in [(po, &new, "new"), (pn, &old, "old")] {
        let seen = available_from(page, other);
        assert!(!seen.is_empty(), "{page}");
        assert!(seen
            .iter()
            .all(|e| e["alias"] == alias && e["mediaTypes"] == json!(["AUDIO", "VIDEO"])));
        let endpoint = seen[0]["endpointId"].as_str().unwrap();
        let rms = page["final"]["energy"][endpoint].as_f64().unwrap_or(0.0);
        assert!(rms > 0.01, "heard {alias} at rms {rms}: {page}");
        let frames = page["final"]["video"][endpoint]["frames"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            frames > 10,
            "decoded {frames} video frames of {alias}: {page}"
        );
    }
}
