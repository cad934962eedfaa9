%% @doc What a program's whole tree uses: `portnode:stats/1' (CPU time,
%% memory, processes), the `exit_stats' message, and a service's exit
%% report and `sys:get_status/1'. Under both containments: the figures
%% come from the program's cgroup, or from /proc.
-module(stats_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(MB, 1000000).

all() ->
    [{group, cgroup}, {group, process_group}].

groups() ->
    Cases = [two_process_tree, cpu_of_exited_children_counts, stats_of_a_closed_handle_is_badarg,
             exit_stats_before_the_status, service_reports_what_it_used],
    [{cgroup, [], Cases ++ [a_reused_leaf_starts_from_zero]}, {process_group, [], Cases}].

init_per_suite(Config) ->
    python:init_per_suite(Config).

end_per_suite(_Config) ->
    ok.

init_per_group(Mode, Config) ->
    both_modes:init_per_group(Mode, Config).

end_per_group(Mode, Config) ->
    both_modes:end_per_group(Mode, Config).


end_per_testcase(_Case, _Config) ->
    [stop_quietly(H) || {{handle, H}, _} <- erase()],
    _ = logger:remove_handler(stats_capture),
    ok.

%% @doc Two processes that took 100 MB between them and burned 0.5 s of CPU:
%% stats/1 counts both, all their memory and all their time.
two_process_tree(Config) ->
    Code = "import os, time\n"
           "def burn(s):\n"
           "    t = time.process_time()\n"
           "    while time.process_time() - t < s: pass\n"
           "a = b'a' * (50 << 20)\n"
           "if os.fork() == 0:\n"
           "    b = b'b' * (50 << 20)\n"
           "    burn(0.5)\n"
           "    print('ready', flush=True)\n"
           "    time.sleep(1000)\n"
           "time.sleep(1000)\n",
    H = open(Config, python(Config, Code), []),
    ?assertEqual("ready", line(H)),
    #{cpu_us := Cpu, memory := Memory, processes := Processes} = Stats = portnode:stats(H),
    ct:log("~p", [Stats]),
    ?assertEqual(2, Processes),
    ?assert(Memory >= 100 * ?MB),
    ?assert(Memory < 1000 * ?MB),
    ?assert(Cpu >= 500000),
    ?assert(Cpu < 10000000),
    ?assertEqual([cpu_us, memory, processes], lists:sort(maps:keys(Stats))).

%% @doc A child that burned CPU and exited (waited for) still counts.
cpu_of_exited_children_counts(Config) ->
    Burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n",
    Script = "\"$0\" -c '" ++ Burn ++ "'; echo done; exec sleep 1000",
    H = open(Config, {spawn_executable, "/bin/sh"}, [{args, ["-c", Script, ?config(python, Config)]}]),
    ?assertEqual("done", line(H)),
    #{cpu_us := Cpu, processes := 1} = Stats = portnode:stats(H),
    ct:log("~p", [Stats]),
    ?assert(Cpu >= 400000).

%% @doc A closed handle has no stats: badarg, as for os_pid/1.
stats_of_a_closed_handle_is_badarg(Config) ->
    H = open(Config, {spawn_executable, "/bin/sleep"}, [{args, ["100"]}]),
    true = portnode:port_close(H),
    ?assertError(badarg, portnode:stats(H)).

%% @doc exit_stats: `{H, {exit_stats, Map}}' comes just before the exit
%% status, with the CPU time and the memory's peak of the whole run.
exit_stats_before_the_status(Config) ->
    Code = "import time\n"
           "x = b'x' * (80 << 20)\n"
           "t = time.process_time()\n"
           "while time.process_time() - t < 0.3: pass\n"
           "time.sleep(1.5)\n",
    H = open(Config, python(Config, Code), [exit_stats]),
    Used = receive {H, {exit_stats, U}} -> U after 20000 -> ct:fail(no_exit_stats) end,
    receive {H, Next} -> ?assertEqual({exit_status, 0}, Next) after 5000 -> ct:fail(no_exit_status) end,
    ct:log("~p", [Used]),
    #{cpu_us := Cpu, memory_peak := Peak, memory_limit_hit := false} = Used,
    ?assert(Cpu >= 300000),
    ?assert(Peak >= 80 * ?MB),
    ?assert(Peak < 1000 * ?MB).

%% @doc A service: sys:get_status/1 shows what its program uses while it
%% runs, and its exit report what it used in all.
service_reports_what_it_used(Config) ->
    Code = "import time, sys\n"
           "x = b'x' * (60 << 20)\n"
           "t = time.process_time()\n"
           "while time.process_time() - t < 0.3: pass\n"
           "print('ready', flush=True)\n"
           "sys.stdin.readline()\n"
           "sys.exit(1)\n",
    ok = logger:add_handler(stats_capture, log_capture, #{config => #{pid => self()}}),
    %% The service is linked: its exit is a message, and this process
    %% (the test case's own) goes with the test.
    _ = process_flag(trap_exit, true),
    {python, PortName, Settings} = python(Config, Code),
    {ok, S} = portnode_service:start_link(used, PortName, Settings ++ [{node, ?config(node, Config)}, {output, notice}]),
    wait_log(fun(#{msg := {"~ts", [Line]}}) -> Line =:= <<"ready">>; (_) -> false end),
    {status, _, _, [_, _, _, _, Misc]} = sys:get_status(S),
    [State] = [St || {data, Data} <- Misc, {"State", St} <- Data],
    ct:log("~p", [State]),
    #{cpu_us := Cpu, memory := Memory, memory_peak := Peak, processes := 1} = State,
    ?assert(Cpu >= 300000),
    ?assert(Memory >= 60 * ?MB),
    ?assert(Peak >= Memory),
    true = portnode:port_command(portnode_service:handle(S), "bye\n"),
    Report = wait_log(fun(#{msg := {report, #{what := {portnode_service, exited}}}}) -> true; (_) -> false end),
    #{msg := {report, R}, meta := Meta} = Report,
    ct:log("~p", [R]),
    ?assertMatch(#{how := {exit_status, 1}, memory_limit_hit := false}, R),
    ?assert(maps:get(cpu_us, R) >= 300000),
    ?assert(maps:get(memory_peak, R) >= 60 * ?MB),
    {Format, Args} = (maps:get(report_cb, Meta))(R),
    Text = lists:flatten(io_lib:format(Format, Args)),
    ct:log("~s", [Text]),
    ?assertNotEqual(nomatch, string:find(Text, "peak memory")),
    receive {'EXIT', S, {exit_status, 1}} -> ok after 5000 -> ct:fail(service_did_not_exit) end.

%% @doc Leaf cgroups are reused (a pool): the CPU time a leaf's earlier
%% program burned is not counted for the next one.
a_reused_leaf_starts_from_zero(Config) ->
    Burn = python(Config, "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"),
    reused_leaf(Config, Burn, 10).

reused_leaf(_Config, _Burn, 0) ->
    ct:fail(no_leaf_was_reused);
reused_leaf(Config, Burn, Tries) ->
    B = open(Config, Burn, []),
    Leaf = leaf_of(portnode:os_pid(B)),
    Ref = erlang:monitor(process, B),
    receive {'DOWN', Ref, process, B, _} -> ok after 10000 -> ct:fail(burner_did_not_end) end,
    %% Its leaf goes back to the pool once its program is reaped.
    timer:sleep(200),
    H = open(Config, {spawn_executable, "/bin/sleep"}, [{args, ["100"]}]),
    case leaf_of(portnode:os_pid(H)) of
        Leaf ->
            #{cpu_us := Cpu} = portnode:stats(H),
            ct:log("leaf ~s reused: ~b us", [Leaf, Cpu]),
            ?assert(Cpu < 200000);
        Other ->
            ct:log("leaf ~s, then ~s: again", [Leaf, Other]),
            stop_quietly(H),
            reused_leaf(Config, Burn, Tries - 1)
    end.

%%% Helpers

%% The cgroup v2 leaf of process `OsPid'.
leaf_of(OsPid) ->
    {ok, Text} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/cgroup"),
    hd([binary_to_list(L) || <<"0::", L/binary>> <- binary:split(Text, <<"\n">>, [global])]).

stop_quietly(H) ->
    try portnode:stop(H, brutal_kill) catch _:_ -> ok end.

python(Config, Code) ->
    {python, {spawn_executable, ?config(python, Config)}, [{args, ["-c", Code]}]}.

open(Config, {python, PortName, Settings}, More) ->
    open(Config, PortName, Settings ++ More);
open(Config, PortName, Settings) ->
    H = portnode:open_port(?config(node, Config), PortName, [{line, 256}, exit_status | Settings]),
    put({handle, H}, true),
    H.

line(H) ->
    receive
        {H, {data, {eol, Line}}} -> Line;
        {H, {exit_status, S}} -> ct:fail({exited, S})
    after 20000 -> ct:fail(no_line)
    end.

%% The first log event for which `Want(Event)'.
wait_log(Want) ->
    receive
        {log, Event} ->
            case Want(Event) of
                true -> Event;
                false -> wait_log(Want)
            end
    after 20000 -> ct:fail(no_such_log_event)
    end.
