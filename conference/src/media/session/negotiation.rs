//! SDP negotiation with devices, as typed data: answers to publishing offers (with
//! the kinds a participant may not publish refused), and offers for subscribing
//! connections carrying what the device's subscriptions allow.

use super::core::{Action, Now, SessionCore};
use super::devices::{Forward, Track};
use super::ids::{ConnId, DeviceId, DeviceKey, Source};
use super::{
    MediaType, Offer, PublishAnswer, PublishError, PublishRequest, StreamInfo,
    MAX_TRACKS_PER_DEVICE,
};
use crate::events::{DeviceClose, DeviceNote};
use crate::media::sdp::{offered_streams, offered_tracks, reject_kinds, sdp_ufrag};

/// A peer connection of ours; `dtmf` accepts RFC 4733 telephone-events (publishing
/// connections: the SDK's `sendDtmf` uses the audio sender's `RTCDTMFSender`).
fn new_rtc(local: std::net::SocketAddr, dtmf: bool, now: Now) -> Option<str0m::Rtc> {
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
    let mut rtc = config.build(now.at);
    match str0m::Candidate::host(local, "udp") {
        Ok(c) => {
            rtc.add_local_candidate(c);
            Some(rtc)
        }
        Err(e) => {
            tracing::warn!(error = %e, "local ICE candidate");
            None
        }
    }
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

fn kind_of(t: MediaType) -> str0m::media::MediaKind {
    match t {
        MediaType::Audio => str0m::media::MediaKind::Audio,
        MediaType::Video => str0m::media::MediaKind::Video,
    }
}

fn type_of(k: str0m::media::MediaKind) -> MediaType {
    match k {
        str0m::media::MediaKind::Video => MediaType::Video,
        _ => MediaType::Audio,
    }
}

impl SessionCore {
    /// Answer a device's publish offer with its (possibly new) publishing connection.
    pub(super) fn accept_publish(
        &mut self,
        now: Now,
        key: &DeviceKey,
        conn: ConnId,
        offer: &PublishRequest,
    ) -> Result<PublishAnswer, PublishError> {
        let local = self.webrtc.ok_or(PublishError::NoWebRtc)?;
        let id = self
            .device_of(key, conn)
            .ok_or(PublishError::NotConnected)?;
        // Publish permissions: refuse the kinds this participant may not publish.
        let allowed = reject_kinds(&offer.sdp, offer.may_publish_audio, offer.may_publish_video);
        let tracks = offered_tracks(&allowed);
        if tracks.len() > MAX_TRACKS_PER_DEVICE {
            return Err(PublishError::TooManyTracks);
        }
        // A stream id is the subscribers' metadata key: it may not name another source.
        let taken = tracks.iter().any(|t| {
            self.legs.values().any(|l| l.stream == t.stream)
                || self.devices.iter().any(|(other, d)| {
                    *other != id && d.published.iter().any(|p| p.stream == t.stream)
                })
        });
        if taken {
            return Err(PublishError::StreamIdTaken);
        }
        let parsed = str0m::change::SdpOffer::from_sdp_string(&allowed).map_err(|e| {
            tracing::info!(error = %e, "unparseable publish offer");
            PublishError::BadSdp
        })?;
        let Some(device) = self.devices.get_mut(&id) else {
            return Err(PublishError::NotConnected);
        };
        let fresh = device.publish.is_none();
        if fresh {
            device.publish = Some(new_rtc(local, true, now).ok_or(PublishError::NoWebRtc)?);
        }
        let Some(rtc) = device.publish.as_mut() else {
            return Err(PublishError::NotConnected);
        };
        let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| {
            tracing::info!(error = %e, "publish offer not answerable");
            PublishError::Unanswerable
        })?;
        let sdp = answer.to_sdp_string();
        if fresh {
            for config in sdk_channels() {
                rtc.direct_api().create_data_channel(config);
            }
            if let Some(ufrag) = sdp_ufrag(&sdp) {
                device.ufrag[0] = Some(ufrag.to_string());
                self.queue_ufrag(ufrag.to_string());
            }
            tracing::info!(session_id = %self.session_id, device = %key.unique_id, participant_id = %key.participant_id, "device publishing connection created");
        }
        let alias_of = |stream: &str| {
            offer
                .aliases
                .iter()
                .find(|(s, _)| s == stream)
                .map(|(_, a)| a.clone())
        };
        let Some(device) = self.devices.get_mut(&id) else {
            return Err(PublishError::NotConnected);
        };
        device.published = tracks
            .into_iter()
            .map(|t| Track {
                mid: str0m::media::Mid::from(t.mid.as_str()),
                kind: kind_of(t.kind),
                alias: alias_of(&t.stream),
                stream: t.stream,
                track: t.track,
            })
            .collect();
        let streams = offered_streams(&allowed)
            .into_iter()
            .map(|(stream, media_types)| StreamInfo {
                alias: alias_of(&stream),
                stream,
                participant_id: key.participant_id,
                media_types,
            })
            .collect();
        Ok(PublishAnswer { sdp, streams })
    }

    fn queue_ufrag(&mut self, ufrag: String) {
        self.push(Action::Ufrag {
            ufrag,
            registered: true,
        });
    }

    /// What `id` should receive and does not yet, and the mids it receives that it
    /// should no longer.
    fn wanted(&self, id: DeviceId) -> (Vec<Forward>, Vec<str0m::media::Mid>) {
        let mut wanted = Vec::new();
        let mut unwanted = Vec::new();
        let Some(d) = self.devices.get(&id) else {
            return (wanted, unwanted);
        };
        let me = d.key.participant_id;
        let subs = self.subscriptions_of(me);
        let has = |s: Source| d.forwards.iter().any(|f| f.source == s);
        for (&leg_id, leg) in &self.legs {
            if !has(Source::Leg(leg_id))
                && self.receives(me, &subs, leg.owner.participant_id, Some(&self.alias))
            {
                wanted.push(Forward {
                    source: Source::Leg(leg_id),
                    to_mid: str0m::media::Mid::from("phone"),
                    stream: leg.stream.clone(),
                    track: format!("{}-audio", leg.stream),
                    kind: str0m::media::MediaKind::Audio,
                    participant_id: leg.owner.participant_id,
                    alias: Some(self.alias.to_string()),
                });
            }
        }
        for (&pid, p) in self.devices.iter().filter(|(k, _)| **k != id) {
            for t in &p.published {
                let source = Source::Track(pid, t.mid);
                if !has(source)
                    && self.receives(me, &subs, p.key.participant_id, t.alias.as_deref())
                {
                    wanted.push(Forward {
                        source,
                        to_mid: t.mid,
                        stream: t.stream.clone(),
                        track: t.track.clone(),
                        kind: t.kind,
                        participant_id: p.key.participant_id,
                        alias: t.alias.clone(),
                    });
                }
            }
        }
        // Forwarded sources that are gone or no longer allowed.
        for f in &d.forwards {
            let still = match f.source {
                Source::Leg(l) => self.legs.get(&l).is_some_and(|leg| {
                    self.receives(me, &subs, leg.owner.participant_id, Some(&self.alias))
                }),
                Source::Track(pid, mid) => self.devices.get(&pid).is_some_and(|p| {
                    p.published.iter().any(|t| {
                        t.mid == mid
                            && self.receives(me, &subs, p.key.participant_id, t.alias.as_deref())
                    })
                }),
            };
            if !still {
                unwanted.push(f.to_mid);
            }
        }
        (wanted, unwanted)
    }

    /// Offer every device what its subscriptions allow that it does not receive yet, and
    /// take away what they no longer allow (one offer in flight per device; the next
    /// waits for its answer). Devices of participants no longer in the session are closed.
    pub(super) fn route_devices(&mut self, now: Now) {
        let stale: Vec<DeviceId> = self
            .devices
            .iter()
            .filter(|(_, d)| !self.is_member(d.key.participant_id))
            .map(|(k, _)| *k)
            .collect();
        if !stale.is_empty() {
            // Each removal routes the rest again.
            for id in stale {
                self.remove_device(now, id, Some(DeviceClose::Removed));
            }
            return;
        }
        if let Some(local) = self.webrtc {
            let mut ids: Vec<DeviceId> = self.devices.keys().copied().collect();
            ids.sort();
            for id in ids {
                let ready = self
                    .devices
                    .get(&id)
                    .is_some_and(|d| d.pending.is_none() && d.connected);
                if ready {
                    self.offer(now, local, id);
                }
            }
        }
        self.rebuild_fanout();
        self.drive(now, true);
    }

    /// Offer one device what it lacks (if anything).
    fn offer(&mut self, now: Now, local: std::net::SocketAddr, id: DeviceId) {
        let (wanted, unwanted) = self.wanted(id);
        if wanted.is_empty() && unwanted.is_empty() {
            return;
        }
        let Some(d) = self.devices.get_mut(&id) else {
            return;
        };
        let fresh = d.subscribe.is_none();
        if fresh {
            match new_rtc(local, false, now) {
                Some(rtc) => d.subscribe = Some(rtc),
                None => return,
            }
        }
        let Some(rtc) = d.subscribe.as_mut() else {
            return;
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
        let mut added = Vec::with_capacity(wanted.len());
        for mut f in wanted {
            // A fresh track id every time: a stream re-added after removal must look new
            // to the browser (same stream id, the metadata key).
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
            return;
        };
        d.forwards.retain(|f| !unwanted.contains(&f.to_mid));
        d.forwards.extend(added);
        d.pending = Some(pending);
        d.revision += 1;
        let sdp = offer.to_sdp_string();
        let mut streams: Vec<StreamInfo> = Vec::new();
        for f in &d.forwards {
            let kind = type_of(f.kind);
            match streams.iter_mut().find(|s| s.stream == f.stream) {
                Some(s) if !s.media_types.contains(&kind) => s.media_types.push(kind),
                Some(_) => {}
                None => streams.push(StreamInfo {
                    stream: f.stream.clone(),
                    participant_id: f.participant_id,
                    alias: f.alias.clone(),
                    media_types: vec![kind],
                }),
            }
        }
        let offer = Offer {
            revision: d.revision,
            sdp,
            streams,
        };
        d.offer_sent = Some((now.at, offer.clone()));
        let conn = d.conn;
        let revision = d.revision;
        let ufrag = fresh
            .then(|| sdp_ufrag(&offer.sdp).map(str::to_string))
            .flatten();
        if let Some(u) = &ufrag {
            d.ufrag[1] = Some(u.clone());
        }
        let unique_id = d.key.unique_id.clone();
        if let Some(u) = ufrag {
            self.queue_ufrag(u);
        }
        self.push(Action::Note {
            conn,
            note: DeviceNote::Offer(offer),
        });
        tracing::info!(session_id = %self.session_id, device = %unique_id, revision, "sdpOffer sent");
    }

    /// A device's answer to our last offer.
    pub(super) fn answer(&mut self, now: Now, key: &DeviceKey, conn: ConnId, sdp: &str) {
        let Some(id) = self.device_of(key, conn) else {
            return;
        };
        let Some(d) = self.devices.get_mut(&id) else {
            return;
        };
        let (Some(rtc), Some(pending)) = (d.subscribe.as_mut(), d.pending.take()) else {
            return;
        };
        d.offer_sent = None;
        match str0m::change::SdpAnswer::from_sdp_string(sdp) {
            Ok(answer) => {
                if let Err(e) = rtc.sdp_api().accept_answer(pending, answer) {
                    tracing::info!(device = %key.unique_id, error = %e, "answer refused");
                }
            }
            Err(e) => tracing::info!(device = %key.unique_id, error = %e, "unparseable answer"),
        }
        d.dirty[1] = true;
        // A new video subscriber needs a keyframe to start decoding.
        let video: Vec<str0m::media::Mid> = d
            .forwards
            .iter()
            .filter(|f| f.kind == str0m::media::MediaKind::Video)
            .map(|f| f.to_mid)
            .collect();
        for mid in video {
            self.request_keyframe(id, mid, str0m::media::KeyframeRequestKind::Pli);
        }
        // Streams that appeared while the offer was out go in the next one.
        self.route_devices(now);
    }
}
