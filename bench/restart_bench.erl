%% @doc Benchmark: restart latency, from `kill -9' of a supervised program to
%% its replacement running, for
%% <ul>
%% <li>a plain port owned by a gen_server under an Erlang supervisor (the anchor),</li>
%% <li>a service (`portnode:service/3') under an Erlang supervisor,</li>
%% <li>the anchor's own gen_server with `portnode:open_port/2' in place of
%%     `erlang:open_port/2' (no target: it shows what the service row
%%     owes to the remote port itself, and what to the service's module),</li>
%% <li>a child of a supervisor that runs inside portnode (`portnode:supervisor/3');</li>
%% <li>the floor: one C process that restarts its program itself as soon as
%%     it exits (bench/restart_floor.c): what no supervisor, Erlang's or
%%     portnode's, can beat on this machine.</li>
%% </ul>
%% The program is `/bin/sleep 300' in each case. The stopwatch is a separate
%% OS process, `restart_watch' (bench/restart_watch.c, built by bench/run):
%% it kills the program and hears from the kernel's process events connector
%% when the program's parent (read from the program's /proc/PID/stat:
%% portnode, a spawner of portnode's, or the VM's erl_child_setup) forks its
%% next child, and when that child execs. The kernel stamps both events, so
%% neither the VM nor portnode runs any of the measurement while it is timed.
%% Run with `bench/run restart'; `bench/run restart service' runs the anchor
%% and the rows whose name holds a word given.
-module(restart_bench).
-behaviour(gen_server).

-export([main/1]).
%% The anchor's worker: a plain port in a gen_server (or a remote port).
-export([start_port_worker/0, start_port_worker/1, init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(KILLS, 300).
-define(PROGRAM, "/bin/sleep").

%% @doc Prints the table.
-spec main([string()]) -> ok.
main(Words) ->
    %% Hundreds of crash reports would cost every case time: keep the logs quiet.
    logger:set_primary_config(level, critical),
    {ok, _} = application:ensure_all_started(portnode),
    %% The targets are for cgroup mode, the default wherever a cgroup v2
    %% hierarchy is writable (as root): see docs/containment.md.
    %% (`none': a portnode from before containment, run with PORTNODE_EBIN.)
    Mode = maps:get(containment, portnode:info(), none),
    io:format("containment: ~s~s~n", [Mode, case Mode of
                                              cgroup -> "";
                                              none -> " (a portnode from before containment)";
                                              _ -> " (not cgroup: run as root for the mode the targets are for)"
                                          end]),
    process_flag(trap_exit, true),
    Watch = start_watch(),
    Flags = #{strategy => one_for_one, intensity => 100000, period => 1},
    Port = #{id => port_worker, start => {?MODULE, start_port_worker, []}},
    RemotePort = #{id => remote_port_worker, start => {?MODULE, start_port_worker, [portnode]}},
    Service = portnode:service(service, {spawn_executable, ?PROGRAM}, [{args, ["300"]}, {name, bench_service}, {output, ignore}]),
    Program = #{id => program, start => {{spawn_executable, ?PROGRAM}, [{args, ["300"]}]}},
    Cases = [{"plain port in a gen_server, Erlang supervisor", fun() -> by_name(Watch, Flags, Port, bench_port) end,
              {"anchor", fun(_) -> "-" end}},
             {"portnode:service, Erlang supervisor", fun() -> by_name(Watch, Flags, Service, bench_service) end,
              {"<= 1.0x", fun(R) -> met(Mode, R =< 1.0) end}},
             {"portnode:open_port in the anchor's gen_server, Erlang supervisor", fun() -> by_name(Watch, Flags, RemotePort, bench_remote_port) end,
              {"diagnostic", fun(_) -> "-" end}},
             {"portnode:supervisor child", fun() -> in_portnode(Watch, Flags, Program) end,
              {"<= 0.6x", fun(R) -> met(Mode, R =< 0.6) end}},
             {"floor: the parent restarts it alone (restart_floor)", fun() -> floor(Watch, Mode) end,
              {"floor", fun(_) -> "-" end}}],
    Rows = try
               [begin
                    io:format("~s ...~n", [Name]),
                    {Name, Fun(), Target}
                end || {Name, Fun, Target} <- Cases, selected(Name, Words)]
           after
               try erlang:port_close(Watch) catch _:_ -> ok end,
               application:stop(portnode)
           end,
    [{_, {AnchorFork, AnchorExec, _}, _} | _] = Rows,
    io:format("~n| restart after kill -9 (~b kills each; kernel timestamps; ~s mode) | to fork: median ms | mean | p99 | to exec: median ms | median vs plain port (fork, exec) | target (to fork, cgroup mode) |~n|---|---|---|---|---|---|---|~n", [?KILLS, Mode]),
    [io:format("| ~s | ~.3f | ~.3f | ~.3f | ~.3f | ~.2fx, ~.2fx | ~s |~n",
               [N, median(F), mean(F), p99(F), median(E), median(F) / median(AnchorFork), median(E) / median(AnchorExec),
                case T of "anchor" -> T; "floor" -> "(no target: the floor)"; "diagnostic" -> "(no target: the service's port alone)"; _ -> T ++ ": " ++ Met(median(F) / median(AnchorFork)) end])
     || {N, {F, E, _}, {T, Met}} <- Rows],
    io:format("~nThe stopwatch's own cost, per kill (median; it sleeps in recv(2) between events):~n~n| case | CPU us | process events read |~n|---|---|---|~n"),
    [io:format("| ~s | ~.1f | ~b |~n", [N, median(Cpu) / 1000, median(Ev)]) || {N, {_, _, {Cpu, Ev}}, _} <- Rows],
    io:format("~n"),
    ok.

%% The stopwatch, a port of this VM (so a child of erl_child_setup, started before any sample).
start_watch() ->
    Exe = filename:join(os:getenv("BENCH_TMP"), "restart_watch"),
    W = erlang:open_port({spawn_executable, Exe}, [{line, 256}, exit_status]),
    receive
        {W, {data, {eol, "ready"}}} -> W;
        {W, {data, {eol, Error}}} -> error({restart_watch, Error})
    after 5000 -> error({restart_watch, no_answer})
    end.

%% Erlang supervisor, worker registered as `Name': kill its program, time until a new one runs.
by_name(Watch, Flags, Spec, Name) ->
    {ok, Sup} = supervisor:start_link(bench_sup(), Flags#{children => [Spec]}),
    try samples(Watch, fun() -> gen_server:call(Name, os_pid) end)
    after stop(Sup)
    end.

%% A supervisor inside portnode: kill the child's program, time until a new one runs.
in_portnode(Watch, Flags, Spec) ->
    {ok, Sup} = portnode:start_supervisor(Flags, [Spec]),
    try samples(Watch, fun() -> [{program, H, _, _}] = supervisor:which_children(Sup), portnode:os_pid(H) end)
    after stop(Sup)
    end.

%% The floor: restart_floor, a port of this VM, restarts its program
%% itself, in leaf cgroups of a directory of its own in cgroup mode.
floor(Watch, Mode) ->
    Exe = filename:join(os:getenv("BENCH_TMP"), "restart_floor"),
    Dir = case Mode of cgroup -> floor_cgroup(); _ -> none end,
    P = erlang:open_port({spawn_executable, Exe}, [{line, 256}, exit_status, {args, [Dir || Dir =/= none]}]),
    try samples(Watch, fun() -> latest_pid(P, undefined) end)
    after
        %% Its stdin closed, it kills its program and removes its leaves.
        try erlang:port_close(P) catch _:_ -> ok end,
        [remove_floor_cgroup(Dir, erlang:monotonic_time(millisecond) + 5000) || Dir =/= none]
    end.

%% A cgroup v2 directory below the VM's own, as portnode places its
%% subtree (the VM runs in the root cgroup here, as root).
floor_cgroup() ->
    {ok, Mounts} = file:read_file("/proc/self/mountinfo"),
    [Mount | _] = [binary_to_list(lists:nth(5, binary:split(L, <<" ">>, [global])))
                   || L <- binary:split(Mounts, <<"\n">>, [global]), binary:match(L, <<" - cgroup2 ">>) =/= nomatch],
    {ok, Own} = file:read_file("/proc/self/cgroup"),
    [Path] = [binary_to_list(P) || <<"0::", P/binary>> <- binary:split(Own, <<"\n">>, [global])],
    Dir = filename:join([Mount ++ "/" ++ string:trim(Path, both, "/"), "restart-floor-" ++ os:getpid()]),
    ok = case file:make_dir(Dir) of ok -> ok; {error, eexist} -> ok; Error -> Error end,
    Dir.

%% Removes the floor's directory once its leaves are gone (it removes them
%% as it ends, or they are removed here if it could not).
remove_floor_cgroup(Dir, Deadline) ->
    Leaves = [L || L <- [filename:join(Dir, "floor0"), filename:join(Dir, "floor1")], filelib:is_dir(L)],
    Late = erlang:monotonic_time(millisecond) > Deadline,
    case Leaves of
        [] ->
            ok = file:del_dir(Dir);
        _ when Late ->
            [file:del_dir(L) || L <- Leaves],
            case file:del_dir(Dir) of
                ok -> ok;
                Error -> io:format("cannot remove ~s: ~p~n", [Dir, Error])
            end;
        _ ->
            timer:sleep(20),
            remove_floor_cgroup(Dir, Deadline)
    end.

%% The last pid restart_floor printed (it prints each program's), or the
%% one before if none is new; `{floor_failed, Why}' if it failed.
latest_pid(P, Last) ->
    receive
        {P, {data, {eol, "error " ++ Why}}} -> {floor_failed, Why};
        {P, {exit_status, Status}} -> {floor_failed, {exit_status, Status}};
        {P, {data, {eol, Pid}}} -> latest_pid(P, list_to_integer(Pid))
    after 0 ->
        case Last of
            undefined -> get({floor_pid, P});
            _ -> put({floor_pid, P}, Last), Last
        end
    end.

%% ms to the fork and to the exec, and the stopwatch's {CPU ns, events} per sample.
samples(Watch, OsPid) ->
    {_, Samples} = lists:foldl(fun(_, {Last, Acc}) ->
                                       Pid = wait_os_pid(OsPid, Last),
                                       {Pid, [time_restart(Watch, Pid) | Acc]}
                               end, {none, []}, lists:seq(1, ?KILLS)),
    {[F / 1.0e6 || {F, _, _, _} <- Samples], [E / 1.0e6 || {_, E, _, _} <- Samples],
     {[C || {_, _, C, _} <- Samples], [V || {_, _, _, V} <- Samples]}}.

%% The stopwatch kills `OsPid' and times its parent's next fork and exec.
time_restart(Watch, OsPid) ->
    true = erlang:port_command(Watch, [integer_to_list(OsPid), "\n"]),
    receive
        {Watch, {data, {eol, "ok " ++ Times}}} ->
            [F, E, C, V] = [list_to_integer(T) || T <- string:lexemes(Times, " ")],
            {F, E, C, V};
        {Watch, {data, {eol, Error}}} -> error({restart_watch, OsPid, Error})
    after 15000 -> error({restart_watch, OsPid, no_answer})
    end.

%% The worker's program, once the worker is back and answers with a new one.
wait_os_pid(Fun, Last) ->
    case try Fun() catch _:_ -> failed end of
        OsPid when is_integer(OsPid), OsPid =/= Last -> OsPid;
        {floor_failed, Why} -> error({restart_floor, Why});
        _ -> timer:sleep(1), wait_os_pid(Fun, Last)
    end.

stop(Sup) ->
    unlink(Sup),
    exit(Sup, shutdown),
    Ref = monitor(process, Sup),
    receive {'DOWN', Ref, _, _, _} -> ok end.

met(cgroup, true) -> "met";
met(cgroup, false) -> "**NOT met**";
met(_, _) -> "not measured (not cgroup mode)".

%% The anchor always runs; the other rows only if a word names them (all
%% without words): `bench/run restart service'.
selected("plain port" ++ _, _) -> true;
selected(_, []) -> true;
selected(Name, Words) -> lists:any(fun(W) -> string:find(Name, W) =/= nomatch end, Words).

median(S) -> lists:nth((length(S) + 1) div 2, lists:sort(S)).
mean(S) -> lists:sum(S) / length(S).
p99(S) -> lists:nth(max(1, round(length(S) * 0.99)), lists:sort(S)).

%% A plain Erlang supervisor: the flags map carries the children.
bench_sup() -> erlang_sup.

%%% The anchor's worker

%% @private
start_port_worker() ->
    gen_server:start_link({local, bench_port}, ?MODULE, erlang, []).

%% @private
%% The same worker with a remote port: `portnode:open_port/2' for
%% `erlang:open_port/2', and nothing else changed.
start_port_worker(portnode) ->
    gen_server:start_link({local, bench_remote_port}, ?MODULE, portnode, []).

%% @private
init(erlang) ->
    process_flag(trap_exit, true),
    {ok, erlang:open_port({spawn_executable, ?PROGRAM}, [{args, ["300"]}, exit_status])};
init(portnode) ->
    process_flag(trap_exit, true),
    {ok, portnode:open_port({spawn_executable, ?PROGRAM}, [{args, ["300"]}, exit_status])}.

%% @private
handle_call(os_pid, _From, Port) when is_port(Port) ->
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    {reply, OsPid, Port};
handle_call(os_pid, _From, Handle) ->
    {reply, portnode:os_pid(Handle), Handle}.

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
%% orphan problem portnode solves): the anchor stops its own program. A
%% remote port's program goes with its owner.
terminate(_Reason, Handle) when is_pid(Handle) ->
    ok;
terminate(_Reason, Port) ->
    case erlang:port_info(Port, os_pid) of
        {os_pid, OsPid} -> os:cmd("kill -9 " ++ integer_to_list(OsPid));
        undefined -> ok
    end.
