//! The control plane: sessions, participants, membership, subscriptions, tokens, limits, expiry.
//!
//! State lives in memory behind one short-held lock (this is the control
//! plane, never the media path) and every change is written through the
//! [`Store`] before it is acknowledged. Changes are enqueued to the store while
//! the lock is held, so the store sees them in the same order as memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::dialogs::{DialCommand, Dialog, DialogData, DialogEvent, DialogState};
use crate::media::session::{
    Control, HangupReason, MediaHub, SessionHandle, SessionInput, SessionSnapshot,
};
use crate::model::{
    DeviceApiVersion, Participant, PublishPermission, Session, Subscriptions, UnixMillis,
};
use crate::store::{Cluster, DialogRecord, Membership, Store, StoreError, StoreOp};
use crate::token::{TokenError, TokenKeys};
use crate::webhooks::Webhook;

mod changes;
mod dialogs;
mod follow;
mod homes;
mod membership;
mod owners;
mod recordings;
mod segments;
mod state;
pub use changes::{Change, ChangeKind};
use dialogs::dialog_from_record;
pub use owners::Placement;
pub use recordings::{NewRecording, RecordingOptions};
pub use segments::RecordingHome;
use state::*;

/// A session holds at most this many participants.
pub const MAX_PARTICIPANTS_PER_SESSION: usize = 20;
/// Tags are at most this many characters.
pub const MAX_TAG_CHARS: usize = 50;

const META_TOKEN_SECRET: &str = "token_secret";

#[derive(Debug, thiserror::Error)]
pub enum ConferenceError {
    /// The object does not exist, belongs to another account, or is no longer active.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or violates a rule.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with current state (limits, membership).
    #[error("{0}")]
    Conflict(String),
    /// A token was rejected.
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, ConferenceError>;

/// A stream participant's stream: a WebSocket URL, a rate its protocol carries, audio
/// it may publish.
fn check_media_stream(
    m: &crate::model::MediaStream,
    permissions: &[PublishPermission],
) -> Result<()> {
    use crate::model::StreamProtocol;
    let invalid = |s: String| Err(ConferenceError::Invalid(s));
    if !(m.url.starts_with("wss://") || m.url.starts_with("ws://")) || m.url.len() > 2048 {
        return invalid("mediaStream.url must be a ws:// or wss:// URL".into());
    }
    let rates: &[u32] = match m.protocol {
        StreamProtocol::Twilio => &[8000],
        StreamProtocol::Bandwidth | StreamProtocol::Raw => &[8000, 16000, 24000],
    };
    if !rates.contains(&m.sample_rate) {
        return invalid(format!(
            "mediaStream.sampleRate {} is not one of {rates:?} for this protocol",
            m.sample_rate
        ));
    }
    if m.custom_parameters
        .as_ref()
        .is_some_and(|c| serde_json::to_string(c).map_or(usize::MAX, |s| s.len()) > 8192)
    {
        return invalid("mediaStream.customParameters is larger than 8 KB".into());
    }
    if !permissions.contains(&PublishPermission::Audio) {
        return invalid("a stream participant needs publishPermissions [\"AUDIO\"]".into());
    }
    let headers = m.headers.iter().flatten();
    if headers.clone().count() > MAX_STREAM_HEADERS {
        return invalid(format!(
            "mediaStream.headers has more than {MAX_STREAM_HEADERS} headers"
        ));
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let token = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !token
            || [
                "host",
                "connection",
                "upgrade",
                "content-length",
                "transfer-encoding",
            ]
            .contains(&lower.as_str())
            || lower.starts_with("sec-websocket-")
        {
            return invalid(format!(
                "mediaStream.headers: `{}` is not a header a stream may set",
                name.chars().take(64).collect::<String>()
            ));
        }
        if value.len() > 1024
            || !value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return invalid(format!(
                "mediaStream.headers: the value of `{name}` must be printable ASCII of at most 1024 bytes"
            ));
        }
    }
    Ok(())
}

/// Headers a stream participant's handshake may carry.
const MAX_STREAM_HEADERS: usize = 10;

fn not_found(what: &str, id: Uuid) -> ConferenceError {
    ConferenceError::NotFound(format!("{what} {id} not found"))
}

/// A source of wall-clock time in epoch milliseconds (injectable for tests).
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as UnixMillis)
            .unwrap_or(0)
    })
}

/// How the control plane is set up.
#[derive(Clone)]
pub struct Options {
    pub session_ttl: Duration,
    pub token_ttl: Duration,
    /// Token signing secret; `None`: the one kept in the store, generated on first start.
    pub token_secret: Option<String>,
    pub clock: Clock,
    /// Stream alias of SIP legs (default `phone`).
    pub sip_stream_alias: String,
    /// The cluster this node is one of (PostgreSQL), if any.
    pub cluster: Option<Arc<dyn Cluster>>,
    /// In a cluster: a node silent this long is dead (and its session leases last it).
    pub lease: Duration,
}

/// A request to create a participant.
#[derive(Debug, Clone, Default)]
pub struct NewParticipant {
    pub callback_url: Option<String>,
    /// `None`: both AUDIO and VIDEO.
    pub publish_permissions: Option<Vec<PublishPermission>>,
    pub tag: Option<String>,
    /// `None`: V3.
    pub device_api_version: Option<DeviceApiVersion>,
    /// A stream participant: its bot's WebSocket (the URL checked by the caller).
    pub media_stream: Option<crate::model::MediaStream>,
}

#[derive(Default)]
struct State {
    participants: HashMap<Uuid, Participant>,
    sessions: HashMap<Uuid, Session>,
    next_seq: i64,
}

/// Why a media leg may not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("participant {0} may not publish AUDIO")]
    NoAudioPermission(Uuid),
    #[error("participant {0} is not in a session")]
    NotInSession(Uuid),
    /// In a cluster: another node runs the session's media.
    #[error("the session's media runs on node {node}")]
    Elsewhere {
        node: String,
        sip_uri: Option<String>,
    },
    /// In a cluster: this node is stopping and does not run the session.
    #[error("this node is stopping")]
    Draining,
}

/// What the last run left undone, found at startup.
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Callbacks not delivered, in outbox order.
    pub webhooks: Vec<Webhook>,
    /// Devices and SIP calls still connected when it stopped (a crash): to be ended.
    pub connections: Vec<crate::store::ConnectionRecord>,
}

/// The control plane.
pub struct Conference {
    state: Mutex<State>,
    media: MediaHub,
    store: Arc<dyn Store>,
    tokens: TokenKeys,
    session_ttl_ms: i64,
    clock: Clock,
    /// What the last run left for the webhook outbox to take.
    leftovers: Mutex<Leftovers>,
    /// Dialogs, and where to send calls (set by the SIP side when a trunk is configured).
    dialog_book: Mutex<DialogBook>,
    cluster: Option<Arc<dyn Cluster>>,
    /// How far this node's memory follows the change feed (held while catching up).
    applied: tokio::sync::Mutex<follow::Feed>,
    /// Catch-up requests so far (see `sync`).
    sync_tickets: std::sync::atomic::AtomicU64,
    /// The sessions whose media this node owns (in a cluster).
    owned: Mutex<owners::Owned>,
    lease: Duration,
    /// Announcements of changes (see `changes`).
    changes: tokio::sync::broadcast::Sender<Change>,
    /// Recordings of sessions, and where they go.
    recordings: Mutex<recordings::RecordingBook>,
    /// Commands to participants' SIP calls (hold, resume).
    calls: crate::calls::CallControl,
}

#[derive(Default)]
struct DialogBook {
    by_id: HashMap<Uuid, Dialog>,
    /// Callback URL and tag of each dialog's participant when it was created (its
    /// callbacks still go there once the participant is deleted).
    owners: HashMap<Uuid, (Option<String>, Option<String>)>,
    dialer: Option<tokio::sync::mpsc::UnboundedSender<DialCommand>>,
}

impl Conference {
    /// Load state from `store` and get ready to serve.
    pub async fn open(store: Arc<dyn Store>, options: Options) -> Result<Conference> {
        // The feed's head before the load: catching up from there re-reads at worst
        // what the load already has.
        let applied = match &options.cluster {
            Some(c) => c.head().await?,
            None => 0,
        };
        let mut snap = store.load().await?;
        if options.cluster.is_some() && options.token_secret.is_none() {
            // Whoever reads the database must not be able to mint tokens.
            return Err(StoreError::Backend(
                "a cluster's token secret comes from the configuration (token_secret), never from the database".into(),
            )
            .into());
        }
        let secret = match (&options.token_secret, snap.meta.get(META_TOKEN_SECRET)) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => {
                // Nodes of a cluster starting together each propose one; the first
                // stored is everyone's.
                let bytes: [u8; 32] = rand::random();
                let s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                store
                    .commit(vec![StoreOp::InitMeta {
                        key: META_TOKEN_SECRET.into(),
                        value: s,
                    }])
                    .await?;
                snap = store.load().await?;
                let stored = snap.meta.get(META_TOKEN_SECRET).cloned();
                tracing::info!("generated a token secret and stored it");
                stored.ok_or_else(|| {
                    StoreError::Backend("the stored token secret did not read back".into())
                })?
            }
        };

        let mut state = State::default();
        fill(
            &mut state,
            snap.sessions,
            snap.participants,
            snap.memberships,
        );
        tracing::info!(
            sessions = state.sessions.len(),
            participants = state.participants.len(),
            "state loaded"
        );
        tracing::info!(
            webhooks = snap.webhooks.len(),
            dialogs = snap.dialogs.len(),
            "outbox loaded"
        );
        Ok(Conference {
            dialog_book: Mutex::new(DialogBook {
                by_id: snap
                    .dialogs
                    .iter()
                    .filter_map(dialog_from_record)
                    .map(|d| (d.id, d))
                    .collect(),
                owners: HashMap::new(),
                dialer: None,
            }),
            leftovers: Mutex::new(Leftovers {
                webhooks: snap.webhooks,
                connections: snap.connections,
            }),
            state: Mutex::new(state),
            media: MediaHub::new(&options.sip_stream_alias),
            store,
            tokens: TokenKeys::new(secret.as_bytes(), options.token_ttl),
            session_ttl_ms: i64::try_from(options.session_ttl.as_millis()).unwrap_or(i64::MAX / 2),
            clock: options.clock,
            cluster: options.cluster,
            applied: tokio::sync::Mutex::new(follow::Feed {
                seq: applied,
                covered: 0,
            }),
            sync_tickets: std::sync::atomic::AtomicU64::new(0),
            owned: Mutex::default(),
            lease: options.lease,
            changes: changes::channel(),
            calls: Default::default(),
            recordings: Mutex::new(recordings::RecordingBook {
                by_id: snap.recordings.into_iter().map(|r| (r.id, r)).collect(),
                options: None,
                uploader: None,
            }),
        })
    }

    /// What the last run left for the webhook outbox (once).
    pub fn take_leftovers(&self) -> Leftovers {
        std::mem::take(&mut *self.leftovers.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Write a unit of changes that is not part of the control plane's state (the
    /// webhook outbox, dialogs); resolves once durable.
    pub fn commit(&self, unit: Vec<StoreOp>) -> crate::store::BoxFuture<'static, Result<()>> {
        let f = self.store.commit(unit);
        Box::pin(async move { Ok(f.await?) })
    }

    /// The participant (any account), if it exists.
    pub fn participant(&self, id: Uuid) -> Option<Participant> {
        self.lock().participants.get(&id).cloned()
    }

    /// Whether the participant exists and its media is a bot's stream.
    pub fn is_stream(&self, id: Uuid) -> bool {
        self.lock()
            .participants
            .get(&id)
            .is_some_and(|p| p.media_stream.is_some())
    }

    /// The running session media actors.
    /// Commands to participants' SIP calls (the SIP side sets where they go).
    pub fn calls(&self) -> &crate::calls::CallControl {
        &self.calls
    }

    pub fn media(&self) -> &MediaHub {
        &self.media
    }

    /// Push the session's current membership and subscriptions to its media actor.
    fn notify_media(&self, st: &State, session_id: Uuid) {
        self.media.notify(
            session_id,
            SessionInput::Core(Control::Snapshot(snapshot(st, session_id))),
        );
    }

    /// Admit a media leg (a SIP call) for the participant a token names: it must
    /// exist and may publish AUDIO. Returns the participant and its session's media
    /// actor, or the lobby's when it is in no session (the call is parked until it is
    /// added to one).
    pub fn join_media(
        &self,
        token: &str,
    ) -> std::result::Result<(Participant, SessionHandle), JoinError> {
        self.admit(token, true)
    }

    /// A fresh token for an existing participant (a call a static rule names joins with
    /// it, as if it had carried it).
    pub fn token_for(&self, participant_id: Uuid) -> Result<String> {
        let p = self
            .participant(participant_id)
            .ok_or_else(|| not_found("participant", participant_id))?;
        Ok(self
            .tokens
            .mint(&p.account_id, p.id, p.device_api_version, self.now())?)
    }

    /// Admit a browser device: the token must name an existing participant. Returns the
    /// participant and its session's media actor (or the lobby's: see `join_media`).
    pub fn join_device(
        &self,
        token: &str,
    ) -> std::result::Result<(Participant, SessionHandle), JoinError> {
        self.admit(token, false)
    }

    /// A stream participant's bot joins (no token: Patchbay itself opened the stream):
    /// the participant and its session's media (None: in no session, or gone).
    pub fn join_stream(
        &self,
        participant_id: Uuid,
    ) -> std::result::Result<Option<(Participant, SessionHandle)>, JoinError> {
        let st = self.lock();
        let Some(p) = st
            .participants
            .get(&participant_id)
            .filter(|p| p.media_stream.is_some())
        else {
            return Ok(None);
        };
        let Some(sid) = p.session_id else {
            return Ok(None);
        };
        if let Some((node, sip_uri)) = self.owner_elsewhere(sid) {
            return Err(JoinError::Elsewhere { node, sip_uri });
        }
        let handle = self.media.session(sid, || snapshot(&st, sid));
        Ok(Some((p.clone(), handle)))
    }

    /// Stream participants that are in a session now: (participant, session).
    pub fn streams_in_sessions(&self) -> Vec<(Participant, Uuid)> {
        self.lock()
            .participants
            .values()
            .filter(|p| p.media_stream.is_some())
            .filter_map(|p| p.session_id.map(|s| (p.clone(), s)))
            .collect()
    }

    fn admit(
        &self,
        token: &str,
        needs_audio: bool,
    ) -> std::result::Result<(Participant, SessionHandle), JoinError> {
        let claims = self.tokens.verify(token, self.now())?;
        let st = self.lock();
        let p = st
            .participants
            .get(&claims.participant_id)
            .filter(|p| p.account_id == claims.account_id)
            .ok_or_else(|| TokenError::Invalid("participant no longer exists".into()))?;
        if p.media_stream.is_some() {
            // Its media is its bot's stream: no device or call takes its place.
            return Err(TokenError::Invalid("the participant's media is a stream".into()).into());
        }
        if needs_audio && !p.may_publish(PublishPermission::Audio) {
            return Err(JoinError::NoAudioPermission(p.id));
        }
        let Some(sid) = p.session_id else {
            return Ok((p.clone(), self.media.lobby()));
        };
        if self.cluster.is_some() && self.is_draining() && !self.media.has(sid) {
            return Err(JoinError::Draining);
        }
        if let Some((node, sip_uri)) = self.owner_elsewhere(sid) {
            return Err(JoinError::Elsewhere { node, sip_uri });
        }
        let handle = self.media.session(sid, || snapshot(&st, sid));
        Ok((p.clone(), handle))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> UnixMillis {
        (self.clock)()
    }

    /// Numbers of live sessions and participants.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.sessions.len(), st.participants.len())
    }

    /// Whether the store answers.
    pub async fn ready(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }

    /// Write everything enqueued and close the store.
    pub async fn close(&self) -> Result<()> {
        Ok(self.store.close().await?)
    }

    // ---- participants ----

    /// Create a participant and mint its token.
    pub async fn create_participant(
        &self,
        account_id: &str,
        new: NewParticipant,
    ) -> Result<(Participant, String)> {
        if let Some(tag) = &new.tag {
            check_tag(tag)?;
        }
        if let Some(url) = &new.callback_url {
            check_callback_url(url)?;
        }
        let mut permissions = new
            .publish_permissions
            .unwrap_or_else(|| vec![PublishPermission::Audio, PublishPermission::Video]);
        permissions.sort();
        permissions.dedup();
        if let Some(m) = &new.media_stream {
            check_media_stream(m, &permissions)?;
        }
        let now = self.now();
        let p = Participant {
            id: Uuid::new_v4(),
            account_id: account_id.to_string(),
            callback_url: new.callback_url,
            publish_permissions: permissions,
            tag: new.tag,
            device_api_version: new.device_api_version.unwrap_or(DeviceApiVersion::V3),
            created_at: now,
            session_id: None,
            subscriptions: Subscriptions::default(),
            media_stream: new.media_stream,
        };
        let token = self
            .tokens
            .mint(account_id, p.id, p.device_api_version, now)?;
        let durable = {
            let mut st = self.lock();
            st.participants.insert(p.id, p.clone());
            self.store
                .commit(vec![StoreOp::InsertParticipant(p.clone())])
        };
        durable.await?;
        self.changed(account_id, ChangeKind::Participant, p.id, None);
        Ok((p, token))
    }

    pub fn get_participant(&self, account_id: &str, id: Uuid) -> Result<Participant> {
        let st = self.lock();
        participant(&st, account_id, id).cloned()
    }

    /// Delete a participant: its membership ends, others stop subscribing to it,
    /// its token stops being valid.
    pub async fn delete_participant(&self, account_id: &str, id: Uuid) -> Result<()> {
        let durable = {
            let mut st = self.lock();
            let p = participant(&st, account_id, id)?.clone();
            let mut unit = Vec::new();
            if let Some(sid) = p.session_id {
                leave_session(&mut st, sid, id, &mut unit);
            }
            forget_mentions(&mut st, account_id, id, &mut unit);
            st.participants.remove(&id);
            if let Some(sid) = p.session_id {
                self.notify_media(&st, sid);
            }
            // Its parked calls and devices end too.
            self.media.recheck(id);
            unit.push(StoreOp::DeleteParticipant(id));
            self.store.commit(unit)
        };
        self.end_dialogs_of(&[id], "the participant was deleted");
        durable.await?;
        self.changed(account_id, ChangeKind::Participant, id, None);
        Ok(())
    }

    /// Check a participant token: signature, expiry, and that the participant still exists.
    pub fn verify_token(&self, token: &str) -> Result<Participant> {
        let claims = self.tokens.verify(token, self.now())?;
        let st = self.lock();
        match st.participants.get(&claims.participant_id) {
            Some(p) if p.account_id == claims.account_id => Ok(p.clone()),
            _ => Err(TokenError::Invalid("participant no longer exists".into()).into()),
        }
    }

    // ---- sessions ----

    pub async fn create_session(&self, account_id: &str, tag: Option<String>) -> Result<Session> {
        if let Some(tag) = &tag {
            check_tag(tag)?;
        }
        let now = self.now();
        let s = Session {
            id: Uuid::new_v4(),
            account_id: account_id.to_string(),
            tag,
            created_at: now,
            expires_at: now.saturating_add(self.session_ttl_ms),
            members: Vec::new(),
        };
        let durable = {
            let mut st = self.lock();
            st.sessions.insert(s.id, s.clone());
            self.store.commit(vec![StoreOp::InsertSession(s.clone())])
        };
        durable.await?;
        self.changed(account_id, ChangeKind::Session, s.id, Some(s.id));
        Ok(s)
    }

    pub fn get_session(&self, account_id: &str, id: Uuid) -> Result<Session> {
        let st = self.lock();
        session(&st, account_id, id, self.now()).cloned()
    }

    /// Delete a session: every membership in it ends (participants remain).
    pub async fn delete_session(&self, account_id: &str, id: Uuid) -> Result<()> {
        let members;
        let durable = {
            let mut st = self.lock();
            members = session(&st, account_id, id, self.now())?.members.clone();
            end_session(&mut st, id);
            self.media.end(id, HangupReason::SessionEnded);
            self.store.commit(vec![StoreOp::DeleteSession(id)])
        };
        self.end_dialogs_of(&members, "the session was deleted");
        durable.await?;
        self.changed(account_id, ChangeKind::Session, id, Some(id));
        Ok(())
    }

    /// Delete every session whose lifetime is over; returns how many.
    pub async fn expire_sessions(&self) -> Result<usize> {
        let now = self.now();
        let durable = {
            let mut st = self.lock();
            let expired: Vec<Uuid> = st
                .sessions
                .values()
                .filter(|s| s.expires_at <= now)
                .map(|s| s.id)
                .collect();
            if expired.is_empty() {
                return Ok(0);
            }
            for id in &expired {
                if let Some(s) = st.sessions.get(id) {
                    self.changed(&s.account_id, ChangeKind::Session, *id, Some(*id));
                }
                end_session(&mut st, *id);
                self.media.end(*id, HangupReason::SessionEnded);
            }
            let n = expired.len();
            (
                n,
                self.store
                    .commit(expired.into_iter().map(StoreOp::DeleteSession).collect()),
            )
        };
        durable.1.await?;
        tracing::info!(sessions = durable.0, "expired sessions deleted");
        Ok(durable.0)
    }

    /// The session's participants in the order they joined.
    pub fn list_session_participants(
        &self,
        account_id: &str,
        id: Uuid,
    ) -> Result<Vec<Participant>> {
        let st = self.lock();
        let s = session(&st, account_id, id, self.now())?;
        Ok(s.members
            .iter()
            .filter_map(|p| st.participants.get(p).cloned())
            .collect())
    }
}
