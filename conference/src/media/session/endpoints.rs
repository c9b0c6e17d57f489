//! v2 devices' endpoints: a connection per published stream (the client asks with
//! `requestToPublish`, then offers; `accept_publish` answers) and per received stream:
//! we announce it (`sdpNeeded`), the client offers to receive, we answer with that
//! stream's tracks (`accept_receive`). A stream no longer allowed, or one that gained
//! or lost a track, loses its endpoint (`endpointRemoved`) and, if still allowed, is
//! announced again.

use std::sync::Arc;

use super::core::{Action, Now, SessionCore};
use super::devices::{Asked, Forward, Pc};
use super::ids::{ConnId, DeviceId, DeviceKey, PcId, Source};
use super::negotiation::{kind_of, new_rtc, type_of};
use super::{EndpointRequest, MediaType, PublishAnswer, PublishError};
use crate::events::DeviceNote;
use crate::media::sdp::{offered_receivers, sdp_ufrag, with_msid_stream};

/// Forwards grouped by stream, in first-seen order.
fn by_stream(forwards: Vec<Forward>) -> Vec<(String, Vec<Forward>)> {
    let mut out: Vec<(String, Vec<Forward>)> = Vec::new();
    for f in forwards {
        match out.iter_mut().find(|(s, _)| *s == f.stream) {
            Some((_, fs)) => fs.push(f),
            None => out.push((f.stream.clone(), vec![f])),
        }
    }
    out
}

impl SessionCore {
    /// Match a v2 device's receiving endpoints to what it may receive: one endpoint per
    /// stream, carrying all of that stream's tracks.
    pub(super) fn route_endpoints(&mut self, now: Now, id: DeviceId) {
        let desired = by_stream(self.receivable(id));
        let Some(d) = self.devices.get(&id) else {
            return;
        };
        // Endpoints whose stream is no longer allowed or no longer has the same tracks.
        let mut stale: Vec<PcId> = Vec::new();
        for f in &d.forwards {
            if stale.contains(&f.pc) {
                continue;
            }
            let mine: Vec<Source> = d
                .forwards
                .iter()
                .filter(|g| g.pc == f.pc)
                .map(|g| g.source)
                .collect();
            let same = desired.iter().any(|(stream, fs)| {
                *stream == f.stream
                    && fs.len() == mine.len()
                    && fs.iter().all(|g| mine.contains(&g.source))
            });
            if !same {
                stale.push(f.pc);
            }
        }
        for pc in stale {
            self.drop_pc(id, pc);
        }
        let Some(d) = self.devices.get_mut(&id) else {
            return;
        };
        let conn = d.conn;
        let mut notes = Vec::new();
        for (stream, forwards) in desired {
            let Some(first) = forwards.first() else {
                continue;
            };
            if d.forwards.iter().any(|f| f.stream == stream) {
                continue;
            }
            let mut media_types: Vec<MediaType> = Vec::new();
            for t in [MediaType::Audio, MediaType::Video] {
                if forwards.iter().any(|f| type_of(f.kind) == t) {
                    media_types.push(t);
                }
            }
            let request = EndpointRequest {
                endpoint: Arc::from(uuid::Uuid::new_v4().to_string()),
                media_types,
                participant_id: first.participant_id,
                alias: first.alias.clone(),
            };
            let pc = d.new_pc_id();
            d.forwards
                .extend(forwards.into_iter().map(|f| Forward { pc, ..f }));
            d.asked.push(Asked {
                pc,
                at: now.at,
                request: request.clone(),
            });
            tracing::info!(session_id = %self.session_id, device = %d.key.unique_id, endpoint = %request.endpoint, %stream, "sdpNeeded sent");
            notes.push(DeviceNote::SdpNeeded(request));
        }
        for note in notes {
            self.push(Action::Note { conn, note });
        }
    }

    /// A v2 device's offer for a receiving endpoint we announced: its connection, with
    /// the stream's tracks sent on the m-lines of their kind.
    pub(super) fn accept_receive(
        &mut self,
        now: Now,
        key: &DeviceKey,
        conn: ConnId,
        endpoint: &str,
        sdp: &str,
    ) -> Result<PublishAnswer, PublishError> {
        let (local, id) = self.offering_device(key, conn)?;
        let d = self
            .devices
            .get_mut(&id)
            .ok_or(PublishError::NotConnected)?;
        let pos = d
            .asked
            .iter()
            .position(|a| &*a.request.endpoint == endpoint)
            .ok_or(PublishError::UnknownEndpoint)?;
        let parsed = str0m::change::SdpOffer::from_sdp_string(sdp).map_err(|e| {
            tracing::info!(error = %e, "unparseable receiving offer");
            PublishError::BadSdp
        })?;
        let mut rtc = new_rtc(local, false, now).ok_or(PublishError::NoWebRtc)?;
        let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| {
            tracing::info!(error = %e, "receiving offer not answerable");
            PublishError::Unanswerable
        })?;
        // One MediaStream, named by the endpoint, for all of the stream's tracks.
        let answer = with_msid_stream(&answer.to_sdp_string(), endpoint);
        let asked = d.asked.remove(pos);
        // Each forward on the first receiving m-line of its kind not yet taken.
        let mut receivers = offered_receivers(sdp);
        for f in d.forwards.iter_mut().filter(|f| f.pc == asked.pc) {
            if let Some(i) = receivers.iter().position(|(_, k)| kind_of(*k) == f.kind) {
                let (mid, _) = receivers.remove(i);
                f.to_mid = Some(str0m::media::Mid::from(mid.as_str()));
            }
        }
        let mut pc = Pc::new(asked.pc, false, Some(asked.request.endpoint.clone()), rtc);
        pc.dirty = true;
        let ufrag = sdp_ufrag(&answer).map(str::to_string);
        pc.ufrag = ufrag.clone();
        d.pcs.push(pc);
        if let Some(u) = ufrag {
            self.queue_ufrag(u);
        }
        tracing::info!(session_id = %self.session_id, device = %key.unique_id, %endpoint, "receiving endpoint connected");
        self.rebuild_fanout();
        self.keyframes_for(id, asked.pc);
        self.drive_pending = true;
        Ok(PublishAnswer {
            sdp: answer,
            streams: Vec::new(),
        })
    }

    /// A v2 device stops publishing `endpoint`.
    pub(super) fn unpublish(&mut self, now: Now, key: &DeviceKey, conn: ConnId, endpoint: &str) {
        let Some(id) = self.device_of(key, conn) else {
            return;
        };
        let pc = self
            .devices
            .get(&id)
            .and_then(|d| d.endpoint(endpoint))
            .filter(|p| p.publishing)
            .map(|p| p.id);
        if let Some(pc) = pc {
            tracing::info!(session_id = %self.session_id, device = %key.unique_id, %endpoint, "device unpublished");
            self.remove_pc(now, id, pc);
        }
    }

    /// A v2 connection is gone (unpublished, or failed): what it carried stops, and
    /// every device is routed again (a failed receiving endpoint is announced anew).
    pub(super) fn remove_pc(&mut self, now: Now, id: DeviceId, pc: PcId) {
        if self.drop_pc(id, pc) {
            self.sync_browser_audio();
        }
        self.route_devices(now);
    }

    /// Forget connection `pc` of device `id` (or the endpoint announced for it), with
    /// what it publishes or receives; a receiving endpoint is reported removed. True if
    /// it was publishing.
    pub(super) fn drop_pc(&mut self, id: DeviceId, pc: PcId) -> bool {
        let Some(d) = self.devices.get_mut(&id) else {
            return false;
        };
        let asked = d
            .asked
            .iter()
            .position(|a| a.pc == pc)
            .map(|i| d.asked.remove(i));
        let removed = d
            .pcs
            .iter()
            .position(|p| p.id == pc)
            .map(|i| d.pcs.remove(i));
        d.published.retain(|t| t.pc != pc);
        d.forwards.retain(|f| f.pc != pc);
        let publishing = removed.as_ref().is_some_and(|p| p.publishing);
        let endpoint = removed
            .as_ref()
            .and_then(|p| p.endpoint.clone())
            .or(asked.map(|a| a.request.endpoint));
        let (signaling, connected) = (d.conn, d.connected);
        if let Some(u) = removed.and_then(|p| p.ufrag) {
            self.push(Action::Ufrag {
                ufrag: u,
                registered: false,
            });
        }
        self.by_addr.retain(|_, v| *v != (id, pc));
        if let (false, true, Some(endpoint)) = (publishing, connected, endpoint) {
            self.push(Action::Note {
                conn: signaling,
                note: DeviceNote::EndpointRemoved(endpoint),
            });
        }
        self.rebuild_fanout();
        publishing
    }
}
