//! Outbound calls (dialogs) through the configured trunk: INVITE with our offer,
//! provisional and final responses, digest authentication, ACK, CANCEL. An answered
//! call becomes an ordinary [`Call`] — the same media path, BYE and re-INVITE
//! handling as an inbound one.

use patchbay_conference::dialogs::{failure_reason, DialCommand, DialogData};
use sipx_sip::auth::{self, Challenge, Credentials};
use sipx_sip::Response;
use uuid::Uuid;

use super::dialog::Dialog;
use super::dialog_reports::Progress;
use super::*;

/// A call we placed that has no final answer yet.
pub(super) struct Outgoing {
    dialog_id: Uuid,
    participant_id: Uuid,
    call_id: String,
    local_tag: String,
    /// From (with our tag) and To (no tag yet) as sent.
    from: String,
    to: String,
    uri: Uri,
    uri_text: String,
    cseq: u32,
    /// Top Via of the INVITE in flight (a CANCEL repeats it).
    via: String,
    leg: LegId,
    extra: Vec<(&'static str, String)>,
    rtp: RtpLeg,
    sdp_session_id: u64,
    provisional: bool,
    /// Hang up as soon as possible (CANCEL once a provisional came; BYE after a 2xx).
    cancel: bool,
    auth_tried: bool,
    /// Early media: the leg joined its session, receive-only, on a 18x's SDP.
    early: Option<Early>,
    /// The SRTP keys our offer carries (per `sip_srtp`).
    offered: Vec<Crypto>,
}

/// Where an answered call's leg is: to join this session, or joined already (early
/// media) with this media watch.
pub(super) enum Joined {
    Into(SessionHandle),
    Already(tokio::sync::watch::Sender<LegMedia>),
}

/// A leg playing early media (ringback, announcements) into the session before the answer.
pub(super) struct Early {
    negotiated: Negotiated,
    owner: DeviceOwner,
    /// The leg's media as its session sees it (dropped: it leaves).
    media: tokio::sync::watch::Sender<LegMedia>,
}

impl Outgoing {
    pub(super) fn leg(&self) -> LegId {
        self.leg
    }

    pub(super) fn dialog_id(&self) -> Uuid {
        self.dialog_id
    }

    pub(super) fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Whether its early media plays into the session.
    #[cfg(test)]
    pub(super) fn early_media(&self) -> bool {
        self.early.is_some()
    }

    /// The call is dropped before an answer: its early media leaves the session (the
    /// media watch goes with `self`).
    fn leave(self) {
        drop(self.early);
    }
}

impl Ua {
    pub(super) fn on_dial(&mut self, cmd: DialCommand) {
        match cmd {
            DialCommand::Place {
                dialog_id,
                participant_id,
                data,
            } => {
                self.transfer_placed(participant_id, dialog_id);
                self.place(dialog_id, participant_id, &data);
            }
            DialCommand::Hangup { dialog_id } => self.hang_up_dialog(dialog_id),
        }
    }

    fn place(&mut self, dialog_id: Uuid, participant_id: Uuid, data: &DialogData) {
        let (Some(trunk), Some(peer)) = (self.trunk.clone(), self.trunk_peer()) else {
            let details = "no SIP trunk configured".into();
            return self.fail_dialog(participant_id, dialog_id, details);
        };
        let uri_text = if data.to.starts_with("sip:") || data.to.starts_with("sips:") {
            data.to.clone()
        } else {
            format!(
                "sip:{}@{}{}",
                data.to,
                trunk.hop.host_port(),
                trunk.hop.transport_param()
            )
        };
        let uri = match Uri::parse(Bytes::from(uri_text.clone())) {
            Ok(u) => u,
            Err(e) => {
                let details = format!("bad target URI: {e}");
                return self.fail_dialog(participant_id, dialog_id, details);
            }
        };
        let host = self.our_host();
        let local_tag = random_token();
        let mut extra: Vec<(&'static str, String)> = Vec::new();
        let from = match data.from.as_str() {
            "RESTRICTED" => {
                extra.push(("Privacy", "id".into()));
                format!("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={local_tag}")
            }
            "UNKNOWN" => format!("<sip:unknown@{host}>;tag={local_tag}"),
            number => format!("<sip:{number}@{host}>;tag={local_tag}"),
        };
        if let Some(uui) = &data.user_to_user {
            extra.push(("User-to-User", uui.clone()));
        }
        if let Some(replaces) = &data.replaces {
            extra.push(("Replaces", replaces.clone()));
        }
        let (leg, rtp) = match self.start_leg() {
            Ok(x) => x,
            Err(e) => return self.fail_dialog(participant_id, dialog_id, e),
        };
        let call_id = format!("{}@{}", random_token(), host);
        let mut out = Outgoing {
            dialog_id,
            participant_id,
            call_id: call_id.clone(),
            local_tag,
            from,
            to: format!("<{uri_text}>"),
            uri,
            uri_text,
            cseq: 1,
            via: String::new(),
            leg,
            extra,
            rtp,
            sdp_session_id: rand::random::<u32>() as u64,
            provisional: false,
            cancel: false,
            auth_tried: false,
            early: None,
            offered: match self.config.srtp {
                SrtpMode::Off => Vec::new(),
                _ => Crypto::offer_set(),
            },
        };
        if !self.send_invite(&mut out, None, peer) {
            let details = "could not build the INVITE".into();
            return self.fail_dialog(participant_id, dialog_id, details);
        }
        tracing::info!(%dialog_id, %call_id, to = %out.uri_text, "dialog: INVITE sent");
        self.calls.ring(out);
        self.report(participant_id, dialog_id, Progress::Calling);
    }

    /// Send (or re-send with credentials) the INVITE of `out` in a new client transaction.
    fn send_invite(
        &mut self,
        out: &mut Outgoing,
        authorization: Option<(HeaderName, String)>,
        peer: Peer,
    ) -> bool {
        let via = self.new_via(&peer);
        let route = self.proxy_route();
        let body = sdp::offer(
            (self.config.advertised_ip(), out.rtp.port),
            &out.offered,
            self.config.srtp,
            out.sdp_session_id,
            out.cseq as u64,
        );
        let contact = self.local_contact(&peer);
        let mut headers = vec![
            (HeaderName::Contact, contact),
            (hn("Allow"), ALLOW.to_string()),
        ];
        headers.extend(out.extra.iter().map(|(n, v)| (hn(n), v.clone())));
        headers.extend(authorization);
        let invite = OutRequest {
            from: Bytes::from(out.from.clone()),
            to: Bytes::from(out.to.clone()),
            call_id: out.call_id.clone(),
            cseq: out.cseq,
            route: route.into_iter().map(Bytes::from).collect(),
            headers,
            via: Some(via.clone()),
            body: Some(("application/sdp", Bytes::from(body))),
            ..OutRequest::new(Method::Invite, "")
        };
        let build = || self.build_request_to(&invite, out.uri.clone(), &peer);
        let Some(invite) = build() else {
            return false;
        };
        let owner = clients::Owner::Invite(out.call_id.clone());
        let sent = self.send_client(invite, peer, owner);
        if sent.is_none() {
            return false;
        }
        out.via = via;
        true
    }

    /// A response to one of our INVITEs.
    pub(super) fn on_invite_response(&mut self, key: &TransactionKey, resp: &Response) {
        let Some(clients::Owner::Invite(call_id)) = self.clients.get_mut(key) else {
            return;
        };
        let call_id = call_id.clone();
        let code = resp.status.code();
        // A 2xx again (retransmitted, the ACK was lost): ACK again.
        if resp.status.is_success() {
            if let Some(call) = self.calls.get(&call_id) {
                if let Some(bytes) = call.ack.clone() {
                    let peer = call.peer;
                    self.send_bytes(&bytes, &peer);
                }
                return;
            }
        }
        let Some(mut out) = self.calls.take_ringing(&call_id) else {
            return;
        };
        if resp.status.is_provisional() {
            if code > 100 && !out.provisional {
                out.provisional = true;
                if !out.cancel && (code == 180 || code == 183) {
                    self.report(out.participant_id, out.dialog_id, Progress::Ringing);
                }
            }
            if out.cancel && code > 100 {
                self.send_cancel(&out);
            } else if code > 100
                && out.early.is_none()
                && !resp.body().is_empty()
                && !self.is_transfer(out.participant_id, out.dialog_id)
            {
                self.start_early_media(&mut out, resp);
            }
            self.calls.put_back(out);
            return;
        }
        if resp.status.is_success() {
            return self.on_answered(out, resp);
        }
        // A challenge we can answer once.
        if (code == 401 || code == 407) && !out.auth_tried && !out.cancel {
            if let Some(auth) = self.authorization(resp, code == 407, &out) {
                out.auth_tried = true;
                out.cseq += 1;
                if let Some(peer) = self.trunk_peer() {
                    if self.send_invite(&mut out, Some(auth), peer) {
                        tracing::info!(dialog_id = %out.dialog_id, "dialog: INVITE sent again with credentials");
                        self.calls.put_back(out);
                        return;
                    }
                }
            }
        }
        let reason = printable(&resp.reason);
        tracing::info!(dialog_id = %out.dialog_id, code, %reason, "dialog: call failed");
        self.calls.forget(&out);
        let progress = Progress::Failed {
            status: code,
            phrase: &reason,
            reason: failure_reason(code),
            details: format!("{code} {reason}").trim().to_string(),
        };
        self.report(out.participant_id, out.dialog_id, progress);
        out.leave();
    }

    /// SDP in a 18x: the trunk plays ringback or an announcement. The leg joins its
    /// participant's session receiving only (nothing is sent before the answer); the
    /// 200's SDP takes over.
    fn start_early_media(&mut self, out: &mut Outgoing, resp: &Response) {
        let Some(Ok(n)) = std::str::from_utf8(resp.body())
            .ok()
            .and_then(|t| sdp::parse(t).ok())
            .map(|s| sdp::negotiate(&s, self.config.srtp))
        else {
            tracing::info!(dialog_id = %out.dialog_id, "dialog: early media SDP not usable, ignored");
            return;
        };
        let (p, session) = match self.conference.dialog_media(out.participant_id) {
            Ok(x) => x,
            Err(e) => {
                tracing::info!(dialog_id = %out.dialog_id, error = %e, "dialog: early media has no session to go to");
                return;
            }
        };
        let Ok(local) = answered_key(&out.offered, &n) else {
            tracing::info!(dialog_id = %out.dialog_id, "dialog: early media with SRTP we did not offer, ignored");
            return;
        };
        let keys = n.srtp.zip(local).map(|(theirs, ours)| (ours, theirs));
        if out.rtp.sink.set_srtp(keys).is_err() {
            return;
        }
        let media = leg_media(&n, false);
        let signalling = self.trunk_peer().map(|p| p.addr.ip());
        out.rtp.sink.configure(n.remote, signalling, false, &media);
        // Silence before the answer is normal: no RTP timeout until then.
        out.rtp.set_expecting(false);
        let owner = DeviceOwner::of(&p);
        let (watch, media) = tokio::sync::watch::channel(media);
        session.send(SessionInput::Join {
            leg: out.leg,
            owner: owner.clone(),
            call_id: out.call_id.as_str().into(),
            media,
            sink: out.rtp.sink.clone(),
        });
        tracing::info!(dialog_id = %out.dialog_id, leg = %out.leg, codec = ?n.codec, "dialog: early media");
        out.early = Some(Early {
            negotiated: n,
            owner,
            media: watch,
        });
    }

    /// The Authorization (or Proxy-Authorization) answering the response's challenge.
    fn authorization(
        &self,
        resp: &Response,
        proxy: bool,
        out: &Outgoing,
    ) -> Option<(HeaderName, String)> {
        let trunk = self.trunk.as_ref()?;
        let creds = Credentials::new(trunk.user.clone()?, trunk.password.clone()?);
        let name = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let challenges: Vec<Challenge> = resp
            .headers
            .iter()
            .filter(|h| h.name().canonical().eq_ignore_ascii_case(name.as_bytes()))
            .filter_map(|h| Challenge::parse(h.raw_value(), proxy))
            .collect();
        let challenge = auth::strongest(challenges)?;
        let value = auth::respond(
            &challenge,
            &creds,
            "INVITE",
            &out.uri_text,
            1,
            &random_token(),
        );
        Some((challenge.response_header(), value))
    }

    fn send_cancel(&mut self, out: &Outgoing) {
        let Some(peer) = self.trunk_peer() else {
            return;
        };
        // RFC 3261 §9.1: the INVITE's Via and the same Route.
        let cancel = OutRequest {
            from: Bytes::from(out.from.clone()),
            to: Bytes::from(out.to.clone()),
            call_id: out.call_id.clone(),
            cseq: out.cseq,
            route: self.proxy_route().into_iter().map(Bytes::from).collect(),
            via: Some(out.via.clone()),
            ..OutRequest::new(Method::Cancel, "")
        };
        let cancel = self.build_request_to(&cancel, out.uri.clone(), &peer);
        if let Some(cancel) = cancel {
            if self
                .send_client(cancel, peer, clients::Owner::Nobody)
                .is_some()
            {
                tracing::info!(dialog_id = %out.dialog_id, "dialog: CANCEL sent");
            }
        }
    }

    /// 2xx: ACK it, then the call is an ordinary one in the participant's session.
    fn on_answered(&mut self, mut out: Outgoing, resp: &Response) {
        let Some(peer) = self.trunk_peer() else {
            return;
        };
        let dialog = Dialog::as_uac(
            &out.call_id,
            &out.local_tag,
            Bytes::from(out.from.clone()),
            out.cseq,
            out.uri.clone(),
            resp,
        );
        // The ACK (its own transaction: sent by us, again for each 2xx retransmission).
        let ack = OutRequest::in_dialog(Method::Ack, &dialog, out.cseq);
        let ack = self.build_request_to(&ack, dialog.remote_target.clone(), &peer);
        let ack = ack.map(|ack| Message::Request(ack).to_bytes());
        if let Some(bytes) = &ack {
            self.send_bytes(bytes, &peer);
        }
        let answer = std::str::from_utf8(resp.body())
            .ok()
            .and_then(|t| sdp::parse(t).ok());
        let mode = self.config.srtp;
        let mut negotiated = answer.as_ref().map(|a| sdp::negotiate(a, mode));
        // An answer with SRTP we did not offer is no usable answer.
        if let Some(Ok(n)) = &negotiated {
            if answered_key(&out.offered, n).is_err() {
                negotiated = Some(Err(sdp::SdpError::NoCrypto));
            }
        }
        if let (None, Some(e)) = (&negotiated, &out.early) {
            // The 18x carried the answer (RFC 3264 §4, no reliable provisional): it stands.
            negotiated = Some(Ok(e.negotiated));
        }
        let early = out.early.take();
        let media = match early {
            // Already in the session since the early media: an update, now sending too.
            Some(e) => match negotiated {
                Some(Ok(n)) => Some((n, e.owner, Joined::Already(e.media))),
                // Its leg leaves (the early media watch is dropped).
                _ => None,
            },
            None => self
                .media_of_answer(&out, negotiated)
                .map(|(n, owner, session)| (n, owner, Joined::Into(session))),
        };
        let leg = out.leg;
        let Some((n, owner, joined)) = media else {
            // Hang up what we cannot use.
            let details = "the answer could not be used".into();
            self.fail_dialog(out.participant_id, out.dialog_id, details);
            let call = self.call_of(out, leg, peer, dialog, ack, None);
            let call_id = call.dialog.call_id.clone();
            self.calls.insert(call);
            self.metrics.sip_calls_active.inc();
            self.end_call(&call_id, true);
            return;
        };
        let cancel = out.cancel;
        let dialog_id = out.dialog_id;
        if !cancel {
            // Before its leg joins the session (which ends a transferring phone's call):
            // the phone hears of the answer, then of our BYE.
            self.report(out.participant_id, dialog_id, Progress::Answered);
        }
        let mut call = self.call_of(out, leg, peer, dialog, ack, Some((owner, joined)));
        let call_id = call.dialog.call_id.clone();
        call.srtp_local = answered_key(&call.srtp_offered, &n).unwrap_or(None);
        call.apply(n);
        self.metrics.sip_calls_active.inc();
        self.calls.insert(call);
        if cancel {
            // Hung up while it rang: answered anyway, so end it now.
            self.end_call(&call_id, true);
            return;
        }
        tracing::info!(%dialog_id, %call_id, %leg, codec = ?n.codec, "dialog answered");
    }

    /// The media of a 2xx without early media: the SDP answer and the participant's session.
    fn media_of_answer(
        &self,
        out: &Outgoing,
        negotiated: Option<Result<Negotiated, sdp::SdpError>>,
    ) -> Option<(Negotiated, DeviceOwner, SessionHandle)> {
        match (negotiated, self.conference.dialog_media(out.participant_id)) {
            (Some(Ok(n)), Ok((p, session))) => Some((n, DeviceOwner::of(&p), session)),
            (Some(Ok(_)), Err(e)) => {
                tracing::info!(dialog_id = %out.dialog_id, error = %e, "dialog answered but its participant cannot join");
                None
            }
            _ => {
                tracing::info!(dialog_id = %out.dialog_id, "dialog answered without a usable SDP answer");
                None
            }
        }
    }

    fn call_of(
        &mut self,
        out: Outgoing,
        leg: LegId,
        peer: Peer,
        dialog: Dialog,
        ack: Option<Bytes>,
        joined: Option<(DeviceOwner, Joined)>,
    ) -> Call {
        // A call that never joins raises no events: no callback URL needed.
        let (owner, joined) = joined.unwrap_or_else(|| {
            let owner = DeviceOwner {
                participant_id: out.participant_id,
                callback_url: None,
                tag: None,
            };
            (owner, Joined::Into(SessionHandle::closed()))
        });
        let (session, media) = match joined {
            Joined::Into(session) => (session, None),
            Joined::Already(media) => (SessionHandle::closed(), Some(media)),
        };
        Call {
            leg,
            owner,
            peer,
            dialog,
            negotiated: None,
            sdp_session_id: out.sdp_session_id,
            sdp_version: out.cseq as u64,
            session,
            media,
            rtp: out.rtp,
            srtp_local: None,
            srtp_offered: out.offered,
            placed_for: Some(out.dialog_id),
            ack,
            hold: Hold::Off,
        }
    }

    /// Our INVITE got no answer at all (timer B) or could not be sent.
    pub(super) fn on_invite_failed(&mut self, key: &TransactionKey, why: &str) {
        let Some(clients::Owner::Invite(call_id)) = self.clients.get_mut(key) else {
            return;
        };
        let call_id = call_id.clone();
        self.clients.release(key);
        if let Some(out) = self.calls.take_ringing(&call_id) {
            self.calls.forget(&out);
            let progress = Progress::Failed {
                status: 408,
                phrase: "Request Timeout",
                reason: "ERROR",
                details: why.to_string(),
            };
            self.report(out.participant_id, out.dialog_id, progress);
            out.leave();
        }
    }

    pub(super) fn hang_up_dialog(&mut self, dialog_id: Uuid) {
        let Some(call_id) = self.calls.of_dialog(dialog_id).map(str::to_string) else {
            return;
        };
        if self.calls.contains(&call_id) {
            tracing::info!(%dialog_id, "dialog: hanging up (BYE)");
            self.end_call(&call_id, true);
            return;
        }
        let Some(mut out) = self.calls.take_ringing(&call_id) else {
            return;
        };
        out.cancel = true;
        // RFC 3261 §9.1: CANCEL only once a provisional response came.
        if out.provisional {
            self.send_cancel(&out);
        }
        self.calls.put_back(out);
    }
}
