//! Property tests of everything the SIP side parses from the network: datagrams and
//! TCP streams through the parser and our prechecks (and the responses we build from
//! hostile requests), `User-to-User`, SDP offers (with `a=crypto`) through negotiation
//! to our answer, RTP and RTCP headers, SRTP and SRTCP packets, in-dialog requests
//! through the dialog core. Nothing may panic; what we send back must itself parse.

use patchbay_conference::fuzzing::{hostile, hostile_text, noise};
use proptest::prelude::*;

use super::*;

const SDP_PCMU: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

const SDP_OPUS: &str = "v=0\r\no=- 1 2 IN IP4 10.0.0.5\r\ns=baresip\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
m=audio 10010 RTP/AVP 96 9 0 8 101\r\nb=AS:64\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n\
m=video 10020 RTP/AVP 100\r\na=rtpmap:100 H264/90000\r\n";

const SDP_SAVP: &str =
    "v=0\r\no=- 1 2 IN IP4 10.0.0.5\r\ns=baresip\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
m=audio 10010 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31\r\n\
a=crypto:2 AEAD_AES_256_GCM inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDEy\r\n";

/// An SRTP packet (AES_CM_128_HMAC_SHA1_80 with the key of seven-bytes) and an SRTCP one.
fn srtp_seeds() -> Vec<Vec<u8>> {
    let key = crate::srtp::MasterKey::from_bytes(&[7u8; 30]).expect("key");
    let mut tx =
        crate::srtp::SrtpSender::new(crate::srtp::Suite::AesCm128HmacSha1_80, &key).expect("tx");
    let mut out = vec![0u8; 512];
    let rtp = [
        0x80u8, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    let n = tx.protect_rtp(&rtp, &mut out).expect("protect");
    let first = out[..n].to_vec();
    let rtcp = [0x80u8, 201, 0, 1, 0, 0, 0, 7];
    let n = tx.protect_rtcp(&rtcp, &mut out).expect("protect");
    vec![first, out[..n].to_vec()]
}

fn invite(sdp: &str) -> String {
    format!(
        "INVITE sip:conference@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-0;rport\r\n\
         From: sipp <sip:sipp@127.0.0.1:5070>;tag=1\r\nTo: <sip:conference@127.0.0.1:5060>\r\n\
         Call-ID: 1-123@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:sipp@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n\
         User-to-User: 0123456789abcdef;encoding=base64, eyJhbGciOiJIUzI1NiJ9.eyJhIjoiZGV2In0.c2ln;encoding=jwt;purpose=call\r\n\
         Supported: timer, 100rel\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn seeds() -> Vec<Vec<u8>> {
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} sip:conference@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-{cseq}\r\n\
             From: <sip:sipp@127.0.0.1:5070>;tag=1\r\nTo: <sip:conference@127.0.0.1:5060>;tag=abc\r\n\
             Call-ID: 1-123@127.0.0.1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    vec![
        invite(SDP_PCMU).into_bytes(),
        invite(SDP_OPUS).into_bytes(),
        invite("").into_bytes(),
        in_dialog("ACK", 1).into_bytes(),
        in_dialog("BYE", 2).into_bytes(),
        in_dialog("CANCEL", 1).into_bytes(),
        in_dialog("OPTIONS", 3).into_bytes(),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n\
          To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    ]
}

/// Everything the UA does with a request before its transaction: prechecks, the token
/// from `User-to-User`, the SDP offer, and a response built from it (which must parse).
fn examine(req: &Request) -> Result<(), TestCaseError> {
    let refusal = precheck(req);
    let _ = uui::jwt_token(header_values(req, "User-to-User"));
    if let Ok(text) = std::str::from_utf8(req.body()) {
        if let Ok(offer) = sdp::parse(text) {
            if let Ok(n) = sdp::negotiate(&offer, sdp::SrtpMode::Off) {
                let ours = sdp::answer(
                    &offer,
                    &n,
                    None,
                    ("127.0.0.1".parse().expect("ip"), 20000),
                    1,
                    1,
                );
                prop_assert!(sdp::parse(&ours).is_ok(), "our answer must parse: {ours}");
            }
        }
    }
    let (code, reason) = refusal.map(|(c, r, _)| (c, r)).unwrap_or((200, "OK"));
    if let Some(resp) = build_response(req, Reply::new(code, reason).tag("t1")) {
        let bytes = Message::Response(resp).to_bytes();
        prop_assert!(
            parse_datagram(bytes.clone(), &Limits::datagram()).is_ok(),
            "our response must parse: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn datagrams_through_the_parser_and_our_prechecks(bytes in hostile(seeds(), 2048)) {
        match parse_datagram(Bytes::from(bytes.clone()), &Limits::datagram()) {
            Ok(Message::Request(req)) => examine(&req)?,
            Ok(Message::Response(_)) => {}
            Err(_) => {
                // What we answer to an unparseable request must parse.
                for reply in [crude_400(&bytes), crude_response(&bytes, "513 Message Too Large")].into_iter().flatten() {
                    prop_assert!(
                        parse_datagram(reply.clone(), &Limits::datagram()).is_ok(),
                        "crude reply must parse: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            }
        }
    }

    #[test]
    fn tcp_streams_in_any_chunking(
        messages in prop::collection::vec(hostile(seeds(), 512), 1..5),
        cuts in prop::collection::vec(1usize..700, 0..20),
    ) {
        let stream: Vec<u8> = messages.concat();
        let mut parser = StreamParser::new(Limits::stream());
        let mut at = 0;
        for cut in cuts.iter().copied().chain(std::iter::repeat(usize::MAX)) {
            if at >= stream.len() {
                break;
            }
            let end = at.saturating_add(cut).min(stream.len());
            match parser.push(&stream[at..end]) {
                Ok(ms) => {
                    for m in ms {
                        if let Message::Request(req) = m {
                            examine(&req)?;
                        }
                    }
                }
                Err(_) => break, // framing lost: the connection is closed
            }
            at = end;
        }
    }

    #[test]
    fn unbroken_streams_parse_the_same_in_any_chunking(
        picks in prop::collection::vec(0usize..8, 1..6),
        cuts in prop::collection::vec(1usize..300, 0..30),
    ) {
        let all = seeds();
        let stream: Vec<u8> = picks.iter().flat_map(|i| all[*i].clone()).collect();
        let mut parser = StreamParser::new(Limits::stream());
        let mut count = 0;
        let mut at = 0;
        for cut in cuts.iter().copied().chain(std::iter::repeat(usize::MAX)) {
            if at >= stream.len() {
                break;
            }
            let end = at.saturating_add(cut).min(stream.len());
            count += parser.push(&stream[at..end]).map(|m| m.len()).unwrap_or(0);
            at = end;
        }
        prop_assert_eq!(count, picks.len());
    }

    #[test]
    fn sdp_offers_through_negotiation(text in hostile_text(vec![SDP_PCMU.into(), SDP_OPUS.into()], 1024)) {
        if let Ok(offer) = sdp::parse(&text) {
            if let Ok(n) = sdp::negotiate(&offer, sdp::SrtpMode::Off) {
                prop_assert!(n.media_index < offer.media.len());
                let ours = sdp::answer(&offer, &n, None, ("127.0.0.1".parse().expect("ip"), 20000), 1, 1);
                prop_assert!(sdp::parse(&ours).is_ok(), "{ours}");
            }
        }
    }

    #[test]
    fn sdes_offers_through_negotiation(text in hostile_text(vec![SDP_SAVP.into()], 1024)) {
        if let Ok(offer) = sdp::parse(&text) {
            for mode in [sdp::SrtpMode::Off, sdp::SrtpMode::Offer, sdp::SrtpMode::Require] {
                if let Ok(n) = sdp::negotiate(&offer, mode) {
                    let ours = n.srtp.map(|r| sdp::Crypto::ours(r.tag, r.suite));
                    let a = sdp::answer(&offer, &n, ours.as_ref(), ("127.0.0.1".parse().expect("ip"), 20000), 1, 1);
                    let back = sdp::parse(&a);
                    prop_assert!(back.is_ok(), "{a}");
                    if let (Some(ours), Ok(back)) = (ours, back) {
                        // Our answer's key is what we will use, and it parses back.
                        let again = sdp::negotiate(&back, sdp::SrtpMode::Off).ok().and_then(|n| n.srtp);
                        prop_assert_eq!(again, Some(ours));
                    }
                }
            }
        }
    }

    #[test]
    fn srtp_and_srtcp_packets(buf in hostile(srtp_seeds(), 300)) {
        let key = crate::srtp::MasterKey::from_bytes(&[7u8; 30]).expect("key");
        let mut rx = crate::srtp::SrtpReceiver::new(crate::srtp::Suite::AesCm128HmacSha1_80, &key).expect("rx");
        let mut out = vec![0u8; buf.len() + crate::srtp::OVERHEAD];
        if let Ok(n) = rx.unprotect_rtp(&buf, &mut out) {
            prop_assert!(n <= buf.len());
        }
        if let Ok(n) = rx.unprotect_rtcp(&buf, &mut out) {
            prop_assert!(n <= buf.len());
        }
        for suite in crate::srtp::Suite::ALL {
            let key = crate::srtp::MasterKey::random(suite);
            let mut rx = crate::srtp::SrtpReceiver::new(suite, &key).expect("rx");
            // A forged packet never authenticates.
            prop_assert!(rx.unprotect_rtp(&buf, &mut out).is_err());
            prop_assert!(rx.unprotect_rtcp(&buf, &mut out).is_err());
        }
    }

    #[test]
    fn in_dialog_requests_through_the_dialog_core(bytes in hostile(seeds(), 1024)) {
        let Ok(Message::Request(invite)) = parse_datagram(Bytes::from(invite(SDP_PCMU)), &Limits::datagram()) else {
            return Err(TestCaseError::fail("seed INVITE"));
        };
        let mut d = dialog::Dialog::as_uas(&invite, "abc", Bytes::from_static(b"<sip:c@127.0.0.1>;tag=abc"), 0);
        if let Ok(Message::Request(req)) = parse_datagram(Bytes::from(bytes), &Limits::datagram()) {
            let before = d.next_cseq();
            match d.check_request(&req) {
                Ok(()) => d.refresh_target(&req),
                Err(r) => prop_assert!((400..600).contains(&r.code)),
            }
            let _ = d.on_ack(dialog::cseq_number(&req));
            prop_assert_eq!(d.next_cseq(), before + 1);
        }
    }

    #[test]
    fn user_to_user_values(values in prop::collection::vec(hostile(vec![
        b"0123456789abcdef;encoding=base64, eyJhbGciOiJIUzI1NiJ9.e30.c2ln;encoding=jwt".to_vec(),
        b"\"eyJ0.e30.c2ln\";encoding=\"jwt\";purpose=call".to_vec(),
    ], 300), 0..4)) {
        let token = uui::jwt_token(values.iter().map(Vec::as_slice));
        if let Some(t) = token {
            prop_assert!(!t.is_empty());
            prop_assert!(values.iter().any(|v| v.windows(t.len()).any(|w| w == t.as_bytes())));
        }
    }

    #[test]
    fn rtp_and_rtcp_headers(buf in hostile(vec![
        // RTP with a CSRC, an extension and padding.
        vec![0xb1, 0x00, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7, 0, 0, 0, 9, 0xbe, 0xde, 0, 1, 1, 2, 3, 4, 0xff, 0xff, 0, 0, 2],
        // RTCP SR + SDES.
        vec![0x80, 200, 0, 6, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3,
             0x81, 202, 0, 2, 0, 0, 0, 7, 1, 1, b'x', 0],
    ], 200)) {
        if let Some(h) = rtp::parse_rtp(&buf) {
            prop_assert!(h.payload_start <= h.payload_end && h.payload_end <= buf.len());
        }
        let _ = rtp::is_rtcp(&buf);
        let _ = crate::rtcp::is_valid_rtcp(&buf);
        let _ = crate::rtcp::sender_report_ntp(&buf);
    }

    #[test]
    fn random_bytes_never_panic_the_parser(bytes in noise(4096)) {
        if let Ok(Message::Request(req)) = parse_datagram(Bytes::from(bytes), &Limits::datagram()) {
            examine(&req)?;
        }
    }
}
