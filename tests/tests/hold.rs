//! Hold and resume from our side (`POST …/participants/{p}/hold` and `/resume`): the
//! phone gets a re-INVITE `sendonly` and then nothing until the resume (captured on
//! the wire), or the music on hold when `sip_music_on_hold` is set; the session does
//! not hear it either; after the re-INVITE `sendrecv` both directions carry audio
//! again.

use std::time::Duration;

use patchbay_tests::media::{
    decode_window, now_epoch, received, tones_present, write_pcm_tone_wav, write_tone_wav, Capture,
    Law,
};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::Gateway;
use reqwest::Method;
use serde_json::json;

const FREQS: [f64; 3] = [440.0, 660.0, 880.0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_caller_gets_no_media_and_is_not_heard_until_resumed() {
    hold_and_resume(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_caller_hears_the_music_on_hold_and_is_not_heard_until_resumed() {
    hold_and_resume(true).await;
}

/// A (sipp, 440 Hz) and B (sipp, 660 Hz) in a session; A held for 2 s, then resumed.
/// With `music`, the music on hold is an 880 Hz tone (16-bit PCM at 16 kHz).
async fn hold_and_resume(music: bool) {
    let moh = tempfile::tempdir().expect("tempdir");
    let wav = moh.path().join("moh.wav");
    write_pcm_tone_wav(&wav, 880.0, 3, 16000);
    let wav = wav.to_str().expect("path").to_string();
    let args: Vec<&str> = if music {
        vec!["--sip-music-on-hold", &wav]
    } else {
        Vec::new()
    };
    let g = Gateway::start_with(&args, &[]).await;
    let api = g.api();
    let (s, a, a_token) = api.audio_member().await;
    let (b, b_token) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &b, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    write_tone_wav(&dir.join("held440.wav"), 440.0, 2, Law::Ulaw);
    let held = SippCall::new("held", "uac_held.xml")
        .var("WAV", "held440.wav")
        .var("HOLD_MS", "2500")
        .token(&a_token);
    let other = SippCall::tone("other", &dir, 660, Law::Ulaw, 11000).token(&b_token);
    let capture = Capture::start(&dir, &[held.media_port, other.media_port]);
    let other_run = other.spawn(&g, &dir);
    let held_run = held.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let joined = now_epoch();
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // A participant without a call, and one that does not exist.
    let (lonely, _) = api.participant(json!({})).await;
    let r = api
        .call(Method::POST, &format!("/participants/{lonely}/hold"), None)
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("no SIP call"), "{}", r.text);
    let r = api
        .call(
            Method::POST,
            "/participants/00000000-0000-4000-8000-000000000000/hold",
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    let hold_asked = now_epoch();
    let r = api
        .call(Method::POST, &format!("/participants/{a}/hold"), None)
        .await;
    if r.status != 204 {
        let (_, log) = held_run.wait(Duration::from_secs(1));
        panic!("{}\n{log}\n{}", r.text, g.log());
    }
    let held_at = now_epoch();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let resume_asked = now_epoch();
    let r = api
        .call(Method::POST, &format!("/participants/{a}/resume"), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let resumed_at = now_epoch();
    held_run.assert_ok(Duration::from_secs(20));
    let until = now_epoch();
    other_run.assert_ok(Duration::from_secs(20));
    let packets = capture.stop();
    assert!(g.log().contains("call held"), "{}", g.log());

    let to_a = received(&packets, held.media_port);
    let to_b = received(&packets, other.media_port);
    let heard = |rx: &[&patchbay_tests::media::RtpPacket], from: f64, to: f64| {
        tones_present(&decode_window(rx, Law::Ulaw, from, to), &FREQS, 8000.0).0
    };
    // Before: each hears the other.
    assert_eq!(heard(&to_a, joined + 0.8, hold_asked), [660]);
    assert_eq!(heard(&to_b, joined + 0.8, hold_asked), [440]);
    // Held: not one packet to the phone (or only the music), and the session does
    // not hear it.
    let during: Vec<_> = to_a
        .iter()
        .filter(|p| p.at > held_at + 0.1 && p.at < resume_asked)
        .collect();
    if music {
        assert_eq!(heard(&to_a, held_at + 0.3, resume_asked), [880]);
    } else {
        assert!(
            during.is_empty(),
            "{} RTP packets reached the held phone",
            during.len()
        );
    }
    assert!(
        heard(&to_b, held_at + 0.3, resume_asked).is_empty(),
        "the held phone was heard"
    );
    // Resumed: both ways again.
    assert_eq!(heard(&to_a, resumed_at + 0.3, until - 0.3), [660]);
    assert_eq!(heard(&to_b, resumed_at + 0.5, until - 0.3), [440]);
}
