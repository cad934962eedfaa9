//! The spawner: a small process, like erts's `erl_child_setup`, that starts
//! every program for portnode.
//!
//! It is forked at the start of `main`, before the runtime and before any
//! program exists, so it holds no fd of any program, and its fd table and
//! memory stay small: the cost of starting a program does not grow with how
//! many run. portnode sends it what to start over a unix socket
//! ([`protocol`]); it clones and execs the program into its containment
//! ([`exec`]), hands the pipe ends back (SCM_RIGHTS, [`socket`]), and tells
//! portnode when the program exits. A restart grant ([`client::arm`]) has
//! it start a program the moment another exits, without asking portnode
//! first. It reaps a program only when portnode
//! says so, so that its pid (and process group id) stays reserved while
//! portnode may still signal it. portnode holds three fds per program
//! (stdin, stdout, stderr; two with `stderr_to_stdout`) and no pidfd.
//!
//! If portnode dies, the spawner dies (parent-death signal), and with it
//! every program's first process; the watchdog takes care of the rest. If
//! the spawner dies, portnode exits: it can no longer watch its programs.

pub mod client;
pub mod exec;
pub mod pipes;
mod pid_var;
pub mod protocol;
pub mod socket;
mod server;

pub use client::{attach, ExitSlot, Started};

use std::io;

/// Forks the spawner. Call once, at the start of `main`, while the process
/// has a single thread; then [`attach`] inside the runtime.
pub fn start() -> io::Result<libc::pid_t> {
    let (ours, theirs) = socket::pair()?;
    // SAFETY: getpid cannot fail.
    let portnode = unsafe { libc::getpid() };
    // SAFETY: fork in a single-threaded process; the child only runs `serve`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(ours);
            // SAFETY: a fresh child, which never uses the cookie.
            unsafe { crate::cookie::wipe_inherited() };
            server::serve(theirs, portnode)
        }
        pid => {
            drop(theirs);
            crate::containment::tree::set_spawner(pid);
            *client::FORKED.lock().unwrap_or_else(|e| e.into_inner()) = Some((ours, pid));
            Ok(pid)
        }
    }
}
