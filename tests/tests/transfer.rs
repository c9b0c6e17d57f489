//! Transfers. Ours (`POST …/participants/{p}/transfer`): a REFER in the participant's
//! call, whose answer and NOTIFYs (sipp playing the transferee's side) give the
//! outcome the API answers with. The phone's (a REFER from baresip through Kamailio):
//! its participant's dialog to the target through the trunk, NOTIFYs back, the
//! target heard in the session. An INVITE with `Replaces` (attended transfer) taking
//! the place of one of our calls.

use std::time::Duration;

use patchbay_tests::baresip::Baresip;
use patchbay_tests::dialing::{dialog_states, wait_state};
use patchbay_tests::hearing::assert_hears;
use patchbay_tests::hooks::Receiver;
use patchbay_tests::kamailio::Kamailio;
use patchbay_tests::media::{now_epoch, write_tone_wav, Capture, Law};
use patchbay_tests::rawsip::RawSip;
use patchbay_tests::sipp::{free_udp_ports, RunningSipp, SippCall};
use patchbay_tests::{Api, Gateway, Resp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A member of session `s` that may publish audio: (id, token).
async fn member(api: &Api, s: &str) -> (String, String) {
    let (p, token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(s, &p, Some(json!({"sessionId": s}))).await;
    (p, token)
}

async fn transfer(api: &Api, p: &str, body: Value) -> Resp {
    api.call(
        Method::POST,
        &format!("/participants/{p}/transfer"),
        Some(body),
    )
    .await
}

/// How sipp plays the phone's side of a call Patchbay transfers (`uac_referred.xml`):
/// the Refer-To it expects (a regular expression), its answer to the REFER, then
/// NOTIFYs (`notify`: 100, then `final_status` `ring_ms` later) or nothing (`wait`).
struct Side {
    name: &'static str,
    target: &'static str,
    status: &'static str,
    after: &'static str,
    ring_ms: &'static str,
    final_status: &'static str,
}

/// A new member of `s` calling in as `side`, once its call is up: (participant, sipp).
async fn call_in(g: &Gateway, s: &str, side: &Side) -> (String, RunningSipp) {
    let (p, token) = member(&g.api(), s).await;
    let phone = SippCall::new(side.name, "uac_referred.xml")
        .token(&token)
        .var("TARGET", side.target)
        .var("REFER_STATUS", side.status)
        .var("AFTER", side.after)
        .var("RING_MS", side.ring_ms)
        .var("FINAL", side.final_status)
        .spawn(g, g.scratch());
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    (p, phone)
}

/// Hang up participant `p`'s call from the API; sipp saw its call through.
async fn hang_up(g: &Gateway, p: &str, phone: RunningSipp) {
    delete(&g.api(), p).await;
    phone.assert_ok(Duration::from_secs(10));
    g.wait_metric("patchbay_sip_calls_active", 0.0).await;
}

/// Delete participant `p` (its call gets our BYE).
async fn delete(api: &Api, p: &str) {
    let r = api
        .call(Method::DELETE, &format!("/participants/{p}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_transfers_a_call_and_answers_with_its_outcome() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let target = "sip:2001@pbx.example.com";

    // Refusals before anything is sent.
    let (idle, _) = member(&api, &s).await;
    let r = transfer(&api, &idle, json!({"to": target})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    for bad in [
        json!({"to": "http://example.com"}),
        json!({"to": "sip:a b@c"}),
        json!({"to": target, "ringingTimeout": 0}),
        json!({"to": target, "ringingTimeout": 121}),
        json!({"to": target, "extra": 1}),
        json!({}),
    ] {
        let r = transfer(&api, &idle, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let unknown = "00000000-0000-4000-8000-000000000000";
    let r = transfer(&api, unknown, json!({"to": target})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Completed: the transferee's side reports 100, then 200; we end our call (BYE).
    let side = Side {
        name: "completed",
        target,
        status: "202 Accepted",
        after: "notify",
        ring_ms: "300",
        final_status: "200 OK",
    };
    let (p, phone) = call_in(&g, &s, &side).await;
    let r = transfer(&api, &p, json!({"to": target})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    if r.body != json!({"outcome": "COMPLETED"}) {
        let (_, log) = phone.wait(Duration::from_secs(1));
        panic!("{}\n{log}", r.text);
    }
    phone.assert_ok(Duration::from_secs(10));
    g.wait_metric("patchbay_sip_calls_active", 0.0).await;

    // The target refused (a number goes as tel:): the call stays.
    let side = Side {
        name: "busy",
        target: "tel:.15551234567",
        final_status: "486 Busy Here",
        ..side
    };
    let (p, phone) = call_in(&g, &s, &side).await;
    let r = transfer(&api, &p, json!({"to": "+15551234567"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let busy = json!({"outcome": "REJECTED", "details": "486 Busy Here"});
    assert_eq!(r.body, busy);
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 1.0);
    hang_up(&g, &p, phone).await;

    // The REFER itself refused.
    let side = Side {
        name: "declined",
        target,
        status: "603 Decline",
        after: "wait",
        ..side
    };
    let (p, phone) = call_in(&g, &s, &side).await;
    let r = transfer(&api, &p, json!({"to": target})).await;
    let declined = json!({"outcome": "REJECTED", "details": "603 Decline"});
    assert_eq!(r.body, declined, "{}", r.text);
    hang_up(&g, &p, phone).await;

    // The target rings longer than we wait; its late final NOTIFY is still answered.
    let side = Side {
        name: "ringing",
        status: "202 Accepted",
        after: "notify",
        ring_ms: "2500",
        final_status: "487 Request Terminated",
        ..side
    };
    let (p, phone) = call_in(&g, &s, &side).await;
    let r = transfer(&api, &p, json!({"to": target, "ringingTimeout": 1})).await;
    assert_eq!(r.body, json!({"outcome": "RINGING_TIMEOUT"}), "{}", r.text);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 1.0);
    hang_up(&g, &p, phone).await;

    // The call ends while the transfer is under way; a second transfer meanwhile is 409.
    let side = Side {
        name: "ended",
        after: "wait",
        ..side
    };
    let (p, phone) = call_in(&g, &s, &side).await;
    let pending = {
        let (api, p) = (api.clone(), p.clone());
        tokio::spawn(async move { transfer(&api, &p, json!({"to": target})).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = transfer(&api, &p, json!({"to": target})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    delete(&api, &p).await;
    let r = pending.await.expect("the transfer request");
    assert_eq!(r.body, json!({"outcome": "CALL_ENDED"}), "{}", r.text);
    phone.assert_ok(Duration::from_secs(10));
}

/// baresip (participant A, through Kamailio) transfers its call blind to a target on
/// the trunk: A's dialog to it is reported to A's callback URL, baresip gets the
/// NOTIFYs through the proxy, and the target takes A's place in the session (the
/// other member hears it, it hears the other member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_softphone_transfers_its_call_to_a_target_through_the_trunk() {
    let target = SippCall::new("target", "uas_answer.xml")
        .var("RING_MS", "500")
        .var("HANGUP", "wait")
        .var("HOLD_MS", "0")
        .var("WAV", "tone660.wav")
        .var("CHECK_UUI", "false");
    let hooks = Receiver::start().await;
    let trunk = target.trunk_uri();
    let args = ["--sip-trunk", &trunk, "--sip-transfer-targets", "+1,2"];
    let g = Gateway::start_with(&args, &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let dir = g.scratch().to_path_buf();
    write_tone_wav(&dir.join("tone660.wav"), 660.0, 2, Law::Ulaw);
    let (a, a_token) = api
        .participant(
            json!({"publishPermissions": ["AUDIO"], "callbackUrl": hooks.url("/cb/a"), "tag": "a"}),
        )
        .await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    let (_, b_token) = member(&api, &s).await;
    let other = SippCall::tone("other", &dir, 880, Law::Ulaw, 25000)
        .token(&b_token)
        .timeout(40);
    let capture = Capture::start(&dir, &[other.media_port, target.media_port]);
    let far_end = target.serve(&dir);
    let other_call = other.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let proxy = Kamailio::start(
        &dir,
        &format!("sip:127.0.0.1:{}", g.sip_port),
        &a_token,
        false,
    );
    let mut phone = Baresip::new(&dir, "softphone", 440.0, "PCMU/8000/1");
    phone.dial(&format!("sip:+15551230000@127.0.0.1:{}", proxy.port));
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let to = format!("sip:2001@127.0.0.1:{}", target.sip_port);
    let r = phone.command("transfer", &to);
    assert!(r.contains("\"ok\":true"), "{r}");
    wait_state(&hooks, "/cb/a", "ANSWERED").await;
    // baresip's call ends (our BYE, or its own on the final NOTIFY), through the proxy.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !proxy
        .relayed()
        .iter()
        .any(|l| l.starts_with("RELAY-ROUTED BYE"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "baresip's call never ended:\n{}\n{}",
            phone.log(),
            g.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let until = now_epoch();
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 2.0);
    delete(&api, &a).await;
    far_end.assert_ok(Duration::from_secs(10));
    drop(other_call);
    phone.stop();
    let packets = capture.stop();

    // The REFER and our NOTIFYs (100, 180, 200) went through the proxy's route.
    let relayed = proxy.relayed();
    for needle in ["RELAY-ROUTED REFER", "RELAY-ROUTED NOTIFY"] {
        assert!(
            relayed.iter().any(|l| l.starts_with(needle)),
            "{needle} missing: {relayed:#?}"
        );
    }
    let notifies = relayed
        .iter()
        .filter(|l| l.starts_with("RELAY-ROUTED NOTIFY"))
        .count();
    assert!(notifies >= 3, "{relayed:#?}");
    assert!(
        g.log().contains("transfer ended") && g.log().contains("status=200"),
        "{}",
        g.log()
    );
    // A's dialog to the target, as its application sees it.
    let states: Vec<String> = dialog_states(&hooks, "/cb/a")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        &states[..3],
        ["CALLING", "RINGING", "ANSWERED"],
        "{states:?}"
    );
    let answered = hooks
        .delivered("/cb/a")
        .into_iter()
        .find(|b| b["event"] == "onSipDialogStateChange" && b["state"] == "ANSWERED")
        .expect("ANSWERED");
    assert_eq!(answered["data"]["to"], to.as_str());
    // Shown to the target: the number the call came from, when it is one (baresip's
    // account is `sip:caller@…`, not a number).
    assert_eq!(answered["data"]["from"], "UNKNOWN");
    // The target replaced the softphone: the other member hears it, it hears them.
    let (from, to) = (until - 2.5, until);
    assert_hears(
        &packets,
        "the other member",
        other.media_port,
        Law::Ulaw,
        from,
        to,
        &[660],
    );
    assert_hears(
        &packets,
        "the target",
        target.media_port,
        Law::Ulaw,
        from,
        to,
        &[880],
    );
}

/// An attended transfer completed elsewhere: an INVITE whose `Replaces` names one of
/// our answered calls (Call-ID, our tag as to-tag, the caller's as from-tag) takes
/// that call's participant, and that call gets our BYE. Anything else naming it is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_with_replaces_takes_the_place_of_our_call() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let dir = g.scratch().to_path_buf();
    let (_, a_token) = member(&api, &s).await;
    let (_, b_token) = member(&api, &s).await;
    // A: a raw caller, so that its dialog's tags are known.
    let a = RawSip::new(&g);
    let call_id = "replaced-call";
    a.send(&a.invite(call_id, "inv1", &a_token, free_udp_ports(2)));
    let ok = a.final_response();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let tag = RawSip::to_tag(&ok);
    a.send(&a.in_dialog("ACK", 1, call_id, &tag, "ack1"));
    // A REFER of its own: no target is allowed here (no sip_transfer_targets).
    let refer = a.in_dialog("REFER", 2, call_id, &tag, "ref1").replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRefer-To: <sip:2001@pbx.example>\r\n",
    );
    a.send(&refer);
    let refused = a.final_response();
    assert!(
        refused.starts_with("SIP/2.0 403 Forbidden (transfer target not allowed)"),
        "{refused}"
    );

    // Not our dialog (tags swapped, unknown call), or early-only on an answered call.
    let probe = RawSip::new(&g);
    let refused = [
        (format!("{call_id};to-tag=raw1;from-tag={tag}"), "481"),
        ("elsewhere@x;to-tag=a;from-tag=b".to_string(), "481"),
        (
            format!("{call_id};to-tag={tag};from-tag=raw1;early-only"),
            "486",
        ),
        (format!("{call_id};to-tag={tag}"), "400"),
    ];
    for (i, (replaces, code)) in refused.iter().enumerate() {
        let extra = format!("Replaces: {replaces}\r\n");
        let port = free_udp_ports(2);
        probe.send(&probe.invite_with(&format!("probe{i}"), &format!("p{i}"), "x", port, &extra));
        let r = probe.final_response();
        assert!(r.starts_with(&format!("SIP/2.0 {code}")), "{replaces}: {r}");
    }

    // B, another member, plays 880 Hz; C replaces A and plays 660 Hz.
    let other = SippCall::tone("other", &dir, 880, Law::Ulaw, 12000).token(&b_token);
    let replacing = SippCall::tone("replacing", &dir, 660, Law::Ulaw, 6000)
        .header("Replaces", &format!("{call_id};to-tag={tag};from-tag=raw1"));
    let capture = Capture::start(&dir, &[other.media_port, replacing.media_port]);
    let other_call = other.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let c_call = replacing.spawn(&g, &dir);
    let bye = a.request("BYE");
    assert!(bye.contains(call_id), "{bye}");
    assert!(g.log().contains("call replaces one of ours"), "{}", g.log());
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 2.0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let until = now_epoch();
    c_call.assert_ok(Duration::from_secs(10));
    drop(other_call);
    let packets = capture.stop();
    let (from, to) = (until - 2.5, until);
    assert_hears(
        &packets,
        "the other member",
        other.media_port,
        Law::Ulaw,
        from,
        to,
        &[660],
    );
    assert_hears(
        &packets,
        "the replacing caller",
        replacing.media_port,
        Law::Ulaw,
        from,
        to,
        &[880],
    );
}
