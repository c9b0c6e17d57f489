//! What a sipp caller heard, window by window: the tones (Goertzel) in each 100 ms of
//! the audio captured towards it, checked strictly (nothing outside what its
//! subscriptions allow) and for continuity.

use crate::media::{decode_window, received, tones_present, Law, RtpPacket};

/// The callers' tones the checks look for.
pub const FREQS: [f64; 3] = [440.0, 660.0, 880.0];

/// Tones heard by the caller on `port` in each 100 ms window of [from, to).
pub fn heard_windows(
    packets: &[RtpPacket],
    port: u16,
    law: Law,
    from: f64,
    to: f64,
) -> Vec<(f64, Vec<u32>, f64)> {
    let rx = received(packets, port);
    let mut out = Vec::new();
    let mut t = from;
    while t + 0.1 <= to {
        let pcm = decode_window(&rx, law, t, t + 0.1);
        if pcm.len() >= 600 {
            let (tones, rms) = tones_present(&pcm, &FREQS, 8000.0);
            out.push((t, tones, rms));
        }
        t += 0.1;
    }
    out
}

/// Every 100 ms window of [from, to) carries exactly `want`, loud enough.
pub fn assert_hears(
    packets: &[RtpPacket],
    who: &str,
    port: u16,
    law: Law,
    from: f64,
    to: f64,
    want: &[u32],
) {
    let windows = heard_windows(packets, port, law, from, to);
    assert_windows(who, &windows, from, to, want);
}

/// Like [`assert_hears`] for a stream that is still starting: `want` must be heard within
/// 1.5 s of `from` (senders start their media at their own pace under load), then in every
/// later window.
pub fn assert_settles(
    packets: &[RtpPacket],
    who: &str,
    port: u16,
    law: Law,
    from: f64,
    to: f64,
    want: &[u32],
) {
    let windows = heard_windows(packets, port, law, from, to);
    let first = windows.iter().position(|(_, tones, _)| tones == want);
    let Some(first) = first.filter(|&i| windows[i].0 < from + 1.5) else {
        panic!("{who} never heard {want:?} in the first 1.5 s: {windows:?}");
    };
    assert_windows(who, &windows[first..], windows[first].0, to, want);
}

/// Subscriptions are checked strictly: no window may carry a tone outside `want`
/// (nothing leaks). Continuity is checked against a threshold: every wanted tone is
/// present, loud enough, in at least 90 % of the windows (an audio clock starved for a
/// moment on a loaded machine is not a routing error).
pub fn assert_windows(
    who: &str,
    windows: &[(f64, Vec<u32>, f64)],
    from: f64,
    to: f64,
    want: &[u32],
) {
    assert!(
        windows.len() as f64 >= (to - from) * 10.0 * 0.8,
        "{who}: too few audio windows ({})",
        windows.len()
    );
    for (t, tones, rms) in windows.iter() {
        let leaked: Vec<&u32> = tones.iter().filter(|f| !want.contains(f)).collect();
        assert!(
            leaked.is_empty(),
            "{who} at +{:.2}s heard {leaked:?} (rms {rms:.0}), allowed {want:?}",
            t - from
        );
    }
    let complete = windows
        .iter()
        .filter(|(_, tones, rms)| tones == want && *rms > 1000.0)
        .count();
    assert!(
        complete as f64 >= windows.len() as f64 * 0.9,
        "{who}: only {complete} of {} windows carried exactly {want:?}: {windows:?}",
        windows.len()
    );
}

/// The tones of `x` as most of its 100 ms windows that carry sound (rms over 300) have
/// them, and the rms of the whole: robust where one Goertzel over seconds is not (a
/// single packet concealed on a loaded machine breaks a tone's phase, and a phase jump
/// cancels a long coherent sum).
pub fn tones_mostly(x: &[i16], freqs: &[f64], rate: f64) -> (Vec<u32>, f64) {
    let window = (rate / 10.0) as usize;
    let mut counts: Vec<(Vec<u32>, usize)> = Vec::new();
    for w in x.chunks_exact(window.max(1)) {
        let (tones, rms) = tones_present(w, freqs, rate);
        if rms <= 300.0 {
            continue;
        }
        match counts.iter_mut().find(|(t, _)| *t == tones) {
            Some((_, n)) => *n += 1,
            None => counts.push((tones, 1)),
        }
    }
    let all_rms = crate::media::rms(x);
    let most = counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t)
        .unwrap_or_default();
    (most, all_rms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_with_phase_jumps_and_silence_is_still_the_tone() {
        let mut x = Vec::new();
        for segment in 0..20 {
            // 100 ms of 440 Hz starting at a new phase each time, then 50 ms of silence.
            let phase = segment as f64 * 1.7;
            x.extend((0..800).map(|i| {
                (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0 + phase).sin())
                    as i16
            }));
            x.extend(std::iter::repeat_n(0i16, 400));
        }
        assert_eq!(tones_mostly(&x, &FREQS, 8000.0).0, vec![440]);
        assert_eq!(
            tones_mostly(&vec![0i16; 8000], &FREQS, 8000.0).0,
            Vec::<u32>::new()
        );
    }
}
