%% @doc No program outlives its handle, whichever way the handle goes, even
%% programs that leave their process group: a setsid child, a double-forked
%% daemon, Python's start_new_session, a classic daemon that closes its
%% stdio. Each case runs under both containments: a cgroup per program,
%% and the fallback (process group, subreaper, environment marker).
-module(containment_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(GONE_WITHIN, 5000).

all() ->
    [{group, cgroup}, {group, process_group}].

%% A group per containment, holding a group per way the owner goes,
%% holding a case per program shape.
groups() ->
    Ways = [{group, Way} || Way <- ways()],
    [{cgroup, [], Ways ++ [daemon_of_a_program_that_exits, cgroup_is_removed_when_portnode_is_killed, a_burst_of_starts_each_ends_as_its_program]},
     {process_group, [], Ways ++ [daemon_of_a_program_that_exits, a_burst_of_starts_each_ends_as_its_program]}]
        ++ [{Way, [], [Shape || {Shape, _} <- shapes()]} || Way <- ways()].

ways() -> [close, owner_exit, owner_vm_killed, portnode_killed].

%% Programs as they are written in the wild. Each prints the pids of the
%% processes that left its process group, one per line, then keeps running.
shapes() ->
    [{setsid_child, sh("setsid sleep 1000 & echo $!; exec sleep 2000")},
     {double_forked_daemon, sh("(setsid sleep 1000 & echo $!); exec sleep 2000")},
     {grandchild_in_group, sh("sleep 1000 & echo $!; exec sleep 2000")},
     {python_new_session, python("import subprocess, time\n"
                                 "p = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
                                 "print(p.pid, flush=True)\n"
                                 "time.sleep(2000)\n")},
     {classic_daemon, python(daemon_script("time.sleep(2000)\n"))}].

%% A classic daemon (fork, setsid, fork, stdio on /dev/null, chdir /) that
%% prints its pid first; its starter then runs `Then'.
daemon_script(Then) ->
    "import os, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        print(os.getpid(), flush=True)\n"
    "        fd = os.open('/dev/null', os.O_RDWR)\n"
    "        for i in (0, 1, 2): os.dup2(fd, i)\n"
    "        os.chdir('/')\n"
    "        time.sleep(1000)\n"
    "    os._exit(0)\n" ++ Then.

sh(Script) -> {{spawn_executable, "/bin/sh"}, [{args, ["-c", Script]}]}.
python(Code) -> {{spawn_executable, os:find_executable("python3")}, [{args, ["-c", Code]}]}.

init_per_suite(Config) ->
    case os:find_executable("python3") of
        false -> {skip, "python3 is needed for the daemon shapes"};
        _ -> Config
    end.

end_per_suite(_Config) ->
    ok.

init_per_group(Way, Config) when Way =:= close; Way =:= owner_exit; Way =:= owner_vm_killed; Way =:= portnode_killed ->
    [{way, Way} | Config];
init_per_group(Mode, Config) ->
    case Mode =:= cgroup andalso os:cmd("id -u") =/= "0\n" of
        true ->
            {skip, "cgroup mode needs root or a delegated cgroup v2 subtree"};
        false ->
            Pn = own_portnode:start(atom_to_list(Mode), mode_flag(Mode)),
            ?assertEqual(Mode, maps:get(containment, portnode:info(own_portnode:node(Pn)))),
            [{mode, Mode}, {portnode, Pn} | Config]
    end.

end_per_group(Mode, Config) when Mode =:= cgroup; Mode =:= process_group ->
    own_portnode:stop(?config(portnode, Config));
end_per_group(_Way, _Config) ->
    ok.

mode_flag(cgroup) -> "auto";
mode_flag(process_group) -> "off".

%% @doc Each shape, ended the group's way.
setsid_child(Config) -> run(?config(way, Config), setsid_child, Config).
double_forked_daemon(Config) -> run(?config(way, Config), double_forked_daemon, Config).
grandchild_in_group(Config) -> run(?config(way, Config), grandchild_in_group, Config).
python_new_session(Config) -> run(?config(way, Config), python_new_session, Config).
classic_daemon(Config) -> run(?config(way, Config), classic_daemon, Config).

%% Start the shape, check all of it runs, end the owner the group's way,
%% and check that all of it is gone and portnode holds no zombie.
run(Way, Shape, Config) ->
    {Shape, {PortName, Settings}} = lists:keyfind(Shape, 1, shapes()),
    {Pn, Node} = case Way of
                     %% Killing portnode needs a portnode of its own.
                     portnode_killed ->
                         P = own_portnode:start("killed", mode_flag(?config(mode, Config))),
                         {P, own_portnode:node(P)};
                     _ ->
                         P = ?config(portnode, Config),
                         {P, own_portnode:node(P)}
                 end,
    Self = self(),
    Owner = case Way of
                owner_vm_killed ->
                    {ok, Peer, PeerNode} = peer_vm(),
                    {Peer, PeerNode, erpc:call(PeerNode, contained_owner, start, [Node, PortName, Settings, Self])};
                _ ->
                    {local, contained_owner:start(Node, PortName, Settings, Self)}
            end,
    {H, Leader} = receive {opened, H0, L0} -> {H0, L0} after 10000 -> ct:fail(not_opened) end,
    Escaped = receive {line, Line} -> [list_to_integer(string:trim(Line))] after 10000 -> ct:fail(no_pid_line) end,
    All = [Leader | Escaped],
    ok = wait_alive(All, 5000),
    ct:log("~p ~p: leader ~p, escaped ~p", [Way, Shape, Leader, Escaped]),
    [?assertNotEqual(pgid(Leader), pgid(E)) || Shape =/= grandchild_in_group, E <- Escaped],
    T0 = erlang:monotonic_time(millisecond),
    end_owner(Way, Owner, H, Pn),
    ?assertEqual([], os_process:wait_gone(All, ?GONE_WITHIN)),
    ct:log("all gone ~b ms after the owner went", [erlang:monotonic_time(millisecond) - T0]),
    case Way of
        portnode_killed -> ok;
        _ -> ?assertEqual([], wait_no_zombies(own_portnode:os_pid(Pn), 2000))
    end.

end_owner(close, {local, _Owner}, H, _Pn) ->
    true = portnode:port_close(H);
end_owner(owner_exit, {local, Owner}, _H, _Pn) ->
    exit(Owner, kill);
end_owner(owner_vm_killed, {Peer, PeerNode, _}, _H, _Pn) ->
    os:cmd("kill -9 " ++ integer_to_list(os_process:os_pid_of_node(PeerNode))),
    try peer:stop(Peer) catch _:_ -> ok end;
end_owner(portnode_killed, {local, _Owner}, _H, Pn) ->
    PnPid = own_portnode:os_pid(Pn),
    os:cmd("kill -9 " ++ integer_to_list(PnPid)),
    ?assertEqual([], os_process:wait_gone([PnPid], 5000)),
    own_portnode:stop(Pn).

%% @doc A program that daemonizes and exits on its own (fork, setsid,
%% fork, the daemon's stdio on /dev/null, so the port's output ends): the
%% owner hears exit_status 0, the port ends with its output, and the daemon
%% goes with it, though the owner is still there.
daemon_of_a_program_that_exits(Config) ->
    Node = own_portnode:node(?config(portnode, Config)),
    %% The starter waits for its first child, then exits 0.
    Code = daemon_script("os.wait()\n"),
    {H, _Leader} = portnode:open(Node, {spawn_executable, os:find_executable("python3")},
                                [{args, ["-c", Code]}, {line, 64}, exit_status]),
    Ref = erlang:monitor(process, H),
    Daemon = receive {H, {data, {eol, Line}}} -> list_to_integer(Line) after 10000 -> ct:fail(no_pid_line) end,
    receive {H, {exit_status, 0}} -> ok after 10000 -> ct:fail(no_exit_status) end,
    receive {'DOWN', Ref, process, H, normal} -> ok after 10000 -> ct:fail(port_did_not_end) end,
    ?assertEqual([], os_process:wait_gone([Daemon], ?GONE_WITHIN)),
    ?assertEqual([], wait_no_zombies(own_portnode:os_pid(?config(portnode, Config)), 2000)).

%% @doc 220 opens at once, of programs that print their pid and exit 5,
%% exit 3 at once, or fail before exec (their script names an interpreter
%% that does not exist): the spawner goes on while each child execs, and
%% answers each request in turn once its child has exec'd or failed (see
%% rust/spawner/exec.rs). Every handle ends as its own program did: a
%% handle given another's answer would get another's pid, and so its exit
%% status; a failure's errno is the child's own (erts's status for it). No
%% program or zombie is left.
a_burst_of_starts_each_ends_as_its_program(Config) ->
    Node = own_portnode:node(?config(portnode, Config)),
    Script = filename:join(?config(priv_dir, Config), "no_interpreter"),
    ok = file:write_file(Script, <<"#!/no/such/interpreter\n">>),
    ok = file:change_mode(Script, 8#755),
    Erts = erlang:open_port({spawn_executable, Script}, [exit_status]),
    NoExec = receive {Erts, {exit_status, S}} -> S after 5000 -> ct:fail(no_erts_status) end,
    Kinds = [{prints_its_pid, {spawn_executable, "/bin/sh"}, [{args, ["-c", "echo $$; exit 5"]}, {line, 32}, exit_status], 5},
             {exits_at_once, {spawn_executable, "/bin/sh"}, [{args, ["-c", "exit 3"]}, exit_status], 3},
             {fails_before_exec, {spawn_executable, Script}, [exit_status], NoExec}],
    %% A failure every fifth round: each is logged.
    Opened = [{Kind, portnode:open_port(Node, PortName, Settings), Status}
              || I <- lists:seq(1, 100), {Kind, PortName, Settings, Status} <- Kinds,
                 Kind =/= fails_before_exec orelse I rem 5 =:= 0],
    Ended = [{Kind, H, ended(H)} || {Kind, H, _} <- Opened],
    Wrong = [{Kind, Got, Want} || {{Kind, _, Want}, {Kind, _, {Got, _}}} <- lists:zip(Opened, Ended), Got =/= Want],
    ?assertEqual([], Wrong),
    Pids = [Pid || {prints_its_pid, _, {_, [Pid]}} <- Ended],
    ?assertEqual(100, length(lists:usort(Pids))),
    ?assertEqual([], os_process:wait_gone(Pids, ?GONE_WITHIN)),
    ?assertEqual([], wait_no_zombies(own_portnode:os_pid(?config(portnode, Config)), 2000)).

%% A handle's exit status, and the pids its program printed, once it has ended.
ended(H) ->
    ended(H, []).

ended(H, Lines) ->
    receive
        {H, {data, {eol, Line}}} -> ended(H, [list_to_integer(Line) | Lines]);
        {H, {exit_status, Status}} -> {Status, lists:reverse(Lines)}
    after 10000 -> ct:fail({no_exit_status, H})
    end.

%% @doc After portnode is killed, its watchdog removes its cgroup subtree.
cgroup_is_removed_when_portnode_is_killed(Config) ->
    Pn = own_portnode:start("subtree", mode_flag(?config(mode, Config))),
    PnPid = own_portnode:os_pid(Pn),
    {PortName, Settings} = sh("sleep 1000 & echo $!; exec sleep 2000"),
    _ = contained_owner:start(own_portnode:node(Pn), PortName, Settings, self()),
    receive {opened, _, _} -> ok after 10000 -> ct:fail(not_opened) end,
    {ok, Cgroups} = file:read_file("/proc/" ++ integer_to_list(PnPid) ++ "/cgroup"),
    [Own] = [binary_to_list(P) || <<"0::", P/binary>> <- binary:split(Cgroups, <<"\n">>, [global])],
    Sub = string:trim(Own, trailing, "/") ++ "/portnode-" ++ integer_to_list(PnPid),
    [Dir] = [D || Mount <- ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"], D <- [Mount ++ Sub], filelib:is_dir(D)],
    ?assert(filelib:is_dir(Dir)),
    os:cmd("kill -9 " ++ integer_to_list(PnPid)),
    ok = os_process:poll(fun() -> not filelib:is_dir(Dir) end, 5000),
    own_portnode:stop(Pn).

%%% Helpers

peer_vm() ->
    Dirs = [filename:dirname(code:which(portnode)), filename:dirname(code:which(?MODULE))],
    peer:start(#{name => peer:random_name(owner), args => lists:append([["-pa", D] || D <- Dirs])}).

pgid(OsPid) ->
    list_to_integer(string:trim(os:cmd("ps -o pgid= -p " ++ integer_to_list(OsPid)))).

wait_alive(Pids, Ms) ->
    os_process:poll(fun() -> lists:all(fun os_process:alive/1, Pids) end, Ms).

wait_no_zombies(OsPid, Ms) ->
    _ = os_process:poll(fun() -> os_process:zombie_children(OsPid) =:= [] end, Ms),
    os_process:zombie_children(OsPid).

