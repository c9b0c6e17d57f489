//! An estimated MOS for a leg or a browser track, from what the media plane measures:
//! the E-model (ITU-T G.107) in its usual VoIP reduction (the defaults of G.107 for
//! everything not measured, so R0 − Is = 93.2), with the codec's equipment impairment
//! and packet-loss robustness from ITU-T G.113 Appendix I, the delay impairment as
//! Cole & Rosenbluth fitted it to G.107, and the jitter buffer's delay counted in the
//! one-way delay. Pure arithmetic: callers pass the figures (round-trip time from RTCP,
//! interarrival jitter, loss) for the issue-14 console and `/metrics`.

/// What a codec brings to the E-model: its equipment impairment `ie` and its
/// packet-loss robustness `bpl` (G.113 Appendix I; with packet-loss concealment).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecImpairment {
    pub ie: f64,
    pub bpl: f64,
}

impl CodecImpairment {
    /// G.711 with packet-loss concealment (G.113 I.2: Ie 0, Bpl 25.1).
    pub const G711: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// G.722 at 64 kbit/s with concealment, on the narrowband scale (Ie 0: it is at
    /// least as good as G.711 there; Bpl as G.711 with concealment).
    pub const G722: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// Opus (voice, FEC): not in G.113; taken as transparent on the narrowband scale,
    /// with the robustness of a codec with in-band FEC and concealment.
    pub const OPUS: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 30.0 };
}

/// What was measured on a stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Packets lost, in percent of those expected (0–100).
    pub loss_percent: f64,
    /// Round-trip time, ms (one-way delay is taken as half of it).
    pub rtt_ms: f64,
    /// Interarrival jitter (RFC 3550), ms: a jitter buffer adds about twice it.
    pub jitter_ms: f64,
    /// Packetization plus our own buffering, ms (added to the one-way delay).
    pub fixed_delay_ms: f64,
}

/// The transmission rating R (0–100) for `m` through `codec`.
pub fn r_factor(codec: CodecImpairment, m: Measured) -> f64 {
    // G.107 defaults: R0 − Is = 93.2, A = 0.
    const BASE: f64 = 93.2;
    let ppl = m.loss_percent.clamp(0.0, 100.0);
    // Random loss (BurstR = 1): Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl + Bpl).
    let ie_eff = codec.ie + (95.0 - codec.ie) * ppl / (ppl + codec.bpl);
    let one_way =
        (m.rtt_ms.max(0.0) / 2.0) + 2.0 * m.jitter_ms.max(0.0) + m.fixed_delay_ms.max(0.0);
    let id = 0.024 * one_way
        + if one_way > 177.3 {
            0.11 * (one_way - 177.3)
        } else {
            0.0
        };
    (BASE - id - ie_eff).clamp(0.0, 100.0)
}

/// The MOS (1–4.5) that R maps to (G.107 Annex B).
pub fn mos_of_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6
    }
}

/// The estimated MOS for `m` through `codec`.
pub fn mos(codec: CodecImpairment, m: Measured) -> f64 {
    mos_of_r(r_factor(codec, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Measured {
        Measured {
            loss_percent: 0.0,
            rtt_ms: 0.0,
            jitter_ms: 0.0,
            fixed_delay_ms: 0.0,
        }
    }

    #[test]
    fn a_clean_g711_path_rates_as_g107_says() {
        // G.107's default R is 93.2, MOS 4.41.
        let r = r_factor(CodecImpairment::G711, clean());
        assert!((r - 93.2).abs() < 1e-9, "{r}");
        assert!((mos_of_r(93.2) - 4.41).abs() < 0.01, "{}", mos_of_r(93.2));
        // The mapping's fixed points.
        assert_eq!(mos_of_r(0.0), 1.0);
        assert_eq!(mos_of_r(100.0), 4.5);
        assert!((mos_of_r(50.0) - 2.58).abs() < 0.01, "{}", mos_of_r(50.0));
    }

    #[test]
    fn loss_and_delay_lower_the_score_and_robust_codecs_less() {
        let lossy = Measured {
            loss_percent: 5.0,
            ..clean()
        };
        // G.711 with concealment at 5 % random loss: Ie,eff = 95 · 5 / 30.1 ≈ 15.8.
        let r = r_factor(CodecImpairment::G711, lossy);
        assert!((r - (93.2 - 95.0 * 5.0 / 30.1)).abs() < 1e-9, "{r}");
        assert!(mos(CodecImpairment::G711, lossy) < mos(CodecImpairment::G711, clean()));
        assert!(mos(CodecImpairment::OPUS, lossy) > mos(CodecImpairment::G711, lossy));
        // Delay: nothing much below 177 ms one way, then it costs fast.
        let near = Measured {
            rtt_ms: 200.0,
            ..clean()
        };
        let far = Measured {
            rtt_ms: 600.0,
            ..clean()
        };
        let (r_near, r_far) = (
            r_factor(CodecImpairment::G711, near),
            r_factor(CodecImpairment::G711, far),
        );
        assert!((r_near - (93.2 - 0.024 * 100.0)).abs() < 1e-9, "{r_near}");
        assert!(
            (r_far - (93.2 - 0.024 * 300.0 - 0.11 * (300.0 - 177.3))).abs() < 1e-9,
            "{r_far}"
        );
        // Jitter counts twice (the buffer that absorbs it).
        let jittery = Measured {
            jitter_ms: 50.0,
            ..clean()
        };
        assert_eq!(
            r_factor(CodecImpairment::G711, jittery),
            r_factor(
                CodecImpairment::G711,
                Measured {
                    rtt_ms: 200.0,
                    ..clean()
                }
            )
        );
        // Everything lost: R ≈ 17 (the model's own limit for random loss), MOS ≈ 1.3.
        let gone = Measured {
            loss_percent: 100.0,
            ..clean()
        };
        let m = mos(CodecImpairment::G711, gone);
        assert!((1.0..1.5).contains(&m), "{m}");
        // Hostile figures stay in range.
        let silly = Measured {
            loss_percent: f64::INFINITY,
            rtt_ms: -5.0,
            jitter_ms: 1e12,
            fixed_delay_ms: 0.0,
        };
        let m = mos(CodecImpairment::OPUS, silly);
        assert!((1.0..=4.5).contains(&m), "{m}");
    }
}
