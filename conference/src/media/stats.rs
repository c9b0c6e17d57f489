//! Media-path statistics that every session actor updates without locks
//! (atomics only), rendered as Prometheus text by the HTTP side.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds.
const BOUNDS_US: [u64; 16] = [
    1_000, 2_500, 5_000, 10_000, 15_000, 20_000, 22_500, 25_000, 27_500, 30_000, 32_500, 35_000,
    40_000, 60_000, 100_000, 200_000,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BOUNDS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        if let Some(i) = BOUNDS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, plus the total count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let buckets = BOUNDS_US
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                cumulative += c.load(Ordering::Relaxed);
                (*b as f64 / 1e6, cumulative)
            })
            .collect();
        (
            buckets,
            self.count.load(Ordering::Relaxed),
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }

    /// The `q` quantile's bucket bound in seconds (`None` without samples).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let (buckets, count, _) = self.snapshot();
        if count == 0 {
            return None;
        }
        let want = (q * count as f64).ceil() as u64;
        Some(
            buckets
                .iter()
                .find(|(_, c)| *c >= want)
                .map_or(f64::INFINITY, |(b, _)| *b),
        )
    }
}

/// Counters and histograms of the media path, shared by every session actor.
#[derive(Debug, Default)]
pub struct MediaStats {
    /// From an RTP packet's arrival to the tick that sends the mix carrying its audio.
    pub mix_latency: LatencyHistogram,
    /// Audio frames mixed (one per listener per 20 ms).
    pub frames_mixed: AtomicU64,
    /// Packets the jitter buffers had to conceal.
    pub concealed: AtomicU64,
    /// Pulls that found a playing jitter buffer empty (it then re-buffers).
    pub jitter_underruns: AtomicU64,
    /// Packets skipped to shorten a jitter buffer that was deeper than needed.
    pub jitter_shrinks: AtomicU64,
    /// Media frames received from browsers' publishing connections.
    pub webrtc_media_in: AtomicU64,
    /// Media frames forwarded into browsers' subscribing connections.
    pub webrtc_media_out: AtomicU64,
    /// Of those, frames sent at once (packetized and protected as written, no timeout).
    pub webrtc_media_out_now: AtomicU64,
    /// Runs of a browser's peer connection until it waits (input, media written, timeout).
    pub webrtc_drives: AtomicU64,
    /// Outputs polled from peer connections (transmits, events, the timeout ending a drive).
    pub webrtc_polls: AtomicU64,
    /// Timeouts handed to peer connections (str0m packetizes written media in one).
    pub webrtc_timeouts: AtomicU64,
    /// Datagrams the peer connections produced.
    pub webrtc_transmits: AtomicU64,
    pub signaling_connects: AtomicU64,
    pub signaling_resumed: AtomicU64,
    pub signaling_lost: AtomicU64,
    pub devices_ended: AtomicU64,
    pub dtmf_from_browsers: AtomicU64,
    /// Devices refused because another participant's device uses their `uniqueId`.
    pub devices_refused: AtomicU64,
    /// Devices' SDP offers refused (publishing or, v2, receiving): limits, unknown
    /// endpoints, stream ids of others, unparseable SDP.
    pub offers_refused: AtomicU64,
    /// Browser audio frames decoded for SIP legs (only while a leg hears them).
    pub browser_audio_decoded: AtomicU64,
    /// Datagrams routed to a session that none of its peer connections accepted.
    pub datagrams_unaccepted: AtomicU64,
    /// Control inputs refused because a session's queue was full.
    pub session_inputs_dropped: AtomicU64,
    /// Notes for a device's signaling connection dropped because it did not read them.
    pub device_notes_dropped: AtomicU64,
    /// A participant's media (calls, devices) moved out of a session or the lobby.
    pub media_moved: AtomicU64,
}

/// One session core's counters, plain integers folded into [`MediaStats`] periodically
/// (no shared atomics per packet).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LocalStats {
    pub mix_latency: [u64; BOUNDS_US.len()],
    pub mix_latency_count: u64,
    pub mix_latency_sum_us: u64,
    pub frames_mixed: u64,
    pub concealed: u64,
    pub jitter_underruns: u64,
    pub jitter_shrinks: u64,
    pub webrtc_media_in: u64,
    pub webrtc_media_out: u64,
    pub webrtc_media_out_now: u64,
    pub webrtc_drives: u64,
    pub webrtc_polls: u64,
    pub webrtc_timeouts: u64,
    pub webrtc_transmits: u64,
    pub signaling_connects: u64,
    pub signaling_resumed: u64,
    pub signaling_lost: u64,
    pub devices_ended: u64,
    pub dtmf_from_browsers: u64,
    pub devices_refused: u64,
    pub offers_refused: u64,
    pub browser_audio_decoded: u64,
    pub datagrams_unaccepted: u64,
    pub media_moved: u64,
}

impl LocalStats {
    pub fn observe_mix_latency(&mut self, us: u64) {
        if let Some(i) = BOUNDS_US.iter().position(|&b| us <= b) {
            self.mix_latency[i] += 1;
        }
        self.mix_latency_count += 1;
        self.mix_latency_sum_us += us;
    }

    /// Add these counts to `into`.
    pub fn fold_into(self, into: &MediaStats) {
        let add = |a: &AtomicU64, v: u64| {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        for (bucket, v) in into.mix_latency.buckets.iter().zip(self.mix_latency) {
            add(bucket, v);
        }
        add(&into.mix_latency.count, self.mix_latency_count);
        add(&into.mix_latency.sum_us, self.mix_latency_sum_us);
        add(&into.frames_mixed, self.frames_mixed);
        add(&into.concealed, self.concealed);
        add(&into.jitter_underruns, self.jitter_underruns);
        add(&into.jitter_shrinks, self.jitter_shrinks);
        add(&into.webrtc_media_in, self.webrtc_media_in);
        add(&into.webrtc_media_out, self.webrtc_media_out);
        add(&into.webrtc_media_out_now, self.webrtc_media_out_now);
        add(&into.webrtc_drives, self.webrtc_drives);
        add(&into.webrtc_polls, self.webrtc_polls);
        add(&into.webrtc_timeouts, self.webrtc_timeouts);
        add(&into.webrtc_transmits, self.webrtc_transmits);
        add(&into.signaling_connects, self.signaling_connects);
        add(&into.signaling_resumed, self.signaling_resumed);
        add(&into.signaling_lost, self.signaling_lost);
        add(&into.devices_ended, self.devices_ended);
        add(&into.dtmf_from_browsers, self.dtmf_from_browsers);
        add(&into.devices_refused, self.devices_refused);
        add(&into.offers_refused, self.offers_refused);
        add(&into.browser_audio_decoded, self.browser_audio_decoded);
        add(&into.datagrams_unaccepted, self.datagrams_unaccepted);
        add(&into.media_moved, self.media_moved);
    }
}

impl MediaStats {
    /// Prometheus text exposition of these metrics (prefix `patchbay_`).
    pub fn render(&self, out: &mut String) {
        let (buckets, count, sum) = self.mix_latency.snapshot();
        let _ = writeln!(out, "# HELP patchbay_mix_latency_seconds From an RTP packet's arrival to the send of the mix carrying its audio.");
        let _ = writeln!(out, "# TYPE patchbay_mix_latency_seconds histogram");
        for (bound, c) in buckets {
            let _ = writeln!(
                out,
                "patchbay_mix_latency_seconds_bucket{{le=\"{bound}\"}} {c}"
            );
        }
        let _ = writeln!(
            out,
            "patchbay_mix_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "patchbay_mix_latency_seconds_sum {sum}");
        let _ = writeln!(out, "patchbay_mix_latency_seconds_count {count}");
        for (name, help, v) in [
            (
                "media_frames_mixed",
                "Audio frames mixed, one per listener per 20 ms.",
                &self.frames_mixed,
            ),
            (
                "media_concealed",
                "Packets concealed by the jitter buffers (lost or late).",
                &self.concealed,
            ),
            (
                "media_jitter_underruns",
                "Pulls that found a playing jitter buffer empty (it then re-buffers).",
                &self.jitter_underruns,
            ),
            (
                "media_jitter_shrinks",
                "Packets skipped to shorten a jitter buffer deeper than its stream needs.",
                &self.jitter_shrinks,
            ),
            (
                "webrtc_media_in",
                "Media frames received from browsers.",
                &self.webrtc_media_in,
            ),
            (
                "webrtc_media_out",
                "Media frames forwarded to browsers.",
                &self.webrtc_media_out,
            ),
            (
                "webrtc_media_out_now",
                "Media frames to browsers sent at once as written (no timeout, no queue).",
                &self.webrtc_media_out_now,
            ),
            (
                "webrtc_drives",
                "Runs of browsers' peer connections until they wait (input, media written, timeout).",
                &self.webrtc_drives,
            ),
            (
                "webrtc_polls",
                "Outputs polled from browsers' peer connections.",
                &self.webrtc_polls,
            ),
            (
                "webrtc_timeouts",
                "Timeouts handed to browsers' peer connections (written media is packetized in one).",
                &self.webrtc_timeouts,
            ),
            (
                "webrtc_transmits",
                "Datagrams produced by browsers' peer connections.",
                &self.webrtc_transmits,
            ),
            (
                "signaling_connects",
                "Device signaling connections accepted (new devices and resumes).",
                &self.signaling_connects,
            ),
            (
                "signaling_resumed",
                "Signaling connections that resumed a device whose socket was lost.",
                &self.signaling_resumed,
            ),
            (
                "signaling_lost",
                "Signaling sockets lost without a leave (the device may resume).",
                &self.signaling_lost,
            ),
            (
                "devices_ended",
                "Browser devices gone (left, removed, replaced, dead heartbeat, never resumed).",
                &self.devices_ended,
            ),
            (
                "dtmf_from_browsers",
                "DTMF events received from browsers (RFC 4733).",
                &self.dtmf_from_browsers,
            ),
            (
                "devices_refused",
                "Devices refused because a device of another participant uses their uniqueId.",
                &self.devices_refused,
            ),
            (
                "webrtc_offers_refused",
                "Devices' SDP offers refused (limits, unknown endpoints, others' stream ids, bad SDP).",
                &self.offers_refused,
            ),
            (
                "browser_audio_decoded",
                "Browser audio frames decoded for SIP legs (only while a leg hears them).",
                &self.browser_audio_decoded,
            ),
            (
                "webrtc_datagrams_unaccepted",
                "Datagrams routed to a session that none of its peer connections accepted.",
                &self.datagrams_unaccepted,
            ),
            (
                "session_inputs_dropped",
                "Control inputs refused because a session's queue was full.",
                &self.session_inputs_dropped,
            ),
            (
                "device_notes_dropped",
                "Notes for a device's signaling connection dropped because it did not read them.",
                &self.device_notes_dropped,
            ),
            (
                "media_moved",
                "Moves of a participant's calls and devices between a session and the lobby (parked).",
                &self.media_moved,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP patchbay_{name} {help}\n# TYPE patchbay_{name} counter"
            );
            let _ = writeln!(out, "patchbay_{name}_total {}", v.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_text() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in [1u64, 3, 12, 12, 12, 18, 22, 35, 50, 90] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile(0.5), Some(0.015));
        assert_eq!(h.quantile(0.99), Some(0.1));
        let s = MediaStats::default();
        s.mix_latency.observe(Duration::from_millis(7));
        let mut text = String::new();
        s.render(&mut text);
        assert!(
            text.contains("patchbay_mix_latency_seconds_bucket{le=\"0.01\"} 1"),
            "{text}"
        );
        assert!(text.contains("patchbay_mix_latency_seconds_count 1"));
    }
}
