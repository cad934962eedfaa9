//! A program's resource limits (`{limits, [{memory, Bytes} | {processes, N}
//! | {cpu, Fraction}]}`), applied with cgroup controllers: memory, pids,
//! cpu.
//!
//! Where each controller is depends on the host, so each is looked for
//! once, when portnode's subtree is made ([`Places::find`]):
//!
//! - **cgroup v2**, when the controller can be enabled for portnode's
//!   subtree (`cgroup.subtree_control`): the limit is written in the
//!   program's own leaf (`memory.max`, `pids.max`, `cpu.max`). That is a
//!   pure-v2 host where portnode's cgroup was delegated with the controller
//!   (systemd's `Delegate=yes`).
//! - **cgroup v1**, on a hybrid host, where the controller is mounted at
//!   `/sys/fs/cgroup/<controller>` and v2 has none: portnode makes a subtree
//!   `portnode-<pid>` under its own cgroup in that hierarchy, and a cgroup
//!   per limited program in it, which the program's child joins before it
//!   execs (as it starts in its v2 leaf).
//! - Neither: the open fails with `{notsup, {limits, Name}}`, and why.
//!
//! Only programs with limits get v1 cgroups: a v1 memory cgroup per program
//! would cost every open a mkdir and every exit an rmdir (and leave
//! offline memory cgroups behind while their page cache lasts).

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::warn;

/// The limits a program asked for.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Bytes of memory (and swap: none beyond it), for all its processes.
    pub memory: Option<u64>,
    /// Processes (tasks: threads count) at once.
    pub processes: Option<u64>,
    /// CPU time as a fraction of one core (1.5: one and a half cores).
    pub cpu: Option<f64>,
}

/// The CFS period a CPU limit is a quota of (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// `[{memory, Bytes} | {processes, N} | {cpu, Fraction}]`: each a
    /// positive number (the fraction a float or an integer, up to 4096
    /// cores); the last of a kind wins. `Err` for anything else.
    pub fn parse(value: &eetf::Term) -> Result<Limits, ()> {
        use crate::etf::{as_atom, as_int, as_list, as_tuple};
        let mut limits = Limits::default();
        for item in as_list(value).ok_or(())? {
            let [key, n] = as_tuple(&item).ok_or(())? else { return Err(()) };
            let count = || as_int(n).filter(|&n| n > 0).map(|n| n as u64).ok_or(());
            match as_atom(key) {
                Some("memory") => limits.memory = Some(count()?),
                Some("processes") => limits.processes = Some(count()?),
                Some("cpu") => {
                    let f = match n {
                        eetf::Term::Float(f) => f.value,
                        other => as_int(other).ok_or(())? as f64,
                    };
                    if !(f > 0.0 && f <= 4096.0) {
                        return Err(());
                    }
                    limits.cpu = Some(f);
                }
                _ => return Err(()),
            }
        }
        Ok(limits)
    }

    /// The limits in force, in the order they are applied and refused.
    fn each(&self) -> impl Iterator<Item = Controller> + '_ {
        [(self.memory.is_some(), Controller::Memory), (self.processes.is_some(), Controller::Pids), (self.cpu.is_some(), Controller::Cpu)]
            .into_iter()
            .filter_map(|(wanted, c)| wanted.then_some(c))
    }

    /// A CPU fraction as a CFS quota per [`CPU_PERIOD_US`] (at least 1 ms,
    /// the kernel's least).
    fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu.map(|f| ((f * CPU_PERIOD_US as f64).round() as u64).max(1000))
    }
}

/// A controller a limit needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory = 0,
    Pids = 1,
    Cpu = 2,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    /// Its name in cgroup files and mount options.
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }

    /// The name of the limit that needs it, as the setting spells it.
    pub fn limit(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "processes",
            Controller::Cpu => "cpu",
        }
    }
}

/// A limit that cannot be applied here: its name (`memory`, `processes`,
/// `cpu`) and why, for `{notsup, {limits, Name}}` and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot limit {limit}: {why}")]
pub struct Refused {
    pub limit: &'static str,
    pub why: String,
}

impl Refused {
    /// The first limit asked for, refused because nothing can apply any.
    pub fn all(limits: &Limits, why: &str) -> Refused {
        let limit = limits.each().next().map_or("memory", Controller::limit);
        Refused { limit, why: why.to_owned() }
    }
}

/// Where each controller is for this node's programs.
pub struct Places {
    /// Enabled for the v2 subtree: a program's leaf has its files.
    v2: [bool; 3],
    /// This node's subtree in the controller's v1 hierarchy.
    v1: [Option<PathBuf>; 3],
    /// Why a controller is in neither, for the error.
    missing: [String; 3],
    next: AtomicU64,
}

impl Places {
    /// Enables what v2 offers portnode's `subtree`, and makes a subtree of
    /// this node's under its own cgroup in each v1 hierarchy of the others.
    pub fn find(subtree: &Path) -> Places {
        let offered = fs::read_to_string(subtree.join("cgroup.controllers")).unwrap_or_default();
        let mut places = Places { v2: [false; 3], v1: Default::default(), missing: Default::default(), next: AtomicU64::new(1) };
        for c in Controller::ALL {
            if offered.split_whitespace().any(|o| o == c.name()) {
                // Enabling it fails if portnode's own cgroup holds processes
                // and is not the root ("no internal processes"): then v1.
                let _ = fs::write(subtree.join("cgroup.subtree_control"), format!("+{}", c.name()));
            }
        }
        let enabled = fs::read_to_string(subtree.join("cgroup.subtree_control")).unwrap_or_default();
        for c in Controller::ALL {
            if enabled.split_whitespace().any(|e| e == c.name()) {
                places.v2[c as usize] = true;
                continue;
            }
            match super::v1::subtree(c.name()) {
                Ok(dir) => places.v1[c as usize] = Some(dir),
                Err(why) => places.missing[c as usize] = why,
            }
        }
        places
    }

    /// Nothing found (process-group mode, and unit tests).
    pub fn none(why: &str) -> Places {
        Places { v2: [false; 3], v1: Default::default(), missing: std::array::from_fn(|_| why.to_owned()), next: AtomicU64::new(1) }
    }

    /// The v2 memory controller is on: every leaf accounts memory.
    pub fn v2_memory(&self) -> bool {
        self.v2[Controller::Memory as usize]
    }

    /// Where each controller is, as `portnode:info()` reports it.
    pub fn describe(&self) -> Vec<(&'static str, &'static str)> {
        Controller::ALL
            .iter()
            .map(|&c| (c.limit(), if self.v2[c as usize] { "cgroup2" } else if self.v1[c as usize].is_some() { "cgroup1" } else { "none" }))
            .collect()
    }

    /// This node's v1 subtrees (for the watchdog and the shutdown).
    pub fn v1_subtrees(&self) -> impl Iterator<Item = &Path> {
        self.v1.iter().flatten().map(PathBuf::as_path)
    }

    /// Applies `limits` to the program whose v2 leaf is `leaf` (empty yet):
    /// in the leaf for v2 controllers, in v1 cgroups of its own for the
    /// others. All or nothing: on a refusal, what was made is removed (the
    /// leaf's files were written: it must not be reused).
    pub fn apply(&self, leaf: &Path, limits: &Limits) -> Result<Applied, Refused> {
        let mut applied = Applied { v1: Vec::new(), in_leaf: false, memory: limits.memory };
        for c in limits.each() {
            let done = if self.v2[c as usize] {
                applied.in_leaf = true;
                write_v2(leaf, c, limits)
            } else if let Some(root) = &self.v1[c as usize] {
                let dir = root.join(format!("q{}", self.next.fetch_add(1, Ordering::Relaxed)));
                let made = fs::create_dir(&dir).and_then(|()| {
                    applied.v1.push((c, dir.clone(), None));
                    write_v1(&dir, c, limits)?;
                    open_procs(&dir)
                });
                made.map(|procs| {
                    if let Some(last) = applied.v1.last_mut() {
                        last.2 = Some(procs);
                    }
                })
            } else {
                applied.release();
                return Err(Refused { limit: c.limit(), why: self.missing[c as usize].clone() });
            };
            if let Err(e) = done {
                applied.release();
                return Err(Refused { limit: c.limit(), why: format!("cannot set the {} controller's limit: {e}", c.name()) });
            }
        }
        Ok(applied)
    }

    /// Removes this node's v1 subtrees (at shutdown, every program gone).
    pub fn remove(&self) {
        for dir in self.v1_subtrees() {
            super::cgroup::remove_tree(dir);
        }
    }
}

/// One program's limits as applied.
pub struct Applied {
    /// Its v1 cgroups: controller, directory, and `cgroup.procs` for the
    /// child to join (until taken).
    v1: Vec<(Controller, PathBuf, Option<OwnedFd>)>,
    /// Limits were written in its v2 leaf.
    pub in_leaf: bool,
    /// Its memory limit, in bytes.
    pub memory: Option<u64>,
}

impl Applied {
    /// The `cgroup.procs` of each v1 cgroup, for the child to write itself
    /// into before it execs.
    pub fn take_joins(&mut self) -> Vec<OwnedFd> {
        self.v1.iter_mut().filter_map(|(_, _, procs)| procs.take()).collect()
    }

    /// The program's v1 memory cgroup, if it has one.
    pub fn v1_memory(&self) -> Option<&Path> {
        self.v1.iter().find(|(c, _, _)| *c == Controller::Memory).map(|(_, dir, _)| dir.as_path())
    }

    /// Removes its v1 cgroups (the program is gone: they are empty).
    pub fn release(&mut self) {
        for (_, dir, procs) in self.v1.drain(..) {
            drop(procs);
            if let Err(e) = fs::remove_dir(&dir) {
                warn!(cgroup = %dir.display(), error = %e, "cannot remove a program's v1 cgroup");
            }
        }
    }
}

fn write_v2(leaf: &Path, c: Controller, limits: &Limits) -> io::Result<()> {
    match c {
        Controller::Memory => {
            let bytes = limits.memory.unwrap_or(u64::MAX);
            fs::write(leaf.join("memory.max"), bytes.to_string())?;
            // No swap beyond it, where swap is accounted: a program over its
            // limit is stopped, not slowed to a crawl.
            let _ = fs::write(leaf.join("memory.swap.max"), "0");
            // The whole program goes, as on v1 its largest process does.
            let _ = fs::write(leaf.join("memory.oom.group"), "1");
            Ok(())
        }
        Controller::Pids => fs::write(leaf.join("pids.max"), limits.processes.unwrap_or(u64::MAX).to_string()),
        Controller::Cpu => fs::write(leaf.join("cpu.max"), format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us().unwrap_or(CPU_PERIOD_US))),
    }
}

fn write_v1(dir: &Path, c: Controller, limits: &Limits) -> io::Result<()> {
    match c {
        Controller::Memory => {
            let bytes = limits.memory.unwrap_or(u64::MAX).to_string();
            fs::write(dir.join("memory.limit_in_bytes"), &bytes)?;
            // memory+swap, where swap is accounted (it may not be lower than the above).
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                fs::write(memsw, &bytes)?;
            }
            Ok(())
        }
        Controller::Pids => fs::write(dir.join("pids.max"), limits.processes.unwrap_or(u64::MAX).to_string()),
        Controller::Cpu => {
            fs::write(dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
            fs::write(dir.join("cpu.cfs_quota_us"), limits.cpu_quota_us().unwrap_or(CPU_PERIOD_US).to_string())
        }
    }
}

fn open_procs(dir: &Path) -> io::Result<OwnedFd> {
    Ok(fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fractions_become_quotas() {
        let quota = |f| Limits { cpu: Some(f), ..Limits::default() }.cpu_quota_us();
        assert_eq!(quota(0.5), Some(50_000));
        assert_eq!(quota(1.5), Some(150_000));
        assert_eq!(quota(0.0001), Some(1000));
    }

    #[test]
    fn parses_the_setting() {
        use crate::etf::{a, int, list, tuple};
        let t = |k: &str, v| tuple(vec![a(k), v]);
        let parsed = Limits::parse(&list(vec![t("memory", int(64 << 20)), t("processes", int(5)), t("cpu", eetf::Term::from(eetf::Float { value: 0.5 }))]));
        assert_eq!(parsed, Ok(Limits { memory: Some(64 << 20), processes: Some(5), cpu: Some(0.5) }));
        assert_eq!(Limits::parse(&list(vec![t("cpu", int(2))])), Ok(Limits { cpu: Some(2.0), ..Limits::default() }));
        for bad in [t("memory", int(0)), t("processes", int(-1)), t("cpu", int(0)), t("disk", int(1)), a("memory")] {
            assert_eq!(Limits::parse(&list(vec![bad])), Err(()));
        }
        assert_eq!(Limits::parse(&a("x")), Err(()));
    }

    #[test]
    fn without_any_controller_the_first_limit_is_refused_with_why() {
        let places = Places::none("process groups");
        let limits = Limits { processes: Some(5), cpu: Some(0.5), ..Limits::default() };
        let refused = places.apply(Path::new("/nonexistent"), &limits).err().expect("refused");
        assert_eq!(refused, Refused { limit: "processes", why: "process groups".into() });
        assert!(places.apply(Path::new("/nonexistent"), &Limits::default()).is_ok());
    }

    /// The v2 path writes the files a v2 leaf has (checked here in a plain
    /// directory: this host's v2 hierarchy has no controllers to enable).
    #[test]
    fn the_v2_path_writes_the_leafs_files() {
        let leaf = std::env::temp_dir().join(format!("portnode-limits-{}", std::process::id()));
        fs::create_dir_all(&leaf).unwrap();
        let places = Places { v2: [true; 3], v1: Default::default(), missing: Default::default(), next: AtomicU64::new(1) };
        let limits = Limits { memory: Some(64 << 20), processes: Some(5), cpu: Some(0.25) };
        let applied = places.apply(&leaf, &limits).expect("applied");
        assert!(applied.in_leaf && applied.v1_memory().is_none());
        let read = |f: &str| fs::read_to_string(leaf.join(f)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("memory.oom.group"), "1");
        assert_eq!(read("pids.max"), "5");
        assert_eq!(read("cpu.max"), "25000 100000");
        fs::remove_dir_all(&leaf).unwrap();
    }
}
