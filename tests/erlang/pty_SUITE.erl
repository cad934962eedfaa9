%% @doc `{pty, true | {Rows, Cols}}': the program's stdio on a new terminal
%% that is its controlling terminal, `portnode:winsz/3', the line settings
%% that let framing work as on pipes, and a close that hangs the terminal
%% up before it stops the program. Under both containments (a session of
%% its own must not take a program out of either).
-module(pty_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [{group, cgroup}, {group, process_group}].

groups() ->
    Cases = [a_terminal_with_its_size, winsz_resizes_and_signals, session_leader_with_controlling_terminal,
             stderr_on_the_terminal_unless_message, line_framing_without_echo, packet_framing_is_raw,
             python_repl, close_hangs_up_first, stop_hangs_up_first, close_stops_a_program_that_ignores_the_hangup,
             nothing_outlives_the_handle, bad_pty_settings],
    [{cgroup, [], Cases}, {process_group, [], Cases}].

init_per_suite(Config) ->
    python:init_per_suite(Config).

end_per_suite(_Config) ->
    ok.

init_per_group(Mode, Config) ->
    both_modes:init_per_group(Mode, Config).

end_per_group(Mode, Config) ->
    both_modes:end_per_group(Mode, Config).


%% Every case closes what it opened, even when it fails.
end_per_testcase(_Case, _Config) ->
    [stop_quietly(H) || {H, _} <- erase_handles()],
    ok.

%% @doc stdin, stdout and stderr are a terminal, whose size is the setting's.
a_terminal_with_its_size(Config) ->
    H = open(Config, sh("[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all three; stty size; tty"), [{pty, {40, 132}}]),
    [All, Size, Tty] = lines(H, 3),
    ?assertEqual("all three", All),
    ?assertEqual("40 132", Size),
    ?assertMatch("/dev/pts/" ++ _, Tty),
    ?assertEqual(0, exit_status(H)),
    %% {pty, true}: the usual 24 x 80.
    H2 = open(Config, {spawn, "stty size"}, [{pty, true}]),
    ?assertEqual(["24 80"], lines(H2, 1)).

%% @doc portnode:winsz/3 resizes the terminal, and the program gets SIGWINCH
%% (its trap runs `stty size').
winsz_resizes_and_signals(Config) ->
    H = open(Config, sh("trap 'stty size' WINCH; stty size; while :; do sleep 0.05; done"), [{pty, {40, 132}}]),
    ?assertEqual(["40 132"], lines(H, 1)),
    ok = portnode:winsz(H, 50, 100),
    ?assertEqual(["50 100"], lines(H, 1)),
    ok = portnode:winsz(H, 25, 90),
    ?assertEqual(["25 90"], lines(H, 1)),
    ?assertError(badarg, portnode:winsz(H, 0, 80)),
    ?assertError(badarg, portnode:winsz(H, 24, 65536)),
    %% Not a terminal: badarg.
    Pipe = open(Config, {spawn, "sleep 100"}, []),
    ?assertError(badarg, portnode:winsz(Pipe, 24, 80)).

%% @doc The program leads its own session (and process group), with the
%% terminal as its controlling terminal: it can open /dev/tty, and it is
%% the terminal's foreground process group.
session_leader_with_controlling_terminal(Config) ->
    Code = "import os\n"
           "print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid(), os.tcgetpgrp(0) == os.getpgrp())\n"
           "os.write(os.open('/dev/tty', os.O_RDWR), b'through /dev/tty\\n')\n",
    H = open(Config, {spawn_executable, ?config(python, Config)}, [{args, ["-c", Code]}, {pty, true}]),
    ?assertEqual(["True True True", "through /dev/tty"], lines(H, 2)),
    ?assertEqual(0, exit_status(H)).

%% @doc stderr is the terminal by default, and with stderr_to_stdout; with
%% {stderr, message} it is a pipe of its own, whose lines come apart.
stderr_on_the_terminal_unless_message(Config) ->
    Script = "echo out; echo err >&2; [ -t 2 ] && echo stderr-tty || echo stderr-pipe",
    H = open(Config, sh(Script), [{pty, true}]),
    ?assertEqual(["out", "err", "stderr-tty"], lines(H, 3)),
    H2 = open(Config, sh(Script), [{pty, true}, stderr_to_stdout]),
    ?assertEqual(["out", "err", "stderr-tty"], lines(H2, 3)),
    H3 = open(Config, sh(Script), [{pty, true}, {stderr, message}]),
    ?assertEqual(["out", "stderr-pipe"], lines(H3, 2)),
    receive {H3, {stderr, "err\n"}} -> ok after 5000 -> ct:fail(no_stderr_message) end.

%% @doc {line, N} on a terminal: what is sent comes back once (no echo), its
%% lines end in "\n" alone (no "\r\n"), and a line is read whole.
line_framing_without_echo(Config) ->
    H = open(Config, sh("while read -r l; do echo \"got $l\"; done"), [{pty, true}]),
    true = portnode:port_command(H, "first line\nsecond"),
    true = portnode:port_command(H, " half\n"),
    ?assertEqual(["got first line", "got second half"], lines(H, 2)),
    ?assertEqual([], flush(H, 300)),
    %% close_stdin: Ctrl-D at the start of a line, the reader's EOF.
    ok = portnode:close_stdin(H),
    ?assertEqual(0, exit_status(H)).

%% @doc {packet, 4} on a terminal: raw mode, so every byte (Ctrl-C, Ctrl-D,
%% \r, 0-255) passes unchanged both ways.
packet_framing_is_raw(Config) ->
    Code = "import os, struct\n"
           "def read(n):\n"
           "    b = b''\n"
           "    while len(b) < n: b += os.read(0, n - len(b))\n"
           "    return b\n"
           "while True:\n"
           "    (n,) = struct.unpack('>I', read(4))\n"
           "    data = read(n)\n"
           "    os.write(1, struct.pack('>I', n) + data)\n",
    H = open(Config, {spawn_executable, ?config(python, Config)}, [{args, ["-c", Code]}, {pty, true}, {packet, 4}, binary]),
    Bytes = list_to_binary(lists:seq(0, 255)),
    [begin
         true = portnode:port_command(H, Packet),
         receive {H, {data, Got}} -> ?assertEqual(Packet, Got) after 5000 -> ct:fail({no_echo, Packet}) end
     end || Packet <- [Bytes, <<3, 4, $\r, $\n, 17, 19>>, binary:copy(<<"x">>, 3000)]].

%% @doc python3 -i runs as at a terminal: its prompt, what a line
%% evaluates to (readline reads it), a statement over two lines.
%% (close_stdin's Ctrl-D ends it too, if readline is reading when it
%% comes: see docs/pty.md.)
python_repl(Config) ->
    H = open(Config, {spawn_executable, ?config(python, Config)}, [{args, ["-i", "-q"]}, {pty, true}]),
    true = portnode:port_command(H, "print(6 * 7)\n"),
    ?assertEqual(">>> 42", wait_line(H, fun(L) -> string:find(L, "42") =/= nomatch end)),
    true = portnode:port_command(H, "for i in range(2):\n    print('line', i)\n\n"),
    ?assertEqual(">>> ... ... line 0", wait_line(H, fun(L) -> string:find(L, "line 0") =/= nomatch end)),
    ?assertEqual("line 1", wait_line(H, fun(L) -> string:find(L, "line 1") =/= nomatch end)),
    true = portnode:port_command(H, "exit(3)\n"),
    ?assertEqual(3, exit_status(H)).

%% @doc A close hangs the terminal up before it stops the program: its
%% first signal is the kernel's SIGHUP, then the stop's SIGTERM. (Signals
%% are taken with sigwaitinfo, in order: a Python handler for SIGTERM
%% would run inside the one for SIGHUP, and exit before it writes.)
close_hangs_up_first(Config) ->
    hangs_up_first(Config, fun(H) -> true = portnode:port_close(H) end).

%% @doc So does portnode:stop/2.
stop_hangs_up_first(Config) ->
    hangs_up_first(Config, fun(H) -> ok = portnode:stop(H, 3000) end).

hangs_up_first(Config, Close) ->
    Log = filename:join(?config(priv_dir, Config), "signals" ++ integer_to_list(erlang:unique_integer([positive]))),
    Code = "import signal, sys, time\n"
           "sigs = {signal.SIGHUP, signal.SIGTERM, signal.SIGCONT}\n"
           "signal.pthread_sigmask(signal.SIG_BLOCK, sigs)\n"
           "print('ready', flush=True)\n"
           "while True:\n"
           "    i = signal.sigwaitinfo(sigs)\n"
           "    open(sys.argv[1], 'a').write('%s %d %d %f\\n' % (signal.Signals(i.si_signo).name, i.si_pid, i.si_code, time.time()))\n"
           "    if i.si_signo == signal.SIGTERM: sys.exit(0)\n",
    H = open(Config, {spawn_executable, ?config(python, Config)}, [{args, ["-c", Code, Log]}, {pty, true}, {kill_timeout, 3000}]),
    OsPid = portnode:os_pid(H),
    ?assertEqual(["ready"], lines(H, 1)),
    Close(H),
    ?assertEqual([], os_process:wait_gone([OsPid], 5000)),
    {ok, Text} = file:read_file(Log),
    ct:log("~s", [Text]),
    %% The kernel's SIGHUP (si_code SI_KERNEL; with a SIGCONT), then portnode's SIGTERM.
    Got = [string:lexemes(L, " ") || L <- string:lexemes(binary_to_list(Text), "\n")],
    ?assertMatch([["SIGHUP", "0", "128", _], ["SIGTERM", _, _, _]], [G || G = [Sig | _] <- Got, Sig =/= "SIGCONT"]).

%% @doc A program that ignores the hangup is stopped as any close stops one.
close_stops_a_program_that_ignores_the_hangup(Config) ->
    H = open(Config, sh("trap '' HUP; echo ready; while :; do sleep 0.05; done"), [{pty, true}, {kill_timeout, 500}]),
    OsPid = portnode:os_pid(H),
    ?assertEqual(["ready"], lines(H, 1)),
    true = portnode:port_close(H),
    ?assertEqual([], os_process:wait_gone([OsPid], 5000)).

%% @doc A child that leaves the session (setsid) still goes with the handle.
nothing_outlives_the_handle(Config) ->
    H = open(Config, sh("setsid sleep 1000 & echo $!; sleep 1000"), [{pty, true}]),
    [Child] = lines(H, 1),
    OsPid = portnode:os_pid(H),
    true = portnode:port_close(H),
    ?assertEqual([], os_process:wait_gone([OsPid, list_to_integer(Child)], 5000)).

%% @doc What cannot be a terminal is a badarg naming the pty setting.
bad_pty_settings(Config) ->
    Node = ?config(node, Config),
    [begin
         [{_M, _F, _A, Info} | _] = try portnode:open_port(Node, {spawn, "true"}, Settings) of
                                        P -> ct:fail({opened, P, Settings})
                                    catch error:badarg:Stack -> Stack
                                    end,
         ?assertMatch(#{cause := {bad_argument, {pty, _}}}, proplists:get_value(error_info, Info))
     end || Settings <- [[{pty, {0, 80}}], [{pty, yes}], [{pty, {24, 80, 1}}],
                         [{pty, true}, nouse_stdio], [{pty, true}, out], [{pty, true}, in]]],
    %% {pty, false} is no terminal.
    H = open(Config, sh("[ -t 1 ] && echo tty || echo pipe"), [{pty, false}]),
    ?assertEqual(["pipe"], lines(H, 1)).

%%% Helpers

stop_quietly(H) ->
    try portnode:stop(H, brutal_kill) catch _:_ -> ok end.

sh(Script) ->
    {sh, Script}.

open(Config, {sh, Script}, Settings) ->
    open(Config, {spawn_executable, "/bin/sh"}, [{args, ["-c", Script]} | Settings]);
open(Config, PortName, Settings) ->
    H = portnode:open_port(?config(node, Config), PortName, [{line, 256}, exit_status | Settings]),
    put({handle, H}, true),
    H.

erase_handles() ->
    [{H, V} || {{handle, H}, V} <- erase()].

%% The next `N' complete lines from `H'.
lines(_H, 0) ->
    [];
lines(H, N) ->
    receive
        {H, {data, {eol, Line}}} -> [Line | lines(H, N - 1)];
        {H, {exit_status, S}} -> ct:fail({exited, S, N, lines_missing})
    after 10000 -> ct:fail({no_line, N})
    end.

%% The first line from `H' for which `Want(Line)'.
wait_line(H, Want) ->
    receive
        {H, {data, {_, Line}}} ->
            case Want(Line) of
                true -> Line;
                false -> wait_line(H, Want)
            end
    after 10000 -> ct:fail(no_such_line)
    end.

exit_status(H) ->
    receive {H, {exit_status, S}} -> S after 10000 -> ct:fail(no_exit_status) end.

flush(H, Ms) ->
    receive {H, Msg} -> [Msg | flush(H, Ms)] after Ms -> [] end.
