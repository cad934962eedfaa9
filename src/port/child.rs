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
use tokio::process::Child;
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
                reapers().spawn(stop(child, pgid, timeout, exited));
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

/// SIGTERM to the group, SIGKILL after `timeout`, reap; then SIGKILL to
/// whatever is left of the group (grandchildren that outlived the leader).
async fn stop(mut child: Child, pgid: u32, timeout: Duration, exited: bool) {
    let group = pgid as libc::pid_t;
    if !exited {
        // SAFETY: signalling the group this port created; the leader is not yet reaped.
        unsafe { libc::killpg(group, libc::SIGTERM) };
        if tokio::time::timeout(timeout, child.wait()).await.is_err() {
            debug!(pgid, "program ignored SIGTERM; sending SIGKILL");
            // SAFETY: as above.
            unsafe { libc::killpg(group, libc::SIGKILL) };
            let _ = child.wait().await;
        }
    }
    // SAFETY: the group id cannot be reused while any member lives.
    unsafe { libc::killpg(group, libc::SIGKILL) };
    watchdog::remove(pgid);
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
