//! Bandwidth's own sample applications, their call flows reproduced against Patchbay
//! (`tests/node/samples.js` is their server side: the same REST requests in the same
//! order and concurrency, through Bandwidth's node SDK or raw HTTP as each sample
//! does), with real peers: the unmodified browser SDK in Chromium, sipp placing the
//! calls Bandwidth Voice would place for the samples' transfer BXML. What changes is
//! what a migrating user changes: the REST base URL, the browsers' `websocketUrl`, the
//! transfer's SIP URI.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use patchbay_tests::browser::{drive_full, stream_events};
use patchbay_tests::media::{assert_audible, decode_window, now_epoch, received, Capture, Law};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{workspace, Gateway};
use serde_json::{json, Value};

/// A sample's server side (`node samples.js SAMPLE`), on a port of its own.
struct App {
    child: Child,
    base: String,
}

impl App {
    fn start(g: &Gateway, sample: &str) -> App {
        let dir = workspace().join("tests/node");
        let mut child = Command::new("node")
            .arg("samples.js")
            .arg(sample)
            .current_dir(&dir)
            .env("PATCHBAY_BASE", g.base())
            .env("PATCHBAY_WS", g.ws_base())
            .env("PATCHBAY_SIP_URI", format!("sip:127.0.0.1:{}", g.sip_port))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (scripts/test installs tests/node)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the app's port");
        let port: Value = serde_json::from_str(&line).expect("{\"port\": N}");
        App {
            child,
            base: format!("http://127.0.0.1:{}", port["port"]),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> String {
        let mut r = reqwest::Client::new().request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("the app answers");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        text
    }

    async fn get(&self, path: &str) -> Value {
        serde_json::from_str(&self.call(reqwest::Method::GET, path, None).await)
            .unwrap_or(Value::Null)
    }

    async fn post(&self, path: &str, body: Value) -> String {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `uui` and the SIP URI of a BXML `<Transfer><SipUri uui="…">sip:…</SipUri>`.
fn transfer_of(bxml: &str) -> (String, String) {
    let sip_uri = bxml
        .split("<SipUri")
        .nth(1)
        .unwrap_or_else(|| panic!("no SipUri: {bxml}"));
    let uui = sip_uri
        .split("uui=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no uui: {bxml}"));
    let uri = sip_uri
        .split("\">")
        .nth(1)
        .and_then(|r| r.split("</SipUri>").next())
        .unwrap_or_else(|| panic!("no SIP URI: {bxml}"));
    (uui.to_string(), uri.to_string())
}

/// The participant ids of the streams a page saw become available, and of those that
/// then became unavailable, in order.
fn stream_history(page: &Value) -> (Vec<String>, Vec<String>) {
    let events = page["final"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut by_endpoint = std::collections::HashMap::new();
    let (mut available, mut unavailable) = (Vec::new(), Vec::new());
    for e in &events {
        let endpoint = e["endpointId"].as_str().unwrap_or_default().to_string();
        match e["type"].as_str() {
            Some("available") => {
                let p = e["participantId"].as_str().unwrap_or_default().to_string();
                by_endpoint.insert(endpoint, p.clone());
                available.push(p);
            }
            Some("unavailable") => {
                unavailable.push(by_endpoint.get(&endpoint).cloned().unwrap_or(endpoint))
            }
            _ => {}
        }
    }
    (available, unavailable)
}

/// Asserts that a page received a stream of each of `who` exactly once, and lost each
/// again (a room state that took it away), and no other.
fn heard_then_lost<const N: usize>(page: &Value, who: [&String; N]) {
    let (mut got, mut lost) = stream_history(page);
    let mut want: Vec<String> = who.iter().map(|s| s.to_string()).collect();
    got.sort();
    lost.sort();
    want.sort();
    assert_eq!(got, want, "streams received: {page}");
    assert_eq!(lost, want, "streams lost: {page}");
}

/// Bandwidth-Samples/webrtc-transfer-nodejs, server.js: two agents' browsers, each in
/// the session of its agent (`/startBrowserCall`); a phone call for agent 1
/// (`/startPSTNCall`, then `/callAnswered` answers Voice with `generateTransferBxml`);
/// `/transferPSTNCall` moves the live caller to agent 2 with `updateParticipantSession`
/// (removeParticipantFromSession, then addParticipantToSession). The call is not hung
/// up; agent 1 loses the caller, agent 2 gets it and the caller hears agent 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_transfer_nodejs_moves_a_live_caller_from_agent_1_to_agent_2() {
    let g = Gateway::start().await;
    let app = App::start(&g, "transfer");
    let agent1 = app.get("/startBrowserCall?agent_id=1").await;
    let agent2 = app.get("/startBrowserCall?agent_id=2").await;
    let pstn = app.get("/startPSTNCall?agent_id=1").await;
    let call_id = pstn["callId"].as_str().unwrap();
    let bxml = app.post("/callAnswered", json!({"callId": call_id})).await;
    let (uui, uri) = transfer_of(&bxml);
    // Exactly as Bandwidth's SDK writes it: the Voice call id's hex, then the token.
    let hex = call_id[1..].replace('-', "");
    assert!(uui.starts_with(&format!("{hex};encoding=base64,")), "{uui}");
    assert!(uui.ends_with(";encoding=jwt"), "{uui}");
    assert_eq!(uri, format!("sip:127.0.0.1:{}", g.sip_port));

    let dir = g.scratch().to_path_buf();
    let phone = SippCall::transfer("pstn", &dir, 660, 16000, &uui);
    let capture = Capture::start(&dir, &[phone.media_port]);
    let running = phone.spawn_to(uri.trim_start_matches("sip:"), &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let report = drive_full(
        &g,
        json!([
            {"token": agent1["token"], "connectTimeoutMs": 5000, "publish": {"alias": "agent"}},
            {"token": agent2["token"], "connectTimeoutMs": 5000, "publish": {"alias": "agent"},
             "steps": [{"wait": 2500}]},
        ]),
        json!([{"afterMs": 0, "method": "GET",
                "url": format!("{}/transferPSTNCall?from_agent_id=1&to_agent_id=2", app.base)}]),
        4000,
    );
    let done = now_epoch();
    // The caller's own BYE ends it: any BYE of ours fails sipp.
    running.assert_ok(Duration::from_secs(30));
    let packets = capture.stop();
    let caller = pstn["participantId"].as_str().unwrap();
    let pages = report["pages"].as_array().unwrap();
    let (got1, lost1) = stream_history(&pages[0]);
    assert_eq!(
        (got1, lost1),
        (vec![caller.to_string()], vec![caller.to_string()]),
        "{}",
        pages[0]
    );
    let (got2, lost2) = stream_history(&pages[1]);
    assert_eq!(got2, [caller], "{}", pages[1]);
    assert!(lost2.is_empty(), "{}", pages[1]);
    let endpoint = stream_events(&pages[1], "available")[0]["endpointId"]
        .as_str()
        .unwrap_or_default();
    let peak = pages[1]["final"]["peaks"][endpoint].as_f64().unwrap_or(0.0);
    assert!(
        (620.0..700.0).contains(&peak),
        "agent 2 hears the caller: {peak} Hz"
    );
    // After the transfer the caller hears agent 2's microphone.
    let rx = received(&packets, phone.media_port);
    assert_audible(
        &decode_window(&rx, Law::Ulaw, done - 3.0, done),
        "the transferred caller",
    );
}

/// Bandwidth/webrtc-sample-conference-node, server.ts: `POST /conferences` (a session by
/// slug, checked with GET), `POST /conferences/:slug/participants?version=v3` for each
/// browser (lowercase "v3", AUDIO+VIDEO, a callbackUrl, a session-level subscription;
/// the app hands the browser its websocketUrl), a phone through `/callback/joinConference`
/// (SpeakSentence, then `generateTransferBxmlVerb(token, callId, sipTransferUrl)`).
/// Everyone hears everyone; each onLeave makes the app clean the participant up
/// (remove, delete) and the last one's deletes the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_sample_conference_node_joins_browsers_and_a_phone_and_cleans_up_on_leave() {
    let g = Gateway::start().await;
    let app = App::start(&g, "conference");
    let conference: Value = serde_json::from_str(
        &app.post("/conferences", json!({"name": "Blue Whale"}))
            .await,
    )
    .unwrap();
    assert_eq!(conference["slug"], "blue-whale");
    let mut browsers = Vec::new();
    for _ in 0..2 {
        let b: Value = serde_json::from_str(
            &app.post("/conferences/blue-whale/participants?version=v3", json!({}))
                .await,
        )
        .unwrap();
        assert_eq!(b["websocketUrl"], g.ws_base(), "{b}");
        browsers.push(b);
    }
    let code = browsers[0]["conferenceCode"].as_str().unwrap();
    let bxml = app
        .post(
            "/callback/joinConference",
            json!({"digits": code, "callId": "c-93d6f3c0-be584596-0b74-4fa2-8015-d8ede84bd1a4"}),
        )
        .await;
    assert!(bxml.contains("<SpeakSentence"), "{bxml}");
    let (uui, uri) = transfer_of(&bxml);
    assert!(
        uui.starts_with("93d6f3c0be5845960b744fa28015d8ede84bd1a4;encoding=base64,"),
        "{uui}"
    );
    let dir = g.scratch().to_path_buf();
    let phone = SippCall::transfer("phone", &dir, 440, 12000, &uui);
    let capture = Capture::start(&dir, &[phone.media_port]);
    let running = phone.spawn_to(uri.trim_start_matches("sip:"), &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    // Both browsers in, a look at what each hears, then each leaves (the SDK's
    // disconnect: `leave`), while the phone talks on until it hangs up.
    let report = drive_full(
        &g,
        json!([
            {"token": browsers[0]["deviceToken"], "connectTimeoutMs": 5000, "publish": {"alias": "camera", "video": true}},
            {"token": browsers[1]["deviceToken"], "connectTimeoutMs": 5000, "publish": {"alias": "camera", "video": true},
             "steps": [{"wait": 2500}]},
        ]),
        json!([
            {"afterMs": 0, "look": true},
            {"afterMs": 0, "page": 0, "call": "disconnect"},
            {"afterMs": 500, "page": 1, "call": "disconnect"},
        ]),
        0,
    );
    let pages = report["pages"].as_array().unwrap();
    // When the first look began (ms since the epoch), both browsers in.
    let looked = pages[0]["looks"][0]["at"].as_f64().unwrap_or(0.0) / 1000.0;
    for (i, page) in pages.iter().enumerate() {
        let look = &page["looks"][0];
        let other = browsers[1 - i]["participantId"]
            .as_str()
            .unwrap()
            .to_string();
        let got: Vec<&str> = look["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "available")
            .map(|e| e["participantId"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(got.len(), 2, "the other browser and the phone: {page}");
        assert!(got.contains(&other.as_str()), "{page}");
        let phone_stream = look["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["alias"] == "phone")
            .unwrap_or_else(|| panic!("no phone stream: {page}"));
        let endpoint = phone_stream["endpointId"].as_str().unwrap_or_default();
        let peak = look["peaks"][endpoint].as_f64().unwrap_or(0.0);
        assert!(
            (400.0..480.0).contains(&peak),
            "the phone heard: {peak} Hz: {page}"
        );
    }
    running.assert_ok(Duration::from_secs(30));
    let packets = capture.stop();
    let rx = received(&packets, phone.media_port);
    assert_audible(
        &decode_window(&rx, Law::Ulaw, looked - 2.0, looked),
        "the phone",
    );

    // Every participant left (the pages said `leave`, the phone hung up): the app got
    // each onLeave and cleaned up; the last one deleted the session.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let state = app.get("/state").await;
        if state["sessions"] == json!([]) && state["participants"] == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "not cleaned up: {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api = g.api();
    let r = api
        .call(
            reqwest::Method::GET,
            &format!("/sessions/{}", conference["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::NOT_FOUND, "{}", r.text);
    for b in &browsers {
        let r = api
            .call(
                reqwest::Method::GET,
                &format!("/participants/{}", b["participantId"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(r.status, reqwest::StatusCode::NOT_FOUND, "{}", r.text);
    }
}

/// Bandwidth-Samples/webrtc-courtroom-demo-js, server.js and roomstate.js: a judge, a
/// translator and an LEP (limited English proficiency) join (`/startBrowserCall?role=`:
/// the token comes back while `updateSubscriptions` adds the new participant and updates
/// everyone else's subscriptions, concurrently, naming it before its add lands); the
/// judge calls a phone (`/startPSTNCall`, `/callAnswered`: the transfer BXML goes back
/// while the phone's add is in flight); the judge moves the room from inPrep to
/// inSession to inTervention (`/roomTopology`). Every request succeeds, and each
/// browser receives exactly the roles its room state lets it hear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_courtroom_demo_js_follows_the_room_states() {
    let g = Gateway::start().await;
    let app = App::start(&g, "courtroom");
    let mut people = Vec::new();
    for role in ["judge", "translator", "LEP"] {
        let r: Value = serde_json::from_str(
            &app.post(&format!("/startBrowserCall?role={role}"), json!({}))
                .await,
        )
        .unwrap();
        people.push(r);
    }
    let id = |i: usize| people[i]["participant_id"].as_str().unwrap().to_string();
    let (judge, translator, lep) = (id(0), id(1), id(2));
    // The judge calls a phone, which takes the judge's role.
    let pstn = app
        .get(&format!(
            "/startPSTNCall?participant={judge}&destinationTn=9195551212"
        ))
        .await;
    let bxml = app
        .post("/callAnswered", json!({"callId": pstn["callId"]}))
        .await;
    let (uui, uri) = transfer_of(&bxml);
    let phone_id = pstn["participantId"].as_str().unwrap().to_string();
    let dir = g.scratch().to_path_buf();
    let phone = SippCall::transfer("pstn", &dir, 660, 20000, &uui);
    let running = phone.spawn_to(uri.trim_start_matches("sip:"), &dir);
    let topology = |state: &str, after: u64| {
        json!({"afterMs": after, "method": "GET",
               "url": format!("{}/roomTopology?participant={judge}&state={state}", app.base)})
    };
    let page = |i: usize| json!({"token": people[i]["token"], "connectTimeoutMs": 5000, "publish": {"alias": "mic"}});
    let report = drive_full(
        &g,
        json!([page(0), page(1), page(2)]),
        json!([topology("inSession", 2500), topology("inTervention", 2500)]),
        2500,
    );
    drop(running);
    let settled = app.get("/settled").await;
    assert_eq!(
        settled["errors"],
        json!([]),
        "every request succeeded: {settled}"
    );
    let pages = report["pages"].as_array().unwrap();
    // inPrep: the judge hears translator and LEP; the translator hears the judges (the
    // judge and the judge's phone); the LEP nobody. inSession adds the LEP's judge and
    // translator, and the translator's LEP. inTervention: nobody hears anybody.
    heard_then_lost(&pages[0], [&translator, &lep]);
    heard_then_lost(&pages[1], [&judge, &phone_id, &lep]);
    heard_then_lost(&pages[2], [&judge, &phone_id, &translator]);
}
