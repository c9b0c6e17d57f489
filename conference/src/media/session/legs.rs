//! SIP legs: admission, who hears whom (the mixer's routing), RTP into the jitter
//! buffers, and the 20 ms tick that decodes, mixes and encodes.

use std::collections::VecDeque;
use std::sync::Arc;

use uuid::Uuid;

use super::core::{Action, Now, Queued, SessionCore};
use super::ids::LegId;
use super::{HangupReason, LegMedia, RtpView, MAX_RTP_PAYLOAD};
use crate::events::{DeviceEvent, DeviceEventKind, DeviceOwner, DeviceSource};
use crate::media::codec::{Decoder, Encoder};
use crate::media::frame_len;
use crate::media::jitter::{JitterBuffer, Pull};
use crate::media::pcm::PcmFifo;
use crate::media::stats::LocalStats;

pub(super) struct Leg {
    /// Its endpoint in the mixer (a stream and a listener), issued by the core.
    pub(super) key: u64,
    /// Whose call it is.
    pub(super) owner: DeviceOwner,
    /// The SIP Call-ID (the `deviceId` of its `onConnect`/`onLeave`).
    pub(super) call_id: Arc<str>,
    /// The msid stream id browsers see its audio under: random, so that no client can
    /// claim it before the leg exists.
    pub(super) stream: String,
    pub(super) media: LegMedia,
    jitter: JitterBuffer,
    decoder: Option<Decoder>,
    encoder: Option<Encoder>,
    pcm_in: PcmFifo,
    pcm_out: PcmFifo,
    /// This tick's audio from the caller (valid when `framed`).
    pub(super) frame: Vec<i16>,
    packet: Vec<i16>,
    payload: Vec<u8>,
    last_event_ts: Option<u32>,
    /// Arrival (µs) and decoded length of each packet whose audio is in `pcm_in`,
    /// oldest first (`u64::MAX` for concealment), for the latency histogram.
    arrivals: VecDeque<(u64, usize)>,
    /// Arrival of the audio in this tick's frame, if it came from a packet.
    frame_arrival: Option<u64>,
    pub(super) framed: bool,
    /// Opus for browsers, at the leg's own rate, created when a browser first subscribes.
    pub(super) opus: Option<Encoder>,
    pub(super) opus_ts: u32,
    pub(super) opus_payload: Vec<u8>,
    /// The caller's audio level, from the decoded frames.
    pub(super) meter: super::view::Meter,
    /// Where the music on hold plays from (held legs).
    music_pos: usize,
}

impl Leg {
    pub(super) fn new(
        key: u64,
        owner: DeviceOwner,
        call_id: Arc<str>,
        stream: String,
        media: LegMedia,
    ) -> Leg {
        let rate = media.codec.pcm_rate();
        let decoder = Decoder::new(media.codec)
            .map_err(|e| tracing::error!(error = %e, "decoder"))
            .ok();
        let encoder = Encoder::new(media.codec)
            .map_err(|e| tracing::error!(error = %e, "encoder"))
            .ok();
        Leg {
            key,
            owner,
            call_id,
            stream,
            media,
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
            arrivals: VecDeque::with_capacity(64),
            frame_arrival: None,
            framed: false,
            opus: None,
            opus_ts: 0,
            opus_payload: Vec::with_capacity(MAX_RTP_PAYLOAD),
            meter: Default::default(),
            music_pos: 0,
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

    /// Pull from the jitter buffer until a frame's worth is decoded; then this tick's frame.
    fn decode_frame(&mut self, now_us: u64, stats: &mut LocalStats) {
        let before = self.jitter.stats();
        self.frame_arrival = None;
        self.framed = false;
        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        let need = self.frame.len();
        while self.pcm_in.len() < need {
            match self.jitter.pull_at(now_us) {
                Pull::Packet {
                    payload_type,
                    payload,
                    arrival_us,
                    ..
                } => {
                    if payload_type == self.media.payload_type {
                        let before = self.pcm_in.len();
                        decoder.decode(payload, &mut self.pcm_in);
                        self.arrivals
                            .push_back((arrival_us, self.pcm_in.len().saturating_sub(before)));
                    }
                }
                Pull::Lost => {
                    let samples = (self.media.codec.pcm_rate() * self.media.ptime_ms.clamp(10, 60)
                        / 1000) as usize;
                    let before = self.pcm_in.len();
                    decoder.conceal(samples, &mut self.pcm_in);
                    self.arrivals
                        .push_back((u64::MAX, self.pcm_in.len().saturating_sub(before)));
                    stats.concealed += 1;
                }
                Pull::Empty => break,
            }
        }
        if self.pcm_in.pop(&mut self.frame) {
            self.framed = true;
            let n = self.frame.len();
            self.frame_arrival = self.consume_arrivals(n);
        }
        let after = self.jitter.stats();
        stats.jitter_underruns += after.underruns - before.underruns;
        stats.jitter_shrinks += after.dropped_to_shrink - before.dropped_to_shrink;
    }

    /// Encode what the mix left in `pcm_out` and queue it.
    fn encode(&mut self, id: LegId, arena: &mut Vec<u8>, queue: &mut VecDeque<Queued>) {
        let samples = self.packet_rtp_samples();
        let Some(encoder) = self.encoder.as_mut() else {
            return;
        };
        while self.pcm_out.pop(&mut self.packet) {
            match encoder.encode(&self.packet, &mut self.payload) {
                Ok(()) => {
                    let start = arena.len();
                    arena.extend_from_slice(&self.payload);
                    queue.push_back(Queued::LegAudio {
                        leg: id,
                        start,
                        end: arena.len(),
                        samples,
                    });
                }
                Err(e) => tracing::warn!(error = %e, "encode failed"),
            }
        }
    }
}

/// The highest RFC 4733 event relayed between legs and browsers (16: flash).
const MAX_RELAYED_EVENT: u8 = 16;

impl SessionCore {
    pub(super) fn join(
        &mut self,
        id: LegId,
        owner: DeviceOwner,
        call_id: Arc<str>,
        media: LegMedia,
    ) {
        if self.legs.contains_key(&id) {
            self.update(id, media);
            return;
        }
        let participant_id = owner.participant_id;
        // One leg per participant: a new call with the same token replaces the old one.
        self.hang_up_legs(
            |l| l.owner.participant_id == participant_id,
            HangupReason::Replaced,
        );
        let rate = media.codec.pcm_rate();
        let key = self.endpoint_key();
        self.mixer.add_stream(key, rate);
        self.mixer.add_listener(key, rate, Some(key));
        let stream = format!("phone-{}", Uuid::new_v4().simple());
        let leg = Leg::new(key, owner, call_id, stream, media);
        self.leg_event(DeviceEventKind::Connect, &leg, None);
        self.legs.insert(id, leg);
        tracing::info!(session_id = %self.session_id, leg = %id, %participant_id, codec = ?media.codec, "leg joined");
        self.route();
    }

    /// Hang up (and forget) every leg `which` selects.
    pub(super) fn hang_up_legs(&mut self, which: impl Fn(&Leg) -> bool, reason: HangupReason) {
        let ids: Vec<LegId> = self
            .legs
            .iter()
            .filter(|(_, l)| which(l))
            .map(|(k, _)| *k)
            .collect();
        for leg in ids {
            if let Some(l) = self.legs.remove(&leg) {
                self.leg_event(DeviceEventKind::Leave, &l, None);
                self.mixer.remove_stream(l.key);
                self.mixer.remove_listener(l.key);
            }
            self.push(Action::HangUp { leg, reason });
        }
    }

    pub(super) fn update(&mut self, id: LegId, media: LegMedia) {
        let Some(l) = self.legs.get_mut(&id) else {
            return;
        };
        if l.media.codec != media.codec || l.media.ptime_ms != media.ptime_ms {
            let stream = std::mem::take(&mut l.stream);
            let key = l.key;
            *l = Leg::new(key, l.owner.clone(), l.call_id.clone(), stream, media);
            let rate = media.codec.pcm_rate();
            self.mixer.add_stream(key, rate);
            self.mixer.add_listener(key, rate, Some(key));
            self.route();
        } else {
            if media.held && !l.media.held {
                l.music_pos = 0;
            }
            l.media = media;
        }
    }

    /// `onConnect` / `onLeave` of a SIP call, for its participant's application.
    pub(super) fn leg_event(
        &mut self,
        kind: DeviceEventKind,
        leg: &Leg,
        reason: Option<&'static str>,
    ) {
        self.push(Action::Event(DeviceEvent {
            session_id: self.session_id,
            kind,
            source: DeviceSource::Sip,
            owner: leg.owner.clone(),
            device_id: leg.call_id.to_string(),
            at_ms: self.unix_ms,
            reason,
        }));
    }

    pub(super) fn leave(&mut self, id: LegId, reason: Option<&'static str>) {
        if let Some(l) = self.legs.remove(&id) {
            self.leg_event(DeviceEventKind::Leave, &l, reason);
            self.mixer.remove_stream(l.key);
            self.mixer.remove_listener(l.key);
            tracing::info!(session_id = %self.session_id, leg = %id, "leg left");
            self.route();
        }
    }

    /// Recompute who hears whom from the snapshot (the pure resolver): each leg per its
    /// participant's subscriptions, each recorder everything (or its channel's share);
    /// browser audio is decoded only while a leg or a recorder hears it.
    pub(super) fn route(&mut self) {
        let mut hears = Vec::with_capacity(self.legs.len() + self.browser_audio.len());
        let recorded = self.recorders.iter().any(|r| r.wants_pcm());
        let mut heard = vec![recorded; self.browser_audio.len()];
        let listeners: Vec<(u64, Uuid)> = self
            .legs
            .values()
            .map(|l| (l.key, l.owner.participant_id))
            .collect();
        for (listener, pid) in listeners {
            let subs = self.subscriptions_of(pid);
            hears.clear();
            for s in self.legs.values() {
                if self.receives(pid, &subs, s.owner.participant_id, Some(&self.alias)) {
                    hears.push(s.key);
                }
            }
            for (i, b) in self.browser_audio.iter().enumerate() {
                if self.receives(pid, &subs, b.participant_id, b.alias.as_deref()) {
                    hears.push(b.key);
                    heard[i] = true;
                }
            }
            self.mixer.set_hears(listener, &hears);
        }
        let mut channels = Vec::new();
        for rec in &self.recorders {
            for (channel, key) in rec.listeners.iter().enumerate() {
                channels.push((*key, self.recorder_hears(rec, channel)));
            }
        }
        for (key, keys) in channels {
            self.mixer.set_hears(key, &keys);
        }
        for (b, h) in self.browser_audio.iter_mut().zip(heard) {
            b.set_heard(h);
        }
    }

    /// One RTP packet from a leg: audio into its jitter buffer; a telephone-event goes
    /// straight to the legs that hear the sender.
    pub fn handle_rtp(&mut self, _now: Now, id: LegId, p: RtpView<'_>) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        if Some(p.payload_type) != leg.media.event_payload_type {
            leg.jitter.push(
                p.ssrc,
                p.seq,
                p.timestamp,
                p.payload_type,
                p.payload,
                p.arrival_us,
            );
            return;
        }
        let Some(&[e0, e1, e2, e3]) = p.payload.get(..4) else {
            return;
        };
        let start = leg.last_event_ts != Some(p.timestamp);
        if start {
            leg.last_event_ts = Some(p.timestamp);
            tracing::info!(session_id = %self.session_id, leg = %id, event = e0, "DTMF event");
        }
        let clock = leg.media.event_clock;
        let key = leg.key;
        self.relay_event(key, [e0, e1, e2, e3], start, clock);
    }

    /// An RFC 4733 payload from the mixer stream `from` (a leg or a browser's audio) to
    /// every leg that negotiated telephone-event and hears that stream.
    pub(super) fn relay_event(&mut self, from: u64, payload: [u8; 4], start: bool, clock: u32) {
        // Only the events every leg's answer names (`0-16`: DTMF and flash); the
        // others (RFC 4733 tones, modem signals) would break that negotiation.
        if payload[0] > MAX_RELAYED_EVENT {
            return;
        }
        let to: Vec<LegId> = self
            .legs
            .iter()
            .filter(|(_, l)| {
                l.media.event_payload_type.is_some()
                    && self.mixer.hears(l.key).is_some_and(|h| h.contains(&from))
            })
            .map(|(k, _)| *k)
            .collect();
        for leg in to {
            self.push(Action::LegEvent {
                leg,
                payload,
                start,
                clock,
            });
        }
    }

    /// The 20 ms tick: decode each leg's frame, mix, encode each leg's mix, then offer
    /// the callers' audio to the browsers that receive it.
    pub(super) fn tick(&mut self, now: Now) {
        let SessionCore {
            legs,
            mixer,
            browser_audio,
            arena,
            queue,
            stats,
            hold_music,
            ..
        } = self;
        for leg in legs.values_mut() {
            leg.decode_frame(now.unix_us, stats);
            if leg.media.held {
                // Held: nothing of it reaches the mix or the browsers.
                leg.framed = false;
                leg.frame_arrival = None;
            }
            if leg.framed {
                leg.meter.pcm(&leg.frame, now.unix_us);
                if let Some(f) = mixer.frame_mut(leg.key) {
                    f.copy_from_slice(&leg.frame);
                }
            }
        }
        for b in browser_audio.iter_mut() {
            b.feed_mixer(mixer);
        }
        mixer.mix();
        for (&id, leg) in legs.iter_mut() {
            if leg.media.held {
                // The music on hold instead of the mix (none: nothing is sent).
                if let Some(music) = hold_music.as_deref() {
                    let rate = leg.media.codec.pcm_rate();
                    music.fill(rate, &mut leg.music_pos, &mut leg.frame);
                    leg.pcm_out.push(&leg.frame);
                    leg.encode(id, arena, queue);
                }
                continue;
            }
            let Some(out) = mixer.output(leg.key) else {
                continue;
            };
            leg.pcm_out.push(out);
            leg.encode(id, arena, queue);
        }
        // Every mix is out (queued this instant): how long its audio waited since it arrived.
        for leg in legs.values() {
            if let Some(arrival) = leg.frame_arrival {
                stats.observe_mix_latency(now.unix_us.saturating_sub(arrival));
            }
        }
        stats.frames_mixed += legs.len() as u64;
        self.record_tick();
        if self.phone_to_browsers(now) {
            self.drive(now, false);
        }
    }
}
