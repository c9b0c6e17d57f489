//! What a session's media plane is doing now, for people (the console) and `/metrics`:
//! every source with its live audio level and reception quality, and every listener
//! with what it actually gets (a SIP leg's mix, a device's forwarded tracks) — read
//! from the core's state, not from the stored subscriptions.
//!
//! The core keeps a [`Meter`] per audio source (from the decoded frames of a leg, from
//! the RFC 6464 level a browser puts on its packets) and the peer connections' RTCP
//! figures; [`SessionCore::view`] assembles them. The shell takes a view a few times a
//! second while someone watches, once a second otherwise — never per packet.

use serde::Serialize;
use uuid::Uuid;

use super::core::{Now, SessionCore};
use super::ids::{LegId, Source};
use super::{LegReport, StreamState};
use crate::media::codec::AudioCodec;
use crate::media::emodel::{self, CodecImpairment, Measured};

/// Below this level (dBov) a source is not speaking.
pub const SPEAKING_DBOV: f32 = -45.0;
/// A level older than this is silence (the source stopped sending).
const LEVEL_STALE_US: u64 = 500_000;
/// The quietest level reported.
const FLOOR_DBOV: f32 = -127.0;

/// A smoothed audio level in dBov (0 is full scale).
#[derive(Debug, Clone, Copy)]
pub(super) struct Meter {
    dbov: f32,
    at_us: u64,
}

impl Default for Meter {
    fn default() -> Meter {
        Meter {
            dbov: FLOOR_DBOV,
            at_us: 0,
        }
    }
}

impl Meter {
    /// One frame of decoded audio.
    pub(super) fn pcm(&mut self, frame: &[i16], now_us: u64) {
        if frame.is_empty() {
            return;
        }
        let energy: f64 = frame.iter().map(|&s| (s as f64) * (s as f64)).sum();
        let rms = (energy / frame.len() as f64).sqrt();
        let dbov = if rms < 1.0 {
            FLOOR_DBOV
        } else {
            (20.0 * (rms / 32768.0).log10()) as f32
        };
        self.level(dbov, now_us);
    }

    /// A level a sender measured (RFC 6464: 0 to 127, meaning −dBov).
    pub(super) fn rfc6464(&mut self, minus_dbov: i8, now_us: u64) {
        self.level(-(minus_dbov.clamp(0, 127) as f32), now_us);
    }

    fn level(&mut self, dbov: f32, now_us: u64) {
        let dbov = dbov.clamp(FLOOR_DBOV, 0.0);
        // Fast attack, slower release (a meter people can read).
        self.dbov = if dbov > self.dbov || now_us.saturating_sub(self.at_us) > LEVEL_STALE_US {
            dbov
        } else {
            self.dbov * 0.8 + dbov * 0.2
        };
        self.at_us = now_us;
    }

    /// The level now (silence when nothing arrived lately).
    pub(super) fn dbov(&self, now_us: u64) -> f32 {
        if self.at_us == 0 || now_us.saturating_sub(self.at_us) > LEVEL_STALE_US {
            FLOOR_DBOV
        } else {
            self.dbov
        }
    }
}

/// Reception figures of a browser's published track, from its peer connection's RTCP.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct TrackStats {
    pub(super) packets: u64,
    /// Fraction lost in the last receiver report (0–1).
    pub(super) loss: f32,
    pub(super) jitter_ms: f64,
}

/// A publishing connection's RTCP figures for one of its mids (about once a second).
pub(super) fn ingress_stats(
    rtc: &str0m::Rtc,
    ingress: &mut Vec<(str0m::media::Mid, TrackStats)>,
    s: &str0m::stats::MediaIngressStats,
) {
    // Audio is Opus at 48 kHz, video 90 kHz: the jitter's clock is told by the mid's kind,
    // which the connection knows; both are close enough at 48 kHz for a display in ms.
    let clock = rtc
        .media(s.mid)
        .map(|m| match m.kind() {
            str0m::media::MediaKind::Audio => 48_000.0,
            str0m::media::MediaKind::Video => 90_000.0,
        })
        .unwrap_or(48_000.0);
    let stats = TrackStats {
        packets: s.packets,
        loss: s.loss.unwrap_or(0.0).clamp(0.0, 1.0),
        jitter_ms: s.jitter as f64 * 1000.0 / clock,
    };
    if let Some((_, t)) = ingress.iter_mut().find(|(m, _)| *m == s.mid) {
        *t = stats;
    } else if ingress.len() < 64 {
        // One entry per mid of the connection (bounded by its m-lines).
        ingress.push((s.mid, stats));
    }
}

/// Where a stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A SIP call.
    Phone,
    /// A browser device.
    Browser,
    /// A stream participant's bot (a WebSocket in place of a call).
    Bot,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Phone => "phone",
            Origin::Browser => "browser",
            Origin::Bot => "bot",
        }
    }
}

/// How a listener gets a stream now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Decoded into the listener's mix (SIP legs).
    Mixing,
    /// Its packets are written into the listener's connection (browsers).
    Forwarding,
}

/// Reception quality of one stream, with its estimated MOS.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    pub codec: String,
    pub packets: u64,
    /// Packets lost, percent of those expected.
    pub loss_percent: f64,
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, when the far end reports.
    pub rtt_ms: Option<f64>,
    /// E-model (ITU-T G.107) estimate, 1–4.5.
    pub mos: f64,
}

impl Quality {
    fn new(
        codec: &str,
        impairment: CodecImpairment,
        packets: u64,
        loss_percent: f64,
        jitter_ms: f64,
        rtt_ms: Option<f64>,
        ptime_ms: f64,
    ) -> Quality {
        let mos = emodel::mos(
            impairment,
            Measured {
                loss_percent,
                rtt_ms: rtt_ms.unwrap_or(0.0),
                jitter_ms,
                // Packetization plus the jitter buffer's usual 40 ms.
                fixed_delay_ms: ptime_ms + 40.0,
            },
        );
        let round = |v: f64| (v * 100.0).round() / 100.0;
        Quality {
            codec: codec.to_string(),
            packets,
            loss_percent: round(loss_percent),
            jitter_ms: round(jitter_ms),
            rtt_ms: rtt_ms.map(round),
            mos: round(mos),
        }
    }
}

/// A stream published in the session.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceView {
    pub participant_id: Uuid,
    pub alias: Option<String>,
    pub origin: Origin,
    /// `AUDIO` or `VIDEO`.
    pub media_type: &'static str,
    /// Audio level now, dBov (−127: silence; none for video).
    pub level_dbov: Option<f32>,
    pub speaking: bool,
    pub quality: Option<Quality>,
}

/// One stream a listener gets.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Heard {
    pub participant_id: Uuid,
    pub alias: Option<String>,
    pub media_type: &'static str,
    pub delivery: Delivery,
}

/// A SIP leg or a browser device, and what reaches it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerView {
    pub participant_id: Uuid,
    pub origin: Origin,
    /// The browser's `uniqueId`, the SIP call's Call-ID, or the bot's stream id.
    pub device: String,
    pub hears: Vec<Heard>,
    /// A bot's connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamState>,
}

/// A session's media plane now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaView {
    pub session_id: Uuid,
    /// When it was taken, ms since the Unix epoch.
    pub at_ms: u64,
    pub sources: Vec<SourceView>,
    pub listeners: Vec<ListenerView>,
}

/// A leg is a call, or a bot's stream.
fn leg_origin(report: &LegReport) -> Origin {
    if report.stream.is_some() {
        Origin::Bot
    } else {
        Origin::Phone
    }
}

fn codec_of_leg(codec: AudioCodec) -> (&'static str, CodecImpairment) {
    match codec {
        AudioCodec::Pcmu => ("PCMU", CodecImpairment::G711),
        AudioCodec::Pcma => ("PCMA", CodecImpairment::G711),
        AudioCodec::G722 => ("G722", CodecImpairment::G722),
        AudioCodec::Opus => ("opus", CodecImpairment::OPUS),
        // Linear PCM repeats lost frames like G.711.
        AudioCodec::L16 => ("L16", CodecImpairment::G711),
    }
}

fn media_type(kind: str0m::media::MediaKind) -> &'static str {
    match kind {
        str0m::media::MediaKind::Audio => "AUDIO",
        str0m::media::MediaKind::Video => "VIDEO",
    }
}

impl SessionCore {
    /// The media plane now; `legs` gives each SIP leg's reception figures (kept by the
    /// SIP side's RTCP), or a bot's connection.
    pub fn view(&self, now: Now, legs: &dyn Fn(LegId) -> LegReport) -> MediaView {
        let mut sources = Vec::new();
        let mut legs_sorted: Vec<_> = self.legs.iter().collect();
        legs_sorted.sort_by_key(|(id, _)| **id);
        for &(id, leg) in &legs_sorted {
            let level = leg.meter.dbov(now.unix_us);
            let (codec, impairment) = codec_of_leg(leg.media.codec);
            let report = legs(*id);
            let quality = report.quality.map(|q| {
                let lost = q.expected.saturating_sub(q.received);
                let loss = if q.expected == 0 {
                    0.0
                } else {
                    lost as f64 * 100.0 / q.expected as f64
                };
                Quality::new(
                    codec,
                    impairment,
                    q.received,
                    loss,
                    q.jitter_ms,
                    q.rtt_ms,
                    leg.media.ptime_ms as f64,
                )
            });
            sources.push(SourceView {
                participant_id: leg.owner.participant_id,
                alias: Some(self.alias.to_string()),
                origin: leg_origin(&report),
                media_type: "AUDIO",
                level_dbov: Some(level),
                speaking: level > SPEAKING_DBOV,
                quality,
            });
        }
        let mut listeners = Vec::new();
        let mut devices: Vec<_> = self.devices.iter().collect();
        devices.sort_by_key(|(id, _)| **id);
        for (_, d) in &devices {
            for t in &d.published {
                let audio = t.kind == str0m::media::MediaKind::Audio;
                let level = audio.then(|| t.meter.dbov(now.unix_us));
                let pc = d.pc(t.pc);
                // The device's round trip: its publishing connection's, else the one its
                // receiver reports tell on another connection of the same device.
                let rtt = pc
                    .and_then(|p| p.rtt_ms)
                    .or_else(|| d.pcs.iter().find_map(|p| p.rtt_ms));
                let stats = pc.and_then(|p| p.ingress.iter().find(|(m, _)| *m == t.mid));
                let quality = stats.map(|(_, s)| {
                    let (codec, impairment) = match t.codec {
                        Some(c) => (c.to_string(), CodecImpairment::OPUS),
                        None => ("?".to_string(), CodecImpairment::OPUS),
                    };
                    Quality::new(
                        &codec,
                        impairment,
                        s.packets,
                        s.loss as f64 * 100.0,
                        s.jitter_ms,
                        rtt,
                        20.0,
                    )
                });
                sources.push(SourceView {
                    participant_id: d.key.participant_id,
                    alias: t.alias.clone(),
                    origin: Origin::Browser,
                    media_type: media_type(t.kind),
                    level_dbov: level,
                    speaking: level.is_some_and(|l| l > SPEAKING_DBOV),
                    quality,
                });
            }
            listeners.push(ListenerView {
                participant_id: d.key.participant_id,
                origin: Origin::Browser,
                device: d.key.unique_id.to_string(),
                hears: d
                    .forwards
                    .iter()
                    .filter(|f| f.to_mid.is_some())
                    .map(|f| Heard {
                        participant_id: f.participant_id,
                        alias: f.alias.clone(),
                        media_type: media_type(f.kind),
                        delivery: Delivery::Forwarding,
                    })
                    .collect(),
                stream: None,
            });
        }
        for (id, leg) in legs_sorted {
            let report = legs(*id);
            let hears = self
                .mixer
                .hears(leg.key)
                .unwrap_or_default()
                .iter()
                .filter_map(|key| self.mixer_source(*key))
                .map(|(participant_id, alias)| Heard {
                    participant_id,
                    alias,
                    media_type: "AUDIO",
                    delivery: Delivery::Mixing,
                })
                .collect();
            listeners.push(ListenerView {
                participant_id: leg.owner.participant_id,
                origin: leg_origin(&report),
                device: leg.call_id.to_string(),
                hears,
                stream: report.stream,
            });
        }
        MediaView {
            session_id: self.session_id,
            at_ms: now.unix_us / 1000,
            sources,
            listeners,
        }
    }

    /// Whose stream a mixer key is (a leg's, or a browser's audio track).
    fn mixer_source(&self, key: u64) -> Option<(Uuid, Option<String>)> {
        if let Some(l) = self.legs.values().find(|l| l.key == key) {
            return Some((l.owner.participant_id, Some(self.alias.to_string())));
        }
        self.browser_audio
            .iter()
            .find(|b| b.key == key)
            .map(|b| (b.participant_id, b.alias.clone()))
    }

    /// A publisher's audio frame arrived: its level, codec (browsers' tracks).
    pub(super) fn meter_track(
        &mut self,
        from: super::ids::DeviceId,
        source: Source,
        data: &str0m::media::MediaData,
        now_us: u64,
    ) {
        let Source::Track(_, pc, mid) = source else {
            return;
        };
        let Some(t) = self
            .devices
            .get_mut(&from)
            .and_then(|d| d.published.iter_mut().find(|t| t.pc == pc && t.mid == mid))
        else {
            return;
        };
        t.codec = Some(data.params.spec().codec);
        if let Some(level) = data.ext_vals.audio_level {
            t.meter.rfc6464(level, now_us);
        }
    }
}

/// A label value in the Prometheus text format (aliases are chosen by clients).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars().take(64) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Every running session's streams' quality and level as Prometheus gauges (one series
/// per published stream: bounded by sessions × 20 participants × their tracks).
pub fn render_views(views: &[std::sync::Arc<MediaView>], out: &mut String) {
    use std::fmt::Write;
    type Figure = fn(&SourceView) -> Option<f64>;
    let figures: [(&str, &str, Figure); 6] = [
        ("patchbay_stream_loss_percent", "Packets of the stream lost, percent of those expected (SIP legs: since the call began; browsers: last RTCP interval).", |s| s.quality.as_ref().map(|q| q.loss_percent)),
        ("patchbay_stream_jitter_ms", "Interarrival jitter of the stream (RFC 3550), ms.", |s| s.quality.as_ref().map(|q| q.jitter_ms)),
        ("patchbay_stream_rtt_ms", "Round-trip time to the stream's sender from RTCP, ms.", |s| s.quality.as_ref().and_then(|q| q.rtt_ms)),
        ("patchbay_stream_mos", "Estimated MOS of the stream (E-model, ITU-T G.107).", |s| s.quality.as_ref().map(|q| q.mos)),
        ("patchbay_stream_packets", "RTP packets of the stream received.", |s| s.quality.as_ref().map(|q| q.packets as f64)),
        ("patchbay_stream_level_dbov", "Audio level of the stream now, dBov (-127: silence).", |s| s.level_dbov.map(f64::from)),
    ];
    for (name, help, figure) in figures {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for v in views {
            for s in &v.sources {
                let Some(value) = figure(s) else { continue };
                let codec = s
                    .quality
                    .as_ref()
                    .map(|q| label(&q.codec))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{name}{{session=\"{}\",participant=\"{}\",alias=\"{}\",origin=\"{}\",media=\"{}\",codec=\"{codec}\"}} {value}",
                    v.session_id,
                    s.participant_id,
                    label(s.alias.as_deref().unwrap_or("")),
                    s.origin.as_str(),
                    s.media_type,
                );
            }
        }
    }
}

/// Without the operator's credentials: how many streams run, by origin and media (no
/// session, participant or client-chosen string).
pub fn render_stream_counts(views: &[std::sync::Arc<MediaView>], out: &mut String) {
    use std::fmt::Write;
    let mut counts: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for s in views.iter().flat_map(|v| &v.sources) {
        let origin = s.origin.as_str();
        *counts.entry((origin, s.media_type)).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "# HELP patchbay_streams Published streams now, by origin and media (per-stream series need the operator's credentials).\n# TYPE patchbay_streams gauge"
    );
    for ((origin, media), n) in counts {
        let _ = writeln!(
            out,
            "patchbay_streams{{origin=\"{origin}\",media=\"{media}\"}} {n}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_reads_a_tone_and_falls_to_silence_when_it_stops() {
        let mut m = Meter::default();
        // A full-scale square wave is 0 dBov; half scale about −6.
        let frame: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { 16384 } else { -16384 })
            .collect();
        m.pcm(&frame, 1_000_000);
        assert!(
            (m.dbov(1_000_000) + 6.02).abs() < 0.1,
            "{}",
            m.dbov(1_000_000)
        );
        assert!(m.dbov(1_000_000) > SPEAKING_DBOV);
        // Silence decays (slow release) ...
        m.pcm(&[0; 160], 1_020_000);
        let after = m.dbov(1_020_000);
        assert!(after < -6.0 && after > -40.0, "{after}");
        // ... and nothing for half a second is silence.
        assert_eq!(m.dbov(1_600_000), FLOOR_DBOV);
        let mut b = Meter::default();
        b.rfc6464(30, 5);
        assert_eq!(b.dbov(5), -30.0);
        b.rfc6464(-3, 6);
        assert!(b.dbov(6) <= 0.0);
    }

    #[test]
    fn metrics_escape_client_chosen_aliases() {
        let view = MediaView {
            session_id: Uuid::nil(),
            at_ms: 0,
            sources: vec![SourceView {
                participant_id: Uuid::nil(),
                alias: Some("a\"b\\c\nd".into()),
                origin: Origin::Browser,
                media_type: "AUDIO",
                level_dbov: Some(-20.0),
                speaking: true,
                quality: Some(Quality::new(
                    "opus",
                    CodecImpairment::OPUS,
                    10,
                    0.0,
                    2.0,
                    Some(30.0),
                    20.0,
                )),
            }],
            listeners: vec![],
        };
        let mut out = String::new();
        render_views(&[std::sync::Arc::new(view)], &mut out);
        assert!(out.contains(r#"alias="a\"b\\c\nd""#), "{out}");
        assert!(out.contains("patchbay_stream_rtt_ms{"), "{out}");
        assert!(out.lines().all(|l| !l.is_empty()));
    }

    #[test]
    fn quality_puts_loss_into_the_mos() {
        let clean = Quality::new("PCMU", CodecImpairment::G711, 500, 0.0, 1.0, None, 20.0);
        let lossy = Quality::new("PCMU", CodecImpairment::G711, 450, 10.0, 1.0, None, 20.0);
        assert!(clean.mos > 4.2, "{clean:?}");
        assert!(lossy.mos < 3.5, "{lossy:?}");
        assert_eq!(lossy.loss_percent, 10.0);
    }
}
