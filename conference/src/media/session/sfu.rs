//! The SFU: datagrams into the devices' peer connections, driving them, and
//! forwarding each published frame through a fan-out table (per source, the
//! subscribing connections that receive it), rebuilt when routes change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::core::{Action, Now, SessionCore};
use super::devices::Device;
use super::ids::{DeviceId, Source};
use crate::events::DeviceClose;
use crate::media::webrtc::MAX_ADDRS_PER_UFRAG;

/// A device's publishing (0) or subscribing (1) connection.
fn rtc_of(d: &mut Device, pass: usize) -> Option<&mut str0m::Rtc> {
    if pass == 0 {
        d.publish.as_mut()
    } else {
        d.subscribe.as_mut()
    }
}

/// Write one frame into each target (device, mid in its subscribing connection);
/// `pt_for` picks the payload type there. Returns how many connections took it.
pub(super) fn write_to(
    devices: &mut HashMap<DeviceId, Device>,
    targets: &[(DeviceId, str0m::media::Mid)],
    pt_for: impl Fn(&str0m::media::Writer<'_>) -> Option<str0m::media::Pt>,
    wallclock: Instant,
    time: str0m::media::MediaTime,
    data: &Arc<[u8]>,
) -> u64 {
    let mut written = 0;
    for (device, mid) in targets {
        let Some(d) = devices.get_mut(device) else {
            continue;
        };
        let Some(writer) = d.subscribe.as_mut().and_then(|rtc| rtc.writer(*mid)) else {
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

impl SessionCore {
    /// Rebuild the fan-out table from every device's forwards.
    pub(super) fn rebuild_fanout(&mut self) {
        for targets in self.fanout.values_mut() {
            targets.clear();
        }
        for (&id, d) in &self.devices {
            for f in &d.forwards {
                self.fanout
                    .entry(f.source)
                    .or_default()
                    .push((id, f.to_mid));
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
        let mut target = self.by_addr.get(&from).copied().filter(|(id, pass)| {
            self.devices
                .get_mut(id)
                .and_then(|d| rtc_of(d, *pass))
                .is_some_and(|r| r.accepts(&input))
        });
        if target.is_none() {
            'search: for (&id, d) in self.devices.iter_mut() {
                for pass in 0..2 {
                    if rtc_of(d, pass).is_some_and(|r| r.accepts(&input)) {
                        target = Some((id, pass));
                        break 'search;
                    }
                }
            }
            // Remember only addresses the connection has answered (not every address a
            // datagram claims to come from).
            if let Some((id, pass)) = target {
                if self
                    .devices
                    .get(&id)
                    .is_some_and(|d| d.confirmed[pass].contains(&from))
                {
                    self.by_addr.insert(from, (id, pass));
                }
            }
        }
        let Some((id, pass)) = target else {
            self.stats.datagrams_unaccepted += 1;
            return;
        };
        let Some(d) = self.devices.get_mut(&id) else {
            return;
        };
        d.dirty[pass] = true;
        if let Some(rtc) = rtc_of(d, pass) {
            if let Err(e) = rtc.handle_input(input) {
                tracing::debug!(error = %e, "peer connection input");
            }
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
        let mut dead = Vec::new();
        self.frames.clear();
        for pass in 0..2 {
            let mut confirms = Vec::new();
            for (&id, d) in self.devices.iter_mut() {
                let timed_out = all || d.next[pass].is_some_and(|t| t <= now.at);
                if !timed_out && !d.dirty[pass] {
                    continue;
                }
                d.dirty[pass] = false;
                let Device {
                    publish,
                    subscribe,
                    heartbeat,
                    last_pong,
                    next,
                    confirmed,
                    ufrag,
                    ..
                } = d;
                let rtc = if pass == 0 { publish } else { subscribe };
                let Some(rtc) = rtc.as_mut() else { continue };
                if timed_out && rtc.handle_input(str0m::Input::Timeout(now.at)).is_err() {
                    dead.push(id);
                    continue;
                }
                let mut ran_timeout = timed_out;
                loop {
                    match rtc.poll_output() {
                        // A timeout already due (media queued by a write waits for one):
                        // run it now rather than on another wake-up.
                        Ok(str0m::Output::Timeout(t)) if t <= now.at && !ran_timeout => {
                            ran_timeout = true;
                            if rtc.handle_input(str0m::Input::Timeout(now.at)).is_err() {
                                dead.push(id);
                                break;
                            }
                        }
                        Ok(str0m::Output::Timeout(t)) => {
                            next[pass] = Some(t);
                            break;
                        }
                        Ok(str0m::Output::Transmit(t)) => {
                            // str0m answers only STUN requests whose integrity checked
                            // out: the first datagram to an address confirms it.
                            if !confirmed[pass].contains(&t.destination)
                                && confirmed[pass].len() < MAX_ADDRS_PER_UFRAG
                            {
                                if let Some(u) = &ufrag[pass] {
                                    confirmed[pass].push(t.destination);
                                    confirms.push((u.clone(), t.destination));
                                }
                            }
                            self.outbox.push((t.destination, t.contents.into()));
                        }
                        Ok(str0m::Output::Event(e)) => match e {
                            str0m::Event::Connected => {
                                tracing::info!(session_id = %self.session_id, device = id.0, subscribing = pass == 1, "device connection up");
                            }
                            str0m::Event::ChannelOpen(cid, label) if label == "__heartbeat__" => {
                                heartbeat[pass] = Some(cid);
                                last_pong.get_or_insert(now.at);
                            }
                            str0m::Event::ChannelData(data)
                                if Some(data.id) == heartbeat[pass] && data.data == b"PONG" =>
                            {
                                *last_pong = Some(now.at);
                            }
                            str0m::Event::MediaData(data) if pass == 0 => {
                                self.stats.webrtc_media_in += 1;
                                self.frames.push((id, data));
                            }
                            str0m::Event::KeyframeRequest(req) if pass == 1 => {
                                self.keyframe_requests.push((id, req.mid, req.kind));
                            }
                            _ => {}
                        },
                        Err(e) => {
                            tracing::info!(device = id.0, error = %e, "peer connection failed");
                            dead.push(id);
                            break;
                        }
                    }
                }
                if !rtc.is_alive() {
                    dead.push(id);
                }
            }
            // Confirmations go out before the datagrams that answered those addresses.
            for (ufrag, addr) in confirms {
                self.push(Action::Confirm { ufrag, addr });
            }
            if pass == 0 {
                self.forward(now);
            }
        }
        let requests = std::mem::take(&mut self.keyframe_requests);
        for (device, mid, kind) in &requests {
            self.request_keyframe(*device, *mid, *kind);
        }
        self.keyframe_requests = requests;
        self.keyframe_requests.clear();
        dead.sort();
        dead.dedup();
        for id in dead {
            self.remove_device(now, id, Some(DeviceClose::MediaLost));
        }
        self.next_rtc = self.devices.values().flat_map(|d| d.next).flatten().min();
    }

    /// A subscriber wants a keyframe on its `mid`: ask the publisher of that track.
    pub(super) fn request_keyframe(
        &mut self,
        device: DeviceId,
        mid: str0m::media::Mid,
        kind: str0m::media::KeyframeRequestKind,
    ) {
        let Some(Source::Track(publisher, from_mid)) = self
            .devices
            .get(&device)
            .and_then(|d| d.forwards.iter().find(|f| f.to_mid == mid))
            .map(|f| f.source)
        else {
            return;
        };
        let Some(p) = self.devices.get_mut(&publisher) else {
            return;
        };
        if let Some(mut writer) = p.publish.as_mut().and_then(|rtc| rtc.writer(from_mid)) {
            let _ = writer.request_keyframe(None, kind);
            p.dirty[0] = true;
        }
    }

    /// Write the publishers' media into the subscribers' connections.
    fn forward(&mut self, _now: Now) {
        let frames = std::mem::take(&mut self.frames);
        for (from, data) in &frames {
            if data.params.spec().codec == str0m::format::Codec::Tele {
                self.browser_dtmf(*from, data);
                continue;
            }
            self.browser_audio_in(*from, data);
            let Some(targets) = self.fanout.get(&Source::Track(*from, data.mid)) else {
                continue;
            };
            let written = write_to(
                &mut self.devices,
                targets,
                |w| w.match_params(data.params),
                data.network_time,
                data.time,
                &data.data,
            );
            self.stats.webrtc_media_out += written;
        }
        self.frames = frames;
        self.frames.clear();
    }
}
