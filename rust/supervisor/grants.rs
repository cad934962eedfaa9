//! Restart grants: a permanent child of a `one_for_one` supervisor is
//! restarted by the spawner itself, the moment its program exits, instead
//! of after a report to portnode and a spawn request back (two wake-ups
//! and portnode's own work: see docs/performance.md, "Restarts").
//!
//! Once a child runs, the supervisor opens its next port ahead, as a grant
//! ([`crate::port::open_granted`]): its settings, containment and pipes
//! are made, and the spawner holds the request, armed on the running
//! program's pid. What the supervisor decides stays its own:
//!
//! - **Intensity.** A grant is armed only while the restarts of the last
//!   period, plus the grants armed, plus this one, stay within the
//!   intensity: a grant used is a restart OTP's supervisor would have
//!   made. A restart made the usual way first gives up grants until it
//!   fits beside them. Each restart, by a grant or not, is counted when
//!   the supervisor hears of it.
//! - **Stops.** A program portnode stops, or whose port closes, is not
//!   restarted by its grant. The grant is given up before anything that
//!   may end the program: before a stop signals it (and the stop waits
//!   for the spawner's answer), before a closing port closes its fds (a
//!   filter ends at EOF), when a port's task is dropped (its guard goes
//!   before its fds), when the supervisor is killed (its `Drop`) or stops
//!   its children (every grant first, then each child), and at portnode's
//!   shutdown (every grant, before any port). The spawner reads what
//!   portnode sent before it uses a grant (see
//!   [`crate::spawner::client::disarm`]), so a give-up written before the
//!   program's end wins. A grant the spawner used before the give-up was
//!   written replaced a program that had ended on its own first: the
//!   replacement is adopted (and counted), then stopped. Only where
//!   portnode does not wait for the spawner's answer (a port's end, a
//!   dropped task, a killed supervisor, the shutdown), a give-up queued
//!   behind a full socket to the spawner can come late; what the grant
//!   started then is stopped at once, its port's owner being gone or
//!   stopping it.
//! - **Nothing of the old program left.** The spawner starts the
//!   replacement only if the old program's leaf cgroup is empty
//!   (`populated 0`); a program that left a child behind is restarted the
//!   usual way, after its port has stopped what was left. So grants need
//!   cgroup mode: with process groups, children restart the usual way.
//! - **Only where nothing else decides.** No grant for `one_for_all` or
//!   `rest_for_one` (siblings are stopped first), `transient` or
//!   `temporary` children (the exit reason decides), children that say
//!   they are ready (the restart waits for it), or beyond
//!   [`crate::spawner::client::MAX_GRANTS`] armed in portnode.
//!
//! Every grant's port tells the supervisor once, by message
//! (`$portnode_granted`), whether its program ran.

use super::request::Request;
use super::spec::{Restart, Strategy};
use super::{Retired, Supervisor};
use crate::etf::a;
use eetf::{Pid, Term};
use std::time::Instant;
use tracing::{debug, error, info, warn};

impl Supervisor {
    /// How many grants are armed.
    pub(super) fn armed(&self) -> usize {
        self.children.iter().filter(|c| c.grant.is_some()).count()
    }

    /// Arms a restart grant for child `i`, if it may have one (see the
    /// module's documentation) and the intensity has room for it.
    pub(super) async fn arm(&mut self, i: usize) {
        let child = &self.children[i];
        let eligible = self.strategy == Strategy::OneForOne
            && child.spec.restart == Restart::Permanent
            && !child.spec.waits_ready
            && child.grant.is_none()
            && child.handle.is_some()
            && crate::containment::get().grants_restarts()
            && crate::spawner::client::room_for_grant();
        let Some(os_pid) = child.os_pid.filter(|_| eligible) else { return };
        if self.intensity.recent(Instant::now()) + self.armed() + 1 > self.intensity.max() {
            return;
        }
        let spec = &self.children[i].spec;
        // Users and groups are looked up off the runtime thread.
        let lookups = crate::port::lookups::prepare(&spec.settings).await;
        let opened = crate::port::lookups::with(lookups, || crate::port::open_granted(self.me.node(), self.me.pid(), &spec.port_name, &spec.open_settings, os_pid));
        match opened {
            Ok(grant) => self.children[i].grant = Some(grant),
            // It will be restarted the usual way, which reports why.
            Err(reason) => debug!(supervisor = %self.me.pid(), child = %spec.id, reason = %reason, "no restart grant"),
        }
    }

    /// Gives up every grant armed, without waiting for the answers (see
    /// [`Supervisor::settle_grant`]).
    pub(super) fn give_up_grants(&self) {
        for child in self.children.iter().filter(|c| c.grant.is_some()) {
            if let Some(os_pid) = child.os_pid {
                let _ = crate::spawner::client::give_up(os_pid as libc::pid_t);
            }
        }
    }

    /// Gives up child `i`'s grant, if it has one, and waits for the
    /// answer. A grant used meanwhile is adopted (its restart counted):
    /// false if that restart was one too many.
    pub(super) async fn settle_grant(&mut self, i: usize) -> bool {
        let Some(grant) = self.children[i].grant.take() else { return true };
        if let Some(os_pid) = self.children[i].os_pid {
            // The answer comes to the grant's port, which tells us.
            let _ = crate::spawner::client::give_up(os_pid as libc::pid_t);
        }
        match self.wait_granted(&grant).await {
            Ok(os_pid) => self.replace(i, grant, os_pid),
            Err(_) => true,
        }
    }

    /// Waits for grant port `grant` to say whether its program ran; other
    /// messages wait their turn. Its exit first (it was killed) is a no.
    pub(super) async fn wait_granted(&mut self, grant: &Pid) -> Result<Option<u32>, Term> {
        if let Some(pos) = self.deferred.iter().position(|m| Request::granted_of(m, grant).is_some()) {
            let msg = self.deferred.remove(pos);
            return msg.and_then(|m| Request::granted_of(&m, grant)).unwrap_or_else(|| Err(a("noproc")));
        }
        if self.deferred.iter().any(|m| Request::is_exit_of(m, grant)) {
            return Err(a("noproc"));
        }
        loop {
            let msg = self.me.recv().await;
            if let Some(outcome) = Request::granted_of(&msg, grant) {
                return outcome;
            }
            let gone = Request::is_exit_of(&msg, grant);
            self.deferred.push_back(msg);
            if gone {
                return Err(a("noproc"));
            }
        }
    }

    /// Child `i`'s grant started its program as `handle`: the restart is
    /// counted and the child's handle is `handle`; another grant is armed.
    /// `Some(shutdown)` if the restart was one too many.
    pub(super) async fn adopt(&mut self, i: usize, handle: Pid, os_pid: Option<u32>) -> Option<Term> {
        if !self.replace(i, handle, os_pid) {
            return self.shut_down_for(i).await;
        }
        self.arm(i).await;
        None
    }

    /// Child `i`'s program is `handle`'s from now on, restarted by its
    /// grant; its old handle is retired. False if the intensity is exceeded.
    fn replace(&mut self, i: usize, handle: Pid, os_pid: Option<u32>) -> bool {
        let within = self.intensity.add(Instant::now());
        let child = &mut self.children[i];
        if let Some(old) = child.handle.take() {
            self.retired.push(Retired { handle: old, id: child.spec.id.clone(), os_pid: child.os_pid.unwrap_or(0), ended: child.ended.take() });
        }
        info!(supervisor = %self.me.pid(), child = %child.spec.id, old_os_pid = child.os_pid.unwrap_or(0), os_pid = os_pid.unwrap_or(0), "child restarted by its restart grant");
        child.handle = Some(handle);
        child.os_pid = os_pid;
        child.ended = None;
        child.stopped = None;
        within
    }

    /// A retired handle (see [`Supervisor::replace`]) exited: logged, as a
    /// child's exit is.
    pub(super) fn retired_exited(&mut self, from: &Pid, reason: &Term) {
        let Some(pos) = self.retired.iter().position(|r| r.handle == *from) else { return };
        let Retired { id, os_pid, ended, .. } = self.retired.swap_remove(pos);
        let reason = match (crate::etf::as_atom(reason), ended) {
            (Some("normal"), Some(ended)) => ended,
            _ => reason.clone(),
        };
        warn!(supervisor = %self.me.pid(), child = %id, os_pid, reason = %reason, restart = "by its restart grant", "child terminated");
    }

    /// The restart intensity is reached: every child is stopped, and the
    /// supervisor exits with `shutdown`.
    pub(super) async fn shut_down_for(&mut self, i: usize) -> Option<Term> {
        error!(supervisor = %self.me.pid(), child = %self.children[i].spec.id, "reached_max_restart_intensity: stopping children and shutting down");
        self.terminate_all().await;
        Some(a("shutdown"))
    }
}
