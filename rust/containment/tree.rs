//! Containment without cgroups: a program's process group, its descendants
//! walked through `/proc`, and the orphans that come back to portnode as
//! child subreaper, recognised by the marker in their environment.
//!
//! A descendant that calls `setsid` leaves the group; one whose parent then
//! exits (a double-forked daemon) is re-parented to portnode, not to init,
//! and still carries `PORTNODE_PORT_ID` in its (initial) environment. So
//! stopping a program signals its group, every descendant of its leader,
//! and every orphan of portnode's that carries the program's marker, with
//! its descendants.

use std::collections::HashSet;
use std::fs;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The environment variable that marks a program's processes.
pub const MARKER_VAR: &str = "PORTNODE_PORT_ID";

/// The watchdog's and the spawner's pids: portnode's children that are
/// not orphans. (Programs are the spawner's children, not portnode's.)
static WATCHDOG: AtomicI32 = AtomicI32::new(0);
static SPAWNER: AtomicI32 = AtomicI32::new(0);

/// Makes portnode the reaper of its orphaned descendants, and starts the
/// sweep that reaps the ones that exit on their own.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                sweep();
            }
        });
    }
}

/// Records the watchdog's pid.
pub fn set_watchdog(pid: i32) {
    WATCHDOG.store(pid, Ordering::Relaxed);
}

/// Records the spawner's pid.
pub fn set_spawner(pid: i32) {
    SPAWNER.store(pid, Ordering::Relaxed);
}

/// Makes the markers of one portnode: `PORTNODE_PORT_ID=<instance>.<n>`.
pub struct Marker {
    instance: String,
    next: std::sync::atomic::AtomicU64,
}

impl Marker {
    pub fn new() -> Marker {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Marker { instance: format!("{}-{nanos}", std::process::id()), next: 1.into() }
    }

    /// The marker of the next program (`NAME=VALUE`).
    pub fn next(&self) -> String {
        format!("{MARKER_VAR}={}.{}", self.instance, self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The part every marker of this portnode starts with (for the watchdog).
    pub fn prefix(&self) -> String {
        format!("{MARKER_VAR}={}.", self.instance)
    }
}

impl Default for Marker {
    fn default() -> Self {
        Marker::new()
    }
}

/// Signals the group `pgid` (its leader not yet reaped), every descendant
/// of the leader, and every orphan carrying `mark` with its descendants.
pub fn signal_all(pgid: u32, mark: &str, signal: i32) {
    if pgid == 0 {
        return;
    }
    // SAFETY: the leader is unreaped, so the group id is still ours.
    unsafe { libc::killpg(pgid as libc::pid_t, signal) };
    for pid in members(pgid, mark) {
        // SAFETY: kill(2) on a process of this program's tree.
        unsafe { libc::kill(pid, signal) };
    }
}

/// True if `pid` belongs to the program whose group is `pgid`: it is in
/// the group, descends from the leader, or carries the marker `mark`.
pub fn holds(pgid: u32, mark: &str, pid: i32) -> bool {
    if pgid == 0 || pid <= 0 {
        return false;
    }
    // SAFETY: getpgid(2) on any pid; -1 if there is none.
    if unsafe { libc::getpgid(pid) } == pgid as i32 {
        return true;
    }
    descends_from(pid, pgid as i32) || carries(pid, mark)
}

/// True if `ancestor` is `pid`'s parent, or its parent's, and so on.
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut current = pid;
    // A chain of parents is short; the bound only guards against a loop.
    for _ in 0..4096 {
        match parent_of(current) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) if parent > 1 => current = parent,
            _ => return false,
        }
    }
    false
}

/// The parent of `pid`, from `/proc/<pid>/stat` (its fourth field).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Returns once no process of the program is alive but its leader.
pub async fn wait_empty(pgid: u32, mark: &str) {
    loop {
        sweep();
        if members(pgid, mark).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The live processes of a program other than its leader: the leader's
/// descendants and portnode's orphans marked `mark`, with theirs.
pub fn members(pgid: u32, mark: &str) -> Vec<i32> {
    let mut roots = children_of(pgid as i32);
    roots.extend(orphans().into_iter().filter(|&pid| carries(pid, mark)));
    let mut seen = HashSet::new();
    let mut live = Vec::new();
    while let Some(pid) = roots.pop() {
        if !seen.insert(pid) {
            continue;
        }
        roots.extend(children_of(pid));
        if !is_zombie(pid) {
            live.push(pid);
        }
    }
    live
}

/// Reaps every orphan of portnode's that has exited.
pub fn sweep() {
    for pid in orphans() {
        let mut status = 0;
        // SAFETY: waitpid on our own child, which no port tracks.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// portnode's children that are neither the watchdog nor the spawner.
fn orphans() -> Vec<i32> {
    let helpers = [WATCHDOG.load(Ordering::Relaxed), SPAWNER.load(Ordering::Relaxed)];
    children_of(std::process::id() as i32).into_iter().filter(|pid| !helpers.contains(pid)).collect()
}

/// The children of every thread of process `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut kids = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            kids.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    kids
}

/// True if process `pid`'s initial environment holds exactly the entry `mark`.
pub fn carries(pid: i32, mark: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|entry| entry == mark.as_bytes()))
}

/// True if `pid` carries a marker starting with `prefix`.
pub fn carries_prefix(pid: i32, prefix: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|entry| entry.starts_with(prefix.as_bytes())))
}

fn is_zombie(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_distinct_and_share_the_prefix() {
        let m = Marker::new();
        let (a, b) = (m.next(), m.next());
        assert_ne!(a, b);
        assert!(a.starts_with(&m.prefix()) && b.starts_with(&m.prefix()));
        assert!(a.starts_with("PORTNODE_PORT_ID="));
    }

    #[test]
    fn a_marked_child_is_recognised_by_its_exact_marker() {
        let mut child = std::process::Command::new("sleep").arg("5").env(MARKER_VAR, "x.7").spawn().unwrap();
        let pid = child.id() as i32;
        // The child may not have exec'd yet when spawn returns.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !carries(pid, "PORTNODE_PORT_ID=x.7") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(carries(pid, "PORTNODE_PORT_ID=x.7"));
        assert!(!carries(pid, "PORTNODE_PORT_ID=x.70"));
        assert!(!carries(pid, "PORTNODE_PORT_ID=x."));
        assert!(carries_prefix(pid, "PORTNODE_PORT_ID=x."));
        assert!(children_of(std::process::id() as i32).contains(&pid));
        assert!(descends_from(pid, std::process::id() as i32));
        assert!(!descends_from(std::process::id() as i32, pid));
        assert!(holds(u32::MAX >> 1, "PORTNODE_PORT_ID=x.7", pid), "by its marker");
        assert!(!holds(u32::MAX >> 1, "PORTNODE_PORT_ID=x.8", pid));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
