//! Bandwidth's own server SDK (npm `@bandwidth/webrtc` 1.x) drives Patchbay by base URL alone.

use std::process::Command;

use patchbay_tests::{workspace, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn bandwidth_node_sdk_full_flow() {
    let g = Gateway::start().await;
    let dir = workspace().join("tests/node");
    assert!(
        dir.join("node_modules/@bandwidth/webrtc").exists(),
        "npm dependencies missing in tests/node: scripts/test installs them (npm ci)"
    );
    let out = Command::new("node")
        .arg("server-sdk-flow.js")
        .current_dir(&dir)
        .env("PATCHBAY_BASE", g.base())
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "the SDK flow failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");

    // What the SDK did is what the server holds.
    let api = g.api();
    let s = summary["sessionId"].as_str().unwrap();
    let agent = summary["agent"].as_str().unwrap();
    let r = api
        .call(Method::GET, &format!("/sessions/{s}/participants"), None)
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert_eq!(r.body[0]["id"], agent);
    assert_eq!(r.body[0]["tag"], "sdk-agent");
    let caller = summary["caller"].as_str().unwrap();
    let r = api
        .call(Method::GET, &format!("/participants/{caller}"), None)
        .await;
    assert_eq!(r.body["sessions"], json!([]));
    assert_eq!(r.body["publishPermissions"], json!(["AUDIO"]));
    let gone = summary["deletedParticipant"].as_str().unwrap();
    let r = api
        .call(Method::GET, &format!("/participants/{gone}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let gone = summary["deletedSession"].as_str().unwrap();
    let r = api
        .call(Method::GET, &format!("/sessions/{gone}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
