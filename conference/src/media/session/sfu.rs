//! The SFU: datagrams into the devices' peer connections, driving them, and
//! forwarding each published frame through a fan-out table (per source, the
//! subscribing connections that receive it), rebuilt when routes change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::core::{Action, Now, SessionCore};
use super::devices::Device;
use super::ids::{DeviceId, PcId, Source};
use super::Protocol;
use crate::events::DeviceClose;
use crate::media::webrtc::MAX_ADDRS_PER_UFRAG;

/// Where a forwarded source goes: a device's subscribing connection and the mid there.
pub(super) type Target = (DeviceId, PcId, str0m::media::Mid);

/// What writing one frame into its targets did.
#[derive(Default)]
pub(super) struct Written {
    /// Connections that took it.
    pub(super) frames: u64,
    /// Of those, connections that sent it at once (the rest queued it for a drive).
    pub(super) now: u64,
    /// Datagrams sent at once.
    pub(super) transmits: u64,
}

impl Written {
    /// Into the session's counters.
    pub(super) fn count(&self, stats: &mut crate::media::stats::LocalStats) {
        stats.webrtc_media_out += self.frames;
        stats.webrtc_media_out_now += self.now;
        stats.webrtc_transmits += self.transmits;
    }
}

/// Write one frame into each target; `pt_for` picks the payload type there. Each
/// connection sends it at once where it can (`Writer::write_now`: packetized and
/// protected as written, into `outbox`), else queues it for the next drive (`wrote`).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_to(
    devices: &mut HashMap<DeviceId, Device>,
    targets: &[Target],
    pt_for: impl Fn(&str0m::media::Writer<'_>) -> Option<str0m::media::Pt>,
    now: Instant,
    wallclock: Instant,
    time: str0m::media::MediaTime,
    data: &Arc<[u8]>,
    outbox: &mut Vec<(SocketAddr, Vec<u8>)>,
) -> Written {
    let mut written = Written::default();
    for (device, pc, mid) in targets {
        let Some(pc) = devices.get_mut(device).and_then(|d| d.pc_mut(*pc)) else {
            continue;
        };
        let Some(writer) = pc.rtc.writer(*mid) else {
            continue;
        };
        let Some(pt) = pt_for(&writer) else { continue };
        let mut sent = 0;
        let transmit = |t: str0m::net::Transmit| {
            sent += 1;
            outbox.push((t.destination, t.contents.into()));
        };
        match writer.write_now(now, pt, wallclock, time, data.clone(), transmit) {
            Ok(str0m::media::WriteNow::Sent(_)) => {
                written.frames += 1;
                written.now += 1;
                written.transmits += sent;
            }
            Ok(str0m::media::WriteNow::Queued) => {
                written.frames += 1;
                pc.dirty = true;
                pc.wrote = true;
            }
            Err(_) => {}
        }
    }
    written
}

impl SessionCore {
    /// Rebuild the fan-out table from every device's forwards.
    pub(super) fn rebuild_fanout(&mut self) {
        for targets in self.fanout.values_mut() {
            targets.clear();
        }
        for (&id, d) in &self.devices {
            for f in &d.forwards {
                if let Some(mid) = f.to_mid {
                    self.fanout
                        .entry(f.source)
                        .or_default()
                        .push((id, f.pc, mid));
                }
            }
        }
        self.fanout.retain(|_, t| !t.is_empty());
    }

    /// A datagram for whichever peer connection accepts it (the one its address reached
    /// before, else a search).
    pub(super) fn webrtc_input(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        let Some(local) = self.webrtc else {
            return;
        };
        let Ok(receive) = str0m::net::Receive::new(str0m::net::Protocol::Udp, from, local, bytes)
        else {
            return;
        };
        let input = str0m::Input::Receive(now.at, receive);
        let mut target = self.by_addr.get(&from).copied().filter(|(id, pc)| {
            self.devices
                .get(id)
                .and_then(|d| d.pc(*pc))
                .is_some_and(|p| p.rtc.accepts(&input))
        });
        if target.is_none() {
            target = self.devices.iter().find_map(|(&id, d)| {
                let p = d.pcs.iter().find(|p| p.rtc.accepts(&input))?;
                Some((id, p.id))
            });
            // Remember only addresses the connection has answered (not every address a
            // datagram claims to come from).
            if let Some((id, pc)) = target {
                if self
                    .devices
                    .get(&id)
                    .and_then(|d| d.pc(pc))
                    .is_some_and(|p| p.confirmed.contains(&from))
                {
                    self.by_addr.insert(from, (id, pc));
                }
            }
        }
        let Some((id, pc)) = target else {
            self.stats.datagrams_unaccepted += 1;
            return;
        };
        let Some(d) = self.devices.get_mut(&id) else {
            return;
        };
        d.last_rx = Some(now.at);
        let Some(p) = d.pc_mut(pc) else {
            return;
        };
        p.dirty = true;
        if let Err(e) = p.rtc.handle_input(input) {
            tracing::debug!(error = %e, "peer connection input");
        }
        // Driven once the shell has handed over the datagrams already queued.
        self.drive_pending = true;
    }

    /// Run peer connections until they wait: queue what they transmit, forward what
    /// publishers produced, note the earliest timeout. Only those with input, media to
    /// send or a due timeout run, unless `all`: a datagram costs O(its fan-out), not
    /// O(devices).
    pub(super) fn drive(&mut self, now: Now, all: bool) {
        self.drive_pending = false;
        let mut dead: Vec<(DeviceId, PcId)> = Vec::new();
        self.frames.clear();
        // Publishing connections first: what they produced is written into the
        // subscribing ones, which run second.
        for publishing in [true, false] {
            let mut confirms = Vec::new();
            for (&id, d) in self.devices.iter_mut() {
                let Device { pcs, last_pong, .. } = d;
                for pc in pcs.iter_mut().filter(|p| p.publishing == publishing) {
                    let timed_out = all || pc.next.is_some_and(|t| t <= now.at);
                    if !timed_out && !pc.dirty {
                        continue;
                    }
                    pc.dirty = false;
                    // Written media leaves in a timeout: run it before the first poll
                    // rather than after a poll that would only find it due (one pass
                    // over the connection's streams fewer per drive).
                    let timed_out = timed_out || std::mem::take(&mut pc.wrote);
                    let mut out = Driven {
                        outbox: &mut self.outbox,
                        confirms: &mut confirms,
                        frames: &mut self.frames,
                        keyframe_requests: &mut self.keyframe_requests,
                        last_pong,
                        session_id: self.session_id,
                        stats: &mut self.stats,
                    };
                    if !drive_pc(pc, id, now, timed_out, &mut out) {
                        dead.push((id, pc.id));
                    }
                }
            }
            // Confirmations go out before the datagrams that answered those addresses.
            for (ufrag, addr) in confirms {
                self.push(Action::Confirm { ufrag, addr });
            }
            if publishing {
                self.stats.webrtc_media_in += self.frames.len() as u64;
                self.forward(now);
            }
        }
        let requests = std::mem::take(&mut self.keyframe_requests);
        for (device, pc, mid, kind) in &requests {
            self.request_keyframe(*device, *pc, *mid, *kind);
        }
        self.keyframe_requests = requests;
        self.keyframe_requests.clear();
        dead.sort();
        dead.dedup();
        for (id, pc) in dead {
            // A v3 device is its two connections; a v2 connection is one stream.
            match self.devices.get(&id).map(|d| d.protocol) {
                Some(Protocol::V3) => self.remove_device(now, id, Some(DeviceClose::MediaLost)),
                Some(Protocol::V2) => self.remove_pc(now, id, pc),
                None => {}
            }
        }
        self.next_rtc = self
            .devices
            .values()
            .flat_map(|d| d.pcs.iter().filter_map(|p| p.next))
            .min();
    }

    /// A subscriber wants a keyframe on its `mid`: ask the publisher of that track.
    pub(super) fn request_keyframe(
        &mut self,
        device: DeviceId,
        pc: PcId,
        mid: str0m::media::Mid,
        kind: str0m::media::KeyframeRequestKind,
    ) {
        let Some(Source::Track(publisher, from_pc, from_mid)) = self
            .devices
            .get(&device)
            .and_then(|d| {
                d.forwards
                    .iter()
                    .find(|f| f.pc == pc && f.to_mid == Some(mid))
            })
            .map(|f| f.source)
        else {
            return;
        };
        let Some(p) = self
            .devices
            .get_mut(&publisher)
            .and_then(|d| d.pc_mut(from_pc))
        else {
            return;
        };
        if let Some(mut writer) = p.rtc.writer(from_mid) {
            let _ = writer.request_keyframe(None, kind);
            p.dirty = true;
        }
    }

    /// Write the publishers' media into the subscribers' connections.
    fn forward(&mut self, now: Now) {
        let frames = std::mem::take(&mut self.frames);
        for (from, pc, data) in &frames {
            if data.params.spec().codec == str0m::format::Codec::Tele {
                self.browser_dtmf(*from, *pc, data);
                continue;
            }
            self.meter_track(
                *from,
                Source::Track(*from, *pc, data.mid),
                data,
                now.unix_us,
            );
            self.browser_audio_in(*from, *pc, data);
            if !self.recorders.is_empty() && data.params.spec().codec == str0m::format::Codec::Opus
            {
                self.record_packet(Source::Track(*from, *pc, data.mid), data);
            }
            let Some(targets) = self.fanout.get(&Source::Track(*from, *pc, data.mid)) else {
                continue;
            };
            let written = write_to(
                &mut self.devices,
                targets,
                |w| w.match_params(data.params),
                now.at,
                data.network_time,
                data.time,
                &data.data,
                &mut self.outbox,
            );
            written.count(&mut self.stats);
        }
        self.frames = frames;
        self.frames.clear();
    }
}

/// Where one drive of a peer connection puts what it produced.
struct Driven<'a> {
    /// Datagrams to send.
    outbox: &'a mut Vec<(SocketAddr, Vec<u8>)>,
    /// Addresses to confirm to the transport (ufrag, address).
    confirms: &'a mut Vec<(String, SocketAddr)>,
    /// Media received from publishers.
    frames: &'a mut Vec<(DeviceId, PcId, str0m::media::MediaData)>,
    keyframe_requests: &'a mut Vec<super::core::KeyframeRequest>,
    /// The device's last heartbeat.
    last_pong: &'a mut Option<Instant>,
    session_id: uuid::Uuid,
    /// Drives, polls, timeouts and transmits counted.
    stats: &'a mut crate::media::stats::LocalStats,
}

/// Run one peer connection until it waits: queue what it transmits, collect what it
/// received and its keyframe requests, note its next timeout. False: it is dead.
fn drive_pc(
    pc: &mut super::devices::Pc,
    id: DeviceId,
    now: Now,
    timed_out: bool,
    out: &mut Driven<'_>,
) -> bool {
    let rtc = &mut pc.rtc;
    out.stats.webrtc_drives += 1;
    out.stats.webrtc_timeouts += u64::from(timed_out);
    if timed_out && rtc.handle_input(str0m::Input::Timeout(now.at)).is_err() {
        return false;
    }
    let mut ran_timeout = timed_out;
    loop {
        out.stats.webrtc_polls += 1;
        match rtc.poll_output() {
            // A timeout already due (media queued by a write waits for one): run it now
            // rather than on another wake-up.
            Ok(str0m::Output::Timeout(t)) if t <= now.at && !ran_timeout => {
                ran_timeout = true;
                out.stats.webrtc_timeouts += 1;
                if rtc.handle_input(str0m::Input::Timeout(now.at)).is_err() {
                    return false;
                }
            }
            Ok(str0m::Output::Timeout(t)) => {
                pc.next = Some(t);
                break;
            }
            Ok(str0m::Output::Transmit(t)) => {
                // str0m answers only STUN requests whose integrity checked out: the
                // first datagram to an address confirms it.
                if !pc.confirmed.contains(&t.destination)
                    && pc.confirmed.len() < MAX_ADDRS_PER_UFRAG
                {
                    if let Some(u) = &pc.ufrag {
                        pc.confirmed.push(t.destination);
                        out.confirms.push((u.clone(), t.destination));
                    }
                }
                out.stats.webrtc_transmits += 1;
                out.outbox.push((t.destination, t.contents.into()));
            }
            Ok(str0m::Output::Event(e)) => match e {
                str0m::Event::Connected => {
                    tracing::info!(session_id = %out.session_id, device = id.0, connection = pc.id.0, publishing = pc.publishing, "device connection up");
                }
                str0m::Event::ChannelOpen(cid, label) if label == "__heartbeat__" => {
                    pc.heartbeat = Some(cid);
                    // A first PING at once: a client that answers is known as one soon.
                    if let Some(mut ch) = rtc.channel(cid) {
                        let _ = ch.write(false, b"PING");
                    }
                }
                str0m::Event::ChannelData(data)
                    if Some(data.id) == pc.heartbeat && data.data == b"PONG" =>
                {
                    *out.last_pong = Some(now.at);
                }
                str0m::Event::MediaData(data) if pc.publishing => {
                    out.frames.push((id, pc.id, data));
                }
                str0m::Event::KeyframeRequest(req) if !pc.publishing => {
                    out.keyframe_requests.push((id, pc.id, req.mid, req.kind));
                }
                str0m::Event::MediaIngressStats(s) if pc.publishing => {
                    super::view::ingress_stats(rtc, &mut pc.ingress, &s);
                }
                str0m::Event::MediaEgressStats(s) => {
                    // The browser's receiver reports on what we send it.
                    if let Some(rtt) = s.rtt {
                        pc.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                }
                str0m::Event::PeerStats(s) => {
                    let rtt = s.rtt.or_else(|| {
                        s.selected_candidate_pair
                            .as_ref()
                            .and_then(|p| p.current_round_trip_time)
                    });
                    if let Some(rtt) = rtt {
                        pc.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                }
                _ => {}
            },
            Err(e) => {
                tracing::info!(device = id.0, connection = pc.id.0, error = %e, "peer connection failed");
                return false;
            }
        }
    }
    rtc.is_alive()
}
