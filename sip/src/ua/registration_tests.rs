//! The registration's flows on fake time.

use super::*;

const URI: &str = "sip:127.0.0.1:5090";

fn cnonce() -> String {
    "c0ffee".into()
}

fn reg(now: Instant, creds: bool) -> Registration {
    Registration::new(
        "sip:1000@pbx.example".into(),
        URI.into(),
        creds.then(|| Credentials::new("1000", "secret")),
        Duration::from_secs(600),
        now,
        cnonce,
    )
}

fn challenge(nonce: &str, stale: bool) -> Challenge {
    let v = format!("Digest realm=\"pbx\", nonce=\"{nonce}\", qop=\"auth\", stale={stale}");
    Challenge::parse(v.as_bytes(), false).expect("challenge")
}

fn answered(status: u16) -> Outcome {
    Outcome::Answered {
        status,
        challenges: Vec::new(),
        granted: None,
        min_expires: None,
    }
}

fn ok(granted: u64) -> Outcome {
    Outcome::Answered {
        status: 200,
        challenges: Vec::new(),
        granted: Some(Duration::from_secs(granted)),
        min_expires: None,
    }
}

fn challenged(nonce: &str, stale: bool) -> Outcome {
    Outcome::Answered {
        status: 401,
        challenges: vec![challenge(nonce, stale)],
        granted: None,
        min_expires: None,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn digest_then_registered_then_refreshed_before_expiry_with_the_next_cseq() {
    let t0 = Instant::now();
    let mut r = reg(t0, true);
    assert_eq!(r.poll_timeout(), Some(t0));
    let first = r.handle_timeout(t0).expect("REGISTER at once");
    assert_eq!(
        (first.cseq, first.expires, first.authorization),
        (1, 600, None)
    );
    // Nothing more while it is in flight.
    assert_eq!(r.handle_timeout(t0 + secs(1)), None);
    let second = r
        .on_outcome(t0, challenged("n1", false))
        .expect("answer the challenge at once");
    assert_eq!(second.cseq, 2);
    let (name, value) = second.authorization.expect("Authorization");
    assert_eq!(name, HeaderName::Authorization);
    for part in [
        "username=\"1000\"",
        "realm=\"pbx\"",
        "nonce=\"n1\"",
        &format!("uri=\"{URI}\""),
        "nc=00000001",
        "cnonce=\"c0ffee\"",
    ] {
        assert!(value.contains(part), "{part} in {value}");
    }
    assert!(!r.is_registered());
    assert_eq!(r.on_outcome(t0, ok(300)), None);
    assert_eq!(
        r.status(),
        &Status::Registered {
            until: t0 + secs(300)
        }
    );
    // Granted 300 s: refreshed 60 s before it ends.
    assert_eq!(r.poll_timeout(), Some(t0 + secs(240)));
    assert_eq!(r.handle_timeout(t0 + secs(239)), None);
    let refresh = r.handle_timeout(t0 + secs(240)).expect("refresh");
    assert_eq!(refresh.cseq, 3);
    // The same nonce again, the next nonce count.
    let (_, value) = refresh.authorization.expect("pre-emptive Authorization");
    assert!(value.contains("nc=00000002"), "{value}");
    assert_eq!(r.on_outcome(t0 + secs(240), ok(300)), None);
    assert!(r.is_registered());
    // A short lifetime: refreshed at half of it.
    let refresh = r.handle_timeout(t0 + secs(480)).expect("refresh");
    assert_eq!(refresh.cseq, 4);
    r.on_outcome(t0 + secs(480), ok(10));
    assert_eq!(r.poll_timeout(), Some(t0 + secs(485)));
}

#[test]
fn wrong_credentials_back_off_and_a_stale_nonce_is_answered_again() {
    let t0 = Instant::now();
    let mut r = reg(t0, true);
    r.handle_timeout(t0);
    let again = r.on_outcome(t0, challenged("n1", false)).expect("answer");
    assert!(again.authorization.is_some());
    // The same nonce refused again, not stale: the password is wrong.
    assert_eq!(r.on_outcome(t0, challenged("n1", false)), None);
    assert!(
        matches!(r.status(), Status::Failing { why, retry } if why.contains("credentials refused") && *retry == t0 + secs(1))
    );
    // The retry starts a fresh exchange (no stale Authorization).
    let retry = r.handle_timeout(t0 + secs(1)).expect("retry");
    assert_eq!(retry.authorization, None);
    r.on_outcome(t0 + secs(1), challenged("n2", false));
    // A stale nonce: the password was good, answer the new nonce.
    let stale = r
        .on_outcome(t0 + secs(1), challenged("n2", true))
        .expect("stale: answer again");
    assert!(stale.authorization.is_some());
    r.on_outcome(t0 + secs(1), ok(600));
    assert!(r.is_registered());
}

#[test]
fn failures_back_off_doubling_to_a_cap_and_reset_on_success() {
    let t0 = Instant::now();
    let mut r = reg(t0, false);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..10 {
        r.handle_timeout(now).expect("attempt");
        r.on_outcome(now, Outcome::NoAnswer);
        let next = r.poll_timeout().expect("retry scheduled");
        waits.push((next - now).as_secs());
        now = next;
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
    assert!(matches!(r.status(), Status::Failing { why, .. } if why.contains("no answer")));
    r.handle_timeout(now).expect("attempt");
    r.on_outcome(now, ok(600));
    assert!(r.is_registered());
    // After a success the back-off starts over.
    let refresh_at = r.poll_timeout().expect("refresh");
    r.handle_timeout(refresh_at).expect("refresh");
    r.on_outcome(refresh_at, answered(503));
    assert_eq!(r.poll_timeout(), Some(refresh_at + secs(1)));
    // A failed refresh leaves the binding until it expires, then it is gone.
    assert!(r.is_registered());
    let until = now + secs(600);
    let mut t = refresh_at + secs(1);
    while t < until {
        if r.handle_timeout(t).is_some() {
            r.on_outcome(t, Outcome::NoAnswer);
        }
        t = r.poll_timeout().expect("timer").min(until);
    }
    r.handle_timeout(until);
    assert!(!r.is_registered());
}

#[test]
fn interval_too_brief_raises_expires_once() {
    let t0 = Instant::now();
    let mut r = reg(t0, false);
    r.handle_timeout(t0);
    let brief = |min: u64| Outcome::Answered {
        status: 423,
        challenges: Vec::new(),
        granted: None,
        min_expires: Some(secs(min)),
    };
    let again = r.on_outcome(t0, brief(1800)).expect("again, longer");
    assert_eq!((again.cseq, again.expires), (2, 1800));
    // A second 423 for the raised request: a failure, not a loop.
    assert_eq!(r.on_outcome(t0, brief(3600)), None);
    assert!(matches!(r.status(), Status::Failing { .. }));
    // Min-Expires beyond a day is not followed.
    let mut r = reg(t0, false);
    r.handle_timeout(t0);
    assert_eq!(r.on_outcome(t0, brief(200_000)), None);
}

#[test]
fn a_challenge_without_credentials_or_digest_fails() {
    let t0 = Instant::now();
    let mut r = reg(t0, false);
    r.handle_timeout(t0);
    assert_eq!(r.on_outcome(t0, challenged("n", false)), None);
    assert!(
        matches!(r.status(), Status::Failing { why, .. } if why.contains("credentials needed"))
    );
    let mut r = reg(t0, true);
    r.handle_timeout(t0);
    assert_eq!(r.on_outcome(t0, answered(401)), None);
    assert!(matches!(r.status(), Status::Failing { .. }));
    // A 2xx that keeps no binding is no registration.
    let mut r = reg(t0, false);
    r.handle_timeout(t0);
    r.on_outcome(t0, ok(0));
    assert!(!r.is_registered());
}

#[test]
fn unregister_removes_the_binding_and_stops() {
    let t0 = Instant::now();
    let mut r = reg(t0, false);
    // Not registered: nothing to remove.
    assert_eq!(r.unregister(), None);
    let mut r = reg(t0, false);
    r.handle_timeout(t0);
    r.on_outcome(t0, ok(600));
    let bye = r.unregister().expect("Expires: 0");
    assert_eq!((bye.cseq, bye.expires), (2, 0));
    assert_eq!(r.on_outcome(t0, ok(0)), None);
    assert_eq!(r.status(), &Status::Stopped);
    assert_eq!(r.poll_timeout(), None);
    // An answer arriving for nothing in flight changes nothing.
    assert_eq!(r.on_outcome(t0, ok(600)), None);
    assert_eq!(r.status(), &Status::Stopped);
}

#[test]
fn a_registrars_huge_lifetime_is_taken_as_a_day_at_most() {
    let t0 = Instant::now();
    let mut r = reg(t0, false);
    r.handle_timeout(t0);
    assert_eq!(r.on_outcome(t0, ok(u64::MAX)), None);
    assert_eq!(
        r.status(),
        &Status::Registered {
            until: t0 + secs(86_400)
        }
    );
    assert_eq!(r.poll_timeout(), Some(t0 + secs(86_400 - 60)));
}
