//! Twilio Media Streams, bidirectional, as Twilio documents its messages and bot
//! frameworks (Pipecat's `TwilioFrameSerializer`, Vapi, LiveKit's connector) read them:
//! JSON text frames; audio as base64 μ-law at 8 kHz.

use std::fmt::Write as _;

use base64::Engine;
use serde_json::{json, Value};

use super::sink::ToBot;

/// The identities a stream's messages carry.
#[derive(Debug, Clone)]
pub struct Ids {
    pub stream_sid: String,
    pub call_sid: String,
    pub account_sid: String,
}

/// What the bot asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum FromBot {
    /// μ-law audio to play.
    Media(Vec<u8>),
    Mark(String),
    Clear,
    /// A message this protocol does not act on (ignored).
    Other,
}

/// Builds the messages to the bot, numbering them.
pub struct Writer {
    ids: Ids,
    sequence: u64,
    chunk: u64,
    /// Milliseconds of audio sent since the start.
    timestamp_ms: u64,
}

impl Writer {
    pub fn new(ids: Ids) -> Writer {
        Writer {
            ids,
            sequence: 0,
            chunk: 0,
            timestamp_ms: 0,
        }
    }

    fn next(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    /// `connected` then `start`.
    pub fn opening(&mut self, custom: &Value) -> Vec<String> {
        let connected = json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
        let start = json!({
            "event": "start",
            "sequenceNumber": self.next(),
            "start": {
                "accountSid": self.ids.account_sid,
                "streamSid": self.ids.stream_sid,
                "callSid": self.ids.call_sid,
                "tracks": ["inbound"],
                "customParameters": custom,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.ids.stream_sid,
        });
        vec![connected.to_string(), start.to_string()]
    }

    pub fn message(&mut self, m: &ToBot<'_>) -> String {
        if let ToBot::Media(ulaw) = *m {
            return self.media(ulaw);
        }
        let sequence = self.next();
        let sid = &self.ids.stream_sid;
        match *m {
            ToBot::Mark(name) => json!({
                "event": "mark",
                "sequenceNumber": sequence,
                "streamSid": sid,
                "mark": {"name": name},
            }),
            ToBot::Dtmf(d) => json!({
                "event": "dtmf",
                "streamSid": sid,
                "sequenceNumber": sequence,
                "dtmf": {"track": "inbound_track", "digit": d.to_string()},
            }),
            ToBot::Stop | ToBot::Media(_) => json!({
                "event": "stop",
                "sequenceNumber": sequence,
                "streamSid": sid,
                "stop": {"accountSid": self.ids.account_sid, "callSid": self.ids.call_sid},
            }),
        }
        .to_string()
    }

    /// 20 ms of what the participant hears.
    fn media(&mut self, ulaw: &[u8]) -> String {
        self.chunk += 1;
        self.sequence += 1;
        let at = self.timestamp_ms;
        self.timestamp_ms += ulaw.len() as u64 / 8;
        // Written out rather than through a JSON tree: 50 of these a second per
        // bot. Every field is digits or base64 but the stream's id, which is
        // "MZ" and hex (`Ids`).
        let mut s = String::with_capacity(200 + ulaw.len() * 4 / 3);
        let _ = write!(
            s,
            r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":""#,
            self.sequence, self.chunk, at
        );
        base64::engine::general_purpose::STANDARD.encode_string(ulaw, &mut s);
        let _ = write!(s, r#""}},"streamSid":"{}"}}"#, self.ids.stream_sid);
        s
    }
}

/// A text frame from the bot. Err: not a message of this protocol (the stream goes on;
/// the error is counted and logged without the frame's content).
pub fn parse(text: &str) -> Result<FromBot, &'static str> {
    let v: Value = serde_json::from_str(text).map_err(|_| "not JSON")?;
    match v["event"].as_str() {
        Some("media") => {
            let payload = v["media"]["payload"]
                .as_str()
                .ok_or("media without a payload")?;
            base64::engine::general_purpose::STANDARD
                .decode(payload)
                .map(FromBot::Media)
                .map_err(|_| "media payload is not base64")
        }
        Some("mark") => mark(&v["mark"]["name"]),
        Some("clear") => Ok(FromBot::Clear),
        Some(_) => Ok(FromBot::Other),
        None => Err("no event"),
    }
}

/// A mark's name (at most 256 bytes).
pub(super) fn mark(name: &Value) -> Result<FromBot, &'static str> {
    name.as_str()
        .filter(|n| n.len() <= 256)
        .map(|n| FromBot::Mark(n.to_string()))
        .ok_or("mark without a name (at most 256 bytes)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> Writer {
        Writer::new(Ids {
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            account_sid: "acc".into(),
        })
    }

    #[test]
    fn messages_as_twilio_documents_them() {
        let mut w = writer();
        let open = w.opening(&json!({"lang": "en"}));
        let connected: Value = serde_json::from_str(&open[0]).unwrap();
        assert_eq!(connected["event"], "connected");
        let start: Value = serde_json::from_str(&open[1]).unwrap();
        assert_eq!(start["start"]["streamSid"], "MZ1");
        assert_eq!(start["start"]["callSid"], "CA1");
        assert_eq!(start["start"]["customParameters"]["lang"], "en");
        assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
        let media: Value = serde_json::from_str(&w.message(&ToBot::Media(&[0xff; 160]))).unwrap();
        assert_eq!(media["sequenceNumber"], "2");
        assert_eq!(media["media"]["chunk"], "1");
        assert_eq!(media["media"]["timestamp"], "0");
        let again: Value = serde_json::from_str(&w.message(&ToBot::Media(&[0xff; 160]))).unwrap();
        assert_eq!(again["media"]["timestamp"], "20");
        let payload = again["media"]["payload"].as_str().unwrap();
        assert_eq!(
            parse(&json!({"event": "media", "media": {"payload": payload}}).to_string()),
            Ok(FromBot::Media(vec![0xff; 160]))
        );
        let dtmf: Value = serde_json::from_str(&w.message(&ToBot::Dtmf('7'))).unwrap();
        assert_eq!(dtmf["dtmf"]["digit"], "7");
        let stop: Value = serde_json::from_str(&w.message(&ToBot::Stop)).unwrap();
        assert_eq!(stop["stop"]["callSid"], "CA1");
    }

    #[test]
    fn the_bots_messages() {
        assert_eq!(
            parse(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m1"}}"#),
            Ok(FromBot::Mark("m1".into()))
        );
        assert_eq!(
            parse(r#"{"event":"clear","streamSid":"MZ1"}"#),
            Ok(FromBot::Clear)
        );
        assert_eq!(parse(r#"{"event":"something"}"#), Ok(FromBot::Other));
        assert!(parse("{").is_err());
        assert!(parse(r#"{"event":"media","media":{"payload":"***"}}"#).is_err());
    }
}
