//! WebRTC for browser devices: all WebRTC media on one UDP socket, demultiplexed
//! to the session actors that own the devices' peer connections (str0m, ICE-lite).
//!
//! A new remote address is routed by the ICE username of its first STUN binding
//! request (`<our ufrag>:<their ufrag>`; each peer connection registers its ufrag);
//! after that by address. Everything else about a peer connection happens inside
//! its session's actor.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

use super::session::{SessionHandle, SessionInput};

/// Largest datagram carried to an actor.
pub const MAX_DATAGRAM: usize = 1500;

/// One datagram for a session's peer connections, inline (no allocation per packet).
pub struct WebRtcIn {
    pub from: SocketAddr,
    pub len: u16,
    pub data: [u8; MAX_DATAGRAM],
}

impl WebRtcIn {
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
}

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, SessionHandle>,
    by_addr: HashMap<SocketAddr, SessionHandle>,
}

/// Counters of the WebRTC transport.
#[derive(Debug, Default)]
pub struct WebRtcStats {
    pub datagrams_in: AtomicU64,
    pub unroutable: AtomicU64,
    pub datagrams_out: AtomicU64,
}

/// The shared WebRTC socket.
pub struct WebRtcTransport {
    socket: UdpSocket,
    local: SocketAddr,
    routes: Mutex<Routes>,
    pub stats: WebRtcStats,
}

impl WebRtcTransport {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Arc<WebRtcTransport>> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        Ok(Arc::new(WebRtcTransport {
            socket,
            local,
            routes: Mutex::new(Routes::default()),
            stats: WebRtcStats::default(),
        }))
    }

    /// The address in our ICE candidates.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Route STUN binding requests for `ufrag` to `session`.
    pub fn register(&self, ufrag: &str, session: SessionHandle) {
        self.routes().by_ufrag.insert(ufrag.to_string(), session);
    }

    /// Forget a peer connection's ufrag and the addresses routed with it.
    pub fn unregister(&self, ufrag: &str) {
        let mut r = self.routes();
        if let Some(h) = r.by_ufrag.remove(ufrag) {
            r.by_addr.retain(|_, v| !v.same_session(&h));
        }
    }

    /// Send one datagram (non-blocking; dropped if the socket buffer is full).
    pub fn send(&self, to: SocketAddr, data: &[u8]) {
        if self.socket.try_send_to(data, to).is_ok() {
            self.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Send every datagram of `batch` (draining it) with as few `sendmmsg` calls as
    /// possible; what the socket buffer cannot take is dropped, as with [`Self::send`].
    pub fn send_batch(&self, batch: &mut Vec<(SocketAddr, Vec<u8>)>) {
        use std::os::fd::AsRawFd;
        const MAX: usize = 64;
        let fd = self.socket.as_raw_fd();
        for chunk in batch.chunks(MAX) {
            // SAFETY: all-zero is a valid value for these plain C structs.
            let mut addrs: [libc::sockaddr_storage; MAX] = unsafe { std::mem::zeroed() };
            let mut iovs: [libc::iovec; MAX] = unsafe { std::mem::zeroed() };
            let mut msgs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
            for (i, (to, data)) in chunk.iter().enumerate() {
                let len = sockaddr(to, &mut addrs[i]);
                iovs[i] = libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                };
                let h = &mut msgs[i].msg_hdr;
                h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = len;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
            }
            let mut sent = 0;
            while sent < chunk.len() {
                // SAFETY: each header points at a live address and buffer of the lengths it
                // declares, for the whole call; the kernel only reads them.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        msgs[sent..].as_mut_ptr(),
                        (chunk.len() - sent) as _,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    // Full buffer or an error on the first message: drop it, go on.
                    sent += 1;
                    continue;
                }
                sent += n as usize;
                self.stats
                    .datagrams_out
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        batch.clear();
    }

    /// Read datagrams forever, handing each to its session.
    pub async fn run(self: Arc<Self>) {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = self.socket.recv_from(&mut buf).await else {
                continue;
            };
            self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            if n > MAX_DATAGRAM {
                self.stats.unroutable.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let route = {
                let mut r = self.routes();
                match r.by_addr.get(&from) {
                    Some(h) => Some(h.clone()),
                    None => {
                        match stun_local_ufrag(&buf[..n]).and_then(|u| r.by_ufrag.get(u).cloned()) {
                            Some(h) => {
                                r.by_addr.insert(from, h.clone());
                                Some(h)
                            }
                            None => None,
                        }
                    }
                }
            };
            let Some(session) = route else {
                self.stats.unroutable.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut input = WebRtcIn {
                from,
                len: n as u16,
                data: [0; MAX_DATAGRAM],
            };
            input.data[..n].copy_from_slice(&buf[..n]);
            session.send(SessionInput::WebRtc(input));
        }
    }
}

/// Our ufrag from a STUN binding request's USERNAME (`ours:theirs`), if `buf` is one.
fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    // RFC 5389: type (2, top bits 00), length (2), magic cookie, transaction id (12).
    if buf.len() < 20 || buf[0] & 0xc0 != 0 || buf[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let attrs = buf.get(20..20 + len)?;
    let mut off = 0;
    while off + 4 <= attrs.len() {
        let kind = u16::from_be_bytes([attrs[off], attrs[off + 1]]);
        let alen = u16::from_be_bytes([attrs[off + 2], attrs[off + 3]]) as usize;
        let value = attrs.get(off + 4..off + 4 + alen)?;
        if kind == 0x0006 {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next();
        }
        off += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// Reject (port 0) every `m=audio`/`m=video` section whose kind is not allowed, so the
/// answer refuses it and nothing of it is ever received.
pub fn reject_kinds(sdp: &str, allow_audio: bool, allow_video: bool) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let refused = (!allow_audio && line.starts_with("m=audio "))
            || (!allow_video && line.starts_with("m=video "));
        if refused {
            let mut parts: Vec<&str> = line.trim_end().split(' ').collect();
            if parts.len() > 1 {
                parts[1] = "0";
            }
            out.push_str(&parts.join(" "));
            out.push_str("\r\n");
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The `a=ice-ufrag` of an SDP.
pub fn sdp_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
}

/// A track a device publishes, from its offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    pub mid: String,
    /// `AUDIO` or `VIDEO`.
    pub kind: &'static str,
    /// The msid stream id (the SDK's MediaStream id, the `streamMetadata` key).
    pub stream: String,
    pub track: String,
}

/// One m-section of an offer while it is being read.
#[derive(Default)]
struct Section {
    kind: Option<&'static str>,
    inactive: bool,
    mid: Option<String>,
    msid: Option<(String, String)>,
}

impl Section {
    fn track(self) -> Option<OfferedTrack> {
        match self {
            Section {
                kind: Some(kind),
                inactive: false,
                mid: Some(mid),
                msid: Some((stream, track)),
            } => Some(OfferedTrack {
                mid,
                kind,
                stream,
                track,
            }),
            _ => None,
        }
    }
}

/// The sending tracks of an offer, in m-line order.
pub fn offered_tracks(sdp: &str) -> Vec<OfferedTrack> {
    let mut out = Vec::new();
    let mut cur: Option<Section> = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            out.extend(cur.take().and_then(Section::track));
            let mut f = m.split_whitespace();
            let kind = match f.next() {
                Some("audio") => Some("AUDIO"),
                Some("video") => Some("VIDEO"),
                _ => None,
            };
            cur = Some(Section {
                kind,
                inactive: f.next() == Some("0"),
                ..Section::default()
            });
        } else if let Some(sec) = cur.as_mut() {
            if line == "a=inactive" || line == "a=recvonly" {
                sec.inactive = true;
            } else if let Some(v) = line.strip_prefix("a=mid:") {
                sec.mid = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("a=msid:") {
                let mut f = v.split_whitespace();
                if let (Some(s), Some(t)) = (f.next(), f.next()) {
                    if s != "-" {
                        sec.msid = Some((s.to_string(), t.to_string()));
                    }
                }
            }
        }
    }
    out.extend(cur.take().and_then(Section::track));
    out
}

/// Media streams of an offer: msid stream id → media kinds (`AUDIO`, `VIDEO`), in order.
pub fn offered_streams(sdp: &str) -> Vec<(String, Vec<&'static str>)> {
    let mut out: Vec<(String, Vec<&'static str>)> = Vec::new();
    let mut kind: Option<&'static str> = None;
    let mut inactive = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            kind = match m.split_whitespace().next() {
                Some("audio") => Some("AUDIO"),
                Some("video") => Some("VIDEO"),
                _ => None,
            };
            inactive = m.split_whitespace().nth(1) == Some("0");
        } else if line == "a=inactive" || line == "a=recvonly" {
            inactive = true;
        } else if let (Some(k), false, Some(msid)) = (kind, inactive, line.strip_prefix("a=msid:"))
        {
            let stream = msid.split_whitespace().next().unwrap_or("").to_string();
            if stream.is_empty() || stream == "-" {
                continue;
            }
            match out.iter_mut().find(|(s, _)| *s == stream) {
                Some((_, kinds)) if !kinds.contains(&k) => kinds.push(k),
                Some(_) => {}
                None => out.push((stream, vec![k])),
            }
        }
    }
    out
}

/// Write `addr` as a C socket address; returns its length.
fn sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_goes_out_in_order_and_is_drained() {
        let t = WebRtcTransport::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        // More than one sendmmsg chunk.
        let mut batch: Vec<(SocketAddr, Vec<u8>)> = (0..70u8).map(|i| (to, vec![i; 3])).collect();
        t.send_batch(&mut batch);
        assert!(batch.is_empty());
        let mut buf = [0u8; 16];
        for i in 0..70u8 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 3]);
        }
        assert_eq!(t.stats.datagrams_out.load(Ordering::Relaxed), 70);
    }

    #[test]
    fn stun_username() {
        let mut msg = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
        msg.extend_from_slice(b"abcd:wxyz\0\0\0");
        assert_eq!(stun_local_ufrag(&msg), Some("abcd"));
        assert_eq!(stun_local_ufrag(&msg[..10]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
    }

    #[test]
    fn streams_of_an_offer() {
        let sdp = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\na=msid:s1 t1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=msid:s1 t2\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=msid:s2 t3\r\n";
        assert_eq!(
            offered_streams(sdp),
            vec![("s1".to_string(), vec!["AUDIO", "VIDEO"])]
        );
        assert_eq!(sdp_ufrag("a=ice-ufrag:Xy12\r\n"), Some("Xy12"));
        let av = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s t1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s t2\r\n";
        let audio_only = reject_kinds(av, true, false);
        assert!(
            audio_only.contains("m=video 0 UDP/TLS/RTP/SAVPF 96\r\n"),
            "{audio_only}"
        );
        assert!(audio_only.contains("m=audio 9 "));
        assert_eq!(
            offered_streams(&audio_only),
            vec![("s".to_string(), vec!["AUDIO"])]
        );
        let with_mids = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:s1 t1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=inactive\r\na=msid:s1 t2\r\n";
        assert_eq!(
            offered_tracks(with_mids),
            vec![OfferedTrack {
                mid: "0".into(),
                kind: "AUDIO",
                stream: "s1".into(),
                track: "t1".into()
            }]
        );
    }
}
