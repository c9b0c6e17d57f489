//! The SIP gateway with real sipp callers and real RTP: what each caller
//! actually hears (captured on loopback, tones detected with Goertzel).

use std::time::Duration;

use patchbay_tests::media::{
    decode_window, now_epoch, received, tones_present, write_tone_wav, Capture, Law, RtpPacket,
};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{Api, Gateway};
use reqwest::Method;
use serde_json::json;

use patchbay_tests::hearing::{assert_hears, assert_settles, heard_windows, FREQS};

async fn audio_participant(api: &Api) -> (String, String) {
    api.participant(json!({"publishPermissions": ["AUDIO"]}))
        .await
}

/// A caller playing `hz` for `hold_ms`, then hanging up.
fn tone_call(
    name: &str,
    dir: &std::path::Path,
    hz: u32,
    law: Law,
    hold_ms: u32,
    token: &str,
) -> SippCall {
    SippCall::tone(name, dir, hz, law, hold_ms).token(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_callers_hear_exactly_their_subscriptions_changed_live() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (a, ta) = audio_participant(&api).await; // the agent
    let (b, tb) = audio_participant(&api).await; // the caller
    let (c, tc) = audio_participant(&api).await; // the manager
    for p in [&a, &b, &c] {
        api.add(&s, p, Some(json!({"sessionId": s}))).await;
    }
    let dir = g.scratch().to_path_buf();
    let call_a = tone_call("a", &dir, 440, Law::Ulaw, 7000, &ta);
    let call_b = tone_call("b", &dir, 660, Law::Ulaw, 7000, &tb);
    let call_c = tone_call("c", &dir, 880, Law::Ulaw, 7000, &tc);
    let capture = Capture::start(
        &dir,
        &[call_a.media_port, call_b.media_port, call_c.media_port],
    );
    let (ra, rb, rc) = (
        call_a.spawn(&g, &dir),
        call_b.spawn(&g, &dir),
        call_c.spawn(&g, &dir),
    );
    g.wait_metric("patchbay_sip_calls_active", 3.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // The contact-centre whisper: C hears A and B, A hears B and C, B hears only A.
    let before_put = now_epoch();
    api.subscribe(&s, &b, json!({"participants": [{"participantId": a}]}))
        .await;
    let put = now_epoch();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let end = now_epoch();

    for r in [ra, rb, rc] {
        r.assert_ok(Duration::from_secs(20));
    }
    let packets = capture.stop();

    // Session level: each hears exactly the other two.
    let (p1_from, p1_to) = (joined + 0.6, before_put - 0.05);
    assert_settles(
        &packets,
        "A",
        call_a.media_port,
        Law::Ulaw,
        p1_from,
        p1_to,
        &[660, 880],
    );
    assert_settles(
        &packets,
        "B",
        call_b.media_port,
        Law::Ulaw,
        p1_from,
        p1_to,
        &[440, 880],
    );
    assert_settles(
        &packets,
        "C",
        call_c.media_port,
        Law::Ulaw,
        p1_from,
        p1_to,
        &[440, 660],
    );
    // After the PUT, from 100 ms on: B hears only A; the others are unchanged.
    let (p2_from, p2_to) = (put + 0.1, end - 0.1);
    assert_hears(
        &packets,
        "A",
        call_a.media_port,
        Law::Ulaw,
        p2_from,
        p2_to,
        &[660, 880],
    );
    assert_hears(
        &packets,
        "B",
        call_b.media_port,
        Law::Ulaw,
        p2_from,
        p2_to,
        &[440],
    );
    assert_hears(
        &packets,
        "C",
        call_c.media_port,
        Law::Ulaw,
        p2_from,
        p2_to,
        &[440, 660],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_and_pcma_callers_hear_each_other_over_udp_and_tcp() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (a, ta) = audio_participant(&api).await;
    let (b, tb) = audio_participant(&api).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    let call_a = tone_call("a", &dir, 440, Law::Ulaw, 3000, &ta);
    let call_b = tone_call("b", &dir, 880, Law::Alaw, 3000, &tb).tcp();
    let capture = Capture::start(&dir, &[call_a.media_port, call_b.media_port]);
    let (ra, rb) = (call_a.spawn(&g, &dir), call_b.spawn(&g, &dir));
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let until = now_epoch();
    ra.assert_ok(Duration::from_secs(15));
    rb.assert_ok(Duration::from_secs(15));
    let packets = capture.stop();
    assert_settles(
        &packets,
        "A (PCMU)",
        call_a.media_port,
        Law::Ulaw,
        joined + 0.6,
        until,
        &[880],
    );
    assert_settles(
        &packets,
        "B (PCMA, TCP)",
        call_b.media_port,
        Law::Alaw,
        joined + 0.6,
        until,
        &[440],
    );
    // Nothing but the negotiated payload types went to either.
    assert!(received(&packets, call_b.media_port)
        .iter()
        .all(|p| p.payload_type == 8));
}

#[tokio::test]
async fn refusals() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (member, member_token) = audio_participant(&api).await;
    api.add(&s, &member, None).await;
    let (video_only, video_token) = api
        .participant(json!({"publishPermissions": ["VIDEO"]}))
        .await;
    api.add(&s, &video_only, None).await;
    let (deleted, deleted_token) = audio_participant(&api).await;
    api.add(&s, &deleted, None).await;
    api.call(Method::DELETE, &format!("/participants/{deleted}"), None)
        .await;

    let dir = g.scratch().to_path_buf();
    let uui = |t: &str| format!("User-To-User: 93d6f3c0be58;encoding=base64,{t};encoding=jwt");
    let cases = [
        (
            "no-token",
            "X-Nothing: here".to_string(),
            "0",
            "PCMU/8000",
            "403",
        ),
        (
            "bad-token",
            uui("eyJhbGciOiJIUzI1NiJ9.e30.AAAA"),
            "0",
            "PCMU/8000",
            "403",
        ),
        ("revoked", uui(&deleted_token), "0", "PCMU/8000", "403"),
        (
            "no-audio-permission",
            uui(&video_token),
            "0",
            "PCMU/8000",
            "403",
        ),
        (
            "no-common-codec",
            uui(&member_token),
            "18",
            "G729/8000",
            "488",
        ),
    ];
    for (name, header, pt, rtpmap, code) in cases {
        SippCall::new(name, "uac_expect.xml")
            .var("UUI", header)
            .var("PT", pt)
            .var("RTPMAP", rtpmap)
            .var("CODE", code)
            .spawn(&g, &dir)
            .assert_ok(Duration::from_secs(15));
    }
    assert_eq!(g.metric("patchbay_sip_calls_rejected_total").await, 5.0);
    assert!(!g.log().contains(&member_token), "a token reached the log");
}

/// no RTP at all while held, and hears the talker again after resuming.
async fn hold_and_resume(direction: &str, answer: &str) {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, t) = audio_participant(&api).await;
    let (q, tq) = audio_participant(&api).await;
    api.add(&s, &p, Some(json!({"sessionId": s}))).await;
    api.add(&s, &q, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    let talker = tone_call("talker", &dir, 660, Law::Ulaw, 7000, &tq).spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    write_tone_wav(&dir.join("h.wav"), 440.0, 2, Law::Ulaw);
    let holder = SippCall::new("hold", "uac_hold.xml")
        .var("WAV", "h.wav")
        .var("HOLD_DIR", direction)
        .var("HELD", answer)
        .token(&t);
    let capture = Capture::start(&dir, &[holder.media_port]);
    holder.spawn(&g, &dir).assert_ok(Duration::from_secs(20));
    let packets = capture.stop();
    talker.assert_ok(Duration::from_secs(20));
    // The scenario: 1 s of call, 1 s held, 1 s resumed, BYE.
    let rx = received(&packets, holder.media_port);
    let (gap_start, gap_end) = rx
        .windows(2)
        .map(|w| (w[0].at, w[1].at))
        .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)))
        .expect("RTP reached the caller");
    let before = rx.iter().filter(|p| p.at <= gap_start).count();
    let after = rx.iter().filter(|p| p.at >= gap_end).count();
    assert!(
        gap_end - gap_start >= 0.8,
        "RTP kept flowing while held ({direction}): longest gap {:.3} s",
        gap_end - gap_start
    );
    assert!(before >= 30, "{before} packets before the hold");
    assert!(after >= 30, "{after} packets after the resume");
    let resumed = decode_window(&rx, Law::Ulaw, gap_end + 0.2, gap_end + 0.8);
    let (tones, _) = tones_present(&resumed, &FREQS, 8000.0);
    assert_eq!(
        tones,
        vec![660],
        "the talker is heard again after the resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_with_sendonly_stops_our_media_until_the_resume() {
    hold_and_resume("sendonly", "recvonly").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_with_inactive_stops_our_media_until_the_resume() {
    hold_and_resume("inactive", "inactive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_reaches_the_other_callers_as_rfc4733() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (a, ta) = audio_participant(&api).await;
    let (b, tb) = audio_participant(&api).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    let listener = tone_call("listener", &dir, 440, Law::Ulaw, 3000, &tb);
    let presser = patchbay_tests::sipp::presser(&dir, &ta, 800, 1200);
    let capture = Capture::start(&dir, &[listener.media_port]);
    let (rl, rp) = (listener.spawn(&g, &dir), presser.spawn(&g, &dir));
    rp.assert_ok(Duration::from_secs(15));
    rl.assert_ok(Duration::from_secs(15));
    let packets = capture.stop();
    let events: Vec<&RtpPacket> = received(&packets, listener.media_port)
        .into_iter()
        .filter(|p| p.payload_type == 101)
        .collect();
    assert!(
        !events.is_empty(),
        "no telephone-event reached the listener"
    );
    assert!(
        events
            .iter()
            .all(|p| p.payload.len() == 4 && p.payload[0] == 1),
        "not digit 1"
    );
    assert!(
        events[0].marker,
        "the first packet of an event carries the marker"
    );
    assert!(
        events.iter().any(|p| p.payload[1] & 0x80 != 0),
        "no end-of-event packet"
    );
    // One event: every packet shares the event's timestamp.
    assert!(events.iter().all(|p| p.timestamp == events[0].timestamp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_reports_and_rtp_injection_is_ignored() {
    let g = Gateway::start_with(&["--rtp-ports", "31400-31403"], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let (a, ta) = audio_participant(&api).await;
    let (b, tb) = audio_participant(&api).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    let call = tone_call("talker", &dir, 440, Law::Ulaw, 6500, &ta);
    // A second caller listens: what it hears shows whether injected audio got in.
    let listener = tone_call("listener", &dir, 880, Law::Ulaw, 6000, &tb);
    let capture = Capture::start(&dir, &[call.media_port + 1, listener.media_port]);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let listening = listener.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    // Let the caller's own RTP start (it is the latched source), then inject a 660 Hz
    // tone at both legs (ports are drawn at random from the range) from another socket.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let attacker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let injected_from = now_epoch();
    for seq in 0..20u16 {
        let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        pkt[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        pkt.extend((0..160).map(|i| {
            let t = f64::from(u32::from(seq) * 160 + i) / 8000.0;
            patchbay_tests::media::ulaw_encode(
                (8000.0 * (2.0 * std::f64::consts::PI * 660.0 * t).sin()) as i16,
            )
        }));
        attacker.send_to(&pkt, "127.0.0.1:31400").unwrap();
        attacker.send_to(&pkt, "127.0.0.1:31402").unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let injected_to = now_epoch();
    listening.assert_ok(Duration::from_secs(20));
    running.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();
    let injected = g.metric("patchbay_rtp_unknown_source_total").await;
    assert_eq!(injected, 40.0, "injected packets counted as unknown source");
    let reports: Vec<&RtpPacket> = packets
        .iter()
        .filter(|p| p.dst_port == call.media_port + 1)
        .collect();
    assert!(
        !reports.is_empty(),
        "no RTCP report reached the caller's RTCP port"
    );
    assert!(
        reports
            .iter()
            .all(|p| p.second_byte == 200 || p.second_byte == 201),
        "not an SR/RR"
    );
    assert!(g.metric("patchbay_rtcp_sent_total").await >= 1.0);
    // The listener heard the talker throughout, and never the injected tone.
    let windows = heard_windows(
        &packets,
        listener.media_port,
        Law::Ulaw,
        injected_from - 0.5,
        injected_to + 0.6,
    );
    assert!(windows.len() >= 10, "{windows:?}");
    assert!(
        windows.iter().all(|(_, tones, _)| !tones.contains(&660)),
        "injected audio reached the listener: {windows:?}"
    );
    assert!(
        windows
            .iter()
            .filter(|(_, tones, _)| tones == &[440])
            .count()
            >= windows.len() - 2,
        "the talker was not heard: {windows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_offer_caller_is_heard() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (a, ta) = audio_participant(&api).await;
    let (b, tb) = audio_participant(&api).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    write_tone_wav(&dir.join("late.wav"), 440.0, 2, Law::Ulaw);
    let late = SippCall::new("late", "uac_late_offer.xml")
        .var("WAV", "late.wav")
        .var("HOLD_MS", "3000")
        .token(&ta);
    let listener = tone_call("listener", &dir, 660, Law::Ulaw, 3000, &tb);
    let capture = Capture::start(&dir, &[listener.media_port]);
    let (rl, rlate) = (listener.spawn(&g, &dir), late.spawn(&g, &dir));
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let until = now_epoch();
    rlate.assert_ok(Duration::from_secs(15));
    rl.assert_ok(Duration::from_secs(15));
    assert_settles(
        &capture.stop(),
        "listener",
        listener.media_port,
        Law::Ulaw,
        joined + 0.6,
        until,
        &[440],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_pcma_and_g722_callers_in_one_session() {
    use patchbay_tests::media::{g722, write_rtp_pcap};
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let mut parties = Vec::new();
    for _ in 0..3 {
        let (p, t) = audio_participant(&api).await;
        api.add(&s, &p, Some(json!({"sessionId": s}))).await;
        parties.push(t);
    }
    let dir = g.scratch().to_path_buf();
    // C speaks G.722: 4 s of 880 Hz at 16 kHz, encoded by spandsp, 160 bytes per 20 ms packet.
    let pcm: Vec<i16> = (0..64000)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 880.0 * i as f64 / 16000.0).sin()) as i16)
        .collect();
    let coded = g722::encode(&pcm);
    let packets: Vec<Vec<u8>> = coded.chunks(160).map(<[u8]>::to_vec).collect();
    write_rtp_pcap(&dir.join("g722.pcap"), &packets, 9, 160, 20);

    let call_a = tone_call("a", &dir, 440, Law::Ulaw, 4500, &parties[0]);
    let call_b = tone_call("b", &dir, 660, Law::Alaw, 4500, &parties[1]);
    let call_c = SippCall::new("c", "uac_pcap.xml")
        .var("PCAP", "g722.pcap")
        .var("PT", "9")
        .var("RTPMAP", "G722/8000")
        .var("HOLD_MS", "4500")
        .token(&parties[2]);
    let capture = Capture::start(
        &dir,
        &[call_a.media_port, call_b.media_port, call_c.media_port],
    );
    let running = [
        call_a.spawn(&g, &dir),
        call_b.spawn(&g, &dir),
        call_c.spawn(&g, &dir),
    ];
    g.wait_metric("patchbay_sip_calls_active", 3.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let until = now_epoch();
    for r in running {
        r.assert_ok(Duration::from_secs(15));
    }
    let packets = capture.stop();
    assert_settles(
        &packets,
        "A (PCMU)",
        call_a.media_port,
        Law::Ulaw,
        joined + 0.6,
        until,
        &[660, 880],
    );
    assert_settles(
        &packets,
        "B (PCMA)",
        call_b.media_port,
        Law::Alaw,
        joined + 0.6,
        until,
        &[440, 880],
    );
    // C receives G.722 only; decode it with spandsp and look at 16 kHz.
    let rx: Vec<&RtpPacket> = received(&packets, call_c.media_port)
        .into_iter()
        .filter(|p| p.at >= joined + 0.6 && p.at < until)
        .collect();
    assert!(rx.len() > 80, "C received {} packets", rx.len());
    assert!(rx
        .iter()
        .all(|p| p.payload_type == 9 && p.payload.len() == 160));
    let stream: Vec<u8> = rx.iter().flat_map(|p| p.payload.iter().copied()).collect();
    let heard = g722::decode(&stream);
    let windows: Vec<(Vec<u32>, f64)> = heard
        .chunks(1600)
        .filter(|w| w.len() == 1600)
        .map(|w| tones_present(w, &FREQS, 16000.0))
        .collect();
    let first = windows
        .iter()
        .position(|(tones, _)| tones == &vec![440, 660])
        .filter(|&i| i < 15)
        .unwrap_or_else(|| {
            panic!("C (G.722) never heard [440, 660] in the first 1.5 s: {windows:?}")
        });
    for (i, (tones, rms)) in windows.iter().enumerate().skip(first) {
        assert_eq!(
            tones,
            &vec![440, 660],
            "C (G.722) heard {tones:?} (rms {rms:.0}) in window {i}: {windows:?}"
        );
        assert!(*rms > 1000.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_level_subscriptions_name_the_configured_sip_alias() {
    let g = Gateway::start_with(&["--sip-stream-alias", "pstn"], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let (a, ta) = audio_participant(&api).await;
    let (b, tb) = audio_participant(&api).await;
    api.add(&s, &a, Some(json!({"sessionId": s}))).await;
    api.add(
        &s,
        &b,
        Some(json!({"participants": [{"participantId": a, "streamAliases": ["pstn"]}]})),
    )
    .await;
    let dir = g.scratch().to_path_buf();
    let call_a = tone_call("a", &dir, 440, Law::Ulaw, 5000, &ta);
    let call_b = tone_call("b", &dir, 660, Law::Ulaw, 5000, &tb);
    let capture = Capture::start(&dir, &[call_b.media_port]);
    let running = [call_a.spawn(&g, &dir), call_b.spawn(&g, &dir)];
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Another alias: B no longer hears A's stream.
    api.subscribe(
        &s,
        &b,
        json!({"participants": [{"participantId": a, "streamAliases": ["phone"]}]}),
    )
    .await;
    let put = now_epoch();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let end = now_epoch();
    for r in running {
        r.assert_ok(Duration::from_secs(15));
    }
    let packets = capture.stop();
    assert_settles(
        &packets,
        "B (alias pstn)",
        call_b.media_port,
        Law::Ulaw,
        joined + 0.6,
        put - 0.05,
        &[440],
    );
    let after = heard_windows(&packets, call_b.media_port, Law::Ulaw, put + 0.1, end - 0.1);
    assert!(
        after.len() >= 8,
        "B got too little audio after the change: {after:?}"
    );
    for (t, tones, rms) in &after {
        assert!(
            tones.is_empty() && *rms < 100.0,
            "B at +{:.2}s still hears {tones:?} (rms {rms:.0})",
            t - put
        );
    }
}
