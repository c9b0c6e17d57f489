//! Recordings of a session with real peers: sipp callers (PCMU 440 Hz, G.722 660 Hz)
//! and the unmodified SDK in headless Chromium (its microphone a WAV of 880 Hz); the
//! files are downloaded through the API and decoded by an independent decoder (FFmpeg's
//! libavformat and libavcodec, through PyAV).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use patchbay_tests::browser::drive_scenario;
use patchbay_tests::hearing::FREQS;
use patchbay_tests::hooks::Receiver;
use patchbay_tests::media::{g722, rms, tone_shares, write_pcm_tone_wav, write_rtp_pcap, Law};
use patchbay_tests::recordings::{complete, record};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{Api, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A file as the independent decoder saw it.
#[derive(Debug)]
struct Decoded {
    codec: String,
    rate: f64,
    channels: usize,
    seconds: f64,
    /// Interleaved samples.
    pcm: Vec<i16>,
    /// The container's packets (Ogg: each Opus packet).
    packets: Vec<Vec<u8>>,
}

impl Decoded {
    /// One channel's samples.
    fn channel(&self, c: usize) -> Vec<i16> {
        self.pcm
            .iter()
            .skip(c)
            .step_by(self.channels)
            .copied()
            .collect()
    }

    /// Each frequency's share of one channel's energy after its first second, the
    /// mean over 100 ms windows (a long window would smear the tone over the
    /// drift between the callers' clocks and ours).
    fn shares(&self, c: usize) -> Vec<(u32, f64)> {
        let x = self.channel(c);
        let skip = (self.rate as usize).min(x.len());
        window_shares(&x[skip..], self.rate)
    }
}

/// Each of `FREQS`' mean share of the energy over 100 ms windows of `x`.
fn window_shares(x: &[i16], rate: f64) -> Vec<(u32, f64)> {
    let n = (rate / 10.0) as usize;
    let windows: Vec<&[i16]> = x.chunks_exact(n).collect();
    let mut out: Vec<(u32, f64)> = FREQS
        .iter()
        .map(|&f| {
            let sum: f64 = windows
                .iter()
                .map(|w| tone_shares(w, &[f], rate)[&(f as u32)])
                .sum();
            (f as u32, sum / windows.len().max(1) as f64)
        })
        .collect();
    out.sort_by_key(|(f, _)| *f);
    out
}

/// A JSON array of hex strings as bytes.
fn unhex_all(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|h| {
                    (0..h.len() / 2)
                        .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decode(path: &Path, packets: bool) -> Decoded {
    let python = std::env::var("PATCHBAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let raw = path.with_extension("raw");
    let mut cmd = Command::new(python);
    cmd.arg(patchbay_tests::workspace().join("tests/python/decode_audio.py"))
        .arg(path)
        .arg(&raw);
    if packets {
        cmd.arg("--packets");
    }
    let out = cmd.output().expect("run the decoder");
    assert!(
        out.status.success(),
        "decoding {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the decoder's JSON");
    let bytes = std::fs::read(&raw).expect("decoded samples");
    Decoded {
        codec: v["codec"].as_str().unwrap_or_default().to_string(),
        rate: v["rate"].as_f64().unwrap_or(0.0),
        channels: v["channels"].as_u64().unwrap_or(1) as usize,
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
        pcm: bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
        packets: unhex_all(&v["packets"]),
    }
}

/// Download each file of a recording into `dir`; (file body, path) per file.
async fn download(api: &Api, dir: &Path, rec: &Value) -> Vec<(Value, PathBuf)> {
    let mut out = Vec::new();
    for f in rec["files"].as_array().expect("files") {
        let url = f["mediaUrl"].as_str().expect("mediaUrl");
        let path = url
            .split_once("/v1/accounts/")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(_, p)| format!("/{p}"))
            .expect("a path of this API");
        let (status, content_type, bytes) = api.bytes(&path).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert_eq!(content_type, f["contentType"].as_str().unwrap_or_default());
        assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap_or(0), "{f}");
        let file = dir.join(format!(
            "{}-{}",
            rec["id"].as_str().unwrap_or_default(),
            f["name"].as_str().unwrap_or_default()
        ));
        std::fs::write(&file, bytes).expect("save");
        out.push((f.clone(), file));
    }
    out
}

fn file_of<'a>(files: &'a [(Value, PathBuf)], participant: &str) -> &'a (Value, PathBuf) {
    files
        .iter()
        .find(|(f, _)| f["participantId"] == participant)
        .unwrap_or_else(|| panic!("no file of {participant}: {files:?}"))
}

/// The tone `hz` dominates one channel (share over 0.6) and the others are absent.
fn assert_tone(d: &Decoded, channel: usize, hz: u32, who: &str) {
    let shares = d.shares(channel);
    for (f, share) in &shares {
        if *f == hz {
            assert!(
                *share > 0.6,
                "{who}: {hz} Hz is {share:.2} of the energy: {shares:?}"
            );
        } else {
            assert!(
                *share < 0.05,
                "{who}: {f} Hz present ({share:.2}): {shares:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracks_mixed_and_dual_recordings_of_two_callers_and_a_browser() {
    let g = Gateway::start().await;
    let api = g.api();
    let hooks = Receiver::start().await;
    let s = api.session(None).await;
    let audio = json!({"publishPermissions": ["AUDIO"]});
    let (pa, ta) = api.participant(audio.clone()).await;
    let (pb, tb) = api.participant(audio).await;
    let (pc, tc) = api.participant(json!({})).await;
    for p in [&pa, &pb, &pc] {
        api.add(&s, p, Some(json!({"sessionId": s}))).await;
    }
    let dir = g.scratch().to_path_buf();
    // B speaks G.722: 660 Hz at 16 kHz, encoded by spandsp.
    let pcm: Vec<i16> = (0..16000 * 30)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 660.0 * i as f64 / 16000.0).sin()) as i16)
        .collect();
    let packets: Vec<Vec<u8>> = g722::encode(&pcm).chunks(160).map(<[u8]>::to_vec).collect();
    write_rtp_pcap(&dir.join("g722.pcap"), &packets, 9, 160, 20);
    let call_a = SippCall::tone("a", &dir, 440, Law::Ulaw, 28000).token(&ta);
    let call_b = SippCall::new("b", "uac_pcap.xml")
        .var("PCAP", "g722.pcap")
        .var("PT", "9")
        .var("RTPMAP", "G722/8000")
        .var("HOLD_MS", "28000")
        .token(&tb);
    let running = [call_a.spawn(&g, &dir), call_b.spawn(&g, &dir)];
    g.wait_metric("patchbay_sip_calls_active", 2.0).await;
    let mic = dir.join("mic.wav");
    write_pcm_tone_wav(&mic, 880.0, 4, 48000);
    let browser = drive_scenario(
        &g,
        json!([{"token": tc, "connectTimeoutMs": 5000, "publish": {"alias": "microphone"}, "settleMs": 20000, "captureSent": true}]),
        json!([]),
        0,
        90_000,
        Some(&mic),
    );
    // The browser publishes (its media arrives) before the recordings start.
    g.wait_browser_media(
        100.0,
        Duration::from_secs(30),
        "the browser's media never arrived",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let tracks_ogg = record(
        &api,
        &s,
        json!({"mode": "tracks", "format": "ogg", "callbackUrl": hooks.url("/rec")}),
    )
    .await;
    let tracks_wav = record(&api, &s, json!({"mode": "tracks", "format": "wav"})).await;
    let mixed = record(&api, &s, json!({"mode": "mixed", "format": "ogg"})).await;
    let dual = record(
        &api,
        &s,
        json!({"mode": "dual", "format": "wav", "participantId": pa}),
    )
    .await;
    let started = Instant::now();
    assert_eq!(tracks_ogg["sessionId"], s.as_str());
    assert_eq!(dual["participantId"], pa.as_str());
    assert!(tracks_ogg["startTime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    // A fifth at once is refused, clearly.
    let fifth = api
        .call(
            Method::POST,
            &format!("/sessions/{s}/recordings"),
            Some(json!({"mode": "mixed"})),
        )
        .await;
    patchbay_tests::assert_error(&fifth, StatusCode::CONFLICT, "recordings running");

    tokio::time::sleep(Duration::from_secs(5)).await;
    // Halfway, A hears only B and C hears nobody: the mixed recording records the room.
    api.subscribe(&s, &pa, json!({"participants": [{"participantId": pb}]}))
        .await;
    api.subscribe(&s, &pc, json!({"participants": []})).await;
    // While recording, the files are listed as far as they got.
    let running_view = api
        .call(
            Method::GET,
            &format!(
                "/sessions/{s}/recordings/{}",
                tracks_wav["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(running_view.body["status"], "recording");
    assert_eq!(
        running_view.body["files"].as_array().map(Vec::len),
        Some(3),
        "{}",
        running_view.text
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ids: Vec<String> = [&tracks_ogg, &tracks_wav, &mixed, &dual]
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        let r = api
            .call(
                Method::DELETE,
                &format!("/sessions/{s}/recordings/{id}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }
    let wall = started.elapsed().as_secs_f64();
    let mut done = Vec::new();
    for id in &ids {
        done.push(complete(&api, &s, id).await);
    }
    let list = api
        .call(Method::GET, &format!("/sessions/{s}/recordings"), None)
        .await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(4), "{}", list.text);

    // tracks, Ogg: one file per stream; each the right tone for the right time.
    let files = download(&api, &dir, &done[0]).await;
    assert_eq!(files.len(), 3, "{}", done[0]);
    let mut browser_packets = Vec::new();
    for (who, hz) in [(&pa, 440), (&pb, 660), (&pc, 880)] {
        let (f, path) = file_of(&files, who);
        let d = decode(path, who == &pc);
        assert_eq!(d.codec, "opus", "{f}");
        assert_tone(&d, 0, hz, &format!("tracks/ogg of {who}"));
        let ms = f["durationMs"].as_f64().unwrap_or(0.0) / 1000.0;
        assert!(
            (d.seconds - ms).abs() < 0.2,
            "decoded {} s, listed {ms} s: {f}",
            d.seconds
        );
        assert!((ms - wall).abs() < 0.6, "{ms} s recorded in {wall} s: {f}");
        if who == &pc {
            assert_eq!(f["streamAlias"], "microphone");
            assert!(d.packets.len() >= 450, "{} packets", d.packets.len());
            browser_packets = d.packets.clone();
        } else {
            assert_eq!(f["streamAlias"], "phone");
        }
    }
    // tracks, WAV: the PCMU caller's bytes are stored as μ-law, the rest as PCM.
    let files = download(&api, &dir, &done[1]).await;
    assert_eq!(files.len(), 3);
    for (who, hz, codec, rate) in [
        (&pa, 440, "pcm_mulaw", 8000.0),
        (&pb, 660, "pcm_s16le", 16000.0),
        (&pc, 880, "pcm_s16le", 16000.0),
    ] {
        let (f, path) = file_of(&files, who);
        let d = decode(path, false);
        assert_eq!((d.codec.as_str(), d.rate), (codec, rate), "{f}");
        assert_tone(&d, 0, hz, &format!("tracks/wav of {who}"));
        let ms = f["durationMs"].as_f64().unwrap_or(0.0) / 1000.0;
        assert!(
            (d.seconds - ms).abs() < 0.2,
            "decoded {} s, listed {ms} s",
            d.seconds
        );
    }
    // mixed: everybody, before and after the subscription change. Chromium's audio
    // processing plays the fake microphone about 20 dB below the callers' tones, so
    // 880 Hz holds about 1 % of the mix (a frequency nobody plays holds ~1e-6).
    let files = download(&api, &dir, &done[2]).await;
    assert_eq!(files.len(), 1);
    let d = decode(&files[0].1, false);
    let half = d.pcm.len() / 2;
    for (part, x) in [
        ("first half", &d.pcm[..half]),
        ("second half", &d.pcm[half..]),
    ] {
        let skip = (d.rate as usize).min(x.len() / 2);
        let shares = window_shares(&x[skip..], d.rate);
        for (hz, share) in &shares {
            let least = if *hz == 880 { 0.002 } else { 0.3 };
            assert!(*share > least, "mixed, {part}: {hz} Hz {shares:?}");
        }
    }
    // dual: A alone on the first channel, B and C on the second.
    let files = download(&api, &dir, &done[3]).await;
    let d = decode(&files[0].1, false);
    assert_eq!(d.channels, 2);
    assert_tone(&d, 0, 440, "dual, first channel");
    let right = d.shares(1);
    assert!(
        right.iter().any(|(f, s)| *f == 660 && *s > 0.6)
            && right.iter().any(|(f, s)| *f == 880 && *s > 0.002)
            && right.iter().any(|(f, s)| *f == 440 && *s < 0.001),
        "dual, second channel: {right:?}"
    );
    assert!(rms(&d.channel(1)) > 1000.0);

    // recordingAvailable reached the callback URL, with the files.
    hooks
        .wait_for(Duration::from_secs(10), "recordingAvailable", |h| {
            h.iter().any(|h| h.path == "/rec")
        })
        .await;
    let cb = &hooks.delivered("/rec")[0];
    assert_eq!(cb["event"], "recordingAvailable");
    assert_eq!(cb["recordingId"], tracks_ogg["id"]);
    assert_eq!(cb["status"], "complete");
    assert_eq!(cb["reason"], "requested");
    assert_eq!(cb["files"].as_array().map(Vec::len), Some(3), "{cb}");
    // Each recording's manifest is next to its files.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            g.data_dir()
                .join("recordings")
                .join(ids[0].as_str())
                .join("manifest.json"),
        )
        .expect("manifest"),
    )
    .expect("manifest JSON");
    assert_eq!(manifest["sessionId"], s.as_str());
    assert_eq!(manifest["files"].as_array().map(Vec::len), Some(3));
    assert!(g.metric("patchbay_recording_files_closed_total").await >= 8.0);
    // The browser's file holds the Opus frames Chromium's encoder made, byte for byte
    // and in order (the page kept each frame its sender sent).
    let report = browser.join().expect("driver");
    let sent = unhex_all(&report["pages"][0]["sentAudio"]);
    assert!(sent.len() > 500, "the page kept {} sent frames", sent.len());
    let first = sent
        .iter()
        .position(|p| *p == browser_packets[0])
        .expect("the recording's first packet is one the browser sent");
    let same = sent[first..]
        .iter()
        .zip(&browser_packets)
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(
        same,
        browser_packets.len(),
        "packet {same} of {} differs from what the browser sent",
        browser_packets.len()
    );
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_end_stops_its_recordings_and_requests_are_checked() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (pa, ta) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &pa, Some(json!({"sessionId": s}))).await;
    let (outsider, _) = api.participant(json!({})).await;
    let path = format!("/sessions/{s}/recordings");
    for (body, status, says) in [
        (
            json!({"mode": "loud"}),
            StatusCode::BAD_REQUEST,
            "unknown mode",
        ),
        (
            json!({"format": "mp3"}),
            StatusCode::BAD_REQUEST,
            "unknown format",
        ),
        (
            json!({"mode": "dual", "participantId": outsider}),
            StatusCode::BAD_REQUEST,
            "not in session",
        ),
        (
            json!({"mode": "mixed", "participantId": pa}),
            StatusCode::BAD_REQUEST,
            "only for mode",
        ),
        (
            json!({"callbackUrl": "http://169.254.169.254/"}),
            StatusCode::BAD_REQUEST,
            "callbackUrl",
        ),
    ] {
        let r = api.call(Method::POST, &path, Some(body.clone())).await;
        patchbay_tests::assert_error(&r, status, says);
    }
    let unknown = api
        .call(
            Method::POST,
            &format!("/sessions/{}/recordings", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    // These credentials reach no other account's recordings.
    let other = api.with_account("other-account");
    assert_eq!(
        other.call(Method::GET, &path, None).await.status,
        StatusCode::FORBIDDEN
    );

    let dir = g.scratch().to_path_buf();
    let call = SippCall::tone("a", &dir, 440, Law::Ulaw, 20000).token(&ta);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    // Defaults: tracks, Ogg.
    let r = record(&api, &s, json!({})).await;
    assert_eq!(
        (r["mode"].as_str(), r["format"].as_str()),
        (Some("tracks"), Some("ogg"))
    );
    let id = r["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = api
        .call(Method::DELETE, &format!("/sessions/{s}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // The recording outlives its session: complete, listed, downloadable.
    let done = complete(&api, &s, &id).await;
    assert_eq!(done["reason"], "sessionEnded");
    let files = download(&api, &dir, &done).await;
    assert_eq!(files.len(), 1);
    let d = decode(&files[0].1, false);
    assert_tone(&d, 0, 440, "the caller");
    assert!(d.seconds > 2.5, "{} s", d.seconds);
    let list = api.call(Method::GET, &path, None).await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(1));
    // Stopping it again changes nothing; an unknown one is 404.
    let again = api
        .call(Method::DELETE, &format!("{path}/{id}"), None)
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    let missing = api
        .call(
            Method::GET,
            &format!("{path}/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let (status, _, _) = api.bytes(&format!("{path}/{id}/files/7")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_cut_by_a_crash_is_closed_and_marked_after_the_restart() {
    let mut g = Gateway::start().await;
    let api = g.api();
    let hooks = Receiver::start().await;
    let s = api.session(None).await;
    let (pa, ta) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &pa, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    let call = SippCall::tone("a", &dir, 440, Law::Ulaw, 20000).token(&ta);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let r = record(
        &api,
        &s,
        json!({"mode": "tracks", "format": "wav", "callbackUrl": hooks.url("/crash")}),
    )
    .await;
    let id = r["id"].as_str().unwrap().to_string();
    let ogg = record(&api, &s, json!({"mode": "mixed", "format": "ogg"})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    g.restart().await;
    drop(running);
    let api = g.api();
    // The Ogg file is cut after its last complete page and lists what that holds.
    let ogg = complete(&api, &s, ogg["id"].as_str().unwrap_or_default()).await;
    assert_eq!(ogg["reason"], "interrupted", "{ogg}");
    let files = download(&api, &dir, &ogg).await;
    assert_eq!(files.len(), 1, "{ogg}");
    let (f, path) = &files[0];
    let d = decode(path, false);
    assert_eq!(d.codec, "opus");
    let listed = f["durationMs"].as_f64().unwrap_or(0.0) / 1000.0;
    assert!(d.seconds > 1.5 && d.seconds < 4.5, "{} s", d.seconds);
    assert!(
        (d.seconds - listed).abs() < 0.2,
        "decoded {} s, listed {listed} s",
        d.seconds
    );
    let done = complete(&api, &s, &id).await;
    assert_eq!(done["reason"], "interrupted", "{done}");
    let files = download(&api, &dir, &done).await;
    assert_eq!(files.len(), 1, "{done}");
    let (f, path) = &files[0];
    assert_eq!(f["complete"], false);
    // Its header was given the size it reached: it decodes to what was recorded.
    let d = decode(path, false);
    assert_eq!(d.codec, "pcm_mulaw");
    assert!(d.seconds > 2.0 && d.seconds < 4.5, "{} s", d.seconds);
    let ms = f["durationMs"].as_f64().unwrap_or(0.0) / 1000.0;
    assert!(
        (d.seconds - ms).abs() < 0.2,
        "decoded {} s, listed {ms} s",
        d.seconds
    );
    assert_tone(&d, 0, 440, "the caller");
    hooks
        .wait_for(
            Duration::from_secs(10),
            "recordingAvailable after the restart",
            |h| h.iter().any(|h| h.path == "/crash"),
        )
        .await;
    assert_eq!(hooks.delivered("/crash")[0]["reason"], "interrupted");
}
