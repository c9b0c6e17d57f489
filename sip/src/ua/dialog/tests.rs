//! The dialog core with fake time: route sets, CSeq, glare, 2xx retransmission.

use super::*;
use sipx_sip::{parse_datagram, Limits, Message};

fn message(text: &str) -> Message {
    let text = text.replace('\n', "\r\n");
    parse_datagram(Bytes::from(text), &Limits::datagram()).expect("parses")
}

fn request(text: &str) -> Request {
    match message(text) {
        Message::Request(r) => r,
        _ => panic!("not a request"),
    }
}

fn response(text: &str) -> Response {
    match message(text) {
        Message::Response(r) => r,
        _ => panic!("not a response"),
    }
}

const INVITE: &str = "INVITE sip:gw@10.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKa
Record-Route: <sip:p1.example;lr>
Record-Route: <sip:p2.example;lr>,<sip:p3.example;lr>
From: <sip:alice@example>;tag=their
To: <sip:gw@10.0.0.1>
Call-ID: c1
CSeq: 10 INVITE
Contact: <sip:alice@10.0.0.9:5070>
Max-Forwards: 70
Content-Length: 0

";

fn in_dialog(method: &str, cseq: u32) -> Request {
    request(&format!(
        "{method} sip:gw@10.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK{cseq}{method}
From: <sip:alice@example>;tag=their
To: <sip:gw@10.0.0.1>;tag=ours
Call-ID: c1
CSeq: {cseq} {method}
Contact: <sip:alice@10.0.0.77:5099>
Max-Forwards: 70
Content-Length: 0

"
    ))
}

fn uas() -> Dialog {
    Dialog::as_uas(
        &request(INVITE),
        "ours",
        Bytes::from_static(b"<sip:gw@10.0.0.1>;tag=ours"),
        0,
    )
}

#[test]
fn uas_route_set_is_record_route_in_order_and_target_is_contact() {
    let d = uas();
    assert_eq!(d.role, Role::Uas);
    assert_eq!(
        d.route_set,
        vec![
            Bytes::from_static(b"<sip:p1.example;lr>"),
            Bytes::from_static(b"<sip:p2.example;lr>,<sip:p3.example;lr>")
        ]
    );
    assert_eq!(d.remote_target.to_string(), "sip:alice@10.0.0.9:5070");
    assert_eq!(&d.remote_addr[..], b"<sip:alice@example>;tag=their");
    assert!(d.is_ours(Some("ours")) && !d.is_ours(Some("x")) && !d.is_ours(None));
}

#[test]
fn uac_route_set_is_record_route_reversed() {
    let ok = response(
        "SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb
Record-Route: <sip:edge.carrier;lr>
Record-Route: <sip:core.carrier;lr>
From: <sip:gw@10.0.0.1>;tag=ours
To: <sip:+1555@carrier>;tag=theirs
Call-ID: c2
CSeq: 2 INVITE
Contact: <sip:ua@192.0.2.5>
Content-Length: 0

",
    );
    let target = Uri::parse(Bytes::from_static(b"sip:+1555@carrier")).unwrap();
    let mut d = Dialog::as_uac(
        "c2",
        "ours",
        Bytes::from_static(b"<sip:gw@10.0.0.1>;tag=ours"),
        2,
        target,
        &ok,
    );
    assert_eq!(
        d.route_set,
        vec![
            Bytes::from_static(b"<sip:core.carrier;lr>"),
            Bytes::from_static(b"<sip:edge.carrier;lr>")
        ]
    );
    assert_eq!(d.remote_target.to_string(), "sip:ua@192.0.2.5");
    assert_eq!(&d.remote_addr[..], b"<sip:+1555@carrier>;tag=theirs");
    // Our next request in the dialog follows the INVITE's CSeq.
    assert_eq!(d.next_cseq(), 3);
    assert_eq!(d.next_cseq(), 4);
}

#[test]
fn our_cseq_starts_at_one_as_uas_and_theirs_may_not_go_back() {
    let mut d = uas();
    assert_eq!(d.next_cseq(), 1);
    // The INVITE was 10: 11 is fine, 11 again fine (a new transaction may reuse it
    // only with another method, which the transaction layer tells apart), 9 is not.
    assert_eq!(d.check_request(&in_dialog("OPTIONS", 11)), Ok(()));
    let r = d.check_request(&in_dialog("BYE", 9)).unwrap_err();
    assert_eq!(r.code, 500);
    assert_eq!(d.check_request(&in_dialog("BYE", 12)), Ok(()));
}

#[test]
fn a_reinvite_while_our_offer_waits_for_its_answer_gets_491() {
    let mut d = uas();
    let now = Instant::now();
    // Our 2xx to an offerless INVITE carries our offer; the ACK brings the answer.
    d.answering(
        10,
        Bytes::from_static(b"200"),
        true,
        now,
        Duration::from_millis(500),
    );
    let r = d.check_request(&in_dialog("INVITE", 11)).unwrap_err();
    assert_eq!((r.code, r.reason), (491, "Request Pending"));
    // The refused request did not move the remote CSeq: a retry with the same is fine later.
    assert_eq!(d.on_ack(Some(10)), Ack::Confirmed { answer: true });
    let reinvite = in_dialog("INVITE", 11);
    assert_eq!(d.check_request(&reinvite), Ok(()));
    d.refresh_target(&reinvite);
    assert_eq!(d.remote_target.to_string(), "sip:alice@10.0.0.77:5099");
}

#[test]
fn our_reinvite_and_theirs_at_once_is_glare_491_and_one_offer_at_a_time() {
    let mut d = uas();
    let cseq = d.start_offer().expect("no exchange under way");
    assert_eq!(cseq, 1);
    // A second offer of ours waits for the first.
    assert_eq!(d.start_offer(), None);
    // Theirs crosses ours: 491, and their CSeq is not taken.
    let r = d.check_request(&in_dialog("INVITE", 11)).unwrap_err();
    assert_eq!((r.code, r.reason), (491, "Request Pending"));
    // Other requests are not held back.
    assert_eq!(d.check_request(&in_dialog("BYE", 11)), Ok(()));
    // A stale completion changes nothing; ours answered, theirs is fine again.
    d.offer_done(cseq + 7);
    assert!(d.check_request(&in_dialog("INVITE", 12)).is_err());
    d.offer_done(cseq);
    assert_eq!(d.check_request(&in_dialog("INVITE", 12)), Ok(()));
    // While our 2xx to theirs waits for its ACK, we do not offer.
    d.answering(
        12,
        Bytes::from_static(b"200"),
        false,
        Instant::now(),
        Duration::from_millis(500),
    );
    assert_eq!(d.start_offer(), None);
    assert_eq!(d.on_ack(Some(12)), Ack::Confirmed { answer: false });
    assert_eq!(d.start_offer(), Some(2));
}

#[test]
fn a_reinvite_before_the_ack_of_the_last_2xx_gets_500_with_retry_after() {
    let mut d = uas();
    d.answering(
        10,
        Bytes::from_static(b"200"),
        false,
        Instant::now(),
        Duration::from_millis(500),
    );
    let r = d.check_request(&in_dialog("INVITE", 11)).unwrap_err();
    assert_eq!((r.code, r.retry_after), (500, Some(1)));
    // Other requests are not held back (a BYE ends the call at once).
    assert_eq!(d.check_request(&in_dialog("BYE", 11)), Ok(()));
}

#[test]
fn the_2xx_is_sent_again_at_t1_doubling_to_t2_until_the_ack() {
    let (t1, t2) = (Duration::from_millis(500), Duration::from_secs(4));
    let mut d = uas();
    let start = Instant::now();
    d.answering(10, Bytes::from_static(b"200 OK"), false, start, t1);
    assert!(!d.confirmed());
    // Not due yet.
    assert_eq!(d.on_retransmit_timer(start, t2, false), Retransmit::Wait);
    let mut at = start;
    let mut gaps = Vec::new();
    while let Some(next) = d.retransmit_at() {
        gaps.push((next - at).as_millis());
        at = next;
        if d.on_retransmit_timer(at, t2, false) == Retransmit::Wait {
            break;
        }
        if gaps.len() == 5 {
            break;
        }
    }
    assert_eq!(gaps, vec![500, 1000, 2000, 4000, 4000]);
    // The ACK stops it; another ACK (a retransmission) is stray.
    assert_eq!(d.on_ack(Some(10)), Ack::Confirmed { answer: false });
    assert!(d.confirmed() && d.retransmit_at().is_none());
    assert_eq!(d.on_ack(Some(10)), Ack::Stray);
    assert_eq!(d.on_retransmit_timer(at, t2, false), Retransmit::Wait);
}

#[test]
fn no_ack_within_64_t1_ends_the_dialog_and_reliable_transports_do_not_resend() {
    let (t1, t2) = (Duration::from_millis(500), Duration::from_secs(4));
    let mut d = uas();
    let start = Instant::now();
    d.answering(10, Bytes::from_static(b"200 OK"), false, start, t1);
    assert_eq!(
        d.on_retransmit_timer(start + t1, t2, true),
        Retransmit::Wait
    );
    assert!(!d.confirmed(), "still waiting for the ACK on TCP");
    assert_eq!(d.on_ack(Some(9)), Ack::Stray, "another CSeq");
    assert_eq!(
        d.on_retransmit_timer(start + t1 * 64, t2, false),
        Retransmit::GiveUp
    );
    assert!(d.confirmed());
}

#[test]
fn a_replaces_names_the_dialog_by_our_tag_then_theirs() {
    let d = uas();
    // RFC 3891 §3: to-tag is compared with our tag, from-tag with the peer's.
    assert!(d.replaced_by("ours", "their"));
    assert!(!d.replaced_by("their", "ours"));
    assert!(!d.replaced_by("ours", "the"));
    assert!(!d.replaced_by("ours", ""));
    assert!(!d.replaced_by("", "their"));
}
