%% @doc Property-based tests (PropEr): random payloads and chunking give the
%% same messages through a portnode handle as through a port.
-module(port_framing_prop_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
%% PropEr's macros are spelled out as its functions (forall, bind): rebar3
%% does not resolve include_lib for a library that is only used in tests.
-import(proper_types, [range/2, binary/1, list/1, oneof/1]).

-compile([export_all, nowarn_export_all]).

all() -> [packets_round_trip_through_cat, lines_from_random_text].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(portnode),
    Config.

end_per_suite(_Config) ->
    application:stop(portnode).

%% @doc Random frames, sent with {packet, N} to cat, come back as the same frames.
packets_round_trip_through_cat(_) ->
    ?assert(proper:quickcheck(prop_packets(), [{numtests, 40}, {to_file, user}])).

prop_packets() ->
    proper:forall(proper_types:bind(oneof([1, 2, 4]), fun(N) -> {N, list(frame(N))} end, false),
            fun({N, Frames}) ->
                Run = fun(Impl) ->
                          P = Impl:open_port({spawn_executable, "/bin/cat"}, [{packet, N}, binary]),
                          [P ! {self(), {command, F}} || F <- Frames],
                          Got = [receive {P, {data, D}} -> D after 5000 -> timeout end || _ <- Frames],
                          Impl:port_close(P),
                          Got
                      end,
                Port = Run(erlang),
                Handle = Run(portnode),
                Port =:= Frames andalso Handle =:= Frames
            end).

frame(1) -> sized_binary(range(0, 255));
frame(2) -> sized_binary(oneof([range(0, 300), range(65000, 65535)]));
frame(4) -> sized_binary(oneof([range(0, 300), range(100000, 300000)])).

sized_binary(Size) -> proper_types:bind(Size, fun(S) -> binary(S) end, false).

%% @doc Random text in {line, L} mode: the same eol/noeol messages as a port.
lines_from_random_text(Config) ->
    Dir = ?config(priv_dir, Config),
    ?assert(proper:quickcheck(prop_lines(Dir), [{numtests, 40}, {to_file, user}])).

prop_lines(Dir) ->
    proper:forall({range(1, 40), list(oneof([$\n, $a, $b, $\s, 255]))},
            fun({L, Text}) ->
                File = filename:join(Dir, "lines.txt"),
                ok = file:write_file(File, Text),
                Run = fun(Impl) ->
                          P = Impl:open_port({spawn_executable, "/bin/cat"},
                                             [{args, [File]}, {line, L}, binary, exit_status]),
                          collect(P)
                      end,
                Run(erlang) =:= Run(portnode)
            end).

collect(P) ->
    receive
        {P, {exit_status, _} = M} -> [M | rest(P)];
        {P, M} -> [M | collect(P)]
    after 5000 -> [timeout]
    end.

%% After the exit status, a port can still deliver an unterminated last line.
rest(P) ->
    receive {P, M} -> [M | rest(P)] after 100 -> [] end.
