//! The tokio shell around a [`SessionCore`]: it owns the channels, the legs' RTP
//! endpoints, the devices' signaling channels, the WebRTC socket and the clock, feeds
//! the core and carries out its outputs. No media logic lives here.
//!
//! Priorities: the end of the session, then due timers (the 20 ms tick is never
//! starved), then control inputs, then devices' signaling, then datagrams, each in
//! bounded batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::core::{Action, Control, Now, Output, SessionCore};
use super::hub::{HubInner, SessionHandle};
use super::ids::{ConnId, LegId};
use super::{HangupReason, LegSink, PublishAnswer, PublishError, SessionInput};
use crate::events::{DeviceNote, EventSink};
use crate::media::stats::MediaStats;
use crate::media::webrtc::{RouteChange, WebRtcIn, WebRtcTransport};

/// Inputs taken per wake-up before timers are looked at again.
const BATCH: usize = 64;

pub(super) struct Channels {
    pub(super) control: mpsc::Receiver<SessionInput>,
    pub(super) devices: mpsc::Receiver<SessionInput>,
    pub(super) datagrams: mpsc::Receiver<WebRtcIn>,
    pub(super) end: watch::Receiver<Option<HangupReason>>,
}

/// What the shell holds for the core's outputs.
struct Io {
    legs: HashMap<LegId, Arc<dyn LegSink>>,
    notes: HashMap<ConnId, mpsc::Sender<DeviceNote>>,
    replies: HashMap<u64, oneshot::Sender<Result<PublishAnswer, PublishError>>>,
    next_request: u64,
    transport: Option<Arc<WebRtcTransport>>,
    sink: Arc<dyn EventSink>,
    me: SessionHandle,
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

    /// Turn a control input into the core's, keeping its channels here.
    fn control(&mut self, core: &mut SessionCore, now: Now, input: SessionInput) {
        let (control, after) = match input {
            SessionInput::Join {
                leg,
                owner,
                call_id,
                media,
                sink,
            } => {
                self.legs.insert(leg, sink);
                self.count_legs();
                let c = Control::Join {
                    leg,
                    owner,
                    call_id,
                    media,
                };
                (c, None)
            }
            SessionInput::Update { leg, media } => (Control::Update { leg, media }, None),
            SessionInput::Leave { leg } => (Control::Leave { leg }, Some(Forget::Leg(leg))),
            SessionInput::DeviceJoin {
                key,
                conn,
                owner,
                protocol,
                prior,
                notify,
            } => {
                self.notes.insert(conn, notify);
                let c = Control::DeviceJoin {
                    key,
                    conn,
                    owner,
                    protocol,
                    prior,
                };
                (c, None)
            }
            SessionInput::Publish {
                key,
                conn,
                request,
                reply,
            } => {
                let id = self.next_request;
                self.next_request += 1;
                self.replies.insert(id, reply);
                let c = Control::Publish {
                    key,
                    conn,
                    request: id,
                    offer: request,
                };
                (c, None)
            }
            SessionInput::Receive {
                key,
                conn,
                endpoint,
                sdp,
                reply,
            } => {
                let id = self.next_request;
                self.next_request += 1;
                self.replies.insert(id, reply);
                let c = Control::Receive {
                    key,
                    conn,
                    request: id,
                    endpoint,
                    sdp,
                };
                (c, None)
            }
            SessionInput::Unpublish {
                key,
                conn,
                endpoint,
            } => (
                Control::Unpublish {
                    key,
                    conn,
                    endpoint,
                },
                None,
            ),
            SessionInput::Answer { key, conn, sdp } => (Control::Answer { key, conn, sdp }, None),
            SessionInput::DeviceGone { key, conn, left } => (
                Control::DeviceGone { key, conn, left },
                Some(Forget::Conn(conn)),
            ),
            SessionInput::Snapshot(s) => (Control::Snapshot(s), None),
            SessionInput::End(reason) => (Control::End(reason), None),
        };
        core.handle_control(now, control);
        self.outputs(core);
        match after {
            Some(Forget::Leg(leg)) => {
                self.legs.remove(&leg);
                self.count_legs();
            }
            Some(Forget::Conn(conn)) => {
                self.notes.remove(&conn);
            }
            None => {}
        }
    }

    /// Carry out everything the core wants done.
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
                    if let Some(s) = self.legs.get(&leg) {
                        s.send_audio(payload, samples);
                    }
                }
                Output::Action(a) => self.action(a),
            }
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
                if let Some(s) = self.legs.get(&leg) {
                    s.send_event(&payload, start, clock);
                }
            }
            Action::HangUp { leg, reason } => {
                if let Some(s) = self.legs.remove(&leg) {
                    s.hang_up(reason);
                }
                self.count_legs();
            }
            Action::Note { conn, note } => {
                let close = matches!(note, DeviceNote::Close(_));
                if let Some(tx) = self.notes.get(&conn) {
                    if tx.try_send(note).is_err() {
                        self.stats
                            .device_notes_dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if close {
                    self.notes.remove(&conn);
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
            self.legs.get(&leg).and_then(|s| s.quality())
        });
        self.me.view.send_replace(Arc::new(view));
    }

    /// Hand every leg's waiting RTP to the core (before a tick).
    fn drain_legs(&self, core: &mut SessionCore, now: Now) {
        for (&leg, sink) in &self.legs {
            sink.drain(&mut |packet| core.handle_rtp(now, leg, packet));
        }
    }
}

enum Forget {
    Leg(LegId),
    Conn(ConnId),
}

/// The session's task: runs until the session ends.
pub(super) async fn run(session_id: Uuid, mut ch: Channels, hub: Arc<HubInner>, me: SessionHandle) {
    let transport = hub.webrtc.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let sink = hub.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let local = transport.as_ref().map(|t| t.local_addr());
    let mut core = SessionCore::new(session_id, hub.alias.clone(), local, Now::system());
    let mut io = Io {
        legs: HashMap::new(),
        notes: HashMap::new(),
        replies: HashMap::new(),
        next_request: 1,
        transport,
        sink,
        me: me.clone(),
        stats: hub.stats.clone(),
    };
    let mut folded = Instant::now();
    let mut viewed = Instant::now();
    let mut datagrams_open = true;
    loop {
        let deadline = core.poll_timeout();
        // A control or device input changes what the view shows: take it at once.
        let mut controlled = false;
        tokio::select! {
            biased;
            changed = ch.end.changed() => {
                let reason = match changed {
                    Ok(()) => (*ch.end.borrow()).unwrap_or(HangupReason::SessionEnded),
                    Err(_) => HangupReason::Shutdown,
                };
                io.control(&mut core, Now::system(), SessionInput::End(reason));
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
    hub.remove(session_id, &me);
    // Inputs that raced the end: joins are hung up, devices closed, publishes refused.
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
    tracing::debug!(%session_id, "session media stopped");
}
