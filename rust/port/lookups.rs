//! User and group lookups (`getpwnam`, `getpwuid`, `getgrnam`), off the
//! runtime thread. They may ask a directory service (LDAP, sssd) and block
//! for seconds; on portnode's one runtime thread that would stall every
//! connection's ticks, and peers would drop it. So the users and groups an
//! open's settings name are looked up first, on a blocking thread
//! ([`prepare`]), and the parse takes the answers from there ([`with`]).
//! A parse outside [`with`] (a unit test) looks up directly.

use crate::etf::{as_atom, as_int, as_list, as_tuple};
use eetf::Term;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CString, OsString};

/// A user: its uid, and its primary gid if it has a passwd entry.
pub type User = (libc::uid_t, Option<libc::gid_t>);

/// The answers for one open's settings (`None`: no such user or group).
#[derive(Debug, Default)]
pub struct Lookups {
    users: HashMap<Term, Option<User>>,
    groups: HashMap<Term, Option<libc::gid_t>>,
}

thread_local! {
    static PREPARED: RefCell<Option<Lookups>> = const { RefCell::new(None) };
}

/// True if `settings` name a user or a group.
pub fn needed(settings: &Term) -> bool {
    !wanted(settings).is_empty()
}

fn wanted(settings: &Term) -> Vec<(bool, Term)> {
    as_list(settings)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| match as_tuple(s) {
            Some([key, value]) if as_atom(key) == Some("user") => Some((true, value.clone())),
            Some([key, value]) if as_atom(key) == Some("group") => Some((false, value.clone())),
            _ => None,
        })
        .collect()
}

/// Looks up, on a blocking thread, every `{user, U}` and `{group, G}` in
/// `settings` (a list; anything else has nothing to look up).
pub fn prepare(settings: &Term) -> impl std::future::Future<Output = Lookups> + Send + 'static {
    let wanted = wanted(settings);
    async move { prepare_wanted(wanted).await }
}

async fn prepare_wanted(wanted: Vec<(bool, Term)>) -> Lookups {
    if wanted.is_empty() {
        return Lookups::default();
    }
    let looked_up = tokio::task::spawn_blocking(move || {
        let mut found = Lookups::default();
        for (is_user, value) in wanted {
            if is_user {
                let user = user_now(&value).ok();
                found.users.insert(value, user);
            } else {
                let group = group_now(&value).ok();
                found.groups.insert(value, group);
            }
        }
        found
    })
    .await;
    // A lookup that panicked: the parse looks up itself (and so blocks).
    looked_up.unwrap_or_default()
}

/// As [`prepare`], for a supervisor's child specs (`#{start := {PortName,
/// Settings}}` maps): the settings of all of them.
pub async fn prepare_children(children: &Term) -> Lookups {
    let all: Vec<Term> = as_list(children)
        .unwrap_or_default()
        .iter()
        .filter_map(|child| match child {
            Term::Map(m) => m.map.iter().find(|(k, _)| as_atom(k) == Some("start")).map(|(_, v)| v),
            _ => None,
        })
        .filter_map(|start| as_tuple(start).and_then(|t| t.get(1)).and_then(as_list))
        .flatten()
        .collect();
    prepare(&crate::etf::list(all)).await
}

/// Runs `f` (a parse) with the answers of [`prepare`] at hand.
pub fn with<R>(lookups: Lookups, f: impl FnOnce() -> R) -> R {
    PREPARED.with(|p| *p.borrow_mut() = Some(lookups));
    let result = f();
    PREPARED.with(|p| *p.borrow_mut() = None);
    result
}

/// The user `value` names (a name, or a uid), from the prepared answers.
pub fn user(value: &Term) -> Result<User, ()> {
    match PREPARED.with(|p| p.borrow().as_ref().and_then(|l| l.users.get(value).copied())) {
        Some(answer) => answer.ok_or(()),
        None => user_now(value),
    }
}

/// The group `value` names (a name, or a gid), from the prepared answers.
pub fn group(value: &Term) -> Result<libc::gid_t, ()> {
    match PREPARED.with(|p| p.borrow().as_ref().and_then(|l| l.groups.get(value).copied())) {
        Some(answer) => answer.ok_or(()),
        None => group_now(value),
    }
}

/// Looks the user up now (blocking). A numeric uid need not be in the
/// passwd file: it then has no primary group.
fn user_now(value: &Term) -> Result<User, ()> {
    let uid = as_int(value);
    // getpwnam_r/getpwuid_r: reentrant, as they run on blocking threads.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid pointers to an entry, a buffer of its stated size and a result slot.
    let rc = unsafe {
        match uid {
            Some(uid) if uid >= 0 => libc::getpwuid_r(uid as libc::uid_t, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found),
            Some(_) => return Err(()),
            None => libc::getpwnam_r(name(value)?.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut found),
        }
    };
    match (rc == 0 && !found.is_null(), uid) {
        (true, _) => Ok((entry.pw_uid, Some(entry.pw_gid))),
        (false, Some(uid)) => Ok((uid as libc::uid_t, None)),
        (false, None) => Err(()),
    }
}

fn group_now(value: &Term) -> Result<libc::gid_t, ()> {
    if let Some(gid) = as_int(value) {
        return if gid >= 0 { Ok(gid as libc::gid_t) } else { Err(()) };
    }
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid pointers to an entry, a buffer of its stated size and a result slot.
    let rc = unsafe { libc::getgrnam_r(name(value)?.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() { Ok(entry.gr_gid) } else { Err(()) }
}

/// A user or group name: a string, a binary or an atom.
fn name(value: &Term) -> Result<CString, ()> {
    let text = match as_atom(value) {
        Some(atom) => OsString::from(atom),
        None => crate::etf::os_string(value).ok_or(())?,
    };
    CString::new(text.into_encoded_bytes()).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etf::{a, int, list, tuple};

    #[tokio::test]
    async fn prepared_answers_are_used_and_missing_ones_are_errors() {
        let settings = list(vec![tuple(vec![a("user"), a("root")]), tuple(vec![a("group"), a("no-such-group-portnode")])]);
        let lookups = prepare(&settings).await;
        with(lookups, || {
            assert_eq!(user(&a("root")), Ok((0, Some(0))));
            assert_eq!(group(&a("no-such-group-portnode")), Err(()));
        });
        assert_eq!(user(&int(4242424)), Ok((4242424, None)));
        assert_eq!(user(&int(-1)), Err(()));
    }
}
