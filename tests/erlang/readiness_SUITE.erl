%% @doc Readiness: `{ready, notify}' (sd_notify datagrams on the program's
%% own NOTIFY_SOCKET), `{ready, {line, Prefix}}' and `{ready_timeout, Ms}',
%% through `portnode:open/3', `open_port/3', `portnode_service:start_link/3'
%% and supervisors on both sides, under both containments, with real
%% programs (python3 with its standard library, sh).
-module(readiness_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("kernel/include/file.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [{group, cgroup}, {group, process_group}].

groups() ->
    both_modes:groups(cases()).

cases() ->
    [open_waits_for_ready_notify, open_waits_for_a_ready_line, ready_timeout_stops_the_program,
     exited_before_ready_is_the_error, open_port_tells_the_owner, another_programs_datagrams_do_not_count,
     malformed_datagrams_are_ignored, notices_reach_the_owner, service_start_link_returns_once_ready,
     erlang_supervisor_starts_the_next_once_ready, portnode_supervisor_starts_the_next_once_ready,
     ready_timeout_fails_the_starts_of_services_and_children, systemd_notify_from_a_shell,
     a_program_of_another_user_reaches_its_socket].

suite() ->
    [{timetrap, {minutes, 2}}].

init_per_suite(Config) ->
    python:init_per_suite(Config).

end_per_suite(_Config) ->
    ok.

init_per_group(Group, Config) -> both_modes:init_per_group(Group, Config).
end_per_group(Group, Config) -> both_modes:end_per_group(Group, Config).

init_per_testcase(_Case, Config) ->
    process_flag(trap_exit, true),
    Config.

end_per_testcase(_Case, Config) ->
    both_modes:end_per_testcase(Config).

now_ms() -> erlang:monotonic_time(millisecond).

%% A file name of this case and group's own.
file(Config, Name) ->
    filename:join(?config(priv_dir, Config), atom_to_list(?config(mode, Config)) ++ "_" ++ Name).

read_pid(File) ->
    {ok, Text} = file:read_file(File),
    binary_to_integer(string:trim(Text)).

%% @doc open/3 returns once the program says READY=1, not when it runs.
open_waits_for_ready_notify(Config) ->
    {Name, Settings} = notifier:program([{sleep, 800}, {send, "READY=1"}, wait]),
    T0 = now_ms(),
    {H, OsPid} = portnode:open(both_modes:node(Config), Name, Settings ++ [{ready, notify}]),
    Took = now_ms() - T0,
    ct:log("open took ~b ms", [Took]),
    ?assert(Took >= 800, {took, Took}),
    ?assert(os_process:alive(OsPid)),
    receive {H, ready} -> ok after 1000 -> ct:fail(no_ready_message) end,
    portnode:port_close(H).

%% @doc {ready, {line, Prefix}}: ready at the first line that starts with
%% Prefix (on stdout or, with {stderr, message}, stderr), not at one that
%% only holds it; the lines still reach the owner.
open_waits_for_a_ready_line(Config) ->
    Node = both_modes:node(Config),
    Script = "echo 'not ready: yet'; sleep 0.8; printf 'ready:'; sleep 0.2; echo ' on 42'; exec sleep 100",
    T0 = now_ms(),
    {H, _} = portnode:open(Node, {spawn_executable, "/bin/sh"},
                           [{args, ["-c", Script]}, {line, 80}, {ready, {line, "ready:"}}]),
    Took = now_ms() - T0,
    ?assert(Took >= 800, {took, Took}),
    receive {H, {data, {eol, "not ready: yet"}}} -> ok after 1000 -> ct:fail(no_first_line) end,
    receive {H, ready} -> ok after 1000 -> ct:fail(no_ready_message) end,
    receive {H, {data, {eol, "ready: on 42"}}} -> ok after 1000 -> ct:fail(no_ready_line) end,
    portnode:port_close(H),
    {H2, _} = portnode:open(Node, {spawn_executable, "/bin/sh"},
                            [{args, ["-c", "sleep 0.3; echo up >&2; exec sleep 100"]}, {stderr, message},
                             {ready, {line, <<"up">>}}]),
    receive {H2, ready} -> ok after 1000 -> ct:fail(no_ready_from_stderr) end,
    portnode:port_close(H2).

%% @doc Not ready within ready_timeout: open raises {ready_timeout, Ms} once
%% all of the program (a child it started too) is gone.
ready_timeout_stops_the_program(Config) ->
    Pids = file(Config, "pids"),
    Script = "sleep 1000 & echo $$ $! > " ++ Pids ++ "; exec sleep 1000",
    T0 = now_ms(),
    Raised = try portnode:open(both_modes:node(Config), {spawn_executable, "/bin/sh"},
                               [{args, ["-c", Script]}, {ready, notify}, {ready_timeout, 700}])
             catch error:Reason -> Reason
             end,
    Took = now_ms() - T0,
    ?assertEqual({ready_timeout, 700}, Raised),
    ?assert(Took >= 700 andalso Took < 3700, {took, Took}),
    {ok, Text} = file:read_file(Pids),
    Started = [binary_to_integer(P) || P <- string:lexemes(string:trim(Text), " ")],
    ?assertEqual(2, length(Started)),
    ?assertEqual([], os_process:wait_gone(Started, 200)).

%% @doc A program that exits before it is ready fails the open with how it ended.
exited_before_ready_is_the_error(Config) ->
    %% A program that cannot even be exec'd (a directory) is never ready either.
    ?assertError({exited_before_ready, {exit_status, 13}}, portnode:open(both_modes:node(Config), {spawn_executable, "/tmp"}, [{ready, notify}])),
    Raised = try portnode:open(both_modes:node(Config), {spawn_executable, "/bin/sh"},
                                             [{args, ["-c", "sleep 0.2; exit 3"]}, {ready, notify}])
             catch error:Reason -> Reason
             end,
    ?assertEqual({exited_before_ready, {exit_status, 3}}, Raised).

%% @doc open_port/3 returns at once; the owner hears {H, ready}, or the
%% handle's exit {ready_timeout, Ms}.
open_port_tells_the_owner(Config) ->
    Node = both_modes:node(Config),
    {Name, Settings} = notifier:program([{sleep, 500}, {send, "READY=1"}, wait]),
    T0 = now_ms(),
    H = portnode:open_port(Node, Name, Settings ++ [{ready, notify}]),
    ?assert(now_ms() - T0 < 500),
    receive {H, ready} -> ?assert(now_ms() - T0 >= 500) after 5000 -> ct:fail(no_ready_message) end,
    portnode:port_close(H),
    {Name2, Settings2} = notifier:program([wait]),
    H2 = portnode:open_port(Node, Name2, Settings2 ++ [{ready, notify}, {ready_timeout, 500}]),
    receive
        {H2, ready} -> ct:fail(ready_without_saying_so);
        {'EXIT', H2, Reason} -> ?assertEqual({ready_timeout, 500}, Reason)
    after 5000 -> ct:fail(no_ready_timeout)
    end.

%% @doc A datagram on a program's socket counts only from one of its own
%% processes: not from another portnode program, nor from a process
%% outside any; a child of the program's counts. Its socket is in a
%% directory of its own, mode 0700.
another_programs_datagrams_do_not_count(Config) ->
    Node = both_modes:node(Config),
    Open = fun(Steps) ->
                   {Name, Settings} = notifier:program([{print, "NOTIFY_SOCKET"} | Steps]),
                   H = portnode:open_port(Node, Name, Settings ++ [{line, 1024}, {ready, notify}, {ready_timeout, 3000}]),
                   receive
                       {H, {data, {eol, "NOTIFY_SOCKET=" ++ Rest}}} ->
                           [Path, "PID=" ++ _] = string:lexemes(Rest, " "),
                           {H, Path}
                   after 5000 -> ct:fail(no_socket_line)
                   end
           end,
    {Target, Path} = Open([wait]),
    {ok, #file_info{mode = Mode}} = file:read_file_info(filename:dirname(Path)),
    ?assertEqual(8#700, Mode band 8#777),
    notifier:send_from_outside(Path, "READY=1"),
    Other = portnode:open_port(Node, {spawn_executable, notifier:python()},
                               [{args, ["-c", "import socket, sys, time\n"
                                              "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                                              "s.sendto(b'READY=1', sys.argv[1]); time.sleep(5)\n", Path]}]),
    receive
        {Target, ready} -> ct:fail(ready_by_another_process);
        {'EXIT', Target, Reason} -> ?assertEqual({ready_timeout, 3000}, Reason)
    after 10000 -> ct:fail(no_ready_timeout)
    end,
    portnode:port_close(Other),
    %% A child of the program is one of its processes.
    {Own, _} = Open([{child_send, "READY=1"}, wait]),
    receive {Own, ready} -> ok after 5000 -> ct:fail(child_did_not_count) end,
    portnode:port_close(Own).

%% @doc Datagrams that are not sd_notify (NUL bytes, oversized, bad values)
%% are ignored: the port and portnode go on, and READY=1 after them counts.
malformed_datagrams_are_ignored(Config) ->
    Node = both_modes:node(Config),
    {Name, Settings} = notifier:program([junk, {send, "READY=1"}, wait]),
    {H, _} = portnode:open(Node, Name, Settings ++ [{ready, notify}, {ready_timeout, 5000}]),
    ?assertMatch({os_pid, _}, portnode:port_info(H, os_pid)),
    ?assertEqual(pong, portnode:ping(Node)),
    portnode:port_close(H).

%% @doc STATUS=, ERRNO=, MAINPID= (its own; not another's) and STOPPING=1
%% reach the owner, in order, around {H, ready}.
notices_reach_the_owner(Config) ->
    {Name, Settings} = notifier:program([{send, "STATUS=warming up"}, {send, "READY=1\nSTATUS=serving"},
                                         {send, "ERRNO=5"}, {send, "MAINPID=1"}, {send, "MAINPID=$$"},
                                         {send, "STOPPING=1"}, wait]),
    {H, OsPid} = portnode:open(both_modes:node(Config), Name, Settings ++ [{ready, notify}]),
    Expected = [{status, <<"warming up">>}, ready, {status, <<"serving">>}, {errno, 5}, {mainpid, OsPid}, stopping],
    Got = [receive {H, Said} -> Said after 5000 -> none end || _ <- Expected],
    ?assertEqual(Expected, Got),
    receive {H, Unexpected} -> ct:fail({unexpected, Unexpected}) after 300 -> ok end,
    portnode:port_close(H).

%% @doc portnode_service:start_link/3 returns only once the program is
%% ready; its STATUS= is in sys:get_status/1.
service_start_link_returns_once_ready(Config) ->
    {Name, Settings} = notifier:program([{sleep, 800}, {send, "STATUS=listening on 9\nREADY=1"}, wait]),
    T0 = now_ms(),
    {ok, Pid} = portnode_service:start_link(svc, Name, Settings ++ [{ready, notify}, {node, both_modes:node(Config)}]),
    Took = now_ms() - T0,
    ?assert(Took >= 800, {took, Took}),
    Status = lists:flatten(io_lib:format("~p", [sys:get_status(Pid)])),
    ?assertNotEqual(nomatch, string:find(Status, "listening on 9")),
    unlink(Pid),
    exit(Pid, shutdown).

%% The programs of the two ordering cases: `a' is ready after 800 ms (and
%% leaves a file then); `b', when it starts, writes down whether the file
%% is there (`b_saw_a_ready()' reads it).
ordered(Config, Tag) ->
    Flag = file(Config, Tag ++ "_a_ready"),
    Saw = file(Config, Tag ++ "_b_saw"),
    [file:delete(F) || F <- [Flag, Saw]],
    put(b_saw, Saw),
    {notifier:program([{sleep, 800}, {touch, Flag}, {send, "READY=1"}, wait]),
     notifier:program([{check, Flag, Saw}, {send, "READY=1"}, wait])}.

b_saw_a_ready() ->
    _ = os_process:poll(fun() -> filelib:is_regular(get(b_saw)) end, 3000),
    {ok, Saw} = file:read_file(get(b_saw)),
    Saw.

%% @doc An Erlang supervisor starts service b only once service a is ready.
erlang_supervisor_starts_the_next_once_ready(Config) ->
    Node = both_modes:node(Config),
    {{NameA, SetA}, {NameB, SetB}} = ordered(Config, "erlang"),
    Ready = [{ready, notify}, {node, Node}],
    {ok, Sup} = supervisor:start_link(erlang_sup, #{intensity => 0, period => 5,
                                                    children => [portnode:service(a, NameA, SetA ++ Ready),
                                                                 portnode:service(b, NameB, SetB ++ Ready)]}),
    ?assertMatch([{b, _, worker, _}, {a, _, worker, _}], supervisor:which_children(Sup)),
    ?assertEqual(<<"yes">>, b_saw_a_ready()),
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 15000 -> ct:fail(supervisor_did_not_stop) end.

%% @doc A supervisor inside portnode starts child b only once child a is ready.
portnode_supervisor_starts_the_next_once_ready(Config) ->
    {{NameA, SetA}, {NameB, SetB}} = ordered(Config, "portnode"),
    {ok, Sup} = portnode:start_supervisor(both_modes:node(Config), #{intensity => 0, period => 5},
                                          [#{id => a, start => {NameA, SetA ++ [{ready, notify}]}},
                                           #{id => b, start => {NameB, SetB ++ [{ready, notify}]}}]),
    ?assertMatch([{b, H, worker, _}, {a, _, worker, _}] when is_pid(H), supervisor:which_children(Sup)),
    ?assertEqual(<<"yes">>, b_saw_a_ready()),
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 15000 -> ct:fail(supervisor_did_not_stop) end.

%% @doc Not ready in time: start_link returns {error, {ready_timeout, Ms}},
%% a supervisor inside portnode fails to start the child with it, and the
%% program is gone either way.
ready_timeout_fails_the_starts_of_services_and_children(Config) ->
    Node = both_modes:node(Config),
    PidFile = file(Config, "service_pid"),
    {Name, Settings} = notifier:program([{pidfile, PidFile}, wait]),
    ?assertEqual({error, {ready_timeout, 600}},
                 portnode_service:start_link(s, Name, Settings ++ [{ready, notify}, {ready_timeout, 600}, {node, Node}])),
    ?assertEqual([], os_process:wait_gone([read_pid(PidFile)], 200)),
    ChildFile = file(Config, "child_pid"),
    {Name2, Settings2} = notifier:program([{pidfile, ChildFile}, wait]),
    ?assertEqual({error, {shutdown, {failed_to_start_child, c, {ready_timeout, 600}}}},
                 portnode:start_supervisor(Node, #{}, [#{id => c, start => {Name2, Settings2 ++ [{ready, notify}, {ready_timeout, 600}]}}])),
    ?assertEqual([], os_process:wait_gone([read_pid(ChildFile)], 200)).

%% @doc systemd's own client, `systemd-notify --ready', from a shell
%% script: it exits right after, and waits first for its BARRIER=1's fd to
%% be closed, which portnode does once it has read what came before.
systemd_notify_from_a_shell(Config) ->
    case os:find_executable("systemd-notify") of
        false ->
            {skip, "no systemd-notify"};
        _ ->
            Script = "sleep 0.3; systemd-notify --ready --status='up and running'; exec sleep 100",
            {H, _} = portnode:open(both_modes:node(Config), {spawn_executable, "/bin/sh"},
                                   [{args, ["-c", Script]}, {ready, notify}, {ready_timeout, 5000}]),
            receive {H, {status, Status}} -> ?assertEqual(<<"up and running">>, Status) after 2000 -> ct:fail(no_status) end,
            portnode:port_close(H)
    end.

%% @doc A program run as another user (nobody) owns its socket's directory
%% (0700), so it can say READY=1 there and no other user can.
a_program_of_another_user_reaches_its_socket(Config) ->
    case os:cmd("id -u") of
        "0\n" ->
            %% A python3 that nobody may run (not one under root's home).
            {{spawn_executable, _}, Settings} = notifier:program([{print, "NOTIFY_SOCKET"}, {send, "READY=1"}, wait]),
            Name = {spawn_executable, "/usr/bin/python3"},
            {H, _} = portnode:open(both_modes:node(Config), Name,
                                   Settings ++ [{user, "nobody"}, {cd, "/"}, {line, 1024}, {ready, notify}, {ready_timeout, 5000}]),
            "NOTIFY_SOCKET=" ++ Rest = receive {H, {data, {eol, L}}} -> L after 5000 -> ct:fail(no_line) end,
            [Path | _] = string:lexemes(Rest, " "),
            {ok, #file_info{uid = Uid, mode = Mode}} = file:read_file_info(filename:dirname(Path)),
            ?assertEqual(list_to_integer(string:trim(os:cmd("id -u nobody"))), Uid),
            ?assertEqual(8#700, Mode band 8#777),
            portnode:port_close(H);
        _ ->
            {skip, "changing user needs root"}
    end.
