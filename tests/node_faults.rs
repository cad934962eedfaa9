//! The node under network faults, against real `erl` nodes and real
//! programs: a frozen owner (SIGSTOP), an owner frozen in the middle of a
//! frame, a node that comes back under its name with a new creation, links
//! and monitors to a node that is not connected, and owners that die while
//! their port is being opened. Every VM, program and epmd a test starts is
//! behind a guard.

mod common;
use common::*;
use eetf::{Pid, Term};
use erl_dist::handshake::ClientSideHandshake;
use erl_dist::node::{Creation, LocalNode};
use portnode::distribution::message::Control;
use portnode::etf::{self, a, tuple};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// The OS pid of the program behind handle `H` (bound in the shell).
fn os_pid(erl: &mut Erl, handle: &str) -> u32 {
    let out = erl.eval(&format!("gen_server:call({handle}, os_pid)"));
    out.parse().unwrap_or_else(|_| panic!("no os pid for {handle}: {out}"))
}

/// Opens `sleep 1000` on the portnode `N` for the shell, as `Var`; returns its OS pid.
fn open_sleeper(erl: &mut Erl, var: &str) -> u32 {
    let out = erl.eval(&format!("{{ok, {var}, _}} = gen_server:call({{portnode, N}}, {{open_port, self(), {{spawn, \"sleep 1000\"}}, []}}), ok"));
    assert_eq!(out, "ok");
    os_pid(erl, var)
}

#[test]
fn a_frozen_owner_loses_its_programs_within_the_tick_time() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &["--net-ticktime", "3"]);
    let mut erl = Erl::start(&home, &["-kernel", "net_ticktime", "3"]);
    assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    let program = open_sleeper(&mut erl, "H");
    assert!(os_alive(program));
    erl.signal(libc::SIGSTOP);
    let took = wait_gone("the frozen owner's program to stop", program, Duration::from_secs(10));
    eprintln!("frozen owner (ticktime 3 s): program stopped after {took:?}");
    // Dropped after 3 s of silence from the peer's last tick, which came at
    // most a quarter tick time (0.75 s) before the freeze: 2.25 to 3 s after
    // it, and then the program is stopped (SIGTERM; sleep ends at once).
    assert!(took >= Duration::from_millis(2000), "stopped before the tick timeout: {took:?}");
    assert!(took <= Duration::from_millis(4500), "stopped well after the tick timeout: {took:?}");
    assert!(pn.log().contains("tick timeout"), "no tick timeout logged");
}

/// A peer that completed a real handshake and is then driven by hand.
struct RawPeer {
    stream: TcpStream,
    me: Pid,
}

impl RawPeer {
    async fn connect(pn: &Portnode) -> RawPeer {
        let alive = pn.node.split('@').next().expect("alive part");
        let port = portnode::distribution::epmd::lookup(alive, "127.0.0.1").await.expect("epmd").expect("registered");
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let full = format!("{}@{}", unique("raw"), host());
        let mut local = LocalNode::new(full.parse().expect("name"), Creation::new(1));
        local.flags = portnode::distribution::flags();
        let mut hs = ClientSideHandshake::new(stream.compat(), local, COOKIE);
        hs.execute_send_name(6).await.expect("send name");
        let (stream, _) = hs.execute_rest(true).await.expect("handshake");
        RawPeer { stream: stream.into_inner(), me: Pid::new(full, 1, 0, 1) }
    }

    async fn send(&mut self, control: Control) {
        let mut out = Vec::new();
        control.encode_into(&mut out).expect("encodes");
        self.stream.write_all(&out).await.expect("write");
    }

    /// A gen_server call to `to` (a pid, or the registered name `portnode`).
    async fn call(&mut self, to: Option<Pid>, request: Term) -> Term {
        let tag = Term::from(etf::int(rand_tag()));
        let msg = tuple(vec![a("$gen_call"), tuple(vec![Term::from(self.me.clone()), tag.clone()]), request]);
        let from = self.me.clone();
        match to {
            Some(pid) => self.send(Control::SendSender { from, to: pid, msg }).await,
            None => self.send(Control::RegSend { from, to: etf::atom("portnode"), msg }).await,
        }
        loop {
            let len = self.stream.read_u32().await.expect("read") as usize;
            let mut frame = vec![0; len];
            self.stream.read_exact(&mut frame).await.expect("read frame");
            if len == 0 {
                continue;
            }
            if let Ok(Control::Send { msg, .. } | Control::SendSender { msg, .. }) = Control::decode(&frame) {
                if let Some([t, reply]) = etf::as_tuple(&msg) {
                    if *t == tag {
                        return reply.clone();
                    }
                }
            }
        }
    }
}

fn rand_tag() -> i64 {
    Instant::now().elapsed().as_nanos() as i64 ^ i64::from(std::process::id())
}

#[test]
fn an_owner_frozen_mid_frame_is_dropped_and_its_programs_stop() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &["--net-ticktime", "2"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut peer = RawPeer::connect(&pn).await;
        let owner = Term::from(peer.me.clone());
        let open = tuple(vec![a("open_port"), owner, tuple(vec![a("spawn"), etf::byte_list(b"sleep 1000".to_vec())]), etf::list(vec![])]);
        let reply = peer.call(None, open).await;
        let handle = match etf::as_tuple(&reply) {
            Some([ok, Term::Pid(h), _os_pid]) if etf::as_atom(ok) == Some("ok") => h.clone(),
            _ => panic!("open_port failed: {reply}"),
        };
        let program = etf::as_int(&peer.call(Some(handle), a("os_pid")).await).expect("os pid") as u32;
        assert!(os_alive(program));
        // The length of an 8 MB frame and its first 100 kB, then nothing: frozen mid-frame.
        let mut out = 8_000_000u32.to_be_bytes().to_vec();
        out.extend_from_slice(&[112, 131]);
        out.resize(100_000, 0);
        peer.stream.write_all(&out).await.expect("write partial frame");
        let took = wait_gone("the program of the owner frozen mid-frame", program, Duration::from_secs(8));
        eprintln!("frozen mid-frame (ticktime 2 s): program stopped after {took:?}");
        drop(peer);
    });
    wait_for("the stall in the log", Duration::from_secs(3), || pn.log().contains("stalled"));
}

#[test]
fn an_erl_owner_frozen_while_sending_a_large_message_is_dropped() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &["--net-ticktime", "2", "--max-frame", "300000000"]);
    let mut erl = Erl::start(&home, &["-kernel", "net_ticktime", "2"]);
    assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    let program = open_sleeper(&mut erl, "H");
    // A stream of 64 MB messages to portnode (to a name nobody has: each is
    // read whole, then dropped), so that a freeze falls in a frame.
    let out = erl.eval("B = binary:copy(<<7>>, 64 * 1024 * 1024), byte_size(B)");
    assert_eq!(out, "67108864");
    erl.eval("spawn(fun() -> (fun L(I) -> {nowhere, N} ! {I, B}, L(I + 1) end)(0) end), ok");
    std::thread::sleep(Duration::from_millis(700));
    erl.signal(libc::SIGSTOP);
    let took = wait_gone("the program of the owner frozen while sending", program, Duration::from_secs(10));
    eprintln!("erl frozen while sending 64 MB messages (ticktime 2 s): program stopped after {took:?}");
    // Frozen in the middle of a 64 MB frame (the sender never pauses
    // between frames): the stall is caught mid-frame, by the per-read
    // deadline, not as silence between frames.
    let log = pn.log();
    assert!(log.contains("stalled"), "not caught mid-frame: {log}");
}

#[test]
fn a_node_back_under_its_name_with_a_new_creation_fires_the_old_links() {
    let home = Home::new(COOKIE);
    let epmd = PrivateEpmd::start();
    let env = [("ERL_EPMD_PORT", epmd.env())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // portnode keeps the default tick time (60 s): only the new incarnation can end the old connection.
    let pn = Portnode::start_env(&home, &unique("pn"), &[], &env);
    let sname = unique("back");
    let mut old = Erl::start_env(&home, &sname, &[], &env);
    assert_eq!(old.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    let program = open_sleeper(&mut old, "H");
    old.signal(libc::SIGSTOP);
    epmd.stop_name(&sname);
    let mut new = Erl::start_env(&home, &sname, &[], &env);
    let start = Instant::now();
    assert_eq!(new.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong", "the new incarnation could not connect");
    let took = wait_gone("the old incarnation's program", program, Duration::from_secs(5));
    eprintln!("new incarnation: connected and old program stopped after {:?}", start.elapsed().max(took));
    let log = pn.log();
    assert!(log.contains("connection replaced"), "no replacement logged: {log}");
    // The new incarnation is fully served.
    assert_eq!(new.eval("gen_server:call({portnode, N}, ping)"), "pong");
    let program2 = open_sleeper(&mut new, "H2");
    assert!(os_alive(program2));
    old.kill();
}

/// Starts a second VM connected to the first (not to portnode) and binds
/// `Remote` in `erl` to a pid on it.
fn remote_pid_elsewhere(home: &Home, erl: &mut Erl) -> Erl {
    let other = Erl::start(home, &[]);
    let out = erl.eval(&format!("Remote = rpc:call('{}', erlang, whereis, [init]), is_pid(Remote)", other.node));
    assert_eq!(out, "true");
    other
}

#[test]
fn links_and_monitors_to_an_unconnected_node_break_at_once() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::start(&home, &[]);
    assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    let _other = remote_pid_elsewhere(&home, &mut erl);
    erl.eval("P = gen_server:call({portnode, N}, {spawn_probe, self()}), P ! {trap_exit, true}");
    let out = erl.eval("P ! {link, Remote}, receive {probe, P, {'EXIT', Remote, R}} -> R after 2000 -> timeout end");
    assert_eq!(out, "noconnection");
    let out = erl.eval("P ! {monitor, Remote}, receive {probe, P, {'DOWN', _, process, Remote, R2}} -> R2 after 2000 -> timeout end");
    assert_eq!(out, "noconnection");
}

#[test]
fn a_port_for_an_owner_on_an_unconnected_node_stops_at_once() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::start(&home, &[]);
    assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    let _other = remote_pid_elsewhere(&home, &mut erl);
    let file = home.path.join("owner-gone.pid");
    let out = erl.eval(&format!(
        "gen_server:call({{portnode, N}}, {{open_port, Remote, {{spawn_executable, \"/bin/sh\"}}, [{{args, [\"-c\", \"echo $$ > {}; exec sleep 1000\"]}}]}})",
        file.display()
    ));
    assert!(out.starts_with("{ok,"), "open_port: {out}");
    let started = Instant::now();
    // The handle is gone at once (a monitor of it fires), and so is the program:
    // stopped before or soon after it wrote its pid.
    let out = erl.eval("{ok, H, _} = gen_server:call({portnode, N}, {open_port, Remote, {spawn, \"sleep 1000\"}, []}), M = monitor(process, H), receive {'DOWN', M, process, H, Why} -> Why after 2000 -> still_open end");
    assert!(out == "noconnection" || out == "noproc", "the handle of an unconnected owner stayed open: {out}");
    let sleepers = || descendants_of(pn.pid()).into_iter().filter(|p| matches!(comm(*p).as_str(), "sleep" | "sh")).count();
    wait_for("no program left", Duration::from_secs(3), || sleepers() == 0);
    if let Some(pid) = std::fs::read_to_string(&file).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
        assert!(!os_alive(pid), "the program that wrote its pid still runs");
    }
    eprintln!("owner on an unconnected node: handle closed and programs gone after {:?}", started.elapsed());
}

#[test]
fn owners_that_die_while_their_port_opens_leave_no_program() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::start(&home, &[]);
    assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    // 500 owners, each dying at a random moment around its open_port (before,
    // during or after the handle's link); the call is made by another process.
    let out = erl.eval_within(
        "Open = fun(_) -> Owner = spawn(fun() -> receive after rand:uniform(3) - 1 -> ok end end), gen_server:call({portnode, N}, {open_port, Owner, {spawn, \"sleep 1000\"}, []}) end, \
         Rs = [Open(I) || I <- lists:seq(1, 500)], length([ok || {ok, _, _} <- Rs])",
        Duration::from_secs(120),
    );
    assert_eq!(out, "500", "every open_port should have succeeded");
    let limit = Duration::from_secs(15);
    let start = Instant::now();
    let sleepers = || descendants_of(pn.pid()).into_iter().filter(|p| comm(*p) == "sleep").count();
    while sleepers() > 0 {
        assert!(start.elapsed() < limit, "{} programs outlived their owners", sleepers());
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("500 racing owners: last program gone {:?} after the opens", start.elapsed());
}

