//! Where recordings' files go after they are written: an S3-compatible server (moto,
//! stopped and started again, and across a `kill -9` of the gateway), and the
//! retention that deletes them.

use std::time::{Duration, Instant};

use patchbay_tests::media::Law;
use patchbay_tests::recordings::{complete, record};
use patchbay_tests::sipp::SippCall;
use patchbay_tests::{Api, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Wait until every file of a recording is `uploaded`; its body.
async fn uploaded(api: &Api, s: &str, id: &str, limit: Duration) -> Value {
    let end = Instant::now() + limit;
    loop {
        let r = api
            .call(Method::GET, &format!("/sessions/{s}/recordings/{id}"), None)
            .await;
        let files = r.body["files"].as_array().cloned().unwrap_or_default();
        if r.body["status"] == "complete"
            && !files.is_empty()
            && files.iter().all(|f| f["uploaded"] == true)
        {
            return r.body;
        }
        assert!(
            Instant::now() < end,
            "recording {id} not uploaded: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Record `mode` as WAV for about 2 s and stop; the recording's id once complete.
async fn two_seconds(api: &Api, s: &str, mode: &str) -> String {
    let r = record(api, s, json!({"mode": mode, "format": "wav"})).await;
    let id = r["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop = api
        .call(
            Method::DELETE,
            &format!("/sessions/{s}/recordings/{id}"),
            None,
        )
        .await;
    assert_eq!(stop.status, StatusCode::NO_CONTENT);
    complete(api, s, &id).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_recordings_reach_the_bucket_when_it_comes_back_and_after_a_crash() {
    use patchbay_tests::s3::S3Server;
    let mut s3 = S3Server::start("calls").await;
    let endpoint = s3.endpoint();
    let mut g = Gateway::start_with(
        &[
            "--recordings-s3-bucket",
            "calls",
            "--recordings-s3-endpoint",
            &endpoint,
            "--recordings-s3-region",
            "us-east-1",
            "--recordings-s3-prefix",
            "rec/",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "patchbay-test"),
            ("AWS_SECRET_ACCESS_KEY", "patchbay-test-secret"),
        ],
    )
    .await;
    let api = g.api();
    let s = api.session(None).await;
    let (pa, ta) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &pa, Some(json!({"sessionId": s}))).await;
    let dir = g.scratch().to_path_buf();
    let call = SippCall::tone("a", &dir, 440, Law::Ulaw, 40000).token(&ta);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    let account = api
        .url("")
        .split("/v1/accounts/")
        .nth(1)
        .unwrap()
        .to_string();

    // A caller who hangs up while the recording goes on: its file is in the bucket
    // before the recording ends.
    let (pb, tb) = api
        .participant(json!({"publishPermissions": ["AUDIO"]}))
        .await;
    api.add(&s, &pb, Some(json!({"sessionId": s}))).await;
    let early = record(&api, &s, json!({"mode": "tracks", "format": "wav"})).await;
    let early = early["id"].as_str().unwrap().to_string();
    let short_call = SippCall::tone("b", &dir, 660, Law::Ulaw, 1500).token(&tb);
    short_call
        .spawn(&g, &dir)
        .assert_ok(Duration::from_secs(15));
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = api
            .call(
                Method::GET,
                &format!("/sessions/{s}/recordings/{early}"),
                None,
            )
            .await;
        assert_eq!(r.body["status"], "recording", "{}", r.text);
        let b_file = r.body["files"].as_array().and_then(|fs| {
            fs.iter()
                .find(|f| f["participantId"] == pb.as_str())
                .cloned()
        });
        if b_file
            .as_ref()
            .is_some_and(|f| f["uploaded"] == true && f["complete"] == true)
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "B's file not uploaded while recording: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.call(
        Method::DELETE,
        &format!("/sessions/{s}/recordings/{early}"),
        None,
    )
    .await;
    uploaded(&api, &s, &early, Duration::from_secs(20)).await;

    // The bucket is up: the file and the manifest arrive, the same bytes as the API's.
    let first = two_seconds(&api, &s, "tracks").await;
    let body = uploaded(&api, &s, &first, Duration::from_secs(20)).await;
    let f = &body["files"][0];
    let key = format!("rec/{account}/{s}/{first}/{}", f["name"].as_str().unwrap());
    let Some(in_bucket) = s3.object(&key).await else {
        panic!("{key} is not in the bucket: {:?}", s3.keys().await);
    };
    let (_, _, local) = api
        .bytes(&format!(
            "/sessions/{s}/recordings/{first}/files/{}",
            f["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(in_bucket, local);
    let manifest = s3
        .object(&format!("rec/{account}/{s}/{first}/manifest.json"))
        .await
        .expect("the manifest is in the bucket");
    let manifest: Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    assert_eq!(manifest["recordingId"], first.as_str());

    // The bucket is down while a recording finishes: it arrives once the bucket is back.
    s3.down();
    let second = two_seconds(&api, &s, "mixed").await;
    let end = Instant::now() + Duration::from_secs(20);
    while g.metric("patchbay_recording_upload_failures_total").await < 1.0 {
        assert!(Instant::now() < end, "no failed upload counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = api
        .call(
            Method::GET,
            &format!("/sessions/{s}/recordings/{second}"),
            None,
        )
        .await;
    assert_eq!(r.body["files"][0]["uploaded"], false, "{}", r.text);
    s3.up().await;
    let body = uploaded(&api, &s, &second, Duration::from_secs(30)).await;
    let name = body["files"][0]["name"].as_str().unwrap();
    assert!(s3
        .object(&format!("rec/{account}/{s}/{second}/{name}"))
        .await
        .is_some());

    // Down again, and the gateway is killed before it could upload: after its restart
    // the queue (the stored records) is taken again.
    s3.down();
    let third = two_seconds(&api, &s, "tracks").await;
    g.restart().await;
    drop(running);
    s3.up().await;
    let api = g.api();
    let body = uploaded(&api, &s, &third, Duration::from_secs(30)).await;
    let name = body["files"][0]["name"].as_str().unwrap();
    let bytes = s3
        .object(&format!("rec/{account}/{s}/{third}/{name}"))
        .await
        .expect("uploaded after the restart");
    assert!(bytes.len() > 16_000, "{} bytes", bytes.len());
    assert!(g.metric("patchbay_recording_files_uploaded_total").await >= 1.0);

    // A file removed from the disk before its upload is given up (not retried forever):
    // the queue drains and the manifest still arrives. (Removed while the gateway is
    // down: an upload in flight reads the file it opened, whatever happens to its name.)
    let call = SippCall::tone("a2", &dir, 440, Law::Ulaw, 20000).token(&ta);
    let running = call.spawn(&g, &dir);
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;
    s3.down();
    let fourth = two_seconds(&api, &s, "tracks").await;
    g.kill9();
    let rdir = g.data_dir().join("recordings").join(&fourth);
    for e in std::fs::read_dir(&rdir).expect("its directory") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "wav") {
            std::fs::remove_file(p).expect("remove");
        }
    }
    s3.up().await;
    g.restart().await;
    let api = g.api();
    let end = Instant::now() + Duration::from_secs(30);
    while s3
        .object(&format!("rec/{account}/{s}/{fourth}/manifest.json"))
        .await
        .is_none()
    {
        assert!(Instant::now() < end, "the manifest never arrived");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    g.wait_metric("patchbay_recording_uploads_pending", 0.0)
        .await;
    let r = api
        .call(
            Method::GET,
            &format!("/sessions/{s}/recordings/{fourth}"),
            None,
        )
        .await;
    assert_eq!(r.body["files"][0]["uploaded"], false, "{}", r.text);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_recordings_are_deleted_after_their_retention() {
    let g = Gateway::start_with(&["--recording-retention", "3s"], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let (pa, _) = api.participant(json!({})).await;
    api.add(&s, &pa, Some(json!({"sessionId": s}))).await;
    let id = two_seconds(&api, &s, "mixed").await;
    let dir = g.data_dir().join("recordings").join(&id);
    assert!(dir.join("manifest.json").exists());
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = api
            .call(Method::GET, &format!("/sessions/{s}/recordings/{id}"), None)
            .await;
        if r.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < end, "still there: {}", r.text);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!dir.exists(), "its files are gone");
    let list = api
        .call(Method::GET, &format!("/sessions/{s}/recordings"), None)
        .await;
    assert_eq!(list.body, json!([]));
}
