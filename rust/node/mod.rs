//! The node: its identity, its process table and registered names, and the
//! routing of messages and signals between local processes and connected peers.
//!
//! Link, monitor and exit-signal rules live in [`signals`]; the process
//! context a task sees lives in [`process`].

mod mailbox;
pub mod process;
mod signals;
mod table;

use crate::distribution::accept::{Admission, Admit};
use crate::distribution::connection::{ConnId, Event, Events, Outbox};
use crate::distribution::message::Control;
use crate::etf;
use eetf::{Atom, Pid, Reference, Term};
use futures::FutureExt;
use process::Process;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use crate::backlog::Backlog;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::task::AbortHandle;

/// A monitor held on a local process: who watches, and by which name if any.
#[derive(Clone)]
struct Watcher {
    watcher: Pid,
    name: Option<Atom>,
}

/// A local process's entry in the process table.
struct Entry {
    mailbox: Mailbox,
    abort: Option<AbortHandle>,
    name: Option<String>,
    trap_exit: bool,
    links: table::Set<Pid>,
    /// Monitors others hold on this process, by reference.
    watched_by: table::Map<Reference, Watcher>,
    /// Monitors this process holds on others, by reference.
    watching: table::Map<Reference, Pid>,
    /// A message to send after the exit signals (boxed: rarely set).
    last_words: Option<Box<(Pid, Term)>>,
}

/// A local process's mailbox: unbounded as Erlang's, but counted, so that
/// ports can hold back their programs' output while the owner lags.
struct Mailbox {
    tx: mailbox::Sender,
    backlog: Arc<Backlog>,
}

impl Mailbox {
    fn deliver(&self, msg: Term) {
        // Counted before it can be taken, so the count never goes below zero.
        self.backlog.add(1);
        if self.tx.send(msg).is_err() {
            self.backlog.take(1);
        }
    }
}

/// A local owner with this many messages in its mailbox is busy; it is not
/// busy again below half of it.
const BUSY_MAILBOX: usize = 128;

/// A live connection to a peer node: which one, and where its outgoing messages go.
struct Peer {
    conn: ConnId,
    creation: u32,
    /// The distribution flags the peer offered in the handshake.
    flags: u64,
    outbox: Outbox,
}

#[derive(Default)]
struct State {
    /// Boxed: the table's spare room costs a pointer per slot, not an entry.
    procs: HashMap<u32, Box<Entry>>,
    names: HashMap<String, u32>,
    peers: HashMap<String, Peer>,
}

/// A portnode node: a hidden member of an Erlang cluster.
pub struct Node {
    name: Atom,
    creation: u32,
    started: Instant,
    next_id: AtomicU32,
    next_ref: AtomicU32,
    state: Mutex<State>,
}

impl Node {
    /// A node named `name` (`alive@host`) with the creation epmd gave it.
    pub fn new(name: &str, creation: u32) -> Arc<Node> {
        Arc::new(Node {
            name: etf::atom(name),
            creation,
            started: Instant::now(),
            next_id: AtomicU32::new(1),
            next_ref: AtomicU32::new(1),
            state: Mutex::new(State::default()),
        })
    }

    /// The node name, as an atom.
    pub fn name(&self) -> &Atom {
        &self.name
    }

    /// The creation of this incarnation.
    pub fn creation(&self) -> u32 {
        self.creation
    }

    /// Time since the node started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if `pid` names a process of this incarnation of this node.
    fn is_local(&self, pid: &Pid) -> bool {
        pid.node == self.name && pid.creation == self.creation
    }

    /// True if `pid` belongs to this node's name, whatever the creation.
    fn is_this_node(&self, pid: &Pid) -> bool {
        pid.node == self.name
    }

    /// A new reference of this node.
    pub fn make_ref(&self) -> Reference {
        let n = self.next_ref.fetch_add(1, Ordering::Relaxed);
        let salt = self.started.elapsed().as_nanos() as u32;
        Reference { node: self.name.clone(), id: vec![n, salt, 0], creation: self.creation }
    }

    /// Starts a local process running `body`; the value it returns is its exit reason.
    pub fn spawn<F, Fut>(self: &Arc<Self>, body: F) -> Pid
    where
        F: FnOnce(Process) -> Fut,
        Fut: Future<Output = Term> + Send + 'static,
    {
        self.spawn_with(body, |_| {})
    }

    /// As [`Node::spawn`], with `setup` run on the new pid before the
    /// process runs: as `spawn_opt` with `link`, what it sets up (links,
    /// `trap_exit`, first messages sent as the process) is in place before
    /// the process can send anything or exit. A link made after `spawn`
    /// returns is not: a process that ends first is not there to link, and
    /// the other end would never hear of its exit.
    pub fn spawn_with<F, Fut>(self: &Arc<Self>, body: F, setup: impl FnOnce(&Pid)) -> Pid
    where
        F: FnOnce(Process) -> Fut,
        Fut: Future<Output = Term> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pid = Pid::new(self.name.name.clone(), id, 0, self.creation);
        let (tx, rx) = mailbox::mailbox();
        let backlog = Arc::new(Backlog::new(BUSY_MAILBOX, BUSY_MAILBOX / 2));
        self.lock().procs.insert(id, Box::new(Entry {
            mailbox: Mailbox { tx, backlog: backlog.clone() },
            abort: None,
            name: None,
            trap_exit: false,
            links: Default::default(),
            watched_by: Default::default(),
            watching: Default::default(),
            last_words: None,
        }));
        let fut = body(Process::new(pid.clone(), self.clone(), rx, backlog));
        setup(&pid);
        // Ended already (an exit signal it did not trap): it never runs.
        if !self.lock().procs.contains_key(&id) {
            return pid;
        }
        let node = self.clone();
        // A combinator, not an `async` block: a block would keep the
        // captured future and the one it awaits apart, twice the size of
        // every process task.
        let task = tokio::spawn(AssertUnwindSafe(fut).catch_unwind().map(move |outcome| {
            let reason = outcome.unwrap_or_else(|_| etf::a("panic"));
            // The pid made again, not kept: a pid's node name is a heap string.
            node.exited(&node.pid_of(id), reason);
        }));
        if let Some(entry) = self.lock().procs.get_mut(&id) {
            entry.abort = Some(task.abort_handle());
        }
        pid
    }

    /// Registers `pid` under `name`; false if the name is taken or the pid is gone.
    pub fn register(&self, name: &str, pid: &Pid) -> bool {
        let mut st = self.lock();
        if st.names.contains_key(name) || !self.is_local(pid) {
            return false;
        }
        match st.procs.get_mut(&pid.id) {
            Some(entry) if entry.name.is_none() => {
                entry.name = Some(name.to_owned());
                st.names.insert(name.to_owned(), pid.id);
                true
            }
            _ => false,
        }
    }

    /// The pid registered under `name`, if any.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        let st = self.lock();
        st.names.get(name).map(|&id| self.pid_of(id))
    }

    fn pid_of(&self, id: u32) -> Pid {
        Pid::new(self.name.name.clone(), id, 0, self.creation)
    }

    /// Number of live local processes.
    pub fn process_count(&self) -> usize {
        self.lock().procs.len()
    }

    /// The distribution flags each connected node offered in its handshake.
    pub fn peer_flags(&self) -> Vec<(String, u64)> {
        let mut peers: Vec<(String, u64)> = self.lock().peers.iter().map(|(n, p)| (n.clone(), p.flags)).collect();
        peers.sort();
        peers
    }

    /// Names of the connected nodes.
    pub fn connected_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.lock().peers.keys().cloned().collect();
        nodes.sort();
        nodes
    }

    /// Sends `msg` to `to`. `from` is the sending local process, if any.
    pub fn send(&self, from: Option<&Pid>, to: &Pid, msg: Term) {
        if self.is_this_node(to) {
            let st = self.lock();
            if let Some(entry) = st.procs.get(&to.id).filter(|_| self.is_local(to)) {
                entry.mailbox.deliver(msg);
            }
            return;
        }
        let control = match from {
            Some(from) => Control::SendSender { from: from.clone(), to: to.clone(), msg },
            None => Control::Send { to: to.clone(), msg },
        };
        self.to_peer(&to.node.name, control);
    }

    /// Sends `msg` from local process `from` to the process registered as
    /// `name` on `node` (another node; dropped if it is not connected).
    pub fn send_to_name_on(&self, from: &Pid, node: &str, name: &str, msg: Term) {
        let control = Control::RegSend { from: from.clone(), to: crate::etf::atom(name), msg };
        self.to_peer(node, control);
    }

    /// Sends `msg` to the process registered as `name` on this node.
    pub fn send_named(&self, name: &str, msg: Term) {
        let st = self.lock();
        if let Some(entry) = st.names.get(name).and_then(|id| st.procs.get(id)) {
            entry.mailbox.deliver(msg);
        }
    }

    /// Queues a control message for a peer; dropped if the peer is not connected.
    fn to_peer(&self, node: &str, control: Control) {
        to_peer_in(&self.lock(), node, control);
    }

    /// What a message to `to` waits behind: the mailbox of a local process,
    /// or the connection to its node. `None` if neither exists (a message
    /// to it is dropped, so there is nothing to wait for).
    pub fn backlog_of(&self, to: &Pid) -> Option<Arc<Backlog>> {
        let st = self.lock();
        if self.is_this_node(to) {
            st.procs.get(&to.id).filter(|_| self.is_local(to)).map(|e| e.mailbox.backlog.clone())
        } else {
            st.peers.get(&to.node.name).map(|p| p.outbox.backlog().clone())
        }
    }

    /// The connection a message to remote `to` goes out on, for a sender
    /// that encodes its messages itself; `None` for a local pid or an
    /// unconnected node.
    pub fn outbox_of(&self, to: &Pid) -> Option<Outbox> {
        if self.is_this_node(to) {
            return None;
        }
        self.lock().peers.get(&to.node.name).map(|p| p.outbox.clone())
    }

    /// False while the connection to `node` is busy (see
    /// [`crate::distribution::connection::BUSY_BYTES`]).
    pub fn peer_room(&self, node: &str) -> bool {
        match self.lock().peers.get(node) {
            Some(peer) => peer.outbox.backlog().has_room(),
            None => true,
        }
    }

    /// True if a connection to `node` is up.
    pub fn is_connected(&self, node: &str) -> bool {
        self.lock().peers.contains_key(node)
    }

    /// The pids local process `pid` is linked to.
    pub fn links_of(&self, pid: &Pid) -> Vec<Pid> {
        match self.lock().procs.get(&pid.id).filter(|_| self.is_local(pid)) {
            Some(e) => e.links.iter().cloned().collect(),
            None => Vec::new(),
        }
    }

    /// Records a new connection. An older one to the same name (a node that
    /// came back as a new incarnation, say) is dropped first, and its links
    /// and monitors fire with `noconnection` before the new one carries anything.
    fn peer_up(&self, node: &str, peer: Peer) {
        let old = self.lock().peers.remove(node);
        if let Some(old) = old {
            tracing::info!(peer = node, old_creation = old.creation, new_creation = peer.creation, "connection replaced");
            drop(old);
            self.break_links_to_node(node);
        }
        self.lock().peers.insert(node.to_owned(), peer);
    }

    /// Forgets connection `conn` to `node` and fires every link and monitor
    /// across it with `noconnection`. A connection already replaced has
    /// fired its links when it was replaced.
    fn peer_down(&self, node: &str, conn: ConnId) {
        {
            let mut st = self.lock();
            match st.peers.get(node) {
                Some(p) if p.conn == conn => {
                    st.peers.remove(node);
                }
                _ => return,
            }
        }
        self.break_links_to_node(node);
    }

    /// Ends every local process with `reason` (used at shutdown).
    pub fn terminate_all(&self, reason: Term) {
        let ids: Vec<u32> = self.lock().procs.keys().copied().collect();
        for id in ids {
            self.terminate(&self.pid_of(id), reason.clone());
        }
    }

    /// Drops every connection: their tasks end when their queues close.
    pub fn disconnect_all(&self) {
        self.lock().peers.clear();
    }
}

/// Queues `control` for `node` while the caller holds the state lock, so
/// that checking the connection and using it are one step.
fn to_peer_in(st: &State, node: &str, control: Control) -> bool {
    match st.peers.get(node) {
        Some(peer) => peer.outbox.send(control),
        None => false,
    }
}

impl Events for Node {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Up { conn, peer, outbox } => {
                self.peer_up(&peer.name, Peer { conn, creation: peer.creation, flags: peer.flags, outbox })
            }
            Event::Message { conn, peer, control } => {
                // A replaced connection may still have a frame in hand: drop it.
                if self.lock().peers.get(peer).is_some_and(|p| p.conn == conn) {
                    self.incoming(peer, control);
                }
            }
            Event::Down { conn, peer } => self.peer_down(peer, conn),
        }
    }
}

impl Admit for Node {
    fn admission(&self, name: &str) -> Admission {
        if self.is_connected(name) { Admission::Alive } else { Admission::Ok }
    }
}
