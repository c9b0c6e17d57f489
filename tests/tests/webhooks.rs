//! Webhooks to a real HTTP receiver: what a participant's `callbackUrl` receives,
//! in order, through failures, receiver downtime and a gateway `kill -9`.

use std::time::Duration;

use futures_util::SinkExt;
use patchbay_tests::hooks::{Answer, Receiver};
use patchbay_tests::ws::{connect, next, rpc};
use patchbay_tests::Gateway;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn events(bodies: &[Value]) -> Vec<&str> {
    bodies
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect()
}

/// Creating a participant with `url` as its callbackUrl is refused with a 400 naming it.
async fn assert_callback_url_refused(api: &patchbay_tests::Api, url: &str) {
    let r = api
        .call(
            Method::POST,
            "/participants",
            Some(json!({"callbackUrl": url})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url} accepted");
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("callbackUrl"),
        "{}",
        r.text
    );
}

/// Connect a device and leave at once: onConnect then onLeave.
async fn connect_and_leave(g: &Gateway, token: &str, device: &str) {
    let mut ws = connect(g, token, device).await;
    let r = rpc(&mut ws, json!(1), "ping", json!({})).await;
    assert_eq!(r["result"], json!({}));
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

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn device_events_arrive_in_order_with_their_fields_signed() {
    let hooks = Receiver::start().await;
    let g = Gateway::start_with(&["--webhook-secret", "s3cret"], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api
        .participant(json!({"callbackUrl": hooks.url("/cb/a"), "tag": "agent-7"}))
        .await;
    api.add(&s, &p, None).await;

    // Connect, lose the socket (no close), resume, leave.
    let mut ws = connect(&g, &token, "dev-1").await;
    rpc(&mut ws, json!(1), "ping", json!({})).await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    connect_and_leave(&g, &token, "dev-1").await;

    hooks
        .wait_for(Duration::from_secs(10), "four callbacks", |h| h.len() >= 4)
        .await;
    let bodies = hooks.delivered("/cb/a");
    assert_eq!(
        events(&bodies),
        ["onConnect", "onDisconnect", "onConnect", "onLeave"]
    );
    for b in &bodies {
        assert_eq!(b["participantId"], p.as_str());
        assert_eq!(b["deviceId"], "dev-1");
        assert_eq!(b["tag"], "agent-7");
        let ts: u64 = b["timestamp"].as_str().unwrap().parse().unwrap();
        assert!(ts > 1_700_000_000_000, "{b}");
        uuid::Uuid::parse_str(b["eventId"].as_str().unwrap()).unwrap();
    }
    let ids: std::collections::HashSet<&str> = bodies
        .iter()
        .map(|b| b["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "every event has its own eventId");
    for h in hooks.hits() {
        assert_eq!(
            h.headers["x-patchbay-signature"],
            format!("sha256={}", hmac_hex("s3cret", &h.raw))
        );
        assert_eq!(h.headers["content-type"], "application/json");
    }
    // Removing the participant ends a connected device: onLeave.
    let mut ws = connect(&g, &token, "dev-2").await;
    rpc(&mut ws, json!(1), "ping", json!({})).await;
    api.call(Method::DELETE, &format!("/participants/{p}"), None)
        .await;
    hooks
        .wait_for(Duration::from_secs(10), "onConnect+onLeave of dev-2", |h| {
            h.len() >= 6
        })
        .await;
    let bodies = hooks.delivered("/cb/a");
    assert_eq!(events(&bodies[4..]), ["onConnect", "onLeave"]);
    assert_eq!(bodies[5]["deviceId"], "dev-2");
    assert_eq!(g.metric("patchbay_webhooks_delivered_total").await, 6.0);
}

#[tokio::test]
async fn a_participant_without_a_tag_or_url() {
    let hooks = Receiver::start().await;
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api
        .participant(json!({"callbackUrl": hooks.url("/cb/plain")}))
        .await;
    let (q, quiet_token) = api.participant(json!({})).await;
    api.add(&s, &p, None).await;
    api.add(&s, &q, None).await;
    connect_and_leave(&g, &quiet_token, "q").await;
    connect_and_leave(&g, &token, "p").await;
    hooks
        .wait_for(Duration::from_secs(10), "two callbacks", |h| h.len() >= 2)
        .await;
    let bodies = hooks.delivered("/cb/plain");
    assert_eq!(events(&bodies), ["onConnect", "onLeave"]);
    assert!(bodies[0].get("tag").is_none(), "{}", bodies[0]);
    // Nothing for the participant without a callbackUrl.
    assert_eq!(hooks.hits().len(), 2);
    assert_eq!(g.metric("patchbay_webhooks_queued_total").await, 2.0);
}

#[tokio::test]
async fn callback_urls_must_be_http() {
    let g = Gateway::start().await;
    let api = g.api();
    for bad in ["ftp://example.com/x", "not a url", "mailto:ops@example.com"] {
        assert_callback_url_refused(&api, bad).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receivers_are_retried_and_never_block_others() {
    let hooks = Receiver::start().await;
    hooks.answer("/cb/hang", Answer::Hang);
    hooks.answer("/cb/loop", Answer::Redirect);
    hooks.answer("/cb/flaky", Answer::Status(500));
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let mut tokens = Vec::new();
    for path in ["/cb/hang", "/cb/loop", "/cb/flaky", "/cb/ok"] {
        let (p, t) = api
            .participant(json!({"callbackUrl": hooks.url(path)}))
            .await;
        api.add(&s, &p, None).await;
        tokens.push(t);
    }
    for (i, t) in tokens.iter().enumerate() {
        connect_and_leave(&g, t, &format!("d{i}")).await;
    }
    // The healthy receiver has both at once, whatever the others do.
    hooks
        .wait_for(Duration::from_secs(2), "both events at /cb/ok", |h| {
            h.iter()
                .filter(|h| h.path == "/cb/ok" && h.status == 200)
                .count()
                == 2
        })
        .await;
    assert_eq!(events(&hooks.delivered("/cb/ok")), ["onConnect", "onLeave"]);
    // The 500 is retried (backoff from 1 s), with the same eventId; nothing overtakes it.
    hooks
        .wait_for(Duration::from_secs(6), "three tries at /cb/flaky", |h| {
            h.iter().filter(|h| h.path == "/cb/flaky").count() >= 3
        })
        .await;
    let flaky: Vec<_> = hooks
        .hits()
        .into_iter()
        .filter(|h| h.path == "/cb/flaky")
        .collect();
    assert!(flaky.iter().all(|h| h.body["event"] == "onConnect"));
    assert!(flaky
        .iter()
        .all(|h| h.body["eventId"] == flaky[0].body["eventId"]));
    // The receiver recovers: everything arrives, in order, duplicates sharing the eventId.
    hooks.answer("/cb/flaky", Answer::Status(200));
    hooks
        .wait_for(Duration::from_secs(15), "flaky delivered", |h| {
            h.iter()
                .filter(|h| h.path == "/cb/flaky" && h.status == 200)
                .count()
                == 2
        })
        .await;
    assert_eq!(
        events(&hooks.delivered("/cb/flaky")),
        ["onConnect", "onLeave"]
    );
    // Redirects are not followed: each is a failed attempt, retried later.
    assert!(hooks.hits().iter().any(|h| h.path == "/cb/loop"));
    assert!(hooks.delivered("/cb/loop").is_empty());
    assert!(g.metric("patchbay_webhooks_retried_total").await >= 3.0);
    assert_eq!(g.metric("patchbay_webhooks_delivered_total").await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_downtime_and_a_gateway_kill_lose_nothing() {
    let mut hooks = Receiver::start().await;
    let mut g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api
        .participant(json!({"callbackUrl": hooks.url("/cb/a")}))
        .await;
    api.add(&s, &p, None).await;

    // Down: the events wait, in order.
    hooks.down();
    for i in 0..3 {
        connect_and_leave(&g, &token, &format!("dev-{i}")).await;
    }
    let stored = async {
        for _ in 0..100 {
            if g.metric("patchbay_webhooks_pending").await == 6.0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(stored.await, "six callbacks pending");
    // The gateway dies with them undelivered, and comes back.
    g.kill9();
    g.restart().await;
    assert_eq!(g.metric("patchbay_webhooks_pending").await, 6.0);
    hooks.up().await;
    hooks
        .wait_for(Duration::from_secs(10), "six delivered", |h| {
            h.iter().filter(|h| h.status == 200).count() == 6
        })
        .await;
    let bodies = hooks.delivered("/cb/a");
    assert_eq!(
        events(&bodies),
        [
            "onConnect",
            "onLeave",
            "onConnect",
            "onLeave",
            "onConnect",
            "onLeave"
        ]
    );
    let devices: Vec<&str> = bodies
        .iter()
        .map(|b| b["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!(
        devices,
        ["dev-0", "dev-0", "dev-1", "dev-1", "dev-2", "dev-2"]
    );
    // Nothing is delivered twice once acknowledged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hooks.hits().len(), 6);
    assert_eq!(g.metric("patchbay_webhooks_pending").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_ends_devices_and_their_on_leave_survives_it() {
    let mut hooks = Receiver::start().await;
    let mut g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api
        .participant(json!({"callbackUrl": hooks.url("/cb/a")}))
        .await;
    api.add(&s, &p, None).await;
    let mut ws = connect(&g, &token, "dev-1").await;
    rpc(&mut ws, json!(1), "ping", json!({})).await;
    hooks
        .wait_for(Duration::from_secs(10), "onConnect", |h| h.len() == 1)
        .await;
    // The receiver is away while the gateway stops: the device is closed with a reason
    // and its onLeave is kept for later.
    hooks.down();
    assert!(g.terminate(), "graceful stop:\n{}", g.log());
    let (code, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 4403, "{reason}");
    g.restart().await;
    hooks.up().await;
    hooks
        .wait_for(Duration::from_secs(10), "onLeave after the restart", |h| {
            h.iter().filter(|h| h.status == 200).count() == 2
        })
        .await;
    assert_eq!(events(&hooks.delivered("/cb/a")), ["onConnect", "onLeave"]);
}

/// By default webhooks reach only public addresses: loopback, link-local (cloud
/// metadata), private addresses, tricks that spell them, user info and a host name that
/// resolves to loopback are refused at creation; a stored callback whose destination is
/// no longer allowed is not delivered; `webhook_allow` opens the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_reach_only_allowed_destinations() {
    let hooks = Receiver::start().await;
    let mut g = Gateway::start_with(&[], &[("PATCHBAY_WEBHOOK_ALLOW", "")]).await;
    let api = g.api();
    let port = hooks
        .url("/")
        .split(':')
        .nth(2)
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    for bad in [
        hooks.url("/cb/direct"),
        format!("http://localhost:{port}/cb/by-name"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]:22/".to_string(),
        "http://0x7f000001/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://user:pw@example.com/".to_string(),
    ] {
        assert_callback_url_refused(&api, &bad).await;
    }

    // Allowed when created, then not when delivered: nothing reaches the receiver.
    g.set_env("PATCHBAY_WEBHOOK_ALLOW", "127.0.0.1");
    g.restart().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, token) = api
        .participant(json!({"callbackUrl": hooks.url("/cb/later")}))
        .await;
    api.add(&s, &p, None).await;
    g.set_env("PATCHBAY_WEBHOOK_ALLOW", "");
    g.restart().await;
    connect_and_leave(&g, &token, "dev-egress").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(hooks.hits().is_empty(), "delivered to a refused address");
    assert!(g.metric("patchbay_webhooks_retried_total").await >= 1.0);

    // Allowed again: the stored callbacks arrive.
    g.set_env("PATCHBAY_WEBHOOK_ALLOW", "127.0.0.1/32");
    g.restart().await;
    hooks
        .wait_for(Duration::from_secs(15), "the two callbacks", |h| {
            h.len() >= 2
        })
        .await;
    assert_eq!(
        events(&hooks.delivered("/cb/later")),
        ["onConnect", "onLeave"]
    );
}
