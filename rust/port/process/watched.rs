//! The port's side of a watched program (see [`super::super::health`]):
//! readiness answers whoever waits for the start and tells the owner
//! `{H, ready}`; what the program says on its notify socket is checked
//! (the sender must be one of its processes) and passed on; a missed
//! watchdog or ready timeout stops it; and every stop ends by saying which
//! step ended the program.

use super::{Next, Port, Stop};
use crate::etf::{a, binary, int, tuple};
use crate::notify::message::{self, Notice};
use crate::port::child;
use crate::port::health::{Change, Event, Stream};
use eetf::Term;
use std::process::ExitStatus;
use tracing::{debug, warn};

impl Port {
    /// Output just read: it may hold the line that says the program is ready.
    pub(super) fn saw_output(&mut self, stream: Stream, bytes: &[u8]) {
        if let Some(Change::Ready) = self.health.as_mut().and_then(|h| h.saw_output(stream, bytes)) {
            self.became_ready();
        }
    }

    /// What the health watch reports.
    pub(super) fn on_health(&mut self, event: Event) -> Next {
        match event {
            Event::Datagram(datagram) => {
                if !self.program.holds(datagram.pid) {
                    debug!(port = %self.me.pid(), sender = datagram.pid, "notify: ignored a datagram from a process not the program's");
                    return Next::Continue;
                }
                for notice in message::parse(&datagram.bytes) {
                    if let Next::Stop(stop) = self.noticed(notice) {
                        return Next::Stop(stop);
                    }
                }
                Next::Continue
            }
            Event::ReadyTimeout(after) => {
                warn!(port = %self.me.pid(), program = %self.settings.name, os_pid = self.os_pid, after_ms = after.as_millis() as u64, "program not ready in time; stopping it");
                self.stop_for(tuple(vec![a("ready_timeout"), int(after.as_millis() as i64)]))
            }
            Event::WatchdogTimeout => {
                warn!(port = %self.me.pid(), program = %self.settings.name, os_pid = self.os_pid, "program missed its watchdog; stopping it");
                self.stop_for(a("watchdog_timeout"))
            }
        }
    }

    fn noticed(&mut self, notice: Notice) -> Next {
        if let Notice::MainPid(pid) = notice {
            // As systemd: a main pid must be one of the program's own.
            if !self.program.holds(pid as i32) {
                debug!(port = %self.me.pid(), main_pid = pid, "notify: ignored a MAINPID not the program's");
                return Next::Continue;
            }
        }
        let Some(health) = self.health.as_mut() else { return Next::Continue };
        match health.note(notice) {
            Some(Change::Ready) => self.became_ready(),
            Some(Change::WatchdogTriggered) => {
                warn!(port = %self.me.pid(), program = %self.settings.name, os_pid = self.os_pid, "program asked for its watchdog (WATCHDOG=trigger); stopping it");
                return self.stop_for(a("watchdog_timeout"));
            }
            Some(Change::Passed(notice)) => {
                if let Some(message) = passed(notice) {
                    self.to_owner(message);
                }
            }
            None => {}
        }
        Next::Continue
    }

    /// Tells whoever waits for the start, and the owner.
    fn became_ready(&mut self) {
        debug!(port = %self.me.pid(), os_pid = self.os_pid, "program ready");
        if let Some(on_start) = self.awaiting_start.take() {
            super::started(&self.me, *on_start, Ok(Some(self.os_pid)));
        }
        self.to_owner(a("ready"));
    }

    /// A stop the port decides (a watchdog, a ready timeout): within the
    /// kill timeout, and the handle then exits with `reason`.
    fn stop_for(&self, reason: Term) -> Next {
        // The owner is told how it ended, unless it waits for the start (and has no handle).
        let tell_owner = self.awaiting_start.is_none();
        Next::Stop(Box::new(Stop { grace: Some(self.settings.kill_timeout), call: None, tell_owner, reason, more_calls: Vec::new() }))
    }

    /// The program exited before it was ready, with someone waiting for it to be.
    pub(super) fn exited_before_ready(&self, status: ExitStatus) -> Term {
        warn!(port = %self.me.pid(), program = %self.settings.name, os_pid = self.os_pid, "program exited before it was ready");
        tuple(vec![a("exited_before_ready"), child::exit_report(status, true)])
    }

    /// The port is ending: a start still awaited fails with `reason`, and
    /// the handle (which its opener never had) goes quietly.
    pub(super) fn settle_start(&mut self, reason: Term) -> Term {
        let Some(on_start) = self.awaiting_start.take() else { return reason };
        self.me.unlink(&self.owner);
        super::started(&self.me, *on_start, Err(reason));
        a("normal")
    }
}

/// Why a program that failed to start (exec failed with `errno`, which
/// erts reports as its exit status) never became ready.
pub(super) fn never_ready(errno: i32) -> Term {
    tuple(vec![a("exited_before_ready"), tuple(vec![a("exit_status"), int(i64::from(errno))])])
}

/// A notice as the owner gets it: `{status, Text}`, `stopping`, `{errno,
/// N}`, `{mainpid, Pid}` (the others are the port's to act on).
fn passed(notice: Notice) -> Option<Term> {
    Some(match notice {
        Notice::Status(text) => tuple(vec![a("status"), binary(text)]),
        Notice::Stopping => a("stopping"),
        Notice::Errno(n) => tuple(vec![a("errno"), int(n)]),
        Notice::MainPid(pid) => tuple(vec![a("mainpid"), int(i64::from(pid))]),
        Notice::Ready | Notice::WatchdogKick | Notice::WatchdogTrigger => return None,
    })
}
