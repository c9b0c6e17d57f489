//! Recorders: the session's third kind of audio endpoint (beside SIP legs and the
//! browsers' audio), sans-IO. A recorder hears through the mixer like a leg (`mixed`:
//! every published audio stream; `dual`: one participant on the left channel, everyone
//! else on the right) or takes each stream as it is (`tracks`: a caller's G.711 bytes,
//! a browser's Opus packets copied, never transcoded), fills its files' containers and
//! emits their bytes about once a second as [`Action::Recording`] outputs. Files live
//! in the shell's writer, not here.

use std::time::Duration;

use uuid::Uuid;

use super::core::{Action, Now, SessionCore};
use super::ids::Source;
use crate::media::codec::{AudioCodec, Encoder};
use crate::media::container::ogg::OggOpus;
use crate::media::container::opus_samples_48k;
use crate::media::container::wav::{self, WavFormat};
use crate::media::{frame_len, g711, FRAME_MS};

/// The widest rate of `mixed` and `dual` recordings (every mix input is at most 16 kHz).
pub const MIX_RATE: u32 = 16_000;
/// Their rate when every stream is narrowband (G.711) as they start: the recorder then
/// shares the legs' own mix (no resampling, no second accumulation).
pub const NARROW_MIX_RATE: u32 = 8_000;
/// Bytes leave the core this often (in 20 ms ticks).
const FLUSH_TICKS: u64 = 50;
/// Pre-skip of libopus at 48 kHz (its look-ahead), for Ogg files we encode.
const OPUS_PRE_SKIP: u16 = 312;

/// What a recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordMode {
    /// One file per published audio stream.
    Tracks,
    /// One file: everything everybody says.
    Mixed,
    /// One two-channel file: one participant left, everyone else right.
    Dual,
}

/// The container of a recording's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    Ogg,
    Wav,
}

/// Start a recording of the session's media.
#[derive(Debug, Clone)]
pub struct RecordRequest {
    pub id: Uuid,
    pub mode: RecordMode,
    pub format: RecordFormat,
    /// `dual`: the participant on the first channel (None: the first member).
    pub first: Option<Uuid>,
    /// Bytes over all its files before it stops by itself.
    pub max_bytes: u64,
    pub max_duration: Duration,
    /// The number of its first file (a later segment's files follow the earlier ones').
    pub first_file: u32,
    /// Where this part starts, ms after the recording's start (files' offsets).
    pub offset_ms: u64,
}

/// Why a recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Asked (`DELETE …/recordings/{id}`).
    Requested,
    /// The session ended (or its media stopped here).
    SessionEnded,
    /// It reached its size or duration limit.
    Limit,
    /// The gateway is stopping.
    Shutdown,
    /// The session's media moved to another node of the cluster (the recording goes on
    /// there as a new segment).
    Moved,
}

/// A recording's file as it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub name: String,
    /// Whose stream it holds (None: a mix).
    pub participant_id: Option<Uuid>,
    pub stream_alias: Option<String>,
    pub content_type: &'static str,
    /// For WAV files: their format (the header is rewritten with the sizes at close).
    pub wav: Option<WavFormat>,
    pub channels: u16,
    pub rate: u32,
    /// When it starts, ms after the recording's start.
    pub offset_ms: u64,
}

/// A recorder's output.
#[derive(Debug, PartialEq)]
pub enum RecordingOut {
    Open {
        recording: Uuid,
        file: u32,
        meta: FileMeta,
    },
    /// Bytes to append to a file (about a second's worth).
    Data {
        recording: Uuid,
        file: u32,
        bytes: Vec<u8>,
    },
    Close {
        recording: Uuid,
        file: u32,
        duration_ms: u64,
    },
    /// Every file is closed.
    Stopped { recording: Uuid, reason: StopReason },
}

enum Sink {
    Wav(WavFormat),
    /// `encoder`: None when packets are copied as they came (a browser's Opus).
    Ogg {
        ogg: OggOpus,
        encoder: Option<Encoder>,
    },
}

struct RecFile {
    id: u32,
    /// None: the recording's mix.
    source: Option<Source>,
    /// The codec of the stream it holds (a leg that changes codec starts a new file:
    /// one file has one format).
    codec: Option<AudioCodec>,
    sink: Sink,
    rate: u32,
    pending: Vec<u8>,
    /// 20 ms frames written (WAV and encoded Ogg).
    ticks: u64,
    /// Seen in this tick's sweep (tracks that vanished are closed).
    alive: bool,
}

impl RecFile {
    fn duration_ms(&self) -> u64 {
        match &self.sink {
            Sink::Ogg { ogg, encoder: None } => ogg.granule() / 48,
            _ => self.ticks * u64::from(FRAME_MS),
        }
    }
}

pub(super) struct Recorder {
    req: RecordRequest,
    files: Vec<RecFile>,
    next_file: u32,
    ticks: u64,
    bytes: u64,
    /// The mixer listeners of `mixed` (one) and `dual` (two).
    pub(super) listeners: Vec<u64>,
    scratch: Vec<u8>,
    pcm: Vec<i16>,
}

impl Recorder {
    /// Whether it needs browsers' audio decoded (it mixes, or stores PCM).
    pub(super) fn wants_pcm(&self) -> bool {
        self.req.mode != RecordMode::Tracks || self.req.format == RecordFormat::Wav
    }

    pub(super) fn id(&self) -> Uuid {
        self.req.id
    }

    pub(super) fn mode(&self) -> RecordMode {
        self.req.mode
    }

    pub(super) fn first(&self) -> Option<Uuid> {
        self.req.first
    }

    fn open(
        &mut self,
        source: Option<Source>,
        codec: Option<AudioCodec>,
        rate: u32,
        channels: u16,
        who: (Option<Uuid>, Option<String>),
        out: &mut Vec<Action>,
    ) {
        let id = self.next_file;
        self.next_file += 1;
        let mut pending = Vec::with_capacity(8192);
        let (sink, content_type, ext) = match self.req.format {
            RecordFormat::Wav => {
                let format = match codec {
                    Some(AudioCodec::Pcmu) => WavFormat::Mulaw,
                    Some(AudioCodec::Pcma) => WavFormat::Alaw,
                    _ => WavFormat::Pcm16,
                };
                pending.extend_from_slice(&wav::header(format, channels, rate, None));
                (Sink::Wav(format), "audio/wav", "wav")
            }
            RecordFormat::Ogg => {
                // A browser's Opus is copied; everything else is encoded once, here.
                let copy = codec == Some(AudioCodec::Opus) && rate == 48_000;
                let encoder = if copy {
                    None
                } else if channels == 2 {
                    Encoder::opus_stereo_at(rate).ok()
                } else {
                    Encoder::opus_at(rate).ok()
                };
                let pre_skip = if copy { 0 } else { OPUS_PRE_SKIP };
                let serial = self.req.id.as_u128() as u32 ^ id;
                let ogg = OggOpus::new(serial, channels as u8, pre_skip, rate, &mut pending);
                (Sink::Ogg { ogg, encoder }, "audio/ogg", "ogg")
            }
        };
        let (participant_id, stream_alias) = who;
        let name = match (self.req.mode, participant_id) {
            (RecordMode::Tracks, Some(p)) => format!(
                "{id:02}-{p}-{}.{ext}",
                stream_alias.as_deref().unwrap_or("audio")
            ),
            (RecordMode::Dual, _) => format!("{id:02}-dual.{ext}"),
            _ => format!("{id:02}-mixed.{ext}"),
        };
        let meta = FileMeta {
            name,
            participant_id,
            stream_alias,
            content_type,
            wav: match &sink {
                Sink::Wav(f) => Some(*f),
                Sink::Ogg { .. } => None,
            },
            channels,
            rate,
            offset_ms: self.req.offset_ms + self.ticks * u64::from(FRAME_MS),
        };
        out.push(Action::Recording(RecordingOut::Open {
            recording: self.req.id,
            file: id,
            meta,
        }));
        self.files.push(RecFile {
            id,
            source,
            codec,
            sink,
            rate,
            pending,
            ticks: 0,
            alive: true,
        });
    }

    /// 20 ms of PCM (interleaved when two channels) into a file.
    fn pcm_into(file: &mut RecFile, pcm: &[i16], scratch: &mut Vec<u8>) {
        file.ticks += 1;
        match &mut file.sink {
            Sink::Wav(WavFormat::Mulaw) => file
                .pending
                .extend(pcm.iter().map(|&s| g711::ulaw_encode(s))),
            Sink::Wav(WavFormat::Alaw) => file
                .pending
                .extend(pcm.iter().map(|&s| g711::alaw_encode(s))),
            Sink::Wav(WavFormat::Pcm16) => wav::push_pcm16(&mut file.pending, pcm),
            Sink::Ogg {
                ogg,
                encoder: Some(e),
            } => {
                if e.encode(pcm, scratch).is_ok() {
                    ogg.packet(scratch, 960, &mut file.pending);
                }
            }
            Sink::Ogg { encoder: None, .. } => {}
        }
    }

    /// A file's pending bytes out (its Ogg page closed first; `last`: the end of its
    /// stream), counted against the recording's size.
    fn emit(recording: Uuid, bytes: &mut u64, f: &mut RecFile, last: bool, out: &mut Vec<Action>) {
        if let Sink::Ogg { ogg, .. } = &mut f.sink {
            ogg.flush(last, &mut f.pending);
        }
        if !f.pending.is_empty() {
            *bytes += f.pending.len() as u64;
            let next = if last {
                Vec::new()
            } else {
                Vec::with_capacity(8192)
            };
            out.push(Action::Recording(RecordingOut::Data {
                recording,
                file: f.id,
                bytes: std::mem::replace(&mut f.pending, next),
            }));
        }
    }

    /// Flush every file's bytes (pages close first).
    fn flush(&mut self, out: &mut Vec<Action>) {
        for f in &mut self.files {
            Recorder::emit(self.req.id, &mut self.bytes, f, false, out);
        }
    }

    fn close(&mut self, file: RecFile, out: &mut Vec<Action>) {
        let mut f = file;
        Recorder::emit(self.req.id, &mut self.bytes, &mut f, true, out);
        out.push(Action::Recording(RecordingOut::Close {
            recording: self.req.id,
            file: f.id,
            duration_ms: f.duration_ms(),
        }));
    }

    /// Close every file and say so.
    pub(super) fn stop(mut self, reason: StopReason, out: &mut Vec<Action>) {
        for f in std::mem::take(&mut self.files) {
            self.close(f, out);
        }
        out.push(Action::Recording(RecordingOut::Stopped {
            recording: self.req.id,
            reason,
        }));
    }

    fn file_of(&mut self, source: Source) -> Option<&mut RecFile> {
        self.files.iter_mut().find(|f| f.source == Some(source))
    }
}

impl SessionCore {
    /// Start a recording (an id already recording here is ignored).
    pub fn start_recording(&mut self, now: Now, req: RecordRequest) {
        if self.ended || self.lobby || self.recorders.iter().any(|r| r.id() == req.id) {
            return;
        }
        let mut rec = Recorder {
            next_file: req.first_file,
            req,
            files: Vec::new(),
            ticks: 0,
            bytes: 0,
            listeners: Vec::new(),
            scratch: Vec::with_capacity(1500),
            pcm: vec![0; 2 * frame_len(MIX_RATE)],
        };
        let mut out = Vec::new();
        match rec.req.mode {
            RecordMode::Tracks => {}
            RecordMode::Mixed | RecordMode::Dual => {
                let channels = if rec.req.mode == RecordMode::Dual {
                    2
                } else {
                    1
                };
                let rate = self.mix_rate();
                for _ in 0..channels {
                    let key = self.endpoint_key();
                    self.mixer.add_listener(key, rate, None);
                    rec.listeners.push(key);
                }
                rec.open(None, None, rate, channels, (None, None), &mut out);
            }
        }
        tracing::info!(session_id = %self.session_id, recording = %rec.id(), mode = ?rec.req.mode, format = ?rec.req.format, "recording started");
        if self.recorders.is_empty() {
            // The tick runs while anything mixes: it may have been idle.
            self.next_tick = self.next_tick.max(now.at);
        }
        self.recorders.push(rec);
        for a in out {
            self.push(a);
        }
        self.route();
    }

    /// The rate of a mix recorded from now: 8 kHz while only G.711 callers speak (a
    /// wideband stream that joins later is heard at that rate), else 16 kHz.
    fn mix_rate(&self) -> u32 {
        let narrow = !self.legs.is_empty()
            && self.browser_audio.is_empty()
            && self
                .legs
                .values()
                .all(|l| l.media.codec.pcm_rate() == NARROW_MIX_RATE);
        if narrow {
            NARROW_MIX_RATE
        } else {
            MIX_RATE
        }
    }

    /// Stop a recording (closing its files).
    pub fn stop_recording(&mut self, id: Uuid, reason: StopReason) {
        let Some(i) = self.recorders.iter().position(|r| r.id() == id) else {
            return;
        };
        let rec = self.recorders.swap_remove(i);
        for key in &rec.listeners {
            self.mixer.remove_listener(*key);
        }
        let mut out = Vec::new();
        tracing::info!(session_id = %self.session_id, recording = %id, ?reason, "recording stopped");
        rec.stop(reason, &mut out);
        for a in out {
            self.push(a);
        }
        self.route();
    }

    /// Stop every recording.
    pub(super) fn stop_recordings(&mut self, reason: StopReason) {
        let ids: Vec<Uuid> = self.recorders.iter().map(|r| r.id()).collect();
        for id in ids {
            self.stop_recording(id, reason);
        }
    }

    /// A browser's audio packet as it came: into the `tracks` Ogg files that copy it.
    pub(super) fn record_packet(&mut self, source: Source, data: &str0m::media::MediaData) {
        for rec in &mut self.recorders {
            if rec.req.mode != RecordMode::Tracks || rec.req.format != RecordFormat::Ogg {
                continue;
            }
            let Some(f) = rec.file_of(source) else {
                continue;
            };
            if let Sink::Ogg { ogg, encoder: None } = &mut f.sink {
                if let Some(samples) = opus_samples_48k(&data.data) {
                    ogg.packet(&data.data, samples, &mut f.pending);
                }
            }
        }
    }

    /// After the tick's mix: each recorder takes its 20 ms (its mix, or each stream's
    /// frame), opens files for new streams and closes those of streams that are gone.
    pub(super) fn record_tick(&mut self) {
        if self.recorders.is_empty() {
            return;
        }
        let mut out = Vec::new();
        let mut limited = Vec::new();
        let SessionCore {
            recorders,
            legs,
            browser_audio,
            mixer,
            alias,
            ..
        } = self;
        for rec in recorders.iter_mut() {
            match rec.req.mode {
                RecordMode::Tracks => {
                    for f in &mut rec.files {
                        f.alive = false;
                    }
                    for (&id, leg) in legs.iter() {
                        let source = Source::Leg(id);
                        // A re-INVITE changed the caller's codec: that file ends here.
                        if let Some(i) = rec.files.iter().position(|f| {
                            f.source == Some(source) && f.codec != Some(leg.media.codec)
                        }) {
                            let f = rec.files.remove(i);
                            rec.close(f, &mut out);
                        }
                        if rec.file_of(source).is_none() {
                            let who = (Some(leg.owner.participant_id), Some(alias.to_string()));
                            let codec = leg.media.codec;
                            rec.open(
                                Some(source),
                                Some(codec),
                                codec.pcm_rate(),
                                1,
                                who,
                                &mut out,
                            );
                        }
                        let Recorder {
                            files,
                            scratch,
                            pcm,
                            ..
                        } = rec;
                        if let Some(f) = files.iter_mut().find(|f| f.source == Some(source)) {
                            f.alive = true;
                            let frame: &[i16] = if leg.framed {
                                &leg.frame
                            } else {
                                silence(pcm, frame_len(f.rate))
                            };
                            Recorder::pcm_into(f, frame, scratch);
                        }
                    }
                    for b in browser_audio.iter() {
                        let source = Source::Track(b.device, b.pc, b.mid);
                        if rec.file_of(source).is_none() {
                            let (codec, rate) = match rec.req.format {
                                RecordFormat::Ogg => (AudioCodec::Opus, 48_000),
                                RecordFormat::Wav => (AudioCodec::Opus, b.rate()),
                            };
                            let who = (Some(b.participant_id), b.alias.clone());
                            rec.open(Some(source), Some(codec), rate, 1, who, &mut out);
                        }
                        let Recorder {
                            files,
                            scratch,
                            pcm,
                            ..
                        } = rec;
                        if let Some(f) = files.iter_mut().find(|f| f.source == Some(source)) {
                            f.alive = true;
                            if matches!(f.sink, Sink::Wav(_)) {
                                let frame: &[i16] = match b.frame() {
                                    Some(frame) => frame,
                                    None => silence(pcm, frame_len(f.rate)),
                                };
                                Recorder::pcm_into(f, frame, scratch);
                            }
                        }
                    }
                    let gone: Vec<usize> = (0..rec.files.len())
                        .filter(|&i| !rec.files[i].alive)
                        .collect();
                    for i in gone.into_iter().rev() {
                        let f = rec.files.remove(i);
                        rec.close(f, &mut out);
                    }
                }
                RecordMode::Mixed => {
                    let Recorder {
                        files,
                        scratch,
                        listeners,
                        ..
                    } = rec;
                    if let (Some(f), Some(mix)) = (
                        files.first_mut(),
                        listeners.first().and_then(|k| mixer.output(*k)),
                    ) {
                        Recorder::pcm_into(f, mix, scratch);
                    }
                }
                RecordMode::Dual => {
                    let Recorder {
                        files,
                        scratch,
                        listeners,
                        pcm,
                        ..
                    } = rec;
                    let left = listeners.first().and_then(|k| mixer.output(*k));
                    let right = listeners.get(1).and_then(|k| mixer.output(*k));
                    if let (Some(f), Some(l), Some(r)) = (files.first_mut(), left, right) {
                        pcm.clear();
                        for (a, b) in l.iter().zip(r) {
                            pcm.push(*a);
                            pcm.push(*b);
                        }
                        Recorder::pcm_into(f, pcm, scratch);
                    }
                }
            }
            rec.ticks += 1;
            if rec.ticks % FLUSH_TICKS == 0 {
                rec.flush(&mut out);
            }
            let elapsed = Duration::from_millis(rec.ticks * u64::from(FRAME_MS));
            if rec.bytes >= rec.req.max_bytes || elapsed >= rec.req.max_duration {
                limited.push(rec.id());
            }
        }
        for a in out {
            self.push(a);
        }
        for id in limited {
            self.stop_recording(id, StopReason::Limit);
        }
    }

    /// The mixer keys a recorder's listener `channel` hears: everything (`mixed`), or
    /// the first participant's streams (left) and everyone else's (right).
    pub(super) fn recorder_hears(&self, rec: &Recorder, channel: usize) -> Vec<u64> {
        let first = rec
            .first()
            .or_else(|| self.snapshot.members.first().map(|(p, _)| *p));
        let wanted = |p: Uuid| match rec.mode() {
            RecordMode::Dual if channel == 0 => Some(p) == first,
            RecordMode::Dual => Some(p) != first,
            _ => true,
        };
        self.legs
            .values()
            .filter(|l| wanted(l.owner.participant_id))
            .map(|l| l.key)
            .chain(
                self.browser_audio
                    .iter()
                    .filter(|b| wanted(b.participant_id))
                    .map(|b| b.key),
            )
            .collect()
    }
}

/// `n` samples of silence, from `buf`.
fn silence(buf: &mut Vec<i16>, n: usize) -> &[i16] {
    buf.clear();
    buf.resize(n, 0);
    buf
}
