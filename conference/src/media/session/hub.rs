//! The running sessions' shells, by session id, and the handles that feed them.
//! Touched on joins, leaves and control-plane changes only — never per packet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{
    HangupReason, MediaView, SessionInput, SessionSnapshot, CONTROL_QUEUE, DATAGRAM_QUEUE,
    DEVICE_QUEUE, PHONE_ALIAS,
};
use crate::events::{EventSink, LogEvents};
use crate::media::stats::MediaStats;
use crate::media::webrtc::{WebRtcIn, WebRtcTransport};

/// A handle to a running session's shell. Its three queues are bounded: control
/// (the control plane and SIP legs), devices (browsers' signaling, which a hostile
/// client may flood: it fills only this one) and datagrams.
#[derive(Clone)]
pub struct SessionHandle {
    control: mpsc::Sender<SessionInput>,
    devices: mpsc::Sender<SessionInput>,
    datagrams: mpsc::Sender<WebRtcIn>,
    end: Arc<watch::Sender<Option<HangupReason>>>,
    stats: Arc<MediaStats>,
    /// SIP legs in the session now (kept by its shell).
    pub(super) legs: Arc<AtomicUsize>,
    /// What its media plane is doing (taken by its shell a few times a second).
    pub(super) view: Arc<watch::Sender<Arc<MediaView>>>,
}

impl SessionHandle {
    /// Send a control input without waiting; false when the session has ended or its
    /// queue is full (counted in `patchbay_session_inputs_dropped_total`).
    pub fn send(&self, input: SessionInput) -> bool {
        match self.control.try_send(input) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats
                    .session_inputs_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Send a device's input, waiting while the devices' queue is full (a client's
    /// messages are paced by the session instead of dropped, and never crowd out the
    /// control plane's); false when the session has ended.
    pub async fn send_wait(&self, input: SessionInput) -> bool {
        self.devices.send(input).await.is_ok()
    }

    /// Hand over one datagram; false when the queue is full or the session ended.
    pub fn send_datagram(&self, datagram: WebRtcIn) -> bool {
        self.datagrams.try_send(datagram).is_ok()
    }

    /// A handle that leads nowhere (every send fails): for a call that never joined.
    pub fn closed() -> SessionHandle {
        let (control, _) = mpsc::channel(1);
        let (devices, _) = mpsc::channel(1);
        let (datagrams, _) = mpsc::channel(1);
        let (end, _) = watch::channel(None);
        SessionHandle {
            control,
            devices,
            datagrams,
            end: Arc::new(end),
            stats: Arc::new(MediaStats::default()),
            legs: Arc::default(),
            view: Arc::new(watch::channel(Arc::default()).0),
        }
    }

    /// The session's media view, updated while the receiver lives (4 times a second
    /// while anyone watches, once a second otherwise).
    pub fn watch_view(&self) -> watch::Receiver<Arc<MediaView>> {
        self.view.subscribe()
    }

    /// The last media view taken.
    pub fn view(&self) -> Arc<MediaView> {
        self.view.borrow().clone()
    }

    /// Whether both handles lead to the same session's shell.
    pub fn same_session(&self, other: &SessionHandle) -> bool {
        self.control.same_channel(&other.control)
    }

    /// Whether the shell has stopped.
    pub fn is_closed(&self) -> bool {
        self.control.is_closed()
    }

    fn end(&self, reason: HangupReason) {
        self.end.send_replace(Some(reason));
    }
}

pub(super) struct HubInner {
    sessions: Mutex<HashMap<Uuid, SessionHandle>>,
    pub(super) stats: Arc<MediaStats>,
    pub(super) alias: Arc<str>,
    pub(super) webrtc: Mutex<Option<Arc<WebRtcTransport>>>,
    pub(super) sink: Mutex<Arc<dyn EventSink>>,
}

impl HubInner {
    fn sessions(&self) -> MutexGuard<'_, HashMap<Uuid, SessionHandle>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget `me` as the shell of `session_id` (if it still is).
    pub(super) fn remove(&self, session_id: Uuid, me: &SessionHandle) {
        let mut map = self.sessions();
        if map.get(&session_id).is_some_and(|h| h.same_session(me)) {
            map.remove(&session_id);
        }
    }
}

/// The running sessions' media, by session id.
#[derive(Clone)]
pub struct MediaHub {
    inner: Arc<HubInner>,
}

impl Default for MediaHub {
    fn default() -> Self {
        MediaHub::new(PHONE_ALIAS)
    }
}

impl MediaHub {
    /// A hub whose SIP legs publish under `alias`.
    pub fn new(alias: &str) -> MediaHub {
        MediaHub {
            inner: Arc::new(HubInner {
                sessions: Mutex::new(HashMap::new()),
                stats: Arc::new(MediaStats::default()),
                alias: Arc::from(alias),
                webrtc: Mutex::new(None),
                sink: Mutex::new(Arc::new(LogEvents)),
            }),
        }
    }

    /// Enable WebRTC media for browser devices on this transport.
    pub fn set_webrtc(&self, transport: Arc<WebRtcTransport>) {
        *self.inner.webrtc.lock().unwrap_or_else(|e| e.into_inner()) = Some(transport);
    }

    /// The WebRTC transport, if enabled.
    pub fn webrtc(&self) -> Option<Arc<WebRtcTransport>> {
        self.inner
            .webrtc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Send device events (`onConnect`, `onLeave`, `onDisconnect`) to `sink` (sessions
    /// started from now on).
    pub fn set_event_sink(&self, sink: Arc<dyn EventSink>) {
        *self.inner.sink.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    /// Where events go now.
    pub fn event_sink(&self) -> Arc<dyn EventSink> {
        self.inner
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Statistics of every session's media path.
    pub fn stats(&self) -> &MediaStats {
        &self.inner.stats
    }

    /// The shell of `session_id`, started with `snapshot` if it is not running. It runs
    /// until [`Self::end`] (or [`Self::end_all`]): its life is the session's.
    pub fn session(
        &self,
        session_id: Uuid,
        snapshot: impl FnOnce() -> SessionSnapshot,
    ) -> SessionHandle {
        let mut map = self.inner.sessions();
        if let Some(h) = map.get(&session_id).filter(|h| !h.is_closed()) {
            return h.clone();
        }
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (devices, devices_rx) = mpsc::channel(DEVICE_QUEUE);
        let (datagrams, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (end, end_rx) = watch::channel(None);
        let handle = SessionHandle {
            control,
            devices,
            datagrams,
            end: Arc::new(end),
            stats: self.inner.stats.clone(),
            legs: Arc::default(),
            view: Arc::new(
                watch::channel(Arc::new(MediaView {
                    session_id,
                    ..Default::default()
                }))
                .0,
            ),
        };
        let _ = handle.send(SessionInput::Snapshot(snapshot()));
        map.insert(session_id, handle.clone());
        tokio::spawn(super::shell::run(
            session_id,
            super::shell::Channels {
                control: control_rx,
                devices: devices_rx,
                datagrams: datagrams_rx,
                end: end_rx,
            },
            self.inner.clone(),
            handle.clone(),
        ));
        handle
    }

    /// Tell a running session (if any) something; none is started.
    pub fn notify(&self, session_id: Uuid, input: SessionInput) {
        if let Some(h) = self.inner.sessions().get(&session_id) {
            h.send(input);
        }
    }

    /// End a session's media (the session was deleted or expired): every leg is hung up
    /// and every device closed. A later [`Self::session`] starts a new shell.
    pub fn end(&self, session_id: Uuid, reason: HangupReason) {
        if let Some(h) = self.inner.sessions().remove(&session_id) {
            h.end(reason);
        }
    }

    /// End every session's media (graceful shutdown).
    pub fn end_all(&self, reason: HangupReason) {
        for (_, h) in self.inner.sessions().drain() {
            h.end(reason);
        }
    }

    /// Whether `session_id`'s media runs here.
    pub fn has(&self, session_id: Uuid) -> bool {
        self.inner.sessions().contains_key(&session_id)
    }

    /// Sessions whose media runs here without SIP legs (browsers only: they can move to
    /// another node; a call cannot).
    pub fn without_calls(&self) -> Vec<Uuid> {
        self.inner
            .sessions()
            .iter()
            .filter(|(_, h)| h.legs.load(Ordering::Relaxed) == 0)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The running session's handle, if its media runs here (none is started).
    pub fn running(&self, session_id: Uuid) -> Option<SessionHandle> {
        self.inner
            .sessions()
            .get(&session_id)
            .filter(|h| !h.is_closed())
            .cloned()
    }

    /// The last media view of every session running here (for `/metrics`).
    pub fn views(&self) -> Vec<Arc<MediaView>> {
        self.inner.sessions().values().map(|h| h.view()).collect()
    }

    /// Number of sessions with running media.
    pub fn active(&self) -> usize {
        self.inner.sessions().len()
    }
}
