//! Prometheus metrics of the HTTP surface and the control plane.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~4 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    sessions: Gauge<i64, std::sync::atomic::AtomicI64>,
    participants: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Device signaling requests refused by a bound (e.g. v2 publishing endpoints).
    pub signaling_refused: Counter,
    /// Device sockets relayed to the node that owns their session (a cluster).
    pub signaling_relayed: Counter,
    /// Device sockets refused because their participant connects too often.
    pub device_connects_refused: Counter,
    /// Stream participants' bots: connected now, connections that failed, audio and
    /// messages dropped at the bounds, frames that were not the protocol's.
    pub streams_connected: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub stream_connect_failures: Counter,
    pub stream_dropped: Counter,
    pub stream_invalid_messages: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// Metrics with more families registered by other parts of the process (e.g. SIP counters).
    pub fn with(extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("patchbay");
        extra(&mut registry);
        let requests = Family::<RequestLabels, Counter<u64, AtomicU64>>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let sessions = Gauge::default();
        let participants = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        registry.register("sessions", "Live sessions", sessions.clone());
        registry.register("participants", "Participants", participants.clone());
        let signaling_refused = Counter::default();
        registry.register(
            "signaling_refused",
            "Device signaling requests refused by a bound (e.g. v2 publishing endpoints)",
            signaling_refused.clone(),
        );
        let signaling_relayed = Counter::default();
        registry.register(
            "signaling_relayed",
            "Device sockets relayed to the cluster node that owns their session",
            signaling_relayed.clone(),
        );
        let device_connects_refused = Counter::default();
        registry.register(
            "device_connects_refused",
            "Device sockets closed 4429 because their participant's devices connected too often (30 at once, then one per 2 s)",
            device_connects_refused.clone(),
        );
        let streams_connected = Gauge::default();
        registry.register(
            "streams_connected",
            "Stream participants whose bot's WebSocket is connected",
            streams_connected.clone(),
        );
        let stream_connect_failures = Counter::default();
        registry.register(
            "stream_connect_failures",
            "Connections to stream participants' bots that failed, were refused by the egress policy, or waited beyond the streams a node runs (1000)",
            stream_connect_failures.clone(),
        );
        let stream_dropped = Counter::default();
        registry.register(
            "stream_dropped",
            "Bot audio beyond the 60 s playout queue (bytes) and messages to a bot slow to read, dropped",
            stream_dropped.clone(),
        );
        let stream_invalid_messages = Counter::default();
        registry.register(
            "stream_invalid_messages",
            "Frames from bots that were not messages of their protocol (ignored)",
            stream_invalid_messages.clone(),
        );
        Metrics {
            streams_connected,
            stream_connect_failures,
            stream_dropped,
            stream_invalid_messages,
            signaling_refused,
            signaling_relayed,
            device_connects_refused,
            registry,
            requests,
            latency,
            sessions,
            participants,
        }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition, with the gauges set to the given counts.
    pub fn render(&self, sessions: usize, participants: usize) -> String {
        self.sessions.set(sessions as i64);
        self.participants.set(participants as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
