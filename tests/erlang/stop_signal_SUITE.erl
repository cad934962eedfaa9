%% @doc `{stop_signal, Sig}': the first signal of every stop (close, owner
%% exit, a closed port's program after its close_grace, `portnode:stop/2',
%% a supervisor's shutdown on either side, portnode's own shutdown), and
%% which step ended the program (`stop_report/2', the service's report).
%% The programs (python3) write down each signal they get. Under both
%% containments.
-module(stop_signal_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [{group, cgroup}, {group, process_group}].

groups() ->
    both_modes:groups([every_way_of_stopping_sends_it, by_number_and_by_default, stop_report_says_which_step,
                       service_report_says_which_step, portnode_supervisor_stops_its_children_with_it]).

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

%% A program that writes the name of each signal it gets to `File' and
%% exits 0 (or, `stubborn', goes on), and prints `ready' once it listens.
%%
%% It sleeps in short steps: CPython runs a handler in its main loop, and
%% a signal that comes between the loop's last look and the start of a
%% sleep's system call (as a stop sent the moment `ready' is read can,
%% and on Python 3.14 often did) waits for the sleep to end. With
%% `time.sleep(1)' the handler then ran up to a second late: after a
%% 300 ms grace had ended the program with SIGKILL.
recorder(File, Mode) ->
    Code = "import signal, sys, time\n"
           "def on(sig, _):\n"
           "    with open(sys.argv[1], 'a') as f: f.write(signal.Signals(sig).name + '\\n')\n"
           "    if sys.argv[2] == 'exits': sys.exit(0)\n"
           "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):\n"
           "    signal.signal(s, on)\n"
           "print('ready', flush=True)\n"
           "while True: time.sleep(0.02)\n",
    {{spawn_executable, notifier:python()},
     [{args, ["-u", "-c", Code, File, atom_to_list(Mode)]}, {line, 80}, {ready, {line, "ready"}}]}.

%% A file of this group's and this tag's own, empty.
file(Config, Tag) ->
    F = filename:join(?config(priv_dir, Config), atom_to_list(?config(mode, Config)) ++ "_" ++ Tag),
    file:delete(F),
    F.

got(File) ->
    case file:read_file(File) of
        {ok, Text} -> string:lexemes(binary_to_list(Text), "\n");
        {error, enoent} -> []
    end.

%% Waits until the program has written something down (or 3 s have passed).
got_after(File) ->
    _ = os_process:poll(fun() -> got(File) =/= [] end, 3000),
    got(File).

open(Node, File, Mode, Extra) ->
    {Name, Settings} = recorder(File, Mode),
    portnode:open(Node, Name, Settings ++ Extra).

%% @doc With `{stop_signal, int}', SIGINT (and only it) ends the program
%% whichever way it is stopped.
every_way_of_stopping_sends_it(Config) ->
    Node = both_modes:node(Config),
    Int = [{stop_signal, int}],
    F1 = file(Config, "close"),
    {H1, _} = open(Node, F1, exits, Int),
    true = portnode:port_close(H1),
    ?assertEqual(["SIGINT"], got_after(F1)),
    F2 = file(Config, "owner_exit"),
    Self = self(),
    Owner = spawn(fun() -> {H, _} = open(Node, F2, exits, Int), Self ! {opened, H}, receive after infinity -> ok end end),
    receive {opened, _} -> ok after 10000 -> ct:fail(not_opened) end,
    exit(Owner, kill),
    ?assertEqual(["SIGINT"], got_after(F2)),
    F3 = file(Config, "stop"),
    {H3, _} = open(Node, F3, exits, Int),
    ok = portnode:stop(H3),
    ?assertEqual(["SIGINT"], got(F3)),
    %% Sent input it never reads, it is stopped after its close_grace.
    F4 = file(Config, "close_grace"),
    {H4, _} = open(Node, F4, exits, Int ++ [{close_grace, 300}]),
    true = portnode:port_command(H4, "unread\n"),
    true = portnode:port_close(H4),
    timer:sleep(100),
    ?assertEqual([], got(F4)),
    ?assertEqual(["SIGINT"], got_after(F4)),
    %% portnode's own shutdown (a portnode of this case's own).
    F5 = file(Config, "portnode_shutdown"),
    Pn = own_portnode:start("stopsig", case ?config(mode, Config) of cgroup -> "auto"; process_group -> "off" end),
    try
        {_, _} = open(own_portnode:node(Pn), F5, exits, Int)
    after
        own_portnode:stop(Pn)
    end,
    ?assertEqual(["SIGINT"], got_after(F5)).

%% @doc A signal by number is that signal; without the setting, SIGTERM.
by_number_and_by_default(Config) ->
    Node = both_modes:node(Config),
    F1 = file(Config, "number"),
    {H1, _} = open(Node, F1, exits, [{stop_signal, 1}]),
    ok = portnode:stop(H1),
    ?assertEqual(["SIGHUP"], got(F1)),
    F2 = file(Config, "default"),
    {H2, _} = open(Node, F2, exits, []),
    ok = portnode:stop(H2),
    ?assertEqual(["SIGTERM"], got(F2)),
    ?assertError(badarg, open(Node, file(Config, "bad"), exits, [{stop_signal, nosuch}])).

%% @doc stop_report/2: `{stop_signal, Name}' when it ended the program,
%% `{sigkill, Grace}' when SIGKILL did (after the stop signal, or at once
%% for brutal_kill), `{exited, How}' for a program that had exited, `closed'
%% for a handle that is.
stop_report_says_which_step(Config) ->
    Node = both_modes:node(Config),
    F1 = file(Config, "exits"),
    {H1, _} = open(Node, F1, exits, [{stop_signal, usr1}]),
    ?assertEqual({stop_signal, sigusr1}, portnode:stop_report(H1, 5000)),
    ?assertEqual(closed, portnode:stop_report(H1, 5000)),
    F2 = file(Config, "stubborn"),
    {H2, OsPid2} = open(Node, F2, stubborn, [{stop_signal, int}]),
    ?assertEqual({sigkill, 300}, portnode:stop_report(H2, 300)),
    ?assertEqual(["SIGINT"], got(F2)),
    ?assertNot(os_process:alive(OsPid2)),
    F3 = file(Config, "brutal"),
    {H3, _} = open(Node, F3, stubborn, [{stop_signal, int}]),
    ?assertEqual({sigkill, 0}, portnode:stop_report(H3, brutal_kill)),
    ?assertEqual([], got(F3)),
    {H4, _} = portnode:open(Node, {spawn_executable, "/bin/sh"}, [{args, ["-c", "exit 4"]}, eof, exit_status]),
    receive {H4, eof} -> ok after 5000 -> ct:fail(no_eof) end,
    ?assertEqual({exited, {exit_status, 4}}, portnode:stop_report(H4, 5000)).

%% @doc A service's program is stopped with its stop signal on shutdown, and
%% the service's report says which step ended it.
service_report_says_which_step(Config) ->
    Node = both_modes:node(Config),
    ok = logger:add_handler(capture, log_capture, #{config => #{pid => self()}}),
    try
        F1 = file(Config, "service"),
        {Name1, Settings1} = recorder(F1, exits),
        F2 = file(Config, "service_stubborn"),
        {Name2, Settings2} = recorder(F2, stubborn),
        Children = [portnode:service(#{id => polite, start => {Name1, Settings1 ++ [{stop_signal, usr1}, {node, Node}]}}),
                    portnode:service(#{id => stubborn, start => {Name2, Settings2 ++ [{stop_signal, hup}, {node, Node}]},
                                       shutdown => 1000})],
        {ok, Sup} = supervisor:start_link(erlang_sup, #{children => Children}),
        ok = supervisor:terminate_child(Sup, polite),
        ?assertEqual(["SIGUSR1"], got(F1)),
        ?assertMatch(#{service := polite, reason := shutdown, ended := {stop_signal, sigusr1}}, wait_report(stopped)),
        ok = supervisor:terminate_child(Sup, stubborn),
        ?assertEqual(["SIGHUP"], got(F2)),
        ?assertMatch(#{service := stubborn, ended := {sigkill, 500}}, wait_report(stopped)),
        exit(Sup, shutdown),
        receive {'EXIT', Sup, shutdown} -> ok after 15000 -> ct:fail(supervisor_did_not_stop) end
    after
        logger:remove_handler(capture)
    end.

%% @doc A supervisor inside portnode stops its children with their stop signal.
portnode_supervisor_stops_its_children_with_it(Config) ->
    F = file(Config, "portnode_sup"),
    {Name, Settings} = recorder(F, exits),
    {ok, Sup} = portnode:start_supervisor(both_modes:node(Config), #{},
                                          [#{id => c, start => {Name, Settings ++ [{stop_signal, hup}]}}]),
    ok = supervisor:terminate_child(Sup, c),
    ?assertEqual(["SIGHUP"], got(F)),
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 15000 -> ct:fail(supervisor_did_not_stop) end.

wait_report(What) ->
    receive
        {log, #{msg := {report, Report = #{what := {portnode_service, What}}}}} -> Report;
        {log, _} -> wait_report(What)
    after 5000 -> ct:fail({no_report, What})
    end.
