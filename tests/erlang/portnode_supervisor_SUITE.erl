%% @doc Supervisors that run inside portnode: OTP's semantics for programs,
%% checked against real programs and their OS pids.
-module(portnode_supervisor_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [one_for_one_restarts_only_the_dead, one_for_all_restarts_every_child, rest_for_one_restarts_the_rest,
     permanent_transient_temporary, intensity_exceeded_exits_shutdown, escalates_into_the_erlang_parent,
     starts_in_order_stops_in_reverse, parent_exit_stops_children, child_management_calls,
     failed_start_stops_the_started, bad_specs_are_named, transient_is_judged_by_exit_status,
     grant_restarts_each_crash, grant_never_restarts_a_stopped_child, grant_restarts_count_against_the_intensity,
     grant_starts_nothing_for_a_killed_supervisor, grant_restarts_nothing_while_shutting_down,
     grant_waits_for_an_empty_leaf].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(portnode),
    Config.

end_per_suite(_Config) ->
    application:stop(portnode).

init_per_testcase(_Case, Config) ->
    process_flag(trap_exit, true),
    Config.

end_per_testcase(_Case, _Config) ->
    %% Any supervisor a case left running goes with its parent (this process).
    ok.

sleeper(Id) -> #{id => Id, start => {{spawn, "sleep 300"}, []}}.

%% A program that exits with the status it reads on stdin.
exiter(Id, Restart) ->
    #{id => Id, start => {{spawn_executable, "/bin/sh"}, [{args, ["-c", "read status; exit $status"]}]}, restart => Restart}.

start(Flags, Children) ->
    {ok, Sup} = portnode:start_supervisor(Flags, Children),
    Sup.

%% `[{Id, OsPid}]' in start order (which_children, as OTP's, lists the last
%% started first); `undefined' for a child not running.
os_pids(Sup) ->
    [{Id, os_pid(H)} || {Id, H, worker, _} <- lists:reverse(supervisor:which_children(Sup))].

os_pid(H) when is_pid(H) ->
    try portnode:os_pid(H) catch error:badarg -> undefined end;
os_pid(_) ->
    undefined.

kill9(OsPid) ->
    os:cmd("kill -9 " ++ integer_to_list(OsPid)).

%% Waits until every child runs and `Pred(os_pids(Sup))' holds; returns the os pids then.
wait_for(Sup, Pred) ->
    wait_for(Sup, Pred, 50).
wait_for(Sup, _Pred, 0) ->
    ct:fail({condition_never_held, os_pids(Sup)});
wait_for(Sup, Pred, N) ->
    Pids = os_pids(Sup),
    case lists:all(fun({_, P}) -> is_integer(P) end, Pids) andalso Pred(Pids) of
        true -> Pids;
        false -> timer:sleep(100), wait_for(Sup, Pred, N - 1)
    end.

stop_sup(Sup) ->
    All = [P || {_, P} <- os_pids(Sup), is_integer(P)],
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 10000 -> ct:fail(supervisor_did_not_stop) end,
    ?assertEqual([], os_process:wait_gone(All, 2000)).

%% @doc one_for_one: only the child that died gets a new OS process.
one_for_one_restarts_only_the_dead(_) ->
    Sup = start(#{strategy => one_for_one, intensity => 3, period => 5}, [sleeper(a), sleeper(b)]),
    [{a, A}, {b, B}] = os_pids(Sup),
    kill9(A),
    [{a, A2}, {b, B2}] = wait_for(Sup, fun([{a, P}, _]) -> P =/= A end),
    ?assertNotEqual(A, A2),
    ?assertEqual(B, B2),
    ?assert(os_process:alive(A2)),
    stop_sup(Sup).

%% @doc one_for_all: every child is stopped and started again.
one_for_all_restarts_every_child(_) ->
    Sup = start(#{strategy => one_for_all, intensity => 3, period => 5}, [sleeper(a), sleeper(b), sleeper(c)]),
    Before = [P || {_, P} <- os_pids(Sup)],
    kill9(lists:nth(2, Before)),
    After = [P || {_, P} <- wait_for(Sup, fun(Ps) -> [P || {_, P} <- Ps, lists:member(P, Before)] =:= [] end)],
    ?assertEqual([], os_process:wait_gone(Before, 2000)),
    ?assert(lists:all(fun os_process:alive/1, After)),
    stop_sup(Sup).

%% @doc rest_for_one: the dead child and those started after it restart.
rest_for_one_restarts_the_rest(_) ->
    Sup = start(#{strategy => rest_for_one, intensity => 3, period => 5}, [sleeper(a), sleeper(b), sleeper(c)]),
    [{a, A}, {b, B}, {c, C}] = os_pids(Sup),
    kill9(B),
    [{a, A2}, {b, B2}, {c, C2}] = wait_for(Sup, fun([_, {b, Pb}, {c, Pc}]) -> Pb =/= B andalso Pc =/= C end),
    ?assertEqual(A, A2),
    ?assert(B2 =/= B andalso C2 =/= C),
    ?assertEqual([], os_process:wait_gone([B, C], 2000)),
    stop_sup(Sup).

%% @doc permanent always restarts, transient only after a failure, temporary never (and is forgotten).
permanent_transient_temporary(_) ->
    Sup = start(#{strategy => one_for_one, intensity => 10, period => 5},
                [exiter(p, permanent), exiter(t, transient), exiter(tmp, temporary)]),
    Handles = maps:from_list([{Id, H} || {Id, H, _, _} <- supervisor:which_children(Sup)]),
    Exit = fun(Id, Status) -> portnode:port_command(maps:get(Id, Handles), [integer_to_list(Status), "\n"]) end,
    [{p, P}, {t, T}, {tmp, _}] = os_pids(Sup),
    Exit(p, 0), Exit(t, 0), Exit(tmp, 1),
    timer:sleep(500),
    Pids = os_pids(Sup),
    %% transient exited normally: still there, not running
    ?assertMatch([{t, undefined, worker, _}, {p, _, worker, _}], supervisor:which_children(Sup)),
    ?assertNotEqual(P, proplists:get_value(p, Pids)),
    %% transient restarts after a failure
    {ok, Ht} = supervisor:restart_child(Sup, t),
    T2 = portnode:os_pid(Ht),
    ?assertNotEqual(T, T2),
    portnode:port_command(Ht, "3\n"),
    wait_for(Sup, fun(Ps) -> proplists:get_value(t, Ps) =/= T2 end),
    stop_sup(Sup).

%% @doc More restarts than the intensity allows: children stopped, supervisor exits shutdown.
intensity_exceeded_exits_shutdown(_) ->
    Sup = start(#{strategy => one_for_one, intensity => 2, period => 10}, [sleeper(a), sleeper(b)]),
    Seen = kill_until_exit(Sup, []),
    ?assertEqual([], os_process:wait_gone(Seen, 2000)),
    ?assertNot(is_process_alive_remote(Sup)).

kill_until_exit(Sup, Seen) ->
    receive {'EXIT', Sup, Reason} -> ?assertEqual(shutdown, Reason), Seen
    after 0 ->
        case try os_pids(Sup) catch _:_ -> none end of
            [{a, A}, {b, B}] when is_integer(A) ->
                kill9(A),
                timer:sleep(200),
                kill_until_exit(Sup, lists:usort([A, B | Seen]));
            _ ->
                receive {'EXIT', Sup, Reason} -> ?assertEqual(shutdown, Reason), Seen
                after 5000 -> ct:fail(no_exit)
                end
        end
    end.

is_process_alive_remote(Pid) ->
    try sys:get_state(Pid, 100) of _ -> true
    catch exit:_ -> false
    end.

%% @doc A portnode supervisor giving up is a child exit in its Erlang parent, which restarts it.
escalates_into_the_erlang_parent(_) ->
    Spec = portnode:supervisor(programs, #{strategy => one_for_one, intensity => 0, period => 5}, [sleeper(a)]),
    {ok, Top} = supervisor:start_link(erlang_sup, #{strategy => one_for_one, intensity => 3, period => 10, children => [Spec]}),
    [{programs, Sub, supervisor, _}] = supervisor:which_children(Top),
    ?assertEqual(node(Sub), portnode:node()),
    [{a, A}] = os_pids(Sub),
    kill9(A),
    Sub2 = wait_new_child(Top, programs, Sub, 50),
    [{a, A2}] = os_pids(Sub2),
    ?assert(A2 =/= A andalso os_process:alive(A2)),
    exit(Top, shutdown),
    receive {'EXIT', Top, shutdown} -> ok after 10000 -> ct:fail(top_did_not_stop) end,
    ?assertEqual([], os_process:wait_gone([A, A2], 2000)).

wait_new_child(_Top, _Id, _Old, 0) ->
    ct:fail(not_restarted);
wait_new_child(Top, Id, Old, N) ->
    case lists:keyfind(Id, 1, supervisor:which_children(Top)) of
        {Id, New, _, _} when is_pid(New), New =/= Old -> New;
        _ -> timer:sleep(100), wait_new_child(Top, Id, Old, N - 1)
    end.

%% @doc Children start in order and stop in reverse order, each gone before the next stops.
starts_in_order_stops_in_reverse(Config) ->
    Log = filename:join(?config(priv_dir, Config), "order.log"),
    Child = fun(Id) ->
                    Name = atom_to_list(Id),
                    Cmd = "trap 'echo stop " ++ Name ++ " >> " ++ Log ++ "; exit 0' TERM; "
                          "while :; do sleep 0.05; done",
                    #{id => Id, start => {{spawn_executable, "/bin/sh"}, [{args, ["-c", Cmd]}]}, shutdown => 3000}
            end,
    Sup = start(#{strategy => one_for_one}, [Child(a), Child(b), Child(c)]),
    Children = supervisor:which_children(Sup),
    ?assertEqual([c, b, a], [Id || {Id, _, _, _} <- Children]),  % OTP's order: last started first
    [Hc, Hb, Ha] = [H || {_, H, _, _} <- Children],
    ?assert(Ha < Hb andalso Hb < Hc),
    timer:sleep(300),  % let the shells set their traps
    stop_sup(Sup),
    {ok, Bin} = file:read_file(Log),
    ?assertEqual([<<"stop c">>, <<"stop b">>, <<"stop a">>], string:split(string:trim(Bin), "\n", all)).

%% @doc When the parent goes, the supervisor stops its children and exits too.
parent_exit_stops_children(_) ->
    Self = self(),
    Parent = spawn(fun() ->
                           {ok, Sup} = portnode:start_supervisor(#{}, [sleeper(a), sleeper(b)]),
                           Self ! {sup, Sup, os_pids(Sup)},
                           receive never -> ok end
                   end),
    {Sup, Pids} = receive {sup, S, P} -> {S, P} after 10000 -> ct:fail(no_sup) end,
    Ref = monitor(process, Sup),
    exit(Parent, kill),
    receive {'DOWN', Ref, process, Sup, Reason} -> ?assertEqual(killed, Reason) after 10000 -> ct:fail(sup_alive) end,
    ?assertEqual([], os_process:wait_gone([P || {_, P} <- Pids], 2000)).

%% @doc which_children, count_children, terminate_child, restart_child, delete_child, start_child, get_childspec.
child_management_calls(_) ->
    Sup = start(#{}, [sleeper(a), sleeper(b)]),
    ?assertEqual([{specs, 2}, {active, 2}, {supervisors, 0}, {workers, 2}], supervisor:count_children(Sup)),
    [{a, A}, {b, _}] = os_pids(Sup),
    ok = supervisor:terminate_child(Sup, a),
    ?assertEqual([], os_process:wait_gone([A], 0)),
    ?assertMatch([{b, Hb, worker, []}, {a, undefined, worker, []}] when is_pid(Hb), supervisor:which_children(Sup)),
    ?assertEqual([{specs, 2}, {active, 1}, {supervisors, 0}, {workers, 2}], supervisor:count_children(Sup)),
    {ok, Ha} = supervisor:restart_child(Sup, a),
    ?assert(os_process:alive(portnode:os_pid(Ha))),
    ?assertEqual({error, running}, supervisor:restart_child(Sup, a)),
    ?assertEqual({error, running}, supervisor:delete_child(Sup, a)),
    ?assertEqual({error, not_found}, supervisor:terminate_child(Sup, nope)),
    ?assertEqual({error, not_found}, supervisor:restart_child(Sup, nope)),
    {ok, Spec} = supervisor:get_childspec(Sup, b),
    ?assertMatch(#{id := b, restart := permanent, shutdown := 5000, type := worker}, Spec),
    {ok, Hc} = supervisor:start_child(Sup, sleeper(c)),
    ?assertEqual({error, {already_started, Hc}}, supervisor:start_child(Sup, sleeper(c))),
    ok = supervisor:terminate_child(Sup, c),
    ?assertEqual({error, already_present}, supervisor:start_child(Sup, sleeper(c))),
    ok = supervisor:delete_child(Sup, c),
    ?assertEqual([b, a], [Id || {Id, _, _, _} <- supervisor:which_children(Sup)]),
    ?assertEqual({error, enoent}, supervisor:start_child(Sup, #{id => d, start => {{spawn_executable, "/no/such/program"}, []}})),
    stop_sup(Sup).

%% @doc A child that cannot start: the ones started before it are stopped, and the error says which.
failed_start_stops_the_started(_) ->
    Bad = #{id => bad, start => {{spawn_executable, "/no/such/program"}, []}},
    Before = os_process:descendants_of(gen_server:call(portnode_bridge, os_pid)),
    ?assertEqual({error, {shutdown, {failed_to_start_child, bad, enoent}}},
                 portnode:start_supervisor(#{}, [sleeper(a), Bad])),
    timer:sleep(200),
    ?assertEqual(Before, os_process:descendants_of(gen_server:call(portnode_bridge, os_pid))).

%% @doc Bad flags and child specs get OTP's error terms, and nothing starts.
bad_specs_are_named(_) ->
    ?assertEqual({error, {supervisor_data, {invalid_strategy, simple_one_for_one}}},
                 portnode:start_supervisor(#{strategy => simple_one_for_one}, [])),
    ?assertEqual({error, {start_spec, {invalid_restart_type, sometimes}}},
                 portnode:start_supervisor(#{}, [(sleeper(a))#{restart => sometimes}])),
    ?assertEqual({error, {start_spec, {duplicate_child_name, a}}},
                 portnode:start_supervisor(#{}, [sleeper(a), sleeper(a)])),
    ?assertEqual({error, {start_spec, {invalid_start, {badarg, {packet, 3}}}}},
                 portnode:start_supervisor(#{}, [#{id => a, start => {{spawn, "cat"}, [{packet, 3}]}}])),
    ?assertEqual({error, {start_spec, {invalid_child_type, supervisor}}},
                 portnode:start_supervisor(#{}, [(sleeper(a))#{type => supervisor}])),
    ?assertMatch({error, {not_plain_data, _}}, portnode:start_supervisor(#{}, [(sleeper(a))#{id => self()}])),
    %% and the control server still answers
    pong = portnode:ping().

%% @doc A transient child: status 0 is a normal exit (not restarted), a death by signal is not.
transient_is_judged_by_exit_status(_) ->
    Sup = start(#{intensity => 10}, [exiter(t, transient)]),
    [{t, H, _, _}] = supervisor:which_children(Sup),
    portnode:port_command(H, "0\n"),
    timer:sleep(300),
    ?assertMatch([{t, undefined, _, _}], supervisor:which_children(Sup)),
    {ok, H2} = supervisor:restart_child(Sup, t),
    Os2 = portnode:os_pid(H2),
    ok = portnode:kill(H2, sigkill),
    [{t, Os}] = wait_for(Sup, fun([{t, P}]) -> is_integer(P) andalso P =/= Os2 end),
    ?assert(os_process:alive(Os)),
    stop_sup(Sup).

%% A permanent child that writes its pid to `File' as it starts, then sleeps
%% (the pid stays: the shell execs sleep). The file is every start it had.
noter(Id, File) ->
    noter(Id, File, "sleep 300").

%% The same, running `Command' after the note: `cat' ends at its stdin's
%% EOF, as a filter does when its port closes.
noter(Id, File, Command) ->
    #{id => Id, start => {{spawn_executable, "/bin/sh"}, [{args, ["-c", "echo $$ >> \"$0\"; exec " ++ Command, File]}]}}.

starts(File) ->
    case file:read_file(File) of
        {ok, Bin} -> [binary_to_integer(L) || L <- string:split(string:trim(Bin), "\n", all), L =/= <<>>];
        {error, enoent} -> []
    end.

note_file(Config, Name) ->
    filename:join(?config(priv_dir, Config), Name).

%% Waits until program `P' has noted its start in `File' (it runs a shell
%% line first): killed before, it would leave no trace to count.
wait_noted(File, P) ->
    ok = os_process:poll(fun() -> lists:member(P, starts(File)) end, 5000).

%% The live processes under portnode (its spawner, and every program).
under_portnode() ->
    os_process:descendants_of(gen_server:call(portnode_bridge, os_pid)).

%% portnode's log lines that say a restart grant restarted a child.
grant_restarts_logged(Ms) ->
    receive
        {log, #{msg := {Format, Args}}} ->
            Text = lists:flatten(io_lib:format(Format, Args)),
            case string:find(Text, "by its restart grant") of
                nomatch -> grant_restarts_logged(Ms);
                _ -> 1 + grant_restarts_logged(Ms)
            end;
        {log, _} -> grant_restarts_logged(Ms)
    after Ms -> 0
    end.

%% @doc A permanent child of a one_for_one supervisor is restarted by the
%% spawner the moment it dies (a restart grant), every time: one start per
%% crash, the old program gone, each restart logged as the grant's.
grant_restarts_each_crash(Config) ->
    File = note_file(Config, "grant_starts"),
    ok = logger:add_handler(grant_capture, log_capture, #{config => #{pid => self()}}),
    try
        Sup = start(#{strategy => one_for_one, intensity => 100, period => 10}, [noter(a, File)]),
        lists:foreach(fun(_) ->
                              [{a, P}] = os_pids(Sup),
                              wait_noted(File, P),
                              kill9(P),
                              wait_for(Sup, fun([{a, P2}]) -> P2 =/= P end)
                      end, lists:seq(1, 10)),
        [{a, Now}] = os_pids(Sup),
        wait_noted(File, Now),
        Starts = starts(File),
        ?assertEqual(11, length(Starts)),
        ?assertEqual(Now, lists:last(Starts)),
        ?assertEqual([], os_process:wait_gone(lists:droplast(Starts), 2000)),
        ?assertEqual(10, grant_restarts_logged(1000)),
        stop_sup(Sup),
        timer:sleep(200),
        ?assertEqual(Starts, starts(File))
    after
        logger:remove_handler(grant_capture)
    end.

%% @doc terminate_child racing the program's own death: whichever the
%% spawner sees first (the grant given up, or the exit that uses it),
%% nothing of the child runs once terminate_child returns, and nothing
%% starts after.
grant_never_restarts_a_stopped_child(Config) ->
    File = note_file(Config, "stopped_starts"),
    Baseline = under_portnode(),
    Sup = start(#{strategy => one_for_one, intensity => 100, period => 10}, [noter(a, File)]),
    Rounds = [begin
                  [{a, P}] = wait_for(Sup, fun(_) -> true end),
                  wait_noted(File, P),
                  kill9(P),
                  ok = supervisor:terminate_child(Sup, a),
                  ?assertMatch([{a, undefined, worker, _}], supervisor:which_children(Sup)),
                  %% Nothing of the child runs, not even a replacement that
                  %% had no time to note its start.
                  ?assertEqual(Baseline, under_portnode()),
                  Before = length(starts(File)),
                  timer:sleep(50),
                  ?assertEqual(Before, length(starts(File))),
                  {ok, _} = supervisor:restart_child(Sup, a),
                  Before
              end || _ <- lists:seq(1, 20)],
    %% Each round started one program, or two when the grant was used first.
    ct:log("starts after each round: ~p", [Rounds]),
    stop_sup(Sup),
    ?assertEqual([], os_process:wait_gone(starts(File), 2000)).

%% @doc Restarts by grants count against the intensity as any other: with
%% intensity 2, the third restart in the period shuts the supervisor down,
%% and no grant starts a program the supervisor would not have.
grant_restarts_count_against_the_intensity(Config) ->
    [FileA, FileB] = [note_file(Config, N) || N <- ["intensity_a", "intensity_b"]],
    Sup = start(#{strategy => one_for_one, intensity => 2, period => 60}, [noter(a, FileA), noter(b, FileB)]),
    [{a, A1}, {b, B1}] = os_pids(Sup),
    wait_noted(FileA, A1),
    wait_noted(FileB, B1),
    kill9(A1),
    [{a, A2}, {b, B1}] = wait_for(Sup, fun([{a, P}, _]) -> P =/= A1 end),
    wait_noted(FileA, A2),
    kill9(A2),
    [{a, A3}, _] = wait_for(Sup, fun([{a, P}, _]) -> P =/= A2 end),
    wait_noted(FileA, A3),
    kill9(B1),
    receive {'EXIT', Sup, Reason} -> ?assertEqual(shutdown, Reason) after 10000 -> ct:fail(no_shutdown) end,
    timer:sleep(200),
    ?assertEqual(3, length(starts(FileA))),
    ?assertEqual(1, length(starts(FileB))),
    ?assertEqual([], os_process:wait_gone(starts(FileA) ++ starts(FileB), 2000)).

%% @doc A supervisor killed (no trap, no cleanup of its own): its children
%% are stopped, and a grant starts nothing, even for a program (`cat') that
%% ends by itself when its port closes; when the program died just before
%% its supervisor, whatever a grant started then is stopped.
grant_starts_nothing_for_a_killed_supervisor(Config) ->
    File = note_file(Config, "killed_starts"),
    Baseline = under_portnode(),
    Added = [begin
                 Before = length(starts(File)),
                 Sup = start(#{strategy => one_for_one, intensity => 100, period => 10}, [noter(a, File, "cat")]),
                 [{a, P}] = os_pids(Sup),
                 wait_noted(File, P),
                 Round rem 2 =:= 0 andalso kill9(P),
                 exit(Sup, kill),
                 receive {'EXIT', Sup, killed} -> ok after 10000 -> ct:fail(sup_alive) end,
                 ?assertEqual(ok, os_process:poll(fun() -> under_portnode() =:= Baseline end, 3000)),
                 {Round rem 2, length(starts(File)) - Before}
             end || Round <- lists:seq(1, 10)],
    ct:log("{killed first, starts} per supervisor: ~p", [Added]),
    %% Killed while its program ran: one start, its own. Its program killed
    %% just before: two at most (a grant used before the supervisor died).
    ?assertEqual([1, 1, 1, 1, 1], [N || {1, N} <- Added]),
    ?assert(lists:all(fun({0, N}) -> N =:= 1 orelse N =:= 2; (_) -> true end, Added)),
    Starts = starts(File),
    timer:sleep(200),
    ?assertEqual(Starts, starts(File)),
    ?assertEqual([], os_process:wait_gone(Starts, 0)).

%% @doc A supervisor shutting down (its parent exits) restarts nothing, not
%% even a child that dies while a sibling takes its time to stop: every
%% grant is given up before the first child is stopped.
grant_restarts_nothing_while_shutting_down(Config) ->
    [FileA, FileB] = [note_file(Config, N) || N <- ["shutdown_a", "shutdown_b"]],
    Slow = "sh -c 'trap \"sleep 0.5; exit 0\" TERM; while :; do sleep 0.05; done'",
    Sup = start(#{strategy => one_for_one, intensity => 100, period => 10},
                [noter(a, FileA, "cat"), (noter(b, FileB, Slow))#{shutdown => 5000}]),
    [{a, A}, {b, B}] = os_pids(Sup),
    wait_noted(FileA, A),
    wait_noted(FileB, B),
    timer:sleep(200),  % let b's shell set its trap
    exit(Sup, shutdown),
    timer:sleep(150),  % b (stopped first) is in its grace
    kill9(A),
    receive {'EXIT', Sup, shutdown} -> ok after 10000 -> ct:fail(sup_alive) end,
    timer:sleep(200),
    ?assertEqual([A], starts(FileA)),
    ?assertEqual([B], starts(FileB)),
    ?assertEqual([], os_process:wait_gone([A, B], 2000)).

%% @doc A program that left a child of its own behind when it died is not
%% restarted by its grant (its cgroup still holds a process): the
%% supervisor restarts it the usual way, once what was left is stopped.
grant_waits_for_an_empty_leaf(Config) ->
    [File, Left] = [note_file(Config, N) || N <- ["leaf_starts", "leaf_left"]],
    Script = "sleep 1000 </dev/null >/dev/null 2>&1 & echo $! >> \"$1\"; echo $$ >> \"$0\"; exec sleep 300",
    Child = #{id => a, start => {{spawn_executable, "/bin/sh"}, [{args, ["-c", Script, File, Left]}]}},
    ok = logger:add_handler(leaf_capture, log_capture, #{config => #{pid => self()}}),
    try
        Sup = start(#{strategy => one_for_one, intensity => 100, period => 10}, [Child]),
        [{a, P}] = os_pids(Sup),
        wait_noted(File, P),
        [Daemon] = starts(Left),
        ?assert(os_process:alive(Daemon)),
        kill9(P),
        [{a, P2}] = wait_for(Sup, fun([{a, Q}]) -> Q =/= P end),
        ?assertEqual([], os_process:wait_gone([P, Daemon], 2000)),
        ?assert(os_process:alive(P2)),
        ?assertEqual(0, grant_restarts_logged(500)),
        stop_sup(Sup)
    after
        logger:remove_handler(leaf_capture)
    end.
