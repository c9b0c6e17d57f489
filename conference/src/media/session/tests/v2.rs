//! v2 devices with fake time: a str0m client doing what the SDK's v2 protocol does (one
//! connection per published stream and per received endpoint, always offering).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use str0m::media::{Direction, MediaKind, Mid};
use uuid::Uuid;

use super::super::*;
use super::browser::{run, Browser, Client, Tone};
use super::harness::*;
use crate::events::{DeviceClose, DeviceNote};

/// One of the client's peer connections.
struct Conn {
    rtc: str0m::Rtc,
    addr: SocketAddr,
    /// Frames received on it.
    frames: usize,
}

pub struct V2Browser {
    pub key: DeviceKey,
    pub conn: ConnId,
    /// Connections by endpoint id.
    conns: BTreeMap<String, Conn>,
    next_port: u16,
    /// The publishing endpoint and the mid of its audio.
    publishing: Option<(String, Mid)>,
    /// Endpoints announced with `sdpNeeded`, in order, and those removed.
    pub needed: Vec<EndpointRequest>,
    pub removed: Vec<String>,
    tone: Tone,
}

fn client_rtc(rig: &Rig, addr: SocketAddr) -> str0m::Rtc {
    let mut rtc = str0m::Rtc::builder().build(rig.now.at);
    if let Ok(c) = str0m::Candidate::host(addr, "udp") {
        rtc.add_local_candidate(c);
    }
    rtc
}

/// The result of the request `id` the core answered, taken out of what it output.
fn take_result(rig: &mut Rig, id: u64) -> Option<Result<PublishAnswer, PublishError>> {
    let result = rig.seen.actions.iter().find_map(|a| match a {
        Action::Published { request, result } if *request == id => Some(result.clone()),
        _ => None,
    });
    rig.seen
        .actions
        .retain(|a| !matches!(a, Action::Published { request, .. } if *request == id));
    result
}

impl V2Browser {
    pub fn connect(
        rig: &mut Rig,
        participant_id: Uuid,
        unique_id: &str,
        conn: u64,
        port: u16,
    ) -> V2Browser {
        rig.device_with(participant_id, unique_id, conn, Protocol::V2);
        V2Browser::client(participant_id, unique_id, conn, port)
    }

    /// The client side only (its device joined some other way).
    pub fn client(participant_id: Uuid, unique_id: &str, conn: u64, port: u16) -> V2Browser {
        V2Browser {
            key: DeviceKey::new(participant_id, unique_id),
            conn: ConnId(conn),
            conns: BTreeMap::new(),
            next_port: port,
            publishing: None,
            needed: Vec::new(),
            removed: Vec::new(),
            tone: Tone::new(),
        }
    }

    fn addr(&mut self) -> SocketAddr {
        self.next_port += 1;
        SocketAddr::from(([127, 0, 0, 1], self.next_port))
    }

    /// Publish one audio track on endpoint `endpoint` (what `requestToPublish` handed
    /// out) under `alias`; the core's answer or refusal.
    pub fn publish(
        &mut self,
        rig: &mut Rig,
        endpoint: &str,
        alias: &str,
    ) -> Result<PublishAnswer, PublishError> {
        let addr = self.addr();
        let mut rtc = client_rtc(rig, addr);
        let mut change = rtc.sdp_api();
        let stream = format!("{endpoint}-stream");
        let mid = change.add_media(
            MediaKind::Audio,
            Direction::SendOnly,
            Some(stream.clone()),
            Some(format!("{stream}-a")),
            None,
        );
        let (offer, pending) = change.apply().expect("an offer");
        rig.control(Control::Publish {
            key: self.key.clone(),
            conn: self.conn,
            request: 501,
            offer: PublishRequest {
                sdp: offer.to_sdp_string(),
                aliases: Vec::new(),
                default_alias: Some(alias.to_string()),
                endpoint: Some(Arc::from(endpoint)),
                may_publish_audio: true,
                may_publish_video: true,
            },
        });
        let result = take_result(rig, 501).expect("an answer or a refusal");
        if let Ok(answer) = &result {
            let answer = str0m::change::SdpAnswer::from_sdp_string(&answer.sdp).expect("SDP");
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .expect("answer accepted");
            self.conns.insert(
                endpoint.to_string(),
                Conn {
                    rtc,
                    addr,
                    frames: 0,
                },
            );
            self.publishing = Some((endpoint.to_string(), mid));
        }
        result
    }

    /// Offer for an endpoint (as the SDK does on `sdpNeeded`): the core's answer.
    pub fn offer_for(
        &mut self,
        rig: &mut Rig,
        request: &EndpointRequest,
    ) -> Result<PublishAnswer, PublishError> {
        let addr = self.addr();
        let mut rtc = client_rtc(rig, addr);
        let mut change = rtc.sdp_api();
        for t in &request.media_types {
            let kind = match t {
                MediaType::Audio => MediaKind::Audio,
                MediaType::Video => MediaKind::Video,
            };
            change.add_media(kind, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = change.apply().expect("an offer");
        rig.control(Control::Receive {
            key: self.key.clone(),
            conn: self.conn,
            request: 502,
            endpoint: request.endpoint.clone(),
            sdp: offer.to_sdp_string(),
        });
        let result = take_result(rig, 502).expect("an answer or a refusal");
        if let Ok(answer) = &result {
            let parsed = str0m::change::SdpAnswer::from_sdp_string(&answer.sdp).expect("SDP");
            rtc.sdp_api()
                .accept_answer(pending, parsed)
                .expect("answer accepted");
            self.conns.insert(
                request.endpoint.to_string(),
                Conn {
                    rtc,
                    addr,
                    frames: 0,
                },
            );
        }
        result
    }

    /// Frames received on endpoint `e`.
    pub fn frames(&self, e: &str) -> usize {
        self.conns.get(e).map_or(0, |c| c.frames)
    }
}

impl Client for V2Browser {
    /// Act on what the core told this device: offer for new endpoints, drop removed ones.
    fn react(&mut self, rig: &mut Rig) {
        let conn = self.conn;
        let mut notes = Vec::new();
        rig.seen.actions.retain(|a| match a {
            Action::Note { conn: c, note }
                if *c == conn && !matches!(note, DeviceNote::Close(_)) =>
            {
                notes.push(note.clone());
                false
            }
            _ => true,
        });
        for note in notes {
            match note {
                DeviceNote::SdpNeeded(r) => {
                    self.needed.push(r.clone());
                    self.offer_for(rig, &r)
                        .expect("a receiving endpoint answered");
                }
                DeviceNote::EndpointRemoved(e) => {
                    self.conns.remove(&*e);
                    self.removed.push(e.to_string());
                }
                other => panic!("a v2 device got {other:?}"),
            }
        }
    }
    /// One 20 ms Opus frame of a 440 Hz tone on the published audio.
    fn speak(&mut self, rig: &Rig) {
        let Some((endpoint, mid)) = self.publishing.clone() else {
            return;
        };
        let Some((time, payload)) = self.tone.next_frame() else {
            return;
        };
        let Some(c) = self.conns.get_mut(&endpoint) else {
            return;
        };
        let Some(writer) = c.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
            .map(|p| p.pt())
        else {
            return;
        };
        let _ = writer.write(pt, rig.now.at, time, Arc::<[u8]>::from(payload));
    }
    /// Drive every connection: datagrams to the core, received frames counted.
    fn drive(&mut self, rig: &mut Rig) {
        let now = rig.now;
        for c in self.conns.values_mut() {
            let _ = c.rtc.handle_input(str0m::Input::Timeout(now.at));
            loop {
                match c.rtc.poll_output() {
                    Ok(str0m::Output::Timeout(_)) | Err(_) => break,
                    Ok(str0m::Output::Transmit(t)) => {
                        rig.core.handle_datagram(now, c.addr, &t.contents);
                    }
                    Ok(str0m::Output::Event(str0m::Event::MediaData(_))) => c.frames += 1,
                    Ok(str0m::Output::Event(_)) => {}
                }
            }
        }
        rig.core.flush(now);
        rig.collect();
    }
    /// Take the core's datagrams for this client's connections.
    fn receive(&mut self, rig: &mut Rig) {
        let core: SocketAddr = CORE_ADDR.parse().expect("address");
        for c in self.conns.values_mut() {
            let mine: Vec<Vec<u8>> = rig
                .seen
                .transmit
                .iter()
                .filter(|(to, _)| *to == c.addr)
                .map(|(_, d)| d.clone())
                .collect();
            rig.seen.transmit.retain(|(to, _)| *to != c.addr);
            for d in mine {
                if let Ok(r) = str0m::net::Receive::new(str0m::net::Protocol::Udp, core, c.addr, &d)
                {
                    let _ = c.rtc.handle_input(str0m::Input::Receive(rig.now.at, r));
                }
            }
        }
    }
}

#[test]
fn v2_devices_and_a_leg_hear_each_other_one_endpoint_per_stream() {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b, c]);
    rig.join_leg(1, c);
    let mut caller = Caller::new(1, 660.0);
    let mut x = V2Browser::connect(&mut rig, a, "x", 1, 42000);
    let mut y = V2Browser::connect(&mut rig, b, "y", 2, 42100);
    let answer = x.publish(&mut rig, "pub-x", "mic").expect("published");
    assert_eq!(answer.streams[0].alias.as_deref(), Some("mic"));
    y.publish(&mut rig, "pub-y", "cam").expect("published");
    run(
        &mut rig,
        &mut [&mut x, &mut y],
        &mut [&mut caller],
        Duration::from_secs(3),
    );
    // Each device got one endpoint for the other's stream and one for the leg's.
    for (dev, other, alias) in [(&x, b, "cam"), (&y, a, "mic")] {
        assert_eq!(dev.needed.len(), 2, "{:?}", dev.needed);
        let theirs = dev
            .needed
            .iter()
            .find(|r| r.participant_id == other)
            .expect("the other's stream");
        assert_eq!(theirs.alias.as_deref(), Some(alias));
        assert_eq!(theirs.media_types, vec![MediaType::Audio]);
        let phone = dev
            .needed
            .iter()
            .find(|r| r.participant_id == c)
            .expect("the leg's stream");
        assert_eq!(phone.alias.as_deref(), Some(PHONE_ALIAS));
        for r in &dev.needed {
            assert!(
                dev.frames(&r.endpoint) > 50,
                "frames on {}: {}",
                r.endpoint,
                dev.frames(&r.endpoint)
            );
        }
    }
    // The leg hears the devices (their audio decoded into its mix).
    let heard: Vec<&[u8]> = rig.seen.audio_of(LegId(1)).skip(100).collect();
    assert!(
        level(&heard) > 500.0,
        "the leg's mix level {}",
        level(&heard)
    );
}

#[test]
fn a_subscription_change_removes_the_endpoint_and_restoring_announces_a_new_one() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    let mut listener = V2Browser::connect(&mut rig, a, "l", 1, 42200);
    let mut talker = V2Browser::connect(&mut rig, b, "t", 2, 42300);
    talker.publish(&mut rig, "pub-t", "mic").expect("published");
    run(
        &mut rig,
        &mut [&mut listener, &mut talker],
        &mut [],
        Duration::from_secs(1),
    );
    let first = listener.needed[0].endpoint.to_string();
    let before = listener.frames(&first);
    assert!(before > 20, "{before}");
    // Whisper: the listener hears nobody.
    rig.subscribe(&[a, b], a, &[a]);
    run(
        &mut rig,
        &mut [&mut listener, &mut talker],
        &mut [],
        Duration::from_millis(200),
    );
    assert_eq!(listener.removed, vec![first.clone()]);
    assert_eq!(listener.needed.len(), 1);
    // Restored: a new endpoint for the same stream.
    rig.members(&[a, b]);
    run(
        &mut rig,
        &mut [&mut listener, &mut talker],
        &mut [],
        Duration::from_secs(1),
    );
    assert_eq!(listener.needed.len(), 2);
    let second = listener.needed[1].endpoint.to_string();
    assert_ne!(second, first);
    assert_eq!(listener.needed[1].participant_id, b);
    assert!(
        listener.frames(&second) > 20,
        "{}",
        listener.frames(&second)
    );
}

#[test]
fn unpublishing_removes_the_stream_from_every_subscriber() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    let mut listener = V2Browser::connect(&mut rig, a, "l", 1, 42400);
    let mut talker = V2Browser::connect(&mut rig, b, "t", 2, 42500);
    talker.publish(&mut rig, "pub-t", "mic").expect("published");
    run(
        &mut rig,
        &mut [&mut listener, &mut talker],
        &mut [],
        Duration::from_millis(500),
    );
    assert_eq!(listener.needed.len(), 1);
    rig.control(Control::Unpublish {
        key: talker.key.clone(),
        conn: talker.conn,
        endpoint: "pub-t".into(),
    });
    run(
        &mut rig,
        &mut [&mut listener, &mut talker],
        &mut [],
        Duration::from_millis(100),
    );
    assert_eq!(
        listener.removed,
        vec![listener.needed[0].endpoint.to_string()]
    );
    // The talker can publish again on a new endpoint, and the listener gets it.
    talker
        .publish(&mut rig, "pub-t2", "mic")
        .expect("published again");
    run(
        &mut rig,
        &mut [&mut listener, &mut talker],
        &mut [],
        Duration::from_millis(500),
    );
    assert_eq!(listener.needed.len(), 2);
}

#[test]
fn endpoint_ids_are_scoped_to_their_device_and_bounded() {
    let (a, b, v3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b, v3]);
    let mut x = V2Browser::connect(&mut rig, a, "x", 1, 42600);
    let mut y = V2Browser::connect(&mut rig, b, "y", 2, 42700);
    y.publish(&mut rig, "pub-y", "mic").expect("published");
    run(
        &mut rig,
        &mut [&mut x, &mut y],
        &mut [],
        Duration::from_millis(100),
    );
    // y cannot answer for the endpoint announced to x, nor name one that does not exist.
    let theirs = x.needed[0].clone();
    assert_eq!(
        y.offer_for(&mut rig, &theirs).err(),
        Some(PublishError::UnknownEndpoint)
    );
    let made_up = EndpointRequest {
        endpoint: "made-up".into(),
        ..theirs.clone()
    };
    assert_eq!(
        x.offer_for(&mut rig, &made_up).err(),
        Some(PublishError::UnknownEndpoint)
    );
    // Publishing on an endpoint announced for receiving is refused.
    assert_eq!(
        x.publish(&mut rig, &theirs.endpoint, "mic").err(),
        Some(PublishError::UnknownEndpoint)
    );
    // At most MAX_PUBLISH_ENDPOINTS publishing connections per device.
    for i in 0..MAX_PUBLISH_ENDPOINTS {
        x.publish(&mut rig, &format!("p{i}"), "mic")
            .expect("within the bound");
    }
    assert_eq!(
        x.publish(&mut rig, "one-more", "mic").err(),
        Some(PublishError::TooManyEndpoints)
    );
    // A v3 device has no endpoints.
    rig.device(v3, "v3", 3);
    let mut z = V2Browser::client(v3, "v3", 3, 42800);
    assert_eq!(
        z.publish(&mut rig, "e", "mic").err(),
        Some(PublishError::UnknownEndpoint)
    );
}

#[test]
fn an_unanswered_sdp_needed_is_sent_again_on_resume_and_then_ends_the_device() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.device_with(a, "silent", 1, Protocol::V2);
    let mut talker = V2Browser::connect(&mut rig, b, "t", 2, 42900);
    talker.publish(&mut rig, "pub-t", "mic").expect("published");
    let needed = |rig: &Rig, to: u64| -> Vec<EndpointRequest> {
        rig.seen
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Note {
                    conn,
                    note: DeviceNote::SdpNeeded(r),
                } if *conn == ConnId(to) => Some(r.clone()),
                _ => None,
            })
            .collect()
    };
    let first = needed(&rig, 1);
    assert_eq!(first.len(), 1);
    // The socket drops and comes back: the same endpoint is announced again.
    rig.control(Control::DeviceGone {
        key: DeviceKey::new(a, "silent"),
        conn: ConnId(1),
        left: false,
    });
    rig.device_with(a, "silent", 5, Protocol::V2);
    assert_eq!(needed(&rig, 5), first);
    // Never offered for: the device is ended after the offer timeout.
    rig.advance(OFFER_ANSWER_TIMEOUT + Duration::from_secs(2));
    assert!(rig
        .seen
        .closes()
        .contains(&(ConnId(5), DeviceClose::OfferUnanswered)));
}

#[test]
fn a_v2_and_a_v3_device_hear_each_other() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    let mut v3 = Browser::connect(&mut rig, a, "v3", 1, 43000);
    v3.publish_audio(&mut rig, "s-v3");
    let mut v2 = V2Browser::connect(&mut rig, b, "v2", 2, 43100);
    v2.publish(&mut rig, "pub-v2", "mic").expect("published");
    run(
        &mut rig,
        &mut [&mut v3, &mut v2],
        &mut [],
        Duration::from_secs(2),
    );
    // The v3 device got one offer with the v2 device's stream and receives it.
    assert_eq!(v3.revisions, vec![1], "one sdpOffer");
    assert!(v3.frames > 50, "v3 received {} frames", v3.frames);
    // The v2 device got one endpoint for the v3 device's stream and receives it.
    assert_eq!(v2.needed.len(), 1);
    assert_eq!(v2.needed[0].participant_id, a);
    let e = v2.needed[0].endpoint.to_string();
    assert!(v2.frames(&e) > 50, "v2 received {} frames", v2.frames(&e));
}

#[test]
fn alias_level_subscriptions_pick_a_v2_devices_stream_by_its_alias() {
    use crate::model::{ParticipantSubscription, Subscriptions};
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    let hears = |aliases: &[&str]| Subscriptions {
        session_id: Some(rig.session_id),
        participants: Some(vec![ParticipantSubscription {
            participant_id: b,
            stream_aliases: Some(aliases.iter().map(|s| s.to_string()).collect()),
        }]),
    };
    let (cam, mic) = (hears(&["cam"]), hears(&["mic"]));
    let snapshot = |subs: &Subscriptions| SessionSnapshot {
        members: vec![(a, subs.clone()), (b, Subscriptions::default())],
    };
    let (only_cam, only_mic) = (snapshot(&cam), snapshot(&mic));
    rig.control(Control::Snapshot(only_cam));
    let mut listener = V2Browser::connect(&mut rig, a, "l", 1, 43200);
    let mut talker = V2Browser::connect(&mut rig, b, "t", 2, 43300);
    talker.publish(&mut rig, "pub-t", "mic").expect("published");
    run(
        &mut rig,
        &mut [&mut listener, &mut talker],
        &mut [],
        Duration::from_millis(300),
    );
    assert!(listener.needed.is_empty(), "{:?}", listener.needed);
    // Subscribed to the "mic" alias: the stream published under it arrives.
    rig.control(Control::Snapshot(only_mic));
    run(
        &mut rig,
        &mut [&mut listener, &mut talker],
        &mut [],
        Duration::from_secs(1),
    );
    assert_eq!(listener.needed.len(), 1);
    assert_eq!(listener.needed[0].alias.as_deref(), Some("mic"));
    let e = listener.needed[0].endpoint.to_string();
    assert!(listener.frames(&e) > 20, "{}", listener.frames(&e));
}
