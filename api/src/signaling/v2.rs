//! The legacy v2 device protocol (deviceApiVersion V2, `@bandwidth/webrtc-browser`'s
//! `v2/`): one peer connection per published stream and per received stream, the
//! client always offering.
//!
//! - `requestToPublish {mediaTypes, alias?}` → an `SdpRequest` naming a new publishing
//!   endpoint (`direction: "sendonly"`); the kinds the participant may not publish are
//!   left out (none left: an error).
//! - `offerSdp {sdpOffer, endpointId}` → `{sdpAnswer}`: for an endpoint this connection
//!   handed out, the stream's publishing connection; otherwise the receiving endpoint
//!   the session announced with `sdpNeeded`.
//! - `unpublish {endpointId}`, `leave`, `ping`, `setMediaPreferences`.
//! - Notifications: `sdpNeeded` (an `SdpRequest` with `direction: "recvonly"`) and
//!   `endpointRemoved {endpointId}`.
//!
//! ICE: the gateway is ICE-lite with its one host candidate in every answer, and learns
//! the browser's address from its checks, so it never trickles (`candidates` is left
//! out of answers and it sends no `addIceCandidate`); the client's trickled candidates
//! (`addIceCandidate`, only non-host ones) are accepted and need nothing.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use patchbay_conference::events::DeviceNote;
use patchbay_conference::media::session::{
    DeviceInput, EndpointRequest, MediaType, PublishRequest, MAX_PUBLISH_ENDPOINTS,
};

use super::{rpc_error, shortened, Device, Step};

/// Longest alias a publish request may carry (as for aliases in subscriptions).
const MAX_ALIAS_CHARS: usize = crate::dto::MAX_ALIAS_CHARS;

/// A connection's v2 state: the publishing endpoints it handed out.
#[derive(Default)]
pub(crate) struct State {
    /// Endpoint id → the alias its stream is published under.
    published: HashMap<Arc<str>, Option<String>>,
}

/// What the session says, for a v2 client (None: nothing to send).
pub(super) fn note(note: &DeviceNote) -> Option<Value> {
    match note {
        DeviceNote::SdpNeeded(r) => Some(json!({
            "jsonrpc": "2.0",
            "method": "sdpNeeded",
            "params": sdp_request(r, "recvonly"),
        })),
        DeviceNote::EndpointRemoved(endpoint) => Some(json!({
            "jsonrpc": "2.0",
            "method": "endpointRemoved",
            "params": {"endpointId": &**endpoint},
        })),
        _ => None,
    }
}

/// The SDK's `SdpRequest`.
fn sdp_request(r: &EndpointRequest, direction: &str) -> Value {
    let mut v = json!({
        "endpointId": &*r.endpoint,
        "mediaTypes": r.media_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "direction": direction,
        "participantId": r.participant_id.to_string(),
    });
    if let Some(a) = &r.alias {
        v["alias"] = json!(a);
    }
    v
}

/// What one client message asks of us (sans-IO).
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Reply(Value),
    Nothing,
    Leave,
    RequestToPublish {
        id: Value,
        media_types: Vec<MediaType>,
        alias: Option<String>,
    },
    OfferSdp {
        id: Value,
        endpoint: String,
        sdp: String,
    },
    Unpublish(String),
}

fn error(id: Option<Value>, code: i64, message: &str) -> Outcome {
    match id {
        Some(id) => Outcome::Reply(rpc_error(id, code, message)),
        None => Outcome::Nothing,
    }
}

/// Read one JSON-RPC message.
pub(crate) fn handle(text: &str) -> Outcome {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Outcome::Reply(rpc_error(Value::Null, -32700, "parse error: not JSON"));
    };
    let Some(obj) = v.as_object() else {
        return Outcome::Reply(rpc_error(
            Value::Null,
            -32600,
            "invalid request: not an object",
        ));
    };
    let id = obj.get("id").cloned();
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return Outcome::Reply(rpc_error(
            id.unwrap_or(Value::Null),
            -32600,
            "invalid request: no method",
        ));
    };
    let params = obj.get("params").unwrap_or(&Value::Null);
    match method {
        "setMediaPreferences" | "ping" => match id {
            Some(id) => Outcome::Reply(json!({"jsonrpc": "2.0", "result": {}, "id": id})),
            None => Outcome::Nothing,
        },
        "leave" => Outcome::Leave,
        // ICE-lite: the client's candidates need nothing (see the module docs).
        "addIceCandidate" => Outcome::Nothing,
        "requestToPublish" => {
            let Some(id) = id else {
                return Outcome::Nothing;
            };
            let mut media_types = Vec::new();
            for t in params["mediaTypes"].as_array().into_iter().flatten() {
                let t = match t.as_str() {
                    Some("AUDIO") => MediaType::Audio,
                    Some("VIDEO") => MediaType::Video,
                    _ => {
                        return error(
                            Some(id),
                            -32602,
                            "invalid params: mediaTypes may hold only AUDIO and VIDEO",
                        )
                    }
                };
                if !media_types.contains(&t) {
                    media_types.push(t);
                }
            }
            if media_types.is_empty() {
                return error(
                    Some(id),
                    -32602,
                    "invalid params: mediaTypes (AUDIO, VIDEO) is required",
                );
            }
            let alias = match &params["alias"] {
                Value::Null => None,
                Value::String(a) if a.chars().count() <= MAX_ALIAS_CHARS => Some(a.clone()),
                _ => {
                    return error(
                        Some(id),
                        -32602,
                        &format!(
                            "invalid params: alias must be a string of at most {MAX_ALIAS_CHARS} characters"
                        ),
                    )
                }
            };
            Outcome::RequestToPublish {
                id,
                media_types,
                alias,
            }
        }
        "offerSdp" => match (params["sdpOffer"].as_str(), params["endpointId"].as_str()) {
            (Some(sdp), Some(endpoint)) => match id {
                Some(id) => Outcome::OfferSdp {
                    id,
                    endpoint: endpoint.to_string(),
                    sdp: sdp.to_string(),
                },
                None => Outcome::Nothing,
            },
            _ => error(
                id,
                -32602,
                "invalid params: sdpOffer and endpointId (strings) are required",
            ),
        },
        "unpublish" => match params["endpointId"].as_str() {
            Some(endpoint) => Outcome::Unpublish(endpoint.to_string()),
            None => error(
                id,
                -32602,
                "invalid params: endpointId (a string) is required",
            ),
        },
        other => error(
            id,
            -32601,
            &format!("method not found: {}", shortened(other, 40)),
        ),
    }
}

/// One client message.
pub(super) async fn message(state: &mut State, device: &mut Device, text: &str) -> Step {
    match handle(text) {
        Outcome::Reply(v) => Step::Reply(v),
        Outcome::Nothing => Step::Nothing,
        Outcome::Leave => Step::Leave,
        Outcome::RequestToPublish {
            id,
            media_types,
            alias,
        } => Step::Reply(request_to_publish(state, device, id, media_types, alias)),
        Outcome::OfferSdp { id, endpoint, sdp } => {
            Step::Reply(offer_sdp(state, device, id, endpoint, sdp).await)
        }
        Outcome::Unpublish(endpoint) => {
            if let Some((endpoint, _)) = state.published.remove_entry(endpoint.as_str()) {
                device.send(DeviceInput::Unpublish { endpoint }).await;
            }
            Step::Nothing
        }
    }
}

/// A new publishing endpoint for the kinds the participant may publish.
fn request_to_publish(
    state: &mut State,
    device: &Device,
    id: Value,
    mut media_types: Vec<MediaType>,
    alias: Option<String>,
) -> Value {
    media_types.retain(|t| match t {
        MediaType::Audio => device.may_publish_audio,
        MediaType::Video => device.may_publish_video,
    });
    if media_types.is_empty() {
        return rpc_error(
            id,
            -32000,
            "the participant may not publish these media types",
        );
    }
    if state.published.len() >= MAX_PUBLISH_ENDPOINTS {
        device.metrics.signaling_refused.inc();
        return rpc_error(
            id,
            -32000,
            &format!(
                "too many publishing endpoints: a device may have at most {MAX_PUBLISH_ENDPOINTS}"
            ),
        );
    }
    let request = EndpointRequest {
        endpoint: Arc::from(uuid::Uuid::new_v4().to_string()),
        media_types,
        participant_id: device.key.participant_id,
        alias: alias.clone(),
    };
    state.published.insert(request.endpoint.clone(), alias);
    json!({"jsonrpc": "2.0", "id": id, "result": sdp_request(&request, "sendonly")})
}

/// An offer for a publishing endpoint of ours, or for a receiving endpoint the session
/// announced.
async fn offer_sdp(
    state: &State,
    device: &mut Device,
    id: Value,
    endpoint: String,
    sdp: String,
) -> Value {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let input = match state.published.get_key_value(endpoint.as_str()) {
        Some((endpoint, alias)) => DeviceInput::Publish {
            request: PublishRequest {
                sdp,
                aliases: Vec::new(),
                default_alias: alias.clone(),
                endpoint: Some(endpoint.clone()),
                may_publish_audio: device.may_publish_audio,
                may_publish_video: device.may_publish_video,
            },
            reply,
        },
        None => DeviceInput::Receive {
            endpoint: Arc::from(endpoint),
            sdp,
            reply,
        },
    };
    match device.ask(input, answer).await {
        Ok(a) => json!({"jsonrpc": "2.0", "id": id, "result": {"sdpAnswer": a.sdp}}),
        Err(e) => rpc_error(id, -32000, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_of_the_sdk() {
        assert_eq!(
            handle(
                r#"{"jsonrpc":"2.0","method":"setMediaPreferences","params":{"sendRecv":false,"aggregationType":"NONE","protocol":"WEB_RTC"},"id":1}"#
            ),
            Outcome::Reply(json!({"jsonrpc":"2.0","result":{},"id":1}))
        );
        assert_eq!(
            handle(
                r#"{"jsonrpc":"2.0","method":"requestToPublish","params":{"mediaTypes":["AUDIO","VIDEO"],"alias":"cam"},"id":2}"#
            ),
            Outcome::RequestToPublish {
                id: json!(2),
                media_types: vec![MediaType::Audio, MediaType::Video],
                alias: Some("cam".into()),
            }
        );
        assert_eq!(
            handle(
                r#"{"jsonrpc":"2.0","method":"offerSdp","params":{"sdpOffer":"v=0","endpointId":"e1"},"id":3}"#
            ),
            Outcome::OfferSdp {
                id: json!(3),
                endpoint: "e1".into(),
                sdp: "v=0".into()
            }
        );
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"unpublish","params":{"endpointId":"e1"}}"#),
            Outcome::Unpublish("e1".into())
        );
        assert_eq!(
            handle(
                r#"{"jsonrpc":"2.0","method":"addIceCandidate","params":{"endpointId":"e1","candidate":"candidate:1 1 udp 1 203.0.113.1 5000 typ srflx","sdpMid":"0","sdpMLineIndex":0}}"#
            ),
            Outcome::Nothing
        );
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"leave"}"#),
            Outcome::Leave
        );
    }

    #[test]
    fn bad_params_are_refused_with_json_rpc_errors() {
        for text in [
            r#"{"jsonrpc":"2.0","method":"requestToPublish","params":{"mediaTypes":[]},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"requestToPublish","params":{"mediaTypes":["APPLICATION"]},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"requestToPublish","params":{"mediaTypes":["AUDIO"],"alias":7},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"offerSdp","params":{"sdpOffer":"v=0"},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"unpublish","params":{},"id":1}"#,
        ] {
            let Outcome::Reply(v) = handle(text) else {
                panic!("{text}")
            };
            assert_eq!(v["error"]["code"], -32602, "{text}");
            assert_eq!(v["id"], 1);
        }
        let long = format!(
            r#"{{"jsonrpc":"2.0","method":"requestToPublish","params":{{"mediaTypes":["AUDIO"],"alias":"{}"}},"id":1}}"#,
            "a".repeat(MAX_ALIAS_CHARS + 1)
        );
        assert!(matches!(handle(&long), Outcome::Reply(v) if v["error"]["code"] == -32602));
        let Outcome::Reply(v) = handle(r#"{"jsonrpc":"2.0","method":"answerSdp","id":9}"#) else {
            panic!()
        };
        assert_eq!(v["error"]["code"], -32601);
    }

    #[test]
    fn notes_become_the_sdks_notifications() {
        let p = uuid::Uuid::new_v4();
        let v = note(&DeviceNote::SdpNeeded(EndpointRequest {
            endpoint: "ep".into(),
            media_types: vec![MediaType::Audio],
            participant_id: p,
            alias: Some("phone".into()),
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","method":"sdpNeeded","params":{
                "endpointId":"ep","mediaTypes":["AUDIO"],"direction":"recvonly",
                "participantId":p.to_string(),"alias":"phone"}})
        );
        assert_eq!(
            note(&DeviceNote::EndpointRemoved("ep".into())).unwrap(),
            json!({"jsonrpc":"2.0","method":"endpointRemoved","params":{"endpointId":"ep"}})
        );
    }
}
