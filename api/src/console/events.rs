//! The console's live event stream (`text/event-stream`, read with `fetch` so that the
//! credentials stay in a header): `change` when an object of the account changed
//! (read it again), `resync` when the reader fell behind (read everything again), and,
//! for the session named by `?sessionId=`, `media` with its media view a few times a
//! second while it runs here. A comment every 15 s keeps proxies from closing it.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::{MAX_EVENT_STREAMS, MAX_EVENT_STREAMS_PER_ACCOUNT};
use crate::auth::AccountId;
use crate::dto::parse_uuid;
use crate::error::ApiError;
use crate::AppState;
use patchbay_conference::media::session::MediaView;
use patchbay_conference::Change;

const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often a stream looks whether its session's media started running here.
const ATTACH_EVERY: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// One open stream's state.
struct Stream {
    app: AppState,
    account: Arc<str>,
    changes: broadcast::Receiver<Change>,
    session: Option<Uuid>,
    view: Option<watch::Receiver<Arc<MediaView>>>,
    stopping: watch::Receiver<bool>,
    /// The first event (`hello`, and the media view if any) is still to be sent.
    greeted: bool,
    _slot: Slot,
}

/// A place among [`MAX_EVENT_STREAMS`] (and the account's), given back when the stream ends.
struct Slot(AppState, Arc<str>);

impl Slot {
    /// A place for `account`'s stream, if there is one (refusals are counted).
    fn take(app: &AppState, account: &str) -> Option<Slot> {
        let console = &app.console;
        let mut per = console
            .per_account
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mine = per.get(account).copied().unwrap_or(0);
        if mine >= MAX_EVENT_STREAMS_PER_ACCOUNT
            || console.streams.load(Relaxed) >= MAX_EVENT_STREAMS
        {
            console.streams_refused.fetch_add(1, Relaxed);
            return None;
        }
        per.insert(account.to_string(), mine + 1);
        console.streams.fetch_add(1, Relaxed);
        Some(Slot(app.clone(), Arc::from(account)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let console = &self.0.console;
        let mut per = console
            .per_account
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per.get_mut(&*self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&*self.1);
            }
        }
        console.streams.fetch_sub(1, Relaxed);
    }
}

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

impl Stream {
    /// The next chunk of the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if !self.greeted {
            self.greeted = true;
            self.attach();
            return Some(event("hello", "{}"));
        }
        loop {
            if *self.stopping.borrow() {
                return None;
            }
            let detached = self.session.is_some() && self.view.is_none();
            let view = self.view.as_mut();
            tokio::select! {
                change = self.changes.recv() => match change {
                    Ok(c) if *c.account_id == *self.account => {
                        let data = serde_json::to_string(&c).unwrap_or_default();
                        return Some(event("change", &data));
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return Some(event("resync", "{}")),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = async { match view { Some(v) => v.changed().await, None => std::future::pending().await } } => {
                    if changed.is_err() {
                        // The session's media stopped here.
                        self.view = None;
                    }
                    return Some(self.media());
                }
                _ = tokio::time::sleep(ATTACH_EVERY), if detached => {
                    if self.attach() {
                        return Some(self.media());
                    }
                }
                _ = tokio::time::sleep(KEEPALIVE) => return Some(Bytes::from_static(b": keepalive\n\n")),
                _ = self.stopping.changed() => continue,
            }
        }
    }

    /// Watch the session's media if it runs here now; true when it started to.
    fn attach(&mut self) -> bool {
        let Some(sid) = self.session else {
            return false;
        };
        if self.view.is_some() {
            return false;
        }
        self.view = self
            .app
            .conference
            .media()
            .running(sid)
            .map(|h| h.watch_view());
        self.view.is_some()
    }

    fn media(&mut self) -> Bytes {
        let data = match (&mut self.view, self.session) {
            (Some(v), _) => {
                // Clone the Arc: the session's shell is not held while this serializes.
                let view = v.borrow_and_update().clone();
                super::view_json(&view).to_string()
            }
            (None, Some(sid)) => super::media_json(&self.app, sid).to_string(),
            (None, None) => "{}".into(),
        };
        event("media", &data)
    }
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/events", operation_id = "events",
    tag = "Console (additions)",
    params(("accountId" = String, Path, description = "Account id"),
        ("sessionId" = Option<String>, Query, description = "Also stream this session's media view (`media` events)")),
    responses(
        (status = 200, description = "Server-sent events: `hello`; `change` `{kind: session|participant|dialog, id, sessionId?}`; `resync`; `media` (the body of getSessionMedia)", content_type = "text/event-stream"),
        (status = 503, description = "Too many event streams are open on this node", body = crate::dto::ErrorBody),
    ),
    security(("Basic" = [])))]
pub async fn events(
    State(app): State<AppState>,
    AccountId(account): AccountId,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let session = match q.session_id.as_deref() {
        Some(s) => {
            let sid = parse_uuid("session", s)?;
            app.conference.get_session(&account, sid)?;
            Some(sid)
        }
        None => None,
    };
    let Some(slot) = Slot::take(&app, &account) else {
        return Err(ApiError::Unavailable(format!(
            "too many console event streams are open: at most {MAX_EVENT_STREAMS_PER_ACCOUNT} per account and {MAX_EVENT_STREAMS} per node; close another console tab"
        )));
    };
    let stopping = app.console.stopping.subscribe();
    let stream = Stream {
        changes: app.conference.changes(),
        app,
        account: Arc::from(account.as_str()),
        session,
        view: None,
        stopping,
        greeted: false,
        _slot: slot,
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next().await?;
        Some((Ok::<_, Infallible>(chunk), s))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
