//! The way out: the trunk dialogs go to, the optional outbound proxy in front of it,
//! the connections we keep to that next hop (TCP or TLS, opened on demand), and
//! OPTIONS pings that tell whether the trunk is up.

use super::*;

/// Whether the trunk answers our pings.
#[derive(Debug, Default)]
pub(super) struct TrunkHealth {
    up: Option<bool>,
}

impl Ua {
    /// Where requests we originate go first: the outbound proxy, else the trunk.
    fn next_hop(&self) -> Option<SipHop> {
        self.config
            .outbound_proxy
            .clone()
            .or_else(|| self.trunk.as_ref().map(|t| t.hop.clone()))
    }

    /// The Route header that sends a request through the outbound proxy (a loose route).
    pub(super) fn proxy_route(&self) -> Option<String> {
        let p = self.config.outbound_proxy.as_ref()?;
        Some(format!("<sip:{}{};lr>", p.host_port(), p.transport_param()))
    }

    /// The peer to send an out-of-dialog request (or a dialog's request) to: UDP, or
    /// the live connection to the next hop, opened now if there is none.
    pub(super) fn trunk_peer(&mut self) -> Option<Peer> {
        let hop = self.next_hop()?;
        self.peer_for(hop)
    }

    /// The peer to send a request to `hop` to: UDP, or our live connection to it,
    /// opened now if there is none.
    pub(super) fn peer_for(&mut self, hop: SipHop) -> Option<Peer> {
        let tls = match hop.transport {
            SipTransport::Udp => {
                return Some(Peer {
                    transport: Transport::Udp,
                    addr: hop.addr,
                })
            }
            SipTransport::Tcp => false,
            SipTransport::Tls => true,
        };
        let addr = hop.addr;
        let wrap = move |id| Peer {
            transport: if tls {
                Transport::Tls(id)
            } else {
                Transport::Tcp(id)
            },
            addr,
        };
        if let Some(&id) = self.out_conns.get(&hop.addr) {
            if self.open_conns.contains(&id) {
                return Some(wrap(id));
            }
        }
        if tls && !self.tls_client {
            tracing::warn!(host = %hop.host, "a TLS next hop but no TLS client configuration");
            return None;
        }
        let id = self.conn_ids.next();
        self.open_conns.insert(id);
        self.out_conns.insert(hop.addr, id);
        tracing::info!(to = %hop.addr, host = %hop.host, tls, "SIP: connecting to the next hop");
        self.out.push_back(Out::Connect { id, hop, tls });
        Some(wrap(id))
    }

    /// A connection ended (ours or accepted): forget it; INVITEs waiting on it fail now
    /// rather than at timer B.
    pub(super) fn on_stream_closed(&mut self, id: ConnId, why: Option<String>) {
        self.open_conns.remove(&id);
        self.out_conns.retain(|_, c| *c != id);
        let why = match why {
            Some(e) => format!("cannot reach the SIP trunk: {e}"),
            None => "the connection to the SIP trunk closed".to_string(),
        };
        self.clients_lost(id, &why);
    }

    /// A dialog's peer whose connection is gone gets a fresh one to the next hop.
    pub(super) fn refresh_peer(&mut self, peer: Peer) -> Peer {
        match peer.transport.conn() {
            Some(id) if !self.open_conns.contains(&id) => self.trunk_peer().unwrap_or(peer),
            _ => peer,
        }
    }

    // ---- OPTIONS pings ----

    /// Send a ping (when none is in flight) and schedule the next.
    pub(super) fn ping_trunk(&mut self) {
        let interval = self.config.trunk_ping_interval;
        if interval.is_zero() || self.trunk.is_none() {
            return;
        }
        self.schedule(self.now + interval, TimerKind::TrunkPing);
        if self.clients.pinging() {
            return;
        }
        let (Some(trunk), Some(peer)) = (self.trunk.clone(), self.trunk_peer()) else {
            return;
        };
        let uri_text = format!(
            "sip:{}{}",
            trunk.hop.host_port(),
            trunk.hop.transport_param()
        );
        let ping = OutRequest {
            from: format!("<sip:patchbay@{}>;tag={}", self.our_host(), random_token()).into(),
            to: format!("<{uri_text}>").into(),
            call_id: format!("{}@{}", random_token(), self.our_host()),
            route: self.proxy_route().into_iter().map(Bytes::from).collect(),
            ..OutRequest::new(Method::Options, uri_text)
        };
        let ping = self.build_request(&ping, &peer);
        let Some(ping) = ping else { return };
        let sent = self.send_client(ping, peer, clients::Owner::Ping);
        if sent.is_some() {
            self.metrics.sip_trunk_pings.inc();
        }
    }

    /// A ping's final answer (`None`: none came) tells the trunk's health.
    pub(super) fn on_ping_result(&mut self, answered: Option<u16>) {
        match answered {
            // Any final answer means a live SIP peer (many trunks answer 404 or 405).
            Some(_) => self.trunk_is(true, "it answered OPTIONS"),
            None => self.trunk_is(false, "no answer to OPTIONS"),
        }
    }

    fn trunk_is(&mut self, up: bool, why: &str) {
        self.metrics.sip_trunk_up.set(up as i64);
        if self.health.up != Some(up) {
            let host = self
                .trunk
                .as_ref()
                .map(|t| t.hop.host.clone())
                .unwrap_or_default();
            if up {
                tracing::info!(%host, why, "SIP trunk is up");
            } else {
                tracing::warn!(%host, why, "SIP trunk is down");
            }
        }
        self.health.up = Some(up);
    }
}
