//! Recordings through the API, as the recording tests drive them.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::Api;

/// Start a recording; panics unless 200.
pub async fn record(api: &Api, s: &str, body: Value) -> Value {
    let r = api
        .call(
            Method::POST,
            &format!("/sessions/{s}/recordings"),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "recording", "{}", r.text);
    r.body
}

/// Wait until a recording is `complete`; its body.
pub async fn complete(api: &Api, s: &str, id: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let r = api
            .call(Method::GET, &format!("/sessions/{s}/recordings/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        if r.body["status"] == "complete" {
            return r.body;
        }
        assert!(
            Instant::now() < end,
            "recording {id} not complete: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
