//! str0m's two send paths compared packet for packet (issue 26): `Writer::write` (queued,
//! sent from a timeout and `poll_output`) and `Writer::write_now` (our patch 0002 to
//! str0m: packetized, protected and handed out at once). Two pairs of peers on the same
//! fake time get the same frames, one by each path; the unencrypted RTP each sender sent
//! (str0m's raw packet events) must be the same packets (SSRCs and the random starts of
//! sequence numbers aside), and the other peer must receive the same frames.

#[path = "../benches/common/pair.rs"]
mod pair;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pair::{Pair, Path};
use str0m::media::{MediaKind, WriteNow};
use str0m::rtp::{RawPacket, RtpHeader};
use str0m::Event;

/// A sent RTP packet with what differs between two connections taken out: its SSRC
/// becomes the order in which the SSRC first appeared, its sequence number and RTP
/// timestamp count from that SSRC's first packet, its mid (random) becomes the index of
/// its m-line.
#[derive(Debug, PartialEq)]
struct Sent {
    stream: usize,
    m_line: Option<usize>,
    header: RtpHeader,
    payload: Vec<u8>,
}

fn sent_rtp(pair: &Pair) -> Vec<Sent> {
    let mut first: HashMap<u32, (usize, u16, u32)> = HashMap::new();
    let mut out = Vec::new();
    for e in &pair.events {
        let Some(RawPacket::RtpTx(header, buf)) = e.as_raw_packet() else {
            continue;
        };
        let ssrc = *header.ssrc;
        let n = first.len();
        let (stream, seq0, ts0) =
            *first
                .entry(ssrc)
                .or_insert((n, header.sequence_number, header.timestamp));
        let mut h = header.clone();
        h.ssrc = 0.into();
        h.sequence_number = h.sequence_number.wrapping_sub(seq0);
        h.timestamp = h.timestamp.wrapping_sub(ts0);
        let m_line = h
            .ext_vals
            .mid
            .take()
            .map(|mid| pair.mids.iter().position(|m| *m == mid));
        out.push(Sent {
            stream,
            m_line: m_line.map(|m| m.expect("a mid of the pair")),
            header: h,
            payload: buf[header.header_len..].to_vec(),
        });
    }
    out
}

/// The frames a peer received: (m-line index, RTP time, data).
fn received(pair: &Pair) -> Vec<(usize, u64, Vec<u8>)> {
    pair.received
        .iter()
        .filter_map(|e| match e {
            Event::MediaData(d) => {
                let m = pair.mids.iter().position(|m| *m == d.mid)?;
                Some((m, d.time.numer(), d.data.to_vec()))
            }
            _ => None,
        })
        .collect()
}

/// Frames of varied sizes: for video, several packets each (MTU-sized and a remainder).
fn frames(kind: MediaKind, n: usize) -> Vec<Arc<[u8]>> {
    (0..n)
        .map(|i| {
            let len = if kind == MediaKind::Audio {
                60 + (i * 7) % 90
            } else {
                300 + (i * 977) % 4000
            };
            (0..len)
                .map(|j| (i * 31 + j * 7) as u8)
                .collect::<Vec<u8>>()
                .into()
        })
        .collect()
}

fn compare(kind: MediaKind, m_lines: usize) {
    let start = Instant::now();
    let raw = |c: str0m::RtcConfig| c.enable_raw_packets(true);
    let mut queued = Pair::new(start, m_lines, kind, raw);
    let mut now = Pair::new(start, m_lines, kind, raw);
    assert_eq!(
        queued.now, now.now,
        "both pairs connect on the same fake time"
    );
    queued.events.clear();
    now.events.clear();
    let frames = frames(kind, 120);
    for f in &frames {
        assert_eq!(queued.forward(f, Path::Queued), WriteNow::Queued);
        let said = now.forward(f, Path::Now);
        assert!(
            matches!(said, WriteNow::Sent(n) if n >= 1),
            "{kind:?}: a frame into an idle connection is sent at once, not {said:?}"
        );
        now.drain();
        queued.settle();
        now.settle();
    }
    let (a, b) = (sent_rtp(&queued), sent_rtp(&now));
    // One packet per Opus frame; the larger VP8 frames take several.
    let enough = if kind == MediaKind::Audio {
        a.len() == frames.len()
    } else {
        a.len() > frames.len() * 2
    };
    assert!(
        enough,
        "{kind:?}: {} packets sent for {} frames",
        a.len(),
        frames.len()
    );
    assert_eq!(a.len(), b.len(), "{kind:?}: as many packets by each path");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{kind:?}, {m_lines} m-lines: packet {i} differs");
    }
    let (ra, rb) = (received(&queued), received(&now));
    assert!(
        ra.len() >= frames.len() - m_lines,
        "{kind:?}: the other peer received {} of {} frames",
        ra.len(),
        frames.len()
    );
    assert_eq!(ra, rb, "{kind:?}: the same frames received");
    assert_eq!(now.frames_now, now.frames);
}

#[test]
fn both_send_paths_send_the_same_opus_packets() {
    compare(MediaKind::Audio, 1);
    compare(MediaKind::Audio, 3);
}

#[test]
fn both_send_paths_send_the_same_vp8_packets() {
    compare(MediaKind::Video, 1);
    compare(MediaKind::Video, 2);
}

#[test]
fn write_now_queues_when_bandwidth_estimation_paces() {
    let start = Instant::now();
    let initial = str0m::bwe::Bitrate::kbps(2000);
    let mut pair = Pair::new(start, 1, MediaKind::Video, |c| c.enable_bwe(Some(initial)));
    let frames = frames(MediaKind::Video, 30);
    for f in &frames {
        assert_eq!(pair.forward(f, Path::Now), WriteNow::Queued);
        pair.settle();
    }
    assert_eq!(pair.frames_now, 0);
    // The pacer releases the rest over time.
    for _ in 0..200 {
        pair.exchange();
    }
    let got = received(&pair).len();
    assert!(got >= frames.len() - 2, "queued frames still arrive: {got}");
}

#[test]
fn write_now_after_a_queued_write_keeps_the_order() {
    let start = Instant::now();
    let mut pair = Pair::new(start, 1, MediaKind::Audio, |c| c);
    let mid = pair.mids[0];
    let pt = pair.pt;
    let t =
        |n: u64| str0m::media::MediaTime::new(n * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
    let at = pair.now;
    let w = pair.ours.writer(mid).expect("writer");
    w.write(pt, at, t(1), vec![1u8; 50]).expect("write");
    let mut sent = Vec::new();
    let w = pair.ours.writer(mid).expect("writer");
    let said = w
        .write_now(at, pt, at, t(2), vec![2u8; 50], |tr| sent.push(tr))
        .expect("write_now");
    assert_eq!(said, WriteNow::Queued, "a frame waits before it");
    assert!(sent.is_empty());
    // The drive sends both, in order; the next write goes at once again.
    pair.drive();
    pair.settle();
    let w = pair.ours.writer(mid).expect("writer");
    let said = w
        .write_now(pair.now, pt, pair.now, t(3), vec![3u8; 50], |tr| {
            sent.push(tr)
        })
        .expect("write_now");
    assert_eq!(said, WriteNow::Sent(1));
    pair.sent
        .extend(sent.into_iter().map(|t| t.contents.into()));
    pair.settle();
    let got: Vec<u8> = received(&pair).iter().map(|(_, _, d)| d[0]).collect();
    assert_eq!(got, [1, 2, 3]);
}

#[test]
fn a_packet_lost_after_write_now_is_resent_from_the_cache() {
    let start = Instant::now();
    let mut pair = Pair::new(start, 1, MediaKind::Video, |c| c);
    let frames = frames(MediaKind::Video, 40);
    let mut dropped = None;
    for (i, f) in frames.iter().enumerate() {
        assert!(matches!(
            pair.forward(f, Path::Now),
            WriteNow::Sent(_) | WriteNow::Queued
        ));
        if i == 10 && pair.sent.len() >= 2 {
            // The second packet of frame 10 is lost on the way: the other peer NACKs
            // it and the resend (RTX, from the cache write_now filled) completes it.
            pair.sent.remove(1);
            dropped = Some(i);
        }
        pair.settle();
    }
    assert!(dropped.is_some(), "frame 10 has several packets");
    let got = received(&pair);
    assert!(
        got.iter().any(|(_, _, d)| **d == *frames[10]),
        "the frame with a lost packet arrived after its resend"
    );
}
