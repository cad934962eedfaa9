%% @doc Differential suite: every scenario runs once through `erlang:open_port'
%% and once through `portnode:open_port'; the owner must receive the same
%% messages, handle for port.
-module(port_differential_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [stream_lists, stream_binaries, packet_1, packet_2, packet_4, packet_from_program,
     lines, lines_without_exit_status, exit_codes, signals, stderr_to_stdout, env_set_and_unset, cd,
     args_with_spaces_and_unicode, arg0, shell_pipeline, eof, eof_without_exit_status,
     input_only, output_only, errors, port_close, connect_message, port_connect,
     owner_dies, large_stream, command_from_iolist,
     oversized_packets, malformed_messages, bare_line, env_too_large, every_option,
     unsupported_options, error_info, vm_environment, vm_cwd, relative_executable,
     other_portnode_keeps_its_own, closed_handle_port_command, register_name,
     close_writes_what_it_accepted, owner_exit_writes_what_it_accepted,
     output_only_port_writes_a_file].

init_per_suite(Config) ->
    %% In portnode's start environment, to be changed and unset by the VM later.
    os:putenv("PN_DIFF_AT_START", "start"),
    {ok, Cwd} = file:get_cwd(),
    {ok, _} = application:ensure_all_started(portnode),
    [{cwd, Cwd} | Config].

end_per_suite(Config) ->
    ok = file:set_cwd(?config(cwd, Config)),
    os:unsetenv("PN_DIFF_AT_START"),
    application:stop(portnode).

%% Runs a scenario both ways and checks the results are equal and meaningful.
same(PortName, Settings, Actions) ->
    Expected = port_scenario:run(erlang, PortName, Settings, Actions),
    Got = port_scenario:run(portnode, PortName, Settings, Actions),
    ct:log("erlang:   ~p~nportnode: ~p", [Expected, Got]),
    ?assertMatch([_ | _], Expected),
    ?assertEqual(Expected, Got),
    Expected.

%% @doc Stream output as lists, with exit_status.
stream_lists(_) ->
    same({spawn, "printf 'hello\\nworld'"}, [exit_status], []).

%% @doc Stream output as binaries; input echoed by cat.
stream_binaries(_) ->
    same({spawn_executable, "/bin/cat"}, [binary, exit_status],
         [{command, <<"abc">>}, {command, ["d", $e, <<"f">>]}, {sleep, 200}, close]).

%% @doc {packet, 1} both ways, frames up to the limit (255 bytes).
packet_1(_) -> packets(1, [0, 1, 254, 255]).
%% @doc {packet, 2} both ways, frames up to the limit (65535 bytes).
packet_2(_) -> packets(2, [0, 1, 300, 65534, 65535]).
%% @doc {packet, 4} both ways, frames up to 4 MB.
packet_4(_) -> packets(4, [0, 1, 70000, 4 * 1024 * 1024]).

packets(N, Sizes) ->
    Frames = [crypto:strong_rand_bytes(S) || S <- Sizes],
    same({spawn_executable, "/bin/cat"}, [{packet, N}, binary, exit_status],
         [{command, F} || F <- Frames] ++ [{sleep, 300}, close]),
    same({spawn_executable, "/bin/cat"}, [{packet, N}, exit_status],
         [{command, binary_to_list(F)} || F <- lists:sublist(Frames, 2)] ++ [{sleep, 200}, close]).

%% @doc A program writing packets itself (several in one write, one split over writes).
packet_from_program(_) ->
    same({spawn, "printf '\\000\\003abc\\000\\001x'; sleep 0.1; printf '\\000'; sleep 0.1; printf '\\002yz'"},
         [{packet, 2}, binary, exit_status], []).

%% @doc Line mode: lines longer than L, an empty line, a last line without newline.
lines(_) ->
    same({spawn, "printf 'short\\nexactly8\\nmuch longer than eight\\n\\nlast'"},
         [{line, 8}, exit_status], []),
    same({spawn, "printf 'a\\nbb\\n'"}, [{line, 8}, binary, exit_status], []).

%% @doc Line mode without exit_status: the last unterminated line still arrives.
lines_without_exit_status(_) ->
    same({spawn, "printf 'one\\ntwo'"}, [{line, 80}], []).

%% @doc Exit codes reach the owner.
exit_codes(_) ->
    [same({spawn, "exit " ++ integer_to_list(C)}, [exit_status], []) || C <- [0, 1, 3, 127, 255]],
    same({spawn, "no_such_command_here 2>/dev/null"}, [exit_status], []).

%% @doc A signal death is 128 + the signal.
signals(_) ->
    same({spawn, "kill -TERM $$"}, [exit_status], []),
    same({spawn, "kill -KILL $$"}, [exit_status], []).

%% @doc stderr merged into stdout.
stderr_to_stdout(_) ->
    same({spawn, "echo out; echo err 1>&2; echo out2"}, [stderr_to_stdout, exit_status], []).

%% @doc env: a variable set, one overridden, one unset.
env_set_and_unset(_) ->
    os:putenv("PORTNODE_TEST_UNSET_ME", "still here"),
    same({spawn, "echo \"$PN_A|$PN_B|${PORTNODE_TEST_UNSET_ME:-unset}\""},
         [{env, [{"PN_A", "one"}, {"PN_B", "two words"}, {"PORTNODE_TEST_UNSET_ME", false}]}, exit_status], []).

%% @doc cd.
cd(_) ->
    same({spawn, "pwd"}, [{cd, "/tmp"}, exit_status], []).

%% @doc args with spaces and non-ASCII characters, as lists and binaries.
args_with_spaces_and_unicode(_) ->
    same({spawn_executable, "/usr/bin/printf"},
         [{args, ["%s|", "two words", "smörgåsbord", <<"bin ärg"/utf8>>, ""]}, exit_status], []).

%% @doc arg0 replaces argv[0].
arg0(_) ->
    same({spawn_executable, "/bin/cat"}, [{arg0, "my name"}, {args, ["/proc/self/cmdline"]}, exit_status], []).

%% @doc {spawn, ...} runs a shell pipeline.
shell_pipeline(_) ->
    same({spawn, "printf 'b\\na\\nc\\n' | sort | tr a-z A-Z"}, [exit_status, {line, 10}], []).

%% @doc eof: the port stays open after the output ends, until the owner closes it.
eof(_) ->
    same({spawn, "echo hi"}, [eof, exit_status], [{sleep, 300}, close]).

%% @doc eof without exit_status.
eof_without_exit_status(_) ->
    same({spawn, "echo hi"}, [eof], [{sleep, 300}, close]).

%% @doc in: output only flows from the program.
input_only(_) ->
    same({spawn, "echo in only"}, [in, exit_status], []).

%% @doc out: the program's output is not read; the exit status still arrives.
output_only(_) ->
    same({spawn, "head -c 3 >/dev/null"}, [out, exit_status], [{command, "abc"}]).

%% @doc Every error open_port raises, raised the same way.
errors(Config) ->
    NotExecutable = filename:join(?config(priv_dir, Config), "not_executable"),
    ok = file:write_file(NotExecutable, <<"data">>),
    Cases = [{{spawn_executable, "/nonexistent/program"}, []},
             {{spawn_executable, "/tmp"}, []},
             {{spawn_executable, NotExecutable}, []},
             {{spawn_executable, "/bin/cat"}, [{packet, 3}]},
             {{spawn_executable, "/bin/cat"}, [{line, 0}]},
             {{spawn_executable, "/bin/cat"}, [no_such_setting]},
             {{spawn_executable, "/bin/cat"}, not_a_list},
             {{spawn, "cat"}, [{args, ["x"]}]},
             {{spawn, "cat"}, [{env, [{"A=B", "c"}]}]},
             {{no_such_kind, "cat"}, []},
             {{spawn, ""}, []},
             {{spawn_executable, "/bin/cat"}, [{cd, "/nonexistent/dir"}]},
             {{spawn, "cat"}, [in, out]}],
    Results = [{C, port_scenario:open_error(erlang, N, S), port_scenario:open_error(portnode, N, S)}
               || {N, S} = C <- Cases],
    ct:log("~p", [Results]),
    [?assertEqual({C, E}, {C, G}) || {C, E, G} <- Results],
    %% Measured with erts: these open (and fail later, in the exit status); the rest raise.
    ?assertEqual([{{spawn_executable, "/tmp"}, []},
                  {{spawn_executable, "/bin/cat"}, [{cd, "/nonexistent/dir"}]},
                  {{spawn, "cat"}, [in, out]}],
                 [C || {C, no_error, _} <- Results]).

%% @doc port_close: no more messages, no closed message.
port_close(_) ->
    same({spawn_executable, "/bin/cat"}, [binary], [{command, <<"x">>}, {sleep, 200}, port_close]).

%% @doc {Owner, {connect, Pid}}: the old owner gets connected, the new one the data.
connect_message(_) ->
    same({spawn_executable, "/bin/cat"}, [binary], [{connect_to_helper}, {sleep, 200}]).

%% @doc port_connect/2 moves ownership; the old owner stays linked.
port_connect(_) ->
    Run = fun(Impl) ->
              process_flag(trap_exit, true),
              P = Impl:open_port({spawn_executable, "/bin/cat"}, [binary]),
              Self = self(),
              New = spawn(fun() -> receive M -> Self ! {new_owner_got, M} end end),
              true = Impl:port_connect(P, New),
              P ! {New, {command, <<"via new owner">>}},
              R = receive {new_owner_got, {P, Data}} -> Data after 3000 -> timeout end,
              %% The new owner has exited (normally), which closes the port.
              Closed = try Impl:port_close(P) of T -> {returned, T} catch error:E -> E end,
              {R, Closed}
          end,
    ?assertEqual(Run(erlang), Run(portnode)).

%% @doc The owner dies: the port closes with the owner's reason and the program goes.
owner_dies(_) ->
    Run = fun(Impl) ->
              Self = self(),
              Owner = spawn(fun() -> Self ! {port, Impl:open_port({spawn, "sleep 60"}, [])}, receive never -> ok end end),
              P = receive {port, Port} -> Port end,
              Ref = case Impl of erlang -> monitor(port, P); portnode -> monitor(process, P) end,
              exit(Owner, some_reason),
              receive {'DOWN', Ref, _, P, Reason} -> Reason after 5000 -> timeout end
          end,
    ?assertEqual(Run(erlang), Run(portnode)).

%% @doc 8 MB of stream output arrives whole.
large_stream(_) ->
    same({spawn, "head -c 8388608 /dev/zero | tr '\\0' 'x'"}, [binary, exit_status], []).

%% @doc port_command/2 with a deep iolist, and its badarg for non-iodata.
command_from_iolist(_) ->
    Run = fun(Impl) ->
              P = Impl:open_port({spawn_executable, "/bin/cat"}, [binary]),
              true = Impl:port_command(P, [<<"a">>, [$b, [<<"c">>]], "d"]),
              R = receive {P, {data, D}} -> D after 3000 -> timeout end,
              Bad = try Impl:port_command(P, [foo]) catch error:badarg -> badarg end,
              Impl:port_close(P),
              {R, Bad}
          end,
    ?assertEqual(Run(erlang), Run(portnode)).

%% @doc A command longer than its packet header allows ends the port with
%% einval, by message and by port_command (which returns true first).
oversized_packets(_) ->
    Cases = [{1, 256}, {2, 65536}],
    [same({spawn_executable, "/bin/cat"}, [{packet, N}, binary],
          [{command, <<"ok">>}, {sleep, 100}, {command, binary:copy(<<"x">>, Size)}])
     || {N, Size} <- Cases],
    Run = fun(Impl) ->
              process_flag(trap_exit, true),
              P = Impl:open_port({spawn_executable, "/bin/cat"}, [{packet, 1}]),
              R = Impl:port_command(P, lists:duplicate(256, $a)),
              receive {'EXIT', P, Reason} -> {R, Reason} after 3000 -> {R, timeout} end
          end,
    ?assertEqual({true, einval}, Run(erlang)),
    ?assertEqual(Run(erlang), Run(portnode)).

%% @doc Messages that are not port protocol, or that name another process
%% than the owner, send the owner an exit signal badsig; the port stays open
%% (and closes when an owner that does not trap exits dies of it).
malformed_messages(_) ->
    Other = spawn(fun() -> receive stop -> ok end end),
    Msgs = [fun(_) -> {a, b} end, fun(_) -> {a} end, fun(_) -> a end, fun(_) -> {a, b, c} end,
            fun(_) -> [] end, fun(_) -> <<"bin">> end,
            fun(Owner) -> {Owner, x} end, fun(Owner) -> {Owner, {command}} end,
            fun(Owner) -> {Owner, {command, foo}} end, fun(Owner) -> {Owner, {connect, not_a_pid}} end,
            fun(Owner) -> {Owner, {close}} end,
            fun(_) -> {Other, close} end, fun(_) -> {Other, {command, "x"}} end,
            fun(_) -> {Other, {connect, Other}} end, fun(_) -> {'$gen_cast', x} end],
    Run = fun(Impl, Msg) ->
              process_flag(trap_exit, true),
              P = Impl:open_port({spawn_executable, "/bin/cat"}, []),
              P ! Msg(self()),
              Reason = receive {'EXIT', P, R} -> R after 3000 -> no_exit end,
              %% Still open: it echoes.
              P ! {self(), {command, "still\n"}},
              Echo = receive {P, {data, D}} -> D after 3000 -> closed end,
              Impl:port_close(P),
              {Reason, Echo}
          end,
    Results = [{in_process(fun() -> Run(erlang, M) end), in_process(fun() -> Run(portnode, M) end)} || M <- Msgs],
    ct:log("~p", [Results]),
    Other ! stop,
    [?assertEqual({{badsig, "still\n"}, {badsig, "still\n"}}, R) || R <- Results],
    %% An owner that does not trap exits dies of it, which closes the port.
    NotTrapping = fun(Impl) ->
                      Self = self(),
                      Owner = spawn(fun() -> Self ! {port, Impl:open_port({spawn, "cat"}, [])}, receive _ -> ok end end),
                      P = receive {port, Port} -> Port end,
                      OwnerMon = monitor(process, Owner),
                      PortMon = case Impl of erlang -> monitor(port, P); portnode -> monitor(process, P) end,
                      P ! {a, b},
                      receive {'DOWN', OwnerMon, _, _, R1} ->
                              receive {'DOWN', PortMon, _, _, R2} -> {R1, R2} after 3000 -> {R1, port_open} end
                      after 3000 -> owner_alive
                      end
                  end,
    ?assertEqual({badsig, badsig}, NotTrapping(erlang)),
    ?assertEqual(NotTrapping(erlang), NotTrapping(portnode)).

%% @doc Bare `line' is `{line, 512}'.
bare_line(_) ->
    same({spawn, "head -c 1300 /dev/zero | tr '\\0' a; echo; echo short"}, [line, exit_status], []),
    same({spawn, "printf 'a\\nb'"}, [line, binary, exit_status], []).

%% @doc An environment or arguments too large for exec: the port opens and exits with status 7 (E2BIG).
env_too_large(_) ->
    Big = lists:duplicate(200000, $x),
    same({spawn, "true"}, [{env, [{"BIG", Big}]}, exit_status], []),
    same({spawn_executable, "/bin/true"}, [{args, [Big]}, exit_status], []),
    same({spawn_executable, "/bin/true"}, [{args, lists:duplicate(30, lists:duplicate(100000, $y))}, exit_status], []).

%% @doc The options of erlang:open_port/2 not covered above, one scenario each.
every_option(_) ->
    same({spawn, "echo s"}, [stream, exit_status], []),
    same({spawn, "echo u"}, [use_stdio, exit_status], []),
    same({spawn, "echo h"}, [hide, exit_status], []),
    same({spawn, "echo o"}, [overlapped_io, exit_status], []),
    same({spawn, "echo p"}, [{parallelism, true}, exit_status], []),
    same({spawn, "echo p"}, [{parallelism, false}, exit_status], []),
    %% nouse_stdio: the program reads fd 3 and writes fd 4.
    Sh = fun(_) -> {spawn_executable, "/bin/sh"} end,
    same(Sh(x), [{args, ["-c", "read x <&3; echo \"got $x\" >&4"]}, nouse_stdio, exit_status],
         [{command, "line\n"}]),
    same(Sh(x), [{args, ["-c", "echo to-stdout; echo to-fd4 >&4"]}, nouse_stdio, exit_status], []),
    %% in and out together are both directions, as neither.
    same({spawn_executable, "/bin/cat"}, [in, out, binary], [{command, <<"both">>}, {sleep, 200}, close]),
    same({spawn, "echo e; exit 3"}, [eof, exit_status, binary], [{sleep, 300}, close]),
    same({spawn_executable, "/bin/sh"}, [{args, ["-c", "echo $0 $1", "zero", "one"]}, {arg0, "ignored?"}, exit_status], []),
    same({spawn, "echo $PN_OPT"}, [{env, [{"PN_OPT", "a value"}]}, exit_status], []),
    same({spawn, "pwd"}, [{cd, <<"/tmp">>}, exit_status], []).

%% @doc Options and port names erts has that portnode does not take: a
%% badarg whose error_info names them (portnode runs programs, not drivers
%% or the VM's own file descriptors, and has its own busy limits).
unsupported_options(_) ->
    Cases = [{{spawn_executable, "/bin/cat"}, [{busy_limits_port, {1000, 2000}}], {busy_limits_port, {1000, 2000}}},
             {{spawn_executable, "/bin/cat"}, [{busy_limits_port, disabled}], {busy_limits_port, disabled}},
             {{spawn_executable, "/bin/cat"}, [{busy_limits_msgq, disabled}], {busy_limits_msgq, disabled}},
             {{fd, 0, 1}, [], {fd, 0, 1}},
             {{spawn_driver, "tcp_inet"}, [], {spawn_driver, "tcp_inet"}}],
    [begin
         Stack = try portnode:open_port(N, S) of P -> ct:fail({opened, P}) catch error:badarg:St -> St end,
         ?assertMatch(#{cause := {bad_argument, Bad}}, error_info_of(Stack)),
         Text = unicode:characters_to_list(erl_error:format_exception(error, badarg, Stack)),
         ct:log("~s", [Text]),
         ?assertNotEqual(nomatch, string:find(Text, io_lib:format("~tp", [Bad])))
     end || {N, S, Bad} <- Cases].

%% @doc Every error open_port raises (that can be caused on purpose), with
%% error_info: the same reason as erts; for badarg, a message naming the argument.
error_info(_) ->
    Raising = [{{spawn_executable, "/nonexistent/program"}, []},
               {{spawn_executable, "/" ++ lists:duplicate(5000, $a)}, []},
               {{spawn_executable, "/tmp/" ++ lists:duplicate(300, $a)}, []},
               {{spawn_executable, "/bin/cat"}, [{packet, 0}]},
               {{spawn_executable, "/bin/cat"}, [{line, -1}]},
               {{spawn_executable, "/bin/cat"}, [{env, [{"A", 1}]}]},
               {{spawn_executable, "/bin/cat"}, [{args, "notalist"}]},
               {{spawn_executable, "/bin/cat"}, [{cd, 42}]},
               {{spawn_executable, "/bin/cat"}, [{parallelism, 'maybe'}]},
               {{spawn_executable, "/bin/cat"}, [stderr_to_stdout, nouse_stdio]},
               {{spawn_executable, 42}, []},
               {{spawn, [1, 2 | x]}, []},
               {{spawn}, []}],
    [begin
         E = port_scenario:open_error(erlang, N, S),
         G = port_scenario:open_error(portnode, N, S),
         ?assertEqual({{N, S}, E}, {{N, S}, G}),
         ?assertNotEqual(no_error, E),
         Stack = try portnode:open_port(N, S) of P -> ct:fail({opened, P}) catch error:_:St -> St end,
         {error, Reason} = E,
         case Reason of
             badarg ->
                 ?assertMatch(#{cause := {bad_argument, _}}, error_info_of(Stack)),
                 Text = unicode:characters_to_list(erl_error:format_exception(error, badarg, Stack)),
                 ?assertNotEqual(nomatch, string:find(Text, "bad or unsupported open_port argument"));
             _ ->
                 ok
         end
     end || {N, S} <- Raising],
    %% Not plain data: portnode cannot send a fun or a pid to the program's node.
    Stack = try portnode:open_port({spawn, "cat"}, [{env, [{"A", self()}]}]) of P -> ct:fail({opened, P})
            catch error:badarg:St -> St end,
    ?assertMatch(#{cause := {not_plain_data, _}}, error_info_of(Stack)).

%% The error_info of the frame that raised.
error_info_of([{_M, _F, _A, Info} | _]) ->
    proplists:get_value(error_info, Info).

%% @doc The VM's environment at the moment of the open: os:putenv/2 and
%% os:unsetenv/1 since portnode started, a variable of portnode's start
%% environment changed and unset; the env setting still has the last word.
vm_environment(_) ->
    Show = {spawn, "echo \"${PN_DIFF_AT_START-unset}|${PN_DIFF_LATE-unset}|${PN_DIFF_BOTH-unset}\""},
    os:putenv("PN_DIFF_LATE", "late value"),
    os:putenv("PN_DIFF_BOTH", "from putenv"),
    same(Show, [exit_status], []),
    same(Show, [{env, [{"PN_DIFF_BOTH", "from env"}, {"PN_DIFF_LATE", false}]}, exit_status], []),
    os:putenv("PN_DIFF_AT_START", "changed"),
    same(Show, [exit_status], []),
    os:unsetenv("PN_DIFF_AT_START"),
    os:unsetenv("PN_DIFF_LATE"),
    [{port, {data, "unset|unset|from putenv\n"}} | _] = same(Show, [exit_status], []),
    os:unsetenv("PN_DIFF_BOTH"),
    os:putenv("PN_DIFF_AT_START", "start").

%% @doc The VM's current directory: where a program starts, and what a relative cd is resolved against.
vm_cwd(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "cwd"),
    ok = filelib:ensure_path(filename:join(Dir, "sub")),
    ok = file:set_cwd(Dir),
    try
        same({spawn, "pwd"}, [exit_status], []),
        same({spawn, "pwd"}, [{cd, "sub"}, exit_status], []),
        same({spawn, "pwd"}, [{cd, "/tmp"}, exit_status], []),
        same({spawn, "pwd"}, [{cd, "no_such_sub"}, exit_status], [])
    after
        ok = file:set_cwd(?config(cwd, Config))
    end.

%% @doc A relative executable: checked against the VM's directory, run after
%% the cd (so with a cd it may fail in the exit status, as erts does).
relative_executable(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "exe"),
    ok = filelib:ensure_path(filename:join(Dir, "sub")),
    Script = filename:join([Dir, "sub", "x"]),
    ok = file:write_file(Script, <<"#!/bin/sh\necho \"I am $0 in $(pwd)\"\n">>),
    ok = file:change_mode(Script, 8#755),
    ok = file:set_cwd(Dir),
    try
        same({spawn_executable, "sub/x"}, [exit_status], []),
        same({spawn_executable, "./sub/x"}, [exit_status], []),
        same({spawn_executable, "sub/x"}, [{cd, "/tmp"}, exit_status], []),
        same({spawn, "sub/x"}, [exit_status], []),
        [?assertEqual(port_scenario:open_error(erlang, N, S), port_scenario:open_error(portnode, N, S))
         || {N, S} <- [{{spawn_executable, "x"}, [{cd, "sub"}]}, {{spawn_executable, "./x"}, [{cd, "sub"}]}]]
    after
        ok = file:set_cwd(?config(cwd, Config))
    end.

%% @doc A portnode the bridge did not launch (on another machine, say)
%% keeps its own environment and directory: nothing of the VM's is sent.
other_portnode_keeps_its_own(Config) ->
    os:putenv("PN_DIFF_OTHER", "vm only"),
    Pn = own_portnode:start("pn_diff_other", "off"),
    Node = own_portnode:node(Pn),
    Dir = ?config(priv_dir, Config),
    try
        os:putenv("PN_DIFF_OTHER", "changed after its start"),
        ok = file:set_cwd(Dir),
        Run = fun(Cmd) ->
                  process_flag(trap_exit, true),
                  P = portnode:open_port(Node, {spawn, Cmd}, [exit_status]),
                  receive {P, {data, D}} -> D after 5000 -> timeout end
              end,
        ?assertEqual("vm only\n", Run("echo $PN_DIFF_OTHER")),
        ?assertEqual(?config(cwd, Config) ++ "\n", Run("pwd")),
        %% While the default portnode gets the VM's.
        [{port, {data, "changed after its start\n"}} | _] = same({spawn, "echo $PN_DIFF_OTHER"}, [exit_status], [])
    after
        ok = file:set_cwd(?config(cwd, Config)),
        os:unsetenv("PN_DIFF_OTHER"),
        own_portnode:stop(Pn)
    end.

%% @doc port_command on a closed port raises badarg: after port_close, after
%% the program exited (with and without a credit from an earlier command),
%% after {Owner, close} (seen as {P, closed}), for an owner that does not trap
%% exits, and with nosuspend.
closed_handle_port_command(_) ->
    Cases = [{"port_close", fun(Impl, P) -> true = Impl:port_close(P) end},
             {"program exits", fun(_Impl, P) -> P ! {self(), {command, "x"}}, receive {'EXIT', P, _} -> ok end end},
             {"program exits after port_command", fun(Impl, P) -> true = Impl:port_command(P, "x"), receive {'EXIT', P, _} -> ok end end},
             {"close message", fun(Impl, P) -> true = Impl:port_command(P, "y"), P ! {self(), close}, receive {P, closed} -> ok end end},
             %% A bad message does not close a port: commands still go.
             {"badsig", fun(Impl, P) -> true = Impl:port_command(P, "y"), P ! {self(), nonsense}, receive {'EXIT', P, badsig} -> ok end end}],
    Try = fun(Impl, P, Opts) ->
              try case Opts of [] -> Impl:port_command(P, "z"); _ -> Impl:port_command(P, "z", Opts) end
              catch error:badarg -> badarg end
          end,
    Run = fun(Impl, {Name, Close}, Opts) ->
              process_flag(trap_exit, true),
              %% Reads one byte and exits, or (for a port left open) reads on.
              Program = case lists:member(Name, ["badsig", "close message"]) of true -> "cat >/dev/null"; false -> "head -c 1 >/dev/null" end,
              P = Impl:open_port({spawn, Program}, [exit_status]),
              Close(Impl, P),
              [Try(Impl, P, Opts), Try(Impl, P, Opts)]
          end,
    Results = [{Name, Opts, in_process(fun() -> Run(erlang, C, Opts) end), in_process(fun() -> Run(portnode, C, Opts) end)}
               || {Name, _} = C <- Cases, Opts <- [[], [nosuspend], [force]]],
    ct:log("~p", [Results]),
    [?assertEqual({N, O, [badarg, badarg]}, {N, O, G}) || {N, O, E, G} <- Results, E =:= [badarg, badarg]],
    %% force on an open port: erts raises notsup (its spawn driver has no
    %% soft busy state); portnode sends (its documented extension).
    [?assertMatch({"badsig", [force], {crashed, {notsup, _}}, [true, true]}, R) || {"badsig", [force], _, _} = R <- Results],
    [?assertEqual({N, O, E}, {N, O, G}) || {N, O, E, G} <- Results, O =/= [force] orelse N =/= "badsig"],
    %% An owner that does not trap exits sees nothing of a normal exit.
    NotTrapping = fun(Impl) ->
                      P = Impl:open_port({spawn, "head -c 1"}, []),
                      true = Impl:port_command(P, "x"),
                      timer:sleep(500),
                      Try(Impl, P, [])
                  end,
    ?assertEqual(badarg, in_process(fun() -> NotTrapping(erlang) end)),
    ?assertEqual(badarg, in_process(fun() -> NotTrapping(portnode) end)).

%% @doc register/2: the name reaches the handle with the port protocol and
%% port_command, is freed when it closes; a taken name and a closed handle are badarg.
register_name(_) ->
    Run = fun(Impl) ->
              process_flag(trap_exit, true),
              P = Impl:open_port({spawn_executable, "/bin/cat"}, [binary]),
              true = Impl:register(pn_diff_port, P),
              Taken = try Impl:register(pn_diff_port, P) catch error:badarg -> badarg end,
              pn_diff_port ! {self(), {command, <<"via name ">>}},
              true = Impl:port_command(pn_diff_port, <<"and port_command">>),
              Data = collect_data(P, <<>>, byte_size(<<"via name and port_command">>)),
              true = Impl:port_close(pn_diff_port),
              timer:sleep(200),
              Freed = whereis(pn_diff_port),
              Closed = try Impl:register(pn_diff_port2, P) catch error:badarg -> badarg end,
              NoName = try Impl:port_command(pn_diff_port, <<"x">>) catch error:badarg -> badarg end,
              {Taken, Data, Freed, Closed, NoName, whereis(pn_diff_port2)}
          end,
    Expected = in_process(fun() -> Run(erlang) end),
    ?assertEqual({badarg, <<"via name and port_command">>, undefined, badarg, badarg, undefined}, Expected),
    ?assertEqual(Expected, in_process(fun() -> Run(portnode) end)),
    %% The name also goes when the program ends on its own.
    Ends = fun(Impl) ->
               process_flag(trap_exit, true),
               P = Impl:open_port({spawn, "sleep 0.2"}, [exit_status]),
               true = Impl:register(pn_diff_ends, P),
               receive {'EXIT', P, _} -> ok end,
               timer:sleep(100),
               whereis(pn_diff_ends)
           end,
    ?assertEqual(undefined, in_process(fun() -> Ends(portnode) end)).

collect_data(_P, Acc, Size) when byte_size(Acc) >= Size -> Acc;
collect_data(P, Acc, Size) ->
    receive {P, {data, D}} -> collect_data(P, <<Acc/binary, D/binary>>, Size)
    after 3000 -> {timeout, Acc}
    end.

%% Runs F in a process of its own (trap_exit, credits and links stay there).
in_process(F) ->
    Self = self(),
    {Pid, Ref} = spawn_monitor(fun() -> Self ! {self(), F()} end),
    receive
        {Pid, R} -> erlang:demonitor(Ref, [flush]), R;
        {'DOWN', Ref, process, Pid, Reason} -> {crashed, Reason}
    after 20000 -> exit(Pid, kill), timeout
    end.

%% @doc The commonest port pattern: feed a filter, close, read the file.
%% 4 MB to `gzip -c > F' by message, then a close at once (all of it still
%% queued): F holds all 4 MB, as with erts, which writes what a closing
%% port was sent and closes the program's stdin.
close_writes_what_it_accepted(Config) ->
    filter_gets_all(Config, fun(P, Data) ->
                                P ! {self(), {command, Data}},
                                P ! {self(), close}
                            end).

%% @doc The same when the port closes because its owner exits.
owner_exit_writes_what_it_accepted(Config) ->
    filter_gets_all(Config, fun(P, Data) ->
                                Self = self(),
                                Owner = spawn(fun() ->
                                                  receive go -> ok end,
                                                  %% connect does not link (erts).
                                                  link(P),
                                                  P ! {self(), {command, Data}},
                                                  Self ! sent
                                              end),
                                P ! {self(), {connect, Owner}},
                                receive {P, connected} -> ok end,
                                Owner ! go,
                                receive sent -> ok end
                            end).

filter_gets_all(Config, SendAndClose) ->
    Data = binary:copy(crypto:strong_rand_bytes(4096), 1024),
    [begin
         F = filename:join(?config(priv_dir, Config), atom_to_list(Impl) ++ "_" ++ integer_to_list(erlang:unique_integer([positive])) ++ ".gz"),
         %% exit_status: without it (and without `out'), erts 25 itself
         %% writes only the first 64 KB of a closing port's queue.
         P = Impl:open_port({spawn, "gzip -c > " ++ F ++ "; true"}, [binary, exit_status]),
         OsPid = os_pid_of(Impl, P),
         SendAndClose(P, Data),
         ?assertEqual([], os_process:wait_gone([OsPid], 10000), {Impl, still_running}),
         {ok, Gz} = file:read_file(F),
         Got = try zlib:gunzip(Gz) catch error:E -> {E, byte_size(Gz)} end,
         ct:log("~p: ~p bytes of gzip, ~p bytes in it", [Impl, byte_size(Gz), case Got of B when is_binary(B) -> byte_size(B); _ -> Got end]),
         ?assert(Got =:= Data, Impl)
     end || Impl <- [erlang, portnode]].

%% @doc OTP's port_SUITE:output_only, with sh for its port_test program: an
%% `out' port's program writes what it reads to a file; port_command, then
%% port_close: the file holds all of it (600 KB, past what a pipe holds).
output_only_port_writes_a_file(Config) ->
    Data = [integer_to_list(N) ++ "\n" || N <- lists:seq(1, 100000)],
    [begin
         F = filename:join(?config(priv_dir, Config), atom_to_list(Impl) ++ "_out.txt"),
         P = Impl:open_port({spawn, "cat > " ++ F}, [out]),
         OsPid = os_pid_of(Impl, P),
         true = Impl:port_command(P, Data),
         true = Impl:port_close(P),
         ?assertEqual([], os_process:wait_gone([OsPid], 10000), {Impl, still_running}),
         ?assertEqual({ok, iolist_to_binary(Data)}, file:read_file(F), Impl)
     end || Impl <- [erlang, portnode]].

os_pid_of(erlang, P) -> {os_pid, OsPid} = erlang:port_info(P, os_pid), OsPid;
os_pid_of(portnode, P) -> {os_pid, OsPid} = portnode:port_info(P, os_pid), OsPid.
