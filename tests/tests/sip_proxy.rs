//! Behind a record-routing proxy (Kamailio's `record_route()`, carriers' SBCs): what
//! the gateway's answers and requests carry, seen on the wire with a raw SIP client;
//! and the dialog's rules (glare, CSeq order) on the wire.

use patchbay_tests::rawsip::RawSip;
use patchbay_tests::Gateway;
use reqwest::Method;

/// RFC 3261 §12.1.1 / §12.2.1.1: the 200 OK copies every Record-Route of the INVITE in
/// order, and our own BYE goes to the first route with the route set as Route headers
/// (loose routing) and the caller's Contact as its Request-URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_route_is_copied_and_our_bye_follows_the_route_set() {
    let g = Gateway::start().await;
    let api = g.api();
    let (_, p, token) = api.audio_member().await;
    // The "proxy" is this raw client itself: routes name its own address.
    let sip = RawSip::new(&g);
    let port = sip.port();
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let media_port = media.local_addr().unwrap().port();
    let rr = format!(
        "Record-Route: <sip:127.0.0.1:{port};lr;ftag=raw1>\r\nRecord-Route: <sip:10.9.8.7;lr>,<sip:10.9.8.6;lr>\r\n"
    );
    sip.send(&sip.invite_with("rr-1", "rr1", &token, media_port, &rr));
    let ok = sip.final_response();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let routes: Vec<&str> = ok
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
        .collect();
    assert_eq!(
        routes,
        [
            format!("Record-Route: <sip:127.0.0.1:{port};lr;ftag=raw1>").as_str(),
            "Record-Route: <sip:10.9.8.7;lr>,<sip:10.9.8.6;lr>"
        ],
        "{ok}"
    );
    let to_tag = RawSip::to_tag(&ok);
    sip.send(&sip.in_dialog("ACK", 1, "rr-1", &to_tag, "rr1ack"));
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // Deleting the participant hangs up: the BYE comes to the first route (us).
    let r = api
        .call(Method::DELETE, &format!("/participants/{p}"), None)
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let bye = sip.request("BYE");
    assert!(
        bye.starts_with(&format!("BYE sip:raw@127.0.0.1:{port} SIP/2.0")),
        "Request-URI is the caller's Contact: {bye}"
    );
    let route_lines: Vec<&str> = bye
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("route:"))
        .collect();
    let joined = route_lines.join(",");
    let first = joined
        .find(&format!("127.0.0.1:{port}"))
        .expect("first route");
    let second = joined.find("10.9.8.7").expect("second route");
    let third = joined.find("10.9.8.6").expect("third route");
    assert!(first < second && second < third, "route order: {bye}");
}

/// The dialog's rules on the wire (RFC 3261 §12.2.2, §14.2; RFC 6337 §3.1): a re-INVITE
/// while our offer waits for its answer gets 491 and changes nothing; the ACK's answer
/// completes it; a request whose CSeq goes back gets 500; the call carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glare_gets_491_and_a_cseq_going_back_gets_500() {
    let g = Gateway::start().await;
    let (_, _, token) = g.api().audio_member().await;
    let sip = RawSip::new(&g);
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let media_port = media.local_addr().unwrap().port();
    sip.send(&sip.invite("gl-1", "gl1", &token, media_port));
    let ok = sip.final_response();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let tag = RawSip::to_tag(&ok);
    sip.send(&sip.in_dialog("ACK", 1, "gl-1", &tag, "gl1ack"));
    g.wait_metric("patchbay_sip_calls_active", 1.0).await;

    // An offerless re-INVITE: our 200 carries an offer, answered in the ACK.
    sip.send(&sip.in_dialog("INVITE", 2, "gl-1", &tag, "gl2"));
    let offer = sip.final_response();
    assert!(
        offer.starts_with("SIP/2.0 200") && offer.contains("m=audio"),
        "{offer}"
    );
    // Before that ACK, a re-INVITE of theirs with a new offer: glare.
    sip.send(&sip.in_dialog("INVITE", 3, "gl-1", &tag, "gl3"));
    let glare = sip.final_response();
    assert!(glare.starts_with("SIP/2.0 491"), "{glare}");
    sip.send(&sip.in_dialog("ACK", 3, "gl-1", &tag, "gl3ack"));
    // The ACK of the 200 brings the answer.
    let answer = format!(
        "v=0\r\no=raw 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    let ack = sip.in_dialog("ACK", 2, "gl-1", &tag, "gl2ack").replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        ),
    );
    sip.send(&ack);
    // A BYE whose CSeq goes back (1 < 2) is refused; the call is still up.
    sip.send(&sip.in_dialog("BYE", 1, "gl-1", &tag, "gl4"));
    let back = sip.final_response();
    assert!(back.starts_with("SIP/2.0 500"), "{back}");
    assert_eq!(g.metric("patchbay_sip_calls_active").await, 1.0);
    sip.send(&sip.in_dialog("BYE", 4, "gl-1", &tag, "gl5"));
    let bye = sip.final_response();
    assert!(bye.starts_with("SIP/2.0 200"), "{bye}");
    g.wait_metric("patchbay_sip_calls_active", 0.0).await;
    assert!(!g.log().contains("no usable SDP answer"), "{}", g.log());
}
