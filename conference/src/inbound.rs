//! Calls that arrive without a participant token (from a PBX Patchbay registered with,
//! or a carrier that cannot carry `User-to-User`): who they are is asked of the
//! application (`sip_inbound_url`), which answers with the participant's token, as a
//! Bandwidth Voice answer callback answers with what to do with a call.

use crate::store::BoxFuture;

/// What is known of a call without a token (all of it from the caller's INVITE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundCall {
    /// The SIP Call-ID.
    pub call_id: String,
    /// From and To URIs, and the Request-URI (with a registration: our Contact).
    pub from: String,
    pub to: String,
    pub request_uri: String,
    /// The user part of the Request-URI, else of To: the number called.
    pub called: String,
}

/// Why an inbound call found no participant (the caller gets 403; the reason is logged,
/// never sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Names the participant of a call without a token.
pub trait InboundRouter: Send + Sync {
    /// The participant token the call joins with.
    fn route(&self, call: InboundCall) -> BoxFuture<'static, Result<String, Refused>>;
}
