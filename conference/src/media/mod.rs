//! The media core: codecs, resampling, the jitter buffer, the mixer, and each
//! session's media (a sans-IO core in a thin tokio shell), plus the WebRTC socket.

pub mod codec;
pub mod container;
pub mod emodel;
pub mod g711;
pub mod hold_music;
pub mod jitter;
pub mod mixer;
pub mod pcm;
pub mod resample;
pub mod sdp;
pub mod session;
pub mod stats;
pub mod webrtc;

/// Every mix is made of 20 ms frames.
pub const FRAME_MS: u32 = 20;

/// Samples in one 20 ms frame at `rate` Hz.
pub const fn frame_len(rate: u32) -> usize {
    (rate / 50) as usize
}
