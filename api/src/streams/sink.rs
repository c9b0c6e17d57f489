//! A bot's side of the session's media: the stream participant joins the session core
//! as an audio endpoint like a SIP leg (same mixer, routing, browsers' Opus, DTMF), with
//! this sink in place of an RTP socket. The endpoint carries μ-law at 8 kHz, or 16-bit
//! linear PCM at 16 kHz for a wideband bot (`Format`). What the bot sends waits in a playout queue
//! (bots send faster than real time) and is handed to the core one 20 ms frame per
//! tick, so it plays at real time; `clear` empties the queue at once; a mark is
//! reported when the audio queued before it has been played.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use patchbay_conference::media::codec::AudioCodec;
use patchbay_conference::media::session::{HangupReason, LegMedia, LegSink, RtpView};
use tokio::sync::mpsc;

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

    /// Bytes of silence.
    fn silence(self) -> u8 {
        match self {
            Format::Mulaw => 0xff,
            Format::Wide => 0,
        }
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
        }
    }
}

/// Messages waiting for the bot's socket (10 s of frames): a bot slow to read loses
/// the newest audio, counted, never holds the session's media.
pub const OUT_QUEUE: usize = 500;
/// Marks waiting for their audio to play (more are dropped and counted).
pub const MAX_MARKS: usize = 1000;

/// What goes to the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToBot {
    /// 20 ms of what the participant hears (in the endpoint's `Format`).
    Media(Vec<u8>),
    /// A mark whose audio has been played (or cleared).
    Mark(String),
    /// A digit someone the participant hears pressed.
    Dtmf(char),
    /// The session's media let go of the participant (removed, deleted, session ended).
    Stop,
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

/// Counters of one stream (and of all, through `totals`).
#[derive(Debug, Default)]
pub struct SinkStats {
    pub dropped_in: AtomicU64,
    pub dropped_out: AtomicU64,
}

pub struct BotSink {
    playout: Mutex<Playout>,
    out: mpsc::Sender<ToBot>,
    pub stats: SinkStats,
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

impl BotSink {
    pub fn new(out: mpsc::Sender<ToBot>, format: Format) -> BotSink {
        BotSink {
            playout: Mutex::new(Playout::default()),
            out,
            stats: SinkStats::default(),
            ssrc: rand::random(),
            format,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Playout> {
        self.playout.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, m: ToBot) {
        if self.out.try_send(m).is_err() {
            self.stats.dropped_out.fetch_add(1, Relaxed);
        }
    }

    /// The bot's audio (in the endpoint's `Format`, whole samples), queued behind what
    /// it sent before.
    pub fn push_audio(&self, audio: &[u8]) {
        let mut p = self.lock();
        let max = MAX_QUEUED_MS * self.format.bytes_per_ms();
        let room = max.saturating_sub(p.queue.len());
        let take = audio.len().min(room);
        p.queue.extend(&audio[..take]);
        p.queued_total += take as u64;
        if take < audio.len() {
            self.stats
                .dropped_in
                .fetch_add((audio.len() - take) as u64, Relaxed);
        }
    }

    /// A mark: reported once everything queued before it has played.
    pub fn mark(&self, name: String) {
        let mut p = self.lock();
        if p.queue.is_empty() {
            drop(p);
            self.send(ToBot::Mark(name));
            return;
        }
        if p.marks.len() >= MAX_MARKS {
            drop(p);
            self.stats.dropped_in.fetch_add(1, Relaxed);
            return;
        }
        let at = p.queued_total;
        p.marks.push_back((at, name));
    }

    /// Drop what was not played yet; the pending marks are reported now (as Twilio
    /// does).
    pub fn clear(&self) {
        let marks: Vec<String> = {
            let mut p = self.lock();
            let cleared = p.queue.len() as u64;
            p.queue.clear();
            p.played += cleared;
            p.marks.drain(..).map(|(_, n)| n).collect()
        };
        for m in marks {
            self.send(ToBot::Mark(m));
        }
    }

    /// Milliseconds of audio waiting to be played.
    pub fn queued_ms(&self) -> u64 {
        (self.lock().queue.len() / self.format.bytes_per_ms()) as u64
    }
}

impl LegSink for BotSink {
    fn drain(&self, f: &mut dyn FnMut(RtpView<'_>)) {
        let mut buf = [0u8; 640];
        let n = self.format.frame_bytes();
        let frame = &mut buf[..n];
        let (view, marks) = {
            let mut p = self.lock();
            if p.queue.len() < n {
                return;
            }
            for b in frame.iter_mut() {
                *b = p.queue.pop_front().unwrap_or(self.format.silence());
            }
            p.played += n as u64;
            p.seq = p.seq.wrapping_add(1);
            // 20 ms in the RTP clock (8 kHz for μ-law, 16 kHz for L16).
            p.timestamp = p.timestamp.wrapping_add(self.format.rate() / 50);
            let mut marks = Vec::new();
            while p.marks.front().is_some_and(|(at, _)| *at <= p.played) {
                if let Some((_, n)) = p.marks.pop_front() {
                    marks.push(n);
                }
            }
            ((p.seq, p.timestamp), marks)
        };
        f(RtpView {
            ssrc: self.ssrc,
            seq: view.0,
            timestamp: view.1,
            payload_type: self.format.payload_type(),
            marker: false,
            arrival_us: patchbay_conference::media::session::unix_us(),
            payload: frame,
        });
        for m in marks {
            self.send(ToBot::Mark(m));
        }
    }

    fn send_audio(&self, payload: &[u8], _samples: u32) {
        self.send(ToBot::Media(payload.to_vec()));
    }

    fn send_event(&self, payload: &[u8], start: bool, _clock: u32) {
        if let (true, Some(d)) = (start, payload.first().and_then(|&e| digit(e))) {
            self.send(ToBot::Dtmf(d));
        }
    }

    fn hang_up(&self, _reason: HangupReason) {
        // Best effort even when the queue is full: the task also sees the leg go.
        let _ = self.out.try_send(ToBot::Stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &BotSink) -> Option<Vec<u8>> {
        let mut got = None;
        s.drain(&mut |v| got = Some(v.payload.to_vec()));
        got
    }

    #[test]
    fn audio_plays_a_frame_per_drain_and_marks_follow_their_audio() {
        let (tx, mut rx) = mpsc::channel(16);
        let s = BotSink::new(tx, Format::Mulaw);
        s.mark("before".into());
        s.push_audio(&[1u8; FRAME * 2]);
        s.mark("two frames".into());
        s.push_audio(&[2u8; FRAME]);
        s.mark("three".into());
        assert_eq!(rx.try_recv().ok(), Some(ToBot::Mark("before".into())));
        assert_eq!(drain(&s), Some(vec![1u8; FRAME]));
        assert!(rx.try_recv().is_err(), "not played yet");
        assert_eq!(drain(&s), Some(vec![1u8; FRAME]));
        assert_eq!(rx.try_recv().ok(), Some(ToBot::Mark("two frames".into())));
        assert_eq!(drain(&s), Some(vec![2u8; FRAME]));
        assert_eq!(rx.try_recv().ok(), Some(ToBot::Mark("three".into())));
        assert_eq!(drain(&s), None, "nothing queued: nothing played");
    }

    #[test]
    fn clear_drops_the_queue_at_once_and_reports_its_marks() {
        let (tx, mut rx) = mpsc::channel(16);
        let s = BotSink::new(tx, Format::Mulaw);
        s.push_audio(&[1u8; FRAME * 50]);
        s.mark("end".into());
        assert!(drain(&s).is_some());
        s.clear();
        assert_eq!(rx.try_recv().ok(), Some(ToBot::Mark("end".into())));
        assert_eq!(drain(&s), None, "the next tick plays nothing");
        assert_eq!(s.queued_ms(), 0);
    }

    #[test]
    fn the_queue_is_bounded_and_a_full_out_queue_drops() {
        let (tx, _rx) = mpsc::channel(1);
        let s = BotSink::new(tx, Format::Mulaw);
        s.push_audio(&vec![0u8; MAX_QUEUED_MS * 8 + 1000]);
        assert_eq!(s.queued_ms(), 60_000);
        assert_eq!(s.stats.dropped_in.load(Relaxed), 1000);
        for i in 0..MAX_MARKS + 5 {
            s.mark(i.to_string());
        }
        assert_eq!(
            s.stats.dropped_in.load(Relaxed),
            1005,
            "marks beyond the bound"
        );
        s.send_audio(&[0; FRAME], 160);
        s.send_audio(&[0; FRAME], 160);
        assert_eq!(s.stats.dropped_out.load(Relaxed), 1);
    }

    #[test]
    fn a_wide_endpoint_plays_20_ms_of_l16_at_16_khz() {
        let (tx, _rx) = mpsc::channel(16);
        let s = BotSink::new(tx, Format::Wide);
        s.push_audio(&[7u8; 640 + 320]);
        assert_eq!(s.queued_ms(), 30);
        let mut got = None;
        s.drain(&mut |v| got = Some((v.payload.len(), v.payload_type, v.timestamp)));
        let (len, pt, first) = got.expect("a frame");
        assert_eq!((len, pt), (640, 96));
        assert_eq!(drain(&s), None, "10 ms left: not a frame");
        s.push_audio(&[7u8; 320]);
        let mut next = 0;
        s.drain(&mut |v| next = v.timestamp);
        assert_eq!(next.wrapping_sub(first), 320, "20 ms at 16 kHz");
        assert_eq!(Format::Wide.leg_media().codec, AudioCodec::L16);
    }

    #[test]
    fn dtmf_starts_become_digits() {
        let (tx, mut rx) = mpsc::channel(16);
        let s = BotSink::new(tx, Format::Mulaw);
        s.send_event(&[5, 0x80, 0, 160], true, 8000);
        s.send_event(&[5, 0x80, 1, 64], false, 8000);
        s.send_event(&[11, 0, 0, 160], true, 8000);
        assert_eq!(rx.try_recv().ok(), Some(ToBot::Dtmf('5')));
        assert_eq!(rx.try_recv().ok(), Some(ToBot::Dtmf('#')));
        assert!(rx.try_recv().is_err());
    }
}
