//! HTTP Basic authentication, one set of credentials per account.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::error::ApiError;
use crate::AppState;

/// The configured accounts, by API user.
pub struct Accounts {
    by_user: HashMap<String, (String, String)>,
}

impl Accounts {
    /// `(account_id, user, password)` triples.
    pub fn new(accounts: impl IntoIterator<Item = (String, String, String)>) -> Self {
        Accounts {
            by_user: accounts
                .into_iter()
                .map(|(id, user, password)| (user, (password, id)))
                .collect(),
        }
    }

    /// The account the `Authorization` header's credentials belong to.
    pub(crate) fn authenticate(&self, header: Option<&str>) -> Result<&str, ApiError> {
        let unauthorized = || ApiError::Unauthorized("Unauthorized".into());
        let encoded = header
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
            })
            .ok_or_else(unauthorized)?;
        let decoded = STANDARD.decode(encoded).map_err(|_| unauthorized())?;
        let text = String::from_utf8(decoded).map_err(|_| unauthorized())?;
        let (user, password) = text.split_once(':').ok_or_else(unauthorized)?;
        match self.by_user.get(user) {
            Some((expected, account))
                if constant_time_eq(expected.as_bytes(), password.as_bytes()) =>
            {
                Ok(account)
            }
            _ => Err(unauthorized()),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `{accountId}` of the path, after the credentials were checked against it:
/// none or wrong → 401, another account's → 403.
pub struct AccountId(pub String);

impl FromRequestParts<AppState> for AccountId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let account = state.accounts.authenticate(header)?.to_string();
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no such route".into()))?;
        let path_account = params
            .iter()
            .find(|(k, _)| *k == "accountId")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        if path_account != account {
            return Err(ApiError::Forbidden(format!(
                "Forbidden: these credentials do not grant access to account {path_account}"
            )));
        }
        Ok(AccountId(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn credentials() {
        let a = Accounts::new([("acme".into(), "u".into(), "p:w".into())]);
        assert_eq!(a.authenticate(Some(&basic("u", "p:w"))).unwrap(), "acme");
        assert!(a.authenticate(Some(&basic("u", "p"))).is_err());
        assert!(a.authenticate(Some(&basic("x", "p:w"))).is_err());
        assert!(a.authenticate(None).is_err());
        assert!(a.authenticate(Some("Bearer abc")).is_err());
        assert!(a.authenticate(Some("Basic !!!")).is_err());
        assert!(a.authenticate(Some("Basic")).is_err());
    }
}
