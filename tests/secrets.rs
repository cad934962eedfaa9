//! The cookie in memory: portnode holds one copy of it, and the processes
//! it forks at startup (the spawner, the watchdog) none, though they are
//! forked after it has read the cookie from its environment.

mod common;

use common::*;
use std::os::unix::fs::FileExt;

/// How many times `needle` appears in the readable memory of `pid` (as
/// root: portnode is not dumpable).
fn count_in_memory(pid: u32, needle: &[u8]) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem (needs root)");
    let mut count = 0;
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(perms)) = (fields.first(), fields.get(1)) else { continue };
        if !perms.starts_with('r') || fields.get(5).is_some_and(|n| n.starts_with("[v")) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else { continue };
        let mut buf = vec![0; (end - start) as usize];
        if mem.read_exact_at(&mut buf, start).is_ok() {
            count += buf.windows(needle.len()).filter(|w| *w == needle).count();
        }
    }
    count
}

#[test]
fn the_cookie_is_held_once_by_portnode_and_by_nothing_it_forked() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return eprintln!("skipped: reading another process's memory needs root");
    }
    let cookie = unique("COOKIESECRET");
    let home = Home::new(&cookie);
    // From the environment, as the bridge gives it: read before the forks.
    let pn = Portnode::start_env(&home, &unique("pn"), &[], &[("PORTNODE_COOKIE", &cookie)]);
    // Two handshakes, each of which computes digests with it.
    let mut erl = Erl::connected_to(&home, &pn);
    let mut other = Erl::connected_to(&home, &pn);
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
    assert_eq!(other.eval("gen_server:call({portnode, N}, ping)"), "pong");
    let forked = children_of(pn.pid());
    let names: Vec<String> = forked.iter().map(|p| comm(*p)).collect();
    assert_eq!(forked.len(), 2, "the spawner and the watchdog: {names:?}");
    assert_eq!(count_in_memory(pn.pid(), cookie.as_bytes()), 1, "copies of the cookie in portnode");
    for (pid, name) in forked.iter().zip(&names) {
        assert_eq!(count_in_memory(*pid, cookie.as_bytes()), 0, "copies of the cookie in {name} ({pid})");
    }
}
