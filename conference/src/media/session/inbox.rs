//! A device connection's input queue, with a doorbell.
//!
//! Each signaling connection sends its inputs on a queue of its own, which moves with
//! the device between session cores. Sending rings the bell of whichever core holds
//! the queue now; a core looks only at the queues that rang, so a wake-up costs the
//! same with two connections as with two hundred (polling every queue on every
//! wake-up made each datagram's wake-up pay for every connection of the session).
//!
//! No input is lost: the sender queues first and rings after; a core taking a queue
//! over points the queue at its own bell, then rings it itself when anything waits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use super::ids::ConnId;
use super::DeviceInput;

/// A core's bell: the connections whose queues rang, each listed once.
#[derive(Default)]
pub(super) struct Bell {
    rang: Mutex<VecDeque<ConnId>>,
    notify: Notify,
}

impl Bell {
    fn ring(&self, conn: ConnId) {
        self.rang
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(conn);
        self.notify.notify_one();
    }

    /// Wait until some queue rang (a ring before the wait counts).
    pub(super) async fn rung(&self) {
        self.notify.notified().await
    }

    /// Wake the core again if connections are still listed (it stopped at its batch).
    pub(super) fn again(&self) {
        if !self
            .rang
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            self.notify.notify_one();
        }
    }

    /// The next connection whose queue rang.
    pub(super) fn next(&self) -> Option<ConnId> {
        self.rang
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

/// Which bell a queue rings, and whether it is listed there already.
struct Slot {
    bell: Option<Arc<Bell>>,
    listed: bool,
}

/// Rings `bell` for `conn` unless the connection is listed already.
fn ring(slot: &Mutex<Slot>, conn: ConnId) {
    let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
    if s.listed {
        return;
    }
    if let Some(bell) = s.bell.clone() {
        s.listed = true;
        drop(s);
        bell.ring(conn);
    }
}

/// A bounded input queue for connection `conn`: the connection's sending half, and
/// the receiving half that goes to the core that has the device.
pub fn device_inbox(conn: ConnId, capacity: usize) -> (InboxSender, Inbox) {
    let (tx, rx) = mpsc::channel(capacity);
    let slot = Arc::new(Mutex::new(Slot {
        bell: None,
        listed: false,
    }));
    (
        InboxSender {
            tx: Some(tx),
            slot: slot.clone(),
            conn,
        },
        Inbox { rx, slot, conn },
    )
}

/// The connection's side: send an input, waiting while the queue is full (a client
/// that floods is paced, not dropped).
pub struct InboxSender {
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<DeviceInput>>,
    slot: Arc<Mutex<Slot>>,
    conn: ConnId,
}

impl InboxSender {
    /// False when no core will ever read it (the session ended).
    pub async fn send(&self, input: DeviceInput) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        if tx.send(input).await.is_err() {
            return false;
        }
        ring(&self.slot, self.conn);
        true
    }
}

impl Drop for InboxSender {
    /// The queue's end is an input too: the core sees it closed.
    fn drop(&mut self) {
        drop(self.tx.take());
        ring(&self.slot, self.conn);
    }
}

/// The core's side of a connection's queue.
pub struct Inbox {
    rx: mpsc::Receiver<DeviceInput>,
    slot: Arc<Mutex<Slot>>,
    conn: ConnId,
}

/// What a queue held when its core looked.
pub(super) enum Taken {
    Input(DeviceInput),
    Empty,
    /// The connection dropped its sender: nothing more comes.
    Closed,
}

impl Inbox {
    /// Ring `bell` from now on (a core taking the queue over); rings it at once when
    /// anything waits, so nothing sent before the move waits for another input.
    pub(super) fn attach(&mut self, bell: &Arc<Bell>) {
        {
            let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            s.bell = Some(bell.clone());
            s.listed = false;
        }
        if !self.rx.is_empty() || self.rx.is_closed() {
            ring(&self.slot, self.conn);
        }
    }

    /// Whether this queue rings `bell` (a ring can reach a core the queue left since).
    pub(super) fn rings(&self, bell: &Arc<Bell>) -> bool {
        let s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        s.bell.as_ref().is_some_and(|b| Arc::ptr_eq(b, bell))
    }

    /// Take one input after a ring; the queue is listed again if more waits.
    pub(super) fn take(&mut self) -> Taken {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).listed = false;
        let taken = match self.rx.try_recv() {
            Ok(input) => Taken::Input(input),
            Err(mpsc::error::TryRecvError::Empty) => Taken::Empty,
            Err(mpsc::error::TryRecvError::Disconnected) => return Taken::Closed,
        };
        if !self.rx.is_empty() || self.rx.is_closed() {
            ring(&self.slot, self.conn);
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(s: &str) -> DeviceInput {
        DeviceInput::Answer { sdp: s.into() }
    }

    fn sdp(t: Taken) -> Option<String> {
        match t {
            Taken::Input(DeviceInput::Answer { sdp }) => Some(sdp),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_queue_rings_once_however_much_waits_and_again_after_a_take() {
        let bell = Arc::new(Bell::default());
        let (tx, mut rx) = device_inbox(ConnId(7), 4);
        rx.attach(&bell);
        assert!(tx.send(answer("a")).await);
        assert!(tx.send(answer("b")).await);
        bell.rung().await;
        assert_eq!(bell.next(), Some(ConnId(7)));
        assert_eq!(bell.next(), None, "listed once");
        assert_eq!(sdp(rx.take()).as_deref(), Some("a"));
        // "b" still waits: listed again.
        assert_eq!(bell.next(), Some(ConnId(7)));
        assert_eq!(sdp(rx.take()).as_deref(), Some("b"));
        assert_eq!(bell.next(), None);
        drop(tx);
        assert_eq!(bell.next(), Some(ConnId(7)));
        assert!(matches!(rx.take(), Taken::Closed));
    }

    #[tokio::test]
    async fn what_waits_when_a_queue_moves_rings_the_new_core() {
        let (old, new) = (Arc::new(Bell::default()), Arc::new(Bell::default()));
        let (tx, mut rx) = device_inbox(ConnId(3), 4);
        rx.attach(&old);
        assert!(tx.send(answer("a")).await);
        // Moved before the old core looked: its ring there is stale.
        rx.attach(&new);
        assert!(!rx.rings(&old));
        assert_eq!(old.next(), Some(ConnId(3)));
        assert_eq!(new.next(), Some(ConnId(3)));
        assert_eq!(sdp(rx.take()).as_deref(), Some("a"));
        assert!(tx.send(answer("b")).await);
        assert_eq!(old.next(), None);
        assert_eq!(new.next(), Some(ConnId(3)));
        assert_eq!(sdp(rx.take()).as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn a_send_before_any_core_has_the_queue_rings_the_first() {
        let bell = Arc::new(Bell::default());
        let (tx, mut rx) = device_inbox(ConnId(1), 4);
        assert!(tx.send(answer("early")).await);
        rx.attach(&bell);
        assert_eq!(bell.next(), Some(ConnId(1)));
        assert_eq!(sdp(rx.take()).as_deref(), Some("early"));
        drop(rx);
        assert!(!tx.send(answer("late")).await, "no core will read it");
    }
}
