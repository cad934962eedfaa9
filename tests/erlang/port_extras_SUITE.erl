%% @doc What portnode adds to ports: os_pid, kill, close_stdin, stderr as
%% messages, kill_timeout, and port_info.
-module(port_extras_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [os_pid_is_the_program, kill_by_name_and_number, close_stdin_keeps_output,
     stderr_as_messages, port_info_items, bad_settings_are_named, programs_never_see_the_cookie].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(portnode),
    Config.

end_per_suite(_Config) ->
    application:stop(portnode).

%% @doc os_pid/1 is the program's pid (its command line is the program's).
os_pid_is_the_program(_) ->
    H = portnode:open_port({spawn_executable, "/bin/sleep"}, [{args, ["301"]}]),
    OsPid = portnode:os_pid(H),
    ?assertEqual("/bin/sleep 301", string:trim(os:cmd("ps -o args= -p " ++ integer_to_list(OsPid)))),
    true = portnode:port_close(H).

%% @doc kill/2 sends any signal, by name or number; the exit status shows it.
kill_by_name_and_number(_) ->
    [begin
         H = portnode:open_port({spawn_executable, "/bin/sleep"}, [{args, ["300"]}, exit_status]),
         ?assertEqual(ok, portnode:kill(H, Sig)),
         receive {H, {exit_status, S}} -> ?assertEqual(Expected, S) after 5000 -> ct:fail(no_exit) end
     end || {Sig, Expected} <- [{term, 143}, {'SIGKILL', 137}, {10, 138}, {'HUP', 129}]],
    H2 = portnode:open_port({spawn_executable, "/bin/sleep"}, [{args, ["300"]}]),
    ?assertEqual({error, badarg}, portnode:kill(H2, no_such_signal)),
    true = portnode:port_close(H2).

%% @doc close_stdin/1: the program sees EOF, and its output still arrives.
close_stdin_keeps_output(_) ->
    H = portnode:open_port({spawn_executable, "/usr/bin/wc"}, [{args, ["-c"]}, exit_status, {line, 80}]),
    true = portnode:port_command(H, <<"twelve bytes">>),
    ok = portnode:close_stdin(H),
    receive {H, {data, {eol, Count}}} -> ?assertEqual("12", string:trim(Count)) after 5000 -> ct:fail(no_output) end,
    receive {H, {exit_status, 0}} -> ok after 5000 -> ct:fail(no_exit) end.

%% @doc {stderr, message}: stderr arrives apart from stdout.
stderr_as_messages(_) ->
    H = portnode:open_port({spawn_executable, "/bin/sh"},
                           [{args, ["-c", "echo out; echo err 1>&2"]}, {stderr, message}, binary, exit_status]),
    Msgs = collect(H),
    ?assert(lists:member({data, <<"out\n">>}, Msgs)),
    ?assert(lists:member({stderr, <<"err\n">>}, Msgs)),
    ?assertEqual({exit_status, 0}, lists:last(Msgs)).

%% @doc The bridge hands portnode the cookie in its environment; the
%% programs portnode starts inherit that environment, but not the cookie.
programs_never_see_the_cookie(_) ->
    H = portnode:open_port({spawn_executable, "/usr/bin/env"}, [{env, [{"VISIBLE", "yes"}]}, binary, exit_status]),
    Env = iolist_to_binary([D || {data, D} <- collect(H)]),
    ?assertMatch({_, _}, binary:match(Env, <<"VISIBLE=yes">>)),
    ?assertEqual(nomatch, binary:match(Env, <<"PORTNODE_COOKIE">>)),
    ?assertEqual(nomatch, binary:match(Env, atom_to_binary(erlang:get_cookie()))).

%% @doc port_info/1,2 report what erlang:port_info does.
port_info_items(_) ->
    H = portnode:open_port({spawn_executable, "/bin/cat"}, [binary]),
    true = portnode:port_command(H, <<"12345">>),
    receive {H, {data, <<"12345">>}} -> ok after 5000 -> ct:fail(no_echo) end,
    ?assertEqual({connected, self()}, portnode:port_info(H, connected)),
    ?assertEqual({name, "/bin/cat"}, portnode:port_info(H, name)),
    ?assertEqual({input, 5}, portnode:port_info(H, input)),
    ?assertEqual({output, 5}, portnode:port_info(H, output)),
    {links, Links} = portnode:port_info(H, links),
    ?assert(lists:member(self(), Links)),
    Info = portnode:port_info(H),
    ?assertEqual(portnode:os_pid(H), proplists:get_value(os_pid, Info)),
    true = portnode:port_close(H),
    ?assertEqual(undefined, portnode:port_info(H, connected)),
    ?assertError(badarg, portnode:port_close(H)).

%% @doc A bad setting raises badarg, and the error names it.
bad_settings_are_named(_) ->
    try portnode:open_port({spawn, "cat"}, [{busy_limits_port, disabled}]) of
        _ -> ct:fail(no_error)
    catch error:badarg:St ->
        [{_, _, _, Info} | _] = St,
        #{general := Text} = portnode:format_error(badarg, St),
        ct:log("~ts ~p", [Text, Info]),
        %% a binary, as Elixir's Exception.message/1 wants
        ?assert(is_binary(Text)),
        ?assertNotEqual(nomatch, string:find(Text, "busy_limits_port"))
    end,
    ?assertError(badarg, portnode:open_port({spawn, "cat"}, [{env, [{"X", fun() -> ok end}]}])).

collect(H) ->
    receive
        {H, {exit_status, _} = M} -> [M];
        {H, M} -> [M | collect(H)]
    after 5000 -> [timeout]
    end.
