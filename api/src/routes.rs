//! REST handlers: validate, call `conference`, map errors. Paths, methods and
//! status codes are Bandwidth WebRTC v1's.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use patchbay_conference::{DeviceApiVersion, NewParticipant, PublishPermission};
use serde::de::DeserializeOwned;

use crate::auth::AccountId;
use crate::dto::{
    parse_uuid, CreateParticipantRequest, CreateParticipantResponse, CreateSessionRequest,
    ErrorBody, MediaStreamBody, MessageBody, ParticipantBody, SessionBody, SubscriptionsBody,
};
use crate::error::ApiError;
use crate::AppState;

/// Parse a JSON body; an empty (or blank) body is `None`.
fn optional_json<T: DeserializeOwned>(body: &Bytes) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

fn subscriptions(body: &Bytes) -> Result<Option<patchbay_conference::Subscriptions>, ApiError> {
    optional_json::<Option<SubscriptionsBody>>(body)?
        .flatten()
        .map(SubscriptionsBody::into_domain)
        .transpose()
}

#[utoipa::path(
    post, path = "/v1/accounts/{accountId}/participants", operation_id = "createParticipant",
    tag = "Participants",
    params(("accountId" = String, Path, description = "Account id")),
    request_body(content = CreateParticipantRequest, description = "Optional; every field optional"),
    responses(
        (status = 200, description = "Participant created, with its token", body = CreateParticipantResponse),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn create_participant(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    body: Bytes,
) -> Result<Json<CreateParticipantResponse>, ApiError> {
    let req: CreateParticipantRequest = optional_json(&body)?.unwrap_or_default();
    let publish_permissions = req
        .publish_permissions
        .map(|list| {
            list.iter()
                .map(|s| {
                    PublishPermission::parse(s).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "unknown publishPermissions value `{s}`; expected AUDIO or VIDEO"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let device_api_version = req
        .device_api_version
        .map(|v| {
            DeviceApiVersion::parse(&v).ok_or_else(|| {
                ApiError::BadRequest(format!("unknown deviceApiVersion `{v}`; expected V3 or V2"))
            })
        })
        .transpose()?;
    if let Some(url) = &req.callback_url {
        check_callback_url(&app, url).await?;
    }
    let media_stream = req.media_stream.map(MediaStreamBody::parse).transpose()?;
    if let Some(m) = &media_stream {
        crate::streams::check_stream_url(&app, &m.url).await?;
    }
    let (p, token) = app
        .conference
        .create_participant(
            &account,
            NewParticipant {
                callback_url: req.callback_url,
                publish_permissions,
                tag: req.tag,
                device_api_version,
                media_stream,
            },
        )
        .await?;
    Ok(Json(CreateParticipantResponse {
        participant: (&p).into(),
        token,
    }))
}

#[utoipa::path(
    get, path = "/v1/accounts/{accountId}/participants/{participantId}", operation_id = "getParticipant",
    tag = "Participants",
    params(("accountId" = String, Path), ("participantId" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The participant", body = ParticipantBody),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn get_participant(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, participant)): Path<(String, String)>,
) -> Result<Json<ParticipantBody>, ApiError> {
    let id = parse_uuid("participantId", &participant)?;
    Ok(Json(
        (&app.conference.get_participant(&account, id)?).into(),
    ))
}

#[utoipa::path(
    delete, path = "/v1/accounts/{accountId}/participants/{participantId}", operation_id = "deleteParticipant",
    tag = "Participants",
    params(("accountId" = String, Path), ("participantId" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Deleted; its token is revoked"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn delete_participant(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, participant)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_uuid("participantId", &participant)?;
    app.conference.delete_participant(&account, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/accounts/{accountId}/sessions", operation_id = "createSession",
    tag = "Sessions",
    params(("accountId" = String, Path)),
    request_body(content = CreateSessionRequest, description = "Optional"),
    responses(
        (status = 200, description = "Session created", body = SessionBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
    ),
    security(("Basic" = []))
)]
pub async fn create_session(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    body: Bytes,
) -> Result<Json<SessionBody>, ApiError> {
    let req: CreateSessionRequest = optional_json(&body)?.unwrap_or_default();
    let s = app.conference.create_session(&account, req.tag).await?;
    Ok(Json((&s).into()))
}

#[utoipa::path(
    get, path = "/v1/accounts/{accountId}/sessions/{sessionId}", operation_id = "getSession",
    tag = "Sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The session", body = SessionBody),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Not found or expired", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn get_session(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session)): Path<(String, String)>,
) -> Result<Json<SessionBody>, ApiError> {
    let id = parse_uuid("sessionId", &session)?;
    Ok(Json((&app.conference.get_session(&account, id)?).into()))
}

#[utoipa::path(
    delete, path = "/v1/accounts/{accountId}/sessions/{sessionId}", operation_id = "deleteSession",
    tag = "Sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Deleted; every membership in it ends"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn delete_session(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_uuid("sessionId", &session)?;
    app.conference.delete_session(&account, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants", operation_id = "listSessionParticipants",
    tag = "Sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The session's participants, in joining order", body = [ParticipantBody]),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn list_session_participants(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session)): Path<(String, String)>,
) -> Result<Json<Vec<ParticipantBody>>, ApiError> {
    let id = parse_uuid("sessionId", &session)?;
    let list = app.conference.list_session_participants(&account, id)?;
    Ok(Json(list.iter().map(ParticipantBody::from).collect()))
}

#[utoipa::path(
    put, path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}",
    operation_id = "addParticipantToSession", tag = "Sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid), ("participantId" = String, Path, format = Uuid)),
    request_body(content = SubscriptionsBody, description = "Optional subscriptions; none: membership only"),
    responses(
        (status = 204, description = "Added (or subscriptions replaced if already a member)"),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Session or participant not found", body = ErrorBody),
        (status = 409, description = "Session full, or participant in another session", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn add_participant_to_session(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session, participant)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let sid = parse_uuid("sessionId", &session)?;
    let pid = parse_uuid("participantId", &participant)?;
    let subs = subscriptions(&body)?;
    app.conference
        .add_participant_to_session(&account, sid, pid, subs)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete, path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}",
    operation_id = "removeParticipantFromSession", tag = "Sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid), ("participantId" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Removed, with its subscriptions"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Not found, or not a member", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn remove_participant_from_session(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session, participant)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let sid = parse_uuid("sessionId", &session)?;
    let pid = parse_uuid("participantId", &participant)?;
    app.conference
        .remove_participant_from_session(&account, sid, pid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}/subscriptions",
    operation_id = "getParticipantSubscriptions", tag = "Subscriptions",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid), ("participantId" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The participant's subscriptions", body = SubscriptionsBody),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Not found, or not a member", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn get_subscriptions(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session, participant)): Path<(String, String, String)>,
) -> Result<Json<SubscriptionsBody>, ApiError> {
    let sid = parse_uuid("sessionId", &session)?;
    let pid = parse_uuid("participantId", &participant)?;
    let subs = app.conference.get_subscriptions(&account, sid, pid)?;
    Ok(Json((&subs).into()))
}

#[utoipa::path(
    put, path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}/subscriptions",
    operation_id = "updateParticipantSubscriptions", tag = "Subscriptions",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid), ("participantId" = String, Path, format = Uuid)),
    request_body(content = SubscriptionsBody, description = "Full replacement; none: remove all"),
    responses(
        (status = 204, description = "Replaced"),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Not found, or not a member", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn update_subscriptions(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session, participant)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let sid = parse_uuid("sessionId", &session)?;
    let pid = parse_uuid("participantId", &participant)?;
    let subs = subscriptions(&body)?;
    app.conference
        .update_subscriptions(&account, sid, pid, subs)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/health", operation_id = "health", tag = "Operations",
    responses((status = 200, description = "The process is alive", content_type = "text/plain")))]
pub async fn health() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "Operations",
    responses(
        (status = 200, description = "The store answers", content_type = "text/plain"),
        (status = 503, description = "The store does not answer, or this cluster node is stopping", content_type = "text/plain"),
    ))]
pub async fn ready(State(app): State<AppState>) -> (StatusCode, &'static str) {
    // A cluster node that is stopping takes no new work: load balancers take it out.
    if app.conference.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n");
    }
    match app.conference.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "Operations",
    responses((status = 200, description = "Prometheus text exposition. Per-stream series (`patchbay_stream_*`, labelled with session, participant and alias) only with the operator's credentials; without them, stream counts by origin and media.", content_type = "text/plain")))]
pub async fn metrics(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
) -> impl axum::response::IntoResponse {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let operator = header.is_some()
        && app
            .cluster
            .operator
            .as_ref()
            .is_some_and(|o| o.authenticate(header).is_ok());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics_text(&app, operator),
    )
}

/// Everything `/metrics` says; with `per_stream`, the per-stream series, which name
/// sessions, participants and client-chosen aliases (the operator's view only).
pub fn metrics_text(app: &AppState, per_stream: bool) -> String {
    let (sessions, participants) = app.conference.counts();
    {
        {
            let mut text = app.metrics.render(sessions, participants);
            // The media path keeps lock-free stats of its own: add them before the end marker.
            let eof = text.rfind("# EOF").unwrap_or(text.len());
            let mut media = String::new();
            app.conference.media().stats().render(&mut media);
            if let Some(t) = app.conference.media().webrtc() {
                t.render(&mut media);
            }
            app.webhooks.stats.render(&mut media);
            if let Some(w) = app.conference.media().recording_writer() {
                w.render(&mut media);
            }
            if let Some(u) = app.conference.uploader() {
                u.render(&mut media);
            }
            let views = app.conference.media().views();
            if per_stream {
                patchbay_conference::media::session::render_views(&views, &mut media);
            } else {
                patchbay_conference::media::session::render_stream_counts(&views, &mut media);
            }
            app.console.render(&mut media);
            {
                use std::fmt::Write;
                let _ = writeln!(
                    media,
                    "# HELP patchbay_parked_calls SIP calls parked in this node's lobby (their participant is in no session, or its session runs on another node).\n# TYPE patchbay_parked_calls gauge\npatchbay_parked_calls {}",
                    app.conference.media().parked_legs()
                );
            }
            if app.conference.cluster().is_some() {
                use std::fmt::Write;
                let _ = writeln!(
                    media,
                    "# HELP patchbay_cluster_owned_sessions Sessions whose media this cluster node owns.\n# TYPE patchbay_cluster_owned_sessions gauge\npatchbay_cluster_owned_sessions{{node=\"{}\"}} {}",
                    app.cluster.node_id,
                    app.conference.owned_sessions()
                );
            }
            text.insert_str(eof, &media);
            text
        }
    }
}

/// A `callbackUrl` must be an absolute http(s) URL with a host that the egress policy
/// allows (a host name must not resolve only to refused addresses).
pub(crate) async fn check_callback_url(app: &AppState, url: &str) -> Result<(), ApiError> {
    check_outbound_url(app, url, "callbackUrl", &["http", "https"]).await
}

/// A URL Patchbay will connect to (`what` names it in errors): one of `schemes`, and a
/// host the egress policy allows (a name that does not resolve now, or not within a
/// second, is checked again at each connection).
pub(crate) async fn check_outbound_url(
    app: &AppState,
    url: &str,
    what: &str,
    schemes: &[&str],
) -> Result<(), ApiError> {
    let policy = &app.webhooks.egress;
    let u = policy
        .check_url_as(url, what, schemes)
        .map_err(ApiError::BadRequest)?;
    let Some(host) = u.host_str() else {
        return Ok(());
    };
    let literal = host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok();
    if !literal {
        let port = u.port_or_known_default().unwrap_or(80);
        let lookup = policy.resolve(host, port);
        if let Ok(Err(e)) = tokio::time::timeout(std::time::Duration::from_secs(1), lookup).await {
            if e.contains("may not reach") {
                return Err(ApiError::BadRequest(format!("{what}: {e}")));
            }
        }
    }
    Ok(())
}
