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
