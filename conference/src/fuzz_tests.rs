//! Property tests of the parsers in this crate that the network feeds: the browser
//! SDP helpers (the SDK's offers and answers), STUN demultiplexing on the shared
//! WebRTC socket, and participant tokens. Each must never panic; the token check
//! must never accept claims that were not minted.

use proptest::prelude::*;
use uuid::Uuid;

use crate::fuzzing::{hostile, hostile_text};
use crate::media::sdp::{offered_streams, offered_tracks, reject_kinds, sdp_ufrag};
use crate::media::webrtc::stun_local_ufrag;
use crate::model::DeviceApiVersion;
use crate::token::TokenKeys;

/// An SDP offer like Chromium's for the SDK: audio, video and the data channels.
const BROWSER_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1 2\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS s1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 110\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Ab3x\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=msid:s1 t-audio\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:110 telephone-event/48000\r\n\
a=ssrc:1001 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:Ab3x\r\na=ice-pwd:0123456789abcdefghijklmn\r\n\
a=setup:actpass\r\na=mid:1\r\na=sendonly\r\na=msid:s1 t-video\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=ssrc-group:FID 2001 2002\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:Ab3x\r\n\
a=ice-pwd:0123456789abcdefghijklmn\r\na=setup:actpass\r\na=mid:2\r\na=sctp-port:5000\r\n";

/// A STUN binding request with USERNAME `ours:theirs`, PRIORITY and a fake integrity.
fn stun_request() -> Vec<u8> {
    let user = b"Ab3x:Zq9w";
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&[0x00, 0x06, 0x00, user.len() as u8]);
    attrs.extend_from_slice(user);
    attrs.extend_from_slice(&[0, 0, 0]); // pad to 4
    attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x1e, 0xff]);
    attrs.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    attrs.extend_from_slice(&[0xaa; 20]);
    let mut out = vec![0x00, 0x01];
    out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    out.extend_from_slice(&[7; 12]);
    out.extend_from_slice(&attrs);
    out
}

#[test]
fn the_seeds_are_what_they_claim() {
    assert_eq!(stun_local_ufrag(&stun_request()), Some("Ab3x"));
    assert_eq!(sdp_ufrag(BROWSER_OFFER), Some("Ab3x"));
    assert_eq!(offered_tracks(BROWSER_OFFER).len(), 2);
}

proptest! {
    #[test]
    fn browser_sdp_helpers_never_panic(sdp in hostile_text(vec![BROWSER_OFFER.as_bytes().to_vec()], 4096)) {
        let _ = sdp_ufrag(&sdp);
        let _ = offered_streams(&sdp);
        let tracks = offered_tracks(&sdp);
        // Never more tracks than m= sections.
        prop_assert!(tracks.len() <= sdp.matches("m=").count());
        for (audio, video) in [(true, true), (true, false), (false, true), (false, false)] {
            let _ = reject_kinds(&sdp, audio, video);
        }
    }

    #[test]
    fn stun_demultiplexing_never_panics_or_reads_past_the_message(
        buf in hostile(vec![stun_request()], 256)
    ) {
        if let Some(ufrag) = stun_local_ufrag(&buf) {
            // Whatever it returns lies inside the datagram.
            let start = ufrag.as_ptr() as usize - buf.as_ptr() as usize;
            prop_assert!(start + ufrag.len() <= buf.len());
        }
    }

    #[test]
    fn tokens_never_verify_with_claims_that_were_not_minted(
        token in hostile_text(vec![minted().0.into_bytes()], 512),
    ) {
        let (original, keys, participant) = minted();
        match keys.verify(&token, NOW) {
            Ok(claims) => {
                // Only the token itself (or a spelling base64 decodes alike) verifies.
                prop_assert_eq!(claims.participant_id, participant);
                prop_assert_eq!(claims.account_id.as_str(), "acct");
                prop_assert!(token.len() <= original.len() + 4, "{token}");
            }
            Err(e) => {
                // Reasons are short, stable text: no library debug output.
                let text = e.to_string();
                prop_assert!(text.len() < 120 && !text.contains("0x") && !text.contains('{'), "{text}");
            }
        }
    }
}

const NOW: crate::model::UnixMillis = 1_790_000_000_000;

fn minted() -> (String, TokenKeys, Uuid) {
    let keys = TokenKeys::new(
        b"0123456789abcdef0123456789abcdef",
        std::time::Duration::from_secs(3600),
    );
    let participant = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
    let token = keys
        .mint("acct", participant, DeviceApiVersion::V3, NOW)
        .expect("mint");
    (token, keys, participant)
}
