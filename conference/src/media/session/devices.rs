//! Device lifecycle: connect, resume, replacement, refusal of a `uniqueId` another
//! participant uses, loss of the signaling connection, heartbeat, unanswered offers,
//! removal and the session's end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::core::{Action, Now, SessionCore};
use super::ids::{ConnId, DeviceId, DeviceKey, PcId};
use super::layout::{MidMap, SubscribeLayout};
use super::{
    EndpointRequest, HangupReason, Offer, Protocol, HEARTBEAT_DEAD, OFFER_ANSWER_TIMEOUT,
    RESUME_GRACE, SILENCE_DEAD,
};
use crate::events::{
    DeviceClose, DeviceEvent, DeviceEventKind, DeviceLayout, DeviceNote, DeviceOwner, DeviceSource,
};

/// A track a device publishes.
pub(super) struct Track {
    /// The connection it arrives on.
    pub(super) pc: PcId,
    pub(super) mid: str0m::media::Mid,
    pub(super) kind: str0m::media::MediaKind,
    pub(super) stream: String,
    pub(super) track: String,
    pub(super) alias: Option<String>,
    /// Its audio level (RFC 6464) and codec, from the frames that arrive.
    pub(super) meter: super::view::Meter,
    pub(super) codec: Option<str0m::format::Codec>,
}

/// One source forwarded into a subscribing connection of a device.
pub(super) struct Forward {
    pub(super) source: super::ids::Source,
    /// The connection it goes out on.
    pub(super) pc: PcId,
    /// Its mid there (v2: None until the client's offer for the endpoint is answered).
    pub(super) to_mid: Option<str0m::media::Mid>,
    /// The msid stream and track it is offered as (the stream is the metadata key).
    pub(super) stream: String,
    pub(super) track: String,
    pub(super) kind: str0m::media::MediaKind,
    pub(super) participant_id: uuid::Uuid,
    pub(super) alias: Option<String>,
}

/// A peer connection of a device: publishing (media from it) or subscribing (media to it).
pub(super) struct Pc {
    pub(super) id: PcId,
    pub(super) publishing: bool,
    /// v2: the endpoint id the client names it by.
    pub(super) endpoint: Option<Arc<str>>,
    pub(super) rtc: str0m::Rtc,
    pub(super) ufrag: Option<String>,
    /// Addresses it answered (confirmed to the transport).
    pub(super) confirmed: Vec<SocketAddr>,
    pub(super) heartbeat: Option<str0m::channel::ChannelId>,
    /// It has input or media to send since it was last driven.
    pub(super) dirty: bool,
    /// Media was written into it since it was last driven: str0m packetizes written
    /// media only in a timeout, so its drive runs one before the first poll.
    pub(super) wrote: bool,
    /// When it next wants a timeout.
    pub(super) next: Option<Instant>,
    /// Reception figures per mid (publishing connections), from str0m's stats.
    pub(super) ingress: Vec<(str0m::media::Mid, super::view::TrackStats)>,
    /// The connection's round-trip time, ms (ICE consent checks).
    pub(super) rtt_ms: Option<f64>,
}

impl Pc {
    pub(super) fn new(
        id: PcId,
        publishing: bool,
        endpoint: Option<Arc<str>>,
        rtc: str0m::Rtc,
    ) -> Pc {
        Pc {
            id,
            publishing,
            endpoint,
            rtc,
            ufrag: None,
            confirmed: Vec::new(),
            heartbeat: None,
            dirty: false,
            wrote: false,
            next: None,
            ingress: Vec::new(),
            rtt_ms: None,
        }
    }
}

/// v2: a receiving endpoint announced with `sdpNeeded`, waiting for the client's offer.
pub(super) struct Asked {
    /// The connection it will be (its forwards already name it).
    pub(super) pc: PcId,
    /// When it was (last) sent.
    pub(super) at: Instant,
    pub(super) request: EndpointRequest,
}

/// A browser device and its peer connections. v3: one publishing connection (the
/// client offers) and one subscribing (we offer, revisions counting from 1). v2: one
/// connection per published stream and per received stream, the client offering.
pub(super) struct Device {
    pub(super) key: DeviceKey,
    pub(super) owner: DeviceOwner,
    pub(super) protocol: Protocol,
    /// The current signaling connection.
    pub(super) conn: ConnId,
    /// Whether that connection is open.
    pub(super) connected: bool,
    /// When the signaling connection was lost (the device may resume until the grace ends).
    pub(super) lost_at: Option<Instant>,
    /// When the last `PONG` was seen (none: the device never answered a `PING`).
    pub(super) last_pong: Option<Instant>,
    /// When a datagram last reached one of its peer connections (or its first one was
    /// created).
    pub(super) last_rx: Option<Instant>,
    pub(super) pcs: Vec<Pc>,
    next_pc: u32,
    pub(super) published: Vec<Track>,
    pub(super) forwards: Vec<Forward>,
    /// v3: the offer out for an answer, and when it was sent (sent again on resume).
    pub(super) offer_sent: Option<(Instant, Offer)>,
    /// v3: our offer's pending state on the subscribing connection.
    pub(super) pending: Option<str0m::change::SdpPendingOffer>,
    /// v3: the subscribing connection's offer revision.
    pub(super) revision: u64,
    /// v3: the m-lines the browser holds from a previous owner's offers (taken by the
    /// first offer), and our mids paired with the browser's for them.
    pub(super) prior: Option<SubscribeLayout>,
    pub(super) mids: MidMap,
    /// v3: mids of what it received in the core it came from, to go inactive in its
    /// next offer.
    pub(super) stale: Vec<str0m::media::Mid>,
    /// v2: endpoints announced and not yet offered for.
    pub(super) asked: Vec<Asked>,
}

impl Device {
    fn new(key: DeviceKey, owner: DeviceOwner, conn: ConnId, protocol: Protocol) -> Device {
        Device {
            key,
            owner,
            protocol,
            conn,
            connected: true,
            lost_at: None,
            last_pong: None,
            last_rx: None,
            pcs: Vec::new(),
            next_pc: PcId::FIRST_V2.0,
            published: Vec::new(),
            forwards: Vec::new(),
            offer_sent: None,
            pending: None,
            revision: 0,
            prior: None,
            mids: MidMap::default(),
            stale: Vec::new(),
            asked: Vec::new(),
        }
    }

    /// Whether `conn` is this device's open signaling connection.
    pub(super) fn speaks_for(&self, conn: ConnId) -> bool {
        self.connected && self.conn == conn
    }

    pub(super) fn pc(&self, id: PcId) -> Option<&Pc> {
        self.pcs.iter().find(|p| p.id == id)
    }

    pub(super) fn pc_mut(&mut self, id: PcId) -> Option<&mut Pc> {
        self.pcs.iter_mut().find(|p| p.id == id)
    }

    /// A new v2 connection id.
    pub(super) fn new_pc_id(&mut self) -> PcId {
        let id = PcId(self.next_pc);
        self.next_pc = self.next_pc.wrapping_add(1).max(PcId::FIRST_V2.0);
        id
    }

    /// The v2 connection of `endpoint`.
    pub(super) fn endpoint(&self, endpoint: &str) -> Option<&Pc> {
        self.pcs
            .iter()
            .find(|p| p.endpoint.as_deref() == Some(endpoint))
    }
}

impl SessionCore {
    /// The device `key` names, if `conn` is its open signaling connection.
    pub(super) fn device_of(&self, key: &DeviceKey, conn: ConnId) -> Option<DeviceId> {
        let id = *self.by_key.get(key)?;
        self.devices.get(&id).filter(|d| d.speaks_for(conn))?;
        Some(id)
    }

    pub(super) fn device_event(&mut self, kind: DeviceEventKind, id: DeviceId, now: Now) {
        let Some(d) = self.devices.get(&id) else {
            return;
        };
        let event = DeviceEvent {
            session_id: self.session_id,
            kind,
            source: DeviceSource::Browser,
            owner: d.owner.clone(),
            device_id: d.key.unique_id.to_string(),
            at_ms: now.unix_us / 1000,
            reason: None,
        };
        self.push(Action::Event(event));
    }

    pub(super) fn close(&mut self, conn: ConnId, why: DeviceClose) {
        self.push(Action::Note {
            conn,
            note: DeviceNote::Close(why),
        });
    }

    /// A signaling connection opened: a new device, or the resume of one whose
    /// connection was lost (its peer connections carry on). The participant's other
    /// devices are replaced. A `uniqueId` that a device of another participant uses in
    /// this session is refused, and nothing changes.
    pub(super) fn device_join(
        &mut self,
        now: Now,
        key: DeviceKey,
        conn: ConnId,
        owner: DeviceOwner,
        protocol: Protocol,
        prior: Option<SubscribeLayout>,
    ) {
        if owner.participant_id != key.participant_id {
            self.close(conn, DeviceClose::DuplicateDevice);
            return;
        }
        let taken = self.devices.values().any(|d| {
            d.key.unique_id == key.unique_id && d.key.participant_id != key.participant_id
        });
        if taken {
            tracing::info!(session_id = %self.session_id, participant_id = %key.participant_id, "device refused: its uniqueId belongs to another participant's device");
            self.stats.devices_refused += 1;
            self.close(conn, DeviceClose::DuplicateDevice);
            return;
        }
        // Other devices of the participant (and this one, if it spoke another protocol).
        let others: Vec<DeviceId> = self
            .devices
            .iter()
            .filter(|(_, d)| {
                d.key.participant_id == key.participant_id
                    && (d.key != key || d.protocol != protocol)
            })
            .map(|(id, _)| *id)
            .collect();
        for other in others {
            self.remove_device(now, other, Some(DeviceClose::Replaced));
        }
        let id = match self.by_key.get(&key) {
            Some(id) => *id,
            None => {
                let id = DeviceId(self.next_device);
                self.next_device += 1;
                self.by_key.insert(key.clone(), id);
                let mut d = Device::new(key.clone(), owner.clone(), conn, protocol);
                if let (Protocol::V3, Some(prior)) = (protocol, prior) {
                    // The browser ignores offers whose revision is not above its last.
                    d.revision = prior.revision;
                    d.prior = (!prior.lines.is_empty()).then_some(prior);
                }
                self.devices.insert(id, d);
                id
            }
        };
        let Some(d) = self.devices.get_mut(&id) else {
            return;
        };
        let old = (d.connected && d.conn != conn).then_some(d.conn);
        let resumed = d.lost_at.take().is_some();
        d.conn = conn;
        d.connected = true;
        // An offer (v3) or endpoints (v2) that were out when the connection dropped are
        // sent again.
        let mut resend: Vec<DeviceNote> = d
            .offer_sent
            .as_mut()
            .map(|(at, offer)| {
                *at = now.at;
                DeviceNote::Offer(offer.clone())
            })
            .into_iter()
            .collect();
        for a in &mut d.asked {
            a.at = now.at;
            resend.push(DeviceNote::SdpNeeded(a.request.clone()));
        }
        if let Some(old) = old {
            // The same device on a second socket: the newer one wins.
            self.close(old, DeviceClose::Replaced);
        }
        for note in resend {
            self.push(Action::Note { conn, note });
        }
        self.stats.signaling_connects += 1;
        if resumed {
            self.stats.signaling_resumed += 1;
        }
        tracing::info!(session_id = %self.session_id, device = %key.unique_id, participant_id = %owner.participant_id, resumed, "device connected");
        self.device_event(DeviceEventKind::Connect, id, now);
        self.route_devices(now);
    }

    /// The signaling connection `conn` closed: the client left (the device goes), or the
    /// socket was lost (the device waits [`RESUME_GRACE`] for a resume).
    pub(super) fn device_closed(&mut self, now: Now, key: &DeviceKey, conn: ConnId, left: bool) {
        let Some(id) = self.device_of(key, conn) else {
            return;
        };
        if left {
            // The page closed its peer connections: nothing to offer on any more.
            if let Some(d) = self.devices.get(&id).filter(|d| d.protocol == Protocol::V3) {
                let layout = DeviceLayout {
                    session_id: self.session_id,
                    participant_id: d.key.participant_id,
                    device_id: d.key.unique_id.to_string(),
                    layout: None,
                };
                self.push(Action::Layout(layout));
            }
            self.remove_device(now, id, None);
            return;
        }
        if let Some(d) = self.devices.get_mut(&id) {
            d.connected = false;
            d.lost_at = Some(now.at);
        }
        self.stats.signaling_lost += 1;
        tracing::info!(session_id = %self.session_id, device = %key.unique_id, "device signaling lost");
        self.device_event(DeviceEventKind::Disconnect, id, now);
    }

    /// Forget a device: close its signaling connection with `close` (if still open),
    /// release its peer connections, tell the application (`onLeave`).
    pub(super) fn remove_device(&mut self, now: Now, id: DeviceId, close: Option<DeviceClose>) {
        self.device_event(DeviceEventKind::Leave, id, now);
        let Some(d) = self.devices.remove(&id) else {
            return;
        };
        self.by_key.remove(&d.key);
        if let (true, Some(why)) = (d.connected, close) {
            self.close(d.conn, why);
        }
        for ufrag in d.pcs.into_iter().filter_map(|p| p.ufrag) {
            self.push(Action::Ufrag {
                ufrag,
                registered: false,
            });
        }
        self.by_addr.retain(|_, (dev, _)| *dev != id);
        tracing::info!(session_id = %self.session_id, device = %d.key.unique_id, participant_id = %d.key.participant_id, reason = close.map(DeviceClose::reason), "device gone");
        self.stats.devices_ended += 1;
        self.sync_browser_audio();
        self.route_devices(now);
    }

    /// Once a second: end devices that never resumed, that stopped answering the
    /// heartbeat they used to answer, whose peer connections went silent, or that sit on
    /// an unanswered offer.
    pub(super) fn housekeeping(&mut self, now: Now) {
        let t = now.at;
        let mut ended: Vec<(DeviceId, Option<DeviceClose>)> = Vec::new();
        for (id, d) in self.devices.iter_mut() {
            if d.pcs.is_empty() {
                d.last_rx = None;
            } else if d.last_rx.is_none() {
                // Its first connection: the silence is counted from here.
                d.last_rx = Some(t);
            }
            let why = if d.lost_at.is_some_and(|l| t > l + RESUME_GRACE) {
                Some(None)
            } else if d.last_pong.is_some_and(|p| t > p + HEARTBEAT_DEAD) {
                Some(Some(DeviceClose::HeartbeatLost))
            } else if d.last_rx.is_some_and(|r| t > r + SILENCE_DEAD) {
                Some(Some(DeviceClose::Silent))
            } else if d.connected
                && (d
                    .offer_sent
                    .as_ref()
                    .is_some_and(|(s, _)| t > *s + OFFER_ANSWER_TIMEOUT)
                    || d.asked.iter().any(|a| t > a.at + OFFER_ANSWER_TIMEOUT))
            {
                Some(Some(DeviceClose::OfferUnanswered))
            } else {
                None
            };
            if let Some(w) = why {
                ended.push((*id, w));
            }
        }
        for (id, why) in ended {
            if matches!(why, Some(DeviceClose::HeartbeatLost | DeviceClose::Silent)) {
                // Gone without a word: the connection is lost as well as the device.
                if self.devices.get(&id).is_some_and(|d| d.connected) {
                    tracing::info!(session_id = %self.session_id, device = id.0, reason = why.map(DeviceClose::reason), "device presumed gone");
                    self.device_event(DeviceEventKind::Disconnect, id, now);
                }
            }
            self.remove_device(now, id, why);
        }
    }

    /// Every 5 s, PING on each device's heartbeat channel (the SDK answers PONG; v2
    /// devices have none).
    pub(super) fn heartbeat(&mut self) {
        for pc in self.devices.values_mut().flat_map(|d| d.pcs.iter_mut()) {
            let Some(id) = pc.heartbeat else { continue };
            if let Some(mut ch) = pc.rtc.channel(id) {
                let _ = ch.write(false, b"PING");
            }
        }
    }

    /// The session ended: hang up every leg, close every device (`onLeave` for each).
    pub(super) fn end(&mut self, now: Now, reason: HangupReason) {
        self.stop_recordings(match reason {
            HangupReason::Shutdown => super::StopReason::Shutdown,
            HangupReason::Moved => super::StopReason::Moved,
            _ => super::StopReason::SessionEnded,
        });
        let legs: Vec<_> = self.legs.drain().collect();
        for (leg, l) in legs {
            self.leg_event(DeviceEventKind::Leave, &l, None);
            self.push(Action::HangUp { leg, reason });
        }
        let close = match reason {
            HangupReason::Removed | HangupReason::Replaced => DeviceClose::Removed,
            HangupReason::SessionEnded | HangupReason::Shutdown => DeviceClose::SessionEnded,
            HangupReason::Moved => DeviceClose::Moved,
        };
        let ids: Vec<DeviceId> = self.devices.keys().copied().collect();
        for id in ids {
            self.device_event(DeviceEventKind::Leave, id, now);
            if let Some(d) = self.devices.remove(&id) {
                if d.connected {
                    self.close(d.conn, close);
                }
                for ufrag in d.pcs.into_iter().filter_map(|p| p.ufrag) {
                    self.push(Action::Ufrag {
                        ufrag,
                        registered: false,
                    });
                }
            }
        }
        self.by_key.clear();
        self.by_addr.clear();
        self.fanout.clear();
        self.ended = true;
        tracing::info!(session_id = %self.session_id, ?reason, "session media ended");
    }
}
