//! The control plane over a real store, with a controllable clock: every test runs on
//! the embedded SQLite store and on PostgreSQL (the test server `scripts/test` starts).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use patchbay_conference::store::{SqlStore, Store};
use patchbay_conference::{
    Conference, ConferenceError, NewParticipant, Options, ParticipantSubscription,
    PublishPermission, Subscriptions,
};
use uuid::Uuid;

mod common;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A store that survives reopening: a SQLite file, or a fresh PostgreSQL database.
struct Fixture {
    dir: tempfile::TempDir,
    database: Option<String>,
    time: Arc<AtomicI64>,
}

impl Fixture {
    fn new(backend: Backend) -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            database: matches!(backend, Backend::Postgres).then(patchbay_tests::postgres::database),
            time: Arc::new(AtomicI64::new(1_790_000_000_000)),
        }
    }

    async fn store(&self) -> SqlStore {
        match &self.database {
            Some(url) => SqlStore::postgres(url, "test-node").await.unwrap(),
            None => SqlStore::sqlite(&self.dir.path().join("p.db"))
                .await
                .unwrap(),
        }
    }

    async fn open(&self) -> Conference {
        let store = self.store().await;
        let t = self.time.clone();
        Conference::open(
            Arc::new(store),
            Options {
                session_ttl: Duration::from_secs(60),
                token_ttl: Duration::from_secs(3600),
                token_secret: None,
                clock: Arc::new(move || t.load(Ordering::SeqCst)),
                sip_stream_alias: "phone".into(),
                cluster: None,
                lease: Duration::from_secs(10),
            },
        )
        .await
        .unwrap()
    }

    fn advance(&self, ms: i64) {
        self.time.fetch_add(ms, Ordering::SeqCst);
    }
}

async fn participant(c: &Conference) -> (Uuid, String) {
    let (p, t) = c
        .create_participant("dev", NewParticipant::default())
        .await
        .unwrap();
    (p.id, t)
}

async fn state_and_tokens_survive_reopen(backend: Backend) {
    let f = Fixture::new(backend);
    let (s, a, b, ta) = {
        let c = f.open().await;
        let s = c
            .create_session("dev", Some("tag".into()))
            .await
            .unwrap()
            .id;
        let (a, ta) = participant(&c).await;
        let (b, _) = participant(&c).await;
        c.add_participant_to_session("dev", s, a, None)
            .await
            .unwrap();
        let subs = Subscriptions {
            session_id: Some(s),
            participants: Some(vec![ParticipantSubscription {
                participant_id: a,
                stream_aliases: Some(vec!["phone".into()]),
            }]),
        };
        c.add_participant_to_session("dev", s, b, Some(subs))
            .await
            .unwrap();
        c.close().await.unwrap();
        (s, a, b, ta)
    };
    let c = f.open().await;
    let session = c.get_session("dev", s).unwrap();
    assert_eq!(session.tag.as_deref(), Some("tag"));
    assert_eq!(session.members, vec![a, b]);
    let subs = c.get_subscriptions("dev", s, b).unwrap();
    assert_eq!(
        subs.participants.unwrap()[0].stream_aliases,
        Some(vec!["phone".to_string()])
    );
    assert_eq!(c.verify_token(&ta).unwrap().id, a);
}

async fn deleting_a_participant_revokes_its_token_and_prunes_subscriptions(backend: Backend) {
    let f = Fixture::new(backend);
    let c = f.open().await;
    let s = c.create_session("dev", None).await.unwrap().id;
    let (a, ta) = participant(&c).await;
    let (b, _) = participant(&c).await;
    c.add_participant_to_session("dev", s, a, None)
        .await
        .unwrap();
    let subs = Subscriptions {
        session_id: None,
        participants: Some(vec![ParticipantSubscription {
            participant_id: a,
            stream_aliases: None,
        }]),
    };
    c.add_participant_to_session("dev", s, b, Some(subs))
        .await
        .unwrap();
    c.delete_participant("dev", a).await.unwrap();
    assert!(matches!(
        c.verify_token(&ta),
        Err(ConferenceError::Token(_))
    ));
    assert_eq!(
        c.get_subscriptions("dev", s, b).unwrap().participants,
        Some(vec![])
    );
    assert_eq!(c.get_session("dev", s).unwrap().members, vec![b]);
}

async fn sessions_expire_with_their_memberships(backend: Backend) {
    let f = Fixture::new(backend);
    let c = f.open().await;
    let s = c.create_session("dev", None).await.unwrap().id;
    let (a, _) = participant(&c).await;
    c.add_participant_to_session("dev", s, a, None)
        .await
        .unwrap();
    f.advance(59_000);
    assert_eq!(c.expire_sessions().await.unwrap(), 0);
    f.advance(1_000);
    // Expired sessions are gone at once, even before the sweep.
    assert!(matches!(
        c.get_session("dev", s),
        Err(ConferenceError::NotFound(_))
    ));
    assert_eq!(c.expire_sessions().await.unwrap(), 1);
    assert_eq!(c.get_participant("dev", a).unwrap().session_id, None);
    // The participant can join another session.
    let s2 = c.create_session("dev", None).await.unwrap().id;
    c.add_participant_to_session("dev", s2, a, None)
        .await
        .unwrap();
    c.close().await.unwrap();
    let c = f.open().await;
    assert!(c.get_session("dev", s).is_err());
    assert_eq!(c.get_participant("dev", a).unwrap().session_id, Some(s2));
}

async fn limits_and_conflicts(backend: Backend) {
    let f = Fixture::new(backend);
    let c = f.open().await;
    let s = c.create_session("dev", None).await.unwrap().id;
    for _ in 0..20 {
        let (p, _) = participant(&c).await;
        c.add_participant_to_session("dev", s, p, None)
            .await
            .unwrap();
    }
    let (extra, _) = participant(&c).await;
    assert!(matches!(
        c.add_participant_to_session("dev", s, extra, None).await,
        Err(ConferenceError::Conflict(_))
    ));
    let s2 = c.create_session("dev", None).await.unwrap().id;
    c.add_participant_to_session("dev", s2, extra, None)
        .await
        .unwrap();
    // Already in s2: adding to s is a conflict, adding to s2 again is fine.
    assert!(matches!(
        c.add_participant_to_session("dev", s, extra, None).await,
        Err(ConferenceError::Conflict(_))
    ));
    c.add_participant_to_session("dev", s2, extra, None)
        .await
        .unwrap();
    // Subscriptions may name a participant that is not a member (yet), not one that
    // does not exist.
    let stranger = participant(&c).await.0;
    let naming = |participant_id| Subscriptions {
        session_id: None,
        participants: Some(vec![ParticipantSubscription {
            participant_id,
            stream_aliases: None,
        }]),
    };
    c.update_subscriptions("dev", s2, extra, Some(naming(stranger)))
        .await
        .unwrap();
    assert!(matches!(
        c.update_subscriptions("dev", s2, extra, Some(naming(Uuid::new_v4())))
            .await,
        Err(ConferenceError::Invalid(_))
    ));
    // Tags are limited to 50 characters (counted as characters, not bytes).
    assert!(c.create_session("dev", Some("é".repeat(50))).await.is_ok());
    assert!(matches!(
        c.create_session("dev", Some("x".repeat(51))).await,
        Err(ConferenceError::Invalid(_))
    ));
    // Accounts are isolated.
    assert!(matches!(
        c.get_session("other", s),
        Err(ConferenceError::NotFound(_))
    ));
    let new = NewParticipant {
        publish_permissions: Some(vec![PublishPermission::Audio]),
        callback_url: Some("ftp://example.com/cb".into()),
        ..Default::default()
    };
    assert!(matches!(
        c.create_participant("dev", new).await,
        Err(ConferenceError::Invalid(_))
    ));
}

async fn concurrent_creations_are_all_durable(backend: Backend) {
    let f = Fixture::new(backend);
    let c = Arc::new(f.open().await);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { participant(&c).await.0 }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    drop(c);
    let c = f.open().await;
    for id in ids {
        c.get_participant("dev", id).unwrap();
    }
}

/// Every kind of change, committed and read back as it was written.
async fn every_operation_round_trips(backend: Backend) {
    use patchbay_conference::events::DeviceSource;
    use patchbay_conference::store::{DialogRecord, StoreOp};
    let f = Fixture::new(backend);
    let store = f.store().await;
    let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
    let webhook = |id: i64| common::webhook(p, id);
    let (w1, w2, w3) = (webhook(1), webhook(2), webhook(3));
    let dialog = DialogRecord {
        id: Uuid::new_v4(),
        account_id: "dev".into(),
        participant_id: p,
        state: "CALLING".into(),
        data: r#"{"to":"sip:a@b","from":"sip:c@d"}"#.into(),
        reason: None,
        details: None,
        created_at: 1,
        updated_at: 2,
    };
    let connection = |device: &str, connected: bool| {
        common::connection(q, DeviceSource::Browser, device, connected)
    };
    let units = vec![
        vec![
            StoreOp::PutMeta {
                key: "k".into(),
                value: "v1".into(),
            },
            StoreOp::PutMeta {
                key: "k".into(),
                value: "v2".into(),
            },
        ],
        vec![
            StoreOp::PutWebhook(w1.clone()),
            StoreOp::PutWebhook(w2.clone()),
            StoreOp::PutWebhook(w3.clone()),
        ],
        vec![
            StoreOp::RetryWebhook {
                id: 2,
                attempts: 7,
                next_ms: 1_790_000_999_999,
            },
            StoreOp::DeleteWebhook(1),
        ],
        vec![StoreOp::PutDialog(dialog.clone())],
        vec![StoreOp::PutDialog(DialogRecord {
            state: "TERMINATED".into(),
            reason: Some("FAR END BUSY".into()),
            details: Some("486 Busy Here".into()),
            updated_at: 3,
            ..dialog.clone()
        })],
        vec![
            StoreOp::PutConnection(connection("gone", true)),
            StoreOp::PutConnection(connection("web", true)),
            StoreOp::PutConnection(connection("web", false)),
            StoreOp::DeleteConnection {
                participant_id: q,
                source: DeviceSource::Browser,
                device_id: "gone".into(),
            },
        ],
    ];
    for unit in units {
        store.commit(unit).await.unwrap();
    }
    store.ping().await.unwrap();
    store.close().await.unwrap();
    let store = f.store().await;
    let snap = store.load().await.unwrap();
    assert_eq!(snap.meta.get("k").map(String::as_str), Some("v2"));
    let ids: Vec<(i64, u32, u64)> = snap
        .webhooks
        .iter()
        .map(|w| (w.id, w.attempts, w.next_ms))
        .collect();
    assert_eq!(
        ids,
        vec![(2, 7, 1_790_000_999_999), (3, 0, 1_790_000_000_000)]
    );
    assert_eq!(snap.webhooks[1].event_id, w3.event_id);
    assert_eq!(snap.webhooks[1].body, w3.body);
    assert_eq!(snap.dialogs.len(), 1);
    assert_eq!(snap.dialogs[0].state, "TERMINATED");
    assert_eq!(snap.dialogs[0].reason.as_deref(), Some("FAR END BUSY"));
    assert_eq!(snap.dialogs[0].data, dialog.data);
    assert_eq!(snap.connections, vec![connection("web", false)]);
}

/// A device's subscribing layout: kept, never replaced by an older offer's (writes of
/// two offers may land out of order), replaced by another device's, forgotten when the
/// device leaves or its participant is deleted.
async fn subscribe_layouts_keep_the_newest(backend: Backend) {
    use patchbay_conference::store::{LayoutRecord, StoreOp};
    let f = Fixture::new(backend);
    let c = f.open().await;
    let (p, _) = participant(&c).await;
    let store = f.store().await;
    let layout = |device: &str, revision: u64, lines: &str| LayoutRecord {
        participant_id: p,
        device_id: device.into(),
        revision,
        lines: lines.into(),
    };
    assert_eq!(store.layout(p).await.unwrap(), None);
    let newer = layout("web", 9, "application:a audio:b audio:c");
    store
        .commit(vec![StoreOp::PutLayout(newer.clone())])
        .await
        .unwrap();
    store
        .commit(vec![StoreOp::PutLayout(layout(
            "web",
            8,
            "application:a audio:b",
        ))])
        .await
        .unwrap();
    assert_eq!(store.layout(p).await.unwrap(), Some(newer));
    // Another device of the participant (a reloaded page): its own, whatever the revision.
    let other = layout("tab-2", 1, "application:x audio:y");
    store
        .commit(vec![StoreOp::PutLayout(other.clone())])
        .await
        .unwrap();
    assert_eq!(store.layout(p).await.unwrap(), Some(other));
    // A leave of the older device does not forget the newer one's.
    let leave = |device: &str| StoreOp::DeleteLayout {
        participant_id: p,
        device_id: device.into(),
    };
    store.commit(vec![leave("web")]).await.unwrap();
    assert!(store.layout(p).await.unwrap().is_some());
    store.commit(vec![leave("tab-2")]).await.unwrap();
    assert_eq!(store.layout(p).await.unwrap(), None);
    store
        .commit(vec![StoreOp::PutLayout(layout("web", 3, "audio:q"))])
        .await
        .unwrap();
    c.delete_participant("dev", p).await.unwrap();
    assert_eq!(store.layout(p).await.unwrap(), None);
}

/// A stream participant keeps its bot's stream across a restart; its token joins no
/// device or call (its media is the stream).
async fn a_stream_participant_survives_reopen(backend: Backend) {
    use patchbay_conference::{MediaStream, StreamProtocol};
    let f = Fixture::new(backend);
    let stream = MediaStream {
        url: "wss://bot.example/ws".into(),
        protocol: StreamProtocol::Bandwidth,
        headers: Some([("Authorization".to_string(), "Bearer x".to_string())].into()),
        sample_rate: 16000,
        custom_parameters: serde_json::json!({"lang": "en"}).as_object().cloned(),
    };
    let (id, token) = {
        let c = f.open().await;
        let new = NewParticipant {
            publish_permissions: Some(vec![PublishPermission::Audio]),
            media_stream: Some(stream.clone()),
            ..Default::default()
        };
        let (p, token) = c.create_participant("dev", new).await.unwrap();
        (p.id, token)
    };
    let c = f.open().await;
    let p = c.get_participant("dev", id).unwrap();
    assert_eq!(p.media_stream, Some(stream));
    assert!(c.join_media(&token).is_err());
    assert!(c.join_device(&token).is_err());
    // A stream without AUDIO, or at a rate its protocol does not carry, is refused.
    for (perms, rate) in [
        (PublishPermission::Video, 8000),
        (PublishPermission::Audio, 11025),
    ] {
        let new = NewParticipant {
            publish_permissions: Some(vec![perms]),
            media_stream: Some(MediaStream {
                sample_rate: rate,
                ..p.media_stream.clone().unwrap()
            }),
            ..Default::default()
        };
        assert!(matches!(
            c.create_participant("dev", new).await,
            Err(ConferenceError::Invalid(_))
        ));
    }
}

/// Each test on both stores: `name::sqlite` and `name::postgres`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::Backend::Sqlite).await
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name(super::Backend::Postgres).await
                }
            }
        )*
    };
}

on_both_stores!(
    state_and_tokens_survive_reopen,
    deleting_a_participant_revokes_its_token_and_prunes_subscriptions,
    sessions_expire_with_their_memberships,
    limits_and_conflicts,
    concurrent_creations_are_all_durable,
    every_operation_round_trips,
    subscribe_layouts_keep_the_newest,
    a_stream_participant_survives_reopen,
);
