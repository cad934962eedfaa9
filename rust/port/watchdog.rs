//! The watchdog: a small process forked at startup, before any thread
//! exists, that kills every program's process group if portnode dies
//! without doing so itself (`kill -9`, a crash). The parent-death signal
//! only reaches each program's first process; this reaches the whole group,
//! grandchildren included.
//!
//! portnode tells it of each group over a pipe; when the pipe reaches EOF
//! (portnode is gone, however it went), it SIGKILLs the groups left and exits.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

static PIPE: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Forks the watchdog. Call once, at the start of `main`, while the process
/// has a single thread.
pub fn start() -> io::Result<()> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fork in a single-threaded process; the child only runs `watch`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: the child owns its copy of both fds.
            unsafe { libc::close(fds[1]) };
            let read = unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fds[0])) };
            watch(read)
        }
        _ => {
            // SAFETY: the parent keeps only the write end.
            unsafe { libc::close(fds[0]) };
            let write = unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fds[1])) };
            let _ = PIPE.set(Mutex::new(write));
            Ok(())
        }
    }
}

fn send(op: u8, pgid: u32) {
    if let Some(pipe) = PIPE.get() {
        let mut record = [op, 0, 0, 0, 0];
        record[1..].copy_from_slice(&pgid.to_be_bytes());
        if let Ok(mut f) = pipe.lock() {
            // A 5-byte write to a pipe is atomic; a failure means the
            // watchdog is gone and there is nothing better to do.
            let _ = f.write_all(&record);
        }
    }
}

/// Tells the watchdog about a new process group.
pub fn add(pgid: u32) {
    send(b'+', pgid);
}

/// Tells the watchdog a process group has been dealt with.
pub fn remove(pgid: u32) {
    send(b'-', pgid);
}

fn watch(mut read: std::fs::File) -> ! {
    // SAFETY: plain syscalls in the freshly forked child.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        libc::prctl(libc::PR_SET_NAME, c"portnode-wd".as_ptr() as libc::c_ulong, 0, 0, 0);
        // Do not die with the terminal's ^C before portnode has cleaned up.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let mut groups = HashSet::new();
    let mut record = [0u8; 5];
    while read.read_exact(&mut record).is_ok() {
        let pgid = u32::from_be_bytes([record[1], record[2], record[3], record[4]]);
        match record[0] {
            b'+' => groups.insert(pgid),
            _ => groups.remove(&pgid),
        };
    }
    for pgid in groups {
        // SAFETY: signalling process groups this portnode created.
        unsafe { libc::killpg(pgid as libc::pid_t, libc::SIGKILL) };
    }
    // SAFETY: leave without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(0) }
}
