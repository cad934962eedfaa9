%% @doc A port always answers and its memory stays bounded, whatever the
%% program does with its stdio: it closes stdout, reads nothing (an `out'
%% port), reads slowly, or never reads. The port-loop cases run in both
%% containment modes.
-module(port_flow_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(MiB, (1024 * 1024)).
-define(CHUNK, (64 * 1024)).

all() ->
    [{group, cgroup}, {group, process_group}, {group, back_pressure}].

groups() ->
    Loop = [closed_stdout_port_close_returns, closed_stdout_stop_returns, out_port_data_arrives],
    [{cgroup, [], Loop},
     {process_group, [], Loop},
     {back_pressure, [], [slow_reader_gets_every_byte, late_reader_gets_every_byte, never_reader_blocks_the_sender]}].

init_per_group(Group, Config) ->
    case Group =:= cgroup andalso os:cmd("id -u") =/= "0\n" of
        true -> {skip, "cgroup mode needs root or a delegated cgroup v2 subtree"};
        false -> Config
    end.

end_per_group(_Group, _Config) ->
    ok.

%% Each case gets a fresh portnode, so that its peak RSS is the case's own.
init_per_testcase(_Case, Config) ->
    Mode = case ?config(tc_group_properties, Config) of
               Props when is_list(Props) -> proplists:get_value(name, Props);
               _ -> back_pressure
           end,
    Pn = own_portnode:start("flow", case Mode of process_group -> "off"; _ -> "auto" end),
    [{pn, Pn}, {node, own_portnode:node(Pn)} | Config].

end_per_testcase(_Case, Config) ->
    own_portnode:stop(?config(pn, Config)).

%% @doc A program that closes its stdout (as servers that log to a file
%% do), opened with exit_status: port_close returns at once and the
%% program is gone within its kill timeout.
closed_stdout_port_close_returns(Config) ->
    {H, OsPid} = open_sh(?config(node, Config), "exec >/dev/null; exec sleep 300", [exit_status]),
    ok = os_process:poll(fun() -> os_process:alive(OsPid) end, 2000),
    %% The port answers while its program runs with stdout closed.
    timer:sleep(200),
    {os_pid, OsPid} = portnode:port_info(H, os_pid),
    {Took, true} = timer:tc(fun() -> portnode:port_close(H) end),
    ct:log("port_close returned in ~b us", [Took]),
    ?assert(Took < 1000000),
    ?assertEqual([], os_process:wait_gone([OsPid], 6000)).

%% @doc portnode:stop on such a program returns once it is gone, within its grace.
closed_stdout_stop_returns(Config) ->
    {H, OsPid} = open_sh(?config(node, Config), "exec >/dev/null; trap '' TERM; sleep 300",
                         [exit_status, {kill_timeout, 500}]),
    ok = os_process:poll(fun() -> os_process:alive(OsPid) end, 2000),
    {Took, ok} = timer:tc(fun() -> portnode:stop(H) end),
    ct:log("stop returned in ~b us", [Took]),
    ?assertNot(os_process:alive(OsPid)),
    ?assert(Took < 3000000).

%% @doc An `out' port: what is sent reaches the program, and close works.
out_port_data_arrives(Config) ->
    File = filename:join(?config(priv_dir, Config), "out_port_" ++ integer_to_list(erlang:unique_integer([positive]))),
    {H, OsPid} = portnode:open(?config(node, Config), {spawn, "cat > " ++ File}, [out]),
    true = portnode:port_command(H, <<"hello ">>),
    true = portnode:port_command(H, ["out", $\s, <<"port\n">>]),
    ok = os_process:poll(fun() -> file:read_file(File) =:= {ok, <<"hello out port\n">>} end, 5000),
    true = portnode:port_close(H),
    ?assertEqual([], os_process:wait_gone([OsPid], 5000)).

%% @doc 256 MiB to a reader that takes 64 KiB a millisecond: every byte
%% arrives in order (md5s match), and portnode's peak RSS stays under 64 MB.
slow_reader_gets_every_byte(Config) ->
    Reader = "import hashlib, sys, time\n"
             "h = hashlib.md5()\n"
             "while True:\n"
             "    b = sys.stdin.buffer.read1(65536)\n"
             "    if not b: break\n"
             "    h.update(b)\n"
             "    time.sleep(0.001)\n"
             "print(h.hexdigest(), flush=True)\n",
    send_and_compare(Config, {spawn_executable, os:find_executable("python3")}, [{args, ["-c", Reader]}], 256).

%% @doc 256 MiB to a reader that starts reading after 2 s.
late_reader_gets_every_byte(Config) ->
    send_and_compare(Config, {spawn_executable, "/bin/sh"}, [{args, ["-c", "sleep 2; exec md5sum"]}], 256).

send_and_compare(Config, PortName, Settings, MiB) ->
    Node = ?config(node, Config),
    Chunk = crypto:strong_rand_bytes(?CHUNK),
    N = MiB * ?MiB div ?CHUNK,
    Expected = string:lowercase(binary:encode_hex(crypto:hash(md5, binary:copy(Chunk, N)))),
    {H, _OsPid} = portnode:open(Node, PortName, [binary, {line, 200} | Settings]),
    T0 = erlang:monotonic_time(millisecond),
    [true = portnode:port_command(H, Chunk) || _ <- lists:seq(1, N)],
    ok = portnode:close_stdin(H),
    Got = receive {H, {data, {eol, Line}}} -> hd(binary:split(Line, <<" ">>)) after 120000 -> ct:fail(no_digest) end,
    Took = erlang:monotonic_time(millisecond) - T0,
    Peak = peak_rss_kb(own_portnode:os_pid(?config(pn, Config))),
    ct:log("~b MiB in ~b ms; portnode peak RSS ~b KiB", [MiB, Took, Peak]),
    ?assertEqual(Expected, Got),
    ?assert(Peak < 64 * 1024),
    %% The reader has exited (its port closed) or is about to.
    try portnode:port_close(H) catch error:badarg -> true end,
    ok.

%% @doc A program that never reads: the sender waits once the port is busy,
%% what portnode holds stays bounded, `nosuspend' gives `false', and the
%% waiting sender gets badarg when the handle closes.
never_reader_blocks_the_sender(Config) ->
    Node = ?config(node, Config),
    {H, _OsPid} = portnode:open(Node, {spawn, "sleep 300"}, [binary]),
    Chunk = binary:copy(<<"x">>, ?CHUNK),
    Self = self(),
    Sent = counters:new(1, []),
    _Sender = spawn(fun() ->
                        try send_forever(H, Chunk, Sent)
                        catch error:badarg -> Self ! {sender, badarg}
                        end
                    end),
    timer:sleep(2000),
    Sent1 = counters:get(Sent, 1),
    timer:sleep(1000),
    Sent2 = counters:get(Sent, 1),
    ct:log("sender stopped at ~b KiB", [Sent2 div 1024]),
    %% Waiting: nothing more was taken in a second, and what was is bounded
    %% (pipe 64 KiB + busy mark 256 KiB + one credit 64 KiB + one chunk),
    %% and it is what a busy port holds: the queue up to its busy mark, not
    %% a sender that stopped early (at 0, or at one credit).
    ?assertEqual(Sent1, Sent2),
    ?assert(Sent2 =< 512 * 1024),
    ?assert(Sent2 >= 256 * 1024),
    ?assertEqual(false, portnode:port_command(H, Chunk, [nosuspend])),
    Rss = rss_kb(own_portnode:os_pid(?config(pn, Config))),
    ct:log("portnode RSS ~b KiB", [Rss]),
    ?assert(Rss < 64 * 1024),
    true = portnode:port_close(H),
    receive {sender, badarg} -> ok after 5000 -> ct:fail(sender_not_released) end.

send_forever(H, Chunk, Sent) ->
    true = portnode:port_command(H, Chunk),
    counters:add(Sent, 1, byte_size(Chunk)),
    send_forever(H, Chunk, Sent).

%%% Helpers

%% `{spawn, ...}' runs `sh -c "exec CMD"', as erts does: scripts go through spawn_executable.
open_sh(Node, Script, Settings) ->
    portnode:open(Node, {spawn_executable, "/bin/sh"}, [{args, ["-c", Script]} | Settings]).


peak_rss_kb(OsPid) -> status_kb(OsPid, "VmHWM:").
rss_kb(OsPid) -> status_kb(OsPid, "VmRSS:").

status_kb(OsPid, Key) ->
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    [Line] = [L || L <- string:split(binary_to_list(Status), "\n", all), lists:prefix(Key, L)],
    [_, Kb | _] = string:lexemes(Line, " \t"),
    list_to_integer(Kb).

