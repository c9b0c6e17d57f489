//! An independent v3 client (aiortc, `tests/python/v3_client.py`) that behaves like
//! Bandwidth's Android and iOS SDKs: it opens the negotiated `__heartbeat__` channel
//! and never answers `PING`. It stays connected while its peer connections live; the
//! same client frozen (SIGSTOP: its socket stays open, nothing arrives) is ended within
//! 35 s, with `onDisconnect` and `onLeave` at a real HTTP receiver.

use std::time::{Duration, Instant};

use patchbay_tests::hooks::Receiver;
use patchbay_tests::media::Law;
use patchbay_tests::native::NativeClient as Client;
use patchbay_tests::sipp::SippCall;
use patchbay_tests::Gateway;
use serde_json::{json, Value};

fn events(hooks: &Receiver, path: &str) -> Vec<String> {
    hooks
        .delivered(path)
        .iter()
        .filter_map(|b| b["event"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_ping_stays_and_a_frozen_one_is_ended_within_35_s() {
    let hooks = Receiver::start().await;
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (phone, phone_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &phone, Some(json!({"sessionId": s}))).await;
    let mut tokens = Vec::new();
    for name in ["steady", "frozen"] {
        let (p, token) = api
            .participant(json!({"publishPermissions": ["AUDIO"],
                                "callbackUrl": hooks.url(&format!("/cb/{name}"))}))
            .await;
        api.add(&s, &p, Some(json!({"sessionId": s}))).await;
        tokens.push(token);
    }
    let dir = g.scratch().to_path_buf();
    let _caller = SippCall::tone("phone", &dir, 880, Law::Ulaw, 80_000)
        .timeout(90)
        .token(&phone_token)
        .spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;

    let steady = Client::start(&g, &tokens[0], "android-steady", 62);
    // The frozen client comes once the steady one publishes: its first offer carries two
    // streams (the caller's and the steady client's), every time.
    steady
        .wait_until(
            Duration::from_secs(10),
            "the steady client publishes",
            |v| v["publishing"] == "connected",
        )
        .await;
    let frozen = Client::start(&g, &tokens[1], "android-frozen", 120);
    let receiving = |v: &Value| v["frames"].as_u64().unwrap_or(0) > 100;
    frozen
        .wait_until(
            Duration::from_secs(20),
            "the frozen client receives audio",
            receiving,
        )
        .await;

    // SIGSTOP: its socket stays open, nothing arrives from it any more.
    frozen.signal("STOP");
    let stopped = Instant::now();
    hooks
        .wait_for(
            Duration::from_secs(40),
            "the frozen client is ended",
            |_| events(&hooks, "/cb/frozen") == ["onConnect", "onDisconnect", "onLeave"],
        )
        .await;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(35),
        "ended {took:?} after it froze"
    );

    // The steady client stays its 62 s, hearing the caller all along, its socket open.
    steady
        .wait_until(Duration::from_secs(75), "the steady client finishes", |v| {
            v["done"] == true
        })
        .await;
    let lines = steady.lines();
    let done = lines.last().unwrap();
    assert_eq!(done["closed"], Value::Null, "closed under it: {done}");
    let status: Vec<&Value> = lines.iter().filter(|v| v.get("t").is_some()).collect();
    let at = |t: f64| {
        status
            .iter()
            .rev()
            .find(|v| v["t"].as_f64().unwrap_or(0.0) <= t)
            .and_then(|v| v["frames"].as_u64())
            .unwrap_or(0)
    };
    for window in [(10.0, 20.0), (30.0, 40.0), (50.0, 60.0)] {
        let got = at(window.1) - at(window.0);
        assert!(got > 300, "audio frames in {window:?}: {got}: {lines:?}");
    }
    assert!(
        status
            .last()
            .and_then(|v| v["level"].as_f64())
            .unwrap_or(0.0)
            > 500.0,
        "it hears the caller: {lines:?}"
    );
    // The gateway's WebSocket pings (every 30 s) reached it (and were answered).
    assert!(done["pings"].as_u64().unwrap_or(0) >= 1, "{done}");
    // Never lost while it ran (its own clean close at the end may be an onLeave).
    let steady_events = events(&hooks, "/cb/steady");
    assert_eq!(steady_events.first().map(String::as_str), Some("onConnect"));
    assert!(
        !steady_events.iter().any(|e| e == "onDisconnect"),
        "{steady_events:?}"
    );
}
