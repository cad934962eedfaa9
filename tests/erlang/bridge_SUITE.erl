%% @doc The bridge: the application launches its own portnode, connects to
%% it, and leaves nothing behind when it stops or when portnode dies.
-module(bridge_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([starts_and_answers/1, stop_leaves_nothing_running/1,
         portnode_death_restarts_the_bridge/1, attaches_to_a_named_node/1,
         cookie_is_not_readable_from_proc/1, program_stderr_is_logged_quoted_at_notice/1,
         program_stderr_shows_in_a_plain_vm/1]).

all() ->
    [starts_and_answers, stop_leaves_nothing_running,
     portnode_death_restarts_the_bridge, attaches_to_a_named_node,
     cookie_is_not_readable_from_proc, program_stderr_is_logged_quoted_at_notice,
     program_stderr_shows_in_a_plain_vm].

init_per_testcase(_Case, Config) ->
    {ok, _} = application:ensure_all_started(portnode),
    Config.

end_per_testcase(_Case, _Config) ->
    application:stop(portnode),
    application:unset_env(portnode, node),
    ok.

%% @doc net_adm:ping and the control server answer; the node is hidden.
starts_and_answers(_Config) ->
    Node = portnode:node(),
    ?assertEqual(pong, net_adm:ping(Node)),
    ?assertEqual(pong, portnode:ping()),
    ?assert(lists:member(Node, nodes(hidden))),
    #{node := Node, connected_nodes := Connected} = portnode:info(),
    ?assert(lists:member(node(), Connected)).

%% @doc The cookie is in neither the environment nor the command line of
%% the portnode the bridge launched, nor of a program it starts; a portnode
%% given `$PORTNODE_COOKIE' overwrites it where /proc shows it.
cookie_is_not_readable_from_proc(_Config) ->
    Cookie = atom_to_binary(erlang:get_cookie()),
    OsPid = gen_server:call(portnode_bridge, os_pid),
    {H, ProgramPid} = portnode:open({spawn, "sleep 300"}, []),
    [?assertEqual(nomatch, binary:match(proc_file(P, F), Cookie), {P, F})
     || P <- [OsPid, ProgramPid], F <- ["environ", "cmdline"]],
    true = portnode:port_close(H),
    %% Through the environment, for a portnode started by hand.
    Exe = filename:join([code:priv_dir(portnode), "bin", "portnode"]),
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Name = "cookie_env" ++ integer_to_list(erlang:unique_integer([positive])),
    Port = open_port({spawn_executable, Exe}, [{args, ["--sname", Name, "--exit-on-stdin-eof"]},
                                               {env, [{"PORTNODE_COOKIE", binary_to_list(Cookie)}]}]),
    {os_pid, EnvPid} = erlang:port_info(Port, os_pid),
    ok = wait_until(fun() -> net_adm:ping(list_to_atom(Name ++ "@" ++ Host)) =:= pong end),
    Environ = proc_file(EnvPid, "environ"),
    ?assertEqual(nomatch, binary:match(Environ, Cookie)),
    ?assertNotEqual(nomatch, binary:match(Environ, <<"PORTNODE_COOKIE=xxxx">>)),
    port_close(Port),
    ok = wait_until(fun() -> not os_alive(EnvPid) end).

proc_file(OsPid, File) ->
    {ok, Bin} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/" ++ File),
    Bin.

%% @doc application:stop shuts portnode down: its OS process is gone.
stop_leaves_nothing_running(_Config) ->
    OsPid = gen_server:call(portnode_bridge, os_pid),
    ?assert(os_alive(OsPid)),
    ok = application:stop(portnode),
    ?assertNot(os_alive(OsPid)).

%% @doc Killing portnode makes the bridge exit; its supervisor starts a new one.
portnode_death_restarts_the_bridge(_Config) ->
    Bridge = whereis(portnode_bridge),
    OsPid = gen_server:call(portnode_bridge, os_pid),
    Ref = monitor(process, Bridge),
    os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    receive {'DOWN', Ref, process, Bridge, _} -> ok after 5000 -> ct:fail(bridge_did_not_exit) end,
    ok = wait_until(fun() -> is_pid(whereis(portnode_bridge)) andalso whereis(portnode_bridge) =/= Bridge end),
    ok = wait_until(fun() -> try portnode:ping() =:= pong catch _:_ -> false end end),
    ?assertNotEqual(OsPid, gen_server:call(portnode_bridge, os_pid)).

%% @doc With {node, Node} the bridge attaches to a portnode it did not launch.
attaches_to_a_named_node(_Config) ->
    Node = portnode:node(),
    OsPid = gen_server:call(portnode_bridge, os_pid),
    %% Keep this portnode alive while the application restarts in attach mode:
    %% the supervisor (not the bridge) is stopped, so re-launch by hand.
    ok = application:stop(portnode),
    Exe = filename:join([code:priv_dir(portnode), "bin", "portnode"]),
    [Alive, _] = string:split(atom_to_list(Node), "@"),
    Port = open_port({spawn_executable, Exe},
                     [{args, ["--sname", Alive ++ "_own", "--exit-on-stdin-eof"]},
                      {env, [{"PORTNODE_COOKIE", atom_to_list(erlang:get_cookie())}]},
                      exit_status, stderr_to_stdout]),
    [_, Host] = string:split(atom_to_list(Node), "@"),
    Own = list_to_atom(Alive ++ "_own@" ++ Host),
    ok = application:set_env(portnode, node, Own),
    {ok, _} = application:ensure_all_started(portnode),
    ?assertEqual(Own, portnode:node()),
    ?assertEqual(pong, portnode:ping()),
    ?assertEqual(undefined, gen_server:call(portnode_bridge, os_pid)),
    ?assertNot(os_alive(OsPid)),
    port_close(Port).

os_alive(OsPid) ->
    %% Give a process that is exiting a moment to be gone.
    timer:sleep(100),
    os_process:alive(OsPid).

wait_until(Fun) -> wait_until(Fun, 100).
wait_until(_Fun, 0) -> timeout;
wait_until(Fun, N) ->
    case Fun() of
        true -> ok;
        _ -> timer:sleep(100), wait_until(Fun, N - 1)
    end.

%% @doc A program's stderr is a pipe of its own, which portnode logs, each
%% line with the program's name, quoted, and which the VM logs at notice
%% (shown by default, as a port's stderr is): a program (even one run as
%% nobody) cannot write a line into portnode's log, nor choose its level by
%% writing what looks like one.
program_stderr_is_logged_quoted_at_notice(_Config) ->
    ok = logger:add_handler(capture, log_capture, #{config => #{pid => self()}, level => all}),
    try
        Fake = "2026-01-01T00:00:00.000000Z ERROR portnode: forged by the program",
        Script = "printf '%s\\n' '" ++ Fake ++ "' >&2; printf 'partial line' >&2",
        H = portnode:open_port({spawn_executable, "/bin/sh"}, [{args, ["-c", Script]}, exit_status, {user, "nobody"}]),
        receive {H, {exit_status, 0}} -> ok after 5000 -> ct:fail(no_exit) end,
        Events = collect_logs(2000),
        Portnode = [{L, T} || {L, T} <- Events, string:find(T, "portnode:") =/= nomatch],
        ct:log("~p", [Portnode]),
        Forged = [{L, T} || {L, T} <- Portnode, string:find(T, "forged by the program") =/= nomatch],
        ?assertMatch([{notice, _}], Forged),
        [{notice, ForgedText}] = Forged,
        ?assertNotEqual(nomatch, string:find(ForgedText, "program stderr")),
        ?assertNotEqual(nomatch, string:find(ForgedText, "program=\"/bin/sh\"")),
        ?assertMatch([{notice, _}], [E || {_, T} = E <- Portnode, string:find(T, "partial line") =/= nomatch]),
        %% Nothing the program wrote became a line of its own.
        ?assertEqual([], [T || {_, T} <- Portnode, string:prefix(T, "portnode: 2026-01-01") =/= nomatch])
    after
        logger:remove_handler(capture)
    end.

%% @doc In a VM as a user starts it (`erl', logger as OTP configures it),
%% a program's stderr line shows, as a plain port's does. OTP's default
%% handler drops events of a logger domain of their own: a line logged
%% with one was lost there (the test above captures with a handler of its
%% own, which has no such filter).
program_stderr_shows_in_a_plain_vm(_Config) ->
    Ebin = filename:join(code:lib_dir(portnode), "ebin"),
    Marker = "stderr-line-" ++ integer_to_list(erlang:unique_integer([positive])),
    Eval = "{ok, _} = application:ensure_all_started(portnode), "
        "H = portnode:open_port({spawn_executable, \"/bin/sh\"}, [{args, [\"-c\", \"echo " ++ Marker ++ " >&2\"]}, exit_status]), "
        "receive {H, {exit_status, 0}} -> ok after 10000 -> io:format(\"no exit_status~n\") end, "
        "timer:sleep(500), application:stop(portnode), halt().",
    Erl = os:find_executable("erl"),
    Vm = open_port({spawn_executable, Erl},
                   [{args, ["-noshell", "-sname", "plain_vm_" ++ os:getpid(), "-pa", Ebin, "-eval", Eval]},
                    exit_status, stderr_to_stdout, binary]),
    {os_pid, VmPid} = erlang:port_info(Vm, os_pid),
    try
        {Status, Output} = vm_output(Vm, <<>>, erlang:monotonic_time(millisecond) + 30000),
        ct:log("~ts", [Output]),
        ?assertEqual(0, Status),
        ?assertNotEqual(nomatch, string:find(Output, Marker)),
        ?assertNotEqual(nomatch, string:find(Output, "program stderr"))
    after
        %% Gone already when it halted; by pid if the test failed first.
        os_process:alive(VmPid) andalso os:cmd("kill -9 " ++ integer_to_list(VmPid))
    end.

vm_output(Vm, Acc, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Vm, {data, Data}} -> vm_output(Vm, <<Acc/binary, Data/binary>>, Deadline);
        {Vm, {exit_status, Status}} -> {Status, Acc}
    after Left -> {timeout, Acc}
    end.

collect_logs(Ms) ->
    receive
        {log, #{level := Level, msg := {Format, Args}}} when is_list(Format) ->
            [{Level, lists:flatten(io_lib:format(Format, Args))} | collect_logs(Ms)];
        {log, _} -> collect_logs(Ms)
    after Ms -> []
    end.
