//! A backlog: what has been queued for a consumer and not yet taken, with
//! a high-water mark at which producers hold back and a wake-up when it
//! has drained to the low-water mark (the way erts marks a port busy and
//! not busy).
//!
//! A connection counts the bytes queued for its writer; a local process
//! counts the messages in its mailbox.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

pub struct Backlog {
    queued: AtomicUsize,
    high: usize,
    low: usize,
    drained: Notify,
}

impl Backlog {
    /// Busy from `high` queued, not busy again below `low`.
    pub fn new(high: usize, low: usize) -> Backlog {
        Backlog { queued: AtomicUsize::new(0), high, low: low.min(high), drained: Notify::new() }
    }

    /// `n` more are queued.
    pub fn add(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` have been taken; wakes the producers that wait once the backlog
    /// is below the low-water mark.
    pub fn take(&self, n: usize) {
        let before = self.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(n))).unwrap_or(0);
        let after = before.saturating_sub(n);
        if before >= self.low && after < self.low {
            self.drained.notify_waiters();
        }
    }

    /// How much is queued.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// False from the high-water mark on.
    pub fn has_room(&self) -> bool {
        self.queued() < self.high
    }

    /// How much more may be queued before the high-water mark.
    pub fn headroom(&self) -> usize {
        self.high.saturating_sub(self.queued())
    }

    /// False if `extra` more (not queued yet) would reach the high-water mark.
    pub fn has_room_for(&self, extra: usize) -> bool {
        self.queued().saturating_add(extra) < self.high
    }

    /// Returns once the backlog is below the low-water mark (at once if it is).
    pub async fn room(&self) {
        loop {
            let drained = self.drained.notified();
            if self.queued() < self.low {
                return;
            }
            drained.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn busy_at_high_water() {
        let b = Backlog::new(10, 5);
        b.add(9);
        assert!(b.has_room());
        b.add(1);
        assert!(!b.has_room());
        b.take(4);
        assert!(b.has_room());
    }

    #[tokio::test]
    async fn room_wakes_at_low_water_not_before() {
        let b = Arc::new(Backlog::new(10, 5));
        b.add(12);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.take(6); // 6 left: still at or above low water
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        b.take(2); // 4 left
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").unwrap();
    }
}
