//! Keeping Patchbay registered with a PBX or carrier (`[[sip_registrations]]`): the
//! shell around [`registration::Registration`]: it builds and sends each REGISTER
//! the machine asks for, feeds it the answers, keeps its timer, counts the
//! registered accounts (`patchbay_sip_registered`) and logs each change.

use sipx_sip::auth::{Challenge, Credentials};
use sipx_sip::Response;

use super::registration::{Outcome, Registration, Send, Status};
use super::*;

/// The registrations.
#[derive(Default)]
pub(super) struct Registrations {
    list: Vec<Entry>,
}

struct Entry {
    hop: SipHop,
    /// Our Contact's user part (the AOR's).
    user: String,
    call_id: String,
    from_tag: String,
    machine: Registration,
    /// The timer armed for it.
    timer: Option<(Instant, u64)>,
    /// What was last logged (a change is logged once).
    logged: Option<Status>,
}

impl Registrations {
    pub(super) fn new(configs: &[SipRegistration], host: &str, now: Instant) -> Registrations {
        let list = configs
            .iter()
            .map(|c| {
                let request_uri = format!(
                    "sip:{}{}",
                    c.registrar.host_port(),
                    c.registrar.transport_param()
                );
                let credentials = match (&c.user, &c.password) {
                    (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
                    _ => None,
                };
                Entry {
                    hop: c.registrar.clone(),
                    user: aor_user(&c.aor).to_string(),
                    call_id: format!("{}@{host}", random_token()),
                    from_tag: random_token(),
                    machine: Registration::new(
                        c.aor.clone(),
                        request_uri,
                        credentials,
                        c.expires,
                        now,
                        random_token,
                    ),
                    timer: None,
                    logged: None,
                }
            })
            .collect();
        Registrations { list }
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }
}

/// The user part of `sip:user@host` (the config checked its form).
fn aor_user(aor: &str) -> &str {
    let rest = aor
        .strip_prefix("sips:")
        .or_else(|| aor.strip_prefix("sip:"))
        .unwrap_or(aor);
    rest.split_once('@').map(|(u, _)| u).unwrap_or(rest)
}

impl Ua {
    /// Time for registration `i`: it may send a REGISTER.
    pub(super) fn registration_timer(&mut self, i: usize) {
        let Some(e) = self.registrations.list.get_mut(i) else {
            return;
        };
        e.timer = None;
        let send = e.machine.handle_timeout(self.now);
        if let Some(send) = send {
            self.send_register(i, send);
        }
        self.registration_changed(i);
    }

    /// Re-arm registration `i`'s timer, update the gauge, log a change.
    fn registration_changed(&mut self, i: usize) {
        let Some(e) = self.registrations.list.get_mut(i) else {
            return;
        };
        let at = e.machine.poll_timeout();
        if let Some(old) = e.timer.take() {
            self.timers.remove(&old);
        }
        let status = e.machine.status().clone();
        let changed = match (&e.logged, &status) {
            (Some(Status::Registered { .. }), Status::Registered { .. }) => false,
            (Some(Status::Failing { why: a, .. }), Status::Failing { why: b, .. }) => a != b,
            (old, new) => old.as_ref() != Some(new),
        };
        if changed {
            let aor = e.machine.aor.clone();
            match &status {
                Status::Registered { until } => {
                    let expires_s = until.saturating_duration_since(self.now).as_secs();
                    tracing::info!(%aor, registrar = %e.hop.host, expires_s, "SIP: registered")
                }
                Status::Failing { why, retry } => {
                    let retry_s = retry.saturating_duration_since(self.now).as_secs();
                    tracing::warn!(%aor, registrar = %e.hop.host, why, retry_s, "SIP: registration failed")
                }
                Status::Trying => tracing::info!(%aor, registrar = %e.hop.host, "SIP: registering"),
                Status::Stopped => tracing::info!(%aor, "SIP: unregistered"),
            }
            e.logged = Some(status);
        }
        if let Some(at) = at {
            let id = self.schedule(at, TimerKind::Register(i));
            if let Some(e) = self.registrations.list.get_mut(i) {
                e.timer = Some(id);
            }
        }
        let up = self
            .registrations
            .list
            .iter()
            .filter(|e| e.machine.is_registered())
            .count();
        self.metrics.sip_registered.set(up as i64);
    }

    fn send_register(&mut self, i: usize, send: Send) {
        let Some(e) = self.registrations.list.get(i) else {
            return;
        };
        let hop = e.hop.clone();
        let Some(peer) = self.peer_for(hop) else {
            // No way to the registrar now (a TLS hop without a client): a failure.
            return self.register_outcome(i, Outcome::NoAnswer);
        };
        let Some(e) = self.registrations.list.get(i) else {
            return;
        };
        let contact = format!(
            "<sip:{}@{}:{};transport={}>",
            e.user,
            self.our_host(),
            self.our_port(peer.transport),
            peer.transport.uri_param()
        );
        let request = OutRequest {
            from: format!("<{}>;tag={}", e.machine.aor, e.from_tag).into(),
            to: format!("<{}>", e.machine.aor).into(),
            call_id: e.call_id.clone(),
            cseq: send.cseq,
            headers: vec![
                (hn("Contact"), contact),
                (hn("Expires"), send.expires.to_string()),
                (hn("Allow"), ALLOW.to_string()),
            ],
            ..OutRequest::new(Method::Register, e.machine.request_uri.clone())
        };
        let mut request = request;
        if let Some((name, value)) = send.authorization {
            request.headers.push((name, value));
        }
        let Some(req) = self.build_request(&request, &peer) else {
            return self.register_outcome(i, Outcome::NoAnswer);
        };
        let sent = self.send_client(req, peer, clients::Owner::Register(i));
        if sent.is_none() {
            self.register_outcome(i, Outcome::NoAnswer);
        }
    }

    /// Registration `i`'s REGISTER got its final answer (`None`: none came).
    pub(super) fn on_register_result(&mut self, i: usize, resp: Option<&Response>) {
        let outcome = match resp {
            None => Outcome::NoAnswer,
            Some(r) => {
                let contact = self
                    .registrations
                    .list
                    .get(i)
                    .map(|e| format!("sip:{}@{}", e.user, self.our_host()))
                    .unwrap_or_default();
                registration_answer(r, &contact)
            }
        };
        self.register_outcome(i, outcome);
    }

    fn register_outcome(&mut self, i: usize, outcome: Outcome) {
        let Some(e) = self.registrations.list.get_mut(i) else {
            return;
        };
        if let Some(send) = e.machine.on_outcome(self.now, outcome) {
            self.send_register(i, send);
        }
        self.registration_changed(i);
    }

    /// Remove every binding (shutdown): REGISTER with `Expires: 0`.
    pub(super) fn unregister_all(&mut self) {
        for i in 0..self.registrations.len() {
            if let Some(send) = self.registrations.list[i].machine.unregister() {
                self.send_register(i, send);
            }
            self.registration_changed(i);
        }
    }
}

/// What a final answer to REGISTER says: status, challenges, the lifetime granted to
/// our Contact (its `expires` parameter, else `Expires`), `Min-Expires`.
fn registration_answer(r: &Response, our_contact: &str) -> Outcome {
    let values = |name: &'static str| {
        r.headers
            .iter()
            .filter(move |h| h.name().canonical().eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| String::from_utf8_lossy(h.raw_value()).into_owned())
    };
    let seconds = |v: &str| v.trim().parse::<u64>().ok().map(Duration::from_secs);
    let challenges: Vec<Challenge> = values("WWW-Authenticate")
        .filter_map(|v| Challenge::parse(v.as_bytes(), false))
        .chain(values("Proxy-Authenticate").filter_map(|v| Challenge::parse(v.as_bytes(), true)))
        .collect();
    let contact_expires = values("Contact")
        .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|c| c.contains(our_contact))
        .find_map(|c| {
            c.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("expires")
                    .then(|| seconds(v))?
            })
        });
    let granted = contact_expires.or_else(|| values("Expires").find_map(|v| seconds(&v)));
    Outcome::Answered {
        status: r.status.code(),
        challenges,
        granted,
        min_expires: values("Min-Expires").find_map(|v| seconds(&v)),
    }
}
