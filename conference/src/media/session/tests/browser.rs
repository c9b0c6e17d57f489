//! Browsers as in-memory str0m clients (the SDK's side: negotiated data channels, a
//! publishing connection it offers, a subscribing connection it answers), driven
//! with the core on one fake clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use uuid::Uuid;

use super::super::*;
use super::harness::*;
use crate::events::{DeviceClose, DeviceEventKind, DeviceNote};
use crate::media::codec::Encoder;

fn sdk_channel(id: u16, label: &str) -> str0m::channel::ChannelConfig {
    str0m::channel::ChannelConfig {
        label: label.to_string(),
        negotiated: Some(id),
        protocol: "udp".to_string(),
        ..Default::default()
    }
}

pub struct Browser {
    pub key: DeviceKey,
    pub conn: ConnId,
    /// Each connection's address (a browser gives each peer connection its own port).
    addr: [SocketAddr; 2],
    publish: str0m::Rtc,
    subscribe: str0m::Rtc,
    /// The subscribing connection's answered revisions.
    pub revisions: Vec<u64>,
    /// The last offer answered on it.
    pub last_offer: Option<String>,
    /// Media frames received on the subscribing connection.
    pub frames: usize,
    /// Whether the heartbeat channels (one per connection) should answer PING.
    pub pong: bool,
    /// Every datagram sent to the core, with its source, when set (fuzz seeds).
    pub sent: Option<Vec<(SocketAddr, Vec<u8>)>>,
    heartbeat: [Option<str0m::channel::ChannelId>; 2],
    audio_mid: Option<Mid>,
    tone: Tone,
    /// Every Opus payload it published, in order.
    pub spoken: Vec<Vec<u8>>,
}

/// A 440 Hz tone as 20 ms Opus frames stamped in 48 kHz RTP time (what the tests'
/// clients publish).
pub struct Tone {
    opus: Option<Encoder>,
    /// The RTP time of the next frame.
    pub ts: u64,
    phase: f64,
}

impl Tone {
    pub fn new() -> Tone {
        Tone {
            opus: Encoder::opus_at(16000).ok(),
            ts: 0,
            phase: 0.0,
        }
    }

    /// The next frame and its RTP time.
    pub fn next_frame(&mut self) -> Option<(MediaTime, Vec<u8>)> {
        let opus = self.opus.as_mut()?;
        let pcm: Vec<i16> = (0..320)
            .map(|_| {
                self.phase += 2.0 * std::f64::consts::PI * 440.0 / 16000.0;
                (self.phase.sin() * 8000.0) as i16
            })
            .collect();
        let mut payload = Vec::new();
        opus.encode(&pcm, &mut payload).ok()?;
        let time = MediaTime::new(self.ts, Frequency::FORTY_EIGHT_KHZ);
        self.ts += 960;
        Some((time, payload))
    }
}

impl Browser {
    pub fn connect(
        rig: &mut Rig,
        participant_id: Uuid,
        unique_id: &str,
        conn: u64,
        port: u16,
    ) -> Browser {
        let addr: [SocketAddr; 2] = [port, port + 1].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        let new_rtc = |addr: SocketAddr| {
            // Like Chromium: telephone-event beside Opus, for the SDK's sendDtmf.
            let mut config = str0m::Rtc::builder();
            config.codec_config().add_config(
                110.into(),
                None,
                str0m::format::Codec::Tele,
                Frequency::FORTY_EIGHT_KHZ,
                None,
                str0m::format::FormatParams::default(),
            );
            let mut rtc = config.build(rig.now.at);
            if let Ok(c) = str0m::Candidate::host(addr, "udp") {
                rtc.add_local_candidate(c);
            }
            rtc
        };
        let (publish, subscribe) = (new_rtc(addr[0]), new_rtc(addr[1]));
        rig.device(participant_id, unique_id, conn);
        Browser {
            key: DeviceKey::new(participant_id, unique_id),
            conn: ConnId(conn),
            addr,
            publish,
            subscribe,
            revisions: Vec::new(),
            last_offer: None,
            frames: 0,
            pong: true,
            sent: None,
            heartbeat: [None; 2],
            audio_mid: None,
            tone: Tone::new(),
            spoken: Vec::new(),
        }
    }

    /// Its signaling reconnects to `rig` (another owner of the session) as `conn`,
    /// with what that owner read from the store; its peer connections carry on.
    pub fn rejoin(&mut self, rig: &mut Rig, conn: u64, prior: Option<SubscribeLayout>) {
        self.conn = ConnId(conn);
        let key = self.key.clone();
        rig.device_after(
            key.participant_id,
            &key.unique_id,
            conn,
            Protocol::V3,
            prior,
        );
    }

    /// Offer to publish one audio track under `stream`; takes the core's answer.
    pub fn publish_audio(&mut self, rig: &mut Rig, stream: &str) {
        let mut change = self.publish.sdp_api();
        change.add_channel_with_config(sdk_channel(0, "__heartbeat__"));
        change.add_channel_with_config(sdk_channel(1, "__diagnostics__"));
        let mid = change.add_media(
            MediaKind::Audio,
            Direction::SendOnly,
            Some(stream.to_string()),
            Some(format!("{stream}-a")),
            None,
        );
        let Some((offer, pending)) = change.apply() else {
            panic!("no publish offer")
        };
        self.audio_mid = Some(mid);
        rig.control(Control::Publish {
            key: self.key.clone(),
            conn: self.conn,
            request: 77,
            offer: PublishRequest {
                sdp: offer.to_sdp_string(),
                aliases: vec![(stream.to_string(), "mic".to_string())],
                may_publish_audio: true,
                may_publish_video: true,
                default_alias: None,
                endpoint: None,
            },
        });
        let result = rig.seen.actions.iter().find_map(|a| match a {
            Action::Published {
                request: 77,
                result,
            } => Some(result.clone()),
            _ => None,
        });
        rig.seen
            .actions
            .retain(|a| !matches!(a, Action::Published { request: 77, .. }));
        let answer = result.expect("a publish answer").expect("publish accepted");
        let answer = str0m::change::SdpAnswer::from_sdp_string(&answer.sdp).expect("answer SDP");
        self.publish
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
    }

    /// Write one frame of `codec` on the publishing connection's `mid`.
    fn write(
        &mut self,
        rig: &Rig,
        mid: Mid,
        codec: str0m::format::Codec,
        time: MediaTime,
        data: Vec<u8>,
    ) {
        let Some(writer) = self.publish.writer(mid) else {
            panic!("no writer for {mid}")
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            panic!("{codec:?} not negotiated")
        };
        let _ = writer.write(pt, rig.now.at, time, Arc::<[u8]>::from(data));
    }

    /// One RFC 4733 packet of `digit` on the published audio (as `sendDtmf` sends it).
    pub fn dtmf(&mut self, rig: &Rig, digit: u8, end: bool) {
        let Some(mid) = self.audio_mid else { return };
        let time = MediaTime::new(self.tone.ts, Frequency::FORTY_EIGHT_KHZ);
        let flags = if end { 0x8a } else { 0x0a };
        let payload = vec![digit, flags, 0x03, 0xc0];
        self.write(rig, mid, str0m::format::Codec::Tele, time, payload);
    }
}

/// A client of the core in these tests (a v3 [`Browser`], a v2 client).
pub trait Client {
    /// Act on what the core told this device (offers, endpoints).
    fn react(&mut self, rig: &mut Rig);
    /// One 20 ms frame of its tone on what it publishes, if it publishes.
    fn speak(&mut self, rig: &Rig);
    /// Drive its connections: datagrams to the core, events noted.
    fn drive(&mut self, rig: &mut Rig);
    /// Take the core's datagrams for its connections.
    fn receive(&mut self, rig: &mut Rig);
}

impl Client for Browser {
    /// Answer every offer the core sent this device.
    fn react(&mut self, rig: &mut Rig) {
        let conn = self.conn;
        let offers: Vec<Offer> = rig.seen.offers(conn);
        rig.seen.actions.retain(
            |a| !matches!(a, Action::Note { conn: c, note: DeviceNote::Offer(_) } if *c == conn),
        );
        for offer in offers {
            let parsed = str0m::change::SdpOffer::from_sdp_string(&offer.sdp).expect("offer SDP");
            let answer = self
                .subscribe
                .sdp_api()
                .accept_offer(parsed)
                .expect("offer accepted");
            if self.revisions.is_empty() {
                // Like the SDK: the negotiated heartbeat channel on this connection too.
                let mut direct = self.subscribe.direct_api();
                direct.create_data_channel(sdk_channel(0, "__heartbeat__"));
                direct.create_data_channel(sdk_channel(1, "__diagnostics__"));
            }
            self.revisions.push(offer.revision);
            self.last_offer = Some(offer.sdp.clone());
            rig.control(Control::Answer {
                key: self.key.clone(),
                conn,
                sdp: answer.to_sdp_string(),
            });
        }
    }
    /// One 20 ms Opus frame of a 440 Hz tone, if publishing.
    fn speak(&mut self, rig: &Rig) {
        let Some(mid) = self.audio_mid else { return };
        let Some((time, payload)) = self.tone.next_frame() else {
            return;
        };
        self.spoken.push(payload.clone());
        self.write(rig, mid, str0m::format::Codec::Opus, time, payload);
    }
    /// Drive both connections: datagrams to the core, events noted.
    fn drive(&mut self, rig: &mut Rig) {
        let now = rig.now;
        for pass in 0..2 {
            let rtc = if pass == 0 {
                &mut self.publish
            } else {
                &mut self.subscribe
            };
            let _ = rtc.handle_input(str0m::Input::Timeout(now.at));
            loop {
                match rtc.poll_output() {
                    Ok(str0m::Output::Timeout(_)) | Err(_) => break,
                    Ok(str0m::Output::Transmit(t)) => {
                        if let Some(sent) = self.sent.as_mut() {
                            sent.push((self.addr[pass], t.contents.to_vec()));
                        }
                        rig.core.handle_datagram(now, self.addr[pass], &t.contents);
                    }
                    Ok(str0m::Output::Event(e)) => match e {
                        str0m::Event::MediaData(_) if pass == 1 => self.frames += 1,
                        str0m::Event::ChannelOpen(id, label) if label == "__heartbeat__" => {
                            self.heartbeat[pass] = Some(id);
                        }
                        str0m::Event::ChannelData(d)
                            if self.pong
                                && Some(d.id) == self.heartbeat[pass]
                                && d.data == b"PING" =>
                        {
                            if let Some(mut ch) = rtc.channel(d.id) {
                                let _ = ch.write(false, b"PONG");
                            }
                        }
                        _ => {}
                    },
                }
            }
        }
        rig.core.flush(now);
        rig.collect();
    }
    /// Take the core's datagrams for this browser.
    fn receive(&mut self, rig: &mut Rig) {
        let core: SocketAddr = CORE_ADDR.parse().expect("address");
        let addr = self.addr;
        let mine: Vec<(usize, Vec<u8>)> = rig
            .seen
            .transmit
            .iter()
            .filter_map(|(to, d)| addr.iter().position(|a| a == to).map(|i| (i, d.clone())))
            .collect();
        rig.seen.transmit.retain(|(to, _)| !addr.contains(to));
        for (pass, d) in mine {
            let Ok(receive) =
                str0m::net::Receive::new(str0m::net::Protocol::Udp, core, addr[pass], &d)
            else {
                continue;
            };
            let input = str0m::Input::Receive(rig.now.at, receive);
            let rtc = if pass == 0 {
                &mut self.publish
            } else {
                &mut self.subscribe
            };
            let _ = rtc.handle_input(input);
        }
    }
}

/// Run the core and `clients` for `d` in 5 ms steps, clients speaking and callers
/// sending every 20 ms.
pub fn run(
    rig: &mut Rig,
    clients: &mut [&mut dyn Client],
    callers: &mut [&mut Caller],
    d: Duration,
) {
    for step in 0..d.as_millis() / 5 {
        for c in clients.iter_mut() {
            c.react(rig);
            if step % 4 == 0 {
                c.speak(rig);
            }
            c.drive(rig);
            c.receive(rig);
        }
        if step % 4 == 0 {
            for c in callers.iter_mut() {
                c.send(&mut rig.core, rig.now);
            }
        }
        rig.advance(Duration::from_millis(5));
        for c in clients.iter_mut() {
            c.receive(rig);
        }
    }
}

#[test]
fn a_browser_and_a_leg_hear_each_other_and_audio_is_decoded_only_while_heard() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    let mut browser = Browser::connect(&mut rig, a, "web", 1, 41000);
    browser.publish_audio(&mut rig, "s-web");
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [],
        Duration::from_secs(2),
    );
    let stats = crate::media::stats::MediaStats::default();
    rig.core.fold_stats(&stats);
    let decoded = |s: &crate::media::stats::MediaStats| {
        s.browser_audio_decoded
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(
        stats
            .webrtc_media_in
            .load(std::sync::atomic::Ordering::Relaxed)
            > 50,
        "the browser's audio arrives"
    );
    assert_eq!(decoded(&stats), 0, "no leg hears it: not decoded");

    rig.join_leg(1, b);
    let mut caller = Caller::new(1, 660.0);
    rig.seen.audio.clear();
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [&mut caller],
        Duration::from_secs(3),
    );
    rig.core.fold_stats(&stats);
    assert!(decoded(&stats) > 50, "decoded now: {}", decoded(&stats));
    let to_leg: Vec<&[u8]> = rig.seen.audio_of(LegId(1)).skip(75).collect();
    assert!(
        level(&to_leg) > 1000.0,
        "the leg hears the browser: {}",
        level(&to_leg)
    );
    assert!(
        browser.frames > 50,
        "the browser receives the leg: {}",
        browser.frames
    );
    assert_eq!(browser.revisions, vec![1]);
}

/// Two members hearing each other: a speaker publishing audio (on `port`; its
/// datagrams kept in `sent` when `capture`) and a listener, after 2 s of media.
pub fn speaker_and_listener(port: u16, capture: bool) -> (Rig, Browser, Browser, [Uuid; 2]) {
    speaker_and_listener_answering(port, capture, true)
}

/// Like [`speaker_and_listener`]; `pong`: whether both answer PING (Bandwidth's browser
/// SDK does, its Android and iOS SDKs do not).
pub fn speaker_and_listener_answering(
    port: u16,
    capture: bool,
    pong: bool,
) -> (Rig, Browser, Browser, [Uuid; 2]) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    let mut speaker = Browser::connect(&mut rig, a, "speaker", 1, port);
    let mut listener = Browser::connect(&mut rig, b, "listener", 2, port + 10);
    speaker.pong = pong;
    listener.pong = pong;
    if capture {
        speaker.sent = Some(Vec::new());
    }
    speaker.publish_audio(&mut rig, "s-speaker");
    run(
        &mut rig,
        &mut [&mut speaker, &mut listener],
        &mut [],
        Duration::from_secs(2),
    );
    (rig, speaker, listener, [a, b])
}

#[test]
fn forwarding_follows_subscriptions_between_browsers() {
    let (mut rig, mut speaker, mut listener, [a, b]) = speaker_and_listener(41010, false);
    assert!(listener.frames > 40, "forwarded: {}", listener.frames);
    assert_eq!(listener.revisions, vec![1]);
    // The listener now hears nobody: forwarding stops at once and it gets a new offer.
    rig.subscribe(&[a, b], b, &[b]);
    let before = listener.frames;
    run(
        &mut rig,
        &mut [&mut speaker, &mut listener],
        &mut [],
        Duration::from_secs(1),
    );
    assert!(
        listener.frames - before <= 2,
        "nothing forwarded after the change: {}",
        listener.frames - before
    );
    assert_eq!(listener.revisions, vec![1, 2]);
    // And back.
    rig.members(&[a, b]);
    let before = listener.frames;
    run(
        &mut rig,
        &mut [&mut speaker, &mut listener],
        &mut [],
        Duration::from_secs(2),
    );
    assert!(
        listener.frames - before > 40,
        "forwarded again: {}",
        listener.frames - before
    );
    assert_eq!(listener.revisions, vec![1, 2, 3]);
}

#[test]
fn a_device_whose_heartbeat_dies_is_ended() {
    let a = Uuid::new_v4();
    let mut rig = Rig::new();
    rig.members(&[a]);
    let mut browser = Browser::connect(&mut rig, a, "web", 1, 41030);
    browser.publish_audio(&mut rig, "s-web");
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [],
        Duration::from_secs(12),
    );
    assert!(
        rig.seen.closes().is_empty(),
        "PONGs keep it: {:?}",
        rig.seen.closes()
    );
    browser.pong = false;
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [],
        Duration::from_secs(22),
    );
    assert_eq!(
        rig.seen.closes(),
        vec![(ConnId(1), DeviceClose::HeartbeatLost)]
    );
    assert_eq!(rig.core.counts(), (0, 0));
}

/// Bandwidth's Android and iOS SDKs open `__heartbeat__` and never answer PING: such a
/// device lives as long as its peer connections hear from it (media, RTCP, consent).
#[test]
fn a_device_that_never_answers_ping_stays_while_its_connections_live() {
    let (mut rig, mut speaker, mut listener, _) =
        speaker_and_listener_answering(41050, false, false);
    let before = listener.frames;
    run(
        &mut rig,
        &mut [&mut speaker, &mut listener],
        &mut [],
        Duration::from_secs(60),
    );
    assert!(rig.seen.closes().is_empty(), "{:?}", rig.seen.closes());
    assert_eq!(rig.core.counts(), (0, 2));
    assert!(
        listener.frames - before > 2500,
        "its audio kept flowing for 60 s: {} frames",
        listener.frames - before
    );
}

/// A device that froze (its socket open, nothing arriving) is ended 30 s after the last
/// datagram, with `onDisconnect` and `onLeave`.
#[test]
fn a_frozen_device_is_ended_after_30_s_of_silence() {
    let (mut rig, mut speaker, mut listener, [talker, _]) =
        speaker_and_listener_answering(41060, false, false);
    run(
        &mut rig,
        &mut [&mut speaker, &mut listener],
        &mut [],
        Duration::from_secs(5),
    );
    rig.take();
    // The speaker freezes: only the listener goes on.
    run(
        &mut rig,
        &mut [&mut listener],
        &mut [],
        Duration::from_millis(29_500),
    );
    assert!(rig.seen.closes().is_empty(), "{:?}", rig.seen.closes());
    run(
        &mut rig,
        &mut [&mut listener],
        &mut [],
        Duration::from_millis(2_000),
    );
    assert_eq!(rig.seen.closes(), vec![(speaker.conn, DeviceClose::Silent)]);
    let events: Vec<DeviceEventKind> = rig
        .seen
        .events()
        .into_iter()
        .filter(|(_, p, _)| *p == talker)
        .map(|(k, _, _)| k)
        .collect();
    assert_eq!(
        events,
        vec![DeviceEventKind::Disconnect, DeviceEventKind::Leave]
    );
    assert_eq!(rig.core.counts(), (0, 1));
}

#[test]
fn a_browsers_dtmf_reaches_the_legs_that_hear_it() {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b, c]);
    rig.join_leg(1, b);
    rig.join_leg(2, c);
    // c hears only b: not the browser.
    rig.subscribe(&[a, b, c], c, &[b]);
    let mut browser = Browser::connect(&mut rig, a, "web", 1, 41040);
    browser.publish_audio(&mut rig, "s-web");
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [],
        Duration::from_secs(2),
    );
    rig.take();
    browser.dtmf(&rig, 7, false);
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [],
        Duration::from_millis(100),
    );
    browser.dtmf(&rig, 7, true);
    run(
        &mut rig,
        &mut [&mut browser],
        &mut [],
        Duration::from_millis(100),
    );
    let events = rig.take().leg_events();
    assert!(!events.is_empty(), "no DTMF reached a leg");
    assert!(
        events
            .iter()
            .all(|(leg, payload, _, clock)| *leg == LegId(1) && payload[0] == 7 && *clock == 48000),
        "{events:?}"
    );
    assert!(events[0].2, "the first packet starts the event: {events:?}");
}
