//! Hold and resume from our side (REST): a re-INVITE of ours in the call's dialog,
//! `sendonly` to hold (we then send the phone nothing and expect nothing from it) and
//! `sendrecv` to resume; the outcome goes back to the control plane with the answer.
//! RFC 3261 §14.1: a 491 (glare) is reported as busy, a 408 or 481, or no answer at
//! all, ends the call.

use patchbay_conference::calls::{CallCommand, CallError};
use sipx_sip::Response;

use super::*;

/// One re-INVITE of ours in flight (kept after its 2xx, to ACK retransmissions).
pub(super) struct Reinvite {
    call_id: String,
    cseq: u32,
    hold: bool,
    reply: Option<oneshot::Sender<Result<(), CallError>>>,
    /// Our ACK of its 2xx.
    ack: Option<Bytes>,
}

impl Reinvite {
    /// Its transaction ended without any outcome reported (none is left to wait for).
    pub(super) fn no_outcome(&mut self) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(CallError::NoOutcome));
        }
    }
}

impl Ua {
    pub(super) fn on_call_command(&mut self, cmd: CallCommand) {
        match cmd {
            CallCommand::Hold {
                participant_id,
                hold,
                reply,
            } => {
                let Some(call_id) = self.participant_call(participant_id) else {
                    let _ = reply.send(Err(CallError::NoCall));
                    return;
                };
                if let Err(e) = self.send_reinvite(&call_id, hold, reply) {
                    tracing::info!(%call_id, error = %e, hold, "hold/resume not sent");
                }
            }
            CallCommand::Transfer {
                participant_id,
                to,
                reply,
            } => match self.participant_call(participant_id) {
                Some(call_id) => self.send_refer(&call_id, &to, reply),
                None => {
                    let _ = reply.send(Err(CallError::NoCall));
                }
            },
        }
    }

    /// A participant's call here: its inbound call, or the answered call of its dialog.
    fn participant_call(&self, participant_id: uuid::Uuid) -> Option<String> {
        self.calls
            .of_participant(participant_id)
            .into_iter()
            .next()
            .or_else(|| self.calls.placed_for_participant(participant_id))
    }

    /// Our re-INVITE for `call_id`; `reply` gets the outcome (now, if it cannot be sent).
    fn send_reinvite(
        &mut self,
        call_id: &str,
        hold: bool,
        reply: oneshot::Sender<Result<(), CallError>>,
    ) -> Result<(), CallError> {
        let fail = |reply: oneshot::Sender<_>, e: CallError| {
            let _ = reply.send(Err(e.clone()));
            Err(e)
        };
        let media_ip = self.config.advertised_ip();
        let mode = self.config.srtp;
        let Some(peer) = self.call_peer(call_id) else {
            return fail(reply, CallError::NoCall);
        };
        let contact = self.local_contact(&peer);
        let Some(call) = self.calls.get_mut(call_id) else {
            return fail(reply, CallError::NoCall);
        };
        let Some(cseq) = call.dialog.start_offer() else {
            return fail(reply, CallError::Busy);
        };
        let direction = if hold {
            sdp::Direction::SendOnly
        } else {
            sdp::Direction::SendRecv
        };
        let body = call.new_offer(media_ip, mode, direction);
        let d = &call.dialog;
        let invite = OutRequest {
            headers: vec![
                (HeaderName::Contact, contact),
                (hn("Allow"), ALLOW.to_string()),
            ],
            body: Some(("application/sdp", Bytes::from(body))),
            ..OutRequest::in_dialog(Method::Invite, d, cseq)
        };
        let target = d.remote_target.clone();
        let Some(req) = self.build_request_to(&invite, target, &peer) else {
            if let Some(call) = self.calls.get_mut(call_id) {
                call.dialog.offer_done(cseq);
            }
            return fail(reply, CallError::NoCall);
        };
        let r = Reinvite {
            call_id: call_id.to_string(),
            cseq,
            hold,
            reply: Some(reply),
            ack: None,
        };
        if self
            .send_client(req, peer, clients::Owner::Reinvite(r))
            .is_none()
        {
            // The layer refused it (the reply went with the owner: the API hears NoOutcome).
            if let Some(call) = self.calls.get_mut(call_id) {
                call.dialog.offer_done(cseq);
            }
            return Err(CallError::NoCall);
        }
        let what = if hold { "hold" } else { "resume" };
        tracing::info!(call_id, hold, "re-INVITE sent to {what}");
        Ok(())
    }

    /// A response to one of our re-INVITEs (`None`: no answer came).
    pub(super) fn on_reinvite_result(&mut self, key: &TransactionKey, resp: Option<&Response>) {
        let Some(clients::Owner::Reinvite(r)) = self.clients.get_mut(key) else {
            return;
        };
        let (call_id, cseq, hold) = (r.call_id.clone(), r.cseq, r.hold);
        let code = resp.map(|r| r.status.code());
        match (code, resp) {
            (Some(c), _) if c < 200 => {}
            (Some(c), Some(resp)) if c < 300 => {
                if let Some(ack) = &r.ack {
                    // A 2xx again: our ACK was lost.
                    let ack = ack.clone();
                    if let Some(peer) = self.tx_peers.get(key).copied() {
                        self.send_bytes(&ack, &peer);
                    }
                    return;
                }
                let reply = r.reply.take();
                let outcome = self.reinvite_answered(key, &call_id, cseq, hold, resp);
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            _ => {
                let reply = r.reply.take();
                self.clients.release(key);
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.dialog.offer_done(cseq);
                }
                let outcome = match code {
                    Some(491) => CallError::Busy,
                    Some(c @ (408 | 481)) => {
                        tracing::info!(%call_id, code = c, "re-INVITE: the dialog is gone, hanging up");
                        self.end_call(&call_id, true);
                        CallError::NoAnswer
                    }
                    Some(c) => {
                        let reason = resp.map(|r| printable(&r.reason)).unwrap_or_default();
                        CallError::Refused(format!("{c} {reason}").trim().to_string())
                    }
                    None => {
                        tracing::info!(%call_id, "re-INVITE not answered, hanging up");
                        self.end_call(&call_id, true);
                        CallError::NoAnswer
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(Err(outcome));
                }
            }
        }
    }

    /// The phone's 2xx to our re-INVITE: ACK it, put its answer into effect.
    fn reinvite_answered(
        &mut self,
        key: &TransactionKey,
        call_id: &str,
        cseq: u32,
        hold: bool,
        resp: &Response,
    ) -> Result<(), CallError> {
        let peer = self.tx_peers.get(key).copied();
        let mode = self.config.srtp;
        let music = self.config.music_on_hold;
        let Some(call) = self.calls.get_mut(call_id) else {
            return Err(CallError::NoCall);
        };
        call.dialog.offer_done(cseq);
        let d = &call.dialog;
        let ack = OutRequest::in_dialog(Method::Ack, d, cseq);
        let target = d.remote_target.clone();
        let answer = std::str::from_utf8(resp.body())
            .ok()
            .and_then(|t| sdp::parse(t).ok())
            .and_then(|a| sdp::negotiate(&a, mode).ok())
            .filter(|n| answered_key(&call.srtp_offered, n).is_ok());
        if let Some(n) = answer {
            call.srtp_local = answered_key(&call.srtp_offered, &n).ok().flatten();
            call.hold = match (hold, music) {
                (false, _) => Hold::Off,
                (true, false) => Hold::Silent,
                (true, true) => Hold::Music,
            };
            call.apply(n);
        }
        let leg = call.leg;
        let ok = answer.is_some();
        let ack_bytes = peer
            .and_then(|p| self.build_request_to(&ack, target, &p).map(|a| (a, p)))
            .map(|(a, p)| {
                let bytes = Message::Request(a).to_bytes();
                self.send_bytes(&bytes, &p);
                bytes
            });
        if let Some(clients::Owner::Reinvite(r)) = self.clients.get_mut(key) {
            r.ack = ack_bytes;
        }
        if !ok {
            tracing::info!(call_id, %leg, "re-INVITE answered without a usable SDP answer");
            return Err(CallError::Refused("no usable SDP answer".into()));
        }
        tracing::info!(call_id, %leg, held = hold, "call {}", if hold { "held" } else { "resumed" });
        Ok(())
    }
}
