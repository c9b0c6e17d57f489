//! RTCP for SIP legs (RFC 3550 §6): receive statistics kept from the incoming
//! RTP, and the sender report (with one reception report block) we send every
//! few seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reception statistics of one incoming RTP source (RFC 3550 Appendix A.1, A.8).
#[derive(Debug, Default, Clone)]
pub struct ReceiveStats {
    ssrc: u32,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    started: bool,
    /// Interarrival jitter in timestamp units (×16 fixed point, as RFC 3550 A.8).
    jitter_q4: u32,
    last_transit: Option<i64>,
    /// Middle 32 bits of the NTP time of the last SR received, and when it arrived.
    last_sr: Option<(u32, std::time::Instant)>,
}

impl ReceiveStats {
    /// Account for an RTP packet (`arrival` in the RTP clock's units).
    pub fn on_rtp(&mut self, ssrc: u32, seq: u16, timestamp: u32, arrival_units: i64) {
        if !self.started || ssrc != self.ssrc {
            *self = ReceiveStats {
                ssrc,
                base_seq: seq as u32,
                max_seq: seq,
                started: true,
                last_sr: self.last_sr,
                ..Default::default()
            };
        }
        let delta = seq.wrapping_sub(self.max_seq);
        if delta < 0x8000 {
            if seq < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.max_seq = seq;
        }
        self.received += 1;
        let transit = arrival_units - timestamp as i64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs().min(u32::MAX as u64 / 32) as u32;
            // J += (|D| - J) / 16, in ×16 fixed point.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Note a received sender report's NTP timestamp (for LSR/DLSR).
    pub fn on_sender_report(&mut self, ntp_middle: u32) {
        self.last_sr = Some((ntp_middle, std::time::Instant::now()));
    }

    /// Packets expected and received since the source began, and the interarrival
    /// jitter in timestamp units (None before the first packet).
    pub fn totals(&self) -> Option<(u64, u64, u32)> {
        if !self.started {
            return None;
        }
        let expected = self
            .extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1);
        Some((expected as u64, self.received as u64, self.jitter_q4 >> 4))
    }

    fn extended_max(&self) -> u32 {
        self.cycles + self.max_seq as u32
    }

    /// One reception report block (24 bytes), updating the interval counters.
    fn report_block(&mut self, out: &mut Vec<u8>) {
        let expected = self
            .extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1);
        let lost = expected as i64 - self.received as i64;
        let lost = lost.clamp(-0x80_0000, 0x7f_ffff);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        let cumulative = (lost as i32 as u32) & 0x00ff_ffff;
        out.extend_from_slice(&(((fraction as u32) << 24) | cumulative).to_be_bytes());
        out.extend_from_slice(&self.extended_max().to_be_bytes());
        out.extend_from_slice(&(self.jitter_q4 >> 4).to_be_bytes());
        let (lsr, dlsr) = match self.last_sr {
            Some((ntp, at)) => (ntp, (at.elapsed().as_secs_f64() * 65536.0) as u32),
            None => (0, 0),
        };
        out.extend_from_slice(&lsr.to_be_bytes());
        out.extend_from_slice(&dlsr.to_be_bytes());
    }
}

fn ntp_now() -> (u32, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = d.as_secs() + 2_208_988_800;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs as u32, frac as u32)
}

/// A compound RTCP packet: SR (or RR when we have sent nothing) plus SDES CNAME.
pub fn report(
    ssrc: u32,
    rtp_timestamp: u32,
    packets_sent: u32,
    octets_sent: u32,
    rx: Option<&mut ReceiveStats>,
    cname: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    let blocks = u8::from(rx.as_ref().is_some_and(|r| r.started));
    let sender = packets_sent > 0;
    let words = if sender {
        6 + 6 * blocks as u16
    } else {
        1 + 6 * blocks as u16
    };
    out.push(0x80 | blocks);
    out.push(if sender { 200 } else { 201 });
    out.extend_from_slice(&words.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if sender {
        let (s, f) = ntp_now();
        out.extend_from_slice(&s.to_be_bytes());
        out.extend_from_slice(&f.to_be_bytes());
        out.extend_from_slice(&rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&packets_sent.to_be_bytes());
        out.extend_from_slice(&octets_sent.to_be_bytes());
    }
    if let Some(r) = rx.filter(|r| r.started) {
        r.report_block(&mut out);
    }
    // SDES with one CNAME item, padded to a 32-bit boundary.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let item_len = 2 + name.len();
    let chunk_len = 4 + item_len + 1;
    let padded = chunk_len.div_ceil(4) * 4;
    out.push(0x81);
    out.push(202);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend(std::iter::repeat_n(0u8, padded - (4 + item_len)));
    out
}

/// The NTP middle 32 bits of a received SR, if `buf` starts with one.
pub fn sender_report_ntp(buf: &[u8]) -> Option<u32> {
    if buf.len() >= 28 && buf[0] >> 6 == 2 && buf[1] == 200 {
        Some(u32::from_be_bytes([buf[10], buf[11], buf[12], buf[13]]))
    } else {
        None
    }
}

/// The round-trip time a peer's report block about `ssrc` (our source) tells (RFC 3550
/// §6.4.1: arrival − LSR − DLSR), if the compound packet `buf` has one that refers to
/// a sender report of ours.
pub fn round_trip(buf: &[u8], ssrc: u32) -> Option<Duration> {
    round_trip_at(buf, ssrc, ntp_now())
}

fn round_trip_at(buf: &[u8], ssrc: u32, now: (u32, u32)) -> Option<Duration> {
    let arrival = (now.0 << 16) | (now.1 >> 16);
    let mut off = 0;
    while off + 8 <= buf.len() {
        let count = (buf[off] & 0x1f) as usize;
        let pt = buf[off + 1];
        let words = u16::from_be_bytes([buf[off + 2], buf[off + 3]]) as usize;
        let end = (off + 4 + words * 4).min(buf.len());
        let blocks = match pt {
            200 => off + 28,
            201 => off + 8,
            _ => {
                off = end.max(off + 4);
                continue;
            }
        };
        for i in 0..count {
            let b = blocks + i * 24;
            let Some(block) = buf.get(b..b + 24).filter(|_| b + 24 <= end) else {
                break;
            };
            let word =
                |k: usize| u32::from_be_bytes([block[k], block[k + 1], block[k + 2], block[k + 3]]);
            let (lsr, dlsr) = (word(16), word(20));
            if word(0) != ssrc || lsr == 0 {
                continue;
            }
            let rtt = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
            // Beyond a minute is a clock step or a forged report, not a round trip.
            if rtt < 60 << 16 {
                return Some(Duration::from_secs_f64(rtt as f64 / 65536.0));
            }
        }
        off = end.max(off + 4);
    }
    None
}

/// Whether `buf` is a plausible RTCP compound packet (version 2, SR/RR/SDES/BYE/APP first, lengths consistent).
pub fn is_valid_rtcp(buf: &[u8]) -> bool {
    let mut off = 0;
    let mut first = true;
    while off + 4 <= buf.len() {
        if buf[off] >> 6 != 2 {
            return false;
        }
        let pt = buf[off + 1];
        if first && !(200..=204).contains(&pt) {
            return false;
        }
        first = false;
        let len = (u16::from_be_bytes([buf[off + 2], buf[off + 3]]) as usize + 1) * 4;
        off += len;
    }
    !first && off == buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_wrap_in_the_report_block() {
        let mut rx = ReceiveStats::default();
        // 65530..65535, 0..9 with 3 and 4 missing: 16 expected, 14 received.
        for (i, seq) in (65530u16..=65535).chain(0..10).enumerate() {
            if seq == 3 || seq == 4 {
                continue;
            }
            rx.on_rtp(7, seq, i as u32 * 160, i as i64 * 160);
        }
        let pkt = report(1, 0, 10, 1600, Some(&mut rx), "patchbay");
        assert!(is_valid_rtcp(&pkt), "{pkt:?}");
        assert_eq!(pkt[1], 200);
        let block = &pkt[28..52];
        assert_eq!(u32::from_be_bytes(block[0..4].try_into().unwrap()), 7);
        assert_eq!(block[4], (2 * 256 / 16) as u8, "fraction lost");
        assert_eq!(
            u32::from_be_bytes([0, block[5], block[6], block[7]]),
            2,
            "cumulative lost"
        );
        assert_eq!(
            u32::from_be_bytes(block[8..12].try_into().unwrap()),
            (1 << 16) + 9,
            "extended max"
        );
        assert_eq!(
            u32::from_be_bytes(block[12..16].try_into().unwrap()),
            0,
            "no jitter on a perfect clock"
        );
    }

    #[test]
    fn receiver_report_when_nothing_sent() {
        let mut rx = ReceiveStats::default();
        rx.on_rtp(9, 1, 0, 0);
        let pkt = report(1, 0, 0, 0, Some(&mut rx), "x");
        assert_eq!(pkt[1], 201);
        assert!(is_valid_rtcp(&pkt));
        assert!(is_valid_rtcp(&report(
            1,
            0,
            0,
            0,
            None,
            "patchbay@127.0.0.1"
        )));
    }

    #[test]
    fn round_trip_from_a_receiver_report_about_our_sender_report() {
        // Our SR went out at NTP middle 0x0001_0000 (1 s); the peer held it 0.25 s and
        // its RR arrives at 1.5 s: 250 ms round trip.
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 9];
        rr.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        rr.extend_from_slice(&[0; 12]);
        rr.extend_from_slice(&0x0001_0000u32.to_be_bytes());
        rr.extend_from_slice(&0x0000_4000u32.to_be_bytes());
        let now = (1, 0x8000_0000);
        let rtt = round_trip_at(&rr, 0xdead_beef, now).unwrap();
        assert!((rtt.as_secs_f64() - 0.25).abs() < 1e-4, "{rtt:?}");
        assert_eq!(
            round_trip_at(&rr, 0x1234, now),
            None,
            "another source's block"
        );
        assert_eq!(
            round_trip_at(&rr[..20], 0xdead_beef, now),
            None,
            "truncated"
        );
    }

    #[test]
    fn validation() {
        assert!(!is_valid_rtcp(&[]));
        assert!(!is_valid_rtcp(&[0x80, 200, 0, 5]));
        assert!(!is_valid_rtcp(&[0x80, 96, 0, 0]));
        assert!(sender_report_ntp(&report(1, 0, 5, 5, None, "a")).is_some());
    }
}
