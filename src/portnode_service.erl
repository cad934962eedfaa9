%% @doc A service: one external program, run through portnode, as a worker of
%% an Erlang supervisor. Child specs come from `portnode:service/1,3'.
%%
%% The server opens the program with the remote-port API and owns it. When
%% the program exits, the server stops with `{exit_status, N}' (or
%% `{exit_signal, Name}' for a death by signal; `normal' for status 0), so
%% its supervisor restarts it with a new OS process. Its output goes to the
%% logger, or to a callback, and never crashes the server. `terminate/2'
%% stops the program within the child's shutdown: SIGTERM, then SIGKILL.
%%
%% Settings are `open_port' settings plus these service options:
%% <ul>
%% <li>`{name, Name}': register the server locally as `Name'.</li>
%% <li>`{output, How}': what to do with each output line: a logger level
%%     (default `info'), `ignore', or a fun `(Id, Line) -> _' or `{M, F}'
%%     called as `M:F(Id, Line)'. Output arrives as binaries; stderr lines
%%     go to the logger at `warning' unless `How' is `ignore'.</li>
%% <li>`{node, Node}': the portnode node (default: the application's).</li>
%% </ul>
%% Unless given, the settings `{line, 4096}', `binary', `exit_status',
%% `exit_signal', `exit_stats' and `{stderr, message}' are added.
%%
%% What the program used is in its exit report (`cpu_us', `memory_peak',
%% and `memory_limit_hit' when its `{limits, [{memory, _}]}' killed it) and,
%% while it runs, in `sys:get_status/1' (`cpu_us', `memory', `memory_peak',
%% `processes'; see `portnode:stats/1' and docs/limits.md).
%%
%% A service is a service as systemd runs one, when its settings say so
%% (see docs/services.md):
%% <ul>
%% <li>`{ready, notify}': the program says `READY=1' on `$NOTIFY_SOCKET'
%%     (sd_notify), and `start_link/3' returns only then, so a supervisor
%%     starts the next child only once this one is ready. `{ready, {line,
%%     Prefix}}': ready once it prints a line (newline and all) that starts
%%     with `Prefix'.
%%     `{ready_timeout, Ms}' (default 30000): not ready by then, the start
%%     fails with `{ready_timeout, Ms}' and the program is stopped.
%%     ```
%%     portnode:service(db, {spawn_executable, "/usr/bin/redis-server"},
%%                      [{args, ["--supervised", "systemd"]}, {ready, notify}])
%%     '''
%%     What it says with `STATUS=' is in the service's reports and in
%%     `sys:get_status/1'.</li>
%% <li>`{watchdog, Ms}': the program gets `WATCHDOG_USEC' and
%%     `WATCHDOG_PID', and must say `WATCHDOG=1' at least every `Ms' once
%%     ready; if it misses one (or says `WATCHDOG=trigger'), it is stopped
%%     and the service exits `watchdog_timeout', so its supervisor starts a
%%     new one.
%%     ```
%%     portnode:service(worker, {spawn_executable, "worker.py"}, [{ready, notify}, {watchdog, 10000}])
%%     '''</li>
%% <li>`{stop_signal, Sig}' (a name such as `int' or `hup', or a number;
%%     default `term'): the first signal of every stop. The report of a
%%     stop says which step ended the program: its stop signal, or the
%%     SIGKILL after the grace.
%%     ```
%%     portnode:service(flusher, {spawn, "./flusher"}, [{stop_signal, int}])
%%     '''</li>
%% </ul>
%%
%% A setting that is wrong fails the start with `{bad_setting, Setting}',
%% so the supervisor's report names it. The service's reports (started,
%% exited) are logger reports with `service' and `os_pid' in the report and
%% in the metadata, and without a `label' key, which Elixir's Logger would
%% drop. From Elixir, `{:portnode_service, id: :x, program: "/bin/prog",
%% args: ["a"]}' is a child (see {@link child_spec/1}).
-module(portnode_service).
-behaviour(gen_server).

%% API
-export([start_link/3, child_spec/1, os_pid/1, handle/1]).
%% gen_server
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, format_status/1]).
%% Reports
-export([format_report/1]).

-include_lib("kernel/include/logger.hrl").

-type output() :: logger:level() | ignore | fun((term(), binary()) -> term()) | {module(), atom()}.
-type child_options() :: [{atom(), term()} | atom()] | #{atom() => term()}.
-export_type([output/0, child_options/0]).

-record(state, {id :: term(),
                name :: portnode:port_name(),
                handle :: pid() | undefined,
                os_pid :: non_neg_integer() | undefined,
                output :: output(),
                grace :: non_neg_integer() | infinity,
                %% What the program said of itself (sd_notify): STATUS=, ERRNO=, MAINPID=.
                status :: binary() | undefined,
                errno :: integer() | undefined,
                main_pid :: non_neg_integer() | undefined,
                %% Which step ended it, when its handle stopped it (a watchdog).
                stopped :: portnode:ended() | undefined,
                %% The program's `{exit_stats, Map}', once it has exited.
                used = #{} :: map()}).

%%% API

%% @doc Starts the service `Id': opens `PortName' with `Settings' (see the
%% module doc) and links to the caller. `{error, Reason}' if the program
%% cannot start, with the reason `open_port' raises (`enoent', `eacces', ...).
%% With a `{ready, _}' setting it returns once the program is ready, or
%% `{error, {ready_timeout, Ms}}' (the program stopped), or `{error,
%% {exited_before_ready, How}}'.
-spec start_link(term(), portnode:port_name(), list()) -> {ok, pid()} | {error, term()}.
start_link(Id, PortName, Settings) ->
    {Options, PortSettings} = lists:partition(fun service_option/1, Settings),
    Args = {Id, PortName, PortSettings, Options},
    case proplists:get_value(name, Options) of
        undefined -> gen_server:start_link(?MODULE, Args, []);
        Name -> gen_server:start_link({local, Name}, ?MODULE, Args, [])
    end.

%% @doc A child spec from options, for Elixir's `{:portnode_service, Options}'
%% children (and for Erlang, as `portnode:service/1' with other names).
%% `Options' is a proplist (an Elixir keyword list) or a map:
%% <ul>
%% <li>`id' (required): the child's id;</li>
%% <li>one of `program' (`{spawn_executable, Program}'), `command'
%%     (`{spawn, Command}') or `port_name' (a port name as is);</li>
%% <li>`restart' and `shutdown', as in a child spec;</li>
%% <li>`settings': a list of settings, as is;</li>
%% <li>anything else is a setting: `{args, [...]}', `{env, [...]}',
%%     `{name, Name}', `{output, How}', `stderr_to_stdout', ...</li>
%% </ul>
%% ```
%% children = [{:portnode_service, id: :worker, program: "/usr/bin/python3",
%%              args: ["-u", "worker.py"], output: :notice}]
%% '''
-spec child_spec(child_options()) -> supervisor:child_spec().
child_spec(Options) when is_map(Options) ->
    child_spec(maps:to_list(Options));
child_spec(Options) when is_list(Options) ->
    Id = case lists:keyfind(id, 1, Options) of
             {id, I} -> I;
             false -> erlang:error({bad_setting, {missing, id}}, [Options])
         end,
    Names = [{spawn_executable, P} || {program, P} <- Options]
        ++ [{spawn, C} || {command, C} <- Options]
        ++ [N || {port_name, N} <- Options],
    PortName = case Names of
                   [Name] -> Name;
                   _ -> erlang:error({bad_setting, {port_name, "one of program, command or port_name"}}, [Options])
               end,
    Spec = maps:from_list([{K, V} || {K, V} <- Options, K =:= restart orelse K =:= shutdown]),
    Settings = lists:append([S || {settings, S} <- Options])
        ++ [S || S <- Options, not child_key(S)],
    portnode:service(Spec#{id => Id, start => {PortName, Settings}}).

%% @doc The OS pid of the service's program.
-spec os_pid(gen_server:server_ref()) -> non_neg_integer().
os_pid(Server) ->
    gen_server:call(Server, os_pid).

%% @doc The service's remote-port handle.
-spec handle(gen_server:server_ref()) -> pid().
handle(Server) ->
    gen_server:call(Server, handle).

%%% gen_server

-spec init({term(), portnode:port_name(), list(), list()}) -> {ok, #state{}} | {stop, term()}.
init({Id, PortName, Settings, Options}) ->
    process_flag(trap_exit, true),
    %% The application's node only when none is named: it waits for the bridge.
    Node = case lists:keyfind(node, 1, Options) of
               {node, N} -> N;
               false -> portnode:node()
           end,
    Output = proplists:get_value(output, Options, info),
    case valid_output(Output) of
        true -> open(Id, Node, PortName, Settings, Output);
        false -> {stop, {bad_setting, {output, Output}}}
    end.

open(Id, Node, PortName, Settings, Output) ->
    %% The OS pid comes with the open: a program that exits at once has no
    %% handle left to ask, and ends in the normal `{exit_status, N}'.
    try portnode:open(Node, PortName, with_defaults(Settings)) of
        {Handle, OsPid} ->
            logger:update_process_metadata(#{service => Id, os_pid => OsPid}),
            Ready = lists:keymember(ready, 1, Settings),
            ?LOG_INFO(#{what => {portnode_service, started}, service => Id, os_pid => OsPid, program => PortName,
                        ready => Ready},
                      #{report_cb => fun ?MODULE:format_report/1}),
            {ok, #state{id = Id, name = PortName, handle = Handle, os_pid = OsPid,
                        output = Output,
                        grace = grace(Settings)}}
    catch
        error:badarg:Stack -> {stop, bad_setting(Stack)};
        error:Reason -> {stop, Reason}
    end.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call(os_pid, _From, State) ->
    {reply, State#state.os_pid, State};
handle_call(handle, _From, State) ->
    {reply, State#state.handle, State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, term(), #state{}}.
handle_info({H, {data, Data}}, State = #state{handle = H}) ->
    output(line(Data), State),
    {noreply, State};
handle_info({H, {stderr, Data}}, State = #state{handle = H, output = Output}) ->
    Output =/= ignore andalso ?LOG_WARNING("~ts", [string:trim(Data, trailing)], #{stream => stderr}),
    {noreply, State};
handle_info({H, ready}, State = #state{handle = H}) ->
    {noreply, State};
handle_info({H, {status, Text}}, State = #state{handle = H}) ->
    said(#{status => Text}, State),
    {noreply, State#state{status = Text}};
handle_info({H, stopping}, State = #state{handle = H}) ->
    said(#{stopping => true}, State),
    {noreply, State};
handle_info({H, {errno, Errno}}, State = #state{handle = H}) ->
    said(#{errno => Errno}, State),
    {noreply, State#state{errno = Errno}};
handle_info({H, {mainpid, MainPid}}, State = #state{handle = H}) ->
    said(#{main_pid => MainPid}, State),
    {noreply, State#state{main_pid = MainPid}};
handle_info({H, {stopped, Ended}}, State = #state{handle = H}) ->
    {noreply, State#state{stopped = Ended}};
handle_info({H, {exit_stats, Used}}, State = #state{handle = H}) ->
    {noreply, State#state{used = Used}};
handle_info({H, {exit_status, 0}}, State = #state{handle = H}) ->
    ended(normal, State);
handle_info({H, {Ended, _} = How}, State = #state{handle = H}) when Ended =:= exit_status; Ended =:= exit_signal ->
    ended(How, State);
handle_info({'EXIT', H, watchdog_timeout}, State = #state{handle = H}) ->
    %% The program missed its watchdog: its handle stopped it.
    ended(watchdog_timeout, State);
handle_info({'EXIT', H, Reason}, State = #state{handle = H}) ->
    %% The handle went without a status: portnode is gone, or it was killed.
    {stop, {handle_exit, Reason}, State#state{handle = undefined}};
handle_info(_Msg, State) ->
    {noreply, State}.

%% Stops the program within the shutdown: its stop signal, SIGKILL after
%% the grace period, and returns once it is gone; the report says which
%% step ended it.
-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{handle = undefined}) ->
    ok;
terminate(Reason, State = #state{id = Id, os_pid = OsPid, handle = H, grace = Grace}) ->
    %% Best effort: the handle may be gone with portnode, or its node down.
    try portnode:stop_report(H, Grace) of
        closed -> ok;
        Ended ->
            ?LOG_NOTICE(with_said(#{what => {portnode_service, stopped}, service => Id, os_pid => OsPid,
                                  reason => Reason, ended => Ended}, State),
                      #{report_cb => fun ?MODULE:format_report/1})
    catch _:_ -> ok
    end,
    ok.

%% Crash reports show the service, its program and OS pid.
-spec format_status(gen_server:format_status()) -> gen_server:format_status().
format_status(Status = #{state := State = #state{id = Id, name = Name, handle = H, os_pid = OsPid, used = Used}}) ->
    %% A live look while it runs (sys:get_status), not while terminating.
    Now = case is_map_key(reason, Status) orelse H =:= undefined of
              true -> Used;
              false -> live_stats(H, Used)
          end,
    Status#{state => with_said(maps:merge(#{service => Id, program => Name, handle => H, os_pid => OsPid}, Now), State)};
format_status(Status) ->
    Status.

%% @private
-spec format_report(logger:report()) -> {io:format(), [term()]}.
format_report(#{what := {portnode_service, started}, service := Id, os_pid := OsPid, program := Name} = R) ->
    {"service ~tp started: os pid ~b, program ~tp~ts", [Id, OsPid, Name, [", ready" || maps:get(ready, R, false)]]};
format_report(#{what := {portnode_service, exited}, service := Id, os_pid := OsPid, how := How} = R) ->
    {"service ~tp (os pid ~b) exited: ~tp~ts~ts", [Id, OsPid, How, used_text(R), said_text(R)]};
format_report(#{what := {portnode_service, stopped}, service := Id, os_pid := OsPid, reason := Reason, ended := Ended} = R) ->
    {"service ~tp (os pid ~b) stopped (~tp): ~ts~ts", [Id, OsPid, Reason, ended_text(Ended), said_text(R)]};
format_report(#{what := {portnode_service, said}, service := Id, os_pid := OsPid} = R) ->
    {"service ~tp (os pid ~b) says~ts", [Id, OsPid, said_text(R)]}.

%%% Internal functions

ended(How, State = #state{id = Id, os_pid = OsPid, used = Used}) ->
    Report = with_said(maps:merge(Used, #{what => {portnode_service, exited}, service => Id, os_pid => OsPid, how => How}), State),
    Meta = #{report_cb => fun ?MODULE:format_report/1},
    case How of
        normal -> ?LOG_NOTICE(Report, Meta);
        _ -> ?LOG_ERROR(Report, Meta)
    end,
    {stop, How, State#state{handle = undefined}}.

%% What the program said of itself (sd_notify), as a report at info.
said(What, #state{id = Id, os_pid = OsPid}) ->
    ?LOG_INFO(What#{what => {portnode_service, said}, service => Id, os_pid => OsPid},
              #{report_cb => fun ?MODULE:format_report/1}).

%% A report with what the program last said of itself, and how a stop of its handle's ended it.
with_said(Report, #state{status = Status, errno = Errno, main_pid = MainPid, stopped = Stopped}) ->
    maps:merge(Report, maps:from_list([{K, V} || {K, V} <- [{status, Status}, {errno, Errno}, {main_pid, MainPid},
                                                             {ended, Stopped}],
                                                 V =/= undefined, not is_map_key(K, Report)])).

said_text(R) ->
    [[", status: ", text(S)] || S <- [maps:get(status, R, undefined)], is_binary(S)]
        ++ [io_lib:format(", errno ~b", [E]) || E <- [maps:get(errno, R, undefined)], is_integer(E)]
        ++ [io_lib:format(", main pid ~b", [P]) || P <- [maps:get(main_pid, R, undefined)], is_integer(P)]
        ++ [", stopping" || maps:get(stopping, R, false) =:= true]
        ++ [[" (", ended_text(E), ")"] || E <- [maps:get(ended, R, undefined)], maps:get(what, R) =/= {portnode_service, stopped}, E =/= undefined].

%% A program's text as it is if it is UTF-8 (a formatter given ~ts
%% crashes on bytes that are not), else quoted.
text(Bytes) ->
    case unicode:characters_to_binary(Bytes) of
        Text when is_binary(Text) -> Text;
        _ -> io_lib:format("~p", [Bytes])
    end.

%% Which step of a stop ended the program, in words.
ended_text({exited, How}) -> io_lib:format("it had exited: ~tp", [How]);
ended_text({stop_signal, Sig}) -> io_lib:format("ended by its stop signal ~tp", [Sig]);
ended_text({sigkill, 0}) -> "killed with SIGKILL at once";
ended_text({sigkill, Ms}) -> io_lib:format("killed with SIGKILL after ~b ms", [Ms]);
ended_text(Other) -> io_lib:format("~tp", [Other]).

%% The program's use now, with its memory's peak; what it used at its exit
%% (`Used') if its handle cannot say.
live_stats(H, Used) ->
    try gen_server:call(H, {stats, full}, 1000) of
        Stats when is_map(Stats) -> Stats;
        _ -> Used
    catch exit:_ -> Used
    end.

%% "; cpu 0.52 s, peak memory 100.3 MiB" (and the memory limit, if it hit it).
used_text(#{cpu_us := Cpu, memory_peak := Peak} = Report) ->
    Hit = case Report of
              #{memory_limit_hit := true} -> "; it hit its memory limit (the kernel's OOM killer ended it)";
              _ -> ""
          end,
    io_lib:format("; cpu ~.2f s, peak memory ~.1f MiB~ts", [Cpu / 1.0e6, Peak / 1048576, Hit]);
used_text(_) ->
    "".

%% The setting open_port's badarg names, from its error_info.
bad_setting([{_M, _F, _Args, Info} | _]) ->
    case proplists:get_value(error_info, Info, #{}) of
        #{cause := {bad_argument, Bad}} -> {bad_setting, Bad};
        #{cause := {not_plain_data, _}} -> {bad_setting, not_plain_data};
        _ -> badarg
    end;
bad_setting(_) ->
    badarg.

child_key({Key, _}) -> lists:member(Key, [id, program, command, port_name, restart, shutdown, settings]);
child_key(_) -> false.

service_option({name, Name}) when is_atom(Name) -> true;
service_option({output, _}) -> true;
service_option({node, Node}) when is_atom(Node) -> true;
service_option(_) -> false.

with_defaults(Settings) ->
    Framed = lists:any(fun({packet, _}) -> true; ({line, _}) -> true; (stream) -> true; (_) -> false end, Settings),
    NoStderr = lists:any(fun(S) -> lists:member(S, [stderr_to_stdout, nouse_stdio]) orelse element_is(S, stderr) end, Settings),
    [binary, exit_status, exit_signal, exit_stats]
        ++ [{line, 4096} || not Framed]
        ++ [{stderr, message} || not NoStderr]
        ++ Settings.

element_is({Key, _}, Key) -> true;
element_is(_, _) -> false.

%% The SIGTERM-to-SIGKILL grace: the `kill_timeout' setting (the child
%% spec's shutdown puts it there, see portnode:service/1).
grace(Settings) ->
    proplists:get_value(kill_timeout, Settings, 5000).

valid_output(ignore) -> true;
valid_output({M, F}) -> is_atom(M) andalso is_atom(F);
valid_output(Fun) when is_function(Fun, 2) -> true;
valid_output(Level) -> lists:member(Level, [emergency, alert, critical, error, warning, notice, info, debug]).

line({_EolOrNoeol, Line}) -> Line;
line(Data) -> Data.

output(_Line, #state{output = ignore}) ->
    ok;
output(Line, #state{output = Level}) when is_atom(Level) ->
    ?LOG(Level, "~ts", [string:trim(Line, trailing)], #{stream => stdout});
output(Line, #state{id = Id, output = Callback}) ->
    try
        case Callback of
            {M, F} -> M:F(Id, Line);
            Fun -> Fun(Id, Line)
        end
    catch
        Class:Reason:Stack ->
            ?LOG_WARNING("output callback failed: ~tp:~tp ~tp", [Class, Reason, Stack])
    end.
