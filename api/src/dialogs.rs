//! Dialogs: `POST/GET/PATCH/DELETE …/participants/{p}/dialogs[/{d}]`, also under
//! `…/sessions/{s}/participants/{p}/dialogs`. Both request shapes of the reference
//! are accepted (`{"type","data":{…}}` and `{"dialogType","dialogStateData":{…}}`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use patchbay_conference::dialogs::{Dialog, DialogData, DialogState};
use patchbay_conference::Placement;

use crate::auth::AccountId;
use crate::dto::{parse_uuid, ErrorBody, MessageBody};
use crate::error::ApiError;
use crate::forward::{forward_to, forwarded};
use crate::AppState;

/// `data` of a SIP dialog.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SipDialogData {
    /// E.164 number or SIP URI called.
    pub to: String,
    /// E.164 number, `UNKNOWN` or `RESTRICTED`.
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_to_user: Option<String>,
}

/// Why a dialog ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct DialogEventData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// A dialog as the API returns it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DialogBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialog_id: Option<String>,
    /// Always `SIP`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `NEW`, `CALLING`, `RINGING`, `ANSWERED` or `TERMINATED`.
    pub state: String,
    pub data: SipDialogData,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_data: Option<DialogEventData>,
}

impl DialogBody {
    pub(crate) fn of(d: &Dialog, with_id: bool, with_event_data: bool) -> DialogBody {
        DialogBody {
            dialog_id: with_id.then(|| d.id.to_string()),
            kind: "SIP".into(),
            state: d.state.as_str().into(),
            data: SipDialogData {
                to: d.data.to.clone(),
                from: d.data.from.clone(),
                user_to_user: d.data.user_to_user.clone(),
            },
            event_data: (with_event_data && (d.reason.is_some() || d.details.is_some())).then(
                || DialogEventData {
                    reason: d.reason.clone(),
                    details: d.details.clone(),
                },
            ),
        }
    }
}

/// Read a create request in either shape.
fn create_request(body: &Bytes) -> Result<DialogData, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let (kind, data) = match (v.get("type"), v.get("dialogType")) {
        (Some(t), _) => (t, v.get("data")),
        (None, Some(t)) => (t, v.get("dialogStateData")),
        (None, None) => return Err(ApiError::BadRequest("type is required (SIP)".into())),
    };
    if kind != "SIP" {
        return Err(ApiError::BadRequest(format!(
            "type {kind} is not supported; expected \"SIP\""
        )));
    }
    let data = data.filter(|d| d.is_object()).ok_or_else(|| {
        ApiError::BadRequest("data (an object with to and from) is required".into())
    })?;
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match data.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::BadRequest(format!("data.{k} must be a string"))),
        }
    };
    let to = text("to")?.ok_or_else(|| ApiError::BadRequest("data.to is required".into()))?;
    let from = text("from")?.ok_or_else(|| ApiError::BadRequest("data.from is required".into()))?;
    Ok(DialogData {
        to,
        from,
        user_to_user: text("userToUser")?,
        replaces: None,
    })
}

/// The ids in the path: participant, optional session, optional dialog.
fn ids(path: &HashMap<String, String>) -> Result<(Uuid, Option<Uuid>, Option<Uuid>), ApiError> {
    let get = |k: &str| path.get(k).map(|v| parse_uuid(k, v)).transpose();
    let participant = get("participantId")?
        .ok_or_else(|| ApiError::BadRequest("participantId is required".into()))?;
    Ok((participant, get("sessionId")?, get("dialogId")?))
}

/// The dialog id of the path, checked against the session when the path names one.
fn dialog_of(
    app: &AppState,
    account: &str,
    path: &HashMap<String, String>,
) -> Result<(Uuid, Uuid), ApiError> {
    let (participant, session, dialog) = ids(path)?;
    let dialog = dialog.ok_or_else(|| ApiError::BadRequest("dialogId is required".into()))?;
    if let Some(s) = session {
        app.conference.get_session(account, s)?;
    }
    Ok((participant, dialog))
}

#[utoipa::path(
    post, path = "/v1/accounts/{accountId}/participants/{participantId}/dialogs", operation_id = "createDialog",
    tag = "Dialogs",
    params(("accountId" = String, Path), ("participantId" = String, Path, format = Uuid)),
    request_body(content = Value, description = r#"{"type":"SIP","data":{"to":"+19195551212","from":"+18045551212","userToUser":"…;encoding=jwt"}} (or {"dialogType":"SIP","dialogStateData":{"to","from"}}). Also at /v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}/dialogs."#),
    responses(
        (status = 200, description = "The call is being placed (state NEW; progress goes to the participant's callbackUrl)", body = DialogBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 403, description = "Credentials of another account", body = MessageBody),
        (status = 404, description = "Participant (or session) not found", body = ErrorBody),
        (status = 409, description = "No AUDIO permission, not in a session, a live dialog already, or no SIP trunk configured", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn create_dialog(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path(path): Path<HashMap<String, String>>,
    req: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (participant, session, _) = ids(&path)?;
    let data = create_request(&body)?;
    // In a cluster, the call is placed by the node that runs the session's media.
    if !forwarded(&app, &req) {
        let placement = app
            .conference
            .dialog_placement(&account, participant)
            .await?;
        match placement {
            Placement::Elsewhere {
                node,
                http_url: Some(base),
                ..
            } => {
                let failed = format!(
                    "the node that runs the participant's session ({node}) cannot be reached"
                );
                return forward_to(&app, &node, &base, &req, body, failed).await;
            }
            Placement::Draining => {
                return Err(ApiError::Unavailable(
                    "this node is stopping: send the request to another node".into(),
                ))
            }
            _ => {}
        }
    }
    let d = app
        .conference
        .create_dialog(&account, participant, session, data)
        .await?;
    Ok(Json(DialogBody::of(&d, true, false)).into_response())
}

#[utoipa::path(
    get, path = "/v1/accounts/{accountId}/participants/{participantId}/dialogs/{dialogId}", operation_id = "getDialog",
    tag = "Dialogs",
    params(("accountId" = String, Path), ("participantId" = String, Path, format = Uuid), ("dialogId" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The dialog's current state", body = DialogBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn get_dialog(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path(path): Path<HashMap<String, String>>,
) -> Result<Json<DialogBody>, ApiError> {
    let (participant, dialog) = dialog_of(&app, &account, &path)?;
    let d = app
        .conference
        .find_dialog(&account, participant, dialog)
        .await?;
    Ok(Json(DialogBody::of(&d, true, true)))
}

#[utoipa::path(
    patch, path = "/v1/accounts/{accountId}/participants/{participantId}/dialogs/{dialogId}", operation_id = "updateDialog",
    tag = "Dialogs",
    params(("accountId" = String, Path), ("participantId" = String, Path, format = Uuid), ("dialogId" = String, Path, format = Uuid)),
    request_body(content = Value, description = r#"{"state":"TERMINATED"}: hang up (CANCEL before the answer, BYE after)"#),
    responses(
        (status = 200, description = "Updated", body = DialogBody),
        (status = 400, description = "Only TERMINATED may be requested", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn update_dialog(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path(path): Path<HashMap<String, String>>,
    req: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (participant, dialog) = dialog_of(&app, &account, &path)?;
    if let Some(r) = forward(&app, &account, participant, dialog, &req, body.clone()).await? {
        return Ok(r);
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    let state = v
        .get("state")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest("state (a string) is required".into()))?;
    match DialogState::parse(state) {
        Some(DialogState::Terminated) => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "a dialog cannot be set to {}: only TERMINATED may be requested",
                other.as_str()
            )))
        }
        None => {
            return Err(ApiError::BadRequest(format!(
                "unknown state `{state}`; only TERMINATED may be requested"
            )))
        }
    }
    let d = app
        .conference
        .hang_up_dialog(&account, participant, dialog)
        .await?;
    Ok(Json(DialogBody::of(&d, false, false)).into_response())
}

#[utoipa::path(
    delete, path = "/v1/accounts/{accountId}/participants/{participantId}/dialogs/{dialogId}", operation_id = "deleteDialog",
    tag = "Dialogs",
    params(("accountId" = String, Path), ("participantId" = String, Path, format = Uuid), ("dialogId" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Hung up"),
        (status = 404, description = "Not found", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn delete_dialog(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path(path): Path<HashMap<String, String>>,
    req: Parts,
) -> Result<Response, ApiError> {
    let (participant, dialog) = dialog_of(&app, &account, &path)?;
    if let Some(r) = forward(&app, &account, participant, dialog, &req, Bytes::new()).await? {
        return Ok(r);
    }
    app.conference
        .hang_up_dialog(&account, participant, dialog)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// In a cluster, a dialog another live node placed is driven there: send it this
/// request (same method, path, credentials and body) and answer what it answers.
async fn forward(
    app: &AppState,
    account: &str,
    participant: Uuid,
    dialog: Uuid,
    req: &Parts,
    body: Bytes,
) -> Result<Option<Response>, ApiError> {
    if forwarded(app, req) {
        return Ok(None);
    }
    let home = app
        .conference
        .dialog_home(account, participant, dialog)
        .await?;
    let Some(Placement::Elsewhere {
        node,
        http_url: Some(base),
        ..
    }) = home
    else {
        return Ok(None);
    };
    let failed = format!("the node that placed dialog {dialog} cannot be reached");
    forward_to(app, &node, &base, req, body, failed)
        .await
        .map(Some)
}
