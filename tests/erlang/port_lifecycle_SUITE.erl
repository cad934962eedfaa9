%% @doc Nothing outlives its owner: after each way a handle can go, the
%% program (and its children) are gone, and portnode holds no zombie.
-module(port_lifecycle_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [close_stops_the_program, owner_exit_stops_the_program, message_close_stops_the_program,
     grandchildren_are_stopped, sigterm_ignored_means_sigkill_after_kill_timeout,
     owners_vm_killed, portnode_killed_takes_every_program, portnode_shutdown_stops_programs,
     no_zombies].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(portnode),
    Config.

end_per_suite(_Config) ->
    application:stop(portnode).

sleeper() -> {spawn, "sleep 300"}.

%% @doc port_close stops the program.
close_stops_the_program(_) ->
    H = portnode:open_port(sleeper(), []),
    OsPid = portnode:os_pid(H),
    ?assert(os_process:alive(OsPid)),
    true = portnode:port_close(H),
    ?assertEqual([], os_process:wait_gone([OsPid], 2000)).

%% @doc {Owner, close} stops the program.
message_close_stops_the_program(_) ->
    H = portnode:open_port(sleeper(), []),
    OsPid = portnode:os_pid(H),
    H ! {self(), close},
    receive {H, closed} -> ok after 3000 -> ct:fail(no_closed) end,
    ?assertEqual([], os_process:wait_gone([OsPid], 2000)).

%% @doc The owner exiting (any reason) stops the program.
owner_exit_stops_the_program(_) ->
    [begin
         Self = self(),
         Owner = spawn(fun() -> H = portnode:open_port(sleeper(), []),
                                Self ! {os_pid, portnode:os_pid(H)},
                                receive stop -> exit(Reason) end end),
         OsPid = receive {os_pid, P} -> P after 5000 -> ct:fail(no_os_pid) end,
         Owner ! stop,
         ?assertEqual([], os_process:wait_gone([OsPid], 2000))
     end || Reason <- [normal, crash, kill]].

%% @doc A program's children (its process group) go with it.
grandchildren_are_stopped(_) ->
    H = portnode:open_port({spawn_executable, "/bin/sh"},
                           [{args, ["-c", "sleep 300 & echo $!; sleep 300 & echo $!; wait"]}, {line, 80}]),
    Kids = [receive {H, {data, {eol, L}}} -> list_to_integer(L) after 5000 -> ct:fail(no_kid) end || _ <- [1, 2]],
    OsPid = portnode:os_pid(H),
    ?assert(lists:all(fun os_process:alive/1, [OsPid | Kids])),
    true = portnode:port_close(H),
    ?assertEqual([], os_process:wait_gone([OsPid | Kids], 2000)).

%% @doc A program that ignores SIGTERM is killed after kill_timeout, not before.
sigterm_ignored_means_sigkill_after_kill_timeout(_) ->
    H = portnode:open_port({spawn_executable, "/bin/sh"},
                           [{args, ["-c", "trap '' TERM; echo ready; sleep 300 & wait"]}, {line, 80}, {kill_timeout, 1000}]),
    receive {H, {data, {eol, "ready"}}} -> ok after 5000 -> ct:fail(not_ready) end,
    OsPid = portnode:os_pid(H),
    T0 = erlang:monotonic_time(millisecond),
    true = portnode:port_close(H),
    timer:sleep(500),
    ?assert(os_process:alive(OsPid)),
    ?assertEqual([], os_process:wait_gone([OsPid], 3000)),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("gone after ~b ms", [Took]),
    ?assert(Took >= 900).

%% @doc The Erlang VM that owns programs is killed: portnode sees the
%% connection drop and stops them.
owners_vm_killed(_) ->
    Dirs = [filename:dirname(code:which(portnode)), filename:dirname(code:which(?MODULE))],
    {ok, Peer, PeerNode} = peer:start(#{name => peer:random_name(owner), args => lists:append([["-pa", D] || D <- Dirs])}),
    erpc:call(PeerNode, remote_owner, start, [portnode:node(), "sleep 300", self()]),
    OsPid = receive {remote_os_pid, P} -> P after 10000 -> ct:fail(no_remote_os_pid) end,
    VmPid = os_process:os_pid_of_node(PeerNode),
    ?assert(os_process:alive(OsPid)),
    os:cmd("kill -9 " ++ integer_to_list(VmPid)),
    try peer:stop(Peer) catch _:_ -> ok end,
    ?assertEqual([], os_process:wait_gone([OsPid], 5000)).

%% @doc portnode is killed with SIGKILL: every program it started, and
%% their children, die too (parent-death signal plus the watchdog).
portnode_killed_takes_every_program(_) ->
    %% The owner is linked to its handles: it gets noconnection, as from a lost node.
    process_flag(trap_exit, true),
    {Port, Node, PnPid} = start_own_portnode("lifecycle_kill"),
    Handles = [portnode:open_port(Node, sleeper(), []) || _ <- [1, 2, 3]],
    G = portnode:open_port(Node, {spawn_executable, "/bin/sh"},
                           [{args, ["-c", "sleep 300 & echo $!; wait"]}, {line, 80}]),
    Kid = receive {G, {data, {eol, L}}} -> list_to_integer(L) after 5000 -> ct:fail(no_kid) end,
    OsPids = [portnode:os_pid(H) || H <- [G | Handles]] ++ [Kid],
    ?assert(lists:all(fun os_process:alive/1, OsPids)),
    os:cmd("kill -9 " ++ integer_to_list(PnPid)),
    ?assertEqual([], os_process:wait_gone(OsPids ++ [PnPid], 3000)),
    [receive {'EXIT', H, noconnection} -> ok after 5000 -> ct:fail({no_exit, H}) end || H <- [G | Handles]],
    %% The port of the killed portnode is closed already.
    receive {'EXIT', Port, _} -> ok after 5000 -> ct:fail(portnode_port_still_open) end.

%% @doc portnode shutting down (stdin closed) stops its programs first.
portnode_shutdown_stops_programs(_) ->
    process_flag(trap_exit, true),
    {Port, Node, PnPid} = start_own_portnode("lifecycle_stop"),
    H = portnode:open_port(Node, sleeper(), []),
    OsPid = portnode:os_pid(H),
    port_close(Port),
    receive {'EXIT', H, Reason} -> ?assertEqual(shutdown, Reason) after 5000 -> ct:fail(no_exit) end,
    ?assertEqual([], os_process:wait_gone([OsPid, PnPid], 5000)).

%% @doc After all of the above, portnode holds no zombie.
no_zombies(_) ->
    PnPid = gen_server:call(portnode_bridge, os_pid),
    _ = [try portnode:port_close(portnode:open_port({spawn, "true"}, [])) catch error:badarg -> true end
         || _ <- lists:seq(1, 20)],
    timer:sleep(500),
    ?assertEqual([], os_process:zombie_children(PnPid)).

start_own_portnode(Name) ->
    Exe = filename:join([code:priv_dir(portnode), "bin", "portnode"]),
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Node = list_to_atom(Name ++ "@" ++ Host),
    Port = open_port({spawn_executable, Exe},
                     [{args, ["--sname", Name, "--exit-on-stdin-eof"]},
                      {env, [{"PORTNODE_COOKIE", atom_to_list(erlang:get_cookie())}]}]),
    {os_pid, PnPid} = erlang:port_info(Port, os_pid),
    ok = wait_pong(Node, 100),
    {Port, Node, PnPid}.

wait_pong(_Node, 0) -> timeout;
wait_pong(Node, N) ->
    case net_adm:ping(Node) of
        pong -> ok;
        pang -> timer:sleep(100), wait_pong(Node, N - 1)
    end.
