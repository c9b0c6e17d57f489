//! The Bandwidth browser SDK's legacy v2 protocol (participants created with
//! `deviceApiVersion: "V2"`, the Python server SDK's default), with the unmodified SDK
//! in headless Chromium: versions 0.12.0-beta.1 and 0.9.2-beta.1.

use patchbay_tests::browser::{drive_with, stream_events};
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
