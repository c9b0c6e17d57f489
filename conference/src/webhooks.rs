//! The webhook outbox's scheduling (sans-IO): which callbacks to attempt now, in
//! order per participant, and when to retry the ones that failed.
//!
//! Every callback is written to the store before its first attempt (see
//! [`crate::store::StoreOp::PutWebhook`]) and removed once delivered or given up;
//! the delivery itself (HTTP) is the caller's. Per participant only the oldest
//! pending callback is ever in flight, so a later event never overtakes an earlier
//! one; participants never wait for each other.

use std::collections::{BTreeSet, HashMap, VecDeque};

use uuid::Uuid;

/// One callback to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Position in the outbox (increasing: the delivery order per participant).
    pub id: i64,
    /// Stable across retries: receivers de-duplicate on it (it is in the body).
    pub event_id: Uuid,
    pub participant_id: Uuid,
    pub url: String,
    /// The JSON body.
    pub body: String,
    /// When it was enqueued, ms since the Unix epoch.
    pub created_ms: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time (ms since the Unix epoch).
    pub next_ms: u64,
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay after the first failure; doubles per failure.
    pub first_ms: u64,
    /// Longest delay between attempts.
    pub max_delay_ms: u64,
    /// Give up once a callback is this old.
    pub max_age_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_ms: 1_000,
            max_delay_ms: 10 * 60_000,
            // At least 24 h of retries.
            max_age_ms: 25 * 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1` after `attempts` failures, with up to ±20 %
    /// jitter from `jitter` (uniform in 0..1).
    pub fn delay_ms(&self, attempts: u32, jitter: f64) -> u64 {
        let base = self
            .first_ms
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(30))
            .min(self.max_delay_ms);
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        (base as f64 * factor) as u64
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at `next_ms` (persist the new attempt count).
    Retry { attempts: u32, next_ms: u64 },
    /// Too old: drop it (and go on with the participant's next one).
    GiveUp,
}

/// The outbox's state: pending callbacks per participant.
#[derive(Debug, Default)]
pub struct Outbox {
    queues: HashMap<Uuid, VecDeque<Webhook>>,
    /// Heads that wait for their time: (next_ms, id, participant).
    ready: BTreeSet<(u64, i64, Uuid)>,
    policy: RetryPolicy,
    len: usize,
}

impl Outbox {
    pub fn new(policy: RetryPolicy) -> Outbox {
        Outbox {
            policy,
            ..Outbox::default()
        }
    }

    /// Callbacks pending (queued or in flight).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add a callback (already in the store). Callbacks of one participant must be
    /// pushed in increasing `id` order.
    pub fn push(&mut self, w: Webhook) {
        let q = self.queues.entry(w.participant_id).or_default();
        if q.is_empty() {
            self.ready.insert((w.next_ms, w.id, w.participant_id));
        }
        q.push_back(w);
        self.len += 1;
    }

    /// Add a callback taken over from a stopped node: among the participant's pending
    /// ones by when it was enqueued (it may be older than this node's own; in a cluster
    /// those were held for it), never ahead of the one in flight.
    pub fn push_taken(&mut self, w: Webhook) {
        let p = w.participant_id;
        let q = self.queues.entry(p).or_default();
        // The head is in flight unless it waits in `ready`.
        let head_in_flight = q
            .front()
            .is_some_and(|h| !self.ready.contains(&(h.next_ms, h.id, p)));
        let first = usize::from(head_in_flight);
        let pos = q
            .iter()
            .enumerate()
            .skip(first)
            .find(|(_, x)| (x.created_ms, x.id) > (w.created_ms, w.id))
            .map_or(q.len(), |(i, _)| i);
        if pos == 0 {
            // The old head's entry goes stale (`due` skips it).
            self.ready.insert((w.next_ms, w.id, p));
        }
        q.insert(pos, w);
        self.len += 1;
    }

    /// The callbacks to attempt now (each the oldest of its participant); they are
    /// in flight until [`Self::delivered`] or [`Self::failed`].
    pub fn due(&mut self, now_ms: u64, out: &mut Vec<Webhook>) {
        while let Some(&(at, id, p)) = self.ready.first() {
            if at > now_ms {
                break;
            }
            self.ready.pop_first();
            // (An entry for a callback that is no longer the head is stale: skip it.)
            if let Some(w) = self
                .queues
                .get(&p)
                .and_then(|q| q.front())
                .filter(|w| w.id == id)
            {
                out.push(w.clone());
            }
        }
    }

    /// When the next callback becomes due (ms since the Unix epoch).
    pub fn next_due(&self) -> Option<u64> {
        self.ready.first().map(|(at, _, _)| *at)
    }

    /// When the in-flight callback `id` of `participant` was enqueued.
    pub fn created_ms(&self, participant: Uuid, id: i64) -> Option<u64> {
        self.queues
            .get(&participant)
            .and_then(|q| q.front())
            .filter(|w| w.id == id)
            .map(|w| w.created_ms)
    }

    /// The in-flight callback `id` of `participant` was delivered: its next one is due.
    pub fn delivered(&mut self, participant: Uuid, id: i64) {
        self.finish(participant, id);
    }

    /// The in-flight callback `id` failed at `now_ms`.
    pub fn failed(&mut self, participant: Uuid, id: i64, now_ms: u64, jitter: f64) -> AfterFailure {
        let policy = self.policy;
        let Some(w) = self
            .queues
            .get_mut(&participant)
            .and_then(|q| q.front_mut())
            .filter(|w| w.id == id)
        else {
            return AfterFailure::GiveUp;
        };
        if now_ms.saturating_sub(w.created_ms) >= policy.max_age_ms {
            self.finish(participant, id);
            return AfterFailure::GiveUp;
        }
        w.attempts += 1;
        w.next_ms = now_ms + policy.delay_ms(w.attempts, jitter);
        let (attempts, next_ms) = (w.attempts, w.next_ms);
        self.ready.insert((next_ms, id, participant));
        AfterFailure::Retry { attempts, next_ms }
    }

    /// The in-flight callback `id` of `participant` may not go yet (an older one of the
    /// participant waits elsewhere): due again at `next_ms`, not counted as an attempt.
    pub fn defer(&mut self, participant: Uuid, id: i64, next_ms: u64) {
        let head = self
            .queues
            .get_mut(&participant)
            .and_then(|q| q.front_mut())
            .filter(|w| w.id == id);
        if let Some(w) = head {
            w.next_ms = next_ms;
            self.ready.insert((next_ms, id, participant));
        }
    }

    fn finish(&mut self, participant: Uuid, id: i64) {
        let Some(q) = self.queues.get_mut(&participant) else {
            return;
        };
        if q.front().is_some_and(|w| w.id == id) {
            q.pop_front();
            self.len -= 1;
        }
        match q.front() {
            Some(next) => {
                self.ready.insert((next.next_ms, next.id, participant));
            }
            None => {
                self.queues.remove(&participant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_over_callback_goes_before_newer_ones_but_never_ahead_of_one_in_flight() {
        let p = Uuid::new_v4();
        let mut o = Outbox::new(RetryPolicy::default());
        o.push(hook(10, p, 5_000));
        o.push(hook(11, p, 6_000));
        // Waiting, not in flight: the older taken one goes first.
        o.push_taken(hook(20, p, 1_000));
        let mut due = Vec::new();
        o.due(10_000, &mut due);
        assert_eq!(due.iter().map(|w| w.id).collect::<Vec<_>>(), [20]);
        // In flight now: another taken one waits behind it, before the newer own ones.
        o.push_taken(hook(21, p, 2_000));
        o.delivered(p, 20);
        let mut order = Vec::new();
        while !o.is_empty() {
            let mut due = Vec::new();
            o.due(10_000, &mut due);
            for w in due {
                order.push(w.id);
                o.delivered(p, w.id);
            }
        }
        assert_eq!(order, [21, 10, 11]);
        // A deferred head is due again later, its attempts unchanged.
        o.push(hook(12, p, 7_000));
        let mut due = Vec::new();
        o.due(10_000, &mut due);
        o.defer(p, 12, 10_500);
        due.clear();
        o.due(10_400, &mut due);
        assert!(due.is_empty());
        o.due(10_500, &mut due);
        assert_eq!((due[0].id, due[0].attempts), (12, 0));
    }

    fn hook(id: i64, p: Uuid, created_ms: u64) -> Webhook {
        Webhook {
            id,
            event_id: Uuid::new_v4(),
            participant_id: p,
            url: "http://x/cb".into(),
            body: format!("{{\"n\":{id}}}"),
            created_ms,
            attempts: 0,
            next_ms: created_ms,
        }
    }

    #[test]
    fn one_in_flight_per_participant_in_order_and_others_do_not_wait() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut o = Outbox::new(RetryPolicy::default());
        o.push(hook(1, a, 0));
        o.push(hook(2, a, 0));
        o.push(hook(3, b, 0));
        let mut due = Vec::new();
        o.due(0, &mut due);
        let ids: Vec<i64> = due.iter().map(|w| w.id).collect();
        assert_eq!(ids, vec![1, 3]);
        // a's first fails: its second must not go before it.
        assert_eq!(
            o.failed(a, 1, 0, 0.5),
            AfterFailure::Retry {
                attempts: 1,
                next_ms: 1_000
            }
        );
        o.delivered(b, 3);
        due.clear();
        o.due(999, &mut due);
        assert!(due.is_empty());
        o.due(1_000, &mut due);
        assert_eq!(due[0].id, 1);
        o.delivered(a, 1);
        due.clear();
        o.due(1_000, &mut due);
        assert_eq!(due[0].id, 2);
        o.delivered(a, 2);
        assert!(o.is_empty());
        assert_eq!(o.next_due(), None);
    }

    #[test]
    fn backoff_doubles_is_capped_and_gives_up_after_the_max_age() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(1, 0.5), 1_000);
        assert_eq!(p.delay_ms(2, 0.5), 2_000);
        assert_eq!(p.delay_ms(5, 0.5), 16_000);
        assert_eq!(p.delay_ms(30, 0.5), 600_000);
        assert_eq!(p.delay_ms(1, 0.0), 800);
        assert_eq!(p.delay_ms(1, 1.0), 1_200);
        let a = Uuid::new_v4();
        let mut o = Outbox::new(p);
        o.push(hook(1, a, 0));
        o.push(hook(2, a, 0));
        let mut due = Vec::new();
        o.due(0, &mut due);
        // Retries go on for at least 24 h...
        let day = 24 * 3_600_000;
        assert!(matches!(
            o.failed(a, 1, day, 0.5),
            AfterFailure::Retry { .. }
        ));
        // ...and stop after the max age; the next one is then due.
        assert_eq!(o.failed(a, 1, p.max_age_ms, 0.5), AfterFailure::GiveUp);
        due.clear();
        o.due(p.max_age_ms, &mut due);
        assert_eq!(due[0].id, 2);
        assert_eq!(o.len(), 1);
    }
}
