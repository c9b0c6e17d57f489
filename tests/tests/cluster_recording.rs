//! A recording in a cluster follows the session's media: the node that runs the media
//! records; when it dies (`kill -9`), the node that takes the session over goes on
//! with a new segment, and the recording (one id, one callback, one manifest) lists
//! both segments' files, each served through any node.

use std::time::{Duration, Instant};

use patchbay_tests::cluster::{live_nodes, nodes};
use patchbay_tests::hearing::FREQS;
use patchbay_tests::hooks::Receiver;
use patchbay_tests::media::{tone_shares, Law};
use patchbay_tests::postgres;
use patchbay_tests::recordings::{complete, record};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::Api;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A mixed recording's WAV (16-bit PCM, mono) as samples and its rate.
fn wav_samples(bytes: &[u8]) -> (Vec<i16>, f64) {
    assert!(bytes.len() > 44 && &bytes[..4] == b"RIFF", "not a WAV file");
    assert_eq!(u16::from_le_bytes([bytes[20], bytes[21]]), 1, "PCM");
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 1, "mono");
    let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    let pcm = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (pcm, f64::from(rate))
}

/// The frequency of `FREQS` that carries most of `pcm`'s energy after its first
/// 200 ms, and its share.
fn dominant(pcm: &[i16], rate: f64) -> (u32, f64) {
    let skip = ((rate * 0.2) as usize).min(pcm.len());
    let shares = tone_shares(&pcm[skip..], &FREQS, rate);
    shares
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0))
}

async fn get(api: &Api, path: &str) -> Value {
    let r = api.call(Method::GET, path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_goes_on_as_a_new_segment_on_the_node_that_takes_the_session_over() {
    let url = postgres::database();
    let mut g = nodes(&url, "3s").await;
    let hooks = Receiver::start().await;
    let (api1, api2) = (g[0].api(), g[1].api());
    let s = api1.session(None).await;
    let mut phones = Vec::new();
    for _ in 0..2 {
        let (p, t) = api1
            .participant(json!({"publishPermissions": ["AUDIO"]}))
            .await;
        api1.add(&s, &p, Some(json!({"sessionId": s}))).await;
        phones.push(t);
    }

    // The first caller reaches n1: n1 runs the session's media.
    let dir = g[0].scratch().to_path_buf();
    let first = SippCall::tone("first", &dir, 440, Law::Ulaw, 60000).token(&phones[0]);
    let first_call = first.spawn(&g[0], &dir);
    g[0].wait_metric("patchbay_sip_calls_active", 1.0).await;

    // Asked of n2, made by n1 (the request is sent to the node that runs the media).
    let rec = record(
        &api2,
        &s,
        json!({"mode": "mixed", "format": "wav", "callbackUrl": hooks.url("/rec")}),
    )
    .await;
    let id = rec["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while g[0].metric("patchbay_recording_bytes_written_total").await < 16000.0 {
        assert!(Instant::now() < deadline, "n1 never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // n1 dies with the recording open. Once its heartbeat (and the session's lease)
    // ran out, the second caller reaches n2, which takes the session over.
    g[0].kill9();
    drop(first_call);
    let killed = Instant::now();
    while live_nodes(&g[1]).await.iter().any(|n| n == "n1") {
        assert!(killed.elapsed() < Duration::from_secs(20), "n1 still live");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The session's lease was renewed after n1's last heartbeat: it runs out up to a
    // lease (3 s) later.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let dir = g[1].scratch().to_path_buf();
    let second = SippCall::tone("second", &dir, 660, Law::Ulaw, 60000).token(&phones[1]);
    let second_call = second.spawn(&g[1], &dir);
    g[1].wait_metric("patchbay_sip_calls_active", 1.0).await;
    let path = format!("/sessions/{s}/recordings/{id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&api2, &path).await;
        let on_n2 = r["segments"].as_array().is_some_and(|g| {
            g.iter()
                .any(|g| g["node"] == "n2" && g["status"] == "recording")
        });
        if on_n2 {
            assert_eq!(r["status"], "recording", "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "no segment on n2: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = api2.call(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let done = complete(&api2, &s, &id).await;
    drop(second_call);
    assert_eq!(done["reason"], "requested", "{done}");

    // n1 comes back: it closes its segment as far as it got (no callback of its own:
    // the recording went on elsewhere), and serves its file to the other nodes.
    g[0].restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        let v = get(&api2, &path).await;
        if v["files"].as_array().map_or(0, Vec::len) == 2 {
            break v;
        }
        assert!(Instant::now() < deadline, "n1's segment never listed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let segments = view["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 2, "{view}");
    assert_eq!(
        (&segments[0]["node"], &segments[0]["reason"]),
        (&json!("n1"), &json!("moved")),
        "{view}"
    );
    assert_eq!(
        (&segments[1]["node"], &segments[1]["reason"]),
        (&json!("n2"), &json!("requested")),
        "{view}"
    );
    assert_eq!(view["status"], "complete", "{view}");

    // Each segment's file, through n2 (n1's is sent on to n1), holds its caller.
    for (segment, hz, api) in [(0, 440, &api2), (1, 660, &api2), (0, 440, &api1)] {
        let f = view["files"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["segment"] == segment))
            .unwrap_or_else(|| panic!("no file of segment {segment}: {view}"));
        let url = f["mediaUrl"].as_str().expect("mediaUrl");
        let (_, rest) = url.split_once(&format!("/sessions/{s}")).expect("a path");
        let (status, _, bytes) = api.bytes(&format!("/sessions/{s}{rest}")).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap_or(0), "{f}");
        let (pcm, rate) = wav_samples(&bytes);
        let seconds = pcm.len() as f64 / rate;
        assert!(seconds > 2.0, "segment {segment}: {seconds} s: {f}");
        let (peak, share) = dominant(&pcm, rate);
        assert!(
            peak == hz && share > 0.6,
            "segment {segment}: {peak} Hz at {share:.2}, wanted {hz} Hz"
        );
    }
    let later = view["files"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["segment"] == 1))
        .and_then(|f| f["offsetMs"].as_u64())
        .unwrap_or(0);
    assert!(
        later >= 3000,
        "the second segment's file starts at {later} ms"
    );

    // One callback, for the whole recording, from the node that ended it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = hooks.delivered("/rec");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["recordingId"], id.as_str());
    assert_eq!(calls[0]["status"], "complete");

    // n2's manifest lists both segments.
    let rdir = g[1].data_dir().join("recordings");
    let manifest: Value = std::fs::read_dir(&rdir)
        .expect("n2's recordings")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("manifest.json")).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .find(|m| m["recordingId"] == id.as_str())
        .expect("a manifest of the recording on n2");
    assert_eq!(
        manifest["segments"].as_array().map_or(0, Vec::len),
        2,
        "{manifest}"
    );
}
