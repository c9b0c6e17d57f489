//! RTP for SIP legs: header parsing and writing, the leg's socket task
//! (symmetric RTP, RTP timeout) and its [`LegSink`], through which the session
//! actor sends the leg's mix.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchbay_conference::media::session::{
    HangupReason, LegId, LegSink, RtpIn, SessionHandle, SessionInput, MAX_RTP_PAYLOAD,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::metrics::SipMetrics;

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

/// Hands out even RTP ports (RTCP on the odd one above) from the configured range.
pub struct PortAllocator {
    low: u16,
    high: u16,
    next: AtomicU16,
}

impl PortAllocator {
    pub fn new(low: u16, high: u16) -> PortAllocator {
        let low = low + (low % 2);
        PortAllocator {
            low,
            high,
            next: AtomicU16::new(low),
        }
    }

    /// Bind an RTP/RTCP socket pair on `ip` (must run inside a tokio runtime).
    pub fn bind(&self, ip: IpAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
        let span = ((self.high.saturating_sub(self.low)) / 2).max(1);
        for _ in 0..span {
            let mut port = self.next.fetch_add(2, Ordering::Relaxed);
            if port < self.low || port >= self.high {
                self.next.store(self.low + 2, Ordering::Relaxed);
                port = self.low;
            }
            let Ok(rtp) = std::net::UdpSocket::bind(SocketAddr::new(ip, port)) else {
                continue;
            };
            let Ok(rtcp) = std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) else {
                continue;
            };
            rtp.set_nonblocking(true)?;
            rtcp.set_nonblocking(true)?;
            return Ok((UdpSocket::from_std(rtp)?, UdpSocket::from_std(rtcp)?));
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
    remote: Option<SocketAddr>,
    latched: bool,
    sending: bool,
    ssrc: u32,
    seq: u16,
    ts: u32,
    first: bool,
    payload_type: u8,
    event_payload_type: Option<u8>,
    clock: u32,
    event_ts: u32,
    packets: u32,
    octets: u32,
}

/// The leg's outgoing side, called by the session actor.
pub struct RtpSink {
    leg: LegId,
    socket: Arc<UdpSocket>,
    state: Mutex<SendState>,
    ended: mpsc::UnboundedSender<(LegId, MediaEnd)>,
    metrics: SipMetrics,
}

impl RtpSink {
    fn lock(&self) -> std::sync::MutexGuard<'_, SendState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Update what was negotiated (re-INVITE): where to send, whether to send, payload types.
    pub fn configure(
        &self,
        remote: Option<SocketAddr>,
        sending: bool,
        payload_type: u8,
        event_payload_type: Option<u8>,
        clock: u32,
    ) {
        let mut s = self.lock();
        if remote != s.remote && !s.latched {
            s.remote = remote;
        } else if remote.is_some() && remote != s.remote {
            // A new address in a re-INVITE wins over the latched one.
            s.remote = remote;
            s.latched = false;
        }
        s.sending = sending;
        s.payload_type = payload_type;
        s.event_payload_type = event_payload_type;
        s.clock = clock;
    }

    /// Symmetric RTP: send where the peer's RTP comes from.
    fn latch(&self, from: SocketAddr) {
        let mut s = self.lock();
        s.remote = Some(from);
        s.latched = true;
    }

    /// (SSRC, current RTP timestamp, packets sent, octets sent, where RTP goes) for RTCP.
    fn sender_info(&self) -> (u32, u32, u32, u32, Option<SocketAddr>) {
        let s = self.lock();
        (s.ssrc, s.ts, s.packets, s.octets, s.remote)
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
        match self.socket.try_send_to(&packet[..12 + n], remote) {
            Ok(_) => self.metrics.rtp_sent.inc(),
            Err(_) => self.metrics.rtp_send_dropped.inc(),
        };
    }
}

impl LegSink for RtpSink {
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
            s.event_ts = s.ts;
        }
        let mut event = [p[0], p[1], p[2], p[3]];
        if clock != s.clock && clock > 0 {
            let d = u16::from_be_bytes([p[2], p[3]]) as u64 * s.clock as u64 / clock as u64;
            event[2..4].copy_from_slice(&(d.min(u16::MAX as u64) as u16).to_be_bytes());
        }
        let ts = s.event_ts;
        self.send(&mut s, start, pt, ts, &event);
    }

    fn hang_up(&self, reason: HangupReason) {
        let _ = self.ended.send((self.leg, MediaEnd::Session(reason)));
    }
}

/// A running leg: its sink and receive task.
pub struct RtpLeg {
    pub sink: Arc<RtpSink>,
    pub port: u16,
    expecting: Arc<std::sync::atomic::AtomicBool>,
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
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub session: SessionHandle,
    pub timeout: Duration,
    pub ended: mpsc::UnboundedSender<(LegId, MediaEnd)>,
    pub metrics: SipMetrics,
}

pub fn start(l: LegStart) -> std::io::Result<RtpLeg> {
    let port = l.rtp.local_addr()?.port();
    let socket = Arc::new(l.rtp);
    let sink = Arc::new(RtpSink {
        leg: l.leg,
        socket: socket.clone(),
        state: Mutex::new(SendState {
            remote: None,
            latched: false,
            sending: true,
            ssrc: rand::random(),
            seq: rand::random(),
            ts: rand::random(),
            first: true,
            payload_type: 0,
            event_payload_type: None,
            clock: 8000,
            event_ts: 0,
            packets: 0,
            octets: 0,
        }),
        ended: l.ended.clone(),
        metrics: l.metrics.clone(),
    });
    let expecting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let task = tokio::spawn(receive(
        l.leg,
        socket,
        l.rtcp,
        l.session,
        sink.clone(),
        l.timeout,
        l.ended,
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

/// How long the latched source must be silent before RTP from another address is accepted.
const RELATCH_AFTER: Duration = Duration::from_secs(1);
/// RTCP report interval (RFC 3550's 5 s minimum).
const RTCP_INTERVAL: Duration = Duration::from_secs(5);

#[allow(clippy::too_many_arguments)]
async fn receive(
    leg: LegId,
    socket: Arc<UdpSocket>,
    rtcp: UdpSocket,
    session: SessionHandle,
    sink: Arc<RtpSink>,
    timeout: Duration,
    ended: mpsc::UnboundedSender<(LegId, MediaEnd)>,
    expecting: Arc<std::sync::atomic::AtomicBool>,
    metrics: SipMetrics,
) {
    let mut buf = [0u8; 2048];
    let mut rtcp_buf = [0u8; 1500];
    let mut last_rx = Instant::now();
    let mut source: Option<(SocketAddr, Instant)> = None;
    let mut rtcp_remote: Option<SocketAddr> = None;
    let mut stats = crate::rtcp::ReceiveStats::default();
    let epoch = Instant::now();
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let mut reports =
        tokio::time::interval_at(tokio::time::Instant::now() + RTCP_INTERVAL, RTCP_INTERVAL);
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let packet = &buf[..n];
                if is_rtcp(packet) {
                    // Multiplexed RTCP (RFC 5761) counts as media activity.
                    if crate::rtcp::is_valid_rtcp(packet) {
                        last_rx = Instant::now();
                        metrics.rtcp_received.inc();
                    } else {
                        metrics.rtp_malformed.inc();
                    }
                    continue;
                }
                let Some(h) = parse_rtp(packet) else {
                    metrics.rtp_malformed.inc();
                    continue;
                };
                let payload = &packet[h.payload_start..h.payload_end];
                if payload.len() > MAX_RTP_PAYLOAD {
                    metrics.rtp_malformed.inc();
                    continue;
                }
                let now = Instant::now();
                // Symmetric RTP, locked to one source: another address is ignored while the
                // latched one is alive (no injection), and taken over once it has gone quiet
                // (a NAT rebinding).
                match source {
                    Some((addr, seen)) if addr != from && now.duration_since(seen) < RELATCH_AFTER => {
                        metrics.rtp_unknown_source.inc();
                        continue;
                    }
                    _ => {
                        if source.map(|(a, _)| a) != Some(from) {
                            sink.latch(from);
                        }
                        source = Some((from, now));
                    }
                }
                last_rx = now;
                metrics.rtp_received.inc();
                let clock = session_clock_units(epoch, now, &sink);
                stats.on_rtp(h.ssrc, h.seq, h.timestamp, clock);
                let mut input = RtpIn {
                    leg,
                    ssrc: h.ssrc,
                    seq: h.seq,
                    timestamp: h.timestamp,
                    payload_type: h.payload_type,
                    marker: h.marker,
                    arrival: now,
                    len: payload.len() as u16,
                    data: [0; MAX_RTP_PAYLOAD],
                };
                input.data[..payload.len()].copy_from_slice(payload);
                if !session.send(SessionInput::Rtp(input)) {
                    return;
                }
            }
            r = rtcp.recv_from(&mut rtcp_buf) => {
                let Ok((n, from)) = r else { continue };
                let packet = &rtcp_buf[..n];
                if !crate::rtcp::is_valid_rtcp(packet) {
                    metrics.rtp_malformed.inc();
                    continue;
                }
                last_rx = Instant::now();
                rtcp_remote = Some(from);
                metrics.rtcp_received.inc();
                if let Some(ntp) = crate::rtcp::sender_report_ntp(packet) {
                    stats.on_sender_report(ntp);
                }
            }
            _ = reports.tick() => {
                let (ssrc, ts, packets, octets, remote) = sink.sender_info();
                let to = rtcp_remote.or_else(|| remote.map(|r| SocketAddr::new(r.ip(), r.port().wrapping_add(1))));
                if let Some(to) = to {
                    let report = crate::rtcp::report(ssrc, ts, packets, octets, Some(&mut stats), "patchbay");
                    if rtcp.try_send_to(&report, to).is_ok() {
                        metrics.rtcp_sent.inc();
                    }
                }
            }
            _ = check.tick() => {
                if !expecting.load(Ordering::Relaxed) {
                    last_rx = Instant::now();
                } else if last_rx.elapsed() > timeout {
                    let _ = ended.send((leg, MediaEnd::RtpTimeout));
                    return;
                }
            }
        }
    }
}

/// Arrival time in the leg's RTP clock units, for jitter.
fn session_clock_units(epoch: Instant, now: Instant, sink: &RtpSink) -> i64 {
    let clock = sink.lock().clock.max(1) as i64;
    (now.duration_since(epoch).as_micros() as i64) * clock / 1_000_000
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
}
