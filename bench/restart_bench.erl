%% @doc Benchmark: restart latency, from `kill -9' of a supervised program to
%% its replacement running, for
%% <ul>
%% <li>a plain port owned by a gen_server under an Erlang supervisor (the anchor),</li>
%% <li>a service (`portnode:service/3') under an Erlang supervisor,</li>
%% <li>a child of a supervisor that runs inside portnode (`portnode:supervisor/3').</li>
%% </ul>
%% The program is `/bin/sleep 300' in each case. "Running" is when the OS
%% shows the replacement: a new child of the program's parent (portnode, or
%% the VM's erl_child_setup for a plain port), read in a loop from
%% /proc/Parent/task/Parent/children: both parents start programs from their
%% main thread, so each poll is one read for every case, and it does not load
%% the parent. Run with `bench/run restart'.
-module(restart_bench).
-behaviour(gen_server).

-export([main/1]).
%% The anchor's worker: a plain port in a gen_server.
-export([start_port_worker/0, init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(KILLS, 300).
-define(PROGRAM, "/bin/sleep").

%% @doc Prints the table.
-spec main([string()]) -> ok.
main(_Args) ->
    %% Hundreds of crash reports would cost every case time: keep the logs quiet.
    logger:set_primary_config(level, critical),
    {ok, _} = application:ensure_all_started(portnode),
    process_flag(trap_exit, true),
    Killer = erlang:open_port({spawn, "/bin/sh"}, []),
    Flags = #{strategy => one_for_one, intensity => 100000, period => 1},
    Port = #{id => port_worker, start => {?MODULE, start_port_worker, []}},
    Service = portnode:service(service, {spawn_executable, ?PROGRAM}, [{args, ["300"]}, {name, bench_service}, {output, ignore}]),
    Program = #{id => program, start => {{spawn_executable, ?PROGRAM}, [{args, ["300"]}]}},
    Rows = [begin
                io:format("~s ...~n", [Name]),
                {Name, Fun()}
            end || {Name, Fun} <- [{"plain port in a gen_server, Erlang supervisor", fun() -> by_name(Killer, Flags, Port, bench_port) end},
                                   {"portnode:service, Erlang supervisor", fun() -> by_name(Killer, Flags, Service, bench_service) end},
                                   {"portnode:supervisor child", fun() -> in_portnode(Killer, Flags#{intensity => 100000}, Program) end}]],
    [{_, Anchor} | _] = Rows,
    io:format("~n| restart after kill -9 (~b kills each) | median ms | mean ms | p99 ms | median vs plain port |~n|---|---|---|---|---|~n", [?KILLS]),
    [io:format("| ~s | ~.3f | ~.3f | ~.3f | ~.2fx |~n", [N, median(S), mean(S), p99(S), median(S) / median(Anchor)]) || {N, S} <- Rows],
    io:format("~n"),
    erlang:port_close(Killer),
    ok = application:stop(portnode).

%% Erlang supervisor, worker registered as `Name': kill its program, time until a new worker is registered.
by_name(Killer, Flags, Spec, Name) ->
    {ok, Sup} = supervisor:start_link(bench_sup(), Flags#{children => [Spec]}),
    Samples = [begin
                   OsPid = wait_os_pid(fun() -> gen_server:call(Name, os_pid) end),
                   time_restart(Killer, OsPid)
               end || _ <- lists:seq(1, ?KILLS)],
    stop(Sup),
    [S / 1000 || S <- Samples].

%% A supervisor inside portnode: kill the child's program, time until which_children shows a new handle.
in_portnode(Killer, Flags, Spec) ->
    {ok, Sup} = portnode:start_supervisor(Flags, [Spec]),
    Samples = [begin
                   OsPid = wait_os_pid(fun() -> [{program, H, _, _}] = supervisor:which_children(Sup), portnode:os_pid(H) end),
                   time_restart(Killer, OsPid)
               end || _ <- lists:seq(1, ?KILLS)],
    stop(Sup),
    [S / 1000 || S <- Samples].

%% Microseconds from kill -9 of `OsPid' to a new child of its parent.
time_restart(Killer, OsPid) ->
    Parent = parent(OsPid),
    Before = children(Parent),
    T0 = erlang:monotonic_time(microsecond),
    true = erlang:port_command(Killer, ["kill -9 ", integer_to_list(OsPid), "\n"]),
    wait_new_child(Parent, Before),
    erlang:monotonic_time(microsecond) - T0.

wait_new_child(Parent, Before) ->
    case children(Parent) -- Before of
        [] -> wait_new_child(Parent, Before);
        _ -> ok
    end.

%% The worker's program, once the worker is back and answers.
wait_os_pid(Fun) ->
    case catch Fun() of
        OsPid when is_integer(OsPid) -> OsPid;
        _ -> timer:sleep(1), wait_os_pid(Fun)
    end.

parent(OsPid) ->
    {ok, Stat} = file:read_file(["/proc/", integer_to_list(OsPid), "/stat"]),
    [_, AfterComm] = string:split(Stat, ") ", trailing),
    [_State, PPid | _] = string:split(AfterComm, " ", all),
    binary_to_integer(PPid).

children(Pid) ->
    P = integer_to_list(Pid),
    {ok, Bin} = file:read_file("/proc/" ++ P ++ "/task/" ++ P ++ "/children"),
    string:lexemes(Bin, " ").

stop(Sup) ->
    unlink(Sup),
    exit(Sup, shutdown),
    Ref = monitor(process, Sup),
    receive {'DOWN', Ref, _, _, _} -> ok end.

median(S) -> lists:nth((length(S) + 1) div 2, lists:sort(S)).
mean(S) -> lists:sum(S) / length(S).
p99(S) -> lists:nth(max(1, round(length(S) * 0.99)), lists:sort(S)).

%% A plain Erlang supervisor: the flags map carries the children.
bench_sup() -> erlang_sup.

%%% The anchor's worker

%% @private
start_port_worker() ->
    gen_server:start_link({local, bench_port}, ?MODULE, [], []).

%% @private
init([]) ->
    process_flag(trap_exit, true),
    {ok, erlang:open_port({spawn_executable, ?PROGRAM}, [{args, ["300"]}, exit_status])}.

%% @private
handle_call(os_pid, _From, Port) ->
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    {reply, OsPid, Port}.

%% @private
handle_cast(_Msg, Port) ->
    {noreply, Port}.

%% @private
handle_info({Port, {exit_status, S}}, Port) ->
    {stop, {exit_status, S}, Port};
handle_info(_Msg, Port) ->
    {noreply, Port}.

%% @private
%% Closing a port does not stop a program that never reads its stdin (the
%% orphan problem portnode solves): the anchor stops its own program.
terminate(_Reason, Port) ->
    case erlang:port_info(Port, os_pid) of
        {os_pid, OsPid} -> os:cmd("kill -9 " ++ integer_to_list(OsPid));
        undefined -> ok
    end.
