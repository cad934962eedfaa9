%% @doc `{limits, [{memory, Bytes} | {processes, N} | {cpu, Fraction}]}'.
%% In cgroup mode (as root) on this hybrid host they are applied with the
%% cgroup v1 controllers, a cgroup per limited program under each (on a
%% pure-v2 host, with v2's: see docs/limits.md); in process-group mode an
%% open with limits fails with `{notsup, {limits, Name}}', saying why.
-module(limits_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(MiB, 1048576).

all() ->
    [{group, cgroup}, {group, process_group}].

groups() ->
    [{cgroup, [], [memory_limit_stops_a_hog, a_service_says_it_hit_its_memory_limit, memory_under_the_limit_runs,
                   processes_limit_holds_to_5, cpu_limit_caps_a_busy_loop, limited_cgroups_are_removed,
                   v1_subtrees_go_when_portnode_is_killed, bad_limits_are_badarg]},
     {process_group, [], [limits_need_cgroups, bad_limits_are_badarg]}].

init_per_suite(Config) ->
    python:init_per_suite(Config).

end_per_suite(_Config) ->
    ok.

init_per_group(Mode, Config) ->
    case both_modes:init_per_group(Mode, Config) of
        {skip, _} = Skip ->
            Skip;
        Group ->
            Limits = maps:get(limits, portnode:info(?config(node, Group))),
            ct:log("limits: ~p", [Limits]),
            case Mode =:= cgroup andalso lists:member(none, maps:values(Limits)) of
                true ->
                    both_modes:end_per_group(Mode, Group),
                    {skip, {"a controller is missing here", Limits}};
                false ->
                    Group
            end
    end.

end_per_group(Mode, Config) ->
    both_modes:end_per_group(Mode, Config).

end_per_testcase(_Case, _Config) ->
    [stop_quietly(H) || {{handle, H}, _} <- erase()],
    _ = logger:remove_handler(limits_capture),
    ok.

%% @doc A program that takes 256 MB under a 64 MiB limit is killed by it:
%% `{exit_signal, sigkill}', and its exit_stats say it hit its limit.
memory_limit_stops_a_hog(Config) ->
    H = open(Config, hog(Config, 256), [{limits, [{memory, 64 * ?MiB}]}, exit_signal, exit_stats]),
    Used = receive {H, {exit_stats, U}} -> U after 20000 -> ct:fail(no_exit_stats) end,
    receive {H, Exit} -> ?assertEqual({exit_signal, sigkill}, Exit) after 5000 -> ct:fail(no_exit) end,
    ct:log("~p", [Used]),
    ?assertMatch(#{memory_limit_hit := true}, Used),
    ?assert(maps:get(memory_peak, Used) =< 64 * ?MiB),
    ?assert(maps:get(memory_peak, Used) >= 32 * ?MiB),
    ?assertEqual([], flush(H, 200)).

%% @doc A service killed by its memory limit exits `{exit_signal, sigkill}',
%% and its exit report says that it hit its memory limit.
a_service_says_it_hit_its_memory_limit(Config) ->
    ok = logger:add_handler(limits_capture, log_capture, #{config => #{pid => self()}}),
    %% The service is linked: its exit is a message, and this process
    %% (the test case's own) goes with the test.
    _ = process_flag(trap_exit, true),
    {python, PortName, Settings} = hog(Config, 256),
    {ok, S} = portnode_service:start_link(hog, PortName, Settings ++ [{limits, [{memory, 64 * ?MiB}]}, {node, ?config(node, Config)}]),
    receive {'EXIT', S, Reason} -> ?assertEqual({exit_signal, sigkill}, Reason) after 20000 -> ct:fail(service_did_not_exit) end,
    #{msg := {report, R}, meta := Meta} = wait_log(fun(#{msg := {report, #{what := {portnode_service, exited}}}}) -> true; (_) -> false end),
    ?assertMatch(#{how := {exit_signal, sigkill}, memory_limit_hit := true}, R),
    {Format, Args} = (maps:get(report_cb, Meta))(R),
    Text = lists:flatten(io_lib:format(Format, Args)),
    ct:log("~s", [Text]),
    ?assertNotEqual(nomatch, string:find(Text, "hit its memory limit")).

%% @doc Under its limit a program runs to its end, and stats/1 counts its
%% memory with the controller.
memory_under_the_limit_runs(Config) ->
    H = open(Config, hog(Config, 32), [{limits, [{memory, 64 * ?MiB}]}, exit_stats]),
    ?assertEqual("took 32", line(H)),
    #{memory := Memory} = portnode:stats(H),
    ?assert(Memory >= 32 * ?MiB),
    ?assert(Memory =< 64 * ?MiB),
    true = portnode:port_command(H, "\n"),
    receive {H, {exit_stats, Used}} -> ?assertMatch(#{memory_limit_hit := false}, Used) after 10000 -> ct:fail(no_exit_stats) end,
    receive {H, {exit_status, S}} -> ?assertEqual(0, S) after 5000 -> ct:fail(no_exit) end.

%% @doc {processes, 5}: a program that tries to fork ten children gets four
%% (five processes with itself), and stats/1 counts five.
processes_limit_holds_to_5(Config) ->
    Code = "import os, time\n"
           "n = 0\n"
           "for i in range(10):\n"
           "    try:\n"
           "        if os.fork() == 0:\n"
           "            time.sleep(1000)\n"
           "            os._exit(0)\n"
           "        n += 1\n"
           "    except OSError:\n"
           "        pass\n"
           "print('forked', n, flush=True)\n"
           "time.sleep(1000)\n",
    H = open(Config, python(Config, Code), [{limits, [{processes, 5}]}]),
    ?assertEqual("forked 4", line(H)),
    ?assertMatch(#{processes := 5}, portnode:stats(H)),
    %% Without the limit: all ten.
    H2 = open(Config, python(Config, Code), []),
    ?assertEqual("forked 10", line(H2)).

%% @doc {cpu, 0.2}: a busy loop gets a fifth of a core.
cpu_limit_caps_a_busy_loop(Config) ->
    Code = "import time\n"
           "t = time.time()\n"
           "while time.time() - t < 2: pass\n"
           "print('cpu', time.process_time(), flush=True)\n"
           "time.sleep(1000)\n",
    H = open(Config, python(Config, Code), [{limits, [{cpu, 0.2}]}]),
    "cpu " ++ Seconds = line(H),
    ct:log("~s s of CPU in 2 s", [Seconds]),
    ?assert(list_to_float(Seconds) < 0.7),
    #{cpu_us := Cpu} = portnode:stats(H),
    ?assert(Cpu < 700000).

%% @doc A limited program's v1 cgroups go with it.
limited_cgroups_are_removed(Config) ->
    Subtrees = v1_subtrees(?config(portnode, Config)),
    ?assertEqual(3, length(Subtrees)),
    H = open(Config, {spawn_executable, "/bin/sleep"}, [{args, ["100"]}, {limits, [{memory, 64 * ?MiB}, {processes, 10}, {cpu, 1}]}]),
    OsPid = portnode:os_pid(H),
    Mine = [Dir || Dir <- lists:append([filelib:wildcard(S ++ "/q*") || S <- Subtrees]),
                   lists:member(integer_to_list(OsPid), string:lexemes(read(Dir ++ "/cgroup.procs"), "\n"))],
    ?assertEqual(3, length(Mine)),
    ok = portnode:stop(H),
    ok = os_process:poll(fun() -> not lists:any(fun filelib:is_dir/1, Mine) end, 5000).

%% @doc When portnode is killed, its watchdog removes its v1 subtrees
%% (once the program in them is gone with the v2 subtree).
v1_subtrees_go_when_portnode_is_killed(_Config) ->
    Pn = own_portnode:start("limits_killed", "auto"),
    try
        killed(Pn)
    after
        own_portnode:stop(Pn)
    end.

killed(Pn) ->
    Subtrees = v1_subtrees(Pn),
    ?assertEqual(3, length(Subtrees)),
    %% An owner of its own: the test process must not be linked to a
    %% handle whose node is killed.
    {PortName, Settings} = {{spawn_executable, "/bin/sleep"}, [{args, ["100"]}, {limits, [{memory, 64 * ?MiB}, {processes, 10}, {cpu, 1}]}]},
    _ = contained_owner:start(own_portnode:node(Pn), PortName, Settings, self()),
    OsPid = receive {opened, _, P} -> P after 10000 -> ct:fail(not_opened) end,
    ?assertEqual(3, length(lists:append([filelib:wildcard(S ++ "/q*") || S <- Subtrees]))),
    os:cmd("kill -9 " ++ integer_to_list(own_portnode:os_pid(Pn))),
    ?assertEqual([], os_process:wait_gone([OsPid], 5000)),
    ok = os_process:poll(fun() -> not lists:any(fun filelib:is_dir/1, Subtrees) end, 5000).

%% @doc A limit that is not one is a badarg naming the setting.
bad_limits_are_badarg(Config) ->
    [begin
         [{_M, _F, _A, Info} | _] = try portnode:open_port(?config(node, Config), {spawn, "true"}, [Limits]) of
                                        P -> ct:fail({opened, P, Limits})
                                    catch error:badarg:Stack -> Stack
                                    end,
         ?assertEqual(#{module => portnode, cause => {bad_argument, Limits}}, proplists:get_value(error_info, Info))
     end || Limits <- [{limits, [{memory, 0}]}, {limits, [{processes, -1}]}, {limits, [{cpu, 0.0}]},
                       {limits, [{disk, 10}]}, {limits, memory}]].

%% @doc In process-group mode limits cannot be applied: open_port raises
%% `{notsup, {limits, Name}}' (the first limit asked for), whose error_info
%% says why; a service's start fails with it.
limits_need_cgroups(Config) ->
    Node = ?config(node, Config),
    [begin
         Stack = try portnode:open_port(Node, {spawn, "true"}, [{limits, Limits}]) of
                     P -> ct:fail({opened, P})
                 catch error:{notsup, {limits, Name}}:St when Name =:= Expected -> St
                 end,
         Text = unicode:characters_to_list(erl_error:format_exception(error, {notsup, {limits, Expected}}, Stack)),
         ct:log("~ts", [Text]),
         ?assertNotEqual(nomatch, string:find(Text, "process group"))
     end || {Limits, Expected} <- [{[{memory, 64 * ?MiB}], memory}, {[{processes, 5}, {cpu, 0.5}], processes}, {[{cpu, 1}], cpu}]],
    %% The service is linked: its exit is a message, and this process
    %% (the test case's own) goes with the test.
    _ = process_flag(trap_exit, true),
    ?assertEqual({error, {notsup, {limits, memory}}},
                 portnode_service:start_link(limited, {spawn, "sleep 10"}, [{limits, [{memory, 64 * ?MiB}]}, {node, Node}])),
    %% Up to OTP 25 the failed start also leaves its exit signal here (from
    %% OTP 26, proc_lib takes it): flush it, if any, while exits are trapped.
    receive {'EXIT', _, {notsup, {limits, memory}}} -> ok after 200 -> ok end.

%%% Helpers

stop_quietly(H) ->
    try portnode:stop(H, brutal_kill) catch _:_ -> ok end.

%% A program that takes `Mb' MiB (touched), says so, then waits for a line.
hog(Config, Mb) ->
    python(Config, "import sys\nx = b'x' * (" ++ integer_to_list(Mb) ++ " << 20)\n"
                   "print('took', " ++ integer_to_list(Mb) ++ ", flush=True)\nsys.stdin.readline()\n").

python(Config, Code) ->
    {python, {spawn_executable, ?config(python, Config)}, [{args, ["-c", Code]}]}.

open(Config, {python, PortName, Settings}, More) ->
    open(Config, PortName, Settings ++ More);
open(Config, PortName, Settings) ->
    H = portnode:open_port(?config(node, Config), PortName, [{line, 256}, exit_status | Settings]),
    put({handle, H}, true),
    H.

%% Portnode `Pn''s subtrees in the memory, pids and cpu v1 hierarchies.
v1_subtrees(Pn) ->
    PnPid = integer_to_list(own_portnode:os_pid(Pn)),
    Lines = string:lexemes(read("/proc/" ++ PnPid ++ "/cgroup"), "\n"),
    [Dir || L <- Lines, [_, Controllers, Path] <- [string:split(L, ":", all)],
            C <- ["memory", "pids", "cpu"], lists:member(C, string:lexemes(Controllers, ",")),
            Dir <- ["/sys/fs/cgroup/" ++ C ++ string:trim(Path, trailing, "/") ++ "/portnode-" ++ PnPid],
            filelib:is_dir(Dir)].

read(File) ->
    {ok, Bin} = file:read_file(File),
    binary_to_list(Bin).

line(H) ->
    receive
        {H, {data, {eol, Line}}} -> Line;
        {H, {exit_status, S}} -> ct:fail({exited, S})
    after 20000 -> ct:fail(no_line)
    end.

flush(H, Ms) ->
    receive {H, Msg} -> [Msg | flush(H, Ms)] after Ms -> [] end.

wait_log(Want) ->
    receive
        {log, Event} ->
            case Want(Event) of
                true -> Event;
                false -> wait_log(Want)
            end
    after 20000 -> ct:fail(no_such_log_event)
    end.
