//! Device signaling (`/v3`): token checks on connect and JSON-RPC basics, over a real WebSocket.

use futures_util::SinkExt;
use patchbay_tests::ws::{connect, next, rpc};
use patchbay_tests::Gateway;
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn tokens_are_checked_on_connect() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api.participant(json!({})).await;
    let (_, lonely_token) = api.participant(json!({})).await;

    // Garbage token.
    let mut ws = connect(&g, "not.a.jwt", "dev-1").await;
    let (code, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 4401);
    assert!(reason.contains("invalid token"), "{reason}");

    // Valid token, but not in a session.
    let mut ws = connect(&g, &lonely_token, "dev-2").await;
    let (code, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 4403);
    assert!(reason.contains("not in a session"), "{reason}");

    // In a session: accepted; ids echoed verbatim, integers and strings.
    api.add(&s, &p, None).await;
    let mut ws = connect(&g, &token, "dev-3").await;
    let r = rpc(
        &mut ws,
        json!(1),
        "setMediaPreferences",
        json!({"protocol": "WEBRTC"}),
    )
    .await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": {}, "id": 1}));
    let r = rpc(&mut ws, json!("a7c9e0b2-uuid"), "ping", json!({})).await;
    assert_eq!(r["id"], "a7c9e0b2-uuid");
    let r = rpc(&mut ws, json!(3), "teleport", json!({})).await;
    assert_eq!(r["error"]["code"], -32601);
    assert_eq!(r["id"], 3);
    ws.send(Message::Text("this is not json".into()))
        .await
        .unwrap();
    let r: serde_json::Value = serde_json::from_str(&next(&mut ws).await.unwrap()).unwrap();
    assert_eq!(r["error"]["code"], -32700);
    // The connection survives garbage.
    let r = rpc(&mut ws, json!(4), "ping", json!({})).await;
    assert_eq!(r["result"], json!({}));

    // Deleting the participant revokes the token.
    let r = api
        .call(Method::DELETE, &format!("/participants/{p}"), None)
        .await;
    assert_eq!(r.status, reqwest::StatusCode::NO_CONTENT);
    let mut ws = connect(&g, &token, "dev-4").await;
    let (code, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 4401);
    assert!(reason.contains("no longer exists"), "{reason}");
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let g = Gateway::start_with(&["--token-ttl", "1s"], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api.participant(json!({})).await;
    api.add(&s, &p, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut ws = connect(&g, &token, "dev-1").await;
    let (code, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 4401);
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn leave_closes_normally() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api.participant(json!({})).await;
    api.add(&s, &p, None).await;
    let mut ws = connect(&g, &token, "dev-1").await;
    ws.send(Message::Text(
        json!({"jsonrpc": "2.0", "method": "leave"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let (code, _) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 1000);
}

#[tokio::test]
async fn unparseable_sdp_gets_an_error_result_and_the_connection_stays() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api.participant(json!({})).await;
    api.add(&s, &p, None).await;
    let mut ws = connect(&g, &token, "dev-1").await;
    let r = rpc(
        &mut ws,
        json!(1),
        "offerSdp",
        json!({"sdpOffer": "this is not SDP", "mediaMetadata": {}}),
    )
    .await;
    assert_eq!(r["id"], 1);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("SDP"),
        "{r}"
    );
    let r = rpc(&mut ws, json!(2), "offerSdp", json!({"mediaMetadata": {}})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = rpc(&mut ws, json!(3), "ping", json!({})).await;
    assert_eq!(r["result"], json!({}));
}

#[tokio::test]
async fn a_new_unique_id_replaces_the_old_device() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api.participant(json!({})).await;
    api.add(&s, &p, None).await;
    let mut first = connect(&g, &token, "dev-1").await;
    let r = rpc(&mut first, json!(1), "ping", json!({})).await;
    assert_eq!(r["result"], json!({}));
    let mut second = connect(&g, &token, "dev-2").await;
    // A normal close with the reason: the SDK does not reconnect after 1000.
    let (code, reason) = next(&mut first).await.unwrap_err();
    assert_eq!(code, 1000);
    assert!(reason.contains("replaced"), "{reason}");
    let r = rpc(&mut second, json!(2), "ping", json!({})).await;
    assert_eq!(r["result"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdp_offer_is_sent_again_on_resume_and_an_unanswered_one_ends_the_device() {
    use patchbay_tests::media::{write_tone_wav, Law};
    use patchbay_tests::sipp::SippCall;
    use patchbay_tests::ws::next_within;
    use std::time::{Duration, Instant};
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api.participant(json!({})).await;
    let (phone, phone_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &p, Some(json!({"sessionId": s}))).await;
    api.add(&s, &phone, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    write_tone_wav(&dir.join("tone.wav"), 440.0, 2, Law::Ulaw);
    let call = SippCall::new("phone", "uac_tone.xml")
        .var("WAV", "tone.wav")
        .var("PT", "0")
        .var("CODEC", "PCMU")
        .var("HOLD_MS", "30000")
        .token(&phone_token);
    let _running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // The device is offered the phone's stream.
    let mut ws = connect(&g, &token, "dev-1").await;
    let offer: serde_json::Value = serde_json::from_str(&next(&mut ws).await.unwrap()).unwrap();
    assert_eq!(offer["method"], "sdpOffer", "{offer}");
    assert_eq!(offer["params"]["sdpRevision"], 1);
    // The socket dies without a close (a network failure), and the SDK comes back with
    // the same uniqueId: the same offer is sent again.
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ws = connect(&g, &token, "dev-1").await;
    let again: serde_json::Value = serde_json::from_str(&next(&mut ws).await.unwrap()).unwrap();
    assert_eq!(again, offer);
    assert_eq!(g.metric("patchbay_signaling_resumed_total").await, 1.0);
    // Nobody answers it: the device is ended with the reason, in about 10 s.
    let sent = Instant::now();
    let (code, reason) = next_within(&mut ws, Duration::from_secs(15))
        .await
        .unwrap_err();
    assert_eq!(code, 4408);
    assert!(reason.contains("sdpOffer"), "{reason}");
    assert!(
        sent.elapsed() >= Duration::from_secs(9),
        "{:?}",
        sent.elapsed()
    );
    // The call is unaffected.
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 1.0);
}
