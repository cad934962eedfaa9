//! Per-program privileges and limits from a port's settings: `{user, U}`,
//! `{group, G}`, `{nice, N}`, `{rlimit, [{Resource, Limit}]}`, `{umask, M}`,
//! parsed (names resolved to ids, see [`super::lookups`]) into a
//! [`Privileges`], which the spawner's child applies before exec.

use crate::etf::{as_atom, as_int, as_list, as_tuple};
pub use crate::program::Privileges;
use eetf::Term;

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
