//! Media follows its participant: removed from its session, a call and a browser stay
//! connected in the lobby (the caller hears silence, the browser receives nothing);
//! added to another session, they move there as they are.

use std::time::Duration;

use uuid::Uuid;

use super::super::*;
use super::browser::*;
use super::harness::*;
use crate::events::{DeviceEventKind, DeviceNote};

/// The mean level of what leg `leg` was sent in `seen`, after its first `skip` packets.
fn heard(seen: &Seen, leg: u64, skip: usize) -> f64 {
    let packets: Vec<&[u8]> = seen.audio_of(LegId(leg)).skip(skip).collect();
    assert!(!packets.is_empty(), "nothing was sent to leg {leg}");
    level(&packets)
}

#[test]
fn a_removed_call_is_parked_in_silence_then_hears_its_new_session() {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut s1 = Rig::new();
    s1.members(&[a, b]);
    s1.join_leg(1, a);
    s1.join_leg(2, b);
    let mut caller = Caller::new(1, 440.0);
    let mut other = Caller::new(2, 0.0);
    s1.ticks(20, &mut [&mut caller, &mut other]);
    assert!(heard(&s1.take(), 2, 10) > 2000.0, "b hears a in session 1");

    // a leaves session 1: no hang-up, no event; b stops hearing it.
    s1.members(&[b]);
    let seen = s1.take();
    assert_eq!(seen.hang_ups(), vec![]);
    assert_eq!(seen.events(), vec![]);
    let mut lobby = Rig::lobby(&s1);
    assert_eq!(s1.hand_over(&mut lobby, Fate::Stay), 1);
    assert_eq!(lobby.core.counts(), (1, 0));
    s1.ticks(5, &mut [&mut other]);
    assert!(heard(&s1.take(), 2, 1) < 50.0, "b hears nothing of a now");

    // Parked: its caller keeps getting packets, silent ones.
    lobby.ticks(20, &mut [&mut caller]);
    let seen = lobby.take();
    assert!(seen.audio_of(LegId(1)).count() >= 19, "one packet per tick");
    assert!(heard(&seen, 1, 0) < 50.0, "silence while parked");
    assert_eq!(seen.hang_ups(), vec![]);
    assert_eq!(seen.events(), vec![]);
    assert!(
        seen.actions.contains(&Action::Verify(a)),
        "the lobby asks where an arrival belongs"
    );

    // a is added to session 2 (where c's call plays 660 Hz): the call moves there.
    let mut s2 = Rig::beside(&lobby);
    s2.members(&[c, a]);
    s2.join_leg(3, c);
    let mut tone = Caller::new(3, 660.0);
    s2.ticks(5, &mut [&mut tone]);
    s2.take();
    lobby.control(Control::Recheck(a));
    assert_eq!(lobby.hand_over(&mut s2, Fate::Stay), 1);
    assert_eq!(lobby.core.counts(), (0, 0));
    s2.ticks(25, &mut [&mut caller, &mut tone]);
    let seen = s2.take();
    assert!(
        heard(&seen, 1, 10) > 2000.0,
        "a hears session 2 within 0.2 s: {}",
        heard(&seen, 1, 10)
    );
    assert!(heard(&seen, 3, 10) > 2000.0, "c hears a");
    assert_eq!(seen.hang_ups(), vec![]);
    assert_eq!(seen.events(), vec![], "moving raises no event");

    // The call ends where it is now: onLeave from there.
    s2.control(Control::Leave {
        leg: LegId(1),
        reason: None,
    });
    assert_eq!(
        s2.take().events(),
        vec![(DeviceEventKind::Leave, a, "call-1".into())]
    );
}

#[test]
fn a_deleted_participants_parked_call_is_hung_up() {
    let a = Uuid::new_v4();
    let mut s1 = Rig::new();
    s1.members(&[a]);
    s1.join_leg(1, a);
    s1.members(&[]);
    let mut lobby = Rig::lobby(&s1);
    assert_eq!(s1.hand_over(&mut lobby, Fate::End), 1);
    let seen = lobby.take();
    assert_eq!(seen.hang_ups(), vec![(LegId(1), HangupReason::Removed)]);
    assert_eq!(
        seen.events(),
        vec![(DeviceEventKind::Leave, a, "call-1".into())]
    );
    assert_eq!(lobby.core.counts(), (0, 0));
}

#[test]
fn a_call_that_joins_a_session_its_participant_left_moves_on() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut s1 = Rig::new();
    s1.members(&[b]);
    // Admitted for session 1 a moment before the removal reached its media.
    s1.join_leg(1, a);
    assert_eq!(s1.core.counts(), (0, 0));
    let mut lobby = Rig::lobby(&s1);
    assert_eq!(s1.hand_over(&mut lobby, Fate::Stay), 1);
    assert_eq!(lobby.core.counts(), (1, 0));
}

#[test]
fn of_two_calls_of_a_participant_meeting_in_a_core_the_newer_stays() {
    let a = Uuid::new_v4();
    let mut s1 = Rig::new();
    s1.members(&[a]);
    s1.join_leg(1, a);
    s1.members(&[]);
    let mut lobby = Rig::lobby(&s1);
    // A newer call of a's is parked already.
    lobby.join_leg(5, a);
    lobby.take();
    s1.hand_over(&mut lobby, Fate::Stay);
    assert_eq!(
        lobby.take().hang_ups(),
        vec![(LegId(1), HangupReason::Replaced)]
    );
    assert_eq!(lobby.core.counts(), (1, 0));
}

#[test]
fn a_removed_browser_keeps_its_connections_and_receives_its_new_sessions_streams() {
    let (mut s1, _speaker, mut listener, [a, b]) = speaker_and_listener(41300, false);
    assert!(listener.frames > 40, "forwarded: {}", listener.frames);
    assert_eq!(listener.revisions, vec![1]);

    // The listener leaves session 1: its device goes to the lobby, its socket stays.
    s1.members(&[a]);
    let mut lobby = Rig::lobby(&s1);
    assert_eq!(s1.hand_over(&mut lobby, Fate::Stay), 1);
    assert_eq!(s1.core.counts(), (0, 1));
    assert!(s1.seen.closes().is_empty(), "{:?}", s1.seen.closes());
    run(
        &mut lobby,
        &mut [&mut listener],
        &mut [],
        Duration::from_secs(1),
    );
    assert_eq!(
        listener.revisions,
        vec![1, 2],
        "an offer takes its streams away"
    );
    let offer = listener.last_offer.clone().unwrap_or_default();
    assert!(!offer.contains("a=sendonly"), "nothing is sent: {offer}");
    let parked = listener.frames;
    run(
        &mut lobby,
        &mut [&mut listener],
        &mut [],
        Duration::from_secs(1),
    );
    assert!(listener.frames - parked <= 2, "it receives nothing parked");
    assert!(lobby.seen.closes().is_empty(), "{:?}", lobby.seen.closes());
    assert!(
        lobby
            .seen
            .actions
            .iter()
            .all(|x| !matches!(x, Action::Event(_))),
        "no event for a move"
    );

    // Added to session 2, where c speaks: its connections move there and receive c.
    let c = Uuid::new_v4();
    let mut s2 = Rig::beside(&lobby);
    s2.members(&[c, b]);
    let mut talker = Browser::connect(&mut s2, c, "talker", 9, 41320);
    talker.publish_audio(&mut s2, "s-talker");
    run(&mut s2, &mut [&mut talker], &mut [], Duration::from_secs(1));
    lobby.control(Control::Recheck(b));
    assert_eq!(lobby.hand_over(&mut s2, Fate::Stay), 1);
    let before = listener.frames;
    run(
        &mut s2,
        &mut [&mut talker, &mut listener],
        &mut [],
        Duration::from_secs(2),
    );
    assert!(
        listener.frames - before > 40,
        "it receives session 2's stream: {}",
        listener.frames - before
    );
    assert_eq!(listener.revisions, vec![1, 2, 3]);
    assert!(s2.seen.closes().is_empty(), "{:?}", s2.seen.closes());
    // Its signaling connection came along: its notes still reach it.
    assert!(s2.seen.actions.iter().all(|x| !matches!(
        x,
        Action::Note {
            note: DeviceNote::Close(_),
            ..
        }
    )));
}

/// A subscription may name a participant that is not a member yet: it applies once the
/// participant joins (the courtroom sample names new members before their add lands).
#[test]
fn a_subscription_naming_a_non_member_applies_once_it_joins() {
    use crate::model::{ParticipantSubscription, Subscriptions};
    let (b, c) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    let hears_c = Subscriptions {
        session_id: None,
        participants: Some(vec![ParticipantSubscription {
            participant_id: c,
            stream_aliases: None,
        }]),
    };
    let snapshot = |members: Vec<(Uuid, Subscriptions)>| SessionSnapshot { members };
    rig.control(Control::Snapshot(snapshot(vec![(b, hears_c.clone())])));
    rig.join_leg(2, b);
    let mut listener = Caller::new(2, 0.0);
    rig.ticks(5, &mut [&mut listener]);
    assert!(heard(&rig.take(), 2, 0) < 50.0, "nothing to hear yet");
    // c joins, with its call playing 660 Hz.
    rig.control(Control::Snapshot(snapshot(vec![
        (b, hears_c),
        (c, Subscriptions::default()),
    ])));
    rig.join_leg(3, c);
    let mut talker = Caller::new(3, 660.0);
    rig.ticks(20, &mut [&mut listener, &mut talker]);
    assert!(heard(&rig.take(), 2, 10) > 2000.0, "b hears c now");
}
