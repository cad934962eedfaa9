//! The watchdog: a small process forked at startup, before any thread
//! exists, that kills every program if portnode dies without doing so
//! itself (`kill -9`, a crash). The parent-death signal only reaches each
//! program's first process; this reaches all of them.
//!
//! portnode tells it over a pipe what to kill: its cgroup subtree (cgroup
//! mode), or each program's process group and the marker every program's
//! environment carries (process-group mode). When the pipe reaches EOF
//! (portnode is gone, however it went), it kills the subtree with
//! `cgroup.kill` and removes it, or SIGKILLs the groups left and every
//! process that carries the marker, then exits. It also removes
//! portnode's runtime directory (the programs' notify sockets).

use crate::containment::{cgroup, tree, Containment, Jail, WatchId};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

static PIPE: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Records: an op byte, then a big-endian u32 (a pgid, or the length of
/// the bytes that follow).
const ADD_GROUP: u8 = b'+';
const REMOVE_GROUP: u8 = b'-';
const CGROUP: u8 = b'C';
const MARKER: u8 = b'M';
const RUNTIME_DIR: u8 = b'R';
/// A subtree of this node's in a cgroup v1 hierarchy (limits): removed once
/// the v2 subtree is empty.
const V1_SUBTREE: u8 = b'V';

/// Forks the watchdog and returns its pid. Call once, at the start of
/// `main`, while the process has a single thread.
pub fn start() -> io::Result<i32> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fork in a single-threaded process; the child only runs `watch`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: a fresh child, which never uses the cookie.
            unsafe { crate::cookie::wipe_inherited() };
            // SAFETY: the child owns its copy of both fds.
            unsafe { libc::close(fds[1]) };
            let read = unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fds[0])) };
            watch(read)
        }
        pid => {
            // SAFETY: the parent keeps only the write end.
            unsafe { libc::close(fds[0]) };
            let write = unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fds[1])) };
            let _ = PIPE.set(Mutex::new(write));
            tree::set_watchdog(pid);
            Ok(pid)
        }
    }
}

fn send(op: u8, value: u32, bytes: &[u8]) {
    if let Some(pipe) = PIPE.get() {
        let mut record = Vec::with_capacity(5 + bytes.len());
        record.push(op);
        record.extend_from_slice(&value.to_be_bytes());
        record.extend_from_slice(bytes);
        if let Ok(mut f) = pipe.lock() {
            // Records are small (a pipe write of up to 4 KiB is atomic); a
            // failure means the watchdog is gone and nothing better can be done.
            let _ = f.write_all(&record);
        }
    }
}

/// Tells the watchdog what this node's containment is.
pub fn contain(containment: &Containment) {
    match containment {
        Containment::Cgroup(subtree) => {
            let path = subtree.path().as_os_str().as_encoded_bytes();
            send(CGROUP, path.len() as u32, path);
            for v1 in subtree.places().v1_subtrees() {
                let path = v1.as_os_str().as_encoded_bytes();
                send(V1_SUBTREE, path.len() as u32, path);
            }
        }
        Containment::ProcessGroup(marker) => {
            let prefix = marker.prefix();
            send(MARKER, prefix.len() as u32, prefix.as_bytes());
        }
    }
}

/// Tells the watchdog what directory to remove if portnode dies (its
/// runtime directory: it may not exist yet).
pub fn remove_at_death(dir: &std::path::Path) {
    let path = dir.as_os_str().as_encoded_bytes();
    send(RUNTIME_DIR, path.len() as u32, path);
}

/// Tells the watchdog about a new program.
pub fn add(jail: &Jail) {
    if let WatchId::Group(pgid) = jail.watch_id() {
        send(ADD_GROUP, pgid, &[]);
    }
}

/// Tells the watchdog a program has been dealt with.
pub fn remove(jail: &Jail) {
    if let WatchId::Group(pgid) = jail.watch_id() {
        send(REMOVE_GROUP, pgid, &[]);
    }
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
        // Do not die with a signal to portnode's whole group (the
        // terminal's ^C or hangup, a `kill -TERM -PGID`) before portnode
        // has cleaned up: the watchdog ends when portnode does (its pipe
        // closes), after its last sweep.
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let mut groups = HashSet::new();
    let (mut subtree, mut marker, mut runtime_dir, mut v1) = (None, None, None, Vec::new());
    let mut head = [0u8; 5];
    while read.read_exact(&mut head).is_ok() {
        let value = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        match head[0] {
            ADD_GROUP => {
                groups.insert(value);
            }
            REMOVE_GROUP => {
                groups.remove(&value);
            }
            op @ (CGROUP | MARKER | RUNTIME_DIR | V1_SUBTREE) => {
                let mut bytes = vec![0; value as usize];
                if read.read_exact(&mut bytes).is_err() {
                    break;
                }
                if op == V1_SUBTREE {
                    v1.push(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()));
                } else if op == CGROUP {
                    subtree = Some(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()));
                } else if op == RUNTIME_DIR {
                    runtime_dir = Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)));
                } else {
                    marker = Some(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
            _ => break,
        }
    }
    if let Some(subtree) = subtree {
        cgroup::kill_and_remove(&subtree);
    }
    // Its processes are gone with the v2 subtree's: these are empty now.
    for dir in v1 {
        cgroup::kill_and_remove(&dir);
    }
    for pgid in groups {
        // SAFETY: signalling process groups this portnode created.
        unsafe { libc::killpg(pgid as libc::pid_t, libc::SIGKILL) };
    }
    if let Some(prefix) = marker {
        kill_marked(&prefix);
    }
    if let Some(dir) = runtime_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    // SAFETY: leave without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(0) }
}

/// SIGKILLs every process whose environment carries a marker with
/// `prefix`, until none is left (a few rounds, for forks in flight).
fn kill_marked(prefix: &str) {
    let me = std::process::id() as i32;
    for _ in 0..10 {
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        let marked: Vec<i32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|&pid| pid != me && tree::carries_prefix(pid, prefix))
            .collect();
        if marked.is_empty() {
            return;
        }
        for pid in marked {
            // SAFETY: kill(2) on a process that carries this portnode's marker.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
