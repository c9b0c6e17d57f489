//! Patchbay's SIP gateway (SIP transport, transactions, dialogs, SDP, RTP for SIP legs).
//!
//! Not built yet: see the README's feature status.
