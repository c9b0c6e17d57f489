//! API errors and how they reach the wire.
//!
//! A handler's error becomes a response that carries the error text in an
//! extension; the request middleware writes the body, so that every error body
//! carries the request's `requestId`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use patchbay_conference::ConferenceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
    /// The store could not make the change durable: nothing was acknowledged.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    RequestTimeout(String),
}

/// The error text of a response whose body the middleware still has to write.
#[derive(Debug, Clone)]
pub struct PendingError {
    pub text: String,
    /// `{"message"}` (401/403) instead of `{"error","requestId"}`.
    pub message_shape: bool,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message_shape = matches!(self, ApiError::Unauthorized(_) | ApiError::Forbidden(_));
        let mut resp = status.into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"patchbay\""),
            );
        }
        resp.extensions_mut().insert(PendingError {
            text: self.to_string(),
            message_shape,
        });
        resp
    }
}

impl From<ConferenceError> for ApiError {
    fn from(e: ConferenceError) -> Self {
        match e {
            ConferenceError::NotFound(m) => ApiError::NotFound(m),
            ConferenceError::Invalid(m) => ApiError::BadRequest(m),
            ConferenceError::Conflict(m) => ApiError::Conflict(m),
            ConferenceError::Token(t) => ApiError::BadRequest(t.to_string()),
            ConferenceError::Store(s) => {
                tracing::error!(error = %s, "store failure");
                ApiError::Unavailable(
                    "the change could not be stored (the store cannot write now): nothing was changed durably, try again later"
                        .into(),
                )
            }
        }
    }
}
