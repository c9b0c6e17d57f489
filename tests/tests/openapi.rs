//! `/v1/openapi.json` is generated from the code, covers the whole API and validates.

use std::process::Command;

use patchbay_tests::Gateway;
use serde_json::Value;

#[tokio::test]
async fn openapi_document_is_complete_and_valid() {
    let g = Gateway::start().await;
    let r = reqwest::get(format!("{}/v1/openapi.json", g.base()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push((
                method.clone(),
                path.clone(),
                op["operationId"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    for (method, path, id) in [
        ("post", "/v1/accounts/{accountId}/participants", "createParticipant"),
        ("get", "/v1/accounts/{accountId}/participants/{participantId}", "getParticipant"),
        ("delete", "/v1/accounts/{accountId}/participants/{participantId}", "deleteParticipant"),
        ("post", "/v1/accounts/{accountId}/sessions", "createSession"),
        ("get", "/v1/accounts/{accountId}/sessions/{sessionId}", "getSession"),
        ("delete", "/v1/accounts/{accountId}/sessions/{sessionId}", "deleteSession"),
        ("get", "/v1/accounts/{accountId}/sessions/{sessionId}/participants", "listSessionParticipants"),
        ("put", "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}", "addParticipantToSession"),
        ("delete", "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}", "removeParticipantFromSession"),
        ("get", "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}/subscriptions", "getParticipantSubscriptions"),
        ("put", "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}/subscriptions", "updateParticipantSubscriptions"),
        ("get", "/health", "health"),
        ("get", "/ready", "ready"),
        ("get", "/metrics", "metrics"),
        ("get", "/v1/cluster", "getCluster"),
        // The console's additions.
        ("get", "/v1/accounts/{accountId}/sessions", "listSessions"),
        ("get", "/v1/accounts/{accountId}/sessions/{sessionId}/media", "getSessionMedia"),
        ("get", "/v1/accounts/{accountId}/sessions/{sessionId}/webhooks", "listWebhooks"),
        ("get", "/v1/accounts/{accountId}/participants/{participantId}/dialogs", "listDialogs"),
        ("get", "/v1/accounts/{accountId}/ops", "getOps"),
        ("get", "/v1/accounts/{accountId}/events", "events"),
    ] {
        assert!(
            operations.iter().any(|(m, p, o)| m == method && p == path && o == id),
            "{method} {path} ({id}) missing from the OpenAPI document"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["Basic"]["scheme"],
        "basic"
    );

    let file = g.scratch().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let python = std::env::var("PATCHBAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e}; scripts/test installs openapi-spec-validator")
        });
    assert!(
        out.status.success(),
        "openapi-spec-validator rejected the document (or is not installed: scripts/test installs it):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
