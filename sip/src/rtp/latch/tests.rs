use super::*;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const MS: u64 = 1_000;

/// `n` in-sequence packets from `from`, 20 ms apart from `t`; the verdicts.
fn stream(l: &mut Latch, from: &str, ssrc: u32, seq: u16, n: u16, t: u64) -> Vec<Verdict> {
    (0..n)
        .map(|i| l.on_packet(a(from), ssrc, seq.wrapping_add(i), t + i as u64 * 20 * MS))
        .collect()
}

#[test]
fn private_addresses() {
    for p in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.1.1",
    ] {
        assert!(is_private(ip(p)), "{p}");
    }
    for p in ["fd00::1", "fe80::1", "0.0.0.0", "::"] {
        assert!(is_private(ip(p)), "{p}");
    }
    for p in ["8.8.8.8", "127.0.0.1", "100.128.0.1", "2001:db8::1", "::1"] {
        assert!(!is_private(ip(p)), "{p}");
    }
}

#[test]
fn strict_accepts_only_the_sdp_ip_and_sends_only_to_the_sdp_address() {
    let mut l = Latch::default();
    l.configure(Some(a("203.0.113.5:4000")), Some(ip("203.0.113.5")), false);
    assert_eq!(l.remote(), Some(a("203.0.113.5:4000")));
    // An off-path sender is refused before, during and after the caller's silence.
    assert!(stream(&mut l, "198.51.100.9:5000", 7, 1, 10, 0)
        .iter()
        .all(|v| *v == Verdict::Refused));
    assert_eq!(
        l.on_packet(a("203.0.113.5:4000"), 1, 100, 300 * MS),
        Verdict::Latched(a("203.0.113.5:4000"))
    );
    assert!(stream(&mut l, "203.0.113.5:4000", 1, 101, 5, 320 * MS)
        .iter()
        .all(|v| *v == Verdict::Accept));
    assert!(stream(&mut l, "198.51.100.9:5000", 7, 1, 10, 10_000 * MS)
        .iter()
        .all(|v| *v == Verdict::Refused));
    assert_eq!(l.remote(), Some(a("203.0.113.5:4000")));
    assert!(!l.rtcp_allowed(a("198.51.100.9:5001")));
    assert!(l.rtcp_allowed(a("203.0.113.5:4001")));
}

#[test]
fn strict_learns_another_port_of_the_sdp_ip_on_probation_but_keeps_sending_to_the_sdp() {
    let mut l = Latch::default();
    l.configure(Some(a("203.0.113.5:4000")), Some(ip("203.0.113.5")), false);
    let v = stream(&mut l, "203.0.113.5:4100", 1, 10, 5, 0);
    assert_eq!(
        v,
        [
            Verdict::Probation,
            Verdict::Probation,
            Verdict::Probation,
            Verdict::Latched(a("203.0.113.5:4100")),
            Verdict::Accept
        ]
    );
    assert_eq!(l.remote(), Some(a("203.0.113.5:4000")));
}

#[test]
fn behind_nat_a_source_is_learned_after_probation_and_media_follows_it() {
    let mut l = Latch::default();
    l.configure(
        Some(a("192.168.1.20:4000")),
        Some(ip("198.51.100.1")),
        false,
    );
    assert_eq!(l.remote(), Some(a("192.168.1.20:4000")));
    let v = stream(&mut l, "198.51.100.1:31000", 5, 65534, 5, 0);
    assert_eq!(v[3], Verdict::Latched(a("198.51.100.1:31000")));
    assert_eq!(l.remote(), Some(a("198.51.100.1:31000")));
}

#[test]
fn an_out_of_sequence_packet_restarts_probation() {
    let mut l = Latch::default();
    l.configure(Some(a("10.0.0.2:4000")), None, false);
    let from = a("198.51.100.1:31000");
    assert_eq!(l.on_packet(from, 5, 1, 0), Verdict::Probation);
    assert_eq!(l.on_packet(from, 5, 2, 0), Verdict::Probation);
    assert_eq!(l.on_packet(from, 5, 9, 0), Verdict::Probation); // a gap
    assert_eq!(l.on_packet(from, 6, 10, 0), Verdict::Probation); // another SSRC
    for seq in 11..13 {
        assert_eq!(l.on_packet(from, 6, seq, 0), Verdict::Probation);
    }
    assert_eq!(l.on_packet(from, 6, 13, 0), Verdict::Latched(from));
}

#[test]
fn no_takeover_while_the_live_source_talks_and_only_on_probation_after_its_silence() {
    let mut l = Latch::default();
    l.configure(Some(a("10.0.0.2:4000")), Some(ip("198.51.100.1")), false);
    stream(&mut l, "198.51.100.1:31000", 5, 1, 4, 0);
    assert_eq!(l.live(), Some(a("198.51.100.1:31000")));
    // The caller keeps talking; another source streams in sequence: never taken.
    for i in 0..50u16 {
        let t = 100 * MS + i as u64 * 20 * MS;
        l.on_packet(a("198.51.100.1:31000"), 5, 10 + i, t);
        assert_eq!(
            l.on_packet(a("203.0.113.66:9999"), 9, i, t + MS),
            Verdict::Probation
        );
    }
    // The caller goes quiet at ~1.1 s: not before 2 s of silence.
    let quiet_from = 100 * MS + 49 * 20 * MS;
    let v = l.on_packet(a("203.0.113.66:9999"), 9, 50, quiet_from + SILENCE_US - MS);
    assert_eq!(v, Verdict::Probation);
    let v = l.on_packet(a("203.0.113.66:9999"), 9, 51, quiet_from + SILENCE_US);
    assert_eq!(v, Verdict::Latched(a("203.0.113.66:9999")));
}

#[test]
fn the_signalling_ip_is_preferred() {
    let mut l = Latch::default();
    l.configure(Some(a("10.0.0.2:4000")), Some(ip("198.51.100.1")), false);
    // Someone else is learned first (a race at the call's start)…
    stream(&mut l, "203.0.113.66:9999", 9, 1, 4, 0);
    assert_eq!(l.live(), Some(a("203.0.113.66:9999")));
    // …the signalling IP takes over as soon as it proves itself, silence or not.
    let v = stream(&mut l, "198.51.100.1:31000", 5, 1, 4, 10 * MS);
    assert_eq!(v[3], Verdict::Latched(a("198.51.100.1:31000")));
    // And a would-be source elsewhere cannot displace its probation.
    let mut l = Latch::default();
    l.configure(Some(a("10.0.0.2:4000")), Some(ip("198.51.100.1")), false);
    l.on_packet(a("198.51.100.1:31000"), 5, 1, 0);
    l.on_packet(a("203.0.113.66:9999"), 9, 1, 0);
    l.on_packet(a("198.51.100.1:31000"), 5, 2, 0);
    l.on_packet(a("198.51.100.1:31000"), 5, 3, 0);
    assert_eq!(
        l.on_packet(a("198.51.100.1:31000"), 5, 4, 0),
        Verdict::Latched(a("198.51.100.1:31000"))
    );
}

#[test]
fn a_public_sdp_other_than_the_signalling_source_learns_only_those_two_ips() {
    let mut l = Latch::default();
    l.configure(Some(a("203.0.113.5:4000")), Some(ip("198.51.100.1")), false);
    assert!(stream(&mut l, "192.0.2.77:1000", 1, 1, 8, 0)
        .iter()
        .all(|v| *v == Verdict::Refused));
    assert_eq!(
        stream(&mut l, "198.51.100.1:4000", 1, 1, 4, 0)[3],
        Verdict::Latched(a("198.51.100.1:4000"))
    );
}

#[test]
fn authenticated_packets_prove_a_source_at_once_but_not_a_takeover() {
    let mut l = Latch::default();
    l.configure(Some(a("10.0.0.2:4000")), None, true);
    assert_eq!(
        l.on_packet(a("198.51.100.1:31000"), 5, 1, 0),
        Verdict::Latched(a("198.51.100.1:31000"))
    );
    assert_eq!(
        l.on_packet(a("198.51.100.2:31000"), 5, 2, 20 * MS),
        Verdict::Probation
    );
    assert_eq!(
        l.on_packet(a("198.51.100.2:31000"), 5, 3, SILENCE_US + 20 * MS),
        Verdict::Latched(a("198.51.100.2:31000"))
    );
}

#[test]
fn a_new_sdp_address_starts_learning_anew() {
    let mut l = Latch::default();
    l.configure(Some(a("203.0.113.5:4000")), Some(ip("203.0.113.5")), false);
    l.on_packet(a("203.0.113.5:4000"), 1, 1, 0);
    l.configure(Some(a("203.0.113.9:6000")), Some(ip("203.0.113.9")), false);
    assert_eq!(l.live(), None);
    assert_eq!(l.remote(), Some(a("203.0.113.9:6000")));
    assert_eq!(
        l.on_packet(a("203.0.113.5:4000"), 1, 2, 0),
        Verdict::Refused
    );
    // The same address again (a re-INVITE without change) keeps the live source.
    l.on_packet(a("203.0.113.9:6000"), 1, 3, 0);
    l.configure(Some(a("203.0.113.9:6000")), Some(ip("203.0.113.9")), false);
    assert_eq!(l.live(), Some(a("203.0.113.9:6000")));
}
