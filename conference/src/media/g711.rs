//! G.711 μ-law (PCMU) and A-law (PCMA), ITU-T G.711.
//!
//! The bit arithmetic below is `const`: it builds lookup tables at compile time
//! (64 K entries to encode, 256 to decode), so a sample costs one load.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Linear 16-bit PCM to μ-law.
const fn ulaw_encode_calc(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    if pcm > CLIP {
        pcm = CLIP;
    }
    pcm += BIAS;
    let exponent = clamp(31 - (pcm as u32).leading_zeros() as i32 - 7, 0, 7);
    let mantissa = (pcm >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// μ-law to linear 16-bit PCM.
const fn ulaw_decode_calc(code: u8) -> i16 {
    let u = !code;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear 16-bit PCM to A-law.
const fn alaw_encode_calc(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm >= 0 {
        0xd5u8
    } else {
        pcm = -pcm - 1;
        0x55u8
    };
    if pcm > 0x7fff {
        pcm = 0x7fff;
    }
    let code = if pcm < 256 {
        (pcm >> 4) as u8
    } else {
        let exponent = clamp(31 - (pcm as u32).leading_zeros() as i32 - 7, 1, 7);
        let mantissa = (pcm >> (exponent + 3)) & 0x0f;
        ((exponent << 4) | mantissa) as u8
    };
    code ^ sign
}

/// A-law to linear 16-bit PCM.
const fn alaw_decode_calc(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn clamp(v: i32, lo: i32, hi: i32) -> i32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

const fn encode_table(alaw: bool) -> [u8; 65536] {
    let mut t = [0u8; 65536];
    let mut i = 0;
    while i < 65536 {
        let s = i as u16 as i16;
        t[i] = if alaw {
            alaw_encode_calc(s)
        } else {
            ulaw_encode_calc(s)
        };
        i += 1;
    }
    t
}

const fn decode_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_calc(i as u8)
        } else {
            ulaw_decode_calc(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_ENCODE: [u8; 65536] = encode_table(false);
static ALAW_ENCODE: [u8; 65536] = encode_table(true);
static ULAW_DECODE: [i16; 256] = decode_table(false);
static ALAW_DECODE: [i16; 256] = decode_table(true);

/// Linear 16-bit PCM to μ-law.
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    ULAW_ENCODE[sample as u16 as usize]
}

/// μ-law to linear 16-bit PCM.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

/// Linear 16-bit PCM to A-law.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENCODE[sample as u16 as usize]
}

/// A-law to linear 16-bit PCM.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_decode(0x7f), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xaa), 32256);
        assert_eq!(alaw_decode(0x2a), -32256);
    }

    #[test]
    fn tables_match_the_arithmetic() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(s), ulaw_encode_calc(s));
            assert_eq!(alaw_encode(s), alaw_encode_calc(s));
        }
        for c in 0..=255u8 {
            assert_eq!(ulaw_decode(c), ulaw_decode_calc(c));
            assert_eq!(alaw_decode(c), alaw_decode_calc(c));
        }
    }

    #[test]
    fn codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(
                ulaw_encode(ulaw_decode(code)),
                code | if code == 0x7f { 0x80 } else { 0 }
            );
            assert_eq!(alaw_encode(alaw_decode(code)), code);
        }
    }

    #[test]
    fn quantisation_error_is_bounded() {
        for s in (-32000i32..32000).step_by(7) {
            let s = s as i16;
            for (enc, dec) in [
                (ulaw_encode as fn(i16) -> u8, ulaw_decode as fn(u8) -> i16),
                (alaw_encode, alaw_decode),
            ] {
                let back = dec(enc(s)) as i32;
                let err = (back - s as i32).abs();
                // Logarithmic quantisation: error within ~1/16 of the magnitude (plus a small floor).
                assert!(err <= (s as i32).abs() / 16 + 16, "{s} -> {back}");
            }
        }
    }
}
