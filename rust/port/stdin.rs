//! What is queued for a program's stdin, written as the pipe takes it.
//!
//! The queue is the port's "busy" state: from [`STDIN_BUSY`] bytes on, a
//! flow-controlled `port_command` is answered only once the program has
//! taken enough that fewer than [`STDIN_NOT_BUSY`] remain, as erts makes
//! `port_command` wait on a busy port. Each answer carries a credit: what
//! the caller may send without asking again (see `portnode:port_command/3`).

use crate::etf::{a, int, tuple};
use crate::node::process::{Call, Process};
use eetf::Term;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd};
use std::task::{Context, Poll};
use tokio::net::unix::pipe;

/// Bytes queued from which the port is busy.
pub const STDIN_BUSY: usize = 256 * 1024;
/// Below this many, it is not busy again.
pub const STDIN_NOT_BUSY: usize = 128 * 1024;
/// What a caller may send without waiting for an answer, once answered.
pub const CREDIT: usize = 64 * 1024;

/// The largest number of queued chunks given to one `writev`.
const IOV: usize = 64;

/// The pipe to the program. Most programs take what they are sent at once,
/// or are never sent anything: the pipe is written directly, and is known
/// to the runtime (a registration of a few hundred bytes) only once a
/// write finds it full.
enum Way {
    Direct(OwnedFd),
    Registered(pipe::Sender),
}

pub struct Stdin {
    pipe: Option<Way>,
    /// Close the pipe once the queue is written.
    closing: bool,
    /// What waits to be written, and who waits for the port not to be
    /// busy: boxed, and only while there is any (most programs take what
    /// they are sent at once, or are sent nothing).
    pending: Option<Box<Pending>>,
}

#[derive(Default)]
struct Pending {
    queue: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    offset: usize,
    queued: usize,
    /// Flow-controlled commands waiting for the port not to be busy.
    waiting: Vec<Call>,
}

impl Stdin {
    /// `pipe` must be non-blocking.
    pub fn new(pipe: Option<OwnedFd>) -> Stdin {
        Stdin { pipe: pipe.map(Way::Direct), closing: false, pending: None }
    }

    /// Queues bytes for the program; dropped if its stdin is closed.
    pub fn queue(&mut self, bytes: Vec<u8>) {
        if self.pipe.is_some() && !self.closing && !bytes.is_empty() {
            let pending = self.pending.get_or_insert_with(Default::default);
            pending.queued += bytes.len();
            pending.queue.push_back(bytes);
        }
    }

    fn queue_is_empty(&self) -> bool {
        self.pending.as_ref().is_none_or(|p| p.queue.is_empty())
    }

    /// True from the high-water mark on.
    pub fn busy(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.queued >= STDIN_BUSY)
    }

    /// Something to write, or a close to carry out.
    pub fn has_work(&self) -> bool {
        self.pipe.is_some() && (!self.queue_is_empty() || self.closing)
    }

    /// Closes stdin once what is queued has been written.
    pub fn close(&mut self) {
        self.closing = true;
        if self.queue_is_empty() {
            self.pipe = None;
        }
    }

    /// The call to answer now if the port is not busy; otherwise it waits
    /// and is answered by [`Stdin::wrote`] once the port drains.
    pub fn answer_when_not_busy(&mut self, call: Call) -> Option<Call> {
        match self.pending.as_mut() {
            Some(pending) if pending.queued >= STDIN_BUSY => {
                pending.waiting.push(call);
                None
            }
            _ => Some(call),
        }
    }

    /// Writes what the pipe takes now. Cancel-safe: it waits for the pipe
    /// to be writable, then writes without waiting. (A poll function, not
    /// an `async fn` awaiting `writable()`: the port loop holds this future
    /// all along, and a readiness future is a waiter node of its own.)
    pub fn write_some(&mut self) -> impl std::future::Future<Output = io::Result<usize>> + '_ {
        std::future::poll_fn(move |cx| self.poll_write_some(cx))
    }

    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(pending) = self.pending.as_deref().filter(|p| !p.queue.is_empty()) else { return Poll::Ready(Ok(0)) };
        loop {
            let slices: Vec<IoSlice<'_>> = pending
                .queue
                .iter()
                .take(IOV)
                .enumerate()
                .map(|(i, chunk)| IoSlice::new(if i == 0 { &chunk[pending.offset..] } else { chunk }))
                .collect();
            let written = match &self.pipe {
                None => return Poll::Ready(Ok(0)),
                Some(Way::Direct(fd)) => writev(fd, &slices),
                Some(Way::Registered(pipe)) => match pipe.poll_write_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => pipe.try_write_vectored(&slices),
                },
            };
            drop(slices);
            match written {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Full: from now on the runtime tells when it has room
                    // (a registered pipe's readiness is cleared: it waits).
                    if matches!(self.pipe, Some(Way::Direct(_))) {
                        if let Some(Way::Direct(fd)) = self.pipe.take() {
                            // Unchecked: a terminal's master is no pipe, and the fd
                            // is non-blocking already (see `Stdin::new`).
                            match pipe::Sender::from_owned_fd_unchecked(fd) {
                                Ok(sender) => self.pipe = Some(Way::Registered(sender)),
                                Err(e) => return Poll::Ready(Err(e)),
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return Poll::Ready(other),
            }
        }
    }

    /// Takes the result of [`Stdin::write_some`] into account, and answers
    /// the waiting commands once the port is no longer busy.
    pub fn wrote(&mut self, written: io::Result<usize>, me: &Process) {
        for call in self.account(written) {
            me.reply(&call, credit_reply());
        }
    }

    /// For a port that has closed: writes what is queued, as the pipe takes
    /// it, then closes the pipe, so that the program reads all it was sent
    /// and then EOF (as erts flushes a closing port's queue). Returns early
    /// if the program closes its stdin or exits. No one waits for credit
    /// any more: the callers that did have had the handle's exit.
    pub async fn drain(mut self) {
        if let Some(pending) = self.pending.as_mut() {
            pending.waiting.clear();
        }
        self.closing = true;
        while self.pipe.is_some() && !self.queue_is_empty() {
            let written = self.write_some().await;
            let _ = self.account(written);
        }
        self.pipe = None;
    }

    /// Input waits to be written.
    pub fn has_queued(&self) -> bool {
        !self.queue_is_empty()
    }

    /// Takes a write's result into account; returns the waiting commands
    /// to answer now that the port is no longer busy.
    fn account(&mut self, written: io::Result<usize>) -> Vec<Call> {
        let Some(pending) = self.pending.as_mut() else {
            if self.closing || written.is_err() {
                self.pipe = None;
            }
            return Vec::new();
        };
        match written {
            Ok(mut n) => {
                pending.queued -= n.min(pending.queued);
                while n > 0 {
                    let Some(front) = pending.queue.front() else { break };
                    let left = front.len() - pending.offset;
                    if n >= left {
                        n -= left;
                        pending.offset = 0;
                        pending.queue.pop_front();
                    } else {
                        pending.offset += n;
                        n = 0;
                    }
                }
            }
            Err(_) => {
                // The program closed its stdin (or exited): what is queued
                // can never be taken.
                self.pipe = None;
                pending.queue.clear();
                pending.offset = 0;
                pending.queued = 0;
            }
        }
        if self.closing && pending.queue.is_empty() {
            self.pipe = None;
        }
        let answer = if pending.queued < STDIN_NOT_BUSY { std::mem::take(&mut pending.waiting) } else { Vec::new() };
        if pending.queue.is_empty() && pending.waiting.is_empty() {
            self.pending = None;
        }
        answer
    }
}

/// One `writev` on a non-blocking fd.
fn writev(fd: &OwnedFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive the call.
    let n = unsafe { libc::writev(fd.as_raw_fd(), slices.as_ptr().cast(), slices.len() as libc::c_int) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// The answer to a flow-controlled command: `{ok, Credit}`.
pub fn credit_reply() -> Term {
    tuple(vec![a("ok"), int(CREDIT as i64)])
}
