//! Property tests of what the API parses from the network: JSON-RPC messages from
//! devices, close reasons, and REST requests (any route, method and body, mostly
//! broken copies of real ones) through the real router over a real store. Nothing
//! may panic; every refusal is a 4xx in the documented JSON shape whose text is
//! human (no debug output); nothing answers 500.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use patchbay_conference::fuzzing::{hostile, hostile_text};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use tower::ServiceExt;

use crate::signaling::{close_reason, handle, handle_v2, Outcome, OutcomeV2};

/// Debug output that must never reach a client.
fn looks_internal(text: &str) -> bool {
    [
        "0x7f",
        "PointerOffset",
        "Error {",
        "Some(",
        "panicked",
        "src/",
        "sqlx",
        "\\\"kind\\\"",
    ]
    .iter()
    .any(|s| text.contains(s))
}

const RPC_SEEDS: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":1,"method":"offerSdp","params":{"sdpOffer":"v=0\r\n","mediaMetadata":{"mediaStreams":{"s1":{"alias":"mic"}}}}}"#,
    r#"{"jsonrpc":"2.0","id":"x","method":"answerSdp","params":{"peerType":"subscribe","sdpAnswer":"v=0\r\n"}}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"setMediaPreferences","params":{"protocol":"WEBRTC"}}"#,
    r#"{"jsonrpc":"2.0","method":"leave","params":{}}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
    r#"{"jsonrpc":"2.0","id":[1,{"a":null}],"method":"deviceDiagnostics","params":[1e999]}"#,
];

const RPC_V2_SEEDS: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":1,"method":"requestToPublish","params":{"mediaTypes":["AUDIO","VIDEO"],"alias":"cam"}}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"offerSdp","params":{"sdpOffer":"v=0\r\n","endpointId":"e1"}}"#,
    r#"{"jsonrpc":"2.0","method":"addIceCandidate","params":{"endpointId":"e1","candidate":"candidate:1 1 udp 1 203.0.113.1 5 typ srflx","sdpMid":"0","sdpMLineIndex":0}}"#,
    r#"{"jsonrpc":"2.0","method":"unpublish","params":{"endpointId":"e1"}}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"setMediaPreferences","params":{"sendRecv":false,"aggregationType":"NONE","protocol":"WEB_RTC"}}"#,
];

/// A JSON-RPC reply of ours is well formed and its error text is short and human.
fn check_reply(v: &Value) -> Result<(), TestCaseError> {
    prop_assert_eq!(&v["jsonrpc"], "2.0");
    if let Some(err) = v.get("error") {
        prop_assert!(err["code"].is_i64(), "{v}");
        let message = err["message"].as_str().unwrap_or_default();
        prop_assert!(
            !message.is_empty() && message.len() < 200 && !looks_internal(message),
            "{message}"
        );
    } else {
        prop_assert!(v.get("result").is_some(), "{v}");
    }
    Ok(())
}

proptest! {
    #[test]
    fn v2_jsonrpc_messages_get_json_rpc_answers(text in hostile_text(RPC_V2_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(), 512)) {
        match handle_v2(&text) {
            OutcomeV2::Reply(v) => check_reply(&v)?,
            OutcomeV2::RequestToPublish { media_types, alias, .. } => {
                prop_assert!(!media_types.is_empty() && media_types.len() <= 2);
                prop_assert!(alias.is_none_or(|a| a.chars().count() <= crate::dto::MAX_ALIAS_CHARS));
            }
            _ => {}
        }
    }

    #[test]
    fn jsonrpc_messages_get_json_rpc_answers(text in hostile_text(RPC_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(), 512)) {
        if let Outcome::Reply(v) = handle(&text) {
            prop_assert_eq!(&v["jsonrpc"], "2.0");
            if let Some(err) = v.get("error") {
                prop_assert!(err["code"].is_i64(), "{v}");
                let message = err["message"].as_str().unwrap_or_default();
                prop_assert!(!message.is_empty() && message.len() < 200 && !looks_internal(message), "{message}");
            } else {
                prop_assert!(v.get("result").is_some(), "{v}");
            }
        }
    }

    #[test]
    fn close_reasons_fit_a_close_frame(reason in ".{0,200}") {
        let cut = close_reason(reason.clone());
        prop_assert!(cut.len() <= 123);
        prop_assert!(reason.starts_with(&cut));
    }
}

/// The REST API in-process: a real router over a real SQLite store.
struct Api {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl Api {
    fn new() -> Api {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let router = rt.block_on(async {
            let conference = patchbay_conference::testing::sqlite_conference(dir.path()).await;
            let webhooks = crate::webhooks::Webhooks::start(conference.clone(), Default::default());
            crate::router(crate::AppState {
                conference,
                accounts: Arc::new(crate::Accounts::new([(
                    "acct".to_string(),
                    "u".to_string(),
                    "p".to_string(),
                )])),
                metrics: Arc::new(crate::Metrics::new()),
                webhooks,
                limits: Default::default(),
                http_metrics: Default::default(),
                cluster: crate::cluster::ClusterApi {
                    operator: None,
                    lease: Duration::from_secs(10),
                    node_id: "fuzz".into(),
                    info: Arc::new(|| serde_json::Value::Null),
                    hops: None,
                },
                console: crate::console::Console::new(None),
                churn: Default::default(),
                handovers: Default::default(),
            })
        });
        Api {
            rt,
            router,
            _dir: dir,
        }
    }

    /// `None` when the path is not even a URI (hyper refuses it before us).
    fn call(&self, method: Method, path: &str, body: Vec<u8>) -> Option<(StatusCode, Vec<u8>)> {
        let Ok(req) = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", "Basic dTpw") // u:p
            .header("content-type", "application/json")
            .body(Body::from(body))
        else {
            return None;
        };
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            Some((status, body))
        })
    }

    fn id(&self, method: Method, path: &str, body: &str, field: &str) -> String {
        let (status, body) = self
            .call(method, path, body.as_bytes().to_vec())
            .expect("a URI");
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        v.pointer(field)
            .and_then(Value::as_str)
            .expect("an id")
            .to_string()
    }
}

#[test]
fn rest_requests_with_hostile_paths_and_bodies() {
    let api = Api::new();
    let a = "/v1/accounts/acct";
    let s = api.id(
        Method::POST,
        &format!("{a}/sessions"),
        r#"{"tag":"t"}"#,
        "/id",
    );
    let p = api.id(
        Method::POST,
        &format!("{a}/participants"),
        r#"{"publishPermissions":["AUDIO"]}"#,
        "/participant/id",
    );
    let q = api.id(
        Method::POST,
        &format!("{a}/participants"),
        "{}",
        "/participant/id",
    );
    // p is a member (its subscriptions can change); q comes and goes.
    api.call(
        Method::PUT,
        &format!("{a}/sessions/{s}/participants/{p}"),
        b"{}".to_vec(),
    );
    let routes: Vec<(Method, String)> = vec![
        (Method::POST, format!("{a}/participants")),
        (Method::GET, format!("{a}/participants/{p}")),
        (Method::POST, format!("{a}/sessions")),
        (Method::GET, format!("{a}/sessions/{s}")),
        (Method::GET, format!("{a}/sessions/{s}/participants")),
        (Method::PUT, format!("{a}/sessions/{s}/participants/{q}")),
        (Method::DELETE, format!("{a}/sessions/{s}/participants/{q}")),
        (
            Method::GET,
            format!("{a}/sessions/{s}/participants/{p}/subscriptions"),
        ),
        (
            Method::PUT,
            format!("{a}/sessions/{s}/participants/{p}/subscriptions"),
        ),
        (Method::POST, format!("{a}/participants/{p}/dialogs")),
        (Method::PATCH, format!("{a}/participants/{p}/dialogs/{q}")),
    ];
    let bodies: Vec<Vec<u8>> = [
        r#"{"callbackUrl":"https://example.com/cb","publishPermissions":["AUDIO","VIDEO"],"tag":"x","deviceApiVersion":"V3"}"#.to_string(),
        r#"{"tag":"session"}"#.to_string(),
        format!(r#"{{"sessionId":"{s}","participants":[{{"participantId":"{q}","streamAliases":["mic","cam"]}}]}}"#),
        r#"{"to":"+15551234567","from":"+15557654321","userToUser":"abc;encoding=base64"}"#.to_string(),
        r#"{"state":"TERMINATED"}"#.to_string(),
        String::new(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    let paths: Vec<Vec<u8>> = routes.iter().map(|(_, r)| r.clone().into_bytes()).collect();
    let strategy = (
        prop_oneof![
            // A real route with its method, a broken route, or another method (not DELETE:
            // the session and p must stay for the rest of the run).
            7 => prop::sample::select(routes.clone()),
            2 => (prop::sample::select(routes.clone()), hostile_text(paths, 64))
                .prop_map(|((m, _), p)| (m, p)),
            1 => (
                prop::sample::select(vec![Method::GET, Method::POST, Method::PUT, Method::PATCH]),
                prop::sample::select(routes.clone()),
            )
                .prop_map(|(m, (_, p))| (m, p)),
        ],
        hostile(bodies, 2048),
    );
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |((method, path), body)| {
        let Some((status, out)) = api.call(method.clone(), &path, body) else {
            return Ok(());
        };
        prop_assert!(
            !status.is_server_error(),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&out)
        );
        if status.is_client_error() {
            let v: Value = serde_json::from_slice(&out).map_err(|e| {
                TestCaseError::fail(format!("{method} {path}: {status} not JSON ({e})"))
            })?;
            let text = v["error"]
                .as_str()
                .or(v["message"].as_str())
                .unwrap_or_default();
            prop_assert!(!text.is_empty(), "{method} {path}: {status} {v}");
            prop_assert!(!looks_internal(text), "{method} {path}: {status} {text}");
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
