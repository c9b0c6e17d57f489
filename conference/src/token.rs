//! Participant tokens: compact HS256 JWTs.
//!
//! Claims: `a` account id, `p` participant id (its 16 bytes in unpadded
//! base64url, to keep the token short), `v` device API version (`"V3"`, the
//! only claim the Bandwidth browser SDK reads), `exp`, `iss`. The header is
//! `{"alg":"HS256"}` alone. A token stays under 180 characters for account ids
//! of up to [`patchbay_config`'s limit] so it fits a 256-character
//! `User-to-User` value beside a Voice call id.
//!
//! Signature and expiry are checked here; whether the participant still exists
//! (deleting it revokes the token) is checked by [`crate::Conference::verify_token`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{DeviceApiVersion, UnixMillis};

const ISSUER: &str = "pb";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    a: String,
    p: String,
    v: String,
    exp: i64,
    iss: String,
}

/// A short, stable reason for a refused token (never the library's own text, which
/// can be long and carries internal detail).
fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => "bad signature",
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
            "algorithm not allowed (HS256 only)"
        }
        K::InvalidIssuer => "wrong issuer",
        K::ExpiredSignature => "expired",
        K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) => "missing or malformed claims",
        _ => "malformed token",
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub account_id: String,
    pub participant_id: Uuid,
    pub device_api_version: DeviceApiVersion,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
}

/// Mints and checks tokens with one secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl: std::time::Duration) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        }
    }

    /// A token for `participant_id` of `account_id`, issued at `now`.
    pub fn mint(
        &self,
        account_id: &str,
        participant_id: Uuid,
        version: DeviceApiVersion,
        now: UnixMillis,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            a: account_id.to_string(),
            p: URL_SAFE_NO_PAD.encode(participant_id.as_bytes()),
            v: version.as_str().to_string(),
            exp: now / 1000 + self.ttl_secs,
            iss: ISSUER.to_string(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = None;
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Check signature, issuer and expiry (against `now`, no leeway) and decode the claims.
    pub fn verify(&self, token: &str, now: UnixMillis) -> Result<TokenClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        // Expiry is checked below against the caller's clock.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| TokenError::Invalid(reason(&e).into()))?;
        let c = data.claims;
        if c.exp <= now / 1000 {
            return Err(TokenError::Expired);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(c.p.as_bytes())
            .map_err(|_| TokenError::Invalid("bad participant claim".into()))?;
        let participant_id = Uuid::from_slice(&bytes)
            .map_err(|_| TokenError::Invalid("bad participant claim".into()))?;
        let device_api_version = DeviceApiVersion::parse(&c.v)
            .ok_or_else(|| TokenError::Invalid("bad version claim".into()))?;
        Ok(TokenClaims {
            account_id: c.a,
            participant_id,
            device_api_version,
            expires_at: c.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: UnixMillis = 1_790_000_000_000;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn round_trip() {
        let k = keys();
        let p = Uuid::new_v4();
        let t = k.mint("dev", p, DeviceApiVersion::V3, NOW).unwrap();
        let c = k.verify(&t, NOW + 1000).unwrap();
        assert_eq!(c.account_id, "dev");
        assert_eq!(c.participant_id, p);
        assert_eq!(c.device_api_version, DeviceApiVersion::V3);
    }

    #[test]
    fn short_enough_for_uui_with_longest_account_id() {
        let t = keys()
            .mint("abcdefghij", Uuid::new_v4(), DeviceApiVersion::V3, NOW)
            .unwrap();
        assert!(t.len() < 180, "{} chars: {t}", t.len());
    }

    #[test]
    fn sdk_reads_v_claim() {
        // The browser SDK decodes the payload without verifying and reads `v`.
        let t = keys()
            .mint("dev", Uuid::new_v4(), DeviceApiVersion::V3, NOW)
            .unwrap();
        let payload = t.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(json["v"], "V3");
        assert_eq!(json["a"], "dev");
    }

    #[test]
    fn expired_and_tampered_tokens_fail() {
        let k = keys();
        let t = k
            .mint("dev", Uuid::new_v4(), DeviceApiVersion::V3, NOW)
            .unwrap();
        assert_eq!(k.verify(&t, NOW + 3_600_000), Err(TokenError::Expired));
        let other = TokenKeys::new(
            b"another-secret-another-secret!!",
            Duration::from_secs(3600),
        );
        assert!(matches!(other.verify(&t, NOW), Err(TokenError::Invalid(_))));
        assert!(matches!(
            k.verify("garbage", NOW),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(k.verify("", NOW), Err(TokenError::Invalid(_))));
        let mut bad = t.clone();
        bad.insert(40, 'x');
        assert!(matches!(k.verify(&bad, NOW), Err(TokenError::Invalid(_))));
    }
}
