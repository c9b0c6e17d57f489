//! Bandwidth Programmable Voice bidirectional streams (`<StartStream mode=
//! "bidirectional">`), as Bandwidth documents them and bot frameworks (Pipecat's
//! `BandwidthFrameSerializer`) read them: JSON text frames with an `eventType`; what
//! the participant hears as `media` (base64 PCMU at 8 kHz, the payload at the top
//! level); the bot's `playAudio` with `audio/pcmu` or 16-bit little-endian
//! `audio/pcm;rate=8000|16000|24000`, and `clear`. The protocol has no marks and no
//! DTMF on the socket.

use base64::Engine;
use patchbay_conference::media::g711;
use serde_json::{json, Value};

use super::rate::Converter;
use super::sink::ToBot;
use super::twilio::{FromBot, Ids};

/// Builds the messages to the bot.
pub struct Writer {
    ids: Ids,
    sequence: u64,
}

impl Writer {
    pub fn new(ids: Ids) -> Writer {
        Writer { ids, sequence: 0 }
    }

    fn metadata(&self) -> Value {
        json!({
            "accountId": self.ids.account_sid,
            "callId": self.ids.call_sid,
            "streamId": self.ids.stream_sid,
            "streamName": self.ids.stream_sid,
            "tracks": [{"name": "inbound", "mediaFormat": {"encoding": "audio/PCMU", "sampleRate": 8000}}],
        })
    }

    /// `start`, with the stream's custom parameters as `streamParams`.
    pub fn opening(&mut self, custom: &Value) -> Vec<String> {
        vec![
            json!({"eventType": "start", "metadata": self.metadata(), "streamParams": custom})
                .to_string(),
        ]
    }

    /// None: nothing of this kind is sent in this protocol (marks, DTMF).
    pub fn message(&mut self, m: &ToBot<'_>) -> Option<String> {
        match m {
            ToBot::Media(ulaw) => {
                self.sequence += 1;
                Some(
                    json!({
                        "eventType": "media",
                        "track": "inbound",
                        "sequenceNumber": self.sequence,
                        "payload": base64::engine::general_purpose::STANDARD.encode(ulaw),
                    })
                    .to_string(),
                )
            }
            ToBot::Stop => {
                Some(json!({"eventType": "stop", "metadata": self.metadata()}).to_string())
            }
            ToBot::Mark(_) | ToBot::Dtmf(_) => None,
        }
    }
}

/// Reads the bot's messages; linear PCM above 8 kHz is resampled (state kept across
/// messages) to the stream's μ-law.
#[derive(Default)]
pub struct Reader {
    converter: Option<(u32, Converter)>,
    narrow: Vec<i16>,
}

impl Reader {
    pub fn parse(&mut self, text: &str) -> Result<FromBot, &'static str> {
        let v: Value = serde_json::from_str(text).map_err(|_| "not JSON")?;
        match v["eventType"].as_str() {
            Some("playAudio") => {
                let media = &v["media"];
                let payload = media["payload"]
                    .as_str()
                    .ok_or("playAudio without a payload")?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(payload)
                    .map_err(|_| "playAudio payload is not base64")?;
                let content_type = media["contentType"].as_str().unwrap_or("audio/pcmu");
                let ct = content_type.to_ascii_lowercase();
                if ct.starts_with("audio/pcmu") {
                    return Ok(FromBot::Media(bytes));
                }
                if !ct.starts_with("audio/pcm") {
                    return Err("playAudio contentType is neither audio/pcmu nor audio/pcm");
                }
                let rate = ct
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("rate="))
                    .map_or(Ok(8000), str::parse::<u32>)
                    .map_err(|_| "playAudio rate is not a number")?;
                self.pcm(&bytes, rate).map(FromBot::Media)
            }
            Some("clear") => Ok(FromBot::Clear),
            Some(_) => Ok(FromBot::Other),
            None => Err("no eventType"),
        }
    }

    /// 16-bit little-endian PCM at `rate` as μ-law at 8 kHz (the converter's state kept
    /// while the rate stays).
    pub(super) fn pcm(&mut self, bytes: &[u8], rate: u32) -> Result<Vec<u8>, &'static str> {
        if !matches!(rate, 8000 | 16000 | 24000) {
            return Err("playAudio rate must be 8000, 16000 or 24000");
        }
        if self.converter.as_ref().map(|(r, _)| *r) != Some(rate) {
            let c = Converter::new(rate, 8000).ok_or("no resampler for this rate")?;
            self.converter = Some((rate, c));
        }
        let Some((_, converter)) = self.converter.as_mut() else {
            return Ok(Vec::new());
        };
        self.narrow.clear();
        converter.push_le(bytes, &mut self.narrow);
        Ok(self.narrow.iter().map(|&s| g711::ulaw_encode(s)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids {
        Ids {
            stream_sid: "s1".into(),
            call_sid: "c1".into(),
            account_sid: "a1".into(),
        }
    }

    #[test]
    fn messages_as_bandwidth_documents_them() {
        let mut w = Writer::new(ids());
        let start: Value = serde_json::from_str(&w.opening(&json!({"k": "v"}))[0]).unwrap();
        assert_eq!(start["eventType"], "start");
        assert_eq!(start["metadata"]["streamId"], "s1");
        assert_eq!(
            start["metadata"]["tracks"][0]["mediaFormat"]["encoding"],
            "audio/PCMU"
        );
        assert_eq!(start["streamParams"]["k"], "v");
        let media: Value =
            serde_json::from_str(&w.message(&ToBot::Media(&[0xff; 160])).unwrap()).unwrap();
        assert_eq!(
            (media["track"].as_str(), media["sequenceNumber"].as_u64()),
            (Some("inbound"), Some(1))
        );
        assert!(w.message(&ToBot::Mark("m")).is_none());
        let stop: Value = serde_json::from_str(&w.message(&ToBot::Stop).unwrap()).unwrap();
        assert_eq!(stop["metadata"]["callId"], "c1");
    }

    #[test]
    fn play_audio_in_each_format_becomes_mulaw_at_8_khz() {
        let mut r = Reader::default();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let play = |ct: &str, b: &[u8]| {
            json!({"eventType": "playAudio", "media": {"contentType": ct, "payload": b64(b)}})
                .to_string()
        };
        assert_eq!(
            r.parse(&play("audio/pcmu", &[1, 2, 3])),
            Ok(FromBot::Media(vec![1, 2, 3]))
        );
        let pcm8: Vec<u8> = [1000i16; 160]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(
            r.parse(&play("audio/pcm;rate=8000", &pcm8)),
            Ok(FromBot::Media(vec![g711::ulaw_encode(1000); 160]))
        );
        // 24 kHz in pieces that are not whole blocks: 20 ms out per 20 ms in.
        let pcm24: Vec<u8> = [0i16; 700].iter().flat_map(|s| s.to_le_bytes()).collect();
        let ct = "audio/pcm;rate=24000;channels=1;bit-depth=16;endian=little;encoding=signed";
        let Ok(FromBot::Media(first)) = r.parse(&play(ct, &pcm24)) else {
            panic!("not media")
        };
        assert_eq!(first.len(), 160);
        let Ok(FromBot::Media(second)) = r.parse(&play(ct, &pcm24)) else {
            panic!("not media")
        };
        assert_eq!(
            second.len(),
            160,
            "1400 samples in: two 480-sample blocks out"
        );
        assert!(r.parse(&play("audio/pcm;rate=44100", &pcm8)).is_err());
        assert_eq!(r.parse(r#"{"eventType":"clear"}"#), Ok(FromBot::Clear));
        assert!(r.parse(r#"{"event":"media"}"#).is_err());
    }
}
