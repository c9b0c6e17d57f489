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
    let g = Gateway::start_with(
        &[
            "--console-dir",
            dir.to_str().unwrap(),
            "--operator",
            "ops:ops-secret",
        ],
        &[],
    )
    .await;
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
    // The browser's round trip, from its receiver reports; sipp sends none (`—`).
    assert!(
        browser["rtt"].as_str().unwrap().ends_with(" ms"),
        "{browser}"
    );
    assert_eq!(phone["rtt"], "—");
    assert!(
        mos(phone) < 4.0 && mos(browser) > mos(phone) + 0.3,
        "MOS {phone} vs {browser}"
    );
    // A mixed recording started and stopped from the page plays in it (about 3 s).
    let recording = r["recording"].as_str().unwrap_or_default();
    assert!(
        recording.contains("mixed · wav") && recording.contains("complete"),
        "{recording}"
    );
    let played = r["recordingPlayer"]["duration"].as_f64().unwrap_or(0.0);
    assert!(
        (2.5..6.0).contains(&played),
        "the player's duration {played} s"
    );
    assert_eq!(r["recordingPlayer"]["src"], "blob:");
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
    // Without the operator's credentials: counts, and no session, participant or alias.
    let anonymous: Vec<&str> = r["anonymousMetrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        anonymous
            .iter()
            .any(|l| l.starts_with("patchbay_streams{origin=\"phone\",media=\"AUDIO\"} 1")),
        "{anonymous:?}"
    );
    assert!(
        !anonymous
            .iter()
            .any(|l| l.contains("participant=") || l.contains("session=")),
        "{anonymous:?}"
    );

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

/// Read the event stream until an event named `name` arrives (at most `limit`).
async fn next_event(
    resp: &mut reqwest::Response,
    buf: &mut String,
    name: &str,
    limit: Duration,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        while let Some(at) = buf.find("\n\n") {
            let block: String = buf.drain(..at + 2).collect();
            let event = block.lines().find_map(|l| l.strip_prefix("event: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(e), Some(d)) = (event, data) {
                if e == name {
                    return serde_json::from_str(d).unwrap();
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no `{name}` event within {limit:?}; read: {buf}"))
            .unwrap()
            .expect("the stream ended");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

/// The console's additions are scoped like the rest of the API: an account's event stream
/// never tells another account's changes, its lists and views hold only its objects, and
/// the console's files are served from its directory only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_shows_an_account_only_its_own() {
    let g = Gateway::start_with(
        &[
            "--account",
            "acme:ua:pw-acme-1",
            "--account",
            "evil:ue:pw-evil-1",
            "--console-dir",
            "",
        ],
        &[],
    )
    .await;
    let acme = patchbay_tests::Api::new(&g.base(), "acme", "ua", "pw-acme-1");
    let evil = patchbay_tests::Api::new(&g.base(), "evil", "ue", "pw-evil-1");
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("{}/v1/accounts/acme/events", g.base()))
        .basic_auth("ua", Some("pw-acme-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    next_event(&mut stream, &mut buf, "hello", Duration::from_secs(5)).await;

    // The other account's session is not announced; ours is, first.
    let theirs = evil.session(Some("secret-plans")).await;
    let ours = acme.session(Some("support")).await;
    let change = next_event(&mut stream, &mut buf, "change", Duration::from_secs(5)).await;
    assert_eq!(
        change,
        json!({"kind": "session", "id": ours, "sessionId": ours})
    );
    let (p, _) = acme.participant(json!({"tag": "agent"})).await;
    acme.add(&ours, &p, Some(json!({"sessionId": ours}))).await;
    let change = next_event(&mut stream, &mut buf, "change", Duration::from_secs(5)).await;
    assert_eq!(
        (change["kind"].as_str(), change["id"].as_str()),
        (Some("participant"), Some(p.as_str()))
    );

    // Lists and views: our objects only; theirs are not found.
    let list = acme.call(reqwest::Method::GET, "/sessions", None).await;
    assert_eq!(list.body, json!([{"id": ours, "tag": "support"}]));
    for path in [
        format!("/sessions/{theirs}/media"),
        format!("/sessions/{theirs}/webhooks"),
    ] {
        let r = acme.call(reqwest::Method::GET, &path, None).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
    }
    let r = client
        .get(format!(
            "{}/v1/accounts/acme/events?sessionId={theirs}",
            g.base()
        ))
        .basic_auth("ua", Some("pw-acme-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let media = acme
        .call(
            reqwest::Method::GET,
            &format!("/sessions/{ours}/media"),
            None,
        )
        .await;
    assert_eq!(
        media.body["running"], false,
        "nobody joined: {}",
        media.text
    );
    let r = evil
        .with_account("acme")
        .call(reqwest::Method::GET, "/events", None)
        .await;
    assert_eq!(r.status, 403, "another account's stream: {}", r.text);
    let ops = acme.call(reqwest::Method::GET, "/ops", None).await;
    assert_eq!(ops.body["store"], "ok", "{}", ops.text);

    // The files: `/` leads to the console; with no console_dir it says how to get one, in
    // the API's error shape; a page's script gets no Basic challenge.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(format!("{}/", g.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/console/")
    );
    let r = client
        .get(format!("{}/console/", g.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("./scripts/run"),
        "{body}"
    );
    let r = client
        .get(format!("{}/v1/accounts/acme/sessions", g.base()))
        .header("x-requested-with", "XMLHttpRequest")
        .basic_auth("ua", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_none());

    // One account cannot take every event stream: the 33rd of acme's is refused (counted),
    // evil still gets one.
    let open = |user: &'static str, password: &'static str, account: &'static str| {
        let (client, base) = (client.clone(), g.base());
        async move {
            client
                .get(format!("{base}/v1/accounts/{account}/events"))
                .basic_auth(user, Some(password))
                .send()
                .await
                .unwrap()
        }
    };
    let mut held = vec![stream];
    for _ in 1..32 {
        let r = open("ua", "pw-acme-1", "acme").await;
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let r = open("ua", "pw-acme-1", "acme").await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("at most 32 per account"),
        "{body}"
    );
    assert_eq!(
        g.metric("patchbay_console_streams_refused_total").await,
        1.0
    );
    assert_eq!(open("ue", "pw-evil-1", "evil").await.status(), 200);
    drop(held);
}

/// The console's files: served with a strict policy, and nothing outside its directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_files_stay_inside_their_directory() {
    let dir = console_dir();
    let g = Gateway::start_with(&["--console-dir", dir.to_str().unwrap()], &[]).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/console/", g.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = r.text().await.unwrap();
    let script = page
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page's script");
    let r = client
        .get(format!("{}{script}", g.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    // A route of the page gets the page; a dot segment anywhere is not found (raw paths: a
    // client normalizing `..` would not send them).
    let r = client
        .get(format!("{}/console/sessions/x", g.base()))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("<div id=\"banner\""));
    let addr = g.base().trim_start_matches("http://").to_string();
    for raw in [
        "/console/../Cargo.toml",
        "/console/%2e%2e/Cargo.toml",
        "/console/.vite/x",
        "/console/assets/..%2f..%2fpackage.json",
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            format!("GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            !out.contains("\"name\"") && !out.contains("[package]"),
            "{raw} read a file outside: {out}"
        );
        let status = out.split(' ').nth(1).unwrap_or("");
        assert!(status == "404" || status == "400", "{raw}: {status}");
    }
}

/// What the console shows of a dialog and of callbacks, through its additions: the event
/// stream tells each dialog change, the dialogs list follows its state to the hang-up,
/// and the webhook log shows a failing callback retried (attempts, next retry, the
/// error) and then delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_a_dialog_and_its_callbacks_retries() {
    use patchbay_tests::dialing::{dial_body, dialer};
    use patchbay_tests::hooks::{Answer, Receiver};
    let trunk = SippCall::new("trunk", "uas_answer.xml")
        .var("RING_MS", "300")
        .var("HANGUP", "wait")
        .var("HOLD_MS", "0")
        .var("WAV", "tone660.wav")
        .var("CHECK_UUI", "false");
    let hooks = Receiver::start().await;
    hooks.answer("/cb/agent", Answer::Status(500));
    let g = Gateway::start_with(&["--sip-trunk", &trunk.trunk_uri()], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let p = dialer(&api, &s, &hooks, "agent").await;
    let dir = g.scratch().to_path_buf();
    patchbay_tests::media::write_tone_wav(
        &dir.join("tone660.wav"),
        660.0,
        2,
        patchbay_tests::media::Law::Ulaw,
    );
    let far_end = trunk.serve(&dir);
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/accounts/dev/events", g.base()))
        .basic_auth("dev", Some("dev"))
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    next_event(&mut stream, &mut buf, "hello", Duration::from_secs(5)).await;

    // The console's "Call" button: POST in the session's path.
    let r = api
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{s}/participants/{p}/dialogs"),
            Some(dial_body("+15551234567")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = r.body["dialogId"].as_str().unwrap().to_string();
    let change = next_event(&mut stream, &mut buf, "change", Duration::from_secs(5)).await;
    assert_eq!(
        (change["kind"].as_str(), change["id"].as_str()),
        (Some("dialog"), Some(d.as_str()))
    );
    let list = |api: patchbay_tests::Api, p: String| async move {
        api.call(
            reqwest::Method::GET,
            &format!("/participants/{p}/dialogs"),
            None,
        )
        .await
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        next_event(&mut stream, &mut buf, "change", Duration::from_secs(10)).await;
        let l = list(api.clone(), p.clone()).await;
        assert_eq!(l.body[0]["dialogId"], d.as_str(), "{}", l.text);
        if l.body[0]["state"] == "ANSWERED" {
            break;
        }
        assert!(Instant::now() < deadline, "never ANSWERED: {}", l.text);
    }
    api.call(
        reqwest::Method::DELETE,
        &format!("/participants/{p}/dialogs/{d}"),
        None,
    )
    .await;
    far_end.assert_ok(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while list(api.clone(), p.clone()).await.body[0]["state"] != "TERMINATED" {
        assert!(Instant::now() < deadline, "never TERMINATED");
        next_event(&mut stream, &mut buf, "change", Duration::from_secs(10)).await;
    }

    // The receiver fails: the log shows the retry; then it answers, and it is delivered.
    let log = |api: patchbay_tests::Api, s: String, p: String| async move {
        api.call(
            reqwest::Method::GET,
            &format!("/sessions/{s}/webhooks?participantId={p}"),
            None,
        )
        .await
        .body
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let retrying = loop {
        let l = log(api.clone(), s.clone(), p.clone()).await;
        if let Some(e) = l
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["status"] == "retrying")
        {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no retry in the log: {l}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(retrying["attempts"].as_u64().unwrap() >= 1, "{retrying}");
    assert!(retrying["nextAttemptMs"].as_u64().is_some(), "{retrying}");
    assert!(
        retrying["lastError"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 500"),
        "{retrying}"
    );
    assert!(
        retrying["url"].as_str().unwrap().ends_with("/cb/agent"),
        "{retrying}"
    );
    hooks.answer("/cb/agent", Answer::Status(200));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = log(api.clone(), s.clone(), p.clone()).await;
        let entries = l.as_array().unwrap();
        let states: Vec<&str> = entries.iter().filter_map(|e| e["event"].as_str()).collect();
        if !entries.is_empty() && entries.iter().all(|e| e["status"] == "delivered") {
            assert!(states.contains(&"onSipDialogStateChange"), "{l}");
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered: {l}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
