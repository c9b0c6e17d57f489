//! Transfers of ours (REST): a REFER in the participant's call asks the phone's side
//! (a PBX, a carrier, a phone) to call the target itself (blind transfer, RFC 3515).
//! Its answer and the NOTIFYs of the implicit subscription (`message/sipfrag`) give
//! the outcome: a 2xx from the target completes it and we end our call (BYE, as the
//! transferor does, RFC 5589 §6); a refusal of the REFER or a failure of the target
//! is reported, with the call left as it was; the call ending first is reported too.

use patchbay_conference::calls::{valid_transfer_target, CallError, TransferOutcome};

use sipx_sip::Response;

use super::*;

type OutcomeTx = oneshot::Sender<Result<TransferOutcome, CallError>>;

/// Our transfers under way (one per call).
#[derive(Default)]
pub(super) struct Referring {
    by_call: HashMap<String, OurRefer>,
}

struct OurRefer {
    /// Who waits for the outcome (gone: the API stopped waiting).
    reply: Option<OutcomeTx>,
}

impl OurRefer {
    fn report(&mut self, outcome: Result<TransferOutcome, CallError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(outcome);
        }
    }
}

impl Ua {
    /// Send a REFER to `to` in `call_id`; `reply` gets the outcome.
    pub(super) fn send_refer(&mut self, call_id: &str, to: &str, reply: OutcomeTx) {
        if let Some(r) = self.referring.by_call.get(call_id) {
            if r.reply.as_ref().is_some_and(|r| !r.is_closed()) {
                let _ = reply.send(Err(CallError::Busy));
                return;
            }
        }
        if !valid_transfer_target(to) {
            let _ = reply.send(Err(CallError::Refused("not a transfer target".into())));
            return;
        }
        let Some(peer) = self.call_peer(call_id) else {
            let _ = reply.send(Err(CallError::NoCall));
            return;
        };
        let contact = self.local_contact(&peer);
        let Some(call) = self.calls.get_mut(call_id) else {
            let _ = reply.send(Err(CallError::NoCall));
            return;
        };
        let cseq = call.dialog.next_cseq();
        let refer = OutRequest {
            headers: vec![
                (hn("Refer-To"), format!("<{to}>")),
                (HeaderName::Contact, contact),
            ],
            ..OutRequest::in_dialog(Method::Refer, &call.dialog, cseq)
        };
        let target = call.dialog.remote_target.clone();
        let Some(req) = self.build_request_to(&refer, target, &peer) else {
            let _ = reply.send(Err(CallError::NoCall));
            return;
        };
        // Recorded first: its answer may come while it is being sent.
        let waiting = OurRefer { reply: Some(reply) };
        self.referring.by_call.insert(call_id.to_string(), waiting);
        let owner = clients::Owner::Refer(call_id.to_string());
        if self.send_client(req, peer, owner).is_none() {
            if let Some(mut r) = self.referring.by_call.remove(call_id) {
                r.report(Err(CallError::NoCall));
            }
            return;
        }
        tracing::info!(call_id, to, "transfer: REFER sent");
    }

    /// The final answer to our REFER in `call_id` (`None`: none came).
    pub(super) fn on_refer_result(&mut self, call_id: &str, resp: Option<&Response>) {
        let code = resp.map(|r| r.status.code()).unwrap_or(408);
        if code < 300 {
            tracing::info!(%call_id, code, "transfer: REFER accepted");
            return;
        }
        let reason = resp
            .map(|r| printable(&r.reason))
            .unwrap_or_else(|| "no answer".into());
        tracing::info!(%call_id, code, %reason, "transfer: REFER refused");
        if let Some(mut r) = self.referring.by_call.remove(call_id) {
            let line = format!("{code} {reason}").trim().to_string();
            r.report(Ok(TransferOutcome::Rejected(line)));
        }
    }

    /// A NOTIFY in a call: the progress of our transfer.
    pub(super) fn on_notify(&mut self, key: &TransactionKey, req: &Request) {
        let Some(call_id) = self.in_dialog_request(key, req) else {
            return;
        };
        let event = first_value(req, "Event").unwrap_or_default();
        if !event.to_ascii_lowercase().starts_with("refer") {
            return self.respond(key, req, Reply::new(489, "Bad Event"));
        }
        if !self.referring.by_call.contains_key(&call_id) {
            return self.respond(key, req, Reply::new(481, "Subscription Does Not Exist"));
        }
        self.respond(key, req, Reply::new(200, "OK"));
        let terminated = first_value(req, "Subscription-State")
            .is_some_and(|s| s.to_ascii_lowercase().starts_with("terminated"));
        let status = sipfrag_status(req.body());
        tracing::info!(%call_id, status = ?status.as_ref().map(|s| s.0), terminated, "transfer: progress");
        let outcome = match status {
            Some((code, _)) if code < 200 && !terminated => return,
            Some((code, _)) if (200..300).contains(&code) => TransferOutcome::Completed,
            Some((408 | 480 | 487, _)) => TransferOutcome::RingingTimeout,
            Some((code, line)) if code >= 300 => TransferOutcome::Rejected(line),
            _ => TransferOutcome::Rejected("the transfer ended without an outcome".into()),
        };
        let Some(mut r) = self.referring.by_call.remove(&call_id) else {
            return;
        };
        let completed = outcome == TransferOutcome::Completed;
        tracing::info!(%call_id, outcome = outcome.as_str(), "transfer ended");
        r.report(Ok(outcome));
        if completed {
            // The phone's side is with the target now: our part of the call is over.
            self.end_call(&call_id, true);
        }
    }

    /// A call ended: a transfer of ours in it is over.
    pub(super) fn referring_call_ended(&mut self, call_id: &str) {
        if let Some(mut r) = self.referring.by_call.remove(call_id) {
            r.report(Ok(TransferOutcome::CallEnded));
        }
    }
}

/// The status of a `message/sipfrag` body's status line: its code and the line
/// (at most 64 printable characters).
fn sipfrag_status(body: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let code: u16 = rest.get(..3)?.parse().ok()?;
    if !(100..700).contains(&code) {
        return None;
    }
    Some((code, printable(rest.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipfrag_lines() {
        assert_eq!(
            sipfrag_status(b"SIP/2.0 200 OK\r\n"),
            Some((200, "200 OK".into()))
        );
        assert_eq!(
            sipfrag_status(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n"),
            Some((486, "486 Busy Here".into()))
        );
        assert_eq!(
            sipfrag_status(b"SIP/2.0 100 Trying"),
            Some((100, "100 Trying".into()))
        );
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(sipfrag_status(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 99 x"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 abc"), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
    }
}
