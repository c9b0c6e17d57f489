//! Bandwidth's own server SDKs (npm `@bandwidth/webrtc` 1.x, PyPI `bandwidth-sdk` 13.x) drive Patchbay by base URL alone.

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

/// Bandwidth's Python server SDK (PyPI `bandwidth-sdk` 13.6.0) with its defaults makes
/// V2 participants; the unmodified browser SDK uses their tokens (its v2 protocol) and
/// the two browsers see and hear each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_python_sdk_defaults_make_v2_participants_browsers_can_use() {
    let g = Gateway::start().await;
    let python = std::env::var("PATCHBAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(workspace().join("tests/python/server_sdk_v2.py"))
        .env("PATCHBAY_BASE", g.base())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "the Python SDK flow failed (scripts/test installs bandwidth-sdk==13.6.0 in \
         target/test-venv):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let participants = summary["participants"].as_array().unwrap();
    let api = g.api();
    for p in participants {
        // The SDK sent its default, and Patchbay kept it.
        assert_eq!(p["sentDeviceApiVersion"], "V2", "{p}");
        let r = api
            .call(
                Method::GET,
                &format!("/participants/{}", p["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(r.body["deviceApiVersion"], "V2", "{}", r.text);
    }
    let report = patchbay_tests::browser::drive_with(
        &g,
        json!([
            {"token": participants[0]["token"], "connectTimeoutMs": 5000, "publish": {"alias": "a"}},
            {"token": participants[1]["token"], "connectTimeoutMs": 5000, "publish": {"alias": "b"}, "settleMs": 500},
        ]),
        2500,
    );
    for (i, page) in report["pages"].as_array().unwrap().iter().enumerate() {
        assert_eq!(page["outcome"], "connected", "{page}");
        assert!(page["final"]["socketUrls"][0]
            .as_str()
            .unwrap_or_default()
            .contains("/v2/?"));
        let other = &participants[1 - i]["id"];
        let seen = patchbay_tests::browser::stream_events(page, "available");
        let stream = seen
            .iter()
            .find(|e| e["participantId"] == *other)
            .unwrap_or_else(|| panic!("page {i} did not get the other's stream: {page}"));
        let endpoint = stream["endpointId"].as_str().unwrap();
        let rms = page["final"]["energy"][endpoint].as_f64().unwrap_or(0.0);
        assert!(rms > 0.01, "page {i} heard the other at rms {rms}: {page}");
    }
}
