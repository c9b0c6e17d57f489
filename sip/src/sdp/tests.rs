use super::*;

const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

#[test]
fn sipp_pcmu_with_dtmf() {
    let sdp = parse(SIPP_OFFER).unwrap();
    let n = negotiate(&sdp, SrtpMode::Off).unwrap();
    assert_eq!(n.codec, AudioCodec::Pcmu);
    assert_eq!(n.payload_type, 0);
    assert_eq!(n.event_payload_type, Some(101));
    assert_eq!(n.ptime_ms, 20);
    assert_eq!(n.remote, Some("127.0.0.1:6000".parse().unwrap()));
    assert_eq!(n.direction, Direction::SendRecv);
    let a = answer(&sdp, &n, None, ("10.0.0.1".parse().unwrap(), 20000), 1, 1);
    assert!(a.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{a}");
    assert!(a.contains("a=rtpmap:0 PCMU/8000\r\n"));
    assert!(a.contains("a=rtpmap:101 telephone-event/8000\r\n"));
    assert!(a.contains("c=IN IP4 10.0.0.1\r\n"));
    // Our answer parses and negotiates back to the same choice.
    let back = negotiate(&parse(&a).unwrap(), SrtpMode::Off).unwrap();
    assert_eq!(back.codec, AudioCodec::Pcmu);
}

#[test]
fn first_supported_codec_of_the_callers_list() {
    let offer =
        "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 18 3 9 8 0\r\na=rtpmap:18 G729/8000\r\n";
    let n = negotiate(&parse(offer).unwrap(), SrtpMode::Off).unwrap();
    assert_eq!(n.codec, AudioCodec::G722);
    assert_eq!(n.payload_type, 9);
    let opus = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 96 0 97\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:97 telephone-event/48000\r\n";
    let n = negotiate(&parse(opus).unwrap(), SrtpMode::Off).unwrap();
    assert_eq!(
        (n.codec, n.payload_type, n.event_payload_type),
        (AudioCodec::Opus, 96, Some(97))
    );
}

#[test]
fn opus_with_telephone_event_at_8000() {
    // What baresip, Linphone and most softphones offer.
    let offer = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n";
    let sdp = parse(offer).unwrap();
    let n = negotiate(&sdp, SrtpMode::Off).unwrap();
    assert_eq!(
        (n.codec, n.event_payload_type, n.event_clock),
        (AudioCodec::Opus, Some(101), 8000)
    );
    let a = answer(&sdp, &n, None, ("10.0.0.1".parse().unwrap(), 20000), 1, 1);
    assert!(a.contains("m=audio 20000 RTP/AVP 96 101\r\n"), "{a}");
    assert!(a.contains("a=rtpmap:101 telephone-event/8000\r\n"), "{a}");
    // Both clocks offered: the codec's wins.
    let both = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 96 101 110\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:110 telephone-event/48000\r\n";
    let n = negotiate(&parse(both).unwrap(), SrtpMode::Off).unwrap();
    assert_eq!((n.event_payload_type, n.event_clock), (Some(110), 48000));
    // PCMU beside an event at 48 kHz only: taken as offered.
    let odd = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0 110\r\na=rtpmap:110 telephone-event/48000\r\n";
    let n = negotiate(&parse(odd).unwrap(), SrtpMode::Off).unwrap();
    assert_eq!((n.event_payload_type, n.event_clock), (Some(110), 48000));
}

#[test]
fn nothing_in_common() {
    let offer =
        "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 18 4\r\na=rtpmap:18 G729/8000\r\n";
    assert_eq!(
        negotiate(&parse(offer).unwrap(), SrtpMode::Off),
        Err(SdpError::NoCodec)
    );
    let srtp = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/SAVP 0\r\n";
    assert_eq!(
        negotiate(&parse(srtp).unwrap(), SrtpMode::Off),
        Err(SdpError::NoCrypto)
    );
    let video = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 4000 RTP/AVP 96\r\n";
    assert_eq!(
        negotiate(&parse(video).unwrap(), SrtpMode::Off),
        Err(SdpError::NoCodec)
    );
}

#[test]
fn ptime_and_hold() {
    let offer =
        "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 8\r\na=ptime:30\r\na=sendonly\r\n";
    let n = negotiate(&parse(offer).unwrap(), SrtpMode::Off).unwrap();
    assert_eq!(n.ptime_ms, 30);
    assert_eq!(n.direction, Direction::RecvOnly);
    let offer = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 8\r\na=ptime:100\r\n";
    let n = negotiate(&parse(offer).unwrap(), SrtpMode::Off).unwrap();
    assert_eq!(n.ptime_ms, 60);
    assert_eq!(n.remote, None);
    assert_eq!(n.direction, Direction::RecvOnly);
    let offer = "v=0\r\nc=IN IP4 192.0.2.1\r\na=inactive\r\nm=audio 4000 RTP/AVP 8\r\n";
    assert_eq!(
        negotiate(&parse(offer).unwrap(), SrtpMode::Off)
            .unwrap()
            .direction,
        Direction::Inactive
    );
}

#[test]
fn other_streams_are_rejected_in_the_answer() {
    let offer =
        "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 5000 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 0\r\n";
    let sdp = parse(offer).unwrap();
    let n = negotiate(&sdp, SrtpMode::Off).unwrap();
    assert_eq!(n.media_index, 1);
    let a = answer(&sdp, &n, None, ("127.0.0.1".parse().unwrap(), 20000), 1, 1);
    let m: Vec<&str> = a.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m, vec!["m=video 0 RTP/AVP 96", "m=audio 20000 RTP/AVP 0"]);
}

#[test]
fn sdes_offers_answers_and_the_policy() {
    let key = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
    let savp = format!("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:7 F8_128_HMAC_SHA1_80 inline:{key}\r\na=crypto:9 AES_CM_128_HMAC_SHA1_32 inline:{key}\r\n");
    let sdp = parse(&savp).unwrap();
    let n = negotiate(&sdp, SrtpMode::Off).unwrap();
    let remote = n.srtp.unwrap();
    assert_eq!(
        (remote.tag, remote.suite),
        (9, crate::srtp::Suite::AesCm128HmacSha1_32)
    );
    let ours = Crypto::ours(remote.tag, remote.suite);
    let a = answer(
        &sdp,
        &n,
        Some(&ours),
        ("10.0.0.1".parse().unwrap(), 20000),
        1,
        1,
    );
    assert!(a.contains("m=audio 20000 RTP/SAVP 0\r\n"), "{a}");
    assert!(a.contains(&ours.line()), "{a}");
    // Best effort: crypto on RTP/AVP is taken; plain RTP/AVP is plain unless required.
    let avp = savp.replace("RTP/SAVP", "RTP/AVP");
    assert!(negotiate(&parse(&avp).unwrap(), SrtpMode::Off)
        .unwrap()
        .srtp
        .is_some());
    let plain = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n";
    assert!(negotiate(&parse(plain).unwrap(), SrtpMode::Offer)
        .unwrap()
        .srtp
        .is_none());
    assert_eq!(
        negotiate(&parse(plain).unwrap(), SrtpMode::Require),
        Err(SdpError::SrtpRequired)
    );
    // Our offers.
    let set = Crypto::offer_set();
    let o = offer(
        ("127.0.0.1".parse().unwrap(), 20002),
        &set,
        SrtpMode::Require,
        7,
        1,
    );
    assert!(o.contains("RTP/SAVP"), "{o}");
    let n = negotiate(&parse(&o).unwrap(), SrtpMode::Require).unwrap();
    assert_eq!(n.srtp, Some(set[0]));
    let o = offer(
        ("127.0.0.1".parse().unwrap(), 20002),
        &set,
        SrtpMode::Offer,
        7,
        1,
    );
    assert!(
        o.contains("RTP/AVP ") && o.contains("a=crypto:4 AEAD_AES_256_GCM"),
        "{o}"
    );
    let o = offer(
        ("127.0.0.1".parse().unwrap(), 20002),
        &set,
        SrtpMode::Off,
        7,
        1,
    );
    assert!(!o.contains("a=crypto"), "{o}");
}

#[test]
fn malformed() {
    assert!(matches!(parse("garbage"), Err(SdpError::Malformed(_))));
    assert!(matches!(
        parse("v=0\r\nm=audio x RTP/AVP 0\r\n"),
        Err(SdpError::Malformed(_))
    ));
    assert!(matches!(
        parse("v=0\r\nc=IN IP4 nope\r\n"),
        Err(SdpError::Malformed(_))
    ));
    assert!(matches!(
        parse("m=audio 1 RTP/AVP 0\r\n"),
        Err(SdpError::Malformed(_))
    ));
}

#[test]
fn our_offer_negotiates() {
    let o = offer(
        ("127.0.0.1".parse().unwrap(), 20002),
        &[],
        SrtpMode::Off,
        7,
        1,
    );
    let n = negotiate(&parse(&o).unwrap(), SrtpMode::Off).unwrap();
    assert_eq!(
        (n.codec, n.event_payload_type),
        (AudioCodec::Pcmu, Some(101))
    );
}
