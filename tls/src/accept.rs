//! Accepting TCP connections under caps, shared by the HTTP and SIP listeners: at most
//! so many connections at once, so many from one source address (a connection over
//! either is closed at once and counted), and `accept` errors (out of file descriptors)
//! backing off instead of spinning.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};

/// The first wait after an `accept` error; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Connections open at once: in all, and from one source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    pub max_connections: usize,
    pub max_per_source: usize,
}

/// What a listener counts (its own metrics, registered by its owner; the connections
/// open now are its [`Admission`]'s gauge).
#[derive(Clone, Default)]
pub struct AcceptMetrics {
    /// Connections closed at once: over a cap.
    pub refused: Counter,
    /// `accept` errors (each backs off).
    pub errors: Counter,
}

struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

struct Shared {
    caps: ConnectionCaps,
    open: Mutex<Open>,
    gauge: Gauge,
}

/// The connections one or more listeners hold, under one set of caps (the SIP TCP and
/// TLS listeners share theirs).
#[derive(Clone)]
pub struct Admission(Arc<Shared>);

impl Admission {
    /// Caps counted in `open` (connections open now).
    pub fn new(caps: ConnectionCaps, open: Gauge) -> Admission {
        Admission(Arc::new(Shared {
            caps,
            open: Mutex::new(Open {
                total: 0,
                by_ip: HashMap::new(),
            }),
            gauge: open,
        }))
    }

    /// A place for a connection from `ip`, if the caps allow one.
    pub fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        let here = open.by_ip.get(&ip).copied().unwrap_or(0);
        if open.total >= self.0.caps.max_connections || here >= self.0.caps.max_per_source {
            return None;
        }
        open.total += 1;
        open.by_ip.insert(ip, here + 1);
        self.0.gauge.inc();
        Some(Slot {
            shared: self.0.clone(),
            ip,
        })
    }
}

/// One admitted connection's place; given back when dropped.
pub struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.gauge.dec();
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

/// A listener accepting under an [`Admission`].
pub struct Acceptor {
    listener: TcpListener,
    admission: Admission,
    metrics: AcceptMetrics,
    /// For logs: `HTTP`, `SIP`, `SIP TLS`.
    name: &'static str,
    backoff: Duration,
}

impl Acceptor {
    pub fn new(
        listener: TcpListener,
        admission: Admission,
        metrics: AcceptMetrics,
        name: &'static str,
    ) -> Acceptor {
        Acceptor {
            listener,
            admission,
            metrics,
            name,
            backoff: MIN_BACKOFF,
        }
    }

    /// The next connection within the caps, with its place (cancel-safe).
    pub async fn next(&mut self) -> (TcpStream, SocketAddr, Slot) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = MIN_BACKOFF;
                    match self.admission.admit(peer.ip()) {
                        Some(slot) => return (stream, peer, slot),
                        None => {
                            self.metrics.refused.inc();
                            tracing::debug!(listener = self.name, %peer, "connection refused: over the connection caps");
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    self.metrics.errors.inc();
                    tracing::warn!(listener = self.name, error = %e, retry_in_ms = self.backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_overall_and_per_source_and_places_come_back() {
        let gauge = Gauge::default();
        let caps = ConnectionCaps {
            max_connections: 3,
            max_per_source: 2,
        };
        let admission = Admission::new(caps, gauge.clone());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = admission.admit(a).expect("first");
        let _a2 = admission.admit(a).expect("second");
        assert!(admission.admit(a).is_none(), "per source");
        let _b1 = admission.admit(b).expect("another source");
        assert!(admission.admit(b).is_none(), "overall");
        assert_eq!(gauge.get(), 3);
        drop(a1);
        assert_eq!(gauge.get(), 2);
        assert!(admission.admit(b).is_some(), "a place came back");
    }

    #[tokio::test]
    async fn a_connection_over_the_caps_is_closed_and_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let caps = ConnectionCaps {
            max_connections: 1,
            max_per_source: 1,
        };
        let metrics = AcceptMetrics::default();
        let admission = Admission::new(caps, Gauge::default());
        let mut acceptor = Acceptor::new(listener, admission, metrics.clone(), "test");
        let _first = TcpStream::connect(addr).await.expect("connect");
        let (_s, _peer, slot) = acceptor.next().await;
        let _second = TcpStream::connect(addr).await.expect("connect");
        // While the first holds the only place, the second is closed at once.
        let waiting = tokio::time::timeout(Duration::from_millis(300), acceptor.next()).await;
        assert!(waiting.is_err(), "nothing admitted");
        assert_eq!(metrics.refused.get(), 1);
        drop(slot);
        let third = TcpStream::connect(addr).await.expect("connect");
        let (_s, peer, _slot) = acceptor.next().await;
        assert_eq!(peer, third.local_addr().expect("addr"));
        assert_eq!(metrics.refused.get(), 1);
    }
}
