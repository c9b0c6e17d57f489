//! Three `patchbay` processes on one PostgreSQL database (the test server `scripts/test`
//! starts): what any node acknowledges every node answers at once; a subscription
//! changed through one node is heard by callers on another within a second; `kill -9`
//! of a node loses no acknowledged write, and a survivor delivers its pending webhooks
//! with their original event ids, in order, then ends its calls (`onLeave` with a
//! reason); `GET /v1/cluster` lists the live nodes to the operator only.

use std::time::Duration;

use patchbay_tests::cluster::{live_nodes, nodes, owned, OPERATOR};
use patchbay_tests::hearing::assert_hears;
use patchbay_tests::hooks::{Answer, Receiver};
use patchbay_tests::media::{now_epoch, Capture, Law};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{postgres, Api, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn audio(api: &Api, body: Value) -> (String, String) {
    let mut body = body;
    body["publishPermissions"] = json!(["AUDIO"]);
    api.participant(body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_and_a_change_on_one_is_heard_on_another_within_a_second() {
    let url = postgres::database();
    let g = nodes(&url, "10s").await;
    assert_eq!(live_nodes(&g[1]).await, ["n1", "n2", "n3"]);
    // The view is the operator's: an account's credentials do not open it.
    let r = g[0]
        .client()
        .get(format!("{}/v1/cluster", g[0].base()))
        .basic_auth("dev", Some("dev"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // REST on node 1; read back at once on nodes 2 and 3.
    let api = g[0].api();
    let s = api.session(Some("cluster")).await;
    let (a, ta) = audio(&api, json!({})).await;
    let (b, tb) = audio(&api, json!({})).await;
    let (c, tc) = audio(&api, json!({})).await;
    for p in [&a, &b, &c] {
        api.add(&s, p, Some(json!({"sessionId": s}))).await;
    }
    for node in &g[1..] {
        let r = node
            .api()
            .call(Method::GET, &format!("/sessions/{s}/participants"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body.as_array().map(Vec::len), Some(3), "{}", r.text);
    }

    // Three callers on node 3 with tokens node 1 minted.
    let n3 = &g[2];
    let dir = n3.scratch().to_path_buf();
    let call = |name, hz, token: &str| SippCall::tone(name, &dir, hz, Law::Ulaw, 6000).token(token);
    let (call_a, call_b, call_c) = (
        call("a", 440, &ta),
        call("b", 660, &tb),
        call("c", 880, &tc),
    );
    let capture = Capture::start(
        &dir,
        &[call_a.media_port, call_b.media_port, call_c.media_port],
    );
    let running = [
        call_a.spawn(n3, &dir),
        call_b.spawn(n3, &dir),
        call_c.spawn(n3, &dir),
    ];
    n3.wait_metric("patchbay_sip_calls_active", 3.0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = now_epoch();
    // The whisper, sent to node 1: B hears only A.
    api.subscribe(&s, &b, json!({"participants": [{"participantId": a}]}))
        .await;
    let put = now_epoch();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let end = now_epoch();
    for r in running {
        r.assert_ok(Duration::from_secs(20));
    }
    let packets = capture.stop();
    let port = call_b.media_port;
    assert_hears(
        &packets,
        "B before",
        port,
        Law::Ulaw,
        before - 1.0,
        before,
        &[440, 880],
    );
    // Within one second of the acknowledgement on node 1, on node 3:
    assert_hears(
        &packets,
        "B after",
        port,
        Law::Ulaw,
        put + 1.0,
        end - 0.1,
        &[440],
    );
    let port = call_c.media_port;
    assert_hears(
        &packets,
        "C",
        port,
        Law::Ulaw,
        put + 1.0,
        end - 0.1,
        &[440, 660],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_writes_webhooks_and_calls_are_taken_over() {
    let url = postgres::database();
    let mut g = nodes(&url, "3s").await;
    let hooks = Receiver::start().await;
    // The receiver refuses for now: the calls' onConnect stay in node 3's outbox.
    hooks.answer("/cb/a", Answer::Status(503));
    let api = g[2].api();
    let s = api.session(None).await;
    let (a, ta) = audio(&api, json!({"callbackUrl": hooks.url("/cb/a"), "tag": "a"})).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    // Writes acknowledged by the node about to die, through every kind of route.
    let (b, _) = audio(&api, json!({"tag": "written-on-n3"})).await;
    api.add(
        &s,
        &b,
        Some(json!({"participants": [{"participantId": a}]})),
    )
    .await;

    let n3 = &g[2];
    let dir = n3.scratch().to_path_buf();
    let call_a = SippCall::tone("a", &dir, 440, Law::Ulaw, 30000).token(&ta);
    let running = call_a.spawn(n3, &dir);
    n3.wait_metric("patchbay_sip_calls_active", 1.0).await;
    hooks
        .wait_for(Duration::from_secs(10), "a refused onConnect", |h| {
            h.iter().any(|h| h.body["event"] == "onConnect")
        })
        .await;
    let refused: Vec<String> = hooks
        .hits()
        .iter()
        .map(|h| h.body["eventId"].as_str().unwrap_or_default().to_string())
        .collect();

    g[2].kill9();
    hooks.answer("/cb/a", Answer::Status(200));
    let killed = std::time::Instant::now();

    // Every acknowledged write is readable from the survivors.
    for node in &g[..2] {
        let r = node
            .api()
            .call(
                Method::GET,
                &format!("/sessions/{s}/participants/{b}/subscriptions"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["participants"][0]["participantId"], json!(a));
        let r = node
            .api()
            .call(Method::GET, &format!("/participants/{b}"), None)
            .await;
        assert_eq!(r.body["tag"], json!("written-on-n3"), "{}", r.text);
    }

    // A survivor delivers the pending onConnect (same event id), then ends the call.
    hooks
        .wait_for(
            Duration::from_secs(30),
            "onConnect then onLeave from a survivor",
            |h| {
                h.iter()
                    .any(|h| h.status == 200 && h.body["event"] == "onLeave")
            },
        )
        .await;
    let delivered = hooks.delivered("/cb/a");
    let events: Vec<&str> = delivered
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["onConnect", "onDisconnect", "onLeave"],
        "{delivered:#?}"
    );
    assert!(
        refused.contains(&delivered[0]["eventId"].as_str().unwrap().to_string()),
        "the survivor sent onConnect under a new event id: {delivered:#?} vs {refused:?}"
    );
    for ended in &delivered[1..] {
        assert_eq!(
            ended["reason"],
            json!("the cluster node it was connected to stopped")
        );
    }
    assert!(
        killed.elapsed() >= Duration::from_secs(3),
        "taken over before the lease ran out"
    );
    drop(running);

    // The dead node leaves the cluster view once its lease ran out.
    assert_eq!(live_nodes(&g[0]).await, ["n1", "n2"]);
}

/// The session's media runs on the node its first call reached (n3); a browser whose
/// socket lands on n2 is relayed there, and its media goes to n3 directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_one_node_and_a_caller_on_another_hear_each_other() {
    use patchbay_tests::browser::{assert_one_stream_heard, drive_with};
    use patchbay_tests::media::{assert_audible, decode_window, received};
    let url = postgres::database();
    let g = nodes(&url, "10s").await;
    let api = g[0].api();
    let s = api.session(None).await;
    let (browser, browser_token) = api.participant(json!({})).await;
    let (phone, phone_token) = audio(&api, json!({})).await;
    api.add(&s, &browser, Some(json!({"sessionId": s}))).await;
    api.add(&s, &phone, Some(json!({"sessionId": s}))).await;

    let n3 = &g[2];
    let dir = n3.scratch().to_path_buf();
    let call = SippCall::tone("phone", &dir, 440, Law::Ulaw, 12000).token(&phone_token);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(n3, &dir);
    n3.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let report = drive_with(
        &g[1],
        json!([{"token": browser_token, "connectTimeoutMs": 8000, "publish": {"alias": "microphone"},
                "steps": [{"wait": 2500}], "settleMs": 1500}]),
        500,
    );
    let until = now_epoch();
    drop(running);
    let packets = capture.stop();

    let page = &report["pages"][0];
    assert_one_stream_heard(page, &phone, 440.0);
    let rx = received(&packets, call.media_port);
    let pcm = decode_window(&rx, Law::Ulaw, until - 2.5, until);
    assert_audible(&pcm, "the phone");

    // Signaling took the hop; media did not: n2 runs no media, n3 sent to the browser.
    assert!(g[1].log().contains("device relayed to its session's node"));
    assert!(g[1].metric("patchbay_signaling_relayed_total").await >= 1.0);
    assert_eq!(
        n3.metric("patchbay_cluster_owned_sessions{node=\"n3\"}")
            .await,
        1.0
    );
    assert_eq!(g[1].metric("patchbay_webrtc_media_out_total").await, 0.0);
    assert!(n3.metric("patchbay_webrtc_media_out_total").await > 20.0);
    let owned = owned(&g[0]).await;
    assert_eq!(
        owned,
        [("n1".into(), 0), ("n2".into(), 0), ("n3".into(), 1)]
    );
}

/// The owner is paused (SIGSTOP) past its lease: the survivors end its call and another
/// node takes the session at a higher epoch; when the old owner wakes up, it learns it
/// lost the session and stops its media, and the `onLeave` it then emits is fenced:
/// the application hears of the call's end once, from the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_owner_changes_nothing_when_it_wakes_up() {
    let url = postgres::database();
    let g = nodes(&url, "3s").await;
    let hooks = Receiver::start().await;
    let api = g[0].api();
    let s = api.session(None).await;
    let (a, ta) = audio(&api, json!({"callbackUrl": hooks.url("/cb/a")})).await;
    let (b, tb) = audio(&api, json!({})).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    let n3 = &g[2];
    let dir = n3.scratch().to_path_buf();
    let call_a = SippCall::tone("a", &dir, 440, Law::Ulaw, 30000).token(&ta);
    let _running_a = call_a.spawn(n3, &dir);
    hooks
        .wait_for(Duration::from_secs(10), "onConnect", |h| {
            h.iter().any(|h| h.body["event"] == "onConnect")
        })
        .await;
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &n3.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    // A survivor ends n3's call once n3's heartbeat is older than the lease.
    hooks
        .wait_for(Duration::from_secs(20), "onLeave from a survivor", |h| {
            h.iter().any(|h| h.body["event"] == "onLeave")
        })
        .await;
    // A call on n1 takes the session (n3's lease ran out): epoch 2.
    let n1 = &g[0];
    let dir1 = n1.scratch().to_path_buf();
    let call_b = SippCall::tone("b", &dir1, 660, Law::Ulaw, 30000).token(&tb);
    let _running_b = call_b.spawn(n1, &dir1);
    n1.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !n1.log().contains("session media placed on this node") {
        assert!(
            std::time::Instant::now() < deadline,
            "n1 did not take the session:\n{}",
            n1.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n1.log().contains("epoch=2"), "{}", n1.log());
    signal("-CONT");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // It stops its media: by its watchdog (its lease went unconfirmed while it slept)
    // or by the round that finds the lease taken.
    let stopped = |log: String| {
        log.contains("session lease lost to another node")
            || log.contains("session lease not confirmed in time (watchdog)")
    };
    while !stopped(n3.log()) {
        assert!(
            std::time::Instant::now() < deadline,
            "n3 did not learn it lost the session:\n{}",
            n3.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n3.wait_metric("patchbay_sip_calls_active", 0.0).await;
    // Its own onLeave for the call was refused by the fence, not sent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !n3.log().contains("no longer owns: not sent") {
        assert!(
            std::time::Instant::now() < deadline,
            "n3's ending events were not fenced:\n{}",
            n3.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n3.metric("patchbay_webhooks_fenced_total").await >= 1.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leaves = hooks
        .delivered("/cb/a")
        .iter()
        .filter(|b| b["event"] == "onLeave")
        .count();
    assert_eq!(leaves, 1, "{:#?}", hooks.delivered("/cb/a"));
}

/// A session without an owner goes to the least loaded live node: the first device of
/// a second session connecting to a node that already owns one is relayed to a node
/// that owns none, which takes it; a ping answered through the relay shows the device
/// is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_is_placed_on_the_least_loaded_node() {
    use patchbay_tests::ws;
    let url = postgres::database();
    let g = nodes(&url, "10s").await;
    let api = g[0].api();
    let (s1, s2) = (api.session(None).await, api.session(None).await);
    let (p1, t1) = api.participant(json!({})).await;
    let (p2, t2) = api.participant(json!({})).await;
    api.add(&s1, &p1, None).await;
    api.add(&s2, &p2, None).await;

    let _first = ws::connect(&g[0], &t1, "first").await;
    let placed = |g: &Gateway, s: &str| {
        g.log()
            .lines()
            .any(|l| l.contains("session media placed on this node") && l.contains(s))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !placed(&g[0], &s1) {
        assert!(
            std::time::Instant::now() < deadline,
            "n1 did not take s1:\n{}",
            g[0].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // n1's heartbeat tells the cluster it owns one session.
    let owned = |view: &Value, id: &str| {
        view["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["id"] == id))
            .and_then(|n| n["ownedSessions"].as_u64())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view: Value = g[0]
            .client()
            .get(format!("{}/v1/cluster", g[0].base()))
            .basic_auth(OPERATOR.0, Some(OPERATOR.1))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if owned(&view, "n1") == Some(1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The device sends the nodes' hop mark itself (as if it had been relayed, to pick its
    // node): it gains nothing, the mark is not a node's and is ignored.
    let forged = format!("n1:{}:00ff", now_ms());
    let mut second = ws::open(
        &g[0],
        &format!("/v3/?token={t2}&uniqueId=second&patchbayRelayed={forged}"),
    )
    .await;
    let pong = ws::rpc(&mut second, json!(7), "ping", json!({})).await;
    assert_eq!(pong["id"], json!(7), "{pong}");
    assert!(
        placed(&g[1], &s2),
        "s2 not on n2 (the least loaded, first by id):\n{}",
        g[1].log()
    );
    assert!(!placed(&g[0], &s2));
    assert!(g[0]
        .log()
        .contains("new session placed on a less loaded node"));
    assert!(g[0].log().contains("device relayed to its session's node"));
}

/// A participant's callbacks stay in order when its calls were on different nodes: the
/// events of its call on n3 (held there by a failing receiver) are delivered before
/// those of its next call on n1, though n1 could send its own at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_callbacks_from_two_nodes_arrive_in_order() {
    let url = postgres::database();
    let g = nodes(&url, "10s").await;
    let hooks = Receiver::start().await;
    hooks.answer("/cb/a", Answer::Status(503));
    let api = g[0].api();
    let (first_session, second_session) = (api.session(None).await, api.session(None).await);
    let (a, ta) = audio(&api, json!({"callbackUrl": hooks.url("/cb/a")})).await;
    api.add(
        &first_session,
        &a,
        Some(json!({"sessionId": first_session})),
    )
    .await;

    // A's first call, on n3: its onConnect and onLeave wait in n3's outbox (503s).
    let dir = g[2].scratch().to_path_buf();
    SippCall::tone("on-n3", &dir, 440, Law::Ulaw, 1500)
        .token(&ta)
        .spawn(&g[2], &dir)
        .assert_ok(Duration::from_secs(15));
    hooks
        .wait_for(Duration::from_secs(10), "n3's refused onConnect", |h| {
            h.iter().any(|h| h.body["event"] == "onConnect")
        })
        .await;
    api.remove(&first_session, &a).await;
    api.add(
        &second_session,
        &a,
        Some(json!({"sessionId": second_session})),
    )
    .await;

    // n3's retries back off (1 s, 2 s, 4 s, 8 s…): its next is seconds away when the
    // receiver answers again. A's second call, on n1, then: n1 holds its events until
    // n3's older ones are delivered.
    tokio::time::sleep(Duration::from_secs(6)).await;
    hooks.answer("/cb/a", Answer::Status(200));
    let dir = g[0].scratch().to_path_buf();
    SippCall::tone("on-n1", &dir, 440, Law::Ulaw, 1500)
        .token(&ta)
        .spawn(&g[0], &dir)
        .assert_ok(Duration::from_secs(15));
    hooks
        .wait_for(Duration::from_secs(30), "four callbacks delivered", |h| {
            h.iter().filter(|h| h.status == 200).count() >= 4
        })
        .await;
    // The call on n3 is the one whose onConnect was refused first.
    let on_n3 = hooks.hits()[0].body["deviceId"].clone();
    let delivered = hooks.delivered("/cb/a");
    let seen: Vec<(String, String)> = delivered
        .iter()
        .map(|b| {
            (
                b["event"].as_str().unwrap_or_default().to_string(),
                b["deviceId"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let events: Vec<&str> = seen.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        events,
        ["onConnect", "onLeave", "onConnect", "onLeave"],
        "{seen:?}"
    );
    assert_eq!(json!(seen[0].1), on_n3, "n1's events went first: {seen:?}");
    assert_eq!(seen[0].1, seen[1].1, "{seen:?}");
    assert_eq!(seen[2].1, seen[3].1, "{seen:?}");
    assert_ne!(seen[0].1, seen[2].1, "{seen:?}");
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Whoever can write the `nodes` table points the session's owner at its own server:
/// the relaying node asks that server to prove it is the node, and sends it nothing else
/// (no participant token); the device is told to come back later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_row_pointing_elsewhere_receives_no_credentials() {
    use patchbay_tests::ws;
    use std::io::{Read, Write};
    let url = postgres::database();
    let g = nodes(&url, "10s").await;
    let api = g[0].api();
    let s = api.session(None).await;
    let (p1, t1) = api.participant(json!({})).await;
    let (p2, t2) = api.participant(json!({})).await;
    api.add(&s, &p1, None).await;
    api.add(&s, &p2, None).await;
    let _first = ws::connect(&g[0], &t1, "first").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !g[0].log().contains("session media placed on this node") {
        assert!(
            std::time::Instant::now() < deadline,
            "n1 did not take the session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The attacker's server records what reaches it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let attacker = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().map_while(Result::ok) {
                conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut buf = vec![0u8; 16384];
                let n = conn.read(&mut buf).unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nn1:nope!\n");
            }
        });
    }
    // n1 paused (its heartbeat would write its row back), its row rewritten.
    let n1_pid = g[0].pid().to_string();
    let kill = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &n1_pid])
            .status()
            .unwrap();
    };
    kill("-STOP");
    let update = format!(
        "UPDATE nodes SET info = replace(info, '{}', 'http://{attacker}') WHERE id = 'n1'",
        g[0].base()
    );
    let out = std::process::Command::new("psql")
        .arg(&url)
        .args(["-v", "ON_ERROR_STOP=1", "-qc", &update])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut second = ws::connect(&g[1], &t2, "second").await;
    let closed = ws::next_within(&mut second, Duration::from_secs(10)).await;
    kill("-CONT");
    assert!(matches!(closed, Err((1013, _))), "{closed:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.is_empty(),
        "n2 never asked the row's address to prove itself"
    );
    for request in &seen {
        assert!(
            request.starts_with("GET /v1/cluster/proof?nonce="),
            "{request}"
        );
        assert!(
            !request.contains(&t2) && !request.contains("token="),
            "{request}"
        );
        assert!(
            !request.to_ascii_lowercase().contains("authorization"),
            "{request}"
        );
    }
    assert!(
        g[1].log().contains("did not prove itself"),
        "{}",
        g[1].log()
    );
    let _ = p2;
}
