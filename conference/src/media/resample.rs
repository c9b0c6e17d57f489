//! Integer-ratio resampling between the mix rates (8, 16 and 48 kHz): a
//! windowed-sinc polyphase FIR, state carried across frames, no allocation
//! after construction.

/// Resamples fixed-size frames from one rate to another, where one rate is an
/// integer multiple of the other.
#[derive(Debug, Clone)]
pub struct Resampler {
    up: usize,
    down: usize,
    /// Prototype low-pass filter, `taps_per_phase * max(up, down)` long.
    taps: Vec<f32>,
    /// Past input samples followed by the current frame.
    buf: Vec<f32>,
    history: usize,
}

const TAPS_PER_PHASE: usize = 16;

impl Resampler {
    /// `None` unless one rate divides the other.
    pub fn new(from: u32, to: u32) -> Option<Resampler> {
        if from == 0 || to == 0 {
            return None;
        }
        let (up, down) = if to >= from {
            (to / from, 1)
        } else {
            (1, from / to)
        };
        if from * up != to * down {
            return None;
        }
        let (up, down) = (up as usize, down as usize);
        let factor = up.max(down);
        let len = TAPS_PER_PHASE * factor;
        // Cut-off just under the lower rate's Nyquist frequency, as a fraction of the higher rate.
        let fc = 0.45 / factor as f64;
        let gain = up as f64;
        let mid = (len - 1) as f64 / 2.0;
        let taps = (0..len)
            .map(|n| {
                let x = n as f64 - mid;
                let sinc = if x == 0.0 {
                    2.0 * fc
                } else {
                    (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
                };
                let w = 0.42
                    - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / (len - 1) as f64).cos()
                    + 0.08 * (4.0 * std::f64::consts::PI * n as f64 / (len - 1) as f64).cos();
                (sinc * w * gain) as f32
            })
            .collect();
        let history = if up > 1 { TAPS_PER_PHASE } else { len };
        Some(Resampler {
            up,
            down,
            taps,
            buf: vec![0.0; history],
            history,
        })
    }

    /// Output samples produced for `n` input samples.
    pub fn output_len(&self, n: usize) -> usize {
        n * self.up / self.down
    }

    /// Resample `input` into `out` (`out.len() == output_len(input.len())`).
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) {
        let h = self.history;
        self.buf.truncate(h);
        self.buf.extend(input.iter().map(|&s| s as f32));
        if self.up > 1 {
            let l = self.up;
            for (m, _) in input.iter().enumerate() {
                // Newest input sample for this output group is buf[h + m].
                for p in 0..l {
                    let mut acc = 0.0f32;
                    for k in 0..TAPS_PER_PHASE {
                        acc += self.taps[k * l + p] * self.buf[h + m - k];
                    }
                    if let Some(o) = out.get_mut(m * l + p) {
                        *o = saturate(acc);
                    }
                }
            }
        } else {
            let d = self.down;
            let len = self.taps.len();
            for (j, o) in out.iter_mut().enumerate() {
                let newest = h + j * d + d - 1;
                let mut acc = 0.0f32;
                for (k, t) in self.taps.iter().enumerate().take(len) {
                    acc += t * self.buf[newest - k];
                }
                *o = saturate(acc);
            }
        }
        // Keep the last `h` samples as history.
        let total = self.buf.len();
        self.buf.copy_within(total - h..total, 0);
        self.buf.truncate(h);
    }
}

fn saturate(x: f32) -> i16 {
    x.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, n: usize, offset: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + offset) as f64 / rate as f64;
                (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn only_integer_ratios() {
        assert!(Resampler::new(8000, 16000).is_some());
        assert!(Resampler::new(48000, 8000).is_some());
        assert!(Resampler::new(16000, 48000).is_some());
        assert!(Resampler::new(8000, 12000).is_none());
        assert!(Resampler::new(0, 8000).is_none());
    }

    #[test]
    fn tones_keep_their_level_across_rates() {
        for (from, to) in [
            (8000, 16000),
            (16000, 8000),
            (8000, 48000),
            (48000, 8000),
            (16000, 48000),
            (48000, 16000),
        ] {
            let mut r = Resampler::new(from, to).unwrap();
            let n_in = from as usize / 50;
            let mut out = vec![0i16; r.output_len(n_in)];
            let mut last = Vec::new();
            for f in 0..10 {
                r.process(&tone(from, 1000.0, n_in, f * n_in), &mut out);
                last = out.clone();
            }
            let level = rms(&last) / rms(&tone(to, 1000.0, last.len(), 0));
            assert!((0.9..1.1).contains(&level), "{from}->{to}: level {level}");
        }
    }

    #[test]
    fn downsampling_rejects_what_the_lower_rate_cannot_carry() {
        // 6 kHz at 16 kHz would alias to 2 kHz at 8 kHz: the filter must remove it.
        let mut r = Resampler::new(16000, 8000).unwrap();
        let mut out = vec![0i16; 160];
        for f in 0..10 {
            r.process(&tone(16000, 6000.0, 320, f * 320), &mut out);
        }
        assert!(
            rms(&out) < 8000.0 / 2f64.sqrt() * 0.05,
            "alias rms {}",
            rms(&out)
        );
    }
}
