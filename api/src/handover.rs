//! A device (participant + `uniqueId`) that opens a second signaling socket while its
//! first is still open on our side.
//!
//! The SDK's `disconnect()` sends `leave` and closes, and a `connect()` right after
//! opens a new socket with the same `uniqueId` and new peer connections. Each socket
//! has its own task, so the new socket's join could reach the session before the old
//! socket's `leave`: the device would then look resumed (its old peer connections
//! kept) and the new client's offer could not be answered. So before a new socket
//! joins, the previous socket of the same device is asked to finish what it has
//! already received (a `leave` in flight is handled first), for at most
//! [`HANDOVER_WAIT`]. A socket that is really gone (a half-open connection after a
//! network change) says nothing, and the new one takes over as a resume.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patchbay_conference::media::session::{ConnId, DeviceKey};
use tokio::sync::{mpsc, oneshot};

/// How long a new socket waits for the previous one to finish.
pub const HANDOVER_WAIT: Duration = Duration::from_millis(300);
/// How long a socket asked to hand over keeps reading frames already on their way.
pub const DRAIN_WINDOW: Duration = Duration::from_millis(100);

/// A request to the previous socket: answer (or drop) the sender once done.
pub type Request = oneshot::Sender<()>;

type Open = HashMap<DeviceKey, (ConnId, mpsc::Sender<Request>)>;

/// Every device's open socket (bounded by the HTTP connection caps), owned by the
/// application that serves them.
#[derive(Clone, Default)]
pub struct Handovers(Arc<Mutex<Open>>);

impl Handovers {
    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Become `key`'s open socket; first let the previous one finish what it received.
    pub async fn take_over(&self, key: &DeviceKey, conn: ConnId) -> Registration {
        let (tx, requests) = mpsc::channel(1);
        let previous = self.open().insert(key.clone(), (conn, tx));
        if let Some((_, previous)) = previous {
            let (done, finished) = oneshot::channel();
            if previous.try_send(done).is_ok() {
                let _ = tokio::time::timeout(HANDOVER_WAIT, finished).await;
            }
        }
        Registration {
            handovers: self.clone(),
            key: key.clone(),
            conn,
            requests,
        }
    }
}

/// This socket's place as its device's open socket; removed when dropped.
pub struct Registration {
    handovers: Handovers,
    key: DeviceKey,
    conn: ConnId,
    /// Requests from a newer socket of the same device.
    pub requests: mpsc::Receiver<Request>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.handovers.open();
        if open.get(&self.key).is_some_and(|(c, _)| *c == self.conn) {
            open.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_socket_waits_for_the_previous_one_and_the_map_empties() {
        let handovers = Handovers::default();
        let key = DeviceKey::new(uuid::Uuid::new_v4(), "d");
        let mut first = handovers.take_over(&key, ConnId(1)).await;
        let start = tokio::time::Instant::now();
        let answer = tokio::spawn(async move {
            let done = first.requests.recv().await.expect("a request");
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(done); // finished (dropping answers too)
            first
        });
        let second = handovers.take_over(&key, ConnId(2)).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < HANDOVER_WAIT,
            "{waited:?}"
        );
        drop(answer.await.expect("first"));
        assert!(
            handovers.open().contains_key(&key),
            "the newer socket stays registered"
        );
        drop(second);
        assert!(!handovers.open().contains_key(&key));
    }

    #[tokio::test]
    async fn a_silent_previous_socket_costs_at_most_the_wait() {
        let handovers = Handovers::default();
        let key = DeviceKey::new(uuid::Uuid::new_v4(), "d");
        let _first = handovers.take_over(&key, ConnId(1)).await;
        let start = tokio::time::Instant::now();
        let _second = handovers.take_over(&key, ConnId(2)).await;
        assert!(start.elapsed() <= HANDOVER_WAIT + Duration::from_millis(100));
    }
}
