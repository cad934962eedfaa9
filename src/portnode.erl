%% @doc The portnode API: remote ports, drop-in replacements for the port BIFs.
%%
%% A handle is a pid on a portnode node that behaves like a port to its owner:
%% the port message protocol (`H ! {Owner, {command, Data}}', `{Owner, close}',
%% `{Owner, {connect, Pid}}') and the messages a port sends (`{H, {data, D}}',
%% `{H, {exit_status, S}}', `{H, eof}', `{H, closed}', `{H, connected}') are the
%% same. The program never outlives the handle: when it goes (close, owner
%% exit, owner's node down, portnode shutdown), the program's process group
%% gets SIGTERM, then SIGKILL after `kill_timeout' ms.
-module(portnode).
-compile({no_auto_import, [node/0, open_port/2, port_command/2, port_command/3, port_close/1, port_connect/2, port_info/1, port_info/2, register/2]}).

%% Node
-export([node/0, ping/0, ping/1, info/0, info/1]).
%% Ports
-export([open_port/2, open_port/3, port_command/2, port_command/3, port_close/1,
         port_connect/2, port_info/1, port_info/2, register/2]).
%% Opening with the OS pid
-export([open/2, open/3]).
%% Beyond ports
-export([os_pid/1, kill/2, close_stdin/1, stop/1, stop/2, stop_report/2]).
%% Run to completion
-export([cmd/2, cmd/3]).
%% Terminals and resources (docs/pty.md, docs/limits.md)
-export([winsz/3, stats/1]).
%% Supervision
-export([service/1, service/3, supervisor/3, start_supervisor/2, start_supervisor/3]).
%% error_info
-export([format_error/2]).

-define(IS_GRACE(G), (is_integer(G) andalso G >= 0) orelse G =:= brutal_kill orelse G =:= infinity).

-type handle() :: pid().
-type port_name() :: {spawn_executable, file:name_all()} | {spawn, string() | binary()}.
-type grace() :: non_neg_integer() | brutal_kill | infinity.
-type ended() :: {exited, {exit_status, non_neg_integer()} | {exit_signal, atom() | pos_integer()}}
               | {stop_signal, atom() | pos_integer()} | {sigkill, non_neg_integer()}.
-type program_spec() :: #{id := term(), start := {port_name(), list()},
                          restart => supervisor:restart(), shutdown => supervisor:shutdown(),
                          type => worker, modules => supervisor:modules()}.
-export_type([handle/0, port_name/0, grace/0, ended/0, program_spec/0]).

%%% Node

%% @doc The default portnode node of this Erlang node.
-spec node() -> node().
node() ->
    portnode_bridge:node().

%% @doc `pong' if the default portnode answers its control server.
-spec ping() -> pong.
ping() ->
    ping(node()).

%% @doc `pong' if portnode `Node' answers its control server.
-spec ping(node()) -> pong.
ping(Node) ->
    gen_server:call({portnode, Node}, ping).

%% @doc Facts about the default portnode: version, node, connected nodes, process count, uptime.
-spec info() -> #{atom() => term()}.
info() ->
    info(node()).

%% @doc Facts about portnode `Node'.
-spec info(node()) -> #{atom() => term()}.
info(Node) ->
    gen_server:call({portnode, Node}, info).

%%% Ports

%% @doc Like `erlang:open_port/2', on the default portnode node.
-spec open_port(port_name(), list()) -> handle().
open_port(PortName, Settings) ->
    open_port(node(), PortName, Settings).

%% @doc Like `erlang:open_port/2', on portnode `Node'. The caller becomes the
%% owner and is linked to the handle. Raises what `erlang:open_port/2' raises
%% (`badarg', `enoent', `eacces', `enametoolong', ...); a `badarg' names the
%% bad setting in its error_info.
%%
%% Environment and directory: when `Node' is the portnode this VM's bridge
%% launched (the default one, unless the application env `node' names
%% another), the program gets what an erts port would: the VM's environment
%% as it is now (`os:putenv/2' included; sent as its differences from the
%% environment portnode started with, then the `env' setting), and the VM's
%% current directory, against which a relative executable and `cd' are
%% resolved. On any other portnode (one on another machine, say) they are
%% that portnode's own: its environment and its working directory.
%%
%% As `erlang:open_port/2', it returns before the program runs: the next
%% open need not wait for an exec. A start that then fails for a reason of
%% portnode's (not the program's, which reports `{exit_status, Errno}' as a
%% port does) ends the handle with that reason.
-spec open_port(node(), port_name(), list()) -> handle().
open_port(Node, PortName, Settings) ->
    Args = [PortName, Settings],
    plain(PortName) andalso plain(Settings) orelse badarg(Args, {not_plain_data, Args}),
    case call_open(open_port_nowait, Node, PortName, Settings) of
        {ok, Handle} -> Handle;
        Error -> open_error(Error, Args)
    end.

%% @doc Like `open_port/2', and returns the program's OS pid with the
%% handle (`undefined' if the program failed to start after the checks, in
%% which case the handle reports `{exit_status, Errno}').
%%
%% With a `{ready, _}' setting it returns only once the program is ready,
%% and raises `{ready_timeout, Ms}' (the program stopped) if it is not
%% within its `ready_timeout', or `{exited_before_ready, How}' if it exits
%% first (see docs/services.md):
%% ```
%% {H, OsPid} = portnode:open({spawn_executable, "/usr/sbin/my-daemon"},
%%                            [{args, ["--foreground"]}, {ready, notify}, {ready_timeout, 10000}]).
%% '''
-spec open(port_name(), list()) -> {handle(), non_neg_integer() | undefined}.
open(PortName, Settings) ->
    open(node(), PortName, Settings).

%% @doc Like `open_port/3', and returns the program's OS pid with the handle.
-spec open(node(), port_name(), list()) -> {handle(), non_neg_integer() | undefined}.
open(Node, PortName, Settings) ->
    open(Node, PortName, Settings, [PortName, Settings]).

open(Node, PortName, Settings, Args) ->
    plain(PortName) andalso plain(Settings) orelse badarg(Args, {not_plain_data, [PortName, Settings]}),
    case call_open(open_port, Node, PortName, Settings) of
        {ok, Handle, OsPid} -> {Handle, OsPid};
        Error -> open_error(Error, Args)
    end.

%% Raises what an open that did not return a handle says, as `open_port' would.
-spec open_error({error, term()}, list()) -> no_return().
open_error({error, {badarg, Bad}}, Args) -> badarg(Args, {bad_argument, Bad});
open_error({error, {notsup, {limits, _} = What, Why}}, Args) ->
    erlang:error({notsup, What}, Args, [{error_info, #{module => ?MODULE, cause => {notsup, Why}}}]);
open_error({error, Reason}, Args) -> erlang:error(Reason, Args).

%% @doc Sends `Data' to the program, as `erlang:port_command/2': it waits
%% while the handle is busy (more than 256 KiB queued for the program, until
%% it is under 128 KiB), as a busy erts port makes its caller wait.
%% `badarg' once the handle is closed (see `port_command/3' for when it is
%% seen). `Handle' may be a name given with `register/2'.
-spec port_command(handle() | atom(), iodata()) -> true.
port_command(Handle, Data) when is_pid(Handle) ->
    Size = iodata_size(Data, [Handle, Data]),
    send_command(Handle, Data, Size, false, [Handle, Data]);
port_command(Name, Data) when is_atom(Name) ->
    port_command(registered(Name, [Name, Data]), Data);
port_command(Handle, Data) ->
    erlang:error(badarg, [Handle, Data]).

%% @doc As `erlang:port_command/3': with `nosuspend', `false' instead of
%% waiting while the handle is busy (the data is not sent); with `force',
%% sent at once whatever the handle's queue.
%%
%% How it waits: each caller holds a credit per handle (64 KiB, kept in its
%% process dictionary for the last 16 handles it used). Commands within the
%% credit go as messages; the first one beyond it is a call that the handle
%% answers when it is not busy, with a new credit. So a stream pays one
%% round trip per 64 KiB, and what a handle queues stays bounded.
%%
%% A closed handle raises `badarg': the call notices it, and while the
%% caller holds a credit it monitors the handle (a monitor tagged
%% `'$portnode_down''), so that a command sent once the handle's exit has
%% reached the caller (its `'EXIT'', `{H, closed}', or nothing at all for
%% a normal exit the owner does not trap) raises `badarg' too, as erts does.
-spec port_command(handle() | atom(), iodata(), [force | nosuspend]) -> boolean().
port_command(Handle, Data, Options) when is_pid(Handle), is_list(Options) ->
    Args = [Handle, Data, Options],
    lists:all(fun(O) -> O =:= force orelse O =:= nosuspend end, Options) orelse erlang:error(badarg, Args),
    Size = iodata_size(Data, Args),
    Mode = case lists:member(force, Options) of
               true -> force;
               false -> lists:member(nosuspend, Options)
           end,
    send_command(Handle, Data, Size, Mode, Args);
port_command(Name, Data, Options) when is_atom(Name) ->
    port_command(registered(Name, [Name, Data, Options]), Data, Options);
port_command(Handle, Data, Options) ->
    erlang:error(badarg, [Handle, Data, Options]).

%% @doc Closes the handle and stops the program, as `erlang:port_close/1'
%% (no `{H, closed}' message). `badarg' if it is already closed.
-spec port_close(handle() | atom()) -> true.
port_close(Name) when is_atom(Name) ->
    port_close(registered(Name, [Name]));
port_close(Handle) ->
    forget_credit(Handle),
    call(Handle, close, [Handle]).

%% @doc Makes `Pid' the owner and links it, as `erlang:port_connect/2'.
-spec port_connect(handle(), pid()) -> true.
port_connect(Handle, Pid) when is_pid(Pid) ->
    call(Handle, {connect, Pid}, [Handle, Pid]);
port_connect(Handle, Pid) ->
    erlang:error(badarg, [Handle, Pid]).

%% @doc As `erlang:port_info/1': name, links, id, connected, input, output,
%% os_pid; `undefined' once the handle is closed.
-spec port_info(handle()) -> [{atom(), term()}] | undefined.
port_info(Handle) ->
    try_call(Handle, info).

%% @doc As `erlang:port_info/2' for `name', `links', `id', `connected',
%% `input', `output', `os_pid'; `undefined' once the handle is closed.
-spec port_info(handle(), atom()) -> {atom(), term()} | undefined.
port_info(Handle, Item) when is_atom(Item) ->
    try_call(Handle, {info, Item});
port_info(Handle, Item) ->
    erlang:error(badarg, [Handle, Item]).

%% @doc As `erlang:register/2' for a handle: registers `Name' for a local
%% alias process, so that `Name ! {Owner, {command, Data}}' (and the rest of
%% the port message protocol) reaches the handle, and `port_command/2,3',
%% `port_close/1' take `Name'. The alias forwards every message to the handle
%% and ends when the handle does, which frees the name, as a port's name is
%% freed when it closes. It monitors the handle, so it is not in its links.
%% `whereis(Name)' gives the alias, not the handle. A port or a local pid is
%% registered with `erlang:register/2'. `badarg' as `erlang:register/2'
%% (the name is taken or not an atom, or the handle is closed).
-spec register(atom(), handle() | port()) -> true.
register(Name, Handle) when is_atom(Name), Name =/= undefined, is_pid(Handle), erlang:node(Handle) =/= erlang:node() ->
    Self = self(),
    Alias = spawn(fun() -> alias(Name, Handle, Self) end),
    Ref = erlang:monitor(process, Alias),
    receive
        {Alias, registered} -> erlang:demonitor(Ref, [flush]), true;
        {'DOWN', Ref, process, Alias, _} -> erlang:error(badarg, [Name, Handle])
    end;
register(Name, PortOrPid) ->
    try erlang:register(Name, PortOrPid)
    catch error:badarg -> erlang:error(badarg, [Name, PortOrPid])
    end.

%%% Beyond ports

%% @doc The OS pid of the program.
-spec os_pid(handle()) -> non_neg_integer().
os_pid(Handle) ->
    call(Handle, os_pid, [Handle]).

%% @doc Sends a signal to the program: a number, or a name (`term', `sigkill', `'HUP'', ...).
-spec kill(handle(), atom() | pos_integer()) -> ok | {error, not_running | badarg}.
kill(Handle, Signal) when is_atom(Signal); is_integer(Signal), Signal > 0 ->
    call(Handle, {kill, Signal}, [Handle, Signal]);
kill(Handle, Signal) ->
    erlang:error(badarg, [Handle, Signal]).

%% @doc Closes the program's stdin: it reads EOF; its output keeps arriving.
-spec close_stdin(handle()) -> ok.
close_stdin(Handle) ->
    call(Handle, close_stdin, [Handle]).

%% @doc Stops the program now, like `port_close/1', but returns only once
%% it is gone: its stop signal to all of it, SIGKILL after its `kill_timeout'.
-spec stop(handle()) -> ok.
stop(Handle) ->
    stop(Handle, default).

%% @doc Stops the program: its stop signal (SIGTERM unless its
%% `{stop_signal, Sig}' setting says otherwise), SIGKILL after `Grace' ms
%% (at once for `brutal_kill', never for `infinity'); returns once it is
%% gone. `ok' also if the handle was already closed.
-spec stop(handle(), grace() | default) -> ok.
stop(Handle, Grace) ->
    _ = stop_report(Handle, Grace),
    ok.

%% @doc As `stop/2', and says which step ended the program: `{exited, How}'
%% (it had exited on its own), `{stop_signal, Name}' (its stop signal, within
%% the grace), `{sigkill, GraceMs}' (SIGKILL after the grace; 0 for
%% `brutal_kill'), or `closed' if the handle was already closed.
%% ```
%% {stop_signal, sigint} = portnode:stop_report(H, 5000).   % opened with {stop_signal, int}
%% '''
-spec stop_report(handle(), grace() | default) -> ended() | closed.
stop_report(Handle, default) when is_pid(Handle) ->
    stop_report(Handle, kill_timeout(Handle));
stop_report(Handle, Grace) when is_pid(Handle), ?IS_GRACE(Grace) ->
    try gen_server:call(Handle, {stop, Grace}, infinity) of
        {ok, Ended} -> Ended;
        ok -> closed
    catch exit:{Reason, _} when Reason =:= noproc; Reason =:= normal; Reason =:= noconnection -> closed
    end;
stop_report(Handle, Grace) ->
    erlang:error(badarg, [Handle, Grace]).

%%% Run to completion

%% @doc Runs a program to completion on the default portnode and returns
%% `{Output, Status}', as Elixir's `System.cmd/3': see `portnode_cmd:cmd/3'.
%% ```
%% {<<"hello\n">>, 0} = portnode:cmd({spawn_executable, "/bin/echo"}, [{args, ["hello"]}]),
%% {_, timeout} = portnode:cmd({spawn, "sleep 60"}, [{timeout, 100}]).
%% '''
-spec cmd(port_name(), list()) -> {binary(), portnode_cmd:status()}.
cmd(PortName, Settings) ->
    portnode_cmd:cmd(node(), PortName, Settings).

%% @doc As `cmd/2', on portnode `Node'.
-spec cmd(node(), port_name(), list()) -> {binary(), portnode_cmd:status()}.
cmd(Node, PortName, Settings) ->
    portnode_cmd:cmd(Node, PortName, Settings).

%% @doc Resizes the terminal of a `{pty, _}' handle to `Rows' x `Cols'; the
%% program gets SIGWINCH (see docs/pty.md). `badarg' for a size out of
%% 1..65535, a handle without a terminal, or a closed handle.
-spec winsz(handle(), 1..65535, 1..65535) -> ok.
winsz(Handle, Rows, Cols) when is_integer(Rows), Rows > 0, Rows =< 65535, is_integer(Cols), Cols > 0, Cols =< 65535 ->
    case call(Handle, {winsz, Rows, Cols}, [Handle, Rows, Cols]) of
        ok -> ok;
        _ -> erlang:error(badarg, [Handle, Rows, Cols])
    end;
winsz(Handle, Rows, Cols) ->
    erlang:error(badarg, [Handle, Rows, Cols]).

%% @doc What the program's whole tree of processes uses now: CPU time in
%% microseconds (that of its processes that have exited too), memory in
%% bytes and how many processes. The figures come from its cgroup where
%% there is one, else from `/proc' (see docs/limits.md for which, and how
%% they differ). `badarg' for a closed handle, or one whose program is
%% being stopped.
-spec stats(handle()) -> #{cpu_us := non_neg_integer(), memory := non_neg_integer(), processes := non_neg_integer()}.
stats(Handle) ->
    case call(Handle, stats, [Handle]) of
        Stats when is_map(Stats) -> Stats;
        _ -> erlang:error(badarg, [Handle])
    end.

%%% Supervision

%% @doc A child spec for a supervisor: the program runs as a
%% `portnode_service' (see its doc for the service options in `Settings'),
%% permanent, with a 5000 ms shutdown.
-spec service(term(), port_name(), list()) -> supervisor:child_spec().
service(Id, PortName, Settings) ->
    service(#{id => Id, start => {PortName, Settings}}).

%% @doc The map form: `#{id := Id, start := {PortName, Settings}, restart =>
%% R, shutdown => S}'. The program gets the shutdown as its SIGTERM-to-SIGKILL
%% grace (less a margin to be reaped in), unless `Settings' has a `kill_timeout'.
-spec service(program_spec()) -> supervisor:child_spec().
service(Spec = #{id := Id, start := {PortName, Settings}}) when is_list(Settings) ->
    Shutdown = maps:get(shutdown, Spec, 5000),
    Grace = case Shutdown of
                brutal_kill -> [{kill_timeout, 0}];
                infinity -> [];
                Ms when is_integer(Ms), Ms >= 0 -> [{kill_timeout, Ms - min(500, Ms div 2)}]
            end,
    HasGrace = lists:keymember(kill_timeout, 1, Settings),
    #{id => Id,
      start => {portnode_service, start_link, [Id, PortName, Settings ++ [G || G <- Grace, not HasGrace]]},
      restart => maps:get(restart, Spec, permanent),
      shutdown => Shutdown,
      type => worker,
      modules => [portnode_service]}.

%% @doc A child spec for a supervisor that runs inside portnode (see
%% `start_supervisor/3'), for an Erlang supervisor's child list.
-spec supervisor(term(), supervisor:sup_flags(), [program_spec()]) -> supervisor:child_spec().
supervisor(Id, SupFlags, ChildSpecs) ->
    #{id => Id,
      start => {?MODULE, start_supervisor, [SupFlags, ChildSpecs]},
      restart => permanent,
      shutdown => infinity,
      type => supervisor,
      modules => [?MODULE]}.

%% @doc Starts a supervisor inside the default portnode, linked to the caller.
-spec start_supervisor(supervisor:sup_flags(), [program_spec()]) -> {ok, pid()} | {error, term()}.
start_supervisor(SupFlags, ChildSpecs) ->
    start_supervisor(node(), SupFlags, ChildSpecs).

%% @doc Starts a supervisor inside portnode `Node', linked to the caller,
%% with OTP's semantics for programs: strategies one_for_one, one_for_all and
%% rest_for_one, intensity and period, permanent, transient and temporary
%% children, a shutdown per child, ordered start and reverse-ordered stop.
%% Restarts happen inside portnode. Children are `#{id := Id, start :=
%% {PortName, Settings}, ...}' maps; a program exiting with status 0 has
%% exited `normal', otherwise with `{exit_status, N}' or `{exit_signal, Name}'.
%% `supervisor:which_children/1', `count_children/1', `terminate_child/2',
%% `restart_child/2', `delete_child/2', `start_child/2' and `get_childspec/2'
%% work on the pid. Returns what `supervisor:start_link/2' returns.
-spec start_supervisor(node(), supervisor:sup_flags(), [program_spec()]) -> {ok, pid()} | {error, term()}.
start_supervisor(Node, SupFlags, ChildSpecs) ->
    case plain([SupFlags, ChildSpecs]) of
        true -> gen_server:call({portnode, Node}, {start_supervisor, self(), SupFlags, ChildSpecs}, infinity);
        false -> {error, {not_plain_data, "supervisor flags and child specs must be plain data"}}
    end.

%% @doc error_info (`erl_error' and Elixir's `Exception.message/1'): what
%% was wrong with an open_port argument, as a binary.
-spec format_error(term(), erlang:stacktrace()) -> #{general => unicode:unicode_binary()}.
format_error(_Reason, [{_M, _F, _As, Info} | _]) ->
    case proplists:get_value(error_info, Info, #{}) of
        #{cause := {bad_argument, Bad}} ->
            #{general => unicode:characters_to_binary(io_lib:format("bad or unsupported open_port argument: ~tp", [Bad]))};
        #{cause := {not_plain_data, _}} ->
            #{general => <<"open_port arguments must be plain data (no funs, pids, ports or references)">>};
        #{cause := {notsup, Why}} when is_binary(Why) ->
            #{general => Why};
        _ ->
            #{}
    end;
format_error(_Reason, _Stack) ->
    #{}.

%%% Internal functions

%% Asks portnode `Node' for a handle, with a relay for it (see
%% portnode_relay); the relay goes again if there is no handle.
call_open(Op, Node, PortName, Settings) ->
    Relay = portnode_relay:start(),
    try gen_server:call({portnode, Node}, open_request(Op, Node, PortName, Settings, Relay), infinity) of
        {error, _} = Error -> portnode_relay:stop(Relay), Error;
        Opened -> Opened
    catch
        Class:Reason:Stack ->
            portnode_relay:stop(Relay),
            erlang:raise(Class, Reason, Stack)
    end.

%% The open_port call: with the relay that will deliver the handle's
%% output in this VM (see portnode_relay), and the caller's environment and
%% directory for the portnode this VM's bridge launched.
open_request(Op, Node, PortName, Settings, Relay) ->
    case portnode_bridge:start_env(Node) of
        undefined ->
            {Op, self(), PortName, Settings, [{relay, Relay}]};
        {StartEnv, LaunchEnv, LaunchChanges, VmOsPid} ->
            %% Unchanged since the launch (the usual case): no need to compare.
            Changes = case os:env() of
                          LaunchEnv -> LaunchChanges;
                          Env -> env_changes(Env, StartEnv)
                      end,
            %% The directory is read by portnode, from /proc/<VmOsPid>/cwd:
            %% file:get_cwd/0 here would run on a dirty I/O scheduler, whose
            %% busy wait took a fifth of the CPU while 5,000 ports opened.
            {Op, self(), PortName, Settings, [{relay, Relay}, {cwd_of, VmOsPid}, {env, Changes}]}
    end.

%% How the VM's environment `Env' (`os:env()') differs from `Start' (a
%% map): set or changed, then unset.
env_changes(Env, Start) ->
    Now = maps:from_list([{K, V} || {K, V} <- Env, K =/= ""]),
    Changed = maps:fold(fun(K, V, Acc) ->
                                case Start of
                                    #{K := V} -> Acc;
                                    _ -> [{K, V} | Acc]
                                end
                        end, [], Now),
    Changed ++ [{K, false} || K <- maps:keys(Start), not is_map_key(K, Now)].

%% The alias `register/2' starts: registered, it forwards to the handle
%% until the handle goes.
alias(Name, Handle, Caller) ->
    Ref = erlang:monitor(process, Handle),
    %% A closed handle cannot be registered (the call fails at once).
    try_call(Handle, {info, id}) =/= undefined orelse exit(normal),
    erlang:register(Name, self()),
    put('$portnode_alias_of', Handle),
    Caller ! {self(), registered},
    forward(Ref, Handle).

forward(Ref, Handle) ->
    receive
        {'DOWN', Ref, process, Handle, _} -> ok;
        Msg -> Handle ! Msg, forward(Ref, Handle)
    end.

%% The handle a registered name stands for (a name given with `register/2').
registered(Name, Args) ->
    Alias = whereis(Name),
    is_pid(Alias) orelse erlang:error(badarg, Args),
    case erlang:process_info(Alias, dictionary) of
        {dictionary, Dict} ->
            case lists:keyfind('$portnode_alias_of', 1, Dict) of
                {_, Handle} -> Handle;
                false -> erlang:error(badarg, Args)
            end;
        undefined ->
            erlang:error(badarg, Args)
    end.

-define(CREDITS, '$portnode_credits').
-define(MAX_CREDITS, 16).

-define(DOWN, '$portnode_down').

%% Credits: Handle => {Bytes, Monitor}. The monitor tells a command within
%% the credit that the handle is gone: a handle's 'DOWN' messages go out
%% before its exit signals and before anything it sends after its exit, on
%% the same connection, so a caller that has seen any sign of the exit has
%% the 'DOWN' in its mailbox.
%% Mode: false (wait while busy), true (nosuspend) or force.
send_command(Handle, Data, Size, Mode, Args) ->
    Credits = case get(?CREDITS) of undefined -> #{}; C -> C end,
    case Credits of
        #{Handle := {Credit, Mon}} when Credit >= Size ->
            receive
                {?DOWN, Mon, process, _, _} ->
                    put(?CREDITS, maps:remove(Handle, Credits)),
                    erlang:error(badarg, Args)
            after 0 ->
                put(?CREDITS, Credits#{Handle := {Credit - Size, Mon}}),
                Handle ! {'$port_command', Data},
                true
            end;
        _ ->
            %% The monitor goes before the call, so that the handle has it
            %% whenever it exits after answering.
            Mon = case Credits of
                      #{Handle := {_, M}} -> M;
                      _ -> erlang:monitor(process, Handle, [{tag, ?DOWN}])
                  end,
            put(?CREDITS, bounded(Handle, Credits#{Handle => {0, Mon}})),
            try gen_server:call(Handle, {command, Data, Mode}, infinity) of
                {ok, NewCredit} ->
                    put(?CREDITS, (get(?CREDITS))#{Handle => {NewCredit, Mon}}),
                    true;
                busy ->
                    false;
                badarg ->
                    erlang:error(badarg, Args)
            catch exit:{Reason, _} when Reason =:= noproc; Reason =:= normal; Reason =:= noconnection ->
                forget_credit(Handle),
                erlang:error(badarg, Args)
            end
    end.

%% At most ?MAX_CREDITS handles: forgetting one only costs it a round trip.
bounded(Keep, Credits) when map_size(Credits) > ?MAX_CREDITS ->
    [Other | _] = maps:keys(maps:remove(Keep, Credits)),
    {_, Mon} = maps:get(Other, Credits),
    erlang:demonitor(Mon, [flush]),
    maps:remove(Other, Credits);
bounded(_Keep, Credits) ->
    Credits.

forget_credit(Handle) ->
    case get(?CREDITS) of
        #{Handle := {_, Mon}} = Credits ->
            erlang:demonitor(Mon, [flush]),
            put(?CREDITS, maps:remove(Handle, Credits));
        _ -> ok
    end.

iodata_size(Data, Args) ->
    try iolist_size(Data) catch error:badarg -> erlang:error(badarg, Args) end.

kill_timeout(Handle) ->
    %% The handle applies its own kill_timeout when stopped with no grace of its own.
    try gen_server:call(Handle, kill_timeout, infinity)
    catch exit:{Reason, _} when Reason =:= noproc; Reason =:= normal; Reason =:= noconnection -> 0
    end.

call(Handle, Request, Args) when is_pid(Handle) ->
    try gen_server:call(Handle, Request, infinity)
    catch exit:{Reason, _} when Reason =:= noproc; Reason =:= normal; Reason =:= noconnection ->
        erlang:error(badarg, Args)
    end;
call(_Handle, _Request, Args) ->
    erlang:error(badarg, Args).

try_call(Handle, Request) when is_pid(Handle) ->
    try gen_server:call(Handle, Request, infinity)
    catch exit:{Reason, _} when Reason =:= noproc; Reason =:= normal; Reason =:= noconnection ->
        undefined
    end;
try_call(Handle, Request) ->
    erlang:error(badarg, [Handle, Request]).

badarg(Args, Cause) ->
    erlang:error(badarg, Args, [{error_info, #{module => ?MODULE, cause => Cause}}]).

%% Terms portnode decodes: no funs, pids, ports or references.
plain(T) when is_atom(T); is_number(T); is_binary(T) -> true;
plain([]) -> true;
plain([H | T]) -> plain(H) andalso plain(T);
plain(T) when is_tuple(T) -> plain(tuple_to_list(T));
plain(T) when is_map(T) -> plain(maps:to_list(T));
plain(_) -> false.
