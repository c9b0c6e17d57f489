//! Patchbay's SIP gateway: SIP transport, transactions (sipx-sip), dialogs,
//! SDP and RTP for SIP legs. It hands audio to `conference` and never decides
//! who hears whom.

pub mod metrics;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod srtp;
pub mod ua;
pub mod uui;
pub use ua::{
    InboundRoute, SipConfig, SipGateway, SipHop, SipRegistration, SipTransport, SipTrunk,
    TcpLimits, TlsFiles, TlsServer,
};
