//! Carrier-style paths with independent peers: baresip (a real softphone) calling
//! through Kamailio (a record-routing proxy that adds the token as `User-To-User`,
//! the way a carrier transfer does), next to a sipp caller in the same session.
//! Checked: audio both ways by tone, DTMF from Opus with `telephone-event/8000`
//! reaching the other caller as RFC 4733, ACK and BYE (both directions) through the
//! proxy, G.722, and TLS with SRTP end to end.

use std::time::Duration;

use patchbay_tests::baresip::Baresip;
use patchbay_tests::hearing::tones_mostly;
use patchbay_tests::kamailio::Kamailio;
use patchbay_tests::media::{decode_window, now_epoch, received, tones_present, Capture, Law};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::stunnel::tls_file;
use patchbay_tests::{free_port, Api, Gateway};
use reqwest::Method;
use serde_json::json;

/// A session with two audio participants: (session, softphone's id and token, sipp's token).
async fn session(api: &Api) -> (String, String, String, String) {
    let s = api.session(None).await;
    let (a, a_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    let (b, b_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    (s, a, a_token, b_token)
}

/// Kamailio relaying to the gateway over UDP with `token`, and a softphone playing
/// 440 Hz with `codecs` calling through it, up once the gateway counts `calls`.
async fn softphone_through_proxy(
    g: &Gateway,
    dir: &std::path::Path,
    token: &str,
    codecs: &str,
    calls: f64,
) -> (Kamailio, Baresip) {
    let proxy = Kamailio::start(dir, &format!("sip:127.0.0.1:{}", g.sip_port), token, false);
    let mut phone = Baresip::new(dir, "softphone", 440.0, codecs);
    phone.dial(&format!("sip:+15551230000@127.0.0.1:{}", proxy.port));
    wait_calls(g, calls, &phone, &proxy).await;
    (proxy, phone)
}

/// Wait for `n` SIP calls up; on a timeout, show what the softphone and the proxy saw.
async fn wait_calls(g: &Gateway, n: f64, phone: &Baresip, proxy: &Kamailio) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while g.metric("patchbay_sip_calls_active").await != n {
        assert!(
            std::time::Instant::now() < deadline,
            "calls never reached {n}\n--- baresip:\n{}\n--- kamailio:\n{}\n--- gateway:\n{}",
            phone.log(),
            proxy.log(),
            g.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tones in what baresip heard over the two seconds before its last half second
/// (after the call settled: under load its first moments may be silent).
fn softphone_heard(phone: &Baresip) -> Vec<u32> {
    let (pcm, rate) = phone.heard();
    assert!(
        pcm.len() as f64 >= rate * 3.0,
        "baresip heard only {} samples",
        pcm.len()
    );
    let to = pcm.len() - (rate * 0.5) as usize;
    let from = to - (rate * 2.0) as usize;
    let (tones, rms) = tones_mostly(&pcm[from..to], &[440.0, 660.0], rate);
    assert!(rms > 300.0, "baresip heard silence (rms {rms:.0})");
    tones
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_softphone_through_kamailio_with_opus_and_dtmf() {
    let g = Gateway::start().await;
    let api = g.api();
    let (_s, _a, a_token, b_token) = session(&api).await;
    let dir = g.scratch().to_path_buf();
    // The other member: sipp, PCMU with telephone-event, playing 660 Hz.
    let other = SippCall::tone("other", &dir, 660, Law::Ulaw, 14000).token(&b_token);
    let capture = Capture::start(&dir, &[other.media_port]);
    let other_call = other.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let (proxy, mut phone) = softphone_through_proxy(&g, &dir, &a_token, "opus/48000/2", 2.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let until = now_epoch();
    let r = phone.command("sndcode", "5");
    assert!(r.contains("\"ok\":true"), "{r}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = phone.command("hangup", "");
    assert!(r.contains("\"ok\":true"), "{r}");
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    phone.stop();
    drop(other_call);
    let packets = capture.stop();

    assert!(g.log().contains("codec=Some(Opus)"), "{}", g.log());
    // The proxy carried the call: INVITE, its ACK and the softphone's BYE (loose routes).
    let relayed = proxy.relayed();
    for needle in ["RELAY-NEW INVITE", "RELAY-ROUTED ACK", "RELAY-ROUTED BYE"] {
        assert!(
            relayed.iter().any(|l| l.starts_with(needle)),
            "{needle} missing: {relayed:#?}"
        );
    }
    // Both ways: the sipp caller heard the softphone, the softphone heard the sipp caller.
    let near = received(&packets, other.media_port);
    let pcm = decode_window(&near, Law::Ulaw, until - 2.5, until);
    let (tones, rms) = tones_mostly(&pcm, &[440.0, 660.0], 8000.0);
    assert_eq!(tones, [440], "sipp heard {tones:?} (rms {rms:.0})");
    assert_eq!(softphone_heard(&phone), [660]);
    // The DTMF the softphone sent (Opus + telephone-event/8000) reached sipp as RFC 4733.
    let events: Vec<u8> = near
        .iter()
        .filter(|p| p.payload_type == 101)
        .filter_map(|p| p.payload.first().copied())
        .collect();
    assert!(!events.is_empty(), "no RFC 4733 packet reached sipp");
    assert!(events.iter().all(|e| *e == 5), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_bye_goes_through_kamailio_on_a_g722_call() {
    let g = Gateway::start().await;
    let api = g.api();
    let (_, a, a_token, b_token) = session(&api).await;
    let dir = g.scratch().to_path_buf();
    let other = SippCall::tone("other", &dir, 660, Law::Ulaw, 14000).token(&b_token);
    let other_call = other.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let (proxy, mut phone) = softphone_through_proxy(&g, &dir, &a_token, "G722/16000/1", 2.0).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Deleting the softphone's participant: the gateway hangs up, through the proxy.
    let r = api
        .call(Method::DELETE, &format!("/participants/{a}"), None)
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    phone.wait_log("session closed", Duration::from_secs(10));
    phone.stop();
    drop(other_call);

    assert!(g.log().contains("codec=Some(G722)"), "{}", g.log());
    let from_gateway = format!("RELAY-IN BYE from 127.0.0.1:{}", g.sip_port);
    let relayed = proxy.relayed();
    assert!(
        relayed.iter().any(|l| l.starts_with(&from_gateway)),
        "the gateway's BYE did not go through the proxy: {relayed:#?}"
    );
    assert!(
        relayed.iter().any(|l| l.starts_with("RELAY-ROUTED ACK")),
        "{relayed:#?}"
    );
    assert_eq!(softphone_heard(&phone), [660]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_and_srtp_call_through_kamailio() {
    let tls_port = free_port();
    let g = Gateway::start_with(
        &[
            "--sip-tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--sip-tls-cert",
            &tls_file("server.pem").display().to_string(),
            "--sip-tls-key",
            &tls_file("server.key").display().to_string(),
        ],
        &[("PATCHBAY_LOG", "info,patchbay_sip=debug")],
    )
    .await;
    let api = g.api();
    let (_s, _a, a_token, b_token) = session(&api).await;
    let dir = g.scratch().to_path_buf();
    let other = SippCall::tone("other", &dir, 660, Law::Ulaw, 14000).token(&b_token);
    let proxy = Kamailio::start(
        &dir,
        &format!("sip:127.0.0.1:{tls_port};transport=tls"),
        &a_token,
        true,
    );
    let mut phone = Baresip::new(&dir, "softphone", 440.0, "PCMU/8000/1")
        .uri_params(";transport=tls")
        .params(";mediaenc=srtp-mand");
    let (r0, r1) = phone.rtp_ports;
    let mut ports: Vec<u16> = (r0..=r1).collect();
    ports.push(other.media_port);
    let capture = Capture::start(&dir, &ports);
    let other_call = other.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let tls = proxy.tls_port.expect("TLS");
    // The account's `transport=tls` goes onto the dialled URI.
    phone.dial(&format!("sip:+15551230000@127.0.0.1:{tls}"));
    wait_calls(&g, 2.0, &phone, &proxy).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let until = now_epoch();
    let during_call = g.log().lines().count();
    phone.command("hangup", "");
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    phone.stop();
    drop(other_call);
    let packets = capture.stop();

    let relayed = proxy.relayed();
    assert!(
        relayed
            .iter()
            .any(|l| l.starts_with("RELAY-IN INVITE") && l.ends_with("proto tls")),
        "{relayed:#?}"
    );
    // Decrypted at both ends: each hears the other.
    assert_eq!(softphone_heard(&phone), [660]);
    let near = received(&packets, other.media_port);
    let pcm = decode_window(&near, Law::Ulaw, until - 2.5, until);
    let (tones, _) = tones_mostly(&pcm, &[440.0, 660.0], 8000.0);
    assert_eq!(tones, [440], "sipp heard {tones:?}");
    // On the wire to the softphone: SRTP, not the 660 Hz a plain PCMU stream would carry.
    let to_phone: Vec<_> = packets
        .iter()
        .filter(|p| (r0..=r1).contains(&p.dst_port) && p.payload_type == 0)
        .collect();
    assert!(
        to_phone.len() > 100,
        "{} packets to the softphone",
        to_phone.len()
    );
    let wire = decode_window(&to_phone, Law::Ulaw, until - 2.5, until);
    let (tones, _) = tones_present(&wire, &[440.0, 660.0], 8000.0);
    assert!(tones.is_empty(), "plain audio on the wire: {tones:?}");
    // Nothing the softphone sent during the call failed its check (its 16-byte packets
    // on the RTCP port are too short to be SRTCP and count as malformed; stray packets
    // from other tests' calls to a reused RTP port are refused and counted, as they
    // should be). At hangup baresip sends its RTCP BYE ("Adjo") in the clear, seen on
    // the wire as `81 cb 00 03 …`; when it beats the SIP BYE the gateway refuses it, as
    // it must, so the check stops at the hangup.
    let from_phone: Vec<String> = g
        .log()
        .lines()
        .take(during_call)
        .filter(|l| l.contains("SRTP refused") || l.contains("SRTCP refused"))
        .filter(|l| !l.contains("error=too short"))
        .filter(|l| (r0..=r1).any(|p| l.contains(&format!("from=127.0.0.1:{p} "))))
        .map(str::to_string)
        .collect();
    assert!(from_phone.is_empty(), "{from_phone:#?}");
}
