//! Device signaling (`/v3`, and `/v2` for the legacy protocol): token checks on connect and JSON-RPC basics, over a real WebSocket.

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

    // Valid token, not in a session (yet): accepted, parked until it is added.
    patchbay_tests::ws::assert_token_accepted(&g, &lonely_token).await;

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
    let (_, _, token) = api.member(json!({})).await;
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
    let (_, _, token) = api.member(json!({})).await;
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
    let (_, _, token) = api.member(json!({})).await;
    let mut ws = connect(&g, &token, "dev-1").await;
    let r = rpc(
        &mut ws,
        json!(1),
        "offerSdp",
        json!({"sdpOffer": "this is not SDP", "mediaMetadata": {}}),
    )
    .await;
    assert_eq!(r["id"], 1);
    // A stable, human message: never the parser's debug text (it once carried a heap
    // address).
    assert_eq!(
        r["error"]["message"], "the SDP offer could not be parsed",
        "{r}"
    );
    let r = rpc(&mut ws, json!(2), "offerSdp", json!({"mediaMetadata": {}})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = rpc(&mut ws, json!(3), "ping", json!({})).await;
    assert_eq!(r["result"], json!({}));
}

#[tokio::test]
async fn a_100000_character_alias_is_refused_with_a_clear_error() {
    let g = Gateway::start().await;
    let api = g.api();
    let (_, _, token) = api.member(json!({"publishPermissions": ["AUDIO"]})).await;
    let mut ws = connect(&g, &token, "dev-1").await;
    let alias = "a".repeat(100_000);
    let r = rpc(
        &mut ws,
        json!(1),
        "offerSdp",
        json!({"sdpOffer": "v=0\r\n", "mediaMetadata": {"mediaStreams": {"s1": {"alias": alias}}}}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert_eq!(
        r["error"]["message"], "invalid params: alias must be a string of at most 100 characters",
        "{r}"
    );
    // The connection stays.
    let r = rpc(&mut ws, json!(2), "ping", json!({})).await;
    assert_eq!(r["result"], json!({}));
}

#[tokio::test]
async fn a_new_unique_id_replaces_the_old_device() {
    let g = Gateway::start().await;
    let api = g.api();
    let (_, _, token) = api.member(json!({})).await;
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

/// The SDK's `disconnect()` then `connect()`: `leave` on the first socket and a new
/// socket with the same uniqueId, the new one reaching us first. The new socket is a
/// new device (the old one ended, with its onLeave), never a resume of the old one's
/// peer connections; a socket that just goes quiet is still resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_and_a_new_socket_of_the_same_device_make_a_new_device_whatever_the_order() {
    let g = Gateway::start().await;
    let api = g.api();
    let (_, _, token) = api.member(json!({})).await;
    let mut first = connect(&g, &token, "dev-1").await;
    rpc(&mut first, json!(1), "ping", json!({})).await;
    // The new socket first, the old one's leave just after it.
    let (t2, port) = (token.clone(), g.port);
    let second = tokio::spawn(async move {
        let url = format!(
            "ws://127.0.0.1:{port}/v3/?token={t2}&client=browser&sdkVersion=test&uniqueId=dev-1"
        );
        tokio_tungstenite::connect_async(url)
            .await
            .expect("connect")
            .0
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    first
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "method": "leave"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let mut second = second.await.unwrap();
    rpc(&mut second, json!(2), "ping", json!({})).await;
    g.wait_metric("patchbay_devices_ended_total", 1.0).await;
    assert_eq!(g.metric("patchbay_signaling_resumed_total").await, 0.0);
    // A socket that goes quiet (no leave) and a new one: resumed, nothing ended.
    let _quiet = second;
    let mut third = connect(&g, &token, "dev-1").await;
    rpc(&mut third, json!(3), "ping", json!({})).await;
    assert_eq!(g.metric("patchbay_devices_ended_total").await, 1.0);
    assert_eq!(g.metric("patchbay_signaling_connects_total").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdp_offer_is_sent_again_on_resume_and_an_unanswered_one_ends_the_device() {
    use patchbay_tests::media::Law;
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
    let call = SippCall::tone("phone", &dir, 440, Law::Ulaw, 30000).token(&phone_token);
    let _running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // The device is offered the phone's stream.
    let mut ws = connect(&g, &token, "dev-1").await;
    let offer: serde_json::Value = serde_json::from_str(&next(&mut ws).await.unwrap()).unwrap();
    assert_eq!(offer["method"], "sdpOffer", "{offer}");
    // The first offer: 1 on one SQLite node; on PostgreSQL (a node of a cluster, even
    // alone) counted from the session lease's epoch: epoch << 32 | 1.
    let revision = offer["params"]["sdpRevision"].as_u64().unwrap_or(0);
    assert_eq!(revision & 0xffff_ffff, 1, "{offer}");
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

/// A token whose header says `alg: none` (a classic forgery): refused with 4401 and a
/// reason that fits a close frame (≤ 123 bytes) and names no library internals.
#[tokio::test]
async fn a_forged_alg_none_token_is_refused_with_a_short_readable_reason() {
    use base64::Engine;
    let g = Gateway::start().await;
    let api = g.api();
    let (_, _, token) = api.member(json!({})).await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = token.split('.').nth(1).unwrap();
    let forged = format!("{}.{claims}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#));
    let mut ws = connect(&g, &forged, "dev-forged").await;
    let (code, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.len() <= 123, "{} bytes: {reason}", reason.len());
    assert!(reason.starts_with("invalid token"), "{reason}");
    assert!(
        !reason.contains("Error") && !reason.contains("0x"),
        "{reason}"
    );
}

/// A 2 MiB message closes with 1009 (too big); a text frame that is not UTF-8 with 1007.
#[tokio::test]
async fn oversized_and_non_utf8_messages_close_with_their_codes() {
    let g = Gateway::start().await;
    let api = g.api();
    let (_, _, token) = api.member(json!({})).await;

    let mut ws = connect(&g, &token, "dev-big").await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"ping","params":{{"pad":"{}"}},"id":1}}"#,
        "x".repeat(2 << 20)
    );
    let _ = ws.send(Message::Text(big.into())).await;
    let (code, _) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 1009);

    let mut ws = connect(&g, &token, "dev-utf8").await;
    // A text frame carrying invalid UTF-8, written by hand (a client library refuses to).
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![0xff, 0xfe, 0xfd],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    let _ = ws.send(Message::Frame(frame)).await;
    let (code, _) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 1007);
    // The gateway still serves others.
    patchbay_tests::ws::assert_token_accepted(&g, &token).await;
}

/// `/v2`: the same token checks and close codes as `/v3`, and the v2 methods on the wire.
#[tokio::test]
async fn v2_checks_tokens_like_v3_and_speaks_its_methods() {
    use patchbay_tests::ws::connect_v2;
    let g = Gateway::start().await;
    let api = g.api();
    let mut ws = connect_v2(&g, "not.a.jwt", "dev-1").await;
    let (code, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(
        (code, reason.contains("invalid token")),
        (4401, true),
        "{reason}"
    );
    // Not in a session (yet): accepted, parked until it is added.
    let (_, lonely) = api.participant(json!({"deviceApiVersion": "V2"})).await;
    let mut ws = connect_v2(&g, &lonely, "dev-2").await;
    let r = rpc(
        &mut ws,
        json!(1),
        "setMediaPreferences",
        json!({"sendRecv": false, "aggregationType": "NONE", "protocol": "WEB_RTC"}),
    )
    .await;
    assert_eq!(r["result"], json!({}), "{r}");

    // An AUDIO-only V2 participant in a session.
    let (s, p, token) = api
        .member(json!({"deviceApiVersion": "V2", "publishPermissions": ["AUDIO"]}))
        .await;
    let mut ws = connect_v2(&g, &token, "dev-3").await;
    let r = rpc(
        &mut ws,
        json!(1),
        "setMediaPreferences",
        json!({"sendRecv": false, "aggregationType": "NONE", "protocol": "WEB_RTC"}),
    )
    .await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": {}, "id": 1}));
    // Audio and video asked for: an endpoint for the audio it may publish.
    let r = rpc(
        &mut ws,
        json!(2),
        "requestToPublish",
        json!({"mediaTypes": ["AUDIO", "VIDEO"], "alias": "mic"}),
    )
    .await;
    let endpoint = r["result"]["endpointId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!endpoint.is_empty(), "{r}");
    assert_eq!(r["result"]["mediaTypes"], json!(["AUDIO"]));
    assert_eq!(r["result"]["direction"], "sendonly");
    assert_eq!(r["result"]["alias"], "mic");
    assert_eq!(r["result"]["participantId"], p.as_str());
    // Video only: nothing it may publish.
    let r = rpc(
        &mut ws,
        json!(3),
        "requestToPublish",
        json!({"mediaTypes": ["VIDEO"]}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32000, "{r}");
    // An endpoint nobody announced, and SDP that does not parse, are refused; the
    // connection stays.
    let r = rpc(
        &mut ws,
        json!(4),
        "offerSdp",
        json!({"sdpOffer": "v=0\r\n", "endpointId": "made-up"}),
    )
    .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("endpointId"),
        "{r}"
    );
    let r = rpc(
        &mut ws,
        json!(5),
        "offerSdp",
        json!({"sdpOffer": "garbage", "endpointId": endpoint}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32000, "{r}");
    // The client's trickled candidates and an unknown endpoint's unpublish need nothing.
    for text in [
        json!({"jsonrpc": "2.0", "method": "addIceCandidate", "params": {"endpointId": endpoint,
               "candidate": "candidate:1 1 udp 1 203.0.113.7 5000 typ srflx", "sdpMid": "0", "sdpMLineIndex": 0}}),
        json!({"jsonrpc": "2.0", "method": "unpublish", "params": {"endpointId": "made-up"}}),
    ] {
        ws.send(Message::Text(text.to_string().into()))
            .await
            .unwrap();
    }
    let r = rpc(&mut ws, json!(6), "ping", json!({})).await;
    assert_eq!(r["result"], json!({}));
    // v3's methods are not v2's.
    let r = rpc(&mut ws, json!(7), "answerSdp", json!({"sdpAnswer": "v=0"})).await;
    assert_eq!(r["error"]["code"], -32601);
    // Removal from the session keeps it (parked); deleting the participant closes it
    // like a v3 device.
    api.remove(&s, &p).await;
    let r = rpc(&mut ws, json!(8), "ping", json!({})).await;
    assert_eq!(
        r["result"],
        json!({}),
        "still served after the removal: {r}"
    );
    let r = api
        .call(Method::DELETE, &format!("/participants/{p}"), None)
        .await;
    assert_eq!(r.status, reqwest::StatusCode::NO_CONTENT);
    let (code, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("deleted"), "{reason}");
    assert!(g.metric("patchbay_webrtc_offers_refused_total").await >= 2.0);
}
