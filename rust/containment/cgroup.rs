//! A cgroup v2 subtree per portnode, and a leaf in it per program.
//!
//! The subtree is `<portnode's own cgroup>/portnode-<pid>` (or the same
//! under the directory `--cgroup PATH` names). A leaf is created (or taken
//! from a small pool of empty ones: a mkdir and an rmdir cost ~45 µs each)
//! before the program starts; the child writes itself into the leaf's
//! `cgroup.procs` before it execs. An exited process leaves its cgroup at
//! once, zombie or not, so `populated 0` means the program is gone.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tracing::warn;

/// Empty leaves kept for reuse, at most.
const POOL: usize = 64;


/// This portnode's subtree.
pub struct Subtree {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    next: AtomicU64,
    /// Empty leaves: their number, and the CPU time their `cpu.stat` has
    /// counted so far (read as a leaf comes back, not as it is taken: the
    /// read would delay a restart).
    pool: Mutex<Vec<(u64, u64)>>,
    /// Each started program's leaf number, by its first process's pid,
    /// until the leaf is released: what a restart grant checks is empty
    /// before it starts the program's replacement (see [`Subtree::leaf_of`]).
    running: Mutex<std::collections::HashMap<u32, u64>>,
    /// Where the controllers that limits need are.
    places: super::limits::Places,
}

impl Shared {
    fn leaf_dir(&self, number: u64) -> PathBuf {
        self.path.join(format!("p{number}"))
    }
}

impl Subtree {
    /// The leaf directory of the program whose first process is `pid`,
    /// open (`O_PATH`), while its leaf is held.
    pub fn leaf_of(&self, pid: u32) -> Option<OwnedFd> {
        let number = *self.shared.running.lock().unwrap_or_else(|e| e.into_inner()).get(&pid)?;
        let path = CString::new(self.shared.leaf_dir(number).as_os_str().as_bytes()).ok()?;
        // SAFETY: a valid NUL-terminated path; the fd returned is ours.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        // SAFETY: a new fd, owned from here.
        (fd >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }

    /// A subtree under portnode's own cgroup in the cgroup v2 hierarchy.
    pub fn create_auto() -> io::Result<Subtree> {
        let mount = v2_mount()?;
        let own = fs::read_to_string("/proc/self/cgroup")?
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            .ok_or_else(|| io::Error::other("no cgroup v2 entry in /proc/self/cgroup"))?;
        Subtree::create_in(&mount.join(own.trim_start_matches('/')))
    }

    /// A subtree under the cgroup directory `dir`.
    pub fn create_in(dir: &Path) -> io::Result<Subtree> {
        let named = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {}: {e}", dir.display()));
        if !dir.join("cgroup.procs").exists() {
            return Err(io::Error::other(format!("{} is not a cgroup v2 directory", dir.display())));
        }
        // Moving a child from portnode's cgroup into the subtree needs write
        // access to their common ancestor's cgroup.procs.
        let procs = c_path(&dir.join("cgroup.procs"))?;
        // SAFETY: access(2) on a valid NUL-terminated path.
        if unsafe { libc::access(procs.as_ptr(), libc::W_OK) } != 0 {
            return Err(named("cannot write cgroup.procs of", io::Error::last_os_error()));
        }
        let path = dir.join(format!("portnode-{}", std::process::id()));
        remove_abandoned(dir, &path);
        if path.exists() {
            // Left by an earlier portnode with this pid: clear it out.
            kill_and_remove(&path);
        }
        fs::create_dir(&path).map_err(|e| named("cannot create a cgroup in", e))?;
        // The root cgroup has no cgroup.kill; every other one has since Linux 5.14.
        if !path.join("cgroup.kill").exists() {
            let _ = fs::remove_dir(&path);
            return Err(io::Error::other(format!("{} has no cgroup.kill (Linux 5.14 or later is needed)", path.display())));
        }
        let places = super::limits::Places::find(&path);
        Ok(Subtree { shared: Arc::new(Shared { path, next: AtomicU64::new(1), pool: Mutex::new(Vec::new()), running: Mutex::default(), places }) })
    }

    /// The subtree's directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Where the controllers are (see [`super::limits`]).
    pub fn places(&self) -> &super::limits::Places {
        &self.shared.places
    }

    /// An empty leaf for one program.
    pub fn leaf(&self) -> io::Result<Leaf> {
        // A leaf that accounts memory is never reused: its peak would be
        // another program's.
        let pooled = !self.shared.places.v2_memory();
        let reused = if pooled { self.shared.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() } else { None };
        // A reused leaf's cpu.stat still counts its earlier programs' time.
        let (number, cpu_base) = match reused {
            Some(reused) => reused,
            None => {
                let number = self.shared.next.fetch_add(1, Ordering::Relaxed);
                fs::create_dir(self.shared.leaf_dir(number))?;
                (number, 0)
            }
        };
        let dir = self.shared.leaf_dir(number);
        use std::os::unix::fs::OpenOptionsExt;
        let handle = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(&dir);
        match handle {
            Ok(f) => Ok(Leaf { number, pid: 0, handle: Some(f.into()), killed: false.into(), emptied: false.into(), cpu_base, limits: None, shared: self.shared.clone() }),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Kills what is left and removes the subtree (at shutdown).
    pub fn remove(&self) {
        kill_and_remove(&self.shared.path);
        self.shared.places.remove();
    }
}

/// One program's leaf cgroup.
pub struct Leaf {
    /// Its directory is `p<number>` in the subtree: a number, not a path,
    /// is what every held program keeps.
    number: u64,
    /// The program's first process, once it runs (0 before).
    pid: u32,
    /// The leaf's directory, open until the child is in it (for
    /// `clone3(CLONE_INTO_CGROUP)`, or to open its `cgroup.procs`).
    handle: Option<OwnedFd>,
    /// `cgroup.kill` was written: the leaf is not reused (a program cloned
    /// into it soon after can be killed too: measured here with clone3).
    killed: std::sync::atomic::AtomicBool,
    /// It was seen empty (`populated 0`) after the program started: nothing
    /// can enter it again, so `release` need not look a second time.
    emptied: std::sync::atomic::AtomicBool,
    /// Its `cpu.stat` usage before the program (see [`Subtree::leaf`]).
    cpu_base: u64,
    /// The program's limits, applied (boxed: most programs have none).
    limits: Option<Box<super::limits::Applied>>,
    shared: Arc<Shared>,
}

impl Leaf {
    fn dir(&self) -> PathBuf {
        self.shared.leaf_dir(self.number)
    }

    /// The leaf's directory.
    pub fn path(&self) -> PathBuf {
        self.dir()
    }

    /// The leaf's directory, open, for the program to start in.
    pub fn take_dir(&mut self) -> Option<OwnedFd> {
        self.handle.take()
    }

    /// Applies the program's limits, before it starts.
    pub fn limit(&mut self, limits: &super::limits::Limits) -> Result<(), super::limits::Refused> {
        if !limits.is_empty() {
            self.limits = Some(Box::new(self.shared.places.apply(&self.dir(), limits)?));
        }
        Ok(())
    }

    /// The `cgroup.procs` of the program's v1 cgroups, for its child to join.
    pub fn take_joins(&mut self) -> Vec<OwnedFd> {
        self.limits.as_mut().map(|l| l.take_joins()).unwrap_or_default()
    }

    /// Where the program's memory is counted.
    fn memory<'a>(&'a self, dir: &'a Path) -> super::stats::Memory<'a> {
        use super::stats::Memory;
        match self.limits.as_deref().and_then(|l| l.v1_memory()) {
            _ if self.shared.places.v2_memory() => Memory::V2(dir),
            Some(v1) => Memory::V1(v1),
            None => Memory::Rss,
        }
    }

    /// What the program uses now (see [`super::stats`]).
    pub fn usage(&self) -> super::stats::Usage {
        let dir = self.dir();
        super::stats::of_cgroup(&dir, self.cpu_base, &self.memory(&dir))
    }

    /// The CPU time of the program's processes, in µs.
    pub fn cpu_us(&self) -> u64 {
        super::stats::cgroup_cpu_us(&self.dir()).saturating_sub(self.cpu_base)
    }

    /// Its memory's peak, where a controller keeps one; and its memory
    /// limit, if it hit it (how many of its processes the OOM killer took).
    pub fn memory_peak_and_limit_hit(&self) -> (Option<u64>, Option<u64>) {
        let hit = self.memory_limit_hit();
        let dir = self.dir();
        (super::stats::peak(&self.memory(&dir)), hit)
    }

    /// The memory limit, if its OOM kill ended any process (read only with a limit).
    pub fn memory_limit_hit(&self) -> Option<u64> {
        let limit = self.limits.as_deref().and_then(|l| l.memory)?;
        let dir = self.dir();
        (super::stats::oom_kills(&self.memory(&dir)) > 0).then_some(limit)
    }

    /// The child is in (or failed to start): the fd is no longer needed.
    pub fn started(&mut self, pid: u32) {
        self.handle = None;
        self.pid = pid;
        self.shared.running.lock().unwrap_or_else(|e| e.into_inner()).insert(pid, self.number);
    }

    /// Sends `signal` to every process in the leaf.
    pub fn signal_all(&self, signal: i32) {
        for pid in members(&self.dir()) {
            // SAFETY: kill(2); a pid listed in our leaf is one of the program's processes.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// True if process `pid` is in the leaf.
    pub fn holds(&self, pid: libc::pid_t) -> bool {
        pid > 0 && members(&self.dir()).contains(&pid)
    }

    /// SIGKILLs every process in the leaf at once.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        if let Err(e) = fs::write(self.dir().join("cgroup.kill"), "1") {
            warn!(cgroup = %self.dir().display(), error = %e, "cgroup.kill failed; killing one by one");
            self.signal_all(libc::SIGKILL);
        }
    }

    /// True if the leaf holds no process now, as one read of
    /// `cgroup.events` says (false if it cannot be read: out of fds, say).
    pub fn is_empty(&self) -> bool {
        let empty = read_events(&self.dir().join("cgroup.events")).is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 0"));
        if empty {
            self.emptied.store(true, Ordering::Relaxed);
        }
        empty
    }

    /// Returns once the leaf holds no process.
    pub async fn wait_empty(&self) {
        let path = self.dir().join("cgroup.events");
        match Events::open(&path) {
            Ok(events) => {
                while events.populated() {
                    events.changed().await;
                }
            }
            // Cannot watch it: look again every few milliseconds.
            Err(_) => {
                while populated(&path) {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
        self.emptied.store(true, Ordering::Relaxed);
    }

    /// Returns the empty leaf to the pool, or removes it.
    pub fn release(mut self) {
        if self.pid != 0 {
            let mut running = self.shared.running.lock().unwrap_or_else(|e| e.into_inner());
            if running.get(&self.pid) == Some(&self.number) {
                running.remove(&self.pid);
            }
        }
        let limited = self.limits.take().is_some_and(|mut l| {
            l.release();
            l.in_leaf
        });
        if self.killed.load(Ordering::Relaxed) || limited || self.shared.places.v2_memory() {
            if let Err(e) = fs::remove_dir(&self.dir()) {
                warn!(cgroup = %self.dir().display(), error = %e, "cannot remove a program's cgroup");
            }
            return;
        }
        if !self.emptied.load(Ordering::Relaxed) && populated(&self.dir().join("cgroup.events")) {
            // Never reuse a leaf that still holds a process; kill what is
            // in it, and leave the directory to the subtree's removal
            // (waiting here would hold up portnode's thread).
            let _ = fs::write(self.dir().join("cgroup.kill"), "1");
            return;
        }
        let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL {
            // Empty: no process can add to its CPU time before its next program.
            pool.push((self.number, super::stats::cgroup_cpu_us(&self.dir())));
        } else if let Err(e) = fs::remove_dir(&self.dir()) {
            warn!(cgroup = %self.dir().display(), error = %e, "cannot remove a program's cgroup");
        }
    }
}

/// The pids in cgroup `dir`.
fn members(dir: &Path) -> Vec<libc::pid_t> {
    fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// A `cgroup.events` file's text (a few dozen bytes), read with one `read`.
fn read_events(events: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 128];
    let n = fs::File::open(events).and_then(|mut f| f.read(&mut buf))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// True if `cgroup.events` says `populated 1`, or cannot be read for any
/// reason but the cgroup's being gone (out of fds, say): what cannot be
/// seen is not taken for empty.
fn populated(events: &Path) -> bool {
    match read_events(events) {
        Ok(text) => text.lines().any(|l| l.trim() == "populated 1"),
        // Gone: nothing in it.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => false,
        Err(_) => true,
    }
}

/// Removes the subtrees in `dir` of portnodes that are gone, when empty:
/// left behind when portnode and its watchdog were SIGKILLed together (a
/// kill of their whole group, the OOM killer). One that still holds
/// processes is left alone, with a warning: its portnode may live in
/// another pid namespace.
fn remove_abandoned(dir: &Path, own: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("portnode-")).and_then(|p| p.parse::<u32>().ok()) else { continue };
        let path = entry.path();
        if path == own || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match fs::read_to_string(path.join("cgroup.events")) {
            Ok(events) if events.lines().any(|l| l.trim() == "populated 0") => remove_tree(&path),
            Ok(_) => warn!(cgroup = %path.display(), "the cgroup of a portnode that is gone still holds processes; left alone"),
            Err(_) => {} // not a cgroup, or gone meanwhile
        }
    }
}

/// SIGKILLs everything under `dir`, waits (bounded) for it to empty, and
/// removes it and every cgroup below it.
pub fn kill_and_remove(dir: &Path) {
    if let Ok(mut f) = fs::OpenOptions::new().write(true).open(dir.join("cgroup.kill")) {
        let _ = f.write_all(b"1");
    }
    let events = dir.join("cgroup.events");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while populated(&events) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    remove_tree(dir);
}

pub(super) fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(cgroup = %dir.display(), error = %e, "cannot remove cgroup");
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on pure-v2
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones).
fn v2_mount() -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2")).then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or_else(|| io::Error::other("no cgroup2 file system is mounted"))
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `cgroup.events`, open and registered for `POLLPRI`: kernfs wakes its
/// pollers when the file changes. (An inotify instance would do too, but
/// closing one waits for an SRCU grace period: ~15 ms of portnode's only
/// thread per program here.)
struct Events {
    fd: AsyncFd<OwnedFd>,
}

impl Events {
    fn open(path: &Path) -> io::Result<Events> {
        let file: OwnedFd = fs::File::open(path)?.into();
        // SAFETY: the AsyncFd owns the fd from here on; nothing else closes or replaces it.
        let fd = unsafe { AsyncFd::register_with_interest(file, tokio::io::Interest::PRIORITY) }.map_err(io::Error::from)?;
        Ok(Events { fd })
    }

    /// Reads the file from the start (which also arms the next change
    /// notification); true if it says `populated 1`.
    fn populated(&self) -> bool {
        let mut buf = [0u8; 256];
        // SAFETY: pread into a buffer of the given size, on our own fd.
        let n = unsafe { libc::pread(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            // Removed (ENODEV): nothing in it. Any other error is not taken for empty.
            return std::io::Error::last_os_error().raw_os_error() != Some(libc::ENODEV);
        }
        String::from_utf8_lossy(&buf[..n as usize]).lines().any(|l| l.trim() == "populated 1")
    }

    /// Waits for the next change (at once if one is pending).
    async fn changed(&self) {
        match self.fd.ready(tokio::io::Interest::PRIORITY).await {
            Ok(mut ready) => ready.clear_ready(),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}
