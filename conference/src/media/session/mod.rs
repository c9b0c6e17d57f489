//! A session's media: a sans-IO core ([`SessionCore`]) that owns the session's SIP
//! legs (jitter buffers, codecs, the mixer) and browser devices (str0m peer
//! connections, the SFU's fan-out), and a thin tokio shell around it.
//!
//! The core takes inputs with explicit time (`handle_control`, `handle_rtp`,
//! `handle_datagram`, `handle_timeout`) and is polled for outputs (`poll_output`:
//! datagrams to transmit, audio and RFC 4733 events for legs, hang-ups, notes for
//! devices' signaling connections, participant events; `poll_timeout`). It holds no
//! socket, task, channel or clock, so unit tests drive it with fake time.
//!
//! The shell (`shell`) owns those: bounded channels for the control plane and SIP
//! legs, for devices' joins and each device connection's inputs (their senders wait;
//! `inbox`: a core looks only at the queues that rang its bell) and for datagrams (a
//! full one drops and counts), the legs' RTP endpoints ([`LegSink`]), the devices' signaling channels, the WebRTC socket and the timer. It
//! lives exactly as long as the session: started on the first media join, ended with
//! the session (deleted, expired, gateway stopping).
//!
//! Media follows its participant (`moving`): a participant removed from its session
//! keeps its calls and devices, parked in the node's lobby (a core of no session: it
//! hears nothing and is heard by nobody, callers get silence); added to a session, its
//! media moves there as it is (codecs, jitter buffers, peer connections, the device's
//! input channel), with no new call or reload. Only a deleted participant, a deleted or
//! expired session, or the far end ends them.
//!
//! Identities are typed: a leg is a [`LegId`] chosen by the SIP side, a device is a
//! [`DeviceKey`] (participant and the SDK's `uniqueId` together), and inside the core
//! every source of media is a small `Source` (a leg, or a device's track), so nothing
//! a client chooses can alias another participant's device or a SIP leg.
//!
//! The core by concern: `legs` (jitter, decode, mix, encode), `devices` (device
//! lifecycle and each device's peer connections), `negotiation` (publishing answers,
//! what a device may receive, v3's subscribing offers), `endpoints` (v2: a connection per
//! published and per received stream, the client always offering), `sfu` (driving the
//! peer connections, fan-out, forwarding), `bridge` (phone⇄browser audio and DTMF),
//! `moving` (detaching a participant's media, adopting it elsewhere), `recorder` (the
//! third kind of audio endpoint: recordings, whose containers it fills and emits as
//! outputs), `core` (the state machine: dispatch, outputs, timers). Both device protocols (v3 and
//! v2, [`Protocol`]) are served by the same core; only the API's adapters differ.

mod bridge;
mod core;
mod devices;
mod endpoints;
mod hub;
mod ids;
mod inbox;
mod layout;
mod legs;
mod moving;
mod negotiation;
mod recorder;
mod sfu;
mod shell;
#[cfg(test)]
mod tests;
mod view;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

pub use self::core::{Action, Control, Now, Output, SessionCore};
pub use hub::{MediaHub, SessionHandle};
pub use ids::{ConnId, DeviceKey, LegId};
pub use inbox::{device_inbox, Inbox, InboxSender};
pub use layout::{LineKind, SubscribeLayout};
pub use moving::{Detached, Fate, Home, Homes, Moving};
pub use recorder::{
    FileMeta, RecordFormat, RecordMode, RecordRequest, RecordingOut, StopReason, MIX_RATE,
    NARROW_MIX_RATE,
};
pub use view::{
    render_stream_counts, render_views, Delivery, Heard, ListenerView, MediaView, Origin, Quality,
    SourceView,
};

/// Publishing endpoints (v2 connections) one device may have.
pub const MAX_PUBLISH_ENDPOINTS: usize = 8;

use crate::model::Subscriptions;

/// Largest RTP payload carried through the core.
pub const MAX_RTP_PAYLOAD: usize = 1400;
/// Longest `uniqueId` a device may have (characters).
pub const MAX_UNIQUE_ID_CHARS: usize = 128;
/// Tracks one device may publish.
pub const MAX_TRACKS_PER_DEVICE: usize = 8;
/// Control-plane and SIP inputs queued for one session before they are refused (counted).
pub const CONTROL_QUEUE: usize = 1024;
/// Devices' joins queued for one session before their senders wait.
pub const DEVICE_QUEUE: usize = 256;
/// WebRTC datagrams queued for one session before they are dropped.
pub const DATAGRAM_QUEUE: usize = 1024;
/// Notes queued for one device's signaling connection before they are dropped.
pub const NOTE_QUEUE: usize = 32;

/// How long a device whose signaling connection dropped may resume it (the SDK
/// reconnects every second; its peer connections carry on meanwhile).
pub const RESUME_GRACE: Duration = Duration::from_secs(30);
/// A device that answers our `PING`s (every 5 s) with `PONG` is gone once it has not
/// answered for this long. Devices that never answer (Bandwidth's Android and iOS SDKs
/// open the channel but have no handler) are judged by [`SILENCE_DEAD`] alone.
pub const HEARTBEAT_DEAD: Duration = Duration::from_secs(16);
/// A device whose peer connections received nothing for this long (no media, RTCP, data
/// or ICE consent check, which every WebRTC stack sends every ~5 s, RFC 7675) is gone:
/// RFC 7675's own consent expiry.
pub const SILENCE_DEAD: Duration = Duration::from_secs(30);
/// How long a client may take to answer an `sdpOffer`.
pub const OFFER_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default stream alias under which SIP legs publish their audio.
pub const PHONE_ALIAS: &str = "phone";

/// Why a leg is being hung up by the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    /// The participant was deleted.
    Removed,
    /// The session was deleted or expired.
    SessionEnded,
    /// Another leg with the same participant token replaced it.
    Replaced,
    /// The gateway is shutting down.
    Shutdown,
    /// A stopping cluster node hands the session to the others: devices are closed to
    /// connect again (they are placed on another node).
    Moved,
}

/// One received RTP packet, borrowed from the leg's receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    /// Kernel arrival time, microseconds since the Unix epoch.
    pub arrival_us: u64,
    pub payload: &'a [u8],
}

/// A leg's media endpoint (implemented by the SIP side, used by the shell only): where
/// its incoming RTP is read from and its outgoing media and control go.
pub trait LegSink: Send + Sync + 'static {
    /// Hand every RTP packet waiting on the leg's socket to `f`, without blocking.
    /// The shell calls this before each 20 ms tick, so packets never wake it.
    fn drain(&self, f: &mut dyn FnMut(RtpView<'_>));
    /// Send one encoded audio packet; `samples` is its duration in RTP clock units.
    fn send_audio(&self, payload: &[u8], samples: u32);
    /// Send one RFC 4733 telephone-event payload (4 bytes); `start` marks a new
    /// event; its duration field counts `clock` Hz units (rescale to your own clock).
    fn send_event(&self, payload: &[u8], start: bool, clock: u32);
    /// End the call (non-blocking).
    fn hang_up(&self, reason: HangupReason);
    /// Reception figures of the leg's incoming RTP (its RTCP statistics), if kept.
    fn quality(&self) -> Option<LegQuality> {
        None
    }
    /// For a stream participant's endpoint (a bot's WebSocket in place of RTP): its
    /// connection now.
    fn stream(&self) -> Option<StreamState> {
        None
    }
    /// Why the leg is leaving, when its sink knows better than "the call ended" (a bot
    /// that closed its stream): `onLeave`'s `reason`.
    fn leave_reason(&self) -> Option<&'static str> {
        None
    }
}

/// A stream participant's connection to its bot, as the console shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamState {
    /// The bot's WebSocket is open (false while it is connected again after a drop).
    pub connected: bool,
    /// The bot's audio waiting to be played, ms.
    pub buffered_ms: u64,
}

/// What the SIP side (or a bot's sink) reports of a leg for the media view.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegReport {
    pub quality: Option<LegQuality>,
    pub stream: Option<StreamState>,
}

/// Reception figures of a leg's incoming RTP (RFC 3550 A.3, A.8) and the round trip
/// from the far end's receiver reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegQuality {
    /// Packets expected (from the sequence numbers) and received since the call began.
    pub expected: u64,
    pub received: u64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Round-trip time, ms, once the far end reported on what we sent.
    pub rtt_ms: Option<f64>,
}

/// What a leg negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegMedia {
    pub codec: super::codec::AudioCodec,
    /// Payload type of the audio codec on this leg.
    pub payload_type: u8,
    /// Payload type of `telephone-event`, if negotiated.
    pub event_payload_type: Option<u8>,
    /// RTP clock of that `telephone-event` (the codec's, or 8000 beside Opus).
    pub event_clock: u32,
    /// Packet duration it sends and wants, in ms (10–60).
    pub ptime_ms: u32,
    /// Held from our side: nothing of it is heard, and it hears the music on hold
    /// (when there is one) instead of its mix.
    pub held: bool,
}

/// Members of a session and their subscriptions, as the control plane sees them now.
#[derive(Debug, Clone, Default)]
pub struct SessionSnapshot {
    pub members: Vec<(Uuid, Subscriptions)>,
}

/// A kind of media in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaType {
    Audio,
    Video,
}

impl MediaType {
    /// The name the APIs use (`AUDIO`, `VIDEO`).
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Audio => "AUDIO",
            MediaType::Video => "VIDEO",
        }
    }
}

/// The device protocol a device speaks (its token's `v`): v3 has one publishing and
/// one subscribing connection per device (we offer on the latter); v2 has one
/// connection per published stream and one per received stream (its endpoint), the
/// client always offering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V3,
    V2,
}

/// A v2 receiving endpoint announced to a device (`sdpNeeded`): the client creates a
/// connection for it and offers to receive `media_types`; its answer carries the
/// stream of `participant_id` published under `alias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRequest {
    pub endpoint: Arc<str>,
    pub media_types: Vec<MediaType>,
    pub participant_id: Uuid,
    pub alias: Option<String>,
}

/// A stream as a device sees it in an offer or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The msid stream id in the SDP (the key the SDK looks metadata up by).
    pub stream: String,
    pub participant_id: Uuid,
    pub alias: Option<String>,
    pub media_types: Vec<MediaType>,
}

/// An offer for a device's subscribing connection (revisions count from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub revision: u64,
    pub sdp: String,
    pub streams: Vec<StreamInfo>,
}

/// A device's publish offer.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub sdp: String,
    /// Stream aliases the client gave: msid stream id → alias.
    pub aliases: Vec<(String, String)>,
    /// The alias of streams `aliases` does not name (v2: one alias per publish request).
    pub default_alias: Option<String>,
    /// v2: the publishing endpoint this offer is for (a connection of its own); v3: None,
    /// the device's one publishing connection.
    pub endpoint: Option<Arc<str>>,
    /// What the participant may publish; other kinds are refused in the answer.
    pub may_publish_audio: bool,
    pub may_publish_video: bool,
}

/// The answer to a [`PublishRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAnswer {
    pub sdp: String,
    /// What the device publishes, per msid stream.
    pub streams: Vec<StreamInfo>,
}

/// Why a publish offer was refused (a clear, stable message for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("WebRTC media is not enabled on this gateway")]
    NoWebRtc,
    #[error("the SDP offer could not be parsed")]
    BadSdp,
    #[error("the SDP offer could not be answered")]
    Unanswerable,
    #[error("the device is not connected")]
    NotConnected,
    #[error("too many tracks: a device may publish at most 8")]
    TooManyTracks,
    #[error("a stream id of the offer is already used by another stream in this session")]
    StreamIdTaken,
    #[error("the session is busy: try again")]
    Busy,
    #[error("the session ended")]
    SessionEnded,
    #[error("the endpointId names no endpoint of this device")]
    UnknownEndpoint,
    #[error("too many publishing endpoints: a device may have at most 8")]
    TooManyEndpoints,
}

/// What the shell receives on its control channel: the core's own inputs as they are
/// ([`SessionInput::Core`]), and the three that bring channels of the shell's (a leg's
/// RTP endpoint and media watch, a device's notes and inputs, media moving in with
/// both), which the shell keeps, handing the core the rest.
pub enum SessionInput {
    /// A SIP leg joins. Its negotiated media is `media`'s current value; a new value
    /// (re-INVITE with another codec or ptime) updates the leg, and the sender's drop
    /// (the call ended) takes the leg out — wherever the leg has moved to since.
    Join {
        leg: LegId,
        /// Whose call it is (`onConnect`/`onLeave` go to its `callbackUrl`).
        owner: crate::events::DeviceOwner,
        /// The SIP Call-ID: the events' `deviceId`.
        call_id: Arc<str>,
        media: tokio::sync::watch::Receiver<LegMedia>,
        sink: Arc<dyn LegSink>,
    },
    /// A device's signaling connection opened (a new device or a resume). Notes for
    /// this connection go to `notify`; its inputs come on `inputs` (which moves with the
    /// device when its participant moves, so none is lost or misdirected).
    DeviceJoin {
        key: DeviceKey,
        conn: ConnId,
        owner: crate::events::DeviceOwner,
        protocol: Protocol,
        /// v3: the subscribing connection the browser may still hold from a previous
        /// owner of the session (its m-lines and revision), or only the revision to
        /// count from (a cluster node: `epoch << 32`).
        prior: Option<SubscribeLayout>,
        notify: tokio::sync::mpsc::Sender<crate::events::DeviceNote>,
        inputs: Inbox,
    },
    /// The session's snapshot (its watch) changed: a doorbell only, the state is in the
    /// watch (a dropped doorbell loses nothing: the shell looks at each wake-up).
    SnapshotChanged,
    /// A participant's media moves in (it joined this session, or left one for the
    /// lobby), with what becomes of it here.
    Adopt(Box<Moving>, Fate),
    /// Every other input: the core's own, as it is (nothing of the shell's rides with
    /// it, so a new one is a variant of [`Control`] and nothing else).
    Core(Control),
}

/// One input of a device's signaling connection, on that connection's own channel
/// (the channel names the device: nothing here can name another).
pub enum DeviceInput {
    /// Publish (or re-publish) with this offer.
    Publish {
        request: PublishRequest,
        reply: tokio::sync::oneshot::Sender<Result<PublishAnswer, PublishError>>,
    },
    /// v2: the device's offer for a receiving endpoint we announced (`sdpNeeded`).
    Receive {
        endpoint: Arc<str>,
        sdp: String,
        reply: tokio::sync::oneshot::Sender<Result<PublishAnswer, PublishError>>,
    },
    /// v2: the device stops publishing an endpoint.
    Unpublish { endpoint: Arc<str> },
    /// The device's answer to our last offer.
    Answer { sdp: String },
    /// The signaling connection closed (`left`: the client said `leave`).
    Gone { left: bool },
}

/// Inputs a device's signaling connection may have queued before its sender waits.
pub const DEVICE_INPUTS: usize = 32;

/// Now, in microseconds since the Unix epoch (the clock of kernel receive timestamps).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
