//! What OTP relies on from a node, checked against real `erl` nodes:
//! ping, gen_server calls, links, monitors, exit-signal rules, node-down,
//! creations, spawn requests and shutdown.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// A portnode and an erl node connected to it, with `N` bound to the portnode's name.
fn pair() -> (Home, Portnode, Erl) {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::start(&home, &[]);
    assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    (home, pn, erl)
}

/// Binds `Var` to a new probe process on the portnode, reporting to the shell.
fn probe(erl: &mut Erl, var: &str) {
    let out = erl.eval(&format!("{var} = gen_server:call({{portnode, N}}, {{spawn_probe, self()}}), is_pid({var})"));
    assert_eq!(out, "true");
}

#[test]
fn ping_call_and_info_work_and_the_node_is_hidden() {
    let (_home, pn, mut erl) = pair();
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
    assert_eq!(erl.eval("lists:member(N, nodes(hidden)) andalso not lists:member(N, nodes())"), "true");
    let info = erl.eval("I = gen_server:call({portnode, N}, info), {maps:get(node, I) =:= N, maps:get(connected_nodes, I) =:= [node()], is_binary(maps:get(version, I))}");
    assert_eq!(info, "{true,true,true}");
    assert_eq!(erl.eval("gen_server:call({portnode, N}, nonsense)"), "{error,{unknown_call,nonsense}}");
    assert!(pn.log().contains("node connected"));
}

#[test]
fn links_from_erlang_follow_exit_signal_rules() {
    let (_home, _pn, mut erl) = pair();
    // A linked Erlang process dying with a reason kills a non-trapping probe.
    probe(&mut erl, "P1");
    let out = erl.eval("M1 = monitor(process, P1), spawn(fun() -> link(P1), timer:sleep(50), exit(foo) end), receive {'DOWN', M1, process, P1, R1} -> R1 after 5000 -> timeout end");
    assert_eq!(out, "foo");
    // `normal` through a link is ignored; exit(P, normal) too; exit(P, kill) gives killed.
    probe(&mut erl, "P2");
    erl.eval("spawn(fun() -> link(P2), exit(normal) end), exit(P2, normal), timer:sleep(200)");
    assert_eq!(erl.eval("P2 ! {echo, self(), alive}, receive alive -> yes after 2000 -> no end"), "yes");
    assert_eq!(erl.eval("M2 = monitor(process, P2), exit(P2, kill), receive {'DOWN', M2, _, _, R2} -> R2 after 5000 -> timeout end"), "killed");
    // A trapping probe gets exit signals as messages, except kill.
    probe(&mut erl, "P3");
    erl.eval("P3 ! {trap_exit, true}");
    let out = erl.eval("Q3 = spawn(fun() -> link(P3), timer:sleep(50), exit(bar) end), receive {probe, P3, {'EXIT', Q3, bar}} -> trapped after 5000 -> timeout end");
    assert_eq!(out, "trapped");
    assert_eq!(erl.eval("exit(P3, other), receive {probe, P3, {'EXIT', Me3, other}} -> Me3 =:= self() after 5000 -> timeout end"), "true");
    assert_eq!(erl.eval("M3 = monitor(process, P3), exit(P3, kill), receive {'DOWN', M3, _, _, R3} -> R3 after 5000 -> timeout end"), "killed");
}

#[test]
fn links_from_portnode_and_unlink_work() {
    let (_home, _pn, mut erl) = pair();
    // The probe links to an Erlang process; that process dies; the probe dies with it.
    probe(&mut erl, "P1");
    let out = erl.eval("Q1 = spawn(fun() -> receive go -> exit(baz) end end), P1 ! {link, Q1}, timer:sleep(100), M1 = monitor(process, P1), Q1 ! go, receive {'DOWN', M1, _, _, R1} -> R1 after 5000 -> timeout end");
    assert_eq!(out, "baz");
    // The probe dies; a trapping Erlang process linked to it gets the EXIT.
    probe(&mut erl, "P2");
    let out = erl.eval("process_flag(trap_exit, true), link(P2), P2 ! {exit, boom}, receive {'EXIT', P2, Why2} -> Why2 after 5000 -> timeout end");
    assert_eq!(out, "boom");
    // Unlinked from the Erlang side (UNLINK_ID), the probe's death does not reach us.
    probe(&mut erl, "P3");
    let out = erl.eval("link(P3), unlink(P3), P3 ! {exit, boom3}, receive {'EXIT', P3, _} -> linked after 500 -> unlinked end");
    assert_eq!(out, "unlinked");
    // Unlinked from the portnode side, the same.
    probe(&mut erl, "P4");
    let out = erl.eval("link(P4), P4 ! {unlink, self()}, timer:sleep(200), P4 ! {exit, boom4}, receive {'EXIT', P4, _} -> linked after 500 -> unlinked end");
    assert_eq!(out, "unlinked");
    // Linking to a process that is gone gives noproc.
    let out = erl.eval("link(P4), receive {'EXIT', P4, Why4} -> Why4 after 5000 -> timeout end");
    assert_eq!(out, "noproc");
}

#[test]
fn monitors_by_pid_and_by_name_both_ways() {
    let (_home, _pn, mut erl) = pair();
    probe(&mut erl, "P1");
    assert_eq!(erl.eval("M1 = monitor(process, P1), P1 ! {exit, {shutdown, x}}, receive {'DOWN', M1, process, P1, R1} -> R1 after 5000 -> timeout end"), "{shutdown,x}");
    // By name: a registered process is monitored without a DOWN; an unknown name is noproc at once.
    assert_eq!(erl.eval("M2 = monitor(process, {portnode, N}), receive {'DOWN', M2, _, _, _} -> down after 300 -> up end"), "up");
    assert_eq!(erl.eval("M3 = monitor(process, {no_such_name, N}), receive {'DOWN', M3, process, {no_such_name, N}, R3} -> R3 after 5000 -> timeout end"), "noproc");
    // demonitor: no DOWN after it.
    probe(&mut erl, "P4");
    assert_eq!(erl.eval("M4 = monitor(process, P4), demonitor(M4), P4 ! {exit, bye}, receive {'DOWN', M4, _, _, _} -> down after 300 -> none end"), "none");
    // The probe monitors an Erlang process and is told when it dies.
    probe(&mut erl, "P5");
    let out = erl.eval("Q5 = spawn(fun() -> receive go -> exit(gone) end end), P5 ! {monitor, Q5}, timer:sleep(100), Q5 ! go, receive {probe, P5, {'DOWN', _, process, Q5, R5}} -> R5 after 5000 -> timeout end");
    assert_eq!(out, "gone");
    // Monitoring an already dead Erlang process: DOWN noproc.
    let out = erl.eval("P5 ! {monitor, Q5}, receive {probe, P5, {'DOWN', _, process, Q5, R6}} -> R6 after 5000 -> timeout end");
    assert_eq!(out, "noproc");
}

#[test]
fn a_dropped_connection_fires_links_and_monitors_on_both_sides() {
    let (_home, _pn, mut erl) = pair();
    probe(&mut erl, "P1");
    probe(&mut erl, "P2");
    // Erlang side: a trapping process linked to P1 and monitoring it.
    erl.eval("Self = self(), W = spawn(fun() -> process_flag(trap_exit, true), link(P1), M = monitor(process, P1), Self ! ready, receive {'EXIT', P1, E} -> receive {'DOWN', M, _, _, D} -> Self ! {got, E, D} end end end), receive ready -> ok end");
    // portnode side: P2 linked to an Erlang process Q2.
    erl.eval("Q2 = spawn(fun() -> process_flag(trap_exit, true), receive {'EXIT', From, Why} -> Self ! {q2, From, Why} end end), P2 ! {link, Q2}, timer:sleep(100)");
    assert_eq!(erl.eval("erlang:disconnect_node(N)"), "true");
    assert_eq!(erl.eval("receive {got, E1, D1} -> {E1, D1} after 5000 -> timeout end"), "{noconnection,noconnection}");
    // Reconnect: P2 died of noconnection on the portnode side, so it is gone now.
    assert_eq!(erl.eval("net_adm:ping(N)"), "pong");
    assert_eq!(erl.eval("M2 = monitor(process, P2), receive {'DOWN', M2, _, _, R2} -> R2 after 5000 -> timeout end"), "noproc");
    // Erlang did its half for the Erlang process linked to P2.
    assert_eq!(erl.eval("receive {q2, P2, W2} -> W2 after 5000 -> timeout end"), "noconnection");
}

#[test]
fn a_restarted_node_has_a_new_creation_and_old_pids_are_noproc() {
    let home = Home::new(COOKIE);
    let sname = unique("pn");
    let mut pn = Portnode::start_named(&home, &sname, &[]);
    let mut erl = Erl::start(&home, &[]);
    assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
    probe(&mut erl, "Old");
    pn.signal_and_wait(libc::SIGKILL);
    drop(pn);
    erl.eval("timer:sleep(200)");
    let _pn2 = Portnode::start_named(&home, &sname, &[]);
    assert_eq!(erl.eval("net_adm:ping(N)"), "pong");
    probe(&mut erl, "New");
    // Same node name, same process number space, different creation.
    assert_eq!(erl.eval("node(New) =:= node(Old) andalso New =/= Old"), "true");
    assert_eq!(erl.eval("M = monitor(process, Old), receive {'DOWN', M, _, _, R} -> R after 5000 -> timeout end"), "noproc");
    assert_eq!(erl.eval("process_flag(trap_exit, true), link(Old), receive {'EXIT', Old, R2} -> R2 after 5000 -> timeout end"), "noproc");
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
}

#[test]
fn rpc_call_gets_a_clean_answer_and_the_connection_stays() {
    let (_home, pn, mut erl) = pair();
    assert_eq!(erl.eval("rpc:call(N, erlang, node, [])"), "{badrpc,notsup}");
    // Small integers in the argument list travel as a byte string (STRING_EXT).
    assert_eq!(erl.eval("rpc:call(N, lists, seq, [1, 3])"), "{badrpc,notsup}");
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
    assert_eq!(pn.log().matches("node connected").count(), 1, "connection was not dropped");
}

#[test]
fn erpc_with_a_fun_is_refused_at_once_and_the_connection_stays() {
    let (_home, pn, mut erl) = pair();
    // erpc:call(N, Fun) is a SPAWN_REQUEST whose argument list holds the fun.
    // Before, portnode dropped the frame it could not decode, and the caller
    // waited forever (erpc's default timeout is infinity).
    let t0 = Instant::now();
    assert_eq!(
        erl.eval("try erpc:call(N, fun() -> ok end) catch C:R -> {C, R} end"),
        "{error,{erpc,notsup}}"
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "erpc took {:?}", t0.elapsed());
    assert_eq!(erl.eval("try erpc:call(N, fun() -> ok end, 5000) catch C2:R2 -> {C2, R2} end"), "{error,{erpc,notsup}}");
    // A fun in an ordinary message is kept as an opaque term: the control
    // server's unknown_call answer carries it back, equal to what was sent.
    assert_eq!(
        erl.eval("F = fun(X) -> {X, self()} end, {error, {unknown_call, {echo, F2}}} = gen_server:call({portnode, N}, {echo, F}), F2 =:= F"),
        "true"
    );
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
    assert_eq!(pn.log().matches("node connected").count(), 1, "connection was not dropped");
}

/// A hangup (or SIGTERM, SIGQUIT) to portnode's whole process group, as a
/// terminal that closes sends it: portnode shuts down cleanly (its programs
/// stopped, status 0), and its spawner and watchdog, which are in that
/// group, live until then and go with it.
#[test]
fn a_signal_to_portnodes_whole_group_is_a_clean_shutdown() {
    for signal in [libc::SIGHUP, libc::SIGTERM, libc::SIGQUIT] {
        let home = Home::new(COOKIE);
        let mut pn = Portnode::start_with(&home, &[], |cmd| {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        });
        let mut erl = Erl::start(&home, &[]);
        assert_eq!(erl.eval(&format!("N = '{}', net_adm:ping(N)", pn.node)), "pong");
        let out = erl.eval("{ok, H, P} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"sleep 300\"}, []}), monitor_node(N, true), P");
        let program: u32 = out.parse().expect("os pid");
        let forked = children_of(pn.pid());
        assert_eq!(forked.len(), 2, "the spawner and the watchdog");
        // SAFETY: kill(2) of the group our own child leads.
        unsafe { libc::kill(-(pn.pid() as i32), signal) };
        assert_eq!(pn.wait_exit(), Some(0), "signal {signal}: not a clean exit");
        assert!(pn.log().contains("shutting down"), "signal {signal}: no shutdown logged");
        assert_eq!(erl.eval("receive {nodedown, N} -> nodedown after 5000 -> timeout end"), "nodedown");
        for pid in forked.into_iter().chain([program]) {
            wait_gone("portnode's forks and its program", pid, Duration::from_secs(5));
        }
    }
}

#[test]
fn sigterm_unregisters_and_peers_see_nodedown() {
    let (_home, mut pn, mut erl) = pair();
    assert!(epmd_lists(&pn.sname));
    erl.eval("monitor_node(N, true)");
    assert_eq!(pn.signal_and_wait(libc::SIGTERM), Some(0));
    assert_eq!(erl.eval("receive {nodedown, N} -> nodedown after 5000 -> timeout end"), "nodedown");
    wait_for("epmd to forget the node", Duration::from_secs(5), || !epmd_lists(&pn.sname));
}

#[test]
fn stdin_eof_shuts_down_when_asked() {
    let (_home, mut pn, mut erl) = pair();
    erl.eval("monitor_node(N, true)");
    pn.close_stdin();
    assert_eq!(pn.wait_exit(), Some(0));
    assert_eq!(erl.eval("receive {nodedown, N} -> nodedown after 5000 -> timeout end"), "nodedown");
    assert!(pn.log().contains("stdin closed"));
}

#[test]
fn connect_dials_out_and_keeps_the_connection() {
    let home = Home::new(COOKIE);
    let mut erl = Erl::start(&home, &[]);
    let node = erl.node.clone();
    let pn = Portnode::start(&home, &["--connect", &node]);
    wait_for("the dialed connection", Duration::from_secs(10), || pn.log().contains("node connected"));
    assert_eq!(erl.eval(&format!("N = '{}', lists:member(N, nodes(hidden))", pn.node)), "true");
    // Dropped from the Erlang side, portnode dials again.
    erl.eval("erlang:disconnect_node(N)");
    wait_for("a redial", Duration::from_secs(10), || pn.log().matches("node connected").count() >= 2);
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
}
