%% @doc Churn soak (not a test): 10,000 open/exit cycles of a program and
%% 1,000 connect/disconnect cycles of a peer VM (each opening a program that
%% the disconnect must stop), against a bridge-launched portnode. Prints
%% portnode's fd count, RSS, thread count and zombie descendants at the start
%% (after a warm-up) and at the end, and whether each is within 5%.
%% Run with `bench/run soak' (`bench/run soak 1000 100' for a short run).
-module(soak_bench).

-export([main/1]).

%% @doc Prints the table; halts with status 1 if a figure is not flat.
-spec main([string()]) -> ok.
main(Args) ->
    {Programs, Peers} = case Args of
                            [P, C] -> {list_to_integer(P), list_to_integer(C)};
                            [] -> {10000, 1000}
                        end,
    logger:set_primary_config(level, critical),
    {ok, _} = application:ensure_all_started(portnode),
    Pn = portnode:node(),
    PnPid = gen_server:call(portnode_bridge, os_pid),
    Dirs = [filename:dirname(code:which(portnode)), filename:dirname(code:which(?MODULE))],
    {ok, Peer, PeerNode} = peer:start(#{name => peer:random_name(soak), args => lists:append([["-pa", D] || D <- Dirs])}),
    %% Warm-up: allocators, thread pools and tables reach their working size.
    programs(Pn, 200),
    peers(PeerNode, Pn, 20),
    settle(PnPid),
    Start = sample(PnPid),
    T0 = erlang:monotonic_time(millisecond),
    programs(Pn, Programs),
    T1 = erlang:monotonic_time(millisecond),
    peers(PeerNode, Pn, Peers),
    T2 = erlang:monotonic_time(millisecond),
    settle(PnPid),
    End = sample(PnPid),
    peer:stop(Peer),
    io:format("~n~b program open/exit cycles in ~.1f s; ~b peer connect/disconnect cycles in ~.1f s~n~n",
              [Programs, (T1 - T0) / 1000, Peers, (T2 - T1) / 1000]),
    io:format("| portnode | start | end | change | within 5% |~n|---|---|---|---|---|~n"),
    Flat = [row(Name, maps:get(K, Start), maps:get(K, End)) || {K, Name} <- [{fds, "open fds"}, {rss_kb, "RSS (KiB)"},
                                                                              {threads, "threads"}, {zombies, "zombie descendants"},
                                                                              {children, "live descendants"},
                                                                              {spawner_fds, "spawner's open fds"}, {spawner_rss_kb, "spawner's RSS (KiB)"}]],
    io:format("~n"),
    ok = application:stop(portnode),
    case lists:all(fun(F) -> F end, Flat) of
        true -> ok;
        false -> io:format("NOT FLAT~n"), halt(1)
    end.

row(Name, A, B) ->
    Ok = B =< A orelse (B - A) =< 0.05 * max(A, 1),
    Sign = fun(X) when X >= 0 -> "+"; (_) -> "" end,
    Change = case A of
                 0 -> io_lib:format("~s~b", [Sign(B - A), B - A]);
                 _ -> Pct = 100 * (B - A) / A, io_lib:format("~s~.1f%", [Sign(Pct), Pct])
             end,
    io:format("| ~s | ~b | ~b | ~s | ~s |~n", [Name, A, B, Change, case Ok of true -> "yes"; false -> "NO" end]),
    Ok.

%% `N' programs, one after another: open, wait for the exit status.
programs(Pn, N) ->
    lists:foreach(fun(_) ->
                          H = portnode:open_port(Pn, {spawn_executable, "/bin/true"}, [exit_status]),
                          receive {H, {exit_status, 0}} -> ok after 10000 -> error({no_exit, H}) end
                  end, lists:seq(1, N)).

%% `N' times, the peer VM connects to portnode, opens a long-running
%% program, and disconnects: portnode must stop the program.
peers(PeerNode, Pn, N) ->
    %% The handle is linked to the caller: trap the noconnection of each disconnect.
    ok = erpc:call(PeerNode, fun() -> process_flag(trap_exit, true), peer_cycles(Pn, N) end, 600000).

peer_cycles(_Pn, 0) ->
    ok;
peer_cycles(Pn, N) ->
    pong = net_adm:ping(Pn),
    _H = portnode:open_port(Pn, {spawn_executable, "/bin/sleep"}, [{args, ["300"]}]),
    true = erlang:disconnect_node(Pn),
    wait_gone(Pn),
    receive {'EXIT', _, noconnection} -> ok after 5000 -> error(no_noconnection) end,
    peer_cycles(Pn, N - 1).

wait_gone(Pn) ->
    case lists:member(Pn, nodes(hidden)) of
        true -> timer:sleep(1), wait_gone(Pn);
        false -> ok
    end.

%% Waits until portnode has no live descendants but its watchdog and its
%% spawner (the peer's programs are being stopped), then a second more.
settle(PnPid) ->
    settle(PnPid, 100).
settle(_PnPid, 0) ->
    ok;
settle(PnPid, Tries) ->
    case maps:get(children, sample(PnPid)) of
        C when C =< 2 -> timer:sleep(1000);
        _ -> timer:sleep(100), settle(PnPid, Tries - 1)
    end.

sample(Pid) ->
    P = "/proc/" ++ integer_to_list(Pid),
    {ok, Fds} = file:list_dir(P ++ "/fd"),
    {ok, Status} = file:read_file(P ++ "/status"),
    Field = fun(Name) ->
                    {match, [V]} = re:run(Status, "\\n" ++ Name ++ ":\\s+(\\d+)", [{capture, all_but_first, list}]),
                    list_to_integer(V)
            end,
    Kids = children(Pid),
    [Spawner] = [K || {K, _} <- Kids, os_proc:comm(K) =:= "portnode-spawn"],
    #{spawner_fds := SpFds, rss_kb := SpRss} = proc_sample(Spawner),
    #{fds => length(Fds), rss_kb => Field("VmRSS"), threads => Field("Threads"),
      zombies => length([K || {K, "Z"} <- Kids]), children => length([K || {K, S} <- Kids, S =/= "Z"]),
      spawner_fds => SpFds, spawner_rss_kb => SpRss}.

%% The spawner's fd count and RSS.
proc_sample(Pid) ->
    P = "/proc/" ++ integer_to_list(Pid),
    {ok, Fds} = file:list_dir(P ++ "/fd"),
    {ok, Status} = file:read_file(P ++ "/status"),
    {match, [V]} = re:run(Status, "\\nVmRSS:\\s+(\\d+)", [{capture, all_but_first, list}]),
    #{spawner_fds => length(Fds), rss_kb => list_to_integer(V)}.


%% {OsPid, State} of every descendant of `Pid' (its watchdog and spawner,
%% and the spawner's children, the programs).
children(Pid) ->
    {ok, Procs} = file:list_dir("/proc"),
    Rows = lists:filtermap(fun(Name) ->
                                   case try list_to_integer(Name) catch error:badarg -> not_a_pid end of
                                       K when is_integer(K) ->
                                           case file:read_file("/proc/" ++ Name ++ "/stat") of
                                               {ok, Stat} ->
                                                   [_, Rest] = string:split(Stat, ")", trailing),
                                                   [State, PPid | _] = string:lexemes(binary_to_list(Rest), " "),
                                                   {true, {K, list_to_integer(PPid), State}};
                                               _ -> false
                                           end;
                                       _ -> false
                                   end
                           end, Procs),
    descendants([Pid], Rows, []).

descendants([], _Rows, Acc) -> Acc;
descendants([P | Rest], Rows, Acc) ->
    Kids = [{K, S} || {K, PP, S} <- Rows, PP =:= P],
    descendants(Rest ++ [K || {K, _} <- Kids], Rows, Kids ++ Acc).
