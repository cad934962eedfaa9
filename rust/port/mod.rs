//! Remote ports: an external program represented by a process on this node
//! that speaks Erlang's port protocol to its owner.
//!
//! [`open`] parses the request and starts the program in its containment
//! (see [`crate::containment`]); the port process then relays data both
//! ways until the program ends or the port is closed, and its
//! [`child::Running`] guard makes sure the program (all of it) is stopped
//! whatever ends the port. A program with `{ready, _}` or `{watchdog, _}`
//! settings is watched by its port ([`health`]): readiness gates whoever
//! waits for its start, and a missed watchdog stops it.

pub mod child;
pub mod codec;
pub mod health;
pub mod lifecycle;
pub mod lookups;
pub mod privileges;
pub mod pty;
pub mod request;
pub mod settings;
pub mod spawn;
pub mod stdin;
pub mod watchdog;

mod outbound;
mod output;
mod process;
mod relay;
mod side;
mod usage;

pub(crate) use request::grace_period;

use crate::etf::{a, tuple};
use crate::node::Node;
use crate::node::process::Call;
use eetf::{Pid, Term};
use crate::notify::socket::NotifySocket;
use settings::PortSpec;
use std::sync::Arc;
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Who hears that a port's program has started, or why it could not.
pub enum OnStart {
    /// No one: the handle is all the opener wants (`open_port/2`, as erts,
    /// returns before the program runs). A start that fails for a reason
    /// of portnode's (not the program's) ends the handle with that reason.
    Nobody,
    /// A call to answer with `{ok, Handle, OsPid}` (`undefined` for a
    /// program that failed to start after the checks passed, and reports
    /// it as its exit status), or `{error, Reason}`; for a program with a
    /// `{ready, _}` setting, once it is ready.
    Reply(Call),
    /// A call to answer with `{ok, Handle}`: at once, unless the program
    /// asks for privileges, whose failure (`eperm`) `open_port` raises as
    /// erts's does; then once it runs (or `{error, Reason}`).
    ReplyHandle(Call),
    /// A task of portnode's (a supervisor): the OS pid, or the reason;
    /// as `Reply`, once a program with a `{ready, _}` setting is ready.
    Tell(oneshot::Sender<Result<Option<u32>, Term>>),
    /// The owner, a supervisor of portnode's, by message, for a program
    /// started by a restart grant (see [`open_granted`]):
    /// `{'$portnode_granted', Handle, {ok, OsPid | undefined} | {error, Reason}}`,
    /// `{error, not_restarted}` if the grant was given up.
    Granted(Pid),
}

/// Opens a port for `owner`: returns its handle as soon as its program is
/// asked of the spawner, or the error reason `erlang:open_port/2` would
/// raise (`badarg` forms carry the bad term). `caller` is what the caller's
/// VM sent of itself (see [`PortSpec::apply_caller`]), if anything.
/// `on_start` hears when the program runs; on an error it is given back.
pub fn open(node: &Arc<Node>, owner: &Pid, port_name: &Term, settings: &Term, caller: Option<&Term>, on_start: OnStart) -> Result<Pid, (Term, OnStart)> {
    open_as(node, owner, port_name, settings, caller, on_start, None)
}

/// Opens a port for `owner` (a supervisor of portnode's) whose program is
/// a restart grant's: the spawner starts it the moment program `after`
/// exits, without waiting for portnode (see [`crate::spawner::client::arm`]).
/// The owner hears by message ([`OnStart::Granted`]) whether it ran. Until
/// then the port is a handle and a request armed in the spawner, with its
/// pipes and containment made.
pub fn open_granted(node: &Arc<Node>, owner: &Pid, port_name: &Term, settings: &Term, after: u32) -> Result<Pid, Term> {
    open_as(node, owner, port_name, settings, None, OnStart::Granted(owner.clone()), Some(after as libc::pid_t)).map_err(|(reason, _)| reason)
}

fn open_as(node: &Arc<Node>, owner: &Pid, port_name: &Term, settings: &Term, caller: Option<&Term>, on_start: OnStart, after: Option<libc::pid_t>) -> Result<Pid, (Term, OnStart)> {
    let (mut spec, starting, notify) = match prepare(owner, port_name, settings, caller, after) {
        Ok(prepared) => prepared,
        Err(reason) => return Err((reason, on_start)),
    };
    // A relay serves an owner in its own VM, which is not this node.
    spec.relay = spec.relay.take().filter(|r| r.node == owner.node && r.node != *node.name());
    let (on_start, answer_now) = match on_start {
        OnStart::ReplyHandle(call) if spec.privileges == privileges::Privileges::default() => (OnStart::Nobody, Some(call)),
        other => (other, None),
    };
    let owner_pid = owner.clone();
    let relay = spec.relay.clone();
    // Before the handle runs (it may end at once, a program that cannot
    // start): it traps exits, is linked to its owner and relay, and has
    // said hello; the owner's answer, when it goes now, goes before
    // anything the handle sends.
    let pid = node.spawn_with(move |me| process::run(me, owner_pid, spec, starting, notify, on_start), |pid| {
        node.set_trap_exit(pid, true);
        node.link(pid, owner);
        if let Some(relay) = &relay {
            // Linked first: a relay that is already gone breaks the link at once.
            node.link(pid, relay);
            node.send(Some(pid), relay, tuple(vec![a("$portnode_relay_hello"), Term::from(pid.clone())]));
        }
        if let Some(call) = answer_now {
            node.send(Some(pid), &call.from, tuple(vec![call.tag.clone(), tuple(vec![a("ok"), Term::from(pid.clone())])]));
        }
    });
    Ok(pid)
}

/// Everything `open` does before the handle exists: the settings, the
/// checks erts makes, the containment, the notify socket, the pipes and
/// the spawner's request.
fn prepare(owner: &Pid, port_name: &Term, settings: &Term, caller: Option<&Term>, after: Option<libc::pid_t>) -> Result<(PortSpec, spawn::Starting, Option<NotifySocket>), Term> {
    let parsed = PortSpec::parse(port_name, settings).and_then(|mut spec| {
        caller.map_or(Ok(()), |c| spec.apply_caller(c))?;
        Ok(spec)
    });
    let spec = parsed.map_err(|settings::BadArg(bad)| {
        warn!(owner = %owner, argument = %bad, "open_port: bad or unsupported argument");
        tuple(vec![a("badarg"), bad])
    })?;
    let fail = |e: std::io::Error| {
        debug!(owner = %owner, program = %spec.name, error = %e, "open_port: cannot start program");
        a(spawn::errno_name(&e))
    };
    spawn::precheck(&spec).map_err(fail)?;
    let notify = match spec.lifecycle.needs_socket() {
        true => Some(NotifySocket::create(socket_owner(&spec)).map_err(|e| {
            warn!(owner = %owner, error = %e, "open_port: cannot make the program's notify socket");
            a(spawn::errno_name(&e))
        })?),
        false => None,
    };
    let mut jail = crate::containment::get().prepare().map_err(|e| {
        warn!(owner = %owner, error = %e, "open_port: cannot prepare the program's containment");
        a(spawn::errno_name(&e))
    })?;
    if let Err(refused) = jail.limit(&spec.limits) {
        jail.release();
        warn!(owner = %owner, program = %spec.name, limit = refused.limit, why = %refused.why, "open_port: a limit cannot be applied");
        // `portnode:open_port` raises `{notsup, {limits, Name}}`, with why in its error_info.
        let why = crate::etf::binary(refused.why.into_bytes());
        return Err(tuple(vec![a("notsup"), tuple(vec![a("limits"), a(refused.limit)]), why]));
    }
    let starting = spawn::start(&spec, jail, notify.as_ref().map(NotifySocket::path), after).map_err(fail)?;
    Ok((spec, starting, notify))
}

/// Who the notify socket (and its directory) belongs to: the user the
/// program runs as, when that is not portnode's.
fn socket_owner(spec: &PortSpec) -> Option<(libc::uid_t, libc::gid_t)> {
    let (uid, primary) = spec.privileges.uid?;
    // SAFETY: getegid cannot fail.
    let gid = spec.privileges.gid.or(primary).unwrap_or_else(|| unsafe { libc::getegid() });
    Some((uid, gid))
}
