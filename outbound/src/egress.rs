//! Where webhooks may go. By default nowhere an operator did not mean to expose:
//! loopback, private, link-local (cloud metadata), shared (CGNAT), multicast,
//! broadcast, documentation and unspecified addresses are refused, at creation (a
//! clear 400) and again at delivery, after DNS resolution: the HTTP client resolves
//! through [`PolicyResolver`], so it connects only to an address that was checked.
//! `webhook_allow` (CIDRs and host names) opens exceptions for on-premises receivers.
//! URLs with user info are refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// An exception to the default refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allow {
    Net(IpAddr, u8),
    Host(String),
}

/// The egress policy of webhooks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<Allow>,
}

impl EgressPolicy {
    /// A policy from `webhook_allow`: comma-separated CIDRs (`10.1.0.0/16`), addresses
    /// and host names.
    pub fn parse(text: &str) -> Result<EgressPolicy, String> {
        let mut allow = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            match addr.parse::<IpAddr>() {
                Ok(ip) => {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let bits = match prefix {
                        None => max,
                        Some(p) => p
                            .parse::<u8>()
                            .ok()
                            .filter(|b| *b <= max)
                            .ok_or_else(|| format!("`{item}`: bad prefix length"))?,
                    };
                    allow.push(Allow::Net(ip, bits));
                }
                Err(_) if prefix.is_none() && is_host_name(addr) => {
                    allow.push(Allow::Host(addr.to_ascii_lowercase()))
                }
                Err(_) => return Err(format!("`{item}` is neither a CIDR nor a host name")),
            }
        }
        Ok(EgressPolicy { allow })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow
            .iter()
            .any(|a| matches!(a, Allow::Host(h) if *h == host))
    }

    /// Whether a connection to `ip` is allowed.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let listed = self.allow.iter().any(|a| match a {
            Allow::Net(net, bits) => in_net(ip, canonical(*net), *bits),
            Allow::Host(_) => false,
        });
        listed || is_public(ip)
    }

    /// Check a `callbackUrl` as written: scheme, no user info, and an IP literal host
    /// (after the URL parser's normalisation: `0x7f000001` is 127.0.0.1) must be allowed.
    /// Host names are checked where they are resolved.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, String> {
        self.check_url_as(url, "callbackUrl", &["http", "https"])
    }

    /// `url` (named `what` in errors) with one of `schemes`, no user info, and a literal
    /// address only where the policy allows it (names are checked when resolved).
    pub fn check_url_as(
        &self,
        url: &str,
        what: &str,
        schemes: &[&str],
    ) -> Result<reqwest::Url, String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("{what} is not a URL: {e}"))?;
        if !schemes.contains(&u.scheme()) {
            return Err(format!(
                "{what} must be a {} URL, not `{}:`",
                schemes.join(" or "),
                u.scheme()
            ));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!("{what} must not carry user info (user:password@)"));
        }
        let Some(host) = u.host_str() else {
            return Err(format!("{what} has no host"));
        };
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.check_ip(ip, what)?;
        }
        Ok(u)
    }

    fn check_ip(&self, ip: IpAddr, what: &str) -> Result<(), String> {
        if self.ip_allowed(ip) {
            Ok(())
        } else {
            Err(format!(
                "{what} points at {ip}, a loopback, private, link-local or otherwise non-public address; allow it with webhook_allow"
            ))
        }
    }

    /// Resolve `host` (a name) and check every address: the allowed ones, or an error
    /// naming why none is. A host listed in `webhook_allow` may resolve anywhere.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| format!("cannot resolve {host}"))?
            .collect();
        if self.host_allowed(host) {
            return Ok(addrs);
        }
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.ip_allowed(a.ip()))
            .collect();
        if allowed.is_empty() {
            // The rule, not the addresses: what internal names resolve to is not told.
            tracing::info!(%host, addrs = ?addrs, "webhook destination refused by the egress policy");
            return Err(format!(
                "{host} resolves only to addresses webhooks may not reach (loopback, private, link-local or otherwise non-public addresses); allow it with webhook_allow"
            ));
        }
        Ok(allowed)
    }
}

/// The HTTP client's resolver: it hands out only addresses the policy allows, so the
/// connection goes to a checked address (no time-of-check to time-of-use gap).
pub struct PolicyResolver(pub Arc<EgressPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = policy.resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A globally routable unicast address.
fn is_public(ip: IpAddr) -> bool {
    let refused_v4: [(&str, u8); 14] = [
        ("0.0.0.0", 8),       // "this network", unspecified
        ("10.0.0.0", 8),      // private
        ("100.64.0.0", 10),   // shared (CGNAT)
        ("127.0.0.0", 8),     // loopback
        ("169.254.0.0", 16),  // link-local, cloud metadata
        ("172.16.0.0", 12),   // private
        ("192.0.0.0", 24),    // IETF protocol assignments
        ("192.0.2.0", 24),    // documentation
        ("192.168.0.0", 16),  // private
        ("198.18.0.0", 15),   // benchmarking
        ("198.51.100.0", 24), // documentation
        ("203.0.113.0", 24),  // documentation
        ("224.0.0.0", 4),     // multicast
        ("240.0.0.0", 4),     // reserved, broadcast
    ];
    let refused_v6: [(&str, u8); 11] = [
        ("::", 96),           // unspecified, loopback, IPv4-compatible (::a.b.c.d)
        ("::ffff:0:0:0", 96), // IPv4-translated (SIIT, RFC 6145)
        ("64:ff9b::", 96),    // NAT64 well-known prefix (RFC 6052): reaches any IPv4
        ("64:ff9b:1::", 48),  // NAT64 local-use prefixes (RFC 8215)
        ("100::", 64),        // discard-only
        ("2001::", 32),       // Teredo (an IPv4 address inside)
        ("2002::", 16),       // 6to4 (an IPv4 address inside)
        ("fc00::", 7),        // unique local
        ("fe80::", 10),       // link-local
        ("ff00::", 8),        // multicast
        ("2001:db8::", 32),   // documentation
    ];
    let hit = |list: &[(&str, u8)]| {
        list.iter()
            .any(|(net, bits)| net.parse::<IpAddr>().is_ok_and(|n| in_net(ip, n, *bits)))
    };
    match ip {
        IpAddr::V4(_) => !hit(&refused_v4),
        IpAddr::V6(_) => !hit(&refused_v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_destinations_are_refused_by_default() {
        let p = EgressPolicy::default();
        for url in [
            "http://127.0.0.1:8080/cb",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:22/",
            "http://0x7f000001/",
            "http://10.1.2.3/",
            "http://192.168.1.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            // IPv6 forms with an IPv4 address inside (NAT64, SIIT, 6to4, Teredo,
            // IPv4-compatible): each may reach 127.0.0.1 or 169.254.169.254.
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[::ffff:0:7f00:1]/",
            "http://[2002:7f00:1::1]/",
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
            "http://[::7f00:1]/",
        ] {
            assert!(p.check_url(url).is_err(), "{url} allowed");
        }
        let e = p.check_url("http://user:pw@example.com/").unwrap_err();
        assert!(e.contains("user info"), "{e}");
        assert!(p.check_url("ftp://example.com/").is_err());
        assert!(p.check_url("https://203.0.114.7/hook").is_ok());
        assert!(
            p.check_url("https://example.com/hook").is_ok(),
            "names are checked when resolved"
        );
    }

    #[test]
    fn webhook_allow_opens_exceptions() {
        let p = EgressPolicy::parse("127.0.0.1/32, 10.0.0.0/8,hooks.internal").unwrap();
        assert!(p.check_url("http://127.0.0.1:9000/cb").is_ok());
        assert!(p.check_url("http://127.0.0.2:9000/cb").is_err());
        assert!(p.check_url("http://10.200.0.1/").is_ok());
        assert!(p.host_allowed("Hooks.Internal."));
        assert!(EgressPolicy::parse("10.0.0.0/33").is_err());
        assert!(EgressPolicy::parse("not a host!").is_err());
        assert_eq!(EgressPolicy::parse("").unwrap(), EgressPolicy::default());
    }

    #[tokio::test]
    async fn names_that_resolve_to_refused_addresses_are_refused() {
        let p = EgressPolicy::default();
        let e = p.resolve("localhost", 80).await.unwrap_err();
        assert!(
            e.contains("non-public addresses") && e.contains("webhook_allow"),
            "{e}"
        );
        assert!(
            !e.contains("127.0.0.1") && !e.contains("::1"),
            "the 400 tells where a name resolves: {e}"
        );
        let p = EgressPolicy::parse("localhost").unwrap();
        assert!(!p.resolve("localhost", 80).await.unwrap().is_empty());
    }
}
