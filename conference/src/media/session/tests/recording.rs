//! Recorders in the core, with fake time: what each mode writes, byte for byte where
//! nothing is transcoded.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::super::*;
use super::browser::{run, Browser};
use super::harness::*;
use crate::media::container::ogg::pages;
use crate::media::container::wav::HEADER_LEN;
use crate::media::g711;

/// A recording's files as the core emitted them.
#[derive(Debug, Default)]
struct Files {
    files: BTreeMap<u32, (FileMeta, Vec<u8>, Option<u64>)>,
    stopped: Option<StopReason>,
}

fn files_of(seen: &Seen, recording: Uuid) -> Files {
    let mut out = Files::default();
    for a in &seen.actions {
        let Action::Recording(r) = a else { continue };
        match r {
            RecordingOut::Open {
                recording: id,
                file,
                meta,
            } if *id == recording => {
                out.files.insert(*file, (meta.clone(), Vec::new(), None));
            }
            RecordingOut::Data {
                recording: id,
                file,
                bytes,
            } if *id == recording => {
                if let Some(f) = out.files.get_mut(file) {
                    f.1.extend_from_slice(bytes);
                }
            }
            RecordingOut::Close {
                recording: id,
                file,
                duration_ms,
            } if *id == recording => {
                if let Some(f) = out.files.get_mut(file) {
                    f.2 = Some(*duration_ms);
                }
            }
            RecordingOut::Stopped {
                recording: id,
                reason,
            } if *id == recording => out.stopped = Some(*reason),
            _ => {}
        }
    }
    out
}

fn request(mode: RecordMode, format: RecordFormat) -> RecordRequest {
    RecordRequest {
        id: Uuid::new_v4(),
        mode,
        format,
        first: None,
        max_bytes: u64::MAX,
        max_duration: Duration::from_secs(3600),
        first_file: 0,
        offset_ms: 0,
    }
}

/// Root mean square of 16-bit samples.
fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

fn pcm16(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

#[test]
fn tracks_as_wav_keep_a_pcmu_callers_bytes_and_close_with_the_session() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, a);
    rig.join_leg(2, b);
    let req = request(RecordMode::Tracks, RecordFormat::Wav);
    let id = req.id;
    rig.control(Control::Record(req));
    // What the caller sends, as the recording should hold it.
    let mut tone = Caller::new(1, 440.0);
    let mut copy = Caller::new(1, 440.0);
    let mut quiet = Caller::new(2, 0.0);
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent.extend_from_slice(&copy_packet(&mut copy));
        rig.ticks(1, &mut [&mut tone, &mut quiet]);
    }
    rig.control(Control::End(HangupReason::SessionEnded));
    let got = files_of(&rig.take(), id);
    assert_eq!(got.stopped, Some(StopReason::SessionEnded));
    assert_eq!(got.files.len(), 2, "one file per caller");
    let (meta, bytes, duration) = got
        .files
        .values()
        .find(|(m, _, _)| m.participant_id == Some(a))
        .expect("a's file");
    assert_eq!(
        meta.wav,
        Some(crate::media::container::wav::WavFormat::Mulaw)
    );
    assert_eq!((meta.rate, meta.channels), (8000, 1));
    assert_eq!(meta.stream_alias.as_deref(), Some(PHONE_ALIAS));
    assert_eq!(*duration, Some(2000), "100 ticks of 20 ms");
    let data = &bytes[HEADER_LEN..];
    assert_eq!(data.len(), 16_000, "8000 bytes a second");
    // The jitter buffer delays the start: the caller's bytes follow, unchanged.
    let probe = &sent[1600..4800];
    assert!(
        data.windows(probe.len()).any(|w| w == probe),
        "the caller's μ-law bytes are stored as they came"
    );
}

/// The payload `Caller` sends next (a second caller with the same tone keeps pace).
fn copy_packet(c: &mut Caller) -> Vec<u8> {
    let mut core = SessionCore::new(Uuid::nil(), PHONE_ALIAS.into(), None, Now::system());
    // A core with no leg ignores the packet; only the caller's state advances, which is
    // what makes its next payload. Rebuild the payload the way the caller does.
    let freq = c.freq;
    let phase0 = c.phase();
    c.send(&mut core, Now::system());
    (0..160)
        .map(|i| {
            let phase = phase0 + 2.0 * std::f64::consts::PI * freq / 8000.0 * i as f64;
            g711::ulaw_encode((phase.sin() * 8000.0) as i16)
        })
        .collect()
}

#[test]
fn tracks_as_ogg_copy_a_browsers_opus_packets_unchanged() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    let mut browser = Browser::connect(&mut rig, a, "web", 1, 41100);
    browser.publish_audio(&mut rig, "s-web");
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [],
        Duration::from_secs(1),
    );
    rig.join_leg(2, b);
    let req = request(RecordMode::Tracks, RecordFormat::Ogg);
    let id = req.id;
    rig.control(Control::Record(req));
    let mut caller = Caller::new(2, 660.0);
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [&mut caller],
        Duration::from_secs(2),
    );
    rig.control(Control::StopRecording(id));
    let got = files_of(&rig.take(), id);
    assert_eq!(got.stopped, Some(StopReason::Requested));
    assert_eq!(got.files.len(), 2);
    let (meta, bytes, _) = got
        .files
        .values()
        .find(|(m, _, _)| m.participant_id == Some(a))
        .expect("the browser's file");
    assert_eq!(meta.content_type, "audio/ogg");
    let packets: Vec<Vec<u8>> = pages(bytes).into_iter().flat_map(|p| p.3).skip(2).collect();
    assert!(
        packets.len() >= 90,
        "2 s of 20 ms packets: {}",
        packets.len()
    );
    // Every recorded packet is one the browser sent, in order, with none missing.
    let first = browser
        .spoken
        .iter()
        .position(|p| *p == packets[0])
        .expect("the first recorded packet was sent");
    assert_eq!(
        packets.as_slice(),
        &browser.spoken[first..first + packets.len()],
        "byte for byte"
    );
    // The caller's file is encoded once into Opus (8 kHz input).
    let (leg_meta, leg_bytes, leg_duration) = got
        .files
        .values()
        .find(|(m, _, _)| m.participant_id == Some(b))
        .expect("the caller's file");
    assert_eq!(leg_meta.rate, 8000);
    assert!(pages(leg_bytes).len() >= 3);
    assert!(leg_duration.is_some_and(|d| (1900..=2100).contains(&d)));
}

#[test]
fn mixed_records_the_room_whatever_the_subscriptions() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, a);
    rig.join_leg(2, b);
    let req = request(RecordMode::Mixed, RecordFormat::Wav);
    let id = req.id;
    rig.control(Control::Record(req));
    let mut tone = Caller::new(1, 440.0);
    let mut other = Caller::new(2, 660.0);
    rig.ticks(50, &mut [&mut tone, &mut other]);
    // Nobody hears anybody now: the room still sounds in the recording.
    rig.subscribe(&[a, b], a, &[]);
    rig.subscribe(&[a, b], b, &[]);
    rig.ticks(50, &mut [&mut tone, &mut other]);
    rig.control(Control::StopRecording(id));
    let got = files_of(&rig.take(), id);
    assert_eq!(got.files.len(), 1);
    let (meta, bytes, duration) = &got.files[&0];
    assert_eq!(
        (meta.rate, meta.channels, meta.participant_id),
        (NARROW_MIX_RATE, 1, None)
    );
    assert_eq!(*duration, Some(2000));
    let pcm = pcm16(&bytes[HEADER_LEN..]);
    assert_eq!(pcm.len(), 16_000, "G.711 callers only: mixed at 8 kHz");
    let (before, after) = pcm.split_at(8_000);
    assert!(
        rms(&before[4000..]) > 4000.0,
        "both tones: {}",
        rms(&before[4000..])
    );
    assert!(
        (rms(&after[2000..]) - rms(&before[4000..])).abs() < 500.0,
        "unchanged by the subscriptions: {} vs {}",
        rms(after),
        rms(&before[4000..])
    );
}

#[test]
fn dual_puts_the_first_participant_left_and_everyone_else_right() {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b, c]);
    rig.join_leg(1, a);
    rig.join_leg(2, b);
    rig.join_leg(3, c);
    let mut req = request(RecordMode::Dual, RecordFormat::Wav);
    req.first = Some(b);
    let id = req.id;
    rig.control(Control::Record(req));
    let mut quiet = Caller::new(1, 0.0);
    let mut talker = Caller::new(2, 440.0);
    let mut third = Caller::new(3, 0.0);
    rig.ticks(50, &mut [&mut quiet, &mut talker, &mut third]);
    rig.control(Control::StopRecording(id));
    let got = files_of(&rig.take(), id);
    let (meta, bytes, _) = &got.files[&0];
    assert_eq!(meta.channels, 2);
    let pcm = pcm16(&bytes[HEADER_LEN..]);
    let left: Vec<i16> = pcm.iter().step_by(2).copied().skip(4000).collect();
    let right: Vec<i16> = pcm.iter().skip(1).step_by(2).copied().skip(4000).collect();
    assert!(rms(&left) > 3000.0, "b is left: {}", rms(&left));
    assert!(rms(&right) < 50.0, "a and c are quiet: {}", rms(&right));
}

#[test]
fn a_recording_stops_at_its_size_limit() {
    let a = Uuid::new_v4();
    let mut rig = Rig::new();
    rig.members(&[a]);
    rig.join_leg(1, a);
    let mut req = request(RecordMode::Mixed, RecordFormat::Wav);
    req.max_bytes = 32_000;
    let id = req.id;
    rig.control(Control::Record(req));
    let mut tone = Caller::new(1, 440.0);
    rig.ticks(200, &mut [&mut tone]);
    let got = files_of(&rig.take(), id);
    assert_eq!(got.stopped, Some(StopReason::Limit));
    let (_, bytes, duration) = &got.files[&0];
    assert!(bytes.len() >= 32_000 && bytes.len() < 32_000 + 16_000 + HEADER_LEN);
    assert_eq!(
        *duration,
        Some(2000),
        "16,000 bytes a second: stopped after 2 s"
    );
}

#[test]
fn a_recording_of_a_session_without_calls_ticks_by_itself() {
    let a = Uuid::new_v4();
    let mut rig = Rig::new();
    rig.members(&[a]);
    let req = request(RecordMode::Mixed, RecordFormat::Ogg);
    let id = req.id;
    rig.control(Control::Record(req));
    assert!(rig.core.poll_timeout().is_some());
    rig.ticks(100, &mut []);
    rig.control(Control::StopRecording(id));
    let got = files_of(&rig.take(), id);
    let (meta, bytes, duration) = &got.files[&0];
    assert_eq!(meta.content_type, "audio/ogg");
    assert_eq!(*duration, Some(2000));
    let p = pages(bytes);
    assert_eq!(
        p.last().map(|p| (p.0 & 4, p.1)),
        Some((4, 96_000)),
        "EOS at 2 s"
    );
}

#[test]
fn a_later_segment_numbers_its_files_after_the_earlier_ones_and_offsets_them() {
    let a = Uuid::new_v4();
    let mut rig = Rig::new();
    rig.members(&[a]);
    let mut req = request(RecordMode::Mixed, RecordFormat::Wav);
    req.first_file = 2000;
    req.offset_ms = 7000;
    let id = req.id;
    rig.control(Control::Record(req));
    rig.ticks(10, &mut []);
    rig.control(Control::StopRecording(id));
    let got = files_of(&rig.take(), id);
    assert_eq!(got.files.keys().copied().collect::<Vec<_>>(), vec![2000]);
    let (meta, _, duration) = &got.files[&2000];
    assert_eq!(meta.name, "2000-mixed.wav");
    assert_eq!(meta.offset_ms, 7000);
    assert_eq!(*duration, Some(200));
}

#[test]
fn mixed_hears_browsers_too() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    let mut browser = Browser::connect(&mut rig, a, "web", 1, 41200);
    browser.publish_audio(&mut rig, "s-web");
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [],
        Duration::from_secs(1),
    );
    rig.join_leg(2, b);
    let req = request(RecordMode::Mixed, RecordFormat::Wav);
    let id = req.id;
    rig.control(Control::Record(req));
    let mut caller = Caller::new(2, 0.0);
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [&mut caller],
        Duration::from_secs(2),
    );
    rig.control(Control::StopRecording(id));
    let got = files_of(&rig.take(), id);
    let (_, bytes, _) = &got.files[&0];
    let pcm = pcm16(&bytes[HEADER_LEN..]);
    assert!(
        rms(&pcm[16_000..]) > 2000.0,
        "the browser's tone: {}",
        rms(&pcm[16_000..])
    );
}

#[test]
fn a_caller_changing_codec_gets_a_new_file_in_its_new_format() {
    let a = Uuid::new_v4();
    let mut rig = Rig::new();
    rig.members(&[a]);
    rig.join_leg(1, a);
    let req = request(RecordMode::Tracks, RecordFormat::Wav);
    let id = req.id;
    rig.control(Control::Record(req));
    let mut tone = Caller::new(1, 440.0);
    rig.ticks(50, &mut [&mut tone]);
    // A re-INVITE to G.722.
    let mut g722 = pcmu();
    g722.codec = crate::media::codec::AudioCodec::G722;
    g722.payload_type = 9;
    rig.control(Control::Update {
        leg: LegId(1),
        media: g722,
    });
    rig.ticks(50, &mut []);
    rig.control(Control::StopRecording(id));
    let got = files_of(&rig.take(), id);
    assert_eq!(
        got.files.len(),
        2,
        "{:?}",
        got.files.keys().collect::<Vec<_>>()
    );
    let first = &got.files[&0];
    let second = &got.files[&1];
    assert_eq!(
        (first.0.wav, first.0.rate, first.2),
        (
            Some(crate::media::container::wav::WavFormat::Mulaw),
            8000,
            Some(1000)
        )
    );
    assert_eq!(
        (second.0.wav, second.0.rate, second.0.offset_ms, second.2),
        (
            Some(crate::media::container::wav::WavFormat::Pcm16),
            16000,
            1000,
            Some(1000)
        )
    );
    assert_eq!(second.1.len(), HEADER_LEN + 32_000, "1 s of 16 kHz PCM");
}
