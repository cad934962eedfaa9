//! Stopping a port's program on request (`portnode:stop/1,2`, a
//! supervisor inside portnode) or for a reason of the port's own (a missed
//! watchdog, a ready timeout): the program is moved out of the port and
//! stopped while the port keeps serving, and once it is gone the port says
//! which step ended it and exits.

use super::{Next, Port};
use crate::etf::{a, tuple};
use crate::node::process::Call;
use crate::port::child::Ended;
use eetf::Term;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tracing::info;

/// A stop to make, and what to do once the program is gone.
pub(super) struct Stop {
    pub(super) grace: Option<Duration>,
    /// `portnode:stop/1,2`'s call, answered `{ok, Ended}`.
    pub(super) call: Option<Call>,
    /// Tell the owner `{H, {stopped, Ended}}`: it did not ask for the stop
    /// and waits for no answer (a watchdog, a supervisor inside portnode).
    pub(super) tell_owner: bool,
    /// The handle's exit reason once the program is gone.
    pub(super) reason: Term,
    /// More `portnode:stop` calls that came while this stop was under way.
    pub(super) more_calls: Vec<Call>,
}

impl Stop {
    pub(super) fn asked(grace: Option<Duration>, call: Option<Call>) -> Next {
        let tell_owner = call.is_none();
        Next::Stop(Box::new(Stop { grace, call, tell_owner, reason: a("normal"), more_calls: Vec::new() }))
    }
}

/// A stop in progress: the program, moved out of the port, being stopped.
pub(super) type Stopping = Pin<Box<dyn Future<Output = Option<Ended>> + Send>>;

impl Port {
    /// A stop is done: answers and tells as it asks, and gives the exit reason.
    pub(super) fn stopped(&self, stop: Stop, ended: Option<Ended>) -> Term {
        let ended_term = ended.map(Ended::to_term);
        if let Some(ended) = &ended_term {
            info!(port = %self.me.pid(), program = %self.settings.name, os_pid = self.os_pid, ended = %ended, "program stopped");
        }
        let reply = ended_term.clone().map_or_else(|| a("ok"), |e| tuple(vec![a("ok"), e]));
        for call in stop.call.iter().chain(&stop.more_calls) {
            self.reply(call, reply.clone());
        }
        if let (true, Some(ended)) = (stop.tell_owner, ended_term) {
            self.to_owner(tuple(vec![a("stopped"), ended]));
        }
        stop.reason
    }
}
