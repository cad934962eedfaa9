//! A running program: waiting for it, signalling it, and stopping it.
//!
//! Stopping a program means SIGTERM to its process group, SIGKILL after the
//! kill timeout, and reaping it. It runs as a tracked task, so that shutdown
//! can wait for every program to be gone, and it also runs from `Drop`: a
//! port process that is killed or aborted still stops its program.

use super::watchdog;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::time::Duration;
use super::spawn::Child;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// Every reaper that is still at work.
pub fn reapers() -> &'static TaskTracker {
    static REAPERS: OnceLock<TaskTracker> = OnceLock::new();
    REAPERS.get_or_init(TaskTracker::new)
}

/// A program started by a port, owned until it is stopped and reaped.
pub struct Running {
    child: Option<Child>,
    pgid: u32,
    kill_timeout: Duration,
    status: Option<ExitStatus>,
}

impl Running {
    pub fn new(child: Child, pgid: u32, kill_timeout: Duration) -> Running {
        watchdog::add(pgid);
        Running { child: Some(child), pgid, kill_timeout, status: None }
    }

    /// Waits for the program to exit (cancel-safe) and remembers its status.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = match self.child.as_mut() {
            Some(child) => match child.wait().await {
                Ok(s) => s,
                Err(_) => std::os::unix::process::ExitStatusExt::from_raw(0),
            },
            None => std::future::pending().await,
        };
        self.status = Some(status);
        status
    }

    /// Stops the program now and returns once it is reaped: SIGTERM to its
    /// group, SIGKILL after `grace` (at once for zero, never for `None`).
    /// Cancel-safe: if the caller goes away, `Drop` finishes the job.
    pub async fn terminate(&mut self, grace: Option<Duration>) {
        let exited = self.status.is_some();
        if let Some(child) = self.child.as_mut() {
            stop(child, self.pgid, grace, exited).await;
            self.child = None;
            watchdog::remove(self.pgid);
        }
    }

    /// Sends `signal` to the program's first process (not its group).
    pub fn signal(&self, signal: i32) -> bool {
        if self.status.is_some() {
            return false;
        }
        // SAFETY: kill(2) on a child we have not reaped, so the pid is still ours.
        unsafe { libc::kill(self.pgid as libc::pid_t, signal) == 0 }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else { return };
        let (pgid, timeout, exited) = (self.pgid, self.kill_timeout, self.status.is_some());
        match tokio::runtime::Handle::try_current() {
            Ok(_) => {
                reapers().spawn(async move {
                    let mut child = child;
                    stop(&mut child, pgid, Some(timeout), exited).await;
                    watchdog::remove(pgid);
                });
            }
            Err(_) => {
                // No runtime left (process exit): kill the group outright.
                // SAFETY: signalling the group this port created.
                unsafe { libc::killpg(pgid as libc::pid_t, libc::SIGKILL) };
                drop(child);
                watchdog::remove(pgid);
            }
        }
    }
}

/// SIGTERM to the group, SIGKILL after `grace` (at once if it is zero,
/// never if it is `None`), reap; then SIGKILL to whatever is left of the
/// group (grandchildren that outlived the leader).
async fn stop(child: &mut Child, pgid: u32, grace: Option<Duration>, exited: bool) {
    let group = pgid as libc::pid_t;
    if !exited {
        let first = if grace == Some(Duration::ZERO) { libc::SIGKILL } else { libc::SIGTERM };
        // SAFETY: signalling the group this port created; the leader is not yet reaped.
        unsafe { libc::killpg(group, first) };
        let waited = match grace {
            Some(grace) => tokio::time::timeout(grace, child.wait()).await.is_ok(),
            None => {
                let _ = child.wait().await;
                true
            }
        };
        if !waited {
            debug!(pgid, "program ignored SIGTERM; sending SIGKILL");
            // SAFETY: as above.
            unsafe { libc::killpg(group, libc::SIGKILL) };
            let _ = child.wait().await;
        }
    }
    // SAFETY: the group id cannot be reused while any member lives.
    unsafe { libc::killpg(group, libc::SIGKILL) };
}

/// How a program ended, as the owner hears it: `{exit_status, Code}` (a
/// signal death is 128 + N, as with ports), or with `signal_apart` (the
/// `exit_signal` setting) `{exit_signal, Name}` for a death by signal.
pub fn exit_report(status: ExitStatus, signal_apart: bool) -> eetf::Term {
    use crate::etf::{a, int, tuple};
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) if signal_apart => {
            let name = signal_name(sig).map(|n| a(&n)).unwrap_or_else(|| int(i64::from(sig)));
            tuple(vec![a("exit_signal"), name])
        }
        _ => tuple(vec![a("exit_status"), int(status_code(status))]),
    }
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
