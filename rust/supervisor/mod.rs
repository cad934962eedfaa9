//! Supervisors that run inside portnode: a process on this node with OTP's
//! supervisor semantics, whose children are programs (remote ports it owns).
//!
//! Restarts happen here, without a round trip to Erlang; a permanent child
//! of a `one_for_one` supervisor is restarted by the spawner itself, at its
//! program's exit, through a restart grant ([`grants`]). The supervisor is
//! linked to its Erlang parent: when the parent goes (or sends an exit
//! signal, as an Erlang supervisor does to stop a child) it stops its
//! children in reverse start order and exits with the same reason; when its
//! restart intensity is exceeded it stops them and exits with `shutdown`.
//! It answers the calls `supervisor:which_children/1`, `count_children/1`,
//! `terminate_child/2`, `restart_child/2`, `delete_child/2`, `start_child/2`
//! and `get_childspec/2` make. A child with a `{ready, _}` setting has
//! started once it is ready: the next one starts only then.

mod events;
mod grants;
mod intensity;
mod request;
pub mod spec;

use crate::etf::{self, a, as_atom, as_tuple, int, tuple};
use crate::node::process::{Call, Process};
use crate::port::lookups::Lookups;
use crate::node::Node;
use eetf::{Pid, Term};
use intensity::Intensity;
use request::{CallRequest, Request};
use spec::{ChildSpec, Flags, Restart, Strategy};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Starts a supervisor for `parent` (linked to it) that answers `call`
/// with `{ok, Pid}` once every child has started, or with the error
/// `supervisor:start_link/2` would return. Bad flags or specs are answered
/// without a process.
/// `replier` is the process the call was made to (the control server),
/// which answers a bad call. Users and groups the specs name are looked up
/// from `lookups` (see [`crate::port::lookups`]).
pub fn start(node: &Arc<Node>, replier: &Pid, call: Call, parent: &Pid, flags: &Term, children: &Term, lookups: Lookups) {
    let refuse = |reason: Term| node.send(Some(replier), &call.from, tuple(vec![call.tag.clone(), error(reason)]));
    let flags = match Flags::parse(flags) {
        Ok(flags) => flags,
        Err(reason) => return refuse(tuple(vec![a("supervisor_data"), reason])),
    };
    let specs = match crate::port::lookups::with(lookups, || ChildSpec::parse_all(children)) {
        Ok(specs) => specs,
        Err(reason) => return refuse(tuple(vec![a("start_spec"), reason])),
    };
    let parent_pid = parent.clone();
    // Before it runs: trap exits, and link to the parent, as start_link does.
    node.spawn_with(move |me| run(me, parent_pid, flags, specs, call), |pid| {
        node.set_trap_exit(pid, true);
        node.link(pid, parent);
    });
}

/// How long past a child's shutdown its handle may take to report its exit
/// before it is killed.
const STOP_MARGIN: Duration = Duration::from_secs(2);

fn error(reason: Term) -> Term {
    tuple(vec![a("error"), reason])
}

/// A child: its spec, and its handle while its program runs.
struct Child {
    spec: ChildSpec,
    handle: Option<Pid>,
    os_pid: Option<u32>,
    /// How the program ended (`{exit_status, N}` or `{exit_signal, S}`), as
    /// the port reported it just before its handle exited.
    ended: Option<Term>,
    /// Which step of a stop ended it (`{H, {stopped, Step}}`), when its
    /// handle stopped it.
    stopped: Option<Term>,
    /// The port of its restart grant, while one is armed (see [`grants`]).
    grant: Option<Pid>,
}

impl Child {
    fn new(spec: ChildSpec) -> Child {
        Child { spec, handle: None, os_pid: None, ended: None, stopped: None, grant: None }
    }
}

/// A child's handle whose program its restart grant replaced: its exit,
/// still to come, is logged and nothing more.
struct Retired {
    handle: Pid,
    id: Term,
    os_pid: u32,
    ended: Option<Term>,
}

struct Supervisor {
    me: Process,
    parent: Pid,
    strategy: Strategy,
    intensity: Intensity,
    children: Vec<Child>,
    /// Messages that arrived while waiting for a child to stop.
    deferred: VecDeque<Term>,
    retired: Vec<Retired>,
}

async fn run(me: Process, parent: Pid, flags: Flags, specs: Vec<ChildSpec>, call: Call) -> Term {
    let children = specs.into_iter().map(Child::new).collect();
    let intensity = Intensity::new(flags.intensity, flags.period);
    let mut sup = Supervisor { me, parent, strategy: flags.strategy, intensity, children, deferred: VecDeque::new(), retired: Vec::new() };
    for i in 0..sup.children.len() {
        if let Err(reason) = sup.start_child(i).await {
            let id = sup.children[i].spec.id.clone();
            sup.terminate_all().await;
            sup.me.unlink(&sup.parent);
            let failed = tuple(vec![a("failed_to_start_child"), id, reason]);
            sup.me.reply(&call, error(tuple(vec![a("shutdown"), failed])));
            return a("normal");
        }
    }
    sup.me.reply(&call, tuple(vec![a("ok"), Term::from(sup.me.pid().clone())]));
    info!(supervisor = %sup.me.pid(), parent = %sup.parent, children = sup.children.len(), "supervisor started");
    loop {
        let msg = match sup.deferred.pop_front() {
            Some(msg) => msg,
            None => sup.me.recv().await,
        };
        let exit = match Request::parse(msg) {
            Request::Call(call, request) => sup.call(call, request).await,
            request => sup.message(request).await,
        };
        if let Some(reason) = exit {
            return reason;
        }
    }
}

impl Supervisor {
    fn index(&self, id: &Term) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == *id)
    }

    fn index_of_handle(&self, handle: &Pid) -> Option<usize> {
        self.children.iter().position(|c| c.handle.as_ref() == Some(handle))
    }

    /// Opens child `i`'s program, with the settings the supervisor needs
    /// (see [`ChildSpec::open_settings`]).
    async fn start_child(&mut self, i: usize) -> Result<Pid, Term> {
        let spec = &self.children[i].spec;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let on_start = crate::port::OnStart::Tell(tx);
        crate::spawner::client::room().await;
        // Users and groups are looked up off the runtime thread.
        let lookups = crate::port::lookups::prepare(&spec.settings).await;
        let handle = crate::port::lookups::with(lookups, || {
            crate::port::open(self.me.node(), self.me.pid(), &spec.port_name, &spec.open_settings, None, on_start).map_err(|(reason, _)| reason)
        })?;
        // The handle tells once the program runs, or is ready if it is to
        // say so (or why it is not). Meanwhile what the program prints is
        // logged, so that its port never waits for room in this mailbox.
        let mut rx = std::pin::pin!(rx);
        let os_pid = loop {
            tokio::select! {
                told = &mut rx => break told.unwrap_or_else(|_| Err(a("noproc")))?,
                msg = self.me.recv() => match Request::event_of(&msg, &handle) {
                    Some(event) => self.child_event(i, &event),
                    None => self.deferred.push_back(msg),
                },
            }
        };
        let child = &mut self.children[i];
        info!(supervisor = %self.me.pid(), child = %child.spec.id, os_pid = os_pid.unwrap_or(0), "child started");
        child.handle = Some(handle.clone());
        child.os_pid = os_pid;
        child.ended = None;
        child.stopped = None;
        self.arm(i).await;
        Ok(handle)
    }

    /// Stops child `i`'s program within its shutdown and waits until it is gone.
    async fn terminate_child(&mut self, i: usize) {
        // Its grant first, so that nothing restarts what is stopped; a
        // grant used meanwhile replaced the program, and the replacement is stopped.
        self.settle_grant(i).await;
        let Some(handle) = self.children[i].handle.take() else { return };
        let grace = match self.children[i].spec.shutdown {
            Some(d) if d.is_zero() => a("brutal_kill"),
            Some(d) => int(d.as_millis() as i64),
            None => a("infinity"),
        };
        self.me.send(&handle, tuple(vec![a("$portnode_stop"), grace]));
        // The handle stops its program within the shutdown; should it not
        // answer by then (and a margin), it is killed, which stops the program too.
        let limit = self.children[i].spec.shutdown.map(|d| d + STOP_MARGIN);
        if !self.wait_exit(i, &handle, limit).await {
            warn!(supervisor = %self.me.pid(), child = %self.children[i].spec.id, "child's handle did not stop within its shutdown; killing it");
            self.me.node().terminate(&handle, a("kill"));
            self.wait_exit(i, &handle, Some(STOP_MARGIN)).await;
        }
        let child = &mut self.children[i];
        let step = child.stopped.take().map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        info!(supervisor = %self.me.pid(), child = %child.spec.id, os_pid = child.os_pid.unwrap_or(0), ended = %step, "child stopped");
        child.ended = None;
    }

    /// Stops every child, last started first. Every grant is given up
    /// first: none restarts a sibling that dies meanwhile.
    async fn terminate_all(&mut self) {
        self.give_up_grants();
        for i in (0..self.children.len()).rev() {
            self.settle_grant(i).await;
        }
        for i in (0..self.children.len()).rev() {
            self.terminate_child(i).await;
        }
    }

    /// Waits for `handle`'s exit signal (child `i`'s, being stopped), up to
    /// `limit` (none: no bound); other messages wait their turn. False if the limit passed first.
    async fn wait_exit(&mut self, i: usize, handle: &Pid, limit: Option<Duration>) -> bool {
        if let Some(pos) = self.deferred.iter().position(|m| Request::is_exit_of(m, handle)) {
            self.deferred.remove(pos);
            return true;
        }
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        loop {
            let msg = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, self.me.recv()).await {
                    Ok(msg) => msg,
                    Err(_) => return false,
                },
                None => self.me.recv().await,
            };
            if Request::is_exit_of(&msg, handle) {
                return true;
            }
            // What child `i`'s port says as it goes (how the stop ended it).
            if let Some(event) = Request::event_of(&msg, handle) {
                self.child_event(i, &event);
                continue;
            }
            self.deferred.push_back(msg);
        }
    }

    async fn message(&mut self, request: Request) -> Option<Term> {
        match request {
            Request::Exit { from, reason } => {
                if from == self.parent {
                    info!(supervisor = %self.me.pid(), reason = %reason, "parent exited; stopping children");
                    self.terminate_all().await;
                    return Some(reason);
                }
                match self.index_of_handle(&from) {
                    Some(i) => self.child_exited(i, reason).await,
                    None => {
                        if let Some(i) = self.children.iter().position(|c| c.grant.as_ref() == Some(&from)) {
                            // A grant's port gone before it said anything
                            // (killed): the grant is given up (what it would
                            // start is stopped by the port's leftovers).
                            self.children[i].grant = None;
                            if let Some(os_pid) = self.children[i].os_pid {
                                let _ = crate::spawner::client::give_up(os_pid as libc::pid_t);
                            }
                        }
                        self.retired_exited(&from, &reason);
                        None
                    }
                }
            }
            Request::PortEvent { from, event } => {
                if let Some(i) = self.index_of_handle(&from) {
                    self.child_event(i, &event);
                } else {
                    self.retired_event(&from, &event);
                }
                None
            }
            Request::Granted { from, outcome } => {
                let Some(i) = self.children.iter().position(|c| c.grant.as_ref() == Some(&from)) else {
                    // Not from a grant of ours (every answer is awaited): anyone's message.
                    warn!(supervisor = %self.me.pid(), from = %from, "supervisor ignored a restart grant's answer it was not waiting for");
                    return None;
                };
                self.children[i].grant = None;
                match outcome {
                    Ok(os_pid) => self.adopt(i, from, os_pid).await,
                    // Given up: the child's port stopped its program (which
                    // is restarted, if it is, when its handle exits).
                    Err(_) => None,
                }
            }
            Request::Retry(id) => match self.index(&id) {
                Some(i) if self.children[i].handle.is_none() => self.restart(i).await,
                _ => None,
            },
            Request::Call(call, request) => self.call(call, request).await,
            Request::Ignored(msg) => {
                warn!(supervisor = %self.me.pid(), message = %crate::etf::brief(&msg, crate::etf::LOGGED_TERM), "supervisor ignored an unexpected message");
                None
            }
        }
    }

    async fn child_exited(&mut self, i: usize, reason: Term) -> Option<Term> {
        if let Some(grant) = self.children[i].grant.take() {
            // Its grant's answer comes as soon as its program has exited (or
            // been stopped): it may have replaced the program already.
            if let Ok(os_pid) = self.wait_granted(&grant).await {
                let old = self.children[i].handle.take();
                let retire = old.map(|handle| Retired { handle, id: self.children[i].spec.id.clone(), os_pid: self.children[i].os_pid.unwrap_or(0), ended: self.children[i].ended.take() });
                if let Some(retired) = retire {
                    let handle = retired.handle.clone();
                    self.retired.push(retired);
                    self.retired_exited(&handle, &reason);
                }
                return self.adopt(i, grant, os_pid).await;
            }
        }
        let child = &mut self.children[i];
        child.handle = None;
        let reason = match (as_atom(&reason), child.ended.take()) {
            (Some("normal"), Some(ended)) if ended != tuple(vec![a("exit_status"), int(0)]) => ended,
            _ => reason,
        };
        let abnormal = !is_normal(&reason);
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        let (id, os_pid) = (child.spec.id.clone(), child.os_pid.unwrap_or(0));
        // Which step ended it, when its port stopped it (a watchdog): its own exit otherwise.
        let ended = child.stopped.take().map_or_else(|| "its own exit".to_owned(), |s| s.to_string());
        if abnormal {
            warn!(supervisor = %self.me.pid(), child = %id, os_pid, reason = %reason, ended = %ended, restart, "child terminated");
        } else {
            info!(supervisor = %self.me.pid(), child = %id, os_pid, reason = %reason, ended = %ended, restart, "child exited");
        }
        if restart {
            return self.restart(i).await;
        }
        if child.spec.restart == Restart::Temporary {
            self.children.remove(i);
        }
        None
    }

    /// Restarts child `i` (and its siblings, as the strategy says), or gives
    /// up with `shutdown` if that is one restart too many.
    async fn restart(&mut self, i: usize) -> Option<Term> {
        // Room for this restart beside what the armed grants may use.
        while self.intensity.recent(Instant::now()) < self.intensity.max() && self.intensity.recent(Instant::now()) + 1 + self.armed() > self.intensity.max() {
            let Some(j) = self.children.iter().position(|c| c.grant.is_some()) else { break };
            if !self.settle_grant(j).await {
                return self.shut_down_for(j).await;
            }
        }
        if !self.intensity.add(Instant::now()) {
            return self.shut_down_for(i).await;
        }
        let group = match self.strategy {
            Strategy::OneForOne => i..i + 1,
            Strategy::OneForAll => 0..self.children.len(),
            Strategy::RestForOne => i..self.children.len(),
        };
        for j in group.clone().rev() {
            self.terminate_child(j).await;
        }
        // As OTP: temporary siblings stopped for the restart are not restarted.
        let ids: Vec<Term> = group.filter(|&j| j == i || self.children[j].spec.restart != Restart::Temporary).map(|j| self.children[j].spec.id.clone()).collect();
        self.children.retain(|c| c.spec.restart != Restart::Temporary || c.handle.is_some() || ids.contains(&c.spec.id));
        for id in ids {
            let Some(j) = self.index(&id) else { continue };
            if let Err(reason) = self.start_child(j).await {
                // Try again through the mailbox; each try counts against the intensity.
                warn!(supervisor = %self.me.pid(), child = %id, reason = %reason, "child failed to restart; will try again");
                let me = self.me.pid().clone();
                self.me.send(&me, tuple(vec![a("$portnode_retry"), id]));
                break;
            }
        }
        None
    }

    async fn call(&mut self, call: Call, request: CallRequest) -> Option<Term> {
        let reply = match request {
            // As OTP's supervisor: the last child in start order comes first.
            CallRequest::WhichChildren => etf::list(self.children.iter().rev().map(|c| {
                let child = c.handle.clone().map(Term::from).unwrap_or_else(|| a("undefined"));
                tuple(vec![c.spec.id.clone(), child, a("worker"), c.spec.modules.clone()])
            }).collect()),
            CallRequest::CountChildren => {
                let active = self.children.iter().filter(|c| c.handle.is_some()).count() as i64;
                let specs = self.children.len() as i64;
                let pairs = [("specs", specs), ("active", active), ("supervisors", 0), ("workers", specs)];
                etf::list(pairs.iter().map(|(k, v)| tuple(vec![a(k), int(*v)])).collect())
            }
            CallRequest::GetCallbackModule => a("portnode"),
            CallRequest::TerminateChild(id) => match self.index(&id) {
                Some(i) => {
                    self.terminate_child(i).await;
                    if self.children[i].spec.restart == Restart::Temporary {
                        self.children.remove(i);
                    }
                    a("ok")
                }
                None => error(a("not_found")),
            },
            CallRequest::RestartChild(id) => match self.index(&id) {
                Some(i) if self.children[i].handle.is_some() => error(a("running")),
                Some(i) => match self.start_child(i).await {
                    Ok(handle) => tuple(vec![a("ok"), Term::from(handle)]),
                    Err(reason) => error(reason),
                },
                None => error(a("not_found")),
            },
            CallRequest::DeleteChild(id) => match self.index(&id) {
                Some(i) if self.children[i].handle.is_some() => error(a("running")),
                Some(i) => {
                    self.children.remove(i);
                    a("ok")
                }
                None => error(a("not_found")),
            },
            CallRequest::GetChildspec(id) => match self.index(&id) {
                Some(i) => tuple(vec![a("ok"), self.children[i].spec.to_term()]),
                None => error(a("not_found")),
            },
            CallRequest::StartChild(spec) => self.add_child(&spec).await,
            CallRequest::Unknown(request) => error(tuple(vec![a("unknown_call"), request])),
        };
        self.me.reply(&call, reply);
        None
    }

    /// `supervisor:start_child/2`: a new child, started at once, last in order.
    async fn add_child(&mut self, spec: &Term) -> Term {
        // The users and groups it names are looked up off the runtime thread.
        let lookups = crate::port::lookups::prepare_children(&etf::list(vec![spec.clone()])).await;
        let spec = match crate::port::lookups::with(lookups, || ChildSpec::parse(spec)) {
            Ok(spec) => spec,
            Err(reason) => return error(reason),
        };
        if let Some(i) = self.index(&spec.id) {
            return match &self.children[i].handle {
                Some(handle) => error(tuple(vec![a("already_started"), Term::from(handle.clone())])),
                None => error(a("already_present")),
            };
        }
        self.children.push(Child::new(spec));
        let last = self.children.len() - 1;
        match self.start_child(last).await {
            Ok(handle) => tuple(vec![a("ok"), Term::from(handle)]),
            Err(reason) => {
                self.children.pop();
                error(reason)
            }
        }
    }
}

impl Drop for Supervisor {
    /// A supervisor killed (`exit(Sup, kill)`, or portnode's shutdown) gives
    /// its grants up as it goes: before its children's ports hear of its
    /// exit and close, which may end their programs.
    fn drop(&mut self) {
        self.give_up_grants();
    }
}

/// `normal`, `shutdown` and `{shutdown, _}`: exits a transient child is not restarted for.
fn is_normal(reason: &Term) -> bool {
    match (as_atom(reason), as_tuple(reason)) {
        (Some("normal" | "shutdown"), _) => true,
        (_, Some([tag, _])) => as_atom(tag) == Some("shutdown"),
        _ => false,
    }
}
