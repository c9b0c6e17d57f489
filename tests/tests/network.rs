//! On a real network: a cloud VM behind 1:1 NAT (its public address is not on an
//! interface: `public_ip` is advertised while every socket binds the wildcard) and
//! HTTPS/WSS on the HTTP listener, which browsers need for a microphone on any origin
//! but localhost.

use std::time::Duration;

use patchbay_tests::browser::{assert_one_stream_heard, drive};
use patchbay_tests::hearing::assert_settles;
use patchbay_tests::media::{now_epoch, Capture, Law};
use patchbay_tests::nat::Nat;
use patchbay_tests::native::NativeClient;
use patchbay_tests::rawsip::RawSip;
use patchbay_tests::sipp::SippCall;
use patchbay_tests::ws::{connect, next};
use patchbay_tests::Gateway;
use reqwest::Method;
use serde_json::{json, Value};

/// The SDP of a SIP message (after the blank line).
fn body(message: &str) -> &str {
    message.split("\r\n\r\n").nth(1).unwrap_or_default()
}

/// Behind 1:1 NAT (public address 127.0.0.2, DNATed by nftables to the host's 127.0.0.1,
/// replies rewritten back by conntrack; the gateway binds 127.0.0.1 and advertises
/// 127.0.0.2, as on EC2 with its private address): a caller's
/// 200 OK, our Contact and Via, a device's offer and the answer to an independent
/// client's publish carry only the public address, and media sent to it flows (two sipp
/// callers hear each other through it, the client's connection comes up and hears them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_1_to_1_nat_only_the_public_address_is_advertised_and_media_flows() {
    let rtp = patchbay_tests::sipp::free_udp_ports(40);
    let rtp_range = format!("{rtp}-{}", rtp + 39);
    let g = Gateway::start_behind_nat(
        "127.0.0.2",
        &["--operator", "ops:ops-secret", "--rtp-ports", &rtp_range],
    )
    .await;
    // The NAT in front: the public address's UDP (SIP, RTP, WebRTC) to the host's.
    let _nat = Nat::one_to_one(
        "127.0.0.2",
        "127.0.0.1",
        &[
            g.sip_port.to_string(),
            rtp_range.clone(),
            g.webrtc_port.to_string(),
        ],
    );
    let api = g.api();
    let (s, p, token) = api.audio_member().await;

    // A raw call: its 200 OK.
    let sip = RawSip::new(&g);
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let media_port = media.local_addr().unwrap().port();
    sip.send(&sip.invite("nat-1", "nat1", &token, media_port));
    let ok = sip.final_response();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let contact = ok
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("contact:"))
        .unwrap_or_default();
    assert!(
        contact.contains(&format!("@127.0.0.2:{}", g.sip_port)),
        "{contact}"
    );
    let sdp = body(&ok);
    assert!(sdp.contains("c=IN IP4 127.0.0.2\r\n"), "{sdp}");
    assert!(
        !sdp.contains("127.0.0.1") && !sdp.contains("0.0.0.0"),
        "only the public address: {sdp}"
    );
    let tag = RawSip::to_tag(&ok);
    sip.send(&sip.in_dialog("ACK", 1, "nat-1", &tag, "nat1ack"));
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // Two callers hear each other through the public address (their RTP goes to it).
    let (q, tq) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    let (r, tr) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(
        &s,
        &q,
        Some(json!({"participants": [{"participantId": r}]})),
    )
    .await;
    api.add(
        &s,
        &r,
        Some(json!({"participants": [{"participantId": q}]})),
    )
    .await;
    let dir = g.scratch().to_path_buf();
    let call_q = SippCall::tone("q", &dir, 440, Law::Ulaw, 15000).token(&tq);
    let call_r = SippCall::tone("r", &dir, 880, Law::Ulaw, 15000).token(&tr);
    let capture = Capture::start(&dir, &[call_q.media_port, call_r.media_port]);
    let (rq, rr) = (call_q.spawn(&g, &dir), call_r.spawn(&g, &dir));
    g.wait_metric("patchbay_sip_calls_active", 3.0).await;
    let joined = now_epoch();

    // A device is offered the callers' streams with the public address as its candidate.
    let device_token = token_of(&api, &s).await;
    let mut ws = connect(&g, &device_token, "nat-dev").await;
    let offer: Value = serde_json::from_str(&next(&mut ws).await.expect("an sdpOffer")).unwrap();
    let offer_sdp = offer["params"]["sdpOffer"].as_str().unwrap_or_default();
    let candidates: Vec<&str> = offer_sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert!(!candidates.is_empty(), "{offer_sdp}");
    assert!(
        candidates
            .iter()
            .all(|c| c.contains(&format!(" 127.0.0.2 {} ", g.webrtc_port))),
        "{candidates:?}"
    );
    assert!(!offer_sdp.contains("127.0.0.1"), "{offer_sdp}");

    // An independent client (aiortc) publishes: our answer names only the public
    // address, its connection comes up through it and it hears the callers.
    let (native_id, native_token) = api.participant(json!({})).await;
    api.add(
        &s,
        &native_id,
        Some(json!({"participants": [{"participantId": q}]})),
    )
    .await;
    let native = NativeClient::start(&g, &native_token, "nat-native", 8);
    native
        .wait_until(Duration::from_secs(10), "the client's answer", |v| {
            v.get("answer").is_some()
        })
        .await;
    let answer = native
        .lines()
        .into_iter()
        .find_map(|v| v.get("answer").cloned())
        .unwrap_or_default();
    let answer: Vec<&str> = answer
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Its candidates name the public address; `c=` is WebRTC's placeholder 0.0.0.0.
    let candidates: Vec<&&str> = answer
        .iter()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert!(!candidates.is_empty(), "{answer:?}");
    assert!(
        candidates
            .iter()
            .all(|l| l.contains(&format!(" 127.0.0.2 {} ", g.webrtc_port))),
        "{answer:?}"
    );
    assert!(
        answer.iter().all(|l| !l.contains("127.0.0.1")),
        "{answer:?}"
    );
    native
        .wait_until(
            Duration::from_secs(10),
            "it connects and hears the callers",
            |v| v["publishing"] == "connected" && v["frames"].as_u64().unwrap_or(0) > 50,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = now_epoch();
    rq.assert_ok(Duration::from_secs(15));
    rr.assert_ok(Duration::from_secs(15));
    let packets = capture.stop();
    assert_settles(
        &packets,
        "q",
        call_q.media_port,
        Law::Ulaw,
        joined + 0.5,
        end - 0.3,
        &[880],
    );
    assert_settles(
        &packets,
        "r",
        call_r.media_port,
        Law::Ulaw,
        joined + 0.5,
        end - 0.3,
        &[440],
    );

    // Our own requests carry it too: the BYE's Via.
    api.call(Method::DELETE, &format!("/participants/{p}"), None)
        .await;
    let bye = sip.request("BYE");
    let via = bye
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("via:"))
        .unwrap_or_default();
    assert!(via.contains(&format!("127.0.0.2:{}", g.sip_port)), "{via}");

    // What the node advertises (the console's BXML uses its SIP URI).
    let nodes: Value = g
        .client()
        .get(format!("{}/v1/cluster", g.base()))
        .basic_auth("ops", Some("ops-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me = &nodes["nodes"][0];
    assert_eq!(
        me["sipUri"],
        format!("sip:127.0.0.2:{}", g.sip_port),
        "{nodes}"
    );
    assert_eq!(
        me["webrtcAddress"],
        format!("127.0.0.2:{}", g.webrtc_port),
        "{nodes}"
    );
    let ops = api.call(Method::GET, "/ops", None).await;
    assert_eq!(
        ops.body["nodes"][0]["sipUri"],
        format!("sip:127.0.0.2:{}", g.sip_port),
        "{}",
        ops.text
    );
}

/// A browser member's token in session `s` (a participant added with a session-level
/// subscription).
async fn token_of(api: &patchbay_tests::Api, s: &str) -> String {
    let (p, token) = api.participant(json!({})).await;
    api.add(s, &p, Some(json!({"sessionId": s}))).await;
    token
}

/// HTTPS and WSS: the unmodified SDK in Chromium (which trusts the test CA, as a user
/// who installed it) connects over `wss://`, publishes and hears a caller; a bad token
/// is refused over WSS with 4401; a plain-HTTP client gets no answer and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_sdk_connects_over_wss_and_a_bad_token_is_refused() {
    let g = Gateway::start_https(&[]).await;
    assert!(g.base().starts_with("https://"));
    let api = g.api();
    let s = api.session(None).await;
    let (phone, phone_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &phone, Some(json!({"sessionId": s}))).await;
    let token = token_of(&api, &s).await;
    let dir = g.scratch().to_path_buf();
    let caller = SippCall::tone("phone", &dir, 440, Law::Ulaw, 20000)
        .token(&phone_token)
        .spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let report = drive(
        &g,
        json!([
            {"token": token, "connectTimeoutMs": 8000, "publish": {"alias": "mic"},
             "steps": [{"wait": 2500}]},
            {"token": "eyJhbGciOiJIUzI1NiJ9.e30.AAAA", "connectTimeoutMs": 2500},
        ]),
    );
    drop(caller);
    let pages = report["pages"].as_array().unwrap();
    assert_eq!(pages[0]["outcome"], "connected", "{}", pages[0]);
    assert_eq!(pages[0]["final"]["closes"], json!([]), "{}", pages[0]);
    let urls = pages[0]["final"]["socketUrls"].as_array().unwrap();
    assert!(
        urls.iter()
            .all(|u| u.as_str().unwrap_or_default().starts_with("wss://")),
        "{urls:?}"
    );
    assert_one_stream_heard(&pages[0], &phone, 440.0);
    assert_eq!(pages[1]["outcome"], "timeout", "{}", pages[1]);
    let closes = pages[1]["closes"].as_array().unwrap();
    assert!(
        !closes.is_empty()
            && closes.iter().all(|c| c["code"] == 4401
                && c["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("invalid token")),
        "{}",
        pages[1]
    );
    // Plain HTTP on the HTTPS port: no answer, a failed handshake counted.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health", g.port))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    assert!(g.metric("patchbay_http_tls_handshake_failures_total").await >= 1.0);
}
