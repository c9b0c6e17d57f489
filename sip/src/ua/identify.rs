//! Who a new INVITE's caller is: the participant its `User-to-User` token names, the
//! one the inbound rule names for a call without a token (`sip_inbound_numbers`, then
//! `sip_inbound_url`), or the one of the call its `Replaces` names (RFC 3891); in a
//! cluster the session is placed first. `uas.rs` then admits it.

use super::*;

impl Ua {
    /// An INVITE replacing a call of ours (RFC 3891, an attended transfer): it takes
    /// that call's participant, and that call ends. Knowing the call's Call-ID and
    /// both tags is what entitles it; only an answered call is replaced.
    pub(super) fn admit_replacing(&mut self, key: &TransactionKey, req: &Request, replaces: &str) {
        let call_id = Self::call_id(req);
        let refuse = |ua: &mut Ua, code: u16, reason: &str| {
            tracing::info!(%call_id, code, "call refused: its Replaces does not apply");
            ua.metrics.sip_calls_rejected.inc();
            let tag = random_token();
            ua.respond(key, req, Reply::new(code, reason).tag(&tag));
        };
        let Some(r) = parse_replaces(replaces) else {
            return refuse(self, 400, "Bad Request (Replaces)");
        };
        let Some(call) = self
            .calls
            .get(&r.call_id)
            .filter(|c| c.dialog.replaced_by(&r.to_tag, &r.from_tag))
        else {
            return refuse(self, 481, "Call/Transaction Does Not Exist");
        };
        if !call.dialog.confirmed() {
            return refuse(self, 481, "Call/Transaction Does Not Exist");
        }
        if r.early_only {
            return refuse(self, 486, "Busy Here");
        }
        let participant = call.owner.participant_id;
        tracing::info!(%call_id, replaced = %r.call_id, %participant, "call replaces one of ours");
        self.admit_invite(
            key,
            req,
            Admit::Replacing {
                participant,
                call_id: r.call_id,
            },
        );
    }

    /// A call without a token: the application names its participant
    /// (`sip_inbound_url`), or it is refused.
    pub(super) fn route_inbound(&mut self, key: &TransactionKey, req: &Request) {
        let call_id = Self::call_id(req);
        let Some(router) = self.config.inbound.clone() else {
            tracing::info!(%call_id, "call refused: no User-to-User token");
            self.metrics.sip_calls_rejected.inc();
            let tag = random_token();
            let reply = Reply::new(403, "Forbidden (no participant token)").tag(&tag);
            return self.respond(key, req, reply);
        };
        if self.placing.len() >= MAX_PLACING {
            return self.too_many_placing(key, req);
        }
        let call = inbound_call(req);
        tracing::info!(%call_id, called = %call.called, "call without a token: asking sip_inbound_url");
        self.placing.insert(call_id);
        let (key, req) = (key.clone(), Box::new(req.clone()));
        self.ask(async move {
            let token = router.0.route(call).await;
            Some(Input::Routed { key, req, token })
        });
    }

    /// The application answered for a call without a token.
    pub(super) fn on_routed(
        &mut self,
        key: &TransactionKey,
        req: &Request,
        token: Result<String, patchbay_conference::inbound::Refused>,
    ) {
        let call_id = Self::call_id(req);
        self.placing.remove(&call_id);
        if !self.still_waiting(key, req) {
            return;
        }
        match token {
            Ok(token) => self.admit_with_token(key, req, token),
            Err(why) => {
                tracing::info!(%call_id, %why, "call refused by the inbound rule");
                self.metrics.sip_calls_rejected.inc();
                let tag = random_token();
                let reply = Reply::new(403, "Forbidden").tag(&tag);
                self.respond(key, req, reply);
            }
        }
    }

    /// Whether an INVITE that waited (for the application or the cluster) still waits
    /// for its answer: a CANCEL (answered 487) or timer expiry ended it, and it must
    /// not become a call nobody is on.
    pub(super) fn still_waiting(&self, key: &TransactionKey, req: &Request) -> bool {
        let waiting = matches!(self.layer.server_state(key), Some(ServerState::Proceeding));
        if !waiting {
            let call_id = Self::call_id(req);
            tracing::info!(%call_id, "call ended while it waited: not admitted");
        }
        waiting
    }

    pub(super) fn too_many_placing(&mut self, key: &TransactionKey, req: &Request) {
        // Each waits for one store statement or one answer: a flood of INVITEs must
        // not grow tasks without bound.
        self.metrics.sip_calls_rejected.inc();
        self.metrics.sip_placing_refused.inc();
        let tag = random_token();
        let retry = [("Retry-After", "1".to_string())];
        let reply = Reply::new(503, "Service Unavailable (too many calls being placed)")
            .tag(&tag)
            .headers(&retry);
        self.respond(key, req, reply);
    }

    /// A call with its token (from `User-to-User` or the inbound rule).
    pub(super) fn admit_with_token(&mut self, key: &TransactionKey, req: &Request, token: String) {
        let call_id = Self::call_id(req);
        // In a cluster, a session no node runs yet is taken here, and one another node
        // runs is redirected there: one statement against the store first (the INVITE
        // waits, answered 100).
        if let Some(session) = self.conference.session_to_place(&token) {
            if self.placing.len() >= MAX_PLACING {
                return self.too_many_placing(key, req);
            }
            self.placing.insert(call_id);
            let conference = self.conference.clone();
            let (key, req) = (key.clone(), Box::new(req.clone()));
            self.ask(async move {
                let placed = match conference.place_session(session).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(session_id = %session, error = %e, "placing a call's session failed");
                        false
                    }
                };
                Some(Input::Placed {
                    key,
                    req,
                    token,
                    placed,
                })
            });
            return;
        }
        self.admit_invite(key, req, Admit::Token(token));
    }

    /// The cluster placed an INVITE's session (or could not).
    pub(super) fn on_placed(
        &mut self,
        key: &TransactionKey,
        req: &Request,
        token: String,
        placed: bool,
    ) {
        self.placing.remove(&Self::call_id(req));
        if !self.still_waiting(key, req) {
            return;
        }
        if placed {
            return self.admit_invite(key, req, Admit::Token(token));
        }
        self.metrics.sip_calls_rejected.inc();
        let tag = random_token();
        let reason = "Service Unavailable (the cluster's store cannot be reached)";
        self.respond(key, req, Reply::new(503, reason).tag(&tag));
    }
}

/// Who an admitted INVITE's caller is.
pub(super) enum Admit {
    /// The participant its token names.
    Token(String),
    /// The participant of the call it replaces (RFC 3891), which then ends.
    Replacing {
        participant: uuid::Uuid,
        call_id: String,
    },
}

/// A `Replaces` header's parts (RFC 3891 §6.1).
#[derive(Debug, PartialEq, Eq)]
struct Replaces {
    call_id: String,
    to_tag: String,
    from_tag: String,
    early_only: bool,
}

fn parse_replaces(value: &str) -> Option<Replaces> {
    let mut parts = value.split(';').map(str::trim);
    let call_id = parts.next().filter(|c| !c.is_empty())?.to_string();
    let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
    for p in parts {
        match p.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("to-tag") => {
                to_tag = Some(v.trim().to_string())
            }
            Some((k, v)) if k.trim().eq_ignore_ascii_case("from-tag") => {
                from_tag = Some(v.trim().to_string())
            }
            None if p.eq_ignore_ascii_case("early-only") => early_only = true,
            _ => {}
        }
    }
    Some(Replaces {
        call_id,
        to_tag: to_tag?,
        from_tag: from_tag?,
        early_only,
    })
}

/// What the inbound rule is told of a call: From, To, the Request-URI, the number called.
fn inbound_call(req: &Request) -> patchbay_conference::inbound::InboundCall {
    let uri_of = |name: &str| {
        first_value(req, name)
            .and_then(|v| {
                let v = v.split_once('<').map(|(_, r)| r).unwrap_or(&v).to_string();
                v.split(['>', ';'])
                    .next()
                    .map(str::trim)
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    let to = uri_of("To");
    let user_of = |uri: &str| -> String {
        let rest = uri.split_once(':').map(|(_, r)| r).unwrap_or(uri);
        rest.split_once('@')
            .map(|(u, _)| u.to_string())
            .unwrap_or_default()
    };
    let request_uri = req.uri.to_string();
    let called = match req.uri.user() {
        Some(u) if !u.is_empty() => String::from_utf8_lossy(u).into_owned(),
        _ => user_of(&to),
    };
    patchbay_conference::inbound::InboundCall {
        call_id: first_value(req, "Call-ID").unwrap_or_default(),
        from: uri_of("From"),
        to,
        request_uri,
        called,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_headers() {
        assert_eq!(
            parse_replaces("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff"),
            Some(Replaces {
                call_id: "98732@sip.example.com".into(),
                to_tag: "ff87ff".into(),
                from_tag: "r33th4x0r".into(),
                early_only: false,
            })
        );
        assert!(parse_replaces("c; To-Tag = a ;FROM-TAG=b;early-only")
            .is_some_and(|r| r.early_only && r.to_tag == "a" && r.from_tag == "b"));
        assert_eq!(parse_replaces("c;to-tag=a"), None);
        assert_eq!(parse_replaces(";to-tag=a;from-tag=b"), None);
        assert_eq!(parse_replaces(""), None);
    }
}
