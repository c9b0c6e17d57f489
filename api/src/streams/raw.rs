//! `raw`: audio as binary frames of 16-bit little-endian PCM at the stream's
//! `sampleRate`, both ways; control as JSON text frames (Patchbay's own, documented in
//! the README): to the bot `start` (`streamId`, `participantId`, `sampleRate`,
//! `customParameters`), `mark` (`name`), `dtmf` (`digit`), `stop`; from the bot `mark`
//! and `clear`.

use patchbay_conference::media::g711;
use patchbay_conference::media::resample::Resampler;
use serde_json::{json, Value};

use super::bandwidth;
use super::sink::ToBot;
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
    /// 8 kHz to the stream's rate (None at 8 kHz).
    up: Option<Resampler>,
    pcm: Vec<i16>,
    wide: Vec<i16>,
    /// The bot's PCM at the stream's rate to the 8 kHz μ-law played.
    down: bandwidth::Reader,
}

impl Wire {
    pub fn new(ids: Ids, participant_id: String, rate: u32) -> Wire {
        Wire {
            ids,
            participant_id,
            rate,
            up: (rate != 8000).then(|| Resampler::new(8000, rate)).flatten(),
            pcm: vec![0; 160],
            wide: vec![0; rate as usize / 50],
            down: bandwidth::Reader::default(),
        }
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

    pub fn message(&mut self, m: &ToBot) -> Frame {
        match m {
            ToBot::Media(ulaw) => {
                for (o, &b) in self.pcm.iter_mut().zip(ulaw) {
                    *o = g711::ulaw_decode(b);
                }
                let samples: &[i16] = match self.up.as_mut() {
                    Some(up) => {
                        up.process(&self.pcm, &mut self.wide);
                        &self.wide
                    }
                    None => &self.pcm,
                };
                Frame::Binary(samples.iter().flat_map(|s| s.to_le_bytes()).collect())
            }
            ToBot::Mark(name) => Frame::Text(json!({"event": "mark", "name": name}).to_string()),
            ToBot::Dtmf(d) => {
                Frame::Text(json!({"event": "dtmf", "digit": d.to_string()}).to_string())
            }
            ToBot::Stop => Frame::Text(json!({"event": "stop"}).to_string()),
        }
    }

    /// A binary frame: the bot's audio at the stream's rate.
    pub fn audio(&mut self, bytes: &[u8]) -> Result<FromBot, &'static str> {
        if !bytes.len().is_multiple_of(2) {
            return Err("an audio frame of an odd number of bytes");
        }
        self.down.pcm(bytes, self.rate).map(FromBot::Media)
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
        let start: Value = serde_json::from_str(&w.opening(&json!({}))[0]).unwrap();
        assert_eq!(start["sampleRate"], 16000);
        let Frame::Binary(b) = w.message(&ToBot::Media(vec![0xff; 160])) else {
            panic!("not audio")
        };
        assert_eq!(b.len(), 640, "20 ms at 16 kHz, 16-bit");
        let Ok(FromBot::Media(ulaw)) = w.audio(&vec![0u8; 640]) else {
            panic!("not audio")
        };
        assert_eq!(ulaw.len(), 160);
        assert!(w.audio(&[0u8; 3]).is_err());
        let mut narrow = wire(8000);
        let Frame::Binary(b) = narrow.message(&ToBot::Media(vec![0xff; 160])) else {
            panic!("not audio")
        };
        assert_eq!(b.len(), 320);
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
