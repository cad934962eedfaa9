//! A process's mailbox: an unbounded queue with one reader, as small as it
//! can be while empty. tokio's unbounded channel allocates a block of 32
//! slots (about 2 KiB) for every channel up front; a node with thousands of
//! idle port processes pays that for each. This one is a `VecDeque` (no
//! allocation until the first message, and its room given back once a
//! burst has drained) behind a lock that is never contended (the node runs
//! on one thread), and a `Notify`.

use eetf::Term;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Room kept after a burst has drained; more is given back.
const KEEP: usize = 8;

struct Inner {
    queue: Mutex<VecDeque<Term>>,
    arrived: Notify,
    /// The other side is gone: no more sends, or no more messages.
    closed: AtomicBool,
}

/// Where messages are put (the node's end).
pub struct Sender(Arc<Inner>);

/// Where they are taken (the process's end).
pub struct Receiver(Arc<Inner>);

pub fn mailbox() -> (Sender, Receiver) {
    let inner = Arc::new(Inner { queue: Mutex::new(VecDeque::new()), arrived: Notify::new(), closed: AtomicBool::new(false) });
    (Sender(inner.clone()), Receiver(inner))
}

impl Sender {
    /// Queues `msg`; gives it back if the process's end is gone.
    pub fn send(&self, msg: Term) -> Result<(), Term> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err(msg);
        }
        self.0.queue.lock().unwrap_or_else(|e| e.into_inner()).push_back(msg);
        self.0.arrived.notify_one();
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.arrived.notify_one();
    }
}

impl Receiver {
    /// The next message; `None` once the node's end is gone and nothing is
    /// left. Cancel-safe: a message is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<Term> {
        loop {
            {
                let mut queue = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(msg) = queue.pop_front() {
                    if queue.is_empty() && queue.capacity() > KEEP {
                        queue.shrink_to(KEEP);
                    }
                    return Some(msg);
                }
            }
            if self.0.closed.load(Ordering::Acquire) {
                return None;
            }
            // A send between the look and here leaves a permit: no wake-up is lost.
            self.0.arrived.notified().await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::int;

    #[tokio::test]
    async fn messages_come_in_order_and_the_room_is_given_back() {
        let (tx, mut rx) = mailbox();
        for i in 0..1000 {
            tx.send(int(i)).expect("open");
        }
        for i in 0..1000 {
            assert_eq!(rx.recv().await, Some(int(i)));
        }
        assert!(rx.0.queue.lock().expect("lock").capacity() <= KEEP);
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken_and_ends_when_the_node_end_goes() {
        let (tx, mut rx) = mailbox();
        let reader = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        tx.send(int(7)).expect("open");
        drop(tx);
        assert_eq!(reader.await.expect("reader"), (Some(int(7)), None));
    }

    #[test]
    fn a_send_to_a_gone_process_gives_the_message_back() {
        let (tx, rx) = mailbox();
        drop(rx);
        assert_eq!(tx.send(int(1)), Err(int(1)));
    }
}
