//! Calls that arrive without a participant token (from a PBX Patchbay registered with,
//! or a carrier that cannot carry `User-to-User`): who they are is found by the
//! documented rule, [`InboundRules`]: the static map from the number called to a
//! participant (`sip_inbound_numbers`), else the application (`sip_inbound_url`), which
//! answers with the participant's token as a Bandwidth Voice answer callback answers
//! with what to do with a call.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::store::BoxFuture;
use crate::Conference;

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

/// The rule for calls without a token: the number called, if the static map has it,
/// names the participant; otherwise the application is asked, if there is one; else
/// the call is refused.
pub struct InboundRules {
    numbers: BTreeMap<String, Uuid>,
    application: Option<Arc<dyn InboundRouter>>,
    conference: Arc<Conference>,
}

impl InboundRules {
    pub fn new(
        numbers: BTreeMap<String, Uuid>,
        application: Option<Arc<dyn InboundRouter>>,
        conference: Arc<Conference>,
    ) -> InboundRules {
        InboundRules {
            numbers,
            application,
            conference,
        }
    }
}

impl InboundRouter for InboundRules {
    fn route(&self, call: InboundCall) -> BoxFuture<'static, Result<String, Refused>> {
        if let Some(participant) = self.numbers.get(&call.called) {
            let token = self
                .conference
                .token_for(*participant)
                .map_err(|e| Refused(format!("sip_inbound_numbers: {} → {e}", call.called)));
            return Box::pin(async move { token });
        }
        match &self.application {
            Some(app) => app.route(call),
            None => {
                let why = format!("no rule names a participant for `{}`", call.called);
                Box::pin(async move { Err(Refused(why)) })
            }
        }
    }
}
