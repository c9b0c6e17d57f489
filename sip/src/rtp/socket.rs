//! Reading a leg's RTP socket: `recvmmsg` batches with the kernel's arrival
//! timestamps, into buffers kept per leg (nothing is allocated per packet).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Ask the kernel to stamp every datagram's arrival (`SO_TIMESTAMPNS`).
pub(super) fn enable_timestamps(socket: &std::net::UdpSocket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the fd is open for the duration of the call; the option value points to a
    // c_int of the length given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One received datagram's length, source, kernel arrival time (µs since the epoch)
/// and whether it was truncated.
#[derive(Clone, Copy)]
pub(super) struct Received {
    pub(super) len: usize,
    pub(super) from: Option<SocketAddr>,
    pub(super) arrival_us: Option<u64>,
    pub(super) truncated: bool,
}

/// Datagrams read per `recvmmsg` call.
pub(super) const BATCH: usize = 4;
pub(super) const DATAGRAM: usize = 2048;

/// Receive buffers for [`recv_batch`], kept per leg so nothing is allocated per tick.
pub(super) struct Batch {
    pub(super) bufs: [[u8; DATAGRAM]; BATCH],
    pub(super) addrs: [libc::sockaddr_storage; BATCH],
    pub(super) controls: [[u64; 8]; BATCH],
    pub(super) got: [Received; BATCH],
}

impl Batch {
    pub(super) fn new() -> Box<Batch> {
        Box::new(Batch {
            bufs: [[0; DATAGRAM]; BATCH],
            // SAFETY: all-zero is a valid sockaddr_storage.
            addrs: [unsafe { std::mem::zeroed() }; BATCH],
            controls: [[0; 8]; BATCH],
            got: [Received {
                len: 0,
                from: None,
                arrival_us: None,
                truncated: false,
            }; BATCH],
        })
    }
}

fn socket_addr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned((addr as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read_unaligned((addr as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Receive up to [`BATCH`] datagrams in one `recvmmsg` call without blocking, each with
/// its kernel timestamp; returns how many (0 when none is waiting).
pub(super) fn recv_batch(socket: &std::net::UdpSocket, b: &mut Batch) -> std::io::Result<usize> {
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..BATCH {
        iovs[i] = libc::iovec {
            iov_base: b.bufs[i].as_mut_ptr().cast(),
            iov_len: DATAGRAM,
        };
        let h = &mut msgs[i].msg_hdr;
        h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = b.controls[i].as_mut_ptr().cast();
        h.msg_controllen = std::mem::size_of::<[u64; 8]>() as _;
    }
    // SAFETY: every header points at live buffers of the lengths it declares, for the whole call.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            BATCH as _,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        };
    }
    let n = n as usize;
    for (i, m) in msgs.iter().enumerate().take(n) {
        let h = &m.msg_hdr;
        let mut arrival_us = None;
        // SAFETY: the CMSG_* walk stays within the control buffer the kernel filled in, and
        // the timestamp is read unaligned from its data.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    arrival_us = Some(t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        b.got[i] = Received {
            len: (m.msg_len as usize).min(DATAGRAM),
            from: socket_addr(&b.addrs[i]),
            arrival_us,
            truncated: h.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(n)
}
