//! The unmodified Bandwidth browser SDK in headless Chromium: `tests/browser/drive.js`
//! runs a scenario of pages (connect, publish, steps) and reports what each observed.

use std::process::Command;

use serde_json::{json, Value};

use crate::{workspace, Gateway};

/// Run `tests/browser/drive.js` with a scenario; returns its JSON report.
pub fn drive(g: &Gateway, pages: Value) -> Value {
    drive_with(g, pages, 0)
}

/// Like [`drive`], with a final look at every page `final_wait_ms` after the last one's step.
pub fn drive_with(g: &Gateway, pages: Value, final_wait_ms: u64) -> Value {
    drive_full(g, pages, json!([]), final_wait_ms)
}

/// Like [`drive_with`], with REST `actions` run by the driver after the pages' steps.
pub fn drive_full(g: &Gateway, pages: Value, actions: Value, final_wait_ms: u64) -> Value {
    drive_in_background(g, pages, actions, final_wait_ms, 120_000)
        .join()
        .expect("driver thread")
}

/// Start the driver on its own thread (the test may stop and restart the gateway meanwhile).
pub fn drive_in_background(
    g: &Gateway,
    pages: Value,
    actions: Value,
    final_wait_ms: u64,
    deadline_ms: u64,
) -> std::thread::JoinHandle<Value> {
    drive_scenario(g, pages, actions, final_wait_ms, deadline_ms, None)
}

/// Like [`drive_in_background`]; with `fake_audio`, every page's microphone plays that
/// WAV file (16-bit PCM, looped) instead of Chromium's beeps.
pub fn drive_scenario(
    g: &Gateway,
    pages: Value,
    actions: Value,
    final_wait_ms: u64,
    deadline_ms: u64,
    fake_audio: Option<&std::path::Path>,
) -> std::thread::JoinHandle<Value> {
    let dir = workspace().join("tests/browser");
    assert!(
        dir.join("node_modules/@bandwidth/webrtc-browser").exists()
            && dir.join("page/bundle.js").exists(),
        "browser test page not built: scripts/test runs `npm ci && npm run build` in tests/browser"
    );
    let ca = workspace().join("tests/data/tls/ca.pem");
    let scenario = g
        .scratch()
        .join(format!("scenario-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &scenario,
        json!({
            "websocketUrl": g.ws_base(),
            // With HTTPS, Chromium trusts the test CA (an NSS database of its own).
            "caFile": g.is_https().then(|| ca.display().to_string()),
            "pages": pages,
            "actions": actions,
            "finalWaitMs": final_wait_ms,
            "deadlineMs": deadline_ms,
            "fakeAudioFile": fake_audio.map(|p| p.display().to_string()),
        })
        .to_string(),
    )
    .unwrap();
    let https = g.is_https();
    std::thread::spawn(move || {
        let mut node = Command::new("node");
        // Chromium and its helpers in the driver's group: a browser left behind by a
        // driver that died is ended with it (below).
        crate::own_group(&mut node);
        node.arg("drive.js").arg(&scenario).current_dir(&dir);
        if https {
            // The driver's own REST calls trust the test CA too.
            node.env("NODE_EXTRA_CA_CERTS", &ca);
        }
        let child = node
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run node");
        let group = child.id();
        let out = child.wait_with_output().expect("run node");
        // Whatever the driver left running (a browser of a failed scenario).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stderr(std::process::Stdio::null())
            .status();
        assert!(
            out.status.success(),
            "drive.js failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON line")
    })
}

/// The `available`/`unavailable` events a page saw at its final look.
pub fn stream_events<'a>(page: &'a Value, kind: &str) -> Vec<&'a Value> {
    page["final"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

/// The page's one available stream at its final look: from `participant`, with its
/// strongest received frequency within 40 Hz of `hz`. Returns the stream's event.
pub fn assert_one_stream_heard<'a>(page: &'a Value, participant: &str, hz: f64) -> &'a Value {
    let available = stream_events(page, "available");
    assert_eq!(available.len(), 1, "{page}");
    assert_eq!(available[0]["participantId"], participant);
    let endpoint = available[0]["endpointId"].as_str().unwrap_or_default();
    let peak = page["final"]["peaks"][endpoint].as_f64().unwrap_or(0.0);
    assert!(
        (hz - 40.0..hz + 40.0).contains(&peak),
        "browser's strongest frequency {peak} Hz: {page}"
    );
    available[0]
}
