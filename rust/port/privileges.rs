//! Per-program privileges and limits: `{user, U}`, `{group, G}`, `{nice, N}`,
//! `{rlimit, [{Resource, Limit}]}`, `{umask, M}`. Parsed (names resolved to
//! ids) in portnode, applied in the child between clone and exec.

use crate::etf::{as_atom, as_int, as_list, as_tuple};
use crate::spawner::step::Step;
use eetf::Term;

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
    /// Parses one setting `{Key, Value}` if it is one of ours: `None` if the
    /// key is not ours, `Some(Err(()))` if the value is bad (or names a user
    /// or group that does not exist).
    pub fn parse(&mut self, key: &str, value: &Term) -> Option<Result<(), ()>> {
        let done = match key {
            "user" => self.user(value),
            "group" => super::lookups::group(value).map(|g| self.gid = Some(g)),
            "nice" => match as_int(value) {
                Some(n @ -20..=19) => Ok(self.nice = Some(n as libc::c_int)),
                _ => Err(()),
            },
            "rlimit" => self.rlimits(value),
            "umask" => match as_int(value) {
                Some(m @ 0..=0o777) => Ok(self.umask = Some(m as libc::mode_t)),
                _ => Err(()),
            },
            _ => return None,
        };
        Some(done)
    }

    fn user(&mut self, value: &Term) -> Result<(), ()> {
        self.uid = Some(super::lookups::user(value)?);
        Ok(())
    }

    /// Once every setting is parsed: a uid with no passwd entry has no
    /// primary group, and must be given one with `{group, _}` (else the
    /// program would keep portnode's group, root's 0 as a rule).
    pub fn check(&self) -> Result<(), ()> {
        match (self.uid, self.gid) {
            (Some((_, None)), None) => Err(()),
            _ => Ok(()),
        }
    }

    fn rlimits(&mut self, value: &Term) -> Result<(), ()> {
        for item in as_list(value).ok_or(())? {
            let Some([resource, limit]) = as_tuple(&item) else { return Err(()) };
            let resource = match as_atom(resource).ok_or(())? {
                "nofile" => libc::RLIMIT_NOFILE,
                "as" => libc::RLIMIT_AS,
                "cpu" => libc::RLIMIT_CPU,
                "core" => libc::RLIMIT_CORE,
                "nproc" => libc::RLIMIT_NPROC,
                _ => return Err(()),
            };
            let (soft, hard) = match as_tuple(limit) {
                Some([soft, hard]) => (rlim(soft)?, rlim(hard)?),
                _ => (rlim(limit)?, rlim(limit)?),
            };
            if soft > hard {
                return Err(());
            }
            self.rlimits.push((resource as u32, soft, hard));
        }
        Ok(())
    }

    /// In the child, between clone and exec: system calls only, no
    /// allocation. Limits, nice and umask first, while the child may still
    /// be root (a negative nice or a higher hard limit needs it), then
    /// supplementary groups dropped, the group, the user. `Err` names the
    /// step that failed, with errno set.
    ///
    /// # Safety
    /// Only in the child `spawn` clones.
    pub unsafe fn apply(&self) -> Result<(), Step> {
        // SAFETY: plain system calls on values prepared by the parent.
        unsafe {
            for &(resource, soft, hard) in &self.rlimits {
                let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                if libc::setrlimit(resource as _, &limit) != 0 {
                    return Err(Step::Rlimit);
                }
            }
            if let Some(nice) = self.nice {
                if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                    return Err(Step::Nice);
                }
            }
            if let Some(mask) = self.umask {
                libc::umask(mask);
            }
            let gid = self.gid.or(self.uid.and_then(|(_, primary)| primary));
            if self.uid.is_some() || gid.is_some() {
                if libc::setgroups(0, std::ptr::null()) != 0 {
                    return Err(Step::Setgroups);
                }
            }
            if let Some(gid) = gid {
                if libc::setgid(gid) != 0 {
                    return Err(Step::Setgid);
                }
            }
            if let Some((uid, _)) = self.uid {
                if libc::setuid(uid) != 0 {
                    return Err(Step::Setuid);
                }
            }
        }
        Ok(())
    }
}

fn rlim(term: &Term) -> Result<libc::rlim_t, ()> {
    match (as_atom(term), as_int(term)) {
        (Some("infinity"), _) => Ok(libc::RLIM_INFINITY),
        (_, Some(n)) if n >= 0 => Ok(n as libc::rlim_t),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::{a, int, list, tuple};

    fn s(text: &str) -> Term {
        Term::from(eetf::ByteList::from(text))
    }

    #[test]
    fn parses_names_ids_and_limits() {
        let mut p = Privileges::default();
        assert_eq!(p.parse("user", &s("root")), Some(Ok(())));
        assert_eq!(p.uid, Some((0, Some(0))));
        assert_eq!(p.parse("group", &int(12345)), Some(Ok(())));
        assert_eq!(p.gid, Some(12345));
        assert_eq!(p.parse("nice", &int(10)), Some(Ok(())));
        let limits = list(vec![tuple(vec![a("nofile"), int(100)]), tuple(vec![a("core"), tuple(vec![int(0), a("infinity")])])]);
        assert_eq!(p.parse("rlimit", &limits), Some(Ok(())));
        assert_eq!(p.rlimits, vec![(libc::RLIMIT_NOFILE as u32, 100, 100), (libc::RLIMIT_CORE as u32, 0, libc::RLIM_INFINITY)]);
        assert_eq!(p.parse("umask", &int(0o027)), Some(Ok(())));
        assert_eq!(p.parse("packet", &int(4)), None);
    }

    #[test]
    fn rejects_what_cannot_be() {
        let mut p = Privileges::default();
        assert_eq!(p.parse("user", &s("no-such-user-portnode")), Some(Err(())));
        assert_eq!(p.parse("group", &s("no-such-group-portnode")), Some(Err(())));
        assert_eq!(p.parse("nice", &int(20)), Some(Err(())));
        assert_eq!(p.parse("rlimit", &list(vec![tuple(vec![a("stack"), int(1)])])), Some(Err(())));
        assert_eq!(p.parse("rlimit", &list(vec![tuple(vec![a("cpu"), tuple(vec![int(5), int(1)])])])), Some(Err(())));
        assert_eq!(p.parse("umask", &int(0o1000)), Some(Err(())));
    }
}
