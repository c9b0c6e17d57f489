//! SIP over TCP: accepting within the connection limits (overall and per source
//! address, with back-off on accept errors), framing each connection's stream into
//! messages for the user agent, idle timeouts, and 513 for a message over the limit.

use super::*;

/// Bytes kept of a message's start, to answer it when the parser refuses it.
const HEAD_BYTES: usize = 8 * 1024;

/// Open TCP connections: in all, and per source IP address.
#[derive(Default)]
struct TcpCount {
    total: usize,
    by_ip: HashMap<std::net::IpAddr, usize>,
}

/// Releases its connection's place in the count when the connection ends.
struct TcpPlace {
    count: Arc<std::sync::Mutex<TcpCount>>,
    ip: std::net::IpAddr,
    metrics: SipMetrics,
}

impl Drop for TcpPlace {
    fn drop(&mut self) {
        let mut c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
        self.metrics.sip_tcp_connections.dec();
    }
}

pub(super) async fn tcp_loop(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<Input>,
    metrics: SipMetrics,
    limits: TcpLimits,
) {
    static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
    let count = Arc::new(std::sync::Mutex::new(TcpCount::default()));
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::from_millis(10);
                x
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                metrics.sip_accept_errors.inc();
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "SIP TCP accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let place = {
            let mut c = count.lock().unwrap_or_else(|e| e.into_inner());
            let from_ip = c.by_ip.get(&from.ip()).copied().unwrap_or(0);
            if c.total >= limits.max_connections || from_ip >= limits.max_per_source {
                None
            } else {
                c.total += 1;
                *c.by_ip.entry(from.ip()).or_default() += 1;
                metrics.sip_tcp_connections.inc();
                Some(TcpPlace {
                    count: count.clone(),
                    ip: from.ip(),
                    metrics: metrics.clone(),
                })
            }
        };
        let Some(place) = place else {
            metrics.sip_tcp_refused.inc();
            tracing::debug!(%from, "SIP TCP connection refused: over the connection limits");
            drop(stream);
            continue;
        };
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
        let direct = out_tx.clone();
        if tx.send(Input::TcpOpened(id, out_tx)).is_err() {
            return;
        }
        let tx = tx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _place = place;
            let (mut reader, mut writer) = stream.into_split();
            let mut writer_task = tokio::spawn(async move {
                while let Some(b) = out_rx.recv().await {
                    if writer.write_all(&b).await.is_err() {
                        break;
                    }
                }
            });
            let mut parser = StreamParser::new(Limits::stream());
            let mut buf = vec![0u8; 16 * 1024];
            // The first bytes of the message being read (for a 513 if it is too large).
            let mut head: Vec<u8> = Vec::new();
            let peer = Peer {
                transport: Transport::Tcp(id),
                addr: from,
            };
            loop {
                let n = match tokio::time::timeout(limits.idle_timeout, reader.read(&mut buf)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        metrics.sip_tcp_idle_closed.inc();
                        tracing::debug!(%from, "SIP TCP connection idle: closing");
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
                            if tx.send(Input::Stream(Box::new(m), peer)).is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        // Framing is lost on a stream: close the connection, after a 513
                        // when the message was too large (RFC 3261 §21.5.11).
                        metrics.sip_parse_errors.inc();
                        if matches!(e, sipx_sip::error::ParseError::Limit { .. }) {
                            if head.len() < HEAD_BYTES {
                                let room = HEAD_BYTES - head.len();
                                head.extend_from_slice(&buf[..n.min(room)]);
                            }
                            if let Some(reply) = crude_response(&head, "513 Message Too Large") {
                                let _ = direct.send(reply);
                            }
                        }
                        tracing::debug!(%from, error = %e, "unparseable SIP on TCP: closing");
                        break;
                    }
                }
            }
            let _ = tx.send(Input::TcpClosed(id));
            // Let what is queued (a 513) go out; the writer ends once the UA forgets the
            // connection.
            drop(direct);
            if tokio::time::timeout(Duration::from_secs(1), &mut writer_task)
                .await
                .is_err()
            {
                writer_task.abort();
            }
        });
    }
}
