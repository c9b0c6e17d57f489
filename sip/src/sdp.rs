//! SDP offer/answer for SIP legs (RFC 4566, RFC 3264): one audio stream of
//! PCMU, PCMA, G.722 or Opus, plus RFC 4733 `telephone-event`.

use std::net::{IpAddr, SocketAddr};

use patchbay_conference::media::codec::AudioCodec;

mod crypto;
pub use crypto::{Crypto, SrtpMode};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP: {0}")]
    Malformed(String),
    #[error("no common codec")]
    NoCodec,
    #[error("SRTP (RTP/SAVP) without a usable a=crypto")]
    NoCrypto,
    #[error("plain RTP where SRTP is required")]
    SrtpRequired,
}

/// Media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// What we answer to this offered direction.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether we may send media in this (our) direction.
    pub fn we_send(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether we expect media in this (our) direction.
    pub fn we_receive(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtpmap {
    pub payload_type: u8,
    pub name: String,
    pub clock: u32,
    pub channels: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<Rtpmap>,
    pub ptime: Option<u32>,
    pub direction: Option<Direction>,
    /// `a=crypto` values (RFC 4568), in order.
    pub crypto: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Sdp {
    pub connection: Option<IpAddr>,
    pub direction: Option<Direction>,
    pub media: Vec<Media>,
}

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut f = value.split_whitespace();
    let (_net, _family, addr) = (f.next(), f.next(), f.next());
    let addr = addr
        .ok_or_else(|| SdpError::Malformed("bad c= line".into()))?
        .split('/')
        .next()
        .unwrap_or("");
    addr.parse()
        .map_err(|_| SdpError::Malformed(format!("bad connection address `{addr}`")))
}

fn parse_direction(attr: &str) -> Option<Direction> {
    match attr {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

/// Parse an SDP body.
pub fn parse(text: &str) -> Result<Sdp, SdpError> {
    let mut sdp = Sdp {
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    let mut seen_v = false;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return Err(SdpError::Malformed(format!("line without `=`: {line:.40}")));
        };
        match kind {
            "v" => seen_v = true,
            "c" => {
                let ip = parse_connection(value)?;
                match sdp.media.last_mut() {
                    Some(m) => m.connection = Some(ip),
                    None => sdp.connection = Some(ip),
                }
            }
            "m" => {
                let mut f = value.split_whitespace();
                let kind = f.next().unwrap_or("").to_string();
                let port_text = f.next().unwrap_or("");
                let port = port_text
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|_| SdpError::Malformed(format!("bad m= port `{port_text}`")))?;
                let proto = f.next().unwrap_or("").to_string();
                let formats: Vec<String> = f.map(str::to_string).collect();
                if kind.is_empty() || proto.is_empty() {
                    return Err(SdpError::Malformed("bad m= line".into()));
                }
                sdp.media.push(Media {
                    kind,
                    port,
                    proto,
                    formats,
                    connection: None,
                    rtpmaps: Vec::new(),
                    ptime: None,
                    direction: None,
                    crypto: Vec::new(),
                });
            }
            "a" => {
                let (name, val) = value.split_once(':').unwrap_or((value, ""));
                if let Some(d) = parse_direction(name) {
                    match sdp.media.last_mut() {
                        Some(m) => m.direction = Some(d),
                        None => sdp.direction = Some(d),
                    }
                    continue;
                }
                let Some(m) = sdp.media.last_mut() else {
                    continue;
                };
                match name {
                    "rtpmap" => {
                        let (pt, enc) = val.split_once(' ').unwrap_or((val, ""));
                        let mut e = enc.trim().split('/');
                        let (Ok(payload_type), Some(name), Some(Ok(clock))) = (
                            pt.trim().parse::<u8>(),
                            e.next(),
                            e.next().map(|c| c.parse::<u32>()),
                        ) else {
                            return Err(SdpError::Malformed(format!("bad rtpmap `{val:.40}`")));
                        };
                        let channels = e.next().and_then(|c| c.parse().ok());
                        m.rtpmaps.push(Rtpmap {
                            payload_type,
                            name: name.to_string(),
                            clock,
                            channels,
                        });
                    }
                    "ptime" => m.ptime = val.trim().parse().ok(),
                    // Bounded: a peer offers a handful of suites.
                    "crypto" if m.crypto.len() < 16 => m.crypto.push(val.trim().to_string()),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !seen_v {
        return Err(SdpError::Malformed("no v= line".into()));
    }
    Ok(sdp)
}

/// The outcome of negotiating the audio stream of an offer (or answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: AudioCodec,
    pub payload_type: u8,
    pub event_payload_type: Option<u8>,
    /// Clock of that telephone-event: the codec's if offered, else 8000 (Opus offers
    /// from softphones), else whatever was offered.
    pub event_clock: u32,
    pub ptime_ms: u32,
    /// Where the peer wants RTP (None: port 0 or a hold address).
    pub remote: Option<SocketAddr>,
    /// Our direction.
    pub direction: Direction,
    /// Index of the audio m-line in the offer.
    pub media_index: usize,
    /// The peer's SRTP parameters (SDES), when the stream is SRTP.
    pub srtp: Option<Crypto>,
}

fn rtpmap_of(m: &Media, pt: u8) -> Option<(String, u32, Option<u32>)> {
    if let Some(r) = m.rtpmaps.iter().find(|r| r.payload_type == pt) {
        return Some((r.name.clone(), r.clock, r.channels));
    }
    match pt {
        0 => Some(("PCMU".into(), 8000, None)),
        8 => Some(("PCMA".into(), 8000, None)),
        9 => Some(("G722".into(), 8000, None)),
        _ => None,
    }
}

/// Whether a transport protocol is one we speak, and whether it is SRTP.
fn rtp_profile(proto: &str) -> Option<bool> {
    match proto {
        "RTP/AVP" | "RTP/AVPF" => Some(false),
        "RTP/SAVP" | "RTP/SAVPF" => Some(true),
        _ => None,
    }
}

/// Pick the first codec of the peer's list that we support, on its first audio stream;
/// SRTP when it is RTP/SAVP (which needs a usable `a=crypto`) or when RTP/AVP carries
/// a usable `a=crypto` (best effort). `mode` Require refuses plain RTP.
pub fn negotiate(sdp: &Sdp, mode: SrtpMode) -> Result<Negotiated, SdpError> {
    for (index, m) in sdp.media.iter().enumerate() {
        let Some(savp) = rtp_profile(&m.proto) else {
            continue;
        };
        if m.kind != "audio" || m.port == 0 {
            continue;
        }
        let srtp = crypto::choose(&m.crypto);
        if savp && srtp.is_none() {
            return Err(SdpError::NoCrypto);
        }
        if mode == SrtpMode::Require && srtp.is_none() {
            return Err(SdpError::SrtpRequired);
        }
        let mut chosen = None;
        let mut events = Vec::new();
        for f in &m.formats {
            let Ok(pt) = f.parse::<u8>() else { continue };
            let Some((name, clock, channels)) = rtpmap_of(m, pt) else {
                continue;
            };
            if name.eq_ignore_ascii_case("telephone-event") {
                events.push((pt, clock));
                continue;
            }
            if chosen.is_some() {
                continue;
            }
            if let Some(codec) = AudioCodec::from_rtpmap(&name, clock) {
                if codec == AudioCodec::Opus && channels.is_some_and(|c| c != 2) {
                    continue;
                }
                chosen = Some((codec, pt));
            }
        }
        let Some((codec, payload_type)) = chosen else {
            return Err(SdpError::NoCodec);
        };
        let event = events
            .iter()
            .find(|(_, clock)| *clock == codec.rtp_clock())
            .or_else(|| events.iter().find(|(_, clock)| *clock == 8000))
            .or_else(|| events.first());
        let event_payload_type = event.map(|(pt, _)| *pt);
        let event_clock = event.map_or(codec.rtp_clock(), |(_, clock)| *clock);
        let ptime_ms = m.ptime.map_or(20, |p| (p.clamp(10, 60) / 10) * 10);
        let connection = m.connection.or(sdp.connection);
        let hold_address = connection.is_some_and(|ip| ip.is_unspecified());
        let remote = connection
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| SocketAddr::new(ip, m.port));
        let offered = m.direction.or(sdp.direction).unwrap_or(Direction::SendRecv);
        let mut direction = offered.reversed();
        if hold_address && direction.we_send() {
            direction = if direction == Direction::SendRecv {
                Direction::RecvOnly
            } else {
                Direction::Inactive
            };
        }
        return Ok(Negotiated {
            codec,
            payload_type,
            event_payload_type,
            event_clock,
            ptime_ms,
            remote,
            direction,
            media_index: index,
            srtp,
        });
    }
    Err(SdpError::NoCodec)
}

fn rtpmap_line(codec: AudioCodec, pt: u8) -> String {
    match codec {
        AudioCodec::Opus => format!("a=rtpmap:{pt} opus/48000/2\r\n"),
        c => format!("a=rtpmap:{pt} {}/{}\r\n", c.encoding_name(), c.rtp_clock()),
    }
}

fn header(ip: IpAddr, session_id: u64, version: u64) -> String {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=patchbay {session_id} {version} IN {family} {ip}\r\ns=patchbay\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    )
}

/// Our answer to `offer`, with the negotiated audio on `port` and every other stream
/// rejected; `local` is our SRTP key when the stream is SRTP.
pub fn answer(
    offer: &Sdp,
    n: &Negotiated,
    local: Option<&Crypto>,
    at: (IpAddr, u16),
    session_id: u64,
    version: u64,
) -> String {
    let (ip, port) = at;
    let mut out = header(ip, session_id, version);
    for (i, m) in offer.media.iter().enumerate() {
        if i != n.media_index {
            let fmt = m.formats.first().map(String::as_str).unwrap_or("0");
            out.push_str(&format!("m={} 0 {} {fmt}\r\n", m.kind, m.proto));
            continue;
        }
        let mut fmts = n.payload_type.to_string();
        if let Some(e) = n.event_payload_type {
            fmts.push_str(&format!(" {e}"));
        }
        out.push_str(&format!("m=audio {port} {} {fmts}\r\n", m.proto));
        out.push_str(&rtpmap_line(n.codec, n.payload_type));
        if let Some(e) = n.event_payload_type {
            out.push_str(&format!(
                "a=rtpmap:{e} telephone-event/{}\r\na=fmtp:{e} 0-16\r\n",
                n.event_clock
            ));
        }
        out.push_str(&format!(
            "a=ptime:{}\r\na={}\r\n",
            n.ptime_ms,
            n.direction.as_str()
        ));
        if let (Some(_), Some(c)) = (n.srtp, local) {
            out.push_str(&c.line());
        }
    }
    out
}

/// Our offer (for an INVITE without SDP, or an outbound call), with `crypto` lines
/// when SRTP is offered (RTP/SAVP when `mode` requires it).
pub fn offer(
    at: (IpAddr, u16),
    crypto: &[Crypto],
    mode: SrtpMode,
    session_id: u64,
    version: u64,
) -> String {
    offer_with(at, crypto, mode, session_id, version, Direction::SendRecv)
}

/// [`offer`] with another direction (`sendonly` holds the peer).
pub fn offer_with(
    at: (IpAddr, u16),
    crypto: &[Crypto],
    mode: SrtpMode,
    session_id: u64,
    version: u64,
    direction: Direction,
) -> String {
    let (ip, port) = at;
    let mut out = header(ip, session_id, version);
    let proto = if mode == SrtpMode::Require {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    out.push_str(&format!("m=audio {port} {proto} 0 8 9 111 101 110\r\n"));
    for (codec, pt) in [
        (AudioCodec::Pcmu, 0),
        (AudioCodec::Pcma, 8),
        (AudioCodec::G722, 9),
        (AudioCodec::Opus, 111),
    ] {
        out.push_str(&rtpmap_line(codec, pt));
    }
    out.push_str(
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
         a=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-16\r\na=ptime:20\r\n",
    );
    out.push_str(&format!("a={}\r\n", direction.as_str()));
    if mode != SrtpMode::Off {
        for c in crypto {
            out.push_str(&c.line());
        }
    }
    out
}

#[cfg(test)]
mod tests;
