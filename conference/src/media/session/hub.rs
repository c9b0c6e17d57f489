//! The running sessions' shells, by session id, and the handles that feed them.
//! Touched on joins, leaves and control-plane changes only — never per packet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{
    ConnId, Fate, HangupReason, Home, Homes, LegId, MediaView, SessionInput, SessionSnapshot,
    CONTROL_QUEUE, DATAGRAM_QUEUE, DEVICE_QUEUE, PHONE_ALIAS,
};
use crate::events::{EventSink, LogEvents};
use crate::media::stats::MediaStats;
use crate::media::webrtc::{WebRtcIn, WebRtcTransport};

/// A handle to a running session's shell. Its three queues are bounded: control
/// (the control plane and SIP legs), devices (browsers' signaling, which a hostile
/// client may flood: it fills only this one) and datagrams. Membership and
/// subscriptions are state, not a queue: the latest snapshot wins and is never dropped
/// (a REST change acknowledged is a change the media gets).
#[derive(Clone)]
pub struct SessionHandle {
    control: mpsc::Sender<SessionInput>,
    snapshot: Arc<watch::Sender<Option<SessionSnapshot>>>,
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

    /// The session's membership and subscriptions now (replaces any not yet taken).
    pub fn set_snapshot(&self, snapshot: SessionSnapshot) {
        self.snapshot.send_replace(Some(snapshot));
        // Wake the shell; when the queue is full it wakes anyway and finds the state.
        let _ = self.control.try_send(SessionInput::SnapshotChanged);
    }

    /// Send a device's input, waiting while the devices' queue is full (a client's
    /// messages are paced by the session instead of dropped, and never crowd out the
    /// control plane's); false when the session has ended.
    pub async fn send_wait(&self, input: SessionInput) -> bool {
        self.devices.send(input).await.is_ok()
    }

    /// Hand over a participant's media, waiting while the control queue is full (it must
    /// not be dropped); the media comes back when the session's shell has stopped.
    pub(super) async fn send_adopt(
        &self,
        moving: super::Moving,
        fate: super::Fate,
    ) -> Result<(), super::Moving> {
        match self
            .control
            .send(SessionInput::Adopt(Box::new(moving), fate))
            .await
        {
            Err(mpsc::error::SendError(SessionInput::Adopt(m, _))) => Err(*m),
            // The channel gives back what was sent on it: nothing else.
            Ok(()) | Err(_) => Ok(()),
        }
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
            snapshot: Arc::new(watch::channel(None).0),
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
    /// The core of the media whose participants are in no session (started when first
    /// needed).
    lobby: Mutex<Option<SessionHandle>>,
    /// Where a participant's media belongs (the control plane).
    homes: Mutex<Option<Arc<dyn Homes>>>,
    /// The gateway is stopping: media that moves ends instead.
    stopping: AtomicBool,
    pub(super) stats: Arc<MediaStats>,
    pub(super) alias: Arc<str>,
    pub(super) webrtc: Mutex<Option<Arc<WebRtcTransport>>>,
    pub(super) sink: Mutex<Arc<dyn EventSink>>,
    pub(super) recordings: Mutex<Option<crate::recording::RecordingWriter>>,
    /// What held SIP legs hear (`sip_music_on_hold`).
    pub(super) hold_music: Mutex<Option<Arc<crate::media::hold_music::HoldMusic>>>,
    /// The next leg id and device connection id this hub issues.
    next_leg: AtomicU64,
    next_conn: AtomicU64,
}

impl HubInner {
    fn sessions(&self) -> MutexGuard<'_, HashMap<Uuid, SessionHandle>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lobby_slot(&self) -> MutexGuard<'_, Option<SessionHandle>> {
        self.lobby.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn homes(&self) -> Option<Arc<dyn Homes>> {
        self.homes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forget `me` as the shell of `session_id` (or as the lobby), if it still is.
    pub(super) fn remove(&self, session_id: Uuid, lobby: bool, me: &SessionHandle) {
        if lobby {
            let mut slot = self.lobby_slot();
            if slot.as_ref().is_some_and(|h| h.same_session(me)) {
                *slot = None;
            }
            return;
        }
        let mut map = self.sessions();
        if map.get(&session_id).is_some_and(|h| h.same_session(me)) {
            map.remove(&session_id);
        }
    }

    /// A new shell (for `session_id`, or the lobby) and its handle.
    fn spawn(self: &Arc<Self>, session_id: Uuid, lobby: bool) -> SessionHandle {
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (devices, devices_rx) = mpsc::channel(DEVICE_QUEUE);
        let (datagrams, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (end, end_rx) = watch::channel(None);
        let (snapshot, snapshot_rx) = watch::channel(None);
        let handle = SessionHandle {
            control,
            snapshot: Arc::new(snapshot),
            devices,
            datagrams,
            end: Arc::new(end),
            stats: self.stats.clone(),
            legs: Arc::default(),
            view: Arc::new(
                watch::channel(Arc::new(MediaView {
                    session_id,
                    ..Default::default()
                }))
                .0,
            ),
        };
        tokio::spawn(super::shell::run(
            session_id,
            lobby,
            super::shell::Channels {
                control: control_rx,
                snapshot: snapshot_rx,
                devices: devices_rx,
                datagrams: datagrams_rx,
                end: end_rx,
            },
            self.clone(),
            handle.clone(),
        ));
        handle
    }

    /// The shell of `session_id`, started with `snapshot` if it is not running.
    pub(super) fn session(
        self: &Arc<Self>,
        session_id: Uuid,
        snapshot: impl FnOnce() -> SessionSnapshot,
    ) -> SessionHandle {
        let mut map = self.sessions();
        if let Some(h) = map.get(&session_id).filter(|h| !h.is_closed()) {
            return h.clone();
        }
        let handle = self.spawn(session_id, false);
        handle.set_snapshot(snapshot());
        map.insert(session_id, handle.clone());
        handle
    }

    /// The lobby's shell, started if it is not running.
    pub(super) fn lobby(self: &Arc<Self>) -> SessionHandle {
        let mut slot = self.lobby_slot();
        if let Some(h) = slot.as_ref().filter(|h| !h.is_closed()) {
            return h.clone();
        }
        let handle = self.spawn(Uuid::nil(), true);
        *slot = Some(handle.clone());
        handle
    }

    /// Send media that left a core where its participant is now. A shell that stopped
    /// meanwhile sends it back and the question is asked again; when the gateway stops
    /// (or after a few tries) it ends.
    pub(super) fn rehome(self: &Arc<Self>, mut moving: super::Moving) {
        let hub = self.clone();
        tokio::spawn(async move {
            if moving.hops > 3 {
                // It keeps bouncing (the control plane changing under it): let it settle.
                let wait =
                    Duration::from_millis(50 * u64::from(moving.hops)).min(Duration::from_secs(1));
                tokio::time::sleep(wait).await;
            }
            for _ in 0..4 {
                if hub.stopping.load(Ordering::Relaxed) {
                    break;
                }
                let pid = moving.participant_id();
                let home = match hub.homes() {
                    Some(h) => h.home(pid).await,
                    None => Home::Gone,
                };
                let (target, fate) = match home {
                    Home::Session(sid, snapshot) => (hub.session(sid, || snapshot), Fate::Stay),
                    Home::Lobby => (hub.lobby(), Fate::Stay),
                    Home::Elsewhere => {
                        tracing::info!(participant_id = %pid, legs = moving.legs.len(), "its session runs on another node: its calls stay parked here, its devices connect again");
                        (hub.lobby(), Fate::Evict)
                    }
                    Home::Gone => (hub.lobby(), Fate::End),
                };
                match target.send_adopt(moving, fate).await {
                    Ok(()) => return,
                    Err(back) => moving = back,
                }
            }
            tracing::info!(participant_id = %moving.participant_id(), "media with nowhere to go ends");
            for (_, l) in &moving.legs {
                l.sink.hang_up(HangupReason::Shutdown);
            }
            for (_, c) in &moving.conns {
                let _ = c.notes.try_send(crate::events::DeviceNote::Close(
                    crate::events::DeviceClose::SessionEnded,
                ));
            }
        });
    }

    /// Media of `participant_id` arrived in the lobby: if the participant is in a
    /// session now, the lobby lets it go there.
    pub(super) fn verify(self: &Arc<Self>, participant_id: Uuid) {
        let Some(homes) = self.homes() else {
            return;
        };
        let hub = self.clone();
        tokio::spawn(async move {
            // Parked is right for it when it is in no session, and when its session
            // runs on another node (its calls stay here).
            if matches!(
                homes.home(participant_id).await,
                Home::Lobby | Home::Elsewhere
            ) {
                return;
            }
            let lobby = hub.lobby_slot().clone();
            if let Some(l) = lobby {
                l.send(SessionInput::Core(super::Control::Recheck(participant_id)));
            }
        });
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
                lobby: Mutex::new(None),
                homes: Mutex::new(None),
                stopping: AtomicBool::new(false),
                stats: Arc::new(MediaStats::default()),
                alias: Arc::from(alias),
                webrtc: Mutex::new(None),
                sink: Mutex::new(Arc::new(LogEvents)),
                recordings: Mutex::new(None),
                hold_music: Mutex::new(None),
                next_leg: AtomicU64::new(1),
                next_conn: AtomicU64::new(1),
            }),
        }
    }

    /// A new media leg's id (a SIP call's, a stream participant's): unique among the
    /// legs of this hub's sessions, never reused.
    pub fn new_leg(&self) -> LegId {
        LegId(self.inner.next_leg.fetch_add(1, Ordering::Relaxed))
    }

    /// A new device connection's id (a signaling socket's), never reused: a stale
    /// socket's close never ends a resumed device.
    pub fn new_conn(&self) -> ConnId {
        ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed))
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

    /// Where recorders' files go (sessions started afterwards use it).
    pub fn set_recording_writer(&self, writer: crate::recording::RecordingWriter) {
        *self
            .inner
            .recordings
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(writer);
    }

    /// What held SIP legs hear (sessions started afterwards use it).
    pub fn set_hold_music(&self, music: Arc<crate::media::hold_music::HoldMusic>) {
        *self
            .inner
            .hold_music
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(music);
    }

    /// The recordings' writer, if set.
    pub fn recording_writer(&self) -> Option<crate::recording::RecordingWriter> {
        self.inner
            .recordings
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
        self.inner.session(session_id, snapshot)
    }

    /// The lobby: where the media of participants in no session is parked.
    pub fn lobby(&self) -> SessionHandle {
        self.inner.lobby()
    }

    /// Ask `homes` where a participant's media belongs whenever it moves.
    pub fn set_homes(&self, homes: Arc<dyn Homes>) {
        *self.inner.homes.lock().unwrap_or_else(|e| e.into_inner()) = Some(homes);
    }

    /// A participant's session changed: media of it parked in the lobby moves on.
    pub fn recheck(&self, participant_id: Uuid) {
        let lobby = self.inner.lobby_slot().clone();
        if let Some(l) = lobby {
            l.send(SessionInput::Core(super::Control::Recheck(participant_id)));
        }
    }

    /// SIP legs parked in the lobby now.
    pub fn parked_legs(&self) -> usize {
        self.inner
            .lobby_slot()
            .as_ref()
            .map_or(0, |h| h.legs.load(Ordering::Relaxed))
    }

    /// Tell a running session (if any) something; none is started.
    pub fn notify(&self, session_id: Uuid, input: SessionInput) {
        if let Some(h) = self.inner.sessions().get(&session_id) {
            match input {
                SessionInput::Core(super::Control::Snapshot(s)) => h.set_snapshot(s),
                input => {
                    h.send(input);
                }
            }
        }
    }

    /// End a session's media (the session was deleted or expired): every leg is hung up
    /// and every device closed. A later [`Self::session`] starts a new shell.
    pub fn end(&self, session_id: Uuid, reason: HangupReason) {
        if let Some(h) = self.inner.sessions().remove(&session_id) {
            h.end(reason);
        }
    }

    /// End every session's media and the lobby's (graceful shutdown).
    pub fn end_all(&self, reason: HangupReason) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        for (_, h) in self.inner.sessions().drain() {
            h.end(reason);
        }
        if let Some(h) = self.inner.lobby_slot().take() {
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
