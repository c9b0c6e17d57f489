//! A bot's side of the session's media: the stream participant joins the session core
//! as an audio endpoint like a SIP leg (same mixer, routing, browsers' Opus, DTMF), with
//! this sink in place of an RTP socket. The endpoint carries μ-law at 8 kHz, or 16-bit
//! linear PCM at 16 kHz for a wideband bot (`Format`).
//!
//! The sink holds the bot's WebSocket (`conn`) and the session's media task moves its
//! bytes on the 20 ms tick, as it reads and writes a SIP leg's RTP: before a tick it
//! reads what the bot sent (non-blocking, no system call while nothing came), after it
//! writes what the participant hears. What the bot sends waits in a playout queue (bots
//! send faster than real time) and is handed to the core one 20 ms frame per tick, so
//! it plays at real time; `clear` empties the queue at once; a mark is reported when
//! the audio queued before it has been played. When the connection ends the stream's
//! task is told (`ended`) and connects again or lets the participant go.

use std::collections::VecDeque;
use std::sync::Mutex;

use patchbay_conference::media::codec::AudioCodec;
use patchbay_conference::media::session::{HangupReason, LegMedia, LegSink, RtpView, StreamState};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Error, Message};

use super::conn::{would_block, Ws};
use super::twilio::FromBot;
use super::wire::Wire;

/// μ-law bytes of one 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;
/// The most a bot may queue ahead of playout (what it sends beyond is dropped and
/// counted, and the oldest audio keeps playing).
pub const MAX_QUEUED_MS: usize = 60_000;

/// What the bot's endpoint carries in the session core: what the bot hears and says,
/// in RTP payloads of 20 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// μ-law at 8 kHz: Twilio's and Bandwidth's streams, raw at 8 kHz.
    Mulaw,
    /// 16-bit linear PCM at 16 kHz, big-endian (RTP's L16): raw at 16 or 24 kHz.
    Wide,
}

impl Format {
    /// The payload type of the endpoint's frames inside the core (never on a wire).
    fn payload_type(self) -> u8 {
        match self {
            Format::Mulaw => 0,
            Format::Wide => 96,
        }
    }

    pub fn rate(self) -> u32 {
        match self {
            Format::Mulaw => 8000,
            Format::Wide => 16000,
        }
    }

    fn bytes_per_ms(self) -> usize {
        match self {
            Format::Mulaw => 8,
            Format::Wide => 32,
        }
    }

    fn frame_bytes(self) -> usize {
        self.bytes_per_ms() * 20
    }

    /// The leg media the core runs the endpoint with (RFC 4733 events at 101).
    pub fn leg_media(self) -> LegMedia {
        LegMedia {
            codec: match self {
                Format::Mulaw => AudioCodec::Pcmu,
                Format::Wide => AudioCodec::L16,
            },
            payload_type: self.payload_type(),
            event_payload_type: Some(101),
            event_clock: 8000,
            ptime_ms: 20,
            held: false,
        }
    }
}

/// Marks waiting for their audio to play (more are dropped and counted).
pub const MAX_MARKS: usize = 1000;
/// Messages read from a bot per tick at most (the rest wait for the next tick): a bot
/// sending faster than real time is heard in order without holding the session's media.
const MAX_READS_PER_TICK: usize = 128;

/// What goes to the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToBot<'a> {
    /// 20 ms of what the participant hears (in the endpoint's `Format`).
    Media(&'a [u8]),
    /// A mark whose audio has been played (or cleared).
    Mark(&'a str),
    /// A digit someone the participant hears pressed.
    Dtmf(char),
    /// The session's media let go of the participant (removed, deleted, session ended).
    Stop,
}

/// The `reason` of a stream participant's `onLeave` when its bot closed the stream.
pub const BOT_CLOSED: &str = "the bot closed the stream";
/// The `reason` of its `onLeave` when the bot's WebSocket dropped and did not come back
/// within `stream_retry_for`.
pub const BOT_GONE: &str =
    "the bot's WebSocket dropped and did not come back within stream_retry_for";

/// How a connection to the bot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The participant left the session's media (removed, deleted, session ended): the
    /// bot was sent `stop`.
    Stopped,
    /// The bot closed the WebSocket (a close frame): it is done, the participant leaves.
    Closed,
    /// The WebSocket dropped without a close: connected again.
    Dropped,
}

#[derive(Default)]
struct Playout {
    queue: VecDeque<u8>,
    /// Marks with the count of bytes played when they are reached.
    marks: VecDeque<(u64, String)>,
    /// Bytes queued so far (played, queued or cleared), and played so far.
    queued_total: u64,
    played: u64,
    seq: u16,
    timestamp: u32,
}

/// The counters a stream adds to (`/metrics`).
#[derive(Clone, Default)]
pub struct Counters {
    /// Audio bytes beyond the playout bound, marks beyond theirs, messages beyond what
    /// may wait for a bot slow to read.
    pub dropped: Counter,
    /// Messages from the bot that are not its protocol's.
    pub invalid: Counter,
}

struct Inner {
    playout: Playout,
    wire: Wire,
    ws: Option<Ws>,
    ended: Option<Ended>,
    /// Why the participant leaves the session's media, when it does (`onLeave`).
    leave: Option<&'static str>,
}

pub struct BotSink {
    inner: Mutex<Inner>,
    /// Told when the connection ended (see `take_ended`).
    pub ended: Notify,
    counters: Counters,
    ssrc: u32,
    format: Format,
}

fn digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

impl Inner {
    /// Queue a message for the bot (written by the next flush). Nothing is sent while
    /// no bot is connected.
    fn send(&mut self, counters: &Counters, m: ToBot<'_>) {
        let Some(ws) = self.ws.as_mut() else {
            return;
        };
        let Some(msg) = self.wire.message(&m) else {
            return;
        };
        match ws.write(msg) {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(Error::WriteBufferFull(_)) => {
                counters.dropped.inc();
            }
            Err(_) => self.end(Ended::Dropped),
        }
    }

    /// Write what waits, as far as the socket takes it now.
    fn flush(&mut self) {
        let Some(ws) = self.ws.as_mut() else {
            return;
        };
        match ws.flush() {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(_) => self.end(Ended::Dropped),
        }
    }

    /// The connection ended; the first reason counts. The socket is let go at once
    /// (after a last try to write, e.g. the reply to the bot's close), but for `Stopped`:
    /// the stream's task closes that one.
    fn end(&mut self, why: Ended) {
        if self.ended.is_none() {
            self.ended = Some(why);
        }
        if why == Ended::Closed {
            self.leave = Some(BOT_CLOSED);
        }
        if why != Ended::Stopped {
            if let Some(mut ws) = self.ws.take() {
                let _ = ws.flush();
            }
        }
    }

    fn push_audio(&mut self, counters: &Counters, format: Format, audio: &[u8]) {
        let p = &mut self.playout;
        let max = MAX_QUEUED_MS * format.bytes_per_ms();
        let room = max.saturating_sub(p.queue.len());
        let take = audio.len().min(room);
        p.queue.extend(&audio[..take]);
        p.queued_total += take as u64;
        if take < audio.len() {
            counters.dropped.inc_by((audio.len() - take) as u64);
        }
    }

    fn mark(&mut self, counters: &Counters, name: String) {
        if self.playout.queue.is_empty() {
            self.send(counters, ToBot::Mark(&name));
            return;
        }
        if self.playout.marks.len() >= MAX_MARKS {
            counters.dropped.inc();
            return;
        }
        let at = self.playout.queued_total;
        self.playout.marks.push_back((at, name));
    }

    fn clear(&mut self, counters: &Counters) {
        let p = &mut self.playout;
        let cleared = p.queue.len() as u64;
        p.queue.clear();
        p.played += cleared;
        let marks: Vec<String> = p.marks.drain(..).map(|(_, n)| n).collect();
        for m in marks {
            self.send(counters, ToBot::Mark(&m));
        }
    }

    /// What the bot sent since the last tick (at most `MAX_READS_PER_TICK` messages).
    fn read(&mut self, counters: &Counters, format: Format) {
        if let Some(ws) = self.ws.as_mut() {
            super::conn::tick(ws);
        }
        for _ in 0..MAX_READS_PER_TICK {
            let Some(ws) = self.ws.as_mut() else {
                return;
            };
            let m = match ws.read() {
                Ok(Message::Close(_)) => return self.end(Ended::Closed),
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => m,
                Ok(_) => continue,
                Err(e) if would_block(&e) => return,
                Err(_) => return self.end(Ended::Dropped),
            };
            match self.wire.parse(&m) {
                Ok(FromBot::Media(audio)) => self.push_audio(counters, format, &audio),
                Ok(FromBot::Mark(name)) => self.mark(counters, name),
                Ok(FromBot::Clear) => self.clear(counters),
                Ok(FromBot::Other) => {}
                Err(why) => {
                    counters.invalid.inc();
                    tracing::debug!(why, "a message from the bot was ignored");
                }
            }
        }
    }
}

impl BotSink {
    pub fn new(wire: Wire, counters: Counters) -> BotSink {
        let format = wire.format();
        BotSink {
            inner: Mutex::new(Inner {
                playout: Playout::default(),
                wire,
                ws: None,
                ended: None,
                leave: None,
            }),
            ended: Notify::new(),
            counters,
            ssrc: rand::random(),
            format,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tell the stream's task when an entry point ended the connection.
    fn settle(&self, inner: &Inner, before: Option<Ended>) {
        if before.is_none() && inner.ended.is_some() {
            self.ended.notify_one();
        }
    }

    /// The protocol's opening messages (for a new connection).
    pub fn opening(&self, custom: &serde_json::Value) -> Vec<Message> {
        self.lock()
            .wire
            .opening(custom)
            .into_iter()
            .map(Message::text)
            .collect()
    }

    /// The message for `m` in the stream's protocol (None: it has none).
    pub fn message(&self, m: ToBot<'_>) -> Option<Message> {
        self.lock().wire.message(&m)
    }

    /// Hand a connected (and greeted) WebSocket to the session's media.
    pub fn attach(&self, ws: Ws) {
        let mut inner = self.lock();
        inner.ws = Some(ws);
        inner.ended = None;
    }

    /// Take the WebSocket back (to close it).
    pub fn detach(&self) -> Option<Ws> {
        self.lock().ws.take()
    }

    /// Why the connection ended, once it has.
    pub fn take_ended(&self) -> Option<Ended> {
        self.lock().ended.take()
    }

    /// The bot is given up: the participant's `onLeave` says why.
    pub fn set_leave_reason(&self, reason: &'static str) {
        self.lock().leave = Some(reason);
    }

    /// Whether a bot is connected.
    pub fn connected(&self) -> bool {
        self.lock().ws.is_some()
    }

    /// Drop what was not played yet; the pending marks are reported now (as Twilio
    /// does).
    pub fn clear(&self) {
        let mut inner = self.lock();
        let before = inner.ended;
        inner.clear(&self.counters);
        inner.flush();
        self.settle(&inner, before);
    }

    /// What the endpoint carries in the session core.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Milliseconds of audio waiting to be played.
    pub fn queued_ms(&self) -> u64 {
        (self.lock().playout.queue.len() / self.format.bytes_per_ms()) as u64
    }
}

impl LegSink for BotSink {
    fn drain(&self, f: &mut dyn FnMut(RtpView<'_>)) {
        let mut buf = [0u8; 640];
        let n = self.format.frame_bytes();
        let frame = &mut buf[..n];
        let view = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let before = inner.ended;
            inner.read(&self.counters, self.format);
            let view = if inner.playout.queue.len() >= n {
                let p = &mut inner.playout;
                for (b, q) in frame.iter_mut().zip(p.queue.drain(..n)) {
                    *b = q;
                }
                p.played += n as u64;
                p.seq = p.seq.wrapping_add(1);
                // 20 ms in the RTP clock (8 kHz for μ-law, 16 kHz for L16).
                p.timestamp = p.timestamp.wrapping_add(self.format.rate() / 50);
                let played = p.played;
                let mut reached = Vec::new();
                while let Some((_, name)) = p.marks.pop_front_if(|(at, _)| *at <= played) {
                    reached.push(name);
                }
                for name in reached {
                    inner.send(&self.counters, ToBot::Mark(&name));
                }
                Some((inner.playout.seq, inner.playout.timestamp))
            } else {
                None
            };
            inner.flush();
            self.settle(inner, before);
            view
        };
        if let Some((seq, timestamp)) = view {
            f(RtpView {
                ssrc: self.ssrc,
                seq,
                timestamp,
                payload_type: self.format.payload_type(),
                marker: false,
                arrival_us: patchbay_conference::media::session::unix_us(),
                payload: frame,
            });
        }
    }

    fn send_audio(&self, payload: &[u8], _samples: u32) {
        let mut inner = self.lock();
        let before = inner.ended;
        inner.send(&self.counters, ToBot::Media(payload));
        inner.flush();
        self.settle(&inner, before);
    }

    fn send_event(&self, payload: &[u8], start: bool, _clock: u32) {
        if let (true, Some(d)) = (start, payload.first().and_then(|&e| digit(e))) {
            let mut inner = self.lock();
            let before = inner.ended;
            inner.send(&self.counters, ToBot::Dtmf(d));
            inner.flush();
            self.settle(&inner, before);
        }
    }

    fn stream(&self) -> Option<StreamState> {
        let inner = self.lock();
        Some(StreamState {
            connected: inner.ws.is_some(),
            buffered_ms: (inner.playout.queue.len() / self.format.bytes_per_ms()) as u64,
        })
    }

    fn leave_reason(&self) -> Option<&'static str> {
        self.lock().leave
    }

    fn hang_up(&self, _reason: HangupReason) {
        let mut inner = self.lock();
        let before = inner.ended;
        inner.send(&self.counters, ToBot::Stop);
        inner.flush();
        inner.end(Ended::Stopped);
        self.settle(&inner, before);
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;

/// A Twilio sink for tests (stream "MZ1" of call "CA1").
#[cfg(test)]
pub(super) fn twilio_for_tests() -> BotSink {
    let ids = super::twilio::Ids {
        stream_sid: "MZ1".into(),
        call_sid: "CA1".into(),
        account_sid: "AC1".into(),
    };
    BotSink::new(
        Wire::Twilio(super::twilio::Writer::new(ids)),
        Counters::default(),
    )
}
