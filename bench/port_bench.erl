%% @doc Benchmark: each case through `erlang:open_port' (the anchor) and
%% through `portnode:open_port', in the same run. Run with `bench/run port'.
-module(port_bench).

-export([main/1]).

%% @doc Prints the table. Args: words that select cases by name (none: all).
-spec main([string()]) -> ok.
main(Args) ->
    {ok, _} = application:ensure_all_started(portnode),
    process_flag(trap_exit, true),
    %% First, on a fresh node: later cases leave freed memory behind that new programs reuse.
    Mem = memory_per_program(),
    Cases = [{"spawn /bin/true to exit_status (ms, lower is better)", fun spawn_to_exit/1, lower},
             {"stdout stream, 1 GiB from head -c (GB/s, higher is better)", fun stream/1, higher},
             {"packet-4 echo round trip through cat (us, lower is better)", fun echo/1, lower},
             {"line mode, 2M lines from seq (lines/s, higher is better)", fun lines/1, higher},
             {"start 5000 programs held open (s, lower is better)", fun start_many/1, lower}],
    Only = fun(Name) -> Args =:= [] orelse lists:any(fun(A) -> string:find(Name, A) =/= nomatch end, Args) end,
    Rows = [begin
                io:format("~s ...~n", [Name]),
                Port = best(fun() -> Fun(erlang) end, Better),
                Handle = best(fun() -> Fun(portnode) end, Better),
                {Name, Port, Handle}
            end || {Name, Fun, Better} <- Cases, Only(Name)],
    io:format("~n| case | erlang:open_port | portnode:open_port | ratio (portnode / port) |~n|---|---|---|---|~n"),
    [io:format("| ~s | ~s | ~s | ~.2fx |~n", [N, fmt(P), fmt(H), H / P]) || {N, P, H} <- Rows],
    io:format("| memory per program held open (KiB: VM delta for ports, portnode RSS delta for handles) | ~.1f | ~.1f | ~.2fx |~n~n",
              [element(1, Mem), element(2, Mem), element(2, Mem) / element(1, Mem)]),
    Mode = maps:get(containment, portnode:info()),
    ok = application:stop(portnode),
    containment(Mode, Only).

%% The cases containment changes, with portnode in each mode, beside erts.
containment(FirstMode, Only) ->
    Cases = [{"spawn /bin/true to exit_status (ms, lower is better)", fun spawn_to_exit/1},
             {"close to gone: 3-process tree, one setsid (ms, lower is better)", fun close_to_gone/1}],
    Selected = [C || {Name, _} = C <- Cases, Only(Name)],
    Selected =/= [] andalso begin
        {ok, _} = application:ensure_all_started(portnode),
        Erts = [{Name, best(fun() -> Fun(erlang) end, lower)} || {Name, Fun} <- Selected],
        PnFirst = [best(fun() -> Fun(portnode) end, lower) || {_, Fun} <- Selected],
        ok = application:stop(portnode),
        application:set_env(portnode, cgroup, off),
        {ok, _} = application:ensure_all_started(portnode),
        process_group = maps:get(containment, portnode:info()),
        PnGroup = [best(fun() -> Fun(portnode) end, lower) || {_, Fun} <- Selected],
        ok = application:stop(portnode),
        io:format("| case (containment: ~s, then process_group) | erlang:open_port | portnode, ~s | portnode, process_group | ratios to erts |~n|---|---|---|---|---|~n",
                  [FirstMode, FirstMode]),
        [io:format("| ~s | ~s | ~s | ~s | ~s, ~s |~n", [N, fmt_gone(E), fmt_gone(C), fmt_gone(G), ratio(C, E), ratio(G, E)])
         || {{N, E}, C, G} <- lists:zip3(Erts, PnFirst, PnGroup)],
        io:format("~n")
    end,
    ok.

fmt_gone({left_running, N}) -> io_lib:format("never: ~b of 3 left running", [N]);
fmt_gone(X) -> fmt(X).

ratio(X, Y) when is_number(X), is_number(Y) -> io_lib:format("~.2fx", [X / Y]);
ratio(_, _) -> "-".

%% ms from port_close until the leader, a child in its group and a setsid
%% child have all gone (polled every 0.2 ms through /proc). erts leaves
%% them running: then `{left_running, N}' after 2 s, and they are killed.
close_to_gone(Impl) ->
    Runs = [close_to_gone_once(Impl) || _ <- lists:seq(1, 20)],
    case [R || R <- Runs, is_number(R)] of
        Runs -> lists:sum(Runs) / length(Runs);
        _ -> hd([R || R <- Runs, not is_number(R)])
    end.

close_to_gone_once(Impl) ->
    Script = "sleep 1000 & echo $!; setsid sleep 1000 & echo $!; exec sleep 2000",
    P = open(Impl, {spawn_executable, "/bin/sh"}, [{args, ["-c", Script]}, {line, 80}]),
    Kids = [receive {P, {data, {eol, L}}} -> list_to_integer(L) end || _ <- [1, 2]],
    {os_pid, Leader} = case Impl of erlang -> erlang:port_info(P, os_pid); portnode -> portnode:port_info(P, os_pid) end,
    All = [Leader | Kids],
    T0 = erlang:monotonic_time(microsecond),
    close(Impl, P),
    case wait_gone(All, T0 + 2000000) of
        ok ->
            (erlang:monotonic_time(microsecond) - T0) / 1000;
        {left, Left} ->
            [os:cmd("kill -9 " ++ integer_to_list(Pid)) || Pid <- Left],
            drain(),
            {left_running, length(Left)}
    end.

wait_gone(Pids, Deadline) ->
    case [P || P <- Pids, running(P)] of
        [] -> ok;
        Left ->
            case erlang:monotonic_time(microsecond) > Deadline of
                true -> {left, Left};
                false -> receive after 0 -> ok end, busy_wait(200), wait_gone(Left, Deadline)
            end
    end.

busy_wait(Us) ->
    End = erlang:monotonic_time(microsecond) + Us,
    busy_until(End).

busy_until(End) ->
    case erlang:monotonic_time(microsecond) >= End of
        true -> ok;
        false -> busy_until(End)
    end.

%% Not gone: the process exists and is not a zombie.
running(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat") of
        {ok, Stat} ->
            [_, After] = string:split(Stat, ")", trailing),
            not lists:member(hd(string:trim(binary_to_list(After), leading)), "ZX");
        {error, _} ->
            false
    end.

best(Fun, Better) ->
    Runs = [Fun() || _ <- lists:seq(1, 3)],
    case Better of lower -> lists:min(Runs); higher -> lists:max(Runs) end.

fmt(X) when X >= 1000 -> io_lib:format("~s", [thousands(X)]);
fmt(X) -> io_lib:format("~.3f", [X]).

thousands(X) when X >= 1000000 -> io_lib:format("~.2fM", [X / 1000000]);
thousands(X) -> io_lib:format("~.1fk", [X / 1000]).

open(erlang, Name, Settings) -> erlang:open_port(Name, Settings);
open(portnode, Name, Settings) -> portnode:open_port(Name, Settings).

close(erlang, P) -> catch erlang:port_close(P);
close(portnode, P) -> catch portnode:port_close(P).

%% Average ms from open_port to {exit_status, 0} for /bin/true.
spawn_to_exit(Impl) ->
    N = 300,
    T0 = erlang:monotonic_time(microsecond),
    [begin
         P = open(Impl, {spawn_executable, "/bin/true"}, [exit_status]),
         receive {P, {exit_status, 0}} -> ok end,
         receive {'EXIT', P, _} -> ok after 0 -> ok end
     end || _ <- lists:seq(1, N)],
    (erlang:monotonic_time(microsecond) - T0) / N / 1000.

%% GB/s reading 1 GiB of stream output.
stream(Impl) ->
    Bytes = 1 bsl 30,
    T0 = erlang:monotonic_time(microsecond),
    P = open(Impl, {spawn, "head -c " ++ integer_to_list(Bytes) ++ " /dev/zero"}, [binary, stream, exit_status]),
    Bytes = count_bytes(P, 0),
    Bytes / (erlang:monotonic_time(microsecond) - T0) / 1000.

count_bytes(P, N) ->
    receive
        {P, {data, D}} -> count_bytes(P, N + byte_size(D));
        {P, {exit_status, 0}} -> N
    end.

%% us per {packet, 4} round trip of 64 bytes through cat.
echo(Impl) ->
    N = 20000,
    P = open(Impl, {spawn_executable, "/bin/cat"}, [{packet, 4}, binary]),
    Msg = binary:copy(<<"x">>, 64),
    P ! {self(), {command, Msg}},
    receive {P, {data, Msg}} -> ok end,
    T0 = erlang:monotonic_time(microsecond),
    [begin P ! {self(), {command, Msg}}, receive {P, {data, Msg}} -> ok end end || _ <- lists:seq(1, N)],
    Us = (erlang:monotonic_time(microsecond) - T0) / N,
    close(Impl, P),
    Us.

%% Lines per second in {line, 80} mode.
lines(Impl) ->
    N = 2000000,
    T0 = erlang:monotonic_time(microsecond),
    P = open(Impl, {spawn_executable, "/usr/bin/seq"}, [{args, ["1", integer_to_list(N)]}, {line, 80}, binary, exit_status]),
    N = count_lines(P, 0),
    N / ((erlang:monotonic_time(microsecond) - T0) / 1000000).

count_lines(P, N) ->
    receive
        {P, {data, {eol, _}}} -> count_lines(P, N + 1);
        {P, {exit_status, 0}} -> N
    end.

%% Seconds to start 5000 cat programs (each holds open until closed).
start_many(Impl) ->
    {S, Ps} = start_n(Impl, 5000),
    [close(Impl, P) || P <- Ps],
    drain(),
    S.

start_n(Impl, N) ->
    T0 = erlang:monotonic_time(microsecond),
    Ps = [open(Impl, {spawn_executable, "/bin/cat"}, [binary]) || _ <- lists:seq(1, N)],
    {(erlang:monotonic_time(microsecond) - T0) / 1000000, Ps}.

%% KiB per program held open: the VM's memory delta for ports, portnode's RSS delta for handles.
memory_per_program() ->
    N = 5000,
    drain(),
    VmBefore = erlang:memory(total),
    {_, Ports} = start_n(erlang, N),
    VmPer = (erlang:memory(total) - VmBefore) / N / 1024,
    [close(erlang, P) || P <- Ports],
    PnPid = gen_server:call(portnode_bridge, os_pid),
    RssBefore = rss_kib(PnPid),
    {_, Handles} = start_n(portnode, N),
    PnPer = (rss_kib(PnPid) - RssBefore) / N,
    [close(portnode, H) || H <- Handles],
    drain(),
    {VmPer, PnPer}.

rss_kib(OsPid) ->
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]), binary:match(L, <<"VmRSS">>) =/= nomatch],
    [_, Kib | _] = string:lexemes(binary_to_list(Line), " \t"),
    list_to_integer(Kib).

drain() ->
    receive _ -> drain() after 300 -> ok end.
