//! The state machine: inputs with explicit time, outputs by polling, timers.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::bridge::BrowserAudio;
use super::devices::Device;
use super::ids::{ConnId, DeviceId, DeviceKey, LegId, PcId, Source};
use super::legs::Leg;
use super::sfu::Target;
use super::{
    HangupReason, LegMedia, Protocol, PublishAnswer, PublishError, PublishRequest, SessionSnapshot,
};
use crate::events::{DeviceEvent, DeviceLayout, DeviceNote, DeviceOwner};
use crate::media::mixer::Mixer;
use crate::media::stats::{LocalStats, MediaStats};
use crate::media::FRAME_MS;

/// The first audio endpoint key of a core (see `SessionCore::next_key`).
const FIRST_ENDPOINT_KEY: u64 = 1 << 40;
/// How often devices are checked (resume grace, heartbeat, unanswered offers).
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often the heartbeat channels are PINGed.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The time of an input: the monotonic clock (timers) and the wall clock in µs since
/// the Unix epoch (the clock of kernel receive timestamps and of events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub unix_us: u64,
}

impl Now {
    /// The system's clocks.
    pub fn system() -> Now {
        Now {
            at: Instant::now(),
            unix_us: super::unix_us(),
        }
    }

    /// `d` later on both clocks.
    pub fn after(self, d: Duration) -> Now {
        Now {
            at: self.at + d,
            unix_us: self.unix_us + d.as_micros() as u64,
        }
    }
}

/// A control input (the shell's channels are gone: replies and notes become outputs).
#[derive(Debug)]
pub enum Control {
    Join {
        leg: LegId,
        /// Whose call it is (its events go to the owner's `callbackUrl`).
        owner: DeviceOwner,
        /// The SIP Call-ID (the events' `deviceId`).
        call_id: Arc<str>,
        media: LegMedia,
    },
    Update {
        leg: LegId,
        media: LegMedia,
    },
    Leave {
        leg: LegId,
        /// Why, where the leg's sink knows (`onLeave`'s `reason`).
        reason: Option<&'static str>,
    },
    DeviceJoin {
        key: DeviceKey,
        conn: ConnId,
        owner: DeviceOwner,
        protocol: Protocol,
        prior: Option<super::SubscribeLayout>,
    },
    /// Answered by [`Action::Published`] with the same `request`.
    Publish {
        key: DeviceKey,
        conn: ConnId,
        request: u64,
        offer: PublishRequest,
    },
    /// v2: the client's offer for a receiving endpoint; answered by
    /// [`Action::Published`] with the same `request`.
    Receive {
        key: DeviceKey,
        conn: ConnId,
        request: u64,
        endpoint: Arc<str>,
        sdp: String,
    },
    /// v2: the client stops publishing an endpoint.
    Unpublish {
        key: DeviceKey,
        conn: ConnId,
        endpoint: Arc<str>,
    },
    Answer {
        key: DeviceKey,
        conn: ConnId,
        sdp: String,
    },
    DeviceGone {
        key: DeviceKey,
        conn: ConnId,
        left: bool,
    },
    Snapshot(SessionSnapshot),
    /// A participant's media arrives from another core (see `moving`).
    Adopt {
        media: super::Detached,
        fate: super::Fate,
    },
    /// The lobby: this participant's session changed (its media moves on); the nil id:
    /// every participant's.
    Recheck(Uuid),
    /// Start a recording.
    Record(super::RecordRequest),
    /// Stop a recording.
    StopRecording(Uuid),
    End(HangupReason),
}

/// An output that owns its data.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// An RFC 4733 payload for a leg (`start`: a new event; durations in `clock` Hz).
    LegEvent {
        leg: LegId,
        payload: [u8; 4],
        start: bool,
        clock: u32,
    },
    HangUp {
        leg: LegId,
        reason: HangupReason,
    },
    /// For a device's signaling connection.
    Note {
        conn: ConnId,
        note: DeviceNote,
    },
    /// The answer to [`Control::Publish`] or [`Control::Receive`].
    Published {
        request: u64,
        result: Result<PublishAnswer, PublishError>,
    },
    /// For the application (`onConnect`, `onDisconnect`, `onLeave`).
    Event(DeviceEvent),
    /// A v3 device's subscribing connection changed: to be kept for the next owner.
    Layout(DeviceLayout),
    /// STUN for this ufrag should reach this session (or no longer).
    Ufrag {
        ufrag: String,
        registered: bool,
    },
    /// A peer connection answered an authenticated STUN request from `addr`.
    Confirm {
        ufrag: String,
        addr: SocketAddr,
    },
    /// The lobby: media of this participant arrived; check where it belongs (an add to a
    /// session may have raced its arrival).
    Verify(Uuid),
    /// A recorder's files: opened, bytes to append, closed.
    Recording(super::RecordingOut),
}

/// What the core wants done.
#[derive(Debug, PartialEq)]
pub enum Output<'a> {
    /// Datagrams for the WebRTC socket.
    Transmit(&'a [(SocketAddr, Vec<u8>)]),
    /// One encoded audio packet for a leg (`samples`: its duration in RTP clock units).
    LegAudio {
        leg: LegId,
        payload: &'a [u8],
        samples: u32,
    },
    Action(Action),
}

pub(super) enum Queued {
    /// `arena[start..end]`.
    LegAudio {
        leg: LegId,
        start: usize,
        end: usize,
        samples: u32,
    },
    Action(Action),
}

/// A subscriber's keyframe request: its device, connection, mid there, and kind.
pub(super) type KeyframeRequest = (
    DeviceId,
    PcId,
    str0m::media::Mid,
    str0m::media::KeyframeRequestKind,
);

/// A session's media state. See the module docs of [`super`].
pub struct SessionCore {
    pub(super) session_id: Uuid,
    /// Alias of the SIP legs' streams (what alias-level subscriptions name).
    pub(super) alias: Arc<str>,
    /// The WebRTC socket's address (our ICE candidate), when WebRTC is enabled.
    pub(super) webrtc: Option<SocketAddr>,
    pub(super) snapshot: SessionSnapshot,
    pub(super) legs: HashMap<LegId, Leg>,
    pub(super) mixer: Mixer,
    /// What held legs hear instead of their mix.
    pub(super) hold_music: Option<Arc<crate::media::hold_music::HoldMusic>>,
    pub(super) next_tick: Instant,
    /// Device housekeeping (once a second) and heartbeat PINGs (every 5 s).
    next_housekeeping: Instant,
    next_heartbeat: Instant,
    pub(super) devices: HashMap<DeviceId, Device>,
    pub(super) by_key: HashMap<DeviceKey, DeviceId>,
    pub(super) next_device: u32,
    /// Per source, the subscribing connections (device, connection, mid there) it is
    /// written into.
    pub(super) fanout: HashMap<Source, Vec<Target>>,
    /// Which peer connection (device, connection) an address reaches.
    pub(super) by_addr: HashMap<SocketAddr, (DeviceId, PcId)>,
    /// Media frames read from publishers during one drive, then forwarded.
    pub(super) frames: Vec<(DeviceId, PcId, str0m::media::MediaData)>,
    /// Keyframe requests from subscribers during one drive, sent upstream.
    pub(super) keyframe_requests: Vec<KeyframeRequest>,
    /// The earliest peer-connection timeout.
    pub(super) next_rtc: Option<Instant>,
    /// Some peer connection took input that has not been driven yet.
    pub(super) drive_pending: bool,
    pub(super) browser_audio: Vec<BrowserAudio>,
    /// Recordings running here.
    pub(super) recorders: Vec<super::recorder::Recorder>,
    /// The next audio endpoint key (the mixer's streams and listeners: legs, browsers'
    /// audio, recorders), issued here and never reused. They count from
    /// [`FIRST_ENDPOINT_KEY`], far from any leg id, so that code still taking a leg id
    /// for a mixer key finds nothing (and fails its tests) instead of a coincidence.
    next_key: u64,
    pub(super) queue: VecDeque<Queued>,
    pub(super) arena: Vec<u8>,
    pub(super) outbox: Vec<(SocketAddr, Vec<u8>)>,
    outbox_out: bool,
    pub(super) stats: LocalStats,
    pub(super) ended: bool,
    /// Wall clock of the control input being handled, ms (for the events it raises).
    pub(super) unix_ms: u64,
    /// The node's lobby: the core of media whose participant is in no session.
    pub(super) lobby: bool,
    /// Media that left, for the shell to send on.
    pub(super) detached: Vec<super::Detached>,
}

impl SessionCore {
    /// A core for `session_id` whose SIP legs publish under `alias`; `webrtc` is the
    /// WebRTC socket's address (None: browsers cannot publish or subscribe).
    pub fn new(session_id: Uuid, alias: Arc<str>, webrtc: Option<SocketAddr>, now: Now) -> Self {
        SessionCore {
            session_id,
            alias,
            webrtc,
            snapshot: SessionSnapshot::default(),
            legs: HashMap::new(),
            mixer: Mixer::new(),
            hold_music: None,
            next_tick: now.at + Duration::from_millis(FRAME_MS as u64),
            next_housekeeping: now.at + HOUSEKEEPING,
            next_heartbeat: now.at + HEARTBEAT,
            devices: HashMap::new(),
            by_key: HashMap::new(),
            next_device: 1,
            fanout: HashMap::new(),
            by_addr: HashMap::new(),
            frames: Vec::new(),
            keyframe_requests: Vec::new(),
            next_rtc: None,
            drive_pending: false,
            browser_audio: Vec::new(),
            recorders: Vec::new(),
            next_key: FIRST_ENDPOINT_KEY,
            queue: VecDeque::with_capacity(64),
            arena: Vec::with_capacity(4096),
            outbox: Vec::with_capacity(64),
            outbox_out: false,
            stats: LocalStats::default(),
            ended: false,
            unix_ms: 0,
            lobby: false,
            detached: Vec::new(),
        }
    }

    /// The node's lobby: a core of no session, holding the media of participants that
    /// are in none (parked: nothing is routed, callers hear silence).
    pub fn lobby(alias: Arc<str>, webrtc: Option<SocketAddr>, now: Now) -> Self {
        let mut core = SessionCore::new(Uuid::nil(), alias, webrtc, now);
        core.lobby = true;
        core
    }

    pub fn is_lobby(&self) -> bool {
        self.lobby
    }

    pub fn session_id(&self) -> Uuid {
        self.session_id
    }

    /// Whether the session ended (the shell stops once every output is out).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Legs and devices now.
    pub fn counts(&self) -> (usize, usize) {
        (self.legs.len(), self.devices.len())
    }

    /// A new audio endpoint key.
    pub(super) fn endpoint_key(&mut self) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        key
    }

    /// Whether the 20 ms tick runs (something mixes: a leg or a recorder).
    fn mixing(&self) -> bool {
        !self.legs.is_empty() || !self.recorders.is_empty()
    }

    /// A control input.
    pub fn handle_control(&mut self, now: Now, input: Control) {
        if self.ended {
            self.refuse_after_end(now, input);
            return;
        }
        self.unix_ms = now.unix_us / 1000;
        match input {
            Control::Join {
                leg,
                owner,
                call_id,
                media,
            } => {
                let participant_id = owner.participant_id;
                self.join(leg, owner, call_id, media);
                self.route_devices(now);
                self.arrived(now, participant_id);
            }
            Control::Update { leg, media } => self.update(leg, media),
            Control::Leave { leg, reason } => {
                self.leave(leg, reason);
                self.route_devices(now);
            }
            Control::DeviceJoin {
                key,
                conn,
                owner,
                protocol,
                prior,
            } => {
                let participant_id = key.participant_id;
                self.device_join(now, key, conn, owner, protocol, prior);
                self.arrived(now, participant_id);
            }
            Control::Publish {
                key,
                conn,
                request,
                offer,
            } => {
                let result = self.accept_publish(now, &key, conn, &offer);
                self.stats.offers_refused += u64::from(result.is_err());
                self.push(Action::Published { request, result });
                self.sync_browser_audio();
                self.route_devices(now);
            }
            Control::Receive {
                key,
                conn,
                request,
                endpoint,
                sdp,
            } => {
                let result = self.accept_receive(now, &key, conn, &endpoint, &sdp);
                self.stats.offers_refused += u64::from(result.is_err());
                self.push(Action::Published { request, result });
            }
            Control::Unpublish {
                key,
                conn,
                endpoint,
            } => self.unpublish(now, &key, conn, &endpoint),
            Control::Answer { key, conn, sdp } => self.answer(now, &key, conn, &sdp),
            Control::DeviceGone { key, conn, left } => self.device_closed(now, &key, conn, left),
            Control::Snapshot(s) => {
                self.snapshot = s;
                self.evict_strangers(now);
                self.route();
                self.route_devices(now);
            }
            Control::Adopt { media, fate } => self.adopt(now, media, fate),
            Control::Recheck(participant_id) if self.lobby => {
                let all: Vec<Uuid> = if participant_id.is_nil() {
                    self.legs
                        .values()
                        .map(|l| l.owner.participant_id)
                        .chain(self.devices.values().map(|d| d.key.participant_id))
                        .collect()
                } else {
                    vec![participant_id]
                };
                for p in all {
                    self.detach(now, p);
                }
            }
            Control::Recheck(_) => self.evict_strangers(now),
            Control::Record(req) => self.start_recording(now, req),
            Control::StopRecording(id) => self.stop_recording(id, super::StopReason::Requested),
            Control::End(reason) => self.end(now, reason),
        }
        if self.drive_pending {
            self.drive(now, false);
        }
    }

    /// Media of `participant_id` joined here: in a session, it leaves again if the
    /// participant is no member (a join that raced a removal); in the lobby, where it
    /// belongs is checked (a join that raced an add).
    fn arrived(&mut self, now: Now, participant_id: Uuid) {
        if self.lobby {
            self.push(Action::Verify(participant_id));
        } else {
            self.evict_strangers(now);
        }
    }

    /// After the end, joins are hung up or closed and publishes refused; media that
    /// moved here while the session ended ends with it.
    fn refuse_after_end(&mut self, now: Now, input: Control) {
        match input {
            Control::Adopt { media, .. } => {
                self.ended = false;
                self.adopt(now, media, super::Fate::End);
                self.ended = true;
            }
            Control::Join { leg, .. } => self.push(Action::HangUp {
                leg,
                reason: HangupReason::SessionEnded,
            }),
            Control::DeviceJoin { conn, .. } => self.push(Action::Note {
                conn,
                note: DeviceNote::Close(crate::events::DeviceClose::SessionEnded),
            }),
            Control::Publish { request, .. } | Control::Receive { request, .. } => {
                self.push(Action::Published {
                    request,
                    result: Err(PublishError::SessionEnded),
                })
            }
            _ => {}
        }
    }

    /// A datagram for one of the devices' peer connections.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        if !self.ended {
            self.webrtc_input(now, from, bytes);
        }
    }

    /// Drive the peer connections that took datagrams (call after a batch of them).
    pub fn flush(&mut self, now: Now) {
        if self.drive_pending {
            self.drive(now, false);
        }
    }

    /// Whether the next 20 ms tick is due: the shell hands the legs' waiting RTP to
    /// [`Self::handle_rtp`] first, then calls [`Self::handle_timeout`].
    pub fn tick_due(&self, now: Now) -> bool {
        !self.ended && self.mixing() && now.at >= self.next_tick
    }

    /// Timers: the 20 ms mixing tick (while there are legs), device housekeeping once a
    /// second and heartbeat PINGs every 5 s (while there are devices), and the peer
    /// connections' own timeouts.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.ended {
            return;
        }
        let frame = Duration::from_millis(FRAME_MS as u64);
        if !self.mixing() {
            // Nothing to mix: the tick resumes with the next leg or recorder.
            self.next_tick = self.next_tick.max(now.at + frame);
        }
        while self.mixing() && now.at >= self.next_tick {
            // Far behind (a stalled task): skip, rather than burst, what is older than 100 ms.
            if now.at > self.next_tick + 5 * frame {
                self.next_tick = now.at;
            }
            self.next_tick += frame;
            self.tick(now);
        }
        if now.at >= self.next_housekeeping {
            self.next_housekeeping = now.at + HOUSEKEEPING;
            self.housekeeping(now);
        }
        if now.at >= self.next_heartbeat {
            self.next_heartbeat = now.at + HEARTBEAT;
            self.heartbeat();
            self.drive(now, true);
        }
        if self.next_rtc.is_some_and(|t| t <= now.at) || self.drive_pending {
            self.drive(now, false);
        }
    }

    /// When [`Self::handle_timeout`] wants to run next (None: nothing to time; the
    /// session is idle until an input).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let tick = self.mixing().then_some(self.next_tick);
        let devices = !self.devices.is_empty();
        let housekeeping = devices.then_some(self.next_housekeeping);
        let heartbeat = devices.then_some(self.next_heartbeat);
        [tick, housekeeping, heartbeat, self.next_rtc]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next output, if any. Borrowed data is valid until the next call.
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        if self.outbox_out {
            self.outbox.clear();
            self.outbox_out = false;
        }
        if let Some(q) = self.queue.pop_front() {
            return Some(match q {
                Queued::LegAudio {
                    leg,
                    start,
                    end,
                    samples,
                } => Output::LegAudio {
                    leg,
                    payload: self.arena.get(start..end).unwrap_or_default(),
                    samples,
                },
                Queued::Action(a) => Output::Action(a),
            });
        }
        self.arena.clear();
        if !self.outbox.is_empty() {
            self.outbox_out = true;
            return Some(Output::Transmit(&self.outbox));
        }
        None
    }

    /// Counters since the last call, to fold into the process-wide metrics.
    pub fn fold_stats(&mut self, into: &MediaStats) {
        std::mem::take(&mut self.stats).fold_into(into);
    }

    pub(super) fn push(&mut self, action: Action) {
        self.queue.push_back(Queued::Action(action));
    }

    pub(super) fn is_member(&self, participant_id: Uuid) -> bool {
        self.snapshot
            .members
            .iter()
            .any(|(m, _)| *m == participant_id)
    }

    /// The subscriptions of a member (default: none).
    pub(super) fn subscriptions_of(&self, participant_id: Uuid) -> crate::model::Subscriptions {
        self.snapshot
            .members
            .iter()
            .find(|(m, _)| *m == participant_id)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    /// Whether `listener` receives a stream of `publisher` published under `alias`.
    pub(super) fn receives(
        &self,
        listener: Uuid,
        subs: &crate::model::Subscriptions,
        publisher: Uuid,
        alias: Option<&str>,
    ) -> bool {
        let stream = crate::resolver::StreamRef {
            participant_id: publisher,
            alias,
        };
        crate::resolver::receives(listener, subs, self.session_id, &stream, |p| {
            self.is_member(p)
        })
    }
}
