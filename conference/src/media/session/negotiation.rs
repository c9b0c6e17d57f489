//! SDP negotiation with devices, as typed data: answers to publishing offers (with
//! the kinds a participant may not publish refused; v3's one publishing connection or
//! a v2 endpoint's own), what a device may receive, and v3's offers for the
//! subscribing connection carrying it. v2's receiving endpoints are in `endpoints`.

use super::core::{Action, Now, SessionCore};
use super::devices::{Forward, Pc, Track};
use super::ids::{ConnId, DeviceId, DeviceKey, PcId, Source};
use super::layout::{LineKind, MidMap, SubscribeLayout};
use super::{
    MediaType, Offer, Protocol, PublishAnswer, PublishError, PublishRequest, StreamInfo,
    MAX_PUBLISH_ENDPOINTS, MAX_TRACKS_PER_DEVICE,
};
use crate::events::{DeviceLayout, DeviceNote};
use crate::media::sdp::{offered_streams, offered_tracks, reject_kinds, sdp_ufrag};

/// A peer connection of ours. A publishing one (the browser sends) accepts RFC 4733
/// telephone-events (the SDK's `sendDtmf` uses the audio sender's `RTCDTMFSender`) and
/// gives transport feedback for the browser's bandwidth estimation; a subscribing one
/// (we send) negotiates no transport feedback (`subscribing_extensions`).
pub(super) fn new_rtc(
    local: std::net::SocketAddr,
    publishing: bool,
    now: Now,
) -> Option<str0m::Rtc> {
    // RTCP figures once a second, for the console's quality rows and `/metrics`.
    let mut config = str0m::Rtc::builder()
        .set_ice_lite(true)
        .set_stats_interval(Some(std::time::Duration::from_secs(1)));
    if !publishing {
        config = config.set_extension_map(subscribing_extensions());
    }
    if publishing {
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

/// The RTP header extensions of a connection we only send on: the standard set (same
/// ids) without transport-cc and abs-send-time. We run no bandwidth estimation (media is
/// forwarded as published), so the browser's transport feedback on what we send (every
/// 100 ms per connection) and its REMB would be work for nothing on both ends: an input
/// and a drive each here, and per packet a sequence number and its record.
fn subscribing_extensions() -> str0m::rtp::ExtensionMap {
    use str0m::rtp::Extension;
    let standard = str0m::rtp::ExtensionMap::standard();
    let mut exts = str0m::rtp::ExtensionMap::empty();
    for (id, ext) in standard.iter() {
        if !matches!(
            ext,
            Extension::TransportSequenceNumber | Extension::AbsoluteSendTime
        ) {
            exts.set(id, ext.clone());
        }
    }
    exts
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

pub(super) fn kind_of(t: MediaType) -> str0m::media::MediaKind {
    match t {
        MediaType::Audio => str0m::media::MediaKind::Audio,
        MediaType::Video => str0m::media::MediaKind::Video,
    }
}

pub(super) fn type_of(k: str0m::media::MediaKind) -> MediaType {
    match k {
        str0m::media::MediaKind::Video => MediaType::Video,
        _ => MediaType::Audio,
    }
}

impl SessionCore {
    /// Answer a device's publish offer with its (possibly new) publishing connection:
    /// v3's one, or the v2 endpoint's own.
    pub(super) fn accept_publish(
        &mut self,
        now: Now,
        key: &DeviceKey,
        conn: ConnId,
        offer: &PublishRequest,
    ) -> Result<PublishAnswer, PublishError> {
        let (local, id) = self.offering_device(key, conn)?;
        let d = self
            .devices
            .get_mut(&id)
            .ok_or(PublishError::NotConnected)?;
        let pc_id = match (d.protocol, offer.endpoint.as_deref()) {
            (Protocol::V3, None) => PcId::V3_PUBLISH,
            (Protocol::V2, Some(endpoint)) => match d.endpoint(endpoint) {
                Some(p) if p.publishing => p.id,
                Some(_) => return Err(PublishError::UnknownEndpoint),
                None if d.pcs.iter().filter(|p| p.publishing).count() >= MAX_PUBLISH_ENDPOINTS => {
                    return Err(PublishError::TooManyEndpoints)
                }
                None => d.new_pc_id(),
            },
            _ => return Err(PublishError::UnknownEndpoint),
        };
        // Publish permissions: refuse the kinds this participant may not publish.
        let allowed = reject_kinds(&offer.sdp, offer.may_publish_audio, offer.may_publish_video);
        let tracks = offered_tracks(&allowed);
        let elsewhere = d.published.iter().filter(|t| t.pc != pc_id).count();
        if elsewhere + tracks.len() > MAX_TRACKS_PER_DEVICE {
            return Err(PublishError::TooManyTracks);
        }
        // A stream id is the subscribers' metadata key: it may not name another source.
        let taken = tracks.iter().any(|t| {
            self.legs.values().any(|l| l.stream == t.stream)
                || self.devices.iter().any(|(other, d)| {
                    d.published
                        .iter()
                        .any(|p| p.stream == t.stream && (*other, p.pc) != (id, pc_id))
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
        let protocol = device.protocol;
        let mut fresh = match device.pc(pc_id) {
            Some(_) => None,
            None => Some(new_rtc(local, true, now).ok_or(PublishError::NoWebRtc)?),
        };
        let rtc = match fresh.as_mut() {
            Some(rtc) => rtc,
            None => match device.pc_mut(pc_id) {
                Some(p) => &mut p.rtc,
                None => return Err(PublishError::NotConnected),
            },
        };
        let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| {
            tracing::info!(error = %e, "publish offer not answerable");
            PublishError::Unanswerable
        })?;
        let sdp = answer.to_sdp_string();
        if let Some(mut rtc) = fresh {
            if protocol == Protocol::V3 {
                for config in sdk_channels() {
                    rtc.direct_api().create_data_channel(config);
                }
            }
            let mut pc = Pc::new(pc_id, true, offer.endpoint.clone(), rtc);
            if let Some(ufrag) = sdp_ufrag(&sdp) {
                pc.ufrag = Some(ufrag.to_string());
                self.queue_ufrag(ufrag.to_string());
            }
            if let Some(device) = self.devices.get_mut(&id) {
                device.pcs.push(pc);
            }
            tracing::info!(session_id = %self.session_id, device = %key.unique_id, participant_id = %key.participant_id, connection = pc_id.0, endpoint = offer.endpoint.as_deref(), "device publishing connection created");
        }
        let alias_of = |stream: &str| {
            offer
                .aliases
                .iter()
                .find(|(s, _)| s == stream)
                .map(|(_, a)| a.clone())
                .or_else(|| offer.default_alias.clone())
        };
        let Some(device) = self.devices.get_mut(&id) else {
            return Err(PublishError::NotConnected);
        };
        device.published.retain(|t| t.pc != pc_id);
        device.published.extend(tracks.into_iter().map(|t| Track {
            pc: pc_id,
            mid: str0m::media::Mid::from(t.mid.as_str()),
            kind: kind_of(t.kind),
            alias: alias_of(&t.stream),
            stream: t.stream,
            track: t.track,
            meter: Default::default(),
            codec: None,
        }));
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

    /// Our WebRTC address and the device `conn` speaks for, for an offer it made.
    pub(super) fn offering_device(
        &self,
        key: &DeviceKey,
        conn: ConnId,
    ) -> Result<(std::net::SocketAddr, DeviceId), PublishError> {
        let local = self.webrtc.ok_or(PublishError::NoWebRtc)?;
        let id = self
            .device_of(key, conn)
            .ok_or(PublishError::NotConnected)?;
        Ok((local, id))
    }

    pub(super) fn queue_ufrag(&mut self, ufrag: String) {
        self.push(Action::Ufrag {
            ufrag,
            registered: true,
        });
    }

    /// Every source `id` may receive now (its subscriptions, the session's members):
    /// SIP legs and other devices' tracks, as forwards not yet placed on a connection.
    pub(super) fn receivable(&self, id: DeviceId) -> Vec<Forward> {
        let mut out = Vec::new();
        let Some(d) = self.devices.get(&id) else {
            return out;
        };
        let me = d.key.participant_id;
        let subs = self.subscriptions_of(me);
        for (&leg_id, leg) in &self.legs {
            if self.receives(me, &subs, leg.owner.participant_id, Some(&self.alias)) {
                out.push(Forward {
                    source: Source::Leg(leg_id),
                    pc: PcId::V3_SUBSCRIBE,
                    to_mid: None,
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
                if self.receives(me, &subs, p.key.participant_id, t.alias.as_deref()) {
                    out.push(Forward {
                        source: Source::Track(pid, t.pc, t.mid),
                        pc: PcId::V3_SUBSCRIBE,
                        to_mid: None,
                        stream: t.stream.clone(),
                        track: t.track.clone(),
                        kind: t.kind,
                        participant_id: p.key.participant_id,
                        alias: t.alias.clone(),
                    });
                }
            }
        }
        out
    }

    /// Give every device what its subscriptions allow that it does not receive yet, and
    /// take away what they no longer allow (v3: one offer in flight per device, the next
    /// waits for its answer; v2: endpoints announced and removed).
    pub(super) fn route_devices(&mut self, now: Now) {
        if let Some(local) = self.webrtc {
            let mut ids: Vec<DeviceId> = self.devices.keys().copied().collect();
            ids.sort();
            for id in ids {
                let Some(d) = self.devices.get(&id).filter(|d| d.connected) else {
                    continue;
                };
                match d.protocol {
                    Protocol::V3 if d.pending.is_none() => self.offer(now, local, id),
                    Protocol::V3 => {}
                    Protocol::V2 => self.route_endpoints(now, id),
                }
            }
        }
        self.rebuild_fanout();
        self.drive(now, true);
    }

    /// v3: offer one device what it lacks (if anything).
    fn offer(&mut self, now: Now, local: std::net::SocketAddr, id: DeviceId) {
        let all = self.receivable(id);
        let Some(d) = self.devices.get_mut(&id) else {
            return;
        };
        // What it no longer receives, and what it received in the core it came from.
        let unwanted: Vec<str0m::media::Mid> = d
            .forwards
            .iter()
            .filter(|f| !all.iter().any(|a| a.source == f.source))
            .filter_map(|f| f.to_mid)
            .chain(d.stale.iter().copied())
            .collect();
        let wanted: Vec<Forward> = all
            .into_iter()
            .filter(|f| !d.forwards.iter().any(|h| h.source == f.source))
            .collect();
        if wanted.is_empty() && unwanted.is_empty() {
            return;
        }
        let fresh = d.pc(PcId::V3_SUBSCRIBE).is_none();
        if fresh {
            match new_rtc(local, false, now) {
                Some(rtc) => d.pcs.push(Pc::new(PcId::V3_SUBSCRIBE, false, None, rtc)),
                None => return,
            }
        }
        let revision = d.revision;
        // The m-lines the browser holds from a previous owner come first, in order,
        // inactive here (their mids renamed to the browser's: `layout`).
        let prior = if fresh { d.prior.take() } else { None };
        let Some(pc) = d.pc_mut(PcId::V3_SUBSCRIBE) else {
            return;
        };
        let mut change = pc.rtc.sdp_api();
        if fresh {
            for config in sdk_channels() {
                change.add_channel_with_config(config);
            }
        }
        for (kind, _) in prior.iter().flat_map(|p| &p.lines) {
            let kind = match kind {
                LineKind::Application => continue,
                LineKind::Audio => str0m::media::MediaKind::Audio,
                LineKind::Video => str0m::media::MediaKind::Video,
            };
            change.add_media(kind, str0m::media::Direction::Inactive, None, None, None);
        }
        // Removed streams go inactive: the SDK reports them unavailable.
        for mid in &unwanted {
            change.set_direction(*mid, str0m::media::Direction::Inactive);
        }
        let mut added = Vec::with_capacity(wanted.len());
        for mut f in wanted {
            // A fresh track id every time: a stream re-added after removal must look new
            // to the browser (same stream id, the metadata key).
            let track = format!("{}-{}", f.track, revision + 1);
            f.to_mid = Some(change.add_media(
                f.kind,
                str0m::media::Direction::SendOnly,
                Some(f.stream.clone()),
                Some(track),
                None,
            ));
            added.push(f);
        }
        let Some((offer, pending)) = change.apply() else {
            return;
        };
        let sdp = offer.to_sdp_string();
        let ufrag = fresh.then(|| sdp_ufrag(&sdp).map(str::to_string)).flatten();
        if let Some(u) = &ufrag {
            pc.ufrag = Some(u.clone());
        }
        if let Some(prior) = &prior {
            match MidMap::pair(&SubscribeLayout::of_sdp(0, &sdp), prior) {
                Some(map) => d.mids = map,
                None => {
                    tracing::warn!(session_id = %self.session_id, device = %d.key.unique_id, "the browser's subscribing connection does not fit a new offer; it will refuse it")
                }
            }
        }
        if added
            .iter()
            .filter_map(|f| f.to_mid)
            .any(|m| d.mids.clashes(&m.to_string()))
        {
            tracing::warn!(session_id = %self.session_id, device = %d.key.unique_id, "a new m-line's mid equals an old one of the browser's; it will refuse the offer");
        }
        let sdp = if d.mids.is_empty() {
            sdp
        } else {
            d.mids.outgoing(&sdp)
        };
        d.forwards
            .retain(|f| !f.to_mid.is_some_and(|m| unwanted.contains(&m)));
        d.forwards.extend(added);
        d.stale.clear();
        d.pending = Some(pending);
        d.revision += 1;
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
        let layout = DeviceLayout {
            session_id: self.session_id,
            participant_id: d.key.participant_id,
            device_id: d.key.unique_id.to_string(),
            layout: Some(SubscribeLayout::of_sdp(d.revision, &offer.sdp)),
        };
        d.offer_sent = Some((now.at, offer.clone()));
        let conn = d.conn;
        let revision = d.revision;
        let unique_id = d.key.unique_id.clone();
        if let Some(u) = ufrag {
            self.queue_ufrag(u);
        }
        self.push(Action::Layout(layout));
        self.push(Action::Note {
            conn,
            note: DeviceNote::Offer(offer),
        });
        tracing::info!(session_id = %self.session_id, device = %unique_id, revision, "sdpOffer sent");
    }

    /// v3: a device's answer to our last offer.
    pub(super) fn answer(&mut self, now: Now, key: &DeviceKey, conn: ConnId, sdp: &str) {
        let Some(id) = self.device_of(key, conn) else {
            return;
        };
        let Some(d) = self.devices.get_mut(&id) else {
            return;
        };
        let Some(pending) = d.pending.take() else {
            return;
        };
        d.offer_sent = None;
        let renamed;
        let sdp = if d.mids.is_empty() {
            sdp
        } else {
            renamed = d.mids.incoming(sdp);
            &renamed
        };
        let Some(pc) = d.pc_mut(PcId::V3_SUBSCRIBE) else {
            return;
        };
        match str0m::change::SdpAnswer::from_sdp_string(sdp) {
            Ok(answer) => {
                if let Err(e) = pc.rtc.sdp_api().accept_answer(pending, answer) {
                    tracing::info!(device = %key.unique_id, error = %e, "answer refused");
                }
            }
            Err(e) => tracing::info!(device = %key.unique_id, error = %e, "unparseable answer"),
        }
        pc.dirty = true;
        self.keyframes_for(id, PcId::V3_SUBSCRIBE);
        // Streams that appeared while the offer was out go in the next one.
        self.route_devices(now);
    }

    /// A new video subscriber needs a keyframe to start decoding: ask the publishers of
    /// the video forwarded on `pc`.
    pub(super) fn keyframes_for(&mut self, id: DeviceId, pc: PcId) {
        let video: Vec<str0m::media::Mid> = self
            .devices
            .get(&id)
            .into_iter()
            .flat_map(|d| d.forwards.iter())
            .filter(|f| f.pc == pc && f.kind == str0m::media::MediaKind::Video)
            .filter_map(|f| f.to_mid)
            .collect();
        for mid in video {
            self.request_keyframe(id, pc, mid, str0m::media::KeyframeRequestKind::Pli);
        }
    }
}
