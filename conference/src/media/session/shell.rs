//! The tokio shell around a [`SessionCore`]: it owns the channels, the legs' RTP
//! endpoints, the devices' signaling channels, the WebRTC socket and the clock, feeds
//! the core and carries out its outputs. No media logic lives here.
//!
//! Priorities: the end of the session, then due timers (the 20 ms tick is never
//! starved), then control inputs, then devices' joins and their connections' inputs,
//! then datagrams, each in bounded batches.
//!
//! Media that leaves the core (its participant is elsewhere now) leaves with what the
//! shell holds for it — legs' endpoints and media watches, devices' signaling channels —
//! and the hub sends it where it belongs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::core::{Action, Control, Now, Output, SessionCore};
use super::hub::{HubInner, SessionHandle};
use super::ids::{ConnId, DeviceKey, LegId};
use super::inbox::{Bell, Inbox, Taken};
use super::moving::Moving;
use super::{
    DeviceInput, HangupReason, LegMedia, LegReport, LegSink, PublishAnswer, PublishError,
    SessionInput,
};
use crate::events::{DeviceNote, EventSink};
use crate::media::stats::MediaStats;
use crate::media::webrtc::{RouteChange, WebRtcIn, WebRtcTransport};

/// Inputs taken per wake-up before timers are looked at again.
const BATCH: usize = 64;
/// Media that moves again within this long of its arrival counts a hop.
const SETTLED: Duration = Duration::from_secs(1);

pub(super) struct Channels {
    pub(super) control: mpsc::Receiver<SessionInput>,
    /// The latest membership and subscriptions (state: never dropped, latest wins).
    pub(super) snapshot: watch::Receiver<Option<super::SessionSnapshot>>,
    pub(super) devices: mpsc::Receiver<SessionInput>,
    pub(super) datagrams: mpsc::Receiver<WebRtcIn>,
    pub(super) end: watch::Receiver<Option<HangupReason>>,
}

/// A leg as the shell holds it: its RTP endpoint and the watch of its negotiated media
/// (a new value: re-negotiated; the sender gone: the call ended).
pub(super) struct LegEntry {
    pub(super) sink: Arc<dyn LegSink>,
    pub(super) media: watch::Receiver<LegMedia>,
}

/// A device's signaling connection as the shell holds it.
pub(super) struct ConnEntry {
    pub(super) key: DeviceKey,
    pub(super) inputs: Inbox,
    pub(super) notes: mpsc::Sender<DeviceNote>,
}

/// What the shell holds for the core's outputs.
struct Io {
    legs: HashMap<LegId, LegEntry>,
    conns: HashMap<ConnId, ConnEntry>,
    /// Rung by the connections' queues (this core looks only at those that rang).
    bell: Arc<Bell>,
    replies: HashMap<u64, oneshot::Sender<Result<PublishAnswer, PublishError>>>,
    next_request: u64,
    /// Participants whose media arrived lately, with the hops it made.
    arrived: HashMap<Uuid, (u32, Instant)>,
    transport: Option<Arc<WebRtcTransport>>,
    sink: Arc<dyn EventSink>,
    /// Where recorders' files go (none configured: their output is dropped).
    recordings: Option<crate::recording::RecordingWriter>,
    session_id: Uuid,
    me: SessionHandle,
    hub: Arc<HubInner>,
    stats: Arc<MediaStats>,
}

impl Io {
    /// Tell the hub how many SIP legs the session has (a stopping node moves the
    /// sessions without any).
    fn count_legs(&self) {
        self.me
            .legs
            .store(self.legs.len(), std::sync::atomic::Ordering::Relaxed);
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Turn a control input into the core's, keeping its channels here.
    fn control(&mut self, core: &mut SessionCore, now: Now, input: SessionInput) {
        let control = match input {
            // The loop takes the watch's value at each wake-up.
            SessionInput::SnapshotChanged => return,
            SessionInput::Join {
                leg,
                owner,
                call_id,
                mut media,
                sink,
            } => {
                let current = *media.borrow_and_update();
                self.legs.insert(leg, LegEntry { sink, media });
                self.count_legs();
                Control::Join {
                    leg,
                    owner,
                    call_id,
                    media: current,
                }
            }
            SessionInput::DeviceJoin {
                key,
                conn,
                owner,
                protocol,
                prior,
                notify,
                mut inputs,
            } => {
                inputs.attach(&self.bell);
                self.conns.insert(
                    conn,
                    ConnEntry {
                        key: key.clone(),
                        inputs,
                        notes: notify,
                    },
                );
                Control::DeviceJoin {
                    key,
                    conn,
                    owner,
                    protocol,
                    prior,
                }
            }
            SessionInput::Adopt(moving, fate) => {
                let Moving {
                    media,
                    legs,
                    conns,
                    hops,
                } = *moving;
                self.arrived.retain(|_, (_, at)| at.elapsed() < SETTLED);
                self.arrived
                    .insert(media.participant_id(), (hops, Instant::now()));
                self.legs.extend(legs);
                for (conn, mut c) in conns {
                    c.inputs.attach(&self.bell);
                    self.conns.insert(conn, c);
                }
                self.count_legs();
                Control::Adopt { media, fate }
            }
            SessionInput::Core(control) => control,
        };
        core.handle_control(now, control);
        self.outputs(core);
    }

    /// One input of a device's connection (`None`: the connection's loop ended).
    fn device_input(
        &mut self,
        core: &mut SessionCore,
        now: Now,
        conn: ConnId,
        input: Option<DeviceInput>,
    ) {
        let Some(key) = self.conns.get(&conn).map(|c| c.key.clone()) else {
            return;
        };
        let control = match input {
            None => {
                self.conns.remove(&conn);
                return;
            }
            Some(DeviceInput::Publish { request, reply }) => {
                let id = self.request_id();
                self.replies.insert(id, reply);
                Control::Publish {
                    key,
                    conn,
                    request: id,
                    offer: request,
                }
            }
            Some(DeviceInput::Receive {
                endpoint,
                sdp,
                reply,
            }) => {
                let id = self.request_id();
                self.replies.insert(id, reply);
                Control::Receive {
                    key,
                    conn,
                    request: id,
                    endpoint,
                    sdp,
                }
            }
            Some(DeviceInput::Unpublish { endpoint }) => Control::Unpublish {
                key,
                conn,
                endpoint,
            },
            Some(DeviceInput::Answer { sdp }) => Control::Answer { key, conn, sdp },
            Some(DeviceInput::Gone { left }) => {
                // Nothing more comes on it.
                self.conns.remove(&conn);
                Control::DeviceGone { key, conn, left }
            }
        };
        core.handle_control(now, control);
        self.outputs(core);
    }

    /// Inputs of the connections whose queues rang (bounded; rings itself again when
    /// more wait, so timers come first).
    fn rang(&mut self, core: &mut SessionCore, now: Now) {
        for _ in 0..BATCH {
            let Some(conn) = self.bell.next() else {
                return;
            };
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            if !c.inputs.rings(&self.bell) {
                continue;
            }
            match c.inputs.take() {
                Taken::Input(input) => self.device_input(core, now, conn, Some(input)),
                Taken::Closed => self.device_input(core, now, conn, None),
                Taken::Empty => {}
            }
        }
        self.bell.again();
    }

    /// Carry out everything the core wants done, then send on the media that left.
    fn outputs(&mut self, core: &mut SessionCore) {
        while let Some(out) = core.poll_output() {
            match out {
                Output::Transmit(batch) => {
                    if let Some(t) = &self.transport {
                        t.send_batch(batch);
                    }
                }
                Output::LegAudio {
                    leg,
                    payload,
                    samples,
                } => {
                    if let Some(l) = self.legs.get(&leg) {
                        l.sink.send_audio(payload, samples);
                    }
                }
                Output::Action(a) => self.action(a),
            }
        }
        while let Some(media) = core.poll_detached() {
            let (legs, _) = media.endpoints();
            let pid = media.participant_id();
            let legs = legs
                .into_iter()
                .filter_map(|l| self.legs.remove(&l).map(|e| (l, e)))
                .collect();
            let conns: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.key.participant_id == pid)
                .map(|(k, _)| *k)
                .collect();
            let conns = conns
                .into_iter()
                .filter_map(|c| self.conns.remove(&c).map(|e| (c, e)))
                .collect();
            let hops = match self.arrived.remove(&pid) {
                Some((h, at)) if at.elapsed() < SETTLED => h + 1,
                _ => 0,
            };
            self.count_legs();
            self.hub.rehome(Moving {
                media,
                legs,
                conns,
                hops,
            });
        }
    }

    fn action(&mut self, action: Action) {
        match action {
            Action::LegEvent {
                leg,
                payload,
                start,
                clock,
            } => {
                if let Some(l) = self.legs.get(&leg) {
                    l.sink.send_event(&payload, start, clock);
                }
            }
            Action::HangUp { leg, reason } => {
                if let Some(l) = self.legs.remove(&leg) {
                    l.sink.hang_up(reason);
                }
                self.count_legs();
            }
            Action::Note { conn, note } => {
                let close = matches!(note, DeviceNote::Close(_));
                if let Some(c) = self.conns.get(&conn) {
                    if c.notes.try_send(note).is_err() {
                        self.stats
                            .device_notes_dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if close {
                    self.conns.remove(&conn);
                }
            }
            Action::Published { request, result } => {
                if let Some(reply) = self.replies.remove(&request) {
                    let _ = reply.send(result);
                }
            }
            Action::Event(e) => self.sink.device_event(e),
            Action::Layout(l) => self.sink.device_layout(l),
            Action::Ufrag { ufrag, registered } => {
                if let Some(t) = &self.transport {
                    t.route(if registered {
                        RouteChange::Register {
                            ufrag,
                            session: self.me.clone(),
                        }
                    } else {
                        RouteChange::Unregister { ufrag }
                    });
                }
            }
            Action::Confirm { ufrag, addr } => {
                if let Some(t) = &self.transport {
                    t.route(RouteChange::Confirm { ufrag, addr });
                }
            }
            Action::Verify(participant_id) => self.hub.verify(participant_id),
            Action::Recording(out) => {
                if let Some(w) = &self.recordings {
                    w.send(self.session_id, out);
                }
            }
        }
    }

    /// `first` and what else is queued on `rx` (bounded), at one time.
    fn batch(
        &mut self,
        core: &mut SessionCore,
        first: SessionInput,
        rx: &mut mpsc::Receiver<SessionInput>,
    ) {
        let now = Now::system();
        self.control(core, now, first);
        for _ in 1..BATCH {
            match rx.try_recv() {
                Ok(input) => self.control(core, now, input),
                Err(_) => break,
            }
        }
    }

    /// Take the media view, as often as it is wanted.
    fn publish_view(&self, core: &SessionCore, last: &mut Instant, changed: bool) {
        if core.is_lobby() {
            return;
        }
        let every = if changed {
            Duration::ZERO
        } else if self.me.view.receiver_count() > 0 {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        if last.elapsed() < every {
            return;
        }
        *last = Instant::now();
        let view = core.view(Now::system(), &|leg| {
            self.legs
                .get(&leg)
                .map(|l| LegReport {
                    quality: l.sink.quality(),
                    stream: l.sink.stream(),
                })
                .unwrap_or_default()
        });
        self.me.view.send_replace(Arc::new(view));
    }

    /// Before a tick: legs whose call re-negotiated or ended, then every leg's waiting
    /// RTP into the core.
    fn drain_legs(&mut self, core: &mut SessionCore, now: Now) {
        let mut changed = Vec::new();
        let mut ended = Vec::new();
        for (&leg, l) in self.legs.iter_mut() {
            match l.media.has_changed() {
                Ok(true) => changed.push((leg, *l.media.borrow_and_update())),
                Ok(false) => {}
                Err(_) => ended.push(leg),
            }
        }
        for (leg, media) in changed {
            core.handle_control(now, Control::Update { leg, media });
        }
        if !ended.is_empty() {
            for leg in ended {
                let reason = self.legs.get(&leg).and_then(|l| l.sink.leave_reason());
                core.handle_control(now, Control::Leave { leg, reason });
                self.legs.remove(&leg);
            }
            self.count_legs();
        }
        for (&leg, l) in &self.legs {
            l.sink
                .drain(&mut |packet| core.handle_rtp(now, leg, packet));
        }
        self.outputs(core);
    }
}

/// The session's task (or the lobby's, `lobby`): runs until the session ends.
pub(super) async fn run(
    session_id: Uuid,
    lobby: bool,
    mut ch: Channels,
    hub: Arc<HubInner>,
    me: SessionHandle,
) {
    let transport = hub.webrtc.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let sink = hub.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let local = transport.as_ref().map(|t| t.advertised());
    let mut core = if lobby {
        SessionCore::lobby(hub.alias.clone(), local, Now::system())
    } else {
        SessionCore::new(session_id, hub.alias.clone(), local, Now::system())
    };
    core.hold_music = hub
        .hold_music
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut io = Io {
        legs: HashMap::new(),
        conns: HashMap::new(),
        bell: Arc::new(Bell::default()),
        replies: HashMap::new(),
        next_request: 1,
        arrived: HashMap::new(),
        transport,
        sink,
        recordings: hub
            .recordings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        session_id,
        me: me.clone(),
        hub: hub.clone(),
        stats: hub.stats.clone(),
    };
    let mut folded = Instant::now();
    let mut viewed = Instant::now();
    let mut datagrams_open = true;
    let bell = io.bell.clone();
    loop {
        // The latest membership and subscriptions, if they changed (an atomic load; a
        // doorbell on the control queue wakes the loop for it).
        let mut controlled = false;
        if ch.snapshot.has_changed().unwrap_or(false) {
            let snapshot = ch.snapshot.borrow_and_update().clone();
            if let Some(s) = snapshot {
                io.control(
                    &mut core,
                    Now::system(),
                    SessionInput::Core(Control::Snapshot(s)),
                );
                core.fold_stats(&hub.stats);
                controlled = true;
            }
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            biased;
            changed = ch.end.changed() => {
                let reason = match changed {
                    Ok(()) => (*ch.end.borrow()).unwrap_or(HangupReason::SessionEnded),
                    Err(_) => HangupReason::Shutdown,
                };
                io.control(&mut core, Now::system(), SessionInput::Core(Control::End(reason)));
                break;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                let now = Now::system();
                if core.tick_due(now) {
                    io.drain_legs(&mut core, now);
                }
                core.handle_timeout(now);
                io.outputs(&mut core);
            }
            input = ch.control.recv() => {
                let Some(input) = input else { break };
                io.batch(&mut core, input, &mut ch.control);
                // Control inputs are rare: their counters show at once.
                core.fold_stats(&hub.stats);
                controlled = true;
            }
            input = ch.devices.recv() => {
                let Some(input) = input else { break };
                io.batch(&mut core, input, &mut ch.devices);
                core.fold_stats(&hub.stats);
                controlled = true;
            }
            _ = bell.rung() => {
                io.rang(&mut core, Now::system());
                core.fold_stats(&hub.stats);
                controlled = true;
            }
            datagram = ch.datagrams.recv(), if datagrams_open => {
                let Some(d) = datagram else {
                    datagrams_open = false;
                    continue;
                };
                // Take what else is queued (bounded) before driving the peer connections:
                // under load one drive carries several packets per subscriber connection.
                let now = Now::system();
                core.handle_datagram(now, d.from, d.bytes());
                for _ in 1..BATCH {
                    match ch.datagrams.try_recv() {
                        Ok(d) => core.handle_datagram(now, d.from, d.bytes()),
                        Err(_) => break,
                    }
                }
                core.flush(now);
                io.outputs(&mut core);
            }
        }
        if folded.elapsed() >= Duration::from_secs(1) {
            folded = Instant::now();
            core.fold_stats(&hub.stats);
        }
        io.publish_view(&core, &mut viewed, controlled);
    }
    hub.remove(session_id, lobby, &me);
    // Inputs that raced the end: joins are hung up, devices closed, publishes refused,
    // media moving in ends with the session.
    ch.control.close();
    ch.devices.close();
    let now = Now::system();
    while let Ok(input) = ch.control.try_recv() {
        io.control(&mut core, now, input);
    }
    while let Ok(input) = ch.devices.try_recv() {
        io.control(&mut core, now, input);
    }
    core.fold_stats(&hub.stats);
    tracing::debug!(%session_id, lobby, "session media stopped");
}
