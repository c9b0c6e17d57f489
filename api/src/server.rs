//! The HTTP listener: accepts connections under caps and serves each with hyper's
//! HTTP/1 connection, WebSocket upgrades included.
//!
//! `axum::serve` has no header read timeout (its hyper connection has no timer), so a
//! client that sends its headers one byte a minute holds a connection and a task for
//! ever, and it caps nothing. Here:
//! - a request's headers must arrive within `header_timeout` (hyper's
//!   `header_read_timeout`, which also runs while a keep-alive connection waits for its
//!   next request: the idle limit);
//! - its body within `body_timeout` after the headers ([`read_body`], used by the router);
//! - no write (a response, a WebSocket message) may wait more than `write_timeout` for a
//!   client that does not read (`write_timeout.rs`);
//! - at most `max_connections` connections at once, `max_per_source` from one address,
//!   WebSockets included for as long as they live; more are closed at once and counted;
//! - `accept` errors (e.g. out of file descriptors) back off instead of spinning;
//! - with a certificate (`http_tls_cert`), every connection is TLS (HTTPS, WSS), its
//!   handshake bounded by `header_timeout`; the certificate is read again on SIGHUP;
//! - on shutdown, listening stops and each connection finishes its request in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use patchbay_tls::{AcceptMetrics, Acceptor, Admission, ConnectionCaps, Slot, TlsServer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// How long one write may wait for a client that does not read.
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_per_source: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_per_source: 256,
        }
    }
}

/// What the listener counts (registered into `/metrics`).
#[derive(Clone, Default)]
pub struct HttpServerMetrics {
    pub connections: Gauge,
    pub refused: Counter,
    pub header_timeouts: Counter,
    pub body_timeouts: Counter,
    pub write_timeouts: Counter,
    pub accept_errors: Counter,
    pub tls_handshake_failures: Counter,
}

impl HttpServerMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "http_connections",
            "HTTP connections open now (WebSockets included)",
            self.connections.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections closed at accept (over http_max_connections or http_max_per_source)",
            self.refused.clone(),
        );
        r.register(
            "http_header_timeouts",
            "HTTP connections closed because a request's headers did not arrive within http_header_timeout (includes idle keep-alive connections)",
            self.header_timeouts.clone(),
        );
        r.register(
            "http_body_timeouts",
            "HTTP requests answered 408 because the body did not arrive within http_body_timeout",
            self.body_timeouts.clone(),
        );
        r.register(
            "http_write_timeouts",
            "HTTP connections (WebSockets included) closed because one write waited 30 s for a client that did not read",
            self.write_timeouts.clone(),
        );
        r.register(
            "http_accept_errors",
            "HTTP accept errors (e.g. out of file descriptors; accepting backs off)",
            self.accept_errors.clone(),
        );
        r.register(
            "http_tls_handshake_failures",
            "HTTPS connections closed because their TLS handshake failed or did not finish within http_header_timeout",
            self.tls_handshake_failures.clone(),
        );
    }
}

/// The connection's place under the caps, in every request's extensions: a WebSocket
/// keeps it for as long as it lives, after its HTTP connection handed the socket over.
#[derive(Clone)]
pub struct ConnectionSlot(pub Arc<Slot>);

/// Serve `router` on `listener` (over TLS with `tls`) until `shutdown` completes, then
/// let every connection finish its request in flight (WebSockets are closed by their
/// owners).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: HttpServerMetrics,
    tls: Option<TlsServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let caps = ConnectionCaps {
        max_connections: limits.max_connections,
        max_per_source: limits.max_per_source,
    };
    let counted = AcceptMetrics {
        refused: metrics.refused.clone(),
        errors: metrics.accept_errors.clone(),
    };
    let admission = Admission::new(caps, metrics.connections.clone());
    let mut acceptor = Acceptor::new(listener, admission, counted, "HTTP");
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer, slot) = tokio::select! {
            accepted = acceptor.next() => accepted,
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = ConnectionSlot(Arc::new(slot));
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(slot.clone());
                req
            },
        ));
        let (metrics, stop, done) = (metrics.clone(), stop_rx.clone(), done_rx.clone());
        let handshake = tls.as_ref().map(TlsServer::acceptor);
        tokio::spawn(async move {
            let _done = done;
            let Some(handshake) = handshake else {
                return serve_connection(stream, service, limits, &metrics, stop, peer).await;
            };
            match tokio::time::timeout(limits.header_timeout, handshake.accept(stream)).await {
                Ok(Ok(stream)) => {
                    serve_connection(stream, service, limits, &metrics, stop, peer).await
                }
                Ok(Err(e)) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                }
                Err(_) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(%peer, "HTTPS handshake did not finish in time");
                }
            }
        });
    }
    drop(acceptor);
    let _ = stop_tx.send(true);
    drop(done_rx);
    // Every connection task holds a receiver: wait (bounded) until they are all gone.
    let _ = tokio::time::timeout(Duration::from_secs(10), done_tx.closed()).await;
}

/// Serve one connection (plain or TLS) with hyper's HTTP/1, WebSocket upgrades included.
async fn serve_connection<S, T>(
    stream: S,
    service: T,
    limits: HttpLimits,
    metrics: &HttpServerMetrics,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Send
        + 'static,
    T::Future: Send + 'static,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let stream = crate::write_timeout::WriteTimeout::new(
        stream,
        limits.write_timeout,
        metrics.write_timeouts.clone(),
    );
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { drop(stop.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics.header_timeouts.inc();
        }
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// Read a request body of at most `limit` bytes within `timeout`.
pub enum BodyRead {
    Complete(axum::body::Bytes),
    TooLarge,
    TimedOut,
    Failed,
}

pub async fn read_body(body: axum::body::Body, limit: usize, timeout: Duration) -> BodyRead {
    use futures_util::StreamExt;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return BodyRead::Failed;
            };
            if out.len() + chunk.len() > limit {
                return BodyRead::TooLarge;
            }
            out.extend_from_slice(&chunk);
        }
        BodyRead::Complete(out.into())
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(BodyRead::TimedOut)
}
