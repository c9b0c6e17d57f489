//! RTP for SIP legs: header parsing and writing, the leg's socket task
//! (symmetric RTP, RTP timeout) and its [`LegSink`], through which the session
//! actor sends the leg's mix.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patchbay_conference::media::session::{
    unix_us, HangupReason, LegId, LegMedia, LegSink, RtpView, MAX_RTP_PAYLOAD,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::metrics::SipMetrics;
use crate::sdp::Crypto;
use crate::srtp::{SrtpReceiver, SrtpSender, OVERHEAD};

mod latch;
pub use latch::{is_private, Latch, Verdict};
mod socket;
use socket::{enable_timestamps, recv_batch, Batch, BATCH, DATAGRAM};

/// A parsed RTP header (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Payload bounds within the packet.
    pub payload_start: usize,
    pub payload_end: usize,
}

/// Whether a packet on an RTP port is RTCP (RFC 5761 §4: payload types 64–95 with the marker bit).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

/// Parse and validate an RTP header; `None` for anything that is not valid RTP.
pub fn parse_rtp(buf: &[u8]) -> Option<RtpHeader> {
    if buf.len() < 12 || buf[0] >> 6 != 2 || is_rtcp(buf) {
        return None;
    }
    let padding = buf[0] & 0x20 != 0;
    let extension = buf[0] & 0x10 != 0;
    let csrc = (buf[0] & 0x0f) as usize;
    let mut start = 12 + 4 * csrc;
    if extension {
        let ext = buf.get(start..start + 4)?;
        let words = u16::from_be_bytes([ext[2], ext[3]]) as usize;
        start += 4 + 4 * words;
    }
    let mut end = buf.len();
    if padding {
        let pad = *buf.last()? as usize;
        if pad == 0 {
            return None;
        }
        end = end.checked_sub(pad)?;
    }
    if start > end {
        return None;
    }
    Some(RtpHeader {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7f,
        seq: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        payload_start: start,
        payload_end: end,
    })
}

/// Write a 12-byte RTP header.
pub fn write_header(out: &mut [u8; 12], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    out[0] = 0x80;
    out[1] = (pt & 0x7f) | if marker { 0x80 } else { 0 };
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Hands out even RTP ports (RTCP on the odd one above) from the configured range, at
/// random: a leg's port says nothing about the next one's.
pub struct PortAllocator {
    low: u16,
    high: u16,
}

impl PortAllocator {
    pub fn new(low: u16, high: u16) -> PortAllocator {
        let low = low + (low % 2);
        PortAllocator { low, high }
    }

    /// Bind an RTP/RTCP socket pair on `ip` (must run inside a tokio runtime). The RTP
    /// socket is read by the session actor at each tick (never awaited), the RTCP one
    /// by the leg's supervisor task.
    pub fn bind(&self, ip: IpAddr) -> std::io::Result<(std::net::UdpSocket, UdpSocket)> {
        // Even ports p with p + 1 <= high.
        let span = (self.high.saturating_sub(self.low).saturating_add(1) / 2).max(1);
        // From a random even port on, each one once (a full range still finds a hole).
        let start = rand::random::<u16>() % span;
        for i in 0..span {
            let port = self.low + 2 * ((start + i) % span);
            let Ok(rtp) = std::net::UdpSocket::bind(SocketAddr::new(ip, port)) else {
                continue;
            };
            let Ok(rtcp) = std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) else {
                continue;
            };
            rtp.set_nonblocking(true)?;
            rtcp.set_nonblocking(true)?;
            enable_timestamps(&rtp)?;
            return Ok((rtp, UdpSocket::from_std(rtcp)?));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free RTP port in rtp_ports",
        ))
    }
}

/// Why the UA is asked to end a call from the media side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEnd {
    Session(HangupReason),
    RtpTimeout,
}

struct SendState {
    /// Where media goes (the latch's choice).
    remote: Option<SocketAddr>,
    sending: bool,
    ssrc: u32,
    seq: u16,
    ts: u32,
    first: bool,
    payload_type: u8,
    event_payload_type: Option<u8>,
    /// The RTP clock of the leg's codec.
    clock: u32,
    /// The RTP clock of its telephone-events (8000 beside Opus, most often).
    event_clock: u32,
    event_ts: u32,
    packets: u32,
    octets: u32,
    /// SRTP: our key and theirs, and what protects what we send.
    srtp_keys: Option<(Crypto, Crypto)>,
    srtp: Option<SrtpSender>,
}

struct RecvState {
    /// Which source RTP is accepted from, and where media goes.
    latch: Latch,
    stats: crate::rtcp::ReceiveStats,
    rtcp_remote: Option<SocketAddr>,
    /// The last round trip the peer's reports told.
    rtt: Option<std::time::Duration>,
    batch: Box<Batch>,
    /// SRTP: what checks and decrypts what we receive, and where it decrypts to.
    srtp: Option<SrtpReceiver>,
    plain: Box<[u8; DATAGRAM + OVERHEAD]>,
}

/// The leg's media endpoint: the session actor drains its RTP and sends its mix through it.
pub struct RtpSink {
    leg: LegId,
    socket: std::net::UdpSocket,
    state: Mutex<SendState>,
    recv: Mutex<RecvState>,
    /// Arrival of the last RTP or RTCP packet (µs since the epoch), for the RTP timeout.
    last_rx_us: AtomicU64,
    ended: mpsc::UnboundedSender<(LegId, MediaEnd)>,
    metrics: SipMetrics,
}

/// Most packets read from one leg in one tick (a flood cannot starve the session).
const MAX_DRAIN: usize = 64;

impl RtpSink {
    fn lock(&self) -> std::sync::MutexGuard<'_, SendState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_recv(&self) -> std::sync::MutexGuard<'_, RecvState> {
        self.recv.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Update what was negotiated (re-INVITE): the SDP's media address and the
    /// signalling source's IP (what the latch may learn), whether to send, payload types.
    /// Call after [`RtpSink::set_srtp`]: SRTP legs latch on authenticated packets.
    pub fn configure(
        &self,
        remote: Option<SocketAddr>,
        signalling: Option<IpAddr>,
        sending: bool,
        media: &LegMedia,
    ) {
        let mut r = self.lock_recv();
        let authenticated = r.srtp.is_some();
        r.latch.configure(remote, signalling, authenticated);
        let mut s = self.lock();
        s.remote = r.latch.remote();
        drop(r);
        s.sending = sending;
        s.payload_type = media.payload_type;
        s.event_payload_type = media.event_payload_type;
        s.clock = media.codec.rtp_clock();
        s.event_clock = media.event_clock;
    }

    /// SRTP keys (ours, theirs) from the negotiation, or none for plain RTP. The same
    /// keys again (a re-INVITE) keep the running contexts (rollover counter, replay
    /// window); new ones start new contexts.
    pub fn set_srtp(&self, keys: Option<(Crypto, Crypto)>) -> Result<(), crate::srtp::SrtpError> {
        let mut s = self.lock();
        if s.srtp_keys == keys {
            return Ok(());
        }
        let (tx, rx) = match &keys {
            Some((ours, theirs)) => (
                Some(SrtpSender::new(ours.suite, &ours.key)?),
                Some(SrtpReceiver::new(theirs.suite, &theirs.key)?),
            ),
            None => (None, None),
        };
        s.srtp = tx;
        s.srtp_keys = keys;
        drop(s);
        self.lock_recv().srtp = rx;
        Ok(())
    }

    fn send(&self, s: &mut SendState, marker: bool, pt: u8, ts: u32, payload: &[u8]) {
        let Some(remote) = s.remote else { return };
        let mut packet = [0u8; 12 + MAX_RTP_PAYLOAD];
        let n = payload.len().min(MAX_RTP_PAYLOAD);
        let mut header = [0u8; 12];
        write_header(&mut header, marker, pt, s.seq, ts, s.ssrc);
        packet[..12].copy_from_slice(&header);
        packet[12..12 + n].copy_from_slice(&payload[..n]);
        s.seq = s.seq.wrapping_add(1);
        s.packets = s.packets.wrapping_add(1);
        s.octets = s.octets.wrapping_add(n as u32);
        if let Some(srtp) = &mut s.srtp {
            // Protected into a second buffer only on SRTP legs.
            let mut protected = [0u8; 12 + MAX_RTP_PAYLOAD + OVERHEAD];
            match srtp.protect_rtp(&packet[..12 + n], &mut protected) {
                Ok(len) => self.transmit(&protected[..len], remote),
                Err(_) => {
                    self.metrics.rtp_send_dropped.inc();
                }
            }
            return;
        }
        self.transmit(&packet[..12 + n], remote);
    }

    fn transmit(&self, wire: &[u8], remote: SocketAddr) {
        match self.socket.send_to(wire, remote) {
            Ok(_) => self.metrics.rtp_sent.inc(),
            Err(_) => self.metrics.rtp_send_dropped.inc(),
        };
    }

    /// An RTCP report for the supervisor to send, and where to (the peer's RTCP
    /// address, or its RTP port + 1).
    fn rtcp_report(&self) -> Option<(Vec<u8>, SocketAddr)> {
        let (ssrc, ts, packets, octets, remote) = {
            let s = self.lock();
            (s.ssrc, s.ts, s.packets, s.octets, s.remote)
        };
        let report = {
            let mut r = self.lock_recv();
            let to = r
                .rtcp_remote
                .or_else(|| remote.map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))))?;
            let report =
                crate::rtcp::report(ssrc, ts, packets, octets, Some(&mut r.stats), "patchbay");
            (report, to)
        };
        let mut s = self.lock();
        match &mut s.srtp {
            None => Some(report),
            Some(srtp) => {
                let mut out = vec![0u8; report.0.len() + OVERHEAD];
                let n = srtp.protect_rtcp(&report.0, &mut out).ok()?;
                out.truncate(n);
                Some((out, report.1))
            }
        }
    }

    /// Too short to be SRTP at all is malformed; a failed check is an SRTP refusal.
    fn count_srtp_refusal(&self, e: &crate::srtp::SrtpError) {
        match e {
            crate::srtp::SrtpError::Short => self.metrics.rtp_malformed.inc(),
            _ => self.metrics.rtp_srtp_failed.inc(),
        };
    }

    /// RTCP from the peer (checked and decrypted first on an SRTP leg), only from the
    /// leg's source.
    fn on_rtcp(&self, from: SocketAddr, packet: &[u8]) {
        let ours = self.lock().ssrc;
        let mut guard = self.lock_recv();
        let r = &mut *guard;
        if !r.latch.rtcp_allowed(from) {
            self.metrics.rtp_unknown_source.inc();
            return;
        }
        let packet = match &mut r.srtp {
            None => packet,
            Some(srtp) => match srtp.unprotect_rtcp(packet, &mut r.plain[..]) {
                Ok(n) => &r.plain[..n],
                Err(e) => {
                    self.count_srtp_refusal(&e);
                    tracing::debug!(leg = %self.leg, %from, len = packet.len(), error = %e, "SRTCP refused");
                    return;
                }
            },
        };
        self.last_rx_us.store(unix_us(), Ordering::Relaxed);
        r.rtcp_remote = Some(from);
        if let Some(ntp) = crate::rtcp::sender_report_ntp(packet) {
            r.stats.on_sender_report(ntp);
        }
        if let Some(rtt) = crate::rtcp::round_trip(packet, ours) {
            r.rtt = Some(rtt);
        }
    }
}

impl LegSink for RtpSink {
    fn quality(&self) -> Option<patchbay_conference::media::session::LegQuality> {
        let clock = self.lock().clock.max(1) as f64;
        let r = self.lock_recv();
        let (expected, received, jitter) = r.stats.totals()?;
        Some(patchbay_conference::media::session::LegQuality {
            expected,
            received,
            jitter_ms: jitter as f64 * 1000.0 / clock,
            rtt_ms: r.rtt.map(|d| d.as_secs_f64() * 1000.0),
        })
    }

    fn drain(&self, f: &mut dyn FnMut(RtpView<'_>)) {
        let clock = self.lock().clock.max(1) as u64;
        let mut guard = self.lock_recv();
        let RecvState {
            latch,
            stats,
            batch,
            srtp,
            plain,
            ..
        } = &mut *guard;
        let mut read = 0;
        while read < MAX_DRAIN {
            let n = match recv_batch(&self.socket, batch) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            read += n;
            for i in 0..n {
                let got = batch.got[i];
                let (Some(from), false) = (got.from, got.truncated) else {
                    self.metrics.rtp_malformed.inc();
                    continue;
                };
                let arrival = got.arrival_us.unwrap_or_else(unix_us);
                let mut packet = &batch.bufs[i][..got.len];
                if is_rtcp(packet) {
                    // Multiplexed RTCP (RFC 5761) counts as media activity.
                    if !latch.rtcp_allowed(from) {
                        self.metrics.rtp_unknown_source.inc();
                        continue;
                    }
                    let valid = match srtp {
                        None => crate::rtcp::is_valid_rtcp(packet),
                        Some(srtp) => srtp.unprotect_rtcp(packet, &mut plain[..]).is_ok(),
                    };
                    if valid {
                        self.last_rx_us.store(arrival, Ordering::Relaxed);
                        self.metrics.rtcp_received.inc();
                    } else {
                        self.metrics.rtp_malformed.inc();
                    }
                    continue;
                }
                if let Some(srtp) = srtp.as_mut() {
                    // Authenticated before anything else looks at it (the source latch
                    // included): forged packets change nothing.
                    match srtp.unprotect_rtp(packet, &mut plain[..]) {
                        Ok(n) => packet = &plain[..n],
                        Err(e) => {
                            self.count_srtp_refusal(&e);
                            tracing::debug!(leg = %self.leg, %from, len = packet.len(), error = %e, "SRTP refused");
                            continue;
                        }
                    }
                }
                let Some(h) = parse_rtp(packet) else {
                    self.metrics.rtp_malformed.inc();
                    continue;
                };
                if h.payload_end - h.payload_start > MAX_RTP_PAYLOAD {
                    self.metrics.rtp_malformed.inc();
                    continue;
                }
                // Only the leg's source is heard (see `latch`): nothing from elsewhere,
                // and no new source before it proved itself.
                match latch.on_packet(from, h.ssrc, h.seq, arrival) {
                    Verdict::Accept => {}
                    Verdict::Latched(to) => {
                        self.metrics.rtp_source_latched.inc();
                        tracing::debug!(leg = %self.leg, source = %to, "RTP source latched");
                        self.lock().remote = latch.remote();
                    }
                    Verdict::Refused | Verdict::Probation => {
                        self.metrics.rtp_unknown_source.inc();
                        continue;
                    }
                }
                self.last_rx_us.store(arrival, Ordering::Relaxed);
                self.metrics.rtp_received.inc();
                stats.on_rtp(
                    h.ssrc,
                    h.seq,
                    h.timestamp,
                    (arrival as u128 * clock as u128 / 1_000_000) as i64,
                );
                f(RtpView {
                    ssrc: h.ssrc,
                    seq: h.seq,
                    timestamp: h.timestamp,
                    payload_type: h.payload_type,
                    marker: h.marker,
                    arrival_us: arrival,
                    payload: &packet[h.payload_start..h.payload_end],
                });
            }
            if n < BATCH {
                break;
            }
        }
    }

    fn send_audio(&self, payload: &[u8], samples: u32) {
        let mut s = self.lock();
        if s.sending {
            let (marker, pt, ts) = (s.first, s.payload_type, s.ts);
            s.first = false;
            self.send(&mut s, marker, pt, ts, payload);
        }
        s.ts = s.ts.wrapping_add(samples);
    }

    fn send_event(&self, payload: &[u8], start: bool, clock: u32) {
        let mut s = self.lock();
        let (Some(pt), true, Some(p)) = (s.event_payload_type, s.sending, payload.get(..4)) else {
            return;
        };
        if start {
            // The event starts "now" on the audio timeline, told in the event's clock.
            s.event_ts = rescale(s.ts, s.clock, s.event_clock);
        }
        let mut event = [p[0], p[1], p[2], p[3]];
        let duration = u16::from_be_bytes([p[2], p[3]]) as u32;
        event[2..4]
            .copy_from_slice(&rescale_duration(duration, clock, s.event_clock).to_be_bytes());
        let ts = s.event_ts;
        self.send(&mut s, start, pt, ts, &event);
    }

    fn hang_up(&self, reason: HangupReason) {
        let _ = self.ended.send((self.leg, MediaEnd::Session(reason)));
    }
}

/// An RTP timestamp of a `from` Hz clock told in a `to` Hz clock (wrapping like the
/// timestamp itself).
fn rescale(ts: u32, from: u32, to: u32) -> u32 {
    if from == to || from == 0 {
        return ts;
    }
    (ts as u64 * to as u64 / from as u64) as u32
}

/// An RFC 4733 duration of a `from` Hz clock in a `to` Hz clock, saturating at the field's 16 bits.
fn rescale_duration(duration: u32, from: u32, to: u32) -> u16 {
    if from == to || from == 0 {
        return duration.min(u16::MAX as u32) as u16;
    }
    (duration as u64 * to as u64 / from as u64).min(u16::MAX as u64) as u16
}

/// A running leg: its media endpoint and its supervisor (RTCP, RTP timeout).
pub struct RtpLeg {
    pub sink: Arc<RtpSink>,
    pub port: u16,
    expecting: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RtpLeg {
    /// Whether RTP is expected (not on hold as `inactive`/`recvonly` from the peer's side).
    pub fn set_expecting(&self, expecting: bool) {
        self.expecting.store(expecting, Ordering::Relaxed);
    }
}

impl Drop for RtpLeg {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything needed to start a leg's media.
pub struct LegStart {
    pub leg: LegId,
    pub rtp: std::net::UdpSocket,
    pub rtcp: UdpSocket,
    pub timeout: Duration,
    pub ended: mpsc::UnboundedSender<(LegId, MediaEnd)>,
    pub metrics: SipMetrics,
}

pub fn start(l: LegStart) -> std::io::Result<RtpLeg> {
    let port = l.rtp.local_addr()?.port();
    let sink = Arc::new(RtpSink {
        leg: l.leg,
        socket: l.rtp,
        state: Mutex::new(SendState {
            remote: None,
            sending: true,
            ssrc: rand::random(),
            seq: rand::random(),
            ts: rand::random(),
            first: true,
            payload_type: 0,
            event_payload_type: None,
            clock: 8000,
            event_clock: 8000,
            event_ts: 0,
            packets: 0,
            octets: 0,
            srtp_keys: None,
            srtp: None,
        }),
        recv: Mutex::new(RecvState {
            latch: Latch::default(),
            stats: crate::rtcp::ReceiveStats::default(),
            rtcp_remote: None,
            rtt: None,
            batch: Batch::new(),
            srtp: None,
            plain: Box::new([0; DATAGRAM + OVERHEAD]),
        }),
        last_rx_us: AtomicU64::new(unix_us()),
        ended: l.ended.clone(),
        metrics: l.metrics.clone(),
    });
    let expecting = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn(supervise(
        sink.clone(),
        l.rtcp,
        l.timeout,
        expecting.clone(),
        l.metrics,
    ));
    Ok(RtpLeg {
        sink,
        port,
        expecting,
        task,
    })
}

/// RTCP report interval (RFC 3550's 5 s minimum).
const RTCP_INTERVAL: Duration = Duration::from_secs(5);
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// Per leg, twice a second: the RTP timeout; every 5 s: an RTCP report; and the
/// peer's RTCP whenever it comes.
async fn supervise(
    sink: Arc<RtpSink>,
    rtcp: UdpSocket,
    timeout: Duration,
    expecting: Arc<AtomicBool>,
    metrics: SipMetrics,
) {
    let mut buf = [0u8; 1500];
    let mut check = tokio::time::interval(SUPERVISE_EVERY);
    let mut reports =
        tokio::time::interval_at(tokio::time::Instant::now() + RTCP_INTERVAL, RTCP_INTERVAL);
    let timeout_us = timeout.as_micros() as u64;
    loop {
        tokio::select! {
            r = rtcp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if crate::rtcp::is_valid_rtcp(&buf[..n]) {
                    metrics.rtcp_received.inc();
                    sink.on_rtcp(from, &buf[..n]);
                } else {
                    metrics.rtp_malformed.inc();
                }
            }
            _ = reports.tick() => {
                if let Some((report, to)) = sink.rtcp_report() {
                    if rtcp.try_send_to(&report, to).is_ok() {
                        metrics.rtcp_sent.inc();
                    }
                }
            }
            _ = check.tick() => {
                let now = unix_us();
                if !expecting.load(Ordering::Relaxed) {
                    sink.last_rx_us.store(now, Ordering::Relaxed);
                } else if now.saturating_sub(sink.last_rx_us.load(Ordering::Relaxed)) > timeout_us {
                    let _ = sink.ended.send((sink.leg, MediaEnd::RtpTimeout));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut h = [0u8; 12];
        write_header(&mut h, true, 0, 65535, 0xdeadbeef, 42);
        let mut packet = h.to_vec();
        packet.extend_from_slice(&[0xff; 160]);
        let p = parse_rtp(&packet).unwrap();
        assert_eq!(
            (p.marker, p.payload_type, p.seq, p.timestamp, p.ssrc),
            (true, 0, 65535, 0xdeadbeef, 42)
        );
        assert_eq!((p.payload_start, p.payload_end), (12, 172));
    }

    #[test]
    fn csrc_extension_padding() {
        // 1 CSRC, an extension of 1 word, 3 bytes of padding.
        let mut p = vec![0xb1, 0x00, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
        p.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension
        p.extend_from_slice(&[7, 7, 7, 7]); // payload
        p.extend_from_slice(&[0, 0, 3]); // padding
        let h = parse_rtp(&p).unwrap();
        assert_eq!(&p[h.payload_start..h.payload_end], &[7, 7, 7, 7]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_rtp(&[]).is_none());
        assert!(parse_rtp(&[0x80, 0, 0]).is_none());
        assert!(parse_rtp(&[0x40; 20]).is_none()); // version 1
        assert!(parse_rtp(&[0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none()); // 15 CSRCs, no room
        assert!(parse_rtp(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50]).is_none()); // padding > length
        assert!(parse_rtp(&[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none()); // truncated extension
        let mut rtcp = vec![0x80, 200];
        rtcp.extend_from_slice(&[0; 26]);
        assert!(is_rtcp(&rtcp) && parse_rtp(&rtcp).is_none());
    }

    #[test]
    fn event_clocks_are_translated() {
        // 100 ms of an 8 kHz event on a 48 kHz leg, and back.
        assert_eq!(rescale_duration(800, 8000, 48000), 4800);
        assert_eq!(rescale_duration(4800, 48000, 8000), 800);
        assert_eq!(rescale_duration(20_000, 8000, 48000), u16::MAX);
        assert_eq!(rescale_duration(160, 8000, 8000), 160);
        assert_eq!(rescale(48_000, 48000, 8000), 8000);
        assert_eq!(rescale(7, 8000, 8000), 7);
    }
}
