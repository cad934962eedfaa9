%% @doc Where portnode's memory per held program goes: run with
%% `bench/memory [N]' (not through bench/run: it launches a portnode built
%% with line tables under heaptrack). Holds N cat programs open through
%% `portnode:open_port', and prints portnode's memory before and while
%% they are held (from /proc/PID/smaps_rollup and /proc/PID/status), per
%% program, and its spawner's; bench/memory then prints heaptrack's allocation sites.
-module(memory_bench).

-export([main/1]).

-define(FIELDS, [<<"Rss">>, <<"Anonymous">>, <<"Private_Dirty">>, <<"Pss_Anon">>, <<"Pss_File">>]).

%% @doc Args: [N] (default 5000).
-spec main([string()]) -> ok.
main(Args) ->
    N = case Args of [A] -> list_to_integer(A); [] -> 5000 end,
    {ok, _} = application:ensure_all_started(portnode),
    process_flag(trap_exit, true),
    Wrapper = gen_server:call(portnode_bridge, os_pid),
    ok = file:write_file(filename:join(os:getenv("BENCH_TMP"), "wrapper.pid"), integer_to_list(Wrapper)),
    Pid = portnode_pid(Wrapper),
    %% Warm up: the first program allocates what every later one reuses.
    [portnode:port_close(portnode:open_port({spawn_executable, "/bin/cat"}, [binary])) || _ <- lists:seq(1, 20)],
    timer:sleep(1000),
    [Spawner] = [C || C <- os_proc:children(Pid), os_proc:comm(C) =:= "portnode-spawn"],
    Before = [snapshot(P) || P <- [Pid, Spawner]],
    Hs = [portnode:open_port({spawn_executable, "/bin/cat"}, [binary]) || _ <- lists:seq(1, N)],
    %% As bench/run port memory does: each port answers one call.
    _ = [portnode:os_pid(H) || H <- Hs],
    timer:sleep(1000),
    Held = [snapshot(P) || P <- [Pid, Spawner]],
    io:format("portnode os pid ~b, spawner ~b, ~b cat programs held~n", [Pid, Spawner, N]),
    [table(What, B, H, N) || {What, B, H} <- lists:zip3(["portnode", "its spawner"], Before, Held)],
    io:format("~nfds: ~b held, ~b per program~n", [fds(Pid), fds(Pid) div max(1, N)]),
    [portnode:port_close(H) || H <- Hs],
    timer:sleep(2000),
    ok = application:stop(portnode).

table(What, Before, Held, N) ->
    io:format("~n~s:~n~n| field | before (KiB) | held (KiB) | per program (bytes) |~n|---|---|---|---|~n", [What]),
    [io:format("| ~s | ~b | ~b | ~b |~n", [F, maps:get(F, Before), maps:get(F, Held), round((maps:get(F, Held) - maps:get(F, Before)) * 1024 / N)])
     || F <- ?FIELDS ++ [<<"VmRSS">>, <<"RssAnon">>, <<"VmData">>, <<"VmPTE">>]].

%% portnode itself, or under a wrapper (heaptrack runs it as its child).
portnode_pid(OsPid) ->
    case os_proc:comm(OsPid) of
        "portnode" -> OsPid;
        _ -> hd([C || C <- os_proc:children(OsPid), os_proc:comm(C) =:= "portnode"] ++ [OsPid])
    end.

snapshot(Pid) ->
    P = integer_to_list(Pid),
    {ok, Rollup} = file:read_file("/proc/" ++ P ++ "/smaps_rollup"),
    {ok, Status} = file:read_file("/proc/" ++ P ++ "/status"),
    maps:from_list([{K, binary_to_integer(V)}
                    || L <- binary:split(<<Rollup/binary, Status/binary>>, <<"\n">>, [global]),
                       [K, Rest] <- [binary:split(L, <<":">>)],
                       [V, <<"kB">>] <- [string:lexemes(Rest, " \t")]]).

fds(Pid) ->
    {ok, Fds} = file:list_dir("/proc/" ++ integer_to_list(Pid) ++ "/fd"),
    length(Fds).

