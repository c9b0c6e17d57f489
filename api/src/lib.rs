//! Patchbay's HTTP surface: the Bandwidth-compatible REST control API, health,
//! readiness, metrics and the OpenAPI document. Thin: it validates, calls
//! `conference`, maps errors.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use patchbay_conference::Conference;
use utoipa::OpenApi;
use uuid::Uuid;

pub mod auth;
pub mod calls;
pub mod cluster;
pub mod console;
pub mod dialogs;
pub mod dto;
pub mod error;
mod forward;
#[cfg(test)]
mod fuzz_tests;
pub mod handover;
pub mod metrics;
mod openapi;
pub mod recording_callbacks;
pub mod recordings;
pub mod routes;
pub mod server;
pub mod signaling;
pub mod streams;
mod write_timeout;

// Outbound I/O lives in its own crate; its modules keep their paths here.
pub use patchbay_outbound::{egress, hops, webhooks};

pub use auth::Accounts;
use error::{ApiError, PendingError};
pub use metrics::Metrics;
pub use openapi::ApiDoc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub conference: Arc<Conference>,
    pub accounts: Arc<Accounts>,
    pub metrics: Arc<Metrics>,
    /// The webhook outbox.
    pub webhooks: webhooks::Webhooks,
    /// The listener's limits (the body timeout is applied per request here).
    pub limits: server::HttpLimits,
    pub http_metrics: server::HttpServerMetrics,
    /// The cluster view (`GET /v1/cluster`).
    pub cluster: cluster::ClusterApi,
    /// The web console's files and event streams.
    pub console: Arc<console::Console>,
    /// How often each participant's devices may connect.
    pub churn: Arc<signaling::churn::Churn>,
    /// Each device's open signaling socket, for a newer one to take over.
    pub handovers: handover::Handovers,
}

/// The request's id: in its log line, its error body and the `x-request-id` header.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub Uuid);

/// The route template a response was produced by, for metrics and logs.
#[derive(Debug, Clone)]
struct RouteTemplate(String);

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    use routes::*;
    let acct = "/v1/accounts/{accountId}";
    Router::new()
        .route(
            &format!("{acct}/participants"),
            axum::routing::post(create_participant),
        )
        .route(
            &format!("{acct}/participants/{{participantId}}"),
            get(get_participant).delete(delete_participant),
        )
        .route(
            &format!("{acct}/sessions"),
            axum::routing::post(create_session).get(console::list_sessions),
        )
        .route(
            &format!("{acct}/sessions/{{sessionId}}/media"),
            get(console::session_media),
        )
        .route(
            &format!("{acct}/sessions/{{sessionId}}/webhooks"),
            get(console::webhook_log),
        )
        .route(&format!("{acct}/events"), get(console::events::events))
        .route(&format!("{acct}/ops"), get(console::ops))
        .route(
            &format!("{acct}/sessions/{{sessionId}}"),
            get(get_session).delete(delete_session),
        )
        .route(
            &format!("{acct}/sessions/{{sessionId}}/participants"),
            get(list_session_participants),
        )
        .route(
            &format!("{acct}/sessions/{{sessionId}}/participants/{{participantId}}"),
            axum::routing::put(add_participant_to_session).delete(remove_participant_from_session),
        )
        .route(
            &format!("{acct}/sessions/{{sessionId}}/participants/{{participantId}}/subscriptions"),
            get(get_subscriptions).put(update_subscriptions),
        )
        .route(
            &format!("{acct}/participants/{{participantId}}/hold"),
            axum::routing::post(calls::hold),
        )
        .route(
            &format!("{acct}/participants/{{participantId}}/resume"),
            axum::routing::post(calls::resume),
        )
        .route(
            &format!("{acct}/participants/{{participantId}}/transfer"),
            axum::routing::post(calls::transfer),
        )
        .route(
            &format!("{acct}/participants/{{participantId}}/dialogs"),
            axum::routing::post(dialogs::create_dialog).get(console::list_dialogs),
        )
        .route(
            &format!("{acct}/participants/{{participantId}}/dialogs/{{dialogId}}"),
            get(dialogs::get_dialog)
                .patch(dialogs::update_dialog)
                .delete(dialogs::delete_dialog),
        )
        .route(
            &format!("{acct}/sessions/{{sessionId}}/participants/{{participantId}}/dialogs"),
            axum::routing::post(dialogs::create_dialog),
        )
        .route(
            &format!(
                "{acct}/sessions/{{sessionId}}/participants/{{participantId}}/dialogs/{{dialogId}}"
            ),
            get(dialogs::get_dialog)
                .patch(dialogs::update_dialog)
                .delete(dialogs::delete_dialog),
        )
        .route(
            &format!("{acct}/sessions/{{sessionId}}/recordings"),
            axum::routing::post(recordings::create_recording).get(recordings::list_recordings),
        )
        .route(
            &format!("{acct}/sessions/{{sessionId}}/recordings/{{recordingId}}"),
            get(recordings::get_recording).delete(recordings::stop_recording),
        )
        .route(
            &format!("{acct}/sessions/{{sessionId}}/recordings/{{recordingId}}/files/{{fileId}}"),
            get(recordings::get_recording_file),
        )
        .route("/v3", get(signaling::v3))
        .route("/v3/", get(signaling::v3))
        .route("/v2", get(signaling::v2))
        .route("/v2/", get(signaling::v2))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/cluster/proof", get(cluster::proof))
        .route("/", get(console::files::root))
        .route("/console", get(console::files::root))
        .route("/console/", get(console::files::index))
        .route("/console/{*path}", get(console::files::file))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::catch_up,
        ))
        .route_layer(axum::middleware::from_fn(remember_route))
        // Control-API bodies are small; anything larger is refused (413, JSON body).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            track_request,
        ))
        .with_state(state)
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Largest request body (a subscription naming 20 participants with 32 long aliases
/// each fits several times over).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

async fn unknown_route() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

/// Copies the matched route template into the response for [`track_request`].
async fn remember_route(req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let mut resp = next.run(req).await;
    if let Some(t) = template {
        resp.extensions_mut().insert(RouteTemplate(t));
    }
    resp
}

/// The request with its whole body read (at most [`MAX_BODY_BYTES`], within the body
/// timeout: a client trickling its body cannot hold a handler), or the refusal.
async fn read_request_body(state: &AppState, req: Request) -> Result<Request, ApiError> {
    use axum::http::Method;
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let timeout = state.limits.body_timeout;
    match server::read_body(body, MAX_BODY_BYTES, timeout).await {
        server::BodyRead::Complete(bytes) => {
            Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
        }
        server::BodyRead::TooLarge => Err(ApiError::PayloadTooLarge(format!(
            "request body too large: at most {MAX_BODY_BYTES} bytes"
        ))),
        server::BodyRead::TimedOut => {
            state.http_metrics.body_timeouts.inc();
            Err(ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            )))
        }
        server::BodyRead::Failed => Err(ApiError::BadRequest(
            "the request body could not be read".into(),
        )),
    }
}

/// Per request: an id, the error body, metrics, and one structured log line.
async fn track_request(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = Uuid::new_v4();
    req.extensions_mut().insert(RequestId(id));
    let method = req.method().clone();
    // A page's script (the console) says so, and gets no Basic challenge: the browser
    // would otherwise put up its own sign-in dialog over the page's.
    let scripted = req
        .headers()
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let mut resp = match read_request_body(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(refused) => {
            // The body was not read to its end (too large, too slow): this connection
            // ends with the response (RFC 9112 §9.6), and says so, so that no client
            // sends its next request on it.
            let mut r = refused.into_response();
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
            r
        }
    };

    let pending = resp
        .extensions_mut()
        .remove::<PendingError>()
        .or_else(|| match resp.status() {
            StatusCode::METHOD_NOT_ALLOWED => Some(PendingError {
                text: format!("method {method} is not allowed on this resource"),
                message_shape: false,
            }),
            // axum's own refusal of a body over its limit is plain text: give it our shape.
            StatusCode::PAYLOAD_TOO_LARGE => Some(PendingError {
                text: "request body too large".into(),
                message_shape: false,
            }),
            _ => None,
        });
    if let Some(err) = pending {
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        let body = if err.message_shape {
            serde_json::json!({ "message": err.text })
        } else {
            serde_json::json!({ "error": err.text, "requestId": id.to_string() })
        };
        let mut rebuilt = (status, Json(body)).into_response();
        for (k, v) in headers.iter() {
            if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
                rebuilt.headers_mut().insert(k.clone(), v.clone());
            }
        }
        if let Some(t) = resp.extensions_mut().remove::<RouteTemplate>() {
            rebuilt.extensions_mut().insert(t);
        }
        if status.is_server_error() {
            tracing::error!(request_id = %id, error = %err.text, "request failed");
        }
        resp = rebuilt;
    }
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if scripted {
        resp.headers_mut()
            .remove(axum::http::header::WWW_AUTHENTICATE);
    }

    let route = resp
        .extensions()
        .get::<RouteTemplate>()
        .map(|t| t.0.clone())
        .unwrap_or_else(|| "unmatched".to_string());
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    state
        .metrics
        .observe_request(method.as_str(), &route, status, elapsed.as_secs_f64());
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        status,
        latency_us = elapsed.as_micros() as u64,
        "request"
    );
    resp
}
