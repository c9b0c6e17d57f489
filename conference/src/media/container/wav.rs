//! RIFF/WAVE headers. A file is written with a header whose sizes say "unknown"
//! (`0xFFFFFFFF`, which readers treat as "read to the end") and the header is rewritten
//! with the real sizes when the file is closed; a file left open by a crash is fixed
//! from its length ([`header`] again).

/// The sample format of a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavFormat {
    /// Linear PCM, 16-bit little-endian.
    Pcm16,
    /// G.711 μ-law, 8-bit (WAVE_FORMAT_MULAW): a PCMU caller's bytes as they came.
    Mulaw,
    /// G.711 A-law, 8-bit (WAVE_FORMAT_ALAW).
    Alaw,
}

impl WavFormat {
    fn tag(self) -> u16 {
        match self {
            WavFormat::Pcm16 => 1,
            WavFormat::Alaw => 6,
            WavFormat::Mulaw => 7,
        }
    }

    /// Bytes per sample of one channel.
    pub fn bytes_per_sample(self) -> u32 {
        match self {
            WavFormat::Pcm16 => 2,
            WavFormat::Mulaw | WavFormat::Alaw => 1,
        }
    }
}

/// Length of the header [`header`] writes.
pub const HEADER_LEN: usize = 44;

/// The header of a WAV file whose data is `data_len` bytes (None: not known yet).
pub fn header(format: WavFormat, channels: u16, rate: u32, data_len: Option<u32>) -> [u8; 44] {
    let block = u32::from(channels) * format.bytes_per_sample();
    let (riff, data) = match data_len {
        Some(n) => (n.saturating_add(36), n),
        None => (u32::MAX, u32::MAX),
    };
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&format.tag().to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * block).to_le_bytes());
    h[32..34].copy_from_slice(&(block as u16).to_le_bytes());
    h[34..36].copy_from_slice(&((format.bytes_per_sample() * 8) as u16).to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// Append `samples` as 16-bit little-endian PCM.
pub fn push_pcm16(out: &mut Vec<u8>, samples: &[i16]) {
    out.reserve(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// Append two channels interleaved as 16-bit little-endian PCM (the shorter one is
/// padded with silence).
pub fn push_pcm16_stereo(out: &mut Vec<u8>, left: &[i16], right: &[i16]) {
    let n = left.len().max(right.len());
    out.reserve(n * 4);
    for i in 0..n {
        out.extend_from_slice(&left.get(i).copied().unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&right.get(i).copied().unwrap_or(0).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_state_format_and_sizes() {
        let h = header(WavFormat::Mulaw, 1, 8000, Some(16000));
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 16036);
        assert_eq!(u16::from_le_bytes(h[20..22].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(h[28..32].try_into().unwrap()), 8000);
        assert_eq!(u16::from_le_bytes(h[34..36].try_into().unwrap()), 8);
        assert_eq!(u32::from_le_bytes(h[40..44].try_into().unwrap()), 16000);
        let s = header(WavFormat::Pcm16, 2, 16000, None);
        assert_eq!(u32::from_le_bytes(s[28..32].try_into().unwrap()), 64000);
        assert_eq!(u16::from_le_bytes(s[32..34].try_into().unwrap()), 4);
        assert_eq!(u32::from_le_bytes(s[40..44].try_into().unwrap()), u32::MAX);
    }

    #[test]
    fn stereo_interleaves() {
        let mut out = Vec::new();
        push_pcm16_stereo(&mut out, &[1, 2], &[-1]);
        assert_eq!(out, [1, 0, 0xff, 0xff, 2, 0, 0, 0]);
    }
}
