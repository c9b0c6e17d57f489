//! REST requests one node of a cluster answers by sending them on to the node that
//! holds what they are about (a dialog it placed, a recording's segment it made),
//! with a hop mark (see `hops`): the answer is streamed back as it comes.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Carries the hop mark of a request one node forwarded to another (never forwarded
/// again); a client's own is ignored.
pub const FORWARDED: &str = "x-patchbay-forwarded";

/// Whether another node of the cluster forwarded `req` (a genuine hop mark).
pub fn forwarded(app: &AppState, req: &Parts) -> bool {
    let mark = req.headers.get(FORWARDED).and_then(|v| v.to_str().ok());
    app.cluster
        .hop_from(mark, req.method.as_str(), req.uri.path())
        .is_some()
}

/// Send `req` (same method, path, credentials and body) to the node at `base` and
/// answer what it answers (status, type, length, disposition; the body streamed);
/// `failed`: the error when it cannot be reached. The node must first prove it is
/// `node` of this cluster: a `nodes` row pointing elsewhere receives no credentials.
pub async fn forward_to(
    app: &AppState,
    node: &str,
    base: &str,
    req: &Parts,
    body: Bytes,
    failed: String,
) -> Result<Response, ApiError> {
    let Some(hops) = &app.cluster.hops else {
        return Err(ApiError::Unavailable(failed));
    };
    if let Err(e) = hops.check_peer(base, node).await {
        tracing::warn!(%node, error = %e, path = %req.uri.path(), "forwarding a request: the node did not prove itself");
        return Err(ApiError::Unavailable(failed));
    }
    let url = format!(
        "{base}{}",
        req.uri.path_and_query().map_or("", |p| p.as_str())
    );
    let mark = hops.mark(req.method.as_str(), req.uri.path());
    let mut out = hops
        .client()
        .request(req.method.clone(), &url)
        .header(FORWARDED, mark);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = req.headers.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    let answer = out.body(body).send().await.map_err(|e| {
        tracing::warn!(%node, error = %e, path = %req.uri.path(), "forwarding a request failed");
        ApiError::Unavailable(failed.clone())
    })?;
    let status = answer.status();
    let kept: Vec<_> = [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_DISPOSITION,
    ]
    .into_iter()
    .filter_map(|h| answer.headers().get(&h).cloned().map(|v| (h, v)))
    .collect();
    let chunks = futures_util::stream::unfold(answer, |mut a| async move {
        match a.chunk().await {
            Ok(Some(c)) => Some((Ok::<Bytes, reqwest::Error>(c), a)),
            Ok(None) => None,
            Err(e) => Some((Err(e), a)),
        }
    });
    let mut r = (status, Body::from_stream(chunks)).into_response();
    for (h, v) in kept {
        r.headers_mut().insert(h, v);
    }
    Ok(r)
}
