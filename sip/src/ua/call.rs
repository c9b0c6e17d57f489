//! A call's media side: what one SIP call negotiated and how it is put into effect
//! (its RTP endpoint, SRTP keys, its place in the session).

use super::*;

/// One SIP call with its dialog: an inbound call we answered or a dialog we placed.
pub(super) struct Call {
    pub(super) leg: LegId,
    /// Whose call it is (its `onConnect`/`onLeave` go to the owner's `callbackUrl`).
    pub(super) owner: DeviceOwner,
    pub(super) peer: Peer,
    /// The SIP dialog: identity, route set, CSeq, offer/answer and 2xx state.
    pub(super) dialog: dialog::Dialog,
    pub(super) negotiated: Option<Negotiated>,
    pub(super) sdp_session_id: u64,
    pub(super) sdp_version: u64,
    /// Where the call joins once its media is negotiated (its participant's session
    /// then, or the lobby): it may move on from there with its participant.
    pub(super) session: SessionHandle,
    /// Its negotiated media as the session sees it, once joined (dropped: it leaves).
    pub(super) media: Option<tokio::sync::watch::Sender<LegMedia>>,
    pub(super) rtp: RtpLeg,
    /// SRTP: our key in use, and the keys our last offer carried (an answer picks one).
    pub(super) srtp_local: Option<Crypto>,
    pub(super) srtp_offered: Vec<Crypto>,
    /// The REST dialog (`POST …/dialogs`) this call was placed for.
    pub(super) placed_for: Option<uuid::Uuid>,
    /// Our ACK of its 2xx (calls we placed), sent again for each retransmitted 2xx.
    pub(super) ack: Option<Bytes>,
    /// Held from our side (REST): nothing of it is heard and it gets the music on
    /// hold or nothing, whatever its SDP says, until resumed.
    pub(super) hold: Hold,
}

/// Whether a call is held from our side, and what it hears then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    Off,
    /// Held, sent nothing (no `sip_music_on_hold`).
    Silent,
    /// Held, sent the music on hold.
    Music,
}

/// Our key for the SRTP an answer chose among those we `offered`; `Err` when it chose
/// something we did not offer.
pub(super) fn answered_key(offered: &[Crypto], n: &Negotiated) -> Result<Option<Crypto>, ()> {
    match n.srtp {
        None => Ok(None),
        Some(r) => offered
            .iter()
            .find(|c| c.tag == r.tag && c.suite == r.suite)
            .copied()
            .map(Some)
            .ok_or(()),
    }
}

/// Our key answering an offer's SRTP: the one in use when tag and suite stay (a
/// re-INVITE keeps the contexts running), else a fresh one.
pub(super) fn answering_key(current: Option<Crypto>, n: &Negotiated) -> Option<Crypto> {
    let r = n.srtp?;
    match current {
        Some(c) if c.tag == r.tag && c.suite == r.suite => Some(c),
        _ => Some(Crypto::ours(r.tag, r.suite)),
    }
}

impl Call {
    /// A new offer of this call's media (a re-INVITE's, or our answer to an offerless
    /// one), `direction` as given: the next SDP version, the SRTP key in use kept on
    /// offer (or the full set, as in a first offer).
    pub(super) fn new_offer(
        &mut self,
        media_ip: IpAddr,
        mode: SrtpMode,
        direction: sdp::Direction,
    ) -> String {
        self.sdp_version += 1;
        self.srtp_offered = match (self.srtp_local, mode) {
            (Some(c), _) => vec![c],
            (None, SrtpMode::Off) => Vec::new(),
            (None, _) => Crypto::offer_set(),
        };
        let offer_mode = match (self.srtp_local, mode) {
            (Some(_), SrtpMode::Off) => SrtpMode::Offer,
            (_, m) => m,
        };
        sdp::offer_with(
            (media_ip, self.rtp.port),
            &self.srtp_offered,
            offer_mode,
            self.sdp_session_id,
            self.sdp_version,
            direction,
        )
    }

    /// Put negotiated media into effect: the leg's RTP endpoint, then its session
    /// (joined the first time, updated after).
    pub(super) fn apply(&mut self, n: Negotiated) {
        let keys = n
            .srtp
            .zip(self.srtp_local)
            .map(|(theirs, ours)| (ours, theirs));
        if let Err(e) = self.rtp.sink.set_srtp(keys) {
            tracing::warn!(call_id = %self.dialog.call_id, error = %e, "SRTP keys not usable");
        }
        let media = leg_media(&n, self.hold != Hold::Off);
        self.rtp.sink.configure(
            n.remote,
            Some(self.peer.addr.ip()),
            n.direction.we_send() && self.hold != Hold::Silent,
            &media,
        );
        self.rtp
            .set_expecting(n.direction.we_receive() && self.hold == Hold::Off);
        match &self.media {
            // Wherever the leg is now, it takes the new media at its next tick.
            Some(watch) => {
                watch.send_replace(media);
            }
            None => {
                let (watch, media) = tokio::sync::watch::channel(media);
                self.session.send(SessionInput::Join {
                    leg: self.leg,
                    owner: self.owner.clone(),
                    call_id: self.dialog.call_id.as_str().into(),
                    media,
                    sink: self.rtp.sink.clone(),
                });
                self.media = Some(watch);
            }
        }
        self.negotiated = Some(n);
    }
}

pub(super) fn leg_media(n: &Negotiated, held: bool) -> LegMedia {
    LegMedia {
        held,
        codec: n.codec,
        payload_type: n.payload_type,
        event_payload_type: n.event_payload_type,
        event_clock: n.event_clock,
        ptime_ms: n.ptime_ms,
    }
}
