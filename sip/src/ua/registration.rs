//! One outbound registration (RFC 3261 §10.2) as a sans-IO state machine: when to send
//! REGISTER and with what (CSeq, Expires, the digest answer), what an answer means,
//! refresh before expiry, back-off after failures. Time comes in; nothing here reads
//! the clock, touches a socket or builds SIP text (the user agent does, from [`Send`]).

use std::time::{Duration, Instant};

use sipx_sip::auth::{self, Challenge, Credentials};
use sipx_sip::HeaderName;

/// The first retry after a failure; each next one waits twice as long.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Retries wait at most this long.
const BACKOFF_MAX: Duration = Duration::from_secs(120);
/// A refresh goes this long before the binding expires (or at half its life, if later).
pub(super) const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Longest lifetime a registrar's `Min-Expires` may push us to.
const MAX_EXPIRES: Duration = Duration::from_secs(86_400);

/// A REGISTER to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Send {
    pub cseq: u32,
    /// The `Expires` asked for, in seconds (0: remove the binding).
    pub expires: u32,
    /// The answer to the registrar's (or a proxy's) last challenge.
    pub authorization: Option<(HeaderName, String)>,
}

/// How a REGISTER ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// A final answer: its status, its challenges (401/407), the lifetime the registrar
    /// granted our binding (2xx: the Contact's `expires`, else `Expires`) and its
    /// `Min-Expires` (423).
    Answered {
        status: u16,
        challenges: Vec<Challenge>,
        granted: Option<Duration>,
        min_expires: Option<Duration>,
    },
    /// Timer F, or the transport failed.
    NoAnswer,
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// Not registered yet (or no longer), trying.
    Trying,
    Registered {
        until: Instant,
    },
    /// The last attempt failed (why); the next one is due at `retry`.
    Failing {
        why: String,
        retry: Instant,
    },
    /// Unregistered on purpose (shutdown).
    Stopped,
}

pub(crate) struct Registration {
    /// The address of record and the Request-URI (what digest answers name).
    pub aor: String,
    pub request_uri: String,
    credentials: Option<Credentials>,
    expires: Duration,
    cseq: u32,
    /// The challenge last answered and how many times its nonce has been used.
    challenge: Option<(Challenge, u32)>,
    /// The nonce the request in flight answered (a second challenge with the same
    /// nonce, not stale, means the credentials are wrong).
    sent_nonce: Option<String>,
    /// A 423 was answered by the request in flight.
    raised_expires: bool,
    in_flight: bool,
    /// When the next REGISTER is due (none while one is in flight).
    due: Option<Instant>,
    failures: u32,
    status: Status,
    /// A new cnonce for each digest answer (the shell passes its random source).
    cnonce: fn() -> String,
}

impl Registration {
    pub fn new(
        aor: String,
        request_uri: String,
        credentials: Option<Credentials>,
        expires: Duration,
        now: Instant,
        cnonce: fn() -> String,
    ) -> Registration {
        Registration {
            aor,
            request_uri,
            credentials,
            expires,
            cseq: 0,
            challenge: None,
            sent_nonce: None,
            raised_expires: false,
            in_flight: false,
            due: Some(now),
            failures: 0,
            status: Status::Trying,
            cnonce,
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn is_registered(&self) -> bool {
        matches!(self.status, Status::Registered { .. })
    }

    /// When [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = match self.status {
            Status::Registered { until } => Some(until),
            _ => None,
        };
        match (self.due, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: the binding may have expired (a refresh that never got through),
    /// and a REGISTER may be due.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Send> {
        if let Status::Registered { until } = self.status {
            if until <= now {
                self.status = Status::Trying;
            }
        }
        match self.due {
            Some(at) if at <= now && !self.in_flight => {
                self.due = None;
                Some(self.send(self.expires))
            }
            _ => None,
        }
    }

    /// Remove the binding (Expires: 0), if there is one; nothing more is sent after it.
    pub fn unregister(&mut self) -> Option<Send> {
        let registered = self.is_registered();
        self.status = Status::Stopped;
        self.due = None;
        if !registered || self.in_flight {
            return None;
        }
        Some(self.send(Duration::ZERO))
    }

    fn send(&mut self, expires: Duration) -> Send {
        self.in_flight = true;
        self.cseq += 1;
        let authorization = match (&mut self.challenge, &self.credentials) {
            (Some((c, nc)), Some(creds)) => {
                *nc += 1;
                self.sent_nonce = Some(c.nonce.clone());
                let value = auth::respond(
                    c,
                    creds,
                    "REGISTER",
                    &self.request_uri,
                    *nc,
                    &(self.cnonce)(),
                );
                Some((c.response_header(), value))
            }
            _ => {
                self.sent_nonce = None;
                None
            }
        };
        Send {
            cseq: self.cseq,
            expires: expires.as_secs().min(u32::MAX as u64) as u32,
            authorization,
        }
    }

    /// The REGISTER in flight ended. Returns the REGISTER to send at once, if any (the
    /// answer to a challenge, or a longer lifetime after 423).
    pub fn on_outcome(&mut self, now: Instant, outcome: Outcome) -> Option<Send> {
        if !self.in_flight {
            return None;
        }
        self.in_flight = false;
        let raised = std::mem::take(&mut self.raised_expires);
        if self.status == Status::Stopped {
            return None;
        }
        let (status, challenges, granted, min_expires) = match outcome {
            Outcome::NoAnswer => return self.failed(now, "no answer from the registrar".into()),
            Outcome::Answered {
                status,
                challenges,
                granted,
                min_expires,
            } => (status, challenges, granted, min_expires),
        };
        match status {
            200..=299 => {
                // A registrar's word, bounded (a day at most: nothing it says can
                // overflow our clock arithmetic).
                let granted = granted.unwrap_or(self.expires).min(MAX_EXPIRES);
                if granted.is_zero() {
                    return self.failed(now, "the registrar kept no binding".into());
                }
                self.failures = 0;
                self.status = Status::Registered {
                    until: now + granted,
                };
                let refresh = (granted / 2).max(granted.saturating_sub(REFRESH_MARGIN));
                self.due = Some(now + refresh);
                None
            }
            401 | 407 => {
                let Some(challenge) = auth::strongest(challenges) else {
                    return self.failed(now, format!("{status} without a digest challenge"));
                };
                if self.credentials.is_none() {
                    return self.failed(now, format!("{status}: credentials needed"));
                }
                let same = self.sent_nonce.as_deref() == Some(challenge.nonce.as_str());
                if same && !challenge.stale {
                    return self.failed(now, format!("{status}: credentials refused"));
                }
                self.challenge = Some((challenge, 0));
                Some(self.send(self.expires))
            }
            423 => match min_expires {
                Some(min) if !raised && min > self.expires && min <= MAX_EXPIRES => {
                    self.expires = min;
                    let send = self.send(min);
                    self.raised_expires = true;
                    Some(send)
                }
                _ => self.failed(now, "423 without a usable Min-Expires".into()),
            },
            _ => self.failed(now, format!("answered {status}")),
        }
    }

    fn failed(&mut self, now: Instant, why: String) -> Option<Send> {
        self.failures += 1;
        // A fresh exchange next time: the challenge may be what failed.
        self.challenge = None;
        let wait = BACKOFF_FIRST
            .saturating_mul(1u32 << (self.failures - 1).min(16))
            .min(BACKOFF_MAX);
        let retry = now + wait;
        self.due = Some(retry);
        // A binding granted earlier stays until it expires (the registrar keeps it).
        if !self.is_registered() {
            self.status = Status::Failing { why, retry };
        }
        None
    }
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;
