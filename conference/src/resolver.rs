//! The subscription resolver: which published streams does a participant receive right now.
//!
//! Pure functions of the session's membership, each member's subscriptions and
//! the streams currently published. Both media planes (the SFU's forwarding
//! sets and the SIP mixer's listener sets) are computed from it.
//!
//! Rules (Bandwidth WebRTC semantics):
//! - participant level: a non-empty `participants` list names exactly whose
//!   streams are received; it overrides `sessionId`;
//! - stream-alias level: a `streamAliases` list (non-empty) narrows one
//!   participant subscription to the streams published with those aliases;
//! - session level: `sessionId` alone (equal to the session) receives every
//!   other member's streams, current and future;
//! - nobody ever receives their own streams, and only members' streams count.

use uuid::Uuid;

use crate::model::Subscriptions;

/// A published stream as the resolver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRef<'a> {
    /// The publishing participant.
    pub participant_id: Uuid,
    /// The alias it was published with, if any.
    pub alias: Option<&'a str>,
}

/// Whether `subscriber`, with `subs` in session `session_id`, receives `stream`.
///
/// `is_member` tells whether a participant is currently in the session.
pub fn receives(
    subscriber: Uuid,
    subs: &Subscriptions,
    session_id: Uuid,
    stream: &StreamRef<'_>,
    is_member: impl Fn(Uuid) -> bool,
) -> bool {
    if stream.participant_id == subscriber || !is_member(stream.participant_id) {
        return false;
    }
    if let Some(list) = subs.participant_level() {
        return list.iter().any(|ps| {
            ps.participant_id == stream.participant_id
                && match ps.stream_aliases.as_deref() {
                    None | Some([]) => true,
                    Some(aliases) => stream
                        .alias
                        .is_some_and(|a| aliases.iter().any(|want| want == a)),
                }
        });
    }
    subs.session_id == Some(session_id)
}

/// The indices into `streams` that `subscriber` receives, in order.
pub fn resolve(
    subscriber: Uuid,
    subs: &Subscriptions,
    session_id: Uuid,
    members: &[Uuid],
    streams: &[StreamRef<'_>],
) -> Vec<usize> {
    streams
        .iter()
        .enumerate()
        .filter(|(_, s)| receives(subscriber, subs, session_id, s, |p| members.contains(&p)))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParticipantSubscription;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    const SESSION: u128 = 100;

    fn streams() -> Vec<StreamRef<'static>> {
        vec![
            StreamRef {
                participant_id: id(1),
                alias: Some("microphone"),
            },
            StreamRef {
                participant_id: id(1),
                alias: Some("screenShare"),
            },
            StreamRef {
                participant_id: id(2),
                alias: None,
            },
            StreamRef {
                participant_id: id(3),
                alias: Some("phone"),
            },
            // Not a member of the session: never received.
            StreamRef {
                participant_id: id(9),
                alias: None,
            },
        ]
    }

    fn members() -> Vec<Uuid> {
        vec![id(1), id(2), id(3), id(4)]
    }

    fn session_level() -> Subscriptions {
        Subscriptions {
            session_id: Some(id(SESSION)),
            participants: None,
        }
    }

    fn to(list: Vec<(u128, Option<Vec<&str>>)>) -> Subscriptions {
        Subscriptions {
            session_id: Some(id(SESSION)),
            participants: Some(
                list.into_iter()
                    .map(|(p, a)| ParticipantSubscription {
                        participant_id: id(p),
                        stream_aliases: a.map(|v| v.into_iter().map(String::from).collect()),
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn session_level_receives_every_other_member() {
        let got = resolve(id(4), &session_level(), id(SESSION), &members(), &streams());
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[test]
    fn session_level_excludes_self() {
        let got = resolve(id(1), &session_level(), id(SESSION), &members(), &streams());
        assert_eq!(got, vec![2, 3]);
    }

    #[test]
    fn session_level_for_another_session_receives_nothing() {
        let subs = Subscriptions {
            session_id: Some(id(999)),
            participants: None,
        };
        assert!(resolve(id(4), &subs, id(SESSION), &members(), &streams()).is_empty());
    }

    #[test]
    fn empty_subscriptions_receive_nothing() {
        assert!(resolve(
            id(4),
            &Subscriptions::default(),
            id(SESSION),
            &members(),
            &streams()
        )
        .is_empty());
    }

    #[test]
    fn participant_level_overrides_session_level() {
        // sessionId is present too, but the non-empty list wins: only participant 2.
        let got = resolve(
            id(4),
            &to(vec![(2, None)]),
            id(SESSION),
            &members(),
            &streams(),
        );
        assert_eq!(got, vec![2]);
    }

    #[test]
    fn empty_participant_list_falls_back_to_session_level() {
        let subs = Subscriptions {
            session_id: Some(id(SESSION)),
            participants: Some(vec![]),
        };
        let got = resolve(id(4), &subs, id(SESSION), &members(), &streams());
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[test]
    fn alias_level_narrows_to_named_streams() {
        let got = resolve(
            id(4),
            &to(vec![(1, Some(vec!["screenShare"])), (3, None)]),
            id(SESSION),
            &members(),
            &streams(),
        );
        assert_eq!(got, vec![1, 3]);
    }

    #[test]
    fn alias_level_never_matches_unaliased_streams() {
        let got = resolve(
            id(4),
            &to(vec![(2, Some(vec!["camera"]))]),
            id(SESSION),
            &members(),
            &streams(),
        );
        assert!(got.is_empty());
    }

    #[test]
    fn empty_alias_list_means_every_stream() {
        let got = resolve(
            id(4),
            &to(vec![(1, Some(vec![]))]),
            id(SESSION),
            &members(),
            &streams(),
        );
        assert_eq!(got, vec![0, 1]);
    }

    #[test]
    fn participant_level_naming_self_still_excludes_self() {
        let got = resolve(
            id(1),
            &to(vec![(1, None), (2, None)]),
            id(SESSION),
            &members(),
            &streams(),
        );
        assert_eq!(got, vec![2]);
    }

    #[test]
    fn non_members_are_never_received() {
        let got = resolve(
            id(4),
            &to(vec![(9, None)]),
            id(SESSION),
            &members(),
            &streams(),
        );
        assert!(got.is_empty());
    }

    #[test]
    fn whisper_coach_barge() {
        // Agent 1, customer 2 (phone), supervisor 3.
        let streams = vec![
            StreamRef {
                participant_id: id(1),
                alias: None,
            },
            StreamRef {
                participant_id: id(2),
                alias: Some("phone"),
            },
            StreamRef {
                participant_id: id(3),
                alias: None,
            },
        ];
        let m = vec![id(1), id(2), id(3)];
        let s = id(SESSION);
        // Coach: supervisor hears both; agent hears customer + supervisor; customer hears only agent.
        assert_eq!(
            resolve(id(3), &session_level(), s, &m, &streams),
            vec![0, 1]
        );
        assert_eq!(
            resolve(id(1), &session_level(), s, &m, &streams),
            vec![1, 2]
        );
        assert_eq!(
            resolve(id(2), &to(vec![(1, None)]), s, &m, &streams),
            vec![0]
        );
        // Barge: customer now hears the supervisor too.
        assert_eq!(
            resolve(id(2), &session_level(), s, &m, &streams),
            vec![0, 2]
        );
    }
}
