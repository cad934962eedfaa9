//! What a port watches of its program when the settings ask it to: has it
//! said it is ready (`READY=1` on its notify socket, or a line of output
//! with the prefix), is it past its ready timeout, and is it past its
//! watchdog (no `WATCHDOG=1` for that long). The port acts on the events
//! (see `process::lifecycle`); this only keeps the state and the deadline.

use super::lifecycle::{Lifecycle, Ready};
use crate::notify::message::Notice;
use crate::notify::socket::{Datagram, NotifySocket};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tracing::warn;

/// What the port hears from [`Health::poll_event`].
#[derive(Debug)]
pub enum Event {
    /// A datagram on the notify socket, its sender not checked yet.
    Datagram(Datagram),
    /// Not ready within the ready timeout (which it names).
    ReadyTimeout(Duration),
    /// Ready (or started), and then no `WATCHDOG=1` for the watchdog's time.
    WatchdogTimeout,
}

/// What a notice changes, for the port to tell the owner or act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The program has just become ready.
    Ready,
    /// `STATUS=`, `STOPPING=1`, `ERRNO=`, `MAINPID=`: passed on as they are.
    Passed(Notice),
    /// `WATCHDOG=trigger`: as if its watchdog had expired.
    WatchdogTriggered,
}

/// One program's health, from its start until its port ends.
pub struct Health {
    socket: Option<NotifySocket>,
    /// How it says it is ready; `None` once it has (or if never asked).
    awaiting: Option<Ready>,
    ready_timeout: Option<Duration>,
    watchdog: Option<Duration>,
    /// The ready timeout while it is awaited, then the watchdog's.
    deadline: Option<Pin<Box<Sleep>>>,
    /// How far the current line of stdout and of stderr matches the prefix.
    lines: [LineMatch; 2],
}

/// Which output a line comes from.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Health {
    /// The health to watch for a program that has just started, or `None`
    /// if its settings ask for nothing.
    pub fn new(lifecycle: &Lifecycle, socket: Option<NotifySocket>) -> Option<Box<Health>> {
        if lifecycle.ready.is_none() && lifecycle.watchdog.is_none() {
            return None;
        }
        let mut health = Box::new(Health {
            socket,
            awaiting: lifecycle.ready.clone(),
            ready_timeout: lifecycle.ready_timeout,
            watchdog: lifecycle.watchdog,
            deadline: None,
            lines: [LineMatch::default(), LineMatch::default()],
        });
        let first = if health.awaiting.is_some() { health.ready_timeout } else { health.watchdog };
        health.set_deadline(first);
        Some(health)
    }

    /// Still to say it is ready.
    pub fn awaiting_ready(&self) -> bool {
        self.awaiting.is_some()
    }

    /// The next event. Cancel-safe: a datagram is only taken when it is returned.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Some(socket) = &self.socket {
            match socket.poll_recv(cx) {
                Poll::Ready(Ok(datagram)) => return Poll::Ready(Event::Datagram(datagram)),
                Poll::Ready(Err(e)) => {
                    warn!(error = %e, "notify socket failed; no more notices from this program");
                    self.socket = None;
                }
                Poll::Pending => {}
            }
        }
        let Some(deadline) = self.deadline.as_mut() else { return Poll::Pending };
        std::task::ready!(deadline.as_mut().poll(cx));
        self.deadline = None;
        Poll::Ready(match (&self.awaiting, self.ready_timeout) {
            (Some(_), Some(timeout)) => Event::ReadyTimeout(timeout),
            _ => Event::WatchdogTimeout,
        })
    }

    /// Takes what the program said (its sender checked): the changes to act on.
    pub fn note(&mut self, notice: Notice) -> Option<Change> {
        match notice {
            Notice::Ready if self.awaiting == Some(Ready::Notify) => Some(self.became_ready()),
            // Ready by a line, or ready already: nothing new.
            Notice::Ready => None,
            Notice::WatchdogKick => {
                if self.watchdog.is_some() && self.awaiting.is_none() {
                    self.set_deadline(self.watchdog);
                }
                None
            }
            Notice::WatchdogTrigger => Some(Change::WatchdogTriggered),
            other => Some(Change::Passed(other)),
        }
    }

    /// Looks at output just read: `Some(Change::Ready)` if it holds the
    /// line the program is to print when ready.
    /// It waits for a line of output: the port must see the bytes.
    pub fn reads_output(&self) -> bool {
        matches!(self.awaiting, Some(Ready::Line(_)))
    }

    pub fn saw_output(&mut self, stream: Stream, bytes: &[u8]) -> Option<Change> {
        let Some(Ready::Line(prefix)) = &self.awaiting else { return None };
        if self.lines[stream as usize].feed(prefix, bytes) {
            return Some(self.became_ready());
        }
        None
    }

    fn became_ready(&mut self) -> Change {
        self.awaiting = None;
        // From here on, the watchdog (if any) is what it must keep up with.
        self.set_deadline(self.watchdog);
        Change::Ready
    }

    fn set_deadline(&mut self, after: Option<Duration>) {
        let Some(after) = after else {
            self.deadline = None;
            return;
        };
        let at = Instant::now() + after;
        match self.deadline.as_mut() {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }
}

/// How far a line of output matches a prefix, across reads. The line
/// counts once it is whole (its newline read): a program that writes
/// `ready` and its newline apart has not finished saying it before then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineMatch {
    /// The current line has matched this many bytes of the prefix so far.
    Matching(usize),
    /// The current line starts with the prefix; its newline is to come.
    Matched,
    /// The current line does not start with the prefix.
    Other,
}

impl Default for LineMatch {
    fn default() -> LineMatch {
        LineMatch::Matching(0)
    }
}

impl LineMatch {
    /// Feeds bytes of output; true once a whole line started with `prefix`.
    fn feed(&mut self, prefix: &[u8], bytes: &[u8]) -> bool {
        for &b in bytes {
            *self = match (*self, b) {
                (LineMatch::Matched, b'\n') => return true,
                (LineMatch::Matched, _) => LineMatch::Matched,
                (_, b'\n') => LineMatch::Matching(0),
                (LineMatch::Matching(k), b) if prefix.get(k) == Some(&b) => {
                    if k + 1 == prefix.len() { LineMatch::Matched } else { LineMatch::Matching(k + 1) }
                }
                _ => LineMatch::Other,
            };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(prefix: &str, reads: &[&str]) -> bool {
        let mut m = LineMatch::default();
        reads.iter().any(|r| m.feed(prefix.as_bytes(), r.as_bytes()))
    }

    #[test]
    fn a_line_that_starts_with_the_prefix() {
        assert!(matches("ready", &["ready\n"]));
        assert!(matches("ready", &["starting\nre", "ady on 8000\n"]));
        assert!(matches("ready", &["rea", "d", "y", "\n"]));
        // Not before the line is whole.
        assert!(!matches("ready", &["rea", "d", "y"]));
        assert!(!matches("ready", &["ready on 8000"]));
        assert!(!matches("ready", &["not ready\n", "almost ready\n"]));
        assert!(!matches("ready", &["rea\ndy\n"]));
        assert!(!matches("ready", &["xready"]));
        assert!(matches("ready", &["xready\nready\n"]));
        assert!(matches("ok", &["\n\nok\n"]));
    }

    fn lifecycle(ready: Option<Ready>, ready_ms: u64, watchdog_ms: Option<u64>) -> Lifecycle {
        Lifecycle {
            ready,
            ready_timeout: Some(Duration::from_millis(ready_ms)),
            watchdog: watchdog_ms.map(Duration::from_millis),
            ..Lifecycle::default()
        }
    }

    async fn next(h: &mut Health) -> Event {
        std::future::poll_fn(|cx| h.poll_event(cx)).await
    }

    #[tokio::test]
    async fn ready_in_time_then_the_watchdog_runs() {
        let mut h = Health::new(&lifecycle(Some(Ready::Line(b"up".to_vec())), 10_000, Some(300)), None).unwrap();
        assert!(h.awaiting_ready());
        assert_eq!(h.note(Notice::Ready), None, "READY=1 is not the line asked for");
        assert_eq!(h.saw_output(Stream::Stderr, b"up and running"), None);
        assert_eq!(h.saw_output(Stream::Stderr, b"\n"), Some(Change::Ready));
        assert!(!h.awaiting_ready());
        // Kicked in time, it lives on; missed, the watchdog fires.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.note(Notice::WatchdogKick), None);
        let t0 = Instant::now();
        assert!(matches!(next(&mut h).await, Event::WatchdogTimeout));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(600), "{took:?}");
        assert_eq!(h.note(Notice::WatchdogTrigger), Some(Change::WatchdogTriggered));
    }

    #[tokio::test]
    async fn not_ready_in_time() {
        let mut h = Health::new(&lifecycle(Some(Ready::Notify), 500, Some(100)), None).unwrap();
        // The watchdog does not run before the program is ready.
        assert_eq!(h.note(Notice::WatchdogKick), None);
        let t0 = Instant::now();
        assert!(matches!(next(&mut h).await, Event::ReadyTimeout(d) if d == Duration::from_millis(500)));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(490) && took < Duration::from_millis(900), "{took:?}");
        assert_eq!(h.note(Notice::Status(b"x".to_vec())), Some(Change::Passed(Notice::Status(b"x".to_vec()))));
    }

    #[test]
    fn nothing_asked_nothing_watched() {
        assert!(Health::new(&Lifecycle::default(), None).is_none());
    }
}
