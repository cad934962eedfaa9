//! What a port tells of its program's resource use: `portnode:stats/1`'s
//! map, the `{H, {exit_stats, Map}}` message (setting `exit_stats`: a
//! service's exit report), and the log line of a program its memory limit
//! killed.
//!
//! The peak of its memory is the memory controller's where the program has
//! one (a memory limit, or v2's memory controller on). Otherwise nothing in
//! the kernel keeps a peak for a tree of processes, so a port that will
//! report one (`exit_stats`) samples the tree's resident memory itself:
//! 0.1, 0.3, 0.7 and 1.5 s after the start, then every second (a tree that
//! lives less than 0.1 s reports 0), and at each `stats` call. Only such
//! ports sample: a held `cat` costs nothing.

use super::child::Running;
use crate::etf::{a, uint};
use eetf::{Map, Term};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// The highest memory figure sampled, for a program no controller accounts.
pub struct Peak(Arc<AtomicU64>);

impl Peak {
    /// Starts sampling `program`'s memory, unless a controller keeps its peak.
    pub fn start(program: &Running) -> Option<Box<Peak>> {
        let (jail, leader) = program.jail()?;
        if jail.memory_peak_and_limit_hit().0.is_some() {
            return None;
        }
        let peak = Arc::new(AtomicU64::new(0));
        let probe = jail.probe(leader);
        let sampled = Arc::downgrade(&peak);
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                tokio::time::sleep(wait).await;
                // The port is gone (and its program's leaf may be another's): stop.
                let Some(peak) = sampled.upgrade() else { return };
                peak.fetch_max(probe.memory(), Ordering::Relaxed);
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        });
        Some(Box::new(Peak(peak)))
    }
}

/// `#{cpu_us, memory, processes}` for the program's whole tree, with
/// `full`: and `memory_peak` (see the module doc). `undefined` once the
/// program is being stopped.
pub fn stats(program: &Running, peak: Option<&Peak>, full: bool) -> Term {
    let Some((jail, leader)) = program.jail() else { return a("undefined") };
    let usage = jail.usage(leader);
    let mut entries = vec![(a("cpu_us"), uint(usage.cpu_us)), (a("memory"), uint(usage.memory)), (a("processes"), uint(usage.processes))];
    let sampled = peak.map(|p| p.0.fetch_max(usage.memory, Ordering::Relaxed).max(usage.memory));
    if full {
        let (kept, _) = jail.memory_peak_and_limit_hit();
        entries.push((a("memory_peak"), uint(kept.or(sampled).unwrap_or(usage.memory))));
    }
    Term::from(Map::from(entries.into_iter().collect::<std::collections::HashMap<_, _>>()))
}

/// At the program's exit (its first process's, its status known): logs a
/// death by its memory limit, and returns `{exit_stats, #{cpu_us,
/// memory_peak, memory_limit_hit}}` if `wanted`.
pub fn at_exit(program: &Running, peak: Option<&Peak>, name: &str, os_pid: u32, wanted: bool) -> Option<Term> {
    let (jail, leader) = program.jail()?;
    // Nothing read that is not reported: a restart waits behind this.
    let (kept, hit) = if wanted { jail.memory_peak_and_limit_hit() } else { (None, jail.memory_limit_hit()) };
    if let Some(limit) = hit {
        warn!(program = name, os_pid, limit, "the program hit its memory limit: the kernel's OOM killer ended it (SIGKILL)");
    }
    if !wanted {
        return None;
    }
    let cpu_us = jail.cpu_us(leader);
    let memory_peak = kept.or_else(|| peak.map(|p| p.0.load(Ordering::Relaxed))).unwrap_or(0);
    let entries = [
        (a("cpu_us"), uint(cpu_us)),
        (a("memory_peak"), uint(memory_peak)),
        (a("memory_limit_hit"), a(if hit.is_some() { "true" } else { "false" })),
    ];
    Some(crate::etf::tuple(vec![a("exit_stats"), Term::from(Map::from(entries.into_iter().collect::<std::collections::HashMap<_, _>>()))]))
}
