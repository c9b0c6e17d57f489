//! Audio codecs behind one type: G.711 (PCMU, PCMA), G.722 and Opus, each with
//! packet-loss concealment, decoding into and encoding from PCM at the codec's
//! native mix rate.
//!
//! L16 (16-bit linear PCM, network byte order, RFC 3551) at 16 kHz is the codec of
//! wideband voice bots' streams inside the session core; it is never offered to SIP
//! peers.
//!
//! Mix rates: G.711 8 kHz, G.722 and L16 16 kHz. Opus on SIP legs runs at 16 kHz
//! (wideband voice; libopus resamples internally and the RTP clock stays 48 kHz),
//! half the cost of a 48 kHz encode and the same rate as G.722.

use audiopus::coder::{Decoder as OpusDecoder, Encoder as OpusEncoder};
use audiopus::{Application, Channels, SampleRate};
use ezk_g722::libg722::{
    decoder::Decoder as G722Decoder, encoder::Encoder as G722Encoder, Bitrate,
};

use super::g711;
use super::pcm::PcmFifo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    Pcmu,
    Pcma,
    G722,
    Opus,
    /// 16-bit linear PCM at 16 kHz, big-endian (RFC 3551 `L16/16000`).
    L16,
}

#[derive(Debug, thiserror::Error)]
#[error("codec {codec:?}: {message}")]
pub struct CodecError {
    pub codec: AudioCodec,
    pub message: String,
}

impl AudioCodec {
    /// PCM rate it is decoded to and encoded from (its mix rate).
    pub fn pcm_rate(self) -> u32 {
        match self {
            AudioCodec::Pcmu | AudioCodec::Pcma => 8000,
            AudioCodec::G722 | AudioCodec::Opus | AudioCodec::L16 => 16000,
        }
    }

    /// RTP timestamp clock (G.722 keeps 8000 for historical reasons, RFC 3551).
    pub fn rtp_clock(self) -> u32 {
        match self {
            AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::G722 => 8000,
            AudioCodec::Opus => 48000,
            AudioCodec::L16 => 16000,
        }
    }

    /// The RFC 3551 static payload type, if any.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            AudioCodec::Pcmu => Some(0),
            AudioCodec::Pcma => Some(8),
            AudioCodec::G722 => Some(9),
            AudioCodec::Opus | AudioCodec::L16 => None,
        }
    }

    /// SDP `a=rtpmap` encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::G722 => "G722",
            AudioCodec::Opus => "opus",
            AudioCodec::L16 => "L16",
        }
    }

    /// Recognise an `a=rtpmap` encoding name and clock rate (of the codecs SIP peers
    /// may use: not L16).
    pub fn from_rtpmap(name: &str, clock: u32) -> Option<AudioCodec> {
        let c = [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::G722,
            AudioCodec::Opus,
        ]
        .into_iter()
        .find(|c| c.encoding_name().eq_ignore_ascii_case(name))?;
        (c.rtp_clock() == clock).then_some(c)
    }

    /// RTP timestamp units per PCM sample.
    pub fn ts_per_sample_num_den(self) -> (u32, u32) {
        (self.rtp_clock(), self.pcm_rate())
    }

    fn err(self, e: impl std::fmt::Display) -> CodecError {
        CodecError {
            codec: self,
            message: e.to_string(),
        }
    }
}

/// Most PCM one packet can decode to: 120 ms at 16 kHz.
const MAX_PACKET_SAMPLES: usize = 1920;
/// Consecutive concealed packets before G.711/G.722 concealment falls silent.
const MAX_CONCEALED: u32 = 3;

enum DecoderKind {
    Pcmu,
    Pcma,
    L16,
    G722(Box<G722Decoder>),
    Opus(Box<OpusDecoder>),
}

/// Decodes one stream's packets into a PCM FIFO, concealing losses.
pub struct Decoder {
    codec: AudioCodec,
    kind: DecoderKind,
    scratch: Vec<i16>,
    /// The last decoded packet, for concealment by repetition.
    last: Vec<i16>,
    concealed: u32,
}

impl Decoder {
    pub fn new(codec: AudioCodec) -> Result<Decoder, CodecError> {
        let kind = match codec {
            AudioCodec::Pcmu => DecoderKind::Pcmu,
            AudioCodec::Pcma => DecoderKind::Pcma,
            AudioCodec::L16 => DecoderKind::L16,
            AudioCodec::G722 => DecoderKind::G722(Box::new(G722Decoder::new(
                Bitrate::Mode1_64000,
                false,
                false,
            ))),
            AudioCodec::Opus => DecoderKind::Opus(Box::new(
                OpusDecoder::new(SampleRate::Hz16000, Channels::Mono).map_err(|e| codec.err(e))?,
            )),
        };
        Ok(Decoder {
            codec,
            kind,
            scratch: vec![0; MAX_PACKET_SAMPLES],
            last: Vec::with_capacity(MAX_PACKET_SAMPLES),
            concealed: 0,
        })
    }

    pub fn codec(&self) -> AudioCodec {
        self.codec
    }

    /// Decode one packet's payload into `out`. A payload that does not decode is concealed.
    pub fn decode(&mut self, payload: &[u8], out: &mut PcmFifo) {
        let n = match &mut self.kind {
            // G.711 decodes straight into `last` (kept for concealment): one copy less.
            DecoderKind::Pcmu | DecoderKind::Pcma if !payload.is_empty() => {
                let decode = if matches!(self.kind, DecoderKind::Pcmu) {
                    g711::ulaw_decode
                } else {
                    g711::alaw_decode
                };
                let n = payload.len().min(MAX_PACKET_SAMPLES);
                self.last.clear();
                self.last.extend(payload[..n].iter().map(|&b| decode(b)));
                self.concealed = 0;
                out.push(&self.last);
                return;
            }
            DecoderKind::Pcmu | DecoderKind::Pcma => 0,
            DecoderKind::L16 => {
                let n = (payload.len() / 2).min(MAX_PACKET_SAMPLES);
                for (o, c) in self.scratch[..n].iter_mut().zip(payload.chunks_exact(2)) {
                    *o = i16::from_be_bytes([c[0], c[1]]);
                }
                n
            }
            DecoderKind::G722(d) => {
                let pcm = d.decode(payload);
                let n = pcm.len().min(MAX_PACKET_SAMPLES);
                self.scratch[..n].copy_from_slice(&pcm[..n]);
                n
            }
            DecoderKind::Opus(d) => {
                if payload.is_empty() {
                    0
                } else {
                    d.decode(Some(payload), &mut self.scratch[..], false)
                        .unwrap_or(0)
                }
            }
        };
        if n == 0 {
            // Undecodable: conceal as much as a 20 ms packet.
            self.conceal(super::frame_len(self.codec.pcm_rate()), out);
            return;
        }
        self.concealed = 0;
        self.last.clear();
        self.last.extend_from_slice(&self.scratch[..n]);
        out.push(&self.scratch[..n]);
    }

    /// Conceal `samples` of lost audio: Opus's own PLC; for G.711/G.722 the last
    /// packet repeated at half the level each time, silence after three.
    pub fn conceal(&mut self, samples: usize, out: &mut PcmFifo) {
        let samples = samples.min(MAX_PACKET_SAMPLES);
        self.concealed += 1;
        match &mut self.kind {
            DecoderKind::Opus(d) => {
                let n = d
                    .decode(None::<&[u8]>, &mut self.scratch[..samples], false)
                    .unwrap_or(0);
                if n == 0 {
                    self.scratch[..samples].fill(0);
                }
                out.push(&self.scratch[..samples.max(n).min(MAX_PACKET_SAMPLES)]);
            }
            _ => {
                let shift = self.concealed.min(15);
                if self.concealed > MAX_CONCEALED || self.last.is_empty() {
                    self.scratch[..samples].fill(0);
                } else {
                    for (i, o) in self.scratch[..samples].iter_mut().enumerate() {
                        *o = self.last[i % self.last.len()] >> shift;
                    }
                }
                out.push(&self.scratch[..samples]);
            }
        }
    }
}

enum EncoderKind {
    Pcmu,
    Pcma,
    L16,
    G722(Box<G722Encoder>),
    Opus(Box<OpusEncoder>),
}

/// Encodes PCM at the codec's rate into payloads.
pub struct Encoder {
    codec: AudioCodec,
    kind: EncoderKind,
}

impl Encoder {
    pub fn new(codec: AudioCodec) -> Result<Encoder, CodecError> {
        let kind = match codec {
            AudioCodec::Pcmu => EncoderKind::Pcmu,
            AudioCodec::Pcma => EncoderKind::Pcma,
            AudioCodec::L16 => EncoderKind::L16,
            AudioCodec::G722 => EncoderKind::G722(Box::new(G722Encoder::new(
                Bitrate::Mode1_64000,
                false,
                false,
            ))),
            AudioCodec::Opus => {
                let mut e =
                    OpusEncoder::new(SampleRate::Hz16000, Channels::Mono, Application::Voip)
                        .map_err(|e| codec.err(e))?;
                e.set_complexity(5).map_err(|e| codec.err(e))?;
                EncoderKind::Opus(Box::new(e))
            }
        };
        Ok(Encoder { codec, kind })
    }

    pub fn codec(&self) -> AudioCodec {
        self.codec
    }

    /// An Opus encoder for browsers fed PCM at `rate` (8, 16 or 48 kHz): a phone leg's
    /// audio is encoded at its native rate, never resampled first.
    pub fn opus_at(rate: u32) -> Result<Encoder, CodecError> {
        Encoder::opus(rate, Channels::Mono)
    }

    /// A two-channel Opus encoder fed interleaved PCM at `rate` (recordings).
    pub fn opus_stereo_at(rate: u32) -> Result<Encoder, CodecError> {
        Encoder::opus(rate, Channels::Stereo)
    }

    fn opus(rate: u32, channels: Channels) -> Result<Encoder, CodecError> {
        let codec = AudioCodec::Opus;
        let sample_rate = match rate {
            8000 => SampleRate::Hz8000,
            16000 => SampleRate::Hz16000,
            48000 => SampleRate::Hz48000,
            other => return Err(codec.err(format!("unsupported Opus input rate {other}"))),
        };
        let mut e =
            OpusEncoder::new(sample_rate, channels, Application::Voip).map_err(|e| codec.err(e))?;
        e.set_complexity(5).map_err(|e| codec.err(e))?;
        Ok(Encoder {
            codec,
            kind: EncoderKind::Opus(Box::new(e)),
        })
    }

    /// Encode `pcm` (one packet's worth) into `out` (cleared first; its capacity is reused).
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.clear();
        match &mut self.kind {
            EncoderKind::Pcmu => out.extend(pcm.iter().map(|&s| g711::ulaw_encode(s))),
            EncoderKind::Pcma => out.extend(pcm.iter().map(|&s| g711::alaw_encode(s))),
            EncoderKind::L16 => out.extend(pcm.iter().flat_map(|s| s.to_be_bytes())),
            EncoderKind::G722(e) => out.extend_from_slice(&e.encode(pcm)),
            EncoderKind::Opus(e) => {
                out.resize(1275, 0);
                let n = e.encode(pcm, out).map_err(|err| self.codec.err(err))?;
                out.truncate(n);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()) as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    #[test]
    fn every_codec_carries_a_tone() {
        for codec in [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::G722,
            AudioCodec::Opus,
            AudioCodec::L16,
        ] {
            let rate = codec.pcm_rate();
            let n = super::super::frame_len(rate);
            let mut enc = Encoder::new(codec).unwrap();
            let mut dec = Decoder::new(codec).unwrap();
            let mut fifo = PcmFifo::new(rate as usize);
            let mut payload = Vec::new();
            let signal = tone(rate, 440.0, n * 20);
            for chunk in signal.chunks(n) {
                enc.encode(chunk, &mut payload).unwrap();
                dec.decode(&payload, &mut fifo);
            }
            let mut out = vec![0; n];
            // Skip codec delay; look at a late frame.
            for _ in 0..15 {
                assert!(fifo.pop(&mut out), "{codec:?}");
            }
            let level = rms(&out) / rms(&signal[..n]);
            assert!((0.7..1.3).contains(&level), "{codec:?}: level {level}");
        }
    }

    #[test]
    fn g711_concealment_fades_to_silence() {
        let mut dec = Decoder::new(AudioCodec::Pcmu).unwrap();
        let mut fifo = PcmFifo::new(8000);
        let payload: Vec<u8> = tone(8000, 440.0, 160)
            .iter()
            .map(|&s| g711::ulaw_encode(s))
            .collect();
        dec.decode(&payload, &mut fifo);
        let mut frames = vec![vec![0i16; 160]; 5];
        fifo.pop(&mut frames[0]);
        for f in frames.iter_mut().skip(1) {
            dec.conceal(160, &mut fifo);
            fifo.pop(f);
        }
        let levels: Vec<f64> = frames.iter().map(|f| rms(f)).collect();
        assert!(
            levels[1] < levels[0] && levels[2] < levels[1] && levels[3] < levels[2],
            "{levels:?}"
        );
        assert_eq!(levels[4], 0.0);
    }

    #[test]
    fn rtpmap_names() {
        assert_eq!(
            AudioCodec::from_rtpmap("pcmu", 8000),
            Some(AudioCodec::Pcmu)
        );
        assert_eq!(
            AudioCodec::from_rtpmap("G722", 8000),
            Some(AudioCodec::G722)
        );
        assert_eq!(
            AudioCodec::from_rtpmap("opus", 48000),
            Some(AudioCodec::Opus)
        );
        assert_eq!(AudioCodec::from_rtpmap("opus", 16000), None);
        assert_eq!(AudioCodec::from_rtpmap("GSM", 8000), None);
        assert_eq!(
            AudioCodec::from_rtpmap("L16", 16000),
            None,
            "never negotiated with SIP peers"
        );
    }
}
