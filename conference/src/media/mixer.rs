//! The audio mixer (sans-IO): feed each stream's 20 ms frame, call [`Mixer::mix`],
//! read each listener's mix.
//!
//! - Every listener hears exactly the streams it is told (`set_hears`), never
//!   its own stream.
//! - One accumulation per distinct (rate, heard set ∪ own stream): listeners
//!   whose sets differ only by their own stream share it, and each subtracts its
//!   own contribution. Accumulation is in `i32`, so the subtraction is exact;
//!   saturation to `i16` happens once, on output.
//! - Streams are mixed at the listener's rate; a stream is resampled to another
//!   rate only when some listener at that rate hears it, once per frame.
//! - No allocation per frame: buffers are sized when streams, listeners or
//!   sets change.

use super::frame_len;
use super::resample::Resampler;

/// Caller-chosen identity of a stream.
pub type StreamKey = u64;
/// Caller-chosen identity of a listener.
pub type ListenerKey = u64;

#[derive(Debug)]
struct Converted {
    rate: u32,
    resampler: Resampler,
    frame: Vec<i16>,
    fresh: bool,
}

#[derive(Debug)]
struct Stream {
    key: StreamKey,
    rate: u32,
    frame: Vec<i16>,
    active: bool,
    converted: Vec<Converted>,
}

impl Stream {
    /// This frame at `rate`, resampling at most once per frame.
    fn at_rate(&mut self, rate: u32) -> &[i16] {
        if rate == self.rate {
            return &self.frame;
        }
        let idx = match self.converted.iter().position(|c| c.rate == rate) {
            Some(i) => i,
            None => {
                let Some(resampler) = Resampler::new(self.rate, rate) else {
                    return &[];
                };
                self.converted.push(Converted {
                    rate,
                    resampler,
                    frame: vec![0; frame_len(rate)],
                    fresh: false,
                });
                self.converted.len() - 1
            }
        };
        let c = &mut self.converted[idx];
        if !c.fresh {
            c.resampler.process(&self.frame, &mut c.frame);
            c.fresh = true;
        }
        &c.frame
    }
}

#[derive(Debug)]
struct Listener {
    key: ListenerKey,
    rate: u32,
    own: Option<StreamKey>,
    hears: Vec<StreamKey>,
    out: Vec<i16>,
    group: usize,
}

#[derive(Debug)]
struct Group {
    rate: u32,
    /// Sorted stream keys.
    keys: Vec<StreamKey>,
    /// Indices into `streams`, valid while not dirty.
    members: Vec<usize>,
    acc: Vec<i32>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Mixer {
    streams: Vec<Stream>,
    listeners: Vec<Listener>,
    groups: Vec<Group>,
    dirty: bool,
}

impl Mixer {
    pub fn new() -> Mixer {
        Mixer::default()
    }

    /// Add (or re-rate) a stream whose frames are at `rate` Hz.
    pub fn add_stream(&mut self, key: StreamKey, rate: u32) {
        self.remove_stream(key);
        self.streams.push(Stream {
            key,
            rate,
            frame: vec![0; frame_len(rate)],
            active: false,
            converted: Vec::new(),
        });
        self.dirty = true;
    }

    pub fn remove_stream(&mut self, key: StreamKey) {
        let before = self.streams.len();
        self.streams.retain(|s| s.key != key);
        self.dirty |= self.streams.len() != before;
    }

    /// Add (or reconfigure) a listener mixing at `rate` Hz; `own` is the stream it
    /// publishes, which it never hears.
    pub fn add_listener(&mut self, key: ListenerKey, rate: u32, own: Option<StreamKey>) {
        let hears = self.remove_listener(key).unwrap_or_default();
        self.listeners.push(Listener {
            key,
            rate,
            own,
            hears,
            out: vec![0; frame_len(rate)],
            group: 0,
        });
        self.dirty = true;
    }

    /// Remove a listener; returns what it heard.
    pub fn remove_listener(&mut self, key: ListenerKey) -> Option<Vec<StreamKey>> {
        let i = self.listeners.iter().position(|l| l.key == key)?;
        self.dirty = true;
        Some(self.listeners.swap_remove(i).hears)
    }

    /// Set exactly which streams `listener` hears (its own stream is ignored).
    pub fn set_hears(&mut self, listener: ListenerKey, streams: &[StreamKey]) {
        let Some(l) = self.listeners.iter_mut().find(|l| l.key == listener) else {
            return;
        };
        let mut want: Vec<StreamKey> = streams
            .iter()
            .copied()
            .filter(|s| Some(*s) != l.own)
            .collect();
        want.sort_unstable();
        want.dedup();
        if want != l.hears {
            l.hears = want;
            self.dirty = true;
        }
    }

    /// What `listener` hears now.
    pub fn hears(&self, listener: ListenerKey) -> Option<&[StreamKey]> {
        self.listeners
            .iter()
            .find(|l| l.key == listener)
            .map(|l| l.hears.as_slice())
    }

    /// The buffer for `stream`'s next frame, at its own rate; writing marks the
    /// stream as sounding for this frame (streams not written are silent).
    pub fn frame_mut(&mut self, stream: StreamKey) -> Option<&mut [i16]> {
        let s = self.streams.iter_mut().find(|s| s.key == stream)?;
        s.active = true;
        Some(&mut s.frame)
    }

    /// How many accumulations one frame costs (one per distinct set and rate).
    pub fn group_count(&mut self) -> usize {
        self.regroup();
        self.groups.len()
    }

    fn regroup(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.groups.clear();
        let mut keys: Vec<StreamKey> = Vec::new();
        for l in &mut self.listeners {
            keys.clear();
            keys.extend(
                l.hears
                    .iter()
                    .copied()
                    .filter(|k| self.streams.iter().any(|s| s.key == *k)),
            );
            if let Some(own) = l.own {
                if self.streams.iter().any(|s| s.key == own) {
                    keys.push(own);
                }
            }
            keys.sort_unstable();
            keys.dedup();
            l.group = match self
                .groups
                .iter()
                .position(|g| g.rate == l.rate && g.keys == keys)
            {
                Some(i) => i,
                None => {
                    self.groups.push(Group {
                        rate: l.rate,
                        keys: keys.clone(),
                        members: keys
                            .iter()
                            .filter_map(|k| self.streams.iter().position(|s| s.key == *k))
                            .collect(),
                        acc: vec![0; frame_len(l.rate)],
                    });
                    self.groups.len() - 1
                }
            };
        }
    }

    /// Mix one frame: every listener's output is ready afterwards, and every
    /// stream goes back to silent until written again.
    pub fn mix(&mut self) {
        self.regroup();
        let Mixer {
            streams,
            listeners,
            groups,
            ..
        } = self;
        for g in groups.iter_mut() {
            g.acc.fill(0);
            for &m in &g.members {
                let s = &mut streams[m];
                if !s.active {
                    continue;
                }
                for (a, &x) in g.acc.iter_mut().zip(s.at_rate(g.rate)) {
                    *a += x as i32;
                }
            }
        }
        for l in listeners.iter_mut() {
            let g = &groups[l.group];
            let own = l
                .own
                .and_then(|k| streams.iter_mut().find(|s| s.key == k && s.active))
                .filter(|s| g.keys.binary_search(&s.key).is_ok());
            match own {
                Some(s) => {
                    let own_frame = s.at_rate(l.rate);
                    for ((o, &a), &x) in l.out.iter_mut().zip(&g.acc).zip(own_frame) {
                        *o = (a - x as i32).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
                    }
                }
                None => {
                    for (o, &a) in l.out.iter_mut().zip(&g.acc) {
                        *o = a.clamp(i16::MIN as i32, i16::MAX as i32) as i16;
                    }
                }
            }
        }
        for s in streams.iter_mut() {
            s.active = false;
            for c in &mut s.converted {
                c.fresh = false;
            }
        }
    }

    /// `listener`'s mix of the last frame, at its rate.
    pub fn output(&self, listener: ListenerKey) -> Option<&[i16]> {
        self.listeners
            .iter()
            .find(|l| l.key == listener)
            .map(|l| l.out.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed constant "signatures" so that each output reveals what was summed.
    fn feed(m: &mut Mixer, values: &[(StreamKey, i16)]) {
        for &(k, v) in values {
            m.frame_mut(k).unwrap().fill(v);
        }
    }

    fn level(m: &Mixer, l: ListenerKey) -> i16 {
        let out = m.output(l).unwrap();
        // Steady value in the middle of the frame.
        out[out.len() / 2]
    }

    fn three_legs(rate: u32) -> Mixer {
        let mut m = Mixer::new();
        for k in 1..=3 {
            m.add_stream(k, rate);
            m.add_listener(k, rate, Some(k));
        }
        m
    }

    #[test]
    fn session_level_everyone_hears_the_others_from_one_accumulation() {
        let mut m = three_legs(8000);
        for k in 1..=3 {
            m.set_hears(k, &[1, 2, 3]);
        }
        assert_eq!(m.group_count(), 1);
        feed(&mut m, &[(1, 100), (2, 20), (3, 3)]);
        m.mix();
        assert_eq!(level(&m, 1), 23);
        assert_eq!(level(&m, 2), 103);
        assert_eq!(level(&m, 3), 120);
    }

    #[test]
    fn whisper_sets() {
        // C (3) the manager hears A and B; A (1) the agent hears B and C; B (2) the caller hears only A.
        let mut m = three_legs(8000);
        m.set_hears(3, &[1, 2]);
        m.set_hears(1, &[2, 3]);
        m.set_hears(2, &[1]);
        feed(&mut m, &[(1, 100), (2, 20), (3, 3)]);
        m.mix();
        assert_eq!(level(&m, 3), 120);
        assert_eq!(level(&m, 1), 23);
        assert_eq!(level(&m, 2), 100);
        // A live change applies to the next frame.
        m.set_hears(2, &[1, 3]);
        feed(&mut m, &[(1, 100), (2, 20), (3, 3)]);
        m.mix();
        assert_eq!(level(&m, 2), 103);
    }

    #[test]
    fn unwritten_streams_are_silent() {
        let mut m = three_legs(8000);
        for k in 1..=3 {
            m.set_hears(k, &[1, 2, 3]);
        }
        feed(&mut m, &[(1, 100)]);
        m.mix();
        assert_eq!(level(&m, 1), 0);
        assert_eq!(level(&m, 2), 100);
        m.mix();
        assert_eq!(level(&m, 2), 0, "a frame is used once");
    }

    #[test]
    fn saturates_instead_of_wrapping_and_subtraction_is_exact() {
        let mut m = three_legs(8000);
        for k in 1..=3 {
            m.set_hears(k, &[1, 2, 3]);
        }
        feed(&mut m, &[(1, 30000), (2, 30000), (3, -100)]);
        m.mix();
        assert_eq!(level(&m, 3), i16::MAX);
        assert_eq!(level(&m, 1), 29900);
        feed(&mut m, &[(1, -30000), (2, -30000), (3, 0)]);
        m.mix();
        assert_eq!(level(&m, 3), i16::MIN);
    }

    #[test]
    fn listener_without_own_stream_and_empty_sets() {
        let mut m = three_legs(8000);
        m.add_listener(9, 8000, None);
        m.set_hears(9, &[1, 2]);
        m.set_hears(1, &[]);
        feed(&mut m, &[(1, 5), (2, 7), (3, 11)]);
        m.mix();
        assert_eq!(level(&m, 9), 12);
        assert_eq!(level(&m, 1), 0);
        // Removing a heard stream takes it out of the mix.
        m.remove_stream(2);
        feed(&mut m, &[(1, 5), (3, 11)]);
        m.mix();
        assert_eq!(level(&m, 9), 5);
    }

    #[test]
    fn mixed_rates_resample_only_what_is_needed() {
        let mut m = Mixer::new();
        m.add_stream(1, 8000); // a G.711 leg
        m.add_listener(1, 8000, Some(1));
        m.add_stream(2, 16000); // a G.722 leg
        m.add_listener(2, 16000, Some(2));
        m.set_hears(1, &[2]);
        m.set_hears(2, &[1]);
        // Two groups: one per rate.
        assert_eq!(m.group_count(), 2);
        // A 1 kHz tone at 16 kHz reaches the 8 kHz listener at the same level, and back.
        let tone = |rate: u32, n: usize, f: usize| -> Vec<i16> {
            (0..n)
                .map(|i| {
                    (8000.0
                        * (2.0 * std::f64::consts::PI * 1000.0 * (i + f * n) as f64 / rate as f64)
                            .sin()) as i16
                })
                .collect()
        };
        let rms = |x: &[i16]| {
            (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
        };
        for f in 0..5 {
            m.frame_mut(1).unwrap().copy_from_slice(&tone(8000, 160, f));
            m.frame_mut(2)
                .unwrap()
                .copy_from_slice(&tone(16000, 320, f));
            m.mix();
        }
        let (a, b) = (rms(m.output(1).unwrap()), rms(m.output(2).unwrap()));
        assert_eq!(m.output(1).unwrap().len(), 160);
        assert_eq!(m.output(2).unwrap().len(), 320);
        assert!((5000.0..6200.0).contains(&a), "8k listener rms {a}");
        assert!((5000.0..6200.0).contains(&b), "16k listener rms {b}");
    }
}
