//! PCM between a bot's sample rate and its endpoint's (8, 16, 24 kHz), in whole 20 ms
//! blocks with the state kept across messages: directly where one rate divides the
//! other, else through 48 kHz (16 ↔ 24 kHz).

use patchbay_conference::media::resample::Resampler;

pub struct Converter {
    /// Resampling stages with their output buffers (none: the rates are equal).
    stages: Vec<(Resampler, Vec<i16>)>,
    block: usize,
    /// Input not converted yet (less than one block).
    carry: Vec<i16>,
    /// `push_le`'s samples.
    le: Vec<i16>,
}

impl Converter {
    /// None for rates it cannot convert between.
    pub fn new(from: u32, to: u32) -> Option<Converter> {
        let pairs: Vec<(u32, u32)> = if from == to {
            Vec::new()
        } else if from.max(to).is_multiple_of(from.min(to)) {
            vec![(from, to)]
        } else {
            vec![(from, 48_000), (48_000, to)]
        };
        let mut stages = Vec::with_capacity(pairs.len());
        for (a, b) in pairs {
            let r = Resampler::new(a, b)?;
            stages.push((r, vec![0; b as usize / 50]));
        }
        Some(Converter {
            stages,
            block: from as usize / 50,
            carry: Vec::new(),
            le: Vec::new(),
        })
    }

    /// Convert 16-bit little-endian PCM (a bot's), appending to `out`.
    pub fn push_le(&mut self, bytes: &[u8], out: &mut Vec<i16>) {
        let mut pcm = std::mem::take(&mut self.le);
        pcm.clear();
        pcm.extend(
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]])),
        );
        self.push(&pcm, out);
        self.le = pcm;
    }

    /// Convert `input`, appending to `out`; a partial block waits for the next call.
    pub fn push(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.stages.is_empty() {
            out.extend_from_slice(input);
            return;
        }
        self.carry.extend_from_slice(input);
        let whole = self.carry.len() / self.block * self.block;
        for block in self.carry[..whole].chunks_exact(self.block) {
            let mut data: &[i16] = block;
            for (r, buf) in self.stages.iter_mut() {
                r.process(data, buf);
                data = buf;
            }
            out.extend_from_slice(data);
        }
        self.carry.drain(..whole);
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

    /// The share of `x`'s energy at `hz` (Goertzel).
    fn share(x: &[i16], hz: f64, rate: u32) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / rate as f64;
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s = v as f64 + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        let energy: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
        power / (energy * x.len() as f64 / 2.0)
    }

    #[test]
    fn every_pair_of_rates_keeps_a_tone_and_the_duration() {
        for (from, to) in [
            (8000, 16000),
            (16000, 8000),
            (24000, 16000),
            (16000, 24000),
            (24000, 8000),
            (16000, 16000),
        ] {
            let mut c = Converter::new(from, to).expect("a converter");
            let input = tone(from, 1000.0, from as usize / 2);
            let mut out = Vec::new();
            // In pieces that are not whole blocks.
            for piece in input.chunks(123) {
                c.push(piece, &mut out);
            }
            let want = to as usize / 2;
            assert!(
                out.len() <= want && out.len() + to as usize / 50 > want,
                "{from} -> {to}: {} samples",
                out.len()
            );
            let settled = &out[to as usize / 50..];
            assert!(
                share(settled, 1000.0, to) > 0.9,
                "{from} -> {to}: the tone is lost"
            );
        }
        assert!(Converter::new(44100, 16000).is_none());
    }
}
