//! SIP over streams, TCP and TLS: accepting within the connection caps (overall and
//! per source address, with back-off on accept errors: `patchbay_tls::Acceptor`, as
//! the HTTP listener does), the TLS handshake,
//! connections we open to a trunk or proxy, framing each stream into messages for
//! the user agent, idle timeouts, and 513 for a message over the limit.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::pki_types::ServerName;

use super::*;
use patchbay_tls::{AcceptMetrics, Acceptor, Admission, ConnectionCaps, Slot, TlsServer};

/// Bytes kept of a message's start, to answer it when the parser refuses it.
const HEAD_BYTES: usize = 8 * 1024;
/// A TLS handshake (either direction) or an outbound TCP connect must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every stream connection shares: the caps and their count (TCP and TLS
/// listeners together), the user agent's inbox, the metrics.
#[derive(Clone)]
pub(super) struct Streams {
    admission: Admission,
    tx: mpsc::Sender<runner::Event>,
    /// Ids for the connections accepted (shared with the core, which opens others).
    ids: ConnIds,
    metrics: SipMetrics,
    limits: TcpLimits,
}

impl Streams {
    pub(super) fn new(
        tx: mpsc::Sender<runner::Event>,
        ids: ConnIds,
        metrics: SipMetrics,
        limits: TcpLimits,
    ) -> Streams {
        let caps = ConnectionCaps {
            max_connections: limits.max_connections,
            max_per_source: limits.max_per_source,
        };
        Streams {
            admission: Admission::new(caps, metrics.sip_tcp_connections.clone()),
            tx,
            ids,
            metrics,
            limits,
        }
    }

    /// Accept connections on `listener`, over TLS when `tls` is given.
    pub(super) async fn accept_loop(self, listener: TcpListener, tls: Option<TlsServer>) {
        let counted = AcceptMetrics {
            refused: self.metrics.sip_tcp_refused.clone(),
            errors: self.metrics.sip_accept_errors.clone(),
        };
        let name = if tls.is_some() { "SIP TLS" } else { "SIP TCP" };
        let mut acceptor = Acceptor::new(listener, self.admission.clone(), counted, name);
        loop {
            let (stream, from, place) = acceptor.next().await;
            let id = self.ids.next();
            let streams = self.clone();
            match &tls {
                None => {
                    let peer = Peer {
                        transport: Transport::Tcp(id),
                        addr: from,
                    };
                    tokio::spawn(streams.serve_accepted(stream, peer, place));
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    tokio::spawn(async move {
                        let handshake = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT.min(streams.limits.idle_timeout),
                            acceptor.accept(stream),
                        );
                        match handshake.await {
                            Ok(Ok(stream)) => {
                                let peer = Peer {
                                    transport: Transport::Tls(id),
                                    addr: from,
                                };
                                streams.serve_accepted(stream, peer, place).await;
                            }
                            Ok(Err(e)) => {
                                streams.metrics.sip_tls_handshake_failures.inc();
                                tracing::debug!(%from, error = %e, "SIP TLS handshake failed");
                            }
                            Err(_) => {
                                streams.metrics.sip_tls_handshake_failures.inc();
                                tracing::debug!(%from, "SIP TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    }

    async fn serve_accepted<S>(self, stream: S, peer: Peer, place: Slot)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Some(id) = peer.transport.conn() else {
            return;
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel::<Bytes>();
        if self
            .tx
            .send(runner::Event::Opened(id, out_tx.clone()))
            .await
            .is_err()
        {
            return;
        }
        self.serve(stream, peer, out_tx, out_rx, Some(place)).await;
    }

    /// Open a connection to `hop` for the user agent, which already writes to `out_rx`
    /// (what it sends before the connection is up waits there). A failure to connect
    /// closes the connection as any other end would: [`Input::StreamClosed`], with why.
    pub(super) fn connect(
        &self,
        id: ConnId,
        hop: SipHop,
        tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
        out: (mpsc::UnboundedSender<Bytes>, mpsc::UnboundedReceiver<Bytes>),
    ) {
        let streams = self.clone();
        tokio::spawn(async move {
            let opened = async {
                let tcp = tokio::net::TcpStream::connect(hop.addr)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let _ = tcp.set_nodelay(true);
                Ok::<_, String>(tcp)
            };
            let tcp = match tokio::time::timeout(HANDSHAKE_TIMEOUT, opened).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => return streams.failed(id, &hop, &e).await,
                Err(_) => return streams.failed(id, &hop, "connect timed out").await,
            };
            let (out_tx, out_rx) = out;
            match tls {
                None => {
                    let peer = Peer {
                        transport: Transport::Tcp(id),
                        addr: hop.addr,
                    };
                    streams.serve(tcp, peer, out_tx, out_rx, None).await;
                }
                Some(config) => {
                    let name = match ServerName::try_from(hop.host.clone()) {
                        Ok(n) => n,
                        Err(_) => return streams.failed(id, &hop, "not a TLS server name").await,
                    };
                    let connector = tokio_rustls::TlsConnector::from(config);
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let peer = Peer {
                                transport: Transport::Tls(id),
                                addr: hop.addr,
                            };
                            streams.serve(tls, peer, out_tx, out_rx, None).await;
                        }
                        Ok(Err(e)) => {
                            streams.metrics.sip_tls_handshake_failures.inc();
                            streams.failed(id, &hop, &format!("TLS: {e}")).await;
                        }
                        Err(_) => {
                            streams.metrics.sip_tls_handshake_failures.inc();
                            streams.failed(id, &hop, "TLS handshake timed out").await;
                        }
                    }
                }
            }
        });
    }

    async fn failed(&self, id: ConnId, hop: &SipHop, why: &str) {
        tracing::warn!(to = %hop.addr, host = %hop.host, error = why, "SIP connection failed");
        let _ = self
            .tx
            .send(runner::Event::Core(Input::StreamClosed(
                id,
                Some(why.to_string()),
            )))
            .await;
    }

    /// Read messages off one connection until it ends, idles out or loses framing;
    /// write what the user agent queues for it.
    async fn serve<S>(
        self,
        stream: S,
        peer: Peer,
        direct: mpsc::UnboundedSender<Bytes>,
        mut out_rx: mpsc::UnboundedReceiver<Bytes>,
        _place: Option<Slot>,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Some(id) = peer.transport.conn() else {
            return;
        };
        let from = peer.addr;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut writer_task = tokio::spawn(async move {
            while let Some(b) = out_rx.recv().await {
                if writer.write_all(&b).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        });
        let mut parser = StreamParser::new(Limits::stream());
        let mut buf = vec![0u8; 16 * 1024];
        // The first bytes of the message being read (for a 513 if it is too large).
        let mut head: Vec<u8> = Vec::new();
        loop {
            let n =
                match tokio::time::timeout(self.limits.idle_timeout, reader.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        self.metrics.sip_tcp_idle_closed.inc();
                        tracing::debug!(%from, "SIP connection idle: closing");
                        break;
                    }
                };
            match parser.push(&buf[..n]) {
                Ok(messages) => {
                    let pending = parser.pending();
                    if !messages.is_empty() {
                        head.clear();
                        let tail = &buf[n.saturating_sub(pending)..n];
                        head.extend_from_slice(&tail[..tail.len().min(HEAD_BYTES)]);
                    } else if head.len() < HEAD_BYTES {
                        let room = HEAD_BYTES - head.len();
                        head.extend_from_slice(&buf[..n.min(room)]);
                    }
                    for m in messages {
                        if self
                            .tx
                            .send(runner::Event::Core(Input::Stream(Box::new(m), peer)))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
                Err(e) => {
                    // Framing is lost on a stream: close the connection, after a 513
                    // when the message was too large (RFC 3261 §21.5.11).
                    self.metrics.sip_parse_errors.inc();
                    if matches!(e, sipx_sip::error::ParseError::Limit { .. }) {
                        if head.len() < HEAD_BYTES {
                            let room = HEAD_BYTES - head.len();
                            head.extend_from_slice(&buf[..n.min(room)]);
                        }
                        if let Some(reply) = crude_response(&head, "513 Message Too Large") {
                            let _ = direct.send(reply);
                        }
                    }
                    tracing::debug!(%from, error = %e, "unparseable SIP on a stream: closing");
                    break;
                }
            }
        }
        let _ = self
            .tx
            .send(runner::Event::Core(Input::StreamClosed(id, None)))
            .await;
        // Let what is queued (a 513) go out; the writer ends once the UA forgets the
        // connection.
        drop(direct);
        if tokio::time::timeout(Duration::from_secs(1), &mut writer_task)
            .await
            .is_err()
        {
            writer_task.abort();
        }
    }
}
