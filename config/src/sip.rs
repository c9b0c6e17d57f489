//! The SIP edge's keys: the trunk and its transport, the outbound proxy, TLS, SRTP
//! and trunk pings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{key_err, parse_duration, ConfigError, Layer};

/// A SIP transport named by a URI's `transport=` parameter (or `sips:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    Udp,
    Tcp,
    Tls,
}

/// A next hop for outbound SIP: a trunk or an outbound proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipHop {
    /// Host (name or IP) as written, for Request-URIs, Route headers and TLS names.
    pub host: String,
    /// Its port as written (or the transport's default).
    pub port: u16,
    /// Where to send (resolved once at startup).
    pub addr: SocketAddr,
    pub transport: SipTransport,
}

impl SipHop {
    /// `host[:port]` for a URI naming this hop: IPv6 in brackets, the port left out when
    /// it is the transport's default.
    pub fn host_port(&self) -> String {
        let default = if self.transport == SipTransport::Tls {
            5061
        } else {
            5060
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `;transport=…` for a URI naming this hop (none for UDP, the default).
    pub fn transport_param(&self) -> &'static str {
        match self.transport {
            SipTransport::Udp => "",
            SipTransport::Tcp => ";transport=tcp",
            SipTransport::Tls => ";transport=tls",
        }
    }
}

/// The SIP trunk dialogs are placed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTrunk {
    pub hop: SipHop,
    /// Digest credentials answering 401/407 challenges.
    pub user: Option<String>,
    pub password: Option<String>,
}

/// The SIP TLS listener and its certificate (PEM files, read again on SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTls {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// SRTP (SDES) on the calls we place; offers we receive are honoured whatever it says,
/// but `Require` refuses plain RTP offers with 488.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpMode {
    /// Plain RTP in our offers.
    #[default]
    Off,
    /// Our offers carry `a=crypto` on RTP/AVP (best effort): SRTP if the peer takes it.
    Offer,
    /// SRTP only: our offers use RTP/SAVP, a plain RTP offer or answer is refused (488).
    Require,
}

/// Everything about the SIP edge beyond the UDP/TCP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipEdge {
    pub trunk: Option<SipTrunk>,
    pub outbound_proxy: Option<SipHop>,
    pub tls: Option<SipTls>,
    /// CA certificates (PEM) trusted for TLS trunks and proxies; none: the Web PKI roots.
    pub tls_ca: Option<PathBuf>,
    pub srtp: SrtpMode,
    /// OPTIONS to the trunk this often (zero: never).
    pub trunk_ping_interval: Duration,
    /// Accounts Patchbay registers with a PBX or carrier as an extension.
    pub registrations: Vec<SipRegistration>,
    /// Calls without a token are offered to this URL, which names their participant.
    pub inbound_url: Option<String>,
    /// Calls without a token to one of these numbers are this participant's (before
    /// `inbound_url` is asked).
    pub inbound_numbers: std::collections::BTreeMap<String, uuid::Uuid>,
    /// What held calls hear (a WAV file).
    pub music_on_hold: Option<PathBuf>,
    /// The targets a phone's REFER may name (prefixes of the user part; `*`: any);
    /// empty: REFERs are refused.
    pub transfer_targets: Vec<String>,
}

/// `[[sip_registrations]]` as written in the TOML file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistrationToml {
    registrar: String,
    aor: String,
    user: Option<String>,
    password: Option<String>,
    expires: Option<String>,
}

/// One account Patchbay keeps registered (RFC 3261 §10): REGISTER for `aor` at
/// `registrar`, answering digest challenges with `user`/`password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipRegistration {
    /// Where REGISTER goes (its Request-URI is `sip:` + the registrar's host and port).
    pub registrar: SipHop,
    /// The address of record (`sip:1000@pbx.example`), To and From of the REGISTER.
    pub aor: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// The registration's lifetime asked for (the registrar may shorten it).
    pub expires: Duration,
}

/// Registrations at most (each is a client transaction and a timer).
pub const MAX_REGISTRATIONS: usize = 64;

/// `sip_transfer_targets`: comma-separated prefixes (or `*`), each up to 64 characters
/// of a user part.
fn transfer_targets(text: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let key = "sip_transfer_targets";
    let list: Vec<String> = text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if list.len() > 256 {
        return Err(key_err(key, "at most 256 prefixes"));
    }
    for p in &list {
        let ok = p.len() <= 64
            && p.chars()
                .all(|c| !c.is_control() && !c.is_whitespace() && !"<>\"@;:".contains(c));
        if !ok {
            return Err(key_err(
                key,
                format!("`{p:.80}` is not a prefix of a user part (or `*`)"),
            ));
        }
    }
    Ok(list)
}

/// Numbers in `[sip_inbound_numbers]` at most.
pub const MAX_INBOUND_NUMBERS: usize = 10_000;

/// `[sip_inbound_numbers]`: the number called (the Request-URI's user part, else the
/// To's) → the participant id its calls join as.
fn inbound_numbers(
    layer: &Layer,
) -> Result<std::collections::BTreeMap<String, uuid::Uuid>, ConfigError> {
    let key = "sip_inbound_numbers";
    let map = layer.sip_inbound_numbers.clone().unwrap_or_default();
    if map.len() > MAX_INBOUND_NUMBERS {
        return Err(key_err(
            key,
            format!("at most {MAX_INBOUND_NUMBERS} numbers"),
        ));
    }
    map.into_iter()
        .map(|(number, participant)| {
            let printable = |c: char| !c.is_control() && !c.is_whitespace() && !"<>\"@;:,".contains(c);
            if number.is_empty() || number.len() > 64 || !number.chars().all(printable) {
                return Err(key_err(
                    key,
                    format!("`{number:.80}` is not a number or user part (1 to 64 characters, no spaces or @;:,<>\")"),
                ));
            }
            let id = uuid::Uuid::parse_str(participant.trim()).map_err(|_| {
                key_err(key, format!("{number}: `{participant:.80}` is not a participant id (a UUID)"))
            })?;
            Ok((number, id))
        })
        .collect()
}

fn registrations(layer: &Layer) -> Result<Vec<SipRegistration>, ConfigError> {
    let key = "sip_registrations";
    let list = layer.sip_registrations.clone().unwrap_or_default();
    if list.len() > MAX_REGISTRATIONS {
        return Err(key_err(key, format!("at most {MAX_REGISTRATIONS}")));
    }
    let mut out = Vec::with_capacity(list.len());
    for r in list {
        let registrar = parse_hop(key, &r.registrar)?;
        let aor = r.aor.trim().to_string();
        let well_formed = aor
            .strip_prefix("sip:")
            .or_else(|| aor.strip_prefix("sips:"))
            .and_then(|rest| rest.split_once('@'))
            .is_some_and(|(user, host)| {
                !user.is_empty()
                    && !host.is_empty()
                    && !aor.contains(|c: char| c.is_whitespace() || "<>\"".contains(c))
            });
        if !well_formed {
            return Err(key_err(
                key,
                format!("aor `{aor:.80}` is not a SIP URI with a user part (sip:1000@pbx.example)"),
            ));
        }
        if r.user.is_some() != r.password.is_some() {
            return Err(key_err(
                key,
                format!("{aor}: user and password go together"),
            ));
        }
        let expires = parse_duration(key, r.expires.as_deref(), "3600s")?;
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&expires) {
            return Err(key_err(key, format!("{aor}: expires must be 1s to 24h")));
        }
        if out.iter().any(|o: &SipRegistration| o.aor == aor) {
            return Err(key_err(key, format!("aor `{aor}` appears twice")));
        }
        out.push(SipRegistration {
            registrar,
            aor,
            user: r.user,
            password: r.password,
            expires,
        });
    }
    Ok(out)
}

pub(crate) fn validate(layer: &Layer) -> Result<SipEdge, ConfigError> {
    let trunk = match layer.sip_trunk.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(uri) => Some(SipTrunk {
            hop: parse_hop("sip_trunk", uri)?,
            user: layer.sip_trunk_user.clone(),
            password: layer.sip_trunk_password.clone(),
        }),
    };
    if trunk.is_none() && layer.sip_trunk_user.is_some() {
        return Err(key_err("sip_trunk_user", "set without sip_trunk"));
    }
    if layer.sip_trunk_user.is_some() != layer.sip_trunk_password.is_some() {
        return Err(key_err(
            "sip_trunk_password",
            "sip_trunk_user and sip_trunk_password go together",
        ));
    }
    let outbound_proxy = match layer
        .sip_outbound_proxy
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(uri) => Some(parse_hop("sip_outbound_proxy", uri)?),
    };
    if outbound_proxy.is_some() && trunk.is_none() {
        return Err(key_err("sip_outbound_proxy", "set without sip_trunk"));
    }
    let file = |key: &str, v: &Option<String>| -> Result<Option<PathBuf>, ConfigError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(p) if std::path::Path::new(p).is_file() => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(key_err(key, format!("`{p}` is not a readable file"))),
        }
    };
    let cert = file("sip_tls_cert", &layer.sip_tls_cert)?;
    let key = file("sip_tls_key", &layer.sip_tls_key)?;
    let tls = match layer.sip_tls_listen.as_deref().filter(|s| !s.is_empty()) {
        None => {
            if cert.is_some() || key.is_some() {
                return Err(key_err("sip_tls_cert", "set without sip_tls_listen"));
            }
            None
        }
        Some(text) => {
            let listen: SocketAddr = text.parse().map_err(|_| {
                key_err(
                    "sip_tls_listen",
                    format!("`{text}` is not an IP:port socket address"),
                )
            })?;
            let (Some(cert), Some(key)) = (cert, key) else {
                return Err(key_err(
                    "sip_tls_listen",
                    "needs sip_tls_cert and sip_tls_key (PEM files)",
                ));
            };
            Some(SipTls { listen, cert, key })
        }
    };
    let srtp = match layer.sip_srtp.as_deref().unwrap_or("off") {
        "off" => SrtpMode::Off,
        "offer" => SrtpMode::Offer,
        "require" => SrtpMode::Require,
        other => {
            return Err(key_err(
                "sip_srtp",
                format!("`{other:.20}`: off, offer or require"),
            ))
        }
    };
    Ok(SipEdge {
        trunk,
        outbound_proxy,
        tls,
        tls_ca: file("sip_tls_ca", &layer.sip_tls_ca)?,
        srtp,
        trunk_ping_interval: match layer.sip_trunk_ping_interval.as_deref().map(str::trim) {
            Some("0") | Some("0s") => Duration::ZERO,
            text => parse_duration("sip_trunk_ping_interval", text, "30s")?,
        },
        registrations: registrations(layer)?,
        inbound_numbers: inbound_numbers(layer)?,
        music_on_hold: file("sip_music_on_hold", &layer.sip_music_on_hold)?,
        transfer_targets: transfer_targets(layer.sip_transfer_targets.as_deref())?,
        inbound_url: layer
            .sip_inbound_url
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|url| {
                if url.starts_with("http://") || url.starts_with("https://") {
                    Ok(url.to_string())
                } else {
                    Err(key_err(
                        "sip_inbound_url",
                        "must be an http:// or https:// URL",
                    ))
                }
            })
            .transpose()?,
    })
}

/// `sip:host[:port][;transport=udp|tcp|tls][;lr]` or `sips:host[:port]`.
pub(crate) fn parse_hop(key: &str, uri: &str) -> Result<SipHop, ConfigError> {
    let bad = |why: &str| key_err(key, format!("`{uri:.80}`: {why}"));
    let (rest, mut transport) = if let Some(r) = uri.strip_prefix("sips:") {
        (r, SipTransport::Tls)
    } else if let Some(r) = uri.strip_prefix("sip:") {
        (r, SipTransport::Udp)
    } else {
        return Err(bad("must start with sip: or sips:"));
    };
    let sips = transport == SipTransport::Tls;
    let mut parts = rest.split(';');
    let hostport = parts.next().unwrap_or_default();
    for p in parts {
        transport = match p.to_ascii_lowercase().as_str() {
            "transport=udp" | "transport=tcp" if sips => {
                return Err(bad("a sips: URI goes over TLS"))
            }
            "transport=udp" => SipTransport::Udp,
            "transport=tcp" => SipTransport::Tcp,
            "transport=tls" => SipTransport::Tls,
            "lr" => transport,
            other => return Err(bad(&format!("unsupported parameter `{other:.30}`"))),
        };
    }
    if hostport.contains('@') {
        return Err(bad("name the host, without a user part"));
    }
    let default_port = if transport == SipTransport::Tls {
        5061
    } else {
        5060
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
            h.trim_matches(|c| c == '[' || c == ']').to_string(),
            p.parse::<u16>().map_err(|_| bad("bad port"))?,
        ),
        _ => (
            hostport.trim_matches(|c| c == '[' || c == ']').to_string(),
            default_port,
        ),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    use std::net::ToSocketAddrs;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| bad("resolves to no address"))?;
    Ok(SipHop {
        host,
        port,
        addr,
        transport,
    })
}
