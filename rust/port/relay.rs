//! Batched delivery to a remote owner, through its relay: a small process
//! in the owner's VM (`src/portnode_relay.erl`) that turns one
//! distribution message with the frames of a whole read back into the
//! port messages an erts port sends, one local send each.
//!
//! The ordering argument (why the owner sees exactly what an erts port
//! sends, in its order) is in `portnode_relay.erl`; this side keeps its
//! part of it:
//! - while a batch is unacknowledged, every message to a process on the
//!   relay's node goes through the relay ([`Relay::busy`]);
//! - signals to that node (`badsig`, and the handle's exit) wait until
//!   every batch is acknowledged;
//! - a relay that goes with batches unacknowledged ends the handle with
//!   `{relay_down, Reason}`: its owner would miss output otherwise.
//!
//! A batch is `{'$portnode_relay', Dest, line | data | msg, Items}`: for
//! `line`, an item is a line that ended (`{eol, Item}` to the owner) or
//! `{noeol, Piece}`; for `data`, `{data, Item}`; for `msg`, the whole message.

use super::codec::Kind;
use super::outbound::push_data;
use crate::distribution::message::Control;
use crate::etf::{a, tuple};
use eetf::{Pid, Term};
use std::cell::{Cell, OnceCell};

/// Batches sent and not acknowledged, past which output is not read (the
/// owner's VM is behind): with batches of at most 64 KiB, at most about
/// 1 MiB in flight, and [`BATCH_FRAMES`] frames a batch, 8,192 frames.
pub(crate) const WINDOW: u32 = 16;

/// Frames in a batch at most (it also ends at 64 KiB). The relay's VM
/// decodes each batch onto the relay's heap, where a window of them is
/// live at once: with short lines or packets, 64 KiB batches made that
/// several MB, past the caches, and the owner's VM took 1.5-2x erts's CPU
/// per message (see docs/performance.md, issue 22's eleventh round).
pub(crate) const BATCH_FRAMES: u32 = 512;

/// Side-channel runs in flight at most.
pub(crate) const SIDE_WINDOW: u32 = 4;

const LIST_EXT: u8 = 108;
const NIL_EXT: u8 = 106;
const SMALL_TUPLE_EXT: u8 = 104;
const SMALL_ATOM_UTF8_EXT: u8 = 119;

/// A handle's relay, and how far behind it is.
pub(crate) struct Relay {
    pid: Pid,
    unacked: Cell<u32>,
    /// The batch head for the current owner (made at the first batch).
    head: OnceCell<Option<Box<[u8]>>>,
    /// Exit signals for the relay's VM, waiting for it to catch up.
    deferred: Vec<(Pid, Term)>,
}

/// A batch being written at the end of a buffer.
pub(crate) struct Batch {
    start: usize,
    count: u32,
}

impl Relay {
    pub(crate) fn new(pid: Pid) -> Relay {
        Relay { pid, unacked: Cell::new(0), head: OnceCell::new(), deferred: Vec::new() }
    }

    pub(crate) fn pid(&self) -> &Pid {
        &self.pid
    }

    /// True if `to` is in the relay's VM: what the handle sends it is
    /// ordered with what the relay forwards.
    pub(crate) fn serves(&self, to: &Pid) -> bool {
        to.node == self.pid.node
    }

    /// Batches are unacknowledged: a message to the relay's VM must go through it.
    pub(crate) fn busy(&self) -> bool {
        self.unacked.get() > 0
    }

    /// Room for another batch in flight.
    pub(crate) fn has_room(&self) -> bool {
        self.unacked.get() < WINDOW
    }

    /// Room for another side-channel run (see [`super::side`]): fewer in
    /// flight than batches, so that each run is larger.
    pub(crate) fn has_side_room(&self) -> bool {
        self.unacked.get() < SIDE_WINDOW
    }

    /// A batch was sent.
    pub(crate) fn sent(&self) {
        self.unacked.set(self.unacked.get() + 1);
    }

    /// The relay has forwarded `n` batches; true if none is left unacknowledged.
    pub(crate) fn acked(&self, n: u32) -> bool {
        self.unacked.set(self.unacked.get().saturating_sub(n));
        self.unacked.get() == 0
    }

    /// Holds an exit signal until every batch is acknowledged.
    pub(crate) fn defer(&mut self, to: Pid, reason: Term) {
        self.deferred.push((to, reason));
    }

    /// The exit signals held, to be sent now.
    pub(crate) fn take_deferred(&mut self) -> Vec<(Pid, Term)> {
        std::mem::take(&mut self.deferred)
    }

    /// The owner changed: batch heads name it.
    pub(crate) fn owner_changed(&mut self) {
        self.head = OnceCell::new();
    }

    /// A message batch of one message `msg` for `to`, as a term to send the relay.
    pub(crate) fn message(&self, to: &Pid, msg: Term) -> Term {
        tuple(vec![a("$portnode_relay"), Term::from(to.clone()), a("msg"), crate::etf::list(vec![msg])])
    }

    /// The head's length (for [`Batch::close`]); 0 before the first batch.
    pub(crate) fn head_len(&self) -> usize {
        self.head.get().and_then(|h| h.as_deref()).map_or(0, <[u8]>::len)
    }

    /// Starts a batch of output frames from `port` for `owner` at the end
    /// of `out`; `None` if the pids do not encode.
    pub(crate) fn open(&self, port: &Pid, owner: &Pid, lines: bool, out: &mut Vec<u8>) -> Option<Batch> {
        let head = self.head.get_or_init(|| head(port, &self.pid, owner, lines)).as_deref()?;
        let start = out.len();
        out.extend_from_slice(head);
        out.push(LIST_EXT);
        out.extend_from_slice(&[0; 4]);
        Some(Batch { start, count: 0 })
    }
}

impl Batch {
    /// Adds a frame's data.
    pub(crate) fn push(&mut self, kind: Kind, binary: bool, data: &[u8], out: &mut Vec<u8>) {
        if kind == Kind::Noeol {
            out.extend_from_slice(&[SMALL_TUPLE_EXT, 2, SMALL_ATOM_UTF8_EXT, 5]);
            out.extend_from_slice(b"noeol");
        }
        push_data(binary, data, out);
        self.count += 1;
    }

    /// It holds [`BATCH_FRAMES`]: the next frame goes in a new one.
    pub(crate) fn is_full(&self) -> bool {
        self.count >= BATCH_FRAMES
    }

    /// Frames in it so far.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Ends the batch: its list's tail, its count and its frame's length.
    pub(crate) fn close(self, out: &mut Vec<u8>, head_len: usize) {
        out.push(NIL_EXT);
        let frame = (out.len() - self.start - 4) as u32;
        out[self.start..self.start + 4].copy_from_slice(&frame.to_be_bytes());
        let count = self.start + head_len + 1;
        out[count..count + 4].copy_from_slice(&self.count.to_be_bytes());
    }
}

/// A batch's frame up to its items' list: the frame length (zeroed), the
/// pass-through byte, the `SEND_SENDER` control, and the message up to its
/// last element.
fn head(port: &Pid, relay: &Pid, owner: &Pid, lines: bool) -> Option<Box<[u8]>> {
    let msg = tuple(vec![a("$portnode_relay"), Term::from(owner.clone()), a(if lines { "line" } else { "data" }), crate::etf::list(Vec::new())]);
    let mut frame = Vec::new();
    Control::SendSender { from: port.clone(), to: relay.clone(), msg }.encode_into(&mut frame).ok()?;
    // Less the empty list's NIL_EXT.
    (frame.last() == Some(&NIL_EXT)).then_some(())?;
    frame.pop();
    frame[..4].fill(0);
    Some(frame.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf;

    #[test]
    fn a_batch_is_the_message_the_relay_matches() {
        let port = Pid::new("portnode_x@host", 77, 0, 1_700_000_001);
        let owner = Pid::new("owner@host", 123_456, 3, 9);
        let relay_pid = Pid::new("owner@host", 99, 0, 9);
        for binary in [true, false] {
            for lines in [true, false] {
                let relay = Relay::new(relay_pid.clone());
                let mut out = vec![7];
                let mut batch = relay.open(&port, &owner, lines, &mut out).expect("pids encode");
                let long: Vec<u8> = (0..70_000).map(|i| (i % 251) as u8).collect();
                let items: Vec<(Kind, &[u8])> = if lines {
                    vec![(Kind::Eol, b"one"), (Kind::Noeol, b"two"), (Kind::Eol, b""), (Kind::Eol, &long)]
                } else {
                    vec![(Kind::Data, b"abc"), (Kind::Data, b""), (Kind::Data, &long)]
                };
                for (kind, data) in &items {
                    batch.push(*kind, binary, data, &mut out);
                }
                assert_eq!(batch.count(), items.len() as u32);
                batch.close(&mut out, relay.head_len());
                let data = |d: &[u8]| if binary { etf::binary(d.to_vec()) } else { etf::byte_list(d.to_vec()) };
                let expected: Vec<Term> = items
                    .iter()
                    .map(|(kind, d)| match kind {
                        Kind::Noeol => tuple(vec![a("noeol"), data(d)]),
                        _ => data(d),
                    })
                    .collect();
                let kind = a(if lines { "line" } else { "data" });
                let msg = tuple(vec![a("$portnode_relay"), Term::from(owner.clone()), kind, etf::list(expected)]);
                let mut by_term = Vec::new();
                Control::SendSender { from: port.clone(), to: relay_pid.clone(), msg }.encode_into(&mut by_term).expect("encodes");
                assert_eq!(&out[1..], &by_term[..], "binary {binary} lines {lines}");
            }
        }
    }

    #[test]
    fn a_batch_is_full_at_batch_frames() {
        let relay = Relay::new(Pid::new("owner@host", 99, 0, 9));
        let port = Pid::new("portnode_x@host", 77, 0, 1_700_000_001);
        let mut out = Vec::new();
        let mut batch = relay.open(&port, &port, true, &mut out).expect("pids encode");
        for _ in 1..BATCH_FRAMES {
            batch.push(Kind::Eol, true, b"1", &mut out);
        }
        assert!(!batch.is_full());
        batch.push(Kind::Eol, true, b"1", &mut out);
        assert!(batch.is_full());
    }

    #[test]
    fn it_is_busy_until_every_batch_is_acknowledged() {
        let relay = Relay::new(Pid::new("owner@host", 99, 0, 9));
        assert!(!relay.busy() && relay.has_room());
        for _ in 0..WINDOW {
            relay.sent();
        }
        assert!(relay.busy() && !relay.has_room());
        for left in (0..WINDOW).rev() {
            assert_eq!(relay.acked(1), left == 0);
        }
        // An acknowledgement too many (a relay that misbehaves) does not wrap.
        assert!(relay.acked(1));
        for _ in 0..5 {
            relay.sent();
        }
        assert!(!relay.acked(4));
        assert!(relay.acked(1));
        assert!(!relay.busy());
    }
}
