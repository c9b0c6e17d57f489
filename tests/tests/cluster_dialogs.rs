//! Dialogs in a cluster: placed by the node that runs the participant's session (a
//! `POST` to any node is forwarded there), driven by it (`PATCH`/`DELETE` through any
//! node), readable everywhere, and ended by a survivor when that node dies.

use std::time::Duration;

use patchbay_tests::cluster::nodes_with;
use patchbay_tests::hooks::Receiver;
use patchbay_tests::media::{now_epoch, Capture, Law};
use patchbay_tests::sipp::{RunningSipp, SippCall};
use patchbay_tests::{postgres, Api, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn audio(api: &Api, body: Value) -> (String, String) {
    let mut body = body;
    body["publishPermissions"] = json!(["AUDIO"]);
    api.participant(body).await
}

/// A sipp trunk that answers after 200 ms with a 660 Hz tone and waits for the BYE.
fn trunk() -> SippCall {
    SippCall::new("trunk", "uas_answer.xml")
        .var("RING_MS", "200")
        .var("HANGUP", "wait")
        .var("HOLD_MS", "0")
        .var("WAV", "tone660.wav")
        .var("CHECK_UUI", "false")
}

/// Three nodes with a sipp trunk that answers and waits for BYE; n3 places a dialog for
/// a participant whose callbacks go to `/cb/agent`, answered: (nodes, receiver, the
/// trunk's run, participant, dialog).
async fn answered_dialog_on_n3(
    lease: &str,
) -> (Vec<Gateway>, Receiver, RunningSipp, String, String) {
    use patchbay_tests::dialing::{dial, dial_body, dialer, wait_state};
    let trunk = trunk();
    let url = postgres::database();
    let trunk_uri = trunk.trunk_uri();
    let g = nodes_with(&url, lease, &["--sip-trunk", &trunk_uri]).await;
    let hooks = Receiver::start().await;
    let api3 = g[2].api();
    let s = api3.session(None).await;
    let p = dialer(&api3, &s, &hooks, "agent").await;
    let dir = g[2].scratch().to_path_buf();
    patchbay_tests::media::write_tone_wav(&dir.join("tone660.wav"), 660.0, 2, Law::Ulaw);
    let far_end = trunk.serve(&dir);
    let r = dial(&api3, &p, dial_body("+15551234567")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let d = r.body["dialogId"].as_str().unwrap().to_string();
    wait_state(&hooks, "/cb/agent", "ANSWERED").await;
    (g, hooks, far_end, p, d)
}

/// A dialog placed by n3 is readable through any node; when n3 dies, a survivor reports
/// it ended (its call was on n3) to the participant's callbackUrl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_dialog_is_readable_everywhere_and_ended_by_a_survivor() {
    use patchbay_tests::dialing::{dialog_states, wait_state};
    let (mut g, hooks, _far_end, p, d) = answered_dialog_on_n3("3s").await;
    let path = format!("/participants/{p}/dialogs/{d}");
    let r = g[0].api().call(Method::GET, &path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["state"], "ANSWERED", "{}", r.text);

    g[2].kill9();
    wait_state(&hooks, "/cb/agent", "TERMINATED").await;
    let ended = dialog_states(&hooks, "/cb/agent")
        .into_iter()
        .find(|(state, _)| state == "TERMINATED")
        .map(|(_, body)| body)
        .unwrap();
    assert_eq!(
        ended["details"],
        json!("the cluster node that placed the call stopped"),
        "{ended}"
    );
    let r = g[1].api().call(Method::GET, &path, None).await;
    assert_eq!(r.body["state"], "TERMINATED", "{}", r.text);
}

/// A dialog is driven by the node that placed it: a `DELETE` sent to another node is
/// forwarded there, and the far end gets its BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialog_is_hung_up_through_any_node() {
    use patchbay_tests::dialing::{hang_up, wait_state};
    let (g, hooks, far_end, p, d) = answered_dialog_on_n3("10s").await;
    hang_up(&g[0].api(), &p, &d).await;
    far_end.assert_ok(Duration::from_secs(10));
    wait_state(&hooks, "/cb/agent", "TERMINATED").await;
    // n1 answered 204 by forwarding: the DELETE was handled on n3.
    assert!(
        g[2].log()
            .lines()
            .any(|l| l.contains("method=DELETE") && l.contains("status=204")),
        "{}",
        g[2].log()
    );
}

/// A dialog is placed by the node that runs its participant's session: a `POST` sent to
/// another node is forwarded there, and the far end joins that node's media (a caller
/// already on it hears the far end's tone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialog_posted_to_any_node_is_placed_by_the_sessions_node() {
    use patchbay_tests::dialing::{dial, dial_body, dialer, wait_state};
    use patchbay_tests::hearing::assert_settles;
    let trunk = trunk();
    let url = postgres::database();
    let trunk_uri = trunk.trunk_uri();
    let g = nodes_with(&url, "10s", &["--sip-trunk", &trunk_uri]).await;
    let hooks = Receiver::start().await;
    let api = g[0].api();
    let s = api.session(None).await;
    let (phone, phone_token) = audio(&api, json!({})).await;
    api.add(&s, &phone, Some(json!({"sessionId": s}))).await;
    let agent = dialer(&api, &s, &hooks, "agent").await;

    // The phone's call lands on n1: n1 runs the session.
    let n1 = &g[0];
    let dir = n1.scratch().to_path_buf();
    patchbay_tests::media::write_tone_wav(&dir.join("tone660.wav"), 660.0, 2, Law::Ulaw);
    let call = SippCall::tone("phone", &dir, 440, Law::Ulaw, 20000).token(&phone_token);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(n1, &dir);
    n1.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // The dialog is requested from n3.
    let _far_end = trunk.serve(&dir);
    let r = dial(&g[2].api(), &agent, dial_body("+15551234567")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    wait_state(&hooks, "/cb/agent", "ANSWERED").await;
    let answered = now_epoch();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let until = now_epoch();
    drop(running);
    let packets = capture.stop();
    assert!(n1.log().contains("dialog created"), "{}", n1.log());
    assert!(!g[2].log().contains("dialog created"));
    assert!(g[2]
        .log()
        .lines()
        .any(|l| l.contains("method=POST") && l.contains("dialogs")));
    // The far end is mixed into the phone's audio on n1.
    assert_settles(
        &packets,
        "the phone",
        call.media_port,
        Law::Ulaw,
        answered,
        until,
        &[660],
    );
}
