//! Transfers a phone asks for (RFC 3515 REFER in its call's dialog, blind): we accept
//! (202), place a dialog for the call's participant to the `Refer-To` target through
//! the trunk (an ordinary dialog of the conference, reported through the
//! participant's `onSipDialogStateChange`), and report its progress to the phone as
//! NOTIFYs of `message/sipfrag` (100, 180, then the final status). When the target
//! answers its leg takes the participant's place in the session, which ends the
//! phone's call (our BYE). A `Replaces` in the `Refer-To` (an attended transfer the
//! phone completes through us) goes on our INVITE. A target that fails leaves the
//! phone's call as it was.

use patchbay_conference::dialogs::{is_e164, DialogData};
use uuid::Uuid;

use super::*;

/// A transfer a phone asked for, by participant (one at a time).
pub(super) struct Transferring {
    /// The phone's call: where the NOTIFYs go (gone if it hung up meanwhile).
    call_id: String,
    /// The REFER's CSeq, the `id` of its subscription (RFC 3515 §2.4.6).
    refer_cseq: u32,
    /// The dialog placed for it, once the SIP side was asked to place it.
    dialog_id: Option<Uuid>,
}

impl Ua {
    /// A REFER: accepted in a call of ours only.
    pub(super) fn on_refer(&mut self, key: &TransactionKey, req: &Request) {
        if Self::to_tag(req).is_none() {
            let tag = random_token();
            let reply = Reply::new(403, "Forbidden (REFER outside a call)").tag(&tag);
            return self.respond(key, req, reply);
        }
        let Some(call_id) = self.in_dialog_request(key, req) else {
            return;
        };
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        let participant_id = call.owner.participant_id;
        let from = transfer_from(call);
        let tag = call.dialog.local_tag.clone();
        let refuse = |ua: &mut Ua, code: u16, reason: &str| {
            tracing::info!(%call_id, code, reason, "REFER refused");
            ua.respond(key, req, Reply::new(code, reason).tag(&tag));
        };
        if self.transfers.contains_key(&participant_id) {
            return refuse(self, 491, "Request Pending (a transfer is under way)");
        }
        let Some((to, replaces)) = refer_target(req) else {
            return refuse(self, 400, "Bad Request (Refer-To)");
        };
        // The trunk's calls cost the operator: a caller transfers only where allowed.
        if !target_allowed(&self.config.transfer_targets, &to) {
            return refuse(self, 403, "Forbidden (transfer target not allowed)");
        }
        if self.trunk.is_none() {
            return refuse(self, 403, "Forbidden (no trunk to transfer through)");
        }
        let data = DialogData {
            to,
            from,
            user_to_user: None,
            replaces,
        };
        if data.validate().is_err() {
            return refuse(self, 400, "Bad Request (Refer-To)");
        }
        let Some(peer) = self.call_peer(&call_id) else {
            return;
        };
        let headers = [("Contact", self.local_contact(&peer))];
        self.respond(
            key,
            req,
            Reply::new(202, "Accepted").tag(&tag).headers(&headers),
        );
        tracing::info!(%call_id, %participant_id, to = %data.to, attended = data.replaces.is_some(), "transfer asked (REFER): placing its dialog");
        self.transfers.insert(
            participant_id,
            Transferring {
                call_id,
                refer_cseq: dialog::cseq_number(req).unwrap_or(0),
                dialog_id: None,
            },
        );
        self.notify_transfer(participant_id, 100, "Trying");
        let conference = self.conference.clone();
        self.ask(async move {
            let e = conference
                .transfer_dialog(participant_id, data)
                .await
                .err()?;
            tracing::info!(%participant_id, error = %e, "transfer: its dialog could not be placed");
            Some(Input::TransferRefused(participant_id))
        });
    }

    /// The conference would not place a transfer's dialog.
    pub(super) fn on_transfer_refused(&mut self, participant_id: Uuid) {
        self.notify_transfer(participant_id, 503, "Service Unavailable");
    }

    /// `place` of a dialog: the one a transfer of its participant waits for, if any.
    pub(super) fn transfer_placed(&mut self, participant_id: Uuid, dialog_id: Uuid) {
        if let Some(t) = self.transfers.get_mut(&participant_id) {
            if t.dialog_id.is_none() {
                t.dialog_id = Some(dialog_id);
            }
        }
    }

    /// Whether `dialog_id` is a transfer's (its early media is not played: joining the
    /// session would end the phone's call before the target answered).
    pub(super) fn is_transfer(&self, participant_id: Uuid, dialog_id: Uuid) -> bool {
        self.transfers
            .get(&participant_id)
            .is_some_and(|t| t.dialog_id == Some(dialog_id))
    }

    /// A transfer's dialog reached `status` (180, a final status): tell the phone.
    pub(super) fn transfer_progress(
        &mut self,
        participant_id: Uuid,
        dialog_id: Uuid,
        status: u16,
        reason: &str,
    ) {
        if self.is_transfer(participant_id, dialog_id) {
            self.notify_transfer(participant_id, status, reason);
        }
    }

    /// NOTIFY the phone of a transfer's `status` (the subscription ends with a final one).
    fn notify_transfer(&mut self, participant_id: Uuid, status: u16, reason: &str) {
        let done = status >= 200;
        let Some((call_id, id)) = self
            .transfers
            .get(&participant_id)
            .map(|t| (t.call_id.clone(), t.refer_cseq))
        else {
            return;
        };
        if done {
            self.transfers.remove(&participant_id);
            tracing::info!(%call_id, %participant_id, status, "transfer ended");
        }
        let Some(peer) = self.call_peer(&call_id) else {
            return; // the phone hung up meanwhile: nobody to tell
        };
        let contact = self.local_contact(&peer);
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let cseq = call.dialog.next_cseq();
        let state = if done {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let body = format!("SIP/2.0 {status} {reason}\r\n");
        let notify = OutRequest {
            headers: vec![
                (hn("Event"), format!("refer;id={id}")),
                (hn("Subscription-State"), state.to_string()),
                (HeaderName::Contact, contact),
            ],
            body: Some(("message/sipfrag;version=2.0", Bytes::from(body))),
            ..OutRequest::in_dialog(Method::Notify, &call.dialog, cseq)
        };
        let target = call.dialog.remote_target.clone();
        if let Some(req) = self.build_request_to(&notify, target, &peer) {
            self.send_client(req, peer, clients::Owner::Nobody);
        }
    }

    /// Where our requests in a call go: its peer (a dialog's trunk connection opened
    /// again if it closed).
    pub(super) fn call_peer(&mut self, call_id: &str) -> Option<Peer> {
        let call = self.calls.get(call_id)?;
        let peer = call.peer;
        Some(if call.placed_for.is_some() {
            self.refresh_peer(peer)
        } else {
            peer
        })
    }
}

/// The caller the target is shown: the number the call came from (an inbound call),
/// or the one our dialog called from, when E.164; `UNKNOWN` otherwise.
fn transfer_from(call: &Call) -> String {
    let d = &call.dialog;
    let addr = if call.placed_for.is_some() {
        &d.local_addr
    } else {
        &d.remote_addr
    };
    let text = String::from_utf8_lossy(addr);
    let user = text
        .split_once("sip:")
        .or_else(|| text.split_once("sips:"))
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(user, _)| user.to_string())
        .unwrap_or_default();
    if is_e164(&user) {
        user
    } else {
        "UNKNOWN".into()
    }
}

/// Whether `uri`'s user part starts with one of `prefixes` (`*`: any target).
fn target_allowed(prefixes: &[String], uri: &str) -> bool {
    let rest = uri.split_once(':').map(|(_, r)| r).unwrap_or("");
    let user = rest.split_once('@').map(|(u, _)| u).unwrap_or("");
    prefixes
        .iter()
        .any(|p| p == "*" || (!user.is_empty() && user.starts_with(p.as_str())))
}

/// The one `Refer-To` of a REFER: its URI without headers, and its `Replaces` header
/// (percent-decoded), if it has one. None: missing, repeated, or not a SIP URI.
fn refer_target(req: &Request) -> Option<(String, Option<String>)> {
    let mut values = header_values(req, "Refer-To");
    let value = String::from_utf8_lossy(values.next()?).trim().to_string();
    if values.next().is_some() || value.contains(',') {
        return None;
    }
    let uri = match value.split_once('<') {
        Some((_, rest)) => rest.split_once('>')?.0,
        None => value.split(';').next()?,
    };
    let (uri, headers) = match uri.split_once('?') {
        Some((u, h)) => (u, Some(h)),
        None => (uri, None),
    };
    let lower = uri.to_ascii_lowercase();
    if !lower.starts_with("sip:") && !lower.starts_with("sips:") {
        return None;
    }
    let replaces = headers.and_then(|h| {
        h.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.eq_ignore_ascii_case("Replaces")
                .then(|| percent_decode(v))
                .flatten()
        })
    });
    Some((uri.to_string(), replaces))
}

/// `%XX` escapes decoded; None if one is broken or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refer(refer_to: &str) -> Request {
        let text = format!(
            "REFER sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr1\r\n\
             From: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:gw@127.0.0.1>;tag=b\r\nCall-ID: c1\r\n\
             CSeq: 2 REFER\r\nMax-Forwards: 70\r\n{refer_to}Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(Bytes::from(text), &Limits::datagram()) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn only_allowed_targets() {
        let allow = |list: &[&str], uri: &str| {
            let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            target_allowed(&list, uri)
        };
        assert!(!allow(&[], "sip:2001@pbx"));
        assert!(allow(&["2"], "sip:2001@pbx"));
        assert!(!allow(&["2"], "sip:+442001@pbx"));
        assert!(allow(&["+1", "2"], "sips:+15551234567@carrier"));
        assert!(!allow(&["+1"], "sip:pbx.example"));
        assert!(allow(&["*"], "sip:pbx.example"));
    }

    #[test]
    fn refer_to_forms() {
        let t = |h: &str| refer_target(&refer(h));
        assert_eq!(
            t("Refer-To: <sip:2001@pbx.example;transport=udp>\r\n"),
            Some(("sip:2001@pbx.example;transport=udp".into(), None))
        );
        assert_eq!(
            t("r: sip:+15551234567@10.0.0.1\r\n"),
            Some(("sip:+15551234567@10.0.0.1".into(), None))
        );
        assert_eq!(
            t("Refer-To: <sip:c@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2&Foo=x>\r\n"),
            Some(("sip:c@h".into(), Some("abc@h;to-tag=1;from-tag=2".into())))
        );
        assert_eq!(t(""), None);
        assert_eq!(t("Refer-To: <tel:+15551234567>\r\n"), None);
        assert_eq!(t("Refer-To: <http://x>\r\n"), None);
        assert_eq!(
            t("Refer-To: <sip:a@h>\r\nRefer-To: <sip:b@h>\r\n"),
            None,
            "two targets"
        );
        assert_eq!(
            t("Refer-To: <sip:a@h?Replaces=%4>\r\n"),
            Some(("sip:a@h".into(), None))
        );
    }
}
