//! The PostgreSQL store (`database_url`): a second process under a node id that a live
//! process has is refused, and the store rides out a PostgreSQL restart by itself.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use patchbay_tests::{free_port, patchbay_bin, postgres, workspace, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Nodes of one database are told apart by their ids: a second process under the id of a
/// live one is refused at start with the reason (two processes would take each other's
/// outbox and connections), and the first carries on.
#[tokio::test]
async fn a_second_process_under_a_live_node_id_is_refused() {
    let url = postgres::database();
    let g = Gateway::start_with(
        &[],
        &[("PATCHBAY_DATABASE_URL", &url), ("PATCHBAY_NODE_ID", "n1")],
    )
    .await;
    let scratch = tempfile::tempdir().unwrap();
    let mut second = Command::new(patchbay_bin())
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--sip-listen",
            "127.0.0.1:0",
            "--webrtc-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(scratch.path())
        .args(["--database-url", &url, "--node-id", "n1"])
        .args(["--token-secret", "test-cluster-token-secret-0123456789"])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patchbay");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the second node kept running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains("database_url")
            && stderr.contains("another Patchbay process is running as node n1"),
        "{stderr}"
    );
    // The first node is unaffected.
    let r = g.api().call(Method::POST, "/sessions", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// PostgreSQL stops under a running gateway: writes fail with 503 and `/ready` says so;
/// it comes back: the gateway connects again by itself and nothing acknowledged is lost.
#[tokio::test]
async fn the_store_rides_out_a_postgresql_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pg = workspace().join("scripts/postgres");
    let run = |cmd: &str| {
        let out = Command::new(&pg)
            .args([cmd, dir.path().join("pg").to_str().unwrap()])
            .output()
            .expect("scripts/postgres");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let server = run("start");
    let created = Command::new("psql")
        .args([&format!("{server}/postgres"), "-qc", "CREATE DATABASE pb"])
        .status()
        .unwrap();
    assert!(created.success());
    let g = Gateway::start_with(&[], &[("PATCHBAY_DATABASE_URL", &format!("{server}/pb"))]).await;
    let api = g.api();
    let (before, _) = api.participant(json!({"tag": "before"})).await;
    assert_eq!(g.ready().await, StatusCode::OK);

    run("stop");
    let r = api
        .call(
            Method::POST,
            "/participants",
            Some(json!({"tag": "during"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("could not be stored"),
        "{}",
        r.text
    );
    assert_eq!(g.ready().await, StatusCode::SERVICE_UNAVAILABLE);

    run("resume");
    let deadline = Instant::now() + Duration::from_secs(20);
    while g.ready().await != StatusCode::OK {
        assert!(Instant::now() < deadline, "not ready again:\n{}", g.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (after, _) = api.participant(json!({"tag": "after"})).await;
    for p in [&before, &after] {
        let r = api
            .call(Method::GET, &format!("/participants/{p}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert!(
        g.log().contains("store connected to PostgreSQL again"),
        "{}",
        g.log()
    );
    drop(g);
    run("stop");
}
