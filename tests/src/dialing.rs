//! Placing dialogs (`POST …/dialogs`) and following their callbacks, for the tests
//! of outbound calls.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::hooks::Receiver;
use crate::{Api, Resp};

/// The `onSipDialogStateChange` callbacks delivered at `path`: (state, eventData).
pub fn dialog_states(hooks: &Receiver, path: &str) -> Vec<(String, Value)> {
    hooks
        .delivered(path)
        .into_iter()
        .filter(|b| b["event"] == "onSipDialogStateChange")
        .map(|b| {
            (
                b["state"].as_str().unwrap().to_string(),
                b["eventData"].clone(),
            )
        })
        .collect()
}

pub async fn wait_state(hooks: &Receiver, path: &str, state: &str) {
    hooks
        .wait_for(
            Duration::from_secs(15),
            &format!("{state} at {path}"),
            |h| {
                h.iter()
                    .any(|h| h.path == path && h.status == 200 && h.body["state"] == state)
            },
        )
        .await;
}

/// A participant that may publish audio, in session `s` hearing it, with a callback.
pub async fn dialer(api: &Api, s: &str, hooks: &Receiver, name: &str) -> String {
    let (p, _) = api
        .participant(json!({"publishPermissions": ["AUDIO"], "callbackUrl": hooks.url(&format!("/cb/{name}")), "tag": name}))
        .await;
    api.add(s, &p, Some(json!({"sessionId": s}))).await;
    p
}

/// POST a dialog for participant `p`.
pub async fn dial(api: &Api, p: &str, body: Value) -> Resp {
    api.call(
        Method::POST,
        &format!("/participants/{p}/dialogs"),
        Some(body),
    )
    .await
}

/// A dialog's body to `to`, from a fixed number, with a token as `userToUser`.
pub fn dial_body(to: &str) -> Value {
    json!({"type": "SIP", "data": {"to": to, "from": "+15557654321", "userToUser": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln;encoding=jwt"}})
}

/// `DELETE` the dialog `d` of participant `p` (hang up), expecting 204.
pub async fn hang_up(api: &Api, p: &str, d: &str) {
    let r = api
        .call(
            Method::DELETE,
            &format!("/participants/{p}/dialogs/{d}"),
            None,
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::NO_CONTENT, "{}", r.text);
}
