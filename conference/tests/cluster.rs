//! Two nodes' control planes on one PostgreSQL database (the test server `scripts/test`
//! starts): what one acknowledges, the other answers after catching up with the feed;
//! concurrent changes converge on what the database committed; a dead node's outbox and
//! connections are taken over with their event ids, in order; two processes under one
//! node id are refused.

use std::sync::Arc;
use std::time::Duration;

use patchbay_conference::events::DeviceSource;
use patchbay_conference::store::{Cluster, PgCluster, SqlStore, Store, StoreError, StoreOp};
use patchbay_conference::webhooks::Webhook;
use patchbay_conference::{
    system_clock, Conference, ConferenceError, NewParticipant, Options, ParticipantSubscription,
    Subscriptions,
};
use uuid::Uuid;

mod common;

struct Node {
    conference: Conference,
    cluster: Arc<PgCluster>,
    store: Arc<SqlStore>,
}

async fn node(url: &str, id: &str) -> Node {
    let store = Arc::new(SqlStore::postgres(url, id).await.expect("store"));
    let cluster = Arc::new(
        PgCluster::connect(url, id, Duration::from_secs(3))
            .await
            .expect("cluster"),
    );
    cluster.heartbeat("{}".into()).await.expect("heartbeat");
    let conference = Conference::open(
        store.clone(),
        Options {
            session_ttl: Duration::from_secs(3600),
            token_ttl: Duration::from_secs(3600),
            token_secret: Some("cluster-test-token-secret-0123".into()),
            clock: system_clock(),
            sip_stream_alias: "phone".into(),
            cluster: Some(cluster.clone() as Arc<dyn Cluster>),
            lease: Duration::from_secs(3),
        },
    )
    .await
    .expect("conference");
    Node {
        conference,
        cluster,
        store,
    }
}

fn hears(participant: Uuid) -> Subscriptions {
    Subscriptions {
        session_id: None,
        participants: Some(vec![ParticipantSubscription {
            participant_id: participant,
            stream_aliases: None,
        }]),
    }
}

#[tokio::test]
async fn what_one_node_acknowledges_the_other_answers() {
    let url = patchbay_tests::postgres::database();
    let (a, b) = (node(&url, "a").await, node(&url, "b").await);
    let (ca, cb) = (&a.conference, &b.conference);

    // One token secret for both: a token minted by one is accepted by the other.
    let s = ca.create_session("acct", Some("t".into())).await.unwrap();
    let (p, token) = ca
        .create_participant("acct", NewParticipant::default())
        .await
        .unwrap();
    let (q, _) = cb
        .create_participant("acct", NewParticipant::default())
        .await
        .unwrap();
    assert!(
        cb.get_session("acct", s.id).is_err(),
        "b has not caught up yet"
    );
    cb.sync().await.unwrap();
    assert_eq!(
        cb.get_session("acct", s.id).unwrap().tag.as_deref(),
        Some("t")
    );
    assert_eq!(cb.verify_token(&token).unwrap().id, p.id);

    // Membership and subscriptions written on b, read on a.
    cb.add_participant_to_session("acct", s.id, p.id, None)
        .await
        .unwrap();
    cb.add_participant_to_session("acct", s.id, q.id, Some(hears(p.id)))
        .await
        .unwrap();
    ca.sync().await.unwrap();
    let members: Vec<Uuid> = ca
        .list_session_participants("acct", s.id)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(members, [p.id, q.id]);
    assert_eq!(
        ca.get_subscriptions("acct", s.id, q.id).unwrap(),
        hears(p.id)
    );

    // A change on a (removing p: its membership goes; q's subscription naming it stays,
    // to apply again if p comes back) reaches b.
    ca.remove_participant_from_session("acct", s.id, p.id)
        .await
        .unwrap();
    cb.sync().await.unwrap();
    assert_eq!(
        cb.get_subscriptions("acct", s.id, q.id).unwrap(),
        hears(p.id)
    );
    assert!(cb.get_subscriptions("acct", s.id, p.id).is_err());

    // Deleting p on b drops q's subscription naming it, on a too; then the session.
    cb.delete_participant("acct", p.id).await.unwrap();
    ca.sync().await.unwrap();
    assert_eq!(
        ca.get_subscriptions("acct", s.id, q.id).unwrap(),
        Subscriptions {
            session_id: None,
            participants: Some(vec![]),
        }
    );
    cb.delete_session("acct", s.id).await.unwrap();
    ca.sync().await.unwrap();
    assert!(matches!(
        ca.get_session("acct", s.id),
        Err(ConferenceError::NotFound(_))
    ));
    assert!(ca.verify_token(&token).is_err());
    assert!(ca
        .get_participant("acct", q.id)
        .unwrap()
        .session_id
        .is_none());
}

#[tokio::test]
async fn concurrent_writes_on_two_nodes_converge_on_the_database() {
    let url = patchbay_tests::postgres::database();
    let (a, b) = (node(&url, "a").await, node(&url, "b").await);
    let (ca, cb) = (&a.conference, &b.conference);
    let s1 = ca.create_session("acct", None).await.unwrap();
    let s2 = ca.create_session("acct", None).await.unwrap();
    let (p, _) = ca
        .create_participant("acct", NewParticipant::default())
        .await
        .unwrap();
    cb.sync().await.unwrap();
    // Both nodes put p in a different session before either has seen the other's.
    let (ra, rb) = tokio::join!(
        ca.add_participant_to_session("acct", s1.id, p.id, None),
        cb.add_participant_to_session("acct", s2.id, p.id, None),
    );
    ra.unwrap();
    rb.unwrap();
    ca.sync().await.unwrap();
    cb.sync().await.unwrap();
    let fresh = node(&url, "c").await;
    let stored = fresh.conference.get_participant("acct", p.id).unwrap();
    let in_a = ca.get_participant("acct", p.id).unwrap();
    let in_b = cb.get_participant("acct", p.id).unwrap();
    assert_eq!(in_a.session_id, stored.session_id);
    assert_eq!(in_b.session_id, stored.session_id);
    for c in [ca, cb] {
        let other = if stored.session_id == Some(s1.id) {
            s2.id
        } else {
            s1.id
        };
        assert!(c
            .list_session_participants("acct", other)
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn a_dead_nodes_outbox_and_connections_are_taken_over_in_order() {
    let url = patchbay_tests::postgres::database();
    let dead = node(&url, "dead").await;
    let p = Uuid::new_v4();
    let written: Vec<Webhook> = (1..=3).map(|id| common::webhook(p, id)).collect();
    let mut unit: Vec<StoreOp> = written.iter().cloned().map(StoreOp::PutWebhook).collect();
    unit.push(StoreOp::PutConnection(common::connection(
        p,
        DeviceSource::Browser,
        "d1",
        true,
    )));
    dead.store.commit(unit).await.unwrap();
    let live = node(&url, "live").await;
    let lease = Duration::from_secs(3);
    let early = live.cluster.take_over(lease, 100).await.unwrap();
    assert!(
        early.webhooks.is_empty(),
        "taken over before its lease ran out"
    );
    // A second process under the dead node's id is refused while it lives.
    let twin = PgCluster::connect(&url, "dead", Duration::from_secs(3)).await;
    assert!(
        matches!(&twin, Err(e) if e.to_string().contains("another Patchbay process")),
        "a second process as node `dead` was not refused"
    );

    drop(dead);
    tokio::time::sleep(lease + Duration::from_millis(500)).await;
    let taken = live.cluster.take_over(lease, 100).await.unwrap();
    let ids: Vec<Uuid> = taken.webhooks.iter().map(|w| w.event_id).collect();
    let expected: Vec<Uuid> = written.iter().map(|w| w.event_id).collect();
    assert_eq!(ids, expected, "same event ids, same order");
    assert_eq!(
        taken.webhooks.iter().map(|w| w.id).collect::<Vec<_>>(),
        [101, 102, 103]
    );
    assert_eq!(taken.connections.len(), 1);
    assert_eq!(taken.connections[0].device_id, "d1");
    // They are the live node's now: delivering one deletes its row.
    live.store
        .commit(vec![StoreOp::DeleteWebhook(101)])
        .await
        .unwrap();
    let again = live.cluster.take_over(lease, 200).await.unwrap();
    assert!(again.webhooks.is_empty() && again.connections.is_empty());
    let snap = live.store.load().await.unwrap();
    assert_eq!(
        snap.webhooks.iter().map(|w| w.id).collect::<Vec<_>>(),
        [102, 103]
    );
    // The dead node's row is gone from the live nodes.
    live.cluster.heartbeat("{}".into()).await.unwrap();
    let nodes = live.cluster.nodes(lease).await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["live"]
    );
}

#[tokio::test]
async fn racing_owners_end_with_one_and_a_fenced_old_owner_changes_nothing() {
    let url = patchbay_tests::postgres::database();
    let (a, b) = (node(&url, "a").await, node(&url, "b").await);
    let s = a.conference.create_session("acct", None).await.unwrap();
    // Concurrent first joins on both nodes, many times over (a fresh session each).
    for _ in 0..20 {
        let s = a.conference.create_session("acct", None).await.unwrap();
        let (oa, ob) = tokio::join!(a.cluster.own(s.id), b.cluster.own(s.id));
        let (oa, ob) = (oa.unwrap(), ob.unwrap());
        assert_eq!(oa, ob, "both nodes see the same single owner");
        assert_eq!(oa.epoch, 1);
    }
    let first = a.cluster.own(s.id).await.unwrap();
    assert_eq!((first.node.as_str(), first.epoch), ("a", 1));
    // While a renews, b cannot take it.
    let fence = |epoch| StoreOp::Fence {
        session_id: s.id,
        epoch,
    };
    let put = |store: &SqlStore, epoch, device: &str| {
        store.commit(vec![
            fence(epoch),
            StoreOp::PutConnection(common::connection(
                Uuid::new_v4(),
                DeviceSource::Sip,
                device,
                true,
            )),
        ])
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(a.cluster.renew(vec![(s.id, 1)]).await.unwrap(), [s.id]);
        assert_eq!(b.cluster.own(s.id).await.unwrap().node, "a");
    }
    put(&a.store, 1, "by-a-while-owner").await.unwrap();
    // a pauses (no renewals) past its lease: b takes over at epoch 2.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let second = b.cluster.own(s.id).await.unwrap();
    assert_eq!((second.node.as_str(), second.epoch), ("b", 2));
    // a wakes up: its renewal says the session is lost, its fenced writes fail.
    assert!(a.cluster.renew(vec![(s.id, 1)]).await.unwrap().is_empty());
    let refused = put(&a.store, 1, "by-a-after-losing").await;
    assert!(matches!(refused, Err(StoreError::Fenced)), "{refused:?}");
    put(&b.store, 2, "by-b").await.unwrap();
    // b's write at a's old epoch is refused too (epochs, not nodes, are fenced).
    assert!(matches!(
        put(&b.store, 1, "by-b-old-epoch").await,
        Err(StoreError::Fenced)
    ));
    // Released, it is taken again at a higher epoch.
    b.cluster.release(s.id, 2).await.unwrap();
    assert_eq!(a.cluster.own(s.id).await.unwrap().epoch, 3);
    let devices: Vec<String> = b
        .store
        .load()
        .await
        .unwrap()
        .connections
        .iter()
        .map(|c| c.device_id.clone())
        .collect();
    assert_eq!(devices, ["by-b"]);
}

/// Two nodes adding the 20th participant of a session at the same instant (each with
/// 19 members in memory): the database admits one, the other is refused as over the
/// limit and keeps no trace of it.
#[tokio::test]
async fn two_nodes_adding_the_last_member_at_once_admit_one() {
    let url = patchbay_tests::postgres::database();
    let (a, b) = (node(&url, "a").await, node(&url, "b").await);
    let (ca, cb) = (&a.conference, &b.conference);
    for _ in 0..20 {
        let s = ca.create_session("acct", None).await.unwrap();
        for _ in 0..19 {
            let (p, _) = ca
                .create_participant("acct", NewParticipant::default())
                .await
                .unwrap();
            ca.add_participant_to_session("acct", s.id, p.id, None)
                .await
                .unwrap();
        }
        let (x, _) = ca
            .create_participant("acct", NewParticipant::default())
            .await
            .unwrap();
        let (y, _) = ca
            .create_participant("acct", NewParticipant::default())
            .await
            .unwrap();
        cb.sync().await.unwrap();
        assert_eq!(cb.get_session("acct", s.id).unwrap().members.len(), 19);
        let (ra, rb) = tokio::join!(
            ca.add_participant_to_session("acct", s.id, x.id, None),
            cb.add_participant_to_session("acct", s.id, y.id, None),
        );
        let refused = [&ra, &rb]
            .iter()
            .filter(
                |r| matches!(r, Err(ConferenceError::Conflict(m)) if m.contains("maximum of 20")),
            )
            .count();
        assert_eq!(refused, 1, "{ra:?} {rb:?}");
        assert!(ra.is_ok() || rb.is_ok(), "{ra:?} {rb:?}");
        ca.sync().await.unwrap();
        cb.sync().await.unwrap();
        for c in [ca, cb] {
            let members = c.get_session("acct", s.id).unwrap().members;
            assert_eq!(members.len(), 20);
            let loser = if ra.is_ok() { y.id } else { x.id };
            assert!(!members.contains(&loser));
            assert_eq!(c.get_participant("acct", loser).unwrap().session_id, None);
        }
    }
}

/// The watchdog stops a session's media once its lease was not confirmed in time,
/// whatever the renewal round is doing (here: no round runs at all, as if it were stuck
/// on a statement); a renewal sent in time keeps it.
#[tokio::test]
async fn a_lease_not_confirmed_in_time_is_given_up_whatever_the_round_is_doing() {
    let url = patchbay_tests::postgres::database();
    let a = node(&url, "a").await;
    let (s1, s2) = (
        a.conference.create_session("acct", None).await.unwrap(),
        a.conference.create_session("acct", None).await.unwrap(),
    );
    for s in [s1.id, s2.id] {
        assert!(matches!(
            a.conference.place_session(s).await.unwrap(),
            patchbay_conference::Placement::Here
        ));
    }
    assert_eq!(a.conference.owned_sessions(), 2);
    a.conference.expire_unconfirmed();
    assert_eq!(a.conference.owned_sessions(), 2, "just taken: kept");
    // Lease 3 s: unconfirmed for 2.45 s (a watchdog period and a slack before its
    // end), the media must stop.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    a.conference.expire_unconfirmed();
    assert_eq!(a.conference.owned_sessions(), 2, "not yet");
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.conference.expire_unconfirmed();
    assert_eq!(a.conference.owned_sessions(), 0);

    // Taken again and renewed in time: kept past the first term.
    assert!(matches!(
        a.conference.place_session(s1.id).await.unwrap(),
        patchbay_conference::Placement::Here
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.conference.keep_ownership().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.conference.expire_unconfirmed();
    assert_eq!(
        a.conference.owned_sessions(),
        1,
        "renewed at 1.5 s: kept at 3 s"
    );
}
