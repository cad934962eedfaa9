//! Remote ports: an external program represented by a process on this node
//! that speaks Erlang's port protocol to its owner.
//!
//! [`open`] parses the request and starts the program in its containment
//! (see [`crate::containment`]); the port process then relays data both
//! ways until the program ends or the port is closed, and its
//! [`child::Running`] guard makes sure the program (all of it) is stopped
//! whatever ends the port.

pub mod child;
pub mod codec;
pub mod privileges;
pub mod request;
pub mod settings;
pub mod spawn;
pub mod stdin;
pub mod watchdog;

mod outbound;
mod output;
mod process;

pub(crate) use request::grace_period;

use crate::etf::{a, tuple};
use crate::node::Node;
use eetf::{Pid, Term};
use settings::PortSpec;
use std::sync::Arc;
use tracing::{debug, warn};

/// An open port: its handle, and the OS pid of its program (none if the
/// program failed to start after the checks passed).
pub struct Opened {
    pub handle: Pid,
    pub os_pid: Option<u32>,
}

/// Opens a port for `owner`, or returns the error reason `erlang:open_port/2`
/// would raise (`badarg` forms carry the bad term). `caller` is what the
/// caller's VM sent of itself (see [`PortSpec::apply_caller`]), if anything.
pub fn open(node: &Arc<Node>, owner: &Pid, port_name: &Term, settings: &Term, caller: Option<&Term>) -> Result<Opened, Term> {
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
    let owner_pid = owner.clone();
    let jail = crate::containment::get().prepare().map_err(|e| {
        warn!(owner = %owner, error = %e, "open_port: cannot prepare the program's containment");
        a(spawn::errno_name(&e))
    })?;
    let (pid, os_pid) = match spawn::spawn(&spec, jail) {
        Ok(spawned) => {
            let os_pid = spawned.os_pid;
            (node.spawn(move |me| process::run(me, owner_pid, spec, spawned)), Some(os_pid))
        }
        Err(e) => match spawn::failed_in_child(&e) {
            Some(errno) => (node.spawn(move |me| process::failed_start(me, owner_pid, spec, errno)), None),
            None => return Err(fail(e)),
        },
    };
    // Before the owner hears of the handle: trap exits, and link to the owner.
    node.set_trap_exit(&pid, true);
    node.link(&pid, owner);
    Ok(Opened { handle: pid, os_pid })
}
