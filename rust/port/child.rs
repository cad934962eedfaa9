//! A running program: waiting for it, signalling it, and stopping it.
//!
//! Stopping a program means its stop signal (SIGTERM unless its
//! `stop_signal` says otherwise) to every process of its containment (its
//! cgroup, or its group and marked descendants), SIGKILL after the kill
//! timeout, and waiting until none is left and its first process is
//! reaped; [`Ended`] says which of those steps ended it. It runs as a tracked task, so that shutdown can wait for every
//! program to be gone, and it also runs from `Drop`: a port process that is
//! killed or aborted still stops its program.

use super::watchdog;
use crate::containment::Jail;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use crate::spawner::{self, ExitSlot};
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// How long a program killed with SIGKILL may take to be gone before
/// portnode says so in its log (it keeps waiting).
const KILLED_WARNING: Duration = Duration::from_secs(5);

/// Ends every closed port's grace (see `close_grace`): at shutdown, what
/// is left of the programs is stopped now.
pub fn end_graces() {
    graces().cancel();
}

/// Resolves once [`end_graces`] has been called.
pub async fn graces_ended() {
    graces().cancelled().await;
}

fn graces() -> &'static tokio_util::sync::CancellationToken {
    static GRACES: OnceLock<tokio_util::sync::CancellationToken> = OnceLock::new();
    GRACES.get_or_init(tokio_util::sync::CancellationToken::new)
}

/// Every reaper that is still at work.
pub fn reapers() -> &'static TaskTracker {
    static REAPERS: OnceLock<TaskTracker> = OnceLock::new();
    REAPERS.get_or_init(TaskTracker::new)
}

/// A program started by a port, owned until it is stopped and reaped.
pub struct Running {
    program: Option<(Child, Jail)>,
    kill_timeout: Duration,
    /// The first signal of every stop.
    stop_signal: i32,
    status: Option<ExitStatus>,
}

/// Which step of a stop ended the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its first process had exited on its own (what it left was stopped).
    OnItsOwn(ExitStatus),
    /// Its stop signal ended it (all of it) within the grace.
    StopSignal(i32),
    /// SIGKILL ended it, after this grace (zero: at once, `brutal_kill`).
    Killed(Duration),
}

impl Ended {
    /// As Erlang hears it: `{exited, {exit_status, N} | {exit_signal, Name}}`,
    /// `{stop_signal, Name}` or `{sigkill, GraceMs}`.
    pub fn to_term(self) -> eetf::Term {
        use crate::etf::{a, int, tuple};
        match self {
            Ended::OnItsOwn(status) => tuple(vec![a("exited"), exit_report(status, true)]),
            Ended::StopSignal(sig) => tuple(vec![a("stop_signal"), signal_term(sig)]),
            Ended::Killed(grace) => tuple(vec![a("sigkill"), int(grace.as_millis() as i64)]),
        }
    }
}

impl Running {
    pub fn new(child: Child, jail: Jail, kill_timeout: Duration, stop_signal: i32) -> Running {
        watchdog::add(&jail);
        Running { program: Some((child, jail)), kill_timeout, stop_signal, status: None }
    }

    /// Waits for the program's first process to exit (cancel-safe) and
    /// remembers its status. A status that cannot be had (an error from
    /// waitid) is logged and reported as 255, never as 0.
    /// (A poll function, not an `async fn`: the port loop holds this future all along.)
    pub fn wait(&mut self) -> impl std::future::Future<Output = ExitStatus> + '_ {
        std::future::poll_fn(move |cx| self.poll_wait(cx))
    }

    fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<ExitStatus> {
        if let Some(status) = self.status {
            return std::task::Poll::Ready(status);
        }
        let Some((child, jail)) = self.program.as_mut() else { return std::task::Poll::Pending };
        let status = match std::task::ready!(child.poll_exited(cx)) {
            Ok(s) => s,
            Err(e) => {
                warn!(os_pid = child.pid(), error = %e, "cannot learn how a program exited; reporting status 255");
                ExitStatus::from_raw(255 << 8)
            }
        };
        if jail.reaps_early() {
            child.reap();
        }
        self.status = Some(status);
        std::task::Poll::Ready(status)
    }

    /// Stops the program now and returns once all of it is gone: its stop
    /// signal, SIGKILL after `grace` (at once for zero, never for `None`);
    /// `None` if this guard held no program. Cancel-safe: if the caller
    /// goes away, `Drop` finishes the job.
    pub async fn terminate(&mut self, grace: Option<Duration>) -> Option<Ended> {
        let stop_signal = self.stop_signal;
        let (child, jail) = self.program.as_mut()?;
        let ended = stop(child, jail, stop_signal, grace).await;
        if let Some((_, jail)) = self.program.take() {
            release(jail);
        }
        Some(ended)
    }

    /// Stops the program (its stop signal, SIGKILL after its kill timeout)
    /// and returns once all of it is gone; at once if it has exited and
    /// left nothing behind.
    pub async fn stop(&mut self) -> Option<Ended> {
        let timeout = self.kill_timeout;
        self.terminate(Some(timeout)).await
    }

    /// True if process `pid` is one of the program's (see [`Jail::holds`]).
    pub fn holds(&self, pid: i32) -> bool {
        self.program.as_ref().is_some_and(|(_, jail)| jail.holds(pid))
    }

    /// The program's containment and its first process's pid, while held.
    pub fn jail(&self) -> Option<(&Jail, u32)> {
        self.program.as_ref().map(|(child, jail)| (jail, child.pid()))
    }

    /// This guard still holds a program (it was not moved out or stopped).
    pub fn is_held(&self) -> bool {
        self.program.is_some()
    }

    /// Moves the program into a new guard, leaving this one empty (its
    /// `wait` then never returns).
    pub fn detach(&mut self) -> Running {
        Running { program: self.program.take(), kill_timeout: self.kill_timeout, stop_signal: self.stop_signal, status: self.status }
    }

    /// Gives up the restart grant armed on the program, if one is (see
    /// [`spawner::client::disarm`]), without waiting for the spawner's
    /// answer: call it before closing any of the program's fds, which may
    /// end it. The spawner reads what portnode sent before it uses a
    /// grant, so a program that ends after this is not restarted, if the
    /// give-up went out at once: one that waits for room on a full socket
    /// to the spawner can come late, and the replacement then started is
    /// stopped by the grant's port, whose owner is gone or stopping it.
    pub fn give_up_grant(&self) {
        if let Some((child, _)) = &self.program {
            if !child.reaped && child.exit.get().is_none() {
                let _ = spawner::client::disarm(child.pid);
            }
        }
    }

    /// A guard that gives up the program's restart grant when dropped (see
    /// [`GrantGuard`]).
    pub fn grant_guard(&self) -> Option<GrantGuard> {
        self.program.as_ref().map(|(child, _)| GrantGuard { pid: child.pid, exit: child.exit.clone() })
    }

    /// Hands the program to a reaper task that stops it within the kill
    /// timeout; returns at once.
    pub fn stop_in_background(&mut self) {
        self.give_up_grant();
        let Some((mut child, mut jail)) = self.program.take() else { return };
        let (timeout, stop_signal) = (self.kill_timeout, self.stop_signal);
        match tokio::runtime::Handle::try_current() {
            Ok(_) => {
                reapers().spawn(async move {
                    // After the tasks that are ready and what the next poll
                    // of the runtime's I/O finds: a restart's open that has
                    // arrived meanwhile goes first (the usual end here, a
                    // program that has exited, costs two cgroup file reads).
                    tokio::task::yield_now().await;
                    stop(&mut child, &mut jail, stop_signal, Some(timeout)).await;
                    release(jail);
                });
            }
            Err(_) => {
                // No runtime left (process exit): kill everything outright.
                jail.kill_all();
                drop(child);
                release(jail);
            }
        }
    }

    /// Sends `signal` to the program's first process (not the others).
    pub fn signal(&self, signal: i32) -> bool {
        self.status.is_none() && self.program.as_ref().is_some_and(|(child, _)| child.signal(signal))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_in_background();
    }
}

fn release(jail: Jail) {
    watchdog::remove(&jail);
    jail.release();
}

/// `stop_signal` to all of the program (SIGKILL if `grace` is zero),
/// SIGKILL after `grace` (never if it is `None`); returns once no process
/// of it is left and its first process is reaped, with the step that
/// ended it.
async fn stop(child: &mut Child, jail: &mut Jail, stop_signal: i32, grace: Option<Duration>) -> Ended {
    // A program stopped is not to be restarted: a restart grant armed on
    // it (a supervisor child's) is given up before it is signalled, and
    // answered (if it was used meanwhile, the program had exited first).
    if child.try_exited().ok().flatten().is_none()
        && let Some(given_up) = spawner::client::disarm(child.pid)
    {
        let _ = given_up.await;
    }
    // The usual end: the program has exited and left nothing behind. One
    // look tells, and there is nothing to signal or wait for.
    let exited = child.try_exited().ok().flatten();
    if let (Some(status), true) = (exited, jail.is_empty()) {
        jail.kill_group();
        child.reap();
        return Ended::OnItsOwn(status);
    }
    // Its first process had exited on its own: what is left of it (a
    // daemon it started) is stopped as usual, but its own exit ended it.
    let mut ended = exited.map_or(Ended::StopSignal(stop_signal), Ended::OnItsOwn);
    if grace == Some(Duration::ZERO) {
        jail.kill_all();
        child.signal(libc::SIGKILL);
        ended = exited.map_or(Ended::Killed(Duration::ZERO), Ended::OnItsOwn);
    } else {
        jail.signal_all(stop_signal);
        // Once: a second SIGINT is "quit now" to many programs.
        if !jail.reaches(child.pid() as i32) {
            child.signal(stop_signal);
        }
    }
    if !gone(child, jail, grace).await {
        debug!(os_pid = child.pid(), signal = stop_signal, "program outlived its stop signal; sending SIGKILL");
        jail.kill_all();
        child.signal(libc::SIGKILL);
        ended = exited.map_or(Ended::Killed(grace.unwrap_or_default()), Ended::OnItsOwn);
        if !gone(child, jail, Some(KILLED_WARNING)).await {
            warn!(os_pid = child.pid(), "program not gone 5 s after SIGKILL; still waiting");
            gone(child, jail, None).await;
        }
    }
    // Whatever is left in the group (a fork in flight, a member that left
    // no trace to find it by), while the leader's pid still reserves the id.
    jail.kill_group();
    child.reap();
    ended
}

/// True once the first process has exited and nothing else of the program
/// is left, within `limit` (forever for `None`).
async fn gone(child: &mut Child, jail: &Jail, limit: Option<Duration>) -> bool {
    let both = async {
        let _ = child.exited().await;
        jail.wait_empty(None).await;
    };
    match limit {
        Some(limit) => tokio::time::timeout(limit, both).await.is_ok(),
        None => {
            both.await;
            true
        }
    }
}

/// How a program ended, as the owner hears it: `{exit_status, Code}` (a
/// signal death is 128 + N, as with ports), or with `signal_apart` (the
/// `exit_signal` setting) `{exit_signal, Name}` for a death by signal.
pub fn exit_report(status: ExitStatus, signal_apart: bool) -> eetf::Term {
    use crate::etf::{a, int, tuple};
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) if signal_apart => tuple(vec![a("exit_signal"), signal_term(sig)]),
        _ => tuple(vec![a("exit_status"), int(status_code(status))]),
    }
}

/// A signal as Erlang code names it (`sigterm`), or its number if it has no name.
pub fn signal_term(sig: i32) -> eetf::Term {
    signal_name(sig).map(|n| crate::etf::a(&n)).unwrap_or_else(|| crate::etf::int(i64::from(sig)))
}

/// The exit status as a port reports it: the code, or 128 + the signal.
pub fn status_code(status: ExitStatus) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(sig)) => 128 + i64::from(sig),
        _ => 0,
    }
}

/// The name of signal `n` as Erlang code spells it (`sigkill`), if it has one.
pub fn signal_name(n: i32) -> Option<String> {
    const NAMES: [&str; 15] = ["HUP", "INT", "QUIT", "ABRT", "KILL", "USR1", "USR2", "PIPE", "ALRM", "TERM", "CHLD", "CONT", "STOP", "TSTP", "WINCH"];
    NAMES.iter().find(|name| signal_number(name) == Some(n)).map(|name| format!("sig{}", name.to_ascii_lowercase()))
}

/// A signal by number, or by name (`term`, `sigterm`, `TERM`, ...).
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ABRT" => libc::SIGABRT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

/// Gives up a program's restart grant when dropped, unless the program
/// has exited: a port process killed (its task dropped) drops it before
/// the program's fds, whose closing may end the program.
pub struct GrantGuard {
    pid: libc::pid_t,
    exit: Arc<ExitSlot>,
}

impl Drop for GrantGuard {
    fn drop(&mut self) {
        // Not exited: not reaped either, so the pid is still the program's.
        if self.exit.get().is_none() {
            let _ = spawner::client::disarm(self.pid);
        }
    }
}

/// A program we started and have not reaped yet. Its exit is observed
/// without reaping it (the spawner tells, and keeps it a zombie, in both
/// containment modes), so that its pid (and, as a group leader, its pgid)
/// cannot be reused while we may still signal it; [`Child::reap`] ends
/// that. Dropping an unreaped child kills it and has it reaped.
pub struct Child {
    pid: libc::pid_t,
    exit: Arc<ExitSlot>,
    reaped: bool,
}

impl Child {
    /// A program the spawner has started (and holds until [`Child::reap`]).
    pub fn started(pid: libc::pid_t, exit: Arc<ExitSlot>) -> Child {
        Child { pid, exit, reaped: false }
    }

    /// Waits for the program to exit, without reaping it. Cancel-safe.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        Ok(self.exit.wait().await)
    }

    /// [`Child::exited`] as a poll function.
    pub fn poll_exited(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<ExitStatus>> {
        self.exit.poll_wait(cx).map(Ok)
    }

    /// The exit status, if the program has exited (it stays unreaped).
    pub fn try_exited(&mut self) -> io::Result<Option<ExitStatus>> {
        Ok(self.exit.get())
    }

    /// Has the program reaped once it has exited (it must have, or have
    /// been sent SIGKILL). From here on its pid is not ours to signal.
    pub fn reap(&mut self) {
        if !self.reaped {
            self.reaped = true;
            spawner::client::reap(self.pid);
        }
    }

    /// Sends `signal` to the program's first process only: not once it is
    /// reaped, when its pid may be another's.
    pub fn signal(&self, signal: i32) -> bool {
        // SAFETY: kill(2) on our own child, not reaped yet (the spawner
        // holds every program a zombie until `reap`): the pid is still ours.
        !self.reaped && unsafe { libc::kill(self.pid, signal) == 0 }
    }

    /// The program's pid (and process group id).
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // No time to wait for the spawner's answer: it reads this first
            // (if the socket to it has room: see `Running::give_up_grant`).
            let _ = spawner::client::disarm(self.pid);
            self.signal(libc::SIGKILL);
            self.reap();
        }
    }
}
