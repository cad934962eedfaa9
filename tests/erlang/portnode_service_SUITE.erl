%% @doc Services: programs as workers of Erlang supervisors, through
%% `portnode:service/1,3' and `portnode_service'.
-module(portnode_service_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [crash_restarts_with_a_new_os_pid, exit_reason_names_status_or_signal, intensity_exceeded_leaves_nothing,
     terminate_stops_the_program_within_shutdown, brutal_kill_kills_at_once, output_to_logger_and_callback,
     missing_program_is_a_start_error, bad_setting_is_named_in_the_start_error, child_spec_forms,
     child_spec_from_options, exits_at_once_ends_with_its_status].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(portnode),
    Config.

end_per_suite(_Config) ->
    application:stop(portnode).

init_per_testcase(_Case, Config) ->
    process_flag(trap_exit, true),
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

%% @doc A program that exits at once (/bin/false) starts its service every
%% time and ends it with `{exit_status, 1}', so a supervisor restarts it;
%% it used to fail to start with badarg when it was gone before its pid was asked for.
exits_at_once_ends_with_its_status(_Config) ->
    Results = [begin
                   {ok, Pid} = portnode_service:start_link(false, {spawn_executable, "/bin/false"}, []),
                   receive {'EXIT', Pid, Reason} -> Reason after 5000 -> no_exit end
               end || _ <- lists:seq(1, 20)],
    ?assertEqual(lists:duplicate(20, {exit_status, 1}), Results),
    %% Under a supervisor: restarted until the intensity is used up.
    Sup = start_sup(#{intensity => 5, period => 10},
                    [portnode:service(false, {spawn_executable, "/bin/false"}, [])]),
    receive {'EXIT', Sup, shutdown} -> ok after 10000 -> ct:fail(not_restarted_to_intensity) end.

sh() -> {spawn_executable, "/bin/sh"}.
sh_args(Script) -> [{args, ["-c", Script]}].

sleeper(Id, Extra) ->
    portnode:service(Id, {spawn, "sleep 300"}, Extra).

start_sup(Flags, Children) ->
    {ok, Sup} = supervisor:start_link(erlang_sup, Flags#{children => Children}),
    Sup.

stop_sup(Sup, OsPids) ->
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 15000 -> ct:fail(supervisor_did_not_stop) end,
    ?assertEqual([], os_process:wait_gone(OsPids, 2000)).

%% Waits until `Fun()' returns something other than `Old' (and not an exit).
wait_change(Fun, Old) -> wait_change(Fun, Old, 100).
wait_change(_Fun, Old, 0) -> ct:fail({no_change_from, Old});
wait_change(Fun, Old, N) ->
    case try Fun() catch _:_ -> none end of
        New when is_integer(New), New =/= Old -> New;
        _ -> timer:sleep(20), wait_change(Fun, Old, N - 1)
    end.

%% @doc kill -9 of a service's program: a new OS process within a second.
crash_restarts_with_a_new_os_pid(_) ->
    Sup = start_sup(#{strategy => one_for_one, intensity => 5, period => 5}, [sleeper(svc, [{name, svc_a}])]),
    Old = portnode_service:os_pid(svc_a),
    T0 = erlang:monotonic_time(millisecond),
    os:cmd("kill -9 " ++ integer_to_list(Old)),
    New = wait_change(fun() -> portnode_service:os_pid(svc_a) end, Old),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 1000),
    ?assert(os_process:alive(New)),
    ?assertEqual([], os_process:wait_gone([Old], 1000)),
    stop_sup(Sup, [New]).

%% @doc The server stops with {exit_status, N}, {exit_signal, Name}, or normal for 0.
exit_reason_names_status_or_signal(_) ->
    Run = fun(Action) ->
                  {ok, Pid} = portnode_service:start_link(t, sh(), sh_args("read status; exit $status")),
                  Action(portnode_service:handle(Pid), portnode_service:os_pid(Pid)),
                  receive {'EXIT', Pid, Reason} -> Reason after 5000 -> ct:fail(no_exit) end
          end,
    ?assertEqual({exit_status, 3}, Run(fun(H, _) -> portnode:port_command(H, "3\n") end)),
    ?assertEqual(normal, Run(fun(H, _) -> portnode:port_command(H, "0\n") end)),
    ?assertEqual({exit_signal, sigkill}, Run(fun(_, Os) -> os:cmd("kill -9 " ++ integer_to_list(Os)) end)).

%% @doc More crashes than the intensity: the supervisor gives up and no program is left.
intensity_exceeded_leaves_nothing(_) ->
    Sup = start_sup(#{strategy => one_for_one, intensity => 2, period => 10},
                    [sleeper(a, [{name, svc_x}]), sleeper(b, [{name, svc_y}])]),
    Seen = kill_until_exit(Sup, []),
    ?assert(length(Seen) >= 4),
    ?assertEqual([], os_process:wait_gone(Seen, 2000)).

kill_until_exit(Sup, Seen) ->
    receive {'EXIT', Sup, shutdown} -> Seen
    after 0 ->
        case try {portnode_service:os_pid(svc_x), portnode_service:os_pid(svc_y)} catch _:_ -> none end of
            {A, B} when is_integer(A), is_integer(B) ->
                os:cmd("kill -9 " ++ integer_to_list(A)),
                timer:sleep(100),
                kill_until_exit(Sup, lists:usort([A, B | Seen]));
            _ ->
                receive {'EXIT', Sup, shutdown} -> Seen after 5000 -> ct:fail(no_shutdown) end
        end
    end.

%% @doc A program that ignores SIGTERM is killed within the child's shutdown, and terminate waits for it.
terminate_stops_the_program_within_shutdown(_) ->
    Spec = portnode:service(#{id => stubborn, start => {sh(), sh_args("trap '' TERM; sleep 300") ++ [{name, stubborn}]},
                              shutdown => 1000}),
    Sup = start_sup(#{}, [Spec]),
    OsPid = portnode_service:os_pid(stubborn),
    timer:sleep(200),
    T0 = erlang:monotonic_time(millisecond),
    ok = supervisor:terminate_child(Sup, stubborn),
    Took = erlang:monotonic_time(millisecond) - T0,
    ?assertNot(os_process:alive(OsPid)),
    ?assert(Took >= 450 andalso Took < 1000, {took, Took}),
    stop_sup(Sup, [OsPid]).

%% @doc shutdown => brutal_kill: the program is SIGKILLed at once.
brutal_kill_kills_at_once(_) ->
    Spec = portnode:service(#{id => b, start => {sh(), sh_args("trap '' TERM; sleep 300") ++ [{name, brutal}]},
                              shutdown => brutal_kill}),
    Sup = start_sup(#{}, [Spec]),
    OsPid = portnode_service:os_pid(brutal),
    ok = supervisor:terminate_child(Sup, b),
    ?assertEqual([], os_process:wait_gone([OsPid], 500)),
    stop_sup(Sup, [OsPid]).

%% @doc Output lines reach the logger (with service and os_pid) or a callback; a failing callback crashes nothing.
output_to_logger_and_callback(_) ->
    ok = logger:add_handler(capture, log_capture, #{config => #{pid => self()}}),
    try
        {ok, P1} = portnode_service:start_link(talker, sh(), sh_args("echo hello; echo oops >&2; read x") ++ [{output, notice}]),
        Os1 = portnode_service:os_pid(P1),
        #{<<"hello">> := Hello, <<"oops">> := Oops} = wait_logs([<<"hello">>, <<"oops">>], #{}),
        ?assertMatch(#{level := notice, meta := #{service := talker, os_pid := Os1}}, Hello),
        ?assertMatch(#{level := warning, meta := #{service := talker, os_pid := Os1}}, Oops),
        Self = self(),
        Callback = fun(Id, <<"bad", _/binary>>) -> error({bad_line, Id});
                      (Id, Line) -> Self ! {line, Id, Line}
                   end,
        {ok, P2} = portnode_service:start_link(cb, sh(), sh_args("echo bad; echo good; read x") ++ [{output, Callback}]),
        receive {line, cb, <<"good">>} -> ok after 5000 -> ct:fail(no_line) end,
        ?assert(is_process_alive(P2)),
        [begin unlink(P), exit(P, shutdown) end || P <- [P1, P2]]
    after
        logger:remove_handler(capture)
    end.

%% Waits for a log event whose message is each of `Texts'.
wait_logs([], Found) ->
    Found;
wait_logs(Texts, Found) ->
    receive
        {log, Event = #{msg := {Format, Args}}} when is_list(Format) ->
            Text = iolist_to_binary(io_lib:format(Format, Args)),
            case lists:member(Text, Texts) of
                true -> wait_logs(Texts -- [Text], Found#{Text => Event});
                false -> wait_logs(Texts, Found)
            end;
        {log, _} -> wait_logs(Texts, Found)
    after 5000 -> ct:fail({not_logged, Texts})
    end.

%% @doc A program that cannot start makes start_link return the open_port error.
missing_program_is_a_start_error(_) ->
    ?assertEqual({error, enoent}, portnode_service:start_link(m, {spawn_executable, "/no/such/program"}, [])),
    ?assertEqual({error, {bad_setting, {output, loud}}}, portnode_service:start_link(m, {spawn, "true"}, [{output, loud}])).

%% @doc A setting open_port rejects fails the start with {bad_setting, S}, in start_link's
%% result and in the supervisor's start error.
bad_setting_is_named_in_the_start_error(_) ->
    ?assertEqual({error, {bad_setting, {busy_limits_port, disabled}}},
                 portnode_service:start_link(m, {spawn, "cat"}, [{busy_limits_port, disabled}])),
    ?assertEqual({error, {bad_setting, {packet, 3}}}, portnode_service:start_link(m, {spawn, "cat"}, [{packet, 3}])),
    {ok, Sup} = supervisor:start_link(erlang_sup, #{children => []}),
    ?assertMatch({error, {{bad_setting, {busy_limits_port, disabled}}, _}},
                 supervisor:start_child(Sup, portnode:service(m, {spawn, "cat"}, [{busy_limits_port, disabled}]))),
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 5000 -> ct:fail(supervisor_did_not_stop) end.

%% @doc child_spec/1 (Elixir's `{:portnode_service, opts}'): program, command or port_name,
%% restart and shutdown from the options, every other option a setting.
child_spec_from_options(_) ->
    ?assertMatch(#{id := x, restart := transient, shutdown := 200,
                   start := {portnode_service, start_link,
                             [x, {spawn_executable, <<"/bin/sh">>}, [{args, [<<"-c">>, <<"true">>]}, stderr_to_stdout, {kill_timeout, 100}]]}},
                 portnode_service:child_spec([{id, x}, {program, <<"/bin/sh">>}, {args, [<<"-c">>, <<"true">>]},
                                              stderr_to_stdout, {restart, transient}, {shutdown, 200}])),
    ?assertMatch(#{id := y, start := {_, _, [y, {spawn, "sleep 1"}, [binary, {name, y}, {kill_timeout, 4500}]]}},
                 portnode_service:child_spec(#{id => y, command => "sleep 1", settings => [binary], name => y})),
    ?assertError({bad_setting, {missing, id}}, portnode_service:child_spec([{program, "/bin/true"}])),
    ?assertError({bad_setting, {port_name, _}}, portnode_service:child_spec([{id, z}])),
    %% and it runs
    Sup = start_sup(#{}, [portnode_service:child_spec([{id, w}, {command, "sleep 300"}])]),
    [{w, Pid, worker, _}] = supervisor:which_children(Sup),
    OsPid = portnode_service:os_pid(Pid),
    stop_sup(Sup, [OsPid]).

%% @doc service/3 and service/1 give the child specs the issue names.
child_spec_forms(_) ->
    ?assertMatch(#{id := x, start := {portnode_service, start_link, [x, {spawn, "true"}, [{kill_timeout, 4500}]]},
                   restart := permanent, shutdown := 5000, type := worker},
                 portnode:service(x, {spawn, "true"}, [])),
    ?assertMatch(#{restart := transient, shutdown := 200, start := {_, _, [x, _, [{kill_timeout, 100}]]}},
                 portnode:service(#{id => x, start => {{spawn, "true"}, []}, restart => transient, shutdown => 200})),
    ?assertMatch(#{start := {_, _, [x, _, [{kill_timeout, 7}]]}},
                 portnode:service(#{id => x, start => {{spawn, "true"}, [{kill_timeout, 7}]}})).
