//! The REST control API, end to end against the real binary over real HTTP.

use patchbay_tests::{assert_error, Api, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn participants_create_get_delete() {
    let g = Gateway::start().await;
    let api = g.api();

    // Defaults: both permissions, V3, no session, empty subscriptions.
    let r = api.call(Method::POST, "/participants", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let p = &r.body["participant"];
    assert_eq!(p["publishPermissions"], json!(["AUDIO", "VIDEO"]));
    assert_eq!(p["deviceApiVersion"], "V3");
    assert_eq!(p["sessions"], json!([]));
    assert_eq!(p["subscriptions"], json!({}));
    assert!(p.get("tag").is_none(), "absent tag is omitted, not null");
    let token = r.body["token"].as_str().unwrap();
    assert!(token.len() < 180, "token is {} chars", token.len());
    assert_eq!(token.split('.').count(), 3);

    // All fields; deviceApiVersion is case-insensitive (Bandwidth's sample sends "v3").
    let r = api
        .call(
            Method::POST,
            "/participants",
            Some(json!({"publishPermissions": ["AUDIO"], "tag": "agent-7",
                        "deviceApiVersion": "v3", "callbackUrl": "https://example.com/cb"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.body["participant"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.body["participant"]["publishPermissions"],
        json!(["AUDIO"])
    );
    assert_eq!(r.body["participant"]["deviceApiVersion"], "V3");

    let r = api
        .call(Method::GET, &format!("/participants/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["tag"], "agent-7");
    assert_eq!(r.body["callbackUrl"], "https://example.com/cb");

    let r = api
        .call(Method::DELETE, &format!("/participants/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.text.is_empty());
    let r = api
        .call(Method::GET, &format!("/participants/{id}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, &id);
    let r = api
        .call(Method::DELETE, &format!("/participants/{id}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, &id);
}

#[tokio::test]
async fn participant_validation() {
    let g = Gateway::start().await;
    let api = g.api();
    let cases: Vec<(&str, &str)> = vec![
        (r#"{"publishPermissions": ["AUDIO", "SCREEN"]}"#, "SCREEN"),
        (
            r#"{"tag": "123456789012345678901234567890123456789012345678901"}"#,
            "50",
        ),
        (r#"{"deviceApiVersion": "V9"}"#, "V9"),
        (r#"{"callbackUrl": "ftp://example.com/x"}"#, "callbackUrl"),
        (r#"{"callbackUrl": "not a url"}"#, "callbackUrl"),
        (r#"{"publishPermissions": "AUDIO"}"#, "malformed JSON"),
        (r#"{"tag": "x""#, "malformed JSON"),
        ("[1,2", "malformed JSON"),
    ];
    for (body, mention) in cases {
        let r = api.raw(Method::POST, "/participants", Some(body)).await;
        assert_error(&r, StatusCode::BAD_REQUEST, mention);
    }
    // A 50-character tag is fine; unknown fields are ignored; nulls mean absent.
    let r = api
        .raw(
            Method::POST,
            "/participants",
            Some(r#"{"tag": "12345678901234567890123456789012345678901234567890", "id": null, "sessions": null, "callbackUrl": null}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .call(Method::GET, "/participants/not-a-uuid", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "not a UUID");
    // Nothing was created by the failed calls.
    let metrics = reqwest::get(format!("{}/metrics", g.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("patchbay_participants 1"), "{metrics}");
}

#[tokio::test]
async fn sessions_create_get_list_delete() {
    let g = Gateway::start().await;
    let api = g.api();
    let r = api
        .call(Method::POST, "/sessions", Some(json!({"tag": "standup"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let sid = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["tag"], "standup");
    let r = api.call(Method::POST, "/sessions", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("tag").is_none());

    let r = api
        .call(Method::GET, &format!("/sessions/{sid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"id": sid, "tag": "standup"}));

    let r = api
        .call(Method::GET, &format!("/sessions/{sid}/participants"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!([]));

    let (a, _) = api.participant(json!({})).await;
    let (b, _) = api.participant(json!({"tag": "b"})).await;
    api.add(&sid, &a, None).await;
    api.add(&sid, &b, Some(json!({"sessionId": sid}))).await;
    let r = api
        .call(Method::GET, &format!("/sessions/{sid}/participants"), None)
        .await;
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], a.as_str());
    assert_eq!(list[1]["id"], b.as_str());
    assert_eq!(list[1]["sessions"], json!([sid]));
    assert_eq!(list[1]["subscriptions"], json!({"sessionId": sid}));

    let r = api
        .call(
            Method::POST,
            "/sessions",
            Some(json!({"tag": "x".repeat(51)})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "50");
    let r = api.raw(Method::POST, "/sessions", Some("{oops")).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed JSON");

    let r = api
        .call(Method::DELETE, &format!("/sessions/{sid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api
        .call(Method::GET, &format!("/sessions/{sid}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, &sid);
    // Participants outlive the session; their membership is gone.
    let r = api
        .call(Method::GET, &format!("/participants/{a}"), None)
        .await;
    assert_eq!(r.body["sessions"], json!([]));
    assert_eq!(r.body["subscriptions"], json!({}));
    let r = api.call(Method::GET, "/sessions/123", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "sessionId");
}

#[tokio::test]
async fn membership_rules() {
    let g = Gateway::start().await;
    let api = g.api();
    let s1 = api.session(None).await;
    let s2 = api.session(None).await;
    let (a, _) = api.participant(json!({})).await;
    let (outsider, _) = api.participant(json!({})).await;

    // Unknown session or participant: 404; bad ids: 400.
    let missing = uuid::Uuid::new_v4();
    let r = api
        .call(
            Method::PUT,
            &format!("/sessions/{missing}/participants/{a}"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "session");
    let r = api
        .call(
            Method::PUT,
            &format!("/sessions/{s1}/participants/{missing}"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "participant");
    let r = api
        .call(
            Method::PUT,
            &format!("/sessions/{s1}/participants/zzz"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "participantId");

    // Subscriptions naming a participant that does not exist: 400, and the participant
    // is not added (naming one that is not a member yet is fine: subscriptions_get_put…).
    let r = api
        .call(
            Method::PUT,
            &format!("/sessions/{s1}/participants/{a}"),
            Some(json!({"participants": [{"participantId": missing}]})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, &missing.to_string());
    let r = api
        .call(
            Method::PUT,
            &format!("/sessions/{s1}/participants/{a}"),
            Some(json!({"sessionId": s2})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "sessionId");
    let r = api
        .raw(
            Method::PUT,
            &format!("/sessions/{s1}/participants/{a}"),
            Some("{x"),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed JSON");
    let r = api
        .call(Method::GET, &format!("/sessions/{s1}/participants"), None)
        .await;
    assert_eq!(r.body, json!([]));

    api.add(&s1, &a, None).await;
    // Idempotent re-add.
    api.add(&s1, &a, None).await;
    // In s1 already: s2 refuses.
    let r = api
        .call(
            Method::PUT,
            &format!("/sessions/{s2}/participants/{a}"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "already in session");

    // 20 participants per session; the 21st gets 409.
    for _ in 0..19 {
        let (p, _) = api.participant(json!({})).await;
        api.add(&s1, &p, None).await;
    }
    let r = api
        .call(
            Method::PUT,
            &format!("/sessions/{s1}/participants/{outsider}"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "20");

    // Remove: 204, then 404 (not a member any more); the freed seat can be taken.
    api.remove(&s1, &a).await;
    let r = api
        .call(
            Method::DELETE,
            &format!("/sessions/{s1}/participants/{a}"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not in session");
    api.add(&s1, &outsider, None).await;
    api.add(&s2, &a, None).await;
}

#[tokio::test]
async fn subscriptions_get_put_full_replace() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (agent, _) = api.participant(json!({})).await;
    let (caller, _) = api.participant(json!({})).await;
    let (supervisor, _) = api.participant(json!({})).await;
    api.add(&s, &agent, Some(json!({"sessionId": s}))).await;
    api.add(&s, &caller, None).await;
    api.add(&s, &supervisor, Some(json!({"sessionId": s})))
        .await;
    let path = |p: &str| format!("/sessions/{s}/participants/{p}/subscriptions");

    let r = api.call(Method::GET, &path(&agent), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"sessionId": s}));
    let r = api.call(Method::GET, &path(&caller), None).await;
    assert_eq!(r.body, json!({}));

    // Whisper: the caller hears only the agent's "microphone" alias.
    let whisper = json!({"sessionId": s, "participants": [
        {"participantId": agent, "streamAliases": ["microphone"]}]});
    let r = api
        .call(Method::PUT, &path(&caller), Some(whisper.clone()))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = api.call(Method::GET, &path(&caller), None).await;
    assert_eq!(r.body, whisper);

    // Full replace, not merge.
    let barge = json!({"participants": [{"participantId": agent}, {"participantId": supervisor}]});
    api.call(Method::PUT, &path(&caller), Some(barge.clone()))
        .await;
    let r = api.call(Method::GET, &path(&caller), None).await;
    assert_eq!(r.body, barge);

    // No body: all subscriptions removed.
    let r = api.call(Method::PUT, &path(&caller), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.call(Method::GET, &path(&caller), None).await;
    assert_eq!(r.body, json!({}));

    // A participant that is not a member (yet) may be named: 204, kept as given (the
    // courtroom sample sends such updates concurrently with the add); one that does not
    // exist, or belongs to another account, may not.
    let (stranger, _) = api.participant(json!({})).await;
    let early = json!({"participants": [{"participantId": stranger}]});
    let r = api
        .call(Method::PUT, &path(&caller), Some(early.clone()))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = api.call(Method::GET, &path(&caller), None).await;
    assert_eq!(r.body, early);
    let nobody = uuid::Uuid::new_v4().to_string();
    let r = api
        .call(
            Method::PUT,
            &path(&caller),
            Some(json!({"participants": [{"participantId": nobody}]})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "does not exist");
    let r = api
        .call(
            Method::PUT,
            &path(&caller),
            Some(json!({"participants": [{"participantId": "nope"}]})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "participantId");
    let r = api.raw(Method::PUT, &path(&caller), Some("[}")).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed JSON");
    let r = api.call(Method::GET, &path(&stranger), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not in session");
    let r = api
        .call(Method::PUT, &path(&stranger), Some(json!({})))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not in session");

    // Removing the supervisor takes its own subscriptions; the caller's naming it stay
    // (they apply again when it comes back). Deleting it prunes every mention.
    api.call(Method::PUT, &path(&caller), Some(barge.clone()))
        .await;
    api.call(
        Method::DELETE,
        &format!("/sessions/{s}/participants/{supervisor}"),
        None,
    )
    .await;
    let r = api.call(Method::GET, &path(&caller), None).await;
    assert_eq!(r.body, barge);
    let r = api
        .call(Method::GET, &format!("/participants/{supervisor}"), None)
        .await;
    assert_eq!(r.body["subscriptions"], json!({}));
    api.call(Method::DELETE, &format!("/participants/{supervisor}"), None)
        .await;
    let r = api.call(Method::GET, &path(&caller), None).await;
    assert_eq!(r.body, json!({"participants": [{"participantId": agent}]}));
}

#[tokio::test]
async fn authentication_and_account_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("accounts.toml");
    std::fs::write(
        &cfg,
        r#"
[[accounts]]
id = "acme"
user = "acme-api"
password = "acme-pw"

[[accounts]]
id = "globex"
user = "globex-api"
password = "globex-pw"
"#,
    )
    .unwrap();
    let g = Gateway::start_with(&["--config", cfg.to_str().unwrap()], &[]).await;
    let acme = Api::new(&g.base(), "acme", "acme-api", "acme-pw");
    let globex = Api::new(&g.base(), "globex", "globex-api", "globex-pw");
    let (p, _) = acme.participant(json!({})).await;
    let s = acme.session(None).await;

    // No credentials / wrong password / unknown user: 401 {"message"}.
    let r = reqwest::Client::new()
        .post(acme.url("/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].is_string(), "{body}");
    for api in [
        Api::new(&g.base(), "acme", "acme-api", "wrong"),
        Api::new(&g.base(), "acme", "nobody", "acme-pw"),
        Api::new(&g.base(), "dev", "dev", "dev"),
    ] {
        let r = api
            .call(Method::GET, &format!("/participants/{p}"), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert!(r.body["message"].is_string());
    }
    // Valid credentials of another account on acme's paths: 403 {"message"}.
    let r = globex
        .with_account("acme")
        .call(Method::GET, &format!("/participants/{p}"), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body["message"].as_str().unwrap().contains("acme"));
    let r = globex
        .with_account("acme")
        .call(Method::POST, "/sessions", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Globex on its own paths never sees acme's objects.
    let r = globex
        .call(Method::GET, &format!("/participants/{p}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, &p);
    let r = globex
        .call(Method::GET, &format!("/sessions/{s}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, &s);
    let r = globex
        .call(Method::DELETE, &format!("/sessions/{s}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, &s);
    let gs = globex.session(None).await;
    let r = globex
        .call(
            Method::PUT,
            &format!("/sessions/{gs}/participants/{p}"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, &p);
    // Acme still has everything.
    let r = acme
        .call(Method::GET, &format!("/participants/{p}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_error_bodies() {
    let g = Gateway::start().await;
    let api = g.api();
    let r = api.call(Method::GET, "/nothing-here", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "no such resource");
    let r = api.call(Method::PATCH, "/sessions", None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "PATCH");
    // Every response names its request id.
    let r = reqwest::get(format!("{}/health", g.base())).await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn request_id_in_error_body_appears_in_the_log_line() {
    let g = Gateway::start_with(&["--log-format", "json"], &[]).await;
    let r = g
        .api()
        .call(Method::GET, "/sessions/not-a-uuid", None)
        .await;
    let rid = r.body["requestId"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let log = g.log();
    let line = log
        .lines()
        .find(|l| l.contains(&rid))
        .unwrap_or_else(|| panic!("request id {rid} not in log:\n{log}"));
    let v: Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["status"], 400);
    assert_eq!(v["route"], "/v1/accounts/{accountId}/sessions/{sessionId}");
    assert_eq!(log.lines().filter(|l| l.contains(&rid)).count(), 1);
}

#[tokio::test]
async fn health_ready_metrics() {
    let g = Gateway::start().await;
    let c = reqwest::Client::new();
    let r = c.get(format!("{}/health", g.base())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{}/ready", g.base())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let api = g.api();
    api.session(None).await;
    api.participant(json!({})).await;
    api.call(Method::GET, "/sessions/bad", None).await;
    let text = c
        .get(format!("{}/metrics", g.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "patchbay_sessions 1",
        "patchbay_participants 1",
        r#"patchbay_http_requests_total{method="POST",route="/v1/accounts/{accountId}/sessions",status="200"} 1"#,
        r#"patchbay_http_requests_total{method="GET",route="/v1/accounts/{accountId}/sessions/{sessionId}",status="400"} 1"#,
        "patchbay_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[tokio::test]
async fn sessions_expire_after_their_ttl() {
    let g = Gateway::start_with(&["--session-ttl", "2s"], &[]).await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, _) = api.participant(json!({})).await;
    api.add(&s, &p, Some(json!({"sessionId": s}))).await;
    let r = api.call(Method::GET, &format!("/sessions/{s}"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let r = api.call(Method::GET, &format!("/sessions/{s}"), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, &s);
    let r = api
        .call(Method::GET, &format!("/participants/{p}"), None)
        .await;
    assert_eq!(r.body["sessions"], json!([]));
    assert_eq!(r.body["subscriptions"], json!({}));
    let metrics = reqwest::get(format!("{}/metrics", g.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("patchbay_sessions 0"), "{metrics}");
}

/// Request bodies are bounded: lists in a subscription, each refused with a 400 that
/// names the limit, and the body itself (413 in the same JSON shape as every error).
#[tokio::test]
async fn request_bodies_are_bounded_with_errors_that_name_the_limit() {
    let g = Gateway::start().await;
    let api = g.api();
    let s = api.session(None).await;
    let (p, _) = api.participant(json!({})).await;
    let (q, _) = api.participant(json!({})).await;
    api.add(&s, &q, None).await;
    let path = format!("/sessions/{s}/participants/{p}");

    let many: Vec<Value> = (0..60_000).map(|i| json!(format!("a{i}"))).collect();
    let r = api
        .call(
            Method::PUT,
            &path,
            Some(json!({"sessionId": s, "participants": [{"participantId": q, "streamAliases": many[..40]}]})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "at most 32 aliases");

    let long = "x".repeat(101);
    let r = api
        .call(
            Method::PUT,
            &path,
            Some(json!({"participants": [{"participantId": q, "streamAliases": [long]}]})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "at most 100 characters");

    let crowd: Vec<Value> = (0..21)
        .map(|_| json!({"participantId": uuid::Uuid::new_v4().to_string()}))
        .collect();
    let r = api
        .call(Method::PUT, &path, Some(json!({"participants": crowd})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "at most 20 participants");

    // 60,000 aliases is a body over the limit: 413, as JSON.
    let r = api
        .call(
            Method::PUT,
            &path,
            Some(json!({"participants": [{"participantId": q, "streamAliases": many}]})),
        )
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too large");

    // Nothing of it was stored: p is not in the session.
    let r = api
        .call(Method::GET, &format!("/participants/{p}"), None)
        .await;
    assert_eq!(r.body["sessions"], json!([]), "{}", r.text);
}
