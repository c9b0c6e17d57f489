//! Unit tests of the session core with fake time: no sockets, no tasks.

mod browser;
mod fuzz;
mod handoff;
mod harness;
mod moving;
mod recording;
mod v2;

use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::events::{DeviceClose, DeviceEventKind};
use harness::*;

#[test]
fn legs_hear_each_other_not_themselves_and_leave() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, a);
    rig.join_leg(2, b);
    let mut tone = Caller::new(1, 440.0);
    let mut quiet = Caller::new(2, 0.0);
    rig.ticks(30, &mut [&mut tone, &mut quiet]);
    let seen = rig.take();
    let to_b: Vec<&[u8]> = seen.audio_of(LegId(2)).skip(10).collect();
    let to_a: Vec<&[u8]> = seen.audio_of(LegId(1)).skip(10).collect();
    assert!(to_b.len() >= 15, "one packet per tick: {}", to_b.len());
    assert!(level(&to_b) > 2000.0, "b hears a's tone: {}", level(&to_b));
    assert!(
        level(&to_a) < 50.0,
        "a does not hear itself: {}",
        level(&to_a)
    );

    rig.control(Control::Leave {
        leg: LegId(1),
        reason: None,
    });
    rig.ticks(5, &mut [&mut quiet]);
    let seen = rig.take();
    assert_eq!(seen.audio_of(LegId(1)).count(), 0, "a left: nothing for it");
    assert_eq!(seen.audio_of(LegId(2)).count(), 5);
    assert_eq!(rig.core.counts(), (1, 0));
}

#[test]
fn a_subscription_change_alters_the_mix_on_the_next_frame() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, a);
    rig.join_leg(2, b);
    let mut tone = Caller::new(1, 440.0);
    let mut quiet = Caller::new(2, 0.0);
    rig.ticks(20, &mut [&mut tone, &mut quiet]);
    rig.take();
    // b now hears nobody (participant-level subscription to itself only).
    rig.subscribe(&[a, b], b, &[]);
    rig.subscribe(&[a, b], b, &[b]);
    rig.ticks(1, &mut [&mut tone, &mut quiet]);
    let seen = rig.take();
    let next: Vec<&[u8]> = seen.audio_of(LegId(2)).collect();
    assert_eq!(next.len(), 1);
    assert!(
        level(&next) < 50.0,
        "silent on the very next frame: {}",
        level(&next)
    );
    // And back.
    rig.members(&[a, b]);
    rig.ticks(1, &mut [&mut tone, &mut quiet]);
    let seen = rig.take();
    let next: Vec<&[u8]> = seen.audio_of(LegId(2)).collect();
    assert!(
        level(&next) > 2000.0,
        "heard again on the next frame: {}",
        level(&next)
    );
}

#[test]
fn a_second_leg_of_a_participant_replaces_the_first() {
    let b = Uuid::new_v4();
    let mut rig = Rig::new();
    rig.members(&[b]);
    rig.join_leg(2, b);
    rig.take();
    rig.join_leg(3, b);
    assert_eq!(
        rig.take().hang_ups(),
        vec![(LegId(2), HangupReason::Replaced)]
    );
}

#[test]
fn dtmf_between_legs_goes_to_those_that_hear_the_sender() {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b, c]);
    rig.join_leg(1, a);
    rig.join_leg(2, b);
    rig.join_leg(3, c);
    // c hears only b.
    rig.subscribe(&[a, b, c], c, &[b]);
    rig.take();
    let mut caller = Caller::new(1, 440.0);
    caller.dtmf(&mut rig.core, rig.now, 5);
    rig.collect();
    caller.dtmf(&mut rig.core, rig.now, 5);
    rig.collect();
    let events = rig.take().leg_events();
    assert_eq!(
        events,
        vec![
            (LegId(2), [5, 0x0a, 0, 0xa0], true, 8000),
            (LegId(2), [5, 0x0a, 0, 0xa0], false, 8000)
        ]
    );
}

#[test]
fn another_participants_unique_id_is_refused_and_changes_nothing() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.device(a, "shared", 1);
    let seen = rig.take();
    assert_eq!(
        seen.events(),
        vec![(DeviceEventKind::Connect, a, "shared".into())]
    );
    rig.device(b, "shared", 2);
    let seen = rig.take();
    assert_eq!(
        seen.closes(),
        vec![(ConnId(2), DeviceClose::DuplicateDevice)]
    );
    assert!(seen.events().is_empty(), "{:?}", seen.events());
    assert_eq!(rig.core.counts(), (0, 1));
    // The refused connection's close cannot end a's device; a's still can.
    rig.control(Control::DeviceGone {
        key: DeviceKey::new(b, "shared"),
        conn: ConnId(2),
        left: true,
    });
    rig.control(Control::DeviceGone {
        key: DeviceKey::new(a, "shared"),
        conn: ConnId(2),
        left: true,
    });
    assert_eq!(rig.core.counts(), (0, 1));
    assert!(rig.take().actions.is_empty());
    rig.control(Control::DeviceGone {
        key: DeviceKey::new(a, "shared"),
        conn: ConnId(1),
        left: true,
    });
    assert_eq!(
        rig.take().events(),
        vec![(DeviceEventKind::Leave, a, "shared".into())]
    );
    assert_eq!(rig.core.counts(), (0, 0));
}

#[test]
fn a_device_named_like_a_leg_aliases_nothing() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, a);
    rig.device(b, "sip-1", 5);
    rig.device(b, "phone-1", 6);
    let seen = rig.take();
    assert!(seen.hang_ups().is_empty());
    assert_eq!(rig.core.counts(), (1, 1));
    // b's device receives the leg's audio under a stream id no client chose.
    let offers = seen.offers(ConnId(6));
    let stream = &offers.last().expect("an offer for the leg").streams[0];
    assert_eq!(stream.participant_id, a);
    assert!(stream.stream.starts_with("phone-") && stream.stream.len() > 30);
    // A publish that names the leg's stream is refused.
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=msid:{} t1\r\na=rtpmap:111 opus/48000/2\r\n",
        stream.stream
    );
    rig.control(Control::Publish {
        key: DeviceKey::new(b, "phone-1"),
        conn: ConnId(6),
        request: 9,
        offer: PublishRequest {
            sdp,
            aliases: vec![],
            may_publish_audio: true,
            may_publish_video: true,
            default_alias: None,
            endpoint: None,
        },
    });
    let published = rig.take().actions.into_iter().find_map(|a| match a {
        Action::Published { request: 9, result } => Some(result),
        _ => None,
    });
    assert_eq!(published, Some(Err(PublishError::StreamIdTaken)));
}

#[test]
fn a_new_unique_id_replaces_the_participants_device() {
    let a = Uuid::new_v4();
    let mut rig = Rig::new();
    rig.members(&[a]);
    rig.device(a, "first", 1);
    rig.take();
    rig.device(a, "second", 2);
    let seen = rig.take();
    assert_eq!(seen.closes(), vec![(ConnId(1), DeviceClose::Replaced)]);
    assert_eq!(
        seen.events(),
        vec![
            (DeviceEventKind::Leave, a, "first".into()),
            (DeviceEventKind::Connect, a, "second".into())
        ]
    );
    // The same uniqueId on a second socket: the newer socket wins, the device stays.
    rig.device(a, "second", 3);
    let seen = rig.take();
    assert_eq!(seen.closes(), vec![(ConnId(2), DeviceClose::Replaced)]);
    assert_eq!(rig.core.counts(), (0, 1));
}

#[test]
fn a_lost_device_resumes_within_the_grace_and_gets_its_offer_again() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, b);
    rig.device(a, "d", 1);
    let first = rig.take().offers(ConnId(1));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].revision, 1);
    rig.control(Control::DeviceGone {
        key: DeviceKey::new(a, "d"),
        conn: ConnId(1),
        left: false,
    });
    assert_eq!(
        rig.take().events(),
        vec![(DeviceEventKind::Disconnect, a, "d".into())]
    );
    rig.advance(Duration::from_secs(5));
    rig.device(a, "d", 2);
    let seen = rig.take();
    assert_eq!(
        seen.offers(ConnId(2)),
        first,
        "the pending offer is sent again"
    );
    assert_eq!(
        seen.events(),
        vec![(DeviceEventKind::Connect, a, "d".into())]
    );
    assert!(seen.closes().is_empty());
}

#[test]
fn a_device_that_never_resumes_leaves_after_the_grace() {
    let a = Uuid::new_v4();
    let mut rig = Rig::new();
    rig.members(&[a]);
    rig.device(a, "d", 1);
    rig.control(Control::DeviceGone {
        key: DeviceKey::new(a, "d"),
        conn: ConnId(1),
        left: false,
    });
    rig.take();
    for _ in 0..29 {
        rig.advance(Duration::from_secs(1));
    }
    assert!(rig.take().events().is_empty());
    for _ in 0..3 {
        rig.advance(Duration::from_secs(1));
    }
    assert_eq!(
        rig.take().events(),
        vec![(DeviceEventKind::Leave, a, "d".into())]
    );
    assert_eq!(rig.core.counts(), (0, 0));
}

#[test]
fn an_unanswered_offer_ends_the_device() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, b);
    rig.device(a, "d", 1);
    assert_eq!(rig.take().offers(ConnId(1)).len(), 1);
    for _ in 0..9 {
        rig.advance(Duration::from_secs(1));
    }
    assert!(rig.take().closes().is_empty());
    for _ in 0..3 {
        rig.advance(Duration::from_secs(1));
    }
    let seen = rig.take();
    assert_eq!(
        seen.closes(),
        vec![(ConnId(1), DeviceClose::OfferUnanswered)]
    );
    assert_eq!(seen.events(), vec![(DeviceEventKind::Leave, a, "d".into())]);
}

/// A SIP call is `onConnect` when it joins and `onLeave` when it ends, however it ends
/// (hung up, replaced by the participant's next call), with its Call-ID as `deviceId`;
/// leaving the session is not ending.
#[test]
fn sip_calls_raise_connect_and_leave_events() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, a);
    rig.join_leg(2, b);
    assert_eq!(
        rig.take().events(),
        vec![
            (DeviceEventKind::Connect, a, "call-1".into()),
            (DeviceEventKind::Connect, b, "call-2".into())
        ]
    );
    // a calls again with its token: the first call goes.
    rig.join_leg(3, a);
    let seen = rig.take();
    assert_eq!(seen.hang_ups(), vec![(LegId(1), HangupReason::Replaced)]);
    assert_eq!(
        seen.events(),
        vec![
            (DeviceEventKind::Leave, a, "call-1".into()),
            (DeviceEventKind::Connect, a, "call-3".into())
        ]
    );
    rig.control(Control::Leave {
        leg: LegId(3),
        reason: None,
    });
    assert_eq!(
        rig.take().events(),
        vec![(DeviceEventKind::Leave, a, "call-3".into())]
    );
    // b is removed from the session: its call leaves, still up (parked elsewhere).
    rig.members(&[a]);
    let seen = rig.take();
    assert_eq!(seen.hang_ups(), vec![]);
    assert_eq!(seen.events(), vec![]);
    assert!(rig.core.poll_detached().is_some());
}

#[test]
fn after_the_end_joins_are_refused() {
    let a = Uuid::new_v4();
    let mut rig = Rig::new();
    rig.members(&[a]);
    rig.join_leg(1, a);
    rig.device(a, "d", 1);
    rig.take();
    rig.control(Control::End(HangupReason::SessionEnded));
    let seen = rig.take();
    assert_eq!(
        seen.hang_ups(),
        vec![(LegId(1), HangupReason::SessionEnded)]
    );
    assert_eq!(seen.closes(), vec![(ConnId(1), DeviceClose::SessionEnded)]);
    assert_eq!(
        seen.events(),
        vec![
            (DeviceEventKind::Leave, a, "call-1".into()),
            (DeviceEventKind::Leave, a, "d".into())
        ]
    );
    assert!(rig.core.is_ended());
    assert_eq!(rig.core.poll_timeout(), None);
    rig.join_leg(2, a);
    rig.device(a, "e", 2);
    let seen = rig.take();
    assert_eq!(
        seen.hang_ups(),
        vec![(LegId(2), HangupReason::SessionEnded)]
    );
    assert_eq!(seen.closes(), vec![(ConnId(2), DeviceClose::SessionEnded)]);
}

#[test]
fn a_datagram_flood_does_not_delay_the_tick() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, a);
    rig.join_leg(2, b);
    rig.device(a, "d", 1);
    let mut tone = Caller::new(1, 440.0);
    let garbage = [0x80u8; 200];
    let from = "127.0.0.9:5000".parse().expect("address");
    for _ in 0..50 {
        tone.send(&mut rig.core, rig.now);
        for _ in 0..1000 {
            rig.core.handle_datagram(rig.now, from, &garbage);
        }
        rig.core.flush(rig.now);
        rig.advance(Duration::from_millis(20));
    }
    let seen = rig.take();
    assert_eq!(seen.audio_of(LegId(2)).count(), 50, "one mix per tick");
    let stats = crate::media::stats::MediaStats::default();
    rig.core.fold_stats(&stats);
    assert_eq!(
        stats
            .datagrams_unaccepted
            .load(std::sync::atomic::Ordering::Relaxed),
        50_000
    );
}

#[test]
fn timeouts_follow_the_members() {
    let a = Uuid::new_v4();
    let mut rig = Rig::new();
    assert_eq!(
        rig.core.poll_timeout(),
        None,
        "an idle session has no timer"
    );
    rig.members(&[a]);
    rig.join_leg(1, a);
    let t = rig.core.poll_timeout().expect("ticking");
    assert!(t <= rig.now.at + Duration::from_millis(20));
    rig.control(Control::Leave {
        leg: LegId(1),
        reason: None,
    });
    assert_eq!(rig.core.poll_timeout(), None);
}

#[test]
fn the_view_shows_who_speaks_and_who_mixes_whom_as_subscriptions_change() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.join_leg(1, a);
    rig.join_leg(2, b);
    let mut tone = Caller::new(1, 440.0);
    let mut quiet = Caller::new(2, 0.0);
    rig.ticks(20, &mut [&mut tone, &mut quiet]);
    // Leg 1 is a call with RTCP figures; leg 2 is a bot's stream.
    let figures = |leg: LegId| LegReport {
        quality: (leg == LegId(1)).then_some(LegQuality {
            expected: 100,
            received: 95,
            jitter_ms: 2.0,
            rtt_ms: Some(40.0),
        }),
        stream: (leg == LegId(2)).then_some(StreamState {
            connected: true,
            buffered_ms: 120,
        }),
    };
    let view = rig.core.view(rig.now, &figures);
    let source = |v: &MediaView, p: Uuid| {
        v.sources
            .iter()
            .find(|s| s.participant_id == p)
            .cloned()
            .unwrap()
    };
    let hears = |v: &MediaView, p: Uuid| {
        v.listeners
            .iter()
            .find(|l| l.participant_id == p)
            .map(|l| {
                l.hears
                    .iter()
                    .map(|h| (h.participant_id, h.delivery))
                    .collect::<Vec<_>>()
            })
            .unwrap()
    };
    assert!(source(&view, a).speaking, "{:?}", source(&view, a));
    assert!(!source(&view, b).speaking, "{:?}", source(&view, b));
    let q = source(&view, a).quality.unwrap();
    assert_eq!(
        (q.codec.as_str(), q.loss_percent, q.rtt_ms),
        ("PCMU", 5.0, Some(40.0))
    );
    assert!(q.mos > 3.0 && q.mos < 4.2, "{q:?}");
    assert_eq!(source(&view, b).quality, None, "no figures: no quality");
    assert_eq!(
        (source(&view, a).origin, source(&view, b).origin),
        (Origin::Phone, Origin::Bot)
    );
    let bot = view.listeners.iter().find(|l| l.participant_id == b);
    assert_eq!(
        bot.and_then(|l| l.stream)
            .map(|s| (s.connected, s.buffered_ms)),
        Some((true, 120))
    );
    assert_eq!(hears(&view, b), vec![(a, Delivery::Mixing)]);
    assert_eq!(hears(&view, a), vec![(b, Delivery::Mixing)]);

    // b stops hearing a: the view says so at once; a stops sending: silence after 0.5 s.
    rig.subscribe(&[a, b], b, &[b]);
    let view = rig.core.view(rig.now, &figures);
    assert_eq!(hears(&view, b), vec![]);
    rig.ticks(30, &mut [&mut quiet]);
    let view = rig.core.view(rig.now, &figures);
    assert!(!source(&view, a).speaking);
    assert_eq!(source(&view, a).level_dbov, Some(-127.0));
}
