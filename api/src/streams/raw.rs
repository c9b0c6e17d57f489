//! `raw`: audio as binary frames of 16-bit little-endian PCM at the stream's
//! `sampleRate`, both ways; control as JSON text frames (Patchbay's own, documented in
//! the README): to the bot `start` (`streamId`, `participantId`, `sampleRate`,
//! `customParameters`), `mark` (`name`), `dtmf` (`digit`), `stop`; from the bot `mark`
//! and `clear`.
//!
//! At 8 kHz the bot's endpoint is μ-law like the other protocols'; at 16 and 24 kHz
//! it is wideband (L16 at 16 kHz in the session core: what browsers and G.722 callers
//! say reaches the bot unnarrowed, and the bot is heard in wideband).

use patchbay_conference::media::g711;
use serde_json::{json, Value};

use super::bandwidth;
use super::rate::Converter;
use super::sink::{Format, ToBot};
use super::twilio::{FromBot, Ids};

/// One message to the bot.
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

pub struct Wire {
    ids: Ids,
    participant_id: String,
    rate: u32,
    format: Format,
    /// The endpoint's rate to the stream's, and back (None: no converter for the rate).
    up: Option<Converter>,
    down: Option<Converter>,
    pcm: Vec<i16>,
    converted: Vec<i16>,
    /// At 8 kHz: the bot's PCM to the μ-law played.
    narrow: bandwidth::Reader,
}

impl Wire {
    pub fn new(ids: Ids, participant_id: String, rate: u32) -> Wire {
        let format = if rate == 8000 {
            Format::Mulaw
        } else {
            Format::Wide
        };
        Wire {
            ids,
            participant_id,
            rate,
            format,
            up: Converter::new(format.rate(), rate),
            down: Converter::new(rate, format.rate()),
            pcm: Vec::with_capacity(rate as usize / 50),
            converted: Vec::with_capacity(rate as usize / 50),
            narrow: bandwidth::Reader::default(),
        }
    }

    /// What the bot's endpoint carries in the session core.
    pub fn format(&self) -> Format {
        self.format
    }

    pub fn opening(&mut self, custom: &Value) -> Vec<String> {
        vec![json!({
            "event": "start",
            "streamId": self.ids.stream_sid,
            "participantId": self.participant_id,
            "sampleRate": self.rate,
            "encoding": "pcm_s16le",
            "customParameters": custom,
        })
        .to_string()]
    }

    pub fn message(&mut self, m: &ToBot<'_>) -> Frame {
        match m {
            ToBot::Media(payload) => {
                self.pcm.clear();
                match self.format {
                    Format::Mulaw => self
                        .pcm
                        .extend(payload.iter().map(|&b| g711::ulaw_decode(b))),
                    Format::Wide => self.pcm.extend(
                        payload
                            .chunks_exact(2)
                            .map(|c| i16::from_be_bytes([c[0], c[1]])),
                    ),
                }
                self.converted.clear();
                if let Some(up) = self.up.as_mut() {
                    up.push(&self.pcm, &mut self.converted);
                }
                Frame::Binary(
                    self.converted
                        .iter()
                        .flat_map(|s| s.to_le_bytes())
                        .collect(),
                )
            }
            ToBot::Mark(name) => Frame::Text(json!({"event": "mark", "name": name}).to_string()),
            ToBot::Dtmf(d) => {
                Frame::Text(json!({"event": "dtmf", "digit": d.to_string()}).to_string())
            }
            ToBot::Stop => Frame::Text(json!({"event": "stop"}).to_string()),
        }
    }

    /// A binary frame: the bot's audio at the stream's rate, to the endpoint's format.
    pub fn audio(&mut self, bytes: &[u8]) -> Result<FromBot, &'static str> {
        if !bytes.len().is_multiple_of(2) {
            return Err("an audio frame of an odd number of bytes");
        }
        if self.format == Format::Mulaw {
            return self.narrow.pcm(bytes, self.rate).map(FromBot::Media);
        }
        let down = self.down.as_mut().ok_or("no converter for this rate")?;
        self.converted.clear();
        down.push_le(bytes, &mut self.converted);
        Ok(FromBot::Media(
            self.converted
                .iter()
                .flat_map(|s| s.to_be_bytes())
                .collect(),
        ))
    }

    /// A text frame: control.
    pub fn parse(&self, text: &str) -> Result<FromBot, &'static str> {
        let v: Value = serde_json::from_str(text).map_err(|_| "not JSON")?;
        match v["event"].as_str() {
            Some("mark") => super::twilio::mark(&v["name"]),
            Some("clear") => Ok(FromBot::Clear),
            Some(_) => Ok(FromBot::Other),
            None => Err("no event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(rate: u32) -> Wire {
        let ids = Ids {
            stream_sid: "s".into(),
            call_sid: "c".into(),
            account_sid: "a".into(),
        };
        Wire::new(ids, "p".into(), rate)
    }

    #[test]
    fn frames_are_pcm_at_the_streams_rate_both_ways() {
        let mut w = wire(16000);
        assert_eq!(w.format(), Format::Wide);
        let start: Value = serde_json::from_str(&w.opening(&json!({}))[0]).unwrap();
        assert_eq!(start["sampleRate"], 16000);
        // The endpoint's L16 (big-endian) becomes little-endian at 16 kHz, unresampled.
        let Frame::Binary(b) = w.message(&ToBot::Media(&[0x12, 0x34].repeat(320))) else {
            panic!("not audio")
        };
        assert_eq!(b.len(), 640, "20 ms at 16 kHz, 16-bit");
        assert_eq!(&b[..2], &[0x34, 0x12]);
        let Ok(FromBot::Media(l16)) = w.audio(&[0x34, 0x12].repeat(320)) else {
            panic!("not audio")
        };
        assert_eq!(l16.len(), 640);
        assert_eq!(&l16[..2], &[0x12, 0x34]);
        assert!(w.audio(&[0u8; 3]).is_err());
        // 24 kHz through 48 kHz: 20 ms out per 20 ms in.
        let mut w24 = wire(24000);
        let Frame::Binary(b) = w24.message(&ToBot::Media(&[0; 640])) else {
            panic!("not audio")
        };
        assert_eq!(b.len(), 960);
        let Ok(FromBot::Media(l16)) = w24.audio(&[0u8; 960]) else {
            panic!("not audio")
        };
        assert_eq!(l16.len(), 640);
        let mut narrow = wire(8000);
        assert_eq!(narrow.format(), Format::Mulaw);
        let Frame::Binary(b) = narrow.message(&ToBot::Media(&[0xff; 160])) else {
            panic!("not audio")
        };
        assert_eq!(b.len(), 320);
        let Ok(FromBot::Media(ulaw)) = narrow.audio(&[0u8; 320]) else {
            panic!("not audio")
        };
        assert_eq!(ulaw.len(), 160);
        assert_eq!(
            w.parse(r#"{"event":"mark","name":"x"}"#),
            Ok(FromBot::Mark("x".into()))
        );
        assert_eq!(w.parse(r#"{"event":"clear"}"#), Ok(FromBot::Clear));
        let Frame::Text(t) = w.message(&ToBot::Dtmf('#')) else {
            panic!("not text")
        };
        assert!(t.contains("\"digit\":\"#\""));
    }
}
