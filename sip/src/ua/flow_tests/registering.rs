//! Our registration with a PBX: the digest challenge answered, the refresh before the
//! binding expires.

use super::dialogs::from_trunk;
use super::*;

#[tokio::test]
async fn a_registration_answers_its_challenge_and_is_refreshed_before_it_expires() {
    let mut h = Harness::new(|c| {
        c.registrations = vec![SipRegistration {
            registrar: trunk(SipTransport::Udp).hop,
            aor: "sip:patchbay@127.0.0.1".into(),
            user: Some("patchbay".into()),
            password: Some("secret".into()),
            expires: Duration::from_secs(300),
        }]
    })
    .await;
    let first = h.request("REGISTER");
    assert_eq!(first.to.addr, addr(TRUNK));
    assert_eq!(first.header("Expires"), Some("300"));
    let challenge = from_trunk(&first, "401 Unauthorized", "").replace(
        "Content-Length",
        "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"n1\", algorithm=MD5\r\nContent-Length",
    );
    h.datagram(TRUNK, &challenge);
    let again = h.request("REGISTER");
    let auth = again.header("Authorization").expect("credentials");
    assert!(auth.contains("username=\"patchbay\"") && auth.contains("nonce=\"n1\""));
    h.datagram(
        TRUNK,
        &from_trunk(&again, "200 OK", "").replace(
            "Content-Length",
            "Contact: <sip:patchbay@127.0.0.1:5060>;expires=300\r\nContent-Length",
        ),
    );
    assert_eq!(h.ua.metrics.sip_registered.get(), 1);
    // Refreshed REFRESH_MARGIN before the binding expires, not earlier.
    let refresh = Duration::from_secs(300) - super::registration::REFRESH_MARGIN;
    h.advance(refresh - Duration::from_millis(1));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(1));
    let refresh = h.request("REGISTER");
    assert_ne!(
        refresh.header("CSeq"),
        again.header("CSeq"),
        "a new request"
    );
    assert_eq!(
        refresh.header("Call-ID"),
        again.header("Call-ID"),
        "the same registration"
    );
}
