//! `GET /v1/cluster` (an addition to the Bandwidth API, operator credentials): the
//! live nodes, each with its advertised addresses and what it carries now.
//!
//! Also the catch-up every control request and device connection starts with: in a
//! cluster, this node first reads whatever other nodes committed (one round trip to
//! PostgreSQL when nothing changed), so any node answers what any node acknowledged.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{Accounts, AppState};

/// What this node says about itself (its heartbeat's `info`).
pub type NodeInfo = Arc<dyn Fn() -> Value + Send + Sync>;

/// The cluster view's settings.
#[derive(Clone)]
pub struct ClusterApi {
    /// The operator's credentials; `None`: the view is refused.
    pub operator: Option<Arc<Accounts>>,
    /// A node silent this long is not listed.
    pub lease: Duration,
    /// This node's id and what it says about itself.
    pub node_id: String,
    pub info: NodeInfo,
    /// In a cluster: the authenticated requests between nodes.
    pub hops: Option<Arc<crate::hops::Hops>>,
}

impl ClusterApi {
    /// The node that sent a hop `mark` with `method path`, if the mark is genuine (a
    /// client's own mark is nothing).
    pub fn hop_from(&self, mark: Option<&str>, method: &str, path: &str) -> Option<String> {
        self.hops.as_ref()?.verify(mark?, method, path)
    }
}

#[derive(serde::Deserialize)]
pub struct ProofQuery {
    nonce: String,
}

/// A node proves to another that it is a node of this cluster before that one sends it
/// anything (docs/cluster.md): the HMAC of the nonce and its id under the cluster's key.
#[utoipa::path(get, path = "/v1/cluster/proof", operation_id = "getClusterProof", tag = "Operations",
    params(("nonce" = String, Query, description = "1-64 letters and digits, chosen by the asking node")),
    responses(
        (status = 200, description = "`NODE:HMAC` (text)", content_type = "text/plain"),
        (status = 400, description = "A bad nonce", body = crate::dto::MessageBody),
        (status = 404, description = "Not a cluster", body = crate::dto::MessageBody),
    ))]
pub async fn proof(
    State(app): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<ProofQuery>,
) -> Result<String, ApiError> {
    let Some(hops) = &app.cluster.hops else {
        return Err(ApiError::NotFound("this node is not in a cluster".into()));
    };
    if q.nonce.is_empty()
        || q.nonce.len() > 64
        || !q.nonce.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ApiError::BadRequest(
            "nonce must be 1-64 letters and digits".into(),
        ));
    }
    Ok(hops.proof(&q.nonce))
}

/// The live nodes of the cluster (an addition to the Bandwidth API). On one node: itself.
#[utoipa::path(get, path = "/v1/cluster", operation_id = "getCluster", tag = "Operations",
    security(("Basic" = [])),
    responses(
        (status = 200, description = "`{nodeId, nodes: [{id, self, heartbeatAgeMs, startedMs?, httpUrl, sipUri, webrtcAddress, mediaIp, publicIp, sessions, participants, mediaSessions, ownedSessions}]}`", content_type = "application/json"),
        (status = 401, description = "Not the operator's credentials, or no `operator` configured", body = crate::dto::MessageBody),
        (status = 503, description = "The store cannot be reached", body = crate::dto::ErrorBody),
    ))]
pub async fn cluster(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Some(operator) = &app.cluster.operator else {
        return Err(ApiError::Unauthorized(
            "the cluster view needs operator credentials: set `operator` (USER:PASSWORD)".into(),
        ));
    };
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    operator.authenticate(header)?;
    let me = &app.cluster.node_id;
    Ok(Json(json!({ "nodeId": me, "nodes": nodes(&app).await? })))
}

/// Every live node of the cluster (this one alone without a cluster), with its heartbeat.
pub async fn nodes(app: &AppState) -> Result<Vec<Value>, ApiError> {
    let me = &app.cluster.node_id;
    Ok(match app.conference.cluster() {
        None => vec![node_json(me, (app.cluster.info)(), None, 0, true)],
        Some(c) => c
            .nodes(app.cluster.lease)
            .await
            .map_err(|e| ApiError::from(patchbay_conference::ConferenceError::Store(e)))?
            .into_iter()
            .map(|n| {
                let info = serde_json::from_str(&n.info).unwrap_or(Value::Null);
                let this = n.id == *me;
                node_json(&n.id, info, Some(n.started_ms), n.heartbeat_age_ms, this)
            })
            .collect(),
    })
}

fn node_json(id: &str, info: Value, started_ms: Option<i64>, age_ms: i64, this: bool) -> Value {
    let mut v = json!({ "id": id, "self": this, "heartbeatAgeMs": age_ms });
    if let Some(ms) = started_ms {
        v["startedMs"] = json!(ms);
    }
    if let (Value::Object(out), Value::Object(info)) = (&mut v, info) {
        out.extend(info);
    }
    v
}

/// In a cluster, read what other nodes committed before a control request or a device
/// connection is handled; a store that does not answer fails the request (503).
pub async fn catch_up(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let needs =
        path.starts_with("/v1/accounts/") || path.starts_with("/v2") || path.starts_with("/v3");
    if needs {
        if let Err(e) = app.conference.sync().await {
            return ApiError::from(e).into_response();
        }
    }
    next.run(req).await
}
