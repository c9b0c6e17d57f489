//! A SIP dialog (RFC 3261 §12) as a sans-IO state machine: its identity, route set
//! and remote target, both CSeq spaces, the offer/answer state that decides glare
//! (491), and the UAS's 2xx retransmission until the ACK (§13.3.1.4). No sockets and
//! no clock: callers pass `now`; the user agent turns what comes back into messages
//! and timers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sipx_sip::headers::Address;
use sipx_sip::{HeaderName, Method, Request, Response, Uri};

use super::message::{first_value, header_values};

/// Which side created the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// We answered its INVITE.
    Uas,
    /// We sent its INVITE (a dialog placed through the trunk).
    Uac,
}

/// Why an in-dialog request is refused, as a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u32>,
}

/// What the 2xx retransmission timer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Retransmit {
    /// Send these bytes again.
    Send(Bytes),
    /// Nothing now (not due, already acknowledged, or a reliable transport).
    Wait,
    /// 64·T1 without an ACK: the dialog is dead (§13.3.1.4), hang up.
    GiveUp,
}

/// What an ACK did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    /// It acknowledged our 2xx; `answer` when it must carry the answer to our offer.
    Confirmed { answer: bool },
    /// Not for a 2xx of ours in flight (a retransmission, or another CSeq).
    Stray,
}

/// The 2xx we answered an INVITE with, until its ACK.
#[derive(Debug, Clone)]
struct Pending2xx {
    cseq: u32,
    bytes: Bytes,
    /// It carries our offer: the ACK brings the answer.
    offer: bool,
    interval: Duration,
    next: Instant,
    give_up: Instant,
}

#[derive(Debug, Clone)]
pub(super) struct Dialog {
    pub role: Role,
    pub call_id: String,
    pub local_tag: String,
    /// Our address with our tag (the To of the INVITE we answered, the From of ours).
    pub local_addr: Bytes,
    /// Theirs, with their tag.
    pub remote_addr: Bytes,
    pub remote_target: Uri,
    /// Record-Route as the requests we send carry it in Route (first hop first).
    pub route_set: Vec<Bytes>,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    answer: Option<Pending2xx>,
    /// The CSeq of our re-INVITE whose offer waits for its answer.
    our_offer: Option<u32>,
}

/// The number of a request's CSeq.
pub(super) fn cseq_number(req: &Request) -> Option<u32> {
    first_value(req, "CSeq")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn contact_uri(headers: &sipx_sip::Headers) -> Option<Uri> {
    let h = headers.get(&HeaderName::Contact)?;
    Address::parse(h.raw_value(), "Contact").ok().map(|a| a.uri)
}

impl Dialog {
    /// The dialog our 2xx to `invite` creates (§12.1.1): the route set is its
    /// Record-Route in order, the remote target its Contact.
    ///
    /// Our own requests start after `first_cseq` (RFC 3261 §12.2.1.1 leaves the
    /// value to us; a random one keeps our CSeq space visibly apart from the caller's).
    pub fn as_uas(invite: &Request, local_tag: &str, local_addr: Bytes, first_cseq: u32) -> Dialog {
        Dialog {
            role: Role::Uas,
            call_id: first_value(invite, "Call-ID").unwrap_or_default(),
            local_tag: local_tag.to_string(),
            local_addr,
            remote_addr: invite
                .headers
                .get(&HeaderName::From)
                .map(|h| Bytes::copy_from_slice(h.raw_value()))
                .unwrap_or_default(),
            remote_target: contact_uri(&invite.headers).unwrap_or_else(|| invite.uri.clone()),
            route_set: header_values(invite, "Record-Route")
                .map(Bytes::copy_from_slice)
                .collect(),
            local_cseq: first_cseq,
            remote_cseq: cseq_number(invite),
            answer: None,
            our_offer: None,
        }
    }

    /// The dialog a 2xx to our INVITE creates (§12.1.2): the route set is its
    /// Record-Route reversed, the remote target its Contact (else `target`, the
    /// Request-URI we used).
    pub fn as_uac(
        call_id: &str,
        local_tag: &str,
        local_addr: Bytes,
        invite_cseq: u32,
        target: Uri,
        ok: &Response,
    ) -> Dialog {
        let mut route_set: Vec<Bytes> = ok
            .headers
            .iter()
            .filter(|h| h.name().canonical().eq_ignore_ascii_case(b"Record-Route"))
            .map(|h| Bytes::copy_from_slice(h.raw_value()))
            .collect();
        route_set.reverse();
        Dialog {
            role: Role::Uac,
            call_id: call_id.to_string(),
            local_tag: local_tag.to_string(),
            local_addr,
            remote_addr: ok
                .headers
                .get(&HeaderName::To)
                .map(|h| Bytes::copy_from_slice(h.raw_value()))
                .unwrap_or_default(),
            remote_target: contact_uri(&ok.headers).unwrap_or(target),
            route_set,
            local_cseq: invite_cseq,
            remote_cseq: None,
            answer: None,
            our_offer: None,
        }
    }

    /// Whether a request's To tag names this dialog.
    pub fn is_ours(&self, to_tag: Option<&str>) -> bool {
        to_tag == Some(self.local_tag.as_str())
    }

    /// Whether a `Replaces` names this dialog (RFC 3891 §3: its to-tag is our tag, its
    /// from-tag the peer's).
    pub fn replaced_by(&self, to_tag: &str, from_tag: &str) -> bool {
        let text = String::from_utf8_lossy(&self.remote_addr);
        let lower = text.to_ascii_lowercase();
        let remote_tag = lower
            .rfind(";tag=")
            .map(|i| &text[i + 5..])
            .map(|t| t.split([';', '>', ' ']).next().unwrap_or("").trim());
        self.local_tag == to_tag && remote_tag == Some(from_tag)
    }

    /// The CSeq of our next request in the dialog.
    pub fn next_cseq(&mut self) -> u32 {
        self.local_cseq = self.local_cseq.wrapping_add(1);
        self.local_cseq
    }

    /// Check a request of the peer's in the dialog (not ACK or CANCEL, which take
    /// their INVITE's CSeq): its CSeq must not go back (§12.2.2: 500), and an INVITE
    /// may not start while our offer waits for its answer (RFC 3261 §14.2 and RFC
    /// 6337 §3.1: 491) or while our 2xx to the previous INVITE is unacknowledged
    /// (500 with Retry-After). An accepted request moves the remote CSeq.
    pub fn check_request(&mut self, req: &Request) -> Result<(), Refusal> {
        let Some(cseq) = cseq_number(req) else {
            return Err(Refusal {
                code: 400,
                reason: "Bad Request (CSeq)",
                retry_after: None,
            });
        };
        if self.remote_cseq.is_some_and(|r| cseq < r) {
            return Err(Refusal {
                code: 500,
                reason: "Server Internal Error (CSeq out of order)",
                retry_after: None,
            });
        }
        if req.method == Method::Invite {
            if self.our_offer.is_some() {
                // Glare: both sides offered at once (RFC 3261 §14.2).
                return Err(Refusal {
                    code: 491,
                    reason: "Request Pending",
                    retry_after: None,
                });
            }
            if let Some(a) = &self.answer {
                return Err(if a.offer {
                    Refusal {
                        code: 491,
                        reason: "Request Pending",
                        retry_after: None,
                    }
                } else {
                    Refusal {
                        code: 500,
                        reason: "Server Internal Error (previous INVITE not acknowledged)",
                        retry_after: Some(1),
                    }
                });
            }
        }
        self.remote_cseq = Some(cseq);
        Ok(())
    }

    /// Start a re-INVITE of ours: its CSeq, or None while an offer-answer exchange is
    /// under way (ours, or the peer's INVITE whose 2xx waits for its ACK).
    pub fn start_offer(&mut self) -> Option<u32> {
        if self.our_offer.is_some() || self.answer.is_some() {
            return None;
        }
        let cseq = self.next_cseq();
        self.our_offer = Some(cseq);
        Some(cseq)
    }

    /// Our re-INVITE of `cseq` got its final answer (or none).
    pub fn offer_done(&mut self, cseq: u32) {
        if self.our_offer == Some(cseq) {
            self.our_offer = None;
        }
    }

    /// A target refresh (a re-INVITE we accept): its Contact is the new remote target.
    pub fn refresh_target(&mut self, req: &Request) {
        if let Some(uri) = contact_uri(&req.headers) {
            self.remote_target = uri;
        }
    }

    /// We answered the INVITE of `cseq` with the 2xx `bytes` at `now`; `offer` when it
    /// carries our offer (the ACK brings the answer). Retransmitted every T1, doubling
    /// up to T2, until the ACK or 64·T1.
    pub fn answering(&mut self, cseq: u32, bytes: Bytes, offer: bool, now: Instant, t1: Duration) {
        self.answer = Some(Pending2xx {
            cseq,
            bytes,
            offer,
            interval: t1,
            next: now + t1,
            give_up: now + t1 * 64,
        });
    }

    /// An ACK of the peer's, by its CSeq number.
    pub fn on_ack(&mut self, cseq: Option<u32>) -> Ack {
        match &self.answer {
            Some(a) if Some(a.cseq) == cseq => {
                let answer = a.offer;
                self.answer = None;
                Ack::Confirmed { answer }
            }
            _ => Ack::Stray,
        }
    }

    /// Whether no 2xx of ours waits for its ACK.
    pub fn confirmed(&self) -> bool {
        self.answer.is_none()
    }

    /// When the retransmission timer should next fire.
    pub fn retransmit_at(&self) -> Option<Instant> {
        self.answer.as_ref().map(|a| a.next.min(a.give_up))
    }

    /// The retransmission timer fired at `now`. On a reliable transport nothing is
    /// sent again (§13.3.1.4), but the ACK is still awaited.
    pub fn on_retransmit_timer(
        &mut self,
        now: Instant,
        t2: Duration,
        reliable: bool,
    ) -> Retransmit {
        let Some(a) = &mut self.answer else {
            return Retransmit::Wait;
        };
        if now >= a.give_up {
            self.answer = None;
            return Retransmit::GiveUp;
        }
        if now < a.next {
            return Retransmit::Wait;
        }
        a.interval = (a.interval * 2).min(t2);
        a.next = now + a.interval;
        if reliable {
            Retransmit::Wait
        } else {
            Retransmit::Send(a.bytes.clone())
        }
    }
}

#[cfg(test)]
mod tests;
