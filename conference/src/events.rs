//! Participant events the application hears about through its `callbackUrl`
//! (`onConnect`, `onLeave`, `onDisconnect`), raised by the session actors.

use std::sync::Arc;

use uuid::Uuid;

/// What happened to a participant's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEventKind {
    /// A signaling connection was established (first connect or resume).
    Connect,
    /// The device is gone: the client left, or the server removed it (participant
    /// removed, replaced by another device, dead heartbeat, never came back).
    Leave,
    /// The signaling connection was lost; the device may still resume.
    Disconnect,
}

impl DeviceEventKind {
    /// The event's name on the wire (`event` field of the callback body).
    pub fn name(self) -> &'static str {
        match self {
            DeviceEventKind::Connect => "onConnect",
            DeviceEventKind::Leave => "onLeave",
            DeviceEventKind::Disconnect => "onDisconnect",
        }
    }
}

/// Who a device belongs to, as known when it connected (so events still reach the
/// application after the participant is deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOwner {
    pub participant_id: Uuid,
    pub callback_url: Option<Arc<str>>,
    pub tag: Option<Arc<str>>,
}

/// What kind of connection an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceSource {
    /// A browser device (the SDK's signaling connection).
    Browser,
    /// A SIP call (inbound with the token, or a dialog).
    Sip,
}

impl DeviceSource {
    /// How the store names it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceSource::Browser => "browser",
            DeviceSource::Sip => "sip",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceSource> {
        match s {
            "browser" => Some(DeviceSource::Browser),
            "sip" => Some(DeviceSource::Sip),
            _ => None,
        }
    }
}

impl DeviceOwner {
    /// The participant as it is now.
    pub fn of(p: &crate::model::Participant) -> DeviceOwner {
        DeviceOwner {
            participant_id: p.id,
            callback_url: p.callback_url.as_deref().map(Into::into),
            tag: p.tag.as_deref().map(Into::into),
        }
    }
}

/// One device event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    /// The session whose media produced it.
    pub session_id: Uuid,
    pub kind: DeviceEventKind,
    pub source: DeviceSource,
    pub owner: DeviceOwner,
    /// The SDK's `uniqueId`, or a SIP call's Call-ID.
    pub device_id: String,
    /// When it happened, ms since the Unix epoch.
    pub at_ms: u64,
    /// Why it left, where known (`onLeave`'s `reason`, an addition to the documented body).
    pub reason: Option<&'static str>,
}

/// A v3 device's subscribing connection after an offer (`layout`), or the device left
/// for good (`None`): kept so that the session's next owner can go on offering on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLayout {
    pub session_id: Uuid,
    pub participant_id: Uuid,
    /// The SDK's `uniqueId`.
    pub device_id: String,
    pub layout: Option<crate::media::session::SubscribeLayout>,
}

/// Where device events go (the webhook outbox). Called from session actors: must not block.
pub trait EventSink: Send + Sync + 'static {
    fn device_event(&self, event: DeviceEvent);
    /// Keep (or forget) a device's subscribing layout.
    fn device_layout(&self, layout: DeviceLayout) {
        let _ = layout;
    }
    /// A dialog changed state (`onSipDialogStateChange`).
    fn dialog_event(&self, event: crate::dialogs::DialogEvent) {
        tracing::info!(dialog_id = %event.dialog.id, state = event.dialog.state.as_str(), "dialog event");
    }
}

/// The default sink: a log line per event.
pub struct LogEvents;

impl EventSink for LogEvents {
    fn device_event(&self, e: DeviceEvent) {
        tracing::info!(event = e.kind.name(), participant_id = %e.owner.participant_id, device_id = %e.device_id, "device event");
    }
}

/// Why the server closes a device's signaling connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceClose {
    /// The participant was deleted.
    Removed,
    /// The session ended.
    SessionEnded,
    /// Another device (`uniqueId`) of the same participant connected.
    Replaced,
    /// A device that answered `PING` with `PONG` stopped answering.
    HeartbeatLost,
    /// Nothing (media, RTCP, ICE consent checks, data) arrived on any of its peer
    /// connections for 30 s: a device that froze or vanished without closing its socket.
    Silent,
    /// The client did not answer an `sdpOffer` in time.
    OfferUnanswered,
    /// Its peer connection failed (ICE or DTLS).
    MediaLost,
    /// Another participant's device in this session uses the same `uniqueId`.
    DuplicateDevice,
    /// The session's node is stopping: connect again (to another node).
    Moved,
}

impl DeviceClose {
    /// A human-readable reason (the WebSocket close reason).
    pub fn reason(self) -> &'static str {
        match self {
            DeviceClose::Removed => "the participant was deleted",
            DeviceClose::SessionEnded => "session ended",
            DeviceClose::Replaced => "replaced by another device of the same participant",
            DeviceClose::HeartbeatLost => "heartbeat lost: no PONG on the __heartbeat__ channel",
            DeviceClose::Silent => {
                "nothing arrived from the device for 30 s (no media, no ICE consent checks)"
            }
            DeviceClose::OfferUnanswered => "sdpOffer not answered in time",
            DeviceClose::MediaLost => "peer connection failed",
            DeviceClose::DuplicateDevice => {
                "uniqueId already used by another participant's device in this session"
            }
            DeviceClose::Moved => "the session moved to another node; connect again",
        }
    }
}

/// What the session actor tells a device's signaling connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceNote {
    /// An offer for the device's subscribing connection (v3).
    Offer(crate::media::session::Offer),
    /// A stream to receive on a connection of its own: the client offers for it (v2).
    SdpNeeded(crate::media::session::EndpointRequest),
    /// A receiving endpoint is gone: its stream is no longer available (v2).
    EndpointRemoved(std::sync::Arc<str>),
    /// Close the connection with this reason.
    Close(DeviceClose),
}
