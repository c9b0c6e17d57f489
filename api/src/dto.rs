//! Wire shapes of the REST API (Bandwidth WebRTC v1), with their OpenAPI schemas.
//!
//! Optional fields are omitted when absent, never `null`: the official SDKs'
//! response validators accept `null` for `callbackUrl` only.

use patchbay_conference::{
    DeviceApiVersion, MediaStream, Participant, ParticipantSubscription, PublishPermission,
    Session, StreamProtocol, Subscriptions,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// What a participant may publish.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PublishPermissionName {
    Audio,
    Video,
}

impl From<PublishPermission> for PublishPermissionName {
    fn from(p: PublishPermission) -> Self {
        match p {
            PublishPermission::Audio => Self::Audio,
            PublishPermission::Video => Self::Video,
        }
    }
}

/// Device signaling protocol version.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum DeviceApiVersionName {
    V3,
    V2,
}

impl From<DeviceApiVersion> for DeviceApiVersionName {
    fn from(v: DeviceApiVersion) -> Self {
        match v {
            DeviceApiVersion::V3 => Self::V3,
            DeviceApiVersion::V2 => Self::V2,
        }
    }
}

/// Body of `createParticipant`. Every field is optional; unknown fields are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateParticipantRequest {
    /// Absolute http(s) URL that receives this participant's events.
    pub callback_url: Option<String>,
    /// `AUDIO` and/or `VIDEO`; default both.
    #[schema(value_type = Option<Vec<PublishPermissionName>>)]
    pub publish_permissions: Option<Vec<String>>,
    /// Free text, at most 50 characters.
    pub tag: Option<String>,
    /// `V3` (default) or `V2`, case-insensitive.
    #[schema(value_type = Option<DeviceApiVersionName>)]
    pub device_api_version: Option<String>,
    /// A stream participant (a Patchbay addition): its media is a WebSocket to a bot.
    pub media_stream: Option<MediaStreamBody>,
}

/// A stream participant's WebSocket (a Patchbay addition): once the participant is in
/// a session, Patchbay connects to `url`, sends what the participant hears as one mix
/// and publishes what the bot sends as the participant's audio.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaStreamBody {
    /// `wss://…` (`ws://` where `webhook_allow` lets it through); checked by the
    /// webhook egress policy.
    pub url: String,
    /// `twilio` (Twilio Media Streams), `bandwidth` or `raw`.
    pub protocol: String,
    /// 8000 (default; `twilio` is always 8000), 16000 or 24000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Passed to the bot in the start message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub custom_parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Headers sent with the WebSocket handshake (at most 10; e.g. `Authorization`) for
    /// the bot to know the stream comes from this Patchbay. Responses show their names
    /// with the value `"(set)"`, never the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

/// What responses show of a stream's header values.
pub const HEADER_SET: &str = "(set)";

impl MediaStreamBody {
    pub fn parse(self) -> Result<MediaStream, ApiError> {
        let protocol = match self.protocol.as_str() {
            "twilio" => StreamProtocol::Twilio,
            "bandwidth" => StreamProtocol::Bandwidth,
            "raw" => StreamProtocol::Raw,
            p => {
                return Err(ApiError::BadRequest(format!(
                "unknown mediaStream.protocol `{p}`; expected \"twilio\", \"bandwidth\" or \"raw\""
            )))
            }
        };
        Ok(MediaStream {
            url: self.url,
            protocol,
            sample_rate: self.sample_rate.unwrap_or(8000),
            custom_parameters: self.custom_parameters,
            headers: self.headers,
        })
    }
}

impl From<&MediaStream> for MediaStreamBody {
    fn from(m: &MediaStream) -> Self {
        MediaStreamBody {
            url: m.url.clone(),
            protocol: match m.protocol {
                StreamProtocol::Twilio => "twilio",
                StreamProtocol::Bandwidth => "bandwidth",
                StreamProtocol::Raw => "raw",
            }
            .into(),
            sample_rate: Some(m.sample_rate),
            custom_parameters: m.custom_parameters.clone(),
            headers: m.headers.as_ref().map(|h| {
                h.keys()
                    .map(|k| (k.clone(), HEADER_SET.to_string()))
                    .collect()
            }),
        }
    }
}

/// Body of `createSession`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionRequest {
    /// Free text, at most 50 characters.
    pub tag: Option<String>,
}

/// A subscription to one participant, optionally to some of its stream aliases.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantSubscriptionBody {
    pub participant_id: String,
    /// Absent or empty: every stream of that participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_aliases: Option<Vec<String>>,
}

/// Which streams a participant receives. A non-empty `participants` overrides `sessionId`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionsBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<ParticipantSubscriptionBody>>,
}

/// Stream aliases one participant entry of a subscription may name.
pub const MAX_STREAM_ALIASES: usize = 32;
/// Characters in one stream alias.
pub const MAX_ALIAS_CHARS: usize = 100;

impl SubscriptionsBody {
    pub fn into_domain(self) -> Result<Subscriptions, ApiError> {
        // Bounded before anything else is looked at: a body may list only what a
        // session can hold.
        let max = patchbay_conference::MAX_PARTICIPANTS_PER_SESSION;
        if self.participants.as_ref().is_some_and(|p| p.len() > max) {
            return Err(ApiError::BadRequest(format!(
                "subscriptions.participants may list at most {max} participants (a session holds {max})"
            )));
        }
        for ps in self.participants.iter().flatten() {
            let aliases = ps.stream_aliases.as_deref().unwrap_or_default();
            if aliases.len() > MAX_STREAM_ALIASES {
                return Err(ApiError::BadRequest(format!(
                    "subscriptions.participants[].streamAliases may list at most {MAX_STREAM_ALIASES} aliases"
                )));
            }
            if aliases.iter().any(|a| a.chars().count() > MAX_ALIAS_CHARS) {
                return Err(ApiError::BadRequest(format!(
                    "a stream alias may be at most {MAX_ALIAS_CHARS} characters"
                )));
            }
        }
        let session_id = self
            .session_id
            .map(|s| parse_uuid("subscriptions.sessionId", &s))
            .transpose()?;
        let participants = self
            .participants
            .map(|list| {
                list.into_iter()
                    .map(|ps| {
                        Ok(ParticipantSubscription {
                            participant_id: parse_uuid(
                                "subscriptions.participants[].participantId",
                                &ps.participant_id,
                            )?,
                            stream_aliases: ps.stream_aliases,
                        })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })
            .transpose()?;
        Ok(Subscriptions {
            session_id,
            participants,
        })
    }
}

impl From<&Subscriptions> for SubscriptionsBody {
    fn from(s: &Subscriptions) -> Self {
        SubscriptionsBody {
            session_id: s.session_id.map(|u| u.to_string()),
            participants: s.participants.as_ref().map(|list| {
                list.iter()
                    .map(|ps| ParticipantSubscriptionBody {
                        participant_id: ps.participant_id.to_string(),
                        stream_aliases: ps.stream_aliases.clone(),
                    })
                    .collect()
            }),
        }
    }
}

/// A participant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantBody {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub publish_permissions: Vec<PublishPermissionName>,
    /// The session it is in (capped to one).
    pub sessions: Vec<String>,
    pub subscriptions: SubscriptionsBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub device_api_version: DeviceApiVersionName,
    /// A stream participant's bot (a Patchbay addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_stream: Option<MediaStreamBody>,
}

impl From<&Participant> for ParticipantBody {
    fn from(p: &Participant) -> Self {
        ParticipantBody {
            id: p.id.to_string(),
            callback_url: p.callback_url.clone(),
            publish_permissions: p.publish_permissions.iter().map(|&x| x.into()).collect(),
            sessions: p.session_id.iter().map(|s| s.to_string()).collect(),
            subscriptions: (&p.subscriptions).into(),
            tag: p.tag.clone(),
            device_api_version: p.device_api_version.into(),
            media_stream: p.media_stream.as_ref().map(Into::into),
        }
    }
}

/// Result of `createParticipant`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateParticipantResponse {
    pub participant: ParticipantBody,
    /// JWT for the participant's devices (WebSocket `token`, SIP `User-to-User`).
    pub token: String,
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl From<&Session> for SessionBody {
    fn from(s: &Session) -> Self {
        SessionBody {
            id: s.id.to_string(),
            tag: s.tag.clone(),
        }
    }
}

/// Error body of 400, 404, 409 and 500 responses.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error: String,
    pub request_id: String,
}

/// Error body of 401 and 403 responses.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    pub message: String,
}

pub fn parse_uuid(name: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::BadRequest(format!("{name} `{text}` is not a UUID")))
}
