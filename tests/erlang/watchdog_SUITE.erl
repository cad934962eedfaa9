%% @doc `{watchdog, Ms}': the program gets WATCHDOG_USEC and WATCHDOG_PID,
%% lives while it says WATCHDOG=1 in time, and is stopped with the reason
%% `watchdog_timeout' when it misses one or says WATCHDOG=trigger, so that
%% its supervisor (Erlang's or portnode's) starts a new one. Under both
%% containments, with real sd_notify datagrams (python3).
-module(watchdog_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [{group, cgroup}, {group, process_group}].

groups() ->
    both_modes:groups([watchdog_environment, kicks_keep_it_alive_and_a_miss_stops_it, trigger_stops_it_at_once,
                       kicks_from_outside_do_not_count, a_service_exits_watchdog_timeout_and_is_restarted,
                       a_portnode_supervisor_restarts_it]).

suite() ->
    [{timetrap, {minutes, 2}}].

init_per_suite(Config) ->
    python:init_per_suite(Config).

end_per_suite(_Config) ->
    ok.

init_per_group(Group, Config) -> both_modes:init_per_group(Group, Config).
end_per_group(Group, Config) -> both_modes:end_per_group(Group, Config).

init_per_testcase(_Case, Config) ->
    process_flag(trap_exit, true),
    Config.

end_per_testcase(_Case, Config) ->
    both_modes:end_per_testcase(Config).

now_ms() -> erlang:monotonic_time(millisecond).

line(H) ->
    receive {H, {data, {eol, Line}}} -> Line after 5000 -> ct:fail(no_line) end.

%% @doc WATCHDOG_USEC is the watchdog in microseconds and WATCHDOG_PID the
%% program's pid (with `spawn_executable' and with `{spawn, Command}');
%% without `{watchdog, _}' neither is set.
watchdog_environment(Config) ->
    Node = both_modes:node(Config),
    {Name, Settings} = notifier:program([{print, "WATCHDOG_USEC"}, {print, "WATCHDOG_PID"}, {print, "NOTIFY_SOCKET"}, wait]),
    {H, OsPid} = portnode:open(Node, Name, Settings ++ [{watchdog, 5000}, {line, 1024}]),
    Pid = integer_to_list(OsPid),
    ?assertEqual("WATCHDOG_USEC=5000000 PID=" ++ Pid, line(H)),
    ?assertEqual("WATCHDOG_PID=" ++ Pid ++ " PID=" ++ Pid, line(H)),
    ?assertMatch("NOTIFY_SOCKET=/" ++ _, line(H)),
    portnode:port_close(H),
    {H2, OsPid2} = portnode:open(Node, {spawn, "sh -c 'echo $WATCHDOG_PID $$; exec sleep 100'"},
                                 [{watchdog, 5000}, {line, 80}]),
    ?assertEqual(integer_to_list(OsPid2) ++ " " ++ integer_to_list(OsPid2), line(H2)),
    portnode:port_close(H2),
    {Name3, Settings3} = notifier:program([{print, "WATCHDOG_USEC"}, {print, "WATCHDOG_PID"}, wait]),
    {H3, _} = portnode:open(Node, Name3, Settings3 ++ [{ready, {line, "WATCHDOG_USEC"}}, {line, 1024}]),
    ?assertMatch("WATCHDOG_USEC= PID=" ++ _, line(H3)),
    ?assertMatch("WATCHDOG_PID= PID=" ++ _, line(H3)),
    portnode:port_close(H3).

%% @doc Kicked every 100 ms for 1.5 s, a program with a 500 ms watchdog
%% lives; then it misses one and is stopped: `{H, {stopped, Step}}', then
%% the handle's exit `watchdog_timeout', and the program is gone.
kicks_keep_it_alive_and_a_miss_stops_it(Config) ->
    {Name, Settings} = notifier:program([{send, "READY=1"}, {kick, 100, 15}, wait]),
    {H, OsPid} = portnode:open(both_modes:node(Config), Name, Settings ++ [{ready, notify}, {watchdog, 500}]),
    T0 = now_ms(),
    Ended = receive {H, {stopped, E}} -> E after 10000 -> ct:fail(not_stopped) end,
    receive {'EXIT', H, Reason} -> ?assertEqual(watchdog_timeout, Reason) after 5000 -> ct:fail(no_exit) end,
    Lived = now_ms() - T0,
    ct:log("lived ~b ms; ~p", [Lived, Ended]),
    ?assert(Lived >= 1400, {lived, Lived}),
    ?assertEqual({stop_signal, sigterm}, Ended),
    ?assertNot(os_process:alive(OsPid)).

%% @doc WATCHDOG=trigger stops it at once, whatever its watchdog's time.
trigger_stops_it_at_once(Config) ->
    {Name, Settings} = notifier:program([{send, "READY=1"}, {sleep, 200}, {send, "WATCHDOG=trigger"}, wait]),
    {H, _} = portnode:open(both_modes:node(Config), Name, Settings ++ [{ready, notify}, {watchdog, 60000}]),
    receive {'EXIT', H, Reason} -> ?assertEqual(watchdog_timeout, Reason) after 5000 -> ct:fail(not_triggered) end.

%% @doc WATCHDOG=1 from a process that is not the program's keeps nothing alive.
kicks_from_outside_do_not_count(Config) ->
    {Name, Settings} = notifier:program([{print, "NOTIFY_SOCKET"}, {send, "READY=1"}, wait]),
    H = portnode:open_port(both_modes:node(Config), Name, Settings ++ [{line, 1024}, {ready, notify}, {watchdog, 800}]),
    "NOTIFY_SOCKET=" ++ Rest = line(H),
    [Path | _] = string:lexemes(Rest, " "),
    receive {H, ready} -> ok after 5000 -> ct:fail(not_ready) end,
    T0 = now_ms(),
    Kicker = spawn_link(fun Kick() -> notifier:send_from_outside(Path, "WATCHDOG=1"), timer:sleep(150), Kick() end),
    receive {'EXIT', H, Reason} -> ?assertEqual(watchdog_timeout, Reason) after 5000 -> ct:fail(kept_alive_from_outside) end,
    unlink(Kicker),
    exit(Kicker, kill),
    Took = now_ms() - T0,
    ?assert(Took < 2000, {took, Took}).

%% @doc A service whose program misses its watchdog exits `watchdog_timeout'
%% (its report says which step ended the program); under a supervisor, a
%% new program starts.
a_service_exits_watchdog_timeout_and_is_restarted(Config) ->
    Node = both_modes:node(Config),
    {Name, Settings} = notifier:program([{send, "READY=1\nSTATUS=busy"}, wait]),
    Service = Settings ++ [{ready, notify}, {watchdog, 400}, {node, Node}],
    ok = logger:add_handler(capture, log_capture, #{config => #{pid => self()}}),
    try
        {ok, Pid} = portnode_service:start_link(w, Name, Service),
        receive {'EXIT', Pid, Reason} -> ?assertEqual(watchdog_timeout, Reason) after 5000 -> ct:fail(no_exit) end,
        Report = wait_report(exited),
        ?assertMatch(#{how := watchdog_timeout, ended := {stop_signal, sigterm}, status := <<"busy">>}, Report)
    after
        logger:remove_handler(capture)
    end,
    {ok, Sup} = supervisor:start_link(erlang_sup, #{intensity => 5, period => 10,
                                                    children => [portnode:service(w, Name, Service ++ [{name, wd_svc}])]}),
    First = portnode_service:os_pid(wd_svc),
    Second = wait_new_os_pid(fun() -> portnode_service:os_pid(wd_svc) end, First),
    ?assertNotEqual(First, Second),
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 15000 -> ct:fail(supervisor_did_not_stop) end.

%% @doc A supervisor inside portnode restarts a child that misses its watchdog.
a_portnode_supervisor_restarts_it(Config) ->
    {Name, Settings} = notifier:program([{send, "READY=1"}, wait]),
    {ok, Sup} = portnode:start_supervisor(both_modes:node(Config), #{intensity => 5, period => 10},
                                          [#{id => w, start => {Name, Settings ++ [{ready, notify}, {watchdog, 400}]}}]),
    OsPid = fun() -> [{w, H, worker, _}] = supervisor:which_children(Sup), portnode:os_pid(H) end,
    First = OsPid(),
    Second = wait_new_os_pid(OsPid, First),
    ?assertNotEqual(First, Second),
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 15000 -> ct:fail(supervisor_did_not_stop) end.

wait_new_os_pid(Fun, Old) ->
    Changed = fun() ->
                      try Fun() of
                          P -> is_integer(P) andalso P =/= Old
                      catch _:_ -> false
                      end
              end,
    ok = os_process:poll(Changed, 5000),
    Fun().

wait_report(What) ->
    receive
        {log, #{msg := {report, Report = #{what := {portnode_service, What}}}}} -> Report;
        {log, _} -> wait_report(What)
    after 5000 -> ct:fail({no_report, What})
    end.
