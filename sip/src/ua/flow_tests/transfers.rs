//! A phone's blind transfer (REFER, RFC 3515): the target called through the trunk for
//! the phone's participant, progress in NOTIFYs, the participant handed to the target.

use super::dialogs::from_trunk;
use super::*;

/// The phone's REFER in call `call` to `target`.
fn refer(call: &str, tag: &str, cseq: u32, target: &str) -> String {
    in_dialog("REFER", call, tag, cseq, &format!("refer{cseq}")).replace(
        "Content-Length: 0",
        &format!("Refer-To: <{target}>\r\nContact: <sip:phone@{PHONE}>\r\nContent-Length: 0"),
    )
}

fn transfers_allowed(c: &mut SipConfig) {
    c.trunk = Some(trunk(SipTransport::Udp));
    c.transfer_targets = vec!["+1555".into()];
}

/// The sipfrag status line of a NOTIFY.
fn frag(notify: &Sent) -> &str {
    notify.body().lines().next().unwrap_or("")
}

#[tokio::test]
async fn a_blind_transfer_calls_the_target_reports_progress_and_hands_the_participant_over() {
    let (mut h, p, token) = Harness::with_member(transfers_allowed).await;
    let tag = answered(&mut h, "c1", &uui(&token)).await;
    h.take();
    h.datagram(PHONE, &refer("c1", &tag, 2, "sip:+15550199@127.0.0.1"));
    let sent = h.take();
    assert_eq!(sent[0].status(), Some(202));
    let trying = &sent[1];
    assert_eq!(trying.method(), Some("NOTIFY"));
    assert_eq!(trying.header("Event"), Some("refer;id=2"));
    assert_eq!(frag(trying), "SIP/2.0 100 Trying");
    // The conference places the target's dialog for the participant.
    h.answer_asks().await;
    h.dial();
    let invite = h.request("INVITE");
    assert_eq!(invite.to.addr, addr(TRUNK));
    assert!(invite
        .uri()
        .is_some_and(|u| u.starts_with("sip:+15550199@")));
    h.datagram(TRUNK, &from_trunk(&invite, "180 Ringing", OFFER));
    assert_eq!(frag(&h.request("NOTIFY")), "SIP/2.0 180 Ringing");
    let target = invite.header("Call-ID").expect("Call-ID").to_string();
    assert!(
        !h.ua.calls.take_ringing(&target).is_some_and(|o| {
            let early = o.early_media();
            h.ua.calls.put_back(o);
            early
        }),
        "a transfer target's early media is not played"
    );
    h.datagram(TRUNK, &from_trunk(&invite, "200 OK", OFFER));
    let sent = h.take();
    let notify = find(&sent, "NOTIFY");
    assert_eq!(frag(notify), "SIP/2.0 200 OK");
    assert!(notify
        .header("Subscription-State")
        .is_some_and(|s| s.starts_with("terminated")));
    let ack = find(&sent, "ACK");
    assert_eq!(ack.to.addr, addr(TRUNK));
    // The target's leg took the participant's place in its session, which ends the
    // phone's leg.
    h.next_media_end().await;
    let bye = h.request("BYE");
    assert_eq!(bye.to.addr, addr(PHONE));
    assert_eq!(bye.header("Call-ID"), Some("c1"));
    assert_eq!(h.ua.calls.placed_for_participant(p), Some(target));
    assert!(
        h.ua.calls.of_participant(p).is_empty(),
        "the phone's call is over"
    );
}

#[tokio::test]
async fn a_failing_target_leaves_the_phones_call() {
    let (mut h, p, token) = Harness::with_member(transfers_allowed).await;
    let tag = answered(&mut h, "c1", &uui(&token)).await;
    h.datagram(PHONE, &refer("c1", &tag, 2, "sip:+15550199@127.0.0.1"));
    h.answer_asks().await;
    h.dial();
    let invite = h.request("INVITE");
    h.datagram(TRUNK, &from_trunk(&invite, "486 Busy Here", ""));
    let sent = h.take();
    let notify = find(&sent, "NOTIFY");
    assert_eq!(frag(notify), "SIP/2.0 486 Busy Here");
    assert!(sent.iter().all(|s| s.method() != Some("BYE")));
    assert_eq!(h.ua.calls.of_participant(p), ["c1"]);
    // The phone may try again.
    h.datagram(PHONE, &refer("c1", &tag, 3, "sip:+15550198@127.0.0.1"));
    assert_eq!(h.take()[0].status(), Some(202));
}

#[tokio::test]
async fn a_target_the_operator_did_not_allow_is_refused_403() {
    let (mut h, _, token) = Harness::with_member(transfers_allowed).await;
    let tag = answered(&mut h, "c1", &uui(&token)).await;
    h.datagram(PHONE, &refer("c1", &tag, 2, "sip:+4420000000@127.0.0.1"));
    assert_eq!(h.statuses(), [403]);
    assert!(h.asks.is_empty(), "nothing placed");
}

/// RTP ports that are all taken.
struct NoPorts;

impl LegPorts for NoPorts {
    fn open(&mut self, _: LegId) -> Result<RtpLeg, String> {
        Err("no RTP port: all taken".into())
    }
}

#[tokio::test]
async fn a_transfer_whose_dialog_cannot_be_placed_ends_with_503_and_the_phone_may_ask_again() {
    let (mut h, p, token) = Harness::with_member(transfers_allowed).await;
    let tag = answered(&mut h, "c1", &uui(&token)).await;
    h.datagram(PHONE, &refer("c1", &tag, 2, "sip:+15550199@127.0.0.1"));
    assert_eq!(h.take()[0].status(), Some(202));
    let ports = std::mem::replace(&mut h.ua.legs, Box::new(NoPorts));
    h.answer_asks().await;
    h.dial();
    let sent = h.take();
    assert!(sent.iter().all(|s| s.method() != Some("INVITE")));
    let notify = find(&sent, "NOTIFY");
    assert_eq!(frag(notify), "SIP/2.0 503 Service Unavailable");
    assert!(notify
        .header("Subscription-State")
        .is_some_and(|s| s.starts_with("terminated")));
    assert_eq!(h.ua.calls.of_participant(p), ["c1"]);
    h.ua.legs = ports;
    h.datagram(PHONE, &refer("c1", &tag, 3, "sip:+15550199@127.0.0.1"));
    assert_eq!(
        h.take()[0].status(),
        Some(202),
        "not 491: the first one is over"
    );
}
