//! Calls we answer (UAS): INVITE with the token, its 2xx until the ACK, re-INVITE,
//! BYE and CANCEL from the caller.

use super::dialog::{cseq_number, Ack, Dialog, Retransmit};
use super::identify::Admit;
use super::*;

impl Ua {
    pub(super) fn to_tag(req: &Request) -> Option<String> {
        match req.headers.typed::<To>() {
            Some(Ok(to)) => to.tag().map(|t| String::from_utf8_lossy(t).to_string()),
            _ => None,
        }
    }

    pub(super) fn call_id(req: &Request) -> String {
        first_value(req, "Call-ID").unwrap_or_default()
    }

    pub(super) fn on_invite(&mut self, key: &TransactionKey, req: &Request) {
        let call_id = Self::call_id(req);
        if let Some(tag) = Self::to_tag(req) {
            if self
                .calls
                .get(&call_id)
                .is_some_and(|c| c.dialog.is_ours(Some(&tag)))
            {
                self.on_reinvite(key, req, &call_id);
            } else {
                self.respond(key, req, Reply::new(481, "Call/Transaction Does Not Exist"));
            }
            return;
        }
        if self.calls.contains(&call_id) || self.placing.contains(&call_id) {
            // A new INVITE (not a retransmission: the transaction layer absorbs those)
            // without a To tag on a live call's Call-ID: a merged or looped request
            // (RFC 3261 §8.2.2.2). It must not touch the live call.
            tracing::info!(%call_id, "merged INVITE refused: its Call-ID belongs to a live call");
            self.metrics.sip_calls_rejected.inc();
            self.respond(
                key,
                req,
                Reply::new(482, "Loop Detected").tag(&random_token()),
            );
            return;
        }
        self.respond(key, req, Reply::new(100, "Trying"));
        if let Some(replaces) = first_value(req, "Replaces") {
            return self.admit_replacing(key, req, &replaces);
        }
        let Some(token) = uui::jwt_token(header_values(req, "User-to-User")) else {
            return self.route_inbound(key, req);
        };
        self.admit_with_token(key, req, token);
    }

    /// Admit an INVITE whose token was found: join its session's media here (or
    /// redirect it to the node that runs it) and answer.
    pub(super) fn admit_invite(&mut self, key: &TransactionKey, req: &Request, who: Admit) {
        let call_id = Self::call_id(req);
        let local_tag = random_token();
        let reject = |ua: &mut Ua, code: u16, reason: &str| {
            ua.metrics.sip_calls_rejected.inc();
            ua.respond(key, req, Reply::new(code, reason).tag(&local_tag));
        };
        let joined = match &who {
            Admit::Token(token) => self.conference.join_media(token),
            Admit::Replacing { participant, .. } => self.conference.dialog_media(*participant),
        };
        let (participant, session) = match joined {
            Ok(x) => {
                if let Some(s) = x.0.session_id {
                    self.conference.claim(s);
                }
                x
            }
            // In a cluster, another node runs the session's media: redirect there (a
            // carrier-side proxy such as Kamailio follows 3xx; see docs/cluster.md).
            Err(JoinError::Elsewhere {
                node,
                sip_uri: Some(uri),
            }) => {
                tracing::info!(%call_id, %node, "call redirected to the session's node");
                self.metrics.sip_calls_rejected.inc();
                let contact = [("Contact", format!("<{uri}>"))];
                let reply = Reply::new(302, "Moved Temporarily")
                    .tag(&local_tag)
                    .headers(&contact);
                return self.respond(key, req, reply);
            }
            // A stopping node: a carrier-side proxy tries the next node on a 503.
            Err(JoinError::Draining) => {
                tracing::info!(%call_id, "call refused: this node is stopping");
                return reject(self, 503, "Service Unavailable (this node is stopping)");
            }
            Err(e) => {
                tracing::info!(%call_id, reason = %e, "call refused");
                return reject(self, 403, "Forbidden");
            }
        };
        let offer = if req.body().is_empty() {
            None
        } else {
            match std::str::from_utf8(req.body())
                .map_err(|e| e.to_string())
                .and_then(|t| sdp::parse(t).map_err(|e| e.to_string()))
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::info!(%call_id, error = %e, "call refused: bad SDP");
                    return reject(self, 400, "Bad Request (malformed SDP)");
                }
            }
        };
        let mode = self.config.srtp;
        let negotiated = match &offer {
            Some(o) => match sdp::negotiate(o, mode) {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::info!(%call_id, error = %e, "call refused: offer not acceptable");
                    return reject(self, 488, "Not Acceptable Here");
                }
            },
            None => None,
        };
        let Some(peer) = self.tx_peers.get(key).copied() else {
            return;
        };
        let (leg, rtp) = match self.start_leg() {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "no RTP for the call");
                return reject(self, 503, "Service Unavailable");
            }
        };
        let sdp_session_id = rand::random::<u32>() as u64;
        let at = (self.config.advertised_ip(), rtp.port);
        let srtp_local = negotiated.as_ref().and_then(|n| answering_key(None, n));
        let srtp_offered = match (&negotiated, mode) {
            (None, SrtpMode::Offer | SrtpMode::Require) => Crypto::offer_set(),
            _ => Vec::new(),
        };
        let body = match (&offer, &negotiated) {
            (Some(o), Some(n)) => sdp::answer(o, n, srtp_local.as_ref(), at, sdp_session_id, 1),
            _ => sdp::offer(at, &srtp_offered, mode, sdp_session_id, 1),
        };
        let contact = self.local_contact(&peer);
        // RFC 3261 §12.1.1: every Record-Route of the request, in order, in the answer
        // (the caller's ACK, BYE and re-INVITEs then keep to the proxies' path).
        let record_route: Vec<(&str, String)> = header_values(req, "Record-Route")
            .map(|v| ("Record-Route", String::from_utf8_lossy(v).into_owned()))
            .collect();
        let mut headers = vec![("Contact", contact), ("Allow", ALLOW.to_string())];
        headers.extend(record_route);
        let Some(resp) = build_response(
            req,
            Reply::new(200, "OK")
                .tag(&local_tag)
                .headers(&headers)
                .body("application/sdp", Bytes::from(body)),
        ) else {
            return;
        };
        let ok_bytes = Message::Response(resp.clone()).to_bytes();
        let local_addr = resp
            .headers
            .get(&HeaderName::To)
            .map(|h| Bytes::copy_from_slice(h.raw_value()))
            .unwrap_or_default();
        // Our CSeq space starts at a random point below 2^31 (RFC 3261 §8.1.1.5).
        let first_cseq = rand::random::<u32>() % 1_000_000;
        let mut dialog = Dialog::as_uas(req, &local_tag, local_addr, first_cseq);
        // The 2xx goes again until its ACK (our offer in it, when the INVITE had none,
        // is answered there).
        let now = self.now;
        dialog.answering(
            cseq_number(req).unwrap_or(0),
            ok_bytes,
            negotiated.is_none(),
            now,
            self.timers_cfg.t1,
        );

        let outputs = self.layer.send_response(key, resp);
        self.run_outputs(key, outputs);
        self.metrics.sip_calls_accepted.inc();
        self.metrics.sip_calls_active.inc();
        tracing::info!(%call_id, %leg, participant_id = %participant.id, codec = ?negotiated.map(|n| n.codec), late_offer = negotiated.is_none(), srtp = ?negotiated.and_then(|n| n.srtp).map(|c| c.suite), "call answered");

        let mut call = Call {
            leg,
            owner: DeviceOwner::of(&participant),
            peer,
            dialog,
            negotiated: None,
            sdp_session_id,
            sdp_version: 1,
            session,
            media: None,
            rtp,
            srtp_local,
            srtp_offered,
            placed_for: None,
            ack: None,
            hold: Hold::Off,
        };
        if let Some(n) = negotiated {
            call.apply(n);
        }
        self.schedule_2xx(&call);
        // One call per participant: a second call with its token replaces the first,
        // wherever that one is (its session, or parked).
        for old in self.calls.of_participant(participant.id) {
            tracing::info!(call_id = %old, new_call_id = %call_id, "call replaced by a new call of its participant");
            self.end_call(&old, true);
        }
        if let Admit::Replacing { call_id: old, .. } = who {
            // A dialog's call, which the loop above leaves alone.
            self.end_call(&old, true);
        }
        self.calls.insert(call);
    }

    /// The retransmission timer of a call's 2xx, when one waits for its ACK.
    fn schedule_2xx(&mut self, call: &Call) {
        if let Some(at) = call.dialog.retransmit_at() {
            self.schedule(at, TimerKind::Retransmit2xx(call.dialog.call_id.clone()));
        }
    }

    pub(super) fn retransmit_2xx(&mut self, call_id: &str) {
        let t2 = self.timers_cfg.t2;
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let reliable = call.peer.reliability() == Reliability::Reliable;
        match call.dialog.on_retransmit_timer(self.now, t2, reliable) {
            Retransmit::GiveUp => {
                tracing::info!(call_id, "no ACK for our 200: ending the call");
                self.end_call(call_id, true);
            }
            Retransmit::Send(bytes) => {
                let peer = call.peer;
                self.send_bytes(&bytes, &peer);
                self.reschedule_2xx(call_id);
            }
            Retransmit::Wait => self.reschedule_2xx(call_id),
        }
    }

    fn reschedule_2xx(&mut self, call_id: &str) {
        if let Some(at) = self
            .calls
            .get(call_id)
            .and_then(|c| c.dialog.retransmit_at())
        {
            self.schedule(at, TimerKind::Retransmit2xx(call_id.to_string()));
        }
    }

    pub(super) fn on_ack(&mut self, req: &Request) {
        let call_id = Self::call_id(req);
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if !call.dialog.is_ours(Self::to_tag(req).as_deref()) {
            return;
        }
        let Ack::Confirmed { answer: true } = call.dialog.on_ack(cseq_number(req)) else {
            return;
        };
        // The ACK answers the offer our 2xx made.
        let answer = std::str::from_utf8(req.body())
            .ok()
            .and_then(|t| sdp::parse(t).ok());
        let mode = self.config.srtp;
        let n = answer.as_ref().map(|a| sdp::negotiate(a, mode));
        let keyed = n
            .as_ref()
            .and_then(|n| n.as_ref().ok())
            .map(|n| answered_key(&call.srtp_offered, n));
        match (n, keyed) {
            (Some(Ok(n)), Some(Ok(local))) => {
                call.srtp_local = local;
                call.apply(n)
            }
            _ => {
                tracing::info!(call_id, "no usable SDP answer in the ACK: ending the call");
                self.end_call(&call_id, true);
            }
        }
    }

    pub(super) fn on_reinvite(&mut self, key: &TransactionKey, req: &Request, call_id: &str) {
        let media_ip = self.config.advertised_ip();
        let mode = self.config.srtp;
        let contact = self
            .calls
            .get(call_id)
            .map(|c| self.local_contact(&c.peer))
            .unwrap_or_default();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let local_tag = call.dialog.local_tag.clone();
        // CSeq order, and no new offer while ours waits for its answer (491).
        if let Err(r) = call.dialog.check_request(req) {
            tracing::info!(call_id, code = r.code, "re-INVITE refused");
            let retry = r.retry_after.map(|s| [("Retry-After", s.to_string())]);
            let reply = Reply::new(r.code, r.reason).tag(&local_tag);
            let reply = match &retry {
                Some(h) => reply.headers(h),
                None => reply,
            };
            return self.respond(key, req, reply);
        }
        let offer = if req.body().is_empty() {
            None
        } else {
            std::str::from_utf8(req.body())
                .ok()
                .and_then(|t| sdp::parse(t).ok())
        };
        let Some(offer) = offer else {
            if req.body().is_empty() {
                // An offerless re-INVITE: offer our current media again; the answer comes in the ACK.
                let body = call.new_offer(media_ip, mode, sdp::Direction::SendRecv);
                return self.ok_with_sdp(key, req, call_id, contact, body, true);
            }
            return self.respond(
                key,
                req,
                Reply::new(400, "Bad Request (malformed SDP)").tag(&local_tag),
            );
        };
        let n = match sdp::negotiate(&offer, mode) {
            Ok(n) => n,
            Err(_) => {
                return self.respond(
                    key,
                    req,
                    Reply::new(488, "Not Acceptable Here").tag(&local_tag),
                );
            }
        };
        call.srtp_local = answering_key(call.srtp_local, &n);
        call.apply(n);
        tracing::info!(call_id, leg = %call.leg, direction = n.direction.as_str(), codec = ?n.codec, srtp = n.srtp.is_some(), "call re-negotiated");
        call.sdp_version += 1;
        let body = sdp::answer(
            &offer,
            &n,
            call.srtp_local.as_ref(),
            (media_ip, call.rtp.port),
            call.sdp_session_id,
            call.sdp_version,
        );
        self.ok_with_sdp(key, req, call_id, contact, body, false);
    }

    /// The 200 OK to an in-dialog INVITE, with our SDP (`offer`: ours, answered in the
    /// ACK); the re-INVITE is a target refresh, and the 2xx goes again until its ACK.
    fn ok_with_sdp(
        &mut self,
        key: &TransactionKey,
        req: &Request,
        call_id: &str,
        contact: String,
        sdp: String,
        offer: bool,
    ) {
        let t1 = self.timers_cfg.t1;
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let headers = [("Contact", contact)];
        let Some(resp) = build_response(
            req,
            Reply::new(200, "OK")
                .tag(&call.dialog.local_tag)
                .headers(&headers)
                .body("application/sdp", Bytes::from(sdp)),
        ) else {
            return;
        };
        call.dialog.refresh_target(req);
        let bytes = Message::Response(resp.clone()).to_bytes();
        let cseq = cseq_number(req).unwrap_or(0);
        call.dialog.answering(cseq, bytes, offer, self.now, t1);
        let outputs = self.layer.send_response(key, resp);
        self.run_outputs(key, outputs);
        self.reschedule_2xx(call_id);
    }

    /// A request of the peer's in one of our calls (BYE, REFER, NOTIFY): its Call-ID
    /// once its To tag names the call and its CSeq is in order; otherwise it is
    /// answered here (481, or the dialog's refusal) and None.
    pub(super) fn in_dialog_request(
        &mut self,
        key: &TransactionKey,
        req: &Request,
    ) -> Option<String> {
        let call_id = Self::call_id(req);
        let to_tag = Self::to_tag(req);
        let Some(call) = self
            .calls
            .get_mut(&call_id)
            .filter(|c| c.dialog.is_ours(to_tag.as_deref()))
        else {
            self.respond(key, req, Reply::new(481, "Call/Transaction Does Not Exist"));
            return None;
        };
        if let Err(r) = call.dialog.check_request(req) {
            let tag = call.dialog.local_tag.clone();
            self.respond(key, req, Reply::new(r.code, r.reason).tag(&tag));
            return None;
        }
        Some(call_id)
    }

    pub(super) fn on_bye(&mut self, key: &TransactionKey, req: &Request) {
        let Some(call_id) = self.in_dialog_request(key, req) else {
            return;
        };
        self.respond(key, req, Reply::new(200, "OK"));
        tracing::info!(%call_id, "caller hung up");
        self.end_call(&call_id, false);
    }

    pub(super) fn on_cancel(&mut self, key: &TransactionKey, req: &Request) {
        let invite = TransactionKey::for_cancelled_invite(req);
        match invite.as_ref().and_then(|k| {
            self.layer
                .server_request(k)
                .cloned()
                .map(|r| (k.clone(), r))
        }) {
            Some((ik, invite_req)) => {
                self.respond(key, req, Reply::new(200, "OK"));
                // Our INVITE answers are immediate; if one is still open, end it with 487.
                if matches!(self.layer.server_state(&ik), Some(ServerState::Proceeding)) {
                    let tag = random_token();
                    self.respond(
                        &ik,
                        &invite_req,
                        Reply::new(487, "Request Terminated").tag(&tag),
                    );
                }
            }
            None => self.respond(key, req, Reply::new(481, "Call/Transaction Does Not Exist")),
        }
    }
}
