//! SIP over TCP and TLS with independent peers: dialogs through a sipp trunk over
//! TCP, and over TLS through stunnel in front of it; a sipp caller reaching the
//! gateway's TLS listener through stunnel; the certificate reloaded on SIGHUP; trunk
//! health by OPTIONS pings; SRTP required; the outbound proxy.

use std::time::Duration;

use patchbay_tests::dialing::{dial, dial_body, dialer, hang_up, wait_state};
use patchbay_tests::hooks::Receiver;
use patchbay_tests::sipp::{free_udp_ports, SippCall};
use patchbay_tests::stunnel::{tls_file, Stunnel};
use patchbay_tests::{free_port, Gateway};
use reqwest::StatusCode;

fn tls_args(port: u16) -> Vec<String> {
    vec![
        "--sip-tls-listen".into(),
        format!("127.0.0.1:{port}"),
        "--sip-tls-cert".into(),
        tls_file("server.pem").display().to_string(),
        "--sip-tls-key".into(),
        tls_file("server.key").display().to_string(),
    ]
}

/// Place a dialog through the gateway's trunk (served by `trunk`), check it is
/// answered, hang it up with DELETE and check the trunk got the BYE; the trunk's
/// message log.
async fn dial_through(trunk: &SippCall, g: &Gateway, hooks: &Receiver) -> String {
    let api = g.api();
    let s = api.session(None).await;
    let p = dialer(&api, &s, hooks, "cb").await;
    let dir = g.scratch().to_path_buf();
    patchbay_tests::media::write_tone_wav(
        &dir.join("tone660.wav"),
        660.0,
        2,
        patchbay_tests::media::Law::Ulaw,
    );
    let far_end = trunk.serve(&dir);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = dial(&api, &p, dial_body("+15551234567")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let d = r.body["dialogId"].as_str().unwrap().to_string();
    wait_state(hooks, "/cb/cb", "ANSWERED").await;
    hang_up(&api, &p, &d).await;
    let log = far_end.assert_ok(Duration::from_secs(10));
    wait_state(hooks, "/cb/cb", "TERMINATED").await;
    log
}

fn trunk() -> SippCall {
    SippCall::new("trunk", "uas_answer.xml")
        .var("RING_MS", "200")
        .var("HANGUP", "wait")
        .var("HOLD_MS", "0")
        .var("WAV", "tone660.wav")
        .var("CHECK_UUI", "false")
        .tcp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialog_over_a_tcp_trunk() {
    let trunk = trunk();
    let hooks = Receiver::start().await;
    let uri = trunk.trunk_uri();
    let g = Gateway::start_with(&["--sip-trunk", &uri], &[]).await;
    dial_through(&trunk, &g, &hooks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialog_over_a_tls_trunk() {
    let trunk = trunk();
    let hooks = Receiver::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let tls_port = free_port();
    let stunnel = Stunnel::server(scratch.path(), "trunk", tls_port, trunk.sip_port);
    let uri = format!("sips:127.0.0.1:{tls_port}");
    let ca = tls_file("ca.pem").display().to_string();
    let g = Gateway::start_with(&["--sip-trunk", &uri, "--sip-tls-ca", &ca], &[]).await;
    dial_through(&trunk, &g, &hooks).await;
    // The INVITE went over TLS: stunnel saw a TLS connection, and our Via said so.
    let log = stunnel.log();
    assert!(log.contains("accepted connection"), "{log}");
    assert!(
        g.log().contains("connecting to the next hop"),
        "{}",
        g.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_trunk_with_an_untrusted_certificate_fails_the_dialog() {
    let trunk = trunk();
    let hooks = Receiver::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let tls_port = free_port();
    let _stunnel = Stunnel::server(scratch.path(), "trunk", tls_port, trunk.sip_port);
    // Web PKI roots only: the test CA is not trusted.
    let uri = format!("sips:127.0.0.1:{tls_port}");
    let g = Gateway::start_with(&["--sip-trunk", &uri], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let p = dialer(&api, &s, &hooks, "cb").await;
    let r = dial(&api, &p, dial_body("+15551234567")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    wait_state(&hooks, "/cb/cb", "TERMINATED").await;
    let bodies = hooks.delivered("/cb/cb");
    let last = bodies.last().unwrap();
    assert_eq!(last["state"], "TERMINATED", "{last}");
    assert_eq!(last["eventData"]["reason"], "ERROR", "{last}");
    let details = last["eventData"]["details"].as_str().unwrap_or_default();
    assert!(
        details.starts_with("cannot reach the SIP trunk: TLS: invalid peer certificate"),
        "{last}"
    );
    assert!(g.metric("patchbay_sip_tls_handshake_failures_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tls_joins_and_the_certificate_reloads_on_sighup() {
    let tls_port = free_port();
    let args = tls_args(tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let g = Gateway::start_with(&args, &[]).await;
    let (_, _, token) = g.api().audio_member().await;
    let dir = g.scratch().to_path_buf();
    let plain = free_udp_ports(1);
    let _stunnel = Stunnel::client(&dir, "caller", plain, tls_port);
    let phone = SippCall::tone("phone", &dir, 440, patchbay_tests::media::Law::Ulaw, 1500)
        .token(&token)
        .tcp();
    let call = phone.spawn_to(&format!("127.0.0.1:{plain}"), &dir);
    let log = call.assert_ok(Duration::from_secs(20));
    // Our 200 told the caller to come back over TLS, to the TLS port.
    assert!(
        log.contains(&format!(":{tls_port};transport=tls>")),
        "Contact: {log}"
    );
    assert_eq!(g.metric("patchbay_sip_calls_accepted_total").await, 1.0);

    // SIGHUP reloads the certificate (a bad one would leave the old in use).
    let status = std::process::Command::new("kill")
        .args(["-HUP", &g.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    g.wait_metric("patchbay_sip_tls_reloads_total", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_pings_tell_whether_the_trunk_is_up() {
    let trunk = SippCall::new("trunk", "uas_options.xml").tcp();
    let scratch = tempfile::tempdir().unwrap();
    let far_end = trunk.serve(scratch.path());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uri = trunk.trunk_uri();
    let g = Gateway::start_with(
        &["--sip-trunk", &uri],
        &[("PATCHBAY_SIP_TRUNK_PING_INTERVAL", "1s")],
    )
    .await;
    g.wait_metric("patchbay_sip_trunk_up", 1.0).await;
    // The trunk answers one ping and goes away: its connection closes, it is down.
    far_end.assert_ok(Duration::from_secs(10));
    g.wait_metric("patchbay_sip_trunk_up", 0.0).await;
    assert!(g.metric("patchbay_sip_trunk_pings_total").await >= 1.0);
    let log = g.log();
    assert!(log.contains("SIP trunk is up"), "{log}");
    assert!(log.contains("SIP trunk is down"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_srtp_required_a_plain_rtp_offer_gets_488() {
    let g = Gateway::start_with(&["--sip-srtp", "require"], &[]).await;
    let (_, _, token) = g.api().audio_member().await;
    SippCall::new("plain", "uac_expect.xml")
        .var("UUI", format!("User-to-User: {token};encoding=jwt"))
        .var("PT", "0")
        .var("RTPMAP", "PCMU/8000")
        .var("CODE", "488")
        .spawn(&g, g.scratch())
        .assert_ok(Duration::from_secs(15));
    assert_eq!(g.metric("patchbay_sip_calls_rejected_total").await, 1.0);
    assert!(
        g.log().contains("plain RTP where SRTP is required"),
        "{}",
        g.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialogs_go_through_the_outbound_proxy_with_a_route() {
    // sipp plays the proxy (over TCP); the trunk behind it is never contacted directly.
    let proxy = trunk();
    let hooks = Receiver::start().await;
    let route = format!("sip:127.0.0.1:{};transport=tcp", proxy.sip_port);
    let g = Gateway::start_with(
        &[
            "--sip-trunk",
            "sip:127.0.0.2:5999",
            "--sip-outbound-proxy",
            &route,
        ],
        &[],
    )
    .await;
    let log = dial_through(&proxy, &g, &hooks).await;
    // The INVITE named the trunk and carried the proxy as a loose route.
    assert!(
        log.contains("INVITE sip:+15551234567@127.0.0.2:5999 SIP/2.0"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Route: <sip:127.0.0.1:{};transport=tcp;lr>",
            proxy.sip_port
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_without_a_tls_listener_is_harmless() {
    let g = Gateway::start().await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &g.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !g.log().contains("nothing to reload") {
        assert!(std::time::Instant::now() < deadline, "{}", g.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still serving.
    let (s, _, _) = g.api().audio_member().await;
    assert!(!s.is_empty());
}
