//! How often one participant's devices may connect: each connection is an `onConnect`
//! and an `onDisconnect` stored and delivered to the application, so a client that
//! reconnects in a loop (a bug, or a token in hostile hands) would flood the store and
//! the application's webhook receiver. A token bucket per participant: a burst of
//! [`BURST`], then one connection every [`REFILL`]; beyond it the socket is closed
//! (4429) and counted (`patchbay_device_connects_refused_total`). The map is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Connections one participant may make at once.
pub const BURST: f64 = 30.0;
/// Then one more per this long.
pub const REFILL: Duration = Duration::from_secs(2);
/// Participants remembered at most (full buckets are forgotten first).
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct Churn {
    buckets: Mutex<HashMap<Uuid, (f64, Instant)>>,
}

impl Churn {
    /// Whether `participant` may connect a device now (taking one token).
    pub fn admit(&self, participant: Uuid, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&participant) {
            buckets.retain(|_, (tokens, at)| refilled(*tokens, *at, now) < BURST);
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(participant).or_insert((BURST, now));
        let available = refilled(*tokens, *at, now);
        *at = now;
        if available >= 1.0 {
            *tokens = available - 1.0;
            true
        } else {
            *tokens = available;
            false
        }
    }
}

fn refilled(tokens: f64, at: Instant, now: Instant) -> f64 {
    let gained = now.saturating_duration_since(at).as_secs_f64() / REFILL.as_secs_f64();
    (tokens + gained).min(BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill() {
        let c = Churn::default();
        let (p, q, t0) = (Uuid::new_v4(), Uuid::new_v4(), Instant::now());
        for i in 0..BURST as usize {
            assert!(c.admit(p, t0), "connection {i}");
        }
        assert!(!c.admit(p, t0));
        // Another participant is not affected.
        assert!(c.admit(q, t0));
        assert!(!c.admit(p, t0 + REFILL / 2));
        assert!(c.admit(p, t0 + REFILL + REFILL / 2));
        assert!(!c.admit(p, t0 + REFILL + REFILL / 2));
        // A quiet participant gets its burst back.
        let later = t0 + REFILL * (BURST as u32 + 5);
        for _ in 0..BURST as usize {
            assert!(c.admit(p, later));
        }
    }
}
