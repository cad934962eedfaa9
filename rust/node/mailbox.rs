//! A process's mailbox: an unbounded queue with one reader, as small as it
//! can be while empty. tokio's unbounded channel allocates a block of 32
//! slots (about 2 KiB) for every channel up front; a node with thousands of
//! idle port processes pays that for each. This one is a `VecDeque` (no
//! allocation until the first message, and its room given back once it
//! is empty again) and the reader's waker, behind a lock that is never
//! contended (the node runs on one thread). Waiting is a poll function
//! that leaves its waker here, not a `Notify` waiter node in the reader's
//! future: every process's task holds that future while it waits.

use eetf::Term;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

struct Inner {
    state: Mutex<State>,
}

struct State {
    queue: VecDeque<Term>,
    /// The reader, waiting for a message.
    waker: Option<Waker>,
    /// The other side is gone: no more sends, or no more messages.
    closed: bool,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where messages are put (the node's end).
pub struct Sender(Arc<Inner>);

/// Where they are taken (the process's end).
pub struct Receiver(Arc<Inner>);

pub fn mailbox() -> (Sender, Receiver) {
    let inner = Arc::new(Inner { state: Mutex::new(State { queue: VecDeque::new(), waker: None, closed: false }) });
    (Sender(inner.clone()), Receiver(inner))
}

impl Sender {
    /// Queues `msg`; gives it back if the process's end is gone.
    pub fn send(&self, msg: Term) -> Result<(), Term> {
        let mut state = self.0.lock();
        if state.closed {
            return Err(msg);
        }
        state.queue.push_back(msg);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Receiver {
    /// The next message; `None` once the node's end is gone and nothing is
    /// left. Cancel-safe: a message is taken only when it is returned.
    #[cfg(test)]
    pub fn recv(&mut self) -> impl std::future::Future<Output = Option<Term>> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    /// [`Receiver::recv`] as a poll function.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Term>> {
        {
            let mut state = self.0.lock();
            if let Some(msg) = state.queue.pop_front() {
                // An idle process holds no room: most take one call now
                // and then (thousands of held ports), and a few kept slots
                // (a `Term` is 56 bytes) would cost each of them more than
                // its mailbox's own state.
                if state.queue.is_empty() {
                    state.queue = VecDeque::new();
                }
                return Poll::Ready(Some(msg));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            // Under the lock a sender takes it: no wake-up is lost.
            match &mut state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        state.queue.clear();
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
        assert_eq!(rx.0.lock().queue.capacity(), 0);
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
