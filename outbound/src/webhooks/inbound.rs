//! `sip_inbound_url`: a call without a token is offered to the application, which
//! answers `200` with `{"token": "<participant token>"}` (create the participant and
//! add it to its session first, as for a transfer with `User-to-User`). Anything else
//! (another status, no token, a timeout, an address the egress policy refuses) refuses
//! the call with 403. Signed like the other webhooks (`X-Patchbay-Signature`).

use std::sync::Arc;
use std::time::Duration;

use patchbay_conference::inbound::{InboundCall, InboundRouter, Refused};
use patchbay_conference::store::BoxFuture;
use serde_json::json;

use crate::egress::EgressPolicy;
use crate::webhooks::{signature, SIGNATURE_HEADER};

/// The application has this long to answer (the caller waits, answered 100 Trying).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The answer's body is read up to this size.
const MAX_ANSWER: usize = 16 * 1024;

/// Asks `sip_inbound_url` for each call without a token.
pub struct InboundWebhook {
    url: reqwest::Url,
    secret: Option<String>,
    client: reqwest::Client,
}

impl InboundWebhook {
    /// Checks `url` against the egress policy as a `callbackUrl` is checked.
    pub fn new(
        url: &str,
        secret: Option<String>,
        egress: Arc<EgressPolicy>,
    ) -> Result<InboundWebhook, String> {
        let url = egress.check_url_as(url, "sip_inbound_url", &["http", "https"])?;
        let client = reqwest::Client::builder()
            .timeout(ANSWER_TIMEOUT)
            // As webhooks: never through a proxy, no redirects, only allowed addresses.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(crate::egress::PolicyResolver(egress)))
            .build()
            .map_err(|e| format!("sip_inbound_url: the HTTP client: {e}"))?;
        Ok(InboundWebhook {
            url,
            secret,
            client,
        })
    }
}

impl InboundRouter for InboundWebhook {
    fn route(&self, call: InboundCall) -> BoxFuture<'static, Result<String, Refused>> {
        let body = json!({
            "eventType": "sipInbound",
            "callId": call.call_id,
            "from": call.from,
            "to": call.to,
            "requestUri": call.request_uri,
            "called": call.called,
            "timestamp": super::now_ms().to_string(),
        })
        .to_string();
        let mut req = self
            .client
            .post(self.url.clone())
            .header("Content-Type", "application/json");
        if let Some(secret) = &self.secret {
            req = req.header(SIGNATURE_HEADER, signature(secret, body.as_bytes()));
        }
        let req = req.body(body);
        Box::pin(async move {
            let mut resp = req
                .send()
                .await
                .map_err(|e| Refused(format!("sip_inbound_url: {}", without_url(&e))))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(Refused(format!("sip_inbound_url answered {status}")));
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| Refused(format!("sip_inbound_url: {}", without_url(&e))))?
            {
                if bytes.len() + chunk.len() > MAX_ANSWER {
                    return Err(Refused(format!(
                        "sip_inbound_url: answer over {MAX_ANSWER} bytes"
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            let answer: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|_| Refused("sip_inbound_url: the answer is not JSON".into()))?;
            match answer.get("token").and_then(|t| t.as_str()) {
                Some(t) if !t.is_empty() => Ok(t.to_string()),
                _ => Err(Refused(
                    "sip_inbound_url: the answer names no token (the call is refused)".into(),
                )),
            }
        })
    }
}

/// A request error without its URL (logged; the URL may carry a query the operator
/// would not want in logs).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "cannot connect (or the egress policy refused the address)".into()
    } else {
        "the request failed".into()
    }
}
