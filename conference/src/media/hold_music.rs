//! Music on hold (`sip_music_on_hold`): a WAV file read once at startup, kept at the
//! rates SIP legs mix at (8 and 16 kHz), looped to each held leg from its start.

use super::resample::Resampler;

/// The longest file accepted (10 minutes at 48 kHz: 57.6 MB of PCM).
const MAX_SAMPLES: usize = 48_000 * 600;

/// Music for held legs, at each leg rate.
#[derive(Debug, Clone)]
pub struct HoldMusic {
    at_8k: Vec<i16>,
    at_16k: Vec<i16>,
}

impl HoldMusic {
    /// A RIFF/WAVE file of 16-bit PCM, mono, at 8, 16 or 48 kHz.
    pub fn from_wav(bytes: &[u8]) -> Result<HoldMusic, String> {
        let (rate, samples) = parse_wav(bytes)?;
        let at = |to: u32| -> Result<Vec<i16>, String> {
            if rate == to {
                return Ok(samples.clone());
            }
            let mut r = Resampler::new(rate, to)
                .ok_or_else(|| format!("cannot resample {rate} Hz to {to} Hz"))?;
            // 20 ms frames (the last one padded with silence).
            let frame = rate as usize / 50;
            let mut out = Vec::with_capacity(samples.len() * to as usize / rate as usize);
            let mut buf = vec![0i16; r.output_len(frame)];
            for chunk in samples.chunks(frame) {
                let mut input = chunk.to_vec();
                input.resize(frame, 0);
                r.process(&input, &mut buf);
                out.extend_from_slice(&buf);
            }
            Ok(out)
        };
        let music = HoldMusic {
            at_8k: at(8000)?,
            at_16k: at(16000)?,
        };
        if music.at_8k.len() < 160 {
            return Err("shorter than 20 ms".into());
        }
        Ok(music)
    }

    /// The music at `rate` (8000 or 16000; anything else gets the 16 kHz copy).
    pub fn at(&self, rate: u32) -> &[i16] {
        if rate == 8000 {
            &self.at_8k
        } else {
            &self.at_16k
        }
    }

    /// Fill `out` from position `*pos`, looping; moves `*pos`.
    pub fn fill(&self, rate: u32, pos: &mut usize, out: &mut [i16]) {
        let music = self.at(rate);
        if music.is_empty() {
            out.fill(0);
            return;
        }
        for s in out.iter_mut() {
            if *pos >= music.len() {
                *pos = 0;
            }
            *s = music[*pos];
            *pos += 1;
        }
    }
}

fn parse_wav(b: &[u8]) -> Result<(u32, Vec<i16>), String> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut i = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32_at(i + 4) as usize;
        let body = i + 8;
        let end = body.checked_add(len).filter(|e| *e <= b.len());
        match (id, end) {
            (b"fmt ", Some(_)) if len >= 16 => {
                format = Some((
                    u16_at(body),
                    u16_at(body + 2),
                    u32_at(body + 4),
                    u16_at(body + 14),
                ));
            }
            (b"data", _) => {
                let Some((fmt, channels, rate, bits)) = format else {
                    return Err("no fmt chunk before the data".into());
                };
                if fmt != 1 || bits != 16 || channels != 1 {
                    return Err(format!(
                        "must be 16-bit PCM mono (format {fmt}, {bits} bits, {channels} channels)"
                    ));
                }
                if ![8000, 16000, 48000].contains(&rate) {
                    return Err(format!("{rate} Hz: must be 8000, 16000 or 48000"));
                }
                // A streamed file may say 0 or too much: take what is there.
                let end = end.unwrap_or(b.len());
                let n = ((end - body) / 2).min(MAX_SAMPLES);
                let samples = (0..n)
                    .map(|k| i16::from_le_bytes([b[body + 2 * k], b[body + 2 * k + 1]]))
                    .collect();
                return Ok((rate, samples));
            }
            (_, None) => return Err("a chunk runs past the end of the file".into()),
            _ => {}
        }
        i = body + len + (len & 1);
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, samples: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        let data = samples.len() as u32 * 2;
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data.to_le_bytes());
        for s in samples {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }

    fn tone(rate: u32, hz: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|k| {
                ((2.0 * std::f64::consts::PI * hz * k as f64 / rate as f64).sin() * 8000.0) as i16
            })
            .collect()
    }

    #[test]
    fn a_16k_file_is_kept_and_halved_for_8k_legs_and_loops() {
        let m = HoldMusic::from_wav(&wav(16000, &tone(16000, 440.0, 16000))).unwrap();
        assert_eq!(m.at(16000).len(), 16000);
        assert_eq!(m.at(8000).len(), 8000);
        // Looping: a position past the end starts over.
        let mut pos = 7990;
        let mut out = [0i16; 20];
        m.fill(8000, &mut pos, &mut out);
        assert_eq!(pos, 10);
        assert_eq!(out[10..], m.at(8000)[..10]);
        // 48 kHz is brought down to both rates.
        let m = HoldMusic::from_wav(&wav(48000, &tone(48000, 440.0, 48000))).unwrap();
        assert_eq!((m.at(8000).len(), m.at(16000).len()), (8000, 16000));
    }

    #[test]
    fn other_formats_are_refused_with_why() {
        let mut stereo = wav(8000, &tone(8000, 440.0, 800));
        stereo[22] = 2;
        for (bytes, why) in [
            (b"not a wav".to_vec(), "RIFF"),
            (wav(44100, &tone(44100, 440.0, 4410)), "44100 Hz"),
            (stereo, "mono"),
            (wav(8000, &[0; 10]), "shorter than 20 ms"),
        ] {
            let e = HoldMusic::from_wav(&bytes).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
