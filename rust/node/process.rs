//! The view a local process has of itself: its pid, its mailbox, and the
//! signals it can send. Each process is one tokio task; see [`super::Node::spawn`].

use crate::backlog::Backlog;
use super::Node;
use crate::etf::{self, a, tuple};
use eetf::{Pid, Reference, Term};
use std::sync::Arc;
use std::task::Poll;
use super::mailbox;

/// A local process: what its task owns.
pub struct Process {
    pid: Pid,
    node: Arc<Node>,
    mailbox: mailbox::Receiver,
    /// Counts what is in the mailbox (see [`super::backlog`]).
    backlog: Arc<Backlog>,
}

/// A gen_server call received by a process: reply with [`Process::reply`].
pub struct Call {
    pub from: Pid,
    pub tag: Term,
    pub request: Term,
}

/// What a process finds in its mailbox, classified.
pub enum Received {
    Call(Call),
    Cast(Term),
    Other(Term),
}

impl Process {
    pub(crate) fn new(pid: Pid, node: Arc<Node>, mailbox: mailbox::Receiver, backlog: Arc<Backlog>) -> Self {
        Process { pid, node, mailbox, backlog }
    }

    /// This process's pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The node this process runs on.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The next message. Never ends: a process is ended by the node, not by
    /// its mailbox. Cancel-safe. (A poll function, not an `async fn`: a
    /// port's loop holds this future all along, and an `async fn` keeps
    /// room in it for the message it matches.)
    pub fn recv(&mut self) -> impl std::future::Future<Output = Term> + '_ {
        std::future::poll_fn(move |cx| match self.mailbox.poll_recv(cx) {
            Poll::Ready(Some(msg)) => {
                self.backlog.take(1);
                Poll::Ready(msg)
            }
            // The node dropped the entry: this task is about to be aborted.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        })
    }

    /// The next message, sorted into gen_server calls, casts and the rest.
    pub async fn recv_classified(&mut self) -> Received {
        classify(self.recv().await)
    }

    /// Sends `msg` to `to`, local or remote. Sends to dead pids are dropped, as in Erlang.
    pub fn send(&self, to: &Pid, msg: Term) {
        self.node.send(Some(&self.pid), to, msg);
    }

    /// Answers a gen_server call.
    pub fn reply(&self, call: &Call, reply: Term) {
        self.send(&call.from, tuple(vec![call.tag.clone(), reply]));
    }

    /// Links this process to `other` (local or remote).
    pub fn link(&self, other: &Pid) {
        self.node.link(&self.pid, other);
    }

    /// Sends `to` an exit signal, as `exit(To, Reason)`, and goes on.
    pub fn exit_signal(&self, to: &Pid, reason: Term) {
        self.node.exit_signal(&self.pid, to, reason);
    }

    /// Removes the link to `other`, if any.
    pub fn unlink(&self, other: &Pid) {
        self.node.unlink(&self.pid, other);
    }

    /// Monitors `target`; a `{'DOWN', Ref, process, Target, Reason}` arrives when it goes.
    pub fn monitor(&self, target: &Pid) -> Reference {
        self.node.monitor(&self.pid, target)
    }

    /// Turns exit signals into `{'EXIT', From, Reason}` messages (all but `kill`).
    pub fn trap_exit(&self, on: bool) {
        self.node.set_trap_exit(&self.pid, on);
    }

    /// Sends `msg` to `to` once this process has exited and its exit signals are out.
    pub fn after_exit(&self, to: &Pid, msg: Term) {
        self.node.set_last_words(&self.pid, to.clone(), msg);
    }

    /// Registers this process under `name`. False if the name is taken.
    pub fn register(&self, name: &str) -> bool {
        self.node.register(name, &self.pid)
    }
}

/// Sorts a message into call, cast or other, as gen_server does.
pub fn classify(mut msg: Term) -> Received {
    // The request (or cast) is moved out, never copied: it may be large.
    if let Term::Tuple(t) = &mut msg {
        match t.elements.as_mut_slice() {
            [kind, Term::Tuple(from), request] if etf::as_atom(kind) == Some("$gen_call") => {
                if let [Term::Pid(from), tag] = from.elements.as_mut_slice() {
                    return Received::Call(Call { from: from.clone(), tag: etf::take(tag), request: etf::take(request) });
                }
            }
            [kind, request] if etf::as_atom(kind) == Some("$gen_cast") => return Received::Cast(etf::take(request)),
            _ => {}
        }
    }
    Received::Other(msg)
}

/// `{error, Reason}`.
pub fn error(reason: Term) -> Term {
    tuple(vec![a("error"), reason])
}
