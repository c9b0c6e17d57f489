//! Media follows its participant. A participant removed from its session keeps its SIP
//! calls and browser devices: they are detached from the session's core and adopted by
//! the node's lobby (a core of no session, where nothing is routed: a caller hears
//! silence, a device receives nothing and is heard by nobody). Added to a session, the
//! participant's media is detached from the lobby and adopted by that session's core.
//! What moves is the media as it is — a leg with its jitter buffer and codecs, a device
//! with its peer connections, subscribing offer state and signaling input channel — so
//! a call is not hung up and a browser does not reload.
//!
//! Where media belongs is the control plane's answer ([`Homes`]): the hub asks it for
//! every detached participant and sends the media there. A core detaches the media of
//! every non-member (after a snapshot, a join or an adoption); the lobby detaches a
//! participant's media when told its session changed ([`super::Control::Recheck`])
//! and asks for a check of everything that arrives (a join that raced an add).
//!
//! On arrival, one call per participant (the newer call stays) and one device per
//! participant (the newer signaling connection stays) still hold.

use std::future::Future;
use std::pin::Pin;

use uuid::Uuid;

use super::core::{Action, Now, SessionCore};
use super::devices::Device;
use super::ids::{ConnId, DeviceId, LegId, PcId};
use super::legs::Leg;
use super::shell::{ConnEntry, LegEntry};
use super::{HangupReason, Protocol, SessionSnapshot};
use crate::events::{DeviceClose, DeviceEventKind};

/// A participant's media taken out of a core.
pub struct Detached {
    pub(super) participant_id: Uuid,
    pub(super) legs: Vec<(LegId, Leg)>,
    pub(super) devices: Vec<Device>,
}

impl std::fmt::Debug for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detached")
            .field("participant_id", &self.participant_id)
            .field(
                "legs",
                &self.legs.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            )
            .field(
                "devices",
                &self
                    .devices
                    .iter()
                    .map(|d| d.key.clone())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Detached {
    pub fn participant_id(&self) -> Uuid {
        self.participant_id
    }

    /// Its legs and its devices' signaling connections.
    pub(super) fn endpoints(&self) -> (Vec<LegId>, Vec<ConnId>) {
        (
            self.legs.iter().map(|(l, _)| *l).collect(),
            self.devices.iter().map(|d| d.conn).collect(),
        )
    }
}

/// A participant's media on its way between two shells: the core's part and the
/// shell's (legs' RTP endpoints and media watches, devices' signaling channels).
pub struct Moving {
    pub(super) media: Detached,
    pub(super) legs: Vec<(LegId, LegEntry)>,
    pub(super) conns: Vec<(ConnId, ConnEntry)>,
    /// How many moves it made without settling (a bound against ping-pong).
    pub(super) hops: u32,
}

impl Moving {
    pub fn participant_id(&self) -> Uuid {
        self.media.participant_id
    }

    pub fn hops(&self) -> u32 {
        self.hops
    }
}

/// What becomes of media adopted by a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It stays (its session, or the lobby).
    Stay,
    /// Its session runs on another node (a cluster): its calls stay parked here, its
    /// devices are told to connect again (they are relayed to that node).
    Evict,
    /// Its participant was deleted: calls are hung up, devices closed.
    End,
}

/// Where a participant's media belongs now.
#[derive(Debug, Clone)]
pub enum Home {
    /// Its session, whose media runs here (started with this snapshot if it is not).
    Session(Uuid, SessionSnapshot),
    /// It is in no session: the lobby.
    Lobby,
    /// Its session's media runs on another node.
    Elsewhere,
    /// The participant no longer exists.
    Gone,
}

/// The control plane's answer to "where does this participant's media belong?".
pub trait Homes: Send + Sync + 'static {
    fn home(&self, participant_id: Uuid) -> Pin<Box<dyn Future<Output = Home> + Send>>;
}

impl SessionCore {
    /// Detach the media of every participant that is not a member here (never in the
    /// lobby, where all media is a non-member's).
    pub(super) fn evict_strangers(&mut self, now: Now) {
        if self.lobby {
            return;
        }
        let mut strangers: Vec<Uuid> = self
            .legs
            .values()
            .map(|l| l.owner.participant_id)
            .chain(self.devices.values().map(|d| d.key.participant_id))
            .filter(|p| !self.is_member(*p))
            .collect();
        strangers.sort();
        strangers.dedup();
        for p in strangers {
            self.detach(now, p);
        }
    }

    /// Take every leg and device of `participant_id` out of this core (to be polled
    /// with [`SessionCore::poll_detached`]). Nothing ends: no event, no close, no
    /// hang-up; what the others received of it stops.
    pub(super) fn detach(&mut self, now: Now, participant_id: Uuid) {
        let legs: Vec<LegId> = self
            .legs
            .iter()
            .filter(|(_, l)| l.owner.participant_id == participant_id)
            .map(|(k, _)| *k)
            .collect();
        let devices: Vec<DeviceId> = self
            .devices
            .iter()
            .filter(|(_, d)| d.key.participant_id == participant_id)
            .map(|(k, _)| *k)
            .collect();
        if legs.is_empty() && devices.is_empty() {
            return;
        }
        let mut out = Detached {
            participant_id,
            legs: Vec::new(),
            devices: Vec::new(),
        };
        for leg in legs {
            if let Some(l) = self.legs.remove(&leg) {
                self.mixer.remove_stream(l.key);
                self.mixer.remove_listener(l.key);
                out.legs.push((leg, l));
            }
        }
        for id in devices {
            // v2: the streams it received here end (`endpointRemoved`); what it
            // publishes moves with it.
            let receiving: Vec<PcId> = self
                .devices
                .get(&id)
                .filter(|d| d.protocol == Protocol::V2)
                .map(|d| {
                    d.pcs
                        .iter()
                        .filter(|p| !p.publishing)
                        .map(|p| p.id)
                        .chain(d.asked.iter().map(|a| a.pc))
                        .collect()
                })
                .unwrap_or_default();
            for pc in receiving {
                self.drop_pc(id, pc);
            }
            let Some(mut d) = self.devices.remove(&id) else {
                continue;
            };
            self.by_key.remove(&d.key);
            self.by_addr.retain(|_, (dev, _)| *dev != id);
            // v3: the lines of what it received here go inactive in its next offer.
            let stale: Vec<str0m::media::Mid> =
                d.forwards.drain(..).filter_map(|f| f.to_mid).collect();
            d.stale.extend(stale);
            for ufrag in d.pcs.iter().filter_map(|p| p.ufrag.clone()) {
                self.push(Action::Ufrag {
                    ufrag,
                    registered: false,
                });
            }
            out.devices.push(d);
        }
        tracing::info!(session_id = %self.session_id, lobby = self.lobby, %participant_id, legs = out.legs.len(), devices = out.devices.len(), "media leaves");
        self.stats.media_moved += 1;
        self.detached.push(out);
        self.rebuild_fanout();
        self.sync_browser_audio();
        self.route_devices(now);
    }

    /// Media that left this core, for the shell to send where it belongs.
    pub fn poll_detached(&mut self) -> Option<Detached> {
        if self.detached.is_empty() {
            return None;
        }
        Some(self.detached.remove(0))
    }

    /// A participant's media arrives, with its fate here.
    pub(super) fn adopt(&mut self, now: Now, media: Detached, fate: Fate) {
        let pid = media.participant_id;
        tracing::info!(session_id = %self.session_id, lobby = self.lobby, participant_id = %pid, legs = media.legs.len(), devices = media.devices.len(), ?fate, "media arrives");
        for (leg, l) in media.legs {
            self.adopt_leg(leg, l);
        }
        for d in media.devices {
            self.adopt_device(now, d);
        }
        match fate {
            Fate::Stay => {}
            Fate::Evict => {
                for id in self.devices_of(pid) {
                    self.remove_device(now, id, Some(DeviceClose::Moved));
                }
            }
            Fate::End => {
                self.hang_up_legs(|l| l.owner.participant_id == pid, HangupReason::Removed);
                for id in self.devices_of(pid) {
                    self.remove_device(now, id, Some(DeviceClose::Removed));
                }
            }
        }
        if self.lobby && fate != Fate::End {
            self.push(Action::Verify(pid));
        }
        self.rebuild_fanout();
        self.sync_browser_audio();
        self.route_devices(now);
        self.evict_strangers(now);
    }

    fn devices_of(&self, participant_id: Uuid) -> Vec<DeviceId> {
        self.devices
            .iter()
            .filter(|(_, d)| d.key.participant_id == participant_id)
            .map(|(k, _)| *k)
            .collect()
    }

    /// One call per participant: of two, the newer (the higher leg id) stays.
    fn adopt_leg(&mut self, leg: LegId, mut l: Leg) {
        let pid = l.owner.participant_id;
        if self
            .legs
            .iter()
            .any(|(k, x)| x.owner.participant_id == pid && *k > leg)
        {
            self.leg_event(DeviceEventKind::Leave, &l, None);
            self.push(Action::HangUp {
                leg,
                reason: HangupReason::Replaced,
            });
            return;
        }
        self.hang_up_legs(|x| x.owner.participant_id == pid, HangupReason::Replaced);
        // Mixer keys are this core's.
        l.key = self.endpoint_key();
        let rate = l.media.codec.pcm_rate();
        self.mixer.add_stream(l.key, rate);
        self.mixer.add_listener(l.key, rate, Some(l.key));
        self.legs.insert(leg, l);
    }

    /// A device arrives with its peer connections. If the same device is here already
    /// (its signaling resumed here while it moved), the two become one under the newer
    /// signaling connection; of two devices of the participant, the newer connection's
    /// stays.
    fn adopt_device(&mut self, now: Now, mut d: Device) {
        if let Some(twin) = self.by_key.get(&d.key).copied() {
            if let Some(t) = self.devices.remove(&twin) {
                self.by_key.remove(&t.key);
                self.by_addr.retain(|_, (dev, _)| *dev != twin);
                for ufrag in t.pcs.iter().filter_map(|p| p.ufrag.clone()) {
                    self.push(Action::Ufrag {
                        ufrag,
                        registered: false,
                    });
                }
                if t.conn > d.conn {
                    if d.connected {
                        self.close(d.conn, DeviceClose::Replaced);
                    }
                    d.conn = t.conn;
                    d.connected = t.connected;
                    d.lost_at = t.lost_at;
                } else if t.connected {
                    self.close(t.conn, DeviceClose::Replaced);
                }
            }
        }
        let id = DeviceId(self.next_device);
        self.next_device += 1;
        for pc in &mut d.pcs {
            pc.dirty = true;
            let Some(ufrag) = pc.ufrag.clone() else {
                continue;
            };
            self.push(Action::Ufrag {
                ufrag: ufrag.clone(),
                registered: true,
            });
            for addr in pc.confirmed.clone() {
                self.push(Action::Confirm {
                    ufrag: ufrag.clone(),
                    addr,
                });
            }
        }
        // Time spent moving is not silence.
        if d.last_rx.is_some() {
            d.last_rx = Some(now.at);
        }
        let conn = d.conn;
        let pid = d.key.participant_id;
        self.by_key.insert(d.key.clone(), id);
        self.devices.insert(id, d);
        self.drive_pending = true;
        let others: Vec<(DeviceId, ConnId)> = self
            .devices
            .iter()
            .filter(|(k, o)| **k != id && o.key.participant_id == pid)
            .map(|(k, o)| (*k, o.conn))
            .collect();
        for (other, other_conn) in others {
            if other_conn > conn {
                self.remove_device(now, id, Some(DeviceClose::Replaced));
                return;
            }
            self.remove_device(now, other, Some(DeviceClose::Replaced));
        }
    }
}
