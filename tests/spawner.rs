//! The spawner, against a real portnode, real `erl` and real programs:
//! portnode holds three fds per program and its spawner none, exits are
//! reported and reaped, a dead spawner ends portnode and every program
//! (a double-forked daemon included), in both containment modes, a
//! request too large for the spawner fails alone, and restart grants hold
//! a bounded number of fds in the spawner.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}


/// portnode's spawner: its one child named so.
fn spawner_of(pn: &Portnode) -> u32 {
    let found: Vec<u32> = children_of(pn.pid()).into_iter().filter(|p| comm(*p) == "portnode-spawn").collect();
    assert_eq!(found.len(), 1, "portnode should have one spawner: {found:?}");
    found[0]
}

fn connected(extra: &[&str]) -> (Home, Portnode, Erl) {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, extra);
    let erl = Erl::connected_to(&home, &pn);
    (home, pn, erl)
}

/// Opens `count` programs for the shell, with `settings`; binds `Var` to their handles.
fn open_many(erl: &mut Erl, var: &str, count: usize, program: &str, settings: &str) {
    let out = erl.eval(&format!(
        "{var} = [begin {{ok, H, _}} = gen_server:call({{portnode, N}}, {{open_port, self(), {{spawn, \"{program}\"}}, {settings}}}), H end || _ <- lists:seq(1, {count})], length({var})"
    ));
    assert_eq!(out, count.to_string());
}

#[test]
fn portnode_holds_three_fds_per_program_and_the_spawner_none() {
    for mode in ["auto", "off"] {
        let (_home, pn, mut erl) = connected(&["--cgroup", mode]);
        let spawner = spawner_of(&pn);
        let (pn_before, sp_before) = (fd_count(pn.pid()), fd_count(spawner));
        open_many(&mut erl, "Hs", 100, "cat", "[binary]");
        let pn_held = fd_count(pn.pid());
        assert_eq!(pn_held - pn_before, 300, "{mode}: portnode's fds for 100 programs (stdin, stdout, and stderr, which it logs)");
        // The spawner closes its copies just after it has sent them.
        wait_for(&format!("{mode}: the spawner holds no fd of a running program"), Duration::from_secs(2), || fd_count(spawner) == sp_before);
        // With stderr as messages: a third pipe too; with stderr_to_stdout, none.
        open_many(&mut erl, "Es", 10, "cat", "[binary, {stderr, message}]");
        assert_eq!(fd_count(pn.pid()) - pn_held, 30, "{mode}: stdin, stdout and stderr for 10 programs");
        open_many(&mut erl, "Ts", 10, "cat", "[binary, stderr_to_stdout]");
        assert_eq!(fd_count(pn.pid()) - pn_held, 50, "{mode}: stdin and stdout for 10 programs more");
        // Every program's exit is reported, and every one is reaped: nothing is left under the spawner.
        let out = erl.eval("lists:usort([gen_server:call(H, close) || H <- Hs ++ Es ++ Ts])");
        assert_eq!(out, "[true]");
        wait_for("every program reaped", Duration::from_secs(10), || children_of(spawner).is_empty());
        wait_for("portnode's fds back", Duration::from_secs(5), || fd_count(pn.pid()) == pn_before);
        assert_eq!(fd_count(spawner), sp_before);
    }
}

#[test]
fn exit_statuses_come_through_the_spawner_for_many_programs_at_once() {
    let (_home, _pn, mut erl) = connected(&[]);
    // 200 programs that exit at once with distinct statuses, then signals.
    let out = erl.eval(
        "Ps = [begin {ok, H, _} = gen_server:call({portnode, N}, {open_port, self(), {spawn_executable, \"/bin/sh\"}, [exit_status, {args, [\"-c\", \"exit \" ++ integer_to_list(I)]}]}), {H, I} end || I <- lists:seq(1, 200)], \
         length([ok || {H, I} <- Ps, receive {H, {exit_status, I}} -> true after 10000 -> false end])",
    );
    assert_eq!(out, "200", "every exit status, each to its own port");
    let out = erl.eval(
        "{ok, K, KPid} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"sleep 1000\"}, [exit_status]}), \
         os:cmd(\"kill -USR1 \" ++ integer_to_list(KPid)), receive {K, {exit_status, KS}} -> KS after 10000 -> timeout end",
    );
    assert_eq!(out, (128 + libc::SIGUSR1).to_string());
}

/// Exits hidden from `waitid(P_ALL)` behind a held zombie (a program whose
/// port stays open after it exited, with `eof`) are still each reported,
/// soon: once the zombie is reaped, or by pid after a short bound.
#[test]
fn exits_behind_a_held_zombie_are_each_reported() {
    for mode in ["auto", "off"] {
        let (_home, _pn, mut erl) = connected(&["--cgroup", mode]);
        let out = erl.eval("{ok, Z, _} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"true\"}, [eof, exit_status]}), receive {Z, eof} -> eof after 5000 -> timeout end");
        assert_eq!(out, "eof", "{mode}");
        let started = Instant::now();
        let out = erl.eval(
            "Ps = [begin {ok, H, _} = gen_server:call({portnode, N}, {open_port, self(), {spawn_executable, \"/bin/sh\"}, [exit_status, {args, [\"-c\", \"exit \" ++ integer_to_list(I)]}]}), {H, I} end || I <- lists:seq(1, 200)], \
             length([ok || {H, I} <- Ps, receive {H, {exit_status, I}} -> true after 10000 -> false end])",
        );
        assert_eq!(out, "200", "{mode}: every exit status, each to its own port");
        assert!(started.elapsed() < Duration::from_secs(8), "{mode}: took {:?}", started.elapsed());
        assert_eq!(erl.eval("gen_server:call(Z, close)"), "true");
    }
}

#[test]
fn a_dead_spawner_ends_portnode_and_every_program() {
    for mode in ["auto", "off"] {
        let (home, mut pn, mut erl) = connected(&["--cgroup", mode]);
        let spawner = spawner_of(&pn);
        let file = home.path.join(format!("daemon-{mode}.pid"));
        // A plain program, and a classic daemon: fork, setsid, fork again, close stdio.
        let out = erl.eval(&format!(
            "{{ok, _, Plain}} = gen_server:call({{portnode, N}}, {{open_port, self(), {{spawn, \"sleep 1000\"}}, []}}), \
             {{ok, _, _}} = gen_server:call({{portnode, N}}, {{open_port, self(), {{spawn_executable, \"/bin/sh\"}}, [{{args, [\"-c\", \"(setsid sh -c 'echo $$ > {}; exec sleep 1000' </dev/null >/dev/null 2>&1 &); exec sleep 1000\"]}}]}}), Plain",
            file.display()
        ));
        let plain: u32 = out.parse().unwrap_or_else(|_| panic!("{mode}: open failed: {out}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let daemon = loop {
            if let Some(pid) = std::fs::read_to_string(&file).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "{mode}: the daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(os_alive(plain) && os_alive(daemon));
        // SAFETY: kill(2) on the spawner of the portnode this test started.
        unsafe { libc::kill(spawner as i32, libc::SIGKILL) };
        let code = pn.wait_exit();
        assert_ne!(code, Some(0), "{mode}: portnode must fail when its spawner dies");
        assert!(pn.log().contains("the spawner is gone"), "{mode}: the log says why: {}", pn.log());
        wait_gone(&format!("{mode}: the plain program"), plain, Duration::from_secs(5));
        wait_gone(&format!("{mode}: the daemon"), daemon, Duration::from_secs(5));
    }
}

#[test]
fn a_port_killed_while_its_program_starts_leaves_nothing() {
    for mode in ["auto", "off"] {
        let (_home, pn, mut erl) = connected(&["--cgroup", mode]);
        // Handles killed (untrappable) 0-2 ms after the open returned, while
        // the spawner may still be starting their programs, each of which
        // forks a child before it execs. The child's argument is this
        // run's own, so that it is found wherever it ends up: an orphan
        // reparented out of portnode's tree counts too.
        let (child, leader) = (format!("777.{}", pn.pid()), format!("778.{}", pn.pid()));
        let out = erl.eval_within(
            &format!("Hs = [begin {{ok, H}} = gen_server:call({{portnode, N}}, {{open_port_nowait, self(), {{spawn, \"sleep {child} & exec sleep {leader}\"}}, []}}), \
                   receive after rand:uniform(3) - 1 -> ok end, exit(H, kill), H end || _ <- lists:seq(1, 300)], length(Hs)"),
            Duration::from_secs(120),
        );
        assert_eq!(out, "300");
        let sleepers = || processes_running(&["sleep", &child]).len() + processes_running(&["sleep", &leader]).len();
        let start = Instant::now();
        while sleepers() > 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "{mode}: {} programs outlived their killed handles", sleepers());
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{mode}: 300 handles killed while starting: nothing left after {:?}", start.elapsed());
    }
}

/// A program starts with every signal at its default and none blocked,
/// whatever portnode and its spawner ignore or catch (SIGPIPE, SIGINT,
/// SIGTERM, SIGHUP, SIGQUIT are ignored in the spawner, SIGSEGV caught) and
/// whatever portnode itself inherited (here: SIGHUP and SIGUSR2 ignored).
#[test]
fn a_program_starts_with_default_signals_and_none_blocked() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start_with(&home, &[], |cmd| {
        // SAFETY: in the child before exec: only signal(2), async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                libc::signal(libc::SIGUSR2, libc::SIG_IGN);
                Ok(())
            });
        }
    });
    assert_eq!(signal_ignored(pn.pid(), libc::SIGUSR2), true, "the test's own premise");
    let mut erl = Erl::connected_to(&home, &pn);
    // cat reports its own state, and installs no handler (grep catches SIGSEGV).
    for (i, (program, args)) in [("/bin/cat", r#"["/proc/self/status"]"#), ("/bin/sh", r#"["-c", "exec cat /proc/self/status"]"#)].into_iter().enumerate() {
        let out = erl.eval(&format!(
            "{{ok, H{i}, _}} = gen_server:call({{portnode, N}}, {{open_port, self(), {{spawn_executable, \"{program}\"}}, [{{args, {args}}}, {{line, 200}}, exit_status]}}), \
             Collect{i} = fun C(Acc) -> receive {{H{i}, {{data, {{eol, L}}}}}} -> C([L | Acc]); {{H{i}, {{exit_status, S}}}} -> {{S, lists:reverse(Acc)}} after 10000 -> timeout end end, \
             {{0, Lines{i}}} = Collect{i}([]), \
             string:join([L || L <- Lines{i}, lists:member(lists:takewhile(fun(C) -> C =/= $: end, L), [\"SigBlk\", \"SigIgn\", \"SigCgt\"])], \" \")"
        ));
        assert_eq!(out, r#""SigBlk:\t0000000000000000 SigIgn:\t0000000000000000 SigCgt:\t0000000000000000""#, "{program}: its signal state");
    }
}

/// Whether `signal` is ignored by process `pid` (its SigIgn mask).
fn signal_ignored(pid: u32, signal: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).map(|m| u64::from_str_radix(m.trim(), 16).unwrap_or(0)).unwrap_or(0);
    mask & (1 << (signal - 1)) != 0
}

/// Every handle gets its own program when opens come in a burst: 300
/// programs opened without waiting, each exiting at once with its own
/// status (some before their start is even reported), each status to its
/// own handle.
#[test]
fn programs_opened_in_a_burst_each_reach_their_own_handle() {
    for mode in ["auto", "off"] {
        let (_home, pn, mut erl) = connected(&["--cgroup", mode]);
        let out = erl.eval_within(
            "Hs = [begin {ok, H} = gen_server:call({portnode, N}, {open_port_nowait, self(), {spawn_executable, \"/bin/sh\"}, [exit_status, {args, [\"-c\", \"exit \" ++ integer_to_list(I rem 250)]}]}), {H, I rem 250} end || I <- lists:seq(1, 300)], \
             length([ok || {H, S} <- Hs, receive {H, {exit_status, S}} -> true after 20000 -> false end])",
            Duration::from_secs(60),
        );
        assert_eq!(out, "300", "{mode}: every status to its own handle");
        let deadline = Instant::now() + Duration::from_secs(10);
        while descendants_of(pn.pid()).iter().any(|p| comm(*p) == "sh") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(descendants_of(pn.pid()).iter().all(|p| comm(*p) != "sh"), "{mode}: every program reaped");
    }
}

/// The state letter of process `pid` in /proc/PID/stat (`None` once reaped).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().next()?.chars().next()
}

/// A program that exits while portnode cannot process its exit (frozen
/// with SIGSTOP) stays a zombie, in both modes: its pid is not reaped, so
/// not reused, until portnode has processed the exit, and no signal of
/// portnode's (a stop, `kill/2`, a handle dropped) can reach another
/// process that got the same pid. Once portnode runs again it is reaped.
#[test]
fn an_exited_program_is_held_until_portnode_has_processed_its_exit() {
    for mode in ["auto", "off"] {
        let (_home, pn, mut erl) = connected(&["--cgroup", mode]);
        let out = erl.eval("{ok, H, P} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"sleep 0.5\"}, []}), P");
        let program: u32 = out.parse().expect("os pid");
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(pn.pid() as i32, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(1500));
        let held = state(program);
        // SAFETY: as above.
        unsafe { libc::kill(pn.pid() as i32, libc::SIGCONT) };
        assert_eq!(held, Some('Z'), "{mode}: the exited program was reaped before portnode processed its exit");
        wait_gone("the program to be reaped once portnode runs", program, Duration::from_secs(5));
    }
}

#[test]
fn an_open_too_large_for_the_spawner_fails_as_an_exec_would_and_alone() {
    // A frame limit above the spawner's (256 MiB), so that the open arrives whole.
    let (_home, pn, mut erl) = connected(&["--max-frame", "536870912"]);
    let out = erl.eval("{ok, Sleeper, SleeperPid} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"sleep 1000\"}, []}), SleeperPid");
    let sleeper: u32 = out.parse().unwrap_or_else(|_| panic!("no os pid: {out}"));
    // 200 MiB of arguments (one 1 MiB binary, 200 times) and 72 MB of
    // environment: 280 MB, beyond what the spawner takes.
    erl.eval(
        "Args = lists:duplicate(200, binary:copy(<<\"a\">>, 1 bsl 20)), S = lists:duplicate(60000, $b), \
         Env = [{\"V\" ++ integer_to_list(I), S} || I <- lists:seq(1, 1200)], ok",
    );
    // erts opens such a port, whose program exits with E2BIG's 7 (exec fails).
    let out = erl.eval_within(
        "Local = open_port({spawn_executable, \"/bin/true\"}, [exit_status, {args, Args}, {env, Env}]), \
         receive {Local, {exit_status, LS}} -> LS after 30000 -> no_status end",
        Duration::from_secs(60),
    );
    assert_eq!(out, "7", "erts's own open_port");
    // So does portnode, without asking its spawner (which would refuse the request and end portnode).
    let out = erl.eval_within(
        "R = (catch gen_server:call({portnode, N}, {open_port, self(), {spawn_executable, \"/bin/true\"}, [exit_status, {args, Args}, {env, Env}]}, 120000)), \
         case R of {ok, Big, undefined} -> receive {Big, {exit_status, St}} -> St after 10000 -> no_status end; \
                   {'EXIT', {Why, _Call}} -> {exit, Why}; Other -> {other, Other} end",
        Duration::from_secs(150),
    );
    assert_eq!(out, "7", "log: {}", pn.log());
    assert!(pn.log().contains("too large for the spawner"));
    // The node, its spawner and the program started before all live on.
    assert!(os_alive(sleeper), "the program started before is gone");
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
    spawner_of(&pn);
    let out = erl.eval("{ok, After, _} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"echo hi\"}, []}), receive {After, {data, D}} -> D after 5000 -> timeout end");
    assert_eq!(out, "\"hi\\n\"");
    assert_eq!(erl.eval("gen_server:call(Sleeper, close)"), "true");
}

/// Restart grants (a permanent child of a `one_for_one` supervisor inside
/// portnode is restarted by the spawner): the spawner holds the fds of the
/// grants armed (the next program's three pipe ends, its leaf, its exec
/// pipe and the old program's leaf's `cgroup.events`), for 64 grants at
/// most however many children, and none
/// once they are given up; in process-group mode, none at all.
#[test]
fn the_spawner_holds_the_fds_of_64_restart_grants_at_most_and_none_after() {
    for mode in ["auto", "off"] {
        let (_home, pn, mut erl) = connected(&["--cgroup", mode]);
        let spawner = spawner_of(&pn);
        let before = fd_count(spawner);
        let containment = erl.eval("maps:get(containment, gen_server:call({portnode, N}, info))");
        let out = erl.eval(
            "process_flag(trap_exit, true), \
             Child = fun(I) -> #{id => I, start => {{spawn, \"sleep 300\"}, []}} end, \
             {ok, Sup} = gen_server:call({portnode, N}, {start_supervisor, self(), #{intensity => 1000, period => 10}, [Child(I) || I <- lists:seq(1, 70)]}, 30000), \
             length(supervisor:which_children(Sup))",
        );
        assert_eq!(out, "70", "{mode}");
        let expected = if containment == "cgroup" { 64 * 7 } else { 0 };
        wait_for(&format!("{mode} ({containment}): the spawner holds {expected} fds for grants"), Duration::from_secs(5), || fd_count(spawner) == before + expected);
        // Still so a moment later: no grant beyond 64 is armed meanwhile.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(fd_count(spawner), before + expected, "{mode} ({containment})");
        let out = erl.eval("exit(Sup, shutdown), receive {'EXIT', Sup, R} -> R after 30000 -> timeout end");
        assert_eq!(out, "shutdown", "{mode}");
        wait_for(&format!("{mode}: every grant's fds closed"), Duration::from_secs(5), || fd_count(spawner) == before);
        wait_for(&format!("{mode}: every program gone"), Duration::from_secs(10), || children_of(spawner).is_empty());
    }
}
