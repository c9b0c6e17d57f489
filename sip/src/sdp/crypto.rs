//! SDES (RFC 4568): `a=crypto` lines offered and answered, and the SRTP policy.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::srtp::{MasterKey, Suite};

/// Whether SIP legs use SRTP (`sip_srtp`, defined with the configuration). Offers we
/// receive with usable `a=crypto` are always honoured; this decides what we offer and
/// whether plain RTP is refused.
pub use patchbay_config::SrtpMode;

/// One side's SRTP parameters: the `a=crypto` tag, suite and master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: Suite,
    pub key: MasterKey,
}

impl Crypto {
    /// Fresh keys of ours answering (or offering) `tag` with `suite`.
    pub fn ours(tag: u32, suite: Suite) -> Crypto {
        Crypto {
            tag,
            suite,
            key: MasterKey::random(suite),
        }
    }

    /// Our offer's crypto lines: one per suite, each with its own key.
    pub fn offer_set() -> Vec<Crypto> {
        Suite::ALL
            .iter()
            .zip(1..)
            .map(|(s, tag)| Crypto::ours(tag, *s))
            .collect()
    }

    /// The `a=crypto:` line.
    pub fn line(&self) -> String {
        format!(
            "a=crypto:{} {} inline:{}\r\n",
            self.tag,
            self.suite.name(),
            STANDARD.encode(self.key.as_bytes())
        )
    }
}

/// Parse an `a=crypto` value: `tag suite inline:KEY[|lifetime][|MKI:len] [params]`.
/// `None` for what we cannot use: unknown suites, MKIs, other key methods, session
/// parameters (RFC 4568 §6.3: an unknown one makes the line unusable), bad keys.
pub fn parse(value: &str) -> Option<Crypto> {
    let mut f = value.split_whitespace();
    let tag = f
        .next()?
        .parse::<u32>()
        .ok()
        .filter(|t| *t < 1_000_000_000)?;
    let suite = Suite::from_name(f.next()?)?;
    let key_params = f.next()?;
    if f.next().is_some() || key_params.contains(';') {
        return None; // session parameters, or several keys
    }
    let inline = key_params.strip_prefix("inline:")?;
    let mut parts = inline.split('|');
    let key = STANDARD.decode(parts.next()?).ok()?;
    for p in parts {
        if p.contains(':') {
            return None; // an MKI
        }
    }
    if key.len() != suite.master_len() {
        return None;
    }
    Some(Crypto {
        tag,
        suite,
        key: MasterKey::from_bytes(&key)?,
    })
}

/// The first usable line of an offer's (or answer's) `a=crypto` values.
pub fn choose<'a>(values: impl IntoIterator<Item = &'a String>) -> Option<Crypto> {
    values.into_iter().find_map(|v| parse(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4568_lines() {
        let c = parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
        )
        .is_none();
        assert!(c, "an MKI is refused");
        let c =
            parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20")
                .unwrap();
        assert_eq!((c.tag, c.suite), (1, Suite::AesCm128HmacSha1_80));
        assert_eq!(c.key.as_bytes().len(), 30);
        assert!(
            parse("2 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm")
                .is_none()
        );
        assert!(parse("1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=").is_none());
        assert!(parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP").is_none());
        assert!(
            parse("x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
                .is_none()
        );
        // Ours parse back.
        for c in Crypto::offer_set() {
            let line = c.line();
            let value = line.trim_end().strip_prefix("a=crypto:").unwrap();
            assert_eq!(parse(value), Some(c));
        }
    }
}
