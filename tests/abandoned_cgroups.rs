//! A portnode SIGKILLed together with its watchdog cannot remove its cgroup
//! subtree; the next portnode started in the same place removes it (when
//! empty), and leaves alone the subtree of a portnode that still runs.

mod common;
use common::*;

/// The cgroup v2 directory this test process is in.
fn own_cgroup() -> Option<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2")).then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/').to_owned();
    Some(mount.join(own))
}

/// Removes a cgroup directory and those below it.
fn remove_cgroup(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[test]
fn a_gone_portnodes_empty_cgroup_is_removed_and_a_live_ones_kept() {
    // Skipped only where it cannot run: not root. As root (CI, this
    // machine) a cgroup v2 it cannot use is a failure, not a pass.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(base) = own_cgroup() else {
        assert!(!root, "root, and no cgroup v2 to test in");
        return eprintln!("skipped: no cgroup v2 here");
    };
    let parent = base.join(format!("abandoned-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&parent) {
        assert!(!root, "root, and cannot create a cgroup under {}: {e}", base.display());
        return eprintln!("skipped: cannot create a cgroup under {}", base.display());
    }
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            remove_cgroup(&self.0);
        }
    }
    let _cleanup = Cleanup(parent.clone());
    // A pid that is gone: a child that has exited and been reaped.
    let mut child = std::process::Command::new("true").spawn().expect("true");
    let gone = child.id();
    child.wait().expect("wait");
    let abandoned = parent.join(format!("portnode-{gone}"));
    std::fs::create_dir_all(abandoned.join("p1")).expect("abandoned subtree");
    // A subtree whose pid runs (ours) is not abandoned.
    let alive = parent.join(format!("portnode-{}", std::process::id()));
    std::fs::create_dir(&alive).expect("live subtree");

    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &["--cgroup", parent.to_str().expect("utf-8 path")]);
    assert!(!abandoned.exists(), "the gone portnode's subtree should be removed");
    assert!(alive.exists(), "the live one's subtree should be kept");
    assert!(parent.join(format!("portnode-{}", pn.pid())).exists(), "portnode's own subtree");
    drop(pn);
}
