//! Calls the phone places to us: the answer and its ACK, a merged INVITE, CANCEL
//! against the answer and against the inbound rule, Record-Route, glare.

use patchbay_conference::calls::CallError;
use patchbay_conference::media::session::HangupReason;

use super::*;

#[tokio::test]
async fn the_answer_repeats_until_its_ack_then_the_phone_hangs_up() {
    let (mut h, _, token) = Harness::with_member(|_| {}).await;
    h.datagram(PHONE, &invite("c1", "a1", &uui(&token)));
    let sent = h.take();
    assert_eq!(
        sent.iter().filter_map(Sent::status).collect::<Vec<_>>(),
        [100, 200]
    );
    let tag = sent[1].to_tag().expect("our tag");
    // RFC 3261 §13.3.1.4: again after T1, then doubling (0.5 s, 1.5 s, 3.5 s).
    h.advance(Duration::from_millis(499));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.statuses(), [200]);
    h.advance(Duration::from_millis(999));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.statuses(), [200]);
    h.datagram(PHONE, &in_dialog("ACK", "c1", &tag, 1, "a2"));
    h.advance(Duration::from_secs(60));
    assert!(h.take().is_empty(), "nothing after the ACK");
    assert!(h.ua.calls.contains("c1"));
    h.datagram(PHONE, &in_dialog("BYE", "c1", &tag, 2, "a3"));
    assert_eq!(h.statuses(), [200]);
    assert!(!h.ua.calls.contains("c1"));
}

#[tokio::test]
async fn an_answer_never_acknowledged_ends_the_call_with_bye_after_64_t1() {
    let (mut h, _, token) = Harness::with_member(|_| {}).await;
    h.datagram(PHONE, &invite("c1", "a1", &uui(&token)));
    h.take();
    h.advance(Duration::from_millis(31_900));
    assert!(h.take().iter().all(|s| s.status() == Some(200)));
    assert!(h.ua.calls.contains("c1"));
    h.advance(Duration::from_millis(100));
    let bye = h.request("BYE");
    assert_eq!(bye.to.addr, addr(PHONE));
    assert_eq!(
        bye.uri(),
        Some("sip:phone@127.0.0.1:5070"),
        "to the phone's Contact"
    );
    assert!(!h.ua.calls.contains("c1"));
}

#[tokio::test]
async fn a_merged_invite_is_refused_482_and_leaves_the_call_alone() {
    let (mut h, _, token) = Harness::with_member(|_| {}).await;
    answered(&mut h, "c1", &uui(&token)).await;
    // The same request forked back to us on another branch (RFC 3261 §8.2.2.2).
    h.datagram(PHONE, &invite("c1", "other", &uui(&token)));
    assert_eq!(h.statuses(), [482]);
    assert!(h.ua.calls.contains("c1"));
}

#[tokio::test]
async fn a_cancel_after_the_answer_changes_nothing() {
    let (mut h, _, token) = Harness::with_member(|_| {}).await;
    h.datagram(PHONE, &invite("c1", "c1-1", &uui(&token)));
    h.take();
    h.datagram(PHONE, &cancel("c1", "c1-1"));
    let codes = h.statuses();
    assert!(
        !codes.contains(&487),
        "the answered INVITE is not ended: {codes:?}"
    );
    assert!(h.ua.calls.contains("c1"));
}

/// The phone's CANCEL of its INVITE `call` (branch `branch`).
fn cancel(call: &str, branch: &str) -> String {
    format!(
        "CANCEL sip:conference@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK{branch};rport\r\n\
         From: <sip:+15550001@127.0.0.1>;tag=phone\r\nTo: <sip:+15550100@127.0.0.1>\r\n\
         Call-ID: {call}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Calls without a token go to the participant the static map names for +15550100.
async fn with_inbound_rule(h: &mut Harness) -> Uuid {
    let (p, _, _) = h.member().await;
    let numbers = BTreeMap::from([("+15550100".to_string(), p)]);
    let rules = InboundRules::new(numbers, None, h.conference.clone());
    h.ua.config.inbound = Some(InboundRoute(Arc::new(rules)));
    p
}

#[tokio::test]
async fn a_call_cancelled_while_the_inbound_rule_decides_never_becomes_a_call() {
    let mut h = Harness::new(|_| {}).await;
    with_inbound_rule(&mut h).await;
    h.datagram(PHONE, &invite("c1", "c1-1", ""));
    assert_eq!(h.statuses(), [100]);
    assert_eq!(h.asks.len(), 1, "the rule is asked");
    h.datagram(PHONE, &cancel("c1", "c1-1"));
    let mut codes = h.statuses();
    codes.sort();
    assert_eq!(codes, [200, 487]);
    h.answer_asks().await;
    assert!(h.take().is_empty(), "no answer after the 487");
    assert!(!h.ua.calls.contains("c1"));
    assert!(h.ua.placing.is_empty());
}

#[tokio::test]
async fn a_call_the_inbound_rule_names_is_answered_when_it_answers() {
    let mut h = Harness::new(|_| {}).await;
    let p = with_inbound_rule(&mut h).await;
    h.datagram(PHONE, &invite("c1", "c1-1", ""));
    assert_eq!(h.statuses(), [100]);
    h.answer_asks().await;
    assert_eq!(h.statuses(), [200]);
    assert_eq!(h.ua.calls.of_participant(p), ["c1"]);
}

#[tokio::test]
async fn our_bye_follows_the_record_route_set_back_through_the_proxy() {
    let (mut h, _, token) = Harness::with_member(|_| {}).await;
    // The phone's INVITE reaches us through a record-routing proxy.
    let proxy = "127.0.0.1:5090";
    let rr = format!("Record-Route: <sip:{proxy};lr>\r\n");
    let via = format!("Via: SIP/2.0/UDP {proxy};branch=z9hG4bKproxy\r\n");
    let text = invite("c1", "c1-1", &format!("{rr}{}", uui(&token)));
    h.datagram(proxy, &text.replacen("Via:", &format!("{via}Via:"), 1));
    let sent = h.take();
    let ok = sent.iter().find(|s| s.status() == Some(200)).expect("200");
    assert_eq!(ok.to.addr, addr(proxy));
    assert_eq!(ok.header("Record-Route"), Some("<sip:127.0.0.1:5090;lr>"));
    assert_eq!(ok.headers("Via").count(), 2, "both Vias echoed");
    let tag = ok.to_tag().expect("tag");
    h.datagram(proxy, &in_dialog("ACK", "c1", &tag, 1, "ack"));
    let leg = h.ua.calls.get("c1").expect("call").leg;
    h.input(Input::MediaEnded(
        leg,
        MediaEnd::Session(HangupReason::Removed),
    ));
    let bye = h.request("BYE");
    assert_eq!(bye.to.addr, addr(proxy), "through the proxy");
    assert_eq!(bye.header("Route"), Some("<sip:127.0.0.1:5090;lr>"));
    assert_eq!(
        bye.uri(),
        Some("sip:phone@127.0.0.1:5070"),
        "to the phone's Contact"
    );
    let from_tag = bye.header("From").and_then(|f| f.split("tag=").nth(1));
    assert_eq!(from_tag, Some(tag.as_str()));
}

/// A response of the phone to our request `req`: its headers echoed, the phone's tag.
fn reply(req: &Sent, status: &str, body: &str) -> String {
    let mut text = format!("SIP/2.0 {status}\r\n");
    for v in req.headers("Via") {
        text += &format!("Via: {v}\r\n");
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        text += &format!("{name}: {}\r\n", req.header(name).expect("header"));
    }
    text += &format!("Contact: <sip:phone@{PHONE}>\r\n");
    if !body.is_empty() {
        text += "Content-Type: application/sdp\r\n";
    }
    text + &format!("Content-Length: {}\r\n\r\n{body}", body.len())
}

fn hold(
    h: &mut Harness,
    participant_id: Uuid,
) -> tokio::sync::oneshot::Receiver<Result<(), CallError>> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    h.input(Input::Call(CallCommand::Hold {
        participant_id,
        hold: true,
        reply,
    }));
    answer
}

#[tokio::test]
async fn glare_the_phones_reinvite_during_ours_gets_491_and_ours_completes() {
    let (mut h, p, token) = Harness::with_member(|_| {}).await;
    let tag = answered(&mut h, "c1", &uui(&token)).await;
    h.take();
    let mut answer = hold(&mut h, p);
    let ours = h.request("INVITE");
    assert!(ours.body().contains("a=sendonly"), "{}", ours.body());
    // The phone's own re-INVITE crosses ours (RFC 3261 §14.2).
    let theirs = invite("c1", "theirs", "").replace(
        "To: <sip:+15550100@127.0.0.1>",
        &format!("To: <sip:+15550100@127.0.0.1>;tag={tag}"),
    );
    h.datagram(PHONE, &theirs.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE"));
    assert_eq!(h.statuses(), [491]);
    let held = OFFER.replace("a=sendrecv", "a=recvonly");
    h.datagram(PHONE, &reply(&ours, "200 OK", &held));
    let ack = h.request("ACK");
    let number = |s: &Sent| {
        s.header("CSeq")
            .and_then(|c| c.split(' ').next().map(str::to_string))
    };
    assert_eq!(number(&ack), number(&ours), "the ACK of our re-INVITE");
    assert!(matches!(answer.try_recv(), Ok(Ok(()))));
}

#[tokio::test]
async fn the_phones_491_to_our_reinvite_is_reported_busy() {
    let (mut h, p, token) = Harness::with_member(|_| {}).await;
    answered(&mut h, "c1", &uui(&token)).await;
    h.take();
    let mut answer = hold(&mut h, p);
    let ours = h.request("INVITE");
    h.datagram(PHONE, &reply(&ours, "491 Request Pending", ""));
    assert!(matches!(answer.try_recv(), Ok(Err(CallError::Busy))));
    assert!(h.ua.calls.contains("c1"), "the call goes on");
}
