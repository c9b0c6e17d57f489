//! Patchbay as an extension of a PBX (Kamailio's registrar and usrloc standing in for
//! it): it registers with digest, is called without a token, and the application names
//! the caller's participant through `sip_inbound_url`; the registration is refreshed
//! and comes back after the PBX restarts.

use std::time::Duration;

use patchbay_tests::hearing::assert_settles;
use patchbay_tests::hooks::{Answer, Receiver};
use patchbay_tests::kamailio::Kamailio;
use patchbay_tests::media::{now_epoch, write_tone_wav, Capture, Law};
use patchbay_tests::rawsip::RawSip;
use patchbay_tests::sipp::SippCall;
use patchbay_tests::Gateway;
use serde_json::json;

const PASSWORD: &str = "pbx-secret-1000";

/// A PBX extension (sipp, extension 2000) calling extension `called` through the PBX
/// (no `User-To-User`), playing `hz`.
fn extension_call(
    name: &str,
    dir: &std::path::Path,
    called: &str,
    hz: u32,
    hold_ms: u32,
) -> SippCall {
    let law = Law::Ulaw;
    let wav = format!("tone{hz}-{}.wav", law.name());
    write_tone_wav(&dir.join(&wav), hz as f64, 2, law);
    SippCall::new(name, "uac_extension.xml")
        .var("CALLED", called)
        .var("WAV", wav)
        .var("PT", law.payload_type().to_string())
        .var("CODEC", law.name())
        .var("HOLD_MS", hold_ms.to_string())
}

/// The gateway registered as extension 1000 of `pbx`, asking `hooks` about calls
/// without a token.
async fn extension_gateway(pbx: &Kamailio, hooks: &Receiver, dir: &std::path::Path) -> Gateway {
    let cfg = dir.join("patchbay.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"sip_inbound_url = "{url}"
webhook_allow = "127.0.0.1"
webhook_secret = "inbound-secret"

[[sip_registrations]]
registrar = "sip:127.0.0.1:{port}"
aor = "sip:1000@127.0.0.1"
user = "1000"
password = "{PASSWORD}"
expires = "4s"
"#,
            url = hooks.url("/inbound"),
            port = pbx.port
        ),
    )
    .expect("write config");
    Gateway::start_with(&["--config", cfg.to_str().expect("path")], &[]).await
}

/// A gateway asking a receiver's `/inbound` about calls without a token.
async fn inbound_gateway() -> (Receiver, Gateway) {
    let hooks = Receiver::start().await;
    let url = hooks.url("/inbound");
    let args = ["--sip-inbound-url", &url, "--webhook-allow", "127.0.0.1"];
    let g = Gateway::start_with(&args, &[]).await;
    (hooks, g)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_with_a_pbx_its_extensions_reach_a_session_through_the_inbound_rule() {
    let setup = tempfile::tempdir().expect("tempdir");
    let pbx_dir = setup.path().join("pbx");
    std::fs::create_dir_all(&pbx_dir).expect("dir");
    let pbx = Kamailio::pbx(&pbx_dir, PASSWORD, None);
    let hooks = Receiver::start().await;
    let g = extension_gateway(&pbx, &hooks, setup.path()).await;

    // Registered, with digest (the PBX challenged first).
    g.wait_metric("patchbay_sip_registered", 1.0).await;
    pbx.wait_log("PBX-REGISTERED sip:1000@127.0.0.1", Duration::from_secs(5));
    let lines = pbx.pbx_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PBX-CHALLENGE sip:1000@127.0.0.1")),
        "{lines:#?}"
    );
    assert!(g.log().contains("SIP: registered"), "{}", g.log());
    // The console's operations view counts it.
    let ops = g.api().call(reqwest::Method::GET, "/ops", None).await.body;
    assert_eq!(
        ops["sipRegistrations"],
        json!({"registered": 1.0, "configured": 1.0}),
        "{ops}"
    );

    // The session: the PBX caller's participant (named by the application) and a
    // member calling in with its token, playing 660 Hz.
    let api = g.api();
    let (s, _, caller_token) = api.audio_member().await;
    let (other_p, other_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &other_p, Some(json!({"sessionId": s}))).await;
    hooks.answer_json("/inbound", &json!({ "token": caller_token }));

    let dir = g.scratch().to_path_buf();
    let other = SippCall::tone("other", &dir, 660, Law::Ulaw, 6000).token(&other_token);
    let caller = extension_call("ext2000", &dir, "1000", 440, 4000);
    let capture = Capture::start(&dir, &[caller.media_port, other.media_port]);
    let other_run = other.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let caller_run = caller.spawn_to(&format!("127.0.0.1:{}", pbx.port), &dir);
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let until = now_epoch();
    caller_run.assert_ok(Duration::from_secs(20));
    other_run.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();

    // The PBX looked the extension up and relayed the call to our Contact.
    let lines = pbx.pbx_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PBX-CALL to sip:1000@127.0.0.1:")),
        "{lines:#?}"
    );
    // The application was asked, signed, with the number called.
    let asked = hooks.delivered("/inbound");
    let [ask] = &asked[..] else {
        panic!("one question to sip_inbound_url: {asked:#?}")
    };
    assert_eq!(ask["eventType"], "sipInbound");
    assert_eq!(ask["called"], "1000");
    assert!(
        ask["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("sip:2000@")),
        "{ask}"
    );
    let hit = hooks
        .hits()
        .into_iter()
        .find(|h| h.path == "/inbound")
        .expect("hit");
    assert!(
        hit.headers
            .get("x-patchbay-signature")
            .is_some_and(|v| v.starts_with("sha256=")),
        "{:?}",
        hit.headers
    );
    // The extension and the member hear each other.
    assert_settles(
        &packets,
        "the PBX extension",
        caller.media_port,
        Law::Ulaw,
        joined + 0.5,
        until,
        &[660],
    );
    assert_settles(
        &packets,
        "the member",
        other.media_port,
        Law::Ulaw,
        joined + 0.5,
        until,
        &[440],
    );

    // Refreshed (4 s asked: every ~2 s), each answered after a challenge.
    let registered = |k: &Kamailio| {
        k.pbx_lines()
            .iter()
            .filter(|l| l.starts_with("PBX-REGISTERED sip:1000@127.0.0.1"))
            .count()
    };
    assert!(registered(&pbx) >= 2, "{:#?}", pbx.pbx_lines());

    // The PBX restarts (its registrations were in memory): Patchbay registers again
    // with its next refresh, and extensions reach it again.
    let port = pbx.port;
    drop(pbx);
    let pbx_dir2 = setup.path().join("pbx2");
    std::fs::create_dir_all(&pbx_dir2).expect("dir");
    let pbx = Kamailio::pbx(&pbx_dir2, PASSWORD, Some(port));
    pbx.wait_log("PBX-REGISTERED sip:1000@127.0.0.1", Duration::from_secs(15));
    g.wait_metric("patchbay_sip_registered", 1.0).await;
    let again = extension_call("ext2000b", &dir, "1000", 440, 1000);
    again
        .spawn_to(&format!("127.0.0.1:{port}"), &dir)
        .assert_ok(Duration::from_secs(20));
    assert_eq!(hooks.delivered("/inbound").len(), 2);
}

/// Without an answer naming a participant, a call without a token is refused (403):
/// another status, an answer without a token, a token that names no participant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_token_the_application_does_not_name_is_refused() {
    let (hooks, g) = inbound_gateway().await;
    let dir = g.scratch().to_path_buf();
    for name in ["refused404", "notoken", "badtoken"] {
        match name {
            "refused404" => hooks.answer("/inbound", Answer::Status(404)),
            "notoken" => hooks.answer_json("/inbound", &json!({"participant": "x"})),
            _ => hooks.answer_json("/inbound", &json!({"token": "not-a-token"})),
        }
        if name != "refused404" {
            hooks.answer("/inbound", Answer::Status(200));
        }
        SippCall::new(name, "uac_expect.xml")
            .var("UUI", "X-Nothing: here")
            .var("PT", "0")
            .var("RTPMAP", "PCMU/8000")
            .var("CODE", "403")
            .spawn(&g, &dir)
            .assert_ok(Duration::from_secs(15));
    }
    assert_eq!(hooks.hits().len(), 3);
    assert_eq!(g.metric("patchbay_sip_calls_rejected_total").await, 3.0);
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 0.0);
    assert!(
        g.log().contains("call refused by the inbound rule"),
        "{}",
        g.log()
    );
}

/// A caller that hangs up (CANCEL) while the application is still deciding gets 487,
/// and the application's late answer does not make it a call: nobody joins the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_while_the_application_decides_is_not_admitted() {
    let (hooks, g) = inbound_gateway().await;
    let (_, _, token) = g.api().audio_member().await;
    hooks.answer_json("/inbound", &json!({ "token": token }));
    hooks.answer("/inbound", Answer::Late(1500));
    let sip = RawSip::new(&g);
    let invite = sip
        .invite("late-1", "late1", "x", 40000)
        .replace("User-To-User: x;encoding=jwt\r\n", "");
    assert!(!invite.contains("User-To-User"), "{invite}");
    sip.send(&invite);
    hooks
        .wait_for(Duration::from_secs(5), "the application asked", |hits| {
            hits.iter().any(|h| h.path == "/inbound")
        })
        .await;
    let port = sip.port();
    sip.send(&format!(
        "CANCEL sip:127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKlate1\r\n\
         From: <sip:raw@127.0.0.1:{port}>;tag=raw1\r\nTo: <sip:127.0.0.1:{sip_port}>\r\nCall-ID: late-1\r\n\
         CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        sip_port = g.sip_port
    ));
    let first = sip.final_response();
    let second = sip.final_response();
    let both = format!("{first}\n{second}");
    assert!(
        both.contains("SIP/2.0 487") && both.contains("CSeq: 1 CANCEL"),
        "{both}"
    );
    // The application answers after the caller left: no call, no leg in the session.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !g.log().contains("call ended while it waited") {
        assert!(std::time::Instant::now() < deadline, "{}", g.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 0.0);
    assert_eq!(g.metric("patchbay_sip_calls_accepted_total").await, 0.0);
}

/// `[sip_inbound_numbers]`: a call to a number in the static map joins its participant
/// without asking the application; a number not in it is still the application's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_in_the_static_map_reaches_its_participant_without_asking_the_application() {
    let hooks = Receiver::start().await;
    let setup = tempfile::tempdir().expect("tempdir");
    let cfg = setup.path().join("patchbay.toml");
    let base = format!(
        "sip_inbound_url = \"{}\"\nwebhook_allow = \"127.0.0.1\"\n",
        hooks.url("/inbound")
    );
    std::fs::write(&cfg, &base).expect("write config");
    let mut g = Gateway::start_with(&["--config", cfg.to_str().expect("path")], &[]).await;
    // The participant exists first (the map names it by id), then the map is configured.
    let api = g.api();
    let (s, mapped, _) = api.audio_member().await;
    let (other_p, other_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &other_p, Some(json!({"sessionId": s}))).await;
    std::fs::write(
        &cfg,
        format!("{base}\n[sip_inbound_numbers]\n\"1001\" = \"{mapped}\"\n"),
    )
    .expect("write config");
    g.restart().await;
    hooks.answer("/inbound", Answer::Status(404));

    let dir = g.scratch().to_path_buf();
    let other = SippCall::tone("other", &dir, 660, Law::Ulaw, 5000).token(&other_token);
    let caller = extension_call("to1001", &dir, "1001", 440, 3500);
    let capture = Capture::start(&dir, &[caller.media_port, other.media_port]);
    let other_run = other.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let caller_run = caller.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let until = now_epoch();
    caller_run.assert_ok(Duration::from_secs(20));
    other_run.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();
    let asked = |h: &Receiver| h.hits().iter().filter(|h| h.path == "/inbound").count();
    assert_eq!(asked(&hooks), 0, "the application was asked");
    assert!(
        g.log().contains(&format!("participant_id={mapped}")),
        "{}",
        g.log()
    );
    assert_settles(
        &packets,
        "the caller",
        caller.media_port,
        Law::Ulaw,
        joined + 0.5,
        until,
        &[660],
    );
    assert_settles(
        &packets,
        "the member",
        other.media_port,
        Law::Ulaw,
        joined + 0.5,
        until,
        &[440],
    );

    // Another number: the application is asked (and refuses: 403).
    SippCall::new("to1002", "uac_expect.xml")
        .var("UUI", "X-Nothing: here")
        .var("PT", "0")
        .var("RTPMAP", "PCMU/8000")
        .var("CODE", "403")
        .spawn(&g, &dir)
        .assert_ok(Duration::from_secs(15));
    assert_eq!(asked(&hooks), 1);
}
