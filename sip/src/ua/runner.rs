//! Starting and stopping the user agent: its listeners and tasks, the loop that feeds
//! it inputs and fires its timers, and the UDP reader.

use super::*;

/// A running SIP gateway.
pub struct SipGateway {
    tx: mpsc::Sender<Input>,
    task: tokio::task::JoinHandle<()>,
    pub local: SocketAddr,
    tls: Option<TlsServer>,
    /// Where the TLS listener listens, if it does.
    pub tls_local: Option<SocketAddr>,
}

impl SipGateway {
    /// Bind UDP and TCP on `config.listen` and start serving.
    pub async fn start(
        config: SipConfig,
        conference: Arc<Conference>,
        metrics: SipMetrics,
    ) -> std::io::Result<SipGateway> {
        let udp = Arc::new(UdpSocket::bind(config.listen).await?);
        let local = udp.local_addr()?;
        let tcp = TcpListener::bind(local).await?;
        // The network fills this queue: bounded, a datagram that finds it full is dropped
        // (counted; UDP senders retransmit), a stream waits (its reads pause).
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        tokio::spawn(udp_loop(udp.clone(), tx.clone(), metrics.clone()));
        let stream_io = streams::Streams::new(tx.clone(), metrics.clone(), config.tcp);
        tokio::spawn(stream_io.clone().accept_loop(tcp, None));
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let (tls, tls_local) = match &config.tls {
            None => (None, None),
            Some(t) => {
                let server = TlsServer::new(t.files.clone()).map_err(invalid)?;
                let listener = TcpListener::bind(t.listen).await?;
                let local = listener.local_addr()?;
                tokio::spawn(
                    stream_io
                        .clone()
                        .accept_loop(listener, Some(server.clone())),
                );
                tracing::info!(listen = %local, "SIP TLS listening");
                (Some(server), Some(local))
            }
        };
        let tls_next_hop = config
            .trunk
            .iter()
            .map(|t| &t.hop)
            .chain(config.outbound_proxy.iter())
            .any(|h| h.transport == HopTransport::Tls);
        let tls_client = if tls_next_hop {
            Some(patchbay_tls::client_config(config.tls_ca.as_deref()).map_err(invalid)?)
        } else {
            None
        };
        let ports = PortAllocator::new(config.rtp_ports.0, config.rtp_ports.1);
        let trunk = config.trunk.clone();
        if trunk.is_some() {
            let (dial_tx, mut dial_rx) = mpsc::unbounded_channel();
            conference.set_dialer(dial_tx);
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(cmd) = dial_rx.recv().await {
                    if tx.send(Input::Dial(cmd)).await.is_err() {
                        return;
                    }
                }
            });
        }
        {
            let (call_tx, mut call_rx) = mpsc::unbounded_channel();
            conference.calls().set(call_tx);
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(cmd) = call_rx.recv().await {
                    if tx.send(Input::Call(cmd)).await.is_err() {
                        return;
                    }
                }
            });
        }
        let mut config = config;
        config.listen = local;
        let max_transactions_per_source = config.max_transactions_per_source;
        let mut ua = Ua {
            config,
            conference,
            metrics,
            layer: TransactionLayer::new(Timers::default()),
            timers_cfg: Timers::default(),
            udp,
            streams: HashMap::new(),
            tls_port: None,
            tx_peers: HashMap::new(),
            admission: admission::TxAdmission::new(max_transactions_per_source),
            timers: BTreeMap::new(),
            tx_timers: HashMap::new(),
            timer_seq: 0,
            calls: calls::CallTable::default(),
            ports,
            media_tx,
            trunk,

            stream_io,
            out_conns: HashMap::new(),
            tls_client,
            health: trunk::TrunkHealth::default(),
            inputs: tx.clone(),
            placing: Default::default(),
            registrations: Default::default(),
            clients: clients::Clients::default(),
            transfers: HashMap::new(),
            referring: referring::Referring::default(),
        };
        ua.registrations = registering::Registrations::new(
            &ua.config.registrations,
            &ua.our_host(),
            Instant::now(),
        );
        ua.metrics
            .sip_registrations
            .set(ua.registrations.len() as i64);
        for i in 0..ua.registrations.len() {
            ua.schedule(Instant::now(), TimerKind::Register(i));
        }
        ua.tls_port = tls_local.map(|a| a.port());
        ua.schedule(Instant::now(), TimerKind::TrunkPing);
        let task = tokio::spawn(run(ua, rx, media_rx));
        Ok(SipGateway {
            tx,
            task,
            local,
            tls,
            tls_local,
        })
    }

    /// The TLS listener's certificate holder (to reload it on SIGHUP), if it listens.
    pub fn tls_server(&self) -> Option<TlsServer> {
        self.tls.clone()
    }

    /// Send BYE to every call, wait briefly for the answers, stop.
    pub async fn shutdown(self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Input::Shutdown(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), wait).await;
        }
        self.task.abort();
    }
}

async fn run(
    mut ua: Ua,
    mut rx: mpsc::Receiver<Input>,
    mut media_rx: mpsc::UnboundedReceiver<(LegId, MediaEnd)>,
) {
    let mut stopping: Option<(oneshot::Sender<()>, Instant)> = None;
    loop {
        let deadline = ua.next_deadline();
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { return };
                match input {
                    Input::Datagram(bytes, from) => ua.on_datagram(bytes, from),
                    Input::Stream(m, peer) => ua.on_message(*m, peer),
                    Input::StreamOpened(id, tx) => { ua.streams.insert(id, tx); }
                    Input::StreamClosed(id, why) => ua.on_stream_closed(id, why),
                    Input::Dial(cmd) => ua.on_dial(cmd),
                    Input::Call(cmd) => ua.on_call_command(cmd),
                    Input::Placed { key, req, token, placed } => ua.on_placed(&key, &req, token, placed),
                    Input::Routed { key, req, token } => ua.on_routed(&key, &req, token),
                    Input::TransferRefused(p) => ua.on_transfer_refused(p),
                    Input::Shutdown(done) => {
                        let ids = ua.calls.ids();
                        tracing::info!(calls = ids.len(), "SIP shutdown: sending BYE to every call");
                        for id in ids {
                            ua.end_call(&id, true);
                        }
                        ua.unregister_all();
                        // Give the BYEs a moment to be answered.
                        stopping = Some((done, Instant::now() + Duration::from_millis(500)));
                    }
                }
            }
            ended = media_rx.recv() => {
                if let Some((leg, why)) = ended {
                    ua.on_media_end(leg, why);
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => ua.fire_timers(),
            _ = tokio::time::sleep(Duration::from_millis(50)), if stopping.is_some() => {}
        }
        if let Some((_, until)) = &stopping {
            if Instant::now() >= *until || ua.layer.is_empty() {
                if let Some((done, _)) = stopping.take() {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}

async fn udp_loop(socket: Arc<UdpSocket>, tx: mpsc::Sender<Input>, metrics: SipMetrics) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if n > MAX_DATAGRAM {
                    metrics.sip_oversized.inc();
                    continue;
                }
                match tx.try_send(Input::Datagram(Bytes::copy_from_slice(&buf[..n]), from)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        metrics.sip_input_dropped.inc();
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(e) => {
                // ICMP errors surface here on some systems; keep serving.
                tracing::debug!(error = %e, "UDP receive error");
            }
        }
    }
}
