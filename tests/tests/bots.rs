//! Stream participants (voice bots) with real peers: a bot server speaking Twilio Media
//! Streams written from Twilio's published examples (`tests/python/bot.py`,
//! aiohttp), a sipp caller, and the gateway between them.

use std::time::{Duration, Instant};

use patchbay_tests::bots::{events, listener, member, Bot};
use patchbay_tests::hearing::{assert_hears, FREQS};
use patchbay_tests::hooks::Receiver;
use patchbay_tests::media::{now_epoch, tone_shares, Capture, Law};
use patchbay_tests::sipp::{free_udp_ports, presser, SippCall};
use patchbay_tests::Gateway;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_bot_hears_the_caller_and_the_caller_hears_the_bot_at_real_time() {
    let g = Gateway::start().await;
    let api = g.api();
    let dir = g.scratch().to_path_buf();
    let bot = Bot::start(&dir, &["--say", "880:2.0:m1", "--say", "880:1.0:m2"]);
    let s = api.session(None).await;
    let (caller, token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &caller, Some(json!({"sessionId": s}))).await;
    let r = api
        .call(
            Method::POST,
            "/participants",
            Some(json!({
                "publishPermissions": ["AUDIO"],
                "tag": "bot",
                "mediaStream": {"url": bot.url(), "protocol": "twilio",
                                "customParameters": {"lang": "en"},
                                "headers": {"Authorization": "Bearer s3cret"}},
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let stream = &r.body["participant"]["mediaStream"];
    assert_eq!(stream["protocol"], "twilio", "{}", r.text);
    assert_eq!(stream["sampleRate"], 8000, "{}", r.text);
    // The header's value is never shown again.
    assert_eq!(
        stream["headers"],
        json!({"Authorization": "(set)"}),
        "{}",
        r.text
    );
    assert!(!r.text.contains("s3cret"));
    let bot_id = r.body["participant"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    let call = SippCall::tone("caller", &dir, 440, Law::Ulaw, 8000).token(&token);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The bot joins: Patchbay connects to it and it starts speaking at once.
    let added = now_epoch();
    let added_at = Instant::now();
    api.add(&s, &bot_id, Some(json!({"sessionId": s}))).await;
    g.wait_metric("patchbay_streams_connected", 1.0).await;
    // The console's media view (taken once a second while nobody watches): the bot as
    // a bot, connected, with the rest of its 3 s of speech (sent faster than real time)
    // waiting to play.
    let until = Instant::now() + Duration::from_secs(5);
    let media = loop {
        let media = api
            .call(Method::GET, &format!("/sessions/{s}/media"), None)
            .await;
        let buffered = listener(&media.body, &bot_id)["stream"]["bufferedMs"].as_u64();
        if buffered.unwrap_or(0) > 0 || Instant::now() > until {
            break media;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let bot_view = listener(&media.body, &bot_id);
    assert_eq!(bot_view["origin"], "bot", "{}", media.text);
    assert_eq!(bot_view["stream"]["connected"], true, "{}", media.text);
    let buffered = bot_view["stream"]["bufferedMs"].as_u64().unwrap_or(0);
    assert!((100..=3000).contains(&buffered), "{}", media.text);
    let caller_view = listener(&media.body, &caller);
    assert_eq!(caller_view["origin"], "phone", "{}", media.text);
    assert!(caller_view.get("stream").is_none(), "{}", media.text);
    let ops = api.call(Method::GET, "/ops", None).await;
    assert_eq!(
        (ops.body["bots"].as_u64(), ops.body["calls"].as_u64()),
        (Some(1), Some(1)),
        "{}",
        ops.text
    );
    tokio::time::sleep_until((added_at + Duration::from_secs(4)).into()).await;
    // Removing it from the session ends its stream with `stop`.
    api.remove(&s, &bot_id).await;
    let (report, heard) = bot.report(1).await;
    g.wait_metric("patchbay_streams_connected", 0.0).await;
    running.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();

    let names: Vec<&str> = report["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["event"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names.first(), Some(&"connected"), "{report}");
    assert_eq!(names.get(1), Some(&"start"), "{report}");
    assert_eq!(names.last(), Some(&"stop"), "{report}");
    let start = &events(&report, "start")[0];
    assert_eq!(start["start"]["customParameters"]["lang"], "en");
    assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
    assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 8000);
    assert_eq!(start["streamSid"], start["start"]["streamSid"]);
    assert_eq!(report["requestHeaders"]["Authorization"], "Bearer s3cret");
    assert_eq!(
        start["start"]["callSid"],
        format!("CA{}", bot_id.replace('-', "")).as_str()
    );

    // Marks come back in order, when their audio has played: at real time, though the
    // bot sent all of it at once.
    let marks = events(&report, "mark");
    let got: Vec<&str> = marks.iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(got, vec!["m1", "m2"], "{report}");
    let at = |v: &Value| v["at"].as_f64().unwrap_or(0.0);
    let started = at(start);
    let m1 = at(marks[0]) - started;
    let m2 = at(marks[1]) - at(marks[0]);
    assert!((1.8..2.6).contains(&m1), "m1 after {m1:.2} s");
    assert!((0.8..1.4).contains(&m2), "m2 {m2:.2} s after m1");

    // The bot heard the caller (20 ms frames of μ-law, the whole time).
    let heard_s = heard.len() as f64 / 8000.0;
    assert!(heard_s > 3.0, "the bot heard {heard_s:.2} s");
    let middle = &heard[4000..heard.len().min(4000 + 16000)];
    let shares = tone_shares(middle, &FREQS, 8000.0);
    assert!(shares[&440] > 0.6, "the bot heard {shares:?}");
    // The caller heard the bot while it spoke.
    assert_hears(
        &packets,
        "the caller, while the bot speaks",
        call.media_port,
        Law::Ulaw,
        added + 0.8,
        added + 2.8,
        &[880],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_participants_are_checked() {
    let g = Gateway::start().await;
    let api = g.api();
    for (stream, why) in [
        (
            json!({"url": "ws://10.1.2.3/bot", "protocol": "twilio"}),
            "webhook_allow",
        ),
        (
            json!({"url": "https://8.8.8.8/bot", "protocol": "twilio"}),
            "ws or wss",
        ),
        (
            json!({"url": "wss://8.8.8.8/bot", "protocol": "sip"}),
            "protocol",
        ),
        (
            json!({"url": "wss://8.8.8.8/bot", "protocol": "twilio", "sampleRate": 16000}),
            "sampleRate",
        ),
        (
            json!({"url": "wss://8.8.8.8/bot", "protocol": "twilio", "headers": {"Host": "x"}}),
            "not a header a stream may set",
        ),
        (
            json!({"url": "wss://8.8.8.8/bot", "protocol": "twilio",
                   "headers": {"X-Token": "a\r\nInjected: yes"}}),
            "printable ASCII",
        ),
    ] {
        let r = api
            .call(
                Method::POST,
                "/participants",
                Some(json!({"publishPermissions": ["AUDIO"], "mediaStream": stream})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{stream}: {}", r.text);
        assert!(r.text.contains(why), "{stream}: {}", r.text);
    }
    let r = api
        .call(
            Method::POST,
            "/participants",
            Some(json!({"publishPermissions": ["VIDEO"],
                        "mediaStream": {"url": "wss://8.8.8.8/bot", "protocol": "twilio"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

/// RMS of one packet's audio.
fn level(p: &patchbay_tests::media::RtpPacket) -> f64 {
    let n = p.payload.len().max(1) as f64;
    (p.payload
        .iter()
        .map(|&b| f64::from(Law::Ulaw.decode(b)).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_silences_the_bot_at_once_and_dtmf_reaches_it() {
    let g = Gateway::start().await;
    let api = g.api();
    let dir = g.scratch().to_path_buf();
    // Ten seconds of speech sent at once; `clear` a second and a half later.
    let bot = Bot::start(&dir, &["--say", "880:10.0:long", "--clear-after", "1.5"]);
    let s = api.session(None).await;
    let (_, lt) = member(&api, &s).await;
    let (_, pt) = member(&api, &s).await;
    let bot_id = bot.participant(&api, json!({"protocol": "twilio"})).await;
    // The listener is silent to itself: what it receives is the bot (and the presser's
    // silence).
    let call = SippCall::tone("listener", &dir, 440, Law::Ulaw, 7000).token(&lt);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    api.add(&s, &bot_id, Some(json!({"sessionId": s}))).await;
    g.wait_metric("patchbay_streams_connected", 1.0).await;
    let pressing = presser(&dir, &pt, 2500, 1000).spawn(&g, &dir);
    pressing.assert_ok(Duration::from_secs(20));
    running.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();
    api.remove(&s, &bot_id).await;
    let (report, _) = bot.report(1).await;

    let cleared = report["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["sent"] == "clear"))
        .and_then(|e| e["at"].as_f64())
        .expect("the bot sent clear");
    // Its audio (the presser's key presses reach it as telephone-events, not audio).
    let to_listener: Vec<_> = patchbay_tests::media::received(&packets, call.media_port)
        .into_iter()
        .filter(|p| p.payload_type == 0)
        .collect();
    let loud_before = to_listener
        .iter()
        .filter(|p| p.at > cleared - 0.5 && p.at < cleared && level(p) > 1000.0)
        .count();
    assert!(loud_before > 15, "the bot was not heard before the clear");
    let last_loud = to_listener
        .iter()
        .filter(|p| p.at >= cleared && level(p) > 1000.0)
        .map(|p| p.at)
        .fold(cleared, f64::max);
    let after = last_loud - cleared;
    eprintln!(
        "clear → the listener's audio silent after {:.0} ms",
        after * 1000.0
    );
    assert!(
        after < 0.06,
        "still heard {:.0} ms after the clear",
        after * 1000.0
    );
    // The pending mark came back with the clear.
    let marks = events(&report, "mark");
    assert_eq!(marks.len(), 1, "{report}");
    assert!(marks[0]["at"].as_f64().unwrap_or(0.0) >= cleared);
    // The presser's digit reached the bot.
    let digits: Vec<&str> = events(&report, "dtmf")
        .iter()
        .filter_map(|d| d["digit"].as_str())
        .collect();
    assert_eq!(digits, vec!["1"], "{report}");
}

/// Pipecat's own Twilio serializer (pipecat-ai 1.14's `TwilioFrameSerializer`, set up as a
/// Pipecat pipeline at 16 kHz sets it up) at the bot's end: it decodes our `media` into the
/// caller's voice and our `dtmf` into the digit pressed, and what it serializes from the
/// bot's 16 kHz audio frames plays to the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipecats_twilio_serializer_understands_our_stream_and_is_understood() {
    let g = Gateway::start().await;
    let api = g.api();
    let dir = g.scratch().to_path_buf();
    let bot = Bot::start(&dir, &["--pipecat", "--say", "880:3.0:-"]);
    let s = api.session(None).await;
    let (_, lt) = member(&api, &s).await;
    let (_, pt) = member(&api, &s).await;
    let bot_id = bot.participant(&api, json!({"protocol": "twilio"})).await;
    let call = SippCall::tone("caller", &dir, 440, Law::Ulaw, 6000).token(&lt);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let added = now_epoch();
    api.add(&s, &bot_id, Some(json!({"sessionId": s}))).await;
    g.wait_metric("patchbay_streams_connected", 1.0).await;
    presser(&dir, &pt, 1500, 1000)
        .spawn(&g, &dir)
        .assert_ok(Duration::from_secs(20));
    running.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();
    api.remove(&s, &bot_id).await;
    let (report, heard) = bot.report(1).await;

    // What Pipecat decoded: the caller's 440 Hz, at its pipeline's 16 kHz.
    assert_eq!(report["rate"], 16000, "{report}");
    let media = events(&report, "media");
    assert_eq!(
        media.first().map(|m| &m["sampleRate"]),
        Some(&json!(16000)),
        "{report}"
    );
    let heard_s = heard.len() as f64 / 16000.0;
    assert!(heard_s > 3.0, "Pipecat decoded {heard_s:.2} s");
    let middle = &heard[16000..heard.len().min(16000 + 32000)];
    let shares = tone_shares(middle, &FREQS, 16000.0);
    assert!(shares[&440] > 0.6, "Pipecat decoded {shares:?}");
    // The presser's digit, as Pipecat's InputDTMFFrame.
    let digits: Vec<&str> = events(&report, "dtmf")
        .iter()
        .filter_map(|d| d["digit"].as_str())
        .collect();
    assert_eq!(digits, vec!["1"], "{report}");
    // The caller heard what Pipecat serialized.
    assert_hears(
        &packets,
        "the caller, while the Pipecat bot speaks",
        call.media_port,
        Law::Ulaw,
        added + 0.8,
        added + 2.8,
        &[880],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_drops_is_connected_again_and_given_up_after_stream_retry_for() {
    let hooks = Receiver::start().await;
    let g = Gateway::start_with(&[], &[("PATCHBAY_STREAM_RETRY_FOR", "3s")]).await;
    let api = g.api();
    let dir = g.scratch().to_path_buf();
    let port = free_udp_ports(1);
    let bot = Bot::start_on(&dir, port, &["--say", "880:30.0:end"]);
    let s = api.session(None).await;
    let (bot_id, _) = api
        .participant(
            json!({"publishPermissions": ["AUDIO"], "callbackUrl": hooks.url("/bot"),
                            "mediaStream": {"url": bot.url(), "protocol": "twilio"}}),
        )
        .await;
    api.add(&s, &bot_id, Some(json!({"sessionId": s}))).await;
    let seen = |n: usize| {
        move |h: &[patchbay_tests::hooks::Hit]| h.iter().filter(|h| h.path == "/bot").count() >= n
    };
    hooks
        .wait_for(Duration::from_secs(10), "onConnect", seen(1))
        .await;
    // The bot goes away without a close: onDisconnect, then it is connected again when
    // it is back.
    drop(bot);
    hooks
        .wait_for(Duration::from_secs(10), "onDisconnect", seen(2))
        .await;
    let bot = Bot::start_on(&dir, port, &["--say", "880:30.0:end"]);
    hooks
        .wait_for(Duration::from_secs(10), "onConnect again", seen(3))
        .await;
    g.wait_metric("patchbay_streams_connected", 1.0).await;
    // Gone for longer than stream_retry_for: the participant leaves.
    drop(bot);
    let gone = Instant::now();
    hooks
        .wait_for(Duration::from_secs(15), "onLeave", seen(5))
        .await;
    let waited = gone.elapsed();
    assert!(waited >= Duration::from_secs(3), "left after {waited:?}");
    let events: Vec<String> = hooks
        .delivered("/bot")
        .iter()
        .filter_map(|b| b["event"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        events,
        [
            "onConnect",
            "onDisconnect",
            "onConnect",
            "onDisconnect",
            "onLeave"
        ],
        "{events:?}"
    );
    let delivered = hooks.delivered("/bot");
    assert_eq!(
        delivered[4]["reason"],
        "the bot's WebSocket dropped and did not come back within stream_retry_for",
        "{delivered:?}"
    );
    assert!(delivered[..4].iter().all(|b| b.get("reason").is_none()));
    assert_eq!(g.metric("patchbay_streams_connected").await, 0.0);
    // Given up in this session: not opened again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hooks.delivered("/bot").len(), 5);

    // A bot that closes the stream itself is done: the participant leaves at once and
    // its onLeave says so.
    let closer = Bot::start_on(&dir, port, &["--close-after", "1.0"]);
    let (closer_id, _) = api
        .participant(
            json!({"publishPermissions": ["AUDIO"], "callbackUrl": hooks.url("/closer"),
                            "mediaStream": {"url": closer.url(), "protocol": "twilio"}}),
        )
        .await;
    api.add(&s, &closer_id, Some(json!({"sessionId": s}))).await;
    hooks
        .wait_for(Duration::from_secs(10), "the closer's onLeave", |h| {
            h.iter().filter(|h| h.path == "/closer").count() >= 2
        })
        .await;
    let delivered = hooks.delivered("/closer");
    let events: Vec<&str> = delivered
        .iter()
        .filter_map(|b| b["event"].as_str())
        .collect();
    assert_eq!(events, ["onConnect", "onLeave"], "{delivered:?}");
    assert_eq!(
        delivered[1]["reason"], "the bot closed the stream",
        "{delivered:?}"
    );
    g.wait_metric("patchbay_streams_connected", 0.0).await;

    // Without webhook_allow, a stream to loopback is refused like a callback.
    let strict = Gateway::start_with(&[], &[("PATCHBAY_WEBHOOK_ALLOW", "")]).await;
    let r = strict
        .api()
        .call(
            Method::POST,
            "/participants",
            Some(json!({"publishPermissions": ["AUDIO"],
                        "mediaStream": {"url": format!("ws://127.0.0.1:{port}/bot"), "protocol": "twilio"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("webhook_allow"), "{}", r.text);
}

/// What a caller and a bot exchanged: the bot joined a session with a caller playing
/// 440 Hz for 3 s, then was removed.
struct Exchange {
    report: Value,
    heard: Vec<i16>,
    packets: Vec<patchbay_tests::media::RtpPacket>,
    caller_port: u16,
    /// When the bot was added (seconds since the epoch).
    added: f64,
}

async fn exchange(bot_args: &[&str], stream: Value) -> Exchange {
    let g = Gateway::start().await;
    let api = g.api();
    let dir = g.scratch().to_path_buf();
    let bot = Bot::start(&dir, bot_args);
    let s = api.session(None).await;
    let (_, token) = member(&api, &s).await;
    let bot_id = bot.participant(&api, stream).await;
    let call = SippCall::tone("caller", &dir, 440, Law::Ulaw, 6000).token(&token);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let added = now_epoch();
    api.add(&s, &bot_id, Some(json!({"sessionId": s}))).await;
    g.wait_metric("patchbay_streams_connected", 1.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    api.remove(&s, &bot_id).await;
    let (report, heard) = bot.report(1).await;
    running.assert_ok(Duration::from_secs(20));
    Exchange {
        report,
        heard,
        packets: capture.stop(),
        caller_port: call.media_port,
        added,
    }
}

impl Exchange {
    /// The bot heard the caller's 440 Hz (in `heard`, at `rate`), the caller the bot's
    /// 880 Hz while it spoke.
    fn assert_both_heard(&self, rate: f64, speaking_s: f64) {
        let skip = (rate / 2.0) as usize;
        let middle = &self.heard[skip..self.heard.len().min(skip + 2 * rate as usize)];
        let shares = tone_shares(middle, &FREQS, rate);
        assert!(shares[&440] > 0.6, "the bot heard {shares:?}");
        assert_hears(
            &self.packets,
            "the caller, while the bot speaks",
            self.caller_port,
            Law::Ulaw,
            self.added + 0.8,
            self.added + speaking_s - 0.2,
            &[880],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandwidth_bot_speaks_16_khz_pcm_and_hears_the_caller() {
    let x = exchange(
        &["--protocol", "bandwidth", "--say", "880:3.0:unused"],
        json!({"protocol": "bandwidth", "sampleRate": 16000, "customParameters": {"lang": "en"}}),
    )
    .await;
    let report = &x.report;
    let names: Vec<&str> = report["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["event"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names.first(), Some(&"start"), "{report}");
    assert_eq!(names.last(), Some(&"stop"), "{report}");
    let start = &events(report, "start")[0];
    assert_eq!(
        start["metadata"]["tracks"][0]["mediaFormat"]["encoding"],
        "audio/PCMU"
    );
    assert_eq!(start["streamParams"]["lang"], "en");
    assert_eq!(events(report, "media")[0]["track"], "inbound");
    x.assert_both_heard(8000.0, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_bot_at_16_khz_hears_the_caller_and_is_heard_with_its_marks() {
    let x = exchange(
        &["--protocol", "raw", "--say", "880:2.0:said"],
        json!({"protocol": "raw", "sampleRate": 16000}),
    )
    .await;
    let report = &x.report;
    let start = &events(report, "start")[0];
    assert_eq!(start["startMessage"]["sampleRate"], 16000, "{report}");
    assert_eq!(report["rate"], 16000);
    let marks: Vec<&str> = events(report, "mark")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(marks, vec!["said"], "{report}");
    let said = events(report, "mark")[0]["at"].as_f64().unwrap_or(0.0)
        - start["at"].as_f64().unwrap_or(0.0);
    assert!((1.8..2.6).contains(&said), "the mark after {said:.2} s");
    assert_eq!(events(report, "stop").len(), 1, "{report}");
    x.assert_both_heard(16000.0, 2.0);
}

/// The median share of 440, 660 and 880 Hz over the 100 ms windows of `x` (8 kHz).
fn median_shares(x: &[i16]) -> [f64; 3] {
    let windows: Vec<_> = x
        .chunks_exact(800)
        .map(|w| tone_shares(w, &FREQS, 8000.0))
        .collect();
    let mut out = [0.0; 3];
    for (o, f) in out.iter_mut().zip([440u32, 660, 880]) {
        let mut v: Vec<f64> = windows.iter().map(|s| s[&f]).collect();
        v.sort_by(f64::total_cmp);
        *o = v.get(v.len() / 2).copied().unwrap_or(0.0);
    }
    out
}

/// The bot's audio from `from` to `to` (seconds since the epoch): media arrive at real
/// time, one 20 ms frame after another, from the first media message on.
fn heard_between(report: &Value, heard: &[i16], from: f64, to: f64) -> Vec<i16> {
    let first = events(report, "media")
        .first()
        .and_then(|m| m["at"].as_f64())
        .unwrap_or(0.0);
    let index = |t: f64| (((t - first).max(0.0) * 8000.0) as usize).min(heard.len());
    heard[index(from)..index(to)].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_hears_a_caller_and_a_browser_as_subscribed_and_both_hear_the_bot() {
    use patchbay_tests::browser::{drive_scenario, stream_events};
    use patchbay_tests::media::write_pcm_tone_wav;
    let g = Gateway::start().await;
    let api = g.api();
    let dir = g.scratch().to_path_buf();
    // The bot speaks 880 Hz for 20 s (sent at once) as soon as its stream starts.
    let bot = Bot::start(&dir, &["--say", "880:20.0:spoken"]);
    let s = api.session(None).await;
    let (caller, caller_token) = member(&api, &s).await;
    let (_, browser_token) = member(&api, &s).await;
    let bot_id = bot.participant(&api, json!({"protocol": "twilio"})).await;
    let call = SippCall::tone("caller", &dir, 440, Law::Ulaw, 26000)
        .timeout(60)
        .token(&caller_token);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    // The browser (the unmodified SDK in Chromium) publishes 660 Hz and listens.
    let mic = dir.join("mic.wav");
    write_pcm_tone_wav(&mic, 660.0, 4, 48000);
    let page = drive_scenario(
        &g,
        json!([{"token": browser_token, "connectTimeoutMs": 5000,
                "publish": {"alias": "microphone", "raw": true}, "settleMs": 16000}]),
        json!([]),
        0,
        90_000,
        Some(&mic),
    );
    g.wait_browser_media(100.0, Duration::from_secs(30), "no media from the browser")
        .await;

    // The bot joins, subscribed to the whole session: it hears the caller and the browser
    // (whose tone Opus and the mix bring about 8 dB below the caller's; a frequency nobody
    // plays holds ~1e-6 of the audio).
    let added = now_epoch();
    api.add(&s, &bot_id, Some(json!({"sessionId": s}))).await;
    g.wait_metric("patchbay_streams_connected", 1.0).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Then only the caller (the browser keeps publishing, the others hear it as before).
    let changed = now_epoch();
    api.subscribe(
        &s,
        &bot_id,
        json!({"participants": [{"participantId": caller}]}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let until = now_epoch();
    let report = page.join().expect("the browser's driver");
    api.remove(&s, &bot_id).await;
    let (bot_report, heard) = bot.report(1).await;
    running.assert_ok(Duration::from_secs(40));
    let packets = capture.stop();

    // The caller hears the browser and the bot; the browser the caller and the bot.
    assert_hears(
        &packets,
        "the caller",
        call.media_port,
        Law::Ulaw,
        added + 1.0,
        until,
        &[660, 880],
    );
    // Per 100 ms window (a late packet of the caller's on a loaded machine breaks a
    // tone's phase, not what is heard), the median share of each tone.
    let context = format!(
        "stream frames dropped {}, concealed {}",
        g.metric("patchbay_stream_dropped_total").await,
        g.metric("patchbay_media_concealed_total").await
    );
    let before = heard_between(&bot_report, &heard, changed - 2.5, changed - 0.2);
    let shares = median_shares(&before);
    assert!(
        before.len() > 16000 && shares[0] > 0.2 && shares[1] > 0.02,
        "before the change the bot heard 440/660/880 Hz at {shares:?} in {} samples; {context}",
        before.len()
    );
    assert!(shares[2] < 0.002, "the bot heard itself: {shares:?}");
    let after = heard_between(&bot_report, &heard, changed + 0.6, until);
    let shares = median_shares(&after);
    assert!(
        after.len() > 16000 && shares[0] > 0.6 && shares[1] < 0.002,
        "after the change the bot heard 440/660/880 Hz at {shares:?} in {} samples; {context}",
        after.len()
    );

    let page = &report["pages"][0];
    assert_eq!(page["outcome"], "connected", "{page}");
    let available = stream_events(page, "available");
    let peak_of = |participant: &str| {
        available
            .iter()
            .find(|e| e["participantId"] == participant)
            .and_then(|e| e["endpointId"].as_str())
            .and_then(|endpoint| page["final"]["peaks"][endpoint].as_f64())
    };
    let bot_peak = peak_of(&bot_id).unwrap_or(0.0);
    assert!(
        (840.0..920.0).contains(&bot_peak),
        "the browser heard the bot at {bot_peak} Hz: {page}"
    );
    let caller_peak = peak_of(&caller).unwrap_or(0.0);
    assert!(
        (400.0..480.0).contains(&caller_peak),
        "the browser heard the caller at {caller_peak} Hz: {page}"
    );
    let stop = events(&bot_report, "stop");
    assert_eq!(stop.len(), 1, "{bot_report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_bot_at_16_khz_and_a_g722_caller_hear_each_other_in_wideband() {
    use patchbay_tests::media::{g722, received, write_rtp_pcap};
    let g = Gateway::start().await;
    let api = g.api();
    let dir = g.scratch().to_path_buf();
    // Tones above 4 kHz: nothing narrowband carries them.
    let bot = Bot::start(&dir, &["--protocol", "raw", "--say", "6000:4.0:said"]);
    let s = api.session(None).await;
    let (_, token) = member(&api, &s).await;
    let bot_id = bot
        .participant(&api, json!({"protocol": "raw", "sampleRate": 16000}))
        .await;
    let pcm: Vec<i16> = (0..16000 * 8)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 5000.0 * i as f64 / 16000.0).sin()) as i16)
        .collect();
    let packets: Vec<Vec<u8>> = g722::encode(&pcm).chunks(160).map(<[u8]>::to_vec).collect();
    write_rtp_pcap(&dir.join("g722.pcap"), &packets, 9, 160, 20);
    let call = SippCall::new("caller", "uac_pcap.xml")
        .var("PCAP", "g722.pcap")
        .var("PT", "9")
        .var("RTPMAP", "G722/8000")
        .var("HOLD_MS", "7000")
        .token(&token);
    let capture = Capture::start(&dir, &[call.media_port]);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let added = now_epoch();
    api.add(&s, &bot_id, Some(json!({"sessionId": s}))).await;
    g.wait_metric("patchbay_streams_connected", 1.0).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    api.remove(&s, &bot_id).await;
    let (report, heard) = bot.report(1).await;
    running.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();

    assert_eq!(report["rate"], 16000, "{report}");
    let wide = [5000.0, 6000.0];
    let middle = &heard[8000..heard.len().min(8000 + 32000)];
    let shares = tone_shares(middle, &wide, 16000.0);
    assert!(shares[&5000] > 0.6, "the bot heard {shares:?}");
    let to_caller: Vec<u8> = received(&packets, call.media_port)
        .into_iter()
        .filter(|p| p.payload_type == 9 && p.at > added + 0.8 && p.at < added + 3.5)
        .flat_map(|p| p.payload.iter().copied())
        .collect();
    let pcm = g722::decode(&to_caller);
    assert!(pcm.len() > 16000, "{} samples to the caller", pcm.len());
    let shares = tone_shares(&pcm, &wide, 16000.0);
    assert!(shares[&6000] > 0.6, "the caller heard {shares:?}");
}
