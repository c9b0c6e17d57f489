//! Counters of the SIP gateway, registered into the process's Prometheus registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// One list defines each metric's field, type, name and help, so none can be
/// declared and forgotten in the registry.
macro_rules! sip_metrics {
    ($($field:ident: $ty:ty => $help:literal,)*) => {
        /// Cheap to clone: every field is a shared atomic.
        #[derive(Clone, Default)]
        pub struct SipMetrics {
            $(pub $field: $ty,)*
        }

        impl SipMetrics {
            pub fn register(&self, r: &mut Registry) {
                $(r.register(stringify!($field), $help, self.$field.clone());)*
            }
        }
    };
}

sip_metrics! {
    sip_messages_received: Counter => "SIP messages received (parsed)",
    sip_parse_errors: Counter => "SIP datagrams or stream frames that did not parse (dropped or answered 400)",
    sip_oversized: Counter => "SIP datagrams over the size limit (dropped)",
    sip_input_dropped: Counter => "SIP datagrams dropped because the user agent's input queue was full",
    sip_placing_refused: Counter => "INVITEs refused (503) because too many were waiting for the cluster to place their session",
    sip_tcp_refused: Counter => "SIP TCP connections refused (over sip_tcp_max_connections or sip_tcp_max_per_source)",
    sip_tcp_idle_closed: Counter => "SIP TCP connections closed after sip_tcp_idle_timeout without a byte",
    sip_accept_errors: Counter => "SIP TCP accept errors (e.g. out of file descriptors; accepting backs off)",
    sip_transactions_refused: Counter => "SIP requests answered 503 because their source held sip_max_transactions_per_source server transactions",
    sip_tcp_connections: Gauge => "SIP TCP and TLS connections open now (accepted and ours)",
    sip_tls_handshake_failures: Counter => "SIP TLS handshakes that failed or timed out (either direction)",
    sip_tls_reloads: Counter => "SIP TLS certificate reloads that took effect (SIGHUP)",
    sip_trunk_up: Gauge => "1 while the SIP trunk answers OPTIONS pings, 0 when it does not",
    sip_registered: Gauge => "Accounts of sip_registrations registered now (their registrar granted a binding that has not expired)",
    sip_registrations: Gauge => "Accounts in sip_registrations (registered or not)",
    sip_trunk_pings: Counter => "OPTIONS pings sent to the SIP trunk",
    sip_invalid_requests: Counter => "SIP requests refused by validation (400/405/406/415/416/420/501/505)",
    sip_calls_accepted: Counter => "Inbound calls answered with 200",
    sip_calls_rejected: Counter => "Inbound calls refused",
    sip_calls_active: Gauge => "SIP legs up now",
    rtp_received: Counter => "RTP packets received on SIP legs",
    rtp_malformed: Counter => "Malformed RTP or RTCP packets dropped",
    rtp_srtp_failed: Counter => "SRTP or SRTCP packets that failed authentication or the replay check (dropped)",
    rtp_unknown_source: Counter => "RTP and RTCP packets from an address other than the leg's source, or from a source still on probation (dropped)",
    rtp_source_latched: Counter => "Sources a leg's RTP was latched to after proving themselves (first sources included)",
    rtp_sent: Counter => "RTP packets sent on SIP legs",
    rtp_send_dropped: Counter => "RTP packets dropped because the socket was full",
    rtp_timeouts: Counter => "Calls ended because no RTP or RTCP arrived for rtp_timeout",
    rtcp_received: Counter => "RTCP packets received on SIP legs",
    rtcp_sent: Counter => "RTCP reports sent on SIP legs",
}
