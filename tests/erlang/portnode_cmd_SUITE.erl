%% @doc `portnode:cmd/2,3': a program run to completion, `{Output, Status}'
%% as `System.cmd/3' returns it, with `{input, _}', `{timeout, _}' and
%% `{max_output, _}'; whatever ends it, nothing of it is left (a timeout
%% stops its whole tree). Under both containments.
-module(portnode_cmd_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [{group, cgroup}, {group, process_group}].

groups() ->
    both_modes:groups([output_and_status, input_then_eof, a_signal_is_the_status, timeout_stops_the_whole_tree,
                       max_output_stops_it, bad_arguments_raise, as_elixir_writes_it, nothing_left_in_the_mailbox]).

suite() ->
    [{timetrap, {minutes, 2}}].

init_per_group(Group, Config) -> both_modes:init_per_group(Group, Config).
end_per_group(Group, Config) -> both_modes:end_per_group(Group, Config).

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, Config) ->
    both_modes:end_per_testcase(Config).

cmd(Config, Script, Settings) ->
    portnode:cmd(both_modes:node(Config), {spawn_executable, "/bin/sh"}, [{args, ["-c", Script]} | Settings]).

%% @doc stdout and the exit status; stderr too with stderr_to_stdout.
output_and_status(Config) ->
    ?assertEqual({<<"hi\n">>, 0}, portnode:cmd(both_modes:node(Config), {spawn_executable, "/bin/echo"}, [{args, ["hi"]}])),
    ?assertEqual({<<"out\n">>, 3}, cmd(Config, "echo out; echo err >&2; exit 3", [])),
    ?assertEqual({<<"out\nerr\n">>, 3}, cmd(Config, "echo out; echo err >&2; exit 3", [stderr_to_stdout])),
    %% Output larger than a pipe, and settings that frame output do not cut it.
    {Big, 0} = cmd(Config, "head -c 300000 /dev/zero", [{line, 10}, {packet, 2}]),
    ?assertEqual(300000, byte_size(Big)).

%% @doc {input, IoData} is written, then stdin closed; without it, stdin is
%% closed at once (a program that reads it ends, it does not wait forever).
input_then_eof(Config) ->
    ?assertEqual({<<"abcdef">>, 0}, cmd(Config, "cat", [{input, ["abc", <<"def">>]}])),
    ?assertEqual({<<>>, 0}, cmd(Config, "cat", [])),
    ?assertEqual({<<"1048576\n">>, 0}, cmd(Config, "wc -c", [{input, binary:copy(<<"x">>, 1048576)}])).

%% @doc A death by signal is `{signal, Name}'.
a_signal_is_the_status(Config) ->
    ?assertEqual({<<"before\n">>, {signal, sigkill}}, cmd(Config, "echo before; kill -9 $$", [])),
    ?assertEqual({<<>>, {signal, sigterm}}, cmd(Config, "kill -TERM $$", [])).

%% @doc At {timeout, Ms} the whole tree is stopped (a child in the
%% background too) and the output so far is returned with `timeout'.
timeout_stops_the_whole_tree(Config) ->
    T0 = erlang:monotonic_time(millisecond),
    {Output, Status} = cmd(Config, "sleep 1000 & echo $!; echo partial; exec sleep 1000", [{timeout, 700}]),
    Took = erlang:monotonic_time(millisecond) - T0,
    ?assertEqual(timeout, Status),
    [Child, <<"partial">>] = binary:split(string:trim(Output), <<"\n">>),
    ?assert(Took >= 700 andalso Took < 3000, {took, Took}),
    ?assertEqual([], os_process:wait_gone([binary_to_integer(Child)], 0)),
    %% Within the time: the status, not `timeout'.
    ?assertEqual({<<"quick\n">>, 0}, cmd(Config, "echo quick", [{timeout, 5000}])).

%% @doc Past {max_output, Bytes} the program is stopped; the output holds
%% its first Bytes.
max_output_stops_it(Config) ->
    {Output, Status} = portnode:cmd(both_modes:node(Config), {spawn_executable, "/usr/bin/yes"}, [{max_output, 100001}]),
    ?assertEqual(max_output, Status),
    ?assertEqual(100001, byte_size(Output)),
    ?assertEqual(<<"y\ny">>, binary:part(Output, byte_size(Output) - 3, 3)),
    ?assertEqual({<<"12345">>, 0}, cmd(Config, "printf 12345", [{max_output, 5}])).

%% @doc Bad arguments raise as open_port's do.
bad_arguments_raise(Config) ->
    Node = both_modes:node(Config),
    ?assertError(enoent, portnode:cmd(Node, {spawn_executable, "/no/such/program"}, [])),
    ?assertError(badarg, portnode:cmd(Node, {spawn, "true"}, [{timeout, -1}])),
    ?assertError(badarg, portnode:cmd(Node, {spawn, "true"}, [{input, {not_iodata}}])),
    ?assertError(badarg, portnode:cmd(Node, {spawn, "true"}, [{busy_limits_port, disabled}])).

%% @doc What an Elixir caller writes: binaries for the program, arguments and
%% environment, `stderr_to_stdout: true' (and `false').
as_elixir_writes_it(Config) ->
    Node = both_modes:node(Config),
    ?assertEqual({<<"1 two\n">>, 0},
                 portnode:cmd(Node, {spawn_executable, <<"/bin/sh">>},
                              [{args, [<<"-c">>, <<"echo $X $Y >&2">>]}, {env, [{<<"X">>, <<"1">>}, {"Y", "two"}]},
                               {stderr_to_stdout, true}])),
    ?assertEqual({<<>>, 0}, portnode:cmd(Node, {spawn, <<"true">>}, [{stderr_to_stdout, false}])).

%% @doc A caller that traps exits finds nothing of the handle in its mailbox.
nothing_left_in_the_mailbox(Config) ->
    process_flag(trap_exit, true),
    {_, 0} = cmd(Config, "echo x", []),
    {_, timeout} = cmd(Config, "exec sleep 100", [{timeout, 100}]),
    {_, max_output} = cmd(Config, "yes", [{max_output, 10}]),
    receive Msg -> ct:fail({left_in_mailbox, Msg}) after 500 -> ok end.
