//! A participant's SIP call from the control plane (additions to the reference):
//! `POST …/participants/{p}/hold` and `…/resume` renegotiate the call with the phone
//! (re-INVITE `sendonly`, then `sendrecv`) and answer once the phone did.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use patchbay_conference::calls::CallError;

use crate::auth::AccountId;
use crate::dto::{parse_uuid, ErrorBody};
use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(
    post, path = "/v1/accounts/{accountId}/participants/{participantId}/hold", operation_id = "holdCall",
    tag = "Calls (additions)",
    params(("accountId" = String, Path), ("participantId" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Held: the phone accepted our re-INVITE (sendonly); it is sent nothing and nothing of it is heard until resumed"),
        (status = 404, description = "No such participant", body = ErrorBody),
        (status = 409, description = "The participant has no SIP call on this node, the call is renegotiating (try again), or the phone refused", body = ErrorBody),
        (status = 503, description = "The phone did not answer: the call was ended", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn hold(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, participant)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    hold_or_resume(&app, &account, &participant, true).await
}

#[utoipa::path(
    post, path = "/v1/accounts/{accountId}/participants/{participantId}/resume", operation_id = "resumeCall",
    tag = "Calls (additions)",
    params(("accountId" = String, Path), ("participantId" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Resumed: the phone accepted our re-INVITE (sendrecv); it hears its session again"),
        (status = 404, description = "No such participant", body = ErrorBody),
        (status = 409, description = "The participant has no SIP call on this node, the call is renegotiating (try again), or the phone refused", body = ErrorBody),
        (status = 503, description = "The phone did not answer: the call was ended", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn resume(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, participant)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    hold_or_resume(&app, &account, &participant, false).await
}

async fn hold_or_resume(
    app: &AppState,
    account: &str,
    participant: &str,
    hold: bool,
) -> Result<StatusCode, ApiError> {
    let pid = parse_uuid("participant", participant)?;
    app.conference.get_participant(account, pid)?;
    match app.conference.calls().hold(pid, hold).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e @ CallError::NoAnswer) => Err(ApiError::Unavailable(e.to_string())),
        Err(e) => Err(ApiError::Conflict(e.to_string())),
    }
}
