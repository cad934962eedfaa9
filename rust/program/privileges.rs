//! The privileges and limits a program's child takes on before exec:
//! user, group, nice, rlimits, umask. Plain data, made by the port that
//! parses them (`port::privileges`) and applied by the spawner's child.

use super::step::Step;

/// What the child changes about itself before exec. Plain data: the child
/// only reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    /// `{user, _}`: the uid, and the user's primary gid when it has one.
    pub uid: Option<(libc::uid_t, Option<libc::gid_t>)>,
    /// `{group, _}`: the gid (else the user's primary group).
    pub gid: Option<libc::gid_t>,
    pub nice: Option<libc::c_int>,
    /// (resource, soft, hard); `RLIM_INFINITY` for `infinity`.
    pub rlimits: Vec<(u32, libc::rlim_t, libc::rlim_t)>,
    pub umask: Option<libc::mode_t>,
}

impl Privileges {
    /// Once every setting is parsed: a uid with no passwd entry has no
    /// primary group, and must be given one with `{group, _}` (else the
    /// program would keep portnode's group, root's 0 as a rule).
    pub fn check(&self) -> Result<(), ()> {
        match (self.uid, self.gid) {
            (Some((_, None)), None) => Err(()),
            _ => Ok(()),
        }
    }

    /// In the child, between clone and exec: system calls only (not
    /// libc's wrappers, see [`super::syscall`]), no allocation. Limits,
    /// nice and umask first, while the child may still be root (a negative
    /// nice or a higher hard limit needs it), then supplementary groups
    /// dropped, the group, the user. `Err` names the step that failed, and
    /// its errno.
    ///
    /// # Safety
    /// Only in the child `spawn` clones.
    pub unsafe fn apply(&self) -> Result<(), (Step, i32)> {
        use super::syscall::failed;
        use crate::syscall;
        let check = |ret: isize, step: Step| failed(ret).map_or(Ok(()), |errno| Err((step, errno)));
        // SAFETY: plain system calls on values prepared by the parent.
        unsafe {
            for &(resource, soft, hard) in &self.rlimits {
                let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                check(syscall!(libc::SYS_prlimit64, 0, resource, &limit as *const libc::rlimit, 0), Step::Rlimit)?;
            }
            if let Some(nice) = self.nice {
                check(syscall!(libc::SYS_setpriority, libc::PRIO_PROCESS, 0, nice as isize), Step::Nice)?;
            }
            if let Some(mask) = self.umask {
                syscall!(libc::SYS_umask, mask);
            }
            let gid = self.gid.or(self.uid.and_then(|(_, primary)| primary));
            if self.uid.is_some() || gid.is_some() {
                check(syscall!(libc::SYS_setgroups, 0, 0), Step::Setgroups)?;
            }
            if let Some(gid) = gid {
                check(syscall!(libc::SYS_setgid, gid), Step::Setgid)?;
            }
            if let Some((uid, _)) = self.uid {
                check(syscall!(libc::SYS_setuid, uid), Step::Setuid)?;
            }
        }
        Ok(())
    }
}
