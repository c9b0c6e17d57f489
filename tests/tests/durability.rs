//! Every acknowledged write survives `kill -9` mid-traffic and a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patchbay_tests::{Api, Gateway, Resp};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[derive(Debug, Clone)]
struct Acked {
    session: String,
    a: String,
    b: String,
    token_a: String,
    /// Whether `b`'s membership (with its subscription to `a`) was acknowledged.
    b_added: bool,
}

/// Creates sessions, participants and memberships until stopped or the
/// gateway dies; records only what was acknowledged with a 2xx.
async fn worker(api: Api, acked: Arc<Mutex<Vec<Acked>>>, stop: Arc<AtomicBool>) {
    let ok = |r: Option<Resp>| r.filter(|r| r.status.is_success());
    while !stop.load(Ordering::Relaxed) {
        let Some(rs) = ok(api
            .try_call(Method::POST, "/sessions", Some(json!({"tag": "dur"})))
            .await)
        else {
            return;
        };
        let Some(ra) = ok(api
            .try_call(Method::POST, "/participants", Some(json!({"tag": "a"})))
            .await)
        else {
            return;
        };
        let Some(rb) = ok(api
            .try_call(Method::POST, "/participants", Some(json!({})))
            .await)
        else {
            return;
        };
        let session = rs.body["id"].as_str().unwrap_or_default().to_string();
        let a = ra.body["participant"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let token_a = ra.body["token"].as_str().unwrap_or_default().to_string();
        let b = rb.body["participant"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let idx = {
            let mut v = acked.lock().unwrap();
            v.push(Acked {
                session: session.clone(),
                a: a.clone(),
                b: b.clone(),
                token_a,
                b_added: false,
            });
            v.len() - 1
        };
        let add_a = format!("/sessions/{session}/participants/{a}");
        let Some(_) = ok(api.try_call(Method::PUT, &add_a, None).await) else {
            return;
        };
        let subs = json!({"participants": [{"participantId": a, "streamAliases": ["mic"]}]});
        let add_b = format!("/sessions/{session}/participants/{b}");
        let Some(_) = ok(api.try_call(Method::PUT, &add_b, Some(subs)).await) else {
            return;
        };
        acked.lock().unwrap()[idx].b_added = true;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_traffic_loses_no_acknowledged_write() {
    let mut g = Gateway::start().await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        workers.push(tokio::spawn(worker(g.api(), acked.clone(), stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Kill while the workers are still sending.
    g.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too little traffic to mean anything: {}",
        acked.len()
    );

    g.restart().await;
    let api = g.api();
    let mut members_checked = 0;
    for x in &acked {
        let r = api
            .call(Method::GET, &format!("/sessions/{}", x.session), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "session {} lost", x.session);
        assert_eq!(r.body["tag"], "dur");
        let r = api
            .call(Method::GET, &format!("/participants/{}", x.a), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "participant {} lost", x.a);
        assert_eq!(r.body["tag"], "a");
        let r = api
            .call(Method::GET, &format!("/participants/{}", x.b), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "participant {} lost", x.b);
        if x.b_added {
            members_checked += 1;
            let r = api
                .call(
                    Method::GET,
                    &format!("/sessions/{}/participants/{}/subscriptions", x.session, x.b),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "membership of {} lost", x.b);
            assert_eq!(
                r.body,
                json!({"participants": [{"participantId": x.a, "streamAliases": ["mic"]}]})
            );
            let r = api
                .call(
                    Method::GET,
                    &format!("/sessions/{}/participants", x.session),
                    None,
                )
                .await;
            let ids: Vec<&str> = r
                .body
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, vec![x.a.as_str(), x.b.as_str()]);
        }
    }
    assert!(
        members_checked > 20,
        "too few complete memberships: {members_checked}"
    );
    // Tokens minted before the crash are still valid (same persisted secret).
    for x in acked.iter().filter(|x| x.b_added).take(10) {
        patchbay_tests::ws::assert_token_accepted(&g, &x.token_a).await;
    }
}

#[tokio::test]
async fn graceful_shutdown_then_restart_keeps_everything() {
    let mut g = Gateway::start().await;
    let api = g.api();
    let s = api.session(Some("keep")).await;
    let (p, token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &p, Some(json!({"sessionId": s}))).await;
    assert!(g.terminate(), "SIGTERM must exit cleanly:\n{}", g.log());
    assert!(g.log().contains("patchbay stopped"), "{}", g.log());
    g.restart().await;
    let r = g
        .api()
        .call(
            Method::GET,
            &format!("/sessions/{s}/participants/{p}/subscriptions"),
            None,
        )
        .await;
    assert_eq!(r.body, json!({"sessionId": s}));
    patchbay_tests::ws::assert_token_accepted(&g, &token).await;
}

/// A small tmpfs, mounted for one test and unmounted after it (the suite runs as root).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount")
            .success();
        assert!(
            ok,
            "mounting a tmpfs needs root (scripts/test runs as root, as CI does)"
        );
        Tmpfs(dir)
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0.path())
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// The data directory fills up: no write is acknowledged that did not reach the disk,
/// refusals are 503 with the JSON error body, `/ready` turns unhealthy, and once there
/// is room again writes succeed without a restart; after a restart every acknowledged
/// participant is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_acknowledges_nothing_it_did_not_write_and_recovers() {
    let disk = Tmpfs::mount("2m");
    let mut g = Gateway::start_with_data(&disk.0.path().join("data")).await;
    let api = g.api();
    assert_eq!(g.ready().await, StatusCode::OK);
    let mut acked = Vec::new();
    let mut refused = 0;
    let pad = "x".repeat(40);
    for i in 0..20_000 {
        let body = json!({
            "tag": format!("{i:08}-{pad}"),
            "callbackUrl": format!("https://example.com/{pad}{pad}{pad}"),
        });
        let r = api.call(Method::POST, "/participants", Some(body)).await;
        if r.status.is_success() {
            acked.push(r.body["participant"]["id"].as_str().unwrap().to_string());
            continue;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("could not be stored"),
            "{}",
            r.text
        );
        refused += 1;
        if refused >= 50 {
            break;
        }
    }
    assert!(
        refused >= 50,
        "the disk never filled ({} created)",
        acked.len()
    );
    assert_eq!(g.ready().await, StatusCode::SERVICE_UNAVAILABLE);

    // Room again: the store writes again by itself.
    disk.resize("64m");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while g.ready().await != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "/ready stayed unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = api
        .call(Method::POST, "/participants", Some(json!({"tag": "after"})))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    acked.push(r.body["participant"]["id"].as_str().unwrap().to_string());

    g.kill9();
    g.restart().await;
    let api = g.api();
    for id in &acked {
        let r = api
            .call(Method::GET, &format!("/participants/{id}"), None)
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "acknowledged participant {id} lost"
        );
    }
}
