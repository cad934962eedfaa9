//! Bad input and hard conditions: a wrong cookie, a 10 MB message, a
//! message that would take gigabytes decoded, latin-1 atoms, ticks against
//! a short net_ticktime, a silent peer, and random and truncated frames
//! from a raw peer. After each, the node must still answer.

mod common;
use common::*;
use erl_dist::handshake::ClientSideHandshake;
use erl_dist::node::{Creation, LocalNode};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// A raw peer: completes a real handshake with `pn`, then is driven by hand.
async fn raw_peer(pn: &Portnode, cookie: &str) -> TcpStream {
    let alive = pn.node.split('@').next().unwrap();
    let port = portnode::distribution::epmd::lookup(alive, "127.0.0.1").await.unwrap().expect("registered");
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = format!("{}@{}", unique("raw"), host()).parse().unwrap();
    let mut local = LocalNode::new(name, Creation::new(1));
    local.flags = portnode::distribution::flags();
    let mut hs = ClientSideHandshake::new(stream.compat(), local, cookie);
    hs.execute_send_name(6).await.expect("send name");
    let (stream, _) = hs.execute_rest(true).await.expect("handshake");
    stream.into_inner()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_wrong_cookie_is_rejected_and_logged_without_the_cookie() {
    let home = Home::new(COOKIE);
    let other = Home::new("SOMEOTHERCOOKIE");
    let pn = Portnode::start(&home, &[]);
    let mut intruder = Erl::start(&other, &[]);
    assert_eq!(intruder.eval(&format!("net_adm:ping('{}')", pn.node)), "pang");
    wait_for("the rejection in the log", Duration::from_secs(5), || pn.log().contains("wrong cookie"));
    let mut friend = Erl::start(&home, &[]);
    assert_eq!(friend.eval(&format!("net_adm:ping('{}')", pn.node)), "pong");
    let log = pn.log();
    assert!(!log.contains(COOKIE) && !log.contains("SOMEOTHERCOOKIE"), "a cookie leaked into the log");
}

#[test]
fn a_ten_megabyte_message_goes_both_ways() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::start(&home, &[]);
    erl.eval(&format!("N = '{}', P = gen_server:call({{portnode, N}}, {{spawn_probe, self()}})", pn.node));
    let out = erl.eval("B = crypto:strong_rand_bytes(10 * 1024 * 1024), P ! {echo, self(), {big, B}}, receive {big, B2} -> B2 =:= B after 20000 -> timeout end");
    assert_eq!(out, "true");
    // A large list of small terms too.
    let out = erl.eval("L = lists:seq(1, 200000), P ! {echo, self(), {list, L}}, receive {list, L2} -> L2 =:= L after 20000 -> timeout end");
    assert_eq!(out, "true");
}

#[test]
fn a_peer_with_a_short_net_ticktime_stays_connected() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::start(&home, &["-kernel", "net_ticktime", "4"]);
    assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    // Idle for well over the peer's tick timeout (4 s).
    erl.eval_within("monitor_node(N, true), receive {nodedown, N} -> down after 10000 -> still_up end", Duration::from_secs(20))
        .eq("still_up")
        .then_some(())
        .expect("the connection dropped while idle");
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
    assert_eq!(pn.log().matches("node connected").count(), 1);
}

#[test]
fn a_silent_peer_is_dropped_after_the_tick_timeout() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &["--net-ticktime", "2"]);
    runtime().block_on(async {
        let mut stream = raw_peer(&pn, COOKIE).await;
        let start = Instant::now();
        // Read (and ignore) the node's ticks until it closes the connection.
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(6), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "silent peer not dropped within 6 s");
        assert!(start.elapsed() >= Duration::from_millis(1500), "dropped too early: {:?}", start.elapsed());
    });
    wait_for("the tick timeout in the log", Duration::from_secs(3), || pn.log().contains("tick timeout"));
}

#[test]
fn random_and_truncated_frames_never_take_the_node_down() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &["--max-frame", "1000000"]);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    runtime().block_on(async {
        // Garbage instead of a handshake.
        let mut s = TcpStream::connect(("127.0.0.1", epmd_port(&pn).await)).await.unwrap();
        let _ = s.write_all(b"\x00\x05hello world, not a handshake").await;
        drop(s);
        // Well-framed messages with random, partly valid contents.
        for round in 0..20 {
            let mut stream = raw_peer(&pn, COOKIE).await;
            let mut out = Vec::new();
            for _ in 0..200 {
                let len = (next() % 64) as usize + 1;
                let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                match next() % 4 {
                    0 => body[0] = 112,
                    1 if len > 2 => { body[0] = 112; body[1] = 131; }
                    2 if len > 3 => { body[0] = 112; body[1] = 131; body[2] = 104; }
                    _ => {}
                }
                out.extend_from_slice(&(body.len() as u32).to_be_bytes());
                out.extend_from_slice(&body);
            }
            // End some rounds with a truncated frame, others with an oversized header.
            if round % 2 == 0 {
                out.extend_from_slice(&[0, 0, 1, 0, 112, 131]);
            } else {
                out.extend_from_slice(&u32::MAX.to_be_bytes());
            }
            let _ = stream.write_all(&out).await;
        }
    });
    let mut erl = Erl::start(&home, &[]);
    assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
    let log = pn.log();
    assert!(log.contains("cannot decode"), "malformed messages were not reported");
    assert!(log.contains("exceeds the limit"), "oversized frame was not reported");
}

async fn epmd_port(pn: &Portnode) -> u16 {
    let alive = pn.node.split('@').next().unwrap();
    portnode::distribution::epmd::lookup(alive, "127.0.0.1").await.unwrap().expect("registered")
}

/// Descriptors `pid` holds (a gone process is a failure, not zero).
fn fds(pid: u32) -> usize {
    match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(d) => d.count(),
        Err(e) => panic!("cannot count the descriptors of {pid}: {e}"),
    }
}

/// 2,000 connections that never speak (half-open, a scanner): at most
/// 128 handshakes wait at once (a new one drops the oldest), so portnode's
/// descriptors stay bounded, and meanwhile a real peer connects, and a
/// program runs.
#[test]
fn a_flood_of_silent_connections_leaves_room_for_real_peers_and_programs() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let before = fds(pn.pid());
    let alive = pn.node.split('@').next().expect("alive part").to_owned();
    let rt = runtime();
    let port = rt.block_on(portnode::distribution::epmd::lookup(&alive, "127.0.0.1")).expect("epmd").expect("registered");
    let silent: Vec<std::net::TcpStream> =
        (0..2000).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(silent.len() > 1500, "only {} connections made", silent.len());
    std::thread::sleep(Duration::from_millis(500));
    let during = fds(pn.pid());
    eprintln!("portnode's descriptors: {before} before, {during} during a flood of {} silent connections", silent.len());
    assert!(during <= before + 128 + 16, "{during} descriptors during the flood (from {before})");
    let mut erl = Erl::start(&home, &[]);
    let out = erl.eval_within(
        &format!("N = '{}', pong = net_adm:ping(N), {{ok, H, _}} = gen_server:call({{portnode, N}}, {{open_port, self(), {{spawn, \"echo up\"}}, [exit_status]}}), \
                  receive {{H, {{data, D}}}} -> D after 5000 -> timeout end", pn.node),
        Duration::from_secs(30),
    );
    assert_eq!(out, "\"up\\n\"");
    assert!(pn.log().contains("too many handshakes"), "the drops were not logged");
    drop(silent);
    wait_for("the silent connections' descriptors to go", Duration::from_secs(10), || fds(pn.pid()) <= before + 8);
}

/// A preload that makes looking up the user `nobody` take 3 s (a slow LDAP
/// or sssd): getpwnam_r and getpwnam sleep first. Its path.
fn slow_lookup_preload(home: &Home) -> String {
    let source = home.path.join("slow_lookup.c");
    let library = home.path.join("slow_lookup.so");
    std::fs::write(
        &source,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <pwd.h>
#include <string.h>
#include <unistd.h>
static void slow(const char *name) { if (name && strcmp(name, "nobody") == 0) sleep(3); }
int getpwnam_r(const char *name, struct passwd *pwd, char *buf, size_t len, struct passwd **result) {
    int (*real)(const char *, struct passwd *, char *, size_t, struct passwd **) = dlsym(RTLD_NEXT, "getpwnam_r");
    slow(name);
    return real(name, pwd, buf, len, result);
}
struct passwd *getpwnam(const char *name) {
    struct passwd *(*real)(const char *) = dlsym(RTLD_NEXT, "getpwnam");
    slow(name);
    return real(name);
}
"#,
    )
    .expect("write the preload's source");
    let built = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&library).arg(&source).arg("-ldl").status().expect("cc");
    assert!(built.success(), "cannot build the preload");
    library.to_string_lossy().into_owned()
}

/// A user lookup that takes 3 s (a slow LDAP or sssd, simulated by an
/// LD_PRELOAD'ed getpwnam_r/getpwnam) does not stall the node: with a 2 s
/// tick time the connection stays, a running port and the control server
/// answer within 0.5 s all along, and the open completes once the lookup
/// does, its program running as that user.
#[test]
fn a_slow_user_lookup_stalls_nothing_but_its_open() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return eprintln!("skipped: running a program as nobody needs root");
    }
    let home = Home::new(COOKIE);
    let preload = slow_lookup_preload(&home);
    let pn = Portnode::start_env(&home, &unique("pn"), &["--net-ticktime", "2"], &[("LD_PRELOAD", &preload)]);
    let mut erl = Erl::start(&home, &["-kernel", "net_ticktime", "2"]);
    let out = erl.eval_within(
        &format!(
            "N = '{}', pong = net_adm:ping(N), monitor_node(N, true), \
             {{ok, H1, _}} = gen_server:call({{portnode, N}}, {{open_port, self(), {{spawn, \"sleep 300\"}}, []}}), \
             Self = self(), \
             spawn(fun() -> T0 = erlang:monotonic_time(millisecond), \
                            R = gen_server:call({{portnode, N}}, {{open_port, Self, {{spawn, \"id -u\"}}, [{{user, \"nobody\"}}, {{line, 80}}, exit_status]}}, 20000), \
                            Self ! {{opened, R, erlang:monotonic_time(millisecond) - T0}} end), \
             Probe = fun() -> T = erlang:monotonic_time(millisecond), _ = gen_server:call(H1, os_pid, 5000), pong = gen_server:call({{portnode, N}}, ping, 5000), erlang:monotonic_time(millisecond) - T end, \
             Slowest = lists:max([begin timer:sleep(100), Probe() end || _ <- lists:seq(1, 30)]), \
             {{opened, {{ok, H2, _}}, Took}} = receive {{opened, _, _}} = O -> O after 10000 -> timeout end, \
             Lines = receive {{H2, {{data, {{eol, L}}}}}} -> L after 5000 -> timeout end, \
             Down = receive {{nodedown, N}} -> nodedown after 0 -> up end, \
             {{Slowest < 500, Took >= 2900, Lines, Down}}",
            pn.node
        ),
        Duration::from_secs(60),
    );
    assert_eq!(out, "{true,true,\"65534\",up}");
}

/// The same for a supervisor inside portnode whose child runs as a user
/// that is slow to look up: neither its start nor a `supervisor:start_child`
/// of another such child stalls the node (the control server and a running
/// port answer within 0.5 s, probed every 100 ms until each call returns),
/// and both children run as that user.
#[test]
fn a_slow_user_lookup_in_a_supervisor_child_stalls_nothing_but_its_start() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return eprintln!("skipped: running a program as nobody needs root");
    }
    let home = Home::new(COOKIE);
    let preload = slow_lookup_preload(&home);
    let pn = Portnode::start_env(&home, &unique("pn"), &["--net-ticktime", "2"], &[("LD_PRELOAD", &preload)]);
    let mut erl = Erl::start(&home, &["-kernel", "net_ticktime", "2"]);
    let out = erl.eval_within(
        &format!(
            "N = '{}', pong = net_adm:ping(N), monitor_node(N, true), \
             {{ok, H1, _}} = gen_server:call({{portnode, N}}, {{open_port, self(), {{spawn, \"sleep 300\"}}, []}}), \
             Self = self(), \
             Child = fun(Id) -> #{{id => Id, start => {{{{spawn, \"sleep 300\"}}, [{{user, \"nobody\"}}]}}}} end, \
             Timed = fun(F) -> spawn(fun() -> T0 = erlang:monotonic_time(millisecond), R = F(), Self ! {{done, R, erlang:monotonic_time(millisecond) - T0}} end) end, \
             Probe = fun() -> T = erlang:monotonic_time(millisecond), _ = gen_server:call(H1, os_pid, 5000), pong = gen_server:call({{portnode, N}}, ping, 5000), erlang:monotonic_time(millisecond) - T end, \
             Until = erlang:monotonic_time(millisecond) + 30000, \
             Probes = fun Loop(Slowest) -> receive {{done, _, _}} = D -> {{Slowest, D}} after 100 -> \
                                  true = erlang:monotonic_time(millisecond) < Until, Loop(max(Slowest, Probe())) end end, \
             Timed(fun() -> gen_server:call({{portnode, N}}, {{start_supervisor, Self, #{{}}, [Child(first)]}}, 30000) end), \
             {{Slowest1, {{done, {{ok, Sup}}, Took1}}}} = Probes(0), \
             Timed(fun() -> supervisor:start_child(Sup, Child(second)) end), \
             {{Slowest2, {{done, {{ok, _}}, Took2}}}} = Probes(0), \
             Uids = lists:sort([string:trim(os:cmd(\"ps -o uid= -p \" ++ integer_to_list(gen_server:call(H, os_pid)))) || {{_, H, _, _}} <- supervisor:which_children(Sup)]), \
             Down = receive {{nodedown, N}} -> nodedown after 0 -> up end, \
             {{Slowest1 < 500, Slowest2 < 500, Took1 >= 2900, Took2 >= 2900, Uids, Down}}",
            pn.node
        ),
        Duration::from_secs(90),
    );
    assert_eq!(out, "{true,true,true,true,[\"65534\",\"65534\"],up}");
}

/// The peak resident size of OS process `pid` (VmHWM), in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).expect("a number of kB")
}

#[test]
fn a_message_too_costly_to_decode_is_dropped_and_big_real_messages_still_go_through() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::connected_to(&home, &pn);
    erl.eval("monitor_node(N, true)");
    // 16 MB on the wire: 16 million `[]`, which eetf would make 900 MB of.
    let before = peak_rss_kb(pn.pid());
    assert_eq!(erl.eval("{portnode, N} ! lists:duplicate(16000000, []), ok"), "ok");
    // Behind it on the same connection: once answered, the big one is dealt with.
    assert_eq!(erl.eval_within("gen_server:call({portnode, N}, ping, 60000)", Duration::from_secs(90)), "pong");
    let grown = peak_rss_kb(pn.pid()).saturating_sub(before);
    eprintln!("16 million [] in a message: peak RSS {before} kB, grew by {grown} kB");
    assert!(grown < 256 * 1024, "peak RSS grew by {grown} kB for a 16 MB message");
    wait_for("the dropped message in the log", Duration::from_secs(5), || pn.log().contains("its budget"));
    assert_eq!(erl.eval("receive {nodedown, N} -> down after 0 -> up end"), "up", "the connection went down");
    // Big messages of the real kinds still go through: a 16 MB binary, 100 000 tuples...
    erl.eval("P = gen_server:call({portnode, N}, {spawn_probe, self()})");
    let out = erl.eval("B = binary:copy(<<\"0123456789abcdef\">>, 1000000), P ! {echo, self(), {big, B}}, receive {big, B2} -> B2 =:= B after 20000 -> timeout end");
    assert_eq!(out, "true");
    let out = erl.eval("T = [{I, integer_to_binary(I)} || I <- lists:seq(1, 100000)], P ! {echo, self(), {tuples, T}}, receive {tuples, T2} -> T2 =:= T after 20000 -> timeout end");
    assert_eq!(out, "true");
    // ...and a million integers as a port's data (an iolist), through `cat`.
    let out = erl.eval(
        "{ok, C, _} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"cat\"}, [binary]}), \
         L = [I rem 256 || I <- lists:seq(1, 1000000)], C ! {self(), {command, L}}, \
         Collect = fun Loop(Acc, Left) when Left =< 0 -> iolist_to_binary(lists:reverse(Acc)); \
                       Loop(Acc, Left) -> receive {C, {data, D}} -> Loop([D | Acc], Left - byte_size(D)) after 20000 -> timeout end end, \
         Collect([], 1000000) =:= list_to_binary(L)",
    );
    assert_eq!(out, "true");
    assert_eq!(erl.eval("receive {nodedown, N} -> down after 0 -> up end"), "up");
}

#[test]
fn atoms_come_back_as_the_atoms_sent_in_latin1_or_in_utf8() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::connected_to(&home, &pn);
    erl.eval("monitor_node(N, true)");
    // From erl (UTF-8 on the wire): 255 characters, 510 bytes, echoed in the reply.
    let out = erl.eval("A = list_to_atom(lists:duplicate(255, 233)), gen_server:call({portnode, N}, A) =:= {error, {unknown_call, A}}");
    assert_eq!(out, "true");
    // A list of small integers, some negative (eetf alone sends [-1, 5] as [255, 5]).
    assert_eq!(erl.eval("gen_server:call({portnode, N}, {[-1, 5], [1, -300]})"), "{error,{unknown_call,{[-1,5],[1,-300]}}}");
    // From a peer that sends atoms in latin-1 (SMALL_ATOM_EXT, as OTP did
    // before 23): a call made on the shell's behalf, answered to the shell.
    let me: Vec<u8> = erl
        .eval("term_to_binary(self())")
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(|n| n.parse().expect("a byte"))
        .collect();
    assert_eq!(me[..2], [131, 88], "the shell's pid as NEW_PID_EXT");
    let pid = &me[1..];
    let mut frame = vec![112, 131, 104, 4, 97, 6];
    frame.extend_from_slice(pid);
    frame.extend_from_slice(&[119, 0, 119, 8]);
    frame.extend_from_slice(b"portnode");
    frame.extend_from_slice(&[131, 104, 3, 115, 9]);
    frame.extend_from_slice(b"$gen_call");
    frame.extend_from_slice(&[104, 2]);
    frame.extend_from_slice(pid);
    frame.extend_from_slice(&[115, 6]);
    frame.extend_from_slice(b"latin1");
    frame.extend_from_slice(&[115, 255]);
    frame.extend_from_slice(&[233; 255]);
    let peer = runtime().block_on(async {
        let mut stream = raw_peer(&pn, COOKIE).await;
        let mut out = (frame.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&frame);
        stream.write_all(&out).await.expect("write");
        stream
    });
    let out = erl.eval("receive {latin1, R} -> R =:= {error, {unknown_call, A}} after 5000 -> timeout end");
    assert_eq!(out, "true", "log: {}", pn.log());
    drop(peer);
    assert_eq!(erl.eval("receive {nodedown, N} -> down after 0 -> up end"), "up", "the connection went down");
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
}
