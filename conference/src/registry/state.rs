//! The control plane's state in memory and the rules its changes follow: loading it,
//! looking objects up for an account, membership changes, and what a request may set.

use super::*;

/// Memory from stored rows (participants and sessions without members, memberships
/// in joining order).
pub(super) fn fill(
    state: &mut State,
    sessions: Vec<Session>,
    participants: Vec<Participant>,
    memberships: Vec<Membership>,
) {
    for s in sessions {
        state.sessions.insert(s.id, s);
    }
    for p in participants {
        state.participants.insert(p.id, p);
    }
    for m in memberships {
        state.next_seq = state.next_seq.max(m.joined_seq + 1);
        let (Some(p), Some(s)) = (
            state.participants.get_mut(&m.participant_id),
            state.sessions.get_mut(&m.session_id),
        ) else {
            continue;
        };
        p.session_id = Some(s.id);
        p.subscriptions = m.subscriptions;
        s.members.push(p.id);
    }
}

/// A session's members and their subscriptions, for its media actor.
pub(super) fn snapshot(st: &State, session_id: Uuid) -> SessionSnapshot {
    SessionSnapshot {
        members: st
            .sessions
            .get(&session_id)
            .map(|s| {
                s.members
                    .iter()
                    .filter_map(|m| st.participants.get(m))
                    .map(|p| (p.id, p.subscriptions.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

pub(super) fn participant<'a>(
    st: &'a State,
    account_id: &str,
    id: Uuid,
) -> Result<&'a Participant> {
    st.participants
        .get(&id)
        .filter(|p| p.account_id == account_id)
        .ok_or_else(|| not_found("participant", id))
}

pub(super) fn session<'a>(
    st: &'a State,
    account_id: &str,
    id: Uuid,
    now: UnixMillis,
) -> Result<&'a Session> {
    st.sessions
        .get(&id)
        .filter(|s| s.account_id == account_id && s.expires_at > now)
        .ok_or_else(|| not_found("session", id))
}

/// The participant, when it is a member of the (live) session.
pub(super) fn member<'a>(
    st: &'a State,
    account_id: &str,
    session_id: Uuid,
    participant_id: Uuid,
    now: UnixMillis,
) -> Result<&'a Participant> {
    session(st, account_id, session_id, now)?;
    let p = participant(st, account_id, participant_id)?;
    if p.session_id != Some(session_id) {
        return Err(ConferenceError::NotFound(format!(
            "participant {participant_id} is not in session {session_id}"
        )));
    }
    Ok(p)
}

/// End `participant_id`'s membership of `session_id` in memory, pushing the store ops.
/// Its own subscriptions go (Bandwidth: removal "will automatically remove any
/// subscriptions the participant has associated with this session"); other members'
/// subscriptions that name it stay, and apply again if it comes back.
pub(super) fn leave_session(
    st: &mut State,
    session_id: Uuid,
    participant_id: Uuid,
    unit: &mut Vec<StoreOp>,
) {
    if let Some(s) = st.sessions.get_mut(&session_id) {
        s.members.retain(|m| *m != participant_id);
    }
    if let Some(p) = st.participants.get_mut(&participant_id) {
        p.session_id = None;
        p.subscriptions = Subscriptions::default();
    }
    unit.push(StoreOp::DeleteMembership(participant_id));
}

/// A participant is deleted: every subscription of the account that names it goes (it
/// can never join again).
pub(super) fn forget_mentions(
    st: &mut State,
    account_id: &str,
    participant_id: Uuid,
    unit: &mut Vec<StoreOp>,
) {
    for p in st.participants.values_mut() {
        if p.account_id != account_id || p.session_id.is_none() {
            continue;
        }
        let Some(list) = p.subscriptions.participants.as_mut() else {
            continue;
        };
        let before = list.len();
        list.retain(|ps| ps.participant_id != participant_id);
        if list.len() != before {
            unit.push(StoreOp::SetSubscriptions {
                participant_id: p.id,
                subscriptions: p.subscriptions.clone(),
            });
        }
    }
}

/// Remove a session from memory, ending every membership in it.
pub(super) fn end_session(st: &mut State, session_id: Uuid) {
    if let Some(s) = st.sessions.remove(&session_id) {
        for m in s.members {
            if let Some(p) = st.participants.get_mut(&m) {
                p.session_id = None;
                p.subscriptions = Subscriptions::default();
            }
        }
    }
}

pub(super) fn check_tag(tag: &str) -> Result<()> {
    let n = tag.chars().count();
    if n > MAX_TAG_CHARS {
        return Err(ConferenceError::Invalid(format!(
            "tag is {n} characters; the limit is {MAX_TAG_CHARS}"
        )));
    }
    Ok(())
}

pub(super) fn check_callback_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r)
            if !r.is_empty() && !r.starts_with('/') && !url.chars().any(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(ConferenceError::Invalid(format!(
            "callbackUrl `{url}` must be an absolute http:// or https:// URL"
        ))),
    }
}

/// Subscriptions may name the session itself and any participant of the account: one
/// that is not a member (yet) is heard once it joins (the courtroom sample subscribes
/// members to a participant while adding it, concurrently).
pub(super) fn check_subscriptions(st: &State, s: &Session, subs: &Subscriptions) -> Result<()> {
    if let Some(sid) = subs.session_id {
        if sid != s.id {
            return Err(ConferenceError::Invalid(format!(
                "subscriptions.sessionId {sid} is not the session {} of the request path",
                s.id
            )));
        }
    }
    for ps in subs.participants.iter().flatten() {
        let exists = st
            .participants
            .get(&ps.participant_id)
            .is_some_and(|p| p.account_id == s.account_id);
        if !exists {
            return Err(ConferenceError::Invalid(format!(
                "subscriptions name participant {} which does not exist",
                ps.participant_id
            )));
        }
        if ps.stream_aliases.iter().flatten().any(|a| a.is_empty()) {
            return Err(ConferenceError::Invalid(
                "streamAliases must not contain empty strings".into(),
            ));
        }
    }
    Ok(())
}
