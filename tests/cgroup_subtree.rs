//! portnode's cgroup subtree: each program in a leaf of its own, all of
//! them removed with the subtree at a clean stop; and a portnode SIGKILLed
//! together with its watchdog, which cannot remove its subtree: the next
//! portnode started in the same place removes it (when empty), and leaves
//! alone the subtree of a portnode that still runs.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the cgroup v2 hierarchy is mounted.
fn v2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2")).then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The cgroup v2 directory of process `pid` ("self" for this one).
fn cgroup_of(pid: &str) -> Option<PathBuf> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/').to_owned();
    Some(v2_mount()?.join(own))
}

/// Removes a cgroup directory and those below it.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A cgroup of the test's own, removed (with what is below it) when
/// dropped; what still runs in it (a failed test's programs) is killed first.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let empty = || std::fs::read_to_string(self.0.join("cgroup.events")).map_or(true, |e| e.lines().any(|l| l.trim() == "populated 0"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        remove_cgroup(&self.0);
    }
}

/// A cgroup `name-<our pid>` under ours; `None` (the test is skipped) only
/// where it cannot run: not root. As root (CI, this machine) a cgroup v2
/// it cannot use is a failure, not a pass.
fn test_cgroup(name: &str) -> Option<TestCgroup> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(base) = cgroup_of("self") else {
        assert!(!root, "root, and no cgroup v2 to test in");
        eprintln!("skipped: no cgroup v2 here");
        return None;
    };
    let dir = base.join(format!("{name}-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        assert!(!root, "root, and cannot create a cgroup under {}: {e}", base.display());
        eprintln!("skipped: cannot create a cgroup under {}", base.display());
        return None;
    }
    Some(TestCgroup(dir))
}

/// The leaves in a subtree (`p<number>`).
fn leaves(subtree: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(subtree).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    entries.into_iter().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with('p')).collect()
}

#[test]
fn each_program_runs_in_a_leaf_of_its_own_and_a_clean_stop_removes_them_all() {
    let Some(parent) = test_cgroup("subtree-test") else { return };
    let home = Home::new(COOKIE);
    let mut pn = Portnode::start(&home, &["--cgroup", parent.0.to_str().expect("utf-8 path")]);
    let subtree = parent.0.join(format!("portnode-{}", pn.pid()));
    assert!(subtree.is_dir(), "portnode's subtree");
    assert_eq!(leaves(&subtree), Vec::<String>::new(), "no leaf before the first program");
    let mut erl = Erl::connected_to(&home, &pn);
    let open = r#"Open = fun() -> {ok, H, OsPid} = gen_server:call({portnode, N}, {open_port, self(), {spawn_executable, "/bin/cat"}, [binary]}), {H, OsPid} end"#;
    assert!(erl.eval(open).starts_with("#Fun"));
    assert_eq!(erl.eval("{H0, P0} = Open(), is_pid(H0)"), "true");
    // Each program has a leaf of its own, in the subtree.
    let pids = erl.eval("Hs = [Open() || _ <- lists:seq(1, 40)], [P || {_, P} <- [{H0, P0} | Hs]]");
    let pids: Vec<u32> = pids.trim_matches(['[', ']']).split(',').map(|p| p.trim().parse().expect("an os pid")).collect();
    assert_eq!(pids.len(), 41);
    let mut homes: Vec<PathBuf> = pids
        .iter()
        .map(|pid| cgroup_of(&pid.to_string()).expect("the program's cgroup"))
        .collect();
    for home in &homes {
        assert!(home.starts_with(&subtree) && home.parent() == Some(subtree.as_path()), "a program outside its subtree's leaves: {}", home.display());
    }
    homes.sort();
    homes.dedup();
    assert_eq!(homes.len(), 41, "each program in a leaf of its own");
    assert!(leaves(&subtree).len() >= 41, "leaves: {:?}", leaves(&subtree));
    // A clean stop (stdin closed: `--exit-on-stdin-eof`) stops the programs
    // and removes the subtree, leaves and all.
    pn.close_stdin();
    assert_eq!(pn.wait_exit(), Some(0), "portnode's exit code; its log: {}", pn.log());
    assert!(!subtree.exists(), "the subtree is left: {:?}", leaves(&subtree));
    for pid in pids {
        wait_gone("a program", pid, Duration::from_secs(5));
    }
    drop(erl);
}

#[test]
fn a_gone_portnodes_empty_cgroup_is_removed_and_a_live_ones_kept() {
    let Some(cgroup) = test_cgroup("abandoned-test") else { return };
    let parent = cgroup.0.clone();
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
