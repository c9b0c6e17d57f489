//! Audio containers for recordings, as pure byte builders (no I/O): RIFF/WAVE
//! (PCM16, μ-law, A-law) and Ogg Opus (RFC 7845). The session core fills them; a
//! shell task writes the bytes to files.

pub mod ogg;
pub mod wav;

/// Samples (at 48 kHz) an Opus packet carries, from its TOC byte (RFC 6716 §3.1);
/// None for a malformed packet.
pub fn opus_samples_48k(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame duration in units of 2.5 ms (120 samples at 48 kHz).
    let frame_units: u32 = match config {
        0..=11 => [4, 8, 16, 24][(config % 4) as usize],
        12..=15 => [4, 8][(config % 2) as usize],
        _ => [1, 2, 4, 8][(config % 4) as usize],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = frame_units * 120 * frames;
    // At most 120 ms per packet.
    (samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_durations_from_the_toc() {
        // CELT 20 ms, one frame (what browsers send).
        assert_eq!(opus_samples_48k(&[0xfc, 1, 2]), Some(960));
        // SILK 20 ms, two frames (code 1).
        assert_eq!(opus_samples_48k(&[(1 << 3) | 1]), Some(1920));
        // Hybrid 10 ms, code 3 with three frames.
        assert_eq!(opus_samples_48k(&[(12 << 3) | 3, 3]), Some(1440));
        // Code 3 with 49 frames of 20 ms: longer than 120 ms, malformed.
        assert_eq!(opus_samples_48k(&[(31 << 3) | 3, 49]), None);
        assert_eq!(opus_samples_48k(&[]), None);
    }
}
