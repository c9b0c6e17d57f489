//! The recent callbacks of this node and how their delivery went (the console's
//! webhook log): bounded, in memory, newest last. The outbox keeps the truth; this is
//! what people look at.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use uuid::Uuid;

/// Callbacks remembered (all accounts together).
pub const LOG_ENTRIES: usize = 1000;

/// Where a callback is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Stored, waiting for its turn or its first attempt.
    Pending,
    /// An attempt failed; another comes at `nextAttemptMs`.
    Retrying,
    Delivered,
    /// Given up after the retry period.
    Failed,
}

/// One callback.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    #[serde(skip)]
    pub outbox_id: i64,
    pub event_id: Uuid,
    pub participant_id: Uuid,
    /// The body's `event` (`onConnect`, `onLeave`, …).
    pub event: String,
    /// Where it goes, without its query (which may carry the application's secrets).
    pub url: String,
    pub status: Delivery,
    /// Failed attempts so far.
    pub attempts: u32,
    pub next_attempt_ms: Option<u64>,
    /// Why the last attempt failed (`HTTP 500`, `timed out`, `could not connect`).
    pub last_error: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// The log.
#[derive(Debug, Default)]
pub struct WebhookLog {
    entries: Mutex<VecDeque<LogEntry>>,
}

/// What a failed attempt says, in words fit for anyone to read.
fn reason(why: &str) -> String {
    if why.starts_with("HTTP ") || why == "timed out" {
        why.chars().take(64).collect()
    } else {
        "could not connect".into()
    }
}

impl WebhookLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<LogEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A callback is stored and waits for delivery.
    pub fn stored(&self, w: &patchbay_conference::webhooks::Webhook, now_ms: u64) {
        let event = serde_json::from_str::<serde_json::Value>(&w.body)
            .ok()
            .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_default()
            .chars()
            .take(64)
            .collect();
        let url = w.url.split(['?', '#']).next().unwrap_or("").to_string();
        let mut log = self.lock();
        if log.len() >= LOG_ENTRIES {
            log.pop_front();
        }
        log.push_back(LogEntry {
            outbox_id: w.id,
            event_id: w.event_id,
            participant_id: w.participant_id,
            event,
            url,
            status: if w.attempts > 0 {
                Delivery::Retrying
            } else {
                Delivery::Pending
            },
            attempts: w.attempts,
            next_attempt_ms: (w.attempts > 0).then_some(w.next_ms),
            last_error: None,
            created_ms: w.created_ms,
            updated_ms: now_ms,
        });
    }

    fn update(&self, outbox_id: i64, f: impl FnOnce(&mut LogEntry)) {
        if let Some(e) = self
            .lock()
            .iter_mut()
            .rev()
            .find(|e| e.outbox_id == outbox_id)
        {
            f(e);
        }
    }

    pub fn delivered(&self, outbox_id: i64, now_ms: u64) {
        self.update(outbox_id, |e| {
            e.status = Delivery::Delivered;
            e.next_attempt_ms = None;
            e.updated_ms = now_ms;
        });
    }

    pub fn retrying(&self, outbox_id: i64, attempts: u32, next_ms: u64, why: &str, now_ms: u64) {
        self.update(outbox_id, |e| {
            e.status = Delivery::Retrying;
            e.attempts = attempts;
            e.next_attempt_ms = Some(next_ms);
            e.last_error = Some(reason(why));
            e.updated_ms = now_ms;
        });
    }

    pub fn failed(&self, outbox_id: i64, why: &str, now_ms: u64) {
        self.update(outbox_id, |e| {
            e.status = Delivery::Failed;
            e.attempts += 1;
            e.next_attempt_ms = None;
            e.last_error = Some(reason(why));
            e.updated_ms = now_ms;
        });
    }

    /// The participants' recent callbacks, newest first (at most `limit`).
    pub fn of(&self, participants: &[Uuid], limit: usize) -> Vec<LogEntry> {
        self.lock()
            .iter()
            .rev()
            .filter(|e| participants.contains(&e.participant_id))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_conference::webhooks::Webhook;

    fn hook(id: i64, participant: Uuid) -> Webhook {
        Webhook {
            id,
            event_id: Uuid::new_v4(),
            participant_id: participant,
            url: "https://app.example/cb?secret=x".into(),
            body: r#"{"event":"onConnect"}"#.into(),
            created_ms: 1,
            attempts: 0,
            next_ms: 0,
        }
    }

    #[test]
    fn a_callback_goes_from_pending_to_retrying_to_delivered_and_the_log_is_bounded() {
        let log = WebhookLog::default();
        let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
        log.stored(&hook(1, p), 10);
        log.stored(&hook(2, q), 10);
        let e = &log.of(&[p], 10)[0];
        assert_eq!(
            (e.status, e.event.as_str()),
            (Delivery::Pending, "onConnect")
        );
        assert_eq!(e.url, "https://app.example/cb", "the query is not shown");
        log.retrying(
            1,
            1,
            5000,
            "error sending request for url (http://10.0.0.1/)",
            20,
        );
        let e = &log.of(&[p], 10)[0];
        assert_eq!(e.status, Delivery::Retrying);
        assert_eq!(e.next_attempt_ms, Some(5000));
        assert_eq!(e.last_error.as_deref(), Some("could not connect"));
        log.delivered(1, 30);
        assert_eq!(log.of(&[p], 10)[0].status, Delivery::Delivered);
        assert_eq!(log.of(&[q], 10).len(), 1);
        for i in 0..LOG_ENTRIES as i64 + 5 {
            log.stored(&hook(100 + i, p), 40);
        }
        assert_eq!(log.of(&[p, q], usize::MAX).len(), LOG_ENTRIES);
    }
}
