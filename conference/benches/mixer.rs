//! The mixer and the G.711 path of a 20-leg session, per 20 ms frame.
//!
//! `cargo bench -p patchbay-conference --bench mixer`
//!
//! Baselines measured in the same run, and the ratios printed at the end:
//! - `naive_per_listener`: each of the 20 listeners sums the other 19 streams
//!   itself (what a mixer without shared accumulation does);
//! - `g711_codec_only`: decoding 20 packets and encoding 20 mixes, no mixing —
//!   the floor of any G.711 conference bridge.

mod common;
use common::mean_ns;

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use patchbay_conference::media::codec::{AudioCodec, Decoder, Encoder};
use patchbay_conference::media::mixer::Mixer;
use patchbay_conference::media::pcm::PcmFifo;

/// The criterion group these benches are saved under.
const GROUP: &str = "session_20_legs_per_frame";

const LEGS: u64 = 20;
const FRAME: usize = 160;

fn tone(leg: u64) -> Vec<i16> {
    (0..FRAME)
        .map(|i| {
            (3000.0
                * (2.0 * std::f64::consts::PI * (300.0 + 40.0 * leg as f64) * i as f64 / 8000.0)
                    .sin()) as i16
        })
        .collect()
}

fn session_mixer() -> Mixer {
    let mut m = Mixer::new();
    let all: Vec<u64> = (0..LEGS).collect();
    for k in 0..LEGS {
        m.add_stream(k, 8000);
        m.add_listener(k, 8000, Some(k));
    }
    for k in 0..LEGS {
        m.set_hears(k, &all);
    }
    m
}

fn bench(c: &mut Criterion) {
    let frames: Vec<Vec<i16>> = (0..LEGS).map(tone).collect();
    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Elements(LEGS));

    let mut m = session_mixer();
    g.bench_function("mixer", |b| {
        b.iter(|| {
            for (k, f) in frames.iter().enumerate() {
                if let Some(buf) = m.frame_mut(k as u64) {
                    buf.copy_from_slice(f);
                }
            }
            m.mix();
            black_box(m.output(0).map(|o| o[0]));
        })
    });

    let mut outs = vec![vec![0i16; FRAME]; LEGS as usize];
    g.bench_function("naive_per_listener", |b| {
        b.iter(|| {
            for (l, out) in outs.iter_mut().enumerate() {
                let mut acc = [0i32; FRAME];
                for (k, f) in frames.iter().enumerate() {
                    if k != l {
                        for (a, &x) in acc.iter_mut().zip(f.iter()) {
                            *a += x as i32;
                        }
                    }
                }
                for (o, a) in out.iter_mut().zip(acc.iter()) {
                    *o = (*a).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
                }
            }
            black_box(outs[0][0]);
        })
    });

    // The whole G.711 path of a tick: decode 20 packets, mix, encode 20 mixes.
    let enc_frames: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut e = Encoder::new(AudioCodec::Pcmu).expect("encoder");
            let mut out = Vec::new();
            e.encode(f, &mut out).expect("encode");
            out
        })
        .collect();
    let mut decoders: Vec<Decoder> = (0..LEGS)
        .map(|_| Decoder::new(AudioCodec::Pcmu).expect("decoder"))
        .collect();
    let mut encoders: Vec<Encoder> = (0..LEGS)
        .map(|_| Encoder::new(AudioCodec::Pcmu).expect("encoder"))
        .collect();
    let mut fifos: Vec<PcmFifo> = (0..LEGS).map(|_| PcmFifo::new(2400)).collect();
    let mut frame = vec![0i16; FRAME];
    let mut payload = Vec::with_capacity(400);
    let mut m = session_mixer();
    g.bench_function("g711_decode_mix_encode", |b| {
        b.iter(|| {
            for k in 0..LEGS as usize {
                decoders[k].decode(&enc_frames[k], &mut fifos[k]);
                if fifos[k].pop(&mut frame) {
                    if let Some(buf) = m.frame_mut(k as u64) {
                        buf.copy_from_slice(&frame);
                    }
                }
            }
            m.mix();
            for (k, e) in encoders.iter_mut().enumerate() {
                if let Some(out) = m.output(k as u64) {
                    let _ = e.encode(out, &mut payload);
                }
            }
            black_box(payload.len());
        })
    });
    g.bench_function("g711_codec_only", |b| {
        b.iter(|| {
            for k in 0..LEGS as usize {
                decoders[k].decode(&enc_frames[k], &mut fifos[k]);
                fifos[k].pop(&mut frame);
                let _ = encoders[k].encode(&frame, &mut payload);
            }
            black_box(payload.len());
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    if let (Some(mix), Some(naive), Some(full), Some(codec)) = (
        mean_ns(GROUP, "mixer"),
        mean_ns(GROUP, "naive_per_listener"),
        mean_ns(GROUP, "g711_decode_mix_encode"),
        mean_ns(GROUP, "g711_codec_only"),
    ) {
        println!("\n20-leg session, per 20 ms frame:");
        println!(
            "  mixer                     {:>9.0} ns  ({:.2}x the naive per-listener mix: {:.0} ns)",
            mix,
            mix / naive,
            naive
        );
        println!(
            "  G.711 decode+mix+encode   {:>9.0} ns  ({:.2}x bare G.711 decode+encode: {:.0} ns)",
            full,
            full / codec,
            codec
        );
        println!(
            "  => {:.0} G.711 legs per core in mixing sessions of 20 (CPU of the media path only)",
            20.0 * 20e6 / full
        );
    }
}
