%% @doc Benchmark: message round trip and one-way rate between an Erlang
%% process and a process on portnode, beside the same against a second
%% Erlang node (erl <-> erl), in one run. Run with `bench/run dist'.
-module(dist_bench).

-export([main/1, counter/0]).

-define(ROUNDS, 5).

%% @doc Prints the table. Args: [RoundTrips, OneWayMessages].
-spec main([string()]) -> ok.
main(Args) ->
    [Calls, Casts] = case Args of [] -> [20000, 200000]; _ -> [list_to_integer(A) || A <- Args] end,
    {ok, _} = application:ensure_all_started(portnode),
    PN = portnode:node(),
    {ok, Peer, ErlNode} = peer:start_link(#{name => peer:random_name(dist_bench),
                                           args => ["-pa", filename:dirname(code:which(?MODULE))]}),
    true = is_pid(erpc:call(ErlNode, erlang, whereis, [kernel_sup])),
    ErlCounter = erpc:call(ErlNode, erlang, spawn, [?MODULE, counter, []]),
    true = erpc:call(ErlNode, erlang, register, [bench_counter, ErlCounter]),
    Targets = [{"erl <-> erl", {bench_counter, ErlNode}}, {"portnode", {portnode, PN}}],
    io:format("~nround trip: gen_server:call, ~b calls x ~b rounds (best round)~n", [Calls, ?ROUNDS]),
    RTT = [{Name, best(fun() -> round_trip(T, Calls) end, min)} || {Name, T} <- Targets],
    io:format("one-way: ~b casts then one call, x ~b rounds (best round)~n", [Casts, ?ROUNDS]),
    Rate = [{Name, best(fun() -> one_way(T, Casts) end, max)} || {Name, T} <- Targets],
    [{_, ErlRTT}, {_, PnRTT}] = RTT,
    [{_, ErlRate}, {_, PnRate}] = Rate,
    io:format("~n| case | erl <-> erl | portnode | ratio (portnode / erl) |~n"
              "|---|---|---|---|~n"
              "| round trip (us, lower is better) | ~.1f | ~.1f | ~.2fx |~n"
              "| one-way (msgs/s, higher is better) | ~s | ~s | ~.2fx |~n~n",
              [ErlRTT, PnRTT, PnRTT / ErlRTT, thousands(ErlRate), thousands(PnRate), PnRate / ErlRate]),
    peer:stop(Peer),
    ok = application:stop(portnode).

%% @doc A registered process on the Erlang peer that behaves like portnode's control server.
-spec counter() -> no_return().
counter() -> counter(0).
counter(N) ->
    receive
        {'$gen_call', {From, Tag}, ping} -> From ! {Tag, pong}, counter(N);
        {'$gen_call', {From, Tag}, cast_count} -> From ! {Tag, N}, counter(N);
        {'$gen_cast', _} -> counter(N + 1)
    end.

round_trip(Target, N) ->
    pong = gen_server:call(Target, ping),
    T0 = erlang:monotonic_time(microsecond),
    [pong = gen_server:call(Target, ping) || _ <- lists:seq(1, N)],
    (erlang:monotonic_time(microsecond) - T0) / N.

one_way(Target, N) ->
    Before = gen_server:call(Target, cast_count),
    T0 = erlang:monotonic_time(microsecond),
    cast(Target, N),
    After = gen_server:call(Target, cast_count, 60000),
    Us = erlang:monotonic_time(microsecond) - T0,
    N = After - Before,
    N * 1000000 / Us.

cast(_Target, 0) -> ok;
cast(Target, N) -> gen_server:cast(Target, {n, N}), cast(Target, N - 1).

best(Fun, Pick) ->
    lists:Pick([Fun() || _ <- lists:seq(1, ?ROUNDS)]).

thousands(X) ->
    integer_to_list(round(X / 1000)) ++ "k".
