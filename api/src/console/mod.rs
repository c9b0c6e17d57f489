//! What the web console reads besides the Bandwidth-compatible API (documented
//! additions, read-only, with the same account credentials): the account's sessions,
//! a session's media plane now, a participant's dialogs and callbacks, the node's
//! operations figures, and a live event stream. The console's files are served by
//! [`files`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AccountId;
use crate::dto::{parse_uuid, SessionBody};
use crate::error::ApiError;
use crate::AppState;

pub mod events;
pub mod files;

/// Event streams open at once on this node (each holds a connection and a task).
pub const MAX_EVENT_STREAMS: usize = 256;
/// Event streams one account may hold open at once on this node (one account cannot take
/// every place).
pub const MAX_EVENT_STREAMS_PER_ACCOUNT: usize = 32;
/// Callbacks one log request returns at most.
const LOG_LIMIT: usize = 200;

/// The console's shared state.
pub struct Console {
    /// Where the built console is (`console_dir`), if anywhere.
    pub dir: Option<PathBuf>,
    pub(crate) streams: AtomicUsize,
    /// Open streams per account (accounts are configured: the map is bounded by them).
    pub(crate) per_account: Mutex<std::collections::HashMap<String, usize>>,
    /// Event streams refused over [`MAX_EVENT_STREAMS`].
    pub(crate) streams_refused: AtomicU64,
    /// The last sample for rates (packets, CPU time).
    last: Mutex<Option<Sample>>,
    /// Set when the gateway stops: event streams end (they would hold the shutdown).
    stopping: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    packets: f64,
    cpu_s: f64,
}

impl Console {
    pub fn new(dir: Option<PathBuf>) -> Arc<Console> {
        Arc::new(Console {
            dir,
            streams: AtomicUsize::new(0),
            per_account: Mutex::new(std::collections::HashMap::new()),
            streams_refused: AtomicU64::new(0),
            last: Mutex::new(None),
            stopping: tokio::sync::watch::channel(false).0,
        })
    }

    /// The gateway is stopping: end every event stream.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Its counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP patchbay_console_streams Console event streams open now.\n# TYPE patchbay_console_streams gauge\npatchbay_console_streams {}\n# HELP patchbay_console_streams_refused Console event streams refused (over {MAX_EVENT_STREAMS} open, or {MAX_EVENT_STREAMS_PER_ACCOUNT} of one account).\n# TYPE patchbay_console_streams_refused counter\npatchbay_console_streams_refused_total {}",
            self.streams.load(Relaxed),
            self.streams_refused.load(Relaxed)
        );
    }
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/sessions", operation_id = "listSessions",
    tag = "Console (additions)",
    params(("accountId" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account's sessions, newest first (an addition to the Bandwidth API)", body = [SessionBody]),
        (status = 401, description = "Missing or wrong credentials", body = crate::dto::MessageBody),
    ),
    security(("Basic" = [])))]
pub async fn list_sessions(
    State(app): State<AppState>,
    AccountId(account): AccountId,
) -> Json<Vec<SessionBody>> {
    Json(
        app.conference
            .list_sessions(&account)
            .iter()
            .map(SessionBody::from)
            .collect(),
    )
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/sessions/{sessionId}/media",
    operation_id = "getSessionMedia", tag = "Console (additions)",
    params(("accountId" = String, Path, description = "Account id"), ("sessionId" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "`{sessionId, running, atMs, sources: [{participantId, alias, origin, mediaType, levelDbov, speaking, quality: {codec, packets, lossPercent, jitterMs, rttMs, mos}}], listeners: [{participantId, origin, device, hears: [{participantId, alias, mediaType, delivery}], stream: {connected, bufferedMs} (a bot's)}]}`; `origin` is `phone`, `browser` or `bot`: what the media plane does now (`running: false` when the session's media does not run on this node)", content_type = "application/json"),
        (status = 404, description = "No such session", body = crate::dto::ErrorBody),
    ),
    security(("Basic" = [])))]
pub async fn session_media(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let sid = parse_uuid("session", &session)?;
    app.conference.get_session(&account, sid)?;
    Ok(Json(media_json(&app, sid)))
}

/// The media view of a session as the console reads it.
pub(crate) fn media_json(app: &AppState, session: uuid::Uuid) -> Value {
    match app.conference.media().running(session) {
        Some(h) => view_json(&h.view()),
        None => json!({ "sessionId": session, "running": false, "sources": [], "listeners": [] }),
    }
}

/// A running session's media view as JSON (`running: true`).
pub(crate) fn view_json(view: &patchbay_conference::media::session::MediaView) -> Value {
    let mut v = serde_json::to_value(view).unwrap_or(Value::Null);
    v["running"] = json!(true);
    v
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/participants/{participantId}/dialogs",
    operation_id = "listDialogs", tag = "Console (additions)",
    params(("accountId" = String, Path, description = "Account id"), ("participantId" = String, Path, description = "Participant id")),
    responses(
        (status = 200, description = "The participant's dialogs known to this node, newest first", content_type = "application/json"),
        (status = 404, description = "No such participant", body = crate::dto::ErrorBody),
    ),
    security(("Basic" = [])))]
pub async fn list_dialogs(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, participant)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_uuid("participant", &participant)?;
    app.conference.get_participant(&account, pid)?;
    let list: Vec<crate::dialogs::DialogBody> = app
        .conference
        .list_dialogs(&account, pid)
        .iter()
        .map(|d| crate::dialogs::DialogBody::of(d, true, true))
        .collect();
    Ok(Json(json!(list)))
}

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(rename = "participantId")]
    participant_id: Option<String>,
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/sessions/{sessionId}/webhooks",
    operation_id = "listWebhooks", tag = "Console (additions)",
    params(("accountId" = String, Path, description = "Account id"), ("sessionId" = String, Path, description = "Session id"),
        ("participantId" = Option<String>, Query, description = "Only this member's callbacks")),
    responses(
        (status = 200, description = "The members' recent callbacks sent by this node, newest first: `[{eventId, participantId, event, url, status (pending|retrying|delivered|failed), attempts, nextAttemptMs, lastError, createdMs, updatedMs}]`", content_type = "application/json"),
        (status = 404, description = "No such session", body = crate::dto::ErrorBody),
    ),
    security(("Basic" = [])))]
pub async fn webhook_log(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Path((_, session)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    let sid = parse_uuid("session", &session)?;
    let mut members: Vec<uuid::Uuid> = app
        .conference
        .list_session_participants(&account, sid)?
        .iter()
        .map(|p| p.id)
        .collect();
    if let Some(p) = q.participant_id {
        let pid = parse_uuid("participant", &p)?;
        members.retain(|m| *m == pid);
    }
    Ok(Json(json!(app.webhooks.stats.log.of(&members, LOG_LIMIT))))
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/ops", operation_id = "getOps",
    tag = "Console (additions)",
    params(("accountId" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "This node now: `{node, calls, devices, bots, mediaSessions, sessions, participants, packetsPerSecond, cpuPercent, refused: {metric: count}, store: ok|unavailable, draining, nodes, sipRegistrations: {registered, configured}}`", content_type = "application/json"),
    ),
    security(("Basic" = [])))]
pub async fn ops(State(app): State<AppState>, AccountId(_): AccountId) -> Json<Value> {
    let text = crate::routes::metrics_text(&app, false);
    let figures = parse_metrics(&text);
    let sum = |names: &[&str]| -> f64 {
        names
            .iter()
            .map(|n| {
                figures
                    .iter()
                    .filter(|(k, _)| k == n)
                    .map(|(_, v)| v)
                    .sum::<f64>()
            })
            .sum()
    };
    let packets = sum(&[
        "patchbay_rtp_received_total",
        "patchbay_rtp_sent_total",
        "patchbay_webrtc_media_in_total",
        "patchbay_webrtc_media_out_total",
    ]);
    let now = Sample {
        at: Instant::now(),
        packets,
        cpu_s: process_cpu_seconds().unwrap_or(0.0),
    };
    let before = app
        .console
        .last
        .lock()
        .map(|mut l| l.replace(now))
        .unwrap_or(None);
    let (pps, cpu) = match before {
        Some(b) if now.at.duration_since(b.at).as_secs_f64() > 0.05 => {
            let dt = now.at.duration_since(b.at).as_secs_f64();
            (
                json!(((now.packets - b.packets) / dt).max(0.0).round()),
                json!((((now.cpu_s - b.cpu_s) / dt) * 1000.0).round() / 10.0),
            )
        }
        _ => (Value::Null, Value::Null),
    };
    let mut refused = serde_json::Map::new();
    for (name, value) in &figures {
        let counts_refusal = [
            "refused",
            "dropped",
            "rejected",
            "oversized",
            "failed",
            "fenced",
        ]
        .iter()
        .any(|w| name.contains(w));
        if counts_refusal && name.ends_with("_total") {
            let key = name
                .trim_start_matches("patchbay_")
                .trim_end_matches("_total");
            let entry = refused.entry(key.to_string()).or_insert(json!(0.0));
            *entry = json!(entry.as_f64().unwrap_or(0.0) + value);
        }
    }
    let views = app.conference.media().views();
    let listeners = |origin| {
        views
            .iter()
            .flat_map(|v| v.listeners.iter())
            .filter(|l| l.origin == origin)
            .count()
    };
    use patchbay_conference::media::session::Origin;
    let (sessions, participants) = app.conference.counts();
    let store = match app.conference.ready().await {
        Ok(()) => "ok",
        Err(_) => "unavailable",
    };
    // What an account may see of each node: not its internal addresses, only the SIP URI
    // callers use.
    let nodes: Vec<Value> = crate::cluster::nodes(&app)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|n| {
            let keep = [
                "id",
                "self",
                "heartbeatAgeMs",
                "ownedSessions",
                "mediaSessions",
                "draining",
                "sipUri",
            ];
            let picked: serde_json::Map<String, Value> = keep
                .iter()
                .filter_map(|k| n.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect();
            Value::Object(picked)
        })
        .collect();
    Json(json!({
        "node": app.cluster.node_id,
        "calls": listeners(Origin::Phone),
        "devices": listeners(Origin::Browser),
        "bots": listeners(Origin::Bot),
        "mediaSessions": views.len(),
        "sessions": sessions,
        "participants": participants,
        "packetsPerSecond": pps,
        "cpuPercent": cpu,
        "refused": refused,
        "store": store,
        "draining": app.conference.is_draining(),
        "nodes": nodes,
        "sipRegistrations": {
            "registered": sum(&["patchbay_sip_registered"]),
            "configured": sum(&["patchbay_sip_registrations"]),
        },
    }))
}

/// `name value` pairs of a Prometheus text exposition (labels dropped).
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?.to_string();
            Some((name, value.parse().ok()?))
        })
        .collect()
}

/// CPU time this process has used, seconds (Linux: `/proc/self/stat`, at USER_HZ 100).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from its closing ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lines_are_summed_by_name() {
        let text = "# HELP x\npatchbay_rtp_sent_total 5\npatchbay_x{a=\"b c\"} 2\npatchbay_x{a=\"d\"} 3\n# EOF\n";
        let f = parse_metrics(text);
        assert_eq!(f[0], ("patchbay_rtp_sent_total".into(), 5.0));
        let x: f64 = f
            .iter()
            .filter(|(k, _)| k == "patchbay_x")
            .map(|(_, v)| v)
            .sum();
        assert_eq!(x, 5.0);
        assert!(process_cpu_seconds().is_some());
    }
}
