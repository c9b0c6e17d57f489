//! A fake-time harness around one [`SessionCore`]: SIP legs as plain RTP, browsers
//! as in-memory str0m clients, every output collected.

use std::net::SocketAddr;
use std::time::Duration;

use uuid::Uuid;

use super::super::*;
use crate::events::{DeviceClose, DeviceEvent, DeviceEventKind, DeviceNote, DeviceOwner};
use crate::media::codec::AudioCodec;
use crate::media::g711;
use crate::model::{ParticipantSubscription, Subscriptions};

/// The core's WebRTC address in these tests (nothing is sent anywhere).
pub const CORE_ADDR: &str = "127.0.0.1:40000";

pub fn pcmu() -> LegMedia {
    LegMedia {
        codec: AudioCodec::Pcmu,
        payload_type: 0,
        event_payload_type: Some(101),
        event_clock: 8000,
        ptime_ms: 20,
        held: false,
    }
}

/// Everything the core output, owned.
#[derive(Debug, Default)]
pub struct Seen {
    pub transmit: Vec<(SocketAddr, Vec<u8>)>,
    pub audio: Vec<(LegId, Vec<u8>)>,
    pub actions: Vec<Action>,
}

impl Seen {
    pub fn audio_of(&self, leg: LegId) -> impl Iterator<Item = &[u8]> {
        self.audio
            .iter()
            .filter(move |(l, _)| *l == leg)
            .map(|(_, p)| p.as_slice())
    }

    pub fn events(&self) -> Vec<(DeviceEventKind, Uuid, String)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(DeviceEvent {
                    kind,
                    owner,
                    device_id,
                    ..
                }) => Some((*kind, owner.participant_id, device_id.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn closes(&self) -> Vec<(ConnId, DeviceClose)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Note {
                    conn,
                    note: DeviceNote::Close(why),
                } => Some((*conn, *why)),
                _ => None,
            })
            .collect()
    }

    /// The subscribing layouts the core asked to keep (or forget: `None`), in order.
    pub fn layouts(&self) -> Vec<Option<SubscribeLayout>> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Layout(l) => Some(l.layout.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn offers(&self, to: ConnId) -> Vec<Offer> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Note {
                    conn,
                    note: DeviceNote::Offer(o),
                } if *conn == to => Some(o.clone()),
                _ => None,
            })
            .collect()
    }

    /// RFC 4733 payloads sent to legs: (leg, payload, start of an event, clock).
    pub fn leg_events(&self) -> Vec<(LegId, [u8; 4], bool, u32)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::LegEvent {
                    leg,
                    payload,
                    start,
                    clock,
                } => Some((*leg, *payload, *start, *clock)),
                _ => None,
            })
            .collect()
    }

    pub fn hang_ups(&self) -> Vec<(LegId, HangupReason)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::HangUp { leg, reason } => Some((*leg, *reason)),
                _ => None,
            })
            .collect()
    }
}

/// Mean absolute level of μ-law payloads.
pub fn level(payloads: &[&[u8]]) -> f64 {
    let (sum, n) = payloads
        .iter()
        .flat_map(|p| p.iter())
        .fold((0f64, 0usize), |(s, n), &b| {
            (s + (g711::ulaw_decode(b) as f64).abs(), n + 1)
        });
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// A SIP leg's sender: a 20 ms μ-law tone packet per call.
pub struct Caller {
    pub leg: LegId,
    seq: u16,
    ts: u32,
    phase: f64,
    pub freq: f64,
}

impl Caller {
    pub fn new(leg: u64, freq: f64) -> Caller {
        Caller {
            leg: LegId(leg),
            seq: 1,
            ts: 0,
            phase: 0.0,
            freq,
        }
    }

    fn packet(&mut self) -> [u8; 160] {
        let mut out = [0u8; 160];
        for b in out.iter_mut() {
            let s = (self.phase.sin() * 8000.0) as i16;
            self.phase += 2.0 * std::f64::consts::PI * self.freq / 8000.0;
            *b = g711::ulaw_encode(s);
        }
        out
    }

    /// The phase of the next sample.
    pub fn phase(&self) -> f64 {
        self.phase
    }

    /// Hand one packet to the core.
    pub fn send(&mut self, core: &mut SessionCore, now: Now) {
        let payload = self.packet();
        let view = RtpView {
            ssrc: 7,
            seq: self.seq,
            timestamp: self.ts,
            payload_type: 0,
            marker: false,
            arrival_us: now.unix_us,
            payload: &payload,
        };
        core.handle_rtp(now, self.leg, view);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
    }

    /// An RFC 4733 packet (event `digit`) at this caller's current time.
    pub fn dtmf(&mut self, core: &mut SessionCore, now: Now, digit: u8) {
        let payload = [digit, 0x0a, 0x00, 0xa0];
        let view = RtpView {
            ssrc: 7,
            seq: self.seq,
            timestamp: self.ts,
            payload_type: 101,
            marker: true,
            arrival_us: now.unix_us,
            payload: &payload,
        };
        core.handle_rtp(now, self.leg, view);
        self.seq = self.seq.wrapping_add(1);
    }
}

/// One core, its fake clock and what it output.
pub struct Rig {
    pub core: SessionCore,
    pub now: Now,
    pub seen: Seen,
    pub session_id: Uuid,
}

impl Rig {
    pub fn new() -> Rig {
        let session_id = Uuid::new_v4();
        let now = Now::system();
        let addr = CORE_ADDR.parse().ok();
        Rig {
            core: SessionCore::new(session_id, PHONE_ALIAS.into(), addr, now),
            now,
            seen: Seen::default(),
            session_id,
        }
    }

    /// The node's lobby (no session: nothing is routed), on `clock`'s time.
    pub fn lobby(clock: &Rig) -> Rig {
        let now = clock.now;
        let addr = CORE_ADDR.parse().ok();
        Rig {
            core: SessionCore::lobby(PHONE_ALIAS.into(), addr, now),
            now,
            seen: Seen::default(),
            session_id: Uuid::nil(),
        }
    }

    /// Another session's core, on `clock`'s time.
    pub fn beside(clock: &Rig) -> Rig {
        let mut rig = Rig::new();
        rig.now = clock.now;
        rig.core = SessionCore::new(
            rig.session_id,
            PHONE_ALIAS.into(),
            CORE_ADDR.parse().ok(),
            rig.now,
        );
        rig
    }

    /// Hand what left this core to `to` with `fate`, as the hub does; how many moved.
    pub fn hand_over(&mut self, to: &mut Rig, fate: Fate) -> usize {
        let mut n = 0;
        while let Some(media) = self.core.poll_detached() {
            to.control(Control::Adopt { media, fate });
            n += 1;
        }
        n
    }

    /// Every member hears the whole session.
    pub fn members(&mut self, members: &[Uuid]) {
        let subs = Subscriptions {
            session_id: Some(self.session_id),
            participants: None,
        };
        let snapshot = SessionSnapshot {
            members: members.iter().map(|m| (*m, subs.clone())).collect(),
        };
        self.control(Control::Snapshot(snapshot));
    }

    /// `who` hears only `hears` (participant-level subscription).
    pub fn subscribe(&mut self, members: &[Uuid], who: Uuid, hears: &[Uuid]) {
        let session = Subscriptions {
            session_id: Some(self.session_id),
            participants: None,
        };
        let only = Subscriptions {
            session_id: Some(self.session_id),
            participants: Some(
                hears
                    .iter()
                    .map(|p| ParticipantSubscription {
                        participant_id: *p,
                        stream_aliases: None,
                    })
                    .collect(),
            ),
        };
        let snapshot = SessionSnapshot {
            members: members
                .iter()
                .map(|m| {
                    (
                        *m,
                        if *m == who {
                            only.clone()
                        } else {
                            session.clone()
                        },
                    )
                })
                .collect(),
        };
        self.control(Control::Snapshot(snapshot));
    }

    pub fn control(&mut self, c: Control) {
        self.core.handle_control(self.now, c);
        self.collect();
    }

    pub fn join_leg(&mut self, leg: u64, participant_id: Uuid) {
        self.join_leg_with(leg, participant_id, pcmu());
    }

    pub fn join_leg_with(&mut self, leg: u64, participant_id: Uuid, media: LegMedia) {
        self.control(Control::Join {
            leg: LegId(leg),
            owner: DeviceOwner {
                participant_id,
                callback_url: None,
                tag: None,
            },
            call_id: format!("call-{leg}").into(),
            media,
        });
    }

    pub fn device(&mut self, participant_id: Uuid, unique_id: &str, conn: u64) {
        self.device_with(participant_id, unique_id, conn, Protocol::V3);
    }

    pub fn device_with(
        &mut self,
        participant_id: Uuid,
        unique_id: &str,
        conn: u64,
        protocol: Protocol,
    ) {
        self.device_after(participant_id, unique_id, conn, protocol, None);
    }

    /// A device joins holding `prior` from a previous owner of the session.
    pub fn device_after(
        &mut self,
        participant_id: Uuid,
        unique_id: &str,
        conn: u64,
        protocol: Protocol,
        prior: Option<SubscribeLayout>,
    ) {
        self.control(Control::DeviceJoin {
            key: DeviceKey::new(participant_id, unique_id),
            conn: ConnId(conn),
            owner: DeviceOwner {
                participant_id,
                callback_url: None,
                tag: None,
            },
            protocol,
            prior,
        });
    }

    pub fn collect(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Transmit(batch) => self.seen.transmit.extend_from_slice(batch),
                Output::LegAudio { leg, payload, .. } => {
                    self.seen.audio.push((leg, payload.to_vec()))
                }
                Output::Action(a) => self.seen.actions.push(a),
            }
        }
    }

    /// Advance the clock by `d` and run due timers.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
        self.core.handle_timeout(self.now);
        self.collect();
    }

    /// `n` ticks of 20 ms; before each, every caller sends a packet.
    pub fn ticks(&mut self, n: usize, callers: &mut [&mut Caller]) {
        for _ in 0..n {
            for c in callers.iter_mut() {
                c.send(&mut self.core, self.now);
            }
            self.advance(Duration::from_millis(20));
        }
    }

    pub fn take(&mut self) -> Seen {
        std::mem::take(&mut self.seen)
    }
}
