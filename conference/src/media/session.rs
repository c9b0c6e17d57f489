//! The session media actor: one tokio task owns a session's media state — its
//! legs, their jitter buffers and codecs, and the mixer — and ticks every 20 ms.
//!
//! Inputs arrive on one channel: legs joining and leaving, RTP from the legs'
//! sockets, and membership/subscription snapshots from the control plane.
//! Outputs go to each leg's [`LegSink`] synchronously (the sink owns the RTP
//! socket), so the hot path has no lock and no allocation per packet.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::codec::{AudioCodec, Decoder, Encoder};
use super::jitter::{JitterBuffer, Pull};
use super::mixer::Mixer;
use super::pcm::PcmFifo;
use super::stats::MediaStats;
use super::webrtc::{
    offered_streams, offered_tracks, reject_kinds, sdp_ufrag, WebRtcIn, WebRtcTransport,
};
use super::{frame_len, FRAME_MS};
use crate::events::{
    DeviceClose, DeviceEvent, DeviceEventKind, DeviceNote, DeviceOwner, EventSink, LogEvents,
};
use crate::model::Subscriptions;
use crate::resolver::{receives, StreamRef};

/// Identity of one leg (unique in the process).
pub type LegId = u64;

/// Largest RTP payload carried through the actor.
pub const MAX_RTP_PAYLOAD: usize = 1400;

/// Why a leg is being hung up by the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    /// The participant left the session or was deleted.
    Removed,
    /// The session was deleted or expired.
    SessionEnded,
    /// Another leg with the same participant token replaced it.
    Replaced,
    /// The gateway is shutting down.
    Shutdown,
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

/// A leg's media endpoint (implemented by the SIP side): where its incoming RTP
/// is read from and its outgoing media and control go.
pub trait LegSink: Send + Sync + 'static {
    /// Hand every RTP packet waiting on the leg's socket to `f`, without blocking.
    /// The actor calls this once per tick, so packets never wake it.
    fn drain(&self, f: &mut dyn FnMut(RtpView<'_>));
    /// Send one encoded audio packet; `samples` is its duration in RTP clock units.
    fn send_audio(&self, payload: &[u8], samples: u32);
    /// Send one RFC 4733 telephone-event payload (4 bytes); `start` marks a new
    /// event; its duration field counts `clock` Hz units (rescale to your own clock).
    fn send_event(&self, payload: &[u8], start: bool, clock: u32);
    /// End the call (non-blocking).
    fn hang_up(&self, reason: HangupReason);
}

/// What a leg negotiated.
#[derive(Debug, Clone, Copy)]
pub struct LegMedia {
    pub codec: AudioCodec,
    /// Payload type of the audio codec on this leg.
    pub payload_type: u8,
    /// Payload type of `telephone-event`, if negotiated.
    pub event_payload_type: Option<u8>,
    /// Packet duration it sends and wants, in ms (10–60).
    pub ptime_ms: u32,
}

/// Members of a session and their subscriptions, as the control plane sees them now.
#[derive(Debug, Clone, Default)]
pub struct SessionSnapshot {
    pub members: Vec<(Uuid, Subscriptions)>,
}

/// A browser device's publish offer, answered by the session actor.
pub struct PublishOffer {
    /// The device (the SDK's `uniqueId`).
    pub device: String,
    pub participant_id: Uuid,
    pub sdp: String,
    /// Stream aliases the SDK sent (`mediaMetadata.mediaStreams`): msid → alias.
    pub aliases: Vec<(String, String)>,
    /// What the participant may publish; other kinds are refused in the answer.
    pub may_publish_audio: bool,
    pub may_publish_video: bool,
    pub reply: tokio::sync::oneshot::Sender<Result<PublishAnswer, String>>,
}

/// The answer to a [`PublishOffer`].
#[derive(Debug)]
pub struct PublishAnswer {
    pub sdp: String,
    /// msid stream id → media kinds (`AUDIO`, `VIDEO`) of what the device publishes.
    pub streams: Vec<(String, Vec<&'static str>)>,
}

/// What the actor receives (SIP legs' RTP it reads itself, at each tick: [`LegSink::drain`]).
// WebRTC datagrams ride inline so that a packet costs no allocation on its way here.
#[allow(clippy::large_enum_variant)]
pub enum SessionInput {
    Join {
        leg: LegId,
        participant_id: Uuid,
        media: LegMedia,
        sink: Arc<dyn LegSink>,
    },
    /// The leg's media changed (re-INVITE with another codec or ptime).
    Update {
        leg: LegId,
        media: LegMedia,
    },
    Leave {
        leg: LegId,
    },
    /// A browser device connected (or reconnected); notifications for it (JSON-RPC
    /// `sdpOffer` texts) go to `notify`.
    DeviceJoin {
        device: String,
        /// This signaling connection (a later `DeviceGone` names it).
        conn: u64,
        owner: DeviceOwner,
        notify: mpsc::UnboundedSender<DeviceNote>,
    },
    /// A browser device publishes (or re-publishes) with this offer.
    Publish(PublishOffer),
    /// A device's answer to our last `sdpOffer`.
    Answer {
        device: String,
        sdp: String,
    },
    /// A browser device is gone (socket closed, left, removed).
    DeviceGone {
        device: String,
        conn: u64,
        /// The client said `leave` (else the socket was lost and the device may resume).
        left: bool,
    },
    /// A datagram for one of the devices' peer connections.
    WebRtc(WebRtcIn),
    Snapshot(SessionSnapshot),
    /// The session is gone: hang up every leg and stop.
    End(HangupReason),
}

/// A handle to a running session actor.
#[derive(Clone)]
pub struct SessionHandle {
    tx: mpsc::UnboundedSender<SessionInput>,
}

impl SessionHandle {
    /// Send a control input to the session; false when the session has ended.
    pub fn send(&self, input: SessionInput) -> bool {
        self.tx.send(input).is_ok()
    }

    /// Send, or get the input back when the actor has stopped (control inputs only:
    /// a datagram is never re-routed, so the size of the error does not matter).
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, input: SessionInput) -> Result<(), SessionInput> {
        self.tx.send(input).map_err(|e| e.0)
    }

    /// A handle that leads nowhere (every send fails): for a call that never joined.
    pub fn closed() -> SessionHandle {
        let (tx, _) = mpsc::unbounded_channel();
        SessionHandle { tx }
    }

    /// Whether both handles lead to the same actor.
    pub fn same_session(&self, other: &SessionHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// A browser's published audio track as a mixer stream, decoded once for the
/// SIP legs that hear it.
struct BrowserAudio {
    key: u64,
    device: String,
    mid: str0m::media::Mid,
    participant_id: Uuid,
    alias: Option<String>,
    decoder: Decoder,
    fifo: PcmFifo,
    frame: Vec<i16>,
    /// RTP time of the last telephone-event seen (a new one starts an event).
    last_event: Option<u64>,
}

/// Mixer keys of browser audio live above every leg id.
const BROWSER_KEY_BASE: u64 = 1 << 62;

/// The forwarding source name of a SIP leg's audio offered to browsers.
fn leg_source(leg: LegId) -> String {
    format!("sip-{leg}")
}

/// A track a device publishes.
struct Track {
    mid: str0m::media::Mid,
    kind: str0m::media::MediaKind,
    stream: String,
    track: String,
    alias: Option<String>,
}

/// One published track forwarded into a subscriber's connection.
struct Forward {
    from_device: String,
    from_mid: str0m::media::Mid,
    /// Its mid in the subscriber's connection (set when offered).
    to_mid: str0m::media::Mid,
    /// The msid stream and track it belongs to (the streamMetadata key).
    stream: String,
    track: String,
    kind: str0m::media::MediaKind,
    participant_id: Uuid,
    alias: Option<String>,
}

/// A browser device: its publishing connection (client offers) and subscribing
/// connection (we offer, with `sdpRevision` counting from 1).
struct Device {
    owner: DeviceOwner,
    /// The current signaling connection.
    conn: u64,
    notify: Option<mpsc::UnboundedSender<DeviceNote>>,
    /// When the signaling connection was lost (the device may resume until the grace ends).
    lost_at: Option<Instant>,
    /// When the last `PONG` (or the heartbeat channel's opening) was seen.
    last_pong: Option<Instant>,
    /// When the pending `sdpOffer` was sent, and its text (sent again on resume).
    offer_sent: Option<(Instant, String)>,
    publish: Option<str0m::Rtc>,
    published: Vec<Track>,
    subscribe: Option<str0m::Rtc>,
    pending: Option<str0m::change::SdpPendingOffer>,
    revision: u64,
    forwards: Vec<Forward>,
    ufrags: Vec<String>,
    /// The heartbeat channel of the publishing and the subscribing connection.
    heartbeat: [Option<str0m::channel::ChannelId>; 2],
    /// Per connection (publishing, subscribing): it has input or media to send since
    /// it was last driven, and when it next wants a timeout.
    dirty: [bool; 2],
    next: [Option<Instant>; 2],
}

impl Device {
    fn new(owner: DeviceOwner, conn: u64) -> Device {
        Device {
            owner,
            conn,
            notify: None,
            lost_at: None,
            last_pong: None,
            offer_sent: None,
            publish: None,
            published: Vec::new(),
            subscribe: None,
            pending: None,
            revision: 0,
            forwards: Vec::new(),
            ufrags: Vec::new(),
            heartbeat: [None, None],
            dirty: [false; 2],
            next: [None; 2],
        }
    }
}

/// A peer connection of ours; `dtmf` accepts RFC 4733 telephone-events (publishing
/// connections: the SDK's `sendDtmf` uses the audio sender's `RTCDTMFSender`).
fn new_rtc(transport: &WebRtcTransport, dtmf: bool) -> Result<str0m::Rtc, String> {
    let mut config = str0m::Rtc::builder().set_ice_lite(true);
    if dtmf {
        for (pt, rate) in [
            (110, str0m::media::Frequency::FORTY_EIGHT_KHZ),
            (126, str0m::media::Frequency::EIGHT_KHZ),
        ] {
            config.codec_config().add_config(
                pt.into(),
                None,
                str0m::format::Codec::Tele,
                rate,
                None,
                str0m::format::FormatParams::default(),
            );
        }
    }
    let mut rtc = config.build(std::time::Instant::now());
    let candidate = str0m::Candidate::host(transport.local_addr(), "udp")
        .map_err(|e| format!("candidate: {e}"))?;
    rtc.add_local_candidate(candidate);
    Ok(rtc)
}

/// Write one frame from `source` (a forwarding source name) into every subscribing
/// connection that receives it; `pt_for` picks the payload type in that connection.
/// Returns how many connections took it.
fn write_to_subscribers(
    devices: &mut HashMap<String, Device>,
    source: impl Fn(&Forward) -> bool,
    pt_for: impl Fn(&str0m::media::Writer<'_>) -> Option<str0m::media::Pt>,
    wallclock: std::time::Instant,
    time: str0m::media::MediaTime,
    data: &Arc<[u8]>,
) -> u64 {
    let mut written = 0;
    for d in devices.values_mut() {
        let Some(to_mid) = d.forwards.iter().find(|f| source(f)).map(|f| f.to_mid) else {
            continue;
        };
        let Some(writer) = d.subscribe.as_mut().and_then(|rtc| rtc.writer(to_mid)) else {
            continue;
        };
        let Some(pt) = pt_for(&writer) else { continue };
        if writer.write(pt, wallclock, time, data.clone()).is_ok() {
            written += 1;
            d.dirty[1] = true;
        }
    }
    written
}

/// The SDK's negotiated data channels: 0 `__heartbeat__`, 1 `__diagnostics__`.
fn sdk_channels() -> [str0m::channel::ChannelConfig; 2] {
    [(0u16, "__heartbeat__"), (1, "__diagnostics__")].map(|(id, label)| {
        str0m::channel::ChannelConfig {
            label: label.to_string(),
            negotiated: Some(id),
            protocol: "udp".to_string(),
            ..Default::default()
        }
    })
}

/// How long a device whose signaling connection dropped may resume it (the SDK
/// reconnects every second; its peer connections carry on meanwhile).
pub const RESUME_GRACE: Duration = Duration::from_secs(30);
/// A device whose heartbeat channel has been silent this long is gone (we PING every 5 s).
pub const HEARTBEAT_DEAD: Duration = Duration::from_secs(16);
/// How long a client may take to answer an `sdpOffer`.
pub const OFFER_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default stream alias under which SIP legs publish their audio.
pub const PHONE_ALIAS: &str = "phone";

struct Leg {
    participant_id: Uuid,
    /// Its forwarding source name ([`leg_source`]), kept so no tick formats it.
    source: String,
    media: LegMedia,
    sink: Arc<dyn LegSink>,
    jitter: JitterBuffer,
    decoder: Option<Decoder>,
    encoder: Option<Encoder>,
    pcm_in: PcmFifo,
    pcm_out: PcmFifo,
    frame: Vec<i16>,
    packet: Vec<i16>,
    payload: Vec<u8>,
    last_event_ts: Option<u32>,
    /// Arrival (µs) and decoded length of each packet whose audio is in `pcm_in`,
    /// oldest first (`u64::MAX` for concealment), for the latency histogram.
    arrivals: std::collections::VecDeque<(u64, usize)>,
    /// Arrival of the audio in this tick's frame, if it came from a packet.
    frame_arrival: Option<u64>,
    /// Whether `frame` holds this tick's audio from the caller.
    framed: bool,
    /// Opus for browsers, at the leg's own rate, created when a browser first subscribes.
    opus: Option<Encoder>,
    opus_ts: u32,
    opus_payload: Vec<u8>,
}

impl Leg {
    fn new(id: LegId, participant_id: Uuid, media: LegMedia, sink: Arc<dyn LegSink>) -> Leg {
        let rate = media.codec.pcm_rate();
        let decoder = Decoder::new(media.codec)
            .map_err(|e| tracing::error!(error = %e, "decoder"))
            .ok();
        let encoder = Encoder::new(media.codec)
            .map_err(|e| tracing::error!(error = %e, "encoder"))
            .ok();
        Leg {
            participant_id,
            source: leg_source(id),
            media,
            sink,
            jitter: JitterBuffer::new(media.codec.rtp_clock()),
            decoder,
            encoder,
            // 300 ms of slack each way.
            pcm_in: PcmFifo::new(rate as usize * 3 / 10),
            pcm_out: PcmFifo::new(rate as usize * 3 / 10),
            frame: vec![0; frame_len(rate)],
            packet: vec![0; (rate * media.ptime_ms.clamp(10, 60) / 1000) as usize],
            payload: Vec::with_capacity(MAX_RTP_PAYLOAD),
            last_event_ts: None,
            arrivals: std::collections::VecDeque::with_capacity(64),
            frame_arrival: None,
            framed: false,
            opus: None,
            opus_ts: 0,
            opus_payload: Vec::with_capacity(MAX_RTP_PAYLOAD),
        }
    }

    /// Take `n` samples' worth of arrivals: the arrival of the first sample, if real.
    fn consume_arrivals(&mut self, mut n: usize) -> Option<u64> {
        let first = self
            .arrivals
            .front()
            .map(|(a, _)| *a)
            .filter(|a| *a != u64::MAX);
        while n > 0 {
            let Some(front) = self.arrivals.front_mut() else {
                break;
            };
            if front.1 > n {
                front.1 -= n;
                break;
            }
            n -= front.1;
            self.arrivals.pop_front();
        }
        first
    }

    /// Samples of one outgoing packet, in the RTP clock.
    fn packet_rtp_samples(&self) -> u32 {
        self.media.codec.rtp_clock() * self.media.ptime_ms.clamp(10, 60) / 1000
    }
}

struct Actor {
    session_id: Uuid,
    /// Alias of the SIP legs' streams (what alias-level subscriptions name).
    alias: Arc<str>,
    legs: HashMap<LegId, Leg>,
    snapshot: SessionSnapshot,
    mixer: Mixer,
    stats: Arc<MediaStats>,
    /// RFC 4733 packets read this tick, forwarded once every leg is drained.
    events: Vec<(LegId, [u8; 4], bool, u32)>,
    devices: HashMap<String, Device>,
    webrtc: Option<Arc<WebRtcTransport>>,
    me: SessionHandle,
    /// The earliest str0m timeout of any device.
    next_rtc: Option<std::time::Instant>,
    ticks: u64,
    /// Media frames read from publishers during one drive, then forwarded.
    frames: Vec<(String, str0m::media::MediaData)>,
    /// Keyframe requests from subscribers (device, its mid) during one drive, sent upstream.
    keyframe_requests: Vec<(String, str0m::media::Mid, str0m::media::KeyframeRequestKind)>,
    browser_audio: Vec<BrowserAudio>,
    next_browser_key: u64,
    /// Where device events go.
    sink: Arc<dyn EventSink>,
    /// Datagrams the peer connections produced during one drive, sent in one batch.
    outbox: Vec<(std::net::SocketAddr, Vec<u8>)>,
    /// Some peer connection took input that has not been driven yet.
    drive_pending: bool,
}

impl Actor {
    fn join(&mut self, id: LegId, participant_id: Uuid, media: LegMedia, sink: Arc<dyn LegSink>) {
        // One leg per participant: a new call with the same token replaces the old one.
        self.hang_up_legs(
            |l| l.participant_id == participant_id,
            HangupReason::Replaced,
        );
        let rate = media.codec.pcm_rate();
        self.mixer.add_stream(id, rate);
        self.mixer.add_listener(id, rate, Some(id));
        self.legs
            .insert(id, Leg::new(id, participant_id, media, sink));
        tracing::info!(session_id = %self.session_id, leg = id, %participant_id, codec = ?media.codec, "leg joined");
        self.route();
    }

    /// Hang up (and forget) every leg `which` selects.
    fn hang_up_legs(&mut self, which: impl Fn(&Leg) -> bool, reason: HangupReason) {
        let ids: Vec<LegId> = self
            .legs
            .iter()
            .filter(|(_, l)| which(l))
            .map(|(k, _)| *k)
            .collect();
        for k in ids {
            if let Some(l) = self.legs.remove(&k) {
                l.sink.hang_up(reason);
            }
            self.mixer.remove_stream(k);
            self.mixer.remove_listener(k);
        }
    }

    fn update(&mut self, id: LegId, media: LegMedia) {
        if let Some(l) = self.legs.get_mut(&id) {
            if l.media.codec != media.codec || l.media.ptime_ms != media.ptime_ms {
                *l = Leg::new(id, l.participant_id, media, l.sink.clone());
                let rate = media.codec.pcm_rate();
                self.mixer.add_stream(id, rate);
                self.mixer.add_listener(id, rate, Some(id));
                self.route();
            } else {
                l.media = media;
            }
        }
    }

    fn leave(&mut self, id: LegId) {
        if self.legs.remove(&id).is_some() {
            self.mixer.remove_stream(id);
            self.mixer.remove_listener(id);
            tracing::info!(session_id = %self.session_id, leg = id, "leg left");
            self.route();
        }
    }

    /// Recompute who hears whom from the snapshot (the pure resolver), and hang
    /// up legs whose participant is no longer a member.
    fn route(&mut self) {
        let snapshot = std::mem::take(&mut self.snapshot);
        self.hang_up_legs(
            |l| !snapshot.members.iter().any(|(m, _)| *m == l.participant_id),
            HangupReason::Removed,
        );
        self.snapshot = snapshot;
        let members = &self.snapshot.members;
        let is_member = |p: Uuid| members.iter().any(|(m, _)| *m == p);
        let mut hears = Vec::with_capacity(self.legs.len());
        for (&listener, l) in &self.legs {
            let subs = members
                .iter()
                .find(|(m, _)| *m == l.participant_id)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            hears.clear();
            for (&speaker, s) in &self.legs {
                let stream = StreamRef {
                    participant_id: s.participant_id,
                    alias: Some(&self.alias),
                };
                if receives(l.participant_id, &subs, self.session_id, &stream, is_member) {
                    hears.push(speaker);
                }
            }
            for b in &self.browser_audio {
                let stream = StreamRef {
                    participant_id: b.participant_id,
                    alias: b.alias.as_deref(),
                };
                if receives(l.participant_id, &subs, self.session_id, &stream, is_member) {
                    hears.push(b.key);
                }
            }
            self.mixer.set_hears(listener, &hears);
        }
    }

    /// Read every leg's waiting RTP into its jitter buffer; telephone-events are
    /// collected and forwarded to the legs that hear their sender.
    fn drain(&mut self) {
        let Actor {
            legs,
            events,
            session_id,
            ..
        } = self;
        events.clear();
        for (&id, leg) in legs.iter_mut() {
            let Leg {
                sink,
                jitter,
                media,
                last_event_ts,
                ..
            } = leg;
            sink.drain(&mut |p| {
                if Some(p.payload_type) == media.event_payload_type {
                    if let Some(e) = p.payload.get(..4) {
                        let start = *last_event_ts != Some(p.timestamp);
                        if start {
                            *last_event_ts = Some(p.timestamp);
                            tracing::info!(%session_id, leg = id, event = e[0], "DTMF event");
                        }
                        events.push((id, [e[0], e[1], e[2], e[3]], start, media.codec.rtp_clock()));
                    }
                    return;
                }
                jitter.push(
                    p.ssrc,
                    p.seq,
                    p.timestamp,
                    p.payload_type,
                    p.payload,
                    p.arrival_us,
                );
            });
        }
        for (from, event, start, clock) in events.iter() {
            for (&k, other) in legs.iter() {
                if k != *from
                    && other.media.event_payload_type.is_some()
                    && self.mixer.hears(k).is_some_and(|h| h.contains(from))
                {
                    other.sink.send_event(event, *start, *clock);
                }
            }
        }
    }

    fn tick(&mut self) {
        self.drain();
        for (&id, leg) in self.legs.iter_mut() {
            let Some(decoder) = leg.decoder.as_mut() else {
                continue;
            };
            let need = leg.frame.len();
            while leg.pcm_in.len() < need {
                match leg.jitter.pull() {
                    Pull::Packet {
                        payload_type,
                        payload,
                        arrival_us,
                        ..
                    } => {
                        if payload_type == leg.media.payload_type {
                            let before = leg.pcm_in.len();
                            decoder.decode(payload, &mut leg.pcm_in);
                            leg.arrivals
                                .push_back((arrival_us, leg.pcm_in.len().saturating_sub(before)));
                        }
                    }
                    Pull::Lost => {
                        let samples = (leg.media.codec.pcm_rate()
                            * leg.media.ptime_ms.clamp(10, 60)
                            / 1000) as usize;
                        let before = leg.pcm_in.len();
                        decoder.conceal(samples, &mut leg.pcm_in);
                        leg.arrivals
                            .push_back((u64::MAX, leg.pcm_in.len().saturating_sub(before)));
                        self.stats
                            .concealed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Pull::Empty => break,
                }
            }
            leg.frame_arrival = None;
            leg.framed = false;
            if leg.pcm_in.pop(&mut leg.frame) {
                leg.framed = true;
                let n = leg.frame.len();
                leg.frame_arrival = leg.consume_arrivals(n);
                if let Some(f) = self.mixer.frame_mut(id) {
                    f.copy_from_slice(&leg.frame);
                }
            }
        }
        for b in &mut self.browser_audio {
            if b.fifo.pop(&mut b.frame) {
                if let Some(f) = self.mixer.frame_mut(b.key) {
                    f.copy_from_slice(&b.frame);
                }
            }
        }
        self.mixer.mix();
        for (&id, leg) in self.legs.iter_mut() {
            let Some(out) = self.mixer.output(id) else {
                continue;
            };
            leg.pcm_out.push(out);
            let samples = leg.packet_rtp_samples();
            let Some(encoder) = leg.encoder.as_mut() else {
                continue;
            };
            while leg.pcm_out.pop(&mut leg.packet) {
                match encoder.encode(&leg.packet, &mut leg.payload) {
                    Ok(()) => leg.sink.send_audio(&leg.payload, samples),
                    Err(e) => tracing::warn!(error = %e, "encode failed"),
                }
            }
        }
        // Every mix is out: how long the audio mixed in this tick waited since it arrived.
        let now = unix_us();
        for leg in self.legs.values() {
            if let Some(arrival) = leg.frame_arrival {
                self.stats
                    .mix_latency
                    .observe(Duration::from_micros(now.saturating_sub(arrival)));
            }
        }
        self.stats
            .frames_mixed
            .fetch_add(self.legs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if self.phone_to_browsers() {
            self.drive(false);
        }
    }

    /// Answer a device's publish offer with its (possibly new) publishing peer connection.
    fn publish(&mut self, offer: PublishOffer) {
        let result = self.accept_publish(&offer);
        let _ = offer.reply.send(result);
        self.drive_devices();
    }

    fn accept_publish(&mut self, offer: &PublishOffer) -> Result<PublishAnswer, String> {
        let Some(transport) = self.webrtc.clone() else {
            return Err("WebRTC media is not enabled on this gateway".into());
        };
        // Publish permissions: refuse the kinds this participant may not publish.
        let allowed_sdp =
            reject_kinds(&offer.sdp, offer.may_publish_audio, offer.may_publish_video);
        let parsed = str0m::change::SdpOffer::from_sdp_string(&allowed_sdp)
            .map_err(|e| format!("bad SDP offer: {e}"))?;
        let Some(device) = self.devices.get_mut(&offer.device) else {
            return Err("the device is not connected".into());
        };
        let fresh = device.publish.is_none();
        if fresh {
            device.publish = Some(new_rtc(&transport, true)?);
        }
        let Some(rtc) = device.publish.as_mut() else {
            return Err("no publishing connection".into());
        };
        let answer = rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| format!("cannot answer the SDP offer: {e}"))?;
        let sdp = answer.to_sdp_string();
        if fresh {
            for config in sdk_channels() {
                rtc.direct_api().create_data_channel(config);
            }
            if let Some(ufrag) = sdp_ufrag(&sdp) {
                device.ufrags.push(ufrag.to_string());
                transport.register(ufrag, self.me.clone());
            }
            tracing::info!(session_id = %self.session_id, device = %offer.device, participant_id = %offer.participant_id, "device publishing connection created");
        }
        let alias_of = |stream: &str| {
            offer
                .aliases
                .iter()
                .find(|(s, _)| s == stream)
                .map(|(_, a)| a.clone())
        };
        device.published = offered_tracks(&allowed_sdp)
            .into_iter()
            .map(|t| Track {
                mid: str0m::media::Mid::from(t.mid.as_str()),
                kind: if t.kind == "VIDEO" {
                    str0m::media::MediaKind::Video
                } else {
                    str0m::media::MediaKind::Audio
                },
                alias: alias_of(&t.stream),
                stream: t.stream,
                track: t.track,
            })
            .collect();
        Ok(PublishAnswer {
            sdp,
            streams: offered_streams(&allowed_sdp),
        })
    }

    fn device_event(&self, kind: DeviceEventKind, device: &str, owner: &DeviceOwner) {
        self.sink.device_event(DeviceEvent {
            kind,
            owner: owner.clone(),
            device_id: device.to_string(),
            at_ms: unix_us() / 1000,
        });
    }

    /// A signaling connection for `device` opened: a new device, or the resume of one
    /// whose connection was lost (its peer connections carry on). Other devices of the
    /// same participant are replaced.
    fn device_join(
        &mut self,
        device: String,
        conn: u64,
        owner: DeviceOwner,
        notify: mpsc::UnboundedSender<DeviceNote>,
    ) {
        let others: Vec<String> = self
            .devices
            .iter()
            .filter(|(k, d)| d.owner.participant_id == owner.participant_id && **k != device)
            .map(|(k, _)| k.clone())
            .collect();
        for other in others {
            self.remove_device(&other, Some(DeviceClose::Replaced));
        }
        let d = self
            .devices
            .entry(device.clone())
            .or_insert_with(|| Device::new(owner.clone(), conn));
        if let Some(old) = d.notify.take() {
            // The same uniqueId on a second socket: the newer one wins.
            let _ = old.send(DeviceNote::Close(DeviceClose::Replaced));
        }
        let resumed = d.lost_at.take().is_some();
        self.stats.signaling_connects.fetch_add(1, Relaxed);
        if resumed {
            self.stats.signaling_resumed.fetch_add(1, Relaxed);
        }
        d.conn = conn;
        // An offer that was out when the connection dropped is sent again.
        if let Some((at, text)) = d.offer_sent.as_mut() {
            *at = Instant::now();
            let _ = notify.send(DeviceNote::Rpc(text.clone()));
        }
        d.notify = Some(notify);
        tracing::info!(session_id = %self.session_id, device, participant_id = %owner.participant_id, resumed, "device connected");
        self.device_event(DeviceEventKind::Connect, &device, &owner);
        self.route_devices();
    }

    /// The signaling connection `conn` of `device` closed: the client left (the device
    /// goes), or the socket was lost (the device waits [`RESUME_GRACE`] for a resume).
    fn device_closed(&mut self, device: &str, conn: u64, left: bool) {
        let Some(d) = self.devices.get_mut(device).filter(|d| d.conn == conn) else {
            return;
        };
        d.notify = None;
        if left {
            self.remove_device(device, None);
        } else {
            d.lost_at = Some(Instant::now());
            self.stats.signaling_lost.fetch_add(1, Relaxed);
            let owner = d.owner.clone();
            tracing::info!(session_id = %self.session_id, device, "device signaling lost");
            self.device_event(DeviceEventKind::Disconnect, device, &owner);
        }
    }

    /// Forget a device: close its signaling connection with `close` (if still open),
    /// release its peer connections, tell the application (`onLeave`).
    fn remove_device(&mut self, device: &str, close: Option<DeviceClose>) {
        let Some(d) = self.devices.remove(device) else {
            return;
        };
        if let (Some(n), Some(why)) = (&d.notify, close) {
            let _ = n.send(DeviceNote::Close(why));
        }
        if let Some(t) = &self.webrtc {
            for u in &d.ufrags {
                t.unregister(u);
            }
        }
        tracing::info!(session_id = %self.session_id, device, participant_id = %d.owner.participant_id, reason = close.map(DeviceClose::reason), "device gone");
        self.device_event(DeviceEventKind::Leave, device, &d.owner);
        self.stats.devices_ended.fetch_add(1, Relaxed);
        self.sync_browser_audio();
        self.route_devices();
    }

    /// Once a second: end devices that never resumed, whose heartbeat died, or that sit
    /// on an unanswered `sdpOffer`.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        let mut ended = Vec::new();
        for (id, d) in &self.devices {
            let why = if d.lost_at.is_some_and(|t| now > t + RESUME_GRACE) {
                Some(None)
            } else if d.last_pong.is_some_and(|t| now > t + HEARTBEAT_DEAD) {
                Some(Some(DeviceClose::HeartbeatLost))
            } else if d.notify.is_some()
                && d.offer_sent
                    .as_ref()
                    .is_some_and(|(t, _)| now > *t + OFFER_ANSWER_TIMEOUT)
            {
                Some(Some(DeviceClose::OfferUnanswered))
            } else {
                None
            };
            if let Some(why) = why {
                ended.push((id.clone(), why));
            }
        }
        for (id, why) in ended {
            self.remove_device(&id, why);
        }
    }

    /// Offer every device the published tracks its subscriptions allow that it does not
    /// receive yet (one offer in flight per device; the next waits for its answer).
    fn route_devices(&mut self) {
        let Some(transport) = self.webrtc.clone() else {
            return;
        };
        // Devices of participants no longer in the session are closed (dropping their
        // notification channel ends the signaling connection).
        let stale: Vec<String> = {
            let members = &self.snapshot.members;
            self.devices
                .iter()
                .filter(|(_, d)| !members.iter().any(|(m, _)| *m == d.owner.participant_id))
                .map(|(k, _)| k.clone())
                .collect()
        };
        if !stale.is_empty() {
            for id in stale {
                self.remove_device(&id, Some(DeviceClose::Removed));
            }
            return;
        }
        let members = &self.snapshot.members;
        let is_member = |p: Uuid| members.iter().any(|(m, _)| *m == p);
        let ids: Vec<String> = self.devices.keys().cloned().collect();
        for id in ids {
            // What this device should receive and does not yet.
            let mut wanted: Vec<Forward> = Vec::new();
            let mut unwanted: Vec<str0m::media::Mid> = Vec::new();
            {
                let Some(d) = self.devices.get(&id) else {
                    continue;
                };
                if d.pending.is_some() || d.notify.is_none() {
                    continue;
                }
                let subs = members
                    .iter()
                    .find(|(m, _)| *m == d.owner.participant_id)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default();
                for (&leg_id, leg) in &self.legs {
                    let source = leg_source(leg_id);
                    let stream = StreamRef {
                        participant_id: leg.participant_id,
                        alias: Some(&self.alias),
                    };
                    let already = d.forwards.iter().any(|f| f.from_device == source);
                    if !already
                        && leg.participant_id != d.owner.participant_id
                        && receives(
                            d.owner.participant_id,
                            &subs,
                            self.session_id,
                            &stream,
                            is_member,
                        )
                    {
                        wanted.push(Forward {
                            from_device: source.clone(),
                            from_mid: str0m::media::Mid::from("phone"),
                            to_mid: str0m::media::Mid::from("phone"),
                            stream: source.clone(),
                            track: format!("{source}-audio"),
                            kind: str0m::media::MediaKind::Audio,
                            participant_id: leg.participant_id,
                            alias: Some(self.alias.to_string()),
                        });
                    }
                }
                for (pid, p) in self.devices.iter().filter(|(k, _)| **k != id) {
                    for t in &p.published {
                        let stream = StreamRef {
                            participant_id: p.owner.participant_id,
                            alias: t.alias.as_deref(),
                        };
                        let already = d
                            .forwards
                            .iter()
                            .any(|f| f.from_device == *pid && f.from_mid == t.mid);
                        if !already
                            && receives(
                                d.owner.participant_id,
                                &subs,
                                self.session_id,
                                &stream,
                                is_member,
                            )
                        {
                            wanted.push(Forward {
                                from_device: pid.clone(),
                                from_mid: t.mid,
                                to_mid: t.mid,
                                stream: t.stream.clone(),
                                track: t.track.clone(),
                                kind: t.kind,
                                participant_id: p.owner.participant_id,
                                alias: t.alias.clone(),
                            });
                        }
                    }
                }
                // Forwarded tracks whose source is gone or no longer allowed.
                for f in &d.forwards {
                    let allowed = |participant_id: Uuid, alias: Option<&str>| {
                        let stream = StreamRef {
                            participant_id,
                            alias,
                        };
                        receives(
                            d.owner.participant_id,
                            &subs,
                            self.session_id,
                            &stream,
                            is_member,
                        )
                    };
                    let still = match self
                        .legs
                        .iter()
                        .find(|(l, _)| leg_source(**l) == f.from_device)
                    {
                        Some((_, leg)) => allowed(leg.participant_id, Some(&self.alias)),
                        None => self.devices.get(&f.from_device).is_some_and(|p| {
                            p.published.iter().any(|t| {
                                t.mid == f.from_mid
                                    && allowed(p.owner.participant_id, t.alias.as_deref())
                            })
                        }),
                    };
                    if !still {
                        unwanted.push(f.to_mid);
                    }
                }
            }
            if wanted.is_empty() && unwanted.is_empty() {
                continue;
            }
            let Some(d) = self.devices.get_mut(&id) else {
                continue;
            };
            let fresh = d.subscribe.is_none();
            if fresh {
                match new_rtc(&transport, false) {
                    Ok(rtc) => d.subscribe = Some(rtc),
                    Err(e) => {
                        tracing::warn!(error = %e, "subscribing connection");
                        continue;
                    }
                }
            }
            let Some(rtc) = d.subscribe.as_mut() else {
                continue;
            };
            let mut change = rtc.sdp_api();
            if fresh {
                for config in sdk_channels() {
                    change.add_channel_with_config(config);
                }
            }
            // Removed streams go inactive: the SDK reports them unavailable.
            for mid in &unwanted {
                change.set_direction(*mid, str0m::media::Direction::Inactive);
            }
            let mut added = Vec::new();
            for mut f in wanted {
                // A fresh track id every time: a stream re-added after removal must
                // look new to the browser (same stream id, the metadata key).
                let track = format!("{}-{}", f.track, d.revision + 1);
                f.to_mid = change.add_media(
                    f.kind,
                    str0m::media::Direction::SendOnly,
                    Some(f.stream.clone()),
                    Some(track),
                    None,
                );
                added.push(f);
            }
            let Some((offer, pending)) = change.apply() else {
                continue;
            };
            d.forwards.retain(|f| !unwanted.contains(&f.to_mid));
            d.forwards.extend(added);
            d.pending = Some(pending);
            d.revision += 1;
            let sdp = offer.to_sdp_string();
            if fresh {
                if let Some(ufrag) = sdp_ufrag(&sdp) {
                    d.ufrags.push(ufrag.to_string());
                    transport.register(ufrag, self.me.clone());
                }
            }
            let mut metadata = serde_json::Map::new();
            for f in &d.forwards {
                let entry = metadata.entry(f.stream.clone()).or_insert_with(|| {
                    let mut m = serde_json::json!({
                        "endpointId": f.stream,
                        "mediaTypes": [],
                        "participantId": f.participant_id.to_string(),
                    });
                    if let Some(a) = &f.alias {
                        m["alias"] = serde_json::json!(a);
                    }
                    m
                });
                let kind = if f.kind == str0m::media::MediaKind::Video {
                    "VIDEO"
                } else {
                    "AUDIO"
                };
                if let Some(kinds) = entry["mediaTypes"].as_array_mut() {
                    if !kinds.iter().any(|k| k == kind) {
                        kinds.push(serde_json::json!(kind));
                    }
                }
            }
            let note = serde_json::json!({"jsonrpc": "2.0", "method": "sdpOffer", "params": {
                "endpointId": id,
                "sdpOffer": sdp,
                "sdpRevision": d.revision,
                "streamMetadata": metadata,
            }});
            let note = note.to_string();
            if let Some(n) = &d.notify {
                let _ = n.send(DeviceNote::Rpc(note.clone()));
            }
            d.offer_sent = Some((Instant::now(), note));
            tracing::info!(session_id = %self.session_id, device = %id, revision = d.revision, "sdpOffer sent");
        }
        self.drive_devices();
    }

    fn answer(&mut self, device: &str, sdp: &str) {
        let Some(d) = self.devices.get_mut(device) else {
            return;
        };
        let (Some(rtc), Some(pending)) = (d.subscribe.as_mut(), d.pending.take()) else {
            return;
        };
        d.offer_sent = None;
        match str0m::change::SdpAnswer::from_sdp_string(sdp) {
            Ok(answer) => {
                if let Err(e) = rtc.sdp_api().accept_answer(pending, answer) {
                    tracing::info!(device, error = %e, "answer refused");
                }
            }
            Err(e) => tracing::info!(device, error = %e, "unparseable answer"),
        }
        // A new video subscriber needs a keyframe to start decoding.
        let video: Vec<str0m::media::Mid> = d
            .forwards
            .iter()
            .filter(|f| f.kind == str0m::media::MediaKind::Video)
            .map(|f| f.to_mid)
            .collect();
        for mid in video {
            self.request_keyframe(device, mid, str0m::media::KeyframeRequestKind::Pli);
        }
        // Streams that appeared while the offer was out go in the next one.
        self.route_devices();
    }

    /// A datagram for whichever device's peer connection accepts it.
    fn webrtc_input(&mut self, input: &WebRtcIn) {
        let Some(transport) = &self.webrtc else {
            return;
        };
        let Ok(receive) = str0m::net::Receive::new(
            str0m::net::Protocol::Udp,
            input.from,
            transport.local_addr(),
            input.bytes(),
        ) else {
            return;
        };
        let input = str0m::Input::Receive(std::time::Instant::now(), receive);
        let mut found = None;
        'search: for d in self.devices.values_mut() {
            for (pass, rtc) in [d.publish.as_mut(), d.subscribe.as_mut()]
                .into_iter()
                .enumerate()
            {
                if let Some(rtc) = rtc.filter(|r| r.accepts(&input)) {
                    d.dirty[pass] = true;
                    found = Some(rtc);
                    break 'search;
                }
            }
        }
        if let Some(rtc) = found {
            if let Err(e) = rtc.handle_input(input) {
                tracing::debug!(error = %e, "peer connection input");
            }
            // Driven once the actor has taken every input already queued.
            self.drive_pending = true;
        }
    }

    /// Run every peer connection until it waits (see [`Actor::drive`]).
    fn drive_devices(&mut self) {
        self.drive(true);
    }

    /// Run peer connections until they wait: send what they transmit, forward the media
    /// publishers produced, note the earliest timeout. Only those with input, media to
    /// send or a due timeout run, unless `all`: a datagram costs O(its fan-out), not
    /// O(devices).
    fn drive(&mut self, all: bool) {
        self.drive_pending = false;
        let now = std::time::Instant::now();
        let mut dead = Vec::new();
        self.frames.clear();
        for pass in 0..2 {
            for (id, d) in self.devices.iter_mut() {
                let Device {
                    publish,
                    subscribe,
                    heartbeat,
                    last_pong,
                    dirty,
                    next,
                    ..
                } = d;
                // Its timers run when due; input or queued media only needs polling.
                let timed_out = all || next[pass].is_some_and(|t| t <= now);
                if !timed_out && !dirty[pass] {
                    continue;
                }
                dirty[pass] = false;
                let rtc = if pass == 0 {
                    publish.as_mut()
                } else {
                    subscribe.as_mut()
                };
                let Some(rtc) = rtc else { continue };
                if timed_out && rtc.handle_input(str0m::Input::Timeout(now)).is_err() {
                    dead.push(id.clone());
                    continue;
                }
                let mut ran_timeout = timed_out;
                loop {
                    match rtc.poll_output() {
                        // A timeout already due (media queued by a write waits for one):
                        // run it now rather than on another wake-up.
                        Ok(str0m::Output::Timeout(t)) if t <= now && !ran_timeout => {
                            ran_timeout = true;
                            if rtc.handle_input(str0m::Input::Timeout(now)).is_err() {
                                dead.push(id.clone());
                                break;
                            }
                        }
                        Ok(str0m::Output::Timeout(t)) => {
                            next[pass] = Some(t);
                            break;
                        }
                        Ok(str0m::Output::Transmit(t)) => {
                            self.outbox.push((t.destination, t.contents.into()));
                        }
                        Ok(str0m::Output::Event(e)) => match e {
                            str0m::Event::Connected => {
                                tracing::info!(session_id = %self.session_id, device = %id, subscribing = pass == 1, "device connection up");
                            }
                            str0m::Event::ChannelOpen(cid, label) if label == "__heartbeat__" => {
                                heartbeat[pass] = Some(cid);
                                last_pong.get_or_insert(now);
                            }
                            str0m::Event::ChannelData(data)
                                if Some(data.id) == heartbeat[pass] && data.data == b"PONG" =>
                            {
                                *last_pong = Some(now);
                            }
                            str0m::Event::MediaData(data) => {
                                self.stats
                                    .webrtc_media_in
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                self.frames.push((id.clone(), data));
                            }
                            str0m::Event::KeyframeRequest(req) if pass == 1 => {
                                self.keyframe_requests.push((id.clone(), req.mid, req.kind));
                            }
                            _ => {}
                        },
                        Err(e) => {
                            tracing::info!(device = %id, error = %e, "peer connection failed");
                            dead.push(id.clone());
                            break;
                        }
                    }
                }
                if !rtc.is_alive() {
                    dead.push(id.clone());
                }
            }
            if pass == 0 {
                self.forward();
            }
            if let Some(tr) = &self.webrtc {
                tr.send_batch(&mut self.outbox);
            }
        }
        let requests = std::mem::take(&mut self.keyframe_requests);
        for (device, mid, kind) in &requests {
            self.request_keyframe(device, *mid, *kind);
        }
        self.keyframe_requests = requests;
        self.keyframe_requests.clear();
        dead.dedup();
        for id in dead {
            self.remove_device(&id, Some(DeviceClose::MediaLost));
        }
        self.next_rtc = self.devices.values().flat_map(|d| d.next).flatten().min();
    }

    /// A subscriber (`device`) wants a keyframe on its `mid`: ask the publisher of that track.
    fn request_keyframe(
        &mut self,
        device: &str,
        mid: str0m::media::Mid,
        kind: str0m::media::KeyframeRequestKind,
    ) {
        let Some(source) = self
            .devices
            .get(device)
            .and_then(|d| d.forwards.iter().find(|f| f.to_mid == mid))
            .map(|f| (f.from_device.clone(), f.from_mid))
        else {
            return;
        };
        let Some(publisher) = self.devices.get_mut(&source.0) else {
            return;
        };
        if let Some(mut writer) = publisher
            .publish
            .as_mut()
            .and_then(|rtc| rtc.writer(source.1))
        {
            let _ = writer.request_keyframe(None, kind);
            publisher.dirty[0] = true;
        }
    }

    /// Write the publishers' media into the subscribers' connections.
    fn forward(&mut self) {
        let frames = std::mem::take(&mut self.frames);
        for (from, data) in &frames {
            if data.params.spec().codec == str0m::format::Codec::Tele {
                self.browser_dtmf(from, data);
                continue;
            }
            if let Some(b) = self
                .browser_audio
                .iter_mut()
                .find(|b| b.device == *from && b.mid == data.mid)
            {
                b.decoder.decode(&data.data, &mut b.fifo);
            }
            let written = write_to_subscribers(
                &mut self.devices,
                |f| f.from_device == *from && f.from_mid == data.mid,
                |w| w.match_params(data.params),
                data.network_time,
                data.time,
                &data.data,
            );
            self.stats
                .webrtc_media_out
                .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
        }
        self.frames = frames;
        self.frames.clear();
    }

    /// An RFC 4733 telephone-event from a browser's audio: to every SIP leg that hears
    /// that audio (as RFC 4733 on the leg, like DTMF between callers).
    fn browser_dtmf(&mut self, from: &str, data: &str0m::media::MediaData) {
        let Some(b) = self
            .browser_audio
            .iter_mut()
            .find(|b| b.device == from && b.mid == data.mid)
        else {
            return;
        };
        let Some(&[e0, e1, e2, e3]) = data.data.get(..4) else {
            return;
        };
        let ts = data.time.numer();
        let start = b.last_event != Some(ts);
        if start {
            b.last_event = Some(ts);
            tracing::info!(session_id = %self.session_id, device = from, event = e0, "DTMF event from a browser");
            self.stats.dtmf_from_browsers.fetch_add(1, Relaxed);
        }
        let clock = data.params.spec().clock_rate.get();
        let key = b.key;
        for (&k, leg) in &self.legs {
            if leg.media.event_payload_type.is_some()
                && self.mixer.hears(k).is_some_and(|h| h.contains(&key))
            {
                leg.sink.send_event(&[e0, e1, e2, e3], start, clock);
            }
        }
    }

    /// Each SIP leg some browser receives: encode this tick's caller audio to Opus once,
    /// at the leg's own rate, and write it into every subscribing connection.
    fn phone_to_browsers(&mut self) -> bool {
        let mut wrote = false;
        for leg in self.legs.values_mut() {
            let source = leg.source.as_str();
            let listeners = self
                .devices
                .values()
                .any(|d| d.forwards.iter().any(|f| f.from_device == source));
            if !listeners || !leg.framed {
                continue;
            }
            if leg.opus.is_none() {
                leg.opus = Encoder::opus_at(leg.media.codec.pcm_rate())
                    .map_err(|e| tracing::warn!(error = %e, "Opus encoder"))
                    .ok();
            }
            let Some(opus) = leg.opus.as_mut() else {
                continue;
            };
            if opus.encode(&leg.frame, &mut leg.opus_payload).is_err() {
                continue;
            }
            let time = str0m::media::MediaTime::new(
                leg.opus_ts as u64,
                str0m::media::Frequency::FORTY_EIGHT_KHZ,
            );
            leg.opus_ts = leg.opus_ts.wrapping_add(960);
            let payload: Arc<[u8]> = Arc::from(leg.opus_payload.as_slice());
            let written = write_to_subscribers(
                &mut self.devices,
                |f| f.from_device == source,
                |w| {
                    w.payload_params()
                        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                        .map(|p| p.pt())
                },
                std::time::Instant::now(),
                time,
                &payload,
            );
            self.stats
                .webrtc_media_out
                .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
            wrote |= written > 0;
        }
        wrote
    }

    /// Keep one mixer stream per published browser audio track (decoded for SIP legs).
    fn sync_browser_audio(&mut self) {
        let mut keep = Vec::new();
        for (id, d) in &self.devices {
            for t in d
                .published
                .iter()
                .filter(|t| t.kind == str0m::media::MediaKind::Audio)
            {
                keep.push((id.clone(), t.mid, d.owner.participant_id, t.alias.clone()));
            }
        }
        let mixer = &mut self.mixer;
        self.browser_audio.retain(|b| {
            let alive = keep
                .iter()
                .any(|(d, m, _, _)| *d == b.device && *m == b.mid);
            if !alive {
                mixer.remove_stream(b.key);
            }
            alive
        });
        for (device, mid, participant_id, alias) in keep {
            if self
                .browser_audio
                .iter()
                .any(|b| b.device == device && b.mid == mid)
            {
                continue;
            }
            let Ok(decoder) = Decoder::new(AudioCodec::Opus) else {
                continue;
            };
            let key = self.next_browser_key;
            self.next_browser_key += 1;
            self.mixer.add_stream(key, AudioCodec::Opus.pcm_rate());
            self.browser_audio.push(BrowserAudio {
                key,
                device,
                mid,
                participant_id,
                alias,
                decoder,
                fifo: PcmFifo::new(AudioCodec::Opus.pcm_rate() as usize * 3 / 10),
                frame: vec![0; frame_len(AudioCodec::Opus.pcm_rate())],
                last_event: None,
            });
        }
        self.route();
    }

    /// Every 5 s, PING on each device's heartbeat channel (the SDK answers PONG).
    fn heartbeat(&mut self) {
        for d in self.devices.values_mut() {
            for (rtc, id) in [d.publish.as_mut(), d.subscribe.as_mut()]
                .into_iter()
                .zip(d.heartbeat)
            {
                let (Some(rtc), Some(id)) = (rtc, id) else {
                    continue;
                };
                if let Some(mut ch) = rtc.channel(id) {
                    let _ = ch.write(false, b"PING");
                }
            }
        }
    }

    fn end(&mut self, reason: HangupReason) {
        for (_, l) in self.legs.drain() {
            l.sink.hang_up(reason);
        }
        let close = match reason {
            HangupReason::Removed | HangupReason::Replaced => DeviceClose::Removed,
            HangupReason::SessionEnded | HangupReason::Shutdown => DeviceClose::SessionEnded,
        };
        for (id, d) in std::mem::take(&mut self.devices) {
            if let Some(n) = &d.notify {
                let _ = n.send(DeviceNote::Close(close));
            }
            self.device_event(DeviceEventKind::Leave, &id, &d.owner);
        }
    }
}

/// Now, in microseconds since the Unix epoch (the clock of kernel receive timestamps).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

async fn run(
    session_id: Uuid,
    mut rx: mpsc::UnboundedReceiver<SessionInput>,
    hub: Arc<HubInner>,
    me: mpsc::UnboundedSender<SessionInput>,
) {
    let mut actor = Actor {
        session_id,
        alias: hub.alias.clone(),
        legs: HashMap::new(),
        snapshot: SessionSnapshot::default(),
        mixer: Mixer::new(),
        stats: hub.stats.clone(),
        events: Vec::with_capacity(16),
        devices: HashMap::new(),
        webrtc: hub.webrtc.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        me: SessionHandle { tx: me.clone() },
        next_rtc: None,
        ticks: 0,
        frames: Vec::new(),
        keyframe_requests: Vec::new(),
        browser_audio: Vec::new(),
        next_browser_key: BROWSER_KEY_BASE,
        sink: hub.sink.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        outbox: Vec::with_capacity(64),
        drive_pending: false,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(FRAME_MS as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut joined_once = false;
    let mut ended = None;
    loop {
        tokio::select! {
            biased;
            input = rx.recv() => {
                let Some(mut input) = input else { break };
                // Take what else is already queued (up to a bound) before driving the peer
                // connections: under load, one drive then carries several packets per
                // subscriber connection; with nothing queued it costs no latency.
                for _ in 0..64 {
                    match input {
                        SessionInput::Join { leg, participant_id, media, sink } => {
                            joined_once = true;
                            actor.join(leg, participant_id, media, sink);
                            actor.route_devices();
                        }
                        SessionInput::Update { leg, media } => actor.update(leg, media),
                        SessionInput::Leave { leg } => actor.leave(leg),
                        SessionInput::DeviceJoin { device, conn, owner, notify } => {
                            joined_once = true;
                            actor.device_join(device, conn, owner, notify);
                        }
                        SessionInput::Publish(offer) => {
                            joined_once = true;
                            actor.publish(offer);
                            actor.sync_browser_audio();
                            actor.route_devices();
                        }
                        SessionInput::Answer { device, sdp } => actor.answer(&device, &sdp),
                        SessionInput::DeviceGone { device, conn, left } => {
                            actor.device_closed(&device, conn, left)
                        }
                        SessionInput::WebRtc(input) => actor.webrtc_input(&input),
                        SessionInput::Snapshot(s) => {
                            actor.snapshot = s;
                            actor.route();
                            actor.route_devices();
                        }
                        SessionInput::End(reason) => {
                            actor.end(reason);
                            ended = Some(reason);
                            break;
                        }
                    }
                    match rx.try_recv() {
                        Ok(next) => input = next,
                        Err(_) => break,
                    }
                }
                if ended.is_some() {
                    break;
                }
                if actor.drive_pending {
                    actor.drive(false);
                }
                                if joined_once && actor.legs.is_empty() && actor.devices.is_empty() {
                    break;
                }
            }
                                                _ = tick.tick() => {
                actor.tick();
                actor.ticks += 1;
                if actor.ticks.is_multiple_of(50) {
                    actor.housekeeping();
                }
                if actor.ticks.is_multiple_of(250) {
                    actor.heartbeat();
                    actor.drive_devices();
                }
            }
            _ = async {
                match actor.next_rtc {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => actor.drive(false),
        }
    }
    hub.remove(session_id, &me);
    // Inputs that raced our exit (a Join sent just before we left the hub) must not be
    // lost: after an End their legs are hung up, otherwise they go to whichever actor
    // serves the session now.
    rx.close();
    let mut pending = Vec::new();
    while let Ok(input) = rx.try_recv() {
        pending.push(input);
    }
    let joins = pending.iter().any(|i| {
        matches!(
            i,
            SessionInput::Join { .. } | SessionInput::DeviceJoin { .. } | SessionInput::Publish(_)
        )
    });
    if !pending.is_empty() {
        match ended {
            Some(reason) => {
                for input in pending {
                    match input {
                        SessionInput::Join { sink, .. } => sink.hang_up(reason),
                        SessionInput::DeviceJoin { notify, .. } => {
                            let _ = notify.send(DeviceNote::Close(DeviceClose::SessionEnded));
                        }
                        SessionInput::Publish(offer) => {
                            let _ = offer.reply.send(Err("the session ended".into()));
                        }
                        _ => {}
                    }
                }
            }
            // A join starts the next actor; other inputs (a device's leave racing our
            // exit) go to one that already runs, if any.
            None => {
                let next = if joins {
                    let snapshot = actor.snapshot.clone();
                    Some(MediaHub { inner: hub.clone() }.session(session_id, move || snapshot))
                } else {
                    hub.current(session_id)
                };
                if let Some(next) = next {
                    for input in pending {
                        next.send(input);
                    }
                }
            }
        }
    }
    tracing::debug!(%session_id, "session media stopped");
}

struct HubInner {
    sessions: Mutex<HashMap<Uuid, SessionHandle>>,
    stats: Arc<MediaStats>,
    alias: Arc<str>,
    webrtc: Mutex<Option<Arc<WebRtcTransport>>>,
    sink: Mutex<Arc<dyn EventSink>>,
}

impl HubInner {
    /// The running actor of `session_id`, if any.
    fn current(&self, session_id: Uuid) -> Option<SessionHandle> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&session_id).filter(|h| !h.tx.is_closed()).cloned()
    }

    fn remove(&self, session_id: Uuid, me: &mpsc::UnboundedSender<SessionInput>) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&session_id).is_some_and(|h| h.tx.same_channel(me)) {
            map.remove(&session_id);
        }
    }
}

/// The running session actors, by session id. Touched on joins, leaves and
/// control-plane changes only — never per packet.
#[derive(Clone)]
pub struct MediaHub {
    inner: Arc<HubInner>,
}

impl Default for MediaHub {
    fn default() -> Self {
        MediaHub::new(PHONE_ALIAS)
    }
}

impl MediaHub {
    /// A hub whose SIP legs publish under `alias`.
    pub fn new(alias: &str) -> MediaHub {
        MediaHub {
            inner: Arc::new(HubInner {
                sessions: Mutex::new(HashMap::new()),
                stats: Arc::new(MediaStats::default()),
                alias: Arc::from(alias),
                webrtc: Mutex::new(None),
                sink: Mutex::new(Arc::new(LogEvents)),
            }),
        }
    }

    /// Enable WebRTC media for browser devices on this transport.
    pub fn set_webrtc(&self, transport: Arc<WebRtcTransport>) {
        *self.inner.webrtc.lock().unwrap_or_else(|e| e.into_inner()) = Some(transport);
    }

    /// Send device events (`onConnect`, `onLeave`, `onDisconnect`) to `sink` (sessions
    /// started from now on).
    pub fn set_event_sink(&self, sink: Arc<dyn EventSink>) {
        *self.inner.sink.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    /// Where events go now.
    pub fn event_sink(&self) -> Arc<dyn EventSink> {
        self.inner
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Statistics of every session's media path.
    pub fn stats(&self) -> &MediaStats {
        &self.inner.stats
    }

    /// The actor of `session_id`, started with `snapshot` if it is not running.
    pub fn session(
        &self,
        session_id: Uuid,
        snapshot: impl FnOnce() -> SessionSnapshot,
    ) -> SessionHandle {
        let mut map = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get(&session_id).filter(|h| !h.tx.is_closed()) {
            return h.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(SessionInput::Snapshot(snapshot()));
        let handle = SessionHandle { tx: tx.clone() };
        map.insert(session_id, handle.clone());
        tokio::spawn(run(session_id, rx, self.inner.clone(), tx));
        handle
    }

    /// Tell a running actor (if any) something; no actor is started.
    pub fn notify(&self, session_id: Uuid, input: SessionInput) {
        let map = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get(&session_id) {
            let _ = h.tx.send(input);
        }
    }

    /// End every session's media (graceful shutdown).
    pub fn end_all(&self, reason: HangupReason) {
        let map = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for h in map.values() {
            let _ = h.tx.send(SessionInput::End(reason));
        }
    }

    /// Number of sessions with running media.
    pub fn active(&self) -> usize {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
