//! Adaptive jitter buffer for one incoming RTP stream (sans-IO).
//!
//! Packets go in with their arrival time; the consumer pulls them in sequence
//! order when it needs audio. Reordering and duplicates are absorbed, losses
//! come out as [`Pull::Lost`] (the decoder conceals them), sequence numbers
//! wrap, an SSRC change restarts the stream.
//!
//! Playout delay adapts: the target is three times the RFC 3550 interarrival
//! jitter, between 20 and 200 ms. The buffer (re)starts playing once it holds
//! the target; an underrun re-buffers (the delay grows with the jitter that
//! caused it), and when the buffer has held more than target plus a packet for
//! a second it drops a packet every 200 ms until it is back at the target.
//!
//! With the pull time ([`JitterBuffer::pull_at`]) it also measures what the target
//! only estimates (the RFC 3550 jitter counts early packets as much as late ones, so
//! a bursty sender that is never late inflates it): when, for two seconds on end,
//! every packet played had waited more than a packet's time (with a margin), the
//! stream is a packet deeper than it needs, and one packet is skipped so that it
//! plays a packet's time sooner.

/// How many packets the buffer can hold (at 20 ms: 1.28 s).
const CAPACITY: usize = 64;
/// Consecutive pulls (≈ 2 s at 20 ms) whose packet had waited more than a packet's
/// time plus [`EARLY_MARGIN_US`] before playing one packet sooner.
const EARLY_AFTER: u32 = 100;
/// The margin that wait must exceed a packet's time by.
const EARLY_MARGIN_US: u64 = 4_000;
/// Consecutive over-full pulls (≈ 1 s at 20 ms) before dropping a packet…
const SHRINK_AFTER: u32 = 50;
/// …and then one more every this many pulls while still over-full.
const SHRINK_EVERY: u32 = 10;

pub const MIN_TARGET_MS: u32 = 20;
pub const MAX_TARGET_MS: u32 = 200;

#[derive(Debug, Default)]
struct Slot {
    seq: Option<u64>,
    ts: u32,
    payload_type: u8,
    arrival_us: u64,
    data: Vec<u8>,
}

/// What the consumer gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Pull<'a> {
    /// The next packet.
    Packet {
        payload_type: u8,
        timestamp: u32,
        /// When it arrived (the `arrival_us` it was pushed with).
        arrival_us: u64,
        payload: &'a [u8],
    },
    /// The next packet is missing (lost or too late): conceal one packet's worth.
    Lost,
    /// Nothing to play: not started, re-buffering, or the sender is silent.
    Empty,
}

/// Counters for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    pub dropped_to_shrink: u64,
    pub resets: u64,
    /// Pulls that found nothing while playing (the buffer re-buffers).
    pub underruns: u64,
}

#[derive(Debug)]
pub struct JitterBuffer {
    clock_rate: u32,
    slots: Vec<Slot>,
    ssrc: Option<u32>,
    next: Option<u64>,
    highest: Option<u64>,
    playing: bool,
    /// Samples per packet, learnt from timestamps (default: 20 ms).
    samples_per_packet: u32,
    last_ts: Option<(u64, u32)>,
    /// RFC 3550 interarrival jitter, in timestamp units.
    jitter: f64,
    last_transit: Option<i64>,
    over_full: u32,
    /// Consecutive pulls whose packet could have played a pull earlier (see `pull_at`).
    early: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(clock_rate: u32) -> JitterBuffer {
        JitterBuffer {
            clock_rate,
            slots: (0..CAPACITY).map(|_| Slot::default()).collect(),
            ssrc: None,
            next: None,
            highest: None,
            playing: false,
            samples_per_packet: clock_rate / 50,
            last_ts: None,
            jitter: 0.0,
            last_transit: None,
            over_full: 0,
            early: 0,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Current interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / self.clock_rate as f64
    }

    /// Current playout delay target in milliseconds.
    pub fn target_ms(&self) -> u32 {
        ((3.0 * self.jitter_ms()).ceil() as u32).clamp(MIN_TARGET_MS, MAX_TARGET_MS)
    }

    fn packet_ms(&self) -> u32 {
        (self.samples_per_packet * 1000 / self.clock_rate).max(1)
    }

    /// Audio buffered ahead of the playout point, in milliseconds.
    pub fn buffered_ms(&self) -> u32 {
        match (self.next, self.highest) {
            (Some(n), Some(h)) if h >= n => (h - n + 1) as u32 * self.packet_ms(),
            _ => 0,
        }
    }

    fn reset(&mut self) {
        for s in &mut self.slots {
            s.seq = None;
        }
        self.next = None;
        self.highest = None;
        self.playing = false;
        self.last_ts = None;
        self.last_transit = None;
        self.over_full = 0;
        self.early = 0;
        self.stats.resets += 1;
    }

    /// A packet arrived at `arrival_us` (any monotonic microsecond clock).
    pub fn push(
        &mut self,
        ssrc: u32,
        seq: u16,
        ts: u32,
        payload_type: u8,
        payload: &[u8],
        arrival_us: u64,
    ) {
        if self.ssrc != Some(ssrc) {
            if self.ssrc.is_some() {
                self.reset();
            }
            self.ssrc = Some(ssrc);
        }
        let ext = match self.highest {
            None => seq as u64 + (1 << 16),
            Some(h) => {
                let delta = seq.wrapping_sub(h as u16) as i16 as i64;
                (h as i64 + delta).max(0) as u64
            }
        };
        self.stats.received += 1;

        // Interarrival jitter (RFC 3550 §6.4.1).
        // Arrival in the RTP clock's units (i128: epoch microseconds times 48 kHz overflow i64).
        let arrival_units = (arrival_us as i128 * self.clock_rate as i128 / 1_000_000) as i64;
        let transit = arrival_units - ts as i64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() as f64;
            // Timestamp wrap or a jump: ignore absurd samples.
            if d < self.clock_rate as f64 * 2.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);

        // Packet duration from consecutive packets.
        if let Some((last_seq, last_ts)) = self.last_ts {
            if ext == last_seq + 1 {
                let spp = ts.wrapping_sub(last_ts);
                if spp > 0 && spp <= self.clock_rate / 10 * 2 {
                    self.samples_per_packet = spp;
                }
            }
        }
        if self.last_ts.is_none_or(|(s, _)| ext > s) {
            self.last_ts = Some((ext, ts));
        }

        let next = *self.next.get_or_insert(ext);
        if ext < next {
            self.stats.late += 1;
            return;
        }
        if ext >= next + CAPACITY as u64 {
            // Far ahead (a jump or a long gap): restart from here.
            self.reset();
            self.next = Some(ext);
            self.last_ts = Some((ext, ts));
        }
        let slot = &mut self.slots[(ext % CAPACITY as u64) as usize];
        if slot.seq == Some(ext) {
            self.stats.duplicates += 1;
            return;
        }
        slot.seq = Some(ext);
        slot.ts = ts;
        slot.payload_type = payload_type;
        slot.arrival_us = arrival_us;
        slot.data.clear();
        slot.data.extend_from_slice(payload);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
    }

    /// The next packet to play, pulled at `now_us` (the clock of the arrivals): as
    /// [`Self::pull`], and one packet sooner once every packet played for a while had
    /// already waited more than a packet's time (it could all have played a pull earlier).
    pub fn pull_at(&mut self, now_us: u64) -> Pull<'_> {
        let packet_us = self.packet_ms() as u64 * 1000;
        if let (true, Some(next)) = (self.playing, self.next) {
            let slot = |seq: u64| &self.slots[(seq % CAPACITY as u64) as usize];
            if self.early >= EARLY_AFTER {
                self.early = 0;
                // Play the following packet now (it is here: it too waited that long).
                if slot(next + 1).seq == Some(next + 1) {
                    self.stats.dropped_to_shrink += 1;
                    self.next = Some(next + 1);
                    return self.pull();
                }
            }
            let now = slot(next);
            let early = now.seq == Some(next)
                && now_us.saturating_sub(now.arrival_us) >= packet_us + EARLY_MARGIN_US;
            self.early = if early { self.early + 1 } else { 0 };
        }
        self.pull()
    }

    /// The next packet to play, in order.
    pub fn pull(&mut self) -> Pull<'_> {
        let (Some(next), Some(highest)) = (self.next, self.highest) else {
            return Pull::Empty;
        };
        if highest < next {
            // Underrun: re-buffer up to the (possibly grown) target.
            if self.playing {
                self.stats.underruns += 1;
            }
            self.playing = false;
            return Pull::Empty;
        }
        if !self.playing {
            if self.buffered_ms() < self.target_ms() {
                return Pull::Empty;
            }
            self.playing = true;
        }
        // Shrink back when calm: more than the target still queued behind the packet
        // being played, for a second on end → drop packets until it is not.
        if self.buffered_ms() > self.target_ms().max(self.packet_ms()) {
            self.over_full += 1;
            if self.over_full >= SHRINK_AFTER {
                self.over_full = SHRINK_AFTER - SHRINK_EVERY;
                self.stats.dropped_to_shrink += 1;
                self.next = Some(next + 1);
                return self.pull();
            }
        } else {
            self.over_full = 0;
        }
        self.next = Some(next + 1);
        let slot = &self.slots[(next % CAPACITY as u64) as usize];
        if slot.seq == Some(next) {
            Pull::Packet {
                payload_type: slot.payload_type,
                timestamp: slot.ts,
                arrival_us: slot.arrival_us,
                payload: &slot.data,
            }
        } else {
            self.stats.lost += 1;
            Pull::Lost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0x1234;

    fn push(jb: &mut JitterBuffer, seq: u16, at_ms: u64) {
        jb.push(
            SSRC,
            seq,
            (seq as u32).wrapping_mul(160),
            0,
            &[seq as u8; 160],
            at_ms * 1000,
        );
    }

    fn seq_of(p: Pull<'_>) -> Option<u8> {
        match p {
            Pull::Packet { payload, .. } => Some(payload[0]),
            _ => None,
        }
    }

    #[test]
    fn in_order_plays_at_once_with_minimal_delay() {
        let mut jb = JitterBuffer::new(8000);
        assert_eq!(jb.pull(), Pull::Empty);
        for s in 0..5u16 {
            push(&mut jb, s, s as u64 * 20);
            assert_eq!(
                seq_of(jb.pull()),
                Some(s as u8),
                "one packet buffered is enough on a calm link"
            );
        }
        assert_eq!(jb.target_ms(), MIN_TARGET_MS);
    }

    /// Pull every 20 ms (the first pull skipped) from a stream whose packets arrive in
    /// pairs, 5 ms before a pull: bursty (the RFC 3550 jitter, which counts early as
    /// much as late, gets large) but never late. Returns how long each played packet waited.
    fn pairs(pulls: u64) -> (JitterBuffer, Vec<Option<u64>>) {
        let mut jb = JitterBuffer::new(8000);
        let mut waited = Vec::new();
        let mut sent = 0u64;
        for i in 0..pulls {
            let now_ms = 1000 + 20 * i + 15;
            // Pairs of packets (2m, 2m+1) arrive at 1000 + 40m + 10.
            while 1000 + 40 * (sent / 2) + 10 <= now_ms {
                let at = 1000 + 40 * (sent / 2) + 10;
                push(&mut jb, sent as u16, at);
                sent += 1;
            }
            if i == 0 {
                // The consumer starts a pull late: from then on every packet waits one
                // packet longer than it needs to.
                continue;
            }
            waited.push(match jb.pull_at(now_ms * 1000) {
                Pull::Packet { arrival_us, .. } => Some(now_ms * 1000 - arrival_us),
                _ => None,
            });
        }
        (jb, waited)
    }

    #[test]
    fn a_bursty_stream_that_is_never_late_is_not_buffered_deeper_than_it_needs() {
        let (jb, waited) = pairs(400);
        assert!(
            jb.target_ms() >= 40,
            "the estimate alone would keep two packets: {}",
            jb.target_ms()
        );
        // Once playing, every pull has a packet: shrinking never starved the stream.
        let first = waited.iter().position(Option::is_some).expect("plays");
        assert!(waited[first..].iter().all(Option::is_some), "{waited:?}");
        let mean = |w: &[Option<u64>]| w.iter().flatten().sum::<u64>() / w.len() as u64;
        let early = mean(&waited[first..first + 50]);
        let late = mean(&waited[349..]);
        // The best this stream allows: the first of a pair waits 5 ms, the second 25 ms.
        assert_eq!(late, 15_000, "waits {early} µs at first, then {late} µs");
        assert!(
            early >= late + 20_000,
            "waits {early} µs at first, then {late} µs"
        );
    }

    #[test]
    fn reordering_and_duplicates_are_absorbed() {
        let mut jb = JitterBuffer::new(8000);
        for (s, at) in [(0u16, 0u64), (2, 40), (1, 41), (1, 42), (3, 60)] {
            push(&mut jb, s, at);
        }
        let got: Vec<_> = (0..4).map(|_| seq_of(jb.pull())).collect();
        assert_eq!(got, vec![Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(jb.stats().duplicates, 1);
    }

    #[test]
    fn losses_are_reported_for_concealment() {
        let mut jb = JitterBuffer::new(8000);
        push(&mut jb, 0, 0);
        push(&mut jb, 2, 40);
        assert_eq!(seq_of(jb.pull()), Some(0));
        assert_eq!(jb.pull(), Pull::Lost);
        assert_eq!(seq_of(jb.pull()), Some(2));
        assert_eq!(jb.stats().lost, 1);
        // Late arrival of 1 is dropped.
        push(&mut jb, 1, 70);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = JitterBuffer::new(8000);
        let mut out = Vec::new();
        for (i, s) in [65533u16, 65534, 65535, 0, 1, 2].into_iter().enumerate() {
            push(&mut jb, s, i as u64 * 20);
            out.push(seq_of(jb.pull()));
        }
        assert_eq!(
            out,
            vec![Some(253), Some(254), Some(255), Some(0), Some(1), Some(2)]
        );
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn ssrc_change_restarts() {
        let mut jb = JitterBuffer::new(8000);
        push(&mut jb, 100, 0);
        assert_eq!(seq_of(jb.pull()), Some(100));
        jb.push(0x9999, 7, 5000, 0, &[7; 160], 20_000);
        assert_eq!(seq_of(jb.pull()), Some(7));
        assert_eq!(jb.stats().resets, 1);
    }

    #[test]
    fn target_grows_with_jitter_and_shrinks_when_calm() {
        let mut jb = JitterBuffer::new(8000);
        // ±30 ms of arrival jitter.
        for s in 0..200u16 {
            let wobble = if s % 2 == 0 { 0 } else { 30 };
            push(&mut jb, s, s as u64 * 20 + wobble);
        }
        let noisy = jb.target_ms();
        assert!(noisy >= 60, "target {noisy} ms under 30 ms jitter");
        assert!(noisy <= MAX_TARGET_MS);
        // Calm again: the estimate decays and the target comes back down.
        for s in 200..600u16 {
            push(&mut jb, s, s as u64 * 20 + 1000);
        }
        assert_eq!(jb.target_ms(), MIN_TARGET_MS);
    }

    #[test]
    fn an_over_full_buffer_drops_to_catch_up() {
        let mut jb = JitterBuffer::new(8000);
        // 10 packets arrive in a burst, then one per 20 ms.
        for s in 0..10u16 {
            push(&mut jb, s, 0);
        }
        for (s, i) in (10u16..).zip(0..200u64) {
            let _ = jb.pull();
            push(&mut jb, s, 20 * (i + 1));
        }
        assert!(jb.stats().dropped_to_shrink > 0);
        assert!(
            jb.buffered_ms() <= jb.target_ms() + 40,
            "still {} ms buffered",
            jb.buffered_ms()
        );
    }

    #[test]
    fn epoch_microsecond_arrivals_at_48khz() {
        // Kernel timestamps are microseconds since 1970: the clock maths must not overflow.
        let mut jb = JitterBuffer::new(48000);
        let t0 = 1_795_000_000_000_000u64;
        for s in 0..10u16 {
            jb.push(
                SSRC,
                s,
                s as u32 * 960,
                111,
                &[1; 80],
                t0 + s as u64 * 20_000,
            );
            assert!(matches!(jb.pull(), Pull::Packet { .. }));
        }
        assert_eq!(jb.target_ms(), MIN_TARGET_MS);
    }

    #[test]
    fn packet_duration_follows_ptime() {
        let mut jb = JitterBuffer::new(8000);
        for s in 0..3u16 {
            jb.push(SSRC, s, s as u32 * 240, 0, &[0; 240], s as u64 * 30_000);
        }
        assert_eq!(jb.packet_ms(), 30);
    }
}
