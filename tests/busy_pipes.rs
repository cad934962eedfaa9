//! A program's stdout pipe keeps its default size (64 KiB) unless the
//! program keeps it full for a remote owner: then portnode enlarges it to
//! 1 MiB, so that each read takes more and the two wake each other less.

mod common;
use common::*;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The capacity of the pipe that is fd 1 of `program`, as portnode's end sees it.
fn stdout_pipe_size(portnode: u32, program: u32) -> Option<i32> {
    let pipe = std::fs::read_link(format!("/proc/{program}/fd/1")).ok()?;
    for entry in std::fs::read_dir(format!("/proc/{portnode}/fd")).ok()? {
        let path = entry.ok()?.path();
        if std::fs::read_link(&path).ok().as_ref() == Some(&pipe) {
            // The same pipe, opened anew through /proc (for F_GETPIPE_SZ only: nothing is read).
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path).ok()?;
            // SAFETY: F_GETPIPE_SZ on a pipe we just opened.
            return Some(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETPIPE_SZ) });
        }
    }
    None
}

#[test]
fn a_pipe_grows_only_when_its_program_keeps_it_full() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::connected_to(&home, &pn);
    // A fast writer, read by a shell that drops what it gets; a silent one.
    let out = erl.eval(
        "{ok, Busy, BusyPid} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"cat /dev/zero\"}, [binary, stream]}), \
         {ok, Quiet, QuietPid} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"cat\"}, [binary, stream]}), \
         Drop = fun D(0) -> ok; D(K) -> receive {Busy, {data, _}} -> D(K - 1) after 5000 -> timeout end end, \
         ok = Drop(200), {BusyPid, QuietPid}",
    );
    let pids: Vec<u32> = out.trim_matches(|c| c == '{' || c == '}').split(',').filter_map(|p| p.parse().ok()).collect();
    assert_eq!(pids.len(), 2, "the two programs' pids: {out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let busy = loop {
        let size = stdout_pipe_size(pn.pid(), pids[0]);
        if size == Some(1 << 20) || Instant::now() > deadline {
            break size;
        }
        erl.eval("Drop(100)");
    };
    assert_eq!(busy, Some(1 << 20), "the busy program's pipe");
    assert_eq!(stdout_pipe_size(pn.pid(), pids[1]), Some(64 << 10), "the quiet program's pipe");
    assert_eq!(erl.eval("[gen_server:call(H, close) || H <- [Busy, Quiet]]"), "[true,true]");
}
