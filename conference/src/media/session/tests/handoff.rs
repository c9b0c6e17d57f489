//! A browser's subscribing connection handed from one owner of the session to the next
//! (a cluster node that died, or this process restarting): the new owner offers on the
//! m-lines the browser holds, under its mids, above its last revision.

use std::time::Duration;

use uuid::Uuid;

use super::super::*;
use super::browser::*;
use super::harness::*;

fn kinds(l: &SubscribeLayout) -> Vec<LineKind> {
    l.lines.iter().map(|(k, _)| *k).collect()
}

#[test]
fn a_new_owner_offers_on_the_browsers_old_subscribing_connection() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut old = Rig::new();
    old.members(&[a, b]);
    let mut browser = Browser::connect(&mut old, a, "web", 1, 41200);
    old.join_leg(1, b);
    let mut caller = Caller::new(1, 660.0);
    run(
        &mut old,
        &mut [&mut browser],
        &mut [&mut caller],
        Duration::from_secs(1),
    );
    assert!(browser.frames > 20, "{}", browser.frames);
    assert_eq!(browser.revisions, [1]);
    // Each offer's layout is handed to the store, as the browser sees it.
    let kept = old
        .seen
        .layouts()
        .into_iter()
        .last()
        .flatten()
        .expect("kept");
    assert_eq!(kept.revision, 1);
    assert_eq!(
        kinds(&kept),
        [LineKind::Application, LineKind::Audio],
        "{:?}",
        browser.last_offer
    );
    let old_offer = browser.last_offer.clone().unwrap_or_default();
    for (_, mid) in &kept.lines {
        assert!(
            old_offer.contains(&format!("a=mid:{mid}\r\n")),
            "{old_offer}"
        );
    }

    // The old owner is gone. The new one knows what was kept and counts from its
    // lease's epoch (2 << 32); the browser keeps its connections.
    let mut new = Rig::new();
    new.members(&[a, b]);
    let floor = 2u64 << 32;
    let prior = SubscribeLayout {
        revision: floor.max(kept.revision),
        ..kept.clone()
    };
    browser.rejoin(&mut new, 2, Some(prior));
    new.join_leg(2, b);
    let mut caller = Caller::new(2, 440.0);
    run(
        &mut new,
        &mut [&mut browser],
        &mut [&mut caller],
        Duration::from_secs(1),
    );
    // The browser's stack accepted the offer (`react` panics otherwise), above its last
    // revision: the old m-lines first under their old mids, inactive, then the stream.
    assert_eq!(browser.revisions, [1, floor + 1]);
    let offer = browser.last_offer.clone().unwrap_or_default();
    let now = SubscribeLayout::of_sdp(0, &offer);
    assert_eq!(
        kinds(&now),
        [LineKind::Application, LineKind::Audio, LineKind::Audio]
    );
    assert_eq!(now.lines[..2], kept.lines[..]);
    assert_ne!(now.lines[2].1, kept.lines[1].1);
    let sections: Vec<&str> = offer.split("m=").collect();
    assert!(sections[2].contains("a=inactive"), "{offer}");
    assert!(sections[3].contains("a=sendonly"), "{offer}");
    let bundle = format!(
        "a=group:BUNDLE {} {} {}\r\n",
        now.lines[0].1, now.lines[1].1, now.lines[2].1
    );
    assert!(offer.contains(&bundle), "{offer}");
    // What the new owner keeps is again what the browser holds.
    let kept_now = new
        .seen
        .layouts()
        .into_iter()
        .last()
        .flatten()
        .expect("kept");
    assert_eq!(
        kept_now,
        SubscribeLayout {
            revision: floor + 1,
            ..now
        }
    );
}

#[test]
fn without_a_kept_layout_a_cluster_owner_still_counts_from_its_epoch() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut rig = Rig::new();
    rig.members(&[a, b]);
    rig.device_after(
        a,
        "web",
        1,
        Protocol::V3,
        Some(SubscribeLayout {
            revision: 3 << 32,
            lines: Vec::new(),
        }),
    );
    rig.join_leg(1, b);
    let offers = rig.seen.offers(ConnId(1));
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].revision, (3 << 32) + 1);
}
