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
use tokio::net::unix::pipe;

/// Bytes queued from which the port is busy.
pub const STDIN_BUSY: usize = 256 * 1024;
/// Below this many, it is not busy again.
pub const STDIN_NOT_BUSY: usize = 128 * 1024;
/// What a caller may send without waiting for an answer, once answered.
pub const CREDIT: usize = 64 * 1024;

/// The largest number of queued chunks given to one `writev`.
const IOV: usize = 64;

pub struct Stdin {
    pipe: Option<pipe::Sender>,
    queue: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    offset: usize,
    queued: usize,
    /// Close the pipe once the queue is written.
    closing: bool,
    /// Flow-controlled commands waiting for the port not to be busy.
    waiting: Vec<Call>,
}

impl Stdin {
    pub fn new(pipe: Option<pipe::Sender>) -> Stdin {
        Stdin { pipe, queue: VecDeque::new(), offset: 0, queued: 0, closing: false, waiting: Vec::new() }
    }

    /// Queues bytes for the program; dropped if its stdin is closed.
    pub fn queue(&mut self, bytes: Vec<u8>) {
        if self.pipe.is_some() && !self.closing && !bytes.is_empty() {
            self.queued += bytes.len();
            self.queue.push_back(bytes);
        }
    }

    /// True from the high-water mark on.
    pub fn busy(&self) -> bool {
        self.queued >= STDIN_BUSY
    }

    /// Something to write, or a close to carry out.
    pub fn has_work(&self) -> bool {
        self.pipe.is_some() && (!self.queue.is_empty() || self.closing)
    }

    /// Closes stdin once what is queued has been written.
    pub fn close(&mut self) {
        self.closing = true;
        if self.queue.is_empty() {
            self.pipe = None;
        }
    }

    /// The call to answer now if the port is not busy; otherwise it waits
    /// and is answered by [`Stdin::wrote`] once the port drains.
    pub fn answer_when_not_busy(&mut self, call: Call) -> Option<Call> {
        if self.busy() {
            self.waiting.push(call);
            None
        } else {
            Some(call)
        }
    }

    /// Writes what the pipe takes now. Cancel-safe: it waits for the pipe
    /// to be writable, then writes without waiting.
    pub async fn write_some(&self) -> io::Result<usize> {
        let Some(pipe) = self.pipe.as_ref().filter(|_| !self.queue.is_empty()) else { return Ok(0) };
        loop {
            pipe.writable().await?;
            let slices: Vec<IoSlice<'_>> = self
                .queue
                .iter()
                .take(IOV)
                .enumerate()
                .map(|(i, chunk)| IoSlice::new(if i == 0 { &chunk[self.offset..] } else { chunk }))
                .collect();
            match pipe.try_write_vectored(&slices) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Takes the result of [`Stdin::write_some`] into account, and answers
    /// the waiting commands once the port is no longer busy.
    pub fn wrote(&mut self, written: io::Result<usize>, me: &Process) {
        match written {
            Ok(mut n) => {
                self.queued -= n.min(self.queued);
                while n > 0 {
                    let Some(front) = self.queue.front() else { break };
                    let left = front.len() - self.offset;
                    if n >= left {
                        n -= left;
                        self.offset = 0;
                        self.queue.pop_front();
                    } else {
                        self.offset += n;
                        n = 0;
                    }
                }
            }
            Err(_) => {
                // The program closed its stdin (or exited): what is queued
                // can never be taken.
                self.pipe = None;
                self.queue.clear();
                self.offset = 0;
                self.queued = 0;
            }
        }
        if self.closing && self.queue.is_empty() {
            self.pipe = None;
        }
        if self.queued < STDIN_NOT_BUSY {
            for call in self.waiting.drain(..) {
                me.reply(&call, credit_reply());
            }
        }
    }
}

/// The answer to a flow-controlled command: `{ok, Credit}`.
pub fn credit_reply() -> Term {
    tuple(vec![a("ok"), int(CREDIT as i64)])
}
