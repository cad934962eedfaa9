//! Links, monitors and exit signals, following Erlang's rules, for local
//! processes and for signals arriving from peers.

use super::{to_peer_in, Node, Watcher};
use crate::distribution::message::{Control, ProcRef};
use crate::etf::{self, a, tuple};
use eetf::{Pid, Reference, Term};
use tracing::debug;

/// How an exit signal was sent: through a broken link, or by `exit/2`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ExitKind {
    Link,
    Exit2,
}

impl Node {
    /// Links local process `me` to `other`. A link to a process that is not
    /// there breaks at once: `noproc` on this node, `noconnection` on a node
    /// that is not connected (as in erts).
    pub(crate) fn link(&self, me: &Pid, other: &Pid) {
        let broken = {
            let mut st = self.lock();
            if !st.procs.contains_key(&me.id) {
                return;
            }
            let broken = if self.is_this_node(other) {
                match st.procs.get_mut(&other.id).filter(|_| self.is_local(other)) {
                    Some(e) => {
                        e.links.insert(me.clone());
                        None
                    }
                    None => Some("noproc"),
                }
            } else {
                // Checked and sent under the lock: a connection that drops
                // after this breaks the link in `break_links_to_node`.
                let link = Control::Link { from: me.clone(), to: other.clone() };
                if to_peer_in(&st, &other.node.name, link) { None } else { Some("noconnection") }
            };
            if broken.is_none() {
                if let Some(e) = st.procs.get_mut(&me.id) {
                    e.links.insert(other.clone());
                }
            }
            broken
        };
        if let Some(reason) = broken {
            self.deliver_exit(me, other, a(reason), ExitKind::Link);
        }
    }

    /// Removes the link between local process `me` and `other`.
    pub(crate) fn unlink(&self, me: &Pid, other: &Pid) {
        {
            let mut st = self.lock();
            if let Some(e) = st.procs.get_mut(&me.id) {
                e.links.remove(other);
            }
            if self.is_local(other) {
                if let Some(e) = st.procs.get_mut(&other.id) {
                    e.links.remove(me);
                }
            }
        }
        if !self.is_this_node(other) {
            let id = u64::from(self.next_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            self.to_peer(&other.node.name, Control::UnlinkId { id, from: me.clone(), to: other.clone() });
        }
    }

    /// Local process `me` monitors `target`. A monitor of a process that is
    /// not there fires at once: `noproc` on this node, `noconnection` on a
    /// node that is not connected.
    pub(crate) fn monitor(&self, me: &Pid, target: &Pid) -> Reference {
        let reference = self.make_ref();
        let mut st = self.lock();
        let Some(e) = st.procs.get_mut(&me.id) else { return reference };
        e.watching.insert(reference.clone(), target.clone());
        let fired = if self.is_this_node(target) {
            let watcher = Watcher { watcher: me.clone(), name: None };
            match st.procs.get_mut(&target.id).filter(|_| self.is_local(target)) {
                Some(t) => {
                    t.watched_by.insert(reference.clone(), watcher);
                    None
                }
                None => Some("noproc"),
            }
        } else {
            let control = Control::MonitorP { from: me.clone(), to: ProcRef::Pid(target.clone()), reference: reference.clone() };
            if to_peer_in(&st, &target.node.name, control) { None } else { Some("noconnection") }
        };
        drop(st);
        if let Some(reason) = fired {
            self.monitor_fired(me, &reference, &ProcRef::Pid(target.clone()), a(reason));
        }
        reference
    }

    /// Sets the message local process `me` leaves behind when it exits.
    pub(crate) fn set_last_words(&self, me: &Pid, to: Pid, msg: Term) {
        if let Some(e) = self.lock().procs.get_mut(&me.id) {
            e.last_words = Some(Box::new((to, msg)));
        }
    }

    /// Sets the trap_exit flag of local process `me`.
    pub(crate) fn set_trap_exit(&self, me: &Pid, on: bool) {
        if let Some(e) = self.lock().procs.get_mut(&me.id) {
            e.trap_exit = on;
        }
    }

    /// Ends local process `pid` now with `reason`, as an untrappable kill would.
    pub fn terminate(&self, pid: &Pid, reason: Term) {
        let abort = self.lock().procs.get_mut(&pid.id).and_then(|e| e.abort.take());
        if let Some(abort) = abort {
            abort.abort();
        }
        self.exited(pid, reason);
    }

    /// Local process `pid` has ended with `reason`: tell its links and monitors.
    pub(crate) fn exited(&self, pid: &Pid, reason: Term) {
        let entry = {
            let mut st = self.lock();
            let Some(entry) = st.procs.remove(&pid.id) else { return };
            if let Some(name) = &entry.name {
                st.names.remove(name);
            }
            entry
        };
        debug!(pid = %pid, reason = %reason, "process exited");
        // Monitors first: a caller of `portnode:port_command` that has seen the
        // exit signal must find the 'DOWN' of its monitor already there.
        for (reference, w) in entry.watched_by {
            let from = match w.name {
                Some(name) => ProcRef::Name(name),
                None => ProcRef::Pid(pid.clone()),
            };
            if self.is_this_node(&w.watcher) {
                self.monitor_fired(&w.watcher, &reference, &from, reason.clone());
            } else {
                let control = Control::MonitorPExit { from, to: w.watcher.clone(), reference, reason: reason.clone() };
                self.to_peer(&w.watcher.node.name, control);
            }
        }
        for other in entry.links.iter() {
            if self.is_this_node(other) {
                if let Some(e) = self.lock().procs.get_mut(&other.id) {
                    e.links.remove(pid);
                }
                self.deliver_exit(other, pid, reason.clone(), ExitKind::Link);
            } else {
                let control = Control::Exit { from: pid.clone(), to: other.clone(), reason: reason.clone() };
                self.to_peer(&other.node.name, control);
            }
        }
        if let Some(words) = entry.last_words {
            let (to, msg) = *words;
            self.send(Some(pid), &to, msg);
        }
        for (reference, target) in entry.watching {
            if !self.is_this_node(&target) {
                let control = Control::DemonitorP { from: pid.clone(), to: ProcRef::Pid(target.clone()), reference };
                self.to_peer(&target.node.name, control);
            }
        }
    }

    /// Delivers an exit signal from `from` to local process `to`.
    fn deliver_exit(&self, to: &Pid, from: &Pid, reason: Term, kind: ExitKind) {
        let is_kill = etf::as_atom(&reason) == Some("kill");
        let is_normal = etf::as_atom(&reason) == Some("normal");
        let trapping = {
            let st = self.lock();
            match st.procs.get(&to.id).filter(|_| self.is_local(to)) {
                Some(e) => e.trap_exit,
                None => return,
            }
        };
        if kind == ExitKind::Exit2 && is_kill {
            self.terminate(to, a("killed"));
        } else if trapping {
            let msg = tuple(vec![a("EXIT"), Term::from(from.clone()), reason]);
            self.send(None, to, msg);
        } else if !is_normal {
            self.terminate(to, reason);
        }
    }

    /// Local process `from` sends `to` an exit signal, as `exit(To, Reason)`.
    pub(crate) fn exit_signal(&self, from: &Pid, to: &Pid, reason: Term) {
        if self.is_this_node(to) {
            self.deliver_exit(to, from, reason, ExitKind::Exit2);
        } else {
            let control = Control::Exit2 { from: from.clone(), to: to.clone(), reason };
            self.to_peer(&to.node.name, control);
        }
    }

    /// A monitor held by local process `watcher` fired: send it the DOWN message.
    fn monitor_fired(&self, watcher: &Pid, reference: &Reference, target: &ProcRef, reason: Term) {
        let still_watching = match self.lock().procs.get_mut(&watcher.id) {
            Some(e) => e.watching.remove(reference).is_some(),
            None => false,
        };
        if still_watching {
            let who = match target {
                ProcRef::Pid(p) => Term::from(p.clone()),
                ProcRef::Name(n) => tuple(vec![Term::from(n.clone()), Term::from(self.name.clone())]),
            };
            let down = tuple(vec![a("DOWN"), Term::from(reference.clone()), a("process"), who, reason]);
            self.send(None, watcher, down);
        }
    }

    /// A connection to `node` is gone: fire every link and monitor across it.
    pub(crate) fn break_links_to_node(&self, node: &str) {
        let mut exits = Vec::new();
        let mut downs = Vec::new();
        {
            let mut st = self.lock();
            for (&id, e) in st.procs.iter_mut() {
                let me = Pid::new(self.name.name.clone(), id, 0, self.creation);
                e.links.retain(|p| {
                    let gone = p.node.name == node;
                    if gone {
                        exits.push((me.clone(), p.clone()));
                    }
                    !gone
                });
                e.watched_by.retain(|_, w| w.watcher.node.name != node);
                for (r, target) in e.watching.iter().filter(|(_, t)| t.node.name == node) {
                    downs.push((me.clone(), r.clone(), target.clone()));
                }
            }
        }
        for (me, reference, target) in downs {
            self.monitor_fired(&me, &reference, &ProcRef::Pid(target), a("noconnection"));
        }
        for (me, other) in exits {
            self.deliver_exit(&me, &other, a("noconnection"), ExitKind::Link);
        }
    }

    /// Handles one control message that arrived from peer `node`.
    pub(crate) fn incoming(&self, node: &str, control: Control) {
        match control {
            Control::Send { to, msg } | Control::SendSender { to, msg, .. } => self.send(None, &to, msg),
            Control::RegSend { to, msg, .. } => self.send_named(&to.name, msg),
            Control::Link { from, to } => self.incoming_link(from, to),
            Control::UnlinkId { id, from, to } => {
                if let Some(e) = self.lock().procs.get_mut(&to.id).filter(|_| self.is_local(&to)) {
                    e.links.remove(&from);
                }
                self.to_peer(node, Control::UnlinkIdAck { id, from: to, to: from });
            }
            Control::Exit { from, to, reason } => {
                let linked = match self.lock().procs.get_mut(&to.id).filter(|_| self.is_local(&to)) {
                    Some(e) => e.links.remove(&from),
                    None => false,
                };
                if linked {
                    self.deliver_exit(&to, &from, reason, ExitKind::Link);
                }
            }
            Control::Exit2 { from, to, reason } => self.deliver_exit(&to, &from, reason, ExitKind::Exit2),
            Control::MonitorP { from, to, reference } => self.incoming_monitor(node, from, to, reference),
            Control::DemonitorP { to, reference, .. } => {
                let mut st = self.lock();
                let id = match &to {
                    ProcRef::Pid(p) => Some(p.id).filter(|_| self.is_local(p)),
                    ProcRef::Name(n) => st.names.get(&n.name).copied(),
                };
                if let Some(e) = id.and_then(|id| st.procs.get_mut(&id)) {
                    e.watched_by.remove(&reference);
                }
            }
            Control::MonitorPExit { from, to, reference, reason } => {
                self.monitor_fired(&to, &reference, &from, reason)
            }
            Control::SpawnRequest { req_id, from } => {
                // Spawning Erlang code here is not supported: say so instead of dropping the link.
                self.to_peer(node, Control::SpawnReply { req_id, to: from, result: a("notsup") });
            }
            Control::UnlinkIdAck { .. } | Control::AliasSend { .. } | Control::SpawnReply { .. } | Control::GroupLeader => {}
        }
    }

    fn incoming_link(&self, from: Pid, to: Pid) {
        let alive = match self.lock().procs.get_mut(&to.id).filter(|_| self.is_local(&to)) {
            Some(e) => {
                e.links.insert(from.clone());
                true
            }
            None => false,
        };
        if !alive {
            let node = from.node.name.clone();
            self.to_peer(&node, Control::Exit { from: to, to: from, reason: a("noproc") });
        }
    }

    fn incoming_monitor(&self, node: &str, from: Pid, to: ProcRef, reference: Reference) {
        let mut st = self.lock();
        let (id, name) = match &to {
            ProcRef::Pid(p) => (Some(p.id).filter(|_| self.is_local(p)), None),
            ProcRef::Name(n) => (st.names.get(&n.name).copied(), Some(n.clone())),
        };
        match id.and_then(|id| st.procs.get_mut(&id)) {
            Some(e) => {
                e.watched_by.insert(reference, Watcher { watcher: from, name });
            }
            None => {
                drop(st);
                debug!(peer = node, "monitor of a missing process: noproc");
                let control = Control::MonitorPExit { from: to, to: from, reference, reason: a("noproc") };
                self.to_peer(node, control);
            }
        }
    }
}
