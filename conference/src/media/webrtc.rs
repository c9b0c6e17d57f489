//! The WebRTC socket (the shell's side of every session's peer connections): all
//! WebRTC media on one UDP socket, demultiplexed to the session cores that own the
//! devices' peer connections (str0m, ICE-lite), and their datagrams sent back in
//! `sendmmsg` batches.
//!
//! Why here and not in `gateway`: the socket is pure IO, and the session cores never
//! see it (they return `Transmit`s, their shells call [`WebRtcTransport::send_batch`]);
//! the routing table is a media concern (ufrags and authenticated addresses come from
//! the cores), and keeping both beside the shells avoids a trait hop per batch.
//!
//! Routing, owned by the one receiving task (no lock per datagram; changes arrive on a
//! channel it drains before each datagram):
//! - a datagram from an address the session confirmed goes to that session;
//! - a STUN binding request from an unknown address is routed by the ufrag of its
//!   USERNAME (`<our ufrag>:<theirs>`), without remembering the address: str0m checks
//!   its MESSAGE-INTEGRITY, and only once the session answered it (a peer connection
//!   transmitted to that address) does the session confirm the address
//!   ([`RouteChange::Confirm`]), at most [`MAX_ADDRS_PER_UFRAG`] per ufrag;
//! - anything else is dropped and counted.
//!
//! Each session takes datagrams on a bounded queue: a full queue drops and counts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::session::SessionHandle;

/// Largest datagram carried to a session.
pub const MAX_DATAGRAM: usize = 1500;
/// Addresses one peer connection (ufrag) may be reached from.
pub const MAX_ADDRS_PER_UFRAG: usize = 8;

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

/// A change of the routing table, from a session's shell.
pub enum RouteChange {
    /// STUN for this ufrag goes to this session.
    Register {
        ufrag: String,
        session: SessionHandle,
    },
    /// The peer connection is gone: forget its ufrag and its addresses.
    Unregister { ufrag: String },
    /// The session answered an authenticated STUN request from `addr` on `ufrag`.
    Confirm { ufrag: String, addr: SocketAddr },
}

struct UfragRoute {
    session: SessionHandle,
    addrs: Vec<SocketAddr>,
}

/// The routing table (owned by the receiving task).
#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, UfragRoute>,
    by_addr: HashMap<SocketAddr, SessionHandle>,
}

impl Routes {
    fn apply(&mut self, change: RouteChange, stats: &WebRtcStats) {
        match change {
            RouteChange::Register { ufrag, session } => {
                self.by_ufrag.insert(
                    ufrag,
                    UfragRoute {
                        session,
                        addrs: Vec::new(),
                    },
                );
            }
            RouteChange::Unregister { ufrag } => {
                if let Some(r) = self.by_ufrag.remove(&ufrag) {
                    for a in r.addrs {
                        self.by_addr.remove(&a);
                    }
                }
            }
            RouteChange::Confirm { ufrag, addr } => {
                let Some(r) = self.by_ufrag.get_mut(&ufrag) else {
                    return;
                };
                if r.addrs.contains(&addr) {
                    return;
                }
                if r.addrs.len() >= MAX_ADDRS_PER_UFRAG || self.by_addr.contains_key(&addr) {
                    stats.routes_refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                r.addrs.push(addr);
                self.by_addr.insert(addr, r.session.clone());
            }
        }
    }

    fn route(&self, from: SocketAddr, packet: &[u8]) -> Option<&SessionHandle> {
        if let Some(h) = self.by_addr.get(&from) {
            return Some(h);
        }
        let ufrag = stun_local_ufrag(packet)?;
        self.by_ufrag.get(ufrag).map(|r| &r.session)
    }
}

/// Counters of the WebRTC transport.
#[derive(Debug, Default)]
pub struct WebRtcStats {
    pub datagrams_in: AtomicU64,
    pub unroutable: AtomicU64,
    pub datagrams_out: AtomicU64,
    /// Datagrams dropped because their session's queue was full.
    pub dropped: AtomicU64,
    /// Address confirmations refused (cap per ufrag, or an address another owns).
    pub routes_refused: AtomicU64,
}

/// The shared WebRTC socket.
pub struct WebRtcTransport {
    socket: UdpSocket,
    local: SocketAddr,
    /// Our ICE candidate: the public address (behind 1:1 NAT) or the bound one, with
    /// the bound port.
    advertised: SocketAddr,
    changes: mpsc::UnboundedSender<RouteChange>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<RouteChange>>>,
    pub stats: WebRtcStats,
}

impl WebRtcTransport {
    /// Bind `addr`; `public_ip` (if any) is what browsers are told to send to instead
    /// of the bound address (a cloud VM's public address that is not on an interface).
    pub async fn bind(
        addr: SocketAddr,
        public_ip: Option<std::net::IpAddr>,
    ) -> std::io::Result<Arc<WebRtcTransport>> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        let advertised = SocketAddr::new(public_ip.unwrap_or(local.ip()), local.port());
        let (changes, receiver) = mpsc::unbounded_channel();
        Ok(Arc::new(WebRtcTransport {
            socket,
            local,
            advertised,
            changes,
            receiver: Mutex::new(Some(receiver)),
            stats: WebRtcStats::default(),
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address in our ICE candidates (and the local address str0m matches
    /// datagrams against).
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    /// Change the routing table (applied by the receiving task before its next datagram).
    /// The channel is fed by session shells only, a few messages per peer connection.
    pub fn route(&self, change: RouteChange) {
        let _ = self.changes.send(change);
    }

    /// Send one datagram (non-blocking; dropped if the socket buffer is full).
    pub fn send(&self, to: SocketAddr, data: &[u8]) {
        if self.socket.try_send_to(data, to).is_ok() {
            self.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Send every datagram of `batch` with as few `sendmmsg` calls as possible; what
    /// the socket buffer cannot take is dropped, as with [`Self::send`].
    pub fn send_batch(&self, batch: &[(SocketAddr, Vec<u8>)]) {
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
    }

    /// Read datagrams forever, handing each to its session.
    pub async fn run(self: Arc<Self>) {
        let Some(mut changes) = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            tracing::error!("the WebRTC transport runs once");
            return;
        };
        let mut routes = Routes::default();
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = tokio::select! {
                biased;
                change = changes.recv() => {
                    match change {
                        Some(c) => routes.apply(c, &self.stats),
                        None => return,
                    }
                    continue;
                }
                got = self.socket.recv_from(&mut buf) => match got {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            // Changes sent before the datagram that answered this peer.
            while let Ok(c) = changes.try_recv() {
                routes.apply(c, &self.stats);
            }
            self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            if n > MAX_DATAGRAM {
                self.stats.unroutable.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(session) = routes.route(from, &buf[..n]) else {
                self.stats.unroutable.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut input = WebRtcIn {
                from,
                len: n as u16,
                data: [0; MAX_DATAGRAM],
            };
            input.data[..n].copy_from_slice(&buf[..n]);
            if !session.send_datagram(input) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Prometheus text of the transport's counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        for (name, help, v) in [
            (
                "webrtc_datagrams_in",
                "WebRTC datagrams received.",
                &self.stats.datagrams_in,
            ),
            (
                "webrtc_datagrams_out",
                "WebRTC datagrams sent.",
                &self.stats.datagrams_out,
            ),
            (
                "webrtc_datagrams_unroutable",
                "WebRTC datagrams from an address and ufrag no peer connection owns.",
                &self.stats.unroutable,
            ),
            (
                "webrtc_datagrams_dropped",
                "WebRTC datagrams dropped because their session's queue was full.",
                &self.stats.dropped,
            ),
            (
                "webrtc_routes_refused",
                "ICE addresses refused (over the cap per peer connection, or owned by another).",
                &self.stats.routes_refused,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP patchbay_{name} {help}\n# TYPE patchbay_{name} counter\npatchbay_{name}_total {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

/// Our ufrag from a STUN binding request's USERNAME (`ours:theirs`), if `buf` is one.
pub(crate) fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
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
        let t = WebRtcTransport::bind("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        // More than one sendmmsg chunk.
        let batch: Vec<(SocketAddr, Vec<u8>)> = (0..70u8).map(|i| (to, vec![i; 3])).collect();
        t.send_batch(&batch);
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
}
