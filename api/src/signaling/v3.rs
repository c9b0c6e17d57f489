//! The v3 device protocol (deviceApiVersion V3): one publishing connection the
//! client offers on (`offerSdp` with `mediaMetadata`, answered with `streamMetadata`)
//! and one subscribing connection we offer on (`sdpOffer` with increasing
//! `sdpRevision`, answered by `answerSdp`). The SDK's JSON-RPC for v3 is written here
//! only.

use serde_json::{json, Value};

use patchbay_conference::events::DeviceNote;
use patchbay_conference::media::session::{DeviceInput, DeviceKey, Offer, PublishRequest};

use super::{rpc_error, shortened, Device, Step};

/// What the session says, for a v3 client (None: nothing to send).
pub(super) fn note(device: &DeviceKey, note: &DeviceNote) -> Option<Value> {
    match note {
        DeviceNote::Offer(offer) => Some(sdp_offer(device, offer)),
        _ => None,
    }
}

/// One client message.
pub(super) async fn message(device: &mut Device, text: &str) -> Step {
    match handle(text) {
        Outcome::OfferSdp { id, params } => Step::Reply(publish(device, id, &params).await),
        Outcome::AnswerSdp { id, sdp } => {
            device.send(DeviceInput::Answer { sdp }).await;
            match id {
                Some(id) => Step::Reply(json!({"jsonrpc": "2.0", "result": {}, "id": id})),
                None => Step::Nothing,
            }
        }
        Outcome::Reply(v) => Step::Reply(v),
        Outcome::Nothing => Step::Nothing,
        Outcome::Leave => Step::Leave,
    }
}

/// The JSON-RPC `sdpOffer` notification for an [`Offer`].
fn sdp_offer(device: &DeviceKey, offer: &Offer) -> Value {
    let mut metadata = serde_json::Map::new();
    for s in &offer.streams {
        let mut m = json!({
            "endpointId": s.stream,
            "mediaTypes": s.media_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "participantId": s.participant_id.to_string(),
        });
        if let Some(a) = &s.alias {
            m["alias"] = json!(a);
        }
        metadata.insert(s.stream.clone(), m);
    }
    json!({"jsonrpc": "2.0", "method": "sdpOffer", "params": {
        "endpointId": &*device.unique_id,
        "sdpOffer": offer.sdp,
        "sdpRevision": offer.revision,
        "streamMetadata": metadata,
    }})
}

/// Most streams one publish may describe (the SDK publishes one per `MediaStream`).
const MAX_PUBLISHED_STREAMS: usize = 32;
/// Longest msid stream id (RFC 8830's msid-id: 1*64 token-char).
const MAX_MSID_CHARS: usize = 64;

/// What a publish may carry: a bounded number of streams with bounded ids and aliases,
/// in the metadata and in the offer's `a=msid` lines (each is copied into every
/// subscriber's offer and view).
fn check_publish(params: &Value) -> Result<(), String> {
    let alias_max = crate::dto::MAX_ALIAS_CHARS;
    if let Some(streams) = params["mediaMetadata"]["mediaStreams"].as_object() {
        if streams.len() > MAX_PUBLISHED_STREAMS {
            return Err(format!(
                "invalid params: mediaMetadata.mediaStreams may describe at most {MAX_PUBLISHED_STREAMS} streams"
            ));
        }
        for (msid, m) in streams {
            if msid.chars().count() > MAX_MSID_CHARS {
                return Err(format!(
                    "invalid params: a stream id may be at most {MAX_MSID_CHARS} characters"
                ));
            }
            match &m["alias"] {
                Value::Null => {}
                Value::String(a) if a.chars().count() <= alias_max => {}
                _ => {
                    return Err(format!(
                        "invalid params: alias must be a string of at most {alias_max} characters"
                    ))
                }
            }
        }
    }
    let sdp = params["sdpOffer"].as_str().unwrap_or_default();
    let too_long = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=msid:"))
        .flat_map(str::split_whitespace)
        .any(|id| id.chars().count() > MAX_MSID_CHARS);
    if too_long {
        return Err(format!(
            "invalid params: an a=msid id may be at most {MAX_MSID_CHARS} characters"
        ));
    }
    Ok(())
}

/// Hand an `offerSdp` to the session's media and build the SDK's `PublishSdpAnswer`.
async fn publish(device: &mut Device, id: Value, params: &Value) -> Value {
    if let Err(e) = check_publish(params) {
        return rpc_error(id, -32602, &e);
    }
    let sdp = params["sdpOffer"].as_str().unwrap_or_default().to_string();
    let aliases = params["mediaMetadata"]["mediaStreams"]
        .as_object()
        .map(|streams| {
            streams
                .iter()
                .filter_map(|(msid, m)| Some((msid.clone(), m["alias"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let input = DeviceInput::Publish {
        request: PublishRequest {
            sdp,
            aliases,
            default_alias: None,
            endpoint: None,
            may_publish_audio: device.may_publish_audio,
            may_publish_video: device.may_publish_video,
        },
        reply,
    };
    let answer = match device.ask(input, answer).await {
        Ok(a) => a,
        Err(e) => return rpc_error(id, -32000, &e),
    };
    let mut metadata = serde_json::Map::new();
    for s in answer.streams {
        let mut m = json!({
            "endpointId": s.stream,
            "mediaTypes": s.media_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "participantId": s.participant_id.to_string(),
        });
        if let Some(alias) = s.alias {
            m["alias"] = json!(alias);
        }
        metadata.insert(s.stream, m);
    }
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "endpointId": &*device.key.unique_id,
        "sdpAnswer": answer.sdp,
        "streamMetadata": metadata,
    }})
}

/// What one client message asks of us.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Reply(Value),
    Nothing,
    Leave,
    /// A publish offer for the session's media.
    OfferSdp {
        id: Value,
        params: Value,
    },
    /// The answer to our last `sdpOffer`.
    AnswerSdp {
        id: Option<Value>,
        sdp: String,
    },
}

fn error(id: Value, code: i64, message: &str) -> Outcome {
    Outcome::Reply(rpc_error(id, code, message))
}

/// Handle one JSON-RPC message (sans-IO).
pub fn handle(text: &str) -> Outcome {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return error(Value::Null, -32700, "parse error: not JSON");
    };
    let Some(obj) = v.as_object() else {
        return error(Value::Null, -32600, "invalid request: not an object");
    };
    let id = obj.get("id").cloned();
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return error(
            id.unwrap_or(Value::Null),
            -32600,
            "invalid request: no method",
        );
    };
    let result = |r: Value| match &id {
        Some(id) => Outcome::Reply(json!({"jsonrpc": "2.0", "result": r, "id": id})),
        None => Outcome::Nothing,
    };
    match method {
        "setMediaPreferences" | "ping" => result(json!({})),
        "deviceDiagnostics" => {
            tracing::debug!("device diagnostics received");
            result(json!({}))
        }
        "leave" => Outcome::Leave,
        "offerSdp" => match (id, obj.get("params")) {
            (Some(id), Some(params)) if params["sdpOffer"].is_string() => Outcome::OfferSdp {
                id,
                params: params.clone(),
            },
            (Some(id), _) => error(
                id,
                -32602,
                "invalid params: sdpOffer (a string) is required",
            ),
            (None, _) => Outcome::Nothing,
        },
        "answerSdp" => match obj.get("params").and_then(|p| p["sdpAnswer"].as_str()) {
            Some(sdp) => Outcome::AnswerSdp {
                id,
                sdp: sdp.to_string(),
            },
            None => match id {
                Some(id) => error(
                    id,
                    -32602,
                    "invalid params: sdpAnswer (a string) is required",
                ),
                None => Outcome::Nothing,
            },
        },
        other => match id {
            Some(id) => error(
                id,
                -32601,
                &format!("method not found: {}", shortened(other, 40)),
            ),
            None => Outcome::Nothing,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_with_long_aliases_ids_or_too_many_streams_are_refused() {
        let ok = json!({"sdpOffer": "v=0\r\na=msid:s1 t1\r\n",
            "mediaMetadata": {"mediaStreams": {"s1": {"alias": "usermedia"}}}});
        assert_eq!(check_publish(&ok), Ok(()));
        let long_alias =
            json!({"mediaMetadata": {"mediaStreams": {"s1": {"alias": "a".repeat(100_000)}}}});
        assert!(check_publish(&long_alias).unwrap_err().contains("alias"));
        let long_id = json!({"mediaMetadata": {"mediaStreams": {"s".repeat(65): {}}}});
        assert!(check_publish(&long_id).unwrap_err().contains("stream id"));
        let sdp = format!("v=0\r\na=msid:{} t1\r\n", "m".repeat(1_000_000));
        assert!(check_publish(&json!({"sdpOffer": sdp}))
            .unwrap_err()
            .contains("a=msid"));
        let many: serde_json::Map<String, Value> =
            (0..33).map(|i| (format!("s{i}"), json!({}))).collect();
        let many = json!({"mediaMetadata": {"mediaStreams": many}});
        assert!(check_publish(&many).unwrap_err().contains("at most 32"));
    }

    #[test]
    fn echoes_integer_and_string_ids() {
        assert_eq!(
            handle(
                r#"{"jsonrpc":"2.0","method":"setMediaPreferences","params":{"protocol":"WEBRTC"},"id":1}"#
            ),
            Outcome::Reply(json!({"jsonrpc":"2.0","result":{},"id":1}))
        );
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"ping","params":{},"id":"6f1c"}"#),
            Outcome::Reply(json!({"jsonrpc":"2.0","result":{},"id":"6f1c"}))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            handle("}{"),
            Outcome::Reply(
                json!({"jsonrpc":"2.0","error":{"code":-32700,"message":"parse error: not JSON"},"id":null})
            )
        );
        let Outcome::Reply(v) = handle(r#"{"jsonrpc":"2.0","method":"fly","id":7}"#) else {
            panic!()
        };
        assert_eq!(v["error"]["code"], -32601);
        assert_eq!(v["id"], 7);
        let Outcome::Reply(v) = handle("[1]") else {
            panic!()
        };
        assert_eq!(v["error"]["code"], -32600);
        // Unknown notifications are ignored.
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"fly"}"#),
            Outcome::Nothing
        );
    }

    #[test]
    fn leave_and_diagnostics() {
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"leave"}"#),
            Outcome::Leave
        );
        assert_eq!(
            handle(r#"{"jsonrpc":"2.0","method":"deviceDiagnostics","params":{"logs":[]}}"#),
            Outcome::Nothing
        );
    }
}
