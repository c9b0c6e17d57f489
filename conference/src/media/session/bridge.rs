//! Phone ⇄ browser: a browser's published audio decoded into the mixer (only while a
//! SIP leg hears it), a caller's audio encoded to Opus once for the browsers that
//! receive it, and RFC 4733 DTMF from browsers to the legs that hear them.

use std::sync::Arc;

use uuid::Uuid;

use super::core::{Now, SessionCore};
use super::ids::{DeviceId, PcId, Source};
use crate::media::codec::{AudioCodec, Decoder, Encoder};
use crate::media::frame_len;
use crate::media::mixer::Mixer;
use crate::media::pcm::PcmFifo;

/// A browser's published audio track as a mixer stream.
pub(super) struct BrowserAudio {
    pub(super) key: u64,
    pub(super) device: DeviceId,
    pub(super) pc: PcId,
    pub(super) mid: str0m::media::Mid,
    pub(super) participant_id: Uuid,
    pub(super) alias: Option<String>,
    /// Some SIP leg hears it: only then is it decoded.
    heard: bool,
    decoder: Decoder,
    fifo: PcmFifo,
    frame: Vec<i16>,
    /// `frame` holds this tick's audio.
    framed: bool,
    /// RTP time of the last telephone-event seen (a new one starts an event).
    last_event: Option<u64>,
}

impl BrowserAudio {
    pub(super) fn set_heard(&mut self, heard: bool) {
        if self.heard && !heard {
            self.fifo.clear();
        }
        self.heard = heard;
    }

    /// Decode one Opus frame, if a leg hears this track.
    pub(super) fn decode(&mut self, payload: &[u8]) -> bool {
        if self.heard {
            self.decoder.decode(payload, &mut self.fifo);
        }
        self.heard
    }

    /// Its decoded rate.
    pub(super) fn rate(&self) -> u32 {
        AudioCodec::Opus.pcm_rate()
    }

    /// This tick's decoded frame, if it had one.
    pub(super) fn frame(&self) -> Option<&[i16]> {
        self.framed.then_some(self.frame.as_slice())
    }

    /// This tick's frame into the mixer.
    pub(super) fn feed_mixer(&mut self, mixer: &mut Mixer) {
        self.framed = self.heard && self.fifo.pop(&mut self.frame);
        if self.framed {
            if let Some(f) = mixer.frame_mut(self.key) {
                f.copy_from_slice(&self.frame);
            }
        }
    }
}

impl SessionCore {
    /// Keep one mixer stream per published browser audio track.
    pub(super) fn sync_browser_audio(&mut self) {
        let mut keep = Vec::new();
        for (&id, d) in &self.devices {
            for t in d
                .published
                .iter()
                .filter(|t| t.kind == str0m::media::MediaKind::Audio)
            {
                keep.push((id, t.pc, t.mid, d.key.participant_id, t.alias.clone()));
            }
        }
        let mixer = &mut self.mixer;
        self.browser_audio.retain(|b| {
            let alive = keep
                .iter()
                .any(|(d, pc, m, _, _)| (*d, *pc, *m) == (b.device, b.pc, b.mid));
            if !alive {
                mixer.remove_stream(b.key);
            }
            alive
        });
        for (device, pc, mid, participant_id, alias) in keep {
            if self
                .browser_audio
                .iter()
                .any(|b| (b.device, b.pc, b.mid) == (device, pc, mid))
            {
                continue;
            }
            let Ok(decoder) = Decoder::new(AudioCodec::Opus) else {
                continue;
            };
            let key = self.endpoint_key();
            let rate = AudioCodec::Opus.pcm_rate();
            self.mixer.add_stream(key, rate);
            self.browser_audio.push(BrowserAudio {
                key,
                device,
                pc,
                mid,
                participant_id,
                alias,
                heard: false,
                decoder,
                fifo: PcmFifo::new(rate as usize * 3 / 10),
                frame: vec![0; frame_len(rate)],
                framed: false,
                last_event: None,
            });
        }
        self.route();
    }

    /// Decode a browser's audio frame for the legs (if any hears it).
    pub(super) fn browser_audio_in(
        &mut self,
        from: DeviceId,
        pc: PcId,
        data: &str0m::media::MediaData,
    ) {
        if let Some(b) = self
            .browser_audio
            .iter_mut()
            .find(|b| (b.device, b.pc, b.mid) == (from, pc, data.mid))
        {
            if b.decode(&data.data) {
                self.stats.browser_audio_decoded += 1;
            }
        }
    }

    /// An RFC 4733 telephone-event from a browser's audio: to every SIP leg that hears
    /// that audio (as RFC 4733 on the leg, like DTMF between callers).
    pub(super) fn browser_dtmf(
        &mut self,
        from: DeviceId,
        pc: PcId,
        data: &str0m::media::MediaData,
    ) {
        let Some(b) = self
            .browser_audio
            .iter_mut()
            .find(|b| (b.device, b.pc, b.mid) == (from, pc, data.mid))
        else {
            return;
        };
        let Some(&[e0, e1, e2, e3]) = data.data.get(..4) else {
            return;
        };
        let ts = data.time.numer();
        let start = b.last_event != Some(ts);
        if start {
            b.last_event = Some(ts);
            tracing::info!(session_id = %self.session_id, device = from.0, event = e0, "DTMF event from a browser");
            self.stats.dtmf_from_browsers += 1;
        }
        let clock = data.params.spec().clock_rate.get();
        let key = b.key;
        self.relay_event(key, [e0, e1, e2, e3], start, clock);
    }

    /// Each SIP leg some browser receives: encode this tick's caller audio to Opus once,
    /// at the leg's own rate, and write it into every subscribing connection. True:
    /// some connection queued it (a drive sends it).
    pub(super) fn phone_to_browsers(&mut self, now: Now) -> bool {
        let mut wrote = false;
        let SessionCore {
            legs,
            fanout,
            devices,
            stats,
            outbox,
            ..
        } = self;
        for (&id, leg) in legs.iter_mut() {
            let Some(targets) = fanout.get(&Source::Leg(id)).filter(|t| !t.is_empty()) else {
                continue;
            };
            if !leg.framed {
                continue;
            }
            if leg.opus.is_none() {
                leg.opus = Encoder::opus_at(leg.media.codec.pcm_rate())
                    .map_err(|e| tracing::warn!(error = %e, "Opus encoder"))
                    .ok();
            }
            let Some(opus) = leg.opus.as_mut() else {
                continue;
            };
            if opus.encode(&leg.frame, &mut leg.opus_payload).is_err() {
                continue;
            }
            let time = str0m::media::MediaTime::new(
                leg.opus_ts as u64,
                str0m::media::Frequency::FORTY_EIGHT_KHZ,
            );
            leg.opus_ts = leg.opus_ts.wrapping_add(960);
            let payload: Arc<[u8]> = Arc::from(leg.opus_payload.as_slice());
            let written = super::sfu::write_to(
                devices,
                targets,
                |w| {
                    w.payload_params()
                        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                        .map(|p| p.pt())
                },
                now.at,
                now.at,
                time,
                &payload,
                outbox,
            );
            written.count(stats);
            wrote |= written.frames > written.now;
        }
        wrote
    }
}
