//! SIP into a cluster the way docs/cluster.md §4 sets it up: carriers send every call
//! to a Kamailio dispatcher (Debian's `kamailio`, `tests/kamailio/cluster.cfg`) over all
//! nodes; a node that does not run the call's session answers 302 with the node that
//! does, Kamailio follows it, and the carrier (sipp, which fails on any 3xx) only sees
//! its call answered — in the session, hearing the other callers.

use std::time::Duration;

use patchbay_tests::cluster::nodes;
use patchbay_tests::hearing::assert_settles;
use patchbay_tests::kamailio::Kamailio;
use patchbay_tests::media::{now_epoch, Capture, Law};
use patchbay_tests::postgres;
use patchbay_tests::sipp::SippCall;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_a_dispatcher_reach_the_sessions_node_whichever_node_they_hit() {
    let url = postgres::database();
    let g = nodes(&url, "10s").await;
    let api = g[0].api();
    let s = api.session(None).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let (p, t) = api
            .participant(json!({"publishPermissions": ["AUDIO"]}))
            .await;
        api.add(&s, &p, Some(json!({"sessionId": s}))).await;
        tokens.push(t);
    }

    // The first call reaches n3 directly: n3 runs the session.
    let n3 = &g[2];
    let dir = n3.scratch().to_path_buf();
    let first = SippCall::tone("first", &dir, 440, Law::Ulaw, 20000).token(&tokens[0]);
    let _first = first.spawn(n3, &dir);
    n3.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // Two more through the dispatcher's round robin over all three nodes: at least one
    // lands on a node that redirects.
    let uris: Vec<String> = g
        .iter()
        .map(|n| format!("sip:127.0.0.1:{}", n.sip_port))
        .collect();
    let proxy = Kamailio::dispatcher(&dir, &uris);
    let at = format!("127.0.0.1:{}", proxy.port);
    let second = SippCall::tone("second", &dir, 660, Law::Ulaw, 20000).token(&tokens[1]);
    let third = SippCall::tone("third", &dir, 880, Law::Ulaw, 20000).token(&tokens[2]);
    let capture = Capture::start(&dir, &[second.media_port]);
    let _second = second.spawn_to(&at, &dir);
    let _third = third.spawn_to(&at, &dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while n3.metric("patchbay_sip_calls_active").await < 3.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the calls never reached n3:\n{}",
            proxy.relayed().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let from = now_epoch();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let until = now_epoch();
    let packets = capture.stop();

    let relayed = proxy.relayed();
    assert!(
        relayed
            .iter()
            .any(|l| l.starts_with("RELAY-REDIRECTED INVITE")),
        "{relayed:#?}"
    );
    // The carrier never saw a 3xx: only Kamailio did.
    for n in &g[..2] {
        assert_eq!(n.metric("patchbay_sip_calls_active").await, 0.0);
    }
    assert!(g[..2]
        .iter()
        .any(|n| n.log().contains("call redirected to the session's node")));
    // The second caller is in the session on n3: it hears the first and the third.
    assert_settles(
        &packets,
        "the second caller",
        second.media_port,
        Law::Ulaw,
        from,
        until,
        &[440, 880],
    );
}

/// A live call moved between sessions in a cluster stays on its node (a call never
/// changes node): into a session whose media runs on another node it stays parked
/// (silence, no BYE); into a session no node runs yet, its node takes the session (the
/// placement rule of every media join: the first join places it) and the call hears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_call_stays_on_its_node_parked_or_taking_a_free_session() {
    use patchbay_tests::hearing::{assert_hears, heard_windows};
    let url = postgres::database();
    let g = nodes(&url, "10s").await;
    let (n1, n2, n3) = (&g[0], &g[1], &g[2]);
    let api = n3.api();
    let (s1, s2, s3) = (
        api.session(None).await,
        api.session(None).await,
        api.session(None).await,
    );
    let audio = json!({"publishPermissions": ["AUDIO"]});
    let (m, tm) = api.participant(audio.clone()).await;
    let (b, tb) = api.participant(audio.clone()).await;
    let (c, tc) = api.participant(audio).await;
    api.add(&s1, &m, Some(json!({"sessionId": s1}))).await;
    api.add(&s2, &b, Some(json!({"sessionId": s2}))).await;
    api.add(&s3, &c, Some(json!({"sessionId": s3}))).await;
    // m calls n1 (n1 takes session 1); b calls n2 (n2 takes session 2).
    let dir = n1.scratch().to_path_buf();
    let mover = SippCall::tone("mover", &dir, 660, Law::Ulaw, 16000).token(&tm);
    let capture = Capture::start(&dir, &[mover.media_port]);
    let running = mover.spawn(n1, &dir);
    n1.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let _b = SippCall::tone("b", &dir, 880, Law::Ulaw, 16000)
        .token(&tb)
        .spawn(n2, &dir);
    n2.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // Into session 2 (its media on n2), through n3's API: the call stays on n1, parked.
    api.remove(&s1, &m).await;
    api.add(&s2, &m, Some(json!({"sessionId": s2}))).await;
    let parked = now_epoch();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let parked_until = now_epoch();
    assert_eq!(n1.metric("patchbay_sip_calls_active").await, 1.0);
    assert!(
        n1.log().contains("its session runs on another node"),
        "{}",
        n1.log()
    );

    // Into session 3, whose media runs nowhere yet: n1 takes it; c calls n1 and the two
    // hear each other.
    api.remove(&s2, &m).await;
    api.add(&s3, &m, Some(json!({"sessionId": s3}))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _c = SippCall::tone("c", &dir, 440, Law::Ulaw, 8000)
        .token(&tc)
        .spawn(n1, &dir);
    n1.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let end = now_epoch();
    running.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();
    let silent = heard_windows(
        &packets,
        mover.media_port,
        Law::Ulaw,
        parked + 1.0,
        parked_until,
    );
    assert!(silent.len() >= 5, "{silent:?}");
    assert!(
        silent.iter().all(|(_, tones, _)| tones.is_empty()),
        "parked: nothing of session 2 (its media on n2): {silent:?}"
    );
    assert_hears(
        &packets,
        "the mover in session 3 on its node",
        mover.media_port,
        Law::Ulaw,
        joined + 1.0,
        end - 0.1,
        &[440],
    );
}
