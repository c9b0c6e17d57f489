//! The sink against a bot on an in-memory socket (tungstenite on both ends).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::WebSocket;

use super::*;
use crate::streams::{conn, raw, twilio};

/// One direction of an in-memory socket, with room for `cap` bytes.
#[derive(Clone)]
struct Half {
    buf: Arc<Mutex<VecDeque<u8>>>,
    cap: Arc<std::sync::atomic::AtomicUsize>,
    reset: Arc<AtomicBool>,
}

impl Half {
    fn new() -> Half {
        Half {
            buf: Default::default(),
            cap: Arc::new(usize::MAX.into()),
            reset: Default::default(),
        }
    }
}

/// One end of the socket: reads one half, writes the other; like a non-blocking
/// socket it would block rather than wait.
struct End {
    rx: Half,
    tx: Half,
}

impl Read for End {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.rx.reset.load(Relaxed) {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let mut b = self.rx.buf.lock().unwrap();
        if b.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(b.len());
        for (o, x) in out.iter_mut().zip(b.drain(..n)) {
            *o = x;
        }
        Ok(n)
    }
}

impl conn::Stream for End {}

impl Write for End {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut b = self.tx.buf.lock().unwrap();
        let room = self.tx.cap.load(Relaxed).saturating_sub(b.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(data.len());
        b.extend(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The bot's side of a stream attached to a sink.
struct Bot {
    ws: WebSocket<End>,
    /// What Patchbay writes (its room can be cut to play a bot that does not read).
    to_bot: Half,
    to_us: Half,
}

impl Bot {
    fn send(&mut self, m: Message) {
        self.ws.send(m).unwrap();
    }
    fn json(&mut self, v: Value) {
        self.send(Message::text(v.to_string()));
    }
    fn media(&mut self, ulaw: &[u8]) {
        let payload = base64::engine::general_purpose::STANDARD.encode(ulaw);
        self.json(json!({"event": "media", "media": {"payload": payload}}));
    }
    fn mark(&mut self, name: &str) {
        self.json(json!({"event": "mark", "mark": {"name": name}}));
    }
    /// Every message received so far.
    fn received(&mut self) -> Vec<Message> {
        let mut got = Vec::new();
        loop {
            match self.ws.read() {
                Ok(m) => got.push(m),
                Err(e) if conn::would_block(&e) => return got,
                Err(e) => panic!("{e}"),
            }
        }
    }
    /// The events received so far (text messages' `event`).
    fn events(&mut self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter_map(|m| serde_json::from_str(m.to_text().ok()?).ok())
            .collect()
    }
}

fn ids() -> twilio::Ids {
    twilio::Ids {
        stream_sid: "MZ1".into(),
        call_sid: "CA1".into(),
        account_sid: "AC1".into(),
    }
}

fn attached(wire: Wire) -> (BotSink, Bot, Counters) {
    let (to_bot, to_us) = (Half::new(), Half::new());
    let ours = End {
        rx: to_us.clone(),
        tx: to_bot.clone(),
    };
    let theirs = End {
        rx: to_bot.clone(),
        tx: to_us.clone(),
    };
    let counters = Counters::default();
    let sink = BotSink::new(wire, counters.clone());
    sink.attach(conn::over(Box::new(ours)));
    let ws = WebSocket::from_raw_socket(theirs, Role::Server, None);
    (sink, Bot { ws, to_bot, to_us }, counters)
}

fn twilio_sink() -> (BotSink, Bot, Counters) {
    attached(Wire::Twilio(twilio::Writer::new(ids())))
}

fn drain(s: &BotSink) -> Option<Vec<u8>> {
    let mut got = None;
    s.drain(&mut |v| got = Some(v.payload.to_vec()));
    got
}

fn marks(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["event"] == "mark")
        .filter_map(|e| e["mark"]["name"].as_str())
        .collect()
}

#[test]
fn audio_plays_a_frame_per_drain_and_marks_follow_their_audio() {
    let (s, mut bot, _) = twilio_sink();
    bot.mark("before");
    bot.media(&[1u8; FRAME * 2]);
    bot.mark("two frames");
    bot.media(&[2u8; FRAME]);
    bot.mark("three");
    assert_eq!(
        drain(&s),
        Some(vec![1u8; FRAME]),
        "read and played at the tick"
    );
    assert_eq!(
        marks(&bot.events()),
        ["before"],
        "nothing was queued before it"
    );
    assert_eq!(drain(&s), Some(vec![1u8; FRAME]));
    assert_eq!(marks(&bot.events()), ["two frames"]);
    assert_eq!(drain(&s), Some(vec![2u8; FRAME]));
    assert_eq!(marks(&bot.events()), ["three"]);
    assert_eq!(drain(&s), None, "nothing queued: nothing played");
}

#[test]
fn clear_drops_the_queue_at_once_and_reports_its_marks() {
    let (s, mut bot, _) = twilio_sink();
    bot.media(&[1u8; FRAME * 50]);
    bot.mark("end");
    assert!(drain(&s).is_some());
    bot.json(json!({"event": "clear", "streamSid": "MZ1"}));
    assert_eq!(drain(&s), None, "the next tick plays nothing");
    assert_eq!(marks(&bot.events()), ["end"]);
    assert_eq!(s.queued_ms(), 0);
}

#[test]
fn what_the_participant_hears_and_dtmf_reach_the_bot_in_order() {
    let (s, mut bot, _) = twilio_sink();
    s.send_audio(&[0x55; FRAME], 160);
    s.send_event(&[5, 0x80, 0, 160], true, 8000);
    s.send_event(&[5, 0x80, 1, 64], false, 8000);
    s.send_audio(&[0x66; FRAME], 160);
    s.send_event(&[11, 0, 0, 160], true, 8000);
    let events = bot.events();
    let kinds: Vec<_> = events.iter().map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        [Some("media"), Some("dtmf"), Some("media"), Some("dtmf")]
    );
    assert_eq!(events[1]["dtmf"]["digit"], "5");
    assert_eq!(events[3]["dtmf"]["digit"], "#");
    let payload = events[2]["media"]["payload"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(payload)
            .unwrap(),
        vec![0x66; FRAME]
    );
    assert_eq!(events[2]["media"]["timestamp"], "20");
    assert_eq!(events[2]["streamSid"], "MZ1");
}

#[test]
fn the_queues_are_bounded_and_what_is_beyond_is_counted() {
    let (s, mut bot, counters) = twilio_sink();
    bot.media(&vec![0u8; MAX_QUEUED_MS * 8 + 1000]);
    drain(&s);
    assert_eq!(s.queued_ms(), 60_000 - 20);
    assert_eq!(counters.dropped.get(), 1000);
    for i in 0..MAX_MARKS + 5 {
        bot.mark(&i.to_string());
    }
    for _ in 0..(MAX_MARKS + 5) / MAX_READS_PER_TICK + 1 {
        drain(&s);
    }
    assert_eq!(counters.dropped.get(), 1005, "marks beyond the bound");
    // A bot that does not read: what would wait beyond MAX_UNSENT is dropped.
    bot.to_bot.cap.store(0, Relaxed);
    let frames = conn::MAX_UNSENT / 300 + 10;
    for _ in 0..frames {
        s.send_audio(&[0; FRAME], 160);
    }
    assert!(counters.dropped.get() > 1005, "frames beyond the bound");
    assert!(s.connected(), "a slow bot stays connected");
    assert!(counters.dropped.get() < 1005 + frames as u64);
}

#[test]
fn a_wide_endpoint_plays_20_ms_of_l16_at_16_khz() {
    let (s, mut bot, _) = attached(Wire::Raw(Box::new(raw::Wire::new(
        ids(),
        "p".into(),
        16000,
    ))));
    assert_eq!(s.format(), Format::Wide);
    bot.send(Message::binary(vec![7u8; 640 + 320]));
    let mut got = None;
    s.drain(&mut |v| got = Some((v.payload.len(), v.payload_type, v.timestamp)));
    let (len, pt, first) = got.expect("a frame");
    assert_eq!((len, pt), (640, 96));
    assert_eq!(drain(&s), None, "10 ms left: not a frame");
    bot.send(Message::binary(vec![7u8; 320]));
    let mut next = 0;
    s.drain(&mut |v| next = v.timestamp);
    assert_eq!(next.wrapping_sub(first), 320, "20 ms at 16 kHz");
    assert_eq!(Format::Wide.leg_media().codec, AudioCodec::L16);
    s.send_audio(&[0; 640], 320);
    let got = bot.received();
    assert!(matches!(&got[..], [Message::Binary(b)] if b.len() == 640));
}

#[test]
fn the_end_of_a_connection_is_told_once_with_its_reason() {
    let (s, mut bot, counters) = twilio_sink();
    bot.send(Message::text("not json"));
    drain(&s);
    assert_eq!(counters.invalid.get(), 1);
    assert_eq!(s.take_ended(), None);
    bot.ws.close(None).unwrap();
    drain(&s);
    assert_eq!(s.take_ended(), Some(Ended::Closed));
    assert!(!s.connected(), "the socket is let go");
    assert_eq!(s.leave_reason(), Some(BOT_CLOSED), "onLeave says why");
    s.send_audio(&[0; FRAME], 160);
    assert_eq!(s.take_ended(), None, "told once");

    let (s, bot, _) = twilio_sink();
    bot.to_us.reset.store(true, Relaxed);
    drain(&s);
    assert_eq!(s.take_ended(), Some(Ended::Dropped));
    assert_eq!(
        s.leave_reason(),
        None,
        "connected again, or given up by the task"
    );
    s.set_leave_reason(BOT_GONE);
    assert_eq!(s.leave_reason(), Some(BOT_GONE));

    let (s, mut bot, _) = twilio_sink();
    s.hang_up(HangupReason::Removed);
    assert_eq!(s.take_ended(), Some(Ended::Stopped));
    assert_eq!(bot.events()[0]["event"], "stop");
    assert!(s.detach().is_some(), "the stream's task closes it");
}
