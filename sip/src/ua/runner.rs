//! Starting and stopping the user agent: its listeners and tasks, the loop that feeds
//! it inputs and fires its timers, and the UDP reader.

use super::*;

/// A running SIP gateway.
pub struct SipGateway {
    tx: mpsc::Sender<Event>,
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
        let conn_ids = ConnIds::default();
        let stream_io =
            streams::Streams::new(tx.clone(), conn_ids.clone(), metrics.clone(), config.tcp);
        tokio::spawn(stream_io.clone().accept_loop(tcp, None));
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let (tls, tls_local) = match &config.tls {
            None => (None, None),
            Some(t) => {
                let files = TlsFiles {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                };
                let server = TlsServer::new(files).map_err(invalid)?;
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
            .any(|h| h.transport == SipTransport::Tls);
        let tls_client = if tls_next_hop {
            Some(patchbay_tls::client_config(config.tls_ca.as_deref()).map_err(invalid)?)
        } else {
            None
        };
        if config.trunk.is_some() {
            let (dial_tx, mut dial_rx) = mpsc::unbounded_channel();
            conference.set_dialer(dial_tx);
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(cmd) = dial_rx.recv().await {
                    if tx.send(Event::Core(Input::Dial(cmd))).await.is_err() {
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
                    if tx.send(Event::Core(Input::Call(cmd))).await.is_err() {
                        return;
                    }
                }
            });
        }
        let mut config = config;
        config.listen = local;
        let legs = RtpPorts {
            ports: PortAllocator::new(config.rtp_ports.0, config.rtp_ports.1),
            media_ip: config.media_ip,
            timeout: config.rtp_timeout,
            ended: media_tx,
            metrics: metrics.clone(),
        };
        let parts = Parts {
            conference,
            metrics,
            legs: Box::new(legs),
            conn_ids,
            tls_client: tls_client.is_some(),
            tls_port: tls_local.map(|a| a.port()),
        };
        let ua = Ua::new(config, parts, Instant::now());
        let shell = Shell {
            udp,
            writers: HashMap::new(),
            stream_io,
            tls_client,
            inputs: tx.clone(),
        };
        let task = tokio::spawn(run(ua, shell, rx, media_rx));
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
        if self.tx.send(Event::Shutdown(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), wait).await;
        }
        self.task.abort();
    }
}

/// What the shell's queue carries: the core's inputs, and what only the shell handles.
pub(super) enum Event {
    Core(Input),
    /// An accepted connection is up; the writer of its bytes.
    Opened(ConnId, mpsc::UnboundedSender<Bytes>),
    Shutdown(oneshot::Sender<()>),
}

/// The user agent's I/O: its sockets and connections, and the tasks answering its
/// questions. It carries out what the core queues.
struct Shell {
    udp: Arc<UdpSocket>,
    /// Writers of the open stream connections (TCP and TLS, accepted or ours).
    writers: HashMap<ConnId, mpsc::UnboundedSender<Bytes>>,
    stream_io: streams::Streams,
    tls_client: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    inputs: mpsc::Sender<Event>,
}

impl Shell {
    /// Carry out everything the core queued.
    fn drain(&mut self, ua: &mut Ua) {
        while let Some(out) = ua.poll_output() {
            match out {
                Out::Send(peer, bytes) => match peer.transport.conn() {
                    None => {
                        let _ = self.udp.try_send_to(&bytes, peer.addr);
                    }
                    Some(id) => {
                        if let Some(tx) = self.writers.get(&id) {
                            let _ = tx.send(bytes);
                        }
                    }
                },
                Out::Connect { id, hop, tls } => {
                    let client = if tls { self.tls_client.clone() } else { None };
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.writers.insert(id, tx.clone());
                    self.stream_io.connect(id, hop, client, (tx, rx));
                }
                Out::Ask(work) => {
                    let inputs = self.inputs.clone();
                    tokio::spawn(async move {
                        if let Some(input) = work.await {
                            let _ = inputs.send(Event::Core(input)).await;
                        }
                    });
                }
            }
        }
    }
}

async fn run(
    mut ua: Ua,
    mut shell: Shell,
    mut rx: mpsc::Receiver<Event>,
    mut media_rx: mpsc::UnboundedReceiver<(LegId, MediaEnd)>,
) {
    let mut stopping: Option<(oneshot::Sender<()>, Instant)> = None;
    loop {
        shell.drain(&mut ua);
        let deadline = ua.next_deadline();
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { return };
                match event {
                    Event::Core(input) => {
                        if let Input::StreamClosed(id, _) = &input {
                            shell.writers.remove(id);
                        }
                        ua.handle(Instant::now(), input);
                    }
                    Event::Opened(id, tx) => {
                        shell.writers.insert(id, tx);
                        ua.handle(Instant::now(), Input::StreamOpened(id));
                    }
                    Event::Shutdown(done) => {
                        ua.shut_down(Instant::now());
                        // Give the BYEs a moment to be answered.
                        stopping = Some((done, Instant::now() + Duration::from_millis(500)));
                    }
                }
            }
            ended = media_rx.recv() => {
                if let Some((leg, why)) = ended {
                    ua.handle(Instant::now(), Input::MediaEnded(leg, why));
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => ua.handle_timeout(Instant::now()),
            _ = tokio::time::sleep(Duration::from_millis(50)), if stopping.is_some() => {}
        }
        if let Some((_, until)) = &stopping {
            if Instant::now() >= *until || ua.is_idle() {
                shell.drain(&mut ua);
                if let Some((done, _)) = stopping.take() {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}

async fn udp_loop(socket: Arc<UdpSocket>, tx: mpsc::Sender<Event>, metrics: SipMetrics) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if n > MAX_DATAGRAM {
                    metrics.sip_oversized.inc();
                    continue;
                }
                match tx.try_send(Event::Core(Input::Datagram(
                    Bytes::copy_from_slice(&buf[..n]),
                    from,
                ))) {
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
