//! The web console, end to end: a person signs in, creates a session and two
//! participants, joins as one from the console (headless Chromium, fake media, the real
//! SDK bundled into the console), a phone calls in with the other's token (sipp, 5 % of
//! its packets left out), and the patch bay shows both streams speaking; switching the
//! phone off for the browser silences it (the SDK's onStreamUnavailable) and switching it
//! on brings it back; the quality rows show the codec and the loss sipp's capture lacks.
//! `tests/browser/console.js` drives the page; screenshots go to
//! `target/console-artifacts/`.

use std::process::Command;
use std::time::{Duration, Instant};

use patchbay_tests::media::{ulaw_encode, write_lossy_rtp_pcap};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{workspace, Gateway};
use serde_json::{json, Value};

/// One packet in this many is left out of the caller's capture (5 %).
const DROP_EVERY: usize = 20;

fn console_dir() -> std::path::PathBuf {
    let dir = workspace().join("console/dist");
    assert!(
        dir.join("index.html").exists(),
        "the console is not built: scripts/test runs `npm ci && npm run build` in console/"
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_routes_a_phone_to_a_browser_with_a_click_and_sees_its_quality() {
    let dir = console_dir();
    let g = Gateway::start_with(&["--console-dir", dir.to_str().unwrap()], &[]).await;
    let scratch = g.scratch().to_path_buf();
    let artifacts = workspace().join("target/console-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let token_file = scratch.join("phone-token.txt");

    // The caller: 26 s of 440 Hz in PCMU, every 20th packet missing from the capture.
    let packets: Vec<Vec<u8>> = (0..1300)
        .map(|p| {
            (0..160)
                .map(|i| {
                    let t = (p * 160 + i) as f64 / 8000.0;
                    ulaw_encode((9000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16)
                })
                .collect()
        })
        .collect();
    let pcap = scratch.join("lossy.pcap");
    write_lossy_rtp_pcap(&pcap, &packets, 0, 160, 20, |i| i % DROP_EVERY != 10);

    let config = scratch.join("console.json");
    std::fs::write(
        &config,
        json!({
            "base": g.base(),
            "account": "dev", "user": "dev", "password": "dev",
            "artifacts": artifacts,
            "tokenFile": token_file,
            "deadlineMs": 150_000,
        })
        .to_string(),
    )
    .unwrap();
    let browser_dir = workspace().join("tests/browser");
    let driver = std::thread::spawn(move || {
        Command::new("node")
            .arg("console.js")
            .arg(&config)
            .current_dir(&browser_dir)
            .output()
            .expect("run node")
    });

    // The console hands over the phone's token (copied from its page) ...
    let deadline = Instant::now() + Duration::from_secs(90);
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(&token_file) {
            if !t.is_empty() {
                break t;
            }
        }
        if driver.is_finished() || Instant::now() > deadline {
            let out = driver.join().expect("driver");
            panic!(
                "the console never gave the phone's token:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // ... and the phone calls in with it.
    let call = SippCall::new("phone", "uac_pcap.xml")
        .var("PCAP", "lossy.pcap")
        .var("PT", "0")
        .var("RTPMAP", "PCMU/8000")
        .var("HOLD_MS", "26000")
        .token(token.trim());
    let running = call.spawn(&g, &scratch);

    let out = tokio::task::spawn_blocking(move || driver.join().expect("driver"))
        .await
        .unwrap();
    drop(running);
    assert!(
        out.status.success(),
        "console.js failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    std::fs::write(artifacts.join("result.json"), format!("{r:#}")).unwrap();
    assert_eq!(
        r["ok"],
        true,
        "the console run failed: {:#}\n{}",
        r,
        g.log()
    );

    // Signing in: `/` leads to the console; a wrong password is said so.
    assert!(
        r["url"].as_str().unwrap().ends_with("/console/"),
        "{}",
        r["url"]
    );
    assert_eq!(r["wrongPassword"], "Wrong API user or password.");
    assert!(r["emptySessions"]
        .as_str()
        .unwrap()
        .contains("No sessions yet"));
    assert!(
        r["bxml"]
            .as_str()
            .unwrap()
            .starts_with("<Transfer><SipUri uui=\""),
        "{}",
        r["bxml"]
    );

    // The patch bay: both streams, both speaking, what the media plane does.
    assert_eq!(
        r["speaking"].as_object().unwrap().len(),
        2,
        "{}",
        r["speaking"]
    );
    assert_eq!(r["cellBefore"]["pressed"], "true");
    assert_eq!(r["cellBefore"]["text"], "forwarding");
    assert_eq!(r["phoneCell"], "mixing");

    // The click: the SDK says the phone's stream went, and the browser hears silence;
    // the keyboard brings it back.
    assert_eq!(r["cellOff"], "off");
    assert!(r["unavailable"]
        .as_str()
        .unwrap()
        .contains("caller-phone · phone"));
    let (before, off, on) = (
        r["levelBefore"].as_f64().unwrap(),
        r["levelOff"].as_f64().unwrap(),
        r["levelOn"].as_f64().unwrap(),
    );
    assert!(
        before > 0.01 && on > 0.01 && off < 0.003,
        "levels {before} → {off} → {on}"
    );
    let (off_max, on_min) = (
        r["levelOffMax"].as_f64().unwrap(),
        r["levelOnMin"].as_f64().unwrap(),
    );
    assert!(
        off_max < 0.003,
        "the phone came back while switched off: {off_max}"
    );
    assert!(
        on_min > 0.005,
        "the phone faded while switched on: {on_min}"
    );
    assert_eq!(r["cellOn"], "forwarding");
    assert!(r["availableAgain"].as_u64().unwrap() >= 1);

    // Quality: the leg's codec, a loss matching what the capture lacks, a lower MOS
    // than the browser's clean track.
    let phone = &r["quality"]["phone"];
    let browser = &r["quality"]["browser"];
    assert_eq!(phone["codec"], "PCMU", "{phone}");
    let loss: f64 = phone["loss"]
        .as_str()
        .unwrap()
        .trim_end_matches(" %")
        .parse()
        .unwrap();
    let expected = 100.0 / DROP_EVERY as f64;
    assert!(
        (loss - expected).abs() < 1.0,
        "loss {loss} %, the capture lacks {expected} %"
    );
    let mos = |q: &Value| q["mos"].as_str().unwrap().parse::<f64>().unwrap();
    assert_eq!(browser["codec"], "opus", "{browser}");
    assert!(
        mos(phone) < 4.0 && mos(browser) > mos(phone) + 0.3,
        "MOS {phone} vs {browser}"
    );
    // The same figures in /metrics.
    let metrics: Vec<&str> = r["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        metrics.iter().any(|l| l.starts_with("patchbay_stream_loss_percent{") && l.contains("codec=\"PCMU\"")),
        "{metrics:?}"
    );
    assert!(metrics
        .iter()
        .any(|l| l.starts_with("patchbay_stream_mos{") && l.contains("origin=\"browser\"")));

    // Accessibility, phone width, the ops view.
    for page in ["signin", "session", "ops"] {
        assert_eq!(
            r["axe"][page],
            json!([]),
            "axe-core: serious or critical violations on {page}: {:#}",
            r["axe"]
        );
    }
    assert!(
        r["overflowAtPhoneWidth"].as_i64().unwrap() <= 1,
        "the page scrolls sideways at 390 px"
    );
    let ops = r["ops"].as_str().unwrap();
    assert!(ops.contains("calls up") && ops.contains("store"), "{ops}");
    for shot in r["screenshots"].as_array().unwrap() {
        assert!(std::path::Path::new(shot.as_str().unwrap()).exists());
    }
    assert!(r["screenshots"].as_array().unwrap().len() >= 7);
}
