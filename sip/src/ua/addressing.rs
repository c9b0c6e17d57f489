//! Who we talk to and how we name ourselves: transports, peers, next hops, and the
//! one formatter of our host, Via and Contact.

use super::*;

pub(super) type ConnId = u64;

/// The transport a message came on or goes out on: UDP, or one stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    Udp,
    Tcp(ConnId),
    Tls(ConnId),
}

impl Transport {
    /// The connection, for stream transports.
    pub(super) fn conn(self) -> Option<ConnId> {
        match self {
            Transport::Udp => None,
            Transport::Tcp(id) | Transport::Tls(id) => Some(id),
        }
    }

    fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp(_) => "TCP",
            Transport::Tls(_) => "TLS",
        }
    }

    pub(super) fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp(_) => "tcp",
            Transport::Tls(_) => "tls",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Peer {
    pub(super) transport: Transport,
    pub(super) addr: SocketAddr,
}

impl Peer {
    pub(super) fn reliability(&self) -> Reliability {
        match self.transport {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp(_) | Transport::Tls(_) => Reliability::Reliable,
        }
    }
}

impl Ua {
    /// Our address as a URI host (IPv6 in brackets): the advertised one.
    pub(super) fn our_host(&self) -> String {
        match self.config.advertised_ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        }
    }

    /// The port we take messages on for `transport`.
    pub(super) fn our_port(&self, transport: Transport) -> u16 {
        match (transport, self.tls_port) {
            (Transport::Tls(_), Some(port)) => port,
            _ => self.config.listen.port(),
        }
    }

    /// A new top Via for a request to `peer` (a fresh branch; `rport`, RFC 3581).
    pub(super) fn new_via(&self, peer: &Peer) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch=z9hG4bK{};rport",
            peer.transport.via_name(),
            self.our_host(),
            self.our_port(peer.transport),
            random_token()
        )
    }

    /// Our Contact for a dialog with `peer`: the transport and port it reaches us on.
    pub(super) fn local_contact(&self, peer: &Peer) -> String {
        format!(
            "<sip:patchbay@{}:{};transport={}>",
            self.our_host(),
            self.our_port(peer.transport),
            peer.transport.uri_param()
        )
    }
}
