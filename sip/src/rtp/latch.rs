//! Which source a leg's RTP is accepted from, and where its media goes: sans-IO, time
//! passed in.
//!
//! As the most careful gateways do it (rtpengine's strict source, Asterisk's
//! `strictrtp` with probation, FreeSWITCH's NAT auto-adjust only for private SDP
//! addresses):
//! - Media goes to the address the SDP gave.
//! - When that address is public and is the signalling source's, nothing but that IP is
//!   ever accepted and media never goes anywhere else (strict). When it is public but differs from the signalling source,
//!   its IP and the signalling source's may be learned. Only when it is private,
//!   unspecified or absent (a caller behind NAT) may any address be learned.
//! - Learning takes [`PROBATION`] consecutive in-sequence packets (one SSRC, sequence
//!   numbers one apart) from one source; the SDP address itself is taken at once. On
//!   SRTP legs only authenticated packets reach the latch, and one suffices.
//! - Once a source has sent, another one takes over only after it proved itself the
//!   same way *and* the live source has been silent for [`SILENCE_US`]; a source on the
//!   signalling IP is preferred (it may replace a learned source elsewhere at once).
//! - Packets that are not from the live source are never delivered (probation included).

use std::net::{IpAddr, SocketAddr};

/// In-sequence packets a new source of plain RTP sends before it is believed.
pub const PROBATION: u8 = 4;
/// How long the live source must have been silent before another takes over (µs).
pub const SILENCE_US: u64 = 2_000_000;

/// What the latch makes of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the live source: deliver it.
    Accept,
    /// From a new source that just proved itself: deliver it; media now goes there.
    Latched(SocketAddr),
    /// From an address that may never send to this leg.
    Refused,
    /// From a source still on probation (or waiting for the live one's silence).
    Probation,
}

/// Which addresses may become the leg's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The SDP's IP only.
    Strict(IpAddr),
    /// The SDP's IP or the signalling source's.
    Either(IpAddr, IpAddr),
    /// Anywhere (the SDP address is private, unspecified or absent).
    Any,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    from: SocketAddr,
    ssrc: u32,
    next_seq: u16,
    count: u8,
}

/// One leg's source latch.
#[derive(Debug)]
pub struct Latch {
    sdp: Option<SocketAddr>,
    signalling: Option<IpAddr>,
    scope: Scope,
    /// Packets reaching the latch are authenticated (SRTP): one proves a source.
    authenticated: bool,
    /// The live source and when it last sent (µs).
    live: Option<(SocketAddr, u64)>,
    candidate: Option<Candidate>,
}

impl Default for Latch {
    fn default() -> Self {
        Latch {
            sdp: None,
            signalling: None,
            scope: Scope::Any,
            authenticated: false,
            live: None,
            candidate: None,
        }
    }
}

/// Addresses that say "behind NAT" in an SDP: RFC 1918, shared (RFC 6598), link-local,
/// unique-local, unspecified.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            v6.is_unspecified() || (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

impl Latch {
    /// What the signalling said: the SDP's media address (a new one starts learning
    /// anew), the signalling source's IP, and whether packets arrive authenticated.
    pub fn configure(
        &mut self,
        sdp: Option<SocketAddr>,
        signalling: Option<IpAddr>,
        authenticated: bool,
    ) {
        if sdp.is_some() && sdp != self.sdp {
            self.sdp = sdp;
            self.live = None;
            self.candidate = None;
        }
        self.signalling = signalling;
        self.authenticated = authenticated;
        self.scope = match (self.sdp.map(|a| a.ip()), signalling) {
            (Some(ip), _) if is_private(ip) => Scope::Any,
            (Some(ip), Some(sig)) if ip != sig => Scope::Either(ip, sig),
            (Some(ip), _) => Scope::Strict(ip),
            (None, _) => Scope::Any,
        };
    }

    /// Where media goes: the SDP address; where latching is allowed (not strict), the
    /// live source once one sent.
    pub fn remote(&self) -> Option<SocketAddr> {
        match self.scope {
            Scope::Strict(_) => self.sdp,
            _ => self.live.map(|(a, _)| a).or(self.sdp),
        }
    }

    /// The live source's address, if one has sent.
    pub fn live(&self) -> Option<SocketAddr> {
        self.live.map(|(a, _)| a)
    }

    /// Whether RTCP from `from` belongs to the leg: from the live source's IP (its
    /// RTCP port may be anything), or before any source, from one the scope allows.
    pub fn rtcp_allowed(&self, from: SocketAddr) -> bool {
        match self.live {
            Some((live, _)) => live.ip() == from.ip(),
            None => self.in_scope(from.ip()),
        }
    }

    fn in_scope(&self, ip: IpAddr) -> bool {
        match self.scope {
            Scope::Strict(a) => ip == a,
            Scope::Either(a, b) => ip == a || ip == b,
            Scope::Any => true,
        }
    }

    /// An RTP packet (already authenticated on SRTP legs) from `from` at `now_us`.
    pub fn on_packet(&mut self, from: SocketAddr, ssrc: u32, seq: u16, now_us: u64) -> Verdict {
        if let Some((live, seen)) = &mut self.live {
            if *live == from {
                *seen = now_us;
                return Verdict::Accept;
            }
        }
        if !self.in_scope(from.ip()) {
            return Verdict::Refused;
        }
        let proven = if self.live.is_none() && Some(from) == self.sdp {
            // The address the signalling gave is believed at once.
            true
        } else {
            self.prove(from, ssrc, seq)
        };
        if !proven {
            return Verdict::Probation;
        }
        let takes_over = match self.live {
            None => true,
            Some((live, seen)) => {
                let preferred = |ip: IpAddr| Some(ip) == self.signalling;
                now_us.saturating_sub(seen) >= SILENCE_US
                    || (preferred(from.ip()) && !preferred(live.ip()))
            }
        };
        if !takes_over {
            return Verdict::Probation;
        }
        self.live = Some((from, now_us));
        self.candidate = None;
        Verdict::Latched(from)
    }

    /// One more packet of a would-be source; whether it has now proved itself.
    fn prove(&mut self, from: SocketAddr, ssrc: u32, seq: u16) -> bool {
        let needed = if self.authenticated { 1 } else { PROBATION };
        let preferred = |ip: IpAddr| Some(ip) == self.signalling;
        let c = match &mut self.candidate {
            Some(c) if c.from == from => {
                if c.ssrc == ssrc && c.next_seq == seq {
                    c.count = c.count.saturating_add(1);
                } else {
                    c.ssrc = ssrc;
                    c.count = 1;
                }
                c.next_seq = seq.wrapping_add(1);
                *c
            }
            // A would-be source on the signalling IP is not displaced by one elsewhere.
            Some(c) if preferred(c.from.ip()) && !preferred(from.ip()) => return false,
            _ => {
                let c = Candidate {
                    from,
                    ssrc,
                    next_seq: seq.wrapping_add(1),
                    count: 1,
                };
                self.candidate = Some(c);
                c
            }
        };
        c.count >= needed
    }
}

#[cfg(test)]
mod tests;
