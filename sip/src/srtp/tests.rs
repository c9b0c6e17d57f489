use super::*;

fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0x12, 0x34, 0xca, 0xfe, 0xba, 0xbe];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[test]
fn key_derivation_matches_rfc_3711_b3() {
    let mut m = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
    m.extend(hex("0EC675AD498AFEEBB6960B3AABE6"));
    let master = MasterKey::from_bytes(&m).unwrap();
    let mut out = [0u8; 16];
    derive(&master, Suite::AesCm128HmacSha1_80, 0, &mut out);
    assert_eq!(out.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut salt = [0u8; 14];
    derive(&master, Suite::AesCm128HmacSha1_80, 2, &mut salt);
    assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    let mut auth = [0u8; 20];
    derive(&master, Suite::AesCm128HmacSha1_80, 1, &mut auth);
    assert_eq!(
        auth.to_vec(),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_suite_round_trips_and_refuses_tampering_and_replay() {
    for suite in Suite::ALL {
        let key = MasterKey::random(suite);
        let mut tx = SrtpSender::new(suite, &key).unwrap();
        let mut rx = SrtpReceiver::new(suite, &key).unwrap();
        let mut wire = [0u8; 512];
        let mut back = [0u8; 512];
        // Across a sequence number wrap (the rollover counter).
        for seq in [65534u16, 65535, 0, 1] {
            let p = rtp(seq, b"hello, protected world");
            let n = tx.protect_rtp(&p, &mut wire).unwrap();
            assert_eq!(n, p.len() + suite.rtp_tag_len(), "{suite:?}");
            assert_ne!(&wire[12..p.len()], &p[12..], "{suite:?}: not encrypted");
            let m = rx.unprotect_rtp(&wire[..n], &mut back).unwrap();
            assert_eq!(&back[..m], &p[..], "{suite:?} seq {seq}");
            // The same packet again is a replay.
            assert_eq!(
                rx.unprotect_rtp(&wire[..n], &mut back),
                Err(SrtpError::Replay)
            );
        }
        let p = rtp(2, b"tamper");
        let n = tx.protect_rtp(&p, &mut wire).unwrap();
        wire[14] ^= 1;
        assert_eq!(
            rx.unprotect_rtp(&wire[..n], &mut back),
            Err(SrtpError::Auth)
        );
        // A receiver with another key accepts nothing.
        let mut other = SrtpReceiver::new(suite, &MasterKey::random(suite)).unwrap();
        let p = rtp(3, b"x");
        let n = tx.protect_rtp(&p, &mut wire).unwrap();
        assert_eq!(
            other.unprotect_rtp(&wire[..n], &mut back),
            Err(SrtpError::Auth)
        );
        // SRTCP.
        let rtcp = [0x80u8, 201, 0, 1, 0xca, 0xfe, 0xba, 0xbe];
        let n = tx.protect_rtcp(&rtcp, &mut wire).unwrap();
        let m = rx.unprotect_rtcp(&wire[..n], &mut back).unwrap();
        assert_eq!(&back[..m], &rtcp[..], "{suite:?}");
        assert_eq!(
            rx.unprotect_rtcp(&wire[..n], &mut back),
            Err(SrtpError::Replay)
        );
        assert!(rx.unprotect_rtp(&[0x80; 5], &mut back).is_err());
    }
}

#[test]
fn key_lengths_are_checked() {
    let short = MasterKey::from_bytes(&[1; 10]).unwrap();
    assert!(SrtpSender::new(Suite::AesCm128HmacSha1_80, &short).is_err());
    assert!(MasterKey::from_bytes(&[0; 45]).is_none());
    assert_eq!(
        Suite::from_name("AEAD_AES_256_GCM"),
        Some(Suite::AeadAes256Gcm)
    );
    assert_eq!(Suite::from_name("F8_128_HMAC_SHA1_80"), None);
}

fn with_ssrc(mut p: Vec<u8>, ssrc: u32) -> Vec<u8> {
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// What a receiver remembers between packets.
fn state(rx: &SrtpReceiver) -> (Option<u32>, Option<u64>, u64, Option<u64>, u64) {
    (
        rx.ssrc,
        rx.window.highest,
        rx.window.seen,
        rx.rtcp_window.highest,
        rx.rtcp_window.seen,
    )
}

#[test]
fn a_forged_packet_with_another_ssrc_does_not_reset_the_stream() {
    // The attack of issue 23: once the sender's rollover counter is 1, a forged packet
    // with a new SSRC used to reset the window, and every later genuine packet was then
    // decrypted with rollover counter 0 and failed authentication.
    for suite in Suite::ALL {
        let key = MasterKey::random(suite);
        let mut tx = SrtpSender::new(suite, &key).unwrap();
        let mut rx = SrtpReceiver::new(suite, &key).unwrap();
        let (mut wire, mut back) = ([0u8; 512], [0u8; 512]);
        for seq in (65530u16..=65535).chain(0..=4) {
            let n = tx.protect_rtp(&rtp(seq, b"genuine"), &mut wire).unwrap();
            rx.unprotect_rtp(&wire[..n], &mut back).unwrap();
        }
        let before = state(&rx);
        let mut forged = with_ssrc(rtp(5, b"forged"), 0x0bad_f00d);
        forged.extend_from_slice(&[0u8; 16]);
        assert_eq!(rx.unprotect_rtp(&forged, &mut back), Err(SrtpError::Auth));
        assert_eq!(
            state(&rx),
            before,
            "{suite:?}: a forged packet changed state"
        );
        let p = rtp(5, b"genuine");
        let n = tx.protect_rtp(&p, &mut wire).unwrap();
        let m = rx.unprotect_rtp(&wire[..n], &mut back).unwrap();
        assert_eq!(&back[..m], &p[..], "{suite:?}");
    }
}

#[test]
fn a_new_stream_replaces_the_old_one_once_it_authenticates() {
    let suite = Suite::AesCm128HmacSha1_80;
    let key = MasterKey::random(suite);
    let mut tx = SrtpSender::new(suite, &key).unwrap();
    let mut rx = SrtpReceiver::new(suite, &key).unwrap();
    let (mut wire, mut back) = ([0u8; 512], [0u8; 512]);
    for seq in 100..110u16 {
        let n = tx.protect_rtp(&rtp(seq, b"a"), &mut wire).unwrap();
        rx.unprotect_rtp(&wire[..n], &mut back).unwrap();
    }
    // The sender restarts with another SSRC and a low sequence number (a re-INVITE).
    let p = with_ssrc(rtp(7, b"b"), 0x1234_5678);
    let n = tx.protect_rtp(&p, &mut wire).unwrap();
    let m = rx.unprotect_rtp(&wire[..n], &mut back).unwrap();
    assert_eq!(&back[..m], &p[..]);
    assert_eq!(rx.ssrc, Some(0x1234_5678));
    assert_eq!(rx.window.highest, Some(7));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// No forged packet changes what a receiver remembers, whatever its header says.
    #[test]
    fn no_forged_packet_changes_srtp_state(
        suite in 0usize..4,
        ssrc in proptest::prelude::any::<u32>(),
        seq in proptest::prelude::any::<u16>(),
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        first in proptest::prelude::any::<u8>(),
        rtcp in proptest::prelude::any::<bool>(),
    ) {
        let suite = Suite::ALL[suite];
        let key = MasterKey::random(suite);
        let mut tx = SrtpSender::new(suite, &key).unwrap();
        let mut rx = SrtpReceiver::new(suite, &key).unwrap();
        let (mut wire, mut back) = ([0u8; 512], [0u8; 512]);
        for s in 65530u16..=65535 {
            let n = tx.protect_rtp(&rtp(s, b"genuine"), &mut wire).unwrap();
            rx.unprotect_rtp(&wire[..n], &mut back).unwrap();
        }
        let rtcp_p = [0x80u8, 201, 0, 1, 0xca, 0xfe, 0xba, 0xbe];
        let n = tx.protect_rtcp(&rtcp_p, &mut wire).unwrap();
        rx.unprotect_rtcp(&wire[..n], &mut back).unwrap();
        let before = state(&rx);
        let mut forged = vec![first, if rtcp { 200 } else { 0 }];
        forged.extend_from_slice(&seq.to_be_bytes());
        forged.extend_from_slice(&[0, 0, 0, 0]);
        forged.extend_from_slice(&ssrc.to_be_bytes());
        forged.extend_from_slice(&body);
        let result = if rtcp {
            rx.unprotect_rtcp(&forged, &mut back).map(|_| ())
        } else {
            rx.unprotect_rtp(&forged, &mut back).map(|_| ())
        };
        proptest::prop_assert!(result.is_err());
        proptest::prop_assert_eq!(state(&rx), before);
        // The genuine stream goes on.
        let p = rtp(0, b"after");
        let n = tx.protect_rtp(&p, &mut wire).unwrap();
        proptest::prop_assert!(rx.unprotect_rtp(&wire[..n], &mut back).is_ok());
    }
}
