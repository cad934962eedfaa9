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
    ok = application:stop(portnode).

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
