//! The domain's data: sessions, participants, subscriptions.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

/// What a participant may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PublishPermission {
    Audio,
    Video,
}

impl PublishPermission {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AUDIO" => Some(Self::Audio),
            "VIDEO" => Some(Self::Video),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "AUDIO",
            Self::Video => "VIDEO",
        }
    }
}

/// The device signaling protocol a participant's SDK speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceApiVersion {
    V3,
    V2,
}

impl DeviceApiVersion {
    /// Case-insensitive: Bandwidth's own sample sends `"v3"`.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("v3") {
            Some(Self::V3)
        } else if s.eq_ignore_ascii_case("v2") {
            Some(Self::V2)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V3 => "V3",
            Self::V2 => "V2",
        }
    }
}

impl fmt::Display for DeviceApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscription to one participant's streams, optionally only those with the given aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantSubscription {
    pub participant_id: Uuid,
    /// `None` or empty: every stream of that participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_aliases: Option<Vec<String>>,
}

/// Which streams a participant receives (see [`crate::resolver`]).
///
/// A non-empty `participants` list overrides `session_id`; `session_id` alone
/// subscribes to every current and future participant of the session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscriptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<ParticipantSubscription>>,
}

impl Subscriptions {
    /// The participant-level list when it is present and non-empty (it then overrides `session_id`).
    pub fn participant_level(&self) -> Option<&[ParticipantSubscription]> {
        self.participants.as_deref().filter(|p| !p.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.session_id.is_none() && self.participant_level().is_none()
    }
}

/// How a stream participant's media is carried to its bot (a Patchbay addition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamProtocol {
    /// Twilio Media Streams: JSON text frames, base64 μ-law at 8 kHz.
    Twilio,
    /// Bandwidth Programmable Voice's bidirectional streams.
    Bandwidth,
    /// Binary L16 frames at the stream's rate, JSON text frames for control.
    Raw,
}

/// A participant whose media is a WebSocket stream to a bot instead of a device: what
/// it hears goes to `url` as one mix, what the bot sends is its audio stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaStream {
    /// `wss://…` (or `ws://` where the egress policy allows it).
    pub url: String,
    pub protocol: StreamProtocol,
    /// 8000, 16000 or 24000 (`twilio`: 8000).
    pub sample_rate: u32,
    /// Passed to the bot in the protocol's start message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Sent with the WebSocket handshake (e.g. `Authorization`), for the bot to know
    /// the stream comes from this Patchbay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

/// A participant: a person or program that may join one session and publish/receive streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: Uuid,
    pub account_id: String,
    pub callback_url: Option<String>,
    pub publish_permissions: Vec<PublishPermission>,
    pub tag: Option<String>,
    pub device_api_version: DeviceApiVersion,
    pub created_at: UnixMillis,
    /// The session it is a member of (at most one).
    pub session_id: Option<Uuid>,
    /// Its subscriptions in that session (empty when not a member).
    pub subscriptions: Subscriptions,
    /// A stream participant's bot (None: a device or a call joins with its token).
    pub media_stream: Option<MediaStream>,
}

impl Participant {
    pub fn may_publish(&self, p: PublishPermission) -> bool {
        self.publish_permissions.contains(&p)
    }
}

/// A session: a group of participants whose streams reach each other through subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub account_id: String,
    pub tag: Option<String>,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    /// Members in the order they joined.
    pub members: Vec<Uuid>,
}
