//! cgroup v1 hierarchies, on a hybrid host (v1 controllers mounted at
//! `/sys/fs/cgroup/<controller>`, v2 without them): where portnode's own
//! cgroup is in one, and this node's subtree there, which holds the v1
//! cgroups of programs with limits (see [`super::limits`]).

use std::fs;
use std::path::{Path, PathBuf};

/// Makes (or, if left by an earlier portnode with this pid, clears and
/// makes again) `portnode-<pid>` under portnode's own cgroup in `controller`'s v1
/// hierarchy, removing on the way those of portnodes that are gone.
pub fn subtree(controller: &str) -> Result<PathBuf, String> {
    let own = own_dir(controller).ok_or_else(|| format!("the {controller} controller is neither enabled for portnode's cgroup v2 subtree nor mounted as cgroup v1"))?;
    let dir = own.join(format!("portnode-{}", std::process::id()));
    remove_abandoned(&own, &dir);
    if dir.exists() {
        super::cgroup::remove_tree(&dir);
    }
    fs::create_dir(&dir).map_err(|e| format!("cannot make a cgroup in the {controller} v1 hierarchy ({}): {e}", own.display()))?;
    Ok(dir)
}

/// portnode's own cgroup directory in `controller`'s v1 hierarchy: its mount point
/// joined with the path `/proc/self/cgroup` gives, less the mount's root.
fn own_dir(controller: &str) -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (root, mount) = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next() != Some("cgroup") {
            return None;
        }
        let options = right.nth(1)?;
        if !options.split(',').any(|o| o == controller) {
            return None;
        }
        let mut left = left.split_whitespace();
        Some((left.nth(3)?.to_owned(), left.next()?.to_owned()))
    })?;
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|n| n == controller).then(|| path.to_owned())
    })?;
    let relative = own.strip_prefix(root.as_str()).unwrap_or(&own);
    Some(Path::new(&mount).join(relative.trim_start_matches('/')))
}

/// Removes the empty v1 subtrees in `dir` of portnodes that are gone.
fn remove_abandoned(dir: &Path, own: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("portnode-")).and_then(|p| p.parse::<u32>().ok()) else { continue };
        let path = entry.path();
        if path != own && !Path::new(&format!("/proc/{pid}")).exists() {
            super::cgroup::remove_tree(&path);
        }
    }
}
