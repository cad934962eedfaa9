//! Containment: what makes sure that a program's whole tree of processes
//! goes when its port does, daemons that `setsid` and double-fork included.
//!
//! Two modes, chosen once at startup ([`init`]):
//!
//! - **cgroup**: each program starts in a leaf cgroup v2 of its own, under
//!   a subtree that belongs to this portnode. The child joins its leaf
//!   before it execs, so nothing it starts is ever outside. Stopping signals
//!   every process in the leaf, then `cgroup.kill`; the program is gone when
//!   the leaf is empty (`cgroup.events`: `populated 0`).
//! - **process group** (the fallback, where no cgroup v2 is writable): each
//!   program leads a process group of its own; portnode is a child
//!   subreaper, so descendants that leave the group and are orphaned come
//!   back to it; and each program carries a marker in its environment
//!   (`PORTNODE_PORT_ID`) by which those descendants are recognised.
//!   Descendants whose parent still lives are found by walking the tree
//!   from the program's first process. What this mode cannot catch: a
//!   descendant that leaves the group, is orphaned, and was exec'd with an
//!   environment that dropped the marker.

pub mod cgroup;
pub mod limits;
pub mod stats;
pub mod tree;
pub mod v1;

use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use tracing::{info, warn};

/// What `--cgroup` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// A cgroup v2 subtree if one is writable, else process groups.
    Auto,
    /// Process groups only.
    Off,
    /// A subtree under this cgroup directory, or fail at startup.
    Path(PathBuf),
}

impl std::str::FromStr for Setting {
    type Err = String;
    fn from_str(s: &str) -> Result<Setting, String> {
        match s {
            "auto" => Ok(Setting::Auto),
            "off" => Ok(Setting::Off),
            "" => Err("expected auto, off or a cgroup directory".into()),
            path => Ok(Setting::Path(PathBuf::from(path))),
        }
    }
}

/// The containment in force for every program of this node.
pub enum Containment {
    Cgroup(cgroup::Subtree),
    ProcessGroup(tree::Marker),
}

static CONTAINMENT: OnceLock<Containment> = OnceLock::new();

/// Chooses the containment for this node. Call once, before any program
/// starts. With `Setting::Path`, failing to use it is an error; with
/// `Auto`, portnode falls back to process groups and logs one warning.
pub fn init(setting: &Setting) -> io::Result<&'static Containment> {
    let chosen = match setting {
        Setting::Off => fallback(),
        Setting::Path(dir) => Containment::Cgroup(cgroup::Subtree::create_in(dir)?),
        Setting::Auto => match cgroup::Subtree::create_auto() {
            Ok(subtree) => Containment::Cgroup(subtree),
            Err(e) => {
                warn!(reason = %e, "no writable cgroup v2: containing programs by process group and subreaper; \
                       a descendant that leaves its group and clears its environment can outlive its port");
                fallback()
            }
        },
    };
    match &chosen {
        Containment::Cgroup(s) => info!(cgroup = %s.path().display(), "containment: a cgroup per program"),
        Containment::ProcessGroup(_) => info!("containment: process groups, with portnode as child subreaper"),
    }
    Ok(CONTAINMENT.get_or_init(|| chosen))
}

fn fallback() -> Containment {
    tree::become_subreaper();
    Containment::ProcessGroup(tree::Marker::new())
}

/// The containment in force; process groups if [`init`] was never called
/// (code that starts programs without a node, such as unit tests).
pub fn get() -> &'static Containment {
    CONTAINMENT.get_or_init(fallback)
}

impl Containment {
    /// The mode's name, as `portnode:info()` reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Containment::Cgroup(_) => "cgroup",
            Containment::ProcessGroup(_) => "process_group",
        }
    }

    /// True if a restart grant can be armed: the spawner must be able to
    /// tell, in one look, that nothing of the old program is left (its leaf
    /// is empty), which process groups cannot tell.
    pub fn grants_restarts(&self) -> bool {
        matches!(self, Containment::Cgroup(_))
    }

    /// The leaf directory of the running program whose first process is
    /// `pid`, open, in cgroup mode (see [`cgroup::Subtree::leaf_of`]).
    pub fn leaf_of(&self, pid: u32) -> Option<std::os::fd::OwnedFd> {
        match self {
            Containment::Cgroup(subtree) => subtree.leaf_of(pid),
            Containment::ProcessGroup(_) => None,
        }
    }

    /// Prepares the confinement of one new program.
    pub fn prepare(&self) -> io::Result<Jail> {
        Ok(match self {
            Containment::Cgroup(subtree) => Jail::Cgroup(subtree.leaf()?),
            Containment::ProcessGroup(marker) => Jail::Group { pgid: 0, mark: marker.next() },
        })
    }

    /// Where each limit's controller is: `cgroup2`, `cgroup1` or `none`.
    pub fn limit_places(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Containment::Cgroup(subtree) => subtree.places().describe(),
            Containment::ProcessGroup(_) => limits::Places::none("").describe(),
        }
    }

    /// Removes what this node created (called at shutdown, once every program is gone).
    pub fn close(&self) {
        if let Containment::Cgroup(subtree) = self {
            subtree.remove();
        }
    }
}

/// One program's confinement: its leaf cgroup, or its process group and marker.
pub enum Jail {
    Cgroup(cgroup::Leaf),
    Group { pgid: u32, mark: String },
}

impl Jail {
    /// The directory of the program's leaf cgroup, open, for the spawner:
    /// the child starts in it (`clone3` with `CLONE_INTO_CGROUP`) or joins
    /// it before exec.
    pub fn take_cgroup_dir(&mut self) -> Option<std::os::fd::OwnedFd> {
        match self {
            Jail::Cgroup(leaf) => leaf.take_dir(),
            Jail::Group { .. } => None,
        }
    }

    /// Applies the program's limits (see [`limits`]), before it starts.
    pub fn limit(&mut self, wanted: &limits::Limits) -> Result<(), limits::Refused> {
        match self {
            Jail::Cgroup(leaf) => leaf.limit(wanted),
            Jail::Group { .. } if wanted.is_empty() => Ok(()),
            Jail::Group { .. } => Err(limits::Refused::all(
                wanted,
                "portnode contains programs by process group (--cgroup off, or no writable cgroup v2): limits need cgroups \
                 ({rlimit, [{as, Bytes}, {nproc, N}, {cpu, Seconds}]} limits each process instead)",
            )),
        }
    }

    /// The `cgroup.procs` of the program's v1 cgroups, for its child to join.
    pub fn take_joins(&mut self) -> Vec<std::os::fd::OwnedFd> {
        match self {
            Jail::Cgroup(leaf) => leaf.take_joins(),
            Jail::Group { .. } => Vec::new(),
        }
    }

    /// What the program's whole tree uses now; `leader` is its first
    /// process (alive, or a zombie not reaped yet, whose time still counts
    /// in process-group mode).
    pub fn usage(&self, leader: u32) -> stats::Usage {
        match self {
            Jail::Cgroup(leaf) => leaf.usage(),
            Jail::Group { pgid, mark } => stats::of_tree(leader as i32, &tree::members(*pgid, mark)),
        }
    }

    /// The CPU time of the program's processes (see [`stats`]), in µs: the
    /// part of [`Jail::usage`] a program's exit reports, with less to read.
    pub fn cpu_us(&self, leader: u32) -> u64 {
        match self {
            Jail::Cgroup(leaf) => leaf.cpu_us(),
            Jail::Group { .. } => self.usage(leader).cpu_us,
        }
    }

    /// The program's memory limit, if its OOM kill ended any of its
    /// processes (nothing is read without a limit).
    pub fn memory_limit_hit(&self) -> Option<u64> {
        match self {
            Jail::Cgroup(leaf) => leaf.memory_limit_hit(),
            Jail::Group { .. } => None,
        }
    }

    /// The peak of its memory, where a memory controller keeps one, and its
    /// memory limit if the OOM killer ended any of its processes for it.
    pub fn memory_peak_and_limit_hit(&self) -> (Option<u64>, Option<u64>) {
        match self {
            Jail::Cgroup(leaf) => leaf.memory_peak_and_limit_hit(),
            Jail::Group { .. } => (None, None),
        }
    }

    /// What a sampler needs to measure the program's memory on its own.
    pub fn probe(&self, leader: u32) -> Probe {
        match self {
            Jail::Cgroup(leaf) => Probe::Leaf(leaf.path()),
            Jail::Group { pgid, mark } => Probe::Tree { leader: leader as i32, pgid: *pgid, mark: mark.clone() },
        }
    }

    /// The `NAME=VALUE` marker the program's environment carries, if any.
    pub fn marker(&self) -> Option<&str> {
        match self {
            Jail::Cgroup(_) => None,
            Jail::Group { mark, .. } => Some(mark),
        }
    }

    /// Records the program's pid once it runs (it leads its own group).
    pub fn started(&mut self, pid: u32) {
        match self {
            Jail::Cgroup(leaf) => leaf.started(pid),
            Jail::Group { pgid, .. } => *pgid = pid,
        }
    }

    /// Sends `signal` to every process of the program. In process-group
    /// mode the caller must not have reaped the group leader yet, so that
    /// its pgid cannot have been reused.
    pub fn signal_all(&self, signal: i32) {
        match self {
            Jail::Cgroup(leaf) => leaf.signal_all(signal),
            Jail::Group { pgid, mark } => tree::signal_all(*pgid, mark, signal),
        }
    }

    /// True if [`Jail::signal_all`] reaches process `pid`: it is in the
    /// program's cgroup, or in its process group.
    pub fn reaches(&self, pid: i32) -> bool {
        match self {
            Jail::Cgroup(leaf) => leaf.holds(pid),
            // SAFETY: getpgid(2) on any pid; -1 if there is none.
            Jail::Group { pgid, .. } => *pgid != 0 && unsafe { libc::getpgid(pid) } == *pgid as i32,
        }
    }

    /// SIGKILLs every process of the program.
    pub fn kill_all(&self) {
        match self {
            Jail::Cgroup(leaf) => leaf.kill(),
            Jail::Group { pgid, mark } => tree::signal_all(*pgid, mark, libc::SIGKILL),
        }
    }

    /// SIGKILLs the process group, in process-group mode (nothing in cgroup
    /// mode, where nothing can leave). The leader must not be reaped yet.
    pub fn kill_group(&self) {
        if let Jail::Group { pgid, .. } = self {
            if *pgid != 0 {
                // SAFETY: the leader is unreaped, so the group id is still ours.
                unsafe { libc::killpg(*pgid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }

    /// True if no process of the program is left, as one look tells: in
    /// cgroup mode (`populated 0`); never in process-group mode, where
    /// telling takes a scan of every process (see [`Jail::wait_empty`]).
    pub fn is_empty(&self) -> bool {
        match self {
            Jail::Cgroup(leaf) => leaf.is_empty(),
            Jail::Group { .. } => false,
        }
    }

    /// Waits until no process of the program is left but its (unreaped)
    /// leader; false if `limit` passed first.
    pub async fn wait_empty(&self, limit: Option<Duration>) -> bool {
        let wait = async {
            match self {
                Jail::Cgroup(leaf) => leaf.wait_empty().await,
                Jail::Group { pgid, mark } => tree::wait_empty(*pgid, mark).await,
            }
        };
        match limit {
            Some(limit) => tokio::time::timeout(limit, wait).await.is_ok(),
            None => {
                wait.await;
                true
            }
        }
    }

    /// True if process `pid` is one of the program's, as far as can be
    /// told now: in its cgroup; or in its group, descended from its first
    /// process, or carrying its marker. A process that has exited and been
    /// reaped is no one's.
    pub fn holds(&self, pid: i32) -> bool {
        match self {
            Jail::Cgroup(leaf) => leaf.holds(pid),
            Jail::Group { pgid, mark } => tree::holds(*pgid, mark, pid),
        }
    }

    /// True if the leader's death is enough to tell: in cgroup mode the
    /// leader can be reaped at once; in process-group mode it stays a
    /// zombie (holding its pgid) until the jail is released.
    pub fn reaps_early(&self) -> bool {
        matches!(self, Jail::Cgroup(_))
    }

    /// Gives the confinement back once the program is gone.
    pub fn release(self) {
        if let Jail::Cgroup(leaf) = self {
            leaf.release();
        }
    }

    /// For the watchdog: what to kill if portnode dies.
    pub fn watch_id(&self) -> WatchId {
        match self {
            Jail::Cgroup(_) => WatchId::Cgroup,
            Jail::Group { pgid, .. } => WatchId::Group(*pgid),
        }
    }
}

/// A program's processes, found again at each look (for a sampler that
/// outlives nothing: it stops with its port).
pub enum Probe {
    Leaf(PathBuf),
    Tree { leader: i32, pgid: u32, mark: String },
}

impl Probe {
    /// The sum of the resident sets of the program's processes now.
    pub fn memory(&self) -> u64 {
        match self {
            Probe::Leaf(dir) => stats::rss_of(stats::procs(dir)),
            Probe::Tree { leader, pgid, mark } => stats::rss_of(std::iter::once(*leader).chain(tree::members(*pgid, mark))),
        }
    }
}

/// What the watchdog must know of one program.
pub enum WatchId {
    /// Nothing: the whole subtree is killed at once.
    Cgroup,
    Group(u32),
}
