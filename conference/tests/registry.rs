//! The control plane over a real SQLite store, with a controllable clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use patchbay_conference::store::SqliteStore;
use patchbay_conference::{
    Conference, ConferenceError, NewParticipant, Options, ParticipantSubscription,
    PublishPermission, Subscriptions,
};
use uuid::Uuid;

struct Fixture {
    dir: tempfile::TempDir,
    time: Arc<AtomicI64>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            time: Arc::new(AtomicI64::new(1_790_000_000_000)),
        }
    }

    async fn open(&self) -> Conference {
        let store = SqliteStore::open(&self.dir.path().join("p.db"))
            .await
            .unwrap();
        let t = self.time.clone();
        Conference::open(
            Arc::new(store),
            Options {
                session_ttl: Duration::from_secs(60),
                token_ttl: Duration::from_secs(3600),
                token_secret: None,
                clock: Arc::new(move || t.load(Ordering::SeqCst)),
                sip_stream_alias: "phone".into(),
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

#[tokio::test]
async fn state_and_tokens_survive_reopen() {
    let f = Fixture::new();
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

#[tokio::test]
async fn deleting_a_participant_revokes_its_token_and_prunes_subscriptions() {
    let f = Fixture::new();
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

#[tokio::test]
async fn sessions_expire_with_their_memberships() {
    let f = Fixture::new();
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

#[tokio::test]
async fn limits_and_conflicts() {
    let f = Fixture::new();
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
    // Subscriptions to a non-member are refused.
    let stranger = participant(&c).await.0;
    let subs = Subscriptions {
        session_id: None,
        participants: Some(vec![ParticipantSubscription {
            participant_id: stranger,
            stream_aliases: None,
        }]),
    };
    assert!(matches!(
        c.update_subscriptions("dev", s2, extra, Some(subs)).await,
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

#[tokio::test]
async fn concurrent_creations_are_all_durable() {
    let f = Fixture::new();
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
