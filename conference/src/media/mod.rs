//! The media core: codecs, resampling, the jitter buffer, the mixer and the
//! per-session media actor. Sans-IO where the logic lives; the actor is the
//! one tokio task that owns a session's media state.

pub mod codec;
pub mod g711;
pub mod jitter;
pub mod mixer;
pub mod pcm;
pub mod resample;
pub mod session;
pub mod stats;
pub mod webrtc;

/// Every mix is made of 20 ms frames.
pub const FRAME_MS: u32 = 20;

/// Samples in one 20 ms frame at `rate` Hz.
pub const fn frame_len(rate: u32) -> usize {
    (rate / 50) as usize
}
