//! Counters of the SIP gateway, registered into the process's Prometheus registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Cheap to clone: every field is a shared atomic.
#[derive(Clone, Default)]
pub struct SipMetrics {
    pub messages_received: Counter,
    pub parse_errors: Counter,
    pub oversized: Counter,
    pub invalid_requests: Counter,
    pub calls_accepted: Counter,
    pub calls_rejected: Counter,
    pub calls_active: Gauge,
    pub rtp_received: Counter,
    pub rtp_malformed: Counter,
    pub rtp_sent: Counter,
    pub rtp_send_dropped: Counter,
    pub rtcp_received: Counter,
    pub rtp_timeouts: Counter,
}

impl SipMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "sip_messages_received",
            "SIP messages received (parsed)",
            self.messages_received.clone(),
        );
        r.register(
            "sip_parse_errors",
            "SIP datagrams or stream frames that did not parse (dropped or answered 400)",
            self.parse_errors.clone(),
        );
        r.register(
            "sip_oversized",
            "SIP datagrams over the size limit (dropped)",
            self.oversized.clone(),
        );
        r.register(
            "sip_invalid_requests",
            "SIP requests refused by validation (400/415/416/420/501/505)",
            self.invalid_requests.clone(),
        );
        r.register(
            "sip_calls_accepted",
            "Inbound calls answered with 200",
            self.calls_accepted.clone(),
        );
        r.register(
            "sip_calls_rejected",
            "Inbound calls refused",
            self.calls_rejected.clone(),
        );
        r.register(
            "sip_calls_active",
            "SIP legs up now",
            self.calls_active.clone(),
        );
        r.register(
            "rtp_received",
            "RTP packets received on SIP legs",
            self.rtp_received.clone(),
        );
        r.register(
            "rtp_malformed",
            "Malformed RTP packets dropped",
            self.rtp_malformed.clone(),
        );
        r.register(
            "rtp_sent",
            "RTP packets sent on SIP legs",
            self.rtp_sent.clone(),
        );
        r.register(
            "rtp_send_dropped",
            "RTP packets dropped because the socket was full",
            self.rtp_send_dropped.clone(),
        );
        r.register(
            "rtcp_received",
            "RTCP packets received on SIP legs",
            self.rtcp_received.clone(),
        );
        r.register(
            "rtp_timeouts",
            "Calls ended because no RTP arrived for rtp_timeout",
            self.rtp_timeouts.clone(),
        );
    }
}
