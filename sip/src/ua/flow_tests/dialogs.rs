//! Dialogs we place through the trunk: early media then the answer, CANCEL crossing
//! the answer, a trunk that never answers, a trunk connection that is lost and opened
//! again.

use super::*;

fn place(h: &mut Harness, participant_id: Uuid) -> Uuid {
    let dialog_id = Uuid::new_v4();
    h.input(Input::Dial(DialCommand::Place {
        dialog_id,
        participant_id,
        data: DialogData {
            to: "+15550199".into(),
            from: "+15550001".into(),
            user_to_user: None,
            replaces: None,
        },
    }));
    dialog_id
}

/// The trunk's response to our request `req` (with its tag once past 100).
pub(super) fn from_trunk(req: &Sent, status: &str, body: &str) -> String {
    let mut text = format!("SIP/2.0 {status}\r\n");
    for v in req.headers("Via") {
        text += &format!("Via: {v}\r\n");
    }
    for name in ["From", "Call-ID", "CSeq"] {
        text += &format!("{name}: {}\r\n", req.header(name).expect("header"));
    }
    let to = req.header("To").expect("To");
    if status.starts_with("100") || to.contains("tag=") {
        text += &format!("To: {to}\r\n");
    } else {
        text += &format!("To: {to};tag=trunk\r\n");
    }
    text += &format!("Contact: <sip:far@{TRUNK}>\r\n");
    if !body.is_empty() {
        text += "Content-Type: application/sdp\r\n";
    }
    text + &format!("Content-Length: {}\r\n\r\n{body}", body.len())
}

fn call_of(h: &Harness, dialog_id: Uuid) -> Option<String> {
    h.ua.calls.of_dialog(dialog_id).map(str::to_string)
}

#[tokio::test]
async fn early_media_joins_before_the_answer_and_the_answer_is_acknowledged() {
    let (mut h, p, _) = Harness::with_member(|c| c.trunk = Some(trunk(SipTransport::Udp))).await;
    let dialog = place(&mut h, p);
    let invite = h.request("INVITE");
    assert_eq!(invite.to.addr, addr(TRUNK));
    assert!(invite
        .uri()
        .is_some_and(|u| u.starts_with("sip:+15550199@127.0.0.1")));
    assert!(invite.body().contains("m=audio"));
    h.datagram(TRUNK, &from_trunk(&invite, "100 Trying", ""));
    h.datagram(TRUNK, &from_trunk(&invite, "183 Session Progress", OFFER));
    let call = call_of(&h, dialog).expect("ringing");
    let ringing = h.ua.calls.take_ringing(&call).expect("ringing");
    assert!(ringing.early_media(), "the 183's media joined the session");
    h.ua.calls.put_back(ringing);
    h.datagram(TRUNK, &from_trunk(&invite, "200 OK", OFFER));
    let ack = h.request("ACK");
    assert_eq!(
        ack.uri(),
        Some("sip:far@127.0.0.1:5080"),
        "to the answer's Contact"
    );
    assert_eq!(ack.to_tag().as_deref(), Some("trunk"));
    assert!(h.ua.calls.contains(&call), "answered");
    // The 200 again (our ACK lost): acknowledged again, the call unchanged.
    h.datagram(TRUNK, &from_trunk(&invite, "200 OK", OFFER));
    h.request("ACK");
    assert!(h.ua.calls.contains(&call));
}

#[tokio::test]
async fn a_hangup_before_any_ringing_cancels_once_ringing_and_an_answer_crossing_it_gets_ack_and_bye(
) {
    let (mut h, p, _) = Harness::with_member(|c| c.trunk = Some(trunk(SipTransport::Udp))).await;
    let dialog = place(&mut h, p);
    let invite = h.request("INVITE");
    h.datagram(TRUNK, &from_trunk(&invite, "100 Trying", ""));
    h.input(Input::Dial(DialCommand::Hangup { dialog_id: dialog }));
    // RFC 3261 §9.1: no CANCEL before a provisional response beyond 100.
    assert!(h.take().iter().all(|s| s.method() != Some("CANCEL")));
    h.datagram(TRUNK, &from_trunk(&invite, "180 Ringing", ""));
    let cancel = h.request("CANCEL");
    assert_eq!(
        cancel.header("Via"),
        invite.header("Via"),
        "the INVITE's branch"
    );
    // The far end answered before our CANCEL reached it.
    h.datagram(TRUNK, &from_trunk(&invite, "200 OK", OFFER));
    let sent = h.take();
    let methods: Vec<&str> = sent.iter().filter_map(Sent::method).collect();
    assert_eq!(methods, ["ACK", "BYE"]);
    assert!(call_of(&h, dialog).is_none());
}

#[tokio::test]
async fn a_trunk_that_never_answers_fails_the_dialog_at_timer_b() {
    let (mut h, p, _) = Harness::with_member(|c| c.trunk = Some(trunk(SipTransport::Udp))).await;
    let dialog = place(&mut h, p);
    h.request("INVITE");
    // Retransmitted at 0.5, 1.5, 3.5 … s over UDP (timer A).
    h.advance(Duration::from_millis(500));
    h.request("INVITE");
    assert!(call_of(&h, dialog).is_some());
    h.advance(Duration::from_secs(32));
    assert!(call_of(&h, dialog).is_none(), "timer B ended it");
}

#[tokio::test]
async fn a_lost_trunk_connection_fails_its_invite_now_and_the_next_dialog_reconnects() {
    let (mut h, p, _) = Harness::with_member(|c| c.trunk = Some(trunk(SipTransport::Tcp))).await;
    let first = place(&mut h, p);
    assert_eq!(h.connects.len(), 1);
    let (id, ref hop, tls) = h.connects[0];
    assert_eq!((hop.addr, tls), (addr(TRUNK), false));
    let invite = h.request("INVITE");
    assert_eq!(invite.to.transport, Transport::Tcp(id));
    assert!(invite
        .header("Via")
        .is_some_and(|v| v.starts_with("SIP/2.0/TCP")));
    // The connection could not be opened: the INVITE fails now, not at timer B.
    h.input(Input::StreamClosed(id, Some("connect: refused".into())));
    assert!(call_of(&h, first).is_none());
    let second = place(&mut h, p);
    assert_eq!(h.connects.len(), 2, "a new connection");
    let again = h.connects[1].0;
    assert_ne!(again, id);
    assert_eq!(h.request("INVITE").to.transport, Transport::Tcp(again));
    assert!(call_of(&h, second).is_some());
}
