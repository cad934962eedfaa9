%% @doc Benchmark: where the CPU of a burst of opens goes, process by
%% process. N sequential opens of `/bin/cat' (as the "start 5,000" row of
%% `bench/run port' makes them), through `erlang:open_port' and through
%% `portnode:open_port' in turn, three rounds. For each burst it prints the
%% CPU per open of the VM, of `erl_child_setup' or of portnode and its
%% spawner, and of each program's own start (from its clone to its first
%% wait on stdin, read 1.5 s after the burst), and how idle the cores were
%% meanwhile: so that a side that takes longer with the same CPU shows as
%% idle time, not as work (see docs/performance.md, issue 22's twelfth
%% round). Run with `bench/run opens [N]' (N = 5000 by default).
-module(opens_bench).

-export([main/1]).

-define(N, 5000).
-define(ROUNDS, 3).
-define(PROGRAM, "/bin/cat").

%% @doc Prints a row per burst, then the median per side.
-spec main([string()]) -> ok.
main(Args) ->
    N = case Args of
            [A | _] -> list_to_integer(A);
            [] -> ?N
        end,
    {ok, _} = application:ensure_all_started(portnode),
    process_flag(trap_exit, true),
    Vm = list_to_integer(os:getpid()),
    [Setup] = [P || P <- os_proc:children(Vm), os_proc:comm(P) =:= "erl_child_setup"],
    [Portnode] = [P || P <- os_proc:children(Setup), os_proc:comm(P) =:= "portnode"],
    Spawner = [P || P <- os_proc:children(Portnode), os_proc:comm(P) =:= "portnode-spawn"],
    Watched = #{vm => [Vm], child_setup => [Setup], portnode => [Portnode], spawner => Spawner},
    io:format("~b sequential opens of ~s a burst, ~b rounds, each side in turn; us of CPU per open~n~n"
              "| side | took (s) | us per open | VM | erl_child_setup | portnode | its spawner | each program's start | total | cores idle |~n"
              "|---|---|---|---|---|---|---|---|---|---|~n", [N, ?PROGRAM, ?ROUNDS]),
    Bursts = [begin
                  B = burst(Side, N, Watched),
                  print(Side, B),
                  {Side, B}
              end || _ <- lists:seq(1, ?ROUNDS), Side <- [erlang, portnode]],
    io:format("~nMedian of the rounds:~n~n| side | took (s) | total CPU per open (us) | cores idle |~n|---|---|---|---|~n"),
    [io:format("| ~s | ~.3f | ~b | ~.1f% |~n",
               [side_name(Side), median([S || {Sd, #{took := S}} <- Bursts, Sd =:= Side]),
                round(median([total(B) || {Sd, B} <- Bursts, Sd =:= Side])),
                median([I || {Sd, #{idle := I}} <- Bursts, Sd =:= Side])])
     || Side <- [erlang, portnode]],
    io:format("~n"),
    ok.

%% One burst: N opens, the CPU they took by process, then every program closed and gone.
burst(Side, N, Watched) ->
    Before = maps:map(fun(_, Pids) -> run_ns(Pids) end, Watched),
    Idle0 = idle_ticks(),
    T0 = erlang:monotonic_time(microsecond),
    Ports = [open(Side) || _ <- lists:seq(1, N)],
    T1 = erlang:monotonic_time(microsecond),
    Idle1 = idle_ticks(),
    After = maps:map(fun(_, Pids) -> run_ns(Pids) end, Watched),
    %% Each program's start: by now it waits on its stdin.
    timer:sleep(1500),
    OsPids = [os_pid(Side, P) || P <- Ports],
    Programs = lists:sum([run_ns([P]) || P <- OsPids, P =/= undefined]),
    [close(Side, P) || P <- Ports],
    wait_gone(OsPids, erlang:monotonic_time(millisecond) + 30000),
    %% The closed ports' and handles' exits: the next burst starts with an empty mailbox.
    drain(),
    PerOpen = fun(K) -> (maps:get(K, After) - maps:get(K, Before)) / 1000 / N end,
    Wall = T1 - T0,
    Cores = erlang:system_info(logical_processors_available),
    #{took => Wall / 1.0e6, per_open => Wall / N,
      vm => PerOpen(vm), child_setup => PerOpen(child_setup), portnode => PerOpen(portnode), spawner => PerOpen(spawner),
      programs => Programs / 1000 / N,
      %% /proc/stat counts in USER_HZ (100 a second here).
      idle => 100 * (Idle1 - Idle0) * 10000 / (Cores * Wall)}.

print(Side, B = #{took := Took, per_open := PerOpen, vm := Vm, child_setup := Setup, portnode := Pn, spawner := Sp,
                  programs := Programs, idle := Idle}) ->
    io:format("| ~s | ~.3f | ~b | ~b | ~s | ~s | ~s | ~b | ~b | ~.1f% |~n",
              [side_name(Side), Took, round(PerOpen), round(Vm), cell(Side, erlang, Setup), cell(Side, portnode, Pn), cell(Side, portnode, Sp),
               round(Programs), round(total(B)), Idle]).

cell(Side, Side, V) -> integer_to_list(round(V));
cell(_, _, _) -> "-".

total(#{vm := Vm, child_setup := Setup, portnode := Pn, spawner := Sp, programs := Programs}) ->
    Vm + Setup + Pn + Sp + Programs.

side_name(erlang) -> "erlang:open_port";
side_name(portnode) -> "portnode:open_port".

open(erlang) -> erlang:open_port({spawn_executable, ?PROGRAM}, [binary]);
open(portnode) -> portnode:open_port({spawn_executable, ?PROGRAM}, [binary]).

os_pid(erlang, P) ->
    case erlang:port_info(P, os_pid) of
        {os_pid, O} -> O;
        undefined -> undefined
    end;
os_pid(portnode, H) ->
    try portnode:os_pid(H) catch _:_ -> undefined end.

close(erlang, P) -> try erlang:port_close(P) catch _:_ -> ok end;
close(portnode, H) -> try portnode:port_close(H) catch _:_ -> ok end.

%% Waits until none of the programs runs (a `cat' ends at the EOF of its stdin).
wait_gone(OsPids, Deadline) ->
    Running = [P || P <- OsPids, P =/= undefined, filelib:is_dir("/proc/" ++ integer_to_list(P))],
    case Running of
        [] -> ok;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error({still_running, length(Running)});
                false -> timer:sleep(50), wait_gone(Running, Deadline)
            end
    end.

%% The time the processes' threads have run, in ns (/proc/<pid>/task/<tid>/schedstat).
run_ns(Pids) ->
    lists:sum([task_ns(Pid) || Pid <- Pids]).

task_ns(Pid) ->
    Dir = "/proc/" ++ integer_to_list(Pid) ++ "/task",
    case file:list_dir(Dir) of
        {ok, Tasks} ->
            lists:sum([case file:read_file(filename:join([Dir, T, "schedstat"])) of
                           {ok, B} -> binary_to_integer(hd(binary:split(B, <<" ">>)));
                           {error, _} -> 0
                       end || T <- Tasks]);
        {error, _} -> 0
    end.

%% The cores' idle time so far, in USER_HZ ticks (the first line of /proc/stat: idle and iowait).
idle_ticks() ->
    {ok, B} = file:read_file("/proc/stat"),
    [Line | _] = binary:split(B, <<"\n">>),
    [_Cpu, _User, _Nice, _System, Idle, IoWait | _] = string:lexemes(binary_to_list(Line), " "),
    list_to_integer(Idle) + list_to_integer(IoWait).

drain() ->
    receive _ -> drain() after 300 -> ok end.

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).
