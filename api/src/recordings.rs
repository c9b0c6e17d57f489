//! Recordings of a session (a Patchbay addition): `POST/GET …/sessions/{s}/recordings`,
//! `GET/DELETE …/recordings/{r}`, `GET …/recordings/{r}/files/{f}`.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use patchbay_conference::recording::{self, FileReport, Recording};
use patchbay_conference::{NewRecording, Placement, RecordingHome};

use crate::auth::AccountId;
use crate::dto::{parse_uuid, ErrorBody, MessageBody};
use crate::error::ApiError;
use crate::forward::{forward_to, forwarded};
use crate::AppState;

/// Body of `createRecording`. Every field is optional; unknown fields are ignored (as in
/// the rest of the API).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateRecordingRequest {
    /// `tracks` (default: one file per published audio stream), `mixed` (one file of
    /// everything everybody says) or `dual` (two channels: one participant, everyone else).
    pub mode: Option<String>,
    /// `ogg` (default: Opus) or `wav`.
    pub format: Option<String>,
    /// Receives `recordingAvailable` when the recording's files are complete.
    pub callback_url: Option<String>,
    /// `dual`: the participant on the first channel (default: the session's first member).
    pub participant_id: Option<String>,
}

/// One file of a recording.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingFileBody {
    /// The file's id (for `…/files/{fileId}`).
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_alias: Option<String>,
    /// `audio/ogg` or `audio/wav`.
    pub content_type: String,
    pub channels: u16,
    pub sample_rate: u32,
    /// When the file starts, ms after the recording's start.
    pub offset_ms: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    /// Closed normally (false: still recording, or cut short by a crash).
    pub complete: bool,
    /// Copied to the object store.
    pub uploaded: bool,
    /// The segment it belongs to (0 unless the session's media moved in a cluster).
    pub segment: u32,
    /// Where to download it (this API, same credentials).
    pub media_url: String,
}

/// One segment of a recording: what one node of a cluster recorded while it ran the
/// session's media (listed when there are several).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingSegmentBody {
    pub segment: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub status: String,
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// `moved`: the media moved to another node, where the next segment goes on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A recording.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingBody {
    pub id: String,
    pub session_id: String,
    pub mode: String,
    pub format: String,
    /// `recording`, `stopping`, `complete` or `failed`.
    pub status: String,
    /// RFC 3339.
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Why it stopped: `requested`, `sessionEnded`, `limit`, `shutdown`, `moved` (the
    /// session's media moved to another node of a cluster), `interrupted` (a crash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Some of its audio was lost because the disk could not keep up.
    pub damaged: bool,
    pub files: Vec<RecordingFileBody>,
    /// Its segments, when the session's media moved between nodes of a cluster while
    /// it recorded (each node's part; the files say which segment they belong to).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<RecordingSegmentBody>,
}

impl RecordingBody {
    /// `files`: the record's, or (while recording) the writer's progress.
    pub fn of(r: &Recording, files: &[FileReport]) -> RecordingBody {
        let base = format!(
            "/v1/accounts/{}/sessions/{}/recordings/{}/files",
            r.account_id, r.session_id, r.id
        );
        RecordingBody {
            id: r.id.to_string(),
            session_id: r.session_id.to_string(),
            mode: r.mode.clone(),
            format: r.format.clone(),
            status: r.status.as_str().into(),
            start_time: recording::rfc3339_ms(r.start_ms),
            end_time: r.end_ms.map(recording::rfc3339_ms),
            reason: r.reason.clone(),
            participant_id: r.participant_id.map(|p| p.to_string()),
            callback_url: r.callback_url.clone(),
            damaged: r.damaged,
            files: files
                .iter()
                .map(|f| RecordingFileBody {
                    id: f.file.to_string(),
                    name: f.name.clone(),
                    participant_id: f.participant_id.map(|p| p.to_string()),
                    stream_alias: f.stream_alias.clone(),
                    content_type: f.content_type.clone(),
                    channels: f.channels,
                    sample_rate: f.sample_rate,
                    offset_ms: f.offset_ms,
                    duration_ms: f.duration_ms,
                    bytes: f.bytes,
                    complete: f.complete,
                    uploaded: f.uploaded,
                    segment: f.segment,
                    media_url: format!("{base}/{}", f.file),
                })
                .collect(),
            segments: r
                .segments
                .iter()
                .map(|g| RecordingSegmentBody {
                    segment: g.segment,
                    node: g.node.clone(),
                    status: g.status.as_str().into(),
                    start_time: recording::rfc3339_ms(g.start_ms),
                    end_time: g.end_ms.map(recording::rfc3339_ms),
                    reason: g.reason.clone(),
                })
                .collect(),
        }
    }
}

fn body_of(app: &AppState, r: &Recording) -> RecordingBody {
    RecordingBody::of(r, &files_of(app, r))
}

/// A recording's files: those listed in its record, and those of the segment running
/// here as far as the writer got (its manifest).
fn files_of(app: &AppState, r: &Recording) -> Vec<FileReport> {
    let mut files = r.files.clone();
    let progress = r
        .running_row
        .and_then(|row| app.conference.recording_progress(row));
    for f in progress.map(|m| m.files).unwrap_or_default() {
        // Files that closed already are in the record (and may be in the bucket).
        if !files.iter().any(|g| g.file == f.file) {
            files.push(f);
        }
    }
    files
}

#[utoipa::path(
    post, path = "/v1/accounts/{accountId}/sessions/{sessionId}/recordings", operation_id = "createRecording",
    tag = "Recordings (additions)",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid)),
    request_body(content = CreateRecordingRequest, description = r#"{"mode":"tracks"|"mixed"|"dual","format":"ogg"|"wav","callbackUrl":"https://…","participantId":"…"} (every field optional)"#),
    responses(
        (status = 200, description = "Recording", body = RecordingBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = MessageBody),
        (status = 404, description = "Session not found", body = ErrorBody),
        (status = 409, description = "Too many recordings in the session, recordings not enabled, or the session's media busy", body = ErrorBody),
        (status = 503, description = "A cluster: the node that runs the session's media cannot be reached, or this node is stopping", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn create_recording(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session)): Path<(String, String)>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let session = parse_uuid("sessionId", &session)?;
    let req: CreateRecordingRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRecordingRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?
    };
    let mode = match req.mode.as_deref() {
        None => patchbay_conference::media::session::RecordMode::Tracks,
        Some(m) => recording::parse_mode(m).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown mode `{m}`; expected \"tracks\", \"mixed\" or \"dual\""
            ))
        })?,
    };
    let format = match req.format.as_deref() {
        None => patchbay_conference::media::session::RecordFormat::Ogg,
        Some(f) => recording::parse_format(f).ok_or_else(|| {
            ApiError::BadRequest(format!("unknown format `{f}`; expected \"ogg\" or \"wav\""))
        })?,
    };
    let participant_id = req
        .participant_id
        .as_deref()
        .map(|p| parse_uuid("participantId", p))
        .transpose()?;
    if let Some(url) = &req.callback_url {
        crate::routes::check_callback_url(&app, url).await?;
    }
    // In a cluster, a recording is made by the node that runs the session's media.
    if !forwarded(&app, &parts) {
        app.conference.get_session(&account, session)?;
        if let Placement::Elsewhere {
            node,
            http_url: Some(base),
            ..
        } = app.conference.place_session(session).await?
        {
            let failed =
                format!("the node that runs the session's media ({node}) cannot be reached");
            return forward_to(&app, &node, &base, &parts, body, failed).await;
        }
    }
    let r = app
        .conference
        .start_recording(
            &account,
            session,
            NewRecording {
                mode,
                format,
                callback_url: req.callback_url,
                participant_id,
            },
        )
        .await?;
    Ok(Json(body_of(&app, &r)).into_response())
}

#[utoipa::path(
    get, path = "/v1/accounts/{accountId}/sessions/{sessionId}/recordings", operation_id = "listRecordings",
    tag = "Recordings (additions)",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The session's recordings, oldest first", body = [RecordingBody]),
        (status = 404, description = "Session not found", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn list_recordings(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session)): Path<(String, String)>,
) -> Result<Json<Vec<RecordingBody>>, ApiError> {
    let session = parse_uuid("sessionId", &session)?;
    let list = app.conference.list_recordings(&account, session).await?;
    Ok(Json(list.iter().map(|r| body_of(&app, r)).collect()))
}

fn ids(session: &str, recording: &str) -> Result<(Uuid, Uuid), ApiError> {
    Ok((
        parse_uuid("sessionId", session)?,
        parse_uuid("recordingId", recording)?,
    ))
}

#[utoipa::path(
    get, path = "/v1/accounts/{accountId}/sessions/{sessionId}/recordings/{recordingId}", operation_id = "getRecording",
    tag = "Recordings (additions)",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid), ("recordingId" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The recording and its files", body = RecordingBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn get_recording(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session, id)): Path<(String, String, String)>,
) -> Result<Json<RecordingBody>, ApiError> {
    let (session, id) = ids(&session, &id)?;
    let r = app.conference.get_recording(&account, session, id).await?;
    Ok(Json(body_of(&app, &r)))
}

#[utoipa::path(
    delete, path = "/v1/accounts/{accountId}/sessions/{sessionId}/recordings/{recordingId}", operation_id = "stopRecording",
    tag = "Recordings (additions)",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid), ("recordingId" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Stopping (status `stopping`, then `complete` and `recordingAvailable`); a stopped recording stays as it is"),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 503, description = "A cluster: the node running the recording's last segment cannot be reached", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn stop_recording(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session, id)): Path<(String, String, String)>,
    req: Parts,
) -> Result<Response, ApiError> {
    let (session, id) = ids(&session, &id)?;
    if let Some(r) = elsewhere(&app, &account, session, id, None, &req).await? {
        return Ok(r);
    }
    app.conference.stop_recording(&account, session, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// In a cluster, what another live node holds of a recording (its running segment,
/// to stop; a segment's file) is answered there: this request is sent on.
async fn elsewhere(
    app: &AppState,
    account: &str,
    session: Uuid,
    id: Uuid,
    file: Option<u32>,
    req: &Parts,
) -> Result<Option<Response>, ApiError> {
    if forwarded(app, req) {
        return Ok(None);
    }
    let home = app
        .conference
        .recording_home(account, session, id, file)
        .await?;
    let RecordingHome::Elsewhere(Placement::Elsewhere {
        node,
        http_url: Some(base),
        ..
    }) = home
    else {
        return Ok(None);
    };
    let failed = format!("node {node}, which holds this part of recording {id}, cannot be reached");
    forward_to(app, &node, &base, req, Bytes::new(), failed)
        .await
        .map(Some)
}

#[utoipa::path(
    get, path = "/v1/accounts/{accountId}/sessions/{sessionId}/recordings/{recordingId}/files/{fileId}", operation_id = "getRecordingFile",
    tag = "Recordings (additions)",
    params(("accountId" = String, Path), ("sessionId" = String, Path, format = Uuid), ("recordingId" = String, Path, format = Uuid), ("fileId" = String, Path)),
    responses(
        (status = 200, description = "The file (audio/ogg or audio/wav)"),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "A cluster: the node that holds this segment's files is not running", body = ErrorBody),
        (status = 503, description = "A cluster: the node that holds this segment's files cannot be reached", body = ErrorBody),
    ),
    security(("Basic" = []))
)]
pub async fn get_recording_file(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session, id, file)): Path<(String, String, String, String)>,
    req: Parts,
) -> Result<Response, ApiError> {
    let (session, id) = ids(&session, &id)?;
    let file: u32 = file
        .parse()
        .map_err(|_| ApiError::NotFound(format!("file {file} of recording {id} not found")))?;
    if let Some(r) = elsewhere(&app, &account, session, id, Some(file), &req).await? {
        return Ok(r);
    }
    // The name is ours (the core's), never the client's: no path to escape through.
    let (path, f) = app.conference.recording_file(&account, session, id, file)?;
    let handle = tokio::fs::File::open(&path).await.map_err(|e| {
        tracing::warn!(recording = %id, file = %f.name, error = %e, "a recording file could not be opened");
        ApiError::NotFound(format!("file {file} of recording {id} is not on this gateway"))
    })?;
    let len = handle.metadata().await.map(|m| m.len()).ok();
    let stream = futures_util::stream::unfold(handle, |mut h| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match h.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), h))
            }
            Err(e) => Some((Err(e), h)),
        }
    });
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = f.content_type.parse() {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let (Some(n), true) = (len, f.complete) {
        if let Ok(v) = n.to_string().parse() {
            headers.insert(header::CONTENT_LENGTH, v);
        }
    }
    if let Ok(v) = format!("attachment; filename=\"{}\"", f.name).parse() {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
