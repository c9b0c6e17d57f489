//! Where the gateway listens and what it tells peers: the SIP and media addresses, the
//! public address behind 1:1 NAT, the WebRTC socket, and HTTPS on the HTTP listener.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::{key_err, ConfigError, Layer};

/// The addresses the gateway binds and the ones it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    pub sip_listen: SocketAddr,
    /// Bound for RTP (may be a wildcard when `public_ip` is set).
    pub media_ip: IpAddr,
    /// Advertised in SDP `c=`, Contact and Via, and as the browsers' ICE candidate,
    /// instead of the bound addresses (a cloud VM's public address behind 1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// The one UDP socket of all WebRTC media (may be a wildcard with `public_ip`).
    pub webrtc_listen: SocketAddr,
}

impl Addresses {
    /// The IP peers reach us at (SIP, RTP, WebRTC).
    pub fn advertised_ip(&self) -> IpAddr {
        self.public_ip.unwrap_or(self.media_ip)
    }

    /// Our SIP URI as peers dial it (`sip:IP:PORT`, IPv6 in brackets).
    pub fn sip_uri(&self) -> String {
        match self.advertised_ip() {
            IpAddr::V6(v6) => format!("sip:[{v6}]:{}", self.sip_listen.port()),
            ip => format!("sip:{ip}:{}", self.sip_listen.port()),
        }
    }

    /// The browsers' ICE candidate.
    pub fn webrtc_advertised(&self) -> SocketAddr {
        SocketAddr::new(
            self.public_ip.unwrap_or(self.webrtc_listen.ip()),
            self.webrtc_listen.port(),
        )
    }
}

/// HTTPS on the HTTP listener: PEM certificate chain and key, read again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn socket(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| key_err(key, format!("`{text}` is not an IP:port socket address")))
}

pub(crate) fn validate(layer: &Layer) -> Result<(Addresses, Option<HttpTls>), ConfigError> {
    let public_ip = match layer.public_ip.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(t) => {
            let ip = t
                .parse::<IpAddr>()
                .map_err(|_| key_err("public_ip", format!("`{t}` is not an IP address")))?;
            if ip.is_unspecified() {
                return Err(key_err(
                    "public_ip",
                    "must be a concrete address, not a wildcard",
                ));
            }
            Some(ip)
        }
    };
    let advertised = public_ip.is_some();
    let sip_listen = socket(
        "sip_listen",
        layer.sip_listen.as_deref().unwrap_or("127.0.0.1:5060"),
    )?;
    let media_ip = match layer.media_ip.as_deref() {
        Some(t) => t
            .parse::<IpAddr>()
            .map_err(|_| key_err("media_ip", format!("`{t}` is not an IP address")))?,
        None if sip_listen.ip().is_unspecified() && !advertised => {
            return Err(key_err(
                "media_ip",
                "must be set when sip_listen is a wildcard address (it is advertised in Contact and SDP; or set public_ip)",
            ))
        }
        None => sip_listen.ip(),
    };
    if media_ip.is_unspecified() && !advertised {
        return Err(key_err(
            "media_ip",
            "must be a concrete address, not a wildcard (or set public_ip, which is advertised instead)",
        ));
    }
    let webrtc_listen = socket(
        "webrtc_listen",
        layer.webrtc_listen.as_deref().unwrap_or("127.0.0.1:30000"),
    )?;
    if webrtc_listen.ip().is_unspecified() && !advertised {
        return Err(key_err(
            "webrtc_listen",
            "must be a concrete address: it is the ICE candidate browsers send to (or set public_ip, which is advertised instead)",
        ));
    }
    let file = |key: &str, v: &Option<String>| -> Result<Option<PathBuf>, ConfigError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(p) if std::path::Path::new(p).is_file() => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(key_err(key, format!("`{p}` is not a readable file"))),
        }
    };
    let http_tls = match (
        file("http_tls_cert", &layer.http_tls_cert)?,
        file("http_tls_key", &layer.http_tls_key)?,
    ) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(HttpTls { cert, key }),
        (Some(_), None) => return Err(key_err("http_tls_cert", "set without http_tls_key")),
        (None, Some(_)) => return Err(key_err("http_tls_key", "set without http_tls_cert")),
    };
    Ok((
        Addresses {
            sip_listen,
            media_ip,
            public_ip,
            webrtc_listen,
        },
        http_tls,
    ))
}
