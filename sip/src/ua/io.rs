//! What the user agent core asks of its shell (`runner.rs`): the core does no I/O,
//! reads no clock and spawns nothing. It is handed inputs with the time, and queues
//! [`Out`]s the shell polls after each; the shell owns the sockets, the connections,
//! the tasks and the RTP ports (through [`LegPorts`]).

use std::future::Future;
use std::pin::Pin;

use super::*;

/// Work the core cannot do itself.
pub(super) enum Out {
    /// Bytes to a peer: a UDP datagram, or on the stream connection the peer names
    /// (dropped if it is gone).
    Send(Peer, Bytes),
    /// Open a connection to a next hop under this id (TLS when `tls`); what is sent on
    /// it meanwhile waits for it. Its end comes back as [`Input::StreamClosed`].
    Connect { id: ConnId, hop: SipHop, tls: bool },
    /// A question for the control plane (the store, an application's webhook); its
    /// answer, if any, comes back as an input.
    Ask(Ask),
}

pub(super) type Ask = Pin<Box<dyn Future<Output = Option<Input>> + Send>>;

/// Opens a new leg's RTP endpoint: binds its ports and starts its task.
pub(super) trait LegPorts: Send {
    fn open(&mut self, leg: LegId) -> Result<RtpLeg, String>;
}

/// The shell's RTP ports: an even/odd pair on `media_ip` from the configured range.
pub(super) struct RtpPorts {
    pub ports: PortAllocator,
    pub media_ip: IpAddr,
    pub timeout: Duration,
    pub ended: mpsc::UnboundedSender<(LegId, MediaEnd)>,
    pub metrics: SipMetrics,
}

impl LegPorts for RtpPorts {
    fn open(&mut self, leg: LegId) -> Result<RtpLeg, String> {
        let (rtp_socket, rtcp_socket) = self
            .ports
            .bind(self.media_ip)
            .map_err(|e| format!("no RTP port: {e}"))?;
        rtp::start(LegStart {
            leg,
            rtp: rtp_socket,
            rtcp: rtcp_socket,
            timeout: self.timeout,
            ended: self.ended.clone(),
            metrics: self.metrics.clone(),
        })
        .map_err(|e| format!("cannot start RTP: {e}"))
    }
}

/// Stream connection ids: one issuer for the connections accepted and the ones the
/// core opens, owned by the gateway that runs them (no process-wide counter).
#[derive(Clone, Default)]
pub(super) struct ConnIds(Arc<AtomicU64>);

impl ConnIds {
    pub(super) fn next(&self) -> ConnId {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// What a user agent core is made of besides its configuration.
pub(super) struct Parts {
    pub conference: Arc<Conference>,
    pub metrics: SipMetrics,
    pub legs: Box<dyn LegPorts>,
    pub conn_ids: ConnIds,
    /// Whether the shell can open TLS connections.
    pub tls_client: bool,
    /// The TLS listener's port, if it listens.
    pub tls_port: Option<u16>,
}

impl Ua {
    /// A core at `now`: its registrations and trunk pings are due at once.
    pub(super) fn new(config: SipConfig, parts: Parts, now: Instant) -> Ua {
        let max_transactions_per_source = config.max_transactions_per_source;
        let trunk = config.trunk.clone();
        let mut ua = Ua {
            config,
            conference: parts.conference,
            metrics: parts.metrics,
            now,
            out: Default::default(),
            layer: TransactionLayer::new(Timers::default()),
            timers_cfg: Timers::default(),
            open_conns: Default::default(),
            conn_ids: parts.conn_ids,
            tls_port: parts.tls_port,
            tx_peers: HashMap::new(),
            admission: admission::TxAdmission::new(max_transactions_per_source),
            timers: BTreeMap::new(),
            tx_timers: HashMap::new(),
            timer_seq: 0,
            calls: calls::CallTable::default(),
            legs: parts.legs,
            trunk,
            out_conns: HashMap::new(),
            tls_client: parts.tls_client,
            health: trunk::TrunkHealth::default(),
            placing: Default::default(),
            registrations: Default::default(),
            clients: clients::Clients::default(),
            transfers: HashMap::new(),
            referring: referring::Referring::default(),
        };
        ua.registrations =
            registering::Registrations::new(&ua.config.registrations, &ua.our_host(), now);
        ua.metrics
            .sip_registrations
            .set(ua.registrations.len() as i64);
        for i in 0..ua.registrations.len() {
            ua.schedule(now, TimerKind::Register(i));
        }
        ua.schedule(now, TimerKind::TrunkPing);
        ua
    }

    /// The next piece of work for the shell, oldest first.
    pub(super) fn poll_output(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    /// Ask the control plane; `answer` turns its reply into our next input.
    pub(super) fn ask<F>(&mut self, work: F)
    where
        F: Future<Output = Option<Input>> + Send + 'static,
    {
        self.out.push_back(Out::Ask(Box::pin(work)));
    }

    /// Handle one input at `now`.
    pub(super) fn handle(&mut self, now: Instant, input: Input) {
        self.now = now;
        match input {
            Input::Datagram(bytes, from) => self.on_datagram(bytes, from),
            Input::Stream(m, peer) => self.on_message(*m, peer),
            Input::StreamOpened(id) => {
                self.open_conns.insert(id);
            }
            Input::StreamClosed(id, why) => self.on_stream_closed(id, why),
            Input::Dial(cmd) => self.on_dial(cmd),
            Input::Call(cmd) => self.on_call_command(cmd),
            Input::Placed {
                key,
                req,
                token,
                placed,
            } => self.on_placed(&key, &req, token, placed),
            Input::Routed { key, req, token } => self.on_routed(&key, &req, token),
            Input::TransferRefused(p) => self.on_transfer_refused(p),
            Input::MediaEnded(leg, why) => self.on_media_end(leg, why),
        }
    }

    /// Fire the timers due at `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.fire_timers();
    }

    /// Hang up every call and unregister (the gateway stops).
    pub(super) fn shut_down(&mut self, now: Instant) {
        self.now = now;
        let ids = self.calls.ids();
        tracing::info!(calls = ids.len(), "SIP shutdown: sending BYE to every call");
        for id in ids {
            self.end_call(&id, true);
        }
        self.unregister_all();
    }

    /// Whether no transaction is left (a stopping gateway may stop waiting).
    pub(super) fn is_idle(&self) -> bool {
        self.layer.is_empty()
    }
}
