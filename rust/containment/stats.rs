//! What a program's whole tree of processes uses: CPU time, memory and how
//! many processes, as the kernel accounts them where it can.
//!
//! - CPU: a cgroup v2 leaf's `cpu.stat` (`usage_usec`, there whatever
//!   controllers are enabled, and it keeps the time of processes that have
//!   exited); in process-group mode, `/proc/<pid>/stat` of each process of
//!   the tree, its own time and what it reaped of its children's
//!   (`utime + stime + cutime + cstime`), so a child that exited and was
//!   waited for still counts, one reaped by portnode as subreaper does not.
//! - Memory: a memory controller's figure where the program has one (v2
//!   `memory.current`, v1 `memory.usage_in_bytes`: page cache and kernel
//!   memory charged to it included), else the sum of its processes' resident
//!   sets (`/proc/<pid>/statm`: pages shared between them count once each).
//! - Processes: those in the leaf (`cgroup.procs`), or the tree's live ones.

use std::fs;
use std::path::Path;

/// What a program uses now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub cpu_us: u64,
    pub memory: u64,
    pub processes: u64,
}

/// Where a cgroup-contained program's memory is counted.
pub enum Memory<'a> {
    /// The v2 leaf itself (the memory controller is enabled for it).
    V2(&'a Path),
    /// A v1 memory cgroup of its own.
    V1(&'a Path),
    /// No controller: the sum of the processes' resident sets.
    Rss,
}

/// A cgroup-contained program: its v2 leaf `dir`, whose CPU time counted
/// `cpu_base` before the program (a leaf is reused), and its memory.
pub fn of_cgroup(dir: &Path, cpu_base: u64, memory: &Memory<'_>) -> Usage {
    let pids = procs(dir);
    let cpu_us = cgroup_cpu_us(dir).saturating_sub(cpu_base);
    let memory = match memory {
        Memory::V2(dir) => read_u64(&dir.join("memory.current")),
        Memory::V1(dir) => read_u64(&dir.join("memory.usage_in_bytes")),
        Memory::Rss => pids.iter().filter_map(|&p| rss(p)).sum(),
    };
    Usage { cpu_us, memory, processes: pids.len() as u64 }
}

/// A program's highest memory figure so far, where a controller keeps one
/// (v2 `memory.peak`, Linux 5.19; v1 `memory.max_usage_in_bytes`).
pub fn peak(memory: &Memory<'_>) -> Option<u64> {
    match memory {
        // One `read` (a number), without `read_to_string`'s `statx` and second
        // `read`: it is read at every exit of a program that reports its use.
        Memory::V2(dir) => {
            use std::io::Read;
            let mut buf = [0u8; 32];
            let n = fs::File::open(dir.join("memory.peak")).and_then(|mut f| f.read(&mut buf)).ok()?;
            std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
        }
        Memory::V1(dir) => fs::read_to_string(dir.join("memory.max_usage_in_bytes")).ok()?.trim().parse().ok(),
        Memory::Rss => None,
    }
}

/// How many of the program's processes its memory limit's OOM kill took
/// (v2 `memory.events`, v1 `memory.oom_control`: `oom_kill N`).
pub fn oom_kills(memory: &Memory<'_>) -> u64 {
    let text = match memory {
        Memory::V2(dir) => fs::read_to_string(dir.join("memory.events")),
        Memory::V1(dir) => fs::read_to_string(dir.join("memory.oom_control")),
        Memory::Rss => return 0,
    };
    text.unwrap_or_default().lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// The CPU time of every process that was ever in cgroup v2 `dir`, in µs.
/// One `read` of `cpu.stat` (a few hundred bytes, whole in one read): it
/// is read at every exit of a program that reports its use.
pub fn cgroup_cpu_us(dir: &Path) -> u64 {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let Ok(n) = fs::File::open(dir.join("cpu.stat")).and_then(|mut f| f.read(&mut buf)) else { return 0 };
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// A program contained by process group: `leader` (alive, or a zombie not
/// reaped yet) and `others`, the rest of its live tree.
pub fn of_tree(leader: i32, others: &[i32]) -> Usage {
    let mut usage = Usage { cpu_us: proc_cpu_us(leader), ..Usage::default() };
    if let Some(rss) = rss(leader) {
        usage.memory += rss;
        usage.processes += 1;
    }
    for &pid in others {
        usage.cpu_us += proc_cpu_us(pid);
        usage.memory += rss(pid).unwrap_or(0);
        usage.processes += 1;
    }
    usage
}

/// The memory of a tree's processes: the sum of their resident sets.
pub fn rss_of(pids: impl IntoIterator<Item = i32>) -> u64 {
    pids.into_iter().filter_map(rss).sum()
}

/// The pids in cgroup `dir`.
pub fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Process `pid`'s resident set in bytes; `None` if it is gone or a zombie
/// (whose memory is gone).
fn rss(pid: i32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    (pages > 0).then(|| pages * page_size())
}

/// Process `pid`'s CPU time and its reaped children's, in µs (0 if gone).
fn proc_cpu_us(pid: i32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The fields after the command name (in parentheses, which may hold
    // anything): state is the first; utime, stime, cutime, cstime are
    // fields 14-17 of the whole line, 11-14 after the state.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let ticks: u64 = rest.split_whitespace().skip(11).take(4).filter_map(|n| n.parse::<i64>().ok()).map(|n| n.max(0) as u64).sum();
    ticks * 1_000_000 / clock_ticks()
}

fn read_u64(path: &Path) -> u64 {
    fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(1) as u64
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id() as i32;
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let usage = of_tree(me, &[]);
        assert_eq!(usage.processes, 1);
        assert!(usage.memory > 1 << 20, "{usage:?}");
        assert!(usage.cpu_us >= 10_000, "{usage:?}");
        assert_eq!(of_tree(i32::MAX, &[]), Usage::default());
    }

    #[test]
    fn no_controller_no_peak_and_no_oom_kill() {
        assert_eq!(peak(&Memory::Rss), None);
        assert_eq!(oom_kills(&Memory::Rss), 0);
        assert_eq!(oom_kills(&Memory::V1(Path::new("/nonexistent"))), 0);
    }

    /// The v2 files read as the kernel writes them, from a plain directory
    /// (this host's v2 hierarchy has no memory controller to test on).
    #[test]
    fn v2_files_are_read_as_the_kernel_writes_them() {
        let dir = std::env::temp_dir().join(format!("portnode-stats-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("a temporary directory");
        let v2 = Memory::V2(&dir);
        assert_eq!(peak(&v2), None, "no file");
        fs::write(dir.join("memory.peak"), "18446744073709551615\n").expect("write");
        assert_eq!(peak(&v2), Some(u64::MAX));
        fs::write(dir.join("memory.peak"), "4096\n").expect("write");
        assert_eq!(peak(&v2), Some(4096));
        fs::write(dir.join("memory.peak"), "max\n").expect("write");
        assert_eq!(peak(&v2), None, "not a number");
        fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n").expect("write");
        assert_eq!(oom_kills(&v2), 2);
        let _ = fs::remove_dir_all(&dir);
    }
}
