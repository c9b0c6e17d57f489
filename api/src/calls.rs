//! A participant's SIP call from the control plane (additions to the reference):
//! `POST …/participants/{p}/hold` and `…/resume` renegotiate the call with the phone
//! (re-INVITE `sendonly`, then `sendrecv`) and answer once the phone did;
//! `POST …/participants/{p}/transfer` asks the phone's side to call elsewhere (REFER)
//! and answers with the outcome.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use patchbay_conference::calls::{valid_transfer_target, CallError, MAX_TRANSFER_RINGING};
use patchbay_conference::dialogs::is_e164;

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
        Err(e @ (CallError::NoAnswer | CallError::NoOutcome)) => {
            Err(ApiError::Unavailable(e.to_string()))
        }
        Err(e) => Err(ApiError::Conflict(e.to_string())),
    }
}

/// A transfer of a participant's SIP call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferRequest {
    /// Where to: an E.164 number (sent as `tel:`) or a `sip:`, `sips:` or `tel:` URI.
    pub to: String,
    /// How long the target may ring, in seconds (1 to 120; 30 if absent).
    #[serde(default)]
    pub ringing_timeout: Option<u64>,
}

/// How a transfer ended.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferResult {
    /// `COMPLETED` (the target answered; our call was ended), `REJECTED`,
    /// `RINGING_TIMEOUT` or `CALL_ENDED` (the call ended first).
    pub outcome: String,
    /// For `REJECTED`: the status line (`486 Busy Here`) or why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/accounts/{accountId}/participants/{participantId}/transfer", operation_id = "transferCall",
    tag = "Calls (additions)",
    params(("accountId" = String, Path), ("participantId" = String, Path, format = Uuid)),
    request_body = TransferRequest,
    responses(
        (status = 200, description = "The transfer's outcome (a REFER in the call; its NOTIFYs told how it ended)", body = TransferResult),
        (status = 400, description = "Bad body or target", body = ErrorBody),
        (status = 404, description = "No such participant", body = ErrorBody),
        (status = 409, description = "The participant has no SIP call on this node, or a transfer of it is under way", body = ErrorBody),
        (status = 503, description = "The SIP side gave no outcome", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn transfer(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, participant)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<TransferResult>, ApiError> {
    let pid = parse_uuid("participant", participant.as_str())?;
    let req: TransferRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    let to = if is_e164(&req.to) {
        format!("tel:{}", req.to)
    } else {
        req.to
    };
    if !valid_transfer_target(&to) {
        return Err(ApiError::BadRequest(
            "to must be an E.164 number or a sip:, sips: or tel: URI (at most 256 characters)"
                .into(),
        ));
    }
    let max = MAX_TRANSFER_RINGING.as_secs();
    let ringing = match req.ringing_timeout {
        None => 30,
        Some(s) if (1..=max).contains(&s) => s,
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "ringingTimeout must be 1 to {max} seconds"
            )))
        }
    };
    app.conference.get_participant(&account, pid)?;
    let outcome = app
        .conference
        .calls()
        .transfer(pid, to, Duration::from_secs(ringing))
        .await;
    match outcome {
        Ok(o) => Ok(Json(TransferResult {
            outcome: o.as_str().to_string(),
            details: match o {
                patchbay_conference::calls::TransferOutcome::Rejected(d) => Some(d),
                _ => None,
            },
        })),
        Err(e @ CallError::NoOutcome) => Err(ApiError::Unavailable(e.to_string())),
        Err(e) => Err(ApiError::Conflict(e.to_string())),
    }
}
