%% @doc The demo end to end, as a new user runs it: `./run' without a
%% terminal, `./client', crashes that heal, and nothing left behind however
%% it ends (SIGTERM, application:stop, the VM killed, restarts exhausted).
-module(demo_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [run_client_crash_and_heal, application_stop_leaves_nothing, vm_killed_leaves_nothing,
     too_many_crashes_stop_the_app].

suite() ->
    [{timetrap, {minutes, 5}}].

%% The checkout: the nearest directory above the app's build (which is
%% _build/default/lib/portnode, or under another REBAR_BASE_DIR) with ./run.
root() ->
    root(filename:dirname(filename:absname(code:lib_dir(portnode)))).

root("/") -> ct:fail(no_checkout_above_the_build);
root(Dir) ->
    case filelib:is_regular(filename:join(Dir, "run")) andalso filelib:is_dir(filename:join(Dir, "rust")) of
        true -> Dir;
        false -> root(filename:dirname(Dir))
    end.

%% Starts ./run on ports A and A+1; returns once ./client answers.
start_demo(Case, PortA) ->
    Name = "demo_" ++ atom_to_list(Case),
    Env = [{"SERVICE_A_PORT", integer_to_list(PortA)}, {"SERVICE_B_PORT", integer_to_list(PortA + 1)},
           {"PORTNODE_DEMO_NAME", Name}],
    Port = erlang:open_port({spawn_executable, filename:join(root(), "run")},
                            [{env, Env}, {cd, root()}, exit_status, stderr_to_stdout, binary, {line, 4096}]),
    {os_pid, RunPid} = erlang:port_info(Port, os_pid),
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Demo = #{port => Port, run_pid => RunPid, node => list_to_atom(Name ++ "@" ++ Host), port_a => PortA},
    wait_until(fun() -> client(Demo, "3", "4") =:= {0, "9"} end, 120000),
    Demo.

%% Stops what a case started, even if it failed: SIGTERM to ./run, then
%% SIGKILL to its VM if it is still there.
stop_demo(#{port := Port, run_pid := RunPid}) ->
    case erlang:port_info(Port) of
        undefined -> already_stopped;
        _ -> stop_demo(Port, RunPid)
    end.

stop_demo(Port, RunPid) ->
    Children = os_process:children_of(RunPid),
    os:cmd("kill -TERM " ++ integer_to_list(RunPid)),
    Status = receive {Port, {exit_status, S}} -> S after 20000 -> timeout end,
    [os:cmd("kill -9 " ++ integer_to_list(P)) || P <- os_process:wait_gone(Children, 0)],
    try erlang:port_close(Port) catch error:badarg -> ok end,
    Status.

client(#{port_a := PortA}, M, N) ->
    Port = erlang:open_port({spawn_executable, filename:join(root(), "client")},
                            [{args, [M, N]}, {env, [{"SERVICE_B_PORT", integer_to_list(PortA + 1)}]},
                             exit_status, stderr_to_stdout, binary, stream]),
    collect(Port, <<>>).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, S}} -> {S, string:trim(binary_to_list(Acc))}
    after 30000 -> ct:fail(client_hangs)
    end.

rpc(#{node := Node}, M, F, A) ->
    erpc:call(Node, M, F, A).

%% Every program the demo runs, and portnode itself.
programs(Demo) ->
    Services = [rpc(Demo, portnode_service, os_pid, [S]) || S <- [service_a, service_b]],
    {heartbeats, Sup, _, _} = lists:keyfind(heartbeats, 1, rpc(Demo, supervisor, which_children, [example_sup])),
    Beats = [rpc(Demo, portnode, os_pid, [H]) || {_, H, _, _} <- rpc(Demo, supervisor, which_children, [Sup])],
    Portnode = rpc(Demo, gen_server, call, [portnode_bridge, os_pid]),
    Services ++ Beats ++ [Portnode].

wait_until(Fun, Ms) when Ms =< 0 ->
    ?assert(Fun());
wait_until(Fun, Ms) ->
    case try Fun() catch _:_ -> false end of
        true -> ok;
        _ -> timer:sleep(100), wait_until(Fun, Ms - 100)
    end.

%% The OS pids of the processes named exactly `Name'.
pgrep(Name) ->
    [list_to_integer(P) || P <- string:lexemes(os:cmd("pgrep -x " ++ Name), "\n")].

%% Waits for a service's OS pid to change; returns the new one.
new_os_pid(Demo, Service, Old) ->
    T0 = erlang:monotonic_time(millisecond),
    wait_until(fun() -> rpc(Demo, portnode_service, os_pid, [Service]) =/= Old end, 5000),
    {rpc(Demo, portnode_service, os_pid, [Service]), erlang:monotonic_time(millisecond) - T0}.

%% @doc ./run, ./client 3 4 = 9, ./client 3 -1 crashes service_b which comes
%% back, kill of service_a's pid gives a new pid; SIGTERM stops everything.
run_client_crash_and_heal(_) ->
    Demo = start_demo(run_client_crash_and_heal, 18200),
    try
        ?assertEqual({0, "4960"}, client(Demo, "10", "100")),
        B = rpc(Demo, portnode_service, os_pid, [service_b]),
        %% The services name their processes: pgrep finds them by name
        %% (among any other demo's running on this machine).
        ?assert(lists:member(B, pgrep("service_b"))),
        ?assert(lists:member(rpc(Demo, portnode_service, os_pid, [service_a]), pgrep("service_a"))),
        %% service_b started once: it checks service_a at its start, and it
        %% started only once service_a was ready.
        ?assertMatch(#{service_b := #{starts := 1}}, rpc(Demo, example_stats, counts, [])),
        {S, Crashed} = client(Demo, "3", "-1"),
        ?assertNotEqual(0, S, Crashed),
        {B2, _} = new_os_pid(Demo, service_b, B),
        ?assertNotEqual(B, B2),
        wait_until(fun() -> client(Demo, "3", "4") =:= {0, "9"} end, 10000),
        A = rpc(Demo, portnode_service, os_pid, [service_a]),
        os:cmd("kill " ++ integer_to_list(A)),
        {A2, Took} = new_os_pid(Demo, service_a, A),
        ct:pal("service_a: os pid ~b -> ~b in ~b ms", [A, A2, Took]),
        ?assert(Took < 1000),
        %% The Erlang worker counted each program's starts from their output.
        wait_until(fun() -> case rpc(Demo, example_stats, counts, []) of
                                 #{service_a := #{starts := 2}, service_b := #{starts := 2, calls := Calls}} -> Calls >= 2;
                                 _ -> false
                             end end, 5000),
        Programs = programs(Demo),
        ?assertEqual(0, stop_demo(Demo)),
        ?assertEqual([], os_process:wait_gone(Programs, 3000))
    after
        stop_demo(Demo)
    end.

%% @doc application:stop(example) stops every program of the demo.
application_stop_leaves_nothing(_) ->
    Demo = start_demo(application_stop_leaves_nothing, 18210),
    try
        Programs = lists:droplast(programs(Demo)),
        ok = rpc(Demo, application, stop, [example]),
        ?assertEqual([], os_process:wait_gone(Programs, 0))
    after
        stop_demo(Demo)
    end.

%% @doc kill -9 of the demo's VM: every program and portnode go too.
vm_killed_leaves_nothing(_) ->
    Demo = start_demo(vm_killed_leaves_nothing, 18220),
    try
        Programs = programs(Demo),
        Vm = list_to_integer(rpc(Demo, os, getpid, [])),
        os:cmd("kill -9 " ++ integer_to_list(Vm)),
        ?assertEqual([], os_process:wait_gone([Vm | Programs], 5000))
    after
        stop_demo(Demo)
    end.

%% @doc More than 5 crashes in 5 s: the services' supervisor gives up, the
%% app stops, the VM (the app is permanent under ./run) halts, nothing is left.
too_many_crashes_stop_the_app(_) ->
    Demo = start_demo(too_many_crashes_stop_the_app, 18230),
    #{port := Port} = Demo,
    try
        Programs = programs(Demo),
        Seen = crash_until_down(Demo, []),
        ?assert(length(Seen) >= 6),
        receive {Port, {exit_status, Status}} -> ?assertNotEqual(0, Status) after 20000 -> ct:fail(vm_did_not_halt) end,
        ?assertEqual([], os_process:wait_gone(lists:usort(Seen ++ Programs), 3000))
    after
        stop_demo(Demo)
    end.

crash_until_down(Demo, Seen) ->
    crash_until_down(Demo, Seen, 300).

crash_until_down(_Demo, Seen, 0) ->
    ct:fail({still_up_after_crashes, Seen});
crash_until_down(Demo, Seen, N) ->
    case try rpc(Demo, portnode_service, os_pid, [service_b]) catch C:R:St -> {'EXIT', C, R, St} end of
        B when is_integer(B) ->
            _ = client(Demo, "-1", "1"),
            crash_until_down(Demo, lists:usort([B | Seen]), N - 1);
        {'EXIT', error, {erpc, noconnection}, _} ->
            Seen;
        _ ->
            %% service_b between two lives, or the app stopping
            timer:sleep(20),
            crash_until_down(Demo, Seen, N - 1)
    end.
